/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopctl's commands against the real loopd: every command, every exit
 * code, errors that name what was typed, the table and JSON (parsed by a
 * real JSON parser), and names that are bytes. losetup command lines and
 * the comparison with losetup itself: test-loopctl-losetup.c; `with`:
 * test-loopctl-with.c.
 */

#include <errno.h>
#include <fcntl.h>
#include <pty.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-test.h"


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

static void remove_as(LoopdFixture *f, uid_t uid, const char *dev) {
        g_auto(LoopdRunResult) r = { 0 };

        client_loopctl_as(f, uid, &r, "remove", dev, NULL);
        if (r.status != 0)
                g_error("loopctl remove %s: %d %s", dev, r.status, r.err);
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
                g_assert_nonnull(strstr(r.out, "(losetup -f --show)"));
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
                /* list --help names every column, losetup's and loopd's. */
                static const char *const cols[] = {
                        "NAME", "AUTOCLEAR", "BACK-FILE", "BACK-INO", "BACK-MAJ:MIN", "MAJ:MIN", "OFFSET",
                        "PARTSCAN", "RO", "SIZELIMIT", "DIO", "LOG-SEC", "SIZE", "OWNER", "UID", "BOUND",
                        "DETACHING", "DISKSEQ", "OBJECT",
                };
                g_auto(LoopdRunResult) r = { 0 };

                client_loopctl_as(f, 0, &r, "list", "-h", NULL);
                for (size_t i = 0; i < G_N_ELEMENTS(cols); i++) {
                        g_autofree char *line = g_strdup_printf(" %12s  ", cols[i]);
                        if (!strstr(r.out, line))
                                g_error("list --help lacks column %s:\n%s", cols[i], r.out);
                }
        }
        {
                g_auto(LoopdRunResult) r = { 0 }, v = { 0 };
                client_loopctl_as(f, 0, &r, "--version", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_true(g_str_has_prefix(r.out, "loopctl "));
                client_loopctl_as(f, 0, &v, "-V", NULL);
                g_assert_cmpstr(v.out, ==, r.out);
        }
}

