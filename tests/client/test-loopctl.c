/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopctl against the real loopd: every command, every exit code, --json
 * parsed by a real JSON parser, and `with` under the ways a command can end.
 */

#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-test.h"

#define MIB (1024 * 1024)

static const LoopdFixtureOptions bus_only = { .start_daemon = FALSE };
static const LoopdFixtureOptions daemon_only = { .start_daemon = TRUE };
static const LoopdFixtureOptions with_polkit = {
        .start_daemon = TRUE,
        .start_polkit = TRUE,
        .polkit_rules =
                "polkit.addRule(function(action, subject) {\n"
                "  if (action.id == 'org.loopd.create') {\n"
                "    var f = action.lookup('backing_file');\n"
                "    if (f.indexOf('denied') >= 0) return polkit.Result.NO;\n"
                "    if (f.indexOf('needs-auth') >= 0) return polkit.Result.AUTH_ADMIN;\n"
                "    return polkit.Result.YES;\n"
                "  }\n"
                "  if (action.id == 'org.loopd.manage-others')\n"
                "    return polkit.Result.NO;\n"
                "});\n",
};

/* stderr of a failure: exactly one line, "loopctl: ...". */
static void assert_one_error_line(const LoopdRunResult *r, const char *contains) {
        g_assert_true(g_str_has_prefix(r->err, "loopctl: "));
        g_assert_nonnull(strchr(r->err, '\n'));
        g_assert_cmpstr(strchr(r->err, '\n') + 1, ==, "");
        if (contains && !strstr(r->err, contains))
                g_error("stderr '%s' does not mention '%s'", r->err, contains);
}

/* create FILE [args] as uid; returns "/dev/loopN" (free it). */
static char *create_as(LoopdFixture *f, uid_t uid, const char *path, const char *arg1, const char *arg2) {
        g_auto(LoopdRunResult) r = { 0 };

        client_loopctl_as(f, uid, &r, "create", path, arg1, arg2, NULL);
        if (r.status != 0)
                g_error("loopctl create %s failed (%d): %s", path, r.status, r.err);
        g_assert_cmpstr(r.err, ==, "");
        g_assert_true(g_str_has_prefix(r.out, "/dev/loop"));
        g_assert_true(g_str_has_suffix(r.out, "\n"));
        g_strchomp(r.out);
        g_assert_true(client_loop_attached(r.out));
        return g_strdup(r.out);
}

static char *info_json(LoopdFixture *f, uid_t uid, const char *dev) {
        g_auto(LoopdRunResult) r = { 0 };

        client_loopctl_as(f, uid, &r, "info", "--json", dev, NULL);
        g_assert_cmpint(r.status, ==, 0);
        return g_strdup(r.out);
}

static void assert_json(const char *json, const char *expression, const char *expected) {
        g_autofree char *v = client_json_eval(json, expression);

        if (!v)
                return;   /* skipped: no python3 */
        if (g_strcmp0(v, expected) != 0)
                g_error("%s is '%s', expected '%s' in:\n%s", expression, v, expected, json);
}

/* ---- no daemon needed ---------------------------------------------------- */

static void test_help_and_version(LoopdFixture *f, gconstpointer data) {
        static const char *const commands[] = { "create", "with", "remove", "refresh-size", "info", "list" };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "--help", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_true(g_str_has_prefix(r.out, "Usage: loopctl"));
                /* The exit codes are part of the interface. */
                g_assert_nonnull(strstr(r.out, "3 not authorized"));
                g_assert_nonnull(strstr(r.out, "4 no such loop device"));
        }
        for (size_t i = 0; i < G_N_ELEMENTS(commands); i++) {
                g_auto(LoopdRunResult) r = { 0 };
                g_autofree char *usage = g_strdup_printf("Usage: loopctl %s", commands[i]);

                client_loopctl_as(f, 0, &r, commands[i], "--help", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_true(g_str_has_prefix(r.out, usage));
                g_assert_nonnull(strstr(r.out, "Exit status"));
                g_assert_cmpstr(r.err, ==, "");
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "--version", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_true(g_str_has_prefix(r.out, "loopctl "));
        }
}

