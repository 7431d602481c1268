/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Self-test of tests/lib/fixture: every other integration, security and
 * stress test trusts it to start what it says, to make real unprivileged
 * callers, and above all to leave nothing behind — no process, no loop
 * device, no temp dir — whether the test ends well, aborts or hangs.
 */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "fixture.h"

static const char rules_nobody_may_create[] = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE);

static const char rules_nobody_may_not_create[] = LOOPD_RULE_DENY("nobody", LOOPD_ACTION_CREATE);

/* The test process must have no child left at all, not even a zombie. */
static void assert_no_children(void) {
        int st;
        pid_t r = waitpid(-1, &st, WNOHANG);
        if (r != -1 || errno != ECHILD)
                g_error("a child process outlived the fixture (waitpid: %d)", (int) r);
}

static gboolean pid_gone(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int) pid);
        g_autofree char *text = NULL;
        const char *p;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return TRUE;
        p = strrchr(text, ')');
        return p && (p[2] == 'Z' || p[2] == 'X');
}

static void assert_pid_goes(pid_t pid) {
        for (int i = 0; i < 1000 && !pid_gone(pid); i++)
                g_usleep(10000);
        if (!pid_gone(pid))
                g_error("process %d is still alive", (int) pid);
}

static char *backing_file_of(const char *dev) {
        g_autofree char *path = g_strdup_printf("/sys/block/%s/loop/backing_file", dev + strlen("/dev/"));
        char *text = NULL;
        if (!g_file_get_contents(path, &text, NULL, NULL))
                return NULL;
        return g_strchomp(text);
}

/* Attaches as an outsider would. Retried: other tests attach devices at
 * the same time and losetup --find can lose the race for a free one. */
static char *losetup_attach(const char *image) {
        for (int attempt = 1;; attempt++) {
                g_autofree char *out = NULL, *err = NULL;
                g_autoptr(GError) error = NULL;
                int status;

                if (!g_spawn_sync(NULL, (char *[]) { "losetup", "--find", "--show", (char *) image, NULL }, NULL,
                                  G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error))
                        g_error("losetup: %s", error->message);
                if (g_spawn_check_wait_status(status, &error))
                        return g_strdup(g_strstrip(out));
                if (attempt == 5)
                        g_error("losetup --find --show %s: %s (%s)", image, error->message, err);
                g_usleep(g_random_int_range(10000, 50000));
        }
}

/* Field 5 of each line of /proc/self/mountinfo, unescaped enough for our
 * paths (no spaces in them). */
static GPtrArray *mount_points(void) {
        g_autofree char *text = NULL;
        g_auto(GStrv) lines = NULL;
        GPtrArray *mounts = g_ptr_array_new_with_free_func(g_free);

        g_assert_true(g_file_get_contents("/proc/self/mountinfo", &text, NULL, NULL));
        lines = g_strsplit(text, "\n", 0);
        for (char **l = lines; *l; l++) {
                g_auto(GStrv) fields = g_strsplit(*l, " ", 6);
                if (g_strv_length(fields) >= 5)
                        g_ptr_array_add(mounts, g_strdup(fields[4]));
        }
        return mounts;
}

static gboolean is_mounted(const char *path) {
        g_autoptr(GPtrArray) mounts = mount_points();
        for (guint i = 0; i < mounts->len; i++)
                if (g_str_equal(mounts->pdata[i], path))
                        return TRUE;
        return FALSE;
}

static gboolean is_mounted_under(const char *dir) {
        g_autoptr(GPtrArray) mounts = mount_points();
        g_autofree char *prefix = g_strconcat(dir, "/", NULL);
        for (guint i = 0; i < mounts->len; i++)
                if (g_str_equal(mounts->pdata[i], dir) || g_str_has_prefix(mounts->pdata[i], prefix))
                        return TRUE;
        return FALSE;
}

/* The mountinfo line of @path (free it), NULL if not a mount point. */
static char *mountinfo_of(const char *path) {
        g_autofree char *text = NULL, *needle = g_strdup_printf(" %s ", path);
        g_auto(GStrv) lines = NULL;

        g_assert_true(g_file_get_contents("/proc/self/mountinfo", &text, NULL, NULL));
        lines = g_strsplit(text, "\n", 0);
        for (char **l = lines; *l; l++)
                if (strstr(*l, needle))
                        return g_strdup(*l);
        return NULL;
}

/* State (field 3 of /proc/PID/stat) and wait channel of @pid. */
static char proc_state(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int) pid);
        g_autofree char *text = NULL;
        const char *p;

        if (!g_file_get_contents(path, &text, NULL, NULL) || !(p = strrchr(text, ')')))
                return 0;
        return p[2];
}

static char *proc_wchan(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/wchan", (int) pid);
        char *text = NULL;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return NULL;
        return text;
}

/* @pid is waiting for the FUSE server: asleep in request_wait_answer()
 * (where the kernel shows wait channels), and still so a moment later. */
static void assert_waits_for_fuse(pid_t pid) {
        g_autofree char *wchan = NULL;
        char state;

        g_usleep(200 * 1000);
        state = proc_state(pid);
        wchan = proc_wchan(pid);
        g_test_message("pid %d: state %c, wchan %s", (int) pid, state, wchan ? wchan : "(unreadable)");
        g_assert_true(state == 'S' || state == 'D');
        if (wchan && !g_str_equal(wchan, "0") && *wchan)
                g_assert_cmpstr(wchan, ==, "request_wait_answer");
}

