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
#include "log.h"
#include "node-access.h"

/* ---- quota reservations ----------------------------------------------------- */

int devices_reserve(Devices *ds, uid_t owner) {
        if (owner == 0)
                return 0;
        if (devices_count_owned(ds, owner) + uid_counts_get(&ds->reserved, owner) >= ds->quota)
                return -EDQUOT;
        return uid_counts_inc(&ds->reserved, owner);
}

void devices_unreserve(Devices *ds, uid_t owner) {
        if (owner != 0)
                uid_counts_dec(&ds->reserved, owner);
}

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
         * last, clears it; a close may flush I/O to a hung file system. */
        if (j->detach && j->ld)
                j->r = loop_device_detach(j->ld);
        else if (j->detach && j->fd >= 0 && ioctl(j->fd, LOOP_CLR_FD) < 0)
                j->r = negative_errno();
        j->fd = safe_close(j->fd);
        j->ld = loop_device_free(j->ld);
        if (j->detach && j->r >= 0)
                j->r = loop_attachment_bound(j->number, j->diskseq) ? LOOP_DETACH_DEFERRED : LOOP_DETACH_DONE;
}

static void release_done(void *data, JobResult result) {
        _cleanup_(freep) ReleaseJob *j = data;
        Device *d;

        if (result == JOB_CANCELLED) {
                /* The pool is going: no thread to wait on, close here. */
                safe_close(j->fd);
                loop_device_free(j->ld);
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

static void release(Devices *ds, JobPool *jobs, uint32_t number, uint64_t diskseq, LoopDevice *ld, int fd,
                    bool detach) {
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
        /* Charged to root: it is loopd's own cleanup, never refused. */
        r = job_submit(jobs, 0, 0, release_run, NULL, release_done, j);
        if (r < 0) {
                log_error_errno(r, "Cannot queue the release of loop%" PRIu32 "; closing it on the event loop",
                                number);
                release_run(j);
                release_done(j, JOB_DONE);
        }
}

void devices_release_keeper(Devices *ds, uint32_t number, uint64_t diskseq, LoopDevice *keeper, bool detach) {
        /* While devices_free() runs, the job's result has nobody to update. */
        release(ds->freeing ? NULL : ds, ds->jobs, number, diskseq, keeper, -1, detach);
}

/* ---- backing check --------------------------------------------------------------- */

typedef struct CheckJob {
        int fd;
        LoopConfig config;
        BackingCheck result;
        devices_check_done_t done;
        void *userdata;
        bool answered;
} CheckJob;

static void check_run(void *data) {
        CheckJob *j = data;
        char proc[64], buf[PATH_MAX];
        struct stat st;
        ssize_t n;

        j->result.r = loop_backing_check(j->fd, &j->config, &j->result.backing, &j->result.flags);
        if (j->result.r < 0)
                return;
        /* The kernel's name for the file (d_path, as sysfs will show it). */
        (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", j->fd);
        n = readlink(proc, buf, sizeof(buf) - 1);
        if (n <= 0)
                return;
        buf[n] = 0;
        j->result.path = strdup(buf);
        /* Is it the same file in loopd's own mount namespace? A caller in a
         * mount namespace of its own can bind anything over any path. The
         * look needs to search directories the caller may enter and loopd
         * may not (a 0700 home): CAP_DAC_READ_SEARCH, on this thread only,
         * for this stat only. */
        (void) caps_set_effective(CAPS_DAC_READ_SEARCH, 0);
        j->result.path_verified = buf[0] == '/' && stat(buf, &st) == 0 && st.st_dev == j->result.backing.st_dev &&
                                  st.st_ino == j->result.backing.st_ino;
        (void) caps_set_effective(0, CAPS_DAC_READ_SEARCH);
}

static void check_expired(void *data) {
        CheckJob *j = data;
        BackingCheck c = { .r = -ETIMEDOUT };

        j->answered = true;
        j->done(&c, j->userdata);
}

static void check_done(void *data, JobResult result) {
        _cleanup_(freep) CheckJob *j = data;

        if (!j->answered) {
                if (result == JOB_CANCELLED)
                        j->result.r = -ECANCELED;
                j->done(&j->result, j->userdata);
        }
        free(j->result.path);
        safe_close(j->fd);
}

int devices_check_backing(Devices *ds, uid_t owner, int backing_fd, const LoopConfig *config,
                          devices_check_done_t done, void *userdata) {
        CheckJob *j;
        int r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        j->fd = fcntl(backing_fd, F_DUPFD_CLOEXEC, 3);
        if (j->fd < 0) {
                free(j);
                return negative_errno();
        }
        j->config = *config;
        j->done = done;
        j->userdata = userdata;
        r = job_submit(ds->jobs, owner, ds->kernel_timeout_usec, check_run, check_expired, check_done, j);
        if (r < 0) {
                safe_close(j->fd);
                free(j);
        }
        return r;
}

/* ---- create ------------------------------------------------------------------------ */

typedef struct CreateJob {
        Devices *ds;
        int backing_fd;
        LoopConfig config;
        uid_t owner;
        char *binding;
        char *intent;
        dev_t backing_dev;
        uint64_t backing_ino;
        devices_create_done_t done;
        void *userdata;
        bool answered;
        /* Results. */
        int r;
        int store_errno;
        LoopInfo info;
        int fd;
        LoopDevice *keeper;
        bool dio_refused;
} CreateJob;

static void create_run(void *data) {
        CreateJob *j = data;
        _cleanup_(loop_device_freep) LoopDevice *ld = NULL;
        LoopBacking backing;
        uint32_t flags;

        j->r = loop_backing_check(j->backing_fd, &j->config, &backing, &flags);
        if (j->r < 0)
                return;
        j->backing_dev = backing.st_dev;
        j->backing_ino = backing.st_ino;
        /* The intent before the kernel acts: a kill -9 in between leaves it,
         * and the next start adopts the device bound to that file. */
        OwnerIntent it = { .backing_dev = backing.st_dev, .backing_ino = backing.st_ino, .uid = j->owner,
                           .bound_to = j->binding };
        j->r = owner_store_put_intent(j->ds->store, &it, &j->intent);
        if (j->r < 0) {
                j->store_errno = j->r;
                j->r = j->r == -ENOMEM || j->r == -EINVAL ? j->r : DEVICES_ERROR_STATE_DIR;
                return;
        }
        j->r = loop_device_create_checked(j->ds->control_fd, j->backing_fd, &j->config, flags, &ld);
        if (j->r < 0)
                return;
        j->dio_refused = loop_device_dio_refused(ld);
        j->r = loop_device_take_created_info(ld, &j->info);
        if (j->r >= 0 && (!j->info.bound || j->info.diskseq != loop_device_diskseq(ld)))
                j->r = -EIO;
        /* The caller's fd (and the keeper) first, then ours closes: an
         * autoclear device must never be without an opener in between. */
        if (j->r >= 0) {
                j->fd = loop_device_reopen(ld);
                if (j->fd < 0)
                        j->r = j->fd;
        }
        if (j->r >= 0 && device_wants_guard(j->owner, j->info.flags))
                j->r = loop_device_open_number(j->info.number, j->info.diskseq, O_RDONLY, &j->keeper);
        if (j->r < 0) {
                j->fd = safe_close(j->fd);
                j->keeper = loop_device_free(j->keeper);
                loop_info_done(&j->info);
                (void) loop_device_detach(ld);
        }
}

static void create_expired(void *data) {
        CreateJob *j = data;

        j->answered = true;
        j->done(-ETIMEDOUT, NULL, -1, false, j->userdata);
}

static void create_free(CreateJob *j) {
        safe_close(j->backing_fd);
        free(j->binding);
        free(j->intent);
        loop_info_done(&j->info);
        free(j);
}

/* Nobody waits for what the job made (or its record cannot be written):
 * take it back. */
static void create_undo(CreateJob *j) {
        release(j->ds, j->ds->jobs, j->info.number, j->info.diskseq, TAKE_PTR(j->keeper), TAKE_FD(j->fd), true);
}

static void create_done(void *data, JobResult result) {
        CreateJob *j = data;
        Devices *ds = j->ds;
        Device *d;
        int r = j->r;

        devices_unreserve(ds, j->owner);
        if (result == JOB_CANCELLED)
                r = -ECANCELED;
        if (j->store_errno < 0) {
                LogEntry e = LOG_ENTRY_INIT(LOG_ERR, LOG_ID_STATE_DIR);
                log_entry_add(&e, "ERRNO", "%d", -j->store_errno);
                log_entry_send(&e, "Cannot write an intent record to the state directory: %s",
                               strerror(-j->store_errno));
        }
        if (r >= 0 && ds->freeing) {
                create_undo(j);
                r = -ECANCELED;
        }
        if (r >= 0 && j->answered) {
                LogEntry e = LOG_ENTRY_INIT(LOG_NOTICE, LOG_ID_REMOVED);
                log_entry_add(&e, "LOOPD_DEVICE", "%s", j->info.path);
                log_entry_add(&e, "LOOPD_OWNER", "%u", (unsigned) j->owner);
                log_entry_add(&e, "LOOPD_REASON", "timeout");
                log_entry_send(&e, "A create for uid %u finished after its caller was told it timed out; detaching %s "
                               "again", (unsigned) j->owner, j->info.path);
                create_undo(j);
                r = -ETIMEDOUT;
        }
        if (r >= 0) {
                r = owner_store_commit_intent(ds->store, j->intent, j->info.number, j->info.diskseq);
                if (r < 0) {
                        LogEntry e = LOG_ENTRY_INIT(LOG_ERR, LOG_ID_STATE_DIR);
                        log_entry_add(&e, "ERRNO", "%d", -r);
                        log_entry_send(&e, "Cannot write an owner record to the state directory: %s; nothing was "
                                       "attached", strerror(-r));
                        create_undo(j);
                        r = DEVICES_ERROR_STATE_DIR;
                } else
                        TAKE_PTR(j->intent);
        }
        if (r >= 0) {
                /* A stale entry for this number (a uevent we have not read yet). */
                d = devices_get(ds, j->info.number);
                if (d)
                        device_drop(ds, d);
                j->info.backing_dev = j->backing_dev;
                j->info.backing_ino = j->backing_ino;
                r = device_add(ds, &j->info, j->owner, j->binding, &d);
                if (r < 0) {
                        (void) owner_store_delete(ds->store, j->info.number, j->info.diskseq);
                        create_undo(j);
                }
        }
        if (j->intent) {
                int k = owner_store_drop_intent(ds->store, j->intent);
                if (k < 0)
                        log_warning_errno(k, "Cannot remove an intent record from the state directory");
        }
        if (r < 0) {
                if (!j->answered)
                        j->done(r, NULL, -1, false, j->userdata);
                create_free(j);
                return;
        }
        if (j->keeper)
                (void) device_guard(ds, d, TAKE_PTR(j->keeper));
        else {
                /* Whatever named-user entries a crash left on this node. */
                int k = node_access_set(d->number, NODE_ACCESS_NONE, false);
                if (k < 0 && k != -ENOENT)
                        log_warning_errno(k, "Cannot check /dev/loop%" PRIu32 " for stale access", d->number);
        }
        node_pool_kick(ds->pool);
        if (ds->ev.added)
                ds->ev.added(d, ds->userdata);
        devices_emit_counts(ds);
        j->done(0, d, TAKE_FD(j->fd), j->dio_refused, j->userdata);
        create_free(j);
}

int devices_create(Devices *ds, const DeviceCreate *c, devices_create_done_t done, void *userdata) {
        CreateJob *j;
        int r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (CreateJob) { .ds = ds, .config = c->config, .owner = c->owner, .done = done, .userdata = userdata,
                           .fd = -1 };
        j->backing_fd = fcntl(c->backing_fd, F_DUPFD_CLOEXEC, 3);
        if (j->backing_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        if (c->binding && !(j->binding = strdup(c->binding))) {
                r = -ENOMEM;
                goto fail;
        }
        r = job_submit(ds->jobs, c->owner, ds->kernel_timeout_usec, create_run, create_expired, create_done, j);
        if (r < 0)
                goto fail;
        return 0;
fail:
        create_free(j);
        return r;
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

        if (!j->ld) {
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

static int op_submit(Devices *ds, Device *d, uid_t uid, OpKind kind, int flags, LoopDevice *ld,
                     devices_op_done_t done, void *userdata) {
        OpJob *j;
        int r;

        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (OpJob) { .ds = ds, .kind = kind, .number = d->number, .diskseq = d->diskseq, .ld = ld,
                       .flags = flags, .done = done, .userdata = userdata };
        r = job_submit(ds->jobs, uid, ds->kernel_timeout_usec, op_run, op_expired, op_done, j);
        if (r < 0)
                free(j);
        return r;
}

int devices_remove(Devices *ds, Device *d, uid_t uid, devices_op_done_t done, void *userdata) {
        LoopDevice *keeper;
        int r;

        if (d->busy)
                return -EBUSY;
        /* Access goes first: from the detach on, the attachment may end at
         * any close, and the owner must not be able to open the node then. */
        keeper = device_unguard(ds, d);
        r = op_submit(ds, d, uid, OP_REMOVE, 0, keeper, done, userdata);
        if (r < 0) {
                if (keeper)
                        (void) device_guard(ds, d, keeper);
                return r;
        }
        d->busy = true;
        return 0;
}

int devices_refresh_size(Devices *ds, Device *d, uid_t uid, devices_op_done_t done, void *userdata) {
        return op_submit(ds, d, uid, OP_REFRESH, 0, NULL, done, userdata);
}

int devices_open(Devices *ds, Device *d, uid_t uid, int flags, devices_op_done_t done, void *userdata) {
        if (d->info.flags & LO_FLAGS_READ_ONLY)
                flags = O_RDONLY;
        return op_submit(ds, d, uid, OP_OPEN, flags, NULL, done, userdata);
}

/* ---- background: identities and keepers of devices found --------------------------------- */

typedef struct BackgroundJob {
        Devices *ds;
        bool keeper; /* else: identity */
        uint32_t number;
        uint64_t diskseq;
        LoopDevice *ld;
        LoopInfo info;
        int r;
} BackgroundJob;

static void background_run(void *data) {
        BackgroundJob *j = data;

        j->r = loop_device_open_number(j->number, j->diskseq, O_RDONLY, &j->ld);
        if (j->r < 0 || j->keeper)
                return;
        j->r = loop_device_read_info(j->ld, &j->info);
        j->ld = loop_device_free(j->ld);
}

/* An interrupted create's intent names this device's backing file: it is
 * that create's device. */
static void adopt(Devices *ds, Device *d) {
        for (size_t k = 0; k < ds->n_intents; k++) {
                OwnerIntent *it = &ds->intents[k];
                if (d->owner != UID_INVALID || it->backing_dev != d->info.backing_dev ||
                    it->backing_ino != d->info.backing_ino)
                        continue;
                OwnerRecord rec = { .number = d->number, .diskseq = d->diskseq, .uid = it->uid,
                                    .bound_to = it->bound_to, .backing_dev = it->backing_dev,
                                    .backing_ino = it->backing_ino };
                if (owner_store_put(ds->store, &rec) < 0)
                        continue;
                d->owner = it->uid;
                d->binding = TAKE_PTR(it->bound_to);
                if (d->binding)
                        ds->n_bound++;
                (void) owner_store_drop_intent(ds->store, it->id);
                owner_intent_done(it);
                *it = ds->intents[--ds->n_intents];
                LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_RECONCILED);
                log_entry_add(&e, "LOOPD_DEVICE", "%s", d->info.path);
                log_entry_add(&e, "LOOPD_DISKSEQ", "%" PRIu64, d->diskseq);
                log_entry_add(&e, "LOOPD_OWNER", "%u", (unsigned) d->owner);
                log_entry_send(&e, "Adopted %s for uid %u: its create was interrupted before loopd recorded it",
                               d->info.path, (unsigned) d->owner);
                device_emit_changed(ds, d, DEVICE_CHANGED_OWNER);
                devices_emit_counts(ds);
                return;
        }
}

#define IDENTITY_IN_FLIGHT 2

static void identity_pump(Devices *ds);

static void background_done(void *data, JobResult result) {
        _cleanup_(freep) BackgroundJob *j = data;
        Device *d = devices_get_attachment(j->ds, j->number, j->diskseq);

        if (d && j->keeper)
                d->keeper_pending = false;
        else if (d)
                d->identity_pending = false;
        if (j->keeper) {
                if (d && j->r >= 0 && !d->guarded && !d->detach_pending &&
                    device_wants_guard(d->owner, d->info.flags)) {
                        (void) device_guard(j->ds, d, TAKE_PTR(j->ld));
                        return;
                }
                release(j->ds, j->ds->jobs, j->number, j->diskseq, TAKE_PTR(j->ld), -1, false);
                return;
        }
        if (j->r < 0)
                log_debug_errno(j->r, "Cannot read the backing identity of loop%" PRIu32, j->number);
        if (d && j->r >= 0 && j->info.bound &&
            (d->info.backing_dev != j->info.backing_dev || d->info.backing_ino != j->info.backing_ino)) {
                d->info.backing_dev = j->info.backing_dev;
                d->info.backing_ino = j->info.backing_ino;
                device_emit_changed(j->ds, d, DEVICE_CHANGED_IDENTITY);
                adopt(j->ds, d);
        }
        loop_info_done(&j->info);
        /* After adopting: the next read, or the end of the intents. */
        j->ds->identity_in_flight--;
        if (!j->ds->freeing)
                identity_pump(j->ds);
}

static int background_submit(Devices *ds, Device *d, bool keeper) {
        BackgroundJob *j = calloc(1, sizeof(*j));
        int r;

        if (!j)
                return -ENOMEM;
        *j = (BackgroundJob) { .ds = ds, .keeper = keeper, .number = d->number, .diskseq = d->diskseq };
        r = job_submit(ds->jobs, DEVICES_JOB_OWNER, 0, background_run, NULL, background_done, j);
        if (r < 0) {
                free(j); /* keepers: the next poll asks again */
                return r;
        }
        if (keeper)
                d->keeper_pending = true;
        else {
                d->identity_pending = true;
                ds->identity_in_flight++;
        }
        return 0;
}

/* Interrupted creates' intents name no device once every identity is
 * known (or could not be read): they made none. */
static void drop_unmatched_intents(Devices *ds) {
        for (size_t k = 0; k < ds->n_intents; k++) {
                int r = owner_store_drop_intent(ds->store, ds->intents[k].id);
                if (r < 0)
                        log_warning_errno(r, "Cannot remove a stale intent record");
                else {
                        LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_RECONCILED);
                        log_entry_add(&e, "LOOPD_OWNER", "%u", (unsigned) ds->intents[k].uid);
                        log_entry_send(&e, "An interrupted create of uid %u attached nothing; its intent record is "
                                       "dropped", (unsigned) ds->intents[k].uid);
                }
        }
        owner_intents_free(ds->intents, ds->n_intents);
        ds->intents = NULL;
        ds->n_intents = 0;
}

static void identity_pump(Devices *ds) {
        while (ds->identity_in_flight < IDENTITY_IN_FLIGHT && ds->n_identity_queue > 0) {
                struct IdentityWanted w = ds->identity_queue[--ds->n_identity_queue];
                Device *d = devices_get_attachment(ds, w.number, w.diskseq);

                if (!d || d->identity_pending || d->info.backing_dev != 0)
                        continue;
                if (background_submit(ds, d, false) < 0)
                        break; /* the next poll asks again */
        }
        if (ds->n_identity_queue == 0) {
                free(ds->identity_queue);
                ds->identity_queue = NULL;
        }
        if (ds->identity_in_flight == 0 && ds->n_identity_queue == 0 && ds->n_intents > 0)
                drop_unmatched_intents(ds);
}

void devices_read_identity(Devices *ds, Device *d) {
        struct IdentityWanted *q;

        if (!d->identity_pending) {
                q = reallocarray(ds->identity_queue, ds->n_identity_queue + 1, sizeof(*q));
                if (q) {
                        ds->identity_queue = q;
                        q[ds->n_identity_queue++] = (struct IdentityWanted) { d->number, d->diskseq };
                }
        }
        identity_pump(ds);
}

void devices_take_keeper(Devices *ds, Device *d) {
        if (!d->keeper_pending)
                background_submit(ds, d, true);
}

void devices_read_identity_pump(Devices *ds) {
        identity_pump(ds);
}
