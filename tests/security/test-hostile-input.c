/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Hostile input, as root and as nobody, against ONE daemon for
 * the whole file: every Create option wrong, every kind of backing fd,
 * every kind of bad device name, CreateFromPath at things that are not
 * files of the caller's. Each case must get its named error, and loopd
 * must answer a Ping right after it; the last test checks that the same
 * daemon is still alive, leaked no device and exits cleanly (a sanitizer
 * report would make its exit status non-zero).
 *
 * polkit runs with a rule letting nobody create, so that the cases that
 * should succeed do, and the ones that must fail fail on their input,
 * before polkit is asked.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "security-common.h"

#define NOBODY 65534

static LoopdFixture *F;
static const uid_t callers[] = { 0, NOBODY };

static const char rules_nobody_may_create[] = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE);

static gboolean skip_if_no_fixture(void) {
        if (!F || F->skipped) {
                g_test_skip("the fixture could not start (see above)");
                return TRUE;
        }
        return FALSE;
}

static char *image(const char *name, guint64 size, uid_t uid, mode_t mode) {
        return loopd_fixture_make_image(F, name, size, uid, uid == NOBODY ? NOBODY : 0, mode);
}

/* Create with @fd and @options (GVariant text of an a{sv}) as @uid. */
static void create_fd(uid_t uid, int fd, const char *options, SecCall *c) {
        g_autofree char *args = g_strdup_printf("(handle 0, @a{sv} %s)", options);
        sec_call(F, uid, "Create", args, fd, FALSE, c);
}

static void create_path(uid_t uid, const char *path, const char *options, SecCall *c) {
        g_autofree char *q = sec_quote(path);
        g_autofree char *args = g_strdup_printf("(%s, @a{sv} %s)", q, options);
        sec_call(F, uid, "CreateFromPath", args, -1, FALSE, c);
}

static gboolean bool_property(const char *object, const char *name) {
        g_autoptr(GVariant) v = sec_device_property(F, object, name);
        return g_variant_get_boolean(v);
}

static char *string_property(const char *object, const char *name) {
        g_autoptr(GVariant) v = sec_device_property(F, object, name);
        return g_variant_dup_string(v, NULL);
}

/* An autoclear device goes by itself once the caller's fd closed. */
static void assert_device_goes(const char *device) {
        g_autofree char *attr = g_strdup_printf("/sys/block/%s/loop/backing_file", device + strlen("/dev/"));
        for (int i = 0; i < 500 && g_file_test(attr, G_FILE_TEST_EXISTS); i++)
                g_usleep(10000);
        if (g_file_test(attr, G_FILE_TEST_EXISTS)) {
                sec_remove(F, device);
                g_error("%s is still attached", device);
        }
}

/* ---- options ------------------------------------------------------------ */

typedef struct OptionCase {
        const char *options; /* a{sv} text */
        const char *needle;  /* what the InvalidArgs message must name */
} OptionCase;

#define MIB "1048576"

