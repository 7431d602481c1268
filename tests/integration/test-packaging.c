/* SPDX-License-Identifier: LGPL-2.1-or-later */

/*
 * The files `meson install` puts where systemd, dbus and polkit look,
 * checked with those programs' own tools where they exist here:
 * systemd-analyze for the unit, xmllint with polkit's DTD for the policy,
 * a real dbus-daemon for the bus policy, GKeyFile for the activation file.
 * The paths come from meson (LOOPD_SERVICE_UNIT, ...): the files tested are
 * the configured ones that get installed.
 */

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "fixture.h"

/* Regression guard for the unit's sandbox: 2.0 when written. */
#define MAX_EXPOSURE 2.5

static const char *need_env(const char *name) {
        const char *v = g_getenv(name);
        if (!v || !*v)
                g_error("%s is not set: run this test through `meson test`", name);
        return v;
}

static gboolean run(const char *const *argv, char **out, char **err, int *status) {
        g_autoptr(GError) error = NULL;
        int wait_status;

        if (!g_spawn_sync(NULL, (char **) argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, out, err, &wait_status,
                          &error)) {
                g_test_message("%s: %s", argv[0], error->message);
                return FALSE;
        }
        *status = WIFEXITED(wait_status) ? WEXITSTATUS(wait_status) : 128 + WTERMSIG(wait_status);
        return TRUE;
}

static gboolean have_program(const char *name) {
        g_autofree char *p = g_find_program_in_path(name);
        return p != NULL;
}

/* ---- loopd.service ------------------------------------------------------ */

typedef struct {
        char *dir;
        char *unit;
        char *exec; /* what ExecStart= points at in the copy */
} UnitCopy;

/*
 * systemd-analyze wants ExecStart= to exist, and the configured unit points
 * into the install prefix. Verify a copy that points at the built loopd, or
 * at a stand-in when the daemon is not built, changing nothing else.
 */
static void unit_copy_init(UnitCopy *c) {
        const char *src = need_env("LOOPD_SERVICE_UNIT");
        const char *binary = loopd_fixture_daemon_binary();
        g_autoptr(GError) error = NULL;
        g_autofree char *text = NULL;
        g_auto(GStrv) lines = NULL;
        g_autoptr(GString) out = g_string_new(NULL);
        int replaced = 0;

        c->dir = g_dir_make_tmp("loopd-packaging-XXXXXX", &error);
        g_assert_no_error(error);

        if (binary)
                c->exec = g_strdup(binary);
        else {
                g_autofree char *stub_text = NULL;
                gsize len;
                c->exec = g_build_filename(c->dir, "loopd", NULL);
                g_assert_true(g_file_get_contents("/bin/true", &stub_text, &len, &error));
                g_assert_true(g_file_set_contents(c->exec, stub_text, (gssize) len, &error));
                g_assert_cmpint(g_chmod(c->exec, 0755), ==, 0);
                g_test_message("LOOPD_BINARY not built: ExecStart= points at a copy of /bin/true");
        }

        g_assert_true(g_file_get_contents(src, &text, NULL, &error));
        lines = g_strsplit(text, "\n", -1);
        for (char **l = lines; *l; l++) {
                if (g_str_has_prefix(*l, "ExecStart=")) {
                        g_string_append_printf(out, "ExecStart=%s", c->exec);
                        replaced++;
                } else
                        g_string_append(out, *l);
                if (l[1])
                        g_string_append_c(out, '\n');
        }
        g_assert_cmpint(replaced, ==, 1);

        c->unit = g_build_filename(c->dir, "loopd.service", NULL);
        g_assert_true(g_file_set_contents(c->unit, out->str, -1, &error));
}

static void unit_copy_clear(UnitCopy *c) {
        g_autofree char *stub = g_build_filename(c->dir, "loopd", NULL);
        g_unlink(c->unit);
        g_unlink(stub);
        g_rmdir(c->dir);
        g_free(c->dir);
        g_free(c->unit);
        g_free(c->exec);
}

