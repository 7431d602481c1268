/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The emergency cleanup of emergency.h. Everything from emergency_run()
 * down is async-signal-safe: system calls on static memory, no malloc, no
 * stdio, no locks. The registration side runs in normal context.
 */

#include "emergency.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, uint64_t)
#endif
#ifndef STATX_ATTR_MOUNT_ROOT
#define STATX_ATTR_MOUNT_ROOT 0x00002000
#endif

#define MAX_ENTRIES 4096
#define ENTRY_PATH_MAX 512

typedef struct Entry {
        volatile sig_atomic_t kind; /* 0: free; written last when adding, first when forgetting */
        bool is_child, term_first;
        volatile sig_atomic_t reaped; /* cleanup state of a child */
        pid_t pid;
        uint64_t start_time; /* EMERGENCY_PID of a non-child */
        uint32_t number;
        uint64_t diskseq;
        dev_t dev;           /* EMERGENCY_FUSE */
        char path[ENTRY_PATH_MAX];
} Entry;

/* What the test process tells the janitor, one datagram per change. */
typedef struct JanitorRecord {
        uint32_t op; /* 'a': add, 'f': forget */
        int32_t id;
        Entry entry;
} JanitorRecord;

static Entry entries[MAX_ENTRIES];
static int n_entries; /* high-water mark */
static pid_t owner;
static volatile sig_atomic_t cleaning;
static int janitor_fd = -1;
static pid_t janitor_pid;
static bool handlers_installed;
static struct sigaction old_actions[NSIG];
static char alarm_message[512];

static const int fatal_signals[] = { SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
                                     SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGALRM };

/* ---- async-signal-safe helpers ----------------------------------------- */

static void say(const char *s) {
        ssize_t n = write(STDERR_FILENO, s, strlen(s));
        (void) n;
}

static char *utoa(uint64_t v, char *buf /* >= 21 */) {
        char *p = buf + 20;
        *p = 0;
        do
                *--p = (char) ('0' + v % 10);
        while ((v /= 10) && p > buf);
        return p;
}

static void say_count(unsigned n, const char *what, bool *first) {
        char buf[21];
        if (n == 0)
                return;
        say(*first ? " " : ", ");
        say(utoa(n, buf));
        say(" ");
        say(what);
        *first = false;
}

static void sleep_ms(long ms) {
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Joins @a and @b into @out (size @size); false if it does not fit. */
static bool join(char *out, size_t size, const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        if (la + lb + 1 > size)
                return false;
        memcpy(out, a, la);
        memcpy(out + la, b, lb + 1);
        return true;
}

struct dirent64_raw {
        uint64_t d_ino;
        int64_t d_off;
        unsigned short d_reclen;
        unsigned char d_type;
        char d_name[];
};

static bool is_dot(const char *n) {
        return n[0] == '.' && (n[1] == 0 || (n[1] == '.' && n[2] == 0));
}

static ssize_t read_file(const char *path, char *buf, size_t size) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        ssize_t n, total = 0;

        if (fd < 0)
                return -errno;
        while ((size_t) total < size - 1) {
                n = read(fd, buf + total, size - 1 - (size_t) total);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                total += n;
        }
        close(fd);
        buf[total] = 0;
        return total;
}

uint64_t emergency_proc_start_time(pid_t pid) {
        char path[40], buf[1024], digits[21];
        const char *p = NULL;
        ssize_t n;
        uint64_t v = 0;
        int field = 2;

        if (pid <= 0)
                return 0;
        if (!join(path, sizeof path, "/proc/", utoa((uint64_t) pid, digits)) ||
            !join(path + strlen(path), sizeof path - strlen(path), "/stat", ""))
                return 0;
        n = read_file(path, buf, sizeof buf);
        if (n <= 0)
                return 0;
        /* comm (field 2) may hold spaces and parentheses: start after the last ')'. */
        for (ssize_t i = n - 1; i >= 0; i--)
                if (buf[i] == ')') {
                        p = buf + i + 1;
                        break;
                }
        if (!p)
                return 0;
        while (*p && field < 22) {
                while (*p == ' ')
                        p++;
                field++;
                if (field == 3 && (*p == 'Z' || *p == 'X'))
                        return 0; /* dead, not yet reaped */
                if (field == 22)
                        break;
                while (*p && *p != ' ')
                        p++;
        }
        if (field != 22)
                return 0;
        for (; *p >= '0' && *p <= '9'; p++)
                v = v * 10 + (uint64_t) (*p - '0');
        return v;
}

