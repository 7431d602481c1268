/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * A backing file on a file system that stops answering: a FUSE server the
 * caller owns (tests/lib/fuse-server.py, mounted as fusermount3 would for
 * nobody) that withholds its answers on demand. Whoever waits for such an
 * answer waits in the kernel, unkillably, until the server answers.
 *
 *   /stress/hostile-fuse/stuck-path-helpers-stay-counted
 *       CreateFromPath of a file whose OPEN is withheld: the helper that
 *       opens it hangs in D state. Helpers once stopped counting when their
 *       caller timed out: 5 rounds of 32 made 160 stuck helpers, loopd's
 *       fds went 12 -> 172, and since every helper held loopd's bus socket,
 *       a SIGTERMed loopd's name stayed owned and no new loopd could start
 *       until the server answered. Now: 4 per uid, stuck ones included, the
 *       fifth refused at once, and a new loopd takes the name at once.
 *   /stress/hostile-fuse/hung-getattr-blocks-only-its-caller
 *       GETATTR withheld: Create (LOOP_CONFIGURE sizes the device from the
 *       file), RefreshSize (LOOP_SET_CAPACITY) and the adoption of a device
 *       found at start (LOOP_GET_STATUS64) wait for it. They once did so on
 *       loopd's only thread, and before it took its bus name at start. Now
 *       the caller gets Timeout after --kernel-timeout, root and other uids
 *       are served meanwhile, and loopd takes its name at start.
 *
 * Hang windows are kept short: every process on the machine that stats a
 * loop device backed by the mount (other tests' loopds among them) waits
 * too while GETATTR is withheld. Teardown aborts the connection whatever
 * happens, so nothing stays in D state.
 */

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "hostile.h"

#define NOBODY 65534
#define OTHER 1 /* daemon */
#define HELPERS_PER_UID 4
#define KERNEL_PER_UID 4 /* kernel jobs of one uid at a time */

static const LoopdFuseFile fuse_files[] = { { "disk.img", 1 << 20, 0644 }, { NULL } };

static const LoopdFixtureOptions polkit_only = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE) LOOPD_RULE_ALLOW("daemon", LOOPD_ACTION_CREATE),
};

