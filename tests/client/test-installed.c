/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * What a user gets from `meson install`: the project is installed into a
 * temporary DESTDIR, then the README's libloopd example is compiled with
 * nothing but `pkg-config --cflags --libs loopd` pointed into that tree and
 * run, as an unprivileged user, against the real daemon. A small GLib
 * program is built the same way against loopd-glib.pc. Nothing from the
 * build or source tree may leak into these builds.
 */

#include <string.h>
#include <sys/stat.h>

#include <glib/gstdio.h>

#include "client-test.h"

static const LoopdFixtureOptions with_polkit = {
        .start_daemon = TRUE,
        .start_polkit = TRUE,
        .polkit_rules =
                "polkit.addRule(function(action, subject) {\n"
                "  if (action.id == 'org.loopd.create') return polkit.Result.YES;\n"
                "});\n",
};

static const char glib_example[] =
        "#include <loopd-glib.h>\n"
        "int main(void) {\n"
        "        g_autoptr(GError) error = NULL;\n"
        "        LoopdGlibManager *m = loopd_glib_manager_proxy_new_for_bus_sync(G_BUS_TYPE_SYSTEM,\n"
        "                G_DBUS_PROXY_FLAGS_NONE, LOOPD_GLIB_BUS_NAME, LOOPD_GLIB_MANAGER_PATH, NULL, &error);\n"
        "        if (!m || !loopd_glib_manager_get_version(m))\n"
        "                return 1;\n"
        "        g_print(\"%s\\n\", loopd_glib_manager_get_version(m));\n"
        "        g_object_unref(m);\n"
        "        return 0;\n"
        "}\n";

/* Runs argv as root with extra environment (name, value, ..., NULL) and
 * without LD_LIBRARY_PATH; asserts exit 0; returns stdout. */
static char *run_ok(const char *const *argv, const char *const *env_add) {
        g_auto(GStrv) env = g_get_environ();
        g_autofree char *out = NULL, *err = NULL, *cmd = NULL;
        g_autoptr(GError) error = NULL;
        int status;

        /* meson test points LD_LIBRARY_PATH at the build tree: that is the
         * one thing an installed program must not see. */
        env = g_environ_unsetenv(env, "LD_LIBRARY_PATH");
        for (const char *const *e = env_add; e && *e; e += 2)
                env = g_environ_setenv(env, e[0], e[1], TRUE);
        g_spawn_sync(NULL, (char **) argv, env, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error);
        g_assert_no_error(error);
        cmd = g_strjoinv(" ", (char **) argv);
        if (!g_spawn_check_wait_status(status, NULL))
                g_error("%s failed:\n%s%s", cmd, out, err);
        return g_steal_pointer(&out);
}

/* The first path under dir named name, or NULL. */
static char *find_file(const char *dir, const char *name) {
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *e;

        if (!d)
                return NULL;
        while ((e = g_dir_read_name(d))) {
                g_autofree char *p = g_build_filename(dir, e, NULL);
                char *found;

                if (g_str_equal(e, name))
                        return g_steal_pointer(&p);
                if (g_file_test(p, G_FILE_TEST_IS_DIR) && !g_file_test(p, G_FILE_TEST_IS_SYMLINK) &&
                    (found = find_file(p, name)))
                        return found;
        }
        return NULL;
}

/* Copies an installed .pc into dir with its prefix moved into DESTDIR: what
 * the file says once the tree really sits at its prefix. (pkgconf's sysroot
 * would move the system's own packages too, and --define-prefix cannot
 * handle multiarch libdirs.) */
static void relocate_pc(const char *pc, const char *destdir, const char *dir) {
        g_autofree char *text = NULL, *base = g_path_get_basename(pc), *out = NULL;
        g_auto(GStrv) lines = NULL;
        bool found = false;

        g_assert_true(g_file_get_contents(pc, &text, NULL, NULL));
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++)
                if (g_str_has_prefix(*l, "prefix=")) {
                        char *moved = g_strconcat("prefix=", destdir, *l + 7, NULL);
                        g_free(*l);
                        *l = moved;
                        found = true;
                }
        g_assert_true(found);
        text = (g_free(text), g_strjoinv("\n", lines));
        out = g_build_filename(dir, base, NULL);
        g_assert_true(g_file_set_contents(out, text, -1, NULL));
}

static void assert_installed(const char *destdir, const char *name) {
        g_autofree char *p = find_file(destdir, name);

        if (!p)
                g_error("%s was not installed", name);
}

