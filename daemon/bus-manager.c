/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "bus-device.h"
#include "bus-manager.h"
#include "bus-options.h"
#include "bus-watch.h"
#include "device-ops.h"
#include "errors.h"
#include "escape.h"
#include "log.h"

typedef enum OpKind { OP_CREATE, OP_OPEN, OP_REMOVE, OP_REFRESH_SIZE } OpKind;

struct Operation {
        Context *c;
        Operation *prev, *next;
        OpKind kind;
        sd_bus_message *msg;
        uid_t uid;
        pid_t pid;

        /* Create and CreateFromPath. */
        char *path_arg;       /* CreateFromPath's path */
        CreateOptions opts;
        int backing_fd;
        bool reserved;        /* holds a quota slot */
        char *backing_path;   /* the kernel's name for the backing file, escaped */
        bool backing_verified;
        LoopBacking backing;

        /* Open, Remove, RefreshSize. */
        uint32_t number;
        uint64_t diskseq;
        int open_flags;
        bool fd_only;         /* Device.Open: the reply is just the fd */

        PolkitQuery *polkit;
        PathOpen *path_open;
        bool in_kernel;       /* a devices operation will call back */
        bool detached;        /* cancelled at exit while in the kernel */
};

static const char *const op_names[] = {
        [OP_CREATE] = "create",
        [OP_OPEN] = "open",
        [OP_REMOVE] = "remove",
        [OP_REFRESH_SIZE] = "refresh-size",
};

/* ---- operations in flight ------------------------------------------------------ */

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
        if (op->uid != 0) {
                c->n_operations_unprivileged--;
                uid_counts_dec(&c->operations_per_uid, op->uid);
        }
        polkit_query_cancel(op->polkit);
        path_open_cancel(op->path_open);
        if (op->reserved)
                devices_unreserve(c->devices, op->uid);
        safe_close(op->backing_fd);
        free(op->path_arg);
        free(op->backing_path);
        sd_bus_message_unref(op->msg);
        free(op);
}
DEFINE_POINTER_CLEANUP(Operation, operation_free)

static void log_refusal(Context *c, sd_bus_message *m, uid_t uid, const char *what, const sd_bus_error *e,
                        const char *reason) {
        LogEntry le = LOG_ENTRY_INIT(LOG_NOTICE, LOG_ID_REFUSED);

        log_entry_add(&le, "LOOPD_UID", "%u", (unsigned) uid);
        log_entry_add(&le, "LOOPD_SENDER", "%s", strempty(sd_bus_message_get_sender(m)));
        log_entry_add(&le, "LOOPD_REQUEST", "%s", what);
        log_entry_add(&le, "LOOPD_REASON", "%s", reason ? reason : bus_error_reason(e));
        log_entry_add(&le, "LOOPD_ERROR", "%s", e->name);
        log_entry_send(&le, "Refused %s for uid %u: %s", what, (unsigned) uid, strempty(e->message));
}

/* A request refused before it became an Operation. */
static int refuse(Context *c, sd_bus_message *m, uid_t uid, const char *what, sd_bus_error *error, int r,
                  const char *reason) {
        log_refusal(c, m, uid, what, error, reason);
        return r;
}

/* Answers op with an error, logs the refusal, frees op. */
static void operation_fail(Operation *op, const sd_bus_error *e, const char *reason) {
        int r;

        log_refusal(op->c, op->msg, op->uid, op_names[op->kind], e, reason);
        r = sd_bus_reply_method_error(op->msg, e);
        if (r < 0)
                log_debug_errno(r, "Cannot send an error reply (the caller is gone?)");
        operation_free(op);
}

static void operation_fail_errno(Operation *op, LoopdStep step, int r, const char *subject) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        (void) bus_error_errno(&e, step, r, subject);
        operation_fail(op, &e, step == STEP_POLKIT ? "polkit" : NULL);
}

/* Counts a new request of uid, within its limits. */
static int operation_new(Context *c, OpKind kind, sd_bus_message *m, uid_t uid, pid_t pid, sd_bus_error *error,
                         Operation **ret) {
        Operation *op;
        int r;

        if (uid != 0 && (uid_counts_get(&c->operations_per_uid, uid) >= c->limits.pending_per_uid ||
                         c->n_operations_unprivileged >= c->limits.pending_total)) {
                r = bus_error_errno(error, STEP_LOOKUP, LOOPD_ERRNO_LIMITS, NULL);
                return refuse(c, m, uid, op_names[kind], error, r, "limits");
        }
        op = calloc(1, sizeof(*op));
        if (!op)
                return -ENOMEM;
        if (uid != 0 && uid_counts_inc(&c->operations_per_uid, uid) < 0) {
                free(op);
                return -ENOMEM;
        }
        *op = (Operation) { .c = c, .kind = kind, .msg = sd_bus_message_ref(m), .uid = uid, .pid = pid,
                            .backing_fd = -1, .next = c->operations };
        if (op->next)
                op->next->prev = op;
        c->operations = op;
        c->n_operations++;
        if (uid != 0)
                c->n_operations_unprivileged++;
        *ret = op;
        return 0;
}