/* Each case: arguments ("IMG" is an image), then what stderr must say. */
static void test_usage_errors_name_what_was_typed(LoopdFixture *f, gconstpointer data) {
        static const ClientUsageCase cases[] = {
                { { "frobnicate", "x", NULL }, "frobnicate" },
                { { "--frobnicate", "list", NULL }, "unknown option '--frobnicate'" },
                { { "list", "--frobnicate", NULL }, "list: unknown option '--frobnicate'" },
                { { "create", "IMG", "-x", NULL }, "create: unknown option '-x'" },
                { { "create", NULL }, "create: missing FILE" },
                { { "create", "IMG", "IMG", "IMG", NULL }, "exactly one FILE" },
                { { "create", "IMG", "--offset", "1X", NULL }, "'--offset': '1X' is not a size" },
                { { "create", "IMG", "-o", "1X", NULL }, "'-o': '1X' is not a size" },
                { { "create", "IMG", "--offset", "-1", NULL }, "'-1' is not a size" },
                { { "create", "IMG", "--offset", "08", NULL }, "leading 0 means octal" },
                { { "create", "IMG", "--offset", "1.05K", NULL }, "'1.05K' is not a whole number of bytes" },
                { { "create", "IMG", "--sizelimit", "99999999E", NULL }, "'99999999E' is too large" },
                { { "create", "IMG", "--sector-size", "8G", NULL }, "'--sector-size': '8G' is too large" },
                { { "create", "IMG", "--offset", NULL }, "option '--offset' needs a value" },
                { { "create", "IMG", "-o", NULL }, "option '-o' needs a value" },
                /* The three of the issue: a control byte, a cut-off name,
                 * the short twin named instead of what was typed. */
                { { "create", "--direct-io=yes", "IMG", NULL }, "option '--direct-io' takes 'on' or 'off', not 'yes'" },
                { { "--version=2", NULL }, "option '--version' takes no value ('--version=2')" },
                { { "create", "--read-only=yes", "IMG", NULL }, "option '--read-only' takes no value ('--read-only=yes')" },
                { { "create", "--s", "1", "IMG", NULL }, "ambiguous option '--s'" },
                { { "create", "--json", "IMG", NULL }, "create: option '--json' is for list and info" },
                { { "--json", "create", "IMG", NULL }, "create: option '--json' is for list and info" },
                { { "remove", "--read-only", "loop0", NULL }, "remove: option '--read-only' is for create and with" },
                { { "info", "--raw", "loop0", NULL }, "info: option '--raw' is for list" },
                { { "list", "-O", "NAME,FOO", NULL }, "unknown column 'FOO'" },
                { { "list", "--offset", "1", NULL }, "with --associated" },
                { { "list", "-j", "/nonexistent/image", NULL }, "/nonexistent/image" },
                { { "remove", NULL }, "remove: missing DEV" },
                { { "remove", "--all", "loop0", NULL }, "--all and DEV cannot be combined" },
                { { "refresh-size", NULL }, "refresh-size: missing DEV" },
                { { "refresh-size", "loop0", "loop1", NULL }, "exactly one DEV" },
                { { "info", NULL }, "info: missing DEV" },
                { { "with", "IMG", NULL }, "missing '--'" },
                /* CMD's own options without "--": the missing "--" is the
                 * error, not CMD's "-c". */
                { { "with", "IMG", "sh", "-c", "true", NULL }, "with: missing '--' before CMD" },
                { { "with", "IMG", "--", NULL }, "missing CMD after '--'" },
                { { "with", "--", "true", NULL }, "missing FILE" },
                { { "create", "/dev/loop7", "IMG", NULL }, "loopd chooses the loop device itself" },
                { { "create", "-L", "IMG", NULL }, "option '-L' is not supported" },
                /* A FILE that cannot back a device is a bad argument too. */
                { { "create", "/nonexistent/image", NULL }, "/nonexistent/image" },
                { { "create", "/", NULL }, "/: Is a directory" },
                { { "create", "/dev/null", NULL }, "not a regular file or block device" },
        };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        client_assert_usage_errors(f, cases, G_N_ELEMENTS(cases));
}

static void test_no_daemon_is_a_failure(LoopdFixture *f, gconstpointer data) {
        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        /* The bus is there but nobody owns org.loopd.Loop1 (and nothing can
         * activate it): 1, not one of the specific codes. loopctl alone
         * lists, as losetup alone does. */
        for (int i = 0; i < 2; i++) {
                g_auto(LoopdRunResult) r = { 0 };

                if (i == 0)
                        client_loopctl_as(f, 0, &r, "list", NULL);
                else
                        client_loopctl_as(f, 0, &r, NULL);
                g_assert_cmpint(r.status, ==, 1);
                client_assert_one_error_line(&r, NULL);
        }
}

/* ---- create, info, remove, refresh-size ---------------------------------- */

/* info's text: "   Label: value", the labels right-aligned. */
static const char *info_value(char **lines, const char *label) {
        g_autofree char *prefix = g_strdup_printf("%s: ", label);

        for (char **l = lines; *l; l++) {
                const char *t = *l + strspn(*l, " ");
                if (g_str_has_prefix(t, prefix))
                        return t + strlen(prefix);
        }
        g_error("no '%s' in info", label);
}

