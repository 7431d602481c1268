/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopd as a host runs it: systemd as PID 1 (in a systemd-nspawn container
 * over this machine's own root, copy-on-write; see system-container), loopd
 * installed with the README's own install command, started by D-Bus
 * activation through SystemdService= inside its unit's sandbox, next to the
 * real system bus (dbus-daemon or dbus-broker: --bus=), the real polkitd
 * with a rules.d file, and journald. Every check talks to the service the
 * way a user or an admin on that host would: busctl, gdbus, loopctl,
 * losetup, systemctl, journalctl, run as root or as an unprivileged user.
 *
 * The checks run in order and build on each other (the install comes
 * first, the polkit rule is added before a user creates devices, the
 * backing-file checks follow the same six devices through restart, idle
 * exit and crash). A failed check marks itself failed and the run goes on,
 * so that one broken behaviour does not hide the others; every failure
 * says what was expected and what was seen.
 *
 * The container is supervised by system-container, not by this program:
 * it is torn down however this program ends.
 */

#include <errno.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib.h>

#ifndef SYSTEM_CONTAINER_HELPER
#error "SYSTEM_CONTAINER_HELPER: the path of system-container, set by meson"
#endif

#define USER "lpuser"    /* polkit lets this one create devices (once the rule is in) */
#define OTHER "lpother"  /* and never this one */
#define IMAGE_SIZE "16M"   /* truncate -s */
#define MANAGER "org.loopd.Loop1 /org/loopd/Loop1 org.loopd.Loop1.Manager"

/* MESSAGE_IDs of loopd's journal entries, one per kind of decision. */
#define MID_CREATED "de9d5217b972471b94dec1b05bbe76d3"
#define MID_REMOVED "b2e44a0c077145dab5840905dc0104c9"
#define MID_REFUSED "20871da2c0f644bba2847bdfe3674a8c"
#define MID_STARTED "59ca72a4a7414faf9e3eda2d9ec6f416"
#define MID_STATE_DIR "a4addda69422414e970111dc423748ed"
#define MID_STOPPED "638444580a7b4dd39ebe44f9807e0621"
#define MID_SIGNAL "4334bb19a69942849fdffc8edfae7647"
#define MID_RECONCILED "9d8faf37166241b280df533f5bcafad4"
static const char *const known_message_ids[] = {
        MID_CREATED, MID_REMOVED,
        "3473025c2d46404b989b874b9073eff0", /* resized */
        MID_REFUSED,
        "45f3f3b996be4475b6edc1d15f5646f6", /* caller gone */
        MID_RECONCILED,
        MID_STATE_DIR,
        "5b17690fd54d409c93e3acafaf108ad3", /* opened */
        "cb84f172f4ac41b7ae324d04b4116423", /* backing file changed */
        "585ec10c25634c48ae172e36f04e057d", /* limit hit */
        MID_STARTED,
        MID_STOPPED,
        MID_SIGNAL,
        NULL,
};

static struct {
        const char *bus;
        char *skip_reason;      /* the machine cannot run the suite */
        GSubprocess *helper;    /* system-container; its stdin is our lifeline */
        char *leader;           /* host pid of the container's PID 1 */
        char *readme_command;   /* the README's install command, verbatim */
        char *tree;             /* the source copy it runs in (built on the host) */
        char *host_build_error; /* why the host-side build failed, if it did */
        double t_host_build;
        gboolean installed;     /* that command succeeded */
        char *install_log;      /* its "Installing X to Y" lines */
        char *loopd_path;       /* where it put loopd */
        char *unit_dir, *services_dir;
        gboolean users_ready;
        guint uid, other_uid;
        double t_start, t_ready, t_install;
} S;

/* ---- small things ------------------------------------------------------- */

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

/* Marks the current check failed, says why, and lets it (and the run) go
 * on. Each line of the message becomes a line of the test log. */
G_GNUC_PRINTF(1, 2) static void fail(const char *fmt, ...) {
        va_list ap;
        g_autofree char *msg = NULL;
        g_auto(GStrv) lines = NULL;

        va_start(ap, fmt);
        msg = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        lines = g_strsplit(g_strchomp(msg), "\n", -1);
        for (char **l = lines; *l; l++)
                g_test_message("%s%s", l == lines ? "FAILED: " : "  ", *l);
        g_test_fail();
}

static void log_lines(const char *prefix, const char *text) {
        g_auto(GStrv) lines = NULL;

        if (!text || !*text)
                return;
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++)
                if (**l || l[1])
                        g_test_message("%s%s", prefix, *l);
}

/* ---- commands inside the container ------------------------------------------ */

typedef struct {
        int status;     /* exit status, 128+N for signal N */
        char *out, *err;
        GBytes *out_bytes;
} Run;

static void run_clear(Run *r) {
        g_clear_pointer(&r->out, g_free);
        g_clear_pointer(&r->err, g_free);
        g_clear_pointer(&r->out_bytes, g_bytes_unref);
}
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(Run, run_clear)

/* Shell helpers every script starts with. */
static const char prelude[] =
        "set -u\n"
        "M='" MANAGER "'\n"
        /* The object of an attached device (loopN_DISKSEQ in the tree); a
         * property of it, unquoted. */
        "obj() { local n=${1#/dev/}; busctl tree --list org.loopd.Loop1 | grep -m1 \"/device/${n}_[0-9]*$\"; }\n"
        "prop() { busctl get-property org.loopd.Loop1 \"$(obj \"$1\")\" org.loopd.Loop1.Device \"$2\" "
        "| sed -e 's/^[a-z] //' -e 's/^\"\\(.*\\)\"$/\\1/'; }\n"
        /* The device path out of a Create/CreateFromPath reply: osh \"/org/...\" \"/dev/loopN\" FD */
        "devof() { sed -n 's/^osh \"[^\"]*\" \"\\([^\"]*\\)\".*/\\1/p'; }\n"
        "attached() { losetup -n -O NAME -j \"$1\"; }\n"
        /* What the kernel says, from sysfs: users cannot open the nodes. */
        "ro() { cat /sys/block/${1#/dev/}/ro; }\n"
        "bytes() { echo $(( $(cat /sys/block/${1#/dev/}/size) * 512 )); }\n"
        "wait_detached() { for _ in $(seq 50); do [ -z \"$(attached \"$1\")\" ] && return 0; sleep 0.1; done; return 1; }\n"
        "wait_attached() { for _ in $(seq 50); do [ -n \"$(attached \"$1\")\" ] && return 0; sleep 0.1; done; return 1; }\n"
        "wait_active() { for _ in $(seq 100); do [ \"$(systemctl is-active loopd)\" = active ] && return 0; sleep 0.1; done; return 1; }\n"
        "mainpid() { systemctl show -P MainPID loopd; }\n";

/*
 * Runs @script with bash inside the container, as root or as @user, bounded
 * by @timeout seconds (inside the container: a command that hangs is
 * killed there, not just its nsenter). stdin is /dev/null; output captured.
 */
static int ct_run_timeout(Run *r, const char *user, int timeout, const char *script) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GSubprocess) p = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GBytes) err = NULL;
        gsize len;
        const char *data;

        run_clear(r);
        for (const char *const *a = (const char *const[]) {
                     "nsenter", "-t", S.leader, "-a", "--", "env", "-i",
                     "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                     "LANG=C.UTF-8", "HOME=/root", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "TERM=dumb",
                     "timeout", "-k", "5", NULL };
             *a; a++)
                g_ptr_array_add(argv, g_strdup(*a));
        g_ptr_array_add(argv, g_strdup_printf("%d", timeout));
        if (user) {
                g_ptr_array_add(argv, g_strdup("runuser"));
                g_ptr_array_add(argv, g_strdup("-u"));
                g_ptr_array_add(argv, g_strdup(user));
                g_ptr_array_add(argv, g_strdup("--"));
        }
        g_ptr_array_add(argv, g_strdup("bash"));
        g_ptr_array_add(argv, g_strdup("-c"));
        g_ptr_array_add(argv, g_strconcat(prelude, script, NULL));
        g_ptr_array_add(argv, NULL);

        p = g_subprocess_newv((const char *const *) argv->pdata,
                              G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error);
        if (!p || !g_subprocess_communicate(p, NULL, NULL, &r->out_bytes, &err, &error)) {
                r->status = 127;
                r->out = g_strdup("");
                r->err = g_strdup(error->message);
                return r->status;
        }
        if (g_subprocess_get_if_exited(p))
                r->status = g_subprocess_get_exit_status(p);
        else
                r->status = 128 + g_subprocess_get_term_sig(p);
        data = g_bytes_get_data(r->out_bytes, &len);
        r->out = g_strndup(data ? data : "", len);
        data = g_bytes_get_data(err, &len);
        r->err = g_strndup(data ? data : "", len);
        if (r->status == 124)
                g_test_message("a command ran into its %d s timeout inside the container", timeout);
        return r->status;
}

G_GNUC_PRINTF(3, 4) static int ct(Run *r, const char *user, const char *fmt, ...) {
        va_list ap;
        g_autofree char *script = NULL;

        va_start(ap, fmt);
        script = g_strdup_vprintf(fmt, ap);
        va_end(ap);
        return ct_run_timeout(r, user, 120, script);
}

/* One line of output, trimmed; "" when there is none. */
static char *ct_line(const char *user, const char *script) {
        g_auto(Run) r = { 0 };

        ct_run_timeout(&r, user, 60, script);
        return g_strdup(g_strstrip(r.out));
}

/* "key=value" lines of a script's output. */
static GHashTable *kv_parse(const char *out) {
        GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
        g_auto(GStrv) lines = g_strsplit(out, "\n", -1);

        for (char **l = lines; *l; l++) {
                char *eq = strchr(*l, '=');
                if (eq)
                        g_hash_table_insert(h, g_strndup(*l, (gsize) (eq - *l)), g_strdup(eq + 1));
        }
        return h;
}

static const char *kv(GHashTable *h, const char *key) {
        const char *v = g_hash_table_lookup(h, key);
        return v ? v : "";
}

static gboolean is_loop_device(const char *dev) {
        return g_regex_match_simple("^/dev/loop[0-9]+$", dev, 0, 0);
}

/* ---- preconditions every check shares ----------------------------------- */

static gboolean ready(void) {
        if (S.skip_reason) {
                g_test_skip(S.skip_reason);
                return FALSE;
        }
        if (!S.leader) {
                fail("the container did not boot: see system-container's output in the log");
                return FALSE;
        }
        return TRUE;
}

static gboolean installed(void) {
        if (!ready())
                return FALSE;
        if (!S.installed) {
                fail("loopd is not installed: the README's install command failed (see /system/install/readme-command)");
                return FALSE;
        }
        if (!S.users_ready) {
                fail("the container's users and images are missing (see /system/container/users-and-images)");
                return FALSE;
        }
        return TRUE;
}

/* loopd running (activated by a call if it is not), as checks that read
 * its state or kill it need. */
static gboolean loopd_up(void) {
        g_auto(Run) r = { 0 };

        if (ct(&r, NULL, "busctl get-property $M Version >/dev/null && wait_active") != 0) {
                fail("loopd could not be started by a call: %s%s", r.out, r.err);
                return FALSE;
        }
        return TRUE;
}

/* ---- the container ------------------------------------------------------------ */

static void test_container_boots_systemd(void) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;
        const char *want = strcmp(S.bus, "dbus-broker") == 0 ? "dbus-broker-launch" : "dbus-daemon";

        if (!ready())
                return;
        ct(&r, NULL,
           "echo pid1=$(readlink /proc/1/exe)\n"
           "echo state=$(systemctl is-system-running)\n"
           "echo virt=$(systemd-detect-virt)\n"
           "echo version=$(systemctl --version | head -1)\n"
           "busctl get-property org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus Features >/dev/null\n"
           "echo bus=$(basename \"$(readlink /proc/$(systemctl show -P MainPID dbus.service)/exe)\")\n"
           "echo failed=$(systemctl list-units --failed --plain --no-legend | awk '{print $1}' | tr '\\n' ' ')\n");
        h = kv_parse(r.out);
        g_test_message("%s as PID 1 (%s), %s, in %s; system bus: %s", kv(h, "version"), kv(h, "pid1"),
                       kv(h, "state"), kv(h, "virt"), kv(h, "bus"));
        if (*kv(h, "failed"))
                g_test_message("failed units in the container: %s", kv(h, "failed"));
        if (!g_str_has_suffix(kv(h, "pid1"), "/systemd"))
                fail("expected systemd as PID 1 in the container; saw %s", kv(h, "pid1"));
        if (strcmp(kv(h, "state"), "running") != 0 && strcmp(kv(h, "state"), "degraded") != 0)
                fail("expected the system running (or degraded); saw '%s'", kv(h, "state"));
        if (strcmp(kv(h, "bus"), want) != 0)
                fail("expected the system bus to be %s (dbus.service run by %s); saw '%s'", S.bus, want, kv(h, "bus"));
}

/* The container sees the host's devtmpfs read-only: its systemd, tmpfiles
 * or udev rules can change no host device node. Only loop nodes are
 * writable, one by one, so that the service may put ACLs on them. */
