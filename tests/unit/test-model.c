/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The daemon's building blocks that need no bus: name escaping
 * (daemon/escape.c), the job pool (daemon/jobs.c) and owners' node access
 * (daemon/node-access.c, on a real loop node, as root).
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <linux/loop.h>

#include "escape.h"
#include "jobs.h"
#include "uid-budget.h"
#include "node-access.h"

/* ---- escaping -------------------------------------------------------------- */

/* The inverse of name_escape(): "\xNN" back to the byte. */
static char *unescape(const char *s) {
        GString *out = g_string_new(NULL);

        for (; *s; s++) {
                if (s[0] == '\\') {
                        g_assert_cmpint(s[1], ==, 'x');
                        g_assert_true(g_ascii_isxdigit(s[2]) && g_ascii_isxdigit(s[3]));
                        g_string_append_c(out, (char) (g_ascii_xdigit_value(s[2]) * 16 + g_ascii_xdigit_value(s[3])));
                        s += 3;
                } else
                        g_string_append_c(out, *s);
        }
        return g_string_free(out, FALSE);
}

static void test_escape_table(void) {
        static const struct {
                const char *in, *out;
        } t[] = {
                { "/srv/disk.img", "/srv/disk.img" },
                { "", "" },
                { "/lat\xe9n.img", "/lat\\xe9n.img" },              /* latin-1: not UTF-8 */
                { "/caf\xc3\xa9.img", "/caf\xc3\xa9.img" },         /* valid UTF-8 stays */
                { "/日本語.img", "/日本語.img" },
                { "/a\nb", "/a\\x0ab" },                            /* newline */
                { "/a\tb\x7f", "/a\\x09b\\x7f" },                   /* controls, DEL */
                { "/back\\slash", "/back\\x5cslash" },              /* the escape itself */
                { "/c1\xc2\x85", "/c1\\xc2\\x85" },                 /* C1 control U+0085 */
                { "/over\xc0\xaf", "/over\\xc0\\xaf" },             /* overlong '/' */
                { "/sur\xed\xa0\x80", "/sur\\xed\\xa0\\x80" },      /* a surrogate */
                { "/nc\xef\xb7\x90", "/nc\\xef\\xb7\\x90" },        /* U+FDD0, a non-character */
                { "/nc\xef\xbf\xbe", "/nc\\xef\\xbf\\xbe" },        /* U+FFFE */
                { "/big\xf4\x90\x80\x80", "/big\\xf4\\x90\\x80\\x80" }, /* past U+10FFFF */
                { "/cut\xe6\x97", "/cut\\xe6\\x97" },               /* a truncated sequence */
        };

        for (size_t i = 0; i < G_N_ELEMENTS(t); i++) {
                g_autofree char *e = name_escape(t[i].in), *back = NULL;
                g_assert_cmpstr(e, ==, t[i].out);
                g_assert_true(g_utf8_validate(e, -1, NULL));
                back = unescape(e);
                g_assert_cmpstr(back, ==, t[i].in);
                g_assert_cmpint(name_is_plain(t[i].in), ==, strcmp(t[i].in, t[i].out) == 0);
        }
        {
                g_autofree char *e = name_escape(NULL);
                g_assert_cmpstr(e, ==, "");
        }
}

/* Every byte string of up to 3 bytes over an alphabet that covers each
 * class: the result is valid UTF-8 and decodes back. */
static void test_escape_exhaustive_short(void) {
        static const unsigned char alphabet[] = { 'a', '\\', 0x01, 0x7f, 0x80, 0xbf, 0xc2, 0xc3, 0xe0, 0xed,
                                                  0xef, 0xf0, 0xf4, 0xf5, 0xff, 0xa0, 0xb7, 0x85 };
        const size_t n = G_N_ELEMENTS(alphabet);
        unsigned count = 0;

        for (size_t len = 1; len <= 3; len++) {
                size_t total = 1;
                for (size_t k = 0; k < len; k++)
                        total *= n;
                for (size_t x = 0; x < total; x++) {
                        char s[4] = { 0 };
                        size_t y = x;
                        for (size_t k = 0; k < len; k++, y /= n)
                                s[k] = (char) alphabet[y % n];
                        g_autofree char *e = name_escape(s), *back = unescape(e);
                        g_assert_true(g_utf8_validate(e, -1, NULL));
                        g_assert_cmpmem(back, strlen(back), s, len);
                        count++;
                }
        }
        g_test_message("%u strings escaped and decoded back", count);
}

/* ---- per-uid rates ------------------------------------------------------------ */

