/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Who besides root may open a loop node: a POSIX access ACL entry for the
 * uid that owns the attachment, the way systemd-logind's uaccess gives a
 * seat's user ACLs on its devices. The node's mode, owner, group and any
 * named-group entries stay as udev or devtmpfs made them; only named-user
 * entries are loopd's, and it keeps at most one: the owner's.
 *
 * Written as the raw "system.posix_acl_access" xattr (no libacl): a header
 * and entries sorted by tag then id, with the mask recomputed as the union
 * of the group class, as setfacl does. Removing the last named entry writes
 * the three base entries, which the kernel turns back into the plain mode
 * (group bits restored from the group entry, not left at the mask).
 *
 * udev re-applies mode and ownership on events with chmod/chown, which keep
 * ACL entries (chmod sets the mask from the group bits: 0660 keeps rw).
 *
 * Whole disk and its partition nodes (loopNpM, as listed in sysfs) alike.
 * These calls touch only /dev nodes and sysfs, never a backing file: fine
 * on the event loop.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define NODE_ACCESS_NONE ((uid_t) -1)

/* Makes the named-user entries of /dev/loop<number> (and its partitions)
 * exactly {uid: r or rw}, or none for NODE_ACCESS_NONE. -ENOENT without a
 * node; -EROFS, -EOPNOTSUPP where /dev cannot carry ACLs. */
int node_access_set(uint32_t number, uid_t uid, bool writable);

/* The named-user entries of /dev/<name> (e.g. "loop3"): up to `max` uids
 * into users (may be NULL), and their permission bits (4 read, 2 write)
 * into perms (may be NULL). Returns how many there are, or -errno. */
int node_access_get(const char *name, uid_t *users, unsigned *perms, unsigned max);
