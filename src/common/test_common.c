/* test_common.c - unit tests for errors, log levels and paths. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/units.h"

static void test_err_prefix(void **state)
{
    capsa_err err = {0};
    (void)state;
    assert_int_equal(capsa_err_set(&err, ENOENT, "open %s", "/x"), -1);
    capsa_err_prefix(&err, "image %s", "busybox");
    assert_string_equal(err.msg, "image busybox: open /x");
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(capsa_err_set(NULL, 1, "ignored"), -1);
}

static void test_log_levels(void **state)
{
    (void)state;
    assert_int_equal(capsa_log_parse_level("trace"), CAPSA_LOG_TRACE);
    assert_int_equal(capsa_log_parse_level("error"), CAPSA_LOG_ERROR);
    assert_int_equal(capsa_log_parse_level("loud"), -1);
    assert_int_equal(capsa_log_parse_level(NULL), -1);
}

static void test_home_and_paths(void **state)
{
    char buf[4096];
    capsa_err err = {0};
    (void)state;

    setenv("CAPSA_HOME", "/tmp/capsa-test-home", 1);
    assert_int_equal(capsa_path(buf, sizeof(buf), &err, "run/%s", "x"), 0);
    assert_string_equal(buf, "/tmp/capsa-test-home/run/x");
    setenv("CAPSA_HOME", "relative", 1);
    assert_int_equal(capsa_home(buf, sizeof(buf), &err), -1);
    assert_non_null(strstr(err.msg, "absolute"));
    unsetenv("CAPSA_HOME");
    setenv("HOME", "/home/u", 1);
    assert_int_equal(capsa_home(buf, sizeof(buf), &err), 0);
    assert_string_equal(buf, "/home/u/.capsa");
}

static void test_mkdir_rm(void **state)
{
    char tmpl[] = "/tmp/capsa-ut-XXXXXX", deep[256];
    capsa_err err = {0};
    struct stat st;
    (void)state;

    assert_non_null(mkdtemp(tmpl));
    snprintf(deep, sizeof(deep), "%s/a/b/c", tmpl);
    assert_int_equal(capsa_mkdir_p(deep, 0700, &err), 0);
    assert_int_equal(stat(deep, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(capsa_mkdir_p(deep, 0700, &err), 0); /* idempotent */
    assert_int_equal(capsa_rm_rf(tmpl, &err), 0);
    assert_int_equal(stat(tmpl, &st), -1);
    assert_int_equal(capsa_rm_rf(tmpl, &err), 0); /* absent is fine */
}

static void test_cleanup_steal(void **state)
{
    (void)state;
    _cleanup_free_ char *p = strdup("x");
    char *q = steal_pointer(&p);
    assert_null(p);
    free(q);
}

static void test_units(void **state)
{
    uint64_t v;
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_parse_size_mib("512M", &v, &err), 0);
    assert_int_equal(v, 512);
    assert_int_equal(capsa_parse_size_mib("1.5G", &v, &err), 0);
    assert_int_equal(v, 1536);
    assert_int_equal(capsa_parse_size_mib("256", &v, &err), 0);
    assert_int_equal(v, 256);
    assert_int_equal(capsa_parse_size_mib("1gib", &v, &err), 0);
    assert_int_equal(v, 1024);
    assert_int_equal(capsa_parse_size_mib("512K", &v, &err), 0);
    assert_int_equal(v, 1);
    assert_int_equal(capsa_parse_size_mib("0", &v, &err), -1);
    assert_int_equal(capsa_parse_size_mib("12X", &v, &err), -1);
    assert_non_null(strstr(err.msg, "size '12X'"));
    assert_int_equal(capsa_parse_size_mib("", &v, &err), -1);
    assert_int_equal(capsa_parse_size_mib("-5M", &v, &err), -1);

    assert_int_equal(capsa_parse_duration_ms("500ms", &v, &err), 0);
    assert_int_equal(v, 500);
    assert_int_equal(capsa_parse_duration_ms("30", &v, &err), 0);
    assert_int_equal(v, 30000);
    assert_int_equal(capsa_parse_duration_ms("5m", &v, &err), 0);
    assert_int_equal(v, 300000);
    assert_int_equal(capsa_parse_duration_ms("1.5h", &v, &err), 0);
    assert_int_equal(v, 5400000);
    assert_int_equal(capsa_parse_duration_ms("3 s", &v, &err), -1);
    assert_int_equal(capsa_parse_duration_ms("s", &v, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_err_prefix),
        cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_home_and_paths),
        cmocka_unit_test(test_mkdir_rm),
        cmocka_unit_test(test_cleanup_steal),
        cmocka_unit_test(test_units),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
