/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "devices-internal.h"
#include "escape.h"
#include "log.h"
#include "node-access.h"


/* ---- the table ------------------------------------------------------------ */

static void device_free(Device *d) {
        if (!d)
                return;
        loop_info_done(&d->info);
        loop_device_free(d->keeper);
        free(d->binding);
        free(d);
}

static int slot_reserve(Devices *ds, uint32_t number) {
        Device **n;
        uint64_t *e;
        size_t want;

        if (number < ds->n_slots)
                return 0;
        want = ds->n_slots ? ds->n_slots : 16;
        while (want <= number)
                want *= 2;
        n = reallocarray(ds->by_number, want, sizeof(Device *));
        if (!n)
                return -ENOMEM;
        ds->by_number = n;
        e = reallocarray(ds->ended, want, sizeof(uint64_t));
        if (!e)
                return -ENOMEM; /* by_number is only longer than needed */
        ds->ended = e;
        memset(n + ds->n_slots, 0, (want - ds->n_slots) * sizeof(Device *));
        memset(e + ds->n_slots, 0, (want - ds->n_slots) * sizeof(uint64_t));
        ds->n_slots = want;
        return 0;
}

Device *devices_get(Devices *ds, uint32_t number) {
        return number < ds->n_slots ? ds->by_number[number] : NULL;
}

Device *devices_get_attachment(Devices *ds, uint32_t number, uint64_t diskseq) {
        Device *d = devices_get(ds, number);
        return d && d->diskseq == diskseq ? d : NULL;
}

Device *devices_get_fresh(Devices *ds, uint32_t number) {
        Device *d = devices_get(ds, number);
        uint64_t seq;

        /* Two sysfs reads tell whether what we know is still the current
         * attachment; only a difference (a uevent not read yet) costs a
         * full re-read. */
        if (d && loop_attachment_current(number, &seq) == 1 && seq == d->diskseq)
                return d;
        devices_sync(ds, number);
        return devices_get(ds, number);
}

Device *devices_next(Devices *ds, size_t *iter) {
        while (*iter < ds->n_slots) {
                Device *d = ds->by_number[(*iter)++];
                if (d)
                        return d;
        }
        return NULL;
}

size_t devices_count(Devices *ds) {
        return ds->n_devices;
}

size_t devices_count_bound(Devices *ds) {
        return ds->n_bound;
}

size_t devices_count_guarded(Devices *ds) {
        return ds->n_guarded;
}

unsigned devices_quota(Devices *ds) {
        return ds->quota;
}

size_t devices_count_owned(Devices *ds, uid_t uid) {
        size_t n = 0, i = 0;

        /* A device whose detach the kernel deferred still counts: its owner
         * keeps using it until the last close. */
        for (Device *d; (d = devices_next(ds, &i));)
                if (d->owner == uid)
                        n++;
        return n;
}

void devices_emit_counts(Devices *ds) {
        if (ds->ev.counts_changed)
                ds->ev.counts_changed(ds->userdata);
}

void device_emit_changed(Devices *ds, Device *d, unsigned what) {
        if (ds->ev.changed)
                ds->ev.changed(d, what, ds->userdata);
}

int device_add(Devices *ds, LoopInfo *info, uid_t owner, const char *binding, Device **ret) {
        Device *d;
        int r;

        r = slot_reserve(ds, info->number);
        if (r < 0)
                return r;
        assert(!ds->by_number[info->number]);
        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        if (binding) {
                d->binding = strdup(binding);
                if (!d->binding) {
                        free(d);
                        return -ENOMEM;
                }
                ds->n_bound++;
        }
        d->number = info->number;
        d->diskseq = info->diskseq;
        d->owner = owner;
        d->watch = -1;
        d->info = *info; /* takes the strings */
        *info = (LoopInfo) { 0 };
        d->info_usec = now_usec();
        ds->by_number[d->number] = d;
        ds->n_devices++;
        *ret = d;
        return 0;
}

