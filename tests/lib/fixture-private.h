/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * What the fixture's own source files (fixture.c, fixture-fuse.c) share and
 * tests do not see: the private state and the spawning and tracking
 * helpers.
 */

#include "fixture.h"

#define fixture_fail(...)                                                               \
        G_STMT_START {                                                                  \
                g_autofree char *msg_ = g_strdup_printf(__VA_ARGS__);                   \
                g_assertion_message(G_LOG_DOMAIN, __FILE__, __LINE__, G_STRFUNC, msg_); \
        } G_STMT_END

struct LoopdFixturePrivate {
        int crash_loops_id, crash_tmpdir_id; /* emergency registrations of f->tmpdir */

        pid_t bus_pid;

        pid_t polkit_pid;     /* unshare, our child; polkitd dies with its namespace */
        pid_t polkitd_pid;    /* polkitd as the host sees it, not our child */
        guint64 polkitd_start;
        pid_t probe_pid;      /* sleeps as nobody: the subject of the rules probe */
        guint64 probe_start;
        guint rules_generation;
        char *actions_dir, *rules_dir, *empty_dir;

        pid_t daemon_pid;
        char **daemon_args; /* the test's extra arguments of the last start */
        /* NOTIFY_SOCKET: read by a thread of its own for the fixture's whole
         * life (see notify_thread()); the fields below the lock are its. */
        int notify_fd;
        char *notify_path;
        int notify_wake[2];    /* pipe: the test asks the thread to drain, or to stop */
        GThread *notify_thread;
        GMutex notify_lock;
        GCond notify_cond;
        gboolean daemon_ready; /* READY=1 since the last start */
        char *daemon_status;   /* the last STATUS= */
        guint64 notify_sync_requested, notify_sync_done;
        gboolean notify_stop;
        char *status_snapshot; /* what loopd_fixture_daemon_status_text() returned last */

        GPtrArray *callers; /* LoopdCaller *, not owned */
        int lifeline_fd;      /* write end of <tmpdir>/lifeline.fifo, see lifeline.c */
        char *lifeline_fifo;
        char *activated_dir;  /* <tmpdir>/activated: PID.status of activated services */
        gboolean activated_loopd;
        gboolean set_env;

        GPtrArray *fuse_mounts; /* LoopdFuse *, owned (fixture-fuse.c) */
        guint fuse_counter;
};

/* Time, scaled by loopd_test_timeout_scale(). */
gint64 fixture_deadline_after(double sec);
gboolean fixture_past(gint64 deadline);

/* Reaps @pid within @timeout_sec (scaled). TRUE and *status when reaped. */
gboolean fixture_wait_child(pid_t pid, double timeout_sec, int *status);
/* SIGKILL and reap; for children whose exit status does not matter. */
void fixture_kill_child(pid_t pid);

/* Registers with the emergency cleanup (emergency.h) / forgets. */
void fixture_track_pid(LoopdFixture *f, pid_t pid, gboolean is_child);
void fixture_untrack_pid(LoopdFixture *f, pid_t pid);

/* `setpriv` running @argv as @uid:@gid with supplementary @groups ("100,101";
 * NULL: none) and PR_SET_PDEATHSIG (the uid change clears it), as a
 * NULL-terminated argv that owns its strings. */
GPtrArray *fixture_setpriv_argv(uid_t uid, gid_t gid, const char *groups, const char *const *argv);
/* The environment of every child: the fixture's bus, nothing of systemd's. */
char **fixture_base_env(LoopdFixture *f);
/* Spawns @argv with PR_SET_PDEATHSIG and @env. Its stdout goes to our stderr
 * unless piped (GTest's TAP output is our stdout). @map_fd (>= 0) becomes
 * fd 3 in the child. 0 with @error on failure. */
pid_t fixture_spawn(LoopdFixture *f, const char *const *argv, char **env, const char *cwd, int map_fd,
                    int *stdin_pipe, int *stdout_pipe, int *stderr_pipe, GError **error);

/* fixture-fuse.c, for teardown: abort every FUSE connection (first of all:
 * a process blocked on one could not be stopped), and unmount them all
 * (after the loop devices under f->tmpdir are detached: once unmounted, a
 * backing file's path no longer names the temp dir). */
void fixture_fuse_abort_all(LoopdFixture *f);
void fixture_fuse_unmount_all(LoopdFixture *f);
