/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The bus service against the kernel: every method, option and property of
 * org.loopd.Loop1 on a private system bus with the real loopd, as root and
 * as an unprivileged uid. Assertions read the kernel (sysfs, ioctls,
 * losetup), never loopd's own replies, except where the reply *is* the
 * behaviour (errors, object paths, signals).
 */

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>
#include <glib.h>
#include <glib/gstdio.h>

#include "fixture.h"
#include "service-util.h"

static const char *const quota_args[] = { "--quota=2", NULL };
static const LoopdFixtureOptions quota_opts = {
        .start_polkit = TRUE,
        .polkit_rules = rules_nobody_may_create,
        .start_daemon = TRUE,
        .daemon_args = quota_args,
};

static GVariant *options_of(const char *key, GVariant *value) {
        GVariantBuilder b;
        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        if (key)
                g_variant_builder_add(&b, "{sv}", key, value);
        return g_variant_builder_end(&b);
}

static guint32 prop_u(GVariant *props, const char *key) {
        guint32 v;
        g_assert_true(g_variant_lookup(props, key, "u", &v));
        return v;
}

static guint64 prop_t(GVariant *props, const char *key) {
        guint64 v;
        g_assert_true(g_variant_lookup(props, key, "t", &v));
        return v;
}

static gboolean prop_b(GVariant *props, const char *key) {
        gboolean v;
        g_assert_true(g_variant_lookup(props, key, "b", &v));
        return v;
}

static GVariant *props_ok(LoopdFixture *f, const char *obj) {
        g_autoptr(GError) error = NULL;
        GVariant *p = device_properties(f->bus, obj, &error);
        g_assert_no_error(error);
        return p;
}

static char *manager_open(LoopdFixture *f, const char *name, GError **error) {
        g_autoptr(GVariant) r = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "GetDevice",
                                           g_variant_new("(s)", name), "(o)", error);
        char *obj = NULL;
        if (r)
                g_variant_get(r, "(o)", &obj);
        return obj;
}

static void manager_call_ok(LoopdFixture *f, const char *method, const char *dev) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, method,
                                           g_variant_new("(s)", dev), "()", &error);
        g_assert_no_error(error);
}

/* ---- Create: every option, every property --------------------------------- */

typedef struct OptionCase {
        const char *key;
        const char *type; /* GVariant type string of the value */
        guint64 value;
} OptionCase;

static const OptionCase option_cases[] = {
        { "offset", "t", 1 * MiB },
        { "size-limit", "t", 2 * MiB },
        { "block-size", "u", 4096 },
        { "read-only", "b", TRUE },
        { "autoclear", "b", TRUE },
        { "partscan", "b", TRUE },
        { "direct-io", "b", TRUE },
        { "bind-to-caller", "b", TRUE },
};

static void test_create_option_reaches_kernel(LoopdFixture *f, gconstpointer data) {
        const OptionCase *oc = data;
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL;
        g_autoptr(GVariant) props = NULL;
        g_auto(KernelLoop) k = { 0 };
        GVariant *value;
        guint32 number;
        int devfd = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "opt.img", 8 * MiB);
        if (g_str_equal(oc->type, "t"))
                value = g_variant_new_uint64(oc->value);
        else if (g_str_equal(oc->type, "u"))
                value = g_variant_new_uint32((guint32) oc->value);
        else
                value = g_variant_new_boolean((gboolean) oc->value);
        obj = create_ok(f, img, options_of(oc->key, value), &dev, &devfd);
        number = loop_number_of(dev);
        g_assert_true(kernel_loop_read(number, &k));

        props = props_ok(f, obj);
        assert_properties_match_kernel(props, devfd);
        g_assert_cmpstr(k.backing_file, ==, img);
        g_assert_cmpuint(prop_u(props, "OwnerUID"), ==, 0);

        /* The option itself, in the kernel's words. */
        if (g_str_equal(oc->key, "offset")) {
                g_assert_cmpuint(k.offset, ==, oc->value);
                g_assert_cmpuint(k.size, ==, 8 * MiB - oc->value);
        } else if (g_str_equal(oc->key, "size-limit")) {
                g_assert_cmpuint(k.size_limit, ==, oc->value);
                g_assert_cmpuint(k.size, ==, oc->value);
        } else if (g_str_equal(oc->key, "block-size"))
                g_assert_cmpuint(k.block_size, ==, oc->value);
        else if (g_str_equal(oc->key, "read-only"))
                g_assert_true(k.read_only);
        else if (g_str_equal(oc->key, "autoclear"))
                g_assert_true(k.autoclear);
        else if (g_str_equal(oc->key, "partscan"))
                g_assert_true(k.partscan); /* no partition parsers here: no loopNpM to look for */
        else if (g_str_equal(oc->key, "direct-io"))
                g_assert_true(k.direct_io);
        g_assert_cmpint(prop_b(props, "BoundToCaller"), ==, g_str_equal(oc->key, "bind-to-caller"));

        /* And nothing else was set: the defaults of everything not asked for. */
        if (!g_str_equal(oc->key, "read-only"))
                g_assert_false(k.read_only);
        if (!g_str_equal(oc->key, "autoclear"))
                g_assert_false(k.autoclear);
        if (!g_str_equal(oc->key, "direct-io"))
                g_assert_false(k.direct_io);
        if (!g_str_equal(oc->key, "offset"))
                g_assert_cmpuint(k.offset, ==, 0);

        close(devfd);
        if (!g_str_equal(oc->key, "autoclear"))
                manager_call_ok(f, "Remove", dev);
        assert_detached(number, 5);
}

static void test_create_all_options_at_once(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL;
        g_autoptr(GVariant) props = NULL;
        g_auto(KernelLoop) k = { 0 };
        GVariantBuilder b;
        int devfd = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "all.img", 16 * MiB);
        g_variant_builder_init(&b, G_VARIANT_TYPE("a{sv}"));
        g_variant_builder_add(&b, "{sv}", "offset", g_variant_new_uint64(4096));
        g_variant_builder_add(&b, "{sv}", "size-limit", g_variant_new_uint64(4 * MiB));
        g_variant_builder_add(&b, "{sv}", "block-size", g_variant_new_uint32(1024));
        g_variant_builder_add(&b, "{sv}", "read-only", g_variant_new_boolean(TRUE));
        g_variant_builder_add(&b, "{sv}", "partscan", g_variant_new_boolean(TRUE));
        g_variant_builder_add(&b, "{sv}", "direct-io", g_variant_new_boolean(TRUE));
        g_variant_builder_add(&b, "{sv}", "bind-to-caller", g_variant_new_boolean(TRUE));
        obj = create_ok(f, img, g_variant_builder_end(&b), &dev, &devfd);

        g_assert_true(kernel_loop_read(loop_number_of(dev), &k));
        g_assert_cmpuint(k.offset, ==, 4096);
        g_assert_cmpuint(k.size_limit, ==, 4 * MiB);
        g_assert_cmpuint(k.size, ==, 4 * MiB);
        g_assert_cmpuint(k.block_size, ==, 1024);
        g_assert_true(k.read_only && k.partscan && k.direct_io);
        g_assert_false(k.autoclear);
        props = props_ok(f, obj);
        assert_properties_match_kernel(props, devfd);
        g_assert_true(prop_b(props, "BoundToCaller"));
        close(devfd);
        manager_call_ok(f, "Remove", dev);
        assert_detached(loop_number_of(dev), 5);
}

