/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>

#include "fd-store.h"
#include "log.h"
#include "util.h"

#define NAME_PREFIX "keeper-"
#define SYNC_TIMEOUT_USEC (5ULL * 1000000ULL)

/* Configuration, set before any job thread starts; read by them after. */
static atomic_bool enabled;
/* One warning per run: the store being full or missing is one fact. */
static bool warned;

void fd_store_enable(bool enable) {
        atomic_store(&enabled, enable);
}

static void name_of(char *buf, size_t size, uint32_t number, uint64_t diskseq) {
        (void) snprintf(buf, size, NAME_PREFIX "%" PRIu32 "-%" PRIu64, number, diskseq);
}

void fd_store_keep(uint32_t number, uint64_t diskseq, int fd) {
        char msg[96], name[64];
        int r;

        if (!atomic_load(&enabled) || fd < 0)
                return;
        name_of(name, sizeof(name), number, diskseq);
        (void) snprintf(msg, sizeof(msg), "FDSTORE=1\nFDNAME=%s", name);
        r = sd_pid_notify_with_fds(0, false, msg, &fd, 1);
        if (r < 0 && !warned) {
                warned = true;
                log_warning_errno(r, "Cannot hand the keeper of loop%" PRIu32 " to systemd's fd store; a crash of "
                                  "loopd leaves such devices unguarded until it is back", number);
        }
}

void fd_store_forget(uint32_t number, uint64_t diskseq) {
        char msg[96], name[64];
        int r;

        if (!atomic_load(&enabled))
                return;
        name_of(name, sizeof(name), number, diskseq);
        (void) snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%s", name);
        r = sd_pid_notify(0, false, msg);
        if (r < 0)
                log_warning_errno(r, "Cannot take the keeper of loop%" PRIu32 " out of systemd's fd store; its "
                                  "detach waits until loopd stops", number);
}

void fd_store_sync(void) {
        int r;

        if (!atomic_load(&enabled))
                return;
        r = sd_notify_barrier(false, SYNC_TIMEOUT_USEC);
        if (r < 0)
                log_warning_errno(r, "systemd did not confirm dropping a keeper from its fd store; a detach may "
                                  "be reported as deferred");
}

static int parse_name(const char *name, uint32_t *number, uint64_t *diskseq) {
        unsigned long n;
        unsigned long long s;
        int end = 0;

        if (!name || strncmp(name, NAME_PREFIX, strlen(NAME_PREFIX)) != 0)
                return -EINVAL;
        if (sscanf(name + strlen(NAME_PREFIX), "%lu-%llu%n", &n, &s, &end) != 2 ||
            name[strlen(NAME_PREFIX) + (size_t) end] != 0 || n > UINT32_MAX || s == 0)
                return -EINVAL;
        *number = (uint32_t) n;
        *diskseq = s;
        return 0;
}

void stored_keepers_free(StoredKeeper *k, size_t n) {
        for (size_t i = 0; i < n; i++)
                safe_close(k[i].fd);
        free(k);
}

int fd_store_take(StoredKeeper **ret, size_t *ret_n) {
        char **names = NULL;
        StoredKeeper *k = NULL;
        size_t n = 0;
        int m;

        *ret = NULL;
        *ret_n = 0;
        if (!atomic_load(&enabled))
                return 0;
        m = sd_listen_fds_with_names(true, &names);
        if (m <= 0) {
                if (m < 0)
                        log_warning_errno(m, "Cannot read the fds systemd passed");
                return 0;
        }
        k = calloc((size_t) m, sizeof(*k));
        for (int i = 0; i < m; i++) {
                int fd = SD_LISTEN_FDS_START + i;
                uint32_t number;
                uint64_t diskseq;

                if (!k || parse_name(names ? names[i] : NULL, &number, &diskseq) < 0) {
                        /* Not ours to use: out of the store with it. */
                        if (names && names[i]) {
                                char msg[320];
                                (void) snprintf(msg, sizeof(msg), "FDSTOREREMOVE=1\nFDNAME=%.255s", names[i]);
                                (void) sd_pid_notify(0, false, msg);
                        }
                        safe_close(fd);
                        continue;
                }
                k[n++] = (StoredKeeper) { number, diskseq, fd };
        }
        for (int i = 0; names && i < m; i++)
                free(names[i]);
        free(names);
        if (!k)
                return -ENOMEM;
        *ret = k;
        *ret_n = n;
        return 0;
}
