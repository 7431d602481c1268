/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The parts of loopctl that are pure functions of their input: size
 * arguments, JSON strings, terminal-safe text. Kept apart so that a unit test
 * can check them without a bus.
 */

#include <stdint.h>
#include <stdio.h>

/*
 * "4096", "4K", "4KiB" (×1024), "4KB" (×1000), likewise M G T P E; suffixes
 * in either case, as losetup(8) reads them. No sign, no spaces, no fractions.
 * -EINVAL for anything else, -ERANGE when the value does not fit in 64 bits.
 */
int parse_size(const char *s, uint64_t *ret);

/* Writes s as a JSON string with its quotes. D-Bus strings are valid UTF-8,
 * so only '"', '\\' and control characters need escaping; they are. */
void json_write_string(FILE *f, const char *s);

/* A copy of s with C0 controls and DEL shown as \xNN, C1 controls as
 * \uNNNN and '\' doubled, so that a backing file name cannot move the cursor
 * or rewrite the terminal, and the escaping stays unambiguous. NULL on OOM. */
char *escape_for_terminal(const char *s);

/* Columns s takes on a terminal, counting a UTF-8 sequence as one. */
size_t text_width(const char *s);
