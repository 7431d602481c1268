/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Faults: nothing lost, nothing leaked.
 *
 *   /faults/kill-9/storm             kill -9 of loopd at random points of a
 *                                    create/remove storm, restart, check the
 *                                    records against the kernel (20 rounds)
 *   /faults/disconnect/before-reply  a caller that sends Create and closes
 *                                    its connection at once
 *   /faults/quota                    QuotaExceeded, and Create works again
 *                                    after a Remove
 *   /faults/state-dir/full           the state directory on a full tmpfs,
 *   /faults/state-dir/read-only      or read-only: a clear error, no device,
 *                                    and Create works once the cause is gone
 *   /faults/no-free-device           NoFreeDevice when loopd cannot get a
 *                                    node (out of fds), and Create works
 *                                    again afterwards
 *
 * The state-directory tests give loopd a tmpfs of its own: the daemon is
 * started through `unshare --mount` with a wrapper that mounts it, so the
 * mount lives in loopd's private mount namespace and vanishes with it,
 * whatever way the test ends; the host never sees it. The test reaches the
 * files through /proc/<loopd>/root and remounts with nsenter.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include <gio/gunixfdlist.h>

#include "fixture.h"

#define UID_INVALID_U32 4294967295u
#define KILL_ROUNDS 20

static const char rules_nobody_may_create[] = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE);

static const char *stress_client(void) {
        const char *p = g_getenv("LOOPD_STRESS_CLIENT");
        return p && *p ? p : LOOPD_DEFAULT_STRESS_CLIENT;
}

/* ---- helpers -------------------------------------------------------------- */

static GVariant *manager_call(LoopdFixture *f, const char *method, GVariant *params, const char *reply_type,
                              GError **error) {
        return g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                           method, params, reply_type ? G_VARIANT_TYPE(reply_type) : NULL,
                                           G_DBUS_CALL_FLAGS_NONE, 20000, NULL, error);
}

/* A property of the device /dev/loopN as loopd reports it; NULL when it
 * is not attached (any more). */
static GVariant *device_property(LoopdFixture *f, const char *dev, const char *property) {
        g_autoptr(GVariant) r = manager_call(f, "GetDevice", g_variant_new("(s)", dev), "(o)", NULL);
        g_autoptr(GVariant) v = NULL;
        GVariant *value = NULL;
        const char *obj;

        if (!r)
                return NULL;
        g_variant_get(r, "(&o)", &obj);
        v = g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, obj, "org.freedesktop.DBus.Properties", "Get",
                                        g_variant_new("(ss)", LOOPD_DEVICE_INTERFACE, property),
                                        G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, 20000, NULL, NULL);
        if (v)
                g_variant_get(v, "(v)", &value);
        return value;
}

static guint32 device_owner(LoopdFixture *f, const char *dev) {
        g_autoptr(GVariant) v = device_property(f, dev, "OwnerUID");
        if (!v)
                g_error("%s vanished while its owner was asked for", dev);
        return g_variant_get_uint32(v);
}

static gboolean device_bound(LoopdFixture *f, const char *dev) {
        g_autoptr(GVariant) v = device_property(f, dev, "BoundToCaller");
        return v && g_variant_get_boolean(v);
}

static guint64 sysfs_diskseq(const char *loopname) {
        g_autofree char *path = g_strdup_printf("/sys/block/%s/diskseq", loopname);
        g_autofree char *text = NULL;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return 0;
        return g_ascii_strtoull(text, NULL, 10);
}

static gboolean sysfs_attached(const char *loopname) {
        g_autofree char *path = g_strdup_printf("/sys/block/%s/loop/backing_file", loopname);
        return g_file_test(path, G_FILE_TEST_EXISTS);
}

typedef struct StateScan {
        guint records, bound_records, intents, temp_files;
} StateScan;

/* What the state directory holds; "loopN-SEQ" records, "pending-*"
 * intents, ".#*" temp files of an interrupted write. */