/* ---- the bus alone ------------------------------------------------------- */

static void test_bus_only_comes_and_goes(void) {
        g_autofree char *tmpdir = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        LoopdFixture *f = loopd_fixture_new(NULL);
        struct stat st;

        if (f->skipped) {
                loopd_fixture_free(f);
                return;
        }
        tmpdir = g_strdup(f->tmpdir);

        /* Other uids must reach the socket and the images. */
        g_assert_cmpint(stat(f->tmpdir, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0755);
        g_assert_cmpint(stat(f->image_dir, &st), ==, 0);
        g_assert_cmpint(st.st_mode & 07777, ==, 0755);
        g_assert_cmpstr(g_getenv("DBUS_SYSTEM_BUS_ADDRESS"), ==, f->bus_address);
        g_assert_false(g_dbus_connection_is_closed(f->bus));

        /* An unprivileged uid connects to it, through sd-bus. */
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "connect", NULL);
        g_assert_cmpint(r.status, ==, 0);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        g_assert_true(g_str_has_prefix(r.fields[1], ":1."));

        /* Nobody owns loopd's name: a call is an error from the bus,
         * printed in the documented format. */
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "remove", "loop0", NULL);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_cmpstr(r.fields[0], ==, "error");
        g_assert_cmpstr(r.fields[1], ==, "org.freedesktop.DBus.Error.ServiceUnknown");

        loopd_fixture_free(f);
        g_assert_false(g_file_test(tmpdir, G_FILE_TEST_EXISTS));
        g_assert_null(g_getenv("DBUS_SYSTEM_BUS_ADDRESS"));
        assert_no_children();
}

static void test_run_as_is_a_real_unprivileged_caller(void) {
        g_autoptr(LoopdFixture) f = loopd_fixture_new(NULL);
        g_auto(LoopdRunResult) r = { 0 };

        if (f->skipped)
                return;

        loopd_fixture_run_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                             (const char *const[]) { "sh", "-c", "id -ru; id -u; id -rg; id -G; echo $DBUS_SYSTEM_BUS_ADDRESS", NULL },
                             &r);
        g_assert_cmpint(r.status, ==, 0);
        {
                g_autofree char *expect = g_strdup_printf("65534\n65534\n65534\n65534\n%s\n", f->bus_address);
                g_assert_cmpstr(r.out, ==, expect);
        }

        loopd_fixture_run_as_full(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, "100", "hello",
                                  (const char *const[]) { "sh", "-c", "id -G; cat; echo oops >&2; exit 3", NULL }, &r);
        g_assert_cmpint(r.status, ==, 3);
        g_assert_cmpstr(r.out, ==, "65534 100\nhello");
        g_assert_cmpstr(r.err, ==, "oops\n");

        loopd_fixture_run_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                             (const char *const[]) { "sh", "-c", "kill -9 $$", NULL }, &r);
        g_assert_cmpint(r.status, ==, 128 + SIGKILL);

        /* Usage errors of the test caller are exit 2, "error local". */
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", "/nonexistent", NULL);
        g_assert_cmpint(r.status, ==, 2);
        g_assert_cmpstr(r.fields[0], ==, "error");
        g_assert_cmpstr(r.fields[1], ==, "local");
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", "/dev/null", "--opt", "x=q:1",
                              NULL);
        g_assert_cmpint(r.status, ==, 2);
}

static void test_held_caller_lets_go_on_eof(void) {
        g_autoptr(LoopdFixture) f = loopd_fixture_new(NULL);
        g_autoptr(LoopdCaller) c = NULL;
        g_autofree char *line = NULL;

        if (f->skipped)
                return;

        c = loopd_fixture_spawn_caller_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, "connect", "--hold", NULL);
        line = loopd_caller_read_line(c);
        g_assert_nonnull(line);
        g_assert_true(g_str_has_prefix(line, "ok :1."));
        g_assert_true(loopd_fixture_wait_name(f, line + 3, TRUE, 0));

        loopd_caller_close_stdin(c);
        g_assert_cmpint(loopd_caller_wait(c), ==, 0);
        g_assert_true(loopd_fixture_wait_name(f, line + 3, FALSE, 5));
}

/* ---- images and loop devices --------------------------------------------- */

static void test_images_and_leaked_loops_are_cleaned(void) {
        LoopdFixture *f = loopd_fixture_new(NULL);
        g_autofree char *img = NULL, *dev = NULL, *backing = NULL, *tmpdir = NULL;
        g_autoptr(GPtrArray) loops = NULL;
        struct stat st;

        if (f->skipped) {
                loopd_fixture_free(f);
                return;
        }
        tmpdir = g_strdup(f->tmpdir);

        img = loopd_fixture_make_image(f, "disk.img", 1 << 20, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        g_assert_cmpint(stat(img, &st), ==, 0);
        g_assert_cmpint(st.st_size, ==, 1 << 20);
        g_assert_cmpint(st.st_uid, ==, LOOPD_TEST_NOBODY);
        g_assert_cmpint(st.st_mode & 07777, ==, 0600);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);

        /* A device the test "forgot": teardown must detach it. */
        dev = losetup_attach(img);
        loops = loopd_fixture_list_loops(f);
        g_assert_cmpuint(loops->len, ==, 1);
        g_assert_cmpstr(loops->pdata[0], ==, dev);

        loopd_fixture_free(f);
        backing = backing_file_of(dev);
        g_assert_true(backing == NULL || !g_str_has_prefix(backing, tmpdir));
        g_assert_false(g_file_test(tmpdir, G_FILE_TEST_EXISTS));
        assert_no_children();
}

