/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The daemon's view of every loop attachment on the machine and of who owns
 * the ones made through loopd, kept in step with the kernel (uevents, sysfs)
 * and with the owner records. It knows attachments, owners and quotas; it
 * knows nothing of the bus (object paths, signals, callers' names are the
 * bus layer's; a "binding" is an opaque key the bus layer asks it to keep
 * and persist with the owner record).
 *
 * An attachment is keyed by (number, diskseq): when loopN is detached and
 * attached again it is a new Device.
 *
 * Guards. A device a non-root uid made without autoclear is "guarded":
 * loopd grants the owner an ACL on the node (node-access.h) and holds an fd
 * of its own on it (the keeper). While the keeper is open the kernel cannot
 * finish clearing the attachment (a detach by anyone only marks it), so
 * loopd always withdraws the owner's access *before* the attachment ends,
 * and an unbound node, which anyone allowed to open it could hold across
 * the next attachment, never carries a previous owner's access. loopd
 * notices a detach asked by someone else (loop/autoclear set on a device
 * created without it) on every close of the node (inotify) and every few
 * seconds, then revokes and lets go. Autoclear devices are not guarded: the
 * kernel ends them at the last close, which loopd cannot precede; their
 * owner's handle is the fd loopd returned.
 *
 * All kernel work that may wait on a backing file's file system runs on the
 * job pool (jobs.h); this module's functions return at once and report
 * through callbacks, on the event loop.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "fd-store.h"
#include "jobs.h"
#include "loop-device.h"
#include "util.h"

#define UID_INVALID ((uid_t) -1)
/* Owner of the daemon's own background jobs (reading identities, taking
 * keepers at start): limited like a user, never root's reserve. */
#define DEVICES_JOB_OWNER ((uid_t) -2)

typedef struct Device {
        uint32_t number;
        uint64_t diskseq;
        uid_t owner;          /* UID_INVALID: not created through loopd */
        char *binding;        /* opaque key of the caller it is bound to, or NULL */
        bool detach_pending;  /* removed; the kernel keeps it until its last opener closes */
        bool guarded;         /* keeper held and the owner's ACL granted */
        bool busy;            /* a job works on it (remove, refresh, guard changes) */
        LoopInfo info;        /* as last read from the kernel */
        uint64_t info_usec;   /* when (CLOCK_MONOTONIC) */
        LoopDevice *keeper;   /* loopd's own fd while guarded */
        int watch;            /* inotify watch of the node while guarded, else -1 */
        bool identity_pending, keeper_pending; /* background jobs in flight */
} Device;

/* What changed, for DeviceEvents.changed. */
enum {
        DEVICE_CHANGED_INFO = 1 << 0,     /* size, flags, backing name... */
        DEVICE_CHANGED_IDENTITY = 1 << 1, /* backing dev/ino became known */
        DEVICE_CHANGED_STATE = 1 << 2,    /* detach_pending */
        DEVICE_CHANGED_OWNER = 1 << 3,    /* owner or binding (adopted after start) */
};

typedef struct DeviceEvents {
        void (*added)(Device *d, void *userdata);
        void (*removed)(Device *d, void *userdata); /* d is freed after this */
        void (*changed)(Device *d, unsigned what, void *userdata);
        /* The counts behind STATUS= and idle exit changed. */
        void (*counts_changed)(void *userdata);
} DeviceEvents;

typedef struct Devices Devices;

typedef struct DevicesOptions {
        const char *state_dir;
        unsigned quota;          /* devices per non-root uid */
        unsigned min_spare_nodes;
        unsigned max_spare_nodes;
        uint64_t kernel_timeout_usec; /* deadline of a kernel job a caller waits for */
        StoredKeeper *stored;    /* keepers systemd kept for us (fd-store.h); taken */
        size_t n_stored;
} DevicesOptions;

/* Opens /dev/loop-control and the state directory, reconciles the owner
 * records with the kernel (forgets records of devices gone, adopts devices
 * whose create was interrupted, strips node ACLs no attachment stands for),
 * guards again the devices whose keepers systemd kept (o->stored, taken
 * even on failure), starts the node pool. Reading backing identities of devices found at
 * start and taking their keepers happen later, on jobs
 * (devices_start_background()). No events for what is found at start. */
int devices_new(sd_event *e, JobPool *jobs, const DevicesOptions *o, const DeviceEvents *ev, void *userdata,
                Devices **ret);
/* At exit, before the job pool goes: revokes owners' node access and lets
 * go of keepers (loopd gone, nobody would withdraw access before an
 * attachment ends; the next start grants it again). Records stay. Jobs that
 * finish from now on update nothing and undo what they made. */
void devices_shutdown(Devices *ds);
Devices *devices_free(Devices *ds);
DEFINE_POINTER_CLEANUP(Devices, devices_free)

/* Jobs for what devices_new() found: identities, keepers. */
void devices_start_background(Devices *ds);

/* Re-read one node (UINT32_MAX: all) from sysfs, emitting as needed. */
void devices_sync(Devices *ds, uint32_t number);
/* A kernel uevent about loop<number> (UINT32_MAX: events were lost, all).
 * Skipped when already reflected (see devices.c). */
void devices_uevent(Devices *ds, uint32_t number, uint64_t diskseq, uint64_t seqnum);
/* A partition of loop<number> came or changed: a guarded device's owner
 * gets it too (node-access.h). */
void devices_partition_event(Devices *ds, uint32_t number);
/* Re-reads d's info from sysfs if older than max_age_usec (emitting
 * changed); d stays valid unless the attachment ended (returns NULL then). */
Device *devices_refresh(Devices *ds, Device *d, uint64_t max_age_usec);

Device *devices_get(Devices *ds, uint32_t number);
/* As devices_get(), but first makes sure it is the kernel's current state. */
Device *devices_get_fresh(Devices *ds, uint32_t number);
Device *devices_get_attachment(Devices *ds, uint32_t number, uint64_t diskseq);
/* Iterate: *iter starts at 0. */
Device *devices_next(Devices *ds, size_t *iter);
size_t devices_count(Devices *ds);
size_t devices_count_bound(Devices *ds);   /* with a binding */
size_t devices_count_guarded(Devices *ds);
unsigned devices_quota(Devices *ds);