static void test_unit_verify_prints_nothing(void) {
        UnitCopy c = { 0 };
        g_autofree char *out = NULL, *err = NULL;
        int status;

        if (!have_program("systemd-analyze")) {
                g_test_skip("systemd-analyze is not installed (package systemd)");
                return;
        }
        unit_copy_init(&c);
        g_assert_true(run((const char *const[]) { "systemd-analyze", "verify", "--man=no", c.unit, NULL }, &out,
                          &err, &status));
        /* Unknown or misspelt keys only warn, with exit status 0: any
         * output at all is a failure. */
        if (*out || *err)
                g_test_message("systemd-analyze verify said:\n%s%s", out, err);
        g_assert_cmpstr(out, ==, "");
        g_assert_cmpstr(err, ==, "");
        g_assert_cmpint(status, ==, 0);
        unit_copy_clear(&c);
}

static void test_unit_security_scores_low_exposure(void) {
        UnitCopy c = { 0 };
        g_autofree char *out = NULL, *err = NULL, *level = NULL;
        g_autoptr(GRegex) re = NULL;
        g_autoptr(GMatchInfo) m = NULL;
        g_autofree char *score_text = NULL;
        double score;
        int status;

        if (!have_program("systemd-analyze")) {
                g_test_skip("systemd-analyze is not installed (package systemd)");
                return;
        }
        unit_copy_init(&c);
        g_assert_true(run((const char *const[]) { "systemd-analyze", "security", "--offline=yes", "--no-pager",
                                                  c.unit, NULL },
                          &out, &err, &status));
        g_assert_cmpint(status, ==, 0);

        re = g_regex_new("Overall exposure level for loopd\\.service: ([0-9]+\\.[0-9]+) (\\S+)", 0, 0, NULL);
        if (!g_regex_match(re, out, 0, &m))
                g_error("systemd-analyze security printed no score:\n%s%s", out, err);
        score_text = g_match_info_fetch(m, 1);
        level = g_match_info_fetch(m, 2);
        score = g_ascii_strtod(score_text, NULL);
        g_test_message("systemd-analyze security --offline=yes: loopd.service exposure %s %s", score_text, level);
        if (score > MAX_EXPOSURE)
                g_test_message("%s", out);
        g_assert_cmpfloat(score, <=, MAX_EXPOSURE);
        unit_copy_clear(&c);
}

static void test_unit_declares_contract(void) {
        const char *path = need_env("LOOPD_SERVICE_UNIT");
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GError) error = NULL;
        g_autofree char *exec = NULL, *caps = NULL;

        /* GKeyFile reads unit syntax well enough for single keys (a
         * repeated key answers its last value). */
        g_assert_true(g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &error));
#define EXPECT(key, value)                                                                     \
        G_STMT_START {                                                                         \
                g_autofree char *v_ = g_key_file_get_string(kf, "Service", key, &error);       \
                g_assert_no_error(error);                                                      \
                g_assert_cmpstr(v_, ==, value);                                                \
        } G_STMT_END
        EXPECT("Type", "notify");
        EXPECT("BusName", LOOPD_BUS_NAME);
        EXPECT("RuntimeDirectory", "loopd");
        EXPECT("RuntimeDirectoryPreserve", "yes");
        EXPECT("ProtectSystem", "strict");
        EXPECT("PrivateNetwork", "yes");
        EXPECT("DevicePolicy", "closed");
        EXPECT("NoNewPrivileges", "yes");
        EXPECT("UMask", "0077");
        EXPECT("FileDescriptorStoreMax", "16384");
#undef EXPECT

        exec = g_key_file_get_string(kf, "Service", "ExecStart", &error);
        g_assert_no_error(error);
        /* Keepers survive a crash in systemd's fd store (loopd(8), --fd-store). */
        g_assert_true(g_str_has_suffix(exec, "/sbin/loopd --fd-store"));
        g_assert_true(g_path_is_absolute(exec));

        caps = g_key_file_get_string(kf, "Service", "CapabilityBoundingSet", &error);
        g_assert_no_error(error);
        g_assert_nonnull(strstr(caps, "CAP_SYS_ADMIN"));
        /* Root's CreateFromPath opens with root's rights (loopd(8)); loopd
         * itself keeps these out of its effective set. */
        g_assert_nonnull(strstr(caps, "CAP_DAC_OVERRIDE"));
        g_assert_nonnull(strstr(caps, "CAP_SYS_PTRACE"));
        g_assert_null(strstr(caps, "CAP_MKNOD"));
        g_assert_null(strstr(caps, "CAP_FOWNER"));
        g_assert_null(strstr(caps, "CAP_SYS_MODULE"));
}

