/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * A device's owner and its node, across the device's whole life, with
 * systemd-udevd running: what the owner (nobody) and another uid (daemon)
 * can open at each stage, asked with their own rights; and that no stage
 * leaves the owner's access on a node the next attachment gets.
 *
 * Every stage logs one row "| stage | owner rw | owner ro | other rw |
 * other ro | named-user ACL entries |" (the test log keeps them: the
 * measured table of what the owner can and cannot do).
 *
 * Runs alone (meson: is_parallel false): udevd acts on every loop device of
 * the machine, and every loopd that starts strips node ACLs that no
 * attachment of its own stands for.
 */

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "owners-util.h"
#include "service-util.h"

#define NOBODY LOOPD_TEST_NOBODY
#define NONE "rw=EACCES ro=EACCES"
#define RW "rw=ok ro=ok"
#define RO "rw=EACCES ro=ok"

static const LoopdFixtureOptions opts = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE),
        .start_daemon = TRUE,
};

typedef struct Dev {
        char *obj;
        char *path; /* /dev/loopN */
        guint32 number;
        guint64 diskseq;
} Dev;

static void dev_clear(Dev *d) {
        /* Whatever happened, no entry of ours stays on the node. */
        if (d->path)
                node_strip_named_users(d->path);
        g_clear_pointer(&d->obj, g_free);
        g_clear_pointer(&d->path, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Dev, dev_clear)

static void dev_set(Dev *d, const char *obj, const char *path) {
        d->obj = g_strdup(obj);
        d->path = g_strdup(path);
        d->number = loop_number_of(path);
        d->diskseq = loop_diskseq(d->number);
        g_assert_cmpuint(d->diskseq, !=, 0);
}

/* Create as nobody through loopd-test-caller, which exits at once (closing
 * the fd Create returned): the device stays, guarded unless autoclear. */
static void create_dev_as_nobody(LoopdFixture *f, const char *img, const char *opt, Dev *ret) {
        g_autofree char *obj = NULL, *dev = NULL;

        create_as_nobody(f, img, opt, &obj, &dev);
        dev_set(ret, obj, dev);
}

/* The same, the caller staying connected with its fd (--hold). */
static LoopdCaller *create_held_as_nobody(LoopdFixture *f, const char *img, const char *opt, Dev *ret) {
        LoopdCaller *c = loopd_fixture_spawn_caller_as(f, NOBODY, NOBODY, "create", img, "--opt", opt, "--hold",
                                                       "--fd-info", NULL);
        g_autofree char *line = loopd_caller_read_line(c), *fdinfo = NULL;
        g_auto(GStrv) w = NULL;

        g_assert_nonnull(line);
        w = g_strsplit(line, " ", 3);
        if (g_strcmp0(w[0], "ok") != 0)
                g_error("create %s (%s) as nobody: %s", img, opt, line);
        dev_set(ret, w[1], w[2]);
        fdinfo = loopd_caller_read_line(c);
        g_assert_nonnull(fdinfo);
        g_test_message("the creator's fd: %s", fdinfo);
        return c;
}

static char *mode_text(const char *dev) {
        struct stat st;

        g_assert_cmpint(stat(dev, &st), ==, 0);
        return g_strdup_printf("%04o %u:%u", st.st_mode & 07777, (unsigned) st.st_uid, (unsigned) st.st_gid);
}

/* One row of the table, checked. */
static void stage(LoopdFixture *f, const char *label, const char *dev, const char *owner, const char *other) {
        NodeAccess o = probe_node(f, NOBODY, dev), x = probe_node(f, OTHER_UID, dev);
        g_autofree char *ot = node_access_text(&o), *xt = node_access_text(&x);
        g_autofree char *acl = node_acl_text(dev), *mode = mode_text(dev);

        g_test_message("| %s | %s | %s | %s | %s | %s | %s |", label, o.rw, o.ro, x.rw, x.ro, acl, mode);
        if (g_strcmp0(ot, owner) != 0 || g_strcmp0(xt, other) != 0) {
                g_autofree char *others = other_loopd_instances(loopd_fixture_daemon_pid(f));
                g_error("%s, %s: the owner (uid %u) can %s (expected %s), uid %u can %s (expected %s); ACL %s, mode %s"
                        "%s%s",
                        label, dev, NOBODY, ot, owner, OTHER_UID, xt, other, acl, mode,
                        *others ? "; other loopd instances on this machine, each of which strips node ACLs it "
                                  "does not stand for when it starts:" : "",
                        others);
        }
}

/* root attaches its own file to the very node the owner had: the owner
 * must get nothing of it. */
static void reuse_by_root(LoopdFixture *f, const Dev *d, const char *label) {
        g_autofree char *img = make_marked_image(f, "root-reuse.img", 4 * MiB, 0);
        g_autofree char *out = NULL, *err = NULL;
        guint64 seq;
        int st;

        /* The kernel may still be finishing the last clear (udev's worker,
         * probing the detached node, holds it a moment): EBUSY then. */
        for (int attempt = 1;; attempt++) {
                g_clear_pointer(&out, g_free);
                g_clear_pointer(&err, g_free);
                st = run_command((const char *const[]) { "losetup", d->path, img, NULL }, &out, &err);
                if (st == 0)
                        break;
                if (loop_diskseq(d->number) != 0) {
                        /* Someone else's attach (another test on this
                         * machine, losetup --find) took the node first: the
                         * same reuse, only not ours. It must give the old
                         * owner nothing either, unless it is that other
                         * test's own device of uid nobody. */
                        g_autofree char *bf = NULL, *p = g_strdup_printf("/sys/block/loop%u/loop/backing_file", d->number);
                        g_autofree char *other_label = g_strdup_printf("%s (taken by another attach first)", label);
                        (void) g_file_get_contents(p, &bf, NULL, NULL);
                        g_test_message("%s was attached again by someone else (to %s) before root could reuse it",
                                       d->path, bf ? g_strchomp(bf) : "?");
                        uid_t users[8];
                        guint n = node_named_users(d->path, users, NULL, G_N_ELEMENTS(users));
                        gboolean nobodys = FALSE;
                        for (guint i = 0; i < n && i < G_N_ELEMENTS(users); i++)
                                nobodys = nobodys || users[i] == NOBODY || users[i] == OTHER_UID;
                        if (!nobodys)
                                stage(f, other_label, d->path, NONE, NONE);
                        else
                                g_test_message("it carries an entry of its own owner's for uid %u or %u: not judged",
                                               NOBODY, OTHER_UID);
                        g_assert_cmpint(unlink(img), ==, 0);
                        return;
                }
                if (attempt == 50)
                        g_error("losetup %s %s (the node the owner had): %s", d->path, img, err);
                g_test_message("losetup %s: %s (attempt %d)", d->path, g_strchomp(err), attempt);
                g_usleep(20000);
        }
        seq = loop_diskseq(d->number);
        g_assert_cmpuint(seq, >, d->diskseq);
        stage(f, label, d->path, NONE, NONE);
        losetup_detach(d->path);
        g_assert_true(wait_attachment_gone(d->number, seq, 5));
        g_assert_cmpint(unlink(img), ==, 0);
}

static gint64 now_us(void) {
        return g_get_monotonic_time();
}

/* ---- the tests ------------------------------------------------------------ */

static void test_rw_device_through_remove(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned.img", 8 * MiB, NOBODY);
        create_dev_as_nobody(f, img, NULL, &d);
        udevd_settle(u);
        stage(f, "created (read-write device)", d.path, RW, NONE);

        /* The owner writes through the node: dd, with its own rights. udev
         * watches block nodes and sends itself a change event when a
         * writer closes one. */
        {
                g_auto(LoopdRunResult) r = { 0 };
                g_autofree char *of = g_strdup_printf("of=%s", d.path);
                loopd_fixture_run_as(f, NOBODY, NOBODY,
                                     (const char *const[]) { "dd", "if=/dev/zero", of, "bs=4096", "seek=1", "count=1",
                                                             "conv=notrunc,fsync", "status=none", NULL },
                                     &r);
                if (r.status != 0)
                        g_error("dd to %s as nobody: %s", d.path, r.err);
        }
        udevd_settle(u);
        stage(f, "the owner wrote with dd (udev: change event from its watch)", d.path, RW, NONE);
        udevd_trigger(u, d.number, "change");
        stage(f, "udevadm trigger --action=change", d.path, RW, NONE);
        /* "add" is where Debian's rules set GROUP=disk and mode 0660, with
         * chown and chmod: ACL entries must survive both. */
        udevd_trigger(u, d.number, "add");
        stage(f, "udevadm trigger --action=add (udev chowns and chmods)", d.path, RW, NONE);

        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "remove", d.path, NULL);
                if (r.status != 0)
                        g_error("remove %s as nobody: %s%s", d.path, r.out, r.err);
        }
        /* Remove replies once the access is withdrawn and the device detached. */
        g_assert_cmpuint(node_named_users(d.path, NULL, NULL, 0), ==, 0);
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 5));
        udevd_settle(u);
        stage(f, "after Remove by the owner", d.path, NONE, NONE);
        reuse_by_root(f, &d, "after Remove: node reused by root (losetup)");
}