static int open_loop(uint32_t number) {
        char path[32], digits[21];
        if (!join(path, sizeof path, "/dev/loop", utoa(number, digits)))
                return -1;
        return open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
}

unsigned emergency_detach_loops_under(const char *dir) {
        char buf[4096] __attribute__((aligned(8)));
        size_t dlen = strlen(dir);
        unsigned count = 0;
        int sysblock;

        while (dlen > 1 && dir[dlen - 1] == '/')
                dlen--;
        if (dlen <= 1 || dlen > 1024)
                return 0; /* never "everything under /" */
        sysblock = open("/sys/block", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (sysblock < 0)
                return 0;

        for (;;) {
                long n = syscall(SYS_getdents64, sysblock, buf, sizeof buf);
                if (n <= 0)
                        break;
                for (long off = 0; off < n;) {
                        struct dirent64_raw *d = (struct dirent64_raw *) (buf + off);
                        char path[128], backing[4096];
                        ssize_t got;
                        int fd;

                        off += d->d_reclen;
                        if (strncmp(d->d_name, "loop", 4) != 0 || strlen(d->d_name) > 64)
                                continue;
                        if (!join(path, sizeof path, d->d_name, "/loop/backing_file"))
                                continue;
                        fd = openat(sysblock, path, O_RDONLY | O_CLOEXEC);
                        if (fd < 0)
                                continue; /* not attached */
                        got = read(fd, backing, sizeof backing - 1);
                        close(fd);
                        if (got <= 0 || (size_t) got <= dlen || memcmp(backing, dir, dlen) != 0 ||
                            backing[dlen] != '/')
                                continue;

                        if (!join(path, sizeof path, "/dev/", d->d_name))
                                continue;
                        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
                        if (fd < 0)
                                continue;
                        /* Held open elsewhere, the kernel defers the detach
                         * to the last close (autoclear) and still says 0. */
                        if (ioctl(fd, LOOP_CLR_FD, 0) == 0)
                                count++;
                        close(fd);
                }
        }
        close(sysblock);
        return count;
}

/* A mount's root, seen from its parent directory, without asking the file
 * system mounted there anything (AT_STATX_DONT_SYNC: a FUSE server is not
 * asked for attributes; a hung one would never answer). */
static bool is_mount_root(int dfd, const char *name) {
        struct statx stx;

        if (syscall(SYS_statx, dfd, name, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC, STATX_TYPE,
                    &stx) < 0)
                return true; /* when in doubt, stay out */
        return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

/* Empties the directory @dfd, never following symlinks or entering mounts. */
static void rm_rf_children(int dfd, int depth) {
        char buf[2048] __attribute__((aligned(8)));

        if (depth > 32)
                return;
        /* Unlinking while reading a directory may make getdents skip
         * entries; go round until a pass removes nothing. */
        for (int pass = 0; pass < 64; pass++) {
                bool removed = false;

                if (lseek(dfd, 0, SEEK_SET) < 0)
                        return;
                for (;;) {
                        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
                        if (n <= 0)
                                break;
                        for (long off = 0; off < n;) {
                                struct dirent64_raw *d = (struct dirent64_raw *) (buf + off);
                                int sub;

                                off += d->d_reclen;
                                if (is_dot(d->d_name))
                                        continue;
                                if (unlinkat(dfd, d->d_name, 0) == 0) {
                                        removed = true;
                                        continue;
                                }
                                if (errno != EISDIR && errno != EPERM)
                                        continue;
                                if (is_mount_root(dfd, d->d_name))
                                        continue;
                                sub = openat(dfd, d->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                                if (sub < 0)
                                        continue;
                                rm_rf_children(sub, depth + 1);
                                close(sub);
                                if (unlinkat(dfd, d->d_name, AT_REMOVEDIR) == 0)
                                        removed = true;
                        }
                }
                if (!removed)
                        return;
        }
}

int emergency_rm_rf(const char *path) {
        struct statx stx;
        int dfd;

        if (syscall(SYS_statx, AT_FDCWD, path, AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC,
                    STATX_TYPE, &stx) < 0)
                return errno == ENOENT ? 0 : -errno;
        if (!S_ISDIR(stx.stx_mode))
                return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
        if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT))
                return -EBUSY;
        dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (dfd < 0)
                return errno == ENOENT ? 0 : -errno;
        rm_rf_children(dfd, 0);
        close(dfd);
        return rmdir(path) < 0 && errno != ENOENT ? -errno : 0;
}

int emergency_abort_fuse_connection(dev_t dev) {
        /* fusectl names a connection by the kernel's dev_t of its super
         * block: major << 20 | minor (fs/fuse/control.c). */
        uint64_t kdev = ((uint64_t) major(dev) << 20) | minor(dev);
        char path[96], digits[21];
        int fd;
        ssize_t n;

        if (!join(path, sizeof path, "/sys/fs/fuse/connections/", utoa(kdev, digits)) ||
            !join(path + strlen(path), sizeof path - strlen(path), "/abort", ""))
                return -ENAMETOOLONG;
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = write(fd, "1", 1);
        close(fd);
        return n == 1 ? 0 : -errno;
}

/* Does the file @path mention @needle? Reads in chunks, keeping the tail of
 * the last one so a match across two reads is found. */
static bool file_mentions(const char *path, const char *needle) {
        static char buf[8192];
        size_t nl = strlen(needle), keep = 0;
        bool found = false;
        int fd;

        if (nl == 0 || nl >= sizeof buf / 2)
                return false;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        while (!found) {
                ssize_t n = read(fd, buf + keep, sizeof buf - keep);
                size_t have;
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                have = keep + (size_t) n;
                for (size_t i = 0; i + nl <= have; i++)
                        if (memcmp(buf + i, needle, nl) == 0) {
                                found = true;
                                break;
                        }
                keep = have < nl - 1 ? have : nl - 1;
                memmove(buf, buf + have - keep, keep);
        }
        close(fd);
        return found;
}

static unsigned kill_tagged(const char *needle) {
        char buf[4096] __attribute__((aligned(8)));
        unsigned count = 0;
        pid_t self = getpid();
        int proc = open("/proc", O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (proc < 0)
                return 0;
        for (;;) {
                long n = syscall(SYS_getdents64, proc, buf, sizeof buf);
                if (n <= 0)
                        break;
                for (long off = 0; off < n;) {
                        struct dirent64_raw *d = (struct dirent64_raw *) (buf + off);
                        char path[64];
                        long pid = 0;
                        const char *c;

                        off += d->d_reclen;
                        for (c = d->d_name; *c >= '0' && *c <= '9'; c++)
                                pid = pid * 10 + (*c - '0');
                        /* Never the janitor: a fork of ours, it carries our
                         * command line and would match. */
                        if (*c || pid <= 1 || pid == self || pid == janitor_pid || pid > 1L << 30)
                                continue;
                        if ((join(path, sizeof path, "/proc/", d->d_name) &&
                             join(path + strlen(path), sizeof path - strlen(path), "/environ", "") &&
                             file_mentions(path, needle)) ||
                            (join(path, sizeof path, "/proc/", d->d_name) &&
                             join(path + strlen(path), sizeof path - strlen(path), "/cmdline", "") &&
                             file_mentions(path, needle)))
                                if (kill((pid_t) pid, SIGKILL) == 0)
                                        count++;
                }
        }
        close(proc);
        return count;
}

/* ---- the cleanup ----------------------------------------------------------- */

typedef struct Counts {
        unsigned fuse, killed, loops, nodes, mounts, paths;
} Counts;

static bool wanted(const Entry *e, unsigned kinds, unsigned kind) {
        return (unsigned) e->kind == kind && (kinds & kind);
}

static void janitor_tell(uint32_t op, int id);

static void forget_entry(int i) {
        entries[i].kind = 0;
        janitor_tell('f', i);
}

/* Still the process we registered (not a reused pid), and not reaped yet. */
static bool pid_is_ours(const Entry *e) {
        if (e->is_child)
                return !e->reaped;
        return e->start_time && emergency_proc_start_time(e->pid) == e->start_time;
}

/* Reaps a child that exited; true once it is gone (or was never ours). */
static bool reap_or_gone(Entry *e) {
        int st;
        pid_t r;

        if (!e->is_child)
                return !pid_is_ours(e);
        if (e->reaped)
                return true;
        r = waitpid(e->pid, &st, WNOHANG);
        if (r == 0 || (r < 0 && errno == EINTR))
                return false;
        e->reaped = true; /* or not our child after all (ECHILD) */
        return true;
}

static void cleanup_entries(unsigned kinds, Counts *c) {
        int control;

        /* A process waiting on a hung FUSE server cannot die, and umount
         * or rm of the mount would wait too: abort the connections first. */
        for (int i = 0; i < n_entries; i++)
                if (wanted(&entries[i], kinds, EMERGENCY_FUSE)) {
                        bool aborted = emergency_abort_fuse_connection(entries[i].dev) == 0;
                        /* MNT_FORCE aborts a FUSE connection too, fusectl
                         * mounted or not: do_umount() calls umount_begin
                         * (fuse_umount_begin(), which aborts) before it
                         * looks whether the mount is busy. */
                        if (entries[i].path[0] && (umount2(entries[i].path, MNT_FORCE) == 0 || errno == EBUSY))
                                aborted = true;
                        c->fuse += aborted;
                        forget_entry(i);
                }

        /* Those that clean up after themselves get SIGTERM and a second. */
        bool terminating = false;
        for (int i = 0; i < n_entries; i++)
                if (wanted(&entries[i], kinds, EMERGENCY_PID) && entries[i].term_first && pid_is_ours(&entries[i]))
                        terminating |= kill(entries[i].pid, SIGTERM) == 0;
        for (int tries = 0; terminating && tries < 100; tries++) {
                terminating = false;
                for (int i = 0; i < n_entries; i++)
                        if (wanted(&entries[i], kinds, EMERGENCY_PID) && entries[i].term_first)
                                terminating |= !reap_or_gone(&entries[i]);
                if (terminating)
                        sleep_ms(10);
        }
        for (int i = 0; i < n_entries; i++)
                if (wanted(&entries[i], kinds, EMERGENCY_PID) && pid_is_ours(&entries[i]))
                        c->killed += kill(entries[i].pid, SIGKILL) == 0;
        for (int i = 0; i < n_entries; i++)
                if (wanted(&entries[i], kinds, EMERGENCY_TAGGED))
                        c->killed += kill_tagged(entries[i].path);
        /* Reap our children, all within 5 s: one stuck in the kernel must
         * not hang the cleanup. */
        for (int tries = 0; tries < 500; tries++) {
                bool waiting = false;
                for (int i = 0; i < n_entries; i++)
                        if (wanted(&entries[i], kinds, EMERGENCY_PID) && entries[i].is_child)
                                waiting |= !reap_or_gone(&entries[i]);
                if (!waiting)
                        break;
                sleep_ms(10);
        }
        for (int i = 0; i < n_entries; i++)
                if (wanted(&entries[i], kinds, EMERGENCY_PID) || wanted(&entries[i], kinds, EMERGENCY_TAGGED))
                        forget_entry(i);

        for (int i = 0; i < n_entries; i++)
                if (wanted(&entries[i], kinds, EMERGENCY_LOOP)) {
                        int fd = open_loop(entries[i].number);
                        uint64_t seq = 0;
                        if (fd >= 0) {
                                /* Never touch a later attachment of the node. */
                                if (entries[i].diskseq == 0 ||
                                    (ioctl(fd, BLKGETDISKSEQ, &seq) == 0 && seq == entries[i].diskseq))
                                        c->loops += ioctl(fd, LOOP_CLR_FD, 0) == 0;
                                close(fd);
                        }
                        forget_entry(i);
                }
        for (int i = 0; i < n_entries; i++)
                if (wanted(&entries[i], kinds, EMERGENCY_LOOPS_UNDER)) {
                        c->loops += emergency_detach_loops_under(entries[i].path);
                        forget_entry(i);
                }

        control = -1;
        for (int i = 0; i < n_entries; i++)
                if (wanted(&entries[i], kinds, EMERGENCY_LOOP_NODE)) {
                        if (control < 0)
                                control = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
                        if (control >= 0)
                                c->nodes += ioctl(control, LOOP_CTL_REMOVE, (unsigned long) entries[i].number) >= 0;
                        forget_entry(i);
                }
        if (control >= 0)
                close(control);

        /* Last mounted first. */
        for (int i = n_entries - 1; i >= 0; i--)
                if (wanted(&entries[i], kinds, EMERGENCY_MOUNT)) {
                        c->mounts += umount2(entries[i].path, MNT_DETACH) == 0;
                        forget_entry(i);
                }
        for (int i = n_entries - 1; i >= 0; i--)
                if (wanted(&entries[i], kinds, EMERGENCY_PATH)) {
                        struct statx stx;
                        bool existed = syscall(SYS_statx, AT_FDCWD, entries[i].path,
                                               AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | AT_STATX_DONT_SYNC, 0,
                                               &stx) == 0;
                        if (emergency_rm_rf(entries[i].path) == 0 && existed)
                                c->paths++;
                        forget_entry(i);
                }
}

void emergency_cleanup(unsigned kinds) {
        Counts c = { 0 };

        if (getpid() != owner || cleaning)
                return;
        cleaning = 1;
        cleanup_entries(kinds, &c);
        cleaning = 0;
}

static void run_and_report(const char *why) {
        Counts c = { 0 };

        if (getpid() != owner || cleaning)
                return;
        cleaning = 1;
        cleanup_entries(EMERGENCY_ALL, &c);
        if (why && (c.fuse || c.killed || c.loops || c.nodes || c.mounts || c.paths)) {
                say("loopd-test emergency cleanup (");
                say(why);
                bool first = true;
                say("):");
                say_count(c.fuse, "FUSE connection(s) aborted", &first);
                say_count(c.killed, "process(es) killed", &first);
                say_count(c.loops, "loop device(s) detached", &first);
                say_count(c.nodes, "loop node(s) removed", &first);
                say_count(c.mounts, "mount(s) detached", &first);
                say_count(c.paths, "path(s) removed", &first);
                say("\n");
        }
        cleaning = 0;
}

void emergency_run(void) {
        run_and_report(NULL);
}

static void handler(int sig, siginfo_t *si, void *ctx) {
        int saved_errno = errno;
        char why[48], digits[21];

        if (sig == SIGALRM && alarm_message[0]) {
                say(alarm_message);
                say("\n");
        }
        join(why, sizeof why, "signal ", utoa((uint64_t) sig, digits));
        run_and_report(why);

        /* Hand the signal to whoever had it before (a sanitizer's handler,
         * or the default action). A fault raised by the CPU faults again on
         * return and reaches the old handler with its real context. */
        (void) sigaction(sig, &old_actions[sig], NULL);
        errno = saved_errno;
        if ((sig == SIGSEGV || sig == SIGBUS || sig == SIGILL || sig == SIGFPE) && si && si->si_code > 0)
                return;
        (void) raise(sig);
}

static void at_exit(void) {
        run_and_report("exit");
}

/* ---- the janitor ------------------------------------------------------------ */

static void janitor_tell(uint32_t op, int id) {
        JanitorRecord rec = { .op = op, .id = id };
        ssize_t n;

        if (janitor_fd < 0 || getpid() != owner)
                return;
        if (op == 'a')
                memcpy(&rec.entry, &entries[id], sizeof rec.entry);
        do
                n = send(janitor_fd, &rec, sizeof rec, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t) sizeof rec) {
                /* The janitor is gone: say so once, and go on without it. */
                say("loopd-test emergency: the janitor does not answer; cleanup after SIGKILL is lost\n");
                close(janitor_fd);
                janitor_fd = -1;
        }
}

static __attribute__((noreturn)) void janitor_main(int fd) {
        static const int ignored[] = { SIGTERM, SIGINT, SIGHUP, SIGALRM, SIGPIPE, SIGQUIT };
        JanitorRecord rec;
        bool loops_under = false;
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);

        (void) setsid();
        for (size_t i = 0; i < sizeof ignored / sizeof *ignored; i++)
                signal(ignored[i], SIG_IGN);
        for (size_t i = 0; i < sizeof fatal_signals / sizeof *fatal_signals; i++)
                if (fatal_signals[i] != SIGTERM && fatal_signals[i] != SIGINT && fatal_signals[i] != SIGHUP &&
                    fatal_signals[i] != SIGALRM && fatal_signals[i] != SIGQUIT)
                        signal(fatal_signals[i], SIG_DFL);
        /* Hold nothing of the test's: no bus socket, no pipe of meson's
         * (meson waits for EOF on the test's stdout and stderr). */
        if (null >= 0) {
                dup2(null, 0);
                dup2(null, 1);
                dup2(null, 2);
        }
        if (dup2(fd, 3) < 0)
                _exit(1);
        (void) syscall(SYS_close_range, 4U, ~0U, 0U);
        janitor_pid = getpid();
        if (send(3, &janitor_pid, sizeof janitor_pid, MSG_NOSIGNAL) != sizeof janitor_pid)
                _exit(1);

        for (;;) {
                ssize_t n = recv(3, &rec, sizeof rec, 0);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n != (ssize_t) sizeof rec)
                        break; /* EOF: the test process is gone */
                if (rec.id < 0 || rec.id >= MAX_ENTRIES)
                        continue;
                if (rec.op == 'a') {
                        entries[rec.id] = rec.entry;
                        if (rec.id >= n_entries)
                                n_entries = rec.id + 1;
                } else if (rec.op == 'f')
                        entries[rec.id].kind = 0;
        }

        owner = getpid();
        for (int i = 0; i < n_entries; i++) {
                loops_under |= entries[i].kind == EMERGENCY_LOOPS_UNDER;
                /* The test's children are not ours: by start time. */
                entries[i].is_child = false;
        }
        if (loops_under) {
                /* The test's children (loopd) got SIGKILL from
                 * PR_SET_PDEATHSIG at the moment the test died: one may have
                 * been attaching a device. Look again a few times. */
                for (int round = 0; round < 4; round++) {
                        for (int i = 0; i < n_entries; i++)
                                if (entries[i].kind == EMERGENCY_LOOPS_UNDER)
                                        (void) emergency_detach_loops_under(entries[i].path);
                        sleep_ms(100);
                }
        }
        emergency_run();
        _exit(0);
}