static void test_create_info_remove_roundtrip(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *name = NULL, *inode = NULL;
        uint64_t seq;
        struct stat st;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "roundtrip.img", 2 * MIB, 0, 0, 0644);
        g_assert_cmpint(stat(img, &st), ==, 0);
        inode = g_strdup_printf("%llu", (unsigned long long) st.st_ino);
        dev = client_create_as(f, 0, img, NULL);
        seq = client_loop_diskseq(dev);
        name = g_strdup(dev + 5);

        {
                g_auto(LoopdRunResult) r = { 0 };
                g_auto(GStrv) lines = NULL;
                size_t colon = 0;

                client_loopctl_as(f, 0, &r, "info", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
                lines = g_strsplit(r.out, "\n", -1);
                g_assert_cmpstr(info_value(lines, "Name"), ==, dev);
                g_assert_cmpstr(info_value(lines, "Backing file"), ==, img);
                g_assert_cmpstr(info_value(lines, "Backing inode"), ==, inode);
                g_assert_cmpstr(info_value(lines, "Read-only"), ==, "no");
                g_assert_cmpstr(info_value(lines, "Bound to caller"), ==, "no");
                g_assert_cmpstr(info_value(lines, "Owner"), ==, "root");
                g_assert_cmpstr(info_value(lines, "Owner UID"), ==, "0");
                g_assert_cmpstr(info_value(lines, "Size"), ==, "2097152");
                g_assert_true(g_str_has_prefix(info_value(lines, "Object"), "/org/loopd/Loop1/device/"));
                /* The colons line up. */
                for (char **l = lines; *l && **l; l++) {
                        size_t c = (size_t) (strchr(*l, ':') - *l);
                        if (colon == 0)
                                colon = c;
                        g_assert_cmpuint(c, ==, colon);
                }
        }
        {
                /* info -J: the list's JSON with every column. */
                g_auto(LoopdRunResult) r = { 0 }, g = { 0 };

                client_loopctl_as(f, 0, &r, "info", "-J", name, NULL);
                g_assert_cmpint(r.status, ==, 0);
                client_assert_json(r.out, "len(d['loopdevices'])", "1");
                client_assert_dev(r.out, dev, "x['back-file']", img);
                client_assert_dev(r.out, dev, "x['back-ino']", inode);
                client_assert_dev(r.out, dev, "x['size']", "2097152");
                client_assert_dev(r.out, dev, "x['owner']", "root");
                client_assert_dev(r.out, dev, "x['uid']", "0");
                client_assert_dev(r.out, dev, "x['bound']", "False");
                client_assert_dev(r.out, dev, "x['diskseq'] > 0", "True");
                client_assert_dev(r.out, dev, "x['object'].startswith('/org/loopd/Loop1/device/' + x['name'][5:] + '_')", "True");
                client_assert_dev(r.out, dev, "sorted(x.keys())",
                                  "['autoclear', 'back-file', 'back-ino', 'back-maj:min', 'bound', 'detaching', "
                                  "'dio', 'diskseq', 'log-sec', 'maj:min', 'name', 'object', 'offset', 'owner', "
                                  "'partscan', 'ro', 'size', 'sizelimit', 'uid']");
                /* --json is a global option too. */
                client_loopctl_as(f, 0, &g, "--json", "info", dev, NULL);
                g_assert_cmpint(g.status, ==, 0);
                g_assert_cmpstr(g.out, ==, r.out);
        }

        remove_as(f, 0, dev);
        g_assert_true(client_wait_gone(dev, seq, 5));

        /* Not attached: 4, with the daemon's message. (Not `dev` again: a
         * parallel test may have been given that number by now.) */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "remove", "loop4000", NULL);
                g_assert_cmpint(r.status, ==, 4);
                client_assert_one_error_line(&r, "loop4000");
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "info", "/dev/loop4000", NULL);
                g_assert_cmpint(r.status, ==, 4);
                client_assert_one_error_line(&r, "/dev/loop4000");
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "info", "/dev/null", NULL);
                g_assert_cmpint(r.status, ==, 4);
                client_assert_one_error_line(&r, NULL);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "list", "/dev/loop4000", NULL);
                g_assert_cmpint(r.status, ==, 4);
                client_assert_one_error_line(&r, "/dev/loop4000");
                g_assert_cmpstr(r.out, ==, "");
        }
}

