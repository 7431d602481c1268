/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The daemon's whole state, owned by main()'s run() (hostnamed's Context).
 * main.c builds and tears it down; the bus layer (bus-*.c) works on it.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "bus-sender.h"
#include "devices.h"
#include "jobs.h"
#include "path-opener.h"
#include "polkit.h"
#include "uid-budget.h"
#include "uid-count.h"
#include "uevent.h"

typedef struct Operation Operation;

typedef struct Limits {
        unsigned quota;               /* devices per non-root uid */
        unsigned pending_per_uid;     /* requests of one non-root uid in flight */
        unsigned pending_total;       /* requests of all non-root uids in flight */
        unsigned helpers_per_uid;     /* CreateFromPath helpers alive, stuck ones included */
        unsigned helpers_total;
        unsigned polkit_in_flight;    /* questions out to polkit at once */
        unsigned kernel_threads;      /* worker threads for ordinary kernel jobs */
        unsigned kernel_per_uid;      /* kernel jobs of one non-root uid running at once, stuck
                                       * ones included; its others wait for them */
        unsigned backlog_per_uid;     /* requests served to one non-root uid while loopd's
                                       * replies are not being read */
        unsigned backlog_messages;    /* what "not being read" means: messages queued out */
        unsigned listings_per_sec;    /* GetManagedObjects of one non-root uid a second, */
        unsigned listings_burst;      /* and at once */
} Limits;

typedef struct Context {
        sd_event *event;
        sd_bus *bus;
        Devices *devices;
        JobPool *jobs;
        PathOpener *opener;
        Polkit *polkit;
        UeventMonitor *uevents;

        /* Settings, from the command line. */
        char *state_dir;
        Limits limits;
        uint64_t idle_timeout_usec;      /* 0: never exit on idle */
        uint64_t polkit_timeout_usec;
        uint64_t path_open_timeout_usec;
        uint64_t kernel_timeout_usec;

        /* Who the bus says sent what (uid, pid per unique name). */
        SenderCache senders;

        /* Requests in flight; non-root ones counted per uid. */
        Operation *operations;
        unsigned n_operations, n_operations_unprivileged;
        UidCounts operations_per_uid;

        /* Requests served to each uid while loopd's replies queue up unread. */
        UidCounts backlog;
        UidBudget listings; /* GetManagedObjects per non-root uid */
        uint64_t listings_logged_usec;
        uint64_t backlog_logged_usec;

        /* bind-to-caller: one match for every caller's NameOwnerChanged. */
        sd_bus_slot *name_watch;

        sd_event_source *idle_timer, *status_update, *trim_timer;
        bool exiting;
        bool emitting; /* bus-device.c sends a signal: objects are not re-read meanwhile */
        uint64_t dispatch_usec; /* when the message being served came in: a device read since
                                 * then is fresh for it (GetManagedObjects reads each once) */
} Context;

/* main.c: STATUS= and the idle timer follow the device counts. */
void context_counts_changed(Context *c);
