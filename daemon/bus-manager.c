/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bus-manager.h"
#include "bus-options.h"
#include "bus-sender.h"
#include "errors.h"
#include "path-opener.h"
#include "polkit.h"

#define ACTION_CREATE "org.loopd.create"
#define ACTION_MANAGE_OTHERS "org.loopd.manage-others"

typedef enum { OP_CREATE, OP_REMOVE, OP_REFRESH_SIZE } OpKind;

struct Operation {
        Context *c;
        Operation *prev, *next;
        OpKind kind;
        sd_bus_message *msg;
        uid_t uid;
        int backing_fd;
        LoopBacking backing; /* devices_check_backing() of backing_fd */
        CreateOptions opts;
        char *backing_path;
        uint32_t number;
        uint64_t diskseq;
        PolkitQuery *polkit;
        PathOpen *path_open;
};

/* Per bound device: the match on its caller's NameOwnerChanged and the
 * first check that the caller is still there. */
typedef struct NameWatch {
        Context *c;
        uint32_t number;
        uint64_t diskseq;
        char *name;
        sd_bus_slot *match;
        sd_bus_slot *check;
} NameWatch;

static void name_watch_free(NameWatch *w) {
        if (!w)
                return;
        sd_bus_slot_unref(w->match);
        sd_bus_slot_unref(w->check);
        free(w->name);
        free(w);
}

/* ---- operations in flight ------------------------------------------- */

static Operation *operation_new(Context *c, OpKind kind, sd_bus_message *m, uid_t uid) {
        Operation *op = calloc(1, sizeof(*op));
        if (!op)
                return NULL;
        op->c = c;
        op->kind = kind;
        op->msg = sd_bus_message_ref(m);
        op->uid = uid;
        op->backing_fd = -1;
        op->next = c->operations;
        if (op->next)
                op->next->prev = op;
        c->operations = op;
        c->n_operations++;
        return op;
}

static void operation_free(Operation *op) {
        Context *c;

        if (!op)
                return;
        c = op->c;
        if (op->prev)
                op->prev->next = op->next;
        else
                c->operations = op->next;
        if (op->next)
                op->next->prev = op->prev;
        c->n_operations--;
        polkit_query_cancel(op->polkit);
        path_open_cancel(op->path_open);
        safe_close(op->backing_fd);
        free(op->backing_path);
        sd_bus_message_unref(op->msg);
        free(op);
}
DEFINE_POINTER_CLEANUP(Operation, operation_free)

void bus_manager_cancel_operations(Context *c) {
        size_t i = 0;

        while (c->operations)
                operation_free(c->operations);
        /* Devices still bound at exit keep their records (the next start
         * watches their callers again), but their name watches must go
         * now: devices_free() emits no removal, and a watch's slots hold a
         * reference on the bus, which would then never be freed. */
        if (!c->devices)
                return;
        for (Device *d; (d = devices_next(c->devices, &i));) {
                name_watch_free(d->bus_data);
                d->bus_data = NULL;
        }
}

static unsigned operations_of(Context *c, uid_t uid) {
        unsigned n = 0;
        for (Operation *op = c->operations; op; op = op->next)
                if (op->uid == uid)
                        n++;
        return n;
}

/* ---- errors ------------------------------------------------------------ */