/* ---- the activation file ----------------------------------------------- */

static void test_activation_file_names_service_and_unit(void) {
        const char *path = need_env("LOOPD_ACTIVATION_FILE");
        const char *unit_path = need_env("LOOPD_SERVICE_UNIT");
        g_autoptr(GKeyFile) kf = g_key_file_new();
        g_autoptr(GKeyFile) unit = g_key_file_new();
        g_autoptr(GError) error = NULL;
        g_autofree char *name = NULL, *exec = NULL, *user = NULL, *systemd_service = NULL, *exec_start = NULL;

        g_assert_true(g_key_file_load_from_file(kf, path, G_KEY_FILE_NONE, &error));
        name = g_key_file_get_string(kf, "D-BUS Service", "Name", &error);
        g_assert_no_error(error);
        exec = g_key_file_get_string(kf, "D-BUS Service", "Exec", &error);
        g_assert_no_error(error);
        user = g_key_file_get_string(kf, "D-BUS Service", "User", &error);
        g_assert_no_error(error);
        systemd_service = g_key_file_get_string(kf, "D-BUS Service", "SystemdService", &error);
        g_assert_no_error(error);

        g_assert_cmpstr(name, ==, LOOPD_BUS_NAME);
        g_assert_cmpstr(user, ==, "root");
        g_assert_cmpstr(systemd_service, ==, "loopd.service");
        /* A system bus only reads Name.service. */
        g_assert_cmpstr(strrchr(path, '/') + 1, ==, LOOPD_BUS_NAME ".service");

        /* Both ways of starting loopd start the same binary. */
        g_assert_true(g_key_file_load_from_file(unit, unit_path, G_KEY_FILE_NONE, &error));
        exec_start = g_key_file_get_string(unit, "Service", "ExecStart", &error);
        g_assert_no_error(error);
        g_assert_nonnull(strchr(exec_start, ' '));
        *strchr(exec_start, ' ') = 0; /* the unit's options need systemd */
        g_assert_cmpstr(exec, ==, exec_start);
        g_assert_false(strchr(exec, '@')); /* configured */
}

/* ---- the polkit policy -------------------------------------------------- */

typedef struct {
        char *action;  /* current <action id> */
        char *element; /* current leaf element */
        GHashTable *actions; /* id -> GHashTable of element -> text */
} PolicyParse;

static void policy_start(GMarkupParseContext *ctx, const char *element, const char **names, const char **values,
                         gpointer data, GError **error) {
        PolicyParse *p = data;

        if (strcmp(element, "action") == 0) {
                const char *id = NULL;
                for (size_t i = 0; names[i]; i++)
                        if (strcmp(names[i], "id") == 0)
                                id = values[i];
                g_assert_nonnull(id);
                g_free(p->action);
                p->action = g_strdup(id);
                g_hash_table_insert(p->actions, g_strdup(id),
                                    g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free));
        } else {
                g_free(p->element);
                p->element = g_strdup(element);
        }
}

static void policy_end(GMarkupParseContext *ctx, const char *element, gpointer data, GError **error) {
        PolicyParse *p = data;
        if (strcmp(element, "action") == 0)
                g_clear_pointer(&p->action, g_free);
        g_clear_pointer(&p->element, g_free);
}

static void policy_text(GMarkupParseContext *ctx, const char *text, gsize len, gpointer data, GError **error) {
        PolicyParse *p = data;
        g_autofree char *t = g_strstrip(g_strndup(text, len));

        if (!p->action || !p->element || !*t)
                return;
        g_hash_table_insert(g_hash_table_lookup(p->actions, p->action), g_strdup(p->element), g_steal_pointer(&t));
}

