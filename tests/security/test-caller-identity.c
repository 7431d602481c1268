/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopd acts on what the bus vouches for about a caller, never on what the
 * user database or the caller's own mount namespace says.
 *
 *   /security/identity/dropped-groups-stay-dropped
 *       CreateFromPath opens the path as the caller. The helper once took
 *       the caller's groups from getpwuid()/getgrouplist(): a process that
 *       ran with its groups cleared (setpriv --clear-groups, a sandbox, a
 *       service with SupplementaryGroups= unset) opened a root:ssl-cert
 *       0640 file it could not open itself.
 *   /security/identity/polkit-sees-a-spoofed-path-unverified
 *       polkit's backing_file detail was readlink(/proc/self/fd/N): a path
 *       in the caller's mount namespace. A caller in a user and mount
 *       namespace of its own bind-mounts its directory over a trusted one,
 *       passes an fd, and a rule matching the trusted prefix (the one
 *       org.loopd.policy suggests) allowed a file it was never meant to.
 *       Now the name is checked in loopd's own namespace, and one that does
 *       not lead to the very same inode is passed as "(unverified) NAME"
 *       with backing_file_verified "false".
 */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hostile.h"

#define NOBODY 65534

/* ---- groups ------------------------------------------------------------------ */

typedef struct Member {
        char *user, *group;
        uid_t uid;
        gid_t gid, group_gid;
} Member;

/* A user (not root) whom the group database makes a supplementary member
 * of some group other than its primary one, e.g. postgres in ssl-cert. */
static gboolean find_member(Member *m) {
        struct group *gr;
        gboolean found = FALSE;

        setgrent();
        while (!found && (gr = getgrent()))
                for (char **mem = gr->gr_mem; *mem && !found; mem++) {
                        struct passwd *pw = getpwnam(*mem);
                        if (!pw || pw->pw_uid == 0 || pw->pw_gid == gr->gr_gid)
                                continue;
                        m->user = g_strdup(*mem);
                        m->group = g_strdup(gr->gr_name);
                        m->uid = pw->pw_uid;
                        m->gid = pw->pw_gid;
                        m->group_gid = gr->gr_gid;
                        found = TRUE;
                }
        endgrent();
        return found;
}

static gboolean grouplist_has(const Member *m) {
        gid_t groups[256];
        int n = G_N_ELEMENTS(groups);

        if (getgrouplist(m->user, m->gid, groups, &n) < 0)
                return FALSE;
        for (int i = 0; i < n; i++)
                if (groups[i] == m->group_gid)
                        return TRUE;
        return FALSE;
}

static void test_dropped_groups_stay_dropped(LoopdFixture *f, gconstpointer data) {
        g_autofree char *rules = NULL, *secret = NULL, *groups = NULL, *a = NULL, *b = NULL;
        g_autoptr(HostileCaller) dropped = NULL, member = NULL;
        g_auto(HostileDevice) d = { 0 };
        Member m = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!find_member(&m)) {
                g_test_skip("no user in this machine's group database is a supplementary member of a group "
                            "(like postgres of ssl-cert on Debian): nothing to drop");
                return;
        }
        g_assert_true(grouplist_has(&m));
        g_test_message("%s (uid %u) is a member of %s (gid %u) by the group database", m.user, (unsigned) m.uid,
                       m.group, (unsigned) m.group_gid);

        /* The group's secret: root:GROUP 0640, like /etc/ssl/private. */
        secret = loopd_fixture_make_image(f, "group-secret.img", 1 << 20, 0, m.group_gid, 0640);
        rules = g_strdup_printf("polkit.addRule(function(action, subject) {\n"
                                "        if (action.id == '%s' && subject.user == '%s')\n"
                                "                return polkit.Result.YES;\n"
                                "});\n",
                                LOOPD_ACTION_CREATE, m.user);
        loopd_fixture_set_polkit_rules(f, rules);

        /* The caller dropped the group: it cannot open the file itself... */
        {
                g_auto(LoopdRunResult) r = { 0 };
                const char *argv[] = { "head", "-c", "1", secret, NULL };
                loopd_fixture_run_as(f, m.uid, m.gid, argv, &r);
                g_assert_cmpint(r.status, !=, 0);
        }
        /* ...nor through loopd. */
        dropped = hostile_spawn(f, m.uid, m.gid, NULL, 20);
        a = hostile_cmd(dropped, 30, "create-from-path %s read-only=b:true", secret);
        if (!hostile_error_name(a))
                g_error("%s, running without its groups, got a device backed by %s (root:%s 0640) through "
                        "CreateFromPath: %s",
                        m.user, secret, m.group, a);
        g_assert_cmpstr(hostile_error_name(a), ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);
        g_test_message("without its groups: %s", a);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);

        /* With the group really held, the same call works: loopd honours
         * the groups the caller has. */
        groups = g_strdup_printf("%u", (unsigned) m.group_gid);
        member = hostile_spawn(f, m.uid, m.gid, groups, 20);
        b = hostile_cmd(member, 30, "create-from-path %s read-only=b:true", secret);
        hostile_parse_device(b, &d);
        g_free(a);
        a = hostile_cmd(member, 10, "close %u", d.slot);
        g_free(a);
        a = hostile_cmd(member, 30, "remove %s", d.device);
        g_assert_cmpstr(a, ==, "ok");
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);

        g_free(m.user);
        g_free(m.group);
}

/* ---- a spoofed path ------------------------------------------------------------- */