static void test_create_readonly_fd_forces_readonly(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL;
        g_autoptr(GVariant) props = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(KernelLoop) k = { 0 };
        int devfd = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "ro.img", 4 * MiB);
        /* Asking for read-write does not matter: the fd cannot write. */
        obj = create_with_fd(f->bus, img, O_RDONLY, options_of("read-only", g_variant_new_boolean(FALSE)), &dev,
                             &devfd, &error);
        g_assert_no_error(error);
        g_assert_true(kernel_loop_read(loop_number_of(dev), &k));
        g_assert_true(k.read_only);
        props = props_ok(f, obj);
        g_assert_true(prop_b(props, "ReadOnly"));
        assert_properties_match_kernel(props, devfd); /* includes: devfd is O_RDONLY */
        g_assert_cmpint(fcntl(devfd, F_GETFL) & O_ACCMODE, ==, O_RDONLY);
        close(devfd);
        manager_call_ok(f, "Remove", dev);
}

static void test_create_read_only_option_gives_readonly_fd(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL;
        int devfd = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "rofd.img", 4 * MiB);
        obj = create_ok(f, img, options_of("read-only", g_variant_new_boolean(TRUE)), &dev, &devfd);
        g_assert_cmpint(fcntl(devfd, F_GETFL) & O_ACCMODE, ==, O_RDONLY);
        /* And a read-write device gives a read-write fd. */
        close(devfd);
        manager_call_ok(f, "Remove", dev);
        g_clear_pointer(&obj, g_free);
        g_clear_pointer(&dev, g_free);
        obj = create_ok(f, img, NULL, &dev, &devfd);
        g_assert_cmpint(fcntl(devfd, F_GETFL) & O_ACCMODE, ==, O_RDWR);
        close(devfd);
        manager_call_ok(f, "Remove", dev);
}

static void test_create_unknown_option_is_invalid_args_naming_key(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL;
        g_autoptr(GError) error = NULL;
        guint before;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "unknown.img", 4 * MiB);
        obj = create_with_fd(f->bus, img, O_RDWR, options_of("no-such-option", g_variant_new_boolean(TRUE)), NULL,
                             NULL, &error);
        g_assert_null(obj);
        assert_dbus_error(error, LOOPD_DBUS_ERROR_INVALID_ARGS);
        g_assert_nonnull(strstr(error->message, "no-such-option"));
        before = loopd_fixture_count_loops(f);
        g_assert_cmpuint(before, ==, 0);
}

static void test_create_wrong_option_type_is_invalid_args(LoopdFixture *f, gconstpointer data) {
        static const struct {
                const char *key;
                const char *value; /* GVariant text */
        } cases[] = {
                { "offset", "uint32 4096" },      { "size-limit", "'big'" },
                { "block-size", "uint64 4096" },  { "read-only", "1" },
                { "autoclear", "'true'" },        { "partscan", "uint32 1" },
                { "direct-io", "int64 1" },       { "bind-to-caller", "1.0" },
        };
        g_autofree char *img = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "type.img", 4 * MiB);
        for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *obj = NULL;
                GVariant *v = g_variant_parse(NULL, cases[i].value, NULL, NULL, NULL);

                g_assert_nonnull(v);
                obj = create_with_fd(f->bus, img, O_RDWR, options_of(cases[i].key, v), NULL, NULL, &error);
                g_assert_null(obj);
                assert_dbus_error(error, LOOPD_DBUS_ERROR_INVALID_ARGS);
                if (!strstr(error->message, cases[i].key))
                        g_error("wrong type for '%s': message does not name it: %s", cases[i].key, error->message);
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

/* ---- CreateFromPath, root and nobody ---------------------------------- */

static void test_create_from_path_as_root(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = NULL, props = NULL;
        g_autoptr(GUnixFDList) out = NULL;
        g_auto(KernelLoop) k = { 0 };
        const char *obj, *devpath;
        gint32 h;
        int devfd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        /* Root may open anything: even a 0000 file. */
        img = loopd_fixture_make_image(f, "root.img", 4 * MiB, 0, 0, 0000);
        r = g_dbus_connection_call_with_unix_fd_list_sync(
                f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "CreateFromPath",
                g_variant_new("(s@a{sv})", img, options_of("read-only", g_variant_new_boolean(TRUE))),
                G_VARIANT_TYPE("(osh)"), G_DBUS_CALL_FLAGS_NONE, 30000, NULL, &out, NULL, &error);
        g_assert_no_error(error);
        g_variant_get(r, "(&o&sh)", &obj, &devpath, &h);
        devfd = g_unix_fd_list_get(out, h, NULL);
        g_assert_true(kernel_loop_read(loop_number_of(devpath), &k));
        g_assert_cmpstr(k.backing_file, ==, img);
        g_assert_true(k.read_only);
        props = props_ok(f, obj);
        assert_properties_match_kernel(props, devfd);
        g_assert_cmpuint(prop_u(props, "OwnerUID"), ==, 0);
        close(devfd);
        dev = g_strdup(devpath);
        manager_call_ok(f, "Remove", dev);

        /* A relative path is refused before anything is opened. */
        g_clear_pointer(&r, g_variant_unref);
        r = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "CreateFromPath",
                       g_variant_new("(s@a{sv})", "images/root.img", options_of(NULL, NULL)), NULL, &error);
        assert_dbus_error(error, LOOPD_DBUS_ERROR_INVALID_ARGS);
}

static void test_create_from_path_as_nobody_opens_with_callers_rights(LoopdFixture *f, gconstpointer data) {
        g_autofree char *mine = NULL, *roots = NULL, *ro = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_autoptr(GVariant) props = NULL;
        g_auto(KernelLoop) k = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        mine = loopd_fixture_make_image(f, "nobody.img", 4 * MiB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        roots = loopd_fixture_make_image(f, "secret.img", 4 * MiB, 0, 0, 0600);
        ro = loopd_fixture_make_image(f, "readable.img", 4 * MiB, 0, 0, 0644);

        /* Root's file: loopd, root itself, must not open it for nobody. */
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create-from-path", roots, NULL);
        g_assert_cmpstr(r.fields[0], ==, "error");
        g_assert_cmpstr(r.fields[1], ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        g_assert_nonnull(strstr(r.fields[2], roots));
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);

        /* World-readable but not writable: refused read-write... */
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create-from-path", ro, NULL);
        g_assert_cmpstr(r.fields[1], ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        /* ...and given read-only when asked for. */
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create-from-path", ro, "--opt",
                              "read-only=b:true", NULL);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        g_assert_true(kernel_loop_read(loop_number_of(r.fields[2]), &k));
        g_assert_true(k.read_only);
        g_assert_cmpstr(k.backing_file, ==, ro);
        kernel_loop_clear(&k);

        /* Its own file: works, read-write, and the device is nobody's. */
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create-from-path", mine, NULL);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        g_assert_true(kernel_loop_read(loop_number_of(r.fields[2]), &k));
        g_assert_cmpstr(k.backing_file, ==, mine);
        g_assert_false(k.read_only);
        props = props_ok(f, r.fields[1]);
        g_assert_cmpuint(prop_u(props, "OwnerUID"), ==, LOOPD_TEST_NOBODY);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 2);
}

