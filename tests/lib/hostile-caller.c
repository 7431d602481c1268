/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopd-hostile-caller: a caller of org.loopd.Loop1 that a test drives line
 * by line, to do what a hostile local user would do with what loopd gave it:
 * keep device fds and act on them with the owner's own rights (LOOP_CHANGE_FD,
 * LOOP_CLR_FD, writes), hold many requests in flight at once, or send
 * requests and never read a reply.
 *
 * It runs under `setpriv --reuid --regid` like loopd-test-caller, so it
 * links libsystemd only. Commands on stdin, one per line, words separated by
 * single spaces; each is answered by exactly one line on stdout:
 *
 *   ok [VALUES...]
 *   error NAME MESSAGE        a D-Bus error
 *   error errno NAME MESSAGE  a system call failed (NAME: ENOENT...)
 *
 * Commands (SLOT: the number "create" answered with; OPT: KEY=T:VALUE with
 * T one of t u i x b s, as loopd-test-caller's --opt):
 *
 *   name                          ok UNIQUE-NAME of the current connection
 *   open PATH ro|rw               opens a file and keeps it:  ok N
 *   create PATH ro|rw [OPT...]    opens PATH itself (or takes the file
 *                                 "open" kept as N when PATH is @N),
 *                                 Create:                     ok SLOT OBJ DEV
 *   create-from-path PATH [OPT...]                            ok SLOT OBJ DEV
 *   send-create PATH ro|rw [OPT...]   Create without waiting:  ok ID
 *   send-create-from-path PATH [OPT...]                         ok ID
 *   await ID SEC                  the reply of a send-*: as create, or
 *                                 "error local timeout" after SEC seconds
 *   arrival ID                    ok N USEC: the reply of send-* ID was the
 *                                 Nth of all replies to arrive (0: none yet),
 *                                 when CLOCK_MONOTONIC said USEC
 *   remove DEV | refresh DEV      Manager.Remove / RefreshSize: ok
 *   get OBJ PROPERTY              Device property (basic type): ok VALUE
 *   change-fd SLOT PATH           LOOP_CHANGE_FD on the slot's device fd to
 *                                 PATH opened read-only:        ok
 *   clr-fd SLOT                   LOOP_CLR_FD on it:            ok
 *   write SLOT OFFSET LEN         LEN bytes of 0x5a at OFFSET:  ok
 *   readahead SLOT LEN            readahead() of LEN bytes:     ok
 *   close SLOT                    closes the device fd:         ok
 *   open-node DEV ro|rw           open(DEV) as this uid:        ok / error errno
 *   flood N                       N GetManagedObjects sent, no reply ever
 *                                 read (not even later):        ok
 *   reconnect                     a new connection; the old one stays open
 *                                 (its devices stay bound to it): ok NAME
 *   disconnect                    closes every connection:      ok
 *   sleep SEC                     ok
 *
 * --timeout=SEC (before the commands) bounds every waiting call (default
 * 60 s). EOF on stdin ends it; fds and connections go with the process.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/loop.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "caller-output.h"
#include "loopd-protocol.h"

#define MAX_SLOTS 1024
#define MAX_PENDING 1024
#define MAX_BUSES 256
#define MAX_WORDS 64

static int slots[MAX_SLOTS];
static unsigned n_slots;
static int files[MAX_SLOTS];
static unsigned n_files;

typedef struct Pending {
        sd_bus_slot *slot;
        char *answer;          /* set once answered; the device fd is in a slot then */
        unsigned arrival;      /* 1 for the first reply to arrive, ... */
        uint64_t arrival_usec; /* CLOCK_MONOTONIC */
        bool used;
} Pending;
static Pending pending[MAX_PENDING];
static unsigned n_pending, n_arrived;

static sd_bus *buses[MAX_BUSES]; /* [n_buses - 1] is the current one */
static unsigned n_buses;
static uint64_t timeout_usec = 60ULL * 1000000ULL;

static sd_bus *bus(void) {
        return buses[n_buses - 1];
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        putchar('\n');
        fflush(stdout);
}

static void say_errno(int e, const char *what) {
        say("error errno %s %s: %s", strerrorname_np(e) ? strerrorname_np(e) : "unknown", what, strerror(e));
}

static void say_bus_error(const sd_bus_error *e, int r) {
        if (sd_bus_error_is_set(e))
                print_bus_error(e);
        else
                say_errno(-r, "call");
}

static int connect_bus(void) {
        sd_bus *b = NULL;
        int r;

        if (n_buses >= MAX_BUSES)
                return -EMFILE;
        r = sd_bus_open_system(&b);
        if (r < 0)
                return r;
        buses[n_buses++] = b;
        return 0;
}

static int append_opts(sd_bus_message *m, char **words, int n) {
        int r = sd_bus_message_open_container(m, 'a', "{sv}");

        for (int i = 0; r >= 0 && i < n; i++) {
                char *eq = strchr(words[i], '=');
                char type, sig[2] = { 0 };
                const char *v;

                if (!eq || !eq[1] || eq[2] != ':')
                        return -EINVAL;
                *eq = 0;
                type = eq[1];
                v = eq + 3;
                sig[0] = type;
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append_basic(m, 's', words[i]);
                if (r >= 0)
                        r = sd_bus_message_open_container(m, 'v', sig);
                if (r < 0)
                        return r;
                switch (type) {
                case 't': { uint64_t x = strtoull(v, NULL, 0); r = sd_bus_message_append_basic(m, 't', &x); break; }
                case 'u': { uint32_t x = (uint32_t) strtoul(v, NULL, 0); r = sd_bus_message_append_basic(m, 'u', &x); break; }
                case 'i': { int32_t x = (int32_t) strtol(v, NULL, 0); r = sd_bus_message_append_basic(m, 'i', &x); break; }
                case 'x': { int64_t x = strtoll(v, NULL, 0); r = sd_bus_message_append_basic(m, 'x', &x); break; }
                case 'b': { int x = strcmp(v, "true") == 0 || strcmp(v, "1") == 0; r = sd_bus_message_append_basic(m, 'b', &x); break; }
                case 's': r = sd_bus_message_append_basic(m, 's', v); break;
                default: return -EINVAL;
                }
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
        }
        if (r >= 0)
                r = sd_bus_message_close_container(m);
        return r;
}

/* Builds Create (with PATH opened by us) or CreateFromPath. */
static int build_create(sd_bus_message **ret, bool from_path, char **words, int n) {
        sd_bus_message *m = NULL;
        int r, first_opt;

        if (n < (from_path ? 1 : 2))
                return -EINVAL;
        r = sd_bus_message_new_method_call(bus(), &m, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                           from_path ? "CreateFromPath" : "Create");
        if (r < 0)
                return r;
        if (from_path) {
                r = sd_bus_message_append_basic(m, 's', words[0]);
                first_opt = 1;
        } else {
                int fd;
                if (words[0][0] == '@') {
                        unsigned k = (unsigned) strtoul(words[0] + 1, NULL, 10);
                        fd = k < n_files ? fcntl(files[k], F_DUPFD_CLOEXEC, 3) : (errno = EBADF, -1);
                } else
                        fd = open(words[0], (strcmp(words[1], "ro") == 0 ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
                if (fd < 0) {
                        r = -errno;
                        sd_bus_message_unref(m);
                        return r;
                }
                r = sd_bus_message_append_basic(m, 'h', &fd);
                close(fd); /* the message holds a copy */
                first_opt = 2;
        }
        if (r >= 0)
                r = append_opts(m, words + first_opt, n - first_opt);
        if (r < 0) {
                sd_bus_message_unref(m);
                return r;
        }
        *ret = m;
        return 0;
}

/* "ok SLOT OBJ DEV" from a Create reply, keeping the device fd in a slot;
 * or the error. Returned, not printed (free it). */
static char *create_answer(sd_bus_message *reply) {
        const sd_bus_error *e = sd_bus_message_get_error(reply);
        const char *obj, *dev;
        char *answer = NULL;
        int fd, r;

        if (e) {
                if (asprintf(&answer, "error %s %s", e->name, e->message ? e->message : "") < 0)
                        return NULL;
                for (char *c = answer; *c; c++)
                        if (*c == '\n')
                                *c = ' ';
                return answer;
        }
        r = sd_bus_message_read(reply, "osh", &obj, &dev, &fd);
        if (r < 0)
                r = asprintf(&answer, "error errno %s reading the reply", strerrorname_np(-r));
        else if (n_slots >= MAX_SLOTS)
                r = asprintf(&answer, "error errno EMFILE slots");
        else if ((slots[n_slots] = fcntl(fd, F_DUPFD_CLOEXEC, 3)) < 0)
                r = asprintf(&answer, "error errno %s dup", strerrorname_np(errno));
        else {
                r = asprintf(&answer, "ok %u %s %s", n_slots, obj, dev);
                n_slots++;
        }
        return r < 0 ? NULL : answer;
}

static void take_create_reply(sd_bus_message *reply) {
        char *a = create_answer(reply);
        say("%s", a ? a : "error errno ENOMEM");
        free(a);
}

static void cmd_create(bool from_path, char **words, int n) {
        sd_bus_message *m = NULL, *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        r = build_create(&m, from_path, words, n);
        if (r < 0) {
                say_errno(-r, "building the call");
                return;
        }
        r = sd_bus_call(bus(), m, timeout_usec, &e, &reply);
        sd_bus_message_unref(m);
        if (r < 0) {
                say_bus_error(&e, r);
                sd_bus_error_free(&e);
                return;
        }
        take_create_reply(reply);
        sd_bus_message_unref(reply);
}

static uint64_t now_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000ULL + (uint64_t) ts.tv_nsec / 1000;
}

static int on_async_reply(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Pending *p = userdata;

        /* The answer now, and the message (with its copy of the device
         * fd) dropped: a device must live no longer than its slot. */
        p->answer = create_answer(m);
        if (!p->answer)
                p->answer = strdup("error errno ENOMEM");
        p->arrival = ++n_arrived;
        p->arrival_usec = now_usec();
        p->slot = sd_bus_slot_unref(p->slot);
        return 0;
}

static void cmd_send_create(bool from_path, char **words, int n) {
        sd_bus_message *m = NULL;
        Pending *p;
        int r;

        if (n_pending >= MAX_PENDING) {
                say_errno(EMFILE, "pending calls");
                return;
        }
        r = build_create(&m, from_path, words, n);
        if (r < 0) {
                say_errno(-r, "building the call");
                return;
        }
        p = &pending[n_pending];
        *p = (Pending) { .used = true };
        /* Longer than any test waits: "await" times out, not the call. */
        r = sd_bus_call_async(bus(), &p->slot, m, on_async_reply, p, 600ULL * 1000000ULL);
        sd_bus_message_unref(m);
        if (r < 0) {
                say_errno(-r, "sending");
                return;
        }
        /* Out to the bus now: a new connection queues everything until
         * its Hello is answered, which only processing it reads. */
        r = sd_bus_flush(bus());
        if (r < 0) {
                say_errno(-r, "flushing");
                return;
        }
        say("ok %u", n_pending++);
}


static void cmd_await(unsigned id, double sec) {
        uint64_t deadline = now_usec() + (uint64_t) (sec * 1e6);
        Pending *p;

        if (id >= n_pending) {
                say_errno(EINVAL, "no such call");
                return;
        }
        p = &pending[id];
        while (!p->answer) {
                uint64_t now = now_usec();
                int r;

                if (now >= deadline) {
                        say("error local timeout");
                        return;
                }
                /* Every connection: a reply may come on any of them. */
                for (unsigned b = 0; b < n_buses; b++)
                        while ((r = sd_bus_process(buses[b], NULL)) > 0)
                                ;
                if (p->answer)
                        break;
                r = sd_bus_wait(bus(), deadline - now < 50000 ? deadline - now : 50000);
                if (r < 0 && r != -EINTR) {
                        say_errno(-r, "waiting");
                        return;
                }
        }
        say("%s", p->answer);
}

static void cmd_simple(const char *method, const char *dev) {
        sd_bus_message *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        int r;

        r = sd_bus_call_method(bus(), LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, method, &e, &reply,
                               "s", dev);
        if (r < 0)
                say_bus_error(&e, r);
        else
                say("ok");
        sd_bus_error_free(&e);
        sd_bus_message_unref(reply);
}

static void cmd_get(const char *obj, const char *prop) {
        sd_bus_message *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *contents;
        char type;
        int r;

        r = sd_bus_call_method(bus(), LOOPD_BUS_NAME, obj, "org.freedesktop.DBus.Properties", "Get", &e, &reply, "ss",
                               LOOPD_DEVICE_INTERFACE, prop);
        if (r < 0) {
                say_bus_error(&e, r);
                sd_bus_error_free(&e);
                return;
        }
        r = sd_bus_message_peek_type(reply, &type, &contents);
        if (r >= 0)
                r = sd_bus_message_enter_container(reply, 'v', contents);
        if (r >= 0) {
                union { int b; uint32_t u; uint64_t t; int32_t i; int64_t x; const char *s; } v;
                r = sd_bus_message_read_basic(reply, contents[0], &v);
                if (r >= 0)
                        switch (contents[0]) {
                        case 'b': say("ok %s", v.b ? "true" : "false"); break;
                        case 'u': say("ok %" PRIu32, v.u); break;
                        case 't': say("ok %" PRIu64, v.t); break;
                        case 'i': say("ok %" PRIi32, v.i); break;
                        case 'x': say("ok %" PRIi64, v.x); break;
                        case 's': case 'o': say("ok %s", v.s); break;
                        default: say_errno(ENOTSUP, "property type");
                        }
        }
        if (r < 0)
                say_errno(-r, "reading the property");
        sd_bus_message_unref(reply);
}

static int slot_fd(const char *s) {
        unsigned i = (unsigned) strtoul(s, NULL, 10);
        return i < n_slots ? slots[i] : -1;
}

static void cmd_flood(unsigned n) {
        for (unsigned i = 0; i < n; i++) {
                sd_bus_message *m = NULL;
                int r = sd_bus_message_new_method_call(bus(), &m, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                                       "org.freedesktop.DBus.ObjectManager", "GetManagedObjects");
                if (r >= 0)
                        r = sd_bus_send(bus(), m, NULL); /* a reply is expected, and never read */
                sd_bus_message_unref(m);
                if (r < 0) {
                        say_errno(-r, "sending");
                        return;
                }
        }
        /* Out of our own queue into the socket (blocks while the bus is
         * slow to take them); nothing is ever read. */
        (void) sd_bus_flush(bus());
        say("ok");
}

static void dispatch(char **w, int n) {
        const char *c = w[0];

        if (strcmp(c, "name") == 0) {
                const char *name = NULL;
                int r = sd_bus_get_unique_name(bus(), &name);
                if (r < 0)
                        say_errno(-r, "unique name");
                else
                        say("ok %s", name);
        } else if (strcmp(c, "open") == 0 && n == 3) {
                int fd = open(w[1], (strcmp(w[2], "rw") == 0 ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY);
                if (fd < 0)
                        say_errno(errno, "open");
                else if (n_files >= MAX_SLOTS)
                        say_errno(EMFILE, "files");
                else {
                        files[n_files] = fd;
                        say("ok %u", n_files++);
                }
        } else if (strcmp(c, "create") == 0)
                cmd_create(false, w + 1, n - 1);
        else if (strcmp(c, "create-from-path") == 0)
                cmd_create(true, w + 1, n - 1);
        else if (strcmp(c, "send-create") == 0)
                cmd_send_create(false, w + 1, n - 1);
        else if (strcmp(c, "send-create-from-path") == 0)
                cmd_send_create(true, w + 1, n - 1);
        else if (strcmp(c, "await") == 0 && n == 3)
                cmd_await((unsigned) strtoul(w[1], NULL, 10), strtod(w[2], NULL));
        else if (strcmp(c, "arrival") == 0 && n == 2) {
                unsigned id = (unsigned) strtoul(w[1], NULL, 10);
                if (id >= n_pending)
                        say_errno(EINVAL, "no such call");
                else
                        say("ok %u %" PRIu64, pending[id].arrival, pending[id].arrival_usec);
        } else if (strcmp(c, "remove") == 0 && n == 2)
                cmd_simple("Remove", w[1]);
        else if (strcmp(c, "refresh") == 0 && n == 2)
                cmd_simple("RefreshSize", w[1]);
        else if (strcmp(c, "get") == 0 && n == 3)
                cmd_get(w[1], w[2]);
        else if (strcmp(c, "change-fd") == 0 && n == 3) {
                int dev = slot_fd(w[1]), fd = open(w[2], O_RDONLY | O_CLOEXEC | O_NOCTTY);
                if (fd < 0)
                        say_errno(errno, "open");
                else if (ioctl(dev, LOOP_CHANGE_FD, fd) < 0)
                        say_errno(errno, "LOOP_CHANGE_FD");
                else
                        say("ok");
                if (fd >= 0)
                        close(fd);
        } else if (strcmp(c, "clr-fd") == 0 && n == 2) {
                if (ioctl(slot_fd(w[1]), LOOP_CLR_FD, 0) < 0)
                        say_errno(errno, "LOOP_CLR_FD");
                else
                        say("ok");
        } else if (strcmp(c, "write") == 0 && n == 4) {
                size_t len = strtoull(w[3], NULL, 0);
                char *buf = malloc(len ? len : 1);
                ssize_t k;
                if (!buf) {
                        say_errno(ENOMEM, "malloc");
                        return;
                }
                memset(buf, 0x5a, len);
                k = pwrite(slot_fd(w[1]), buf, len, (off_t) strtoull(w[2], NULL, 0));
                free(buf);
                if (k < 0)
                        say_errno(errno, "pwrite");
                else
                        say("ok %zd", k);
        } else if (strcmp(c, "readahead") == 0 && n == 3) {
                if (readahead(slot_fd(w[1]), 0, strtoull(w[2], NULL, 0)) < 0)
                        say_errno(errno, "readahead");
                else
                        say("ok");
        } else if (strcmp(c, "close") == 0 && n == 2) {
                unsigned i = (unsigned) strtoul(w[1], NULL, 10);
                if (i >= n_slots || slots[i] < 0)
                        say_errno(EBADF, "close");
                else {
                        close(slots[i]);
                        slots[i] = -1;
                        say("ok");
                }
        } else if (strcmp(c, "open-node") == 0 && n == 3) {
                int fd = open(w[1], (strcmp(w[2], "rw") == 0 ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY);
                if (fd < 0)
                        say_errno(errno, "open");
                else {
                        close(fd);
                        say("ok");
                }
        } else if (strcmp(c, "flood") == 0 && n == 2)
                cmd_flood((unsigned) strtoul(w[1], NULL, 10));
        else if (strcmp(c, "reconnect") == 0) {
                int r = connect_bus();
                const char *name = NULL;
                if (r >= 0)
                        r = sd_bus_get_unique_name(bus(), &name);
                if (r < 0)
                        say_errno(-r, "connecting");
                else
                        say("ok %s", name);
        } else if (strcmp(c, "disconnect") == 0) {
                while (n_buses > 1)
                        sd_bus_close_unref(buses[--n_buses]);
                sd_bus_close(bus());
                say("ok");
        } else if (strcmp(c, "sleep") == 0 && n == 2) {
                usleep((useconds_t) (strtod(w[1], NULL) * 1e6));
                say("ok");
        } else
                say("error local unknown command '%s' or wrong arguments", c);
}

int main(int argc, char **argv) {
        char *line = NULL;
        size_t size = 0;
        int r;

        for (int i = 1; i < argc; i++)
                if (strncmp(argv[i], "--timeout=", 10) == 0)
                        timeout_usec = (uint64_t) (strtod(argv[i] + 10, NULL) * 1e6);
        r = connect_bus();
        if (r < 0) {
                say("error local cannot connect to the system bus: %s", strerror(-r));
                return 2;
        }
        say("ready");
        while (getline(&line, &size, stdin) > 0) {
                char *w[MAX_WORDS], *save = NULL;
                int n = 0;

                line[strcspn(line, "\n")] = 0;
                for (char *t = strtok_r(line, " ", &save); t && n < MAX_WORDS; t = strtok_r(NULL, " ", &save))
                        w[n++] = t;
                if (n > 0)
                        dispatch(w, n);
        }
        free(line);
        return 0;
}
