/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * CreateFromPath as an attacker uses it: the helper that opens the path
 * must give the caller nothing it could not open itself.
 *
 * The attack that worked once: the helper was forked from loopd and kept
 * every fd loopd held, among them the backing fds of other callers whose
 * requests were waiting for polkit. CreateFromPath("/proc/self/fd/N")
 * reopened loopd's fd N, and a reopen through /proc checks only the file's
 * own mode, not the directories above it: nobody got a device backed by
 * another user's file in a 0700 directory.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "security-common.h"

#define NOBODY 65534
#define VICTIM 1 /* daemon */

static const char rules_users_may_create[] =
        LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE) LOOPD_RULE_ALLOW("daemon", LOOPD_ACTION_CREATE);

static const char *const long_polkit_timeout[] = { "--polkit-timeout=120", NULL };
static const LoopdFixtureOptions opts = {
        .start_polkit = TRUE,
        .polkit_rules = rules_users_may_create,
        .start_daemon = TRUE,
        .daemon_args = long_polkit_timeout,
};

/* The fd numbers loopd has open whose target ends in @suffix, and the
 * highest fd number it has open at all. */
static GArray *loopd_fds_to(pid_t pid, const char *suffix, int *max_fd) {
        g_autofree char *dir = g_strdup_printf("/proc/%d/fd", (int) pid);
        GArray *hits = g_array_new(FALSE, FALSE, sizeof(int));
        DIR *d = opendir(dir);
        struct dirent *de;

        *max_fd = -1;
        g_assert_nonnull(d);
        while ((de = readdir(d))) {
                char link[PATH_MAX], target[PATH_MAX];
                ssize_t n;
                int fd;

                if (de->d_name[0] == '.')
                        continue;
                fd = atoi(de->d_name);
                if (fd > *max_fd)
                        *max_fd = fd;
                snprintf(link, sizeof(link), "%s/%s", dir, de->d_name);
                n = readlink(link, target, sizeof(target) - 1);
                if (n <= 0)
                        continue;
                target[n] = 0;
                if (g_str_has_suffix(target, suffix))
                        g_array_append_val(hits, fd);
        }
        closedir(d);
        return hits;
}

static void test_no_fd_of_loopd_reaches_the_caller(LoopdFixture *f, gconstpointer data) {
        g_autofree char *victim_dir = NULL, *secret = NULL;
        g_autoptr(LoopdCaller) victim = NULL;
        g_autoptr(GArray) held = NULL;
        g_autofree char *line = NULL;
        pid_t loopd;
        int max_fd = -1;
        guint probes = 0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (strstr(g_getenv("LOOPD_TEST_WRAPPER") ? g_getenv("LOOPD_TEST_WRAPPER") : "", "valgrind")) {
                /* Under valgrind the helper, forked but never exec'ed, is
                 * valgrind's too: valgrind keeps fds of its own there that
                 * close_range() may not close, so this would probe
                 * valgrind, not loopd. */
                g_test_skip("the helper would run under valgrind, which keeps fds of its own in it");
                return;
        }
        loopd = loopd_fixture_daemon_pid(f);

        /* The victim's file: readable by all, in a directory only it may enter. */
        victim_dir = g_build_filename(f->image_dir, "victim-private", NULL);
        g_assert_no_errno(mkdir(victim_dir, 0700));
        g_assert_no_errno(chown(victim_dir, VICTIM, VICTIM));
        secret = g_build_filename(victim_dir, "secret.img", NULL);
        {
                int fd = open(secret, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
                g_assert_cmpint(fd, >=, 0);
                g_assert_no_errno(ftruncate(fd, 1 << 20));
                g_assert_no_errno(fchown(fd, VICTIM, VICTIM));
                close(fd);
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                const char *argv[] = { "cat", secret, NULL };
                loopd_fixture_run_as(f, NOBODY, NOBODY, argv, &r);
                g_assert_cmpint(r.status, !=, 0); /* nobody cannot reach it alone */
        }

        /* The victim's request waits for polkit, with its fd inside loopd. */
        loopd_fixture_hang_polkit(f);
        victim = loopd_fixture_spawn_caller_as(f, VICTIM, VICTIM, "create", secret, "--hold", NULL);
        for (int i = 0; i < 200; i++) {
                g_clear_pointer(&held, g_array_unref);
                held = loopd_fds_to(loopd, "/secret.img", &max_fd);
                if (held->len > 0)
                        break;
                g_usleep(50 * 1000);
        }
        g_assert_cmpuint(held->len, >, 0);
        g_test_message("loopd holds the victim's file as fd %d (highest fd %d)", g_array_index(held, int, 0), max_fd);

        /* nobody probes every fd number loopd uses, through every name for
         * "my own fd N". A probe the helper could open would go on to
         * polkit, which hangs: so an answer within the caller's timeout
         * means the open failed. */
        for (int n = 0; n <= max_fd + 4; n++) {
                g_autofree char *p1 = g_strdup_printf("/proc/self/fd/%d", n);
                g_autofree char *p2 = g_strdup_printf("/dev/fd/%d", n);
                g_autofree char *p3 = g_strdup_printf("/proc/thread-self/fd/%d", n);
                g_autofree char *p4 = g_strdup_printf("/proc/%d/fd/%d", (int) loopd, n);
                const char *paths[] = { p1, p2, p3, p4 };

                for (size_t k = 0; k < G_N_ELEMENTS(paths); k++) {
                        g_auto(LoopdRunResult) r = { 0 };
                        gint64 t0 = g_get_monotonic_time();

                        loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "--timeout=6", "create-from-path", paths[k],
                                              "--opt", "read-only=b:true", NULL);
                        if (r.fields && r.fields[0] && strcmp(r.fields[0], "ok") == 0)
                                g_error("nobody got a device from %s: %s", paths[k], r.out);
                        if (g_get_monotonic_time() - t0 > 4 * G_USEC_PER_SEC)
                                g_error("nobody's CreateFromPath(%s) was not refused at once (it waited for "
                                        "polkit, so the helper opened it): %s",
                                        paths[k], r.out);
                        probes++;
                }
        }
        g_test_message("%u probes, all refused before polkit", probes);

        /* The victim is served once polkit answers. */
        loopd_fixture_resume_polkit(f);
        line = loopd_caller_read_line(victim);
        g_assert_nonnull(line);
        g_assert_true(g_str_has_prefix(line, "ok "));
        loopd_caller_close_stdin(victim);
        g_assert_cmpint(loopd_caller_wait(victim), ==, 0);
        {
                g_auto(SecCall) c = { 0 };
                g_auto(GStrv) parts = g_strsplit(line, " ", 3);
                g_autofree char *args = g_strdup_printf("('%s',)", parts[2]);
                sec_call(f, 0, "Remove", args, -1, FALSE, &c);
                g_assert_true(c.ok);
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

int main(int argc, char **argv) {
        sec_helper_main_if_requested(argc, argv);
        g_test_init(&argc, &argv, NULL);
        g_test_add("/security/path-helper/no-fd-of-loopd-reaches-the-caller", LoopdFixture, &opts,
                   loopd_fixture_setup, test_no_fd_of_loopd_reaches_the_caller, loopd_fixture_teardown);
        return g_test_run();
}
