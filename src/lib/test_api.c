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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open),
        cmocka_unit_test(test_create_validation),
        cmocka_unit_test(test_handle_validation),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
