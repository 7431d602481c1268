/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Helpers of the client suite on top of LoopdFixture (tests/lib): running
 * loopctl, reading its JSON with a real parser, waiting for the kernel.
 */

#include <stdbool.h>
#include <stdint.h>

#include "fixture.h"

/* Devices are checked in sysfs, not through loopd: the client under test
 * must not be its own witness. */
bool client_loop_attached(const char *dev);
/* The kernel's diskseq of dev's current attachment; 0 when not attached. */
uint64_t client_loop_diskseq(const char *dev);
/* The diskseq in a device object path ".../loopN_S"; 0 if there is none. */
uint64_t client_object_diskseq(const char *object_path);
/*
 * Polls (scaled by LOOPD_TEST_TIMEOUT_SCALE) until the attachment of dev
 * with `diskseq` is gone. "loopN is not attached" is not the test: the
 * kernel hands a freed number to the next attach, so a parallel test may
 * own loopN again a moment later; the diskseq names one attachment only.
 */
bool client_wait_gone(const char *dev, uint64_t diskseq, double timeout_sec);

/* The loopctl under test (built path, baked in by meson). */
const char *client_loopctl(void);
/* Runs loopctl with the arguments after r (NULL-terminated) as uid:gid,
 * through the fixture (setpriv, the fixture's bus, stdin /dev/null). */
void client_loopctl_as(LoopdFixture *f, uid_t uid, LoopdRunResult *r, ...) G_GNUC_NULL_TERMINATED;

/* The same with the arguments in a NULL-terminated array. */
void client_loopctl_argv_as(LoopdFixture *f, uid_t uid, LoopdRunResult *r, const char *const *args);

/* stderr of a failure: exactly one line, "loopctl: ...", containing
 * `contains` (if not NULL), and no control character. */
void client_assert_one_error_line(const LoopdRunResult *r, const char *contains);

#define MIB (1024 * 1024)

/* A usage error: loopctl's arguments (NULL-terminated; "IMG" stands for an
 * image file) and what its one stderr line must say. */
typedef struct ClientUsageCase {
        const char *args[8];
        const char *says;
} ClientUsageCase;

/* Runs each case as root: exit 2, nothing on stdout, one error line that
 * says what the case expects; and no loop device made. */
void client_assert_usage_errors(LoopdFixture *f, const ClientUsageCase *cases, size_t n);

/* `loopctl create PATH [args]` as uid must succeed: returns "/dev/loopN"
 * (free it), which the kernel has attached. */
char *client_create_as(LoopdFixture *f, uid_t uid, const char *path, ...) G_GNUC_NULL_TERMINATED;

/* `loopctl list --json --output-all` as root: its stdout (free it). */
char *client_list_json(LoopdFixture *f);
/* Fails unless `expression` over `json` prints `expected`. Returns quietly
 * after a skip (no /usr/bin/python3). */
void client_assert_json(const char *json, const char *expression, const char *expected);
/* The same about dev's entry: client_assert_dev(json, dev, "x['offset']", "4096"). */
void client_assert_dev(const char *json, const char *dev, const char *expr, const char *expected);

/*
 * Evaluates a Python expression over the JSON text `json`, bound to `d`
 * (e.g. "d['devices'][0]['name']"), with /usr/bin/python3's json module
 * and returns what print() gives, without the newline. The test fails if
 * the text is not valid JSON: a real parser judges loopctl's output.
 * Returns NULL after g_test_skip() when /usr/bin/python3 is missing.
 */
char *client_json_eval(const char *json, const char *expression);

/*
 * A bus monitor (org.freedesktop.DBus.Monitoring.BecomeMonitor, root on
 * the fixture's bus) that sees method calls to org.loopd.Loop1, so a test can
 * check what a client put on the wire, e.g. the allow-interactive-
 * authorization flag, independently of what polkit makes of it.
 */
typedef struct ClientMonitor ClientMonitor;
ClientMonitor *client_monitor_new(LoopdFixture *f);
/* Waits (scaled) for the next call of `member` to org.loopd.Loop1 and
 * returns whether it carried the allow-interactive-authorization flag;
 * fails the test on timeout. */
bool client_monitor_next_call_interactive(ClientMonitor *m, const char *member, double timeout_sec);
void client_monitor_free(ClientMonitor *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(ClientMonitor, client_monitor_free)
