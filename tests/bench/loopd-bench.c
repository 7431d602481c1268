/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * loopd-bench: loopd against the kernel, the bus, losetup and udisks2, in one
 * run on one sparse backing file. Prints one markdown table.
 *
 * Everything it starts (a private dbus-daemon, loopd, and with --with-udisks
 * systemd-udevd, polkitd and udisksd) carries LOOPD_BENCH_TAG=<tmpdir> in its
 * environment. Cleanup kills every process with that tag, detaches every
 * loop device whose backing file lies under <tmpdir>, unmounts its tmpfs and
 * removes <tmpdir>: tests/lib/emergency.h does it on crashes, signals and
 * exit, and its janitor process after a SIGKILL; a normal exit first lets
 * the services stop cleanly and deletes the loop nodes the run added.
 * tests/bench/run-bench repeats the sweep after we exit.
 *
 * Targets are reported, never asserted: the exit status is 0 when every
 * measurement ran, 77 when the machine cannot run it (not root), 1 otherwise.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "emergency.h"
#include "loop-device.h"
#include "loopd-protocol.h"
#include "loopd.h"

/* ---- options ----------------------------------------------------------------- */

static unsigned arg_cycles = 1000;          /* main interleaved cycle */
static unsigned arg_proc_cycles = 100;      /* process cycles (loopctl, losetup, busctl, gdbus) */
static double arg_conc_seconds = 1.0;       /* per level per round */
static unsigned arg_conc_rounds = 3;
static unsigned arg_devices = 1000;         /* RSS with this many attached */
static unsigned arg_activations = 10;
static unsigned arg_settle_ms = 3;          /* quiet time before each interleaved operation */
static unsigned arg_udisks_cycles = 100;
static bool arg_with_udisks = false;
static const char *arg_out = NULL;
static const char *arg_tmpdir = NULL;
static const char *arg_loopd = LOOPD_BENCH_LOOPD;
static const char *arg_loopctl = LOOPD_BENCH_LOOPCTL;
static const char *arg_policy = LOOPD_BENCH_BUS_POLICY;

/* ---- state for cleanup --------------------------------------------------------- */

static char g_tmp[1024];
static bool g_tmp_ours;
/* loopd's state directory lives in /run on a systemd host, a tmpfs; here
 * /run may be on disk, where each owner record costs a journal write.
 * g_run is a tmpfs of our own (or, if it cannot be mounted, a plain dir). */
static char g_run[1100];
static bool g_run_tmpfs;
static pid_t g_main_pid;
static volatile sig_atomic_t g_cleaning;
static bool g_had_node[1 << 16]; /* loop nodes that existed before we started */
static bool g_have_nodes_snapshot;
static char g_bus_address[512];
static char g_backing[PATH_MAX];

/* Registered with the emergency cleanup (tests/lib/emergency.h), which
 * kills them if we die. */
static void track(pid_t pid, bool child) {
        int r = emergency_add_pid(pid, child ? EMERGENCY_PID_CHILD : 0);
        if (r < 0 && r != -ESRCH)
                fprintf(stderr, "loopd-bench: cannot register pid %d for cleanup: %s\n", (int) pid, strerror(-r));
}

static void untrack(pid_t pid) {
        emergency_forget_pid(pid);
}

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * 1000000000ULL + (uint64_t) ts.tv_nsec;
}

static double us_since(uint64_t t0) {
        return (double) (now_ns() - t0) / 1000.0;
}

