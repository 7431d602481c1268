/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * libloopd against the real loopd on a private bus: every call, sync and
 * async, and the errno/error-name mapping. What the kernel did is checked in
 * sysfs and with fstat, not through libloopd itself.
 */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/fs.h>

#include "client-test.h"
#include "loopd.h"


static const LoopdFixtureOptions daemon_only = { .start_daemon = TRUE };

static const char *const quota_args[] = { "--quota=1", NULL };
static const LoopdFixtureOptions quota_one = { .start_daemon = TRUE, .daemon_args = quota_args };
static const LoopdFixtureOptions with_polkit = {
        .start_daemon = TRUE,
        .start_polkit = TRUE,
        .daemon_args = quota_args,
        .polkit_rules =
                "polkit.addRule(function(action, subject) {\n"
                "  if (action.id == 'org.loopd.create') {\n"
                "    if (action.lookup('backing_file').indexOf('needs-auth') >= 0)\n"
                "      return polkit.Result.AUTH_ADMIN;\n"
                "    return polkit.Result.YES;\n"
                "  }\n"
                "  if (action.id == 'org.loopd.manage-others')\n"
                "    return polkit.Result.NO;\n"
                "});\n",
};

static void client_unrefp(LoopdClient **c) {
        loopd_client_unref(*c);
}
static void device_unrefp(LoopdDevice **d) {
        loopd_device_unref(*d);
}
static void info_freep(LoopdDeviceInfo **i) {
        loopd_device_info_free(*i);
}
#define _client_ __attribute__((cleanup(client_unrefp)))
#define _device_ __attribute__((cleanup(device_unrefp)))
#define _info_ __attribute__((cleanup(info_freep)))

/* Whether the attachment `d` names is gone (not merely "loopN is free"). */
static bool wait_device_gone(LoopdDevice *d, double timeout_sec) {
        return client_wait_gone(loopd_device_get_path(d),
                                client_object_diskseq(loopd_device_get_object_path(d)), timeout_sec);
}

static LoopdClient *new_client(void) {
        LoopdClient *c = NULL;

        g_assert_cmpint(loopd_client_new(&c), ==, 0);
        g_assert_nonnull(c);
        return c;
}

static int open_image(LoopdFixture *f, const char *name, guint64 size, int flags, struct stat *ret_st) {
        g_autofree char *path = loopd_fixture_make_image(f, name, size, 0, 0, 0644);
        int fd = open(path, flags | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        if (ret_st)
                g_assert_cmpint(fstat(fd, ret_st), ==, 0);
        return fd;
}

/* A call that must succeed; on failure, says what the daemon said. */
#define assert_ok(c, call)                                                              \
        G_STMT_START {                                                                  \
                int _r = (call);                                                        \
                if (_r < 0)                                                             \
                        g_error("%s: %s (%s: %s)", #call, g_strerror(-_r),              \
                                loopd_client_last_error_name(c),                        \
                                loopd_client_last_error_message(c));                    \
        } G_STMT_END

static void assert_error(LoopdClient *c, int r, int expected_errno, const char *expected_name) {
        g_assert_cmpint(r, ==, -expected_errno);
        g_assert_cmpstr(loopd_client_last_error_name(c), ==, expected_name);
        g_assert_nonnull(loopd_client_last_error_message(c));
}

/* ---- create -------------------------------------------------------------- */

static void test_create_returns_device_and_fd(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        struct stat backing, node, via_fd;
        int fd, dev_fd = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "plain.img", 4 * MIB, O_RDWR, &backing);

        assert_ok(c, loopd_create(c, fd, NULL, &d, &dev_fd));
        g_assert_null(loopd_client_last_error_name(c));
        g_assert_null(loopd_client_last_error_message(c));
        close(fd);

        g_assert_true(g_str_has_prefix(loopd_device_get_name(d), "loop"));
        g_assert_cmpstr(loopd_device_get_path(d) + 5, ==, loopd_device_get_name(d));
        g_assert_true(g_str_has_prefix(loopd_device_get_object_path(d), "/org/loopd/Loop1/device/loop"));
        g_assert_null(loopd_device_peek_info(d));
        /* Attached, and the object path names this very attachment. */
        g_assert_cmpuint(client_loop_diskseq(loopd_device_get_path(d)), ==,
                         client_object_diskseq(loopd_device_get_object_path(d)));

        /* The fd is the device itself, read-write, close-on-exec. */
        g_assert_cmpint(fstat(dev_fd, &via_fd), ==, 0);
        g_assert_cmpint(stat(loopd_device_get_path(d), &node), ==, 0);
        g_assert_true(S_ISBLK(via_fd.st_mode));
        g_assert_cmpuint(via_fd.st_rdev, ==, node.st_rdev);
        g_assert_cmpint(fcntl(dev_fd, F_GETFL) & O_ACCMODE, ==, O_RDWR);
        g_assert_cmpint(fcntl(dev_fd, F_GETFD) & FD_CLOEXEC, ==, FD_CLOEXEC);
        close(dev_fd);

        assert_ok(c, loopd_remove(c, loopd_device_get_name(d)));
        g_assert_true(wait_device_gone(d, 5));
}

static void test_create_options_reach_the_kernel(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        _info_ LoopdDeviceInfo *info = NULL;
        LoopdCreateOptions o = LOOPD_CREATE_OPTIONS_INIT;
        struct stat backing;
        uint64_t bytes = 0;
        int fd, dev_fd = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "options.img", 8 * MIB, O_RDWR, &backing);

        o.offset = 1 * MIB;
        o.size_limit = 2 * MIB;
        o.block_size = 4096;
        o.read_only = true;
        o.partscan = true;
        assert_ok(c, loopd_create(c, fd, &o, &d, &dev_fd));
        close(fd);

        assert_ok(c, loopd_device_get_info(c, d, &info));
        g_assert_cmpuint(info->offset, ==, 1 * MIB);
        g_assert_cmpuint(info->size_limit, ==, 2 * MIB);
        g_assert_cmpuint(info->size, ==, 2 * MIB);
        g_assert_cmpuint(info->block_size, ==, 4096);
        g_assert_true(info->read_only);
        g_assert_true(info->partscan);
        g_assert_false(info->autoclear);
        g_assert_false(info->bound_to_caller);

        /* ...and the kernel agrees: a read-only fd, 2 MiB, 4096-byte sectors. */
        g_assert_cmpint(fcntl(dev_fd, F_GETFL) & O_ACCMODE, ==, O_RDONLY);
        g_assert_cmpint(ioctl(dev_fd, BLKGETSIZE64, &bytes), ==, 0);
        g_assert_cmpuint(bytes, ==, 2 * MIB);
        close(dev_fd);

        assert_ok(c, loopd_device_remove(c, d));
        g_assert_true(wait_device_gone(d, 5));
}

