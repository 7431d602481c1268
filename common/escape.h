/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * File names are bytes; D-Bus strings, polkit details and the journal's
 * text are UTF-8. This turns any name into text that is valid UTF-8 by
 * sd-bus's own rules (no overlong forms, surrogates, code points past
 * U+10FFFF or non-characters) and unambiguous: every byte that is not part
 * of such a character, every control character (C0, DEL, C1) and the
 * backslash itself become "\xNN". Pure; fuzzed (tests/fuzz/fuzz-escape.c).
 * Shared by the daemon (BackingFile, polkit details, the journal) and
 * loopctl (names in JSON), so both write a name the same way.
 */

#include <stdbool.h>
#include <stddef.h>

/* Length of the valid UTF-8 character at s (1..4) by sd-bus's rules, 0 if
 * there is none there. */
size_t utf8_char_len(const char *s, size_t left);

/* True when all of s is valid UTF-8 by those rules: text a D-Bus string
 * and JSON hold as it is (control characters included). */
bool utf8_is_valid(const char *s);

/* Length of the valid, printable character at s (1..4), 0 if the byte at s
 * must be escaped. */
size_t escape_char_len(const char *s, size_t left);

/* True when s is returned unchanged by name_escape(). */
bool name_is_plain(const char *s);

/* The escaped form of s (malloc'ed), NULL on ENOMEM. NULL s gives "". */
char *name_escape(const char *s);
