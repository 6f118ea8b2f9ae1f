/* test_agent.c - drives the real capsa-agent (--serve-fd) over a socketpair: exec
 * (exit codes, failures, signals, stdin, stderr, env, cwd, users, rlimits, PTY),
 * fs operations and malformed input; plus the pure passwd/group parser. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../agent/disk.h"
#include "../agent/msg.h"
#include "../agent/users.h"
#include "common/err.h"
#include "proto/frame.h"

struct conn {
    pid_t pid;
    int fd;
    struct capsa_frame_reader r;
};

struct frame {
    struct capsa_frame_hdr h;
    uint8_t *p; /* NUL-terminated copy */
};

static char tmpdir[] = "/tmp/capsa-agent-test.XXXXXX";

struct conn;
static void expect_pong(struct conn *c);
static void expect_bad_frame(struct conn *c, uint32_t stream);

/* ---- client plumbing ---- */

static int recv_frame(struct conn *c, struct frame *f, int timeout_ms)
{
    capsa_err err = {0};
    const uint8_t *p;

    for (;;) {
        int rc = capsa_frame_reader_next(&c->r, &f->h, &p, &err);
        if (rc < 0)
            fail_msg("frame reader: %s", err.msg);
        if (rc > 0) {
            f->p = malloc(f->h.len + 1);
            assert_non_null(f->p);
            memcpy(f->p, p, f->h.len);
            f->p[f->h.len] = '\0';
            return 0;
        }
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        int pr = poll(&pf, 1, timeout_ms);
        if (pr == 0)
            return -1; /* timeout */
        uint8_t buf[65536];
        ssize_t n = read(c->fd, buf, sizeof(buf));
        if (n <= 0)
            return -2; /* agent gone */
        assert_int_equal(capsa_frame_reader_feed(&c->r, buf, (size_t)n, &err), 0);
    }
}

static void send_raw(struct conn *c, uint32_t stream, uint16_t type, uint16_t flags, const void *p,
                     size_t n)
{
    capsa_err err = {0};
    if (capsa_frame_write(c->fd, stream, type, flags, p, n, &err) < 0)
        fail_msg("send: %s", err.msg);
}

static void send_str(struct conn *c, uint32_t stream, uint16_t type, const char *s)
{
    send_raw(c, stream, type, 0, s, strlen(s));
}

static json_t *frame_json(const struct frame *f)
{
    json_t *j = json_loadb((const char *)f->p, f->h.len, 0, NULL);
    if (!j)
        fail_msg("frame %s is not JSON: %s", capsa_frame_type_name(f->h.type), f->p);
    return j;
}

/* Wait for a frame of this type on this stream, skipping nothing else: any
 * other frame fails the test. */
static json_t *expect_json(struct conn *c, uint32_t stream, uint16_t type)
{
    struct frame f;
    json_t *j;

    if (recv_frame(c, &f, 10000) < 0)
        fail_msg("no %s frame from the agent", capsa_frame_type_name(type));
    if (f.h.stream != stream || f.h.type != type)
        fail_msg("expected %s on stream %u, got %s (0x%x) on stream %u: %s",
                 capsa_frame_type_name(type), stream, capsa_frame_type_name(f.h.type), f.h.type,
                 f.h.stream, f.p);
    j = frame_json(&f);
    free(f.p);
    return j;
}

/* Start the agent; prep (when given) runs in the child first and returns false to
 * abandon the start (the agent then never says hello). */
static void agent_start_prep(struct conn *c, const char *boot, bool (*prep)(void *), void *arg)
{
    const char *bin = getenv("CAPSA_AGENT");
    int sv[2];
    json_t *j;

    assert_non_null(bin);
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        if (prep && !prep(arg))
            _exit(125);
        if (sv[1] == 3)
            fcntl(3, F_SETFD, 0); /* dup2 onto itself would keep CLOEXEC */
        else
            dup2(sv[1], 3);
        execl(bin, "capsa-agent", "--serve-fd", "3", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    c->fd = sv[0];
    capsa_frame_reader_init(&c->r);
    j = expect_json(c, 0, CAPSA_MSG_HELLO);
    assert_int_equal(json_integer_value(json_object_get(j, "version")), 1);
    json_decref(j);
    send_str(c, 0, CAPSA_MSG_BOOT, boot);
    j = expect_json(c, 0, CAPSA_MSG_READY);
    assert_true(json_is_integer(json_object_get(j, "boot_ms")));
    json_decref(j);
}

static void agent_start(struct conn *c, const char *boot)
{
    agent_start_prep(c, boot, NULL, NULL);
}

static int agent_stop(struct conn *c)
{
    int st;
    close(c->fd);
    capsa_frame_reader_free(&c->r);
    assert_int_equal(waitpid(c->pid, &st, 0), c->pid);
    return st;
}

static int setup(void **state)
{
    static struct conn c;
    char boot[512];
    snprintf(boot, sizeof(boot),
             "{\"version\":1,\"root\":{\"kind\":\"none\"},\"env\":[\"BOOTVAR=fromboot\","
             "\"OVER=boot\"],\"workdir\":\"%s\"}",
             tmpdir);
    agent_start(&c, boot);
    *state = &c;
    return 0;
}

static int teardown(void **state)
{
    struct conn *c = *state;
    int st = agent_stop(c);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    return 0;
}

/* ---- exec helper ---- */

struct result {
    bool started, failed;
    int pid, code, signal;
    char kind[64], message[512];
    uint8_t *out, *err;
    size_t out_len, err_len;
};

struct feeder {
    struct conn *c;
    uint32_t stream;
    const uint8_t *data;
    size_t len;
    bool eof;
};

static void *feed_stdin(void *arg)
{
    struct feeder *f = arg;
    capsa_err err = {0};
    size_t off = 0;

    while (off < f->len) {
        size_t n = f->len - off > 100000 ? 100000 : f->len - off;
        if (capsa_frame_write(f->c->fd, f->stream, CAPSA_MSG_STDIN, 0, f->data + off, n, &err) < 0)
            return NULL;
        off += n;
    }
    if (f->eof)
        capsa_frame_write(f->c->fd, f->stream, CAPSA_MSG_STDIN, CAPSA_FRAME_EOF, NULL, 0, &err);
    return NULL;
}

static void append(uint8_t **buf, size_t *len, const uint8_t *p, size_t n)
{
    *buf = realloc(*buf, *len + n + 1);
    assert_non_null(*buf);
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
}

/* Collect frames of stream until exited/failed. */
static void collect(struct conn *c, uint32_t stream, struct result *r)
{
    for (;;) {
        struct frame f;
        json_t *j;

        if (recv_frame(c, &f, 20000) < 0)
            fail_msg("exec stream %u: no end frame", stream);
        if (f.h.stream != stream)
            fail_msg("unexpected frame %s on stream %u", capsa_frame_type_name(f.h.type),
                     f.h.stream);
        switch (f.h.type) {
        case CAPSA_MSG_EXEC_STARTED:
            assert_false(r->started);
            j = frame_json(&f);
            r->started = true;
            r->pid = (int)json_integer_value(json_object_get(j, "pid"));
            json_decref(j);
            break;
        case CAPSA_MSG_STDOUT:
            assert_true(r->started);
            append(&r->out, &r->out_len, f.p, f.h.len);
            break;
        case CAPSA_MSG_STDERR:
            assert_true(r->started);
            append(&r->err, &r->err_len, f.p, f.h.len);
            break;
        case CAPSA_MSG_EXITED:
            assert_true(r->started);
            j = frame_json(&f);
            r->code = (int)json_integer_value(json_object_get(j, "code"));
            r->signal = (int)json_integer_value(json_object_get(j, "signal"));
            json_decref(j);
            free(f.p);
            return;
        case CAPSA_MSG_EXEC_FAILED:
            j = frame_json(&f);
            r->failed = true;
            snprintf(r->kind, sizeof(r->kind), "%s", json_string_value(json_object_get(j, "kind")));
            snprintf(r->message, sizeof(r->message), "%s",
                     json_string_value(json_object_get(j, "message")));
            json_decref(j);
            free(f.p);
            return;
        default:
            fail_msg("unexpected %s frame on exec stream: %s", capsa_frame_type_name(f.h.type),
                     f.p);
        }
        free(f.p);
    }
}

static void result_free(struct result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof(*r));
}

