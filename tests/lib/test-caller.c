/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopd-test-caller: one call to org.loopd.Loop1 from whatever uid runs it.
 *
 * Tests run it through `setpriv --reuid=U --regid=G` to be a real
 * unprivileged caller, so it links libsystemd only: GLib would drag in
 * caches and environment handling that have no business in a setuid'ed
 * test client. It opens the backing file itself, so the fd it passes
 * carries exactly the rights of its uid, as a real caller's would.
 *
 * Output, one line on stdout, then the exit status:
 *   ok [<values>...]                              0
 *   error <dbus-error-name> <message>             1
 *   error local <message>                         2 (usage, open(), no bus)
 *
 * With --hold the process keeps the returned device fd and its bus
 * connection open after printing, until its stdin reaches EOF; a test ends
 * the hold by closing the pipe or kills the process to play a crashed
 * caller (autoclear, bind-to-caller).
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "caller-output.h"
#include "loopd-protocol.h"



#define MAX_OPTS 64

typedef struct Opt {
        const char *key;
        char type; /* D-Bus basic type code */
        const char *value;
} Opt;

typedef struct Args {
        const char *command;
        const char *target;   /* FILE, PATH, DEV or OBJPATH */
        const char *property; /* get */
        const char *interface;
        Opt opts[MAX_OPTS];
        size_t n_opts;
        bool ro_open;
        bool hold;
        bool interactive;
        bool fd_info;
        uint64_t timeout_usec; /* 0: sd-bus default (25 s) */
} Args;

static void bus_unrefp(sd_bus **b) {
        sd_bus_flush_close_unref(*b);
}
static void message_unrefp(sd_bus_message **m) {
        sd_bus_message_unref(*m);
}
static void closep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}
#define _cleanup_(f) __attribute__((cleanup(f)))

__attribute__((noreturn)) static void usage(const char *why) {
        fprintf(stderr,
                "loopd-test-caller: %s\n"
                "usage: loopd-test-caller [--interactive|--no-interactive] [--timeout=SEC] COMMAND ...\n"
                "  create FILE|fd:N [--ro-open] [--opt KEY=T:VALUE]... [--hold] [--fd-info]\n"
                "  create-from-path PATH [--opt KEY=T:VALUE]... [--hold] [--fd-info]\n"
                "  open PATH\n"
                "  remove DEV\n"
                "  refresh-size DEV\n"
                "  device-remove OBJPATH\n"
                "  device-refresh-size OBJPATH\n"
                "  get OBJPATH PROPERTY [--interface=IFACE]\n"
                "  connect [--hold]            prints the caller's unique bus name\n"
                "T is one of t u i x b s d (uint64 uint32 int32 int64 bool string double).\n",
                why);
        printf("error local usage: %s\n", why);
        exit(EXIT_LOCAL_ERROR);
}

static void parse_opt(Args *a, char *spec) {
        /* KEY=T:VALUE; the value may itself contain ':' or '='. The key is
         * cut in place (argv is ours), so nothing is allocated that a
         * sanitizer build would report as leaked. */
        char *eq = strchr(spec, '=');
        if (!eq || eq == spec || !eq[1] || eq[2] != ':')
                usage("--opt wants KEY=T:VALUE");
        if (!strchr("tuixbsd", eq[1]))
                usage("--opt type must be one of t u i x b s d");
        if (a->n_opts >= MAX_OPTS)
                usage("too many --opt");

        a->opts[a->n_opts++] = (Opt) {
                .key = spec,
                .type = eq[1],
                .value = eq + 3,
        };
        *eq = '\0';
}