static void test_create_options_as_losetup_spells_them(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *dev2 = NULL, *dev3 = NULL, *json = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "options.img", 8 * MIB, 0, 0, 0644);
        /* losetup's names and its size rules: 0x100000 is 1 MiB, 010K is
         * 8 KiB (octal), 2MiB, 4K. */
        dev = client_create_as(f, 0, img, "--offset", "0x100000", "--sizelimit=2MiB", "-b", "4K", "-r", "-P", NULL);
        dev2 = client_create_as(f, 0, img, "-o", "010K", "--sector-size=1024", "--direct-io=off", NULL);
        /* Whether the kernel keeps direct I/O on depends on the backing file
         * system; the option must at least be accepted. loopctl's first
         * spellings still work, and --show (create always prints). */
        dev3 = client_create_as(f, 0, img, "--direct-io", "--size-limit", "1.5M", "--block-size", "512", "--show", NULL);

        json = client_list_json(f);
        client_assert_dev(json, dev, "(x['offset'], x['sizelimit'], x['size'], x['log-sec'], x['ro'], x['partscan'], x['autoclear'])",
                          "(1048576, 2097152, 2097152, 4096, True, True, False)");
        client_assert_dev(json, dev2, "(x['offset'], x['log-sec'], x['dio'], x['ro'])", "(8192, 1024, False, False)");
        client_assert_dev(json, dev3, "(x['sizelimit'], x['log-sec'])", "(1572864, 512)");

        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "remove", dev, dev2, dev3, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        /* The daemon refuses what loopctl cannot judge: 2 with its message. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "create", img, "--sector-size", "1000", NULL);
                g_assert_cmpint(r.status, ==, 2);
                client_assert_one_error_line(&r, img);
        }
        /* A file that does not fill its last sector: losetup's warning. */
        {
                g_autofree char *odd = loopd_fixture_make_image(f, "odd.img", 1 * MIB + 100, 0, 0, 0644);
                g_auto(LoopdRunResult) r = { 0 };

                client_loopctl_as(f, 0, &r, "create", odd, NULL);
                g_assert_cmpint(r.status, ==, 0);
                client_assert_one_error_line(&r, "512-byte sector");
                g_strchomp(r.out);
                remove_as(f, 0, r.out);
        }
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

static void test_refresh_size(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *json = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "grow.img", 1 * MIB, 0, 0, 0644);
        dev = client_create_as(f, 0, img, NULL);
        g_assert_cmpint(truncate(img, 3 * MIB), ==, 0);
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "refresh-size", dev + 5, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
        }
        json = client_list_json(f);
        client_assert_dev(json, dev, "x['size']", "3145728");
        remove_as(f, 0, dev);
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "refresh-size", "loop4000", NULL);
                g_assert_cmpint(r.status, ==, 4);
                client_assert_one_error_line(&r, NULL);
        }
}

static void test_remove_goes_on_after_a_failure(LoopdFixture *f, gconstpointer data) {
        g_autofree char *a = NULL, *b = NULL, *img = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "many.img", 1 * MIB, 0, 0, 0644);
        a = client_create_as(f, 0, img, NULL);
        b = client_create_as(f, 0, img, NULL);

        client_loopctl_as(f, 0, &r, "remove", a, "sda", b, NULL);
        g_assert_cmpint(r.status, ==, 4);
        client_assert_one_error_line(&r, "sda");
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

/* remove --all: the caller's own devices; root's: every device loopd made;
 * never one set up without loopd. */
static void test_remove_all_takes_own_devices(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *roots_img = NULL, *mine1 = NULL, *mine2 = NULL, *roots = NULL;
        g_autofree char *plain_img = NULL, *plain = NULL;
        uint64_t seq1, seq2, seq_roots;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "all-mine.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        roots_img = loopd_fixture_make_image(f, "all-roots.img", 1 * MIB, 0, 0, 0644);
        plain_img = loopd_fixture_make_image(f, "all-plain.img", 1 * MIB, 0, 0, 0644);
        mine1 = client_create_as(f, LOOPD_TEST_NOBODY, img, NULL);
        mine2 = client_create_as(f, LOOPD_TEST_NOBODY, img, "-r", NULL);
        seq1 = client_loop_diskseq(mine1);
        seq2 = client_loop_diskseq(mine2);
        roots = client_create_as(f, 0, roots_img, NULL);
        seq_roots = client_loop_diskseq(roots);
        {
                /* losetup, not loopd: the fixture detaches it at teardown. */
                g_autofree char *out = NULL;
                const char *argv[] = { "losetup", "-f", "--show", plain_img, NULL };
                int status;

                g_assert_true(g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                                           &out, NULL, &status, NULL));
                g_assert_cmpint(status, ==, 0);
                plain = g_strstrip(g_strdup(out));
        }

        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "remove", "--all", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
        }
        g_assert_true(client_wait_gone(mine1, seq1, 5));
        g_assert_true(client_wait_gone(mine2, seq2, 5));
        g_assert_true(client_loop_attached(roots));
        g_assert_true(client_loop_attached(plain));

        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "remove", "-D", NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        g_assert_true(client_wait_gone(roots, seq_roots, 5));
        g_assert_true(client_loop_attached(plain));
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 1);
}

