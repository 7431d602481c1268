/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Counts per uid, for the limits loopd keeps per caller (requests in
 * flight, helpers, kernel jobs, quota reservations). Few uids are active
 * at once, so a small array searched linearly; a uid whose count drops to
 * zero leaves it.
 */

#include <stddef.h>
#include <sys/types.h>

typedef struct UidCounts {
        struct UidCountEntry {
                uid_t uid;
                unsigned n;
        } *v;
        size_t n;
} UidCounts;

unsigned uid_counts_get(const UidCounts *c, uid_t uid);
/* +1; -ENOMEM. */
int uid_counts_inc(UidCounts *c, uid_t uid);
/* -1; the count must be positive. */
void uid_counts_dec(UidCounts *c, uid_t uid);
void uid_counts_clear(UidCounts *c);