static double elapsed_sec(gint64 t0) {
        return (double) (g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
}

static void log_footprint(const char *when, pid_t loopd) {
        LoopdFootprint fp;
        g_autofree char *text = NULL;

        g_assert_true(loopd_footprint(loopd, &fp));
        text = loopd_footprint_text(&fp);
        g_test_message("loopd %s: %s", when, text);
}

/* A Create by uid OTHER of an ordinary file, then its Remove: served? */
static void assert_other_uid_served(LoopdFixture *f, HostileCaller *other, const char *image, gboolean from_path) {
        g_autofree char *a = NULL, *r = NULL, *c = NULL;
        g_auto(HostileDevice) d = { 0 };
        gint64 t0 = g_get_monotonic_time();

        a = from_path ? hostile_cmd(other, 30, "create-from-path %s", image) : hostile_cmd(other, 30, "create %s rw", image);
        if (hostile_error_name(a))
                g_error("uid %d's %s of an ordinary file was refused meanwhile: %s", OTHER,
                        from_path ? "CreateFromPath" : "Create", a);
        hostile_parse_device(a, &d);
        c = hostile_cmd(other, 10, "close %u", d.slot);
        g_assert_cmpstr(c, ==, "ok");
        r = hostile_cmd(other, 30, "remove %s", d.device);
        g_assert_cmpstr(r, ==, "ok");
        g_test_message("meanwhile uid %d's %s + Remove of an ordinary file: %.0f ms", OTHER,
                       from_path ? "CreateFromPath" : "Create", elapsed_sec(t0) * 1000);
}

static void assert_root_served(LoopdFixture *f, const char *image, const char *during) {
        RootLatency lat;

        root_latency_sample(f, image, 2, 5000, &lat);
        if (lat.failed > 0)
                g_error("root's calls failed (or got no answer within 5 s) while %s: see above", during);
        g_test_message("while %s, root waited at most: Ping %.1f ms, GetManagedObjects %.1f ms, Create+Remove "
                       "%.1f ms",
                       during, lat.ping_msec, lat.objects_msec, lat.create_msec);
        g_assert_cmpfloat(lat.ping_msec, <, HOSTILE_SCALED(2000));
        g_assert_cmpfloat(lat.create_msec, <, HOSTILE_SCALED(2000));
}

/* What each test starts from: loopd running with @args, nobody's FUSE
 * mount serving @files (disk.img among them), a file each for another uid
 * and for root, and a hostile caller as nobody and as the other uid. */
typedef struct Scene {
        LoopdFuse *fs; /* unmounted by the fixture */
        HostileCaller *nobody, *other;
        char *fuse_img, *other_img, *root_img;
} Scene;

static void scene_clear(Scene *s) {
        g_clear_pointer(&s->nobody, hostile_free);
        g_clear_pointer(&s->other, hostile_free);
        g_clear_pointer(&s->fuse_img, g_free);
        g_clear_pointer(&s->other_img, g_free);
        g_clear_pointer(&s->root_img, g_free);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Scene, scene_clear)

static gboolean scene_setup(LoopdFixture *f, Scene *s, const LoopdFuseFile *files, const char *const *args) {
        s->fs = loopd_fixture_mount_fuse(f, NOBODY, NOBODY, files);
        if (!s->fs || !loopd_fixture_start_daemon(f, args))
                return FALSE;
        s->fuse_img = loopd_fuse_path(s->fs, "disk.img");
        s->other_img = loopd_fixture_make_image(f, "other.img", 1 << 20, OTHER, OTHER, 0600);
        s->root_img = loopd_fixture_make_image(f, "root.img", 1 << 20, 0, 0, 0600);
        s->nobody = hostile_spawn(f, NOBODY, NOBODY, NULL, 30);
        s->other = hostile_spawn(f, OTHER, OTHER, NULL, 30);
        return TRUE;
}

/* ---- stuck path helpers ---------------------------------------------------- */

static void test_stuck_path_helpers_stay_counted(LoopdFixture *f, gconstpointer data) {
        static const char *const args[] = { "--open-timeout=2", NULL };
        g_auto(Scene) s = { 0 };
        g_autoptr(GArray) helpers = g_array_new(FALSE, FALSE, sizeof(pid_t));
        LoopdFootprint before, after;
        pid_t loopd;
        guint rounds = 3, per_round = 8, timeouts = 0, refused = 0;
        gint64 t0;
        int st;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!scene_setup(f, &s, fuse_files, args))
                return;
        /* Helpers outliving loopd (stuck in the kernel at its exit) become
         * ours, to reap, not init's. */
        g_assert_no_errno(prctl(PR_SET_CHILD_SUBREAPER, 1));
        loopd = loopd_fixture_daemon_pid(f);
        g_assert_true(loopd_footprint(loopd, &before));
        log_footprint("before", loopd);

        loopd_fuse_hang(s.fs, LOOPD_FUSE_OPEN);
        for (guint round = 0; round < rounds; round++) {
                guint ids[32], round_timeouts = 0, round_refused = 0;

                for (guint i = 0; i < per_round; i++) {
                        g_autofree char *a = hostile_cmd(s.nobody, 10, "send-create-from-path %s read-only=b:true",
                                                         s.fuse_img);
                        g_assert_true(g_str_has_prefix(a, "ok "));
                        ids[i] = (guint) g_ascii_strtoull(a + 3, NULL, 10);
                }
                /* The first round: four helpers go into the kernel and stay. */
                if (round == 0)
                        for (guint i = 0; i < HELPERS_PER_UID; i++) {
                                pid_t tid = loopd_fuse_wait_held(s.fs, LOOPD_FUSE_OPEN, 10);
                                g_assert_cmpint(tid, >, 0);
                                g_array_append_val(helpers, tid);
                        }
                for (guint i = 0; i < per_round; i++) {
                        g_autofree char *a = hostile_cmd(s.nobody, 30, "await %u 20", ids[i]);
                        const char *e = hostile_error_name(a);

                        if (!e)
                                g_error("nobody got a device from a file whose OPEN never returns: %s", a);
                        if (g_str_equal(e, LOOPD_DBUS_ERROR_TIMEOUT))
                                round_timeouts++;
                        else if (g_str_equal(e, LOOPD_ERROR_LIMITS_EXCEEDED))
                                round_refused++;
                        else
                                g_error("unexpected answer to a CreateFromPath that hangs: %s", a);
                }
                g_test_message("round %u: %u CreateFromPath timed out (their helpers hang in OPEN), %u refused "
                               "(LimitsExceeded)",
                               round + 1, round_timeouts, round_refused);
                timeouts += round_timeouts;
                refused += round_refused;
        }
        g_assert_true(loopd_footprint(loopd, &after));
        log_footprint("after the rounds", loopd);
        g_test_message("bound: %d helpers per uid, stuck ones included; figure: after %u rounds of %u, %u helpers "
                       "alive, %u calls timed out, %u refused, loopd's fds %u -> %u",
                       HELPERS_PER_UID, rounds, per_round, after.children, timeouts, refused, before.fds, after.fds);
        /* Stuck helpers stay counted: only the first round's four ever
         * reach the file system, the rest are refused at once. */
        if (timeouts != HELPERS_PER_UID || after.children != HELPERS_PER_UID)
                g_error("%u of nobody's CreateFromPath reached a helper that hangs (%u helpers alive), not %d: "
                        "stuck helpers stopped counting against their uid",
                        timeouts, after.children, HELPERS_PER_UID);
        g_assert_cmpuint(after.fds, <=, before.fds + HELPERS_PER_UID + 2);
        {
                guint held = 0;
                while (loopd_fuse_wait_held(s.fs, LOOPD_FUSE_OPEN, 0.5))
                        held++;
                g_assert_cmpuint(held, ==, 0); /* no fifth helper ever opened it */
        }
        for (guint i = 0; i < helpers->len; i++) {
                pid_t h = g_array_index(helpers, pid_t, i);
                g_assert_cmpint(hostile_proc_state(h), ==, 'D');
        }

        /* Everyone else is served meanwhile, CreateFromPath included. */
        assert_other_uid_served(f, s.other, s.other_img, TRUE);
        assert_root_served(f, s.root_img, "4 of nobody's path helpers hang");

        /* SIGTERM: loopd exits cleanly, and its name is free at once: the
         * stuck helpers hold nothing of loopd's but their own socket. */
        t0 = g_get_monotonic_time();
        st = loopd_fixture_terminate_daemon(f);
        g_assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        if (!loopd_fixture_wait_name(f, LOOPD_BUS_NAME, FALSE, 2))
                g_error("%s is still owned 2 s after loopd exited: its stuck path helpers keep its bus "
                        "connection open",
                        LOOPD_BUS_NAME);
        g_assert_true(loopd_fixture_start_daemon(f, args));
        g_test_message("SIGTERM to a new loopd owning the name: %.0f ms, with 4 old helpers still stuck",
                       elapsed_sec(t0) * 1000);
        for (guint i = 0; i < helpers->len; i++)
                g_assert_cmpint(hostile_proc_state(g_array_index(helpers, pid_t, i)), ==, 'D');
        assert_root_served(f, s.root_img, "the old loopd's helpers still hang");

        /* The file system answers: the helpers end, and are reaped. */
        loopd_fuse_resume(s.fs);
        for (guint i = 0; i < helpers->len; i++) {
                pid_t h = g_array_index(helpers, pid_t, i);
                g_assert_cmpint(waitpid(h, &st, 0), ==, h);
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

/* ---- GETATTR withheld -------------------------------------------------------- */

/* Waits until @fs withholds a GETATTR of a thread of loopd that is not its
 * main thread (the event loop); the thread's id. */
static pid_t wait_loopd_worker_held(LoopdFuse *fs, pid_t loopd, double sec) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        for (;;) {
                pid_t tid = loopd_fuse_wait_held(fs, LOOPD_FUSE_GETATTR, 0.5);
                if (tid == loopd)
                        g_error("loopd's main thread (the event loop) waits for the FUSE server's GETATTR");
                if (tid > 0 && hostile_is_thread_of(tid, loopd))
                        return tid;
                if (tid > 0)
                        g_test_message("GETATTR of thread %d (not loopd's) withheld too", (int) tid);
                if (g_get_monotonic_time() > deadline)
                        return 0;
        }
}

/* Sends @cmd (a create of a FUSE file the caller holds open, or a
 * refresh) as @caller while GETATTR is withheld: it must wait in a loopd
 * worker, everyone else must be served, and the caller must get Timeout
 * from loopd after --kernel-timeout (3 s). */
static void hang_one(LoopdFixture *f, const Scene *s, HostileCaller *caller, const char *what, const char *cmd) {
        pid_t loopd = loopd_fixture_daemon_pid(f), tid;
        g_autofree char *a = NULL;
        gint64 t0;

        loopd_fuse_hang(s->fs, LOOPD_FUSE_GETATTR);
        t0 = g_get_monotonic_time();
        hostile_send(caller, "%s", cmd);
        tid = wait_loopd_worker_held(s->fs, loopd, 5);
        if (!tid)
                g_error("%s: no loopd thread asked the FUSE server for GETATTR within 5 s (is loopd's event loop "
                        "blocked? Ping: %s)",
                        what, root_ping_msec(f, 1000, NULL) >= 0 ? "answers" : "no answer");
        g_test_message("%s: loopd thread %d waits for GETATTR", what, (int) tid);
        assert_root_served(f, s->root_img, what);
        assert_other_uid_served(f, s->other, s->other_img, FALSE);

        a = hostile_read(caller, 20);
        g_assert_nonnull(a);
        g_test_message("%s: the caller got \"%s\" after %.1f s", what, a, elapsed_sec(t0));
        if (!hostile_error_name(a))
                g_error("%s: succeeded while GETATTR was withheld", what);
        g_assert_cmpstr(hostile_error_name(a), ==, LOOPD_DBUS_ERROR_TIMEOUT);
        g_assert_cmpfloat(elapsed_sec(t0), <, 3 + HOSTILE_SCALED(3));
        loopd_fuse_resume(s->fs);
}

static void test_hung_getattr_blocks_only_its_caller(LoopdFixture *f, gconstpointer data) {
        static const char *const args[] = { "--kernel-timeout=3", NULL };
        g_auto(Scene) s = { 0 };
        g_autofree char *a = NULL;
        g_autofree char *losetup_dev = NULL;
        g_auto(HostileDevice) d = { 0 };
        gint64 t0;
        int st;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!scene_setup(f, &s, fuse_files, args))
                return;

        /* nobody's Create of its FUSE file, opened before GETATTR is
         * withheld (as a caller would have it open already). */
        a = hostile_cmd(s.nobody, 10, "open %s rw", s.fuse_img);
        g_assert_cmpstr(a, ==, "ok 0");
        hang_one(f, &s, s.nobody, "nobody's Create of a FUSE file", "create @0 rw");
        /* Resumed: whatever the late job made is undone. */
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));

        /* The same as root: no backing check first, straight to
         * LOOP_CONFIGURE, on root's own reserve of threads. */
        {
                g_autoptr(HostileCaller) root = hostile_spawn(f, 0, 0, NULL, 30);
                g_autofree char *o = hostile_cmd(root, 10, "open %s rw", s.fuse_img);
                g_assert_cmpstr(o, ==, "ok 0");
                hang_one(f, &s, root, "root's Create of a FUSE file (LOOP_CONFIGURE)", "create @0 rw");
        }
        g_assert_true(loopd_fixture_wait_no_loops(f, 5));

        /* RefreshSize of a FUSE-backed device: LOOP_SET_CAPACITY. */
        g_free(a);
        a = hostile_cmd(s.nobody, 30, "create @0 rw");
        hostile_parse_device(a, &d);
        {
                g_autofree char *cmd = g_strdup_printf("refresh %s", d.device);
                hang_one(f, &s, s.nobody, "nobody's RefreshSize of a FUSE-backed device", cmd);
        }

        /* At start: a FUSE-backed device made behind loopd's back (so its
         * identity is read by LOOP_GET_STATUS64) and nobody's own. */
        losetup_dev = hostile_losetup(s.fuse_img, TRUE);
        st = loopd_fixture_terminate_daemon(f);
        g_assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        loopd_fuse_hang(s.fs, LOOPD_FUSE_GETATTR);
        t0 = g_get_monotonic_time();
        g_assert_true(loopd_fixture_start_daemon(f, args));
        g_test_message("with GETATTR withheld under %s and %s, loopd owned its name and was ready after %.0f ms",
                       losetup_dev, d.device, elapsed_sec(t0) * 1000);
        g_assert_cmpfloat(elapsed_sec(t0), <, HOSTILE_SCALED(5));
        assert_root_served(f, s.root_img, "a device found at start hangs in GETATTR");
        {
                g_autoptr(GVariant) owner = hostile_device_property(f, d.device, "OwnerUID");
                g_assert_nonnull(owner);
                g_assert_cmpuint(g_variant_get_uint32(owner), ==, NOBODY);
        }
        loopd_fuse_resume(s.fs);

        /* Both go: nobody's by its owner, the other by root (through loopd). */
        {
                g_autofree char *c = hostile_cmd(s.nobody, 10, "close %u", d.slot);
                g_autofree char *r = hostile_cmd(s.nobody, 30, "remove %s", d.device);
                g_assert_cmpstr(c, ==, "ok");
                g_assert_cmpstr(r, ==, "ok");
        }
        {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) r = g_dbus_connection_call_sync(
                        f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "Remove",
                        g_variant_new("(s)", losetup_dev), NULL, G_DBUS_CALL_FLAGS_NONE, 20000, NULL, &error);
                g_assert_no_error(error);
                g_assert_nonnull(r);
        }
        /* A Remove the kernel deferred (a job still had it open) ends soon. */
        if (!loopd_fixture_wait_no_loops(f, 5)) {
                g_autoptr(GPtrArray) left = loopd_fixture_list_loops(f);
                g_autofree char *who = hostile_node_holders(left->pdata[0]);
                g_error("%s is still attached after its Remove: %s", (char *) left->pdata[0], who);
        }
}

