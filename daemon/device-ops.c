/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "caps.h"
#include "devices-internal.h"
#include "fd-store.h"
#include "log.h"
#include "node-access.h"

/* ---- undoing what a job made -------------------------------------------------- */

typedef struct ReleaseJob {
        Devices *ds; /* NULL at exit: nothing to update */
        uint32_t number;
        uint64_t diskseq;
        LoopDevice *ld;
        int fd; /* a caller's fd nobody took, or -1 */
        bool detach;
        int r;
} ReleaseJob;

static void release_run(void *data) {
        ReleaseJob *j = data;

        /* LOOP_CLR_FD first where asked, so that our close, if it is the
         * last, clears it; a close may flush I/O to a hung file system. A
         * keeper's copy in systemd's store goes before. */
        if (j->ld)
                fd_store_sync();
        if (j->detach && j->ld)
                j->r = loop_device_detach(j->ld);
        else if (j->detach && j->fd >= 0 && ioctl(j->fd, LOOP_CLR_FD) < 0)
                j->r = negative_errno();
        j->fd = safe_close(j->fd);
        j->ld = loop_device_free(j->ld);
        if (j->detach && j->r >= 0)
                j->r = loop_attachment_bound(j->number, j->diskseq) ? LOOP_DETACH_DEFERRED : LOOP_DETACH_DONE;
}

/* At exit, the close of a release the pool never ran. */
static void release_orphan_run(void *data) {
        release_run(data);
        free(data);
}

static void release_done(void *data, JobResult result) {
        _cleanup_(freep) ReleaseJob *j = data;
        Device *d;

        if (result == JOB_CANCELLED) {
                /* The pool is going (loopd exits) and the job never ran:
                 * the close may still hang on the owner's file system, so
                 * not on the event loop, which has the exit to finish. */
                job_run_orphan(release_orphan_run, TAKE_PTR(j));
                return;
        }
        if (!j->ds)
                return;
        d = devices_get_attachment(j->ds, j->number, j->diskseq);
        if (d && j->detach && j->r == LOOP_DETACH_DONE) {
                device_drop(j->ds, d);
                node_pool_kick(j->ds->pool);
        }
}

void devices_release(Devices *ds, JobPool *jobs, uid_t owner, uint32_t number, uint64_t diskseq, LoopDevice *ld,
                     int fd, bool detach) {
        ReleaseJob *j;
        int r;

        if (!ld && fd < 0)
                return;
        j = calloc(1, sizeof(*j));
        if (!j) {
                safe_close(fd);
                loop_device_free(ld);
                return;
        }
        *j = (ReleaseJob) { ds, number, diskseq, ld, fd, detach, 0 };
        /* The last close may hang on the owner's backing file: the owner's
         * job, behind its others, never refused. */
        r = job_submit_cleanup(jobs, owner, release_run, release_done, j);
        if (r < 0) {
                log_error_errno(r, "Cannot queue the release of loop%" PRIu32 "; closing it on the event loop",
                                number);
                release_run(j);
                release_done(j, JOB_DONE);
        }
}

void devices_release_keeper(Devices *ds, uid_t owner, uint32_t number, uint64_t diskseq, LoopDevice *keeper,
                            bool detach) {
        /* While devices_free() runs, the job's result has nobody to update. */
        devices_release(ds->freeing ? NULL : ds, ds->jobs, owner, number, diskseq, keeper, -1, detach);
}

/* ---- remove, refresh, open ------------------------------------------------------------ */

typedef enum OpKind { OP_REMOVE, OP_REFRESH, OP_OPEN } OpKind;

typedef struct OpJob {
        Devices *ds;
        OpKind kind;
        uint32_t number;
        uint64_t diskseq;
        LoopDevice *ld; /* remove: the keeper, if it had one */
        int flags;
        int r;
        devices_op_done_t done;
        void *userdata;
        bool answered;
} OpJob;

static void op_run(void *data) {
        OpJob *j = data;
        int fd;

        if (j->ld)
                fd_store_sync(); /* a keeper: its copy in systemd's store goes first */
        else {
                j->r = loop_device_open_number(j->number, j->diskseq, j->kind == OP_OPEN ? j->flags : O_RDONLY,
                                               &j->ld);
                if (j->r < 0)
                        return;
        }
        switch (j->kind) {
        case OP_REMOVE:
                j->r = loop_device_detach(j->ld);
                break;
        case OP_REFRESH:
                j->r = loop_device_refresh_size(j->ld);
                break;
        case OP_OPEN:
                fd = fcntl(loop_device_fd(j->ld), F_DUPFD_CLOEXEC, 3);
                j->r = fd < 0 ? negative_errno() : fd;
                break;
        }
        j->ld = loop_device_free(j->ld);
}

