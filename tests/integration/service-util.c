/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "service-util.h"

const char rules_nobody_may_create[] = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE);

const LoopdFixtureOptions daemon_opts = { .start_daemon = TRUE };
const LoopdFixtureOptions polkit_daemon_opts = {
        .start_polkit = TRUE,
        .polkit_rules = rules_nobody_may_create,
        .start_daemon = TRUE,
};

void kernel_loop_clear(KernelLoop *k) {
        g_clear_pointer(&k->backing_file, g_free);
}

guint32 loop_number_of(const char *dev) {
        const char *s = dev;
        char *end;
        guint64 v;

        if (g_str_has_prefix(s, "/dev/"))
                s += 5;
        g_assert_true(g_str_has_prefix(s, "loop"));
        v = g_ascii_strtoull(s + 4, &end, 10);
        g_assert_true(end != s + 4 && *end == 0);
        return (guint32) v;
}

static gboolean read_attr(guint32 number, const char *attr, char **ret) {
        g_autofree char *path = g_strdup_printf("/sys/block/loop%u/%s", number, attr);
        char *text = NULL;

        if (!g_file_get_contents(path, &text, NULL, NULL))
                return FALSE;
        *ret = g_strchomp(text);
        return TRUE;
}

static guint64 read_u64(guint32 number, const char *attr) {
        g_autofree char *text = NULL;
        char *end;
        guint64 v;

        if (!read_attr(number, attr, &text))
                g_error("loop%u: cannot read sysfs attribute %s", number, attr);
        v = g_ascii_strtoull(text, &end, 10);
        if (end == text || *end)
                g_error("loop%u: sysfs %s is '%s'", number, attr, text);
        return v;
}

gboolean kernel_loop_read(guint32 number, KernelLoop *k) {
        g_autofree char *dev = NULL;
        unsigned maj, min;

        memset(k, 0, sizeof *k);
        if (!read_attr(number, "loop/backing_file", &k->backing_file))
                return FALSE;
        k->number = number;
        if (!read_attr(number, "dev", &dev) || sscanf(dev, "%u:%u", &maj, &min) != 2)
                g_error("loop%u: no dev attribute", number);
        k->devnum = makedev(maj, min);
        k->diskseq = read_u64(number, "diskseq");
        k->offset = read_u64(number, "loop/offset");
        k->size_limit = read_u64(number, "loop/sizelimit");
        k->size = read_u64(number, "size") * 512;
        k->block_size = (guint32) read_u64(number, "queue/logical_block_size");
        k->read_only = read_u64(number, "ro") != 0;
        k->autoclear = read_u64(number, "loop/autoclear") != 0;
        k->partscan = read_u64(number, "loop/partscan") != 0;
        k->direct_io = read_u64(number, "loop/dio") != 0;
        return TRUE;
}

gboolean kernel_loop_attached(guint32 number) {
        g_autofree char *path = g_strdup_printf("/sys/block/loop%u/loop/backing_file", number);
        return access(path, F_OK) == 0;
}

void kernel_loop_backing_id(int devfd, guint64 *ret_dev, guint64 *ret_ino) {
        struct loop_info64 info = { 0 };

        if (ioctl(devfd, LOOP_GET_STATUS64, &info) < 0)
                g_error("LOOP_GET_STATUS64: %s", g_strerror(errno));
        *ret_dev = info.lo_device;
        *ret_ino = info.lo_inode;
}

gboolean wait_attached(guint32 number, gboolean attached, double timeout_sec) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (timeout_sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        for (;;) {
                if (kernel_loop_attached(number) == attached)
                        return TRUE;
                if (g_get_monotonic_time() > deadline)
                        return FALSE;
                g_main_context_iteration(NULL, FALSE);
                g_usleep(2000);
        }
}

/* Who has /dev/loopN open, from /proc/PID/fd: for failure messages. */
static char *holders_of(guint32 number) {
        g_autofree char *dev = g_strdup_printf("/dev/loop%u", number);
        g_autoptr(GString) out = g_string_new(NULL);
        g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
        const char *pid;

        while (proc && (pid = g_dir_read_name(proc))) {
                g_autofree char *fddir = NULL;
                g_autoptr(GDir) fds = NULL;
                const char *fd;

                if (!g_ascii_isdigit(pid[0]))
                        continue;
                fddir = g_strdup_printf("/proc/%s/fd", pid);
                fds = g_dir_open(fddir, 0, NULL);
                while (fds && (fd = g_dir_read_name(fds))) {
                        g_autofree char *link = g_strdup_printf("%s/%s", fddir, fd);
                        g_autofree char *target = g_file_read_link(link, NULL);
                        if (g_strcmp0(target, dev) == 0) {
                                g_autofree char *commf = g_strdup_printf("/proc/%s/comm", pid);
                                g_autofree char *comm = NULL;
                                (void) g_file_get_contents(commf, &comm, NULL, NULL);
                                g_string_append_printf(out, " %s(%s)", pid, comm ? g_strchomp(comm) : "?");
                        }
                }
        }
        return out->len > 0 ? g_strdup(out->str) : g_strdup(" nobody");
}