static void msleep(unsigned ms) {
        struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

static const char *strnull(const char *s) {
        return s ? s : "";
}

static void logf_(const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fputs("loopd-bench: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
}
#define LOG(...) logf_(__VA_ARGS__)

static bool read_small(const char *path, char *buf, size_t size) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n;
        if (fd < 0)
                return false;
        n = read(fd, buf, size - 1);
        close(fd);
        if (n < 0)
                return false;
        buf[n] = 0;
        return true;
}

/* Does /proc/PID/environ (or cmdline) mention our tag? */
static bool proc_is_ours(pid_t pid) {
        char path[64], buf[65536];
        const char *names[] = { "environ", "cmdline" };
        size_t tl = strlen(g_tmp);

        for (size_t k = 0; k < 2; k++) {
                int fd;
                ssize_t n;
                snprintf(path, sizeof path, "/proc/%d/%s", (int) pid, names[k]);
                fd = open(path, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        continue;
                n = read(fd, buf, sizeof buf);
                close(fd);
                for (ssize_t i = 0; n > 0 && i + (ssize_t) tl <= n; i++)
                        if (memcmp(buf + i, g_tmp, tl) == 0)
                                return true;
        }
        return false;
}

/* Kills every process carrying our tag (except us), by pid. */
static void kill_ours(int sig) {
        DIR *d = opendir("/proc");
        struct dirent *de;
        if (!d)
                return;
        while ((de = readdir(d))) {
                char *end;
                long pid = strtol(de->d_name, &end, 10);
                if (*end || pid <= 1 || pid == getpid() || pid == emergency_janitor_pid())
                        continue;
                if (proc_is_ours((pid_t) pid))
                        (void) kill((pid_t) pid, sig);
        }
        closedir(d);
}

/* Deletes unbound loop nodes that did not exist when we started (the 1,000
 * devices leave ~1,000 free nodes; LOOP_CTL_REMOVE takes ~47 ms each, so do
 * it from many threads: the RCU grace periods overlap). Bounded in time. */
static int g_ctl_for_trim = -1;
static uint32_t *g_trim_list;
static size_t g_trim_n;
static size_t g_trim_next;
static pthread_mutex_t g_trim_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t g_trim_deadline;

static void *trim_worker(void *arg) {
        for (;;) {
                size_t i;
                pthread_mutex_lock(&g_trim_lock);
                i = g_trim_next++;
                pthread_mutex_unlock(&g_trim_lock);
                if (i >= g_trim_n || now_ns() > g_trim_deadline)
                        return NULL;
                (void) ioctl(g_ctl_for_trim, LOOP_CTL_REMOVE, g_trim_list[i]);
        }
}

static size_t count_added_free_nodes(uint32_t **ret) {
        uint32_t *nums = NULL, *out;
        int n = loop_list_numbers(&nums);
        size_t k = 0;
        if (n <= 0 || !g_have_nodes_snapshot) {
                free(nums);
                *ret = NULL;
                return 0;
        }
        out = calloc((size_t) n, sizeof *out);
        for (int i = 0; out && i < n; i++) {
                char path[128], buf[64];
                if (nums[i] < (1u << 16) && g_had_node[nums[i]])
                        continue;
                snprintf(path, sizeof path, "/sys/block/loop%u/size", nums[i]);
                if (read_small(path, buf, sizeof buf) && strtoull(buf, NULL, 10) == 0) {
                        snprintf(path, sizeof path, "/sys/block/loop%u/loop/backing_file", nums[i]);
                        if (access(path, F_OK) < 0)
                                out[k++] = nums[i];
                }
        }
        free(nums);
        *ret = out;
        return k;
}

static void trim_added_nodes(double max_seconds) {
        pthread_t th[32];
        size_t nth = 0;
        uint64_t t0 = now_ns();
        g_trim_n = count_added_free_nodes(&g_trim_list);
        if (g_trim_n == 0)
                return;
        g_ctl_for_trim = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        if (g_ctl_for_trim < 0)
                return;
        g_trim_next = 0;
        g_trim_deadline = now_ns() + (uint64_t) (max_seconds * 1e9);
        for (; nth < 32; nth++)
                if (pthread_create(&th[nth], NULL, trim_worker, NULL) != 0)
                        break;
        for (size_t i = 0; i < nth; i++)
                pthread_join(th[i], NULL);
        LOG("deleted up to %zu loop nodes the run added, in %.1f s", g_trim_n, us_since(t0) / 1e6);
        close(g_ctl_for_trim);
        free(g_trim_list);
        g_trim_list = NULL;
}

/*
 * Normal exit: loopd and the services get SIGTERM and two seconds, so they
 * exit as they would on a host; then the emergency cleanup does the rest,
 * exactly as after a crash (where it runs from the signal handler or the
 * janitor): SIGKILL what is left, detach the devices backed by files under
 * g_tmp, unmount g_run, remove what we made. In between, the loop nodes the
 * run added are deleted, which takes threads and so only happens here.
 */
static void cleanup(void) {
        if (g_cleaning || getpid() != g_main_pid || !g_tmp[0])
                return;
        g_cleaning = 1;
        kill_ours(SIGTERM);
        for (int i = 0; i < 40; i++) {
                while (waitpid(-1, NULL, WNOHANG) > 0)
                        ;
                msleep(50);
        }
        emergency_cleanup(EMERGENCY_PID | EMERGENCY_TAGGED | EMERGENCY_LOOP | EMERGENCY_LOOPS_UNDER);
        trim_added_nodes(20);
        emergency_run();
}

static void at_exit_cleanup(void) {
        cleanup();
}

/* ---- processes ------------------------------------------------------------------ */

/* fork + exec with PR_SET_PDEATHSIG; stdout into *out_fd if given, stderr to
 * /dev/null if quiet. Extra environment: "K=V" strings. */
static pid_t spawn(const char *const *argv, int *out_fd, bool quiet, int map_fd3) {
        int p[2] = { -1, -1 };
        pid_t pid;

        if (out_fd && pipe2(p, O_CLOEXEC) < 0)
                return -1;
        pid = fork();
        if (pid < 0)
                return -1;
        if (pid == 0) {
                int nul;
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (getppid() == 1)
                        _exit(127);
                sigset_t all;
                sigemptyset(&all);
                sigprocmask(SIG_SETMASK, &all, NULL);
                nul = open("/dev/null", O_RDWR);
                dup2(nul, STDIN_FILENO);
                if (out_fd)
                        dup2(p[1], STDOUT_FILENO);
                else
                        dup2(nul, STDOUT_FILENO);
                if (quiet)
                        dup2(nul, STDERR_FILENO);
                if (map_fd3 >= 0) {
                        if (map_fd3 == 3)
                                fcntl(3, F_SETFD, 0);
                        else
                                dup2(map_fd3, 3);
                }
                execvp(argv[0], (char *const *) argv);
                _exit(127);
        }
        if (out_fd) {
                close(p[1]);
                *out_fd = p[0];
        }
        return pid;
}

/* Runs argv to completion; stdout (first 4 KiB) into out. Exit code, or -1. */
static int run(const char *const *argv, char *out, size_t outsz, int map_fd3) {
        int fd = -1, st;
        size_t len = 0;
        pid_t pid = spawn(argv, out ? &fd : NULL, true, map_fd3);
        if (pid < 0)
                return -1;
        if (out) {
                ssize_t n;
                while ((n = read(fd, out + len, outsz - 1 - len)) > 0 || (n < 0 && errno == EINTR))
                        if (n > 0)
                                len += (size_t) n;
                out[len] = 0;
                close(fd);
        }
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* "/dev/loopN" -> "loopN" found anywhere in s, copied to ret (64 bytes). */
static bool find_loop_name(const char *s, char *ret) {
        const char *p = strstr(s, "/dev/loop");
        size_t n = 0;
        if (!p)
                return false;
        p += 5;
        while (n < 63 && (p[n] == 'l' || p[n] == 'o' || p[n] == 'p' || (p[n] >= '0' && p[n] <= '9')))
                n++;
        memcpy(ret, p, n);
        ret[n] = 0;
        return n > 4;
}

/* A "Key:  N kB" line of /proc/PID/status, in KiB; -1 if unknown.
 * RssAnon is the process's own memory, RssFile its mapped files (shared
 * libraries, whose pages every process using them shares). */
static long status_kib(pid_t pid, const char *key) {
        char path[64], buf[4096], *p;
        snprintf(path, sizeof path, "/proc/%d/status", (int) pid);
        if (!read_small(path, buf, sizeof buf) || !(p = strstr(buf, key)))
                return -1;
        return strtol(p + strlen(key), NULL, 10);
}

static long rss_kib(pid_t pid) {
        return status_kib(pid, "VmRSS:");
}

static const char *find_exe(const char *const *candidates) {
        for (size_t i = 0; candidates[i]; i++) {
                if (candidates[i][0] == '/') {
                        if (access(candidates[i], X_OK) == 0)
                                return candidates[i];
                        continue;
                }
                const char *path = getenv("PATH");
                char buf[PATH_MAX];
                if (!path)
                        path = "/usr/sbin:/usr/bin:/sbin:/bin";
                for (const char *s = path; *s;) {
                        size_t n = strcspn(s, ":");
                        snprintf(buf, sizeof buf, "%.*s/%s", (int) n, s, candidates[i]);
                        if (access(buf, X_OK) == 0)
                                return strdup(buf);
                        s += n;
                        if (*s)
                                s++;
                }
        }
        return NULL;
}

/* ---- statistics ----------------------------------------------------------------- */

typedef struct Samples {
        double *v;
        size_t n, cap;
        bool sorted;
} Samples;

static void add(Samples *s, double x) {
        if (s->n == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 256;
                s->v = realloc(s->v, s->cap * sizeof *s->v);
                if (!s->v)
                        abort();
        }
        s->v[s->n++] = x;
        s->sorted = false;
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static double quantile(Samples *s, double q) {
        if (s->n == 0)
                return -1;
        if (!s->sorted) {
                qsort(s->v, s->n, sizeof *s->v, cmp_double);
                s->sorted = true;
        }
        size_t i = (size_t) (q * (double) (s->n - 1) + 0.5);
        return s->v[i];
}
static double med(Samples *s) { return quantile(s, 0.5); }
static double p99(Samples *s) { return quantile(s, 0.99); }

/* ---- output ------------------------------------------------------------------------ */

static char *g_table;
static size_t g_table_len;

static void out(const char *fmt, ...) {
        va_list ap;
        char *line = NULL;
        int n;
        va_start(ap, fmt);
        n = vasprintf(&line, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        g_table = realloc(g_table, g_table_len + (size_t) n + 1);
        memcpy(g_table + g_table_len, line, (size_t) n + 1);
        g_table_len += (size_t) n;
        free(line);
}

/* "1,234" style, microseconds */
static const char *fmt_us(double us, char *buf) {
        if (us < 0)
                snprintf(buf, 32, "n/a");
        else if (us >= 10000)
                snprintf(buf, 32, "%.1f ms", us / 1000);
        else if (us >= 1000)
                snprintf(buf, 32, "%.2f ms", us / 1000);
        else
                snprintf(buf, 32, "%.0f µs", us);
        return buf;
}

static void row_samples(const char *what, Samples *s, const char *note) {
        char a[32], b[32];
        out("| %s | %s | %s | %s |\n", what, fmt_us(med(s), a), fmt_us(p99(s), b), note ? note : "");
}

/* ---- bus -------------------------------------------------------------------------- */

/* What the benchmark adds to the private bus of tests/lib/private-system-bus.conf.in:
 * room for many connections and pending calls, and udisks2's own policy (--with-udisks). */
static const char bus_extra_config[] =
        "  <limit name=\"max_connections_per_user\">4096</limit>\n"
        "  <limit name=\"max_replies_per_connection\">4096</limit>\n"
        "  <include ignore_missing=\"yes\">/usr/share/dbus-1/system.d/org.freedesktop.UDisks2.conf</include>";

static pid_t g_bus_pid, g_loopd_pid;

static bool write_file(const char *path, const char *content, mode_t mode) {
        FILE *f = fopen(path, "we");
        if (!f)
                return false;
        fputs(content, f);
        if (fclose(f) != 0)
                return false;
        return chmod(path, mode) == 0;
}

/* Frees @text and returns it with every @token replaced by @value; NULL if
 * @text is NULL or has no @token (the template and this program drifted apart). */
static char *substitute(char *text, const char *token, const char *value) {
        char *out = NULL;
        const char *p = text, *hit;
        size_t size = 0, n = 0;
        FILE *f;

        if (!text || !(f = open_memstream(&out, &size))) {
                free(text);
                return NULL;
        }
        for (; (hit = strstr(p, token)); p = hit + strlen(token), n++) {
                fwrite(p, 1, (size_t) (hit - p), f);
                fputs(value, f);
        }
        fputs(p, f);
        free(text);
        if (fclose(f) != 0 || n == 0) {
                if (n == 0)
                        LOG("%s has no %s", LOOPD_BENCH_BUS_CONFIG_TEMPLATE, token);
                free(out);
                return NULL;
        }
        return out;
}

static bool start_bus(void) {
        char path[PATH_MAX], services[PATH_MAX], socket_path[PATH_MAX], template[65536], *conf, arg[PATH_MAX + 32];
        const char *const subst[][2] = {
                { "@BUS_SOCKET@", socket_path },
                { "@SERVICE_DIR@", services },
                { "@LOOPD_BUS_POLICY@", arg_policy },
                { "@EXTRA_CONFIG@", bus_extra_config },
        };
        int fd;
        size_t len = 0;
        uint64_t deadline = now_ns() + 10000000000ULL;
        bool ok;

        snprintf(services, sizeof services, "%s/services", g_tmp);
        (void) mkdir(services, 0755);
        snprintf(socket_path, sizeof socket_path, "%s/bus.socket", g_tmp);
        if (!read_small(LOOPD_BENCH_BUS_CONFIG_TEMPLATE, template, sizeof template)) {
                LOG("%s: %m", LOOPD_BENCH_BUS_CONFIG_TEMPLATE);
                return false;
        }
        conf = strdup(template);
        for (size_t i = 0; i < sizeof subst / sizeof *subst; i++)
                conf = substitute(conf, subst[i][0], subst[i][1]);
        if (!conf)
                return false;
        snprintf(path, sizeof path, "%s/bus.conf", g_tmp);
        ok = write_file(path, conf, 0644);
        free(conf);
        if (!ok)
                return false;
        snprintf(arg, sizeof arg, "--config-file=%s", path);
        g_bus_pid = spawn((const char *const[]) { "dbus-daemon", "--nofork", "--nopidfile", "--nosyslog",
                                                  "--print-address=1", arg, NULL },
                          &fd, true, -1);
        if (g_bus_pid <= 0)
                return false;
        track(g_bus_pid, true);
        while (!memchr(g_bus_address, '\n', len) && now_ns() < deadline) {
                struct pollfd p = { .fd = fd, .events = POLLIN };
                ssize_t n;
                if (poll(&p, 1, 100) <= 0)
                        continue;
                n = read(fd, g_bus_address + len, sizeof g_bus_address - 1 - len);
                if (n <= 0)
                        break;
                len += (size_t) n;
        }
        close(fd);
        g_bus_address[len] = 0;
        if (!strchr(g_bus_address, '\n'))
                return false;
        *strchr(g_bus_address, '\n') = 0;
        setenv("DBUS_SYSTEM_BUS_ADDRESS", g_bus_address, 1);
        return true;
}

static int open_bus(sd_bus **ret) {
        sd_bus *b = NULL;
        int r = sd_bus_new(&b);
        if (r < 0)
                return r;
        (void) sd_bus_set_address(b, g_bus_address);
        (void) sd_bus_set_bus_client(b, 1);
        (void) sd_bus_negotiate_fds(b, 1);
        r = sd_bus_start(b);
        if (r < 0) {
                sd_bus_unref(b);
                return r;
        }
        *ret = b;
        return 0;
}

static bool name_has_owner(sd_bus *bus, const char *name) {
        sd_bus_message *reply = NULL;
        int has = 0;
        if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "NameHasOwner", NULL, &reply, "s", name) < 0)
                return false;
        (void) sd_bus_message_read(reply, "b", &has);
        sd_bus_message_unref(reply);
        return has;
}

static pid_t name_owner_pid(sd_bus *bus, const char *name) {
        sd_bus_message *reply = NULL;
        uint32_t pid = 0;
        if (sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                               "GetConnectionUnixProcessID", NULL, &reply, "s", name) < 0)
                return 0;
        (void) sd_bus_message_read(reply, "u", &pid);
        sd_bus_message_unref(reply);
        return (pid_t) pid;
}

static bool wait_name(sd_bus *bus, const char *name, bool owned, double seconds) {
        uint64_t deadline = now_ns() + (uint64_t) (seconds * 1e9);
        while (now_ns() < deadline) {
                if (name_has_owner(bus, name) == owned)
                        return true;
                msleep(2);
        }
        return false;
}

static bool start_loopd(sd_bus *bus) {
        char sd[PATH_MAX + 32];
        snprintf(sd, sizeof sd, "--state-dir=%s/state", g_run);
        /* As loopd.service starts it; env execs loopd in the same pid. */
        g_loopd_pid = spawn((const char *const[]) { "env", "GLIBC_TUNABLES=" LOOPD_BENCH_MALLOC_TUNABLES, arg_loopd, sd,
                                                    "--idle-timeout=0", NULL },
                            NULL, false, -1);
        if (g_loopd_pid <= 0)
                return false;
        track(g_loopd_pid, true);
        return wait_name(bus, LOOPD_BUS_NAME, true, 10);
}

static void stop_pid(pid_t pid, bool child) {
        if (pid <= 0)
                return;
        (void) kill(pid, SIGTERM);
        for (int i = 0; i < 500; i++) {
                if (child ? waitpid(pid, NULL, WNOHANG) == pid : (kill(pid, 0) < 0 && errno == ESRCH))
                        break;
                msleep(10);
        }
        (void) kill(pid, SIGKILL);
        if (child)
                (void) waitpid(pid, NULL, 0);
        untrack(pid);
}

/* ---- the cycles -------------------------------------------------------------------------- */

static int g_ctl = -1;

/* Kernel floor: LOOP_CONFIGURE on a free node + CLR_FD/close (node kept). */
static int core_cycle(int backing_fd, double *create_us, double *remove_us) {
        LoopConfig cfg = { 0 };
        LoopDevice *d = NULL;
        uint64_t t0 = now_ns();
        int r = loop_device_create(g_ctl, backing_fd, &cfg, &d);
        if (r < 0)
                return r;
        *create_us = us_since(t0);
        t0 = now_ns();
        r = loop_device_detach(d);
        *remove_us = us_since(t0);
        loop_device_free(d);
        return r < 0 ? r : 0;
}

static int ping(sd_bus *bus, double *us) {
        sd_bus_error e = SD_BUS_ERROR_NULL;
        uint64_t t0 = now_ns();
        int r = sd_bus_call_method(bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.Peer", "Ping",
                                   &e, NULL, NULL);
        *us = us_since(t0);
        sd_bus_error_free(&e);
        return r;
}

static int loopd_cycle(LoopdClient *c, int backing_fd, double *create_us, double *remove_us) {
        LoopdDevice *dev = NULL;
        uint64_t t0 = now_ns();
        int r = loopd_create(c, backing_fd, NULL, &dev, NULL);
        if (r < 0)
                return r;
        *create_us = us_since(t0);
        t0 = now_ns();
        r = loopd_device_remove(c, dev);
        *remove_us = us_since(t0);
        loopd_device_unref(dev);
        return r;
}

static int udisks_cycle(sd_bus *bus, int backing_fd, double *create_us, double *remove_us) {
        sd_bus_message *reply = NULL;
        sd_bus_error e = SD_BUS_ERROR_NULL;
        const char *obj;
        char *objc;
        uint64_t t0 = now_ns();
        int r = sd_bus_call_method(bus, "org.freedesktop.UDisks2", "/org/freedesktop/UDisks2/Manager",
                                   "org.freedesktop.UDisks2.Manager", "LoopSetup", &e, &reply, "ha{sv}", backing_fd, 0);
        if (r < 0) {
                LOG("udisks2 LoopSetup: %s: %s", e.name, e.message);
                sd_bus_error_free(&e);
                return r;
        }
        *create_us = us_since(t0);
        r = sd_bus_message_read(reply, "o", &obj);
        objc = r >= 0 ? strdup(obj) : NULL;
        sd_bus_message_unref(reply);
        if (!objc)
                return -EIO;
        t0 = now_ns();
        r = sd_bus_call_method(bus, "org.freedesktop.UDisks2", objc, "org.freedesktop.UDisks2.Loop", "Delete", &e,
                               NULL, "a{sv}", 0);
        *remove_us = us_since(t0);
        if (r < 0)
                LOG("udisks2 Loop.Delete %s: %s: %s", objc, e.name, e.message);
        free(objc);
        sd_bus_error_free(&e);
        return r;
}

/* ---- results ------------------------------------------------------------------------------ */

typedef struct Results {
        Samples core_c, core_r, core_cycle, ping, ld_c, ld_r, ld_cycle;
        Samples b2b_core, b2b_ping, b2b_ld; /* phase 2b */
        unsigned errors;
        /* concurrency */
        double conc[4]; /* median aggregate cycles/s for 1,2,4,8 */
        unsigned long conc_errors[4], conc_busy[4];
        /* processes */
        Samples p_true, p_loopctl, p_losetup, p_busctl, p_gdbus;
        bool have_gdbus;
        /* udev */
        bool udev_ran;
        char udisks_why[512];
        Samples u_core, u_ld, u_ld_c, u_ld_r, u_udisks, u_udisks_c, u_udisks_r, u_losetup;
        long udisksd_rss_idle, udisksd_rss_after;
        /* daemon cost */
        long rss_idle, rss_idle2, rss_full, rss_after;
        long anon_idle, file_idle, anon_idle2, anon_after;
        unsigned attached;
        double attach_seconds, remove_seconds;
        Samples activation;
        char activation_why[PATH_MAX + 64];
} Results;

static Results R;

/* ---- phase 1+2: floors and libloopd, interleaved -------------------------------------------- */

/* Each measured operation starts with loopd idle: loopd follows the
 * floor's own devices through their uevents (they are other processes'
 * devices to it, as on a real host), and that work, left to run into the
 * next operation, made the Ping after the floor's cycle slower than a
 * whole Remove. A few ms let it finish. Spinning, not sleeping: a vCPU
 * that halts is slow to wake, and every operation would pay for it.
 * Throughput, where work overlaps, is phase 3's. */
static void settle(void) {
        uint64_t end = now_ns() + (uint64_t) arg_settle_ms * 1000000;
        while (now_ns() < end)
                ;
}

static bool phase_main(sd_bus *bus, LoopdClient *lc, int backing_fd, unsigned cycles, Samples *core_s,
                       Samples *ldcycle, bool full) {
        for (unsigned i = 0; i < cycles; i++) {
                double c, r, p;
                int k;
                settle();
                if ((k = core_cycle(backing_fd, &c, &r)) < 0) {
                        LOG("loop core cycle: %s", strerror(-k));
                        R.errors++;
                } else {
                        if (full) {
                                add(&R.core_c, c);
                                add(&R.core_r, r);
                        }
                        add(core_s, c + r);
                }
                settle();
                if (full) {
                        if ((k = ping(bus, &p)) < 0) {
                                LOG("Ping: %s", strerror(-k));
                                R.errors++;
                        } else
                                add(&R.ping, p);
                }
                settle();
                if ((k = loopd_cycle(lc, backing_fd, &c, &r)) < 0) {
                        LOG("libloopd cycle: %s (%s)", strerror(-k), strnull(loopd_client_last_error_message(lc)));
                        R.errors++;
                        if (R.errors > 50)
                                return false;
                } else {
                        if (full) {
                                add(&R.ld_c, c);
                                add(&R.ld_r, r);
                        } else {
                                add(&R.u_ld_c, c);
                                add(&R.u_ld_r, r);
                        }
                        add(ldcycle, c + r);
                }
        }
        return true;
}

/* ---- phase 2b: back to back ----------------------------------------------------------------- */

/* The same three operations, each run `cycles` times in a row: the steady
 * state of a caller that creates devices one after another. Here the
 * machine's vCPUs stay awake between operations, which shortens every bus
 * hop (a Ping here took half its interleaved time); the interleaved
 * figures start each operation from idle. Both are reported. */
/* CPU time loopd has used, in ns (/proc/PID/schedstat); 0 if unknown. */
static uint64_t loopd_cpu_ns(void) {
        char path[64], buf[128];
        snprintf(path, sizeof path, "/proc/%d/schedstat", (int) g_loopd_pid);
        return read_small(path, buf, sizeof buf) ? strtoull(buf, NULL, 10) : 0;
}

/* Until loopd has used no CPU for 50 ms (at most 5 s): after a run of
 * the floor's cycles it still has their uevents to follow, and that work
 * must not land in the next measurement. */
static void wait_loopd_idle(void) {
        uint64_t deadline = now_ns() + 5000000000ull, last = loopd_cpu_ns();
        while (now_ns() < deadline) {
                uint64_t cur;
                msleep(50);
                cur = loopd_cpu_ns();
                if (cur == last)
                        return;
                last = cur;
        }
}

static void phase_back_to_back(sd_bus *bus, LoopdClient *lc, int backing_fd, unsigned cycles) {
        double c, r;
        int k;

        wait_loopd_idle();
        for (unsigned i = 0; i < cycles; i++)
                if ((k = loopd_cycle(lc, backing_fd, &c, &r)) < 0)
                        R.errors++;
                else
                        add(&R.b2b_ld, c + r);
        wait_loopd_idle();
        for (unsigned i = 0; i < cycles; i++)
                if ((k = ping(bus, &c)) < 0)
                        R.errors++;
                else
                        add(&R.b2b_ping, c);
        wait_loopd_idle();
        /* Last: loopd follows these devices' uevents afterwards. */
        for (unsigned i = 0; i < cycles; i++)
                if ((k = core_cycle(backing_fd, &c, &r)) < 0)
                        R.errors++;
                else
                        add(&R.b2b_core, c + r);
        wait_loopd_idle();
}

/* ---- phase 3: concurrent clients --------------------------------------------------------- */

static double conc_round(unsigned nclients, double seconds, unsigned long *errors, unsigned long *busy) {
        int ready[2], go[2], res[2];
        pid_t pids[16];
        double total = 0;
        if (pipe2(ready, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0 || pipe2(res, O_CLOEXEC) < 0)
                return -1;
        for (unsigned i = 0; i < nclients; i++) {
                pids[i] = fork();
                if (pids[i] == 0) {
                        LoopdClient *c = NULL;
                        struct { unsigned long cycles, errors, busy; double secs; } rep = { 0 };
                        char b;
                        (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                        signal(SIGINT, SIG_DFL);
                        signal(SIGTERM, SIG_DFL);
                        int fd = open(g_backing, O_RDWR | O_CLOEXEC);
                        if (fd < 0 || loopd_client_new(&c) < 0)
                                _exit(1);
                        (void) !write(ready[1], "r", 1);
                        if (read(go[0], &b, 1) != 1)
                                _exit(1);
                        uint64_t t0 = now_ns(), end = t0 + (uint64_t) (seconds * 1e9);
                        while (now_ns() < end) {
                                double x, y;
                                int r = loopd_cycle(c, fd, &x, &y);
                                if (r == -EBUSY)
                                        rep.busy++;
                                else if (r < 0)
                                        rep.errors++;
                                else
                                        rep.cycles++;
                        }
                        rep.secs = (double) (now_ns() - t0) / 1e9;
                        (void) !write(res[1], &rep, sizeof rep);
                        loopd_client_unref(c);
                        _exit(0);
                }
        }
        close(ready[1]);
        close(res[1]);
        close(go[0]);
        for (unsigned i = 0; i < nclients; i++) {
                char b;
                if (read(ready[0], &b, 1) != 1)
                        break;
        }
        for (unsigned i = 0; i < nclients; i++)
                (void) !write(go[1], "g", 1);
        for (unsigned i = 0; i < nclients; i++) {
                struct { unsigned long cycles, errors, busy; double secs; } rep;
                if (read(res[0], &rep, sizeof rep) != (ssize_t) sizeof rep)
                        break;
                total += rep.secs > 0 ? (double) rep.cycles / rep.secs : 0;
                *errors += rep.errors;
                *busy += rep.busy;
        }
        for (unsigned i = 0; i < nclients; i++)
                (void) waitpid(pids[i], NULL, 0);
        close(ready[0]);
        close(res[0]);
        close(go[1]);
        return total;
}

static void phase_concurrency(void) {
        static const unsigned levels[4] = { 1, 2, 4, 8 };
        Samples s[4] = { 0 };
        for (unsigned round = 0; round < arg_conc_rounds; round++)
                for (unsigned l = 0; l < 4; l++) {
                        /* alternate the order so no level always runs first */
                        unsigned li = (round % 2) ? 3 - l : l;
                        double v = conc_round(levels[li], arg_conc_seconds, &R.conc_errors[li], &R.conc_busy[li]);
                        if (v >= 0)
                                add(&s[li], v);
                }
        for (unsigned l = 0; l < 4; l++)
                R.conc[l] = med(&s[l]);
}

/* ---- phase 4: processes ----------------------------------------------------------------------- */

static bool proc_cycle_loopctl(double *us) {
        char buf[4096], name[64];
        uint64_t t0 = now_ns();
        if (run((const char *const[]) { arg_loopctl, "create", g_backing, NULL }, buf, sizeof buf, -1) != 0 ||
            !find_loop_name(buf, name))
                return false;
        if (run((const char *const[]) { arg_loopctl, "remove", name, NULL }, NULL, 0, -1) != 0)
                return false;
        *us = us_since(t0);
        return true;
}

static bool proc_cycle_losetup(double *us) {
        char buf[4096], dev[80], name[64];
        uint64_t t0 = now_ns();
        if (run((const char *const[]) { "losetup", "--find", "--show", g_backing, NULL }, buf, sizeof buf, -1) != 0 ||
            !find_loop_name(buf, name))
                return false;
        snprintf(dev, sizeof dev, "/dev/%s", name);
        if (run((const char *const[]) { "losetup", "-d", dev, NULL }, NULL, 0, -1) != 0)
                return false;
        *us = us_since(t0);
        return true;
}

static bool proc_cycle_busctl(double *us) {
        char buf[4096], name[64];
        uint64_t t0 = now_ns();
        if (run((const char *const[]) { "busctl", "--system", "call", LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                        LOOPD_MANAGER_INTERFACE, "CreateFromPath", "sa{sv}", g_backing, "0", NULL },
                buf, sizeof buf, -1) != 0 ||
            !find_loop_name(buf, name))
                return false;
        if (run((const char *const[]) { "busctl", "--system", "call", LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                        LOOPD_MANAGER_INTERFACE, "Remove", "s", name, NULL },
                NULL, 0, -1) != 0)
                return false;
        *us = us_since(t0);
        return true;
}

static bool proc_cycle_gdbus(int backing_fd, double *us) {
        char buf[4096], name[64];
        uint64_t t0 = now_ns();
        if (run((const char *const[]) { "gdbus", "call", "--system", "--dest", LOOPD_BUS_NAME, "--object-path",
                                        LOOPD_MANAGER_PATH, "--method", LOOPD_MANAGER_INTERFACE ".Create", "handle 3",
                                        "{}", NULL },
                buf, sizeof buf, backing_fd) != 0 ||
            !find_loop_name(buf, name))
                return false;
        if (run((const char *const[]) { "gdbus", "call", "--system", "--dest", LOOPD_BUS_NAME, "--object-path",
                                        LOOPD_MANAGER_PATH, "--method", LOOPD_MANAGER_INTERFACE ".Remove", name, NULL },
                NULL, 0, -1) != 0)
                return false;
        *us = us_since(t0);
        return true;
}

static void phase_processes(int backing_fd) {
        bool gdbus = find_exe((const char *const[]) { "gdbus", NULL }) != NULL;
        bool busctl_ok = true, gdbus_ok = gdbus, loopctl_ok = true, losetup_ok = true;
        for (unsigned i = 0; i < arg_proc_cycles; i++) {
                double us;
                uint64_t t0 = now_ns();
                if (run((const char *const[]) { "true", NULL }, NULL, 0, -1) == 0)
                        add(&R.p_true, us_since(t0) * 2); /* two processes per cycle */
                if (loopctl_ok && !(loopctl_ok = proc_cycle_loopctl(&us)))
                        LOG("loopctl create/remove failed; dropping that row");
                else if (loopctl_ok)
                        add(&R.p_loopctl, us);
                if (losetup_ok && !(losetup_ok = proc_cycle_losetup(&us)))
                        LOG("losetup failed; dropping that row");
                else if (losetup_ok)
                        add(&R.p_losetup, us);
                if (busctl_ok && !(busctl_ok = proc_cycle_busctl(&us)))
                        LOG("busctl CreateFromPath/Remove failed; dropping that row");
                else if (busctl_ok)
                        add(&R.p_busctl, us);
                if (gdbus_ok && !(gdbus_ok = proc_cycle_gdbus(backing_fd, &us)))
                        LOG("gdbus Create/Remove failed; dropping that row");
                else if (gdbus_ok)
                        add(&R.p_gdbus, us);
        }
        R.have_gdbus = gdbus;
        emergency_detach_loops_under(g_tmp); /* whatever a failed process cycle left */
}

/* ---- phase 5: udev + udisks2 ---------------------------------------------------------------------- */

static pid_t g_udevd_pid, g_polkitd_pid, g_udisksd_pid;

static bool g_udev_control_was_ours;

static bool udevd_listening(void) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX, .sun_path = "/run/udev/control" };
        int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        bool ok;
        if (fd < 0)
                return false;
        ok = connect(fd, (struct sockaddr *) &sa, sizeof sa) == 0;
        close(fd);
        return ok;
}

static bool phase_udisks(sd_bus *bus, LoopdClient *lc, int backing_fd) {
        const char *udevd = find_exe((const char *const[]) { "/lib/systemd/systemd-udevd", "/usr/lib/systemd/systemd-udevd", NULL });
        const char *polkitd = find_exe((const char *const[]) { "/usr/lib/polkit-1/polkitd", "/usr/libexec/polkitd", NULL });
        const char *udisksd = find_exe((const char *const[]) { "/usr/libexec/udisks2/udisksd", "/usr/lib/udisks2/udisksd", NULL });
        const char *udevadm = find_exe((const char *const[]) { "udevadm", "/bin/udevadm", NULL });

        if (!udevd || !udisksd || !udevadm) {
                snprintf(R.udisks_why, sizeof R.udisks_why,
                         "not run: %s missing (run-bench --with-udisks installs the Debian packages udisks2 and udev)",
                         !udevd ? "systemd-udevd" : !udisksd ? "udisksd" : "udevadm");
                return false;
        }
        if (!polkitd) {
                snprintf(R.udisks_why, sizeof R.udisks_why, "not run: polkitd missing (package polkitd)");
                return false;
        }
        /* A udevd already running (a real host) is used as is; a stale
         * control socket (no listener) is not one. */
        if (udevd_listening()) {
                LOG("a udevd runs already (/run/udev/control answers): using it");
        } else {
                g_udev_control_was_ours = access("/run/udev/control", F_OK) < 0;
                g_udevd_pid = spawn((const char *const[]) { udevd, NULL }, NULL, true, -1);
                if (g_udevd_pid <= 0) {
                        snprintf(R.udisks_why, sizeof R.udisks_why, "not run: cannot start %s", udevd);
                        return false;
                }
                track(g_udevd_pid, true);
                for (int i = 0; i < 500 && !udevd_listening(); i++)
                        msleep(10);
                /* udisks2 reads the udev database: fill it for existing devices. */
                (void) run((const char *const[]) { udevadm, "trigger", "--action=add", "--subsystem-match=block", NULL }, NULL, 0, -1);
                (void) run((const char *const[]) { udevadm, "settle", "--timeout=30", NULL }, NULL, 0, -1);
        }
        R.udev_ran = true;

        g_polkitd_pid = spawn((const char *const[]) { polkitd, "--no-debug", NULL }, NULL, true, -1);
        if (g_polkitd_pid > 0)
                track(g_polkitd_pid, true);
        if (!wait_name(bus, "org.freedesktop.PolicyKit1", true, 15)) {
                snprintf(R.udisks_why, sizeof R.udisks_why, "not run: polkitd did not get org.freedesktop.PolicyKit1 within 15 s");
                return false;
        }
        g_udisksd_pid = spawn((const char *const[]) { udisksd, "--no-debug", NULL }, NULL, true, -1);
        if (g_udisksd_pid > 0)
                track(g_udisksd_pid, true);
        if (!wait_name(bus, "org.freedesktop.UDisks2", true, 30)) {
                snprintf(R.udisks_why, sizeof R.udisks_why, "not run: udisksd did not get org.freedesktop.UDisks2 within 30 s");
                return false;
        }
        msleep(500); /* let it finish its coldplug */
        R.udisksd_rss_idle = rss_kib(g_udisksd_pid);

        double c, r;
        int k = udisks_cycle(bus, backing_fd, &c, &r); /* warm-up; also tells whether it works */
        if (k < 0) {
                snprintf(R.udisks_why, sizeof R.udisks_why, "udisks2 LoopSetup/Delete failed: %s (see stderr)", strerror(-k));
                return false;
        }
        Samples dummy = { 0 };
        for (unsigned i = 0; i < arg_udisks_cycles; i++) {
                double us;
                /* one udisks2 cycle, then 10 loopd/kernel cycles (they are ~100x shorter) */
                if (udisks_cycle(bus, backing_fd, &c, &r) < 0)
                        R.errors++;
                else {
                        add(&R.u_udisks, c + r);
                        add(&R.u_udisks_c, c);
                        add(&R.u_udisks_r, r);
                }
                if (!phase_main(bus, lc, backing_fd, (arg_cycles / arg_udisks_cycles > 0 ? arg_cycles / arg_udisks_cycles : 1), &R.u_core, &R.u_ld, false))
                        break;
                if (i % 5 == 0 && proc_cycle_losetup(&us))
                        add(&R.u_losetup, us);
        }
        free(dummy.v);
        R.udisksd_rss_after = rss_kib(g_udisksd_pid);
        return true;
}

static void stop_udisks_stack(void) {
        stop_pid(g_udisksd_pid, true);
        stop_pid(g_polkitd_pid, true);
        if (g_udevd_pid > 0) {
                stop_pid(g_udevd_pid, true);
                /* udevd leaves its control socket behind: a stale one would
                 * make the next run believe a udevd is running. */
                if (g_udev_control_was_ours)
                        (void) unlink("/run/udev/control");
        }
        g_udisksd_pid = g_polkitd_pid = g_udevd_pid = 0;
}

/* ---- phase 6: daemon cost ------------------------------------------------------------------------- */

static void phase_rss(LoopdClient *lc, int backing_fd) {
        LoopdDevice **devs = calloc(arg_devices, sizeof *devs);
        uint64_t t0;
        if (!devs)
                return;
        t0 = now_ns();
        for (unsigned i = 0; i < arg_devices; i++) {
                int r = loopd_create(lc, backing_fd, NULL, &devs[i], NULL);
                if (r < 0) {
                        LOG("attaching device %u of %u: %s (%s)", i + 1, arg_devices, strerror(-r),
                            strnull(loopd_client_last_error_message(lc)));
                        break;
                }
                R.attached++;
        }
        R.attach_seconds = us_since(t0) / 1e6;
        msleep(200);
        R.rss_full = rss_kib(g_loopd_pid);
        t0 = now_ns();
        for (unsigned i = 0; i < R.attached; i++) {
                int r = loopd_device_remove(lc, devs[i]);
                if (r < 0)
                        LOG("removing: %s", strerror(-r));
                loopd_device_unref(devs[i]);
        }
        R.remove_seconds = us_since(t0) / 1e6;
        free(devs);
        msleep(1000);
        R.rss_after = rss_kib(g_loopd_pid);
        R.anon_after = status_kib(g_loopd_pid, "RssAnon:");
}

static int unlink_service_file(void) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/services/" LOOPD_BUS_NAME ".service", g_tmp);
        return unlink(path);
}

static void phase_activation(sd_bus *bus) {
        char path[PATH_MAX], *svc = NULL;

        stop_pid(g_loopd_pid, true);
        g_loopd_pid = 0;
        if (!wait_name(bus, LOOPD_BUS_NAME, false, 5)) {
                snprintf(R.activation_why, sizeof R.activation_why, "loopd did not release its name");
                return;
        }
        snprintf(path, sizeof path, "%s/services/" LOOPD_BUS_NAME ".service", g_tmp);
        if (asprintf(&svc, "[D-BUS Service]\nName=" LOOPD_BUS_NAME "\nExec=%s --state-dir=%s/state-act --idle-timeout=0\nUser=root\n",
                     arg_loopd, g_run) < 0 || !write_file(path, svc, 0644)) {
                snprintf(R.activation_why, sizeof R.activation_why, "cannot write %s", path);
                free(svc);
                return;
        }
        free(svc);
        (void) sd_bus_call_method(bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus",
                                  "ReloadConfig", NULL, NULL, NULL);
        for (unsigned i = 0; i < arg_activations; i++) {
                sd_bus_error e = SD_BUS_ERROR_NULL;
                char *version = NULL;
                uint64_t t0 = now_ns();
                int r = sd_bus_get_property_string(bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                                   LOOPD_MANAGER_INTERFACE, "Version", &e, &version);
                double us = us_since(t0);
                if (r < 0) {
                        snprintf(R.activation_why, sizeof R.activation_why, "activation failed: %s: %s", e.name, e.message);
                        sd_bus_error_free(&e);
                        return;
                }
                free(version);
                add(&R.activation, us);
                pid_t pid = name_owner_pid(bus, LOOPD_BUS_NAME);
                if (pid > 0) {
                        track(pid, false);
                        stop_pid(pid, false);
                }
                if (!wait_name(bus, LOOPD_BUS_NAME, false, 5))
                        break;
        }
}

/* ---- the table ------------------------------------------------------------------------------------ */

static const char *verdict(bool measured, bool met) {
        return !measured ? "not measured" : met ? "**met**" : "**missed**";
}

static void print_table(void) {
        struct utsname u;
        char cpu[256] = "unknown", buf[4096], a[32], b[32], c[32], note[512];
        char *p;
        time_t t = time(NULL);
        struct tm tm;

        uname(&u);
        if (read_small("/proc/cpuinfo", buf, sizeof buf) && (p = strstr(buf, "model name"))) {
                p = strchr(p, ':');
                if (p) {
                        p += 2;
                        snprintf(cpu, sizeof cpu, "%.*s", (int) strcspn(p, "\n"), p);
                }
        }
        gmtime_r(&t, &tm);
        strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);

        double floor_us = med(&R.core_cycle) + 2 * med(&R.ping);
        double ld_us = med(&R.ld_cycle);

        out("## loopd benchmark\n\n");
        out("%s · kernel %s · %s · %ld CPUs · loadavg at start %s · backing file: 64 MiB sparse, %s · "
            "loopd's state directory on %s\n\n",
            buf, u.release, cpu, sysconf(_SC_NPROCESSORS_ONLN), strnull(getenv("LOOPD_BENCH_LOADAVG")), g_backing,
            g_run_tmpfs ? "tmpfs (as /run on a systemd host)" : "the backing file's file system (no tmpfs could be mounted)");
        out("Cycles: %u interleaved (kernel floor, Ping, libloopd; %u ms of quiet before each), %u per process row, "
            "%ux%.1f s per concurrency level, "
            "%u udisks2 cycles, %u devices for RSS, %u activations. µs are medians (p99) of one run; other sessions "
            "may share the machine, so read the ratios.\n\n",
            arg_cycles, arg_settle_ms, arg_proc_cycles, arg_conc_rounds, arg_conc_seconds,
            arg_with_udisks ? arg_udisks_cycles : 0,
            arg_devices, arg_activations);

        out("| measurement | median | p99 | ratio / note |\n|---|---|---|---|\n");
        out("| **1. floors** (no udev) | | | |\n");
        row_samples("loop core in-process: LOOP_CONFIGURE on a free node + CLR_FD/close (cycle)", &R.core_cycle, "kernel floor");
        row_samples("… create", &R.core_c, NULL);
        row_samples("… detach", &R.core_r, NULL);
        row_samples("Peer.Ping to loopd through dbus-daemon", &R.ping, "one bus round trip");
        out("| **2. libloopd sync Create + Remove** (fd, one client) | | | |\n");
        snprintf(note, sizeof note, "**%.2fx** of floor + 2 round trips (%s)", ld_us / floor_us, fmt_us(floor_us, a));
        row_samples("Create + Remove (cycle)", &R.ld_cycle, note);
        snprintf(note, sizeof note, "%.2fx of kernel create + 1 Ping", med(&R.ld_c) / (med(&R.core_c) + med(&R.ping)));
        row_samples("… Create", &R.ld_c, note);
        snprintf(note, sizeof note, "%.2fx of kernel detach + 1 Ping", med(&R.ld_r) / (med(&R.core_r) + med(&R.ping)));
        row_samples("… Remove", &R.ld_r, note);
        out("| **2b. the same, back to back** (each operation %u times in a row) | | | |\n", arg_cycles);
        row_samples("loop core in-process (cycle)", &R.b2b_core, "kernel floor");
        row_samples("Peer.Ping to loopd", &R.b2b_ping, "one bus round trip");
        double b2b_floor_us = med(&R.b2b_core) + 2 * med(&R.b2b_ping);
        snprintf(note, sizeof note, "**%.2fx** of floor + 2 round trips (%s)", med(&R.b2b_ld) / b2b_floor_us,
                 fmt_us(b2b_floor_us, a));
        row_samples("libloopd Create + Remove (cycle)", &R.b2b_ld, note);

        out("| **3. concurrent clients** (forked, one connection each) | cycles/s | | |\n");
        static const unsigned levels[4] = { 1, 2, 4, 8 };
        for (unsigned l = 0; l < 4; l++) {
                snprintf(note, sizeof note, "%.2fx of 1 client; %lu Busy, %lu other errors", R.conc[l] / R.conc[0],
                         R.conc_busy[l], R.conc_errors[l]);
                out("| %u client%s, aggregate | %.0f/s | | %s |\n", levels[l], levels[l] > 1 ? "s" : "", R.conc[l], note);
        }

        out("| **4. as processes** (fork+exec per command, 2 commands per cycle) | | | |\n");
        row_samples("`true` + `true` (process floor)", &R.p_true, NULL);
        snprintf(note, sizeof note, "%.2fx of losetup", med(&R.p_loopctl) / med(&R.p_losetup));
        row_samples("`loopctl create FILE` + `loopctl remove loopN`", &R.p_loopctl, note);
        row_samples("`losetup --find --show FILE` + `losetup -d`", &R.p_losetup, "baseline");
        snprintf(note, sizeof note, "%.2fx of losetup", med(&R.p_busctl) / med(&R.p_losetup));
        row_samples("`busctl call … CreateFromPath` + `… Remove`", &R.p_busctl, note);
        if (R.have_gdbus) {
                snprintf(note, sizeof note, "%.2fx of losetup", med(&R.p_gdbus) / med(&R.p_losetup));
                row_samples("`gdbus call … Create 'handle 3'` + `… Remove`", &R.p_gdbus, note);
        }

        out("| **5. with systemd-udevd running** | | | |\n");
        if (!arg_with_udisks)
                out("| udisks2 LoopSetup + Loop.Delete | n/a | n/a | not run (pass --with-udisks; needs packages udisks2, udev) |\n");
        else if (R.u_udisks.n == 0)
                out("| udisks2 LoopSetup + Loop.Delete | n/a | n/a | %s |\n", R.udisks_why);
        if (R.udev_ran && R.u_ld.n) {
                row_samples("loop core in-process (cycle)", &R.u_core, "kernel floor with udev");
                snprintf(note, sizeof note, "%.2fx of floor + 2 round trips", med(&R.u_ld) / (med(&R.u_core) + 2 * med(&R.ping)));
                row_samples("libloopd Create + Remove (cycle)", &R.u_ld, note);
                row_samples("… Create", &R.u_ld_c, NULL);
                row_samples("… Remove", &R.u_ld_r, NULL);
                if (R.u_udisks.n) {
                        snprintf(note, sizeof note, "**%.0fx** loopd's cycle (with udev)", med(&R.u_udisks) / med(&R.u_ld));
                        row_samples("udisks2 LoopSetup (fd) + Loop.Delete, sd-bus", &R.u_udisks, note);
                        row_samples("… LoopSetup", &R.u_udisks_c, NULL);
                        row_samples("… Loop.Delete", &R.u_udisks_r, NULL);
                }
                row_samples("`losetup --find --show` + `losetup -d` with udev", &R.u_losetup, NULL);
                if (R.udisksd_rss_after > 0)
                        out("| udisksd RSS idle / after the cycles | %ld KiB | %ld KiB | |\n", R.udisksd_rss_idle,
                            R.udisksd_rss_after);
        }

        out("| **6. daemon cost** | | | |\n");
        out("| loopd RSS idle (after start and 20 warm-up cycles) | %ld KiB | | anonymous %ld KiB, mapped files "
            "(shared libraries) %ld KiB |\n", R.rss_idle, R.anon_idle, R.file_idle);
        out("| loopd RSS idle (restarted, before attaching) | %ld KiB | | baseline of the next two rows; anonymous %ld KiB |\n",
            R.rss_idle2, R.anon_idle2);
        snprintf(note, sizeof note, "%.2f KiB per device; attached in %.1f s", R.attached ? (double) (R.rss_full - R.rss_idle2) / R.attached : -1.0,
                 R.attach_seconds);
        out("| loopd RSS with %u devices attached (root, fd, libloopd) | %ld KiB | | %s |\n", R.attached, R.rss_full, note);
        out("| loopd RSS 1 s after removing them | %ld KiB | | %+ld KiB vs idle (anonymous %+ld KiB); removed in %.1f s |\n",
            R.rss_after, R.rss_after - R.rss_idle2, R.anon_after - R.anon_idle2, R.remove_seconds);
        if (R.activation.n)
                row_samples("activation: bus call to first reply, daemon not running", &R.activation, R.activation_why);
        else
                out("| activation | n/a | n/a | %s |\n", R.activation_why);
        if (R.errors)
                out("| errors during the run | %u | | see stderr |\n", R.errors);

        /* The targets loopd is held to. */
        out("\n### Where we stand against the targets\n\n| target | measured | |\n|---|---|---|\n");
        out("| Create + Remove within 1.25x of kernel floor + 2 round trips (median; interleaved, each from idle) | "
            "%.2fx (%s vs %s) | %s |\n",
            ld_us / floor_us, fmt_us(ld_us, a), fmt_us(floor_us, b), verdict(R.ld_cycle.n && R.core_cycle.n, ld_us / floor_us <= 1.25));
        double b2b_floor = med(&R.b2b_core) + 2 * med(&R.b2b_ping), b2b_ld = med(&R.b2b_ld);
        out("| … the same, back to back | %.2fx (%s vs %s) | %s |\n", b2b_ld / b2b_floor, fmt_us(b2b_ld, a),
            fmt_us(b2b_floor, b), verdict(R.b2b_ld.n && R.b2b_core.n && R.b2b_ping.n, b2b_ld / b2b_floor <= 1.25));
        if (R.u_udisks.n)
                out("| >= 50x faster per cycle than udisks2 (same run, udev running) | %.0fx (%s vs %s) | %s |\n",
                    med(&R.u_udisks) / med(&R.u_ld), fmt_us(med(&R.u_udisks), a), fmt_us(med(&R.u_ld), b),
                    verdict(true, med(&R.u_udisks) / med(&R.u_ld) >= 50));
        else
                out("| >= 50x faster per cycle than udisks2 | – | not measured: %s |\n",
                    arg_with_udisks ? R.udisks_why : "run with --with-udisks");
        out("| 4 clients >= 1.5x the throughput of 1 | %.2fx (%.0f/s vs %.0f/s); Busy replies with 4 clients: %lu | %s |\n",
            R.conc[2] / R.conc[0], R.conc[2], R.conc[0], R.conc_busy[2], verdict(R.conc[0] > 0, R.conc[2] / R.conc[0] >= 1.5));
        out("| `loopctl` create+remove as processes faster than `losetup` | %s vs %s (%.2fx) | %s |\n",
            fmt_us(med(&R.p_loopctl), a), fmt_us(med(&R.p_losetup), b), med(&R.p_loopctl) / med(&R.p_losetup),
            verdict(R.p_loopctl.n && R.p_losetup.n, med(&R.p_loopctl) < med(&R.p_losetup)));
        out("| RSS under 3 MiB idle | %ld KiB | %s |\n", R.rss_idle, verdict(R.rss_idle > 0, R.rss_idle < 3072));
        double per = R.attached ? (double) (R.rss_full - R.rss_idle2) / R.attached : -1;
        out("| under 2 KiB per attached device | %.2f KiB (%u devices) | %s |\n", per, R.attached,
            verdict(R.attached > 0, per < 2.0));
        out("| back to idle after removal (RSS within 256 KiB of idle) | %ld KiB after vs %ld KiB idle | %s |\n",
            R.rss_after, R.rss_idle2, verdict(R.rss_after > 0, R.rss_after <= R.rss_idle2 + 256));
        (void) 0;
        out("| activation to first reply under 20 ms | median %s, max %s | %s |\n", fmt_us(med(&R.activation), a),
            fmt_us(quantile(&R.activation, 1.0), c), verdict(R.activation.n > 0, med(&R.activation) < 20000));
        (void) c;

        fputs(g_table, stdout);
        fflush(stdout);
        if (arg_out) {
                FILE *f = fopen(arg_out, "we");
                if (!f || fputs(g_table, f) < 0 || fclose(f) != 0)
                        LOG("cannot write %s: %m", arg_out);
        }
}