static void test_usage_errors_exit_2(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        const char *const *cases[] = {
                (const char *[]) { NULL },
                (const char *[]) { "frobnicate", NULL },
                (const char *[]) { "--frobnicate", "list", NULL },
                (const char *[]) { "list", "--frobnicate", NULL },
                (const char *[]) { "list", "extra", NULL },
                (const char *[]) { "create", NULL },
                (const char *[]) { "create", "IMG", "IMG", NULL },
                (const char *[]) { "create", "IMG", "--offset", "1X", NULL },
                (const char *[]) { "create", "IMG", "--offset", "-1", NULL },
                (const char *[]) { "create", "IMG", "--size-limit", "99999999E", NULL },
                (const char *[]) { "create", "IMG", "--block-size", "8G", NULL },
                (const char *[]) { "create", "IMG", "--offset", NULL },
                (const char *[]) { "create", "--json", "IMG", NULL },
                (const char *[]) { "--json", "create", "IMG", NULL },
                (const char *[]) { "remove", "--read-only", "loop0", NULL },
                (const char *[]) { "remove", NULL },
                (const char *[]) { "refresh-size", NULL },
                (const char *[]) { "refresh-size", "loop0", "loop1", NULL },
                (const char *[]) { "info", NULL },
                (const char *[]) { "with", "IMG", NULL },
                (const char *[]) { "with", "IMG", "--", NULL },
                (const char *[]) { "with", "--", "true", NULL },
                /* A FILE that cannot back a device is a bad argument too. */
                (const char *[]) { "create", "/nonexistent/image", NULL },
                (const char *[]) { "create", "/", NULL },
                (const char *[]) { "create", "/dev/null", NULL },
        };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "usage.img", 1 * MIB, 0, 0, 0644);
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GPtrArray) argv = g_ptr_array_new();
                g_auto(LoopdRunResult) r = { 0 };

                g_ptr_array_add(argv, (char *) client_loopctl());
                for (const char *const *a = cases[i]; *a; a++)
                        g_ptr_array_add(argv, (char *) (g_str_equal(*a, "IMG") ? img : *a));
                g_ptr_array_add(argv, NULL);
                loopd_fixture_run_as(f, 0, 0, (const char *const *) argv->pdata, &r);
                if (r.status != 2)
                        g_error("case %zu: exit %d, expected 2; stderr: %s", i, r.status, r.err);
                assert_one_error_line(&r, NULL);
                g_assert_cmpstr(r.out, ==, "");
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

/* ---- create, info, remove, refresh-size ---------------------------------- */

