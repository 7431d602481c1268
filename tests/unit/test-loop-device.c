/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The loop core against the real kernel: real loop devices, real backing
 * files, as root. Every value a test checks is read back from the kernel
 * (ioctl on a fresh fd, or sysfs read here, not through the module) unless the
 * test is about the module's own reader.
 *
 * Cleanup: every device, node, file and child a test makes is registered
 * with tests/lib/emergency.h (attachments by node number + diskseq). The
 * fixture's teardown clears the devices and nodes left; the emergency
 * cleanup clears everything on a failed g_assert (SIGABRT, before any
 * teardown), meson's SIGTERM, other fatal signals, exit, and through its
 * janitor even SIGKILL. Clearing checks the diskseq first, so nobody else's
 * attachment on a reused node is ever touched.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/blkpg.h>
#include <linux/fs.h>
#include <linux/loop.h>

#include <glib.h>

#include "emergency.h"
#include "loop-device.h"

#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, uint64_t)
#endif

/* A device handle freed (closed, never detached) at the end of its scope. */
#define AUTO_DEVICE _cleanup_(loop_device_freep) LoopDevice *

/* ---- registry and emergency cleanup ----------------------------------- */

/* Everything below goes through tests/lib/emergency.h; these only assert
 * that the registration took. */

static char tmpdir[PATH_MAX];
static int control_fd = -1;

/* A signal between LOOP_CONFIGURE and reg_device() would leave a device
 * nobody knows about: hold the asynchronous ones (meson's SIGTERM, the
 * parent's SIGTERM to a child, SIGINT, SIGALRM) across create + register.
 * They are delivered the moment the mask is restored. */
static sigset_t block_async_signals(void) {
        sigset_t set, old;

        sigemptyset(&set);
        sigaddset(&set, SIGTERM);
        sigaddset(&set, SIGINT);
        sigaddset(&set, SIGALRM);
        g_assert_cmpint(sigprocmask(SIG_BLOCK, &set, &old), ==, 0);
        return old;
}

static void restore_signals(const sigset_t *old) {
        g_assert_cmpint(sigprocmask(SIG_SETMASK, old, NULL), ==, 0);
}

static void reg_device_raw(uint32_t number, uint64_t diskseq) {
        g_assert_cmpint(emergency_add_loop(number, diskseq), >=, 0);
}

static void reg_device(const LoopDevice *d) {
        reg_device_raw(loop_device_number(d), loop_device_diskseq(d));
}

static void reg_node(uint32_t number) {
        g_assert_cmpint(emergency_add_loop_node(number), >=, 0);
}

static void reg_path(const char *p) {
        g_assert_cmpint(emergency_add_path(p), >=, 0);
}

/* A child that cleans up what it made when told to (SIGTERM reaches its
 * copy of the handlers). */
static void reg_child(pid_t pid) {
        g_assert_cmpint(emergency_add_pid(pid, EMERGENCY_PID_CHILD | EMERGENCY_PID_TERM_FIRST), >=, 0);
}

/* Whatever a test left attached or added: detached and removed, checking
 * each attachment's diskseq first so that nobody else's attachment on a
 * reused node is touched. */
static void cleanup_devices_and_nodes(void) {
        emergency_cleanup(EMERGENCY_LOOP | EMERGENCY_LOOP_NODE);
}

/* A forked child owns its own registry: it must clean what it made, and must
 * never touch the parent's. */
static void registry_become_child(void) {
        emergency_after_fork();
}

/* ---- fixture: fd accounting ------------------------------------------- */

static int count_fds(void) {
        DIR *d = opendir("/proc/self/fd");
        struct dirent *de;
        int n = 0;

        g_assert_nonnull(d);
        while ((de = readdir(d)))
                if (de->d_name[0] != '.')
                        n++;
        closedir(d);
        return n - 1; /* the DIR's own fd */
}

typedef struct {
        int fds_before;
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
        f->fds_before = count_fds();
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
        cleanup_devices_and_nodes();
        g_assert_cmpint(count_fds(), ==, f->fds_before);
}

/* ---- raw kernel readers (independent of the module) ------------------- */

static char *raw_sysfs(uint32_t number, const char *attr) {
        g_autofree char *p = g_strdup_printf("/sys/block/loop%" PRIu32 "/%s", number, attr);
        char *contents = NULL;

        if (!g_file_get_contents(p, &contents, NULL, NULL))
                return NULL;
        return contents; /* with the kernel's trailing newline */
}

static bool raw_sysfs_exists(uint32_t number, const char *attr) {
        g_autofree char *p = g_strdup_printf("/sys/block/loop%" PRIu32 "/%s", number, attr);

        return access(p, F_OK) == 0;
}

static uint64_t raw_sysfs_u64(uint32_t number, const char *attr) {
        g_autofree char *s = raw_sysfs(number, attr);
        char *end = NULL;
        uint64_t v;

        g_assert_nonnull(s);
        v = g_ascii_strtoull(s, &end, 10);
        g_assert_true(end != s && (*end == '\n' || *end == 0));
        return v;
}

static bool raw_bound(uint32_t number) {
        return raw_sysfs_exists(number, "loop/backing_file");
}

/* A separate fd on the node, not through the module. */
static int raw_open(uint32_t number, int flags) {
        g_autofree char *p = g_strdup_printf("/dev/loop%" PRIu32, number);
        int fd = open(p, flags | O_CLOEXEC | O_NONBLOCK);

        g_assert_cmpint(fd, >=, 0);
        return fd;
}

static struct loop_info64 raw_status(uint32_t number) {
        struct loop_info64 info = { 0 };
        int fd = raw_open(number, O_RDONLY);

        g_assert_cmpint(ioctl(fd, LOOP_GET_STATUS64, &info), ==, 0);
        close(fd);
        return info;
}

static uint64_t raw_size(uint32_t number) {
        uint64_t size = 0;
        int fd = raw_open(number, O_RDONLY);

        g_assert_cmpint(ioctl(fd, BLKGETSIZE64, &size), ==, 0);
        close(fd);
        return size;
}

/* ---- helpers ---------------------------------------------------------- */

static char *make_backing(const char *name, uint64_t size) {
        char *p = g_build_filename(tmpdir, name, NULL);
        int fd;

        reg_path(p); /* before it exists: a signal in between must not leave it behind */
        fd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        g_assert_cmpint(fd, >=, 0);
        g_assert_cmpint(ftruncate(fd, (off_t) size), ==, 0);
        close(fd);
        return p;
}

static int open_path(const char *p, int flags) {
        int fd = open(p, flags | O_CLOEXEC);

        g_assert_cmpint(fd, >=, 0);
        return fd;
}

static LoopDevice *create_ok(int backing_fd, const LoopConfig *c) {
        sigset_t old = block_async_signals();
        LoopDevice *d = NULL;
        int r = loop_device_create(control_fd, backing_fd, c, &d);

        if (r >= 0 && d)
                reg_device(d);
        restore_signals(&old);

        if (r < 0)
                g_test_message("loop_device_create: %s", g_strerror(-r));
        g_assert_cmpint(r, ==, 0);
        g_assert_nonnull(d);
        return d;
}

/* loop_device_create() that must fail: a device made anyway (the defect under
 * test) is registered before the assertion fires, so the abort path clears it. */
static void create_refused(int backing_fd, const LoopConfig *c, int expected) {
        sigset_t old = block_async_signals();
        LoopDevice *d = NULL;
        int r = loop_device_create(control_fd, backing_fd, c, &d);

        if (r >= 0 && d)
                reg_device(d);
        restore_signals(&old);
        g_assert_cmpint(r, ==, expected);
        g_assert_null(d);
}

/* Is attachment (number, diskseq) still bound? From sysfs, without opening. */
static bool raw_attached(uint32_t number, uint64_t diskseq) {
        g_autofree char *s = raw_sysfs(number, "diskseq");

        return s && g_ascii_strtoull(s, NULL, 10) == diskseq && raw_bound(number);
}

/* This machine is shared: another process (a daemon enumerating devices,
 * losetup) may hold one of our nodes for a moment, and the kernel then rightly
 * defers the clear to its close. Give such a holder 5 s. */
static void assert_goes_away(uint32_t number, uint64_t diskseq) {
        for (int i = 0; i < 500 && raw_attached(number, diskseq); i++)
                g_usleep(10 * 1000);
        g_assert_false(raw_attached(number, diskseq));
}

/* Detach for cleanup: DONE, or DEFERRED because somebody else held it (then
 * it must still go). That DONE is reported when nobody else holds the device
 * is proven by /loop-core/detach/device-goes-away. */
static void detach_ok(LoopDevice *d) {
        uint32_t n = loop_device_number(d);
        uint64_t seq = loop_device_diskseq(d);
        int r = loop_device_detach(d);

        g_assert_cmpint(r, >=, 0);
        if (r == LOOP_DETACH_DONE)
                g_assert_false(raw_attached(n, seq));
        else
                g_test_message("loop%" PRIu32 ": detach deferred, another process holds it", n);
        assert_goes_away(n, seq);
}

/* A node of our own, far above what LOOP_CTL_GET_FREE hands out (it names the
 * lowest unbound node), so no other creator on this machine takes it. */
static uint32_t add_private_node(void) {
        for (uint32_t n = 900000 + (uint32_t) getpid() % 100000;; n++) {
                int r = loop_control_add(control_fd, (int) n);

                if (r == -EEXIST)
                        continue;
                g_assert_cmpint(r, ==, (int) n);
                reg_node(n);
                return n;
        }
}

/* Proof that this process opened nothing: fanotify reports every open of a
 * watched file (or of a watched directory's children) with the opener's pid,
 * so other processes on the machine opening /dev/null or loop nodes do not
 * count. O_PATH opens are not reported (they run no open). FID reporting
 * means the kernel hands us no fd of its own: watching never opens anything.
 * A device node has to be opened before it can be taken. */
typedef struct {
        int fd;
} OpenWatch;

