/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopctl: what a person types instead of losetup(8) when they are not root.
 * Every command is one or two calls of libloopd; this file is argument
 * parsing and the commands. Tables and JSON: loopctl-table.c (libsmartcols);
 * running CMD for `with`: loopctl-with.c; sizes and option errors:
 * loopctl-util.c.
 *
 * Two ways in: loopctl's commands (`loopctl create FILE`), which take
 * losetup's option names, and a losetup command line as it is
 * (`loopctl -f --show FILE`, `loopctl -j FILE`, `loopctl -D`), recognized
 * when the first word is not a command.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <locale.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loopctl-table.h"
#include "loopctl-util.h"
#include "loopctl-with.h"
#include "loopd.h"
#include "util.h"

#ifndef LOOPD_VERSION
#define LOOPD_VERSION "unknown"
#endif

/* Exit codes: documented in --help and loopctl(1); scripts rely on them. */
enum {
        EXIT_OK = 0,
        EXIT_GENERIC = 1,         /* anything else */
        EXIT_USAGE = 2,           /* bad argument or usage */
        EXIT_NOT_AUTHORIZED = 3,  /* polkit or the file's permissions said no */
        EXIT_NO_DEVICE = 4,       /* no such (attached) loop device */
};

#define STRINGIFY_(x) #x
#define STRINGIFY(x) STRINGIFY_(x)

/* How long a call may wait when polkit may ask the user for a password. */
#define INTERACTIVE_TIMEOUT_USEC (120ULL * 1000000ULL)
/* How long `with` waits for a detach the kernel deferred to a last close
 * (udev's probe after mkfs holds a device for a moment). */
#define DEFERRED_DETACH_WAIT_USEC (5ULL * 1000000ULL)

static bool arg_ask_password = true;
static LoopdCreateOptions arg_create = LOOPD_CREATE_OPTIONS_INIT;
static bool arg_show = false;
static OutputOptions arg_output = { .n_columns = 0 };
static bool arg_list_format = false;    /* -l, -O, --output-all, -J, -n, --raw: a table, not losetup's lines */
static const char *arg_associated = NULL;
static bool arg_offset_given = false;
static bool arg_all = false;

DEFINE_POINTER_CLEANUP(LoopdClient, loopd_client_unref)
DEFINE_POINTER_CLEANUP(LoopdDevice, loopd_device_unref)
DEFINE_POINTER_CLEANUP(LoopdDeviceInfo, loopd_device_info_free)

typedef struct DeviceList {
        LoopdDevice **devices;
        size_t n;
} DeviceList;

static void device_list_done(DeviceList *l) {
        loopd_device_list_free(l->devices, l->n);
        l->devices = NULL;
        l->n = 0;
}

/* ---- Messages and exit codes --------------------------------------------- */

/*
 * An errno from libloopd as an exit code. user_values: the call carried
 * what the user typed (a FILE, options, a device name), so the daemon's
 * InvalidArgs or BadBackingFile is a bad argument (2); otherwise (listing)
 * it is a failure (1), never "bad usage".
 */
static int exit_code_for(int r, bool user_values) {
        switch (-r) {
        case EACCES:
        case EPERM:
                return EXIT_NOT_AUTHORIZED;
        case ENXIO:
        case ENOTBLK:
                return EXIT_NO_DEVICE;
        case EINVAL:
        case EBADF:
        case E2BIG:
        case ERANGE:
                return user_values ? EXIT_USAGE : EXIT_GENERIC;
        default:
                return EXIT_GENERIC;
        }
}

/* One line on stderr, whatever the parts hold. */
static void print_line(const char *context, const char *message) {
        const char *parts[] = { context, message };

        fputs("loopctl: ", stderr);
        for (size_t i = 0; i < ELEMENTSOF(parts); i++) {
                if (!parts[i])
                        continue;
                if (i > 0 && parts[0])
                        fputs(": ", stderr);
                for (const char *p = parts[i]; *p; p++)
                        fputc((unsigned char) *p < 0x20 || *p == 0x7f ? ' ' : *p, stderr);
        }
        fputc('\n', stderr);
}

_printf_(2, 3)
static void print_linef(const char *context, const char *format, ...) {
        char *m = NULL;
        va_list ap;

        va_start(ap, format);
        if (vasprintf(&m, format, ap) < 0)
                m = NULL;
        va_end(ap);
        print_line(context, m ? m : format);
        free(m);
}

_printf_(1, 2)
static int usage_error(const char *format, ...) {
        char *m = NULL;
        va_list ap;

        va_start(ap, format);
        if (vasprintf(&m, format, ap) < 0)
                m = NULL;
        va_end(ap);
        print_line(NULL, m ? m : "bad usage");
        free(m);
        return EXIT_USAGE;
}

/* Reports a failed libloopd call with the daemon's own message. */
static int report(LoopdClient *c, int r, const char *context, bool user_values) {
        const char *m = c ? loopd_client_last_error_message(c) : NULL;

        print_line(context, m ? m : strerror(-r));
        return exit_code_for(r, user_values);
}

static int client_open(LoopdClient **ret) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        int r;

        r = loopd_client_new(&c);
        if (r < 0) {
                print_line("cannot connect to the system bus", strerror(-r));
                return EXIT_GENERIC;
        }
        /* Only ask for a password when someone can type it. */
        if (arg_ask_password && isatty(STDIN_FILENO)) {
                loopd_client_set_interactive(c, true);
                loopd_client_set_timeout(c, INTERACTIVE_TIMEOUT_USEC);
        }
        *ret = TAKE_PTR(c);
        return EXIT_OK;
}