/* The errno of a failed step, as an error a person can act on. */
static int set_errno_error(sd_bus_error *error, int r, const char *what) {
        switch (r) {
        case -EDQUOT:
                return bus_error_setf(error, LOOPD_ERROR_QUOTA_EXCEEDED,
                                      "You have as many loop devices attached through loopd as one user may "
                                      "(the quota); remove one first.");
        case -ENXIO:
        case -ESTALE:
        case -ENODEV:
                return bus_error_setf(error, LOOPD_ERROR_NO_SUCH_DEVICE,
                                      "%s is not attached (any more); list devices to find it again.", what);
        case -ENOTBLK:
                return bus_error_setf(error, LOOPD_ERROR_NOT_A_LOOP_DEVICE, "%s is not a loop device.", what);
        case -EBUSY:
        case -EAGAIN:
                return bus_error_setf(error, LOOPD_ERROR_BUSY,
                                      "The kernel reports %s busy (another program holds it or races for "
                                      "loop devices); try again.", what);
        case -EBADF:
                return bus_error_setf(error, LOOPD_ERROR_BAD_BACKING_FILE,
                                      "The backing file must be open for reading (O_RDONLY or O_RDWR); "
                                      "O_PATH and write-only descriptors cannot back a loop device.");
        case -EMEDIUMTYPE:
                return bus_error_setf(error, LOOPD_ERROR_BAD_BACKING_FILE,
                                      "The backing file must be a regular file or a block device; "
                                      "directories, pipes, sockets and character devices cannot back a loop device.");
        case -ENOSPC:
        case -EMFILE:
        case -ENFILE:
                return bus_error_setf(error, LOOPD_ERROR_NO_FREE_DEVICE,
                                      "No loop device could be allocated (%s); detach unused ones, or raise "
                                      "the kernel's limit (max_loop).", strerror(-r));
        case -EINVAL:
        case -EOVERFLOW:
                return bus_error_setf(error, DBUS_ERROR_INVALID_ARGS,
                                      "The options do not fit the backing file: the offset must lie before "
                                      "its end and offset plus size-limit must not reach past it.");
        case -EROFS:
                return bus_error_setf(error, LOOPD_ERROR_BAD_BACKING_FILE,
                                      "The backing file can only be used read-only; ask for read-only.");
        case -EOPNOTSUPP:
                return bus_error_setf(error, DBUS_ERROR_FAILED,
                                      "The kernel did not apply the requested settings (block size, size "
                                      "limit or partscan); nothing was attached.");
        case DEVICES_ERROR_STATE_DIR:
                return bus_error_setf(error, DBUS_ERROR_FAILED,
                                      "loopd cannot record the new device's owner: its state directory is full, "
                                      "read-only or gone; nothing was attached. An administrator must free space "
                                      "there (or make it writable) and try again.");
        case -EACCES:
        case -EPERM:
                return bus_error_setf(error, DBUS_ERROR_ACCESS_DENIED, "Permission denied for %s.", what);
        default:
                return bus_error_setf(error, DBUS_ERROR_FAILED, "%s failed: %s.", what, strerror(-r));
        }
}

static void reply_error(sd_bus_message *m, const sd_bus_error *e) {
        (void) sd_bus_reply_method_error(m, e);
}

static void reply_errno(sd_bus_message *m, int r, const char *what) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        set_errno_error(&e, r, what);
        reply_error(m, &e);
}

/* ---- bind-to-caller -------------------------------------------------- */

static void caller_gone(Context *c, uint32_t number, uint64_t diskseq) {
        Device *d = devices_get(c->devices, number);

        if (!d || d->diskseq != diskseq)
                return;
        /* Deferred is fine too: the kernel drops it at the last close. */
        (void) devices_remove(c->devices, d);
}

static int on_name_owner_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        NameWatch *w = userdata;
        const char *name, *old_owner, *new_owner;

        if (sd_bus_message_read(m, "sss", &name, &old_owner, &new_owner) < 0)
                return 0;
        if (strcmp(name, w->name) != 0 || new_owner[0] != 0)
                return 0;
        caller_gone(w->c, w->number, w->diskseq);
        return 0;
}

static int on_name_check(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        NameWatch *w = userdata;

        w->check = sd_bus_slot_unref(w->check);
        if (sd_bus_message_is_method_error(m, NULL))
                caller_gone(w->c, w->number, w->diskseq); /* may free w */
        return 0;
}

static int on_match_installed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        NameWatch *w = userdata;

        /* Only now can no NameOwnerChanged be missed: ask if the caller is
         * still there (it may have gone between its call and our match). */
        (void) sd_bus_call_method_async(w->c->bus, &w->check, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                        "org.freedesktop.DBus", "GetNameOwner", on_name_check, w, "s", w->name);
        return 0;
}

static void watch_caller(Context *c, Device *d) {
        NameWatch *w;
        char match[512];

        if (!d->bound_to || d->bus_data)
                return;
        w = calloc(1, sizeof(*w));
        if (!w)
                return;
        w->c = c;
        w->number = d->number;
        w->diskseq = d->diskseq;
        w->name = strdup(d->bound_to);
        if (!w->name) {
                free(w);
                return;
        }
        snprintf(match, sizeof(match),
                 "type='signal',sender='org.freedesktop.DBus',path='/org/freedesktop/DBus',"
                 "interface='org.freedesktop.DBus',member='NameOwnerChanged',arg0='%s'", w->name);
        d->bus_data = w;
        if (sd_bus_add_match_async(c->bus, &w->match, match, on_name_owner_changed, on_match_installed, w) < 0)
                caller_gone(c, d->number, d->diskseq);
}

