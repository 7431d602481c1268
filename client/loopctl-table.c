/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/sysmacros.h>

#include <libsmartcols.h>

#include "loopctl-table.h"
#include "loopctl-util.h"
#include "util.h"

DEFINE_POINTER_CLEANUP(struct libscols_table, scols_unref_table)

typedef struct ColumnInfo {
        const char *name;     /* header; libsmartcols makes the JSON key of it, lower case */
        double whint;         /* width hint, as losetup's */
        int flags;            /* SCOLS_FL_* */
        int json_type;        /* SCOLS_JSON_* */
        const char *label;    /* for `info` */
        const char *help;
} ColumnInfo;

/* losetup 2.38's columns (sys-utils/losetup.c): names, widths, alignment and
 * JSON types, so that -O, -J and the table read the same. */
static const ColumnInfo columns[_COL_MAX] = {
        [COL_NAME]        = { "NAME",         0.25, 0,               SCOLS_JSON_STRING,  "Name",            "loop device name" },
        [COL_AUTOCLEAR]   = { "AUTOCLEAR",    1,    SCOLS_FL_RIGHT,  SCOLS_JSON_BOOLEAN, "Autoclear",       "autoclear flag set" },
        [COL_BACK_FILE]   = { "BACK-FILE",    0.3,  SCOLS_FL_NOEXTREMES, SCOLS_JSON_STRING, "Backing file", "device backing file" },
        [COL_BACK_INO]    = { "BACK-INO",     4,    SCOLS_FL_RIGHT | SCOLS_FL_NOEXTREMES, SCOLS_JSON_NUMBER, "Backing inode", "backing file inode number" },
        [COL_BACK_MAJMIN] = { "BACK-MAJ:MIN", 6,    0,               SCOLS_JSON_STRING,  "Backing device",  "backing file major:minor device number" },
        [COL_MAJMIN]      = { "MAJ:MIN",      3,    0,               SCOLS_JSON_STRING,  "Device number",   "loop device major:minor number" },
        [COL_OFFSET]      = { "OFFSET",       5,    SCOLS_FL_RIGHT,  SCOLS_JSON_NUMBER,  "Offset",          "offset from the beginning" },
        [COL_PARTSCAN]    = { "PARTSCAN",     1,    SCOLS_FL_RIGHT,  SCOLS_JSON_BOOLEAN, "Partscan",        "partscan flag set" },
        [COL_RO]          = { "RO",           1,    SCOLS_FL_RIGHT,  SCOLS_JSON_BOOLEAN, "Read-only",       "read-only device" },
        [COL_SIZELIMIT]   = { "SIZELIMIT",    5,    SCOLS_FL_RIGHT,  SCOLS_JSON_NUMBER,  "Size limit",      "size limit of the file in bytes" },
        [COL_DIO]         = { "DIO",          1,    SCOLS_FL_RIGHT,  SCOLS_JSON_BOOLEAN, "Direct I/O",      "access backing file with direct-io" },
        [COL_LOG_SEC]     = { "LOG-SEC",      4,    SCOLS_FL_RIGHT,  SCOLS_JSON_NUMBER,  "Sector size",     "logical sector size in bytes" },
        [COL_SIZE]        = { "SIZE",         5,    SCOLS_FL_RIGHT,  SCOLS_JSON_NUMBER,  "Size",            "size of the device in bytes (loopd)" },
        [COL_OWNER]       = { "OWNER",        0.1,  0,               SCOLS_JSON_STRING,  "Owner",           "user who created it through loopd (loopd)" },
        [COL_UID]         = { "UID",          5,    SCOLS_FL_RIGHT,  SCOLS_JSON_NUMBER,  "Owner UID",       "that user's ID (loopd)" },
        [COL_BOUND]       = { "BOUND",        1,    SCOLS_FL_RIGHT,  SCOLS_JSON_BOOLEAN, "Bound to caller", "removed when its creator disconnects (loopd)" },
        [COL_DETACHING]   = { "DETACHING",    1,    SCOLS_FL_RIGHT,  SCOLS_JSON_BOOLEAN, "Detach pending",  "removed, the kernel waits for the last close (loopd)" },
        [COL_DISKSEQ]     = { "DISKSEQ",      5,    SCOLS_FL_RIGHT,  SCOLS_JSON_NUMBER,  "DiskSeq",         "the kernel's sequence number of this attachment (loopd)" },
        [COL_OBJECT]      = { "OBJECT",       0.2,  0,               SCOLS_JSON_STRING,  "Object",          "loopd's D-Bus object of the attachment (loopd)" },
};