static void test_create_info_remove_roundtrip(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *json = NULL, *name = NULL;
        uint64_t seq;
        struct stat st;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "roundtrip.img", 2 * MIB, 0, 0, 0644);
        g_assert_cmpint(stat(img, &st), ==, 0);
        dev = create_as(f, 0, img, NULL, NULL);
        seq = client_loop_diskseq(dev);
        name = g_strdup(dev + 5);

        {
                g_auto(LoopdRunResult) r = { 0 };
                g_autofree char *line = g_strdup_printf("   Backing file: %s\n", img);

                client_loopctl_as(f, 0, &r, "info", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_nonnull(strstr(r.out, line));
                g_assert_nonnull(strstr(r.out, "      Read-only: no\n"));
                g_assert_nonnull(strstr(r.out, "          Owner: root (0)\n"));
        }

        json = info_json(f, 0, name);
        assert_json(json, "d['name']", name);
        assert_json(json, "d['path']", dev);
        assert_json(json, "d['object-path'].startswith('/org/loopd/Loop1/device/' + d['name'] + '_')", "True");
        assert_json(json, "d['backing-file']", img);
        g_autofree char *inode = g_strdup_printf("%llu", (unsigned long long) st.st_ino);
        assert_json(json, "d['backing-inode']", inode);
        assert_json(json, "d['size']", "2097152");
        assert_json(json, "d['offset']", "0");
        assert_json(json, "d['block-size']", "512");
        assert_json(json, "d['read-only']", "False");
        assert_json(json, "d['bound-to-caller']", "False");
        assert_json(json, "d['owner-uid']", "0");
        assert_json(json, "d['owner']", "root");
        assert_json(json, "d['diskseq'] > 0", "True");
        assert_json(json, "(d['major'], d['minor']) == (7, d['number']) or d['major'] == 259", "True");
        assert_json(json, "sorted(d.keys())",
                    "['autoclear', 'backing-device', 'backing-file', 'backing-inode', 'block-size', "
                    "'bound-to-caller', 'device-number', 'direct-io', 'diskseq', 'major', 'minor', "
                    "'name', 'number', 'object-path', 'offset', 'owner', 'owner-uid', 'partscan', "
                    "'path', 'read-only', 'size', 'size-limit']");

        /* --json is a global option too. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "--json", "info", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
                assert_json(r.out, "d['path']", dev);
        }

        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "remove", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.out, ==, "");
                g_assert_cmpstr(r.err, ==, "");
                g_assert_true(client_wait_gone(dev, seq, 5));
        }
        /* Not attached: 4, with the daemon's message. (Not `dev` again: a
         * parallel test may have been given that number by now.) */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "remove", "loop4000", NULL);
                g_assert_cmpint(r.status, ==, 4);
                assert_one_error_line(&r, "loop4000");
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "info", "/dev/loop4000", NULL);
                g_assert_cmpint(r.status, ==, 4);
                assert_one_error_line(&r, NULL);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "info", "/dev/null", NULL);
                g_assert_cmpint(r.status, ==, 4);
                assert_one_error_line(&r, NULL);
        }
}

