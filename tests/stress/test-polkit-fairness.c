/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * polkit that answers slowly, or not at all, for some uids.
 *
 * All of loopd's questions to polkit share loopd's one bus connection, and
 * dbus-daemon lets one connection wait for 128 replies at most
 * (max_replies_per_connection on a stock system bus). loopd once let each
 * uid have 32 requests waiting on polkit and sent every question at once:
 * four slow uids filled the bus's limit, and a fifth uid was refused at
 * once (AccessDenied ... LimitsExceeded). Now at most 64 questions are out
 * at once and the rest wait inside loopd, one queue per uid, served round
 * robin.
 *
 *   /stress/polkit-fairness/fifth-uid-served-behind-four-slow-ones
 *       polkitd hangs (SIGSTOP) while four uids have 32 Creates each
 *       waiting on it and a fifth uid asks once: nothing is refused while
 *       it hangs; once it answers, every request is answered by polkit's
 *       rules (the four are denied, the fifth gets its device), each uid's
 *       in the order it asked, and the fifth uid, which asked last, right
 *       after the 64 questions already out plus a turn of each slow uid.
 *   /stress/polkit-fairness/allowed-burst-is-served
 *       A burst of one uid's Creates, back to back, all allowed by polkit
 *       (answering as they come, or all at once after a hang), no more
 *       than the uid may have in flight: each must get its device, however
 *       few kernel jobs a uid may have running at a time (the backing
 *       checks before polkit and the creates after it are such jobs; past
 *       the limit they must wait for a thread, not be refused).
 */

#include <signal.h>
#include <string.h>

#include "hostile.h"

#define SLOW_UIDS 4
#define PER_UID 32 /* loopd's limit of requests in flight per uid */
#define FIFTH 5    /* games */
#define POLKIT_IN_FLIGHT 64 /* loopd's questions out to polkit at once */

static const uid_t slow_uids[SLOW_UIDS] = { 65534, 1, 2, 3 }; /* nobody, daemon, bin, sys */

/* The slow ones are denied (so that a denial, sent as soon as polkit
 * answers, shows the order polkit was asked in), the fifth is allowed. */
static const LoopdFixtureOptions opts = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_DENY("nobody", LOOPD_ACTION_CREATE) LOOPD_RULE_DENY("daemon", LOOPD_ACTION_CREATE)
                                LOOPD_RULE_DENY("bin", LOOPD_ACTION_CREATE) LOOPD_RULE_DENY("sys", LOOPD_ACTION_CREATE)
                                        LOOPD_RULE_ALLOW("games", LOOPD_ACTION_CREATE),
};

static const char *const long_polkit_timeout[] = { "--polkit-timeout=60", NULL };

