/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * Names are bytes: backing files whose names are not UTF-8, hold control
 * characters or a newline, look like loopd's own escapes or like the
 * kernel's " (deleted)" mark, or fill 4,000 bytes, attached through loopd
 * by an unprivileged user and by root with plain losetup. None of them may
 * break GetManagedObjects, InterfacesAdded, a GDBusObjectManagerClient,
 * loopctl's listing and JSON, or polkit's backing_file detail; BackingFile
 * is the documented escape (checked exactly), BackingFileBytes the bytes.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "owners-util.h"
#include "service-util.h"

#define NOBODY LOOPD_TEST_NOBODY

static const LoopdFixtureOptions opts = {
        .start_polkit = TRUE,
        .start_daemon = TRUE,
};

typedef struct Name {
        const char *label;
        const char *name;    /* the last component, bytes */
        const char *escaped; /* what BackingFile shows of it */
} Name;

/* Written as BackingFile's documentation says: bytes that are not part of
 * valid UTF-8, control characters (C0, DEL, C1) and the backslash become
 * \xNN; everything else stays. */
static const Name names[] = {
        { "latin-1", "lat\xe9n.img", "lat\\xe9n.img" },
        { "controls", "ctl\x01\x1b[31m\x7f.img", "ctl\\x01\\x1b[31m\\x7f.img" },
        { "newline", "new\nline.img", "new\\x0aline.img" },
        { "C1 control in UTF-8", "nel\xc2\x85.img", "nel\\xc2\\x85.img" },
        { "a backslash that reads like an escape", "back\\xe9.img", "back\\x5cxe9.img" },
        { "valid UTF-8", "\xc3\xbcn\xc3\xaf\xe2\x82\xac.img", "\xc3\xbcn\xc3\xaf\xe2\x82\xac.img" },
};

#define LONG_PATH_BYTES 4000

typedef struct Made {
        char *path;     /* bytes */
        char *escaped;  /* the whole path as BackingFile shows it */
        char *obj;
        char *dev;
} Made;

static void made_clear(Made *m) {
        g_free(m->path);
        g_free(m->escaped);
        g_free(m->obj);
        g_free(m->dev);
}

static char *hex_of(const char *s, gsize len) {
        GString *out = g_string_new(NULL);
        for (gsize i = 0; i < len; i++)
                g_string_append_printf(out, "%02x", (unsigned char) s[i]);
        return g_string_free(out, FALSE);
}

/* <dir>/<name> for each name, plus one path of exactly LONG_PATH_BYTES
 * bytes (directories of 200 bytes, a latin-1 byte in the file's name).
 * Files owned by @uid. */