static void test_create_options(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *dev2 = NULL, *json = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "options.img", 8 * MIB, 0, 0, 0644);
        {
                g_auto(LoopdRunResult) r = { 0 };

                client_loopctl_as(f, 0, &r, "create", "--offset", "1M", img, "--size-limit=2MiB",
                                  "-b", "4K", "--read-only", "-P", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_strchomp(r.out);
                dev = g_strdup(r.out);
        }
        json = info_json(f, 0, dev);
        assert_json(json, "d['offset']", "1048576");
        assert_json(json, "d['size-limit']", "2097152");
        assert_json(json, "d['size']", "2097152");
        assert_json(json, "d['block-size']", "4096");
        assert_json(json, "d['read-only']", "True");
        assert_json(json, "d['partscan']", "True");
        assert_json(json, "d['autoclear']", "False");

        /* Whether the kernel keeps direct I/O on depends on the backing file
         * system; the option must at least be accepted. */
        dev2 = create_as(f, 0, img, "--direct-io", NULL);

        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "remove", dev, dev2, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        /* The daemon refuses what loopctl cannot judge: 2 with its message. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "create", img, "--block-size", "1000", NULL);
                g_assert_cmpint(r.status, ==, 2);
                assert_one_error_line(&r, img);
        }
}

static void test_refresh_size(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *json = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "grow.img", 1 * MIB, 0, 0, 0644);
        dev = create_as(f, 0, img, NULL, NULL);
        g_assert_cmpint(truncate(img, 3 * MIB), ==, 0);
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "refresh-size", dev + 5, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
        }
        json = info_json(f, 0, dev);
        assert_json(json, "d['size']", "3145728");
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "remove", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "refresh-size", "loop4000", NULL);
                g_assert_cmpint(r.status, ==, 4);
                assert_one_error_line(&r, NULL);
        }
}

static void test_remove_goes_on_after_a_failure(LoopdFixture *f, gconstpointer data) {
        g_autofree char *a = NULL, *b = NULL, *img = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "many.img", 1 * MIB, 0, 0, 0644);
        a = create_as(f, 0, img, NULL, NULL);
        b = create_as(f, 0, img, NULL, NULL);

        client_loopctl_as(f, 0, &r, "remove", a, "sda", b, NULL);
        g_assert_cmpint(r.status, ==, 4);
        assert_one_error_line(&r, "sda");
        g_assert_true(client_wait_no_loops(f, 5));
}

/* ---- list ---------------------------------------------------------------- */

static void test_list_table_and_json(LoopdFixture *f, gconstpointer data) {
        g_autofree char *a_img = NULL, *b_img = NULL, *a = NULL, *b = NULL, *expr = NULL;
        g_auto(GStrv) lines = NULL;
        g_auto(LoopdRunResult) r = { 0 }, j = { 0 };
        bool seen_a = false, seen_b = false;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        a_img = loopd_fixture_make_image(f, "list-a.img", 1 * MIB, 0, 0, 0644);
        b_img = loopd_fixture_make_image(f, "list-b.img", 2 * MIB, 0, 0, 0644);
        a = create_as(f, 0, a_img, NULL, NULL);
        b = create_as(f, 0, b_img, "--offset=4096", "--read-only");

        client_loopctl_as(f, 0, &r, "list", NULL);
        g_assert_cmpint(r.status, ==, 0);
        lines = g_strsplit(r.out, "\n", -1);
        {
                g_auto(GStrv) h = g_strsplit_set(lines[0], " ", -1);
                g_autofree char *joined = NULL;
                g_autoptr(GPtrArray) words = g_ptr_array_new();

                for (char **w = h; *w; w++)
                        if (**w)
                                g_ptr_array_add(words, *w);
                g_ptr_array_add(words, NULL);
                joined = g_strjoinv(" ", (char **) words->pdata);
                g_assert_cmpstr(joined, ==, "NAME SIZELIMIT OFFSET AUTOCLEAR RO BACK-FILE DIO LOG-SEC OWNER");
        }
        for (char **l = lines + 1; *l && **l; l++) {
                g_auto(GStrv) cols = g_strsplit_set(*l, " ", -1);
                g_autoptr(GPtrArray) c = g_ptr_array_new();

                for (char **w = cols; *w; w++)
                        if (**w)
                                g_ptr_array_add(c, *w);
                /* Other tests' and other people's devices may be listed too,
                 * with spaces in their file names: judge only ours. */
                if (!g_str_equal(c->pdata[0], a) && !g_str_equal(c->pdata[0], b))
                        continue;
                g_assert_cmpuint(c->len, ==, 9);
                /* Aligned: the backing file starts where its header does. */
                g_assert_true(g_str_has_prefix(*l + (strstr(lines[0], "BACK-FILE") - lines[0]), c->pdata[5]));
                if (g_str_equal(c->pdata[0], a)) {
                        seen_a = true;
                        g_assert_cmpstr(c->pdata[2], ==, "0");
                        g_assert_cmpstr(c->pdata[4], ==, "0");
                        g_assert_cmpstr(c->pdata[5], ==, a_img);
                        g_assert_cmpstr(c->pdata[8], ==, "root");
                }
                if (g_str_equal(c->pdata[0], b)) {
                        seen_b = true;
                        g_assert_cmpstr(c->pdata[2], ==, "4096");
                        g_assert_cmpstr(c->pdata[4], ==, "1");
                        g_assert_cmpstr(c->pdata[5], ==, b_img);
                        g_assert_cmpstr(c->pdata[7], ==, "512");
                }
        }
        g_assert_true(seen_a && seen_b);

        client_loopctl_as(f, 0, &j, "list", "--json", NULL);
        g_assert_cmpint(j.status, ==, 0);
        expr = g_strdup_printf("[(x['offset'], x['read-only'], x['owner']) for x in d['devices'] if x['path'] in ('%s', '%s')]", a, b);
        {
                g_autofree char *v = client_json_eval(j.out, expr);
                g_autofree char *expected = NULL;

                /* Sorted by device number. */
                if (atoi(a + 9) < atoi(b + 9))
                        expected = g_strdup("[(0, False, 'root'), (4096, True, 'root')]");
                else
                        expected = g_strdup("[(4096, True, 'root'), (0, False, 'root')]");
                if (v)
                        g_assert_cmpstr(v, ==, expected);
        }
        assert_json(j.out, "[x['number'] for x in d['devices']] == sorted(x['number'] for x in d['devices'])", "True");

        {
                g_auto(LoopdRunResult) x = { 0 };
                client_loopctl_as(f, 0, &x, "remove", a, b, NULL);
                g_assert_cmpint(x.status, ==, 0);
        }
        /* Nothing of ours left (judged by backing file: the numbers may be
         * other tests' by now), and the JSON still parses. */
        g_assert_true(client_wait_no_loops(f, 5));
        {
                g_auto(LoopdRunResult) x = { 0 };
                client_loopctl_as(f, 0, &x, "list", "--json", NULL);
                g_assert_cmpint(x.status, ==, 0);
                g_autofree char *e = g_strdup_printf("[x for x in d['devices'] if x['backing-file'].startswith('%s/')]",
                                                     f->image_dir);
                assert_json(x.out, e, "[]");
        }
}

static void test_list_escapes_control_characters(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *expr = NULL;
        g_auto(LoopdRunResult) r = { 0 }, j = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        /* A name that would recolour the terminal and has a quote and a
         * backslash for the JSON escaper. */
        img = loopd_fixture_make_image(f, "evil\033[31m\"q\\.img", 1 * MIB, 0, 0, 0644);
        dev = create_as(f, 0, img, NULL, NULL);

        client_loopctl_as(f, 0, &r, "list", NULL);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_null(strchr(r.out, '\033'));
        g_assert_nonnull(strstr(r.out, "evil\\x1b[31m\"q\\\\.img"));

        client_loopctl_as(f, 0, &j, "list", "--json", NULL);
        g_assert_cmpint(j.status, ==, 0);
        g_assert_null(strchr(j.out, '\033'));
        /* Parsed back, the string is the file's real name. */
        expr = g_strdup_printf("[x['backing-file'] for x in d['devices'] if x['path'] == '%s'][0]"
                               ".endswith('evil\\x1b[31m\"q\\\\.img')", dev);
        assert_json(j.out, expr, "True");
        {
                g_auto(LoopdRunResult) x = { 0 };
                client_loopctl_as(f, 0, &x, "remove", dev, NULL);
                g_assert_cmpint(x.status, ==, 0);
        }
}

/* ---- with ---------------------------------------------------------------- */

static void test_with_runs_command_and_removes(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_auto(GStrv) lines = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with.img", 1 * MIB, 0, 0, 0644);

        client_loopctl_as(f, 0, &r, "with", img, "--read-only", "--",
                          "sh", "-c",
                          "test -b \"$LOOP_DEVICE\" || exit 90;"
                          "test \"$1\" = \"$LOOP_DEVICE\" || exit 91;"
                          "echo \"$LOOP_DEVICE\"; echo \"$2\";"
                          "test -w \"$LOOP_DEVICE\" && blockdev --getro \"$LOOP_DEVICE\";"
                          "exit 7",
                          "sh", "{}", "x{}y", NULL);
        g_assert_cmpint(r.status, ==, 7);
        lines = g_strsplit(r.out, "\n", -1);
        g_assert_true(g_str_has_prefix(lines[0], "/dev/loop"));
        dev = g_strdup(lines[0]);
        g_assert_nonnull(lines[1]);
        {
                g_autofree char *xy = g_strdup_printf("x%sy", dev);
                g_assert_cmpstr(lines[1], ==, xy);
        }
        /* --read-only reached the device. */
        if (lines[2] && *lines[2])
                g_assert_cmpstr(lines[2], ==, "1");
        /* Removed by loopctl once CMD exited (judged by backing file: loopN
         * may be someone else's already; polled: the kernel may have deferred
         * the detach to a last close by some other process). */
        g_assert_true(client_wait_no_loops(f, 5));
}

static void test_with_exit_statuses(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-status.img", 1 * MIB, 0, 0, 0644);
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "with", img, "--", "true", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "with", img, "--", "/nonexistent/command", NULL);
                g_assert_cmpint(r.status, ==, 127);
                assert_one_error_line(&r, "/nonexistent/command");
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "with", img, "--", "sh", "-c", "kill -TERM $$", NULL);
                g_assert_cmpint(r.status, ==, 128 + SIGTERM);
        }
        /* CMD removed the device itself: not an error. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                g_autofree char *cmd = g_strdup_printf("%s remove \"$LOOP_DEVICE\"", client_loopctl());
                client_loopctl_as(f, 0, &r, "with", img, "--", "sh", "-c", cmd, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
        }
        g_assert_true(client_wait_no_loops(f, 5));
}

/* Reads "DEV PID" as printed by the command of a background `with`. */
static void read_dev_and_pid(LoopdCaller *c, char **ret_dev, pid_t *ret_pid) {
        g_autofree char *line = loopd_caller_read_line(c);
        g_auto(GStrv) parts = NULL;

        g_assert_nonnull(line);
        parts = g_strsplit(line, " ", 2);
        g_assert_nonnull(parts[1]);
        *ret_dev = g_strdup(parts[0]);
        *ret_pid = (pid_t) atoi(parts[1]);
        g_assert_true(client_loop_attached(*ret_dev));
}

