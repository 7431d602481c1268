/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loopctl-with.h"
#include "util.h"

static void sleep_usec(int64_t usec) {
        struct timespec ts = { .tv_sec = usec / 1000000, .tv_nsec = (usec % 1000000) * 1000 };

        (void) nanosleep(&ts, NULL);
}

/* ---- The process tree below us ------------------------------------------- */

/* ppid from /proc/PID/stat: the field after the ")" that ends comm, which
 * may itself hold ")" and spaces, hence the last one. */
static pid_t read_ppid(const char *pid) {
        char path[64], buf[512];
        const char *p;
        ssize_t n;
        int fd;
        char state;
        int ppid;

        snprintf(path, sizeof(path), "/proc/%s/stat", pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -1;
        n = read(fd, buf, sizeof(buf) - 1);
        (void) close(fd);
        if (n <= 0)
                return -1;
        buf[n] = '\0';
        p = strrchr(buf, ')');
        if (!p || sscanf(p + 1, " %c %d", &state, &ppid) != 2)
                return -1;
        return (pid_t) ppid;
}

/*
 * Sends sig to every descendant of ours; returns how many there were.
 * Read from /proc, so a process can exit and its PID be reused between the
 * read and the kill; a descendant's PID is pinned as long as its parent has
 * not reaped it, which for our direct children is us, and the window for
 * the rest is one scan.
 */
static size_t signal_descendants(int sig) {
        pid_t *pids = NULL, *ppids = NULL;
        size_t n = 0, allocated = 0, found = 0;
        pid_t *tree = NULL;
        size_t n_tree = 0;
        struct dirent *de;
        DIR *d = opendir("/proc");

        if (!d)
                return 0;
        while ((de = readdir(d))) {
                char *end;
                long v = strtol(de->d_name, &end, 10);
                pid_t ppid;

                if (*end || v <= 0)
                        continue;
                ppid = read_ppid(de->d_name);
                if (ppid < 0)
                        continue;
                if (n == allocated) {
                        size_t k = allocated ? allocated * 2 : 256;
                        pid_t *a = reallocarray(pids, k, sizeof(pid_t));
                        if (!a)
                                break;
                        pids = a;
                        a = reallocarray(ppids, k, sizeof(pid_t));
                        if (!a)
                                break;
                        ppids = a;
                        allocated = k;
                }
                pids[n] = (pid_t) v;
                ppids[n] = ppid;
                n++;
        }
        closedir(d);

        /* Breadth first from ourselves. */
        tree = calloc(n + 1, sizeof(pid_t));
        if (tree) {
                tree[n_tree++] = getpid();
                for (size_t head = 0; head < n_tree; head++)
                        for (size_t i = 0; i < n; i++)
                                if (ppids[i] == tree[head] && n_tree <= n)
                                        tree[n_tree++] = pids[i];
                for (size_t i = 1; i < n_tree; i++)
                        if (kill(tree[i], sig) == 0)
                                found++;
        }
        free(tree);
        free(pids);
        free(ppids);
        return found;
}

static void reap_children(void) {
        while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
}

/* SIGTERM to everything below us, SIGKILL to what is left after the grace
 * time, until nothing is. */
static void stop_descendants(void) {
        uint64_t deadline = now_usec() + (uint64_t) WITH_GRACE_SEC * 1000000;

        reap_children();
        if (signal_descendants(SIGTERM) == 0)
                return;
        while (now_usec() < deadline) {
                reap_children();
                if (signal_descendants(0) == 0)
                        return;
                sleep_usec(20 * 1000);
        }
        /* A process may fork while we kill; go round until none is left,
         * each round reaping what died (orphans come to us: subreaper). */
        for (unsigned round = 0; round < 1000; round++) {
                reap_children();
                if (signal_descendants(SIGKILL) == 0)
                        return;
                sleep_usec(10 * 1000);
        }
}

/* ---- The guardian --------------------------------------------------------- */

/* Closes what loopctl opened (all of it close-on-exec, the bus connection
 * first of all, which must close when loopctl dies, not when we do), keeps
 * what the user handed loopctl for CMD (no close-on-exec) and `keep`. */
static void close_loopctl_fds(int keep) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        int *fds = NULL;
        size_t n = 0;

        if (!d)
                return;
        while ((de = readdir(d))) {
                int fd = atoi(de->d_name), fl;
                int *a;

                if (de->d_name[0] == '.' || fd == dirfd(d) || fd == keep)
                        continue;
                fl = fcntl(fd, F_GETFD);
                if (fl < 0 || !(fl & FD_CLOEXEC))
                        continue;
                a = reallocarray(fds, n + 1, sizeof(int));
                if (!a)
                        break;
                fds = a;
                fds[n++] = fd;
        }
        closedir(d);
        for (size_t i = 0; i < n; i++)
                (void) close(fds[i]);
        free(fds);
}

