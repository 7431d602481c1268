/* SPDX-License-Identifier: LGPL-2.1-or-later */
#ifndef LOOPD_H
#define LOOPD_H

/*
 * libloopd: loop devices for unprivileged programs, through the loopd daemon
 * (org.loopd.Loop1 on the D-Bus system bus). Nothing here touches
 * /dev/loop-control; the daemon decides what a caller may do.
 *
 * Errors: every function returning int returns a negative errno on failure.
 * When the failure came from the daemon, the D-Bus error name and its
 * message are kept in the client until the next call on it:
 * loopd_client_last_error_name() / _message(). The daemon's errors map to:
 *
 *   org.freedesktop.DBus.Error.AccessDenied                      -EACCES
 *   org.freedesktop.DBus.Error.InteractiveAuthorizationRequired  -EACCES
 *     (the error name tells the two apart: the second one means "polkit
 *     would have asked a password; retry with loopd_client_set_interactive()")
 *   org.freedesktop.DBus.Error.InvalidArgs                       -EINVAL
 *   org.loopd.Loop1.Error.NotALoopDevice                         -ENOTBLK
 *   org.loopd.Loop1.Error.NoSuchDevice                           -ENXIO
 *   org.loopd.Loop1.Error.Busy                                   -EBUSY
 *   org.loopd.Loop1.Error.BadBackingFile                         -EBADF
 *     (not -EINVAL, so that "your file cannot back a device" and "your
 *     options are wrong" stay distinguishable by errno alone)
 *   org.loopd.Loop1.Error.NoFreeDevice                           -ENOSPC
 *   org.loopd.Loop1.Error.QuotaExceeded                          -EDQUOT
 *   org.loopd.Loop1.Error.LimitsExceeded                         -EAGAIN
 *     (too many of the caller's requests in flight at once; loopd serves
 *     its other callers meanwhile, so trying again later is right)
 *   org.freedesktop.DBus.Error.UnknownObject / UnknownInterface  -ENXIO
 *     (a device object that went away between two calls)
 *   org.freedesktop.DBus.Error.ServiceUnknown / NameHasNoOwner   -EHOSTUNREACH
 *   org.freedesktop.DBus.Error.NoReply / Timeout                 -ETIMEDOUT
 *   anything else: what sd_bus_error_get_errno() says, else -EIO.
 *
 * Threads: no global state. A LoopdClient, and the LoopdDevice objects it
 * returns, may be used from one thread at a time (like the sd_bus below
 * them); different clients in different threads are independent.
 *
 * Ownership: *_new() and the functions returning objects give the caller
 * one reference; drop it with the matching *_unref() / *_free(), all of
 * which accept NULL. Returned fds are O_CLOEXEC and owned by the caller.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <systemd/sd-bus.h>
#include <systemd/sd-event.h>

#include "loopd-protocol.h" /* bus name, paths, interfaces, error names */