static gboolean unprivileged_userns_works(LoopdFixture *f) {
        g_auto(LoopdRunResult) r = { 0 };
        const char *argv[] = { "unshare", "-Urm", "true", NULL };

        loopd_fixture_run_as(f, NOBODY, NOBODY, argv, &r);
        return r.status == 0;
}

static void test_polkit_sees_a_spoofed_path_unverified(LoopdFixture *f, gconstpointer data) {
        g_autofree char *trusted = NULL, *untrusted = NULL, *rules = NULL, *evil = NULL, *decoy = NULL;
        g_autofree char *good = NULL, *spoofed_name = NULL, *a = NULL, *script = NULL;
        g_autoptr(HostileCaller) plain = NULL, spoofer = NULL;
        g_auto(HostileDevice) d = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        if (!unprivileged_userns_works(f)) {
                g_test_skip("unprivileged user namespaces are not allowed here (user.max_user_namespaces, "
                            "kernel.unprivileged_userns_clone or an LSM): nobody cannot make a mount namespace");
                return;
        }

        /* The admin's trusted images, and nobody's own directory. */
        trusted = g_build_filename(f->image_dir, "trusted", NULL);
        untrusted = g_build_filename(f->image_dir, "untrusted", NULL);
        g_assert_no_errno(mkdir(trusted, 0755));
        g_assert_no_errno(mkdir(untrusted, 0755));
        g_assert_no_errno(chown(untrusted, NOBODY, NOBODY));
        good = loopd_fixture_make_image(f, "trusted/good.img", 1 << 20, NOBODY, NOBODY, 0600);
        decoy = loopd_fixture_make_image(f, "trusted/evil.img", 1 << 20, 0, 0, 0644); /* another inode */
        evil = loopd_fixture_make_image(f, "untrusted/evil.img", 1 << 20, NOBODY, NOBODY, 0600);
        spoofed_name = g_build_filename(trusted, "evil.img", NULL);

        /* The prefix rule org.loopd.policy suggests, and before it one that
         * tells a name loopd could not verify apart (challenge, so that the
         * answer shows which rule decided). */
        rules = g_strdup_printf(
                "var TRUSTED = '%s/';\n"
                "polkit.addRule(function(action, subject) {\n"
                "        if (action.id == '%s' && subject.user == 'nobody' &&\n"
                "            action.lookup('backing_file_verified') == 'false' &&\n"
                "            action.lookup('backing_file').indexOf('(unverified) ' + TRUSTED) == 0)\n"
                "                return polkit.Result.AUTH_ADMIN;\n"
                "});\n"
                "polkit.addRule(function(action, subject) {\n"
                "        if (action.id == '%s' && subject.user == 'nobody') {\n"
                "                if (action.lookup('backing_file').indexOf(TRUSTED) == 0)\n"
                "                        return polkit.Result.YES;\n"
                "                return polkit.Result.NO;\n"
                "        }\n"
                "});\n",
                trusted, LOOPD_ACTION_CREATE, LOOPD_ACTION_CREATE);
        loopd_fixture_set_polkit_rules(f, rules);

        /* The rule works as meant: a trusted file yes, nobody's own no. */
        plain = hostile_spawn(f, NOBODY, NOBODY, NULL, 20);
        a = hostile_cmd(plain, 30, "create %s ro read-only=b:true autoclear=b:true", good);
        hostile_parse_device(a, &d);
        g_free(a);
        a = hostile_cmd(plain, 10, "close %u", d.slot);
        g_free(a);
        a = hostile_cmd(plain, 30, "create %s ro read-only=b:true autoclear=b:true", evil);
        g_assert_cmpstr(hostile_error_name(a), ==, LOOPD_DBUS_ERROR_ACCESS_DENIED);

        /* nobody in its own user and mount namespace: its directory over the
         * trusted one. Its fd of untrusted/evil.img is then named
         * trusted/evil.img by the kernel. */
        script = g_strdup_printf("mount --bind %s %s && exec \"$0\" \"$@\"", untrusted, trusted);
        {
                const char *wrapper[] = { "unshare", "-Urm", "sh", "-c", script, NULL };
                spoofer = hostile_spawn_wrapped(f, NOBODY, NOBODY, NULL, wrapper, 20);
        }
        g_free(a);
        a = hostile_cmd(spoofer, 30, "create %s ro read-only=b:true autoclear=b:true", spoofed_name);
        if (!hostile_error_name(a))
                g_error("nobody got a device backed by its own file, which its mount namespace names %s, through a "
                        "rule that allows only files under %s/: %s",
                        spoofed_name, trusted, a);
        g_test_message("the spoofed name: %s", a);
        /* Refused by the rule that saw "(unverified) ..." and "false". */
        g_assert_cmpstr(hostile_error_name(a), ==, LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
        (void) decoy;
}

int main(int argc, char **argv) {
        static const LoopdFixtureOptions opts = { .start_polkit = TRUE, .start_daemon = TRUE };

        g_test_init(&argc, &argv, NULL);
        g_test_add("/security/identity/dropped-groups-stay-dropped", LoopdFixture, &opts, loopd_fixture_setup,
                   test_dropped_groups_stay_dropped, loopd_fixture_teardown);
        g_test_add("/security/identity/polkit-sees-a-spoofed-path-unverified", LoopdFixture, &opts,
                   loopd_fixture_setup, test_polkit_sees_a_spoofed_path_unverified, loopd_fixture_teardown);
        return g_test_run();
}
