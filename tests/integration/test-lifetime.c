/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopd's life around its devices: kill -9 and restart with ownership
 * intact (records in the state directory reconciled with the kernel), bus
 * activation from the production activation file, and exit on idle with
 * the next call activating it again, state intact.
 */

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <glib.h>

#include "fixture.h"
#include "service-util.h"

static const char *const idle_args[] = { "--idle-timeout=1", NULL };
static const LoopdFixtureOptions idle_daemon_opts = { .start_daemon = TRUE, .daemon_args = idle_args };

static GVariant *options_bool(const char *key, gboolean value) {
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        g_variant_builder_add(&b, "{sv}", key, g_variant_new_boolean(value));
        return g_variant_builder_end(&b);
}

static char *open_ok(LoopdFixture *f, const char *dev) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "GetDevice",
                                           g_variant_new("(s)", dev), "(o)", &error);
        char *obj;

        g_assert_no_error(error);
        g_variant_get(r, "(o)", &obj);
        return obj;
}

static void owner_of(LoopdFixture *f, const char *obj, guint32 *ret_uid, gboolean *ret_bound) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) props = device_properties(f->bus, obj, &error);

        g_assert_no_error(error);
        g_assert_true(g_variant_lookup(props, "OwnerUID", "u", ret_uid));
        g_assert_true(g_variant_lookup(props, "BoundToCaller", "b", ret_bound));
}

/* The state directory's record of an attachment: loopN-DISKSEQ. */
static gboolean record_exists(LoopdFixture *f, guint32 number) {
        g_auto(KernelLoop) k = { 0 };
        g_autofree char *name = NULL, *path = NULL;
        g_autoptr(GDir) dir = NULL;
        g_autofree char *prefix = g_strdup_printf("loop%u-", number);
        const char *e;

        dir = g_dir_open(f->state_dir, 0, NULL);
        g_assert_nonnull(dir);
        while ((e = g_dir_read_name(dir)))
                if (g_str_has_prefix(e, prefix))
                        return TRUE;
        return FALSE;
}

static gboolean record_of_attachment_exists(LoopdFixture *f, guint32 number, guint64 diskseq) {
        g_autofree char *path = g_strdup_printf("%s/loop%u-%" G_GUINT64_FORMAT, f->state_dir, number, diskseq);
        return g_file_test(path, G_FILE_TEST_IS_REGULAR);
}

/* The daemon forgets a record right after the kernel's detach reaches it;
 * under valgrind that can take a while, so wait instead of racing it. */
