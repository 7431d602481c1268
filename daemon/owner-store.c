/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "owner-store.h"

#define RECORD_MAX 512

struct OwnerStore {
        int dir_fd;
        /* Intents are written from the job pool's threads: the counter that
         * makes their names unique is the store's only mutable state. */
        _Atomic uint64_t intent_counter;
};

int owner_store_open(const char *dir, OwnerStore **ret) {
        _cleanup_(closep) int fd = -1;
        OwnerStore *s;

        if (mkdir(dir, 0700) < 0 && errno != EEXIST)
                return negative_errno();
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->dir_fd = TAKE_FD(fd);
        s->intent_counter = (uint64_t) getpid() << 32;
        *ret = s;
        return 0;
}

OwnerStore *owner_store_free(OwnerStore *s) {
        if (!s)
                return NULL;
        safe_close(s->dir_fd);
        free(s);
        return NULL;
}

bool unique_name_is_valid(const char *s) {
        size_t n;

        if (!s || s[0] != ':')
                return false;
        n = strlen(s);
        if (n < 2 || n > 255)
                return false;
        for (const char *p = s + 1; *p; p++)
                if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                      *p == '.' || *p == '_' || *p == '-'))
                        return false;
        return true;
}

/* Write `text` to `name` atomically: temp file, then rename. */
static int write_atomic(int dir_fd, const char *name, const char *text) {
        char tmp[96];
        _cleanup_(closep) int fd = -1;
        size_t len = strlen(text);
        ssize_t n;

        snprintf(tmp, sizeof(tmp), ".#%s", name);
        fd = openat(dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0)
                return negative_errno();
        n = write(fd, text, len);
        if (n < 0 || (size_t) n != len) {
                int r = n < 0 ? negative_errno() : -ENOSPC; /* a short write is a full disk */
                (void) unlinkat(dir_fd, tmp, 0);
                return r;
        }
        if (renameat(dir_fd, tmp, dir_fd, name) < 0) {
                int r = negative_errno();
                (void) unlinkat(dir_fd, tmp, 0);
                return r;
        }
        return 0;
}

static void record_name(char *buf, size_t size, uint32_t number, uint64_t diskseq) {
        snprintf(buf, size, "loop%" PRIu32 "-%" PRIu64, number, diskseq);
}

int owner_store_put(OwnerStore *s, const OwnerRecord *r) {
        char name[64], text[RECORD_MAX];

        if (r->bound_to && !unique_name_is_valid(r->bound_to))
                return -EINVAL;
        record_name(name, sizeof(name), r->number, r->diskseq);
        snprintf(text, sizeof(text), "uid=%u\nbound=%s\nbacking=%" PRIu64 ":%" PRIu64 "\n", (unsigned) r->uid,
                 strempty(r->bound_to), (uint64_t) r->backing_dev, r->backing_ino);
        return write_atomic(s->dir_fd, name, text);
}

