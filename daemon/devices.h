/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The daemon's view of every loop attachment on the machine, kept in step
 * with the kernel (uevents, sysfs) and with the owner records, and the
 * operations on them. No D-Bus here: the bus layer asks, this module acts
 * through the loop core and tells the bus layer what changed through
 * DeviceEvents.
 *
 * An attachment is keyed by (number, diskseq): when loopN is detached and
 * attached again it is a new Device with a new object path.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "loop-device.h"
#include "util.h"

#define UID_INVALID ((uid_t) -1)
#define DEVICE_OBJECT_PREFIX "/org/loopd/Loop1/device/"

typedef struct Device {
        uint32_t number;
        uint64_t diskseq;
        uid_t owner;         /* UID_INVALID: not created through loopd */
        char *bound_to;      /* unique bus name of the creator, or NULL */
        bool detach_pending; /* Remove was deferred by the kernel to the last close */
        LoopInfo info;       /* as last read from the kernel */
        char object_path[sizeof(DEVICE_OBJECT_PREFIX) + 48];
        void *bus_data;      /* the bus layer's (name watch); freed by it in .removed */
} Device;

typedef struct DeviceEvents {
        void (*added)(Device *d, void *userdata);
        void (*removed)(Device *d, void *userdata); /* d is freed after this */
        void (*changed)(Device *d, void *userdata); /* d->info was updated */
} DeviceEvents;

typedef struct Devices Devices;

typedef struct DevicesOptions {
        const char *state_dir;
        unsigned quota;          /* per non-root uid */
        unsigned min_spare_nodes;
        unsigned max_spare_nodes;
} DevicesOptions;

/* Opens /dev/loop-control and the state directory, reconciles the owner
 * records with the kernel (forgets records of devices gone, adopts devices
 * whose create was interrupted), starts the node pool. Events are not
 * emitted for what is found at start. */
int devices_new(const DevicesOptions *o, const DeviceEvents *ev, void *userdata, Devices **ret);
Devices *devices_free(Devices *ds);
DEFINE_POINTER_CLEANUP(Devices, devices_free)

/* Re-read one node (UINT32_MAX: all) from sysfs and emit added/removed/
 * changed as needed. */
void devices_sync(Devices *ds, uint32_t number);

/* A kernel uevent about loop<number> (UINT32_MAX: events were lost, all).
 * Re-reads the node like devices_sync() unless the event is already
 * reflected: about an attachment older than the one we know or one we saw
 * end (diskseq), or numbered no later than our last read of the one we
 * know (seqnum). 0 for either: unknown, re-read. */
void devices_uevent(Devices *ds, uint32_t number, uint64_t diskseq, uint64_t seqnum);

Device *devices_get(Devices *ds, uint32_t number);
/* As devices_get(), but first makes sure it is the kernel's current state. */
Device *devices_get_fresh(Devices *ds, uint32_t number);
/* By object path; NULL if no such attachment (any more). */
Device *devices_get_by_path(Devices *ds, const char *object_path);
/* Iterate: *iter starts at 0. */
Device *devices_next(Devices *ds, size_t *iter);
size_t devices_count(Devices *ds);
size_t devices_count_owned(Devices *ds, uid_t uid);
size_t devices_count_bound(Devices *ds);
unsigned devices_quota(Devices *ds);

/* What a backing fd allows (loop_backing_check), for validation and polkit
 * details before anything is allocated. ret_path: the fd's path as the
 * kernel names it (may be NULL). */
int devices_check_backing(int backing_fd, const LoopConfig *c, LoopBacking *ret, char **ret_path);

/*
 * Attach. Checks the quota of `owner` (-EDQUOT; uid 0 exempt), writes an
 * intent record, creates, records the owner, adds the Device (emits
 * added) and returns a fresh non-exclusive fd on it (read-only when the
 * device is). -EROFS/-EOPNOTSUPP etc. from the core.
 * backing: what devices_check_backing() said of backing_fd; only its
 * identity (st_dev, st_ino) is used, which an fd keeps for its life. The
 * core checks the rest again when it attaches.
 */
int devices_create(Devices *ds, int backing_fd, const LoopBacking *backing, const LoopConfig *c, uid_t owner,
                   const char *bound_to, Device **ret, int *ret_fd);

/* devices_create's answer when the owner records cannot be written (the
 * state directory is full, read-only or gone): nothing was attached. A
 * distinct code, because the store's own errno (ENOSPC, EROFS) would read
 * as "no free loop device" or "read-only backing file" at the bus edge.
 * The store's errno goes to stderr. */
#define DEVICES_ERROR_STATE_DIR (-ENOLCK)

/* Detach. Returns LOOP_DETACH_DONE (the Device is gone: removed emitted,
 * the pointer is invalid) or LOOP_DETACH_DEFERRED (the kernel waits for the
 * last opener; the Device stays until then). -ESTALE/-ENXIO if it went. */
int devices_remove(Devices *ds, Device *d);

int devices_refresh_size(Devices *ds, Device *d);
