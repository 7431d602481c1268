/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * loopd's D-Bus error names, and the one place where a negative errno from
 * the core becomes an error a person can act on. Only the bus edge includes
 * this header.
 */

#include <systemd/sd-bus.h>

#include "util.h"

#include "loopd-protocol.h"

#define DBUS_ERROR_INVALID_ARGS LOOPD_DBUS_ERROR_INVALID_ARGS
#define DBUS_ERROR_ACCESS_DENIED LOOPD_DBUS_ERROR_ACCESS_DENIED
#define DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED
#define DBUS_ERROR_FAILED LOOPD_DBUS_ERROR_FAILED
#define DBUS_ERROR_TIMEOUT LOOPD_DBUS_ERROR_TIMEOUT

/* Registers the errno mapping of our names with sd-bus, so that a reply
 * built with sd_bus_error_set() maps back to errno in sd-bus clients. */
void loopd_errors_register(void);

/* Sets *error to `name` with a printf message and returns the errno sd-bus
 * associates with it (negative), for `return bus_error_setf(...)`. */
int bus_error_setf(sd_bus_error *error, const char *name, const char *fmt, ...) _printf_(3, 4);
