/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bus-create.h"
#include "bus-device.h"
#include "bus-manager.h"
#include "bus-operation.h"
#include "bus-options.h"
#include "escape.h"
#include "log.h"

/* ---- Open, Remove, RefreshSize ------------------------------------------------------ */

static LoopdStep step_of(OpKind kind) {
        return kind == OP_OPEN ? STEP_OPEN_DEVICE : kind == OP_REMOVE ? STEP_REMOVE : STEP_REFRESH;
}

/* The Device named by a device string, fresh from sysfs. */
static int lookup_device(Context *c, const char *name, Device **ret, sd_bus_error *error) {
        uint32_t number;
        Device *d;
        int r;

        r = bus_parse_device_name(name, &number, error);
        if (r < 0)
                return r;
        d = devices_get_fresh(c->devices, number);
        if (!d)
                return bus_error_setf(error, LOOPD_ERROR_NO_SUCH_DEVICE,
                                      "loop%" PRIu32 " is not attached to any file.", number);
        *ret = d;
        return 0;
}

static void log_device_event(Operation *op, const char *id, const char *fmt_verb) {
        _cleanup_(freep) char *backing = NULL;
        Device *d = devices_get_attachment(op->c->devices, op->number, op->diskseq);
        char dev[32];

        snprintf(dev, sizeof(dev), "/dev/loop%" PRIu32, op->number);
        LogEntry e = LOG_ENTRY_INIT(LOG_INFO, id);
        log_entry_add(&e, "LOOPD_UID", "%u", (unsigned) op->uid);
        log_entry_add(&e, "LOOPD_PID", "%u", (unsigned) op->pid);
        log_entry_add(&e, "LOOPD_SENDER", "%s", strempty(sd_bus_message_get_sender(op->msg)));
        log_entry_add(&e, "LOOPD_DEVICE", "%s", dev);
        log_entry_add(&e, "LOOPD_DISKSEQ", "%" PRIu64, op->diskseq);
        if (d) {
                backing = name_escape(d->info.backing_file);
                log_entry_add(&e, "LOOPD_BACKING_FILE", "%s", strempty(backing));
                if (d->owner != UID_INVALID)
                        log_entry_add(&e, "LOOPD_OWNER", "%u", (unsigned) d->owner);
        }
        log_entry_send(&e, "%s %s for uid %u", fmt_verb, dev, (unsigned) op->uid);
}

static void on_managed(int r, void *userdata) {
        _cleanup_(operation_freep) Operation *op = userdata;
        char what[32];

        op->in_kernel = false;
        if (op->detached) {
                if (op->kind == OP_OPEN && r >= 0)
                        safe_close(r);
                return;
        }
        snprintf(what, sizeof(what), "loop%" PRIu32, op->number);
        if (r < 0) {
                LoopdStep step = step_of(op->kind);
                operation_fail_errno(TAKE_PTR(op), step, r, what);
                return;
        }
        switch (op->kind) {
        case OP_OPEN: {
                _cleanup_(closep) int fd = r;
                _cleanup_(freep) char *path = NULL;
                Device *d = devices_get_attachment(op->c->devices, op->number, op->diskseq);
                log_device_event(op, LOG_ID_OPENED, op->open_flags == O_RDONLY ? "Opened (read-only)" : "Opened");
                if (!d) { /* gone since: the fd is of no use */
                        operation_fail_errno(TAKE_PTR(op), STEP_OPEN_DEVICE, -ENXIO, what);
                        return;
                }
                path = bus_device_path(d);
                if (op->fd_only)
                        r = sd_bus_reply_method_return(op->msg, "h", fd);
                else
                        r = sd_bus_reply_method_return(op->msg, "osh", path, d->info.path, fd);
                break;
        }
        case OP_REMOVE:
                log_device_event(op, LOG_ID_REMOVED,
                                 r == LOOP_DETACH_DEFERRED ? "Removed (the kernel detaches at the last close)"
                                                           : "Removed");
                r = sd_bus_reply_method_return(op->msg, NULL);
                break;
        default:
                log_device_event(op, LOG_ID_RESIZED, "Refreshed the size of");
                r = sd_bus_reply_method_return(op->msg, NULL);
                break;
        }
        if (r < 0)
                log_debug_errno(r, "Cannot send a reply (the caller is gone?)");
}

static void manage_now(Operation *op) {
        Context *c = op->c;
        Device *d = devices_get_attachment(c->devices, op->number, op->diskseq);
        char what[32];
        int r;

        snprintf(what, sizeof(what), "loop%" PRIu32, op->number);
        /* The attachment authorized may have gone while polkit thought; a
         * new one on the same node is not the one the caller named. */
        if (!d) {
                operation_fail_errno(op, STEP_LOOKUP, -ENXIO, what);
                return;
        }
        if (op->kind == OP_REMOVE)
                r = devices_remove(c->devices, d, op->uid, on_managed, op);
        else if (op->kind == OP_REFRESH_SIZE)
                r = devices_refresh_size(c->devices, d, op->uid, on_managed, op);
        else
                r = devices_open(c->devices, d, op->uid, op->open_flags, on_managed, op);
        if (r < 0) {
                operation_fail_errno(op, step_of(op->kind), r == -EAGAIN ? LOOPD_ERRNO_LIMITS : r, what);
                return;
        }
        op->in_kernel = true;
}

