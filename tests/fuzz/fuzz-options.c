/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * libFuzzer target for the request layer (daemon/bus-options.c): the a{sv}
 * options of Create/CreateFromPath, device names and backing paths — the
 * hostile input every local user can send to a root daemon.
 *
 * The input is a small program that builds the options argument of a
 * method call, so the fuzzer reaches the parser with well-formed D-Bus
 * messages of any shape rather than being stopped by sd-bus's own
 * unmarshalling (which libsystemd fuzzes itself):
 *
 *   byte 0       top-level type: mostly a{sv}, sometimes a{ss}, as, a{sv}
 *                nested in a variant, or nothing at all
 *   per entry    key (one of the known keys, a near-miss, or bytes from the
 *                input), value type (t u b i x d s y q ay as v a{sv}; no h:
 *                the parser never sees fds), value bytes
 *   the rest     a NUL-terminated string for bus_parse_device_name() and
 *                bus_validate_backing_path()
 *
 * When bus_read_create_options() accepts, what it returns must be valid:
 * the target aborts on any option set that loop_config_validate() would
 * refuse, so a parser bug that lets a bad value through is a crash.
 */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <systemd/sd-bus.h>

#include "bus-options.h"
#include "errors.h"
#include "loopd-protocol.h"

typedef struct Input {
        const uint8_t *p;
        size_t n;
} Input;

static uint8_t take_byte(Input *in) {
        uint8_t b;
        if (in->n == 0)
                return 0;
        b = in->p[0];
        in->p++;
        in->n--;
        return b;
}

static uint64_t take_u64(Input *in, size_t bytes) {
        uint64_t v = 0;
        for (size_t i = 0; i < bytes; i++)
                v = v << 8 | take_byte(in);
        return v;
}

/* A string of up to 63 bytes from the input (D-Bus wants UTF-8 and no NUL:
 * appending fails otherwise, which is fine, the case is skipped). */
static void take_string(Input *in, char *buf, size_t size) {
        size_t len = take_byte(in) % 64, k = 0;
        if (len >= size)
                len = size - 1;
        while (k < len && in->n > 0) {
                char c = (char) take_byte(in);
                buf[k++] = c ? c : 'x';
        }
        buf[k] = 0;
}

static const char *const known_keys[] = {
        "offset", "size-limit", "block-size", "read-only", "autoclear", "partscan", "direct-io", "bind-to-caller",
        /* near misses */
        "Offset", "offset ", "", "size_limit", "bind-to-caller\x01",
};

/* Appends one value of a type chosen by the input. Returns < 0 when sd-bus
 * refused it (invalid UTF-8, bad object path, ...). */
static int append_value(sd_bus_message *m, Input *in, int depth) {
        char s[64];
        uint8_t t = take_byte(in) % 17;
        int r;

        switch (t) {
        case 0: case 1: case 2: {
                uint64_t v = take_u64(in, 1 + take_byte(in) % 8);
                return sd_bus_message_append(m, "v", "t", v);
        }
        case 3: case 4: {
                uint32_t v = (uint32_t) take_u64(in, 1 + take_byte(in) % 4);
                return sd_bus_message_append(m, "v", "u", v);
        }
        case 5: case 6:
                return sd_bus_message_append(m, "v", "b", take_byte(in) & 1);
        case 7:
                return sd_bus_message_append(m, "v", "i", (int32_t) take_u64(in, 4));
        case 8:
                return sd_bus_message_append(m, "v", "x", (int64_t) take_u64(in, 8));
        case 9: {
                uint64_t bits = take_u64(in, 8);
                double d;
                memcpy(&d, &bits, sizeof d);
                return sd_bus_message_append(m, "v", "d", d);
        }
        case 10:
                take_string(in, s, sizeof s);
                return sd_bus_message_append(m, "v", "s", s);
        case 11:
                return sd_bus_message_append(m, "v", "y", take_byte(in));
        case 12:
                return sd_bus_message_append(m, "v", "q", (uint16_t) take_u64(in, 2));
        case 13: {
                uint8_t len = take_byte(in) % 16;
                uint8_t buf[16] = { 0 };
                for (uint8_t i = 0; i < len; i++)
                        buf[i] = take_byte(in);
                r = sd_bus_message_open_container(m, 'v', "ay");
                if (r >= 0)
                        r = sd_bus_message_append_array(m, 'y', buf, len);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                return r;
        }
        case 14:
                take_string(in, s, sizeof s);
                return sd_bus_message_append(m, "v", "as", 2, s, "x");
        case 15:
                /* A variant in a variant. */
                if (depth > 3)
                        return sd_bus_message_append(m, "v", "b", 1);
                r = sd_bus_message_open_container(m, 'v', "v");
                if (r >= 0)
                        r = append_value(m, in, depth + 1);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                return r;
        default:
                return sd_bus_message_append(m, "v", "a{sv}", 1, "offset", "t", (uint64_t) take_byte(in));
        }
}

