/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <string.h>

#include <systemd/sd-bus.h>

#include "bus-sender.h"
#include "util.h"

static int query(sd_bus_message *m, uid_t *ret_uid, pid_t *ret_pid) {
        SenderCreds creds;
        int r;

        if (!sd_bus_message_get_sender(m)) {
                /* A direct connection without a bus: sd-bus answers for the
                 * peer itself (SO_PEERCRED). */
                _cleanup_(sd_bus_creds_unrefp) sd_bus_creds *c = NULL;
                r = sd_bus_query_sender_creds(m, SD_BUS_CREDS_EUID | SD_BUS_CREDS_PID, &c);
                if (r < 0)
                        return r;
                if (sd_bus_creds_get_pid(c, ret_pid) < 0)
                        *ret_pid = 0;
                return sd_bus_creds_get_euid(c, ret_uid);
        }
        r = sender_credentials(m, &creds);
        if (r < 0 && r != -E2BIG)
                return r;
        *ret_uid = creds.uid;
        *ret_pid = creds.has_pid ? creds.pid : 0;
        return 0;
}

int sender_cache_lookup(SenderCache *cache, sd_bus_message *m, uid_t *ret_uid, pid_t *ret_pid) {
        const char *sender = sd_bus_message_get_sender(m);
        size_t victim = 0, len;
        uid_t uid;
        pid_t pid;
        int r;

        len = sender ? strlen(sender) : SENDER_CACHE_NAME_MAX;
        if (len >= SENDER_CACHE_NAME_MAX || sender[0] != ':')
                return query(m, ret_uid, ret_pid);

        for (size_t i = 0; i < SENDER_CACHE_SIZE; i++) {
                if (cache->entries[i].used != 0 && strcmp(cache->entries[i].name, sender) == 0) {
                        cache->entries[i].used = ++cache->clock;
                        *ret_uid = cache->entries[i].uid;
                        *ret_pid = cache->entries[i].pid;
                        return 0;
                }
                if (cache->entries[i].used < cache->entries[victim].used)
                        victim = i;
        }

        r = query(m, &uid, &pid);
        if (r < 0)
                return r;
        memcpy(cache->entries[victim].name, sender, len + 1);
        cache->entries[victim].uid = uid;
        cache->entries[victim].pid = pid;
        cache->entries[victim].used = ++cache->clock;
        *ret_uid = uid;
        *ret_pid = pid;
        return 0;
}

int sender_cache_uid(SenderCache *cache, sd_bus_message *m, uid_t *ret) {
        pid_t pid;
        return sender_cache_lookup(cache, m, ret, &pid);
}

int sender_credentials(sd_bus_message *m, SenderCreds *ret) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *reply = NULL;
        const char *sender = sd_bus_message_get_sender(m);
        bool has_uid = false;
        int r;

        *ret = (SenderCreds) { 0 };
        if (!sender)
                return -EBADMSG;
        r = sd_bus_call_method(sd_bus_message_get_bus(m), "org.freedesktop.DBus", "/org/freedesktop/DBus",
                               "org.freedesktop.DBus", "GetConnectionCredentials", &error, &reply, "s", sender);
        if (r < 0)
                return r;
        r = sd_bus_message_enter_container(reply, 'a', "{sv}");
        if (r < 0)
                return r;
        while ((r = sd_bus_message_enter_container(reply, 'e', "sv")) > 0) {
                const char *key;
                uint32_t v;

                r = sd_bus_message_read(reply, "s", &key);
                if (r < 0)
                        return r;
                if (strcmp(key, "UnixUserID") == 0) {
                        r = sd_bus_message_read(reply, "v", "u", &v);
                        ret->uid = (uid_t) v;
                        has_uid = r >= 0;
                } else if (strcmp(key, "ProcessID") == 0) {
                        r = sd_bus_message_read(reply, "v", "u", &v);
                        ret->pid = (pid_t) v;
                        ret->has_pid = r >= 0 && v > 0;
                } else if (strcmp(key, "UnixGroupIDs") == 0) {
                        r = sd_bus_message_enter_container(reply, 'v', "au");
                        if (r < 0)
                                return r;
                        r = sd_bus_message_enter_container(reply, 'a', "u");
                        if (r < 0)
                                return r;
                        while ((r = sd_bus_message_read(reply, "u", &v)) > 0) {
                                if (ret->n_groups >= SENDER_GROUPS_MAX)
                                        return -E2BIG;
                                ret->groups[ret->n_groups++] = (gid_t) v;
                        }
                        if (r < 0)
                                return r;
                        r = sd_bus_message_exit_container(reply);
                        if (r >= 0)
                                r = sd_bus_message_exit_container(reply);
                        ret->has_groups = r >= 0;
                } else
                        r = sd_bus_message_skip(reply, "v");
                if (r < 0)
                        return r;
                r = sd_bus_message_exit_container(reply);
                if (r < 0)
                        return r;
        }
        if (r < 0)
                return r;
        return has_uid ? 0 : -ENODATA;
}