static void on_manage_authorized(bool allowed, const sd_bus_error *error, void *userdata) {
        Operation *op = userdata;

        op->polkit = NULL;
        if (!allowed) {
                operation_fail(op, error, "polkit");
                return;
        }
        manage_now(op);
}

static int manage(Context *c, sd_bus_message *m, Device *d, OpKind kind, int open_flags, bool fd_only,
                  sd_bus_error *error) {
        Operation *op;
        uid_t uid;
        pid_t pid;
        int r;

        r = sender_cache_lookup(&c->senders, m, &uid, &pid);
        if (r < 0)
                return r;
        if (kind == OP_OPEN && d->detach_pending) {
                r = bus_error_setf(error, LOOPD_ERROR_NO_SUCH_DEVICE,
                                   "%s is being detached (it goes at its last close); it cannot be opened again.",
                                   d->info.path);
                return refuse(c, m, uid, op_names[kind], error, r, "no-such-device");
        }
        r = operation_new(c, kind, m, uid, pid, error, &op);
        if (r < 0)
                return r;
        op->number = d->number;
        op->diskseq = d->diskseq;
        op->open_flags = open_flags;
        op->fd_only = fd_only;

        /* Owners manage their own devices without asking anyone. */
        if (uid != 0 && d->owner != uid) {
                _cleanup_(freep) char *backing = name_escape(d->info.backing_file);
                char owner[16];
                /* "none" for a device not created through loopd, as the policy
                 * file documents to rule writers. */
                if (d->owner == UID_INVALID)
                        snprintf(owner, sizeof(owner), "none");
                else
                        snprintf(owner, sizeof(owner), "%u", (unsigned) d->owner);
                bool ro = kind == OP_OPEN && (open_flags == O_RDONLY || (d->info.flags & LO_FLAGS_READ_ONLY));
                const char *details[] = {
                        "device", d->info.path,
                        "backing_file", strempty(backing),
                        "device_owner", owner,
                        "operation", op_names[kind],
                        "read_only", ro ? "true" : "false",
                        NULL,
                };
                r = polkit_check(c->polkit, m, uid, LOOPD_ACTION_MANAGE_OTHERS, details, c->polkit_timeout_usec,
                                 on_manage_authorized, op, &op->polkit);
                if (r < 0) {
                        operation_fail_errno(op, STEP_POLKIT, r, "Asking polkit");
                        return 1;
                }
                if (r == 0)
                        return 1;
        }
        manage_now(op);
        return 1;
}

int bus_manager_device_request(Context *c, sd_bus_message *m, Device *d, RequestKind kind, sd_bus_error *error) {
        int flags = O_RDWR, r;

        if (kind == REQUEST_OPEN) {
                r = bus_read_open_options(m, &flags, error);
                if (r < 0)
                        return r;
        }
        return manage(c, m, d, kind == REQUEST_OPEN ? OP_OPEN : kind == REQUEST_REMOVE ? OP_REMOVE : OP_REFRESH_SIZE,
                      flags, true, error);
}

/* The Manager's methods naming a device by string. */
static int method_manager_request(sd_bus_message *m, Context *c, sd_bus_error *error, OpKind kind) {
        const char *name;
        int flags = O_RDWR;
        Device *d;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        if (kind == OP_OPEN) {
                r = bus_read_open_options(m, &flags, error);
                if (r < 0)
                        return r;
        }
        r = lookup_device(c, name, &d, error);
        if (r < 0)
                return r;
        return manage(c, m, d, kind, flags, false, error);
}

static int method_open(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return method_manager_request(m, userdata, error, OP_OPEN);
}

static int method_remove(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return method_manager_request(m, userdata, error, OP_REMOVE);
}

static int method_refresh_size(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return method_manager_request(m, userdata, error, OP_REFRESH_SIZE);
}

static int method_get_device(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        _cleanup_(freep) char *path = NULL;
        const char *name;
        Device *d;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        r = lookup_device(userdata, name, &d, error);
        if (r < 0)
                return r;
        path = bus_device_path(d);
        if (!path)
                return -ENOMEM;
        return sd_bus_reply_method_return(m, "o", path);
}

/* ---- the backlog of unread replies ------------------------------------------------------ */

/* GetManagedObjects describes every device, re-read from the kernel:
 * its cost grows with the devices attached, and loopd answers the bus in
 * arrival order. A uid gets listings_per_sec of them (root: no limit); the
 * rest are refused at once, which costs no more than a Ping. Signals tell
 * a client what changed: nobody needs to poll. */