/* ---- list ---------------------------------------------------------------- */

/* The words of a table line. */
static GPtrArray *words(const char *line) {
        g_auto(GStrv) parts = g_strsplit_set(line, " ", -1);
        GPtrArray *w = g_ptr_array_new_with_free_func(g_free);

        for (char **p = parts; *p; p++)
                if (**p)
                        g_ptr_array_add(w, g_strdup(*p));
        return w;
}

static void test_list_table_and_json(LoopdFixture *f, gconstpointer data) {
        g_autofree char *a_img = NULL, *b_img = NULL, *a = NULL, *b = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_auto(GStrv) lines = NULL;
        bool seen_a = false, seen_b = false;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        a_img = loopd_fixture_make_image(f, "list-a.img", 1 * MIB, 0, 0, 0644);
        b_img = loopd_fixture_make_image(f, "list-b.img", 2 * MIB, 0, 0, 0644);
        a = client_create_as(f, 0, a_img, NULL);
        b = client_create_as(f, 0, b_img, "--offset=4096", "--read-only", NULL);

        client_loopctl_as(f, 0, &r, "list", NULL);
        g_assert_cmpint(r.status, ==, 0);
        lines = g_strsplit(r.out, "\n", -1);
        {
                g_autoptr(GPtrArray) h = words(lines[0]);
                g_ptr_array_add(h, NULL);
                g_autofree char *joined = g_strjoinv(" ", (char **) h->pdata);
                g_assert_cmpstr(joined, ==, "NAME SIZELIMIT OFFSET AUTOCLEAR RO BACK-FILE DIO LOG-SEC OWNER");
        }
        for (char **l = lines + 1; *l && **l; l++) {
                g_autoptr(GPtrArray) c = words(*l);

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
                } else {
                        seen_b = true;
                        g_assert_cmpstr(c->pdata[2], ==, "4096");
                        g_assert_cmpstr(c->pdata[4], ==, "1");
                        g_assert_cmpstr(c->pdata[5], ==, b_img);
                        g_assert_cmpstr(c->pdata[7], ==, "512");
                }
        }
        g_assert_true(seen_a && seen_b);

        /* -J: losetup's shape, its keys, numbers and booleans. */
        {
                g_auto(LoopdRunResult) j = { 0 };
                g_autofree char *expr = NULL;

                client_loopctl_as(f, 0, &j, "list", "-J", NULL);
                g_assert_cmpint(j.status, ==, 0);
                client_assert_json(j.out, "list(d.keys())", "['loopdevices']");
                client_assert_dev(j.out, a, "list(x.keys())",
                                  "['name', 'sizelimit', 'offset', 'autoclear', 'ro', 'back-file', 'dio', 'log-sec', 'owner']");
                expr = g_strdup_printf("(x['offset'], x['ro'], x['back-file'] == '%s', x['owner'])", b_img);
                client_assert_dev(j.out, b, expr, "(4096, True, True, 'root')");
                /* Sorted by device number. */
                client_assert_json(j.out, "[int(x['name'][9:]) for x in d['loopdevices']] == "
                                          "sorted(int(x['name'][9:]) for x in d['loopdevices'])", "True");
        }
        /* -O, +COLS, -n, --raw. */
        {
                g_auto(LoopdRunResult) o = { 0 };
                g_autofree char *expected = g_strdup_printf("%s %s\n", a, a_img);

                client_loopctl_as(f, 0, &o, "list", "-n", "--raw", "-O", "name,BACK-FILE", a, NULL);
                g_assert_cmpint(o.status, ==, 0);
                g_assert_cmpstr(o.out, ==, expected);
        }
        {
                g_auto(LoopdRunResult) o = { 0 };

                client_loopctl_as(f, 0, &o, "list", "-O", "+DISKSEQ,OBJECT", b, NULL);
                g_assert_cmpint(o.status, ==, 0);
                g_auto(GStrv) l = g_strsplit(o.out, "\n", -1);
                g_autoptr(GPtrArray) h = words(l[0]);
                g_autoptr(GPtrArray) c = words(l[1]);
                g_assert_cmpuint(h->len, ==, 11);
                g_assert_cmpstr(h->pdata[9], ==, "DISKSEQ");
                g_assert_cmpstr(c->pdata[0], ==, b);
                g_assert_true(g_str_has_prefix(c->pdata[10], "/org/loopd/Loop1/device/"));
                g_assert_null(l[2] && *l[2] ? l[2] : NULL);
        }
        /* -j FILE, and with -o OFFSET. */
        {
                g_auto(LoopdRunResult) j = { 0 }, k = { 0 };
                g_autofree char *expected = g_strdup_printf("%s\n", b);

                client_loopctl_as(f, 0, &j, "list", "-n", "-O", "NAME", "-j", b_img, NULL);
                g_assert_cmpint(j.status, ==, 0);
                g_assert_cmpstr(j.out, ==, expected);
                client_loopctl_as(f, 0, &k, "list", "-n", "-O", "NAME", "-j", b_img, "-o", "0", NULL);
                g_assert_cmpint(k.status, ==, 0);
                g_assert_cmpstr(k.out, ==, "");
        }

        {
                g_auto(LoopdRunResult) x = { 0 };
                client_loopctl_as(f, 0, &x, "remove", a, b, NULL);
                g_assert_cmpint(x.status, ==, 0);
        }
        /* Nothing of ours left (judged by backing file: the numbers may be
         * other tests' by now), and the JSON still parses. */
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
        {
                g_autofree char *json = client_list_json(f);
                g_autofree char *e = g_strdup_printf("[x for x in d['loopdevices'] if x['back-file'].startswith('%s/')]",
                                                     f->image_dir);
                client_assert_json(json, e, "[]");
        }
}

