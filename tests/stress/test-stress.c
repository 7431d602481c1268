/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Load: 8 concurrent clients (4 as root, 4 as nobody whom polkit allows
 * org.loopd.create) do 2,000 create/inspect/remove cycles in total against
 * one loopd. Each client is loopd-stress-client (stress-client.c) under
 * setpriv, with a connection and a backing file of its own.
 *
 * What must hold afterwards:
 *   - no failure other than the kernel's honest Busy or QuotaExceeded;
 *   - no loop device left backed by the test's files;
 *   - the daemon holds exactly as many fds as before the storm;
 *   - its RSS grew by at most RSS_SLACK_KIB;
 *   - it still answers.
 * Totals (cycles, errors by name, wall time, cycles/s) are reported with
 * g_test_message; speed is not asserted: CI machines vary.
 */

#include <dirent.h>
#include <stdio.h>
#include <string.h>

#include "fixture.h"

#define N_CLIENTS 8
#define TOTAL_CYCLES 2000
#define WARMUP_CYCLES 10
#define RSS_SLACK_KIB 512

static const char rules_nobody_may_create[] = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE);

static const char *stress_client(void) {
        const char *p = g_getenv("LOOPD_STRESS_CLIENT");
        return p && *p ? p : LOOPD_DEFAULT_STRESS_CLIENT;
}

static guint count_fds(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int) pid);
        g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
        guint n = 0;

        g_assert_nonnull(dir);
        while (g_dir_read_name(dir))
                n++;
        return n;
}

static guint64 rss_kib(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/status", (int) pid);
        g_autofree char *text = NULL;
        const char *p;

        g_assert_true(g_file_get_contents(path, &text, NULL, NULL));
        p = strstr(text, "\nVmRSS:");
        g_assert_nonnull(p);
        return g_ascii_strtoull(p + strlen("\nVmRSS:"), NULL, 10);
}

static char *fd_listing(pid_t pid) {
        g_autofree char *path = g_strdup_printf("/proc/%d/fd", (int) pid);
        g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
        GString *s = g_string_new(NULL);
        const char *name;

        while (dir && (name = g_dir_read_name(dir))) {
                g_autofree char *link = g_build_filename(path, name, NULL);
                g_autofree char *target = g_file_read_link(link, NULL);
                g_string_append_printf(s, " %s->%s", name, target ? target : "?");
        }
        return g_string_free(s, FALSE);
}

typedef struct Totals {
        guint cycles, ok, busy_retries;
        GHashTable *errors; /* name → count */
} Totals;

/* "done cycles=N ok=N busy_retries=N name=N ..." */
static void add_totals(Totals *t, const char *line) {
        g_auto(GStrv) words = g_strsplit(line, " ", -1);

        g_assert_cmpstr(words[0], ==, "done");
        for (char **w = words + 1; *w; w++) {
                char *eq = strrchr(*w, '=');
                guint v;
                g_assert_nonnull(eq);
                *eq = 0;
                v = (guint) g_ascii_strtoull(eq + 1, NULL, 10);
                if (strcmp(*w, "cycles") == 0)
                        t->cycles += v;
                else if (strcmp(*w, "ok") == 0)
                        t->ok += v;
                else if (strcmp(*w, "busy_retries") == 0)
                        t->busy_retries += v;
                else
                        g_hash_table_insert(t->errors, g_strdup(*w),
                                            GUINT_TO_POINTER(GPOINTER_TO_UINT(g_hash_table_lookup(t->errors, *w)) + v));
        }
}

/* Runs N_CLIENTS clients of @cycles_each and waits for all. */
static void run_clients(LoopdFixture *f, char **images, guint cycles_each, Totals *t) {
        LoopdCaller *clients[N_CLIENTS];
        g_autofree char *cycles = g_strdup_printf("%u", cycles_each);

        for (guint i = 0; i < N_CLIENTS; i++) {
                uid_t uid = i % 2 == 0 ? 0 : LOOPD_TEST_NOBODY;
                clients[i] = loopd_fixture_spawn_as(f, uid, uid,
                                                    (const char *const[]) { stress_client(), cycles, images[i], NULL });
        }
        for (guint i = 0; i < N_CLIENTS; i++) {
                for (;;) {
                        g_autofree char *line = loopd_caller_read_line(clients[i]);
                        if (!line)
                                g_error("stress client %u (uid %u) stopped talking before it was done", i,
                                        i % 2 == 0 ? 0 : LOOPD_TEST_NOBODY);
                        if (g_str_has_prefix(line, "progress "))
                                continue;
                        if (g_str_has_prefix(line, "error "))
                                g_error("stress client %u: %s", i, line);
                        add_totals(t, line);
                        break;
                }
                g_assert_cmpint(loopd_caller_wait(clients[i]), ==, 0);
                loopd_caller_free(clients[i]);
        }
}

static gboolean wait_for_equal_fds(pid_t pid, guint want, guint *got) {
        /* Settle: a bound device's name watch or an uevent may still be in
         * the queue when the last reply went out. */
        for (int i = 0; i < 100; i++) {
                *got = count_fds(pid);
                if (*got == want)
                        return TRUE;
                g_usleep(20000);
        }
        return FALSE;
}

