/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The loop core. Kernel facts this file relies on were checked on 6.18
 * (Debian 12 VM, see shared/notes); where older kernels differ the comment
 * says so.
 */

#include <dirent.h>
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

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, uint64_t)
#endif

#define LOOP_MAJOR_NUMBER 7
#define BLOCK_EXT_MAJOR_NUMBER 259
#define LOOP_NUMBER_MAX (UINT32_C(1) << 20) /* MINORBITS: exclusive bound */
#define SECTOR_BYTES UINT64_C(512)

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

static inline void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

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

/* ---- sysfs ------------------------------------------------------------ */

/* Reads a sysfs attribute relative to dirfd into buf (NUL-terminated),
 * dropping the one trailing newline the kernel appends. Returns the length or
 * -errno (-ENOENT when the attribute does not exist, e.g. loop/ of an unbound
 * device). -E2BIG if it does not fit. */
static int read_attr(int dirfd, const char *name, char *buf, size_t size) {
        _cleanup_(closep) int fd = -1;
        ssize_t k;
        size_t n;

        fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();

        /* sysfs renders an attribute whole into one page and hands it out in
         * one read, so a read shorter than the buffer is all of it: no second
         * read to see EOF (syscalls are most of what a sysfs read costs). */
        do
                k = read(fd, buf, size - 1);
        while (k < 0 && errno == EINTR);
        if (k < 0)
                return negative_errno();
        n = (size_t) k;
        if (n >= size - 1)
                return -E2BIG;
        if (n > 0 && buf[n - 1] == '\n')
                n--;
        buf[n] = 0;
        return (int) n;
}

static int parse_u64(const char *s, uint64_t *ret) {
        char *end = NULL;
        unsigned long long v;

        if (s[0] < '0' || s[0] > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno != 0 || !end || *end != 0)
                return -EINVAL;
        *ret = (uint64_t) v;
        return 0;
}

static int read_attr_u64(int dirfd, const char *name, uint64_t *ret) {
        char buf[64];
        int r;

        r = read_attr(dirfd, name, buf, sizeof(buf));
        if (r < 0)
                return r;
        return parse_u64(buf, ret);
}

static int read_attr_devnum(int dirfd, const char *name, dev_t *ret) {
        char buf[64], *colon;
        uint64_t ma, mi;
        int r;

        r = read_attr(dirfd, name, buf, sizeof(buf));
        if (r < 0)
                return r;
        colon = strchr(buf, ':');
        if (!colon)
                return -EINVAL;
        *colon = 0;
        if (parse_u64(buf, &ma) < 0 || parse_u64(colon + 1, &mi) < 0 || ma > UINT32_MAX || mi > UINT32_MAX)
                return -EINVAL;
        *ret = makedev((unsigned) ma, (unsigned) mi);
        return 0;
}

