/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Small helpers shared by every module: cleanup attributes and explicit
 * hand-over of owned resources, in the style of systemd's macro.h/fd-util.h.
 * Header-only on purpose: nothing here needs a translation unit.
 */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_result_ __attribute__((warn_unused_result))

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Take ownership out of a cleanup variable: the cleanup then sees NULL/-1. */
#define TAKE_PTR(p)                         \
        __extension__ ({                                  \
                __typeof__(p) _p_ = (p);    \
                (p) = NULL;                 \
                _p_;                        \
        })
#define TAKE_FD(fd)                         \
        __extension__ ({                                  \
                int _fd_ = (fd);            \
                (fd) = -1;                  \
                _fd_;                       \
        })

static inline void freep(void *p) {
        free(*(void **) p);
}

/* close() that keeps errno, accepts -1 and returns -1 for assignment. */
static inline int safe_close(int fd) {
        if (fd >= 0) {
                int saved = errno;
                (void) close(fd);
                errno = saved;
        }
        return -1;
}

static inline void closep(int *fd) {
        safe_close(*fd);
}

/* Defines a NULL-tolerant pointer cleanup for a destructor `f` of type T*. */
#define DEFINE_POINTER_CLEANUP(T, f)                    \
        static inline void f##p(T **p) {                \
                if (*p)                                 \
                        f(*p);                          \
        }

/* CLOCK_MONOTONIC in µs, the clock of every deadline and age in loopd. */
static inline uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

/* CLOCK_REALTIME @usec from now: the absolute time that
 * pthread_cond_timedwait() and pthread_mutex_timedlock() take. */
static inline struct timespec realtime_after_usec(uint64_t usec) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += (time_t) (usec / 1000000);
        ts.tv_nsec += (long) (usec % 1000000) * 1000;
        if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
        }
        return ts;
}

/* errno of the last failed libc call, as a negative number, never 0. */
static inline int negative_errno(void) {
        return errno > 0 ? -errno : -EIO;
}

static inline int streq_ptr(const char *a, const char *b) {
        if (!a || !b)
                return a == b;
        return strcmp(a, b) == 0;
}

static inline const char *strempty(const char *s) {
        return s ? s : "";
}
