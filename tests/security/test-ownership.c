/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * A device stays counted, owned and described until the kernel has really
 * let it go, whatever its owner does with the fd loopd handed out.
 *
 *   /security/ownership/deferred-remove-still-counts
 *       Create, keep the device fd, Remove: the kernel defers the detach to
 *       the last close and the owner keeps using the device. It once stopped
 *       counting against the quota there: 20 devices under --quota=2.
 *   /security/ownership/change-fd-keeps-owner-and-withdraws-access
 *       LOOP_CHANGE_FD on the handed-out fd of a read-only device (no
 *       capability needed) swaps the backing file for any file of the same
 *       size: what polkit approved no longer describes the device. It once
 *       made loopd drop the owner record (OwnerUID "none"), free the quota
 *       and lose bind-to-caller. Now the owner and the quota stay, access to
 *       the node is withdrawn, the device is detached at its last close and
 *       the log says why.
 *
 * The owner is a real unprivileged process (loopd-hostile-caller as nobody)
 * that holds the fd loopd gave it and does the ioctls itself.
 */

#include <errno.h>
#include <string.h>

#include "hostile.h"

#define NOBODY 65534

static const char *const quota_2[] = { "--quota=2", NULL };
static const char *const quota_1[] = { "--quota=1", NULL };

static const LoopdFixtureOptions nobody_may_create_quota_2 = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE),
        .start_daemon = TRUE,
        .daemon_args = quota_2,
};

static const LoopdFixtureOptions nobody_may_create_quota_1 = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE),
        .start_daemon = TRUE,
        .daemon_args = quota_1,
};

/* The daemon is started by the test, with its log in a file. */
static const LoopdFixtureOptions nobody_may_create = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE),
};

static gboolean property_bool(LoopdFixture *f, const char *dev, const char *name) {
        g_autoptr(GVariant) v = hostile_device_property(f, dev, name);
        if (!v)
                g_error("loopd shows no %s of %s (is it gone, or does this loopd not know %s?)", name, dev, name);
        return g_variant_get_boolean(v);
}

static guint32 property_owner(LoopdFixture *f, const char *dev) {
        g_autoptr(GVariant) v = hostile_device_property(f, dev, "OwnerUID");
        if (!v)
                g_error("loopd shows no device %s", dev);
        return g_variant_get_uint32(v);
}

/* Waits until loopd no longer shows @dev (the kernel let it go). */
static gboolean wait_device_gone(LoopdFixture *f, const char *dev, double sec) {
        gint64 deadline = g_get_monotonic_time() + (gint64) (sec * loopd_test_timeout_scale() * G_USEC_PER_SEC);

        for (;;) {
                g_autoptr(GVariant) p = hostile_device_properties(f, dev, NULL);
                if (!p)
                        return TRUE;
                if (g_get_monotonic_time() > deadline) {
                        g_autofree char *who = hostile_node_holders(dev);
                        g_test_message("%s is still there after %.0f s: %s", dev, sec, who);
                        return FALSE;
                }
                g_usleep(50000);
        }
}