/* ---- Help ---------------------------------------------------------------- */

#define CREATE_OPTIONS_HELP                                                        \
        "  -o, --offset=N           start N bytes into FILE\n"                      \
        "      --sizelimit=N        make the device at most N bytes long\n"         \
        "  -b, --sector-size=N      logical sector size: 512, 1024, ... page size\n" \
        "  -r, --read-only          read-only device (also when FILE is not writable)\n" \
        "  -P, --partscan           let the kernel scan for partitions\n"           \
        "      --direct-io[=on|off] bypass the page cache on the backing file\n"    \
        "Sizes as losetup reads them: 4096, 0x1000, 010 (octal: 8), 4K = 4KiB = 4096,\n" \
        "4KB = 4000, 1.5M; suffixes K M G T P E.\n"

#define OUTPUT_OPTIONS_HELP                                                        \
        "  -O, --output=COLS        columns to show (+COLS: add to the default)\n"  \
        "      --output-all         every column\n"                                 \
        "  -n, --noheadings         no header line\n"                               \
        "      --raw                raw output: one device per line, escaped\n"      \
        "  -J, --json               JSON, as losetup --json --list\n"

#define COMMON_OPTIONS_HELP                                                        \
        "      --no-ask-password    do not let polkit ask for a password\n"         \
        "  -h, --help               show this help\n"

#define EXIT_STATUS_HELP                                                           \
        "Exit status: 0 success, 1 failure, 2 bad argument or usage, 3 not authorized,\n" \
        "4 no such loop device.\n"

static const char help_main[] =
        "Usage: loopctl [OPTIONS] COMMAND [ARGS...]\n"
        "       loopctl LOSETUP-OPTIONS...   (a losetup command line, see loopctl(1))\n"
        "Loop devices for unprivileged users, through the loopd service.\n"
        "\n"
        "Commands:\n"
        "  create FILE [OPTIONS]           attach FILE, print the device path   (losetup -f --show)\n"
        "  with FILE [OPTIONS] -- CMD ...  attach FILE for as long as CMD runs\n"
        "  remove DEV... | --all           detach devices                        (losetup -d, -D)\n"
        "  refresh-size DEV                follow the backing file's new size   (losetup -c)\n"
        "  info DEV                        show one device\n"
        "  list [OPTIONS] [DEV...]         list devices                          (losetup -l)\n"
        "\n"
        "Options:\n"
        "  -J, --json               JSON output (list, info)\n"
        COMMON_OPTIONS_HELP
        "  -V, --version            show the version\n"
        "\n"
        "'loopctl COMMAND --help' describes a command. " EXIT_STATUS_HELP;

static const char help_create[] =
        "Usage: loopctl create [OPTIONS] FILE\n"
        "Attaches a loop device to FILE and prints its path (/dev/loopN). loopctl opens\n"
        "FILE with your own rights, read-write if it can, else read-only (with a\n"
        "warning), and passes the open file to loopd. loopd picks the device.\n"
        "\n"
        CREATE_OPTIONS_HELP
        "      --show               accepted for losetup's sake: create always prints\n"
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_with[] =
        "Usage: loopctl with FILE [OPTIONS] -- CMD [ARGS...]\n"
        "Attaches a loop device to FILE, runs CMD with the device path in $LOOP_DEVICE\n"
        "and every '{}' in ARGS replaced by it, and removes the device when CMD exits.\n"
        "What CMD leaves running is stopped first. If loopctl dies, CMD and all it\n"
        "started get SIGTERM, SIGKILL after " STRINGIFY(WITH_GRACE_SEC) " s, and loopd removes the device.\n"
        "Exits with CMD's status (128+N if CMD died of signal N), or 1 if CMD succeeded\n"
        "but the device could not be removed or stayed attached because something else\n"
        "still had it open.\n"
        "\n"
        CREATE_OPTIONS_HELP
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_remove[] =
        "Usage: loopctl remove DEV...\n"
        "       loopctl remove --all\n"
        "Detaches each DEV (loopN or /dev/loopN). Goes on after a failure and exits\n"
        "with the code of the first one.\n"
        "\n"
        "  -a, -D, --all            every device you created through loopd (root: every\n"
        "                           device loopd created, not those set up otherwise)\n"
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_refresh_size[] =
        "Usage: loopctl refresh-size DEV\n"
        "Makes DEV (loopN or /dev/loopN) follow its backing file's current size.\n"
        "\n"
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_info[] =
        "Usage: loopctl info [-J] DEV\n"
        "Shows every column of DEV (loopN or /dev/loopN).\n"
        "\n"
        "  -J, --json               as 'loopctl list --json --output-all DEV'\n"
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_list_head[] =
        "Usage: loopctl list [OPTIONS] [DEV...]\n"
        "Lists the loop devices loopd exports (all attached ones, also those set up\n"
        "with losetup), or only DEV..., as losetup --list does.\n"
        "\n"
        "  -j, --associated=FILE    only the devices backed by FILE\n"
        "  -o, --offset=N           with -j: only those starting at N\n"
        OUTPUT_OPTIONS_HELP
        COMMON_OPTIONS_HELP
        "\n"
        "Columns (default: NAME SIZELIMIT OFFSET AUTOCLEAR RO BACK-FILE DIO LOG-SEC OWNER):\n";

/* ---- Options --------------------------------------------------------------- */

