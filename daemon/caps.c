/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "caps.h"

int caps_set_effective(uint64_t raise, uint64_t lower) {
        struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
        struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3] = { 0 };
        uint64_t eff, perm;

        if (syscall(SYS_capget, &h, d) < 0)
                return -errno;
        eff = d[0].effective | ((uint64_t) d[1].effective << 32);
        perm = d[0].permitted | ((uint64_t) d[1].permitted << 32);
        eff = (eff | (raise & perm)) & ~lower;
        d[0].effective = (uint32_t) eff;
        d[1].effective = (uint32_t) (eff >> 32);
        if (syscall(SYS_capset, &h, d) < 0)
                return -errno;
        return 0;
}