static void test_deferred_remove_still_counts(LoopdFixture *f, gconstpointer data) {
        g_autoptr(HostileCaller) nobody = NULL;
        g_autofree char *img = NULL, *answer = NULL;
        char *devs[2] = { NULL, NULL };
        guint held = 0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = loopd_fixture_make_image(f, "nobody.img", 1 << 20, NOBODY, NOBODY, 0600);
        nobody = hostile_spawn(f, NOBODY, NOBODY, NULL, 20);

        /* Up to the quota: each device kept open by its owner, then removed.
         * The kernel defers the detach; the device lives on in the owner's
         * hands, and must go on counting. */
        for (guint i = 0; i < 2; i++) {
                g_auto(HostileDevice) d = { 0 };
                g_autofree char *a = hostile_cmd(nobody, 30, "create %s rw", img);
                g_autofree char *r = NULL;

                hostile_parse_device(a, &d);
                r = hostile_cmd(nobody, 30, "remove %s", d.device);
                g_assert_cmpstr(r, ==, "ok");
                devs[i] = g_strdup(d.device);
                held++;
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 2);

        /* At the quota: refused, however many have been "removed". */
        answer = hostile_cmd(nobody, 30, "create %s rw", img);
        if (!hostile_error_name(answer))
                g_error("nobody got a third device under --quota=2 while it holds two it removed: %s", answer);
        g_assert_cmpstr(hostile_error_name(answer), ==, LOOPD_ERROR_QUOTA_EXCEEDED);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 2);
        g_test_message("bound: --quota=2; figure: nobody holds %u devices whose Remove was deferred, the next Create "
                       "is %s",
                       held, hostile_error_name(answer));
        /* Shown for what they are. */
        for (guint i = 0; i < 2; i++)
                g_assert_true(property_bool(f, devs[i], "DetachPending"));

        /* The kernel lets them go at the last close: the quota is free again. */
        for (guint i = 0; i < 2; i++) {
                g_autofree char *r = hostile_cmd(nobody, 10, "close %u", i);
                g_assert_cmpstr(r, ==, "ok");
                g_assert_true(wait_device_gone(f, devs[i], 10));
                g_free(devs[i]);
        }
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        {
                g_auto(HostileDevice) d = { 0 };
                g_autofree char *a = hostile_cmd(nobody, 30, "create %s rw", img);
                g_autofree char *r = NULL;
                hostile_parse_device(a, &d);
                r = hostile_cmd(nobody, 10, "close %u", d.slot);
                g_free(r);
                r = hostile_cmd(nobody, 30, "remove %s", d.device);
                g_assert_cmpstr(r, ==, "ok");
        }
        g_assert_true(loopd_fixture_count_loops(f) == 0);
}

static void test_change_fd_keeps_owner_and_withdraws_access(LoopdFixture *f, gconstpointer data) {
        g_autoptr(HostileCaller) nobody = NULL;
        g_autofree char *approved = NULL, *other = NULL, *log = NULL, *answer = NULL, *line = NULL;
        g_auto(HostileDevice) d = { 0 };
        g_autofree char *backing = NULL;
        gboolean could_open;
        gint64 t0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!hostile_start_daemon_logged(f, quota_1, &log))
                return;
        approved = loopd_fixture_make_image(f, "approved.img", 1 << 20, NOBODY, NOBODY, 0600);
        other = loopd_fixture_make_image(f, "other.img", 1 << 20, NOBODY, NOBODY, 0600);
        nobody = hostile_spawn(f, NOBODY, NOBODY, NULL, 20);

        /* A read-only device nobody keeps for itself (no autoclear: loopd
         * guards it, with an ACL for nobody on the node). */
        answer = hostile_cmd(nobody, 30, "create %s ro read-only=b:true", approved);
        hostile_parse_device(answer, &d);
        g_assert_cmpuint(property_owner(f, d.device), ==, NOBODY);
        g_free(answer);
        answer = hostile_cmd(nobody, 10, "open-node %s ro", d.device);
        could_open = g_str_equal(answer, "ok"); /* asserted below, after the point of this test */

        /* The swap, by the owner, on the fd loopd handed out. */
        g_free(answer);
        answer = hostile_cmd(nobody, 10, "change-fd %u %s", d.slot, other);
        if (hostile_error_name(answer))
                g_error("the kernel refused LOOP_CHANGE_FD to nobody: %s (this test needs a kernel that allows it "
                        "on a read-only device)", answer);
        t0 = g_get_monotonic_time();

        /* loopd notices (the change uevent, or its poll within 5 s): the
         * device is withdrawn from nobody but stays its own and counted. */
        for (;;) {
                g_autoptr(GVariant) pending = hostile_device_property(f, d.device, "DetachPending");
                g_autoptr(GVariant) owner = hostile_device_property(f, d.device, "OwnerUID");

                if (owner && g_variant_get_uint32(owner) != NOBODY)
                        g_error("after LOOP_CHANGE_FD, %s's OwnerUID is %u, not nobody's (%u): the owner record "
                                "was dropped",
                                d.device, g_variant_get_uint32(owner), NOBODY);
                if (pending && g_variant_get_boolean(pending))
                        break;
                if (g_get_monotonic_time() - t0 > 12 * G_USEC_PER_SEC * loopd_test_timeout_scale())
                        g_error("12 s after LOOP_CHANGE_FD, %s is %s", d.device,
                                !owner     ? "not shown by loopd at all"
                                : !pending ? "shown without DetachPending"
                                           : "not DetachPending");
                g_usleep(100000);
        }
        g_test_message("loopd noticed the swap after %.0f ms",
                       (double) (g_get_monotonic_time() - t0) / 1000);
        {
                g_autoptr(GVariant) b = hostile_device_property(f, d.device, "BackingFile");
                backing = g_variant_dup_string(b, NULL);
                g_assert_cmpstr(backing, ==, other); /* described as it is now */
        }
        g_assert_cmpuint(property_owner(f, d.device), ==, NOBODY);

        /* Access to the node, granted at the create, is withdrawn. */
        g_assert_true(could_open);
        g_free(answer);
        answer = hostile_cmd(nobody, 10, "open-node %s ro", d.device);
        g_assert_cmpstr(hostile_error_name(answer), ==, "EACCES");

        /* Still counted: at --quota=1 there is no second device. */
        g_free(answer);
        answer = hostile_cmd(nobody, 30, "create %s ro read-only=b:true", approved);
        if (!hostile_error_name(answer))
                g_error("nobody got a second device under --quota=1 after swapping the first one's file: %s",
                        answer);
        g_assert_cmpstr(hostile_error_name(answer), ==, LOOPD_ERROR_QUOTA_EXCEEDED);

        /* The log says what happened, naming the device and the new file. */
        line = hostile_log_wait_line(log, 5, d.device, "LOOP_CHANGE_FD", other, NULL);
        if (!line)
                g_error("loopd's log does not mention the swap of %s's backing file to %s", d.device, other);
        g_test_message("loopd logged: %s", line);

        /* Gone with its owner's last fd: below. Until then, root removes it. */
        g_free(answer);
        answer = hostile_cmd(nobody, 10, "close %u", d.slot);
        g_assert_cmpstr(answer, ==, "ok");
        loopd_fixture_detach_loops(f);
        g_assert_true(wait_device_gone(f, d.device, 10));
}