static void op_expired(void *data) {
        OpJob *j = data;

        j->answered = true;
        j->done(-ETIMEDOUT, j->userdata);
}

static void op_done(void *data, JobResult result) {
        _cleanup_(freep) OpJob *j = data;
        Devices *ds = j->ds;
        Device *d = devices_get_attachment(ds, j->number, j->diskseq);
        int r = result == JOB_CANCELLED ? -ECANCELED : j->r;

        if (result == JOB_CANCELLED)
                j->ld = loop_device_free(j->ld);
        if (d && j->kind == OP_REMOVE)
                d->busy = false;
        if (r == -ESTALE || r == -ENXIO || r == -ENOENT || r == -ENODEV) {
                devices_sync(ds, j->number);
                r = -ENXIO;
        } else if (j->kind == OP_REMOVE && r == LOOP_DETACH_DONE) {
                if (d)
                        device_drop(ds, d);
                node_pool_kick(ds->pool);
        } else if (j->kind == OP_REMOVE && r == LOOP_DETACH_DEFERRED) {
                if (d) {
                        d->detach_pending = true;
                        devices_sync(ds, j->number); /* autoclear is set now */
                        d = devices_get_attachment(ds, j->number, j->diskseq);
                        if (d)
                                device_emit_changed(ds, d, DEVICE_CHANGED_STATE);
                }
        } else if (j->kind == OP_REFRESH && r >= 0)
                devices_sync(ds, j->number);
        if (j->answered) {
                if (j->kind == OP_OPEN && r >= 0)
                        safe_close(r); /* nobody waits for it any more */
                return;
        }
        j->done(r, j->userdata);
}

static int op_submit(Devices *ds, Device *d, uid_t uid, bool cleanup, OpKind kind, int flags, LoopDevice *ld,
                     devices_op_done_t done, void *userdata) {
        OpJob *j;
        int r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (OpJob) { .ds = ds, .kind = kind, .number = d->number, .diskseq = d->diskseq, .ld = ld,
                       .flags = flags, .done = done, .userdata = userdata };
        if (cleanup)
                r = job_submit_cleanup(ds->jobs, uid, op_run, op_done, j);
        else
                r = job_submit(ds->jobs, uid, ds->kernel_timeout_usec, op_run, op_expired, op_done, j);
        if (r < 0)
                free(j);
        return r;
}

static int remove_device(Devices *ds, Device *d, uid_t uid, bool cleanup, devices_op_done_t done,
                         void *userdata) {
        LoopDevice *keeper;
        int r;

        if (d->busy)
                return -EBUSY;
        /* Access goes first: from the detach on, the attachment may end at
         * any close, and the owner must not be able to open the node then. */
        keeper = device_unguard(ds, d);
        r = op_submit(ds, d, uid, cleanup, OP_REMOVE, 0, keeper, done, userdata);
        if (r < 0) {
                if (keeper)
                        (void) device_guard(ds, d, keeper);
                return r;
        }
        d->busy = true;
        return 0;
}

int devices_remove(Devices *ds, Device *d, uid_t uid, devices_op_done_t done, void *userdata) {
        return remove_device(ds, d, uid, false, done, userdata);
}

int devices_remove_left_behind(Devices *ds, Device *d, devices_op_done_t done, void *userdata) {
        return remove_device(ds, d, d->owner, true, done, userdata);
}

int devices_refresh_size(Devices *ds, Device *d, uid_t uid, devices_op_done_t done, void *userdata) {
        return op_submit(ds, d, uid, false, OP_REFRESH, 0, NULL, done, userdata);
}

int devices_open(Devices *ds, Device *d, uid_t uid, int flags, devices_op_done_t done, void *userdata) {
        if (d->info.flags & LO_FLAGS_READ_ONLY)
                flags = O_RDONLY;
        return op_submit(ds, d, uid, false, OP_OPEN, flags, NULL, done, userdata);
}