/* ---- main --------------------------------------------------------------------------------------------- */

static void help(void) {
        printf("Usage: loopd-bench [OPTIONS]\n\n"
               "Measures loopd against the loop core, the bus, losetup and udisks2 in one run\n"
               "and prints a markdown table. Needs root. Starts its own dbus-daemon and loopd.\n\n"
               "  --cycles=N            interleaved main cycles (default %u)\n"
               "  --proc-cycles=N       cycles of each process row (default %u)\n"
               "  --conc-seconds=S      seconds per concurrency level and round (default %.1f)\n"
               "  --conc-rounds=N       rounds over 1,2,4,8 clients (default %u)\n"
               "  --devices=N           devices attached for the RSS figure (default %u)\n"
               "  --activations=N       activation samples (default %u)\n"
               "  --settle-ms=N         quiet time before each interleaved operation (default %u)\n"
               "  --with-udisks         also run udisks2 (needs udisks2, udev, polkitd installed)\n"
               "  --udisks-cycles=N     udisks2 cycles (default %u)\n"
               "  --tmpdir=DIR          an existing empty directory to work in (default: a new one in /var/tmp)\n"
               "  --out=FILE            also write the table to FILE\n"
               "  --loopd=PATH --loopctl=PATH --bus-policy=PATH   (defaults: the build tree)\n",
               arg_cycles, arg_proc_cycles, arg_conc_seconds, arg_conc_rounds, arg_devices, arg_activations,
               arg_settle_ms, arg_udisks_cycles);
}

