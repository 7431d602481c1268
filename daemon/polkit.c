/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "errors.h"
#include "polkit.h"

typedef struct UidQueue UidQueue;

struct PolkitQuery {
        Polkit *pk;
        sd_bus_message *call;  /* CheckAuthorization, built up front */
        sd_bus_slot *slot;     /* while in flight */
        UidQueue *queue;       /* while waiting */
        PolkitQuery *next;     /* in its uid's queue */
        uint64_t deadline;     /* CLOCK_MONOTONIC usec */
        char *action;
        bool interactive;
        polkit_done_t done;
        void *userdata;
};

/* One uid's waiting queries; the uids with any form a ring. */
struct UidQueue {
        uid_t uid;
        PolkitQuery *head, *tail;
        UidQueue *prev, *next;
};

struct Polkit {
        sd_bus *bus;
        unsigned max_in_flight, in_flight, queued;
        UidQueue *ring; /* the uid served next */
};

unsigned polkit_in_flight(Polkit *pk) {
        return pk->in_flight;
}

unsigned polkit_queued(Polkit *pk) {
        return pk->queued;
}

static void ring_unlink(Polkit *pk, UidQueue *u) {
        if (u->next == u)
                pk->ring = NULL;
        else {
                u->prev->next = u->next;
                u->next->prev = u->prev;
                if (pk->ring == u)
                        pk->ring = u->next;
        }
        free(u);
}

/* Takes q out of its uid's queue. */
static void dequeue(PolkitQuery *q) {
        UidQueue *u = q->queue;
        PolkitQuery **pp = &u->head, *prev = NULL;

        for (; *pp != q; prev = *pp, pp = &(*pp)->next)
                assert(*pp);
        *pp = q->next;
        if (u->tail == q)
                u->tail = prev;
        q->next = NULL;
        q->queue = NULL;
        q->pk->queued--;
        if (!u->head)
                ring_unlink(q->pk, u);
}

static int enqueue(Polkit *pk, PolkitQuery *q, uid_t uid) {
        UidQueue *u = NULL;

        if (pk->ring) {
                UidQueue *i = pk->ring;
                do {
                        if (i->uid == uid)
                                u = i;
                        i = i->next;
                } while (!u && i != pk->ring);
        }
        if (!u) {
                u = calloc(1, sizeof(*u));
                if (!u)
                        return -ENOMEM;
                u->uid = uid;
                if (pk->ring) {
                        /* Newcomers are served last in this round. */
                        u->next = pk->ring;
                        u->prev = pk->ring->prev;
                        u->prev->next = u;
                        pk->ring->prev = u;
                } else
                        pk->ring = u->next = u->prev = u;
        }
        if (u->tail)
                u->tail->next = q;
        else
                u->head = q;
        u->tail = q;
        q->queue = u;
        pk->queued++;
        return 0;
}

PolkitQuery *polkit_query_cancel(PolkitQuery *q) {
        Polkit *pk;

        if (!q)
                return NULL;
        pk = q->pk;
        if (q->queue)
                dequeue(q);
        if (q->slot) {
                q->slot = sd_bus_slot_unref(q->slot);
                pk->in_flight--;
        }
        sd_bus_message_unref(q->call);
        free(q->action);
        free(q);
        return NULL;
}

static void dispatch(Polkit *pk);

static void finish(PolkitQuery *q, bool allowed, const sd_bus_error *error) {
        polkit_done_t done = q->done;
        void *userdata = q->userdata;
        Polkit *pk = q->pk;

        polkit_query_cancel(q);
        done(allowed, allowed ? NULL : error, userdata);
        dispatch(pk);
}

