/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/openat2.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "caps.h"
#include "path-opener.h"
#include "uid-count.h"

struct PathOpener {
        sd_event *event;
        unsigned max_per_uid, max_total, total;
        UidCounts counts;
        struct HelperRef *orphans; /* cancelled helpers not reaped yet */
};

/* The child source's userdata: outlives its PathOpen when that is
 * cancelled, until the helper is reaped. */
typedef struct HelperRef {
        PathOpener *po;
        uid_t uid;
        PathOpen *p; /* NULL once cancelled */
        struct HelperRef *prev, *next; /* in po->orphans once cancelled */
} HelperRef;

struct PathOpen {
        int sock;
        sd_event_source *child, *io, *timer;
        HelperRef *ref;
        path_open_done_t done;
        void *userdata;
};

typedef struct HelperReply {
        int err;
        int stage;
} HelperReply;

/* ---- accounting ---------------------------------------------------------------- */

unsigned path_opener_helpers(PathOpener *po, uid_t uid) {
        return uid_counts_get(&po->counts, uid);
}

static void helper_gone(PathOpener *po, uid_t uid) {
        assert(po->total > 0);
        po->total--;
        uid_counts_dec(&po->counts, uid);
}

/* ---- the helper (child side) ----------------------------------------------------- */

/* In the child only: system calls, then _exit(). No malloc, no stdio: the
 * parent has threads, and a lock one of them held is held forever here. */
static void put_decimal(char *p, unsigned long v) {
        char tmp[24];
        size_t n = 0;

        do
                tmp[n++] = (char) ('0' + v % 10);
        while ((v /= 10) > 0);
        while (n > 0)
                *p++ = tmp[--n];
        *p = 0;
}

/* openat2() (Linux 5.6) resolves in the caller's root without leaving it.
 * Where it is missing, or a seccomp filter refuses it (systemd-nspawn 252's
 * does, with ENOSYS), the helper chroot()s into that root instead, while it
 * still holds CAP_SYS_CHROOT; either way ".." and absolute symbolic links
 * stay inside the caller's view. */
static int enter_root_if_needed(int root, bool *chrooted) {
        struct open_how probe = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT };
        int fd = (int) syscall(SYS_openat2, root, ".", &probe, sizeof(probe));

        if (fd >= 0) {
                (void) close(fd);
                return 0;
        }
        if (errno != ENOSYS && errno != EPERM)
                return -1;
        if (fchdir(root) < 0 || chroot(".") < 0 || chdir("/") < 0)
                return -1;
        *chrooted = true;
        return 0;
}