static int parse_argv(int argc, char **argv) {
        enum { O_CYCLES = 0x100, O_PROC, O_CSEC, O_CROUNDS, O_DEVICES, O_ACT, O_UDISKS, O_UCYCLES, O_TMP, O_OUT,
               O_LOOPD, O_LOOPCTL, O_POLICY, O_SETTLE };
        static const struct option opts[] = {
                { "help", no_argument, NULL, 'h' },
                { "cycles", required_argument, NULL, O_CYCLES },
                { "proc-cycles", required_argument, NULL, O_PROC },
                { "conc-seconds", required_argument, NULL, O_CSEC },
                { "conc-rounds", required_argument, NULL, O_CROUNDS },
                { "devices", required_argument, NULL, O_DEVICES },
                { "activations", required_argument, NULL, O_ACT },
                { "settle-ms", required_argument, NULL, O_SETTLE },
                { "with-udisks", no_argument, NULL, O_UDISKS },
                { "udisks-cycles", required_argument, NULL, O_UCYCLES },
                { "tmpdir", required_argument, NULL, O_TMP },
                { "out", required_argument, NULL, O_OUT },
                { "loopd", required_argument, NULL, O_LOOPD },
                { "loopctl", required_argument, NULL, O_LOOPCTL },
                { "bus-policy", required_argument, NULL, O_POLICY },
                { 0 }
        };
        int c;
        while ((c = getopt_long(argc, argv, "h", opts, NULL)) >= 0) {
                unsigned long v = optarg ? strtoul(optarg, NULL, 10) : 0;
                switch (c) {
                case 'h': help(); exit(0);
                case O_CYCLES: arg_cycles = v > 0 ? (unsigned) v : 1; break;
                case O_PROC: arg_proc_cycles = v > 0 ? (unsigned) v : 1; break;
                case O_CSEC: arg_conc_seconds = strtod(optarg, NULL); if (arg_conc_seconds <= 0) arg_conc_seconds = 0.1; break;
                case O_CROUNDS: arg_conc_rounds = v > 0 ? (unsigned) v : 1; break;
                case O_DEVICES: arg_devices = v > 0 ? (unsigned) v : 1; break;
                case O_ACT: arg_activations = v > 0 ? (unsigned) v : 1; break;
                case O_SETTLE: arg_settle_ms = (unsigned) v; break;
                case O_UDISKS: arg_with_udisks = true; break;
                case O_UCYCLES: arg_udisks_cycles = v > 0 ? (unsigned) v : 1; break;
                case O_TMP: arg_tmpdir = optarg; break;
                case O_OUT: arg_out = optarg; break;
                case O_LOOPD: arg_loopd = optarg; break;
                case O_LOOPCTL: arg_loopctl = optarg; break;
                case O_POLICY: arg_policy = optarg; break;
                default: return -1;
                }
        }
        return optind < argc ? -1 : 0;
}

