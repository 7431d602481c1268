/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * loopd: loop devices for callers on the D-Bus system bus.
 * run() owns the Context: it parses options, builds the pieces in order,
 * runs sd-event (the daemon's only loop) and tears everything down.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "bus-device.h"
#include "bus-manager.h"
#include "bus-watch.h"
#include "caps.h"
#include "errors.h"
#include "fd-store.h"
#include "log.h"

/* Parsed command-line options: the only globals. */
static uint64_t arg_idle_timeout_usec = 60ULL * 1000000ULL;
static uint64_t arg_polkit_timeout_usec = 25ULL * 1000000ULL;
static uint64_t arg_path_open_timeout_usec = 10ULL * 1000000ULL;
static uint64_t arg_kernel_timeout_usec = 20ULL * 1000000ULL;
static unsigned arg_min_spare = 2, arg_max_spare = 8;
static const char *arg_state_dir = NULL;
static bool arg_fd_store = false;
/* Every bound, named in loopd(8), "LIMITS". */
static Limits arg_limits = {
        .quota = 64,
        .pending_per_uid = 32,
        .pending_total = 1024,
        .helpers_per_uid = 4,
        .helpers_total = 64,
        .polkit_in_flight = 64,
        .kernel_threads = 16,
        .kernel_per_uid = 4,
        .backlog_per_uid = 16,
        .backlog_messages = 256,
        .listings_per_sec = 10,
        .listings_burst = 20,
};

static void help(void) {
        printf("Usage: loopd [OPTIONS]\n\n"
               "Serves loop devices on the D-Bus system bus as " LOOPD_BUS_NAME ".\n\n"
               "  -h --help               Show this help\n"
               "     --version            Show the version\n"
               "     --state-dir=DIR      Where owner records live (default: $RUNTIME_DIRECTORY, else /run/loopd)\n"
               "     --quota=N            Devices one non-root uid may have attached (default 64)\n"
               "     --idle-timeout=SEC   Exit after SEC idle seconds when no device is bound to a live\n"
               "                          caller or guarded for its owner; 0 never exits (default 60)\n"
               "     --polkit-timeout=SEC How long to wait for polkit's answer (default 25)\n"
               "     --open-timeout=SEC   How long CreateFromPath may take to open a file (default 10)\n"
               "     --kernel-timeout=SEC How long a caller waits for the kernel (default 20)\n"
               "     --spare-nodes=MIN:MAX Free loop nodes to keep ready (default 2:8)\n"
               "     --log-level=LEVEL    debug, info, notice, warning, err... (default info)\n"
               "     --fd-store           Keep keepers in systemd's fd store as well (loopd.service)\n");
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
        enum { ARG_VERSION = 0x100, ARG_STATE_DIR, ARG_QUOTA, ARG_IDLE, ARG_POLKIT, ARG_OPEN, ARG_KERNEL, ARG_SPARE,
               ARG_LOG_LEVEL, ARG_FD_STORE };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "version", no_argument, NULL, ARG_VERSION },
                { "state-dir", required_argument, NULL, ARG_STATE_DIR },
                { "quota", required_argument, NULL, ARG_QUOTA },
                { "idle-timeout", required_argument, NULL, ARG_IDLE },
                { "polkit-timeout", required_argument, NULL, ARG_POLKIT },
                { "open-timeout", required_argument, NULL, ARG_OPEN },
                { "kernel-timeout", required_argument, NULL, ARG_KERNEL },
                { "spare-nodes", required_argument, NULL, ARG_SPARE },
                { "log-level", required_argument, NULL, ARG_LOG_LEVEL },
                { "fd-store", no_argument, NULL, ARG_FD_STORE },
                { 0 }
        };
        unsigned long long v, w;
        int c, r;

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
                        arg_limits.quota = (unsigned) v;
                        break;
                case ARG_IDLE:
                case ARG_POLKIT:
                case ARG_OPEN:
                case ARG_KERNEL:
                        if (parse_uint(optarg, 86400 * 365, &v) < 0 || (c != ARG_IDLE && v == 0)) {
                                fprintf(stderr, "loopd: %s takes whole seconds%s.\n", argv[optind - 1],
                                        c != ARG_IDLE ? ", at least 1" : "");
                                return -EINVAL;
                        }
                        *(c == ARG_IDLE ? &arg_idle_timeout_usec
                          : c == ARG_POLKIT ? &arg_polkit_timeout_usec
                          : c == ARG_OPEN ? &arg_path_open_timeout_usec
                                          : &arg_kernel_timeout_usec) = v * 1000000ULL;
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
                case ARG_LOG_LEVEL:
                        r = log_level_from_string(optarg);
                        if (r < 0) {
                                fprintf(stderr, "loopd: --log-level takes debug, info, notice, warning, err, crit, "
                                        "alert, emerg or 0..7.\n");
                                return -EINVAL;
                        }
                        log_set_max_level(r);
                        break;
                case ARG_FD_STORE:
                        arg_fd_store = true;
                        break;
                default:
                        return -EINVAL;
                }
        if (optind < argc) {
                fprintf(stderr, "loopd: takes no arguments.\n");
                return -EINVAL;
        }
        return 1;
}

