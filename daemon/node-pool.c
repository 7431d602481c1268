/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <time.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "loop-device.h"
#include "node-pool.h"

struct NodePool {
        int control_fd;
        unsigned min_spare, max_spare;
        pthread_t thread;
        pthread_mutex_t lock;
        pthread_cond_t cond;
        bool kicked, stopping;
};

/* The free nodes, ascending. Returns count or -errno. */
static int list_free(uint32_t **ret) {
        _cleanup_(freep) uint32_t *all = NULL;
        uint32_t *free_nodes;
        int n, k = 0;

        n = loop_list_numbers(&all);
        if (n < 0)
                return n;
        free_nodes = calloc(n > 0 ? (size_t) n : 1, sizeof(uint32_t));
        if (!free_nodes)
                return -ENOMEM;
        for (int i = 0; i < n; i++)
                if (loop_node_bound(all[i]) == 0)
                        free_nodes[k++] = all[i];
        *ret = free_nodes;
        return k;
}

static void rebalance(NodePool *p) {
        _cleanup_(freep) uint32_t *free_nodes = NULL;
        int n;

        n = list_free(&free_nodes);
        if (n < 0)
                return;
        for (int i = n; i < (int) p->min_spare; i++)
                (void) loop_control_add(p->control_fd, -1); /* the next rebalance tries again */
        /* Highest numbers first; stop early when asked to. */
        for (int i = n - 1; i >= (int) p->max_spare; i--) {
                bool stop;
                pthread_mutex_lock(&p->lock);
                stop = p->stopping;
                pthread_mutex_unlock(&p->lock);
                if (stop)
                        break;
                (void) loop_control_remove(p->control_fd, free_nodes[i]); /* EBUSY: somebody took it */
        }
}

/* Kicks within this window are served by one rebalance: a rebalance reads
 * every node's sysfs, and a create/remove storm kicks on every call. */
#define REBALANCE_DELAY_USEC (200 * 1000)

static void *worker(void *arg) {
        NodePool *p = arg;

        for (;;) {
                struct timespec until;

                pthread_mutex_lock(&p->lock);
                while (!p->kicked && !p->stopping)
                        pthread_cond_wait(&p->cond, &p->lock);
                /* Let the burst that kicked us settle first. */
                until = realtime_after_usec(REBALANCE_DELAY_USEC);
                while (!p->stopping && pthread_cond_timedwait(&p->cond, &p->lock, &until) == 0)
                        ;
                if (p->stopping) {
                        pthread_mutex_unlock(&p->lock);
                        return NULL;
                }
                p->kicked = false;
                pthread_mutex_unlock(&p->lock);
                rebalance(p);
        }
}

int node_pool_new(int control_fd, unsigned min_spare, unsigned max_spare, NodePool **ret) {
        NodePool *p;
        sigset_t all, old;
        int r;

        if (max_spare < min_spare)
                return -EINVAL;
        p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->control_fd = control_fd;
        p->min_spare = min_spare;
        p->max_spare = max_spare;
        pthread_mutex_init(&p->lock, NULL);
        pthread_cond_init(&p->cond, NULL);
        p->kicked = true; /* fill the pool at start */

        /* The thread must not take the signals sd-event handles. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        r = -pthread_create(&p->thread, NULL, worker, p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r < 0) {
                pthread_cond_destroy(&p->cond);
                pthread_mutex_destroy(&p->lock);
                free(p);
                return r;
        }
        *ret = p;
        return 0;
}

void node_pool_kick(NodePool *p) {
        if (!p)
                return;
        pthread_mutex_lock(&p->lock);
        /* Once kicked, the worker sleeps out its delay and then rebalances
         * anyway: waking it again would only cost both threads a context
         * switch per create and remove. */
        if (!p->kicked) {
                p->kicked = true;
                pthread_cond_signal(&p->cond);
        }
        pthread_mutex_unlock(&p->lock);
}

NodePool *node_pool_free(NodePool *p) {
        if (!p)
                return NULL;
        pthread_mutex_lock(&p->lock);
        p->stopping = true;
        pthread_cond_signal(&p->cond);
        pthread_mutex_unlock(&p->lock);
        pthread_join(p->thread, NULL);
        pthread_cond_destroy(&p->cond);
        pthread_mutex_destroy(&p->lock);
        free(p);
        return NULL;
}