static uint32_t next_stream = 1;

/* Run start (JSON) with optional stdin; stdin EOF follows the data when given. */
static void run(struct conn *c, const char *start, const void *in, size_t in_len, struct result *r)
{
    uint32_t id = next_stream++;
    pthread_t th;
    struct feeder fd = {.c = c, .stream = id, .data = in, .len = in_len, .eof = true};

    memset(r, 0, sizeof(*r));
    send_str(c, id, CAPSA_MSG_EXEC_START, start);
    if (in) {
        assert_int_equal(pthread_create(&th, NULL, feed_stdin, &fd), 0);
        collect(c, id, r);
        pthread_join(th, NULL);
    } else {
        collect(c, id, r);
    }
}

/* ---- exec tests ---- */

static void test_echo(void **state)
{
    struct result r;
    run(*state, "{\"argv\":[\"echo\",\"hi\",\"there\"]}", NULL, 0, &r);
    assert_false(r.failed);
    assert_true(r.pid > 0);
    assert_int_equal(r.code, 0);
    assert_int_equal(r.signal, 0);
    assert_string_equal((char *)r.out, "hi there\n");
    assert_int_equal(r.err_len, 0);
    result_free(&r);
}

static void test_exit_codes(void **state)
{
    struct result r;
    run(*state, "{\"argv\":[\"sh\",\"-c\",\"exit 7\"]}", NULL, 0, &r);
    assert_false(r.failed);
    assert_int_equal(r.code, 7);
    assert_int_equal(r.signal, 0);
    result_free(&r);
    run(*state, "{\"argv\":[\"true\"]}", NULL, 0, &r);
    assert_int_equal(r.code, 0);
    result_free(&r);
}

static void test_not_found(void **state)
{
    struct result r;
    run(*state, "{\"argv\":[\"capsa-no-such-program\"]}", NULL, 0, &r);
    assert_true(r.failed);
    assert_false(r.started);
    assert_string_equal(r.kind, "not_found");
    assert_non_null(strstr(r.message, "capsa-no-such-program"));
    result_free(&r);
    run(*state, "{\"argv\":[\"/nonexistent/bin/x\"]}", NULL, 0, &r);
    assert_string_equal(r.kind, "not_found");
    result_free(&r);
    /* PATH from the session env is the one searched */
    run(*state, "{\"argv\":[\"sh\",\"-c\",\"true\"],\"env\":[\"PATH=/nonexistent\"]}", NULL, 0, &r);
    assert_string_equal(r.kind, "not_found");
    result_free(&r);
}

static void test_permission_denied(void **state)
{
    struct result r;
    char path[256], start[512];
    int fd;

    snprintf(path, sizeof(path), "%s/notexec", tmpdir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "#!/bin/sh\necho no\n", 18), 18);
    close(fd);
    snprintf(start, sizeof(start), "{\"argv\":[\"%s\"]}", path);
    run(*state, start, NULL, 0, &r);
    assert_true(r.failed);
    assert_string_equal(r.kind, "permission_denied");
    result_free(&r);
}

static void test_bad_request(void **state)
{
    struct result r;
    run(*state, "{\"argv\":[]}", NULL, 0, &r);
    assert_true(r.failed);
    assert_string_equal(r.kind, "bad_request");
    result_free(&r);
    run(*state, "{\"argv\":[\"true\"],\"rlimits\":[{\"resource\":\"bogus\",\"soft\":1}]}", NULL, 0,
        &r);
    assert_string_equal(r.kind, "bad_request");
    assert_non_null(strstr(r.message, "rlimits[0].resource"));
    result_free(&r);
    run(*state, "{\"argv\":[\"true\"],\"cwd\":\"relative\"}", NULL, 0, &r);
    assert_string_equal(r.kind, "bad_request");
    result_free(&r);
}

static void test_signal_kill(void **state)
{
    struct conn *c = *state;
    uint32_t id = next_stream++;
    struct result r = {0};
    json_t *j;

    /* SIGKILL takes the shell's children with it (they hold stdout open) */
    send_str(c, id, CAPSA_MSG_EXEC_START, "{\"argv\":[\"sh\",\"-c\",\"sleep 60; echo never\"]}");
    j = expect_json(c, id, CAPSA_MSG_EXEC_STARTED);
    json_decref(j);
    r.started = true;
    send_str(c, id, CAPSA_MSG_SIGNAL, "{\"signal\":9}");
    collect(c, id, &r);
    assert_int_equal(r.signal, 9);
    assert_int_equal(r.code, 137);
    assert_int_equal(r.out_len, 0);
    result_free(&r);

    id = next_stream++;
    send_str(c, id, CAPSA_MSG_EXEC_START, "{\"argv\":[\"sleep\",\"60\"]}");
    json_decref(expect_json(c, id, CAPSA_MSG_EXEC_STARTED));
    r.started = true;
    send_str(c, id, CAPSA_MSG_SIGNAL, "{\"signal\":15}");
    collect(c, id, &r);
    assert_int_equal(r.signal, 15);
    assert_int_equal(r.code, 143);
    result_free(&r);
}

static void test_stdin_roundtrip(void **state)
{
    const size_t n = 1u << 20;
    uint8_t *data = malloc(n);
    struct result r;
    unsigned int seed = 12345;

    assert_non_null(data);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        data[i] = (uint8_t)(seed >> 16);
    }
    run(*state, "{\"argv\":[\"cat\"],\"stdin\":true}", data, n, &r);
    assert_false(r.failed);
    assert_int_equal(r.code, 0);
    assert_int_equal(r.out_len, n);
    assert_memory_equal(r.out, data, n);
    result_free(&r);
    /* and through a pipeline that hashes it in the guest */
    run(*state, "{\"argv\":[\"wc\",\"-c\"],\"stdin\":true}", data, n, &r);
    assert_int_equal(atoi((char *)r.out), (int)n);
    result_free(&r);
    free(data);
}

static void test_stdin_default_closed(void **state)
{
    struct result r;
    /* stdin false (the default): cat sees /dev/null and exits at once */
    run(*state, "{\"argv\":[\"cat\"]}", NULL, 0, &r);
    assert_int_equal(r.code, 0);
    assert_int_equal(r.out_len, 0);
    result_free(&r);
}

static void test_stderr_separate(void **state)
{
    struct result r;
    run(*state, "{\"argv\":[\"sh\",\"-c\",\"echo out; echo err >&2; echo out2\"]}", NULL, 0, &r);
    assert_int_equal(r.code, 0);
    assert_string_equal((char *)r.out, "out\nout2\n");
    assert_string_equal((char *)r.err, "err\n");
    result_free(&r);
}

static void test_large_output_before_exit(void **state)
{
    struct result r;
    /* 5 MB: more than the agent's output high-water mark, so back-pressure kicks in */
    run(*state, "{\"argv\":[\"sh\",\"-c\",\"head -c 5000000 /dev/zero; echo done >&2\"]}", NULL, 0,
        &r);
    assert_int_equal(r.code, 0);
    assert_int_equal(r.out_len, 5000000);
    assert_string_equal((char *)r.err, "done\n");
    result_free(&r);
}

static void test_env(void **state)
{
    struct result r;
    run(*state,
        "{\"argv\":[\"sh\",\"-c\",\"echo $BOOTVAR $OVER $MINE; echo $PATH; test -n \\\"$HOME\\\" "
        "&& echo home\"],\"env\":[\"OVER=exec\",\"MINE=1\"]}",
        NULL, 0, &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr((char *)r.out, "fromboot exec 1\n"));
    assert_non_null(strstr((char *)r.out, "/usr/bin"));
    assert_non_null(strstr((char *)r.out, "home\n"));
    result_free(&r);
}

