/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Callers that ask and never read the answers.
 *
 * 64 connections of nobody each send GetManagedObjects over and over and
 * never read a reply, with 64 devices attached (a reply is some 100 KiB).
 * loopd once kept every reply the bus would not take in its own write
 * queue: RSS 3.2 MB -> 406 MB with 64 such connections, 1.24 GB with 192,
 * and for ~50 s nobody was answered, root included. Now loopd's RSS must
 * stay bounded (64 MiB here), and root must be answered all along.
 *
 * The test reports where the unread replies went (loopd, or dbus-daemon,
 * which queues up to max_outgoing_bytes per connection itself) and whether
 * loopd's own backlog guard (a budget of requests per uid while its write
 * queue holds 256 messages or more) came into play.
 */

#include <signal.h>
#include <string.h>

#include "hostile.h"

#define NOBODY 65534
#define DEVICES 64
#define GREEDY 64
#define FLOOD_PER_CONNECTION 300
#define RSS_BOUND_MIB 64

static const LoopdFixtureOptions bus_only = { 0 };

static double since(gint64 t0) {
        return (double) (g_get_monotonic_time() - t0) / G_USEC_PER_SEC;
}

static void test_unread_replies_stay_bounded(LoopdFixture *f, gconstpointer data) {
        g_autoptr(HostileCaller) root = NULL, greedy = NULL;
        g_autofree char *img = NULL, *root_img = NULL, *log = NULL, *text = NULL, *guard = NULL;
        LoopdFootprint before, fp, bus_before, bus_fp;
        guint64 peak_rss = 0, peak_bus = 0;
        double worst_ping = 0, worst_objects = 0, worst_create = 0;
        guint samples = 0, failed = 0;
        pid_t loopd, bus;
        gint64 t0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!hostile_start_daemon_logged(f, NULL, &log))
                return;
        loopd = loopd_fixture_daemon_pid(f);
        bus = loopd_fixture_name_owner_pid(f, "org.freedesktop.DBus");
        img = loopd_fixture_make_image(f, "devices.img", 1 << 20, 0, 0, 0600);
        root_img = loopd_fixture_make_image(f, "root.img", 1 << 20, 0, 0, 0600);

        /* 64 devices for the replies to describe. */
        root = hostile_spawn(f, 0, 0, NULL, 60);
        for (guint i = 0; i < DEVICES; i++) {
                g_autofree char *a = hostile_cmd(root, 30, "create %s rw autoclear=b:true", img);
                g_assert_true(g_str_has_prefix(a, "ok "));
        }
        {
                gint64 t = g_get_monotonic_time();
                g_autoptr(GError) error = NULL;
                g_assert_cmpfloat(root_managed_objects_msec(f, 10000, &error), >=, 0);
                g_test_message("one GetManagedObjects of %d devices: %.1f ms", DEVICES, since(t) * 1000);
        }
        g_assert_true(loopd_footprint(loopd, &before));
        g_assert_true(bus > 0 && loopd_footprint(bus, &bus_before));
        text = loopd_footprint_text(&before);
        g_test_message("loopd before: %s; dbus-daemon RSS %.1f MiB", text, (double) bus_before.rss_kib / 1024);

        /* 64 connections of nobody, each sending and never reading. */
        greedy = hostile_spawn(f, NOBODY, NOBODY, NULL, 60);
        t0 = g_get_monotonic_time();
        for (guint c = 0; c < GREEDY; c++) {
                if (c > 0) {
                        g_autofree char *r = hostile_cmd(greedy, 30, "reconnect");
                        g_assert_true(g_str_has_prefix(r, "ok "));
                }
                hostile_send(greedy, "flood %d", FLOOD_PER_CONNECTION);
                /* Its answer ("ok" once all are written) may take long:
                 * the bus reads a connection that never reads slowly. */
                {
                        g_autofree char *r = hostile_read(greedy, 60);
                        g_assert_nonnull(r);
                        g_assert_cmpstr(r, ==, "ok");
                }
        }
        g_test_message("%d connections sent %d GetManagedObjects each in %.1f s and read nothing", GREEDY,
                       FLOOD_PER_CONNECTION, since(t0));

        /* While loopd and the bus work through them: root is answered, and
         * loopd's memory stays bounded. */
        t0 = g_get_monotonic_time();
        while (since(t0) < 15) {
                RootLatency lat;

                root_latency_sample(f, root_img, 1, 10000, &lat);
                samples++;
                failed += lat.failed;
                /* A call with no answer counts as the whole 10 s. */
                worst_ping = MAX(worst_ping, lat.ping_msec < 0 ? 10000 : lat.ping_msec);
                worst_objects = MAX(worst_objects, lat.objects_msec < 0 ? 10000 : lat.objects_msec);
                worst_create = MAX(worst_create, lat.create_msec < 0 ? 10000 : lat.create_msec);
                g_assert_true(loopd_footprint(loopd, &fp));
                peak_rss = MAX(peak_rss, MAX(fp.rss_kib, fp.hwm_kib));
                if (loopd_footprint(bus, &bus_fp))
                        peak_bus = MAX(peak_bus, bus_fp.rss_kib);
                g_usleep(500 * 1000);
        }
        g_clear_pointer(&text, g_free);
        text = loopd_footprint_text(&fp);
        g_test_message("loopd while flooded: %s; dbus-daemon RSS peak %.1f MiB", text, (double) peak_bus / 1024);
        guard = hostile_log_wait_line(log, 0.1, "keeps asking while", NULL);
        g_test_message("loopd's backlog guard (%s): %s", "a budget per uid while 256 replies wait",
                       guard ? guard : "never triggered: dbus-daemon took every reply into its own queues");
        g_test_message("bound: loopd's RSS < %d MiB with %d greedy connections; figure: loopd's RSS peak %.1f MiB "
                       "(%.1f before), fds %u -> %u; root waited at most: Ping %.1f ms, GetManagedObjects %.1f ms, "
                       "Create+Remove %.1f ms, over %u samples in which %u calls got no answer within 10 s",
                       RSS_BOUND_MIB, GREEDY, (double) peak_rss / 1024, (double) before.rss_kib / 1024, before.fds,
                       fp.fds, worst_ping, worst_objects, worst_create, samples, failed);

        g_assert_cmpuint(failed, ==, 0);
        g_assert_cmpfloat(worst_ping, <, HOSTILE_SCALED(5000));
        if (peak_rss >= RSS_BOUND_MIB * 1024)
                g_error("loopd's RSS reached %.1f MiB with %d connections that never read their replies",
                        (double) peak_rss / 1024, GREEDY);

        /* The greedy ones go; loopd is as it was. */
        g_clear_pointer(&greedy, hostile_free);
        t0 = g_get_monotonic_time();
        while (since(t0) < 10) {
                g_autoptr(GError) error = NULL;
                if (root_ping_msec(f, 10000, &error) >= 0 && loopd_footprint(loopd, &fp) &&
                    fp.rss_kib < before.rss_kib + 8 * 1024)
                        break;
                g_usleep(200 * 1000);
        }
        g_clear_pointer(&text, g_free);
        text = loopd_footprint_text(&fp);
        g_test_message("loopd %.1f s after the greedy connections went: %s", since(t0), text);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/stress/greedy-callers/unread-replies-stay-bounded", LoopdFixture, &bus_only, loopd_fixture_setup,
                   test_unread_replies_stay_bounded, loopd_fixture_teardown);
        return g_test_run();
}
