/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * What the tests of hostile callers share (tests/security, tests/stress):
 *
 *   - HostileCaller: tests/lib/hostile-caller.c as any uid, driven line by
 *     line: it keeps the device fds loopd gave it and acts on them with the
 *     owner's own rights, holds requests in flight, floods without reading.
 *   - loopd's footprint (RSS, fds, threads, children) from /proc, and how
 *     long root waits for an answer (Ping, GetManagedObjects, Create and
 *     Remove) while an attack runs: every such test reports its bound and
 *     the figure it measured at it with g_test_message().
 *   - loopd's log in a file, for tests that check what it said.
 *
 * Environment: LOOPD_HOSTILE_CALLER (the built loopd-hostile-caller by
 * default).
 */

#include <glib.h>
#include <sys/types.h>

#include "fixture.h"

G_BEGIN_DECLS

/* A time or duration bound of a test, scaled by $LOOPD_TEST_TIMEOUT_SCALE
 * (loopd under valgrind is that much slower). Every wait in this library
 * is scaled already. */
#define HOSTILE_SCALED(x) ((x) * loopd_test_timeout_scale())

/* ---- a hostile caller ------------------------------------------------------ */

typedef struct HostileCaller HostileCaller;

/* loopd-hostile-caller as @uid:@gid with supplementary @groups ("100,101";
 * NULL: none), waiting until it is connected. @timeout_sec bounds each of
 * its own calls (0: its default, 60 s). Free it before the fixture's
 * teardown (g_autoptr in the test function does). */
HostileCaller *hostile_spawn(LoopdFixture *f, uid_t uid, gid_t gid, const char *groups, double timeout_sec);
/* The same, run through @wrapper (NULL-terminated argv, e.g. unshare and a
 * shell that execs "$0" "$@") after the uid change: the caller's binary and
 * its arguments are appended. */
HostileCaller *hostile_spawn_wrapped(LoopdFixture *f, uid_t uid, gid_t gid, const char *groups,
                                     const char *const *wrapper, double timeout_sec);
/* Sends one command line and returns its one-line answer (free it); fails
 * the test when none comes within @wait_sec (scaled). */
char *hostile_cmd(HostileCaller *h, double wait_sec, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/* Sends a command and does not wait: read its answer with hostile_read(). */
void hostile_send(HostileCaller *h, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
/* The next answer line, NULL after @wait_sec (scaled). */
char *hostile_read(HostileCaller *h, double wait_sec);
pid_t hostile_pid(HostileCaller *h);
/* SIGKILL and reap. NULL-safe. */
void hostile_free(HostileCaller *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(HostileCaller, hostile_free)

/* Splits an answer "ok SLOT OBJ DEV" of create: asserts it is "ok". */
typedef struct HostileDevice {
        guint slot;
        char *object;
        char *device;
} HostileDevice;
void hostile_device_clear(HostileDevice *d);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(HostileDevice, hostile_device_clear)
void hostile_parse_device(const char *answer, HostileDevice *ret);
/* The error name of an answer "error NAME ..." (a pointer into it), or
 * NULL when it is "ok...". */
const char *hostile_error_name(const char *answer);

/* The Device properties (a{sv}) of /dev/loopN as root's GetManagedObjects
 * shows them, or NULL when loopd shows no such device; *object (may be
 * NULL) gets its object path. */
GVariant *hostile_device_properties(LoopdFixture *f, const char *device, char **object);
/* One of them, or NULL. */
GVariant *hostile_device_property(LoopdFixture *f, const char *device, const char *property);

/* Who holds @device ("/dev/loopN") open, and its loop flags, for a
 * failure message: "autoclear=1 held by 123(loopd) 456(cat)" (free it). */
char *hostile_node_holders(const char *device);

/* Field 3 of /proc/PID/stat ('R', 'S', 'D', 'Z'...), 0 when gone. */
char hostile_proc_state(pid_t pid);
/* Whether thread @tid belongs to process @pid. */
gboolean hostile_is_thread_of(pid_t tid, pid_t pid);
/* `losetup --find --show [--read-only] @image` as root, behind loopd's
 * back: "/dev/loopN" (free it). */
char *hostile_losetup(const char *image, gboolean read_only);

/* ---- loopd's footprint -------------------------------------------------------- */

typedef struct LoopdFootprint {
        guint64 rss_kib;  /* VmRSS */
        guint64 hwm_kib;  /* VmHWM: the peak RSS since start */
        guint fds;        /* entries of /proc/PID/fd */
        guint threads;
        guint children;   /* processes whose parent it is (path helpers) */
} LoopdFootprint;
/* FALSE when @pid is gone. */
gboolean loopd_footprint(pid_t pid, LoopdFootprint *ret);
/* "RSS 3.1 MiB (peak 4.0 MiB), 14 fds, 3 threads, 0 children" (free it). */
char *loopd_footprint_text(const LoopdFootprint *fp);

/* ---- root's wait for an answer ---------------------------------------------------- */

/* Milliseconds root waited for loopd's answer to Peer.Ping, or to
 * GetManagedObjects; -1 (and @error) when none came within @timeout_msec
 * (scaled). */
double root_ping_msec(LoopdFixture *f, int timeout_msec, GError **error);
double root_managed_objects_msec(LoopdFixture *f, int timeout_msec, GError **error);
/* Create of @image as root, then Remove of the device: the milliseconds of
 * the pair; -1 and @error on failure (nothing left attached). */
double root_create_remove_msec(LoopdFixture *f, const char *image, int timeout_msec, GError **error);

/* The worst of each over @rounds rounds, for a test's g_test_message(). */
typedef struct RootLatency {
        double ping_msec, objects_msec, create_msec; /* worst seen; -1: a call failed */
        guint failed;
} RootLatency;
void root_latency_sample(LoopdFixture *f, const char *image, guint rounds, int timeout_msec, RootLatency *ret);

/* ---- loopd's log -------------------------------------------------------------------- */

/* loopd_fixture_start_daemon() with loopd's stderr (its log outside
 * systemd) appended to a file, whose path goes to *ret_log (free it). For
 * this start only: a restart logs to stderr again. LOOPD_TEST_WRAPPER
 * (valgrind) still applies. */
gboolean hostile_start_daemon_logged(LoopdFixture *f, const char *const *extra_args, char **ret_log);
/* Waits (scaled) until the file holds a line containing every one of the
 * NULL-terminated needles; that line (free it), or NULL on timeout. */
char *hostile_log_wait_line(const char *path, double timeout_sec, ...) G_GNUC_NULL_TERMINATED;

G_END_DECLS
