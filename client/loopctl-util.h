/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The parts of loopctl that are pure functions of their input: size
 * arguments, getopt's failures put into words, and file names made safe for
 * text that must be UTF-8. Kept apart so that a unit test can check them
 * without a bus. Tables and JSON are libsmartcols' business (loopctl.c).
 */

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

/*
 * Reads a size the way util-linux's tools (losetup -o, --sizelimit, -b)
 * read one, the grammar of its strtosize():
 *
 *   [spaces][+]INTEGER[.FRACTION][SUFFIX]
 *
 * INTEGER as strtoumax() with base 0: "0x10" is 16, "010" is 8 (octal; "08"
 * is an error), else decimal. SUFFIX: K M G T P E Z Y (or lower case), alone
 * or with "iB"/"ib" for powers of 1024, with "B"/"b" for powers of 1000.
 * FRACTION is decimal and needs a SUFFIX ("1.5M"; "1.5" and "1.0" are errors,
 * "1.K" is 1024). '.' is the decimal point whatever the locale.
 *
 * One deliberate difference: util-linux 2.38 adds a fraction digit by digit
 * with integer divisions and can be off ("1.25M" gives 1310719 there, "1.999K"
 * 2150). Here a fraction is exact, and one that does not come to a whole
 * number of bytes ("1.05K") is refused rather than rounded.
 *
 * Returns 0, -EINVAL (not a size), -ERANGE (more than 64 bits) or -EDOM (a
 * fraction of a byte). *ret is untouched on failure.
 */
int parse_size(const char *s, uint64_t *ret);

/*
 * getopt_long() (with a leading ':' in optstring and opterr = 0) returned
 * `c` ('?' or ':'): the reason in words, naming the option as the user typed
 * it: "unknown option '--frob'", "unknown option '-x'", "option '--offset'
 * needs a value", "option '--read-only' takes no value ('--read-only=yes')",
 * "ambiguous option '--s' (--sizelimit, --show, ...)". Call it right after
 * getopt_long(), with the optind and optopt it left. Returns a malloc'ed
 * string, NULL on ENOMEM.
 */
char *option_error(int c, int optopt_, int optind_, int argc, char *const *argv,
                   const struct option *options);

/* Names: utf8_is_valid() and name_escape() (BackingFile's escaping) come
 * from common/escape.h, the daemon's own. */
#include "escape.h"