void device_drop(Devices *ds, Device *d) {
        LoopDevice *keeper;
        int r;

        if (ds->ev.removed)
                ds->ev.removed(d, ds->userdata);
        /* Only reached with a keeper when the kernel says the attachment is
         * gone, which a keeper prevents: let go of it all the same. */
        keeper = device_unguard(ds, d);
        if (keeper)
                devices_release_keeper(ds, d->owner, d->number, d->diskseq, keeper, false);
        if (d->owner != UID_INVALID) {
                r = owner_store_delete(ds->store, d->number, d->diskseq);
                if (r < 0)
                        log_warning_errno(r, "Cannot delete the owner record of loop%" PRIu32 "-%" PRIu64
                                          " from the state directory", d->number, d->diskseq);
        }
        if (d->diskseq > ds->ended[d->number])
                ds->ended[d->number] = d->diskseq;
        if (d->binding)
                ds->n_bound--;
        ds->by_number[d->number] = NULL;
        ds->n_devices--;
        device_free(d);
        devices_emit_counts(ds);
}

/* ---- creates in flight --------------------------------------------------------- */

int devices_claim_node(Devices *ds, uint32_t number) {
        struct NodeClaim *c;
        int r = 0;

        pthread_mutex_lock(&ds->claims_lock);
        c = reallocarray(ds->claims, ds->n_claims + 1, sizeof(*c));
        if (!c)
                r = -ENOMEM;
        else {
                ds->claims = c;
                ds->claims[ds->n_claims++] = (struct NodeClaim) { .number = number };
        }
        pthread_mutex_unlock(&ds->claims_lock);
        return r;
}

bool devices_unclaim_node(Devices *ds, uint32_t number, uint64_t diskseq, uint64_t seen_seqnum) {
        bool again = false;

        pthread_mutex_lock(&ds->claims_lock);
        for (size_t i = 0; i < ds->n_claims; i++)
                if (ds->claims[i].number == number) {
                        struct NodeClaim *c = &ds->claims[i];
                        /* The attach's own uevent came before the create read
                         * the new attachment back: nothing new in it. */
                        again = c->deferred && (diskseq == 0 || c->deferred_unknown ||
                                                c->deferred_diskseq != diskseq || c->deferred_seqnum > seen_seqnum);
                        *c = ds->claims[--ds->n_claims];
                        break;
                }
        pthread_mutex_unlock(&ds->claims_lock);
        return again;
}

/* Is a create configuring this node? Then what is found there waits. */
static bool node_claimed_defer(Devices *ds, uint32_t number, bool defer) {
        bool found = false;

        pthread_mutex_lock(&ds->claims_lock);
        for (size_t i = 0; i < ds->n_claims; i++)
                if (ds->claims[i].number == number) {
                        found = true;
                        if (defer)
                                ds->claims[i].deferred = ds->claims[i].deferred_unknown = true;
                        break;
                }
        pthread_mutex_unlock(&ds->claims_lock);
        return found;
}

/* A uevent for a claimed node: put off without reading sysfs, remembered
 * so that the create's completion can tell whether its own reading covers
 * it. */
static bool node_claimed_defer_uevent(Devices *ds, uint32_t number, uint64_t diskseq, uint64_t seqnum) {
        bool found = false;

        pthread_mutex_lock(&ds->claims_lock);
        for (size_t i = 0; i < ds->n_claims; i++)
                if (ds->claims[i].number == number) {
                        struct NodeClaim *c = &ds->claims[i];

                        found = c->deferred = true;
                        if (diskseq == 0 || seqnum == 0)
                                c->deferred_unknown = true;
                        if (diskseq > c->deferred_diskseq)
                                c->deferred_diskseq = diskseq;
                        if (seqnum > c->deferred_seqnum)
                                c->deferred_seqnum = seqnum;
                        break;
                }
        pthread_mutex_unlock(&ds->claims_lock);
        return found;
}

/* sysfs shows an unlinked file's name with " (deleted)" appended, and a live
 * file's name may end so too; only a read with the inode in hand (on a job)
 * tells them apart. The kernel's text unchanged means the state unchanged:
 * keep the reading we have. */
