/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include "bus-sender.h"
#include "util.h"

static int query_uid(sd_bus_message *m, uid_t *ret) {
        _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *creds = NULL;
        int r;

        r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID, &creds);
        if (r < 0)
                return r;
        return sd_bus_creds_get_euid(creds, ret);
}

int sender_cache_uid(SenderCache *cache, sd_bus_message *m, uid_t *ret) {
        const char *sender = sd_bus_message_get_sender(m);
        size_t victim = 0, len;
        uid_t uid;
        int r;

        /* No sender: a direct connection without a bus; sd-bus answers for
         * the peer itself. */
        len = sender ? strlen(sender) : SENDER_CACHE_NAME_MAX;
        if (len >= SENDER_CACHE_NAME_MAX || sender[0] != ':')
                return query_uid(m, ret);

        for (size_t i = 0; i < SENDER_CACHE_SIZE; i++) {
                if (cache->entries[i].used != 0 && strcmp(cache->entries[i].name, sender) == 0) {
                        cache->entries[i].used = ++cache->clock;
                        *ret = cache->entries[i].uid;
                        return 0;
                }
                if (cache->entries[i].used < cache->entries[victim].used)
                        victim = i;
        }

        r = query_uid(m, &uid);
        if (r < 0)
                return r;
        memcpy(cache->entries[victim].name, sender, len + 1);
        cache->entries[victim].uid = uid;
        cache->entries[victim].used = ++cache->clock;
        *ret = uid;
        return 0;
}