int owner_store_delete(OwnerStore *s, uint32_t number, uint64_t diskseq) {
        char name[64];

        record_name(name, sizeof(name), number, diskseq);
        if (unlinkat(s->dir_fd, name, 0) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}

int owner_store_put_intent(OwnerStore *s, const OwnerIntent *i, char **ret_id) {
        char name[96], text[RECORD_MAX];
        int r;

        if (i->bound_to && !unique_name_is_valid(i->bound_to))
                return -EINVAL;
        snprintf(name, sizeof(name), "pending-%" PRIu64 "-%" PRIu64 "-%" PRIu64,
                 (uint64_t) i->backing_dev, i->backing_ino, (uint64_t) ++s->intent_counter);
        snprintf(text, sizeof(text), "uid=%u\nbound=%s\nbacking=%" PRIu64 ":%" PRIu64 "\n",
                 (unsigned) i->uid, strempty(i->bound_to), (uint64_t) i->backing_dev, i->backing_ino);
        r = write_atomic(s->dir_fd, name, text);
        if (r < 0)
                return r;
        *ret_id = strdup(name);
        if (!*ret_id) {
                (void) unlinkat(s->dir_fd, name, 0);
                return -ENOMEM;
        }
        return 0;
}

static bool intent_id_is_valid(const char *id) {
        return id && strncmp(id, "pending-", 8) == 0 && !strchr(id, '/');
}

int owner_store_commit_intent(OwnerStore *s, const char *id, uint32_t number, uint64_t diskseq) {
        char name[64];

        if (!intent_id_is_valid(id))
                return -EINVAL;
        record_name(name, sizeof(name), number, diskseq);
        if (renameat(s->dir_fd, id, s->dir_fd, name) < 0)
                return negative_errno();
        return 0;
}

int owner_store_drop_intent(OwnerStore *s, const char *id) {
        if (!intent_id_is_valid(id))
                return -EINVAL;
        if (unlinkat(s->dir_fd, id, 0) < 0 && errno != ENOENT)
                return negative_errno();
        return 0;
}

void owner_record_done(OwnerRecord *r) {
        free(r->bound_to);
        r->bound_to = NULL;
}

void owner_intent_done(OwnerIntent *i) {
        free(i->id);
        free(i->bound_to);
        i->id = i->bound_to = NULL;
}

void owner_records_free(OwnerRecord *r, size_t n) {
        for (size_t k = 0; k < n; k++)
                owner_record_done(&r[k]);
        free(r);
}

void owner_intents_free(OwnerIntent *i, size_t n) {
        for (size_t k = 0; k < n; k++)
                owner_intent_done(&i[k]);
        free(i);
}

/* Parses "uid=..\nbound=..\n[backing=D:I\n]"; the backing line is
 * required when `need_backing`. */
static int parse_body(const char *text, uid_t *uid, char **bound, dev_t *bdev, uint64_t *bino, bool need_backing) {
        unsigned long long u;
        const char *p;
        char *end;
        size_t len;

        if (strncmp(text, "uid=", 4) != 0)
                return -EBADMSG;
        errno = 0;
        u = strtoull(text + 4, &end, 10);
        if (errno || end == text + 4 || *end != '\n' || u >= UINT32_MAX)
                return -EBADMSG;
        *uid = (uid_t) u;
        p = end + 1;
        if (strncmp(p, "bound=", 6) != 0)
                return -EBADMSG;
        p += 6;
        len = strcspn(p, "\n");
        if (p[len] != '\n')
                return -EBADMSG;
        *bound = NULL;
        if (len > 0) {
                *bound = strndup(p, len);
                if (!*bound)
                        return -ENOMEM;
                if (!unique_name_is_valid(*bound)) {
                        free(*bound);
                        *bound = NULL;
                        return -EBADMSG;
                }
        }
        p += len + 1;
        unsigned long long d, i;
        if (sscanf(p, "backing=%llu:%llu\n", &d, &i) == 2) {
                *bdev = (dev_t) d;
                *bino = i;
        } else if (need_backing) {
                free(*bound);
                *bound = NULL;
                return -EBADMSG;
        }
        return 0;
}

int owner_store_load(OwnerStore *s, OwnerRecord **ret_records, size_t *ret_n,
                     OwnerIntent **ret_intents, size_t *ret_n_intents) {
        OwnerRecord *recs = NULL;
        OwnerIntent *ints = NULL;
        size_t nr = 0, ni = 0;
        struct dirent *de;
        DIR *d;
        int dfd, r = 0;

        dfd = fcntl(s->dir_fd, F_DUPFD_CLOEXEC, 3);
        if (dfd < 0)
                return negative_errno();
        d = fdopendir(dfd);
        if (!d) {
                safe_close(dfd);
                return negative_errno();
        }
        rewinddir(d);
        while ((de = readdir(d))) {
                char text[RECORD_MAX + 1];
                _cleanup_(closep) int fd = -1;
                ssize_t n;
                bool is_intent;
                unsigned number;
                unsigned long long seq;
                char tail;

                if (de->d_name[0] == '.') {
                        /* A temp file of a write that was killed midway. */
                        if (strncmp(de->d_name, ".#", 2) == 0)
                                (void) unlinkat(s->dir_fd, de->d_name, 0);
                        continue;
                }
                is_intent = strncmp(de->d_name, "pending-", 8) == 0;
                if (!is_intent && sscanf(de->d_name, "loop%u-%llu%c", &number, &seq, &tail) != 2)
                        goto bad;

                fd = openat(s->dir_fd, de->d_name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
                if (fd < 0)
                        goto bad;
                n = read(fd, text, RECORD_MAX);
                if (n <= 0)
                        goto bad;
                text[n] = 0;

                if (is_intent) {
                        OwnerIntent it = { 0 };
                        OwnerIntent *grown;
                        if (parse_body(text, &it.uid, &it.bound_to, &it.backing_dev, &it.backing_ino, true) < 0)
                                goto bad;
                        it.id = strdup(de->d_name);
                        grown = reallocarray(ints, ni + 1, sizeof(*ints));
                        if (!it.id || !grown) {
                                if (grown)
                                        ints = grown;
                                owner_intent_done(&it);
                                r = -ENOMEM;
                                break;
                        }
                        ints = grown;
                        ints[ni++] = it;
                } else {
                        OwnerRecord rec = { .number = number, .diskseq = seq };
                        OwnerRecord *grown;
                        if (parse_body(text, &rec.uid, &rec.bound_to, &rec.backing_dev, &rec.backing_ino, false) < 0)
                                goto bad;
                        grown = reallocarray(recs, nr + 1, sizeof(*recs));
                        if (!grown) {
                                owner_record_done(&rec);
                                r = -ENOMEM;
                                break;
                        }
                        recs = grown;
                        recs[nr++] = rec;
                }
                continue;
        bad:
                (void) unlinkat(s->dir_fd, de->d_name, 0);
        }
        closedir(d);
        if (r < 0) {
                owner_records_free(recs, nr);
                owner_intents_free(ints, ni);
                return r;
        }
        *ret_records = recs;
        *ret_n = nr;
        *ret_intents = ints;
        *ret_n_intents = ni;
        return 0;
}