static void test_create_as_nobody_without_polkit_is_denied(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "np.img", 4 * MiB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", img, NULL);
        g_assert_cmpstr(r.fields[0], ==, "error");
        g_assert_cmpstr(r.fields[1], ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        g_assert_nonnull(strstr(r.fields[2], "polkit"));
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create-from-path", img, NULL);
        g_assert_cmpstr(r.fields[1], ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        g_assert_nonnull(strstr(r.fields[2], "polkit"));
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

/* loopd remembers who each unique name is (64 of them, least recently
 * used first out): many short-lived callers of two uids, more than it
 * keeps, each answered as its own uid. Without polkit, nobody is refused
 * and root is not, so a name taken for the other's would show. */
static void test_many_callers_each_answered_as_own_uid(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "many.img", 4 * MiB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0644);
        for (int i = 0; i < 40; i++) {
                g_auto(LoopdRunResult) root = { 0 };
                g_auto(LoopdRunResult) nobody = { 0 };

                loopd_fixture_call_as(f, 0, 0, &root, "create", img, NULL);
                g_assert_cmpstr(root.fields[0], ==, "ok");
                manager_call_ok(f, "Remove", root.fields[2]);
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &nobody, "create", img, "--opt",
                                      "read-only=b:true", NULL);
                g_assert_cmpstr(nobody.fields[0], ==, "error");
                g_assert_cmpstr(nobody.fields[1], ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

/* ---- Open ----------------------------------------------------------------- */

static void test_open_by_dev_path_and_name(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL, *by_path = NULL, *by_name = NULL;
        g_autoptr(GError) error = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "open.img", 4 * MiB);
        obj = create_ok(f, img, NULL, &dev, NULL);
        by_path = manager_open(f, dev, &error);
        g_assert_no_error(error);
        by_name = manager_open(f, dev + strlen("/dev/"), &error);
        g_assert_no_error(error);
        g_assert_cmpstr(by_path, ==, obj);
        g_assert_cmpstr(by_name, ==, obj);
        manager_call_ok(f, "Remove", dev);
}

static void test_open_refuses_what_is_not_a_loop_device(LoopdFixture *f, gconstpointer data) {
        static const char *const names[] = { "/etc/passwd", "loopx", "", "../loop0", "/dev/vda", "loop",
                                             "/dev/loop-control", "loop01", "/dev/../dev/loop0", "loop0p1" };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
                g_autoptr(GError) error = NULL;
                g_autofree char *obj = manager_open(f, names[i], &error);
                g_assert_null(obj);
                assert_dbus_error(error, LOOPD_ERROR_NOT_A_LOOP_DEVICE);
        }
}

static void test_open_unattached_node_is_no_such_device(LoopdFixture *f, gconstpointer data) {
        g_autoptr(GError) error = NULL, error_missing = NULL;
        g_autofree char *name = NULL, *obj = NULL, *obj_missing = NULL;
        int ctl, number = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        /* A node of our own, unattached: nobody else takes one this high. */
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        g_assert_cmpint(ctl, >=, 0);
        for (int n = 3000 + (getpid() % 500) * 2; number < 0 && n < 5000; n++)
                if (ioctl(ctl, LOOP_CTL_ADD, n) >= 0)
                        number = n;
        g_assert_cmpint(number, >=, 0);
        name = g_strdup_printf("loop%d", number);
        obj = manager_open(f, name, &error);
        obj_missing = manager_open(f, "loop999999", &error_missing);
        (void) ioctl(ctl, LOOP_CTL_REMOVE, number); /* before asserting: leave no node behind */
        close(ctl);

        g_assert_null(obj);
        assert_dbus_error(error, LOOPD_ERROR_NO_SUCH_DEVICE);
        g_assert_null(obj_missing);
        assert_dbus_error(error_missing, LOOPD_ERROR_NO_SUCH_DEVICE);
}

/* ---- Remove / RefreshSize ------------------------------------------------ */

static void test_remove_by_manager_name_and_device_object(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj1 = NULL, *dev1 = NULL, *obj2 = NULL, *dev2 = NULL, *obj3 = NULL,
                        *dev3 = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "rm.img", 4 * MiB);
        obj1 = create_ok(f, img, NULL, &dev1, NULL);
        obj2 = create_ok(f, img, NULL, &dev2, NULL);
        obj3 = create_ok(f, img, NULL, &dev3, NULL);

        /* loopN, /dev/loopN, and the object's own Remove. */
        manager_call_ok(f, "Remove", dev1 + strlen("/dev/"));
        assert_detached(loop_number_of(dev1), 5);
        manager_call_ok(f, "Remove", dev2);
        assert_detached(loop_number_of(dev2), 5);
        g_assert_true(kernel_loop_attached(loop_number_of(dev3)));
        r = loopd_call(f->bus, obj3, LOOPD_DEVICE_INTERFACE, "Remove", NULL, "()", &error);
        g_assert_no_error(error);
        assert_detached(loop_number_of(dev3), 5);

        /* Gone: its object is gone too. (Never Remove "loopN" again here:
         * another test may have attached that node meanwhile.) */
        g_clear_pointer(&r, g_variant_unref);
        r = loopd_call(f->bus, obj1, LOOPD_DEVICE_INTERFACE, "Remove", NULL, NULL, &error);
        g_assert_null(r);
        g_assert_nonnull(error);
        g_clear_error(&error);
        /* A node that is not attached (nor exists) is NoSuchDevice. */
        r = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Remove",
                       g_variant_new("(s)", "loop999999"), NULL, &error);
        g_assert_null(r);
        assert_dbus_error(error, LOOPD_ERROR_NO_SUCH_DEVICE);
        g_clear_error(&error);
        r = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Remove",
                       g_variant_new("(s)", "/etc/passwd"), NULL, &error);
        assert_dbus_error(error, LOOPD_ERROR_NOT_A_LOOP_DEVICE);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

static void grow(const char *img, guint64 size) {
        g_assert_cmpint(truncate(img, (off_t) size), ==, 0);
}

static void test_refresh_size_follows_grown_file_and_signals(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL;
        g_autoptr(SignalLog) log = NULL;
        g_autoptr(GVariant) changed = NULL, props = NULL;
        g_autoptr(GVariant) changed2 = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(KernelLoop) k = { 0 };
        g_autoptr(GVariant) values = NULL;
        guint64 size = 0;
        guint32 number;
        int devfd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "grow.img", 4 * MiB);
        obj = create_ok(f, img, NULL, &dev, &devfd);
        number = loop_number_of(dev);
        log = signal_log_new(f->bus);

        /* Manager.RefreshSize by name. */
        grow(img, 8 * MiB);
        g_assert_true(kernel_loop_read(number, &k));
        g_assert_cmpuint(k.size, ==, 4 * MiB); /* the kernel does not follow by itself */
        kernel_loop_clear(&k);
        manager_call_ok(f, "RefreshSize", dev + strlen("/dev/"));
        g_assert_true(kernel_loop_read(number, &k));
        g_assert_cmpuint(k.size, ==, 8 * MiB);
        changed = signal_log_wait(log, "PropertiesChanged", obj, 5);
        g_assert_nonnull(changed);
        values = g_variant_get_child_value(changed, 1);
        g_assert_true(g_variant_lookup(values, "Size", "t", &size));
        g_assert_cmpuint(size, ==, 8 * MiB);
        props = props_ok(f, obj);
        g_assert_cmpuint(prop_t(props, "Size"), ==, k.size);
        assert_properties_match_kernel(props, devfd);
        kernel_loop_clear(&k);

        /* Device.RefreshSize. */
        grow(img, 12 * MiB);
        g_clear_pointer(&props, g_variant_unref);
        {
                g_autoptr(GVariant) r = loopd_call(f->bus, obj, LOOPD_DEVICE_INTERFACE, "RefreshSize", NULL, "()",
                                                   &error);
                g_assert_no_error(error);
        }
        g_assert_true(kernel_loop_read(number, &k));
        g_assert_cmpuint(k.size, ==, 12 * MiB);
        props = props_ok(f, obj);
        g_assert_cmpuint(prop_t(props, "Size"), ==, 12 * MiB);

        /* /dev/loopN works too, and an unattached name is NoSuchDevice (not
         * the removed loopN: another test may have attached it meanwhile). */
        manager_call_ok(f, "RefreshSize", dev);
        close(devfd);
        manager_call_ok(f, "Remove", dev);
        {
                g_autoptr(GVariant) r = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                                   "RefreshSize", g_variant_new("(s)", "/dev/loop999999"), NULL,
                                                   &error);
                assert_dbus_error(error, LOOPD_ERROR_NO_SUCH_DEVICE);
        }
}