void bus_manager_watch_existing(Context *c) {
        size_t i = 0;
        for (Device *d; (d = devices_next(c->devices, &i));)
                watch_caller(c, d);
}

/* ---- device events → signals ------------------------------------------ */

static void on_device_added(Device *d, void *userdata) {
        Context *c = userdata;
        (void) sd_bus_emit_interfaces_added(c->bus, d->object_path, LOOPD_DEVICE_INTERFACE, NULL);
}

static void on_device_removed(Device *d, void *userdata) {
        Context *c = userdata;
        name_watch_free(d->bus_data);
        d->bus_data = NULL;
        (void) sd_bus_emit_interfaces_removed(c->bus, d->object_path, LOOPD_DEVICE_INTERFACE, NULL);
}

static void on_device_changed(Device *d, void *userdata) {
        Context *c = userdata;
        (void) sd_bus_emit_properties_changed(c->bus, d->object_path, LOOPD_DEVICE_INTERFACE, "BackingFile",
                                              "Offset", "SizeLimit", "Size", "BlockSize", "ReadOnly",
                                              "Autoclear", "Partscan", "DirectIO", NULL);
}

const DeviceEvents bus_device_events = {
        .added = on_device_added,
        .removed = on_device_removed,
        .changed = on_device_changed,
};

void bus_manager_on_uevent(const Uevent *ev, void *userdata) {
        Context *c = userdata;
        devices_uevent(c->devices, ev->number, ev->diskseq, ev->seqnum); /* UINT32_MAX (overflow): all */
}

/* ---- Create / CreateFromPath ------------------------------------------- */

static void create_finish(Operation *op) {
        _cleanup_(closep) int fd = -1;
        Context *c = op->c;
        Device *d;
        const char *bound = op->opts.bind_to_caller ? sd_bus_message_get_sender(op->msg) : NULL;
        int r;

        r = devices_create(c->devices, op->backing_fd, &op->backing, &op->opts.config, op->uid, bound, &d, &fd);
        if (r < 0) {
                reply_errno(op->msg, r, "Creating a loop device");
                return;
        }
        if (bound)
                watch_caller(c, d);
        r = sd_bus_reply_method_return(op->msg, "osh", d->object_path, d->info.path, fd);
        if (r < 0 && bound) {
                /* The caller cannot get its device: it would leak. */
                (void) devices_remove(c->devices, d);
        }
}

static void on_create_authorized(bool allowed, const sd_bus_error *error, void *userdata) {
        _cleanup_(operation_freep) Operation *op = userdata;

        op->polkit = NULL; /* finished: freed by polkit.c */
        if (!allowed) {
                reply_error(op->msg, error);
                return;
        }
        create_finish(op);
}

/* With the backing fd in hand (Create, or CreateFromPath after its helper). */
static void create_with_fd(Operation *op) {
        _cleanup_(operation_freep) Operation *owned = op;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        char owner[16];
        int r;

        /* polkit sees the file the fd is, never the caller's string: a rule by
         * path prefix would otherwise allow "/allowed/../elsewhere" or a
         * symlink placed under the prefix (CreateFromPath opens as the caller,
         * following both). */
        free(op->backing_path);
        op->backing_path = NULL;
        /* Only polkit's details need the path, and root is never asked. */
        r = devices_check_backing(op->backing_fd, &op->opts.config, &op->backing,
                                  op->uid != 0 ? &op->backing_path : NULL);
        if (r < 0) {
                reply_errno(op->msg, r, "The backing file");
                return;
        }
        if (op->uid != 0 && devices_count_owned(op->c->devices, op->uid) >= devices_quota(op->c->devices)) {
                reply_errno(op->msg, -EDQUOT, NULL);
                return;
        }
        snprintf(owner, sizeof(owner), "%u", (unsigned) op->backing.st_uid);
        bool ro = (op->opts.config.flags & LO_FLAGS_READ_ONLY) || !op->backing.writable;
        const char *details[] = {
                "backing_file", strempty(op->backing_path),
                "backing_owner", owner,
                "read_only", ro ? "true" : "false",
                "device", "a new loop device",
                "operation", "create",
                NULL,
        };
        r = polkit_check(op->msg, op->uid, ACTION_CREATE, details, op->c->polkit_timeout_usec, on_create_authorized,
                         op, &op->polkit);
        if (r < 0) {
                reply_errno(op->msg, r, "Asking polkit");
                return;
        }
        if (r == 0) {
                TAKE_PTR(owned); /* on_create_authorized has it now */
                return;
        }
        create_finish(op);
}