static void test_container_host_devices_read_only(void) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;

        if (!ready())
                return;
        ct(&r, NULL,
           /* The mode it already has: even if this worked, nothing would change. */
           "chmod \"$(stat -c %%a /dev/null)\" /dev/null 2>&1 && echo null=writable || echo null=read-only\n"
           "n=$(findmnt -n -o TARGET -l | grep -m1 '^/dev/loop[0-9]*$')\n"
           "echo loopnode=$n\n"
           "if [ -n \"$n\" ]; then\n"
           "  acl=$(getfacl -cp \"$n\")\n"
           "  setfacl -m u:root:rw \"$n\" && echo loopacl=ok || echo loopacl=failed\n"
           "  echo \"$acl\" | setfacl --set-file=- \"$n\"\n"
           "fi\n");
        h = kv_parse(r.out);
        if (strcmp(kv(h, "null"), "read-only") != 0)
                fail("expected the host's /dev/null to be read-only in the container; chmod worked:\n%s%s", r.out, r.err);
        if (!*kv(h, "loopnode"))
                g_test_message("no loop node was bound writable (none existed at boot)");
        else if (strcmp(kv(h, "loopacl"), "ok") != 0)
                fail("expected %s to take an ACL in the container; saw:\n%s%s", kv(h, "loopnode"), r.out, r.err);
}

static const struct Tree {
        const char *tree;
        const char *root_dir;   /* where root keeps an image there */
        const char *user_dir;   /* where USER does; "@RUNTIME@": /run/user/UID; NULL: nowhere */
} trees[] = {
        { "/home", "/home/lpimages", "/home/" USER },
        { "/root", "/root", NULL },
        { "/srv", "/srv/lpimages", "/srv/" USER },
        { "/tmp", "/tmp", "/tmp" },
        { "/var/tmp", "/var/tmp", "/var/tmp" },
        { "/mnt", "/mnt/lpimages", "/mnt/" USER },
        { "/media", "/media/lpimages", "/media/" USER },
        { "/run/media", "/run/media/root", "/run/media/" USER },
        { "/opt", "/opt/lpimages", "/opt/" USER },
        { "/run/user", "/run/user/0", "@RUNTIME@" },
};

static char *user_dir(const struct Tree *t) {
        if (!t->user_dir)
                return NULL;
        if (strcmp(t->user_dir, "@RUNTIME@") == 0)
                return g_strdup_printf("/run/user/%u", S.uid);
        return g_strdup(t->user_dir);
}

static void test_container_users_and_images(void) {
        g_autoptr(GString) s = g_string_new(NULL);
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;

        if (!ready())
                return;
        /* Users as a host has them. The home is made 0755 (Debian's
         * useradd default): root's images in it then test the tree, not
         * root's right to enter other users' 0700 homes. */
        g_string_append(s,
                "set -e\n"
                "useradd -m -s /bin/bash " USER "; useradd -m -s /bin/bash " OTHER "\n"
                "chmod 0755 /home/" USER "\n"
                "U=$(id -u " USER ")\n"
                "echo uid=$U; echo other=$(id -u " OTHER ")\n"
                /* What logind and udisks would make: per-user runtime and media dirs. */
                "install -d -m 0700 /run/user/0; install -d -m 0700 -o " USER " -g " USER " /run/user/$U\n"
                "install -d -m 0755 /run/media/root; install -d -m 0750 -o " USER " -g " USER " /run/media/" USER "\n"
                "for t in /home /srv /mnt /media /opt; do install -d -m 0755 $t/lpimages; done\n"
                "for t in /srv /mnt /media /opt; do install -d -m 0755 -o " USER " -g " USER " $t/" USER "; done\n"
                "img() { truncate -s " IMAGE_SIZE " \"$1\"; chown \"$2\" \"$1\"; chmod \"$3\" \"$1\"; }\n");
        for (size_t i = 0; i < G_N_ELEMENTS(trees); i++) {
                g_string_append_printf(s, "img %s/tree-root.img root: 0644\n", trees[i].root_dir);
                if (trees[i].user_dir)
                        g_string_append_printf(s, "img %s/tree-user.img " USER ": 0644\n",
                                               strcmp(trees[i].user_dir, "@RUNTIME@") == 0 ? "/run/user/$U"
                                                                                           : trees[i].user_dir);
        }
        g_string_append(s,
                /* For root's rights: a 0000 file of root's and a 0644 file of the user's. */
                "img /srv/lpimages/zero.img root: 0000\n"
                "img /srv/" USER "/others.img " USER ": 0644\n"
                "img /srv/lpimages/fd-root.img root: 0644\n"
                "img /srv/lpimages/gdbus.img root: 0644\n"
                "img /srv/lpimages/losetup.img root: 0644\n"
                "img /srv/lpimages/status.img root: 0644\n"
                "img /srv/lpimages/refused.img root: 0644\n"
                "img /srv/" USER "/polkit.img " USER ": 0644\n"
                "img /srv/" USER "/fd-user.img " USER ": 0644\n"
                "img /srv/" USER "/journal.img " USER ": 0644\n"
                "img /srv/" USER "/status-bound.img " USER ": 0644\n"
                "img /srv/" USER "/bound-dies.img " USER ": 0644\n"
                "img /srv/" USER "/bound-lives.img " USER ": 0644\n"
                "img /var/tmp/resize-user.img " USER ": 0644\n"
                "img /srv/" USER "/crash.img " USER ": 0644\n"
                "img /srv/lpimages/next.img root: 0644\n"
                /* The backing-file devices: root's and the user's, from /srv, /home/u, /var/tmp. */
                "img /srv/bf-root.img root: 0644\n"
                "img /home/" USER "/bf-root.img root: 0644\n"
                "img /var/tmp/bf-root.img root: 0644\n"
                "img /srv/" USER "/bf-user.img " USER ": 0644\n"
                "img /home/" USER "/bf-user.img " USER ": 0644\n"
                "img /var/tmp/bf-user.img " USER ": 0644\n"
                "echo done=yes\n");
        ct(&r, NULL, "%s", s->str);
        h = kv_parse(r.out);
        if (r.status != 0 || strcmp(kv(h, "done"), "yes") != 0) {
                fail("could not add users and images in the container (exit %d):\n%s%s", r.status, r.out, r.err);
                return;
        }
        S.uid = (guint) g_ascii_strtoull(kv(h, "uid"), NULL, 10);
        S.other_uid = (guint) g_ascii_strtoull(kv(h, "other"), NULL, 10);
        S.users_ready = S.uid > 0 && S.other_uid > 0;
        g_test_message("users: " USER " (uid %u), " OTHER " (uid %u)", S.uid, S.other_uid);
}

/* ---- install ----------------------------------------------------------------- */

/* The README's install command: the first `code span` on one line that
 * starts with "meson setup" and contains "meson install". */
static char *readme_install_command(void) {
        const char *src = g_getenv("LOOPD_SOURCE_ROOT");
        g_autofree char *path = NULL, *text = NULL;
        g_autoptr(GRegex) re = NULL;
        g_autoptr(GMatchInfo) m = NULL;

        if (!src)
                return NULL;
        path = g_build_filename(src, "README.md", NULL);
        if (!g_file_get_contents(path, &text, NULL, NULL))
                return NULL;
        re = g_regex_new("`(meson setup [^`\\n]*meson install[^`\\n]*)`", 0, 0, NULL);
        if (!g_regex_match(re, text, 0, &m))
                return NULL;
        return g_match_info_fetch(m, 1);
}

static char *install_dir_of(const char *log, const char *file_suffix) {
        g_auto(GStrv) lines = g_strsplit(log, "\n", -1);

        for (char **l = lines; *l; l++) {
                const char *to = strstr(*l, " to ");
                if (!g_str_has_prefix(*l, "Installing ") || !to)
                        continue;
                g_autofree char *what = g_strndup(*l + strlen("Installing "), (gsize) (to - *l - strlen("Installing ")));
                if (g_str_has_suffix(what, file_suffix))
                        return g_strdup(to + 4);
        }
        return NULL;
}

static void test_install_readme_command(void) {
        g_auto(Run) r = { 0 };
        g_autoptr(GString) installing = g_string_new(NULL);
        g_auto(GStrv) lines = NULL;
        g_autofree char *sbin = NULL, *script = NULL;
        double t0 = now();

        if (!ready())
                return;
        if (!S.readme_command) {
                fail("README.md has no `meson setup ... meson install ...` command to run");
                return;
        }
        g_test_message("README's install command: %s", S.readme_command);
        if (S.host_build_error)
                g_test_message("(the build on the host failed, the command builds in the container: %s)",
                               S.host_build_error);
        if (S.tree && !S.host_build_error) {
                g_test_message("run in %s/src, a fresh copy of the source tree already built there on the host by the "
                               "command's build part (%.1f s)", S.tree, S.t_host_build);
                script = g_strdup_printf("set -e\ncd %s/src\n%s\nldconfig\n", S.tree, S.readme_command);
        } else
                /* A fresh copy, as a clone has it: no build directories. */
                script = g_strdup_printf("set -e\n"
                                         "rm -rf /usr/src/loopd; mkdir -p /usr/src/loopd\n"
                                         "tar -C /run/loopd-source --anchored --exclude='./build*' --exclude=./.git "
                                         "--exclude='*.o' -cf - . | tar -C /usr/src/loopd -xf -\n"
                                         "cd /usr/src/loopd\n"
                                         "%s\n"
                                         "ldconfig\n",
                                         S.readme_command);
        ct_run_timeout(&r, NULL, 280, script);
        S.t_install = now() - t0;
        lines = g_strsplit(r.out, "\n", -1);
        for (char **l = lines; *l; l++)
                if (g_str_has_prefix(*l, "Installing "))
                        g_string_append_printf(installing, "%s\n", *l);
        S.install_log = g_strdup(installing->str);
        if (r.status != 0) {
                g_autofree char *tail = NULL;
                guint n = g_strv_length(lines);
                tail = g_strjoinv("\n", lines + (n > 40 ? n - 40 : 0));
                fail("the README's install command failed (exit %d); last output:\n%s\n%s", r.status, tail, r.err);
                return;
        }
        log_lines("  ", S.install_log);
        sbin = install_dir_of(S.install_log, "/loopd");
        if (!sbin) {
                fail("the install did not say where loopd went (no \"Installing .../loopd to DIR\" line)");
                return;
        }
        S.loopd_path = g_build_filename(sbin, "loopd", NULL);
        S.unit_dir = install_dir_of(S.install_log, "/loopd.service");
        S.services_dir = install_dir_of(S.install_log, "/org.loopd.Loop1.service");
        S.installed = TRUE;
        g_test_message("built and installed in %.1f s", S.t_install);
}

/* What systemd and the bus will start is the file the install put there. */
static void test_install_unit_and_activation_name_installed_loopd(void) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;

        if (!installed())
                return;
        ct(&r, NULL,
           "echo fragment=$(systemctl show -P FragmentPath loopd.service)\n"
           "echo exec=$(systemctl show -P ExecStart loopd.service | sed -n 's/.*path=\\([^ ;]*\\).*/\\1/p')\n"
           "f=%s/org.loopd.Loop1.service\n"
           "echo activation_exec=$(sed -n 's/^Exec=\\([^ ]*\\).*/\\1/p' \"$f\")\n"
           "echo activation_unit=$(sed -n 's/^SystemdService=//p' \"$f\")\n"
           "test -x %s && echo executable=yes\n",
           S.services_dir ? S.services_dir : "/nonexistent", S.loopd_path);
        h = kv_parse(r.out);
        g_test_message("unit %s: ExecStart=%s; activation file: Exec=%s SystemdService=%s", kv(h, "fragment"),
                       kv(h, "exec"), kv(h, "activation_exec"), kv(h, "activation_unit"));
        if (!S.unit_dir || !S.services_dir)
                fail("the install put no loopd.service or no org.loopd.Loop1.service anywhere:\n%s", S.install_log);
        else {
                g_autofree char *unit = g_build_filename(S.unit_dir, "loopd.service", NULL);
                if (strcmp(kv(h, "fragment"), unit) != 0)
                        fail("expected systemd to load loopd.service from %s; it loads '%s'", unit, kv(h, "fragment"));
        }
        if (strcmp(kv(h, "executable"), "yes") != 0)
                fail("the installed loopd %s is not an executable file", S.loopd_path);
        if (strcmp(kv(h, "exec"), S.loopd_path) != 0)
                fail("expected the unit's ExecStart= to run the installed %s; it runs '%s'", S.loopd_path, kv(h, "exec"));
        if (strcmp(kv(h, "activation_exec"), S.loopd_path) != 0)
                fail("expected the activation file's Exec= to be the installed %s; it is '%s'", S.loopd_path,
                     kv(h, "activation_exec"));
        if (strcmp(kv(h, "activation_unit"), "loopd.service") != 0)
                fail("expected SystemdService=loopd.service in the activation file; saw '%s'", kv(h, "activation_unit"));
}

