// SPDX-License-Identifier: LGPL-2.1-or-later

// loopd from Go with godbus: attach IMAGE, write through the device fd loopd
// passes back, open the device again with Open, and leave the removal to
// loopd (bind-to-caller: the device goes with our connection).
//
//	go run . IMAGE
//
// Debian: golang-go, golang-dbus-dev (github.com/godbus/dbus/v5). The system
// bus is $DBUS_SYSTEM_BUS_ADDRESS if set.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/godbus/dbus/v5"
)

const (
	busName     = "org.loopd.Loop1"
	managerPath = dbus.ObjectPath("/org/loopd/Loop1")
	manager     = "org.loopd.Loop1.Manager"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: loopd-example IMAGE")
		os.Exit(2)
	}
	if err := run(os.Args[1]); err != nil {
		// A refusal carries its D-Bus error name.
		var e dbus.Error
		if errors.As(err, &e) {
			fmt.Fprintln(os.Stderr, "error", e.Name, e.Body)
		} else {
			fmt.Fprintln(os.Stderr, "error", err)
		}
		os.Exit(1)
	}
}

func run(image string) error {
	// A private connection, so that closing it (or our exit) is what tells
	// loopd to remove the bound device.
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return err
	}
	defer conn.Close()
	loopd := conn.Object(busName, managerPath)

	backing, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer backing.Close()

	// Options are a{sv}: every value typed as the contract says ("offset"
	// is a uint64, not an int).
	options := map[string]dbus.Variant{
		"offset":         dbus.MakeVariant(uint64(0)),
		"bind-to-caller": dbus.MakeVariant(true),
	}
	var obj dbus.ObjectPath
	var path string
	var fd dbus.UnixFD
	// An fd goes as dbus.UnixFD; godbus sends it over the unix socket.
	err = loopd.Call(manager+".Create", 0, dbus.UnixFD(backing.Fd()), options).Store(&obj, &path, &fd)
	if err != nil {
		return err
	}
	fmt.Println("device", path)
	fmt.Println("object", obj)

	// The returned fd is ours: wrap it so that it gets closed.
	dev := os.NewFile(uintptr(fd), path)
	sector := make([]byte, 512)
	copy(sector, "hello loopd")
	if _, err := dev.WriteAt(sector, 0); err != nil {
		dev.Close()
		return err
	}
	dev.Sync()
	dev.Close()

	// Open: a new fd to an attached device (ours: nobody is asked).
	err = loopd.Call(manager+".Open", 0, path,
		map[string]dbus.Variant{"read-only": dbus.MakeVariant(true)}).Store(&obj, &path, &fd)
	if err != nil {
		return err
	}
	dev = os.NewFile(uintptr(fd), path)
	buf := make([]byte, 11)
	_, err = dev.ReadAt(buf, 0)
	dev.Close()
	if err != nil {
		return err
	}
	fmt.Println("read", string(buf))

	// BackingFileBytes is the exact name ("ay", NUL-terminated); BackingFile
	// is text for people.
	v, err := conn.Object(busName, obj).GetProperty("org.loopd.Loop1.Device.BackingFileBytes")
	if err != nil {
		return err
	}
	name, _ := v.Value().([]byte)
	fmt.Println("backing", string(bytes.TrimRight(name, "\x00")))

	// Errors carry their D-Bus name.
	err = loopd.Call(manager+".Remove", 0, "loop4000").Err
	var e dbus.Error
	if errors.As(err, &e) {
		fmt.Println("error", e.Name)
	}
	// Nothing to remove: bind-to-caller hands that to loopd when the
	// connection closes, also if we crash.
	return nil
}
