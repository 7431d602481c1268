/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopctl for a losetup user: losetup command lines as they are typed, and
 * what they print held against losetup(8) itself on the same devices (old
 * one-line format, table, JSON), so that a script can move from one to the
 * other.
 */

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-test.h"


static const LoopdFixtureOptions daemon_only = { .start_daemon = TRUE };

static bool have_losetup(void) {
        g_autofree char *p = g_find_program_in_path("losetup");

        if (!p)
                g_test_skip("no losetup (util-linux) to compare with");
        return p != NULL;
}

/* losetup's output for args (NULL-terminated); it must succeed. */
static char *losetup(const char *first, ...) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();
        g_autofree char *err = NULL;
        char *out = NULL;
        const char *a;
        va_list ap;
        int status;

        g_ptr_array_add(argv, (char *) "losetup");
        va_start(ap, first);
        for (a = first; a; a = va_arg(ap, const char *))
                g_ptr_array_add(argv, (char *) a);
        va_end(ap);
        g_ptr_array_add(argv, NULL);
        g_assert_true(g_spawn_sync(NULL, (char **) argv->pdata, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                                   &out, &err, &status, NULL));
        if (!g_spawn_check_wait_status(status, NULL))
                g_error("losetup failed: %s", err);
        return out;
}

/* The lines of text that start with one of the devices, in the order of
 * devs (losetup -a goes by sysfs' order, loopctl by device number). */
static char *lines_of(const char *text, const char *const *devs) {
        g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
        GString *s = g_string_new(NULL);

        for (const char *const *d = devs; *d; d++)
                for (char **l = lines; *l; l++) {
                        g_autofree char *prefix = g_strdup_printf("%s:", *d);
                        g_autofree char *prefix2 = g_strdup_printf("%s ", *d);
                        if (g_str_has_prefix(*l, prefix) || g_str_has_prefix(*l, prefix2))
                                g_string_append_printf(s, "%s\n", *l);
                }
        return g_string_free(s, FALSE);
}

/* The words of a table line, one space apart. */
static char *squeeze(const char *line) {
        g_auto(GStrv) parts = g_strsplit(line, " ", -1);
        g_autoptr(GPtrArray) w = g_ptr_array_new();

        for (char **p = parts; *p; p++)
                if (**p)
                        g_ptr_array_add(w, *p);
        g_ptr_array_add(w, NULL);
        return g_strjoinv(" ", (char **) w->pdata);
}

