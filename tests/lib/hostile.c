/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The shared pieces of the tests of hostile callers: see hostile.h.
 */

#include "hostile.h"
#include "fixture-private.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#ifndef LOOPD_DEFAULT_HOSTILE_CALLER
#error "meson defines LOOPD_DEFAULT_HOSTILE_CALLER"
#endif

struct HostileCaller {
        LoopdFixture *f;
        pid_t pid;
        int in_fd, out_fd;
        GString *buf;
};

/* ---- a hostile caller ------------------------------------------------------ */

static const char *hostile_binary(void) {
        const char *p = g_getenv("LOOPD_HOSTILE_CALLER");
        return p && *p ? p : LOOPD_DEFAULT_HOSTILE_CALLER;
}

char *hostile_read(HostileCaller *h, double wait_sec) {
        gint64 deadline = fixture_deadline_after(wait_sec);

        for (;;) {
                char *nl = strchr(h->buf->str, '\n');
                struct pollfd p = { .fd = h->out_fd, .events = POLLIN };
                char chunk[4096];
                ssize_t n;
                int left;

                if (nl) {
                        char *line = g_strndup(h->buf->str, (gsize) (nl - h->buf->str));
                        g_string_erase(h->buf, 0, nl - h->buf->str + 1);
                        return line;
                }
                if (h->out_fd < 0)
                        return NULL;
                left = (int) ((deadline - g_get_monotonic_time()) / 1000);
                if (left <= 0)
                        return NULL;
                if (poll(&p, 1, MIN(left, 100)) <= 0)
                        continue;
                n = read(h->out_fd, chunk, sizeof chunk);
                if (n > 0)
                        g_string_append_len(h->buf, chunk, n);
                else if (n == 0 || errno != EINTR) {
                        close(h->out_fd);
                        h->out_fd = -1;
                }
        }
}

static void hostile_vsend(HostileCaller *h, const char *fmt, va_list ap) G_GNUC_PRINTF(2, 0);
static void hostile_vsend(HostileCaller *h, const char *fmt, va_list ap) {
        g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
        g_autofree char *line = g_strconcat(cmd, "\n", NULL);
        size_t len = strlen(line);

        for (size_t done = 0; done < len;) {
                ssize_t n = write(h->in_fd, line + done, len - done);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        fixture_fail("hostile caller %d: sending \"%s\": %s", (int) h->pid, cmd,
                                     n < 0 ? g_strerror(errno) : "short write");
                done += (size_t) n;
        }
}

void hostile_send(HostileCaller *h, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        hostile_vsend(h, fmt, ap);
        va_end(ap);
}

char *hostile_cmd(HostileCaller *h, double wait_sec, const char *fmt, ...) {
        g_autofree char *cmd = NULL;
        char *answer;
        va_list ap;

        va_start(ap, fmt);
        cmd = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        hostile_send(h, "%s", cmd);
        answer = hostile_read(h, wait_sec);
        if (!answer)
                fixture_fail("hostile caller %d: no answer to \"%s\" within %.0f s", (int) h->pid, cmd, wait_sec);
        return answer;
}

HostileCaller *hostile_spawn(LoopdFixture *f, uid_t uid, gid_t gid, const char *groups, double timeout_sec) {
        return hostile_spawn_wrapped(f, uid, gid, groups, NULL, timeout_sec);
}

HostileCaller *hostile_spawn_wrapped(LoopdFixture *f, uid_t uid, gid_t gid, const char *groups,
                                     const char *const *wrapper, double timeout_sec) {
        g_autoptr(GPtrArray) cmd = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GPtrArray) a = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = fixture_base_env(f);
        g_autofree char *ready = NULL;
        HostileCaller *h = g_new0(HostileCaller, 1);

        for (; wrapper && *wrapper; wrapper++)
                g_ptr_array_add(cmd, g_strdup(*wrapper));
        g_ptr_array_add(cmd, g_strdup(hostile_binary()));
        if (timeout_sec > 0)
                g_ptr_array_add(cmd, g_strdup_printf("--timeout=%g", HOSTILE_SCALED(timeout_sec)));
        g_ptr_array_add(cmd, NULL);
        a = fixture_setpriv_argv(uid, gid, groups, (const char *const *) cmd->pdata);

        h->f = f;
        h->in_fd = h->out_fd = -1;
        h->buf = g_string_new(NULL);
        h->pid = fixture_spawn(f, (const char *const *) a->pdata, env, "/", -1, &h->in_fd, &h->out_fd, NULL, &error);
        if (!h->pid)
                fixture_fail("starting %s as %u: %s", hostile_binary(), (unsigned) uid, error->message);
        fixture_track_pid(f, h->pid, TRUE);
        ready = hostile_read(h, 30);
        if (!ready || strcmp(ready, "ready") != 0)
                fixture_fail("hostile caller as uid %u did not start: %s", (unsigned) uid, ready ? ready : "no answer");
        return h;
}