/* ---- polkitd ----------------------------------------------------------- */

static void test_polkit_answers_by_the_rules(void) {
        static const LoopdFixtureOptions opts = {
                .start_polkit = TRUE,
                .polkit_rules = rules_nobody_may_create,
        };
        LoopdFixture *f = loopd_fixture_new(&opts);
        g_autoptr(LoopdCaller) nobody = NULL, daemon_user = NULL;
        g_autofree char *nobody_line = NULL, *daemon_line = NULL, *tmpdir = NULL;
        g_autoptr(GError) error = NULL;
        gboolean challenge = FALSE;
        pid_t polkitd;

        if (f->skipped) {
                loopd_fixture_free(f);
                return;
        }
        tmpdir = g_strdup(f->tmpdir);
        polkitd = loopd_fixture_polkitd_pid(f);
        g_assert_cmpint(polkitd, >, 0);

        /* Subjects as loopd will ask: system-bus-name of the caller. */
        nobody = loopd_fixture_spawn_caller_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, "connect", "--hold", NULL);
        nobody_line = loopd_caller_read_line(nobody);
        g_assert_true(g_str_has_prefix(nobody_line, "ok "));
        daemon_user = loopd_fixture_spawn_caller_as(f, 1, 1, "connect", "--hold", NULL);
        daemon_line = loopd_caller_read_line(daemon_user);
        g_assert_true(g_str_has_prefix(daemon_line, "ok "));

        /* The rule says yes for nobody... */
        g_assert_cmpint(loopd_fixture_polkit_check(f, nobody_line + 3, LOOPD_ACTION_CREATE, &challenge, 10000, &error),
                        ==, TRUE);
        g_assert_no_error(error);
        g_assert_false(challenge);
        /* ...the action's allow_any (auth_admin) answers for uid 1 (no
         * logind here: nobody is local or active)... */
        g_assert_cmpint(loopd_fixture_polkit_check(f, daemon_line + 3, LOOPD_ACTION_CREATE, &challenge, 10000, &error),
                        ==, FALSE);
        g_assert_no_error(error);
        g_assert_true(challenge);
        /* ...and manage-others is admin-only for everyone. */
        g_assert_cmpint(loopd_fixture_polkit_check(f, nobody_line + 3, LOOPD_ACTION_MANAGE_OTHERS, &challenge, 10000,
                                                   &error),
                        ==, FALSE);
        g_assert_no_error(error);
        g_assert_true(challenge);
        /* An action the policy does not declare is an error. */
        g_assert_cmpint(loopd_fixture_polkit_check(f, nobody_line + 3, "org.loopd.no-such-action", NULL, 10000, &error),
                        ==, -1);
        g_assert_nonnull(error);
        g_clear_error(&error);

        /* New rules take effect before set_polkit_rules returns. */
        loopd_fixture_set_polkit_rules(f, rules_nobody_may_not_create);
        g_assert_cmpint(loopd_fixture_polkit_check(f, nobody_line + 3, LOOPD_ACTION_CREATE, &challenge, 10000, &error),
                        ==, FALSE);
        g_assert_no_error(error);
        g_assert_false(challenge);
        loopd_fixture_set_polkit_rules(f, NULL);
        g_assert_cmpint(loopd_fixture_polkit_check(f, nobody_line + 3, LOOPD_ACTION_CREATE, &challenge, 10000, &error),
                        ==, FALSE);
        g_assert_true(challenge);

        /* Hung: it keeps its name and answers nothing. */
        loopd_fixture_hang_polkit(f);
        g_assert_cmpint(loopd_fixture_polkit_check(f, nobody_line + 3, LOOPD_ACTION_CREATE, NULL, 300, &error), ==, -1);
        g_assert_error(error, G_IO_ERROR, G_IO_ERROR_TIMED_OUT);
        g_clear_error(&error);
        g_assert_true(loopd_fixture_wait_name(f, LOOPD_POLKIT_BUS_NAME, TRUE, 0));
        loopd_fixture_resume_polkit(f);
        g_assert_cmpint(loopd_fixture_polkit_check(f, nobody_line + 3, LOOPD_ACTION_CREATE, NULL, 10000, &error), ==,
                        FALSE);
        g_assert_no_error(error);

        /* Stopped: gone from the bus, and a hung one is stopped as well. */
        loopd_fixture_hang_polkit(f);
        loopd_fixture_stop_polkit(f);
        g_assert_true(loopd_fixture_wait_name(f, LOOPD_POLKIT_BUS_NAME, FALSE, 0));
        assert_pid_goes(polkitd);
        g_assert_cmpint(loopd_fixture_polkit_check(f, nobody_line + 3, LOOPD_ACTION_CREATE, NULL, 10000, &error), ==, -1);
        g_assert_error(error, G_DBUS_ERROR, G_DBUS_ERROR_SERVICE_UNKNOWN);
        g_clear_error(&error);

        /* And it can come back. */
        g_assert_true(loopd_fixture_start_polkit(f, rules_nobody_may_create));
        polkitd = loopd_fixture_polkitd_pid(f);
        g_assert_cmpint(loopd_fixture_polkit_check(f, nobody_line + 3, LOOPD_ACTION_CREATE, NULL, 10000, &error), ==,
                        TRUE);

        g_clear_pointer(&nobody, loopd_caller_free);
        g_clear_pointer(&daemon_user, loopd_caller_free);
        loopd_fixture_free(f);
        assert_pid_goes(polkitd);
        g_assert_false(g_file_test(tmpdir, G_FILE_TEST_EXISTS));
        assert_no_children();
}