static OpenWatch open_watch_begin(const char *path) {
        OpenWatch w = {
                .fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME,
                                    O_RDONLY | O_CLOEXEC),
        };
        uint64_t mask = FAN_OPEN;
        struct stat st;

        g_assert_cmpint(w.fd, >=, 0);
        g_assert_cmpint(lstat(path, &st), ==, 0);
        if (S_ISDIR(st.st_mode))
                mask |= FAN_EVENT_ON_CHILD | FAN_ONDIR;
        g_assert_cmpint(fanotify_mark(w.fd, FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW, mask, AT_FDCWD, path), ==, 0);
        return w;
}

static const char *fanotify_event_name(const struct fanotify_event_metadata *m) {
        const char *p = (const char *) m + m->metadata_len, *end = (const char *) m + m->event_len;

        while (p + sizeof(struct fanotify_event_info_header) <= end) {
                const struct fanotify_event_info_header *h = (const void *) p;

                if (h->len == 0)
                        break;
                if (h->info_type == FAN_EVENT_INFO_TYPE_DFID_NAME) {
                        const struct fanotify_event_info_fid *fid = (const void *) p;
                        const struct file_handle *fh = (const void *) fid->handle;

                        return (const char *) fh->f_handle + fh->handle_bytes;
                }
                p += h->len;
        }
        return NULL;
}

/* How many opens by this process were seen; with filter_loop only of
 * "loopN" nodes. */
static int open_watch_end(OpenWatch *w, bool filter_loop) {
        char buf[8192] __attribute__((aligned(__alignof__(struct fanotify_event_metadata))));
        int seen = 0;

        for (;;) {
                ssize_t k = read(w->fd, buf, sizeof(buf));
                const struct fanotify_event_metadata *m = (const void *) buf;

                if (k < 0) {
                        g_assert_cmpint(errno, ==, EAGAIN);
                        break;
                }
                for (; FAN_EVENT_OK(m, k); m = FAN_EVENT_NEXT(m, k)) {
                        const char *name = fanotify_event_name(m);

                        g_assert_cmpuint(m->mask & FAN_Q_OVERFLOW, ==, 0);
                        if (m->pid != getpid() || !(m->mask & FAN_OPEN))
                                continue;
                        if (filter_loop && (!name || loop_name_parse(name, NULL) < 0))
                                continue;
                        g_test_message("opened by us: %s", name ? name : "?");
                        seen++;
                }
        }
        close(w->fd);
        w->fd = -1;
        return seen;
}

/* No bound loop device is backed by a file of ours. */
static void assert_none_backed_by_tmpdir(void) {
        g_autofree uint32_t *numbers = NULL;
        int n = loop_list_numbers(&numbers);

        g_assert_cmpint(n, >=, 0);
        for (int i = 0; i < n; i++) {
                g_autofree char *b = raw_sysfs(numbers[i], "loop/backing_file");

                if (b)
                        g_assert_false(g_str_has_prefix(b, tmpdir));
        }
}

static bool numbers_contain(const uint32_t *v, int n, uint32_t x) {
        for (int i = 0; i < n; i++)
                if (v[i] == x)
                        return true;
        return false;
}

/* ---- loop_name_parse -------------------------------------------------- */

static void test_name_parse_table(Fixture *f, gconstpointer data) {
        static const struct {
                const char *s;
                int r;
                uint32_t n;
        } t[] = {
                { "loop0", 0, 0 },
                { "loop7", 0, 7 },
                { "loop1048575", 0, 1048575 },
                { "/dev/loop12", 0, 12 },
                { "/dev/loop0", 0, 0 },
                { "loop1048576", -EINVAL, 0 },  /* >= 2^20 */
                { "loop99999999999999999999", -EINVAL, 0 },
                { "loop", -EINVAL, 0 },
                { "/dev/loop", -EINVAL, 0 },
                { "loop01", -EINVAL, 0 },       /* leading zero */
                { "loop00", -EINVAL, 0 },
                { "loop-1", -EINVAL, 0 },
                { "loop+1", -EINVAL, 0 },
                { "loop 1", -EINVAL, 0 },
                { "loop1 ", -EINVAL, 0 },
                { "loop1\n", -EINVAL, 0 },
                { "loop0p1", -EINVAL, 0 },      /* a partition is not a loop device */
                { "loop-control", -EINVAL, 0 },
                { "Loop1", -EINVAL, 0 },
                { "dev/loop1", -EINVAL, 0 },
                { "/dev//loop1", -EINVAL, 0 },
                { "/dev/loop/1", -EINVAL, 0 },
                { "/sys/block/loop1", -EINVAL, 0 },
                { "xloop1", -EINVAL, 0 },
                { "loop0x1", -EINVAL, 0 },
                { "", -EINVAL, 0 },
                { NULL, -EINVAL, 0 },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
                uint32_t n = 4242;

                g_test_message("parse \"%s\"", t[i].s ? t[i].s : "(null)");
                g_assert_cmpint(loop_name_parse(t[i].s, &n), ==, t[i].r);
                if (t[i].r == 0)
                        g_assert_cmpuint(n, ==, t[i].n);
                else
                        g_assert_cmpuint(n, ==, 4242); /* untouched on error */
        }
        g_assert_cmpint(loop_name_parse("loop3", NULL), ==, 0);
}

/* ---- config validation ------------------------------------------------ */

static void test_config_validate_table(Fixture *f, gconstpointer data) {
        uint32_t page = (uint32_t) sysconf(_SC_PAGESIZE);
        const struct {
                LoopConfig c;
                int r;
        } t[] = {
                { { 0 }, 0 },
                { { .block_size = 512 }, 0 },
                { { .block_size = 1024 }, 0 },
                { { .block_size = 2048 }, 0 },
                { { .block_size = page }, 0 },
                { { .flags = LOOP_CONFIG_FLAGS_ALLOWED }, 0 },
                { { .offset = 1, .size_limit = 1 }, 0 }, /* no alignment rule */
                { { .offset = INT64_MAX }, 0 },
                { { .offset = INT64_MAX - 5, .size_limit = 5 }, 0 },
                { { .block_size = 1 }, -EINVAL },
                { { .block_size = 256 }, -EINVAL },
                { { .block_size = 511 }, -EINVAL },
                { { .block_size = 513 }, -EINVAL },
                { { .block_size = 1000 }, -EINVAL },
                { { .block_size = 1536 }, -EINVAL },
                { { .block_size = page * 2 }, -EINVAL },
                { { .block_size = UINT32_MAX }, -EINVAL },
                { { .block_size = 1u << 31 }, -EINVAL },
                { { .flags = 2 /* LO_FLAGS_USE_AOPS, gone */ }, -EINVAL },
                { { .flags = 1u << 5 }, -EINVAL },
                { { .flags = 1u << 31 }, -EINVAL },
                { { .flags = LO_FLAGS_AUTOCLEAR | 0x100 }, -EINVAL },
                { { .offset = (uint64_t) INT64_MAX + 1 }, -EINVAL },
                { { .size_limit = UINT64_MAX }, -EINVAL },
                { { .offset = INT64_MAX, .size_limit = 1 }, -EINVAL },
                { { .offset = UINT64_MAX, .size_limit = 2 }, -EINVAL }, /* wraps in u64 */
        };

        for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
                g_test_message("case %zu", i);
                g_assert_cmpint(loop_config_validate(&t[i].c), ==, t[i].r);
        }
        g_assert_cmpint(loop_config_validate(NULL), ==, -EINVAL);
}

/* Each refused config, through loop_device_create, and proof that no node was
 * opened by us (fanotify on /dev) and nothing got bound to our file. */
static void test_create_invalid_config_refused_before_node_taken(Fixture *f, gconstpointer data) {
        const uint64_t size = 1 << 20;
        g_autofree char *p = make_backing("invalid-config", size);
        int fd = open_path(p, O_RDWR);
        const struct {
                LoopConfig c;
                const char *why;
        } t[] = {
                { { .block_size = 256 }, "block size below 512" },
                { { .block_size = 1000 }, "block size not a power of two" },
                { { .block_size = 8192 }, "block size above the page size" },
                { { .flags = 2 }, "obsolete flag bit" },
                { { .flags = 1u << 31 }, "unknown flag bit" },
                { { .offset = size }, "offset at the end" },
                { { .offset = size + 4096 }, "offset past the end" },
                { { .offset = (uint64_t) INT64_MAX + 1 }, "offset beyond LLONG_MAX" },
                { { .size_limit = UINT64_MAX }, "size limit beyond LLONG_MAX" },
                { { .offset = INT64_MAX, .size_limit = 4096 }, "offset + size limit overflows" },
                { { .size_limit = size + 512 }, "size limit past the end" },
                { { .offset = 4096, .size_limit = size - 4096 + 1 }, "offset + size limit past the end" },
                { { .size_limit = 511 }, "size limit below one sector" },
                { { .offset = size - 100 }, "less than one sector left after the offset" },
        };

        for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
                OpenWatch w = open_watch_begin("/dev");

                g_test_message("refuse: %s", t[i].why);
                create_refused(fd, &t[i].c, -EINVAL);
                g_assert_cmpint(open_watch_end(&w, true), ==, 0);
                assert_none_backed_by_tmpdir();
        }
        close(fd);
}

/* ---- backing checks --------------------------------------------------- */

static void assert_create_refused(int fd, int expected) {
        LoopConfig c = { 0 };
        OpenWatch w = open_watch_begin("/dev");

        g_assert_cmpint(loop_backing_check(fd, &c, NULL, NULL), ==, expected);
        create_refused(fd, &c, expected);
        g_assert_cmpint(open_watch_end(&w, true), ==, 0);
        assert_none_backed_by_tmpdir();
}