static int start_janitor(void) {
        int sv[2], st;
        pid_t pid;

        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
                return -errno;
        /* The largest record must go in one datagram. */
        pid = fork();
        if (pid < 0) {
                int r = -errno;
                close(sv[0]);
                close(sv[1]);
                return r;
        }
        if (pid == 0) {
                /* Double fork: the janitor is nobody's child here, so tests
                 * that check they left no child see none, and it outlives
                 * us without becoming a zombie of ours. */
                close(sv[0]);
                if (fork() == 0)
                        janitor_main(sv[1]);
                _exit(0);
        }
        close(sv[1]);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        /* Its first word is its pid: tagged-process sweeps must spare it. */
        if (recv(sv[0], &janitor_pid, sizeof janitor_pid, 0) != sizeof janitor_pid) {
                close(sv[0]);
                return -ECHILD;
        }
        janitor_fd = sv[0];
        /* Whatever was registered before the janitor existed. */
        for (int i = 0; i < n_entries; i++)
                if (entries[i].kind)
                        janitor_tell('a', i);
        return 0;
}

/* ---- registration -------------------------------------------------------------- */

int emergency_init(unsigned flags) {
        if (!handlers_installed) {
                /* A stack overflow must still reach the cleanup. A sanitizer
                 * may have set up an alternate stack already; keep it then. */
                static char altstack[256 * 1024] __attribute__((aligned(16)));
                stack_t ss = { .ss_sp = altstack, .ss_size = sizeof altstack }, current;

                owner = getpid();
                if (sigaltstack(NULL, &current) == 0 && (current.ss_flags & SS_DISABLE))
                        (void) sigaltstack(&ss, NULL);
                for (size_t i = 0; i < sizeof fatal_signals / sizeof *fatal_signals; i++) {
                        struct sigaction sa = {
                                .sa_sigaction = handler,
                                .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER,
                        };
                        sigemptyset(&sa.sa_mask);
                        if (sigaction(fatal_signals[i], &sa, &old_actions[fatal_signals[i]]) < 0)
                                return -errno;
                }
                if (atexit(at_exit) != 0)
                        return -ENOMEM;
                handlers_installed = true;
        }
        if ((flags & EMERGENCY_INIT_JANITOR) && janitor_fd < 0)
                return start_janitor();
        return 0;
}

