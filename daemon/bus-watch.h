/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * bind-to-caller: a device bound to a caller goes when the caller's bus
 * connection goes. One match on the bus driver's NameOwnerChanged serves
 * every bound device of every caller (a match per device would meet the
 * bus's limit of match rules per connection, 512 on dbus-daemon, and then
 * fail for everyone); a signal naming a bound caller's unique name with no
 * new owner removes its devices. A device bound after its caller may
 * already have gone (between its call and the device's creation) is
 * checked once with GetNameOwner.
 */

#include "context.h"

/* Starts watching d's binding (d->binding must be set). */
void bus_watch_device(Context *c, Device *d);
/* Removes every device bound to `name` (its caller is gone). */
void bus_watch_caller_gone(Context *c, const char *name);
/* Drops the match (at exit). */
void bus_watch_stop(Context *c);
