/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdbool.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "path-opener.h"

struct PathOpen {
        int sock;
        sd_event_source *child, *io, *timer;
        path_open_done_t done;
        void *userdata;
};

static void finish(PathOpen *p, int r, int fd);
static bool read_reply(PathOpen *p);

static int reap_child(sd_event_source *s, const siginfo_t *si, void *userdata) {
        PathOpen *p = userdata;

        if (p) {
                /* Exited before it answered (it crashed): that is the answer. */
                p->child = sd_event_source_unref(p->child);
                /* It may have answered and exited before we read the answer. */
                if (!read_reply(p))
                        finish(p, -EIO, -1);
                return 0;
        }
        /* Released by a finished PathOpen: sd-event reaped it. Turning
         * floating off drops the loop's (last) reference: the source goes
         * once this dispatch returns (sd-event holds it meanwhile). */
        (void) sd_event_source_set_floating(s, false);
        return 0;
}

/* In the child only: async-signal-safe calls, then _exit(). */
_Noreturn static void helper(int sock, const char *path, int flags, uid_t uid, gid_t gid,
                             const gid_t *groups, size_t n_groups) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = { 0 };
        int err = 0, fd;
        struct iovec iov = { &err, sizeof(err) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Hold nothing of loopd's before becoming the caller: a fork keeps
         * every fd loopd has, the backing files of other callers' pending
         * requests among them, and a reopen through /proc/self/fd/N checks
         * only the file's own mode, never the directories above it. Only
         * the socket to loopd stays. */
        if ((sock > 0 && close_range(0, (unsigned) sock - 1, 0) < 0) || close_range((unsigned) sock + 1, ~0U, 0) < 0) {
                err = errno;
                goto send;
        }
        /* Drop everything in the order that keeps the right to drop: groups
         * first, gid, then uid; verify that root is really gone. */
        if (setgroups(n_groups, groups) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0 ||
            (uid != 0 && (setuid(0) == 0 || geteuid() == 0))) {
                err = EPERM;
                goto send;
        }
        fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0) {
                err = errno;
                goto send;
        }
        mh.msg_control = &control;
        mh.msg_controllen = sizeof(control.buf);
        CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
        CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
        CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &fd, sizeof(int));
send:
        (void) sendmsg(sock, &mh, MSG_NOSIGNAL);
        _exit(0);
}

static void finish(PathOpen *p, int r, int fd) {
        path_open_done_t done = p->done;
        void *userdata = p->userdata;

        p->done = NULL;
        path_open_cancel(p);
        done(r, fd, userdata);
}

/* True when the PathOpen finished (and is freed). */
static bool read_reply(PathOpen *p) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = { 0 };
        int err = 0, fd = -1;
        struct iovec iov = { &err, sizeof(err) };
        struct msghdr mh = {
                .msg_iov = &iov, .msg_iovlen = 1,
                .msg_control = &control, .msg_controllen = sizeof(control.buf),
        };
        ssize_t n;

        n = recvmsg(p->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return false;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
                    c->cmsg_len == CMSG_LEN(sizeof(int)))
                        memcpy(&fd, CMSG_DATA(c), sizeof(int));
        if (n != (ssize_t) sizeof(err) || (mh.msg_flags & MSG_CTRUNC)) {
                safe_close(fd);
                finish(p, -EIO, -1);
        } else if (fd < 0)
                finish(p, err > 0 ? -err : -EIO, -1);
        else
                finish(p, 0, fd);
        return true;
}

static int on_reply(sd_event_source *s, int sock, uint32_t revents, void *userdata) {
        (void) read_reply(userdata);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        finish(userdata, -ETIMEDOUT, -1);
        return 0;
}

int path_open_as(sd_event *e, const char *path, int flags, uid_t uid, gid_t gid,
                 const gid_t *groups, size_t n_groups, uint64_t timeout_usec,
                 path_open_done_t done, void *userdata, PathOpen **ret) {
        _cleanup_(freep) PathOpen *p = NULL;
        int pair[2], r;
        uint64_t now;
        pid_t pid;

        if ((flags & O_ACCMODE) == O_WRONLY || (flags & ~O_ACCMODE) != 0)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
                return negative_errno();

        pid = fork();
        if (pid < 0) {
                r = negative_errno();
                safe_close(pair[0]);
                safe_close(pair[1]);
                return r;
        }
        if (pid == 0) {
                close(pair[0]);
                helper(pair[1], path, flags, uid, gid, groups, n_groups);
        }
        safe_close(pair[1]);
        p->sock = pair[0];
        p->done = done;
        p->userdata = userdata;

        r = sd_event_add_child(e, &p->child, pid, WEXITED, reap_child, p);
        if (r < 0) {
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0); /* just forked, SIGKILLed: returns at once */
                goto fail;
        }
        r = sd_event_add_io(e, &p->io, p->sock, EPOLLIN, on_reply, p);
        if (r < 0)
                goto fail;
        r = sd_event_now(e, CLOCK_MONOTONIC, &now);
        if (r < 0)
                goto fail;
        r = sd_event_add_time(e, &p->timer, CLOCK_MONOTONIC, now + timeout_usec, 0, on_timeout, p);
        if (r < 0)
                goto fail;
        *ret = TAKE_PTR(p);
        return 0;
fail:
        p->done = NULL;
        path_open_cancel(TAKE_PTR(p));
        return r;
}

PathOpen *path_open_cancel(PathOpen *p) {
        if (!p)
                return NULL;
        if (p->child) {
                /* Through sd-event (pidfd where it has one): never signals a
                 * reaped, recycled pid. Then let the source reap it whenever
                 * it dies; a helper stuck in the kernel (D state) must not
                 * make us wait, so nothing here waits. */
                (void) sd_event_source_send_child_signal(p->child, SIGKILL, NULL, 0);
                (void) sd_event_source_set_userdata(p->child, NULL);
                (void) sd_event_source_set_floating(p->child, true);
                p->child = sd_event_source_unref(p->child);
        }
        sd_event_source_disable_unref(p->io);
        sd_event_source_disable_unref(p->timer);
        safe_close(p->sock);
        free(p);
        return NULL;
}
