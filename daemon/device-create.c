/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
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

#define CREATE_LOCK_WAIT_USEC 5000L

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
        /* Every node it claimed (devices_claim_node()), to let go of when done. */
        uint32_t claimed[LOOP_CREATE_MAX_ATTEMPTS];
        size_t n_claimed;
        /* Results. */
        int r;
        int store_errno;
        LoopInfo info;
        int fd;
        LoopDevice *keeper;
        bool dio_refused;
} CreateJob;

static void create_claim(uint32_t number, void *userdata) {
        CreateJob *j = userdata;

        if (j->n_claimed < ELEMENTSOF(j->claimed) && devices_claim_node(j->ds, number) >= 0)
                j->claimed[j->n_claimed++] = number;
}

/* On the event loop, once the job's result is in the model (or undone): the
 * nodes it tried are anybody's again, and one whose state was put off for
 * the claim is read now. */
/* made: the attachment the create added (its number, diskseq and the
 * uevent seqnum it was read at), or NULL. */
static void create_unclaim(CreateJob *j, const LoopInfo *made) {
        for (size_t i = 0; i < j->n_claimed; i++) {
                bool here = made && made->number == j->claimed[i];
                if (devices_unclaim_node(j->ds, j->claimed[i], here ? made->diskseq : 0,
                                         here ? made->uevent_seqnum : 0) &&
                    !j->ds->freeing)
                        devices_sync(j->ds, j->claimed[i]);
        }
        j->n_claimed = 0;
}

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
        struct timespec until = realtime_after_usec(CREATE_LOCK_WAIT_USEC);
        bool locked = pthread_mutex_timedlock(&j->ds->create_lock, &until) == 0;
        j->r = loop_device_create_checked(j->ds->control_fd, j->backing_fd, &j->config, flags, create_claim, j,
                                          &ld);
        if (locked)
                pthread_mutex_unlock(&j->ds->create_lock);
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
        devices_release(j->ds, j->ds->jobs, j->owner, j->info.number, j->info.diskseq, TAKE_PTR(j->keeper),
                        TAKE_FD(j->fd), true);
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
                } else {
                        /* The intent is the record now: nothing to drop. */
                        free(j->intent);
                        j->intent = NULL;
                }
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
                create_unclaim(j, NULL);
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
        LoopInfo made = { .number = d->number, .diskseq = d->diskseq, .uevent_seqnum = d->info.uevent_seqnum };
        j->done(0, d, TAKE_FD(j->fd), j->dio_refused, j->userdata);
        create_unclaim(j, &made);
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