enum {
        ARG_NO_ASK_PASSWORD = 0x100,
        ARG_SIZELIMIT,
        ARG_DIRECT_IO,
        ARG_SHOW,
        ARG_OUTPUT_ALL,
        ARG_RAW,
};

/* Every option of every command and of losetup's command line. What a
 * command accepts is decided per command (option_class()). */
static const struct option options[] = {
        { "help",            no_argument,       NULL, 'h' },
        { "version",         no_argument,       NULL, 'V' },
        { "json",            no_argument,       NULL, 'J' },
        { "no-ask-password", no_argument,       NULL, ARG_NO_ASK_PASSWORD },
        { "verbose",         no_argument,       NULL, 'v' },
        /* create, with */
        { "offset",          required_argument, NULL, 'o' },
        { "sizelimit",       required_argument, NULL, ARG_SIZELIMIT },
        { "size-limit",      required_argument, NULL, ARG_SIZELIMIT },   /* loopctl's first spelling */
        { "sector-size",     required_argument, NULL, 'b' },
        { "block-size",      required_argument, NULL, 'b' },             /* loopctl's first spelling */
        { "read-only",       no_argument,       NULL, 'r' },
        { "partscan",        no_argument,       NULL, 'P' },
        { "direct-io",       optional_argument, NULL, ARG_DIRECT_IO },
        { "show",            no_argument,       NULL, ARG_SHOW },
        { "find",            no_argument,       NULL, 'f' },
        { "nooverlap",       no_argument,       NULL, 'L' },
        /* list */
        { "list",            no_argument,       NULL, 'l' },
        { "all",             no_argument,       NULL, 'a' },
        { "associated",      required_argument, NULL, 'j' },
        { "output",          required_argument, NULL, 'O' },
        { "output-all",      no_argument,       NULL, ARG_OUTPUT_ALL },
        { "noheadings",      no_argument,       NULL, 'n' },
        { "raw",             no_argument,       NULL, ARG_RAW },
        /* remove, refresh-size, and losetup's actions */
        { "detach",          required_argument, NULL, 'd' },
        { "detach-all",      no_argument,       NULL, 'D' },
        { "set-capacity",    required_argument, NULL, 'c' },
        { "encryption",      required_argument, NULL, 'e' },
        { NULL, 0, NULL, 0 }
};
#define OPTSTRING ":hVJvo:b:rPfLlaj:O:nd:Dc:e:E:"

typedef enum OptionClass {
        CLASS_COMMON,   /* anywhere */
        CLASS_CREATE,   /* create, with */
        CLASS_OUTPUT,   /* list (info: -J only) */
        CLASS_ACTION,   /* losetup's -d -D -c -f -a -j -e: its command line only */
} OptionClass;

static OptionClass option_class(int c) {
        switch (c) {
        case 'h': case 'V': case ARG_NO_ASK_PASSWORD: case 'v':
                return CLASS_COMMON;
        case 'o': case ARG_SIZELIMIT: case 'b': case 'r': case 'P': case ARG_DIRECT_IO:
        case ARG_SHOW: case 'f': case 'L':
                return CLASS_CREATE;
        case 'J': case 'l': case 'O': case ARG_OUTPUT_ALL: case 'n': case ARG_RAW:
                return CLASS_OUTPUT;
        default:
                return CLASS_ACTION;
        }
}

/* The option as the user named it: long if they typed it long. */
static char *option_name(int c, int longindex) {
        char *s = NULL;

        if (longindex >= 0)
                return asprintf(&s, "--%s", options[longindex].name) < 0 ? NULL : s;
        return asprintf(&s, "-%c", c) < 0 ? NULL : s;
}

static int parse_size_arg(const char *name, const char *value, uint64_t *ret) {
        int r = parse_size(value, ret);

        switch (r) {
        case 0:
                return 0;
        case -ERANGE:
                return usage_error("option '%s': '%s' is too large", name, value);
        case -EDOM:
                return usage_error("option '%s': '%s' is not a whole number of bytes", name, value);
        default:
                return usage_error("option '%s': '%s' is not a size (4096, 0x1000, 4K, 1.5M; "
                                   "a leading 0 means octal)", name, value);
        }
}

/* The losetup actions seen on its command line. */
typedef struct Actions {
        const char *detach;          /* -d DEV */
        const char *set_capacity;    /* -c DEV */
        bool detach_all;             /* -D */
        bool find;                   /* -f */
        bool all;                    /* -a */
        int n;                       /* how many of the above, and -j */
        char first[32];              /* the first one, for "cannot be combined" */
} Actions;

typedef enum Command {
        CMD_LOSETUP,
        CMD_CREATE,
        CMD_WITH,
        CMD_REMOVE,
        CMD_REFRESH_SIZE,
        CMD_INFO,
        CMD_LIST,
} Command;

static const char *const command_names[] = {
        [CMD_LOSETUP] = NULL,
        [CMD_CREATE] = "create",
        [CMD_WITH] = "with",
        [CMD_REMOVE] = "remove",
        [CMD_REFRESH_SIZE] = "refresh-size",
        [CMD_INFO] = "info",
        [CMD_LIST] = "list",
};

static const char *help_for(Command cmd) {
        switch (cmd) {
        case CMD_CREATE:       return help_create;
        case CMD_WITH:         return help_with;
        case CMD_REMOVE:       return help_remove;
        case CMD_REFRESH_SIZE: return help_refresh_size;
        case CMD_INFO:         return help_info;
        default:               return help_main;
        }
}