/* polkitd reads actions from /usr/share/polkit-1/actions only. */
static void test_install_polkit_knows_actions(void) {
        g_auto(Run) r = { 0 };
        g_autofree char *policy_dir = NULL;

        if (!installed())
                return;
        policy_dir = install_dir_of(S.install_log, "/org.loopd.policy");
        for (const char *const *a = (const char *const[]) { "org.loopd.create", "org.loopd.manage-others", NULL }; *a;
             a++)
                if (ct(&r, NULL, "pkaction --action-id %s", *a) != 0)
                        fail("expected polkitd to know the action %s once installed; pkaction says: %s%s\n"
                             "(polkit policy installed as: %s)",
                             *a, r.out, r.err, policy_dir ? policy_dir : "nowhere");
}

static void test_install_bus_lists_loopd_activatable(void) {
        g_auto(Run) r = { 0 };

        if (!installed())
                return;
        ct(&r, NULL, "busctl list --activatable --no-legend | awk '{print $1}'");
        if (!g_regex_match_simple("^org\\.loopd\\.Loop1$", r.out, G_REGEX_MULTILINE, 0))
                fail("expected the %s to list org.loopd.Loop1 as activatable after the install (activation file in %s); "
                     "it does not",
                     S.bus, S.services_dir ? S.services_dir : "nowhere");
}

/* ---- activation ----------------------------------------------------------------- */

static void test_activation_inactive_before_first_call(void) {
        g_autofree char *state = NULL, *procs = NULL;

        if (!installed())
                return;
        state = ct_line(NULL, "systemctl is-active loopd.service");
        procs = ct_line(NULL, "pgrep -x loopd | tr '\\n' ' '");
        if (strcmp(state, "inactive") != 0)
                fail("expected loopd.service inactive before any call (it has no [Install]: only the bus starts it); "
                     "it is '%s'", state);
        if (*procs)
                fail("expected no loopd process before the first call; saw pids %s", procs);
}

/*
 * The first call starts loopd.service through the activation file's
 * SystemdService=: loopd then runs in its unit's cgroup and sandbox, as the
 * installed binary. Root's call and a user's call (the bus policy lets every
 * uid reach loopd) both get answers.
 */
static void test_activation_first_call_starts_unit(void) {
        g_auto(Run) r = { 0 }, u = { 0 };
        g_autoptr(GHashTable) h = NULL;

        if (!installed())
                return;
        ct(&r, NULL,
           "echo version=$(busctl get-property $M Version 2>&1)\n"
           "wait_active\n"
           "echo state=$(systemctl is-active loopd.service)\n"
           "p=$(mainpid); echo pid=$p\n"
           "[ \"$p\" != 0 ] && echo exe=$(readlink /proc/$p/exe) && echo cgroup=$(sed -n 's/^0:://p' /proc/$p/cgroup)\n");
        h = kv_parse(r.out);
        g_test_message("root: busctl get-property ... Version -> %s", kv(h, "version"));
        if (!g_str_has_prefix(kv(h, "version"), "s \""))
                fail("expected the first call to activate loopd and answer; root's call got: %s", kv(h, "version"));
        if (strcmp(kv(h, "state"), "active") != 0)
                fail("expected loopd.service active after the first call; it is '%s'", kv(h, "state"));
        if (S.loopd_path && strcmp(kv(h, "exe"), S.loopd_path) != 0)
                fail("expected loopd.service's main process to run the installed %s; it runs '%s'", S.loopd_path,
                     kv(h, "exe"));
        if (!g_str_has_suffix(kv(h, "cgroup"), "/loopd.service"))
                fail("expected loopd in loopd.service's cgroup (started by systemd through SystemdService=); "
                     "it is in '%s'", kv(h, "cgroup"));

        ct(&u, USER, "loopctl list");
        if (u.status != 0)
                fail("expected an unprivileged user to reach loopd (loopctl list); exit %d: %s%s", u.status, u.out, u.err);
}

static void test_service_systemctl_status(void) {
        g_auto(Run) r = { 0 };

        if (!installed() || !loopd_up())
                return;
        ct(&r, NULL, "systemctl status loopd.service --no-pager --lines=5");
        log_lines("  ", r.out);
        if (r.status != 0)
                fail("expected `systemctl status loopd` to exit 0 for a running service; exit %d", r.status);
        if (!strstr(r.out, "Active: active (running)"))
                fail("expected `systemctl status loopd` to show \"Active: active (running)\"");
        if (!strstr(r.out, "Started loopd.service") && !strstr(r.out, "Started Loop device service"))
                g_test_message("(the status shows no \"Started\" line from systemd among its last lines)");
}

/* ---- Create by fd --------------------------------------------------------------- */

/* loopctl opens the file with the caller's rights and passes the fd. */
static void create_by_fd(const char *user, const char *image) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;
        g_autofree char *uid = g_strdup_printf("%u", user ? S.uid : 0);

        ct(&r, user,
           "f=%s\n"
           "dev=$(loopctl create $f) || exit 1\n"
           "echo dev=$dev\n"
           "echo back=$(losetup -n -O BACK-FILE $dev)\n"
           "echo ro=$(ro $dev)\n"
           "echo owner=$(prop $dev OwnerUID)\n"
           "loopctl remove $dev || echo remove=failed\n"
           "wait_detached $f || echo detached=no\n",
           image);
        h = kv_parse(r.out);
        if (r.status != 0 || !is_loop_device(kv(h, "dev"))) {
                fail("expected `loopctl create %s` as %s to print a loop device; exit %d: %s%s", image,
                     user ? user : "root", r.status, r.out, r.err);
                return;
        }
        g_test_message("%s: loopctl create %s -> %s", user ? user : "root", image, kv(h, "dev"));
        if (strcmp(kv(h, "back"), image) != 0)
                fail("expected the kernel's backing file of %s to be %s; losetup says '%s'", kv(h, "dev"), image,
                     kv(h, "back"));
        if (strcmp(kv(h, "ro"), "0") != 0)
                fail("expected %s read-write (the caller could write %s); the kernel says ro= %s", kv(h, "dev"), image,
                     kv(h, "ro"));
        if (strcmp(kv(h, "owner"), uid) != 0)
                fail("expected OwnerUID of %s to be the caller's uid; it is '%s'", kv(h, "dev"), kv(h, "owner"));
        if (*kv(h, "remove") || *kv(h, "detached"))
                fail("expected `loopctl remove %s` to detach it; remove=%s detached=%s", kv(h, "dev"), kv(h, "remove"),
                     kv(h, "detached"));
}

static void test_create_by_fd_as_root(void) {
        if (installed())
                create_by_fd(NULL, "/srv/lpimages/fd-root.img");
}

static void test_create_by_fd_as_user(void) {
        if (installed())
                create_by_fd(USER, "/srv/" USER "/fd-user.img");
}

/* The raw method with a real fd, as a program other than loopctl sends it
 * (busctl 252 cannot send fds; gdbus passes its fd 3 as 'handle 3'). */
static void test_create_by_fd_gdbus_handle(void) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;

        if (!installed())
                return;
        ct(&r, NULL,
           "out=$(gdbus call --system --dest org.loopd.Loop1 --object-path /org/loopd/Loop1 "
           "--method org.loopd.Loop1.Manager.Create 'handle 3' '{\"read-only\": <true>}' "
           "3</srv/lpimages/gdbus.img 2>&1) || { echo \"error=$out\"; exit 1; }\n"
           "echo reply=$out\n"
           "dev=$(echo \"$out\" | sed -n \"s/.*'\\(\\/dev\\/loop[0-9]*\\)'.*/\\1/p\")\n"
           "echo dev=$dev\n"
           "echo ro=$(ro $dev)\n"
           "echo back=$(losetup -n -O BACK-FILE $dev)\n"
           "busctl call $M Remove s $dev || echo remove=failed\n"
           "wait_detached /srv/lpimages/gdbus.img || echo detached=no\n");
        h = kv_parse(r.out);
        g_test_message("gdbus call ... Create 'handle 3' {read-only} 3<gdbus.img -> %s", kv(h, "reply"));
        if (r.status != 0 || !is_loop_device(kv(h, "dev"))) {
                fail("expected Create with an fd sent by gdbus to give a device; exit %d: %s%s", r.status, r.out, r.err);
                return;
        }
        if (strcmp(kv(h, "ro"), "1") != 0)
                fail("expected %s read-only as asked; the kernel says ro= %s", kv(h, "dev"), kv(h, "ro"));
        if (strcmp(kv(h, "back"), "/srv/lpimages/gdbus.img") != 0)
                fail("expected backing file /srv/lpimages/gdbus.img; losetup says '%s'", kv(h, "back"));
        if (*kv(h, "remove") || *kv(h, "detached"))
                fail("expected Remove to detach %s; remove=%s detached=%s", kv(h, "dev"), kv(h, "remove"), kv(h, "detached"));
}

/* ---- polkit ----------------------------------------------------------------------- */

static const char polkit_rule[] =
        "// The system suite's rule: " USER " may create loop devices, nobody else.\n"
        "polkit.addRule(function(action, subject) {\n"
        "        if (action.id == \"org.loopd.create\" && subject.user == \"" USER "\")\n"
        "                return polkit.Result.YES;\n"
        "});\n";

/* An error message that says the caller was not allowed: busctl's and
 * gdbus' names for AccessDenied and InteractiveAuthorizationRequired, or
 * loopctl's own words for them. */
static gboolean refusal_error(const char *text) {
        return strstr(text, "Access denied") || strstr(text, "AccessDenied") ||
               strstr(text, "Interactive authentication required") || strstr(text, "InteractiveAuthorizationRequired") ||
               strstr(text, "Authentication is required") || strstr(text, "Permission denied");
}

/* A refused create: non-zero exit, no device for the file. */
static void expect_refused(const char *user, const char *image, const char *why) {
        g_auto(Run) r = { 0 };

        ct(&r, user,
           "f=%s\n"
           "loopctl create --no-ask-password $f; echo status=$?\n"
           "busctl call $M CreateFromPath 'sa{sv}' $f 1 read-only b true 2>&1; echo busctl=$?\n"
           "echo attached=$(attached $f)\n",
           image);
        g_autoptr(GHashTable) h = kv_parse(r.out);
        g_test_message("%s: loopctl create --no-ask-password %s -> exit %s: %s", user, image, kv(h, "status"),
                       g_strstrip(r.err));
        g_test_message("%s: busctl call ... CreateFromPath %s -> %s", user, image, g_strstrip(r.out));
        if (strcmp(kv(h, "status"), "0") == 0 || strcmp(kv(h, "busctl"), "0") == 0 || *kv(h, "attached"))
                fail("expected %s to be refused (%s); loopctl exit %s, busctl exit %s, attached '%s'", user, why,
                     kv(h, "status"), kv(h, "busctl"), kv(h, "attached"));
        /* Refused by loopd for lack of authorization, not failed for
         * another reason (no bus, no loopd). */
        if (!refusal_error(r.err) || !refusal_error(r.out))
                fail("expected both refusals to be authorization errors; loopctl said: %s; busctl said: %s", r.err, r.out);
}

static void test_polkit_user_refused_without_rule(void) {
        if (installed())
                expect_refused(USER, "/srv/" USER "/polkit.img", "no polkit rule allows it; polkitd's default for "
                               "org.loopd.create asks for an admin, and nobody is there to answer");
}

static void test_polkit_rule_allows_named_user(void) {
        g_auto(Run) r = { 0 }, w = { 0 };
        g_autoptr(GHashTable) h = NULL;
        g_autofree char *uid = g_strdup_printf("%u", S.uid);

        if (!installed())
                return;
        /* Written beside, then renamed in: polkitd (running as its own user)
         * reloads on the first inotify event, and a rule file it reads while
         * still empty, or still 0600 root's, is skipped until the next
         * change. */
        ct(&w, NULL,
           "install -m 0644 /dev/stdin /etc/polkit-1/.50-loopd-system-test.rules <<'EOF'\n%sEOF\n"
           "mv /etc/polkit-1/.50-loopd-system-test.rules /etc/polkit-1/rules.d/50-loopd-system-test.rules\n",
           polkit_rule);
        if (w.status != 0) {
                fail("could not write the polkit rule: %s", w.err);
                return;
        }
        /* polkitd picks rules.d changes up through inotify, within about a second. */
        ct(&r, USER,
           "for i in $(seq 50); do dev=$(loopctl create --no-ask-password /srv/" USER "/polkit.img 2>/dev/null) && break; "
           "sleep 0.1; done\n"
           "echo dev=$dev\n"
           "echo owner=$(prop $dev OwnerUID)\n"
           "loopctl remove $dev && echo removed=yes\n"
           "wait_detached /srv/" USER "/polkit.img || echo detached=no\n");
        h = kv_parse(r.out);
        if (!is_loop_device(kv(h, "dev"))) {
                fail("expected " USER " allowed by the rules.d file to create a device; no device within 5 s: %s%s", r.out,
                     r.err);
                return;
        }
        g_test_message(USER " with the rule: loopctl create -> %s, OwnerUID %s", kv(h, "dev"), kv(h, "owner"));
        if (strcmp(kv(h, "owner"), uid) != 0)
                fail("expected OwnerUID %u; saw '%s'", S.uid, kv(h, "owner"));
        if (strcmp(kv(h, "removed"), "yes") != 0 || *kv(h, "detached"))
                fail("expected " USER " to remove its own device without polkit; %s%s", r.out, r.err);
}

