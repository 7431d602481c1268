/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>

#include "jobs.h"
#include "uid-count.h"

typedef struct Job Job;
struct Job {
        JobPool *pool;
        uid_t owner;
        job_run_t run;
        job_expired_t expired_cb;
        job_done_t done;
        void *data;
        sd_event_source *timer; /* event loop only */
        bool expired;           /* event loop only */
        bool skip;              /* under the lock: its deadline passed before a thread took it */
        bool taken;             /* under the lock: a thread took it */
        Job *next;              /* in a queue, the running or the completed list (under the lock) */
};

struct JobPool {
        sd_event *event;
        int efd;
        sd_event_source *efd_source;
        JobPoolLimits limits;

        /* Under the lock. */
        pthread_mutex_t lock;
        pthread_cond_t cond, all_idle;
        Job *root_head, *root_tail; /* root's jobs first */
        Job *head, *tail;
        Job *running;
        Job *completed;
        unsigned n_threads, n_idle, n_running_ordinary, n_running, n_queued;
        bool stopping;

        /* Event loop only. */
        UidCounts owners;
        unsigned n_jobs;
};

static void owner_release(JobPool *p, uid_t uid) {
        uid_counts_dec(&p->owners, uid);
        p->n_jobs--;
}

unsigned job_pool_owner_jobs(JobPool *p, uid_t owner) {
        return uid_counts_get(&p->owners, owner);
}

unsigned job_pool_jobs(JobPool *p) {
        return p->n_jobs;
}

/* Under the lock. */
static unsigned owner_running(JobPool *p, uid_t owner) {
        unsigned n = 0;

        for (Job *j = p->running; j; j = j->next)
                n += j->owner == owner;
        return n;
}

/* Under the lock: the next job this thread may take. Root's first; then the
 * oldest ordinary job whose owner has fewer than max_running_per_owner jobs
 * on threads, while fewer than max_threads run ordinary jobs: the rest of a
 * uid's jobs wait for its own threads to come back, and a uid whose jobs
 * hang in the kernel holds only those. Threads past max_threads only take
 * root's jobs. */
static Job *take_job(JobPool *p) {
        Job *j = NULL;

        if (p->root_head) {
                j = p->root_head;
                p->root_head = j->next;
                if (!p->root_head)
                        p->root_tail = NULL;
        } else if (p->head && p->n_running_ordinary < p->limits.max_threads) {
                Job *prev = NULL;

                for (j = p->head; j; prev = j, j = j->next)
                        if (j->skip || owner_running(p, j->owner) < p->limits.max_running_per_owner)
                                break;
                if (!j)
                        return NULL;
                if (prev)
                        prev->next = j->next;
                else
                        p->head = j->next;
                if (p->tail == j)
                        p->tail = prev;
                if (!j->skip)
                        p->n_running_ordinary++;
        }
        if (j) {
                p->n_queued--;
                j->taken = true;
                if (j->skip) {
                        /* Nobody waits for it: straight to the event loop. */
                        j->next = p->completed;
                        p->completed = j;
                        uint64_t one = 1;
                        (void) !write(p->efd, &one, sizeof(one));
                        return take_job(p);
                }
                j->next = p->running;
                p->running = j;
                p->n_running++;
        }
        return j;
}

static void *worker(void *arg) {
        JobPool *p = arg;

        pthread_mutex_lock(&p->lock);
        for (;;) {
                Job *j = take_job(p);

                if (!j) {
                        if (p->stopping)
                                break;
                        /* Idle threads beyond the warm ones leave after a while. */
                        struct timespec until = realtime_after_usec(10 * 1000000ULL);
                        p->n_idle++;
                        int r = pthread_cond_timedwait(&p->cond, &p->lock, &until);
                        p->n_idle--;
                        if (r == ETIMEDOUT && p->n_threads > p->limits.warm_threads && !p->root_head && !p->head)
                                break;
                        continue;
                }
                pthread_mutex_unlock(&p->lock);

                j->run(j->data);

                pthread_mutex_lock(&p->lock);
                for (Job **q = &p->running; *q; q = &(*q)->next)
                        if (*q == j) {
                                *q = j->next;
                                break;
                        }
                j->next = p->completed;
                p->completed = j;
                p->n_running--;
                if (j->owner != 0)
                        p->n_running_ordinary--;
                /* The event loop reads the completed list when woken. */
                uint64_t one = 1;
                (void) !write(p->efd, &one, sizeof(one));
        }
        p->n_threads--;
        pthread_cond_broadcast(&p->all_idle); /* job_pool_free() waits for the last one */
        pthread_mutex_unlock(&p->lock);
        return NULL;
}

