/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "loopctl-util.h"

int parse_size(const char *s, uint64_t *ret) {
        static const char prefixes[] = "KMGTPE";
        unsigned long long v;
        uint64_t factor = 1;
        const char *p;
        char *end;

        if (!s || !isdigit((unsigned char) s[0]))
                return -EINVAL;   /* also refuses "-1", " 1" and "" that strtoull would take */

        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (errno != 0 || end == s)
                return -EINVAL;

        if (*end != '\0') {
                p = strchr(prefixes, toupper((unsigned char) *end));
                if (!p || *p == '\0')
                        return -EINVAL;
                unsigned power = (unsigned) (p - prefixes) + 1;
                uint64_t base;

                end++;
                if (*end == '\0' || strcasecmp(end, "iB") == 0)
                        base = 1024;
                else if (strcasecmp(end, "B") == 0)
                        base = 1000;
                else
                        return -EINVAL;

                for (unsigned i = 0; i < power; i++) {
                        if (factor > UINT64_MAX / base)
                                return -ERANGE;
                        factor *= base;
                }
        }

        if (v > UINT64_MAX / factor)
                return -ERANGE;
        *ret = (uint64_t) v * factor;
        return 0;
}

void json_write_string(FILE *f, const char *s) {
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) s; p && *p; p++)
                switch (*p) {
                case '"':  fputs("\\\"", f); break;
                case '\\': fputs("\\\\", f); break;
                case '\b': fputs("\\b", f); break;
                case '\f': fputs("\\f", f); break;
                case '\n': fputs("\\n", f); break;
                case '\r': fputs("\\r", f); break;
                case '\t': fputs("\\t", f); break;
                default:
                        if (*p < 0x20 || *p == 0x7f)
                                fprintf(f, "\\u%04x", *p);
                        else
                                fputc(*p, f);
                }
        fputc('"', f);
}

char *escape_for_terminal(const char *s) {
        size_t n = strlen(s);
        char *r, *q;

        /* Worst case every byte becomes \xNN. */
        if (n > (SIZE_MAX - 1) / 4)
                return NULL;
        r = q = malloc(n * 4 + 1);
        if (!r)
                return NULL;
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                if (*p < 0x20 || *p == 0x7f || *p == '\\') {
                        if (*p == '\\') {
                                *q++ = '\\';
                                *q++ = '\\';
                        } else
                                q += sprintf(q, "\\x%02x", *p);
                } else if (p[0] == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) {
                        /* U+0080..U+009F: C1 controls, e.g. U+009B is CSI to
                         * some terminals. */
                        q += sprintf(q, "\\u%04x", p[1]);
                        p++;
                } else
                        *q++ = (char) *p;
        }
        *q = '\0';
        return r;
}

size_t text_width(const char *s) {
        size_t w = 0;

        for (const unsigned char *p = (const unsigned char *) s; *p; p++)
                if ((*p & 0xc0) != 0x80)
                        w++;
        return w;
}