static const ColumnId default_columns[] = {
        COL_NAME, COL_SIZELIMIT, COL_OFFSET, COL_AUTOCLEAR, COL_RO, COL_BACK_FILE, COL_DIO, COL_LOG_SEC,
        COL_OWNER,
};

void output_set_default_columns(OutputOptions *o) {
        o->n_columns = ELEMENTSOF(default_columns);
        memcpy(o->columns, default_columns, sizeof(default_columns));
}

void output_set_all_columns(OutputOptions *o) {
        for (size_t i = 0; i < _COL_MAX; i++)
                o->columns[i] = (ColumnId) i;
        o->n_columns = _COL_MAX;
}

int output_parse_columns(OutputOptions *o, const char *list, char **ret_bad) {
        const char *p = list;

        *ret_bad = NULL;
        if (*p == '+') {
                if (o->n_columns == 0)
                        output_set_default_columns(o);
                p++;
        } else
                o->n_columns = 0;

        for (;;) {
                size_t len = strcspn(p, ",");
                size_t i;

                for (i = 0; i < _COL_MAX; i++)
                        if (strlen(columns[i].name) == len && strncasecmp(p, columns[i].name, len) == 0)
                                break;
                if (i == _COL_MAX) {
                        *ret_bad = strndup(p, len);
                        return -EINVAL;
                }
                if (o->n_columns >= OUTPUT_COLUMNS_MAX)
                        return -E2BIG;
                o->columns[o->n_columns++] = (ColumnId) i;
                if (p[len] == '\0')
                        return 0;
                p += len + 1;
        }
}

void output_print_column_help(FILE *f) {
        for (size_t i = 0; i < _COL_MAX; i++)
                fprintf(f, " %12s  %s\n", columns[i].name, columns[i].help);
}

const char *device_backing_name(const LoopdDeviceInfo *info) {
        if (info->backing_file_bytes)
                return info->backing_file_bytes;
        return info->backing_file ? info->backing_file : "";
}

static const char *owner_name(uint32_t uid) {
        struct passwd *pw;

        if (uid == LOOPD_UID_INVALID)
                return NULL;
        /* Not thread-safe; loopctl has one thread. */
        pw = getpwuid((uid_t) uid);
        return pw ? pw->pw_name : NULL;
}

/* Booleans as losetup writes them: "1"/"0" in tables, which libsmartcols
 * turns into true/false for JSON; `info` says yes/no. */
static char *bool_cell(bool b, bool words) {
        return strdup(words ? (b ? "yes" : "no") : (b ? "1" : "0"));
}

/*
 * The text of one cell, malloc'ed; "" for no value, which libsmartcols
 * writes as null in JSON. For JSON every string must be valid UTF-8: a
 * backing file name that is not is written as the BackingFile property
 * writes it (\xNN), since JSON cannot carry the bytes; every other name
 * comes through exactly, JSON's own escapes taking care of quotes,
 * backslashes and control characters. Tables get the bytes: libsmartcols
 * escapes what the terminal cannot show.
 */