static void test_create_readonly_fd_forces_readonly(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        _info_ LoopdDeviceInfo *info = NULL;
        int fd, dev_fd = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "ro.img", 1 * MIB, O_RDONLY, NULL);

        assert_ok(c, loopd_create(c, fd, NULL, &d, &dev_fd));
        close(fd);
        assert_ok(c, loopd_device_get_info(c, d, &info));
        g_assert_true(info->read_only);
        g_assert_cmpint(fcntl(dev_fd, F_GETFL) & O_ACCMODE, ==, O_RDONLY);
        close(dev_fd);
        assert_ok(c, loopd_device_remove(c, d));
}

static void test_create_from_path(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        _info_ LoopdDeviceInfo *info = NULL;
        g_autofree char *path = NULL;
        struct stat st;
        int r;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        path = loopd_fixture_make_image(f, "by-path.img", 1 * MIB, 0, 0, 0644);
        g_assert_cmpint(stat(path, &st), ==, 0);

        /* ret_device_fd NULL: the library closes the fd it got. */
        assert_ok(c, loopd_create_from_path(c, path, NULL, &d, NULL));
        assert_ok(c, loopd_device_get_info(c, d, &info));
        g_assert_cmpuint(info->backing_inode, ==, st.st_ino);
        g_assert_cmpuint(info->backing_device, ==, st.st_dev);
        assert_ok(c, loopd_device_remove(c, d));

        /* The contract asks for an absolute path. */
        r = loopd_create_from_path(c, "by-path.img", NULL, NULL, NULL);
        assert_error(c, r, EINVAL, "org.freedesktop.DBus.Error.InvalidArgs");
}

static void test_create_autoclear_without_fd_goes_away(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        LoopdCreateOptions o = LOOPD_CREATE_OPTIONS_INIT;
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "autoclear.img", 1 * MIB, O_RDWR, NULL);

        /* The contract: an autoclear device lives as long as some fd to it;
         * with ret_device_fd NULL libloopd keeps none. */
        o.autoclear = true;
        assert_ok(c, loopd_create(c, fd, &o, &d, NULL));
        close(fd);
        g_assert_true(wait_device_gone(d, 5));
}

static void test_create_bind_to_caller_goes_with_connection(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *keeper = NULL;
        _device_ LoopdDevice *d = NULL;
        _info_ LoopdDeviceInfo *info = NULL;
        LoopdClient *c;
        LoopdCreateOptions o = LOOPD_CREATE_OPTIONS_INIT;
        int fd, r;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        keeper = new_client();
        c = new_client();
        fd = open_image(f, "bound.img", 1 * MIB, O_RDWR, NULL);

        o.bind_to_caller = true;
        assert_ok(c, loopd_create(c, fd, &o, &d, NULL));
        close(fd);
        assert_ok(c, loopd_device_get_info(c, d, &info));
        g_assert_true(info->bound_to_caller);

        /* Dropping the last reference closes our own connection. */
        loopd_client_unref(c);
        g_assert_true(wait_device_gone(d, 10));
        loopd_device_info_free(g_steal_pointer(&info));
        r = loopd_device_get_info(keeper, d, &info);
        g_assert_cmpint(r, ==, -ENXIO);
}

/* ---- open, remove, refresh ----------------------------------------------- */

static void test_get_device_by_name_and_path(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL, *by_name = NULL, *by_path = NULL;
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "lookup.img", 1 * MIB, O_RDWR, NULL);
        assert_ok(c, loopd_create(c, fd, NULL, &d, NULL));
        close(fd);

        assert_ok(c, loopd_get_device(c, loopd_device_get_name(d), &by_name));
        assert_ok(c, loopd_get_device(c, loopd_device_get_path(d), &by_path));
        g_assert_cmpstr(loopd_device_get_object_path(by_name), ==, loopd_device_get_object_path(d));
        g_assert_cmpstr(loopd_device_get_object_path(by_path), ==, loopd_device_get_object_path(d));
        g_assert_cmpstr(loopd_device_get_name(by_path), ==, loopd_device_get_name(d));
        g_assert_cmpstr(loopd_device_get_path(by_name), ==, loopd_device_get_path(d));
        g_assert_null(loopd_device_peek_info(by_name));

        assert_ok(c, loopd_remove(c, loopd_device_get_path(d)));
}

static void test_get_device_names_errors(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        LoopdDevice *d = NULL;
        int r;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();

        r = loopd_get_device(c, "/dev/null", &d);
        assert_error(c, r, ENOTBLK, LOOPD_ERROR_NOT_A_LOOP_DEVICE);
        r = loopd_get_device(c, "sda", &d);
        assert_error(c, r, ENOTBLK, LOOPD_ERROR_NOT_A_LOOP_DEVICE);
        g_assert_null(d);

        /* A loop device that is not attached (whether or not its node
         * exists). */
        r = loopd_get_device(c, "loop4000", &d);
        assert_error(c, r, ENXIO, LOOPD_ERROR_NO_SUCH_DEVICE);
        r = loopd_open(c, "loop4000", 0, &d, NULL);
        assert_error(c, r, ENXIO, LOOPD_ERROR_NO_SUCH_DEVICE);
        r = loopd_open(c, "/dev/null", 0, &d, NULL);
        assert_error(c, r, ENOTBLK, LOOPD_ERROR_NOT_A_LOOP_DEVICE);
        g_assert_null(d);

        /* Local argument errors have a message but no D-Bus name. */
        r = loopd_get_device(c, NULL, &d);
        assert_error(c, r, EINVAL, NULL);
        r = loopd_open(c, NULL, 0, &d, NULL);
        assert_error(c, r, EINVAL, NULL);
        r = loopd_open(c, "loop4000", UINT64_C(1) << 1, &d, NULL);
        assert_error(c, r, EINVAL, NULL);
}

