/* client.c - client side of a supervisor's control socket (see client.h). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "supervisor/client.h"
#include "supervisor/sandbox.h"

int capsa_ctl_connect(const char *sock_path, struct capsa_ctl_conn *c, int timeout_ms,
                      capsa_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct capsa_frame_hdr h;
    const uint8_t *p;
    _cleanup_close_ int fd = -1;
    json_t *ver;

    memset(c, 0, sizeof(*c));
    c->ch.fd = -1;
    if (timeout_ms <= 0)
        timeout_ms = 10000;
    if (strlen(sock_path) >= sizeof(sa.sun_path))
        return capsa_err_set(err, ENAMETOOLONG,
                             "control socket path %s is longer than %zu bytes (use a shorter "
                             "CAPSA_HOME)",
                             sock_path, sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, sock_path, strlen(sock_path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return capsa_err_set(err, errno, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return capsa_err_set(err, errno, "connecting to %s: %s", sock_path, strerror(errno));
    if (capsa_agentc_init(&c->ch, fd, err) < 0)
        return -1;
    c->ch.fd = steal_fd(&fd);
    for (;;) {
        if (capsa_agentc_wait_frame(&c->ch, timeout_ms, &h, &p, err) < 0) {
            capsa_err_prefix(err, "waiting for the supervisor's hello on %s", sock_path);
            goto fail;
        }
        if (h.stream == 0 && h.type == CAPSA_MSG_HELLO)
            break;
    }
    c->hello = capsa_agentc_parse_json(p, h.len, err);
    if (!c->hello) {
        capsa_err_prefix(err, "supervisor hello");
        goto fail;
    }
    ver = json_object_get(c->hello, "version");
    if (!json_is_integer(ver) || json_integer_value(ver) != CAPSA_PROTO_VERSION) {
        capsa_err_set(err, EPROTO, "the supervisor speaks protocol version %lld, this capsa %d",
                      json_is_integer(ver) ? (long long)json_integer_value(ver) : -1LL,
                      CAPSA_PROTO_VERSION);
        goto fail;
    }
    return 0;
fail:
    capsa_ctl_close(c);
    return -1;
}

int capsa_ctl_connect_name(struct capsa_store *store, const char *name, struct capsa_ctl_conn *c,
                           capsa_err *err)
{
    struct capsa_store_sandbox sb = {0};
    struct capsa_sandbox_paths paths;
    int ret = -1;

    memset(c, 0, sizeof(*c));
    c->ch.fd = -1;
    if (capsa_sandbox_reap(store, err) < 0 || capsa_store_sandbox_get(store, name, &sb, err) < 0)
        return -1;
    if (sb.status != CAPSA_SANDBOX_RUNNING) {
        capsa_err_set(err, EBUSY, "sandbox %s is %s, not running", name,
                      capsa_sandbox_status_name(sb.status));
        goto out;
    }
    if (capsa_sandbox_paths(name, sb.id, &paths, err) < 0)
        goto out;
    if (capsa_ctl_connect(paths.sock, c, 0, err) < 0) {
        capsa_err_prefix(err, "sandbox %s", name);
        goto out;
    }
    ret = 0;
out:
    capsa_store_sandbox_clear(&sb);
    return ret;
}

void capsa_ctl_close(struct capsa_ctl_conn *c)
{
    if (c->ch.fd >= 0)
        close(c->ch.fd);
    capsa_agentc_destroy(&c->ch);
    c->ch.fd = -1;
    json_decref(c->hello);
    c->hello = NULL;
}

int capsa_ctl_request(struct capsa_ctl_conn *c, const char *op, json_t *args, int timeout_ms,
                      json_t **result, capsa_err *err)
{
    json_t *req = args ? json_deep_copy(args) : json_object(), *res;
    struct capsa_frame_hdr h;
    const uint8_t *p;
    int rc;

    if (result)
        *result = NULL;
    if (!req)
        return capsa_err_set(err, ENOMEM, "ctl %s: out of memory", op);
    json_object_set_new(req, "op", json_string(op));
    rc = capsa_agentc_send_json(&c->ch, 0, CAPSA_MSG_CTL_REQUEST, 0, req, err);
    json_decref(req);
    if (rc < 0)
        return -1;
    for (;;) {
        if (capsa_agentc_wait_frame(&c->ch, timeout_ms, &h, &p, err) < 0)
            return capsa_err_prefix(err, "ctl %s", op);
        if (h.stream == 0 && h.type == CAPSA_MSG_CTL_RESULT)
            break;
    }
    res = capsa_agentc_parse_json(p, h.len, err);
    if (!res)
        return capsa_err_prefix(err, "ctl %s: supervisor reply", op);
    if (!json_is_true(json_object_get(res, "ok"))) {
        const char *m = json_string_value(json_object_get(res, "error"));
        capsa_err_set(err, EPROTO, "%s", m ? m : "the supervisor refused the request");
        json_decref(res);
        return -1;
    }
    if (result)
        *result = res;
    else
        json_decref(res);
    return 0;
}

int capsa_ctl_wait_closed(struct capsa_ctl_conn *c, int timeout_ms, capsa_err *err)
{
    uint64_t deadline = capsa_now_us() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000u;

    while (!c->ch.eof) {
        struct capsa_frame_hdr h;
        const uint8_t *p;
        struct pollfd pf = {.fd = c->ch.fd, .events = POLLIN};
        uint64_t now = capsa_now_us();
        int r;

        while ((r = capsa_agentc_next(&c->ch, &h, &p, NULL)) > 0)
            ; /* discard whatever else arrives */
        if (r < 0)
            return 0; /* a broken stream is as good as closed */
        if (timeout_ms >= 0 && now >= deadline)
            return capsa_err_set(err, ETIMEDOUT, "the supervisor did not finish within %d ms",
                                 timeout_ms);
        if (poll(&pf, 1, timeout_ms < 0 ? 1000 : (int)((deadline - now) / 1000 + 1)) < 0 &&
            errno != EINTR)
            return capsa_err_set(err, errno, "poll: %s", strerror(errno));
        if (capsa_agentc_read(&c->ch, NULL) < 0)
            return 0; /* ECONNRESET and friends: closed */
    }
    return 0;
}
