/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Kernel uevents for loop block devices, straight from the kernel's netlink
 * multicast group (no udev: there may be none, and when there is one we do
 * not want to wait for it). Every add/remove/change of a "loopN" disk is
 * reported by number; what changed is for the caller to read from sysfs.
 */

#include <stdint.h>
#include <systemd/sd-event.h>

#include "util.h"

typedef struct UeventMonitor UeventMonitor;
typedef void (*uevent_handler_t)(uint32_t number, const char *action, void *userdata);

int uevent_monitor_new(sd_event *e, uevent_handler_t handler, void *userdata, UeventMonitor **ret);
UeventMonitor *uevent_monitor_free(UeventMonitor *m);
DEFINE_POINTER_CLEANUP(UeventMonitor, uevent_monitor_free)

/* Pure parser of one uevent datagram; exposed for tests and fuzzing.
 * Returns 1 and fills *number and *action (pointing into buf) when it is about
 * a whole loop disk, 0 when it is about something else, -EINVAL if malformed. */
int uevent_parse(const char *buf, size_t len, uint32_t *number, const char **action);