static guint make_files(LoopdFixture *f, const char *sub, uid_t uid, Made *made) {
        g_autofree char *dir = g_build_filename(f->image_dir, sub, NULL);
        guint n = 0;

        g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
        for (gsize i = 0; i < G_N_ELEMENTS(names); i++, n++) {
                made[n].path = g_build_filename(dir, names[i].name, NULL);
                made[n].escaped = g_strconcat(dir, "/", names[i].escaped, NULL);
        }
        {
                GString *p = g_string_new(dir);
                g_autofree char *component = g_strnfill(200, 'd');
                const char *leaf = "long-\xff.img";
                while (p->len + 1 + 200 + 1 + strlen(leaf) <= LONG_PATH_BYTES) {
                        g_string_append_c(p, '/');
                        g_string_append(p, component);
                        g_assert_cmpint(mkdir(p->str, 0755), ==, 0);
                }
                /* Pad the leaf so the whole path is exactly LONG_PATH_BYTES. */
                g_string_append_c(p, '/');
                {
                        gsize pad = LONG_PATH_BYTES - p->len - strlen(leaf);
                        g_autofree char *fill = g_strnfill(pad, 'p');
                        g_autofree char *escaped_dir = NULL;
                        escaped_dir = g_strdup(p->str);
                        g_string_append(p, fill);
                        g_string_append(p, leaf);
                        made[n].escaped = g_strconcat(escaped_dir, fill, "long-\\xff.img", NULL);
                }
                g_assert_cmpuint(p->len, ==, LONG_PATH_BYTES);
                made[n].path = g_string_free(p, FALSE);
                n++;
        }
        for (guint i = 0; i < n; i++) {
                int fd = open(made[i].path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
                if (fd < 0)
                        g_error("creating '%s': %s", made[i].escaped, g_strerror(errno));
                g_assert_cmpint(ftruncate(fd, 1 * MiB), ==, 0);
                g_assert_cmpint(fchown(fd, uid, uid), ==, 0);
                close(fd);
        }
        return n;
}

/* A polkit rule that lets nobody create exactly from these files: the
 * detail must be the escaped text, byte for byte. */
static char *rules_for(const Made *made, guint n) {
        GString *js = g_string_new("var allowed = [\n");

        for (guint i = 0; i < n; i++) {
                g_string_append_c(js, '\'');
                for (const char *c = made[i].escaped; *c; c++) {
                        if (*c == '\\' || *c == '\'')
                                g_string_append_c(js, '\\');
                        g_string_append_c(js, *c);
                }
                g_string_append(js, "',\n");
        }
        g_string_append(js, "];\n"
                            "polkit.addRule(function(action, subject) {\n"
                            "        if (action.id != '" LOOPD_ACTION_CREATE "' || subject.user != 'nobody')\n"
                            "                return polkit.Result.NOT_HANDLED;\n"
                            "        if (allowed.indexOf(action.lookup('backing_file')) >= 0)\n"
                            "                return polkit.Result.YES;\n"
                            "        polkit.log('loopd test: unexpected backing_file ' + action.lookup('backing_file'));\n"
                            "        return polkit.Result.NO;\n"
                            "});\n");
        return g_string_free(js, FALSE);
}

static void lookup_props(GVariant *ifaces, const char *obj, char **ret_backing, char **ret_bytes_hex, gboolean *ret_deleted) {
        g_autoptr(GVariant) props = g_variant_lookup_value(ifaces, LOOPD_DEVICE_INTERFACE, G_VARIANT_TYPE("a{sv}"));
        g_autoptr(GVariant) bytes = NULL;
        gsize len;
        const char *b;

        if (!props)
                g_error("%s: no %s interface", obj, LOOPD_DEVICE_INTERFACE);
        g_assert_true(g_variant_lookup(props, "BackingFile", "s", ret_backing));
        g_assert_true(g_variant_lookup(props, "BackingFileDeleted", "b", ret_deleted));
        bytes = g_variant_lookup_value(props, "BackingFileBytes", G_VARIANT_TYPE_BYTESTRING);
        g_assert_nonnull(bytes);
        b = g_variant_get_fixed_array(bytes, &len, 1);
        *ret_bytes_hex = hex_of(b, len);
}

/* Everything a client sees of @made, as nobody where a user would look. */
static void check_everything(LoopdFixture *f, Made *made, guint n) {
        g_auto(LoopdRunResult) r = { 0 };
        g_auto(GStrv) lines = NULL;
        guint seen = 0;

        /* GetManagedObjects as nobody: every device, exact escapes and bytes. */
        probe_as(f, NOBODY, &r, "managed", NULL);
        if (r.status != 0)
                g_error("GetManagedObjects as nobody: %s%s", r.out, r.err);
        g_assert_true(g_utf8_validate(r.out, -1, NULL));
        lines = g_strsplit(r.out, "\n", -1);
        for (guint i = 0; i < n; i++) {
                g_autofree char *want_hex = hex_of(made[i].path, strlen(made[i].path) + 1);
                gboolean found = FALSE;
                for (char **l = lines; *l && !found; l++) {
                        g_auto(GStrv) w = g_strsplit(*l, "\t", 4);
                        if (g_strv_length(w) != 4 || g_strcmp0(w[0], made[i].obj) != 0)
                                continue;
                        found = TRUE;
                        if (g_strcmp0(w[1], made[i].escaped) != 0)
                                g_error("BackingFile of '%s' is '%s'", made[i].escaped, w[1]);
                        if (g_strcmp0(w[2], want_hex) != 0)
                                g_error("BackingFileBytes of '%s' is %s, not %s", made[i].escaped, w[2], want_hex);
                        if (g_strcmp0(w[3], "0") != 0)
                                g_error("'%s' is not deleted, yet BackingFileDeleted is %s", made[i].escaped, w[3]);
                        seen++;
                }
                if (!found)
                        g_error("GetManagedObjects lacks %s ('%s')", made[i].obj, made[i].escaped);
        }
        g_assert_cmpuint(seen, ==, n);

        /* GetAll of each, as nobody, after a moment: a re-read from sysfs
         * must not change what the names say. */
        spin(0.2);
        for (guint i = 0; i < n; i++) {
                g_auto(LoopdRunResult) p = { 0 };
                g_autofree char *want = NULL;
                probe_as(f, NOBODY, &p, "props", made[i].obj, NULL);
                g_assert_cmpint(p.status, ==, 0);
                want = g_strdup_printf("%s\t%s\t", made[i].obj, made[i].escaped);
                if (!g_str_has_prefix(p.out, want) || !strstr(p.out, "\t0\nok 1\n"))
                        g_error("GetAll of '%s': %s", made[i].escaped, p.out);
        }

        /* GLib's object manager client, which one bad name used to stop. */
        {
                g_autoptr(GError) error = NULL;
                g_autoptr(GDBusObjectManager) om = g_dbus_object_manager_client_new_sync(
                        f->bus, G_DBUS_OBJECT_MANAGER_CLIENT_FLAGS_DO_NOT_AUTO_START, LOOPD_BUS_NAME, LOOPD_MANAGER_PATH,
                        NULL, NULL, NULL, NULL, &error);
                g_assert_no_error(error);
                for (guint i = 0; i < n; i++) {
                        g_autoptr(GDBusInterface) iface = g_dbus_object_manager_get_interface(om, made[i].obj,
                                                                                                LOOPD_DEVICE_INTERFACE);
                        g_autoptr(GVariant) v = NULL;
                        g_assert_nonnull(iface);
                        v = g_dbus_proxy_get_cached_property(G_DBUS_PROXY(iface), "BackingFile");
                        g_assert_nonnull(v);
                        g_assert_cmpstr(g_variant_get_string(v, NULL), ==, made[i].escaped);
                }
        }

        /* loopctl list and list -J, as nobody. */
        {
                g_auto(LoopdRunResult) t = { 0 };
                loopd_fixture_run_as(f, NOBODY, NOBODY, (const char *const[]) { LOOPCTL_BINARY, "list", NULL }, &t);
                if (t.status != 0)
                        g_error("loopctl list as nobody: exit %d: %s", t.status, t.err);
                for (guint i = 0; i < n; i++)
                        g_assert_nonnull(strstr(t.out, made[i].dev));
        }
        {
                g_auto(LoopdRunResult) j = { 0 };
                g_autofree char *json_path = g_build_filename(f->tmpdir, "list.json", NULL);
                g_autofree char *out = NULL, *err = NULL;
                loopd_fixture_run_as(f, NOBODY, NOBODY,
                                     (const char *const[]) { LOOPCTL_BINARY, "list", "-J", "-O", "NAME,BACK-FILE", NULL },
                                     &j);
                if (j.status != 0)
                        g_error("loopctl list -J as nobody: exit %d: %s", j.status, j.err);
                g_assert_true(g_utf8_validate(j.out, -1, NULL));
                g_assert_true(g_file_set_contents(json_path, j.out, -1, NULL));
                if (access("/usr/bin/python3", X_OK) < 0) {
                        g_test_message("no /usr/bin/python3: loopctl's JSON not parsed");
                        return;
                }
                /* A real parser judges it; each back-file as UTF-8 hex. */
                if (run_command((const char *const[]) {
                            "/usr/bin/python3", "-c",
                            "import json,sys\n"
                            "d=json.load(open(sys.argv[1]))\n"
                            "for x in d['loopdevices']:\n"
                            "    print(x['name'], x['back-file'].encode('utf-8').hex())\n",
                            json_path, NULL }, &out, &err) != 0)
                        g_error("loopctl list -J is not valid JSON (%s):\n%s", err, j.out);
                for (guint i = 0; i < n; i++) {
                        /* A name that is UTF-8 comes as itself, JSON
                         * escaping what it must; one that is not, as
                         * BackingFile's escape. */
                        const char *want = g_utf8_validate(made[i].path, -1, NULL) ? made[i].path : made[i].escaped;
                        g_autofree char *hex = hex_of(want, strlen(want));
                        g_autofree char *line = g_strdup_printf("%s %s\n", made[i].dev, hex);
                        if (!strstr(out, line))
                                g_error("loopctl list -J: %s should show '%s' (hex %s); the parser read:\n%s",
                                        made[i].dev, made[i].escaped, hex, out);
                }
        }
}

static void created_signal(SignalLog *log, const Made *m) {
        g_autoptr(GVariant) params = signal_log_wait(log, "InterfacesAdded", m->obj, 10);
        g_autoptr(GVariant) ifaces = NULL;
        g_autofree char *backing = NULL, *hex = NULL, *want_hex = NULL;
        gboolean deleted = TRUE;

        if (!params)
                g_error("no InterfacesAdded for %s ('%s')", m->obj, m->escaped);
        ifaces = g_variant_get_child_value(params, 1);
        lookup_props(ifaces, m->obj, &backing, &hex, &deleted);
        want_hex = hex_of(m->path, strlen(m->path) + 1);
        g_assert_cmpstr(backing, ==, m->escaped);
        g_assert_cmpstr(hex, ==, want_hex);
        g_assert_false(deleted);
}

static void test_names_through_loopd(LoopdFixture *f, gconstpointer data) {
        Made made[G_N_ELEMENTS(names) + 1] = { { 0 } };
        g_autofree char *rules = NULL;
        g_autoptr(SignalLog) log = NULL;
        guint n;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        n = make_files(f, "user", NOBODY, made);
        rules = rules_for(made, n);
        loopd_fixture_set_polkit_rules(f, rules);
        log = signal_log_new(f->bus);
        for (guint i = 0; i < n; i++) {
                g_auto(LoopdRunResult) r = { 0 };
                loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "create", made[i].path, NULL);
                if (r.status != 0)
                        g_error("create '%s' as nobody (polkit allows exactly that escaped text): %s", made[i].escaped,
                                r.out);
                made[i].obj = g_strdup(r.fields[1]);
                made[i].dev = g_strdup(r.fields[2]);
                created_signal(log, &made[i]);
        }
        check_everything(f, made, n);
        for (guint i = 0; i < n; i++)
                made_clear(&made[i]);
}