/* ---- the last close of a device, stuck ------------------------------------------- */

static guint threads_in_d(pid_t pid) {
        g_autofree char *dir = g_strdup_printf("/proc/%d/task", (int) pid);
        g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
        const char *t;
        guint n = 0;

        while (d && (t = g_dir_read_name(d)))
                n += hostile_proc_state((pid_t) g_ascii_strtoll(t, NULL, 10)) == 'D';
        return n;
}

/*
 * The last close of a loop device writes its dirty pages back to the
 * backing file first, and waits for it. loopd holds a keeper fd on each
 * device a user made for itself, so the last close is often loopd's, on a
 * job: when the owner asks for a detach through its own fd (LOOP_CLR_FD
 * marks the device while loopd's keeper is open) and closes it, loopd lets
 * go of its keeper. With the owner's FUSE server withholding WRITE, each
 * such close hangs in the kernel; they once were charged to root, and 20
 * of them held every thread of the pool, root's reserve included: root's
 * Create timed out. They must hold only the owner's own threads.
 */
static void test_stuck_closes_hold_only_their_owners_threads(LoopdFixture *f, gconstpointer data) {
        static const LoopdFuseFile big[] = { { "disk.img", 64 << 20, 0644 }, { NULL } };
        static const char *const args[] = { "--kernel-timeout=3", NULL };
        const guint devices = 24;
        g_auto(Scene) s = { 0 };
        g_autofree char *a = NULL;
        pid_t loopd;
        guint stuck = 0;
        gint64 t0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!scene_setup(f, &s, big, args))
                return;
        loopd = loopd_fixture_daemon_pid(f);

        a = hostile_cmd(s.nobody, 10, "open %s rw", s.fuse_img);
        g_assert_cmpstr(a, ==, "ok 0");
        for (guint i = 0; i < devices; i++) {
                g_autofree char *c = hostile_cmd(s.nobody, 30, "create @0 rw");
                g_assert_true(g_str_has_prefix(c, "ok "));
        }

        /* Dirty pages on each, a detach asked through nobody's own fd, and
         * its close: the keeper's close is the last, and it must write. */
        loopd_fuse_hang(s.fs, LOOPD_FUSE_WRITE);
        for (guint i = 0; i < devices; i++) {
                g_autofree char *w = hostile_cmd(s.nobody, 10, "write %u 0 4096", i);
                g_autofree char *x = hostile_cmd(s.nobody, 10, "clr-fd %u", i);
                g_autofree char *c = hostile_cmd(s.nobody, 10, "close %u", i);
                g_assert_cmpstr(w, ==, "ok 4096");
                g_assert_cmpstr(x, ==, "ok");
                g_assert_cmpstr(c, ==, "ok");
        }
        t0 = g_get_monotonic_time();
        while (g_get_monotonic_time() - t0 < 3 * G_USEC_PER_SEC * loopd_test_timeout_scale()) {
                stuck = MAX(stuck, threads_in_d(loopd));
                g_usleep(100 * 1000);
        }
        g_test_message("%u of nobody's devices closed by loopd with WRITE withheld: %u loopd threads stuck", devices,
                       stuck);

        /* Root and another uid still get their kernel work done. */
        assert_root_served(f, s.root_img, "loopd's closes of nobody's devices hang");
        assert_other_uid_served(f, s.other, s.other_img, FALSE);
        stuck = MAX(stuck, threads_in_d(loopd));
        g_test_message("bound: %d kernel jobs of a uid at a time, its cleanup included; figure: %u loopd threads "
                       "stuck",
                       KERNEL_PER_UID, stuck);
        g_assert_cmpuint(stuck, <=, KERNEL_PER_UID);

        /* The file system answers: every close ends, every device goes. */
        loopd_fuse_resume(s.fs);
        g_assert_true(loopd_fixture_wait_no_loops(f, 10));
        g_assert_cmpuint(threads_in_d(loopd), ==, 0);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/stress/hostile-fuse/stuck-path-helpers-stay-counted", LoopdFixture, &polkit_only,
                   loopd_fixture_setup, test_stuck_path_helpers_stay_counted, loopd_fixture_teardown);
        g_test_add("/stress/hostile-fuse/hung-getattr-blocks-only-its-caller", LoopdFixture, &polkit_only,
                   loopd_fixture_setup, test_hung_getattr_blocks_only_its_caller, loopd_fixture_teardown);
        g_test_add("/stress/hostile-fuse/stuck-closes-hold-only-their-owners-threads", LoopdFixture, &polkit_only,
                   loopd_fixture_setup, test_stuck_closes_hold_only_their_owners_threads, loopd_fixture_teardown);
        return g_test_run();
}
