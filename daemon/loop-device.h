/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The loop core: all kernel work on loop devices, and nothing else.
 *
 * No D-Bus here, no policy, no ownership: callers decide *whether* to act,
 * this module knows *how*. Every function returns a negative errno on
 * failure. Nothing here may run on the daemon's event loop unless its
 * comment says so: creating, opening, resizing and detaching can all wait
 * on the backing file's file system (loop_control_remove() also waits for
 * the kernel's del_gendisk, ~47 ms).
 *
 * loopd serves the semantics of Monogon's Go loop package (Create with a
 * config, Open, device path, dev_t, backing file, RefreshSize, Remove) but
 * not its defects. Comments below name them [R1]..[R10]:
 *  R1  dev_t was computed as mkdev(7, N), wrong whenever loop.max_part is
 *      non-zero (minors are N << part_shift): take st_rdev of the node.
 *  R2  the backing path kept sysfs's trailing newline and " (deleted)"
 *      mark; a path is no identity anyway: the backing file's st_dev and
 *      st_ino are (as udisks2 and losetup's BACK-INO use).
 *  R3  Create leaked the node's fd when LOOP_CONFIGURE failed (EBUSY retry
 *      included) and retried without bound or backoff.
 *  R4  lo_file_name was never filled: LOOP_GET_STATUS64 showed no name.
 *  R5  the config was trusted to be applied: some kernels' LOOP_CONFIGURE
 *      ignored block size, size limit or partscan silently (systemd and
 *      util-linux read settings back), and a file system may refuse
 *      direct I/O. Read every setting back.
 *  R6  Open opened whatever path it got before checking it was a loop
 *      device (a hole in a root daemon): decide from an O_PATH handle
 *      first; and an unbound device (ENXIO) was an unknown failure.
 *  R7  Remove used a control fd only Create set up (a device from Open
 *      crashed there); after LOOP_CLR_FD the kernel may still hold the
 *      node (another opener, udev probing): LOOP_CTL_REMOVE needs a
 *      bounded retry, and a detach the kernel deferred must be reported.
 *  R8  only the block size was validated: unknown flag bits and offsets or
 *      size limits beyond the file went to the kernel unchecked.
 *  R9  no diskseq: "loop5" can name another attachment a moment later;
 *      BLKGETDISKSEQ (5.15+) gives each attachment its own number.
 *  R10 a shared "closed" flag was read and written without a lock.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <linux/loop.h>

#include "loop-config.h"
#include "loop-info.h"
#include "util.h"

/* How often loop_device_create() tries again after losing a race. */
#define LOOP_CREATE_MAX_ATTEMPTS 64
/* How often loop_control_remove() tries again while the node is held. */
#define LOOP_REMOVE_MAX_ATTEMPTS 50

/* /dev/loop-control. Returns an O_RDWR|O_CLOEXEC fd or -errno. */
int loop_control_open(void);

/* LOOP_CTL_GET_FREE: the number of a free (unbound) node, allocating one if
 * none exists. Returns >= 0 or -errno. */
int loop_control_get_free(int control_fd);

/* LOOP_CTL_ADD: make node `number` (or any, when number < 0). Returns the
 * number made, -EEXIST if it already exists. */
int loop_control_add(int control_fd, int number);

/* LOOP_CTL_REMOVE with a bounded retry on -EBUSY (udev probing, a late
 * closer): at most LOOP_REMOVE_MAX_ATTEMPTS, jittered sleeps of 1..16 ms
 * between them (worst case under a second). Blocks: ~47 ms per successful call
 * in del_gendisk. -EBUSY after the last attempt, and at once when the node is
 * bound without a pending detach (waiting would not help); -ENODEV if the node
 * does not exist. */
int loop_control_remove(int control_fd, uint32_t number);

/* An open, bound (or at least existing) loop device. Not locked (R10):
 * one owner at a time; hand it between threads, do not share it. */
typedef struct LoopDevice LoopDevice;

/*
 * Attach `backing_fd` to a free node with LOOP_CONFIGURE and return the
 * device, opened O_RDWR|O_EXCL (or O_RDONLY|O_EXCL when read-only).
 * Validates the config (loop_config_validate + loop_backing_check) before any
 * node is taken. Retries on EBUSY from open or configure at most
 * LOOP_CREATE_MAX_ATTEMPTS times with a short, jittered backoff (R3);
 * no fd leaks on any path. Fills lo_file_name (R4). Reads every setting
 * back from the kernel and fails (detaching again) if the kernel silently
 * ignored one, except direct I/O which is dropped, loop_device_dio_refused()
 * then true, when the backing file cannot do it: no O_DIRECT support, or an
 * offset/block size off its DIO alignment (R5). The kernel never fails
 * LOOP_CONFIGURE for DIO; it also turns DIO on by itself for an O_DIRECT fd.
 * -EAGAIN when every attempt lost a race, -ENOSPC when no node can be had.
 * -EOPNOTSUPP when the kernel did not apply a setting (detached again);
 * -EROFS when it made the device read-only although the fd was writable.
 * Other LOOP_CONFIGURE errors pass through (-EINVAL e.g. for a loop cycle).
 *
 * The returned fd is the exclusive one: while it is open nobody can mount the
 * device or open it O_EXCL. Keep it only as long as that is wanted; for an
 * autoclear device, closing the last fd clears it, so loop_device_reopen()
 * first if it must outlive this handle.
 */