static void test_names_through_losetup(LoopdFixture *f, gconstpointer data) {
        Made made[G_N_ELEMENTS(names) + 1] = { { 0 } };
        g_autoptr(SignalLog) log = NULL;
        guint n;

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        n = make_files(f, "root", 0, made);
        log = signal_log_new(f->bus);
        for (guint i = 0; i < n; i++) {
                g_autoptr(GError) error = NULL;
                g_autoptr(GVariant) v = NULL;
                made[i].dev = losetup_attach(made[i].path, NULL);
                /* loopd learns of it from the kernel's uevent. */
                for (int k = 0; k < 500 && !v; k++) {
                        g_clear_error(&error);
                        v = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE, "GetDevice",
                                       g_variant_new("(s)", made[i].dev), "(o)", &error);
                        if (!v)
                                g_usleep(10000);
                }
                g_assert_no_error(error);
                g_variant_get(v, "(o)", &made[i].obj);
                created_signal(log, &made[i]);
        }
        check_everything(f, made, n);
        for (guint i = 0; i < n; i++) {
                losetup_detach(made[i].dev);
                made_clear(&made[i]);
        }
}

/* The kernel marks an unlinked file by appending " (deleted)" to its name,
 * so a live file may well be named like that. Its name is then exactly
 * that, it is not deleted, and a re-read must not change its mind. */