static int check_pending_limit(Context *c, uid_t uid, sd_bus_error *error) {
        if (uid != 0 && operations_of(c, uid) >= c->max_pending_per_uid)
                return bus_error_setf(error, LOOPD_ERROR_BUSY,
                                      "Too many of your requests are waiting (for polkit or to open files); "
                                      "wait for them to finish.");
        return 0;
}

/* The part Create and CreateFromPath share once their first argument is
 * read: the options, the caller, its limit of requests in flight. */
static int create_operation_new(Context *c, sd_bus_message *m, sd_bus_error *error, Operation **ret) {
        CreateOptions opts;
        Operation *op;
        uid_t uid;
        int r;

        r = bus_read_create_options(m, &opts, error);
        if (r < 0)
                return r;
        r = sender_cache_uid(&c->senders, m, &uid);
        if (r < 0)
                return r;
        r = check_pending_limit(c, uid, error);
        if (r < 0)
                return r;
        op = operation_new(c, OP_CREATE, m, uid);
        if (!op)
                return -ENOMEM;
        op->opts = opts;
        *ret = op;
        return 0;
}

static int method_create(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Context *c = userdata;
        Operation *op;
        int fd, r;

        r = sd_bus_message_read(m, "h", &fd);
        if (r < 0)
                return r;
        r = create_operation_new(c, m, error, &op);
        if (r < 0)
                return r;
        op->backing_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        if (op->backing_fd < 0) {
                r = negative_errno();
                operation_free(op);
                return r;
        }
        create_with_fd(op);
        return 1;
}

static void on_path_opened(int r, int fd, void *userdata) {
        Operation *op = userdata;

        op->path_open = NULL; /* finished: freed by path-opener.c */
        if (r < 0) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                if (r == -EACCES || r == -EPERM)
                        bus_error_setf(&e, DBUS_ERROR_ACCESS_DENIED,
                                       "You (uid %u) may not open '%s'%s: %s.", (unsigned) op->uid,
                                       op->backing_path,
                                       (op->opts.config.flags & LO_FLAGS_READ_ONLY) ? "" : " for writing; ask for read-only",
                                       strerror(-r));
                else if (r == -ETIMEDOUT)
                        bus_error_setf(&e, DBUS_ERROR_TIMEOUT,
                                       "Opening '%s' did not finish in time (a hung file system?).",
                                       op->backing_path);
                else
                        bus_error_setf(&e, LOOPD_ERROR_BAD_BACKING_FILE, "Cannot open '%s' as uid %u: %s.",
                                       op->backing_path, (unsigned) op->uid, strerror(-r));
                reply_error(op->msg, &e);
                operation_free(op);
                return;
        }
        op->backing_fd = fd;
        create_with_fd(op);
}

/* The caller's groups: what the bus vouches for if it does, else the
 * user database's (the groups a login of that uid gets). Never root's. */