/* The README's ```c block: the example users are told to build. */
static char *readme_example(void) {
        g_autofree char *readme = g_build_filename(g_getenv("LOOPD_SOURCE_ROOT"), "client", "README.md", NULL);
        g_autofree char *text = NULL;
        const char *start, *end;

        g_assert_true(g_file_get_contents(readme, &text, NULL, NULL));
        start = strstr(text, "```c\n");
        g_assert_nonnull(start);
        start += 5;
        end = strstr(start, "```");
        g_assert_nonnull(end);
        return g_strndup(start, (gsize) (end - start));
}

static void test_installed_pkg_config_builds_and_runs(LoopdFixture *f, gconstpointer data) {
        g_autofree char *destdir = NULL, *pc = NULL, *pcdir = NULL, *flags = NULL, *glib_flags = NULL;
        g_autofree char *src = NULL, *exe = NULL, *glib_src = NULL, *glib_exe = NULL, *img = NULL;
        g_autofree char *so = NULL, *libdir = NULL, *rpath = NULL, *ldd = NULL, *version = NULL, *example = NULL;
        g_auto(GStrv) flagv = NULL, glib_flagv = NULL;
        g_autoptr(GPtrArray) cc = NULL;
        const char *build_root = g_getenv("LOOPD_BUILD_ROOT");

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!build_root || !g_getenv("LOOPD_SOURCE_ROOT")) {
                g_test_skip("LOOPD_BUILD_ROOT/LOOPD_SOURCE_ROOT not set: not run by meson test");
                return;
        }

        destdir = g_build_filename(f->tmpdir, "destdir", NULL);
        g_assert_cmpint(g_mkdir(destdir, 0755), ==, 0);
        g_free(run_ok((const char *const[]) { MESON_BINARY, "install", "-C", build_root, "--no-rebuild",
                                              "--quiet", "--destdir", destdir, NULL }, NULL));

        /* The files the issue promises. */
        pc = find_file(destdir, "loopd.pc");
        g_assert_nonnull(pc);
        assert_installed(destdir, "libloopd.so.0");
        assert_installed(destdir, "libloopd-glib.so.0");
        assert_installed(destdir, "loopctl");
        assert_installed(destdir, "loopctl.1");
        assert_installed(destdir, "loopd.8");
        {
                /* Where bash-completion looks, named after the command. */
                g_autofree char *out = NULL;
                const char *argv[] = { "find", destdir, "-path", "*/bash-completion/completions/loopctl", NULL };
                g_assert_true(g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                                           &out, NULL, NULL, NULL));
                if (!out || !*out)
                        g_error("no bash-completion/completions/loopctl under %s", destdir);
        }
        assert_installed(destdir, "loopd.h");
        assert_installed(destdir, "loopd-glib.h");
        assert_installed(destdir, "loopd-glib-generated.h");

        pcdir = g_build_filename(f->tmpdir, "pkgconfig", NULL);
        g_assert_cmpint(g_mkdir(pcdir, 0755), ==, 0);
        relocate_pc(pc, destdir, pcdir);
        g_free(pc);
        pc = find_file(destdir, "loopd-glib.pc");
        g_assert_nonnull(pc);
        relocate_pc(pc, destdir, pcdir);
        const char *const pc_env[] = { "PKG_CONFIG_PATH", pcdir, NULL };
        flags = run_ok((const char *const[]) { PKG_CONFIG_BINARY, "--cflags", "--libs", "loopd", NULL }, pc_env);
        g_assert_nonnull(strstr(flags, destdir));
        g_assert_null(strstr(flags, build_root));
        g_assert_true(g_shell_parse_argv(g_strstrip(flags), NULL, &flagv, NULL));
        /* The flags lead to where the library really went. */
        so = find_file(destdir, "libloopd.so.0");
        libdir = g_path_get_dirname(so);
        {
                g_autofree char *l = g_strdup_printf("-L%s", libdir);
                g_assert_true(g_strv_contains((const char *const *) flagv, l));
        }
        rpath = g_strdup_printf("-Wl,-rpath,%s", libdir);

        /* The README example, ten-odd lines, as a user builds it. */
        example = readme_example();
        src = g_build_filename(f->tmpdir, "example.c", NULL);
        exe = g_build_filename(f->tmpdir, "example", NULL);
        g_assert_true(g_file_set_contents(src, example, -1, NULL));
        cc = g_ptr_array_new();
        g_ptr_array_add(cc, CC_BINARY);
        g_ptr_array_add(cc, "-Wall");
        g_ptr_array_add(cc, "-Werror");
        if (*EXTRA_CFLAGS)
                g_ptr_array_add(cc, EXTRA_CFLAGS);
        g_ptr_array_add(cc, "-o");
        g_ptr_array_add(cc, exe);
        g_ptr_array_add(cc, src);
        for (char **a = flagv; *a; a++)
                g_ptr_array_add(cc, *a);
        g_ptr_array_add(cc, rpath);
        g_ptr_array_add(cc, NULL);
        g_free(run_ok((const char *const *) cc->pdata, NULL));

        /* It uses the installed library, not the build tree's. */
        ldd = run_ok((const char *const[]) { "ldd", exe, NULL }, NULL);
        if (!strstr(ldd, libdir))
                g_error("%s does not use %s:\n%s", exe, libdir, ldd);

        /* The header is usable from C++ before C++20 too (extern "C", no
         * designated initializers in what callers must call). */
        if (*CXX_BINARY) {
                g_autofree char *cxx_src = g_build_filename(f->tmpdir, "example.cc", NULL);
                g_autofree char *cxx_exe = g_build_filename(f->tmpdir, "example-cxx", NULL);
                g_autoptr(GPtrArray) cxx = g_ptr_array_new();

                g_assert_true(g_file_set_contents(cxx_src,
                        "#include <loopd.h>\n"
                        "int main() {\n"
                        "        LoopdCreateOptions o;\n"
                        "        loopd_create_options_init(&o);\n"
                        "        LoopdClient *c = nullptr;\n"
                        "        return loopd_client_unref(c) == nullptr && o.size == sizeof(o) ? 0 : 1;\n"
                        "}\n", -1, NULL));
                g_ptr_array_add(cxx, CXX_BINARY);
                g_ptr_array_add(cxx, "-std=c++17");
                g_ptr_array_add(cxx, "-Wall");
                g_ptr_array_add(cxx, "-pedantic");
                g_ptr_array_add(cxx, "-Werror");
                if (*EXTRA_CFLAGS)
                        g_ptr_array_add(cxx, EXTRA_CFLAGS);
                g_ptr_array_add(cxx, "-o");
                g_ptr_array_add(cxx, cxx_exe);
                g_ptr_array_add(cxx, cxx_src);
                for (char **a = flagv; *a; a++)
                        g_ptr_array_add(cxx, *a);
                g_ptr_array_add(cxx, rpath);
                g_ptr_array_add(cxx, NULL);
                g_free(run_ok((const char *const *) cxx->pdata, NULL));
                g_free(run_ok((const char *const[]) { cxx_exe, NULL }, NULL));
        }

        /* And it works for a user who is not root. */
        img = loopd_fixture_make_image(f, "example.img", 1024 * 1024, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        {
                g_auto(LoopdRunResult) r = { 0 };

                loopd_fixture_run_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                                     (const char *const[]) { "env", "-u", "LD_LIBRARY_PATH", exe, img, NULL }, &r);
                if (r.status != 0)
                        g_error("the example failed (%d): %s%s", r.status, r.out, r.err);
                g_assert_true(g_str_has_prefix(r.out, "/dev/loop"));
        }
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));

        /* The GLib binding the same way. */
        glib_flags = run_ok((const char *const[]) { PKG_CONFIG_BINARY, "--cflags", "--libs", "loopd-glib", NULL }, pc_env);
        g_assert_nonnull(strstr(glib_flags, destdir));
        g_assert_true(g_shell_parse_argv(g_strstrip(glib_flags), NULL, &glib_flagv, NULL));
        glib_src = g_build_filename(f->tmpdir, "glib-example.c", NULL);
        glib_exe = g_build_filename(f->tmpdir, "glib-example", NULL);
        g_assert_true(g_file_set_contents(glib_src, glib_example, -1, NULL));
        g_ptr_array_set_size(cc, 0);
        g_ptr_array_add(cc, CC_BINARY);
        g_ptr_array_add(cc, "-Wall");
        g_ptr_array_add(cc, "-Werror");
        if (*EXTRA_CFLAGS)
                g_ptr_array_add(cc, EXTRA_CFLAGS);
        g_ptr_array_add(cc, "-o");
        g_ptr_array_add(cc, glib_exe);
        g_ptr_array_add(cc, glib_src);
        for (char **a = glib_flagv; *a; a++)
                g_ptr_array_add(cc, *a);
        g_ptr_array_add(cc, rpath);
        g_ptr_array_add(cc, NULL);
        g_free(run_ok((const char *const *) cc->pdata, NULL));
        version = run_ok((const char *const[]) { glib_exe, NULL }, NULL);
        g_assert_cmpstr(g_strchomp(version), !=, "");
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/installed/pkg-config-builds-and-runs", LoopdFixture, &with_polkit,
                   loopd_fixture_setup, test_installed_pkg_config_builds_and_runs, loopd_fixture_teardown);
        return g_test_run();
}
