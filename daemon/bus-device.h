/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * One org.loopd.Loop1.Device object per attachment, at
 * /org/loopd/Loop1/device/loopN_DISKSEQ (the diskseq makes a path name one
 * attachment only: never reused), its properties, its methods (handed to
 * bus-manager.c), and the ObjectManager signals that follow the Devices
 * model (InterfacesAdded, InterfacesRemoved, PropertiesChanged).
 *
 * Properties are what the kernel says: read again from sysfs when they are
 * asked for and older than a moment (what changes without a uevent, such as
 * an unlinked backing file or direct I/O switched by someone else, is then
 * current), and PropertiesChanged is sent whenever a read finds a change.
 * Names are bytes: BackingFile is escaped into valid UTF-8 (escape.h),
 * BackingFileBytes is exact, so no file name can break a reply.
 */

#include "context.h"

/* The fallback vtable and enumerator under /org/loopd/Loop1/device. */
int bus_device_register(Context *c);

/* The object path of d (malloc'ed; NULL on ENOMEM). */
char *bus_device_path(const Device *d);

/* What the bus layer wants from devices_new(); userdata is the Context. */
extern const DeviceEvents bus_device_events;
