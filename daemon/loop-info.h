/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * What the kernel says about loop nodes and their attachments: one reader
 * (loop_info_read) over sysfs and, where an fd is at hand, the block
 * layer's ioctls; node names; enumeration. No D-Bus, no policy.
 *
 * What may block on a backing file's file system is marked: only
 * LOOP_INFO_IDENTITY (LOOP_GET_STATUS64 calls vfs_getattr() on the backing
 * file, which on FUSE or a hung NFS server waits for the file server).
 * Everything else reads sysfs attributes, which the loop driver renders
 * from its own state (the backing path with d_path(), no file system
 * call), and may run on the daemon's event loop.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

/* MINORBITS: loop numbers are below this. */
#define LOOP_NUMBER_MAX (UINT32_C(1) << 20)

/* Everything the kernel knows about one attachment. */
typedef struct LoopInfo {
        uint32_t number;
        char name[16];        /* "loopN" */
        char path[32];        /* "/dev/loopN" */
        dev_t devnum;         /* of the node (st_rdev, never mkdev(7, N): loop.max_part shifts minors) */
        uint64_t diskseq;     /* 0: the kernel has none (before 5.15) */
        bool bound;
        char *backing_file;   /* the kernel's name for it, bytes, without newline or " (deleted)"; NULL if unbound */
        bool backing_deleted; /* the kernel appended " (deleted)": the file was unlinked */
        dev_t backing_dev;    /* identity of the backing file; 0 unless LOOP_INFO_IDENTITY */
        uint64_t backing_ino;
        uint64_t offset;
        uint64_t size_limit;
        uint64_t size;        /* bytes */
        uint32_t block_size;  /* logical block size */
        uint32_t flags;       /* LO_FLAGS_* as the kernel reports them */
        uint64_t uevent_seqnum; /* the kernel's uevent counter just before the read: every uevent
                                 * numbered up to it is reflected here (0: unknown) */
} LoopInfo;

void loop_info_done(LoopInfo *i);

/* What loop_info_read() reads besides sysfs. */
typedef enum LoopInfoWhat {
        /* Backing dev/ino through LOOP_GET_STATUS64 on the fd. May block on the
         * backing file's file system: never on the event loop. Also tells a
         * real name ending in " (deleted)" from an unlinked file. */
        LOOP_INFO_IDENTITY = 1 << 0,
} LoopInfoWhat;

/*
 * Reads attachment state of node `number`.
 * fd < 0: from sysfs alone, without opening the node (an open and close of
 *   an autoclear device nobody else holds would clear it); the read is
 *   repeated (at most 3 times) when an attach or clear ran meanwhile.
 * fd >= 0: an open fd on the node; the block layer's values (devnum,
 *   diskseq, size, block size, read-only) come from ioctls on it, the loop
 *   driver's from sysfs. While the fd is held nobody can finish clearing
 *   the attachment, so one read is consistent.
 * Unbound nodes give bound=false and zeros. -ENODEV if there is no such
 * node, -EINVAL for a number out of range.
 */
int loop_info_read(uint32_t number, int fd, LoopInfoWhat what, LoopInfo *ret);

/* loop_info_read(number, -1, 0, ret). */
int loop_info_read_sysfs(uint32_t number, LoopInfo *ret);

/* Cheap freshness check without opening the node: 1 when loop<number> is
 * bound, 0 when not, with its current diskseq; -ENODEV without a node,
 * -EAGAIN when an attach raced the read. */
int loop_attachment_current(uint32_t number, uint64_t *ret_diskseq);

/* Is node loop<number> bound? 1 yes, 0 no, -ENODEV without such a node.
 * One or two syscalls (sysfs), no open of the node: for scans of many. */
int loop_node_bound(uint32_t number);

/* Is attachment `diskseq` still bound on node `number`? sysfs only. */
bool loop_attachment_bound(uint32_t number, uint64_t diskseq);

/* One decimal sysfs attribute of /sys/block/loop<number>, e.g.
 * "loop/autoclear". -ENOENT when absent (loop/ of an unbound node). */
int loop_sysfs_read_u64(uint32_t number, const char *attr, uint64_t *ret);

/* diskseq of the node an fd is open on (BLKGETDISKSEQ, else sysfs); 0 if
 * the kernel has none. */
uint64_t loop_fd_diskseq(int fd, uint32_t number);

/* Which whole loop disk a block devnum is, from the kernel's name for the
 * disk (/sys/dev/block/MAJ:MIN). Partitions (loopNpM) are -ENOTBLK. */
int loop_number_from_devnum(dev_t devnum, uint32_t *ret);

/* Strict parse of "loopN" or "/dev/loopN" (decimal, no sign, no leading
 * zeros, < 2^20). -EINVAL otherwise. Pure: no file system access. */
int loop_name_parse(const char *s, uint32_t *ret);

/* Every existing loop node number from /sys/block, sorted ascending.
 * *ret is malloc()ed (NULL when the count is 0). Returns the count or -errno. */
int loop_list_numbers(uint32_t **ret);
