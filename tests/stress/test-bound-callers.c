/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * bind-to-caller past the bus's limit of match rules per connection.
 *
 * loopd once added one match rule (AddMatch) per bound device. dbus-daemon
 * allows one connection 512 of them (max_match_rules_per_connection on a
 * stock system bus); past that AddMatch failed, loopd ignored it, and bound
 * devices of every uid outlived their callers, which also kept loopd from
 * ever exiting when idle. Now one match serves every bound caller.
 *
 * The private bus of the fixture has the stock limits and no way to lower
 * them, so this test goes past 512 for real: 600 bound devices of two uids
 * (root and nobody). Devices past the limit whose caller had a match
 * installed for an earlier device would still go (sd-bus dispatches the
 * one signal to every local match on that name), so the order matters:
 * five callers bind 104 devices each first, then 80 more callers bind one
 * each, when no match can be added any more. Every caller is then killed;
 * every device must go with its caller, and loopd must then exit by
 * itself.
 */

#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "hostile.h"

#define NOBODY 65534
#define CALLERS 5      /* the first ones, with many devices each */
#define PER_CALLER 104
#define LATE_PER_UID 40 /* then, per uid, callers with one device each */
#define MATCH_RULES_LIMIT 512 /* dbus-daemon's default max_match_rules_per_connection */

static const char *const args[] = { "--idle-timeout=5", "--quota=300", NULL };
static const LoopdFixtureOptions opts = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE),
        .start_daemon = TRUE,
        .daemon_args = args,
};

static double since(gint64 t0) {
        return (double) (g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
}

static void test_more_bound_devices_than_match_rules(LoopdFixture *f, gconstpointer data) {
        HostileCaller *callers[CALLERS], *late[2];
        char *images[CALLERS];
        const guint total = CALLERS * PER_CALLER + 2 * LATE_PER_UID;
        LoopdFootprint fp;
        g_autofree char *fp_text = NULL;
        guint made = 0, left;
        gint64 t0;
        pid_t loopd;
        int st;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd = loopd_fixture_daemon_pid(f);
        G_STATIC_ASSERT(CALLERS * PER_CALLER > MATCH_RULES_LIMIT);

        for (guint c = 0; c < CALLERS; c++) {
                uid_t uid = c % 2 ? NOBODY : 0;
                g_autofree char *name = g_strdup_printf("caller-%u.img", c);
                images[c] = loopd_fixture_make_image(f, name, 1 << 20, uid, uid, 0600);
                callers[c] = hostile_spawn(f, uid, uid, NULL, 60);
        }

        /* The first five at once, each its 104 in a row. */
        t0 = g_get_monotonic_time();
        for (guint c = 0; c < CALLERS; c++)
                for (guint i = 0; i < PER_CALLER; i++)
                        hostile_send(callers[c], "create %s rw bind-to-caller=b:true", images[c]);
        for (guint c = 0; c < CALLERS; c++)
                for (guint i = 0; i < PER_CALLER; i++) {
                        g_autofree char *a = hostile_read(callers[c], 60);
                        if (!a)
                                g_error("caller %u: no answer to its create %u within 60 s", c, i);
                        if (!g_str_has_prefix(a, "ok "))
                                g_error("caller %u (uid %u): create %u failed: %s", c, c % 2 ? NOBODY : 0, i, a);
                        made++;
                }

        /* Then 80 callers more, one device each: a connection of its own
         * per device (two processes, one per uid, 40 connections each). */
        for (guint u = 0; u < 2; u++) {
                late[u] = hostile_spawn(f, u ? NOBODY : 0, u ? NOBODY : 0, NULL, 60);
                for (guint i = 0; i < LATE_PER_UID; i++) {
                        g_autofree char *r = i ? hostile_cmd(late[u], 30, "reconnect") : g_strdup("ok");
                        g_autofree char *a = NULL;
                        g_assert_true(g_str_has_prefix(r, "ok"));
                        a = hostile_cmd(late[u], 60, "create %s rw bind-to-caller=b:true", images[u]);
                        if (!g_str_has_prefix(a, "ok "))
                                g_error("late caller %u of uid %u: create failed: %s", i, u ? NOBODY : 0, a);
                        made++;
                }
        }
        g_assert_cmpuint(made, ==, total);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, total);
        g_assert_true(loopd_footprint(loopd, &fp));
        fp_text = loopd_footprint_text(&fp);
        g_test_message("%u bound devices made by %d callers of 2 uids in %.1f s; loopd: %s", made,
                       CALLERS + 2 * LATE_PER_UID, since(t0), fp_text);

        /* The callers go: so must every device bound to them. */
        t0 = g_get_monotonic_time();
        for (guint c = 0; c < CALLERS; c++)
                g_clear_pointer(&callers[c], hostile_free);
        for (guint u = 0; u < 2; u++)
                g_clear_pointer(&late[u], hostile_free);
        for (;;) {
                left = loopd_fixture_count_loops(f);
                if (left == 0)
                        break;
                if (since(t0) > 30 * loopd_test_timeout_scale())
                        g_error("%u of %u bound devices are still attached 30 s after their callers left the bus "
                                "(loopd's STATUS: %s)",
                                left, made, loopd_fixture_daemon_status_text(f));
                g_usleep(200000);
        }
        g_test_message("bound: one match rule for all bound callers (dbus-daemon allows %d per connection); figure: "
                       "all %u devices went %.1f s after their %d callers",
                       MATCH_RULES_LIMIT, made, since(t0), CALLERS + 2 * LATE_PER_UID);

        /* Nothing keeps loopd now: it exits by itself, cleanly. */
        t0 = g_get_monotonic_time();
        st = loopd_fixture_wait_daemon_exit(f, 30);
        if (st == -1)
                g_error("loopd did not exit within 30 s of its last bound device going (--idle-timeout=5); "
                        "STATUS: %s",
                        loopd_fixture_daemon_status_text(f));
        g_assert_true(WIFEXITED(st));
        g_assert_cmpint(WEXITSTATUS(st), ==, 0);
        g_test_message("loopd exited idle %.1f s later", since(t0));

        for (guint c = 0; c < CALLERS; c++)
                g_free(images[c]);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/stress/bound-callers/more-bound-devices-than-match-rules", LoopdFixture, &opts,
                   loopd_fixture_setup, test_more_bound_devices_than_match_rules, loopd_fixture_teardown);
        return g_test_run();
}
