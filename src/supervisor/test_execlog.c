/* test_execlog.c - unit tests for exec.log lines: the encoder/decoder round trip, JSON escaping,
 * base64 for non-UTF-8 data, the line splitter and rotation, source lists, --since/--until
 * times and the guest meminfo parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "supervisor/execlog.h"
#include "supervisor/metrics.h"

static void roundtrip(const void *data, size_t len, bool expect_b64)
{
    struct capsa_execlog_entry e;
    char *line = capsa_execlog_encode(1764430460060, CAPSA_LOG_SRC_STDERR, 7, data, len);
    json_t *j;

    assert_non_null(line);
    assert_int_equal(line[strlen(line) - 1], '\n');
    assert_null(memchr(line, '\n', strlen(line) - 1)); /* one line */
    j = json_loads(line, JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "t")), "2025-11-29T15:34:20.060Z");
    assert_string_equal(json_string_value(json_object_get(j, "s")), "stderr");
    assert_int_equal(json_integer_value(json_object_get(j, "id")), 7);
    if (expect_b64)
        assert_string_equal(json_string_value(json_object_get(j, "e")), "base64");
    else
        assert_null(json_object_get(j, "e"));
    json_decref(j);
    assert_int_equal(capsa_execlog_decode(line, strlen(line), &e), 0);
    assert_int_equal(e.t_ms, 1764430460060);
    assert_int_equal(e.src, CAPSA_LOG_SRC_STDERR);
    assert_int_equal(e.session, 7);
    assert_int_equal(e.len, len);
    assert_memory_equal(e.data, data, len);
    capsa_execlog_entry_clear(&e);
    free(line);
}

static void test_encode(void **state)
{
    static const uint8_t bin[] = {0xff, 0x00, 'a', 0xc3};
    static const char esc[] = "q\"b\\s\tc\x01\x7f\r\n";
    char *line;
    (void)state;

    roundtrip("hello\n", 6, false);
    roundtrip("", 0, false);
    roundtrip(esc, sizeof(esc) - 1, false);
    roundtrip("h\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\n", 13, false); /* é € 😀 */
    roundtrip(bin, sizeof(bin), true);
    roundtrip("\xc3", 1, true);             /* truncated sequence */
    roundtrip("\xc0\xaf", 2, true);         /* overlong */
    roundtrip("\xed\xa0\x80", 3, true);     /* surrogate */
    roundtrip("\xf4\x90\x80\x80", 4, true); /* > U+10FFFF */
    roundtrip("a\0b", 3, false);            /* NUL is valid UTF-8: \u0000 */
    /* no session: no "id" */
    line = capsa_execlog_encode(0, CAPSA_LOG_SRC_SYSTEM, 0, "x", 1);
    assert_string_equal(line,
                        "{\"t\":\"1970-01-01T00:00:00.000Z\",\"s\":\"system\",\"d\":\"x\"}\n");
    free(line);
}

static void test_decode_bad(void **state)
{
    struct capsa_execlog_entry e;
    static const char *const bad[] = {
        "",
        "not json",
        "[]",
        "{\"t\":\"x\",\"s\":\"stdout\",\"d\":\"a\"}",
        "{\"s\":\"stdout\",\"d\":\"a\"}",
        "{\"t\":\"2026-01-01T00:00:00Z\",\"s\":\"stdout\"}",
        "{\"t\":\"2026-01-01T00:00:00Z\",\"s\":\"stdout\",\"d\":\"!!\",\"e\":\"base64\"}",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(capsa_execlog_decode(bad[i], strlen(bad[i]), &e), -1);
}

static void test_sources(void **state)
{
    unsigned m = 0;
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_log_source_parse("stdout", &m, &err), 0);
    assert_int_equal(m, 1u << CAPSA_LOG_SRC_STDOUT);
    assert_int_equal(capsa_log_source_parse("stderr,system", &m, &err), 0);
    assert_int_equal(m, (1u << CAPSA_LOG_SRC_STDERR) | (1u << CAPSA_LOG_SRC_SYSTEM));
    assert_int_equal(capsa_log_source_parse("all", &m, &err), 0);
    assert_int_equal(m, CAPSA_LOG_SRC_ALL);
    assert_int_equal(capsa_log_source_parse("stdout,bogus", &m, &err), -1);
    assert_non_null(strstr(err.msg, "'bogus'"));
    assert_int_equal(capsa_log_source_parse("", &m, &err), -1);
    assert_int_equal(capsa_log_source_parse("stdoutx", &m, &err), -1);
}

