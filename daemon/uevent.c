/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop-device.h"
#include "uevent.h"

struct UeventMonitor {
        int fd;
        sd_event_source *source;
        uevent_handler_t handler;
        void *userdata;
};

/* Strict decimal; anything else is 0, "unknown", which costs a re-read. */
static uint64_t parse_seq(const char *s) {
        uint64_t v = 0;

        if (!*s)
                return 0;
        for (; *s; s++) {
                if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
                        return 0;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        return v;
}

int uevent_parse(const char *buf, size_t len, Uevent *ret) {
        const char *act = NULL, *subsystem = NULL, *devtype = NULL, *devname = NULL;
        uint64_t diskseq = 0, seqnum = 0;
        uint32_t number;
        size_t off;

        /* "ACTION@DEVPATH\0KEY=VALUE\0..." from the kernel. udev's own
         * "libudev" messages start differently and never reach group 1. */
        off = strnlen(buf, len);
        if (off == len || !memchr(buf, '@', off))
                return -EINVAL;
        for (off++; off < len;) {
                const char *kv = buf + off;
                size_t n = strnlen(kv, len - off);
                if (n == len - off)
                        break; /* unterminated tail: ignore */
                if (strncmp(kv, "ACTION=", 7) == 0)
                        act = kv + 7;
                else if (strncmp(kv, "SUBSYSTEM=", 10) == 0)
                        subsystem = kv + 10;
                else if (strncmp(kv, "DEVTYPE=", 8) == 0)
                        devtype = kv + 8;
                else if (strncmp(kv, "DEVNAME=", 8) == 0)
                        devname = kv + 8;
                else if (strncmp(kv, "DISKSEQ=", 8) == 0)
                        diskseq = parse_seq(kv + 8);
                else if (strncmp(kv, "SEQNUM=", 7) == 0)
                        seqnum = parse_seq(kv + 7);
                off += n + 1;
        }
        if (!act || !subsystem || !devname)
                return -EINVAL;
        if (strcmp(subsystem, "block") != 0)
                return 0;
        if (devtype && strcmp(devtype, "partition") == 0) {
                /* "loopNpM": its whole disk's number, marked as a partition. */
                const char *p = strrchr(devname, 'p');
                char disk[32];
                if (!p || p == devname || (size_t) (p - devname) >= sizeof(disk))
                        return 0;
                memcpy(disk, devname, (size_t) (p - devname));
                disk[p - devname] = 0;
                if (loop_name_parse(disk, &number) < 0 || p[1] < '1' || p[1] > '9')
                        return 0;
                *ret = (Uevent) { .number = number, .action = act, .diskseq = diskseq, .seqnum = seqnum,
                                  .partition = true };
                return 1;
        }
        if (devtype && strcmp(devtype, "disk") != 0)
                return 0;
        if (loop_name_parse(devname, &number) < 0)
                return 0;
        *ret = (Uevent) { .number = number, .action = act, .diskseq = diskseq, .seqnum = seqnum };
        return 1;
}

/* Datagrams taken per recvmmsg(): a create and a remove send three
 * between them, a storm many more; a syscall costs more than parsing a
 * few datagrams does. The kernel builds a uevent's variables in 2 KiB
 * (UEVENT_BUFFER_SIZE); with "ACTION@DEVPATH" in front, a loop disk's
 * datagram fits in 4 KiB, and a longer one (MSG_TRUNC) is not a loop
 * disk's. */
#define UEVENT_BATCH 4
#define UEVENT_BUFFER 4096

static int on_uevent(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        static char bufs[UEVENT_BATCH][UEVENT_BUFFER];
        UeventMonitor *m = userdata;

        for (;;) {
                struct sockaddr_nl sa[UEVENT_BATCH];
                struct iovec iov[UEVENT_BATCH];
                struct mmsghdr mm[UEVENT_BATCH];
                int n;

                for (size_t i = 0; i < UEVENT_BATCH; i++) {
                        sa[i] = (struct sockaddr_nl) { 0 };
                        iov[i] = (struct iovec) { bufs[i], UEVENT_BUFFER - 1 };
                        mm[i] = (struct mmsghdr) { .msg_hdr = { .msg_name = &sa[i], .msg_namelen = sizeof(sa[i]),
                                                                .msg_iov = &iov[i], .msg_iovlen = 1 } };
                }
                n = recvmmsg(fd, mm, UEVENT_BATCH, MSG_DONTWAIT, NULL);
                if (n < 0) {
                        if (errno == EAGAIN || errno == EINTR)
                                return 0;
                        if (errno == ENOBUFS) {
                                /* We lost events: let the handler resync everything. */
                                m->handler(&(Uevent) { .number = UINT32_MAX, .action = "overflow" }, m->userdata);
                                continue;
                        }
                        return 0;
                }
                for (int i = 0; i < n; i++) {
                        Uevent ev;

                        /* Only the kernel (port 0) may tell us about devices. */
                        if (sa[i].nl_pid != 0 || (mm[i].msg_hdr.msg_flags & MSG_TRUNC))
                                continue;
                        bufs[i][mm[i].msg_len] = 0;
                        if (uevent_parse(bufs[i], mm[i].msg_len, &ev) == 1)
                                m->handler(&ev, m->userdata);
                }
                if (n < UEVENT_BATCH)
                        return 0; /* drained: the next one wakes us */
        }
}

int uevent_monitor_new(sd_event *e, uevent_handler_t handler, void *userdata, UeventMonitor **ret) {
        struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = 1 };
        _cleanup_(closep) int fd = -1;
        UeventMonitor *m;
        int sz = 4 * 1024 * 1024, r;

        fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
        if (fd < 0)
                return negative_errno();
        /* A create storm makes many events; a large buffer avoids ENOBUFS
         * (which we survive with a full resync anyway). SO_RCVBUFFORCE
         * needs CAP_NET_ADMIN, which the unit does not grant. */
        (void) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return negative_errno();

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        m->handler = handler;
        m->userdata = userdata;
        r = sd_event_add_io(e, &m->source, fd, EPOLLIN, on_uevent, m);
        if (r < 0) {
                free(m);
                return r;
        }
        /* Callers first: a uevent only re-reads sysfs to follow what others
         * did, and can wait until no request is pending (the socket's large
         * buffer holds them; an overflow is a full resync). */
        (void) sd_event_source_set_priority(m->source, SD_EVENT_PRIORITY_NORMAL + 10);
        m->fd = TAKE_FD(fd);
        *ret = m;
        return 0;
}

UeventMonitor *uevent_monitor_free(UeventMonitor *m) {
        if (!m)
                return NULL;
        sd_event_source_disable_unref(m->source);
        safe_close(m->fd);
        free(m);
        return NULL;
}