/* The fd is the device: same node, the access mode asked for. */
static void assert_device_fd(int fd, LoopdDevice *d, int accmode) {
        struct stat st, node;
        int fl = fcntl(fd, F_GETFL);

        g_assert_cmpint(fd, >, 2);
        g_assert_cmpint(fcntl(fd, F_GETFD), ==, FD_CLOEXEC);
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        g_assert_cmpint(stat(loopd_device_get_path(d), &node), ==, 0);
        g_assert_true(S_ISBLK(st.st_mode));
        g_assert_cmpuint(st.st_rdev, ==, node.st_rdev);
        g_assert_cmpint(fl & O_ACCMODE, ==, accmode);
}

static void test_open_returns_the_device_fd(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL, *opened = NULL, *ro = NULL;
        char buf[512] = "loopd";
        int fd, dev_fd = -1, ro_fd = -1, obj_fd = -1;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "open.img", 1 * MIB, O_RDWR, NULL);
        assert_ok(c, loopd_create(c, fd, NULL, &d, NULL));
        close(fd);

        assert_ok(c, loopd_open(c, loopd_device_get_name(d), 0, &opened, &dev_fd));
        g_assert_cmpstr(loopd_device_get_object_path(opened), ==, loopd_device_get_object_path(d));
        g_assert_cmpstr(loopd_device_get_path(opened), ==, loopd_device_get_path(d));
        assert_device_fd(dev_fd, d, O_RDWR);
        g_assert_cmpint(pwrite(dev_fd, buf, sizeof(buf), 0), ==, sizeof(buf));

        assert_ok(c, loopd_open(c, loopd_device_get_path(d), LOOPD_OPEN_READ_ONLY, &ro, &ro_fd));
        assert_device_fd(ro_fd, d, O_RDONLY);
        memset(buf, 0, sizeof(buf));
        g_assert_cmpint(pread(ro_fd, buf, sizeof(buf), 0), ==, sizeof(buf));
        g_assert_cmpstr(buf, ==, "loopd");

        assert_ok(c, loopd_device_open(c, d, 0, &obj_fd));
        assert_device_fd(obj_fd, d, O_RDWR);
        /* No fd asked for: nothing leaks. */
        assert_ok(c, loopd_device_open(c, d, LOOPD_OPEN_READ_ONLY, NULL));

        close(dev_fd);
        close(ro_fd);
        close(obj_fd);
        assert_ok(c, loopd_device_remove(c, d));
        g_assert_true(wait_device_gone(d, 5));
}

/*
 * Never name a device by loopN once it is removed: the kernel hands out the
 * lowest free number, so a parallel test may already have attached a new
 * loopN. A stale device object and a number nobody uses are safe.
 */
static void test_remove_then_stale_object_is_gone(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        LoopdDeviceInfo *info = NULL;
        int fd, r;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "twice.img", 1 * MIB, O_RDWR, NULL);
        assert_ok(c, loopd_create(c, fd, NULL, &d, NULL));
        close(fd);

        assert_ok(c, loopd_remove(c, loopd_device_get_path(d)));
        g_assert_true(wait_device_gone(d, 5));

        /* The object named exactly that attachment: it is gone for good, even
         * if loopN is attached again meanwhile. */
        r = loopd_device_remove(c, d);
        assert_error(c, r, ENXIO, "org.freedesktop.DBus.Error.UnknownObject");
        r = loopd_device_refresh_size(c, d);
        assert_error(c, r, ENXIO, "org.freedesktop.DBus.Error.UnknownObject");
        r = loopd_device_get_info(c, d, &info);
        assert_error(c, r, ENXIO, "org.freedesktop.DBus.Error.UnknownObject");
        g_assert_null(info);

        /* By name, a device that is not attached. */
        r = loopd_remove(c, "loop4000");
        assert_error(c, r, ENXIO, "org.loopd.Loop1.Error.NoSuchDevice");
        r = loopd_refresh_size(c, "/dev/loop4000");
        assert_error(c, r, ENXIO, "org.loopd.Loop1.Error.NoSuchDevice");
}

static void test_refresh_size_follows_file(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        LoopdDeviceInfo *info = NULL;
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "grow.img", 1 * MIB, O_RDWR, NULL);
        assert_ok(c, loopd_create(c, fd, NULL, &d, NULL));

        g_assert_cmpint(ftruncate(fd, 3 * MIB), ==, 0);
        assert_ok(c, loopd_refresh_size(c, loopd_device_get_name(d)));
        assert_ok(c, loopd_device_get_info(c, d, &info));
        g_assert_cmpuint(info->size, ==, 3 * MIB);
        loopd_device_info_free(info);

        g_assert_cmpint(ftruncate(fd, 5 * MIB), ==, 0);
        assert_ok(c, loopd_device_refresh_size(c, d));
        assert_ok(c, loopd_device_get_info(c, d, &info));
        g_assert_cmpuint(info->size, ==, 5 * MIB);
        loopd_device_info_free(info);

        close(fd);
        assert_ok(c, loopd_device_remove(c, d));
}

/* ---- list and properties ------------------------------------------------- */

