/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * libloopd: the client side of org.loopd.Loop1 on sd-bus. A thin layer: it
 * builds the method calls of the contract (dbus/org.loopd.Loop1.xml), turns
 * D-Bus errors into negative errno, and keeps the error's name and message in
 * the client for the caller to show. All state lives in LoopdClient.
 */

#include <assert.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loopd.h"
#include "util.h"


/* The layout the header promises: no implicit padding, 32 bytes. */
static_assert(sizeof(LoopdCreateOptions) == 32, "LoopdCreateOptions layout changed");
static_assert(offsetof(LoopdCreateOptions, reserved) == 29, "LoopdCreateOptions layout changed");

/* A caller's struct larger than this is nonsense, not a newer version. */
#define LOOPD_CREATE_OPTIONS_SIZE_MAX 4096

struct LoopdClient {
        unsigned n_ref;
        sd_bus *bus;
        bool bus_is_ours;       /* opened by loopd_client_new(): we close it */
        bool event_is_ours;     /* attached by loopd_client_attach_event(): we detach it */
        bool interactive;
        uint64_t timeout_usec;
        char *error_name;
        char *error_message;
};

struct LoopdDevice {
        unsigned n_ref;
        char *object_path;
        char *name;
        char *path;
        LoopdDeviceInfo *info;  /* snapshot from loopd_list(), else NULL */
};

static char *mfree_str(char *p) {
        free(p);
        return NULL;
}

DEFINE_POINTER_CLEANUP(LoopdDevice, loopd_device_unref)
DEFINE_POINTER_CLEANUP(LoopdDeviceInfo, loopd_device_info_free)

/* ---- Errors -------------------------------------------------------------- */

static const struct {
        const char *name;
        int errnum;
} error_map[] = {
        { LOOPD_DBUS_ERROR_ACCESS_DENIED,                      EACCES },
        { LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, EACCES },
        { LOOPD_DBUS_ERROR_INVALID_ARGS,                       EINVAL },
        { LOOPD_ERROR_NOT_A_LOOP_DEVICE,                       ENOTBLK },
        { LOOPD_ERROR_NO_SUCH_DEVICE,                          ENXIO },
        { LOOPD_ERROR_BUSY,                                    EBUSY },
        { LOOPD_ERROR_BAD_BACKING_FILE,                        EBADF },
        { LOOPD_ERROR_NO_FREE_DEVICE,                          ENOSPC },
        { LOOPD_ERROR_QUOTA_EXCEEDED,                          EDQUOT },
        { LOOPD_ERROR_LIMITS_EXCEEDED,                         EAGAIN },
        { LOOPD_DBUS_ERROR_TIMEOUT,                            ETIMEDOUT },
        /* A device object that went away between two calls. */
        { SD_BUS_ERROR_UNKNOWN_OBJECT,                         ENXIO },
        { SD_BUS_ERROR_UNKNOWN_INTERFACE,                      ENXIO },
        { SD_BUS_ERROR_SERVICE_UNKNOWN,                        EHOSTUNREACH },
        { SD_BUS_ERROR_NAME_HAS_NO_OWNER,                      EHOSTUNREACH },
        { SD_BUS_ERROR_NO_REPLY,                               ETIMEDOUT },
};

/* Our own table first: sd-bus's is process-global (sd_bus_error_add_map)
 * and a library must not register into it. */
static int bus_error_to_errno(const sd_bus_error *e, int fallback) {
        if (!sd_bus_error_is_set(e))
                return fallback < 0 ? fallback : -EIO;

        for (size_t i = 0; i < ELEMENTSOF(error_map); i++)
                if (streq_ptr(e->name, error_map[i].name))
                        return -error_map[i].errnum;

        int k = sd_bus_error_get_errno(e);
        return k > 0 ? -k : -EIO;
}

static void client_reset_error(LoopdClient *c) {
        c->error_name = mfree_str(c->error_name);
        c->error_message = mfree_str(c->error_message);
}

/* A failure that never reached the daemon: no error name. Returns r. */
_printf_(3, 4)
static int client_local_error(LoopdClient *c, int r, const char *format, ...) {
        va_list ap;
        char *m = NULL;

        client_reset_error(c);
        va_start(ap, format);
        if (vasprintf(&m, format, ap) < 0)
                m = NULL;
        va_end(ap);
        c->error_message = m;
        return r;
}

/* Keeps the error for the caller and returns its errno. sd-bus reports local
 * failures of a call (connection lost, out of memory) as "System.Error.E…"
 * names: those are not the daemon's, so they get no name, only a message. */