static void test_with_killed_loopctl_leaves_cleanup_to_daemon(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        pid_t pid;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-kill.img", 1 * MIB, 0, 0, 0644);
        c = loopd_fixture_spawn_as(f, 0, 0, (const char *const[]) {
                client_loopctl(), "with", img, "--", "sh", "-c", "echo \"$LOOP_DEVICE $$\"; exec sleep 600", NULL });
        read_dev_and_pid(c, &dev, &pid);

        /* loopctl gets no chance to remove anything: the daemon must see its
         * connection go and drop the bound device. */
        loopd_caller_kill(c, SIGKILL);
        (void) loopd_caller_wait(c);
        (void) kill(pid, SIGKILL);
        g_assert_true(client_wait_no_loops(f, 10));
}

static void test_with_forwards_sigterm(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        pid_t pid;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-term.img", 1 * MIB, 0, 0, 0644);
        c = loopd_fixture_spawn_as(f, 0, 0, (const char *const[]) {
                client_loopctl(), "with", img, "--", "sh", "-c", "echo \"$LOOP_DEVICE $$\"; exec sleep 600", NULL });
        read_dev_and_pid(c, &dev, &pid);

        /* SIGTERM to loopctl alone reaches CMD; loopctl then cleans up and
         * exits with CMD's status. */
        loopd_caller_kill(c, SIGTERM);
        g_assert_cmpint(loopd_caller_wait(c), ==, 128 + SIGTERM);
        g_assert_true(client_wait_no_loops(f, 5));
        g_assert_cmpint(kill(pid, 0), ==, -1);
}