/* Display cells of a UTF-8 line up to byte `end`. */
static size_t cells(const char *s, const char *end) {
        size_t w = 0;

        for (const char *p = s; p < end; p = g_utf8_next_char(p))
                w += g_unichar_iswide(g_utf8_get_char(p)) ? 2 : 1;
        return w;
}

/*
 * Names are bytes: not UTF-8, control characters, a newline, a quote and a
 * backslash, CJK, 4000 bytes. None may break a line of the table, move the
 * terminal, or make the JSON invalid; JSON gives every UTF-8 name exactly
 * and the others escaped as BackingFile writes them.
 */
static void test_list_names_are_bytes(LoopdFixture *f, gconstpointer data) {
        static const char *const names[] = {
                "lat\xe9n.img",
                "evil\033[31m\"q\\.img",
                "new\nline.img",
                "日本語の名前.img",
                ("c1-\xc2\x9b" "31m.img"),   /* split: \x9b31 would be one escape */
        };
        g_autoptr(GPtrArray) paths = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) devs = g_ptr_array_new_with_free_func(g_free);
        g_autofree char *long_dir = NULL, *json = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_auto(GStrv) lines = NULL;
        ssize_t dio_cells = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        for (size_t i = 0; i < G_N_ELEMENTS(names); i++)
                g_ptr_array_add(paths, loopd_fixture_make_image(f, names[i], 1 * MIB, 0, 0, 0644));
        /* About 4000 bytes of path: nested directories of 200-byte names. */
        long_dir = g_strdup(f->image_dir);
        while (strlen(long_dir) < 3700) {
                g_autofree char *part = g_strnfill(200, 'd');
                char *next = g_build_filename(long_dir, part, NULL);
                g_assert_cmpint(mkdir(next, 0755), ==, 0);
                g_free(long_dir);
                long_dir = next;
        }
        {
                g_autofree char *part = g_strnfill(4000 - strlen(long_dir) - 1, 'f');
                char *p = g_build_filename(long_dir, part, NULL);
                g_assert_cmpint(strlen(p), ==, 4000);
                g_assert_true(g_file_set_contents(p, "", 0, NULL));
                g_assert_cmpint(truncate(p, 1 * MIB), ==, 0);
                g_ptr_array_add(paths, p);
        }
        for (guint i = 0; i < paths->len; i++)
                g_ptr_array_add(devs, client_create_as(f, 0, paths->pdata[i], NULL));

        /* The table, in a UTF-8 locale: one line per device, nothing a
         * terminal would act on, columns aligned by display cells. */
        g_setenv("LC_ALL", "C.UTF-8", TRUE);
        client_loopctl_as(f, 0, &r, "list", NULL);
        g_unsetenv("LC_ALL");
        g_assert_cmpint(r.status, ==, 0);
        g_assert_null(strchr(r.out, '\033'));
        g_assert_null(strstr(r.out, "\xc2\x9b"));
        lines = g_strsplit(r.out, "\n", -1);
        for (guint i = 0; i < devs->len; i++) {
                g_autofree char *prefix = g_strdup_printf("%s ", (char *) devs->pdata[i]);
                guint found = 0;

                for (char **l = lines; *l; l++) {
                        const char *dio;

                        if (!g_str_has_prefix(*l, prefix))
                                continue;
                        found++;
                        g_assert_true(g_utf8_validate(*l, -1, NULL));
                        /* "... BACK-FILE DIO LOG-SEC OWNER": DIO's "0" ends
                         * at the same cell on every line but the longest. */
                        dio = g_strrstr(*l, " root");
                        g_assert_nonnull(dio);
                        if (strlen(paths->pdata[i]) < 1000) {
                                ssize_t c = (ssize_t) cells(*l, dio);
                                if (dio_cells < 0)
                                        dio_cells = c;
                                g_assert_cmpint(c, ==, dio_cells);
                        }
                }
                g_assert_cmpuint(found, ==, 1);
        }
        g_assert_nonnull(strstr(r.out, "lat\\xe9n.img"));
        g_assert_nonnull(strstr(r.out, "new\\x0aline.img"));
        g_assert_nonnull(strstr(r.out, "evil\\x1b[31m\"q\\.img"));
        g_assert_nonnull(strstr(r.out, "日本語の名前.img"));

        /* JSON: valid, every UTF-8 name exact, the other one escaped. */
        json = client_list_json(f);
        g_assert_null(strchr(json, '\033'));
        g_assert_true(g_utf8_validate(json, -1, NULL));
        for (guint i = 1; i < devs->len; i++) {
                g_autofree char *check = NULL;
                g_autofree char *hex = NULL;
                GString *h = g_string_new(NULL);

                for (const unsigned char *p = paths->pdata[i]; *p; p++)
                        g_string_append_printf(h, "%02x", *p);
                hex = g_string_free(h, FALSE);
                check = g_strdup_printf("[x['back-file'] for x in d['loopdevices'] if x['name'] == '%s'][0]"
                                        ".encode('utf-8').hex() == '%s'", (char *) devs->pdata[i], hex);
                client_assert_json(json, check, "True");
        }
        {
                g_autofree char *check = g_strdup_printf("[x['back-file'] for x in d['loopdevices'] if x['name'] == '%s'][0]"
                                                         " == '%s/lat\\\\xe9n.img'", (char *) devs->pdata[0], f->image_dir);
                client_assert_json(json, check, "True");
        }

        for (guint i = 0; i < devs->len; i++)
                remove_as(f, 0, devs->pdata[i]);
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

