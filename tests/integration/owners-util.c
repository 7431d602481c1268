/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "emergency.h"
#include "owners-util.h"

#ifndef LOOPD_TEST_OWNER_PROBE
#error "meson passes the probe's path"
#endif

const char *owner_probe_binary(void) {
        const char *p = g_getenv("LOOPD_TEST_OWNER_PROBE");
        return p && *p ? p : LOOPD_TEST_OWNER_PROBE;
}

static double scaled(double sec) {
        return sec * loopd_test_timeout_scale();
}

/* ---- what a uid can do -------------------------------------------------- */

void probe_as(LoopdFixture *f, uid_t uid, LoopdRunResult *r, ...) {
        va_list ap;

        va_start(ap, r);
        loopd_fixture_run_program_as_valist(f, uid, uid, r, owner_probe_binary(), ap);
        va_end(ap);
}

NodeAccess probe_node(LoopdFixture *f, uid_t uid, const char *dev) {
        g_auto(LoopdRunResult) r = { 0 };
        NodeAccess a = { { 0 } };

        probe_as(f, uid, &r, "node", dev, NULL);
        if (r.status != 0 || sscanf(r.out, "rw=%15s ro=%15s", a.rw, a.ro) != 2)
                g_error("probe node %s as %u: exit %d: %s%s", dev, (unsigned) uid, r.status, r.out, r.err);
        return a;
}

char *node_access_text(const NodeAccess *a) {
        return g_strdup_printf("rw=%s ro=%s", a->rw, a->ro);
}

struct Holder {
        pid_t pid;
        int in_fd, out_fd;
        GString *buf;
        char *status;
};

static void child_setup(gpointer data) {
        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static char *holder_line(Holder *h) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (scaled(30) * G_USEC_PER_SEC);

        for (;;) {
                char *nl = strchr(h->buf->str, '\n');
                char tmp[256];
                ssize_t n;

                if (nl) {
                        char *line = g_strndup(h->buf->str, (gsize) (nl - h->buf->str));
                        g_string_erase(h->buf, 0, nl - h->buf->str + 1);
                        return line;
                }
                if (g_get_monotonic_time() > deadline)
                        g_error("the holder (pid %d) said nothing in time", (int) h->pid);
                n = read(h->out_fd, tmp, sizeof tmp);
                if (n == 0)
                        g_error("the holder (pid %d) exited", (int) h->pid);
                if (n < 0 && errno != EINTR && errno != EAGAIN)
                        g_error("reading the holder: %s", g_strerror(errno));
                if (n > 0)
                        g_string_append_len(h->buf, tmp, n);
                else
                        g_usleep(2000);
        }
}