/* ---- STATUS= and idle exit ------------------------------------------------------ */

static int on_status_update(sd_event_source *s, void *userdata) {
        Context *c = userdata;
        int r;

        r = sd_notifyf(false, "STATUS=Serving %zu loop devices, %zu bound to callers.", devices_count(c->devices),
                       devices_count_bound(c->devices));
        if (r < 0)
                log_debug_errno(r, "Cannot send STATUS= to the service manager");
        return 0;
}

static int on_trim(sd_event_source *s, uint64_t usec, void *userdata) {
        /* Hand the memory of devices that came and went back to the system,
         * so that loopd returns to its idle size after a burst. */
        (void) malloc_trim(0);
        return 0;
}

void context_counts_changed(Context *c) {
        uint64_t now;

        /* Once per loop iteration, however many devices changed in it. */
        if (c->status_update && !c->exiting)
                (void) sd_event_source_set_enabled(c->status_update, SD_EVENT_ONESHOT);
        /* A trim once a burst has settled (200 ms without changes). */
        if (c->trim_timer && sd_event_now(c->event, CLOCK_MONOTONIC, &now) >= 0) {
                (void) sd_event_source_set_time(c->trim_timer, now + 200 * 1000);
                (void) sd_event_source_set_enabled(c->trim_timer, SD_EVENT_ONESHOT);
        }
}

static bool context_busy(Context *c) {
        /* Guarded devices need loopd: it withdraws their owners' access
         * before the kernel lets them go. Bound ones need it to follow their
         * callers. */
        return c->n_operations > 0 || job_pool_jobs(c->jobs) > 0 || devices_count_bound(c->devices) > 0 ||
               devices_count_guarded(c->devices) > 0;
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
        LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_STOPPED);
        log_entry_send(&e, "Idle for %llu s, exiting; the next call starts loopd again",
                       (unsigned long long) (c->idle_timeout_usec / 1000000));
        r = sd_bus_release_name(c->bus, LOOPD_BUS_NAME);
        if (r < 0) {
                log_warning_errno(r, "Cannot give up %s", LOOPD_BUS_NAME);
                return sd_event_exit(c->event, 0);
        }
        return sd_event_add_time_relative(c->event, NULL, CLOCK_MONOTONIC, 200 * 1000, 0, on_drain, c);
}

static int on_message(sd_bus_message *m, void *userdata, sd_bus_error *ret_error) {
        Context *c = userdata;

        idle_rearm(c);
        c->dispatch_usec = now_usec();
        return bus_manager_admit(c, m); /* 1: handled (dropped), 0: dispatch it */
}

/* ---- signals ------------------------------------------------------------------------ */

static int on_terminate(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        Context *c = userdata;

        LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_STOPPED);
        log_entry_add(&e, "LOOPD_SIGNAL", "%s", sigabbrev_np((int) si->ssi_signo));
        log_entry_send(&e, "Received %s, exiting", strsignal((int) si->ssi_signo));
        (void) sd_notify(false, "STOPPING=1");
        return sd_event_exit(c->event, 0);
}

static int on_hangup(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata) {
        /* Nothing to reload: every setting comes from the command line. */
        LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_SIGNAL);
        log_entry_add(&e, "LOOPD_SIGNAL", "HUP");
        log_entry_send(&e, "Received SIGHUP: loopd has no configuration to reload; ignoring it");
        return 0;
}

/* The signals whose default action would end loopd, but that nobody sends
 * to mean "stop" (SIGTERM and SIGINT do that; SIGQUIT, SIGABRT and the
 * fault signals keep their core dumps). */
