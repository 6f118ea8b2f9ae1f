/* agentc.c - host side of the agent channel (see agentc.h). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "lib/agentc.h"

uint64_t capsa_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int capsa_agentc_init(struct capsa_agentc *c, int fd, capsa_err *err)
{
    int fl;

    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->cancel_fd = -1;
    c->next_stream = 1;
    capsa_frame_reader_init(&c->rd);
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return capsa_err_set(err, errno, "agent channel: fcntl: %s", strerror(errno));
    return 0;
}

void capsa_agentc_destroy(struct capsa_agentc *c)
{
    capsa_frame_reader_free(&c->rd);
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = c->out_cap = 0;
}

uint32_t capsa_agentc_new_stream(struct capsa_agentc *c)
{
    uint32_t id = c->next_stream++;
    if (c->next_stream == 0)
        c->next_stream = 1;
    return id;
}

int capsa_agentc_send(struct capsa_agentc *c, uint32_t stream, uint16_t type, uint16_t flags,
                      const void *payload, size_t len, capsa_err *err)
{
    struct capsa_frame_hdr h = {
        .len = (uint32_t)len, .stream = stream, .type = type, .flags = flags};
    size_t need;

    if (len > CAPSA_FRAME_MAX_PAYLOAD)
        return capsa_err_set(err, EMSGSIZE, "agent channel: frame of %zu bytes too large", len);
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    need = c->out_len + CAPSA_FRAME_HDR_SIZE + len;
    if (need > c->out_cap) {
        if (c->out_off > 0) {
            memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
            c->out_len -= c->out_off;
            c->out_off = 0;
            need = c->out_len + CAPSA_FRAME_HDR_SIZE + len;
        }
        if (need > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 16384;
            while (cap < need)
                cap *= 2;
            uint8_t *nb = realloc(c->out, cap);
            if (!nb)
                return capsa_err_set(err, ENOMEM, "agent channel: out of memory");
            c->out = nb;
            c->out_cap = cap;
        }
    }
    capsa_frame_hdr_encode(c->out + c->out_len, &h);
    if (len)
        memcpy(c->out + c->out_len + CAPSA_FRAME_HDR_SIZE, payload, len);
    c->out_len += CAPSA_FRAME_HDR_SIZE + len;
    return 0;
}

int capsa_agentc_send_json(struct capsa_agentc *c, uint32_t stream, uint16_t type, uint16_t flags,
                           json_t *obj, capsa_err *err)
{
    char *s = json_dumps(obj, JSON_COMPACT);
    int ret;

    if (!s)
        return capsa_err_set(err, ENOMEM, "agent channel: cannot serialize %s",
                             capsa_frame_type_name(type));
    ret = capsa_agentc_send(c, stream, type, flags, s, strlen(s), err);
    free(s);
    return ret;
}

size_t capsa_agentc_pending(const struct capsa_agentc *c)
{
    return c->out_len - c->out_off;
}

int capsa_agentc_flush(struct capsa_agentc *c, bool block, capsa_err *err)
{
    while (c->out_off < c->out_len) {
        ssize_t w = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                if (!block)
                    return 0;
                struct pollfd p = {.fd = c->fd, .events = POLLOUT};
                if (poll(&p, 1, -1) < 0 && errno != EINTR)
                    return capsa_err_set(err, errno, "agent channel: poll: %s", strerror(errno));
                continue;
            }
            return capsa_err_set(err, errno, "agent channel: write: %s", strerror(errno));
        }
        c->out_off += (size_t)w;
    }
    c->out_off = c->out_len = 0;
    return 0;
}

int capsa_agentc_read(struct capsa_agentc *c, capsa_err *err)
{
    uint8_t buf[65536];

    for (int i = 0; i < 16; i++) {
        ssize_t r = read(c->fd, buf, sizeof(buf));
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 0;
            return capsa_err_set(err, errno, "agent channel: read: %s", strerror(errno));
        }
        if (r == 0) {
            c->eof = true;
            return 0;
        }
        if (capsa_frame_reader_feed(&c->rd, buf, (size_t)r, err) < 0)
            return -1;
    }
    return 0;
}

int capsa_agentc_next(struct capsa_agentc *c, struct capsa_frame_hdr *h, const uint8_t **payload,
                      capsa_err *err)
{
    int r = capsa_frame_reader_next(&c->rd, h, payload, err);
    if (r < 0)
        capsa_err_prefix(err, "agent channel: guest sent a malformed frame");
    return r;
}

int capsa_agentc_wait_frame(struct capsa_agentc *c, int timeout_ms, struct capsa_frame_hdr *h,
                            const uint8_t **payload, capsa_err *err)
{
    uint64_t deadline = timeout_ms < 0 ? 0 : capsa_now_us() + (uint64_t)timeout_ms * 1000u;

    for (;;) {
        int r = capsa_agentc_next(c, h, payload, err);
        if (r != 0)
            return r < 0 ? -1 : 1;
        if (c->eof)
            return capsa_err_set(err, EPIPE, "agent channel: the guest closed the channel");
        if (capsa_agentc_flush(c, false, err) < 0)
            return -1;
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (capsa_agentc_pending(c) ? POLLOUT : 0)},
                      cp = {.fd = c->cancel_fd, .events = POLLIN};
        int wait = -1;
        if (timeout_ms >= 0) {
            uint64_t now = capsa_now_us();
            if (now >= deadline)
                return capsa_err_set(err, ETIMEDOUT, "agent channel: no answer within %d ms",
                                     timeout_ms);
            wait = (int)((deadline - now + 999) / 1000);
        }
        struct pollfd ps[2] = {p, cp};
        if (poll(ps, c->cancel_fd >= 0 ? 2 : 1, wait) < 0 && errno != EINTR)
            return capsa_err_set(err, errno, "agent channel: poll: %s", strerror(errno));
        p = ps[0];
        if (c->cancel_fd >= 0 && ps[1].revents)
            return capsa_err_set(err, ECANCELED, "cancelled");
        if (p.revents & (POLLIN | POLLHUP | POLLERR))
            if (capsa_agentc_read(c, err) < 0)
                return -1;
    }
}

json_t *capsa_agentc_parse_json(const uint8_t *payload, size_t len, capsa_err *err)
{
    json_error_t jerr;
    json_t *j = json_loadb((const char *)payload, len, JSON_REJECT_DUPLICATES, &jerr);

    if (!j) {
        capsa_err_set(err, EPROTO, "guest sent invalid JSON: %s", jerr.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        capsa_err_set(err, EPROTO, "guest sent JSON that is not an object");
        return NULL;
    }
    return j;
}

/* An error frame from the guest, rendered as "CODE: MESSAGE". */
static int guest_error(const uint8_t *payload, size_t len, const char *what, capsa_err *err)
{
    json_t *j = capsa_agentc_parse_json(payload, len, NULL);
    const char *code = j ? json_string_value(json_object_get(j, "code")) : NULL;
    const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;

    capsa_err_set(err, EPROTO, "%s: guest reported %s: %.400s", what, code ? code : "an error",
                  msg ? msg : "(no message)");
    json_decref(j);
    return -1;
}