static double since(gint64 t0) {
        return (double) (g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
}

/* The reply to send-* @id of @h: its rank among all replies @h got, and
 * when (CLOCK_MONOTONIC, the same clock in every process). */
static guint arrival(HostileCaller *h, guint id, gint64 *usec) {
        g_autofree char *a = hostile_cmd(h, 10, "arrival %u", id);
        g_auto(GStrv) w = g_strsplit(a, " ", 0);

        g_assert_cmpuint(g_strv_length(w), ==, 3);
        g_assert_cmpstr(w[0], ==, "ok");
        if (usec)
                *usec = (gint64) g_ascii_strtoull(w[2], NULL, 10);
        return (guint) g_ascii_strtoull(w[1], NULL, 10);
}

static void test_fifth_uid_served_behind_four_slow_ones(LoopdFixture *f, gconstpointer data) {
        HostileCaller *slow[SLOW_UIDS];
        g_autoptr(HostileCaller) fifth = NULL;
        g_autofree char *fifth_img = NULL, *root_img = NULL, *a = NULL;
        char *imgs[SLOW_UIDS];
        guint fifth_id, denied = 0, fifth_rank = 0;
        RootLatency lat;
        gint64 t0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!loopd_fixture_start_daemon(f, long_polkit_timeout))
                return;
        root_img = loopd_fixture_make_image(f, "root.img", 1 << 20, 0, 0, 0600);
        fifth_img = loopd_fixture_make_image(f, "fifth.img", 1 << 20, FIFTH, FIFTH, 0600);
        for (guint u = 0; u < SLOW_UIDS; u++) {
                g_autofree char *name = g_strdup_printf("slow-%u.img", u);
                imgs[u] = loopd_fixture_make_image(f, name, 1 << 20, slow_uids[u], slow_uids[u], 0600);
                slow[u] = hostile_spawn(f, slow_uids[u], slow_uids[u], NULL, 90);
        }
        fifth = hostile_spawn(f, FIFTH, FIFTH, NULL, 90);

        /* One request per uid every 25 ms: each one's backing check (well
         * under a millisecond) is long done when its uid's next one comes,
         * so each uid asks polkit in the order it sent, and never has more
         * than one kernel job running (a burst is allowed-burst-is-served's
         * business, not this test's). */
        loopd_fixture_hang_polkit(f);
        for (guint i = 0; i < PER_UID; i++) {
                for (guint u = 0; u < SLOW_UIDS; u++) {
                        g_autofree char *s = hostile_cmd(slow[u], 10, "send-create %s rw", imgs[u]);
                        g_autofree char *want = g_strdup_printf("ok %u", i);
                        g_assert_cmpstr(s, ==, want);
                }
                g_usleep((gulong) HOSTILE_SCALED(25 * 1000));
        }
        /* Let them all reach polkit (or loopd's queue for it). */
        g_usleep(500 * 1000);
        a = hostile_cmd(fifth, 10, "send-create %s rw autoclear=b:true", fifth_img);
        g_assert_cmpstr(a, ==, "ok 0");
        fifth_id = 0;

        /* While polkit hangs: nothing is refused, the fifth uid included. */
        g_usleep(2 * G_USEC_PER_SEC);
        g_free(a);
        a = hostile_cmd(fifth, 10, "await %u 0.1", fifth_id);
        if (!g_str_equal(a, "error local timeout"))
                g_error("the fifth uid was answered while polkit hung for four others: %s", a);
        for (guint u = 0; u < SLOW_UIDS; u++) {
                g_autofree char *w = hostile_cmd(slow[u], 10, "await %u 0.1", PER_UID - 1);
                if (!g_str_equal(w, "error local timeout"))
                        g_error("uid %u's last request was answered while polkit hung: %s", slow_uids[u], w);
        }
        root_latency_sample(f, root_img, 2, 5000, &lat);
        g_assert_cmpuint(lat.failed, ==, 0);
        g_test_message("with polkit hung and %d requests waiting on it: root waited at most: Ping %.1f ms, "
                       "GetManagedObjects %.1f ms, Create+Remove %.1f ms",
                       SLOW_UIDS * PER_UID + 1, lat.ping_msec, lat.objects_msec, lat.create_msec);

        /* polkit answers: by its rules. Every caller waits for all its
         * answers at once, so that each notes when each one came. */
        t0 = g_get_monotonic_time();
        loopd_fixture_resume_polkit(f);
        hostile_send(fifth, "await %u 50", fifth_id);
        for (guint u = 0; u < SLOW_UIDS; u++)
                hostile_send(slow[u], "await %u 50", PER_UID - 1);
        g_free(a);
        a = hostile_read(fifth, 60);
        g_assert_nonnull(a);
        if (hostile_error_name(a))
                g_error("the fifth uid, allowed by polkit, was refused: %s", a);
        g_test_message("the fifth uid got its device %.2f s after polkit resumed", since(t0));
        for (guint u = 0; u < SLOW_UIDS; u++) {
                g_autofree char *last = hostile_read(slow[u], 60);
                g_assert_nonnull(last);
        }
        for (guint u = 0; u < SLOW_UIDS; u++) {
                guint arrivals[PER_UID];
                for (guint i = 0; i < PER_UID; i++) {
                        g_autofree char *w = hostile_cmd(slow[u], 60, "await %u 50", i);
                        if (!g_str_has_prefix(w, "error " LOOPD_DBUS_ERROR_ACCESS_DENIED " Not authorized: the "
                                                 "system's polkit policy"))
                                g_error("uid %u's request %u: not polkit's denial but: %s", slow_uids[u], i, w);
                        arrivals[i] = arrival(slow[u], i, NULL);
                        denied++;
                }
                /* Answered in the order asked. */
                for (guint i = 0; i < PER_UID; i++) {
                        guint rank = 0;
                        for (guint k = 0; k < PER_UID; k++)
                                rank += arrivals[k] < arrivals[i];
                        if (rank != i)
                                g_error("uid %u's request %u was answered %u-th among its own", slow_uids[u], i,
                                        rank);
                }
        }
        /* Round robin: the fifth uid, which asked last, did not wait for
         * the four slow uids' queues to drain. */
        {
                gint64 fifth_at, slow_last = 0;
                (void) arrival(fifth, fifth_id, &fifth_at);
                for (guint u = 0; u < SLOW_UIDS; u++)
                        for (guint i = 0; i < PER_UID; i++) {
                                gint64 at;
                                (void) arrival(slow[u], i, &at);
                                slow_last = MAX(slow_last, at);
                                fifth_rank += at < fifth_at;
                        }
                g_test_message("the fifth uid, which asked last of %d, was answered after %u of the slow uids' %d "
                               "requests",
                               SLOW_UIDS * PER_UID + 1, fifth_rank, SLOW_UIDS * PER_UID);
                g_assert_cmpint(fifth_at, <, slow_last);
                /* Round robin: the 64 sent to polkit before it hung, then
                 * one turn of each slow uid, then the fifth (a few more
                 * denials may overtake its reply while its device is made;
                 * without round robin it would wait for all 128). */
                g_assert_cmpuint(fifth_rank, <=, POLKIT_IN_FLIGHT + 4 * SLOW_UIDS);
        }
        g_test_message("all %u requests of the four slow uids were denied by polkit's rules within %.2f s of polkit "
                       "resuming, each uid's in the order it asked",
                       denied, since(t0));
        g_test_message("bound: %d questions out to polkit at once (dbus-daemon allows 128 waiting replies per "
                       "connection), the rest queued in loopd per uid, round robin; figure: %d requests waiting, "
                       "none refused, the fifth uid answered %u-th",
                       POLKIT_IN_FLIGHT, SLOW_UIDS * PER_UID + 1, fifth_rank + 1);
        for (guint u = 0; u < SLOW_UIDS; u++) {
                hostile_free(slow[u]);
                g_free(imgs[u]);
        }
}

