/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* loopctl's pure helpers: sizes as util-linux reads them (checked against
 * util-linux's own parser where the machine has it), getopt's failures in
 * words, and file names made valid UTF-8. */

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "loopctl-util.h"

/* Sizes util-linux 2.38 reads to the same value (fallocate(1) and losetup(8)
 * share lib/strutils.c's strtosize()). */
static const struct {
        const char *s;
        uint64_t v;
} same_as_util_linux[] = {
        { "4096", 4096 },
        { "1", 1 },
        { "010", 8 },          /* octal, as strtoumax(base 0) */
        { "010K", 8192 },
        { "0x10", 16 }, { "0X10", 16 }, { "0x1p", 0 },   /* 0x1p: see below */
        { " 12", 12 }, { "+12", 12 },
        { "1K", 1024 }, { "1k", 1024 }, { "1KiB", 1024 }, { "1Kib", 1024 }, { "1kib", 1024 },
        { "1KB", 1000 }, { "1Kb", 1000 }, { "1kb", 1000 },
        { "2M", 2ULL << 20 }, { "2MiB", 2ULL << 20 }, { "2MB", 2000000 },
        { "3G", 3ULL << 30 }, { "3GB", 3000000000ULL },
        { "1T", 1ULL << 40 }, { "1TB", 1000000000000ULL },
        { "1P", 1ULL << 50 }, { "1E", 1ULL << 60 }, { "7E", 7ULL << 60 },
        { "1.5M", 1572864 }, { "0.5KiB", 512 }, { "00.5K", 512 }, { "1.K", 1024 },
        { "1.0K", 1024 }, { "1.5KB", 1500 }, { "1.5Kb", 1500 },
        { "1.000K", 1024 },
};

static void test_parse_size_same_as_util_linux(void) {
        uint64_t v;

        for (size_t i = 0; i < G_N_ELEMENTS(same_as_util_linux); i++) {
                if (g_str_equal(same_as_util_linux[i].s, "0x1p"))
                        continue;   /* a suffix 'p' after hex digits: only for the tool check */
                v = 12345;
                if (parse_size(same_as_util_linux[i].s, &v) != 0)
                        g_error("parse_size(\"%s\") failed", same_as_util_linux[i].s);
                g_assert_cmpuint(v, ==, same_as_util_linux[i].v);
        }
        g_assert_cmpint(parse_size("0x1p", &v), ==, 0);
        g_assert_cmpuint(v, ==, 1ULL << 50);
        g_assert_cmpint(parse_size("18446744073709551615", &v), ==, 0);
        g_assert_cmpuint(v, ==, UINT64_MAX);
        g_assert_cmpint(parse_size("15E", &v), ==, 0);
        g_assert_cmpuint(v, ==, 15ULL << 60);
        g_assert_cmpint(parse_size("0Z", &v), ==, 0);
        g_assert_cmpuint(v, ==, 0);
}

static void test_parse_size_refuses(void) {
        static const struct {
                const char *s;
                int r;
        } bad[] = {
                { "", -EINVAL }, { "K", -EINVAL }, { "-1", -EINVAL }, { " -1", -EINVAL },
                { "1 ", -EINVAL }, { "1X", -EINVAL }, { "1KK", -EINVAL }, { "1Ki", -EINVAL },
                { "1KIB", -EINVAL }, { "1iB", -EINVAL }, { "1B", -EINVAL }, { "1KiBx", -EINVAL },
                { "08", -EINVAL }, { "09K", -EINVAL }, { "1e3", -EINVAL }, { "1,5K", -EINVAL },
                { ".5K", -EINVAL }, { "1.5", -EINVAL }, { "1.0", -EINVAL }, { "1.", -EINVAL },
                { "1.5.5K", -EINVAL }, { "1.0x1K", -EINVAL }, { "1.5 K", -EINVAL },
                { "0x", -EINVAL },
                { "18446744073709551616", -ERANGE }, { "16E", -ERANGE }, { "17179869184G", -ERANGE },
                { "1Z", -ERANGE }, { "1Y", -ERANGE }, { "16383.99999999999999999E", -ERANGE },
                /* Not a whole number of bytes: util-linux rounds these its own
                 * way (1075, 2150, 819+1024); loopctl refuses them. */
                { "1.05K", -EDOM }, { "1.999K", -EDOM }, { "0.1K", -EDOM }, { "0x1.8K", -EDOM },
                { "1.0001K", -EDOM },
        };
        uint64_t v;

        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                v = 12345;
                if (parse_size(bad[i].s, &v) != bad[i].r)
                        g_error("parse_size(\"%s\") != %d", bad[i].s, bad[i].r);
                g_assert_cmpuint(v, ==, 12345);   /* untouched on failure */
        }
        g_assert_cmpint(parse_size(NULL, &v), ==, -EINVAL);
}