static void test_polkit_others_still_refused(void) {
        if (installed())
                expect_refused(OTHER, "/srv/lpimages/refused.img", "the rule names " USER " only");
}

static void test_polkit_other_may_not_remove_users_device(void) {
        g_auto(Run) r = { 0 }, o = { 0 }, d = { 0 };
        g_autofree char *dev = NULL;

        if (!installed())
                return;
        ct(&r, USER, "loopctl create /srv/" USER "/polkit.img");
        dev = g_strdup(g_strstrip(r.out));
        if (!is_loop_device(dev)) {
                fail("expected " USER " to create a device; exit %d: %s%s", r.status, r.out, r.err);
                return;
        }
        ct(&o, OTHER, "loopctl remove --no-ask-password %s", dev);
        ct(&d, USER, "echo attached=$(attached /srv/" USER "/polkit.img); loopctl remove %s && echo removed=yes", dev);
        g_test_message(OTHER ": loopctl remove %s -> exit %d: %s", dev, o.status, g_strstrip(o.err));
        if (o.status == 0)
                fail("expected " OTHER " to be refused removing " USER "'s %s (org.loopd.manage-others is not granted); "
                     "it succeeded", dev);
        if (!strstr(d.out, "attached=/dev/loop"))
                fail("expected %s still attached after " OTHER "'s refused remove; saw %s", dev, d.out);
        if (!strstr(d.out, "removed=yes"))
                fail("expected " USER " to remove its own %s; %s%s", dev, d.out, d.err);
}

/* ---- CreateFromPath from every tree ------------------------------------------------ */

/* CreateFromPath of @path as @user (NULL: root): the device it gives, its
 * BackingFile as loopd and the kernel say, and Remove. */
static void create_from_path(const char *user, const char *path, gboolean expect_ok) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;
        const char *who = user ? user : "root";

        ct(&r, user,
           "f=%s\n"
           "out=$(busctl call $M CreateFromPath 'sa{sv}' $f 0 2>&1) || { echo \"error=$out\"; exit 1; }\n"
           "dev=$(echo \"$out\" | devof); echo dev=$dev\n"
           "echo prop=$(prop $dev BackingFile)\n"
           "echo kernel=$(losetup -n -O BACK-FILE $dev)\n"
           "echo ro=$(ro $dev)\n"
           "busctl call $M Remove s $dev >/dev/null || echo remove=failed\n"
           "wait_detached $f || echo detached=no\n",
           path);
        h = kv_parse(r.out);
        if (!expect_ok) {
                g_test_message("%s: CreateFromPath %s -> %s", who, path, r.status != 0 ? kv(h, "error") : kv(h, "dev"));
                if (r.status == 0)
                        fail("expected %s's CreateFromPath of %s refused (opened with %s's rights, it cannot be); "
                             "it gave %s", who, path, who, kv(h, "dev"));
                else if (!refusal_error(kv(h, "error")))
                        fail("expected %s's CreateFromPath of %s refused as access denied; it failed otherwise: %s", who,
                             path, kv(h, "error"));
                return;
        }
        if (r.status != 0 || !is_loop_device(kv(h, "dev"))) {
                fail("expected %s's CreateFromPath(\"%s\") read-write to give a device; got: %s%s", who, path,
                     *kv(h, "error") ? kv(h, "error") : r.out, r.err);
                return;
        }
        g_test_message("%s: CreateFromPath %s -> %s, BackingFile \"%s\"", who, path, kv(h, "dev"), kv(h, "prop"));
        if (strcmp(kv(h, "ro"), "0") != 0)
                fail("expected %s read-write; the kernel says ro= %s", kv(h, "dev"), kv(h, "ro"));
        if (strcmp(kv(h, "prop"), path) != 0 || strcmp(kv(h, "kernel"), path) != 0)
                fail("expected BackingFile of %s to be the path named, %s; loopd says \"%s\", losetup \"%s\"", kv(h, "dev"),
                     path, kv(h, "prop"), kv(h, "kernel"));
        if (*kv(h, "remove") || *kv(h, "detached"))
                fail("expected Remove to detach %s; remove=%s detached=%s", kv(h, "dev"), kv(h, "remove"),
                     kv(h, "detached"));
}

static void test_create_from_path_as_root(gconstpointer data) {
        const struct Tree *t = data;
        g_autofree char *path = g_build_filename(t->root_dir, "tree-root.img", NULL);

        if (installed())
                create_from_path(NULL, path, TRUE);
}

static void test_create_from_path_as_user(gconstpointer data) {
        const struct Tree *t = data;
        g_autofree char *dir = NULL, *path = NULL;

        if (!installed())
                return;
        dir = user_dir(t);
        if (!dir) {
                /* No user keeps images in root's home; the helper opens as the
                 * user, so root's own file there is out of reach. */
                path = g_build_filename(t->root_dir, "tree-root.img", NULL);
                create_from_path(USER, path, FALSE);
                return;
        }
        path = g_build_filename(dir, "tree-user.img", NULL);
        create_from_path(USER, path, TRUE);
}

/* Root's CreateFromPath gets root's rights: a file no permission bit allows
 * and another user's file read-write. */
static void test_create_from_path_root_opens_0000_file(void) {
        if (installed())
                create_from_path(NULL, "/srv/lpimages/zero.img", TRUE);
}

static void test_create_from_path_root_opens_others_file_rw(void) {
        if (installed())
                create_from_path(NULL, "/srv/" USER "/others.img", TRUE);
}

/* ---- RefreshSize, losetup ------------------------------------------------------------ */

static void test_refresh_size_follows_file(void) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;
        const guint64 grown = 24ULL * 1024 * 1024;

        if (!installed())
                return;
        ct(&r, USER,
           "f=/var/tmp/resize-user.img\n"
           "dev=$(loopctl create $f) || exit 1; echo dev=$dev\n"
           "echo before=$(bytes $dev)\n"
           "truncate -s %" G_GUINT64_FORMAT " $f\n"
           "loopctl refresh-size $dev || echo refresh=failed\n"
           "echo after=$(bytes $dev)\n"
           "echo prop=$(prop $dev Size)\n"
           "loopctl remove $dev; wait_detached $f || echo detached=no\n",
           grown);
        h = kv_parse(r.out);
        if (r.status != 0 || !is_loop_device(kv(h, "dev"))) {
                fail("expected " USER " to create a device for the resize; %s%s", r.out, r.err);
                return;
        }
        g_test_message(USER ": %s %s -> %s bytes after truncate + loopctl refresh-size (Size property %s)", kv(h, "dev"),
                       kv(h, "before"), kv(h, "after"), kv(h, "prop"));
        if (*kv(h, "refresh"))
                fail("expected " USER "'s RefreshSize of its own device to succeed: %s", r.err);
        if (g_ascii_strtoull(kv(h, "after"), NULL, 10) != grown || g_ascii_strtoull(kv(h, "prop"), NULL, 10) != grown)
                fail("expected %s to be %" G_GUINT64_FORMAT " bytes after RefreshSize; the kernel says %s, loopd's Size %s",
                     kv(h, "dev"), grown, kv(h, "after"), kv(h, "prop"));
        if (*kv(h, "detached"))
                fail("expected %s detached after remove", kv(h, "dev"));
}

/* A device made behind loopd's back, by losetup, gets an object from the
 * kernel's uevent and loses it when detached. */
static void test_losetup_devices_in_object_tree(void) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;

        if (!installed() || !loopd_up())
                return;
        ct(&r, NULL,
           "dev=$(losetup -f --show /srv/lpimages/losetup.img) || exit 1; echo dev=$dev\n"
           "n=${dev#/dev/}\n"
           /* This attachment's object, by its diskseq: the node may carry
            * another one right after the detach (the other bus's suite
            * shares the host's loop devices). */
           "obj=/org/loopd/Loop1/device/${n}_$(cat /sys/block/$n/diskseq)\n"
           "for i in $(seq 50); do busctl tree --list org.loopd.Loop1 | grep -qxF \"$obj\" && break; sleep 0.1; done\n"
           "echo object=$(busctl tree --list org.loopd.Loop1 | grep -xF \"$obj\")\n"
           "echo back=$(prop $dev BackingFile)\n"
           "losetup -d $dev\n"
           "for i in $(seq 100); do busctl tree --list org.loopd.Loop1 | grep -qxF \"$obj\" || break; sleep 0.1; done\n"
           "echo after=$(busctl tree --list org.loopd.Loop1 | grep -xF \"$obj\")\n"
           "echo kernel=$(attached /srv/lpimages/losetup.img)\n"
           "echo pending=$(prop $dev DetachPending 2>&1)\n"
           "echo holders=$(ls /sys/block/$n/holders 2>/dev/null)\n");
        h = kv_parse(r.out);
        if (r.status != 0 || !is_loop_device(kv(h, "dev"))) {
                fail("losetup -f --show failed in the container: %s%s", r.out, r.err);
                return;
        }
        g_test_message("losetup -f --show -> %s; object %s, BackingFile \"%s\"", kv(h, "dev"), kv(h, "object"),
                       kv(h, "back"));
        if (!*kv(h, "object"))
                fail("expected losetup's %s to appear in loopd's object tree within 5 s; it did not", kv(h, "dev"));
        else if (strcmp(kv(h, "back"), "/srv/lpimages/losetup.img") != 0)
                fail("expected BackingFile of losetup's %s to be /srv/lpimages/losetup.img; loopd says \"%s\"",
                     kv(h, "dev"), kv(h, "back"));
        if (*kv(h, "after"))
                fail("expected %s's object gone within 10 s of losetup -d; still there: %s (the kernel: %s; "
                     "DetachPending %s)", kv(h, "dev"), kv(h, "after"),
                     *kv(h, "kernel") ? "still attached" : "detached", kv(h, "pending"));
}

/* ---- STATUS= ------------------------------------------------------------------------------ */

/* A caller that stays on the bus with a bind-to-caller device: `loopctl
 * with FILE -- sleep`, as @user, its pid written to @pidfile. */
static gboolean start_bound_caller(const char *user, const char *image, const char *pidfile, char **ret_dev) {
        g_auto(Run) r = { 0 };

        ct(&r, NULL,
           "u=%s f=%s pidfile=%s\n"
           "rm -f $pidfile\n"
           "setsid runuser -u $u -- sh -c \"echo \\$\\$ >$pidfile; exec loopctl with $f -- sleep 300\" "
           "</dev/null >/dev/null 2>&1 &\n"
           "wait_attached $f || { echo 'no device'; exit 1; }\n"
           "attached $f\n",
           user, image, pidfile);
        *ret_dev = g_strdup(g_strstrip(r.out));
        if (r.status != 0 || !is_loop_device(*ret_dev)) {
                fail("expected `loopctl with %s -- sleep` as %s to attach a device within 5 s; %s%s", image, user, r.out,
                     r.err);
                return FALSE;
        }
        return TRUE;
}

/* Kills the caller (loopctl, then its sleep), with SIGKILL: no goodbye. */
static void kill_bound_caller(const char *pidfile) {
        g_auto(Run) r = { 0 };

        ct(&r, NULL,
           "pidfile=%s\n"
           "p=$(cat $pidfile 2>/dev/null) || exit 0\n"
           "kids=$(pgrep -P $p)\n"
           "kill -9 $p $kids 2>/dev/null; rm -f $pidfile\n",
           pidfile);
}

/* StatusText, the number of loop devices the kernel has while it was read
 * (other programs on this machine may set some up meanwhile), and whether
 * it reads "Serving N loop devices, M bound to callers." with N in range
 * and M == @bound. Polls: loopd updates STATUS= after the change. */
static gboolean status_text_matches(guint bound, char **ret_seen, guint *ret_lo, guint *ret_hi) {
        g_autoptr(GRegex) re = g_regex_new("^Serving ([0-9]+) loop devices?, ([0-9]+) bound to callers?\\.$", 0, 0, NULL);

        for (int i = 0; i < 12; i++) {
                g_auto(Run) r = { 0 };
                g_autoptr(GHashTable) h = NULL;
                g_autoptr(GMatchInfo) m = NULL;

                ct(&r, NULL,
                   "echo a=$(losetup -n -l -O NAME | wc -l)\n"
                   "echo text=$(systemctl show -P StatusText loopd.service)\n"
                   "echo b=$(losetup -n -l -O NAME | wc -l)\n");
                h = kv_parse(r.out);
                g_free(*ret_seen);
                *ret_seen = g_strdup(kv(h, "text"));
                *ret_lo = MIN(atoi(kv(h, "a")), atoi(kv(h, "b")));
                *ret_hi = MAX(atoi(kv(h, "a")), atoi(kv(h, "b")));
                if (g_regex_match(re, *ret_seen, 0, &m)) {
                        g_autofree char *n = g_match_info_fetch(m, 1), *b = g_match_info_fetch(m, 2);
                        if ((guint) atoi(n) >= *ret_lo && (guint) atoi(n) <= *ret_hi && (guint) atoi(b) == bound)
                                return TRUE;
                }
                g_usleep(100 * 1000);
        }
        return FALSE;
}

