/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * client/examples/ against the real loopd, as root and as an unprivileged
 * user: the PyGObject and dbus-python programs (run by /usr/bin/python3,
 * where Debian's python3-gi and python3-dbus import) and the godbus one
 * (built offline against Debian's golang-dbus-dev). Each attaches an image
 * with typed options, writes through the fd loopd passed back, opens the
 * device again with Open, reads the exact backing name, shows an error's
 * D-Bus name and leaves the removal to bind-to-caller: the device must be
 * gone once the program has exited, and what it wrote must be in the image.
 */

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-test.h"
#include "loopd-protocol.h"

#define PYTHON "/usr/bin/python3"
#define GODBUS_DIR "/usr/share/gocode/src/github.com/godbus/dbus"

static const LoopdFixtureOptions with_polkit = {
        .start_daemon = TRUE,
        .start_polkit = TRUE,
        .polkit_rules =
                "polkit.addRule(function(action, subject) {\n"
                "  if (action.id == 'org.loopd.create') return polkit.Result.YES;\n"
                "});\n",
};

/* A copy of the example in the fixture's 0755 tmpdir, so that an
 * unprivileged user can read it wherever the source tree is. */
static char *copy_example(LoopdFixture *f, const char *name) {
        g_autofree char *src = g_build_filename(EXAMPLES_DIR, name, NULL), *text = NULL;
        g_autofree char *base = g_path_get_basename(name);
        char *dst = g_build_filename(f->tmpdir, base, NULL);
        gsize len;

        g_assert_true(g_file_get_contents(src, &text, &len, NULL));
        g_assert_true(g_file_set_contents(dst, text, (gssize) len, NULL));
        g_assert_cmpint(chmod(dst, 0644), ==, 0);
        return dst;
}

static bool python_has(const char *module) {
        g_autofree char *code = g_strdup_printf("import %s", module);
        const char *argv[] = { PYTHON, "-c", code, NULL };
        int status;

        if (!g_file_test(PYTHON, G_FILE_TEST_IS_EXECUTABLE))
                return false;
        return g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                            NULL, NULL, NULL, NULL, &status, NULL) &&
               g_spawn_check_wait_status(status, NULL);
}

/* Runs argv as uid on an image of its own and checks what it printed and
 * left behind. `error` is the D-Bus error name the example shows. */
static void run_example(LoopdFixture *f, uid_t uid, const char *const *argv_head, const char *error) {
        g_autofree char *name = g_strdup_printf("example-%u.img", (unsigned) uid);
        g_autofree char *img = loopd_fixture_make_image(f, name, 1 * MIB, uid, uid, 0600);
        g_autofree char *data = NULL, *want_backing = NULL, *want_error = NULL;
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_auto(LoopdRunResult) r = { 0 };
        gsize len;

        for (const char *const *a = argv_head; *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        g_ptr_array_add(argv, img);
        g_ptr_array_add(argv, NULL);
        loopd_fixture_run_as(f, uid, uid, (const char *const *) argv->pdata, &r);
        if (r.status != 0)
                g_error("%s as %u: exit %d\n%s\n%s", argv_head[0], (unsigned) uid, r.status, r.out, r.err);
        g_assert_cmpstr(r.err, ==, "");
        g_assert_true(g_str_has_prefix(r.out, "device /dev/loop") || strstr(r.out, "\ndevice /dev/loop"));
        g_assert_nonnull(strstr(r.out, "\nobject /org/loopd/Loop1/device/loop"));
        g_assert_nonnull(strstr(r.out, "\nread hello loopd\n"));
        want_error = g_strdup_printf("error %s\n", error);
        g_assert_nonnull(strstr(r.out, want_error));
        want_backing = g_strdup_printf("\nbacking %s\n", img);
        g_assert_nonnull(strstr(r.out, want_backing));

        /* Bound to the program's connection: gone with it. */
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
        g_assert_true(g_file_get_contents(img, &data, &len, NULL));
        g_assert_cmpuint(len, ==, 1 * MIB);
        g_assert_true(memcmp(data, "hello loopd", 11) == 0);
}

static void test_example_pygobject(LoopdFixture *f, gconstpointer data) {
        g_autofree char *script = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!python_has("gi; from gi.repository import Gio")) {
                g_test_skip(PYTHON " cannot import gi (Debian: python3-gi, gir1.2-glib-2.0)");
                return;
        }
        script = copy_example(f, "loopd-gi.py");
        run_example(f, 0, (const char *const[]) { PYTHON, script, NULL }, LOOPD_ERROR_NO_SUCH_DEVICE);
        run_example(f, LOOPD_TEST_NOBODY, (const char *const[]) { PYTHON, script, NULL }, LOOPD_ERROR_NO_SUCH_DEVICE);
}

static void test_example_dbus_python(LoopdFixture *f, gconstpointer data) {
        g_autofree char *script = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!python_has("dbus")) {
                g_test_skip(PYTHON " cannot import dbus (Debian: python3-dbus)");
                return;
        }
        script = copy_example(f, "loopd-dbus.py");
        /* The untyped offset is refused, naming the standard error. */
        run_example(f, 0, (const char *const[]) { PYTHON, script, NULL }, "org.freedesktop.DBus.Error.InvalidArgs");
        run_example(f, LOOPD_TEST_NOBODY, (const char *const[]) { PYTHON, script, NULL },
                    "org.freedesktop.DBus.Error.InvalidArgs");
}

