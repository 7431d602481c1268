/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>

#include "bus-options.h"
#include "errors.h"

enum { OPT_OFFSET, OPT_SIZE_LIMIT, OPT_BLOCK_SIZE, OPT_READ_ONLY, OPT_AUTOCLEAR, OPT_PARTSCAN,
       OPT_DIRECT_IO, OPT_BIND_TO_CALLER, _OPT_MAX };

static const struct {
        const char *key;
        const char *type;
        const char *type_text;
        uint32_t flag;
} option_table[_OPT_MAX] = {
        [OPT_OFFSET] = { "offset", "t", "t (uint64)", 0 },
        [OPT_SIZE_LIMIT] = { "size-limit", "t", "t (uint64)", 0 },
        [OPT_BLOCK_SIZE] = { "block-size", "u", "u (uint32)", 0 },
        [OPT_READ_ONLY] = { "read-only", "b", "b (boolean)", LO_FLAGS_READ_ONLY },
        [OPT_AUTOCLEAR] = { "autoclear", "b", "b (boolean)", LO_FLAGS_AUTOCLEAR },
        [OPT_PARTSCAN] = { "partscan", "b", "b (boolean)", LO_FLAGS_PARTSCAN },
        [OPT_DIRECT_IO] = { "direct-io", "b", "b (boolean)", LO_FLAGS_DIRECT_IO },
        [OPT_BIND_TO_CALLER] = { "bind-to-caller", "b", "b (boolean)", 0 },
};

/* Reads an a{sv} of the keys in `allowed` (bits of the OPT_ indexes). */
static int read_options(sd_bus_message *m, unsigned allowed, const char *known, CreateOptions *ret,
                        sd_bus_error *error) {
        CreateOptions o = { 0 };
        bool seen[_OPT_MAX] = { 0 };
        int r;

        r = sd_bus_message_enter_container(m, 'a', "{sv}");
        if (r < 0)
                return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS, "options must be of type a{sv}.");
        for (;;) {
                const char *key, *contents;
                char type;
                int k;

                r = sd_bus_message_enter_container(m, 'e', "sv");
                if (r < 0)
                        return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS, "options could not be read.");
                if (r == 0)
                        break;
                r = sd_bus_message_read(m, "s", &key);
                if (r < 0)
                        return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS, "An option's key could not be read.");
                for (k = 0; k < _OPT_MAX; k++)
                        if ((allowed & (1u << k)) && strcmp(key, option_table[k].key) == 0)
                                break;
                if (k == _OPT_MAX)
                        return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS,
                                              "Unknown option '%.64s'; known options are %s.", key, known);
                if (seen[k])
                        return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS, "Option '%s' is given twice.",
                                              option_table[k].key);
                seen[k] = true;
                r = sd_bus_message_peek_type(m, &type, &contents);
                if (r < 0 || type != 'v' || !contents || strcmp(contents, option_table[k].type) != 0)
                        return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS,
                                              "Option '%s' must be of type %s, not '%.16s'.", option_table[k].key,
                                              option_table[k].type_text, contents ? contents : "?");
                switch (k) {
                case OPT_OFFSET:
                        r = sd_bus_message_read(m, "v", "t", &o.config.offset);
                        break;
                case OPT_SIZE_LIMIT:
                        r = sd_bus_message_read(m, "v", "t", &o.config.size_limit);
                        break;
                case OPT_BLOCK_SIZE:
                        r = sd_bus_message_read(m, "v", "u", &o.config.block_size);
                        break;
                default: {
                        int b = 0;
                        r = sd_bus_message_read(m, "v", "b", &b);
                        if (r >= 0 && b) {
                                if (k == OPT_BIND_TO_CALLER)
                                        o.bind_to_caller = true;
                                else
                                        o.config.flags |= option_table[k].flag;
                        }
                }
                }
                if (r < 0)
                        return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS, "Option '%s' could not be read.",
                                              option_table[k].key);
                r = sd_bus_message_exit_container(m);
                if (r < 0)
                        return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS, "options could not be read.");
        }
        r = sd_bus_message_exit_container(m);
        if (r < 0)
                return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS, "options could not be read.");
        *ret = o;
        return 0;
}

int bus_read_create_options(sd_bus_message *m, CreateOptions *ret, sd_bus_error *error) {
        CreateOptions o;
        int r;

        r = read_options(m, (1u << _OPT_MAX) - 1,
                         "offset, size-limit, block-size, read-only, autoclear, partscan, direct-io, bind-to-caller",
                         &o, error);
        if (r < 0)
                return r;
        if (o.config.block_size != 0) {
                LoopConfig bs = { .block_size = o.config.block_size };
                if (loop_config_validate(&bs) < 0)
                        return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS,
                                              "Option 'block-size' is %u; it must be 0 (the default) or a power "
                                              "of two from 512 to the page size.", o.config.block_size);
        }
        /* The same bound as loop_config_validate() (the kernel's LLONG_MAX on
         * the sum), here so that the error names the keys. */
        if (o.config.offset > INT64_MAX || o.config.size_limit > INT64_MAX ||
            o.config.size_limit > (uint64_t) INT64_MAX - o.config.offset)
                return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS,
                                      "Options 'offset' (%llu) and 'size-limit' (%llu) are too large.",
                                      (unsigned long long) o.config.offset,
                                      (unsigned long long) o.config.size_limit);
        r = loop_config_validate(&o.config);
        if (r < 0)
                return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS, "The options do not make a valid loop device.");
        *ret = o;
        return 0;
}

int bus_parse_device_name(const char *s, uint32_t *ret, sd_bus_error *error) {
        if (loop_name_parse(s, ret) < 0)
                return bus_error_setf(error, LOOPD_ERROR_NOT_A_LOOP_DEVICE,
                                      "'%.128s' is not a loop device; name one as loopN or /dev/loopN.", s);
        return 0;
}

int bus_validate_backing_path(const char *s, sd_bus_error *error) {
        size_t n = strlen(s);

        if (n == 0 || s[0] != '/')
                return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS,
                                      "The path '%.128s' is not absolute; give the full path of the file.", s);
        if (n >= PATH_MAX)
                return bus_error_setf(error, LOOPD_DBUS_ERROR_INVALID_ARGS, "The path is longer than PATH_MAX.");
        return 0;
}

int bus_read_open_options(sd_bus_message *m, int *ret_flags, sd_bus_error *error) {
        CreateOptions o;
        int r;

        r = read_options(m, 1u << OPT_READ_ONLY, "read-only", &o, error);
        if (r < 0)
                return r;
        *ret_flags = (o.config.flags & LO_FLAGS_READ_ONLY) ? O_RDONLY : O_RDWR;
        return 0;
}