static bool same_kernel_text(const LoopInfo *a, const LoopInfo *b) {
        static const char mark[] = " (deleted)";
        size_t la, lb;

        if (!a->backing_file || !b->backing_file)
                return false;
        la = strlen(a->backing_file);
        lb = strlen(b->backing_file);
        if (a->backing_deleted == b->backing_deleted)
                return la == lb && memcmp(a->backing_file, b->backing_file, la) == 0;
        if (b->backing_deleted)
                return same_kernel_text(b, a);
        /* a carries the mark, b's name ends with it */
        return lb == la + sizeof(mark) - 1 && memcmp(a->backing_file, b->backing_file, la) == 0 &&
               memcmp(b->backing_file + la, mark, sizeof(mark) - 1) == 0;
}

static void keep_name_reading(LoopInfo *info, const LoopInfo *known) {
        char *name;

        if (info->backing_deleted == known->backing_deleted || !same_kernel_text(info, known))
                return;
        name = strdup(known->backing_file);
        if (!name)
                return; /* the sysfs reading stays: wrong about one name, never unsafe */
        free(info->backing_file);
        info->backing_file = name;
        info->backing_deleted = known->backing_deleted;
}

void device_take_name_reading(Devices *ds, Device *d, const LoopInfo *read) {
        if (!read->bound || read->diskseq != d->diskseq || read->backing_deleted == d->info.backing_deleted)
                return;
        keep_name_reading(&d->info, read);
        if (d->info.backing_deleted == read->backing_deleted)
                device_emit_changed(ds, d, DEVICE_CHANGED_INFO);
}

/* ---- following the kernel ----------------------------------------------------- */

static bool info_equal(const LoopInfo *a, const LoopInfo *b) {
        return a->size == b->size && a->offset == b->offset && a->size_limit == b->size_limit &&
               a->block_size == b->block_size && a->flags == b->flags &&
               a->backing_deleted == b->backing_deleted && streq_ptr(a->backing_file, b->backing_file);
}

/* An owned autoclear device has no keeper to prove that a new diskseq is
 * the same attachment after LOOP_CHANGE_FD rather than a detach and a new
 * attachment by someone else. The shape tells: LOOP_CHANGE_FD works on
 * read-only devices only and keeps flags (but direct I/O, re-decided for
 * the new file), offset, size limit and block size; a new attachment made
 * through loopd is claimed and never gets here; one made with the same
 * read-only autoclear shape by root's losetup on the very node meanwhile is
 * charged to the old owner until it goes, the safe mistake. */
static bool swapped_in_place(const Device *d, const LoopInfo *now) {
        const uint32_t keep = ~(uint32_t) LO_FLAGS_DIRECT_IO;

        return d->owner != 0 && d->owner != UID_INVALID && (d->info.flags & LO_FLAGS_AUTOCLEAR) &&
               (d->info.flags & LO_FLAGS_READ_ONLY) && (now->flags & keep) == (d->info.flags & keep) &&
               now->offset == d->info.offset && now->size_limit == d->info.size_limit &&
               now->block_size == d->info.block_size;
}

static void sync_one(Devices *ds, uint32_t number) {
        Device *d = devices_get(ds, number);
        LoopInfo info = { 0 };
        int r;

        r = loop_info_read_sysfs(number, &info);
        if (r < 0 && r != -ENODEV) {
                /* Could not look (out of fds, say): what we know stands. */
                log_warning_errno(r, "Cannot read the state of loop%" PRIu32 " from sysfs", number);
                loop_info_done(&info);
                return;
        }
        if (r < 0 || !info.bound || info.diskseq == 0) {
                loop_info_done(&info);
                if (d)
                        device_drop(ds, d);
                return;
        }
        if (d && d->diskseq != info.diskseq) {
                if (d->guarded || (swapped_in_place(d, &info) && !node_claimed_defer(ds, number, false))) {
                        device_backing_changed(ds, d, &info);
                        loop_info_done(&info);
                        return;
                }
                device_drop(ds, d);
                d = NULL;
        }
        if (!d && node_claimed_defer(ds, number, true)) {
                /* A create's own attachment: its completion adds it. */
                loop_info_done(&info);
                return;
        }
        if (!d) {
                r = device_add(ds, &info, UID_INVALID, NULL, &d);
                if (r < 0) {
                        loop_info_done(&info);
                        log_error_errno(r, "Cannot follow loop%" PRIu32, number);
                        return;
                }
                if (ds->ev.added)
                        ds->ev.added(d, ds->userdata);
                devices_emit_counts(ds);
                devices_read_identity(ds, d);
                return;
        }
        info.backing_dev = d->info.backing_dev;
        info.backing_ino = d->info.backing_ino;
        keep_name_reading(&info, &d->info);
        d->info_usec = now_usec();
        if (info_equal(&info, &d->info)) {
                d->info.uevent_seqnum = info.uevent_seqnum;
                loop_info_done(&info);
                return;
        }
        loop_info_done(&d->info);
        d->info = info;
        device_emit_changed(ds, d, DEVICE_CHANGED_INFO);
}

