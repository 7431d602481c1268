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

/* ---- at start: records, stale access, keepers systemd kept -------------------------------- */

/* Named-user ACL entries that loopd may have left on loop nodes (a crash,
 * or a node detached and reused while loopd was not running) go before
 * anything is served: loopd grants an entry only to a device its records
 * name, and deletes a record only after the entry is gone, so the nodes
 * our records name (current or stale) are where ours can be. Entries on
 * other nodes are not ours (an admin's setfacl; another loopd on the same
 * kernel, as in a container) and stay; a create strips whatever a node it
 * takes carries anyway. Guards are granted again once their keepers are
 * held. */
static bool number_in(const uint32_t *v, size_t n, uint32_t number) {
        for (size_t i = 0; i < n; i++)
                if (v[i] == number)
                        return true;
        return false;
}

/* ours NULL: every node. */
static void strip_stale_access(Devices *ds, const uint32_t *ours, size_t n_ours) {
        _cleanup_(freep) uint32_t *numbers = NULL;
        int n = loop_list_numbers(&numbers);

        for (int k = 0; k < n; k++) {
                char name[32];
                uid_t users[4];
                int m, r;

                (void) snprintf(name, sizeof(name), "loop%" PRIu32, numbers[k]);
                m = node_access_get(name, users, NULL, ELEMENTSOF(users));
                if (m <= 0)
                        continue;
                if (ours && !number_in(ours, n_ours, numbers[k]))
                        continue;
                r = node_access_set(numbers[k], NODE_ACCESS_NONE, false);
                if (r < 0) {
                        log_error_errno(r, "Cannot strip the stale access of uid %u to /dev/%s", (unsigned) users[0],
                                        name);
                        continue;
                }
                LogEntry e = LOG_ENTRY_INIT(LOG_NOTICE, LOG_ID_RECONCILED);
                log_entry_add(&e, "LOOPD_DEVICE", "/dev/%s", name);
                log_entry_add(&e, "LOOPD_OWNER", "%u", (unsigned) users[0]);
                log_entry_send(&e, "Withdrew uid %u's stale access to /dev/%s (left from before loopd started)",
                               (unsigned) users[0], name);
        }
}

/* The kernel's attachments, with the owners our records give. */
static int reconcile_records(Devices *ds) {
        OwnerRecord *recs = NULL;
        size_t nr = 0;
        int r;

        r = owner_store_load(ds->store, &recs, &nr, &ds->intents, &ds->n_intents);
        if (r < 0)
                return r;
        devices_sync(ds, UINT32_MAX);
        for (size_t k = 0; k < nr; k++) {
                Device *d = devices_get_attachment(ds, recs[k].number, recs[k].diskseq);
                LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_RECONCILED);

                log_entry_add(&e, "LOOPD_DEVICE", "/dev/loop%" PRIu32, recs[k].number);
                log_entry_add(&e, "LOOPD_DISKSEQ", "%" PRIu64, recs[k].diskseq);
                log_entry_add(&e, "LOOPD_OWNER", "%u", (unsigned) recs[k].uid);
                if (!d) {
                        /* Its device is gone (or is another attachment now). */
                        r = owner_store_delete(ds->store, recs[k].number, recs[k].diskseq);
                        if (r < 0)
                                log_warning_errno(r, "Cannot delete a stale owner record");
                        log_entry_send(&e, "loop%" PRIu32 " of uid %u went while loopd was not running; record "
                                       "forgotten", recs[k].number, (unsigned) recs[k].uid);
                        continue;
                }
                d->owner = recs[k].uid;
                free(d->binding);
                d->binding = TAKE_PTR(recs[k].bound_to);
                if (d->binding)
                        ds->n_bound++;
                d->info.backing_dev = recs[k].backing_dev;
                d->info.backing_ino = recs[k].backing_ino;
                log_entry_send(&e, "Found %s of uid %u again%s", d->info.path, (unsigned) d->owner,
                               d->binding ? ", bound to a caller" : "");
        }
        {
                _cleanup_(freep) uint32_t *ours = calloc(nr ? nr : 1, sizeof(uint32_t));
                for (size_t k = 0; ours && k < nr; k++)
                        ours[k] = recs[k].number;
                owner_records_free(recs, nr);
                if (ours)
                        strip_stale_access(ds, ours, nr);
                else {
                        /* Without the list: every node, as the safe side. */
                        log_error("Out of memory listing owner records; withdrawing every named user's access to "
                                  "loop nodes");
                        strip_stale_access(ds, NULL, 0);
                }
        }
        return 0;
}

/* Keepers systemd held while loopd was gone: a device still attached under
 * the same diskseq, owned and to be guarded, is guarded with its own again
 * (a detach asked meanwhile left it autoclear: not to be guarded, let go,
 * and the kernel ends it). Every other copy leaves the store. */
static void take_back_keepers(Devices *ds, StoredKeeper *k, size_t n) {
        size_t guarded = 0;

        for (size_t i = 0; i < n; i++) {
                Device *d = devices_get_attachment(ds, k[i].number, k[i].diskseq);
                LoopDevice *keeper = NULL;
                int r;

                r = loop_device_adopt_fd(TAKE_FD(k[i].fd), k[i].number, k[i].diskseq, &keeper);
                if (r >= 0 && d && !d->guarded && !d->detach_pending && device_wants_guard(d->owner, d->info.flags)) {
                        if (device_guard(ds, d, keeper) >= 0)
                                guarded++;
                        continue;
                }
                fd_store_forget(k[i].number, k[i].diskseq);
                if (keeper)
                        devices_release(ds, ds->jobs, d ? d->owner : DEVICES_JOB_OWNER, k[i].number, k[i].diskseq,
                                        keeper, -1, false);
        }
        if (n > 0) {
                LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_RECONCILED);
                log_entry_add(&e, "LOOPD_KEEPERS", "%zu", n);
                log_entry_send(&e, "systemd kept %zu keepers while loopd was gone; %zu devices guarded with them "
                               "again, the others let go", n, guarded);
        }
}

int devices_reconcile(Devices *ds, StoredKeeper *stored, size_t n_stored) {
        int r = reconcile_records(ds);

        if (r < 0) {
                stored_keepers_free(stored, n_stored);
                return r;
        }
        take_back_keepers(ds, stored, n_stored);
        free(stored);
        return 0;
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
                devices_release(j->ds, j->ds->jobs, d ? d->owner : DEVICES_JOB_OWNER, j->number, j->diskseq, TAKE_PTR(j->ld),
                                -1, false);
                return;
        }
        if (j->r < 0)
                log_debug_errno(j->r, "Cannot read the backing identity of loop%" PRIu32, j->number);
        if (d && j->r >= 0)
                device_take_name_reading(j->ds, d, &j->info);
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