static void print_help(Command cmd) {
        if (cmd == CMD_LIST) {
                fputs(help_list_head, stdout);
                output_print_column_help(stdout);
                fputs("Columns marked (loopd) are loopd's own; the others are losetup's.\n\n" EXIT_STATUS_HELP,
                      stdout);
                return;
        }
        fputs(help_for(cmd), stdout);
}

/* Whether `cmd` takes option c; else the message says who does. */
static const char *option_refused(Command cmd, int c) {
        OptionClass k = option_class(c);

        if (cmd == CMD_LOSETUP || k == CLASS_COMMON)
                return NULL;
        switch (k) {
        case CLASS_CREATE:
                if (cmd == CMD_CREATE || cmd == CMD_WITH)
                        return NULL;
                if (c == 'o' && cmd == CMD_LIST)
                        return NULL;   /* with -j, checked later */
                return "is for create and with";
        case CLASS_OUTPUT:
                if (cmd == CMD_LIST || (cmd == CMD_INFO && c == 'J'))
                        return NULL;
                if (c == 'J')
                        return "is for list and info";
                return "is for list";
        default:
                if (c == 'a' && (cmd == CMD_LIST || cmd == CMD_REMOVE))
                        return NULL;
                if (c == 'D' && cmd == CMD_REMOVE)
                        return NULL;
                if (c == 'j' && cmd == CMD_LIST)
                        return NULL;
                return "belongs to a losetup command line (see loopctl --help)";
        }
}

/*
 * Parses the options of `cmd` in argv (argv[0] the command, or "loopctl"
 * for a losetup command line); operands are left in argv[*ret_first..].
 * Returns -1 to go on, else the exit code (help printed, or a usage error).
 */
static int parse_options(Command cmd, int argc, char **argv, Actions *actions, int *ret_first) {
        const char *who = cmd == CMD_LOSETUP ? NULL : command_names[cmd];
        uint64_t v;
        int c, r;

        optind = 0;  /* GNU: start afresh */
        opterr = 0;
        for (;;) {
                _cleanup_(freep) char *name = NULL;
                const char *refused;
                int longindex = -1;

                c = getopt_long(argc, argv, OPTSTRING, options, &longindex);
                if (c < 0)
                        break;
                if (c == '?' || c == ':') {
                        _cleanup_(freep) char *m = option_error(c, optopt, optind, argc, argv, options);
                        if (who)
                                return usage_error("%s: %s", who, m ? m : "bad option");
                        return usage_error("%s (see loopctl --help)", m ? m : "bad option");
                }
                name = option_name(c, longindex);
                if (!name)
                        return usage_error("out of memory");
                refused = option_refused(cmd, c);
                if (refused)
                        return usage_error("%s: option '%s' %s", who, name, refused);

                switch (c) {
                case 'h':
                        print_help(cmd);
                        return EXIT_OK;
                case 'V':
                        printf("loopctl %s\n", LOOPD_VERSION);
                        return EXIT_OK;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;
                case 'v':
                        break;   /* losetup's --verbose: nothing more to say */
                case 'o':
                        if ((r = parse_size_arg(name, optarg, &v)) != 0)
                                return r;
                        arg_create.offset = v;
                        arg_offset_given = true;
                        break;
                case ARG_SIZELIMIT:
                        if ((r = parse_size_arg(name, optarg, &v)) != 0)
                                return r;
                        arg_create.size_limit = v;
                        break;
                case 'b':
                        if ((r = parse_size_arg(name, optarg, &v)) != 0)
                                return r;
                        if (v > UINT32_MAX)
                                return usage_error("option '%s': '%s' is too large", name, optarg);
                        arg_create.block_size = (uint32_t) v;
                        break;
                case 'r':
                        arg_create.read_only = true;
                        break;
                case 'P':
                        arg_create.partscan = true;
                        break;
                case ARG_DIRECT_IO:
                        if (!optarg || streq_ptr(optarg, "on"))
                                arg_create.direct_io = true;
                        else if (streq_ptr(optarg, "off"))
                                arg_create.direct_io = false;
                        else
                                return usage_error("option '%s' takes 'on' or 'off', not '%s'", name, optarg);
                        break;
                case ARG_SHOW:
                        arg_show = true;
                        break;
                case 'f':
                        if (actions) {
                                actions->find = true;
                                goto action;
                        }
                        break;   /* create finds a free device anyway */
                case 'L':
                        return usage_error("option '%s' is not supported: loopd always attaches a new "
                                           "device (see loopctl(1))", name);
                case 'J':
                        arg_output.json = true;
                        arg_list_format = true;
                        break;
                case 'l':
                        arg_list_format = true;
                        break;
                case 'O': {
                        _cleanup_(freep) char *bad = NULL;

                        r = output_parse_columns(&arg_output, optarg, &bad);
                        if (r == -E2BIG)
                                return usage_error("option '%s': too many columns", name);
                        if (r < 0)
                                return usage_error("option '%s': unknown column '%s' (see loopctl list --help)",
                                                   name, bad ? bad : optarg);
                        arg_list_format = true;
                        break;
                }
                case ARG_OUTPUT_ALL:
                        output_set_all_columns(&arg_output);
                        arg_list_format = true;
                        break;
                case 'n':
                        arg_output.noheadings = true;
                        arg_list_format = true;
                        break;
                case ARG_RAW:
                        arg_output.raw = true;
                        arg_list_format = true;
                        break;
                case 'a':
                        arg_all = true;
                        if (actions) {
                                actions->all = true;
                                goto action;
                        }
                        break;
                case 'D':
                        arg_all = true;
                        if (actions) {
                                actions->detach_all = true;
                                goto action;
                        }
                        break;
                case 'j':
                        arg_associated = optarg;
                        if (actions)
                                goto action;
                        break;
                case 'd':
                        actions->detach = optarg;
                        goto action;
                case 'c':
                        actions->set_capacity = optarg;
                        goto action;
                case 'e':
                case 'E':
                        return usage_error("option '%s': encryption is not supported (as by losetup); "
                                           "use cryptsetup(8)", name);
                default:
                        return usage_error("unexpected option '%s'", name);
                }
                continue;

        action:
                if (actions->n++ == 0)
                        snprintf(actions->first, sizeof(actions->first), "%s", name);
                else if (strcmp(actions->first, name) != 0)
                        return usage_error("options '%s' and '%s' cannot be combined", actions->first, name);
        }
        *ret_first = optind;
        return -1;
}