Holder *holder_new(uid_t uid, const char *dev, gboolean ro) {
        g_autofree char *reuid = g_strdup_printf("--reuid=%u", (unsigned) uid);
        g_autofree char *regid = g_strdup_printf("--regid=%u", (unsigned) uid);
        const char *argv[] = { "setpriv", reuid, regid, "--clear-groups", "--pdeathsig=KILL", "--",
                               owner_probe_binary(), "hold", dev, ro ? "--ro" : NULL, NULL };
        g_autoptr(GError) error = NULL;
        Holder *h = g_new0(Holder, 1);

        h->buf = g_string_new(NULL);
        if (!g_spawn_async_with_pipes("/", (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD,
                                      child_setup, NULL, &h->pid, &h->in_fd, &h->out_fd, NULL, &error))
                g_error("starting the holder: %s", error->message);
        g_assert_cmpint(emergency_add_pid(h->pid, EMERGENCY_PID_CHILD), >=, 0);
        h->status = holder_line(h);
        return h;
}

const char *holder_status(Holder *h) {
        return h->status;
}

static char *holder_ask(Holder *h, const char *cmd) {
        size_t len = strlen(cmd);

        if (write(h->in_fd, cmd, len) != (ssize_t) len)
                g_error("writing to the holder: %s", g_strerror(errno));
        return holder_line(h);
}

char *holder_read(Holder *h) {
        return holder_ask(h, "read\n");
}

char *holder_clear(Holder *h) {
        return holder_ask(h, "clr\n");
}

void holder_close(Holder *h) {
        g_autofree char *l = holder_ask(h, "close\n");
        g_assert_cmpstr(l, ==, "ok");
}

void holder_free(Holder *h) {
        int st;

        if (!h)
                return;
        if (h->in_fd >= 0)
                close(h->in_fd);
        /* EOF ends it; it may be stuck in a read of a dead device: kill. */
        if (waitpid(h->pid, &st, WNOHANG) == 0) {
                g_usleep(20000);
                if (waitpid(h->pid, &st, WNOHANG) == 0) {
                        kill(h->pid, SIGKILL);
                        (void) waitpid(h->pid, &st, 0);
                }
        }
        emergency_forget_pid(h->pid);
        close(h->out_fd);
        g_string_free(h->buf, TRUE);
        g_free(h->status);
        g_free(h);
}

/* ---- node ACLs ----------------------------------------------------------- */

/* The raw "system.posix_acl_access" value (linux/posix_acl_xattr.h): a
 * version word, then 8-byte entries {le16 tag, le16 perm, le32 id}. */
#define ACL_XATTR_VERSION 0x0002
#define ACL_TAG_USER 0x02

guint node_named_users(const char *dev, uid_t *uids, guint *perms, guint max) {
        unsigned char buf[1024];
        ssize_t n = getxattr(dev, "system.posix_acl_access", buf, sizeof buf);
        guint count = 0;

        if (n < 0) {
                if (errno == ENODATA || errno == ENOENT)
                        return 0;
                g_error("getxattr %s: %s", dev, g_strerror(errno));
        }
        g_assert_cmpint(n, >=, 4);
        g_assert_cmpint((n - 4) % 8, ==, 0);
        g_assert_cmpuint(buf[0] | (buf[1] << 8), ==, ACL_XATTR_VERSION);
        for (ssize_t off = 4; off < n; off += 8) {
                unsigned tag = buf[off] | (buf[off + 1] << 8);
                unsigned perm = buf[off + 2] | (buf[off + 3] << 8);
                guint32 id = (guint32) buf[off + 4] | ((guint32) buf[off + 5] << 8) | ((guint32) buf[off + 6] << 16) |
                             ((guint32) buf[off + 7] << 24);
                if (tag != ACL_TAG_USER)
                        continue;
                if (count < max) {
                        if (uids)
                                uids[count] = (uid_t) id;
                        if (perms)
                                perms[count] = perm;
                }
                count++;
        }
        return count;
}

char *node_acl_text(const char *dev) {
        uid_t uids[8];
        guint perms[8];
        guint n = node_named_users(dev, uids, perms, G_N_ELEMENTS(uids));
        GString *s = g_string_new(NULL);

        if (n == 0)
                return g_string_free(s, TRUE), g_strdup("none");
        for (guint i = 0; i < n && i < G_N_ELEMENTS(uids); i++)
                g_string_append_printf(s, "%su:%u:%s%s", i ? "," : "", (unsigned) uids[i], perms[i] & 4 ? "r" : "",
                                       perms[i] & 2 ? "w" : "");
        return g_string_free(s, FALSE);
}

void node_strip_named_users(const char *dev) {
        uid_t uids[8];
        guint n = node_named_users(dev, uids, NULL, G_N_ELEMENTS(uids));

        for (guint i = 0; i < n && i < G_N_ELEMENTS(uids); i++) {
                g_autofree char *spec = g_strdup_printf("u:%u", (unsigned) uids[i]);
                const char *argv[] = { "setfacl", "-x", spec, dev, NULL };
                g_autoptr(GError) error = NULL;
                int st = 0;

                g_test_message("%s still carries an entry for uid %u: removing it", dev, (unsigned) uids[i]);
                if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL,
                                  NULL, NULL, NULL, NULL, &st, &error))
                        g_test_message("setfacl: %s", error->message);
        }
}