static void scan_state_dir(const char *dir, StateScan *s) {
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *name;

        memset(s, 0, sizeof *s);
        g_assert_nonnull(d);
        while ((name = g_dir_read_name(d))) {
                if (g_str_has_prefix(name, "pending-"))
                        s->intents++;
                else if (g_str_has_prefix(name, ".#"))
                        s->temp_files++;
                else if (g_str_has_prefix(name, "loop")) {
                        g_autofree char *path = g_build_filename(dir, name, NULL);
                        g_autofree char *text = NULL;
                        s->records++;
                        if (g_file_get_contents(path, &text, NULL, NULL) && !strstr(text, "\nbound=\n"))
                                s->bound_records++;
                }
        }
}

/* The invariants after a restart: every device backed by our files has
 * its record and an owner; every record has its attachment; no intent or
 * temp file is left. Returns the number of devices. */
static guint check_records_match_kernel(LoopdFixture *f) {
        g_autoptr(GPtrArray) loops = loopd_fixture_list_loops(f);
        g_autoptr(GDir) d = g_dir_open(f->state_dir, 0, NULL);
        const char *name;

        for (guint i = 0; i < loops->len; i++) {
                const char *dev = loops->pdata[i];
                const char *loopname = dev + strlen("/dev/");
                g_autofree char *rec = g_strdup_printf("%s/%s-%" G_GUINT64_FORMAT, f->state_dir, loopname,
                                                       sysfs_diskseq(loopname));
                if (!g_file_test(rec, G_FILE_TEST_EXISTS))
                        g_error("%s (created through loopd) has no owner record %s", dev, rec);
                g_assert_cmpuint(device_owner(f, dev), !=, UID_INVALID_U32);
        }
        g_assert_nonnull(d);
        while ((name = g_dir_read_name(d))) {
                char loopname[32];
                unsigned number;
                unsigned long long seq;

                if (g_str_has_prefix(name, "pending-") || g_str_has_prefix(name, ".#"))
                        g_error("state dir still holds %s after the restart's reconcile", name);
                g_assert_cmpint(sscanf(name, "loop%u-%llu", &number, &seq), ==, 2);
                snprintf(loopname, sizeof loopname, "loop%u", number);
                if (!sysfs_attached(loopname) || sysfs_diskseq(loopname) != seq)
                        g_error("record %s has no device (loop%u is %s, diskseq %" G_GUINT64_FORMAT ")", name,
                                number, sysfs_attached(loopname) ? "attached" : "detached", sysfs_diskseq(loopname));
        }
        return loops->len;
}

static guint count_bound(LoopdFixture *f) {
        g_autoptr(GPtrArray) loops = loopd_fixture_list_loops(f);
        guint n = 0;

        for (guint i = 0; i < loops->len; i++)
                if (device_bound(f, loops->pdata[i]))
                        n++;
        return n;
}

static gboolean wait_no_bound(LoopdFixture *f, double sec) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        while (count_bound(f) > 0) {
                if (g_get_monotonic_time() > deadline)
                        return FALSE;
                g_usleep(20000);
        }
        return TRUE;
}

