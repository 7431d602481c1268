/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Who sent a message: the EUID (and pid) the bus vouches for, remembered per
 * unique name.
 *
 * dbus-daemon does not put the sender's credentials on a message; asking
 * the bus driver (GetConnectionCredentials) is a synchronous round trip
 * that blocks the whole event loop. Measured: three such round trips per
 * Create + Remove before this cache. A unique name is never reused
 * while the bus runs (D-Bus specification, "Message Bus Specification:
 * unique connection names"), and the bus fixes a connection's uid when it
 * authenticates, so the answer for a name can never change: remembering it
 * is exact, not a guess. The cache is small and evicts the least recently
 * used name; a name that has gone merely waits for eviction.
 */

#include <stdbool.h>
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
                pid_t pid;
                uint64_t used; /* 0: free slot */
        } entries[SENDER_CACHE_SIZE];
        uint64_t clock;
} SenderCache;

/* The sender's EUID as the bus vouches for it. Never from /proc (sd-bus's
 * SD_BUS_CREDS_AUGMENT): a pid's /proc entry may belong to another process
 * by the time it is read. -errno when the bus cannot say (the sender is
 * gone, say). */
int sender_cache_uid(SenderCache *cache, sd_bus_message *m, uid_t *ret);
/* The same, with the pid that connected (0 if the bus did not say). */
int sender_cache_lookup(SenderCache *cache, sd_bus_message *m, uid_t *ret_uid, pid_t *ret_pid);

/* Everything the bus vouches for about a sender (GetConnectionCredentials,
 * one round trip, not cached): its uid, the pid that connected, and all its
 * group ids (dbus-daemon and dbus-broker give supplementary and primary
 * gids together, unordered, as the kernel's SO_PEERGROUPS had them when
 * the sender connected). */
#define SENDER_GROUPS_MAX 256
typedef struct SenderCreds {
        uid_t uid;
        pid_t pid;
        gid_t groups[SENDER_GROUPS_MAX];
        unsigned n_groups;
        bool has_pid, has_groups;
} SenderCreds;

/* -ENODATA when the bus does not give the uid; a sender with more than
 * SENDER_GROUPS_MAX groups is -E2BIG (fail closed: its groups cannot all
 * be honoured). */
int sender_credentials(sd_bus_message *m, SenderCreds *ret);
