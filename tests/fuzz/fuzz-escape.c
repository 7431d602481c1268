/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * libFuzzer target for name_escape() (daemon/escape.c): any file name, as
 * bytes, becomes text that sd-bus accepts as a D-Bus string (checked here
 * with sd-bus itself: a message with the text as a string argument must
 * build), and the text decodes back to exactly the bytes (unambiguous).
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-bus.h>

#include "escape.h"

static int hex(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static sd_bus *bus = NULL;
        sd_bus_message *m = NULL;
        char *name, *text;
        size_t o = 0;

        /* File names hold no NUL: cut there, as the kernel's name would end. */
        name = strndup((const char *) data, size);
        if (!name)
                return 0;
        text = name_escape(name);
        if (!text)
                abort();
        if (!bus) {
                /* A started bus (on a socketpair nobody answers) builds
                 * messages as a real one does. */
                int sv[2];
                if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || sd_bus_new(&bus) < 0 ||
                    sd_bus_set_fd(bus, sv[0], sv[0]) < 0 || sd_bus_start(bus) < 0)
                        abort();
        }
        if (sd_bus_message_new_signal(bus, &m, "/a", "a.b", "c") < 0 || sd_bus_message_append(m, "s", text) < 0)
                abort(); /* sd-bus refused the text: it would break a reply */
        sd_bus_message_unref(m);
        for (const char *p = text; *p; p++) {
                char c = *p;
                if (c == '\\') {
                        if (p[1] != 'x')
                                abort();
                        c = (char) (hex(p[2]) * 16 + hex(p[3]));
                        p += 3;
                }
                if (name[o++] != c)
                        abort();
        }
        if (name[o] != 0)
                abort();
        free(text);
        free(name);
        return 0;
}