pid_t hostile_pid(HostileCaller *h) {
        return h->pid;
}

void hostile_free(HostileCaller *h) {
        if (!h)
                return;
        fixture_kill_child(h->pid);
        fixture_untrack_pid(h->f, h->pid);
        if (h->in_fd >= 0)
                close(h->in_fd);
        if (h->out_fd >= 0)
                close(h->out_fd);
        g_string_free(h->buf, TRUE);
        g_free(h);
}

void hostile_device_clear(HostileDevice *d) {
        g_clear_pointer(&d->object, g_free);
        g_clear_pointer(&d->device, g_free);
}

void hostile_parse_device(const char *answer, HostileDevice *ret) {
        g_auto(GStrv) w = g_strsplit(answer, " ", 0);

        hostile_device_clear(ret);
        if (g_strv_length(w) != 4 || strcmp(w[0], "ok") != 0)
                g_error("expected a device (\"ok SLOT OBJ DEV\"), got \"%s\"", answer);
        ret->slot = (guint) g_ascii_strtoull(w[1], NULL, 10);
        ret->object = g_strdup(w[2]);
        ret->device = g_strdup(w[3]);
}

const char *hostile_error_name(const char *answer) {
        static char name[256];
        const char *p;

        if (!g_str_has_prefix(answer, "error "))
                return NULL;
        p = answer + strlen("error ");
        if (g_str_has_prefix(p, "errno "))
                p += strlen("errno ");
        g_strlcpy(name, p, MIN(sizeof name, strcspn(p, " ") + 1));
        return name;
}

GVariant *hostile_device_properties(LoopdFixture *f, const char *device, char **object) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = NULL;
        g_autoptr(GVariantIter) objects = NULL;
        const char *path;
        GVariant *ifaces;

        r = g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                        "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", NULL,
                                        G_VARIANT_TYPE("(a{oa{sa{sv}}})"), G_DBUS_CALL_FLAGS_NO_AUTO_START, 20000,
                                        NULL, &error);
        g_assert_no_error(error);
        g_variant_get(r, "(a{oa{sa{sv}}})", &objects);
        while (g_variant_iter_next(objects, "{&o@a{sa{sv}}}", &path, &ifaces)) {
                g_autoptr(GVariant) props = g_variant_lookup_value(ifaces, LOOPD_DEVICE_INTERFACE, NULL);
                g_autoptr(GVariant) name = props ? g_variant_lookup_value(props, "DevicePath", NULL) : NULL;

                g_variant_unref(ifaces);
                if (name && strcmp(g_variant_get_string(name, NULL), device) == 0) {
                        if (object)
                                *object = g_strdup(path);
                        return g_steal_pointer(&props);
                }
        }
        return NULL;
}

GVariant *hostile_device_property(LoopdFixture *f, const char *device, const char *property) {
        g_autoptr(GVariant) props = hostile_device_properties(f, device, NULL);
        return props ? g_variant_lookup_value(props, property, NULL) : NULL;
}

char *hostile_node_holders(const char *device) {
        g_autofree char *ac_path = g_strdup_printf("/sys/block/%s/loop/autoclear", device + strlen("/dev/"));
        g_autofree char *ac = NULL;
        g_autoptr(GArray) pids = loopd_device_holders(device);
        g_autofree char *who = loopd_pids_text(pids);

        if (!g_file_get_contents(ac_path, &ac, NULL, NULL))
                return g_strdup_printf("not attached held by%s", who);
        return g_strdup_printf("autoclear=%s held by%s", g_strstrip(ac), who);
}

char hostile_proc_state(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int) pid);
        g_autofree char *text = NULL;
        const char *p;

        if (!g_file_get_contents(path, &text, NULL, NULL) || !(p = strrchr(text, ')')))
                return 0;
        return p[2];
}

gboolean hostile_is_thread_of(pid_t tid, pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/task/%d", (int) pid, (int) tid);
        return tid > 0 && pid > 0 && g_file_test(path, G_FILE_TEST_IS_DIR);
}

