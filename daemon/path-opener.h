/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Opens a path a caller named, with the caller's own uid and groups, in a
 * forked helper, so that:
 *  - the daemon never opens a caller's path with root's rights (the kernel
 *    checks the caller's permissions on every path component);
 *  - a path that hangs (a dead NFS server, a FUSE file system that never
 *    answers, a FIFO) blocks the helper, not the daemon: the helper opens
 *    with O_NONBLOCK and is killed after a timeout;
 * and hands the fd back over a socketpair (SCM_RIGHTS). The result comes
 * back on the event loop.
 */

#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "util.h"

typedef struct PathOpen PathOpen;

/* r < 0: the errno the helper got (or -ETIMEDOUT). fd >= 0 is the callee's
 * to close. The PathOpen is finished when this runs: do not cancel it. */
typedef void (*path_open_done_t)(int r, int fd, void *userdata);

/* flags: O_RDONLY or O_RDWR; O_CLOEXEC|O_NOCTTY|O_NONBLOCK are added. */
int path_open_as(sd_event *e, const char *path, int flags, uid_t uid, gid_t gid,
                 const gid_t *groups, size_t n_groups, uint64_t timeout_usec,
                 path_open_done_t done, void *userdata, PathOpen **ret);

/* Kills the helper if it still runs; the callback is not called. NULL ok. */
PathOpen *path_open_cancel(PathOpen *p);
