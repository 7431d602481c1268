/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Authorization with the real polkitd: the decision table
 * caller × action × rule → result, with test rules in polkitd's private
 * mount namespace, the built loopd, and real unprivileged callers
 * (loopd-test-caller under setpriv).
 *
 * Callers: root (0, never asks polkit), nobody (65534, the "user"),
 * daemon (1, "another user"), bin (2, "the admin" where a rule says so).
 */

#include <errno.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "security-common.h"

#define NOBODY 65534
#define OTHER 1 /* daemon */
#define ADMIN 2 /* bin */

/* ---- helpers ------------------------------------------------------------ */

static gid_t gid_for(uid_t uid) {
        return uid == NOBODY ? NOBODY : (gid_t) uid;
}

/* loopd-test-caller as @uid; the result's first line in r->fields. */
#define CALL(f, uid, r, ...) loopd_fixture_call_as((f), (uid), gid_for(uid), (r), __VA_ARGS__, NULL)

static void assert_ok(const LoopdRunResult *r) {
        if (!r->fields || !r->fields[0] || strcmp(r->fields[0], "ok") != 0)
                g_error("expected ok, got status %d: %s%s", r->status, r->out, r->err);
}

static void assert_error(const LoopdRunResult *r, const char *name, const char *needle) {
        if (!r->fields || !r->fields[0] || strcmp(r->fields[0], "error") != 0 || !r->fields[1])
                g_error("expected %s, got status %d: %s%s", name, r->status, r->out, r->err);
        if (strcmp(r->fields[1], name) != 0)
                g_error("expected %s, got %s", name, r->out);
        if (needle && (!r->fields[2] || !strstr(r->fields[2], needle)))
                g_error("%s: the message does not mention '%s': %s", name, needle, r->out);
}

/* Creates a device as @uid from @image (opened O_RDWR by the caller) and
 * returns "/dev/loopN"; *object (may be NULL) gets the object path. */
static char *create_as(LoopdFixture *f, uid_t uid, const char *image, char **object) {
        g_auto(LoopdRunResult) r = { 0 };

        CALL(f, uid, &r, "create", image);
        assert_ok(&r);
        if (object)
                *object = g_strdup(r.fields[1]);
        return g_strdup(r.fields[2]);
}

static char *image_for(LoopdFixture *f, const char *name, uid_t uid) {
        return loopd_fixture_make_image(f, name, 1 << 20, uid, gid_for(uid), 0600);
}

static gboolean attached(LoopdFixture *f, const char *device) {
        g_autoptr(GPtrArray) l = loopd_fixture_list_loops(f);
        for (guint i = 0; i < l->len; i++)
                if (strcmp(l->pdata[i], device) == 0)
                        return TRUE;
        return FALSE;
}

static gboolean bool_property(LoopdFixture *f, const char *object, const char *name) {
        g_autoptr(GVariant) v = sec_device_property(f, object, name);
        return g_variant_get_boolean(v);
}

/* A loop device set up behind loopd's back (losetup), as an admin would. */
static char *losetup_device(LoopdFixture *f, const char *image) {
        const char *argv[] = { "losetup", "--find", "--show", image, NULL };
        g_autofree char *out = NULL, *err = NULL;
        g_autoptr(GError) error = NULL;
        int st;

        if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &st, &error))
                return NULL;
        if (!g_spawn_check_wait_status(st, NULL))
                return NULL;
        return g_strstrip(g_steal_pointer(&out));
}

static const LoopdFixtureOptions polkit_and_daemon = {
        .start_polkit = TRUE,
        .start_daemon = TRUE,
};

static const char *const hung_polkit_args[] = { "--polkit-timeout=2", NULL };
static const LoopdFixtureOptions polkit_and_daemon_short_timeout = {
        .start_polkit = TRUE,
        .start_daemon = TRUE,
        .daemon_args = hung_polkit_args,
};

/* ---- rules ------------------------------------------------------------- */

/* nobody and daemon may create; nobody may manage others' devices, ever. */
static const char rules_users_may_create[] =
        LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE)
        LOOPD_RULE_ALLOW("daemon", LOOPD_ACTION_CREATE)
        LOOPD_RULE_DENY("*", LOOPD_ACTION_MANAGE_OTHERS);