/* ---- The backing file ------------------------------------------------------ */

/* Opens FILE with the caller's own rights: read-write when possible, else
 * read-only (*ret_fallback says why; the daemon then makes a read-only
 * device). O_NONBLOCK so that a FIFO someone named cannot hang us; cleared
 * again once we know it is a file. */
static int open_backing_file(const char *path, bool read_only, int *ret_fallback) {
        const int flags = O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
        _cleanup_(closep) int fd = -1;
        struct stat st;
        int fl;

        *ret_fallback = 0;
        fd = open(path, (read_only ? O_RDONLY : O_RDWR) | flags);
        if (fd < 0 && !read_only && (errno == EACCES || errno == EROFS || errno == EPERM)) {
                *ret_fallback = errno;
                fd = open(path, O_RDONLY | flags);
        }
        if (fd < 0)
                return negative_errno();
        if (fstat(fd, &st) < 0)
                return negative_errno();
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return -EBADF;
        fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
                return negative_errno();
        return TAKE_FD(fd);
}

static int report_backing_file(const char *path, int r) {
        print_line(path, r == -EBADF ? "not a regular file or block device" : strerror(-r));
        /* The file's own permissions refusing us is "not authorized"; a missing
         * or unusable FILE is a bad argument. */
        return r == -EACCES || r == -EPERM ? EXIT_NOT_AUTHORIZED : EXIT_USAGE;
}

/* What losetup warns about once a device is set up, and the read-only
 * fallback, which losetup warns about too. */
static void warn_after_create(const char *path, int fd, int fallback) {
        struct stat st;
        uint64_t size;

        if (fallback != 0)
                print_linef(path, "warning: cannot open it read-write (%s), the device is read-only",
                            strerror(fallback));
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return;
        size = arg_create.size_limit;
        if (size == 0)
                size = (uint64_t) st.st_size > arg_create.offset ? (uint64_t) st.st_size - arg_create.offset : 0;
        if (size < 512)
                print_line(path, "warning: smaller than 512 bytes; the device may be useless "
                                 "or invisible to system tools");
        else if (size % 512)
                print_line(path, "warning: does not end on a 512-byte sector boundary; "
                                 "the end of the file is ignored");
}

/* ---- create -------------------------------------------------------------- */

static int refuse_chosen_device(const char *dev) {
        return usage_error("'%s': loopd chooses the loop device itself and cannot attach a file "
                           "to a device you name; use 'loopctl create FILE' (see loopctl(1))", dev);
}

static int run_create(const char *file, bool print) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;
        _cleanup_(closep) int fd = -1;
        int fallback, r;

        fd = open_backing_file(file, arg_create.read_only, &fallback);
        if (fd < 0)
                return report_backing_file(file, fd);
        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        r = loopd_create(c, fd, &arg_create, &d, NULL);
        if (r < 0)
                return report(c, r, file, true);
        if (print)
                printf("%s\n", loopd_device_get_path(d));
        warn_after_create(file, fd, fallback);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_GENERIC;
}

/* ---- with ---------------------------------------------------------------- */

/* arg with every "{}" replaced by path, as find -exec does. */
static char *replace_braces(const char *arg, const char *path) {
        size_t n = 0, lp = strlen(path);
        const char *p;
        char *r, *q;

        for (p = arg; (p = strstr(p, "{}")); p += 2)
                n++;
        r = q = malloc(strlen(arg) + n * lp + 1);
        if (!r)
                return NULL;
        for (p = arg; *p; ) {
                if (p[0] == '{' && p[1] == '}') {
                        memcpy(q, path, lp);
                        q += lp;
                        p += 2;
                } else
                        *q++ = *p++;
        }
        *q = '\0';
        return r;
}

static void free_strv(char **v) {
        for (char **p = v; p && *p; p++)
                free(*p);
        free(v);
}

/*
 * After Remove: 0 when the attachment is gone. Something else holding the
 * node makes the kernel defer the detach to the last close (the device
 * then shows DetachPending, or with a daemon before that, Autoclear, which
 * `with` never sets); give such a holder a moment, then -EBUSY.
 */
static int wait_detached(LoopdClient *c, LoopdDevice *d) {
        for (uint64_t waited = 0;; waited += 100000) {
                _cleanup_(loopd_device_info_freep) LoopdDeviceInfo *info = NULL;
                int r = loopd_device_get_info(c, d, &info);

                if (r == -ENXIO)
                        return 0;
                if (r < 0)
                        return r;
                if (!info->detach_pending && !info->autoclear)
                        return -EAGAIN;   /* not removed at all */
                if (waited >= DEFERRED_DETACH_WAIT_USEC)
                        return -EBUSY;
                usleep(100000);
        }
}

