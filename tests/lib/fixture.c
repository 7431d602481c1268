/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The integration fixture: see fixture.h for the contract. Two halves:
 *
 *   - the normal path, GLib-based, which asserts: loopd must exit 0 on
 *     SIGTERM, the bus must accept the production policy, polkitd must load
 *     the test's rules;
 *   - the crash path: everything it starts or makes is registered with the
 *     emergency cleanup (emergency.c: signal handlers, atexit, the janitor
 *     process) and forgotten once undone. g_assert() aborts without running
 *     teardown, meson's timeout sends SIGTERM and then SIGKILL; either way no
 *     dbus-daemon, polkitd, loopd, FUSE mount or loop device may outlive the
 *     test.
 */

#include "fixture-private.h"
#include "emergency.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <glib/gstdio.h>

#ifndef LOOPD_DEFAULT_BUS_POLICY
#error "meson defines LOOPD_DEFAULT_BUS_POLICY"
#endif
#ifndef LOOPD_DEFAULT_BUS_CONFIG_TEMPLATE
#error "meson defines LOOPD_DEFAULT_BUS_CONFIG_TEMPLATE"
#endif

#define PROBE_ACTION "org.loopd.test.fixture-probe"
#define PROBE_DETAIL "loopd.test.generation"
#define RULES_FILE "50-loopd-test.rules"
#define PROBE_RULES_FILE "00-loopd-test-fixture-probe.rules"

struct LoopdCaller {
        LoopdFixture *f;
        pid_t pid;
        int stdin_fd, stdout_fd;
        GString *buf;
        gboolean eof;
        gboolean reaped;
        int status;
};

/* ---- time and small helpers ------------------------------------------- */

double loopd_test_timeout_scale(void) {
        const char *s = g_getenv("LOOPD_TEST_TIMEOUT_SCALE");
        double v = s ? g_ascii_strtod(s, NULL) : 1.0;
        return v >= 1.0 ? v : 1.0;
}

gint64 fixture_deadline_after(double sec) {
        return g_get_monotonic_time() + (gint64) (sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);
}

gboolean fixture_past(gint64 deadline) {
        return g_get_monotonic_time() >= deadline;
}

static int status_to_code(int st) {
        if (WIFEXITED(st))
                return WEXITSTATUS(st);
        if (WIFSIGNALED(st))
                return 128 + WTERMSIG(st);
        return -1;
}

static char *describe_status(int st) {
        if (WIFEXITED(st))
                return g_strdup_printf("exit status %d", WEXITSTATUS(st));
        if (WIFSIGNALED(st))
                return g_strdup_printf("killed by signal %d (%s)%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
                                       WCOREDUMP(st) ? ", core dumped" : "");
        return g_strdup_printf("wait status 0x%x", st);
}

/* Reaps @pid within @timeout_sec (scaled). TRUE and *status when reaped. */
gboolean fixture_wait_child(pid_t pid, double timeout_sec, int *status) {
        gint64 deadline = fixture_deadline_after(timeout_sec);
        gulong sleep_us = 1000;

        for (;;) {
                pid_t r = waitpid(pid, status, WNOHANG);
                if (r == pid)
                        return TRUE;
                if (r < 0 && errno != EINTR) {
                        *status = 0;
                        return TRUE; /* not ours (any more): nothing to wait for */
                }
                if (fixture_past(deadline))
                        return FALSE;
                g_usleep(sleep_us);
                sleep_us = MIN(sleep_us * 2, 20000);
        }
}

/* SIGKILL and reap; for children whose exit status does not matter. */
void fixture_kill_child(pid_t pid) {
        int st;
        if (pid <= 0)
                return;
        (void) kill(pid, SIGKILL);
        (void) waitpid(pid, &st, 0);
}

/* Field 22 of /proc/PID/stat: start time, to tell a pid from its reuse. */
static guint64 proc_start_time(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int) pid);
        g_autofree char *text = NULL;
        const char *p;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return 0;
        p = strrchr(text, ')'); /* comm may hold spaces and parentheses */
        if (!p)
                return 0;
        /* After ") " come fields 3..; the start time is field 22. */
        g_auto(GStrv) fields = g_strsplit(p + 2, " ", 0);
        if (g_strv_length(fields) < 20)
                return 0;
        if (fields[0][0] == 'Z' || fields[0][0] == 'X')
                return 0; /* dead */
        return g_ascii_strtoull(fields[19], NULL, 10);
}

static gboolean pid_alive(pid_t pid, guint64 start_time) {
        guint64 now = pid > 0 ? proc_start_time(pid) : 0;
        return now != 0 && (start_time == 0 || now == start_time);
}

static void write_file_or_fail(const char *path, const char *contents, mode_t mode) {
        g_autoptr(GError) error = NULL;
        g_autofree char *tmp = g_strconcat(path, ".tmp", NULL);

        /* Written beside and renamed, so polkitd's file monitor never reads
         * half a rules file. */
        if (!g_file_set_contents_full(tmp, contents, -1, G_FILE_SET_CONTENTS_NONE, (int) mode, &error))
                fixture_fail("writing %s: %s", tmp, error->message);
        if (chmod(tmp, mode) < 0 || rename(tmp, path) < 0)
                fixture_fail("installing %s: %s", path, g_strerror(errno));
}

static char *find_program(const char *env, const char *const *candidates) {
        const char *e = env ? g_getenv(env) : NULL;

        if (e && *e)
                return g_access(e, X_OK) == 0 ? g_strdup(e) : NULL;
        for (; *candidates; candidates++) {
                if ((*candidates)[0] == '/') {
                        if (g_access(*candidates, X_OK) == 0)
                                return g_strdup(*candidates);
                } else {
                        char *p = g_find_program_in_path(*candidates);
                        if (p)
                                return p;
                }
        }
        return NULL;
}

static const char *env_or(const char *name, const char *fallback) {
        const char *v = g_getenv(name);
        return v && *v ? v : fallback;
}

/* ---- the crash path ----------------------------------------------------- */

/*
 * Everything a fixture starts or makes is registered with the emergency
 * cleanup (emergency.h) the moment it exists and forgotten when the normal
 * path has undone it: a failed g_assert (abort), meson's SIGTERM, the
 * watchdog's SIGALRM, a SIGKILL or an _exit() then still leaves nothing.
 */
void fixture_track_pid(LoopdFixture *f, pid_t pid, gboolean is_child) {
        int r = emergency_add_pid(pid, is_child ? EMERGENCY_PID_CHILD : 0);
        if (r < 0 && !(r == -ESRCH && !is_child)) /* a non-child already gone: nothing to kill */
                fixture_fail("registering pid %d for the emergency cleanup: %s", (int) pid, g_strerror(-r));
}

void fixture_untrack_pid(LoopdFixture *f, pid_t pid) {
        if (pid > 0)
                emergency_forget_pid(pid);
}

/* ---- spawning ------------------------------------------------------------ */

static pid_t spawning_pid;

static void child_setup(gpointer user_data) {
        sigset_t none;

        /* Die with the test, even by SIGKILL. Checked against the race where
         * the test died between fork() and here. */
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != spawning_pid)
                _exit(127);
        sigemptyset(&none);
        (void) sigprocmask(SIG_SETMASK, &none, NULL);
}

char **fixture_base_env(LoopdFixture *f) {
        static const char *const drop[] = {
                "DBUS_SESSION_BUS_ADDRESS", "DBUS_STARTER_ADDRESS", "DBUS_STARTER_BUS_TYPE",
                "NOTIFY_SOCKET", "RUNTIME_DIRECTORY", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                "WATCHDOG_USEC", "WATCHDOG_PID", "XDG_RUNTIME_DIR",
        };
        char **env = g_get_environ();

        for (size_t i = 0; i < G_N_ELEMENTS(drop); i++)
                env = g_environ_unsetenv(env, drop[i]);
        if (f->bus_address)
                env = g_environ_setenv(env, "DBUS_SYSTEM_BUS_ADDRESS", f->bus_address, TRUE);
        else
                env = g_environ_unsetenv(env, "DBUS_SYSTEM_BUS_ADDRESS");
        return env;
}

/*
 * Spawns @argv with PR_SET_PDEATHSIG and the fixture's environment. Its
 * stdout goes to our stderr unless piped: GTest's TAP output is our stdout.
 * @map_fd (>= 0) becomes fd 3 in the child.
 */
pid_t fixture_spawn(LoopdFixture *f, const char *const *argv, char **env, const char *cwd,
                   int map_fd, int *stdin_pipe, int *stdout_pipe, int *stderr_pipe, GError **error) {
        int source_fds[1] = { map_fd }, target_fds[1] = { 3 };
        int out_fd = -1;
        GPid pid = 0;
        gboolean ok;

        /* A copy of our stderr for the child's stdout: GLib marks the fd it
         * dup2()s to 1 close-on-exec in the child, and were that fd 2 the
         * child would start with no stderr at all (loopd's messages lost,
         * valgrind crashing at start). */
        if (!stdout_pipe) {
                out_fd = fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3);
                if (out_fd < 0) {
                        g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "dup of stderr: %s",
                                    g_strerror(errno));
                        return 0;
                }
        }
        spawning_pid = getpid();
        ok = g_spawn_async_with_pipes_and_fds(cwd, argv, (const char *const *) env,
                                              G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_SEARCH_PATH,
                                              child_setup, NULL,
                                              -1, out_fd, -1,
                                              map_fd >= 0 ? source_fds : NULL, map_fd >= 0 ? target_fds : NULL,
                                              map_fd >= 0 ? 1 : 0,
                                              &pid, stdin_pipe, stdout_pipe, stderr_pipe, error);
        if (out_fd >= 0)
                close(out_fd);
        return ok ? pid : 0;
}