char *other_loopd_instances(pid_t ours) {
        g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
        GString *s = g_string_new(NULL);
        const char *name;

        while (proc && (name = g_dir_read_name(proc))) {
                g_autofree char *comm_path = NULL, *comm = NULL, *cmd_path = NULL, *cmd = NULL;
                gsize len = 0;

                if (!g_ascii_isdigit(name[0]) || atoi(name) == (int) ours)
                        continue;
                comm_path = g_strdup_printf("/proc/%s/comm", name);
                if (!g_file_get_contents(comm_path, &comm, NULL, NULL) || !g_str_equal(g_strchomp(comm), "loopd"))
                        continue;
                cmd_path = g_strdup_printf("/proc/%s/cmdline", name);
                if (g_file_get_contents(cmd_path, &cmd, &len, NULL))
                        for (gsize k = 0; k + 1 < len; k++)
                                if (!cmd[k])
                                        cmd[k] = ' ';
                g_string_append_printf(s, " %s(%s)", name, cmd ? cmd : "?");
        }
        return g_string_free(s, FALSE);
}

/* ---- files -------------------------------------------------------------- */

char *file_block_hash(const char *path) {
        unsigned char buf[4096];
        guint64 h = 0xcbf29ce484222325ULL;
        int fd = open(path, O_RDONLY | O_CLOEXEC);

        if (fd < 0)
                g_error("open %s: %s", path, g_strerror(errno));
        g_assert_cmpint(pread(fd, buf, sizeof buf, 0), ==, (ssize_t) sizeof buf);
        close(fd);
        for (size_t i = 0; i < sizeof buf; i++) {
                h ^= buf[i];
                h *= 0x100000001b3ULL;
        }
        return g_strdup_printf("%016" G_GINT64_MODIFIER "x", h);
}

void create_as_nobody(LoopdFixture *f, const char *img, const char *opt, char **ret_obj, char **ret_dev) {
        g_auto(LoopdRunResult) r = { 0 };

        if (opt)
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", img, "--opt", opt, NULL);
        else
                loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "create", img, NULL);
        if (r.status != 0)
                g_error("create %s as nobody: %s%s", img, r.out, r.err);
        if (ret_obj)
                *ret_obj = g_strdup(r.fields[1]);
        if (ret_dev)
                *ret_dev = g_strdup(r.fields[2]);
}

char *make_marked_image(LoopdFixture *f, const char *name, guint64 size, uid_t uid) {
        char *path = loopd_fixture_make_image(f, name, size, uid, uid, 0600);
        guint32 block[1024];
        int fd;

        for (size_t i = 0; i < G_N_ELEMENTS(block); i++)
                block[i] = g_random_int();
        fd = open(path, O_WRONLY | O_CLOEXEC);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(pwrite(fd, block, sizeof block, 0), ==, (ssize_t) sizeof block);
        close(fd);
        return path;
}

/* ---- the kernel --------------------------------------------------------- */

guint64 loop_diskseq(guint32 number) {
        g_autofree char *bf = g_strdup_printf("/sys/block/loop%u/loop/backing_file", number);
        g_autofree char *sp = g_strdup_printf("/sys/block/loop%u/diskseq", number);
        g_autofree char *text = NULL;

        if (access(bf, F_OK) < 0 || !g_file_get_contents(sp, &text, NULL, NULL))
                return 0;
        return g_ascii_strtoull(text, NULL, 10);
}

gboolean loop_autoclear(guint32 number) {
        g_autofree char *p = g_strdup_printf("/sys/block/loop%u/loop/autoclear", number);
        g_autofree char *text = NULL;

        return g_file_get_contents(p, &text, NULL, NULL) && text[0] == '1';
}