static const OptionCase option_cases[] = {
        /* wrong types */
        { "{'offset': <uint32 1>}", "'offset'" },
        { "{'offset': <int64 0>}", "'offset'" },
        { "{'offset': <'0'>}", "'offset'" },
        { "{'offset': <true>}", "'offset'" },
        { "{'offset': <<uint64 0>>}", "'offset'" },
        { "{'offset': <@ay []>}", "'offset'" },
        { "{'offset': <(uint64 0,)>}", "'offset'" },
        { "{'size-limit': <uint32 0>}", "'size-limit'" },
        { "{'size-limit': <int64 512>}", "'size-limit'" },
        { "{'size-limit': <'all'>}", "'size-limit'" },
        { "{'block-size': <uint64 512>}", "'block-size'" },
        { "{'block-size': <int32 512>}", "'block-size'" },
        { "{'block-size': <uint16 512>}", "'block-size'" },
        { "{'block-size': <'512'>}", "'block-size'" },
        { "{'read-only': <'true'>}", "'read-only'" },
        { "{'read-only': <uint32 1>}", "'read-only'" },
        { "{'autoclear': <int32 1>}", "'autoclear'" },
        { "{'partscan': <'yes'>}", "'partscan'" },
        { "{'direct-io': <byte 1>}", "'direct-io'" },
        { "{'bind-to-caller': <'no'>}", "'bind-to-caller'" },
        { "{'bind-to-caller': <(true, false)>}", "'bind-to-caller'" },
        /* block size out of range */
        { "{'block-size': <uint32 0x10000000>}", "'block-size'" },
        { "{'block-size': <uint32 513>}", "'block-size'" },
        { "{'block-size': <uint32 256>}", "'block-size'" },
        { "{'block-size': <uint32 0x80000000>}", "'block-size'" },
        { "{'block-size': <uint32 0xffffffff>}", "'block-size'" },
        { "{'block-size': <uint32 1>}", "'block-size'" },
        { "{'block-size': <uint32 511>}", "'block-size'" },
        { "{'block-size': <uint32 1536>}", "'block-size'" },
        { "{'block-size': <uint32 131072>}", "'block-size'" },
        /* overflow: offset and size limit past what the kernel takes (2^63) or wrapping 2^64 */
        { "{'offset': <uint64 9223372036854775808>}", "'offset'" },
        { "{'offset': <uint64 18446744073709551615>}", "'offset'" },
        { "{'size-limit': <uint64 9223372036854775808>}", "'size-limit'" },
        { "{'size-limit': <uint64 18446744073709551615>}", "'size-limit'" },
        { "{'offset': <uint64 4611686018427387904>, 'size-limit': <uint64 13835058055282163712>}", "'offset'" },
        { "{'offset': <uint64 9223372036854775807>, 'size-limit': <uint64 1>}", "'offset'" },
        { "{'offset': <uint64 4611686018427387904>, 'size-limit': <uint64 4611686018427387904>}", "'offset'" },
        /* past the end of the 1 MiB file */
        { "{'offset': <uint64 " MIB ">}", "offset" },
        { "{'offset': <uint64 1099511627776>}", "offset" },
        { "{'offset': <uint64 1048476>}", "offset" }, /* less than a sector left */
        { "{'size-limit': <uint64 1048577>}", "size-limit" },
        { "{'size-limit': <uint64 100>}", "size-limit" }, /* less than a sector */
        { "{'offset': <uint64 512>, 'size-limit': <uint64 " MIB ">}", "size-limit" },
        /* unknown keys */
        { "{'Offset': <uint64 0>}", "'Offset'" },
        { "{'offset ': <uint64 0>}", "'offset '" },
        { "{'': <uint64 0>}", "''" },
        { "{'readonly': <true>}", "'readonly'" },
        { "{'ro': <true>}", "'ro'" },
        { "{'flags': <uint32 0>}", "'flags'" },
        { "{'read-only': <true>, 'no-such-key': <true>}", "'no-such-key'" },
        /* duplicated keys */
        { "{'offset': <uint64 0>, 'offset': <uint64 0>}", "'offset'" },
        { "{'offset': <uint64 0>, 'offset': <uint32 0>}", "'offset'" },
        { "{'read-only': <false>, 'read-only': <true>}", "'read-only'" },
        { "{'bind-to-caller': <true>, 'bind-to-caller': <true>}", "'bind-to-caller'" },
};

