/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Requests in flight on the bus edge: an Operation per request, counted
 * against its uid (Context.limits) until it is answered, and the one way to
 * refuse one (the error reply and its "refused" audit entry together).
 * Shared by bus-create.c (Create, CreateFromPath) and bus-manager.c (Open,
 * Remove, RefreshSize).
 */

#include "bus-options.h"
#include "context.h"
#include "device-ops.h"
#include "errors.h"
#include "path-opener.h"

typedef enum OpKind { OP_CREATE, OP_OPEN, OP_REMOVE, OP_REFRESH_SIZE } OpKind;

struct Operation {
        Context *c;
        Operation *prev, *next;
        OpKind kind;
        sd_bus_message *msg;
        uid_t uid;
        pid_t pid;

        /* Create and CreateFromPath. */
        char *path_arg;       /* CreateFromPath's path */
        CreateOptions opts;
        int backing_fd;
        bool reserved;        /* holds a quota slot */
        char *backing_path;   /* the kernel's name for the backing file, escaped */
        bool backing_verified;
        LoopBacking backing;

        /* Open, Remove, RefreshSize. */
        uint32_t number;
        uint64_t diskseq;
        int open_flags;
        bool fd_only;         /* Device.Open: the reply is just the fd */

        PolkitQuery *polkit;
        PathOpen *path_open;
        bool in_kernel;       /* a devices operation will call back */
        bool detached;        /* cancelled at exit while in the kernel */
};

/* "create", "open", "remove", "refresh-size": the audit trail's and
 * polkit's names of the requests. */
extern const char *const op_names[];

/* Counts a new request of uid within its limits; refuses (LimitsExceeded,
 * logged) past them. */
int operation_new(Context *c, OpKind kind, sd_bus_message *m, uid_t uid, pid_t pid, sd_bus_error *error,
                  Operation **ret);
void operation_free(Operation *op);
DEFINE_POINTER_CLEANUP(Operation, operation_free)

/* Answers op with an error, logs the refusal (reason: LOOPD_REASON, NULL
 * to derive it from the error), frees op. */
void operation_fail(Operation *op, const sd_bus_error *e, const char *reason);
void operation_fail_errno(Operation *op, LoopdStep step, int r, const char *subject);

/* Logs the refusal of a request that never became an Operation; returns r. */
int refuse(Context *c, sd_bus_message *m, uid_t uid, const char *what, sd_bus_error *error, int r,
           const char *reason);