_Noreturn static void helper(int sock, const PathOpenRequest *req) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = { 0 };
        HelperReply reply = { 0, PATH_OPEN_STAGE_CREDENTIALS };
        struct iovec iov = { &reply, sizeof(reply) };
        struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
        struct open_how how = { 0 };
        char proc[48] = "/proc/";
        bool chrooted = false;
        int root = -1, fd;

        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
        /* Hold nothing of loopd's: a reopen through /proc/self/fd/N checks
         * only the file's own mode, not the directories above it. */
        if ((sock > 0 && close_range(0, (unsigned) sock - 1, 0) < 0) || close_range((unsigned) sock + 1, ~0U, 0) < 0)
                goto fail;
        put_decimal(proc + 6, (unsigned long) req->pid);
        memcpy(proc + strlen(proc), "/root", sizeof("/root"));

        if (setgroups(req->n_groups, req->groups) < 0)
                goto fail;
        if (req->uid == 0) {
                /* Root: root's rights, and a look at a root caller's root,
                 * which may hold capabilities loopd lacks. */
                if (caps_set_effective(CAPS_HELD_BACK, 0) < 0)
                        goto fail;
                reply.stage = PATH_OPEN_STAGE_VIEW;
                root = open(proc, O_PATH | O_DIRECTORY | O_CLOEXEC);
                if (root < 0 || enter_root_if_needed(root, &chrooted) < 0)
                        goto fail;
        } else {
                /* The caller's ids as file system ids first: the kernel then
                 * shows /proc/PID/root only if the caller could look at it
                 * itself. The bus gives the groups but not which is the
                 * primary one, which the kernel compares: try each. */
                (void) setfsuid(req->uid);
                if ((uid_t) setfsuid((uid_t) -1) != req->uid)
                        goto fail;
                reply.stage = PATH_OPEN_STAGE_VIEW;
                errno = EPERM;
                for (unsigned i = 0; i < req->n_groups && root < 0; i++) {
                        if (setresgid(req->groups[i], req->groups[i], req->groups[i]) < 0)
                                goto fail;
                        root = open(proc, O_PATH | O_DIRECTORY | O_CLOEXEC);
                }
                if (root < 0)
                        goto fail;
                if (enter_root_if_needed(root, &chrooted) < 0)
                        goto fail;
                reply.stage = PATH_OPEN_STAGE_CREDENTIALS;
                /* Then for good; verify that root is really gone. */
                if (setresuid(req->uid, req->uid, req->uid) < 0 || setuid(0) == 0 || geteuid() == 0) {
                        errno = EPERM;
                        goto fail;
                }
        }
        (void) prctl(PR_SET_DUMPABLE, 0);

        reply.stage = PATH_OPEN_STAGE_OPEN;
        how.flags = (uint64_t) (req->flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (chrooted)
                /* In the caller's root already; "/proc/self/fd/N" there names
                 * this helper's own fds, which are only its socket. */
                fd = open(req->path, (int) how.flags);
        else {
                /* In the caller's root; magic links (/proc/self/fd/N) are refused. */
                how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
                fd = (int) syscall(SYS_openat2, root, req->path, &how, sizeof(how));
        }
        if (fd < 0)
                goto fail;
        mh.msg_control = &control;
        mh.msg_controllen = sizeof(control.buf);
        CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
        CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
        CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &fd, sizeof(int));
        (void) sendmsg(sock, &mh, MSG_NOSIGNAL);
        _exit(0);
fail:
        reply.err = errno > 0 ? errno : EIO;
        (void) sendmsg(sock, &mh, MSG_NOSIGNAL);
        _exit(0);
}

/* ---- the parent side ------------------------------------------------------------------ */

static void finish(PathOpen *p, int r, PathOpenStage stage, int fd) {
        path_open_done_t done = p->done;
        void *userdata = p->userdata;

        p->done = NULL;
        path_open_cancel(p);
        done(r, stage, fd, userdata);
}

/* True when the PathOpen finished (and is freed). */
static bool read_reply(PathOpen *p) {
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } control = { 0 };
        HelperReply reply = { 0 };
        struct iovec iov = { &reply, sizeof(reply) };
        struct msghdr mh = {
                .msg_iov = &iov, .msg_iovlen = 1,
                .msg_control = &control, .msg_controllen = sizeof(control.buf),
        };
        int fd = -1;
        ssize_t n;

        n = recvmsg(p->sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return false;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
                        memcpy(&fd, CMSG_DATA(c), sizeof(int));
        if (n != (ssize_t) sizeof(reply) || (mh.msg_flags & MSG_CTRUNC) || reply.stage < 0 ||
            reply.stage > PATH_OPEN_STAGE_OPEN) {
                safe_close(fd);
                finish(p, -EIO, PATH_OPEN_STAGE_CREDENTIALS, -1);
        } else if (fd < 0)
                finish(p, reply.err > 0 ? -reply.err : -EIO, (PathOpenStage) reply.stage, -1);
        else
                finish(p, 0, PATH_OPEN_STAGE_OPEN, fd);
        return true;
}

static int reap_child(sd_event_source *s, const siginfo_t *si, void *userdata) {
        HelperRef *ref = userdata;
        PathOpen *p = ref->p;

        helper_gone(ref->po, ref->uid);
        if (p) {
                /* It may have answered and exited before we read the answer;
                 * if not, it died without answering (it crashed). */
                p->child = sd_event_source_unref(p->child);
                free(p->ref);
                p->ref = NULL;
                if (!read_reply(p))
                        finish(p, -EIO, PATH_OPEN_STAGE_CREDENTIALS, -1);
                return 0;
        }
        /* Cancelled earlier: the source was left floating to reap it.
         * Turning floating off drops the loop's (last) reference: the
         * source goes once this dispatch returns. */
        if (ref->prev)
                ref->prev->next = ref->next;
        else
                ref->po->orphans = ref->next;
        if (ref->next)
                ref->next->prev = ref->prev;
        free(ref);
        (void) sd_event_source_set_floating(s, false);
        return 0;
}