static GHashTable *parse_policy(const char *path) {
        static const GMarkupParser parser = { .start_element = policy_start, .end_element = policy_end,
                                              .text = policy_text };
        PolicyParse p = { .actions = g_hash_table_new_full(g_str_hash, g_str_equal, g_free,
                                                           (GDestroyNotify) g_hash_table_unref) };
        g_autoptr(GError) error = NULL;
        g_autofree char *text = NULL;
        gsize len;
        GMarkupParseContext *ctx;

        g_assert_true(g_file_get_contents(path, &text, &len, &error));
        ctx = g_markup_parse_context_new(&parser, G_MARKUP_TREAT_CDATA_AS_TEXT, &p, NULL);
        if (!g_markup_parse_context_parse(ctx, text, (gssize) len, &error) ||
            !g_markup_parse_context_end_parse(ctx, &error))
                g_error("%s does not parse: %s", path, error->message);
        g_markup_parse_context_free(ctx);
        g_free(p.action);
        g_free(p.element);
        return p.actions;
}

static void test_polkit_policy_validates_against_dtd(void) {
        const char *path = need_env("LOOPD_POLKIT_POLICY");
        const char *dtd = "/usr/share/polkit-1/policyconfig-1.dtd";
        g_autofree char *out = NULL, *err = NULL;
        int status;

        if (!have_program("xmllint")) {
                g_test_skip("xmllint is not installed (package libxml2-utils)");
                return;
        }
        if (g_file_test(dtd, G_FILE_TEST_EXISTS))
                g_assert_true(run((const char *const[]) { "xmllint", "--noout", "--nonet", "--dtdvalid", dtd, path, NULL },
                                  &out, &err, &status));
        else {
                g_test_message("%s is missing: checking well-formedness only", dtd);
                g_assert_true(run((const char *const[]) { "xmllint", "--noout", "--nonet", path, NULL }, &out, &err,
                                  &status));
        }
        if (status != 0)
                g_test_message("xmllint: %s", err);
        g_assert_cmpint(status, ==, 0);
        g_assert_cmpstr(err, ==, "");
}

static void test_polkit_policy_declares_both_actions(void) {
        g_autoptr(GHashTable) actions = parse_policy(need_env("LOOPD_POLKIT_POLICY"));
        GHashTable *create = g_hash_table_lookup(actions, LOOPD_ACTION_CREATE);
        GHashTable *others = g_hash_table_lookup(actions, LOOPD_ACTION_MANAGE_OTHERS);

        /* Every action loopd checks, and nothing else: a stray action would
         * be a permission nobody tests. */
        g_assert_cmpuint(g_hash_table_size(actions), ==, 2);
        g_assert_nonnull(create);
        g_assert_nonnull(others);

        /* As udisks2's loop-setup: an active local user may map a file it
         * already holds; anyone else must be an admin. */
        g_assert_cmpstr(g_hash_table_lookup(create, "allow_any"), ==, "auth_admin");
        g_assert_cmpstr(g_hash_table_lookup(create, "allow_inactive"), ==, "auth_admin");
        g_assert_cmpstr(g_hash_table_lookup(create, "allow_active"), ==, "yes");
        g_assert_cmpstr(g_hash_table_lookup(others, "allow_any"), ==, "auth_admin_keep");
        g_assert_cmpstr(g_hash_table_lookup(others, "allow_inactive"), ==, "auth_admin_keep");
        g_assert_cmpstr(g_hash_table_lookup(others, "allow_active"), ==, "auth_admin_keep");

        /* What a polkit agent shows a person: the file and the device. */
        g_assert_nonnull(g_hash_table_lookup(create, "description"));
        g_assert_nonnull(strstr(g_hash_table_lookup(create, "message"), "$(backing_file)"));
        g_assert_nonnull(g_hash_table_lookup(others, "description"));
        g_assert_nonnull(strstr(g_hash_table_lookup(others, "message"), "$(device)"));
}

/* ---- the bus policy and the interface ------------------------------------ */

static void xmllint_wellformed(const char *path) {
        g_autofree char *out = NULL, *err = NULL;
        int status;

        if (!have_program("xmllint")) {
                g_test_skip("xmllint is not installed (package libxml2-utils)");
                return;
        }
        g_assert_true(run((const char *const[]) { "xmllint", "--noout", "--nonet", path, NULL }, &out, &err, &status));
        if (status != 0)
                g_test_message("xmllint: %s", err);
        g_assert_cmpint(status, ==, 0);
}

static void test_bus_policy_is_wellformed(void) {
        xmllint_wellformed(need_env("LOOPD_BUS_POLICY"));
}

static void test_interface_xml_is_wellformed(void) {
        xmllint_wellformed(need_env("LOOPD_INTERFACE_XML"));
}