/* ---- the crash path ----------------------------------------------------- */

static char *crash_report_path(pid_t parent) {
        return g_strdup_printf("/tmp/loopd-test-fixture-crash-%d.txt", (int) parent);
}

/* Runs in a subprocess: sets up everything, records it, then dies as
 * LOOPD_TEST_CRASH_HOW says. */
static void crash_subprocess(const char *how) {
        static const LoopdFixtureOptions opts = {
                .start_polkit = TRUE,
                .polkit_rules = rules_nobody_may_create,
        };
        static const LoopdFixtureOptions watchdog_opts = { .watchdog_sec = 2 };
        static const LoopdFuseFile fuse_files[] = { { "hung.img", 1 << 20 }, { NULL } };
        gboolean watchdog = strcmp(how, "watchdog") == 0;
        gboolean fuse = g_str_has_prefix(how, "fuse-");
        LoopdFixture *f = loopd_fixture_new(watchdog ? &watchdog_opts : &opts);
        g_autofree char *img = NULL, *dev = NULL, *report = NULL, *line = NULL, *path = NULL;
        g_autofree char *fuse_dev = NULL, *fuse_img = NULL;
        LoopdCaller *c, *blocked = NULL;
        LoopdFuse *fs = NULL;

        g_assert_false(f->skipped);
        img = loopd_fixture_make_image(f, "crash.img", 1 << 20, 0, 0, 0644);
        dev = losetup_attach(img);
        c = loopd_fixture_spawn_caller_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, "connect", "--hold", NULL);
        line = loopd_caller_read_line(c);
        g_assert_nonnull(line);
        if (fuse) {
                /* A FUSE file system with a loop device on it, and a
                 * process blocked in it, in the kernel. */
                fs = loopd_fixture_mount_fuse(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, fuse_files);
                g_assert_nonnull(fs);
                fuse_img = loopd_fuse_path(fs, "hung.img");
                fuse_dev = losetup_attach(fuse_img);
                loopd_fuse_hang(fs, LOOPD_FUSE_OPEN);
                blocked = loopd_fixture_spawn_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                                                 (const char *const[]) { "cat", fuse_img, NULL });
                g_assert_true(loopd_fuse_wait_held_by(fs, LOOPD_FUSE_OPEN, loopd_caller_pid(blocked), 10));
        }

        report = g_strdup_printf("%s\n%d\n%d\n%d\n%s\n%s\n%s\n%d\n", f->tmpdir, (int) loopd_fixture_polkitd_pid(f),
                                 (int) loopd_caller_pid(c), (int) loopd_fixture_name_owner_pid(f, "org.freedesktop.DBus"),
                                 dev, fs ? loopd_fuse_mount_point(fs) : "-", fuse_dev ? fuse_dev : "-",
                                 blocked ? (int) loopd_caller_pid(blocked) : 0);
        path = crash_report_path(getppid());
        g_assert_true(g_file_set_contents(path, report, -1, NULL));

        if (fuse)
                how += strlen("fuse-");
        if (strcmp(how, "assert") == 0)
                g_assert_not_reached(); /* a failing g_assert: _exit(1) in a subprocess, abort() otherwise */
        else if (strcmp(how, "abort") == 0)
                abort();
        else if (strcmp(how, "sigkill") == 0)
                raise(SIGKILL);         /* meson's timeout, second try */
        else if (strcmp(how, "sigterm") == 0)
                raise(SIGTERM);         /* what meson's timeout does */
        else if (watchdog)
                for (;;)
                        pause();        /* a hung test */
        g_assert_not_reached();
}

static void check_crash_cleanup(const char *how) {
        g_autofree char *path = crash_report_path(getpid());
        g_autofree char *text = NULL, *backing = NULL;
        g_auto(GStrv) lines = NULL;

        if (g_test_subprocess()) {
                crash_subprocess(how);
                return;
        }
        if (geteuid() != 0) {
                g_test_skip("needs root");
                return;
        }
        if (g_str_has_prefix(how, "fuse-") && access("/dev/fuse", R_OK | W_OK) < 0) {
                g_test_skip("no /dev/fuse: needs a kernel with FUSE (Debian package fuse3 loads it)");
                return;
        }
        g_unlink(path);
        /* NULL: this same test, re-executed; it takes the branch above. */
        g_test_trap_subprocess(NULL, 120 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_INHERIT_STDERR);
        g_test_trap_assert_failed();

        g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
        g_unlink(path);
        lines = g_strsplit(text, "\n", 0);
        g_assert_cmpuint(g_strv_length(lines), >=, 5);

        /* tmpdir, polkitd (0 without), the held caller, dbus-daemon, loop
         * device. After _exit() or SIGKILL the janitor cleans up, a moment
         * after the process is gone. */
        for (int i = 0; i < 500 && g_file_test(lines[0], G_FILE_TEST_EXISTS); i++)
                g_usleep(10000);
        g_assert_false(g_file_test(lines[0], G_FILE_TEST_EXISTS));
        for (int i = 1; i <= 3; i++)
                if (atoi(lines[i]) > 0)
                        assert_pid_goes(atoi(lines[i]));
        backing = backing_file_of(lines[4]);
        g_assert_true(backing == NULL || !g_str_has_prefix(backing, lines[0]));
        /* With FUSE: the mount gone, the blocked process gone (it can only
         * go once the connection is aborted), its loop device detached. */
        g_assert_cmpuint(g_strv_length(lines), >=, 8);
        if (strcmp(lines[5], "-") != 0) {
                g_autofree char *fuse_backing = backing_file_of(lines[6]);
                assert_pid_goes(atoi(lines[7]));
                g_assert_false(is_mounted(lines[5]));
                g_assert_true(fuse_backing == NULL || !g_str_has_prefix(fuse_backing, lines[0]));
        }
        g_assert_false(is_mounted_under(lines[0]));
}

