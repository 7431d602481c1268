/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * How the small bus callers that tests run as other uids (loopd-test-caller,
 * loopd-test-owner-probe; loopd-hostile-caller prints bus errors alike)
 * report a failure on stdout, one line each, which the tests split on its
 * first two spaces:
 *   a D-Bus error:    "error NAME MESSAGE"  (exit 1)
 *   a local failure:  "error local MESSAGE" (exit 2)
 * libsystemd only, no GLib: the callers behave like small real clients.
 */

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <systemd/sd-bus.h>

#define EXIT_DBUS_ERROR 1
#define EXIT_LOCAL_ERROR 2

__attribute__((format(printf, 1, 2), noreturn)) static inline void local_error(const char *fmt, ...) {
        va_list ap;

        fputs("error local ", stdout);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
        fflush(stdout);
        exit(EXIT_LOCAL_ERROR);
}

/* "error NAME MESSAGE" for a set bus error, on one line whatever its
 * message holds. */
static inline void print_bus_error(const sd_bus_error *e) {
        printf("error %s ", e->name);
        for (const char *c = e->message ? e->message : ""; *c; c++)
                putchar(*c == '\n' ? ' ' : *c);
        putchar('\n');
        fflush(stdout);
}

/* The outcome of a failed call: the bus error, or @r as a local failure. */
__attribute__((noreturn)) static inline void call_failed(const sd_bus_error *e, int r) {
        if (sd_bus_error_is_set(e)) {
                print_bus_error(e);
                exit(EXIT_DBUS_ERROR);
        }
        local_error("call failed: %s", strerror(-r));
}