void bus_manager_cancel_operations(Context *c) {
        Operation *op = c->operations, *next;

        for (; op; op = next) {
                next = op->next;
                if (op->in_kernel) {
                        /* Its job calls back; then it is freed. */
                        op->detached = true;
                        continue;
                }
                operation_free(op);
        }
}

/* ---- Create and CreateFromPath ----------------------------------------------------- */

static const char *options_text(const Operation *op, char *buf, size_t size) {
        uint32_t f = op->opts.config.flags | (op->backing.writable ? 0 : LO_FLAGS_READ_ONLY);

        (void) snprintf(buf, size, "%s%s%s%s%s", (f & LO_FLAGS_READ_ONLY) ? "read-only," : "",
                        (f & LO_FLAGS_AUTOCLEAR) ? "autoclear," : "", (f & LO_FLAGS_PARTSCAN) ? "partscan," : "",
                        (f & LO_FLAGS_DIRECT_IO) ? "direct-io," : "", op->opts.bind_to_caller ? "bind-to-caller," : "");
        size_t n = strlen(buf);
        if (n > 0)
                buf[n - 1] = 0;
        return buf;
}

static void on_created(int r, Device *d, int fd, bool dio_refused, void *userdata) {
        _cleanup_(operation_freep) Operation *op = userdata;
        _cleanup_(closep) int dev_fd = fd;
        _cleanup_(freep) char *path = NULL, *backing = NULL;
        char options[96];

        op->in_kernel = false;
        op->reserved = false; /* devices_create took the slot */
        if (op->detached)
                return;
        if (r < 0) {
                operation_fail_errno(TAKE_PTR(op), STEP_CREATE, r, "Creating a loop device");
                return;
        }
        path = bus_device_path(d);
        backing = name_escape(d->info.backing_file);
        LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_CREATED);
        log_entry_add(&e, "LOOPD_UID", "%u", (unsigned) op->uid);
        log_entry_add(&e, "LOOPD_PID", "%u", (unsigned) op->pid);
        log_entry_add(&e, "LOOPD_SENDER", "%s", strempty(sd_bus_message_get_sender(op->msg)));
        log_entry_add(&e, "LOOPD_DEVICE", "%s", d->info.path);
        log_entry_add(&e, "LOOPD_DISKSEQ", "%" PRIu64, d->diskseq);
        log_entry_add(&e, "LOOPD_BACKING_FILE", "%s", strempty(backing));
        log_entry_add(&e, "LOOPD_BACKING_DEV", "%u:%u", major(d->info.backing_dev), minor(d->info.backing_dev));
        log_entry_add(&e, "LOOPD_BACKING_INO", "%" PRIu64, d->info.backing_ino);
        log_entry_add(&e, "LOOPD_OPTIONS", "%s",
                      options_text(op, options, sizeof(options)));
        log_entry_send(&e, "Created %s from %s for uid %u%s%s", d->info.path, strempty(backing), (unsigned) op->uid,
                       dio_refused ? " (direct I/O declined by the backing file system)" : "",
                       op->path_arg ? " (CreateFromPath)" : "");
        r = sd_bus_reply_method_return(op->msg, "osh", path, d->info.path, dev_fd);
        if (r < 0) {
                log_warning_errno(r, "Cannot send %s to its creator", d->info.path);
                /* The caller cannot get a device bound to its life: it would leak. */
                if (op->opts.bind_to_caller)
                        bus_watch_caller_gone(op->c, sd_bus_message_get_sender(op->msg));
        }
}

static void create_now(Operation *op) {
        const char *sender = sd_bus_message_get_sender(op->msg);
        DeviceCreate dc = {
                .backing_fd = op->backing_fd,
                .config = op->opts.config,
                .owner = op->uid,
                .binding = op->opts.bind_to_caller ? sender : NULL,
        };
        int r;

        r = devices_create(op->c->devices, &dc, on_created, op);
        if (r < 0) {
                operation_fail_errno(op, STEP_CREATE, r == -EAGAIN ? LOOPD_ERRNO_LIMITS : r,
                                     "Creating a loop device");
                return;
        }
        op->in_kernel = true;
}

