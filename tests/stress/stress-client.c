/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopd-stress-client: one of the concurrent clients of test-stress. Runs
 * as whatever uid setpriv gave it and does CYCLES create/inspect/remove
 * cycles on one connection:
 *
 *   Create(fd of FILE, options)      every 2nd cycle bind-to-caller, every
 *                                    3rd read-only
 *   GetAll(Device) on the new object OwnerUID must be our uid, Name must
 *                                    match the returned /dev/loopN
 *   close the device fd, Remove(loopN)
 *
 * A Busy answer to Remove is retried (bounded): the kernel says EBUSY while
 * someone else (the daemon's sync, a racing udev on a real host) has the
 * node open. Anything else is counted by error name, never retried.
 *
 * Output on stdout, line by line so the test's reader never waits long:
 *   progress N
 *   done cycles=N ok=N busy_retries=N <error.Name>=N ...
 * Exit 0 when it ran to the end, 2 on a local failure (usage, no bus).
 * libsystemd only, like loopd-test-caller: it runs under setpriv.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "loopd-protocol.h"


#define MAX_ERROR_KINDS 32
#define REMOVE_TRIES 200

typedef struct ErrorCount {
        char name[128];
        unsigned count;
} ErrorCount;

static ErrorCount errors[MAX_ERROR_KINDS];
static unsigned n_error_kinds, busy_retries;

static void count_error(const sd_bus_error *e, int r) {
        char name[128];

        if (sd_bus_error_is_set(e))
                snprintf(name, sizeof name, "%s", e->name);
        else
                snprintf(name, sizeof name, "local.errno.%s", strerrorname_np(-r) ? strerrorname_np(-r) : "unknown");
        for (unsigned i = 0; i < n_error_kinds; i++)
                if (strcmp(errors[i].name, name) == 0) {
                        errors[i].count++;
                        return; /* said once already */
                }
        if (n_error_kinds < MAX_ERROR_KINDS) {
                snprintf(errors[n_error_kinds].name, sizeof errors[n_error_kinds].name, "%s", name);
                errors[n_error_kinds++].count = 1;
        }
        if (sd_bus_error_is_set(e))
                fprintf(stderr, "loopd-stress-client[%d]: %s: %s\n", (int) getpid(), e->name, e->message);
}

static void sleep_ms(long ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
        (void) nanosleep(&ts, NULL);
}

static int create(sd_bus *bus, int backing, bool bind, bool ro, char **ret_obj, char **ret_dev, int *ret_fd) {
        sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *obj, *dev;
        int fd, r;

        r = sd_bus_message_new_method_call(bus, &m, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Create");
        if (r >= 0)
                r = sd_bus_message_append(m, "ha{sv}", backing, 2, "bind-to-caller", "b", (int) bind, "read-only",
                                          "b", (int) ro);
        if (r < 0) {
                sd_bus_message_unref(m);
                count_error(&e, r);
                return r;
        }
        r = sd_bus_call(bus, m, 0, &e, &reply);
        sd_bus_message_unref(m);
        if (r >= 0)
                r = sd_bus_message_read(reply, "osh", &obj, &dev, &fd);
        if (r < 0) {
                count_error(&e, r);
                sd_bus_error_free(&e);
                sd_bus_message_unref(reply);
                return r;
        }
        *ret_obj = strdup(obj);
        *ret_dev = strdup(dev);
        *ret_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
        sd_bus_message_unref(reply);
        if (!*ret_obj || !*ret_dev || *ret_fd < 0) {
                fprintf(stderr, "loopd-stress-client: out of memory or fds\n");
                exit(2);
        }
        return 0;
}

/* GetAll on the device: the inspect step. Checks what must hold. */
static int inspect(sd_bus *bus, const char *obj, const char *dev, bool ro) {
        sd_bus_message *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        bool owner_ok = false, name_ok = false, ro_ok = false;
        int r;

        r = sd_bus_call_method(bus, LOOPD_BUS_NAME, obj, "org.freedesktop.DBus.Properties", "GetAll", &e, &reply, "s",
                               LOOPD_DEVICE_INTERFACE);
        if (r < 0)
                goto fail;
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        while (r >= 0 && (r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *key;
                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        break;
                if (strcmp(key, "OwnerUID") == 0) {
                        uint32_t u;
                        r = sd_bus_message_read(reply, "v", "u", &u);
                        owner_ok = u == (uint32_t) getuid();
                } else if (strcmp(key, "DevicePath") == 0) {
                        const char *s;
                        r = sd_bus_message_read(reply, "v", "s", &s);
                        name_ok = strcmp(s, dev) == 0;
                } else if (strcmp(key, "ReadOnly") == 0) {
                        int b;
                        r = sd_bus_message_read(reply, "v", "b", &b);
                        ro_ok = !!b == ro;
                } else
                        r = sd_bus_message_skip(reply, "v");
                if (r >= 0)
                        r = sd_bus_message_exit_container(reply);
        }
        if (r >= 0)
                r = sd_bus_message_exit_container(reply);
        if (r < 0)
                goto fail;
        sd_bus_message_unref(reply);
        if (!owner_ok || !name_ok || !ro_ok) {
                sd_bus_error_set(&e, "local.InspectMismatch", "OwnerUID, DevicePath or ReadOnly is wrong");
                count_error(&e, -EBADMSG);
                sd_bus_error_free(&e);
                return -EBADMSG;
        }
        return 0;
fail:
        count_error(&e, r);
        sd_bus_error_free(&e);
        sd_bus_message_unref(reply);
        return r;
}

static int remove_device(sd_bus *bus, const char *dev) {
        for (int tries = 0;; tries++) {
                sd_bus_error e = SD_BUS_ERROR_NULL;
                int r = sd_bus_call_method(bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Remove", &e, NULL, "s", dev);
                if (r >= 0)
                        return 0;
                if (sd_bus_error_has_name(&e, LOOPD_ERROR_BUSY) && tries < REMOVE_TRIES) {
                        busy_retries++;
                        sd_bus_error_free(&e);
                        sleep_ms(5 + rand() % 10);
                        continue;
                }
                count_error(&e, r);
                sd_bus_error_free(&e);
                return r;
        }
}

int main(int argc, char *argv[]) {
        sd_bus *bus = NULL;
        unsigned cycles, done = 0, ok = 0;
        int backing, r;

        if (argc != 3) {
                fprintf(stderr, "usage: loopd-stress-client CYCLES FILE\n");
                return 2;
        }
        cycles = (unsigned) strtoul(argv[1], NULL, 10);
        srand((unsigned) getpid());
        backing = open(argv[2], O_RDWR | O_CLOEXEC);
        if (backing < 0) {
                printf("error local open %s: %s\n", argv[2], strerror(errno));
                return 2;
        }
        r = sd_bus_open_system(&bus);
        if (r < 0) {
                printf("error local bus: %s\n", strerror(-r));
                return 2;
        }

        for (; done < cycles; done++) {
                char *obj = NULL, *dev = NULL;
                bool bind = done % 2 == 1, ro = done % 3 == 2;
                int fd = -1;

                if (done % 10 == 0) {
                        printf("progress %u\n", done);
                        fflush(stdout);
                }
                if (create(bus, backing, bind, ro, &obj, &dev, &fd) < 0)
                        continue;
                r = inspect(bus, obj, dev, ro);
                close(fd);
                if (remove_device(bus, dev) >= 0 && r >= 0)
                        ok++;
                free(obj);
                free(dev);
        }

        printf("done cycles=%u ok=%u busy_retries=%u", done, ok, busy_retries);
        for (unsigned i = 0; i < n_error_kinds; i++)
                printf(" %s=%u", errors[i].name, errors[i].count);
        printf("\n");
        fflush(stdout);
        sd_bus_flush_close_unref(bus);
        close(backing);
        return 0;
}
