/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gio/gunixfdlist.h>

#include "security-common.h"

#define HELPER_FLAG "--loopd-security-helper"

void sec_call_clear(SecCall *c) {
        g_clear_pointer(&c->error_name, g_free);
        g_clear_pointer(&c->error_message, g_free);
        g_clear_pointer(&c->object, g_free);
        g_clear_pointer(&c->device, g_free);
        c->ok = FALSE;
}

/* The one call both paths make; fills ret from the reply or the error. */
static void do_call(GDBusConnection *bus, const char *method, const char *args, int fd, gboolean interactive,
                    SecCall *ret) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) params = NULL, reply = NULL;
        g_autoptr(GUnixFDList) fds = NULL, out_fds = NULL;

        sec_call_clear(ret);
        params = g_variant_parse(NULL, args, NULL, NULL, &error);
        if (!params)
                g_error("test bug: arguments %.200s do not parse: %s", args, error->message);
        if (fd >= 0) {
                fds = g_unix_fd_list_new();
                if (g_unix_fd_list_append(fds, fd, &error) < 0)
                        g_error("fd list: %s", error->message);
        }
        reply = g_dbus_connection_call_with_unix_fd_list_sync(
                bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, method,
                g_steal_pointer(&params), NULL,
                interactive ? G_DBUS_CALL_FLAGS_ALLOW_INTERACTIVE_AUTHORIZATION : G_DBUS_CALL_FLAGS_NONE,
                (int) (60000 * loopd_test_timeout_scale()), fds, &out_fds, NULL, &error);
        if (!reply) {
                ret->error_name = g_dbus_error_get_remote_error(error);
                if (!ret->error_name)
                        ret->error_name = g_strdup_printf("local.%s.%d", g_quark_to_string(error->domain),
                                                          error->code);
                g_dbus_error_strip_remote_error(error);
                ret->error_message = g_strdup(error->message);
                return;
        }
        ret->ok = TRUE;
        if (g_variant_n_children(reply) >= 2 && g_variant_is_of_type(reply, G_VARIANT_TYPE("(osh)"))) {
                g_variant_get_child(reply, 0, "o", &ret->object);
                g_variant_get_child(reply, 1, "s", &ret->device);
        } else if (g_variant_is_of_type(reply, G_VARIANT_TYPE("(o)")))
                g_variant_get_child(reply, 0, "o", &ret->object);
        /* out_fds (the device fd) closes here: the device stays (not
         * autoclear) or goes (autoclear), as the test asked. */
}

/* The helper: argv = self HELPER_FLAG METHOD ARGS HAS_FD INTERACTIVE.
 * One line on stdout: "ok OBJ DEV" or "error NAME MESSAGE". */
void sec_helper_main_if_requested(int argc, char **argv) {
        g_autoptr(GDBusConnection) bus = NULL;
        g_autoptr(GError) error = NULL;
        g_auto(SecCall) c = { 0 };
        const char *address;

        if (argc < 2 || strcmp(argv[1], HELPER_FLAG) != 0)
                return;
        if (argc != 6)
                _exit(3);
        address = getenv("DBUS_SYSTEM_BUS_ADDRESS");
        if (!address) {
                printf("error local no-bus-address\n");
                exit(2);
        }
        bus = g_dbus_connection_new_for_address_sync(
                address, G_DBUS_CONNECTION_FLAGS_AUTHENTICATION_CLIENT | G_DBUS_CONNECTION_FLAGS_MESSAGE_BUS_CONNECTION,
                NULL, NULL, &error);
        if (!bus) {
                printf("error local %s\n", error->message);
                exit(2);
        }
        do_call(bus, argv[2], argv[3], strcmp(argv[4], "1") == 0 ? 3 : -1, strcmp(argv[5], "1") == 0, &c);
        if (c.ok)
                printf("ok %s %s\n", c.object ? c.object : "-", c.device ? c.device : "-");
        else {
                printf("error %s ", c.error_name);
                for (const char *p = c.error_message; *p; p++)
                        putchar(*p == '\n' ? ' ' : *p);
                putchar('\n');
        }
        fflush(stdout);
        exit(c.ok ? 0 : 1);
}

static gid_t gid_of(uid_t uid) {
        struct passwd *pw = getpwuid(uid);
        return pw ? pw->pw_gid : (gid_t) uid;
}