static void test_crash_on_assert_leaves_nothing(void) {
        check_crash_cleanup("assert");
}

static void test_crash_on_abort_leaves_nothing(void) {
        check_crash_cleanup("abort");
}

static void test_crash_on_sigkill_leaves_nothing(void) {
        check_crash_cleanup("sigkill");
}

static void test_crash_on_sigterm_leaves_nothing(void) {
        check_crash_cleanup("sigterm");
}

static void test_watchdog_kills_hung_test_and_cleans(void) {
        check_crash_cleanup("watchdog");
}

static void test_crash_on_abort_with_hung_fuse_leaves_nothing(void) {
        check_crash_cleanup("fuse-abort");
}

static void test_crash_on_sigkill_with_hung_fuse_leaves_nothing(void) {
        check_crash_cleanup("fuse-sigkill");
}

/* ---- a FUSE file system that stops answering -------------------------------- */

/* What od -An -tu1 prints, spaces squeezed: "0 1 2 ...". */
static char *squeeze(const char *s) {
        g_auto(GStrv) words = g_strsplit_set(s, " \n\t", 0);
        g_autoptr(GStrvBuilder) b = g_strv_builder_new();
        g_auto(GStrv) kept = NULL;

        for (char **w = words; *w; w++)
                if (**w)
                        g_strv_builder_add(b, *w);
        kept = g_strv_builder_end(b);
        return g_strjoinv(" ", kept);
}

