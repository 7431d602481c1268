/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The GLib binding as a GLib app uses it: everything asynchronous from a
 * GMainLoop, the backing fd passed in a GUnixFDList, the new device seen
 * through GDBusObjectManagerClient, removed through its Device proxy.
 */

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client-test.h"
#include "loopd-glib.h"

typedef struct App {
        LoopdFixture *f;
        GMainLoop *loop;
        GDBusObjectManager *manager;      /* LoopdGlibObjectManagerClient */
        LoopdGlibManager *proxy;
        struct stat backing;
        char *object_path;
        char *device_path;
        int device_fd;
        LoopdGlibDevice *device;
        bool seen_added, seen_removed, removed_reply;
        GError *error;
} App;

static void app_fail(App *app, GError *error) {
        app->error = error;
        g_main_loop_quit(app->loop);
}

static void on_removed_reply(GObject *source, GAsyncResult *res, gpointer userdata);

/* Runs once both the reply of Create and the object are in. */
static void maybe_remove(App *app) {
        GDBusObject *object;

        if (!app->object_path || app->device)
                return;
        object = g_dbus_object_manager_get_object(app->manager, app->object_path);
        if (!object)
                return;   /* InterfacesAdded still on its way */

        app->device = loopd_glib_object_get_device(LOOPD_GLIB_OBJECT(object));
        g_object_unref(object);
        g_assert_nonnull(app->device);
        g_assert_cmpstr(loopd_glib_device_get_device_path(app->device), ==, app->device_path);
        g_assert_cmpuint(loopd_glib_device_get_backing_inode(app->device), ==, app->backing.st_ino);
        g_assert_cmpuint(loopd_glib_device_get_backing_device(app->device), ==, app->backing.st_dev);
        g_assert_cmpuint(loopd_glib_device_get_size(app->device), ==, 1024 * 1024);
        g_assert_cmpuint(loopd_glib_device_get_owner_uid(app->device), ==, 0);
        g_assert_true(g_str_has_prefix(app->device_path, "/dev/loop"));
        g_assert_cmpstr(loopd_glib_device_get_name(app->device), ==, app->device_path + 5);

        loopd_glib_device_call_remove(app->device, NULL, on_removed_reply, app);
}

static void maybe_quit(App *app) {
        if (app->removed_reply && app->seen_removed)
                g_main_loop_quit(app->loop);
}

static void on_object_added(GDBusObjectManager *m, GDBusObject *object, gpointer userdata) {
        App *app = userdata;

        if (app->object_path && g_str_equal(g_dbus_object_get_object_path(object), app->object_path))
                app->seen_added = true;
        maybe_remove(app);
}

static void on_object_removed(GDBusObjectManager *m, GDBusObject *object, gpointer userdata) {
        App *app = userdata;

        if (app->object_path && g_str_equal(g_dbus_object_get_object_path(object), app->object_path)) {
                app->seen_removed = true;
                maybe_quit(app);
        }
}

static void on_removed_reply(GObject *source, GAsyncResult *res, gpointer userdata) {
        App *app = userdata;
        GError *error = NULL;

        if (!loopd_glib_device_call_remove_finish(LOOPD_GLIB_DEVICE(source), res, &error)) {
                app_fail(app, error);
                return;
        }
        app->removed_reply = true;
        maybe_quit(app);
}

static void on_created(GObject *source, GAsyncResult *res, gpointer userdata) {
        App *app = userdata;
        g_autoptr(GVariant) handle = NULL;
        g_autoptr(GUnixFDList) fds = NULL;
        GError *error = NULL;
        struct stat st;

        if (!loopd_glib_manager_call_create_finish(LOOPD_GLIB_MANAGER(source), &app->object_path,
                                                   &app->device_path, &handle, &fds, res, &error)) {
                app_fail(app, error);
                return;
        }

        /* The device fd came back in the reply's fd list. */
        g_assert_nonnull(fds);
        app->device_fd = g_unix_fd_list_get(fds, g_variant_get_handle(handle), &error);
        if (app->device_fd < 0) {
                app_fail(app, error);
                return;
        }
        g_assert_cmpint(fstat(app->device_fd, &st), ==, 0);
        g_assert_true(S_ISBLK(st.st_mode));
        /* Held open, the device would only be detached at its last close. */
        close(app->device_fd);
        app->device_fd = -1;
        maybe_remove(app);
}