static const char rules_nobody_may_not_create[] = LOOPD_RULE_DENY("nobody", LOOPD_ACTION_CREATE);

static const char rules_nobody_must_authenticate[] = LOOPD_RULE_AUTH_ADMIN("nobody", LOOPD_ACTION_CREATE);

/* nobody may create; bin is the admin for others' devices; everything
 * else falls through to the policy's defaults (auth_admin_keep). */
static const char rules_bin_is_admin[] =
        LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE)
        LOOPD_RULE_ALLOW("bin", LOOPD_ACTION_MANAGE_OTHERS);

/* Read-only devices of the caller's own files only. */
static const char rules_read_only_own_files[] =
        LOOPD_RULE_IF(YES, "nobody", LOOPD_ACTION_CREATE,
                      "action.lookup('read_only') == 'true' && action.lookup('backing_owner') == '65534'")
        LOOPD_RULE_DENY("nobody", LOOPD_ACTION_CREATE);

/* bin may remove nobody's devices, and resize devices nobody created
 * through loopd; nothing else. */
static const char rules_manage_by_details[] =
        LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE)
        LOOPD_RULE_IF(NO, "bin", LOOPD_ACTION_MANAGE_OTHERS,
                      "action.lookup('device').indexOf('/dev/loop') != 0 || "
                      "action.lookup('backing_file').indexOf('/') != 0")
        LOOPD_RULE_IF(YES, "bin", LOOPD_ACTION_MANAGE_OTHERS,
                      "action.lookup('operation') == 'remove' && action.lookup('device_owner') == '65534'")
        LOOPD_RULE_IF(YES, "bin", LOOPD_ACTION_MANAGE_OTHERS,
                      "action.lookup('operation') == 'refresh-size' && action.lookup('device_owner') == 'none'")
        LOOPD_RULE_DENY("bin", LOOPD_ACTION_MANAGE_OTHERS);

/* ---- the decision table ------------------------------------------------- */

static void test_allowed_user_manages_only_its_own(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img_n1 = NULL, *img_n2 = NULL, *img_root = NULL, *img_other = NULL;
        g_autofree char *dev_n1 = NULL, *dev_root = NULL, *dev_other = NULL, *obj_other = NULL;
        g_autofree char *obj_n1 = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_set_polkit_rules(f, rules_users_may_create);
        img_n1 = image_for(f, "nobody-1.img", NOBODY);
        img_n2 = image_for(f, "nobody-2.img", NOBODY);
        img_root = image_for(f, "root.img", 0);
        img_other = image_for(f, "other.img", OTHER);

        /* Create with an fd and CreateFromPath: both allowed by the rule. */
        dev_n1 = create_as(f, NOBODY, img_n1, &obj_n1);
        CALL(f, NOBODY, &r, "create-from-path", img_n2);
        assert_ok(&r);
        g_autofree char *dev_n2 = g_strdup(r.fields[2]), *obj_n2 = g_strdup(r.fields[1]);
        {
                g_autoptr(GVariant) owner = sec_device_property(f, obj_n2, "OwnerUID");
                g_assert_cmpuint(g_variant_get_uint32(owner), ==, NOBODY);
        }
        dev_root = create_as(f, 0, img_root, NULL);
        dev_other = create_as(f, OTHER, img_other, &obj_other);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 4);

        /* Root's and another uid's devices: manage-others, which the rule denies. */
        CALL(f, NOBODY, &r, "remove", dev_root);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, LOOPD_ACTION_MANAGE_OTHERS);
        CALL(f, NOBODY, &r, "refresh-size", dev_root);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "remove", dev_other);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "refresh-size", dev_other);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "device-remove", obj_other);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "device-refresh-size", obj_other);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, OTHER, &r, "remove", dev_n1);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        g_assert_true(attached(f, dev_root));
        g_assert_true(attached(f, dev_other));
        g_assert_true(attached(f, dev_n1));

        /* Open only names the object (public properties); it is not gated. */
        CALL(f, NOBODY, &r, "open", dev_root);
        assert_ok(&r);

        /* Its own: no polkit involved (the rule says NO to manage-others). */
        CALL(f, NOBODY, &r, "refresh-size", dev_n1);
        assert_ok(&r);
        CALL(f, NOBODY, &r, "device-refresh-size", obj_n1);
        assert_ok(&r);
        CALL(f, NOBODY, &r, "remove", dev_n1);
        assert_ok(&r);
        CALL(f, NOBODY, &r, "device-remove", obj_n2);
        assert_ok(&r);
        CALL(f, OTHER, &r, "remove", dev_other);
        assert_ok(&r);
        g_assert_false(attached(f, dev_n1));
        g_assert_false(attached(f, dev_n2));
        g_assert_false(attached(f, dev_other));

        sec_remove(f, dev_root);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        sec_assert_daemon_answers(f);
}