static int client_bus_error(LoopdClient *c, const sd_bus_error *e, int fallback) {
        int r = bus_error_to_errno(e, fallback);

        client_reset_error(c);
        if (!sd_bus_error_is_set(e)) {
                c->error_message = strdup(strerror(-r));
                return r;
        }
        if (strncmp(e->name, "System.Error.", 13) != 0)
                c->error_name = strdup(e->name);
        c->error_message = strdup(e->message ? e->message : strerror(-r));
        return r;
}

/* ---- Client -------------------------------------------------------------- */

static int client_new(sd_bus *bus, bool ours, LoopdClient **ret) {
        LoopdClient *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->n_ref = 1;
        c->bus = sd_bus_ref(bus);
        c->bus_is_ours = ours;
        *ret = c;
        return 0;
}

int loopd_client_new(LoopdClient **ret) {
        _cleanup_(sd_bus_unrefp) sd_bus *bus = NULL;
        int r;

        if (!ret)
                return -EINVAL;
        r = sd_bus_open_system_with_description(&bus, "loopd-client");
        if (r < 0)
                return r;
        return client_new(bus, true, ret);
}

int loopd_client_new_from_bus(sd_bus *bus, LoopdClient **ret) {
        if (!bus || !ret)
                return -EINVAL;
        return client_new(bus, false, ret);
}

LoopdClient *loopd_client_ref(LoopdClient *c) {
        if (c)
                c->n_ref++;
        return c;
}

LoopdClient *loopd_client_unref(LoopdClient *c) {
        if (!c || --c->n_ref > 0)
                return NULL;

        if (c->event_is_ours)
                (void) sd_bus_detach_event(c->bus);
        if (c->bus_is_ours)
                /* Closing our connection is what lets the daemon drop devices
                 * created with bind_to_caller: do it now, not at some later
                 * unref by a stray reference. */
                sd_bus_flush_close_unref(c->bus);
        else
                sd_bus_unref(c->bus);
        client_reset_error(c);
        free(c);
        return NULL;
}

sd_bus *loopd_client_get_bus(LoopdClient *c) {
        return c ? c->bus : NULL;
}

void loopd_client_set_interactive(LoopdClient *c, bool interactive) {
        if (c)
                c->interactive = interactive;
}

bool loopd_client_get_interactive(LoopdClient *c) {
        return c && c->interactive;
}

void loopd_client_set_timeout(LoopdClient *c, uint64_t usec) {
        if (c)
                c->timeout_usec = usec;
}

int loopd_client_attach_event(LoopdClient *c, sd_event *event, int64_t priority) {
        sd_event *current;
        int r;

        if (!c)
                return -EINVAL;
        current = sd_bus_get_event(c->bus);
        if (current)
                return !event || event == current ? 0 : -EBUSY;
        r = sd_bus_attach_event(c->bus, event, (int) priority);
        if (r < 0)
                return r;
        c->event_is_ours = true;
        return 0;
}

int loopd_client_detach_event(LoopdClient *c) {
        if (!c)
                return -EINVAL;
        c->event_is_ours = false;
        return sd_bus_detach_event(c->bus);
}

const char *loopd_client_last_error_name(LoopdClient *c) {
        return c ? c->error_name : NULL;
}

const char *loopd_client_last_error_message(LoopdClient *c) {
        return c ? c->error_message : NULL;
}

/* ---- Calls --------------------------------------------------------------- */

static int client_new_call(LoopdClient *c, const char *path, const char *interface,
                           const char *member, sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = sd_bus_message_new_method_call(c->bus, &m, LOOPD_BUS_NAME, path, interface, member);
        if (r < 0)
                return client_local_error(c, r, "Cannot build %s call: %s", member, strerror(-r));
        if (c->interactive) {
                r = sd_bus_message_set_allow_interactive_authorization(m, 1);
                if (r < 0)
                        return client_local_error(c, r, "Cannot build %s call: %s", member, strerror(-r));
        }
        *ret = TAKE_PTR(m);
        return 0;
}

/* A Manager call whose first argument is a device name (Open, GetDevice,
 * Remove): the call, with the name appended. */
static int manager_name_call_new(LoopdClient *c, const char *member, const char *name, sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        if (!name)
                return client_local_error(c, -EINVAL, "No device name given");
        r = client_new_call(c, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, member, &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", name);
        if (r < 0)
                return client_local_error(c, r, "Invalid device name: %s", strerror(-r));
        *ret = TAKE_PTR(m);
        return 0;
}

static int client_call(LoopdClient *c, sd_bus_message *m, sd_bus_message **ret_reply) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call(c->bus, m, c->timeout_usec, &error, ret_reply);
        if (r < 0) {
                r = client_bus_error(c, &error, r);
                sd_bus_error_free(&error);
                return r;
        }
        client_reset_error(c);
        return 0;
}

