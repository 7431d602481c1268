/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The loop core: all kernel work on loop devices, and nothing else.
 *
 * No D-Bus here, no policy, no ownership: callers decide *whether* to act,
 * this module knows *how*. Every function returns a negative errno on
 * failure. Nothing here sleeps for long except loop_control_remove(), which
 * waits for the kernel's del_gendisk (~47 ms) and is meant to be called off
 * the daemon's event loop.
 *
 * Defects of the reference Go package that this module must not repeat are
 * listed in shared/reference/NOTES.md; comments below name them by number.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <linux/loop.h>

#include "util.h"

/* The only flags a caller may ask for. Anything else is -EINVAL (NOTES #8). */
#define LOOP_CONFIG_FLAGS_ALLOWED \
        (LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN | LO_FLAGS_DIRECT_IO)

/* How often loop_device_create() tries again after losing a race. */
#define LOOP_CREATE_MAX_ATTEMPTS 64
/* How often loop_control_remove() tries again while the node is held. */
#define LOOP_REMOVE_MAX_ATTEMPTS 50

typedef struct LoopConfig {
        uint64_t offset;     /* bytes into the backing file */
        uint64_t size_limit; /* 0: up to the end of the backing file */
        uint32_t block_size; /* 0: kernel default, else power of two in 512..page size */
        uint32_t flags;      /* subset of LOOP_CONFIG_FLAGS_ALLOWED */
} LoopConfig;

/* Static checks that need no file: block size, flag bits, offset+size_limit
 * overflow. -EINVAL on any failure. */
int loop_config_validate(const LoopConfig *c);

/*
 * What a backing fd allows, checked without trusting the caller:
 * must be a regular file or a block device, open for reading (O_RDONLY or
 * O_RDWR; O_PATH and O_WRONLY are refused). An fd not open for writing forces
 * LO_FLAGS_READ_ONLY. The offset must lie before the end of the file (a
 * 0-byte device is an error) and the size limit must not reach past the end.
 * Errors: -EBADF (not an fd / O_PATH / not readable), -EINVAL (config does not
 * fit the file), -EMEDIUMTYPE (neither regular file nor block device).
 * A loop device as backing is allowed (the kernel refuses cycles itself).
 */
typedef struct LoopBacking {
        dev_t st_dev;       /* identity of the backing file, NOTES #2 */
        ino_t st_ino;
        mode_t st_mode;
        uid_t st_uid;       /* owner of the backing file, for polkit details */
        uint64_t size;      /* bytes */
        bool writable;      /* fd was opened for writing */
} LoopBacking;

int loop_backing_check(int backing_fd, const LoopConfig *c, LoopBacking *ret, uint32_t *ret_effective_flags);

/* /dev/loop-control. Returns an O_RDWR|O_CLOEXEC fd or -errno. */
int loop_control_open(void);

/* LOOP_CTL_GET_FREE: the number of a free (unbound) node, allocating one if
 * none exists. Returns >= 0 or -errno. */
int loop_control_get_free(int control_fd);

/* LOOP_CTL_ADD: make node `number` (or any, when number < 0). Returns the
 * number made, -EEXIST if it already exists. */
int loop_control_add(int control_fd, int number);

/* LOOP_CTL_REMOVE with a bounded retry on -EBUSY (udev probing, a late
 * closer). Blocks: ~47 ms per call in del_gendisk. -EBUSY after the last
 * attempt, -ENODEV if the node does not exist. */
int loop_control_remove(int control_fd, uint32_t number);

/* An open, bound (or at least existing) loop device. */
typedef struct LoopDevice LoopDevice;

/*
 * Attach `backing_fd` to a free node with LOOP_CONFIGURE and return the
 * device, opened O_RDWR|O_EXCL (or O_RDONLY|O_EXCL when read-only).
 * Validates the config (loop_config_validate + loop_backing_check) before any
 * node is taken. Retries on EBUSY from open or configure at most
 * LOOP_CREATE_MAX_ATTEMPTS times with a short, jittered backoff (NOTES #3);
 * no fd leaks on any path. Fills lo_file_name (NOTES #4). Reads every setting
 * back from the kernel and fails (detaching again) if the kernel silently
 * ignored one, except direct I/O which is dropped with *ret_dio_refused set
 * when the backing filesystem refuses it (NOTES #5).
 * -EAGAIN when every attempt lost a race, -ENOSPC when no node can be had.
 */