char *hostile_losetup(const char *image, gboolean read_only) {
        for (int attempt = 1;; attempt++) {
                g_autofree char *out = NULL, *err = NULL;
                g_autoptr(GError) error = NULL;
                int status;

                if (!g_spawn_sync(NULL,
                                  read_only ? (char *[]) { "losetup", "--find", "--show", "--read-only", (char *) image,
                                                           NULL }
                                            : (char *[]) { "losetup", "--find", "--show", (char *) image, NULL },
                                  NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error))
                        g_error("losetup: %s", error->message);
                if (g_spawn_check_wait_status(status, &error))
                        return g_strdup(g_strstrip(out));
                /* Another process on the machine took the free node first. */
                if (attempt == 5)
                        g_error("losetup --find --show %s: %s (%s)", image, error->message, err);
                g_usleep(g_random_int_range(10000, 50000));
        }
}

/* ---- loopd's footprint -------------------------------------------------------- */

static guint64 status_kib(const char *status, const char *key) {
        const char *p = strstr(status, key);
        return p ? g_ascii_strtoull(p + strlen(key), NULL, 10) : 0;
}

static guint count_dir(const char *path) {
        g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
        guint n = 0;

        while (d && g_dir_read_name(d))
                n++;
        return n;
}

gboolean loopd_footprint(pid_t pid, LoopdFootprint *ret) {
        g_autofree char *status_path = g_strdup_printf("/proc/%d/status", (int) pid);
        g_autofree char *fd_path = g_strdup_printf("/proc/%d/fd", (int) pid);
        g_autofree char *task_path = g_strdup_printf("/proc/%d/task", (int) pid);
        g_autofree char *status = NULL;
        g_autoptr(GDir) proc = NULL;
        const char *name;

        memset(ret, 0, sizeof *ret);
        if (pid <= 0 || !g_file_get_contents(status_path, &status, NULL, NULL))
                return FALSE;
        ret->rss_kib = status_kib(status, "VmRSS:");
        ret->hwm_kib = status_kib(status, "VmHWM:");
        ret->fds = count_dir(fd_path);
        ret->threads = count_dir(task_path);
        proc = g_dir_open("/proc", 0, NULL);
        while (proc && (name = g_dir_read_name(proc))) {
                g_autofree char *p = NULL, *s = NULL;
                if (!g_ascii_isdigit(name[0]))
                        continue;
                p = g_strdup_printf("/proc/%s/status", name);
                if (g_file_get_contents(p, &s, NULL, NULL) && status_kib(s, "PPid:") == (guint64) pid)
                        ret->children++;
        }
        return TRUE;
}

char *loopd_footprint_text(const LoopdFootprint *fp) {
        return g_strdup_printf("RSS %.1f MiB (peak %.1f MiB), %u fds, %u threads, %u children",
                               (double) fp->rss_kib / 1024, (double) fp->hwm_kib / 1024, fp->fds, fp->threads,
                               fp->children);
}

/* ---- root's wait for an answer ---------------------------------------------------- */

static double timed_call(LoopdFixture *f, const char *path, const char *iface, const char *method,
                         int timeout_msec, GError **error) {
        g_autoptr(GVariant) r = NULL;
        gint64 t0 = g_get_monotonic_time();

        r = g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, path, iface, method, NULL, NULL,
                                        G_DBUS_CALL_FLAGS_NO_AUTO_START, (int) HOSTILE_SCALED(timeout_msec), NULL,
                                        error);
        if (!r)
                return -1;
        return (double) (g_get_monotonic_time() - t0) / 1000;
}