static void test_deny_rule_takes_no_device(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev_root = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_set_polkit_rules(f, rules_nobody_may_not_create);
        img = image_for(f, "nobody.img", NOBODY);

        CALL(f, NOBODY, &r, "create", img);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, LOOPD_ACTION_CREATE);
        CALL(f, NOBODY, &r, "create", img, "--ro-open");
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "--interactive", "create-from-path", img);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "create-from-path", img, "--opt", "read-only=b:true");
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);

        /* Root never asks. */
        dev_root = create_as(f, 0, img, NULL);
        sec_remove(f, dev_root);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        sec_assert_daemon_answers(f);
}

static void test_challenge_needs_interactive_flag(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *img_root = NULL, *dev_root = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_set_polkit_rules(f, rules_nobody_must_authenticate);
        img = image_for(f, "nobody.img", NOBODY);
        img_root = image_for(f, "root.img", 0);

        CALL(f, NOBODY, &r, "--no-interactive", "create", img);
        assert_error(&r, LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, LOOPD_ACTION_CREATE);
        CALL(f, NOBODY, &r, "create-from-path", img);
        assert_error(&r, LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, NULL);
        /* Interactive, but no authentication agent is registered for the
         * caller: polkit cannot ask anyone, so it is a plain no. */
        CALL(f, NOBODY, &r, "--interactive", "create", img);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);

        /* manage-others with no rule: the policy's default auth_admin_keep
         * is a challenge as well. */
        dev_root = create_as(f, 0, img_root, NULL);
        CALL(f, NOBODY, &r, "remove", dev_root);
        assert_error(&r, LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, LOOPD_ACTION_MANAGE_OTHERS);
        CALL(f, NOBODY, &r, "refresh-size", dev_root);
        assert_error(&r, LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, NULL);
        g_assert_true(attached(f, dev_root));
        sec_remove(f, dev_root);
        sec_assert_daemon_answers(f);
}

static void test_admin_rule_manages_others(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img_n = NULL, *img_root = NULL, *img_root2 = NULL, *img_lo = NULL;
        g_autofree char *dev_n = NULL, *dev_root = NULL, *obj_root = NULL, *dev_root2 = NULL, *dev_lo = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_set_polkit_rules(f, rules_bin_is_admin);
        img_n = image_for(f, "nobody.img", NOBODY);
        img_root = image_for(f, "root.img", 0);
        img_root2 = image_for(f, "root2.img", 0);
        img_lo = image_for(f, "losetup.img", 0);

        dev_n = create_as(f, NOBODY, img_n, NULL);
        dev_root = create_as(f, 0, img_root, &obj_root);
        dev_root2 = create_as(f, 0, img_root2, NULL);

        /* nobody has no such rule: the default challenge. */
        CALL(f, NOBODY, &r, "remove", dev_root2);
        assert_error(&r, LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, NULL);

        CALL(f, ADMIN, &r, "refresh-size", dev_n);
        assert_ok(&r);
        CALL(f, ADMIN, &r, "remove", dev_n);
        assert_ok(&r);
        CALL(f, ADMIN, &r, "device-refresh-size", obj_root);
        assert_ok(&r);
        CALL(f, ADMIN, &r, "device-remove", obj_root);
        assert_ok(&r);
        CALL(f, ADMIN, &r, "remove", dev_root2);
        assert_ok(&r);
        g_assert_false(attached(f, dev_n));
        g_assert_false(attached(f, dev_root));
        g_assert_false(attached(f, dev_root2));

        /* A device set up behind loopd's back belongs to root. */
        dev_lo = losetup_device(f, img_lo);
        if (dev_lo) {
                CALL(f, NOBODY, &r, "remove", dev_lo);
                assert_error(&r, LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED, NULL);
                CALL(f, ADMIN, &r, "remove", dev_lo);
                assert_ok(&r);
        } else
                g_test_message("losetup could not attach a device: the not-through-loopd case was left out");
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        sec_assert_daemon_answers(f);
}