static void test_create_options(void) {
        g_autofree char *img = NULL, *long_key = NULL, *long_opts = NULL, *long_needle = NULL;
        guint n = 0;

        if (skip_if_no_fixture())
                return;
        img = image("options.img", 1 << 20, NOBODY, 0600);
        long_key = g_strnfill(10240, 'k');
        long_opts = g_strdup_printf("{'%s': <true>}", long_key);
        long_needle = g_strndup(long_key, 64); /* the message quotes at most 64 bytes */

        for (size_t u = 0; u < G_N_ELEMENTS(callers); u++) {
                for (size_t i = 0; i <= G_N_ELEMENTS(option_cases); i++) {
                        const char *opts = i < G_N_ELEMENTS(option_cases) ? option_cases[i].options : long_opts;
                        const char *needle = i < G_N_ELEMENTS(option_cases) ? option_cases[i].needle : long_needle;
                        g_auto(SecCall) c = { 0 };
                        int fd = open(img, O_RDWR | O_CLOEXEC);

                        g_assert_no_errno(fd);
                        create_fd(callers[u], fd, opts, &c);
                        close(fd);
                        if (c.ok)
                                g_error("uid %u, options %.100s: accepted (%s)", (unsigned) callers[u], opts, c.device);
                        if (strcmp(c.error_name, LOOPD_DBUS_ERROR_INVALID_ARGS) != 0 || !strstr(c.error_message, needle))
                                g_error("uid %u, options %.100s: %s: %s (wanted InvalidArgs naming %s)",
                                        (unsigned) callers[u], opts, c.error_name, c.error_message, needle);
                        /* The same through CreateFromPath, which must not even open the file. */
                        create_path(callers[u], img, opts, &c);
                        sec_assert_error(&c, LOOPD_DBUS_ERROR_INVALID_ARGS, needle);
                        sec_assert_daemon_answers(F);
                        n += 2;
                }
        }

        /* Argument tuples of the wrong signature: sd-bus refuses them. */
        static const char *const bad_signatures[] = {
                "(handle 0, 'x')",
                "(handle 0, @a{sv} {}, 'extra')",
                "(handle 0, @a{ss} {'offset': '0'})",
                "(handle 0,)",
        };
        for (size_t u = 0; u < G_N_ELEMENTS(callers); u++)
                for (size_t i = 0; i < G_N_ELEMENTS(bad_signatures); i++) {
                        g_auto(SecCall) c = { 0 };
                        int fd = open(img, O_RDWR | O_CLOEXEC);
                        sec_call(F, callers[u], "Create", bad_signatures[i], fd, FALSE, &c);
                        close(fd);
                        sec_assert_error(&c, LOOPD_DBUS_ERROR_INVALID_ARGS, NULL);
                        sec_assert_daemon_answers(F);
                        n++;
                }

        /* The ordinary client's way (loopd-test-caller --opt) as nobody. */
        static const char *const caller_opts[][2] = {
                { "offset=u:1", "'offset'" },
                { "block-size=u:513", "'block-size'" },
                { "size-limit=t:18446744073709551615", "'size-limit'" },
                { "no-such=b:true", "'no-such'" },
                { "read-only=s:yes", "'read-only'" },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(caller_opts); i++) {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(F, NOBODY, NOBODY, &r, "create", img, "--opt", caller_opts[i][0], NULL);
                g_assert_cmpstr(r.fields[0], ==, "error");
                g_assert_cmpstr(r.fields[1], ==, LOOPD_DBUS_ERROR_INVALID_ARGS);
                g_assert_nonnull(strstr(r.fields[2], caller_opts[i][1]));
                n++;
        }
        g_test_message("%u hostile option cases: InvalidArgs naming the key", n);
        g_assert_cmpuint(loopd_fixture_count_loops(F), ==, 0);
}

/* ---- backing fds --------------------------------------------------------- */

typedef struct FdCase {
        const char *what;
        int fd;
        const char *error; /* NULL: must succeed */
        gboolean read_only;
        gboolean autoclear; /* not under tmpdir: let it go with its fd */
} FdCase;