static int run_with(const char *file, char **args, int n_args) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;
        _cleanup_(closep) int fd = -1;
        char **cmd = NULL;
        int fallback, status = 0, r;

        fd = open_backing_file(file, arg_create.read_only, &fallback);
        if (fd < 0)
                return report_backing_file(file, fd);
        r = client_open(&c);
        if (r != EXIT_OK)
                return r;

        /* Bound to our connection: if we die, loopd removes the device. Not
         * autoclear: a device's owner may open /dev/loopN (loopd grants it)
         * only while it is not autoclear, and CMD needs the node. */
        arg_create.bind_to_caller = true;
        arg_create.autoclear = false;
        r = loopd_create(c, fd, &arg_create, &d, NULL);
        if (r < 0)
                return report(c, r, file, true);
        warn_after_create(file, fd, fallback);
        fd = safe_close(fd);

        cmd = calloc((size_t) n_args + 1, sizeof(char *));
        if (!cmd) {
                r = -ENOMEM;
                goto remove;
        }
        for (int i = 0; i < n_args; i++) {
                cmd[i] = replace_braces(args[i], loopd_device_get_path(d));
                if (!cmd[i]) {
                        r = -ENOMEM;
                        goto remove;
                }
        }
        if (setenv("LOOP_DEVICE", loopd_device_get_path(d), 1) < 0) {
                r = negative_errno();
                goto remove;
        }
        r = with_run_command(cmd, &status);

remove:
        free_strv(cmd);
        if (r < 0) {
                print_line("cannot run the command", strerror(-r));
                status = EXIT_GENERIC;
        }
        /* The object path names exactly this attachment, so a later device
         * that reuses loopN is never touched. Gone already (CMD removed it)
         * is fine. */
        r = loopd_device_remove(c, d);
        if (r == -ENXIO)
                return status;
        if (r < 0) {
                report(c, r, loopd_device_get_path(d), false);
                return status == 0 ? EXIT_GENERIC : status;
        }
        r = wait_detached(c, d);
        if (r == -EBUSY)
                print_line(loopd_device_get_path(d),
                           "still open elsewhere; the kernel detaches it when the last holder closes it");
        else if (r < 0 && r != -EAGAIN)
                report(c, r, loopd_device_get_path(d), false);
        if (r < 0 && status == 0)
                status = EXIT_GENERIC;
        return status;
}

/* ---- remove, refresh-size -------------------------------------------------- */

static int list_devices(LoopdClient *c, DeviceList *ret) {
        int r = loopd_list(c, &ret->devices, &ret->n);

        if (r < 0)
                return report(c, r, "cannot list the devices", false);
        return EXIT_OK;
}

static int run_remove(char **devs, int n) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        int ret = EXIT_OK, r;

        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        for (int i = 0; i < n; i++) {
                r = loopd_remove(c, devs[i]);
                if (r < 0) {
                        r = report(c, r, devs[i], true);
                        if (ret == EXIT_OK)
                                ret = r;
                }
        }
        return ret;
}

/* The caller's own devices (root: every device loopd made), each by its
 * object, so that a number reused meanwhile is never hit. */
static int run_remove_all(void) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        DeviceList l = { NULL, 0 };
        uid_t uid = getuid();
        int ret = EXIT_OK, r;

        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        r = list_devices(c, &l);
        if (r != EXIT_OK)
                return r;
        for (size_t i = 0; i < l.n; i++) {
                const LoopdDeviceInfo *info = loopd_device_peek_info(l.devices[i]);

                if (info->owner_uid == LOOPD_UID_INVALID || info->detach_pending)
                        continue;
                if (uid != 0 && info->owner_uid != (uint32_t) uid)
                        continue;
                r = loopd_device_remove(c, l.devices[i]);
                if (r < 0 && r != -ENXIO) {
                        r = report(c, r, loopd_device_get_path(l.devices[i]), false);
                        if (ret == EXIT_OK)
                                ret = r;
                }
        }
        device_list_done(&l);
        return ret;
}

static int run_refresh_size(const char *dev) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        int r;

        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        r = loopd_refresh_size(c, dev);
        if (r < 0)
                return report(c, r, dev, true);
        return EXIT_OK;
}

/* ---- info, list ---------------------------------------------------------- */

static int run_info(const char *dev) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;
        _cleanup_(loopd_device_info_freep) LoopdDeviceInfo *info = NULL;
        int r;

        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        r = loopd_get_device(c, dev, &d);
        if (r < 0)
                return report(c, r, dev, true);
        r = loopd_device_get_info(c, d, &info);
        if (r < 0)
                return report(c, r, dev, false);
        r = output_print_info(info, arg_output.json);
        if (r < 0) {
                print_line("cannot print", strerror(-r));
                return EXIT_GENERIC;
        }
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_GENERIC;
}

/* -j FILE: the device's backing file is FILE, judged as losetup does, by
 * device and inode, or by name while the daemon does not know them yet. */
static bool backed_by(const LoopdDeviceInfo *info, const struct stat *st, const char *canonical) {
        if (info->backing_device != 0 || info->backing_inode != 0)
                return info->backing_device == (uint64_t) st->st_dev &&
                       info->backing_inode == (uint64_t) st->st_ino;
        return canonical && streq_ptr(device_backing_name(info), canonical);
}

