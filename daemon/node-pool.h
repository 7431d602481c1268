/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Keeps a few free loop nodes ready and deletes surplus ones, on a thread
 * of its own.
 *
 * Measured on a 2-core VM with kernel 6.18: LOOP_CTL_GET_FREE costs
 * ~250 µs when it must allocate a node but <1 µs when a free one exists,
 * and LOOP_CTL_REMOVE takes ~47 ms (del_gendisk waits for RCU grace
 * periods). So a detach leaves its node in place, and this worker trims
 * the pool to `max_spare` and refills it to `min_spare` in the background,
 * never on the bus thread.
 *
 * LOOP_CTL_GET_FREE hands out the lowest-numbered free node, and the worker
 * only ever deletes the highest-numbered surplus ones, keeping `min_spare`
 * lower ones, so it does not pull a node from under a create. If it ever
 * does, the core's create moves on to another node (ENOENT/ENXIO), and a
 * node a creator already holds makes LOOP_CTL_REMOVE fail with EBUSY.
 */

#include <stdint.h>

#include "util.h"

typedef struct NodePool NodePool;

/* Does not take ownership of control_fd. Starts the thread. */
int node_pool_new(int control_fd, unsigned min_spare, unsigned max_spare, NodePool **ret);
/* Stops and joins the thread (waits for a deletion in progress). */
NodePool *node_pool_free(NodePool *p);
DEFINE_POINTER_CLEANUP(NodePool, node_pool_free)

/* Ask for a rebalance soon; cheap, never blocks on the kernel. */
void node_pool_kick(NodePool *p);