static void test_bus_policy_opens_every_interface(void) {
        g_autoptr(GError) error = NULL;
        g_autofree char *xml = NULL, *policy = NULL;
        g_autoptr(GDBusNodeInfo) node = NULL;
        static const char *const standard[] = {
                "org.freedesktop.DBus.Properties", "org.freedesktop.DBus.Introspectable",
                "org.freedesktop.DBus.ObjectManager", "org.freedesktop.DBus.Peer", NULL,
        };

        g_assert_true(g_file_get_contents(need_env("LOOPD_INTERFACE_XML"), &xml, NULL, &error));
        g_assert_true(g_file_get_contents(need_env("LOOPD_BUS_POLICY"), &policy, NULL, &error));
        node = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);

        for (GDBusInterfaceInfo **i = node->interfaces; i && *i; i++) {
                g_autofree char *rule = g_strdup_printf("send_interface=\"%s\"", (*i)->name);
                if (!strstr(policy, rule))
                        g_error("the bus policy does not let callers reach %s", (*i)->name);
        }
        for (const char *const *s = standard; *s; s++) {
                g_autofree char *rule = g_strdup_printf("send_interface=\"%s\"", *s);
                g_assert_nonnull(strstr(policy, rule));
        }
}

static void own_name(LoopdFixture *f, const char *name, guint32 expect) {
        g_autoptr(GError) error = NULL;
        g_autoptr(GVariant) r = g_dbus_connection_call_sync(
                f->bus, "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "RequestName",
                g_variant_new("(su)", name, 0), G_VARIANT_TYPE("(u)"), G_DBUS_CALL_FLAGS_NONE, 5000, NULL, &error);
        guint32 result;

        g_assert_no_error(error);
        g_variant_get(r, "(u)", &result);
        g_assert_cmpuint(result, ==, expect);
}

/*
 * The production policy, included as is by a real system-type
 * dbus-daemon: root owns the name, nobody cannot; nobody may call loopd's
 * interfaces and nothing else. The name is owned by this test's own root
 * connection, whose GDBus answers UnknownMethod: an answer from the owner,
 * so the bus let the call through, unlike the bus's own AccessDenied.
 */
static LoopdFixture *private_bus_owning_loopds_name(void) {
        LoopdFixture *f = loopd_fixture_new(NULL);

        if (!f->skipped)
                own_name(f, LOOPD_BUS_NAME, 1 /* DBUS_REQUEST_NAME_REPLY_PRIMARY_OWNER */);
        return f;
}

static void test_bus_policy_lets_anyone_call_loopd(void) {
        g_autoptr(LoopdFixture) f = private_bus_owning_loopds_name();
        g_auto(LoopdRunResult) r = { 0 };

        if (f->skipped)
                return;

        /* Anyone may call Manager methods: the bus passes them on. */
        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "remove", "loop0", NULL);
        g_assert_cmpint(r.status, ==, 1);
        g_assert_cmpstr(r.fields[0], ==, "error");
        g_assert_cmpstr(r.fields[1], !=, LOOPD_DBUS_ERROR_ACCESS_DENIED);

        loopd_fixture_call_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY, &r, "get", LOOPD_DEVICE_PATH_PREFIX "/loop0_1",
                              "Name", NULL);
        g_assert_cmpstr(r.fields[0], ==, "error");
        g_assert_cmpstr(r.fields[1], !=, LOOPD_DBUS_ERROR_ACCESS_DENIED);
}

/* What the policy denies: calls loopd-test-caller cannot make (any
 * interface, RequestName), so gdbus makes them. */
