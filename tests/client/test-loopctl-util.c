/* SPDX-License-Identifier: LGPL-2.1-or-later */

/* loopctl's pure helpers: size suffixes as losetup reads them, JSON strings
 * that a parser accepts, text that cannot drive a terminal. */

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <glib.h>

#include "loopctl-util.h"

static void test_parse_size_suffixes(void) {
        static const struct {
                const char *s;
                uint64_t v;
        } ok[] = {
                { "0", 0 },
                { "4096", 4096 },
                { "1K", 1024 }, { "1k", 1024 }, { "1KiB", 1024 }, { "1kib", 1024 },
                { "1KB", 1000 }, { "1kb", 1000 },
                { "2M", 2ULL << 20 }, { "2MiB", 2ULL << 20 }, { "2MB", 2000000 },
                { "3G", 3ULL << 30 }, { "3GB", 3000000000ULL },
                { "1T", 1ULL << 40 }, { "1TiB", 1ULL << 40 }, { "1TB", 1000000000000ULL },
                { "1P", 1ULL << 50 }, { "1E", 1ULL << 60 }, { "15E", 15ULL << 60 },
                { "18446744073709551615", UINT64_MAX },
        };
        static const struct {
                const char *s;
                int r;
        } bad[] = {
                { "", -EINVAL }, { "K", -EINVAL }, { "-1", -EINVAL }, { "+1", -EINVAL },
                { " 1", -EINVAL }, { "1 ", -EINVAL }, { "1X", -EINVAL }, { "1KK", -EINVAL },
                { "1Ki", -EINVAL }, { "1.5M", -EINVAL }, { "0x10", -EINVAL }, { "1Z", -EINVAL },
                { "18446744073709551616", -ERANGE }, { "16E", -ERANGE },
                { "17179869184G", -ERANGE },
        };
        uint64_t v;

        for (size_t i = 0; i < G_N_ELEMENTS(ok); i++) {
                v = 12345;
                g_assert_cmpint(parse_size(ok[i].s, &v), ==, 0);
                g_assert_cmpuint(v, ==, ok[i].v);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
                v = 12345;
                if (parse_size(bad[i].s, &v) != bad[i].r)
                        g_error("parse_size(\"%s\") != %d", bad[i].s, bad[i].r);
                g_assert_cmpuint(v, ==, 12345);   /* untouched on failure */
        }
        g_assert_cmpint(parse_size(NULL, &v), ==, -EINVAL);
}

static char *json_of(const char *s) {
        char *buf = NULL;
        size_t n = 0;
        FILE *f = open_memstream(&buf, &n);

        json_write_string(f, s);
        fclose(f);
        return buf;
}

static void test_json_string_escaping(void) {
        g_autofree char *a = json_of("plain /path/x.img");
        g_autofree char *b = json_of("q\"b\\s/");
        g_autofree char *c = json_of("\n\t\r\b\f\001\037\177");
        g_autofree char *d = json_of("ünï €");
        g_autofree char *e = json_of(NULL);

        g_assert_cmpstr(a, ==, "\"plain /path/x.img\"");
        g_assert_cmpstr(b, ==, "\"q\\\"b\\\\s/\"");
        g_assert_cmpstr(c, ==, "\"\\n\\t\\r\\b\\f\\u0001\\u001f\\u007f\"");
        g_assert_cmpstr(d, ==, "\"ünï €\"");   /* UTF-8 passes through */
        g_assert_cmpstr(e, ==, "\"\"");
}

static void test_escape_for_terminal(void) {
        g_autofree char *a = escape_for_terminal("/img/a b.img");
        g_autofree char *b = escape_for_terminal("x\033[31my\nz\\w\177");
        g_autofree char *c = escape_for_terminal("c1:\xc2\x9b" "31m ok:\xc2\xa0");

        g_assert_cmpstr(a, ==, "/img/a b.img");
        g_assert_cmpstr(b, ==, "x\\x1b[31my\\x0az\\\\w\\x7f");
        /* U+009B (CSI) escaped, U+00A0 kept. */
        g_assert_cmpstr(c, ==, "c1:\\u009b31m ok:\xc2\xa0");
        g_assert_cmpuint(text_width("ünï"), ==, 3);
        g_assert_cmpuint(text_width(""), ==, 0);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/loopctl-util/parse-size-suffixes", test_parse_size_suffixes);
        g_test_add_func("/loopctl-util/json-string-escaping", test_json_string_escaping);
        g_test_add_func("/loopctl-util/escape-for-terminal", test_escape_for_terminal);
        return g_test_run();
}
