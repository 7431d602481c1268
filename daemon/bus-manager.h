/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * The bus edge: org.loopd.Loop1.Manager on /org/loopd/Loop1, one
 * org.loopd.Loop1.Device object per attachment, the ObjectManager, and the
 * watches that remove bind-to-caller devices when their caller goes. Reads
 * and validates arguments, authorizes, calls devices_*(), emits signals,
 * replies. Never an ioctl.
 */

#include "context.h"
#include "loopd-protocol.h"


/* Registers the objects on c->bus. */
int bus_manager_register(Context *c);

/* The DeviceEvents the bus layer wants from devices_new(). */
extern const DeviceEvents bus_device_events;

/* For devices found at start: watch bound callers (removing devices whose
 * caller is already gone). */
void bus_manager_watch_existing(Context *c);

/* At exit: cancels requests still in flight and drops the watches on
 * bound callers (their devices and records stay). */
void bus_manager_cancel_operations(Context *c);

/* uevent handler: userdata is the Context. */
void bus_manager_on_uevent(const Uevent *ev, void *userdata);