/* ---- object paths ------------------------------------------------------ */

/* Attaches @img to exactly loopN (creating the node if loopd's removal
 * deleted it). FALSE when someone else took it meanwhile. */
static gboolean attach_to_number(guint32 number, const char *img) {
        g_autofree char *dev = g_strdup_printf("/dev/loop%u", number);
        const char *argv[] = { "losetup", dev, img, NULL };
        int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);

        g_assert_cmpint(ctl, >=, 0);
        (void) ioctl(ctl, LOOP_CTL_ADD, number); /* EEXIST is fine */
        close(ctl);
        for (int i = 0; i < 100 && access(dev, F_OK) < 0; i++)
                g_usleep(1000);
        return run_command(argv, NULL, NULL) == 0;
}

/* attach_to_number(), again while another test takes the node first; FALSE
 * (and the test skipped) when that happened every time. */
static gboolean reattach_same_number(guint32 number, const char *img) {
        for (int attempt = 0; attempt < 50; attempt++) {
                if (attach_to_number(number, img))
                        return TRUE;
                g_usleep(20000);
        }
        g_test_skip("loop node taken by someone else each time; cannot re-attach the same number");
        return FALSE;
}

static void test_reattached_device_gets_new_path_old_one_is_dead(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *img2 = NULL, *obj = NULL, *dev = NULL, *prefix = NULL, *obj2 = NULL,
                        *expected = NULL;
        g_autoptr(GVariant) props = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(KernelLoop) k = { 0 };
        guint32 number;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "first.img", 4 * MiB);
        img2 = make_image(f, "second.img", 4 * MiB);
        obj = create_ok(f, img, NULL, &dev, NULL);
        number = loop_number_of(dev);

        /* /org/loopd/Loop1/device/loopN_DISKSEQ with the kernel's diskseq. */
        g_assert_true(kernel_loop_read(number, &k));
        expected = g_strdup_printf("/org/loopd/Loop1/device/loop%u_%" G_GUINT64_FORMAT, number, k.diskseq);
        g_assert_cmpstr(obj, ==, expected);
        g_assert_true(g_variant_is_object_path(obj));
        kernel_loop_clear(&k);

        manager_call_ok(f, "Remove", dev);
        assert_detached(number, 5);
        if (!reattach_same_number(number, img2))
                return;
        g_assert_true(kernel_loop_read(number, &k));
        g_assert_cmpstr(k.backing_file, ==, img2);

        obj2 = manager_open(f, dev, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(obj2, !=, obj);
        g_clear_pointer(&expected, g_free);
        expected = g_strdup_printf("/org/loopd/Loop1/device/loop%u_%" G_GUINT64_FORMAT, number, k.diskseq);
        g_assert_cmpstr(obj2, ==, expected);

        /* The old path answers nothing and never acts on the new device. */
        {
                g_autoptr(GVariant) r = loopd_call(f->bus, obj, LOOPD_DEVICE_INTERFACE, "Remove", NULL, NULL, &error);
                g_autofree char *remote = NULL;
                g_assert_null(r);
                remote = g_dbus_error_get_remote_error(error);
                if (g_strcmp0(remote, DBUS_ERROR_PREFIX "UnknownObject") != 0 &&
                    g_strcmp0(remote, DBUS_ERROR_PREFIX "UnknownMethod") != 0)
                        g_error("Remove on a dead path: %s (%s)", remote, error->message);
                g_clear_error(&error);
        }
        {
                g_autoptr(GVariant) r = loopd_call(f->bus, obj, LOOPD_DEVICE_INTERFACE, "RefreshSize", NULL, NULL,
                                                   &error);
                g_assert_null(r);
                g_clear_error(&error);
        }
        props = device_properties(f->bus, obj, &error);
        g_assert_null(props);
        g_assert_nonnull(error);
        g_clear_error(&error);
        g_assert_true(kernel_loop_attached(number));
        kernel_loop_clear(&k);
        g_assert_true(kernel_loop_read(number, &k));
        g_assert_cmpstr(k.backing_file, ==, img2);

        /* The new one is a losetup device: no owner. */
        props = props_ok(f, obj2);
        g_assert_cmpuint(prop_u(props, "OwnerUID"), ==, 4294967295u);
        g_assert_false(prop_b(props, "BoundToCaller"));
        losetup_detach(dev);
}

/* ---- ObjectManager --------------------------------------------------------- */

static GVariant *managed_objects(LoopdFixture *f) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = loopd_call(f->bus, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager",
                                           "GetManagedObjects", NULL, "(a{oa{sa{sv}}})", &error);
        g_assert_no_error(error);
        return g_variant_get_child_value(r, 0);
}

static gboolean managed_has(LoopdFixture *f, const char *obj) {
        g_autoptr(GVariant) objs = managed_objects(f);
        g_autoptr(GVariant) ifaces = g_variant_lookup_value(objs, obj, G_VARIANT_TYPE("a{sa{sv}}"));
        return ifaces && g_variant_lookup_value(ifaces, LOOPD_DEVICE_INTERFACE, NULL) != NULL;
}

static void test_object_manager_lists_devices_and_signals(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL;
        g_autoptr(SignalLog) log = NULL;
        g_autoptr(GVariant) added = NULL, removed = NULL, objs = NULL, ifaces = NULL, dprops = NULL;
        g_autoptr(GVariant) props = NULL;
        const char *path;
        g_autoptr(GVariant) added_ifaces = NULL;
        g_auto(GStrv) removed_ifaces = NULL;
        int devfd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "om.img", 4 * MiB);
        log = signal_log_new(f->bus);
        obj = create_ok(f, img, NULL, &dev, &devfd);

        added = signal_log_wait(log, "InterfacesAdded", obj, 5);
        g_assert_nonnull(added);
        g_variant_get(added, "(&o@a{sa{sv}})", &path, &added_ifaces);
        g_assert_true(g_variant_lookup_value(added_ifaces, LOOPD_DEVICE_INTERFACE, NULL) != NULL);

        /* GetManagedObjects lists it with the same properties as GetAll. */
        objs = managed_objects(f);
        ifaces = g_variant_lookup_value(objs, obj, G_VARIANT_TYPE("a{sa{sv}}"));
        g_assert_nonnull(ifaces);
        dprops = g_variant_lookup_value(ifaces, LOOPD_DEVICE_INTERFACE, G_VARIANT_TYPE("a{sv}"));
        g_assert_nonnull(dprops);
        assert_properties_match_kernel(dprops, devfd);
        close(devfd);

        manager_call_ok(f, "Remove", dev);
        removed = signal_log_wait(log, "InterfacesRemoved", obj, 5);
        g_assert_nonnull(removed);
        g_variant_get(removed, "(&o^as)", &path, &removed_ifaces);
        g_assert_true(g_strv_contains((const char *const *) removed_ifaces, LOOPD_DEVICE_INTERFACE));
        g_assert_false(managed_has(f, obj));
}

/* loopd skips the uevents that its own create and remove cause (by the
 * kernel's diskseq and uevent number). What others do to the same devices
 * must still come through: a resize, a detach, a new attachment of the node. */
