#!/usr/bin/python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""loopd from Python with PyGObject (Gio): attach IMAGE, write through the
device fd loopd passes back, open the device again with Open, and leave the
removal to loopd (bind-to-caller: the device goes with our connection).

    loopd-gi.py IMAGE

Debian: python3-gi, gir1.2-glib-2.0. The system bus is $DBUS_SYSTEM_BUS_ADDRESS
if set.
"""

import os
import sys

from gi.repository import Gio, GLib

BUS_NAME = "org.loopd.Loop1"
MANAGER_PATH = "/org/loopd/Loop1"
MANAGER = "org.loopd.Loop1.Manager"


def call(bus, method, args, reply_type, fds=None):
    """A method call on the Manager; returns (reply tuple, returned fd list)."""
    reply, out_fds = bus.call_with_unix_fd_list_sync(
        BUS_NAME, MANAGER_PATH, MANAGER, method, args,
        GLib.VariantType(reply_type), Gio.DBusCallFlags.NONE, -1, fds, None)
    return reply.unpack(), out_fds


def take_fd(fd_list, handle):
    """The fd behind a handle ("h") of a reply. get() returns a duplicate
    that is ours to close; the list keeps (and closes) its own."""
    return fd_list.get(handle)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    bus = Gio.bus_get_sync(Gio.BusType.SYSTEM, None)

    # The backing file goes over the bus as an fd in a GUnixFDList; the
    # message carries its index. append() duplicates, so ours can close.
    fds = Gio.UnixFDList.new()
    backing = os.open(sys.argv[1], os.O_RDWR | os.O_CLOEXEC)
    index = fds.append(backing)
    os.close(backing)

    # Options are a{sv}: every value typed as the contract says ("offset"
    # is t, a uint64; a plain int would be sent as i and refused).
    options = {
        "offset": GLib.Variant("t", 0),
        "bind-to-caller": GLib.Variant("b", True),
    }
    (obj, path, handle), out_fds = call(
        bus, "Create", GLib.Variant("(ha{sv})", (index, options)), "(osh)", fds)
    print("device", path)
    print("object", obj)

    # The device, opened by loopd for us: write through it, then close it.
    dev = take_fd(out_fds, handle)
    os.pwrite(dev, b"hello loopd".ljust(512, b"\0"), 0)
    os.fsync(dev)
    os.close(dev)

    # Open: a new fd to an attached device (ours: nobody is asked).
    (obj2, path2, handle2), out_fds = call(
        bus, "Open", GLib.Variant("(sa{sv})", (path, {"read-only": GLib.Variant("b", True)})),
        "(osh)")
    dev = take_fd(out_fds, handle2)
    print("read", os.pread(dev, 11, 0).decode())
    os.close(dev)

    # BackingFileBytes is the exact name (ay, NUL-terminated); BackingFile
    # is text for people.
    props = bus.call_sync(BUS_NAME, obj, "org.freedesktop.DBus.Properties", "Get",
                          GLib.Variant("(ss)", ("org.loopd.Loop1.Device", "BackingFileBytes")),
                          GLib.VariantType("(v)"), Gio.DBusCallFlags.NONE, -1, None)
    name = bytes(props.unpack()[0]).rstrip(b"\0")
    print("backing", os.fsdecode(name))

    # Errors carry their D-Bus name.
    try:
        call(bus, "Remove", GLib.Variant("(s)", ("loop4000",)), "()")
    except GLib.Error as e:
        print("error", Gio.DBusError.get_remote_error(e))

    # Nothing to remove: bind-to-caller hands that to loopd when our
    # connection closes, also if we crash.
    bus.close_sync(None)


if __name__ == "__main__":
    main()
