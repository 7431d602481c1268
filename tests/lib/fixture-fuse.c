/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The fixture's FUSE file systems (fixture.h, "a FUSE file system that stops
 * answering on demand"): mounted here as root with mount(2), served by
 * tests/lib/fuse-server.py, which gets the /dev/fuse fd as its fd 3 and is
 * driven line by line over its stdin and stdout.
 *
 * Who holds the /dev/fuse fd matters: the kernel aborts a connection when
 * the last fd on it closes. The test process opens it only to mount and
 * hands it over; after that the server is its only holder, so the server's
 * death (by PR_SET_PDEATHSIG with the test, by "abort", by SIGKILL) aborts
 * the connection, and every request waiting on it fails with ENOTCONN. The
 * emergency cleanup also aborts through fusectl and umount2(MNT_FORCE), in
 * case a fork of the test inherited the fd.
 */

#include "fixture-private.h"
#include "emergency.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#ifndef LOOPD_DEFAULT_FUSE_SERVER
#error "meson defines LOOPD_DEFAULT_FUSE_SERVER"
#endif

#ifndef FUSECTL_SUPER_MAGIC
#define FUSECTL_SUPER_MAGIC 0x65735543
#endif

/* The distribution's interpreter: the python3 first on PATH may be a
 * private build (pyenv), and the server needs nothing beyond the standard
 * library. */
#define PYTHON "/usr/bin/python3"

typedef struct Held {
        LoopdFuseOp op;
        pid_t tid;
} Held;

struct LoopdFuse {
        LoopdFixture *f;
        char *mount_point;
        dev_t dev;
        pid_t server_pid;
        int cmd_fd; /* the server's stdin */
        int out_fd; /* its stdout */
        GString *buf;
        GQueue held; /* Held *, reported and not yet returned by wait_held */
        gboolean aborted;
        int emergency_mount_id, emergency_fuse_id;
};

static const struct {
        LoopdFuseOp op;
        const char *name;
} op_names[] = {
        { LOOPD_FUSE_LOOKUP, "LOOKUP" }, { LOOPD_FUSE_GETATTR, "GETATTR" }, { LOOPD_FUSE_OPEN, "OPEN" },
        { LOOPD_FUSE_READ, "READ" },     { LOOPD_FUSE_WRITE, "WRITE" },     { LOOPD_FUSE_FLUSH, "FLUSH" },
};

static const char *op_name(LoopdFuseOp op) {
        for (size_t i = 0; i < G_N_ELEMENTS(op_names); i++)
                if (op_names[i].op == op)
                        return op_names[i].name;
        g_error("not one LoopdFuseOp: 0x%x", (unsigned) op);
}

static LoopdFuseOp op_of(const char *name) {
        for (size_t i = 0; i < G_N_ELEMENTS(op_names); i++)
                if (strcmp(op_names[i].name, name) == 0)
                        return op_names[i].op;
        return 0;
}

/* An event line: queued. TRUE if @line was one. */
static gboolean take_event(LoopdFuse *fs, const char *line) {
        g_auto(GStrv) w = g_strsplit(line, " ", 0);
        Held *h;

        if (!g_str_equal(w[0], "held"))
                return FALSE;
        if (g_strv_length(w) != 4 || !op_of(w[1]))
                fixture_fail("FUSE server: malformed event \"%s\"", line);
        h = g_new0(Held, 1);
        h->op = op_of(w[1]);
        h->tid = (pid_t) g_ascii_strtoll(w[3], NULL, 10);
        g_queue_push_tail(&fs->held, h);
        return TRUE;
}

/* The next line that is not an event, waiting until @deadline; NULL on
 * timeout or EOF. Events read meanwhile are queued. */
static char *read_reply(LoopdFuse *fs, gint64 deadline) {
        for (;;) {
                char *nl = strchr(fs->buf->str, '\n');
                struct pollfd p = { .fd = fs->out_fd, .events = POLLIN };
                char chunk[4096];
                ssize_t n;

                if (nl) {
                        char *line = g_strndup(fs->buf->str, (gsize) (nl - fs->buf->str));
                        g_string_erase(fs->buf, 0, nl - fs->buf->str + 1);
                        if (take_event(fs, line)) {
                                g_free(line);
                                continue;
                        }
                        return line;
                }
                if (fs->out_fd < 0 || fixture_past(deadline))
                        return NULL;
                if (poll(&p, 1, 50) <= 0)
                        continue;
                n = read(fs->out_fd, chunk, sizeof chunk);
                if (n > 0)
                        g_string_append_len(fs->buf, chunk, n);
                else if (n == 0 || errno != EINTR) {
                        close(fs->out_fd);
                        fs->out_fd = -1;
                }
        }
}

