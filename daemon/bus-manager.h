/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The bus edge's requests: org.loopd.Loop1.Manager's methods on
 * /org/loopd/Loop1 and the requests of the Device objects. Each handler
 * reads its arguments, validates all of them, authorizes (root: always;
 * owners: their own devices; others: polkit), then starts the operation on
 * the Devices model and replies when it is done. A request in flight is an
 * Operation; every one is counted against its uid (limits.h-style bounds
 * in Context.limits) until it is answered. Never an ioctl here.
 *
 * Every decision is an entry in the journal (log.h): created, opened,
 * resized, removed, refused (with why).
 */

#include "context.h"
#include "loopd-protocol.h"

typedef enum RequestKind {
        REQUEST_OPEN,
        REQUEST_REMOVE,
        REQUEST_REFRESH_SIZE,
} RequestKind;

/* Registers the Manager and the ObjectManager on c->bus. */
int bus_manager_register(Context *c);

/* A request on the Device object d (bus-device.c's methods). */
int bus_manager_device_request(Context *c, sd_bus_message *m, Device *d, RequestKind kind, sd_bus_error *error);

/* For every incoming message, before dispatch: 1 when it is handled here,
 * either refused at once (a uid's GetManagedObjects past its rate) or
 * dropped unanswered because its sender's uid keeps asking while loopd's
 * replies queue up unread (the bus stopped taking them); 0 to dispatch it. */
int bus_manager_admit(Context *c, sd_bus_message *m);

/* At exit: cancels requests in flight (no reply); those the kernel is
 * still working on are let go when it returns. */
void bus_manager_cancel_operations(Context *c);
