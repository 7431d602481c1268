/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * loopctl: what a person types instead of losetup(8) when they are not root.
 * Every command is one or two calls of libloopd; this file is argument
 * parsing, output formatting and, for `with`, running a command.
 */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "loopctl-util.h"
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

/* How long a call may wait when polkit may ask the user for a password. */
#define INTERACTIVE_TIMEOUT_USEC (120ULL * 1000000ULL)

static bool arg_json = false;
static bool arg_ask_password = true;
static LoopdCreateOptions arg_create = LOOPD_CREATE_OPTIONS_INIT;

DEFINE_POINTER_CLEANUP(LoopdClient, loopd_client_unref)
DEFINE_POINTER_CLEANUP(LoopdDevice, loopd_device_unref)
DEFINE_POINTER_CLEANUP(LoopdDeviceInfo, loopd_device_info_free)

/* ---- Messages and exit codes --------------------------------------------- */

static int exit_code_for(int r) {
        switch (-r) {
        case EACCES:
        case EPERM:
                return EXIT_NOT_AUTHORIZED;
        case ENXIO:
        case ENOTBLK:
                return EXIT_NO_DEVICE;
        case EINVAL:
        case EBADF:       /* the daemon's BadBackingFile */
        case E2BIG:
        case ERANGE:
                return EXIT_USAGE;
        default:
                return EXIT_GENERIC;
        }
}