static void test_status_text_follows_devices(void) {
        g_auto(Run) c = { 0 }, rm = { 0 };
        g_autofree char *seen = NULL, *bound_dev = NULL, *dev = NULL;
        guint lo = 0, hi = 0;

        if (!installed() || !loopd_up())
                return;
        if (!status_text_matches(0, &seen, &lo, &hi))
                fail("before: expected StatusText \"Serving N loop devices, 0 bound to callers.\" with N the attached loop "
                     "devices (%u..%u while it was read); saw \"%s\"", lo, hi, seen);
        else
                g_test_message("before: \"%s\"", seen);

        ct(&c, NULL, "busctl call $M CreateFromPath 'sa{sv}' /srv/lpimages/status.img 0 | devof");
        dev = g_strdup(g_strstrip(c.out));
        if (!is_loop_device(dev)) {
                fail("expected root's CreateFromPath to give a device: %s%s", c.out, c.err);
                return;
        }
        if (!start_bound_caller(USER, "/srv/" USER "/status-bound.img", "/tmp/lp-status.pid", &bound_dev)) {
                ct(&rm, NULL, "busctl call $M Remove s %s", dev);
                return;
        }
        if (!status_text_matches(1, &seen, &lo, &hi))
                fail("with %s (root's) and %s (bound to " USER "'s loopctl) attached: expected StatusText \"Serving N loop "
                     "devices, 1 bound to callers.\" with N the attached loop devices (%u..%u while it was read); "
                     "saw \"%s\"", dev, bound_dev, lo, hi, seen);
        else
                g_test_message("with %s and bound %s: \"%s\"", dev, bound_dev, seen);

        kill_bound_caller("/tmp/lp-status.pid");
        ct(&rm, NULL, "busctl call $M Remove s %s; wait_detached /srv/" USER "/status-bound.img", dev);
        if (!status_text_matches(0, &seen, &lo, &hi))
                fail("after removing %s and killing the caller of %s: expected StatusText \"Serving N loop devices, 0 "
                     "bound to callers.\" with N the attached loop devices (%u..%u while it was read); saw \"%s\"",
                     dev, bound_dev, lo, hi, seen);
        else
                g_test_message("after: \"%s\"", seen);
}

/* ---- the journal ------------------------------------------------------------------------------ */

typedef GHashTable Entry;   /* field -> value (the first, if repeated) */

/*
 * `journalctl -o export` of @args, parsed. Export is "FIELD=value\n" for
 * text without newlines, else "FIELD\n" + 64-bit LE length + data + "\n";
 * entries end with an empty line. Binary values are kept as they are.
 */
static GPtrArray *journal(const char *args) {
        g_auto(Run) r = { 0 };
        GPtrArray *entries = g_ptr_array_new_with_free_func((GDestroyNotify) g_hash_table_unref);
        g_autofree char *script = g_strdup_printf("journalctl --no-pager -o export %s", args);
        const char *p, *end;
        gsize len;
        Entry *e = NULL;

        ct_run_timeout(&r, NULL, 60, script);
        if (r.status != 0)
                g_test_message("journalctl -o export %s: exit %d: %s", args, r.status, r.err);
        p = g_bytes_get_data(r.out_bytes, &len);
        if (!p)
                return entries;
        end = p + len;
        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t) (end - p));
                const char *eq;
                if (!nl)
                        break;
                if (nl == p) {   /* end of an entry */
                        if (e)
                                g_ptr_array_add(entries, e);
                        e = NULL;
                        p = nl + 1;
                        continue;
                }
                if (!e)
                        e = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
                eq = memchr(p, '=', (size_t) (nl - p));
                if (eq) {
                        char *k = g_strndup(p, (gsize) (eq - p));
                        if (!g_hash_table_contains(e, k))
                                g_hash_table_insert(e, k, g_strndup(eq + 1, (gsize) (nl - eq - 1)));
                        else
                                g_free(k);
                        p = nl + 1;
                } else {
                        guint64 n = 0;
                        char *k = g_strndup(p, (gsize) (nl - p));
                        p = nl + 1;
                        if (end - p < 8) {
                                g_free(k);
                                break;
                        }
                        for (int i = 7; i >= 0; i--)
                                n = (n << 8) | (guint8) p[i];
                        p += 8;
                        if ((guint64) (end - p) < n + 1) {
                                g_free(k);
                                break;
                        }
                        if (!g_hash_table_contains(e, k))
                                g_hash_table_insert(e, k, g_strndup(p, (gsize) n));
                        else
                                g_free(k);
                        p += n + 1;
                }
        }
        if (e)
                g_ptr_array_add(entries, e);
        return entries;
}

static const char *field(Entry *e, const char *name) {
        const char *v = g_hash_table_lookup(e, name);
        return v ? v : "";
}

static char *journal_cursor(void) {
        return ct_line(NULL, "journalctl -o export -n 1 --no-pager | sed -n 's/^__CURSOR=//p'");
}

/* The first entry of loopd's since @cursor with MESSAGE_ID @mid and every
 * FIELD=value of @want (NULL-terminated pairs); polls a few seconds. */
static Entry *find_entry(const char *cursor, const char *mid, const char *const *want) {
        g_autofree char *args = g_strdup_printf("--after-cursor='%s'", cursor);
        guint seen = 0;

        /* journald may take a while under load: up to 10 s. Matches are
         * applied here, not by journalctl: journalctl 252 answers "No
         * entries" for --after-cursor together with a field match when the
         * cursor's own entry does not match. */
        for (int i = 0; i < 100; i++) {
                g_autoptr(GPtrArray) es = journal(args);
                seen = 0;
                for (guint k = 0; k < es->len; k++) {
                        Entry *e = es->pdata[k];
                        gboolean all = strcmp(field(e, "_SYSTEMD_UNIT"), "loopd.service") == 0 &&
                                       strcmp(field(e, "MESSAGE_ID"), mid) == 0;
                        if (!all)
                                continue;
                        seen++;
                        for (const char *const *w = want; w && *w; w += 2)
                                if (strcmp(field(e, w[0]), w[1]) != 0)
                                        all = FALSE;
                        if (all)
                                return g_hash_table_ref(e);
                }
                g_usleep(100 * 1000);
        }
        g_test_message("no entry with MESSAGE_ID=%s and the fields asked for; %u with that MESSAGE_ID since the cursor",
                       mid, seen);
        return NULL;
}

/* What loopd logged since @cursor, one line per entry, for failure messages. */
static char *journal_since(const char *cursor) {
        g_autofree char *since = *cursor ? g_strdup_printf("--after-cursor='%s'", cursor) : g_strdup("-b");
        g_autofree char *s = g_strdup_printf("journalctl --no-pager -o short-monotonic %s -u loopd.service | tail -n 15",
                                             since);
        g_auto(Run) r = { 0 };

        ct_run_timeout(&r, NULL, 60, s);
        return g_strdup(*r.out ? r.out : "(nothing)\n");
}

/* SD_MESSAGE_UNIT_STARTED: systemd's "Started loopd.service" line, once
 * per start of the unit. */
#define MID_UNIT_STARTED "39f53479d3a045ac8e11786248231fbf"

/* Every start of loopd in this boot (activation, restarts, idle exits and
 * re-activations, Restart= after kill -9) logs one "started" entry. */
static void test_journal_records_start(void) {
        g_autoptr(GPtrArray) es = NULL, starts = NULL;

        if (!installed() || !loopd_up())
                return;
        starts = journal("-b MESSAGE_ID=" MID_UNIT_STARTED " UNIT=loopd.service _PID=1");
        for (int i = 0; i < 20; i++) {
                g_clear_pointer(&es, g_ptr_array_unref);
                es = journal("-b _SYSTEMD_UNIT=loopd.service MESSAGE_ID=" MID_STARTED);
                if (es->len >= starts->len)
                        break;
                g_usleep(100 * 1000);
        }
        g_test_message("systemd started loopd.service %u times in this boot; loopd logged %u \"started\" entries%s%s",
                       starts->len, es->len, es->len ? "; the last: " : "",
                       es->len ? field(es->pdata[es->len - 1], "MESSAGE") : "");
        if (es->len != starts->len || starts->len == 0) {
                g_autofree char *seen = journal_since("");
                fail("expected one \"started\" entry (MESSAGE_ID=" MID_STARTED ") from loopd per start of "
                     "loopd.service: %u starts, %u entries. The journal of loopd.service (last lines):\n%s",
                     starts->len, es->len, seen);
        }
}

static gboolean has_loopd_fields(Entry *e) {
        GHashTableIter it;
        gpointer k;

        g_hash_table_iter_init(&it, e);
        while (g_hash_table_iter_next(&it, &k, NULL))
                if (g_str_has_prefix(k, "LOOPD_"))
                        return TRUE;
        return FALSE;
}

/* A user's Create and Remove: a "created" and a "removed" entry with the
 * user's uid and the device, and what else the created entry promises. */
static void test_journal_records_user_create_and_remove(void) {
        g_auto(Run) r = { 0 }, v = { 0 };
        g_autofree char *cursor = NULL, *uid = NULL, *dev = NULL;
        g_autoptr(GHashTable) created = NULL, removed = NULL;

        if (!installed() || !loopd_up())
                return;
        cursor = journal_cursor();
        ct(&r, USER, "dev=$(loopctl create /srv/" USER "/journal.img) && loopctl remove $dev && echo $dev");
        dev = g_strdup(g_strstrip(r.out));
        if (r.status != 0 || !is_loop_device(dev)) {
                fail("expected " USER "'s loopctl create + remove to work; %s%s", r.out, r.err);
                return;
        }
        uid = g_strdup_printf("%u", S.uid);
        created = find_entry(cursor, MID_CREATED, (const char *const[]) { "LOOPD_UID", uid, "LOOPD_DEVICE", dev, NULL });
        removed = find_entry(cursor, MID_REMOVED, (const char *const[]) { "LOOPD_UID", uid, "LOOPD_DEVICE", dev, NULL });

        /* -o verbose of each entry, found by its cursor (see find_entry()
         * on matches after a cursor). */
        ct(&v, NULL, "for c in $(journalctl --no-pager -o export --after-cursor='%s' | "
                     "awk -v RS= '/MESSAGE_ID=(" MID_CREATED "|" MID_REMOVED ")/ && /_SYSTEMD_UNIT=loopd.service/' | "
                     "sed -n 's/^__CURSOR=//p'); do journalctl --no-pager -o verbose --cursor=\"$c\" | awk 'NR > 1 && /^[^ ]/ { exit } { print }'; done",
           cursor);
        if (*v.out && !strstr(v.out, "-- No entries --")) {
                g_test_message("journalctl -o verbose of " USER "'s Create + Remove of %s:", dev);
                log_lines("  | ", v.out);
        }
        if (!created || !removed) {
                g_autofree char *seen = journal_since(cursor);
                if (!created)
                        fail("expected a \"created\" entry (MESSAGE_ID=" MID_CREATED ") with LOOPD_UID=%s "
                             "LOOPD_DEVICE=%s after " USER "'s loopctl create; none. loopd's unit logged:\n%s",
                             uid, dev, seen);
                if (!removed)
                        fail("expected a \"removed\" entry (MESSAGE_ID=" MID_REMOVED ") with LOOPD_UID=%s "
                             "LOOPD_DEVICE=%s after " USER "'s loopctl remove; none", uid, dev);
        }
        if (created) {
                g_autoptr(GString) missing = g_string_new(NULL);
                for (const char *const *f = (const char *const[]) { "MESSAGE", "PRIORITY", "LOOPD_PID", "LOOPD_SENDER",
                                                                    "LOOPD_DISKSEQ", "LOOPD_BACKING_FILE",
                                                                    "LOOPD_BACKING_DEV", "LOOPD_BACKING_INO",
                                                                    "LOOPD_OPTIONS", NULL };
                     *f; f++)
                        if (!g_hash_table_contains(created, *f))
                                g_string_append_printf(missing, " %s", *f);
                if (missing->len)
                        fail("the \"created\" entry lacks:%s", missing->str);
                if (!g_str_has_prefix(field(created, "LOOPD_SENDER"), ":"))
                        fail("expected LOOPD_SENDER to be the caller's unique bus name (\":1.N\"); it is '%s'",
                             field(created, "LOOPD_SENDER"));
        }
}