static void test_cwd(void **state)
{
    struct result r;
    char expect[256];

    run(*state, "{\"argv\":[\"pwd\"],\"cwd\":\"/usr\"}", NULL, 0, &r);
    assert_string_equal((char *)r.out, "/usr\n");
    result_free(&r);
    /* default: the boot workdir */
    run(*state, "{\"argv\":[\"pwd\"]}", NULL, 0, &r);
    snprintf(expect, sizeof(expect), "%s\n", tmpdir);
    assert_string_equal((char *)r.out, expect);
    result_free(&r);
    run(*state, "{\"argv\":[\"pwd\"],\"cwd\":\"/nonexistent-dir\"}", NULL, 0, &r);
    assert_true(r.failed);
    assert_string_equal(r.kind, "bad_cwd");
    result_free(&r);
}

static void test_user(void **state)
{
    struct result r;

    if (geteuid() != 0) {
        skip();
        return;
    }
    run(*state, "{\"argv\":[\"sh\",\"-c\",\"id -u; id -g; echo $HOME\"],\"user\":\"4321:8765\"}",
        NULL, 0, &r);
    assert_false(r.failed);
    assert_string_equal((char *)r.out, "4321\n8765\n/\n");
    result_free(&r);
    run(*state, "{\"argv\":[\"sh\",\"-c\",\"id -u; id -g; echo $HOME\"],\"user\":\"4321\"}", NULL,
        0, &r);
    assert_string_equal((char *)r.out, "4321\n0\n/\n");
    result_free(&r);
    run(*state, "{\"argv\":[\"sh\",\"-c\",\"id -un; echo $USER\"],\"user\":\"nobody\"}", NULL, 0,
        &r);
    assert_false(r.failed);
    assert_string_equal((char *)r.out, "nobody\nnobody\n");
    result_free(&r);
    run(*state, "{\"argv\":[\"id\"],\"user\":\"capsa-no-such-user\"}", NULL, 0, &r);
    assert_true(r.failed);
    assert_string_equal(r.kind, "user_setup_failed");
    result_free(&r);
    /* the uid applies to permission checks: a root-only dir becomes a bad cwd */
    run(*state, "{\"argv\":[\"true\"],\"user\":\"4321\",\"cwd\":\"/root\"}", NULL, 0, &r);
    if (r.failed)
        assert_string_equal(r.kind, "bad_cwd");
    result_free(&r);
}

static void test_rlimits(void **state)
{
    struct result r;
    run(*state,
        "{\"argv\":[\"sh\",\"-c\",\"ulimit -n; ulimit -Hn\"],\"rlimits\":[{\"resource\":"
        "\"nofile\",\"soft\":100,\"hard\":200}]}",
        NULL, 0, &r);
    assert_false(r.failed);
    assert_string_equal((char *)r.out, "100\n200\n");
    result_free(&r);
}

static void test_pty(void **state)
{
    struct conn *c = *state;
    struct result r;
    uint32_t id;
    json_t *j;

    run(*state,
        "{\"argv\":[\"sh\",\"-c\",\"tty; stty size; echo err >&2\"],\"tty\":true,"
        "\"rows\":30,\"cols\":100}",
        NULL, 0, &r);
    assert_false(r.failed);
    assert_int_equal(r.code, 0);
    assert_non_null(r.out);
    assert_non_null(strstr((char *)r.out, "/dev/pts/"));
    assert_non_null(strstr((char *)r.out, "30 100"));
    assert_non_null(strstr((char *)r.out, "err")); /* a PTY merges stderr */
    assert_int_equal(r.err_len, 0);
    result_free(&r);

    /* resize seen by stty size */
    id = next_stream++;
    send_str(c, id, CAPSA_MSG_EXEC_START,
             "{\"argv\":[\"sh\",\"-c\",\"read x; stty size\"],\"tty\":true,\"stdin\":true,"
             "\"rows\":24,\"cols\":80}");
    j = expect_json(c, id, CAPSA_MSG_EXEC_STARTED);
    json_decref(j);
    send_str(c, id, CAPSA_MSG_RESIZE, "{\"rows\":40,\"cols\":120}");
    send_raw(c, id, CAPSA_MSG_STDIN, 0, "go\n", 3);
    memset(&r, 0, sizeof(r));
    r.started = true;
    collect(c, id, &r);
    assert_int_equal(r.code, 0);
    assert_non_null(strstr((char *)r.out, "40 120"));
    result_free(&r);

    /* stdin EOF on a PTY types VEOF: cat ends */
    run(*state, "{\"argv\":[\"cat\"],\"tty\":true,\"stdin\":true}", "abc\n", 4, &r);
    assert_int_equal(r.code, 0);
    if (!r.out || !strstr((char *)r.out, "abc"))
        print_error("pty cat output: %zu bytes: %s\n", r.out_len, r.out ? (char *)r.out : "");
    assert_non_null(strstr((char *)r.out, "abc"));
    result_free(&r);
}

static void test_stdin_early_close(void **state)
{
    const size_t n = 4u << 20;
    uint8_t *data = calloc(1, n);
    struct result r;

    /* the child stops reading after 10 bytes: the rest must be dropped, not wedge the agent */
    run(*state, "{\"argv\":[\"head\",\"-c\",\"10\"],\"stdin\":true}", data, n, &r);
    assert_int_equal(r.code, 0);
    assert_int_equal(r.out_len, 10);
    result_free(&r);
    free(data);
    /* stdin frames that raced with the exit may draw bad_frame errors (stream closed) */
    send_str(*state, 0, CAPSA_MSG_PING, "{}");
    for (;;) {
        struct frame f;
        assert_int_equal(recv_frame(*state, &f, 10000), 0);
        if (f.h.stream == 0 && f.h.type == CAPSA_MSG_PONG) {
            free(f.p);
            break;
        }
        assert_int_equal(f.h.stream, next_stream - 1);
        assert_int_equal(f.h.type, CAPSA_MSG_ERROR);
        free(f.p);
    }
}

static void test_concurrent_sessions(void **state)
{
    struct conn *c = *state;
    uint32_t a = next_stream++, b = next_stream++;
    struct result ra = {0}, rb = {0};
    int ended = 0;

    send_str(c, a, CAPSA_MSG_EXEC_START,
             "{\"argv\":[\"sh\",\"-c\",\"read x; echo a-$x\"],\"stdin\":true}");
    send_str(c, b, CAPSA_MSG_EXEC_START, "{\"argv\":[\"sh\",\"-c\",\"echo b-done\"]}");
    send_raw(c, a, CAPSA_MSG_STDIN, CAPSA_FRAME_EOF, "go\n", 3);
    while (ended < 2) {
        struct frame f;
        struct result *r;
        json_t *j;

        assert_int_equal(recv_frame(c, &f, 10000), 0);
        assert_true(f.h.stream == a || f.h.stream == b);
        r = f.h.stream == a ? &ra : &rb;
        if (f.h.type == CAPSA_MSG_STDOUT)
            append(&r->out, &r->out_len, f.p, f.h.len);
        if (f.h.type == CAPSA_MSG_EXITED) {
            j = frame_json(&f);
            r->code = (int)json_integer_value(json_object_get(j, "code"));
            json_decref(j);
            ended++;
        }
        assert_int_not_equal(f.h.type, CAPSA_MSG_EXEC_FAILED);
        free(f.p);
    }
    assert_string_equal((char *)ra.out, "a-go\n");
    assert_string_equal((char *)rb.out, "b-done\n");
    result_free(&ra);
    result_free(&rb);
    /* a stream id in use cannot be started twice */
    send_str(c, a, CAPSA_MSG_EXEC_START, "{\"argv\":[\"sleep\",\"5\"]}");
    json_decref(expect_json(c, a, CAPSA_MSG_EXEC_STARTED));
    send_str(c, a, CAPSA_MSG_EXEC_START, "{\"argv\":[\"true\"]}");
    expect_bad_frame(c, a);
    send_str(c, a, CAPSA_MSG_SIGNAL, "{\"signal\":9}");
    json_decref(expect_json(c, a, CAPSA_MSG_EXITED));
}