static void test_with_reports_a_failed_removal(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *line = NULL;
        g_autoptr(LoopdCaller) c = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-nodaemon.img", 1 * MIB, 0, 0, 0644);
        /* CMD waits for its stdin (loopctl's, a pipe from us) to close. */
        c = loopd_fixture_spawn_as(f, 0, 0, (const char *const[]) {
                client_loopctl(), "with", img, "--", "sh", "-c", "echo \"$LOOP_DEVICE\"; cat >/dev/null", NULL });
        line = loopd_caller_read_line(c);
        g_assert_nonnull(line);
        g_assert_true(g_str_has_prefix(line, "/dev/loop"));

        /* With the daemon gone, CMD succeeds but loopctl cannot remove the
         * device: that must not look like success. */
        (void) loopd_fixture_terminate_daemon(f);
        loopd_caller_close_stdin(c);
        g_assert_cmpint(loopd_caller_wait(c), ==, 1);
}

/* ---- unprivileged callers and polkit --------------------------------------- */

static void test_unprivileged_user_roundtrip(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *json = NULL, *ro_img = NULL, *ro_dev = NULL;
        uint64_t seq;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        /* The "done when": one command there, one back. */
        img = loopd_fixture_make_image(f, "users.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        dev = create_as(f, LOOPD_TEST_NOBODY, img, NULL, NULL);
        seq = client_loop_diskseq(dev);
        json = info_json(f, LOOPD_TEST_NOBODY, dev);
        assert_json(json, "d['owner-uid']", "65534");
        assert_json(json, "d['read-only']", "False");
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "list", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_nonnull(strstr(r.out, dev));
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "remove", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_true(client_wait_gone(dev, seq, 5));
        }

        /* A file the user may read but not write: loopctl falls back to
         * read-only by itself. */
        ro_img = loopd_fixture_make_image(f, "readable.img", 1 * MIB, 0, 0, 0644);
        ro_dev = create_as(f, LOOPD_TEST_NOBODY, ro_img, NULL, NULL);
        g_free(json);
        json = info_json(f, LOOPD_TEST_NOBODY, ro_dev);
        assert_json(json, "d['read-only']", "True");
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "with", img, "--", "true", NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "remove", ro_dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
}