/* A call whose arguments are all strings, with no useful reply. */
static int client_call_simple(LoopdClient *c, const char *path, const char *interface,
                              const char *member, const char *arg) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        int r;

        r = client_new_call(c, path, interface, member, &m);
        if (r < 0)
                return r;
        if (arg) {
                r = sd_bus_message_append(m, "s", arg);
                if (r < 0)
                        return client_local_error(c, r, "Invalid device name: %s", strerror(-r));
        }
        return client_call(c, m, NULL);
}

/* ---- Devices ------------------------------------------------------------- */

/* object path /org/loopd/Loop1/device/loopN_S → "loopN", as the contract
 * defines the last element. */
static char *name_from_object_path(const char *object_path) {
        const char *e = strrchr(object_path, '/');
        const char *u;

        if (!e)
                return NULL;
        e++;
        u = strrchr(e, '_');
        if (!u || u == e || strncmp(e, "loop", 4) != 0)
                return NULL;
        return strndup(e, (size_t) (u - e));
}

static int device_new(const char *object_path, const char *name, const char *path,
                      LoopdDevice **ret) {
        _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;

        d = calloc(1, sizeof(*d));
        if (!d)
                return -ENOMEM;
        d->n_ref = 1;
        d->object_path = strdup(object_path);
        if (!d->object_path)
                return -ENOMEM;

        if (name)
                d->name = strdup(name);
        else if (path && strncmp(path, "/dev/", 5) == 0)
                d->name = strdup(path + 5);
        else
                d->name = name_from_object_path(object_path);
        if (!d->name)
                return -EBADMSG;

        if (path)
                d->path = strdup(path);
        else if (asprintf(&d->path, "/dev/%s", d->name) < 0)
                d->path = NULL;
        if (!d->path)
                return -ENOMEM;

        *ret = TAKE_PTR(d);
        return 0;
}

LoopdDevice *loopd_device_ref(LoopdDevice *d) {
        if (d)
                d->n_ref++;
        return d;
}

LoopdDevice *loopd_device_unref(LoopdDevice *d) {
        if (!d || --d->n_ref > 0)
                return NULL;
        free(d->object_path);
        free(d->name);
        free(d->path);
        loopd_device_info_free(d->info);
        free(d);
        return NULL;
}

const char *loopd_device_get_object_path(LoopdDevice *d) {
        return d ? d->object_path : NULL;
}

const char *loopd_device_get_name(LoopdDevice *d) {
        return d ? d->name : NULL;
}

const char *loopd_device_get_path(LoopdDevice *d) {
        return d ? d->path : NULL;
}

const LoopdDeviceInfo *loopd_device_peek_info(LoopdDevice *d) {
        return d ? d->info : NULL;
}

void loopd_device_list_free(LoopdDevice **devices, size_t n) {
        if (!devices)
                return;
        for (size_t i = 0; i < n; i++)
                loopd_device_unref(devices[i]);
        free(devices);
}

void loopd_device_info_free(LoopdDeviceInfo *info) {
        if (!info)
                return;
        free(info->object_path);
        free(info->name);
        free(info->device_path);
        free(info->backing_file);
        free(info->backing_file_bytes);
        free(info);
}

static LoopdDeviceInfo *device_info_new(const char *object_path) {
        LoopdDeviceInfo *info = calloc(1, sizeof(*info));
        if (!info)
                return NULL;
        info->owner_uid = LOOPD_UID_INVALID;
        info->object_path = strdup(object_path);
        if (!info->object_path) {
                free(info);
                return NULL;
        }
        return info;
}

/* ---- Reading properties -------------------------------------------------- */