static void test_outside_changes_to_loopd_devices_are_followed(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *img2 = NULL, *obj = NULL, *obj2 = NULL, *dev = NULL;
        g_autoptr(SignalLog) log = NULL;
        g_autoptr(GVariant) changed = NULL, removed = NULL, added = NULL, values = NULL;
        g_auto(KernelLoop) k = { 0 };
        guint64 size = 0;
        guint32 number;
        int devfd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "outside.img", 4 * MiB);
        img2 = make_image(f, "outside2.img", 4 * MiB);
        obj = create_ok(f, img, NULL, &dev, &devfd);
        close(devfd);
        number = loop_number_of(dev);
        log = signal_log_new(f->bus);

        /* A change event about the very attachment loopd created. */
        grow(img, 8 * MiB);
        {
                const char *argv[] = { "losetup", "--set-capacity", dev, NULL };
                g_assert_cmpint(run_command(argv, NULL, NULL), ==, 0);
        }
        changed = signal_log_wait(log, "PropertiesChanged", obj, 1.0);
        g_assert_nonnull(changed);
        values = g_variant_get_child_value(changed, 1);
        g_assert_true(g_variant_lookup(values, "Size", "t", &size));
        g_assert_cmpuint(size, ==, 8 * MiB);

        /* Detached from outside: its events carry the diskseq loopd knows. */
        losetup_detach(dev);
        removed = signal_log_wait(log, "InterfacesRemoved", obj, 1.0);
        g_assert_nonnull(removed);
        g_assert_false(managed_has(f, obj));

        /* The same node attached again from outside: a newer diskseq. */
        if (!reattach_same_number(number, img2))
                return;
        g_assert_true(kernel_loop_read(number, &k));
        obj2 = g_strdup_printf("/org/loopd/Loop1/device/loop%u_%" G_GUINT64_FORMAT, number, k.diskseq);
        added = signal_log_wait(log, "InterfacesAdded", obj2, 1.0);
        g_assert_nonnull(added);
        g_assert_true(managed_has(f, obj2));
        losetup_detach(dev);
}

static void test_losetup_devices_appear_and_vanish_within_a_second(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL, *obj = NULL, *out = NULL, *expected_json = NULL;
        g_autoptr(SignalLog) log = NULL;
        g_autoptr(GVariant) added = NULL, removed = NULL, props = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(KernelLoop) k = { 0 };
        guint32 number;
        gint64 t0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "outsider.img", 4 * MiB);
        log = signal_log_new(f->bus);

        t0 = g_get_monotonic_time();
        dev = losetup_attach(img, "--read-only");
        number = loop_number_of(dev);
        g_assert_true(kernel_loop_read(number, &k));
        obj = g_strdup_printf("/org/loopd/Loop1/device/loop%u_%" G_GUINT64_FORMAT, number, k.diskseq);
        added = signal_log_wait(log, "InterfacesAdded", obj, 1.0);
        g_assert_nonnull(added);
        g_assert_cmpint(g_get_monotonic_time() - t0, <, (gint64) (1.0 * loopd_test_timeout_scale() * G_USEC_PER_SEC));
        g_assert_true(managed_has(f, obj));

        /* What losetup itself reports matches the object. */
        {
                const char *argv[] = { "losetup", "--json", "--list", "-O", "NAME,BACK-FILE,RO,SIZELIMIT,OFFSET",
                                       dev, NULL };
                g_assert_cmpint(run_command(argv, &out, NULL), ==, 0);
                g_assert_nonnull(strstr(out, img));
                g_assert_nonnull(strstr(out, "\"ro\": true"));
        }
        props = props_ok(f, obj);
        g_assert_cmpuint(prop_u(props, "OwnerUID"), ==, 4294967295u);
        g_assert_true(prop_b(props, "ReadOnly"));
        g_assert_false(prop_b(props, "BoundToCaller"));
        {
                g_autofree char *name = NULL;
                g_assert_true(g_variant_lookup(props, "BackingFile", "s", &name));
                g_assert_cmpstr(name, ==, img);
        }

        t0 = g_get_monotonic_time();
        losetup_detach(dev);
        removed = signal_log_wait(log, "InterfacesRemoved", obj, 1.0);
        g_assert_nonnull(removed);
        g_assert_false(managed_has(f, obj));
        g_assert_null(device_properties(f->bus, obj, &error));
        g_assert_nonnull(error);
}

/* ---- autoclear and bind-to-caller --------------------------------------------- */

static void test_autoclear_device_lives_while_fd_is_held(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL;
        g_autoptr(SignalLog) log = NULL;
        g_autoptr(GVariant) props = NULL, removed = NULL;
        guint32 number;
        int devfd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "ac.img", 4 * MiB);
        log = signal_log_new(f->bus);
        obj = create_ok(f, img, options_of("autoclear", g_variant_new_boolean(TRUE)), &dev, &devfd);
        number = loop_number_of(dev);

        /* Held: it stays, however long. */
        spin(0.5);
        g_assert_true(kernel_loop_attached(number));
        props = props_ok(f, obj);
        g_assert_true(prop_b(props, "Autoclear"));

        /* Last close: the kernel detaches, and loopd follows. */
        close(devfd);
        assert_detached(number, 2);
        removed = signal_log_wait(log, "InterfacesRemoved", obj, 2);
        g_assert_nonnull(removed);
        g_assert_false(managed_has(f, obj));
}

static void test_bind_to_caller_device_goes_with_killed_caller(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *line = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        g_autoptr(GVariant) props = NULL;
        g_auto(GStrv) parts = NULL;
        guint32 number;
        gint64 t0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "bound.img", 4 * MiB);
        c = loopd_fixture_spawn_caller_as(f, 0, 0, "create", img, "--opt", "bind-to-caller=b:true", "--hold", NULL);
        line = loopd_caller_read_line(c);
        g_assert_nonnull(line);
        parts = g_strsplit(line, " ", 3);
        g_assert_cmpstr(parts[0], ==, "ok");
        number = loop_number_of(parts[2]);
        props = props_ok(f, parts[1]);
        g_assert_true(prop_b(props, "BoundToCaller"));

        /* Lives while the caller's connection does. */
        spin(0.5);
        g_assert_true(kernel_loop_attached(number));

        t0 = g_get_monotonic_time();
        loopd_caller_kill(c, SIGKILL);
        g_assert_cmpint(loopd_caller_wait(c), ==, 128 + SIGKILL);
        assert_detached(number, 1.0);
        g_test_message("bound device gone %.0f ms after SIGKILL", (g_get_monotonic_time() - t0) / 1000.0);
        g_assert_false(managed_has(f, parts[1]));
}

static void test_bind_to_caller_device_stays_after_caller_lets_go_of_fd_only(LoopdFixture *f, gconstpointer data) {
        /* Bound to the connection, not to the fd: a caller that closes the
         * device fd but stays connected keeps its device. */
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "bound2.img", 4 * MiB);
        obj = create_ok(f, img, options_of("bind-to-caller", g_variant_new_boolean(TRUE)), &dev, NULL);
        spin(0.3);
        g_assert_true(kernel_loop_attached(loop_number_of(dev)));
        manager_call_ok(f, "Remove", dev);
        assert_detached(loop_number_of(dev), 5);
}

/* ---- ownership and quota ------------------------------------------------------ */