static gint compare_strings(gconstpointer a, gconstpointer b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

/* The loop devices of this test and the state directory's names, as one
 * string to compare. */
static char *state_snapshot(LoopdFixture *f) {
        g_autoptr(GPtrArray) loops = loopd_fixture_list_loops(f);
        g_autoptr(GDir) d = g_dir_open(f->state_dir, 0, NULL);
        g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
        GString *out = g_string_new(NULL);
        const char *name;

        for (guint i = 0; i < loops->len; i++)
                g_string_append_printf(out, "%s ", (char *) loops->pdata[i]);
        while (d && (name = g_dir_read_name(d)))
                g_ptr_array_add(names, g_strdup(name));
        g_ptr_array_sort(names, compare_strings);
        for (guint i = 0; i < names->len; i++)
                g_string_append_printf(out, "%s ", (char *) names->pdata[i]);
        return g_string_free(out, FALSE);
}

/* Until loopd has finished what the killed callers sent before they died.
 * dbus-daemon still delivers a dead connection's last messages, so a
 * Create can still be on its way (its intent record on disk for a moment,
 * its device bound to a caller already gone) when the callers are reaped.
 * Settled: nothing changed for 300 ms. Not settled within 10 s fails. */
static void wait_settled(LoopdFixture *f) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (10 * loopd_test_timeout_scale() * G_USEC_PER_SEC);
        g_autofree char *last = state_snapshot(f);

        for (;;) {
                g_autofree char *now = NULL;

                g_usleep(300000);
                now = state_snapshot(f);
                if (g_str_equal(now, last))
                        return;
                if (g_get_monotonic_time() > deadline)
                        g_error("loopd's devices and records still change 10 s after its callers died: %s", now);
                g_free(last);
                last = g_steal_pointer(&now);
        }
}

static guint remove_all(LoopdFixture *f) {
        g_autoptr(GPtrArray) loops = loopd_fixture_list_loops(f);

        for (guint i = 0; i < loops->len; i++) {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) r = manager_call(f, "Remove", g_variant_new("(s)", (char *) loops->pdata[i]),
                                                     NULL, &error);
                g_assert_no_error(error);
        }
        return loops->len;
}

/* ---- kill -9 in a storm ---------------------------------------------------- */

static void test_kill9_storm(LoopdFixture *f, gconstpointer data) {
        guint intents_at_kill = 0, bound_at_kill = 0, records_at_kill = 0, devices_at_kill = 0;
        guint recovered = 0, bound_removed = 0, temp_at_kill = 0;
        char *images[3];

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        images[0] = loopd_fixture_make_image(f, "storm-0.img", 4 << 20, 0, 0, 0600);
        images[1] = loopd_fixture_make_image(f, "storm-1.img", 4 << 20, 0, 0, 0600);
        images[2] = loopd_fixture_make_image(f, "storm-2.img", 4 << 20, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);

        for (guint round = 0; round < KILL_ROUNDS; round++) {
                LoopdCaller *clients[3];
                gboolean kill_clients_first = round % 2 == 0;
                guint delay_ms = (guint) g_random_int_range(0, 300);
                guint devices, bound_now;
                StateScan s;

                for (guint i = 0; i < 3; i++) {
                        uid_t uid = i == 2 ? LOOPD_TEST_NOBODY : 0;
                        clients[i] = loopd_fixture_spawn_as(
                                f, uid, uid, (const char *const[]) { stress_client(), "1000000", images[i], NULL });
                }
                g_usleep(delay_ms * 1000);
                loopd_fixture_kill_daemon(f);

                /* What the dead daemon left: the kernel's and the disk's. */
                scan_state_dir(f->state_dir, &s);
                intents_at_kill += s.intents;
                records_at_kill += s.records;
                bound_at_kill += s.bound_records;
                temp_at_kill += s.temp_files;
                devices_at_kill += loopd_fixture_count_loops(f);

                /* Even rounds: the callers die with the daemon, so the
                 * restart finds bound devices of callers already gone.
                 * Odd rounds: they storm on against the new daemon and die
                 * under its watch. */
                if (kill_clients_first)
                        for (guint i = 0; i < 3; i++)
                                loopd_caller_free(clients[i]);
                g_assert_true(loopd_fixture_restart_daemon(f));
                if (!kill_clients_first) {
                        g_usleep(50000);
                        for (guint i = 0; i < 3; i++)
                                loopd_caller_free(clients[i]);
                }

                bound_now = count_bound(f);
                if (!wait_no_bound(f, 10))
                        g_error("round %u: devices bound to dead callers are still there", round);
                wait_settled(f);
                if (count_bound(f) > 0)
                        g_error("round %u: a late create of a dead caller left its bound device", round);
                bound_removed += bound_now;

                devices = check_records_match_kernel(f);
                recovered += devices;
                g_test_message("round %u: kill -9 after %u ms (%s); at the kill: %u records (%u bound), %u intents, "
                               "%u temp files; after restart: %u owned devices kept (%u still bound at the first look), "
                               "no bound device left",
                               round, delay_ms, kill_clients_first ? "callers died with it" : "callers outlived it",
                               s.records, s.bound_records, s.intents, s.temp_files, devices, bound_now);
                g_assert_cmpuint(remove_all(f), ==, devices);
                g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
                scan_state_dir(f->state_dir, &s);
                g_assert_cmpuint(s.records + s.intents + s.temp_files, ==, 0);
        }
        g_test_message("kill -9: %u rounds; at the kills %u devices, %u records (%u bound), %u intents, %u temp "
                       "files; after the restarts %u plain devices kept with owner and record (%u bound seen at the "
                       "first look, all gone with their callers), no record without device",
                       KILL_ROUNDS, devices_at_kill, records_at_kill, bound_at_kill, intents_at_kill, temp_at_kill,
                       recovered, bound_removed);
        for (guint i = 0; i < 3; i++)
                g_free(images[i]);
}