/* ---- unprivileged callers and polkit --------------------------------------- */

static void test_unprivileged_user_roundtrip(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *json = NULL, *ro_img = NULL, *ro_dev = NULL;
        uint64_t seq;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "users.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        dev = client_create_as(f, LOOPD_TEST_NOBODY, img, NULL);
        seq = client_loop_diskseq(dev);
        json = client_list_json(f);
        client_assert_dev(json, dev, "(x['uid'], x['ro'])", "(65534, False)");
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "list", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_nonnull(strstr(r.out, dev));
        }
        remove_as(f, LOOPD_TEST_NOBODY, dev);
        g_assert_true(client_wait_gone(dev, seq, 5));

        /* A file the user may read but not write: loopctl falls back to
         * read-only by itself, and says so. */
        ro_img = loopd_fixture_make_image(f, "readable.img", 1 * MIB, 0, 0, 0644);
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "create", ro_img, NULL);
                g_assert_cmpint(r.status, ==, 0);
                client_assert_one_error_line(&r, "warning: cannot open it read-write (Permission denied)");
                g_strchomp(r.out);
                ro_dev = g_strdup(r.out);
        }
        g_free(json);
        json = client_list_json(f);
        client_assert_dev(json, ro_dev, "x['ro']", "True");
        /* Asked for read-only: no warning. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "create", "-r", ro_img, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
                g_strchomp(r.out);
                remove_as(f, LOOPD_TEST_NOBODY, r.out);
        }
        remove_as(f, LOOPD_TEST_NOBODY, ro_dev);
}

static void test_not_authorized_exit_3(LoopdFixture *f, gconstpointer data) {
        g_autofree char *denied = NULL, *secret = NULL, *auth = NULL, *roots_img = NULL, *roots = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        denied = loopd_fixture_make_image(f, "denied.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        secret = loopd_fixture_make_image(f, "secret.img", 1 * MIB, 0, 0, 0600);
        auth = loopd_fixture_make_image(f, "needs-auth.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        roots_img = loopd_fixture_make_image(f, "roots.img", 1 * MIB, 0, 0, 0644);
        roots = client_create_as(f, 0, roots_img, NULL);

        /* polkit says no. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "create", denied, NULL);
                g_assert_cmpint(r.status, ==, 3);
                client_assert_one_error_line(&r, denied);
        }
        /* polkit would ask; stdin is no tty, so loopctl did not allow it. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "create", auth, NULL);
                g_assert_cmpint(r.status, ==, 3);
                client_assert_one_error_line(&r, auth);
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
                client_assert_one_error_line(&r, secret);
        }
        /* Someone else's device. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "remove", roots, NULL);
                g_assert_cmpint(r.status, ==, 3);
                client_assert_one_error_line(&r, roots);
                g_assert_true(client_loop_attached(roots));
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "refresh-size", roots, NULL);
                g_assert_cmpint(r.status, ==, 3);
        }
        remove_as(f, 0, roots);
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

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn, opts) \
        g_test_add(path, LoopdFixture, opts, loopd_fixture_setup, fn, loopd_fixture_teardown)

        ADD("/loopctl/help-and-version", test_help_and_version, &bus_only);
        ADD("/loopctl/usage-errors-name-what-was-typed", test_usage_errors_name_what_was_typed, &bus_only);
        ADD("/loopctl/no-daemon-is-a-failure", test_no_daemon_is_a_failure, &bus_only);
        ADD("/loopctl/create-info-remove-roundtrip", test_create_info_remove_roundtrip, &daemon_only);
        ADD("/loopctl/create-options-as-losetup-spells-them", test_create_options_as_losetup_spells_them, &daemon_only);
        ADD("/loopctl/refresh-size", test_refresh_size, &daemon_only);
        ADD("/loopctl/remove-goes-on-after-a-failure", test_remove_goes_on_after_a_failure, &daemon_only);
        ADD("/loopctl/remove-all-takes-own-devices", test_remove_all_takes_own_devices, &with_polkit);
        ADD("/loopctl/list-table-and-json", test_list_table_and_json, &daemon_only);
        ADD("/loopctl/list-names-are-bytes", test_list_names_are_bytes, &daemon_only);
        ADD("/loopctl/unprivileged-user-roundtrip", test_unprivileged_user_roundtrip, &with_polkit);
        ADD("/loopctl/not-authorized-exit-3", test_not_authorized_exit_3, &with_polkit);
        ADD("/loopctl/interactive-only-on-a-tty", test_interactive_only_on_a_tty, &daemon_only);

        return g_test_run();
}