static void test_bus_policy_denies_the_rest(void) {
        g_autoptr(LoopdFixture) f = NULL;
        g_auto(LoopdRunResult) r = { 0 };

        if (!have_program("gdbus")) {
                g_test_skip("gdbus is not installed (package libglib2.0-bin): the policy's denials are unchecked");
                return;
        }
        f = private_bus_owning_loopds_name();
        if (f->skipped)
                return;

        /* Peer is open, an interface the policy does not list is not. */
        loopd_fixture_run_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                             (const char *const[]) { "gdbus", "call", "--system", "--dest", LOOPD_BUS_NAME,
                                                     "--object-path", LOOPD_MANAGER_PATH, "--method",
                                                     "org.freedesktop.DBus.Peer.Ping", NULL },
                             &r);
        g_assert_cmpint(r.status, ==, 0);

        loopd_fixture_run_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                             (const char *const[]) { "gdbus", "call", "--system", "--dest", LOOPD_BUS_NAME,
                                                     "--object-path", LOOPD_MANAGER_PATH, "--method",
                                                     "org.example.NotLoopd.Frob", NULL },
                             &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "AccessDenied"));

        /* Only root may own the name. */
        loopd_fixture_run_as(f, LOOPD_TEST_NOBODY, LOOPD_TEST_NOBODY,
                             (const char *const[]) { "gdbus", "call", "--system", "--dest", "org.freedesktop.DBus",
                                                     "--object-path", "/org/freedesktop/DBus", "--method",
                                                     "org.freedesktop.DBus.RequestName", LOOPD_BUS_NAME, "4", NULL },
                             &r);
        g_assert_cmpint(r.status, !=, 0);
        g_assert_nonnull(strstr(r.err, "AccessDenied"));
}

/* ---- the contract's names ------------------------------------------------ */

typedef struct {
        char *name;  /* LOOPD_... */
        char *value; /* the string without quotes, or the number without its suffix */
} ProtocolName;

static void protocol_name_free(gpointer p) {
        ProtocolName *n = p;
        g_free(n->name);
        g_free(n->value);
        g_free(n);
}

/* Every #define of loopd-protocol.h, read from the header's text so that a
 * name added there is checked without touching this test. A define whose
 * value is neither one string literal nor one number is an error: the
 * header holds names, nothing computed. */
static GPtrArray *read_protocol_names(void) {
        g_autofree char *path = g_build_filename(need_env("LOOPD_SOURCE_ROOT"), "dbus", "loopd-protocol.h", NULL);
        g_autoptr(GRegex) string_re = g_regex_new("^\"([^\"\\\\]*)\"$", 0, 0, NULL);
        g_autoptr(GRegex) number_re = g_regex_new("^([0-9]+)[uUlL]*$", 0, 0, NULL);
        g_autoptr(GError) error = NULL;
        g_autofree char *text = NULL, *joined = NULL;
        g_auto(GStrv) lines = NULL;
        GPtrArray *names = g_ptr_array_new_with_free_func(protocol_name_free);

        g_assert_true(g_file_get_contents(path, &text, NULL, &error));
        /* Join continued lines, drop comments. */
        {
                g_autoptr(GRegex) cont = g_regex_new("\\\\\\n", 0, 0, NULL);
                g_autoptr(GRegex) comment = g_regex_new("/\\*.*?\\*/", G_REGEX_DOTALL, 0, NULL);
                g_autofree char *a = g_regex_replace_literal(cont, text, -1, 0, " ", 0, NULL);
                joined = g_regex_replace_literal(comment, a, -1, 0, "", 0, NULL);
        }
        lines = g_strsplit(joined, "\n", -1);
        for (char **l = lines; *l; l++) {
                g_autofree char *line = g_strstrip(g_strdup(*l));
                g_auto(GStrv) parts = NULL;
                g_autoptr(GMatchInfo) m = NULL;
                ProtocolName *n;

                if (!g_str_has_prefix(line, "#define "))
                        continue;
                parts = g_regex_split_simple("\\s+", line + strlen("#define "), 0, 0);
                g_assert_cmpuint(g_strv_length(parts), >=, 2);
                n = g_new0(ProtocolName, 1);
                n->name = g_strdup(parts[0]);
                {
                        g_autofree char *value = g_strjoinv(" ", parts + 1);
                        g_strstrip(value);
                        if (g_regex_match(string_re, value, 0, &m))
                                n->value = g_match_info_fetch(m, 1);
                        g_clear_pointer(&m, g_match_info_unref);
                        if (!n->value && g_regex_match(number_re, value, 0, &m))
                                n->value = g_match_info_fetch(m, 1);
                        if (!n->value)
                                g_error("%s: %s is neither a string nor a number: %s", path, n->name, value);
                }
                g_ptr_array_add(names, n);
        }
        return names;
}

