/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * LoopdFixture: a private system bus, optionally the real polkitd and the
 * real loopd, for integration, security and stress tests (GTest).
 *
 * What one fixture owns, all inside one 0755 temp dir (f->tmpdir):
 *   - dbus-daemon with a <type>system</type> config of its own: the default
 *     policy of a stock system bus, the production dbus/org.loopd.Loop1.conf
 *     <include>d as is, polkit's name for the polkitd user (and for root, so
 *     python3-dbusmock's polkitd template can stand in), and a <servicedir>
 *     for activation tests. DBUS_SYSTEM_BUS_ADDRESS is set in the test's
 *     environment and in every child's.
 *   - polkitd, the real one, in a private mount and PID namespace with
 *     dbus/org.loopd.policy as its only actions and the test's JavaScript
 *     as its only rules (the host's /usr/share/polkit-1 and /etc/polkit-1
 *     are untouched).
 *   - loopd from $LOOPD_BINARY with --state-dir=<tmpdir>/state,
 *     --idle-timeout=0 (unless the test passes its own) and NOTIFY_SOCKET;
 *     ready when it owns org.loopd.Loop1 *and* has sent READY=1.
 *
 * Nothing survives the test: every child has PR_SET_PDEATHSIG(SIGKILL)
 * (through `setpriv --pdeathsig` where a uid changes, since the kernel
 * clears it then; polkitd dies with its PID namespace), and everything the
 * fixture starts or makes (processes, FUSE mounts, loop devices backed by
 * files under f->tmpdir, the temp dir) is registered with the emergency
 * cleanup of emergency.h: a crash, meson's SIGTERM, the watchdog's SIGALRM,
 * exit, and through its janitor process even SIGKILL and the _exit() that
 * g_assert does inside a g_test_trap_subprocess() child, all end with
 * nothing left. g_assert aborts before teardown runs; that is covered too.
 *
 * Kill order everywhere: callers, loopd, polkitd, the bus, so loopd's exit
 * status (and any sanitizer report, which makes it non-zero) is seen.
 *
 * Environment read: LOOPD_BINARY (loopd; daemon tests skip without it),
 * LOOPD_TEST_CALLER (loopd-test-caller), LOOPD_TEST_LIFELINE, LOOPD_BUS_POLICY,
 * LOOPD_BUS_CONFIG_TEMPLATE (tests/lib/private-system-bus.conf.in),
 * LOOPD_POLKIT_POLICY, LOOPD_ACTIVATION_FILE, LOOPD_FUSE_SERVER
 * (tests/lib/fuse-server.py) (defaults: the source and
 * build tree this library was built from), LOOPD_TEST_WRAPPER (e.g.
 * "valgrind --error-exitcode=99 --leak-check=full", prefixed to loopd),
 * LOOPD_TEST_TIMEOUT_SCALE (multiplies every wait, e.g. 10 under valgrind),
 * LOOPD_TEST_WATCHDOG_SEC (per-fixture watchdog, default 300 s),
 * LOOPD_DBUS_DAEMON, LOOPD_POLKITD (binaries, found on PATH or in
 * /usr/lib/polkit-1 by default).
 *
 * Use either with g_test_add():
 *
 *   static const LoopdFixtureOptions opts = { .start_daemon = TRUE };
 *   g_test_add("/create/readonly", LoopdFixture, &opts,
 *              loopd_fixture_setup, test_create_readonly, loopd_fixture_teardown);
 *
 *   static void test_create_readonly(LoopdFixture *f, gconstpointer data) {
 *           LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
 *           ...
 *   }
 *
 * or with loopd_fixture_new()/loopd_fixture_free() inside a test function.
 * Spawn children only from the main thread: PR_SET_PDEATHSIG fires when the
 * spawning *thread* exits.
 *
 * Use f->bus (root's connection), never g_bus_get(G_BUS_TYPE_SYSTEM): GIO
 * caches that singleton across fixtures.
 */

#include <stdarg.h>
#include <stdbool.h>
#include <sys/types.h>

#include <gio/gio.h>
#include <glib.h>

#include "loopd-protocol.h"

G_BEGIN_DECLS

/* loopd's own names come from loopd-protocol.h; this one is polkit's. */
#define LOOPD_POLKIT_BUS_NAME "org.freedesktop.PolicyKit1"

/* The uid and gid tests use for "an unprivileged caller". */
#define LOOPD_TEST_NOBODY 65534

typedef struct LoopdFixtureOptions {
        gboolean start_polkit;
        const char *polkit_rules;       /* JavaScript; NULL: no rules, the action defaults apply */
        gboolean start_daemon;
        const char *const *daemon_args; /* extra loopd arguments, NULL-terminated */
        guint watchdog_sec;             /* 0: $LOOPD_TEST_WATCHDOG_SEC or 300 */
} LoopdFixtureOptions;

typedef struct LoopdFixturePrivate LoopdFixturePrivate;

typedef struct LoopdFixture {
        /* Read-only for tests. */
        char *tmpdir;         /* canonical path, mode 0755, removed at teardown */
        char *image_dir;      /* <tmpdir>/images, 0755: put backing files here */
        char *state_dir;      /* <tmpdir>/state: loopd's --state-dir */
        char *service_dir;    /* <tmpdir>/services: the bus's <servicedir> */
        char *bus_address;    /* also in DBUS_SYSTEM_BUS_ADDRESS */
        GDBusConnection *bus; /* a connection as uid 0 */
        gboolean skipped;     /* setup called g_test_skip(): return at once */

        LoopdFixturePrivate *priv;
} LoopdFixture;

#define LOOPD_FIXTURE_RETURN_IF_SKIPPED(f) \
        G_STMT_START {                     \
                if ((f)->skipped)          \
                        return;            \
        } G_STMT_END

/* g_test_add() glue. @options: a const LoopdFixtureOptions * or NULL (bus only).
 * On anything the machine lacks (not root, no dbus-daemon, no polkitd, no
 * $LOOPD_BINARY when asked for) it calls g_test_skip() with the reason and
 * sets f->skipped. */
void loopd_fixture_setup(LoopdFixture *f, gconstpointer options);
void loopd_fixture_teardown(LoopdFixture *f, gconstpointer options);

/* The same without GTest's fixture machinery; NULL options: bus only.
 * Check ->skipped on the result. free() runs the teardown. */
LoopdFixture *loopd_fixture_new(const LoopdFixtureOptions *options);
void loopd_fixture_free(LoopdFixture *f);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(LoopdFixture, loopd_fixture_free)

/* ---- polkit rules --------------------------------------------------------
 *
 * The one way tests write polkit rules (LoopdFixtureOptions.polkit_rules,
 * loopd_fixture_start_polkit(), loopd_fixture_set_polkit_rules()). Each
 * macro is one polkit.addRule(), a string literal, so rules initialize
 * static options and several side by side concatenate. polkitd asks the
 * rules in order and the first that returns a result decides: put the
 * narrow ones first. When none decides, the action's defaults in
 * dbus/org.loopd.policy apply; with no logind no subject is local or
 * active, so that is allow_any (auth_admin) for everyone.
 *
 * @result: YES, NO, AUTH_ADMIN, AUTH_ADMIN_KEEP, AUTH_SELF (polkit.Result.*).
 * @user: a user name ("nobody", "daemon", "bin") or "*" for anyone.
 * @action_id: LOOPD_ACTION_CREATE or LOOPD_ACTION_MANAGE_OTHERS.
 * @condition: a JavaScript expression over `action` and `subject`, e.g.
 *   "action.lookup('read_only') == 'true'" (the details loopd passes are
 *   listed in dbus/org.loopd.policy).
 *
 *   static const LoopdFixtureOptions opts = {
 *           .start_polkit = TRUE,
 *           .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE)
 *                           LOOPD_RULE_DENY("*", LOOPD_ACTION_MANAGE_OTHERS),
 *   };
 */
#define LOOPD_RULE_IF(result, user, action_id, condition)                                           \
        "polkit.addRule(function(action, subject) {\n"                                              \
        "        if (action.id == '" action_id "' && ('" user "' == '*' || subject.user == '" user "') &&\n" \
        "            (" condition "))\n"                                                              \
        "                return polkit.Result." #result ";\n"                                        \
        "});\n"
#define LOOPD_RULE_ALLOW(user, action_id) LOOPD_RULE_IF(YES, user, action_id, "true")
#define LOOPD_RULE_DENY(user, action_id) LOOPD_RULE_IF(NO, user, action_id, "true")
#define LOOPD_RULE_AUTH_ADMIN(user, action_id) LOOPD_RULE_IF(AUTH_ADMIN, user, action_id, "true")

/* ---- polkitd ---------------------------------------------------------- */

/* Starts the real polkitd with @rules (JavaScript, may be NULL) and returns
 * once it owns org.freedesktop.PolicyKit1 and has loaded the rules. FALSE
 * (after g_test_skip()) when polkitd or unshare is missing. */
gboolean loopd_fixture_start_polkit(LoopdFixture *f, const char *rules);
/* Replaces the test's rules (NULL: none) and returns once polkitd answers by
 * them: a probe action in the same rules generation must say yes first. */
void loopd_fixture_set_polkit_rules(LoopdFixture *f, const char *rules);
/* Kills polkitd (and its namespace) and waits until its name left the bus. */
void loopd_fixture_stop_polkit(LoopdFixture *f);
/* SIGSTOP/SIGCONT polkitd: it keeps its name but answers nothing. */
void loopd_fixture_hang_polkit(LoopdFixture *f);
void loopd_fixture_resume_polkit(LoopdFixture *f);
/* polkitd's pid as the bus (and the host) sees it; 0 if not running. */
pid_t loopd_fixture_polkitd_pid(LoopdFixture *f);
/* CheckAuthorization for subject system-bus-name @bus_name, no details,
 * no interaction. TRUE when authorized; *challenge (may be NULL) set when
 * the answer was "authentication required". -1 with @error on a D-Bus
 * error (e.g. unregistered action, timeout after @timeout_msec). */
int loopd_fixture_polkit_check(LoopdFixture *f, const char *bus_name, const char *action_id,
                               gboolean *challenge, int timeout_msec, GError **error);

/* ---- loopd ------------------------------------------------------------- */

/* Path of loopd ($LOOPD_BINARY) if it exists and is executable, else NULL. */
const char *loopd_fixture_daemon_binary(void);
/* Starts loopd with @extra_args (NULL-terminated, may be NULL) and returns
 * once it owns org.loopd.Loop1 and sent READY=1. FALSE (after g_test_skip())
 * when $LOOPD_BINARY is unset or missing; a daemon that exits or never gets
 * ready fails the test. The arguments are remembered for restart. */
gboolean loopd_fixture_start_daemon(LoopdFixture *f, const char *const *extra_args);
/* SIGTERM, waits, and asserts a clean exit (status 0). */
void loopd_fixture_stop_daemon(LoopdFixture *f);
/* SIGTERM and wait; returns the raw wait status, asserts nothing. */
int loopd_fixture_terminate_daemon(LoopdFixture *f);
/* Waits up to @timeout_sec (scaled) for loopd to exit by itself (idle exit);
 * returns the raw wait status, or -1 if it is still running. */
int loopd_fixture_wait_daemon_exit(LoopdFixture *f, double timeout_sec);
/* SIGKILL and reap: a crash without any chance to clean up. */
void loopd_fixture_kill_daemon(LoopdFixture *f);
/* Starts loopd again with the arguments of the last start. */
gboolean loopd_fixture_restart_daemon(LoopdFixture *f);
/* 0 when not running (or not started by the fixture). */
pid_t loopd_fixture_daemon_pid(LoopdFixture *f);
/* The last STATUS= loopd sent over NOTIFY_SOCKET, or NULL; valid until the
 * next call or teardown. The fixture reads NOTIFY_SOCKET all the time, from
 * a thread, for the fixture's whole life: loopd's sd_notify() blocks once
 * nobody reads, whatever the test is doing. */
const char *loopd_fixture_daemon_status_text(LoopdFixture *f);
/* Waits (scaled) until loopd's last STATUS= matches @pattern (a GLib glob:
 * '*' and '?'; without them, the exact text). TRUE when it does; on timeout
 * FALSE, and the last STATUS= seen goes to the test log. */
gboolean loopd_fixture_wait_daemon_status(LoopdFixture *f, const char *pattern, double timeout_sec);

/* ---- activation ------------------------------------------------------- */

/* Writes <service_dir>/org.loopd.Loop1.service from the built activation
 * file ($LOOPD_ACTIVATION_FILE) with Exec= replaced by the built loopd
 * (state dir, --idle-timeout=0 unless given, @extra_args) under
 * loopd-test-lifeline, and makes the bus reload it. The next call to
 * org.loopd.Loop1 starts loopd from dbus-daemon, as root. Every activated
 * instance must exit 0 (teardown SIGTERMs the running one and checks all
 * that exited by themselves). FALSE (after g_test_skip()) without loopd. */
gboolean loopd_fixture_install_activation(LoopdFixture *f, const char *const *extra_args);
/* The same with any Exec= command line (for a stand-in service); no exit
 * status is checked. */
void loopd_fixture_install_activation_exec(LoopdFixture *f, const char *name, const char *exec);
/* Raw wait status of the activated service that ran as @pid, once it has
 * exited (waits up to @timeout_sec, scaled); -1 if none. Consumes it:
 * teardown no longer checks it (for tests that kill -9 on purpose). */
int loopd_fixture_activated_exit_status(LoopdFixture *f, pid_t pid, double timeout_sec);
/* SIGTERMs whoever owns @name (activated, so not our child) and waits
 * until it left the bus and its process is gone. Teardown does this for
 * org.loopd.Loop1 by itself. FALSE if nobody (or the test itself) owned it. */
gboolean loopd_fixture_stop_name_owner(LoopdFixture *f, const char *name);

/* ---- the bus ------------------------------------------------------------ */

/* pid of @name's owner, 0 when it has none. */
pid_t loopd_fixture_name_owner_pid(LoopdFixture *f, const char *name);
/* Waits (scaled) until @name has (@owned) or has no owner. */
gboolean loopd_fixture_wait_name(LoopdFixture *f, const char *name, gboolean owned, double timeout_sec);

/* ---- files, callers, loop devices --------------------------------------- */

/* Creates <image_dir>/@name, sparse, @size bytes, owned by @uid:@gid with
 * @mode. Returns the path (free it). */
char *loopd_fixture_make_image(LoopdFixture *f, const char *name, guint64 size,
                               uid_t uid, gid_t gid, mode_t mode);

typedef struct LoopdRunResult {
        int status;    /* exit code; 128+N when killed by signal N; -1 on timeout */
        char *out;     /* all of stdout */
        char *err;     /* all of stderr */
        char **fields; /* first stdout line split at the first two spaces:
                        * {"ok", obj, dev} / {"error", name, message} / {"ok"} */
} LoopdRunResult;
void loopd_run_result_clear(LoopdRunResult *r);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(LoopdRunResult, loopd_run_result_clear)

/* Runs @argv as @uid:@gid with no supplementary groups (`setpriv --reuid
 * --regid --clear-groups`; a real uid change, so sd-bus and GLib honour
 * DBUS_SYSTEM_BUS_ADDRESS) from /, with the fixture's bus, stdin from
 * /dev/null, and waits at most 60 s (scaled). */
void loopd_fixture_run_as(LoopdFixture *f, uid_t uid, gid_t gid,
                          const char *const *argv, LoopdRunResult *r);
/* Same with supplementary @groups ("100,101"; NULL: none) and @stdin_text
 * (NULL: /dev/null). */
void loopd_fixture_run_as_full(LoopdFixture *f, uid_t uid, gid_t gid, const char *groups,
                               const char *stdin_text, const char *const *argv, LoopdRunResult *r);
/* Runs @program as @uid:@gid with the NULL-terminated arguments of @ap:
 * for a test's own variadic wrapper of a helper program. */
void loopd_fixture_run_program_as_valist(LoopdFixture *f, uid_t uid, gid_t gid, LoopdRunResult *r,
                                         const char *program, va_list ap);
/* Runs loopd-test-caller as @uid:@gid with the arguments after @r,
 * NULL-terminated: loopd_fixture_call_as(f, 65534, 65534, &r, "create", img, NULL). */
void loopd_fixture_call_as(LoopdFixture *f, uid_t uid, gid_t gid, LoopdRunResult *r, ...) G_GNUC_NULL_TERMINATED;
/* Path of loopd-test-caller ($LOOPD_TEST_CALLER). */
const char *loopd_fixture_test_caller(void);

/* A caller running in the background (e.g. `create ... --hold`): stdin and
 * stdout are pipes to the test, stderr is the test's. */
typedef struct LoopdCaller LoopdCaller;
LoopdCaller *loopd_fixture_spawn_as(LoopdFixture *f, uid_t uid, gid_t gid, const char *const *argv);
/* loopd-test-caller with the arguments after @gid, NULL-terminated. */
LoopdCaller *loopd_fixture_spawn_caller_as(LoopdFixture *f, uid_t uid, gid_t gid, ...) G_GNUC_NULL_TERMINATED;
/* Next line of stdout without the newline, waiting up to 60 s (scaled);
 * NULL on EOF or timeout. Free it. */
char *loopd_caller_read_line(LoopdCaller *c);
pid_t loopd_caller_pid(LoopdCaller *c);
/* Closes its stdin: a --hold caller then lets go and exits. */
void loopd_caller_close_stdin(LoopdCaller *c);
void loopd_caller_kill(LoopdCaller *c, int sig);
/* Waits (60 s scaled, then SIGKILL) and returns as LoopdRunResult.status. */
int loopd_caller_wait(LoopdCaller *c);
/* Kills it if still running, reaps it. NULL-safe. Teardown frees the
 * callers still open: do not use one after its fixture is gone. */
void loopd_caller_free(LoopdCaller *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(LoopdCaller, loopd_caller_free)

/* Loop devices whose backing file lies under f->tmpdir, as "/dev/loopN",
 * sorted (from /sys/block/loop*\/loop/backing_file). */
GPtrArray *loopd_fixture_list_loops(LoopdFixture *f);
guint loopd_fixture_count_loops(LoopdFixture *f);
/* The processes holding the block device @device ("/dev/loopN") open: a
 * pid each (from /proc/PID/fd, by device number; only fds on /dev/ are
 * looked at, so no file system a test hung is asked anything). */
GArray *loopd_device_holders(const char *device);
/* " PID(comm)" for each of @pids, "" for none (free it). */
char *loopd_pids_text(const GArray *pids);
/* Waits up to @timeout_sec (scaled) until none is left; whether none is. */
gboolean loopd_fixture_wait_no_loops(LoopdFixture *f, double timeout_sec);
/* LOOP_CLR_FD on each of them; returns how many. Teardown does this. */
guint loopd_fixture_detach_loops(LoopdFixture *f);

/* ---- a FUSE file system that stops answering on demand -----------------
 *
 * For hostile backing files: tests/lib/fuse-server.py, a FUSE server that
 * speaks the kernel protocol itself, serves one directory of regular files
 * (byte i of a file is i % 251 until written; attributes and entries are
 * never cached, so every stat, lookup, open and read reaches it). The
 * fixture mounts it as root under f->tmpdir with
 * allow_other,user_id=UID,group_id=GID, which is what fusermount3 gives a
 * user mounting a FUSE file system of their own. On command the server
 * withholds its answers to chosen requests: the process (or kernel thread)
 * that made one waits in request_wait_answer() — interruptibly at first,
 * unkillably (D state) once the server has read the request — until the
 * server answers or the connection is aborted.
 *
 * Withheld answers reach beyond the test: every process on the machine that
 * touches the mount waits too. A loop device backed by a file on it makes
 * every loopd, losetup -l or udev that reads the device's status ask for
 * GETATTR (LOOP_GET_STATUS64 stats the backing file), other tests' loopd
 * included: withhold GETATTR with such a device attached only as long as
 * the test needs to.
 *
 * No process stays blocked after a test: teardown aborts every FUSE
 * connection before it stops anything else (a loopd blocked in the file
 * system could not exit), detaches the loop devices under f->tmpdir, then
 * unmounts; the emergency cleanup does the same after a crash or SIGKILL.
 *
 *   static const LoopdFuseFile files[] = { { "disk.img", 1 << 20 }, { NULL } };
 *   LoopdFuse *fs = loopd_fixture_mount_fuse(f, 65534, 65534, files);
 *   if (!fs) return;                                  // skipped: no /dev/fuse
 *   g_autofree char *img = loopd_fuse_path(fs, "disk.img");
 *   loopd_fuse_hang(fs, LOOPD_FUSE_OPEN);
 *   ... start something that opens img; it blocks ...
 *   pid_t who = loopd_fuse_wait_held(fs, LOOPD_FUSE_OPEN, 10);
 *   loopd_fuse_resume(fs);                            // or loopd_fuse_abort(fs)
 */
typedef enum LoopdFuseOp {
        LOOPD_FUSE_LOOKUP = 1 << 0,
        LOOPD_FUSE_GETATTR = 1 << 1,
        LOOPD_FUSE_OPEN = 1 << 2,
        LOOPD_FUSE_READ = 1 << 3,
        LOOPD_FUSE_WRITE = 1 << 4,
        LOOPD_FUSE_FLUSH = 1 << 5,
} LoopdFuseOp;

typedef struct LoopdFuseFile {
        const char *name; /* in the mount's root; a { NULL } entry ends the list */
        guint64 size;     /* fixed: writes past it fail with ENOSPC */
        mode_t mode;      /* permission bits; 0: 0644 */
} LoopdFuseFile;

typedef struct LoopdFuse LoopdFuse;

/* Mounts the server at <tmpdir>/fuse-N (0755), owned by @uid:@gid, with
 * @files, and returns once it answers. NULL after g_test_skip() (and
 * f->skipped set) when the machine has no /dev/fuse (package fuse3) or no
 * /usr/bin/python3. The fixture owns it: teardown unmounts it. */
LoopdFuse *loopd_fixture_mount_fuse(LoopdFixture *f, uid_t uid, gid_t gid, const LoopdFuseFile *files);
const char *loopd_fuse_mount_point(LoopdFuse *fs);
/* <mount point>/@name; free it. */
char *loopd_fuse_path(LoopdFuse *fs, const char *name);
/* From now on, withhold answers to the requests in @ops (a LoopdFuseOp
 * mask, replacing the previous one; 0: none new). Those already withheld
 * stay so. Returns once the server has taken the order. */
void loopd_fuse_hang(LoopdFuse *fs, guint ops);
/* Answers every withheld request, in the order they came, and withholds no
 * more. */
void loopd_fuse_resume(LoopdFuse *fs);
/* Waits (scaled) for a withheld request of @op that no earlier call
 * returned; the id of the thread that made it (a pid for a single-threaded
 * process), or 0 on timeout. */
pid_t loopd_fuse_wait_held(LoopdFuse *fs, LoopdFuseOp op, double timeout_sec);
/* The same for a request of @op made by thread @tid, skipping others' (the
 * machine is shared: see below). TRUE when one was withheld in time. */
gboolean loopd_fuse_wait_held_by(LoopdFuse *fs, LoopdFuseOp op, pid_t tid, double timeout_sec);
/* How many requests of @op the server has seen, answered or not. */
guint loopd_fuse_count(LoopdFuse *fs, LoopdFuseOp op);
/* Aborts the connection: every withheld and every later request fails with
 * ENOTCONN. The mount stays (its files then fail) until unmounted. */
void loopd_fuse_abort(LoopdFuse *fs);
/* Aborts, detaches the loop devices backed by files on it, unmounts
 * (lazily) and reaps the server; frees @fs. Teardown does this for those
 * left. */
void loopd_fuse_unmount(LoopdFuse *fs);

/* Every wait above is multiplied by this ($LOOPD_TEST_TIMEOUT_SCALE). */
double loopd_test_timeout_scale(void);

G_END_DECLS
