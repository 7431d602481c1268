/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The loop core. Kernel facts this file relies on were checked on 6.18
 * (Debian 12); where older kernels differ the comment says so.
 */

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include <linux/fs.h>
#include <linux/loop.h>

#include "loop-device.h"

#define LOOP_MAJOR_NUMBER 7
#define BLOCK_EXT_MAJOR_NUMBER 259

/* Create: after this many EBUSY on the same node in a row, stop asking
 * LOOP_CTL_GET_FREE (which keeps naming the lowest unbound node, even when
 * somebody holds it open exclusively without ever configuring it) and make a
 * fresh node with LOOP_CTL_ADD instead. */
#define LOOP_CREATE_SAME_NODE_BUSY_MAX 8
/* Create backoff: sched_yield() for the first two retries (a loser usually
 * only has to let the winner finish its LOOP_CONFIGURE, ~50 µs), then a
 * jittered sleep in [cap/2, cap] with cap 16, 32, 64 µs, then 64 µs. Worst
 * case over all LOOP_CREATE_MAX_ATTEMPTS: ~4 ms asked for, ~7 ms with the
 * default 50 µs timer slack. A loop without any yield starved (measured). */
#define LOOP_CREATE_BACKOFF_MAX_NSEC 64000L
/* Remove backoff cap: 1, 2, 4, 8, 16 ms then 16 ms; worst case ~0.8 s over
 * LOOP_REMOVE_MAX_ATTEMPTS. Runs on a worker thread by contract. */
#define LOOP_REMOVE_BACKOFF_MAX_NSEC 16000000L

#define DEV_LOOP_PREFIX "/dev/loop"

struct LoopDevice {
        int fd;            /* -1 after loop_device_detach() */
        uint32_t number;
        dev_t devnum;
        uint64_t diskseq;  /* 0: the kernel gave none */
        bool dio_refused;
        LoopInfo created;  /* what create verified, read from sysfs; bound=false otherwise */
};

/* Cheap jitter: the low bits of the monotonic clock differ between racing
 * processes, which is all a backoff needs. Not for anything else. */
static long jitter_nsec(long lo, long hi) {
        struct timespec ts;

        if (hi <= lo)
                return lo;
        (void) clock_gettime(CLOCK_MONOTONIC, &ts);
        return lo + (long) (((unsigned long) ts.tv_nsec ^ ((unsigned long) getpid() << 7)) %
                            (unsigned long) (hi - lo + 1));
}

static void sleep_nsec(long nsec) {
        struct timespec ts = { .tv_sec = nsec / 1000000000L, .tv_nsec = nsec % 1000000000L };

        /* An EINTR only shortens one backoff step; the attempt count still bounds the loop. */
        (void) nanosleep(&ts, NULL);
}

static void create_backoff(unsigned attempt) {
        long cap;

        if (attempt < 2) {
                (void) sched_yield();
                return;
        }
        cap = attempt < 5 ? 16000L << (attempt - 2) : LOOP_CREATE_BACKOFF_MAX_NSEC;
        if (cap > LOOP_CREATE_BACKOFF_MAX_NSEC)
                cap = LOOP_CREATE_BACKOFF_MAX_NSEC;
        sleep_nsec(jitter_nsec(cap / 2, cap));
}

static void remove_backoff(unsigned attempt) {
        long cap = attempt < 5 ? 1000000L << attempt : LOOP_REMOVE_BACKOFF_MAX_NSEC;

        if (cap > LOOP_REMOVE_BACKOFF_MAX_NSEC)
                cap = LOOP_REMOVE_BACKOFF_MAX_NSEC;
        sleep_nsec(jitter_nsec(cap / 2, cap));
}

/* ---- loop-control ----------------------------------------------------- */

int loop_control_open(void) {
        int fd;

        fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        return fd;
}

int loop_control_get_free(int control_fd) {
        int r;

        if (control_fd < 0)
                return -EBADF;
        r = ioctl(control_fd, LOOP_CTL_GET_FREE);
        if (r < 0)
                return negative_errno();
        return r;
}

int loop_control_add(int control_fd, int number) {
        int r;

        if (control_fd < 0)
                return -EBADF;
        if (number < -1 || (number >= 0 && (uint32_t) number >= LOOP_NUMBER_MAX))
                return -EINVAL;
        r = ioctl(control_fd, LOOP_CTL_ADD, (long) number);
        if (r < 0)
                return negative_errno();
        return r;
}