int loop_device_create(int control_fd, int backing_fd, const LoopConfig *c, LoopDevice **ret);

/* Called on the creating thread with each node number just before
 * LOOP_CONFIGURE is tried on it: the kernel's uevent for the attachment can
 * reach an event loop before the creator is done. */
typedef void (*loop_node_claim_t)(uint32_t number, void *userdata);

/* loop_device_create() for a caller that validated c and ran
 * loop_backing_check() on backing_fd itself; flags are the effective flags
 * that check gave (read-only forced by an O_RDONLY fd). Saves the second
 * statx of the backing file. claim (may be NULL) is told each node tried. */
int loop_device_create_checked(int control_fd, int backing_fd, const LoopConfig *c, uint32_t flags,
                               loop_node_claim_t claim, void *claim_userdata, LoopDevice **ret);

/*
 * Open an existing loop device named by path, O_RDONLY|O_NONBLOCK, not
 * exclusive. The path is pinned with O_PATH|O_NOFOLLOW (which runs no driver
 * open) and fstat()ed first; anything that is not a whole loop disk (major 7,
 * or the extended range 259, whose sysfs name is "loopN") is refused with
 * -ENOTBLK before it is opened (R6): partitions loopNpM included. A
 * symlink is refused with -ELOOP. The pinned inode is then opened through
 * /proc/self/fd, so the path cannot be swapped in between. Unbound devices
 * open fine (bound is false in the info).
 */
int loop_device_open(const char *path, LoopDevice **ret);

/* Open /dev/loop<number> (not exclusive). If expect_diskseq != 0, -ESTALE
 * when the node now holds another attachment. flags: O_RDONLY or O_RDWR, else
 * -EINVAL. -ENOENT if there is no such node. */
int loop_device_open_number(uint32_t number, uint64_t expect_diskseq, int flags, LoopDevice **ret);

/* An fd on /dev/loop<number> held elsewhere (systemd's fd store) taken
 * back: -ENOTBLK unless it is that whole loop disk, -ESTALE unless it holds
 * the attachment `diskseq` now. Takes fd, closing it on failure. */
int loop_device_adopt_fd(int fd, uint32_t number, uint64_t diskseq, LoopDevice **ret);

LoopDevice *loop_device_free(LoopDevice *d); /* closes, never detaches; NULL ok */
DEFINE_POINTER_CLEANUP(LoopDevice, loop_device_free)

uint32_t loop_device_number(const LoopDevice *d);
int loop_device_fd(const LoopDevice *d);
dev_t loop_device_devnum(const LoopDevice *d); /* st_rdev of the node, R1 */
uint64_t loop_device_diskseq(const LoopDevice *d);
/* LOOP_CHANGE_FD gives an attachment a new diskseq (the kernel reports a
 * media change) without a detach. The holder of d, which kept the device
 * open all along and so knows no detach happened, makes d follow it:
 * reopen and detach then act on the attachment under its new diskseq. */
void loop_device_follow_media_change(LoopDevice *d, uint64_t diskseq);
bool loop_device_dio_refused(const LoopDevice *d);

/* A new, non-exclusive fd on the same node, O_RDONLY when the device is
 * read-only, else O_RDWR. Always O_CLOEXEC. Returns fd or -errno; -ESTALE if
 * the node holds another attachment by now, -EBADF after detach. */
int loop_device_reopen(const LoopDevice *d);

/* LOOP_SET_CAPACITY. */
int loop_device_refresh_size(LoopDevice *d);

/* LOOP_CLR_FD, then closes d's fd: the kernel (5.x and later) only marks the
 * device and clears it at the last close. Returns LOOP_DETACH_DONE when the
 * device is unbound now, LOOP_DETACH_DEFERRED when it stays bound (autoclear)
 * because another opener still holds it (R7); it goes when they close.
 * Either way d keeps its number/devnum/diskseq but has no fd any more
 * (loop_device_fd() is -1; read_info/reopen/refresh/detach give -EBADF).
 * Errors leave d as it was: -ENXIO if it was not bound, -ESTALE if the node
 * holds another attachment than d's (never clears someone else's). */
enum { LOOP_DETACH_DONE = 0, LOOP_DETACH_DEFERRED = 1 };
int loop_device_detach(LoopDevice *d);

/* loop_info_read(number, fd, LOOP_INFO_IDENTITY): backing_dev/backing_ino
 * are set. Stats the backing file: never on the event loop. -EBADF after
 * detach. */
int loop_device_read_info(const LoopDevice *d, LoopInfo *ret);

/* What loop_device_create() read back and verified (ioctls on its fd and
 * sysfs, never LOOP_GET_STATUS64; uevent_seqnum set), moved
 * into *ret; -ENODATA for a device that was not created by this handle.
 * Saves the caller a second read of the same attachment. */
int loop_device_take_created_info(LoopDevice *d, LoopInfo *ret);