/* The other half of the swap: loopd said it detaches the device; at the
 * owner's last close the kernel must really let it go, and the quota slot
 * with it. */
static void test_change_fd_device_goes_at_last_close(LoopdFixture *f, gconstpointer data) {
        g_autoptr(HostileCaller) nobody = NULL;
        g_autofree char *approved = NULL, *other = NULL, *answer = NULL;
        g_auto(HostileDevice) d = { 0 };
        gint64 t0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        approved = loopd_fixture_make_image(f, "approved.img", 1 << 20, NOBODY, NOBODY, 0600);
        other = loopd_fixture_make_image(f, "other.img", 1 << 20, NOBODY, NOBODY, 0600);
        nobody = hostile_spawn(f, NOBODY, NOBODY, NULL, 20);

        answer = hostile_cmd(nobody, 30, "create %s ro read-only=b:true", approved);
        hostile_parse_device(answer, &d);
        g_free(answer);
        answer = hostile_cmd(nobody, 10, "change-fd %u %s", d.slot, other);
        g_assert_cmpstr(answer, ==, "ok");
        t0 = g_get_monotonic_time();
        for (;;) {
                g_autoptr(GVariant) pending = hostile_device_property(f, d.device, "DetachPending");
                if (pending && g_variant_get_boolean(pending))
                        break;
                g_assert_cmpint(g_get_monotonic_time() - t0, <, 12 * G_USEC_PER_SEC * loopd_test_timeout_scale());
                g_usleep(100000);
        }

        g_free(answer);
        answer = hostile_cmd(nobody, 10, "close %u", d.slot);
        g_assert_cmpstr(answer, ==, "ok");
        if (!wait_device_gone(f, d.device, 10))
                g_error("%s, whose backing file nobody swapped, is still attached 10 s after nobody's last close, "
                        "although loopd shows it DetachPending", d.device);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);

        /* And the quota slot is free again. */
        g_free(answer);
        answer = hostile_cmd(nobody, 30, "create %s ro read-only=b:true", approved);
        g_assert_null(hostile_error_name(answer));
}