static void test_readonly_device(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *mode = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;
        uid_t uid;
        guint perm;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-ro.img", 8 * MiB, NOBODY);
        create_dev_as_nobody(f, img, "read-only=b:true", &d);
        udevd_settle(u);
        g_assert_cmpuint(node_named_users(d.path, &uid, &perm, 1), ==, 1);
        g_assert_cmpuint(uid, ==, NOBODY);
        g_assert_cmpuint(perm, ==, 4);
        stage(f, "created (read-only device)", d.path, RO, NONE);
        udevd_trigger(u, d.number, "change");
        stage(f, "read-only: udevadm trigger --action=change", d.path, RO, NONE);
        /* The ACL mask is r here (the union of r and the group's ---), so
         * udev's chmod to 0660 does change the mode: it must widen
         * nothing. */
        udevd_trigger(u, d.number, "add");
        mode = mode_text(d.path);
        g_test_message("mode after udev's add: %s", mode);
        stage(f, "read-only: udevadm trigger --action=add (chmod 0660)", d.path, RO, NONE);
        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "remove", d.path, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 5));
        stage(f, "read-only: after Remove", d.path, NONE, NONE);
        reuse_by_root(f, &d, "read-only: node reused by root");
}

/* Remove while the owner still holds the node: the kernel defers the
 * detach; access goes at once, the open fd keeps working, the device goes
 * at the owner's last close. */