static void test_parse_size_fractions_are_exact(void) {
        uint64_t v;

        /* util-linux 2.38: 1310719; exactly 1.25 MiB is 1310720. */
        g_assert_cmpint(parse_size("1.25M", &v), ==, 0);
        g_assert_cmpuint(v, ==, 1310720);
        g_assert_cmpint(parse_size("0.25G", &v), ==, 0);   /* util-linux: 268435455 */
        g_assert_cmpuint(v, ==, 1ULL << 28);
        g_assert_cmpint(parse_size("1.010K", &v), ==, -EDOM);   /* util-linux: 1126 */
        g_assert_cmpint(parse_size("1.0009765625K", &v), ==, 0);
        g_assert_cmpuint(v, ==, 1025);
        g_assert_cmpint(parse_size("0.001KB", &v), ==, 0);
        g_assert_cmpuint(v, ==, 1);
        g_assert_cmpint(parse_size("15.9375E", &v), ==, 0);
        g_assert_cmpuint(v, ==, (15ULL << 60) + (15ULL << 56));
        g_assert_cmpint(parse_size("15.99999999999999999999E", &v), ==, -ERANGE);
}

/* util-linux's own reading, through fallocate(1) -v, which prints the
 * length it parsed: "(N bytes)". A punched hole in a sparse file changes
 * nothing. */
static void test_parse_size_against_util_linux(void) {
        g_autofree char *fallocate = g_find_program_in_path("fallocate");
        g_autofree char *dir = NULL, *file = NULL;
        g_autoptr(GError) error = NULL;

        if (!fallocate) {
                g_test_skip("no fallocate(1) (util-linux) to compare with");
                return;
        }
        dir = g_dir_make_tmp("loopctl-size-XXXXXX", &error);
        g_assert_no_error(error);
        file = g_build_filename(dir, "sparse", NULL);
        g_assert_true(g_file_set_contents(file, "", 0, &error));
        g_assert_cmpint(truncate(file, 1LL << 43), ==, 0);

        for (size_t i = 0; i < G_N_ELEMENTS(same_as_util_linux); i++) {
                g_autofree char *out = NULL, *err = NULL, *expected = NULL;
                const char *argv[] = { fallocate, "-v", "-p", "-o", "0", "-l", same_as_util_linux[i].s, file, NULL };
                int status;

                if (same_as_util_linux[i].v == 0 || same_as_util_linux[i].v > (1ULL << 43))
                        continue;   /* fallocate refuses 0; ext4 files end at 16 TiB */
                g_assert_true(g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_DEFAULT, NULL, NULL,
                                           &out, &err, &status, &error));
                g_assert_no_error(error);
                expected = g_strdup_printf("(%" G_GUINT64_FORMAT " bytes)", same_as_util_linux[i].v);
                if (!strstr(out, expected))
                        g_error("util-linux reads '%s' as: %s%s; loopctl: %" G_GUINT64_FORMAT,
                                same_as_util_linux[i].s, out, err, same_as_util_linux[i].v);
        }
        g_assert_cmpint(unlink(file), ==, 0);
        g_assert_cmpint(rmdir(dir), ==, 0);
}

/* ---- option_error --------------------------------------------------------- */

static const struct option test_options[] = {
        { "help",       no_argument,       NULL, 'h' },
        { "read-only",  no_argument,       NULL, 'r' },
        { "offset",     required_argument, NULL, 'o' },
        { "sizelimit",  required_argument, NULL, 0x100 },
        { "sector-size", required_argument, NULL, 'b' },
        { "show",       no_argument,       NULL, 0x101 },
        { "version",    no_argument,       NULL, 0x102 },
        { "direct-io",  optional_argument, NULL, 0x103 },
        { NULL, 0, NULL, 0 }
};

/* The message getopt_long() leads to for argv (NULL-terminated, argv[0] the
 * command), or NULL if it parsed. */
static char *error_for(const char *const *args) {
        int argc = (int) g_strv_length((char **) args);
        g_autofree char **argv = g_memdup2(args, sizeof(char *) * (size_t) (argc + 1));
        int c;

        optind = 0;
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":hro:b:", test_options, NULL)) >= 0)
                if (c == '?' || c == ':')
                        return option_error(c, optopt, optind, argc, argv, test_options);
        return NULL;
}