/* ---- fs tests ---- */

static json_t *fs_req(struct conn *c, const char *req, uint32_t *id_out)
{
    uint32_t id = next_stream++;
    send_str(c, id, CAPSA_MSG_FS_REQUEST, req);
    if (id_out)
        *id_out = id;
    return NULL;
}

/* Reply of a one-shot fs op: fs.result JSON, or the error JSON with "error": true added. */
static json_t *fs_op(struct conn *c, const char *fmt, ...)
{
    char req[2048];
    uint32_t id;
    struct frame f;
    va_list ap;
    json_t *j;

    va_start(ap, fmt);
    vsnprintf(req, sizeof(req), fmt, ap);
    va_end(ap);
    fs_req(c, req, &id);
    if (recv_frame(c, &f, 10000) < 0)
        fail_msg("no reply to %s", req);
    assert_int_equal(f.h.stream, id);
    j = frame_json(&f);
    if (f.h.type == CAPSA_MSG_ERROR)
        json_object_set_new(j, "error", json_true());
    else
        assert_int_equal(f.h.type, CAPSA_MSG_FS_RESULT);
    free(f.p);
    return j;
}

static const char *jstr(json_t *j, const char *k)
{
    const char *s = json_string_value(json_object_get(j, k));
    return s ? s : "";
}

static void test_fs_roundtrip(void **state)
{
    struct conn *c = *state;
    const size_t n = 600000; /* three fs.data chunks back */
    uint8_t *data = malloc(n), *back = NULL;
    size_t back_len = 0, chunks = 0;
    char req[1024];
    uint32_t id;
    struct frame f;
    json_t *j;

    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 7 + 3);

    j = fs_op(c, "{\"op\":\"mkdir\",\"path\":\"%s/fs/a/b/c\",\"mode\":493}", tmpdir);
    assert_null(json_object_get(j, "error"));
    json_decref(j);
    /* mkdir -p of an existing dir is fine */
    j = fs_op(c, "{\"op\":\"mkdir\",\"path\":\"%s/fs/a/b\"}", tmpdir);
    assert_null(json_object_get(j, "error"));
    json_decref(j);

    /* write in two chunks */
    snprintf(req, sizeof(req), "{\"op\":\"write\",\"path\":\"%s/fs/a/file\",\"mode\":416}", tmpdir);
    fs_req(c, req, &id);
    send_raw(c, id, CAPSA_MSG_FS_DATA, 0, data, n / 2);
    send_raw(c, id, CAPSA_MSG_FS_DATA, CAPSA_FRAME_EOF, data + n / 2, n - n / 2);
    j = expect_json(c, id, CAPSA_MSG_FS_RESULT);
    assert_int_equal(json_integer_value(json_object_get(j, "size")), (json_int_t)n);
    json_decref(j);

    /* read back */
    snprintf(req, sizeof(req), "{\"op\":\"read\",\"path\":\"%s/fs/a/file\"}", tmpdir);
    fs_req(c, req, &id);
    for (;;) {
        assert_int_equal(recv_frame(c, &f, 10000), 0);
        assert_int_equal(f.h.stream, id);
        assert_int_equal(f.h.type, CAPSA_MSG_FS_DATA);
        assert_true(f.h.len <= 256 * 1024);
        append(&back, &back_len, f.p, f.h.len);
        chunks++;
        free(f.p);
        if (f.h.flags & CAPSA_FRAME_EOF)
            break;
    }
    assert_true(chunks >= 3);
    assert_int_equal(back_len, n);
    assert_memory_equal(back, data, n);
    j = expect_json(c, id, CAPSA_MSG_FS_RESULT);
    assert_int_equal(json_integer_value(json_object_get(j, "size")), (json_int_t)n);
    json_decref(j);

    /* stat */
    j = fs_op(c, "{\"op\":\"stat\",\"path\":\"%s/fs/a/file\"}", tmpdir);
    assert_string_equal(jstr(j, "kind"), "file");
    assert_int_equal(json_integer_value(json_object_get(j, "size")), (json_int_t)n);
    assert_int_equal(json_integer_value(json_object_get(j, "mode")), 0640);
    assert_true(json_is_integer(json_object_get(j, "uid")));
    json_decref(j);

    /* append */
    snprintf(req, sizeof(req), "{\"op\":\"write\",\"path\":\"%s/fs/a/file\",\"append\":true}",
             tmpdir);
    fs_req(c, req, &id);
    send_raw(c, id, CAPSA_MSG_FS_DATA, CAPSA_FRAME_EOF, "xyz", 3);
    j = expect_json(c, id, CAPSA_MSG_FS_RESULT);
    json_decref(j);
    j = fs_op(c, "{\"op\":\"stat\",\"path\":\"%s/fs/a/file\"}", tmpdir);
    assert_int_equal(json_integer_value(json_object_get(j, "size")), (json_int_t)n + 3);
    json_decref(j);

    /* list */
    j = fs_op(c, "{\"op\":\"list\",\"path\":\"%s/fs/a\"}", tmpdir);
    json_t *ents = json_object_get(j, "entries");
    assert_int_equal(json_array_size(ents), 2);
    assert_string_equal(jstr(json_array_get(ents, 0), "name"), "b");
    assert_string_equal(jstr(json_array_get(ents, 0), "kind"), "dir");
    assert_string_equal(jstr(json_array_get(ents, 1), "name"), "file");
    assert_string_equal(jstr(json_array_get(ents, 1), "kind"), "file");
    json_decref(j);

    /* rename */
    j = fs_op(c, "{\"op\":\"rename\",\"path\":\"%s/fs/a/file\",\"to\":\"%s/fs/a/b/moved\"}", tmpdir,
              tmpdir);
    assert_null(json_object_get(j, "error"));
    json_decref(j);
    j = fs_op(c, "{\"op\":\"stat\",\"path\":\"%s/fs/a/file\"}", tmpdir);
    assert_string_equal(jstr(j, "code"), "not_found");
    assert_int_equal(json_integer_value(json_object_get(j, "errno")), ENOENT);
    json_decref(j);

    /* errors */
    j = fs_op(c, "{\"op\":\"read\",\"path\":\"%s/fs/a\"}", tmpdir);
    assert_string_equal(jstr(j, "code"), "is_a_directory");
    json_decref(j);
    j = fs_op(c, "{\"op\":\"list\",\"path\":\"%s/fs/a/b/moved\"}", tmpdir);
    assert_string_equal(jstr(j, "code"), "not_a_directory");
    json_decref(j);
    j = fs_op(c, "{\"op\":\"mkdir\",\"path\":\"%s/fs/a/b/moved/x\"}", tmpdir);
    assert_string_equal(jstr(j, "code"), "not_a_directory");
    json_decref(j);
    j = fs_op(c, "{\"op\":\"remove\",\"path\":\"%s/fs/a\"}", tmpdir);
    assert_string_equal(jstr(j, "code"), "not_empty");
    json_decref(j);
    j = fs_op(c, "{\"op\":\"stat\",\"path\":\"relative/path\"}");
    assert_string_equal(jstr(j, "code"), "invalid");
    json_decref(j);
    j = fs_op(c, "{\"op\":\"chmod\",\"path\":\"/\"}");
    assert_string_equal(jstr(j, "code"), "invalid");
    json_decref(j);

    /* recursive remove */
    j = fs_op(c, "{\"op\":\"remove\",\"path\":\"%s/fs\",\"recursive\":true}", tmpdir);
    assert_null(json_object_get(j, "error"));
    json_decref(j);
    j = fs_op(c, "{\"op\":\"stat\",\"path\":\"%s/fs\"}", tmpdir);
    assert_string_equal(jstr(j, "code"), "not_found");
    json_decref(j);

    /* empty file read: one EOF chunk then size 0 */
    snprintf(req, sizeof(req), "%s/empty", tmpdir);
    close(open(req, O_WRONLY | O_CREAT, 0644));
    snprintf(req, sizeof(req), "{\"op\":\"read\",\"path\":\"%s/empty\"}", tmpdir);
    fs_req(c, req, &id);
    assert_int_equal(recv_frame(c, &f, 10000), 0);
    assert_int_equal(f.h.type, CAPSA_MSG_FS_DATA);
    assert_int_equal(f.h.len, 0);
    assert_true(f.h.flags & CAPSA_FRAME_EOF);
    free(f.p);
    j = expect_json(c, id, CAPSA_MSG_FS_RESULT);
    assert_int_equal(json_integer_value(json_object_get(j, "size")), 0);
    json_decref(j);

    free(back);
    free(data);
}