static int run_list(char **devs, int n_devs, bool old_format) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        _cleanup_(freep) const LoopdDeviceInfo **shown = NULL;
        _cleanup_(freep) char **wanted = NULL;   /* object paths of DEV... */
        _cleanup_(freep) char *canonical = NULL;
        DeviceList l = { NULL, 0 };
        struct stat st;
        size_t n_shown = 0;
        int ret = EXIT_OK, r;

        if (arg_offset_given && !arg_associated)
                return usage_error("list: option '--offset' is for create and with, or with --associated");
        if (arg_associated) {
                if (n_devs > 0)
                        return usage_error("list: --associated and DEV cannot be combined");
                if (stat(arg_associated, &st) < 0) {
                        print_line(arg_associated, strerror(errno));
                        return EXIT_USAGE;
                }
                canonical = realpath(arg_associated, NULL);
        }

        r = client_open(&c);
        if (r != EXIT_OK)
                return r;

        /* DEV... are resolved by loopd, which knows what is a loop device. */
        if (n_devs > 0) {
                wanted = calloc((size_t) n_devs, sizeof(char *));
                if (!wanted)
                        return EXIT_GENERIC;
        }
        for (int i = 0; i < n_devs; i++) {
                _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;

                r = loopd_get_device(c, devs[i], &d);
                if (r < 0) {
                        r = report(c, r, devs[i], true);
                        if (ret == EXIT_OK)
                                ret = r;
                        continue;
                }
                wanted[i] = strdup(loopd_device_get_object_path(d));
                if (!wanted[i])
                        ret = EXIT_GENERIC;
        }
        if (n_devs > 0 && ret != EXIT_OK)
                goto finish;

        r = list_devices(c, &l);
        if (r != EXIT_OK) {
                ret = r;
                goto finish;
        }
        shown = calloc(l.n + 1, sizeof(*shown));
        if (!shown) {
                ret = EXIT_GENERIC;
                goto finish;
        }
        for (size_t i = 0; i < l.n; i++) {
                const LoopdDeviceInfo *info = loopd_device_peek_info(l.devices[i]);
                bool take = n_devs == 0;

                for (int k = 0; k < n_devs; k++)
                        if (streq_ptr(wanted[k], info->object_path))
                                take = true;
                if (arg_associated && !backed_by(info, &st, canonical))
                        take = false;
                if (arg_associated && arg_offset_given && info->offset != arg_create.offset)
                        take = false;
                if (take)
                        shown[n_shown++] = info;
        }

        if (old_format)
                for (size_t i = 0; i < n_shown; i++)
                        output_print_old_format(shown[i]);
        else {
                r = output_print_devices(&arg_output, shown, n_shown);
                if (r < 0) {
                        print_line("cannot print", strerror(-r));
                        ret = EXIT_GENERIC;
                }
        }
        if (fflush(stdout) != 0)
                ret = EXIT_GENERIC;

finish:
        for (int i = 0; wanted && i < n_devs; i++)
                free(wanted[i]);
        device_list_done(&l);
        return ret;
}

/* ---- Commands ------------------------------------------------------------- */

static int verb_create(int argc, char **argv) {
        int first, r;

        r = parse_options(CMD_CREATE, argc, argv, NULL, &first);
        if (r >= 0)
                return r;
        if (argc - first == 2)
                return refuse_chosen_device(argv[first]);
        if (argc - first != 1)
                return usage_error("create: %s FILE", argc - first < 1 ? "missing" : "exactly one");
        return run_create(argv[first], true);
}

static int verb_with(int argc, char **argv) {
        int dashes, first, r;

        /* Split at the first "--" ourselves: getopt would take CMD's own
         * options for ours. Without one, CMD's options would read as
         * unknown options of ours: say what is missing instead. */
        for (dashes = 1; dashes < argc; dashes++)
                if (strcmp(argv[dashes], "--") == 0)
                        break;
        if (dashes >= argc) {
                for (int i = 1; i < argc; i++)
                        if (streq_ptr(argv[i], "-h") || streq_ptr(argv[i], "--help")) {
                                fputs(help_with, stdout);
                                return EXIT_OK;
                        }
                return usage_error("with: missing '--' before CMD (loopctl with FILE [OPTIONS] -- CMD [ARGS...])");
        }
        argv[dashes] = NULL;
        r = parse_options(CMD_WITH, dashes, argv, NULL, &first);
        if (r >= 0)
                return r;
        if (dashes - first != 1)
                return usage_error("with: %s FILE before '--'", dashes - first < 1 ? "missing" : "exactly one");
        if (dashes + 1 >= argc)
                return usage_error("with: missing CMD after '--'");
        return run_with(argv[first], argv + dashes + 1, argc - dashes - 1);
}

static int verb_remove(int argc, char **argv) {
        int first, r;

        r = parse_options(CMD_REMOVE, argc, argv, NULL, &first);
        if (r >= 0)
                return r;
        if (arg_all) {
                if (first < argc)
                        return usage_error("remove: --all and DEV cannot be combined");
                return run_remove_all();
        }
        if (first >= argc)
                return usage_error("remove: missing DEV (or --all)");
        return run_remove(argv + first, argc - first);
}

/* A verb that takes its options and exactly one DEV. */
static int verb_one_device(Command cmd, int (*run)(const char *dev), int argc, char **argv) {
        int first, r;

        r = parse_options(cmd, argc, argv, NULL, &first);
        if (r >= 0)
                return r;
        if (argc - first != 1)
                return usage_error("%s: %s DEV", command_names[cmd], argc - first < 1 ? "missing" : "exactly one");
        return run(argv[first]);
}