static const struct {
        const char *name;
        char type;
        size_t offset;
} device_properties[] = {
        { "Name",          's', offsetof(LoopdDeviceInfo, name) },
        { "DevicePath",    's', offsetof(LoopdDeviceInfo, device_path) },
        { "Number",        'u', offsetof(LoopdDeviceInfo, number) },
        { "DeviceNumber",  't', offsetof(LoopdDeviceInfo, device_number) },
        { "DiskSeq",       't', offsetof(LoopdDeviceInfo, diskseq) },
        { "BackingFile",   's', offsetof(LoopdDeviceInfo, backing_file) },
        { "BackingFileBytes", 'y', offsetof(LoopdDeviceInfo, backing_file_bytes) },
        { "BackingFileDeleted", 'b', offsetof(LoopdDeviceInfo, backing_file_deleted) },
        { "BackingDevice", 't', offsetof(LoopdDeviceInfo, backing_device) },
        { "BackingInode",  't', offsetof(LoopdDeviceInfo, backing_inode) },
        { "Offset",        't', offsetof(LoopdDeviceInfo, offset) },
        { "SizeLimit",     't', offsetof(LoopdDeviceInfo, size_limit) },
        { "Size",          't', offsetof(LoopdDeviceInfo, size) },
        { "BlockSize",     'u', offsetof(LoopdDeviceInfo, block_size) },
        { "ReadOnly",      'b', offsetof(LoopdDeviceInfo, read_only) },
        { "Autoclear",     'b', offsetof(LoopdDeviceInfo, autoclear) },
        { "Partscan",      'b', offsetof(LoopdDeviceInfo, partscan) },
        { "DirectIO",      'b', offsetof(LoopdDeviceInfo, direct_io) },
        { "OwnerUID",      'u', offsetof(LoopdDeviceInfo, owner_uid) },
        { "BoundToCaller", 'b', offsetof(LoopdDeviceInfo, bound_to_caller) },
        { "DetachPending", 'b', offsetof(LoopdDeviceInfo, detach_pending) },
};

/* An "ay" file name (the contract's BackingFileBytes): NUL-terminated on the
 * wire, like udisks2's; taken up to the first NUL, which a kernel name never
 * holds, so the C string is the whole name. */
static int read_bytes_as_string(sd_bus_message *m, char **field) {
        const void *p;
        size_t n;
        char *s;
        int r;

        r = sd_bus_message_read_array(m, 'y', &p, &n);
        if (r < 0)
                return r;
        n = p ? strnlen(p, n) : 0;
        s = malloc(n + 1);
        if (!s)
                return -ENOMEM;
        if (n > 0)
                memcpy(s, p, n);
        s[n] = '\0';
        free(*field);
        *field = s;
        return 0;
}

/* type 'y' stands for "ay". */
static int read_property(sd_bus_message *m, char type, void *field) {
        const char *sig = type == 'y' ? "ay" : type == 's' ? "s" : type == 'u' ? "u" : type == 't' ? "t" : "b";
        int r;

        r = sd_bus_message_enter_container(m, 'v', sig);
        if (r < 0)
                return r == -ENXIO ? -EBADMSG : r;   /* the daemon sent another type */

        switch (type) {
        case 's': {
                const char *s;
                char **p = field;

                r = sd_bus_message_read_basic(m, 's', &s);
                if (r < 0)
                        return r;
                free(*p);
                *p = strdup(s);
                if (!*p)
                        return -ENOMEM;
                break;
        }
        case 'u':
                r = sd_bus_message_read_basic(m, 'u', field);
                break;
        case 't':
                r = sd_bus_message_read_basic(m, 't', field);
                break;
        case 'y':
                r = read_bytes_as_string(m, field);
                break;
        case 'b': {
                int b;

                r = sd_bus_message_read_basic(m, 'b', &b);
                if (r >= 0)
                        *(bool *) field = b;
                break;
        }
        default:
                return -EINVAL;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

/* Reads an a{sv} of org.loopd.Loop1.Device into info. Properties this
 * version does not know are skipped: a newer daemon may add some. */
static int device_info_read(sd_bus_message *m, LoopdDeviceInfo *info) {
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *name;
                bool known = false;

                r = sd_bus_message_read_basic(m, 's', &name);
                if (r < 0)
                        return r;
                for (size_t i = 0; i < ELEMENTSOF(device_properties); i++) {
                        if (strcmp(name, device_properties[i].name) != 0)
                                continue;
                        r = read_property(m, device_properties[i].type,
                                          (uint8_t *) info + device_properties[i].offset);
                        if (r < 0)
                                return r;
                        known = true;
                        break;
                }
                if (!known) {
                        r = sd_bus_message_skip(m, "v");
                        if (r < 0)
                                return r;
                }
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return sd_bus_message_exit_container(m);
}

int loopd_device_get_info(LoopdClient *c, LoopdDevice *d, LoopdDeviceInfo **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(loopd_device_info_freep) LoopdDeviceInfo *info = NULL;
        int r;

        if (!c)
                return -EINVAL;
        if (!d || !ret)
                return client_local_error(c, -EINVAL, "No device or no result pointer given");

        r = client_new_call(c, d->object_path, "org.freedesktop.DBus.Properties", "GetAll", &m);
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "s", LOOPD_DEVICE_INTERFACE);
        if (r < 0)
                return client_local_error(c, r, "Cannot build GetAll call: %s", strerror(-r));
        r = client_call(c, m, &reply);
        if (r < 0)
                return r;

        info = device_info_new(d->object_path);
        if (!info)
                return client_local_error(c, -ENOMEM, "Out of memory");
        r = device_info_read(reply, info);
        if (r < 0)
                return client_local_error(c, r, "Cannot parse the properties of %s: %s",
                                          d->object_path, strerror(-r));
        *ret = TAKE_PTR(info);
        return 0;
}

/* ---- Create -------------------------------------------------------------- */

/* Copies the caller's options of any version into ours (see the header). */
static int options_copy(LoopdClient *c, const LoopdCreateOptions *opts, LoopdCreateOptions *out) {
        loopd_create_options_init(out);
        if (!opts)
                return 0;
        if (opts->size < sizeof(LoopdCreateOptions))
                return client_local_error(c, -EINVAL,
                                          "LoopdCreateOptions.size is %u; use LOOPD_CREATE_OPTIONS_INIT",
                                          opts->size);
        if (opts->size > LOOPD_CREATE_OPTIONS_SIZE_MAX)
                return client_local_error(c, -E2BIG, "LoopdCreateOptions.size is %u, too large",
                                          opts->size);
        for (size_t i = sizeof(LoopdCreateOptions); i < opts->size; i++)
                if (((const uint8_t *) opts)[i] != 0)
                        return client_local_error(c, -E2BIG,
                                                  "LoopdCreateOptions has fields this libloopd does not know");
        for (size_t i = 0; i < ELEMENTSOF(opts->reserved); i++)
                if (opts->reserved[i] != 0)
                        return client_local_error(c, -EINVAL, "LoopdCreateOptions.reserved is not zero");

        memcpy(out, opts, sizeof(LoopdCreateOptions));
        out->size = sizeof(LoopdCreateOptions);
        return 0;
}

/* Only what differs from the daemon's defaults goes on the wire. */
static int append_options(sd_bus_message *m, const LoopdCreateOptions *o) {
        int r;

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        if (o->offset > 0 && (r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_OFFSET, "t", o->offset)) < 0)
                return r;
        if (o->size_limit > 0 && (r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_SIZE_LIMIT, "t", o->size_limit)) < 0)
                return r;
        if (o->block_size > 0 && (r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_BLOCK_SIZE, "u", o->block_size)) < 0)
                return r;
        if (o->read_only && (r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_READ_ONLY, "b", 1)) < 0)
                return r;
        if (o->autoclear && (r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_AUTOCLEAR, "b", 1)) < 0)
                return r;
        if (o->partscan && (r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_PARTSCAN, "b", 1)) < 0)
                return r;
        if (o->direct_io && (r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_DIRECT_IO, "b", 1)) < 0)
                return r;
        if (o->bind_to_caller && (r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_BIND_TO_CALLER, "b", 1)) < 0)
                return r;
        return sd_bus_message_close_container(m);
}

