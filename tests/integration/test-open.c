/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Open as the callers it is for: the owner and root get a usable fd
 * without polkit being asked, anyone else by org.loopd.manage-others
 * (operation "open"), "read-only" gives an O_RDONLY fd, and the errors are
 * the documented ones. "Usable" is checked by reading the first block
 * through the returned fd and comparing it with the backing file's.
 */

#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <string.h>
#include <unistd.h>

#include "emergency.h"
#include "owners-util.h"
#include "service-util.h"

#define NOBODY LOOPD_TEST_NOBODY

/* Creates are nobody's; manage-others is refused to everyone, so an Open
 * that asked polkit would fail. */
#define RULES_CREATE_ONLY                                                                              \
        LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE) LOOPD_RULE_DENY("*", LOOPD_ACTION_MANAGE_OTHERS)

static const LoopdFixtureOptions opts = {
        .start_polkit = TRUE,
        .polkit_rules = RULES_CREATE_ONLY,
        .start_daemon = TRUE,
};

typedef struct Opened {
        char *obj, *dev, *mode, *hash; /* "-" for what Device.Open does not return */
        char *error;                   /* the D-Bus error name, or NULL */
} Opened;

static void opened_clear(Opened *o) {
        g_free(o->obj);
        g_free(o->dev);
        g_free(o->mode);
        g_free(o->hash);
        g_free(o->error);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Opened, opened_clear)

/* Open (Manager.Open of @name, or Device.Open of the object @name when
 * @device_object) as @uid. */
static void open_as(LoopdFixture *f, uid_t uid, const char *name, gboolean device_object, gboolean ro, Opened *o) {
        g_auto(LoopdRunResult) r = { 0 };
        g_auto(GStrv) w = NULL;

        probe_as(f, uid, &r, device_object ? "device-open" : "open", name, ro ? "--ro" : NULL, NULL);
        w = g_strsplit(g_strchomp(r.out), " ", 5);
        if (r.status == 0 && g_strv_length(w) == 5 && g_str_equal(w[0], "ok")) {
                o->obj = g_strdup(w[1]);
                o->dev = g_strdup(w[2]);
                o->mode = g_strdup(w[3]);
                o->hash = g_strdup(w[4]);
                return;
        }
        if (r.status == 1 && g_strv_length(w) >= 2 && g_str_equal(w[0], "error")) {
                o->error = g_strdup(w[1]);
                g_test_message("Open %s as uid %u: %s", name, (unsigned) uid, r.out);
                return;
        }
        g_error("Open %s as uid %u: exit %d: %s%s", name, (unsigned) uid, r.status, r.out, r.err);
}

static void assert_opened(const Opened *o, const char *obj, const char *dev, const char *mode, const char *hash,
                          const char *what) {
        if (o->error)
                g_error("%s: refused with %s", what, o->error);
        g_assert_cmpstr(o->obj, ==, obj);
        g_assert_cmpstr(o->dev, ==, dev);
        if (g_strcmp0(o->mode, mode) != 0)
                g_error("%s: the fd is %s, not %s", what, o->mode, mode);
        if (g_strcmp0(o->hash, hash) != 0)
                g_error("%s: the first block read through the fd hashes %s, the backing file's %s", what, o->hash,
                        hash);
}

static void test_owner_and_root_without_asking(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *hash = NULL, *obj = NULL, *dev = NULL, *name = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_marked_image(f, "open-owner.img", 4 * MiB, NOBODY);
        hash = file_block_hash(img);
        create_as_nobody(f, img, NULL, &obj, &dev);
        name = g_path_get_basename(dev);
        {
                g_auto(Opened) o = { 0 };
                open_as(f, NOBODY, name, FALSE, FALSE, &o);
                assert_opened(&o, obj, dev, "rw", hash, "the owner's Open(loopN)");
        }
        {
                g_auto(Opened) o = { 0 };
                open_as(f, NOBODY, dev, FALSE, TRUE, &o);
                assert_opened(&o, obj, dev, "ro", hash, "the owner's Open(/dev/loopN, read-only)");
        }
        {
                g_auto(Opened) o = { 0 };
                open_as(f, NOBODY, obj, TRUE, FALSE, &o);
                assert_opened(&o, "-", "-", "rw", hash, "the owner's Device.Open");
        }
        {
                g_auto(Opened) o = { 0 };
                open_as(f, 0, dev, FALSE, FALSE, &o);
                assert_opened(&o, obj, dev, "rw", hash, "root's Open");
        }
}

