/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * CreateFromPath's file, opened the way the caller itself would open it.
 *
 * A forked helper holding nothing of loopd's (every fd but its socket is
 * closed first: a fork keeps loopd's fds, other callers' backing files
 * among them) becomes the caller, with the uid and the groups the bus
 * vouches for (never what the user database says: a caller that dropped
 * groups keeps them dropped), and resolves the path in the caller's own
 * view of the file system: its mount namespace and root directory, reached
 * through /proc/PID/root of the process that connected, with openat2()
 * RESOLVE_IN_ROOT (or chroot() into it where openat2() is refused). So:
 *  - loopd never opens a caller's path with root's rights; the kernel
 *    checks the caller's permissions on every component;
 *  - a caller in a container or chroot names files as it sees them, and
 *    never reaches the host's (or loopd's sandboxed) view of a path;
 *  - the file's mount is the caller's, so the kernel's name for it (sysfs,
 *    losetup, BackingFile) stays right after loopd's own mount namespace
 *    is gone (restart, idle exit, crash);
 *  - magic links (/proc/self/fd/N, /dev/fd/N) are refused: such a file is
 *    passed with Create;
 *  - a path that hangs (dead NFS, a FUSE server that never answers, a
 *    FIFO) blocks the helper, not loopd: O_NONBLOCK, and a timeout.
 *
 * /proc/PID/root is opened with the caller's uid and gid already set as
 * the file system ids, so the kernel lets the helper in only where the
 * caller itself could look (same ids, a dumpable process): a pid reused by
 * another user's process gives nothing. Root's helper keeps root's rights
 * (caps.h) and raises CAP_SYS_PTRACE to look at a root caller's root.
 *
 * Helpers count against their uid and in total until they have exited,
 * not merely until the caller was answered: a helper stuck in the kernel
 * (D state) still holds a process and a pidfd.
 */

#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "util.h"

typedef struct PathOpener PathOpener;
typedef struct PathOpen PathOpen;

int path_opener_new(sd_event *e, unsigned max_per_uid, unsigned max_total, PathOpener **ret);
/* Helpers still running are left to exit on their own (SIGKILLed). */
PathOpener *path_opener_free(PathOpener *po);
unsigned path_opener_helpers(PathOpener *po, uid_t uid); /* live helpers of uid, stuck ones included */

/* Where an open failed. */
typedef enum PathOpenStage {
        PATH_OPEN_STAGE_CREDENTIALS, /* becoming the caller */
        PATH_OPEN_STAGE_VIEW,        /* reaching the caller's /proc/PID/root */
        PATH_OPEN_STAGE_OPEN,        /* opening the path in it */
} PathOpenStage;

/* r < 0: the errno the helper got at `stage` (or -ETIMEDOUT). fd >= 0 is the
 * callee's to close. The PathOpen is finished when this runs. */
typedef void (*path_open_done_t)(int r, PathOpenStage stage, int fd, void *userdata);

typedef struct PathOpenRequest {
        const char *path;     /* absolute */
        int flags;            /* O_RDONLY or O_RDWR; O_CLOEXEC|O_NOCTTY|O_NONBLOCK are added */
        uid_t uid;
        pid_t pid;            /* the process that connected to the bus */
        const gid_t *groups;  /* as the bus vouches: supplementary and primary */
        unsigned n_groups;
} PathOpenRequest;

/* -EAGAIN when the uid has max_per_uid helpers or loopd max_total. */
int path_open_as(PathOpener *po, const PathOpenRequest *req, uint64_t timeout_usec, path_open_done_t done,
                 void *userdata, PathOpen **ret);

/* Kills the helper if it still runs; the callback is not called. NULL ok. */
PathOpen *path_open_cancel(PathOpen *p);