/* ---- the bus ------------------------------------------------------------- */

/* Replaces @token in *text, the bus config template read from @path, by
 * @value, XML-escaped. A template without the token is an error: the
 * template and its readers must not drift apart silently. */
static void substitute(char **text, const char *path, const char *token, const char *value) {
        g_auto(GStrv) parts = g_strsplit(*text, token, -1);
        g_autofree char *escaped = g_markup_escape_text(value, -1);

        if (g_strv_length(parts) < 2)
                fixture_fail("%s has no %s", path, token);
        g_free(*text);
        *text = g_strjoinv(escaped, parts);
}

static void start_bus(LoopdFixture *f) {
        g_autofree char *dbus_daemon = NULL, *config = NULL, *config_path = NULL, *socket_path = NULL;
        g_autofree char *arg = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = NULL;
        GString *line = g_string_new(NULL);
        const char *policy = env_or("LOOPD_BUS_POLICY", LOOPD_DEFAULT_BUS_POLICY);
        const char *template = env_or("LOOPD_BUS_CONFIG_TEMPLATE", LOOPD_DEFAULT_BUS_CONFIG_TEMPLATE);
        int pipefd[2];
        gint64 deadline;

        dbus_daemon = find_program("LOOPD_DBUS_DAEMON", (const char *const[]) { "dbus-daemon", NULL });
        g_assert_nonnull(dbus_daemon); /* setup skipped otherwise */
        if (g_access(policy, R_OK) < 0)
                fixture_fail("bus policy %s: %s", policy, g_strerror(errno));

        if (!g_file_get_contents(template, &config, NULL, &error))
                fixture_fail("bus config template: %s", error->message);
        socket_path = g_build_filename(f->tmpdir, "bus.socket", NULL);
        substitute(&config, template, "@BUS_SOCKET@", socket_path);
        substitute(&config, template, "@SERVICE_DIR@", f->service_dir);
        substitute(&config, template, "@LOOPD_BUS_POLICY@", policy);
        substitute(&config, template, "@EXTRA_CONFIG@", "");
        config_path = g_build_filename(f->tmpdir, "bus.conf", NULL);
        write_file_or_fail(config_path, config, 0644);

        if (pipe2(pipefd, O_CLOEXEC) < 0)
                fixture_fail("pipe: %s", g_strerror(errno));

        arg = g_strconcat("--config-file=", config_path, NULL);
        env = fixture_base_env(f);
        f->priv->bus_pid = fixture_spawn(f,
                                 (const char *const[]) { dbus_daemon, "--nofork", "--nopidfile", "--nosyslog",
                                                         "--print-address=3", arg, NULL },
                                 env, "/", pipefd[1], NULL, NULL, NULL, &error);
        close(pipefd[1]);
        if (!f->priv->bus_pid)
                fixture_fail("starting %s: %s", dbus_daemon, error->message);
        fixture_track_pid(f, f->priv->bus_pid, TRUE);

        /* The address line is its readiness: it listens before printing. */
        deadline = fixture_deadline_after(10);
        while (!strchr(line->str, '\n')) {
                struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
                char buf[256];
                ssize_t n;

                if (fixture_past(deadline))
                        fixture_fail("dbus-daemon printed no address within 10 s");
                if (poll(&p, 1, 100) <= 0)
                        continue;
                n = read(pipefd[0], buf, sizeof buf);
                if (n == 0)
                        fixture_fail("dbus-daemon exited before printing its address: it rejected %s "
                                     "(made from %s, or the policy it includes, %s); see its stderr above",
                                     config_path, template, policy);
                if (n > 0)
                        g_string_append_len(line, buf, n);
        }
        close(pipefd[0]);
        *strchr(line->str, '\n') = 0;
        f->bus_address = g_string_free(line, FALSE);

        /* For in-process clients (sd_bus_open_system(), libloopd). libc's
         * setenv: g_setenv() only adds a debug complaint about threads;
         * GDBus's worker thread does not read the environment. */
        setenv("DBUS_SYSTEM_BUS_ADDRESS", f->bus_address, 1);
        f->priv->set_env = TRUE;

        f->bus = g_dbus_connection_new_for_address_sync(
                f->bus_address,
                G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT | G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!f->bus)
                fixture_fail("connecting to the private bus %s: %s", f->bus_address, error->message);
        g_dbus_connection_set_exit_on_close(f->bus, FALSE);
}

static void stop_bus(LoopdFixture *f) {
        int st;

        if (f->bus) {
                (void) g_dbus_connection_close_sync(f->bus, NULL, NULL);
                g_clear_object(&f->bus);
        }
        if (f->priv->bus_pid > 0) {
                (void) kill(f->priv->bus_pid, SIGTERM);
                if (!fixture_wait_child(f->priv->bus_pid, 5, &st))
                        fixture_kill_child(f->priv->bus_pid);
                fixture_untrack_pid(f, f->priv->bus_pid);
                f->priv->bus_pid = 0;
        }
        if (f->priv->set_env) {
                unsetenv("DBUS_SYSTEM_BUS_ADDRESS");
                f->priv->set_env = FALSE;
        }
}

pid_t loopd_fixture_name_owner_pid(LoopdFixture *f, const char *name) {
        g_autoptr(GVariant) r = NULL;
        guint32 pid;

        r = g_dbus_connection_call_sync(f->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                        "org.freedesktop.DBus", "GetConnectionUnixProcessID",
                                        g_variant_new("(s)", name), G_VARIANT_TYPE("(u)"),
                                        G_DBUS_CALL_FLAGS_NONE, 5000, NULL, NULL);
        if (!r)
                return 0;
        g_variant_get(r, "(u)", &pid);
        return (pid_t) pid;
}

gboolean loopd_fixture_wait_name(LoopdFixture *f, const char *name, gboolean owned, double timeout_sec) {
        gint64 deadline = fixture_deadline_after(timeout_sec);

        for (;;) {
                g_autoptr(GVariant) r = g_dbus_connection_call_sync(
                        f->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                        "NameHasOwner", g_variant_new("(s)", name), G_VARIANT_TYPE("(b)"),
                        G_DBUS_CALL_FLAGS_NONE, 5000, NULL, NULL);
                gboolean has = FALSE;

                if (r)
                        g_variant_get(r, "(b)", &has);
                if (has == owned)
                        return TRUE;
                if (fixture_past(deadline))
                        return FALSE;
                g_usleep(10000);
        }
}

/* ---- polkitd ------------------------------------------------------------ */

static const char probe_policy[] =
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        "<!DOCTYPE policyconfig PUBLIC \"-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN\"\n"
        " \"http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd\">\n"
        "<!-- Written by the loopd test fixture: lets it see which rules polkitd has loaded. -->\n"
        "<policyconfig>\n"
        "  <action id=\"" PROBE_ACTION "\">\n"
        "    <description>loopd test fixture probe</description>\n"
        "    <message>loopd test fixture probe</message>\n"
        "    <defaults><allow_any>no</allow_any><allow_inactive>no</allow_inactive>"
        "<allow_active>no</allow_active></defaults>\n"
        "  </action>\n"
        "</policyconfig>\n";

/* polkit short-circuits uid 0, so the probe's subject is a process of
 * nobody's; its answer says which generation of the rules is loaded. */
static int probe_rules(LoopdFixture *f, guint generation, int timeout_msec, GError **error) {
        g_autofree char *gen = g_strdup_printf("%u", generation);
        g_autoptr(GVariant) r = NULL;
        GVariantBuilder subject, details;
        gboolean authorized, challenge;

        g_variant_builder_init(&subject, G_VARIANT_TYPE("a{sv}"));
        g_variant_builder_add(&subject, "{sv}", "pid", g_variant_new_uint32((guint32) f->priv->probe_pid));
        g_variant_builder_add(&subject, "{sv}", "start-time", g_variant_new_uint64(f->priv->probe_start));
        g_variant_builder_add(&subject, "{sv}", "uid", g_variant_new_int32(LOOPD_TEST_NOBODY));
        g_variant_builder_init(&details, G_VARIANT_TYPE("a{ss}"));
        g_variant_builder_add(&details, "{ss}", PROBE_DETAIL, gen);

        r = g_dbus_connection_call_sync(f->bus, LOOPD_POLKIT_BUS_NAME, "/org/freedesktop/PolicyKit1/Authority",
                                        "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization",
                                        g_variant_new("((sa{sv})sa{ss}us)", "unix-process", &subject, PROBE_ACTION,
                                                      &details, 0, ""),
                                        G_VARIANT_TYPE("((bba{ss}))"), G_DBUS_CALL_FLAGS_NONE, timeout_msec, NULL,
                                        error);
        if (!r)
                return -1;
        g_variant_get(r, "((bb@a{ss}))", &authorized, &challenge, NULL);
        return authorized;
}