/* One line on stderr, whatever the message holds. */
static void print_line(const char *context, const char *message) {
        fputs("loopctl: ", stderr);
        if (context)
                fprintf(stderr, "%s: ", context);
        for (const char *p = message; *p; p++)
                fputc((unsigned char) *p < 0x20 ? ' ' : *p, stderr);
        fputc('\n', stderr);
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
static int report(LoopdClient *c, int r, const char *context) {
        const char *m = c ? loopd_client_last_error_message(c) : NULL;

        print_line(context, m ? m : strerror(-r));
        return exit_code_for(r);
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

#define CREATE_OPTIONS_HELP                                                     \
        "  -o, --offset=N        start N bytes into FILE\n"                     \
        "      --size-limit=N    make the device at most N bytes long\n"       \
        "  -b, --block-size=N    logical block size: 512, 1024, ... page size\n" \
        "  -r, --read-only       read-only device (also when FILE is not writable)\n" \
        "  -P, --partscan        let the kernel scan for partitions\n"          \
        "      --direct-io       bypass the page cache on the backing file\n"   \
        "Sizes take suffixes K M G T P E (or KiB...: powers of 1024) and KB MB ... (powers of 1000).\n"

#define COMMON_OPTIONS_HELP                                                     \
        "      --no-ask-password do not let polkit ask for a password\n"        \
        "  -h, --help            show this help\n"

#define EXIT_STATUS_HELP                                                        \
        "Exit status: 0 success, 1 failure, 2 bad argument or usage, 3 not authorized,\n" \
        "4 no such loop device.\n"

static const char help_main[] =
        "Usage: loopctl [OPTIONS] COMMAND [ARGS...]\n"
        "Loop devices for unprivileged users, through the loopd service.\n"
        "\n"
        "Commands:\n"
        "  create FILE [OPTIONS]           attach FILE, print the device path\n"
        "  with FILE [OPTIONS] -- CMD ...  attach FILE for as long as CMD runs\n"
        "  remove DEV...                   detach devices (loopN or /dev/loopN)\n"
        "  refresh-size DEV                follow the backing file's new size\n"
        "  info DEV                        show one device\n"
        "  list                            show all devices loopd knows\n"
        "\n"
        "Options:\n"
        "      --json            JSON output (list, info)\n"
        COMMON_OPTIONS_HELP
        "      --version         show the version\n"
        "\n"
        "'loopctl COMMAND --help' describes a command. " EXIT_STATUS_HELP;

static const char help_create[] =
        "Usage: loopctl create FILE [OPTIONS]\n"
        "Attaches a loop device to FILE and prints its path (/dev/loopN). loopctl opens\n"
        "FILE with your own rights, read-write if it can, else read-only, and passes the\n"
        "open file to loopd.\n"
        "\n"
        CREATE_OPTIONS_HELP
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_with[] =
        "Usage: loopctl with FILE [OPTIONS] -- CMD [ARGS...]\n"
        "Attaches a loop device to FILE, runs CMD with the device path in $LOOP_DEVICE\n"
        "and every '{}' in ARGS replaced by it, and removes the device when CMD exits.\n"
        "If loopctl itself is killed, loopd removes the device when it sees loopctl's\n"
        "bus connection close. Exits with CMD's status (128+N if CMD died of signal N),\n"
        "or 1 if CMD succeeded but the device could not be removed.\n"
        "\n"
        CREATE_OPTIONS_HELP
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_remove[] =
        "Usage: loopctl remove DEV...\n"
        "Detaches each DEV (loopN or /dev/loopN). Goes on after a failure and exits\n"
        "with the code of the first one.\n"
        "\n"
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_refresh_size[] =
        "Usage: loopctl refresh-size DEV\n"
        "Makes DEV (loopN or /dev/loopN) follow its backing file's current size.\n"
        "\n"
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_info[] =
        "Usage: loopctl info DEV [--json]\n"
        "Shows every property of DEV (loopN or /dev/loopN).\n"
        "\n"
        "      --json            one JSON object\n"
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

static const char help_list[] =
        "Usage: loopctl list [--json]\n"
        "Lists the loop devices loopd exports: NAME SIZELIMIT OFFSET AUTOCLEAR RO\n"
        "BACK-FILE DIO LOG-SEC as losetup shows them, and OWNER, the user who created\n"
        "the device through loopd ('-' for devices made otherwise).\n"
        "\n"
        "      --json            {\"devices\": [...]} with every property\n"
        COMMON_OPTIONS_HELP
        "\n" EXIT_STATUS_HELP;

/* ---- Arguments ----------------------------------------------------------- */

enum {
        ARG_VERSION = 0x100,
        ARG_JSON,
        ARG_NO_ASK_PASSWORD,
        ARG_SIZE_LIMIT,
        ARG_DIRECT_IO,
};

/* Flags of what a command accepts. */
#define ACCEPT_CREATE 0x1
#define ACCEPT_JSON   0x2

/*
 * Parses a command's options (argv[0] is the command). Returns -1 to go on,
 * else the exit code. *ret_first is the index of the first operand.
 */
static int parse_options(int argc, char **argv, unsigned accept, const char *help, int *ret_first) {
        static const struct option options[] = {
                { "help",            no_argument,       NULL, 'h' },
                { "json",            no_argument,       NULL, ARG_JSON },
                { "no-ask-password", no_argument,       NULL, ARG_NO_ASK_PASSWORD },
                { "offset",          required_argument, NULL, 'o' },
                { "size-limit",      required_argument, NULL, ARG_SIZE_LIMIT },
                { "block-size",      required_argument, NULL, 'b' },
                { "read-only",       no_argument,       NULL, 'r' },
                { "partscan",        no_argument,       NULL, 'P' },
                { "direct-io",       no_argument,       NULL, ARG_DIRECT_IO },
                { NULL, 0, NULL, 0 }
        };
        uint64_t v;
        int c, r;

        optind = 0;  /* GNU: start afresh, argv[0] is the command */
        opterr = 0;
        while ((c = getopt_long(argc, argv, ":ho:b:rP", options, NULL)) >= 0) {
                bool create_option = false;

                switch (c) {
                case 'h':
                        fputs(help, stdout);
                        return EXIT_OK;
                case ARG_JSON:
                        if (!(accept & ACCEPT_JSON))
                                return usage_error("%s: --json is for list and info only", argv[0]);
                        arg_json = true;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;
                case 'o':
                        r = parse_size(optarg, &v);
                        if (r < 0)
                                return usage_error("invalid offset '%s'", optarg);
                        arg_create.offset = v;
                        create_option = true;
                        break;
                case ARG_SIZE_LIMIT:
                        r = parse_size(optarg, &v);
                        if (r < 0)
                                return usage_error("invalid size limit '%s'", optarg);
                        arg_create.size_limit = v;
                        create_option = true;
                        break;
                case 'b':
                        r = parse_size(optarg, &v);
                        if (r < 0 || v > UINT32_MAX)
                                return usage_error("invalid block size '%s'", optarg);
                        arg_create.block_size = (uint32_t) v;
                        create_option = true;
                        break;
                case 'r':
                        arg_create.read_only = true;
                        create_option = true;
                        break;
                case 'P':
                        arg_create.partscan = true;
                        create_option = true;
                        break;
                case ARG_DIRECT_IO:
                        arg_create.direct_io = true;
                        create_option = true;
                        break;
                case ':':
                        return usage_error("%s: option '%s' needs a value", argv[0], argv[optind - 1]);
                default:
                        if (optopt)
                                return usage_error("%s: unknown option '-%c'", argv[0], optopt);
                        return usage_error("%s: unknown option '%s'", argv[0], argv[optind - 1]);
                }
                if (create_option && !(accept & ACCEPT_CREATE))
                        return usage_error("%s: option '%s' is for create and with only",
                                           argv[0], argv[optind - 1]);
        }
        *ret_first = optind;
        return -1;
}

/* Opens FILE with the caller's own rights: read-write when possible, else
 * read-only (the daemon then makes a read-only device). O_NONBLOCK so that a
 * FIFO someone named cannot hang us; cleared again once we know it is a file. */
static int open_backing_file(const char *path, bool read_only) {
        const int flags = O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
        _cleanup_(closep) int fd = -1;
        struct stat st;
        int fl;

        fd = open(path, (read_only ? O_RDONLY : O_RDWR) | flags);
        if (fd < 0 && !read_only && (errno == EACCES || errno == EROFS || errno == EPERM))
                fd = open(path, O_RDONLY | flags);
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

/* ---- create -------------------------------------------------------------- */

static int verb_create(int argc, char **argv) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;
        _cleanup_(closep) int fd = -1;
        int first, r;

        r = parse_options(argc, argv, ACCEPT_CREATE, help_create, &first);
        if (r >= 0)
                return r;
        if (argc - first != 1)
                return usage_error("create: %s FILE", argc - first < 1 ? "missing" : "exactly one");

        fd = open_backing_file(argv[first], arg_create.read_only);
        if (fd < 0)
                return report_backing_file(argv[first], fd);
        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        r = loopd_create(c, fd, &arg_create, &d, NULL);
        if (r < 0)
                return report(c, r, argv[first]);
        printf("%s\n", loopd_device_get_path(d));
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_GENERIC;
}

/* ---- with ---------------------------------------------------------------- */

static volatile sig_atomic_t child_pid = 0;

static void forward_signal(int sig) {
        if (child_pid > 0)
                (void) kill((pid_t) child_pid, sig);
}

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

static int run_command(char **cmd, int *ret_status) {
        static const int forwarded[] = { SIGTERM, SIGHUP };
        struct sigaction ign = { .sa_handler = SIG_IGN }, fwd = { .sa_handler = forward_signal };
        struct sigaction old_int, old_quit, old_fwd[ELEMENTSOF(forwarded)];
        sigset_t block, saved;
        pid_t pid;
        int status = 0, r = 0;

        /* Like system(3): ^C and ^\ are for CMD, which shares our terminal;
         * we wait for it and clean up. SIGTERM/SIGHUP sent to us alone are
         * passed on, held back until the child's pid is known. */
        sigemptyset(&block);
        for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
                sigaddset(&block, forwarded[i]);
        sigprocmask(SIG_BLOCK, &block, &saved);
        sigaction(SIGINT, &ign, &old_int);
        sigaction(SIGQUIT, &ign, &old_quit);
        for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
                sigaction(forwarded[i], &fwd, &old_fwd[i]);

        fflush(NULL);
        pid = fork();
        if (pid == 0) {
                struct sigaction dfl = { .sa_handler = SIG_DFL };

                sigaction(SIGINT, &dfl, NULL);
                sigaction(SIGQUIT, &dfl, NULL);
                for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
                        sigaction(forwarded[i], &dfl, NULL);
                sigprocmask(SIG_SETMASK, &saved, NULL);
                execvp(cmd[0], cmd);
                int e = errno;
                print_line(cmd[0], strerror(e));
                _exit(e == ENOENT ? 127 : 126);
        }
        if (pid < 0)
                r = negative_errno();
        else {
                child_pid = pid;
                sigprocmask(SIG_SETMASK, &saved, NULL);
                while (waitpid(pid, &status, 0) < 0)
                        if (errno != EINTR) {
                                r = negative_errno();
                                break;
                        }
                child_pid = 0;
        }

        sigprocmask(SIG_SETMASK, &saved, NULL);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGQUIT, &old_quit, NULL);
        for (size_t i = 0; i < ELEMENTSOF(forwarded); i++)
                sigaction(forwarded[i], &old_fwd[i], NULL);
        if (r < 0)
                return r;

        if (WIFEXITED(status))
                *ret_status = WEXITSTATUS(status);
        else if (WIFSIGNALED(status))
                *ret_status = 128 + WTERMSIG(status);
        else
                *ret_status = EXIT_GENERIC;
        return 0;
}

static int verb_with(int argc, char **argv) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;
        _cleanup_(closep) int fd = -1;
        char **cmd = NULL;
        int dashes, first, status = 0, r;

        /* Split at the first "--" ourselves: getopt would take CMD's own
         * options for ours. */
        for (dashes = 1; dashes < argc; dashes++)
                if (strcmp(argv[dashes], "--") == 0)
                        break;
        if (dashes < argc)
                argv[dashes] = NULL;
        r = parse_options(dashes, argv, ACCEPT_CREATE, help_with, &first);
        if (r >= 0)
                return r;
        if (dashes - first != 1)
                return usage_error("with: %s FILE", dashes - first < 1 ? "missing" : "exactly one");
        if (dashes >= argc)
                return usage_error("with: missing '--' before CMD");
        if (dashes + 1 >= argc)
                return usage_error("with: missing CMD after '--'");

        fd = open_backing_file(argv[first], arg_create.read_only);
        if (fd < 0)
                return report_backing_file(argv[first], fd);
        r = client_open(&c);
        if (r != EXIT_OK)
                return r;

        /* Bound to our connection: if we die, loopd removes the device. */
        arg_create.bind_to_caller = true;
        r = loopd_create(c, fd, &arg_create, &d, NULL);
        if (r < 0)
                return report(c, r, argv[first]);
        fd = safe_close(fd);

        cmd = calloc((size_t) (argc - dashes), sizeof(char *));
        if (!cmd) {
                r = -ENOMEM;
                goto remove;
        }
        for (int i = dashes + 1, j = 0; i < argc; i++, j++) {
                cmd[j] = replace_braces(argv[i], loopd_device_get_path(d));
                if (!cmd[j]) {
                        r = -ENOMEM;
                        goto remove;
                }
        }
        if (setenv("LOOP_DEVICE", loopd_device_get_path(d), 1) < 0) {
                r = negative_errno();
                goto remove;
        }
        r = run_command(cmd, &status);

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
        if (r < 0 && r != -ENXIO) {
                report(c, r, loopd_device_get_path(d));
                if (status == 0)
                        status = EXIT_GENERIC;
        }
        return status;
}

