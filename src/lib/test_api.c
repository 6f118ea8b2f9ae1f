/* test_api.c - argument and spec validation of the public API (include/capsa.h), on a real
 * store in a temporary CAPSA_HOME; nothing here boots a VM. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "capsa.h"
#include "common/paths.h"
#include "store/store.h"
#include "supervisor/sandbox.h"

static char g_home[256];

static int setup(void **state)
{
    (void)state;
    snprintf(g_home, sizeof(g_home), "/tmp/capsa-test-api-XXXXXX");
    if (!mkdtemp(g_home))
        return -1;
    /* never spawn a supervisor by accident: there is no binary to run */
    setenv("CAPSA_SUPERVISOR_EXE", "/nonexistent/capsa", 1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    capsa_rm_rf(g_home, NULL);
    return 0;
}

static void test_open(void **state)
{
    capsa_err err = {0};
    capsa_ctx *ctx, *other;
    char sub[300];

    (void)state;
    assert_null(capsa_open("relative/home", &err));
    assert_int_equal(err.code, EINVAL);
    assert_non_null(strstr(err.msg, "absolute"));
    ctx = capsa_open(g_home, &err);
    assert_non_null(ctx);
    assert_string_equal(getenv("CAPSA_HOME"), g_home);
    /* a second, different home in the same process is refused while ctx is open */
    snprintf(sub, sizeof(sub), "%s/other", g_home);
    memset(&err, 0, sizeof(err));
    assert_null(capsa_open(sub, &err));
    assert_int_equal(err.code, EBUSY);
    /* the same home is fine */
    other = capsa_open(g_home, &err);
    assert_non_null(other);
    capsa_close(other);
    capsa_close(ctx);
    capsa_close(NULL);
}

/* create fails with msg containing want; nothing is stored under name */
static void create_fails(capsa_ctx *ctx, const char *spec, unsigned flags, int code,
                         const char *want)
{
    capsa_err err = {0};
    capsa_sandbox *sb = capsa_sandbox_create(ctx, spec, flags, &err);

    if (sb || err.code != code || !strstr(err.msg, want))
        fail_msg("create(%s): got %s, code %d, '%s'; wanted code %d with '%s'",
                 spec ? spec : "NULL", sb ? "a handle" : "NULL", err.code, err.msg, code, want);
}

static void test_create_validation(void **state)
{
    capsa_err err = {0};
    capsa_ctx *ctx = capsa_open(g_home, &err);
    char spec[512];

    (void)state;
    assert_non_null(ctx);
    assert_null(capsa_sandbox_create(NULL, "{}", 0, &err));
    assert_int_equal(err.code, EINVAL);
    create_fails(ctx, NULL, 0, EINVAL, "spec_json");
    create_fails(ctx, "{\"name\": \"t1\",", 0, EINVAL, "invalid JSON at line 1");
    create_fails(ctx, "[1, 2]", 0, EINVAL, "expected a JSON object");
    create_fails(ctx, "{\"name\": \"t1\", \"name\": \"t2\"}", 0, EINVAL, "duplicate");
    create_fails(ctx, "{\"image\": {\"Bind\": \"/tmp\"}}", 0, EINVAL, "name: required");
    create_fails(ctx, "{\"name\": 7}", 0, EINVAL, "name: expected a string");
    create_fails(ctx, "{\"name\": \"../up\", \"image\": {\"Bind\": \"/tmp\"}}", 0, EINVAL,
                 "spec: name");
    create_fails(ctx, "{\"name\": \"t1\", \"image\": {\"Bind\": \"/tmp\"}}", 0x80, EINVAL, "flags");
    create_fails(ctx, "{\"name\": \"t1\", \"image\": {\"Bind\": \"/tmp\"}}", CAPSA_FORCE, EINVAL,
                 "flags");
    /* spec errors name the field, all of them */
    create_fails(ctx,
                 "{\"name\": \"t1\", \"image\": {\"Bind\": \"/tmp\"}, \"resources\": {\"cpus\": "
                 "0, \"memory_mib\": 128}}",
                 0, EINVAL, "resources.cpus");
    create_fails(ctx, "{\"name\": \"t1\", \"resources\": {\"cpus\": 0}}", 0, EINVAL,
                 "image: is required; resources.cpus");
    snprintf(spec, sizeof(spec),
             "{\"name\": \"t1\", \"image\": {\"Bind\": \"/tmp\"}, \"env\": [{\"key\": 1}]}");
    create_fails(ctx, spec, 0, EINVAL, "env[0]");
    /* a valid spec gets as far as the supervisor binary, which is missing: nothing stored */
    create_fails(ctx, "{\"name\": \"t1\", \"image\": {\"Bind\": \"/tmp\"}}", 0, ENOENT,
                 "CAPSA_SUPERVISOR_EXE");
    memset(&err, 0, sizeof(err));
    assert_null(capsa_sandbox_get(ctx, "t1", &err));
    assert_int_equal(err.code, ENOENT);
    assert_null(capsa_sandbox_start(ctx, "t1", 0x40, &err));
    assert_int_equal(err.code, EINVAL);
    assert_null(capsa_sandbox_get(ctx, "bad/name", &err));
    assert_int_equal(err.code, EINVAL);
    capsa_close(ctx);
}