static void test_stress_create_inspect_remove(LoopdFixture *f, gconstpointer data) {
        g_autofree char *fds_before_list = NULL;
        char *images[N_CLIENTS] = { 0 };
        Totals warm = { .errors = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL) };
        Totals t = { .errors = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL) };
        guint fds_before, fds_after, leaked;
        guint64 rss_before, rss_after;
        gint64 start, elapsed;
        GHashTableIter it;
        gpointer key, value;
        GString *errs = g_string_new(NULL);
        guint unexpected = 0;
        pid_t pid;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        pid = loopd_fixture_daemon_pid(f);
        g_assert_cmpint(pid, >, 0);

        for (guint i = 0; i < N_CLIENTS; i++) {
                g_autofree char *name = g_strdup_printf("stress-%u.img", i);
                uid_t uid = i % 2 == 0 ? 0 : LOOPD_TEST_NOBODY;
                images[i] = loopd_fixture_make_image(f, name, 4 << 20, uid, uid, 0600);
        }

        /* Warm-up: every code path once (polkit, name watches, the malloc
         * arenas), so that the baseline is the steady state. */
        run_clients(f, images, WARMUP_CYCLES, &warm);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        g_usleep(200000);
        fds_before = count_fds(pid);
        fds_before_list = fd_listing(pid);
        rss_before = rss_kib(pid);

        start = g_get_monotonic_time();
        run_clients(f, images, TOTAL_CYCLES / N_CLIENTS, &t);
        elapsed = g_get_monotonic_time() - start;

        g_hash_table_iter_init(&it, t.errors);
        while (g_hash_table_iter_next(&it, &key, &value)) {
                g_string_append_printf(errs, " %s=%u", (const char *) key, GPOINTER_TO_UINT(value));
                if (strcmp(key, LOOPD_ERROR_BUSY) != 0 &&
                    strcmp(key, LOOPD_ERROR_QUOTA_EXCEEDED) != 0)
                        unexpected += GPOINTER_TO_UINT(value);
        }
        g_test_message("stress: %u clients (%u root, %u nobody via polkit), %u cycles, %u ok, "
                       "%u Remove retries on Busy, errors:%s; %.1f s wall, %.0f cycles/s",
                       N_CLIENTS, N_CLIENTS / 2, N_CLIENTS / 2, t.cycles, t.ok, t.busy_retries,
                       errs->len ? errs->str : " none", elapsed / 1e6, t.cycles / (elapsed / 1e6));

        g_assert_cmpuint(t.cycles, ==, TOTAL_CYCLES);
        g_assert_cmpuint(unexpected, ==, 0);

        /* No leaked device... */
        leaked = loopd_fixture_count_loops(f);
        g_assert_cmpuint(leaked, ==, 0);

        /* ...no leaked fd... */
        if (!wait_for_equal_fds(pid, fds_before, &fds_after)) {
                g_autofree char *after = fd_listing(pid);
                g_test_message("fds before:%s", fds_before_list);
                g_test_message("fds after:%s", after);
                g_assert_cmpuint(fds_after, ==, fds_before);
        }

        /* ...no growth beyond the slack... */
        rss_after = rss_kib(pid);
        g_test_message("daemon: %u fds before and after; RSS %" G_GUINT64_FORMAT " KiB before, %" G_GUINT64_FORMAT
                       " KiB after (%+" G_GINT64_FORMAT " KiB)",
                       fds_before, rss_before, rss_after, (gint64) rss_after - (gint64) rss_before);
        g_assert_cmpuint(rss_after, <=, rss_before + RSS_SLACK_KIB);

        /* ...and it still answers. */
        {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) v = g_dbus_connection_call_sync(
                        f->bus, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH, "org.freedesktop.DBus.Properties", "Get",
                        g_variant_new("(ss)", LOOPD_MANAGER_INTERFACE, "Version"), G_VARIANT_TYPE("(v)"),
                        G_DBUS_CALL_FLAGS_NONE, 10000, NULL, &error);
                g_assert_no_error(error);
                g_assert_nonnull(v);
        }
        g_assert_cmpint(loopd_fixture_daemon_pid(f), ==, pid);

        for (guint i = 0; i < N_CLIENTS; i++)
                g_free(images[i]);
        g_hash_table_unref(warm.errors);
        g_hash_table_unref(t.errors);
        g_string_free(errs, TRUE);
}

int main(int argc, char *argv[]) {
        static const LoopdFixtureOptions opts = {
                .start_polkit = TRUE,
                .polkit_rules = rules_nobody_may_create,
                .start_daemon = TRUE,
        };

        g_test_init(&argc, &argv, NULL);
        g_test_add("/stress/create-inspect-remove/8-clients-2000-cycles", LoopdFixture, &opts, loopd_fixture_setup,
                   test_stress_create_inspect_remove, loopd_fixture_teardown);
        return g_test_run();
}
