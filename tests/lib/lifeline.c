/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopd-test-lifeline: ties a bus-activated service to the test's life.
 *
 *   loopd-test-lifeline [--status-dir=DIR] FIFO -- COMMAND [ARG...]
 *
 * dbus-daemon starts activated services through a babysitter process that
 * exits as soon as the service owns its name, so PR_SET_PDEATHSIG set in the
 * service would fire right then, and nothing ties the service to the test.
 * This wrapper is what dbus-daemon starts instead: it runs COMMAND as its
 * child with PR_SET_PDEATHSIG(SIGKILL) on itself, and exits when
 *   - FIFO reports hang-up: the test holds the only writer and has closed
 *     it or died; the child dies with us;
 *   - COMMAND exits: its raw wait status is written to DIR/PID.status so the
 *     test can assert a clean exit (a sanitizer report makes it non-zero).
 * Signals for the service go to COMMAND's pid, which is what the bus reports
 * as the name's owner. No GLib: it runs beside the daemon, not the test.
 */

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void write_status(const char *dir, pid_t pid, int status) {
        char path[4096], tmp[4096], text[32];
        int fd, n;

        if (!dir)
                return;
        snprintf(path, sizeof path, "%s/%d.status", dir, (int) pid);
        snprintf(tmp, sizeof tmp, "%s/.%d.status.tmp", dir, (int) pid);
        n = snprintf(text, sizeof text, "%d\n", status);
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || write(fd, text, (size_t) n) != n || close(fd) < 0 || rename(tmp, path) < 0)
                fprintf(stderr, "loopd-test-lifeline: writing %s: %s\n", path, strerror(errno));
}

int main(int argc, char **argv) {
        const char *status_dir = NULL, *fifo;
        pid_t self = getpid(), child;
        int i = 1, lifeline, pidfd, status;

        if (i < argc && strncmp(argv[i], "--status-dir=", 13) == 0)
                status_dir = argv[i++] + 13;
        if (argc - i < 3 || strcmp(argv[i + 1], "--") != 0) {
                fprintf(stderr, "usage: loopd-test-lifeline [--status-dir=DIR] FIFO -- COMMAND [ARG...]\n");
                return 2;
        }
        fifo = argv[i];

        /* Non-blocking: the test opened it read-write, so there is a writer
         * unless the test is already gone. */
        lifeline = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        if (lifeline < 0) {
                fprintf(stderr, "loopd-test-lifeline: %s: %s\n", fifo, strerror(errno));
                return 2;
        }

        child = fork();
        if (child < 0)
                return 2;
        if (child == 0) {
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() != self)
                        _exit(127);
                execvp(argv[i + 2], argv + i + 2);
                fprintf(stderr, "loopd-test-lifeline: exec %s: %s\n", argv[i + 2], strerror(errno));
                _exit(127);
        }

        pidfd = (int) syscall(SYS_pidfd_open, child, 0);
        if (pidfd < 0) {
                fprintf(stderr, "loopd-test-lifeline: pidfd_open: %s\n", strerror(errno));
                kill(child, SIGKILL);
                return 2;
        }

        for (;;) {
                struct pollfd p[2] = { { .fd = lifeline, .events = POLLIN }, { .fd = pidfd, .events = POLLIN } };

                if (poll(p, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        break;
                }
                if (p[1].revents)
                        break; /* the child exited */
                if (p[0].revents & (POLLHUP | POLLERR))
                        break; /* the test is gone */
                if (p[0].revents & POLLIN) {
                        char buf[64];
                        if (read(lifeline, buf, sizeof buf) == 0)
                                break;
                }
        }

        /* Either way the child goes now; only its own exit is reported. */
        if (waitpid(child, &status, WNOHANG) == child) {
                write_status(status_dir, child, status);
                return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
        }
        kill(child, SIGKILL);
        (void) waitpid(child, &status, 0);
        return 1;
}