/* Create and CreateFromPath: the first argument differs, the rest is shared. */
static int create_message(LoopdClient *c, const char *member, char type, const void *first,
                          const LoopdCreateOptions *opts, sd_bus_message **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        LoopdCreateOptions o;
        int r;

        r = options_copy(c, opts, &o);
        if (r < 0)
                return r;
        r = client_new_call(c, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, member, &m);
        if (r < 0)
                return r;
        /* sd-bus dups the fd into the message: the caller keeps theirs. */
        r = sd_bus_message_append_basic(m, type, first);
        if (r < 0)
                return client_local_error(c, r, "Cannot pass the backing file: %s", strerror(-r));
        r = append_options(m, &o);
        if (r < 0)
                return client_local_error(c, r, "Cannot build the options: %s", strerror(-r));
        *ret = TAKE_PTR(m);
        return 0;
}

/* Reads the reply "osh" of Create, CreateFromPath and Manager.Open. The fd
 * stays owned by the message unless ret_fd asks for a copy. */
static int device_fd_reply_read(LoopdClient *c, sd_bus_message *reply, const char *member,
                                LoopdDevice **ret_device, int *ret_fd) {
        _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;
        const char *object_path, *device_path;
        int fd, r;

        r = sd_bus_message_read(reply, "osh", &object_path, &device_path, &fd);
        if (r < 0)
                return client_local_error(c, r, "Cannot parse the reply of %s: %s", member, strerror(-r));
        r = device_new(object_path, NULL, device_path, &d);
        if (r < 0)
                return client_local_error(c, r, "Cannot parse the reply of %s: %s", member, strerror(-r));
        if (ret_fd) {
                int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (copy < 0) {
                        r = negative_errno();
                        return client_local_error(c, r, "Cannot keep the device fd: %s", strerror(-r));
                }
                *ret_fd = copy;
        }
        if (ret_device)
                *ret_device = TAKE_PTR(d);
        return 0;
}