/* A create polkit refuses: a "refused" entry saying who and why. */
static void test_journal_records_refusal_with_reason(void) {
        g_auto(Run) r = { 0 };
        g_autofree char *cursor = NULL, *uid = NULL;
        g_autoptr(GHashTable) e = NULL;

        if (!installed() || !loopd_up())
                return;
        cursor = journal_cursor();
        ct(&r, OTHER, "loopctl create --no-ask-password /srv/lpimages/refused.img");
        if (r.status == 0) {
                fail("expected " OTHER "'s create to be refused by polkit; it gave %s", r.out);
                return;
        }
        uid = g_strdup_printf("%u", S.other_uid);
        e = find_entry(cursor, MID_REFUSED, (const char *const[]) { "LOOPD_UID", uid, "LOOPD_REASON", "polkit", NULL });
        if (!e) {
                g_autofree char *seen = journal_since(cursor);
                fail("expected a \"refused\" entry (MESSAGE_ID=" MID_REFUSED ") with LOOPD_UID=%s LOOPD_REASON=polkit "
                     "after polkit refused " OTHER "'s create (%s); none. loopd's unit logged:\n%s",
                     uid, g_strstrip(r.err), seen);
                return;
        }
        g_test_message("refused: %s", field(e, "MESSAGE"));
        if (strcmp(field(e, "LOOPD_ACTION"), "org.loopd.create") != 0)
                fail("expected LOOPD_ACTION=org.loopd.create in the refused entry; it is '%s'", field(e, "LOOPD_ACTION"));
}

/* Everything loopd itself wrote to the journal in this boot (not systemd's
 * lines about the unit): one plain line, a priority; at notice and below
 * (the audit trail) a known MESSAGE_ID and LOOPD_* fields where it concerns
 * a caller or a device. Warnings and errors about loopd's own trouble are
 * plain lines. */
static void test_journal_entries_structured(void) {
        g_autoptr(GPtrArray) es = NULL;
        g_autoptr(GString) bad = g_string_new(NULL);
        guint nbad = 0;

        if (!installed())
                return;
        es = journal("-b _SYSTEMD_UNIT=loopd.service");
        for (guint i = 0; i < es->len; i++) {
                Entry *e = es->pdata[i];
                const char *msg = field(e, "MESSAGE"), *mid = field(e, "MESSAGE_ID");
                g_autoptr(GString) why = g_string_new(NULL);

                if (!*msg || strchr(msg, '\n'))
                        g_string_append(why, " MESSAGE not one line;");
                if (!*field(e, "PRIORITY"))
                        g_string_append(why, " no PRIORITY;");
                if (atoi(field(e, "PRIORITY")) <= 4 && !*mid)
                        ; /* a diagnostic */
                else if (!g_strv_contains(known_message_ids, mid))
                        g_string_append_printf(why, " MESSAGE_ID '%s' not one of loopd's;", mid);
                else if (strcmp(mid, MID_STARTED) != 0 && strcmp(mid, MID_STATE_DIR) != 0 &&
                         strcmp(mid, MID_STOPPED) != 0 && !has_loopd_fields(e))
                        g_string_append(why, " no LOOPD_* field;");
                if (why->len && ++nbad <= 10) {
                        g_autofree char *shown = g_strescape(msg, NULL);
                        g_string_append_printf(bad, "[%s] \"%.100s\":%s\n", field(e, "_COMM"), shown, why->str);
                }
        }
        if (es->len == 0)
                fail("expected loopd's own entries in the journal (at least one \"started\" per start); loopd logged "
                     "nothing in this boot");
        else if (nbad)
                fail("%u of loopd's %u journal entries are not structured as loopd's entries must be "
                     "(first %u):\n%s", nbad, es->len, MIN(nbad, 10), bad->str);
        else
                g_test_message("%u entries from loopd, all structured", es->len);
}

/* ---- BackingFile, owners: restart, idle exit, crash ------------------------------------- */

static struct BfDevice {
        const char *path;
        gboolean as_user;
        char *dev;
        char *diskseq;
} bf[] = {
        { "/srv/bf-root.img", FALSE },
        { "/home/" USER "/bf-root.img", FALSE },
        { "/var/tmp/bf-root.img", FALSE },
        { "/srv/" USER "/bf-user.img", TRUE },
        { "/home/" USER "/bf-user.img", TRUE },
        { "/var/tmp/bf-user.img", TRUE },
};

/*
 * The six devices, as loopd and the kernel describe them now, against what
 * was created: the same attachment (diskseq), BackingFile and losetup's
 * BACK-FILE exactly the path named, OwnerUID the creator's. @when says
 * after what, for the messages.
 */
static void check_bf_devices(const char *when, gboolean check_backing, gboolean check_owner) {
        g_autoptr(GString) script = g_string_new(NULL);
        g_autoptr(GString) wrong = g_string_new(NULL);
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;
        guint nwrong = 0;

        for (size_t i = 0; i < G_N_ELEMENTS(bf); i++) {
                if (!bf[i].dev)
                        continue;
                g_string_append_printf(script,
                                       "d=%s; n=${d#/dev/}; i=%zu\n"
                                       "echo $i.seq=$(cat /sys/block/$n/diskseq 2>/dev/null)\n"
                                       "echo $i.prop=$(prop $d BackingFile)\n"
                                       "echo $i.kernel=$(losetup -n -O BACK-FILE $d 2>/dev/null)\n"
                                       "echo $i.owner=$(prop $d OwnerUID)\n",
                                       bf[i].dev, i);
        }
        if (!script->len) {
                fail("%s: none of the six CreateFromPath devices exists (see /system/backing-file/is-the-path-named)", when);
                return;
        }
        ct(&r, NULL, "%s", script->str);
        h = kv_parse(r.out);
        for (size_t i = 0; i < G_N_ELEMENTS(bf); i++) {
                g_autofree char *k_seq = g_strdup_printf("%zu.seq", i), *k_prop = g_strdup_printf("%zu.prop", i);
                g_autofree char *k_kernel = g_strdup_printf("%zu.kernel", i), *k_owner = g_strdup_printf("%zu.owner", i);
                g_autofree char *owner = g_strdup_printf("%u", bf[i].as_user ? S.uid : 0);
                const char *who = bf[i].as_user ? USER : "root";

                if (!bf[i].dev)
                        continue;
                if (strcmp(kv(h, k_seq), bf[i].diskseq) != 0) {
                        g_string_append_printf(wrong, "%s (%s's CreateFromPath %s): no longer the same attachment "
                                               "(diskseq %s, was %s)\n", bf[i].dev, who, bf[i].path, kv(h, k_seq),
                                               bf[i].diskseq);
                        nwrong++;
                        continue;
                }
                if (check_backing && (strcmp(kv(h, k_prop), bf[i].path) != 0 || strcmp(kv(h, k_kernel), bf[i].path) != 0)) {
                        g_string_append_printf(wrong, "%s (%s's CreateFromPath %s): BackingFile \"%s\", losetup BACK-FILE "
                                               "\"%s\"\n", bf[i].dev, who, bf[i].path, kv(h, k_prop), kv(h, k_kernel));
                        nwrong++;
                }
                if (check_owner && strcmp(kv(h, k_owner), owner) != 0) {
                        g_string_append_printf(wrong, "%s (%s's CreateFromPath %s): OwnerUID %s, expected %s\n",
                                               bf[i].dev, who, bf[i].path, kv(h, k_owner), owner);
                        nwrong++;
                }
        }
        if (nwrong)
                fail("%s: expected each device's BackingFile (loopd) and BACK-FILE (losetup) to be exactly the path named "
                     "at CreateFromPath, and its owner kept; %u wrong:\n%s", when, nwrong, wrong->str);
        else
                g_test_message("%s: all six devices name the path they were created from, owners kept", when);
}

static void test_backing_file_is_path_named(void) {
        if (!installed() || !loopd_up())
                return;
        for (size_t i = 0; i < G_N_ELEMENTS(bf); i++) {
                g_auto(Run) r = { 0 };
                g_autoptr(GHashTable) h = NULL;

                ct(&r, bf[i].as_user ? USER : NULL,
                   "out=$(busctl call $M CreateFromPath 'sa{sv}' %s 0 2>&1) || { echo \"error=$out\"; exit 1; }\n"
                   "d=$(echo \"$out\" | devof); echo dev=$d; echo seq=$(cat /sys/block/${d#/dev/}/diskseq)\n",
                   bf[i].path);
                h = kv_parse(r.out);
                if (r.status != 0 || !is_loop_device(kv(h, "dev"))) {
                        fail("expected %s's CreateFromPath(\"%s\") to give a device; got: %s%s",
                             bf[i].as_user ? USER : "root", bf[i].path, kv(h, "error"), r.err);
                        continue;
                }
                bf[i].dev = g_strdup(kv(h, "dev"));
                bf[i].diskseq = g_strdup(kv(h, "seq"));
                g_test_message("%s: CreateFromPath %s -> %s", bf[i].as_user ? USER : "root", bf[i].path, bf[i].dev);
        }
        check_bf_devices("right after CreateFromPath", TRUE, TRUE);
}

/* systemctl restart loopd, then check_bf_devices() on backing files and/or owners. */
static void restart_then_check(gboolean check_backing, gboolean check_owner) {
        g_auto(Run) r = { 0 };

        if (!installed() || !loopd_up())
                return;
        if (ct(&r, NULL, "systemctl restart loopd.service && wait_active") != 0) {
                fail("systemctl restart loopd failed: %s%s", r.out, r.err);
                return;
        }
        check_bf_devices("after systemctl restart loopd", check_backing, check_owner);
}

static void test_restart_keeps_owners(void) {
        restart_then_check(FALSE, TRUE);
}

static void test_backing_file_after_restart(void) {
        restart_then_check(TRUE, FALSE);
}

/* A drop-in as an admin would write it: --idle-timeout=3. */
static gboolean idle_drop_in(gboolean on) {
        g_auto(Run) r = { 0 };

        if (on)
                ct(&r, NULL,
                   "mkdir -p /etc/systemd/system/loopd.service.d\n"
                   "printf '[Service]\\nExecStart=\\nExecStart=%s --fd-store --idle-timeout=3\\n' "
                   ">/etc/systemd/system/loopd.service.d/50-idle.conf\n"
                   "systemctl daemon-reload\n",
                   S.loopd_path);
        else
                ct(&r, NULL, "rm -f /etc/systemd/system/loopd.service.d/50-idle.conf; systemctl daemon-reload\n"
                             "systemctl restart loopd.service; wait_active");
        if (r.status != 0)
                fail("could not %s the idle drop-in: %s%s", on ? "add" : "remove", r.out, r.err);
        return r.status == 0;
}

/* loopd exits on its own (status 0, so Restart=on-failure leaves it) and
 * the next call starts it again. */
static gboolean idle_cycle(const char *what) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;

        ct(&r, NULL,
           "r0=$(systemctl show -P NRestarts loopd)\n"
           "systemctl restart loopd.service; wait_active\n"
           "for i in $(seq 100); do [ \"$(systemctl is-active loopd)\" = inactive ] && break; sleep 0.1; done\n"
           "echo idle=$(systemctl is-active loopd)\n"
           "echo result=$(systemctl show -P Result loopd)\n"
           "echo restarts=$(( $(systemctl show -P NRestarts loopd) - r0 ))\n"
           "echo status=$(systemctl show -P StatusText loopd)\n"
           "echo call=$(busctl get-property $M Version 2>&1)\n"
           "wait_active; echo after=$(systemctl is-active loopd)\n");
        h = kv_parse(r.out);
        g_test_message("%s: loopd %s (Result=%s, StatusText \"%s\") within 10 s of idling with --idle-timeout=3; "
                       "the next call -> %s, loopd %s", what, kv(h, "idle"), kv(h, "result"), kv(h, "status"),
                       kv(h, "call"), kv(h, "after"));
        if (strcmp(kv(h, "idle"), "inactive") != 0 || strcmp(kv(h, "result"), "success") != 0) {
                fail("%s: expected loopd to exit on its own within 10 s of idling (inactive, Result=success); saw %s, "
                     "Result=%s", what, kv(h, "idle"), kv(h, "result"));
                return FALSE;
        }
        if (strcmp(kv(h, "restarts"), "0") != 0)
                fail("%s: expected no restart by systemd after an idle exit; NRestarts went up by %s", what,
                     kv(h, "restarts"));
        if (!g_str_has_prefix(kv(h, "call"), "s \"") || strcmp(kv(h, "after"), "active") != 0) {
                fail("%s: expected the next call to activate loopd again; the call got '%s', loopd is %s", what,
                     kv(h, "call"), kv(h, "after"));
                return FALSE;
        }
        return TRUE;
}

/* A user's devices are guarded: loopd withdraws the owner's access to the
 * node before the kernel may end the attachment, which only a running loopd
 * can do; so it does not exit on idle while any exists. */
static void test_idle_keeps_guarded_devices(void) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;

        if (!installed() || !idle_drop_in(TRUE))
                return;
        ct(&r, NULL,
           "systemctl restart loopd.service; wait_active; sleep 6\n"
           "echo state=$(systemctl is-active loopd)\n"
           "echo status=$(systemctl show -P StatusText loopd)\n");
        h = kv_parse(r.out);
        g_test_message("with %s's devices attached, 6 s after a restart with --idle-timeout=3: loopd %s (\"%s\")",
                       USER, kv(h, "state"), kv(h, "status"));
        if (strcmp(kv(h, "state"), "active") != 0)
                fail("expected loopd to stay while it guards %s's devices (their node ACLs); it is %s", USER,
                     kv(h, "state"));
}

