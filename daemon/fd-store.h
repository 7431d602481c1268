/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Keepers also held by systemd's file descriptor store (--fd-store, which
 * loopd.service passes; FileDescriptorStoreMax= in the unit).
 *
 * A keeper is what makes an owner's node access safe: while loopd holds it,
 * the attachment cannot end, so the node cannot carry the owner's ACL into
 * someone else's attachment. A loopd that dies without closing its keepers
 * (a crash, SIGKILL) leaves the ACLs on the nodes until the next loopd
 * strips them; without a copy of the keeper elsewhere, root could detach
 * the device meanwhile and the next attachment on that node would be open
 * to the old owner. With the store, systemd holds a copy: a detach asked
 * meanwhile only marks the device (autoclear), the node stays in use, and
 * the restarted loopd takes the copies back (LISTEN_FDS), sees the detach
 * that was asked, withdraws access and lets go.
 *
 * A copy in the store is one more opener: whoever closes a keeper that may
 * be the last (a detach waiting for the last close) tells systemd to drop
 * its copy first (fd_store_forget() on the event loop) and waits for
 * systemd to have done so (fd_store_sync(), on a job).
 *
 * Names: "keeper-<number>-<diskseq>". Without --fd-store, or without
 * $NOTIFY_SOCKET, every call does nothing.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Set once at start, from the command line. */
void fd_store_enable(bool enable);

/* FDSTORE=1 with a copy of fd. Failure is logged: the device is guarded as
 * before, only a crash of loopd is not covered. */
void fd_store_keep(uint32_t number, uint64_t diskseq, int fd);
/* FDSTOREREMOVE=1 for that keeper. */
void fd_store_forget(uint32_t number, uint64_t diskseq);
/* Blocks until systemd has processed what this process sent it before
 * (BARRIER=1), at most 5 s. Off the event loop. */
void fd_store_sync(void);

typedef struct StoredKeeper {
        uint32_t number;
        uint64_t diskseq;
        int fd;
} StoredKeeper;

/* The keepers systemd passed at start (LISTEN_FDS/LISTEN_FDNAMES). An fd
 * of any other name is closed and dropped from the store. */
int fd_store_take(StoredKeeper **ret, size_t *ret_n);
void stored_keepers_free(StoredKeeper *k, size_t n);