static int create_common(LoopdClient *c, const char *member, char type, const void *first,
                         const LoopdCreateOptions *opts, LoopdDevice **ret_device, int *ret_device_fd) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        int r;

        r = create_message(c, member, type, first, opts, &m);
        if (r < 0)
                return r;
        r = client_call(c, m, &reply);
        if (r < 0)
                return r;
        return device_fd_reply_read(c, reply, member, ret_device, ret_device_fd);
}

int loopd_create(LoopdClient *c, int backing_fd, const LoopdCreateOptions *opts,
                 LoopdDevice **ret_device, int *ret_device_fd) {
        if (!c)
                return -EINVAL;
        if (backing_fd < 0)
                return client_local_error(c, -EBADF, "No backing fd given");
        return create_common(c, "Create", 'h', &backing_fd, opts, ret_device, ret_device_fd);
}

int loopd_create_from_path(LoopdClient *c, const char *path, const LoopdCreateOptions *opts,
                           LoopdDevice **ret_device, int *ret_device_fd) {
        if (!c)
                return -EINVAL;
        if (!path)
                return client_local_error(c, -EINVAL, "No backing file path given");
        return create_common(c, "CreateFromPath", 's', path, opts, ret_device, ret_device_fd);
}

/* ---- Open, remove, refresh ----------------------------------------------- */

/* The options of Open from LOOPD_OPEN_* flags. */
static int open_options_append(LoopdClient *c, sd_bus_message *m, uint64_t flags) {
        int r;

        if (flags & ~(uint64_t) LOOPD_OPEN_READ_ONLY)
                return client_local_error(c, -EINVAL, "Unknown flags 0x%llx for Open",
                                          (unsigned long long) (flags & ~(uint64_t) LOOPD_OPEN_READ_ONLY));
        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && (flags & LOOPD_OPEN_READ_ONLY))
                r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_READ_ONLY, "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        if (r < 0)
                return client_local_error(c, r, "Cannot build the options of Open: %s", strerror(-r));
        return 0;
}

int loopd_open(LoopdClient *c, const char *name, uint64_t flags, LoopdDevice **ret_device, int *ret_fd) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        int r;

        if (!c)
                return -EINVAL;
        r = manager_name_call_new(c, "Open", name, &m);
        if (r < 0)
                return r;
        r = open_options_append(c, m, flags);
        if (r < 0)
                return r;
        r = client_call(c, m, &reply);
        if (r < 0)
                return r;
        return device_fd_reply_read(c, reply, "Open", ret_device, ret_fd);
}

int loopd_device_open(LoopdClient *c, LoopdDevice *d, uint64_t flags, int *ret_fd) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        int fd, r;

        if (!c)
                return -EINVAL;
        if (!d)
                return client_local_error(c, -EINVAL, "No device given");

        r = client_new_call(c, d->object_path, LOOPD_DEVICE_INTERFACE, "Open", &m);
        if (r < 0)
                return r;
        r = open_options_append(c, m, flags);
        if (r < 0)
                return r;
        r = client_call(c, m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "h", &fd);
        if (r < 0)
                return client_local_error(c, r, "Cannot parse the reply of Open: %s", strerror(-r));
        if (ret_fd) {
                int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
                if (copy < 0) {
                        r = negative_errno();
                        return client_local_error(c, r, "Cannot keep the device fd: %s", strerror(-r));
                }
                *ret_fd = copy;
        }
        return 0;
}

int loopd_get_device(LoopdClient *c, const char *name, LoopdDevice **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        const char *object_path;
        int r;

        if (!c)
                return -EINVAL;
        if (!ret)
                return client_local_error(c, -EINVAL, "No result pointer given");
        r = manager_name_call_new(c, "GetDevice", name, &m);
        if (r < 0)
                return r;
        r = client_call(c, m, &reply);
        if (r < 0)
                return r;
        r = sd_bus_message_read(reply, "o", &object_path);
        if (r < 0)
                return client_local_error(c, r, "Cannot parse the reply of GetDevice: %s", strerror(-r));
        r = device_new(object_path, NULL, NULL, ret);
        if (r < 0)
                return client_local_error(c, r, "Unexpected device object %s", object_path);
        return 0;
}

