/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The owner store (daemon/owner-store.c) and the uevent parser
 * (daemon/uevent.c): pure file and text handling, no devices, no bus.
 */
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "loopd-protocol.h"
#include "owner-store.h"
#include "uevent.h"

typedef struct {
        char *dir;
        OwnerStore *store;
} Fixture;

static void setup(Fixture *f, gconstpointer data) {
        f->dir = g_dir_make_tmp("loopd-unit-store-XXXXXX", NULL);
        g_assert_nonnull(f->dir);
        g_assert_cmpint(owner_store_open(f->dir, &f->store), ==, 0);
}

static void teardown(Fixture *f, gconstpointer data) {
        owner_store_free(f->store);
        g_autoptr(GDir) d = g_dir_open(f->dir, 0, NULL);
        for (const char *n; d && (n = g_dir_read_name(d));) {
                g_autofree char *p = g_build_filename(f->dir, n, NULL);
                g_unlink(p);
        }
        g_rmdir(f->dir);
        g_free(f->dir);
}

static void load(Fixture *f, OwnerRecord **r, size_t *nr, OwnerIntent **i, size_t *ni) {
        g_assert_cmpint(owner_store_load(f->store, r, nr, i, ni), ==, 0);
}

static void test_record_round_trips(Fixture *f, gconstpointer data) {
        OwnerRecord rec = { .number = 7, .diskseq = 123456789, .uid = 65534, .bound_to = (char *) ":1.42" };
        OwnerRecord *r = NULL;
        OwnerIntent *i = NULL;
        size_t nr, ni;

        g_assert_cmpint(owner_store_put(f->store, &rec), ==, 0);
        load(f, &r, &nr, &i, &ni);
        g_assert_cmpuint(nr, ==, 1);
        g_assert_cmpuint(ni, ==, 0);
        g_assert_cmpuint(r[0].number, ==, 7);
        g_assert_cmpuint(r[0].diskseq, ==, 123456789);
        g_assert_cmpuint(r[0].uid, ==, 65534);
        g_assert_cmpstr(r[0].bound_to, ==, ":1.42");
        owner_records_free(r, nr);
        owner_intents_free(i, ni);

        g_assert_cmpint(owner_store_delete(f->store, 7, 123456789), ==, 0);
        load(f, &r, &nr, &i, &ni);
        g_assert_cmpuint(nr, ==, 0);
        owner_records_free(r, nr);
        owner_intents_free(i, ni);
}

/* A reused loop number must not inherit an owner: records are per diskseq. */
static void test_same_number_other_diskseq_is_another_record(Fixture *f, gconstpointer data) {
        OwnerRecord a = { .number = 3, .diskseq = 10, .uid = 1000 };
        OwnerRecord b = { .number = 3, .diskseq = 11, .uid = 2000 };
        OwnerRecord *r = NULL;
        OwnerIntent *i = NULL;
        size_t nr, ni;

        g_assert_cmpint(owner_store_put(f->store, &a), ==, 0);
        g_assert_cmpint(owner_store_put(f->store, &b), ==, 0);
        g_assert_cmpint(owner_store_delete(f->store, 3, 10), ==, 0);
        load(f, &r, &nr, &i, &ni);
        g_assert_cmpuint(nr, ==, 1);
        g_assert_cmpuint(r[0].diskseq, ==, 11);
        g_assert_cmpuint(r[0].uid, ==, 2000);
        g_assert_null(r[0].bound_to);
        owner_records_free(r, nr);
        owner_intents_free(i, ni);
}

static void test_intent_round_trips_and_drops(Fixture *f, gconstpointer data) {
        OwnerIntent in = { .backing_dev = 0xfe00, .backing_ino = 99, .uid = 1234, .bound_to = (char *) ":1.7" };
        g_autofree char *id = NULL;
        OwnerRecord *r = NULL;
        OwnerIntent *i = NULL;
        size_t nr, ni;

        g_assert_cmpint(owner_store_put_intent(f->store, &in, &id), ==, 0);
        g_assert_true(g_str_has_prefix(id, "pending-"));
        load(f, &r, &nr, &i, &ni);
        g_assert_cmpuint(ni, ==, 1);
        g_assert_cmpuint(i[0].backing_dev, ==, 0xfe00);
        g_assert_cmpuint(i[0].backing_ino, ==, 99);
        g_assert_cmpuint(i[0].uid, ==, 1234);
        g_assert_cmpstr(i[0].bound_to, ==, ":1.7");
        g_assert_cmpstr(i[0].id, ==, id);
        owner_records_free(r, nr);
        owner_intents_free(i, ni);

        g_assert_cmpint(owner_store_drop_intent(f->store, id), ==, 0);
        g_assert_cmpint(owner_store_drop_intent(f->store, "../etc/passwd"), ==, -EINVAL);
        load(f, &r, &nr, &i, &ni);
        g_assert_cmpuint(ni, ==, 0);
        owner_records_free(r, nr);
        owner_intents_free(i, ni);
}

