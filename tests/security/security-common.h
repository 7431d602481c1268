/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * What the security tests share: one way to call loopd as any uid with any
 * fd and any (hostile) argument tuple, and the checks every test ends with.
 *
 * loopd-test-caller covers the ordinary calls; it cannot pass a pipe, a
 * socket, an O_PATH fd or a memfd, nor send argument tuples that a
 * well-behaved client never builds. For those, the test binary re-executes
 * itself as a tiny GDBus client: forked, fd mapped to 3, groups, gid and
 * uid dropped (setgroups/setresgid/setresuid, a real uid change so GLib
 * honours DBUS_SYSTEM_BUS_ADDRESS), then exec — nothing but system calls
 * between fork and exec, since the test process has GLib threads.
 */

#include <sys/types.h>

#include <gio/gio.h>
#include <glib.h>

#include "fixture.h"


typedef struct SecCall {
        gboolean ok;
        char *error_name;    /* NULL when ok */
        char *error_message;
        char *object;        /* Create*: the device's object path */
        char *device;        /* Create*: "/dev/loopN" */
} SecCall;
void sec_call_clear(SecCall *c);
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC(SecCall, sec_call_clear)

/* Call first thing in main(): when the binary was re-executed as the
 * helper, this runs the call and exits. */
void sec_helper_main_if_requested(int argc, char **argv);

/*
 * Calls Manager.@method with @args (GVariant text of the whole argument
 * tuple, e.g. "(handle 0, {'read-only': <true>})"; "handle 0" is @fd, -1 for
 * none) as @uid (gid: the uid's own for 0/1/2, 65534 for 65534; no
 * supplementary groups). uid 0 uses f->bus. Waits at most 60 s (scaled).
 */
void sec_call(LoopdFixture *f, uid_t uid, const char *method, const char *args, int fd, gboolean interactive,
              SecCall *ret);

/* Asserts ret is the error @name (and, if @needle, its message contains it). */
void sec_assert_error(const SecCall *c, const char *name, const char *needle);

/* Peer.Ping to loopd must answer within 5 s (scaled): the daemon is alive
 * and its loop is not blocked. */
void sec_assert_daemon_answers(LoopdFixture *f);

/* Remove as root; asserts success. */
void sec_remove(LoopdFixture *f, const char *device);

/* A Device property as a GVariant (unref it). */
GVariant *sec_device_property(LoopdFixture *f, const char *object, const char *property);

/* A string escaped for GVariant text: 'abc' with quotes. */
char *sec_quote(const char *s);