/* ---- remove, refresh-size ------------------------------------------------ */

static int verb_remove(int argc, char **argv) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        int first, ret = EXIT_OK, r;

        r = parse_options(argc, argv, 0, help_remove, &first);
        if (r >= 0)
                return r;
        if (first >= argc)
                return usage_error("remove: missing DEV");
        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        for (int i = first; i < argc; i++) {
                r = loopd_remove(c, argv[i]);
                if (r < 0) {
                        r = report(c, r, argv[i]);
                        if (ret == EXIT_OK)
                                ret = r;
                }
        }
        return ret;
}

static int verb_refresh_size(int argc, char **argv) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        int first, r;

        r = parse_options(argc, argv, 0, help_refresh_size, &first);
        if (r >= 0)
                return r;
        if (argc - first != 1)
                return usage_error("refresh-size: %s DEV", argc - first < 1 ? "missing" : "exactly one");
        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        r = loopd_refresh_size(c, argv[first]);
        if (r < 0)
                return report(c, r, argv[first]);
        return EXIT_OK;
}

/* ---- info, list ---------------------------------------------------------- */

/* User name of a device's owner, or NULL. Not thread-safe; loopctl has one thread. */
static const char *owner_name(uint32_t uid) {
        struct passwd *pw;

        if (uid == LOOPD_UID_INVALID)
                return NULL;
        pw = getpwuid((uid_t) uid);
        return pw ? pw->pw_name : NULL;
}

