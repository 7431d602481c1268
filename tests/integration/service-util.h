/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Helpers shared by the integration tests of the bus service
 * (test-service.c, test-lifetime.c): what the kernel says about a loop
 * device (sysfs and ioctls, never loopd's own replies), calls to loopd over
 * the fixture's root connection, and a log of the signals loopd emits.
 */

#include <gio/gio.h>
#include <glib.h>

#include "fixture.h"

/* For the bus's own errors; loopd's are in loopd-protocol.h. */
#define DBUS_ERROR_PREFIX "org.freedesktop.DBus.Error."
#define MiB (1024ULL * 1024ULL)

/* A polkit rule that lets uid 65534 create devices, and the fixture
 * options most tests start from. */
extern const char rules_nobody_may_create[];
extern const LoopdFixtureOptions daemon_opts;
extern const LoopdFixtureOptions polkit_daemon_opts;

/* One attachment as the kernel reports it. */
typedef struct KernelLoop {
        guint32 number;
        guint64 devnum;       /* /sys/block/loopN/dev, as makedev() */
        guint64 diskseq;      /* /sys/block/loopN/diskseq */
        char *backing_file;   /* loop/backing_file */
        guint64 offset;       /* loop/offset */
        guint64 size_limit;   /* loop/sizelimit */
        guint64 size;         /* size (sectors) * 512 */
        guint32 block_size;   /* queue/logical_block_size */
        gboolean read_only;   /* ro */
        gboolean autoclear;   /* loop/autoclear */
        gboolean partscan;    /* loop/partscan */
        gboolean direct_io;   /* loop/dio */
} KernelLoop;

void kernel_loop_clear(KernelLoop *k);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(KernelLoop, kernel_loop_clear)

/* "loopN" or "/dev/loopN" → N; aborts on anything else. */
guint32 loop_number_of(const char *dev);
/* FALSE when loopN is not attached (no loop/backing_file). */
gboolean kernel_loop_read(guint32 number, KernelLoop *ret);
gboolean kernel_loop_attached(guint32 number);
/* Backing st_dev / st_ino through LOOP_GET_STATUS64 on an open device fd. */
void kernel_loop_backing_id(int devfd, guint64 *ret_dev, guint64 *ret_ino);

/* Waits (scaled) until loopN is (@attached) or is not attached. */
gboolean wait_attached(guint32 number, gboolean attached, double timeout_sec);

/* Asserts loopN detaches within @timeout_sec (Remove may be deferred to
 * the last close while anyone else holds the node open); names the
 * holders when it does not. */
void assert_detached(guint32 number, double timeout_sec);

/* Sparse image under f->image_dir, root-owned 0644. */
char *make_image(LoopdFixture *f, const char *name, guint64 size);

/* Manager.Create over root's connection (or @conn) with a fresh fd of
 * @image opened with @open_flags. @options: floating a{sv} or NULL.
 * Returns the object path, or NULL with @error. */
char *create_with_fd(GDBusConnection *conn, const char *image, int open_flags, GVariant *options,
                     char **ret_dev, int *ret_devfd, GError **error);
/* The same, asserting success; closes the returned fd unless @ret_devfd. */
char *create_ok(LoopdFixture *f, const char *image, GVariant *options, char **ret_dev, int *ret_devfd);

/* A call on org.loopd.Loop1 over @conn; NULL on error. */
GVariant *loopd_call(GDBusConnection *conn, const char *path, const char *iface, const char *method,
                     GVariant *params, const char *reply_type, GError **error);
/* Properties.GetAll of the Device interface at @obj (a{sv}). */
GVariant *device_properties(GDBusConnection *conn, const char *obj, GError **error);

/* Asserts @props (Device.GetAll) equal what the kernel says about the
 * attachment @devfd is open on: every property, one by one. */
void assert_properties_match_kernel(GVariant *props, int devfd);

/* Asserts @error is the D-Bus error @name (full name). */
void assert_dbus_error(const GError *error, const char *name);

/* losetup as an outsider would; the device ("/dev/loopN"). */
char *losetup_attach(const char *image, const char *extra_arg);
void losetup_detach(const char *dev);

/* Runs @argv (no shell) as root, returns exit status, stdout, stderr. */
int run_command(const char *const *argv, char **ret_out, char **ret_err);

/* Signals loopd emits (InterfacesAdded/Removed, PropertiesChanged). */
typedef struct SignalLog SignalLog;
SignalLog *signal_log_new(GDBusConnection *conn);
void signal_log_free(SignalLog *log);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(SignalLog, signal_log_free)
/* Waits (scaled, iterating the default main context) until a signal
 * @member concerning object @obj arrived (for InterfacesAdded/Removed the
 * object is the first argument; for PropertiesChanged the path). Returns
 * its parameters (ref'd) or NULL on timeout. */
GVariant *signal_log_wait(SignalLog *log, const char *member, const char *obj, double timeout_sec);

/* Spins the default main context for @sec seconds (scaled). */
void spin(double sec);