/* A create's intent becomes its record by one rename, owner and all. */
static void test_intent_commits_to_record(Fixture *f, gconstpointer data) {
        OwnerIntent in = { .backing_dev = 0xfe00, .backing_ino = 99, .uid = 1234, .bound_to = (char *) ":1.7" };
        g_autofree char *id = NULL;
        OwnerRecord *r = NULL;
        OwnerIntent *i = NULL;
        size_t nr, ni;

        g_assert_cmpint(owner_store_put_intent(f->store, &in, &id), ==, 0);
        g_assert_cmpint(owner_store_commit_intent(f->store, id, 3, 77), ==, 0);
        load(f, &r, &nr, &i, &ni);
        g_assert_cmpuint(ni, ==, 0);
        g_assert_cmpuint(nr, ==, 1);
        g_assert_cmpuint(r[0].number, ==, 3);
        g_assert_cmpuint(r[0].diskseq, ==, 77);
        g_assert_cmpuint(r[0].uid, ==, 1234);
        g_assert_cmpstr(r[0].bound_to, ==, ":1.7");
        owner_records_free(r, nr);
        owner_intents_free(i, ni);

        /* Gone once committed; never a path outside the directory. */
        g_assert_cmpint(owner_store_commit_intent(f->store, id, 4, 78), ==, -ENOENT);
        g_assert_cmpint(owner_store_commit_intent(f->store, "../x", 4, 78), ==, -EINVAL);
        g_assert_cmpint(owner_store_delete(f->store, 3, 77), ==, 0);
        load(f, &r, &nr, &i, &ni);
        g_assert_cmpuint(nr, ==, 0);
        owner_records_free(r, nr);
        owner_intents_free(i, ni);
}

static void write_file(Fixture *f, const char *name, const char *text) {
        g_autofree char *p = g_build_filename(f->dir, name, NULL);
        g_assert_true(g_file_set_contents(p, text, -1, NULL));
}

/* Garbage in the state directory (a half-written temp file from a kill -9,
 * a malformed or hostile record) is removed, never trusted. */
static void test_malformed_files_are_removed(Fixture *f, gconstpointer data) {
        OwnerRecord *r = NULL;
        OwnerIntent *i = NULL;
        size_t nr, ni;

        write_file(f, ".#loop1-5", "uid=0\n");
        write_file(f, "loop1-5", "uid=abc\nbound=\n");
        write_file(f, "loop2-6", "uid=1000\nbound=not-a-unique-name\n");
        write_file(f, "loop3-x", "uid=1000\nbound=\n");
        write_file(f, "pending-1-2-3", "uid=1000\nbound=\n");
        write_file(f, "loop4-8", "uid=4294967295\nbound=\n");
        write_file(f, "loop5-9", "uid=1000\nbound=\n");
        load(f, &r, &nr, &i, &ni);
        g_assert_cmpuint(nr, ==, 1);
        g_assert_cmpuint(r[0].number, ==, 5);
        g_assert_cmpuint(ni, ==, 0);
        owner_records_free(r, nr);
        owner_intents_free(i, ni);

        g_autoptr(GDir) d = g_dir_open(f->dir, 0, NULL);
        guint left = 0;
        while (g_dir_read_name(d))
                left++;
        g_assert_cmpuint(left, ==, 1);
}

static void test_unique_name_validation(void) {
        g_assert_true(unique_name_is_valid(":1.42"));
        g_assert_true(unique_name_is_valid(":1.0"));
        g_assert_false(unique_name_is_valid(LOOPD_BUS_NAME));
        g_assert_false(unique_name_is_valid(":"));
        g_assert_false(unique_name_is_valid(":1.2\nuid=0"));
        g_assert_false(unique_name_is_valid(":1/2"));
        g_assert_false(unique_name_is_valid(NULL));
}

static void test_record_refuses_bad_bound_name(Fixture *f, gconstpointer data) {
        OwnerRecord rec = { .number = 1, .diskseq = 2, .uid = 3, .bound_to = (char *) ":1.1\nuid=0" };
        g_assert_cmpint(owner_store_put(f->store, &rec), ==, -EINVAL);
}

static void test_uevent_parse_loop_disk(void) {
        static const char msg[] = "change@/devices/virtual/block/loop7\0ACTION=change\0DEVPATH=/devices/virtual/block/loop7\0"
                                  "SUBSYSTEM=block\0DEVNAME=loop7\0DEVTYPE=disk\0DISKSEQ=42\0SEQNUM=1";
        Uevent ev = { 0 };

        g_assert_cmpint(uevent_parse(msg, sizeof(msg), &ev), ==, 1);
        g_assert_cmpuint(ev.number, ==, 7);
        g_assert_cmpstr(ev.action, ==, "change");
        g_assert_cmpuint(ev.diskseq, ==, 42);
        g_assert_cmpuint(ev.seqnum, ==, 1);
}