/* ---- a caller gone before the reply ---------------------------------------- */

#define DISCONNECT_CALLS 20

/* Sends Create on a fresh connection and closes it without reading the
 * reply, @delay_us after sending: at once, the daemon finds the caller
 * gone when it asks the bus for its uid; a little later, the caller goes
 * while the daemon attaches, or before the reply reaches it. */
static void create_and_hang_up(const char *image, gboolean bind, guint delay_us) {
        sd_bus *bus = NULL;
        sd_bus_message *m = NULL;
        int fd = open(image, O_RDWR | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(sd_bus_open_system(&bus), >=, 0);
        g_assert_cmpint(sd_bus_message_new_method_call(bus, &m, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                                       LOOPD_MANAGER_INTERFACE, "Create"),
                        >=, 0);
        g_assert_cmpint(sd_bus_message_append(m, "ha{sv}", fd, 1, "bind-to-caller", "b", bind), >=, 0);
        g_assert_cmpint(sd_bus_send(bus, m, NULL), >=, 0);
        g_assert_cmpint(sd_bus_flush(bus), >=, 0);
        if (delay_us)
                g_usleep(delay_us);
        sd_bus_message_unref(m);
        sd_bus_close_unref(bus);
        close(fd);
}

static void test_disconnect_before_reply(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_autoptr(GPtrArray) loops = NULL;
        gint64 deadline;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "hangup.img", 4 << 20, 0, 0, 0600);

        for (guint i = 0; i < DISCONNECT_CALLS; i++) {
                guint delay_us = i % 4 == 0 ? 0 : (guint) g_random_int_range(100, 5000);
                create_and_hang_up(img, TRUE, delay_us);
                create_and_hang_up(img, FALSE, delay_us);
        }
        /* The daemon answers in order: once it answered us, it has run
         * every Create above; bound devices go when it learns their callers
         * are gone, which may take a round trip to the bus more. */
        g_autoptr(GVariant) v = manager_call(f, "GetDevice", g_variant_new("(s)", "loop0"), NULL, NULL);
        deadline = g_get_monotonic_time() + 10 * G_USEC_PER_SEC * (gint64) loopd_test_timeout_scale();
        while (count_bound(f) > 0) {
                if (g_get_monotonic_time() > deadline)
                        break;
                g_usleep(20000);
        }

        loops = loopd_fixture_list_loops(f);
        /* Each plain Create either never happened (the daemon found the
         * caller gone before anything was attached) or left a device that
         * is root's, with its record; no bound device outlives its caller. */
        g_test_message("%u Create calls hung up before the reply with bind-to-caller, %u without: %u devices left, "
                       "all plain and owned",
                       DISCONNECT_CALLS, DISCONNECT_CALLS, loops->len);
        g_assert_cmpuint(count_bound(f), ==, 0);
        g_assert_cmpuint(loops->len, <=, DISCONNECT_CALLS);
        for (guint i = 0; i < loops->len; i++)
                g_assert_cmpuint(device_owner(f, loops->pdata[i]), ==, 0);
        check_records_match_kernel(f);
        g_assert_cmpuint(remove_all(f), ==, loops->len);
}