double root_ping_msec(LoopdFixture *f, int timeout_msec, GError **error) {
        return timed_call(f, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping", timeout_msec, error);
}

double root_managed_objects_msec(LoopdFixture *f, int timeout_msec, GError **error) {
        return timed_call(f, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects",
                          timeout_msec, error);
}

double root_create_remove_msec(LoopdFixture *f, const char *image, int timeout_msec, GError **error) {
        g_autoptr(GUnixFDList) fds = g_unix_fd_list_new(), out = NULL;
        g_autoptr(GVariant) r = NULL, r2 = NULL;
        const char *dev = NULL;
        gint64 t0;
        int fd;

        fd = open(image, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                g_set_error(error, G_IO_ERROR, g_io_error_from_errno(errno), "open %s: %s", image, g_strerror(errno));
                return -1;
        }
        g_unix_fd_list_append(fds, fd, NULL);
        close(fd);
        t0 = g_get_monotonic_time();
        r = g_dbus_connection_call_with_unix_fd_list_sync(
                f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Create",
                g_variant_new("(h@a{sv})", 0, g_variant_new_array(G_VARIANT_TYPE("{sv}"), NULL, 0)),
                G_VARIANT_TYPE("(osh)"), G_DBUS_CALL_FLAGS_NO_AUTO_START, (int) HOSTILE_SCALED(timeout_msec), fds,
                &out, NULL, error);
        if (!r)
                return -1;
        g_variant_get(r, "(&o&sh)", NULL, &dev, NULL);
        g_clear_object(&out); /* our copy of the device fd: the Remove is then not deferred */
        r2 = g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Remove",
                                         g_variant_new("(s)", dev), NULL, G_DBUS_CALL_FLAGS_NO_AUTO_START,
                                         (int) HOSTILE_SCALED(timeout_msec), NULL, error);
        if (!r2)
                return -1;
        return (double) (g_get_monotonic_time() - t0) / 1000;
}

static void worst(double *w, double v, guint *failed) {
        if (v < 0) {
                (*failed)++;
                *w = -1;
        } else if (*w >= 0 && v > *w)
                *w = v;
}

void root_latency_sample(LoopdFixture *f, const char *image, guint rounds, int timeout_msec, RootLatency *ret) {
        memset(ret, 0, sizeof *ret);
        for (guint i = 0; i < rounds; i++) {
                g_autoptr(GError) e1 = NULL, e2 = NULL, e3 = NULL;

                worst(&ret->ping_msec, root_ping_msec(f, timeout_msec, &e1), &ret->failed);
                worst(&ret->objects_msec, root_managed_objects_msec(f, timeout_msec, &e2), &ret->failed);
                if (image)
                        worst(&ret->create_msec, root_create_remove_msec(f, image, timeout_msec, &e3), &ret->failed);
                if (e1 || e2 || e3)
                        g_test_message("root's call failed: %s", (e1 ? e1 : e2 ? e2 : e3)->message);
        }
}

/* ---- loopd's log -------------------------------------------------------------------- */

gboolean hostile_start_daemon_logged(LoopdFixture *f, const char *const *extra_args, char **ret_log) {
        g_autofree char *path = g_build_filename(f->tmpdir, "loopd.log", NULL);
        g_autofree char *quoted = g_shell_quote(path);
        g_autofree char *old = g_strdup(g_getenv("LOOPD_TEST_WRAPPER"));
        g_autofree char *script = NULL, *wrapper = NULL, *quoted_script = NULL;
        gboolean ok;

        /* The shell execs loopd in its own place: the pid the fixture
         * knows is loopd's, and loopd has no extra child. */
        script = g_strdup_printf("exec \"$0\" \"$@\" 2>>%s", quoted);
        quoted_script = g_shell_quote(script);
        wrapper = g_strdup_printf("/bin/sh -c %s%s%s", quoted_script, old && *old ? " " : "", old ? old : "");
        /* libc's setenv(), as the fixture's own. */
        setenv("LOOPD_TEST_WRAPPER", wrapper, 1);
        ok = loopd_fixture_start_daemon(f, extra_args);
        if (old)
                setenv("LOOPD_TEST_WRAPPER", old, 1);
        else
                unsetenv("LOOPD_TEST_WRAPPER");
        if (ret_log)
                *ret_log = g_steal_pointer(&path);
        return ok;
}

char *hostile_log_wait_line(const char *path, double timeout_sec, ...) {
        gint64 deadline = fixture_deadline_after(timeout_sec);
        g_autoptr(GPtrArray) needles = g_ptr_array_new();
        const char *n;
        va_list ap;

        va_start(ap, timeout_sec);
        while ((n = va_arg(ap, const char *)))
                g_ptr_array_add(needles, (gpointer) n);
        va_end(ap);

        for (;;) {
                g_autofree char *text = NULL;
                if (g_file_get_contents(path, &text, NULL, NULL)) {
                        g_auto(GStrv) lines = g_strsplit(text, "\n", 0);
                        for (char **l = lines; *l; l++) {
                                gboolean all = TRUE;
                                for (guint i = 0; i < needles->len && all; i++)
                                        all = strstr(*l, needles->pdata[i]) != NULL;
                                if (all)
                                        return g_strdup(*l);
                        }
                }
                if (fixture_past(deadline))
                        return NULL;
                g_usleep(50000);
        }
}