int loop_device_create(int control_fd, int backing_fd, const LoopConfig *c, LoopDevice **ret);

/*
 * Open an existing loop device named by path. The path is stat()ed first;
 * anything that is not a block device of the loop major (7) or of the
 * extended-minor range with a "loop" sysfs entry is refused with -ENOTBLK
 * before it is opened (NOTES #6). Symlinks are not followed. Unbound devices
 * open fine (bound is false in the info).
 */
int loop_device_open(const char *path, LoopDevice **ret);

/* Open /dev/loop<number>. If expect_diskseq != 0, -ESTALE when the node now
 * holds another attachment. flags: O_RDONLY or O_RDWR. */
int loop_device_open_number(uint32_t number, uint64_t expect_diskseq, int flags, LoopDevice **ret);

LoopDevice *loop_device_free(LoopDevice *d); /* closes, never detaches; NULL ok */
DEFINE_POINTER_CLEANUP(LoopDevice, loop_device_free);

uint32_t loop_device_number(const LoopDevice *d);
int loop_device_fd(const LoopDevice *d);
dev_t loop_device_devnum(const LoopDevice *d); /* st_rdev of the node, NOTES #1 */
uint64_t loop_device_diskseq(const LoopDevice *d);
bool loop_device_dio_refused(const LoopDevice *d);

/* A new, non-exclusive fd on the same node, O_RDONLY when the device is
 * read-only, else O_RDWR. Always O_CLOEXEC. Returns fd or -errno. */
int loop_device_reopen(const LoopDevice *d);

/* LOOP_SET_CAPACITY. */
int loop_device_refresh_size(LoopDevice *d);

/* LOOP_CLR_FD. Returns LOOP_DETACH_DONE when the device is unbound now,
 * LOOP_DETACH_DEFERRED when the kernel only marked it autoclear because
 * another opener still holds it (NOTES #7); -ENXIO if it was not bound. */
enum { LOOP_DETACH_DONE = 0, LOOP_DETACH_DEFERRED = 1 };
int loop_device_detach(LoopDevice *d);

/* Everything the kernel knows about one attachment. */
typedef struct LoopInfo {
        uint32_t number;
        char name[16];     /* "loopN" */
        char path[32];     /* "/dev/loopN" */
        dev_t devnum;      /* of the node */
        uint64_t diskseq;
        bool bound;
        char *backing_file;   /* sysfs text without newline or " (deleted)"; NULL if unbound */
        bool backing_deleted; /* sysfs said " (deleted)" */
        dev_t backing_dev;    /* 0 when unknown (only via an open fd) */
        uint64_t backing_ino;
        uint64_t offset;
        uint64_t size_limit;
        uint64_t size;        /* bytes */
        uint32_t block_size;  /* logical block size */
        uint32_t flags;       /* LO_FLAGS_* as the kernel reports them */
} LoopInfo;

void loop_info_done(LoopInfo *i);

/* From sysfs only, without opening the node (an open+close of an autoclear
 * device nobody holds would clear it). backing_dev/backing_ino stay 0.
 * -ENODEV if no such node. An unbound node gives bound=false and 0. */
int loop_info_read_sysfs(uint32_t number, LoopInfo *ret);

/* Through the open fd (LOOP_GET_STATUS64 + BLKGETDISKSEQ) plus sysfs. */
int loop_device_read_info(const LoopDevice *d, LoopInfo *ret);

/* Strict parse of "loopN" or "/dev/loopN" (decimal, no sign, no leading
 * zeros, < 2^20). -EINVAL otherwise. Pure: no file system access. */
int loop_name_parse(const char *s, uint32_t *ret);

/* Every existing loop node number from /sys/block, sorted ascending.
 * *ret is malloc()ed. Returns the count or -errno. */
int loop_list_numbers(uint32_t **ret);
