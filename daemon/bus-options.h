/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Reading the hostile parts of a request: the a{sv} options of Create,
 * CreateFromPath and Open, and device names/paths. Pure validation: no file is
 * touched, nothing is allocated on the kernel's side. Fuzzed
 * (tests/fuzz/fuzz-options.c).
 */

#include <stdbool.h>
#include <systemd/sd-bus.h>

#include "loop-device.h"

typedef struct CreateOptions {
        LoopConfig config;
        bool bind_to_caller;
} CreateOptions;

/* Reads an a{sv} at the message's read position into *ret. An unknown
 * key, a key given twice, a wrong type or an invalid value sets *error to
 * InvalidArgs naming the key, and returns its negative errno. */
int bus_read_create_options(sd_bus_message *m, CreateOptions *ret, sd_bus_error *error);

/* The a{sv} of Open: only "read-only" b. *ret_flags: O_RDONLY or O_RDWR. */
int bus_read_open_options(sd_bus_message *m, int *ret_flags, sd_bus_error *error);

/* "loopN" or "/dev/loopN" → N, else NotALoopDevice in *error. */
int bus_parse_device_name(const char *s, uint32_t *ret, sd_bus_error *error);

/* An absolute path for CreateFromPath; InvalidArgs otherwise. */
int bus_validate_backing_path(const char *s, sd_bus_error *error);
