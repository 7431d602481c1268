/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#include "devices-internal.h"
#include "escape.h"
#include "fd-store.h"
#include "log.h"
#include "node-access.h"

/* See devices.h, "Guards". */

/* ---- guards --------------------------------------------------------------- */

bool device_wants_guard(uid_t owner, uint32_t flags) {
        return owner != 0 && owner != UID_INVALID && !(flags & LO_FLAGS_AUTOCLEAR);
}

static int watch_node(Devices *ds, Device *d) {
        char path[32];

        (void) snprintf(path, sizeof(path), "/dev/loop%" PRIu32, d->number);
        d->watch = inotify_add_watch(ds->inotify_fd, path, IN_CLOSE_WRITE | IN_CLOSE_NOWRITE);
        return d->watch < 0 ? negative_errno() : 0;
}

static void unwatch_node(Devices *ds, Device *d) {
        if (d->watch >= 0)
                (void) inotify_rm_watch(ds->inotify_fd, d->watch);
        d->watch = -1;
}

int device_guard(Devices *ds, Device *d, LoopDevice *keeper) {
        int r;

        assert(!d->guarded && keeper);
        d->keeper = keeper;
        fd_store_keep(d->number, d->diskseq, loop_device_fd(keeper));
        d->guarded = true;
        ds->n_guarded++;
        r = watch_node(ds, d);
        if (r < 0)
                log_warning_errno(r, "Cannot watch /dev/loop%" PRIu32 " for closes; a detach asked by "
                                  "someone else is noticed within %llu s only", d->number,
                                  (unsigned long long) (POLL_INTERVAL_USEC / 1000000));
        r = node_access_set(d->number, d->owner, !(d->info.flags & LO_FLAGS_READ_ONLY));
        if (r < 0)
                log_error_errno(r, "Cannot give uid %u access to /dev/loop%" PRIu32 "; it can use the device "
                                "through the fd it was given only", (unsigned) d->owner, d->number);
        devices_emit_counts(ds);
        return r;
}

LoopDevice *device_unguard(Devices *ds, Device *d) {
        int r;

        if (!d->guarded)
                return NULL;
        /* First the access, then (the caller) the keeper: nobody may open the
         * node with the owner's rights once the attachment can end. */
        r = node_access_set(d->number, NODE_ACCESS_NONE, false);
        if (r < 0 && r != -ENOENT)
                log_error_errno(r, "Cannot withdraw uid %u's access to /dev/loop%" PRIu32, (unsigned) d->owner,
                                d->number);
        unwatch_node(ds, d);
        /* The job that closes the keeper waits for systemd's copy to go
         * (fd_store_sync()): its close may have to be the last. */
        fd_store_forget(d->number, d->diskseq);
        d->guarded = false;
        ds->n_guarded--;
        devices_emit_counts(ds);
        return TAKE_PTR(d->keeper);
}

/* A guarded device was created without autoclear; the flag set now means
 * someone asked for a detach (LOOP_CLR_FD marks a device still open), or
 * the owner set it through its fd. Either way the attachment may end at
 * the last close: withdraw access, then let the kernel have it. */
void device_guard_check(Devices *ds, Device *d) {
        uint64_t autoclear = 0;
        LoopDevice *keeper;

        if (!d->guarded || d->busy)
                return;
        if (loop_sysfs_read_u64(d->number, "loop/autoclear", &autoclear) < 0 || autoclear == 0)
                return;
        LogEntry e = LOG_ENTRY_INIT(LOG_NOTICE, LOG_ID_REMOVED);
        log_entry_add(&e, "LOOPD_DEVICE", "%s", d->info.path);
        log_entry_add(&e, "LOOPD_DISKSEQ", "%" PRIu64, d->diskseq);
        log_entry_add(&e, "LOOPD_OWNER", "%u", (unsigned) d->owner);
        log_entry_send(&e, "A detach of %s (owned by uid %u) was asked outside loopd; access withdrawn, the kernel "
                       "detaches it at its last close", d->info.path, (unsigned) d->owner);
        keeper = device_unguard(ds, d);
        d->detach_pending = true;
        device_emit_changed(ds, d, DEVICE_CHANGED_STATE | DEVICE_CHANGED_INFO);
        devices_release_keeper(ds, d->owner, d->number, d->diskseq, keeper, false);
}

int devices_on_node_closed(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        Devices *ds = userdata;
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        ssize_t n;

        /* Which node does not matter much: a close is rare, and checking
         * every guarded device is a sysfs read each. */
        while ((n = read(fd, buf, sizeof(buf))) > 0)
                ;
        size_t i = 0;
        for (Device *d; (d = devices_next(ds, &i));)
                device_guard_check(ds, d);
        return 0;
}

/* LOOP_CHANGE_FD (allowed on any fd of a read-only device, no capability
 * needed) swapped the backing file of an owned device. For a guarded one
 * the keeper proves no detach happened, so the new diskseq is the same
 * attachment with another file behind it; an autoclear one has no keeper,
 * and the shape of the change says it (see devices.c, sync_one()). What
 * polkit approved was the old file: the device keeps its owner and counts
 * against its quota, but loopd withdraws access and detaches it (at its
 * last close). */
void device_backing_changed(Devices *ds, Device *d, LoopInfo *info) {
        _cleanup_(freep) char *was = name_escape(d->info.backing_file), *now = name_escape(info->backing_file);
        LoopDevice *keeper = device_unguard(ds, d);
        uid_t owner = d->owner;

        /* The keeper held it throughout: its detach is for the new diskseq. */
        loop_device_follow_media_change(keeper, info->diskseq);
        _cleanup_(freep) char *binding = d->binding ? strdup(d->binding) : NULL;
        Device *nd;
        int r;

        LogEntry e = LOG_ENTRY_INIT(LOG_WARNING, LOG_ID_BACKING_CHANGED);
        log_entry_add(&e, "LOOPD_DEVICE", "%s", d->info.path);
        log_entry_add(&e, "LOOPD_DISKSEQ", "%" PRIu64, info->diskseq);
        log_entry_add(&e, "LOOPD_OWNER", "%u", (unsigned) owner);
        log_entry_add(&e, "LOOPD_BACKING_FILE", "%s", strempty(now));
        log_entry_send(&e, "The backing file of %s (uid %u) was swapped from %s to %s (LOOP_CHANGE_FD); "
                       "access withdrawn, detaching it", d->info.path, (unsigned) owner, strempty(was),
                       strempty(now));
        device_drop(ds, d);
        r = device_add(ds, info, owner, binding, &nd);
        if (r < 0) {
                devices_release_keeper(ds, owner, info->number, info->diskseq, keeper, true);
                return;
        }
        OwnerRecord rec = { .number = nd->number, .diskseq = nd->diskseq, .uid = owner, .bound_to = binding };
        r = owner_store_put(ds->store, &rec);
        if (r < 0)
                log_error_errno(r, "Cannot record the owner of %s in the state directory", nd->info.path);
        nd->detach_pending = true;
        if (ds->ev.added)
                ds->ev.added(nd, ds->userdata);
        devices_emit_counts(ds);
        devices_release_keeper(ds, owner, nd->number, nd->diskseq, keeper, true);
}


void devices_partition_event(Devices *ds, uint32_t number) {
        Device *d = devices_get(ds, number);
        int r;

        if (!d || !d->guarded)
                return;
        r = node_access_set(d->number, d->owner, !(d->info.flags & LO_FLAGS_READ_ONLY));
        if (r < 0)
                log_warning_errno(r, "Cannot give uid %u access to the partitions of %s", (unsigned) d->owner,
                                  d->info.path);
}
