/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * A device a user creates through loopd is announced once, as the user's:
 * the kernel's uevent for it reaches loopd while its create is still
 * finishing, and must not make loopd present it first as a device nobody
 * created through loopd (OwnerUID 4294967295), then remove and add it
 * again. And whatever order the two arrive in, the owner record that
 * survives a restart names the user.
 */

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "owners-util.h"
#include "service-util.h"

#define NOBODY LOOPD_TEST_NOBODY
#define ROUNDS 12

static const LoopdFixtureOptions opts = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE),
        .start_daemon = TRUE,
        /* A quota big enough for every round. */
        .daemon_args = (const char *const[]) { "--quota=32", NULL },
};

typedef struct Seen {
        GPtrArray *lines; /* "Added OBJ OWNER" / "Removed OBJ" */
} Seen;

static void on_signal(GDBusConnection *conn, const char *sender, const char *path, const char *iface,
                      const char *member, GVariant *params, gpointer userdata) {
        Seen *s = userdata;
        g_autofree char *obj = NULL;

        g_variant_get_child(params, 0, "o", &obj);
        if (g_str_equal(member, "InterfacesAdded")) {
                g_autoptr(GVariant) ifaces = g_variant_get_child_value(params, 1);
                g_autoptr(GVariant) props = g_variant_lookup_value(ifaces, LOOPD_DEVICE_INTERFACE,
                                                                   G_VARIANT_TYPE("a{sv}"));
                guint32 owner = 0;
                if (props)
                        (void) g_variant_lookup(props, "OwnerUID", "u", &owner);
                g_ptr_array_add(s->lines, g_strdup_printf("Added %s %u", obj, owner));
        } else
                g_ptr_array_add(s->lines, g_strdup_printf("Removed %s", obj));
}

static void test_create_announced_once_as_the_users(LoopdFixture *f, gconstpointer data) {
        Seen seen = { g_ptr_array_new_with_free_func(g_free) };
        g_autoptr(GPtrArray) objs = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GString) bad = g_string_new(NULL);
        guint id;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        id = g_dbus_connection_signal_subscribe(f->bus, LOOPD_BUS_NAME, "org.freedesktop.DBus.ObjectManager", NULL,
                                                LOOPD_MANAGER_PATH, NULL, G_DBUS_SIGNAL_FLAGS_NONE, on_signal, &seen,
                                                NULL);
        spin(0.1);
        for (guint i = 0; i < ROUNDS; i++) {
                g_autofree char *name = g_strdup_printf("announce-%u.img", i);
                g_autofree char *img = make_marked_image(f, name, 1 * MiB, NOBODY);
                char *made = NULL;

                create_as_nobody(f, img, NULL, &made, NULL);
                g_ptr_array_add(objs, made);
        }
        spin(0.5);
        g_dbus_connection_signal_unsubscribe(f->bus, id);

        for (guint i = 0; i < objs->len; i++) {
                const char *obj = objs->pdata[i];
                g_autofree char *want = g_strdup_printf("Added %s %u", obj, NOBODY);
                g_autoptr(GString) mine = g_string_new(NULL);
                guint n = 0;
                for (guint k = 0; k < seen.lines->len; k++) {
                        const char *l = seen.lines->pdata[k];
                        const char *sp = strchr(l, ' ');
                        if (!g_str_has_prefix(sp + 1, obj) || (sp[1 + strlen(obj)] != ' ' && sp[1 + strlen(obj)] != 0))
                                continue;
                        g_string_append_printf(mine, " [%s]", l);
                        n++;
                }
                if (n != 1 || !strstr(mine->str, want))
                        g_string_append_printf(bad, "\n  %s:%s", obj, mine->str);
        }
        g_ptr_array_unref(seen.lines);
        if (bad->len > 0)
                g_error("each create should be announced once, as uid %u's (InterfacesAdded with its OwnerUID); "
                        "seen instead:%s", NOBODY, bad->str);
}

/* However the uevent and the create's end were ordered, the owner records
 * loopd reads back at start name nobody for every device. */
static void test_owners_survive_restart(LoopdFixture *f, gconstpointer data) {
        g_autoptr(GPtrArray) devs = g_ptr_array_new_with_free_func(g_free);
        g_autoptr(GString) bad = g_string_new(NULL);

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        for (guint i = 0; i < ROUNDS; i++) {
                g_autofree char *name = g_strdup_printf("records-%u.img", i);
                g_autofree char *img = make_marked_image(f, name, 1 * MiB, NOBODY);
                char *made = NULL;

                create_as_nobody(f, img, NULL, NULL, &made);
                g_ptr_array_add(devs, made);
        }
        spin(0.5);
        loopd_fixture_stop_daemon(f);
        g_assert_true(loopd_fixture_restart_daemon(f));
        for (guint i = 0; i < devs->len; i++) {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) v = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "GetDevice",
                                                   g_variant_new("(s)", (const char *) devs->pdata[i]), "(o)", &error);
                g_auto(LoopdRunResult) r = { 0 };
                const char *obj;
                g_assert_no_error(error);
                g_variant_get(v, "(&o)", &obj);
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "get", obj, "OwnerUID", NULL);
                if (g_strcmp0(r.out, "ok 65534\n") != 0)
                        g_string_append_printf(bad, "\n  %s: OwnerUID %s", (const char *) devs->pdata[i], r.out);
        }
        if (bad->len > 0)
                g_error("after a restart, devices nobody created are not nobody's:%s", bad->str);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

#define ADD(path, fn) g_test_add(path, LoopdFixture, &opts, loopd_fixture_setup, fn, loopd_fixture_teardown)
        ADD("/announce/create-announced-once-as-the-users", test_create_announced_once_as_the_users);
        ADD("/announce/owners-survive-restart", test_owners_survive_restart);
        return g_test_run();
}
