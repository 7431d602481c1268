/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "bus-create.h"
#include "bus-device.h"
#include "bus-operation.h"
#include "bus-options.h"
#include "bus-watch.h"
#include "escape.h"
#include "log.h"

/* ---- Create and CreateFromPath ----------------------------------------------------- */

static const char *options_text(const Operation *op, char *buf, size_t size) {
        uint32_t f = op->opts.config.flags | (op->backing.writable ? 0 : LO_FLAGS_READ_ONLY);

        (void) snprintf(buf, size, "%s%s%s%s%s", (f & LO_FLAGS_READ_ONLY) ? "read-only," : "",
                        (f & LO_FLAGS_AUTOCLEAR) ? "autoclear," : "", (f & LO_FLAGS_PARTSCAN) ? "partscan," : "",
                        (f & LO_FLAGS_DIRECT_IO) ? "direct-io," : "", op->opts.bind_to_caller ? "bind-to-caller," : "");
        size_t n = strlen(buf);
        if (n > 0)
                buf[n - 1] = 0;
        else
                snprintf(buf, size, "read-write");
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

int bus_method_create(sd_bus_message *m, void *userdata, sd_bus_error *error) {
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

int bus_method_create_from_path(sd_bus_message *m, void *userdata, sd_bus_error *error) {
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

