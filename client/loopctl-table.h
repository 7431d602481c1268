/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * loopctl's output of devices: losetup's --list columns (same names, same
 * JSON keys and types) and loopd's own, written by libsmartcols, the
 * library losetup itself writes them with. libsmartcols sizes columns by
 * display cells (CJK takes two) and escapes what is not printable in the
 * table; JSON is given only valid UTF-8 (see column_cell()).
 *
 * Also losetup's old one-line format ("/dev/loop0: [2049]:12 (/f.img)"),
 * which `losetup -a`, `losetup -j FILE` and `losetup DEV` print and scripts
 * parse.
 */

#include <stdbool.h>
#include <stddef.h>

#include "loopd.h"

typedef enum ColumnId {
        /* losetup's, in the order losetup --output-all prints them. */
        COL_NAME,
        COL_AUTOCLEAR,
        COL_BACK_FILE,
        COL_BACK_INO,
        COL_BACK_MAJMIN,
        COL_MAJMIN,
        COL_OFFSET,
        COL_PARTSCAN,
        COL_RO,
        COL_SIZELIMIT,
        COL_DIO,
        COL_LOG_SEC,
        /* loopd's own. */
        COL_SIZE,
        COL_OWNER,
        COL_UID,
        COL_BOUND,
        COL_DETACHING,
        COL_DISKSEQ,
        COL_OBJECT,
        _COL_MAX,
} ColumnId;

/* -O may name a column more than once, as losetup allows. */
#define OUTPUT_COLUMNS_MAX 64

typedef struct OutputOptions {
        ColumnId columns[OUTPUT_COLUMNS_MAX];
        size_t n_columns;     /* 0: the default columns */
        bool json;            /* -J: {"loopdevices": [...]} */
        bool raw;             /* --raw */
        bool noheadings;      /* -n */
} OutputOptions;

/* losetup's default --list columns, then OWNER. */
void output_set_default_columns(OutputOptions *o);
/* Every column, losetup's first (--output-all). */
void output_set_all_columns(OutputOptions *o);
/*
 * -O LIST: comma-separated names, case-insensitive; "+LIST" adds to the
 * columns so far (the default ones if none were chosen), as losetup does.
 * -EINVAL with *ret_bad (malloc'ed) naming the unknown column, -E2BIG for
 * too many.
 */
int output_parse_columns(OutputOptions *o, const char *list, char **ret_bad);

/* "  NAME  loop device name" lines for --help. */
void output_print_column_help(FILE *f);

/* The devices as a table or JSON on stdout; nothing for no devices unless
 * JSON. Returns 0 or a negative errno. */
int output_print_devices(const OutputOptions *o, const LoopdDeviceInfo *const *devices, size_t n);

/* One device, every column: "label: value" lines, or with json the same
 * JSON as output_print_devices() with all columns. */
int output_print_info(const LoopdDeviceInfo *info, bool json);

/* losetup's one-line format of a device. */
void output_print_old_format(const LoopdDeviceInfo *info);

/* The backing file's name as the kernel has it (BackingFileBytes), or from
 * a daemon that predates it, BackingFile without its " (deleted)". */
const char *device_backing_name(const LoopdDeviceInfo *info);
