/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "escape.h"

size_t utf8_char_len(const char *s, size_t left) {
        const unsigned char *p = (const unsigned char *) s;
        uint32_t c;
        size_t n;

        if (left == 0)
                return 0;
        if (p[0] < 0x80)
                return 1;
        if (p[0] >= 0xc2 && p[0] <= 0xdf)
                n = 2, c = p[0] & 0x1f;
        else if (p[0] >= 0xe0 && p[0] <= 0xef)
                n = 3, c = p[0] & 0x0f;
        else if (p[0] >= 0xf0 && p[0] <= 0xf4)
                n = 4, c = p[0] & 0x07;
        else
                return 0; /* continuation byte, overlong lead (c0, c1) or past U+10FFFF (f5..) */
        if (n > left)
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((p[i] & 0xc0) != 0x80)
                        return 0;
                c = (c << 6) | (p[i] & 0x3f);
        }
        if ((n == 3 && c < 0x800) || (n == 4 && c < 0x10000) || c > 0x10ffff)
                return 0; /* overlong, or too large */
        if ((c >= 0xd800 && c <= 0xdfff) || (c >= 0xfdd0 && c <= 0xfdef) || (c & 0xfffe) == 0xfffe)
                return 0; /* surrogates and non-characters: sd-bus refuses them */
        return n;
}

bool utf8_is_valid(const char *s) {
        size_t left = strlen(s);

        while (left > 0) {
                size_t k = utf8_char_len(s, left);
                if (k == 0)
                        return false;
                s += k;
                left -= k;
        }
        return true;
}

size_t escape_char_len(const char *s, size_t left) {
        const unsigned char *p = (const unsigned char *) s;
        size_t n = utf8_char_len(s, left);

        if (n == 1 && (p[0] < 0x20 || p[0] == 0x7f || p[0] == '\\'))
                return 0; /* C0 controls, DEL, the escape itself */
        if (n == 2 && p[0] == 0xc2 && p[1] <= 0x9f)
                return 0; /* C1 controls */
        return n;
}

bool name_is_plain(const char *s) {
        size_t left = strlen(s);

        while (left > 0) {
                size_t k = escape_char_len(s, left);
                if (k == 0)
                        return false;
                s += k;
                left -= k;
        }
        return true;
}

char *name_escape(const char *s) {
        static const char hex[] = "0123456789abcdef";
        size_t left, o = 0;
        char *out;

        if (!s)
                return strdup("");
        left = strlen(s);
        /* At worst every byte becomes four. */
        out = malloc(left * 4 + 1);
        if (!out)
                return NULL;
        while (left > 0) {
                size_t k = escape_char_len(s, left);
                if (k == 0) {
                        unsigned char b = (unsigned char) *s;
                        out[o++] = '\\';
                        out[o++] = 'x';
                        out[o++] = hex[b >> 4];
                        out[o++] = hex[b & 15];
                        k = 1;
                } else {
                        memcpy(out + o, s, k);
                        o += k;
                }
                s += k;
                left -= k;
        }
        out[o] = 0;
        return out;
}