static int caller_groups(sd_bus_message *m, uid_t uid, gid_t *ret_gid, gid_t **ret_groups, int *ret_n) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        const gid_t *bus_groups;
        struct passwd pw, *pwp = NULL;
        char buf[4096];
        gid_t *groups;
        int n = 64;

        if (sd_bus_query_sender_creds(m, SD_BUS_CREDS_SUPPLEMENTARY_GIDS | SD_BUS_CREDS_EGID, &creds) >= 0 &&
            sd_bus_creds_get_egid(creds, ret_gid) >= 0) {
                int k = sd_bus_creds_get_supplementary_gids(creds, &bus_groups);
                if (k >= 0) {
                        groups = calloc(k > 0 ? (size_t) k : 1, sizeof(gid_t));
                        if (!groups)
                                return -ENOMEM;
                        memcpy(groups, bus_groups, (size_t) k * sizeof(gid_t));
                        *ret_groups = groups;
                        *ret_n = k;
                        return 0;
                }
        }
        if (getpwuid_r(uid, &pw, buf, sizeof(buf), &pwp) != 0 || !pwp) {
                /* No such user: no groups but the overflow group. */
                *ret_gid = 65534;
                *ret_groups = NULL;
                *ret_n = 0;
                return 0;
        }
        *ret_gid = pw.pw_gid;
        groups = calloc((size_t) n, sizeof(gid_t));
        if (!groups)
                return -ENOMEM;
        if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0) {
                gid_t *more = reallocarray(groups, (size_t) n, sizeof(gid_t));
                if (!more) {
                        free(groups);
                        return -ENOMEM;
                }
                groups = more;
                if (getgrouplist(pw.pw_name, pw.pw_gid, groups, &n) < 0)
                        n = 0;
        }
        *ret_groups = groups;
        *ret_n = n;
        return 0;
}

static int method_create_from_path(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Context *c = userdata;
        _cleanup_(freep) gid_t *groups = NULL;
        const char *path;
        Operation *op;
        gid_t gid;
        int n_groups, r;

        r = sd_bus_message_read(m, "s", &path);
        if (r < 0)
                return r;
        r = bus_validate_backing_path(path, error);
        if (r < 0)
                return r;
        r = create_operation_new(c, m, error, &op);
        if (r < 0)
                return r;
        r = caller_groups(m, op->uid, &gid, &groups, &n_groups);
        if (r < 0) {
                operation_free(op);
                return r;
        }
        op->backing_path = strdup(path);
        if (!op->backing_path) {
                operation_free(op);
                return -ENOMEM;
        }
        r = path_open_as(c->event, path, (op->opts.config.flags & LO_FLAGS_READ_ONLY) ? O_RDONLY : O_RDWR, op->uid, gid,
                         groups, (size_t) n_groups, c->path_open_timeout_usec, on_path_opened, op, &op->path_open);
        if (r < 0) {
                operation_free(op);
                return r;
        }
        return 1;
}

/* ---- Open / Remove / RefreshSize --------------------------------------- */

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

/* The Device named by a method's one string argument (Open, Remove,
 * RefreshSize of the Manager). */
static int read_device_argument(Context *c, sd_bus_message *m, Device **ret, sd_bus_error *error) {
        const char *name;
        int r;

        r = sd_bus_message_read(m, "s", &name);
        if (r < 0)
                return r;
        return lookup_device(c, name, ret, error);
}

static int method_open(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Device *d;
        int r;

        r = read_device_argument(userdata, m, &d, error);
        if (r < 0)
                return r;
        return sd_bus_reply_method_return(m, "o", d->object_path);
}

static void manage_finish(Operation *op) {
        Context *c = op->c;
        Device *d = devices_get(c->devices, op->number);
        char what[32];
        int r;

        snprintf(what, sizeof(what), "loop%" PRIu32, op->number);
        /* The attachment authorized may have gone while polkit thought; a
         * new one on the same node is not the one the caller named. */
        if (!d || d->diskseq != op->diskseq) {
                reply_errno(op->msg, -ENXIO, what);
                return;
        }
        if (op->kind == OP_REMOVE)
                r = devices_remove(c->devices, d);
        else
                r = devices_refresh_size(c->devices, d);
        if (r < 0)
                reply_errno(op->msg, r, what);
        else
                (void) sd_bus_reply_method_return(op->msg, NULL);
}

static void on_manage_authorized(bool allowed, const sd_bus_error *error, void *userdata) {
        _cleanup_(operation_freep) Operation *op = userdata;

        op->polkit = NULL;
        if (!allowed) {
                reply_error(op->msg, error);
                return;
        }
        manage_finish(op);
}