static void test_backing_readonly_fd_forces_readonly_flag(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("ro-flag", 1 << 20);
        int fd = open_path(p, O_RDONLY);
        LoopConfig c = { .flags = LO_FLAGS_AUTOCLEAR };
        LoopBacking b;
        uint32_t flags = 0;
        struct stat st;

        g_assert_cmpint(loop_backing_check(fd, &c, &b, &flags), ==, 0);
        g_assert_cmpuint(flags, ==, LO_FLAGS_AUTOCLEAR | LO_FLAGS_READ_ONLY);
        g_assert_false(b.writable);
        g_assert_cmpuint(b.size, ==, 1 << 20);
        g_assert_cmpint(stat(p, &st), ==, 0);
        g_assert_cmpuint(b.st_dev, ==, st.st_dev);
        g_assert_cmpuint(b.st_ino, ==, st.st_ino);
        g_assert_cmpuint(b.st_uid, ==, st.st_uid);
        g_assert_true(S_ISREG(b.st_mode));
        close(fd);

        fd = open_path(p, O_RDWR);
        g_assert_cmpint(loop_backing_check(fd, &c, &b, &flags), ==, 0);
        g_assert_cmpuint(flags, ==, LO_FLAGS_AUTOCLEAR);
        g_assert_true(b.writable);
        close(fd);
}

static void test_backing_wronly_fd_refused(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("wronly", 1 << 20);
        int fd = open_path(p, O_WRONLY);

        assert_create_refused(fd, -EBADF);
        close(fd);
}

static void test_backing_opath_fd_refused(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("opath", 1 << 20);
        int fd = open_path(p, O_PATH);

        assert_create_refused(fd, -EBADF);
        close(fd);
}

static void test_backing_bad_fd_refused(Fixture *f, gconstpointer data) {
        int fd = open_path("/dev/null", O_RDONLY), high;

        /* a number that is no fd now (a low one would be reused at once) */
        high = fcntl(fd, F_DUPFD_CLOEXEC, 4000);
        g_assert_cmpint(high, >=, 4000);
        close(high);
        close(fd);
        assert_create_refused(high, -EBADF);
        assert_create_refused(-1, -EBADF);
}

static void test_backing_directory_refused(Fixture *f, gconstpointer data) {
        int fd = open_path(tmpdir, O_RDONLY | O_DIRECTORY);

        assert_create_refused(fd, -EMEDIUMTYPE);
        close(fd);
}

static void test_backing_pipe_refused(Fixture *f, gconstpointer data) {
        int p[2];

        g_assert_cmpint(pipe2(p, O_CLOEXEC), ==, 0);
        assert_create_refused(p[0], -EMEDIUMTYPE);
        close(p[0]);
        close(p[1]);
}

static void test_backing_socket_refused(Fixture *f, gconstpointer data) {
        int s[2];

        g_assert_cmpint(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), ==, 0);
        assert_create_refused(s[0], -EMEDIUMTYPE);
        close(s[0]);
        close(s[1]);
}

static void test_backing_dev_null_refused(Fixture *f, gconstpointer data) {
        int fd = open_path("/dev/null", O_RDWR);

        assert_create_refused(fd, -EMEDIUMTYPE);
        close(fd);
}

static void test_backing_empty_file_refused(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("empty", 0);
        int fd = open_path(p, O_RDWR);

        assert_create_refused(fd, -EINVAL);
        close(fd);
}

/* A loop device as backing: size from BLKGETSIZE64, and a read-only block
 * device forces read-only even through an O_RDWR fd. */
static void test_backing_readonly_block_device_forces_readonly(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("lower", 2 << 20);
        int fd = open_path(p, O_RDONLY);
        LoopConfig c = { .size_limit = 1 << 20 };
        AUTO_DEVICE lower = create_ok(fd, &c);
        g_autofree char *lower_path = g_strdup_printf("/dev/loop%" PRIu32, loop_device_number(lower));
        LoopConfig c2 = { 0 };
        LoopBacking b;
        uint32_t flags = 0;
        int bfd = open_path(lower_path, O_RDWR);
        LoopDevice *upper;

        g_assert_cmpint(loop_backing_check(bfd, &c2, &b, &flags), ==, 0);
        g_assert_true(S_ISBLK(b.st_mode));
        g_assert_cmpuint(b.size, ==, 1 << 20);
        g_assert_false(b.writable);
        g_assert_cmpuint(flags, ==, LO_FLAGS_READ_ONLY);

        upper = create_ok(bfd, &c2);
        g_assert_cmpuint(raw_sysfs_u64(loop_device_number(upper), "ro"), ==, 1);
        g_assert_cmpuint(raw_size(loop_device_number(upper)), ==, 1 << 20);
        close(bfd);
        detach_ok(upper);
        loop_device_free(upper);
        close(fd);
        detach_ok(lower);
}

/* ---- create: round trips ---------------------------------------------- */

static void test_create_defaults_round_trip(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("defaults", 3 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        uint32_t n = loop_device_number(d);
        struct loop_info64 info = raw_status(n);
        struct stat st;

        g_assert_cmpuint(info.lo_number, ==, n);
        g_assert_cmpuint(info.lo_offset, ==, 0);
        g_assert_cmpuint(info.lo_sizelimit, ==, 0);
        g_assert_cmpuint(info.lo_flags, ==, 0);
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        g_assert_cmpuint(info.lo_device, ==, st.st_dev);
        g_assert_cmpuint(info.lo_inode, ==, st.st_ino);
        g_assert_cmpuint(raw_size(n), ==, 3 << 20);
        g_assert_cmpuint(raw_sysfs_u64(n, "size"), ==, (3 << 20) / 512);
        g_assert_cmpuint(raw_sysfs_u64(n, "queue/logical_block_size"), ==, 512);
        g_assert_cmpuint(raw_sysfs_u64(n, "ro"), ==, 0);
        g_assert_false(loop_device_dio_refused(d));
        /* the exclusive fd is O_RDWR for a writable device */
        g_assert_cmpint(fcntl(loop_device_fd(d), F_GETFL) & O_ACCMODE, ==, O_RDWR);
        g_assert_cmpint(fcntl(loop_device_fd(d), F_GETFD) & FD_CLOEXEC, ==, FD_CLOEXEC);
        close(fd);
        detach_ok(d);
}

static void test_create_offset_round_trips(Fixture *f, gconstpointer data) {
        static const uint64_t offsets[] = { 1, 511, 512, 4096, 1 << 20, (4 << 20) - 512 };
        const uint64_t size = 4 << 20;
        g_autofree char *p = make_backing("offset", size);
        int fd = open_path(p, O_RDWR);

        for (size_t i = 0; i < G_N_ELEMENTS(offsets); i++) {
                LoopConfig c = { .offset = offsets[i] };
                AUTO_DEVICE d = create_ok(fd, &c);
                uint32_t n = loop_device_number(d);
                char mark[8] = "offset!", got[8] = { 0 };

                g_test_message("offset %" PRIu64, offsets[i]);
                g_assert_cmpuint(raw_status(n).lo_offset, ==, offsets[i]);
                g_assert_cmpuint(raw_sysfs_u64(n, "loop/offset"), ==, offsets[i]);
                /* the kernel rounds the size down to whole sectors */
                g_assert_cmpuint(raw_size(n), ==, (size - offsets[i]) / 512 * 512);
                /* byte 0 of the device is byte `offset` of the file */
                g_assert_cmpint(pwrite(fd, mark, sizeof(mark), (off_t) offsets[i]), ==, sizeof(mark));
                g_assert_cmpint(fdatasync(fd), ==, 0);
                {
                        int dfd = raw_open(n, O_RDONLY);

                        g_assert_cmpint(ioctl(dfd, BLKFLSBUF, 0), ==, 0);
                        g_assert_cmpint(pread(dfd, got, sizeof(got), 0), ==, sizeof(got));
                        close(dfd);
                }
                g_assert_cmpmem(got, sizeof(got), mark, sizeof(mark));
                detach_ok(d);
        }
        close(fd);
}

static void test_create_size_limit_round_trips(Fixture *f, gconstpointer data) {
        static const struct {
                uint64_t offset, limit, size;
        } t[] = {
                { 0, 512, 512 },
                { 0, 1000, 512 },       /* rounded down to sectors, limit kept as given */
                { 0, 1 << 20, 1 << 20 },
                { 4096, (4 << 20) - 4096, (4 << 20) - 4096 }, /* exactly to the end */
                { 3, 4096, 4096 },
        };
        g_autofree char *p = make_backing("size-limit", 4 << 20);
        int fd = open_path(p, O_RDWR);

        for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
                LoopConfig c = { .offset = t[i].offset, .size_limit = t[i].limit };
                AUTO_DEVICE d = create_ok(fd, &c);
                uint32_t n = loop_device_number(d);

                g_test_message("offset %" PRIu64 " limit %" PRIu64, t[i].offset, t[i].limit);
                g_assert_cmpuint(raw_status(n).lo_sizelimit, ==, t[i].limit);
                g_assert_cmpuint(raw_sysfs_u64(n, "loop/sizelimit"), ==, t[i].limit);
                g_assert_cmpuint(raw_size(n), ==, t[i].size);
                g_assert_cmpuint(raw_sysfs_u64(n, "size") * 512, ==, t[i].size);
                detach_ok(d);
        }
        close(fd);
}

static void test_create_block_size_round_trips(Fixture *f, gconstpointer data) {
        uint32_t page = (uint32_t) sysconf(_SC_PAGESIZE);
        g_autofree char *p = make_backing("block-size", 1 << 20);
        int fd = open_path(p, O_RDWR);

        for (uint32_t bs = 512; bs <= page; bs <<= 1) {
                LoopConfig c = { .block_size = bs };
                AUTO_DEVICE d = create_ok(fd, &c);
                uint32_t n = loop_device_number(d);
                int dfd = raw_open(n, O_RDONLY), ssz = 0;

                g_test_message("block size %" PRIu32, bs);
                g_assert_cmpint(ioctl(dfd, BLKSSZGET, &ssz), ==, 0);
                close(dfd);
                g_assert_cmpint(ssz, ==, (int) bs);
                g_assert_cmpuint(raw_sysfs_u64(n, "queue/logical_block_size"), ==, bs);
                detach_ok(d);
        }
        close(fd);
}