static int on_reply(sd_event_source *s, int sock, uint32_t revents, void *userdata) {
        (void) read_reply(userdata);
        return 0;
}

static int on_timeout(sd_event_source *s, uint64_t usec, void *userdata) {
        finish(userdata, -ETIMEDOUT, PATH_OPEN_STAGE_OPEN, -1);
        return 0;
}

int path_open_as(PathOpener *po, const PathOpenRequest *req, uint64_t timeout_usec, path_open_done_t done,
                 void *userdata, PathOpen **ret) {
        _cleanup_(freep) PathOpen *p = NULL;
        HelperRef *ref;
        int pair[2], r;
        pid_t pid;

        assert(req->path && req->path[0] == '/');
        if ((req->flags & O_ACCMODE) == O_WRONLY || (req->flags & ~O_ACCMODE) != 0 || req->pid <= 0)
                return -EINVAL;
        if (uid_counts_get(&po->counts, req->uid) >= po->max_per_uid || po->total >= po->max_total)
                return -EAGAIN;
        p = calloc(1, sizeof(*p));
        ref = calloc(1, sizeof(*ref));
        if (!p || !ref) {
                free(ref);
                return -ENOMEM;
        }
        *ref = (HelperRef) { .po = po, .uid = req->uid };
        if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
                free(ref);
                return negative_errno();
        }

        pid = fork();
        if (pid < 0) {
                r = negative_errno();
                safe_close(pair[0]);
                safe_close(pair[1]);
                free(ref);
                return r;
        }
        if (pid == 0)
                helper(pair[1], req);
        safe_close(pair[1]);
        p->sock = pair[0];
        p->done = done;
        p->userdata = userdata;
        p->ref = ref;
        ref->p = p;
        if (uid_counts_inc(&po->counts, req->uid) < 0) {
                /* Cannot be counted: cannot be allowed. */
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0);
                p->child = NULL;
                p->done = NULL;
                path_open_cancel(TAKE_PTR(p));
                return -ENOMEM;
        }
        po->total++;

        r = sd_event_add_child(po->event, &p->child, pid, WEXITED, reap_child, ref);
        if (r < 0) {
                (void) kill(pid, SIGKILL);
                (void) waitpid(pid, NULL, 0); /* just forked, SIGKILLed: returns at once */
                helper_gone(po, req->uid);
                goto fail;
        }
        r = sd_event_add_io(po->event, &p->io, p->sock, EPOLLIN, on_reply, p);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(po->event, &p->timer, CLOCK_MONOTONIC, timeout_usec, 0, on_timeout, p);
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
                 * make us wait, so nothing here waits. It stays counted. */
                (void) sd_event_source_send_child_signal(p->child, SIGKILL, NULL, 0);
                p->ref->p = NULL;
                p->ref->prev = NULL;
                p->ref->next = p->ref->po->orphans;
                if (p->ref->next)
                        p->ref->next->prev = p->ref;
                p->ref->po->orphans = p->ref;
                (void) sd_event_source_set_floating(p->child, true);
                p->child = sd_event_source_unref(p->child);
        } else
                free(p->ref);
        sd_event_source_disable_unref(p->io);
        sd_event_source_disable_unref(p->timer);
        safe_close(p->sock);
        free(p);
        return NULL;
}

int path_opener_new(sd_event *e, unsigned max_per_uid, unsigned max_total, PathOpener **ret) {
        PathOpener *po = calloc(1, sizeof(*po));

        if (!po)
                return -ENOMEM;
        po->event = sd_event_ref(e);
        po->max_per_uid = max_per_uid;
        po->max_total = max_total;
        *ret = po;
        return 0;
}

PathOpener *path_opener_free(PathOpener *po) {
        if (!po)
                return NULL;
        /* Helpers not reaped yet are SIGKILLed already; their sources go
         * with the event loop, never dispatched again. */
        while (po->orphans) {
                HelperRef *ref = po->orphans;
                po->orphans = ref->next;
                free(ref);
        }
        uid_counts_clear(&po->counts);
        sd_event_unref(po->event);
        free(po);
        return NULL;
}