static void parse_args(Args *a, int argc, char **argv) {
        const char *positional[3] = { 0 };
        size_t n_positional = 0;

        for (int i = 1; i < argc; i++) {
                char *s = argv[i];

                if (strcmp(s, "--ro-open") == 0)
                        a->ro_open = true;
                else if (strcmp(s, "--hold") == 0)
                        a->hold = true;
                else if (strcmp(s, "--interactive") == 0)
                        a->interactive = true;
                else if (strcmp(s, "--no-interactive") == 0)
                        a->interactive = false;
                else if (strcmp(s, "--fd-info") == 0)
                        a->fd_info = true;
                else if (strcmp(s, "--opt") == 0) {
                        if (++i >= argc)
                                usage("--opt needs an argument");
                        parse_opt(a, argv[i]);
                } else if (strncmp(s, "--opt=", 6) == 0)
                        parse_opt(a, s + 6);
                else if (strncmp(s, "--interface=", 12) == 0)
                        a->interface = s + 12;
                else if (strncmp(s, "--timeout=", 10) == 0) {
                        char *end;
                        double sec = strtod(s + 10, &end);
                        if (*end || sec <= 0)
                                usage("--timeout wants a positive number of seconds");
                        a->timeout_usec = (uint64_t) (sec * 1e6);
                } else if (strcmp(s, "--") == 0) {
                        for (i++; i < argc; i++) {
                                if (n_positional >= 3)
                                        usage("too many arguments");
                                positional[n_positional++] = argv[i];
                        }
                } else if (s[0] == '-' && s[1] == '-')
                        usage("unknown option");
                else {
                        if (n_positional >= 3)
                                usage("too many arguments");
                        positional[n_positional++] = s;
                }
        }

        if (n_positional < 1)
                usage("no command");
        a->command = positional[0];
        a->target = positional[1];
        a->property = positional[2];
}

static int append_options(sd_bus_message *m, const Args *a) {
        int r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;

        for (size_t i = 0; i < a->n_opts; i++) {
                const Opt *o = &a->opts[i];
                const char sig[2] = { o->type, 0 };
                char *end = NULL;

                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r < 0)
                        return r;
                r = sd_bus_message_append_basic(m, 's', o->key);
                if (r < 0)
                        return r;
                r = sd_bus_message_open_container(m, 'v', sig);
                if (r < 0)
                        return r;

                errno = 0;
                switch (o->type) {
                case 't': {
                        uint64_t v = strtoull(o->value, &end, 0);
                        r = sd_bus_message_append_basic(m, 't', &v);
                        break;
                }
                case 'u': {
                        unsigned long long v = strtoull(o->value, &end, 0);
                        uint32_t v32 = (uint32_t) v;
                        if (v > UINT32_MAX)
                                errno = ERANGE;
                        r = sd_bus_message_append_basic(m, 'u', &v32);
                        break;
                }
                case 'i': {
                        int32_t v = (int32_t) strtol(o->value, &end, 0);
                        r = sd_bus_message_append_basic(m, 'i', &v);
                        break;
                }
                case 'x': {
                        int64_t v = strtoll(o->value, &end, 0);
                        r = sd_bus_message_append_basic(m, 'x', &v);
                        break;
                }
                case 'd': {
                        double v = strtod(o->value, &end);
                        r = sd_bus_message_append_basic(m, 'd', &v);
                        break;
                }
                case 'b': {
                        int v;
                        if (strcmp(o->value, "true") == 0 || strcmp(o->value, "1") == 0)
                                v = 1;
                        else if (strcmp(o->value, "false") == 0 || strcmp(o->value, "0") == 0)
                                v = 0;
                        else
                                usage("a b: value is true, false, 1 or 0");
                        r = sd_bus_message_append_basic(m, 'b', &v);
                        break;
                }
                case 's':
                        r = sd_bus_message_append_basic(m, 's', o->value);
                        break;
                }
                if (end && (*end || end == o->value || errno != 0))
                        usage("--opt value does not parse as its type");
                if (r < 0)
                        return r;

                r = sd_bus_message_close_container(m); /* v */
                if (r < 0)
                        return r;
                r = sd_bus_message_close_container(m); /* e */
                if (r < 0)
                        return r;
        }

        return sd_bus_message_close_container(m);
}

static int new_call(sd_bus *bus, sd_bus_message **ret, const Args *a,
                    const char *path, const char *iface, const char *member) {
        int r = sd_bus_message_new_method_call(bus, ret, LOOPD_BUS_NAME, path, iface, member);
        if (r < 0)
                return r;
        return sd_bus_message_set_allow_interactive_authorization(*ret, a->interactive);
}