static void on_create_authorized(bool allowed, const sd_bus_error *error, void *userdata) {
        Operation *op = userdata;

        op->polkit = NULL; /* finished: freed by polkit.c */
        if (!allowed) {
                operation_fail(op, error, "polkit");
                return;
        }
        create_now(op);
}

static void on_checked(BackingCheck *check, void *userdata) {
        Operation *op = userdata;
        char owner[16], inode[32], dev[32];
        int r;

        op->in_kernel = false;
        if (op->detached) {
                operation_free(op);
                return;
        }
        if (check->r < 0) {
                operation_fail_errno(op, STEP_BACKING, check->r, "The backing file");
                return;
        }
        op->backing = check->backing;
        op->backing_verified = check->path_verified;
        op->backing_path = name_escape(check->path);
        if (!op->backing_path) {
                operation_fail_errno(op, STEP_BACKING, -ENOMEM, "The backing file");
                return;
        }
        /* polkit sees the file the fd is, never the caller's string (which
         * "/allowed/../elsewhere" or a symlink under an allowed prefix would
         * make lie), and only as loopd's own mount namespace sees it: a name
         * that does not lead to this very inode there is marked, so a rule
         * matching a path prefix cannot match it. */
        _cleanup_(freep) char *shown = NULL;
        if (!op->backing_verified && asprintf(&shown, "(unverified) %s", op->backing_path) < 0) {
                operation_fail_errno(op, STEP_BACKING, -ENOMEM, "The backing file");
                return;
        }
        snprintf(owner, sizeof(owner), "%u", (unsigned) op->backing.st_uid);
        snprintf(inode, sizeof(inode), "%" PRIu64, (uint64_t) op->backing.st_ino);
        snprintf(dev, sizeof(dev), "%u:%u", major(op->backing.st_dev), minor(op->backing.st_dev));
        bool ro = (check->flags & LO_FLAGS_READ_ONLY) != 0;
        const char *details[] = {
                "backing_file", shown ? shown : op->backing_path,
                "backing_file_verified", op->backing_verified ? "true" : "false",
                "backing_owner", owner,
                "backing_device", dev,
                "backing_inode", inode,
                "read_only", ro ? "true" : "false",
                "device", "a new loop device",
                "operation", "create",
                NULL,
        };
        r = polkit_check(op->c->polkit, op->msg, op->uid, LOOPD_ACTION_CREATE, details, op->c->polkit_timeout_usec,
                         on_create_authorized, op, &op->polkit);
        if (r < 0) {
                operation_fail_errno(op, STEP_POLKIT, r, "Asking polkit");
                return;
        }
        if (r > 0)
                create_now(op);
}

/* With the backing fd in hand (Create, or CreateFromPath after its helper). */
static void create_with_fd(Operation *op) {
        int r;

        /* Root is never asked, so nothing needs checking before the kernel
         * job (which checks the fd itself): one job. Others: a check first,
         * for polkit's details. */
        if (op->uid == 0) {
                create_now(op);
                return;
        }
        r = devices_check_backing(op->c->devices, op->uid, op->backing_fd, &op->opts.config, on_checked, op);
        if (r < 0) {
                operation_fail_errno(op, STEP_BACKING, r == -EAGAIN ? LOOPD_ERRNO_LIMITS : r, "The backing file");
                return;
        }
        op->in_kernel = true;
}

/* The part Create and CreateFromPath share once their first argument is
 * read: the options (validated here, once), the caller, its limits, a
 * quota slot. */