static void test_times(void **state)
{
    int64_t now = 1764430460060, t = 0;
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_execlog_parse_time("2025-11-29T15:34:20Z", now, &t, &err), 0);
    assert_int_equal(t, 1764430460000);
    assert_int_equal(capsa_execlog_parse_time("2025-11-29T15:34:20.06Z", now, &t, &err), 0);
    assert_int_equal(t, 1764430460060);
    assert_int_equal(capsa_execlog_parse_time("2025-11-29T16:34:20.060+01:00", now, &t, &err), 0);
    assert_int_equal(t, 1764430460060);
    assert_int_equal(capsa_execlog_parse_time("2025-11-29T10:34:20-05:00", now, &t, &err), 0);
    assert_int_equal(t, 1764430460000);
    assert_int_equal(capsa_execlog_parse_time("2025-11-29", now, &t, &err), 0);
    assert_int_equal(t, 1764374400000);
    assert_int_equal(capsa_execlog_parse_time("5m", now, &t, &err), 0);
    assert_int_equal(t, now - 300000);
    assert_int_equal(capsa_execlog_parse_time("2h", now, &t, &err), 0);
    assert_int_equal(t, now - 7200000);
    assert_int_equal(capsa_execlog_parse_time("1d", now, &t, &err), 0);
    assert_int_equal(t, now - 86400000);
    assert_int_equal(capsa_execlog_parse_time("30s", now, &t, &err), 0);
    assert_int_equal(t, now - 30000);
    assert_int_equal(capsa_execlog_parse_time("250ms", now, &t, &err), 0);
    assert_int_equal(t, now - 250);
    static const char *const bad[] = {"",
                                      "5",
                                      "5x",
                                      "-5m",
                                      "m",
                                      "yesterday",
                                      "2025-13-01",
                                      "2025-11-29T25:00:00Z",
                                      "2025-11-29T15:34:20",
                                      "2025-11-29T15:34:20Zjunk",
                                      "2025-11-29T15:34:20.Z",
                                      "99999999999999999999d",
                                      "1000000d"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        assert_int_equal(capsa_execlog_parse_time(bad[i], now, &t, &err), -1);
        assert_true(err.msg[0] != '\0');
    }
}