/* A burst at once, then the rate; each uid its own; a uid whose bucket is
 * full again is forgotten. */
static void test_uid_budget(void) {
        UidBudget b = { .rate = 10, .burst = 3 };
        uint64_t t = 1000000;

        for (int i = 0; i < 3; i++)
                g_assert_true(uid_budget_take(&b, 1000, t));
        g_assert_false(uid_budget_take(&b, 1000, t));
        for (int i = 0; i < 3; i++)
                g_assert_true(uid_budget_take(&b, 1001, t)); /* another uid */
        g_assert_false(uid_budget_take(&b, 1000, t + 99 * 1000));
        g_assert_true(uid_budget_take(&b, 1000, t + 100 * 1000)); /* 1/10 s: one more */
        g_assert_false(uid_budget_take(&b, 1000, t + 100 * 1000));
        g_assert_cmpuint(b.n, ==, 2);
        /* Much later both are full: asking for one forgets the other. */
        g_assert_true(uid_budget_take(&b, 1000, t + 10 * 1000000ULL));
        g_assert_cmpuint(b.n, ==, 1);
        uid_budget_clear(&b);
}

/* ---- the job pool ------------------------------------------------------------ */

typedef struct JobTest {
        sd_event *e;
        JobPool *pool;
        unsigned done, late, expired, cancelled;
        GMutex lock;
        GCond cond;
        unsigned blocked;
        gboolean release;
        _Atomic unsigned ran;
} JobTest;

static void run_quick(void *data) {
        JobTest *t = data;
        atomic_fetch_add(&t->ran, 1);
}

/* Blocks until the test releases it: a job stuck in the kernel. */
static void run_blocking(void *data) {
        JobTest *t = data;

        g_mutex_lock(&t->lock);
        t->blocked++;
        g_cond_broadcast(&t->cond);
        while (!t->release)
                g_cond_wait(&t->cond, &t->lock);
        g_mutex_unlock(&t->lock);
        atomic_fetch_add(&t->ran, 1);
}

static void on_expired(void *data) {
        ((JobTest *) data)->expired++;
}

static void on_done(void *data, JobResult r) {
        JobTest *t = data;
        if (r == JOB_DONE)
                t->done++;
        else if (r == JOB_LATE)
                t->late++;
        else
                t->cancelled++;
}

static void loop_until(JobTest *t, gboolean (*cond)(JobTest *t), unsigned max_ms) {
        for (unsigned i = 0; i < max_ms && !cond(t); i++)
                g_assert_cmpint(sd_event_run(t->e, 1000), >=, 0);
        g_assert_true(cond(t));
}

static gboolean all_done(JobTest *t) {
        return t->done + t->late + t->cancelled >= atomic_load(&t->ran) && atomic_load(&t->ran) > 0 &&
               job_pool_jobs(t->pool) == 0;
}

static void wait_blocked(JobTest *t, unsigned n) {
        g_mutex_lock(&t->lock);
        while (t->blocked < n)
                g_cond_wait(&t->cond, &t->lock);
        g_mutex_unlock(&t->lock);
}

static void release_all(JobTest *t) {
        g_mutex_lock(&t->lock);
        t->release = TRUE;
        g_cond_broadcast(&t->cond);
        g_mutex_unlock(&t->lock);
}

static void job_test_init_full(JobTest *t, unsigned threads, unsigned running_per_owner, unsigned per_owner) {
        memset(t, 0, sizeof(*t));
        g_mutex_init(&t->lock);
        g_cond_init(&t->cond);
        g_assert_cmpint(sd_event_new(&t->e), >=, 0);
        g_assert_cmpint(job_pool_new(t->e,
                                     &(JobPoolLimits) { .max_threads = threads, .reserve_threads = 1,
                                                        .max_running_per_owner = running_per_owner,
                                                        .max_per_owner = per_owner, .max_queued = 8,
                                                        .warm_threads = 1 },
                                     &t->pool),
                        ==, 0);
}

static void job_test_init(JobTest *t, unsigned threads, unsigned per_owner) {
        job_test_init_full(t, threads, per_owner, per_owner);
}

static void job_test_done(JobTest *t) {
        job_pool_free(t->pool, 2 * 1000000);
        sd_event_unref(t->e);
        g_mutex_clear(&t->lock);
        g_cond_clear(&t->cond);
}

static void test_jobs_run_and_report_on_the_loop(void) {
        JobTest t;

        job_test_init(&t, 2, 4);
        for (int i = 0; i < 50; i++)
                g_assert_cmpint(job_submit(t.pool, 0, 0, run_quick, NULL, on_done, &t), ==, 0);
        loop_until(&t, all_done, 5000);
        g_assert_cmpuint(t.done, ==, 50);
        g_assert_cmpuint(job_pool_jobs(t.pool), ==, 0);
        job_test_done(&t);
}

