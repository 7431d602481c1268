/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopd-test-owner-probe: what one uid can do with a loop device, asked the
 * way that uid would: by opening the node with its own rights, or by
 * calling Open, GetManagedObjects or GetAll over the bus as itself.
 *
 * Tests run it through the fixture's `setpriv --reuid=U --regid=G
 * --clear-groups` (a real uid change). Like loopd-test-caller it links
 * libsystemd only. Output is one line per answer, words separated by one
 * space (tabs in listings), so tests split it without a parser:
 *
 *   node DEV                 "rw=R ro=R", R = ok or the errno name of open()
 *   open NAME [--ro]         Manager.Open: "ok OBJ DEV MODE HASH" (MODE ro|rw
 *                            from F_GETFL, HASH: FNV-1a 64 of the first
 *                            4096 bytes read through the fd, in hex)
 *   device-open OBJ [--ro]   Device.Open: "ok - - MODE HASH"
 *   hold DEV [--ro]          opens the node itself: "ok" (or "error ERRNO"),
 *                            then per line on stdin: "read" -> "ok HASH" or
 *                            "error ERRNO" through that fd; "clr" asks
 *                            LOOP_CLR_FD through it (anyone holding the
 *                            node may) -> "ok" or "error ERRNO"; "close"
 *                            closes it -> "ok"; exits at EOF
 *   managed                  GetManagedObjects: one line per device,
 *                            "OBJ\tBackingFile\tHEX(BackingFileBytes)\tDeleted",
 *                            then "ok N"
 *   props OBJ                Device GetAll: one such line, then "ok 1"
 *   watch OBJ                subscribes to PropertiesChanged of OBJ, prints
 *                            "ready", then for each signal "changed K=V ..."
 *                            (booleans and integers; others as K=*), until
 *                            stdin reaches EOF
 *
 * A D-Bus error is "error NAME MESSAGE" (exit 1); a local failure "error
 * local MESSAGE" (exit 2).
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/loop.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "caller-output.h"
#include "loopd-protocol.h"

#define BLOCK 4096

static const char *errno_name(int e) {
        switch (e) {
        case EACCES: return "EACCES";
        case EPERM: return "EPERM";
        case ENXIO: return "ENXIO";
        case ENOENT: return "ENOENT";
        case EROFS: return "EROFS";
        case EBUSY: return "EBUSY";
        case EIO: return "EIO";
        case ENODEV: return "ENODEV";
        default: {
                static char buf[32];
                snprintf(buf, sizeof buf, "errno%d", e);
                return buf;
        }
        }
}

/* FNV-1a 64 of the first BLOCK bytes at offset 0 of fd; false with errno set. */
static bool hash_block(int fd, uint64_t *ret) {
        unsigned char buf[BLOCK];
        uint64_t h = 0xcbf29ce484222325ULL;
        size_t got = 0;

        while (got < sizeof buf) {
                ssize_t n = pread(fd, buf + got, sizeof buf - got, (off_t) got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return false;
                if (n == 0) {
                        errno = EIO;
                        return false;
                }
                got += (size_t) n;
        }
        for (size_t i = 0; i < sizeof buf; i++) {
                h ^= buf[i];
                h *= 0x100000001b3ULL;
        }
        *ret = h;
        return true;
}

static int cmd_node(const char *dev) {
        const int modes[2] = { O_RDWR, O_RDONLY };
        const char *names[2] = { "rw", "ro" };

        for (int i = 0; i < 2; i++) {
                int fd = open(dev, modes[i] | O_CLOEXEC | O_NOCTTY);
                printf("%s%s=%s", i ? " " : "", names[i], fd >= 0 ? "ok" : errno_name(errno));
                if (fd >= 0)
                        close(fd);
        }
        putchar('\n');
        fflush(stdout);
        return 0;
}

static int append_open_options(sd_bus_message *m, bool ro) {
        int r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r >= 0 && ro)
                r = sd_bus_message_append(m, "{sv}", LOOPD_OPTION_READ_ONLY, "b", 1);
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

static void print_fd(const char *obj, const char *dev, int fd) {
        int fl = fcntl(fd, F_GETFL);
        uint64_t h;

        if (fl < 0)
                local_error("F_GETFL: %s", strerror(errno));
        if (!hash_block(fd, &h))
                local_error("reading the returned fd: %s", strerror(errno));
        printf("ok %s %s %s %016" PRIx64 "\n", obj, dev, (fl & O_ACCMODE) == O_RDONLY ? "ro" : "rw", h);
        fflush(stdout);
}

static int cmd_open(sd_bus *bus, const char *target, bool device_object, bool ro) {
        sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *obj = "-", *dev = "-";
        int fd, r;

        if (device_object)
                r = sd_bus_message_new_method_call(bus, &m, LOOPD_BUS_NAME, target, LOOPD_DEVICE_INTERFACE, "Open");
        else {
                r = sd_bus_message_new_method_call(bus, &m, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                                   LOOPD_MANAGER_INTERFACE, "Open");
                if (r >= 0)
                        r = sd_bus_message_append(m, "s", target);
        }
        if (r >= 0)
                r = sd_bus_message_set_allow_interactive_authorization(m, false);
        if (r >= 0)
                r = append_open_options(m, ro);
        if (r < 0)
                local_error("building the call: %s", strerror(-r));
        r = sd_bus_call(bus, m, 0, &e, &reply);
        if (r < 0)
                call_failed(&e, r);
        if (device_object)
                r = sd_bus_message_read(reply, "h", &fd);
        else
                r = sd_bus_message_read(reply, "osh", &obj, &dev, &fd);
        if (r < 0)
                local_error("reply: %s", strerror(-r));
        print_fd(obj, dev, fd);
        sd_bus_message_unref(reply);
        sd_bus_message_unref(m);
        return 0;
}

static int cmd_hold(const char *dev, bool ro) {
        char line[64];
        int fd = open(dev, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);

        if (fd < 0) {
                printf("error %s\n", errno_name(errno));
                fflush(stdout);
                return 1;
        }
        printf("ok\n");
        fflush(stdout);
        while (fgets(line, sizeof line, stdin)) {
                if (strncmp(line, "read", 4) == 0) {
                        uint64_t h;
                        if (fd < 0)
                                printf("error closed\n");
                        else if (hash_block(fd, &h))
                                printf("ok %016" PRIx64 "\n", h);
                        else
                                printf("error %s\n", errno_name(errno));
                } else if (strncmp(line, "clr", 3) == 0) {
                        if (fd < 0)
                                printf("error closed\n");
                        else if (ioctl(fd, LOOP_CLR_FD, 0) < 0)
                                printf("error %s\n", errno_name(errno));
                        else
                                printf("ok\n");
                } else if (strncmp(line, "close", 5) == 0) {
                        if (fd >= 0)
                                close(fd);
                        fd = -1;
                        printf("ok\n");
                } else
                        printf("error local unknown command\n");
                fflush(stdout);
        }
        return 0;
}

/* One device's Device properties, entered at the a{sv}. */
static int print_device(sd_bus_message *reply, const char *obj) {
        char *backing = NULL;
        const void *bytes = NULL;
        size_t n_bytes = 0;
        int deleted = -1, r;

        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *key;
                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        return r;
                if (strcmp(key, "BackingFile") == 0) {
                        const char *s;
                        r = sd_bus_message_read(reply, "v", "s", &s);
                        if (r >= 0)
                                backing = strdup(s);
                } else if (strcmp(key, "BackingFileBytes") == 0) {
                        r = sd_bus_message_enter_container(reply, 'v', "ay");
                        if (r >= 0)
                                r = sd_bus_message_read_array(reply, 'y', &bytes, &n_bytes);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                } else if (strcmp(key, "BackingFileDeleted") == 0)
                        r = sd_bus_message_read(reply, "v", "b", &deleted);
                else
                        r = sd_bus_message_skip(reply, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        r = sd_bus_message_exit_container(reply);
        if (r < 0)
                return r;
        printf("%s\t%s\t", obj, backing ? backing : "(none)");
        for (size_t i = 0; i < n_bytes; i++)
                printf("%02x", ((const unsigned char *) bytes)[i]);
        printf("\t%d\n", deleted);
        free(backing);
        return 1;
}

static int cmd_managed(sd_bus *bus) {
        sd_bus_message *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        unsigned count = 0;
        int r;

        r = sd_bus_call_method(bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                               "GetManagedObjects", &e, &reply, "");
        if (r < 0)
                call_failed(&e, r);
        r = sd_bus_message_enter_container(reply, 'a', "{oa{sa{sv}}}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "oa{sa{sv}}")) > 0) {
                const char *obj;
                r = sd_bus_message_read(reply, "o", &obj);
                if (r >= 0)
                        r = sd_bus_message_enter_container(reply, 'a', "{sa{sv}}");
                while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sa{sv}")) > 0) {
                        const char *iface;
                        r = sd_bus_message_read(reply, "s", &iface);
                        if (r < 0)
                                break;
                        if (strcmp(iface, LOOPD_DEVICE_INTERFACE) == 0) {
                                r = print_device(reply, obj);
                                count++;
                        } else
                                r = sd_bus_message_skip(reply, "a{sv}");
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r < 0)
                local_error("reading GetManagedObjects: %s", strerror(-r));
        printf("ok %u\n", count);
        fflush(stdout);
        sd_bus_message_unref(reply);
        return 0;
}

static int cmd_props(sd_bus *bus, const char *obj) {
        sd_bus_message *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(bus, LOOPD_BUS_NAME, obj, "org.freedesktop.DBus.Properties", "GetAll", &e, &reply,
                               "s", LOOPD_DEVICE_INTERFACE);
        if (r < 0)
                call_failed(&e, r);
        r = print_device(reply, obj);
        if (r < 0)
                local_error("reading GetAll: %s", strerror(-r));
        printf("ok 1\n");
        fflush(stdout);
        sd_bus_message_unref(reply);
        return 0;
}

static int on_properties_changed(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        const char *iface;
        int r;

        r = sd_bus_message_read(m, "s", &iface);
        if (r < 0 || strcmp(iface, LOOPD_DEVICE_INTERFACE) != 0)
                return 0;
        fputs("changed", stdout);
        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(m, 'e', "sv")) > 0) {
                const char *key, *contents;
                char type;
                r = sd_bus_message_read(m, "s", &key);
                if (r >= 0)
                        r = sd_bus_message_peek_type(m, &type, &contents);
                if (r < 0)
                        break;
                if (strcmp(contents, "b") == 0) {
                        int b;
                        r = sd_bus_message_read(m, "v", "b", &b);
                        printf(" %s=%s", key, b ? "true" : "false");
                } else if (strcmp(contents, "t") == 0) {
                        uint64_t t;
                        r = sd_bus_message_read(m, "v", "t", &t);
                        printf(" %s=%" PRIu64, key, t);
                } else if (strcmp(contents, "u") == 0) {
                        uint32_t u;
                        r = sd_bus_message_read(m, "v", "u", &u);
                        printf(" %s=%" PRIu32, key, u);
                } else {
                        r = sd_bus_message_skip(m, "v");
                        printf(" %s=*", key);
                }
                if (r >= 0)
                        r = sd_bus_message_exit_container(m);
        }
        /* Invalidated names count as changed too. */
        if (r >= 0)
                r = sd_bus_message_exit_container(m);
        if (r >= 0)
                r = sd_bus_message_enter_container(m, 'a', "s");
        while (r >= 0) {
                const char *key;
                r = sd_bus_message_read(m, "s", &key);
                if (r <= 0)
                        break;
                printf(" %s=*", key);
        }
        putchar('\n');
        fflush(stdout);
        return 0;
}

static int cmd_watch(sd_bus *bus, const char *obj) {
        int r;

        r = sd_bus_match_signal(bus, NULL, NULL, obj, "org.freedesktop.DBus.Properties",
                                "PropertiesChanged", on_properties_changed, NULL);
        if (r < 0)
                local_error("adding the match: %s", strerror(-r));
        printf("ready\n");
        fflush(stdout);
        for (;;) {
                char buf[64];

                while ((r = sd_bus_process(bus, NULL)) > 0)
                        ;
                if (r < 0)
                        local_error("bus: %s", strerror(-r));
                /* What to wait for is known only once everything queued
                 * was processed. */
                struct pollfd p[2] = {
                        { .fd = sd_bus_get_fd(bus), .events = (short) sd_bus_get_events(bus) },
                        { .fd = STDIN_FILENO, .events = POLLIN },
                };
                if (poll(p, 2, -1) < 0 && errno != EINTR)
                        local_error("poll: %s", strerror(errno));
                if (p[1].revents && read(STDIN_FILENO, buf, sizeof buf) <= 0)
                        return 0;
        }
}

int main(int argc, char **argv) {
        sd_bus *bus = NULL;
        bool ro = false;
        const char *cmd, *arg = NULL;
        int r;

        if (argc < 2)
                local_error("usage: loopd-test-owner-probe COMMAND [ARG] [--ro]");
        cmd = argv[1];
        for (int i = 2; i < argc; i++) {
                if (strcmp(argv[i], "--ro") == 0)
                        ro = true;
                else if (!arg)
                        arg = argv[i];
                else
                        local_error("too many arguments");
        }
        if (strcmp(cmd, "node") == 0 && arg)
                return cmd_node(arg);
        if (strcmp(cmd, "hold") == 0 && arg)
                return cmd_hold(arg, ro);

        r = sd_bus_open_system(&bus);
        if (r < 0)
                local_error("cannot connect to the system bus: %s", strerror(-r));
        if (strcmp(cmd, "open") == 0 && arg)
                r = cmd_open(bus, arg, false, ro);
        else if (strcmp(cmd, "device-open") == 0 && arg)
                r = cmd_open(bus, arg, true, ro);
        else if (strcmp(cmd, "managed") == 0)
                r = cmd_managed(bus);
        else if (strcmp(cmd, "props") == 0 && arg)
                r = cmd_props(bus, arg);
        else if (strcmp(cmd, "watch") == 0 && arg)
                r = cmd_watch(bus, arg);
        else
                local_error("unknown command or missing argument");
        sd_bus_flush_close_unref(bus);
        return r;
}