static void json_write_device(FILE *f, const LoopdDeviceInfo *i, const char *indent) {
        const char *owner = owner_name(i->owner_uid);

#define KEY(k) fprintf(f, "%s  \"" k "\": ", indent)
        fprintf(f, "{\n");
        KEY("name");           json_write_string(f, i->name);           fputs(",\n", f);
        KEY("path");           json_write_string(f, i->device_path);    fputs(",\n", f);
        KEY("object-path");    json_write_string(f, i->object_path);    fputs(",\n", f);
        KEY("number");         fprintf(f, "%u,\n", (unsigned) i->number);
        KEY("device-number");  fprintf(f, "%llu,\n", (unsigned long long) i->device_number);
        KEY("major");          fprintf(f, "%u,\n", major((dev_t) i->device_number));
        KEY("minor");          fprintf(f, "%u,\n", minor((dev_t) i->device_number));
        KEY("diskseq");        fprintf(f, "%llu,\n", (unsigned long long) i->diskseq);
        KEY("backing-file");   json_write_string(f, i->backing_file);   fputs(",\n", f);
        KEY("backing-device"); fprintf(f, "%llu,\n", (unsigned long long) i->backing_device);
        KEY("backing-inode");  fprintf(f, "%llu,\n", (unsigned long long) i->backing_inode);
        KEY("offset");         fprintf(f, "%llu,\n", (unsigned long long) i->offset);
        KEY("size-limit");     fprintf(f, "%llu,\n", (unsigned long long) i->size_limit);
        KEY("size");           fprintf(f, "%llu,\n", (unsigned long long) i->size);
        KEY("block-size");     fprintf(f, "%u,\n", (unsigned) i->block_size);
        KEY("read-only");      fprintf(f, "%s,\n", i->read_only ? "true" : "false");
        KEY("autoclear");      fprintf(f, "%s,\n", i->autoclear ? "true" : "false");
        KEY("partscan");       fprintf(f, "%s,\n", i->partscan ? "true" : "false");
        KEY("direct-io");      fprintf(f, "%s,\n", i->direct_io ? "true" : "false");
        KEY("bound-to-caller"); fprintf(f, "%s,\n", i->bound_to_caller ? "true" : "false");
        KEY("owner-uid");
        if (i->owner_uid == LOOPD_UID_INVALID)
                fputs("null,\n", f);
        else
                fprintf(f, "%u,\n", (unsigned) i->owner_uid);
        KEY("owner");
        if (owner)
                json_write_string(f, owner);
        else
                fputs("null", f);
        fprintf(f, "\n%s}", indent);
#undef KEY
}