int main(int argc, char **argv) {
        sd_bus *bus = NULL;
        LoopdClient *lc = NULL;
        int backing_fd = -1, r;
        uint32_t *nums = NULL;
        char la[64];

        if (parse_argv(argc, argv) < 0) {
                help();
                return 2;
        }
        setvbuf(stdout, NULL, _IOLBF, 0);
        if (geteuid() != 0) {
                printf("SKIP: loopd-bench needs root (loop devices, a system bus of its own)\n");
                return 77;
        }
        if (access(arg_loopd, X_OK) < 0) {
                printf("SKIP: no loopd at %s\n", arg_loopd);
                return 77;
        }
        if (read_small("/proc/loadavg", la, sizeof la)) {
                la[strcspn(la, " ")] = 0;
                setenv("LOOPD_BENCH_LOADAVG", la, 1);
        }

        g_main_pid = getpid();
        if (arg_tmpdir) {
                char *rp = realpath(arg_tmpdir, NULL);
                if (!rp || strlen(rp) >= 512) {
                        LOG("--tmpdir %s: %s", arg_tmpdir, rp ? "path too long" : strerror(errno));
                        return 2;
                }
                snprintf(g_tmp, sizeof g_tmp, "%s", rp);
                free(rp);
        } else {
                snprintf(g_tmp, sizeof g_tmp, "/var/tmp/loopd-bench.XXXXXX");
                if (!mkdtemp(g_tmp)) {
                        LOG("mkdtemp: %m");
                        return 1;
                }
                g_tmp_ours = true;
        }
        (void) chmod(g_tmp, 0755);
        /* Everything we start inherits this; cleanup and run-bench find them by it. */
        setenv("LOOPD_BENCH_TAG", g_tmp, 1);

        /* Crashes, signals, exit and SIGKILL: the emergency cleanup. Its
         * atexit hook runs after ours (registered first, run last). */
        if ((r = emergency_init(EMERGENCY_INIT_JANITOR)) < 0 || (r = emergency_add_tagged(g_tmp)) < 0 ||
            (r = emergency_add_loops_under(g_tmp)) < 0) {
                LOG("emergency cleanup: %s", strerror(-r));
                return 1;
        }
        if (g_tmp_ours)
                r = emergency_add_path(g_tmp);
        else {
                /* run-bench owns the dir: empty it only. */
                const char *parts[] = { "backing.img", "bus.conf", "bus.socket", "services", "run", "udev" };
                for (size_t i = 0; r >= 0 && i < sizeof parts / sizeof *parts; i++) {
                        char sub[PATH_MAX];
                        snprintf(sub, sizeof sub, "%s/%s", g_tmp, parts[i]);
                        r = emergency_add_path(sub);
                }
        }
        if (r < 0) {
                LOG("emergency cleanup: %s", strerror(-r));
                return 1;
        }
        signal(SIGPIPE, SIG_IGN);
        atexit(at_exit_cleanup);

        r = loop_list_numbers(&nums);
        for (int i = 0; i < r; i++)
                if (nums[i] < (1u << 16))
                        g_had_node[nums[i]] = true;
        g_have_nodes_snapshot = r >= 0;
        free(nums);

        snprintf(g_run, sizeof g_run, "%s/run", g_tmp);
        if (mkdir(g_run, 0755) < 0 && errno != EEXIST) {
                LOG("mkdir %s: %m", g_run);
                return 1;
        }
        g_run_tmpfs = mount("tmpfs", g_run, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=16m") == 0;
        if (g_run_tmpfs && (r = emergency_add_mount(g_run)) < 0) {
                LOG("emergency cleanup: %s", strerror(-r));
                (void) umount2(g_run, MNT_DETACH);
                return 1;
        }
        if (!g_run_tmpfs)
                LOG("cannot mount a tmpfs on %s (%m): loopd's state directory stays on %s's file system", g_run,
                    g_tmp);

        snprintf(g_backing, sizeof g_backing, "%s/backing.img", g_tmp);
        backing_fd = open(g_backing, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (backing_fd < 0 || ftruncate(backing_fd, 64 << 20) < 0) {
                LOG("backing file %s: %m", g_backing);
                return 1;
        }
        g_ctl = loop_control_open();
        if (g_ctl < 0) {
                LOG("/dev/loop-control: %s", strerror(-g_ctl));
                return 1;
        }

        if (!start_bus()) {
                LOG("cannot start dbus-daemon");
                return 1;
        }
        if ((r = open_bus(&bus)) < 0) {
                LOG("cannot connect to %s: %s", g_bus_address, strerror(-r));
                return 1;
        }
        if (!start_loopd(bus)) {
                LOG("loopd did not come up");
                return 1;
        }
        if ((r = loopd_client_new_from_bus(bus, &lc)) < 0) {
                LOG("libloopd: %s", strerror(-r));
                return 1;
        }
        /* Warm up: fill loopd's spare nodes, page in both sides. */
        {
                Samples s1 = { 0 }, s2 = { 0 };
                Results save = R;
                phase_main(bus, lc, backing_fd, 20, &s1, &s2, true);
                R = save;
                free(s1.v);
                free(s2.v);
                msleep(300);
        }
        R.rss_idle = rss_kib(g_loopd_pid);
        R.anon_idle = status_kib(g_loopd_pid, "RssAnon:");
        R.file_idle = status_kib(g_loopd_pid, "RssFile:");

        LOG("1+2: %u interleaved cycles (kernel floor, Ping, libloopd)", arg_cycles);
        if (!phase_main(bus, lc, backing_fd, arg_cycles, &R.core_cycle, &R.ld_cycle, true))
                LOG("too many errors in the main cycle");
        LOG("2b: %u back-to-back cycles of each", arg_cycles);
        phase_back_to_back(bus, lc, backing_fd, arg_cycles);
        LOG("3: concurrent clients");
        phase_concurrency();
        LOG("4: processes (%u cycles each)", arg_proc_cycles);
        phase_processes(backing_fd);
        if (arg_with_udisks) {
                LOG("5: systemd-udevd, polkitd, udisksd");
                if (!phase_udisks(bus, lc, backing_fd))
                        LOG("udisks2: %s", R.udisks_why);
                stop_udisks_stack();
        }
        /* Activation before the 1,000 devices: they leave ~1,000 free nodes
         * behind for a while, and loopd's start-up reads every node. */
        LOG("6: activation (%u samples)", arg_activations);
        loopd_client_unref(lc);
        lc = NULL;
        phase_activation(bus);
        (void) unlink_service_file();
        if (!start_loopd(bus) || loopd_client_new_from_bus(bus, &lc) < 0) {
                LOG("loopd did not come up again");
                return 1;
        }
        LOG("6: RSS with %u devices", arg_devices);
        R.rss_idle2 = rss_kib(g_loopd_pid);
        R.anon_idle2 = status_kib(g_loopd_pid, "RssAnon:");
        phase_rss(lc, backing_fd);
        loopd_client_unref(lc);
        lc = NULL;

        print_table();

        sd_bus_flush_close_unref(bus);
        close(backing_fd);
        close(g_ctl);
        cleanup();
        return R.errors > 0 ? 1 : 0;
}