/* ---- quota ------------------------------------------------------------------ */

static void test_quota_recovers(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *first = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "quota.img", 4 << 20, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);

        for (guint i = 0; i < 2; i++) {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", img, NULL);
                g_assert_cmpstr(r.fields[0], ==, "ok");
                if (!first)
                        first = g_strdup(r.fields[2]);
        }
        for (guint i = 0; i < 3; i++) {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", img, NULL);
                g_assert_cmpstr(r.fields[0], ==, "error");
                g_assert_cmpstr(r.fields[1], ==, LOOPD_ERROR_QUOTA_EXCEEDED);
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 2);
        /* Root is not bound by the quota. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, 0, 0, &r, "create", img, NULL);
                g_assert_cmpstr(r.fields[0], ==, "ok");
        }
        /* One removed: room for one more, and only one. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "remove", first, NULL);
                g_assert_cmpstr(r.fields[0], ==, "ok");
        }
        {
                g_auto(LoopdRunResult) r = { 0 }, r2 = { 0 };
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", img, NULL);
                g_assert_cmpstr(r.fields[0], ==, "ok");
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r2, "create", img, NULL);
                g_assert_cmpstr(r2.fields[1], ==, LOOPD_ERROR_QUOTA_EXCEEDED);
        }
        g_test_message("quota 2: 3+1 creates over it answered QuotaExceeded; after one Remove, one Create succeeded");
        check_records_match_kernel(f);
        g_assert_cmpuint(remove_all(f), ==, 3);
}

/* ---- state directory full or read-only -------------------------------------- */

/* loopd in a mount namespace of its own with a 16 KiB tmpfs at
 * <tmpdir>/statefs; --state-dir is a directory on it. */
static char *start_daemon_on_tiny_tmpfs(LoopdFixture *f) {
        g_autofree char *mnt = g_build_filename(f->tmpdir, "statefs", NULL);
        g_autofree char *state = g_build_filename(mnt, "state", NULL);
        g_autofree char *state_arg = g_strconcat("--state-dir=", state, NULL);
        g_autofree char *quoted = g_shell_quote(mnt);
        g_autofree char *script = NULL, *wrapper = NULL, *old = g_strdup(g_getenv("LOOPD_TEST_WRAPPER"));
        g_autofree char *qscript = NULL;
        gboolean ok;

        g_autofree char *unshare = g_find_program_in_path("unshare"), *nsenter = g_find_program_in_path("nsenter");

        if (!unshare || !nsenter) {
                g_test_skip("unshare or nsenter is missing (package util-linux)");
                f->skipped = TRUE;
                return NULL;
        }
        g_assert_cmpint(mkdir(mnt, 0700), ==, 0);
        script = g_strdup_printf("mount -t tmpfs -o size=16k,nr_inodes=64,mode=0700 loopd-test-state %s && exec \"$@\"",
                                 quoted);
        qscript = g_shell_quote(script);
        wrapper = g_strdup_printf("unshare --mount --propagation private -- /bin/sh -c %s loopd-test-statefs %s",
                                  qscript, old ? old : "");
        /* libc's setenv, as the fixture does: GDBus's worker thread does
         * not read the environment. */
        setenv("LOOPD_TEST_WRAPPER", wrapper, 1);
        ok = loopd_fixture_start_daemon(f, (const char *const[]) { state_arg, NULL });
        if (old)
                setenv("LOOPD_TEST_WRAPPER", old, 1);
        else
                unsetenv("LOOPD_TEST_WRAPPER");
        if (!ok)
                return NULL;
        /* The test's view of it: through loopd's root, in loopd's namespace. */
        return g_strdup_printf("/proc/%d/root%s", (int) loopd_fixture_daemon_pid(f), mnt);
}