static void test_remove_deferred(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *hash = NULL, *line = NULL;
        g_autoptr(Holder) h = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-held.img", 8 * MiB, NOBODY);
        hash = file_block_hash(img);
        create_dev_as_nobody(f, img, NULL, &d);
        h = holder_new(NOBODY, d.path, FALSE);
        g_assert_cmpstr(holder_status(h), ==, "ok");
        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "remove", d.path, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        g_assert_cmpuint(loop_diskseq(d.number), ==, d.diskseq);
        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "get", d.obj, "DetachPending", NULL);
                g_assert_cmpstr(r.out, ==, "ok true\n");
        }
        stage(f, "Remove while the owner holds an fd (detach deferred)", d.path, NONE, NONE);
        line = holder_read(h);
        g_assert_cmpstr(line + 3, ==, hash);
        g_test_message("| Remove deferred: the owner's open fd | read ok | - | - | - | - | - |");
        holder_close(h);
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 5));
        stage(f, "Remove deferred: after the owner's last close", d.path, NONE, NONE);
        reuse_by_root(f, &d, "Remove deferred: node reused by root");
}

static void test_bind_to_caller(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-bound.img", 8 * MiB, NOBODY);
        c = create_held_as_nobody(f, img, "bind-to-caller=b:true", &d);
        udevd_settle(u);
        stage(f, "bound to its caller, caller alive", d.path, RW, NONE);
        loopd_caller_kill(c, SIGKILL);
        (void) loopd_caller_wait(c);
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 10));
        g_assert_cmpuint(node_named_users(d.path, NULL, NULL, 0), ==, 0);
        udevd_settle(u);
        stage(f, "bound: caller killed (loopd removed it)", d.path, NONE, NONE);
        reuse_by_root(f, &d, "bound: node reused by root");
}

/* losetup -d by root while the owner holds the node: the kernel only marks
 * it (autoclear); loopd notices on the close of losetup's fd (inotify). */