static int add(const Entry *e) {
        int id = -1;

        if (!handlers_installed)
                return -ENOTCONN; /* emergency_init() first */
        if (getpid() != owner)
                return -EPERM;
        for (int i = 0; i < n_entries; i++)
                if (entries[i].kind == 0) {
                        id = i;
                        break;
                }
        if (id < 0) {
                if (n_entries >= MAX_ENTRIES)
                        return -ENOSPC;
                id = n_entries;
        }
        /* Everything before the kind: the handler may run between any two
         * statements and must see a whole entry or none. */
        entries[id].is_child = e->is_child;
        entries[id].term_first = e->term_first;
        entries[id].reaped = 0;
        entries[id].pid = e->pid;
        entries[id].start_time = e->start_time;
        entries[id].number = e->number;
        entries[id].diskseq = e->diskseq;
        entries[id].dev = e->dev;
        memcpy(entries[id].path, e->path, sizeof entries[id].path);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        entries[id].kind = e->kind;
        if (id >= n_entries) {
                __atomic_signal_fence(__ATOMIC_SEQ_CST);
                n_entries = id + 1;
        }
        janitor_tell('a', id);
        return id;
}

static int set_path(Entry *e, const char *path) {
        size_t len = path ? strlen(path) : 0;
        if (len == 0)
                return -EINVAL;
        if (len >= sizeof e->path)
                return -ENAMETOOLONG;
        memcpy(e->path, path, len + 1);
        return 0;
}

