/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * loopd's log: what it allowed, refused and changed, as structured journal
 * entries (MESSAGE_ID per kind, LOOPD_* fields a machine can filter, a
 * one-line MESSAGE a person reads in `journalctl -u loopd`), and the
 * daemon's own diagnostics. Under systemd (stderr is the journal stream
 * JOURNAL_STREAM names) entries go to the journal's native socket with all
 * their fields; otherwise each is one line on stderr.
 *
 * Only the daemon logs; the loop core returns errnos and never logs.
 * Every entry at notice, info or debug is a structured entry with its
 * MESSAGE_ID; warnings and errors about loopd's own trouble (a signal it
 * could not send, a record it could not delete) are plain lines, ERRNO set.
 *
 * Fields (see loopd(8), "AUDIT TRAIL"):
 *   LOOPD_UID, LOOPD_PID, LOOPD_SENDER   who asked (as the bus vouches)
 *   LOOPD_DEVICE, LOOPD_DISKSEQ          which attachment ("/dev/loopN")
 *   LOOPD_BACKING_FILE                   the kernel's name, escaped (valid UTF-8)
 *   LOOPD_BACKING_DEV, LOOPD_BACKING_INO its identity ("maj:min", inode)
 *   LOOPD_OPTIONS                        e.g. "read-only,autoclear,bind-to-caller"
 *   LOOPD_OWNER                          the device's owner uid
 *   LOOPD_REASON                         why refused: polkit, quota, invalid-argument,
 *                                        access, limits, busy, kernel, timeout
 *   LOOPD_ACTION                         the polkit action asked
 *   ERRNO                                where an errno applies
 */

#include <stdarg.h>
#include <stdbool.h>
#include <syslog.h>

#include "util.h"

/* One MESSAGE_ID per kind of entry (journalctl MESSAGE_ID=...). */
#define LOG_ID_STARTED         "59ca72a4a7414faf9e3eda2d9ec6f416"
#define LOG_ID_STOPPED         "638444580a7b4dd39ebe44f9807e0621"
#define LOG_ID_SIGNAL          "4334bb19a69942849fdffc8edfae7647"
#define LOG_ID_CREATED         "de9d5217b972471b94dec1b05bbe76d3"
#define LOG_ID_REMOVED         "b2e44a0c077145dab5840905dc0104c9"
#define LOG_ID_RESIZED         "3473025c2d46404b989b874b9073eff0"
#define LOG_ID_OPENED          "5b17690fd54d409c93e3acafaf108ad3"
#define LOG_ID_REFUSED         "20871da2c0f644bba2847bdfe3674a8c"
#define LOG_ID_CALLER_GONE     "45f3f3b996be4475b6edc1d15f5646f6"
#define LOG_ID_RECONCILED      "9d8faf37166241b280df533f5bcafad4"
#define LOG_ID_STATE_DIR       "a4addda69422414e970111dc423748ed"
#define LOG_ID_BACKING_CHANGED "cb84f172f4ac41b7ae324d04b4116423"
#define LOG_ID_LIMIT           "585ec10c25634c48ae172e36f04e057d"

/* Entries above this priority (LOG_DEBUG..LOG_EMERG) are dropped. */
void log_set_max_level(int level);
int log_get_max_level(void);
/* "debug", "info", "notice", "warning", "err", "crit", "alert", "emerg",
 * or 0..7. -EINVAL otherwise. */
int log_level_from_string(const char *s);

/* Journal or stderr, from the environment; call once at start. */
void log_open(void);

/* A plain diagnostic; errnum > 0 appends ": strerror" and sets ERRNO=. */
void log_full(int priority, int errnum, const char *fmt, ...) _printf_(3, 4);
#define log_debug(...) log_full(LOG_DEBUG, 0, __VA_ARGS__)
#define log_info(...) log_full(LOG_INFO, 0, __VA_ARGS__)
#define log_notice(...) log_full(LOG_NOTICE, 0, __VA_ARGS__)
#define log_warning(...) log_full(LOG_WARNING, 0, __VA_ARGS__)
#define log_error(...) log_full(LOG_ERR, 0, __VA_ARGS__)
#define log_warning_errno(e, ...) log_full(LOG_WARNING, (e) < 0 ? -(e) : (e), __VA_ARGS__)
#define log_error_errno(e, ...) log_full(LOG_ERR, (e) < 0 ? -(e) : (e), __VA_ARGS__)
#define log_debug_errno(e, ...) log_full(LOG_DEBUG, (e) < 0 ? -(e) : (e), __VA_ARGS__)

/* A structured entry, built field by field and sent once:
 *
 *   LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_CREATED);
 *   log_entry_add(&e, "LOOPD_UID", "%u", uid);
 *   log_entry_send(&e, "Created %s for uid %u", dev, uid);
 *
 * Adding never fails visibly: a field that cannot be stored is dropped.
 * log_entry_send() frees everything; an unsent entry must be
 * log_entry_done()d. */
#define LOG_ENTRY_FIELDS_MAX 20
typedef struct LogEntry {
        int priority;
        const char *message_id;
        char *fields[LOG_ENTRY_FIELDS_MAX]; /* "KEY=value", malloc'ed */
        unsigned n;
} LogEntry;
#define LOG_ENTRY_INIT(prio, id) ((LogEntry) { .priority = (prio), .message_id = (id) })

void log_entry_add(LogEntry *e, const char *key, const char *fmt, ...) _printf_(3, 4);
void log_entry_send(LogEntry *e, const char *fmt, ...) _printf_(2, 3);
void log_entry_done(LogEntry *e);
bool log_would_log(int priority);