static void test_stopped_polkit_denies_non_root(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img_n = NULL, *img_n2 = NULL, *img_root = NULL, *img_root2 = NULL;
        g_autofree char *dev_n = NULL, *dev_root = NULL, *dev_root2 = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_set_polkit_rules(f, rules_users_may_create);
        img_n = image_for(f, "nobody.img", NOBODY);
        img_n2 = image_for(f, "nobody2.img", NOBODY);
        img_root = image_for(f, "root.img", 0);
        img_root2 = image_for(f, "root2.img", 0);
        dev_n = create_as(f, NOBODY, img_n, NULL);
        dev_root = create_as(f, 0, img_root, NULL);

        loopd_fixture_stop_polkit(f);
        g_assert_cmpint(loopd_fixture_name_owner_pid(f, LOOPD_POLKIT_BUS_NAME), ==, 0);

        CALL(f, NOBODY, &r, "create", img_n2);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, "polkit (org.freedesktop.PolicyKit1) is not running");
        CALL(f, NOBODY, &r, "create-from-path", img_n2);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, "not running");
        CALL(f, NOBODY, &r, "remove", dev_root);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, "not running");
        g_assert_true(attached(f, dev_root));

        /* Owners never ask polkit, so they keep managing their own. */
        CALL(f, NOBODY, &r, "refresh-size", dev_n);
        assert_ok(&r);
        CALL(f, NOBODY, &r, "remove", dev_n);
        assert_ok(&r);

        /* Root is unaffected. */
        dev_root2 = create_as(f, 0, img_root2, NULL);
        CALL(f, 0, &r, "refresh-size", dev_root2);
        assert_ok(&r);
        sec_remove(f, dev_root2);
        sec_remove(f, dev_root);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        sec_assert_daemon_answers(f);
}

static double seconds_since(gint64 t0) {
        return (double) (g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
}

static void test_hung_polkit_times_out_and_others_are_served(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img_n = NULL, *img_n2 = NULL, *img_root = NULL, *dev_n = NULL, *dev_root = NULL;
        g_autofree char *line = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_autoptr(LoopdCaller) pending = NULL;
        double t_root, t_own, t_pending;
        double scale = loopd_test_timeout_scale();
        gint64 t0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_set_polkit_rules(f, rules_users_may_create);
        img_n = image_for(f, "nobody.img", NOBODY);
        img_n2 = image_for(f, "nobody2.img", NOBODY);
        img_root = image_for(f, "root.img", 0);
        dev_n = create_as(f, NOBODY, img_n, NULL);

        loopd_fixture_hang_polkit(f);
        t0 = g_get_monotonic_time();
        pending = loopd_fixture_spawn_caller_as(f, NOBODY, NOBODY, "--timeout=60", "create", img_n2, NULL);
        g_usleep(300000); /* let its call reach loopd and loopd's query reach the stopped polkitd */

        /* Root never asks polkit: served while nobody's query hangs. */
        {
                gint64 t = g_get_monotonic_time();
                dev_root = create_as(f, 0, img_root, NULL);
                sec_assert_daemon_answers(f);
                t_root = seconds_since(t);
        }
        /* An owner removing its own device does not ask either. */
        {
                gint64 t = g_get_monotonic_time();
                CALL(f, NOBODY, &r, "remove", dev_n);
                assert_ok(&r);
                t_own = seconds_since(t);
        }

        line = loopd_caller_read_line(pending);
        t_pending = seconds_since(t0);
        g_assert_nonnull(line);
        g_test_message("root served in %.3f s, owner in %.3f s, hung query answered after %.3f s: %s", t_root, t_own,
                       t_pending, line);
        g_assert_true(g_str_has_prefix(line, "error " LOOPD_DBUS_ERROR_TIMEOUT " "));
        g_assert_nonnull(strstr(line, "polkit"));
        g_assert_cmpint(loopd_caller_wait(pending), ==, 1);
        /* --polkit-timeout=2: not before, and not much after. */
        g_assert_cmpfloat(t_pending, >=, 1.8);
        g_assert_cmpfloat(t_pending, <, 2 + 8 * scale);
        /* The others were served while it was pending, and fast. */
        g_assert_cmpfloat(t_root, <, 1.0 * scale);
        g_assert_cmpfloat(t_own, <, 1.5 * scale);
        g_assert_cmpfloat(0.3 + t_root + t_own, <, t_pending);
        g_assert_false(attached(f, dev_n));

        /* No device was taken for the timed-out request. */
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 1);

        loopd_fixture_resume_polkit(f);
        {
                g_autofree char *dev_n2 = create_as(f, NOBODY, img_n2, NULL);
                sec_remove(f, dev_n2);
        }
        sec_remove(f, dev_root);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        sec_assert_daemon_answers(f);
}