/* Sends @cmd and returns the server's "ok ..." answer (free it). */
static char *command(LoopdFuse *fs, const char *cmd) {
        g_autofree char *line = g_strconcat(cmd, "\n", NULL);
        char *reply;

        if (fs->aborted)
                fixture_fail("FUSE server at %s: \"%s\" after abort", fs->mount_point, cmd);
        if (write(fs->cmd_fd, line, strlen(line)) != (ssize_t) strlen(line))
                fixture_fail("FUSE server at %s: sending \"%s\": %s", fs->mount_point, cmd, g_strerror(errno));
        reply = read_reply(fs, fixture_deadline_after(10));
        if (!reply || !g_str_has_prefix(reply, "ok"))
                fixture_fail("FUSE server at %s: \"%s\" answered \"%s\" (its stderr is above)", fs->mount_point, cmd,
                             reply ? reply : "nothing within 10 s");
        return reply;
}

LoopdFuse *loopd_fixture_mount_fuse(LoopdFixture *f, uid_t uid, gid_t gid, const LoopdFuseFile *files) {
        const char *server = g_getenv("LOOPD_FUSE_SERVER");
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GError) error = NULL;
        g_auto(GStrv) env = NULL;
        g_autofree char *options = NULL, *ready = NULL;
        LoopdFuse *fs;
        struct stat st;
        int fd;

        if (!server || !*server)
                server = LOOPD_DEFAULT_FUSE_SERVER;
        if (access("/dev/fuse", R_OK | W_OK) < 0) {
                g_test_skip("no /dev/fuse: needs a kernel with FUSE (Debian package fuse3 loads it)");
                f->skipped = TRUE;
                return NULL;
        }
        if (access(PYTHON, X_OK) < 0) {
                g_test_skip(PYTHON " is missing (package python3): the FUSE server is written in Python");
                f->skipped = TRUE;
                return NULL;
        }

        /* fusectl, where a FUSE connection can be aborted by writing to a
         * file whatever state its mount is in; systemd mounts it at boot
         * (sys-fs-fuse-connections.mount), a machine without systemd may
         * not have. Without it, aborting falls back to umount2(MNT_FORCE). */
        {
                struct statfs sfs;
                if (statfs("/sys/fs/fuse/connections", &sfs) == 0 && sfs.f_type != FUSECTL_SUPER_MAGIC &&
                    mount("fusectl", "/sys/fs/fuse/connections", "fusectl", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                          NULL) < 0)
                        g_test_message("cannot mount fusectl on /sys/fs/fuse/connections (%s): FUSE connections "
                                       "will be aborted by umount2(MNT_FORCE)",
                                       g_strerror(errno));
        }

        fs = g_new0(LoopdFuse, 1);
        fs->f = f;
        fs->cmd_fd = fs->out_fd = -1;
        fs->emergency_mount_id = fs->emergency_fuse_id = -1;
        fs->buf = g_string_new(NULL);
        g_queue_init(&fs->held);
        fs->mount_point = g_strdup_printf("%s/fuse-%u", f->tmpdir, ++f->priv->fuse_counter);
        g_ptr_array_add(f->priv->fuse_mounts, fs);
        if (mkdir(fs->mount_point, 0755) < 0 || chmod(fs->mount_point, 0755) < 0)
                fixture_fail("mkdir %s: %s", fs->mount_point, g_strerror(errno));

        g_ptr_array_add(argv, g_strdup(PYTHON));
        g_ptr_array_add(argv, g_strdup(server));
        g_ptr_array_add(argv, g_strdup("--uid"));
        g_ptr_array_add(argv, g_strdup_printf("%u", (unsigned) uid));
        g_ptr_array_add(argv, g_strdup("--gid"));
        g_ptr_array_add(argv, g_strdup_printf("%u", (unsigned) gid));
        for (const LoopdFuseFile *file = files; file && file->name; file++) {
                g_assert_true(*file->name && !strpbrk(file->name, "/:") && !g_str_equal(file->name, ".") &&
                              !g_str_equal(file->name, ".."));
                g_ptr_array_add(argv, g_strdup_printf("%s:%" G_GUINT64_FORMAT ":%o", file->name, file->size,
                                                      (unsigned) (file->mode ? file->mode & 07777 : 0644)));
        }
        g_ptr_array_add(argv, NULL);

        /* The fd is ours only until the server has it: see the top. */
        fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                fixture_fail("open /dev/fuse: %s", g_strerror(errno));
        options = g_strdup_printf("fd=%d,rootmode=40000,user_id=%u,group_id=%u,allow_other", fd, (unsigned) uid,
                                  (unsigned) gid);
        if (mount("loopd-test", fs->mount_point, "fuse.loopd-test", MS_NOSUID | MS_NODEV, options) < 0) {
                int e = errno;
                close(fd);
                fixture_fail("mounting FUSE at %s (%s): %s", fs->mount_point, options, g_strerror(e));
        }
        fs->emergency_mount_id = emergency_add_mount(fs->mount_point);
        if (fs->emergency_mount_id < 0)
                fixture_fail("registering %s for the emergency cleanup: %s", fs->mount_point,
                             g_strerror(-fs->emergency_mount_id));

        env = fixture_base_env(f);
        fs->server_pid = fixture_spawn(f, (const char *const *) argv->pdata, env, "/", fd, &fs->cmd_fd, &fs->out_fd,
                                       NULL, &error);
        close(fd);
        if (!fs->server_pid)
                fixture_fail("starting %s: %s", server, error->message);
        fixture_track_pid(f, fs->server_pid, TRUE);

        /* "ready": it answered the kernel's INIT. */
        ready = read_reply(fs, fixture_deadline_after(10));
        if (!ready || !g_str_equal(ready, "ready"))
                fixture_fail("FUSE server for %s: \"%s\" instead of \"ready\" (its stderr is above)", fs->mount_point,
                             ready ? ready : "nothing within 10 s");
        if (stat(fs->mount_point, &st) < 0)
                fixture_fail("stat %s: %s", fs->mount_point, g_strerror(errno));
        fs->dev = st.st_dev;
        fs->emergency_fuse_id = emergency_add_fuse(fs->dev, fs->mount_point);
        if (fs->emergency_fuse_id < 0)
                fixture_fail("registering %s for the emergency cleanup: %s", fs->mount_point,
                             g_strerror(-fs->emergency_fuse_id));
        return fs;
}

