/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus-device.h"
#include "bus-manager.h"
#include "bus-watch.h"
#include "escape.h"
#include "log.h"

/* Properties are read again from sysfs when asked for: what changes without
 * a uevent (an unlinked backing file, direct I/O switched) is then true when
 * read. Within one call (GetAll, GetManagedObjects) a device is read once. */

char *bus_device_path(const Device *d) {
        char *p;

        if (asprintf(&p, LOOPD_DEVICE_PATH_PREFIX "/loop%" PRIu32 "_%" PRIu64, d->number, d->diskseq) < 0)
                return NULL;
        return p;
}

static Device *device_by_path(Context *c, const char *path) {
        const char *prefix = LOOPD_DEVICE_PATH_PREFIX "/";
        unsigned long long seq;
        unsigned number;
        char tail;

        if (strncmp(path, prefix, strlen(prefix)) != 0)
                return NULL;
        if (sscanf(path + strlen(prefix), "loop%u_%llu%c", &number, &seq, &tail) != 2)
                return NULL;
        return devices_get_attachment(c->devices, number, seq);
}

/* ---- objects ----------------------------------------------------------------- */

/* Properties.Get/GetAll, GetManagedObjects, Introspect: what shows
 * properties (or anything not known to be a method call). */
static bool message_reads_properties(sd_bus_message *m) {
        if (!m || !sd_bus_message_is_method_call(m, NULL, NULL))
                return true;
        return !sd_bus_message_is_method_call(m, LOOPD_DEVICE_INTERFACE, NULL);
}

