/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Who created which attachment, kept in the state directory so that a
 * restarted (or kill -9'ed) daemon knows it again.
 *
 * One file per attachment, named "loopN-DISKSEQ": the kernel's diskseq is
 * never reused, so a later attachment of the same loopN cannot inherit the
 * owner of an earlier one. Files are written to a temporary name and
 * renamed into place, so a reader sees a whole record or none.
 *
 * A create writes an intent record ("pending-DEV-INO-N", keyed by the
 * backing file's identity) before it asks the kernel for a device and
 * renames it to the final record's name after: a kill -9 between the two
 * leaves the intent, and the restart adopts the device bound to that
 * backing file. The rename is one syscall where writing a second file and
 * dropping the first took five; the record then keeps its "backing=" line,
 * which a record's reader ignores.
 *
 * No fsync: records live on tmpfs (/run) and describe kernel state that
 * does not survive a power loss either; kill -9 does not lose page cache.
 */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

typedef struct OwnerStore OwnerStore;

typedef struct OwnerRecord {
        uint32_t number;
        uint64_t diskseq;
        uid_t uid;
        char *bound_to;      /* the caller's binding key (its unique bus name), or NULL */
        dev_t backing_dev;   /* identity of the backing file; 0 if the record predates it */
        uint64_t backing_ino;
} OwnerRecord;

typedef struct OwnerIntent {
        char *id;           /* file name, for owner_store_drop_intent() */
        dev_t backing_dev;
        uint64_t backing_ino;
        uid_t uid;
        char *bound_to;
} OwnerIntent;

/* Opens (and creates, 0700) the directory. */
int owner_store_open(const char *dir, OwnerStore **ret);
OwnerStore *owner_store_free(OwnerStore *s);
DEFINE_POINTER_CLEANUP(OwnerStore, owner_store_free)

int owner_store_put(OwnerStore *s, const OwnerRecord *r);
int owner_store_delete(OwnerStore *s, uint32_t number, uint64_t diskseq);

/* Writes an intent; *ret_id (malloc'ed) names it for drop. Safe to call
 * from any thread; everything else belongs to one. */
int owner_store_put_intent(OwnerStore *s, const OwnerIntent *i, char **ret_id);
int owner_store_drop_intent(OwnerStore *s, const char *id);
/* The intent becomes the record of attachment (number, diskseq), with the
 * uid and bound name the intent was written with. */
int owner_store_commit_intent(OwnerStore *s, const char *id, uint32_t number, uint64_t diskseq);

/* Everything on disk. Malformed files are removed and skipped. */
int owner_store_load(OwnerStore *s, OwnerRecord **ret_records, size_t *ret_n,
                     OwnerIntent **ret_intents, size_t *ret_n_intents);

void owner_record_done(OwnerRecord *r);
void owner_intent_done(OwnerIntent *i);
void owner_records_free(OwnerRecord *r, size_t n);
void owner_intents_free(OwnerIntent *i, size_t n);

/* Strict: what a binding key may look like (a bus unique name, ":1.42"). */
bool unique_name_is_valid(const char *s);
