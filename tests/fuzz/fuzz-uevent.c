/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * libFuzzer target for uevent_parse() (daemon/uevent.c): the datagrams of
 * the kernel's uevent netlink group. Only the kernel can send there (the
 * monitor drops anything not from port 0), but the parser must not trust
 * even that: no read past @len, no need for a terminating NUL, and when it
 * says "loop disk" the number and action must be what the buffer holds.
 */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "uevent.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        /* An exact-size copy: ASan then catches a read one byte past it. */
        char *buf = malloc(size ? size : 1);
        Uevent ev = { .number = UINT32_MAX };
        int r;

        if (!buf)
                return 0;
        memcpy(buf, data, size);
        r = uevent_parse(buf, size, &ev);
        if (r != 1 && r != 0 && r != -EINVAL)
                abort();
        if (r == 1) {
                /* The action points into the buffer and is terminated there. */
                if (!ev.action || ev.action < buf || ev.action >= buf + size ||
                    !memchr(ev.action, 0, (size_t) (buf + size - ev.action)))
                        abort();
                if (ev.number == UINT32_MAX)
                        abort();
        }
        free(buf);
        return 0;
}