static void test_other_uid_needs_manage_others(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *hash = NULL, *obj = NULL, *dev = NULL, *rules = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_marked_image(f, "open-other.img", 4 * MiB, NOBODY);
        hash = file_block_hash(img);
        create_as_nobody(f, img, NULL, &obj, &dev);

        /* No rule: the action's default (auth_admin_keep) and no interaction. */
        loopd_fixture_set_polkit_rules(f, LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE));
        {
                g_auto(Opened) o = { 0 };
                open_as(f, OTHER_UID, dev, FALSE, FALSE, &o);
                g_assert_cmpstr(o.error, ==, LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED);
        }
        /* A rule that says no. */
        loopd_fixture_set_polkit_rules(f, RULES_CREATE_ONLY);
        {
                g_auto(Opened) o = { 0 };
                open_as(f, OTHER_UID, dev, FALSE, FALSE, &o);
                g_assert_cmpstr(o.error, ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
                g_clear_pointer(&o.error, g_free);
                open_as(f, OTHER_UID, obj, TRUE, TRUE, &o);
                g_assert_cmpstr(o.error, ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        }
        /* A rule that says yes to exactly this: an open of this device of
         * nobody's, read-write; the details are what rules are written on. */
        rules = g_strdup_printf(LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE)
                                "polkit.addRule(function(action, subject) {\n"
                                "        if (action.id == '" LOOPD_ACTION_MANAGE_OTHERS "' && subject.user == 'daemon' &&\n"
                                "            action.lookup('operation') == 'open' && action.lookup('device') == '%s' &&\n"
                                "            action.lookup('device_owner') == '%u' &&\n"
                                "            action.lookup('backing_file') == '%s')\n"
                                "                return polkit.Result.YES;\n"
                                "});\n",
                                dev, NOBODY, img);
        loopd_fixture_set_polkit_rules(f, rules);
        {
                g_auto(Opened) o = { 0 };
                open_as(f, OTHER_UID, dev, FALSE, FALSE, &o);
                assert_opened(&o, obj, dev, "rw", hash, "Open by another uid that manage-others allows");
        }
        /* Read-only grants: the read_only detail says what was asked. */
        g_free(rules);
        rules = g_strdup(LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE)
                         LOOPD_RULE_IF(YES, "daemon", LOOPD_ACTION_MANAGE_OTHERS,
                                       "action.lookup('operation') == 'open' && action.lookup('read_only') == 'true'")
                         LOOPD_RULE_DENY("*", LOOPD_ACTION_MANAGE_OTHERS));
        loopd_fixture_set_polkit_rules(f, rules);
        {
                g_auto(Opened) o = { 0 };
                open_as(f, OTHER_UID, dev, FALSE, FALSE, &o);
                g_assert_cmpstr(o.error, ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        }
        {
                g_auto(Opened) o = { 0 };
                open_as(f, OTHER_UID, dev, FALSE, TRUE, &o);
                assert_opened(&o, obj, dev, "ro", hash, "read-only Open by another uid with a read-only grant");
        }
        /* None of this gave the other uid the node itself. */
        {
                NodeAccess a = probe_node(f, OTHER_UID, dev);
                g_assert_cmpstr(a.rw, ==, "EACCES");
                g_assert_cmpstr(a.ro, ==, "EACCES");
        }
}

static void test_readonly_device_opens_readonly(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *hash = NULL, *obj = NULL, *dev = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_marked_image(f, "open-ro.img", 4 * MiB, NOBODY);
        hash = file_block_hash(img);
        create_as_nobody(f, img, "read-only=b:true", &obj, &dev);
        {
                g_auto(Opened) o = { 0 };
                open_as(f, NOBODY, dev, FALSE, FALSE, &o);
                assert_opened(&o, obj, dev, "ro", hash, "the owner's Open of a read-only device");
        }
        {
                g_auto(Opened) o = { 0 };
                open_as(f, 0, dev, FALSE, FALSE, &o);
                assert_opened(&o, obj, dev, "ro", hash, "root's Open of a read-only device");
        }
}

