/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * `loopctl with FILE -- CMD` run by a device's owner who is not root, and
 * killed with SIGKILL while CMD runs: a shell whose pipeline of sleeps
 * holds the node open. Every process CMD started is stopped, the device is
 * removed, and nothing is left: no process of the run (each carries a tag
 * in its environment), no attachment, no ACL entry on the node.
 * (tests/client/test-loopctl-with.c covers the same as root, CMD ignoring
 * SIGTERM and processes in a session of their own.)
 */

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "owners-util.h"
#include "service-util.h"

#define NOBODY LOOPD_TEST_NOBODY

static const LoopdFixtureOptions opts = {
        .start_polkit = TRUE,
        .polkit_rules = LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE),
        .start_daemon = TRUE,
};

/* Processes (but us) whose environment holds @tag. */
static GArray *tagged_pids(const char *tag) {
        g_autoptr(GDir) proc = g_dir_open("/proc", 0, NULL);
        GArray *pids = g_array_new(FALSE, FALSE, sizeof(pid_t));
        const char *name;

        while (proc && (name = g_dir_read_name(proc))) {
                g_autofree char *path = NULL, *env = NULL;
                gsize len = 0;
                pid_t pid;

                if (!g_ascii_isdigit(name[0]))
                        continue;
                pid = (pid_t) atoi(name);
                if (pid == getpid())
                        continue;
                path = g_strdup_printf("/proc/%s/environ", name);
                if (!g_file_get_contents(path, &env, &len, NULL))
                        continue;
                for (gsize off = 0; off < len; off += strlen(env + off) + 1)
                        if (g_str_equal(env + off, tag)) {
                                g_array_append_val(pids, pid);
                                break;
                        }
        }
        return pids;
}

static char *describe(GArray *pids) {
        GString *s = g_string_new(NULL);

        for (guint i = 0; i < pids->len; i++) {
                pid_t pid = g_array_index(pids, pid_t, i);
                g_autofree char *p = g_strdup_printf("/proc/%d/cmdline", (int) pid);
                g_autofree char *cmd = NULL;
                gsize len = 0;
                if (g_file_get_contents(p, &cmd, &len, NULL))
                        for (gsize k = 0; k + 1 < len; k++)
                                if (!cmd[k])
                                        cmd[k] = ' ';
                g_string_append_printf(s, " %d(%s)", (int) pid, cmd ? cmd : "?");
        }
        return g_string_free(s, FALSE);
}

static void test_killed_loopctl_stops_the_owners_pipeline(LoopdFixture *f, gconstpointer data) {
        g_autofree char *img = NULL, *tag = NULL, *line = NULL, *left = NULL;
        g_autoptr(LoopdCaller) c = NULL;
        g_autoptr(GArray) before = NULL;
        g_autoptr(GArray) after = NULL;
        guint32 number;
        guint64 seq;
        gint64 deadline;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        img = make_marked_image(f, "with-pipeline.img", 4 * MiB, NOBODY);
        tag = g_strdup_printf("LOOPD_TEST_WITH=%s", f->tmpdir);
        /* CMD holds the node open and runs a pipeline, in the background of
         * a shell that waits for it; it says where it is once it runs. */
        c = loopd_fixture_spawn_as(
                f, NOBODY, NOBODY,
                (const char *const[]) { "env", tag, LOOPCTL_BINARY, "with", img, "--", "sh", "-c",
                                        "exec 3<>\"$LOOP_DEVICE\" || exit 9; sleep 600 | sleep 601 & "
                                        "echo \"$LOOP_DEVICE\"; wait",
                                        NULL });
        line = loopd_caller_read_line(c);
        if (!line || !g_str_has_prefix(line, "/dev/loop"))
                g_error("loopctl with as nobody said '%s'", line ? line : "(nothing)");
        number = loop_number_of(line);
        seq = loop_diskseq(number);
        g_assert_cmpuint(seq, !=, 0);
        /* The owner's CMD uses the node with its own rights. */
        {
                NodeAccess a = probe_node(f, NOBODY, line);
                g_assert_cmpstr(a.rw, ==, "ok");
        }
        /* loopctl, its guardian, sh, two sleeps. */
        deadline = g_get_monotonic_time() + 5 * G_USEC_PER_SEC;
        for (;;) {
                g_clear_pointer(&before, g_array_unref);
                before = tagged_pids(tag);
                if (before->len >= 4 || g_get_monotonic_time() > deadline)
                        break;
                g_usleep(10000);
        }
        left = describe(before);
        g_test_message("processes of the run:%s", left);
        g_assert_cmpuint(before->len, >=, 4);

        loopd_caller_kill(c, SIGKILL);
        (void) loopd_caller_wait(c);

        deadline = g_get_monotonic_time() + (gint64) (15 * loopd_test_timeout_scale() * G_USEC_PER_SEC);
        for (;;) {
                g_clear_pointer(&after, g_array_unref);
                after = tagged_pids(tag);
                if (after->len == 0 || g_get_monotonic_time() > deadline)
                        break;
                g_usleep(20000);
        }
        if (after->len > 0) {
                g_autofree char *still = describe(after);
                for (guint i = 0; i < after->len; i++)
                        kill(g_array_index(after, pid_t, i), SIGKILL);
                g_error("15 s after loopctl was killed, still running:%s", still);
        }
        if (!wait_attachment_gone(number, seq, 10))
                g_error("%s is still attached after loopctl and its CMD are gone", line);
        g_assert_cmpuint(node_named_users(line, NULL, NULL, 0), ==, 0);
        g_assert_cmpuint(loopd_fixture_count_loops(f), ==, 0);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

        g_test_add("/with/owner/killed-loopctl-stops-the-pipeline", LoopdFixture, &opts, loopd_fixture_setup,
                   test_killed_loopctl_stops_the_owners_pipeline, loopd_fixture_teardown);
        return g_test_run();
}
