/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "errors.h"

static const sd_bus_error_map loopd_error_map[] = {
        SD_BUS_ERROR_MAP(LOOPD_ERROR_NOT_A_LOOP_DEVICE, ENOTBLK),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_NO_SUCH_DEVICE, ENXIO),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_BUSY, EBUSY),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_BAD_BACKING_FILE, EBADF),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_NO_FREE_DEVICE, ENOSPC),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_QUOTA_EXCEEDED, EDQUOT),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_LIMITS_EXCEEDED, ENOBUFS),
        SD_BUS_ERROR_MAP_END,
};

void loopd_errors_register(void) {
        int r = sd_bus_error_add_map(loopd_error_map);
        /* Only the errno a client sees for our names would suffer. */
        if (r < 0)
                fprintf(stderr, "loopd: cannot register error names with sd-bus: %s\n", strerror(-r));
}

int bus_error_setf(sd_bus_error *error, const char *name, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = sd_bus_error_setfv(error, name, fmt, ap);
        va_end(ap);
        /* sd_bus_error_setfv returns the mapped errno; never let it be 0,
         * or sd-bus would treat the handler as successful. */
        return r < 0 ? r : -EIO;
}

int bus_error_errno(sd_bus_error *e, LoopdStep step, int r, const char *subject) {
        const char *what = subject ? subject : "The request";

        switch (r) {
        case -EDQUOT:
                return bus_error_setf(e, LOOPD_ERROR_QUOTA_EXCEEDED,
                                      "You have as many loop devices attached through loopd as one user may "
                                      "(the quota; devices whose detach is still pending count too); remove one "
                                      "first.");
        case LOOPD_ERRNO_LIMITS:
                return bus_error_setf(e, LOOPD_ERROR_LIMITS_EXCEEDED,
                                      "Too many of your requests are in flight (waiting for polkit, for files to "
                                      "open, or for the kernel); wait for them to finish.");
        case LOOPD_ERRNO_STATE_DIR:
                return bus_error_setf(e, LOOPD_DBUS_ERROR_FAILED,
                                      "loopd cannot record the new device's owner: its state directory is full, "
                                      "read-only or gone; nothing was attached. An administrator must free space "
                                      "there (or make it writable) and try again.");
        case -ETIMEDOUT:
                return bus_error_setf(e, LOOPD_DBUS_ERROR_TIMEOUT,
                                      "%s did not finish in time: the backing file's file system does not answer "
                                      "(a hung FUSE or network file system?). loopd keeps serving others; try "
                                      "again once it answers.", what);
        case -ECANCELED:
                return bus_error_setf(e, LOOPD_DBUS_ERROR_FAILED, "loopd is shutting down; try again.");
        case -ENOTBLK:
                return bus_error_setf(e, LOOPD_ERROR_NOT_A_LOOP_DEVICE, "%s is not a loop device.", what);
        case -EBUSY:
        case -EAGAIN:
                return bus_error_setf(e, LOOPD_ERROR_BUSY,
                                      "The kernel reports %s busy (another program holds it or races for loop "
                                      "devices, or another request on it is in progress); try again.", what);
        case -EACCES:
        case -EPERM:
                return bus_error_setf(e, LOOPD_DBUS_ERROR_ACCESS_DENIED, "Permission denied for %s.", what);
        default:
                break;
        }

        switch (step) {
        case STEP_BACKING:
        case STEP_OPEN_PATH:
                switch (r) {
                case -EBADF:
                        return bus_error_setf(e, LOOPD_ERROR_BAD_BACKING_FILE,
                                              "The backing file must be open for reading (O_RDONLY or O_RDWR); "
                                              "O_PATH and write-only descriptors cannot back a loop device.");
                case -EMEDIUMTYPE:
                        return bus_error_setf(e, LOOPD_ERROR_BAD_BACKING_FILE,
                                              "The backing file must be a regular file or a block device; "
                                              "directories, pipes, sockets and character devices cannot back a "
                                              "loop device.");
                case -EINVAL:
                case -EOVERFLOW:
                        return bus_error_setf(e, LOOPD_DBUS_ERROR_INVALID_ARGS,
                                              "The options do not fit the backing file: the offset must lie "
                                              "before its end, offset plus size-limit must not reach past it, "
                                              "and at least one 512-byte sector must remain.");
                }
                break;
        case STEP_CREATE:
                switch (r) {
                case -EBADF:
                case -EMEDIUMTYPE:
                case -EINVAL:
                case -EOVERFLOW:
                        return bus_error_errno(e, STEP_BACKING, r, subject);
                case -EROFS:
                        return bus_error_setf(e, LOOPD_ERROR_BAD_BACKING_FILE,
                                              "The kernel can use the backing file only read-only; ask for "
                                              "read-only.");
                case -EOPNOTSUPP:
                        return bus_error_setf(e, LOOPD_DBUS_ERROR_FAILED,
                                              "The kernel did not apply the requested settings (block size, size "
                                              "limit or partscan); nothing was attached.");
                case -ENOSPC:
                case -EMFILE:
                case -ENFILE:
                        return bus_error_setf(e, LOOPD_ERROR_NO_FREE_DEVICE,
                                              "No loop device could be allocated (%s); detach unused ones, or "
                                              "raise the kernel's limit (max_loop).", strerror(-r));
                case -ENXIO:
                case -ENOENT:
                        return bus_error_setf(e, LOOPD_ERROR_BUSY,
                                              "The loop device being set up vanished meanwhile; try again.");
                }
                break;
        case STEP_OPEN_DEVICE:
        case STEP_REMOVE:
        case STEP_REFRESH:
        case STEP_LOOKUP:
                switch (r) {
                case -ENXIO:
                case -ESTALE:
                case -ENODEV:
                case -ENOENT:
                        return bus_error_setf(e, LOOPD_ERROR_NO_SUCH_DEVICE,
                                              "%s is not attached (any more); list devices to find it again.", what);
                }
                break;
        case STEP_POLKIT:
                break;
        }
        return bus_error_setf(e, LOOPD_DBUS_ERROR_FAILED, "%s failed: %s.", what, strerror(-r));
}

const char *bus_error_reason(const sd_bus_error *error) {
        static const struct {
                const char *name, *reason;
        } table[] = {
                { LOOPD_DBUS_ERROR_ACCESS_DENIED, "access" },
                { LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, "polkit" },
                { LOOPD_DBUS_ERROR_INVALID_ARGS, "invalid-argument" },
                { LOOPD_ERROR_NOT_A_LOOP_DEVICE, "invalid-argument" },
                { LOOPD_ERROR_BAD_BACKING_FILE, "invalid-argument" },
                { LOOPD_ERROR_QUOTA_EXCEEDED, "quota" },
                { LOOPD_ERROR_LIMITS_EXCEEDED, "limits" },
                { LOOPD_ERROR_BUSY, "busy" },
                { LOOPD_ERROR_NO_SUCH_DEVICE, "no-such-device" },
                { LOOPD_DBUS_ERROR_TIMEOUT, "timeout" },
        };

        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (sd_bus_error_has_name(error, table[i].name))
                        return table[i].reason;
        return "kernel";
}