/* A uid may have max_per_owner jobs, stuck ones included; root is not
 * limited per owner and has the reserve thread when every ordinary one is
 * stuck. */
static void test_jobs_limit_per_owner_and_serve_root(void) {
        JobTest t;

        job_test_init(&t, 2, 2);
        g_assert_cmpint(job_submit(t.pool, 1000, 0, run_blocking, NULL, on_done, &t), ==, 0);
        g_assert_cmpint(job_submit(t.pool, 1000, 0, run_blocking, NULL, on_done, &t), ==, 0);
        wait_blocked(&t, 2);
        g_assert_cmpint(job_submit(t.pool, 1000, 0, run_quick, NULL, on_done, &t), ==, -EAGAIN);
        g_assert_cmpuint(job_pool_owner_jobs(t.pool, 1000), ==, 2);
        /* Another uid queues (no ordinary thread free); root runs at once. */
        g_assert_cmpint(job_submit(t.pool, 1001, 0, run_quick, NULL, on_done, &t), ==, 0);
        g_assert_cmpint(job_submit(t.pool, 0, 0, run_quick, NULL, on_done, &t), ==, 0);
        for (int i = 0; i < 2000 && t.done < 1; i++)
                g_assert_cmpint(sd_event_run(t.e, 1000), >=, 0);
        g_assert_cmpuint(t.done, ==, 1); /* root's */
        g_assert_cmpuint(job_pool_owner_jobs(t.pool, 1001), ==, 1);
        release_all(&t);
        for (int i = 0; i < 5000 && job_pool_jobs(t.pool) > 0; i++)
                g_assert_cmpint(sd_event_run(t.e, 1000), >=, 0);
        g_assert_cmpuint(t.done, ==, 4);
        job_test_done(&t);
}

/* A uid's jobs past its running limit wait for its own threads, not
 * refused, and do not hold the threads other uids need; cleanup is never
 * refused; a queued job whose deadline passes never runs. */
static void test_jobs_queue_behind_own_threads(void) {
        JobTest t;

        job_test_init_full(&t, 4, 2, 6);
        g_assert_cmpint(job_submit(t.pool, 1000, 0, run_blocking, NULL, on_done, &t), ==, 0);
        g_assert_cmpint(job_submit(t.pool, 1000, 0, run_blocking, NULL, on_done, &t), ==, 0);
        wait_blocked(&t, 2);
        /* Queued behind uid 1000's two stuck jobs. */
        g_assert_cmpint(job_submit(t.pool, 1000, 0, run_quick, NULL, on_done, &t), ==, 0);
        g_assert_cmpint(job_submit(t.pool, 1000, 30 * 1000, run_quick, on_expired, on_done, &t), ==, 0);
        /* Another uid runs at once on the threads left. */
        g_assert_cmpint(job_submit(t.pool, 1001, 0, run_quick, NULL, on_done, &t), ==, 0);
        for (int i = 0; i < 2000 && (t.done < 1 || t.expired < 1); i++)
                g_assert_cmpint(sd_event_run(t.e, 1000), >=, 0);
        g_assert_cmpuint(t.done, ==, 1);
        g_assert_cmpuint(t.expired, ==, 1);
        g_assert_cmpuint(atomic_load(&t.ran), ==, 1);
        /* The limit on queued and running jobs refuses requests, not cleanup. */
        g_assert_cmpint(job_submit(t.pool, 1000, 0, run_quick, NULL, on_done, &t), ==, 0);
        g_assert_cmpint(job_submit(t.pool, 1000, 0, run_quick, NULL, on_done, &t), ==, 0);
        g_assert_cmpint(job_submit(t.pool, 1000, 0, run_quick, NULL, on_done, &t), ==, -EAGAIN);
        for (int i = 0; i < 10; i++)
                g_assert_cmpint(job_submit_cleanup(t.pool, 1000, run_quick, on_done, &t), ==, 0);
        g_assert_cmpuint(job_pool_owner_jobs(t.pool, 1000), ==, 16);
        release_all(&t);
        for (int i = 0; i < 5000 && job_pool_jobs(t.pool) > 0; i++)
                g_assert_cmpint(sd_event_run(t.e, 1000), >=, 0);
        /* 2 stuck, 3 queued, 10 cleanup, uid 1001's; the expired one did not. */
        g_assert_cmpuint(atomic_load(&t.ran), ==, 16);
        g_assert_cmpuint(t.cancelled, ==, 1);
        g_assert_cmpuint(t.done, ==, 16);
        job_test_done(&t);
}