static void test_allowed_burst_is_served(LoopdFixture *f, gconstpointer data) {
        const guint burst = PER_UID, rounds = 5;
        g_autoptr(HostileCaller) games = NULL;
        g_autofree char *img = NULL;
        GString *refused = g_string_new(NULL);
        guint n_refused = 0, id = 0, slot = 0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!loopd_fixture_start_daemon(f, long_polkit_timeout))
                return;
        img = loopd_fixture_make_image(f, "games.img", 1 << 20, FIFTH, FIFTH, 0600);
        games = hostile_spawn(f, FIFTH, FIFTH, NULL, 90);

        /* A burst is a matter of timing: five tries. */
        for (guint round = 0; round < rounds; round++) {
                guint first = id, ok = 0;

                /* Back to back, as a client setting up many devices at once
                 * would: the backing checks overlap, then polkit answers
                 * them all (the first round as it goes, the next ones
                 * after a hang, at once). */
                if (round > 0)
                        loopd_fixture_hang_polkit(f);
                for (guint i = 0; i < burst; i++, id++)
                        hostile_send(games, "send-create %s rw autoclear=b:true", img);
                for (guint i = first; i < id; i++) {
                        g_autofree char *s = hostile_read(games, 10);
                        g_autofree char *want = g_strdup_printf("ok %u", i);
                        g_assert_cmpstr(s, ==, want);
                }
                if (round > 0) {
                        g_usleep(300 * 1000);
                        loopd_fixture_resume_polkit(f);
                }
                for (guint i = first; i < id; i++) {
                        g_autofree char *a = hostile_cmd(games, 60, "await %u 50", i);
                        if (hostile_error_name(a)) {
                                n_refused++;
                                g_string_append_printf(refused, "\n  round %u, request %u: %s", round + 1, i - first,
                                                       a);
                        } else {
                                g_autofree char *c = hostile_cmd(games, 10, "close %u", slot++);
                                g_assert_cmpstr(c, ==, "ok");
                                ok++;
                        }
                }
                g_test_message("round %u: %u Creates of one uid back to back, all allowed by polkit: %u got a device",
                               round + 1, burst, ok);
                g_assert_true(loopd_fixture_wait_no_loops(f, 5));
        }
        if (n_refused > 0)
                g_error("bursts of %u Creates of one uid (within its %d requests in flight), all allowed by polkit: "
                        "%u were refused anyway:%s",
                        burst, PER_UID, n_refused, refused->str);
        g_string_free(refused, TRUE);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/stress/polkit-fairness/fifth-uid-served-behind-four-slow-ones", LoopdFixture, &opts,
                   loopd_fixture_setup, test_fifth_uid_served_behind_four_slow_ones, loopd_fixture_teardown);
        g_test_add("/stress/polkit-fairness/allowed-burst-is-served", LoopdFixture, &opts, loopd_fixture_setup,
                   test_allowed_burst_is_served, loopd_fixture_teardown);
        return g_test_run();
}
