/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "bus-manager.h"
#include "bus-operation.h"
#include "log.h"

const char *const op_names[] = {
        [OP_CREATE] = "create",
        [OP_OPEN] = "open",
        [OP_REMOVE] = "remove",
        [OP_REFRESH_SIZE] = "refresh-size",
};

/* ---- operations in flight ------------------------------------------------------ */

void operation_free(Operation *op) {
        Context *c;

        if (!op)
                return;
        c = op->c;
        if (op->prev)
                op->prev->next = op->next;
        else
                c->operations = op->next;
        if (op->next)
                op->next->prev = op->prev;
        c->n_operations--;
        if (op->uid != 0) {
                c->n_operations_unprivileged--;
                uid_counts_dec(&c->operations_per_uid, op->uid);
        }
        polkit_query_cancel(op->polkit);
        path_open_cancel(op->path_open);
        if (op->reserved)
                devices_unreserve(c->devices, op->uid);
        safe_close(op->backing_fd);
        free(op->path_arg);
        free(op->backing_path);
        sd_bus_message_unref(op->msg);
        free(op);
}

static void log_refusal(Context *c, sd_bus_message *m, uid_t uid, const char *what, const sd_bus_error *e,
                        const char *reason) {
        LogEntry le = LOG_ENTRY_INIT(LOG_NOTICE, LOG_ID_REFUSED);

        log_entry_add(&le, "LOOPD_UID", "%u", (unsigned) uid);
        log_entry_add(&le, "LOOPD_SENDER", "%s", strempty(sd_bus_message_get_sender(m)));
        log_entry_add(&le, "LOOPD_REQUEST", "%s", what);
        log_entry_add(&le, "LOOPD_REASON", "%s", reason ? reason : bus_error_reason(e));
        log_entry_add(&le, "LOOPD_ERROR", "%s", e->name);
        if (streq_ptr(reason, "polkit"))
                log_entry_add(&le, "LOOPD_ACTION", "%s",
                              strcmp(what, "create") == 0 ? LOOPD_ACTION_CREATE : LOOPD_ACTION_MANAGE_OTHERS);
        log_entry_send(&le, "Refused %s for uid %u: %s", what, (unsigned) uid, strempty(e->message));
}

/* A request refused before it became an Operation. */
int refuse(Context *c, sd_bus_message *m, uid_t uid, const char *what, sd_bus_error *error, int r,
                  const char *reason) {
        log_refusal(c, m, uid, what, error, reason);
        return r;
}

/* Answers op with an error, logs the refusal, frees op. */
void operation_fail(Operation *op, const sd_bus_error *e, const char *reason) {
        int r;

        log_refusal(op->c, op->msg, op->uid, op_names[op->kind], e, reason);
        r = sd_bus_reply_method_error(op->msg, e);
        if (r < 0)
                log_debug_errno(r, "Cannot send an error reply (the caller is gone?)");
        operation_free(op);
}

void operation_fail_errno(Operation *op, LoopdStep step, int r, const char *subject) {
        _cleanup_(sd_bus_error_free) sd_bus_error e = SD_BUS_ERROR_NULL;

        (void) bus_error_errno(&e, step, r, subject);
        operation_fail(op, &e, step == STEP_POLKIT ? "polkit" : NULL);
}

/* Counts a new request of uid, within its limits. */
int operation_new(Context *c, OpKind kind, sd_bus_message *m, uid_t uid, pid_t pid, sd_bus_error *error,
                         Operation **ret) {
        Operation *op;
        int r;

        if (uid != 0 && (uid_counts_get(&c->operations_per_uid, uid) >= c->limits.pending_per_uid ||
                         c->n_operations_unprivileged >= c->limits.pending_total)) {
                r = bus_error_errno(error, STEP_LOOKUP, LOOPD_ERRNO_LIMITS, NULL);
                return refuse(c, m, uid, op_names[kind], error, r, "limits");
        }
        op = calloc(1, sizeof(*op));
        if (!op)
                return -ENOMEM;
        if (uid != 0 && uid_counts_inc(&c->operations_per_uid, uid) < 0) {
                free(op);
                return -ENOMEM;
        }
        *op = (Operation) { .c = c, .kind = kind, .msg = sd_bus_message_ref(m), .uid = uid, .pid = pid,
                            .backing_fd = -1, .next = c->operations };
        if (op->next)
                op->next->prev = op;
        c->operations = op;
        c->n_operations++;
        if (uid != 0)
                c->n_operations_unprivileged++;
        *ret = op;
        return 0;
}

void bus_manager_cancel_operations(Context *c) {
        Operation *op = c->operations, *next;

        for (; op; op = next) {
                next = op->next;
                if (op->in_kernel) {
                        /* Its job calls back; then it is freed. */
                        op->detached = true;
                        continue;
                }
                operation_free(op);
        }
}