void capsa_agentc_log_marks(const uint8_t *p, size_t n)
{
    char line[512];
    size_t len = 0;
    const char *k;
    json_t *j, *m, *v;

    if (capsa_log_get_level() < CAPSA_LOG_DEBUG || !(j = json_loadb((const char *)p, n, 0, NULL)))
        return;
    m = json_object_get(j, "marks_us");
    json_object_foreach(m, k, v)
    {
        if (json_is_integer(v) && len < sizeof(line))
            len += (size_t)snprintf(line + len, sizeof(line) - len, " %.40s %.1f", k,
                                    (double)json_integer_value(v) / 1000.0);
    }
    if (len)
        log_debug("guest timeline (ms since its kernel started):%s", line);
    json_decref(j);
}

int capsa_agentc_handshake(struct capsa_agentc *c, json_t *boot, int timeout_ms, capsa_err *err)
{
    struct capsa_frame_hdr h;
    const uint8_t *p;
    json_t *j;
    json_int_t ver;

    /* hello: the guest announces itself once its port is open */
    for (;;) {
        if (capsa_agentc_wait_frame(c, timeout_ms, &h, &p, err) < 0)
            return capsa_err_prefix(err, "waiting for the guest agent");
        if (h.stream == 0 && h.type == CAPSA_MSG_HELLO)
            break;
        log_debug("ignoring %s frame before hello", capsa_frame_type_name(h.type));
    }
    j = capsa_agentc_parse_json(p, h.len, err);
    if (!j)
        return capsa_err_prefix(err, "agent hello");
    ver = json_integer_value(json_object_get(j, "version"));
    snprintf(c->agent_version, sizeof(c->agent_version), "%s",
             json_string_value(json_object_get(j, "agent_version"))
                 ? json_string_value(json_object_get(j, "agent_version"))
                 : "?");
    json_decref(j);
    if (ver != CAPSA_PROTO_VERSION)
        return capsa_err_set(err, EPROTO,
                             "agent speaks protocol version %lld, this capsa speaks %d",
                             (long long)ver, CAPSA_PROTO_VERSION);
    log_debug("agent said hello; sending the boot message");
    if (capsa_agentc_send_json(c, 0, CAPSA_MSG_BOOT, 0, boot, err) < 0)
        return -1;
    for (;;) {
        if (capsa_agentc_wait_frame(c, timeout_ms, &h, &p, err) < 0)
            return capsa_err_prefix(err, "waiting for the guest to boot");
        if (h.stream != 0)
            continue;
        if (h.type == CAPSA_MSG_READY) {
            capsa_agentc_log_marks(p, h.len);
            return 0;
        }
        if (h.type == CAPSA_MSG_ERROR)
            return guest_error(p, h.len, "guest boot failed", err);
    }
}

int capsa_agentc_ping(struct capsa_agentc *c, int timeout_ms, uint64_t *rtt_us, capsa_err *err)
{
    struct capsa_frame_hdr h;
    const uint8_t *p;
    uint64_t t0 = capsa_now_us();

    if (capsa_agentc_send(c, 0, CAPSA_MSG_PING, 0, "{}", 2, err) < 0)
        return -1;
    for (;;) {
        if (capsa_agentc_wait_frame(c, timeout_ms, &h, &p, err) < 0)
            return capsa_err_prefix(err, "ping");
        if (h.stream == 0 && h.type == CAPSA_MSG_PONG)
            break;
    }
    if (rtt_us)
        *rtt_us = capsa_now_us() - t0;
    return 0;
}

int capsa_agentc_shutdown(struct capsa_agentc *c, capsa_err *err)
{
    if (capsa_agentc_send(c, 0, CAPSA_MSG_SHUTDOWN, 0, "{}", 2, err) < 0)
        return -1;
    return capsa_agentc_flush(c, true, err);
}