int loopd_remove(LoopdClient *c, const char *device) {
        if (!c)
                return -EINVAL;
        if (!device)
                return client_local_error(c, -EINVAL, "No device name given");
        return client_call_simple(c, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Remove", device);
}

int loopd_refresh_size(LoopdClient *c, const char *device) {
        if (!c)
                return -EINVAL;
        if (!device)
                return client_local_error(c, -EINVAL, "No device name given");
        return client_call_simple(c, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "RefreshSize", device);
}

int loopd_device_remove(LoopdClient *c, LoopdDevice *d) {
        if (!c)
                return -EINVAL;
        if (!d)
                return client_local_error(c, -EINVAL, "No device given");
        return client_call_simple(c, d->object_path, LOOPD_DEVICE_INTERFACE, "Remove", NULL);
}

int loopd_device_refresh_size(LoopdClient *c, LoopdDevice *d) {
        if (!c)
                return -EINVAL;
        if (!d)
                return client_local_error(c, -EINVAL, "No device given");
        return client_call_simple(c, d->object_path, LOOPD_DEVICE_INTERFACE, "RefreshSize", NULL);
}

/* ---- List ---------------------------------------------------------------- */

static int device_compare(const void *a, const void *b) {
        const LoopdDeviceInfo *x = (*(LoopdDevice *const *) a)->info;
        const LoopdDeviceInfo *y = (*(LoopdDevice *const *) b)->info;

        if (x->number != y->number)
                return x->number < y->number ? -1 : 1;
        if (x->diskseq != y->diskseq)
                return x->diskseq < y->diskseq ? -1 : 1;
        return 0;
}

/* One object of GetManagedObjects: "o a{sa{sv}}". Sets *ret to NULL when
 * the object has no Device interface. */
static int managed_object_read(sd_bus_message *m, LoopdDevice **ret) {
        _cleanup_(loopd_device_info_freep) LoopdDeviceInfo *info = NULL;
        const char *object_path;
        int r;

        *ret = NULL;
        r = sd_bus_message_read_basic(m, 'o', &object_path);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(m, 'a', "{sa{sv}}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(m, 'e', "sa{sv}")) > 0) {
                const char *interface;

                r = sd_bus_message_read_basic(m, 's', &interface);
                if (r < 0)
                        return r;
                if (strcmp(interface, LOOPD_DEVICE_INTERFACE) == 0 && !info) {
                        info = device_info_new(object_path);
                        if (!info)
                                return -ENOMEM;
                        r = device_info_read(m, info);
                } else
                        r = sd_bus_message_skip(m, "a{sv}");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return r;
        if (!info)
                return 0;

        r = device_new(object_path, info->name, info->device_path, ret);
        if (r < 0)
                return r;
        (*ret)->info = TAKE_PTR(info);
        return 0;
}

int loopd_list(LoopdClient *c, LoopdDevice ***ret_devices, size_t *ret_n) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        LoopdDevice **devices = NULL;
        size_t n = 0, allocated = 0;
        int r;

        if (!c)
                return -EINVAL;
        if (!ret_devices || !ret_n)
                return client_local_error(c, -EINVAL, "No result pointers given");

        r = client_new_call(c, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                            "GetManagedObjects", &m);
        if (r < 0)
                return r;
        r = client_call(c, m, &reply);
        if (r < 0)
                return r;

        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        if (r < 0)
                goto parse_error;
        while ((r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                LoopdDevice *d;

                r = managed_object_read(reply, &d);
                if (r < 0)
                        goto parse_error;
                r = sd_bus_message_exit_container(reply);
                if (r < 0) {
                        loopd_device_unref(d);
                        goto parse_error;
                }
                if (!d)
                        continue;
                if (n == allocated) {
                        size_t k = allocated ? allocated * 2 : 8;
                        LoopdDevice **p = reallocarray(devices, k, sizeof(*devices));
                        if (!p) {
                                loopd_device_unref(d);
                                r = -ENOMEM;
                                goto parse_error;
                        }
                        devices = p;
                        allocated = k;
                }
                devices[n++] = d;
        }
        if (r < 0)
                goto parse_error;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                goto parse_error;

        if (n > 1)
                qsort(devices, n, sizeof(*devices), device_compare);
        *ret_devices = devices;
        *ret_n = n;
        return 0;

parse_error:
        loopd_device_list_free(devices, n);
        return client_local_error(c, r, "Cannot parse the reply of GetManagedObjects: %s", strerror(-r));
}

/* ---- The daemon ---------------------------------------------------------- */

int loopd_get_version(LoopdClient *c, char **ret_version) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        if (!c)
                return -EINVAL;
        if (!ret_version)
                return client_local_error(c, -EINVAL, "No result pointer given");
        r = sd_bus_get_property_string(c->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                       LOOPD_MANAGER_INTERFACE, "Version", &error, ret_version);
        if (r < 0) {
                r = client_bus_error(c, &error, r);
                sd_bus_error_free(&error);
                return r;
        }
        client_reset_error(c);
        return 0;
}

int loopd_get_quota_per_user(LoopdClient *c, uint32_t *ret_quota) {
        sd_bus_error error = SD_BUS_ERROR_NULL;
        int r;

        if (!c)
                return -EINVAL;
        if (!ret_quota)
                return client_local_error(c, -EINVAL, "No result pointer given");
        r = sd_bus_get_property_trivial(c->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                        LOOPD_MANAGER_INTERFACE, "QuotaPerUser", &error, 'u', ret_quota);
        if (r < 0) {
                r = client_bus_error(c, &error, r);
                sd_bus_error_free(&error);
                return r;
        }
        client_reset_error(c);
        return 0;
}

/* ---- Asynchronous calls -------------------------------------------------- */

typedef struct AsyncCall {
        LoopdClient *client;    /* a reference: the reply may come after the caller's unref */
        loopd_create_handler_t create_handler;
        loopd_remove_handler_t remove_handler;
        void *userdata;
} AsyncCall;

static void async_call_free(void *p) {
        AsyncCall *a = p;

        if (!a)
                return;
        loopd_client_unref(a->client);
        free(a);
}

/* Failed replies carry the daemon's error; keep it in the client for the
 * handler and return the errno, or 0 for a method return. */
static int async_reply_error(LoopdClient *c, sd_bus_message *reply) {
        const sd_bus_error *e = sd_bus_message_get_error(reply);

        if (!e) {
                client_reset_error(c);
                return 0;
        }
        return client_bus_error(c, e, -sd_bus_message_get_errno(reply));
}

static int create_async_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        AsyncCall *a = userdata;
        LoopdClient *c = a->client;
        _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;
        _cleanup_(closep) int fd = -1;
        int r;

        r = async_reply_error(c, reply);
        if (r >= 0)
                r = device_fd_reply_read(c, reply, "Create", &d, &fd);
        if (a->create_handler)
                a->create_handler(c, r < 0 ? r : 0, r < 0 ? NULL : d, r < 0 ? -1 : fd, a->userdata);
        return 0;
}