int loop_control_remove(int control_fd, uint32_t number) {
        if (control_fd < 0)
                return -EBADF;
        if (number >= LOOP_NUMBER_MAX)
                return -EINVAL;

        for (unsigned attempt = 0;; attempt++) {
                uint64_t autoclear = 0;

                if (ioctl(control_fd, LOOP_CTL_REMOVE, (unsigned long) number) == 0)
                        return 0;
                if (errno != EBUSY)
                        return negative_errno();
                if (attempt + 1 >= LOOP_REMOVE_MAX_ATTEMPTS)
                        return -EBUSY;

                /* The kernel says EBUSY both for a bound node and for an unbound one that is
                 * still open (udev probing, a late closer). Only the latter goes away by itself,
                 * as does a bound one whose detach is pending (autoclear); a plain attachment
                 * will not, so do not wait for it. */
                if (loop_sysfs_read_u64(number, "loop/autoclear", &autoclear) == 0 && autoclear == 0)
                        return -EBUSY; /* loop/ exists: bound, and nothing will clear it */

                remove_backoff(attempt);
        }
}

/* ---- LoopDevice ------------------------------------------------------- */

static int loop_device_new_known(int fd, uint32_t number, dev_t devnum, uint64_t diskseq, LoopDevice **ret) {
        LoopDevice *d;

        d = malloc(sizeof(*d));
        if (!d)
                return -ENOMEM;
        *d = (LoopDevice) {
                .fd = fd,
                .number = number,
                .devnum = devnum, /* R1: never mkdev(7, number) */
                .diskseq = diskseq,
        };
        *ret = d;
        return 0;
}

static int loop_device_new(int fd, uint32_t number, LoopDevice **ret) {
        struct stat st;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;
        return loop_device_new_known(fd, number, st.st_rdev, loop_fd_diskseq(fd, number), ret);
}

LoopDevice *loop_device_free(LoopDevice *d) {
        if (!d)
                return NULL;
        safe_close(d->fd);
        loop_info_done(&d->created);
        free(d);
        return NULL;
}

int loop_device_take_created_info(LoopDevice *d, LoopInfo *ret) {
        if (!d || !ret)
                return -EINVAL;
        if (!d->created.bound)
                return -ENODATA;
        *ret = d->created;
        d->created = (LoopInfo) { 0 };
        return 0;
}

uint32_t loop_device_number(const LoopDevice *d) {
        return d->number;
}

int loop_device_fd(const LoopDevice *d) {
        return d->fd;
}

dev_t loop_device_devnum(const LoopDevice *d) {
        return d->devnum;
}

uint64_t loop_device_diskseq(const LoopDevice *d) {
        return d->diskseq;
}

void loop_device_follow_media_change(LoopDevice *d, uint64_t diskseq) {
        if (d)
                d->diskseq = diskseq;
}

bool loop_device_dio_refused(const LoopDevice *d) {
        return d->dio_refused;
}

/* lo_file_name (R4): the backing fd's path as the kernel resolves it,
 * cut to LO_NAME_SIZE - 1 bytes without splitting a UTF-8 sequence. Best
 * effort: an empty name when /proc is unavailable. */
