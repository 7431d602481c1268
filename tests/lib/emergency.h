/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Emergency cleanup for test programs: the one registry of what a test made
 * that would outlive it (processes, FUSE connections, loop devices, loop
 * nodes, mounts, files) and the one cleanup that undoes it when the test
 * dies without its own teardown. Used by the unit tests, the integration
 * fixture (fixture.c) and the benchmark; no GLib, since the benchmark links
 * without it.
 *
 * Three ways in, one cleanup (emergency_run()):
 *   - a fatal signal: SIGABRT (a failed g_assert), SIGSEGV, SIGBUS, SIGFPE,
 *     SIGILL, SIGTRAP, SIGTERM and SIGINT (meson's timeout, ^C), SIGHUP,
 *     SIGQUIT, SIGALRM (a watchdog's alarm()). The handler cleans up, then
 *     hands the signal to whoever had it before (a sanitizer) or to the
 *     default action, so the process still dies of it.
 *   - exit() or a return from main(): an atexit hook.
 *   - what no handler sees, SIGKILL (meson's second try at a timeout) and
 *     _exit() (g_assert inside a g_test_trap_subprocess() child): the
 *     janitor, a process of its own (double-forked, its own session, so
 *     neither our child nor in meson's process group) that is told every
 *     registration over a socket and runs the same cleanup on its own copy
 *     of the registry when the socket reaches EOF, i.e. when the test
 *     process is gone. Children die with the test anyway (PR_SET_PDEATHSIG);
 *     loop devices, mounts and files would not.
 *
 * The cleanup uses only async-signal-safe calls (open, read, write, ioctl,
 * kill, waitpid, getdents64, statx, unlinkat, umount2, nanosleep) on static
 * memory, and never blocks on a file system a test may have hung: FUSE
 * connections are aborted first, and removal never descends into a mount.
 * Order: abort FUSE connections, kill processes (reaping our children, in
 * bounded time), detach loop devices, remove loop nodes, unmount (lazily),
 * remove paths (last registered first).
 *
 * Register and forget from one thread (the main one); the handler reads the
 * registry between two statements of it. Registration functions return an
 * id (>= 0) or -errno; registering never fails a running test silently:
 * callers assert on the result.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

typedef enum EmergencyKind {
        EMERGENCY_FUSE = 1u << 0,        /* abort a FUSE connection */
        EMERGENCY_PID = 1u << 1,         /* SIGKILL a process; our child is reaped */
        EMERGENCY_TAGGED = 1u << 2,      /* SIGKILL every process whose environ or cmdline holds a string */
        EMERGENCY_LOOP = 1u << 3,        /* LOOP_CLR_FD on one attachment (number + diskseq) */
        EMERGENCY_LOOPS_UNDER = 1u << 4, /* LOOP_CLR_FD on every device backed by a file under a directory */
        EMERGENCY_LOOP_NODE = 1u << 5,   /* LOOP_CTL_REMOVE a node the test added */
        EMERGENCY_MOUNT = 1u << 6,       /* umount2(MNT_DETACH) */
        EMERGENCY_PATH = 1u << 7,        /* rm -rf, never crossing into another mount */
        EMERGENCY_ALL = 0xffu,
} EmergencyKind;

enum {
        EMERGENCY_INIT_JANITOR = 1u << 0, /* also start the janitor (SIGKILL, _exit) */
};

/* Installs the signal handlers and the atexit hook, once per process; with
 * EMERGENCY_INIT_JANITOR starts the janitor too (once). The process calling
 * it owns the registry: a fork()ed child never runs the parent's cleanup. */
int emergency_init(unsigned flags);

enum {
        EMERGENCY_PID_CHILD = 1u << 0,      /* ours to reap */
        EMERGENCY_PID_TERM_FIRST = 1u << 1, /* SIGTERM and up to 1 s to exit before SIGKILL: for a
                                             * process that cleans up after itself on SIGTERM */
};
/* @flags: EMERGENCY_PID_*. A process that is not our child is signalled only
 * if its start time still matches the one read now (pids are reused). */
int emergency_add_pid(pid_t pid, unsigned flags);
/* Every process (but us) whose environment or command line contains
 * @needle, e.g. a tag in the environment of everything a benchmark starts. */
int emergency_add_tagged(const char *needle);
/* A FUSE connection, by the st_dev of its mount: aborted through
 * /sys/fs/fuse/connections/N/abort when fusectl is mounted there, and by
 * umount2(MNT_FORCE) of @mount_path, which aborts it too. Every request
 * waiting on it then fails with ENOTCONN: nothing stays in D state. */
int emergency_add_fuse(dev_t dev, const char *mount_path);
/* One attachment: cleared only while loopN still has @diskseq (0: any). */
int emergency_add_loop(uint32_t number, uint64_t diskseq);
/* Every loop device whose backing file lies under @dir (canonical path). */
int emergency_add_loops_under(const char *dir);
int emergency_add_loop_node(uint32_t number);
int emergency_add_mount(const char *path);
int emergency_add_path(const char *path);

/* Drops an entry, once the normal path has undone it (NULL-safe for ids < 0). */
void emergency_forget(int id);
/* The same by identity, for registrations whose id was not kept. */
void emergency_forget_pid(pid_t pid);
void emergency_forget_loop(uint32_t number, uint64_t diskseq);

/* Runs the cleanup for the entries of @kinds (an EmergencyKind mask) now and
 * forgets them: for a teardown that wants exactly the emergency behaviour
 * (e.g. detach whatever a unit test left attached). */
void emergency_cleanup(unsigned kinds);
/* emergency_cleanup(EMERGENCY_ALL); what the handlers and the janitor run. */
void emergency_run(void);

/* In a fork()ed child that goes on running test code: an empty registry of
 * its own (the parent's entries are the parent's), and no janitor link. */
void emergency_after_fork(void);

/* The janitor's pid, 0 without one: a fork of ours, so a sweep of processes
 * by command line must spare it. */
pid_t emergency_janitor_pid(void);

/* Printed when SIGALRM arrives (a watchdog's alarm()); copied, may be NULL. */
void emergency_set_alarm_message(const char *message);

/* The pieces, async-signal-safe, for normal paths too. */
/* LOOP_CLR_FD on every loop device backed by a file under @dir; how many. */
unsigned emergency_detach_loops_under(const char *dir);
/* rm -rf @path without following symlinks or entering a mount; 0 or -errno. */
int emergency_rm_rf(const char *path);
/* Aborts the FUSE connection of @dev through fusectl; 0, or -errno (-ENOENT:
 * fusectl not mounted, or no such connection). */
int emergency_abort_fuse_connection(dev_t dev);
/* Start time of @pid (field 22 of /proc/PID/stat), 0 if gone or a zombie. */
uint64_t emergency_proc_start_time(pid_t pid);
