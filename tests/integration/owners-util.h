/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Helpers of the tests that act as a device's owner and as other uids
 * (test-owners.c, test-names.c, test-open.c, test-properties.c): what a uid
 * can do with a node, asked with its own rights through
 * loopd-test-owner-probe (owner-probe.c); the named-user ACL entries of a
 * node, read from the raw xattr; a private systemd-udevd for the test.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include <glib.h>

#include "fixture.h"

/* The second unprivileged uid: "daemon" (1:1) on Debian. */
#define OTHER_UID 1

/* ---- what a uid can do -------------------------------------------------- */

/* "ok" or the errno name (EACCES, ...) of open(O_RDWR) and open(O_RDONLY)
 * of @dev as @uid (its gid is the same number, no groups). */
typedef struct NodeAccess {
        char rw[16];
        char ro[16];
} NodeAccess;
NodeAccess probe_node(LoopdFixture *f, uid_t uid, const char *dev);
/* "rw=ok ro=EACCES" */
char *node_access_text(const NodeAccess *a);

/* Runs loopd-test-owner-probe as @uid with the arguments after @r. */
void probe_as(LoopdFixture *f, uid_t uid, LoopdRunResult *r, ...) G_GNUC_NULL_TERMINATED;
const char *owner_probe_binary(void);

/* An open node held by @uid (probe "hold"): reads through that fd on
 * demand, the fd closed on demand or when freed. */
typedef struct Holder Holder;
Holder *holder_new(uid_t uid, const char *dev, gboolean ro);
/* "ok" once the node was opened, else "error ERRNO". */
const char *holder_status(Holder *h);
/* "ok HASH" or "error ERRNO" of a read of the first block through its fd. */
char *holder_read(Holder *h);
/* LOOP_CLR_FD through its fd: "ok" or "error ERRNO". */
char *holder_clear(Holder *h);
void holder_close(Holder *h);
void holder_free(Holder *h);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Holder, holder_free)

/* ---- node ACLs ----------------------------------------------------------- */

/* The named-user entries of @dev's access ACL: how many (up to @max into
 * @uids and @perms, 4 r, 2 w), 0 without an ACL. */
guint node_named_users(const char *dev, uid_t *uids, guint *perms, guint max);
/* "none" or "u:65534:rw,u:1:r" */
char *node_acl_text(const char *dev);
/* Removes the named-user entries a test may have left on @dev (after a
 * failure with loopd killed): the next loopd would strip them too, but
 * nothing of a test may outlive it. */
void node_strip_named_users(const char *dev);

/* Every loopd on the machine but @ours, as " PID(cmdline)", or "": each one
 * strips, when it starts, node ACL entries no attachment of its own stands
 * for, so a test judging node access on a shared machine names them when
 * it fails. */
char *other_loopd_instances(pid_t ours);

/* ---- files -------------------------------------------------------------- */

/* FNV-1a 64 of the first 4096 bytes of @path, as the probe prints it. */
char *file_block_hash(const char *path);
/* An image of @size under f->image_dir owned by @uid:@uid 0600 whose first
 * 4096 bytes are random (so a hash names it). */
char *make_marked_image(LoopdFixture *f, const char *name, guint64 size, uid_t uid);
/* Create of @img as nobody through loopd-test-caller (with the option
 * "KEY=T:VALUE" @opt, if given), which exits at once, closing the fd Create
 * returned; it must succeed. The object path and device path, each where
 * asked for (free them). */
void create_as_nobody(LoopdFixture *f, const char *img, const char *opt, char **ret_obj, char **ret_dev);

/* ---- the kernel --------------------------------------------------------- */

guint64 loop_diskseq(guint32 number); /* 0 when not attached */
gboolean loop_autoclear(guint32 number);
/* Waits (scaled) until loopN no longer has @diskseq. */
gboolean wait_attachment_gone(guint32 number, guint64 diskseq, double timeout_sec);
/* Polls (scaled) until @dev's named-user entries are none; TRUE in time. */
gboolean wait_no_named_users(const char *dev, double timeout_sec);
/* Polls (scaled) until @dev carries exactly uid @uid. */
gboolean wait_named_user(const char *dev, uid_t uid, double timeout_sec);

/* ---- systemd-udevd ------------------------------------------------------ */

/*
 * A systemd-udevd for the test's time (Debian package udev), as a real host
 * runs it: the machine's rules act on the real /dev. Its runtime directory
 * is private (a tmpfs on /run in a mount namespace of its own), so nothing
 * of it is left behind, and the host's /run/udev stays as it was. If a udevd
 * already answers on /run/udev/control, that one is used and left alone.
 * Stopped (SIGTERM, then SIGKILL of everything it started) by udevd_stop()
 * or the emergency cleanup; /dev/disk and /dev/block, which it fills with
 * links, are removed again when they were not there before.
 */
typedef struct Udevd Udevd;
/* NULL after g_test_skip() when systemd-udevd, udevadm, unshare or nsenter
 * is missing. */
Udevd *udevd_start(LoopdFixture *f);
/* udevadm settle (in its namespace): every queued event processed. */
void udevd_settle(Udevd *u);
/* udevadm trigger --action=@action ("change", "add") of /sys/block/loopN,
 * then settle. */
void udevd_trigger(Udevd *u, guint32 number, const char *action);
void udevd_stop(Udevd *u);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Udevd, udevd_stop)