/* A detached thread with every signal blocked (sd-event handles them on the
 * event loop's thread) and a small stack: the kernel work needs little, and
 * many stuck threads then cost little address space. */
static int start_detached(void *(*fn)(void *), void *arg) {
        pthread_attr_t attr;
        pthread_t t;
        sigset_t all, old;
        int r;

        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = -pthread_create(&t, &attr, fn, arg);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
        return r;
}

/* Under the lock. */
static int spawn_thread(JobPool *p) {
        int r = start_detached(worker, p);

        if (r == 0)
                p->n_threads++;
        return r;
}

typedef struct Orphan {
        job_run_t run;
        void *data;
} Orphan;

static void *orphan_thread(void *arg) {
        Orphan o = *(Orphan *) arg;

        free(arg);
        o.run(o.data);
        return NULL;
}

void job_run_orphan(job_run_t run, void *data) {
        Orphan *o = malloc(sizeof(*o));

        if (o) {
                *o = (Orphan) { run, data };
                if (start_detached(orphan_thread, o) == 0)
                        return;
                free(o);
        }
        run(data); /* no thread to be had: here, then */
}

static void finish(Job *j, JobResult result) {
        JobPool *p = j->pool;

        j->timer = sd_event_source_disable_unref(j->timer);
        owner_release(p, j->owner);
        j->done(j->data, result);
        free(j);
}

static int on_completed(sd_event_source *s, int fd, uint32_t revents, void *userdata) {
        JobPool *p = userdata;
        uint64_t v;
        Job *list;

        (void) !read(p->efd, &v, sizeof(v));
        pthread_mutex_lock(&p->lock);
        list = p->completed;
        p->completed = NULL;
        pthread_mutex_unlock(&p->lock);
        while (list) {
                Job *j = list;
                list = j->next;
                finish(j, j->skip ? JOB_CANCELLED : j->expired ? JOB_LATE : JOB_DONE);
        }
        return 0;
}

static int on_deadline(sd_event_source *s, uint64_t usec, void *userdata) {
        Job *j = userdata;

        j->timer = sd_event_source_disable_unref(j->timer);
        j->expired = true;
        /* Still waiting for a thread: it never runs (done() gets
         * JOB_CANCELLED once a thread passes it by). */
        pthread_mutex_lock(&j->pool->lock);
        if (!j->taken) {
                j->skip = true;
                pthread_cond_signal(&j->pool->cond);
        }
        pthread_mutex_unlock(&j->pool->lock);
        if (j->expired_cb)
                j->expired_cb(j->data);
        return 0;
}

int job_pool_new(sd_event *e, const JobPoolLimits *limits, JobPool **ret) {
        JobPool *p;
        int r;

        assert(e && limits && ret);
        assert(limits->max_threads > 0 && limits->max_per_owner > 0 && limits->max_running_per_owner > 0);
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->event = sd_event_ref(e);
        p->limits = *limits;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        pthread_cond_init(&p->all_idle, NULL);
        p->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        if (p->efd < 0) {
                r = negative_errno();
                goto fail;
        }
        r = sd_event_add_io(e, &p->efd_source, p->efd, EPOLLIN, on_completed, p);
        if (r < 0)
                goto fail;
        /* Before bus messages: a finished job completes a request in flight. */
        (void) sd_event_source_set_priority(p->efd_source, SD_EVENT_PRIORITY_NORMAL - 10);
        *ret = p;
        return 0;
fail:
        job_pool_free(p, 0);
        return r;
}

