/* test_store.c - unit tests for the SQLite state store, with real SQLite files and processes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/paths.h"
#include "store/store.h"

struct fixture {
    char home[64];
    char db[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    snprintf(f->home, sizeof(f->home), "/tmp/capsa-store-XXXXXX");
    if (!mkdtemp(f->home))
        return -1;
    /* A home that does not exist yet: open must create it 0700. */
    strcat(f->home, "/home");
    snprintf(f->db, sizeof(f->db), "%s/capsa.db", f->home);
    setenv("CAPSA_HOME", f->home, 1);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    capsa_err err = {0};
    char *slash = strrchr(f->home, '/');

    *slash = '\0';
    capsa_rm_rf(f->home, &err);
    unsetenv("CAPSA_HOME");
    free(f);
    return 0;
}

static struct capsa_store *open_ok(void)
{
    struct capsa_store *s = NULL;
    capsa_err err = {0};
    if (capsa_store_open(NULL, &s, &err) < 0)
        fail_msg("open: %s", err.msg);
    return s;
}

#define OK(call)                                                                                   \
    do {                                                                                           \
        capsa_err err_ = {0};                                                                      \
        capsa_err *e = &err_;                                                                      \
        if ((call) < 0)                                                                            \
            fail_msg("%s: %s", #call, err_.msg);                                                   \
        (void)e;                                                                                   \
    } while (0)

static void add_sandbox(struct capsa_store *s, const char *name,
                        const struct capsa_store_label *labels, size_t n)
{
    struct capsa_store_sandbox_new in = {
        .name = name,
        .config_json = "{\"image\":\"alpine\"}",
        .image_ref = "alpine:3.20",
        .labels = labels,
        .n_labels = n,
    };
    OK(capsa_store_sandbox_insert(s, &in, NULL, e));
}

static int64_t query_int(const char *db, const char *sql)
{
    sqlite3 *h = NULL;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;

    assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(h, 30000);
    assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(h);
    return v;
}

/* ---- open, migrations ------------------------------------------------------------------ */

static void test_open_creates_and_migrates(void **state)
{
    struct fixture *f = *state;
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    capsa_err err = {0};
    struct stat st;
    int v = 0;

    assert_string_equal(capsa_store_path(s), f->db);
    assert_int_equal(stat(f->home, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    assert_int_equal(stat(f->db, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(capsa_store_schema_version(s, &v, &err), 0);
    assert_int_equal(v, CAPSA_STORE_SCHEMA_VERSION);

    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(capsa_store_handle(s), "PRAGMA journal_mode", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    assert_int_equal(sqlite3_prepare_v2(capsa_store_handle(s), "PRAGMA foreign_keys", -1, &q, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(q, 0), 1);
    sqlite3_finalize(q);

    add_sandbox(s, "keep-me", NULL, 0);
    capsa_store_close(steal_pointer(&s));

    /* Reopening is idempotent: no migration re-runs, data intact. */
    for (int i = 0; i < 3; i++) {
        _cleanup_(capsa_store_closep) struct capsa_store *s2 = open_ok();
        struct capsa_store_sandbox sb;
        assert_int_equal(capsa_store_schema_version(s2, &v, &err), 0);
        assert_int_equal(v, CAPSA_STORE_SCHEMA_VERSION);
        OK(capsa_store_sandbox_get(s2, "keep-me", &sb, e));
        capsa_store_sandbox_clear(&sb);
    }
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM schema_migrations"),
                     CAPSA_STORE_SCHEMA_VERSION);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sandboxes"), 1);

    /* Explicit path: parent directory created. */
    char other[256];
    snprintf(other, sizeof(other), "%s/sub/dir/x.db", f->home);
    struct capsa_store *s3 = NULL;
    assert_int_equal(capsa_store_open(other, &s3, &err), 0);
    capsa_store_close(s3);
    assert_int_equal(stat(other, &st), 0);
}

static void test_future_version_rejected(void **state)
{
    struct fixture *f = *state;
    capsa_err err = {0};
    struct capsa_store *s = open_ok();
    sqlite3 *h = NULL;

    capsa_store_close(s);
    assert_int_equal(sqlite3_open(f->db, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, "PRAGMA user_version = 99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);

    s = NULL;
    assert_int_equal(capsa_store_open(NULL, &s, &err), -1);
    assert_null(s);
    assert_int_equal(err.code, EPROTO);
    assert_non_null(strstr(err.msg, "version 99"));
    assert_non_null(strstr(err.msg, "newer"));
    /* The file was not touched. */
    assert_int_equal(query_int(f->db, "PRAGMA user_version"), 99);
}

static void test_bad_home(void **state)
{
    capsa_err err = {0};
    struct capsa_store *s = NULL;
    (void)state;

    setenv("CAPSA_HOME", "relative/path", 1);
    assert_int_equal(capsa_store_open(NULL, &s, &err), -1);
    assert_non_null(strstr(err.msg, "absolute"));
    assert_int_equal(capsa_store_open("", &s, &err), -1);
    assert_int_equal(err.code, EINVAL);
}

/* ---- sandboxes ------------------------------------------------------------------------- */

static void test_sandbox_crud(void **state)
{
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    struct capsa_store_label labels[] = {{"team", "infra"}, {"app", "web"}};
    struct capsa_store_sandbox sb;
    capsa_err err = {0};
    int64_t id = 0;
    (void)state;

    struct capsa_store_sandbox_new in = {.name = "web-1",
                                         .config_json = "{\"cpus\":2}",
                                         .image_ref = "alpine:3.20",
                                         .ephemeral = true,
                                         .labels = labels,
                                         .n_labels = 2};
    int64_t before = capsa_store_now_ms();
    assert_int_equal(capsa_store_sandbox_insert(s, &in, &id, &err), 0);
    assert_true(id > 0);

    assert_int_equal(capsa_store_sandbox_get(s, "web-1", &sb, &err), 0);
    assert_int_equal(sb.id, id);
    assert_string_equal(sb.name, "web-1");
    assert_string_equal(sb.config_json, "{\"cpus\":2}");
    assert_string_equal(sb.image_ref, "alpine:3.20");
    assert_null(sb.last_error);
    assert_int_equal(sb.status, CAPSA_SANDBOX_CREATED);
    assert_true(sb.ephemeral);
    assert_int_equal(sb.supervisor_pid, 0);
    assert_true(sb.created_at >= before && sb.created_at == sb.updated_at);
    assert_int_equal(sb.started_at, 0);
    assert_int_equal(sb.n_labels, 2);
    assert_string_equal(sb.labels[0].key, "app"); /* sorted by key */
    assert_string_equal(sb.labels[0].value, "web");
    assert_string_equal(sb.labels[1].key, "team");
    capsa_store_sandbox_clear(&sb);

    /* Duplicate name. */
    assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), -1);
    assert_int_equal(err.code, EEXIST);
    assert_non_null(strstr(err.msg, "web-1"));

    /* Bad inputs never reach the table. */
    static const char *bad_names[] = {"", "-x", ".x", "a b", "a/b", "ü", NULL};
    for (int i = 0; bad_names[i]; i++) {
        in.name = bad_names[i];
        assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), -1);
        assert_int_equal(err.code, EINVAL);
        assert_non_null(strstr(err.msg, "sandbox name"));
    }
    char longname[CAPSA_NAME_MAX + 2];
    memset(longname, 'a', sizeof(longname));
    longname[CAPSA_NAME_MAX] = '\0';
    in.name = longname; /* exactly 128: fine */
    in.n_labels = 0;
    assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), 0);
    longname[CAPSA_NAME_MAX] = 'a';
    longname[CAPSA_NAME_MAX + 1] = '\0';
    assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "at most 128"));

    in.name = "json-bad";
    in.config_json = "{\"cpus\":";
    assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "invalid JSON"));
    in.config_json = "[1]";
    assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "JSON object"));
    in.config_json = "{}";
    struct capsa_store_label dup[] = {{"k", "1"}, {"k", "2"}};
    in.labels = dup;
    in.n_labels = 2;
    assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "duplicate key k"));
    struct capsa_store_label ctl[] = {{"k", "a\nb"}};
    in.labels = ctl;
    in.n_labels = 1;
    assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "control byte"));
    struct capsa_store_label badutf[] = {{"k", "\xff\xfe"}};
    in.labels = badutf;
    assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "UTF-8"));
    struct capsa_store_label badkey[] = {{"k=v", "x"}};
    in.labels = badkey;
    assert_int_equal(capsa_store_sandbox_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "not allowed"));
    assert_int_equal(capsa_store_sandbox_get(s, "json-bad", &sb, &err), -1);
    assert_int_equal(err.code, ENOENT);

    /* Labels set/remove. */
    assert_int_equal(capsa_store_sandbox_label_set(s, "web-1", "team", "data", &err), 0);
    assert_int_equal(capsa_store_sandbox_label_set(s, "web-1", "new", "", &err), 0);
    bool removed = false;
    assert_int_equal(capsa_store_sandbox_label_remove(s, "web-1", "app", &removed, &err), 0);
    assert_true(removed);
    assert_int_equal(capsa_store_sandbox_label_remove(s, "web-1", "app", &removed, &err), 0);
    assert_false(removed);
    assert_int_equal(capsa_store_sandbox_label_set(s, "nope", "a", "b", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(capsa_store_sandbox_get(s, "web-1", &sb, &err), 0);
    assert_int_equal(sb.n_labels, 2);
    assert_string_equal(sb.labels[0].key, "new");
    assert_string_equal(sb.labels[0].value, "");
    assert_string_equal(sb.labels[1].key, "team");
    assert_string_equal(sb.labels[1].value, "data");
    capsa_store_sandbox_clear(&sb);

    /* Config and supervisor updates. */
    assert_int_equal(capsa_store_sandbox_set_config(s, "web-1", "{\"cpus\":4}", &err), 0);
    assert_int_equal(capsa_store_sandbox_set_config(s, "web-1", "nope", &err), -1);
    assert_int_equal(capsa_store_sandbox_set_supervisor(s, "web-1", 4242, &err), 0);
    assert_int_equal(capsa_store_sandbox_set_supervisor(s, "ghost", 1, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(capsa_store_sandbox_get(s, "web-1", &sb, &err), 0);
    assert_string_equal(sb.config_json, "{\"cpus\":4}");
    assert_int_equal(sb.supervisor_pid, 4242);
    capsa_store_sandbox_clear(&sb);

    /* Delete honours the status mask; labels cascade. */
    OK(capsa_store_sandbox_set_status(s, "web-1", CAPSA_SB_ANY, CAPSA_SANDBOX_STARTING, NULL, e));
    assert_int_equal(capsa_store_sandbox_delete(s, "web-1", CAPSA_SB_INACTIVE, &err), -1);
    assert_int_equal(err.code, EBUSY);
    assert_non_null(strstr(err.msg, "is starting"));
    assert_int_equal(capsa_store_sandbox_delete(s, "web-1", CAPSA_SB_ANY, &err), 0);
    assert_int_equal(capsa_store_sandbox_delete(s, "web-1", CAPSA_SB_ANY, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(
        query_int(((struct fixture *)*state)->db, "SELECT count(*) FROM sandbox_labels"), 0);
}

static void test_transition_table(void **state)
{
    (void)state;
    /* The whole table, spelled out: a change to it must change this test. */
    static const char *expect[CAPSA_SANDBOX_STATUS_COUNT] = {
        [CAPSA_SANDBOX_CREATED] = "starting failed",
        [CAPSA_SANDBOX_STARTING] = "running stopping stopped failed crashed",
        [CAPSA_SANDBOX_RUNNING] = "stopping stopped failed crashed",
        [CAPSA_SANDBOX_STOPPING] = "stopped failed crashed",
        [CAPSA_SANDBOX_STOPPED] = "starting",
        [CAPSA_SANDBOX_FAILED] = "starting",
        [CAPSA_SANDBOX_CRASHED] = "starting",
    };
    for (int from = 0; from < CAPSA_SANDBOX_STATUS_COUNT; from++) {
        char got[256] = "";
        for (int to = 0; to < CAPSA_SANDBOX_STATUS_COUNT; to++)
            if (capsa_sandbox_transition_legal(from, to)) {
                if (*got)
                    strcat(got, " ");
                strcat(got, capsa_sandbox_status_name(to));
            }
        assert_string_equal(got, expect[from]);
        assert_int_equal(capsa_sandbox_status_parse(capsa_sandbox_status_name(from)), from);
    }
    assert_false(capsa_sandbox_transition_legal(CAPSA_SANDBOX_STATUS_COUNT, 0));
    assert_int_equal(capsa_sandbox_status_parse("Running"), -1);
    assert_null(capsa_sandbox_status_name(CAPSA_SANDBOX_STATUS_COUNT));
}

static void test_transitions(void **state)
{
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    struct capsa_store_sandbox sb;
    enum capsa_sandbox_status prev;
    capsa_err err = {0};
    (void)state;

    add_sandbox(s, "t1", NULL, 0);

    /* Illegal: created -> running, names both states. */
    assert_int_equal(
        capsa_store_sandbox_set_status(s, "t1", CAPSA_SB_ANY, CAPSA_SANDBOX_RUNNING, NULL, &err),
        -1);
    assert_int_equal(err.code, EINVAL);
    assert_non_null(strstr(err.msg, "created -> running"));

    /* from_mask mismatch is EBUSY and names the current status. */
    assert_int_equal(capsa_store_sandbox_set_status(s, "t1", CAPSA_SB(STOPPED) | CAPSA_SB(CRASHED),
                                                    CAPSA_SANDBOX_STARTING, NULL, &err),
                     -1);
    assert_int_equal(err.code, EBUSY);
    assert_non_null(strstr(err.msg, "is created, expected stopped|crashed"));

    assert_int_equal(
        capsa_store_sandbox_set_status(s, "nope", CAPSA_SB_ANY, CAPSA_SANDBOX_STARTING, NULL, &err),
        -1);
    assert_int_equal(err.code, ENOENT);

    OK(capsa_store_sandbox_set_status_prev(s, "t1", CAPSA_SB(CREATED), CAPSA_SANDBOX_STARTING, NULL,
                                           &prev, e));
    assert_int_equal(prev, CAPSA_SANDBOX_CREATED);
    OK(capsa_store_sandbox_set_supervisor(s, "t1", 777, e));
    OK(capsa_store_sandbox_set_status(s, "t1", CAPSA_SB(STARTING), CAPSA_SANDBOX_RUNNING, NULL, e));
    /* running -> running is not a transition. */
    assert_int_equal(
        capsa_store_sandbox_set_status(s, "t1", CAPSA_SB_ANY, CAPSA_SANDBOX_RUNNING, NULL, &err),
        -1);
    assert_non_null(strstr(err.msg, "running -> running"));
    assert_int_equal(
        capsa_store_sandbox_set_status(s, "t1", CAPSA_SB_ANY, CAPSA_SANDBOX_CREATED, NULL, &err),
        -1);
    assert_non_null(strstr(err.msg, "running -> created"));

    OK(capsa_store_sandbox_get(s, "t1", &sb, e));
    assert_int_equal(sb.status, CAPSA_SANDBOX_RUNNING);
    assert_true(sb.started_at > 0);
    assert_int_equal(sb.stopped_at, 0);
    assert_int_equal(sb.supervisor_pid, 777);
    capsa_store_sandbox_clear(&sb);

    OK(capsa_store_sandbox_set_status(s, "t1", CAPSA_SB_ACTIVE, CAPSA_SANDBOX_CRASHED,
                                      "qemu died: signal 9", e));
    OK(capsa_store_sandbox_get(s, "t1", &sb, e));
    assert_int_equal(sb.status, CAPSA_SANDBOX_CRASHED);
    assert_string_equal(sb.last_error, "qemu died: signal 9");
    assert_true(sb.stopped_at >= sb.started_at);
    assert_int_equal(sb.supervisor_pid, 0); /* terminal status clears it */
    capsa_store_sandbox_clear(&sb);

    /* Restart clears last_error; the graceful path keeps it clear. */
    OK(capsa_store_sandbox_set_status(s, "t1", CAPSA_SB_INACTIVE, CAPSA_SANDBOX_STARTING, NULL, e));
    OK(capsa_store_sandbox_set_status(s, "t1", CAPSA_SB(STARTING), CAPSA_SANDBOX_RUNNING, NULL, e));
    OK(capsa_store_sandbox_set_status(s, "t1", CAPSA_SB(RUNNING), CAPSA_SANDBOX_STOPPING, NULL, e));
    OK(capsa_store_sandbox_set_status(s, "t1", CAPSA_SB(STOPPING), CAPSA_SANDBOX_STOPPED, NULL, e));
    OK(capsa_store_sandbox_get(s, "t1", &sb, e));
    assert_int_equal(sb.status, CAPSA_SANDBOX_STOPPED);
    assert_null(sb.last_error);
    capsa_store_sandbox_clear(&sb);

    /* A failing transition inside a caller's transaction leaves it usable. */
    OK(capsa_store_tx_begin(s, e));
    assert_int_equal(
        capsa_store_sandbox_set_status(s, "t1", CAPSA_SB_ANY, CAPSA_SANDBOX_RUNNING, NULL, &err),
        -1);
    OK(capsa_store_sandbox_set_status(s, "t1", CAPSA_SB(STOPPED), CAPSA_SANDBOX_STARTING, NULL, e));
    OK(capsa_store_tx_commit(s, e));
    OK(capsa_store_sandbox_get(s, "t1", &sb, e));
    assert_int_equal(sb.status, CAPSA_SANDBOX_STARTING);
    capsa_store_sandbox_clear(&sb);
}

static void expect_names(struct capsa_store *s, const struct capsa_store_sandbox_filter *f,
                         const char *want)
{
    struct capsa_store_sandbox *v = NULL;
    size_t n = 0;
    char got[512] = "";

    OK(capsa_store_sandbox_list(s, f, &v, &n, e));
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(got, " ");
        strcat(got, v[i].name);
    }
    capsa_store_sandboxes_free(v, n);
    assert_string_equal(got, want);
}

static void test_label_filter(void **state)
{
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    capsa_err err = {0};
    (void)state;

    struct capsa_store_label a[] = {{"team", "infra"}, {"env", "prod"}};
    struct capsa_store_label b[] = {{"team", "infra"}, {"env", "dev"}};
    struct capsa_store_label c[] = {{"team", "web"}, {"env", "prod"}};
    add_sandbox(s, "c", c, 2);
    add_sandbox(s, "a", a, 2);
    add_sandbox(s, "b", b, 2);
    add_sandbox(s, "d", NULL, 0);
    OK(capsa_store_sandbox_set_status(s, "b", CAPSA_SB_ANY, CAPSA_SANDBOX_STARTING, NULL, e));
    OK(capsa_store_sandbox_set_status(s, "c", CAPSA_SB_ANY, CAPSA_SANDBOX_STARTING, NULL, e));
    OK(capsa_store_sandbox_set_status(s, "c", CAPSA_SB_ANY, CAPSA_SANDBOX_RUNNING, NULL, e));

    expect_names(s, NULL, "a b c d");
    struct capsa_store_label f1[] = {{"team", "infra"}};
    expect_names(s, &(struct capsa_store_sandbox_filter){.labels = f1, .n_labels = 1}, "a b");
    struct capsa_store_label f2[] = {{"team", "infra"}, {"env", "prod"}};
    expect_names(s, &(struct capsa_store_sandbox_filter){.labels = f2, .n_labels = 2}, "a");
    struct capsa_store_label f3[] = {{"env", "prod"}};
    expect_names(s, &(struct capsa_store_sandbox_filter){.labels = f3, .n_labels = 1}, "a c");
    struct capsa_store_label f4[] = {{"env", NULL}};
    expect_names(s, &(struct capsa_store_sandbox_filter){.labels = f4, .n_labels = 1}, "a b c");
    struct capsa_store_label f5[] = {{"team", "nobody"}};
    expect_names(s, &(struct capsa_store_sandbox_filter){.labels = f5, .n_labels = 1}, "");
    /* Value of one label with key of another must not match. */
    struct capsa_store_label f6[] = {{"team", "prod"}};
    expect_names(s, &(struct capsa_store_sandbox_filter){.labels = f6, .n_labels = 1}, "");
    /* Status filters, alone and with labels. */
    expect_names(s, &(struct capsa_store_sandbox_filter){.status_mask = CAPSA_SB_ACTIVE}, "b c");
    expect_names(s, &(struct capsa_store_sandbox_filter){.status_mask = CAPSA_SB(CREATED)}, "a d");
    expect_names(s,
                 &(struct capsa_store_sandbox_filter){
                     .status_mask = CAPSA_SB(RUNNING), .labels = f3, .n_labels = 1},
                 "c");

    /* Rows come back with their labels. */
    struct capsa_store_sandbox *v = NULL;
    size_t n = 0;
    OK(capsa_store_sandbox_list(
        s, &(struct capsa_store_sandbox_filter){.labels = f2, .n_labels = 2}, &v, &n, e));
    assert_int_equal(n, 1);
    assert_int_equal(v[0].n_labels, 2);
    assert_string_equal(v[0].labels[0].key, "env");
    assert_string_equal(v[0].labels[1].value, "infra");
    capsa_store_sandboxes_free(v, n);

    /* Hostile filter keys are rejected, not interpolated. */
    struct capsa_store_label bad[] = {{"x') OR 1=1 --", "y"}};
    assert_int_equal(
        capsa_store_sandbox_list(
            s, &(struct capsa_store_sandbox_filter){.labels = bad, .n_labels = 1}, &v, &n, &err),
        -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(
        capsa_store_sandbox_list(s, &(struct capsa_store_sandbox_filter){.status_mask = 1u << 20},
                                 &v, &n, &err),
        -1);
}

static void test_runs(void **state)
{
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    struct capsa_store_run *runs = NULL;
    size_t n = 0;
    int64_t r1 = 0, r2 = 0, r3 = 0;
    capsa_err err = {0};
    (void)state;

    add_sandbox(s, "r", NULL, 0);
    assert_int_equal(capsa_store_run_start(s, "ghost", 1, &r1, &err), -1);
    assert_int_equal(err.code, ENOENT);
    OK(capsa_store_run_start(s, "r", 100, &r1, e));
    struct capsa_store_run_end end = {.has_exit_code = true,
                                      .exit_code = 3,
                                      .reason = CAPSA_RUN_COMPLETED,
                                      .detail = "guest powered off"};
    OK(capsa_store_run_finish(s, r1, &end, e));
    assert_int_equal(capsa_store_run_finish(s, r1, &end, &err), -1);
    assert_int_equal(err.code, EALREADY);
    assert_int_equal(capsa_store_run_finish(s, 9999, &end, &err), -1);
    assert_int_equal(err.code, ENOENT);
    end.reason = CAPSA_RUN_REASON_COUNT;
    assert_int_equal(capsa_store_run_finish(s, r1, &end, &err), -1);
    assert_int_equal(err.code, EINVAL);

    /* A run left open (supervisor died) is closed when the next one starts. */
    OK(capsa_store_run_start(s, "r", 0, &r2, e));
    OK(capsa_store_run_start(s, "r", 300, &r3, e));
    end = (struct capsa_store_run_end){.signal = SIGKILL, .reason = CAPSA_RUN_SIGNAL};
    OK(capsa_store_run_finish(s, r3, &end, e));

    OK(capsa_store_run_list(s, "r", &runs, &n, e));
    assert_int_equal(n, 3);
    assert_int_equal(runs[0].id, r1);
    assert_int_equal(runs[0].pid, 100);
    assert_true(runs[0].has_exit_code);
    assert_int_equal(runs[0].exit_code, 3);
    assert_int_equal(runs[0].reason, CAPSA_RUN_COMPLETED);
    assert_string_equal(runs[0].detail, "guest powered off");
    assert_true(runs[0].ended_at >= runs[0].started_at);
    assert_int_equal(runs[1].pid, 0);
    assert_int_equal(runs[1].reason, CAPSA_RUN_INTERNAL_ERROR);
    assert_non_null(strstr(runs[1].detail, "never finished"));
    assert_false(runs[2].has_exit_code);
    assert_int_equal(runs[2].signal, SIGKILL);
    assert_int_equal(runs[2].reason, CAPSA_RUN_SIGNAL);
    assert_null(runs[2].detail);
    capsa_store_runs_free(runs, n);

    assert_string_equal(capsa_run_reason_name(CAPSA_RUN_MAX_DURATION_EXCEEDED),
                        "max_duration_exceeded");
    assert_int_equal(capsa_run_reason_parse("idle_timeout"), CAPSA_RUN_IDLE_TIMEOUT);

    /* Deleting the sandbox deletes its runs. */
    OK(capsa_store_sandbox_delete(s, "r", CAPSA_SB_ANY, e));
    assert_int_equal(query_int(((struct fixture *)*state)->db, "SELECT count(*) FROM runs"), 0);
}

static void test_reap(void **state)
{
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    struct capsa_store_sandbox sb;
    struct capsa_store_run *runs = NULL;
    size_t n = 0, reaped = 0;
    pid_t dead;
    int status;
    (void)state;

    dead = fork();
    assert_true(dead >= 0);
    if (dead == 0)
        _exit(0);
    assert_int_equal(waitpid(dead, &status, 0), dead);

    add_sandbox(s, "gone", NULL, 0);
    add_sandbox(s, "alive", NULL, 0);
    add_sandbox(s, "booting", NULL, 0);
    add_sandbox(s, "idle", NULL, 0);
    OK(capsa_store_sandbox_set_status(s, "gone", CAPSA_SB_ANY, CAPSA_SANDBOX_STARTING, NULL, e));
    OK(capsa_store_sandbox_set_status(s, "gone", CAPSA_SB_ANY, CAPSA_SANDBOX_RUNNING, NULL, e));
    OK(capsa_store_sandbox_set_supervisor(s, "gone", dead, e));
    OK(capsa_store_run_start(s, "gone", dead, NULL, e));
    OK(capsa_store_sandbox_set_status(s, "alive", CAPSA_SB_ANY, CAPSA_SANDBOX_STARTING, NULL, e));
    OK(capsa_store_sandbox_set_supervisor(s, "alive", getpid(), e));
    OK(capsa_store_sandbox_set_status(s, "booting", CAPSA_SB_ANY, CAPSA_SANDBOX_STARTING, NULL, e));

    OK(capsa_store_sandbox_reap(s, NULL, NULL, &reaped, e));
    assert_int_equal(reaped, 1);
    OK(capsa_store_sandbox_get(s, "gone", &sb, e));
    assert_int_equal(sb.status, CAPSA_SANDBOX_CRASHED);
    assert_non_null(strstr(sb.last_error, "exited while the sandbox was running"));
    capsa_store_sandbox_clear(&sb);
    OK(capsa_store_run_list(s, "gone", &runs, &n, e));
    assert_int_equal(n, 1);
    assert_true(runs[0].ended_at > 0);
    assert_int_equal(runs[0].reason, CAPSA_RUN_INTERNAL_ERROR);
    capsa_store_runs_free(runs, n);
    OK(capsa_store_sandbox_get(s, "alive", &sb, e));
    assert_int_equal(sb.status, CAPSA_SANDBOX_STARTING);
    capsa_store_sandbox_clear(&sb);
    OK(capsa_store_sandbox_get(s, "booting", &sb, e));
    assert_int_equal(sb.status, CAPSA_SANDBOX_STARTING);
    capsa_store_sandbox_clear(&sb);
    OK(capsa_store_sandbox_reap(s, NULL, NULL, &reaped, e));
    assert_int_equal(reaped, 0);
}

/* ---- transactions ---------------------------------------------------------------------- */

static bool exists(struct capsa_store *s, const char *name)
{
    struct capsa_store_sandbox sb;
    capsa_err err = {0};
    if (capsa_store_sandbox_get(s, name, &sb, &err) == 0) {
        capsa_store_sandbox_clear(&sb);
        return true;
    }
    assert_int_equal(err.code, ENOENT);
    return false;
}

static void test_tx_nesting(void **state)
{
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    capsa_err err = {0};
    (void)state;

    OK(capsa_store_tx_begin(s, e));
    assert_int_equal(capsa_store_tx_depth(s), 1);
    add_sandbox(s, "outer", NULL, 0);
    OK(capsa_store_tx_begin(s, e));
    add_sandbox(s, "inner", NULL, 0);
    capsa_store_tx_rollback(s);
    assert_int_equal(capsa_store_tx_depth(s), 1);
    /* A failing call inside the tx only undoes itself. */
    struct capsa_store_sandbox_new dup = {.name = "outer", .config_json = "{}"};
    assert_int_equal(capsa_store_sandbox_insert(s, &dup, NULL, &err), -1);
    assert_int_equal(err.code, EEXIST);
    assert_int_equal(capsa_store_tx_depth(s), 1);
    add_sandbox(s, "outer2", NULL, 0);
    OK(capsa_store_tx_commit(s, e));
    assert_int_equal(capsa_store_tx_depth(s), 0);
    assert_true(exists(s, "outer"));
    assert_true(exists(s, "outer2"));
    assert_false(exists(s, "inner"));

    OK(capsa_store_tx_begin(s, e));
    add_sandbox(s, "dropped", NULL, 0);
    assert_true(exists(s, "dropped"));
    capsa_store_tx_rollback(s);
    assert_false(exists(s, "dropped"));

    assert_int_equal(capsa_store_tx_commit(s, &err), -1);
    assert_int_equal(err.code, EINVAL);
    capsa_store_tx_rollback(s); /* harmless */
}

static void test_fork_guard(void **state)
{
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    int status;
    (void)state;

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        capsa_err err = {0};
        struct capsa_store_sandbox_new in = {.name = "child", .config_json = "{}"};
        int rc = capsa_store_sandbox_insert(s, &in, NULL, &err);
        int ok = rc == -1 && err.code == EINVAL && strstr(err.msg, "after fork");
        struct capsa_store *c = NULL;
        ok = ok && capsa_store_open(NULL, &c, &err) == -1 && err.code == EBUSY &&
             strstr(err.msg, "exec");
        capsa_store_close(s); /* must not touch the parent's file */
        _exit(ok ? 0 : 1);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    add_sandbox(s, "parent", NULL, 0);
    assert_false(exists(s, "child"));
}

/* ---- volumes and snapshots ------------------------------------------------------------- */

static void test_volumes(void **state)
{
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    struct capsa_store_label labels[] = {{"owner", "me"}};
    struct capsa_store_volume v = {0}, *vs = NULL;
    size_t n = 0;
    capsa_err err = {0};
    (void)state;

    struct capsa_store_volume in = {.name = "data", .kind = CAPSA_VOLUME_DIR, .quota_mib = 512};
    OK(capsa_store_volume_insert(s, &in, NULL, e));
    assert_int_equal(capsa_store_volume_insert(s, &in, NULL, &err), -1);
    assert_int_equal(err.code, EEXIST);
    struct capsa_store_volume disk = {.name = "blk",
                                      .kind = CAPSA_VOLUME_DISK,
                                      .capacity_mib = 1024,
                                      .labels = labels,
                                      .n_labels = 1};
    OK(capsa_store_volume_insert(s, &disk, NULL, e));

    disk.name = "nocap";
    disk.capacity_mib = 0;
    assert_int_equal(capsa_store_volume_insert(s, &disk, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "capacity_mib"));
    in.name = "bad/name";
    assert_int_equal(capsa_store_volume_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "volume name"));
    in.name = "dircap";
    in.capacity_mib = 10;
    assert_int_equal(capsa_store_volume_insert(s, &in, NULL, &err), -1);

    OK(capsa_store_volume_get(s, "blk", &v, e));
    assert_int_equal(v.kind, CAPSA_VOLUME_DISK);
    assert_int_equal(v.capacity_mib, 1024);
    assert_int_equal(v.quota_mib, 0);
    assert_string_equal(v.disk_format, "raw");
    assert_string_equal(v.disk_fstype, "ext4");
    assert_int_equal(v.n_labels, 1);
    assert_string_equal(v.labels[0].key, "owner");
    assert_string_equal(v.labels[0].value, "me");
    capsa_store_volume_clear(&v);

    OK(capsa_store_volume_list(s, &vs, &n, e));
    assert_int_equal(n, 2);
    assert_string_equal(vs[0].name, "blk");
    assert_string_equal(vs[1].name, "data");
    assert_int_equal(vs[1].kind, CAPSA_VOLUME_DIR);
    assert_int_equal(vs[1].quota_mib, 512);
    assert_null(vs[1].disk_format);
    assert_int_equal(vs[1].n_labels, 0);
    capsa_store_volumes_free(vs, n);

    OK(capsa_store_volume_delete(s, "data", e));
    assert_int_equal(capsa_store_volume_delete(s, "data", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(capsa_store_volume_get(s, "data", &v, &err), -1);
    assert_int_equal(err.code, ENOENT);
}

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"

static void test_snapshots(void **state)
{
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    struct capsa_store_label labels[] = {{"b", "2"}, {"a", "1"}};
    struct capsa_store_snapshot g = {0}, *v = NULL;
    size_t n = 0;
    capsa_err err = {0};
    (void)state;

    struct capsa_store_snapshot in = {.name = "snap1",
                                      .digest = D1,
                                      .path = "/x/snapshots/snap1",
                                      .source_sandbox = "web-1",
                                      .image_ref = "alpine:3.20",
                                      .image_manifest_digest = D2,
                                      .size_bytes = 4096,
                                      .labels = labels,
                                      .n_labels = 2};
    OK(capsa_store_snapshot_insert(s, &in, NULL, e));
    in.name = "snap2";
    assert_int_equal(capsa_store_snapshot_insert(s, &in, NULL, &err), -1); /* same digest */
    assert_int_equal(err.code, EEXIST);
    in.digest = "sha256:xyz";
    assert_int_equal(capsa_store_snapshot_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "64 hex"));
    in.digest = D2;
    in.path = "relative";
    assert_int_equal(capsa_store_snapshot_insert(s, &in, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "absolute"));
    in.path = "/y";
    in.parent_digest = D1;
    in.source_sandbox = NULL;
    in.n_labels = 0;
    OK(capsa_store_snapshot_insert(s, &in, NULL, e));

    OK(capsa_store_snapshot_get(s, D1, &g, e)); /* by digest */
    assert_string_equal(g.name, "snap1");
    assert_string_equal(g.source_sandbox, "web-1");
    assert_int_equal(g.size_bytes, 4096);
    assert_int_equal(g.n_labels, 2);
    assert_string_equal(g.labels[0].key, "a");
    assert_true(g.created_at > 0);
    capsa_store_snapshot_clear(&g);
    OK(capsa_store_snapshot_get(s, "snap2", &g, e));
    assert_string_equal(g.parent_digest, D1);
    assert_null(g.source_sandbox);
    capsa_store_snapshot_clear(&g);

    OK(capsa_store_snapshot_list(s, &v, &n, e));
    assert_int_equal(n, 2);
    capsa_store_snapshots_free(v, n);
    OK(capsa_store_snapshot_delete(s, D2, e)); /* by digest */
    OK(capsa_store_snapshot_delete(s, "snap1", e));
    assert_int_equal(capsa_store_snapshot_delete(s, "snap1", &err), -1);
    assert_int_equal(err.code, ENOENT);
}

/* ---- images and layers ----------------------------------------------------------------- */

#define L1 "sha256:a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1"
#define L2 "sha256:b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2"
#define L3 "sha256:c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"
#define M1 "sha256:0101010101010101010101010101010101010101010101010101010101010101"
#define M2 "sha256:0202020202020202020202020202020202020202020202020202020202020202"

static void test_images(void **state)
{
    struct fixture *f = *state;
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    struct capsa_store_layer l = {0}, *orph = NULL;
    struct capsa_store_image img = {0}, *imgs = NULL;
    size_t n = 0;
    capsa_err err = {0};

    /* Layers: insert pending, then ready; a later pending put does not downgrade. */
    OK(capsa_store_layer_put(s, &(struct capsa_store_layer){.digest = L1, .size = 10}, e));
    OK(capsa_store_layer_put(s,
                             &(struct capsa_store_layer){.digest = L2,
                                                         .diff_id = L3,
                                                         .media_type = "application/x-tar",
                                                         .size = 20,
                                                         .path = "/c/layers/b2",
                                                         .state = CAPSA_LAYER_READY},
                             e));
    OK(capsa_store_layer_put(s, &(struct capsa_store_layer){.digest = L2}, e));
    OK(capsa_store_layer_get(s, L2, &l, e));
    assert_int_equal(l.state, CAPSA_LAYER_READY);
    assert_int_equal(l.size, 20);
    assert_string_equal(l.diff_id, L3);
    assert_string_equal(l.path, "/c/layers/b2");
    capsa_store_layer_clear(&l);
    OK(capsa_store_layer_set_state(s, L1, CAPSA_LAYER_READY, "/c/layers/a1", e));
    OK(capsa_store_layer_get(s, L1, &l, e));
    assert_int_equal(l.state, CAPSA_LAYER_READY);
    assert_string_equal(l.path, "/c/layers/a1");
    capsa_store_layer_clear(&l);
    assert_int_equal(capsa_store_layer_set_state(s, L3, CAPSA_LAYER_READY, NULL, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(
        capsa_store_layer_put(s, &(struct capsa_store_layer){.digest = "sha256:AB"}, &err), -1);
    assert_int_equal(
        capsa_store_layer_put(s, &(struct capsa_store_layer){.digest = L3, .path = "rel"}, &err),
        -1);
    assert_non_null(strstr(err.msg, "absolute"));

    /* An image needs its layers recorded first. */
    const char *layers[] = {L1, L2};
    const char *missing[] = {L1, L3};
    struct capsa_store_image_put put = {.reference = "alpine:3.20",
                                        .manifest_digest = M1,
                                        .manifest_json = "{\"schemaVersion\":2}",
                                        .media_type = "application/vnd.oci.image.manifest.v1+json",
                                        .config_json = "{\"config\":{\"Cmd\":[\"sh\"]}}",
                                        .size = 30,
                                        .layer_digests = missing,
                                        .n_layers = 2};
    assert_int_equal(capsa_store_image_put(s, &put, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.msg, "layers[1]"));
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM manifests"), 0);
    put.layer_digests = layers;
    OK(capsa_store_image_put(s, &put, e));
    put.reference = "alpine:latest"; /* second reference, same manifest */
    OK(capsa_store_image_put(s, &put, e));
    put.reference = "bad ref";
    assert_int_equal(capsa_store_image_put(s, &put, &err), -1);
    assert_int_equal(err.code, EINVAL);

    OK(capsa_store_image_get(s, "alpine:3.20", &img, e));
    assert_string_equal(img.manifest_digest, M1);
    assert_string_equal(img.config_json, "{\"config\":{\"Cmd\":[\"sh\"]}}");
    assert_int_equal(img.size, 30);
    assert_int_equal(img.n_layers, 2);
    assert_string_equal(img.layer_digests[0], L1);
    assert_string_equal(img.layer_digests[1], L2);
    capsa_store_image_clear(&img);
    OK(capsa_store_image_get(s, M1, &img, e)); /* by digest */
    assert_string_equal(img.reference, "alpine:3.20");
    capsa_store_image_clear(&img);

    /* Layers in use are not orphans and cannot be deleted. */
    OK(capsa_store_layer_put(s, &(struct capsa_store_layer){.digest = L3}, e));
    OK(capsa_store_layer_list_orphans(s, &orph, &n, e));
    assert_int_equal(n, 1);
    assert_string_equal(orph[0].digest, L3);
    capsa_store_layers_free(orph, n);
    assert_int_equal(capsa_store_layer_delete(s, L1, &err), -1);
    assert_int_equal(err.code, EBUSY);

    /* Re-pointing alpine:latest to M2 keeps M1 (still used by alpine:3.20). */
    const char *layers2[] = {L3};
    put = (struct capsa_store_image_put){.reference = "alpine:latest",
                                         .manifest_digest = M2,
                                         .layer_digests = layers2,
                                         .n_layers = 1};
    OK(capsa_store_image_put(s, &put, e));
    OK(capsa_store_image_list(s, &imgs, &n, e));
    assert_int_equal(n, 2);
    assert_string_equal(imgs[0].reference, "alpine:3.20");
    assert_string_equal(imgs[1].reference, "alpine:latest");
    assert_string_equal(imgs[1].manifest_digest, M2);
    assert_int_equal(imgs[1].n_layers, 1);
    capsa_store_images_free(imgs, n);

    /* A snapshot pins M1 even after its last reference goes. */
    struct capsa_store_snapshot snap = {
        .name = "s", .digest = D1, .path = "/s", .image_manifest_digest = M1};
    OK(capsa_store_snapshot_insert(s, &snap, NULL, e));
    size_t nsb = 9, nsnap = 9;
    add_sandbox(s, "uses-alpine", NULL, 0); /* image_ref alpine:3.20 */
    OK(capsa_store_image_users(s, "alpine:3.20", &nsb, &nsnap, e));
    assert_int_equal(nsb, 1);
    assert_int_equal(nsnap, 1);
    OK(capsa_store_image_users(s, "alpine:latest", &nsb, &nsnap, e));
    assert_int_equal(nsb, 0);
    assert_int_equal(nsnap, 0);
    OK(capsa_store_image_delete(s, "alpine:3.20", e));
    assert_int_equal(capsa_store_image_delete(s, "alpine:3.20", &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM manifests WHERE digest = '" M1 "'"), 1);
    OK(capsa_store_snapshot_delete(s, "s", e));
    OK(capsa_store_image_delete(s, "alpine:latest", e));
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM manifests WHERE digest = '" M2 "'"), 0);
    /* Now every layer is an orphan and deletable. */
    OK(capsa_store_layer_list_orphans(s, &orph, &n, e));
    assert_int_equal(n, 3);
    capsa_store_layers_free(orph, n);
    OK(capsa_store_layer_delete(s, L1, e));
    assert_int_equal(capsa_store_layer_delete(s, L1, &err), -1);
    assert_int_equal(err.code, ENOENT);
}

/* ---- many processes -------------------------------------------------------------------- */

#define NPROC 8
#define NPER  200

/* Status each row must end in: j%3==0 stopped (graceful), 1 crashed, 2 running. */
static enum capsa_sandbox_status final_status(int j)
{
    return j % 3 == 0   ? CAPSA_SANDBOX_STOPPED
           : j % 3 == 1 ? CAPSA_SANDBOX_CRASHED
                        : CAPSA_SANDBOX_RUNNING;
}

static int child_work(int p, int errfd)
{
    struct capsa_store *s = NULL;
    capsa_err err = {0};
    char name[64], val[16];

#define CHILD_OK(call)                                                                             \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            dprintf(errfd, "child %d: %s: %s (code %d)\n", p, #call, err.msg, err.code);           \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

    CHILD_OK(capsa_store_open(NULL, &s, &err));
    snprintf(val, sizeof(val), "%d", p);
    struct capsa_store_label l[] = {{"proc", val}};
    for (int j = 0; j < NPER; j++) {
        snprintf(name, sizeof(name), "p%d-s%03d", p, j);
        struct capsa_store_sandbox_new in = {
            .name = name, .config_json = "{\"n\":1}", .labels = l, .n_labels = 1};
        CHILD_OK(capsa_store_sandbox_insert(s, &in, NULL, &err));
        CHILD_OK(capsa_store_sandbox_set_status(s, name, CAPSA_SB(CREATED), CAPSA_SANDBOX_STARTING,
                                                NULL, &err));
        CHILD_OK(capsa_store_sandbox_set_status(s, name, CAPSA_SB(STARTING), CAPSA_SANDBOX_RUNNING,
                                                NULL, &err));
        if (j % 3 == 0) {
            /* Grouped: two transitions and a run in one caller transaction. */
            int64_t run;
            CHILD_OK(capsa_store_tx_begin(s, &err));
            CHILD_OK(capsa_store_run_start(s, name, getpid(), &run, &err));
            CHILD_OK(capsa_store_sandbox_set_status(s, name, CAPSA_SB(RUNNING),
                                                    CAPSA_SANDBOX_STOPPING, NULL, &err));
            CHILD_OK(capsa_store_sandbox_set_status(s, name, CAPSA_SB(STOPPING),
                                                    CAPSA_SANDBOX_STOPPED, NULL, &err));
            struct capsa_store_run_end end = {.has_exit_code = true, .reason = CAPSA_RUN_COMPLETED};
            CHILD_OK(capsa_store_run_finish(s, run, &end, &err));
            CHILD_OK(capsa_store_tx_commit(s, &err));
        } else if (j % 3 == 1) {
            CHILD_OK(capsa_store_sandbox_set_status(s, name, CAPSA_SB_ACTIVE, CAPSA_SANDBOX_CRASHED,
                                                    "boom", &err));
        }
        if (j % 50 == 0) { /* readers interleaved with writers */
            struct capsa_store_sandbox *v = NULL;
            size_t n = 0;
            CHILD_OK(capsa_store_sandbox_list(
                s, &(struct capsa_store_sandbox_filter){.labels = l, .n_labels = 1}, &v, &n, &err));
            capsa_store_sandboxes_free(v, n);
            if (n != (size_t)j + 1) {
                dprintf(errfd, "child %d: listed %zu of my rows, expected %d\n", p, n, j + 1);
                return 1;
            }
        }
    }
    capsa_store_close(s);
    return 0;
#undef CHILD_OK
}

static void test_multiprocess(void **state)
{
    pid_t pids[NPROC];
    int go[2], errp[2];
    char buf[4096];
    ssize_t r;
    (void)state;

    /* The database does not exist yet: children race on creation and migration too. */
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(errp), 0);
    for (int p = 0; p < NPROC; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            char c;
            close(go[1]);
            close(errp[0]);
            if (read(go[0], &c, 1) < 0) /* wait until the parent releases everyone */
                _exit(2);
            _exit(child_work(p, errp[1]));
        }
    }
    close(go[0]);
    close(errp[1]);
    close(go[1]); /* start */
    size_t off = 0;
    while ((r = read(errp[0], buf + off, sizeof(buf) - 1 - off)) > 0)
        off += (size_t)r;
    buf[off] = '\0';
    close(errp[0]);
    for (int p = 0; p < NPROC; p++) {
        int status;
        assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("child %d failed (status 0x%x): %s", p, status, buf);
    }
    if (off)
        fail_msg("children reported errors: %s", buf);

    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    struct capsa_store_sandbox *v = NULL;
    size_t n = 0;
    OK(capsa_store_sandbox_list(s, NULL, &v, &n, e));
    assert_int_equal(n, NPROC * NPER);
    int seen[NPROC][NPER];
    memset(seen, 0, sizeof(seen));
    for (size_t i = 0; i < n; i++) {
        int p, j;
        assert_int_equal(sscanf(v[i].name, "p%d-s%d", &p, &j), 2);
        assert_true(p >= 0 && p < NPROC && j >= 0 && j < NPER);
        seen[p][j]++;
        if (v[i].status != final_status(j))
            fail_msg("%s: status %s, expected %s", v[i].name,
                     capsa_sandbox_status_name(v[i].status),
                     capsa_sandbox_status_name(final_status(j)));
        if (final_status(j) == CAPSA_SANDBOX_CRASHED)
            assert_string_equal(v[i].last_error, "boom");
        assert_int_equal(v[i].n_labels, 1);
        assert_int_equal(atoi(v[i].labels[0].value), p);
    }
    for (int p = 0; p < NPROC; p++)
        for (int j = 0; j < NPER; j++)
            assert_int_equal(seen[p][j], 1);
    capsa_store_sandboxes_free(v, n);
    struct fixture *f = *state;
    int64_t stopped = 0;
    for (int j = 0; j < NPER; j++)
        stopped += j % 3 == 0;
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM runs WHERE termination_reason = "
                                      "'completed' AND ended_at IS NOT NULL"),
                     NPROC * stopped);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM schema_migrations"),
                     CAPSA_STORE_SCHEMA_VERSION);
}

/* Several processes race to start one sandbox: exactly one wins, the rest get EBUSY. */
static void test_start_race(void **state)
{
    struct fixture *f = *state;
    enum { N = 6 };
    pid_t pids[N];
    int go[2], wins = 0, busy = 0;
    (void)f;

    {
        _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
        add_sandbox(s, "contended", NULL, 0);
    }
    assert_int_equal(pipe(go), 0);
    for (int i = 0; i < N; i++) {
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            struct capsa_store *s = NULL;
            capsa_err err = {0};
            char c;
            close(go[1]);
            if (capsa_store_open(NULL, &s, &err) < 0 || read(go[0], &c, 1) < 0)
                _exit(3);
            if (capsa_store_sandbox_set_status(s, "contended", CAPSA_SB_INACTIVE,
                                               CAPSA_SANDBOX_STARTING, NULL, &err) == 0)
                _exit(0);
            _exit(err.code == EBUSY && strstr(err.msg, "is starting") ? 1 : 2);
        }
    }
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < N; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) == 0)
            wins++;
        else if (WEXITSTATUS(status) == 1)
            busy++;
    }
    assert_int_equal(wins, 1);
    assert_int_equal(busy, N - 1);
}