static gboolean wait_record_gone(LoopdFixture *f, guint32 number, guint64 diskseq, double sec) {
        gint64 until = g_get_monotonic_time() + (gint64) (sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        while (record_of_attachment_exists(f, number, diskseq)) {
                if (g_get_monotonic_time() > until)
                        return FALSE;
                g_usleep(10 * 1000);
        }
        return TRUE;
}

static guint64 diskseq_of(guint32 number) {
        g_auto(KernelLoop) k = { 0 };
        g_assert_true(kernel_loop_read(number, &k));
        return k.diskseq;
}

/* ---- kill -9 and restart ---------------------------------------------------- */

static void test_restart_after_kill9_keeps_ownership(LoopdFixture *f, gconstpointer data) {
        g_autofree char *mine = NULL, *img = NULL, *nobody_obj = NULL, *nobody_dev = NULL;
        g_autofree char *bound_obj = NULL, *bound_dev = NULL, *gone_obj = NULL, *gone_dev = NULL;
        g_autofree char *obj = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        guint32 uid, n_nobody, n_bound, n_gone;
        guint64 seq_nobody, seq_bound, seq_gone;
        gboolean bound;
        pid_t first;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        mine = loopd_fixture_make_image(f, "nobody.img", 4 * MiB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        img = make_image(f, "root.img", 4 * MiB);

        /* nobody's device, one bound to root's (living) connection, and one
         * that will be detached behind loopd's back while it is down. */
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", mine, NULL);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        nobody_obj = g_strdup(r.fields[1]);
        nobody_dev = g_strdup(r.fields[2]);
        bound_obj = create_ok(f, img, options_bool("bind-to-caller", TRUE), &bound_dev, NULL);
        gone_obj = create_ok(f, img, NULL, &gone_dev, NULL);
        n_nobody = loop_number_of(nobody_dev);
        n_bound = loop_number_of(bound_dev);
        n_gone = loop_number_of(gone_dev);
        seq_nobody = diskseq_of(n_nobody);
        seq_bound = diskseq_of(n_bound);
        seq_gone = diskseq_of(n_gone);

        /* Records keyed by number and diskseq. */
        g_assert_true(record_of_attachment_exists(f, n_nobody, seq_nobody));
        g_assert_true(record_of_attachment_exists(f, n_bound, seq_bound));
        g_assert_true(record_of_attachment_exists(f, n_gone, seq_gone));

        first = loopd_fixture_daemon_pid(f);
        loopd_fixture_kill_daemon(f);
        losetup_detach(gone_dev);
        g_assert_true(loopd_fixture_restart_daemon(f));
        g_assert_cmpint(loopd_fixture_daemon_pid(f), !=, first);

        /* Same attachments, same paths, same owners. */
        obj = open_ok(f, nobody_dev);
        g_assert_cmpstr(obj, ==, nobody_obj);
        owner_of(f, nobody_obj, &uid, &bound);
        g_assert_cmpuint(uid, ==, LOOPD_TEST_NOBODY);
        g_assert_false(bound);
        g_clear_pointer(&obj, g_free);
        obj = open_ok(f, bound_dev);
        g_assert_cmpstr(obj, ==, bound_obj);
        owner_of(f, bound_obj, &uid, &bound);
        g_assert_cmpuint(uid, ==, 0);
        g_assert_true(bound);
        /* Its caller is alive: it stays. */
        spin(0.3);
        g_assert_true(kernel_loop_attached(n_bound));

        /* The record of the detached one is forgotten. */
        g_assert_false(record_of_attachment_exists(f, n_gone, seq_gone));
        g_assert_true(record_of_attachment_exists(f, n_nobody, seq_nobody));

        /* Ownership still means something: nobody removes its own device. */
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "remove", nobody_dev, NULL);
        if (g_strcmp0(r.fields[0], "ok") != 0)
                g_test_message("nobody's remove of %s after restart: %s%s", nobody_dev, r.out, r.err);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        assert_detached(n_nobody, 5);
        g_assert_true(wait_record_gone(f, n_nobody, seq_nobody, 2));
}

static void test_restart_removes_bound_device_of_caller_that_died_meanwhile(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *line = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        g_auto(GStrv) parts = NULL;
        guint32 number;
        guint64 seq;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "bound.img", 4 * MiB);
        c = loopd_fixture_spawn_caller_as(f, 0, 0, "create", img, "--opt", "bind-to-caller=b:true", "--hold", NULL);
        line = loopd_caller_read_line(c);
        g_assert_nonnull(line);
        parts = g_strsplit(line, " ", 3);
        g_assert_cmpstr(parts[0], ==, "ok");
        number = loop_number_of(parts[2]);
        seq = diskseq_of(number);

        loopd_fixture_kill_daemon(f);
        loopd_caller_kill(c, SIGKILL);
        g_assert_cmpint(loopd_caller_wait(c), ==, 128 + SIGKILL);
        /* Nobody is there to notice: the kernel keeps it. */
        spin(0.3);
        g_assert_true(kernel_loop_attached(number));
        g_assert_true(record_of_attachment_exists(f, number, seq));

        g_assert_true(loopd_fixture_restart_daemon(f));
        assert_detached(number, 2);
        g_assert_true(wait_record_gone(f, number, seq, 2));
}

/* ---- activation and idle exit ------------------------------------------------- */

static void test_activated_by_bus_from_activation_file(void) {
        g_autoptr(LoopdFixture) f = loopd_fixture_new(NULL);
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL;
        g_autoptr(GVariant) version = NULL;
        g_autoptr(GError) error = NULL;
        guint32 uid;
        gboolean bound;
        pid_t pid;

        if (f->skipped || !loopd_fixture_install_activation(f, NULL))
                return;
        g_assert_cmpint(loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME), ==, 0);

        /* The first call starts it. */
        version = loopd_call(f->bus, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get",
                             g_variant_new("(ss)", LOOPD_MANAGER_INTERFACE, "Version"), "(v)", &error);
        g_assert_no_error(error);
        pid = loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME);
        g_assert_cmpint(pid, >, 0);
        g_assert_cmpint(pid, !=, getpid());

        /* And it is the real thing, as root. */
        img = make_image(f, "act.img", 4 * MiB);
        obj = create_ok(f, img, NULL, &dev, NULL);
        g_assert_true(kernel_loop_attached(loop_number_of(dev)));
        owner_of(f, obj, &uid, &bound);
        g_assert_cmpuint(uid, ==, 0);
        g_assert_true(g_file_test(f->state_dir, G_FILE_TEST_IS_DIR));
        g_assert_true(record_exists(f, loop_number_of(dev)));
        g_assert_cmpint(loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME), ==, pid);
}

