/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * A rate per uid (a token bucket each): `rate` takes a second, `burst` may
 * be taken at once. For requests whose cost grows with what loopd serves
 * (GetManagedObjects describes every device): loopd answers the bus in
 * arrival order on one thread, so one uid's flood of them would delay
 * everyone's next call, root's included, by the whole flood's work.
 *
 * Few uids are active at once: a small array searched linearly; a uid whose
 * bucket is full again is forgotten, so it stays as small as the set of
 * uids asking now.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct UidBudget {
        unsigned rate;  /* per second */
        unsigned burst;
        struct UidBudgetEntry {
                uid_t uid;
                uint64_t tokens; /* in millionths */
                uint64_t at_usec;
        } *v;
        size_t n;
} UidBudget;

/* One from uid's bucket at now_usec (CLOCK_MONOTONIC): false when empty.
 * Allows on -ENOMEM (no bucket to keep): a bound, not a gate. */
bool uid_budget_take(UidBudget *b, uid_t uid, uint64_t now_usec);
void uid_budget_clear(UidBudget *b);