static void run_fd_case(uid_t uid, const FdCase *k, const char *options) {
        g_auto(SecCall) c = { 0 };

        create_fd(uid, k->fd, options ? options : (k->autoclear ? "{'autoclear': <true>}" : "{}"), &c);
        if (k->error) {
                if (c.ok) {
                        if (!k->autoclear)
                                sec_remove(F, c.device);
                        g_error("uid %u, %s: accepted as %s (wanted %s)", (unsigned) uid, k->what, c.device, k->error);
                }
                if (strcmp(c.error_name, k->error) != 0)
                        g_error("uid %u, %s: %s: %s (wanted %s)", (unsigned) uid, k->what, c.error_name,
                                c.error_message, k->error);
        } else {
                if (!c.ok)
                        g_error("uid %u, %s: %s: %s", (unsigned) uid, k->what, c.error_name, c.error_message);
                if (k->autoclear)
                        assert_device_goes(c.device);
                else {
                        g_assert_cmpint(bool_property(c.object, "ReadOnly"), ==, k->read_only);
                        sec_remove(F, c.device);
                }
        }
        sec_assert_daemon_answers(F);
}

static void test_backing_fd_kinds(void) {
        g_autofree char *img = NULL, *empty = NULL, *tiny = NULL, *dir = NULL;
        guint n = 0;

        if (skip_if_no_fixture())
                return;
        img = image("fd-kinds.img", 1 << 20, NOBODY, 0600);
        empty = image("empty.img", 0, NOBODY, 0600);
        tiny = image("tiny.img", 100, NOBODY, 0600);
        dir = g_build_filename(F->image_dir, "a-dir", NULL);
        g_assert_no_errno(mkdir(dir, 0755));

        for (size_t u = 0; u < G_N_ELEMENTS(callers); u++) {
                uid_t uid = callers[u];
                int pipefd[2], sock[2];
                int memfd_empty = memfd_create("loopd-test-empty", MFD_CLOEXEC);
                int memfd = memfd_create("loopd-test", MFD_CLOEXEC);
                g_autofree char *del_name = g_strdup_printf("deleted-%u.img", (unsigned) uid);
                g_autofree char *del_path = image(del_name, 1 << 20, NOBODY, 0600);
                int del_fd = open(del_path, O_RDWR | O_CLOEXEC);

                g_assert_no_errno(pipe2(pipefd, O_CLOEXEC));
                g_assert_no_errno(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sock));
                g_assert_no_errno(memfd);
                g_assert_no_errno(ftruncate(memfd, 1 << 20));
                g_assert_no_errno(del_fd);
                g_assert_no_errno(unlink(del_path));

                const FdCase cases[] = {
                        { "regular file O_RDONLY", open(img, O_RDONLY | O_CLOEXEC), NULL, TRUE },
                        { "regular file O_RDWR", open(img, O_RDWR | O_CLOEXEC), NULL, FALSE },
                        { "regular file O_RDWR|O_APPEND", open(img, O_RDWR | O_APPEND | O_CLOEXEC), NULL, FALSE },
                        { "regular file O_WRONLY", open(img, O_WRONLY | O_CLOEXEC), LOOPD_ERROR_BAD_BACKING_FILE },
                        { "regular file O_PATH", open(img, O_PATH | O_CLOEXEC), LOOPD_ERROR_BAD_BACKING_FILE },
                        { "empty regular file", open(empty, O_RDWR | O_CLOEXEC), LOOPD_DBUS_ERROR_INVALID_ARGS },
                        { "100-byte regular file", open(tiny, O_RDWR | O_CLOEXEC), LOOPD_DBUS_ERROR_INVALID_ARGS },
                        { "directory", open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), LOOPD_ERROR_BAD_BACKING_FILE },
                        { "directory O_PATH", open(dir, O_PATH | O_CLOEXEC), LOOPD_ERROR_BAD_BACKING_FILE },
                        { "pipe, read end", pipefd[0], LOOPD_ERROR_BAD_BACKING_FILE },
                        { "pipe, write end", pipefd[1], LOOPD_ERROR_BAD_BACKING_FILE },
                        { "unix socket", sock[0], LOOPD_ERROR_BAD_BACKING_FILE },
                        { "/dev/null O_RDWR", open("/dev/null", O_RDWR | O_CLOEXEC), LOOPD_ERROR_BAD_BACKING_FILE },
                        { "/dev/zero O_RDONLY", open("/dev/zero", O_RDONLY | O_CLOEXEC), LOOPD_ERROR_BAD_BACKING_FILE },
                        { "eventfd (anonymous inode)", eventfd(0, EFD_CLOEXEC), LOOPD_ERROR_BAD_BACKING_FILE },
                        /* A memfd is a regular (shmem) file the caller holds: accepted
                         * like any file, refused like any file when empty. */
                        { "memfd, empty", memfd_empty, LOOPD_DBUS_ERROR_INVALID_ARGS },
                        { "memfd, 1 MiB", memfd, NULL, FALSE, TRUE },
                        /* Unlinked after opening: still the caller's file. */
                        { "file deleted after opening", del_fd, NULL, FALSE },
                };
                for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                        g_assert_cmpint(cases[i].fd, >=, 0);
                        run_fd_case(uid, &cases[i], NULL);
                        n++;
                }
                /* An O_RDONLY fd gives a read-only device whatever the options say. */
                {
                        FdCase ro = { "O_RDONLY with read-only=false", cases[0].fd, NULL, TRUE };
                        run_fd_case(uid, &ro, "{'read-only': <false>}");
                        FdCase rw_ro = { "O_RDWR with read-only=true", cases[1].fd, NULL, TRUE };
                        run_fd_case(uid, &rw_ro, "{'read-only': <true>}");
                        n += 2;
                }
                /* The deleted file's device says so. */
                {
                        g_auto(SecCall) c = { 0 };
                        g_autofree char *backing = NULL;
                        create_fd(uid, del_fd, "{}", &c);
                        g_assert_true(c.ok);
                        backing = string_property(c.object, "BackingFile");
                        g_assert_true(g_str_has_suffix(backing, " (deleted)"));
                        sec_remove(F, c.device);
                }
                close(sock[1]);
                for (size_t i = 0; i < G_N_ELEMENTS(cases); i++)
                        close(cases[i].fd);
        }

        /* A loop device as the backing: a block device, so accepted; never
         * more than the fd allowed. Root opens it (the node is root's) and
         * hands the fd on, as a privileged helper might. */
        {
                g_auto(SecCall) a = { 0 };
                int fd = open(img, O_RDWR | O_CLOEXEC);
                create_fd(0, fd, "{}", &a);
                close(fd);
                g_assert_true(a.ok);
                for (size_t u = 0; u < G_N_ELEMENTS(callers); u++)
                        for (int rw = 0; rw <= 1; rw++) {
                                g_autofree char *what = g_strdup_printf("loop device %s %s", a.device,
                                                                        rw ? "O_RDWR" : "O_RDONLY");
                                g_auto(SecCall) b = { 0 };
                                g_autofree char *backing = NULL;
                                int lfd = open(a.device, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC);
                                g_assert_no_errno(lfd);
                                create_fd(callers[u], lfd, "{}", &b);
                                if (!b.ok)
                                        g_error("uid %u, %s: %s: %s", (unsigned) callers[u], what, b.error_name,
                                                b.error_message);
                                g_assert_cmpint(bool_property(b.object, "ReadOnly"), ==, !rw);
                                backing = string_property(b.object, "BackingFile");
                                g_assert_cmpstr(backing, ==, a.device);
                                sec_remove(F, b.device);
                                /* O_WRONLY on the block device: no. */
                                close(lfd);
                                sec_assert_daemon_answers(F);
                                n++;
                        }
                {
                        FdCase wo = { "loop device O_WRONLY", open(a.device, O_WRONLY | O_CLOEXEC),
                                      LOOPD_ERROR_BAD_BACKING_FILE };
                        run_fd_case(NOBODY, &wo, NULL);
                        close(wo.fd);
                        n++;
                }
                sec_remove(F, a.device);
        }
        g_test_message("%u backing fd cases", n);
        g_assert_cmpuint(loopd_fixture_count_loops(F), ==, 0);
}