static int manage(Context *c, sd_bus_message *m, Device *d, OpKind kind, sd_bus_error *error) {
        _cleanup_(operation_freep) Operation *op = NULL;
        uid_t uid;
        int r;

        r = sender_cache_uid(&c->senders, m, &uid);
        if (r < 0)
                return r;
        r = check_pending_limit(c, uid, error);
        if (r < 0)
                return r;
        op = operation_new(c, kind, m, uid);
        if (!op)
                return -ENOMEM;
        op->number = d->number;
        op->diskseq = d->diskseq;

        /* Owners manage their own devices without asking anyone. */
        if (uid != 0 && d->owner != uid) {
                char owner[16];
                /* "none" for a device not created through loopd, as the policy
                 * file documents to rule writers. */
                if (d->owner == UID_INVALID)
                        snprintf(owner, sizeof(owner), "none");
                else
                        snprintf(owner, sizeof(owner), "%u", (unsigned) d->owner);
                const char *details[] = {
                        "device", d->info.path,
                        "backing_file", strempty(d->info.backing_file),
                        "device_owner", owner,
                        "operation", kind == OP_REMOVE ? "remove" : "refresh-size",
                        NULL,
                };
                r = polkit_check(m, uid, ACTION_MANAGE_OTHERS, details, c->polkit_timeout_usec, on_manage_authorized,
                                 op, &op->polkit);
                if (r < 0)
                        return r;
                if (r == 0) {
                        TAKE_PTR(op);
                        return 1;
                }
        }
        manage_finish(op);
        return 1;
}

static int method_manager_manage(sd_bus_message *m, void *userdata, sd_bus_error *error, OpKind kind) {
        Device *d;
        int r;

        r = read_device_argument(userdata, m, &d, error);
        if (r < 0)
                return r;
        return manage(userdata, m, d, kind, error);
}

static int method_remove(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return method_manager_manage(m, userdata, error, OP_REMOVE);
}

static int method_refresh_size(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return method_manager_manage(m, userdata, error, OP_REFRESH_SIZE);
}

/* ---- Device objects ---------------------------------------------------- */

static int device_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                       sd_bus_error *error) {
        Context *c = userdata;
        Device *d = devices_get_by_path(c->devices, path);

        if (!d)
                return 0;
        *found = d;
        return 1;
}

static int device_enumerate(sd_bus *bus, const char *path, void *userdata, char ***nodes, sd_bus_error *error) {
        Context *c = userdata;
        size_t n = devices_count(c->devices), k = 0, i = 0;
        char **l;

        l = calloc(n + 1, sizeof(char *));
        if (!l)
                return -ENOMEM;
        for (Device *d; (d = devices_next(c->devices, &i)) && k < n;) {
                l[k] = strdup(d->object_path);
                if (!l[k]) {
                        for (size_t j = 0; j < k; j++)
                                free(l[j]);
                        free(l);
                        return -ENOMEM;
                }
                k++;
        }
        *nodes = l;
        return 1;
}

/* userdata of the Device methods is the Device (from device_find); the
 * Context is the userdata of the fallback vtable's slot. */
static Context *context_of(sd_bus_message *m) {
        return sd_bus_slot_get_userdata(sd_bus_get_current_slot(sd_bus_message_get_bus(m)));
}

static int method_device_remove(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return manage(context_of(m), m, userdata, OP_REMOVE, error);
}

static int method_device_refresh_size(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return manage(context_of(m), m, userdata, OP_REFRESH_SIZE, error);
}

#define DEVICE_PROPERTY_GETTER(fn, sig, expr)                                                               \
        static int fn(sd_bus *bus, const char *path, const char *interface, const char *property,           \
                      sd_bus_message *reply, void *userdata, sd_bus_error *error) {                         \
                Device *d = userdata;                                                                        \
                return sd_bus_message_append(reply, sig, expr);                                              \
        }