gboolean wait_attachment_gone(guint32 number, guint64 diskseq, double timeout_sec) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (scaled(timeout_sec) * G_USEC_PER_SEC);

        while (loop_diskseq(number) == diskseq) {
                if (g_get_monotonic_time() > deadline)
                        return FALSE;
                g_usleep(2000);
        }
        return TRUE;
}

gboolean wait_no_named_users(const char *dev, double timeout_sec) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (scaled(timeout_sec) * G_USEC_PER_SEC);

        while (node_named_users(dev, NULL, NULL, 0) > 0) {
                if (g_get_monotonic_time() > deadline)
                        return FALSE;
                g_usleep(1000);
        }
        return TRUE;
}

gboolean wait_named_user(const char *dev, uid_t uid, double timeout_sec) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (scaled(timeout_sec) * G_USEC_PER_SEC);

        for (;;) {
                uid_t u = (uid_t) -1;
                if (node_named_users(dev, &u, NULL, 1) == 1 && u == uid)
                        return TRUE;
                if (g_get_monotonic_time() > deadline)
                        return FALSE;
                g_usleep(2000);
        }
}

/* ---- systemd-udevd ------------------------------------------------------ */

struct Udevd {
        pid_t pid;         /* 0: a udevd that was running already */
        char *tag;         /* in the environment of it and of its workers */
        int tag_id;
        gboolean made_disk, made_block;
        int disk_id, block_id; /* emergency registrations of those */
};

static const char *find_exe(const char *const *candidates) {
        for (; *candidates; candidates++) {
                if (strchr(*candidates, '/')) {
                        if (access(*candidates, X_OK) == 0)
                                return *candidates;
                } else {
                        static char *found;
                        g_free(found);
                        found = g_find_program_in_path(*candidates);
                        if (found)
                                return found;
                }
        }
        return NULL;
}

static gboolean control_answers(const char *path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        gboolean ok;

        g_strlcpy(sa.sun_path, path, sizeof sa.sun_path);
        ok = fd >= 0 && connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
        if (fd >= 0)
                close(fd);
        return ok;
}