/* Keeps whatever the caller must keep alive until stdin says stop. */
static void hold_until_eof(void) {
        char buf[256];

        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
                if (n == 0)
                        return;
                if (n < 0 && errno != EINTR)
                        return;
        }
}

static void print_fd_info(int fd) {
        struct stat st;
        int fl = fcntl(fd, F_GETFL);

        if (fstat(fd, &st) < 0 || fl < 0)
                local_error("returned fd: %s", strerror(errno));
        printf("fd %u:%u %s %s\n",
               major(st.st_rdev), minor(st.st_rdev),
               S_ISBLK(st.st_mode) ? "block" : "not-block",
               (fl & O_ACCMODE) == O_RDONLY ? "ro" : (fl & O_ACCMODE) == O_RDWR ? "rw" : "wo");
}

static int do_create(sd_bus *bus, const Args *a, bool from_path) {
        _cleanup_(message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        _cleanup_(closep) int backing = -1, device = -1;
        const char *obj, *devpath;
        int devfd, r;

        if (!a->target)
                usage(from_path ? "create-from-path needs PATH" : "create needs FILE");

        r = new_call(bus, &m, a, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                     from_path ? "CreateFromPath" : "Create");
        if (r < 0)
                local_error("building the call: %s", strerror(-r));

        if (from_path)
                r = sd_bus_message_append_basic(m, 's', a->target);
        else {
                if (strncmp(a->target, "fd:", 3) == 0) {
                        /* An fd the test opened for us (a pipe, O_PATH, ...). */
                        backing = fcntl(atoi(a->target + 3), F_DUPFD_CLOEXEC, 3);
                        if (backing < 0)
                                local_error("fd %s: %s", a->target + 3, strerror(errno));
                } else {
                        backing = open(a->target, (a->ro_open ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
                        if (backing < 0)
                                local_error("open %s: %s", a->target, strerror(errno));
                }
                r = sd_bus_message_append_basic(m, 'h', &backing);
        }
        if (r < 0)
                local_error("building the call: %s", strerror(-r));
        r = append_options(m, a);
        if (r < 0)
                local_error("building the options: %s", strerror(-r));

        r = sd_bus_call(bus, m, a->timeout_usec, &e, &reply);
        if (r < 0)
                call_failed(&e, r);

        r = sd_bus_message_read(reply, "osh", &obj, &devpath, &devfd);
        if (r < 0)
                local_error("reply: %s", strerror(-r));
        /* The message owns devfd; keep our own copy for --hold. */
        device = fcntl(devfd, F_DUPFD_CLOEXEC, 3);
        if (device < 0)
                local_error("dup of the device fd: %s", strerror(errno));

        printf("ok %s %s\n", obj, devpath);
        if (a->fd_info)
                print_fd_info(device);
        fflush(stdout);

        /* Holding the backing fd too would keep nothing alive that the
         * kernel does not already hold; drop it so only the device fd and
         * the connection remain, as with a real caller. */
        if (backing >= 0) {
                close(backing);
                backing = -1;
        }
        reply = sd_bus_message_unref(reply);

        if (a->hold)
                hold_until_eof();
        return 0;
}

static int do_simple(sd_bus *bus, const Args *a, const char *path, const char *iface,
                     const char *member, const char *arg, const char *ret_sig) {
        _cleanup_(message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        r = new_call(bus, &m, a, path, iface, member);
        if (r >= 0 && arg)
                r = sd_bus_message_append_basic(m, 's', arg);
        if (r < 0)
                local_error("building the call: %s", strerror(-r));

        r = sd_bus_call(bus, m, a->timeout_usec, &e, &reply);
        if (r < 0)
                call_failed(&e, r);

        if (ret_sig) {
                const char *s;
                r = sd_bus_message_read_basic(reply, ret_sig[0], &s);
                if (r < 0)
                        local_error("reply: %s", strerror(-r));
                printf("ok %s\n", s);
        } else
                printf("ok\n");
        fflush(stdout);
        return 0;
}

static int print_variant(sd_bus_message *reply) {
        const char *contents;
        char type;
        int r;

        r = sd_bus_message_peek_type(reply, &type, &contents);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'v', contents);
        if (r < 0)
                return r;

        union {
                uint8_t y;
                int b;
                int16_t n;
                uint16_t q;
                int32_t i;
                uint32_t u;
                int64_t x;
                uint64_t t;
                double d;
                const char *s;
        } v;

        if (!contents[0] || contents[1])
                local_error("property of non-basic type %s", contents);
        r = sd_bus_message_read_basic(reply, contents[0], &v);
        if (r < 0)
                return r;

        switch (contents[0]) {
        case 'y': printf("ok %u\n", v.y); break;
        case 'b': printf("ok %s\n", v.b ? "true" : "false"); break;
        case 'n': printf("ok %d\n", v.n); break;
        case 'q': printf("ok %u\n", v.q); break;
        case 'i': printf("ok %" PRIi32 "\n", v.i); break;
        case 'u': printf("ok %" PRIu32 "\n", v.u); break;
        case 'x': printf("ok %" PRIi64 "\n", v.x); break;
        case 't': printf("ok %" PRIu64 "\n", v.t); break;
        case 'd': printf("ok %g\n", v.d); break;
        case 's': case 'o': case 'g': printf("ok %s\n", v.s); break;
        default: local_error("property of type %s", contents);
        }
        fflush(stdout);
        return sd_bus_message_exit_container(reply);
}

static int do_get(sd_bus *bus, const Args *a) {
        _cleanup_(message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *iface = a->interface;
        int r;

        if (!a->target || !a->property)
                usage("get needs OBJPATH PROPERTY");
        if (!iface)
                iface = strcmp(a->target, LOOPD_MANAGER_PATH) == 0 ? LOOPD_MANAGER_INTERFACE : LOOPD_DEVICE_INTERFACE;

        r = new_call(bus, &m, a, a->target, "org.freedesktop.DBus.Properties", "Get");
        if (r >= 0)
                r = sd_bus_message_append(m, "ss", iface, a->property);
        if (r < 0)
                local_error("building the call: %s", strerror(-r));

        r = sd_bus_call(bus, m, a->timeout_usec, &e, &reply);
        if (r < 0)
                call_failed(&e, r);

        r = print_variant(reply);
        if (r < 0)
                local_error("reply: %s", strerror(-r));
        return 0;
}

int main(int argc, char **argv) {
        _cleanup_(bus_unrefp) sd_bus *bus = NULL;
        Args a = { 0 };
        int r;

        parse_args(&a, argc, argv);

        r = sd_bus_open_system(&bus);
        if (r < 0)
                local_error("cannot connect to the system bus: %s", strerror(-r));

        if (strcmp(a.command, "create") == 0)
                return do_create(bus, &a, false);
        if (strcmp(a.command, "create-from-path") == 0)
                return do_create(bus, &a, true);
        if (strcmp(a.command, "open") == 0) {
                if (!a.target)
                        usage("open needs PATH");
                return do_simple(bus, &a, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "GetDevice", a.target, "o");
        }
        if (strcmp(a.command, "remove") == 0 || strcmp(a.command, "refresh-size") == 0) {
                if (!a.target)
                        usage("remove/refresh-size need DEV");
                return do_simple(bus, &a, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                 strcmp(a.command, "remove") == 0 ? "Remove" : "RefreshSize",
                                 a.target, NULL);
        }
        if (strcmp(a.command, "device-remove") == 0 || strcmp(a.command, "device-refresh-size") == 0) {
                if (!a.target)
                        usage("device-remove/device-refresh-size need OBJPATH");
                return do_simple(bus, &a, a.target, LOOPD_DEVICE_INTERFACE,
                                 strcmp(a.command, "device-remove") == 0 ? "Remove" : "RefreshSize",
                                 NULL, NULL);
        }
        if (strcmp(a.command, "get") == 0)
                return do_get(bus, &a);
        if (strcmp(a.command, "connect") == 0) {
                const char *name;
                r = sd_bus_get_unique_name(bus, &name);
                if (r < 0)
                        local_error("unique name: %s", strerror(-r));
                printf("ok %s\n", name);
                fflush(stdout);
                if (a.hold)
                        hold_until_eof();
                return 0;
        }

        usage("unknown command");
}