/* One flag at a time, read back through GET_STATUS64 and sysfs. */
static void test_create_flags_round_trip(Fixture *f, gconstpointer data) {
        static const struct {
                uint32_t flag;
                const char *attr;
        } t[] = {
                { LO_FLAGS_AUTOCLEAR, "loop/autoclear" },
                { LO_FLAGS_PARTSCAN, "loop/partscan" },
                { LO_FLAGS_READ_ONLY, "ro" },
        };
        g_autofree char *p = make_backing("flags", 1 << 20);
        int fd = open_path(p, O_RDWR);

        for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
                LoopConfig off = { 0 }, on = { .flags = t[i].flag };
                AUTO_DEVICE d0 = create_ok(fd, &off);
                AUTO_DEVICE d1 = create_ok(fd, &on);

                g_test_message("flag %s", t[i].attr);
                g_assert_cmpuint(raw_sysfs_u64(loop_device_number(d0), t[i].attr), ==, 0);
                g_assert_cmpuint(raw_sysfs_u64(loop_device_number(d1), t[i].attr), ==, 1);
                g_assert_cmpuint(raw_status(loop_device_number(d0)).lo_flags & t[i].flag, ==, 0);
                g_assert_cmpuint(raw_status(loop_device_number(d1)).lo_flags & t[i].flag, ==, t[i].flag);
                /* nothing else turned on (the kernel adds PARTSCAN only with max_part > 0) */
                g_assert_cmpuint(raw_status(loop_device_number(d1)).lo_flags & ~(uint32_t) LO_FLAGS_PARTSCAN,
                                 ==, t[i].flag & ~(uint32_t) LO_FLAGS_PARTSCAN);
                detach_ok(d0);
                detach_ok(d1);
        }
        close(fd);
}