static int create_operation_new(Context *c, sd_bus_message *m, sd_bus_error *error, Operation **ret) {
        CreateOptions opts;
        Operation *op;
        uid_t uid;
        pid_t pid;
        int r;

        r = sender_cache_lookup(&c->senders, m, &uid, &pid);
        if (r < 0)
                return r;
        r = bus_read_create_options(m, &opts, error);
        if (r < 0)
                return refuse(c, m, uid, "create", error, r, "invalid-argument");
        r = operation_new(c, OP_CREATE, m, uid, pid, error, &op);
        if (r < 0)
                return r;
        op->opts = opts;
        r = devices_reserve(c->devices, uid);
        if (r < 0) {
                operation_free(op);
                r = bus_error_errno(error, STEP_CREATE, r, NULL);
                return refuse(c, m, uid, "create", error, r, "quota");
        }
        op->reserved = true;
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

static void on_path_opened(int r, PathOpenStage stage, int fd, void *userdata) {
        Operation *op = userdata;
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(freep) char *path = name_escape(op->path_arg);
        const char *p = strempty(path);

        op->path_open = NULL; /* finished: freed by path-opener.c */
        if (r >= 0) {
                op->backing_fd = fd;
                create_with_fd(op);
                return;
        }
        if (r == -ETIMEDOUT)
                (void) bus_error_setf(&e, LOOPD_DBUS_ERROR_TIMEOUT,
                                      "Opening '%s' did not finish in time (a hung file system?).", p);
        else if (stage == PATH_OPEN_STAGE_VIEW)
                (void) bus_error_setf(&e, LOOPD_DBUS_ERROR_ACCESS_DENIED,
                                      "loopd cannot resolve '%s' in your own view of the file system: the kernel "
                                      "does not let your uid look at your process (pid %u), which is not "
                                      "dumpable or has changed ids since it connected (%s). Pass an open fd "
                                      "with Create instead.", p, (unsigned) op->pid, strerror(-r));
        else if (stage == PATH_OPEN_STAGE_CREDENTIALS)
                (void) bus_error_setf(&e, LOOPD_DBUS_ERROR_ACCESS_DENIED,
                                      "loopd could not take your credentials to open '%s': %s.", p, strerror(-r));
        else if (r == -EACCES || r == -EPERM)
                (void) bus_error_setf(&e, LOOPD_DBUS_ERROR_ACCESS_DENIED, "You (uid %u) may not open '%s'%s: %s.",
                                      (unsigned) op->uid, p,
                                      (op->opts.config.flags & LO_FLAGS_READ_ONLY) ? "" : " for writing; ask for read-only",
                                      strerror(-r));
        else if (r == -EXDEV || r == -ELOOP)
                (void) bus_error_setf(&e, LOOPD_ERROR_BAD_BACKING_FILE,
                                      "'%s' leads through a magic link (/proc/.../fd/N, /dev/fd/N) or too many "
                                      "symbolic links; pass such a file as an fd with Create.", p);
        else
                (void) bus_error_setf(&e, LOOPD_ERROR_BAD_BACKING_FILE, "Cannot open '%s' as uid %u: %s.", p,
                                      (unsigned) op->uid, strerror(-r));
        operation_fail(op, &e, r == -ETIMEDOUT ? "timeout" : "access");
}

static int method_create_from_path(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        Context *c = userdata;
        SenderCreds creds;
        const char *path;
        Operation *op;
        int r;

        r = sd_bus_message_read(m, "s", &path);
        if (r < 0)
                return r;
        r = bus_validate_backing_path(path, error);
        if (r < 0)
                return r;
        r = create_operation_new(c, m, error, &op);
        if (r < 0)
                return r;
        /* The caller's own ids as the bus vouches for them, all of them,
         * fresh: fail closed when the bus does not say. */
        r = sender_credentials(m, &creds);
        if (r < 0 || !creds.has_pid || !creds.has_groups || creds.uid != op->uid) {
                _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                (void) bus_error_setf(&e, LOOPD_DBUS_ERROR_ACCESS_DENIED,
                                      "The bus did not tell loopd your pid and groups%s%s; CreateFromPath needs "
                                      "them. Pass an open fd with Create instead.", r < 0 ? ": " : "",
                                      r < 0 ? strerror(-r) : "");
                operation_fail(op, &e, "access");
                return 1;
        }
        op->pid = creds.pid;
        op->path_arg = strdup(path);
        if (!op->path_arg) {
                operation_free(op);
                return -ENOMEM;
        }
        PathOpenRequest req = {
                .path = path,
                .flags = (op->opts.config.flags & LO_FLAGS_READ_ONLY) ? O_RDONLY : O_RDWR,
                .uid = op->uid,
                .pid = creds.pid,
                .groups = creds.groups,
                .n_groups = creds.n_groups,
        };
        r = path_open_as(c->opener, &req, c->path_open_timeout_usec, on_path_opened, op, &op->path_open);
        if (r < 0) {
                operation_fail_errno(op, STEP_OPEN_PATH, r == -EAGAIN ? LOOPD_ERRNO_LIMITS : r, "Opening the path");
                return 1;
        }
        return 1;
}

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

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

int bus_manager_admit(Context *c, sd_bus_message *m) {
        uint64_t queued = 0;
        uid_t uid;
        pid_t pid;

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
                                 method_create, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD_WITH_NAMES("CreateFromPath", "sa{sv}", SD_BUS_PARAM(path) SD_BUS_PARAM(options),
                                 "osh", SD_BUS_PARAM(device) SD_BUS_PARAM(device_path) SD_BUS_PARAM(device_fd),
                                 method_create_from_path, SD_BUS_VTABLE_UNPRIVILEGED),
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