static int open_sysfs_block_dir(uint32_t number) {
        char p[sizeof("/sys/block/loop") + 16];
        int fd;

        (void) snprintf(p, sizeof(p), "/sys/block/loop%" PRIu32, number);
        fd = open(p, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ENODEV : negative_errno();
        return fd;
}

/* sysfs prints the backing file with d_path(), which appends " (deleted)" to an
 * unlinked file. A path is not an identity (NOTES #2): this only reports. */
static const char deleted_suffix[] = " (deleted)";

static bool strip_deleted_suffix(char *s) {
        size_t n = strlen(s), k = sizeof(deleted_suffix) - 1;

        if (n < k || strcmp(s + n - k, deleted_suffix) != 0)
                return false;
        s[n - k] = 0;
        return true;
}

/* Which loop device a block devnum is, from the name the kernel gave the disk
 * (/sys/dev/block/MAJ:MIN -> .../block/loopN). Partitions are named loopNpM
 * and fail loop_name_parse(), so only whole loop disks pass. No open. */
static int loop_number_from_devnum(dev_t devnum, uint32_t *ret) {
        char p[64], target[PATH_MAX];
        const char *base;
        ssize_t n;

        (void) snprintf(p, sizeof(p), "/sys/dev/block/%u:%u", major(devnum), minor(devnum));
        n = readlink(p, target, sizeof(target) - 1);
        if (n < 0)
                return -ENOTBLK;
        target[n] = 0;
        base = strrchr(target, '/');
        base = base ? base + 1 : target;
        if (loop_name_parse(base, ret) < 0)
                return -ENOTBLK;
        return 0;
}

static uint64_t fd_diskseq(int fd, uint32_t number) {
        uint64_t seq = 0;
        _cleanup_(closep) int dir = -1;

        if (ioctl(fd, BLKGETDISKSEQ, &seq) == 0)
                return seq;
        /* Kernels before 5.15 have no BLKGETDISKSEQ; sysfs got "diskseq" at the same time, so
         * this fallback mostly matters for odd builds. */
        dir = open_sysfs_block_dir(number);
        if (dir < 0 || read_attr_u64(dir, "diskseq", &seq) < 0)
                return 0;
        return seq;
}

int loop_node_bound(uint32_t number) {
        char p[sizeof("/sys/block/loop/loop/backing_file") + 16];

        if (number >= LOOP_NUMBER_MAX)
                return -EINVAL;
        (void) snprintf(p, sizeof(p), "/sys/block/loop%" PRIu32 "/loop/backing_file", number);
        if (faccessat(AT_FDCWD, p, F_OK, 0) == 0)
                return 1;
        if (errno != ENOENT)
                return negative_errno();
        /* No loop/ directory: unbound, or no such node at all. */
        (void) snprintf(p, sizeof(p), "/sys/block/loop%" PRIu32, number);
        return faccessat(AT_FDCWD, p, F_OK, 0) == 0 ? 0 : -ENODEV;
}

/* Is the attachment `diskseq` still bound on node `number`? From sysfs only. */
static bool attachment_bound(uint32_t number, uint64_t diskseq) {
        char p[sizeof("/sys/block/loop/diskseq") + 16];
        uint64_t now_seq;

        /* By full path, not through a directory fd: every detach asks, and
         * the usual answer (a new diskseq) then takes three syscalls. */
        (void) snprintf(p, sizeof(p), "/sys/block/loop%" PRIu32 "/diskseq", number);
        /* The kernel bumps diskseq on every attach and on every clear. */
        if (diskseq != 0 && read_attr_u64(AT_FDCWD, p, &now_seq) == 0 && now_seq != diskseq)
                return false;
        return loop_node_bound(number) == 1;
}

/* ---- pure checks ------------------------------------------------------ */

int loop_name_parse(const char *s, uint32_t *ret) {
        uint32_t v = 0;

        if (!s)
                return -EINVAL;
        if (strncmp(s, "/dev/", 5) == 0)
                s += 5;
        if (strncmp(s, "loop", 4) != 0)
                return -EINVAL;
        s += 4;
        if (s[0] < '0' || s[0] > '9')
                return -EINVAL;
        if (s[0] == '0' && s[1] != 0)
                return -EINVAL; /* leading zero */
        for (; *s; s++) {
                if (*s < '0' || *s > '9')
                        return -EINVAL;
                v = v * 10 + (uint32_t) (*s - '0');
                if (v >= LOOP_NUMBER_MAX)
                        return -EINVAL;
        }
        if (ret)
                *ret = v;
        return 0;
}

int loop_config_validate(const LoopConfig *c) {
        long page;

        if (!c)
                return -EINVAL;
        if (c->block_size != 0) {
                page = sysconf(_SC_PAGESIZE);
                if (page <= 0)
                        page = 4096;
                /* 6.18 itself accepts up to 64 KiB (large block size support); kernels before
                 * 6.15 stop at the page size. We keep the portable page-size bound. */
                if (c->block_size < 512 || c->block_size > (unsigned long) page ||
                    (c->block_size & (c->block_size - 1)) != 0)
                        return -EINVAL;
        }
        if ((c->flags & ~(uint32_t) LOOP_CONFIG_FLAGS_ALLOWED) != 0)
                return -EINVAL;
        /* The kernel refuses values above LLONG_MAX with EOVERFLOW, but only after a node is
         * taken (loop_set_status_from_info); catch it here, together with the sum. */
        if (c->offset > INT64_MAX || c->size_limit > INT64_MAX ||
            c->size_limit > (uint64_t) INT64_MAX - c->offset)
                return -EINVAL;
        /* No alignment rule for offset or size_limit: LOOP_CONFIGURE takes any byte value and
         * rounds the device size down to whole 512-byte sectors (checked on 6.18). */
        return 0;
}

int loop_backing_check(int backing_fd, const LoopConfig *c, LoopBacking *ret, uint32_t *ret_effective_flags) {
        struct stat st;
        uint64_t size, avail;
        bool writable;
        int fl, r;

        if (backing_fd < 0)
                return -EBADF;
        fl = fcntl(backing_fd, F_GETFL);
        if (fl < 0)
                return negative_errno();
        /* O_PATH fds cannot be read; the kernel's fget() in LOOP_CONFIGURE would not take them
         * either, but we refuse before any node is taken. */
        if (fl & O_PATH)
                return -EBADF;
        switch (fl & O_ACCMODE) {
        case O_RDONLY:
                writable = false;
                break;
        case O_RDWR:
                writable = true;
                break;
        default: /* O_WRONLY: the loop device could not read its own data */
                return -EBADF;
        }

        /* statx with AT_STATX_DONT_SYNC, not fstat: on FUSE (and NFS) a plain
         * stat may ask the file server, and a FUSE server run by the caller
         * could then stall the daemon forever. The cached attributes are what
         * the kernel itself sizes the device from (i_size). */
        struct statx stx;
        if (statx(backing_fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
                  STATX_TYPE | STATX_MODE | STATX_UID | STATX_INO | STATX_SIZE, &stx) < 0)
                return negative_errno();
        st = (struct stat) {
                .st_dev = makedev(stx.stx_dev_major, stx.stx_dev_minor),
                .st_ino = stx.stx_ino,
                .st_mode = stx.stx_mode,
                .st_uid = stx.stx_uid,
                .st_size = (off_t) stx.stx_size,
        };
        if (S_ISREG(st.st_mode)) {
                if (st.st_size < 0)
                        return -EINVAL;
                size = (uint64_t) st.st_size;
        } else if (S_ISBLK(st.st_mode)) {
                int ro = 0;

                if (ioctl(backing_fd, BLKGETSIZE64, &size) < 0)
                        return negative_errno();
                /* A read-only block device opened O_RDWR still opens; the loop device would then
                 * fail every write with EPERM. Treat it as the read-only backing it is. */
                if (ioctl(backing_fd, BLKROGET, &ro) == 0 && ro)
                        writable = false;
        } else
                return -EMEDIUMTYPE;

        r = loop_config_validate(c);
        if (r < 0)
                return r;

        /* The kernel would make a device of 0 sectors out of all of these: offset at or past
         * the end, a size limit past the end (silently clamped), or less than one sector. */
        if (c->offset >= size)
                return -EINVAL;
        avail = size - c->offset;
        if (c->size_limit != 0) {
                if (c->size_limit > avail)
                        return -EINVAL;
                avail = c->size_limit;
        }
        if (avail < SECTOR_BYTES)
                return -EINVAL;

        if (ret)
                *ret = (LoopBacking) {
                        .st_dev = st.st_dev,
                        .st_ino = st.st_ino,
                        .st_mode = st.st_mode,
                        .st_uid = st.st_uid,
                        .size = size,
                        .writable = writable,
                };
        if (ret_effective_flags)
                *ret_effective_flags = c->flags | (writable ? 0 : LO_FLAGS_READ_ONLY);
        return 0;
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
                _cleanup_(closep) int dir = -1;
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
                dir = open_sysfs_block_dir(number);
                if (dir >= 0 && faccessat(dir, "loop/backing_file", F_OK, 0) == 0 &&
                    read_attr_u64(dir, "loop/autoclear", &autoclear) == 0 && autoclear == 0)
                        return -EBUSY;

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
                .devnum = devnum, /* NOTES #1: never mkdev(7, number) */
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
        return loop_device_new_known(fd, number, st.st_rdev, fd_diskseq(fd, number), ret);
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

int loop_attachment_current(uint32_t number, uint64_t *ret_diskseq) {
        _cleanup_(closep) int dir = -1;
        uint64_t seq = 0, seq2 = 0;
        bool bound;
        int r;

        if (!ret_diskseq || number >= LOOP_NUMBER_MAX)
                return -EINVAL;
        dir = open_sysfs_block_dir(number);
        if (dir < 0)
                return dir;
        /* diskseq before and after the bound check: an attach in between
         * changes it, and the caller then falls back to a full read. */
        r = read_attr_u64(dir, "diskseq", &seq);
        if (r < 0)
                return r;
        bound = faccessat(dir, "loop/backing_file", F_OK, 0) == 0;
        r = read_attr_u64(dir, "diskseq", &seq2);
        if (r < 0)
                return r;
        if (seq != seq2)
                return -EAGAIN;
        *ret_diskseq = seq;
        return bound;
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

bool loop_device_dio_refused(const LoopDevice *d) {
        return d->dio_refused;
}

/* lo_file_name (NOTES #4): the backing fd's path as the kernel resolves it,
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

static int read_held_info(int fd, uint32_t number, LoopInfo *ret);

/* Reads the attachment back and compares it with what was asked for
 * (NOTES #5). Vanilla 5.8 ignored lo_sizelimit and partscan in LOOP_CONFIGURE
 * (systemd's loop-util verifies the same way); nothing guarantees a future
 * kernel will not drop a setting silently again. */
static int verify_configured(int fd, uint32_t number, const struct loop_config *cfg, bool *dio_refused,
                             LoopInfo *ret_info) {
        _cleanup_(loop_info_done) LoopInfo sys = { 0 };
        struct { uint32_t lo_flags; } info;
        uint32_t want = cfg->info.lo_flags;
        int r;

        r = read_held_info(fd, number, &sys);
        if (r < 0)
                return r;
        info.lo_flags = sys.flags;
        if (sys.offset != cfg->info.lo_offset || sys.size_limit != cfg->info.lo_sizelimit)
                return -EOPNOTSUPP;
        if (cfg->block_size != 0 && sys.block_size != cfg->block_size)
                return -EOPNOTSUPP;
        if (cfg->info.lo_sizelimit != 0 && sys.size > cfg->info.lo_sizelimit)
                return -EOPNOTSUPP;

        /* Autoclear must match exactly: an unexpected one would make the device vanish at our
         * close, a missing one would leave it behind. */
        if ((info.lo_flags ^ want) & LO_FLAGS_AUTOCLEAR)
                return -EOPNOTSUPP;
        /* The kernel adds PARTSCAN on its own when loop.max_part > 0: only a missing one counts. */
        if ((want & LO_FLAGS_PARTSCAN) && !(info.lo_flags & LO_FLAGS_PARTSCAN))
                return -EOPNOTSUPP;
        /* We asked for RO exactly when the fd was read-only; the kernel also forces it when the
         * backing file has no write_iter. A device the caller meant to write is an error. */
        if ((info.lo_flags & LO_FLAGS_READ_ONLY) && !(want & LO_FLAGS_READ_ONLY))
                return -EROFS;
        if (!(info.lo_flags & LO_FLAGS_READ_ONLY) && (want & LO_FLAGS_READ_ONLY))
                return -EOPNOTSUPP;
        /* Direct I/O: the kernel drops the flag silently when the backing file cannot do
         * O_DIRECT, or the offset or block size does not meet its DIO alignment
         * (lo_can_use_dio()); GET_STATUS64 then reports the effective flags. That is the
         * filesystem's answer, not a kernel defect: report it instead of failing. The kernel
         * also turns DIO on by itself when the backing fd was opened O_DIRECT; fine. */
        if ((want & LO_FLAGS_DIRECT_IO) && !(info.lo_flags & LO_FLAGS_DIRECT_IO))
                *dio_refused = true;
        *ret_info = sys;
        sys = (LoopInfo) { 0 };
        return 0;
}

int loop_device_create(int control_fd, int backing_fd, const LoopConfig *c, LoopDevice **ret) {
        struct loop_config cfg = { 0 };
        uint32_t flags = 0, last_busy_number = UINT32_MAX;
        unsigned same_busy = 0;
        int r, last_error = -EAGAIN, node_flags;

        if (!c || !ret)
                return -EINVAL;
        if (control_fd < 0)
                return -EBADF;

        /* Everything that can be refused is refused before a node is taken. */
        r = loop_config_validate(c);
        if (r < 0)
                return r;
        r = loop_backing_check(backing_fd, c, NULL, &flags);
        if (r < 0)
                return r;

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

        /* NOTES #6: decide from what the inode is before opening it. O_PATH pins the inode
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

int loop_device_open_number(uint32_t number, uint64_t expect_diskseq, int flags, LoopDevice **ret) {
        _cleanup_(loop_device_freep) LoopDevice *d = NULL;
        _cleanup_(closep) int fd = -1;
        char path[sizeof(DEV_LOOP_PREFIX) + 16];
        struct stat st;
        uint32_t n;
        int r;

        if (!ret || number >= LOOP_NUMBER_MAX || (flags != O_RDONLY && flags != O_RDWR))
                return -EINVAL;

        (void) snprintf(path, sizeof(path), DEV_LOOP_PREFIX "%" PRIu32, number);
        fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;
        r = loop_number_from_devnum(st.st_rdev, &n);
        if (r < 0)
                return r;
        if (n != number)
                return -ENOTBLK;

        r = loop_device_new_known(fd, number, st.st_rdev, fd_diskseq(fd, number), &d);
        if (r < 0)
                return r;
        TAKE_FD(fd);
        if (expect_diskseq != 0 && d->diskseq != expect_diskseq)
                return -ESTALE;
        *ret = TAKE_PTR(d);
        return 0;
}

/* -ESTALE when the node no longer holds the attachment d was made for. */
static int check_same_attachment(const LoopDevice *d) {
        uint64_t now_seq;

        if (d->diskseq == 0)
                return 0;
        now_seq = fd_diskseq(d->fd, d->number);
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
         * another opener (a mount, a reopened fd, a forked child) holds it (NOTES #7). */
        d->fd = safe_close(d->fd);
        return attachment_bound(d->number, d->diskseq) ? LOOP_DETACH_DEFERRED : LOOP_DETACH_DONE;
}

/* ---- info ------------------------------------------------------------- */

void loop_info_done(LoopInfo *i) {
        if (!i)
                return;
        free(i->backing_file);
        *i = (LoopInfo) { 0 };
}

static void info_names(LoopInfo *i, uint32_t number) {
        i->number = number;
        (void) snprintf(i->name, sizeof(i->name), "loop%" PRIu32, number);
        (void) snprintf(i->path, sizeof(i->path), DEV_LOOP_PREFIX "%" PRIu32, number);
}

/* Reads loop/backing_file; *ret NULL and 0 returned when unbound. */
static int read_backing_file(int dir, char **ret, bool *ret_deleted) {
        _cleanup_(freep) char *buf = NULL;
        int r;

        /* sysfs attributes are at most a page. */
        buf = malloc(PATH_MAX + 64);
        if (!buf)
                return -ENOMEM;
        r = read_attr(dir, "loop/backing_file", buf, PATH_MAX + 64);
        if (r == -ENOENT) {
                *ret = NULL;
                *ret_deleted = false;
                return 0;
        }
        if (r < 0)
                return r;
        *ret_deleted = strip_deleted_suffix(buf);
        /* Keep only what the name needs: a daemon holds one per attachment,
         * and a page each made 1,000 devices cost 4 MiB. */
        *ret = strdup(buf);
        if (!*ret)
                return -ENOMEM;
        return 1;
}

/* The kernel's uevent counter, read *before* the state it goes with: a
 * uevent emitted before this point describes a change made before it,
 * which the reads that follow see, so its receiver may skip every uevent
 * numbered up to this (devices.c does). 0 when unknown. */
static uint64_t uevent_seqnum_now(void) {
        uint64_t v = 0;

        (void) read_attr_u64(AT_FDCWD, "/sys/kernel/uevent_seqnum", &v);
        return v;
}

/* The attributes under loop/ of a bound node: offset, size limit and the
 * flags only the loop driver knows. -EAGAIN when they vanish (a clear ran). */
static int read_loop_attrs(int dir, LoopInfo *i) {
        static const struct {
                const char *attr;
                uint32_t flag;
        } flag_attrs[] = {
                { "loop/autoclear", LO_FLAGS_AUTOCLEAR },
                { "loop/partscan", LO_FLAGS_PARTSCAN },
                { "loop/dio", LO_FLAGS_DIRECT_IO },
        };
        uint64_t v;
        int r;

        if ((r = read_attr_u64(dir, "loop/offset", &i->offset)) < 0 ||
            (r = read_attr_u64(dir, "loop/sizelimit", &i->size_limit)) < 0)
                return r == -ENOENT ? -EAGAIN : r;
        for (size_t k = 0; k < ELEMENTSOF(flag_attrs); k++) {
                r = read_attr_u64(dir, flag_attrs[k].attr, &v);
                if (r < 0)
                        return r == -ENOENT ? -EAGAIN : r;
                if (v)
                        i->flags |= flag_attrs[k].flag;
        }
        return 0;
}

/* Everything about the attachment on `fd`, which we hold open: the kernel
 * cannot clear it before our close (LOOP_CLR_FD by anyone else only marks
 * it), so unlike loop_info_read_sysfs() nothing needs reading twice. The
 * block layer's answers come from ioctls on the fd, the loop driver's from
 * sysfs: 28 syscalls where a full sysfs read takes 42. Never
 * LOOP_GET_STATUS64: it calls vfs_getattr() on the backing file, which on
 * FUSE asks the (caller's) file server. */
static int read_held_info(int fd, uint32_t number, LoopInfo *ret) {
        _cleanup_(loop_info_done) LoopInfo i = { 0 };
        _cleanup_(closep) int dir = -1;
        struct stat st;
        int ssz = 0, ro = 0, r;

        i.uevent_seqnum = uevent_seqnum_now(); /* first: see there */

        info_names(&i, number);
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISBLK(st.st_mode))
                return -ENOTBLK;
        i.devnum = st.st_rdev;
        i.diskseq = fd_diskseq(fd, number);
        if (ioctl(fd, BLKGETSIZE64, &i.size) < 0 || ioctl(fd, BLKSSZGET, &ssz) < 0 || ioctl(fd, BLKROGET, &ro) < 0)
                return negative_errno();
        i.block_size = (uint32_t) ssz;
        if (ro)
                i.flags |= LO_FLAGS_READ_ONLY;

        dir = open_sysfs_block_dir(number);
        if (dir < 0)
                return dir;
        r = read_backing_file(dir, &i.backing_file, &i.backing_deleted);
        if (r < 0)
                return r;
        if (r == 0)
                return -EIO; /* not bound although LOOP_CONFIGURE said so */
        i.bound = true;
        r = read_loop_attrs(dir, &i);
        if (r < 0)
                return r == -EAGAIN ? -EIO : r;
        *ret = i;
        i = (LoopInfo) { 0 };
        return 0;
}

static int info_read_sysfs_once(uint32_t number, LoopInfo *ret) {
        _cleanup_(closep) int dir = -1;
        _cleanup_(loop_info_done) LoopInfo i = { 0 };
        uint64_t seq_after = 0, v = 0;
        int r;

        i.uevent_seqnum = uevent_seqnum_now(); /* first: see there */

        dir = open_sysfs_block_dir(number);
        if (dir < 0)
                return dir;

        info_names(&i, number);
        r = read_attr_devnum(dir, "dev", &i.devnum);
        if (r < 0)
                return r == -ENOENT ? -ENODEV : r;
        r = read_attr_u64(dir, "diskseq", &i.diskseq);
        if (r < 0 && r != -ENOENT)
                return r;

        r = read_backing_file(dir, &i.backing_file, &i.backing_deleted);
        if (r < 0)
                return r;
        i.bound = r > 0;

        if (i.bound) {
                r = read_loop_attrs(dir, &i);
                if (r < 0)
                        return r;
                if ((r = read_attr_u64(dir, "size", &v)) < 0)
                        return r;
                i.size = v * SECTOR_BYTES; /* sysfs "size" is always in 512-byte sectors */
                if ((r = read_attr_u64(dir, "queue/logical_block_size", &v)) < 0)
                        return r;
                i.block_size = (uint32_t) v;
                if ((r = read_attr_u64(dir, "ro", &v)) < 0)
                        return r;
                if (v)
                        i.flags |= LO_FLAGS_READ_ONLY;
        }

        /* Attach and clear both bump diskseq: equal before and after means one attachment. */
        if (i.diskseq != 0 && (read_attr_u64(dir, "diskseq", &seq_after) < 0 || seq_after != i.diskseq))
                return -EAGAIN;
        if (i.bound && faccessat(dir, "loop/backing_file", F_OK, 0) < 0)
                return -EAGAIN;

        *ret = i;
        i = (LoopInfo) { 0 };
        return 0;
}

int loop_info_read_sysfs(uint32_t number, LoopInfo *ret) {
        int r = -EAGAIN;

        if (!ret || number >= LOOP_NUMBER_MAX)
                return -EINVAL;
        /* A retry only happens when an attach or detach ran while we read. */
        for (unsigned attempt = 0; attempt < 3 && r == -EAGAIN; attempt++)
                r = info_read_sysfs_once(number, ret);
        return r;
}

int loop_device_read_info(const LoopDevice *d, LoopInfo *ret) {
        _cleanup_(loop_info_done) LoopInfo i = { 0 };
        _cleanup_(closep) int dir = -1;
        struct loop_info64 li = { 0 };
        uint64_t size = 0;
        int ssz = 0, r;

        if (!d || !ret)
                return -EINVAL;
        if (d->fd < 0)
                return -EBADF;

        info_names(&i, d->number);
        i.devnum = d->devnum;
        i.diskseq = fd_diskseq(d->fd, d->number);

        if (ioctl(d->fd, LOOP_GET_STATUS64, &li) < 0) {
                if (errno != ENXIO)
                        return negative_errno();
                i.bound = false; /* unbound (or being cleared): everything else stays 0 */
                *ret = i;
                i = (LoopInfo) { 0 };
                return 0;
        }
        i.bound = true;
        i.offset = li.lo_offset;
        i.size_limit = li.lo_sizelimit;
        i.flags = li.lo_flags;
        /* lo_device is huge_encode_dev(st_dev), which equals glibc's dev_t encoding. */
        i.backing_dev = (dev_t) li.lo_device;
        i.backing_ino = li.lo_inode;
        if (ioctl(d->fd, BLKGETSIZE64, &size) < 0 || ioctl(d->fd, BLKSSZGET, &ssz) < 0)
                return negative_errno();
        i.size = size;
        i.block_size = (uint32_t) ssz;

        dir = open_sysfs_block_dir(d->number);
        if (dir < 0)
                return dir;
        r = read_backing_file(dir, &i.backing_file, &i.backing_deleted);
        if (r < 0)
                return r;
        if (r == 0)
                return -EAGAIN; /* cleared between the ioctl and the read */
        if (i.backing_deleted) {
                /* " (deleted)" might be the end of a real name: with the inode in hand we can
                 * tell. Reporting only; no decision rests on the path. */
                struct stat st;
                _cleanup_(freep) char *full = NULL;

                if (asprintf(&full, "%s%s", i.backing_file, deleted_suffix) < 0)
                        return -ENOMEM;
                if (lstat(full, &st) == 0 && st.st_ino == i.backing_ino && st.st_dev == i.backing_dev) {
                        free(i.backing_file);
                        i.backing_file = TAKE_PTR(full);
                        i.backing_deleted = false;
                }
        }

        *ret = i;
        i = (LoopInfo) { 0 };
        return 0;
}

/* ---- enumeration ------------------------------------------------------ */

static int cmp_u32(const void *a, const void *b) {
        uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;

        return x < y ? -1 : x > y;
}

int loop_list_numbers(uint32_t **ret) {
        _cleanup_(closedirp) DIR *dir = NULL;
        _cleanup_(freep) uint32_t *list = NULL;
        size_t n = 0, allocated = 0;
        struct dirent *de;

        if (!ret)
                return -EINVAL;
        dir = opendir("/sys/block");
        if (!dir)
                return negative_errno();

        for (;;) {
                uint32_t number;

                errno = 0;
                de = readdir(dir);
                if (!de) {
                        if (errno != 0)
                                return negative_errno();
                        break;
                }
                if (loop_name_parse(de->d_name, &number) < 0)
                        continue;
                if (n >= allocated) {
                        size_t k = allocated ? allocated * 2 : 16;
                        uint32_t *p;

                        if (k > LOOP_NUMBER_MAX)
                                return -E2BIG;
                        p = realloc(list, k * sizeof(*list));
                        if (!p)
                                return -ENOMEM;
                        list = p;
                        allocated = k;
                }
                list[n++] = number;
        }
        if (n > 0)
                qsort(list, n, sizeof(*list), cmp_u32);
        *ret = TAKE_PTR(list);
        return (int) n;
}