void assert_detached(guint32 number, double timeout_sec) {
        g_autofree char *holders = NULL;

        if (wait_attached(number, FALSE, timeout_sec))
                return;
        holders = holders_of(number);
        g_error("loop%u is still attached %.1f s after its removal (autoclear %s); held open by:%s", number,
                timeout_sec, kernel_loop_attached(number) ? "?" : "-", holders);
}

char *make_image(LoopdFixture *f, const char *name, guint64 size) {
        return loopd_fixture_make_image(f, name, size, 0, 0, 0644);
}

GVariant *loopd_call(GDBusConnection *conn, const char *path, const char *iface, const char *method,
                     GVariant *params, const char *reply_type, GError **error) {
        return g_dbus_connection_call_sync(conn, LOOPD_BUS_NAME, path, iface, method, params,
                                           reply_type ? G_VARIANT_TYPE(reply_type) : NULL, G_DBUS_CALL_FLAGS_NONE,
                                           (int) (30000 * loopd_test_timeout_scale()), NULL, error);
}

char *create_with_fd(GDBusConnection *conn, const char *image, int open_flags, GVariant *options, char **ret_dev,
                     int *ret_devfd, GError **error) {
        g_autoptr(GUnixFDList) in = g_unix_fd_list_new();
        g_autoptr(GUnixFDList) out = NULL;
        g_autoptr(GVariant) reply = NULL;
        const char *obj, *dev;
        gint32 handle;
        int fd, idx;

        fd = open(image, open_flags | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                g_error("open %s: %s", image, g_strerror(errno));
        idx = g_unix_fd_list_append(in, fd, NULL);
        close(fd);
        g_assert_cmpint(idx, ==, 0);
        if (!options)
                options = g_variant_new_array(G_VARIANT_TYPE("{sv}"), NULL, 0);

        reply = g_dbus_connection_call_with_unix_fd_list_sync(
                conn, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Create",
                g_variant_new("(h@a{sv})", 0, options), G_VARIANT_TYPE("(osh)"), G_DBUS_CALL_FLAGS_NONE,
                (int) (30000 * loopd_test_timeout_scale()), in, &out, NULL, error);
        if (!reply)
                return NULL;
        g_variant_get(reply, "(&o&sh)", &obj, &dev, &handle);
        g_assert_nonnull(out);
        g_assert_cmpint(g_unix_fd_list_get_length(out), ==, 1);
        g_assert_cmpint(handle, ==, 0);
        if (ret_devfd)
                *ret_devfd = g_unix_fd_list_get(out, handle, NULL);
        if (ret_dev)
                *ret_dev = g_strdup(dev);
        return g_strdup(obj);
}

char *create_ok(LoopdFixture *f, const char *image, GVariant *options, char **ret_dev, int *ret_devfd) {
        g_autoptr(GError) error = NULL;
        int fd = -1;
        char *obj = create_with_fd(f->bus, image, O_RDWR, options, ret_dev, &fd, &error);

        g_assert_no_error(error);
        g_assert_nonnull(obj);
        g_assert_cmpint(fd, >=, 0);
        if (ret_devfd)
                *ret_devfd = fd;
        else
                close(fd);
        return obj;
}

GVariant *device_properties(GDBusConnection *conn, const char *obj, GError **error) {
        g_autoptr(GVariant) r = loopd_call(conn, obj, "org.freedesktop.DBus.Properties", "GetAll",
                                           g_variant_new("(s)", LOOPD_DEVICE_INTERFACE), "(a{sv})", error);
        if (!r)
                return NULL;
        return g_variant_get_child_value(r, 0);
}

#define LOOKUP(props, key, type, ptr)                                                                  \
        G_STMT_START {                                                                                 \
                if (!g_variant_lookup(props, key, type, ptr))                                          \
                        g_error("property %s (of type %s) is missing from GetAll", key, type);        \
        } G_STMT_END

void assert_properties_match_kernel(GVariant *props, int devfd) {
        g_auto(KernelLoop) k = { 0 };
        g_autofree char *name = NULL, *path = NULL, *exp_name = NULL, *exp_path = NULL;
        guint32 number, block_size;
        guint64 devnum, diskseq, bdev, bino, offset, size_limit, size, kdev, kino, blk_size = 0, seq = 0;
        gboolean ro, ac, ps, dio;
        g_autofree char *backing = NULL;
        struct stat st;
        int fl;

        g_assert_cmpuint(g_variant_n_children(props), ==, 21);
        LOOKUP(props, "Number", "u", &number);
        g_assert_true(kernel_loop_read(number, &k));

        /* The fd loopd handed back is that very device. */
        g_assert_cmpint(fstat(devfd, &st), ==, 0);
        g_assert_true(S_ISBLK(st.st_mode));
        g_assert_cmpuint(st.st_rdev, ==, k.devnum);

        LOOKUP(props, "Name", "s", &name);
        LOOKUP(props, "DevicePath", "s", &path);
        exp_name = g_strdup_printf("loop%u", number);
        exp_path = g_strdup_printf("/dev/loop%u", number);
        g_assert_cmpstr(name, ==, exp_name);
        g_assert_cmpstr(path, ==, exp_path);
        LOOKUP(props, "DeviceNumber", "t", &devnum);
        g_assert_cmpuint(devnum, ==, k.devnum);
        LOOKUP(props, "DiskSeq", "t", &diskseq);
        g_assert_cmpuint(diskseq, ==, k.diskseq);
        g_assert_cmpint(ioctl(devfd, BLKGETDISKSEQ, &seq), ==, 0);
        g_assert_cmpuint(diskseq, ==, seq);
        LOOKUP(props, "BackingFile", "s", &backing);
        g_assert_cmpstr(backing, ==, k.backing_file); /* the tests' names need no escaping */
        {
                g_autoptr(GVariant) bytes = g_variant_lookup_value(props, "BackingFileBytes", G_VARIANT_TYPE_BYTESTRING);
                g_assert_nonnull(bytes);
                g_assert_cmpstr(g_variant_get_bytestring(bytes), ==, k.backing_file);
        }
        gboolean deleted = TRUE, pending = TRUE;
        LOOKUP(props, "BackingFileDeleted", "b", &deleted);
        g_assert_false(deleted);
        LOOKUP(props, "DetachPending", "b", &pending);
        g_assert_false(pending);
        kernel_loop_backing_id(devfd, &kdev, &kino);
        LOOKUP(props, "BackingDevice", "t", &bdev);
        LOOKUP(props, "BackingInode", "t", &bino);
        g_assert_cmpuint(bdev, ==, kdev);
        g_assert_cmpuint(bino, ==, kino);
        LOOKUP(props, "Offset", "t", &offset);
        g_assert_cmpuint(offset, ==, k.offset);
        LOOKUP(props, "SizeLimit", "t", &size_limit);
        g_assert_cmpuint(size_limit, ==, k.size_limit);
        LOOKUP(props, "Size", "t", &size);
        g_assert_cmpuint(size, ==, k.size);
        g_assert_cmpint(ioctl(devfd, BLKGETSIZE64, &blk_size), ==, 0);
        g_assert_cmpuint(size, ==, blk_size);
        LOOKUP(props, "BlockSize", "u", &block_size);
        g_assert_cmpuint(block_size, ==, k.block_size);
        LOOKUP(props, "ReadOnly", "b", &ro);
        g_assert_cmpint(!!ro, ==, !!k.read_only);
        LOOKUP(props, "Autoclear", "b", &ac);
        g_assert_cmpint(!!ac, ==, !!k.autoclear);
        LOOKUP(props, "Partscan", "b", &ps);
        g_assert_cmpint(!!ps, ==, !!k.partscan);
        LOOKUP(props, "DirectIO", "b", &dio);
        g_assert_cmpint(!!dio, ==, !!k.direct_io);

        /* The returned fd is read-only exactly when the device is. */
        fl = fcntl(devfd, F_GETFL);
        g_assert_cmpint(fl, >=, 0);
        g_assert_cmpint((fl & O_ACCMODE), ==, k.read_only ? O_RDONLY : O_RDWR);

        /* Present with the right type; their values are the tests' business. */
        g_assert_true(g_variant_lookup(props, "OwnerUID", "u", NULL));
        g_assert_true(g_variant_lookup(props, "BoundToCaller", "b", NULL));
}

void assert_dbus_error(const GError *error, const char *name) {
        g_autofree char *remote = NULL;

        if (!error)
                g_error("expected the error %s, got success", name);
        remote = g_dbus_error_get_remote_error(error);
        if (g_strcmp0(remote, name) != 0)
                g_error("expected the error %s, got %s (%s)", name, remote ? remote : "(local)", error->message);
}

int run_command(const char *const *argv, char **ret_out, char **ret_err) {
        g_autoptr(GError) error = NULL;
        g_autofree char *out = NULL, *err = NULL;
        int status;

        if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error))
                g_error("%s: %s", argv[0], error->message);
        if (ret_out)
                *ret_out = g_steal_pointer(&out);
        if (ret_err)
                *ret_err = g_steal_pointer(&err);
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