static int verb_refresh_size(int argc, char **argv) {
        return verb_one_device(CMD_REFRESH_SIZE, run_refresh_size, argc, argv);
}

static int verb_info(int argc, char **argv) {
        return verb_one_device(CMD_INFO, run_info, argc, argv);
}

static int verb_list(int argc, char **argv) {
        int first, r;

        r = parse_options(CMD_LIST, argc, argv, NULL, &first);
        if (r >= 0)
                return r;
        return run_list(argv + first, argc - first, false);
}

/* A losetup command line, as losetup 2.38 reads it (sys-utils/losetup.c). */
static int run_losetup(int argc, char **argv) {
        Actions a = { .n = 0 };
        int first, n, r;
        bool create_options;

        r = parse_options(CMD_LOSETUP, argc, argv, &a, &first);
        if (r >= 0)
                return r;
        n = argc - first;
        create_options = arg_create.size_limit || arg_create.block_size || arg_create.read_only ||
                         arg_create.partscan || arg_create.direct_io || arg_show;

        if ((a.detach || a.detach_all || a.set_capacity || a.find) && arg_list_format)
                return usage_error("options '%s' and --list/--output/--json cannot be combined", a.first);
        if (!a.find && !(a.n == 0 && n == 2) && create_options)
                return usage_error("the options --sizelimit, --sector-size, --read-only, --partscan, "
                                   "--direct-io and --show are for setting up a device (-f FILE)");
        if (arg_offset_given && !a.find && !arg_associated && !(a.n == 0 && n == 2))
                return usage_error("option '--offset' is for setting up a device (-f FILE) or with -j FILE");

        if (a.detach_all) {
                if (n > 0)
                        return usage_error("-D takes no DEV (see loopctl --help)");
                return run_remove_all();
        }
        if (a.detach) {
                /* -d DEV [DEV...]: the first one is -d's value. */
                char **devs = calloc((size_t) n + 1, sizeof(char *));
                if (!devs)
                        return EXIT_GENERIC;
                devs[0] = (char *) a.detach;
                for (int i = 0; i < n; i++)
                        devs[i + 1] = argv[first + i];
                r = run_remove(devs, n + 1);
                free(devs);
                return r;
        }
        if (a.set_capacity) {
                if (n > 0)
                        return usage_error("-c takes one DEV");
                return run_refresh_size(a.set_capacity);
        }
        if (a.find) {
                if (n == 0)
                        return usage_error("-f without FILE: loopd cannot tell a free device without "
                                           "attaching it (and a free one may be gone when you use it); "
                                           "use 'loopctl -f --show FILE' or 'loopctl create FILE'");
                if (n > 1)
                        return usage_error("-f takes one FILE");
                return run_create(argv[first], arg_show);
        }
        if (arg_associated || a.all) {
                if (n > 0)
                        return usage_error("'%s' takes no DEV", a.first);
                return run_list(NULL, 0, !arg_list_format);
        }
        switch (n) {
        case 0:
                return run_list(NULL, 0, false);   /* losetup alone lists, as a table */
        case 1:
                return run_list(argv + first, 1, !arg_list_format);
        case 2:
                return refuse_chosen_device(argv[first]);
        default:
                return usage_error("too many arguments (see loopctl --help)");
        }
}

int main(int argc, char **argv) {
        static const struct {
                const char *name;
                int (*run)(int argc, char **argv);
        } verbs[] = {
                { "create",       verb_create },
                { "with",         verb_with },
                { "remove",       verb_remove },
                { "refresh-size", verb_refresh_size },
                { "info",         verb_info },
                { "list",         verb_list },
        };
        int c;

        /* Display widths (CJK is two cells) and what is printable come
         * from the locale's character type; numbers stay in C's. */
        (void) setlocale(LC_CTYPE, "");

        /* loopctl's own options stop at the command ('+'); any other option
         * first, or no command, makes it a losetup command line. */
        opterr = 0;
        optind = 0;
        for (;;) {
                int longindex = -1;

                c = getopt_long(argc, argv, "+" OPTSTRING, options, &longindex);
                if (c < 0)
                        break;
                switch (c) {
                case 'h':
                        print_help(CMD_LOSETUP);
                        return EXIT_OK;
                case 'V':
                        printf("loopctl %s\n", LOOPD_VERSION);
                        return EXIT_OK;
                case 'J':
                        arg_output.json = true;
                        continue;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        continue;
                case 'v':
                        continue;
                case '?':
                case ':': {
                        _cleanup_(freep) char *m = option_error(c, optopt, optind, argc, argv, options);
                        return usage_error("%s (see loopctl --help)", m ? m : "bad option");
                }
                default:
                        /* losetup's own */
                        arg_output.json = false;
                        arg_ask_password = true;
                        return run_losetup(argc, argv);
                }
        }

        if (optind < argc)
                for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                        if (strcmp(argv[optind], verbs[i].name) == 0) {
                                if (arg_output.json && verbs[i].run != verb_list && verbs[i].run != verb_info)
                                        return usage_error("%s: option '--json' is for list and info",
                                                           verbs[i].name);
                                return verbs[i].run(argc - optind, argv + optind);
                        }
        /* No command: losetup's DEV, DEV FILE or nothing (list). It reads
         * the whole command line again. */
        arg_output.json = false;
        arg_ask_password = true;
        return run_losetup(argc, argv);
}