/* ---- device names ------------------------------------------------------- */

static void test_device_names(void) {
        g_autofree char *link = g_build_filename(F ? F->image_dir : "/", "loop0-link", NULL);
        g_autofree char *fifo = g_build_filename(F ? F->image_dir : "/", "loop-fifo", NULL);
        g_autofree char *long1 = NULL, *long2 = NULL, *long3 = NULL;
        static const char *const methods[] = { "GetDevice", "Remove", "RefreshSize" };
        guint n = 0;

        if (skip_if_no_fixture())
                return;
        g_assert_no_errno(symlink("/dev/loop0", link));
        g_assert_no_errno(mkfifo(fifo, 0666));
        long1 = g_strnfill(10240, 'x');
        {
                g_autofree char *digits = g_strnfill(10240, '1');
                long2 = g_strconcat("/dev/loop", digits, NULL);
                long3 = g_strconcat("loop0", digits, NULL);
        }

        const char *const names[] = {
                "", "loop", "loop-1", "loop01", "loop00", "loop4294967296", "loop1048576", "loop+1", "loop0x1",
                "loop 0", " loop0", "loop0 ", "loop0\n", "LOOP0", "Loop0", "/dev/../dev/loop0", "/dev/loop0/",
                "/dev//loop0", "//dev/loop0", "dev/loop0", "./loop0", "/dev/loop0p1", "loop0p1", "/sys/block/loop0",
                "/dev/loop-control", "/dev/vda", "/dev/null", "/etc/shadow", "/proc/self/fd/0", "loop0/../loop1",
                link, fifo, long1, long2, long3,
        };
        for (size_t u = 0; u < G_N_ELEMENTS(callers); u++)
                for (size_t m = 0; m < G_N_ELEMENTS(methods); m++)
                        for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
                                g_auto(SecCall) c = { 0 };
                                g_autofree char *q = sec_quote(names[i]);
                                g_autofree char *args = g_strdup_printf("(%s,)", q);
                                gint64 t0 = g_get_monotonic_time();

                                sec_call(F, callers[u], methods[m], args, -1, FALSE, &c);
                                if (c.ok || strcmp(c.error_name, LOOPD_ERROR_NOT_A_LOOP_DEVICE) != 0)
                                        g_error("uid %u %s('%.60s'): %s: %s", (unsigned) callers[u], methods[m],
                                                names[i], c.ok ? "accepted" : c.error_name,
                                                c.ok ? "" : c.error_message);
                                /* Parsed, never opened: the FIFO would block an open(). */
                                g_assert_cmpint(g_get_monotonic_time() - t0, <,
                                                (gint64) (5 * G_USEC_PER_SEC * loopd_test_timeout_scale()));
                                sec_assert_daemon_answers(F);
                                n++;
                        }
        /* Well-formed, but not attached. */
        for (size_t u = 0; u < G_N_ELEMENTS(callers); u++)
                for (size_t m = 0; m < G_N_ELEMENTS(methods); m++) {
                        g_auto(SecCall) c = { 0 };
                        sec_call(F, callers[u], methods[m], "('/dev/loop1048575',)", -1, FALSE, &c);
                        sec_assert_error(&c, LOOPD_ERROR_NO_SUCH_DEVICE, NULL);
                        n++;
                }
        g_test_message("%u device name cases", n);
}