int emergency_add_pid(pid_t pid, unsigned flags) {
        Entry e = {
                .kind = EMERGENCY_PID,
                .pid = pid,
                .is_child = flags & EMERGENCY_PID_CHILD,
                .term_first = flags & EMERGENCY_PID_TERM_FIRST,
        };

        if (pid <= 0 || pid == getpid())
                return -EINVAL;
        /* For a child too: the janitor, not its parent, goes by it. */
        e.start_time = emergency_proc_start_time(pid);
        if (e.start_time == 0 && !e.is_child)
                return -ESRCH;
        return add(&e);
}

int emergency_add_tagged(const char *needle) {
        Entry e = { .kind = EMERGENCY_TAGGED };
        int r = set_path(&e, needle);
        return r < 0 ? r : add(&e);
}

int emergency_add_fuse(dev_t dev, const char *mount_path) {
        Entry e = { .kind = EMERGENCY_FUSE, .dev = dev };
        int r = mount_path ? set_path(&e, mount_path) : 0;
        return r < 0 ? r : add(&e);
}

int emergency_add_loop(uint32_t number, uint64_t diskseq) {
        Entry e = { .kind = EMERGENCY_LOOP, .number = number, .diskseq = diskseq };
        return add(&e);
}

int emergency_add_loops_under(const char *dir) {
        Entry e = { .kind = EMERGENCY_LOOPS_UNDER };
        int r = set_path(&e, dir);
        if (r >= 0 && (dir[0] != '/' || dir[1] == 0))
                r = -EINVAL;
        return r < 0 ? r : add(&e);
}