static int append_options(sd_bus_message *m, Input *in) {
        uint8_t shape = take_byte(in) % 16;
        unsigned entries = take_byte(in) % 12;
        int r;

        switch (shape) {
        case 0:
                return 0; /* nothing: the parser must not read past the end */
        case 1:
                return sd_bus_message_append(m, "a{ss}", 1, "offset", "0");
        case 2:
                return sd_bus_message_append(m, "as", 1, "offset");
        case 3:
                return sd_bus_message_append(m, "v", "a{sv}", 0);
        default:
                break;
        }

        r = sd_bus_message_open_container(m, 'a', "{sv}");
        if (r < 0)
                return r;
        for (unsigned i = 0; i < entries && in->n > 0; i++) {
                char key[64];
                uint8_t k = take_byte(in);

                if (k < 0xd0)
                        snprintf(key, sizeof key, "%s", known_keys[k % (sizeof known_keys / sizeof known_keys[0])]);
                else
                        take_string(in, key, sizeof key);
                r = sd_bus_message_open_container(m, 'e', "sv");
                if (r >= 0)
                        r = sd_bus_message_append_basic(m, 's', key);
                if (r >= 0)
                        r = append_value(m, in, 0);
                if (r >= 0)
                        r = sd_bus_message_close_container(m);
                if (r < 0)
                        return r;
        }
        return sd_bus_message_close_container(m);
}

/* A bus that is started but never connected to anything: enough for
 * sd-bus to build and seal messages, without a daemon. */
static sd_bus *fuzz_bus(void) {
        static sd_bus *bus;
        int fds[2];

        if (bus)
                return bus;
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fds) < 0)
                abort();
        if (sd_bus_new(&bus) < 0 || sd_bus_set_fd(bus, fds[0], fds[0]) < 0 || sd_bus_start(bus) < 0)
                abort();
        /* fds[1] stays open: the peer of a bus that never answers. */
        return bus;
}

static void check_accepted(const CreateOptions *o) {
        uint32_t bs = o->config.block_size;

        if (o->config.offset > INT64_MAX || o->config.size_limit > INT64_MAX ||
            o->config.size_limit > UINT64_MAX - o->config.offset)
                abort();
        if (bs != 0 && (bs < 512 || bs > (uint32_t) sysconf(_SC_PAGESIZE) || (bs & (bs - 1)) != 0))
                abort();
        if (o->config.flags & ~(uint32_t) LOOP_CONFIG_FLAGS_ALLOWED)
                abort();
        if (loop_config_validate(&o->config) < 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        Input in = { data, size };
        sd_bus_message *m = NULL;
        sd_bus_error error = SD_BUS_ERROR_NULL;
        CreateOptions o;
        char *tail;
        uint32_t number;
        int r;

        if (size > 4096)
                return 0;

        if (sd_bus_message_new_method_call(fuzz_bus(), &m, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                                           LOOPD_MANAGER_INTERFACE, "Create") < 0)
                abort();
        r = append_options(m, &in);
        if (r >= 0 && sd_bus_message_seal(m, 1, 0) >= 0 && sd_bus_message_rewind(m, true) >= 0) {
                r = bus_read_create_options(m, &o, &error);
                if (r >= 0)
                        check_accepted(&o);
                else if (!sd_bus_error_is_set(&error) ||
                         (!sd_bus_error_has_name(&error, LOOPD_DBUS_ERROR_INVALID_ARGS)))
                        abort(); /* every refusal is InvalidArgs with a message */
                sd_bus_error_free(&error);
        }
        sd_bus_message_unref(m);

        /* The rest of the input as the name/path strings. */
        tail = strndup((const char *) in.p, in.n);
        if (!tail)
                return 0;
        r = bus_parse_device_name(tail, &number, &error);
        if (r < 0 && !sd_bus_error_has_name(&error, LOOPD_ERROR_NOT_A_LOOP_DEVICE))
                abort();
        sd_bus_error_free(&error);
        r = bus_validate_backing_path(tail, &error);
        if ((r < 0) != (tail[0] != '/' || strlen(tail) >= 4096))
                abort();
        sd_bus_error_free(&error);
        free(tail);
        return 0;
}