/* Retried: other tests (and loopd's spare-node pool) take free devices at
 * the same time, so losetup --find can lose the race for one. */
char *losetup_attach(const char *image, const char *extra_arg) {
        for (int attempt = 1;; attempt++) {
                g_autofree char *out = NULL, *err = NULL;
                const char *argv[] = { "losetup", "--find", "--show", extra_arg ? extra_arg : image,
                                       extra_arg ? image : NULL, NULL };
                if (run_command(argv, &out, &err) == 0)
                        return g_strdup(g_strstrip(out));
                if (attempt == 10)
                        g_error("losetup --find --show %s: %s", image, err);
                g_usleep(g_random_int_range(10000, 50000));
        }
}

void losetup_detach(const char *dev) {
        g_autofree char *err = NULL;
        const char *argv[] = { "losetup", "-d", dev, NULL };
        if (run_command(argv, NULL, &err) != 0)
                g_error("losetup -d %s: %s", dev, err);
}

/* ---- signals ----------------------------------------------------------- */

typedef struct LoggedSignal {
        char *member;
        char *obj;
        GVariant *params;
} LoggedSignal;

struct SignalLog {
        GDBusConnection *conn;
        guint ids[2];
        GPtrArray *signals;
};

static void logged_signal_free(gpointer p) {
        LoggedSignal *s = p;
        g_free(s->member);
        g_free(s->obj);
        g_variant_unref(s->params);
        g_free(s);
}

