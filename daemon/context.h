/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The daemon's whole state, owned by main() (hostnamed's Context). The bus
 * layer (bus-manager.c) works on it; main.c sets it up and tears it down.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-sender.h"
#include "devices.h"
#include "uevent.h"

typedef struct Operation Operation;

typedef struct Context {
        sd_event *event;
        sd_bus *bus;
        Devices *devices;
        UeventMonitor *uevents;

        /* Settings, from the command line. */
        char *state_dir;
        unsigned quota;
        uint64_t idle_timeout_usec;      /* 0: never exit on idle */
        uint64_t polkit_timeout_usec;
        uint64_t path_open_timeout_usec;
        unsigned max_pending_per_uid;

        /* Who the bus says sent what (uid per unique name). */
        SenderCache senders;

        /* Requests waiting for polkit or for a path helper. */
        Operation *operations;
        unsigned n_operations;

        sd_event_source *idle_timer;
        bool exiting;
} Context;