/* python3-dbusmock's polkitd template in place of polkitd: it answers by
 * action only, but can hang, release late, and be slow, which the real one
 * cannot be made to do on cue. */
static void mock_call(LoopdFixture *f, const char *method, GVariant *args) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = g_dbus_connection_call_sync(
                f->bus, LOOPD_POLKIT_BUS_NAME, "/org/freedesktop/PolicyKit1/Authority", "org.freedesktop.DBus.Mock",
                method, args, NULL, G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        g_assert_no_error(error);
}

static void test_mock_polkit_slow_hung_and_late(LoopdFixture *f, gconstpointer data) {
        const char *const mock_argv[] = { "/usr/bin/python3", "-m", "dbusmock", "--system", "--template", "polkitd",
                                          NULL };
        const char *const probe_argv[] = { "/usr/bin/python3", "-c", "import dbusmock.templates.polkitd", NULL };
        g_autofree char *img_n = NULL, *img_root = NULL, *line = NULL, *dev_root = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_autoptr(LoopdCaller) pending = NULL;
        gint64 t0;
        double t;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_run_as(f, 0, 0, probe_argv, &r);
        if (r.status != 0) {
                g_test_skip("python3-dbusmock's polkitd template does not import under /usr/bin/python3");
                return;
        }
        loopd_fixture_spawn_as(f, 0, 0, mock_argv); /* freed (killed) at teardown */
        g_assert_true(loopd_fixture_wait_name(f, LOOPD_POLKIT_BUS_NAME, TRUE, 30));
        mock_call(f, "SetAllowed", g_variant_new_parsed("(['org.loopd.create'],)"));
        img_n = image_for(f, "nobody.img", NOBODY);
        img_root = image_for(f, "root.img", 0);

        /* Slow but inside --polkit-timeout=2: allowed. */
        mock_call(f, "SetDelay", g_variant_new("(d)", 1.0));
        t0 = g_get_monotonic_time();
        CALL(f, NOBODY, &r, "create", img_n);
        t = seconds_since(t0);
        assert_ok(&r);
        g_assert_cmpfloat(t, >=, 0.9);
        sec_remove(f, r.fields[2]);
        mock_call(f, "SetDelay", g_variant_new("(d)", 0.0));

        /* Hung: the caller gets Timeout, root is served meanwhile. */
        mock_call(f, "SimulateHang", g_variant_new("(b)", TRUE));
        t0 = g_get_monotonic_time();
        pending = loopd_fixture_spawn_caller_as(f, NOBODY, NOBODY, "--timeout=60", "create", img_n, NULL);
        g_usleep(300000);
        dev_root = create_as(f, 0, img_root, NULL);
        sec_assert_daemon_answers(f);
        g_assert_cmpfloat(seconds_since(t0), <, 1.5 * loopd_test_timeout_scale());
        line = loopd_caller_read_line(pending);
        g_assert_nonnull(line);
        g_assert_true(g_str_has_prefix(line, "error " LOOPD_DBUS_ERROR_TIMEOUT " "));
        g_assert_cmpfloat(seconds_since(t0), >=, 1.8);
        g_assert_cmpint(loopd_caller_wait(pending), ==, 1);

        /* The answer ("yes") arrives after loopd gave up: ignored, no
         * device appears, nothing breaks. */
        mock_call(f, "SimulateHang", g_variant_new("(b)", FALSE));
        mock_call(f, "ReleaseHangingCalls", NULL);
        g_usleep(300000);
        sec_assert_daemon_answers(f);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 1);

        /* Slower than the bound: Timeout, and the late yes again changes nothing. */
        mock_call(f, "SetDelay", g_variant_new("(d)", 3.0));
        CALL(f, NOBODY, &r, "create", img_n);
        assert_error(&r, LOOPD_DBUS_ERROR_TIMEOUT, "polkit");
        g_usleep(1500000);
        mock_call(f, "SetDelay", g_variant_new("(d)", 0.0));
        sec_assert_daemon_answers(f);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 1);

        /* And a healthy answer still works. */
        CALL(f, NOBODY, &r, "create", img_n);
        assert_ok(&r);
        CALL(f, NOBODY, &r, "remove", r.fields[2]);
        assert_ok(&r);
        sec_remove(f, dev_root);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