const char *loopd_fuse_mount_point(LoopdFuse *fs) {
        return fs->mount_point;
}

char *loopd_fuse_path(LoopdFuse *fs, const char *name) {
        return g_build_filename(fs->mount_point, name, NULL);
}

void loopd_fuse_hang(LoopdFuse *fs, guint ops) {
        g_autoptr(GString) cmd = g_string_new("hang");
        g_autofree char *reply = NULL;

        for (size_t i = 0; i < G_N_ELEMENTS(op_names); i++)
                if (ops & op_names[i].op) {
                        g_string_append_printf(cmd, " %s", op_names[i].name);
                        ops &= ~(guint) op_names[i].op;
                }
        g_assert_cmpuint(ops, ==, 0);
        reply = command(fs, cmd->str);
}

void loopd_fuse_resume(LoopdFuse *fs) {
        g_autofree char *reply = command(fs, "resume");
}

pid_t loopd_fuse_wait_held(LoopdFuse *fs, LoopdFuseOp op, double timeout_sec) {
        gint64 deadline = fixture_deadline_after(timeout_sec);

        (void) op_name(op); /* exactly one op */
        for (;;) {
                for (GList *l = fs->held.head; l; l = l->next) {
                        Held *h = l->data;
                        if (h->op == op) {
                                pid_t tid = h->tid;
                                g_queue_delete_link(&fs->held, l);
                                g_free(h);
                                return tid;
                        }
                }
                if (fs->aborted || fixture_past(deadline))
                        return 0;
                /* Anything but an event here would be an answer nobody asked for. */
                {
                        g_autofree char *stray = read_reply(fs, MIN(deadline, g_get_monotonic_time() + 50000));
                        if (stray)
                                fixture_fail("FUSE server at %s said \"%s\" unasked", fs->mount_point, stray);
                }
        }
}