static void test_not_authorized_exit_3(LoopdFixture *f, gconstpointer data) {
        g_autofree char *denied = NULL, *secret = NULL, *auth = NULL, *roots_img = NULL, *roots = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        denied = loopd_fixture_make_image(f, "denied.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        secret = loopd_fixture_make_image(f, "secret.img", 1 * MIB, 0, 0, 0600);
        auth = loopd_fixture_make_image(f, "needs-auth.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        roots_img = loopd_fixture_make_image(f, "roots.img", 1 * MIB, 0, 0, 0644);
        roots = create_as(f, 0, roots_img, NULL, NULL);

        /* polkit says no. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "create", denied, NULL);
                g_assert_cmpint(r.status, ==, 3);
                assert_one_error_line(&r, denied);
        }
        /* polkit would ask; stdin is no tty, so loopctl did not allow it. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "create", auth, NULL);
                g_assert_cmpint(r.status, ==, 3);
                assert_one_error_line(&r, auth);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "--no-ask-password", "create", auth, NULL);
                g_assert_cmpint(r.status, ==, 3);
        }
        /* The file's own permissions say no, before the daemon is asked. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "create", secret, NULL);
                g_assert_cmpint(r.status, ==, 3);
                assert_one_error_line(&r, secret);
        }
        /* Someone else's device. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "remove", roots, NULL);
                g_assert_cmpint(r.status, ==, 3);
                assert_one_error_line(&r, roots);
                g_assert_true(client_loop_attached(roots));
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "refresh-size", roots, NULL);
                g_assert_cmpint(r.status, ==, 3);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "remove", roots, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
}

/* Runs loopctl as root with stdin on a fresh pty when `tty`, else /dev/null,
 * and returns whether its GetDevice call allowed interactive authorization. */
static bool loopctl_asks_interactive(LoopdFixture *f, ClientMonitor *m, bool tty, bool no_ask) {
        g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDOUT_SILENCE |
                                                                      G_SUBPROCESS_FLAGS_STDERR_SILENCE);
        g_autoptr(GSubprocess) p = NULL;
        g_autoptr(GError) error = NULL;
        int master = -1, in;

        if (tty)
                g_assert_cmpint(openpty(&master, &in, NULL, NULL, NULL), ==, 0);
        else
                in = open("/dev/null", O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(in, >=, 0);
        g_subprocess_launcher_take_stdin_fd(l, in);

        if (no_ask)
                p = g_subprocess_launcher_spawn(l, &error, client_loopctl(), "--no-ask-password",
                                                "info", "loop4000", NULL);
        else
                p = g_subprocess_launcher_spawn(l, &error, client_loopctl(), "info", "loop4000", NULL);
        g_assert_no_error(error);
        g_assert_true(g_subprocess_wait(p, NULL, &error));
        g_assert_no_error(error);
        g_assert_cmpint(g_subprocess_get_exit_status(p), ==, 4);
        if (master >= 0)
                close(master);
        return client_monitor_next_call_interactive(m, "GetDevice", 10);
}

static void test_interactive_only_on_a_tty(LoopdFixture *f, gconstpointer data) {
        g_autoptr(ClientMonitor) m = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        m = client_monitor_new(f);
        g_assert_false(loopctl_asks_interactive(f, m, false, false));
        g_assert_true(loopctl_asks_interactive(f, m, true, false));
        g_assert_false(loopctl_asks_interactive(f, m, true, true));
}

static void test_no_daemon_is_a_failure(LoopdFixture *f, gconstpointer data) {
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        /* The bus is there but nobody owns org.loopd.Loop1 (and nothing can
         * activate it): 1, not one of the specific codes. */
        client_loopctl_as(f, 0, &r, "list", NULL);
        g_assert_cmpint(r.status, ==, 1);
        assert_one_error_line(&r, NULL);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn, opts) \
        g_test_add(path, LoopdFixture, opts, loopd_fixture_setup, fn, loopd_fixture_teardown)

        ADD("/loopctl/help-and-version", test_help_and_version, &bus_only);
        ADD("/loopctl/usage-errors-exit-2", test_usage_errors_exit_2, &bus_only);
        ADD("/loopctl/no-daemon-is-a-failure", test_no_daemon_is_a_failure, &bus_only);
        ADD("/loopctl/create-info-remove-roundtrip", test_create_info_remove_roundtrip, &daemon_only);
        ADD("/loopctl/create-options", test_create_options, &daemon_only);
        ADD("/loopctl/refresh-size", test_refresh_size, &daemon_only);
        ADD("/loopctl/remove-goes-on-after-a-failure", test_remove_goes_on_after_a_failure, &daemon_only);
        ADD("/loopctl/list-table-and-json", test_list_table_and_json, &daemon_only);
        ADD("/loopctl/list-escapes-control-characters", test_list_escapes_control_characters, &daemon_only);
        ADD("/loopctl/with/runs-command-and-removes", test_with_runs_command_and_removes, &daemon_only);
        ADD("/loopctl/with/exit-statuses", test_with_exit_statuses, &daemon_only);
        ADD("/loopctl/with/killed-loopctl-leaves-cleanup-to-daemon", test_with_killed_loopctl_leaves_cleanup_to_daemon, &daemon_only);
        ADD("/loopctl/with/reports-a-failed-removal", test_with_reports_a_failed_removal, &daemon_only);
        ADD("/loopctl/with/forwards-sigterm", test_with_forwards_sigterm, &daemon_only);
        ADD("/loopctl/unprivileged-user-roundtrip", test_unprivileged_user_roundtrip, &with_polkit);
        ADD("/loopctl/not-authorized-exit-3", test_not_authorized_exit_3, &with_polkit);
        ADD("/loopctl/interactive-only-on-a-tty", test_interactive_only_on_a_tty, &daemon_only);

        return g_test_run();
}
