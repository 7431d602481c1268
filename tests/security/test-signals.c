/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Signals: only SIGTERM and SIGINT end loopd, and then cleanly (status 0).
 *
 * A signal whose default action is to terminate, and that loopd neither
 * handles nor ignores, ends it with its devices' owners' access still
 * granted and its bound callers unwatched. Anyone allowed to signal it
 * (root, the service manager on reload, a stray `kill -HUP` meant for
 * another daemon, a tty hangup) would take the service down: SIGHUP once
 * ended loopd with status 129. SIGHUP is documented to do nothing (there is
 * no configuration to reload); the others are ignored.
 */

#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "hostile.h"

static const LoopdFixtureOptions daemon_only = { .start_daemon = TRUE };

static void test_stray_signals_do_not_end_loopd(LoopdFixture *f, gconstpointer data) {
        /* Every signal whose default action ends a process, but those meant
         * to end it (TERM, INT), to dump core (QUIT, ABRT, SEGV...) or that
         * cannot be caught (KILL, STOP). */
        const int stray[] = { SIGHUP, SIGUSR1, SIGUSR2, SIGPIPE, SIGALRM, SIGVTALRM, SIGPROF, SIGIO, SIGPWR,
                              SIGSTKFLT, SIGXCPU, SIGXFSZ };
        g_autofree char *img = NULL, *log = NULL;
        RootLatency lat;
        pid_t pid;
        int st;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!hostile_start_daemon_logged(f, NULL, &log))
                return;
        img = loopd_fixture_make_image(f, "root.img", 1 << 20, 0, 0, 0600);
        pid = loopd_fixture_daemon_pid(f);

        /* One at a time, each followed by a Ping: a failure names the
         * signal that ended loopd. */
        for (size_t i = 0; i < G_N_ELEMENTS(stray) + (size_t) (SIGRTMAX - SIGRTMIN + 1); i++) {
                int sig = i < G_N_ELEMENTS(stray) ? stray[i] : SIGRTMIN + (int) (i - G_N_ELEMENTS(stray));
                g_autoptr(GError) error = NULL;

                g_assert_no_errno(kill(pid, sig));
                if (root_ping_msec(f, 5000, &error) < 0 || waitpid(pid, &st, WNOHANG) != 0) {
                        if (waitpid(pid, &st, 0) == pid && WIFSIGNALED(st))
                                g_error("loopd died of signal %d (%s), wait status 0x%x: a stray signal must not end "
                                        "it", WTERMSIG(st), strsignal(WTERMSIG(st)), (unsigned) st);
                        g_error("loopd stopped answering after signal %d (%s): %s", sig, strsignal(sig),
                                error ? error->message : "it exited");
                }
        }
        g_test_message("sent %zu stray signals and SIGRTMIN..SIGRTMAX (%d..%d), one by one", G_N_ELEMENTS(stray),
                       SIGRTMIN, SIGRTMAX);

        /* Still there, still serving root, in full. */
        root_latency_sample(f, img, 3, 10000, &lat);
        g_assert_cmpint(waitpid(pid, &st, WNOHANG), ==, 0);
        g_assert_cmpuint(lat.failed, ==, 0);
        g_test_message("after %zu stray signals and the real-time ones: root's Ping %.1f ms, GetManagedObjects "
                       "%.1f ms, Create+Remove %.1f ms",
                       G_N_ELEMENTS(stray), lat.ping_msec, lat.objects_msec, lat.create_msec);

        /* SIGHUP is documented to do nothing; loopd says so. */
        {
                g_autofree char *line = hostile_log_wait_line(log, 5, "SIGHUP", NULL);
                g_assert_nonnull(line);
                g_test_message("loopd logged: %s", line);
        }

        /* SIGTERM: a clean exit. */
        st = loopd_fixture_terminate_daemon(f);
        g_assert_true(WIFEXITED(st));
        g_assert_cmpint(WEXITSTATUS(st), ==, 0);
        g_assert_true(loopd_fixture_wait_name(f, LOOPD_BUS_NAME, FALSE, 10));
}

static void test_sigint_is_a_clean_exit(LoopdFixture *f, gconstpointer data) {
        int st;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        g_assert_no_errno(kill(loopd_fixture_daemon_pid(f), SIGINT));
        st = loopd_fixture_wait_daemon_exit(f, 20);
        g_assert_cmpint(st, !=, -1);
        g_assert_true(WIFEXITED(st));
        g_assert_cmpint(WEXITSTATUS(st), ==, 0);
}

int main(int argc, char **argv) {
        static const LoopdFixtureOptions bus_only = { 0 };

        g_test_init(&argc, &argv, NULL);
        g_test_add("/security/signals/stray-signals-do-not-end-loopd", LoopdFixture, &bus_only, loopd_fixture_setup,
                   test_stray_signals_do_not_end_loopd, loopd_fixture_teardown);
        g_test_add("/security/signals/sigint-is-a-clean-exit", LoopdFixture, &daemon_only, loopd_fixture_setup,
                   test_sigint_is_a_clean_exit, loopd_fixture_teardown);
        return g_test_run();
}
