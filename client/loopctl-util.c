/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loopctl-util.h"

/* ---- Sizes --------------------------------------------------------------- */

__extension__ typedef unsigned __int128 uint128_t;

/* base^power, or 0 when it does not fit in 64 bits. */
static uint64_t power_of(uint64_t base, unsigned power) {
        uint64_t v = 1;

        for (unsigned i = 0; i < power; i++) {
                if (v > UINT64_MAX / base)
                        return 0;
                v *= base;
        }
        return v;
}

int parse_size(const char *s, uint64_t *ret) {
        static const char upper[] = "KMGTPEZY", lower[] = "kmgtpezy";
        const char *p, *letter, *frac = NULL;
        size_t frac_len = 0;
        uintmax_t x;
        uint64_t base = 1024, scale, frac_value = 0, frac_div = 1;
        unsigned power;
        char *end;

        if (!s || !*s)
                return -EINVAL;

        /* strtoumax() would take "-1" as UINTMAX_MAX: refuse a sign first, as
         * util-linux does (after the spaces strtoumax() skips). */
        for (p = s; isspace((unsigned char) *p); p++)
                ;
        if (*p == '-')
                return -EINVAL;

        /* Base 0 on purpose: util-linux reads "0x10" as 16 and "010" as 8,
         * and a script written for losetup must mean the same here. */
        errno = 0;
        x = strtoumax(s, &end, 0);
        if (end == s)
                return -EINVAL;
        if (errno == ERANGE)
                return -ERANGE;
        if (errno != 0)
                return -EINVAL;
        p = end;
        if (*p == '\0') {
                *ret = (uint64_t) x;
                return 0;
        }

        /* .FRACTION: decimal digits, only before a suffix. */
        if (*p == '.') {
                p++;
                frac = p;
                while (isdigit((unsigned char) *p))
                        p++;
                frac_len = (size_t) (p - frac);
                if (*p == '\0')
                        return -EINVAL;   /* "1.5", "1.0", "1.": no suffix */
        }

        /* SUFFIX: one letter, then nothing, "iB"/"ib" or "B"/"b". */
        letter = strchr(upper, *p);
        if (letter && *letter)
                power = (unsigned) (letter - upper) + 1;
        else if ((letter = strchr(lower, *p)) && *letter)
                power = (unsigned) (letter - lower) + 1;
        else
                return -EINVAL;
        p++;
        if (p[0] == 'i' && (p[1] == 'B' || p[1] == 'b') && p[2] == '\0')
                base = 1024;
        else if ((p[0] == 'B' || p[0] == 'b') && p[1] == '\0')
                base = 1000;
        else if (p[0] != '\0')
                return -EINVAL;

        /* Trailing zeros of the fraction change nothing. */
        while (frac_len > 0 && frac[frac_len - 1] == '0')
                frac_len--;
        if (frac_len > 19)
                return -ERANGE;   /* as util-linux, whose strtoumax() of the digits overflows */
        for (size_t i = 0; i < frac_len; i++) {
                frac_value = frac_value * 10 + (uint64_t) (frac[i] - '0');
                frac_div *= 10;
        }

        scale = power_of(base, power);
        if (scale == 0)   /* Z, Y: only zero fits */
                return x == 0 && frac_value == 0 ? (*ret = 0, 0) : -ERANGE;
        if (x > UINT64_MAX / scale)
                return -ERANGE;

        {
                /* Exact: frac_value/frac_div * scale, which must be whole.
                 * Both factors are below 2^64, so the product fits. */
                uint128_t part = (uint128_t) frac_value * scale;
                uint64_t whole = (uint64_t) x * scale;

                if (part % frac_div != 0)
                        return -EDOM;
                part /= frac_div;
                if (part > UINT64_MAX - whole)
                        return -ERANGE;
                *ret = whole + (uint64_t) part;
        }
        return 0;
}

/* ---- getopt's failures in words ------------------------------------------ */

static char *strdup_printf(const char *format, ...) __attribute__((format(printf, 1, 2)));
static char *strdup_printf(const char *format, ...) {
        va_list ap;
        char *m = NULL;

        va_start(ap, format);
        if (vasprintf(&m, format, ap) < 0)
                m = NULL;
        va_end(ap);
        return m;
}

/* The long options a typed "--name[=value]" may mean, as getopt_long()
 * resolves it: an exact name, else every option it is a prefix of. */
static size_t long_matches(const struct option *options, const char *token,
                           const struct option **ret_first) {
        const char *name = token + 2;
        size_t len = strcspn(name, "="), n = 0;

        *ret_first = NULL;
        for (const struct option *o = options; o->name; o++)
                if (strlen(o->name) == len && strncmp(o->name, name, len) == 0) {
                        *ret_first = o;
                        return 1;
                }
        for (const struct option *o = options; o->name; o++)
                if (strncmp(o->name, name, len) == 0) {
                        if (n++ == 0)
                                *ret_first = o;
                }
        return n;
}

static char *ambiguous(const struct option *options, const char *token) {
        size_t len = strcspn(token + 2, "="), size = 0, n = 0;
        char *list = NULL, *m;
        FILE *f = open_memstream(&list, &size);

        if (!f)
                return NULL;
        for (const struct option *o = options; o->name; o++)
                if (strncmp(o->name, token + 2, len) == 0)
                        fprintf(f, "%s--%s", n++ > 0 ? ", " : "", o->name);
        if (fclose(f) != 0) {
                free(list);
                return NULL;
        }
        m = strdup_printf("ambiguous option '%.*s' (%s)", (int) (len + 2), token, list);
        free(list);
        return m;
}

char *option_error(int c, int optopt_, int optind_, int argc, char *const *argv,
                   const struct option *options) {
        const char *token = optind_ > 0 && optind_ <= argc ? argv[optind_ - 1] : NULL;
        bool long_token = token && strncmp(token, "--", 2) == 0 && token[2] != '\0';
        const struct option *o;

        if (c == ':') {
                /* A short option needing a value ends its cluster, so the
                 * token is the cluster; name the letter itself. */
                if (long_token)
                        return strdup_printf("option '%s' needs a value", token);
                return strdup_printf("option '-%c' needs a value", optopt_);
        }

        if (long_token) {
                size_t n = long_matches(options, token, &o);

                if (n > 1)
                        return ambiguous(options, token);
                /* "--read-only=yes": getopt reports the option's val in
                 * optopt, which for a long option with a short twin is the
                 * letter the user never typed. */
                if (n == 1 && optopt_ != 0 && o->val == optopt_ && o->has_arg == no_argument &&
                    strchr(token, '='))
                        return strdup_printf("option '--%s' takes no value ('%s')", o->name, token);
                if (optopt_ == 0)
                        return strdup_printf("unknown option '%.*s'",
                                             (int) strcspn(token, "="), token);
        }
        if (optopt_ > 0 && optopt_ < 0x80 && isgraph(optopt_))
                return strdup_printf("unknown option '-%c'", optopt_);
        return strdup_printf("unknown option '%s'", token ? token : "?");
}