static char *column_cell(ColumnId id, const LoopdDeviceInfo *i, bool json, bool words) {
        char *s = NULL;
        int r = 0;

        switch (id) {
        case COL_NAME:
                return strdup(i->device_path ? i->device_path : "");
        case COL_AUTOCLEAR:
                return bool_cell(i->autoclear, words);
        case COL_BACK_FILE: {
                const char *name = device_backing_name(i);
                _cleanup_(freep) char *escaped = NULL;

                if (json && !utf8_is_valid(name)) {
                        escaped = name_escape(name);
                        if (!escaped)
                                return NULL;
                        name = escaped;
                }
                /* As the kernel's sysfs and losetup show an unlinked file. */
                r = asprintf(&s, "%s%s", name, i->backing_file_deleted ? " (deleted)" : "");
                break;
        }
        case COL_BACK_INO:
                if (i->backing_inode == 0)
                        return strdup("");   /* not known yet (see the contract) */
                r = asprintf(&s, "%llu", (unsigned long long) i->backing_inode);
                break;
        case COL_BACK_MAJMIN:
                if (i->backing_device == 0)
                        return strdup("");
                r = asprintf(&s, "%u:%u", major((dev_t) i->backing_device), minor((dev_t) i->backing_device));
                break;
        case COL_MAJMIN:
                r = asprintf(&s, "%u:%u", major((dev_t) i->device_number), minor((dev_t) i->device_number));
                break;
        case COL_OFFSET:
                r = asprintf(&s, "%llu", (unsigned long long) i->offset);
                break;
        case COL_PARTSCAN:
                return bool_cell(i->partscan, words);
        case COL_RO:
                return bool_cell(i->read_only, words);
        case COL_SIZELIMIT:
                r = asprintf(&s, "%llu", (unsigned long long) i->size_limit);
                break;
        case COL_DIO:
                return bool_cell(i->direct_io, words);
        case COL_LOG_SEC:
                r = asprintf(&s, "%u", (unsigned) i->block_size);
                break;
        case COL_SIZE:
                r = asprintf(&s, "%llu", (unsigned long long) i->size);
                break;
        case COL_OWNER: {
                const char *name = owner_name(i->owner_uid);

                if (i->owner_uid == LOOPD_UID_INVALID)
                        return strdup(json ? "" : "-");   /* not made through loopd */
                if (name && (!json || utf8_is_valid(name)))
                        return strdup(name);
                r = asprintf(&s, "%u", (unsigned) i->owner_uid);
                break;
        }
        case COL_UID:
                if (i->owner_uid == LOOPD_UID_INVALID)
                        return strdup(json ? "" : "-");
                r = asprintf(&s, "%u", (unsigned) i->owner_uid);
                break;
        case COL_BOUND:
                return bool_cell(i->bound_to_caller, words);
        case COL_DETACHING:
                return bool_cell(i->detach_pending, words);
        case COL_DISKSEQ:
                r = asprintf(&s, "%llu", (unsigned long long) i->diskseq);
                break;
        case COL_OBJECT:
                return strdup(i->object_path ? i->object_path : "");
        default:
                return NULL;
        }
        return r < 0 ? NULL : s;
}

static int table_new(const OutputOptions *o, struct libscols_table **ret) {
        _cleanup_(scols_unref_tablep) struct libscols_table *tb = NULL;

        tb = scols_new_table();
        if (!tb)
                return -ENOMEM;
        if (scols_table_set_name(tb, "loopdevices") < 0 ||
            scols_table_enable_json(tb, o->json) < 0 ||
            scols_table_enable_raw(tb, o->raw && !o->json) < 0 ||
            scols_table_enable_noheadings(tb, o->noheadings) < 0)
                return -ENOMEM;

        for (size_t k = 0; k < o->n_columns; k++) {
                const ColumnInfo *ci = &columns[o->columns[k]];
                struct libscols_column *cl = scols_table_new_column(tb, ci->name, ci->whint, ci->flags);

                if (!cl || scols_column_set_json_type(cl, ci->json_type) < 0)
                        return -ENOMEM;
        }
        *ret = TAKE_PTR(tb);
        return 0;
}

