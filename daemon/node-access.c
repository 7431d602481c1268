/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "node-access.h"
#include "util.h"

/* The kernel's POSIX ACL xattr format (include/uapi/linux/posix_acl_xattr.h). */
#define ACL_XATTR "system.posix_acl_access"
#define ACL_XATTR_VERSION 0x0002
#define ACL_USER_OBJ 0x01
#define ACL_USER 0x02
#define ACL_GROUP_OBJ 0x04
#define ACL_GROUP 0x08
#define ACL_MASK 0x10
#define ACL_OTHER 0x20
#define ACL_UNDEFINED_ID ((uint32_t) -1)
#define ACL_ENTRIES_MAX 64

typedef struct __attribute__((packed)) AclEntryRaw {
        uint16_t tag, perm;
        uint32_t id;
} AclEntryRaw;

typedef struct AclEntry {
        uint16_t tag, perm;
        uint32_t id;
} AclEntry;

/* Reads the node's ACL, or builds the base entries from its mode. */
static int acl_read(const char *path, AclEntry *e, unsigned *n) {
        uint8_t buf[4 + ACL_ENTRIES_MAX * sizeof(AclEntryRaw)];
        struct stat st;
        ssize_t k;

        k = getxattr(path, ACL_XATTR, buf, sizeof(buf));
        if (k < 0 && errno != ENODATA && errno != EOPNOTSUPP)
                return negative_errno();
        if (k < 0) {
                if (lstat(path, &st) < 0)
                        return negative_errno();
                if (!S_ISBLK(st.st_mode))
                        return -ENOTBLK;
                e[0] = (AclEntry) { ACL_USER_OBJ, (st.st_mode >> 6) & 7, ACL_UNDEFINED_ID };
                e[1] = (AclEntry) { ACL_GROUP_OBJ, (st.st_mode >> 3) & 7, ACL_UNDEFINED_ID };
                e[2] = (AclEntry) { ACL_OTHER, st.st_mode & 7, ACL_UNDEFINED_ID };
                *n = 3;
                return 0;
        }
        if (k < 4 || (k - 4) % sizeof(AclEntryRaw) != 0)
                return -EBADMSG;
        uint32_t version;
        memcpy(&version, buf, 4);
        if (le32toh(version) != ACL_XATTR_VERSION)
                return -EBADMSG;
        *n = (unsigned) ((k - 4) / sizeof(AclEntryRaw));
        for (unsigned i = 0; i < *n; i++) {
                AclEntryRaw r;
                memcpy(&r, buf + 4 + i * sizeof(r), sizeof(r));
                e[i] = (AclEntry) { le16toh(r.tag), le16toh(r.perm), le32toh(r.id) };
        }
        return 0;
}

static int cmp_entry(const void *a, const void *b) {
        const AclEntry *x = a, *y = b;

        if (x->tag != y->tag)
                return x->tag < y->tag ? -1 : 1;
        return x->id < y->id ? -1 : x->id > y->id;
}

static int acl_write(const char *path, AclEntry *e, unsigned n) {
        uint8_t buf[4 + ACL_ENTRIES_MAX * sizeof(AclEntryRaw)];
        uint32_t version = htole32(ACL_XATTR_VERSION);

        qsort(e, n, sizeof(AclEntry), cmp_entry);
        memcpy(buf, &version, 4);
        for (unsigned i = 0; i < n; i++) {
                AclEntryRaw r = { htole16(e[i].tag), htole16(e[i].perm), htole32(e[i].id) };
                memcpy(buf + 4 + i * sizeof(r), &r, sizeof(r));
        }
        if (setxattr(path, ACL_XATTR, buf, 4 + n * sizeof(AclEntryRaw), 0) < 0)
                return negative_errno();
        return 0;
}

/* 1 when it wrote, 0 when there was nothing to withdraw. */
static int set_one(const char *path, uid_t uid, bool writable) {
        AclEntry e[ACL_ENTRIES_MAX + 2];
        unsigned n = 0, k = 0, mask = 0, users = 0;
        bool named = false;
        int r;

        r = acl_read(path, e, &n);
        if (r < 0)
                return r;
        /* Keep everything but named users and the mask; add ours. */
        for (unsigned i = 0; i < n; i++) {
                users += e[i].tag == ACL_USER;
                if (e[i].tag == ACL_USER || e[i].tag == ACL_MASK)
                        continue;
                if (e[i].tag == ACL_GROUP)
                        named = true;
                e[k++] = e[i];
        }
        n = k;
        if (uid == NODE_ACCESS_NONE && users == 0)
                return 0; /* nobody's entry to withdraw: no write (every create of root's asks) */
        if (uid != NODE_ACCESS_NONE) {
                e[n++] = (AclEntry) { ACL_USER, writable ? 6 : 4, (uint32_t) uid };
                named = true;
        }
        if (named) {
                for (unsigned i = 0; i < n; i++)
                        if (e[i].tag == ACL_GROUP_OBJ || e[i].tag == ACL_USER || e[i].tag == ACL_GROUP)
                                mask |= e[i].perm;
                e[n++] = (AclEntry) { ACL_MASK, (uint16_t) mask, ACL_UNDEFINED_ID };
        }
        r = acl_write(path, e, n);
        return r < 0 ? r : 1;
}

int node_access_set(uint32_t number, uid_t uid, bool writable) {
        char path[64], dir[64], prefix[32];
        DIR *d;
        struct dirent *de;
        int r;

        (void) snprintf(path, sizeof(path), "/dev/loop%" PRIu32, number);
        r = set_one(path, uid, writable);
        if (r < 0)
                return r;
        /* Partition nodes are made afresh for each attachment and get an
         * entry only after the whole disk has one: none there, none on
         * them to withdraw. */
        if (r == 0 && uid == NODE_ACCESS_NONE)
                return 0;
        r = 0;
        /* Partition nodes, where the kernel made any. */
        (void) snprintf(dir, sizeof(dir), "/sys/block/loop%" PRIu32, number);
        (void) snprintf(prefix, sizeof(prefix), "loop%" PRIu32 "p", number);
        d = opendir(dir);
        if (!d)
                return 0;
        while ((de = readdir(d)))
                if (strncmp(de->d_name, prefix, strlen(prefix)) == 0) {
                        (void) snprintf(path, sizeof(path), "/dev/%.40s", de->d_name);
                        int k = set_one(path, uid, writable);
                        if (k < 0 && k != -ENOENT && r == 0)
                                r = k;
                }
        closedir(d);
        return r;
}

int node_access_get(const char *name, uid_t *users, unsigned *perms, unsigned max) {
        AclEntry e[ACL_ENTRIES_MAX];
        char path[64];
        unsigned n = 0, k = 0, mask = 7;
        int r;

        (void) snprintf(path, sizeof(path), "/dev/%.40s", name);
        r = acl_read(path, e, &n);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < n; i++)
                if (e[i].tag == ACL_MASK)
                        mask = e[i].perm;
        for (unsigned i = 0; i < n; i++) {
                if (e[i].tag != ACL_USER)
                        continue;
                if (k < max) {
                        if (users)
                                users[k] = (uid_t) e[i].id;
                        if (perms)
                                perms[k] = e[i].perm & mask; /* what the entry is worth */
                }
                k++;
        }
        return (int) k;
}
