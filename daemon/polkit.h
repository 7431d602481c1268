/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Asking polkit whether the sender of a message may do an action, the way
 * systemd's bus-polkit.c does: asynchronously (the daemon serves others
 * while polkit thinks), subject "system-bus-name" with the sender's unique
 * name (the bus vouches for it; a pid would race), uid 0 never asks,
 * interactive authorization only when the caller's message allows it, and
 * polkit absent means denied for everyone but root.
 *
 * Fair queueing: the bus limits how many replies one connection may await
 * (dbus-daemon's max_replies_per_connection, 128 on a stock system bus),
 * and all of loopd's questions to polkit share loopd's one connection. So
 * at most `max_in_flight` questions are out at once; the rest wait inside
 * loopd in one queue per uid, served round robin, so that a few slow or
 * hostile uids cannot fill the bus's limit and have everyone else refused.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#include "util.h"

/* allowed: the caller may go on. Otherwise *error says why, ready to be
 * the method's reply (AccessDenied, InteractiveAuthorizationRequired, or a
 * polkit failure with a message that names it). */
typedef void (*polkit_done_t)(bool allowed, const sd_bus_error *error, void *userdata);

typedef struct Polkit Polkit;
typedef struct PolkitQuery PolkitQuery;

int polkit_new(sd_bus *bus, unsigned max_in_flight, Polkit **ret);
/* Cancels every query (no callbacks). */
Polkit *polkit_free(Polkit *pk);

/*
 * uid: the sender's EUID as the bus vouches for it (bus-sender.h).
 * Returns 1 when the answer is known at once (uid 0: allowed; then `done`
 * is not called), 0 when a query is under way (`done` will be called once,
 * unless the query is cancelled), or a negative errno. The timeout runs
 * from this call, queueing included.
 * details: NULL-terminated key, value, key, value... valid UTF-8 strings.
 */
int polkit_check(Polkit *pk, sd_bus_message *request, uid_t uid, const char *action, const char *const *details,
                 uint64_t timeout_usec, polkit_done_t done, void *userdata, PolkitQuery **ret);

PolkitQuery *polkit_query_cancel(PolkitQuery *q);

/* Questions out to polkit, and waiting in loopd. */
unsigned polkit_in_flight(Polkit *pk);
unsigned polkit_queued(Polkit *pk);