static int device_find(sd_bus *bus, const char *path, const char *interface, void *userdata, void **found,
                       sd_bus_error *error) {
        Context *c = userdata;
        Device *d = device_by_path(c, path);

        if (!d)
                return 0;
        /* Fresh before any property of it is read: the read itself emits
         * PropertiesChanged when it finds a change. Only for a read: a
         * method on the device (Remove, Open, RefreshSize) acts on the
         * attachment its path names, which the job checks by diskseq in
         * the kernel. Not while loopd is emitting a signal itself: sd-bus
         * looks the object up again to fill the signal in, and a re-read
         * then could drop the very Device being described. */
        if (!c->emitting && message_reads_properties(sd_bus_get_current_message(bus)))
                d = devices_refresh(c->devices, d, now_usec() - c->dispatch_usec);
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
                l[k] = bus_device_path(d);
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

static int method_open(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return bus_manager_device_request(context_of(m), m, userdata, REQUEST_OPEN, error);
}

static int method_remove(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return bus_manager_device_request(context_of(m), m, userdata, REQUEST_REMOVE, error);
}

static int method_refresh_size(sd_bus_message *m, void *userdata, sd_bus_error *error) {
        return bus_manager_device_request(context_of(m), m, userdata, REQUEST_REFRESH_SIZE, error);
}

/* ---- properties ---------------------------------------------------------------- */

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
DEVICE_PROPERTY_GETTER(property_backing_deleted, "b", d->info.backing_deleted)
DEVICE_PROPERTY_GETTER(property_offset, "t", d->info.offset)
DEVICE_PROPERTY_GETTER(property_size_limit, "t", d->info.size_limit)
DEVICE_PROPERTY_GETTER(property_size, "t", d->info.size)
DEVICE_PROPERTY_GETTER(property_block_size, "u", d->info.block_size)
DEVICE_PROPERTY_GETTER(property_read_only, "b", !!(d->info.flags & LO_FLAGS_READ_ONLY))
DEVICE_PROPERTY_GETTER(property_autoclear, "b", !!(d->info.flags & LO_FLAGS_AUTOCLEAR))
DEVICE_PROPERTY_GETTER(property_partscan, "b", !!(d->info.flags & LO_FLAGS_PARTSCAN))
DEVICE_PROPERTY_GETTER(property_direct_io, "b", !!(d->info.flags & LO_FLAGS_DIRECT_IO))
DEVICE_PROPERTY_GETTER(property_owner_uid, "u", (uint32_t) d->owner)
DEVICE_PROPERTY_GETTER(property_bound_to_caller, "b", d->binding != NULL)
DEVICE_PROPERTY_GETTER(property_detach_pending, "b", d->detach_pending)

static int property_backing_file(sd_bus *bus, const char *path, const char *interface, const char *property,
                                 sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Device *d = userdata;
        _cleanup_(freep) char *escaped = name_escape(d->info.backing_file), *s = NULL;

        if (!escaped)
                return -ENOMEM;
        if (!d->info.backing_deleted)
                return sd_bus_message_append(reply, "s", escaped);
        if (asprintf(&s, "%s (deleted)", escaped) < 0)
                return -ENOMEM;
        return sd_bus_message_append(reply, "s", s);
}

static int property_backing_file_bytes(sd_bus *bus, const char *path, const char *interface, const char *property,
                                       sd_bus_message *reply, void *userdata, sd_bus_error *error) {
        Device *d = userdata;
        const char *s = strempty(d->info.backing_file);

        /* NUL-terminated, as udisks2's Loop.BackingFile and GLib's bytestrings. */
        return sd_bus_message_append_array(reply, 'y', s, strlen(s) + 1);
}

static const sd_bus_vtable device_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_PROPERTY("Name", "s", property_name, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DevicePath", "s", property_device_path, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("Number", "u", property_number, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DeviceNumber", "t", property_device_number, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("DiskSeq", "t", property_diskseq, 0, SD_BUS_VTABLE_PROPERTY_CONST),
        SD_BUS_PROPERTY("BackingFile", "s", property_backing_file, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BackingFileBytes", "ay", property_backing_file_bytes, 0,
                        SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BackingFileDeleted", "b", property_backing_deleted, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BackingDevice", "t", property_backing_device, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_PROPERTY("BackingInode", "t", property_backing_inode, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
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
        SD_BUS_PROPERTY("DetachPending", "b", property_detach_pending, 0, SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE),
        SD_BUS_METHOD_WITH_NAMES("Open", "a{sv}", SD_BUS_PARAM(options), "h", SD_BUS_PARAM(device_fd), method_open,
                                 SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Remove", "", "", method_remove, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("RefreshSize", "", "", method_refresh_size, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END,
};

int bus_device_register(Context *c) {
        int r;

        r = sd_bus_add_fallback_vtable(c->bus, NULL, LOOPD_DEVICE_PATH_PREFIX, LOOPD_DEVICE_INTERFACE, device_vtable,
                                       device_find, c);
        if (r < 0)
                return r;
        return sd_bus_add_node_enumerator(c->bus, NULL, LOOPD_DEVICE_PATH_PREFIX, device_enumerate, c);
}

/* ---- the model's events → signals ------------------------------------------------ */

static void emitted(int r, const char *what, const Device *d) {
        /* A signal that cannot be sent leaves listeners behind the kernel
         * until their next GetManagedObjects; worth a line. */
        if (r < 0)
                log_warning_errno(r, "Cannot send %s for loop%" PRIu32, what, d->number);
}

static void on_added(Device *d, void *userdata) {
        Context *c = userdata;
        _cleanup_(freep) char *path = bus_device_path(d);

        if (!path)
                return;
        c->emitting = true;
        emitted(sd_bus_emit_interfaces_added(c->bus, path, LOOPD_DEVICE_INTERFACE, NULL), "InterfacesAdded", d);
        c->emitting = false;
        if (d->binding)
                bus_watch_device(c, d);
}

static void on_removed(Device *d, void *userdata) {
        Context *c = userdata;
        _cleanup_(freep) char *path = bus_device_path(d);

        if (!path)
                return;
        c->emitting = true;
        emitted(sd_bus_emit_interfaces_removed(c->bus, path, LOOPD_DEVICE_INTERFACE, NULL), "InterfacesRemoved", d);
        c->emitting = false;
}

static void on_changed(Device *d, unsigned what, void *userdata) {
        Context *c = userdata;
        _cleanup_(freep) char *path = bus_device_path(d);
        const char *names[16];
        size_t n = 0;

        if (!path)
                return;
        if (what & DEVICE_CHANGED_INFO) {
                static const char *const info[] = { "BackingFile", "BackingFileBytes", "BackingFileDeleted",
                                                    "Offset", "SizeLimit", "Size", "BlockSize", "ReadOnly",
                                                    "Autoclear", "Partscan", "DirectIO" };
                for (size_t i = 0; i < ELEMENTSOF(info); i++)
                        names[n++] = info[i];
        }
        if (what & DEVICE_CHANGED_IDENTITY) {
                names[n++] = "BackingDevice";
                names[n++] = "BackingInode";
        }
        if (what & DEVICE_CHANGED_STATE)
                names[n++] = "DetachPending";
        names[n] = NULL;
        c->emitting = true;
        if (n > 0)
                emitted(sd_bus_emit_properties_changed_strv(c->bus, path, LOOPD_DEVICE_INTERFACE, (char **) names),
                        "PropertiesChanged", d);
        if (what & DEVICE_CHANGED_OWNER) {
                /* OwnerUID and BoundToCaller are constant for an attachment's
                 * life as clients see it; one adopted after start is new to
                 * them: present it again. */
                emitted(sd_bus_emit_interfaces_removed(c->bus, path, LOOPD_DEVICE_INTERFACE, NULL),
                        "InterfacesRemoved", d);
                c->emitting = false;
                on_added(d, c);
        }
        c->emitting = false;
}

static void on_counts_changed(void *userdata) {
        context_counts_changed(userdata);
}

const DeviceEvents bus_device_events = {
        .added = on_added,
        .removed = on_removed,
        .changed = on_changed,
        .counts_changed = on_counts_changed,
};