static void fill_file_name(int backing_fd, uint8_t name[LO_NAME_SIZE]) {
        char proc[64], link[PATH_MAX];
        ssize_t n;
        size_t len;

        memset(name, 0, LO_NAME_SIZE);
        (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", backing_fd);
        n = readlink(proc, link, sizeof(link));
        if (n <= 0)
                return;
        len = (size_t) n;
        if (len > LO_NAME_SIZE - 1) {
                len = LO_NAME_SIZE - 1;
                /* link[len] is the first byte cut off; if it continues a sequence, cut before
                 * that sequence's lead byte too. */
                while (len > 0 && ((unsigned char) link[len] & 0xC0) == 0x80)
                        len--;
        }
        memcpy(name, link, len);
}

/* Reads the attachment back and compares it with what was asked for
 * (R5). Vanilla 5.8 ignored lo_sizelimit and partscan in LOOP_CONFIGURE
 * (systemd's loop-util verifies the same way); nothing guarantees a future
 * kernel will not drop a setting silently again. */
static int verify_configured(int fd, uint32_t number, const struct loop_config *cfg, bool *dio_refused,
                             LoopInfo *ret_info) {
        _cleanup_(loop_info_done) LoopInfo sys = { 0 };
        uint32_t want = cfg->info.lo_flags, got;
        int r;

        /* We hold the fd: nobody can finish clearing it meanwhile. With the
         * identity, a live file whose name ends in " (deleted)" is told from
         * an unlinked one (this runs off the event loop: the backing file
         * may be stat'ed). */
        r = loop_info_read(number, fd, LOOP_INFO_IDENTITY, &sys);
        if (r < 0)
                return r;
        if (!sys.bound)
                return -EIO; /* not bound although LOOP_CONFIGURE said so */
        got = sys.flags;
        if (sys.offset != cfg->info.lo_offset || sys.size_limit != cfg->info.lo_sizelimit)
                return -EOPNOTSUPP;
        if (cfg->block_size != 0 && sys.block_size != cfg->block_size)
                return -EOPNOTSUPP;
        if (cfg->info.lo_sizelimit != 0 && sys.size > cfg->info.lo_sizelimit)
                return -EOPNOTSUPP;

        /* Autoclear must match exactly: an unexpected one would make the device vanish at our
         * close, a missing one would leave it behind. */
        if ((got ^ want) & LO_FLAGS_AUTOCLEAR)
                return -EOPNOTSUPP;
        /* The kernel adds PARTSCAN on its own when loop.max_part > 0: only a missing one counts. */
        if ((want & LO_FLAGS_PARTSCAN) && !(got & LO_FLAGS_PARTSCAN))
                return -EOPNOTSUPP;
        /* We asked for RO exactly when the fd was read-only; the kernel also forces it when the
         * backing file has no write_iter. A device the caller meant to write is an error. */
        if ((got & LO_FLAGS_READ_ONLY) && !(want & LO_FLAGS_READ_ONLY))
                return -EROFS;
        if (!(got & LO_FLAGS_READ_ONLY) && (want & LO_FLAGS_READ_ONLY))
                return -EOPNOTSUPP;
        /* Direct I/O: the kernel drops the flag silently when the backing file cannot do
         * O_DIRECT, or the offset or block size does not meet its DIO alignment
         * (lo_can_use_dio()); GET_STATUS64 then reports the effective flags. That is the
         * filesystem's answer, not a kernel defect: report it instead of failing. The kernel
         * also turns DIO on by itself when the backing fd was opened O_DIRECT; fine. */
        if ((want & LO_FLAGS_DIRECT_IO) && !(got & LO_FLAGS_DIRECT_IO))
                *dio_refused = true;
        *ret_info = sys;
        sys = (LoopInfo) { 0 };
        return 0;
}

int loop_device_create(int control_fd, int backing_fd, const LoopConfig *c, LoopDevice **ret) {
        uint32_t flags = 0;
        int r;

        if (!c || !ret)
                return -EINVAL;
        /* Everything that can be refused is refused before a node is taken. */
        r = loop_config_validate(c);
        if (r < 0)
                return r;
        r = loop_backing_check(backing_fd, c, NULL, &flags);
        if (r < 0)
                return r;
        return loop_device_create_checked(control_fd, backing_fd, c, flags, NULL, NULL, ret);
}

int loop_device_create_checked(int control_fd, int backing_fd, const LoopConfig *c, uint32_t flags,
                               loop_node_claim_t claim, void *claim_userdata, LoopDevice **ret) {
        struct loop_config cfg = { 0 };
        uint32_t last_busy_number = UINT32_MAX;
        unsigned same_busy = 0;
        int r, last_error = -EAGAIN, node_flags;

        assert(c && ret && backing_fd >= 0);
        assert((flags & ~(uint32_t) LOOP_CONFIG_FLAGS_ALLOWED) == 0);
        if (control_fd < 0)
                return -EBADF;

        cfg.fd = (uint32_t) backing_fd;
        cfg.block_size = c->block_size;
        cfg.info.lo_offset = c->offset;
        cfg.info.lo_sizelimit = c->size_limit;
        cfg.info.lo_flags = flags;
        fill_file_name(backing_fd, cfg.info.lo_file_name);

        /* The kernel forces READ_ONLY when the node was opened without write access, so a
         * read-only device can be set up through an O_RDONLY node and the fd we hand out
         * matches the device. */
        node_flags = (flags & LO_FLAGS_READ_ONLY) ? O_RDONLY : O_RDWR;

        for (unsigned attempt = 0; attempt < LOOP_CREATE_MAX_ATTEMPTS; attempt++) {
                _cleanup_(closep) int fd = -1;
                char path[sizeof(DEV_LOOP_PREFIX) + 16];
                bool dio_refused = false;
                int number;

                if (attempt > 0)
                        create_backoff(attempt);

                if (same_busy >= LOOP_CREATE_SAME_NODE_BUSY_MAX) {
                        /* Somebody sits on the node GET_FREE keeps naming. */
                        number = loop_control_add(control_fd, -1);
                        same_busy = 0;
                } else
                        number = loop_control_get_free(control_fd);
                if (number < 0)
                        return number; /* -ENOSPC and friends: no node to be had */

                (void) snprintf(path, sizeof(path), DEV_LOOP_PREFIX "%d", number);
                fd = open(path, node_flags | O_EXCL | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
                if (fd < 0) {
                        int e = errno;

                        /* EBUSY: another creator holds it exclusively. ENOENT/ENXIO: it was
                         * removed, or is being cleared or deleted, since GET_FREE named it. */
                        if (e != EBUSY && e != ENOENT && e != ENXIO)
                                return -e;
                        last_error = -e;
                        if (e == EBUSY) {
                                same_busy = (uint32_t) number == last_busy_number ? same_busy + 1 : 1;
                                last_busy_number = (uint32_t) number;
                        }
                        continue;
                }
                same_busy = 0;
                last_busy_number = UINT32_MAX;

                /* No EINVAL-without-DIO retry here: LOOP_CONFIGURE never refuses DIO. 6.18 (checked)
                 * and the kernels before the 2025 loop_update_dio() rework alike clear the flag
                 * silently when the file cannot do it; only LOOP_SET_DIRECT_IO says EINVAL. */
                if (claim)
                        claim((uint32_t) number, claim_userdata);
                if (ioctl(fd, LOOP_CONFIGURE, &cfg) < 0) {
                        if (errno == EBUSY) {
                                /* Bound by someone who opened it before our O_EXCL open. */
                                last_error = -EBUSY;
                                continue;
                        }
                        return negative_errno();
                }

                /* Bound now: from here on, every failure detaches before the fd closes. */
                LoopInfo verified = { 0 };
                r = verify_configured(fd, (uint32_t) number, &cfg, &dio_refused, &verified);
                if (r >= 0) {
                        LoopDevice *d = NULL;

                        r = loop_device_new_known(fd, (uint32_t) number, verified.devnum, verified.diskseq, &d);
                        if (r < 0)
                                loop_info_done(&verified);
                        if (r >= 0) {
                                d->dio_refused = dio_refused;
                                d->created = verified;
                                TAKE_FD(fd);
                                *ret = d;
                                return 0;
                        }
                }
                /* LOOP_CLR_FD only marks the device; the clear happens at the last close, which
                 * is ours below unless udev or someone else opened it meanwhile (then theirs). */
                (void) ioctl(fd, LOOP_CLR_FD);
                return r;
        }

        return last_error == -EBUSY ? -EAGAIN : last_error;
}

int loop_device_open(const char *path, LoopDevice **ret) {
        _cleanup_(closep) int pfd = -1, fd = -1;
        struct stat st, st2;
        char proc[64];
        uint32_t number;
        int r;

        if (!path || !ret)
                return -EINVAL;

        /* R6: decide from what the inode is before opening it. O_PATH pins the inode
         * without calling the driver's open (no side effect on a tape, a FIFO, a device that
         * blocks), O_NOFOLLOW keeps a symlink a symlink. Re-opening that very inode through
         * /proc/self/fd afterwards leaves no window in which the path could be swapped. */
        pfd = open(path, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (pfd < 0)
                return negative_errno();
        if (fstat(pfd, &st) < 0)
                return negative_errno();
        if (S_ISLNK(st.st_mode))
                return -ELOOP;
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;
        /* Whole loop disks always have major 7; the extended range (259) only holds
         * partitions beyond max_part. Both are settled by the kernel's own disk name. */
        if (major(st.st_rdev) != LOOP_MAJOR_NUMBER && major(st.st_rdev) != BLOCK_EXT_MAJOR_NUMBER)
                return -ENOTBLK;
        r = loop_number_from_devnum(st.st_rdev, &number);
        if (r < 0)
                return r;

        (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
        fd = open(proc, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st2) < 0)
                return negative_errno();
        if (!S_ISBLK(st2.st_mode) || st2.st_rdev != st.st_rdev || st2.st_ino != st.st_ino ||
            st2.st_dev != st.st_dev)
                return -ENOTBLK; /* cannot happen: the inode was pinned */

        r = loop_device_new(fd, number, ret);
        if (r < 0)
                return r;
        TAKE_FD(fd);
        return 0;
}

/* fd must be a whole loop disk numbered `number`. Takes fd (closed on failure too). */
static int loop_device_from_fd(int fd, uint32_t number, uint64_t expect_diskseq, LoopDevice **ret) {
        _cleanup_(loop_device_freep) LoopDevice *d = NULL;
        _cleanup_(closep) int owned = fd;
        struct stat st;
        uint32_t n;
        int r;

        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;
        r = loop_number_from_devnum(st.st_rdev, &n);
        if (r < 0)
                return r;
        if (n != number)
                return -ENOTBLK;

        r = loop_device_new_known(fd, number, st.st_rdev, loop_fd_diskseq(fd, number), &d);
        if (r < 0)
                return r;
        TAKE_FD(owned);
        if (expect_diskseq != 0 && d->diskseq != expect_diskseq)
                return -ESTALE;
        *ret = TAKE_PTR(d);
        return 0;
}

int loop_device_adopt_fd(int fd, uint32_t number, uint64_t diskseq, LoopDevice **ret) {
        if (fd < 0 || !ret || number >= LOOP_NUMBER_MAX || diskseq == 0) {
                safe_close(fd);
                return -EINVAL;
        }
        return loop_device_from_fd(fd, number, diskseq, ret);
}

int loop_device_open_number(uint32_t number, uint64_t expect_diskseq, int flags, LoopDevice **ret) {
        char path[sizeof(DEV_LOOP_PREFIX) + 16];
        int fd;

        if (!ret || number >= LOOP_NUMBER_MAX || (flags != O_RDONLY && flags != O_RDWR))
                return -EINVAL;

        (void) snprintf(path, sizeof(path), DEV_LOOP_PREFIX "%" PRIu32, number);
        fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        return loop_device_from_fd(fd, number, expect_diskseq, ret);
}

/* -ESTALE when the node no longer holds the attachment d was made for. */
static int check_same_attachment(const LoopDevice *d) {
        uint64_t now_seq;

        if (d->diskseq == 0)
                return 0;
        now_seq = loop_fd_diskseq(d->fd, d->number);
        if (now_seq != 0 && now_seq != d->diskseq)
                return -ESTALE;
        return 0;
}

int loop_device_reopen(const LoopDevice *d) {
        _cleanup_(closep) int fd = -1;
        char proc[64];
        int ro = 0, r;

        if (!d || d->fd < 0)
                return -EBADF;
        if (ioctl(d->fd, BLKROGET, &ro) < 0)
                return negative_errno();

        (void) snprintf(proc, sizeof(proc), "/proc/self/fd/%d", d->fd);
        fd = open(proc, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        r = check_same_attachment(d);
        if (r < 0)
                return r;
        return TAKE_FD(fd);
}

int loop_device_refresh_size(LoopDevice *d) {
        if (!d || d->fd < 0)
                return -EBADF;
        if (ioctl(d->fd, LOOP_SET_CAPACITY, 0) < 0)
                return negative_errno();
        return 0;
}

int loop_device_detach(LoopDevice *d) {
        int r;

        if (!d || d->fd < 0)
                return -EBADF;

        /* A non-exclusive fd can outlive its attachment; never clear a newer one. */
        r = check_same_attachment(d);
        if (r < 0)
                return r;

        if (ioctl(d->fd, LOOP_CLR_FD) < 0)
                return negative_errno(); /* -ENXIO: not bound */

        /* Since Linux 5.x LOOP_CLR_FD never clears at once: it sets AUTOCLEAR and, when the
         * caller is the only opener, moves the device to Lo_rundown (new openers get ENXIO);
         * lo_release() clears it at the last close. So close ours, then look, from sysfs and
         * without opening the node, whether this attachment is still there: it is when
         * another opener (a mount, a reopened fd, a forked child) holds it (R7). */
        d->fd = safe_close(d->fd);
        return loop_attachment_bound(d->number, d->diskseq) ? LOOP_DETACH_DEFERRED : LOOP_DETACH_DONE;
}

/* ---- info ------------------------------------------------------------- */

int loop_device_read_info(const LoopDevice *d, LoopInfo *ret) {
        if (!d || !ret)
                return -EINVAL;
        if (d->fd < 0)
                return -EBADF;
        return loop_info_read(d->number, d->fd, LOOP_INFO_IDENTITY, ret);
}