/*
 * Every name in dbus/loopd-protocol.h is written where the contract is
 * written: polkit actions as actions of org.loopd.policy, interfaces as
 * interfaces of org.loopd.Loop1.xml, option keys quoted in its
 * documentation, and every other name (bus name, paths, error names, the
 * OwnerUID sentinel) in its text, spelled in full. A name only the header
 * knows is a name no caller reading the contract can know.
 */
static void test_protocol_header_names_are_in_the_contract(void) {
        g_autoptr(GPtrArray) names = read_protocol_names();
        g_autoptr(GHashTable) actions = parse_policy(need_env("LOOPD_POLKIT_POLICY"));
        g_autoptr(GDBusNodeInfo) node = NULL;
        g_autoptr(GError) error = NULL;
        g_autofree char *xml = NULL;
        guint checked = 0, missing = 0;

        g_assert_true(g_file_get_contents(need_env("LOOPD_INTERFACE_XML"), &xml, NULL, &error));
        node = g_dbus_node_info_new_for_xml(xml, &error);
        g_assert_no_error(error);

        for (guint i = 0; i < names->len; i++) {
                ProtocolName *n = names->pdata[i];
                const char *where;
                gboolean found;

                if (g_str_has_prefix(n->name, "LOOPD_ACTION_")) {
                        where = "an <action id> of org.loopd.policy";
                        found = g_hash_table_contains(actions, n->value);
                } else if (g_str_has_suffix(n->name, "_INTERFACE")) {
                        where = "an <interface name> of org.loopd.Loop1.xml";
                        found = g_dbus_node_info_lookup_interface(node, n->value) != NULL;
                } else if (g_str_has_prefix(n->name, "LOOPD_OPTION_")) {
                        g_autofree char *quoted = g_strdup_printf("\"%s\"", n->value);
                        where = "quoted in org.loopd.Loop1.xml";
                        found = strstr(xml, quoted) != NULL;
                } else {
                        where = "org.loopd.Loop1.xml";
                        found = strstr(xml, n->value) != NULL;
                }
                if (!found) {
                        g_test_message("%s (%s) is not in %s", n->name, n->value, where);
                        missing++;
                }
                checked++;
        }
        /* The parser read the header this test was compiled with. */
        for (guint i = 0; i < names->len; i++) {
                ProtocolName *n = names->pdata[i];
                if (strcmp(n->name, "LOOPD_BUS_NAME") == 0)
                        g_assert_cmpstr(n->value, ==, LOOPD_BUS_NAME);
                if (strcmp(n->name, "LOOPD_ACTION_MANAGE_OTHERS") == 0)
                        g_assert_cmpstr(n->value, ==, LOOPD_ACTION_MANAGE_OTHERS);
        }
        g_assert_cmpuint(checked, >=, 20);
        g_test_message("%u names of loopd-protocol.h checked", checked);
        g_assert_cmpuint(missing, ==, 0);
}

int main(int argc, char **argv) {
        g_test_init(&argc, &argv, NULL);

        g_test_add_func("/packaging/unit/verify-prints-nothing", test_unit_verify_prints_nothing);
        g_test_add_func("/packaging/unit/security-scores-low-exposure", test_unit_security_scores_low_exposure);
        g_test_add_func("/packaging/unit/declares-contract", test_unit_declares_contract);
        g_test_add_func("/packaging/activation/names-service-and-unit", test_activation_file_names_service_and_unit);
        g_test_add_func("/packaging/polkit/validates-against-dtd", test_polkit_policy_validates_against_dtd);
        g_test_add_func("/packaging/polkit/declares-both-actions", test_polkit_policy_declares_both_actions);
        g_test_add_func("/packaging/bus-policy/wellformed", test_bus_policy_is_wellformed);
        g_test_add_func("/packaging/bus-policy/opens-every-interface", test_bus_policy_opens_every_interface);
        g_test_add_func("/packaging/bus-policy/lets-anyone-call-loopd", test_bus_policy_lets_anyone_call_loopd);
        g_test_add_func("/packaging/bus-policy/denies-the-rest", test_bus_policy_denies_the_rest);
        g_test_add_func("/packaging/interface/wellformed", test_interface_xml_is_wellformed);
        g_test_add_func("/packaging/protocol-header/names-are-in-the-contract",
                        test_protocol_header_names_are_in_the_contract);

        return g_test_run();
}