static void write_rules(LoopdFixture *f, const char *rules) {
        g_autofree char *user = g_build_filename(f->priv->rules_dir, RULES_FILE, NULL);
        g_autofree char *probe = g_build_filename(f->priv->rules_dir, PROBE_RULES_FILE, NULL);
        g_autofree char *probe_js = NULL;

        if (rules) {
                g_autofree char *text = g_strconcat("// Written by the loopd test fixture: the test's rules.\n",
                                                    rules, "\n", NULL);
                write_file_or_fail(user, text, 0644);
        } else if (unlink(user) < 0 && errno != ENOENT)
                fixture_fail("removing %s: %s", user, g_strerror(errno));

        /* The probe file is written last: once polkitd answers with its
         * generation, the reload that read it also read the test's file. */
        f->priv->rules_generation++;
        probe_js = g_strdup_printf(
                "// Written by the loopd test fixture: lets it see which rules are loaded.\n"
                LOOPD_RULE_IF(YES, "*", PROBE_ACTION, "action.lookup('" PROBE_DETAIL "') == '%u'")
                LOOPD_RULE_DENY("*", PROBE_ACTION),
                f->priv->rules_generation);
        write_file_or_fail(probe, probe_js, 0644);
}

static void wait_rules_loaded(LoopdFixture *f) {
        gint64 deadline = fixture_deadline_after(20);
        g_autoptr(GError) last = NULL;

        for (;;) {
                g_autoptr(GError) error = NULL;
                int r = probe_rules(f, f->priv->rules_generation, 5000, &error);

                if (r > 0)
                        return;
                if (error) {
                        g_clear_error(&last);
                        last = g_steal_pointer(&error);
                }
                if (fixture_past(deadline))
                        fixture_fail("polkitd did not load rules generation %u within 20 s%s%s",
                                     f->priv->rules_generation, last ? ": " : "", last ? last->message : "");
                g_usleep(50000);
        }
}

static pid_t spawn_probe(LoopdFixture *f) {
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = fixture_base_env(f);
        g_autofree char *uid_line = g_strdup_printf("Uid:\t%d\t", LOOPD_TEST_NOBODY);
        g_autofree char *status_path = NULL;
        gint64 deadline;
        pid_t pid;

        pid = fixture_spawn(f,
                    (const char *const[]) { "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                            "--pdeathsig=KILL", "--", "sleep", "infinity", NULL },
                    env, "/", -1, NULL, NULL, NULL, &error);
        if (!pid)
                fixture_fail("starting the polkit probe process: %s", error->message);
        fixture_track_pid(f, pid, TRUE);

        /* polkitd must see the process as nobody: before setpriv changed
         * its uid it was root, whom polkit authorizes for everything. */
        status_path = g_strdup_printf("/proc/%d/status", (int) pid);
        deadline = fixture_deadline_after(10);
        for (;;) {
                g_autofree char *status = NULL;
                if (g_file_get_contents(status_path, &status, NULL, NULL) && strstr(status, uid_line))
                        break;
                if (fixture_past(deadline))
                        fixture_fail("the polkit probe process did not become uid %d", LOOPD_TEST_NOBODY);
                g_usleep(2000);
        }
        f->priv->probe_start = proc_start_time(pid);
        return pid;
}

gboolean loopd_fixture_start_polkit(LoopdFixture *f, const char *rules) {
        g_autofree char *polkitd = NULL, *unshare = NULL, *policy_copy = NULL, *probe_path = NULL;
        g_autofree char *polkit_dir = NULL, *policy_text = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = NULL;
        const char *policy = env_or("LOOPD_POLKIT_POLICY", LOOPD_DEFAULT_POLKIT_POLICY);
        gint64 deadline;

        g_assert_cmpint(f->priv->polkit_pid, ==, 0);

        polkitd = find_program("LOOPD_POLKITD",
                               (const char *const[]) { "/usr/lib/polkit-1/polkitd", "/usr/libexec/polkitd",
                                                       "/usr/libexec/polkit-1/polkitd", NULL });
        unshare = find_program(NULL, (const char *const[]) { "unshare", NULL });
        if (!polkitd || !unshare) {
                g_test_skip(!polkitd ? "polkitd is not installed (package polkitd)"
                                     : "unshare is not installed (package util-linux)");
                f->skipped = TRUE;
                return FALSE;
        }
        if (!g_file_test("/usr/share/polkit-1/actions", G_FILE_TEST_IS_DIR) ||
            !g_file_test("/etc/polkit-1/rules.d", G_FILE_TEST_IS_DIR)) {
                g_test_skip("polkit's /usr/share/polkit-1/actions or /etc/polkit-1/rules.d is missing: "
                            "nothing to bind-mount the test's directories over");
                f->skipped = TRUE;
                return FALSE;
        }

        /* World-readable: polkitd reads them as the polkitd user. */
        polkit_dir = g_build_filename(f->tmpdir, "polkit", NULL);
        g_free(f->priv->actions_dir);
        g_free(f->priv->rules_dir);
        g_free(f->priv->empty_dir);
        f->priv->actions_dir = g_build_filename(polkit_dir, "actions", NULL);
        f->priv->rules_dir = g_build_filename(polkit_dir, "rules.d", NULL);
        f->priv->empty_dir = g_build_filename(polkit_dir, "empty", NULL);
        if (g_mkdir_with_parents(f->priv->actions_dir, 0755) < 0 || g_mkdir_with_parents(f->priv->rules_dir, 0755) < 0 ||
            g_mkdir_with_parents(f->priv->empty_dir, 0755) < 0 || chmod(polkit_dir, 0755) < 0)
                fixture_fail("creating %s: %s", polkit_dir, g_strerror(errno));

        if (!g_file_get_contents(policy, &policy_text, NULL, &error))
                fixture_fail("reading the polkit policy: %s", error->message);
        policy_copy = g_build_filename(f->priv->actions_dir, "org.loopd.policy", NULL);
        write_file_or_fail(policy_copy, policy_text, 0644);
        probe_path = g_build_filename(f->priv->actions_dir, "org.loopd.test.fixture-probe.policy", NULL);
        write_file_or_fail(probe_path, probe_policy, 0644);
        write_rules(f, rules);

        f->priv->probe_pid = spawn_probe(f);

        /*
         * polkitd's directories are compiled in; bind-mount ours over them in
         * a private mount namespace. The PID namespace is what makes polkitd
         * die with the test: it drops to the polkitd user, and a uid change
         * clears PR_SET_PDEATHSIG, but sh (root) stays PID 1 of the namespace
         * with unshare's --kill-child signal, and when PID 1 dies the kernel
         * kills everything in its namespace. /proc stays the host's, so
         * polkitd still reads the bus's (host) pids of its subjects.
         */
        env = fixture_base_env(f);
        f->priv->polkit_pid = fixture_spawn(
                f,
                (const char *const[]) {
                        unshare, "--mount", "--pid", "--kill-child=SIGKILL", "--propagation", "private", "--",
                        "/bin/sh", "-c",
                        "set -e\n"
                        "mount --bind \"$1\" /usr/share/polkit-1/actions\n"
                        "mount --bind \"$2\" /etc/polkit-1/rules.d\n"
                        "if [ -d /usr/share/polkit-1/rules.d ]; then mount --bind \"$3\" /usr/share/polkit-1/rules.d; fi\n"
                        "\"$4\" --no-debug &\n"
                        "wait $!\n",
                        "loopd-test-polkit", f->priv->actions_dir, f->priv->rules_dir, f->priv->empty_dir, polkitd,
                        NULL },
                env, "/", -1, NULL, NULL, NULL, &error);
        if (!f->priv->polkit_pid)
                fixture_fail("starting polkitd: %s", error->message);
        fixture_track_pid(f, f->priv->polkit_pid, TRUE);

        deadline = fixture_deadline_after(20);
        for (;;) {
                int st;
                pid_t pk = loopd_fixture_name_owner_pid(f, LOOPD_POLKIT_BUS_NAME);
                if (pk > 0) {
                        f->priv->polkitd_pid = pk;
                        f->priv->polkitd_start = proc_start_time(pk);
                        fixture_track_pid(f, pk, FALSE);
                        break;
                }
                if (waitpid(f->priv->polkit_pid, &st, WNOHANG) == f->priv->polkit_pid) {
                        g_autofree char *why = describe_status(st);
                        fixture_untrack_pid(f, f->priv->polkit_pid);
                        f->priv->polkit_pid = 0;
                        fixture_fail("polkitd (in unshare) ended before it owned %s: %s; see its stderr above",
                                     LOOPD_POLKIT_BUS_NAME, why);
                }
                if (fixture_past(deadline))
                        fixture_fail("polkitd did not own %s within 20 s", LOOPD_POLKIT_BUS_NAME);
                g_usleep(10000);
        }

        wait_rules_loaded(f);
        return TRUE;
}

void loopd_fixture_set_polkit_rules(LoopdFixture *f, const char *rules) {
        g_assert_cmpint(f->priv->polkit_pid, >, 0);
        write_rules(f, rules);
        wait_rules_loaded(f);
}

void loopd_fixture_stop_polkit(LoopdFixture *f) {
        gint64 deadline;

        if (f->priv->polkit_pid <= 0)
                return;
        /* SIGKILL to unshare: --kill-child takes down PID 1 of the namespace,
         * and the kernel the rest. SIGKILL also ends a SIGSTOPped polkitd. */
        fixture_kill_child(f->priv->polkit_pid);
        fixture_untrack_pid(f, f->priv->polkit_pid);
        f->priv->polkit_pid = 0;

        deadline = fixture_deadline_after(10);
        while (pid_alive(f->priv->polkitd_pid, f->priv->polkitd_start)) {
                if (fixture_past(deadline)) {
                        (void) kill(f->priv->polkitd_pid, SIGKILL);
                        fixture_fail("polkitd %d outlived its PID namespace", (int) f->priv->polkitd_pid);
                }
                g_usleep(5000);
        }
        fixture_untrack_pid(f, f->priv->polkitd_pid);
        f->priv->polkitd_pid = 0;

        fixture_kill_child(f->priv->probe_pid);
        fixture_untrack_pid(f, f->priv->probe_pid);
        f->priv->probe_pid = 0;

        if (f->bus && !loopd_fixture_wait_name(f, LOOPD_POLKIT_BUS_NAME, FALSE, 10))
                fixture_fail("%s is still on the bus after polkitd died", LOOPD_POLKIT_BUS_NAME);
}

void loopd_fixture_hang_polkit(LoopdFixture *f) {
        g_assert_cmpint(f->priv->polkitd_pid, >, 0);
        if (kill(f->priv->polkitd_pid, SIGSTOP) < 0)
                fixture_fail("SIGSTOP to polkitd: %s", g_strerror(errno));
}

void loopd_fixture_resume_polkit(LoopdFixture *f) {
        g_assert_cmpint(f->priv->polkitd_pid, >, 0);
        if (kill(f->priv->polkitd_pid, SIGCONT) < 0)
                fixture_fail("SIGCONT to polkitd: %s", g_strerror(errno));
}

pid_t loopd_fixture_polkitd_pid(LoopdFixture *f) {
        return f->priv->polkitd_pid;
}

int loopd_fixture_polkit_check(LoopdFixture *f, const char *bus_name, const char *action_id,
                               gboolean *challenge, int timeout_msec, GError **error) {
        g_autoptr(GVariant) r = NULL;
        GVariantBuilder subject, details;
        gboolean authorized, is_challenge;

        g_variant_builder_init(&subject, G_VARIANT_TYPE("a{sv}"));
        g_variant_builder_add(&subject, "{sv}", "name", g_variant_new_string(bus_name));
        g_variant_builder_init(&details, G_VARIANT_TYPE("a{ss}"));
        r = g_dbus_connection_call_sync(f->bus, LOOPD_POLKIT_BUS_NAME, "/org/freedesktop/PolicyKit1/Authority",
                                        "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization",
                                        g_variant_new("((sa{sv})sa{ss}us)", "system-bus-name", &subject, action_id,
                                                      &details, 0, ""),
                                        G_VARIANT_TYPE("((bba{ss}))"), G_DBUS_CALL_FLAGS_NONE, timeout_msec, NULL,
                                        error);
        if (!r)
                return -1;
        g_variant_get(r, "((bb@a{ss}))", &authorized, &is_challenge, NULL);
        if (challenge)
                *challenge = is_challenge;
        return authorized;
}

/* ---- loopd --------------------------------------------------------------- */

const char *loopd_fixture_daemon_binary(void) {
        const char *p = g_getenv("LOOPD_BINARY");
        return p && *p && g_access(p, X_OK) == 0 ? p : NULL;
}

static gboolean has_option(const char *const *args, const char *name) {
        size_t n = strlen(name);
        for (; args && *args; args++)
                if (strncmp(*args, name, n) == 0 && ((*args)[n] == 0 || (*args)[n] == '='))
                        return TRUE;
        return FALSE;
}

/* [wrapper...] loopd --state-dir=... --idle-timeout=0 extra... */
static GPtrArray *daemon_argv(LoopdFixture *f, const char *binary, const char *const *extra) {
        GPtrArray *argv = g_ptr_array_new_with_free_func(g_free);
        const char *wrapper = g_getenv("LOOPD_TEST_WRAPPER");

        if (wrapper && *wrapper) {
                g_auto(GStrv) w = NULL;
                g_autoptr(GError) error = NULL;
                if (!g_shell_parse_argv(wrapper, NULL, &w, &error))
                        fixture_fail("LOOPD_TEST_WRAPPER: %s", error->message);
                for (char **p = w; *p; p++)
                        g_ptr_array_add(argv, g_strdup(*p));
        }
        g_ptr_array_add(argv, g_strdup(binary));
        if (!has_option(extra, "--state-dir"))
                g_ptr_array_add(argv, g_strconcat("--state-dir=", f->state_dir, NULL));
        /* Tests must not race an idle exit unless they test it. */
        if (!has_option(extra, "--idle-timeout"))
                g_ptr_array_add(argv, g_strdup("--idle-timeout=0"));
        for (; extra && *extra; extra++)
                g_ptr_array_add(argv, g_strdup(*extra));
        g_ptr_array_add(argv, NULL);
        return argv;
}

/*
 * loopd reports over NOTIFY_SOCKET with sd_notify(), which sends on a
 * blocking datagram socket: once the receive queue is full
 * (/proc/sys/net/unix/max_dgram_qlen, 10 by default) every further
 * sd_notify() blocks loopd's only thread until someone reads. So the
 * fixture reads all the time, from a thread, whatever the test does, and
 * keeps what a test may ask for: READY=1 since the last start, the last
 * STATUS=.
 */
static void notify_parse(LoopdFixture *f, const char *msg) {
        g_auto(GStrv) lines = g_strsplit(msg, "\n", 0);

        for (char **l = lines; *l; l++) {
                if (strcmp(*l, "READY=1") == 0)
                        f->priv->daemon_ready = TRUE;
                else if (g_str_has_prefix(*l, "STATUS=")) {
                        g_free(f->priv->daemon_status);
                        f->priv->daemon_status = g_strdup(*l + strlen("STATUS="));
                }
        }
}

static gpointer notify_thread(gpointer data) {
        LoopdFixture *f = data;
        LoopdFixturePrivate *p = f->priv;

        for (;;) {
                struct pollfd pfd[2] = { { .fd = p->notify_fd, .events = POLLIN },
                                         { .fd = p->notify_wake[0], .events = POLLIN } };
                char buf[4096], c;
                guint64 requested;
                gboolean stop;

                if (poll(pfd, 2, -1) < 0 && errno != EINTR)
                        break;
                /* Everything queued now, before answering a drain request. */
                for (;;) {
                        ssize_t n = recv(p->notify_fd, buf, sizeof buf - 1, MSG_DONTWAIT);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0)
                                break;
                        buf[n] = 0;
                        g_mutex_lock(&p->notify_lock);
                        notify_parse(f, buf);
                        g_cond_broadcast(&p->notify_cond);
                        g_mutex_unlock(&p->notify_lock);
                }
                while (read(p->notify_wake[0], &c, 1) == 1)
                        ;
                g_mutex_lock(&p->notify_lock);
                requested = p->notify_sync_requested;
                stop = p->notify_stop;
                p->notify_sync_done = requested;
                g_cond_broadcast(&p->notify_cond);
                g_mutex_unlock(&p->notify_lock);
                if (stop)
                        break;
        }
        return NULL;
}