static void test_losetup_detach_while_owner_holds(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *hash = NULL, *line = NULL, *expect = NULL;
        g_autoptr(Holder) h = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;
        gint64 t0, t1, t2;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-losetup.img", 8 * MiB, NOBODY);
        hash = file_block_hash(img);
        expect = g_strconcat("ok ", hash, NULL);
        create_dev_as_nobody(f, img, NULL, &d);
        udevd_settle(u);
        h = holder_new(NOBODY, d.path, FALSE);
        g_assert_cmpstr(holder_status(h), ==, "ok");
        stage(f, "owner holds an fd", d.path, RW, NONE);

        t0 = now_us();
        losetup_detach(d.path);
        t1 = now_us();
        if (!wait_no_named_users(d.path, 6))
                g_error("%s: the owner's access is still there 6 s after losetup -d", d.path);
        t2 = now_us();
        g_test_message("| losetup -d: access withdrawn %.1f ms after losetup exited (%.1f ms after it started) | | | | | | |",
                       (t2 - t1) / 1000.0, (t2 - t0) / 1000.0);
        /* The close of losetup's own fd wakes loopd: milliseconds, not the
         * 5 s poll. */
        g_assert_cmpint(t2 - t1, <, (gint64) (1.0 * loopd_test_timeout_scale() * G_USEC_PER_SEC));
        g_assert_true(loop_autoclear(d.number));
        g_assert_cmpuint(loop_diskseq(d.number), ==, d.diskseq);
        udevd_settle(u);
        stage(f, "losetup -d by root, owner still holds its fd", d.path, NONE, NONE);
        line = holder_read(h);
        g_assert_cmpstr(line, ==, expect);
        g_test_message("| losetup -d: the owner's open fd | read ok | - | - | - | - | - |");
        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "get", d.obj, "DetachPending", NULL);
                g_assert_cmpstr(r.out, ==, "ok true\n");
        }
        holder_close(h);
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 5));
        stage(f, "losetup -d: after the owner's last close", d.path, NONE, NONE);
        reuse_by_root(f, &d, "losetup -d: node reused by root");
}

/* losetup -d when nobody else holds it: loopd's keeper is the only other
 * opener; once loopd lets go the kernel clears the device. */
static void test_losetup_detach_unheld(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;
        gint64 t1, t2, t3;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-losetup2.img", 8 * MiB, NOBODY);
        create_dev_as_nobody(f, img, NULL, &d);
        udevd_settle(u);
        losetup_detach(d.path);
        t1 = now_us();
        g_assert_true(wait_no_named_users(d.path, 6));
        t2 = now_us();
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 6));
        t3 = now_us();
        g_test_message("| losetup -d, unheld: access withdrawn after %.1f ms, detached after %.1f ms | | | | | | |",
                       (t2 - t1) / 1000.0, (t3 - t1) / 1000.0);
        udevd_settle(u);
        stage(f, "losetup -d by root, nobody holding it", d.path, NONE, NONE);
        reuse_by_root(f, &d, "losetup -d (unheld): node reused by root");
}

/* The owner detaches through its own fd and keeps it open: no close for
 * inotify to see, so loopd's poll (5 s) must find the autoclear flag. */
static void test_owner_clears_through_its_fd(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *line = NULL;
        g_autoptr(Holder) h = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;
        gint64 t1, t2;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-clr.img", 8 * MiB, NOBODY);
        create_dev_as_nobody(f, img, NULL, &d);
        udevd_settle(u);
        h = holder_new(NOBODY, d.path, FALSE);
        g_assert_cmpstr(holder_status(h), ==, "ok");
        line = holder_clear(h);
        g_assert_cmpstr(line, ==, "ok");
        t1 = now_us();
        g_assert_true(loop_autoclear(d.number));
        if (!wait_no_named_users(d.path, 7))
                g_error("%s: the owner's access is still there 7 s after it asked LOOP_CLR_FD", d.path);
        t2 = now_us();
        g_test_message("| LOOP_CLR_FD by the owner through its fd (no close): access withdrawn after %.0f ms | | | | | | |",
                       (t2 - t1) / 1000.0);
        stage(f, "owner asked LOOP_CLR_FD through its held fd", d.path, NONE, NONE);
        holder_close(h);
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 5));
        reuse_by_root(f, &d, "LOOP_CLR_FD by the owner: node reused by root");
}

static void test_autoclear_gets_no_access(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-autoclear.img", 8 * MiB, NOBODY);
        c = create_held_as_nobody(f, img, "autoclear=b:true", &d);
        udevd_settle(u);
        stage(f, "autoclear device, creator holds the fd Create returned", d.path, NONE, NONE);
        /* Nor later: a poll and a change event give it nothing. */
        spin(5.5);
        udevd_trigger(u, d.number, "change");
        stage(f, "autoclear: after a poll interval and a change event", d.path, NONE, NONE);
        loopd_caller_close_stdin(c);
        g_assert_cmpint(loopd_caller_wait(c), ==, 0);
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 5));
        stage(f, "autoclear: after the creator's last close", d.path, NONE, NONE);
        reuse_by_root(f, &d, "autoclear: node reused by root");
}