static int table_add_device(struct libscols_table *tb, const OutputOptions *o, const LoopdDeviceInfo *info) {
        struct libscols_line *ln = scols_table_new_line(tb, NULL);

        if (!ln)
                return -ENOMEM;
        for (size_t k = 0; k < o->n_columns; k++) {
                char *cell = column_cell(o->columns[k], info, o->json, false);

                /* refer: the line takes the string over. */
                if (!cell || scols_line_refer_data(ln, k, cell) < 0) {
                        free(cell);
                        return -ENOMEM;
                }
        }
        return 0;
}

int output_print_devices(const OutputOptions *o_in, const LoopdDeviceInfo *const *devices, size_t n) {
        _cleanup_(scols_unref_tablep) struct libscols_table *tb = NULL;
        OutputOptions o = *o_in;
        int r;

        if (o.n_columns == 0)
                output_set_default_columns(&o);
        /* losetup --list prints nothing at all for no devices; its JSON is
         * an empty array. */
        if (n == 0 && !o.json)
                return 0;

        r = table_new(&o, &tb);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                r = table_add_device(tb, &o, devices[i]);
                if (r < 0)
                        return r;
        }
        return scols_print_table(tb) < 0 ? -EIO : 0;
}

int output_print_info(const LoopdDeviceInfo *info, bool json) {
        _cleanup_(scols_unref_tablep) struct libscols_table *tb = NULL;
        struct libscols_column *label, *value;
        OutputOptions all = { .json = json };

        output_set_all_columns(&all);
        if (json)
                return output_print_devices(&all, &info, 1);

        /* Two columns, no header: "   Backing file: /img/x.img". */
        tb = scols_new_table();
        if (!tb || scols_table_enable_noheadings(tb, 1) < 0)
                return -ENOMEM;
        label = scols_table_new_column(tb, "FIELD", 0, SCOLS_FL_RIGHT);
        value = scols_table_new_column(tb, "VALUE", 0, 0);
        if (!label || !value)
                return -ENOMEM;
        for (size_t k = 0; k < _COL_MAX; k++) {
                struct libscols_line *ln = scols_table_new_line(tb, NULL);
                char *l = NULL, *v = NULL;

                if (!ln || asprintf(&l, "%s:", columns[k].label) < 0)
                        return -ENOMEM;
                if (scols_line_refer_data(ln, 0, l) < 0) {
                        free(l);
                        return -ENOMEM;
                }
                v = column_cell((ColumnId) k, info, false, true);
                if (!v || scols_line_refer_data(ln, 1, v) < 0) {
                        free(v);
                        return -ENOMEM;
                }
        }
        return scols_print_table(tb) < 0 ? -EIO : 0;
}

/* The kernel's encoding of a dev_t for userspace's old 32-bit interfaces
 * (new_encode_dev() in include/linux/kdev_t.h): what LOOP_GET_STATUS64
 * reports as lo_device and losetup prints as "[%04d]". */
static unsigned long long kernel_encode_dev(uint64_t dev) {
        unsigned long long ma = major((dev_t) dev), mi = minor((dev_t) dev);

        return (mi & 0xff) | (ma << 8) | ((mi & ~0xffULL) << 12);
}

void output_print_old_format(const LoopdDeviceInfo *info) {
        /* Escaped as BackingFile is: one device stays one line whatever
         * the name holds (losetup prints the raw bytes). */
        _cleanup_(freep) char *name = name_escape(device_backing_name(info));

        printf("%s: [%04llu]:%llu (%s%s)", info->device_path ? info->device_path : "?",
               kernel_encode_dev(info->backing_device), (unsigned long long) info->backing_inode,
               name ? name : "?", info->backing_file_deleted ? " (deleted)" : "");
        if (info->offset)
                printf(", offset %llu", (unsigned long long) info->offset);
        if (info->size_limit)
                printf(", sizelimit %llu", (unsigned long long) info->size_limit);
        putchar('\n');
}