void devices_sync(Devices *ds, uint32_t number) {
        _cleanup_(freep) uint32_t *numbers = NULL;
        int n;

        if (number != UINT32_MAX) {
                sync_one(ds, number);
                return;
        }
        n = loop_list_numbers(&numbers);
        if (n < 0) {
                log_error_errno(n, "Cannot list loop devices in /sys/block");
                return;
        }
        /* Nodes that vanished altogether first, then every node there is. */
        for (size_t i = 0; i < ds->n_slots; i++) {
                bool present = false;
                if (!ds->by_number[i])
                        continue;
                for (int k = 0; k < n && !present; k++)
                        present = numbers[k] == i;
                if (!present)
                        device_drop(ds, ds->by_number[i]);
        }
        for (int k = 0; k < n; k++)
                sync_one(ds, numbers[k]);
}

void devices_uevent(Devices *ds, uint32_t number, uint64_t diskseq, uint64_t seqnum) {
        Device *d = devices_get(ds, number);

        /* Skipping is what keeps our own create and remove from costing a
         * second full read each: LOOP_CONFIGURE sends one change event and a
         * detach two, all with the attachment's diskseq (seen on 6.18). */
        if (number != UINT32_MAX && diskseq != 0) {
                /* The kernel's diskseq only grows: a new attachment always
                 * carries a larger one than any before it on any node. */
                if (d ? diskseq < d->diskseq : number < ds->n_slots && diskseq <= ds->ended[number])
                        return;
                if (d && diskseq == d->diskseq && seqnum != 0 && seqnum <= d->info.uevent_seqnum)
                        return;
        }
        if (number != UINT32_MAX && !d && node_claimed_defer_uevent(ds, number, diskseq, seqnum))
                return;
        devices_sync(ds, number);
        if (number != UINT32_MAX && (d = devices_get(ds, number)))
                device_guard_check(ds, d);
}

Device *devices_refresh(Devices *ds, Device *d, uint64_t max_age_usec) {
        uint32_t number = d->number;
        uint64_t diskseq = d->diskseq;

        if (now_usec() - d->info_usec <= max_age_usec)
                return d;
        sync_one(ds, number);
        return devices_get_attachment(ds, number, diskseq);
}

static void background(Devices *ds, Device *d);

static int on_poll(sd_event_source *s, uint64_t usec, void *userdata) {
        Devices *ds = userdata;
        size_t i = 0;

        for (Device *d; (d = devices_next(ds, &i));) {
                if (!devices_refresh(ds, d, POLL_INTERVAL_USEC / 2))
                        continue; /* ended: dropped */
                device_guard_check(ds, d);
                background(ds, d);
        }
        (void) sd_event_source_set_time_relative(s, POLL_INTERVAL_USEC);
        return 0;
}

/* ---- start ------------------------------------------------------------------ */