static void test_nobody_removes_own_device_but_not_roots(LoopdFixture *f, gconstpointer data) {
        g_autofree char *mine = NULL, *root_img = NULL, *root_obj = NULL, *root_dev = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_autoptr(GVariant) props = NULL;
        g_autofree char *nobody_obj = NULL, *nobody_dev = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        mine = loopd_fixture_make_image(f, "mine.img", 4 * MiB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        root_img = make_image(f, "roots.img", 4 * MiB);

        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", mine, NULL);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        nobody_obj = g_strdup(r.fields[1]);
        nobody_dev = g_strdup(r.fields[2]);
        props = props_ok(f, nobody_obj);
        g_assert_cmpuint(prop_u(props, "OwnerUID"), ==, LOOPD_TEST_NOBODY);
        g_clear_pointer(&props, g_variant_unref);

        root_obj = create_ok(f, root_img, NULL, &root_dev, NULL);
        props = props_ok(f, root_obj);
        g_assert_cmpuint(prop_u(props, "OwnerUID"), ==, 0);

        /* Root's device: polkit has no rule for manage-others, so no. */
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "--interactive", "remove", root_dev,
                              NULL);
        g_assert_cmpstr(r.fields[0], ==, "error");
        g_assert_cmpstr(r.fields[1], ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        g_assert_true(kernel_loop_attached(loop_number_of(root_dev)));
        /* Without interaction allowed, polkit's auth_admin is a challenge. */
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "device-remove", root_obj, NULL);
        g_assert_cmpstr(r.fields[0], ==, "error");
        g_assert_true(g_str_equal(r.fields[1], LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED) ||
                      g_str_equal(r.fields[1], LOOPD_DBUS_ERROR_ACCESS_DENIED));
        g_assert_true(kernel_loop_attached(loop_number_of(root_dev)));
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "--interactive", "refresh-size",
                              root_dev, NULL);
        g_assert_cmpstr(r.fields[1], ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);

        /* Its own: RefreshSize and Remove, by name and by object. */
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "refresh-size", nobody_dev, NULL);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "device-remove", nobody_obj, NULL);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        assert_detached(loop_number_of(nobody_dev), 5);

        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", mine, NULL);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        g_free(nobody_dev);
        nobody_dev = g_strdup(r.fields[2]);
        loopd_run_result_clear(&r);
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "remove", nobody_dev, NULL);
        g_assert_cmpstr(r.fields[0], ==, "ok");
        assert_detached(loop_number_of(nobody_dev), 5);

        /* Root may remove anyone's. */
        manager_call_ok(f, "Remove", root_dev);
}

static void test_nobody_cannot_remove_losetup_device(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *dev = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "los.img", 4 * MiB);
        dev = losetup_attach(img, NULL);
        /* The uevent may still be on its way: Remove syncs the node itself. */
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "--interactive", "remove", dev, NULL);
        g_assert_cmpstr(r.fields[0], ==, "error");
        g_assert_cmpstr(r.fields[1], ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        g_assert_true(kernel_loop_attached(loop_number_of(dev)));
        manager_call_ok(f, "Remove", dev);
        assert_detached(loop_number_of(dev), 5);
}

static void test_quota_limits_nobody_not_root(LoopdFixture *f, gconstpointer data) {
        g_autofree char *mine = NULL, *root_img = NULL;
        g_autoptr(GVariant) q = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GPtrArray) root_devs = g_ptr_array_new_with_free_func(g_free);
        guint32 quota;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        q = loopd_call(f->bus, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get",
                       g_variant_new("(ss)", LOOPD_MANAGER_INTERFACE, "QuotaPerUser"), "(v)", &error);
        g_assert_no_error(error);
        g_variant_get(q, "(v)", &q);
        {
                g_autoptr(GVariant) inner = q;
                q = NULL;
                quota = g_variant_get_uint32(inner);
        }
        g_assert_cmpuint(quota, ==, 2);

        mine = loopd_fixture_make_image(f, "q.img", 4 * MiB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        for (int i = 0; i < 2; i++) {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", mine, NULL);
                g_assert_cmpstr(r.fields[0], ==, "ok");
        }
        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", mine, NULL);
                g_assert_cmpstr(r.fields[0], ==, "error");
                g_assert_cmpstr(r.fields[1], ==, LOOPD_ERROR_QUOTA_EXCEEDED);
                loopd_run_result_clear(&r);
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create-from-path", mine, NULL);
                g_assert_cmpstr(r.fields[1], ==, LOOPD_ERROR_QUOTA_EXCEEDED);
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 2);

        /* Root is exempt. */
        root_img = make_image(f, "rootq.img", 4 * MiB);
        for (int i = 0; i < 3; i++) {
                char *dev = NULL;
                g_autofree char *obj = create_ok(f, root_img, NULL, &dev, NULL);
                g_ptr_array_add(root_devs, dev);
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 5);
}

/* ---- Introspect against the contract ------------------------------------------- */

static GDBusNodeInfo *contract(void) {
        const char *path = g_getenv("LOOPD_INTERFACE_XML");
        g_autofree char *xml = NULL;
        g_autoptr(GError) error = NULL;
        GDBusNodeInfo *node;

        if (!path) {
                const char *src = g_getenv("LOOPD_SOURCE_ROOT");
                g_assert_nonnull(src);
                path = g_build_filename(src, "dbus", "org.loopd.Loop1.xml", NULL);
        }
        g_assert_true(g_file_get_contents(path, &xml, NULL, &error));
        node = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);
        return node;
}

static GDBusNodeInfo *introspect(LoopdFixture *f, const char *obj) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = loopd_call(f->bus, obj, "org.freedesktop.DBus.Introspectable", "Introspect", NULL,
                                           "(s)", &error);
        const char *xml;
        GDBusNodeInfo *node;

        g_assert_no_error(error);
        g_variant_get(r, "(&s)", &xml);
        node = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);
        return node;
}

static void assert_args_equal(const char *what, GDBusArgInfo **want, GDBusArgInfo **got) {
        guint nw = 0, ng = 0;

        while (want && want[nw])
                nw++;
        while (got && got[ng])
                ng++;
        if (nw != ng)
                g_error("%s: %u arguments in the contract, %u in Introspect", what, nw, ng);
        for (guint i = 0; i < nw; i++) {
                if (g_strcmp0(want[i]->name, got[i]->name) != 0 || g_strcmp0(want[i]->signature, got[i]->signature) != 0)
                        g_error("%s: argument %u is %s %s in the contract, %s %s in Introspect", what, i,
                                want[i]->name, want[i]->signature, got[i]->name, got[i]->signature);
        }
}

static void assert_interface_equal(GDBusInterfaceInfo *want, GDBusInterfaceInfo *got) {
        guint n;

        g_assert_nonnull(got);
        n = 0;
        for (GDBusMethodInfo **m = want->methods; m && *m; m++, n++) {
                GDBusMethodInfo *g = g_dbus_interface_info_lookup_method(got, (*m)->name);
                g_autofree char *in = g_strdup_printf("%s.%s (in)", want->name, (*m)->name);
                g_autofree char *out = g_strdup_printf("%s.%s (out)", want->name, (*m)->name);
                if (!g)
                        g_error("method %s.%s of the contract is missing from Introspect", want->name, (*m)->name);
                assert_args_equal(in, (*m)->in_args, g->in_args);
                assert_args_equal(out, (*m)->out_args, g->out_args);
        }
        for (GDBusMethodInfo **m = got->methods; m && *m; m++)
                if (!g_dbus_interface_info_lookup_method(want, (*m)->name))
                        g_error("Introspect has method %s.%s that the contract does not", got->name, (*m)->name);
        for (GDBusPropertyInfo **p = want->properties; p && *p; p++) {
                GDBusPropertyInfo *g = g_dbus_interface_info_lookup_property(got, (*p)->name);
                if (!g)
                        g_error("property %s.%s of the contract is missing from Introspect", want->name, (*p)->name);
                if (g_strcmp0((*p)->signature, g->signature) != 0 || (*p)->flags != g->flags)
                        g_error("property %s.%s: %s/%d in the contract, %s/%d in Introspect", want->name, (*p)->name,
                                (*p)->signature, (*p)->flags, g->signature, g->flags);
        }
        for (GDBusPropertyInfo **p = got->properties; p && *p; p++)
                if (!g_dbus_interface_info_lookup_property(want, (*p)->name))
                        g_error("Introspect has property %s.%s that the contract does not", got->name, (*p)->name);
        for (GDBusSignalInfo **s = want->signals; s && *s; s++)
                if (!g_dbus_interface_info_lookup_signal(got, (*s)->name))
                        g_error("signal %s.%s of the contract is missing", want->name, (*s)->name);
        for (GDBusSignalInfo **s = got->signals; s && *s; s++)
                if (!g_dbus_interface_info_lookup_signal(want, (*s)->name))
                        g_error("Introspect has signal %s.%s that the contract does not", got->name, (*s)->name);
}