static void test_errors(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL, *free_dev = NULL;
        g_autofree char *free_name = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        /* A node that exists and is attached to nothing: one of our own,
         * high enough that no free-node search of another test takes it. */
        {
                int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
                int id = -1, number = -1;
                g_auto(Opened) o = { 0 };

                g_assert_cmpint(ctl, >=, 0);
                for (int attempt = 0; attempt < 20 && number < 0; attempt++) {
                        number = ioctl(ctl, LOOP_CTL_ADD, g_random_int_range(3000, 4000));
                        if (number >= 0)
                                id = emergency_add_loop_node((guint32) number);
                }
                g_assert_cmpint(number, >=, 0);
                g_assert_cmpint(id, >=, 0);
                free_name = g_strdup_printf("loop%d", number);
                free_dev = g_strdup_printf("/dev/loop%d", number);
                open_as(f, NOBODY, free_name, FALSE, FALSE, &o);
                g_assert_cmpstr(o.error, ==, LOOPD_ERROR_NO_SUCH_DEVICE);
                g_clear_pointer(&o.error, g_free);
                open_as(f, NOBODY, free_dev, FALSE, FALSE, &o);
                g_assert_cmpstr(o.error, ==, LOOPD_ERROR_NO_SUCH_DEVICE);
                /* Whoever looks at every node (a udev probe, a scan by
                 * another test) may hold it a moment: EBUSY then. */
                for (int attempt = 0; attempt < 100; attempt++) {
                        if (ioctl(ctl, LOOP_CTL_REMOVE, number) >= 0) {
                                emergency_forget(id);
                                id = -1;
                                break;
                        }
                        g_usleep(20000);
                }
                if (id >= 0)
                        g_test_message("loop%d is still busy: the cleanup at exit removes it", number);
                close(ctl);
        }
        {
                g_auto(Opened) o = { 0 };
                open_as(f, NOBODY, "/dev/loop999999", FALSE, FALSE, &o);
                g_assert_cmpstr(o.error, ==, LOOPD_ERROR_NO_SUCH_DEVICE);
        }
        for (const char *const *bad = (const char *const[]) { "/etc/passwd", "sda", "/dev/loop-control",
                                                               "/dev/../dev/loop0", NULL };
             *bad; bad++) {
                g_auto(Opened) o = { 0 };
                open_as(f, NOBODY, *bad, FALSE, FALSE, &o);
                if (g_strcmp0(o.error, LOOPD_ERROR_NOT_A_LOOP_DEVICE) != 0)
                        g_error("Open(%s): %s, not NotALoopDevice", *bad, o.error ? o.error : "success");
        }

        /* Removed while held: the kernel keeps it until the last close, but
         * it is gone for Open. */
        img = make_marked_image(f, "open-pending.img", 4 * MiB, NOBODY);
        create_as_nobody(f, img, NULL, &obj, &dev);
        {
                g_autoptr(Holder) h = holder_new(0, dev, TRUE);
                g_auto(LoopdRunResult) r = { 0 };
                g_auto(Opened) o = { 0 };
                g_assert_cmpstr(holder_status(h), ==, "ok");
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "remove", dev, NULL);
                g_assert_cmpint(r.status, ==, 0);
                open_as(f, NOBODY, dev, FALSE, FALSE, &o);
                g_assert_cmpstr(o.error, ==, LOOPD_ERROR_NO_SUCH_DEVICE);
        }
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn) g_test_add(path, LoopdFixture, &opts, loopd_fixture_setup, fn, loopd_fixture_teardown)
        ADD("/open/owner-and-root-without-asking", test_owner_and_root_without_asking);
        ADD("/open/other-uid-needs-manage-others", test_other_uid_needs_manage_others);
        ADD("/open/readonly-device-opens-readonly", test_readonly_device_opens_readonly);
        ADD("/open/errors", test_errors);
        return g_test_run();
}