static int remove_async_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        AsyncCall *a = userdata;
        int r;

        r = async_reply_error(a->client, reply);
        if (a->remove_handler)
                a->remove_handler(a->client, r, a->userdata);
        return 0;
}

static int call_async(LoopdClient *c, sd_bus_message *m, sd_bus_message_handler_t callback,
                      AsyncCall *a_in, sd_bus_slot **ret_slot) {
        _cleanup_(freep) AsyncCall *a = a_in;
        sd_bus_slot *slot = NULL;
        int r;

        a->client = loopd_client_ref(c);
        r = sd_bus_call_async(c->bus, &slot, m, callback, a, c->timeout_usec);
        if (r < 0) {
                loopd_client_unref(c);
                return client_local_error(c, r, "Cannot send the call: %s", strerror(-r));
        }
        /* From here on the slot owns the AsyncCall and frees it whether the
         * reply came, the call timed out or the caller cancelled. */
        (void) sd_bus_slot_set_destroy_callback(slot, async_call_free);
        a = NULL;

        if (ret_slot)
                *ret_slot = slot;
        else {
                (void) sd_bus_slot_set_floating(slot, 1);
                sd_bus_slot_unref(slot);
        }
        client_reset_error(c);
        return 0;
}

int loopd_create_async(LoopdClient *c, int backing_fd, const LoopdCreateOptions *opts,
                       loopd_create_handler_t handler, void *userdata, sd_bus_slot **ret_slot) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        AsyncCall *a;
        int r;

        if (!c)
                return -EINVAL;
        if (backing_fd < 0)
                return client_local_error(c, -EBADF, "No backing fd given");
        r = create_message(c, "Create", 'h', &backing_fd, opts, &m);
        if (r < 0)
                return r;
        a = calloc(1, sizeof(*a));
        if (!a)
                return client_local_error(c, -ENOMEM, "Out of memory");
        a->create_handler = handler;
        a->userdata = userdata;
        return call_async(c, m, create_async_reply, a, ret_slot);
}

int loopd_remove_async(LoopdClient *c, const char *device,
                       loopd_remove_handler_t handler, void *userdata, sd_bus_slot **ret_slot) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        AsyncCall *a;
        int r;

        if (!c)
                return -EINVAL;
        r = manager_name_call_new(c, "Remove", device, &m);
        if (r < 0)
                return r;
        a = calloc(1, sizeof(*a));
        if (!a)
                return client_local_error(c, -ENOMEM, "Out of memory");
        a->remove_handler = handler;
        a->userdata = userdata;
        return call_async(c, m, remove_async_reply, a, ret_slot);
}