int emergency_add_loop_node(uint32_t number) {
        Entry e = { .kind = EMERGENCY_LOOP_NODE, .number = number };
        return add(&e);
}

int emergency_add_mount(const char *path) {
        Entry e = { .kind = EMERGENCY_MOUNT };
        int r = set_path(&e, path);
        return r < 0 ? r : add(&e);
}

int emergency_add_path(const char *path) {
        Entry e = { .kind = EMERGENCY_PATH };
        int r = set_path(&e, path);
        if (r >= 0 && (path[0] != '/' || path[1] == 0))
                r = -EINVAL; /* absolute, and never / itself */
        return r < 0 ? r : add(&e);
}

void emergency_forget(int id) {
        if (id < 0 || id >= n_entries || getpid() != owner)
                return;
        forget_entry(id);
}

void emergency_forget_pid(pid_t pid) {
        for (int i = 0; i < n_entries; i++)
                if (entries[i].kind == EMERGENCY_PID && entries[i].pid == pid)
                        emergency_forget(i);
}

void emergency_forget_loop(uint32_t number, uint64_t diskseq) {
        for (int i = 0; i < n_entries; i++)
                if (entries[i].kind == EMERGENCY_LOOP && entries[i].number == number &&
                    entries[i].diskseq == diskseq)
                        emergency_forget(i);
}

pid_t emergency_janitor_pid(void) {
        return janitor_fd >= 0 ? janitor_pid : 0;
}

void emergency_after_fork(void) {
        owner = getpid();
        n_entries = 0;
        memset(entries, 0, sizeof entries);
        if (janitor_fd >= 0) {
                close(janitor_fd);
                janitor_fd = -1;
        }
}

void emergency_set_alarm_message(const char *message) {
        size_t len = message ? strlen(message) : 0;
        if (len >= sizeof alarm_message)
                len = sizeof alarm_message - 1;
        alarm_message[0] = 0;
        memcpy(alarm_message, message ? message : "", len);
        alarm_message[len] = 0;
}
