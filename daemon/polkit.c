/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "errors.h"
#include "polkit.h"

struct PolkitQuery {
        sd_bus_slot *slot;
        char *action;
        bool interactive;
        polkit_done_t done;
        void *userdata;
};

PolkitQuery *polkit_query_cancel(PolkitQuery *q) {
        if (!q)
                return NULL;
        sd_bus_slot_unref(q->slot);
        free(q->action);
        free(q);
        return NULL;
}

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        PolkitQuery *q = userdata;
        const sd_bus_error *e;
        int authorized = 0, challenge = 0, r;

        e = sd_bus_message_get_error(reply);
        if (e) {
                if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                        sd_bus_error_setf(&error, DBUS_ERROR_ACCESS_DENIED,
                                          "Not authorized: polkit (org.freedesktop.PolicyKit1) is not running, "
                                          "so only root may do this. Start polkitd, or run as root.");
                else if (sd_bus_error_has_names(e, SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_TIMEOUT))
                        sd_bus_error_setf(&error, DBUS_ERROR_TIMEOUT,
                                          "polkit did not answer whether %s is allowed in time; "
                                          "check that polkitd is healthy and try again.", q->action);
                else
                        sd_bus_error_setf(&error, DBUS_ERROR_ACCESS_DENIED,
                                          "Not authorized: polkit could not decide on %s (%s: %s).",
                                          q->action, e->name, strempty(e->message));
                goto done;
        }
        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0) {
                sd_bus_error_setf(&error, DBUS_ERROR_ACCESS_DENIED,
                                  "Not authorized: polkit's answer on %s could not be read.", q->action);
                goto done;
        }
        if (authorized)
                goto done;
        if (challenge && !q->interactive)
                sd_bus_error_setf(&error, DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                  "Authentication is required for %s; call again allowing interactive "
                                  "authorization (loopctl does so on a terminal).", q->action);
        else
                sd_bus_error_setf(&error, DBUS_ERROR_ACCESS_DENIED,
                                  "Not authorized: the system's polkit policy does not allow %s to this user.",
                                  q->action);
done:;
        polkit_done_t done = q->done;
        void *u = q->userdata;
        bool allowed = authorized && !sd_bus_error_is_set(&error);
        polkit_query_cancel(q);
        done(allowed, allowed ? NULL : &error, u);
        return 0;
}

int polkit_check(sd_bus_message *request, uid_t uid, const char *action, const char *const *details,
                 uint64_t timeout_usec, polkit_done_t done, void *userdata, PolkitQuery **ret) {
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL;
        PolkitQuery *q;
        const char *sender;
        int r;

        if (uid == 0)
                return 1;

        sender = sd_bus_message_get_sender(request);
        if (!sender)
                return -EBADMSG;

        r = sd_bus_message_new_method_call(sd_bus_message_get_bus(request), &m, "org.freedesktop.PolicyKit1",
                                           "/org/freedesktop/PolicyKit1/Authority",
                                           "org.freedesktop.PolicyKit1.Authority", "CheckAuthorization");
        if (r < 0)
                return r;
        r = sd_bus_message_append(m, "(sa{sv})s", "system-bus-name", 1, "name", "s", sender, action);
        if (r < 0)
                return r;
        r = sd_bus_message_open_container(m, 'a', "{ss}");
        if (r < 0)
                return r;
        for (const char *const *k = details; k && k[0] && k[1]; k += 2) {
                r = sd_bus_message_append(m, "{ss}", k[0], k[1]);
                if (r < 0)
                        return r;
        }
        r = sd_bus_message_close_container(m);
        if (r < 0)
                return r;
        bool interactive = sd_bus_message_get_allow_interactive_authorization(request) > 0;
        r = sd_bus_message_append(m, "us", (uint32_t) (interactive ? 1 : 0), "");
        if (r < 0)
                return r;

        q = calloc(1, sizeof(*q));
        if (!q)
                return -ENOMEM;
        q->action = strdup(action);
        q->interactive = interactive;
        q->done = done;
        q->userdata = userdata;
        if (!q->action) {
                polkit_query_cancel(q);
                return -ENOMEM;
        }
        r = sd_bus_call_async(sd_bus_message_get_bus(request), &q->slot, m, on_reply, q, timeout_usec);
        if (r < 0) {
                polkit_query_cancel(q);
                return r;
        }
        *ret = q;
        return 0;
}
