/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
/* The location would always be this file's emit(): useless in every entry. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

#include "log.h"

static int max_level = LOG_INFO;
static bool to_journal = false;

void log_set_max_level(int level) {
        max_level = level;
}

int log_get_max_level(void) {
        return max_level;
}

bool log_would_log(int priority) {
        return priority <= max_level;
}

int log_level_from_string(const char *s) {
        static const char *const names[] = { "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug" };

        if (!s)
                return -EINVAL;
        for (int i = 0; i < 8; i++)
                if (strcmp(s, names[i]) == 0)
                        return i;
        if (s[0] >= '0' && s[0] <= '7' && s[1] == 0)
                return s[0] - '0';
        return -EINVAL;
}

void log_open(void) {
        const char *e = getenv("JOURNAL_STREAM");
        unsigned long long dev, ino;
        struct stat st;

        /* systemd connects stderr to the journal and names that stream in
         * JOURNAL_STREAM; a child whose stderr was redirected must not
         * mistake an inherited variable for its own stream. */
        to_journal = e && sscanf(e, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
                     (unsigned long long) st.st_dev == dev && (unsigned long long) st.st_ino == ino;
}

static void emit(int priority, const char *message_id, char *const *fields, unsigned n, const char *message,
                 int errnum) {
        struct iovec iov[LOG_ENTRY_FIELDS_MAX + 4];
        char prio[16], id[64], err[32];
        _cleanup_(freep) char *msg = NULL;
        unsigned k = 0;

        if (to_journal) {
                if (asprintf(&msg, "MESSAGE=%s", message) < 0)
                        goto fallback;
                snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
                iov[k++] = (struct iovec) { msg, strlen(msg) };
                iov[k++] = (struct iovec) { prio, strlen(prio) };
                if (message_id) {
                        snprintf(id, sizeof(id), "MESSAGE_ID=%s", message_id);
                        iov[k++] = (struct iovec) { id, strlen(id) };
                }
                if (errnum > 0) {
                        snprintf(err, sizeof(err), "ERRNO=%d", errnum);
                        iov[k++] = (struct iovec) { err, strlen(err) };
                }
                for (unsigned i = 0; i < n && k < ELEMENTSOF(iov); i++)
                        iov[k++] = (struct iovec) { fields[i], strlen(fields[i]) };
                if (sd_journal_sendv(iov, (int) k) >= 0)
                        return;
        }
fallback:
        fprintf(stderr, "loopd: %s\n", message);
}

void log_full(int priority, int errnum, const char *fmt, ...) {
        _cleanup_(freep) char *text = NULL, *line = NULL;
        va_list ap;
        int r;

        if (!log_would_log(priority))
                return;
        va_start(ap, fmt);
        r = vasprintf(&text, fmt, ap);
        va_end(ap);
        if (r < 0)
                return;
        if (errnum > 0 && asprintf(&line, "%s: %s", text, strerror(errnum)) < 0)
                return;
        emit(priority, NULL, NULL, 0, line ? line : text, errnum);
}

void log_entry_add(LogEntry *e, const char *key, const char *fmt, ...) {
        _cleanup_(freep) char *value = NULL;
        va_list ap;
        int r;

        if (e->n >= LOG_ENTRY_FIELDS_MAX || !log_would_log(e->priority))
                return;
        va_start(ap, fmt);
        r = vasprintf(&value, fmt, ap);
        va_end(ap);
        if (r < 0)
                return;
        if (asprintf(&e->fields[e->n], "%s=%s", key, value) < 0)
                e->fields[e->n] = NULL;
        else
                e->n++;
}

void log_entry_done(LogEntry *e) {
        for (unsigned i = 0; i < e->n; i++)
                free(e->fields[i]);
        e->n = 0;
}

void log_entry_send(LogEntry *e, const char *fmt, ...) {
        _cleanup_(freep) char *text = NULL;
        va_list ap;
        int r;

        if (log_would_log(e->priority)) {
                va_start(ap, fmt);
                r = vasprintf(&text, fmt, ap);
                va_end(ap);
                if (r >= 0)
                        emit(e->priority, e->message_id, e->fields, e->n, text, 0);
        }
        log_entry_done(e);
}