/* Fills the filesystem under @dir; returns the filler's path. */
static char *fill_up(const char *dir) {
        char *path = g_build_filename(dir, "filler", NULL);
        char block[4096];
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        g_assert_cmpint(fd, >=, 0);
        memset(block, 'x', sizeof block);
        for (;;) {
                ssize_t n = write(fd, block, sizeof block);
                if (n < 0) {
                        g_assert_cmpint(errno, ==, ENOSPC);
                        break;
                }
                if (n == 0)
                        break;
        }
        close(fd);
        return path;
}

static void expect_create_fails_cleanly(LoopdFixture *f, const char *img, const char *why, gboolean say) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = NULL;
        g_autofree char *remote = NULL;
        GUnixFDList *fds = g_unix_fd_list_new();
        int fd = open(img, O_RDWR | O_CLOEXEC);
        GVariantBuilder b;

        g_assert_cmpint(fd, >=, 0);
        g_unix_fd_list_append(fds, fd, NULL);
        close(fd);
        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        r = g_dbus_connection_call_with_unix_fd_list_sync(f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                                          LOOPD_MANAGER_INTERFACE, "Create",
                                                          g_variant_new("(ha{sv})", 0, &b), NULL,
                                                          G_DBUS_CALL_FLAGS_NONE, 20000, fds, NULL, NULL, &error);
        g_object_unref(fds);
        g_assert_null(r);
        g_assert_nonnull(error);
        remote = g_dbus_error_get_remote_error(error);
        if (say)
                g_test_message("state directory %s: Create answered %s: %s", why, remote, error->message);
        /* Not the caller's fault, and not the kernel's: it must say so. */
        g_assert_cmpstr(remote, !=, LOOPD_ERROR_BAD_BACKING_FILE);
        g_assert_cmpstr(remote, !=, LOOPD_ERROR_NO_FREE_DEVICE);
        g_assert_cmpstr(remote, !=, "org.freedesktop.DBus.Error.NoReply");
        g_assert_nonnull(strstr(error->message, "state"));
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

static void create_works(LoopdFixture *f, const char *img) {
        g_auto(LoopdRunResult) r = { 0 };

        loopd_fixture_call_as(f, 0, 0, &r, "create", img, NULL);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        g_assert_cmpuint(device_owner(f, r.fields[2]), ==, 0);
        g_assert_cmpuint(remove_all(f), ==, 1);
}

static void test_state_dir_full(LoopdFixture *f, gconstpointer data) {
        g_autofree char *view = NULL, *img = NULL, *filler = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        view = start_daemon_on_tiny_tmpfs(f);
        if (!view)
                return;
        img = loopd_fixture_make_image(f, "full.img", 4 << 20, 0, 0, 0600);
        create_works(f, img);

        filler = fill_up(view);
        for (guint i = 0; i < 5; i++)
                expect_create_fails_cleanly(f, img, "full", i == 0);
        g_assert_cmpint(unlink(filler), ==, 0);
        create_works(f, img);
        g_test_message("state directory full: 5 creates refused with no device left; works again once freed");
}

