/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>

#include "uid-count.h"

static struct UidCountEntry *find(const UidCounts *c, uid_t uid) {
        for (size_t i = 0; i < c->n; i++)
                if (c->v[i].uid == uid)
                        return &c->v[i];
        return NULL;
}

unsigned uid_counts_get(const UidCounts *c, uid_t uid) {
        struct UidCountEntry *e = find(c, uid);
        return e ? e->n : 0;
}

int uid_counts_inc(UidCounts *c, uid_t uid) {
        struct UidCountEntry *e = find(c, uid), *v;

        if (!e) {
                v = reallocarray(c->v, c->n + 1, sizeof(*v));
                if (!v)
                        return -ENOMEM;
                c->v = v;
                e = &c->v[c->n++];
                *e = (struct UidCountEntry) { .uid = uid };
        }
        e->n++;
        return 0;
}

void uid_counts_dec(UidCounts *c, uid_t uid) {
        struct UidCountEntry *e = find(c, uid);

        assert(e && e->n > 0);
        if (--e->n == 0) {
                *e = c->v[--c->n];
                if (c->n == 0) {
                        free(c->v);
                        c->v = NULL;
                }
        }
}

void uid_counts_clear(UidCounts *c) {
        free(c->v);
        *c = (UidCounts) { 0 };
}