static void test_fuse_serves_hangs_resumes_aborts_and_leaves_nothing(void) {
        static const LoopdFuseFile files[] = { { "disk.img", 1 << 20 }, { "private", 8192, 0600 }, { NULL } };
        LoopdFixture *f = loopd_fixture_new(NULL);
        g_autofree char *tmpdir = NULL, *mnt = NULL, *img = NULL, *info = NULL, *img2 = NULL, *mnt2 = NULL;
        g_autofree char *loop2 = NULL, *backing = NULL, *first = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        LoopdCaller *reader, *stuck, *stuck2;
        LoopdFuse *fs, *fs2;
        guint8 buf[4096];
        struct stat st;
        pid_t pid, stuck2_pid;
        int fd;

        if (f->skipped) {
                loopd_fixture_free(f);
                return;
        }
        tmpdir = g_strdup(f->tmpdir);
        fs = loopd_fixture_mount_fuse(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, files);
        if (!fs) {
                loopd_fixture_free(f);
                return;
        }
        mnt = g_strdup(loopd_fuse_mount_point(fs));
        img = loopd_fuse_path(fs, "disk.img");

        /* Mounted as fusermount3 would for nobody: a user's FUSE mount that
         * others (root included) may enter because of allow_other. */
        info = mountinfo_of(mnt);
        g_assert_nonnull(info);
        g_test_message("%s", info);
        g_assert_nonnull(strstr(info, " fuse.loopd-test "));
        g_assert_nonnull(strstr(info, "user_id=65534"));
        g_assert_nonnull(strstr(info, "allow_other"));
        g_assert_true(g_str_has_prefix(mnt, tmpdir));
        g_assert_no_errno(stat(img, &st));
        g_assert_true(S_ISREG(st.st_mode));
        g_assert_cmpint(st.st_mode & 07777, ==, 0644);
        g_assert_cmpint(st.st_uid, ==, LOOPD_TEST_NOBODY);
        g_assert_cmpint(st.st_size, ==, 1 << 20);
        {
                /* fusectl is there to abort connections by (the fixture
                 * mounts it where the host did not). */
                g_autofree char *abort_file = g_strdup_printf("/sys/fs/fuse/connections/%u/abort",
                                                              (unsigned) (major(st.st_dev) << 20 | minor(st.st_dev)));
                g_test_message("%s: %s", abort_file, g_file_test(abort_file, G_FILE_TEST_EXISTS) ? "present" : "absent");
        }

        /* Byte i is i % 251, read here as root and by nobody. */
        fd = open(img, O_RDONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pread(fd, buf, sizeof buf, 5000), ==, sizeof buf);
        for (size_t i = 0; i < sizeof buf; i++)
                g_assert_cmpuint(buf[i], ==, (5000 + i) % 251);
        close(fd);
        loopd_fixture_run_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                             (const char *const[]) { "od", "-An", "-tu1", "-j", "250", "-N", "4", img, NULL }, &r);
        g_assert_cmpint(r.status, ==, 0);
        first = squeeze(r.out);
        g_assert_cmpstr(first, ==, "250 0 1 2");
        g_assert_cmpuint(loopd_fuse_count(fs, LOOPD_FUSE_READ), >=, 2);

        /* OPEN withheld: an opener waits in the kernel until answered. */
        loopd_fuse_hang(fs, LOOPD_FUSE_OPEN);
        reader = loopd_fixture_spawn_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                                        (const char *const[]) { "od", "-An", "-tu1", "-N", "4", img, NULL });
        pid = loopd_caller_pid(reader);
        g_assert_true(loopd_fuse_wait_held_by(fs, LOOPD_FUSE_OPEN, pid, 10));
        assert_waits_for_fuse(pid);
        loopd_fuse_resume(fs);
        {
                g_autofree char *line = loopd_caller_read_line(reader);
                g_autofree char *got = NULL;
                g_assert_nonnull(line);
                got = squeeze(line);
                g_assert_cmpstr(got, ==, "0 1 2 3");
        }
        g_assert_cmpint(loopd_caller_wait(reader), ==, 0);
        loopd_caller_free(reader);

        /* READ withheld, and the reader killed: it cannot die while the
         * server holds its request (D state). Aborting the connection
         * frees it, and the file system then fails everything. */
        loopd_fuse_hang(fs, LOOPD_FUSE_READ);
        stuck = loopd_fixture_spawn_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                                       (const char *const[]) { "od", "-An", "-tu1", "-N", "4", img, NULL });
        pid = loopd_caller_pid(stuck);
        g_assert_true(loopd_fuse_wait_held_by(fs, LOOPD_FUSE_READ, pid, 10));
        assert_waits_for_fuse(pid);
        loopd_caller_kill(stuck, SIGKILL);
        g_usleep(300 * 1000);
        g_assert_cmpint(proc_state(pid), ==, 'D');
        loopd_fuse_abort(fs);
        g_assert_cmpint(loopd_caller_wait(stuck), ==, 128 + SIGKILL);
        loopd_caller_free(stuck);
        g_assert_cmpint(stat(img, &st), ==, -1);
        g_assert_cmpint(errno, ==, ENOTCONN);
        loopd_fuse_unmount(fs);
        g_assert_false(is_mounted(mnt));
        g_assert_false(g_file_test(mnt, G_FILE_TEST_EXISTS));

        /* Left for teardown: a loop device on a FUSE file, a process blocked
         * in OPEN (not GETATTR: every loopd on the machine stats the backing
         * files of the loop devices it sees). Teardown must abort, detach,
         * unmount, remove. */
        fs2 = loopd_fixture_mount_fuse(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, files);
        mnt2 = g_strdup(loopd_fuse_mount_point(fs2));
        g_assert_cmpstr(mnt2, !=, mnt);
        img2 = loopd_fuse_path(fs2, "disk.img");
        loop2 = losetup_attach(img2);
        backing = backing_file_of(loop2);
        g_assert_cmpstr(backing, ==, img2);
        loopd_fuse_hang(fs2, LOOPD_FUSE_OPEN);
        stuck2 = loopd_fixture_spawn_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                                        (const char *const[]) { "cat", img2, NULL });
        stuck2_pid = loopd_caller_pid(stuck2);
        g_assert_true(loopd_fuse_wait_held_by(fs2, LOOPD_FUSE_OPEN, stuck2_pid, 10));
        assert_waits_for_fuse(stuck2_pid);

        loopd_fixture_free(f);
        assert_pid_goes(stuck2_pid);
        g_clear_pointer(&backing, g_free);
        backing = backing_file_of(loop2);
        g_assert_true(backing == NULL || !g_str_has_prefix(backing, tmpdir));
        g_assert_false(is_mounted_under(tmpdir));
        g_assert_false(g_file_test(tmpdir, G_FILE_TEST_EXISTS));
        assert_no_children();
}

/* ---- activation -------------------------------------------------------- */

static void ping(LoopdFixture *f, const char *name) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = g_dbus_connection_call_sync(f->bus, name, "/", "org.freedesktop.DBus.Peer", "Ping",
                                                            NULL, NULL, G_DBUS_CALL_FLAGS_NONE, 30000, NULL, &error);
        g_assert_no_error(error);
}