/* ---- malformed input ---- */

static void expect_pong(struct conn *c)
{
    send_str(c, 0, CAPSA_MSG_PING, "{}");
    json_decref(expect_json(c, 0, CAPSA_MSG_PONG));
}

static void expect_bad_frame(struct conn *c, uint32_t stream)
{
    json_t *j = expect_json(c, stream, CAPSA_MSG_ERROR);
    assert_string_equal(jstr(j, "code"), "bad_frame");
    assert_true(strlen(jstr(j, "message")) > 0);
    json_decref(j);
}

static void test_malformed(void **state)
{
    struct conn *c = *state;

    expect_pong(c);
    send_str(c, 0, 0x7777, "{}");
    expect_bad_frame(c, 0);
    send_str(c, 0, CAPSA_MSG_PING, "{not json");
    expect_bad_frame(c, 0);
    send_str(c, 0, CAPSA_MSG_PING, "[1,2]");
    expect_bad_frame(c, 0);
    send_str(c, 99, CAPSA_MSG_STDIN, "data");
    expect_bad_frame(c, 99);
    send_str(c, 98, CAPSA_MSG_SIGNAL, "{\"signal\":9}");
    expect_bad_frame(c, 98);
    send_str(c, 97, CAPSA_MSG_FS_DATA, "x");
    expect_bad_frame(c, 97);
    send_str(c, 96, 0x1234, "x");
    expect_bad_frame(c, 96);
    send_str(c, 95, CAPSA_MSG_EXEC_START, "\xff\xfe garbage");
    expect_bad_frame(c, 95);
    send_str(c, 0, CAPSA_MSG_BOOT, "{}");
    expect_bad_frame(c, 0); /* already booted */
    expect_pong(c);
}

static void test_oversized_frame_stops(void **state)
{
    struct conn c;
    uint8_t hdr[CAPSA_FRAME_HDR_SIZE];
    struct capsa_frame_hdr h = {
        .len = CAPSA_FRAME_MAX_PAYLOAD + 1, .stream = 0, .type = CAPSA_MSG_PING};
    struct frame f;
    int st;

    agent_start(&c, "{\"root\":{\"kind\":\"initramfs\"}}");
    capsa_frame_hdr_encode(hdr, &h);
    assert_int_equal(write(c.fd, hdr, sizeof(hdr)), (ssize_t)sizeof(hdr));
    assert_int_equal(recv_frame(&c, &f, 10000), -2); /* the agent hung up */
    st = agent_stop(&c);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
}