static void open_notify_socket(LoopdFixture *f) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };

        if (f->priv->notify_fd >= 0)
                return;
        f->priv->notify_path = g_build_filename(f->tmpdir, "notify.socket", NULL);
        if (strlen(f->priv->notify_path) >= sizeof sa.sun_path)
                fixture_fail("notify socket path too long: %s", f->priv->notify_path);
        strcpy(sa.sun_path, f->priv->notify_path);
        f->priv->notify_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (f->priv->notify_fd < 0 || bind(f->priv->notify_fd, (struct sockaddr *) &sa, sizeof sa) < 0)
                fixture_fail("notify socket %s: %s", f->priv->notify_path, g_strerror(errno));
        if (pipe2(f->priv->notify_wake, O_CLOEXEC | O_NONBLOCK) < 0)
                fixture_fail("pipe: %s", g_strerror(errno));
        f->priv->notify_thread = g_thread_new("loopd-notify", notify_thread, f);
}

static void wake_notify_thread(LoopdFixture *f) {
        if (write(f->priv->notify_wake[1], "w", 1) < 0 && errno != EAGAIN)
                fixture_fail("waking the notify reader: %s", g_strerror(errno));
}

/* Returns once the reader has taken in every datagram queued before the
 * call: after loopd exited, its last words are then known. */
static void notify_sync(LoopdFixture *f) {
        gint64 deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC;
        guint64 ticket;

        if (!f->priv->notify_thread)
                return;
        g_mutex_lock(&f->priv->notify_lock);
        ticket = ++f->priv->notify_sync_requested;
        g_mutex_unlock(&f->priv->notify_lock);
        wake_notify_thread(f);
        g_mutex_lock(&f->priv->notify_lock);
        while (f->priv->notify_sync_done < ticket)
                if (!g_cond_wait_until(&f->priv->notify_cond, &f->priv->notify_lock, deadline)) {
                        g_mutex_unlock(&f->priv->notify_lock);
                        fixture_fail("the NOTIFY_SOCKET reader did not answer within 10 s");
                }
        g_mutex_unlock(&f->priv->notify_lock);
}

static void close_notify_socket(LoopdFixture *f) {
        if (f->priv->notify_thread) {
                g_mutex_lock(&f->priv->notify_lock);
                f->priv->notify_stop = TRUE;
                g_mutex_unlock(&f->priv->notify_lock);
                wake_notify_thread(f);
                g_thread_join(g_steal_pointer(&f->priv->notify_thread));
        }
        for (int i = 0; i < 2; i++)
                if (f->priv->notify_wake[i] >= 0) {
                        close(f->priv->notify_wake[i]);
                        f->priv->notify_wake[i] = -1;
                }
        if (f->priv->notify_fd >= 0) {
                close(f->priv->notify_fd);
                f->priv->notify_fd = -1;
        f->priv->notify_wake[0] = f->priv->notify_wake[1] = -1;
        g_mutex_init(&f->priv->notify_lock);
        g_cond_init(&f->priv->notify_cond);
        }
}