void sec_call(LoopdFixture *f, uid_t uid, const char *method, const char *args, int fd, gboolean interactive,
              SecCall *ret) {
        GString *out = g_string_new(NULL);
        gint64 deadline;
        int pipefd[2], st = 0;
        gid_t gid;
        pid_t pid;

        if (uid == 0) {
                do_call(f->bus, method, args, fd, interactive, ret);
                g_string_free(out, TRUE);
                return;
        }

        gid = gid_of(uid);
        g_assert_no_errno(pipe2(pipefd, O_CLOEXEC));
        pid = fork();
        g_assert_cmpint(pid, >=, 0);
        if (pid == 0) {
                /* Only system calls from here to exec (the parent has threads). */
                const char *const argv[] = { "/proc/self/exe", HELPER_FLAG, method, args, fd >= 0 ? "1" : "0",
                                             interactive ? "1" : "0", NULL };
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (dup2(pipefd[1], STDOUT_FILENO) < 0)
                        _exit(126);
                if (fd >= 0 && dup2(fd, 3) < 0) /* dup2 clears O_CLOEXEC on 3 */
                        _exit(126);
                if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
                        _exit(126);
                /* The uid change cleared PDEATHSIG; set it again. */
                (void) prctl(PR_SET_PDEATHSIG, SIGKILL);
                execv(argv[0], (char *const *) argv);
                _exit(127);
        }
        close(pipefd[1]);

        deadline = g_get_monotonic_time() + (gint64) (60 * G_USEC_PER_SEC * loopd_test_timeout_scale());
        for (;;) {
                struct pollfd p = { .fd = pipefd[0], .events = POLLIN };
                char buf[4096];
                ssize_t n;
                int left = (int) ((deadline - g_get_monotonic_time()) / 1000);

                if (left <= 0) {
                        (void) kill(pid, SIGKILL);
                        break;
                }
                if (poll(&p, 1, left) < 0 && errno != EINTR)
                        break;
                n = read(pipefd[0], buf, sizeof buf);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                g_string_append_len(out, buf, n);
        }
        close(pipefd[0]);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;

        sec_call_clear(ret);
        {
                g_autofree char *line = g_strndup(out->str, strcspn(out->str, "\n"));
                g_auto(GStrv) fields = g_strsplit(line, " ", 3);

                if (g_strv_length(fields) >= 1 && strcmp(fields[0], "ok") == 0) {
                        ret->ok = TRUE;
                        if (fields[1] && strcmp(fields[1], "-") != 0)
                                ret->object = g_strdup(fields[1]);
                        if (fields[1] && fields[2] && strcmp(fields[2], "-") != 0)
                                ret->device = g_strdup(fields[2]);
                } else if (g_strv_length(fields) >= 2 && strcmp(fields[0], "error") == 0) {
                        ret->error_name = g_strdup(fields[1]);
                        ret->error_message = g_strdup(fields[2] ? fields[2] : "");
                } else
                        g_error("helper as uid %u (%s): status 0x%x, output '%s'", (unsigned) uid, method, st,
                                out->str);
        }
        g_string_free(out, TRUE);
}

void sec_assert_error(const SecCall *c, const char *name, const char *needle) {
        if (c->ok)
                g_error("expected %s, but the call succeeded (%s)", name, c->device ? c->device : "no device");
        if (strcmp(c->error_name, name) != 0)
                g_error("expected %s, got %s: %s", name, c->error_name, c->error_message);
        if (needle && !strstr(c->error_message, needle))
                g_error("%s: the message '%s' does not mention '%s'", name, c->error_message, needle);
}

void sec_assert_daemon_answers(LoopdFixture *f) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        gint64 t0 = g_get_monotonic_time();

        g_assert_cmpint(loopd_fixture_daemon_pid(f), >, 0);
        reply = g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.Peer",
                                            "Ping", NULL, NULL, G_DBUS_CALL_FLAGS_NONE,
                                            (int) (5000 * loopd_test_timeout_scale()), NULL, &error);
        g_assert_no_error(error);
        g_assert_cmpint(g_get_monotonic_time() - t0, <, (gint64) (5 * G_USEC_PER_SEC * loopd_test_timeout_scale()));
}

void sec_remove(LoopdFixture *f, const char *device) {
        g_auto(SecCall) c = { 0 };
        g_autofree char *q = sec_quote(device);
        g_autofree char *args = g_strdup_printf("(%s,)", q);

        sec_call(f, 0, "Remove", args, -1, FALSE, &c);
        if (!c.ok)
                g_error("removing %s as root: %s: %s", device, c.error_name, c.error_message);
}

GVariant *sec_device_property(LoopdFixture *f, const char *object, const char *property) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) reply = NULL;
        GVariant *v = NULL;

        reply = g_dbus_connection_call_sync(f->bus, LOOPD_BUS_NAME, object, "org.freedesktop.DBus.Properties", "Get",
                                            g_variant_new("(ss)", LOOPD_DEVICE_INTERFACE, property),
                                            G_VARIANT_TYPE("(v)"), G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
        g_assert_no_error(error);
        g_variant_get(reply, "(v)", &v);
        return v;
}

char *sec_quote(const char *s) {
        g_autoptr(GVariant) v = g_variant_ref_sink(g_variant_new_string(s));
        return g_variant_print(v, FALSE);
}
