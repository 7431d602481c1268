/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <stdlib.h>

#include "uid-budget.h"

#define UNIT 1000000ULL

static uint64_t refill(const UidBudget *b, const struct UidBudgetEntry *e, uint64_t now_usec) {
        uint64_t full = (uint64_t) b->burst * UNIT;
        uint64_t elapsed = now_usec > e->at_usec ? now_usec - e->at_usec : 0;
        /* elapsed µs × rate per second = millionths gained. */
        uint64_t gained = elapsed >= full ? full : elapsed * b->rate;

        return e->tokens + gained >= full ? full : e->tokens + gained;
}

bool uid_budget_take(UidBudget *b, uid_t uid, uint64_t now_usec) {
        struct UidBudgetEntry *e = NULL;
        uint64_t full = (uint64_t) b->burst * UNIT;

        /* Others whose bucket is full again are forgotten. */
        for (size_t i = 0; i < b->n;) {
                struct UidBudgetEntry *x = &b->v[i];

                x->tokens = refill(b, x, now_usec);
                x->at_usec = now_usec;
                if (x->uid != uid && x->tokens >= full)
                        *x = b->v[--b->n];
                else
                        i++;
        }
        for (size_t i = 0; i < b->n && !e; i++)
                if (b->v[i].uid == uid)
                        e = &b->v[i];
        if (!e) {
                struct UidBudgetEntry *v = reallocarray(b->v, b->n + 1, sizeof(*v));
                if (!v)
                        return true;
                b->v = v;
                e = &b->v[b->n++];
                *e = (struct UidBudgetEntry) { .uid = uid, .tokens = full, .at_usec = now_usec };
        }
        if (e->tokens < UNIT)
                return false;
        e->tokens -= UNIT;
        return true;
}

void uid_budget_clear(UidBudget *b) {
        free(b->v);
        b->v = NULL;
        b->n = 0;
}