static gboolean daemon_ready(LoopdFixture *f) {
        gboolean ready;

        g_mutex_lock(&f->priv->notify_lock);
        ready = f->priv->daemon_ready;
        g_mutex_unlock(&f->priv->notify_lock);
        return ready;
}

gboolean loopd_fixture_start_daemon(LoopdFixture *f, const char *const *extra_args) {
        const char *binary = loopd_fixture_daemon_binary();
        g_autoptr(GPtrArray) argv = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = NULL;
        char **saved;
        gint64 deadline;

        g_assert_cmpint(f->priv->daemon_pid, ==, 0);
        if (!binary) {
                g_test_skip(g_getenv("LOOPD_BINARY")
                                    ? "LOOPD_BINARY does not name an executable (is loopd built?)"
                                    : "LOOPD_BINARY is not set: the daemon is not part of this build");
                f->skipped = TRUE;
                return FALSE;
        }

        /* Copy before freeing: a restart passes f->priv->daemon_args itself. */
        saved = g_strdupv((char **) extra_args);
        g_strfreev(f->priv->daemon_args);
        f->priv->daemon_args = saved;

        open_notify_socket(f);
        notify_sync(f); /* a previous loopd's last words are not this one's */
        g_mutex_lock(&f->priv->notify_lock);
        f->priv->daemon_ready = FALSE;
        g_clear_pointer(&f->priv->daemon_status, g_free);
        g_mutex_unlock(&f->priv->notify_lock);

        argv = daemon_argv(f, binary, (const char *const *) f->priv->daemon_args);
        env = fixture_base_env(f);
        env = g_environ_setenv(env, "NOTIFY_SOCKET", f->priv->notify_path, TRUE);
        f->priv->daemon_pid = fixture_spawn(f, (const char *const *) argv->pdata, env, "/", -1, NULL, NULL, NULL, &error);
        if (!f->priv->daemon_pid)
                fixture_fail("starting %s: %s", binary, error->message);
        fixture_track_pid(f, f->priv->daemon_pid, TRUE);

        /* Ready = owns the name (pid checked: after a kill -9 the bus may not
         * have dropped the old connection yet) and said READY=1. */
        deadline = fixture_deadline_after(30);
        for (;;) {
                int st;

                if (daemon_ready(f) && loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME) == f->priv->daemon_pid)
                        return TRUE;
                if (waitpid(f->priv->daemon_pid, &st, WNOHANG) == f->priv->daemon_pid) {
                        g_autofree char *why = describe_status(st);
                        fixture_untrack_pid(f, f->priv->daemon_pid);
                        f->priv->daemon_pid = 0;
                        fixture_fail("loopd exited while starting: %s; see its stderr above", why);
                }
                if (fixture_past(deadline))
                        fixture_fail("loopd did not get ready within 30 s (owns %s: %s, READY=1 sent: %s)",
                                     LOOPD_BUS_NAME,
                                     loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME) == f->priv->daemon_pid ? "yes" : "no",
                                     daemon_ready(f) ? "yes" : "no");
                g_usleep(5000);
        }
}

int loopd_fixture_wait_daemon_exit(LoopdFixture *f, double timeout_sec) {
        int st;

        g_assert_cmpint(f->priv->daemon_pid, >, 0);
        if (!fixture_wait_child(f->priv->daemon_pid, timeout_sec, &st))
                return -1;
        fixture_untrack_pid(f, f->priv->daemon_pid);
        f->priv->daemon_pid = 0;
        notify_sync(f); /* its last STATUS= */
        return st;
}

int loopd_fixture_terminate_daemon(LoopdFixture *f) {
        int st;

        g_assert_cmpint(f->priv->daemon_pid, >, 0);
        if (kill(f->priv->daemon_pid, SIGTERM) < 0)
                fixture_fail("SIGTERM to loopd: %s", g_strerror(errno));
        st = loopd_fixture_wait_daemon_exit(f, 20);
        if (st == -1) {
                pid_t pid = f->priv->daemon_pid;
                fixture_kill_child(pid);
                fixture_untrack_pid(f, pid);
                f->priv->daemon_pid = 0;
                fixture_fail("loopd (pid %d) did not exit within 20 s of SIGTERM", (int) pid);
        }
        return st;
}

void loopd_fixture_stop_daemon(LoopdFixture *f) {
        int st;

        if (f->priv->daemon_pid <= 0)
                return;
        st = loopd_fixture_terminate_daemon(f);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                g_autofree char *why = describe_status(st);
                fixture_fail("loopd did not exit cleanly on SIGTERM: %s (a sanitizer report above "
                             "makes it non-zero)", why);
        }
}

void loopd_fixture_kill_daemon(LoopdFixture *f) {
        g_assert_cmpint(f->priv->daemon_pid, >, 0);
        fixture_kill_child(f->priv->daemon_pid);
        fixture_untrack_pid(f, f->priv->daemon_pid);
        f->priv->daemon_pid = 0;
}

gboolean loopd_fixture_restart_daemon(LoopdFixture *f) {
        return loopd_fixture_start_daemon(f, (const char *const *) f->priv->daemon_args);
}

pid_t loopd_fixture_daemon_pid(LoopdFixture *f) {
        return f->priv->daemon_pid;
}

const char *loopd_fixture_daemon_status_text(LoopdFixture *f) {
        notify_sync(f);
        g_free(f->priv->status_snapshot);
        g_mutex_lock(&f->priv->notify_lock);
        f->priv->status_snapshot = g_strdup(f->priv->daemon_status);
        g_mutex_unlock(&f->priv->notify_lock);
        return f->priv->status_snapshot;
}

gboolean loopd_fixture_wait_daemon_status(LoopdFixture *f, const char *pattern, double timeout_sec) {
        gint64 deadline = fixture_deadline_after(timeout_sec);
        g_autofree char *last = NULL;
        gboolean matched = FALSE;

        g_assert_nonnull(f->priv->notify_thread); /* loopd was started by the fixture */
        g_mutex_lock(&f->priv->notify_lock);
        for (;;) {
                matched = f->priv->daemon_status && g_pattern_match_simple(pattern, f->priv->daemon_status);
                if (matched || !g_cond_wait_until(&f->priv->notify_cond, &f->priv->notify_lock, deadline))
                        break;
        }
        if (!matched)
                matched = f->priv->daemon_status && g_pattern_match_simple(pattern, f->priv->daemon_status);
        last = g_strdup(f->priv->daemon_status);
        g_mutex_unlock(&f->priv->notify_lock);
        if (!matched)
                g_test_message("loopd's STATUS= did not become \"%s\" within %.1f s; the last was \"%s\"", pattern,
                               timeout_sec * loopd_test_timeout_scale(), last ? last : "(none)");
        return matched;
}

/* ---- activation ----------------------------------------------------------- */

static void reload_bus_config(LoopdFixture *f) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = g_dbus_connection_call_sync(
                f->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ReloadConfig",
                NULL, NULL, G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        if (!r)
                fixture_fail("ReloadConfig: %s", error->message);
}

static const char *lifeline_binary(void) {
        const char *p = env_or("LOOPD_TEST_LIFELINE", LOOPD_DEFAULT_TEST_LIFELINE);
        if (g_access(p, X_OK) < 0)
                fixture_fail("loopd-test-lifeline %s: %s (is it built?)", p, g_strerror(errno));
        return p;
}

/*
 * The Exec= prefix that ties an activated service to this test: dbus-daemon
 * starts services through a babysitter that exits once the name is owned,
 * so PR_SET_PDEATHSIG cannot do it; loopd-test-lifeline watches a FIFO whose
 * only writer is this process instead, and reports the exit status.
 */
static char *lifeline_prefix(LoopdFixture *f) {
        g_autofree char *bin = g_shell_quote(lifeline_binary());
        g_autofree char *dir = g_shell_quote(f->priv->activated_dir);
        g_autofree char *fifo = NULL;

        if (f->priv->lifeline_fd < 0) {
                f->priv->lifeline_fifo = g_build_filename(f->tmpdir, "lifeline.fifo", NULL);
                if (mkfifo(f->priv->lifeline_fifo, 0600) < 0)
                        fixture_fail("mkfifo %s: %s", f->priv->lifeline_fifo, g_strerror(errno));
                /* Read-write: opening never blocks, and we are a writer. */
                f->priv->lifeline_fd = open(f->priv->lifeline_fifo, O_RDWR | O_CLOEXEC | O_NONBLOCK);
                if (f->priv->lifeline_fd < 0)
                        fixture_fail("open %s: %s", f->priv->lifeline_fifo, g_strerror(errno));
        }
        fifo = g_shell_quote(f->priv->lifeline_fifo);
        return g_strdup_printf("%s --status-dir=%s %s --", bin, dir, fifo);
}

void loopd_fixture_install_activation_exec(LoopdFixture *f, const char *name, const char *exec) {
        g_autofree char *file = g_strconcat(name, ".service", NULL);
        g_autofree char *path = g_build_filename(f->service_dir, file, NULL);
        g_autofree char *prefix = lifeline_prefix(f);
        g_autofree char *text = g_strdup_printf("[D-BUS Service]\nName=%s\nExec=%s %s\nUser=root\n", name, prefix,
                                                exec);

        write_file_or_fail(path, text, 0644);
        reload_bus_config(f);
}