/* The user's devices gone, loopd exits on idle; root's devices and their
 * names survive it and the re-activation. */
static void test_backing_file_after_idle_exit(void) {
        g_autoptr(GString) script = g_string_new(NULL);
        g_auto(Run) r = { 0 };

        if (!installed() || !idle_drop_in(TRUE))
                return;
        for (size_t i = 0; i < G_N_ELEMENTS(bf); i++)
                if (bf[i].dev && bf[i].as_user)
                        g_string_append_printf(script, "loopctl remove %s || echo failed=%s\n", bf[i].dev, bf[i].dev);
        if (script->len) {
                ct(&r, USER, "%s", script->str);
                if (r.status != 0 || strstr(r.out, "failed="))
                        fail("%s could not remove its own devices: %s%s", USER, r.out, r.err);
                for (size_t i = 0; i < G_N_ELEMENTS(bf); i++)
                        if (bf[i].as_user)
                                g_clear_pointer(&bf[i].dev, g_free);
        }
        if (idle_cycle("idle exit with root's CreateFromPath devices attached"))
                check_bf_devices("after idle exit and re-activation", TRUE, TRUE);
        idle_drop_in(FALSE);
}

/* kill -9 of loopd's main process; systemd's Restart= brings it back. */
static gboolean crash_loopd(const char *between_script, GHashTable **ret) {
        g_auto(Run) r = { 0 };
        g_autoptr(GHashTable) h = NULL;

        ct(&r, NULL,
           "p=$(mainpid); r0=$(systemctl show -P NRestarts loopd)\n"
           "[ \"$p\" != 0 ] || { echo 'error=loopd is not running'; exit 1; }\n"
           "kill -9 $p\n"
           "%s\n"
           "for i in $(seq 100); do q=$(mainpid); [ \"$q\" != 0 ] && [ \"$q\" != $p ] && "
           "[ \"$(systemctl is-active loopd)\" = active ] && break; sleep 0.1; done\n"
           "echo old=$p\n"
           "echo new=$(mainpid)\n"
           "echo state=$(systemctl is-active loopd)\n"
           "echo restarts=$(( $(systemctl show -P NRestarts loopd) - r0 ))\n",
           between_script ? between_script : "");
        h = kv_parse(r.out);
        g_test_message("kill -9 loopd (pid %s): systemd restarted it %s time(s), now pid %s, %s", kv(h, "old"),
                       kv(h, "restarts"), kv(h, "new"), kv(h, "state"));
        if (r.status != 0 || strcmp(kv(h, "state"), "active") != 0 || strcmp(kv(h, "restarts"), "1") != 0) {
                fail("expected Restart= to bring loopd back within 10 s of kill -9 (NRestarts +1); saw %s%s%s", r.out,
                     r.err, kv(h, "error"));
                return FALSE;
        }
        if (ret)
                *ret = g_steal_pointer(&h);
        return TRUE;
}

/*
 * Two users' bind-to-caller devices; loopd is killed; one caller dies while
 * loopd is down. The loopd that Restart= starts finds the dead caller's
 * device in its records and removes it, and keeps the live caller's.
 */
static void test_bind_to_caller_across_crash(void) {
        g_autofree char *dies = NULL, *lives = NULL;
        g_auto(Run) r = { 0 }, e = { 0 };
        g_autoptr(GHashTable) h = NULL;

        if (!installed() || !loopd_up())
                return;
        if (!start_bound_caller(USER, "/srv/" USER "/bound-dies.img", "/tmp/lp-dies.pid", &dies))
                return;
        if (!start_bound_caller(USER, "/srv/" USER "/bound-lives.img", "/tmp/lp-lives.pid", &lives)) {
                kill_bound_caller("/tmp/lp-dies.pid");
                return;
        }
        g_test_message("bound to " USER "'s callers: %s (will die while loopd is down), %s (stays)", dies, lives);
        /* The caller dies while no loopd watches the bus. */
        if (crash_loopd("sleep 0.2; p=$(cat /tmp/lp-dies.pid); kill -9 $p $(pgrep -P $p); rm -f /tmp/lp-dies.pid",
                        NULL)) {
                ct(&r, NULL,
                   "wait_detached /srv/" USER "/bound-dies.img && echo dies=gone || echo dies=$(attached /srv/" USER "/bound-dies.img)\n"
                   "echo lives=$(attached /srv/" USER "/bound-lives.img)\n"
                   "echo bound=$(prop %s BoundToCaller)\n",
                   lives);
                h = kv_parse(r.out);
                if (strcmp(kv(h, "dies"), "gone") != 0)
                        fail("expected %s, bound to a caller that died while loopd was down, removed by the restarted loopd "
                             "within 5 s; still attached (%s)", dies, kv(h, "dies"));
                if (strcmp(kv(h, "lives"), lives) != 0 || strcmp(kv(h, "bound"), "true") != 0)
                        fail("expected %s, bound to a caller still alive, kept and still bound after the restart; "
                             "attached '%s', BoundToCaller '%s'", lives, kv(h, "lives"), kv(h, "bound"));
        }
        kill_bound_caller("/tmp/lp-dies.pid");
        kill_bound_caller("/tmp/lp-lives.pid");
        ct(&e, NULL, "wait_detached /srv/" USER "/bound-lives.img || echo still=$(attached /srv/" USER "/bound-lives.img)");
        if (*g_strstrip(e.out))
                fail("expected %s removed once its caller was killed; %s", lives, e.out);
}

static void test_backing_file_after_crash(void) {
        if (!installed() || !loopd_up())
                return;
        if (crash_loopd(NULL, NULL))
                check_bf_devices("after kill -9 of loopd and Restart=", TRUE, TRUE);
}

/*
 * While loopd is down after a crash, the nodes of users' devices still
 * carry their owners' ACLs. Root detaches such a device then and attaches
 * a file of its own: the node must not be reused for it (else the old
 * owner reads root's file), which holds because systemd keeps a copy of
 * loopd's keeper in its fd store. The restarted loopd takes the copy back,
 * sees the detach asked meanwhile, withdraws the access and lets go: the
 * device goes, and the owner can no longer open the node.
 */
static void test_crash_keeps_users_node_from_reuse(void) {
        g_auto(Run) r = { 0 }, a = { 0 };
        g_autoptr(GHashTable) h = NULL, between = NULL, after = NULL;
        g_autofree char *dev = NULL, *script = NULL, *cursor = NULL;

        if (!installed() || !loopd_up())
                return;
        ct(&r, USER,
           "dev=$(loopctl create /srv/" USER "/crash.img) || exit 1; echo dev=$dev\n"
           "dd if=$dev of=/dev/null bs=512 count=1 2>/dev/null && echo open=yes || echo open=no\n"
           "echo acl=$(getfacl -cp $dev 2>&1 | tr '\\n' ' ')\n"
           "echo mount=$(findmnt -n -o OPTIONS --target $dev 2>&1 | head -1)\n");
        h = kv_parse(r.out);
        if (r.status != 0 || !is_loop_device(kv(h, "dev"))) {
                fail("expected `loopctl create /srv/" USER "/crash.img` as " USER " to give a device; exit %d: %s%s",
                     r.status, r.out, r.err);
                return;
        }
        dev = g_strdup(kv(h, "dev"));
        if (strcmp(kv(h, "open"), "yes") != 0) {
                g_auto(Run) j = { 0 };
                ct(&j, NULL, "journalctl -u loopd -o cat -n 400 --no-pager | grep -F '%s' | tail -n 4", dev);
                /* The harness, not loopd: a node made after the container
                 * booted is read-only inside (see system-container). */
                if (strstr(j.out, "Read-only file system"))
                        g_test_message("%s was made after the container booted and is read-only inside, so loopd "
                                       "could not give " USER " its ACL there (logged); the checks below still hold "
                                       "the node against reuse", dev);
                else
                        fail("expected " USER " to open its own %s before the crash; it could not (ACL: %s; /dev "
                             "mount: %s); loopd's journal on it:\n%s%s", dev, kv(h, "acl"), kv(h, "mount"), j.out,
                             j.err);
        }
        cursor = journal_cursor();
        script = g_strdup_printf(
                "losetup -d %s\n"
                "[ -e /sys/block/%s/loop/backing_file ] && echo held=yes || echo held=no\n"
                "n=$(losetup -f --show /srv/lpimages/next.img); echo next=$n\n"
                "runuser -u " USER " -- dd if=$n of=/dev/null bs=512 count=1 2>/dev/null && echo next_open=yes "
                "|| echo next_open=no\n"
                "losetup -d $n\n",
                dev, dev + strlen("/dev/"));
        if (!crash_loopd(script, &between))
                return;
        g_test_message("while loopd was down: root's losetup -d %s left it attached: %s; root's next device %s, which "
                       USER " could open: %s", dev, kv(between, "held"), kv(between, "next"), kv(between, "next_open"));
        if (strcmp(kv(between, "held"), "yes") != 0)
                fail("expected %s to stay attached after root's losetup -d while loopd was down (systemd holds "
                     "loopd's keeper); it was detached at once", dev);
        if (strcmp(kv(between, "next"), dev) == 0 || strcmp(kv(between, "next_open"), "no") != 0)
                fail("expected root's next attachment not on %s and closed to " USER "; it went to %s, and " USER
                     " could open it: %s", dev, kv(between, "next"), kv(between, "next_open"));

        ct(&a, USER,
           "for _ in $(seq 50); do [ -e /sys/block/%s/loop/backing_file ] || break; sleep 0.1; done\n"
           "[ -e /sys/block/%s/loop/backing_file ] && echo gone=no || echo gone=yes\n"
           "dd if=%s of=/dev/null bs=512 count=1 2>/dev/null && echo open=yes || echo open=no\n",
           dev + strlen("/dev/"), dev + strlen("/dev/"), dev);
        after = kv_parse(a.out);
        if (strcmp(kv(after, "gone"), "yes") != 0)
                fail("expected the restarted loopd to let %s go (its detach was asked while loopd was down) within 5 s; "
                     "it is still attached", dev);
        if (strcmp(kv(after, "open"), "no") != 0)
                fail("expected " USER "'s access to %s withdrawn by the restarted loopd; " USER " can still open it", dev);
        {
                g_autofree char *text = NULL;
                /* journald may lag under load. */
                for (int i = 0; i < 50; i++) {
                        g_free(text);
                        text = journal_since(cursor);
                        if (strstr(text, "systemd kept"))
                                break;
                        g_usleep(200 * 1000);
                }
                if (!strstr(text, "systemd kept"))
                        fail("expected the restarted loopd to log the keepers systemd kept for it; it logged:\n%s", text);
                else
                        g_test_message("the restarted loopd took its keepers back from systemd's fd store");
        }
}

/* ---- systemd-analyze -------------------------------------------------------------------- */

static void test_analyze_verify_prints_nothing(void) {
        g_auto(Run) r = { 0 };
        g_autofree char *unit = NULL;

        if (!installed())
                return;
        unit = g_build_filename(S.unit_dir ? S.unit_dir : "/lib/systemd/system", "loopd.service", NULL);
        ct(&r, NULL, "systemd-analyze verify --man=no %s", unit);
        g_test_message("systemd-analyze verify %s: exit %d%s%s%s", unit, r.status, *r.out || *r.err ? ":\n" : ", no output",
                       r.out, r.err);
        if (r.status != 0 || *r.out || *r.err)
                fail("expected `systemd-analyze verify` of the installed unit to exit 0 and print nothing");
}

static void test_analyze_security_exposure(void) {
        g_auto(Run) r = { 0 };
        g_autoptr(GRegex) re = g_regex_new("Overall exposure level for loopd.service: ([0-9.]+) (\\S+)", 0, 0, NULL);
        g_autoptr(GMatchInfo) m = NULL;

        if (!installed())
                return;
        ct(&r, NULL, "systemd-analyze security --no-pager loopd.service");
        if (!g_regex_match(re, r.out, 0, &m)) {
                fail("expected `systemd-analyze security loopd.service` to give an exposure level; exit %d: %s%s", r.status,
                     r.out, r.err);
                return;
        }
        g_test_message("systemd-analyze security loopd.service (installed unit, under systemd %s): exposure %s %s",
                       "as PID 1", g_match_info_fetch(m, 1), g_match_info_fetch(m, 2));
        {
                /* The settings that cost most, for whoever reads the log. */
                g_auto(GStrv) lines = g_strsplit(r.out, "\n", -1);
                for (char **l = lines; *l; l++)
                        if (g_str_has_prefix(*l, "✗") && !strstr(*l, " 0.0"))
                                g_test_message("  x %s", g_strstrip(*l + strlen("✗")));
        }
}

/* ---- main ------------------------------------------------------------------------------ */