static int admit_listing(Context *c, sd_bus_message *m) {
        uid_t uid;
        pid_t pid;

        if (!sd_bus_message_is_method_call(m, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"))
                return 0;
        if (sender_cache_lookup(&c->senders, m, &uid, &pid) < 0 || uid == 0 ||
            uid_budget_take(&c->listings, uid, now_usec()))
                return 0;
        if (now_usec() - c->listings_logged_usec > 10 * 1000000ULL) {
                LogEntry e = LOG_ENTRY_INIT(LOG_WARNING, LOG_ID_LIMIT);
                log_entry_add(&e, "LOOPD_UID", "%u", (unsigned) uid);
                log_entry_add(&e, "LOOPD_PID", "%u", (unsigned) pid);
                log_entry_add(&e, "LOOPD_REASON", "limits");
                log_entry_send(&e, "uid %u asks GetManagedObjects more than %u times a second; refusing the rest",
                               (unsigned) uid, c->limits.listings_per_sec);
                c->listings_logged_usec = now_usec();
        }
        (void) sd_bus_reply_method_errorf(m, LOOPD_ERROR_LIMITS_EXCEEDED,
                                          "uid %u asked GetManagedObjects more than %u times a second; follow "
                                          "InterfacesAdded, InterfacesRemoved and PropertiesChanged instead.",
                                          (unsigned) uid, c->limits.listings_per_sec);
        return 1;
}

int bus_manager_admit(Context *c, sd_bus_message *m) {
        uint64_t queued = 0;
        uid_t uid;
        pid_t pid;

        if (admit_listing(c, m) > 0)
                return 1;
        /* loopd's own replies pile up in its write queue when the bus stops
         * taking them (it holds too much for their readers already). While
         * that lasts, each non-root uid gets a budget of requests; past it,
         * its requests are dropped unanswered, so that a caller who never
         * reads cannot make loopd build and hold reply after reply. Root is
         * always served; the budget refills once the queue drains. */
        if (sd_bus_get_n_queued_write(c->bus, &queued) < 0 || queued < c->limits.backlog_messages) {
                if (c->backlog.n > 0)
                        uid_counts_clear(&c->backlog);
                return 0;
        }
        if (!sd_bus_message_is_method_call(m, NULL, NULL) || !sd_bus_message_get_sender(m))
                return 0;
        if (sender_cache_lookup(&c->senders, m, &uid, &pid) < 0 || uid == 0)
                return 0;
        if (uid_counts_get(&c->backlog, uid) < c->limits.backlog_per_uid) {
                (void) uid_counts_inc(&c->backlog, uid);
                return 0;
        }
        if (now_usec() - c->backlog_logged_usec > 10 * 1000000ULL) {
                LogEntry e = LOG_ENTRY_INIT(LOG_WARNING, LOG_ID_LIMIT);
                log_entry_add(&e, "LOOPD_UID", "%u", (unsigned) uid);
                log_entry_add(&e, "LOOPD_REASON", "limits");
                log_entry_send(&e, "uid %u keeps asking while %" PRIu64 " replies wait unread; dropping its requests "
                               "until they are read", (unsigned) uid, queued);
                c->backlog_logged_usec = now_usec();
        }
        return 1;
}

/* ---- registration -------------------------------------------------------------------------- */

static int property_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", LOOPD_VERSION);
}

static int property_quota(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Context *c = userdata;
        return sd_bus_message_append(reply, "u", (uint32_t) c->limits.quota);
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("QuotaPerUser", "u", property_quota, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_NAMES("Create", "ha{sv}", SD_BUS_PARAM(backing_fd) SD_BUS_PARAM(options),
                                 "osh", SD_BUS_PARAM(device) SD_BUS_PARAM(device_path) SD_BUS_PARAM(device_fd),
                                 bus_method_create, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("CreateFromPath", "sa{sv}", SD_BUS_PARAM(path) SD_BUS_PARAM(options),
                                 "osh", SD_BUS_PARAM(device) SD_BUS_PARAM(device_path) SD_BUS_PARAM(device_fd),
                                 bus_method_create_from_path, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("Open", "sa{sv}", SD_BUS_PARAM(name) SD_BUS_PARAM(options),
                                 "osh", SD_BUS_PARAM(device) SD_BUS_PARAM(device_path) SD_BUS_PARAM(device_fd),
                                 method_open, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("GetDevice", "s", SD_BUS_PARAM(name), "o", SD_BUS_PARAM(device), method_get_device,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("Remove", "s", SD_BUS_PARAM(device), "", , method_remove,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("RefreshSize", "s", SD_BUS_PARAM(device), "", , method_refresh_size,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int bus_manager_register(Context *c) {
        int r;

        r = sd_bus_add_object_vtable(c->bus, NULL, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, manager_vtable, c);
        if (r < 0)
                return r;
        r = bus_device_register(c);
        if (r < 0)
                return r;
        return sd_bus_add_object_manager(c->bus, NULL, LOOPD_MANAGER_PATH);
}