static void test_list_has_snapshots_sorted(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *a = NULL, *b = NULL;
        LoopdCreateOptions o = LOOPD_CREATE_OPTIONS_INIT;
        LoopdDevice **list = NULL;
        size_t n = 0;
        bool seen_a = false, seen_b = false;
        int fd1, fd2;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd1 = open_image(f, "list-a.img", 1 * MIB, O_RDWR, NULL);
        fd2 = open_image(f, "list-b.img", 2 * MIB, O_RDWR, NULL);
        assert_ok(c, loopd_create(c, fd1, NULL, &a, NULL));
        o.offset = 4096;
        assert_ok(c, loopd_create(c, fd2, &o, &b, NULL));
        close(fd1);
        close(fd2);

        assert_ok(c, loopd_list(c, &list, &n));
        g_assert_cmpuint(n, >=, 2);
        for (size_t i = 0; i < n; i++) {
                const LoopdDeviceInfo *info = loopd_device_peek_info(list[i]);

                g_assert_nonnull(info);
                g_assert_cmpstr(info->object_path, ==, loopd_device_get_object_path(list[i]));
                g_assert_cmpstr(info->name, ==, loopd_device_get_name(list[i]));
                if (i > 0)
                        g_assert_cmpuint(loopd_device_peek_info(list[i - 1])->number, <=, info->number);
                if (g_str_equal(loopd_device_get_object_path(list[i]), loopd_device_get_object_path(a))) {
                        seen_a = true;
                        g_assert_cmpuint(info->size, ==, 1 * MIB);
                        g_assert_cmpuint(info->offset, ==, 0);
                }
                if (g_str_equal(loopd_device_get_object_path(list[i]), loopd_device_get_object_path(b))) {
                        seen_b = true;
                        g_assert_cmpuint(info->offset, ==, 4096);
                        g_assert_true(g_str_has_suffix(info->backing_file, "/list-b.img"));
                }
        }
        g_assert_true(seen_a && seen_b);
        loopd_device_list_free(list, n);

        assert_ok(c, loopd_device_remove(c, a));
        assert_ok(c, loopd_device_remove(c, b));
}

static void test_get_info_has_every_property(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        _info_ LoopdDeviceInfo *info = NULL;
        g_autofree char *expected_name = NULL;
        struct stat backing, node;
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "props.img", 2 * MIB, O_RDWR, &backing);
        assert_ok(c, loopd_create(c, fd, NULL, &d, NULL));
        close(fd);

        assert_ok(c, loopd_device_get_info(c, d, &info));
        g_assert_cmpint(stat(loopd_device_get_path(d), &node), ==, 0);
        expected_name = g_strdup_printf("loop%u", info->number);

        g_assert_cmpstr(info->object_path, ==, loopd_device_get_object_path(d));
        g_assert_cmpstr(info->name, ==, expected_name);
        g_assert_cmpstr(info->name, ==, loopd_device_get_name(d));
        g_assert_cmpstr(info->device_path, ==, loopd_device_get_path(d));
        g_assert_cmpuint(info->device_number, ==, node.st_rdev);
        g_assert_cmpuint(info->diskseq, >, 0);
        g_assert_true(g_str_has_suffix(info->backing_file, "/props.img"));
        g_assert_cmpuint(info->backing_device, ==, backing.st_dev);
        g_assert_cmpuint(info->backing_inode, ==, backing.st_ino);
        g_assert_cmpuint(info->offset, ==, 0);
        g_assert_cmpuint(info->size_limit, ==, 0);
        g_assert_cmpuint(info->size, ==, 2 * MIB);
        g_assert_cmpuint(info->block_size, ==, 512);
        g_assert_false(info->read_only);
        g_assert_false(info->autoclear);
        g_assert_false(info->partscan);
        g_assert_false(info->direct_io);
        g_assert_false(info->bound_to_caller);
        g_assert_cmpuint(info->owner_uid, ==, 0);
        g_assert_nonnull(info->backing_file_bytes);
        g_assert_cmpstr(info->backing_file_bytes, ==, info->backing_file);
        g_assert_false(info->backing_file_deleted);
        g_assert_false(info->detach_pending);

        assert_ok(c, loopd_device_remove(c, d));
}

/* A name that is not UTF-8, with a newline and a backslash: the bytes come
 * back exactly, BackingFile escaped; listing still works; an unlink shows. */
static void test_info_names_are_bytes(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        _info_ LoopdDeviceInfo *info = NULL, *later = NULL;
        g_autofree char *path = NULL, *escaped = NULL;
        LoopdDevice **list = NULL;
        size_t n = 0;
        bool listed = false;
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        path = loopd_fixture_make_image(f, "lat\xe9n\n\\.img", 1 * MIB, 0, 0, 0644);
        fd = open(path, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        assert_ok(c, loopd_create(c, fd, NULL, &d, NULL));
        close(fd);

        assert_ok(c, loopd_device_get_info(c, d, &info));
        g_assert_cmpstr(info->backing_file_bytes, ==, path);
        escaped = g_strdup_printf("%s/lat\\xe9n\\x0a\\x5c.img", f->image_dir);
        g_assert_cmpstr(info->backing_file, ==, escaped);
        g_assert_true(g_utf8_validate(info->backing_file, -1, NULL));

        /* GetManagedObjects carries it too (a non-UTF-8 string would make
         * the whole reply invalid). */
        assert_ok(c, loopd_list(c, &list, &n));
        for (size_t i = 0; i < n; i++)
                if (g_str_equal(loopd_device_get_object_path(list[i]), loopd_device_get_object_path(d))) {
                        g_assert_cmpstr(loopd_device_peek_info(list[i])->backing_file_bytes, ==, path);
                        listed = true;
                }
        loopd_device_list_free(list, n);
        g_assert_true(listed);

        g_assert_cmpint(unlink(path), ==, 0);
        assert_ok(c, loopd_device_get_info(c, d, &later));
        g_assert_true(later->backing_file_deleted);
        g_assert_cmpstr(later->backing_file_bytes, ==, path);
        g_assert_true(g_str_has_suffix(later->backing_file, ".img (deleted)"));

        assert_ok(c, loopd_device_remove(c, d));
}

/* Removed while someone holds the node: the kernel defers the detach, the
 * object stays and says so until the last close. */
static void test_info_detach_pending(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        _info_ LoopdDeviceInfo *info = NULL;
        int fd, holder;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "held.img", 1 * MIB, O_RDWR, NULL);
        assert_ok(c, loopd_create(c, fd, NULL, &d, &holder));
        close(fd);

        assert_ok(c, loopd_device_remove(c, d));
        g_assert_true(client_loop_attached(loopd_device_get_path(d)));
        assert_ok(c, loopd_device_get_info(c, d, &info));
        g_assert_true(info->detach_pending);

        close(holder);
        g_assert_true(wait_device_gone(d, 5));
}

