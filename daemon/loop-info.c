/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Reading loop state from the kernel. Kernel facts relied on were checked
 * on 6.18; where older kernels differ the comment says so.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/fs.h>
#include <linux/loop.h>

#include "loop-info.h"

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, uint64_t)
#endif

#define SECTOR_BYTES UINT64_C(512)

/* sysfs prints the backing file with d_path(), which appends " (deleted)" to
 * an unlinked file. A path is not an identity (st_dev/st_ino are): this only
 * reports. */
static const char deleted_suffix[] = " (deleted)";

static inline void closedirp(DIR **d) {
        if (*d)
                (void) closedir(*d);
}

/* ---- sysfs attributes ----------------------------------------------------- */

/* Reads a sysfs attribute relative to dirfd into buf (NUL-terminated),
 * dropping the one trailing newline the kernel appends. Returns the length
 * or -errno (-ENOENT when the attribute does not exist, e.g. loop/ of an
 * unbound device). -E2BIG if it does not fit. */
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

int loop_sysfs_read_u64(uint32_t number, const char *attr, uint64_t *ret) {
        char p[PATH_MAX];

        if (number >= LOOP_NUMBER_MAX)
                return -EINVAL;
        /* By full path, not through a directory fd: one syscall fewer, and
         * callers ask often (every detach). */
        (void) snprintf(p, sizeof(p), "/sys/block/loop%" PRIu32 "/%s", number, attr);
        return read_attr_u64(AT_FDCWD, p, ret);
}