/* A sandbox row made through the internal API without starting it: a handle to validate
 * exec arguments against, with no VM. */
static void test_handle_validation(void **state)
{
    capsa_err err = {0};
    capsa_ctx *ctx = capsa_open(g_home, &err);
    struct capsa_store *store = NULL;
    json_t *spec = json_pack("{s:{s:s}}", "image", "Bind", "/tmp");
    struct capsa_sandbox_create_opts co = {.name = "h1", .spec = spec, .no_start = true};
    struct capsa_sandbox_info info;
    struct capsa_exec_req req = {0};
    struct capsa_exec_out out;
    const char *argv_ok[] = {"true", NULL}, *argv_empty[] = {"", NULL}, *argv_none[] = {NULL};
    const char *env_bad[] = {"A=1", "NOEQUALS", NULL};
    capsa_sandbox *sb;

    (void)state;
    assert_non_null(ctx);
    assert_int_equal(capsa_store_open(NULL, &store, &err), 0);
    assert_int_equal(capsa_sandbox_create_named(store, &co, &err), 0);
    json_decref(spec);
    sb = capsa_sandbox_get(ctx, "h1", &err);
    assert_non_null(sb);
    assert_string_equal(capsa_sandbox_name(sb), "h1");
    assert_int_equal(capsa_sandbox_attached(sb), 0);
    assert_int_equal(capsa_sandbox_status(sb, &info, &err), 0);
    assert_string_equal(info.status, "created");
    assert_int_equal(info.state, CAPSA_STATE_CREATED);
    assert_int_equal(info.supervisor_pid, 0);
    assert_int_equal(capsa_sandbox_status(sb, NULL, &err), -1);

    assert_int_equal(capsa_sandbox_exec(sb, NULL, NULL, &out, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_non_null(strstr(err.msg, "argv"));
    assert_null(out.stdout_data);
    assert_int_equal(capsa_sandbox_exec(sb, argv_none, NULL, &out, &err), -1);
    assert_non_null(strstr(err.msg, "argv"));
    assert_int_equal(capsa_sandbox_exec(sb, argv_empty, NULL, &out, &err), -1);
    assert_non_null(strstr(err.msg, "argv"));
    assert_int_equal(capsa_sandbox_exec(sb, argv_ok, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "out"));
    assert_int_equal(capsa_sandbox_exec(NULL, argv_ok, NULL, &out, &err), -1);
    assert_non_null(strstr(err.msg, "sandbox"));
    req.env = env_bad;
    assert_int_equal(capsa_sandbox_exec(sb, argv_ok, &req, &out, &err), -1);
    assert_non_null(strstr(err.msg, "req.env[1] 'NOEQUALS'"));
    req.env = NULL;
    req.cwd = "relative";
    assert_int_equal(capsa_sandbox_exec(sb, argv_ok, &req, &out, &err), -1);
    assert_non_null(strstr(err.msg, "req.cwd"));
    req.cwd = NULL;
    req.stdin_len = 3;
    assert_int_equal(capsa_sandbox_exec(sb, argv_ok, &req, &out, &err), -1);
    assert_non_null(strstr(err.msg, "req.stdin_data"));
    req.stdin_len = 0;
    /* valid arguments, but the sandbox is not running */
    memset(&err, 0, sizeof(err));
    assert_int_equal(capsa_sandbox_exec(sb, argv_ok, &req, &out, &err), -1);
    assert_int_equal(err.code, EBUSY);
    assert_non_null(strstr(err.msg, "not running"));
    assert_int_equal(out.exit_code, 1);
    capsa_exec_out_free(&out);

    /* detach of a handle that is not attached, stop of a sandbox that is not running: fine */
    assert_int_equal(capsa_sandbox_detach(sb, &err), 0);
    assert_int_equal(capsa_sandbox_stop(sb, -1, &err), 0);
    assert_int_equal(capsa_sandbox_remove(sb, 0x80, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(capsa_sandbox_remove(sb, 0, &err), 0);
    assert_int_equal(capsa_sandbox_status(sb, &info, &err), -1);
    assert_int_equal(err.code, ENOENT);
    capsa_sandbox_release(sb);
    capsa_sandbox_release(NULL);
    assert_null(capsa_sandbox_get(ctx, "h1", &err));
    assert_int_equal(err.code, ENOENT);
    capsa_store_close(store);
    capsa_close(ctx);
}

static void expect_err(int rc, const capsa_err *err, int code, const char *want)
{
    if (rc != -1 || err->code != code || !strstr(err->msg, want))
        fail_msg("got rc %d, code %d, '%s'; wanted -1, code %d with '%s'", rc, err->code, err->msg,
                 code, want);
}

static void make_row(struct capsa_store *store, const char *name, const char *who)
{
    json_t *spec = json_pack("{s:{s:s}}", "image", "Bind", "/tmp");
    struct capsa_store_label labels[] = {{"suite", "unit"}, {"who", (char *)who}};
    struct capsa_sandbox_create_opts co = {
        .name = name, .spec = spec, .labels = labels, .n_labels = 2, .no_start = true};
    capsa_err err = {0};

    if (capsa_sandbox_create_named(store, &co, &err) < 0)
        fail_msg("create %s: %s", name, err.msg);
    json_decref(spec);
}

static void expect_names(capsa_ctx *ctx, const char *sel, const char *want)
{
    capsa_err err = {0};
    char **names = NULL, got[256] = "";
    size_t n = 99;

    if (capsa_sandbox_list(ctx, sel, &names, &n, &err) < 0)
        fail_msg("list %s: %s", sel ? sel : "NULL", err.msg);
    assert_non_null(names);
    assert_null(names[n]);
    for (size_t i = 0; i < n; i++)
        snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", i ? " " : "", names[i]);
    capsa_sandbox_names_free(names);
    if (strcmp(got, want))
        fail_msg("list %s: got '%s', wanted '%s'", sel ? sel : "NULL", got, want);
}

static int cb_out(const void *buf, size_t len, void *ud)
{
    (void)buf, (void)len, (void)ud;
    return 0;
}

/* listing, info, create2 options, and the argument checks of streaming exec and fs calls */
static void test_list_fs_stream_validation(void **state)
{
    capsa_err err = {0};
    capsa_ctx *ctx = capsa_open(g_home, &err);
    struct capsa_store *store = NULL;
    struct capsa_sandbox_info info;
    struct capsa_exec_callbacks cb = {.on_stdout = cb_out};
    struct capsa_exec_req req = {0};
    struct capsa_create_opts co = {0};
    struct capsa_file_stat st;
    struct capsa_dir_entry *ents = (void *)1;
    const char *argv_ok[] = {"true", NULL}, *env_bad[] = {"NOEQ", NULL};
    char **names = (void *)1, longpath[5000];
    uint8_t *data = (void *)1;
    size_t n = 7, len = 7;
    int code = 5, sig = 5;
    capsa_sandbox *sb;

    (void)state;
    assert_non_null(ctx);
    assert_int_equal(capsa_store_open(NULL, &store, &err), 0);
    make_row(store, "l2", "two");
    make_row(store, "l1", "one");

    /* list */
    expect_names(ctx, NULL, "l1 l2");
    expect_names(ctx, "", "l1 l2");
    expect_names(ctx, "suite=unit", "l1 l2");
    expect_names(ctx, "who=two", "l2");
    expect_names(ctx, "suite=unit,who=one", "l1");
    expect_names(ctx, "who", "l1 l2");
    expect_names(ctx, "nokey", "");
    expect_names(ctx, "who=three", "");
    expect_err(capsa_sandbox_list(NULL, NULL, &names, &n, &err), &err, EINVAL, "ctx");
    assert_null(names);
    assert_int_equal(n, 0);
    expect_err(capsa_sandbox_list(ctx, NULL, NULL, &n, &err), &err, EINVAL, "names");
    expect_err(capsa_sandbox_list(ctx, NULL, &names, NULL, &err), &err, EINVAL, "n");
    expect_err(capsa_sandbox_list(ctx, "=v", &names, &n, &err), &err, EINVAL, "label_selector");
    expect_err(capsa_sandbox_list(ctx, "a=1,,b", &names, &n, &err), &err, EINVAL,
               "label_selector term 2");
    expect_err(capsa_sandbox_list(ctx, "bad key=1", &names, &n, &err), &err, EINVAL,
               "label_selector term 1");
    capsa_sandbox_names_free(NULL);

    /* info */
    sb = capsa_sandbox_get(ctx, "l1", &err);
    assert_non_null(sb);
    assert_int_equal(capsa_sandbox_status(sb, &info, &err), 0);
    assert_string_equal(info.status, "created");
    assert_true(info.created_ms > 1700000000000LL);
    assert_int_equal(info.started_ms, 0);

    /* create2 options are checked before the spec */
    co.pull_timeout_s = -1;
    assert_null(capsa_sandbox_create2(ctx, "{}", 0, &co, &err));
    assert_non_null(strstr(err.msg, "opts.pull_timeout_s"));
    co.pull_timeout_s = 0;
    co.ca_certs = "/nonexistent/ca.pem";
    assert_null(capsa_sandbox_create2(ctx, "{}", 0, &co, &err));
    assert_non_null(strstr(err.msg, "opts.ca_certs '/nonexistent/ca.pem'"));
    co.ca_certs = NULL;
    co.insecure = true;
    assert_null(capsa_sandbox_create2(ctx, NULL, 0, &co, &err));
    assert_non_null(strstr(err.msg, "spec_json"));
    assert_null(capsa_sandbox_create2(NULL, "{}", 0, &co, &err));
    assert_non_null(strstr(err.msg, "ctx"));

    /* streaming exec */
    expect_err(capsa_sandbox_exec_stream(NULL, argv_ok, NULL, &cb, &code, &sig, &err), &err, EINVAL,
               "sandbox");
    assert_int_equal(code, 1);
    assert_int_equal(sig, 0);
    expect_err(capsa_sandbox_exec_stream(sb, argv_ok, NULL, NULL, NULL, NULL, &err), &err, EINVAL,
               "cb");
    expect_err(capsa_sandbox_exec_stream(sb, NULL, NULL, &cb, NULL, NULL, &err), &err, EINVAL,
               "argv");
    req.env = env_bad;
    expect_err(capsa_sandbox_exec_stream(sb, argv_ok, &req, &cb, NULL, NULL, &err), &err, EINVAL,
               "req.env[0] 'NOEQ'");
    req.env = NULL;
    expect_err(capsa_sandbox_exec_stream(sb, argv_ok, &req, &cb, NULL, NULL, &err), &err, EBUSY,
               "not running");

    /* fs: arguments first, then the sandbox must be running */
    memset(longpath, 'a', sizeof(longpath) - 1);
    longpath[0] = '/';
    longpath[sizeof(longpath) - 1] = '\0';
    expect_err(capsa_fs_read(sb, "/etc/passwd", &data, &len, 0, &err), &err, EBUSY, "not running");
    assert_null(data);
    assert_int_equal(len, 0);
    expect_err(capsa_fs_read(NULL, "/x", &data, &len, 0, &err), &err, EINVAL, "sandbox");
    expect_err(capsa_fs_read(sb, "/x", NULL, &len, 0, &err), &err, EINVAL, "data");
    expect_err(capsa_fs_read(sb, "/x", &data, NULL, 0, &err), &err, EINVAL, "len");
    expect_err(capsa_fs_read(sb, NULL, &data, &len, 0, &err), &err, EINVAL, "path: NULL");
    expect_err(capsa_fs_read(sb, "rel", &data, &len, 0, &err), &err, EINVAL,
               "path 'rel': must be an absolute");
    expect_err(capsa_fs_read(sb, longpath, &data, &len, 0, &err), &err, ENAMETOOLONG, "path");
    expect_err(capsa_fs_write(sb, "/x", NULL, 3, -1, &err), &err, EINVAL, "data: NULL");
    expect_err(capsa_fs_write(sb, "/x", "abc", 3, 010000, &err), &err, EINVAL, "mode");
    expect_err(capsa_fs_write(sb, "", "abc", 3, 0644, &err), &err, EINVAL, "path");
    expect_err(capsa_fs_write(sb, "/x", NULL, 0, 0644, &err), &err, EBUSY, "not running");
    expect_err(capsa_fs_stat(sb, "/x", NULL, &err), &err, EINVAL, "st");
    expect_err(capsa_fs_stat(sb, "x", &st, &err), &err, EINVAL, "path 'x'");
    expect_err(capsa_fs_list(sb, "/", NULL, &n, NULL, &err), &err, EINVAL, "entries");
    expect_err(capsa_fs_list(sb, "/", &ents, NULL, NULL, &err), &err, EINVAL, "n");
    assert_null(ents);
    expect_err(capsa_fs_list(sb, "/", &ents, &n, NULL, &err), &err, EBUSY, "not running");
    expect_err(capsa_fs_mkdir(sb, "d", 0755, true, &err), &err, EINVAL, "path 'd'");
    expect_err(capsa_fs_mkdir(sb, "/d", 070000, true, &err), &err, EINVAL, "mode");
    expect_err(capsa_fs_remove(NULL, "/d", true, &err), &err, EINVAL, "sandbox");
    expect_err(capsa_fs_remove(sb, "d", true, &err), &err, EINVAL, "path");
    expect_err(capsa_fs_rename(sb, "/a", "b", &err), &err, EINVAL, "to 'b'");
    expect_err(capsa_fs_rename(sb, NULL, "/b", &err), &err, EINVAL, "from: NULL");
    expect_err(capsa_fs_rename(sb, "/a", "/b", &err), &err, EBUSY, "not running");
    capsa_fs_list_free(NULL, 0);

    assert_int_equal(capsa_sandbox_remove(sb, 0, &err), 0);
    capsa_sandbox_release(sb);
    sb = capsa_sandbox_get(ctx, "l2", &err);
    assert_non_null(sb);
    assert_int_equal(capsa_sandbox_remove(sb, 0, &err), 0);
    capsa_sandbox_release(sb);
    expect_names(ctx, NULL, "");
    capsa_store_close(store);
    capsa_close(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open),
        cmocka_unit_test(test_create_validation),
        cmocka_unit_test(test_handle_validation),
        cmocka_unit_test(test_list_fs_stream_validation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
