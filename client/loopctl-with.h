/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * `loopctl with`'s command runner: CMD never outlives the device.
 *
 * loopctl forks a guardian, which forks CMD and waits. The guardian is a
 * child subreaper (PR_SET_CHILD_SUBREAPER), so whatever CMD starts, also in
 * other process groups or sessions, stays its descendant. It holds the read
 * end of a pipe whose write end only loopctl has: when loopctl dies, however
 * (SIGKILL too), the pipe reads EOF, and the guardian sends SIGTERM to every
 * descendant, waits the grace time, sends SIGKILL to what is left and exits.
 * loopd meanwhile sees loopctl's bus connection close and removes the
 * device (bind-to-caller); a holder killed lets the kernel finish a detach
 * it deferred. When CMD exits by itself, what it left running is stopped the
 * same way before loopctl removes the device. SIGTERM and SIGHUP sent to
 * loopctl reach CMD; SIGINT and SIGQUIT are left to the terminal, which
 * sends them to CMD directly (it stays in loopctl's process group, so an
 * interactive CMD keeps its terminal).
 *
 * What this cannot stop: a process that left the tree through a setuid
 * program or a service manager, and a process in uninterruptible sleep until
 * it wakes.
 */

#define WITH_GRACE_SEC 5

/*
 * Runs cmd (NULL-terminated; execvp) as described above and sets *ret_status
 * to what `with` exits with: CMD's exit code, 128+N if it died of signal N,
 * 127 if it was not found, 126 if it could not be run. Returns 0, or a
 * negative errno when nothing could be started.
 */
int with_run_command(char *const *cmd, int *ret_status);