gboolean loopd_fixture_install_activation(LoopdFixture *f, const char *const *extra_args) {
        const char *binary = loopd_fixture_daemon_binary();
        const char *source = env_or("LOOPD_ACTIVATION_FILE", LOOPD_DEFAULT_ACTIVATION_FILE);
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) argv = NULL;
        g_autoptr(GString) exec = NULL;
        g_autofree char *name = NULL, *file = NULL, *path = NULL, *text = NULL, *prefix = NULL;

        if (!binary) {
                g_test_skip("LOOPD_BINARY is not set or missing: no daemon to activate");
                f->skipped = TRUE;
                return FALSE;
        }
        if (!g_key_file_load_from_file(kf, source, G_KEY_FILE_KEEP_COMMENTS, &error))
                fixture_fail("activation file %s: %s", source, error->message);
        name = g_key_file_get_string(kf, "D-BUS Service", "Name", &error);
        if (!name)
                fixture_fail("activation file %s: %s", source, error->message);

        prefix = lifeline_prefix(f);
        exec = g_string_new(prefix);
        argv = daemon_argv(f, binary, extra_args);
        for (guint i = 0; i < argv->len && argv->pdata[i]; i++) {
                g_autofree char *q = g_shell_quote(argv->pdata[i]);
                g_string_append_printf(exec, " %s", q);
        }

        /* Everything else (User=, SystemdService=) as installed; a bus
         * without a <servicehelper> ignores them. */
        g_key_file_set_string(kf, "D-BUS Service", "Exec", exec->str);
        text = g_key_file_to_data(kf, NULL, NULL);
        file = g_strconcat(name, ".service", NULL); /* a system bus insists on Name.service */
        path = g_build_filename(f->service_dir, file, NULL);
        write_file_or_fail(path, text, 0644);
        reload_bus_config(f);
        f->priv->activated_loopd = TRUE;
        return TRUE;
}

int loopd_fixture_activated_exit_status(LoopdFixture *f, pid_t pid, double timeout_sec) {
        g_autofree char *name = g_strdup_printf("%d.status", (int) pid);
        g_autofree char *path = g_build_filename(f->priv->activated_dir, name, NULL);
        gint64 deadline = fixture_deadline_after(timeout_sec);

        for (;;) {
                g_autofree char *text = NULL;
                if (g_file_get_contents(path, &text, NULL, NULL)) {
                        (void) unlink(path);
                        return atoi(text);
                }
                if (fixture_past(deadline))
                        return -1;
                g_usleep(5000);
        }
}

/* Every activated loopd that exited by itself (idle exit) must have exited
 * cleanly too; those a test consumed with
 * loopd_fixture_activated_exit_status() are its business. */
static void check_activated_exits(LoopdFixture *f) {
        g_autoptr(GDir) dir = g_dir_open(f->priv->activated_dir, 0, NULL);
        const char *name;

        while (dir && (name = g_dir_read_name(dir))) {
                g_autofree char *path = NULL, *text = NULL, *why = NULL;
                int st;

                if (!g_str_has_suffix(name, ".status") || name[0] == '.')
                        continue;
                path = g_build_filename(f->priv->activated_dir, name, NULL);
                if (!g_file_get_contents(path, &text, NULL, NULL))
                        continue;
                st = atoi(text);
                why = describe_status(st);
                if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                        fixture_fail("activated loopd (pid %.*s) did not exit cleanly: %s (a sanitizer report "
                                     "above makes it non-zero)",
                                     (int) (strlen(name) - strlen(".status")), name, why);
        }
}

gboolean loopd_fixture_stop_name_owner(LoopdFixture *f, const char *name) {
        pid_t pid = loopd_fixture_name_owner_pid(f, name);
        guint64 start;
        gint64 deadline;

        /* Nobody, or the test's own connection (it cannot SIGTERM itself). */
        if (pid <= 0 || pid == getpid())
                return FALSE;
        g_assert_cmpint(pid, !=, f->priv->daemon_pid); /* ours: loopd_fixture_stop_daemon() */
        start = proc_start_time(pid);
        fixture_track_pid(f, pid, FALSE);
        (void) kill(pid, SIGTERM);

        deadline = fixture_deadline_after(20);
        while (pid_alive(pid, start) || !loopd_fixture_wait_name(f, name, FALSE, 0)) {
                if (fixture_past(deadline)) {
                        (void) kill(pid, SIGKILL);
                        fixture_untrack_pid(f, pid);
                        fixture_fail("%s (pid %d) did not go away within 20 s of SIGTERM", name, (int) pid);
                }
                g_usleep(5000);
        }
        fixture_untrack_pid(f, pid);
        return TRUE;
}

/* ---- files, callers, loop devices ---------------------------------------- */

char *loopd_fixture_make_image(LoopdFixture *f, const char *name, guint64 size, uid_t uid, gid_t gid, mode_t mode) {
        char *path = g_build_filename(f->image_dir, name, NULL);
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0600);

        if (fd < 0)
                fixture_fail("creating %s: %s", path, g_strerror(errno));
        if (ftruncate(fd, (off_t) size) < 0 || fchown(fd, uid, gid) < 0 || fchmod(fd, mode) < 0)
                fixture_fail("preparing %s: %s", path, g_strerror(errno));
        close(fd);
        return path;
}

void loopd_run_result_clear(LoopdRunResult *r) {
        g_clear_pointer(&r->out, g_free);
        g_clear_pointer(&r->err, g_free);
        g_clear_pointer(&r->fields, g_strfreev);
        r->status = 0;
}

GPtrArray *fixture_setpriv_argv(uid_t uid, gid_t gid, const char *groups, const char *const *argv) {
        GPtrArray *a = g_ptr_array_new_with_free_func(g_free);

        g_ptr_array_add(a, g_strdup("setpriv"));
        g_ptr_array_add(a, g_strdup_printf("--reuid=%u", (unsigned) uid));
        g_ptr_array_add(a, g_strdup_printf("--regid=%u", (unsigned) gid));
        g_ptr_array_add(a, groups ? g_strconcat("--groups=", groups, NULL) : g_strdup("--clear-groups"));
        /* The uid change clears PR_SET_PDEATHSIG; setpriv sets it again. */
        g_ptr_array_add(a, g_strdup("--pdeathsig=KILL"));
        g_ptr_array_add(a, g_strdup("--"));
        for (; *argv; argv++)
                g_ptr_array_add(a, g_strdup(*argv));
        g_ptr_array_add(a, NULL);
        return a;
}