static void test_uevent_parse_bad_numbers_read_as_unknown(void) {
        static const char msg[] = "change@/devices/virtual/block/loop7\0ACTION=change\0SUBSYSTEM=block\0DEVNAME=loop7\0"
                                  "DEVTYPE=disk\0DISKSEQ=-1\0SEQNUM=99999999999999999999999";
        static const char none[] = "change@/devices/virtual/block/loop7\0ACTION=change\0SUBSYSTEM=block\0DEVNAME=loop7";
        Uevent ev = { 0 };

        g_assert_cmpint(uevent_parse(msg, sizeof(msg), &ev), ==, 1);
        g_assert_cmpuint(ev.diskseq, ==, 0);
        g_assert_cmpuint(ev.seqnum, ==, 0);
        g_assert_cmpint(uevent_parse(none, sizeof(none), &ev), ==, 1);
        g_assert_cmpuint(ev.number, ==, 7);
        g_assert_cmpuint(ev.diskseq, ==, 0);
        g_assert_cmpuint(ev.seqnum, ==, 0);
}

/* A partition is reported by its disk's number, marked: a guarded disk's
 * owner gets its partitions too. Anything else named like one is not. */
static void test_uevent_parse_partitions(void) {
        static const char part[] = "add@/x/loop7p1\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=loop7p1\0DEVTYPE=partition";
        static const char part12[] = "add@/x/loop12p10\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=loop12p10\0DEVTYPE=partition";
        static const char vda1[] = "add@/x/vda1\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=vda1\0DEVTYPE=partition";
        static const char p0[] = "add@/x/loop7p0\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=loop7p0\0DEVTYPE=partition";
        static const char nvme[] = "add@/x/nvme0n1p1\0ACTION=add\0SUBSYSTEM=block\0DEVNAME=nvme0n1p1\0DEVTYPE=partition";
        Uevent ev = { 0 };

        g_assert_cmpint(uevent_parse(part, sizeof(part), &ev), ==, 1);
        g_assert_cmpuint(ev.number, ==, 7);
        g_assert_true(ev.partition);
        g_assert_cmpint(uevent_parse(part12, sizeof(part12), &ev), ==, 1);
        g_assert_cmpuint(ev.number, ==, 12);
        g_assert_true(ev.partition);
        g_assert_cmpint(uevent_parse(vda1, sizeof(vda1), &ev), ==, 0);
        g_assert_cmpint(uevent_parse(p0, sizeof(p0), &ev), ==, 0);
        g_assert_cmpint(uevent_parse(nvme, sizeof(nvme), &ev), ==, 0);
}

static void test_uevent_parse_ignores_others(void) {
        static const char vda[] = "change@/x/vda\0ACTION=change\0SUBSYSTEM=block\0DEVNAME=vda\0DEVTYPE=disk";
        static const char net[] = "add@/x/lo\0ACTION=add\0SUBSYSTEM=net\0DEVNAME=loop7";
        static const char bad[] = "no at sign here\0ACTION=add";
        static const char libudev[] = "libudev\0\xfe\xed\xca\xfe";
        Uevent ev;

        g_assert_cmpint(uevent_parse(vda, sizeof(vda), &ev), ==, 0);
        g_assert_cmpint(uevent_parse(net, sizeof(net), &ev), ==, 0);
        g_assert_cmpint(uevent_parse(bad, sizeof(bad), &ev), ==, -EINVAL);
        g_assert_cmpint(uevent_parse(libudev, sizeof(libudev), &ev), ==, -EINVAL);
        g_assert_cmpint(uevent_parse("", 0, &ev), ==, -EINVAL);
}

int main(int argc, char *argv[]) {
        g_test_init(&argc, &argv, NULL);
        g_test_add("/owner-store/record-round-trips", Fixture, NULL, setup, test_record_round_trips, teardown);
        g_test_add("/owner-store/same-number-other-diskseq-is-another-record", Fixture, NULL, setup,
                   test_same_number_other_diskseq_is_another_record, teardown);
        g_test_add("/owner-store/intent-round-trips-and-drops", Fixture, NULL, setup,
                   test_intent_round_trips_and_drops, teardown);
        g_test_add("/owner-store/intent-commits-to-record", Fixture, NULL, setup, test_intent_commits_to_record,
                   teardown);
        g_test_add("/owner-store/malformed-files-are-removed", Fixture, NULL, setup,
                   test_malformed_files_are_removed, teardown);
        g_test_add("/owner-store/record-refuses-bad-bound-name", Fixture, NULL, setup,
                   test_record_refuses_bad_bound_name, teardown);
        g_test_add_func("/owner-store/unique-name-validation", test_unique_name_validation);
        g_test_add_func("/uevent/partitions-by-their-disk", test_uevent_parse_partitions);
        g_test_add_func("/uevent/parse-loop-disk", test_uevent_parse_loop_disk);
        g_test_add_func("/uevent/parse-ignores-others", test_uevent_parse_ignores_others);
        g_test_add_func("/uevent/parse-bad-numbers-read-as-unknown", test_uevent_parse_bad_numbers_read_as_unknown);
        return g_test_run();
}
