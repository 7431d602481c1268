/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Properties are true when read, and followed: what root changes behind
 * loopd's back (losetup --direct-io, losetup -c, unlinking the backing
 * file) shows on the next Get by the owner (nobody), and an unprivileged
 * listener gets PropertiesChanged: at once for what the kernel announces
 * with a uevent (capacity), within loopd's poll (5 s) for what it does not.
 */

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "owners-util.h"
#include "service-util.h"

#define NOBODY LOOPD_TEST_NOBODY
#define POLL_SEC 5.0

static const LoopdFixtureOptions opts = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE),
        .start_daemon = TRUE,
};

/* A property as nobody reads it (loopd-test-caller get). */
static char *get_as_nobody(LoopdFixture *f, const char *obj, const char *prop) {
        g_auto(LoopdRunResult) r = { 0 };

        loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "get", obj, prop, NULL);
        if (r.status != 0 || !g_str_has_prefix(r.out, "ok "))
                g_error("Get %s as nobody: %s%s", prop, r.out, r.err);
        return g_strdup(g_strchomp(r.out + 3));
}

/* After @img was unlinked: Get, as nobody, shows the kernel's mark. */
static void assert_shows_deleted(LoopdFixture *f, const char *obj, const char *img) {
        g_autofree char *want = g_strconcat(img, " (deleted)", NULL);
        g_autofree char *name = get_as_nobody(f, obj, "BackingFile");
        g_autofree char *deleted = get_as_nobody(f, obj, "BackingFileDeleted");

        g_assert_cmpstr(name, ==, want);
        g_assert_cmpstr(deleted, ==, "true");
}

/* Waits for a PropertiesChanged line of the watcher carrying @token
 * ("DirectIO=true"); returns the seconds it took since @since. */
static double wait_changed(LoopdCaller *watch, const char *token, gint64 since) {
        for (;;) {
                g_autofree char *line = loopd_caller_read_line(watch);
                g_auto(GStrv) w = NULL;

                if (!line)
                        g_error("no PropertiesChanged with %s reached the listener", token);
                w = g_strsplit(line, " ", -1);
                if (g_strv_contains((const char *const *) w, token))
                        return (g_get_monotonic_time() - since) / (double) G_USEC_PER_SEC;
        }
}

static void losetup_root(const char *const *argv) {
        g_autofree char *out = NULL, *err = NULL;

        if (run_command(argv, &out, &err) != 0)
                g_error("%s %s: %s", argv[0], argv[1], err);
}

static void test_properties_follow_the_kernel(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *dev = NULL, *v = NULL, *ready = NULL;
        g_autoptr(LoopdCaller) watch = NULL;
        gint64 t;
        double took;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_marked_image(f, "props.img", 8 * MiB, NOBODY);
        create_as_nobody(f, img, NULL, &obj, &dev);
        watch = loopd_fixture_spawn_as(f, NOBODY, NOBODY,
                                       (const char *const[]) { owner_probe_binary(), "watch", obj, NULL });
        ready = loopd_caller_read_line(watch);
        g_assert_cmpstr(ready, ==, "ready");

        /* Direct I/O switched by root: the next Get says so at once. */
        v = get_as_nobody(f, obj, "DirectIO");
        g_assert_cmpstr(v, ==, "false");
        t = g_get_monotonic_time();
        losetup_root((const char *const[]) { "losetup", "--direct-io=on", dev, NULL });
        g_clear_pointer(&v, g_free);
        v = get_as_nobody(f, obj, "DirectIO");
        g_assert_cmpstr(v, ==, "true");
        took = wait_changed(watch, "DirectIO=true", t);
        g_test_message("DirectIO on: PropertiesChanged after %.3f s (a Get came first)", took);

        /* And switched back with nobody asking: the poll finds it. */
        t = g_get_monotonic_time();
        losetup_root((const char *const[]) { "losetup", "--direct-io=off", dev, NULL });
        took = wait_changed(watch, "DirectIO=false", t);
        g_test_message("DirectIO off: PropertiesChanged after %.3f s (no Get: loopd's poll)", took);
        g_assert_cmpfloat(took, <, (POLL_SEC + 1.5) * loopd_test_timeout_scale());

        /* Capacity: the backing file grows, root asks LOOP_SET_CAPACITY. */
        t = g_get_monotonic_time();
        g_assert_cmpint(truncate(img, 16 * MiB), ==, 0);
        losetup_root((const char *const[]) { "losetup", "-c", dev, NULL });
        took = wait_changed(watch, "Size=16777216", t);
        g_test_message("losetup -c: Size PropertiesChanged after %.3f s", took);
        g_clear_pointer(&v, g_free);
        v = get_as_nobody(f, obj, "Size");
        g_assert_cmpstr(v, ==, "16777216");

        /* The backing file unlinked: a listener hears of it within the
         * poll, and Get shows the kernel's mark. */
        t = g_get_monotonic_time();
        g_assert_cmpint(unlink(img), ==, 0);
        took = wait_changed(watch, "BackingFileDeleted=true", t);
        g_test_message("unlink: PropertiesChanged after %.3f s (no Get: loopd's poll)", took);
        g_assert_cmpfloat(took, <, (POLL_SEC + 1.5) * loopd_test_timeout_scale());
        assert_shows_deleted(f, obj, img);
}

/* Get right after the unlink, before any poll: the read itself is fresh. */
static void test_unlink_shows_on_the_next_get(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *obj = NULL, *v = NULL;
        g_auto(LoopdRunResult) p = { 0 };
        g_autofree char *hex = NULL;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_marked_image(f, "props-unlink.img", 4 * MiB, NOBODY);
        create_as_nobody(f, img, NULL, &obj, NULL);
        v = get_as_nobody(f, obj, "BackingFileDeleted");
        g_assert_cmpstr(v, ==, "false");
        g_assert_cmpint(unlink(img), ==, 0);
        assert_shows_deleted(f, obj, img);
        /* The bytes stay the name, without the mark. */
        probe_as(f, NOBODY, &p, "props", obj, NULL);
        g_assert_cmpint(p.status, ==, 0);
        {
                GString *h = g_string_new(NULL);
                for (const char *c = img; *c; c++)
                        g_string_append_printf(h, "%02x", (unsigned char) *c);
                g_string_append(h, "00");
                hex = g_string_free(h, FALSE);
        }
        g_assert_nonnull(strstr(p.out, hex));
        g_assert_nonnull(strstr(p.out, "\t1\nok 1\n"));
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn) g_test_add(path, LoopdFixture, &opts, loopd_fixture_setup, fn, loopd_fixture_teardown)
        ADD("/properties/follow-what-root-changes", test_properties_follow_the_kernel);
        ADD("/properties/unlink-shows-on-the-next-get", test_unlink_shows_on_the_next_get);
        return g_test_run();
}