int loop_number_from_devnum(dev_t devnum, uint32_t *ret) {
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

uint64_t loop_fd_diskseq(int fd, uint32_t number) {
        uint64_t seq = 0;

        if (ioctl(fd, BLKGETDISKSEQ, &seq) == 0)
                return seq;
        /* Before 5.15 there is no BLKGETDISKSEQ; sysfs got "diskseq" at the
         * same time, so this fallback mostly matters for odd builds. */
        if (loop_sysfs_read_u64(number, "diskseq", &seq) < 0)
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

bool loop_attachment_bound(uint32_t number, uint64_t diskseq) {
        uint64_t now_seq;

        /* The kernel bumps diskseq on every attach and on every clear. */
        if (diskseq != 0 && loop_sysfs_read_u64(number, "diskseq", &now_seq) == 0 && now_seq != diskseq)
                return false;
        return loop_node_bound(number) == 1;
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

/* ---- names -------------------------------------------------------------- */

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

/* ---- the reader ------------------------------------------------------------ */

void loop_info_done(LoopInfo *i) {
        if (!i)
                return;
        free(i->backing_file);
        *i = (LoopInfo) { 0 };
}

static void info_names(LoopInfo *i, uint32_t number) {
        i->number = number;
        (void) snprintf(i->name, sizeof(i->name), "loop%" PRIu32, number);
        (void) snprintf(i->path, sizeof(i->path), "/dev/loop%" PRIu32, number);
}

/* Reads loop/backing_file: 1 and the name when bound, 0 when not. */
static int read_backing_file(int dir, char **ret, bool *ret_deleted) {
        _cleanup_(freep) char *buf = NULL;
        size_t n, k = sizeof(deleted_suffix) - 1;
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
        n = strlen(buf);
        *ret_deleted = n >= k && strcmp(buf + n - k, deleted_suffix) == 0;
        if (*ret_deleted)
                buf[n - k] = 0;
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

/* Offset, size limit and the flags only the loop driver knows.
 * -EAGAIN when they vanish (a clear ran). */
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

/* The block layer's view of a bound disk: through the fd when we hold one
 * (3 ioctls), else from sysfs. */
static int read_block_attrs(int dir, int fd, LoopInfo *i) {
        uint64_t v;
        int ssz = 0, ro = 0, r;

        if (fd >= 0) {
                if (ioctl(fd, BLKGETSIZE64, &i->size) < 0 || ioctl(fd, BLKSSZGET, &ssz) < 0 ||
                    ioctl(fd, BLKROGET, &ro) < 0)
                        return negative_errno();
                i->block_size = (uint32_t) ssz;
        } else {
                if ((r = read_attr_u64(dir, "size", &v)) < 0)
                        return r;
                i->size = v * SECTOR_BYTES; /* sysfs "size" is always in 512-byte sectors */
                if ((r = read_attr_u64(dir, "queue/logical_block_size", &v)) < 0)
                        return r;
                i->block_size = (uint32_t) v;
                if ((r = read_attr_u64(dir, "ro", &v)) < 0)
                        return r;
                ro = v != 0;
        }
        if (ro)
                i->flags |= LO_FLAGS_READ_ONLY;
        return 0;
}

/* LOOP_GET_STATUS64: the backing file's identity. It stats the backing file
 * (vfs_getattr), which is why it is asked for only off the event loop. */
static int read_identity(int fd, LoopInfo *i) {
        struct loop_info64 li = { 0 };
        struct stat st;
        _cleanup_(freep) char *full = NULL;

        if (ioctl(fd, LOOP_GET_STATUS64, &li) < 0)
                return errno == ENXIO ? -EAGAIN : negative_errno();
        /* lo_device is huge_encode_dev(st_dev), which equals glibc's dev_t encoding. */
        i->backing_dev = (dev_t) li.lo_device;
        i->backing_ino = li.lo_inode;
        if (!i->backing_deleted)
                return 0;
        /* " (deleted)" might be the end of a real name: with the inode in hand
         * we can tell. Reporting only; no decision rests on the path. */
        if (asprintf(&full, "%s%s", i->backing_file, deleted_suffix) < 0)
                return -ENOMEM;
        if (lstat(full, &st) == 0 && st.st_ino == i->backing_ino && st.st_dev == i->backing_dev) {
                free(i->backing_file);
                i->backing_file = TAKE_PTR(full);
                i->backing_deleted = false;
        }
        return 0;
}

static int read_once(uint32_t number, int fd, LoopInfoWhat what, LoopInfo *ret) {
        _cleanup_(loop_info_done) LoopInfo i = { 0 };
        _cleanup_(closep) int dir = -1;
        uint64_t seq_after = 0;
        struct stat st;
        int r;

        i.uevent_seqnum = uevent_seqnum_now(); /* first: see there */
        info_names(&i, number);
        dir = open_sysfs_block_dir(number);
        if (dir < 0)
                return dir;

        if (fd >= 0) {
                if (fstat(fd, &st) < 0)
                        return negative_errno();
                if (!S_ISBLK(st.st_mode))
                        return -ENOTBLK;
                i.devnum = st.st_rdev;
                i.diskseq = loop_fd_diskseq(fd, number);
        } else {
                r = read_attr_devnum(dir, "dev", &i.devnum);
                if (r < 0)
                        return r == -ENOENT ? -ENODEV : r;
                r = read_attr_u64(dir, "diskseq", &i.diskseq);
                if (r < 0 && r != -ENOENT)
                        return r;
        }

        r = read_backing_file(dir, &i.backing_file, &i.backing_deleted);
        if (r < 0)
                return r;
        i.bound = r > 0;
        if (i.bound) {
                r = read_loop_attrs(dir, &i);
                if (r < 0)
                        return r;
                r = read_block_attrs(dir, fd, &i);
                if (r < 0)
                        return r;
                if ((what & LOOP_INFO_IDENTITY) && fd >= 0) {
                        r = read_identity(fd, &i);
                        if (r < 0)
                                return r;
                }
        }

        /* Without an fd nothing holds the attachment while we read: attach
         * and clear both bump diskseq, so equal before and after means one
         * attachment. */
        if (fd < 0) {
                if (i.diskseq != 0 && (read_attr_u64(dir, "diskseq", &seq_after) < 0 || seq_after != i.diskseq))
                        return -EAGAIN;
                if (i.bound && faccessat(dir, "loop/backing_file", F_OK, 0) < 0)
                        return -EAGAIN;
        }

        *ret = i;
        i = (LoopInfo) { 0 };
        return 0;
}

int loop_info_read(uint32_t number, int fd, LoopInfoWhat what, LoopInfo *ret) {
        int r = -EAGAIN;

        if (!ret || number >= LOOP_NUMBER_MAX)
                return -EINVAL;
        /* A retry only happens when an attach or detach ran while we read. */
        for (unsigned attempt = 0; attempt < 3 && r == -EAGAIN; attempt++)
                r = read_once(number, fd, what, ret);
        return r;
}

int loop_info_read_sysfs(uint32_t number, LoopInfo *ret) {
        return loop_info_read(number, -1, 0, ret);
}

/* ---- enumeration ------------------------------------------------------------ */

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
                        p = reallocarray(list, k, sizeof(*list));
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