/* Stop (SIGTERM) and start again: loopd withdraws access at exit, strips
 * what no attachment stands for at start, and gives it back once it holds
 * the device again. */
static void test_restart_reconciles(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *img2 = NULL;
        g_auto(Dev) d = { 0 };
        g_auto(Dev) d2 = { 0 };
        g_autoptr(Udevd) u = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-restart.img", 8 * MiB, NOBODY);
        img2 = make_marked_image(f, "owned-restart2.img", 8 * MiB, NOBODY);
        create_dev_as_nobody(f, img, NULL, &d);
        create_dev_as_nobody(f, img2, NULL, &d2);
        stage(f, "restart: before", d.path, RW, NONE);

        loopd_fixture_stop_daemon(f);
        stage(f, "loopd stopped (SIGTERM)", d.path, NONE, NONE);
        /* While loopd is away, root detaches the second device and attaches
         * its own file there; a stale entry of the owner's is planted on it
         * (as a loopd killed at the wrong moment would leave it). */
        losetup_detach(d2.path);
        g_assert_true(wait_attachment_gone(d2.number, d2.diskseq, 5));
        {
                g_autofree char *spec = g_strdup_printf("u:%u:rw", NOBODY);
                g_autofree char *out = NULL, *err = NULL;
                g_autofree char *rimg = make_marked_image(f, "root-while-away.img", 4 * MiB, 0);
                g_assert_cmpint(run_command((const char *const[]) { "losetup", d2.path, rimg, NULL }, &out, &err), ==, 0);
                g_assert_cmpint(run_command((const char *const[]) { "setfacl", "-m", spec, d2.path, NULL }, NULL, NULL),
                                ==, 0);
        }
        stage(f, "loopd stopped: a stale owner entry planted on a node root reused", d2.path, RW, NONE);

        g_assert_true(loopd_fixture_restart_daemon(f));
        /* Stripped before loopd is ready; granted again once the keeper is held. */
        stage(f, "loopd restarted: the stale entry on root's device", d2.path, NONE, NONE);
        if (!wait_named_user(d.path, NOBODY, 10))
                g_error("%s: the owner's access did not come back after the restart", d.path);
        stage(f, "loopd restarted: the owner's device", d.path, RW, NONE);
        losetup_detach(d2.path);
        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "remove", d.path, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 5));
        reuse_by_root(f, &d, "restart: after Remove, node reused by root");
}

/* kill -9: no chance to withdraw anything. The owner keeps its entry until
 * loopd is back, which strips it and grants it again with the keeper. */
static void test_kill9_and_restart(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-kill9.img", 8 * MiB, NOBODY);
        create_dev_as_nobody(f, img, NULL, &d);
        stage(f, "kill -9: before", d.path, RW, NONE);
        loopd_fixture_kill_daemon(f);
        stage(f, "loopd killed (-9), not restarted yet", d.path, RW, NONE);
        g_assert_true(loopd_fixture_restart_daemon(f));
        if (!wait_named_user(d.path, NOBODY, 10))
                g_error("%s: the owner's access did not come back after kill -9 and restart", d.path);
        stage(f, "loopd killed (-9) and restarted", d.path, RW, NONE);
        {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "remove", d.path, NULL);
                g_assert_cmpint(r.status, ==, 0);
        }
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 5));
        stage(f, "kill -9 + restart: after Remove", d.path, NONE, NONE);
        reuse_by_root(f, &d, "kill -9 + restart: node reused by root");
}

/* The window kill -9 opens: loopd's keeper died with it, the owner's entry
 * did not. The owner can then end the attachment itself (LOOP_CLR_FD needs
 * no privilege, only an fd), and the node, free with the owner's entry on
 * it, is the one losetup --find gives the next caller. The promise is that
 * a reused node never carries a previous owner's access.
 *
 * The remedy is systemd's file descriptor store: with --fd-store (as
 * loopd.service runs it) a copy of each keeper outlives loopd, so the
 * attachment cannot end until a loopd is back to withdraw the access. The
 * system suite proves that under systemd as PID 1
 * (/system/lifecycle/kill-9-a-users-node-is-not-reused-while-loopd-is-down).
 * Here loopd runs without a service manager, as loopd(8) says leaves the
 * node unprotected while loopd is down: this reports itself as incomplete
 * (TAP "# TODO") with what it measured, and passes if the owner gets
 * nothing. */
