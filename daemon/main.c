/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * loopd: loop devices for callers on the D-Bus system bus.
 * main() owns the Context: it parses options, builds the pieces in order,
 * runs sd-event (the daemon's only loop) and tears everything down.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "bus-manager.h"
#include "errors.h"

/* Parsed command-line options: the only globals. */
static unsigned arg_quota = 64;
static uint64_t arg_idle_timeout_usec = 60ULL * 1000000ULL;
static uint64_t arg_polkit_timeout_usec = 25ULL * 1000000ULL;
static uint64_t arg_path_open_timeout_usec = 10ULL * 1000000ULL;
static unsigned arg_min_spare = 2, arg_max_spare = 8;
static const char *arg_state_dir = NULL;

static void help(void) {
        printf("Usage: loopd [OPTIONS]\n\n"
               "Serves loop devices on the D-Bus system bus as " LOOPD_BUS_NAME ".\n\n"
               "  -h --help               Show this help\n"
               "     --version            Show the version\n"
               "     --state-dir=DIR      Where owner records live (default: $RUNTIME_DIRECTORY, else /run/loopd)\n"
               "     --quota=N            Devices one non-root uid may have attached (default 64)\n"
               "     --idle-timeout=SEC   Exit after SEC idle seconds when no device is bound to a live\n"
               "                          caller; 0 never exits (default 60)\n"
               "     --polkit-timeout=SEC How long to wait for polkit's answer (default 25)\n"
               "     --open-timeout=SEC   How long CreateFromPath may take to open a file (default 10)\n"
               "     --spare-nodes=MIN:MAX Free loop nodes to keep ready (default 2:8)\n");
}

static int parse_uint(const char *s, unsigned long long max, unsigned long long *ret) {
        char *end;
        unsigned long long v;

        if (!s || !*s || *s == '-')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (errno || *end || v > max)
                return -EINVAL;
        *ret = v;
        return 0;
}

static int parse_argv(int argc, char *argv[]) {
        enum { ARG_VERSION = 0x100, ARG_STATE_DIR, ARG_QUOTA, ARG_IDLE, ARG_POLKIT, ARG_OPEN, ARG_SPARE };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                { "quota", required_argument, NULL, ARG_QUOTA },
                { "idle-timeout", required_argument, NULL, ARG_IDLE },
                { "polkit-timeout", required_argument, NULL, ARG_POLKIT },
                { "open-timeout", required_argument, NULL, ARG_OPEN },
                { "spare-nodes", required_argument, NULL, ARG_SPARE },
                { 0 }
        };
        unsigned long long v, w;
        int c;

        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        help();
                        return 0;
                case ARG_VERSION:
                        printf("loopd " LOOPD_VERSION "\n");
                        return 0;
                case ARG_STATE_DIR:
                        if (optarg[0] != '/') {
                                fprintf(stderr, "loopd: --state-dir needs an absolute path.\n");
                                return -EINVAL;
                        }
                        arg_state_dir = optarg;
                        break;
                case ARG_QUOTA:
                        if (parse_uint(optarg, 1000000, &v) < 0) {
                                fprintf(stderr, "loopd: --quota takes a number of devices.\n");
                                return -EINVAL;
                        }
                        arg_quota = (unsigned) v;
                        break;
                case ARG_IDLE:
                case ARG_POLKIT:
                case ARG_OPEN:
                        if (parse_uint(optarg, 86400 * 365, &v) < 0) {
                                fprintf(stderr, "loopd: %s takes whole seconds.\n", argv[optind - 1]);
                                return -EINVAL;
                        }
                        if (c == ARG_IDLE)
                                arg_idle_timeout_usec = v * 1000000ULL;
                        else if (c == ARG_POLKIT)
                                arg_polkit_timeout_usec = v * 1000000ULL;
                        else
                                arg_path_open_timeout_usec = v * 1000000ULL;
                        break;
                case ARG_SPARE: {
                        _cleanup_(freep) char *a = strdup(optarg);
                        char *colon = a ? strchr(a, ':') : NULL;
                        if (!colon) {
                                fprintf(stderr, "loopd: --spare-nodes takes MIN:MAX.\n");
                                return -EINVAL;
                        }
                        *colon = 0;
                        if (parse_uint(a, 256, &v) < 0 || parse_uint(colon + 1, 256, &w) < 0 || w < v) {
                                fprintf(stderr, "loopd: --spare-nodes takes MIN:MAX with MIN <= MAX <= 256.\n");
                                return -EINVAL;
                        }
                        arg_min_spare = (unsigned) v;
                        arg_max_spare = (unsigned) w;
                        break;
                }
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "loopd: takes no arguments.\n");
                return -EINVAL;
        }
        return 1;
}

/* ---- idle exit ------------------------------------------------------------ */

static bool context_busy(Context *c) {
        return c->n_operations > 0 || devices_count_bound(c->devices) > 0;
}

static void idle_rearm(Context *c) {
        uint64_t now;

        if (!c->idle_timer || c->exiting)
                return;
        if (sd_event_now(c->event, CLOCK_MONOTONIC, &now) < 0)
                return;
        (void) sd_event_source_set_time(c->idle_timer, now + c->idle_timeout_usec);
        (void) sd_event_source_set_enabled(c->idle_timer, SD_EVENT_ONESHOT);
}

