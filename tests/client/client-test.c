/* SPDX-License-Identifier: LGPL-2.1-or-later */

#include <stdarg.h>
#include <string.h>

#include <systemd/sd-bus.h>

#include "client-test.h"

bool client_loop_attached(const char *dev) {
        g_autofree char *p = NULL;
        const char *name = g_str_has_prefix(dev, "/dev/") ? dev + 5 : dev;

        /* /sys/block/loopN/loop exists exactly while loopN is bound. */
        p = g_strdup_printf("/sys/block/%s/loop", name);
        return g_file_test(p, G_FILE_TEST_IS_DIR);
}

uint64_t client_loop_diskseq(const char *dev) {
        g_autofree char *p = NULL, *text = NULL;
        const char *name = g_str_has_prefix(dev, "/dev/") ? dev + 5 : dev;

        if (!client_loop_attached(dev))
                return 0;
        p = g_strdup_printf("/sys/block/%s/diskseq", name);
        if (!g_file_get_contents(p, &text, NULL, NULL))
                return 0;
        return g_ascii_strtoull(text, NULL, 10);
}

uint64_t client_object_diskseq(const char *object_path) {
        const char *u = strrchr(object_path, '_');

        return u ? g_ascii_strtoull(u + 1, NULL, 10) : 0;
}