static void test_option_error_names_what_was_typed(void) {
        static const struct {
                const char *args[6];
                const char *message;
        } cases[] = {
                { { "create", "--frob", NULL }, "unknown option '--frob'" },
                { { "create", "--frob=1", NULL }, "unknown option '--frob'" },
                { { "create", "-x", NULL }, "unknown option '-x'" },
                { { "create", "-rx", NULL }, "unknown option '-x'" },
                { { "create", "-xr", NULL }, "unknown option '-x'" },
                { { "create", "--read-only", "-xr", NULL }, "unknown option '-x'" },
                { { "create", "--read-only=yes", NULL }, "option '--read-only' takes no value ('--read-only=yes')" },
                { { "create", "--read=yes", NULL }, "option '--read-only' takes no value ('--read=yes')" },
                { { "create", "--version=2", NULL }, "option '--version' takes no value ('--version=2')" },
                { { "create", "--show=1", NULL }, "option '--show' takes no value ('--show=1')" },
                { { "create", "--offset", NULL }, "option '--offset' needs a value" },
                { { "create", "--off", NULL }, "option '--off' needs a value" },
                { { "create", "-o", NULL }, "option '-o' needs a value" },
                { { "create", "-ro", NULL }, "option '-o' needs a value" },
                { { "create", "--s", NULL }, "ambiguous option '--s' (--sizelimit, --sector-size, --show)" },
                { { "create", "--s=1", NULL }, "ambiguous option '--s' (--sizelimit, --sector-size, --show)" },
                { { "create", "-\001", NULL }, "unknown option '-\001'" },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *m = error_for(cases[i].args);
                if (g_strcmp0(m, cases[i].message) != 0)
                        g_error("case %zu: '%s', expected '%s'", i, m, cases[i].message);
        }
        /* What parses gives no message. */
        {
                const char *ok[] = { "create", "--direct-io=on", "--sizelimit=1", "-ro", "4", "--show", NULL };
                g_autofree char *m = error_for(ok);
                g_assert_null(m);
        }
}

/* ---- Names ---------------------------------------------------------------- */

static void test_utf8_is_valid(void) {
        g_assert_true(utf8_is_valid(""));
        g_assert_true(utf8_is_valid("/plain/x.img"));
        g_assert_true(utf8_is_valid("ünï €日本語 \t\n\x1b"));   /* controls are valid UTF-8 */
        g_assert_true(utf8_is_valid("\xf0\x9f\x98\x80"));
        g_assert_false(utf8_is_valid("lat\xe9n"));
        g_assert_false(utf8_is_valid("\xc0\xaf"));           /* overlong '/' */
        g_assert_false(utf8_is_valid("\xed\xa0\x80"));       /* surrogate */
        g_assert_false(utf8_is_valid("\xf4\x90\x80\x80"));   /* past U+10FFFF */
        g_assert_false(utf8_is_valid("\xe6\x97"));           /* cut short */
}

static void test_name_escape(void) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "/img/a b.img", "/img/a b.img" },
                { "x\033[31my\nz\\w\177", "x\\x1b[31my\\x0az\\x5cw\\x7f" },
                { "lat\xe9n.img", "lat\\xe9n.img" },
                { "c1:\xc2\x9b" "31m ok:\xc2\xa0", "c1:\\xc2\\x9b31m ok:\xc2\xa0" },
                { "日本語.img", "日本語.img" },
                { "\xe6\x97", "\\xe6\\x97" },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autofree char *e = name_escape(cases[i].in);
                g_assert_cmpstr(e, ==, cases[i].out);
                g_assert_true(utf8_is_valid(e));
        }
        {
                g_autofree char *e = name_escape(NULL);
                g_assert_cmpstr(e, ==, "");
        }
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/loopctl-util/parse-size/same-as-util-linux", test_parse_size_same_as_util_linux);
        g_test_add_func("/loopctl-util/parse-size/refuses", test_parse_size_refuses);
        g_test_add_func("/loopctl-util/parse-size/fractions-are-exact", test_parse_size_fractions_are_exact);
        g_test_add_func("/loopctl-util/parse-size/against-util-linux", test_parse_size_against_util_linux);
        g_test_add_func("/loopctl-util/option-error-names-what-was-typed", test_option_error_names_what_was_typed);
        g_test_add_func("/loopctl-util/utf8-is-valid", test_utf8_is_valid);
        g_test_add_func("/loopctl-util/escape-name", test_name_escape);
        return g_test_run();
}