gboolean loopd_fuse_wait_held_by(LoopdFuse *fs, LoopdFuseOp op, pid_t tid, double timeout_sec) {
        gint64 deadline = fixture_deadline_after(timeout_sec);

        for (;;) {
                double left = (double) (deadline - g_get_monotonic_time()) / G_USEC_PER_SEC;
                pid_t who = loopd_fuse_wait_held(fs, op, MAX(left, 0) / loopd_test_timeout_scale());
                if (who == tid)
                        return TRUE;
                if (who == 0)
                        return FALSE;
                g_test_message("FUSE at %s: %s of thread %d withheld too", fs->mount_point, op_name(op), (int) who);
        }
}

guint loopd_fuse_count(LoopdFuse *fs, LoopdFuseOp op) {
        g_autofree char *reply = command(fs, "count");
        g_autofree char *key = g_strconcat(op_name(op), "=", NULL);
        const char *p = strstr(reply, key);

        if (!p)
                fixture_fail("FUSE server at %s: no %s in \"%s\"", fs->mount_point, op_name(op), reply);
        return (guint) g_ascii_strtoull(p + strlen(key), NULL, 10);
}

void loopd_fuse_abort(LoopdFuse *fs) {
        g_autofree char *reply = NULL;
        int st;

        if (fs->aborted)
                return;
        /* The server closes the only fd on the connection and exits: the
         * kernel aborts it (fuse_dev_release()). Then fusectl too, in case
         * some fork of the test still holds a copy of the fd. A server
         * already gone (the connection aborted under it: it exits on
         * ENODEV) answers nothing; its exit is what counts. */
        if (write(fs->cmd_fd, "abort\n", 6) == 6)
                reply = read_reply(fs, fixture_deadline_after(10));
        if (reply && !g_str_equal(reply, "ok"))
                fixture_fail("FUSE server at %s: \"abort\" answered \"%s\"", fs->mount_point, reply);
        (void) emergency_abort_fuse_connection(fs->dev);
        fs->aborted = TRUE;
        if (!fixture_wait_child(fs->server_pid, 10, &st))
                fixture_kill_child(fs->server_pid);
        fixture_untrack_pid(fs->f, fs->server_pid);
        fs->server_pid = 0;
        /* Nothing is waiting on the connection any more: the emergency
         * cleanup has only the mount left to undo. */
        emergency_forget(fs->emergency_fuse_id);
        fs->emergency_fuse_id = -1;
}

void loopd_fuse_unmount(LoopdFuse *fs) {
        if (!fs)
                return;
        loopd_fuse_abort(fs);
        /* While mounted, a loop device's backing_file still names a path
         * under the mount point; after umount it would not. */
        (void) emergency_detach_loops_under(fs->mount_point);
        if (umount2(fs->mount_point, MNT_DETACH) < 0)
                fixture_fail("umount %s: %s", fs->mount_point, g_strerror(errno));
        emergency_forget(fs->emergency_mount_id);
        if (rmdir(fs->mount_point) < 0)
                fixture_fail("rmdir %s: %s", fs->mount_point, g_strerror(errno));

        if (fs->cmd_fd >= 0)
                close(fs->cmd_fd);
        if (fs->out_fd >= 0)
                close(fs->out_fd);
        g_queue_clear_full(&fs->held, g_free);
        g_string_free(fs->buf, TRUE);
        g_ptr_array_remove(fs->f->priv->fuse_mounts, fs);
        g_free(fs->mount_point);
        g_free(fs);
}

void fixture_fuse_abort_all(LoopdFixture *f) {
        for (guint i = 0; f->priv->fuse_mounts && i < f->priv->fuse_mounts->len; i++)
                loopd_fuse_abort(f->priv->fuse_mounts->pdata[i]);
}

void fixture_fuse_unmount_all(LoopdFixture *f) {
        while (f->priv->fuse_mounts && f->priv->fuse_mounts->len > 0)
                loopd_fuse_unmount(f->priv->fuse_mounts->pdata[f->priv->fuse_mounts->len - 1]);
}