static void print_info(const LoopdDeviceInfo *i) {
        _cleanup_(freep) char *backing = escape_for_terminal(i->backing_file ? i->backing_file : "");
        const char *owner = owner_name(i->owner_uid);

        printf("           Name: %s\n", i->name ? i->name : "");
        printf("    Device path: %s\n", i->device_path ? i->device_path : "");
        printf("         Object: %s\n", i->object_path);
        printf("  Device number: %u:%u\n", major((dev_t) i->device_number), minor((dev_t) i->device_number));
        printf("        DiskSeq: %llu\n", (unsigned long long) i->diskseq);
        printf("   Backing file: %s\n", backing ? backing : "?");
        printf(" Backing device: %u:%u\n", major((dev_t) i->backing_device), minor((dev_t) i->backing_device));
        printf("  Backing inode: %llu\n", (unsigned long long) i->backing_inode);
        printf("         Offset: %llu\n", (unsigned long long) i->offset);
        printf("     Size limit: %llu\n", (unsigned long long) i->size_limit);
        printf("           Size: %llu\n", (unsigned long long) i->size);
        printf("     Block size: %u\n", (unsigned) i->block_size);
        printf("      Read-only: %s\n", i->read_only ? "yes" : "no");
        printf("      Autoclear: %s\n", i->autoclear ? "yes" : "no");
        printf("       Partscan: %s\n", i->partscan ? "yes" : "no");
        printf("      Direct IO: %s\n", i->direct_io ? "yes" : "no");
        printf("Bound to caller: %s\n", i->bound_to_caller ? "yes" : "no");
        if (i->owner_uid == LOOPD_UID_INVALID)
                printf("          Owner: - (not created through loopd)\n");
        else if (owner)
                printf("          Owner: %s (%u)\n", owner, (unsigned) i->owner_uid);
        else
                printf("          Owner: %u\n", (unsigned) i->owner_uid);
}

