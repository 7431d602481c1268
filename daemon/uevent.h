/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Kernel uevents for loop block devices, straight from the kernel's netlink
 * multicast group (no udev: there may be none, and when there is one we do
 * not want to wait for it). Every add/remove/change of a "loopN" disk, or
 * of one of its partitions, is reported by number; what changed is for the
 * caller to read from sysfs.
 */

#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "util.h"

typedef struct UeventMonitor UeventMonitor;

typedef struct Uevent {
        uint32_t number;    /* loopN; UINT32_MAX: events were lost, resync all */
        const char *action; /* "add", "change", "remove"...; points into the datagram */
        uint64_t diskseq;   /* DISKSEQ=: the attachment it is about; 0 if absent (before 5.15) */
        uint64_t seqnum;    /* SEQNUM=: the kernel's uevent counter; 0 if absent */
        bool partition;     /* about a partition of loopN (loopNpM), not the disk */
} Uevent;

typedef void (*uevent_handler_t)(const Uevent *ev, void *userdata);

int uevent_monitor_new(sd_event *e, uevent_handler_t handler, void *userdata, UeventMonitor **ret);
UeventMonitor *uevent_monitor_free(UeventMonitor *m);
DEFINE_POINTER_CLEANUP(UeventMonitor, uevent_monitor_free)

/* Pure parser of one uevent datagram; exposed for tests and fuzzing.
 * Returns 1 and fills *ret (action pointing into buf) when it is about a
 * loop disk or one of its partitions, 0 when it is about something else, -EINVAL if malformed.
 * A DISKSEQ or SEQNUM that is not a plain decimal number reads as 0. */
int uevent_parse(const char *buf, size_t len, Uevent *ret);
