/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * loopd's D-Bus error names, and the one place where a negative errno from
 * the core becomes an error a person can act on. Only the bus edge includes
 * this header.
 */

#include <systemd/sd-bus.h>

#include "util.h"

#define LOOPD_ERROR_NOT_A_LOOP_DEVICE "org.loopd.Loop1.Error.NotALoopDevice"
#define LOOPD_ERROR_NO_SUCH_DEVICE    "org.loopd.Loop1.Error.NoSuchDevice"
#define LOOPD_ERROR_BUSY              "org.loopd.Loop1.Error.Busy"
#define LOOPD_ERROR_BAD_BACKING_FILE  "org.loopd.Loop1.Error.BadBackingFile"
#define LOOPD_ERROR_NO_FREE_DEVICE    "org.loopd.Loop1.Error.NoFreeDevice"
#define LOOPD_ERROR_QUOTA_EXCEEDED    "org.loopd.Loop1.Error.QuotaExceeded"

#define DBUS_ERROR_INVALID_ARGS  "org.freedesktop.DBus.Error.InvalidArgs"
#define DBUS_ERROR_ACCESS_DENIED "org.freedesktop.DBus.Error.AccessDenied"
#define DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED \
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
#define DBUS_ERROR_FAILED        "org.freedesktop.DBus.Error.Failed"
#define DBUS_ERROR_TIMEOUT       "org.freedesktop.DBus.Error.Timeout"

/* Registers the errno mapping of our names with sd-bus, so that a reply
 * built with sd_bus_error_set() maps back to errno in sd-bus clients. */
void loopd_errors_register(void);

/* Sets *error to `name` with a printf message and returns the errno sd-bus
 * associates with it (negative), for `return bus_error_setf(...)`. */
int bus_error_setf(sd_bus_error *error, const char *name, const char *fmt, ...) _printf_(3, 4);
