/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Who sent a message: the EUID the bus vouches for, remembered per unique
 * name.
 *
 * dbus-daemon does not put the sender's credentials on a message; sd-bus
 * asks the bus driver (GetConnectionUnixUser), a synchronous round trip
 * that blocks the whole event loop, on every call. Measured here: three
 * such round trips per Create + Remove. A unique name is never reused
 * while the bus runs (D-Bus specification, "Message Bus Specification:
 * unique connection names"), and the bus fixes a connection's uid when it
 * authenticates, so the answer for a name can never change: remembering it
 * is exact, not a guess. The cache is small and evicts the least recently
 * used name; a name that has gone merely waits for eviction.
 */

#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-bus.h>

#define SENDER_CACHE_SIZE 64
/* dbus-daemon names are ":1.N"; a longer name is looked up every time. */
#define SENDER_CACHE_NAME_MAX 32

typedef struct SenderCache {
        struct {
                char name[SENDER_CACHE_NAME_MAX];
                uid_t uid;
                uint64_t used; /* 0: free slot */
        } entries[SENDER_CACHE_SIZE];
        uint64_t clock;
} SenderCache;

/* The sender's EUID as the bus vouches for it (never from /proc: see
 * test-environment.md on SD_BUS_CREDS_AUGMENT). -errno when the bus cannot
 * say (the sender is gone, say). */
int sender_cache_uid(SenderCache *cache, sd_bus_message *m, uid_t *ret);