static void ignore_stray_signals(void) {
        static const int stray[] = { SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGSTKFLT,
                                     SIGPWR, SIGXCPU, SIGXFSZ, SIGTRAP, SIGSYS };

        for (size_t i = 0; i < ELEMENTSOF(stray); i++)
                (void) signal(stray[i], SIG_IGN);
        for (int s = SIGRTMIN; s <= SIGRTMAX; s++)
                (void) signal(s, SIG_IGN);
}

/* ---- run ------------------------------------------------------------------------------ */

static void on_uevent(const Uevent *ev, void *userdata) {
        Context *c = userdata;

        if (ev->partition)
                devices_partition_event(c->devices, ev->number);
        else
                devices_uevent(c->devices, ev->number, ev->diskseq, ev->seqnum); /* UINT32_MAX (overflow): all */
}

static int setup(Context *c) {
        const char *state_dir = arg_state_dir;
        int r;

        c->limits = arg_limits;
        c->listings = (UidBudget) { .rate = c->limits.listings_per_sec, .burst = c->limits.listings_burst };
        c->idle_timeout_usec = arg_idle_timeout_usec;
        c->polkit_timeout_usec = arg_polkit_timeout_usec;
        c->path_open_timeout_usec = arg_path_open_timeout_usec;
        c->kernel_timeout_usec = arg_kernel_timeout_usec;
        if (!state_dir)
                state_dir = getenv("RUNTIME_DIRECTORY");
        if (!state_dir || !*state_dir)
                state_dir = "/run/loopd";
        /* RUNTIME_DIRECTORY may list several, colon-separated: take the first. */
        c->state_dir = strndup(state_dir, strcspn(state_dir, ":"));
        if (!c->state_dir)
                return -ENOMEM;

        r = sd_event_default(&c->event);
        if (r < 0)
                return r;
        r = sd_event_add_signal(c->event, NULL, SIGTERM, on_terminate, c);
        if (r >= 0)
                r = sd_event_add_signal(c->event, NULL, SIGINT, on_terminate, c);
        if (r >= 0)
                r = sd_event_add_signal(c->event, NULL, SIGHUP, on_hangup, c);
        if (r < 0)
                return r;
        r = sd_event_add_defer(c->event, &c->status_update, on_status_update, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->status_update, SD_EVENT_OFF);
        r = sd_event_add_time_relative(c->event, &c->trim_timer, CLOCK_MONOTONIC, 200 * 1000, 0, on_trim, c);
        if (r < 0)
                return r;
        (void) sd_event_source_set_enabled(c->trim_timer, SD_EVENT_OFF);

        r = sd_bus_open_system(&c->bus);
        if (r < 0) {
                log_error_errno(r, "Cannot connect to the system bus");
                return r;
        }
        r = sd_bus_attach_event(c->bus, c->event, SD_EVENT_PRIORITY_NORMAL);
        if (r < 0)
                return r;

        r = job_pool_new(c->event,
                         &(JobPoolLimits) {
                                 .max_threads = c->limits.kernel_threads,
                                 .reserve_threads = 4,
                                 .max_running_per_owner = c->limits.kernel_per_uid,
                                 /* Each request has one job at a time. */
                                 .max_per_owner = c->limits.pending_per_uid,
                                 .max_queued = c->limits.pending_total,
                                 .warm_threads = 2,
                         },
                         &c->jobs);
        if (r < 0)
                return r;
        r = path_opener_new(c->event, c->limits.helpers_per_uid, c->limits.helpers_total, &c->opener);
        if (r < 0)
                return r;
        r = polkit_new(c->bus, c->limits.polkit_in_flight, &c->polkit);
        if (r < 0)
                return r;
        r = uevent_monitor_new(c->event, on_uevent, c, &c->uevents);
        if (r < 0) {
                log_error_errno(r, "Cannot listen to kernel uevents");
                return r;
        }
        StoredKeeper *stored = NULL;
        size_t n_stored = 0;
        fd_store_enable(arg_fd_store);
        r = fd_store_take(&stored, &n_stored);
        if (r < 0)
                return r;
        r = devices_new(c->event, c->jobs,
                        &(DevicesOptions) {
                                .state_dir = c->state_dir,
                                .quota = c->limits.quota,
                                .min_spare_nodes = arg_min_spare,
                                .max_spare_nodes = arg_max_spare,
                                .kernel_timeout_usec = c->kernel_timeout_usec,
                                .stored = stored,
                                .n_stored = n_stored,
                        },
                        &bus_device_events, c, &c->devices);
        if (r < 0) {
                log_error_errno(r, "Cannot set up (state directory %s)", c->state_dir);
                return r;
        }
        r = bus_manager_register(c);
        if (r < 0)
                return r;
        r = sd_bus_add_filter(c->bus, NULL, on_message, c);
        if (r < 0)
                return r;
        /* The name before any work on what was found: bus activation waits
         * for it, and reading the identity of an adopted device may take as
         * long as its backing file system does. */
        r = sd_bus_request_name(c->bus, LOOPD_BUS_NAME, 0);
        if (r < 0) {
                log_error_errno(r, "Cannot own %s", LOOPD_BUS_NAME);
                return r;
        }
        size_t i = 0;
        for (Device *d; (d = devices_next(c->devices, &i));)
                if (d->binding)
                        bus_watch_device(c, d);
        devices_start_background(c->devices);

        if (c->idle_timeout_usec > 0) {
                r = sd_event_add_time_relative(c->event, &c->idle_timer, CLOCK_MONOTONIC, c->idle_timeout_usec, 0,
                                               on_idle, c);
                if (r < 0)
                        return r;
        }
        LogEntry e = LOG_ENTRY_INIT(LOG_INFO, LOG_ID_STARTED);
        log_entry_send(&e, "loopd " LOOPD_VERSION " serving %zu loop devices (%zu bound to callers)",
                       devices_count(c->devices), devices_count_bound(c->devices));
        (void) sd_notifyf(false, "READY=1\nSTATUS=Serving %zu loop devices, %zu bound to callers.",
                          devices_count(c->devices), devices_count_bound(c->devices));
        return 0;
}

