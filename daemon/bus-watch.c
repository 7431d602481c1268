/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-watch.h"
#include "device-ops.h"
#include "log.h"

static void on_removed(int r, void *userdata) {
        char *what = userdata;

        if (r < 0 && r != -ENXIO)
                log_warning_errno(r, "Cannot remove %s, whose caller is gone", what);
        free(what);
}

void bus_watch_caller_gone(Context *c, const char *name) {
        size_t i = 0;

        for (Device *d; (d = devices_next(c->devices, &i));) {
                char *what;
                int r;

                if (!d->binding || strcmp(d->binding, name) != 0 || d->detach_pending || d->busy)
                        continue;
                LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_CALLER_GONE);
                log_entry_add(&e, "LOOPD_DEVICE", "%s", d->info.path);
                log_entry_add(&e, "LOOPD_SENDER", "%s", name);
                log_entry_add(&e, "LOOPD_OWNER", "%u", (unsigned) d->owner);
                log_entry_send(&e, "%s was bound to %s, which left the bus: removing it", d->info.path, name);
                what = strdup(d->info.path);
                /* Deferred is fine too: the kernel drops it at the last close. */
                r = devices_remove_left_behind(c->devices, d, on_removed, what);
                if (r < 0) {
                        log_error_errno(r, "Cannot remove %s, whose caller is gone", d->info.path);
                        free(what);
                }
        }
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Context *c = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        if (name[0] == ':' && new_owner[0] == 0 && devices_count_bound(c->devices) > 0)
                bus_watch_caller_gone(c, name);
        return 0;
}

typedef struct NameCheck {
        Context *c;
        char name[];
} NameCheck;

static int on_name_check(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        NameCheck *nc = userdata;

        if (sd_bus_message_is_method_error(m, NULL))
                bus_watch_caller_gone(nc->c, nc->name);
        return 0;
}

/* Asks the bus whether `name` is still there; if not, its devices go. */
static void check_name(Context *c, const char *name) {
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        size_t n = strlen(name);
        NameCheck *nc;
        int r;

        nc = malloc(sizeof(*nc) + n + 1);
        if (!nc)
                goto fail;
        nc->c = c;
        memcpy(nc->name, name, n + 1);
        r = sd_bus_call_method_async(c->bus, &slot, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                     "org.freedesktop.DBus", "GetNameOwner", on_name_check, nc, "s", name);
        if (r < 0) {
                free(nc);
                goto fail;
        }
        /* The slot frees nc whenever it goes, answered or not. */
        (void) sd_bus_slot_set_destroy_callback(slot, free);
        (void) sd_bus_slot_set_floating(slot, true);
        return;
fail:
        log_error("Cannot check whether %s is still on the bus; its bound devices stay until loopd restarts",
                  name);
}

static int on_match_installed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Context *c = userdata;
        size_t i = 0;

        if (sd_bus_message_is_method_error(m, NULL)) {
                log_error("The bus refused loopd's NameOwnerChanged match (%s); bound devices stay until loopd "
                          "restarts", sd_bus_message_get_error(m)->name);
                c->name_watch = sd_bus_slot_unref(c->name_watch);
                return 0;
        }
        /* Only now can no NameOwnerChanged be missed: ask about the callers
         * bound before (one may have gone before the match was in place). */
        for (Device *d; (d = devices_next(c->devices, &i));)
                if (d->binding)
                        check_name(c, d->binding);
        return 0;
}

void bus_watch_device(Context *c, Device *d) {
        int r;

        if (!d->binding)
                return;
        if (!c->name_watch) {
                r = sd_bus_add_match_async(c->bus, &c->name_watch,
                                           "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                                           "interface='org.freedesktop.DBus',member='NameOwnerChanged'",
                                           on_name_owner_changed, on_match_installed, c);
                if (r < 0)
                        log_error_errno(r, "Cannot watch callers leaving the bus; bound devices stay until "
                                        "loopd restarts");
                return; /* on_match_installed checks d's caller */
        }
        check_name(c, d->binding);
}

void bus_watch_stop(Context *c) {
        c->name_watch = sd_bus_slot_unref(c->name_watch);
}