/* The same swap on an autoclear device. loopd holds no keeper on those
 * (the kernel ends them at the owner's last close, which loopd cannot
 * precede), so nothing proves to it that the new diskseq is the same
 * attachment. Whoever loopd then says owns it, the device lives on in its
 * owner's hands and must count against the owner's quota until the kernel
 * lets it go, or LOOP_CHANGE_FD is a way around the quota: one device after
 * another, each swapped and kept. */
static void test_change_fd_on_autoclear_device_still_counts(LoopdFixture *f, gconstpointer data) {
        g_autoptr(HostileCaller) nobody = NULL;
        g_autofree char *approved = NULL, *other = NULL, *answer = NULL;
        g_auto(HostileDevice) d = { 0 };
        guint extra = 0;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        approved = loopd_fixture_make_image(f, "approved.img", 1 << 20, NOBODY, NOBODY, 0600);
        other = loopd_fixture_make_image(f, "other.img", 1 << 20, NOBODY, NOBODY, 0600);
        nobody = hostile_spawn(f, NOBODY, NOBODY, NULL, 20);

        answer = hostile_cmd(nobody, 30, "create %s ro read-only=b:true autoclear=b:true", approved);
        hostile_parse_device(answer, &d);
        g_assert_cmpuint(property_owner(f, d.device), ==, NOBODY);
        g_free(answer);
        answer = hostile_cmd(nobody, 10, "change-fd %u %s", d.slot, other);
        g_assert_cmpstr(answer, ==, "ok");

        /* Whatever loopd makes of it, within its poll interval... */
        g_usleep((gulong) (6 * G_USEC_PER_SEC * loopd_test_timeout_scale()));
        {
                g_autoptr(GVariant) owner = hostile_device_property(f, d.device, "OwnerUID");
                g_assert_nonnull(owner);
                if (g_variant_get_uint32(owner) != NOBODY)
                        g_test_message("after LOOP_CHANGE_FD on autoclear %s: OwnerUID %u", d.device,
                                       g_variant_get_uint32(owner));
        }
        /* ...nobody gets no more devices than its quota of 1. */
        for (guint i = 0; i < 5; i++) {
                g_autofree char *a = hostile_cmd(nobody, 30, "create %s ro read-only=b:true autoclear=b:true", approved);
                g_auto(HostileDevice) e = { 0 };
                g_autofree char *r = NULL;

                if (hostile_error_name(a))
                        break;
                hostile_parse_device(a, &e);
                r = hostile_cmd(nobody, 10, "change-fd %u %s", e.slot, other);
                extra++;
                g_usleep((gulong) (200000 * loopd_test_timeout_scale()));
        }
        if (extra > 0)
                g_error("nobody holds %u devices under --quota=1, each made autoclear and swapped with "
                        "LOOP_CHANGE_FD (loopd forgot their owner)",
                        extra + 1);

        /* The slot comes back when the kernel lets the device go. */
        g_free(answer);
        answer = hostile_cmd(nobody, 10, "close %u", d.slot);
        g_assert_cmpstr(answer, ==, "ok");
        g_assert_true(wait_device_gone(f, d.device, 10));
        g_free(answer);
        answer = hostile_cmd(nobody, 30, "create %s ro read-only=b:true autoclear=b:true", approved);
        if (hostile_error_name(answer))
                g_error("nobody's quota slot did not come back after its swapped device went: %s", answer);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/security/ownership/deferred-remove-still-counts", LoopdFixture, &nobody_may_create_quota_2,
                   loopd_fixture_setup, test_deferred_remove_still_counts, loopd_fixture_teardown);
        g_test_add("/security/ownership/change-fd-keeps-owner-and-withdraws-access", LoopdFixture,
                   &nobody_may_create, loopd_fixture_setup, test_change_fd_keeps_owner_and_withdraws_access,
                   loopd_fixture_teardown);
        g_test_add("/security/ownership/change-fd-device-goes-at-last-close", LoopdFixture, &nobody_may_create_quota_1,
                   loopd_fixture_setup, test_change_fd_device_goes_at_last_close, loopd_fixture_teardown);
        g_test_add("/security/ownership/change-fd-on-autoclear-device-still-counts", LoopdFixture,
                   &nobody_may_create_quota_1, loopd_fixture_setup, test_change_fd_on_autoclear_device_still_counts,
                   loopd_fixture_teardown);
        return g_test_run();
}
