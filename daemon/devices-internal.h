/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Shared by devices.c (the model) and device-ops.c (the operations) only.
 */

#include <pthread.h>

#include "device-ops.h"
#include "devices.h"
#include "node-pool.h"
#include "owner-store.h"
#include "uid-count.h"

typedef struct PendingIntent PendingIntent;

struct Devices {
        sd_event *event;
        JobPool *jobs;
        int control_fd;
        OwnerStore *store;
        NodePool *pool;
        unsigned quota;
        uint64_t kernel_timeout_usec;

        Device **by_number; /* indexed by loop number; loop numbers are dense */
        uint64_t *ended;    /* by number: diskseq of the last attachment we saw end there */
        size_t n_slots;
        size_t n_devices, n_bound, n_guarded;

        UidCounts reserved; /* quota slots held by creates in flight */

        /* Intents of creates interrupted before their record was written,
         * waiting for the identity of the devices found at start. */
        OwnerIntent *intents;
        size_t n_intents;

        /* Devices whose backing identity is to be read (LOOP_GET_STATUS64 on
         * a job), by (number, diskseq): at most IDENTITY_IN_FLIGHT at once,
         * so that devices on hung file systems hold few threads. */
        struct IdentityWanted {
                uint32_t number;
                uint64_t diskseq;
        } *identity_queue;
        size_t n_identity_queue;
        unsigned identity_in_flight;

        /* Closes of guarded nodes (a detach someone asked shows then). */
        int inotify_fd;
        sd_event_source *inotify_source;
        sd_event_source *poll_timer;

        /* Nodes that create jobs are configuring, claimed from their threads
         * just before LOOP_CONFIGURE: an attachment found on one is that
         * create's, which its completion announces with its owner.
         * Announcing it from its uevent first would present it as nobody's,
         * then remove and add it again. A node whose uevent was put off for
         * a claim is read again when the claim ends. */
        pthread_mutex_t claims_lock;
        /* Creates take a free node one at a time (LOOP_CTL_GET_FREE names
         * the same node to all until one has configured it; the others
         * would spin on EBUSY). Held through LOOP_CONFIGURE, which may hang
         * on a backing file: others wait at most CREATE_LOCK_WAIT_USEC for
         * it, then go on racing. */
        pthread_mutex_t create_lock;
        struct NodeClaim {
                uint32_t number;
                bool deferred;         /* something about it was put off */
                bool deferred_unknown; /* ... without a uevent to place it */
                uint64_t deferred_diskseq, deferred_seqnum; /* the latest uevent put off */
        } *claims;
        size_t n_claims;

        DeviceEvents ev;
        void *userdata;
        bool freeing;
};

/* devices.c: from any thread. A claim that cannot be recorded (ENOMEM)
 * only means the create is announced as before. devices_unclaim_node()
 * (event loop) returns true when the node must be read again: something
 * was put off meanwhile that the create's own reading (attachment
 * `diskseq`, read at uevent `seen_seqnum`; 0: nothing made there) does not
 * cover. */
int devices_claim_node(Devices *ds, uint32_t number);
bool devices_unclaim_node(Devices *ds, uint32_t number, uint64_t diskseq, uint64_t seen_seqnum);

/* A job read d with the backing inode in hand (LOOP_INFO_IDENTITY): where it
 * reads the kernel's same text otherwise than sysfs alone did (a live name
 * ending in " (deleted)"), its reading wins, with PropertiesChanged. */
void device_take_name_reading(Devices *ds, Device *d, const LoopInfo *read);

/* How often every device is read again for what changes without a uevent
 * (backing file unlinked, direct I/O switched, a detach asked of a guarded
 * device through a node loopd cannot watch). */
#define POLL_INTERVAL_USEC (5ULL * 1000000ULL)

/* devices.c, for the others. */
int device_add(Devices *ds, LoopInfo *info, uid_t owner, const char *binding, Device **ret);
void device_drop(Devices *ds, Device *d);
void device_emit_changed(Devices *ds, Device *d, unsigned what);
void devices_emit_counts(Devices *ds);
/* Guard d with `keeper` (taken): the owner's ACL, the close watch. */
int device_guard(Devices *ds, Device *d, LoopDevice *keeper);
/* Revoke the owner's access and hand back the keeper (may be NULL). */
LoopDevice *device_unguard(Devices *ds, Device *d);
/* Whether a device made for `owner` with `flags` is guarded. */
bool device_wants_guard(uid_t owner, uint32_t flags);
/* device-guard.c: a detach asked of a guarded device (its autoclear flag
 * set) withdraws access and lets the kernel have it. */
void device_guard_check(Devices *ds, Device *d);
/* The inotify handler for closes of guarded nodes. */
int devices_on_node_closed(sd_event_source *s, int fd, uint32_t revents, void *userdata);
/* A guarded device's backing file was swapped (its keeper proves no detach
 * happened): d is replaced by a Device for the new diskseq with the same
 * owner, which loopd detaches. info is taken. */
void device_backing_changed(Devices *ds, Device *d, LoopInfo *info);
size_t devices_count_owned(Devices *ds, uid_t uid);

/* device-ops.c: closes ld and fd on a job (cleanup charged to `owner`,
 * never refused, behind the owner's other jobs): a close may be the last
 * one and flush I/O to a hung file system. With detach, LOOP_CLR_FD first; a detach that is done drops the
 * Device (ds NULL: at exit, nothing to update). */
void devices_release(Devices *ds, JobPool *jobs, uid_t owner, uint32_t number, uint64_t diskseq, LoopDevice *ld,
                     int fd, bool detach);

/* device-ops.c, for devices.c: let go of a keeper (a job: its close may be
 * the last and flush I/O to a hung file system); with detach, LOOP_CLR_FD
 * first. The result updates the attachment if it is still the same. */
void devices_release_keeper(Devices *ds, uid_t owner, uint32_t number, uint64_t diskseq, LoopDevice *keeper,
                            bool detach);
/* device-adopt.c, at start: owners from the records (stale ones
 * forgotten), named-user ACLs no guard stands for stripped, then the
 * keepers systemd kept (fd-store.h) guard their devices again or are let
 * go. Takes `stored`. */
int devices_reconcile(Devices *ds, StoredKeeper *stored, size_t n_stored);
/* device-adopt.c: background jobs for devices found (at start, or made by
 * others): the backing identity of d (LOOP_GET_STATUS64), at most two at
 * once; an interrupted create's intent adopts the device it names. */
void devices_read_identity(Devices *ds, Device *d);
/* Starts queued identity reads; drops unmatched intents once none is left. */
void devices_read_identity_pump(Devices *ds);
/* Background job: take a keeper for an owned device found at start. */
void devices_take_keeper(Devices *ds, Device *d);