static int verb_info(int argc, char **argv) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        _cleanup_(loopd_device_unrefp) LoopdDevice *d = NULL;
        _cleanup_(loopd_device_info_freep) LoopdDeviceInfo *info = NULL;
        int first, r;

        r = parse_options(argc, argv, ACCEPT_JSON, help_info, &first);
        if (r >= 0)
                return r;
        if (argc - first != 1)
                return usage_error("info: %s DEV", argc - first < 1 ? "missing" : "exactly one");
        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        r = loopd_get_device(c, argv[first], &d);
        if (r < 0)
                return report(c, r, argv[first]);
        r = loopd_device_get_info(c, d, &info);
        if (r < 0)
                return report(c, r, argv[first]);

        if (arg_json) {
                json_write_device(stdout, info, "");
                fputc('\n', stdout);
        } else
                print_info(info);
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_GENERIC;
}

#define N_COLUMNS 9

static const char *const list_header[N_COLUMNS] = {
        "NAME", "SIZELIMIT", "OFFSET", "AUTOCLEAR", "RO", "BACK-FILE", "DIO", "LOG-SEC", "OWNER",
};
/* Numbers are right-aligned, as losetup does. */
static const bool list_right[N_COLUMNS] = { false, true, true, true, true, false, true, true, false };

static int print_table(LoopdDevice **devices, size_t n) {
        char *(*cells)[N_COLUMNS] = calloc(n, sizeof(*cells));
        size_t width[N_COLUMNS];
        int r = EXIT_OK;

        if (!cells && n > 0)
                return EXIT_GENERIC;
        for (size_t k = 0; k < N_COLUMNS; k++)
                width[k] = strlen(list_header[k]);

        for (size_t i = 0; i < n; i++) {
                const LoopdDeviceInfo *info = loopd_device_peek_info(devices[i]);
                const char *owner = owner_name(info->owner_uid);
                int ok = 1;

                ok &= asprintf(&cells[i][0], "%s", info->device_path ? info->device_path : "?") >= 0;
                ok &= asprintf(&cells[i][1], "%llu", (unsigned long long) info->size_limit) >= 0;
                ok &= asprintf(&cells[i][2], "%llu", (unsigned long long) info->offset) >= 0;
                ok &= asprintf(&cells[i][3], "%d", info->autoclear) >= 0;
                ok &= asprintf(&cells[i][4], "%d", info->read_only) >= 0;
                cells[i][5] = escape_for_terminal(info->backing_file ? info->backing_file : "");
                ok &= asprintf(&cells[i][6], "%d", info->direct_io) >= 0;
                ok &= asprintf(&cells[i][7], "%u", (unsigned) info->block_size) >= 0;
                if (info->owner_uid == LOOPD_UID_INVALID)
                        ok &= asprintf(&cells[i][8], "-") >= 0;
                else if (owner)
                        ok &= asprintf(&cells[i][8], "%s", owner) >= 0;
                else
                        ok &= asprintf(&cells[i][8], "%u", (unsigned) info->owner_uid) >= 0;
                if (!ok || !cells[i][5]) {
                        r = EXIT_GENERIC;
                        goto finish;
                }
                for (size_t k = 0; k < N_COLUMNS; k++) {
                        size_t w = text_width(cells[i][k]);
                        if (w > width[k])
                                width[k] = w;
                }
        }

        for (size_t i = 0; i <= n; i++) {
                for (size_t k = 0; k < N_COLUMNS; k++) {
                        const char *s = i == 0 ? list_header[k] : cells[i - 1][k];
                        size_t pad = width[k] - text_width(s);
                        bool last = k == N_COLUMNS - 1;

                        if (k > 0)
                                fputc(' ', stdout);
                        if (list_right[k])
                                printf("%*s", (int) pad, "");
                        fputs(s, stdout);
                        if (!list_right[k] && !last)
                                printf("%*s", (int) pad, "");
                }
                fputc('\n', stdout);
        }

finish:
        for (size_t i = 0; i < n; i++)
                for (size_t k = 0; k < N_COLUMNS; k++)
                        free(cells[i][k]);
        free(cells);
        return r;
}