/* A writer holding the lock for longer than SQLite's quick retries: others wait, no BUSY. */
static void test_lock_wait(void **state)
{
    int go[2], ready[2], status;
    char ch;
    (void)state;

    { /* create the database first, then fork with no connection open */
        _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    }
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct capsa_store *c = NULL;
        capsa_err err = {0};
        struct capsa_store_sandbox sb;
        close(go[1]);
        close(ready[0]);
        if (read(go[0], &ch, 1) != 1)
            _exit(1);
        if (capsa_store_open(NULL, &c, &err) < 0)
            _exit(2);
        if (write(ready[1], "r", 1) != 1)
            _exit(3);
        struct capsa_store_sandbox_new in = {.name = "waiter", .config_json = "{}"};
        if (capsa_store_sandbox_insert(c, &in, NULL, &err) < 0) {
            fprintf(stderr, "waiter: %s\n", err.msg);
            _exit(4);
        }
        /* It waited for the commit, so it sees the parent's row. */
        if (capsa_store_sandbox_get(c, "held", &sb, &err) < 0)
            _exit(5);
        capsa_store_sandbox_clear(&sb);
        capsa_store_close(c);
        _exit(0);
    }
    close(go[0]);
    close(ready[1]);
    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    OK(capsa_store_tx_begin(s, e));
    add_sandbox(s, "held", NULL, 0);
    assert_int_equal(write(go[1], "g", 1), 1);
    assert_int_equal(read(ready[0], &ch, 1), 1);
    close(go[1]);
    close(ready[0]);
    sleep(2);
    assert_int_equal(waitpid(pid, &status, WNOHANG), 0); /* still waiting for the lock */
    OK(capsa_store_tx_commit(s, e));
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_true(exists(s, "waiter"));
}