/* Every org.loopd interface the object answers with is @expected, and it
 * equals the contract's. */
static void assert_object_matches_contract(GDBusNodeInfo *want, GDBusNodeInfo *got, const char *expected) {
        guint ours = 0;

        for (GDBusInterfaceInfo **i = got->interfaces; i && *i; i++) {
                if (!g_str_has_prefix((*i)->name, "org.loopd."))
                        continue;
                ours++;
                if (g_strcmp0((*i)->name, expected) != 0)
                        g_error("Introspect shows interface %s where only %s belongs", (*i)->name, expected);
        }
        g_assert_cmpuint(ours, ==, 1);
        assert_interface_equal(g_dbus_node_info_lookup_interface(want, expected),
                               g_dbus_node_info_lookup_interface(got, expected));
}

static void test_introspect_matches_contract(LoopdFixture *f, gconstpointer data) {
        g_autoptr(GDBusNodeInfo) want = NULL, manager = NULL, device = NULL, devdir = NULL;
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL, *leaf = NULL;
        gboolean listed = FALSE;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        want = contract();
        manager = introspect(f, LOOPD_MANAGER_PATH);
        assert_object_matches_contract(want, manager, LOOPD_MANAGER_INTERFACE);
        g_assert_nonnull(g_dbus_node_info_lookup_interface(manager, "org.freedesktop.DBus.ObjectManager"));

        img = make_image(f, "intro.img", 4 * MiB);
        obj = create_ok(f, img, NULL, &dev, NULL);
        device = introspect(f, obj);
        assert_object_matches_contract(want, device, LOOPD_DEVICE_INTERFACE);

        /* The object is reachable by walking the tree. */
        devdir = introspect(f, "/org/loopd/Loop1/device");
        leaf = g_path_get_basename(obj);
        for (GDBusNodeInfo **n = devdir->nodes; n && *n; n++)
                listed = listed || g_strcmp0((*n)->path, leaf) == 0;
        g_assert_true(listed);
        manager_call_ok(f, "Remove", dev);
}

/* ---- sd_notify ---------------------------------------------------------------- */

static void test_notify_ready_and_status(LoopdFixture *f, gconstpointer data) {
        const char *status;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        /* The fixture returned from start only after READY=1 and the name. */
        g_assert_cmpint(loopd_fixture_daemon_pid(f), >, 0);
        status = loopd_fixture_daemon_status_text(f);
        g_assert_nonnull(status);
        g_assert_true(g_str_has_prefix(status, "Serving "));
}

/* Option cases carry their OptionCase as data; the fixture gets the plain daemon options. */
static void setup_daemon(LoopdFixture *f, gconstpointer data) {
        loopd_fixture_setup(f, &daemon_opts);
}

/* busctl's --json=short reply of a call: the strings of "data", in order. */
static GStrv busctl_json_strings(const char *json) {
        g_autoptr(GRegex) data_re = g_regex_new("\"data\":\\[(.*)\\]", 0, 0, NULL);
        g_autoptr(GRegex) str_re = g_regex_new("\"([^\"]*)\"", 0, 0, NULL);
        g_autoptr(GMatchInfo) m = NULL, sm = NULL;
        g_autoptr(GStrvBuilder) b = g_strv_builder_new();
        g_autofree char *inner = NULL;

        if (!g_regex_match(data_re, json, 0, &m))
                g_error("busctl --json=short printed no data: %s", json);
        inner = g_match_info_fetch(m, 1);
        for (g_regex_match(str_re, inner, 0, &sm); g_match_info_matches(sm); g_match_info_next(sm, NULL)) {
                g_autofree char *s = g_match_info_fetch(sm, 1);
                g_strv_builder_add(b, s);
        }
        return g_strv_builder_end(b);
}