/* The mechanism, with python3-dbusmock standing in for loopd. */
static void test_activation_starts_service_from_servicedir(void) {
        g_autoptr(LoopdFixture) f = loopd_fixture_new(NULL);
        g_autofree char *exec = NULL;
        pid_t pid;

        if (f->skipped)
                return;
        if (system("/usr/bin/python3 -c 'import dbusmock' 2>/dev/null") != 0) {
                g_test_skip("python3-dbusmock is not importable by /usr/bin/python3");
                return;
        }

        exec = g_strdup_printf("/usr/bin/python3 -m dbusmock --system %s %s %s", LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                               LOOPD_MANAGER_INTERFACE);
        loopd_fixture_install_activation_exec(f, LOOPD_BUS_NAME, exec);
        g_assert_cmpint(loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME), ==, 0);

        ping(f, LOOPD_BUS_NAME);
        pid = loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME);
        g_assert_cmpint(pid, >, 0);
        g_assert_cmpint(pid, !=, getpid());
        /* It stays: dbus-daemon's babysitter exits once the name is owned,
         * which is what the lifeline is for. */
        g_usleep(300000);
        g_assert_cmpint(loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME), ==, pid);

        g_assert_true(loopd_fixture_stop_name_owner(f, LOOPD_BUS_NAME));
        assert_pid_goes(pid);
        g_assert_cmpint(loopd_fixture_activated_exit_status(f, pid, 10), !=, -1);
        g_assert_false(loopd_fixture_stop_name_owner(f, LOOPD_BUS_NAME));

        /* Activated again, then left for the fixture: closing the lifeline
         * at teardown must take it down. */
        ping(f, LOOPD_BUS_NAME);
        pid = loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME);
        g_assert_cmpint(pid, >, 0);
        loopd_fixture_free(g_steal_pointer(&f));
        assert_pid_goes(pid);
}

/* ---- loopd itself (skips until the daemon is built) -------------------------- */

static void test_daemon_starts_restarts_and_stops_cleanly(LoopdFixture *f, gconstpointer data) {
        pid_t first;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        first = loopd_fixture_daemon_pid(f);
        g_assert_cmpint(first, >, 0);
        g_assert_cmpint(loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME), ==, first);

        loopd_fixture_kill_daemon(f);
        g_assert_cmpint(loopd_fixture_daemon_pid(f), ==, 0);
        g_assert_true(loopd_fixture_restart_daemon(f));
        g_assert_cmpint(loopd_fixture_daemon_pid(f), !=, first);
        g_assert_cmpint(loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME), ==, loopd_fixture_daemon_pid(f));

        loopd_fixture_stop_daemon(f); /* asserts exit status 0 */
        g_assert_true(loopd_fixture_wait_name(f, LOOPD_BUS_NAME, FALSE, 10));
        g_assert_true(loopd_fixture_restart_daemon(f)); /* teardown stops it again */
}

/* NOTIFY_SOCKET is read all the time: a sender on a blocking socket, as
 * sd_notify() is, never waits, however many datagrams it sends without the
 * test asking for any (the kernel queues 10 unread ones, then blocks). */
static void test_daemon_notify_socket_is_always_drained(LoopdFixture *f, gconstpointer data) {
        g_autofree char *path = g_build_filename(f->tmpdir, "notify.socket", NULL);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        struct timeval timeout = { .tv_sec = 5 };
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        g_assert_cmpuint(strlen(path), <, sizeof sa.sun_path);
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        g_assert_cmpint(fd, >=, 0);
        g_assert_no_errno(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout));
        g_assert_no_errno(connect(fd, (struct sockaddr *) &sa, sizeof sa));
        for (int i = 0; i < 200; i++) {
                g_autofree char *msg = g_strdup_printf("STATUS=fixture self-test %d", i);
                /* Blocks (and fails after 5 s) once the queue is full. */
                g_assert_cmpint(send(fd, msg, strlen(msg), MSG_NOSIGNAL), ==, (gssize) strlen(msg));
        }
        close(fd);
        g_assert_true(loopd_fixture_wait_daemon_status(f, "fixture self-test 199", 5));
        g_assert_cmpstr(loopd_fixture_daemon_status_text(f), ==, "fixture self-test 199");
        g_assert_true(loopd_fixture_wait_daemon_status(f, "fixture self-test 1?9", 0));
        g_assert_false(loopd_fixture_wait_daemon_status(f, "fixture self-test 198", 0.2));
}

/* How many Device objects loopd exports: every attached loop device on the
 * machine, other tests' too. */
static guint count_device_objects(LoopdFixture *f) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                                            "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                                                            NULL, G_VARIANT_TYPE("(a{oa{sa{sv}}})"),
                                                            G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        g_autoptr(GVariant) objects = NULL;
        GVariantIter iter;
        GVariant *ifaces;
        guint n = 0;

        g_assert_no_error(error);
        objects = g_variant_get_child_value(r, 0);
        g_variant_iter_init(&iter, objects);
        while (g_variant_iter_next(&iter, "{&o@a{sa{sv}}}", NULL, &ifaces)) {
                g_autoptr(GVariant) dev = g_variant_lookup_value(ifaces, LOOPD_DEVICE_INTERFACE, NULL);
                n += dev != NULL;
                g_variant_unref(ifaces);
        }
        return n;
}

/* Waits until STATUS= says what loopd exports, with @bound of them bound
 * to callers. The machine is shared: other tests attach and detach
 * devices meanwhile, which loopd follows too, so the count is asked again
 * until a quiet moment shows both agree. Fails the test (and says what it
 * saw) when they never do, and lets teardown clean up. */
static gboolean status_follows(LoopdFixture *f, guint bound) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (20 * loopd_test_timeout_scale() * G_USEC_PER_SEC);
        g_autofree char *want = NULL, *last = NULL;

        do {
                g_free(want);
                g_free(last);
                want = g_strdup_printf("Serving %u loop devices, %u bound to callers.", count_device_objects(f),
                                       bound);
                last = g_strdup(loopd_fixture_daemon_status_text(f));
                if (g_strcmp0(want, last) == 0)
                        return TRUE;
                g_usleep(50 * 1000);
        } while (g_get_monotonic_time() < deadline);
        g_test_message("loopd's STATUS= is \"%s\", not \"%s\"", last ? last : "(none)", want);
        g_test_fail();
        return FALSE;
}