static void on_proxy(GObject *source, GAsyncResult *res, gpointer userdata) {
        App *app = userdata;
        g_autofree char *path = NULL;
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new();
        GVariantBuilder options;
        GError *error = NULL;
        int fd, index;

        app->proxy = loopd_glib_manager_proxy_new_finish(res, &error);
        if (!app->proxy) {
                app_fail(app, error);
                return;
        }
        g_assert_nonnull(loopd_glib_manager_get_version(app->proxy));

        path = loopd_fixture_make_image(app->f, "glib.img", 1024 * 1024, 0, 0, 0644);
        fd = open(path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(fstat(fd, &app->backing), ==, 0);
        index = g_unix_fd_list_append(fds, fd, &error);   /* dups it */
        close(fd);
        g_assert_cmpint(index, ==, 0);

        g_variant_builder_init(&options, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&options, "{sv}", "bind-to-caller", g_variant_new_boolean(TRUE));
        loopd_glib_manager_call_create(app->proxy, g_variant_new_handle(index),
                                       g_variant_builder_end(&options), fds, NULL, on_created, app);
}

static void on_manager(GObject *source, GAsyncResult *res, gpointer userdata) {
        App *app = userdata;
        GError *error = NULL;

        app->manager = loopd_glib_object_manager_client_new_finish(res, &error);
        if (!app->manager) {
                app_fail(app, error);
                return;
        }
        g_signal_connect(app->manager, "object-added", G_CALLBACK(on_object_added), app);
        g_signal_connect(app->manager, "object-removed", G_CALLBACK(on_object_removed), app);

        loopd_glib_manager_proxy_new(app->f->bus, G_DBUS_PROXY_FLAGS_NONE, LOOPD_GLIB_BUS_NAME,
                                     LOOPD_GLIB_MANAGER_PATH, NULL, on_proxy, app);
}

static gboolean on_timeout(gpointer userdata) {
        App *app = userdata;

        app_fail(app, g_error_new_literal(G_IO_ERROR, G_IO_ERROR_TIMED_OUT, "the app did not finish in time"));
        return G_SOURCE_REMOVE;
}

static void test_create_see_remove_from_main_loop(LoopdFixture *f, gconstpointer data) {
        App app = { .f = f, .device_fd = -1 };
        guint timeout;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        app.loop = g_main_loop_new(NULL, FALSE);
        timeout = g_timeout_add_seconds((guint) (30 * loopd_test_timeout_scale()), on_timeout, &app);

        /* The fixture's own connection, as its header asks: GIO's system bus
         * singleton would outlive this fixture's bus. */
        loopd_glib_object_manager_client_new(f->bus, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_NONE,
                                             LOOPD_GLIB_BUS_NAME, LOOPD_GLIB_MANAGER_PATH,
                                             NULL, on_manager, &app);
        g_main_loop_run(app.loop);
        g_source_remove(timeout);

        g_assert_no_error(app.error);
        g_assert_true(app.removed_reply);
        g_assert_true(app.seen_removed);
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
        /* The object may have been there before the reply: added is not
         * guaranteed to be seen, the object itself is. */
        g_assert_nonnull(app.device);

        if (app.device_fd >= 0)
                close(app.device_fd);
        g_clear_object(&app.device);
        g_clear_object(&app.proxy);
        g_clear_object(&app.manager);
        g_free(app.object_path);
        g_free(app.device_path);
        g_main_loop_unref(app.loop);
}

/* The fd behind handle in list: a duplicate that is ours. */
static int fd_from_list(GUnixFDList *list, GVariant *handle) {
        g_autoptr(GError) error = NULL;
        int fd = g_unix_fd_list_get(list, g_variant_get_handle(handle), &error);

        g_assert_no_error(error);
        g_assert_cmpint(fd, >=, 0);
        return fd;
}

/* Open (v2) returns an fd in a GUnixFDList; GetDevice only the object; the
 * exact name is BackingFileBytes, as the generated getter's bytestring. */
static void test_open_get_device_and_bytes(LoopdFixture *f, gconstpointer data) {
        g_autoptr(LoopdGlibManager) manager = NULL;
        g_autoptr(LoopdGlibDevice) device = NULL;
        g_autoptr(GUnixFDList) in = g_unix_fd_list_new();
        g_autoptr(GUnixFDList) out = NULL;
        g_autoptr(GUnixFDList) out2 = NULL;
        g_autoptr(GUnixFDList) out3 = NULL;
        g_autoptr(GVariant) handle = NULL, handle2 = NULL, handle3 = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *img = NULL, *obj = NULL, *path = NULL, *obj2 = NULL, *path2 = NULL, *obj3 = NULL;
        GVariantBuilder options;
        struct stat st, node;
        int backing, fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        manager = loopd_glib_manager_proxy_new_sync(f->bus, G_DBUS_PROXY_FLAGS_NONE, LOOPD_GLIB_BUS_NAME,
                                                    LOOPD_GLIB_MANAGER_PATH, NULL, &error);
        g_assert_no_error(error);
        img = loopd_fixture_make_image(f, "glib-open-\xe9.img", 1024 * 1024, 0, 0, 0644);
        backing = open(img, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(backing, >=, 0);
        g_assert_cmpint(g_unix_fd_list_append(in, backing, &error), ==, 0);
        close(backing);

        g_variant_builder_init(&options, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&options, "{sv}", LOOPD_OPTION_BIND_TO_CALLER, g_variant_new_boolean(TRUE));
        g_assert_true(loopd_glib_manager_call_create_sync(manager, g_variant_new_handle(0),
                                                          g_variant_builder_end(&options), in,
                                                          &obj, &path, &handle, &out, NULL, &error));
        g_assert_no_error(error);
        close(fd_from_list(out, handle));

        g_assert_true(loopd_glib_manager_call_get_device_sync(manager, path + 5, &obj3, NULL, &error));
        g_assert_no_error(error);
        g_assert_cmpstr(obj3, ==, obj);

        g_variant_builder_init(&options, G_VARIANT_TYPE_VARDICT);
        g_variant_builder_add(&options, "{sv}", LOOPD_OPTION_READ_ONLY, g_variant_new_boolean(TRUE));
        g_assert_true(loopd_glib_manager_call_open_sync(manager, path, g_variant_builder_end(&options), NULL,
                                                        &obj2, &path2, &handle2, &out2, NULL, &error));
        g_assert_no_error(error);
        g_assert_cmpstr(obj2, ==, obj);
        g_assert_cmpstr(path2, ==, path);
        fd = fd_from_list(out2, handle2);
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        g_assert_cmpint(stat(path, &node), ==, 0);
        g_assert_cmpuint(st.st_rdev, ==, node.st_rdev);
        g_assert_cmpint(fcntl(fd, F_GETFL) & O_ACCMODE, ==, O_RDONLY);
        close(fd);

        device = loopd_glib_device_proxy_new_sync(f->bus, G_DBUS_PROXY_FLAGS_NONE, LOOPD_GLIB_BUS_NAME, obj,
                                                  NULL, &error);
        g_assert_no_error(error);
        g_assert_cmpstr(loopd_glib_device_get_backing_file_bytes(device), ==, img);
        g_assert_true(g_utf8_validate(loopd_glib_device_get_backing_file(device), -1, NULL));
        g_assert_false(loopd_glib_device_get_detach_pending(device));

        g_variant_builder_init(&options, G_VARIANT_TYPE_VARDICT);
        g_assert_true(loopd_glib_device_call_open_sync(device, g_variant_builder_end(&options), NULL,
                                                       &handle3, &out3, NULL, &error));
        g_assert_no_error(error);
        close(fd_from_list(out3, handle3));

        g_assert_true(loopd_glib_device_call_remove_sync(device, NULL, &error));
        g_assert_no_error(error);
        /* The fd lists hold their own copies of the device fds: the kernel
         * detaches at the last close. */
        g_clear_object(&out);
        g_clear_object(&out2);
        g_clear_object(&out3);
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));
}

int main(int argc, char **argv) {
        static const LoopdFixtureOptions daemon_only = { .start_daemon = TRUE };

        g_test_init(&argc, &argv, NULL);
        g_test_add("/loopd-glib/create-see-remove-from-main-loop", LoopdFixture, &daemon_only,
                   loopd_fixture_setup, test_create_see_remove_from_main_loop, loopd_fixture_teardown);
        g_test_add("/loopd-glib/open-get-device-and-bytes", LoopdFixture, &daemon_only,
                   loopd_fixture_setup, test_open_get_device_and_bytes, loopd_fixture_teardown);
        return g_test_run();
}