int devices_new(sd_event *e, JobPool *jobs, const DevicesOptions *o, const DeviceEvents *ev, void *userdata,
                Devices **ret) {
        _cleanup_(devices_freep) Devices *ds = NULL;
        StoredKeeper *stored = o->stored;
        size_t n_stored = o->n_stored;
        int r;

        ds = calloc(1, sizeof(*ds));
        if (!ds) {
                stored_keepers_free(stored, n_stored);
                return -ENOMEM;
        }
        ds->event = sd_event_ref(e);
        ds->jobs = jobs;
        ds->control_fd = ds->inotify_fd = -1;
        pthread_mutex_init(&ds->claims_lock, NULL);
        pthread_mutex_init(&ds->create_lock, NULL);
        ds->quota = o->quota;
        ds->kernel_timeout_usec = o->kernel_timeout_usec;
        r = loop_control_open();
        if (r < 0)
                goto fail;
        ds->control_fd = r;
        ds->inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (ds->inotify_fd < 0) {
                r = negative_errno();
                goto fail;
        }
        r = sd_event_add_io(e, &ds->inotify_source, ds->inotify_fd, EPOLLIN, devices_on_node_closed, ds);
        if (r < 0)
                goto fail;
        r = owner_store_open(o->state_dir, &ds->store);
        if (r < 0)
                goto fail;
        r = devices_reconcile(ds, TAKE_PTR(stored), n_stored);
        n_stored = 0;
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(e, &ds->poll_timer, CLOCK_MONOTONIC, POLL_INTERVAL_USEC, 0, on_poll, ds);
        if (r < 0)
                goto fail;
        (void) sd_event_source_set_enabled(ds->poll_timer, SD_EVENT_ON);
        /* Events only from now on: what we found is the initial state. */
        if (ev)
                ds->ev = *ev;
        ds->userdata = userdata;
        r = node_pool_new(ds->control_fd, o->min_spare_nodes, o->max_spare_nodes, &ds->pool);
        if (r < 0)
                goto fail;
        *ret = TAKE_PTR(ds);
        return 0;
fail:
        stored_keepers_free(stored, n_stored);
        return r;
}

/* Background work for d, unless under way: its identity, its keeper. A
 * job the pool refuses now (its limit for loopd's own jobs) is asked again
 * at the next poll. */
static void background(Devices *ds, Device *d) {
        if (d->info.backing_dev == 0 && !d->identity_pending)
                devices_read_identity(ds, d);
        if (device_wants_guard(d->owner, d->info.flags) && !d->guarded && !d->keeper_pending && !d->detach_pending)
                devices_take_keeper(ds, d);
}

void devices_start_background(Devices *ds) {
        size_t i = 0;

        for (Device *d; (d = devices_next(ds, &i));)
                background(ds, d);
        /* With nothing to read, intents are resolved at once. */
        devices_read_identity_pump(ds);
}

void devices_shutdown(Devices *ds) {
        ds->freeing = true;
        ds->ev = (DeviceEvents) { 0 };
        for (size_t i = 0; i < ds->n_slots; i++) {
                Device *d = ds->by_number[i];
                LoopDevice *keeper;

                if (!d)
                        continue;
                keeper = device_unguard(ds, d);
                if (keeper)
                        devices_release_keeper(ds, d->owner, d->number, d->diskseq, keeper, false);
        }
}

Devices *devices_free(Devices *ds) {
        if (!ds)
                return NULL;
        if (!ds->freeing)
                devices_shutdown(ds);
        node_pool_free(ds->pool); /* before the control fd it uses */
        for (size_t i = 0; i < ds->n_slots; i++)
                device_free(ds->by_number[i]);
        free(ds->by_number);
        free(ds->ended);
        uid_counts_clear(&ds->reserved);
        owner_intents_free(ds->intents, ds->n_intents);
        free(ds->identity_queue);
        free(ds->claims);
        pthread_mutex_destroy(&ds->claims_lock);
        pthread_mutex_destroy(&ds->create_lock);
        owner_store_free(ds->store);
        sd_event_source_disable_unref(ds->poll_timer);
        sd_event_source_disable_unref(ds->inotify_source);
        safe_close(ds->inotify_fd);
        safe_close(ds->control_fd);
        sd_event_unref(ds->event);
        free(ds);
        return NULL;
}