static int on_drain(sd_event_source *s, uint64_t usec, void *userdata) {
        Context *c = userdata;

        /* Requests that reached us before the name went are answered first. */
        if (c->n_operations > 0) {
                (void) sd_event_source_set_time(s, usec + 100 * 1000);
                (void) sd_event_source_set_enabled(s, SD_EVENT_ONESHOT);
                return 0;
        }
        return sd_event_exit(c->event, 0);
}

static int on_idle(sd_event_source *s, uint64_t usec, void *userdata) {
        Context *c = userdata;
        int r;

        if (context_busy(c)) {
                idle_rearm(c);
                return 0;
        }
        /* Give the name up first: from now on the bus queues new callers
         * for the next activation instead of sending them to us. */
        c->exiting = true;
        (void) sd_notify(false, "STOPPING=1\nSTATUS=Idle, exiting.");
        r = sd_bus_release_name(c->bus, LOOPD_BUS_NAME);
        if (r < 0)
                return sd_event_exit(c->event, 0);
        return sd_event_add_time_relative(c->event, NULL, CLOCK_MONOTONIC, 200 * 1000, 0, on_drain, c);
}

static int on_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        idle_rearm(userdata);
        return 0; /* let it be dispatched */
}

static int on_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Context *c = userdata;
        (void) sd_notify(false, "STOPPING=1");
        return sd_event_exit(c->event, 0);
}

static int run(int argc, char *argv[]) {
        Context c = {
                .max_pending_per_uid = 32,
        };
        DevicesOptions dopts;
        sigset_t mask;
        const char *state_dir;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        c.quota = arg_quota;
        c.idle_timeout_usec = arg_idle_timeout_usec;
        c.polkit_timeout_usec = arg_polkit_timeout_usec;
        c.path_open_timeout_usec = arg_path_open_timeout_usec;
        state_dir = arg_state_dir;
        if (!state_dir)
                state_dir = getenv("RUNTIME_DIRECTORY");
        if (!state_dir || !*state_dir)
                state_dir = "/run/loopd";
        /* RUNTIME_DIRECTORY may list several, colon-separated: take the first. */
        c.state_dir = strndup(state_dir, strcspn(state_dir, ":"));
        if (!c.state_dir)
                return 1;

        /* Before any thread exists: sd-event handles these, no thread may. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        signal(SIGPIPE, SIG_IGN);

        loopd_errors_register();

        r = sd_event_default(&c.event);
        if (r < 0)
                goto fail;
        (void) sd_event_add_signal(c.event, NULL, SIGTERM, on_signal, &c);
        (void) sd_event_add_signal(c.event, NULL, SIGINT, on_signal, &c);

        r = sd_bus_open_system(&c.bus);
        if (r < 0) {
                fprintf(stderr, "loopd: cannot connect to the system bus: %s\n", strerror(-r));
                goto fail;
        }
        r = sd_bus_attach_event(c.bus, c.event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                goto fail;

        r = uevent_monitor_new(c.event, bus_manager_on_uevent, &c, &c.uevents);
        if (r < 0) {
                fprintf(stderr, "loopd: cannot listen to kernel uevents: %s\n", strerror(-r));
                goto fail;
        }
        dopts = (DevicesOptions) {
                .state_dir = c.state_dir,
                .quota = c.quota,
                .min_spare_nodes = arg_min_spare,
                .max_spare_nodes = arg_max_spare,
        };
        r = devices_new(&dopts, &bus_device_events, &c, &c.devices);
        if (r < 0) {
                fprintf(stderr, "loopd: cannot set up (%s): %s\n", c.state_dir, strerror(-r));
                goto fail;
        }
        r = bus_manager_register(&c);
        if (r < 0)
                goto fail;
        r = sd_bus_add_filter(c.bus, NULL, on_message, &c);
        if (r < 0)
                goto fail;
        r = sd_bus_request_name(c.bus, LOOPD_BUS_NAME, 0);
        if (r < 0) {
                fprintf(stderr, "loopd: cannot own %s: %s\n", LOOPD_BUS_NAME, strerror(-r));
                goto fail;
        }
        bus_manager_watch_existing(&c);

        if (c.idle_timeout_usec > 0) {
                r = sd_event_add_time_relative(c.event, &c.idle_timer, CLOCK_MONOTONIC, c.idle_timeout_usec, 0,
                                               on_idle, &c);
                if (r < 0)
                        goto fail;
        }
        (void) sd_notifyf(false, "READY=1\nSTATUS=Serving %zu loop devices.", devices_count(c.devices));

        r = sd_event_loop(c.event);
fail:
        bus_manager_cancel_operations(&c);
        sd_event_source_unref(c.idle_timer);
        /* Devices first: its removal events still talk to the bus. */
        devices_free(c.devices);
        uevent_monitor_free(c.uevents);
        if (c.bus) {
                sd_bus_flush(c.bus);
                sd_bus_detach_event(c.bus);
                sd_bus_close_unref(c.bus);
        }
        sd_event_unref(c.event);
        free(c.state_dir);
        if (r < 0) {
                fprintf(stderr, "loopd: %s\n", strerror(-r));
                return 1;
        }
        return 0;
}

int main(int argc, char *argv[]) {
        return run(argc, argv);
}