static int submit(JobPool *p, uid_t owner, bool cleanup, uint64_t deadline_usec, job_run_t run,
                  job_expired_t expired, job_done_t done, void *data) {
        Job *j;
        int r;

        assert(p && run && done);
        assert(deadline_usec == 0 || expired);
        if (owner != 0 && !cleanup && uid_counts_get(&p->owners, owner) >= p->limits.max_per_owner)
                return -EAGAIN;
        if (p->n_jobs >= p->limits.max_queued + p->limits.max_threads + p->limits.reserve_threads && owner != 0 &&
            !cleanup)
                return -EAGAIN;
        j = calloc(1, sizeof(*j));
        if (!j)
                return -ENOMEM;
        *j = (Job) { .pool = p, .owner = owner, .run = run, .expired_cb = expired, .done = done, .data = data };
        if (deadline_usec > 0) {
                r = sd_event_add_time_relative(p->event, &j->timer, CLOCK_MONOTONIC, deadline_usec, 0, on_deadline,
                                               j);
                if (r < 0) {
                        free(j);
                        return r;
                }
        }
        r = uid_counts_inc(&p->owners, owner);
        if (r < 0) {
                sd_event_source_disable_unref(j->timer);
                free(j);
                return r;
        }
        p->n_jobs++;

        pthread_mutex_lock(&p->lock);
        if (owner == 0) {
                if (p->root_tail)
                        p->root_tail->next = j;
                else
                        p->root_head = j;
                p->root_tail = j;
        } else {
                if (p->tail)
                        p->tail->next = j;
                else
                        p->head = j;
                p->tail = j;
        }
        p->n_queued++;
        /* A thread for it, unless an idle one will take it. Root's jobs may
         * grow the pool into the reserve. */
        unsigned cap = p->limits.max_threads + (owner == 0 ? p->limits.reserve_threads : 0);
        if (p->n_idle < p->n_queued && p->n_threads < cap)
                (void) spawn_thread(p); /* on failure, a running thread takes it later */
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
        return 0;
}

int job_submit(JobPool *p, uid_t owner, uint64_t deadline_usec, job_run_t run, job_expired_t expired,
               job_done_t done, void *data) {
        return submit(p, owner, false, deadline_usec, run, expired, done, data);
}

int job_submit_cleanup(JobPool *p, uid_t owner, job_run_t run, job_done_t done, void *data) {
        return submit(p, owner, true, 0, run, NULL, done, data);
}

JobPool *job_pool_free(JobPool *p, uint64_t wait_usec) {
        Job *queued = NULL;
        struct timespec until;

        if (!p)
                return NULL;
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        /* Take the queues: they never ran. */
        for (Job **q = &p->root_head; q; q = q == &p->root_head ? &p->head : NULL)
                while (*q) {
                        Job *j = *q;
                        *q = j->next;
                        j->next = queued;
                        queued = j;
                }
        p->root_tail = p->tail = NULL;
        p->n_queued = 0;
        pthread_cond_broadcast(&p->cond);
        until = realtime_after_usec(wait_usec);
        /* Idle threads leave at once; running ones once their job returns. */
        while (p->n_threads > 0 && pthread_cond_timedwait(&p->all_idle, &p->lock, &until) == 0)
                ;
        pthread_mutex_unlock(&p->lock);

        while (queued) {
                Job *j = queued;
                queued = j->next;
                finish(j, JOB_CANCELLED);
        }
        if (p->efd >= 0)
                (void) on_completed(NULL, p->efd, 0, p);

        pthread_mutex_lock(&p->lock);
        bool stuck = p->n_threads > 0;
        pthread_mutex_unlock(&p->lock);
        sd_event_source_disable_unref(p->efd_source);
        if (stuck)
                /* Threads still in the kernel use the pool when they return:
                 * leave it to them and to the process's exit. */
                return NULL;
        safe_close(p->efd);
        pthread_cond_destroy(&p->cond);
        pthread_cond_destroy(&p->all_idle);
        pthread_mutex_destroy(&p->lock);
        uid_counts_clear(&p->owners);
        sd_event_unref(p->event);
        free(p);
        return NULL;
}