static void test_version_and_quota(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        g_autofree char *version = NULL;
        uint32_t quota = 0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        assert_ok(c, loopd_get_version(c, &version));
        g_assert_nonnull(version);
        g_assert_cmpstr(version, !=, "");
        assert_ok(c, loopd_get_quota_per_user(c, &quota));
        g_assert_cmpuint(quota, ==, 1);   /* quota_one passes --quota=1 */
}

/* ---- errors -------------------------------------------------------------- */

static void test_options_struct_versioning(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *d = NULL;
        struct {
                LoopdCreateOptions o;
                uint64_t future_field;
        } bigger = { LOOPD_CREATE_OPTIONS_INIT, 0 };
        LoopdCreateOptions o = LOOPD_CREATE_OPTIONS_INIT;
        int fd, r;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "versions.img", 1 * MIB, O_RDWR, NULL);

        /* Not initialized by the macro: refused before anything is sent. */
        o.size = 0;
        r = loopd_create(c, fd, &o, NULL, NULL);
        assert_error(c, r, EINVAL, NULL);

        loopd_create_options_init(&o);
        o.reserved[1] = 1;
        r = loopd_create(c, fd, &o, NULL, NULL);
        assert_error(c, r, EINVAL, NULL);

        /* A newer caller's larger struct: fine while the unknown tail is
         * zero, refused once it asks for something we do not know. */
        bigger.o.size = sizeof(bigger);
        bigger.future_field = 1;
        r = loopd_create(c, fd, &bigger.o, NULL, NULL);
        assert_error(c, r, E2BIG, NULL);

        bigger.future_field = 0;
        assert_ok(c, loopd_create(c, fd, &bigger.o, &d, NULL));
        close(fd);
        assert_ok(c, loopd_device_remove(c, d));
}

static void test_daemon_errors_map_to_errno(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        LoopdCreateOptions o = LOOPD_CREATE_OPTIONS_INIT;
        g_autofree char *dir = NULL;
        int fd, dirfd, r;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "errors.img", 1 * MIB, O_RDWR, NULL);

        o.block_size = 1000;
        r = loopd_create(c, fd, &o, NULL, NULL);
        assert_error(c, r, EINVAL, "org.freedesktop.DBus.Error.InvalidArgs");

        loopd_create_options_init(&o);
        o.offset = 64 * MIB;   /* past the end of the file */
        r = loopd_create(c, fd, &o, NULL, NULL);
        g_assert_true(r == -EINVAL || r == -EBADF);
        g_assert_nonnull(loopd_client_last_error_name(c));
        close(fd);

        dir = g_build_filename(f->image_dir, "a-directory", NULL);
        g_assert_cmpint(mkdir(dir, 0755), ==, 0);
        dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        g_assert_cmpint(dirfd, >=, 0);
        r = loopd_create(c, dirfd, NULL, NULL, NULL);
        assert_error(c, r, EBADF, "org.loopd.Loop1.Error.BadBackingFile");
        close(dirfd);

        r = loopd_create(c, -1, NULL, NULL, NULL);
        assert_error(c, r, EBADF, NULL);

        /* A success clears the last error. */
        g_autofree char *version = NULL;
        assert_ok(c, loopd_get_version(c, &version));
        g_assert_null(loopd_client_last_error_name(c));
        g_assert_null(loopd_client_last_error_message(c));
}

/*
 * Runs fn in a forked child as uid/gid 65534 (a real uid change, so sd-bus
 * honours DBUS_SYSTEM_BUS_ADDRESS) and asserts it exits 0. The fixture's
 * crash handlers are reset in the child: an assertion failing there must
 * not kill the parent's daemon.
 */
