/* SPDX-License-Identifier: LGPL-2.1-or-later */
#pragma once

/*
 * Capabilities loopd holds but does not use on its own behalf. Under its
 * unit loopd may hold CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and
 * CAP_SYS_PTRACE, for root's CreateFromPath only: root's path helper opens
 * the path with root's own rights, resolved in the root caller's file
 * system view (/proc/PID/root of a process that may hold more capabilities
 * than loopd, which the kernel lets loopd see only with CAP_SYS_PTRACE).
 * loopd drops them from its effective set at start, so nothing it does for
 * itself or any other caller uses them; the helper raises them again.
 * Capabilities are per thread: a raise affects the calling thread only.
 */

#include <stdint.h>

#define CAPS_HELD_BACK \
        ((UINT64_C(1) << 1) /* CAP_DAC_OVERRIDE */ | (UINT64_C(1) << 2) /* CAP_DAC_READ_SEARCH */ | \
         (UINT64_C(1) << 19) /* CAP_SYS_PTRACE */)
#define CAPS_DAC_READ_SEARCH (UINT64_C(1) << 2)

/* Effective set of the calling thread: raise `raise` (only what is
 * permitted), then lower `lower`. Async-signal-safe (raw syscalls). */
int caps_set_effective(uint64_t raise, uint64_t lower);
