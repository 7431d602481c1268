/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * `loopctl with FILE -- CMD` against the real loopd: the device lives as
 * long as CMD, CMD never outlives the device (loopctl killed, even with
 * SIGKILL; CMD ignoring SIGTERM; what CMD started in other sessions), a
 * non-root owner can use the device through its node, and a detach the
 * kernel has to defer is reported.
 */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-test.h"


static const LoopdFixtureOptions daemon_only = { .start_daemon = TRUE };
static const LoopdFixtureOptions with_polkit = {
        .start_daemon = TRUE,
        .start_polkit = TRUE,
        .polkit_rules =
                "polkit.addRule(function(action, subject) {\n"
                "  if (action.id == 'org.loopd.create') return polkit.Result.YES;\n"
                "  if (action.id == 'org.loopd.manage-others') return polkit.Result.NO;\n"
                "});\n",
};

static bool pid_alive(pid_t pid) {
        return kill(pid, 0) == 0;
}

/* Polls (scaled) until pid is gone; a zombie of someone else's counts as
 * alive, so the guardian must have reaped it. */
static bool wait_pid_gone(pid_t pid, double timeout_sec) {
        gint64 end = g_get_monotonic_time() + (gint64) (timeout_sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        while (pid_alive(pid)) {
                if (g_get_monotonic_time() > end)
                        return false;
                g_usleep(20 * 1000);
        }
        return true;
}

/* Reads "WORD WORD ..." printed by a background `with`'s CMD. */
static char **read_words(LoopdCaller *c) {
        g_autofree char *line = loopd_caller_read_line(c);

        g_assert_nonnull(line);
        return g_strsplit(line, " ", -1);
}

static void test_with_runs_command_and_removes(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_auto(GStrv) lines = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with.img", 1 * MIB, 0, 0, 0644);

        client_loopctl_as(f, 0, &r, "with", img, "--read-only", "--",
                          "sh", "-c",
                          "test -b \"$LOOP_DEVICE\" || exit 90;"
                          "test \"$1\" = \"$LOOP_DEVICE\" || exit 91;"
                          "echo \"$LOOP_DEVICE\"; echo \"$2\";"
                          "test -w \"$LOOP_DEVICE\" && blockdev --getro \"$LOOP_DEVICE\";"
                          "exit 7",
                          "sh", "{}", "x{}y", NULL);
        g_assert_cmpint(r.status, ==, 7);
        g_assert_cmpstr(r.err, ==, "");
        lines = g_strsplit(r.out, "\n", -1);
        g_assert_true(g_str_has_prefix(lines[0], "/dev/loop"));
        dev = g_strdup(lines[0]);
        g_assert_nonnull(lines[1]);
        {
                g_autofree char *xy = g_strdup_printf("x%sy", dev);
                g_assert_cmpstr(lines[1], ==, xy);
        }
        /* --read-only reached the device. */
        if (lines[2] && *lines[2])
                g_assert_cmpstr(lines[2], ==, "1");
        /* Removed by loopctl once CMD exited (judged by backing file: loopN
         * may be someone else's already). */
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

static void test_with_exit_statuses(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-status.img", 1 * MIB, 0, 0, 0644);
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "with", img, "--", "true", NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "with", img, "--", "/nonexistent/command", NULL);
                g_assert_cmpint(r.status, ==, 127);
                client_assert_one_error_line(&r, "/nonexistent/command");
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                client_loopctl_as(f, 0, &r, "with", img, "--", "sh", "-c", "kill -TERM $$", NULL);
                g_assert_cmpint(r.status, ==, 128 + SIGTERM);
        }
        /* CMD removed the device itself: not an error. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                g_autofree char *cmd = g_strdup_printf("%s remove \"$LOOP_DEVICE\"", client_loopctl());
                client_loopctl_as(f, 0, &r, "with", img, "--", "sh", "-c", cmd, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_assert_cmpstr(r.err, ==, "");
        }
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

/* loopctl gets no chance to do anything: the guardian tells CMD (SIGTERM,
 * which this CMD answers by writing a mark and exiting), and loopd removes
 * the device when loopctl's connection closes. */
static void test_with_killed_loopctl_stops_command(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *mark = NULL, *script = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        g_auto(GStrv) w = NULL;
        pid_t pid;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-kill.img", 1 * MIB, 0, 0, 0644);
        mark = g_build_filename(f->tmpdir, "told", NULL);
        script = g_strdup_printf("trap 'echo told > %s; exit 0' TERM; echo \"$LOOP_DEVICE $$\"; "
                                 "while :; do sleep 0.05; done", mark);
        c = loopd_fixture_spawn_as(f, 0, 0, (const char *const[]) {
                client_loopctl(), "with", img, "--", "sh", "-c", script, NULL });
        w = read_words(c);
        pid = (pid_t) atoi(w[1]);
        g_assert_true(client_loop_attached(w[0]));

        loopd_caller_kill(c, SIGKILL);
        (void) loopd_caller_wait(c);
        g_assert_true(wait_pid_gone(pid, 5));
        g_assert_true(g_file_test(mark, G_FILE_TEST_EXISTS));
        g_assert_true(loopd_fixture_wait_no_loops(f, 10));
}

/* CMD ignores SIGTERM (and so do its children, which inherit that) and has
 * started a process in a session of its own: SIGKILL after the grace time
 * reaches both. */
static void test_with_killed_loopctl_kills_what_ignores_sigterm(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        g_auto(GStrv) w = NULL;
        pid_t pid, escaped;
        gint64 start;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-stubborn.img", 1 * MIB, 0, 0, 0644);
        c = loopd_fixture_spawn_as(f, 0, 0, (const char *const[]) {
                client_loopctl(), "with", img, "--", "sh", "-c",
                "trap '' TERM; setsid sleep 600 & echo \"$LOOP_DEVICE $$ $!\"; while :; do sleep 0.05; done",
                NULL });
        w = read_words(c);
        pid = (pid_t) atoi(w[1]);
        escaped = (pid_t) atoi(w[2]);
        g_assert_true(pid_alive(pid) && pid_alive(escaped));

        start = g_get_monotonic_time();
        loopd_caller_kill(c, SIGKILL);
        (void) loopd_caller_wait(c);
        /* Not before the grace time: they were told and may finish. */
        g_usleep(2 * G_USEC_PER_SEC);
        g_assert_true(pid_alive(pid));
        g_assert_true(wait_pid_gone(pid, 10));
        g_assert_true(wait_pid_gone(escaped, 10));
        g_assert_cmpint(g_get_monotonic_time() - start, >=, 4 * G_USEC_PER_SEC);
        g_assert_true(loopd_fixture_wait_no_loops(f, 10));
}

static void test_with_forwards_sigterm(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        g_auto(GStrv) w = NULL;
        pid_t pid;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-term.img", 1 * MIB, 0, 0, 0644);
        c = loopd_fixture_spawn_as(f, 0, 0, (const char *const[]) {
                client_loopctl(), "with", img, "--", "sh", "-c", "echo \"$LOOP_DEVICE $$\"; exec sleep 600", NULL });
        w = read_words(c);
        pid = (pid_t) atoi(w[1]);

        /* SIGTERM to loopctl alone reaches CMD; loopctl then cleans up and
         * exits with CMD's status. */
        loopd_caller_kill(c, SIGTERM);
        g_assert_cmpint(loopd_caller_wait(c), ==, 128 + SIGTERM);
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
        g_assert_false(pid_alive(pid));
}

/* What CMD leaves running is stopped before loopctl removes the device and
 * exits: loopctl's exit means nothing of CMD's is left. */
static void test_with_stops_what_command_left_running(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        pid_t left;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-left.img", 1 * MIB, 0, 0, 0644);
        client_loopctl_as(f, 0, &r, "with", img, "--", "sh", "-c",
                          "exec 3<\"$LOOP_DEVICE\"; setsid sleep 600 >/dev/null 2>&1 & echo $!", NULL);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_cmpstr(r.err, ==, "");
        g_strchomp(r.out);
        left = (pid_t) atoi(r.out);
        g_assert_cmpint(left, >, 0);
        g_assert_false(pid_alive(left));
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

static void test_with_reports_a_failed_removal(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *line = NULL;
        g_autoptr(LoopdCaller) c = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-nodaemon.img", 1 * MIB, 0, 0, 0644);
        /* CMD waits for its stdin (loopctl's, a pipe from us) to close. */
        c = loopd_fixture_spawn_as(f, 0, 0, (const char *const[]) {
                client_loopctl(), "with", img, "--", "sh", "-c", "echo \"$LOOP_DEVICE\"; cat >/dev/null", NULL });
        line = loopd_caller_read_line(c);
        g_assert_nonnull(line);
        g_assert_true(g_str_has_prefix(line, "/dev/loop"));

        /* With the daemon gone, CMD succeeds but loopctl cannot remove the
         * device: that must not look like success. */
        (void) loopd_fixture_terminate_daemon(f);
        loopd_caller_close_stdin(c);
        g_assert_cmpint(loopd_caller_wait(c), ==, 1);
}

/* Something outside CMD still holds the device when CMD is done: the kernel
 * defers the detach to the last close. loopctl waits a moment, then says
 * so and exits 1; the device goes when the holder lets go. */
static void test_with_reports_a_deferred_detach(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *line = NULL, *err_path = NULL, *cmdline = NULL, *err = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        uint64_t seq;
        int holder;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-held.img", 1 * MIB, 0, 0, 0644);
        err_path = g_build_filename(f->tmpdir, "with-held.err", NULL);
        cmdline = g_strdup_printf("exec %s with %s -- sh -c 'echo \"$LOOP_DEVICE\"; cat >/dev/null' 2>%s",
                                  client_loopctl(), img, err_path);
        c = loopd_fixture_spawn_as(f, 0, 0, (const char *const[]) { "/bin/sh", "-c", cmdline, NULL });
        line = loopd_caller_read_line(c);
        g_assert_nonnull(line);
        seq = client_loop_diskseq(line);
        holder = open(line, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(holder, >=, 0);

        loopd_caller_close_stdin(c);
        g_assert_cmpint(loopd_caller_wait(c), ==, 1);
        g_assert_true(g_file_get_contents(err_path, &err, NULL, NULL));
        if (!strstr(err, "still open elsewhere") || !strstr(err, line))
                g_error("loopctl said: '%s'", err);
        g_assert_cmpuint(client_loop_diskseq(line), ==, seq);

        close(holder);
        g_assert_true(client_wait_gone(line, seq, 5));
}

/* The headline, as a user who is not root: mkfs, fsck and dd on the
 * device through its node. */
static void test_with_as_owner_uses_the_node(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *mkfs = g_find_program_in_path("mkfs.ext4");
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "with-owner.img", 8 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        client_loopctl_as(f, LOOPD_TEST_NOBODY, &r, "with", img, "--", "sh", "-c",
                          "dd if=/dev/zero of={} bs=4096 count=4 conv=notrunc status=none || exit 10;"
                          "test -r \"$LOOP_DEVICE\" -a -w \"$LOOP_DEVICE\" || exit 11;"
                          "command -v mkfs.ext4 >/dev/null || exit 0;"
                          "mkfs.ext4 -q -F {} || exit 12;"
                          "fsck.ext4 -n {} >/dev/null 2>&1 || exit 13",
                          NULL);
        if (r.status != 0)
                g_error("with as nobody: exit %d: %s", r.status, r.err);
        g_assert_cmpstr(r.err, ==, "");
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
        if (!mkfs)
                g_test_message("no mkfs.ext4 here: only dd was tried");
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn, opts) \
        g_test_add(path, LoopdFixture, opts, loopd_fixture_setup, fn, loopd_fixture_teardown)

        ADD("/loopctl/with/runs-command-and-removes", test_with_runs_command_and_removes, &daemon_only);
        ADD("/loopctl/with/exit-statuses", test_with_exit_statuses, &daemon_only);
        ADD("/loopctl/with/killed-loopctl-stops-command", test_with_killed_loopctl_stops_command, &daemon_only);
        ADD("/loopctl/with/killed-loopctl-kills-what-ignores-sigterm",
            test_with_killed_loopctl_kills_what_ignores_sigterm, &daemon_only);
        ADD("/loopctl/with/forwards-sigterm", test_with_forwards_sigterm, &daemon_only);
        ADD("/loopctl/with/stops-what-command-left-running", test_with_stops_what_command_left_running, &daemon_only);
        ADD("/loopctl/with/reports-a-failed-removal", test_with_reports_a_failed_removal, &daemon_only);
        ADD("/loopctl/with/reports-a-deferred-detach", test_with_reports_a_deferred_detach, &daemon_only);
        ADD("/loopctl/with/as-owner-uses-the-node", test_with_as_owner_uses_the_node, &with_polkit);

        return g_test_run();
}