static void nsenter_remount(LoopdFixture *f, const char *how) {
        g_autofree char *mnt = g_build_filename(f->tmpdir, "statefs", NULL);
        g_autofree char *target = g_strdup_printf("--target=%d", (int) loopd_fixture_daemon_pid(f));
        g_autofree char *opts = g_strconcat("remount,", how, NULL);
        g_autofree char *err = NULL;
        int status;

        g_assert_true(g_spawn_sync("/", (char *[]) { "nsenter", target, "--mount", "--", "mount", "-o", opts, mnt, NULL },
                                   NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL, &err,
                                   &status, NULL));
        if (!g_spawn_check_wait_status(status, NULL))
                g_error("nsenter mount -o %s %s: %s", opts, mnt, err);
}

static void test_state_dir_read_only(LoopdFixture *f, gconstpointer data) {
        g_autofree char *view = NULL, *img = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        view = start_daemon_on_tiny_tmpfs(f);
        if (!view)
                return;
        img = loopd_fixture_make_image(f, "ro.img", 4 << 20, 0, 0, 0600);
        create_works(f, img);

        nsenter_remount(f, "ro");
        for (guint i = 0; i < 5; i++)
                expect_create_fails_cleanly(f, img, "read-only", i == 0);
        nsenter_remount(f, "rw");
        create_works(f, img);
        g_test_message("state directory read-only: 5 creates refused with no device left; works again once rw");
}

/* ---- out of loop devices ------------------------------------------------------ */

/* The lowest fd number free in @pid: where its next open() lands. */
static int lowest_free_fd(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int) pid);
        g_autoptr(GHashTable) used = g_hash_table_new(g_direct_hash, g_direct_equal);
        g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
        const char *name;
        int fd = 0;

        g_assert_nonnull(dir);
        while ((name = g_dir_read_name(dir)))
                g_hash_table_add(used, GINT_TO_POINTER(atoi(name) + 1));
        while (g_hash_table_contains(used, GINT_TO_POINTER(fd + 1)))
                fd++;
        return fd;
}

/* Create by fd as root with loopd's RLIMIT_NOFILE at @limit for the call;
 * NULL when it worked (the device then removed), else the error's name. */
static char *create_with_fd_limit(LoopdFixture *f, const char *img, rlim_t limit, char **ret_message) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = NULL;
        pid_t pid = loopd_fixture_daemon_pid(f);
        GUnixFDList *fds = g_unix_fd_list_new();
        struct rlimit old, tight;
        GVariantBuilder b;
        int fd = open(img, O_RDWR | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        g_unix_fd_list_append(fds, fd, NULL);
        close(fd);
        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        g_assert_no_errno(prlimit(pid, RLIMIT_NOFILE, NULL, &old));
        tight = old;
        tight.rlim_cur = limit;
        g_assert_no_errno(prlimit(pid, RLIMIT_NOFILE, &tight, NULL));
        r = g_dbus_connection_call_with_unix_fd_list_sync(f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                                          LOOPD_MANAGER_INTERFACE, "Create",
                                                          g_variant_new("(ha{sv})", 0, &b), NULL,
                                                          G_DBUS_CALL_FLAGS_NONE, 20000, fds, NULL, NULL, &error);
        g_assert_no_errno(prlimit(pid, RLIMIT_NOFILE, &old, NULL));
        g_object_unref(fds);
        if (r) {
                g_assert_cmpuint(remove_all(f), ==, 1);
                return NULL;
        }
        *ret_message = g_strdup(error->message);
        return g_dbus_error_get_remote_error(error);
}

/*
 * NoFreeDevice: loopd cannot get hold of a loop device. Its kernel cause,
 * ENOSPC from LOOP_CTL_GET_FREE once no minor number is left, cannot be had
 * here: LOOP_CTL_GET_FREE adds nodes on demand up to the block layer's 1M
 * minors, and exhausting them would take the host's loop devices with it.
 * The other cause loopd answers NoFreeDevice for is running out of file
 * descriptors (EMFILE) as it opens the node, which a test can make: loopd's
 * RLIMIT_NOFILE (prlimit, as root) just above its lowest free fd number.
 * The backing fd the Create brings still arrives (the kernel puts it at that
 * number); what fails then depends on how many fds a Create opens before the
 * node, so the limit goes up one at a time until Create works. Each refusal
 * leaves nothing attached and loopd answering; one of them is NoFreeDevice,
 * when opening the node failed.
 */