void loopd_fixture_run_as_full(LoopdFixture *f, uid_t uid, gid_t gid, const char *groups, const char *stdin_text,
                               const char *const *argv, LoopdRunResult *r) {
        g_autoptr(GPtrArray) a = fixture_setpriv_argv(uid, gid, groups, argv);
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = fixture_base_env(f);
        GString *out = g_string_new(NULL), *err = g_string_new(NULL);
        int in_fd = -1, out_fd = -1, err_fd = -1, st = 0;
        gboolean reaped = FALSE, timed_out = FALSE;
        gint64 deadline;
        pid_t pid;

        loopd_run_result_clear(r);
        pid = fixture_spawn(f, (const char *const *) a->pdata, env, "/", -1, stdin_text ? &in_fd : NULL, &out_fd, &err_fd,
                    &error);
        if (!pid)
                fixture_fail("running %s as %u: %s", argv[0], (unsigned) uid, error->message);
        fixture_track_pid(f, pid, TRUE);

        if (stdin_text) {
                size_t len = strlen(stdin_text);
                for (size_t done = 0; done < len;) {
                        ssize_t n = write(in_fd, stdin_text + done, len - done);
                        if (n < 0 && errno == EINTR)
                                continue;
                        if (n <= 0)
                                break; /* it closed its stdin: its business */
                        done += (size_t) n;
                }
                close(in_fd);
        }

        deadline = fixture_deadline_after(60);
        while (out_fd >= 0 || err_fd >= 0) {
                struct pollfd p[2] = { { .fd = out_fd, .events = POLLIN }, { .fd = err_fd, .events = POLLIN } };
                char buf[4096];

                if (!timed_out && fixture_past(deadline)) {
                        timed_out = TRUE;
                        (void) kill(pid, SIGKILL);
                }
                if (poll(p, 2, 100) < 0 && errno != EINTR)
                        break;
                for (int i = 0; i < 2; i++) {
                        int *fd = i == 0 ? &out_fd : &err_fd;
                        ssize_t n;
                        if (*fd < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        n = read(*fd, buf, sizeof buf);
                        if (n > 0)
                                g_string_append_len(i == 0 ? out : err, buf, n);
                        else if (n == 0 || errno != EINTR) {
                                close(*fd);
                                *fd = -1;
                        }
                }
                /* A grandchild holding the pipes must not hang us. */
                if (!reaped && waitpid(pid, &st, WNOHANG) == pid)
                        reaped = TRUE;
                if (reaped && fixture_past(deadline))
                        break;
        }
        if (out_fd >= 0)
                close(out_fd);
        if (err_fd >= 0)
                close(err_fd);
        if (!reaped && !fixture_wait_child(pid, timed_out ? 5 : 60, &st)) {
                fixture_kill_child(pid);
                timed_out = TRUE;
        }
        fixture_untrack_pid(f, pid);

        r->status = timed_out ? -1 : status_to_code(st);
        r->out = g_string_free(out, FALSE);
        r->err = g_string_free(err, FALSE);
        {
                g_autofree char *first = g_strndup(r->out, strcspn(r->out, "\n"));
                r->fields = g_strsplit(first, " ", 3);
        }
        if (err->len && g_test_verbose())
                g_test_message("%s as uid %u: stderr: %s", argv[0], (unsigned) uid, r->err);
}

void loopd_fixture_run_as(LoopdFixture *f, uid_t uid, gid_t gid, const char *const *argv, LoopdRunResult *r) {
        loopd_fixture_run_as_full(f, uid, gid, NULL, NULL, argv, r);
}

const char *loopd_fixture_test_caller(void) {
        const char *p = env_or("LOOPD_TEST_CALLER", LOOPD_DEFAULT_TEST_CALLER);
        if (g_access(p, X_OK) < 0)
                fixture_fail("loopd-test-caller %s: %s (is it built?)", p, g_strerror(errno));
        return p;
}

/* @program, then the NULL-terminated arguments of @ap. */
static GPtrArray *program_argv(const char *program, va_list ap) {
        GPtrArray *a = g_ptr_array_new();
        const char *arg;

        g_ptr_array_add(a, (gpointer) program);
        while ((arg = va_arg(ap, const char *)))
                g_ptr_array_add(a, (gpointer) arg);
        g_ptr_array_add(a, NULL);
        return a;
}

void loopd_fixture_run_program_as_valist(LoopdFixture *f, uid_t uid, gid_t gid, LoopdRunResult *r,
                                         const char *program, va_list ap) {
        g_autoptr(GPtrArray) a = program_argv(program, ap);

        loopd_fixture_run_as(f, uid, gid, (const char *const *) a->pdata, r);
}

void loopd_fixture_call_as(LoopdFixture *f, uid_t uid, gid_t gid, LoopdRunResult *r, ...) {
        va_list ap;

        va_start(ap, r);
        loopd_fixture_run_program_as_valist(f, uid, gid, r, loopd_fixture_test_caller(), ap);
        va_end(ap);
}

LoopdCaller *loopd_fixture_spawn_as(LoopdFixture *f, uid_t uid, gid_t gid, const char *const *argv) {
        g_autoptr(GPtrArray) a = fixture_setpriv_argv(uid, gid, NULL, argv);
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = fixture_base_env(f);
        LoopdCaller *c = g_new0(LoopdCaller, 1);

        c->f = f;
        c->stdin_fd = c->stdout_fd = -1;
        c->buf = g_string_new(NULL);
        c->pid = fixture_spawn(f, (const char *const *) a->pdata, env, "/", -1, &c->stdin_fd, &c->stdout_fd, NULL, &error);
        if (!c->pid)
                fixture_fail("starting %s as %u: %s", argv[0], (unsigned) uid, error->message);
        fixture_track_pid(f, c->pid, TRUE);
        g_ptr_array_add(f->priv->callers, c);
        return c;
}

LoopdCaller *loopd_fixture_spawn_caller_as(LoopdFixture *f, uid_t uid, gid_t gid, ...) {
        g_autoptr(GPtrArray) a = NULL;
        va_list ap;

        va_start(ap, gid);
        a = program_argv(loopd_fixture_test_caller(), ap);
        va_end(ap);
        return loopd_fixture_spawn_as(f, uid, gid, (const char *const *) a->pdata);
}

char *loopd_caller_read_line(LoopdCaller *c) {
        gint64 deadline = fixture_deadline_after(60);

        for (;;) {
                char *nl = strchr(c->buf->str, '\n');
                char buf[1024];
                struct pollfd p = { .fd = c->stdout_fd, .events = POLLIN };
                ssize_t n;

                if (nl) {
                        char *line = g_strndup(c->buf->str, (gsize) (nl - c->buf->str));
                        g_string_erase(c->buf, 0, nl - c->buf->str + 1);
                        return line;
                }
                if (c->eof || c->stdout_fd < 0 || fixture_past(deadline))
                        return NULL;
                if (poll(&p, 1, 100) <= 0)
                        continue;
                n = read(c->stdout_fd, buf, sizeof buf);
                if (n > 0)
                        g_string_append_len(c->buf, buf, n);
                else if (n == 0 || errno != EINTR)
                        c->eof = TRUE;
        }
}

pid_t loopd_caller_pid(LoopdCaller *c) {
        return c->pid;
}

void loopd_caller_close_stdin(LoopdCaller *c) {
        if (c->stdin_fd >= 0) {
                close(c->stdin_fd);
                c->stdin_fd = -1;
        }
}

void loopd_caller_kill(LoopdCaller *c, int sig) {
        if (!c->reaped)
                (void) kill(c->pid, sig);
}

int loopd_caller_wait(LoopdCaller *c) {
        int st;

        if (c->reaped)
                return c->status;
        if (!fixture_wait_child(c->pid, 60, &st)) {
                fixture_kill_child(c->pid);
                c->status = -1;
        } else
                c->status = status_to_code(st);
        c->reaped = TRUE;
        fixture_untrack_pid(c->f, c->pid);
        return c->status;
}

void loopd_caller_free(LoopdCaller *c) {
        if (!c)
                return;
        if (!c->reaped) {
                fixture_kill_child(c->pid);
                fixture_untrack_pid(c->f, c->pid);
        }
        loopd_caller_close_stdin(c);
        if (c->stdout_fd >= 0)
                close(c->stdout_fd);
        if (c->f->priv)
                g_ptr_array_remove(c->f->priv->callers, c);
        g_string_free(c->buf, TRUE);
        g_free(c);
}

static gint compare_loop_names(gconstpointer a, gconstpointer b) {
        const char *x = *(const char *const *) a, *y = *(const char *const *) b;
        return (gint) (g_ascii_strtoull(x + strlen("/dev/loop"), NULL, 10) -
                       g_ascii_strtoull(y + strlen("/dev/loop"), NULL, 10));
}

GPtrArray *loopd_fixture_list_loops(LoopdFixture *f) {
        GPtrArray *loops = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GDir) dir = g_dir_open("/sys/block", 0, NULL);
        g_autofree char *prefix = g_strconcat(f->tmpdir, "/", NULL);
        const char *name;

        while (dir && (name = g_dir_read_name(dir))) {
                g_autofree char *path = NULL, *backing = NULL;
                if (!g_str_has_prefix(name, "loop"))
                        continue;
                path = g_build_filename("/sys/block", name, "loop", "backing_file", NULL);
                if (!g_file_get_contents(path, &backing, NULL, NULL))
                        continue; /* not attached */
                if (g_str_has_prefix(backing, prefix))
                        g_ptr_array_add(loops, g_strconcat("/dev/", name, NULL));
        }
        g_ptr_array_sort(loops, compare_loop_names);
        return loops;
}

guint loopd_fixture_count_loops(LoopdFixture *f) {
        g_autoptr(GPtrArray) loops = loopd_fixture_list_loops(f);
        return loops->len;
}

GArray *loopd_device_holders(const char *device) {
        GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
        g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
        struct stat want;
        const char *name;

        if (stat(device, &want) < 0 || !S_ISBLK(want.st_mode))
                return pids;
        while (proc && (name = g_dir_read_name(proc))) {
                g_autofree char *fd_dir = NULL;
                g_autoptr(GDir) fds = NULL;
                const char *fd;

                if (!g_ascii_isdigit(name[0]))
                        continue;
                fd_dir = g_build_filename("/proc", name, "fd", NULL);
                fds = g_dir_open(fd_dir, 0, NULL);
                while (fds && (fd = g_dir_read_name(fds))) {
                        g_autofree char *link = g_build_filename(fd_dir, fd, NULL);
                        g_autofree char *target = g_file_read_link(link, NULL);
                        struct stat st;

                        if (target && g_str_has_prefix(target, "/dev/") && stat(link, &st) == 0 &&
                            S_ISBLK(st.st_mode) && st.st_rdev == want.st_rdev) {
                                pid_t pid = (pid_t) g_ascii_strtoll(name, NULL, 10);
                                g_array_append_val(pids, pid);
                                break;
                        }
                }
        }
        return pids;
}

char *loopd_pids_text(const GArray *pids) {
        GString *out = g_string_new(NULL);

        for (guint i = 0; i < pids->len; i++) {
                pid_t pid = g_array_index(pids, pid_t, i);
                g_autofree char *comm_path = g_strdup_printf("/proc/%d/comm", (int) pid);
                g_autofree char *comm = NULL;

                (void) g_file_get_contents(comm_path, &comm, NULL, NULL);
                g_string_append_printf(out, " %d(%s)", (int) pid, comm ? g_strstrip(comm) : "?");
        }
        return g_string_free(out, FALSE);
}

gboolean loopd_fixture_wait_no_loops(LoopdFixture *f, double timeout_sec) {
        gint64 deadline = fixture_deadline_after(timeout_sec);

        while (loopd_fixture_count_loops(f) > 0) {
                if (fixture_past(deadline))
                        return FALSE;
                g_usleep(20 * 1000);
        }
        return TRUE;
}

guint loopd_fixture_detach_loops(LoopdFixture *f) {
        return emergency_detach_loops_under(f->tmpdir);
}

/* ---- setup and teardown -------------------------------------------------- */

/* Whether this process is the only one holding @dev open. */
static gboolean held_by_us_only(const char *dev) {
        g_autoptr(GArray) pids = loopd_device_holders(dev);
        pid_t self = getpid();

        for (guint i = 0; i < pids->len; i++)
                if (g_array_index(pids, pid_t, i) != self)
                        return FALSE;
        return pids->len > 0;
}

/* Every loop device backed by a file under the test's directory is
 * detached before the directory goes. One scan is not enough: a process
 * that dies with its lifeline (an activated loopd, a caller) may still
 * hold a device (the kernel then defers the detach to its last close) or
 * finish a LOOP_CONFIGURE after the scan. So scan again until none is
 * left, for a bounded time, and fail naming the holders when one stays. */
