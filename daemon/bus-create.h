/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Create and CreateFromPath: read and validate the options (once), reserve
 * a quota slot, get the backing fd (the caller's, or the path helper's),
 * check it and ask polkit (non-root), create on the Devices model, reply
 * with the device and an fd, log it.
 */

#include <systemd/sd-bus.h>

int bus_method_create(sd_bus_message *m, void *userdata, sd_bus_error *error);
int bus_method_create_from_path(sd_bus_message *m, void *userdata, sd_bus_error *error);
