#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""loopd from Python with dbus-python: attach IMAGE, write through the device
fd loopd passes back, open the device again with Open, and leave the removal
to loopd (bind-to-caller: the device goes with our connection).

    loopd-dbus.py IMAGE

Debian: python3-dbus. The system bus is $DBUS_SYSTEM_BUS_ADDRESS if set.
"""

import os
import sys

import dbus

BUS_NAME = "org.loopd.Loop1"
MANAGER_PATH = "/org/loopd/Loop1"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    bus = dbus.SystemBus()
    manager = dbus.Interface(bus.get_object(BUS_NAME, MANAGER_PATH), "org.loopd.Loop1.Manager")

    with open(sys.argv[1], "r+b") as backing:
        # dbus-python guesses a Python int to be an int32 ("i"); loopd wants
        # offset as a uint64 and names the key it refuses.
        try:
            manager.Create(dbus.types.UnixFd(backing), {"offset": 0})
        except dbus.DBusException as e:
            print("error", e.get_dbus_name())

        # Typed as the contract says. UnixFd duplicates the file's fd.
        obj, path, fd = manager.Create(
            dbus.types.UnixFd(backing),
            {"offset": dbus.UInt64(0), "bind-to-caller": dbus.Boolean(True)})
    print("device", path)
    print("object", obj)

    # A returned UnixFd is ours once taken; close it when done.
    dev = fd.take()
    os.pwrite(dev, b"hello loopd".ljust(512, b"\0"), 0)
    os.fsync(dev)
    os.close(dev)

    # Open: a new fd to an attached device (ours: nobody is asked).
    _, _, fd = manager.Open(path, {"read-only": dbus.Boolean(True)})
    dev = fd.take()
    print("read", os.pread(dev, 11, 0).decode())
    os.close(dev)

    # BackingFileBytes is the exact name (ay, NUL-terminated).
    device = bus.get_object(BUS_NAME, obj)
    name = bytes(device.Get("org.loopd.Loop1.Device", "BackingFileBytes",
                            dbus_interface=dbus.PROPERTIES_IFACE)).rstrip(b"\0")
    print("backing", os.fsdecode(name))

    # Nothing to remove: bind-to-caller hands that to loopd when our
    # connection closes, also if we crash.
    bus.close()


if __name__ == "__main__":
    main()