static void run_as_nobody(LoopdFixture *f, void (*fn)(LoopdFixture *f, void *userdata), void *userdata) {
        static const int crash_signals[] = { SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGTERM, SIGINT, SIGALRM };
        int status;
        pid_t pid;

        fflush(NULL);
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                for (size_t i = 0; i < G_N_ELEMENTS(crash_signals); i++)
                        signal(crash_signals[i], SIG_DFL);
                if (setgroups(0, NULL) < 0 ||
                    setresgid(LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY) < 0 ||
                    setresuid(LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY) < 0)
                        _exit(99);
                /* The uid change cleared any death signal: set ours now. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                fn(f, userdata);
                _exit(0);
        }
        g_assert_cmpint(waitpid(pid, &status, 0), ==, pid);
        g_assert_true(WIFEXITED(status));
        g_assert_cmpint(WEXITSTATUS(status), ==, 0);
}

static void as_nobody_create_quota_and_denials(LoopdFixture *f, void *userdata) {
        const char *const *paths = userdata;
        _client_ LoopdClient *c = new_client();
        _device_ LoopdDevice *mine = NULL;
        _info_ LoopdDeviceInfo *info = NULL;
        int fd, r;

        /* polkit would ask a password and we did not allow it to. First, so
         * that the quota below cannot interfere. */
        fd = open(paths[1], O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        r = loopd_create(c, fd, NULL, NULL, NULL);
        assert_error(c, r, EACCES, "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired");
        close(fd);

        /* polkit says yes: an unprivileged create works and is ours. */
        fd = open(paths[0], O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        assert_ok(c, loopd_create(c, fd, NULL, &mine, NULL));
        assert_ok(c, loopd_device_get_info(c, mine, &info));
        g_assert_cmpuint(info->owner_uid, ==, LOOPD_TEST_NOBODY);

        /* --quota=1: the second one is over. */
        r = loopd_create(c, fd, NULL, NULL, NULL);
        assert_error(c, r, EDQUOT, "org.loopd.Loop1.Error.QuotaExceeded");
        close(fd);

        /* root's device: manage-others, which the rules refuse. */
        r = loopd_remove(c, paths[2]);
        assert_error(c, r, EACCES, "org.freedesktop.DBus.Error.AccessDenied");

        /* Our own device needs no authorization to go. (Its quota slot may
         * stay taken for a moment: Remove replies as soon as the kernel has
         * deferred the detach to the last close of the node.) */
        assert_ok(c, loopd_device_remove(c, mine));
}

static void test_unprivileged_errors_map_to_errno(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *roots = NULL;
        g_autofree char *mine = NULL, *auth = NULL;
        const char *paths[3];
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "roots.img", 1 * MIB, O_RDWR, NULL);
        assert_ok(c, loopd_create(c, fd, NULL, &roots, NULL));
        close(fd);

        mine = loopd_fixture_make_image(f, "nobodys.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        auth = loopd_fixture_make_image(f, "needs-auth.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        paths[0] = mine;
        paths[1] = auth;
        paths[2] = loopd_device_get_name(roots);
        run_as_nobody(f, as_nobody_create_quota_and_denials, paths);

        assert_ok(c, loopd_device_remove(c, roots));
}

static void as_nobody_open_own_and_others(LoopdFixture *f, void *userdata) {
        const char *const *paths = userdata;
        _client_ LoopdClient *c = new_client();
        _device_ LoopdDevice *mine = NULL, *opened = NULL, *theirs = NULL;
        char buf[512] = "mine";
        int fd, dev_fd = -1, r;

        fd = open(paths[0], O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        assert_ok(c, loopd_create(c, fd, NULL, &mine, NULL));
        close(fd);

        /* The owner is not asked: an fd it can write through. */
        assert_ok(c, loopd_open(c, loopd_device_get_path(mine), 0, &opened, &dev_fd));
        g_assert_cmpint(fcntl(dev_fd, F_GETFL) & O_ACCMODE, ==, O_RDWR);
        g_assert_cmpint(pwrite(dev_fd, buf, sizeof(buf), 0), ==, sizeof(buf));
        close(dev_fd);

        /* root's device: manage-others, which the rules refuse; looking it
         * up is still free. */
        r = loopd_open(c, paths[1], 0, NULL, &dev_fd);
        assert_error(c, r, EACCES, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        r = loopd_open(c, paths[1], LOOPD_OPEN_READ_ONLY, NULL, &dev_fd);
        assert_error(c, r, EACCES, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        assert_ok(c, loopd_get_device(c, paths[1], &theirs));

        assert_ok(c, loopd_device_remove(c, mine));
}

static void test_open_owner_yes_others_per_polkit(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        _device_ LoopdDevice *roots = NULL;
        g_autofree char *mine = NULL;
        const char *paths[2];
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        fd = open_image(f, "roots-open.img", 1 * MIB, O_RDWR, NULL);
        assert_ok(c, loopd_create(c, fd, NULL, &roots, NULL));
        close(fd);

        mine = loopd_fixture_make_image(f, "nobodys-open.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        paths[0] = mine;
        paths[1] = loopd_device_get_name(roots);
        run_as_nobody(f, as_nobody_open_own_and_others, paths);

        assert_ok(c, loopd_device_remove(c, roots));
}

static void as_nobody_call_times_out(LoopdFixture *f, void *userdata) {
        _client_ LoopdClient *c = new_client();
        g_autofree char *version = NULL;
        gint64 start;
        int fd, r;

        /* polkit is stopped: the daemon waits for it (up to its own 25 s),
         * our 300 ms run out first. */
        loopd_client_set_timeout(c, 300 * 1000);
        fd = open(userdata, O_RDWR | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        start = g_get_monotonic_time();
        r = loopd_create(c, fd, NULL, NULL, NULL);
        g_assert_cmpint(r, ==, -ETIMEDOUT);
        g_assert_nonnull(loopd_client_last_error_message(c));
        g_assert_cmpint(g_get_monotonic_time() - start, <, 20 * G_USEC_PER_SEC);
        close(fd);

        /* 0 is sd-bus's default again; calls that need no polkit still work. */
        loopd_client_set_timeout(c, 0);
        assert_ok(c, loopd_get_version(c, &version));
}

static void test_timeout_is_honoured(LoopdFixture *f, gconstpointer data) {
        g_autofree char *path = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        path = loopd_fixture_make_image(f, "slow.img", 1 * MIB, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, 0600);
        loopd_fixture_hang_polkit(f);
        run_as_nobody(f, as_nobody_call_times_out, path);
        loopd_fixture_resume_polkit(f);
        /* The daemon still gets polkit's yes and attaches the device; the
         * caller is gone, and so it stays until teardown detaches it. */
}

static void test_interactive_flag_on_the_wire(LoopdFixture *f, gconstpointer data) {
        g_autoptr(ClientMonitor) monitor = NULL;
        _client_ LoopdClient *c = NULL;
        LoopdDevice *d = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        monitor = client_monitor_new(f);
        c = new_client();

        g_assert_false(loopd_client_get_interactive(c));
        (void) loopd_open(c, "loop4000", 0, &d, NULL);
        g_assert_false(client_monitor_next_call_interactive(monitor, "Open", 10));

        loopd_client_set_interactive(c, true);
        g_assert_true(loopd_client_get_interactive(c));
        (void) loopd_open(c, "loop4000", 0, &d, NULL);
        g_assert_true(client_monitor_next_call_interactive(monitor, "Open", 10));
        (void) loopd_remove(c, "loop4000");
        g_assert_true(client_monitor_next_call_interactive(monitor, "Remove", 10));

        loopd_client_set_interactive(c, false);
        (void) loopd_remove(c, "loop4000");
        g_assert_false(client_monitor_next_call_interactive(monitor, "Remove", 10));
        g_assert_null(d);
}

/* ---- the client object ----------------------------------------------------- */

static void test_client_from_callers_bus(LoopdFixture *f, gconstpointer data) {
        LoopdClient *c = NULL;
        sd_bus *bus = NULL;
        g_autofree char *version = NULL;
        sd_event *e1 = NULL, *e2 = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        g_assert_cmpint(sd_bus_open_system(&bus), >=, 0);
        g_assert_cmpint(loopd_client_new_from_bus(bus, &c), ==, 0);
        g_assert_true(loopd_client_get_bus(c) == bus);
        assert_ok(c, loopd_get_version(c, &version));

        /* One loop only: the same again is fine, another is refused. */
        g_assert_cmpint(sd_event_new(&e1), >=, 0);
        g_assert_cmpint(sd_event_new(&e2), >=, 0);
        g_assert_cmpint(loopd_client_attach_event(c, e1, 0), ==, 0);
        g_assert_cmpint(loopd_client_attach_event(c, e1, 0), ==, 0);
        g_assert_cmpint(loopd_client_attach_event(c, e2, 0), ==, -EBUSY);

        g_assert_true(loopd_client_ref(c) == c);
        g_assert_null(loopd_client_unref(c));
        g_assert_null(loopd_client_unref(c));

        /* The caller's connection stays the caller's: open, and detached from
         * the loop the client attached it to. */
        g_assert_cmpint(sd_bus_is_open(bus), >, 0);
        g_assert_null(sd_bus_get_event(bus));
        sd_bus_flush_close_unref(bus);
        sd_event_unref(e1);
        sd_event_unref(e2);

        g_assert_null(loopd_client_unref(NULL));
        g_assert_cmpint(loopd_client_new_from_bus(NULL, &c), ==, -EINVAL);
}

/* ---- async --------------------------------------------------------------- */

typedef struct AsyncState {
        sd_event *event;
        bool done;
        int create_r, remove_r;
        unsigned create_calls, remove_calls;
        LoopdDevice *device;
        int device_fd;
        char *error_name;
} AsyncState;

static void on_created(LoopdClient *c, int r, LoopdDevice *d, int device_fd, void *userdata) {
        AsyncState *s = userdata;

        s->create_calls++;
        s->create_r = r;
        if (r >= 0) {
                g_assert_nonnull(d);
                g_assert_cmpint(device_fd, >=, 0);
                s->device = loopd_device_ref(d);
                /* Lent to us: keep a copy. */
                s->device_fd = fcntl(device_fd, F_DUPFD_CLOEXEC, 3);
        } else {
                g_assert_null(d);
                g_assert_cmpint(device_fd, ==, -1);
                s->error_name = g_strdup(loopd_client_last_error_name(c));
        }
        s->done = true;
}

static void on_removed(LoopdClient *c, int r, void *userdata) {
        AsyncState *s = userdata;

        s->remove_calls++;
        s->remove_r = r;
        if (r < 0)
                s->error_name = g_strdup(loopd_client_last_error_name(c));
        s->done = true;
}

/* Runs the loop until a handler ran; a lost reply fails instead of hanging.
 * (sd_event_exit() would end the loop for good, so a flag it is.) */
static void run_loop(AsyncState *s) {
        gint64 end = g_get_monotonic_time() + (gint64) (30 * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        s->done = false;
        while (!s->done) {
                g_assert_cmpint(g_get_monotonic_time(), <, end);
                g_assert_cmpint(sd_event_run(s->event, 100 * 1000), >=, 0);
        }
}

static void async_state_clear(AsyncState *s) {
        loopd_device_unref(s->device);
        if (s->device_fd >= 0)
                close(s->device_fd);
        g_free(s->error_name);
        sd_event_unref(s->event);
}

static void test_async_create_and_remove(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        AsyncState s = { .device_fd = -1 };
        LoopdCreateOptions o = LOOPD_CREATE_OPTIONS_INIT;
        sd_bus_slot *slot = NULL;
        struct stat st;
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        g_assert_cmpint(sd_event_new(&s.event), >=, 0);
        g_assert_cmpint(loopd_client_attach_event(c, s.event, 0), ==, 0);
        fd = open_image(f, "async.img", 2 * MIB, O_RDWR, NULL);

        o.size_limit = 1 * MIB;
        assert_ok(c, loopd_create_async(c, fd, &o, on_created, &s, &slot));
        close(fd);   /* already in the message */
        run_loop(&s);
        g_assert_cmpuint(s.create_calls, ==, 1);
        g_assert_cmpint(s.create_r, ==, 0);
        g_assert_cmpuint(client_loop_diskseq(loopd_device_get_path(s.device)), ==,
                         client_object_diskseq(loopd_device_get_object_path(s.device)));
        g_assert_cmpint(fstat(s.device_fd, &st), ==, 0);
        g_assert_true(S_ISBLK(st.st_mode));
        sd_bus_slot_unref(slot);

        /* Floating: no slot asked for. */
        assert_ok(c, loopd_remove_async(c, loopd_device_get_name(s.device), on_removed, &s, NULL));
        run_loop(&s);
        g_assert_cmpuint(s.remove_calls, ==, 1);
        g_assert_cmpint(s.remove_r, ==, 0);
        close(s.device_fd);
        s.device_fd = -1;
        g_assert_true(wait_device_gone(s.device, 5));

        g_assert_cmpint(loopd_client_detach_event(c), >=, 0);
        async_state_clear(&s);
}

static void test_async_errors_reach_the_handler(LoopdFixture *f, gconstpointer data) {
        _client_ LoopdClient *c = NULL;
        AsyncState s = { .device_fd = -1 };
        LoopdCreateOptions o = LOOPD_CREATE_OPTIONS_INIT;
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        c = new_client();
        g_assert_cmpint(sd_event_new(&s.event), >=, 0);
        g_assert_cmpint(loopd_client_attach_event(c, s.event, 0), ==, 0);
        fd = open_image(f, "async-bad.img", 1 * MIB, O_RDWR, NULL);

        o.block_size = 1000;
        assert_ok(c, loopd_create_async(c, fd, &o, on_created, &s, NULL));
        close(fd);
        run_loop(&s);
        g_assert_cmpint(s.create_r, ==, -EINVAL);
        g_assert_cmpstr(s.error_name, ==, "org.freedesktop.DBus.Error.InvalidArgs");
        g_clear_pointer(&s.error_name, g_free);

        assert_ok(c, loopd_remove_async(c, "/dev/null", on_removed, &s, NULL));
        run_loop(&s);
        g_assert_cmpint(s.remove_r, ==, -ENOTBLK);
        g_assert_cmpstr(s.error_name, ==, "org.loopd.Loop1.Error.NotALoopDevice");

        /* Refused locally, before anything is queued. */
        g_assert_cmpint(loopd_create_async(c, -1, NULL, on_created, &s, NULL), ==, -EBADF);
        g_assert_cmpint(loopd_remove_async(c, NULL, on_removed, &s, NULL), ==, -EINVAL);
        async_state_clear(&s);
}

static void test_async_cancel_and_client_lifetime(LoopdFixture *f, gconstpointer data) {
        LoopdClient *c = NULL;
        _client_ LoopdClient *other = NULL;
        AsyncState s = { .device_fd = -1 };
        _device_ LoopdDevice *d = NULL;
        sd_bus_slot *slot = NULL;
        int fd;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        other = new_client();
        fd = open_image(f, "async-life.img", 1 * MIB, O_RDWR, NULL);
        assert_ok(other, loopd_create(other, fd, NULL, &d, NULL));

        c = new_client();
        g_assert_cmpint(sd_event_new(&s.event), >=, 0);
        g_assert_cmpint(loopd_client_attach_event(c, s.event, 0), ==, 0);

        /* Cancelled: the handler never runs. */
        assert_ok(c, loopd_remove_async(c, "loop4000", on_removed, &s, &slot));
        sd_bus_slot_unref(slot);
        for (int i = 0; i < 20; i++)
                g_assert_cmpint(sd_event_run(s.event, 10 * 1000), >=, 0);
        g_assert_cmpuint(s.remove_calls, ==, 0);

        /* A floating call keeps the client alive after the caller's unref. */
        assert_ok(c, loopd_create_async(c, fd, NULL, on_created, &s, NULL));
        close(fd);
        loopd_client_unref(c);
        run_loop(&s);
        g_assert_cmpuint(s.create_calls, ==, 1);
        g_assert_cmpint(s.create_r, ==, 0);
        close(s.device_fd);
        s.device_fd = -1;
        assert_ok(other, loopd_device_remove(other, s.device));
        assert_ok(other, loopd_device_remove(other, d));
        async_state_clear(&s);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn, opts) \
        g_test_add(path, LoopdFixture, opts, loopd_fixture_setup, fn, loopd_fixture_teardown)

        ADD("/libloopd/create/returns-device-and-fd", test_create_returns_device_and_fd, &daemon_only);
        ADD("/libloopd/create/options-reach-the-kernel", test_create_options_reach_the_kernel, &daemon_only);
        ADD("/libloopd/create/readonly-fd-forces-readonly", test_create_readonly_fd_forces_readonly, &daemon_only);
        ADD("/libloopd/create/from-path", test_create_from_path, &daemon_only);
        ADD("/libloopd/create/autoclear-without-fd-goes-away", test_create_autoclear_without_fd_goes_away, &daemon_only);
        ADD("/libloopd/create/bind-to-caller-goes-with-connection", test_create_bind_to_caller_goes_with_connection, &daemon_only);
        ADD("/libloopd/get-device/by-name-and-path", test_get_device_by_name_and_path, &daemon_only);
        ADD("/libloopd/get-device/names-errors", test_get_device_names_errors, &daemon_only);
        ADD("/libloopd/open/returns-the-device-fd", test_open_returns_the_device_fd, &daemon_only);
        ADD("/libloopd/open/owner-yes-others-per-polkit", test_open_owner_yes_others_per_polkit, &with_polkit);
        ADD("/libloopd/info/names-are-bytes", test_info_names_are_bytes, &daemon_only);
        ADD("/libloopd/info/detach-pending", test_info_detach_pending, &daemon_only);
        ADD("/libloopd/remove/then-stale-object-is-gone", test_remove_then_stale_object_is_gone, &daemon_only);
        ADD("/libloopd/refresh-size/follows-file", test_refresh_size_follows_file, &daemon_only);
        ADD("/libloopd/list/snapshots-sorted", test_list_has_snapshots_sorted, &daemon_only);
        ADD("/libloopd/info/every-property", test_get_info_has_every_property, &daemon_only);
        ADD("/libloopd/daemon/version-and-quota", test_version_and_quota, &quota_one);
        ADD("/libloopd/errors/options-struct-versioning", test_options_struct_versioning, &daemon_only);
        ADD("/libloopd/errors/daemon-errors-map-to-errno", test_daemon_errors_map_to_errno, &daemon_only);
        ADD("/libloopd/errors/unprivileged-errors-map-to-errno", test_unprivileged_errors_map_to_errno, &with_polkit);
        ADD("/libloopd/client/timeout-is-honoured", test_timeout_is_honoured, &with_polkit);
        ADD("/libloopd/client/interactive-flag-on-the-wire", test_interactive_flag_on_the_wire, &daemon_only);
        ADD("/libloopd/client/from-callers-bus", test_client_from_callers_bus, &daemon_only);
        ADD("/libloopd/async/create-and-remove", test_async_create_and_remove, &daemon_only);
        ADD("/libloopd/async/errors-reach-the-handler", test_async_errors_reach_the_handler, &daemon_only);
        ADD("/libloopd/async/cancel-and-client-lifetime", test_async_cancel_and_client_lifetime, &daemon_only);

        return g_test_run();
}