static void teardown(Context *c) {
        bus_manager_cancel_operations(c);
        bus_watch_stop(c);
        c->idle_timer = sd_event_source_disable_unref(c->idle_timer);
        c->status_update = sd_event_source_disable_unref(c->status_update);
        c->trim_timer = sd_event_source_disable_unref(c->trim_timer);
        if (c->bus) {
                /* Off the bus before anything can wait: a job stuck in the
                 * kernel must not keep loopd's name owned. */
                (void) sd_bus_flush(c->bus);
                sd_bus_detach_event(c->bus);
                sd_bus_close(c->bus);
        }
        polkit_free(c->polkit);
        /* Owners' access withdrawn, keepers let go (on jobs)... */
        if (c->devices)
                devices_shutdown(c->devices);
        /* ...jobs given a moment to return and report to the model... */
        job_pool_free(c->jobs, 2 * 1000000ULL);
        devices_free(c->devices);
        uevent_monitor_free(c->uevents);
        path_opener_free(c->opener);
        sd_bus_unref(c->bus);
        sd_event_unref(c->event);
        uid_counts_clear(&c->operations_per_uid);
        uid_counts_clear(&c->backlog);
        uid_budget_clear(&c->listings);
        free(c->state_dir);
}

static int run(int argc, char *argv[]) {
        Context c = { 0 };
        sigset_t mask;
        int r;

        r = parse_argv(argc, argv);
        if (r <= 0)
                return r < 0 ? 2 : 0;
        log_open();

        /* Before any thread exists: sd-event handles these, no thread may. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigaddset(&mask, SIGCHLD);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        ignore_stray_signals();
        /* What loopd holds only for root's path helper, it does not use
         * itself (caps.h). */
        r = caps_set_effective(0, CAPS_HELD_BACK);
        if (r < 0)
                log_warning_errno(r, "Cannot drop the capabilities loopd keeps for root's path helper");

        /* Every guarded device holds an fd (its keeper) and every helper a
         * pidfd: the soft limit systemd gives services (1024) is for
         * programs that use select(); loopd does not, so it takes the hard
         * limit (systemd's default 524288), as systemd advises. */
        struct rlimit nofile;
        if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
                nofile.rlim_cur = nofile.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &nofile) < 0)
                        log_warning_errno(errno, "Cannot raise the limit of open files to %llu",
                                          (unsigned long long) nofile.rlim_max);
        }

        loopd_errors_register();
        r = setup(&c);
        if (r >= 0)
                r = sd_event_loop(c.event);
        teardown(&c);
        if (r < 0) {
                log_error_errno(r, "Exiting on error");
                return 1;
        }
        return 0;
}

int main(int argc, char *argv[]) {
        return run(argc, argv);
}