static void test_losetup_find_show_creates(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *json = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "find.img", 4 * MIB, 0, 0, 0644);
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "-f", "--show", "-v", "-r", "-o", "4096", "--sizelimit", "1M", img, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
                g_assert_true(g_str_has_prefix(r.out, "/dev/loop"));
                g_strchomp(r.out);
                dev = g_strdup(r.out);
        }
        json = client_list_json(f);
        client_assert_dev(json, dev, "(x['offset'], x['sizelimit'], x['ro'])", "(4096, 1048576, True)");
        {
                /* Without --show losetup prints nothing; so does loopctl. */
                g_auto(LoopdRunResult) r = { 0 }, j = { 0 };
                client_loopctl_as(f, 0, &r, "--find", img, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.out, ==, "");
                client_loopctl_as(f, 0, &j, "-j", img, NULL);
                g_assert_cmpint(j.status, ==, 0);
                g_auto(GStrv) lines = g_strsplit(j.out, "\n", -1);
                g_assert_cmpuint(g_strv_length(lines), ==, 3);   /* two lines and "" */
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "-D", NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

/* -a, -j FILE and DEV print losetup's one-line format: the same lines. */
static void test_losetup_old_format_matches_losetup(LoopdFixture *f, gconstpointer data) {
        g_autofree char *a_img = NULL, *b_img = NULL, *a = NULL, *b = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!have_losetup())
                return;
        a_img = loopd_fixture_make_image(f, "old-a.img", 2 * MIB, 0, 0, 0644);
        b_img = loopd_fixture_make_image(f, "old b.img", 4 * MIB, 0, 0, 0644);
        a = client_create_as(f, 0, a_img, NULL);
        b = client_create_as(f, 0, b_img, "-o", "1M", "--sizelimit", "2M", NULL);
        {
                const char *const devs[] = { a, b, NULL };
                g_auto(LoopdRunResult) r = { 0 };
                g_autofree char *theirs = losetup("-a", NULL);
                g_autofree char *want = lines_of(theirs, devs), *got = NULL;

                client_loopctl_as(f, 0, &r, "-a", NULL);
                g_assert_cmpint(r.status, ==, 0);
                got = lines_of(r.out, devs);
                g_assert_cmpstr(got, ==, want);
                g_assert_nonnull(strstr(got, ", offset 1048576, sizelimit 2097152\n"));
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                g_autofree char *theirs = losetup("-j", b_img, NULL);

                client_loopctl_as(f, 0, &r, "-j", b_img, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.out, ==, theirs);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                g_autofree char *theirs = losetup(a, NULL);

                client_loopctl_as(f, 0, &r, a, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.out, ==, theirs);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "-d", a, b, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

/* -l, -n, -O and -J: losetup's columns with losetup's values. */
static void test_losetup_list_matches_losetup(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *theirs = NULL, *both = NULL;
        g_auto(LoopdRunResult) mine = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!have_losetup())
                return;
        img = loopd_fixture_make_image(f, "cols.img", 4 * MIB, 0, 0, 0644);
        dev = client_create_as(f, 0, img, "-o", "8192", "--sizelimit", "1M", "-r", "-P", "-b", "4096", NULL);

        /* JSON, every column losetup has, for this device. */
        theirs = losetup("-l", "-J", "--output-all", dev, NULL);
        client_loopctl_as(f, 0, &mine, "-l", "-J", "--output-all", dev, NULL);
        g_assert_cmpint(mine.status, ==, 0);
        both = g_strdup_printf("{\"losetup\": %s, \"loopctl\": %s}", theirs, mine.out);
        /* Same keys (loopctl has more), same types and values; losetup pads
         * MAJ:MIN with spaces. */
        client_assert_json(both,
                           "[(k, v, d['loopctl']['loopdevices'][0].get(k)) for k, v in "
                           "d['losetup']['loopdevices'][0].items() "
                           "if (v.strip() if isinstance(v, str) else v) != d['loopctl']['loopdevices'][0].get(k) "
                           "or type(v) != type(d['loopctl']['loopdevices'][0].get(k))]",
                           "[]");
        client_assert_json(both, "len(d['losetup']['loopdevices'][0])", "12");

        /* The default table and -n -O: the same words, OWNER added. */
        {
                g_autofree char *t = losetup("-l", dev, NULL);
                g_auto(LoopdRunResult) r = { 0 };
                g_auto(GStrv) tl = g_strsplit(t, "\n", -1);
                g_auto(GStrv) ml = NULL;

                client_loopctl_as(f, 0, &r, "-l", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
                ml = g_strsplit(r.out, "\n", -1);
                for (int i = 0; i < 2; i++) {
                        g_autofree char *want = squeeze(tl[i]), *got = squeeze(ml[i]);
                        g_autofree char *want_owner = g_strdup_printf("%s %s", want, i == 0 ? "OWNER" : "root");
                        g_assert_cmpstr(got, ==, want_owner);
                }
        }
        {
                g_autofree char *t = losetup("-l", "-n", "-O", "NAME,BACK-FILE,RO,LOG-SEC", dev, NULL);
                g_auto(LoopdRunResult) r = { 0 };

                client_loopctl_as(f, 0, &r, "-l", "-n", "-O", "NAME,BACK-FILE,RO,LOG-SEC", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.out, ==, t);
        }
        {
                g_autofree char *t = losetup("-l", "--raw", "-O", "NAME,OFFSET,SIZELIMIT,PARTSCAN", dev, NULL);
                g_auto(LoopdRunResult) r = { 0 };

                client_loopctl_as(f, 0, &r, "-l", "--raw", "-O", "NAME,OFFSET,SIZELIMIT,PARTSCAN", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.out, ==, t);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "-d", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
}

static void test_losetup_set_capacity_and_detach(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *json = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "capacity.img", 1 * MIB, 0, 0, 0644);
        dev = client_create_as(f, 0, img, NULL);
        g_assert_cmpint(truncate(img, 2 * MIB), ==, 0);
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "--set-capacity", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        json = client_list_json(f);
        client_assert_dev(json, dev, "x['size']", "2097152");
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "-c", "loop4000", NULL);
                g_assert_cmpint(r.status, ==, 4);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "--detach", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

static void test_losetup_refusals(LoopdFixture *f, gconstpointer data) {
        static const ClientUsageCase cases[] = {
                { { "/dev/loop7", "IMG", NULL }, "loopd chooses the loop device itself" },
                { { "-f", NULL }, "-f without FILE" },
                { { "-d", "loop4000", "-D", NULL }, "cannot be combined" },
                { { "-c", "loop4000", "-a", NULL }, "cannot be combined" },
                { { "-r", "-a", NULL }, "for setting up a device" },
                { { "--show", "-l", NULL }, "for setting up a device" },
                { { "-d", "loop4000", "-l", NULL }, "cannot be combined" },
                { { "-e", "aes", "-f", "IMG", NULL }, "encryption is not supported" },
                { { "-L", "-f", "IMG", NULL }, "'-L' is not supported" },
                { { "-D", "loop0", NULL }, "-D takes no DEV" },
                { { "a", "b", "c", NULL }, "too many arguments" },
                { { "--frob", NULL }, "unknown option '--frob'" },
        };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        client_assert_usage_errors(f, cases, G_N_ELEMENTS(cases));
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn, opts) \
        g_test_add(path, LoopdFixture, opts, loopd_fixture_setup, fn, loopd_fixture_teardown)

        ADD("/loopctl/losetup/find-show-creates", test_losetup_find_show_creates, &daemon_only);
        ADD("/loopctl/losetup/old-format-matches-losetup", test_losetup_old_format_matches_losetup, &daemon_only);
        ADD("/loopctl/losetup/list-matches-losetup", test_losetup_list_matches_losetup, &daemon_only);
        ADD("/loopctl/losetup/set-capacity-and-detach", test_losetup_set_capacity_and_detach, &daemon_only);
        ADD("/loopctl/losetup/refusals", test_losetup_refusals, &daemon_only);

        return g_test_run();
}