static void test_create_readonly_flag_opens_node_readonly(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("ro-config", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { .flags = LO_FLAGS_READ_ONLY };
        AUTO_DEVICE d = create_ok(fd, &c);
        int ro = 0;

        g_assert_cmpint(fcntl(loop_device_fd(d), F_GETFL) & O_ACCMODE, ==, O_RDONLY);
        g_assert_cmpint(ioctl(loop_device_fd(d), BLKROGET, &ro), ==, 0);
        g_assert_cmpint(ro, ==, 1);
        close(fd);
        detach_ok(d);
}

static void test_create_readonly_fd_forces_readonly(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("ro-fd", 1 << 20);
        int fd = open_path(p, O_RDONLY);
        LoopConfig c = { 0 }; /* read-write asked for */
        AUTO_DEVICE d = create_ok(fd, &c);
        uint32_t n = loop_device_number(d);
        char buf[512] = { 1 };
        int wfd;

        g_assert_cmpuint(raw_status(n).lo_flags & LO_FLAGS_READ_ONLY, ==, LO_FLAGS_READ_ONLY);
        g_assert_cmpuint(raw_sysfs_u64(n, "ro"), ==, 1);
        /* even an O_RDWR fd on the node cannot write */
        wfd = raw_open(n, O_RDWR);
        g_assert_cmpint(pwrite(wfd, buf, sizeof(buf), 0), ==, -1);
        g_assert_cmpint(errno, ==, EPERM);
        close(wfd);
        close(fd);
        detach_ok(d);
}

/* Direct I/O: whatever the filesystem says, the module's report matches the
 * kernel's; at offset 1 no filesystem can do DIO, so it must be refused and
 * the device still made. */
static void test_create_direct_io_applied_or_reported_refused(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("dio", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig aligned = { .flags = LO_FLAGS_DIRECT_IO };
        LoopConfig misaligned = { .flags = LO_FLAGS_DIRECT_IO, .offset = 1 };
        AUTO_DEVICE a = create_ok(fd, &aligned);
        AUTO_DEVICE m = create_ok(fd, &misaligned);
        uint64_t dio_a = raw_sysfs_u64(loop_device_number(a), "loop/dio");

        g_test_message("direct I/O on %s: %s", tmpdir, dio_a ? "applied" : "refused by the filesystem");
        g_assert_cmpint(loop_device_dio_refused(a), ==, !dio_a);
        g_assert_cmpint(!!(raw_status(loop_device_number(a)).lo_flags & LO_FLAGS_DIRECT_IO), ==, !!dio_a);
        g_assert_true(loop_device_dio_refused(m));
        g_assert_cmpuint(raw_sysfs_u64(loop_device_number(m), "loop/dio"), ==, 0);
        g_assert_cmpuint(raw_status(loop_device_number(m)).lo_offset, ==, 1);
        close(fd);
        detach_ok(a);
        detach_ok(m);
}

static void test_create_fills_file_name(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("named", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        struct loop_info64 info = raw_status(loop_device_number(d));

        g_assert_cmpstr((const char *) info.lo_file_name, ==, p);
        close(fd);
        detach_ok(d);
}

/* A name longer than lo_file_name is cut to 63 bytes, and never in the middle
 * of a UTF-8 sequence. */
static void test_create_long_file_name_truncated_on_character_boundary(Fixture *f, gconstpointer data) {
        g_autoptr(GString) name = g_string_new(NULL);
        g_autofree char *p = NULL;
        struct loop_info64 info;
        size_t prefix = strlen(tmpdir) + 1, len;
        int fd;
        LoopConfig c = { 0 };

        g_assert_cmpuint(prefix, <, 60);
        /* put a 3-byte character across byte 63 */
        while (prefix + name->len < 62)
                g_string_append_c(name, 'x');
        g_string_append(name, "\xe2\x82\xac-tail-of-a-long-name");
        p = make_backing(name->str, 1 << 20);
        fd = open_path(p, O_RDWR);
        {
                AUTO_DEVICE d = create_ok(fd, &c);

                info = raw_status(loop_device_number(d));
                detach_ok(d);
        }
        close(fd);
        len = strnlen((const char *) info.lo_file_name, LO_NAME_SIZE);
        g_assert_cmpuint(len, ==, 62);
        g_assert_true(strncmp((const char *) info.lo_file_name, p, len) == 0);
        g_assert_true(g_utf8_validate((const char *) info.lo_file_name, (gssize) len, NULL));
}

static void test_create_dev_t_from_node(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("devt", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        uint32_t n = loop_device_number(d);
        g_autofree char *node = g_strdup_printf("/dev/loop%" PRIu32, n);
        g_autofree char *dev = raw_sysfs(n, "dev");
        g_autofree char *want = NULL;
        struct stat st;
        LoopInfo i = { 0 };

        g_assert_cmpint(stat(node, &st), ==, 0);
        g_assert_cmpuint(loop_device_devnum(d), ==, st.st_rdev);
        want = g_strdup_printf("%u:%u\n", major(st.st_rdev), minor(st.st_rdev));
        g_assert_cmpstr(dev, ==, want);
        g_assert_cmpint(loop_device_read_info(d, &i), ==, 0);
        g_assert_cmpuint(i.devnum, ==, st.st_rdev);
        loop_info_done(&i);
        g_assert_cmpint(loop_info_read_sysfs(n, &i), ==, 0);
        g_assert_cmpuint(i.devnum, ==, st.st_rdev);
        loop_info_done(&i);
        close(fd);
        detach_ok(d);
}

static void test_create_diskseq_differs_between_attachments_of_same_node(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("diskseq", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        uint32_t n0;
        uint64_t s0;
        LoopDevice *d, *stale = NULL;

        d = create_ok(fd, &c);
        n0 = loop_device_number(d);
        s0 = loop_device_diskseq(d);
        g_assert_cmpuint(s0, !=, 0);
        g_assert_cmpuint(s0, ==, raw_sysfs_u64(n0, "diskseq"));
        detach_ok(d);
        loop_device_free(d);

        /* GET_FREE hands out the lowest free node: ours again, unless another
         * process took it meanwhile. */
        for (int attempt = 0;; attempt++) {
                g_assert_cmpint(attempt, <, 10);
                d = create_ok(fd, &c);
                if (loop_device_number(d) == n0)
                        break;
                detach_ok(d);
                loop_device_free(d);
        }
        g_assert_cmpuint(loop_device_diskseq(d), !=, s0);
        g_assert_cmpuint(loop_device_diskseq(d), ==, raw_sysfs_u64(n0, "diskseq"));
        g_assert_cmpint(loop_device_open_number(n0, s0, O_RDONLY, &stale), ==, -ESTALE);
        g_assert_null(stale);
        g_assert_cmpint(loop_device_open_number(n0, loop_device_diskseq(d), O_RDONLY, &stale), ==, 0);
        g_assert_cmpuint(loop_device_devnum(stale), ==, loop_device_devnum(d));
        loop_device_free(stale);
        close(fd);
        detach_ok(d);
        loop_device_free(d);
}

/* Somebody holds the node LOOP_CTL_GET_FREE keeps naming, exclusively, and
 * never configures it: create must still succeed elsewhere, in bounded time. */
static void test_create_skips_node_squatted_exclusively(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("squat", 1 << 20);
        int fd = open_path(p, O_RDWR), squat;
        g_autofree uint32_t *before = NULL;
        int n_before = loop_list_numbers(&before);
        int free_n = loop_control_get_free(control_fd);
        g_autofree char *node = NULL;
        LoopConfig c = { 0 };
        uint32_t n;

        g_assert_cmpint(n_before, >, 0);
        g_assert_cmpint(free_n, >=, 0);
        if (!numbers_contain(before, n_before, (uint32_t) free_n))
                reg_node((uint32_t) free_n); /* GET_FREE made it */
        node = g_strdup_printf("/dev/loop%d", free_n);
        squat = open_path(node, O_RDWR | O_EXCL);
        {
                AUTO_DEVICE d = create_ok(fd, &c);

                n = loop_device_number(d);
                g_assert_cmpuint(n, !=, (uint32_t) free_n);
                if (!numbers_contain(before, n_before, n))
                        reg_node(n);
                detach_ok(d);
        }
        close(squat);
        close(fd);
}

/* Two processes creating at the same moment never get the same device. */
typedef struct {
        uint32_t number;
        uint64_t diskseq;
        int32_t error;
} ChildReport;

#define RACE_CHILDREN 3
#define RACE_PER_CHILD 24

static __attribute__((noreturn)) void race_child(int start_fd, int report_fd, int go_fd, int backing_fd) {
        LoopDevice *ds[RACE_PER_CHILD] = { 0 };
        LoopConfig c = { 0 };
        int made = 0, status = 0;
        char ch;

        registry_become_child();
        if (read(start_fd, &ch, 1) != 1)
                _exit(4);
        for (; made < RACE_PER_CHILD; made++) {
                ChildReport rep = { 0 };
                sigset_t old = block_async_signals();
                int r = loop_device_create(control_fd, backing_fd, &c, &ds[made]);

                if (r >= 0)
                        reg_device(ds[made]);
                restore_signals(&old);
                if (r < 0) {
                        rep.error = r;
                        (void) !write(report_fd, &rep, sizeof(rep));
                        status = 2;
                        break;
                }
                rep.number = loop_device_number(ds[made]);
                rep.diskseq = loop_device_diskseq(ds[made]);
                if (write(report_fd, &rep, sizeof(rep)) != sizeof(rep))
                        status = 5;
        }
        /* wait for the parent's go (or its death: EOF) */
        (void) !read(go_fd, &ch, 1);
        for (int i = 0; i < made; i++) {
                if (loop_device_detach(ds[i]) < 0 && status == 0)
                        status = 3;
                loop_device_free(ds[i]);
        }
        _exit(status);
}

/* What the parent allocated before fork() stays reachable from here, so
 * valgrind does not count it as lost in the children, which _exit(). */
static struct {
        char *backing;
        uint32_t *before;
} race;

static void test_create_concurrent_processes_get_distinct_devices(Fixture *f, gconstpointer data) {
        int start[2], go[2], report[RACE_CHILDREN][2], fd, n_before, k = 0;
        pid_t pids[RACE_CHILDREN];
        g_autoptr(GHashTable) seen = NULL, seqs = NULL;
        ChildReport all[RACE_CHILDREN * RACE_PER_CHILD];

        race.backing = make_backing("race", 1 << 20);
        fd = open_path(race.backing, O_RDWR);
        n_before = loop_list_numbers(&race.before);

        g_assert_cmpint(n_before, >, 0);
        g_assert_cmpint(pipe2(start, O_CLOEXEC), ==, 0);
        g_assert_cmpint(pipe2(go, O_CLOEXEC), ==, 0);
        for (int c = 0; c < RACE_CHILDREN; c++) {
                g_assert_cmpint(pipe2(report[c], O_CLOEXEC), ==, 0);
                pids[c] = fork();
                g_assert_cmpint(pids[c], >=, 0);
                if (pids[c] == 0) {
                        close(start[1]);
                        close(go[1]);
                        close(report[c][0]);
                        race_child(start[0], report[c][1], go[0], fd);
                }
                reg_child(pids[c]);
                close(report[c][1]);
        }
        close(start[0]);
        close(go[0]);
        /* release them all at once */
        for (int c = 0; c < RACE_CHILDREN; c++)
                g_assert_cmpint(write(start[1], "s", 1), ==, 1);
        close(start[1]);

        for (int c = 0; c < RACE_CHILDREN; c++)
                for (int i = 0; i < RACE_PER_CHILD; i++) {
                        ChildReport *rep = &all[k++];

                        g_assert_cmpint(read(report[c][0], rep, sizeof(*rep)), ==, sizeof(*rep));
                        if (rep->error != 0)
                                g_test_message("child %d: create failed: %s", c, g_strerror(-rep->error));
                        g_assert_cmpint(rep->error, ==, 0);
                        reg_device_raw(rep->number, rep->diskseq);
                }
        seen = g_hash_table_new(g_direct_hash, g_direct_equal);
        seqs = g_hash_table_new(g_int64_hash, g_int64_equal);
        for (int i = 0; i < k; i++) {
                g_assert_false(g_hash_table_contains(seen, GUINT_TO_POINTER(all[i].number)));
                g_hash_table_add(seen, GUINT_TO_POINTER(all[i].number));
                g_assert_false(g_hash_table_contains(seqs, &all[i].diskseq));
                g_hash_table_add(seqs, &all[i].diskseq);
                /* the kernel agrees the node holds that attachment */
                g_assert_cmpuint(raw_sysfs_u64(all[i].number, "diskseq"), ==, all[i].diskseq);
                g_assert_true(raw_bound(all[i].number));
        }
        close(go[1]); /* EOF is the go signal */
        for (int c = 0; c < RACE_CHILDREN; c++) {
                int status = 0;

                g_assert_cmpint(waitpid(pids[c], &status, 0), ==, pids[c]);
                g_assert_true(WIFEXITED(status));
                g_assert_cmpint(WEXITSTATUS(status), ==, 0);
                close(report[c][0]);
        }
        for (int c = 0; c < RACE_CHILDREN; c++)
                emergency_forget_pid(pids[c]);
        for (int i = 0; i < k; i++) {
                assert_goes_away(all[i].number, all[i].diskseq);
                if (!numbers_contain(race.before, n_before, all[i].number))
                        reg_node(all[i].number); /* made by GET_FREE during the race */
        }
        close(fd);
        g_clear_pointer(&race.backing, g_free);
        g_clear_pointer(&race.before, g_free);
}

/* ---- open ------------------------------------------------------------- */

/* Refused, and fanotify saw no open of the path itself by us. */
static void assert_open_refused_without_opening(const char *path, int expected) {
        LoopDevice *d = NULL;
        OpenWatch w = open_watch_begin(path);

        alarm(10); /* a blocking open of a FIFO would hang here */
        g_assert_cmpint(loop_device_open(path, &d), ==, expected);
        alarm(0);
        g_assert_null(d);
        g_assert_cmpint(open_watch_end(&w, false), ==, 0);
}

static void test_open_refuses_regular_file(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("not-a-device", 1 << 20);

        assert_open_refused_without_opening(p, -ENOTBLK);
}

static void test_open_refuses_directory(Fixture *f, gconstpointer data) {
        assert_open_refused_without_opening(tmpdir, -ENOTBLK);
}

static void test_open_refuses_dev_null_and_zero(Fixture *f, gconstpointer data) {
        assert_open_refused_without_opening("/dev/null", -ENOTBLK);
        assert_open_refused_without_opening("/dev/zero", -ENOTBLK);
}

/* open(O_RDONLY) of a FIFO without a writer blocks: reaching the assertion at
 * all, plus fanotify's silence, proves the module never opened it. */
static void test_open_refuses_fifo_without_opening_it(Fixture *f, gconstpointer data) {
        g_autofree char *p = g_build_filename(tmpdir, "fifo", NULL);

        reg_path(p);
        g_assert_cmpint(mkfifo(p, 0600), ==, 0);
        assert_open_refused_without_opening(p, -ENOTBLK);
}

static void test_open_refuses_symlink_to_loop_device(Fixture *f, gconstpointer data) {
        g_autofree char *link = g_build_filename(tmpdir, "link-to-loop", NULL);
        int n = loop_control_get_free(control_fd);
        g_autofree char *target = g_strdup_printf("/dev/loop%d", n);
        LoopDevice *d = NULL;
        OpenWatch w;

        g_assert_cmpint(n, >=, 0);
        reg_path(link);
        g_assert_cmpint(symlink(target, link), ==, 0);
        w = open_watch_begin(target);
        g_assert_cmpint(loop_device_open(link, &d), ==, -ELOOP);
        g_assert_null(d);
        g_assert_cmpint(open_watch_end(&w, false), ==, 0);
}

static void test_open_refuses_non_loop_block_device(Fixture *f, gconstpointer data) {
        g_autoptr(GDir) dev = g_dir_open("/dev", 0, NULL);
        const char *name;
        g_autofree char *found = NULL;

        g_assert_nonnull(dev);
        while (!found && (name = g_dir_read_name(dev))) {
                g_autofree char *p = g_build_filename("/dev", name, NULL);
                struct stat st;

                if (lstat(p, &st) == 0 && S_ISBLK(st.st_mode) && major(st.st_rdev) != 7)
                        found = g_steal_pointer(&p);
        }
        if (!found) {
                g_test_skip("no block device other than loop devices on this machine");
                return;
        }
        g_test_message("non-loop block device: %s", found);
        assert_open_refused_without_opening(found, -ENOTBLK);
}

/* A node of the loop major whose disk does not exist: opening it would make
 * the kernel probe (and maybe create) loop<minor>. Refused from sysfs alone. */
static void test_open_refuses_loop_major_node_without_disk(Fixture *f, gconstpointer data) {
        g_autofree char *p = g_build_filename(tmpdir, "ghost", NULL);
        const unsigned ghost = 999983;

        g_assert_false(raw_sysfs_exists(ghost, "dev"));
        reg_path(p);
        g_assert_cmpint(mknod(p, S_IFBLK | 0600, makedev(7, ghost)), ==, 0);
        assert_open_refused_without_opening(p, -ENOTBLK);
        g_assert_false(raw_sysfs_exists(ghost, "dev"));
}

/* A partition of a loop device is not a loop device. The partition is made
 * by hand (BLKPG_ADD_PARTITION): that needs no partition-table parser in
 * the kernel (some kernels have none, and then partscan never makes a
 * loopNpM), only a disk that allows partitions, which LO_FLAGS_PARTSCAN
 * makes a loop device. It is a node of the extended major (259). */
static void test_open_refuses_partition_node(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("partitioned", 4 << 20);
        int fd = open_path(p, O_RDWR), wfd;
        LoopConfig c = { .flags = LO_FLAGS_PARTSCAN };
        AUTO_DEVICE d = create_ok(fd, &c);
        uint32_t n = loop_device_number(d);
        g_autofree char *part = g_strdup_printf("/dev/loop%" PRIu32 "p1", n);
        struct blkpg_partition bp = { .start = 1 << 20, .length = 1 << 20, .pno = 1 };
        struct blkpg_ioctl_arg arg = { .op = BLKPG_ADD_PARTITION, .datalen = sizeof bp, .data = &bp };
        struct stat st;

        wfd = raw_open(n, O_RDWR);
        g_assert_no_errno(ioctl(wfd, BLKPG, &arg));
        close(wfd);
        /* devtmpfs makes the node as the kernel adds the partition. */
        for (int i = 0; i < 500 && stat(part, &st) < 0; i++)
                g_usleep(10 * 1000);
        g_assert_no_errno(stat(part, &st));
        g_assert_true(S_ISBLK(st.st_mode));
        g_test_message("%s: %u:%u", part, major(st.st_rdev), minor(st.st_rdev));

        assert_open_refused_without_opening(part, -ENOTBLK);
        detach_ok(d); /* the partition goes with the attachment */
        for (int i = 0; i < 500 && g_file_test(part, G_FILE_TEST_EXISTS); i++)
                g_usleep(10 * 1000);
        g_assert_false(g_file_test(part, G_FILE_TEST_EXISTS));
        close(fd);
}

static void test_open_missing_path_enoent(Fixture *f, gconstpointer data) {
        g_autofree char *p = g_build_filename(tmpdir, "does-not-exist", NULL);
        LoopDevice *d = NULL;

        g_assert_cmpint(loop_device_open(p, &d), ==, -ENOENT);
        g_assert_null(d);
}

static void test_open_unbound_node(Fixture *f, gconstpointer data) {
        uint32_t n = add_private_node();
        g_autofree char *path = g_strdup_printf("/dev/loop%" PRIu32, n);
        LoopDevice *d = NULL;
        LoopInfo i = { 0 };
        struct stat st;

        g_assert_cmpint(loop_device_open(path, &d), ==, 0);
        g_assert_cmpuint(loop_device_number(d), ==, n);
        g_assert_cmpint(stat(path, &st), ==, 0);
        g_assert_cmpuint(loop_device_devnum(d), ==, st.st_rdev);
        g_assert_cmpint(fcntl(loop_device_fd(d), F_GETFL) & O_ACCMODE, ==, O_RDONLY);
        g_assert_cmpint(loop_device_read_info(d, &i), ==, 0);
        g_assert_false(i.bound);
        g_assert_null(i.backing_file);
        g_assert_cmpuint(i.number, ==, n);
        g_assert_cmpstr(i.path, ==, path);
        loop_info_done(&i);
        g_assert_cmpint(loop_device_detach(d), ==, -ENXIO);
        loop_device_free(d);
        g_assert_cmpint(loop_control_remove(control_fd, n), ==, 0);
}

static void test_open_bound_device_reads_back_its_attachment(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("open-bound", 2 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { .offset = 4096, .size_limit = 1 << 20, .block_size = 1024, .flags = LO_FLAGS_PARTSCAN };
        AUTO_DEVICE d = create_ok(fd, &c);
        g_autofree char *path = g_strdup_printf("/dev/loop%" PRIu32, loop_device_number(d));
        LoopDevice *o = NULL;
        LoopInfo i = { 0 };
        struct stat st;

        g_assert_cmpint(loop_device_open(path, &o), ==, 0);
        g_assert_cmpuint(loop_device_number(o), ==, loop_device_number(d));
        g_assert_cmpuint(loop_device_diskseq(o), ==, loop_device_diskseq(d));
        g_assert_cmpint(loop_device_read_info(o, &i), ==, 0);
        g_assert_true(i.bound);
        g_assert_cmpstr(i.backing_file, ==, p);
        g_assert_false(i.backing_deleted);
        g_assert_cmpint(fstat(fd, &st), ==, 0);
        g_assert_cmpuint(i.backing_dev, ==, st.st_dev);
        g_assert_cmpuint(i.backing_ino, ==, st.st_ino);
        g_assert_cmpuint(i.offset, ==, 4096);
        g_assert_cmpuint(i.size_limit, ==, 1 << 20);
        g_assert_cmpuint(i.size, ==, 1 << 20);
        g_assert_cmpuint(i.block_size, ==, 1024);
        g_assert_cmpuint(i.flags & ~(uint32_t) LO_FLAGS_PARTSCAN, ==, 0);
        g_assert_cmpuint(i.flags & LO_FLAGS_PARTSCAN, ==, LO_FLAGS_PARTSCAN);
        g_assert_cmpuint(i.diskseq, ==, loop_device_diskseq(d));
        loop_info_done(&i);
        loop_device_free(o);
        close(fd);
        detach_ok(d);
}

/* ---- detach / remove -------------------------------------------------- */

static void test_detach_device_goes_away(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("detach", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        bool done = false;

        /* DONE is only promised when nobody else holds the device; another process on this
         * shared machine may open it for a moment, so allow a few rounds. */
        for (int round = 0; round < 5 && !done; round++) {
                AUTO_DEVICE d = create_ok(fd, &c);
                uint32_t n = loop_device_number(d);
                uint64_t seq = loop_device_diskseq(d);
                struct loop_info64 info;
                g_autofree char *node = g_strdup_printf("/dev/loop%" PRIu32, n);
                LoopInfo i = { 0 };
                int r, dfd;

                g_assert_true(raw_attached(n, seq));
                r = loop_device_detach(d);
                g_assert_cmpint(r, >=, 0);
                g_assert_cmpint(loop_device_fd(d), ==, -1);
                /* the handle is spent either way */
                g_assert_cmpint(loop_device_detach(d), ==, -EBADF);
                g_assert_cmpint(loop_device_reopen(d), ==, -EBADF);
                g_assert_cmpint(loop_device_refresh_size(d), ==, -EBADF);
                g_assert_cmpint(loop_device_read_info(d, &i), ==, -EBADF);
                if (r == LOOP_DETACH_DEFERRED) {
                        g_test_message("round %d: another process held loop%" PRIu32, round, n);
                        assert_goes_away(n, seq);
                        continue;
                }
                done = true;
                g_assert_false(raw_attached(n, seq));
                g_assert_cmpint(loop_info_read_sysfs(n, &i), ==, 0);
                g_assert_true(!i.bound || i.diskseq != seq);
                loop_info_done(&i);
                dfd = open(node, O_RDONLY | O_CLOEXEC);
                if (dfd >= 0) {
                        /* unbound, unless someone attached anew */
                        uint64_t now_seq = 0;

                        g_assert_cmpint(ioctl(dfd, BLKGETDISKSEQ, &now_seq), ==, 0);
                        if (ioctl(dfd, LOOP_GET_STATUS64, &info) < 0)
                                g_assert_cmpint(errno, ==, ENXIO);
                        else
                                g_assert_cmpuint(now_seq, !=, seq);
                        close(dfd);
                }
        }
        g_assert_true(done);
        close(fd);
}

static void test_detach_deferred_while_another_fd_holds_it(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("deferred", 1 << 20);
        int fd = open_path(p, O_RDWR), other;
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        uint32_t n = loop_device_number(d);

        close(fd);
        other = loop_device_reopen(d);
        g_assert_cmpint(other, >=, 0);
        uint64_t seq = loop_device_diskseq(d);

        g_assert_cmpint(loop_device_detach(d), ==, LOOP_DETACH_DEFERRED);
        g_assert_true(raw_attached(n, seq));
        g_assert_cmpuint(raw_sysfs_u64(n, "loop/autoclear"), ==, 1);
        close(other);
        assert_goes_away(n, seq);
}

/* A handle on an old attachment must not clear the node's new one. */
static void test_detach_never_clears_a_newer_attachment(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("newer", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        LoopDevice *d = create_ok(fd, &c), *old = NULL, *newer = NULL;
        uint32_t n = loop_device_number(d);

        detach_ok(d);
        loop_device_free(d);
        g_assert_cmpint(loop_device_open_number(n, 0, O_RDONLY, &old), ==, 0);
        for (int attempt = 0;; attempt++) {
                g_assert_cmpint(attempt, <, 10);
                newer = create_ok(fd, &c);
                if (loop_device_number(newer) == n)
                        break;
                detach_ok(newer);
                loop_device_free(newer);
        }
        g_assert_cmpint(loop_device_detach(old), ==, -ESTALE);
        g_assert_true(raw_attached(n, loop_device_diskseq(newer)));
        g_assert_cmpint(loop_device_reopen(old), ==, -ESTALE);
        loop_device_free(old);
        detach_ok(newer);
        loop_device_free(newer);
        close(fd);
}

static void test_autoclear_device_clears_when_last_fd_closes(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("autoclear", 1 << 20);
        int fd = open_path(p, O_RDWR), keep;
        LoopConfig c = { .flags = LO_FLAGS_AUTOCLEAR };
        LoopDevice *d = create_ok(fd, &c);
        uint32_t n = loop_device_number(d);
        uint64_t seq = loop_device_diskseq(d);

        close(fd);
        keep = loop_device_reopen(d);
        g_assert_cmpint(keep, >=, 0);
        loop_device_free(d); /* never detaches... */
        g_assert_true(raw_attached(n, seq));
        close(keep); /* ...but the kernel does at the last close */
        assert_goes_away(n, seq);
}

static void test_remove_node_goes_away(Fixture *f, gconstpointer data) {
        uint32_t n = add_private_node();
        g_autofree char *node = g_strdup_printf("/dev/loop%" PRIu32, n);

        g_assert_true(raw_sysfs_exists(n, "dev"));
        g_assert_cmpint(access(node, F_OK), ==, 0);
        g_assert_cmpint(loop_control_add(control_fd, (int) n), ==, -EEXIST);
        g_assert_cmpint(loop_control_remove(control_fd, n), ==, 0);
        g_assert_false(raw_sysfs_exists(n, "dev"));
        g_assert_cmpint(access(node, F_OK), ==, -1);
        g_assert_cmpint(loop_control_remove(control_fd, n), ==, -ENODEV);
}

static void test_remove_bound_node_refused_busy(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("remove-bound", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);

        int64_t t0;

        close(fd);
        /* A plain attachment will not go by itself: refused at once, not after ~0.8 s of
         * retries (the bound is coarse on purpose; this is not a benchmark). */
        t0 = g_get_monotonic_time();
        g_assert_cmpint(loop_control_remove(control_fd, loop_device_number(d)), ==, -EBUSY);
        g_assert_cmpint(g_get_monotonic_time() - t0, <, 300 * 1000);
        g_assert_true(raw_attached(loop_device_number(d), loop_device_diskseq(d)));
        detach_ok(d);
}

static gpointer close_later(gpointer p) {
        g_usleep(30 * 1000);
        close(GPOINTER_TO_INT(p));
        return NULL;
}

/* An unbound node still open elsewhere (udev probing, a late closer): remove
 * waits for the close instead of failing. */
static void test_remove_waits_for_late_closer(Fixture *f, gconstpointer data) {
        uint32_t n = add_private_node();
        int holder = raw_open(n, O_RDONLY);
        GThread *t;

        t = g_thread_new("closer", close_later, GINT_TO_POINTER(holder));
        g_assert_cmpint(loop_control_remove(control_fd, n), ==, 0);
        g_thread_join(t);
        g_assert_false(raw_sysfs_exists(n, "dev"));
}

/* ---- info ------------------------------------------------------------- */

static void test_info_backing_path_without_newline(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("path-newline", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        uint32_t n = loop_device_number(d);
        g_autofree char *raw = raw_sysfs(n, "loop/backing_file");
        g_autofree char *want = g_strconcat(p, "\n", NULL);
        LoopInfo i = { 0 };

        g_assert_cmpstr(raw, ==, want); /* the kernel's text has the newline */
        g_assert_cmpint(loop_info_read_sysfs(n, &i), ==, 0);
        g_assert_cmpstr(i.backing_file, ==, p);
        g_assert_false(i.backing_deleted);
        loop_info_done(&i);
        g_assert_cmpint(loop_device_read_info(d, &i), ==, 0);
        g_assert_cmpstr(i.backing_file, ==, p);
        loop_info_done(&i);
        close(fd);
        detach_ok(d);
}

static void test_info_deleted_backing_reported(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("deleted", 1 << 20);
        g_autofree char *q = g_strconcat(p, " (deleted)", NULL);
        int fd = open_path(p, O_RDWR), fq;
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        LoopInfo i = { 0 };

        close(fd);
        g_assert_cmpint(unlink(p), ==, 0);
        g_assert_cmpint(loop_info_read_sysfs(loop_device_number(d), &i), ==, 0);
        g_assert_true(i.bound);
        g_assert_true(i.backing_deleted);
        g_assert_cmpstr(i.backing_file, ==, p);
        loop_info_done(&i);
        g_assert_cmpint(loop_device_read_info(d, &i), ==, 0);
        g_assert_true(i.backing_deleted);
        g_assert_cmpstr(i.backing_file, ==, p);
        loop_info_done(&i);
        detach_ok(d);

        /* A live file whose name really ends in " (deleted)": with the inode at
         * hand (read through the fd) it is told apart. */
        reg_path(q);
        fq = open(q, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        g_assert_cmpint(fq, >=, 0);
        g_assert_cmpint(ftruncate(fq, 1 << 20), ==, 0);
        {
                AUTO_DEVICE e = create_ok(fq, &c);

                g_assert_cmpint(loop_device_read_info(e, &i), ==, 0);
                g_assert_false(i.backing_deleted);
                g_assert_cmpstr(i.backing_file, ==, q);
                loop_info_done(&i);
                detach_ok(e);
        }
        close(fq);
}

static void test_info_sysfs_never_opens_node(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("sysfs-only", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { .flags = LO_FLAGS_AUTOCLEAR | LO_FLAGS_READ_ONLY, .offset = 512, .block_size = 2048 };
        AUTO_DEVICE d = create_ok(fd, &c);
        uint32_t n = loop_device_number(d);
        g_autofree char *node = g_strdup_printf("/dev/loop%" PRIu32, n);
        OpenWatch w = open_watch_begin(node);
        LoopInfo i = { 0 };

        g_assert_cmpint(loop_info_read_sysfs(n, &i), ==, 0);
        g_assert_cmpint(open_watch_end(&w, false), ==, 0);
        g_assert_true(i.bound);
        g_assert_cmpuint(i.number, ==, n);
        g_assert_cmpstr(i.path, ==, node);
        g_assert_cmpuint(i.offset, ==, 512);
        g_assert_cmpuint(i.size, ==, (1 << 20) - 512);
        g_assert_cmpuint(i.block_size, ==, 2048);
        g_assert_cmpuint(i.flags & ~(uint32_t) LO_FLAGS_PARTSCAN, ==, LO_FLAGS_AUTOCLEAR | LO_FLAGS_READ_ONLY);
        g_assert_cmpuint(i.diskseq, ==, loop_device_diskseq(d));
        g_assert_cmpuint(i.backing_dev, ==, 0);
        loop_info_done(&i);
        close(fd);
        detach_ok(d);
}

static void test_info_unbound_and_missing_nodes(Fixture *f, gconstpointer data) {
        uint32_t n = add_private_node();
        LoopInfo i = { 0 };

        g_assert_cmpint(loop_info_read_sysfs(n, &i), ==, 0);
        g_assert_false(i.bound);
        g_assert_null(i.backing_file);
        g_assert_cmpuint(i.flags, ==, 0);
        g_assert_cmpuint(i.size, ==, 0);
        g_assert_cmpuint(i.diskseq, ==, raw_sysfs_u64(n, "diskseq"));
        loop_info_done(&i);
        g_assert_cmpint(loop_control_remove(control_fd, n), ==, 0);
        g_assert_cmpint(loop_info_read_sysfs(n, &i), ==, -ENODEV);
        g_assert_cmpint(loop_info_read_sysfs(1u << 20, &i), ==, -EINVAL);
}

/* One or two syscalls per node for the node pool's scans: bound, free or gone. */
static void test_node_bound_tells_bound_free_and_missing(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("bound", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        uint32_t spare = add_private_node();

        g_assert_cmpint(loop_node_bound(loop_device_number(d)), ==, 1);
        g_assert_cmpint(loop_node_bound(spare), ==, 0);
        g_assert_cmpint(loop_control_remove(control_fd, spare), ==, 0);
        g_assert_cmpint(loop_node_bound(spare), ==, -ENODEV);
        g_assert_cmpint(loop_node_bound(1u << 20), ==, -EINVAL);
        close(fd);
        detach_ok(d);
}

/* The uevent counter is read before the attributes: a uevent of the
 * attachment's own making is numbered no later than it. */
static void test_info_sysfs_carries_uevent_seqnum(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("seqnum", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        LoopInfo before = { 0 }, after = { 0 };
        uint64_t counter_before = 0;
        g_autofree char *text = NULL;

        g_assert_true(g_file_get_contents("/sys/kernel/uevent_seqnum", &text, NULL, NULL));
        counter_before = g_ascii_strtoull(text, NULL, 10);
        g_assert_cmpuint(counter_before, >, 0); /* LOOP_CONFIGURE sent one already */
        g_assert_cmpint(loop_info_read_sysfs(loop_device_number(d), &before), ==, 0);
        g_assert_cmpuint(before.uevent_seqnum, >=, counter_before);
        g_assert_cmpint(loop_device_refresh_size(d), ==, 0); /* sends a change event */
        g_assert_cmpint(loop_info_read_sysfs(loop_device_number(d), &after), ==, 0);
        g_assert_cmpuint(after.uevent_seqnum, >, before.uevent_seqnum);
        loop_info_done(&before);
        loop_info_done(&after);
        close(fd);
        detach_ok(d);
}

/* ---- the rest --------------------------------------------------------- */

static void test_refresh_size_follows_backing_file(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("grow", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        uint32_t n = loop_device_number(d);

        g_assert_cmpint(ftruncate(fd, 3 << 20), ==, 0);
        g_assert_cmpuint(raw_size(n), ==, 1 << 20);
        g_assert_cmpint(loop_device_refresh_size(d), ==, 0);
        g_assert_cmpuint(raw_size(n), ==, 3 << 20);
        close(fd);
        detach_ok(d);
}

static void test_reopen_matches_device_mode(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("reopen", 1 << 20);
        int rw = open_path(p, O_RDWR), ro = open_path(p, O_RDONLY);
        LoopConfig c = { 0 };
        AUTO_DEVICE w = create_ok(rw, &c);
        AUTO_DEVICE r = create_ok(ro, &c);
        int fw = loop_device_reopen(w), fr = loop_device_reopen(r);
        struct stat a, b;

        g_assert_cmpint(fw, >=, 0);
        g_assert_cmpint(fr, >=, 0);
        g_assert_cmpint(fcntl(fw, F_GETFL) & O_ACCMODE, ==, O_RDWR);
        g_assert_cmpint(fcntl(fr, F_GETFL) & O_ACCMODE, ==, O_RDONLY);
        g_assert_cmpint(fcntl(fw, F_GETFD) & FD_CLOEXEC, ==, FD_CLOEXEC);
        g_assert_cmpint(fcntl(fr, F_GETFD) & FD_CLOEXEC, ==, FD_CLOEXEC);
        g_assert_cmpint(fstat(fw, &a), ==, 0);
        g_assert_cmpint(fstat(loop_device_fd(w), &b), ==, 0);
        g_assert_cmpuint(a.st_rdev, ==, b.st_rdev);
        close(fw);
        close(fr);
        close(rw);
        close(ro);
        detach_ok(w);
        detach_ok(r);
}

static void test_list_contains_created_devices_sorted(Fixture *f, gconstpointer data) {
        g_autofree char *p = make_backing("list", 1 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        AUTO_DEVICE d = create_ok(fd, &c);
        g_autofree uint32_t *v = NULL;
        int n = loop_list_numbers(&v);

        g_assert_cmpint(n, >, 0);
        g_assert_true(numbers_contain(v, n, loop_device_number(d)));
        for (int i = 1; i < n; i++)
                g_assert_cmpuint(v[i - 1], <, v[i]);
        for (int i = 0; i < n; i++)
                g_assert_true(raw_sysfs_exists(v[i], "dev"));
        close(fd);
        detach_ok(d);
}

static void test_control_get_free_names_unbound_node(Fixture *f, gconstpointer data) {
        g_autofree uint32_t *before = NULL;
        int n_before = loop_list_numbers(&before);
        bool seen_unbound = false;

        g_assert_cmpint(n_before, >=, 0);
        /* another creator may bind the node between GET_FREE and our look: a few rounds */
        for (int round = 0; round < 5 && !seen_unbound; round++) {
                int n = loop_control_get_free(control_fd);

                g_assert_cmpint(n, >=, 0);
                if (!numbers_contain(before, n_before, (uint32_t) n))
                        reg_node((uint32_t) n);
                g_assert_true(raw_sysfs_exists((uint32_t) n, "dev"));
                seen_unbound = !raw_bound((uint32_t) n);
        }
        g_assert_true(seen_unbound);
        g_assert_cmpint(loop_control_get_free(-1), ==, -EBADF);
        g_assert_cmpint(loop_control_add(control_fd, -2), ==, -EINVAL);
        g_assert_cmpint(loop_control_add(control_fd, 1 << 20), ==, -EINVAL);
        g_assert_cmpint(loop_control_remove(control_fd, 1u << 20), ==, -EINVAL);
}

static void test_open_number_refuses_bad_arguments(Fixture *f, gconstpointer data) {
        LoopDevice *d = NULL;

        g_assert_cmpint(loop_device_open_number(0, 0, O_WRONLY, &d), ==, -EINVAL);
        g_assert_cmpint(loop_device_open_number(0, 0, O_RDWR | O_EXCL, &d), ==, -EINVAL);
        g_assert_cmpint(loop_device_open_number(1u << 20, 0, O_RDONLY, &d), ==, -EINVAL);
        g_assert_cmpint(loop_device_open_number(999983, 0, O_RDONLY, &d), ==, -ENOENT);
        g_assert_null(d);
}

/* -m perf only: not an assertion, a number for the notes. */
static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;

        return x < y ? -1 : x > y;
}

static uint64_t now_ns(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000u + (uint64_t) ts.tv_nsec;
}

static void test_perf_create_detach_cycle(Fixture *f, gconstpointer data) {
        enum { CYCLES = 1000 };
        g_autofree char *p = make_backing("perf", 64 << 20);
        int fd = open_path(p, O_RDWR);
        LoopConfig c = { 0 };
        g_autofree uint64_t *create = g_new(uint64_t, CYCLES);
        g_autofree uint64_t *detach = g_new(uint64_t, CYCLES);
        g_autofree uint64_t *cycle = g_new(uint64_t, CYCLES);

        for (int i = 0; i < CYCLES; i++) {
                uint64_t t0 = now_ns(), t1, t2;
                LoopDevice *d = create_ok(fd, &c);

                t1 = now_ns();
                g_assert_cmpint(loop_device_detach(d), ==, LOOP_DETACH_DONE);
                t2 = now_ns();
                emergency_forget_loop(loop_device_number(d), loop_device_diskseq(d));
                loop_device_free(d);
                create[i] = t1 - t0;
                detach[i] = t2 - t1;
                cycle[i] = t2 - t0;
        }
        qsort(create, CYCLES, sizeof(uint64_t), cmp_u64);
        qsort(detach, CYCLES, sizeof(uint64_t), cmp_u64);
        qsort(cycle, CYCLES, sizeof(uint64_t), cmp_u64);
        g_test_message("%d cycles on a free node: create median %.1f us (p99 %.1f), detach median %.1f us (p99 %.1f), "
                       "cycle median %.1f us (p99 %.1f)",
                       CYCLES, create[CYCLES / 2] / 1e3, create[CYCLES * 99 / 100] / 1e3, detach[CYCLES / 2] / 1e3,
                       detach[CYCLES * 99 / 100] / 1e3, cycle[CYCLES / 2] / 1e3, cycle[CYCLES * 99 / 100] / 1e3);
        close(fd);
}

/* ---- main ------------------------------------------------------------- */

/* Without root and /dev/loop-control, the tests that need them are listed
 * as skipped, with the reason; the ones that need only the code run. */
static bool privileged;
static const char not_privileged[] = "needs root and /dev/loop-control (real loop devices)";

static void skip_unprivileged(gconstpointer data) {
        g_test_skip(not_privileged);
}

static void add_test(const char *path, void (*fn)(Fixture *, gconstpointer), bool needs_root) {
        if (needs_root && !privileged)
                g_test_add_data_func(path, NULL, skip_unprivileged);
        else
                g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown);
}

/* A test of the kernel (root, real devices), and one of the code alone. */
#define TEST(path, fn) add_test("/loop-core/" path, fn, true)
#define TEST_ANY_UID(path, fn) add_test("/loop-core/" path, fn, false)

int main(int argc, char *argv[]) {
        int r;

        g_test_init(&argc, &argv, NULL);

        privileged = geteuid() == 0 && access("/dev/loop-control", W_OK) == 0;
        if (privileged) {
                g_assert_cmpint(emergency_init(EMERGENCY_INIT_JANITOR), ==, 0);
                g_strlcpy(tmpdir, "/tmp/loopd-unit-XXXXXX", sizeof(tmpdir));
                g_assert_nonnull(mkdtemp(tmpdir));
                reg_path(tmpdir);
                control_fd = loop_control_open();
                g_assert_cmpint(control_fd, >=, 0);
        }

        TEST_ANY_UID("name-parse/table", test_name_parse_table);
        TEST_ANY_UID("config/validate-table", test_config_validate_table);
        TEST("create/invalid-config-refused-before-node-taken", test_create_invalid_config_refused_before_node_taken);
        TEST("backing/readonly-fd-forces-readonly-flag", test_backing_readonly_fd_forces_readonly_flag);
        TEST("backing/wronly-fd-refused", test_backing_wronly_fd_refused);
        TEST("backing/opath-fd-refused", test_backing_opath_fd_refused);
        TEST("backing/bad-fd-refused", test_backing_bad_fd_refused);
        TEST("backing/directory-refused", test_backing_directory_refused);
        TEST("backing/pipe-refused", test_backing_pipe_refused);
        TEST("backing/socket-refused", test_backing_socket_refused);
        TEST("backing/dev-null-refused", test_backing_dev_null_refused);
        TEST("backing/empty-file-refused", test_backing_empty_file_refused);
        TEST("backing/readonly-block-device-forces-readonly", test_backing_readonly_block_device_forces_readonly);
        TEST("create/defaults-round-trip", test_create_defaults_round_trip);
        TEST("create/offset-round-trips", test_create_offset_round_trips);
        TEST("create/size-limit-round-trips", test_create_size_limit_round_trips);
        TEST("create/block-size-round-trips", test_create_block_size_round_trips);
        TEST("create/flags-round-trip", test_create_flags_round_trip);
        TEST("create/readonly-flag-opens-node-readonly", test_create_readonly_flag_opens_node_readonly);
        TEST("create/readonly-fd-forces-readonly", test_create_readonly_fd_forces_readonly);
        TEST("create/direct-io-applied-or-reported-refused", test_create_direct_io_applied_or_reported_refused);
        TEST("create/fills-file-name", test_create_fills_file_name);
        TEST("create/long-file-name-truncated-on-character-boundary",
             test_create_long_file_name_truncated_on_character_boundary);
        TEST("create/dev-t-from-node", test_create_dev_t_from_node);
        TEST("create/diskseq-differs-between-attachments-of-same-node",
             test_create_diskseq_differs_between_attachments_of_same_node);
        TEST("create/skips-node-squatted-exclusively", test_create_skips_node_squatted_exclusively);
        TEST("create/concurrent-processes-get-distinct-devices", test_create_concurrent_processes_get_distinct_devices);
        TEST("open/refuses-regular-file", test_open_refuses_regular_file);
        TEST("open/refuses-directory", test_open_refuses_directory);
        TEST("open/refuses-dev-null-and-dev-zero", test_open_refuses_dev_null_and_zero);
        TEST("open/refuses-fifo-without-opening-it", test_open_refuses_fifo_without_opening_it);
        TEST("open/refuses-symlink-to-loop-device", test_open_refuses_symlink_to_loop_device);
        TEST("open/refuses-non-loop-block-device", test_open_refuses_non_loop_block_device);
        TEST("open/refuses-loop-major-node-without-disk", test_open_refuses_loop_major_node_without_disk);
        TEST("open/refuses-partition-node", test_open_refuses_partition_node);
        TEST("open/missing-path-enoent", test_open_missing_path_enoent);
        TEST("open/unbound-node-opens", test_open_unbound_node);
        TEST("open/bound-device-reads-back-its-attachment", test_open_bound_device_reads_back_its_attachment);
        TEST_ANY_UID("open-number/refuses-bad-arguments", test_open_number_refuses_bad_arguments);
        TEST("detach/device-goes-away", test_detach_device_goes_away);
        TEST("detach/deferred-while-another-fd-holds-it", test_detach_deferred_while_another_fd_holds_it);
        TEST("detach/never-clears-a-newer-attachment", test_detach_never_clears_a_newer_attachment);
        TEST("detach/autoclear-device-clears-when-last-fd-closes", test_autoclear_device_clears_when_last_fd_closes);
        TEST("remove/node-goes-away", test_remove_node_goes_away);
        TEST("remove/bound-node-refused-busy", test_remove_bound_node_refused_busy);
        TEST("remove/waits-for-late-closer", test_remove_waits_for_late_closer);
        TEST("info/backing-path-without-newline", test_info_backing_path_without_newline);
        TEST("info/deleted-backing-reported", test_info_deleted_backing_reported);
        TEST("info/sysfs-never-opens-node", test_info_sysfs_never_opens_node);
        TEST("info/unbound-and-missing-nodes", test_info_unbound_and_missing_nodes);
        TEST("info/node-bound-tells-bound-free-and-missing", test_node_bound_tells_bound_free_and_missing);
        TEST("info/sysfs-carries-uevent-seqnum", test_info_sysfs_carries_uevent_seqnum);
        TEST("refresh-size/follows-backing-file", test_refresh_size_follows_backing_file);
        TEST("reopen/matches-device-mode", test_reopen_matches_device_mode);
        TEST("list/contains-created-devices-sorted", test_list_contains_created_devices_sorted);
        TEST("control/get-free-names-unbound-node", test_control_get_free_names_unbound_node);
        if (g_test_perf())
                TEST("perf/create-detach-cycle", test_perf_create_detach_cycle);

        r = g_test_run();
        if (privileged) {
                close(control_fd);
                control_fd = -1;
                emergency_run();
        }
        return r;
}