static int on_reply(sd_bus_message *reply, void *userdata, sd_bus_error *ret_error) {
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        PolkitQuery *q = userdata;
        const sd_bus_error *e;
        int authorized = 0, challenge = 0, r;

        e = sd_bus_message_get_error(reply);
        if (e) {
                if (sd_bus_error_has_names(e, SD_BUS_ERROR_SERVICE_UNKNOWN, SD_BUS_ERROR_NAME_HAS_NO_OWNER))
                        sd_bus_error_setf(&error, LOOPD_DBUS_ERROR_ACCESS_DENIED,
                                          "Not authorized: polkit (org.freedesktop.PolicyKit1) is not running, "
                                          "so only root may do this. Start polkitd, or run as root.");
                else if (sd_bus_error_has_names(e, SD_BUS_ERROR_NO_REPLY, SD_BUS_ERROR_TIMEOUT))
                        sd_bus_error_setf(&error, LOOPD_DBUS_ERROR_TIMEOUT,
                                          "polkit did not answer whether %s is allowed in time; "
                                          "check that polkitd is healthy and try again.", q->action);
                else
                        sd_bus_error_setf(&error, LOOPD_DBUS_ERROR_ACCESS_DENIED,
                                          "Not authorized: polkit could not decide on %s (%s: %s).",
                                          q->action, e->name, strempty(e->message));
                goto done;
        }
        r = sd_bus_message_enter_container(reply, 'r', "bba{ss}");
        if (r >= 0)
                r = sd_bus_message_read(reply, "bb", &authorized, &challenge);
        if (r < 0) {
                sd_bus_error_setf(&error, LOOPD_DBUS_ERROR_ACCESS_DENIED,
                                  "Not authorized: polkit's answer on %s could not be read.", q->action);
                goto done;
        }
        if (authorized)
                goto done;
        if (challenge && !q->interactive)
                sd_bus_error_setf(&error, LOOPD_DBUS_ERROR_INTERACTIVE_AUTHORIZATION_REQUIRED,
                                  "Authentication is required for %s; call again allowing interactive "
                                  "authorization (loopctl does so on a terminal).", q->action);
        else
                sd_bus_error_setf(&error, LOOPD_DBUS_ERROR_ACCESS_DENIED,
                                  "Not authorized: the system's polkit policy does not allow %s to this user.",
                                  q->action);
done:
        finish(q, authorized && !sd_bus_error_is_set(&error), &error);
        return 0;
}

/* Sends q now. A query whose time ran out while it waited fails. */
static int send_query(Polkit *pk, PolkitQuery *q) {
        uint64_t now = now_usec();
        int r;

        if (now >= q->deadline)
                return -ETIMEDOUT;
        r = sd_bus_call_async(pk->bus, &q->slot, q->call, on_reply, q, q->deadline - now);
        if (r < 0)
                return r;
        pk->in_flight++;
        return 0;
}

/* Fill free slots from the ring, one query per uid per turn. */
static void dispatch(Polkit *pk) {
        while (pk->ring && pk->in_flight < pk->max_in_flight) {
                UidQueue *u = pk->ring;
                PolkitQuery *q = u->head;
                int r;

                pk->ring = u->next; /* the next uid's turn */
                dequeue(q);
                r = send_query(pk, q);
                if (r < 0) {
                        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;
                        (void) bus_error_errno(&e, STEP_POLKIT, r, "Asking polkit");
                        finish(q, false, &e);
                        return; /* finish() dispatched again */
                }
        }
}

int polkit_check(Polkit *pk, sd_bus_message *request, uid_t uid, const char *action, const char *const *details,
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

        r = sd_bus_message_new_method_call(pk->bus, &m, "org.freedesktop.PolicyKit1",
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
        *q = (PolkitQuery) { .pk = pk, .call = TAKE_PTR(m), .deadline = now_usec() + timeout_usec,
                             .interactive = interactive, .done = done, .userdata = userdata };
        q->action = strdup(action);
        if (!q->action) {
                polkit_query_cancel(q);
                return -ENOMEM;
        }
        if (pk->in_flight < pk->max_in_flight && !pk->ring)
                r = send_query(pk, q);
        else
                r = enqueue(pk, q, uid);
        if (r < 0) {
                polkit_query_cancel(q);
                return r;
        }
        *ret = q;
        return 0;
}

int polkit_new(sd_bus *bus, unsigned max_in_flight, Polkit **ret) {
        Polkit *pk;

        assert(max_in_flight > 0);
        pk = calloc(1, sizeof(*pk));
        if (!pk)
                return -ENOMEM;
        pk->bus = sd_bus_ref(bus);
        pk->max_in_flight = max_in_flight;
        *ret = pk;
        return 0;
}

Polkit *polkit_free(Polkit *pk) {
        if (!pk)
                return NULL;
        while (pk->ring)
                polkit_query_cancel(pk->ring->head);
        sd_bus_unref(pk->bus);
        free(pk);
        return NULL;
}