static void test_kill9_window_reused_node(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *rimg = NULL, *line = NULL, *out = NULL, *err = NULL, *rhash = NULL;
        g_autofree char *ot = NULL, *acl = NULL, *read_line = NULL;
        g_autoptr(Holder) h = NULL;
        g_autoptr(Holder) spy = NULL;
        g_auto(Dev) d = { 0 };
        g_autoptr(Udevd) u = NULL;
        NodeAccess o;
        guint64 seq;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        u = udevd_start(f);
        if (!u)
                return;
        img = make_marked_image(f, "owned-window.img", 8 * MiB, NOBODY);
        rimg = make_marked_image(f, "root-window.img", 4 * MiB, 0);
        rhash = file_block_hash(rimg);
        create_dev_as_nobody(f, img, NULL, &d);
        loopd_fixture_kill_daemon(f);

        /* The owner ends its own attachment while loopd is gone. */
        h = holder_new(NOBODY, d.path, FALSE);
        g_assert_cmpstr(holder_status(h), ==, "ok");
        line = holder_clear(h);
        g_assert_cmpstr(line, ==, "ok");
        holder_close(h);
        g_assert_true(wait_attachment_gone(d.number, d.diskseq, 5));
        /* root attaches its own file there. */
        g_assert_cmpint(run_command((const char *const[]) { "losetup", d.path, rimg, NULL }, &out, &err), ==, 0);
        seq = loop_diskseq(d.number);

        o = probe_node(f, NOBODY, d.path);
        ot = node_access_text(&o);
        acl = node_acl_text(d.path);
        spy = holder_new(NOBODY, d.path, TRUE);
        if (g_str_equal(holder_status(spy), "ok"))
                read_line = holder_read(spy);
        g_test_message("| loopd killed; the owner detached its device itself (LOOP_CLR_FD); root attached its own "
                       "file there | %s | %s | - | - | %s | |", o.rw, o.ro, acl);
        if (read_line)
                g_test_message("| kill -9 window: the previous owner reads root's new device | %s (root's file: %s) "
                               "| | | | | |", read_line, rhash);

        g_assert_true(loopd_fixture_restart_daemon(f));
        stage(f, "kill -9 window: after loopd is back", d.path, NONE, NONE);
        if (read_line) {
                g_autofree char *again = holder_read(spy);
                g_test_message("| kill -9 window: its fd opened meanwhile, after loopd is back | %s | | | | | |",
                               again);
        }
        holder_free(g_steal_pointer(&spy));
        losetup_detach(d.path);
        g_assert_true(wait_attachment_gone(d.number, seq, 5));

        if (!g_str_equal(ot, NONE)) {
                g_autofree char *why = g_strdup_printf(
                        "while loopd was down after kill -9, the previous owner (uid %u) could open root's new "
                        "device on %s (%s, ACL %s)%s; loopd strips the entry when it is back, not before",
                        NOBODY, d.path, ot, acl, read_line && g_str_has_suffix(read_line, rhash) ?
                        " and read root's data through it" : "");
                g_test_incomplete(why);
        }
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn) g_test_add(path, LoopdFixture, &opts, loopd_fixture_setup, fn, loopd_fixture_teardown)
        ADD("/owners/node/rw-device-through-remove", test_rw_device_through_remove);
        ADD("/owners/node/readonly-device", test_readonly_device);
        ADD("/owners/node/remove-deferred", test_remove_deferred);
        ADD("/owners/node/bind-to-caller", test_bind_to_caller);
        ADD("/owners/node/losetup-detach-while-owner-holds", test_losetup_detach_while_owner_holds);
        ADD("/owners/node/losetup-detach-unheld", test_losetup_detach_unheld);
        ADD("/owners/node/owner-clears-through-its-fd", test_owner_clears_through_its_fd);
        ADD("/owners/node/autoclear-gets-no-access", test_autoclear_gets_no_access);
        ADD("/owners/node/restart-reconciles", test_restart_reconciles);
        ADD("/owners/node/kill9-and-restart", test_kill9_and_restart);
        ADD("/owners/node/kill9-window-reused-node", test_kill9_window_reused_node);
        return g_test_run();
}