static size_t count_lines(const char *path, unsigned *srcmask, size_t *bytes)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0, n = 0;
    ssize_t l;

    if (!f)
        return 0;
    while ((l = getline(&line, &cap, f)) > 0) {
        struct capsa_execlog_entry e;
        assert_int_equal(capsa_execlog_decode(line, (size_t)l, &e), 0);
        assert_true(e.len <= CAPSA_EXECLOG_CHUNK_MAX);
        if (srcmask)
            *srcmask |= 1u << e.src;
        if (bytes)
            *bytes += e.len;
        capsa_execlog_entry_clear(&e);
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

static void test_writer(void **state)
{
    char dir[] = "/tmp/capsa-execlog-XXXXXX", path[256], p1[300], p4[300];
    struct capsa_execlog w;
    struct capsa_execlog_buf lb = {0};
    static uint8_t big[20000];
    unsigned mask = 0;
    size_t bytes = 0, total;
    struct stat st;
    (void)state;

    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/exec.log", dir);
    setenv(CAPSA_EXECLOG_ROTATE_ENV, "4096", 1);
    capsa_execlog_open(&w, path);
    assert_true(w.fd >= 0);
    assert_int_equal(w.rotate_bytes, 4096);
    /* splitter: two whole lines and a partial one */
    capsa_execlog_feed(&w, &lb, CAPSA_LOG_SRC_STDOUT, 1, (const uint8_t *)"a\nb\nc", 5, 1);
    assert_int_equal(count_lines(path, &mask, NULL), 2);
    assert_int_equal(lb.n, 1);
    assert_true(lb.since_us != 0);
    capsa_execlog_feed(&w, &lb, CAPSA_LOG_SRC_STDOUT, 1, (const uint8_t *)"d\n", 2, 2);
    assert_int_equal(count_lines(path, NULL, NULL), 3);
    assert_int_equal(lb.n, 0);
    capsa_execlog_feed(&w, &lb, CAPSA_LOG_SRC_STDOUT, 1, (const uint8_t *)"tail", 4, 3);
    capsa_execlog_flush(&w, &lb, CAPSA_LOG_SRC_STDOUT, 1);
    assert_int_equal(count_lines(path, NULL, NULL), 4);
    /* a long line without newline is cut into bounded entries; a UTF-8 sequence is not split */
    memset(big, 'x', sizeof(big));
    big[CAPSA_EXECLOG_CHUNK_MAX - 1] = 0xc3;
    big[CAPSA_EXECLOG_CHUNK_MAX] = 0xa9;
    capsa_execlog_write(&w, CAPSA_LOG_SRC_STDERR, 2, big, sizeof(big));
    /* rotation kept files bounded, at most 3 old ones */
    for (int i = 0; i < 200; i++)
        capsa_execlog_write(&w, CAPSA_LOG_SRC_SYSTEM, 0, "some system line here\n", 22);
    capsa_execlog_close(&w);
    snprintf(p1, sizeof(p1), "%s.1", path);
    snprintf(p4, sizeof(p4), "%s.4", path);
    assert_int_equal(stat(p1, &st), 0);
    assert_true(st.st_size <= 4096 + 200);
    assert_int_equal(stat(path, &st), 0);
    assert_true(st.st_size <= 4096);
    assert_int_equal(stat(p4, &st), -1);
    total = count_lines(path, &mask, &bytes);
    assert_true(total > 0);
    assert_true(mask & (1u << CAPSA_LOG_SRC_SYSTEM));
    for (int i = 1; i <= 3; i++) {
        char p[300];
        snprintf(p, sizeof(p), "%s.%d", path, i);
        count_lines(p, NULL, NULL); /* every line decodes */
        unlink(p);
    }
    unlink(path);
    rmdir(dir);
    unsetenv(CAPSA_EXECLOG_ROTATE_ENV);
}

static void test_meminfo(void **state)
{
    static const char mi[] = "MemTotal:         118232 kB\nMemFree:           98000 kB\n"
                             "MemAvailable:      99520 kB\nBuffers: 0 kB\n";
    uint64_t t = 0, a = 0;
    (void)state;

    assert_int_equal(capsa_meminfo_parse(mi, strlen(mi), &t, &a), 0);
    assert_int_equal(t, 118232ull * 1024);
    assert_int_equal(a, 99520ull * 1024);
    assert_int_equal(capsa_meminfo_parse("MemTotal: 5 kB\n", 15, &t, &a), -1);
    assert_int_equal(capsa_meminfo_parse("MemTotal: 5 kB\nMemAvailable: 9 kB\n", 34, &t, &a), -1);
    assert_int_equal(
        capsa_meminfo_parse("MemTotal: 99999999999999999999 kB\nMemAvailable: 1 kB\n", 54, &t, &a),
        -1);
}

static void test_proc_stats(void **state)
{
    struct capsa_proc_stats ps;
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_proc_stats_read(getpid(), &ps, &err), 0);
    assert_true(ps.rss_bytes > 0);
    assert_int_equal(capsa_proc_stats_read(0x7ffffff0, &ps, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_encode),     cmocka_unit_test(test_decode_bad),
        cmocka_unit_test(test_sources),    cmocka_unit_test(test_times),
        cmocka_unit_test(test_writer),     cmocka_unit_test(test_meminfo),
        cmocka_unit_test(test_proc_stats),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
