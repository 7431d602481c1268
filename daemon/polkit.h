/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Asking polkit whether the sender of a message may do an action, the way
 * systemd's bus-polkit.c does: asynchronously (the daemon serves others
 * while polkit thinks), subject "system-bus-name" with the sender's unique
 * name (the bus vouches for it; a pid would race), uid 0 never asks,
 * interactive authorization only when the caller's message allows it, and
 * polkit absent means denied for everyone but root.
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

typedef struct PolkitQuery PolkitQuery;

/*
 * uid: the sender's EUID as the bus vouches for it (bus-sender.h).
 * Returns 1 when the answer is known at once (uid 0: allowed; then `done`
 * is not called), 0 when a query is under way (`done` will be called once,
 * unless the query is cancelled), or a negative errno.
 * details: NULL-terminated key, value, key, value... strings.
 */
int polkit_check(sd_bus_message *request, uid_t uid, const char *action, const char *const *details,
                 uint64_t timeout_usec, polkit_done_t done, void *userdata, PolkitQuery **ret);

PolkitQuery *polkit_query_cancel(PolkitQuery *q);
