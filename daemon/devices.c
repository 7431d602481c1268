/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices.h"
#include "node-pool.h"
#include "owner-store.h"

struct Devices {
        int control_fd;
        OwnerStore *store;
        NodePool *pool;
        unsigned quota;
        Device **by_number; /* indexed by loop number; loop numbers are dense */
        uint64_t *ended;    /* by number: diskseq of the last attachment we saw end there */
        size_t n_slots;
        size_t n_devices;
        DeviceEvents ev;
        void *userdata;
};

static void device_free(Device *d) {
        if (!d)
                return;
        loop_info_done(&d->info);
        free(d->bound_to);
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

Device *devices_get_by_path(Devices *ds, const char *object_path) {
        unsigned number;
        unsigned long long seq;
        Device *d;
        char tail;

        if (strncmp(object_path, DEVICE_OBJECT_PREFIX, strlen(DEVICE_OBJECT_PREFIX)) != 0)
                return NULL;
        if (sscanf(object_path + strlen(DEVICE_OBJECT_PREFIX), "loop%u_%llu%c", &number, &seq, &tail) != 2)
                return NULL;
        d = devices_get(ds, number);
        if (!d || d->diskseq != seq || strcmp(d->object_path, object_path) != 0)
                return NULL;
        return d;
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

size_t devices_count_owned(Devices *ds, uid_t uid) {
        size_t n = 0, i = 0;
        /* A device whose removal the kernel deferred to its last close is
         * on its way out: it does not count against its owner any more. */
        for (Device *d; (d = devices_next(ds, &i));)
                if (d->owner == uid && !d->detach_pending)
                        n++;
        return n;
}

size_t devices_count_bound(Devices *ds) {
        size_t n = 0, i = 0;
        for (Device *d; (d = devices_next(ds, &i));)
                if (d->bound_to)
                        n++;
        return n;
}

unsigned devices_quota(Devices *ds) {
        return ds->quota;
}

/* Backing identity of a device we did not create: only the open device
 * tells it (LOOP_GET_STATUS64). Opening a bound device cannot clear it
 * unless its last opener closes meanwhile, when it was going anyway. */
static void fill_backing_identity(Device *d) {
        _cleanup_(loop_device_freep) LoopDevice *ld = NULL;
        LoopInfo info = { 0 };

        if (loop_device_open_number(d->number, d->diskseq, O_RDONLY, &ld) < 0)
                return;
        if (loop_device_read_info(ld, &info) == 0) {
                d->info.backing_dev = info.backing_dev;
                d->info.backing_ino = info.backing_ino;
        }
        loop_info_done(&info);
}

static int device_new(Devices *ds, LoopInfo *info, uid_t owner, const char *bound_to, Device **ret) {
        Device *d;
        int r;

        r = slot_reserve(ds, info->number);
        if (r < 0)
                return r;
        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        if (bound_to) {
                d->bound_to = strdup(bound_to);
                if (!d->bound_to) {
                        free(d);
                        return -ENOMEM;
                }
        }
        d->number = info->number;
        d->diskseq = info->diskseq;
        d->owner = owner;
        d->info = *info; /* takes the strings */
        *info = (LoopInfo) { 0 };
        snprintf(d->object_path, sizeof(d->object_path), DEVICE_OBJECT_PREFIX "loop%" PRIu32 "_%" PRIu64,
                 d->number, d->diskseq);
        ds->by_number[d->number] = d;
        ds->n_devices++;
        *ret = d;
        return 0;
}

static void device_drop(Devices *ds, Device *d, bool emit) {
        if (emit && ds->ev.removed)
                ds->ev.removed(d, ds->userdata);
        if (d->owner != UID_INVALID)
                (void) owner_store_delete(ds->store, d->number, d->diskseq);
        if (d->diskseq > ds->ended[d->number])
                ds->ended[d->number] = d->diskseq;
        ds->by_number[d->number] = NULL;
        ds->n_devices--;
        device_free(d);
}

static bool info_equal(const LoopInfo *a, const LoopInfo *b) {
        return a->size == b->size && a->offset == b->offset && a->size_limit == b->size_limit &&
               a->block_size == b->block_size && a->flags == b->flags &&
               a->backing_deleted == b->backing_deleted && streq_ptr(a->backing_file, b->backing_file);
}

static void sync_one(Devices *ds, uint32_t number) {
        Device *d = devices_get(ds, number);
        LoopInfo info = { 0 };
        int r;

        r = loop_info_read_sysfs(number, &info);
        if (r < 0 || !info.bound || info.diskseq == 0) {
                loop_info_done(&info);
                if (d)
                        device_drop(ds, d, true);
                return;
        }
        if (d && d->diskseq != info.diskseq) {
                device_drop(ds, d, true);
                d = NULL;
        }
        if (!d) {
                if (device_new(ds, &info, UID_INVALID, NULL, &d) < 0) {
                        loop_info_done(&info);
                        return;
                }
                fill_backing_identity(d);
                if (ds->ev.added)
                        ds->ev.added(d, ds->userdata);
                return;
        }
        info.backing_dev = d->info.backing_dev;
        info.backing_ino = d->info.backing_ino;
        if (info_equal(&info, &d->info)) {
                d->info.uevent_seqnum = info.uevent_seqnum;
                loop_info_done(&info);
                return;
        }
        loop_info_done(&d->info);
        d->info = info;
        if (ds->ev.changed)
                ds->ev.changed(d, ds->userdata);
}

void devices_sync(Devices *ds, uint32_t number) {
        _cleanup_(freep) uint32_t *numbers = NULL;
        int n;

        if (number != UINT32_MAX) {
                sync_one(ds, number);
                return;
        }
        n = loop_list_numbers(&numbers);
        if (n < 0)
                return;
        /* Nodes that vanished altogether first, then every node there is. */
        for (size_t i = 0; i < ds->n_slots; i++) {
                bool present = false;
                if (!ds->by_number[i])
                        continue;
                for (int k = 0; k < n && !present; k++)
                        present = numbers[k] == i;
                if (!present)
                        device_drop(ds, ds->by_number[i], true);
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
        devices_sync(ds, number);
}

/* At start: the kernel's attachments, with the owners our records give. */
static int reconcile(Devices *ds) {
        OwnerRecord *recs = NULL;
        OwnerIntent *ints = NULL;
        size_t nr = 0, ni = 0;
        int r;

        r = owner_store_load(ds->store, &recs, &nr, &ints, &ni);
        if (r < 0)
                return r;

        devices_sync(ds, UINT32_MAX);

        for (size_t k = 0; k < nr; k++) {
                Device *d = devices_get(ds, recs[k].number);
                if (!d || d->diskseq != recs[k].diskseq) {
                        /* Its device is gone (or is another attachment now). */
                        (void) owner_store_delete(ds->store, recs[k].number, recs[k].diskseq);
                        continue;
                }
                d->owner = recs[k].uid;
                free(d->bound_to);
                d->bound_to = TAKE_PTR(recs[k].bound_to);
        }

        /* A create killed between LOOP_CONFIGURE and its owner record:
         * adopt the unowned device bound to that backing file. */
        for (size_t k = 0; k < ni; k++) {
                size_t i = 0;
                for (Device *d; (d = devices_next(ds, &i));) {
                        if (d->owner != UID_INVALID || d->info.backing_dev != ints[k].backing_dev ||
                            d->info.backing_ino != ints[k].backing_ino || d->info.backing_dev == 0)
                                continue;
                        OwnerRecord rec = { .number = d->number, .diskseq = d->diskseq,
                                            .uid = ints[k].uid, .bound_to = ints[k].bound_to };
                        if (owner_store_put(ds->store, &rec) < 0)
                                continue;
                        d->owner = ints[k].uid;
                        d->bound_to = TAKE_PTR(ints[k].bound_to);
                        break;
                }
                (void) owner_store_drop_intent(ds->store, ints[k].id);
        }
        owner_records_free(recs, nr);
        owner_intents_free(ints, ni);
        return 0;
}

int devices_new(const DevicesOptions *o, const DeviceEvents *ev, void *userdata, Devices **ret) {
        _cleanup_(devices_freep) Devices *ds = NULL;
        int r;

        ds = calloc(1, sizeof(*ds));
        if (!ds)
                return -ENOMEM;
        ds->control_fd = -1;
        ds->quota = o->quota;
        r = loop_control_open();
        if (r < 0)
                return r;
        ds->control_fd = r;
        r = owner_store_open(o->state_dir, &ds->store);
        if (r < 0)
                return r;
        r = reconcile(ds);
        if (r < 0)
                return r;
        /* Events only from now on: what we found is the initial state. */
        if (ev)
                ds->ev = *ev;
        ds->userdata = userdata;
        r = node_pool_new(ds->control_fd, o->min_spare_nodes, o->max_spare_nodes, &ds->pool);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(ds);
        return 0;
}

Devices *devices_free(Devices *ds) {
        if (!ds)
                return NULL;
        node_pool_free(ds->pool); /* before the control fd it uses */
        for (size_t i = 0; i < ds->n_slots; i++)
                device_free(ds->by_number[i]);
        free(ds->by_number);
        free(ds->ended);
        owner_store_free(ds->store);
        safe_close(ds->control_fd);
        free(ds);
        return NULL;
}

int devices_check_backing(int backing_fd, const LoopConfig *c, LoopBacking *ret, char **ret_path) {
        uint32_t flags;
        int r;

        r = loop_config_validate(c);
        if (r < 0)
                return r;
        r = loop_backing_check(backing_fd, c, ret, &flags);
        if (r < 0)
                return r;
        if (ret_path) {
                char proc[64], buf[4096];
                ssize_t n;
                snprintf(proc, sizeof(proc), "/proc/self/fd/%d", backing_fd);
                n = readlink(proc, buf, sizeof(buf) - 1);
                buf[n > 0 ? n : 0] = 0;
                *ret_path = strdup(buf);
                if (!*ret_path)
                        return -ENOMEM;
        }
        return 0;
}

static int state_dir_error(int r) {
        if (r == -ENOMEM || r == -EINVAL)
                return r;
        fprintf(stderr, "loopd: cannot write an owner record to the state directory: %s\n", strerror(-r));
        return DEVICES_ERROR_STATE_DIR;
}

int devices_create(Devices *ds, int backing_fd, const LoopBacking *backing, const LoopConfig *c, uid_t owner,
                   const char *bound_to, Device **ret, int *ret_fd) {
        _cleanup_(loop_device_freep) LoopDevice *ld = NULL;
        _cleanup_(freep) char *intent = NULL;
        _cleanup_(closep) int fd = -1;
        LoopInfo info = { 0 };
        Device *d;
        int r;

        if (owner != 0 && devices_count_owned(ds, owner) >= ds->quota)
                return -EDQUOT;

        OwnerIntent it = { .backing_dev = backing->st_dev, .backing_ino = backing->st_ino,
                           .uid = owner, .bound_to = (char *) bound_to };
        r = owner_store_put_intent(ds->store, &it, &intent);
        if (r < 0)
                return state_dir_error(r);

        r = loop_device_create(ds->control_fd, backing_fd, c, &ld);
        if (r < 0)
                goto fail;
        /* sysfs, plus the identity we took with statx: LOOP_GET_STATUS64
         * would stat the backing file again, and on FUSE that asks the
         * caller's file server (which could stall us). */
        r = loop_device_take_created_info(ld, &info);
        if (r == -ENODATA)
                r = loop_info_read_sysfs(loop_device_number(ld), &info);
        if (r >= 0 && (!info.bound || info.diskseq != loop_device_diskseq(ld)))
                r = -EIO;
        if (r < 0)
                goto fail_detach;
        info.backing_dev = backing->st_dev;
        info.backing_ino = backing->st_ino;
        /* The caller's fd first, then ours closes: an autoclear device must
         * never be without an opener in between. */
        fd = loop_device_reopen(ld);
        if (fd < 0) {
                r = fd;
                goto fail_detach;
        }
        r = owner_store_commit_intent(ds->store, intent, info.number, info.diskseq);
        if (r < 0) {
                r = state_dir_error(r);
                goto fail_detach;
        }

        /* A stale entry for this number (a uevent we have not read yet). */
        d = devices_get(ds, info.number);
        if (d)
                device_drop(ds, d, true);
        r = device_new(ds, &info, owner, bound_to, &d);
        if (r < 0) {
                (void) owner_store_delete(ds->store, info.number, info.diskseq);
                goto fail_detach;
        }
        ld = loop_device_free(ld);
        node_pool_kick(ds->pool);
        if (ds->ev.added)
                ds->ev.added(d, ds->userdata);
        *ret = d;
        *ret_fd = TAKE_FD(fd);
        return 0;

fail_detach:
        fd = safe_close(fd);
        (void) loop_device_detach(ld);
fail:
        loop_info_done(&info);
        (void) owner_store_drop_intent(ds->store, intent);
        return r;
}

int devices_remove(Devices *ds, Device *d) {
        _cleanup_(loop_device_freep) LoopDevice *ld = NULL;
        int r;

        r = loop_device_open_number(d->number, d->diskseq, O_RDONLY, &ld);
        if (r == -ESTALE || r == -ENXIO || r == -ENOENT || r == -ENODEV) {
                devices_sync(ds, d->number);
                return -ENXIO;
        }
        if (r < 0)
                return r;
        r = loop_device_detach(ld);
        if (r < 0)
                return r;
        if (r == LOOP_DETACH_DONE) {
                device_drop(ds, d, true);
                node_pool_kick(ds->pool);
        } else {
                d->detach_pending = true;
                devices_sync(ds, d->number); /* autoclear is set now */
        }
        return r;
}

int devices_refresh_size(Devices *ds, Device *d) {
        _cleanup_(loop_device_freep) LoopDevice *ld = NULL;
        uint32_t number = d->number;
        int r;

        r = loop_device_open_number(d->number, d->diskseq, O_RDONLY, &ld);
        if (r == -ESTALE || r == -ENXIO || r == -ENOENT || r == -ENODEV) {
                devices_sync(ds, number);
                return -ENXIO;
        }
        if (r < 0)
                return r;
        r = loop_device_refresh_size(ld);
        if (r < 0)
                return r;
        ld = loop_device_free(ld);
        devices_sync(ds, number);
        return 0;
}