static void test_scripts_drive_it_with_busctl_and_gdbus(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *out = NULL, *err = NULL, *script = NULL;
        g_auto(GStrv) created = NULL, opened = NULL;
        g_auto(KernelLoop) k = { 0 };
        g_autoptr(GVariant) reply = NULL;
        const char *gd_obj, *gd_dev;
        gint32 handle;
        guint32 number;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_image(f, "script.img", 4 * MiB);

        /* busctl: CreateFromPath (it cannot send fds), read-only. */
        {
                const char *argv[] = { "busctl", "--json=short", "call", LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                       LOOPD_MANAGER_INTERFACE, "CreateFromPath", "sa{sv}", img, "1", "read-only",
                                       "b", "true", NULL };
                g_assert_cmpint(run_command(argv, &out, &err), ==, 0);
        }
        created = busctl_json_strings(out);
        g_assert_cmpuint(g_strv_length(created), ==, 2); /* o, s; the fd is null in JSON */
        number = loop_number_of(created[1]);
        g_assert_true(kernel_loop_read(number, &k));
        g_assert_cmpstr(k.backing_file, ==, img);
        g_assert_true(k.read_only);
        g_clear_pointer(&out, g_free);
        g_clear_pointer(&err, g_free);

        /* Open by name gives the same object. */
        {
                g_autofree char *name = g_strdup_printf("loop%u", number);
                const char *argv[] = { "busctl", "--json=short", "call", LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                       LOOPD_MANAGER_INTERFACE, "GetDevice", "s", name, NULL };
                g_assert_cmpint(run_command(argv, &out, &err), ==, 0);
        }
        opened = busctl_json_strings(out);
        g_assert_cmpuint(g_strv_length(opened), ==, 1);
        g_assert_cmpstr(opened[0], ==, created[0]);
        g_clear_pointer(&out, g_free);
        g_clear_pointer(&err, g_free);

        /* tree shows it; introspect shows the Device interface with its members. */
        {
                /* busctl walks the tree node by node and fails when one
                 * vanishes under it: other tests attach and detach devices
                 * on this machine all the time, and loopd shows them all. */
                const char *argv[] = { "busctl", "tree", LOOPD_BUS_NAME, NULL };
                int rc = -1;
                for (int attempt = 0; attempt < 10 && rc != 0; attempt++) {
                        g_clear_pointer(&out, g_free);
                        g_clear_pointer(&err, g_free);
                        rc = run_command(argv, &out, &err);
                        if (rc != 0)
                                g_test_message("busctl tree: %s", err);
                }
                g_assert_cmpint(rc, ==, 0);
                g_assert_nonnull(strstr(out, created[0]));
                g_clear_pointer(&out, g_free);
                g_clear_pointer(&err, g_free);
        }
        {
                const char *argv[] = { "busctl", "introspect", LOOPD_BUS_NAME, created[0], NULL };
                g_assert_cmpint(run_command(argv, &out, &err), ==, 0);
                g_assert_nonnull(strstr(out, LOOPD_DEVICE_INTERFACE));
                g_assert_nonnull(strstr(out, ".OwnerUID"));
                g_assert_nonnull(strstr(out, ".Remove"));
                g_clear_pointer(&out, g_free);
                g_clear_pointer(&err, g_free);
        }
        {
                const char *argv[] = { "busctl", "--json=short", "get-property", LOOPD_BUS_NAME, created[0],
                                       LOOPD_DEVICE_INTERFACE, "ReadOnly", NULL };
                g_assert_cmpint(run_command(argv, &out, &err), ==, 0);
                g_assert_nonnull(strstr(out, "\"data\":true"));
                g_clear_pointer(&out, g_free);
                g_clear_pointer(&err, g_free);
        }

        /* A mistake is a failed command with words a person can act on. */
        {
                const char *argv[] = { "busctl", "call", LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                       "Remove", "s", "sda", NULL };
                g_assert_cmpint(run_command(argv, &out, &err), !=, 0);
                g_assert_nonnull(strstr(err, "not a loop device"));
                g_clear_pointer(&out, g_free);
                g_clear_pointer(&err, g_free);
        }

        /* Remove. */
        {
                const char *argv[] = { "busctl", "call", LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                       "Remove", "s", created[1], NULL };
                g_assert_cmpint(run_command(argv, &out, &err), ==, 0);
                assert_detached(number, 5);
                g_clear_pointer(&out, g_free);
                g_clear_pointer(&err, g_free);
        }

        /* gdbus passes the backing file as an fd: 'handle 0' is its stdin,
         * opened read-write (0<>; a plain < gives a read-only device). */
        script = g_strdup_printf("exec gdbus call --system --dest %s --object-path %s --method %s.Create "
                                 "'handle 0' \"{'autoclear': <false>}\" 0<>'%s'",
                                 LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, img);
        {
                const char *argv[] = { "sh", "-c", script, NULL };
                g_assert_cmpint(run_command(argv, &out, &err), ==, 0);
        }
        reply = g_variant_parse(G_VARIANT_TYPE("(osh)"), out, NULL, NULL, NULL);
        if (!reply)
                g_error("gdbus printed: %s", out);
        g_variant_get(reply, "(&o&sh)", &gd_obj, &gd_dev, &handle);
        number = loop_number_of(gd_dev);
        kernel_loop_clear(&k);
        /* gdbus has exited (closing the device fd): a non-autoclear device stays. */
        g_assert_true(kernel_loop_read(number, &k));
        g_assert_cmpstr(k.backing_file, ==, img);
        g_assert_false(k.read_only);
        g_clear_pointer(&out, g_free);
        g_clear_pointer(&err, g_free);
        {
                g_autofree char *method = g_strconcat(LOOPD_DEVICE_INTERFACE, ".Remove", NULL);
                const char *argv[] = { "gdbus", "call", "--system", "--dest", LOOPD_BUS_NAME, "--object-path", gd_obj,
                                       "--method", method, NULL };
                g_assert_cmpint(run_command(argv, &out, &err), ==, 0);
        }
        assert_detached(number, 5);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, opts, fn) g_test_add(path, LoopdFixture, opts, loopd_fixture_setup, fn, loopd_fixture_teardown)
        for (gsize i = 0; i < G_N_ELEMENTS(option_cases); i++) {
                g_autofree char *path = g_strdup_printf("/service/create/option/%s-reaches-kernel", option_cases[i].key);
                g_test_add(path, LoopdFixture, &option_cases[i], setup_daemon,
                           test_create_option_reaches_kernel, loopd_fixture_teardown);
        }
        ADD("/service/create/all-options-at-once-reach-kernel", &daemon_opts, test_create_all_options_at_once);
        ADD("/service/create/readonly-fd-forces-readonly", &daemon_opts, test_create_readonly_fd_forces_readonly);
        ADD("/service/create/read-only-option-gives-readonly-device-fd", &daemon_opts,
            test_create_read_only_option_gives_readonly_fd);
        ADD("/service/create/unknown-option-is-invalid-args-naming-key", &daemon_opts,
            test_create_unknown_option_is_invalid_args_naming_key);
        ADD("/service/create/wrong-option-type-is-invalid-args-naming-key", &daemon_opts,
            test_create_wrong_option_type_is_invalid_args);
        ADD("/service/create-from-path/as-root", &daemon_opts, test_create_from_path_as_root);
        ADD("/service/create-from-path/as-nobody-opens-with-callers-rights", &polkit_daemon_opts,
            test_create_from_path_as_nobody_opens_with_callers_rights);
        ADD("/service/create/as-nobody-without-polkit-is-access-denied", &daemon_opts,
            test_create_as_nobody_without_polkit_is_denied);
        ADD("/service/create/many-callers-each-answered-as-own-uid", &daemon_opts,
            test_many_callers_each_answered_as_own_uid);
        ADD("/service/open/by-dev-path-and-name", &daemon_opts, test_open_by_dev_path_and_name);
        ADD("/service/open/refuses-what-is-not-a-loop-device", &daemon_opts,
            test_open_refuses_what_is_not_a_loop_device);
        ADD("/service/open/unattached-node-is-no-such-device", &daemon_opts,
            test_open_unattached_node_is_no_such_device);
        ADD("/service/remove/by-manager-name-and-device-object", &daemon_opts,
            test_remove_by_manager_name_and_device_object);
        ADD("/service/refresh-size/follows-grown-file-and-signals", &daemon_opts,
            test_refresh_size_follows_grown_file_and_signals);
        ADD("/service/object-path/reattached-device-gets-new-path-old-one-is-dead", &daemon_opts,
            test_reattached_device_gets_new_path_old_one_is_dead);
        ADD("/service/object-manager/lists-devices-and-signals", &daemon_opts,
            test_object_manager_lists_devices_and_signals);
        ADD("/service/object-manager/losetup-devices-appear-and-vanish-within-a-second", &daemon_opts,
            test_losetup_devices_appear_and_vanish_within_a_second);
        ADD("/service/object-manager/outside-changes-to-loopd-devices-are-followed", &daemon_opts,
            test_outside_changes_to_loopd_devices_are_followed);
        ADD("/service/autoclear/device-lives-while-fd-is-held", &daemon_opts,
            test_autoclear_device_lives_while_fd_is_held);
        ADD("/service/bind-to-caller/device-goes-with-killed-caller", &daemon_opts,
            test_bind_to_caller_device_goes_with_killed_caller);
        ADD("/service/bind-to-caller/device-stays-while-connection-lives", &daemon_opts,
            test_bind_to_caller_device_stays_after_caller_lets_go_of_fd_only);
        ADD("/service/ownership/nobody-removes-own-device-but-not-roots", &polkit_daemon_opts,
            test_nobody_removes_own_device_but_not_roots);
        ADD("/service/ownership/nobody-cannot-remove-losetup-device", &polkit_daemon_opts,
            test_nobody_cannot_remove_losetup_device);
        ADD("/service/ownership/quota-limits-nobody-not-root", &quota_opts, test_quota_limits_nobody_not_root);
        ADD("/service/introspect/matches-contract", &daemon_opts, test_introspect_matches_contract);
        ADD("/service/scripts/busctl-and-gdbus", &daemon_opts, test_scripts_drive_it_with_busctl_and_gdbus);
        ADD("/service/notify/ready-and-status", &daemon_opts, test_notify_ready_and_status);
#undef ADD
        return g_test_run();
}