/*
 * loopd's STATUS= follows the devices: "Serving N loop devices, M bound to
 * callers." after every change. More changes than the notify queue holds,
 * and no one asks for STATUS= in between: loopd must still answer (the
 * fixture reads NOTIFY_SOCKET all the time).
 */
static void test_daemon_status_follows_devices(LoopdFixture *f, gconstpointer data) {
        enum { N = 12 };
        g_autoptr(GPtrArray) devs = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(LoopdCaller) holder = NULL;
        g_autofree char *img = NULL, *line = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) pong = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "status.img", 1 << 20, 0, 0, 0644);
        if (!status_follows(f, 0))
                return;

        for (int i = 0; i < N; i++) {
                loopd_fixture_call_as(f, 0, 0, &r, "create", img, NULL);
                g_assert_cmpint(r.status, ==, 0);
                g_ptr_array_add(devs, g_strdup(r.fields[2]));
        }
        pong = g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.Peer",
                                           "Ping", NULL, NULL, G_DBUS_CALL_FLAGS_NONE, 5000, NULL, &error);
        g_assert_no_error(error);
        if (!status_follows(f, 0))
                return;

        /* A device bound to its caller, and the caller gone. */
        holder = loopd_fixture_spawn_caller_as(f, 0, 0, "create", img, "--opt", "bind-to-caller=b:true", "--hold",
                                               NULL);
        line = loopd_caller_read_line(holder);
        g_assert_nonnull(line);
        g_assert_true(g_str_has_prefix(line, "ok "));
        if (!status_follows(f, 1))
                return;
        loopd_caller_close_stdin(holder);
        g_assert_cmpint(loopd_caller_wait(holder), ==, 0);
        if (!status_follows(f, 0))
                return;

        for (guint i = 0; i < devs->len; i++) {
                loopd_fixture_call_as(f, 0, 0, &r, "remove", (const char *) devs->pdata[i], NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        if (!status_follows(f, 0))
                return;
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

static void test_daemon_activated_from_production_file(void) {
        g_autoptr(LoopdFixture) f = loopd_fixture_new(NULL);
        pid_t pid;

        if (f->skipped || !loopd_fixture_install_activation(f, NULL))
                return;
        ping(f, LOOPD_BUS_NAME);
        pid = loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME);
        g_assert_cmpint(pid, >, 0);
        g_assert_true(loopd_fixture_stop_name_owner(f, LOOPD_BUS_NAME));
        assert_pid_goes(pid);
}

int main(int argc, char **argv) {
        static const LoopdFixtureOptions daemon_opts = { .start_daemon = TRUE };

        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/fixture/bus/comes-and-goes", test_bus_only_comes_and_goes);
        g_test_add_func("/fixture/run-as/is-a-real-unprivileged-caller", test_run_as_is_a_real_unprivileged_caller);
        g_test_add_func("/fixture/caller/held-caller-lets-go-on-eof", test_held_caller_lets_go_on_eof);
        g_test_add_func("/fixture/loops/images-and-leaked-loops-are-cleaned", test_images_and_leaked_loops_are_cleaned);
        g_test_add_func("/fixture/polkit/answers-by-the-rules", test_polkit_answers_by_the_rules);
        g_test_add_func("/fixture/crash/assert", test_crash_on_assert_leaves_nothing);
        g_test_add_func("/fixture/crash/abort", test_crash_on_abort_leaves_nothing);
        g_test_add_func("/fixture/crash/sigkill", test_crash_on_sigkill_leaves_nothing);
        g_test_add_func("/fixture/crash/sigterm", test_crash_on_sigterm_leaves_nothing);
        g_test_add_func("/fixture/crash/watchdog", test_watchdog_kills_hung_test_and_cleans);
        g_test_add_func("/fixture/crash/abort-with-hung-fuse", test_crash_on_abort_with_hung_fuse_leaves_nothing);
        g_test_add_func("/fixture/crash/sigkill-with-hung-fuse", test_crash_on_sigkill_with_hung_fuse_leaves_nothing);
        g_test_add_func("/fixture/fuse/serves-hangs-resumes-aborts-and-leaves-nothing",
                        test_fuse_serves_hangs_resumes_aborts_and_leaves_nothing);
        g_test_add_func("/fixture/activation/starts-service-from-servicedir",
                        test_activation_starts_service_from_servicedir);
        g_test_add("/fixture/daemon/starts-restarts-and-stops-cleanly", LoopdFixture, &daemon_opts,
                   loopd_fixture_setup, test_daemon_starts_restarts_and_stops_cleanly, loopd_fixture_teardown);
        g_test_add_func("/fixture/daemon/activated-from-production-file", test_daemon_activated_from_production_file);
        g_test_add("/fixture/daemon/notify-socket-is-always-drained", LoopdFixture, &daemon_opts, loopd_fixture_setup,
                   test_daemon_notify_socket_is_always_drained, loopd_fixture_teardown);
        g_test_add("/fixture/daemon/status-follows-devices", LoopdFixture, &daemon_opts, loopd_fixture_setup,
                   test_daemon_status_follows_devices, loopd_fixture_teardown);

        return g_test_run();
}