static const LoopdFixtureOptions mock_polkit_and_daemon = {
        .start_daemon = TRUE,
        .daemon_args = hung_polkit_args,
};

/* ---- what the rules see ------------------------------------------------- */

static void test_rules_see_read_only_and_owner(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *img_root = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_set_polkit_rules(f, rules_read_only_own_files);
        img = image_for(f, "nobody.img", NOBODY);
        img_root = loopd_fixture_make_image(f, "root-readable.img", 1 << 20, 0, 0, 0644);

        /* Read-write: denied. */
        CALL(f, NOBODY, &r, "create", img);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "create-from-path", img);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "create", img, "--opt", "read-only=b:false");
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);

        /* Read-only, by the fd's mode or by the option: allowed. */
        const char *const *ro_ways[] = {
                (const char *const[]) { "create", img, "--ro-open", NULL },
                (const char *const[]) { "create", img, "--opt", "read-only=b:true", NULL },
                (const char *const[]) { "create-from-path", img, "--opt", "read-only=b:true", NULL },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(ro_ways); i++) {
                const char *const *w = ro_ways[i];
                if (w[3])
                        CALL(f, NOBODY, &r, w[0], w[1], w[2], w[3]);
                else
                        CALL(f, NOBODY, &r, w[0], w[1], w[2]);
                assert_ok(&r);
                g_assert_true(bool_property(f, r.fields[1], "ReadOnly"));
                sec_remove(f, r.fields[2]);
        }

        /* Read-only, but root's file (backing_owner 0): denied. */
        CALL(f, NOBODY, &r, "create", img_root, "--ro-open");
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        sec_assert_daemon_answers(f);
}

static void test_rules_see_the_real_backing_file(LoopdFixture *f, gconstpointer data) {
        g_autofree char *allowed_dir = g_build_filename(f->image_dir, "allowed", NULL);
        g_autofree char *img_ok = NULL, *img_other = NULL, *dotdot = NULL, *link = NULL, *rules = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        g_assert_no_errno(mkdir(allowed_dir, 0755));
        img_ok = image_for(f, "allowed/ok.img", NOBODY);
        img_other = image_for(f, "other.img", NOBODY);
        dotdot = g_build_filename(allowed_dir, "..", "other.img", NULL);
        link = g_build_filename(allowed_dir, "link.img", NULL);
        g_assert_no_errno(symlink(img_other, link));

        /* Like the example in the policy file: a rule by path prefix. */
        rules = g_strdup_printf(LOOPD_RULE_IF(YES, "nobody", LOOPD_ACTION_CREATE,
                                              "action.lookup('backing_file').indexOf('%s/') == 0")
                                LOOPD_RULE_DENY("nobody", LOOPD_ACTION_CREATE),
                                allowed_dir);
        loopd_fixture_set_polkit_rules(f, rules);

        CALL(f, NOBODY, &r, "create", img_ok);
        assert_ok(&r);
        sec_remove(f, r.fields[2]);
        CALL(f, NOBODY, &r, "create-from-path", img_ok);
        assert_ok(&r);
        sec_remove(f, r.fields[2]);

        CALL(f, NOBODY, &r, "create", img_other);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "create-from-path", img_other);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        /* The path the caller wrote starts with the allowed prefix, the file
         * it names does not: the rule must see the file. */
        CALL(f, NOBODY, &r, "create-from-path", dotdot);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "create-from-path", link);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, NOBODY, &r, "create", link);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        sec_assert_daemon_answers(f);
}