static void test_example_godbus(LoopdFixture *f, gconstpointer data) {
        g_autofree char *go = g_find_program_in_path("go");
        g_autofree char *dir = NULL, *main_go = NULL, *go_mod = NULL, *binary = NULL, *cache = NULL;
        g_autofree char *main_go_to = NULL, *go_mod_to = NULL;
        g_autofree char *out = NULL, *err = NULL;
        int status;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!go || !g_file_test(GODBUS_DIR "/go.mod", G_FILE_TEST_EXISTS)) {
                g_test_skip("no go or no " GODBUS_DIR " (Debian: golang-go, golang-dbus-dev)");
                return;
        }
        /* Built offline: the module's godbus is Debian's copy. */
        dir = g_build_filename(f->tmpdir, "go", NULL);
        g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
        main_go = copy_example(f, "go/main.go");
        go_mod = copy_example(f, "go/go.mod");
        main_go_to = g_build_filename(dir, "main.go", NULL);
        go_mod_to = g_build_filename(dir, "go.mod", NULL);
        g_assert_cmpint(rename(main_go, main_go_to), ==, 0);
        g_assert_cmpint(rename(go_mod, go_mod_to), ==, 0);
        cache = g_build_filename(f->tmpdir, "go-cache", NULL);
        binary = g_build_filename(f->tmpdir, "loopd-example", NULL);
        {
                g_autofree char *cmd = g_strdup_printf(
                        "cd '%s' && go mod edit -replace github.com/godbus/dbus/v5=" GODBUS_DIR " && "
                        "GOFLAGS=-mod=mod GOPROXY=off GOCACHE='%s' GOPATH='%s/gopath' go build -o '%s' .",
                        dir, cache, f->tmpdir, binary);
                const char *argv[] = { "/bin/sh", "-c", cmd, NULL };

                g_assert_true(g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                                           &out, &err, &status, NULL));
                if (!g_spawn_check_wait_status(status, NULL))
                        g_error("go build: %s%s", out, err);
        }
        g_assert_cmpint(chmod(binary, 0755), ==, 0);
        run_example(f, 0, (const char *const[]) { binary, NULL }, LOOPD_ERROR_NO_SUCH_DEVICE);
        run_example(f, LOOPD_TEST_NOBODY, (const char *const[]) { binary, NULL }, LOOPD_ERROR_NO_SUCH_DEVICE);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn, opts) \
        g_test_add(path, LoopdFixture, opts, loopd_fixture_setup, fn, loopd_fixture_teardown)

        ADD("/examples/pygobject", test_example_pygobject, &with_polkit);
        ADD("/examples/dbus-python", test_example_dbus_python, &with_polkit);
        ADD("/examples/godbus", test_example_godbus, &with_polkit);

        return g_test_run();
}
