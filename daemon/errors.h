/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The one place where a negative errno becomes a D-Bus error a person can
 * act on. The same errno means different things in different steps (an
 * -EINVAL from checking the backing file is "the options do not fit it",
 * from LOOP_CONFIGURE "the kernel refused to attach"), so the step is part
 * of the question. The error names are the contract's (loopd-protocol.h);
 * sd-bus clients get them mapped back to errnos (loopd_errors_register()).
 */

#include <systemd/sd-bus.h>

#include "loopd-protocol.h"
#include "util.h"

typedef enum LoopdStep {
        STEP_BACKING,     /* checking the backing fd against the options */
        STEP_CREATE,      /* LOOP_CONFIGURE and its read-back */
        STEP_OPEN_PATH,   /* CreateFromPath's helper opening the path */
        STEP_OPEN_DEVICE, /* Open: an fd on the device */
        STEP_REMOVE,
        STEP_REFRESH,
        STEP_POLKIT,      /* asking polkit */
        STEP_LOOKUP,      /* finding the device named */
} LoopdStep;

/* A limit on what one caller (or everyone) may have in flight was reached:
 * LimitsExceeded. Used only between the bus layer's own modules. */
#define LOOPD_ERRNO_LIMITS (-ENOBUFS)
/* The owner records cannot be written (devices_create's DEVICES_ERROR_STATE_DIR). */
#define LOOPD_ERRNO_STATE_DIR (-ENOLCK)

/* Registers the errno mapping of our names with sd-bus. */
void loopd_errors_register(void);

/* Sets *error for errno r in `step` about `subject` (e.g. "/dev/loop3" or
 * "The backing file"; may be NULL) and returns the errno sd-bus associates
 * with the error (negative, never 0), for `return bus_error_errno(...)`. */
int bus_error_errno(sd_bus_error *error, LoopdStep step, int r, const char *subject);

/* Sets *error to `name` with a printf message; returns as above. */
int bus_error_setf(sd_bus_error *error, const char *name, const char *fmt, ...) _printf_(3, 4);

/* The short reason for the audit log's LOOPD_REASON= of a refusal. */
const char *bus_error_reason(const sd_bus_error *error);