static void test_rules_see_manage_others_details(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img_n = NULL, *img_root = NULL, *img_lo = NULL;
        g_autofree char *dev_n = NULL, *dev_root = NULL, *dev_lo = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_set_polkit_rules(f, rules_manage_by_details);
        img_n = image_for(f, "nobody.img", NOBODY);
        img_root = image_for(f, "root.img", 0);
        img_lo = image_for(f, "losetup.img", 0);
        dev_n = create_as(f, NOBODY, img_n, NULL);
        dev_root = create_as(f, 0, img_root, NULL);

        /* device_owner 65534 and operation refresh-size: no. */
        CALL(f, ADMIN, &r, "refresh-size", dev_n);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        /* device_owner 0: no. */
        CALL(f, ADMIN, &r, "remove", dev_root);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        CALL(f, ADMIN, &r, "refresh-size", dev_root);
        assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
        /* device_owner 65534, operation remove: yes. */
        CALL(f, ADMIN, &r, "remove", dev_n);
        assert_ok(&r);

        /* Not created through loopd: device_owner "none", as the policy
         * file documents. */
        dev_lo = losetup_device(f, img_lo);
        if (dev_lo) {
                CALL(f, ADMIN, &r, "refresh-size", dev_lo);
                assert_ok(&r);
                CALL(f, ADMIN, &r, "remove", dev_lo);
                assert_error(&r, LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL);
                sec_remove(f, dev_lo);
        } else
                g_test_message("losetup could not attach a device: the device_owner 'none' case was left out");
        sec_remove(f, dev_root);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        sec_assert_daemon_answers(f);
}

/* ---- the policy file against the daemon ---------------------------------- */

/* Every string "org.loopd.<lowercase...>" in the daemon's sources: the
 * polkit action ids it checks (bus names, interfaces and errors are
 * org.loopd.Loop1...). */
/* Every action id the daemon's sources and the contract's header spell. */
static GPtrArray *daemon_action_ids(void) {
        const char *root = g_getenv("LOOPD_SOURCE_ROOT");
        g_autoptr(GRegex) re = g_regex_new("\"(org\\.loopd\\.[a-z][a-z0-9.-]*)\"", 0, 0, NULL);
        GPtrArray *ids = g_ptr_array_new_with_free_func(g_free);
        static const char *const dirs[] = { "daemon", "dbus" };

        if (!root)
                return ids;
        for (size_t k = 0; k < G_N_ELEMENTS(dirs); k++) {
                g_autofree char *dir = g_build_filename(root, dirs[k], NULL);
                g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
                const char *name;

                g_assert_nonnull(d);
                while ((name = g_dir_read_name(d))) {
                        g_autofree char *path = NULL, *text = NULL;
                        g_autoptr(GMatchInfo) m = NULL;

                        if (!g_str_has_suffix(name, ".c") && !g_str_has_suffix(name, ".h"))
                                continue;
                        path = g_build_filename(dir, name, NULL);
                        g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
                        for (g_regex_match(re, text, 0, &m); g_match_info_matches(m); g_match_info_next(m, NULL)) {
                                g_autofree char *id = g_match_info_fetch(m, 1);
                                if (!g_ptr_array_find_with_equal_func(ids, id, g_str_equal, NULL))
                                        g_ptr_array_add(ids, g_steal_pointer(&id));
                        }
                }
        }
        return ids;
}