#ifdef __cplusplus
extern "C" {
#endif

/* OwnerUID of a device that was not created through loopd (LOOPD_OWNER_NONE). */
#define LOOPD_UID_INVALID UINT32_C(4294967295)

typedef struct LoopdClient LoopdClient;
typedef struct LoopdDevice LoopdDevice;

/* ---- Connection ---------------------------------------------------------- */

/* Opens a new connection to the system bus ($DBUS_SYSTEM_BUS_ADDRESS is
 * honoured by sd-bus) that the client owns. */
int loopd_client_new(LoopdClient **ret);
/* Uses the caller's connection (a reference is taken). The client never
 * changes the bus's own settings; the interactive flag is set per message. */
int loopd_client_new_from_bus(sd_bus *bus, LoopdClient **ret);
LoopdClient *loopd_client_ref(LoopdClient *client);
LoopdClient *loopd_client_unref(LoopdClient *client);
sd_bus *loopd_client_get_bus(LoopdClient *client);

/* Lets polkit ask the user for a password while a call waits (the D-Bus
 * allow-interactive-authorization flag). Off by default: set it only when a
 * person is there to answer, e.g. when stdin is a tty. Raise the timeout too,
 * since a password prompt takes longer than sd-bus's default 25 s. */
void loopd_client_set_interactive(LoopdClient *client, bool interactive);
bool loopd_client_get_interactive(LoopdClient *client);
/* Method call timeout in µs; 0 means sd-bus's default. */
void loopd_client_set_timeout(LoopdClient *client, uint64_t usec);

/* Attaches the client's bus to an event loop (NULL: the thread's default
 * sd_event), for the *_async() calls. A bus already attached to the same
 * loop is fine; to another loop is -EBUSY. */
int loopd_client_attach_event(LoopdClient *client, sd_event *event, int64_t priority);
int loopd_client_detach_event(LoopdClient *client);

/* The D-Bus error of the last failed call on this client, or NULL when the
 * last call succeeded. For failures that never reached the daemon the name is
 * NULL and the message says what went wrong locally. Valid until the next
 * call on the client. */
const char *loopd_client_last_error_name(LoopdClient *client);
const char *loopd_client_last_error_message(LoopdClient *client);

/* ---- Creating devices ---------------------------------------------------- */

/*
 * Options of Create; the fields are those of the D-Bus options dictionary.
 *
 * ABI growth: `size` is sizeof(LoopdCreateOptions) as the caller was
 * compiled, so a newer library can append fields and still read an older
 * caller's struct (missing fields take their zero default), and an older
 * library refuses (-E2BIG) a newer caller's struct only if one of the fields
 * it does not know is non-zero. This is the kernel's clone3()/openat2()
 * convention. An init function alone would not do: the caller allocates the
 * struct, so the library cannot know how large it is. The layout has no
 * implicit padding on any Linux ABI (32 bytes, `reserved` must be zero), so
 * "unknown bytes are zero" is a sound test. Always start from
 * LOOPD_CREATE_OPTIONS_INIT or loopd_create_options_init().
 */
typedef struct LoopdCreateOptions {
        uint32_t size;        /* sizeof(LoopdCreateOptions), set by the initializers */
        uint32_t block_size;  /* 0: kernel default; else a power of two, 512..page size */
        uint64_t offset;      /* bytes into the backing file */
        uint64_t size_limit;  /* 0: up to the end of the backing file */
        bool read_only;
        bool autoclear;       /* detached on the last close of the device */
        bool partscan;
        bool direct_io;
        bool bind_to_caller;  /* removed when this client's bus connection closes */
        uint8_t reserved[3];  /* must be zero */
} LoopdCreateOptions;

#define LOOPD_CREATE_OPTIONS_INIT { .size = sizeof(LoopdCreateOptions) }

/* Plain memset rather than the macro, so that C++ callers before C++20
 * (no designated initializers) can use it too. */
static inline void loopd_create_options_init(LoopdCreateOptions *opts) {
        memset(opts, 0, sizeof(*opts));
        opts->size = sizeof(*opts);
}

/*
 * Attaches a loop device to backing_fd (a regular file or block device open
 * for reading; an fd not open for writing gives a read-only device). The fd is
 * passed to the daemon, never reopened by path. opts may be NULL for the
 * defaults. On success *ret_device (nullable) gets the device and
 * *ret_device_fd (nullable) an fd of the device, read-write unless the device
 * is read-only; when ret_device_fd is NULL the fd is closed, which for an
 * autoclear device that nobody else holds means it is detached again.
 */
int loopd_create(LoopdClient *client, int backing_fd, const LoopdCreateOptions *opts,
                 LoopdDevice **ret_device, int *ret_device_fd);
/* As loopd_create(), but the daemon opens the absolute path with the
 * caller's own uid and groups (read-only when opts->read_only). */
int loopd_create_from_path(LoopdClient *client, const char *path, const LoopdCreateOptions *opts,
                           LoopdDevice **ret_device, int *ret_device_fd);

/* ---- Naming, opening, removing, resizing --------------------------------- */

/*
 * Looks up the attached device "/dev/loopN" or "loopN" (GetDevice): its
 * object only, nothing opened and nothing asked of polkit, so it is what
 * listing tools use. -ENOTBLK for a name that is no loop device, -ENXIO for
 * one that is not attached.
 */
int loopd_get_device(LoopdClient *client, const char *name, LoopdDevice **ret);

/* Flags of loopd_open() and loopd_device_open(); any other bit is -EINVAL. */
#define LOOPD_OPEN_READ_ONLY (UINT64_C(1) << 0)

/*
 * Opens the attached device "/dev/loopN" or "loopN" for the caller (Open):
 * loopd opens the node and passes the fd, so this works for a device's
 * owner who may not open /dev/loopN itself (an autoclear device's owner,
 * whose only handle is an fd). Root and the device's owner (OwnerUID) are
 * not asked; anyone else needs polkit's org.loopd.manage-others (-EACCES
 * otherwise). *ret_fd (nullable) is read-write, or read-only with
 * LOOPD_OPEN_READ_ONLY or when the device is read-only; not exclusive.
 * Closing it is the caller's job, and for an autoclear device the last close
 * detaches it.
 */
int loopd_open(LoopdClient *client, const char *name, uint64_t flags,
               LoopdDevice **ret_device, int *ret_fd);
/* The same on a device object (Device.Open): exactly this attachment. */
int loopd_device_open(LoopdClient *client, LoopdDevice *device, uint64_t flags, int *ret_fd);

/* Detaches "loopN" or "/dev/loopN"; returns once detached (or once the kernel
 * deferred the detach to the last close). */
int loopd_remove(LoopdClient *client, const char *device);
/* Makes the device follow its backing file's current size. */
int loopd_refresh_size(LoopdClient *client, const char *device);
/* The same on a device object: addresses exactly this attachment, never a
 * later attachment of the same loopN (object paths carry the diskseq). */
int loopd_device_remove(LoopdClient *client, LoopdDevice *device);
int loopd_device_refresh_size(LoopdClient *client, LoopdDevice *device);

/* Every device the daemon exports, in one round trip
 * (ObjectManager.GetManagedObjects), sorted by device number; each carries a
 * snapshot of its properties (loopd_device_peek_info()). Free the array with
 * loopd_device_list_free(). */
int loopd_list(LoopdClient *client, LoopdDevice ***ret_devices, size_t *ret_n);
void loopd_device_list_free(LoopdDevice **devices, size_t n);

/* ---- Devices ------------------------------------------------------------- */

LoopdDevice *loopd_device_ref(LoopdDevice *device);
LoopdDevice *loopd_device_unref(LoopdDevice *device);
/* /org/loopd/Loop1/device/loopN_S */
const char *loopd_device_get_object_path(LoopdDevice *device);
/* "loopN" */
const char *loopd_device_get_name(LoopdDevice *device);
/* "/dev/loopN" */
const char *loopd_device_get_path(LoopdDevice *device);

/*
 * All properties of org.loopd.Loop1.Device. Allocated by the library only
 * (callers never allocate one), so fields can be appended in later versions
 * without breaking the ABI. Strings belong to the struct.
 */
typedef struct LoopdDeviceInfo {
        char *object_path;
        char *name;             /* Name: loopN */
        char *device_path;      /* DevicePath: /dev/loopN */
        uint32_t number;        /* Number: N */
        uint64_t device_number; /* DeviceNumber: dev_t of the node */
        uint64_t diskseq;       /* DiskSeq */
        char *backing_file;     /* BackingFile: for people, valid UTF-8, escaped, maybe " (deleted)" */
        uint64_t backing_device; /* BackingDevice: st_dev of the backing file */
        uint64_t backing_inode; /* BackingInode: st_ino of the backing file */
        uint64_t offset;        /* Offset */
        uint64_t size_limit;    /* SizeLimit, 0 for none */
        uint64_t size;          /* Size in bytes */
        uint32_t block_size;    /* BlockSize: logical block size */
        bool read_only;         /* ReadOnly */
        bool autoclear;         /* Autoclear */
        bool partscan;          /* Partscan */
        bool direct_io;         /* DirectIO */
        bool bound_to_caller;   /* BoundToCaller */
        uint32_t owner_uid;     /* OwnerUID, LOOPD_UID_INVALID if not created through loopd */
        /* Since the contract's second version; a daemon before it leaves
         * them NULL / false. */
        char *backing_file_bytes;   /* BackingFileBytes: the exact name, any bytes (not
                                     * necessarily UTF-8), without " (deleted)" */
        bool backing_file_deleted;  /* BackingFileDeleted: the file was unlinked */
        bool detach_pending;        /* DetachPending: removed, but the kernel keeps it
                                     * until its last opener closes it */
} LoopdDeviceInfo;

/* Reads the device's properties now (Properties.GetAll). */
int loopd_device_get_info(LoopdClient *client, LoopdDevice *device, LoopdDeviceInfo **ret);
/* The snapshot taken by loopd_list(), or NULL for a device that came from
 * loopd_create(), loopd_open() or loopd_get_device(). Owned by the device. */
const LoopdDeviceInfo *loopd_device_peek_info(LoopdDevice *device);
void loopd_device_info_free(LoopdDeviceInfo *info);

/* ---- The daemon ---------------------------------------------------------- */

int loopd_get_version(LoopdClient *client, char **ret_version);
int loopd_get_quota_per_user(LoopdClient *client, uint32_t *ret_quota);

/* ---- Asynchronous calls, for programs running an sd-event loop ------------ */

/*
 * The handler runs from the event loop the client is attached to. r is 0 or a
 * negative errno; on failure loopd_client_last_error_name()/_message() tell
 * the daemon's error while the handler runs. device and device_fd are lent to
 * the handler: take loopd_device_ref() / dup the fd to keep them (the fd is
 * closed when the handler returns).
 *
 * ret_slot (nullable): unref the slot to cancel the call; the handler then
 * does not run. With NULL the call is floating and completes on its own.
 * A pending call keeps the client alive.
 *
 * Cancelling only stops waiting: a Create the daemon already received still
 * attaches a device, which the caller then never hears of. Use
 * bind_to_caller for devices that must not outlive an abandoned call, or find
 * the device with loopd_list() afterwards.
 */
typedef void (*loopd_create_handler_t)(LoopdClient *client, int r, LoopdDevice *device,
                                       int device_fd, void *userdata);
typedef void (*loopd_remove_handler_t)(LoopdClient *client, int r, void *userdata);

int loopd_create_async(LoopdClient *client, int backing_fd, const LoopdCreateOptions *opts,
                       loopd_create_handler_t handler, void *userdata, sd_bus_slot **ret_slot);
int loopd_remove_async(LoopdClient *client, const char *device,
                       loopd_remove_handler_t handler, void *userdata, sd_bus_slot **ret_slot);

#ifdef __cplusplus
}
#endif

#endif
