/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * What a request asks of a loop device (LoopConfig), whether that makes
 * sense at all (loop_config_validate, pure), and whether a backing fd can
 * serve it (loop_backing_check). Part of the loop core: no D-Bus, no
 * policy. loop_backing_check() stats the fd (statx with
 * AT_STATX_DONT_SYNC): keep it off the event loop like the rest of the core.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <linux/loop.h>

/* The only flags a caller may ask for. Anything else is -EINVAL (R8). */
#define LOOP_CONFIG_FLAGS_ALLOWED \
        (LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN | LO_FLAGS_DIRECT_IO)

typedef struct LoopConfig {
        uint64_t offset;     /* bytes into the backing file */
        uint64_t size_limit; /* 0: up to the end of the backing file */
        uint32_t block_size; /* 0: kernel default, else power of two in 512..page size */
        uint32_t flags;      /* subset of LOOP_CONFIG_FLAGS_ALLOWED */
} LoopConfig;

/* Static checks that need no file: block size, flag bits, offset and
 * size_limit each <= INT64_MAX and their sum too (the kernel would say
 * EOVERFLOW, but only after a node is taken). -EINVAL on any failure.
 * No alignment is required of offset or size_limit: LOOP_CONFIGURE takes any
 * byte value and rounds the device size down to whole 512-byte sectors. */
int loop_config_validate(const LoopConfig *c);

/*
 * What a backing fd allows, checked without trusting the caller:
 * must be a regular file or a block device, open for reading (O_RDONLY or
 * O_RDWR; O_PATH and O_WRONLY are refused). An fd not open for writing forces
 * LO_FLAGS_READ_ONLY, and so does a read-only block device (BLKROGET) even
 * when opened O_RDWR. The offset must lie before the end of the file, the size
 * limit must not reach past the end, and the device must get at least one
 * 512-byte sector (the kernel would silently make a 0-byte device).
 * c must have passed loop_config_validate(): validation happens once, at the
 * edge. Errors: -EBADF (not an fd / O_PATH / O_WRONLY), -EINVAL (the config
 * does not fit the file), -EMEDIUMTYPE (neither regular file nor block device:
 * directories, pipes, sockets, character devices such as /dev/null).
 * A loop device as backing is allowed (the kernel refuses cycles itself).
 */
typedef struct LoopBacking {
        dev_t st_dev;       /* identity of the backing file, R2 */
        ino_t st_ino;
        mode_t st_mode;
        uid_t st_uid;       /* owner of the backing file, for polkit details */
        uint64_t size;      /* bytes */
        bool writable;      /* fd was opened for writing */
} LoopBacking;

int loop_backing_check(int backing_fd, const LoopConfig *c, LoopBacking *ret, uint32_t *ret_effective_flags);