bool client_wait_gone(const char *dev, uint64_t diskseq, double timeout_sec) {
        gint64 end = g_get_monotonic_time() +
                     (gint64) (timeout_sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        g_assert_cmpuint(diskseq, >, 0);
        while (client_loop_diskseq(dev) == diskseq) {
                if (g_get_monotonic_time() > end)
                        return false;
                g_usleep(20 * 1000);
        }
        return true;
}

const char *client_loopctl(void) {
        return LOOPCTL_BINARY;
}

void client_loopctl_as(LoopdFixture *f, uid_t uid, LoopdRunResult *r, ...) {
        va_list ap;

        va_start(ap, r);
        loopd_fixture_run_program_as_valist(f, uid, uid, r, client_loopctl(), ap);
        va_end(ap);
}

void client_loopctl_argv_as(LoopdFixture *f, uid_t uid, LoopdRunResult *r, const char *const *args) {
        g_autoptr(GPtrArray) argv = g_ptr_array_new();

        g_ptr_array_add(argv, (char *) client_loopctl());
        for (const char *const *a = args; *a; a++)
                g_ptr_array_add(argv, (char *) *a);
        g_ptr_array_add(argv, NULL);
        loopd_fixture_run_as(f, uid, uid, (const char *const *) argv->pdata, r);
}

void client_assert_one_error_line(const LoopdRunResult *r, const char *contains) {
        if (!g_str_has_prefix(r->err, "loopctl: ") || !strchr(r->err, '\n') ||
            strchr(r->err, '\n')[1] != '\0')
                g_error("stderr is not one 'loopctl: ' line: '%s'", r->err);
        for (const char *p = r->err; *p; p++)
                if ((unsigned char) *p < 0x20 && *p != '\n')
                        g_error("control character 0x%02x in stderr: '%s'", *p, r->err);
        if (contains && !strstr(r->err, contains))
                g_error("stderr '%s' does not mention '%s'", r->err, contains);
}

void client_assert_usage_errors(LoopdFixture *f, const ClientUsageCase *cases, size_t n) {
        g_autofree char *img = loopd_fixture_make_image(f, "usage.img", 1 * MIB, 0, 0, 0644);

        for (size_t i = 0; i < n; i++) {
                const char *args[G_N_ELEMENTS(cases[i].args)] = { NULL };
                g_auto(LoopdRunResult) r = { 0 };

                for (size_t k = 0; k < G_N_ELEMENTS(args) - 1 && cases[i].args[k]; k++)
                        args[k] = g_str_equal(cases[i].args[k], "IMG") ? img : cases[i].args[k];
                client_loopctl_argv_as(f, 0, &r, args);
                if (r.status != 2)
                        g_error("case %zu (%s): exit %d, expected 2; stderr: %s", i, cases[i].args[0],
                                r.status, r.err);
                client_assert_one_error_line(&r, cases[i].says);
                g_assert_cmpstr(r.out, ==, "");
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

char *client_create_as(LoopdFixture *f, uid_t uid, const char *path, ...) {
        g_autoptr(GPtrArray) args = g_ptr_array_new();
        g_auto(LoopdRunResult) r = { 0 };
        const char *a;
        va_list ap;

        g_ptr_array_add(args, (char *) "create");
        g_ptr_array_add(args, (char *) path);
        va_start(ap, path);
        while ((a = va_arg(ap, const char *)))
                g_ptr_array_add(args, (char *) a);
        va_end(ap);
        g_ptr_array_add(args, NULL);
        client_loopctl_argv_as(f, uid, &r, (const char *const *) args->pdata);
        if (r.status != 0)
                g_error("loopctl create %s failed (%d): %s", path, r.status, r.err);
        g_assert_true(g_str_has_prefix(r.out, "/dev/loop"));
        g_assert_true(g_str_has_suffix(r.out, "\n"));
        g_strchomp(r.out);
        g_assert_true(client_loop_attached(r.out));
        return g_strdup(r.out);
}

char *client_list_json(LoopdFixture *f) {
        g_auto(LoopdRunResult) r = { 0 };

        client_loopctl_as(f, 0, &r, "list", "--json", "--output-all", NULL);
        if (r.status != 0)
                g_error("loopctl list --json failed (%d): %s", r.status, r.err);
        return g_strdup(r.out);
}

void client_assert_json(const char *json, const char *expression, const char *expected) {
        g_autofree char *v = client_json_eval(json, expression);

        if (!v)
                return;   /* skipped: no python3 */
        if (g_strcmp0(v, expected) != 0)
                g_error("%s is '%s', expected '%s' in:\n%s", expression, v, expected, json);
}

void client_assert_dev(const char *json, const char *dev, const char *expr, const char *expected) {
        const char *name = g_str_has_prefix(dev, "/dev/") ? dev : NULL;
        g_autofree char *full = name ? NULL : g_strdup_printf("/dev/%s", dev);
        g_autofree char *e = g_strdup_printf("[%s for x in d['loopdevices'] if x['name'] == '%s'][0]",
                                             expr, name ? name : full);

        client_assert_json(json, e, expected);
}

char *client_json_eval(const char *json, const char *expression) {
        const char *python = "/usr/bin/python3";
        g_autofree char *script = NULL, *out = NULL, *err = NULL;
        g_autoptr(GError) error = NULL;
        g_autoptr(GSubprocess) p = NULL;

        if (!g_file_test(python, G_FILE_TEST_IS_EXECUTABLE)) {
                g_test_skip("no /usr/bin/python3 to parse JSON with");
                return NULL;
        }
        script = g_strdup_printf("import json, sys\n"
                                 "d = json.load(sys.stdin)\n"
                                 "print(%s)\n", expression);
        p = g_subprocess_new(G_SUBPROCESS_FLAGS_STDIN_PIPE | G_SUBPROCESS_FLAGS_STDOUT_PIPE |
                             G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                             python, "-c", script, NULL);
        g_assert_no_error(error);
        g_subprocess_communicate_utf8(p, json, NULL, &out, &err, &error);
        g_assert_no_error(error);
        if (!g_subprocess_get_if_exited(p) || g_subprocess_get_exit_status(p) != 0)
                g_error("not valid JSON or no %s in it: %s\n--- JSON:\n%s", expression, err, json);
        g_strchomp(out);
        return g_steal_pointer(&out);
}

/* ---- Bus monitor --------------------------------------------------------- */

struct ClientMonitor {
        sd_bus *bus;
};

ClientMonitor *client_monitor_new(LoopdFixture *f) {
        g_autofree ClientMonitor *m = g_new0(ClientMonitor, 1);
        sd_bus_message *call = NULL;
        int r;

        /* Monitor mode must be set before the connection starts, so that
         * sd-bus hands us messages addressed to others (as busctl monitor). */
        g_assert_cmpint(sd_bus_new(&m->bus), >=, 0);
        g_assert_cmpint(sd_bus_set_address(m->bus, f->bus_address), >=, 0);
        g_assert_cmpint(sd_bus_set_bus_client(m->bus, 1), >=, 0);
        g_assert_cmpint(sd_bus_set_monitor(m->bus, 1), >=, 0);
        g_assert_cmpint(sd_bus_start(m->bus), >=, 0);

        r = sd_bus_message_new_method_call(m->bus, &call, "org.freedesktop.DBus", "/org/freedesktop/DBus",
                                           "org.freedesktop.DBus.Monitoring", "BecomeMonitor");
        g_assert_cmpint(r, >=, 0);
        g_assert_cmpint(sd_bus_message_append(call, "asu", 1,
                                              "type='method_call',destination='" LOOPD_BUS_NAME "'", 0), >=, 0);
        r = sd_bus_call(m->bus, call, 0, NULL, NULL);
        sd_bus_message_unref(call);
        g_assert_cmpint(r, >=, 0);
        return g_steal_pointer(&m);
}

bool client_monitor_next_call_interactive(ClientMonitor *m, const char *member, double timeout_sec) {
        gint64 end = g_get_monotonic_time() +
                     (gint64) (timeout_sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        for (;;) {
                sd_bus_message *msg = NULL;
                int r = sd_bus_process(m->bus, &msg);

                g_assert_cmpint(r, >=, 0);
                if (msg) {
                        bool found = sd_bus_message_is_method_call(msg, NULL, member) > 0 &&
                                     g_strcmp0(sd_bus_message_get_destination(msg), LOOPD_BUS_NAME) == 0;
                        bool interactive = sd_bus_message_get_allow_interactive_authorization(msg) > 0;

                        sd_bus_message_unref(msg);
                        if (found)
                                return interactive;
                        continue;
                }
                if (r > 0)
                        continue;
                gint64 now = g_get_monotonic_time();
                if (now > end)
                        g_error("the monitor saw no %s call", member);
                g_assert_cmpint(sd_bus_wait(m->bus, (uint64_t) (end - now)), >=, 0);
        }
}

void client_monitor_free(ClientMonitor *m) {
        if (!m)
                return;
        sd_bus_flush_close_unref(m->bus);
        g_free(m);
}