/* Past its deadline the caller hears of it at once; the job still reports
 * when its thread returns, as late. */
static void test_jobs_deadline_then_late(void) {
        JobTest t;

        job_test_init(&t, 2, 4);
        g_assert_cmpint(job_submit(t.pool, 1000, 50 * 1000, run_blocking, on_expired, on_done, &t), ==, 0);
        for (int i = 0; i < 2000 && t.expired == 0; i++)
                g_assert_cmpint(sd_event_run(t.e, 1000), >=, 0);
        g_assert_cmpuint(t.expired, ==, 1);
        g_assert_cmpuint(t.done + t.late, ==, 0);
        g_assert_cmpuint(job_pool_owner_jobs(t.pool, 1000), ==, 1); /* still charged */
        release_all(&t);
        for (int i = 0; i < 5000 && t.late == 0; i++)
                g_assert_cmpint(sd_event_run(t.e, 1000), >=, 0);
        g_assert_cmpuint(t.late, ==, 1);
        g_assert_cmpuint(job_pool_owner_jobs(t.pool, 1000), ==, 0);
        job_test_done(&t);
}

/* ---- node access -------------------------------------------------------------- */

static void test_node_access_grant_and_withdraw(void) {
        char dev[32], name[16];
        uid_t users[4];
        unsigned perms[4];
        struct stat before, st;
        int ctl, number;

        if (geteuid() != 0 || access("/dev/loop-control", W_OK) < 0) {
                g_test_skip("needs root and /dev/loop-control (it sets ACLs on a loop node)");
                return;
        }
        ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
        g_assert_cmpint(ctl, >=, 0);
        number = ioctl(ctl, LOOP_CTL_GET_FREE);
        g_assert_cmpint(number, >=, 0);
        close(ctl);
        snprintf(dev, sizeof(dev), "/dev/loop%d", number);
        snprintf(name, sizeof(name), "loop%d", number);
        g_assert_cmpint(stat(dev, &before), ==, 0);

        if (node_access_set((uint32_t) number, 65534, true) == -EOPNOTSUPP) {
                g_test_skip("/dev here carries no POSIX ACLs");
                return;
        }
        g_assert_cmpint(node_access_get(name, users, perms, 4), ==, 1);
        g_assert_cmpuint(users[0], ==, 65534);
        g_assert_cmpuint(perms[0], ==, 6);
        /* Read-only: the entry says r only. */
        g_assert_cmpint(node_access_set((uint32_t) number, 65534, false), ==, 0);
        g_assert_cmpint(node_access_get(name, users, perms, 4), ==, 1);
        g_assert_cmpuint(perms[0], ==, 4);
        /* Another owner replaces, never adds. */
        g_assert_cmpint(node_access_set((uint32_t) number, 1, true), ==, 0);
        g_assert_cmpint(node_access_get(name, users, perms, 4), ==, 1);
        g_assert_cmpuint(users[0], ==, 1);
        /* Withdrawn: no entry, and the group bits are the node's own again
         * (not the mask's rw). */
        g_assert_cmpint(node_access_set((uint32_t) number, NODE_ACCESS_NONE, false), ==, 0);
        g_assert_cmpint(node_access_get(name, users, perms, 4), ==, 0);
        g_assert_cmpint(stat(dev, &st), ==, 0);
        g_assert_cmpuint(st.st_mode & 07777, ==, before.st_mode & 07777);
        g_assert_cmpuint(st.st_uid, ==, before.st_uid);
        g_assert_cmpuint(st.st_gid, ==, before.st_gid);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);
        g_test_add_func("/escape/table", test_escape_table);
        g_test_add_func("/escape/exhaustive-short-strings", test_escape_exhaustive_short);
        g_test_add_func("/uid-budget/burst-then-rate", test_uid_budget);
        g_test_add_func("/jobs/run-and-report-on-the-loop", test_jobs_run_and_report_on_the_loop);
        g_test_add_func("/jobs/limit-per-owner-and-serve-root", test_jobs_limit_per_owner_and_serve_root);
        g_test_add_func("/jobs/queue-behind-own-threads", test_jobs_queue_behind_own_threads);
        g_test_add_func("/jobs/deadline-then-late", test_jobs_deadline_then_late);
        g_test_add_func("/node-access/grant-and-withdraw", test_node_access_grant_and_withdraw);
        return g_test_run();
}