DEVICE_PROPERTY_GETTER(property_name, "s", d->info.name)
DEVICE_PROPERTY_GETTER(property_device_path, "s", d->info.path)
DEVICE_PROPERTY_GETTER(property_number, "u", d->number)
DEVICE_PROPERTY_GETTER(property_device_number, "t", (uint64_t) d->info.devnum)
DEVICE_PROPERTY_GETTER(property_diskseq, "t", d->diskseq)
DEVICE_PROPERTY_GETTER(property_backing_device, "t", (uint64_t) d->info.backing_dev)
DEVICE_PROPERTY_GETTER(property_backing_inode, "t", (uint64_t) d->info.backing_ino)
DEVICE_PROPERTY_GETTER(property_offset, "t", d->info.offset)
DEVICE_PROPERTY_GETTER(property_size_limit, "t", d->info.size_limit)
DEVICE_PROPERTY_GETTER(property_size, "t", d->info.size)
DEVICE_PROPERTY_GETTER(property_block_size, "u", d->info.block_size)
DEVICE_PROPERTY_GETTER(property_read_only, "b", !!(d->info.flags & LO_FLAGS_READ_ONLY))
DEVICE_PROPERTY_GETTER(property_autoclear, "b", !!(d->info.flags & LO_FLAGS_AUTOCLEAR))
DEVICE_PROPERTY_GETTER(property_partscan, "b", !!(d->info.flags & LO_FLAGS_PARTSCAN))
DEVICE_PROPERTY_GETTER(property_direct_io, "b", !!(d->info.flags & LO_FLAGS_DIRECT_IO))
DEVICE_PROPERTY_GETTER(property_owner_uid, "u", (uint32_t) d->owner)
DEVICE_PROPERTY_GETTER(property_bound_to_caller, "b", d->bound_to != NULL)

static int property_backing_file(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Device *d = userdata;
        _cleanup_(freep) char *s = NULL;

        if (d->info.backing_deleted) {
                if (asprintf(&s, "%s (deleted)", strempty(d->info.backing_file)) < 0)
                        return -ENOMEM;
                return sd_bus_message_append(reply, "s", s);
        }
        return sd_bus_message_append(reply, "s", strempty(d->info.backing_file));
}

static int property_version(sd_bus *bus, const char *path, const char *interface, const char *property,
                            sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        return sd_bus_message_append(reply, "s", LOOPD_VERSION);
}

static int property_quota(sd_bus *bus, const char *path, const char *interface, const char *property,
                          sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Context *c = userdata;
        return sd_bus_message_append(reply, "u", (uint32_t) c->quota);
}

static const sd_bus_vtable manager_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Version", "s", property_version, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("QuotaPerUser", "u", property_quota, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD_WITH_NAMES("Create", "ha{sv}", SD_BUS_PARAM(backing_fd) SD_BUS_PARAM(options),
                                 "osh", SD_BUS_PARAM(device) SD_BUS_PARAM(device_path) SD_BUS_PARAM(device_fd),
                                 method_create, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("CreateFromPath", "sa{sv}", SD_BUS_PARAM(path) SD_BUS_PARAM(options),
                                 "osh", SD_BUS_PARAM(device) SD_BUS_PARAM(device_path) SD_BUS_PARAM(device_fd),
                                 method_create_from_path, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("Open", "s", SD_BUS_PARAM(path), "o", SD_BUS_PARAM(device), method_open,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("Remove", "s", SD_BUS_PARAM(device), "", , method_remove,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("RefreshSize", "s", SD_BUS_PARAM(device), "", , method_refresh_size,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

static const sd_bus_vtable device_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", property_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DevicePath", "s", property_device_path, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Number", "u", property_number, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DeviceNumber", "t", property_device_number, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DiskSeq", "t", property_diskseq, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("BackingFile", "s", property_backing_file, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BackingDevice", "t", property_backing_device, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("BackingInode", "t", property_backing_inode, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Offset", "t", property_offset, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("SizeLimit", "t", property_size_limit, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Size", "t", property_size, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BlockSize", "u", property_block_size, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("ReadOnly", "b", property_read_only, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Autoclear", "b", property_autoclear, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("Partscan", "b", property_partscan, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("DirectIO", "b", property_direct_io, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("OwnerUID", "u", property_owner_uid, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("BoundToCaller", "b", property_bound_to_caller, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_METHOD("Remove", "", "", method_device_remove, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("RefreshSize", "", "", method_device_refresh_size, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int bus_manager_register(Context *c) {
        int r;

        r = sd_bus_add_object_vtable(c->bus, NULL, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, manager_vtable, c);
        if (r < 0)
                return r;
        r = sd_bus_add_fallback_vtable(c->bus, NULL, LOOPD_DEVICE_PATH_PREFIX, LOOPD_DEVICE_INTERFACE, device_vtable,
                                       device_find, c);
        if (r < 0)
                return r;
        r = sd_bus_add_node_enumerator(c->bus, NULL, LOOPD_DEVICE_PATH_PREFIX, device_enumerate, c);
        if (r < 0)
                return r;
        return sd_bus_add_object_manager(c->bus, NULL, LOOPD_MANAGER_PATH);
}
