/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * What callers ask of loop devices, as asynchronous operations on the
 * Devices model: quota reservations, backing checks, create, remove,
 * refresh, open. The kernel work of each runs on the job pool; results come
 * back through the callbacks, on the event loop. A Device pointer given to
 * an operation need not outlive the call: operations remember the
 * attachment by (number, diskseq).
 */

#include "devices.h"

/* ---- operations ------------------------------------------------------------ */

/* A quota slot for `owner`, held by a create from before polkit is asked
 * until the device exists or the create failed. Counted like a device, so
 * concurrent creates cannot pass the quota together. -EDQUOT; uid 0 is
 * exempt (always 0). */
int devices_reserve(Devices *ds, uid_t owner);
void devices_unreserve(Devices *ds, uid_t owner);

/* What a backing fd allows, checked on a job (statx may reach a FUSE
 * server): the core's loop_backing_check(), plus the kernel's name for the
 * fd's file and whether that name, looked up in loopd's own mount
 * namespace, is the very same inode (a caller in another mount namespace
 * can make an fd's name say anything). */
typedef struct BackingCheck {
        int r;               /* < 0: the file cannot back the device */
        LoopBacking backing;
        uint32_t flags;      /* effective flags (read-only forced by an O_RDONLY fd) */
        char *path;          /* the kernel's name for the fd's file; may be NULL */
        bool path_verified;  /* path names this inode in loopd's namespace */
} BackingCheck;
typedef void (*devices_check_done_t)(BackingCheck *c, void *userdata); /* c freed after */
int devices_check_backing(Devices *ds, uid_t owner, int backing_fd, const LoopConfig *config,
                          devices_check_done_t done, void *userdata);

typedef struct DeviceCreate {
        int backing_fd;       /* borrowed: dup'ed for the job */
        LoopConfig config;
        uid_t owner;          /* a reservation of devices_reserve() is consumed */
        const char *binding;  /* may be NULL */
} DeviceCreate;
/* r < 0: failed (nothing attached; the reservation is released). Else d is
 * the new Device (added emitted) and fd a non-exclusive fd on it for the
 * caller (read-only when the device is). dio_refused: direct I/O was asked
 * and the backing file system declined. -ETIMEDOUT when the kernel did not
 * finish in time: whatever it makes later is undone. */
typedef void (*devices_create_done_t)(int r, Device *d, int fd, bool dio_refused, void *userdata);
int devices_create(Devices *ds, const DeviceCreate *c, devices_create_done_t done, void *userdata);

/* devices_create's failure when the owner records cannot be written. */
#define DEVICES_ERROR_STATE_DIR (-ENOLCK)

/* Remove: revokes the owner's access, then detaches. r: LOOP_DETACH_DONE
 * (d gone, removed emitted), LOOP_DETACH_DEFERRED (d stays, detach_pending,
 * still counted against its owner until the kernel lets it go), or < 0
 * (-ENXIO gone meanwhile, -EBUSY another operation on it, -ETIMEDOUT).
 * `uid` is whom the job is charged to. */
typedef void (*devices_op_done_t)(int r, void *userdata);
int devices_remove(Devices *ds, Device *d, uid_t uid, devices_op_done_t done, void *userdata);
/* The same for a device whose bound caller left: the owner's cleanup job
 * (never refused, no deadline). */
int devices_remove_left_behind(Devices *ds, Device *d, devices_op_done_t done, void *userdata);
/* LOOP_SET_CAPACITY, then a re-read. */
int devices_refresh_size(Devices *ds, Device *d, uid_t uid, devices_op_done_t done, void *userdata);
/* An fd on d for a caller: flags O_RDONLY or O_RDWR (O_RDONLY forced for a
 * read-only device). r is the fd (callee closes) or < 0. */
int devices_open(Devices *ds, Device *d, uid_t uid, int flags, devices_op_done_t done, void *userdata);