/* Loop nodes 0..31 made now, before boot: the container gets the nodes that
 * exist at boot writable (see system-container). LOOP_CTL_ADD of a node
 * that exists fails with EEXIST, which is fine. */
static void make_loop_nodes(void) {
        int fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC);

        if (fd < 0)
                return;
        for (int i = 0; i < 32; i++)
                (void) ioctl(fd, LOOP_CTL_ADD, i);
        close(fd);
}

/*
 * The README's install command builds before it installs. Its build part
 * (all before "&& meson install") runs here on the host, once for both bus
 * runs, in a fresh copy of the source tree: $LOOPD_BUILD_ROOT/tests/system/
 * readme-tree/src. The container sees that directory at the same path,
 * copy-on-write, and runs the whole command there, literally: `meson setup`
 * finds the directory configured (and says so, exiting 0), `meson compile`
 * finds nothing to do, `meson install` installs. The copy is rebuilt from
 * scratch whenever the source's content changes (a fingerprint of names,
 * modes and contents); a lock serialises the two runs meson starts at once.
 */
static void build_readme_tree_on_host(void) {
        const char *src = g_getenv("LOOPD_SOURCE_ROOT"), *build = g_getenv("LOOPD_BUILD_ROOT");
        g_autofree char *build_part = NULL, *script = NULL, *out = NULL, *err = NULL;
        g_autoptr(GError) error = NULL;
        const char *split;
        int status;
        double t0 = now();

        if (!src || !build || !S.readme_command)
                return;
        split = g_strrstr(S.readme_command, "&& meson install");
        if (!split)
                return;
        build_part = g_strstrip(g_strndup(S.readme_command, (gsize) (split - S.readme_command)));
        S.tree = g_build_filename(build, "tests", "system", "readme-tree", NULL);
        script = g_strdup_printf(
                "set -eu\n"
                "src=%s; tree=%s\n"
                "copy() { tar -C \"$src\" --anchored --exclude='./build*' --exclude=./.git --exclude='*.o' "
                "--sort=name \"$@\" -cf - .; }\n"
                "mkdir -p \"$(dirname \"$tree\")\"; exec 9>\"$tree.lock\"; flock 9\n"
                "fp=$(copy --mtime=@0 --owner=0 --group=0 --numeric-owner | sha256sum | cut -d' ' -f1)\n"
                "[ \"$(cat \"$tree.fingerprint\" 2>/dev/null)\" = \"$fp\" ] && [ -d \"$tree/src/build\" ] && exit 0\n"
                "rm -rf \"$tree\" \"$tree.fingerprint\"; mkdir -p \"$tree/src\"\n"
                "copy | tar -C \"$tree/src\" -xf -\n"
                "cd \"$tree/src\"\n"
                "%s >\"$tree/build.log\" 2>&1 || { tail -n 30 \"$tree/build.log\"; exit 1; }\n"
                "echo \"$fp\" >\"$tree.fingerprint\"\n",
                src, S.tree, build_part);
        /* A clean environment, as a user's shell has it, not meson test's. */
        if (!g_spawn_sync(NULL,
                          (char *[]) { "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                       "HOME=/root", "LANG=C.UTF-8", "bash", "-c", script, NULL },
                          NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err, &status, &error)) {
                S.host_build_error = g_strdup(error->message);
                return;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                S.host_build_error = g_strdup_printf("`%s` failed:\n%s%s", build_part, out, err);
        S.t_host_build = now() - t0;
}

static void setsid_child(gpointer data) {
        (void) setsid();
}

/* Boots the container; on success S.leader is set, on a machine that
 * cannot, S.skip_reason. */
static void container_up(void) {
        g_autoptr(GSubprocessLauncher) l = g_subprocess_launcher_new(G_SUBPROCESS_FLAGS_STDIN_PIPE |
                                                                      G_SUBPROCESS_FLAGS_STDOUT_PIPE);
        g_autoptr(GError) error = NULL;
        g_autoptr(GDataInputStream) in = NULL;
        g_autofree char *line = NULL;
        const char *src = g_getenv("LOOPD_SOURCE_ROOT");

        if (!src) {
                S.skip_reason = g_strdup("LOOPD_SOURCE_ROOT is not set: run this through `meson test`");
                return;
        }
        if (geteuid() != 0) {
                S.skip_reason = g_strdup("needs root (boots a container, sets up loop devices)");
                return;
        }
        make_loop_nodes();
        build_readme_tree_on_host();
        /* A session of its own: meson's timeout signals the test's process
         * group, and the supervisor must outlive the test to tear down. */
        g_subprocess_launcher_set_child_setup(l, setsid_child, NULL, NULL);
        S.helper = g_subprocess_launcher_spawn(l, &error, "bash", SYSTEM_CONTAINER_HELPER, "up", S.bus, src,
                                               S.tree && !S.host_build_error ? S.tree : NULL, NULL);
        if (!S.helper) {
                g_printerr("system-container: %s\n", error->message);
                return;
        }
        in = g_data_input_stream_new(g_subprocess_get_stdout_pipe(S.helper));
        line = g_data_input_stream_read_line(in, NULL, NULL, &error);
        if (!line) {
                g_printerr("system-container said nothing%s%s\n", error ? ": " : "", error ? error->message : "");
                return;
        }
        if (g_str_has_prefix(line, "skip ")) {
                S.skip_reason = g_strdup(line + 5);
                return;
        }
        if (g_str_has_prefix(line, "ready ")) {
                g_auto(GStrv) w = g_strsplit(line + 6, " ", 2);
                S.leader = g_strdup(w[0]);
                return;
        }
        g_printerr("system-container: %s\n", line);
}

/* Closes the supervisor's stdin and waits for its teardown. */
static int container_down(void) {
        g_autoptr(GError) error = NULL;
        double t0 = now();

        if (!S.helper)
                return 0;
        g_output_stream_close(g_subprocess_get_stdin_pipe(S.helper), NULL, NULL);
        if (!g_subprocess_wait(S.helper, NULL, &error)) {
                g_printerr("waiting for system-container: %s\n", error->message);
                return 1;
        }
        g_printerr("system suite on %s: build on the host %.1f s (shared), boot %.1f s, install %.1f s, checks %.1f s, "
                   "teardown %.1f s, total %.1f s\n",
                   S.bus, S.t_host_build, S.t_ready - S.t_start - S.t_host_build, S.t_install,
                   t0 - S.t_ready - S.t_install, now() - t0, now() - S.t_start);
        if (!g_subprocess_get_if_exited(S.helper))
                return 1;
        /* 77: skipped, nothing was set up */
        return g_subprocess_get_exit_status(S.helper) == 77 ? 0 : g_subprocess_get_exit_status(S.helper);
}

int main(int argc, char **argv) {
        int r, down;
        g_autofree char **args = g_new0(char *, argc + 2);

        /* A failed check must not stop the run (GLib's default without
         * --keep-going): the container is booted once for all of them. */
        memcpy(args, argv, sizeof(char *) * (size_t) argc);
        args[argc++] = (char *) "--keep-going";
        argv = args;
        g_test_init(&argc, &argv, NULL);
        for (int i = 1; i < argc; i++)
                if (g_str_has_prefix(argv[i], "--bus="))
                        S.bus = argv[i] + strlen("--bus=");
        if (!S.bus || (strcmp(S.bus, "dbus-daemon") != 0 && strcmp(S.bus, "dbus-broker") != 0)) {
                g_printerr("usage: %s --bus=dbus-daemon|dbus-broker\n", argv[0]);
                return 2;
        }
        /* A dead pipe to the supervisor must not kill us before the report. */
        signal(SIGPIPE, SIG_IGN);
        S.readme_command = readme_install_command();

        /* GTest runs the checks grouped by path, groups in the order they
         * first appear: each group below is one step of the run. */
        g_test_add_func("/system/container/boots-systemd-as-pid1-on-the-chosen-bus", test_container_boots_systemd);
        g_test_add_func("/system/container/host-devices-read-only-loop-nodes-writable", test_container_host_devices_read_only);
        g_test_add_func("/system/container/users-and-images", test_container_users_and_images);

        g_test_add_func("/system/install/readme-command", test_install_readme_command);
        g_test_add_func("/system/install/unit-and-activation-file-run-the-installed-loopd",
                        test_install_unit_and_activation_name_installed_loopd);
        g_test_add_func("/system/install/polkitd-knows-the-actions", test_install_polkit_knows_actions);
        g_test_add_func("/system/install/bus-lists-loopd-as-activatable", test_install_bus_lists_loopd_activatable);

        g_test_add_func("/system/activation/loopd-inactive-before-the-first-call", test_activation_inactive_before_first_call);
        g_test_add_func("/system/activation/first-call-starts-loopd-service-via-systemd",
                        test_activation_first_call_starts_unit);
        g_test_add_func("/system/activation/systemctl-status-shows-it-running", test_service_systemctl_status);

        g_test_add_func("/system/polkit/user-refused-without-a-rule", test_polkit_user_refused_without_rule);
        g_test_add_func("/system/polkit/rules-d-file-allows-the-named-user", test_polkit_rule_allows_named_user);
        g_test_add_func("/system/polkit/other-users-still-refused", test_polkit_others_still_refused);
        g_test_add_func("/system/polkit/other-user-may-not-remove-the-users-device",
                        test_polkit_other_may_not_remove_users_device);

        g_test_add_func("/system/create/by-fd-as-root", test_create_by_fd_as_root);
        g_test_add_func("/system/create/by-fd-as-user", test_create_by_fd_as_user);
        g_test_add_func("/system/create/by-fd-sent-by-gdbus-read-only", test_create_by_fd_gdbus_handle);

        for (size_t i = 0; i < G_N_ELEMENTS(trees); i++) {
                g_autofree char *root_path = g_strdup_printf("/system/create-from-path/as-root/from-%s",
                                                             trees[i].tree + 1);
                g_strdelimit(root_path + strlen("/system/create-from-path/as-root/"), "/", '-');
                g_test_add_data_func(root_path, &trees[i], test_create_from_path_as_root);
        }
        for (size_t i = 0; i < G_N_ELEMENTS(trees); i++) {
                g_autofree char *user_path = g_strdup_printf("/system/create-from-path/as-user/from-%s%s",
                                                             trees[i].tree + 1, trees[i].user_dir ? "" : "-is-refused");
                g_strdelimit(user_path + strlen("/system/create-from-path/as-user/"), "/", '-');
                g_test_add_data_func(user_path, &trees[i], test_create_from_path_as_user);
        }
        g_test_add_func("/system/create-from-path/root-opens-a-root-owned-0000-file",
                        test_create_from_path_root_opens_0000_file);
        g_test_add_func("/system/create-from-path/root-opens-another-users-0644-file-read-write",
                        test_create_from_path_root_opens_others_file_rw);

        g_test_add_func("/system/devices/refresh-size-follows-the-grown-file", test_refresh_size_follows_file);
        g_test_add_func("/system/devices/losetup-devices-appear-in-the-object-tree-and-go",
                        test_losetup_devices_in_object_tree);
        g_test_add_func("/system/devices/status-text-counts-devices-and-bound-callers", test_status_text_follows_devices);

        g_test_add_func("/system/lifecycle/backing-file-is-the-path-named", test_backing_file_is_path_named);
        g_test_add_func("/system/lifecycle/owner-records-survive-systemctl-restart", test_restart_keeps_owners);
        g_test_add_func("/system/lifecycle/backing-file-same-after-systemctl-restart", test_backing_file_after_restart);
        g_test_add_func("/system/lifecycle/bind-to-caller-dead-callers-device-removed-across-a-crash",
                        test_bind_to_caller_across_crash);
        g_test_add_func("/system/lifecycle/backing-file-same-after-kill-9-and-restart", test_backing_file_after_crash);
        g_test_add_func("/system/lifecycle/kill-9-a-users-node-is-not-reused-while-loopd-is-down",
                        test_crash_keeps_users_node_from_reuse);
        g_test_add_func("/system/lifecycle/idle-waits-while-users-devices-are-guarded", test_idle_keeps_guarded_devices);
        g_test_add_func("/system/lifecycle/idle-exit-reactivation-and-backing-file",
                        test_backing_file_after_idle_exit);

        g_test_add_func("/system/journal/one-started-entry-per-start", test_journal_records_start);
        g_test_add_func("/system/journal/user-create-and-remove-are-recorded", test_journal_records_user_create_and_remove);
        g_test_add_func("/system/journal/polkit-refusal-is-recorded-with-its-reason",
                        test_journal_records_refusal_with_reason);
        g_test_add_func("/system/journal/every-entry-is-structured", test_journal_entries_structured);

        g_test_add_func("/system/analyze/verify-prints-nothing", test_analyze_verify_prints_nothing);
        g_test_add_func("/system/analyze/security-exposure", test_analyze_security_exposure);

        S.t_start = now();
        container_up();
        S.t_ready = now();
        r = g_test_run();
        down = container_down();
        if (down != 0)
                g_printerr("system-container's teardown failed (%d): see its output above\n", down);
        return r != 0 ? r : down != 0 ? 1 : 0;
}