/* ---- SIGKILL in the middle of a transaction ------------------------------------------- */

#define COMMITTED   100
#define UNCOMMITTED 3000

static void test_kill_mid_transaction(void **state)
{
    struct fixture *f = *state;
    int ready[2];
    char c;
    int status;

    assert_int_equal(pipe(ready), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct capsa_store *s = NULL;
        capsa_err err = {0};
        char name[64];
        static char cfg[4200];

        close(ready[0]);
        /* ~4 KiB of config per row: the open transaction outgrows the page cache, so
         * uncommitted pages really reach the WAL file before the kill. */
        memset(cfg, 'x', sizeof(cfg));
        memcpy(cfg, "{\"pad\":\"", 8);
        memcpy(cfg + sizeof(cfg) - 3, "\"}", 3);
        if (capsa_store_open(NULL, &s, &err) < 0)
            _exit(1);
        if (capsa_store_tx_begin(s, &err) < 0)
            _exit(2);
        for (int i = 0; i < COMMITTED; i++) {
            snprintf(name, sizeof(name), "committed-%d", i);
            struct capsa_store_sandbox_new in = {.name = name, .config_json = "{}"};
            if (capsa_store_sandbox_insert(s, &in, NULL, &err) < 0)
                _exit(3);
        }
        if (capsa_store_tx_commit(s, &err) < 0)
            _exit(4);
        if (capsa_store_tx_begin(s, &err) < 0)
            _exit(5);
        for (int i = 0; i < UNCOMMITTED; i++) {
            snprintf(name, sizeof(name), "uncommitted-%d", i);
            struct capsa_store_sandbox_new in = {.name = name, .config_json = cfg};
            if (capsa_store_sandbox_insert(s, &in, NULL, &err) < 0)
                _exit(6);
        }
        if (write(ready[1], "k", 1) != 1)
            _exit(7);
        for (;;)
            pause();
    }
    close(ready[1]);
    if (read(ready[0], &c, 1) != 1) {
        waitpid(pid, &status, 0);
        fail_msg("child exited before signalling (status 0x%x)", status);
    }
    close(ready[0]);

    char wal[256];
    struct stat st;
    snprintf(wal, sizeof(wal), "%s-wal", f->db);
    assert_int_equal(stat(wal, &st), 0);
    assert_true(st.st_size > 4 * 1024 * 1024); /* uncommitted frames are on disk */

    assert_int_equal(kill(pid, SIGKILL), 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

    _cleanup_(capsa_store_closep) struct capsa_store *s = open_ok();
    sqlite3_stmt *q = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(capsa_store_handle(s), "PRAGMA integrity_check", -1, &q, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "ok");
    sqlite3_finalize(q);

    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sandboxes WHERE name LIKE "
                                      "'committed-%'"),
                     COMMITTED);
    assert_int_equal(query_int(f->db, "SELECT count(*) FROM sandboxes WHERE name LIKE "
                                      "'uncommitted-%'"),
                     0);
    /* The write lock died with the child: writing works at once. */
    add_sandbox(s, "after-kill", NULL, 0);
    assert_true(exists(s, "after-kill"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_creates_and_migrates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_future_version_rejected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_home, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sandbox_crud, setup, teardown),
        cmocka_unit_test(test_transition_table),
        cmocka_unit_test_setup_teardown(test_transitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_label_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tx_nesting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fork_guard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_volumes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots, setup, teardown),
        cmocka_unit_test_setup_teardown(test_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multiprocess, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_race, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_mid_transaction, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