static void test_no_free_device(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        gboolean saw_no_free_device = FALSE, worked = FALSE;
        pid_t pid;
        int lowest;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "nofree.img", 4 << 20, 0, 0, 0600);
        create_works(f, img);
        pid = loopd_fixture_daemon_pid(f);
        lowest = lowest_free_fd(pid);

        for (int extra = 1; extra <= 16 && !worked; extra++) {
                g_autofree char *remote = NULL, *message = NULL;
                g_autoptr(GVariant) pong = NULL;

                /* loopd settled first: its node pool reads sysfs (with fds)
                 * for a moment after each create and remove, and an fd taken
                 * then is one the incoming backing fd cannot have (the bus
                 * connection of a process that cannot take a passed fd
                 * breaks: that is not what this tests). */
                g_usleep(400 * 1000);
                remote = create_with_fd_limit(f, img, (rlim_t) (lowest + extra), &message);
                g_test_message("loopd with %d fds free above its lowest free one: Create %s%s%s", extra,
                               remote ? "answered " : "worked", remote ? remote : "", remote ? ": " : "");
                if (message)
                        g_test_message("  %s", message);
                worked = remote == NULL;
                saw_no_free_device |= g_strcmp0(remote, LOOPD_ERROR_NO_FREE_DEVICE) == 0;
                g_assert_cmpstr(remote, !=, "org.freedesktop.DBus.Error.NoReply");
                g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
                pong = g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                                   "org.freedesktop.DBus.Peer", "Ping", NULL, NULL,
                                                   G_DBUS_CALL_FLAGS_NONE, 5000, NULL, NULL);
                g_assert_nonnull(pong);
                g_assert_cmpint(loopd_fixture_daemon_pid(f), ==, pid);
        }
        g_assert_true(worked);
        g_assert_true(saw_no_free_device);
        create_works(f, img);
}

int main(int argc, char *argv[]) {
        static const char *const quota_args[] = { "--quota=2", NULL };
        static const LoopdFixtureOptions storm_opts = {
                .start_polkit = TRUE,
                .polkit_rules = rules_nobody_may_create,
                .start_daemon = TRUE,
        };
        static const LoopdFixtureOptions daemon_opts = { .start_daemon = TRUE };
        static const LoopdFixtureOptions quota_opts = {
                .start_polkit = TRUE,
                .polkit_rules = rules_nobody_may_create,
                .start_daemon = TRUE,
                .daemon_args = quota_args,
        };
        static const LoopdFixtureOptions bus_only = { 0 };

        g_test_init(&argc, &argv, NULL);
        g_test_add("/faults/kill-9/storm", LoopdFixture, &storm_opts, loopd_fixture_setup, test_kill9_storm,
                   loopd_fixture_teardown);
        g_test_add("/faults/disconnect/before-reply", LoopdFixture, &daemon_opts, loopd_fixture_setup,
                   test_disconnect_before_reply, loopd_fixture_teardown);
        g_test_add("/faults/quota", LoopdFixture, &quota_opts, loopd_fixture_setup, test_quota_recovers,
                   loopd_fixture_teardown);
        g_test_add("/faults/state-dir/full", LoopdFixture, &bus_only, loopd_fixture_setup, test_state_dir_full,
                   loopd_fixture_teardown);
        g_test_add("/faults/state-dir/read-only", LoopdFixture, &bus_only, loopd_fixture_setup,
                   test_state_dir_read_only, loopd_fixture_teardown);
        g_test_add("/faults/no-free-device", LoopdFixture, &daemon_opts, loopd_fixture_setup, test_no_free_device,
                   loopd_fixture_teardown);
        return g_test_run();
}