static void test_name_like_the_unlink_mark(LoopdFixture *f, gconstpointer data) {
        g_autofree char *dir = g_build_filename(f->image_dir, "mark", NULL);
        g_autoptr(SignalLog) log = NULL;
        g_auto(LoopdRunResult) r = { 0 };
        g_auto(LoopdRunResult) p = { 0 };
        g_autofree char *want = NULL, *want_hex = NULL;
        Made m = { 0 };

        LOOPD_FIXTURE_RETURN_IF_SKIPPED(f);
        loopd_fixture_set_polkit_rules(f, LOOPD_RULE_ALLOW("nobody", LOOPD_ACTION_CREATE));
        g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
        m.path = g_build_filename(dir, "disk (deleted)", NULL);
        m.escaped = g_strdup(m.path);
        {
                int fd = open(m.path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
                g_assert_cmpint(fd, >=, 0);
                g_assert_cmpint(ftruncate(fd, 1 * MiB), ==, 0);
                g_assert_cmpint(fchown(fd, NOBODY, NOBODY), ==, 0);
                close(fd);
        }
        log = signal_log_new(f->bus);
        loopd_fixture_call_as(f, NOBODY, NOBODY, &r, "create", m.path, NULL);
        g_assert_cmpint(r.status, ==, 0);
        m.obj = g_strdup(r.fields[1]);
        m.dev = g_strdup(r.fields[2]);
        want_hex = hex_of(m.path, strlen(m.path) + 1);
        want = g_strdup_printf("%s\t%s\t%s\t0\nok 1\n", m.obj, m.escaped, want_hex);
        spin(0.2);
        probe_as(f, NOBODY, &p, "props", m.obj, NULL);
        g_assert_cmpint(p.status, ==, 0);
        if (g_strcmp0(p.out, want) != 0)
                g_error("a live file named '%s': GetAll says (object, BackingFile, BackingFileBytes, "
                        "BackingFileDeleted):\n%sinstead of:\n%s", m.path, p.out, want);
        created_signal(log, &m);

        /* The same file attached by root with losetup: loopd learns of it
         * from sysfs, which cannot tell; its reading of the device (off
         * the event loop, with the inode) must settle it. */
        {
                g_autofree char *dev = losetup_attach(m.path, NULL);
                g_autofree char *obj = NULL, *got = NULL;
                gint64 deadline = g_get_monotonic_time() + (gint64) (5 * loopd_test_timeout_scale() * G_USEC_PER_SEC);

                for (;;) {
                        g_autoptr(GVariant) v = loopd_call(f->bus, LOOPD_MANAGER_PATH, LOOPD_MANAGER_INTERFACE,
                                                           "GetDevice", g_variant_new("(s)", dev), "(o)", NULL);
                        if (v && !obj)
                                g_variant_get(v, "(o)", &obj);
                        if (obj) {
                                g_auto(LoopdRunResult) q = { 0 };
                                g_free(want);
                                want = g_strdup_printf("%s\t%s\t%s\t0\nok 1\n", obj, m.escaped, want_hex);
                                probe_as(f, NOBODY, &q, "props", obj, NULL);
                                g_free(got);
                                got = g_strdup(q.out);
                                if (g_strcmp0(got, want) == 0)
                                        break;
                        }
                        if (g_get_monotonic_time() > deadline)
                                g_error("a live file named '%s' attached with losetup: GetAll still says:\n%sinstead "
                                        "of:\n%s", m.path, got ? got : "(no object)\n", want);
                        g_usleep(50000);
                }
                losetup_detach(dev);
        }
        made_clear(&m);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

        g_test_add("/names/created-through-loopd-by-a-user", LoopdFixture, &opts, loopd_fixture_setup,
                   test_names_through_loopd, loopd_fixture_teardown);
        g_test_add("/names/attached-by-root-with-losetup", LoopdFixture, &opts, loopd_fixture_setup,
                   test_names_through_losetup, loopd_fixture_teardown);
        g_test_add("/names/live-file-named-like-the-unlink-mark", LoopdFixture, &opts, loopd_fixture_setup,
                   test_name_like_the_unlink_mark, loopd_fixture_teardown);
        return g_test_run();
}