static void on_signal(GDBusConnection *conn, const char *sender, const char *path, const char *iface,
                      const char *member, GVariant *params, gpointer userdata) {
        SignalLog *log = userdata;
        LoggedSignal *s = g_new0(LoggedSignal, 1);

        s->member = g_strdup(member);
        if (g_str_equal(member, "InterfacesAdded") || g_str_equal(member, "InterfacesRemoved"))
                g_variant_get_child(params, 0, "o", &s->obj);
        else
                s->obj = g_strdup(path);
        s->params = g_variant_ref(params);
        g_ptr_array_add(log->signals, s);
}

SignalLog *signal_log_new(GDBusConnection *conn) {
        SignalLog *log = g_new0(SignalLog, 1);

        log->conn = g_object_ref(conn);
        log->signals = g_ptr_array_new_with_free_func(logged_signal_free);
        log->ids[0] = g_dbus_connection_signal_subscribe(conn, LOOPD_BUS_NAME, "org.freedesktop.DBus.ObjectManager",
                                                         NULL, LOOPD_MANAGER_PATH, NULL, G_DBUS_SIGNAL_FLAGS_NONE,
                                                         on_signal, log, NULL);
        log->ids[1] = g_dbus_connection_signal_subscribe(conn, LOOPD_BUS_NAME, "org.freedesktop.DBus.Properties",
                                                         "PropertiesChanged", NULL, NULL,
                                                         G_DBUS_SIGNAL_FLAGS_NONE, on_signal, log, NULL);
        /* The match rules reach the bus before any call the test makes next. */
        {
                g_autoptr(GVariant) r = g_dbus_connection_call_sync(
                        conn, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.Peer", "Ping",
                        NULL, NULL, G_DBUS_CALL_FLAGS_NONE, -1, NULL, NULL);
        }
        return log;
}

void signal_log_free(SignalLog *log) {
        if (!log)
                return;
        for (int i = 0; i < 2; i++)
                g_dbus_connection_signal_unsubscribe(log->conn, log->ids[i]);
        g_ptr_array_unref(log->signals);
        g_object_unref(log->conn);
        g_free(log);
}

GVariant *signal_log_wait(SignalLog *log, const char *member, const char *obj, double timeout_sec) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (timeout_sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        for (;;) {
                for (guint i = 0; i < log->signals->len; i++) {
                        LoggedSignal *s = log->signals->pdata[i];
                        if (g_str_equal(s->member, member) && g_str_equal(s->obj, obj))
                                return g_variant_ref(s->params);
                }
                if (g_get_monotonic_time() > deadline)
                        return NULL;
                g_main_context_iteration(NULL, FALSE);
                g_usleep(1000);
        }
}

void spin(double sec) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);
        while (g_get_monotonic_time() < deadline) {
                g_main_context_iteration(NULL, FALSE);
                g_usleep(1000);
        }
}