static int run_quiet(const char *const *argv, char **err) {
        g_autoptr(GError) error = NULL;
        int st = 0;

        if (!g_spawn_sync("/", (char **) argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                          NULL, err, &st, &error))
                g_error("%s: %s", argv[0], error->message);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

Udevd *udevd_start(LoopdFixture *f) {
        const char *udevd = find_exe((const char *const[]) { "/lib/systemd/systemd-udevd",
                                                              "/usr/lib/systemd/systemd-udevd", NULL });
        g_autofree char *udevadm = g_find_program_in_path("udevadm");
        g_autofree char *unshare = g_find_program_in_path("unshare");
        g_autofree char *nsenter = g_find_program_in_path("nsenter");
        g_autofree char *script = NULL, *tag_env = NULL, *control = NULL;
        g_autoptr(GError) error = NULL;
        Udevd *u;
        gint64 deadline;

        if (!udevd || !udevadm || !unshare || !nsenter) {
                g_test_skip("needs systemd-udevd and udevadm (Debian package udev), unshare and nsenter "
                            "(util-linux): node access must hold with udev re-applying permissions");
                return NULL;
        }
        u = g_new0(Udevd, 1);
        u->tag_id = u->disk_id = u->block_id = -1;
        if (control_answers("/run/udev/control")) {
                g_test_message("a systemd-udevd runs already (/run/udev/control answers): using it");
                return u;
        }
        u->made_disk = access("/dev/disk", F_OK) < 0;
        u->made_block = access("/dev/block", F_OK) < 0;
        /* Its links go with it even if the test dies first. */
        u->disk_id = u->made_disk ? emergency_add_path("/dev/disk") : -1;
        u->block_id = u->made_block ? emergency_add_path("/dev/block") : -1;
        u->tag = g_strdup_printf("LOOPD_TEST_UDEVD=%s", f->tmpdir);
        u->tag_id = emergency_add_tagged(u->tag);
        g_assert_cmpint(u->tag_id, >=, 0);
        /* Its own /run: the control socket, queue and database are the
         * test's, and go with the namespace. */
        script = g_strdup_printf("mount -t tmpfs -o mode=0755 loopd-test-udev /run && exec %s", udevd);
        tag_env = g_strdup(u->tag);
        {
                const char *argv[] = { unshare, "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script,
                                       NULL };
                const char *envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", tag_env, NULL };
                if (!g_spawn_async("/", (char **) argv, (char **) envp, G_SPAWN_DO_NOT_REAP_CHILD |
                                   G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL, child_setup, NULL, &u->pid,
                                   &error))
                        g_error("starting %s: %s", udevd, error->message);
        }
        g_assert_cmpint(emergency_add_pid(u->pid, EMERGENCY_PID_CHILD | EMERGENCY_PID_TERM_FIRST), >=, 0);
        control = g_strdup_printf("/proc/%d/root/run/udev/control", (int) u->pid);
        deadline = g_get_monotonic_time() + (gint64) (scaled(10) * G_USEC_PER_SEC);
        while (!control_answers(control)) {
                int st;
                if (waitpid(u->pid, &st, WNOHANG) == u->pid) {
                        u->pid = 0;
                        g_error("systemd-udevd exited at start (status 0x%x)", st);
                }
                if (g_get_monotonic_time() > deadline)
                        g_error("systemd-udevd did not listen on its control socket in time");
                g_usleep(5000);
        }
        return u;
}

void udevd_settle(Udevd *u) {
        g_autofree char *pid = g_strdup_printf("%d", (int) u->pid);
        g_autofree char *timeout = g_strdup_printf("--timeout=%d", (int) scaled(30));
        g_autofree char *err = NULL;
        int r;

        if (u->pid)
                r = run_quiet((const char *const[]) { "nsenter", "--mount", "--target", pid, "udevadm", "settle",
                                                      timeout, NULL },
                              &err);
        else
                r = run_quiet((const char *const[]) { "udevadm", "settle", timeout, NULL }, &err);
        if (r != 0)
                g_error("udevadm settle: exit %d: %s", r, err);
}

void udevd_trigger(Udevd *u, guint32 number, const char *action) {
        g_autofree char *sys = g_strdup_printf("/sys/block/loop%u", number);
        g_autofree char *action_arg = g_strdup_printf("--action=%s", action);
        g_autofree char *err = NULL;
        int r;

        /* udevadm trigger only writes to the device's uevent file: no need
         * of the daemon's namespace. */
        r = run_quiet((const char *const[]) { "udevadm", "trigger", action_arg, sys, NULL }, &err);
        if (r != 0)
                g_error("udevadm trigger: exit %d: %s", r, err);
        udevd_settle(u);
}

void udevd_stop(Udevd *u) {
        if (!u)
                return;
        if (u->pid > 0) {
                int st;
                gint64 deadline = g_get_monotonic_time() + (gint64) (scaled(10) * G_USEC_PER_SEC);

                kill(u->pid, SIGTERM);
                while (waitpid(u->pid, &st, WNOHANG) == 0) {
                        if (g_get_monotonic_time() > deadline) {
                                kill(u->pid, SIGKILL);
                                (void) waitpid(u->pid, &st, 0);
                                break;
                        }
                        g_usleep(5000);
                }
                emergency_forget_pid(u->pid);
        }
        /* Its workers, should any have outlived it. */
        if (u->tag_id >= 0) {
                emergency_cleanup(EMERGENCY_TAGGED);
                u->tag_id = -1;
        }
        if (u->pid > 0) {
                if (u->made_disk)
                        (void) emergency_rm_rf("/dev/disk");
                if (u->made_block)
                        (void) emergency_rm_rf("/dev/block");
        }
        emergency_forget(u->disk_id);
        emergency_forget(u->block_id);
        g_free(u->tag);
        g_free(u);
}