static int verb_list(int argc, char **argv) {
        _cleanup_(loopd_client_unrefp) LoopdClient *c = NULL;
        LoopdDevice **devices = NULL;
        size_t n = 0;
        int first, r;

        r = parse_options(argc, argv, ACCEPT_JSON, help_list, &first);
        if (r >= 0)
                return r;
        if (first < argc)
                return usage_error("list: takes no arguments");
        r = client_open(&c);
        if (r != EXIT_OK)
                return r;
        r = loopd_list(c, &devices, &n);
        if (r < 0)
                return report(c, r, "list");

        if (arg_json) {
                fputs("{\n  \"devices\": [", stdout);
                for (size_t i = 0; i < n; i++) {
                        fputs(i > 0 ? ",\n    " : "\n    ", stdout);
                        json_write_device(stdout, loopd_device_peek_info(devices[i]), "    ");
                }
                fputs(n > 0 ? "\n  ]\n}\n" : "]\n}\n", stdout);
                r = EXIT_OK;
        } else if (n > 0)
                r = print_table(devices, n);
        else
                r = EXIT_OK;   /* like losetup: nothing, not even a header */

        loopd_device_list_free(devices, n);
        if (fflush(stdout) != 0)
                return EXIT_GENERIC;
        return r;
}

/* ---- main ---------------------------------------------------------------- */

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

int main(int argc, char **argv) {
        static const struct option options[] = {
                { "help",            no_argument, NULL, 'h' },
                { "version",         no_argument, NULL, ARG_VERSION },
                { "json",            no_argument, NULL, ARG_JSON },
                { "no-ask-password", no_argument, NULL, ARG_NO_ASK_PASSWORD },
                { NULL, 0, NULL, 0 }
        };
        int c;

        /* '+': stop at the command; its options are its own. */
        opterr = 0;
        while ((c = getopt_long(argc, argv, "+:h", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        fputs(help_main, stdout);
                        return EXIT_OK;
                case ARG_VERSION:
                        printf("loopctl %s\n", LOOPD_VERSION);
                        return EXIT_OK;
                case ARG_JSON:
                        arg_json = true;
                        break;
                case ARG_NO_ASK_PASSWORD:
                        arg_ask_password = false;
                        break;
                default:
                        if (optopt)
                                return usage_error("unknown option '-%c' (see loopctl --help)", optopt);
                        return usage_error("unknown option '%s' (see loopctl --help)", argv[optind - 1]);
                }

        if (optind >= argc)
                return usage_error("missing COMMAND (see loopctl --help)");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                if (strcmp(argv[optind], verbs[i].name) == 0) {
                        if (arg_json && verbs[i].run != verb_list && verbs[i].run != verb_info)
                                return usage_error("%s: --json is for list and info only", verbs[i].name);
                        return verbs[i].run(argc - optind, argv + optind);
                }
        return usage_error("unknown command '%s' (see loopctl --help)", argv[optind]);
}