static void test_policy_declares_every_checked_action(LoopdFixture *f, gconstpointer data) {
        const char *policy = g_getenv("LOOPD_POLKIT_POLICY");
        g_autoptr(GPtrArray) ids = NULL;
        g_autofree char *text = NULL, *src = NULL, *src_path = NULL;
        g_autoptr(GRegex) detail_re = g_regex_new("\\$\\(([a-z_]+)\\)", 0, 0, NULL);
        g_autoptr(GMatchInfo) m = NULL;
        g_autoptr(LoopdCaller) nobody = NULL;
        g_autofree char *line = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!g_getenv("LOOPD_SOURCE_ROOT") || !policy) {
                g_test_skip("LOOPD_SOURCE_ROOT or LOOPD_POLKIT_POLICY unset: run under meson test");
                return;
        }
        ids = daemon_action_ids();
        g_assert_cmpuint(ids->len, >=, 2);
        g_assert_true(g_file_get_contents(policy, &text, NULL, NULL));

        /* A real caller's name as the subject: polkitd says yes, no or
         * challenge for a declared action and an error for an unknown one. */
        nobody = loopd_fixture_spawn_caller_as(f, NOBODY, NOBODY, "connect", "--hold", NULL);
        line = loopd_caller_read_line(nobody);
        g_assert_nonnull(line);
        g_assert_true(g_str_has_prefix(line, "ok :"));

        for (guint i = 0; i < ids->len; i++) {
                const char *id = ids->pdata[i];
                g_autofree char *decl = g_strdup_printf("<action id=\"%s\">", id);
                g_autoptr(GError) error = NULL;
                gboolean challenge = FALSE;

                g_test_message("the daemon checks %s", id);
                if (!strstr(text, decl))
                        g_error("the daemon checks %s, which %s does not declare", id, policy);
                if (loopd_fixture_polkit_check(f, line + 3, id, &challenge, 10000, &error) < 0)
                        g_error("polkitd does not know %s from the installed policy: %s", id, error->message);
        }

        /* Every $(detail) a message shows is one the daemon passes. */
        src_path = g_build_filename(g_getenv("LOOPD_SOURCE_ROOT"), "daemon", "bus-manager.c", NULL);
        g_assert_true(g_file_get_contents(src_path, &src, NULL, NULL));
        for (g_regex_match(detail_re, text, 0, &m); g_match_info_matches(m); g_match_info_next(m, NULL)) {
                g_autofree char *key = g_match_info_fetch(m, 1);
                g_autofree char *quoted = g_strdup_printf("\"%s\",", key);
                if (!strstr(src, quoted))
                        g_error("the policy's messages show $(%s), which the daemon never passes", key);
        }
        loopd_caller_close_stdin(nobody);
        g_assert_cmpint(loopd_caller_wait(nobody), ==, 0);
}

static const LoopdFixtureOptions polkit_only = {
        .start_polkit = TRUE,
};

int main(int argc, char **argv) {
        sec_helper_main_if_requested(argc, argv);
        g_test_init(&argc, &argv, NULL);

#define ADD(path, opts, fn) g_test_add(path, LoopdFixture, opts, loopd_fixture_setup, fn, loopd_fixture_teardown)
        ADD("/security/polkit/allowed-user-manages-only-its-own", &polkit_and_daemon,
            test_allowed_user_manages_only_its_own);
        ADD("/security/polkit/deny-rule-takes-no-device", &polkit_and_daemon, test_deny_rule_takes_no_device);
        ADD("/security/polkit/challenge-needs-interactive-flag", &polkit_and_daemon,
            test_challenge_needs_interactive_flag);
        ADD("/security/polkit/admin-rule-manages-others", &polkit_and_daemon, test_admin_rule_manages_others);
        ADD("/security/polkit/stopped-polkit-denies-non-root", &polkit_and_daemon,
            test_stopped_polkit_denies_non_root);
        ADD("/security/polkit/hung-polkit-times-out-others-served", &polkit_and_daemon_short_timeout,
            test_hung_polkit_times_out_and_others_are_served);
        ADD("/security/polkit/mock-polkit-slow-hung-and-late", &mock_polkit_and_daemon,
            test_mock_polkit_slow_hung_and_late);
        ADD("/security/polkit/rules-see-read-only-and-owner", &polkit_and_daemon, test_rules_see_read_only_and_owner);
        ADD("/security/polkit/rules-see-the-real-backing-file", &polkit_and_daemon,
            test_rules_see_the_real_backing_file);
        ADD("/security/polkit/rules-see-manage-others-details", &polkit_and_daemon,
            test_rules_see_manage_others_details);
        ADD("/security/polkit/policy-declares-every-checked-action", &polkit_only,
            test_policy_declares_every_checked_action);
        return g_test_run();
}
