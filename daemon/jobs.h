/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Kernel work off the event loop. LOOP_CONFIGURE sizes the device from the
 * backing file (vfs_getattr), LOOP_SET_CAPACITY does the same, closing the
 * last fd of an autoclear device flushes its I/O, LOOP_GET_STATUS64 stats
 * the backing file, and opening a node may rescan its partitions: each can
 * wait forever on a FUSE server that stops answering or a dead NFS server.
 * Such work runs here, on a bounded set of threads, while the event loop
 * keeps serving everyone else.
 *
 * A job has an owner uid, and limits are per owner: at most
 * `max_running_per_owner` of a uid's jobs run at once, the others wait in
 * the queue for one of them to return; a uid may have `max_per_owner` jobs
 * queued and running (root's jobs are not limited per owner); ordinary
 * jobs share `max_threads` threads, and root's jobs may use
 * `reserve_threads` more. So jobs stuck on a hung file system of some user
 * hold that user's few threads, never everyone's, and never keep root
 * waiting. A stuck job stays charged to its owner until its thread really
 * returns.
 *
 * Cleanup (closing a device's last fd flushes its dirty pages to the
 * backing file, and may hang on it just the same) is charged to the
 * device's owner like any of its jobs, and is never refused.
 *
 * Deadlines: a job may be given one. When it passes, `expired` runs on the
 * event loop (the caller is told it timed out) while the thread goes on;
 * `done` still runs when the thread returns, with JOB_LATE, so that what a
 * late job made (a device nobody waits for) is undone.
 *
 * run() gets only the job's own data and calls only the loop core: no
 * daemon state is touched off the event loop, so nothing needs a lock but
 * the pool's own queues.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <systemd/sd-event.h>

#include "util.h"

typedef struct JobPool JobPool;

typedef struct JobPoolLimits {
        unsigned max_threads;     /* threads for ordinary jobs */
        unsigned reserve_threads; /* further threads, for root's jobs only */
        unsigned max_running_per_owner; /* jobs of one non-root uid on threads at once */
        unsigned max_per_owner;   /* running + queued jobs of one non-root uid */
        unsigned max_queued;      /* jobs waiting for a thread, all owners */
        unsigned warm_threads;    /* idle threads kept ready */
} JobPoolLimits;

typedef enum JobResult {
        JOB_DONE,      /* run() returned before any deadline */
        JOB_LATE,      /* run() returned after `expired` was called */
        JOB_CANCELLED, /* the pool was freed before run() started */
} JobResult;

typedef void (*job_run_t)(void *data);
typedef void (*job_expired_t)(void *data);
typedef void (*job_done_t)(void *data, JobResult result);

int job_pool_new(sd_event *e, const JobPoolLimits *limits, JobPool **ret);
/* Cancels queued jobs (done(JOB_CANCELLED)), waits up to `wait_usec` for
 * running ones (their done() runs), then leaves threads stuck in the kernel
 * behind: they hold nothing of the daemon's but their jobs' own fds. */
JobPool *job_pool_free(JobPool *p, uint64_t wait_usec);

/*
 * Queues run(data) for a worker thread. deadline_usec: relative, 0 for
 * none; `expired` may be NULL without a deadline. done() is always called
 * exactly once, on the event loop: with JOB_CANCELLED also when the deadline
 * passed before a thread took the job (it never runs then). -EAGAIN when a
 * limit refuses the job (nothing is called then).
 */
int job_submit(JobPool *p, uid_t owner, uint64_t deadline_usec, job_run_t run, job_expired_t expired,
               job_done_t done, void *data);
/* The same, for undoing what the owner had: no limit refuses it (what it
 * cleans up was bounded when it was made), no deadline. */
int job_submit_cleanup(JobPool *p, uid_t owner, job_run_t run, job_done_t done, void *data);

/* run(data) on a thread of its own, outside any pool, left behind if the
 * kernel keeps it (work that must not wait on the event loop when the pool
 * is gone, at exit). run() frees what it must. Without a thread, runs it
 * here. */
void job_run_orphan(job_run_t run, void *data);

/* Jobs of `owner` queued or running (stuck ones included). */
unsigned job_pool_owner_jobs(JobPool *p, uid_t owner);
/* All jobs queued or running. */
unsigned job_pool_jobs(JobPool *p);