static guint detach_loops_until_gone(LoopdFixture *f) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (10 * G_USEC_PER_SEC * loopd_test_timeout_scale());
        guint detached = 0;

        for (;;) {
                g_autoptr(GPtrArray) left = NULL;

                detached += loopd_fixture_detach_loops(f);
                left = loopd_fixture_list_loops(f);
                /* One this test still holds itself goes at its close:
                 * the detach above set autoclear on it. */
                for (guint i = left->len; i > 0; i--)
                        if (held_by_us_only(left->pdata[i - 1]))
                                g_ptr_array_remove_index(left, i - 1);
                if (left->len == 0)
                        return detached;
                if (g_get_monotonic_time() >= deadline) {
                        for (guint i = 0; i < left->len; i++) {
                                g_autoptr(GArray) pids = loopd_device_holders(left->pdata[i]);
                                g_autofree char *who = loopd_pids_text(pids);
                                g_test_message("%s is still attached after teardown, held open by%s",
                                               (char *) left->pdata[i], pids->len ? who : " no process");
                        }
                        fixture_fail("%u loop device(s) backed by files under %s outlived the test", left->len,
                                     f->tmpdir);
                        return detached;
                }
                g_usleep(20 * 1000);
        }
}

static gboolean skip_unless_runnable(LoopdFixture *f) {
        g_autofree char *dbus_daemon = NULL, *setpriv = NULL;

        if (geteuid() != 0) {
                g_test_skip("needs root: loop devices, setpriv to other uids, private mounts");
                return FALSE;
        }
        dbus_daemon = find_program("LOOPD_DBUS_DAEMON", (const char *const[]) { "dbus-daemon", NULL });
        if (!dbus_daemon) {
                g_test_skip("dbus-daemon is not installed (package dbus-daemon)");
                return FALSE;
        }
        setpriv = find_program(NULL, (const char *const[]) { "setpriv", NULL });
        if (!setpriv) {
                g_test_skip("setpriv is not installed (package util-linux)");
                return FALSE;
        }
        return TRUE;
}

static void make_tmpdir(LoopdFixture *f) {
        /* Short: the bus and notify sockets live here (sun_path is 108). */
        const char *base = g_get_tmp_dir();
        g_autofree char *template = NULL;
        char *real;

        if (strlen(base) > 64)
                base = "/tmp";
        template = g_build_filename(base, "loopd-test-XXXXXX", NULL);
        if (!g_mkdtemp_full(template, 0755))
                fixture_fail("mkdtemp %s: %s", template, g_strerror(errno));
        /* mkdtemp's mode is masked by the umask: other uids must reach the
         * bus socket and the images. */
        if (chmod(template, 0755) < 0)
                fixture_fail("chmod %s: %s", template, g_strerror(errno));
        /* The kernel reports backing files by canonical path. */
        real = realpath(template, NULL);
        if (!real)
                fixture_fail("realpath %s: %s", template, g_strerror(errno));
        f->tmpdir = g_strdup(real);
        free(real);
}

static void make_dir(const char *path, mode_t mode) {
        if (mkdir(path, mode) < 0 || chmod(path, mode) < 0)
                fixture_fail("mkdir %s: %s", path, g_strerror(errno));
}

void loopd_fixture_setup(LoopdFixture *f, gconstpointer data) {
        const LoopdFixtureOptions *o = data;
        const char *wd_env = g_getenv("LOOPD_TEST_WATCHDOG_SEC");
        guint watchdog;

        memset(f, 0, sizeof *f);
        f->priv = g_new0(LoopdFixturePrivate, 1);
        f->priv->crash_loops_id = f->priv->crash_tmpdir_id = -1;
        f->priv->notify_fd = -1;
        f->priv->lifeline_fd = -1;
        f->priv->callers = g_ptr_array_new();
        f->priv->fuse_mounts = g_ptr_array_new();

        if (!skip_unless_runnable(f)) {
                f->skipped = TRUE;
                return;
        }
        {
                int r = emergency_init(EMERGENCY_INIT_JANITOR);
                if (r < 0)
                        fixture_fail("emergency cleanup: %s", g_strerror(-r));
        }

        make_tmpdir(f);
        /* The temp dir goes after the loop devices it backs (the cleanup's
         * order), and before anything is made in it. */
        f->priv->crash_tmpdir_id = emergency_add_path(f->tmpdir);
        f->priv->crash_loops_id = emergency_add_loops_under(f->tmpdir);
        if (f->priv->crash_tmpdir_id < 0 || f->priv->crash_loops_id < 0)
                fixture_fail("registering %s for the emergency cleanup: %s", f->tmpdir,
                             g_strerror(-MIN(f->priv->crash_tmpdir_id, f->priv->crash_loops_id)));
        f->image_dir = g_build_filename(f->tmpdir, "images", NULL);
        f->state_dir = g_build_filename(f->tmpdir, "state", NULL);
        f->service_dir = g_build_filename(f->tmpdir, "services", NULL);
        make_dir(f->image_dir, 0755);
        make_dir(f->state_dir, 0700);
        make_dir(f->service_dir, 0755);
        f->priv->activated_dir = g_build_filename(f->tmpdir, "activated", NULL);
        make_dir(f->priv->activated_dir, 0755);

        watchdog = o && o->watchdog_sec ? o->watchdog_sec : wd_env ? (guint) atoi(wd_env) : 300;
        {
                g_autofree char *msg = g_strdup_printf("loopd-fixture: watchdog: test %s did not finish in time "
                                                       "(LOOPD_TEST_WATCHDOG_SEC); killing it",
                                                       g_test_get_path() ? g_test_get_path() : "(no test)");
                emergency_set_alarm_message(msg);
        }
        alarm((guint) (watchdog * loopd_test_timeout_scale()));

        start_bus(f);

        if (o && o->start_polkit && !loopd_fixture_start_polkit(f, o->polkit_rules))
                return;
        if (o && o->start_daemon && !loopd_fixture_start_daemon(f, o->daemon_args))
                return;
}

void loopd_fixture_teardown(LoopdFixture *f, gconstpointer data) {
        guint leaked;

        if (!f->priv)
                return;
        alarm(0);

        /* Before anything is stopped: a process blocked in a FUSE request
         * (loopd in LOOP_CONFIGURE, a caller in open()) could not exit. */
        fixture_fuse_abort_all(f);

        /* Callers first, then loopd (whose exit status matters), polkitd,
         * and the bus last: loopd must not see its bus vanish first. */
        while (f->priv->callers->len > 0)
                loopd_caller_free(f->priv->callers->pdata[0]);
        if (f->priv->daemon_pid > 0)
                loopd_fixture_stop_daemon(f);
        if (f->bus) {
                /* An activated loopd: SIGTERM, and it must exit 0 like ours. */
                pid_t activated = loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME);
                if (loopd_fixture_stop_name_owner(f, LOOPD_BUS_NAME) && f->priv->activated_loopd) {
                        int st = loopd_fixture_activated_exit_status(f, activated, 10);
                        g_autofree char *why = describe_status(st);
                        if (st == -1)
                                fixture_fail("activated loopd (pid %d) left no exit status", (int) activated);
                        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
                                fixture_fail("activated loopd (pid %d) did not exit cleanly on SIGTERM: %s",
                                             (int) activated, why);
                }
        }
        if (f->priv->activated_loopd && f->priv->activated_dir)
                check_activated_exits(f);
        /* Whatever else was activated dies with its lifeline now. */
        if (f->priv->lifeline_fd >= 0) {
                close(f->priv->lifeline_fd);
                f->priv->lifeline_fd = -1;
        }
        loopd_fixture_stop_polkit(f);
        stop_bus(f);

        if (f->tmpdir) {
                leaked = detach_loops_until_gone(f);
                if (leaked > 0)
                        g_test_message("teardown detached %u loop device(s) backed by files under %s", leaked,
                                       f->tmpdir);
                fixture_fuse_unmount_all(f);
                close_notify_socket(f);
                if (emergency_rm_rf(f->tmpdir) < 0 || g_file_test(f->tmpdir, G_FILE_TEST_EXISTS))
                        fixture_fail("could not remove %s", f->tmpdir);
        }
        emergency_forget(f->priv->crash_loops_id);
        emergency_forget(f->priv->crash_tmpdir_id);

        g_ptr_array_unref(f->priv->callers);
        g_ptr_array_unref(f->priv->fuse_mounts);
        g_strfreev(f->priv->daemon_args);
        g_free(f->priv->daemon_status);
        g_free(f->priv->status_snapshot);
        g_mutex_clear(&f->priv->notify_lock);
        g_cond_clear(&f->priv->notify_cond);
        g_free(f->priv->notify_path);
        g_free(f->priv->actions_dir);
        g_free(f->priv->rules_dir);
        g_free(f->priv->empty_dir);
        g_free(f->priv->lifeline_fifo);
        g_free(f->priv->activated_dir);
        g_clear_pointer(&f->priv, g_free);
        g_clear_pointer(&f->tmpdir, g_free);
        g_clear_pointer(&f->image_dir, g_free);
        g_clear_pointer(&f->state_dir, g_free);
        g_clear_pointer(&f->service_dir, g_free);
        g_clear_pointer(&f->bus_address, g_free);
}

LoopdFixture *loopd_fixture_new(const LoopdFixtureOptions *options) {
        LoopdFixture *f = g_new0(LoopdFixture, 1);
        loopd_fixture_setup(f, options);
        return f;
}

void loopd_fixture_free(LoopdFixture *f) {
        if (!f)
                return;
        loopd_fixture_teardown(f, NULL);
        g_free(f);
}