static void test_boot_failed_and_before_boot(void **state)
{
    const char *bin = getenv("CAPSA_AGENT");
    struct conn c;
    int sv[2], st;
    json_t *j;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    c.pid = fork();
    if (c.pid == 0) {
        if (sv[1] == 5)
            fcntl(5, F_SETFD, 0); /* dup2 onto itself would keep CLOEXEC */
        else
            dup2(sv[1], 5);
        execl(bin, "capsa-agent", "--serve-fd", "5", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    c.fd = sv[0];
    capsa_frame_reader_init(&c.r);
    json_decref(expect_json(&c, 0, CAPSA_MSG_HELLO));
    /* exec before boot is refused */
    send_str(&c, 1, CAPSA_MSG_EXEC_START, "{\"argv\":[\"true\"]}");
    expect_bad_frame(&c, 1);
    /* a bad boot config is a boot_failed error naming the field */
    send_str(&c, 0, CAPSA_MSG_BOOT, "{\"root\":{\"kind\":\"floppy\"}}");
    j = expect_json(&c, 0, CAPSA_MSG_ERROR);
    assert_string_equal(jstr(j, "code"), "boot_failed");
    assert_non_null(strstr(jstr(j, "message"), "root.kind"));
    json_decref(j);
    expect_pong(&c);
    /* shutdown ends the host-test agent cleanly */
    send_str(&c, 0, CAPSA_MSG_SHUTDOWN, "{}");
    st = agent_stop(&c);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- passwd/group parser (pure) ---- */

static const char passwd_txt[] = "root:x:0:0:root:/root:/bin/sh\n"
                                 "# comment\n"
                                 "bad:x:notanumber:0::/:/bin/sh\n"
                                 "big:x:4294967295:0::/:/bin/sh\n"
                                 "short:x:5\n"
                                 "app:x:1000:1000:App:/home/app:/bin/sh\r\n"
                                 "nohome:x:1001:1001::relative:/bin/sh";
static const char group_txt[] = "root:x:0:\n"
                                "app:x:1000:\n"
                                "wheel:x:10:root,app\n"
                                "docker:x:999:other,app,more\n"
                                "neg:x:-1:app\n"
                                "grp:x:2000:";

static void test_users_parse(void **state)
{
    struct agent_user u;
    capsa_err err = {0};
    const size_t pl = sizeof(passwd_txt) - 1, gl = sizeof(group_txt) - 1;

    assert_int_equal(agent_user_resolve_text("app", passwd_txt, pl, group_txt, gl, &u, &err), 0);
    assert_int_equal(u.uid, 1000);
    assert_int_equal(u.gid, 1000);
    assert_string_equal(u.home, "/home/app");
    assert_string_equal(u.name, "app");
    assert_int_equal(u.n_groups, 3); /* 1000, wheel, docker */
    assert_int_equal(u.groups[0], 1000);
    assert_int_equal(u.groups[1], 10);
    assert_int_equal(u.groups[2], 999);

    assert_int_equal(agent_user_resolve_text("app:grp", passwd_txt, pl, group_txt, gl, &u, &err),
                     0);
    assert_int_equal(u.gid, 2000);
    assert_int_equal(agent_user_resolve_text("1000:55", passwd_txt, pl, group_txt, gl, &u, &err),
                     0);
    assert_int_equal(u.uid, 1000);
    assert_int_equal(u.gid, 55);
    assert_string_equal(u.name, "app");
    assert_int_equal(agent_user_resolve_text("777", passwd_txt, pl, group_txt, gl, &u, &err), 0);
    assert_int_equal(u.uid, 777);
    assert_int_equal(u.gid, 0);
    assert_string_equal(u.home, "/");
    assert_string_equal(u.name, "");
    assert_int_equal(agent_user_resolve_text("nohome", passwd_txt, pl, group_txt, gl, &u, &err), 0);
    assert_string_equal(u.home, "/"); /* a relative home is not trusted */

    /* hostile or unknown */
    assert_int_equal(agent_user_resolve_text("bad", passwd_txt, pl, group_txt, gl, &u, &err), -1);
    assert_int_equal(agent_user_resolve_text("big", passwd_txt, pl, group_txt, gl, &u, &err), -1);
    assert_int_equal(agent_user_resolve_text("short", passwd_txt, pl, group_txt, gl, &u, &err), -1);
    assert_int_equal(agent_user_resolve_text("app:neg", passwd_txt, pl, group_txt, gl, &u, &err),
                     -1);
    assert_int_equal(agent_user_resolve_text("4294967295", passwd_txt, pl, NULL, 0, &u, &err), -1);
    assert_int_equal(agent_user_resolve_text("app:", passwd_txt, pl, NULL, 0, &u, &err), -1);
    assert_int_equal(agent_user_resolve_text(":0", passwd_txt, pl, NULL, 0, &u, &err), -1);
    assert_int_equal(agent_user_resolve_text("a:b:c", passwd_txt, pl, NULL, 0, &u, &err), -1);
    assert_int_equal(agent_user_resolve_text("root", NULL, 0, NULL, 0, &u, &err), -1);
    assert_int_equal(agent_user_resolve_text("0", NULL, 0, NULL, 0, &u, &err), 0);

    /* an over-long line is skipped, the next one still found */
    size_t big = AGENT_USERS_MAX_LINE + 100;
    char *txt = malloc(big + 64);
    memset(txt, 'a', big);
    memcpy(txt, "longname:x:5:5::/:", 18);
    strcpy(txt + big, "\nlongname:x:6:6::/h:/bin/sh\n");
    assert_int_equal(agent_user_resolve_text("longname", txt, strlen(txt), NULL, 0, &u, &err), 0);
    assert_int_equal(u.uid, 6);
    free(txt);
}

/* ---- the passwd/group cache, against files the test controls ----
 * The agent resolves users from /etc/passwd and /etc/group of its root, so it runs in
 * a private mount namespace where both are bind mounts of files in tmpdir. */

struct etc_files {
    char passwd[256], group[256];
};

static bool bind_etc(void *arg)
{
    const struct etc_files *f = arg;
    return unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
           mount(f->passwd, "/etc/passwd", NULL, MS_BIND, NULL) == 0 &&
           mount(f->group, "/etc/group", NULL, MS_BIND, NULL) == 0;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

/* Run `sh -c script` as user; the output, or "failed:KIND". */
static char *run_as(struct conn *c, const char *user, const char *script)
{
    json_t *start = json_pack("{s:[s,s,s], s:s}", "argv", "sh", "-c", script, "user", user);
    char *js = json_dumps(start, JSON_COMPACT), *out;
    struct result r;

    run(c, js, NULL, 0, &r);
    if (r.failed) {
        assert_true(asprintf(&out, "failed:%s", r.kind) > 0);
    } else {
        assert_int_equal(r.code, 0);
        out = strdup(r.out ? (char *)r.out : "");
    }
    result_free(&r);
    free(js);
    json_decref(start);
    return out;
}

#define assert_run_as(c, user, script, want)                                                       \
    do {                                                                                           \
        char *got_ = run_as(c, user, script);                                                      \
        if (strcmp(got_, want) != 0)                                                               \
            fail_msg("as %s, `%s`: got \"%s\", want \"%s\"", user, script, got_, want);            \
        free(got_);                                                                                \
    } while (0)

static void test_users_cache(void **state)
{
    static const char passwd[] = "root:x:0:0:root:/root:/bin/sh\n"
                                 "cacheuser:x:4242:4343::/home/cacheuser:/bin/sh\n";
    static const char group[] = "root:x:0:\n";
    struct etc_files f;
    struct conn c;
    int probe, st;

    if (geteuid() != 0) {
        skip();
        return;
    }
    snprintf(f.passwd, sizeof(f.passwd), "%s/passwd", tmpdir);
    snprintf(f.group, sizeof(f.group), "%s/group", tmpdir);
    write_file(f.passwd, passwd);
    write_file(f.group, group);
    chmod(f.passwd, 0644);
    chmod(f.group, 0644);
    /* a host that forbids mount namespaces cannot run this test */
    probe = fork();
    assert_true(probe >= 0);
    if (probe == 0)
        _exit(bind_etc(&f) ? 0 : 1);
    assert_int_equal(waitpid(probe, &st, 0), probe);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        skip();
        return;
    }

    agent_start_prep(&c, "{\"version\":1,\"root\":{\"kind\":\"none\"}}", bind_etc, &f);
    assert_run_as(&c, "cacheuser", "id -u; id -g; id -G; echo $HOME",
                  "4242\n4343\n4343\n/home/cacheuser\n");
    assert_run_as(&c, "newuser", "id -u", "failed:user_setup_failed");
    /* an exec adds a user (an append: the size changes); the next exec can be that user */
    assert_run_as(&c, "root",
                  "echo 'newuser:x:4444:4545::/home/newuser:/bin/sh' >> /etc/passwd && echo ok",
                  "ok\n");
    assert_run_as(&c, "newuser", "id -u; id -g; echo $HOME", "4444\n4545\n/home/newuser\n");
    /* a supplementary group appears in /etc/group */
    assert_run_as(&c, "root", "echo 'extra:x:5151:other,newuser' >> /etc/group && echo ok", "ok\n");
    assert_run_as(&c, "newuser", "id -G", "4545 5151\n");
    assert_run_as(&c, "newuser:extra", "id -g", "5151\n");
    /* an edit in place that keeps the size (uid 4444 -> 4445) and lands in the same
     * timestamp tick as the last read: the copy read within 2 s of a change is not trusted */
    for (int i = 0; i < 3; i++) {
        char want[32], script[160];
        FILE *pf = fopen(f.passwd, "r+");
        char buf[4096];
        size_t n;
        assert_non_null(pf);
        n = fread(buf, 1, sizeof(buf) - 1, pf);
        buf[n] = '\0';
        char *p = strstr(buf, "newuser:x:444");
        assert_non_null(p);
        p[strlen("newuser:x:444")] = (char)('5' + i);
        rewind(pf);
        assert_int_equal(fwrite(buf, 1, n, pf), n);
        assert_int_equal(fclose(pf), 0);
        snprintf(want, sizeof(want), "444%d\n", 5 + i);
        assert_run_as(&c, "newuser", "id -u", want);
        snprintf(script, sizeof(script), "id -u # %d", i);
        assert_run_as(&c, "newuser", script, want);
    }
    /* the user goes away again */
    write_file(f.passwd, passwd);
    assert_run_as(&c, "newuser", "id -u", "failed:user_setup_failed");
    assert_run_as(&c, "cacheuser", "id -u", "4242\n");
    st = agent_stop(&c);
    assert_true(WIFEXITED(st));
}

/* ---- the PATH search cache ----
 * The agent runs with a private tmpfs on /mnt (its own mount namespace), so the
 * directories it records stay quiet; every change is made through an exec. */
static bool private_mnt(void *arg)
{
    return unshare(CLONE_NEWNS) == 0 && mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0 &&
           mount("capsa-test", "/mnt", "tmpfs", 0, "mode=0755") == 0;
}

/* Run argv0 with PATH; its output, or "failed:KIND". */
static char *run_path(struct conn *c, const char *argv0, const char *path)
{
    char env[512];
    json_t *start;
    char *js, *out;
    struct result r;

    snprintf(env, sizeof(env), "PATH=%s", path);
    start = json_pack("{s:[s], s:[s]}", "argv", argv0, "env", env);
    js = json_dumps(start, JSON_COMPACT);
    run(c, js, NULL, 0, &r);
    if (r.failed)
        assert_true(asprintf(&out, "failed:%s", r.kind) > 0);
    else
        out = strdup(r.out ? (char *)r.out : "");
    result_free(&r);
    free(js);
    json_decref(start);
    return out;
}

#define assert_run_path(c, argv0, path, want)                                                      \
    do {                                                                                           \
        char *got_ = run_path(c, argv0, path);                                                     \
        if (strcmp(got_, want) != 0)                                                               \
            fail_msg("%s in PATH %s: got \"%s\", want \"%s\"", argv0, path, got_, want);           \
        free(got_);                                                                                \
    } while (0)

static void test_path_cache(void **state)
{
    const char *p1 = "/mnt/pc/a:/mnt/pc/b", *p2 = "/mnt/pc/missing/x:/mnt/pc/b";
    struct conn c;
    int probe, st;

    if (geteuid() != 0) {
        skip();
        return;
    }
    probe = fork();
    assert_true(probe >= 0);
    if (probe == 0)
        _exit(private_mnt(NULL) ? 0 : 1);
    assert_int_equal(waitpid(probe, &st, 0), probe);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        skip();
        return;
    }
    agent_start_prep(&c, "{\"version\":1,\"root\":{\"kind\":\"none\"}}", private_mnt, NULL);
    assert_run_as(&c, "root",
                  "mkdir -p /mnt/pc/a /mnt/pc/b && cd /mnt/pc/b && "
                  "printf '#!/bin/sh\\necho b\\n' >pc1 && printf '#!/bin/sh\\necho b2\\n' >pc2 && "
                  "chmod 755 pc1 pc2 && echo ok",
                  "ok\n");
    /* directories changed in the last 2 s are never trusted: let them age */
    sleep(3);
    assert_run_path(&c, "pc1", p1, "b\n");
    assert_run_path(&c, "pc1", p1, "b\n");
    assert_run_path(&c, "pc2", p2, "b2\n");
    assert_run_path(&c, "pc2", p2, "b2\n");
    /* the name appears in an earlier element: a's mtime changed */
    assert_run_as(
        &c, "root",
        "printf '#!/bin/sh\\necho a\\n' >/mnt/pc/a/pc1 && chmod 755 /mnt/pc/a/pc1 && echo ok",
        "ok\n");
    assert_run_path(&c, "pc1", p1, "a\n");
    /* an element that did not exist appears, holding the name: pc's mtime changed */
    assert_run_as(
        &c, "root",
        "mkdir -p /mnt/pc/missing/x && printf '#!/bin/sh\\necho x\\n' >/mnt/pc/missing/x/pc2 && "
        "chmod 755 /mnt/pc/missing/x/pc2 && echo ok",
        "ok\n");
    assert_run_path(&c, "pc2", p2, "x\n");
    /* the program goes away from where it was found: the search goes on, or fails */
    assert_run_as(&c, "root", "rm /mnt/pc/a/pc1 && echo ok", "ok\n");
    assert_run_path(&c, "pc1", p1, "b\n");
    assert_run_as(&c, "root", "rm /mnt/pc/b/pc1 && echo ok", "ok\n");
    assert_run_path(&c, "pc1", p1, "failed:not_found");
    /* a file that is not executable earlier in PATH is still reported as such */
    assert_run_as(&c, "root", "printf 'x' >/mnt/pc/a/pc3 && echo ok", "ok\n");
    assert_run_path(&c, "pc3", p1, "failed:permission_denied");
    st = agent_stop(&c);
    assert_true(WIFEXITED(st));
}

/* Signals the agent inherited as ignored are default again in what it runs
 * (SIG_IGN survives execve, so the spawn must reset it). */
static bool ignore_term(void *arg)
{
    signal(SIGTERM, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    return true;
}

static void test_ignored_signals_reset(void **state)
{
    struct conn c;
    struct result r;
    int st;

    agent_start_prep(&c, "{\"version\":1,\"root\":{\"kind\":\"none\"}}", ignore_term, NULL);
    run(&c, "{\"argv\":[\"sh\",\"-c\",\"kill -TERM $$; echo survived\"]}", NULL, 0, &r);
    assert_false(r.failed);
    assert_int_equal(r.signal, SIGTERM);
    assert_null(r.out);
    result_free(&r);
    run(&c, "{\"argv\":[\"sh\",\"-c\",\"kill -USR1 $$; echo survived\"]}", NULL, 0, &r);
    assert_int_equal(r.signal, SIGUSR1);
    result_free(&r);
    /* SIGPIPE: the agent ignores it itself */
    run(&c, "{\"argv\":[\"sh\",\"-c\",\"kill -PIPE $$; echo survived\"]}", NULL, 0, &r);
    assert_int_equal(r.signal, SIGPIPE);
    result_free(&r);
    /* the agent itself still ignores SIGTERM: it is alive and answering */
    expect_pong(&c);
    st = agent_stop(&c);
    assert_true(WIFEXITED(st));
}

/* A fake /sys/block entry: size and ro always, serial when given. */
static void fake_disk(const char *sysblock, const char *name, const char *size, const char *ro,
                      const char *serial)
{
    char path[PATH_MAX];

    snprintf(path, sizeof(path), "%s/%s", sysblock, name);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/%s/size", sysblock, name);
    write_file(path, size);
    snprintf(path, sizeof(path), "%s/%s/ro", sysblock, name);
    write_file(path, ro);
    if (serial) {
        snprintf(path, sizeof(path), "%s/%s/serial", sysblock, name);
        write_file(path, serial);
    }
}

/* Disks are found by size and read-only flag when that is unambiguous (no serial read: the
 * fake disks without a serial file prove it), else by serial. */
static void test_disk_lookup(void **state)
{
    char sysblock[PATH_MAX], name[64];
    int by;
    struct agent_blockdev lower = {.serial = "capsa-lower", .sectors = 3944, .readonly = true};
    struct agent_blockdev upper = {.serial = "capsa-upper", .sectors = 8388608};
    struct agent_blockdev bare = {.serial = "capsa-upper"}; /* no size given */
    (void)state;

    snprintf(sysblock, sizeof(sysblock), "%s/sysblock", tmpdir);
    assert_int_equal(mkdir(sysblock, 0755), 0);
    /* probe order says nothing: the upper came first here */
    fake_disk(sysblock, "vda", "8388608\n", "0\n", NULL);
    fake_disk(sysblock, "vdb", "3944\n", "1\n", NULL);
    fake_disk(sysblock, "loop0", "3944\n", "1\n", NULL); /* not a virtio disk */
    assert_int_equal(agent_disk_lookup(sysblock, &lower, name, sizeof(name), &by), 0);
    assert_string_equal(name, "vdb");
    assert_int_equal(agent_disk_lookup(sysblock, &upper, name, sizeof(name), &by), 0);
    assert_string_equal(name, "vda");
    /* without a size only the serial counts, and these disks have none */
    assert_int_equal(agent_disk_lookup(sysblock, &bare, name, sizeof(name), &by), 1);
    /* a second read-only disk of the lower's size: ambiguous, so by serial */
    fake_disk(sysblock, "vdc", "3944\n", "1\n", "capsa-lower\n");
    assert_int_equal(agent_disk_lookup(sysblock, &lower, name, sizeof(name), &by), 0);
    assert_string_equal(name, "vdc");
    /* the right size but writable is not the lower; a size nobody has: by serial, absent */
    lower.sectors = 8388608;
    assert_int_equal(agent_disk_lookup(sysblock, &lower, name, sizeof(name), &by), 0);
    assert_string_equal(name, "vdc");
    upper.sectors = 1234;
    assert_int_equal(agent_disk_lookup(sysblock, &upper, name, sizeof(name), &by), 1);
    fake_disk(sysblock, "vdd", "not a number\n", "0\n", "capsa-upper\n");
    assert_int_equal(agent_disk_lookup(sysblock, &upper, name, sizeof(name), &by), 0);
    assert_string_equal(name, "vdd");
}

static void test_msg_parsers(void **state)
{
    struct agent_exec_req r;
    struct agent_boot b;
    capsa_err err = {0};
    const char *s;
    char u8[] = "ok\xff\xc3\xa9\xe2\x82";

    s = "{\"argv\":[\"ls\"],\"rlimits\":[{\"resource\":\"nofile\",\"soft\":10}],\"rows\":5}";
    assert_int_equal(agent_parse_exec_start(s, strlen(s), &r, &err), 0);
    assert_int_equal(r.n_rlimits, 1);
    assert_int_equal(r.rlimits[0].hard, 10); /* hard defaults to soft */
    assert_int_equal(r.rows, 5);
    assert_int_equal(r.cols, 80);
    assert_false(r.stdin_open);
    agent_exec_req_free(&r);
    s = "{\"argv\":[\"ls\"],\"rlimits\":[{\"resource\":\"nofile\",\"soft\":10,\"hard\":5}]}";
    assert_int_equal(agent_parse_exec_start(s, strlen(s), &r, &err), -1);
    assert_int_equal(err.code, EINVAL);
    s = "{\"argv\":[\"ls\"],\"env\":[\"NOEQUALS\"]}";
    assert_int_equal(agent_parse_exec_start(s, strlen(s), &r, &err), -1);
    assert_non_null(strstr(err.msg, "env[0]"));
    s = "{\"argv\":[\"a\\u0000b\"]}";
    assert_int_equal(agent_parse_exec_start(s, strlen(s), &r, &err), -1);
    s = "{\"argv\":[\"ls\"],\"argv\":[\"x\"]}";
    assert_int_equal(agent_parse_exec_start(s, strlen(s), &r, &err), -1);
    assert_int_equal(err.code, EBADMSG);

    s = "{\"root\":{\"kind\":\"9p\",\"tag\":\"capsa.root\"},\"mounts\":[{\"kind\":\"9p\",\"tag\":"
        "\"m0\",\"guest\":\"/data\",\"readonly\":true}],\"hostname\":\"box\",\"clock_ns\":5}";
    assert_int_equal(agent_parse_boot(s, strlen(s), &b, &err), 0);
    assert_int_equal(b.root_kind, AGENT_ROOT_9P);
    assert_string_equal(b.root_tag, "capsa.root");
    assert_int_equal(b.n_mounts, 1);
    assert_true(b.mounts[0].readonly);
    assert_int_equal(b.clock_ns, 5);
    agent_boot_free(&b);
    s = "{\"mounts\":[{\"kind\":\"9p\",\"tag\":\"m0\",\"guest\":\"/data/../etc\"}]}";
    assert_int_equal(agent_parse_boot(s, strlen(s), &b, &err), -1);
    assert_non_null(strstr(err.msg, "mounts[0].guest"));
    s = "{\"hostname\":\"bad host\"}";
    assert_int_equal(agent_parse_boot(s, strlen(s), &b, &err), -1);

    /* block-device roots */
    s = "{\"version\":1,\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"capsa-lower\"},"
        "\"upper\":{\"serial\":\"capsa-upper\",\"fstype\":\"xfs\"}}}";
    assert_int_equal(agent_parse_boot(s, strlen(s), &b, &err), 0);
    assert_int_equal(b.root_kind, AGENT_ROOT_OVERLAY);
    assert_string_equal(b.root_lower.serial, "capsa-lower");
    assert_string_equal(b.root_lower.fstype, "erofs"); /* default */
    assert_string_equal(b.root_upper.serial, "capsa-upper");
    assert_string_equal(b.root_upper.fstype, "xfs");
    assert_false(b.root_upper_tmpfs);
    assert_false(b.root_upper_scratch);        /* default: a sandbox's upper, written back */
    assert_false(b.root_upper_known);          /* default: a user's disk, probed */
    assert_int_equal(b.root_lower.sectors, 0); /* not given: found by serial */
    agent_boot_free(&b);
    s = "{\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"l\",\"sectors\":3944},"
        "\"upper\":{\"serial\":\"u\",\"sectors\":8388608}}}";
    assert_int_equal(agent_parse_boot(s, strlen(s), &b, &err), 0);
    assert_int_equal(b.root_lower.sectors, 3944);
    assert_true(b.root_lower.readonly); /* the host attaches the lower read-only */
    assert_int_equal(b.root_upper.sectors, 8388608);
    assert_false(b.root_upper.readonly);
    agent_boot_free(&b);
    s = "{\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"l\"},"
        "\"upper\":{\"serial\":\"u\",\"scratch\":true,\"known\":true}}}";
    assert_int_equal(agent_parse_boot(s, strlen(s), &b, &err), 0);
    assert_true(b.root_upper_scratch);
    assert_true(b.root_upper_known);
    agent_boot_free(&b);
    s = "{\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"l\",\"fstype\":\"erofs\"},"
        "\"upper\":{\"tmpfs\":true,\"size_mib\":128}}}";
    assert_int_equal(agent_parse_boot(s, strlen(s), &b, &err), 0);
    assert_true(b.root_upper_tmpfs);
    assert_int_equal(b.root_upper_size_mib, 128);
    assert_null(b.root_upper.serial);
    assert_true(b.root_upper_known); /* the agent makes a tmpfs upper itself */
    agent_boot_free(&b);
    s = "{\"root\":{\"kind\":\"disk\",\"serial\":\"capsa-root\"}}";
    assert_int_equal(agent_parse_boot(s, strlen(s), &b, &err), 0);
    assert_int_equal(b.root_kind, AGENT_ROOT_DISK);
    assert_string_equal(b.root_dev.serial, "capsa-root");
    assert_null(b.root_dev.fstype); /* probed in the guest */
    agent_boot_free(&b);
    static const struct {
        const char *json, *needle;
    } bad[] = {
        {"{\"root\":{\"kind\":\"overlay\",\"upper\":{\"tmpfs\":true}}}", "root.lower"},
        {"{\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"l\"},\"upper\":{\"serial\":"
         "\"u\",\"scratch\":1}}}",
         "root.upper"},
        {"{\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"l\"}}}", "root.upper"},
        {"{\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"l\"},\"upper\":{\"serial\":"
         "\"u\",\"known\":\"yes\"}}}",
         "root.upper"},
        {"{\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"l\"},\"upper\":{\"tmpfs\":"
         "true,\"serial\":\"u\"}}}",
         "root.upper"},
        {"{\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"l\"},\"upper\":{\"tmpfs\":"
         "true,\"size_mib\":0}}}",
         "size_mib"},
        {"{\"root\":{\"kind\":\"overlay\",\"lower\":{\"serial\":\"../x\"},\"upper\":{\"tmpfs\":"
         "true}}}",
         "root.lower.serial"},
        {"{\"root\":{\"kind\":\"disk\",\"serial\":\"012345678901234567890\"}}", "root.serial"},
        {"{\"root\":{\"kind\":\"disk\",\"serial\":\"r\",\"fstype\":\"ext4,rw\"}}", "root.fstype"},
        {"{\"root\":{\"kind\":\"disk\"}}", "serial"},
        {"{\"root\":{\"kind\":\"disk\",\"serial\":\"r\",\"sectors\":0}}", "sectors"},
        {"{\"root\":{\"kind\":\"disk\",\"serial\":\"r\",\"sectors\":\"8\"}}", "sectors"},
        {"{\"root\":{\"kind\":\"nfs\"}}", "overlay, disk"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(agent_parse_boot(bad[i].json, strlen(bad[i].json), &b, &err), -1);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("boot %s: error \"%s\" does not mention %s", bad[i].json, err.msg,
                     bad[i].needle);
    }

    agent_utf8_fix(u8);
    assert_string_equal(u8, "ok?\xc3\xa9??");
}

int main(void)
{
    /* one group (one TAP plan): the standalone tests ignore the shared agent */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_echo),
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_not_found),
        cmocka_unit_test(test_permission_denied),
        cmocka_unit_test(test_bad_request),
        cmocka_unit_test(test_signal_kill),
        cmocka_unit_test(test_stdin_roundtrip),
        cmocka_unit_test(test_stdin_default_closed),
        cmocka_unit_test(test_stderr_separate),
        cmocka_unit_test(test_large_output_before_exit),
        cmocka_unit_test(test_env),
        cmocka_unit_test(test_cwd),
        cmocka_unit_test(test_user),
        cmocka_unit_test(test_rlimits),
        cmocka_unit_test(test_pty),
        cmocka_unit_test(test_stdin_early_close),
        cmocka_unit_test(test_concurrent_sessions),
        cmocka_unit_test(test_fs_roundtrip),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_oversized_frame_stops),
        cmocka_unit_test(test_boot_failed_and_before_boot),
        cmocka_unit_test(test_users_parse),
        cmocka_unit_test(test_users_cache),
        cmocka_unit_test(test_ignored_signals_reset),
        cmocka_unit_test(test_path_cache),
        cmocka_unit_test(test_msg_parsers),
        cmocka_unit_test(test_disk_lookup),
    };
    char cmd[256];
    int rc;

    signal(SIGPIPE, SIG_IGN);
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    chmod(tmpdir, 0755);
    rc = cmocka_run_group_tests_name("agent", tests, setup, teardown);
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return rc;
}
