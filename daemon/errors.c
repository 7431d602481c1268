/* SPDX-License-Identifier: LGPL-2.1-or-later */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "errors.h"

static const sd_bus_error_map loopd_error_map[] = {
        SD_BUS_ERROR_MAP(LOOPD_ERROR_NOT_A_LOOP_DEVICE, ENOTBLK),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_NO_SUCH_DEVICE, ENXIO),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_BUSY, EBUSY),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_BAD_BACKING_FILE, EBADF),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_NO_FREE_DEVICE, ENOSPC),
        SD_BUS_ERROR_MAP(LOOPD_ERROR_QUOTA_EXCEEDED, EDQUOT),
        SD_BUS_ERROR_MAP_END,
};

void loopd_errors_register(void) {
        (void) sd_bus_error_add_map(loopd_error_map);
}

int bus_error_setf(sd_bus_error *error, const char *name, const char *fmt, ...) {
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = sd_bus_error_setfv(error, name, fmt, ap);
        va_end(ap);
        /* sd_bus_error_setfv returns the mapped errno; never let it be 0,
         * or sd-bus would treat the handler as successful. */
        return r < 0 ? r : -EIO;
}
