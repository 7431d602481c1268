/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The names of loopd's D-Bus contract, for C: bus name, object paths,
 * interfaces, error names, Create option keys, polkit actions. The one
 * written source of the contract is org.loopd.Loop1.xml beside this file;
 * tests/integration/test-packaging.c checks that every name here appears
 * in it. Included by the daemon, libloopd (installed with loopd.h) and the
 * tests, so that a name is spelled once.
 */

#define LOOPD_BUS_NAME "org.loopd.Loop1"
#define LOOPD_MANAGER_PATH "/org/loopd/Loop1"
#define LOOPD_DEVICE_PATH_PREFIX "/org/loopd/Loop1/device"
#define LOOPD_MANAGER_INTERFACE "org.loopd.Loop1.Manager"
#define LOOPD_DEVICE_INTERFACE "org.loopd.Loop1.Device"

/* loopd's own errors. */
#define LOOPD_ERROR_PREFIX "org.loopd.Loop1.Error."
#define LOOPD_ERROR_NOT_A_LOOP_DEVICE "org.loopd.Loop1.Error.NotALoopDevice"
#define LOOPD_ERROR_NO_SUCH_DEVICE "org.loopd.Loop1.Error.NoSuchDevice"
#define LOOPD_ERROR_BUSY "org.loopd.Loop1.Error.Busy"
#define LOOPD_ERROR_BAD_BACKING_FILE "org.loopd.Loop1.Error.BadBackingFile"
#define LOOPD_ERROR_NO_FREE_DEVICE "org.loopd.Loop1.Error.NoFreeDevice"
#define LOOPD_ERROR_QUOTA_EXCEEDED "org.loopd.Loop1.Error.QuotaExceeded"
#define LOOPD_ERROR_LIMITS_EXCEEDED "org.loopd.Loop1.Error.LimitsExceeded"

/* The standard errors loopd answers with. */
#define LOOPD_DBUS_ERROR_INVALID_ARGS "org.freedesktop.DBus.Error.InvalidArgs"
#define LOOPD_DBUS_ERROR_ACCESS_DENIED "org.freedesktop.DBus.Error.AccessDenied"
#define LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED \
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
#define LOOPD_DBUS_ERROR_TIMEOUT "org.freedesktop.DBus.Error.Timeout"
#define LOOPD_DBUS_ERROR_FAILED "org.freedesktop.DBus.Error.Failed"

/* Keys of the a{sv} options of Create and CreateFromPath. */
#define LOOPD_OPTION_OFFSET "offset"                 /* t */
#define LOOPD_OPTION_SIZE_LIMIT "size-limit"         /* t */
#define LOOPD_OPTION_BLOCK_SIZE "block-size"         /* u */
#define LOOPD_OPTION_READ_ONLY "read-only"           /* b; also an option of Open */
#define LOOPD_OPTION_AUTOCLEAR "autoclear"           /* b */
#define LOOPD_OPTION_PARTSCAN "partscan"             /* b */
#define LOOPD_OPTION_DIRECT_IO "direct-io"           /* b */
#define LOOPD_OPTION_BIND_TO_CALLER "bind-to-caller" /* b */

/* polkit actions (org.loopd.policy). */
#define LOOPD_ACTION_CREATE "org.loopd.create"
#define LOOPD_ACTION_MANAGE_OTHERS "org.loopd.manage-others"

/* OwnerUID of a device that was not created through loopd. */
#define LOOPD_OWNER_NONE 4294967295U