static void exec_command(char *const *cmd, const sigset_t *mask) {
        struct sigaction dfl = { .sa_handler = SIG_DFL };
        int e;

        /* CMD gets the terminal's signals and an empty mask, as if run by
         * the shell. */
        (void) sigaction(SIGINT, &dfl, NULL);
        (void) sigaction(SIGQUIT, &dfl, NULL);
        (void) sigaction(SIGTERM, &dfl, NULL);
        (void) sigaction(SIGHUP, &dfl, NULL);
        (void) sigprocmask(SIG_SETMASK, mask, NULL);
        execvp(cmd[0], cmd);
        e = errno;
        fprintf(stderr, "loopctl: %s: %s\n", cmd[0], strerror(e));
        _exit(e == ENOENT ? 127 : 126);
}

static int status_code(int status) {
        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return 1;
}

_Noreturn static void guardian(char *const *cmd, int lifeline, const sigset_t *cmd_mask) {
        sigset_t mask;
        int sfd, status = 0;
        pid_t pid;
        bool done = false;

        (void) prctl(PR_SET_CHILD_SUBREAPER, 1);
        close_loopctl_fds(lifeline);

        sigemptyset(&mask);
        sigaddset(&mask, SIGCHLD);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        (void) sigprocmask(SIG_BLOCK, &mask, NULL);
        sfd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sfd < 0) {
                fprintf(stderr, "loopctl: cannot watch the command: %s\n", strerror(errno));
                _exit(1);
        }

        pid = fork();
        if (pid < 0) {
                fprintf(stderr, "loopctl: cannot run %s: %s\n", cmd[0], strerror(errno));
                _exit(1);
        }
        if (pid == 0)
                exec_command(cmd, cmd_mask);

        while (!done) {
                struct pollfd p[2] = {
                        { .fd = sfd, .events = POLLIN },
                        { .fd = lifeline, .events = POLLIN },
                };

                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[1].revents) {
                        /* loopctl is gone (only it writes, and it never
                         * does): the device is going, and so must CMD. */
                        stop_descendants();
                        _exit(128 + SIGKILL);
                }
                if (p[0].revents & POLLIN) {
                        struct signalfd_siginfo si;
                        pid_t k;
                        int st;

                        if (read(sfd, &si, sizeof(si)) != sizeof(si))
                                continue;
                        if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGHUP) {
                                (void) kill(pid, (int) si.ssi_signo);
                                continue;
                        }
                        /* SIGCHLD: CMD, or an orphan of its that came to us. */
                        while ((k = waitpid(-1, &st, WNOHANG)) > 0)
                                if (k == pid) {
                                        status = st;
                                        done = true;
                                }
                }
        }
        /* CMD is done; what it left behind is not to outlive the device. */
        stop_descendants();
        _exit(status_code(status));
}

/* ---- loopctl's side --------------------------------------------------------- */

static volatile sig_atomic_t guardian_pid = 0;

static void forward_signal(int sig) {
        if (guardian_pid > 0)
                (void) kill((pid_t) guardian_pid, sig);
}

int with_run_command(char *const *cmd, int *ret_status) {
        static const int forwarded[] = { SIGTERM, SIGHUP };
        struct sigaction ign = { .sa_handler = SIG_IGN }, fwd = { .sa_handler = forward_signal };
        struct sigaction old_int, old_quit, old_fwd[ELEMENTSOF(forwarded)];
        sigset_t block, saved;
        int lifeline[2], status = 0, r = 0;
        pid_t pid;

        if (pipe2(lifeline, O_CLOEXEC) < 0)
                return negative_errno();

        /* If the guardian itself is killed, CMD's tree comes to us, and we
         * stop it as the guardian would have. */
        (void) prctl(PR_SET_CHILD_SUBREAPER, 1);

        /* Like system(3): ^C and ^\ are for CMD, which shares our terminal.
         * SIGTERM/SIGHUP sent to us alone are passed on, held back until the
         * guardian's pid is known. */
        sigemptyset(&block);
        for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
                sigaddset(&block, forwarded[i]);
        sigprocmask(SIG_BLOCK, &block, &saved);
        sigaction(SIGINT, &ign, &old_int);
        sigaction(SIGQUIT, &ign, &old_quit);
        for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
                sigaction(forwarded[i], &fwd, &old_fwd[i]);

        fflush(NULL);
        pid = fork();
        if (pid == 0) {
                (void) close(lifeline[1]);
                guardian(cmd, lifeline[0], &saved);
        }
        (void) close(lifeline[0]);
        if (pid < 0)
                r = negative_errno();
        else {
                guardian_pid = pid;
                sigprocmask(SIG_SETMASK, &saved, NULL);
                while (waitpid(pid, &status, 0) < 0)
                        if (errno != EINTR) {
                                r = negative_errno();
                                break;
                        }
                guardian_pid = 0;
                if (r == 0 && WIFSIGNALED(status))
                        stop_descendants();
        }
        (void) close(lifeline[1]);

        sigprocmask(SIG_SETMASK, &saved, NULL);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGQUIT, &old_quit, NULL);
        for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
                sigaction(forwarded[i], &old_fwd[i], NULL);
        (void) prctl(PR_SET_CHILD_SUBREAPER, 0);
        if (r < 0)
                return r;
        *ret_status = status_code(status);
        return 0;
}