/* ---- CreateFromPath ------------------------------------------------------ */

static void test_create_from_path(void) {
        g_autofree char *fifo = NULL, *root_only = NULL, *readable = NULL, *nobody_dir = NULL, *shadow_link = NULL;
        g_autofree char *dir = NULL, *missing = NULL, *too_long = NULL, *img_root = NULL, *dev_path = NULL;
        guint n = 0;

        if (skip_if_no_fixture())
                return;
        fifo = g_build_filename(F->image_dir, "fifo", NULL);
        g_assert_no_errno(mkfifo(fifo, 0666));
        g_assert_no_errno(chmod(fifo, 0666));
        root_only = image("root-only.img", 1 << 20, 0, 0600);
        readable = image("root-readable.img", 1 << 20, 0, 0644);
        img_root = image("root-dev.img", 1 << 20, 0, 0600);
        nobody_dir = g_build_filename(F->image_dir, "nobody-dir", NULL);
        g_assert_no_errno(mkdir(nobody_dir, 0755));
        g_assert_no_errno(chown(nobody_dir, NOBODY, NOBODY));
        shadow_link = g_build_filename(nobody_dir, "shadow.img", NULL);
        g_assert_no_errno(symlink("/etc/shadow", shadow_link));
        g_assert_no_errno(lchown(shadow_link, NOBODY, NOBODY));
        dir = g_build_filename(F->image_dir, "a-dir-too", NULL);
        g_assert_no_errno(mkdir(dir, 0755));
        missing = g_build_filename(F->image_dir, "missing.img", NULL);
        {
                g_autofree char *a = g_strnfill(5000, 'a');
                too_long = g_strconcat("/", a, NULL);
        }
        {
                g_auto(SecCall) c = { 0 };
                int fd = open(img_root, O_RDWR | O_CLOEXEC);
                create_fd(0, fd, "{}", &c);
                close(fd);
                g_assert_true(c.ok);
                dev_path = g_strdup(c.device);
        }

        typedef struct PathCase {
                uid_t uid;
                const char *path;
                const char *options;
                const char *error;
                const char *needle;
        } PathCase;
        const PathCase cases[] = {
                { 0, "", "{}", LOOPD_DBUS_ERROR_INVALID_ARGS, "absolute" },
                { NOBODY, "", "{}", LOOPD_DBUS_ERROR_INVALID_ARGS, "absolute" },
                { 0, "images/x.img", "{}", LOOPD_DBUS_ERROR_INVALID_ARGS, "absolute" },
                { NOBODY, "x.img", "{}", LOOPD_DBUS_ERROR_INVALID_ARGS, "absolute" },
                { NOBODY, "./x.img", "{}", LOOPD_DBUS_ERROR_INVALID_ARGS, "absolute" },
                { NOBODY, "../../etc/shadow", "{}", LOOPD_DBUS_ERROR_INVALID_ARGS, "absolute" },
                { NOBODY, too_long, "{}", LOOPD_DBUS_ERROR_INVALID_ARGS, "PATH_MAX" },
                /* A FIFO must not hang the opener: O_NONBLOCK, then refused by type. */
                { 0, fifo, "{}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
                { 0, fifo, "{'read-only': <true>}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
                { NOBODY, fifo, "{}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
                { NOBODY, fifo, "{'read-only': <true>}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
                /* The caller's rights, never the daemon's. */
                { NOBODY, root_only, "{'read-only': <true>}", LOOPD_DBUS_ERROR_ACCESS_DENIED, "uid 65534" },
                { NOBODY, root_only, "{}", LOOPD_DBUS_ERROR_ACCESS_DENIED, "ask for read-only" },
                { NOBODY, readable, "{}", LOOPD_DBUS_ERROR_ACCESS_DENIED, "ask for read-only" },
                { NOBODY, shadow_link, "{}", LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL },
                { NOBODY, shadow_link, "{'read-only': <true>}", LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL },
                { NOBODY, "/etc/shadow", "{'read-only': <true>}", LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL },
                { NOBODY, dev_path, "{'read-only': <true>}", LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL },
                { NOBODY, "/dev/loop-control", "{}", LOOPD_DBUS_ERROR_ACCESS_DENIED, NULL },
                /* Not files that can back a device. */
                { 0, dir, "{}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
                { NOBODY, dir, "{'read-only': <true>}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
                { NOBODY, "/dev/null", "{}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
                { 0, "/dev/zero", "{'read-only': <true>}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
                { NOBODY, "/proc/self/status", "{'read-only': <true>}", LOOPD_DBUS_ERROR_INVALID_ARGS, NULL },
                { 0, missing, "{}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
                { NOBODY, missing, "{}", LOOPD_ERROR_BAD_BACKING_FILE, NULL },
        };
        for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
                const PathCase *k = &cases[i];
                g_auto(SecCall) c = { 0 };
                gint64 t0 = g_get_monotonic_time();

                create_path(k->uid, k->path, k->options, &c);
                if (c.ok) {
                        sec_remove(F, c.device);
                        g_error("uid %u CreateFromPath('%.60s', %s): accepted", (unsigned) k->uid, k->path, k->options);
                }
                if (strcmp(c.error_name, k->error) != 0 || (k->needle && !strstr(c.error_message, k->needle)))
                        g_error("uid %u CreateFromPath('%.60s', %s): %s: %s (wanted %s naming %s)", (unsigned) k->uid,
                                k->path, k->options, c.error_name, c.error_message, k->error,
                                k->needle ? k->needle : "-");
                g_assert_cmpint(g_get_monotonic_time() - t0, <,
                                (gint64) (5 * G_USEC_PER_SEC * loopd_test_timeout_scale()));
                sec_assert_daemon_answers(F);
                n++;
        }
        /* What nobody may read, it may map read-only. */
        {
                g_auto(SecCall) c = { 0 };
                create_path(NOBODY, readable, "{'read-only': <true>}", &c);
                g_assert_true(c.ok);
                g_assert_true(bool_property(c.object, "ReadOnly"));
                sec_remove(F, c.device);
                n++;
        }
        sec_remove(F, dev_path);
        g_test_message("%u CreateFromPath cases", n);
        g_assert_cmpuint(loopd_fixture_count_loops(F), ==, 0);
}

/* ---- and after all of it ------------------------------------------------- */

static void test_daemon_survived_everything(void) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) objects = NULL;
        g_autoptr(GVariantIter) iter = NULL;
        const char *path;
        GVariant *ifaces;
        pid_t pid;

        if (skip_if_no_fixture())
                return;
        pid = loopd_fixture_daemon_pid(F);
        sec_assert_daemon_answers(F);
        g_assert_cmpint(loopd_fixture_daemon_pid(F), ==, pid);
        g_assert_cmpuint(loopd_fixture_count_loops(F), ==, 0);

        /* No device loopd knows is backed by anything of ours (memfds included). */
        objects = g_dbus_connection_call_sync(F->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                              "org.freedesktop.DBus.ObjectManager", "GetManagedObjects", NULL,
                                              G_VARIANT_TYPE("(a{oa{sa{sv}}})"), G_DBUS_CALL_FLAGS_NONE, 10000, NULL,
                                              &error);
        g_assert_no_error(error);
        g_variant_get(objects, "(a{oa{sa{sv}}})", &iter);
        while (g_variant_iter_loop(iter, "{&o@a{sa{sv}}}", &path, &ifaces)) {
                g_autofree char *backing = NULL;
                g_autoptr(GVariant) dev = g_variant_lookup_value(ifaces, LOOPD_DEVICE_INTERFACE, NULL);
                if (!dev || !g_variant_lookup(dev, "BackingFile", "s", &backing))
                        continue;
                g_assert_false(g_str_has_prefix(backing, F->tmpdir));
                g_assert_false(g_str_has_prefix(backing, "/memfd:loopd-test"));
        }

        /* A clean exit: status 0, so no sanitizer report either. */
        loopd_fixture_stop_daemon(F);
}

int main(int argc, char **argv) {
        static const LoopdFixtureOptions opts = {
                .start_polkit = TRUE,
                .polkit_rules = rules_nobody_may_create,
                .start_daemon = TRUE,
        };
        int r;

        sec_helper_main_if_requested(argc, argv);
        g_test_init(&argc, &argv, NULL);

        F = loopd_fixture_new(&opts);
        g_test_add_func("/security/hostile/create-options", test_create_options);
        g_test_add_func("/security/hostile/backing-fd-kinds", test_backing_fd_kinds);
        g_test_add_func("/security/hostile/device-names", test_device_names);
        g_test_add_func("/security/hostile/create-from-path", test_create_from_path);
        g_test_add_func("/security/hostile/daemon-survived-everything", test_daemon_survived_everything);
        r = g_test_run();
        loopd_fixture_free(F);
        return r;
}
