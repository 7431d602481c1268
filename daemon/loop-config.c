/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <linux/fs.h>

#include "loop-config.h"
#include "util.h"

#define SECTOR_BYTES UINT64_C(512)

/* ---- pure checks ------------------------------------------------------ */

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
        int fl;

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