static void test_idle_exit_and_reactivation_keep_state(void) {
        static const char *const args[] = { "--idle-timeout=1", NULL };
        g_autoptr(LoopdFixture) f = loopd_fixture_new(NULL);
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL, *obj2 = NULL, *bobj = NULL, *bdev = NULL;
        guint32 uid;
        gboolean bound;
        pid_t first, second;
        int st;

        if (f->skipped || !loopd_fixture_install_activation(f, args))
                return;
        img = make_image(f, "idle.img", 4 * MiB);
        obj = create_ok(f, img, NULL, &dev, NULL);
        first = loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME);
        g_assert_cmpint(first, >, 0);

        /* Idle: gone by itself, cleanly, leaving the device. */
        st = loopd_fixture_activated_exit_status(f, first, 10);
        g_assert_cmpint(st, !=, -1);
        g_assert_true(WIFEXITED(st));
        g_assert_cmpint(WEXITSTATUS(st), ==, 0);
        g_assert_true(loopd_fixture_wait_name(f, LOOPD_BUS_NAME, FALSE, 5));
        g_assert_true(kernel_loop_attached(loop_number_of(dev)));

        /* The next call activates it again; it knows the device and its owner. */
        obj2 = open_ok(f, dev);
        second = loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME);
        g_assert_cmpint(second, >, 0);
        g_assert_cmpint(second, !=, first);
        g_assert_cmpstr(obj2, ==, obj);
        owner_of(f, obj, &uid, &bound);
        g_assert_cmpuint(uid, ==, 0);

        /* A device bound to a live caller keeps it from going idle. */
        bobj = create_ok(f, img, options_bool("bind-to-caller", TRUE), &bdev, NULL);
        spin(2.5);
        g_assert_cmpint(loopd_fixture_name_owner_pid(f, LOOPD_BUS_NAME), ==, second);
        {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) r = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Remove",
                                                   g_variant_new("(s)", bdev), "()", &error);
                g_assert_no_error(error);
        }
        /* Once it is gone, idle again. */
        st = loopd_fixture_activated_exit_status(f, second, 10);
        g_assert_cmpint(st, !=, -1);
        g_assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) r = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Remove",
                                                   g_variant_new("(s)", dev), "()", &error);
                g_assert_no_error(error);
        }
        assert_detached(loop_number_of(dev), 5);
}

static void test_idle_exit_notifies_and_exits_zero(LoopdFixture *f, gconstpointer data) {
        const char *status;
        int st;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        status = loopd_fixture_daemon_status_text(f);
        g_assert_nonnull(status);
        g_assert_true(g_str_has_prefix(status, "Serving "));
        st = loopd_fixture_wait_daemon_exit(f, 10);
        g_assert_cmpint(st, !=, -1);
        g_assert_true(WIFEXITED(st));
        g_assert_cmpint(WEXITSTATUS(st), ==, 0);
        status = loopd_fixture_daemon_status_text(f);
        g_assert_nonnull(status);
        g_assert_nonnull(strstr(status, "Idle"));
        g_assert_true(loopd_fixture_wait_name(f, LOOPD_BUS_NAME, FALSE, 5));
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

        g_test_add("/lifetime/restart/after-kill9-keeps-ownership-forgets-detached", LoopdFixture,
                   &polkit_daemon_opts, loopd_fixture_setup, test_restart_after_kill9_keeps_ownership,
                   loopd_fixture_teardown);
        g_test_add("/lifetime/restart/removes-bound-device-of-caller-that-died-meanwhile", LoopdFixture,
                   &daemon_opts, loopd_fixture_setup, test_restart_removes_bound_device_of_caller_that_died_meanwhile,
                   loopd_fixture_teardown);
        g_test_add_func("/lifetime/activation/started-by-bus-from-activation-file",
                        test_activated_by_bus_from_activation_file);
        g_test_add_func("/lifetime/idle/exit-and-reactivation-keep-state", test_idle_exit_and_reactivation_keep_state);
        g_test_add("/lifetime/idle/exit-notifies-status-and-exits-zero", LoopdFixture, &idle_daemon_opts,
                   loopd_fixture_setup, test_idle_exit_notifies_and_exits_zero, loopd_fixture_teardown);
        return g_test_run();
}
