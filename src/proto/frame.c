/* frame.c - encoding, decoding and incremental reading of host<->guest frames. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "proto/frame.h"

static const struct {
    uint16_t type;
    const char *name;
} type_names[] = {
    {CAPSA_MSG_HELLO, "hello"},
    {CAPSA_MSG_BOOT, "boot"},
    {CAPSA_MSG_READY, "ready"},
    {CAPSA_MSG_PING, "ping"},
    {CAPSA_MSG_PONG, "pong"},
    {CAPSA_MSG_SHUTDOWN, "shutdown"},
    {CAPSA_MSG_ERROR, "error"},
    {CAPSA_MSG_EXEC_START, "exec.start"},
    {CAPSA_MSG_EXEC_STARTED, "exec.started"},
    {CAPSA_MSG_STDIN, "exec.stdin"},
    {CAPSA_MSG_STDOUT, "exec.stdout"},
    {CAPSA_MSG_STDERR, "exec.stderr"},
    {CAPSA_MSG_SIGNAL, "exec.signal"},
    {CAPSA_MSG_RESIZE, "exec.resize"},
    {CAPSA_MSG_EXITED, "exec.exited"},
    {CAPSA_MSG_EXEC_FAILED, "exec.failed"},
    {CAPSA_MSG_FS_REQUEST, "fs.request"},
    {CAPSA_MSG_FS_DATA, "fs.data"},
    {CAPSA_MSG_FS_RESULT, "fs.result"},
    {CAPSA_MSG_CTL_REQUEST, "ctl.request"},
    {CAPSA_MSG_CTL_RESULT, "ctl.result"},
};

const char *capsa_frame_type_name(uint16_t type)
{
    for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]); i++)
        if (type_names[i].type == type)
            return type_names[i].name;
    return NULL;
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

void capsa_frame_hdr_encode(uint8_t out[CAPSA_FRAME_HDR_SIZE], const struct capsa_frame_hdr *h)
{
    put32(out, h->len);
    put32(out + 4, h->stream);
    put16(out + 8, h->type);
    put16(out + 10, h->flags);
}

int capsa_frame_hdr_decode(const uint8_t in[CAPSA_FRAME_HDR_SIZE], struct capsa_frame_hdr *h,
                           capsa_err *err)
{
    h->len = get32(in);
    h->stream = get32(in + 4);
    h->type = get16(in + 8);
    h->flags = get16(in + 10);
    if (h->len > CAPSA_FRAME_MAX_PAYLOAD)
        return capsa_err_set(err, EMSGSIZE, "frame: payload of %u bytes exceeds the %u-byte limit",
                             h->len, CAPSA_FRAME_MAX_PAYLOAD);
    return 0;
}

void capsa_frame_reader_init(struct capsa_frame_reader *r)
{
    memset(r, 0, sizeof(*r));
}

void capsa_frame_reader_free(struct capsa_frame_reader *r)
{
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

int capsa_frame_reader_feed(struct capsa_frame_reader *r, const void *data, size_t n,
                            capsa_err *err)
{
    if (r->off > 0) { /* drop consumed bytes before growing */
        memmove(r->buf, r->buf + r->off, r->len - r->off);
        r->len -= r->off;
        r->off = 0;
    }
    if (r->len + n > r->cap) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < r->len + n)
            cap *= 2;
        if (cap > 2 * (CAPSA_FRAME_HDR_SIZE + (size_t)CAPSA_FRAME_MAX_PAYLOAD) + n)
            cap = r->len + n;
        uint8_t *nb = realloc(r->buf, cap);
        if (!nb)
            return capsa_err_set(err, ENOMEM, "frame reader: out of memory");
        r->buf = nb;
        r->cap = cap;
    }
    if (n)
        memcpy(r->buf + r->len, data, n);
    r->len += n;
    return 0;
}

int capsa_frame_reader_next(struct capsa_frame_reader *r, struct capsa_frame_hdr *h,
                            const uint8_t **payload, capsa_err *err)
{
    size_t avail = r->len - r->off;

    if (avail < CAPSA_FRAME_HDR_SIZE)
        return 0;
    if (capsa_frame_hdr_decode(r->buf + r->off, h, err) < 0)
        return -1;
    if (avail < CAPSA_FRAME_HDR_SIZE + (size_t)h->len)
        return 0;
    *payload = r->buf + r->off + CAPSA_FRAME_HDR_SIZE;
    r->off += CAPSA_FRAME_HDR_SIZE + h->len;
    return 1;
}

int capsa_frame_build(uint32_t stream, uint16_t type, uint16_t flags, const void *payload,
                      size_t len, uint8_t **out, size_t *out_len, capsa_err *err)
{
    struct capsa_frame_hdr h = {.len = (uint32_t)len, .stream = stream, .type = type, .flags = flags};
    uint8_t *b;

    if (len > CAPSA_FRAME_MAX_PAYLOAD)
        return capsa_err_set(err, EMSGSIZE, "frame: payload of %zu bytes exceeds the %u-byte limit",
                             len, CAPSA_FRAME_MAX_PAYLOAD);
    b = malloc(CAPSA_FRAME_HDR_SIZE + len);
    if (!b)
        return capsa_err_set(err, ENOMEM, "frame: out of memory");
    capsa_frame_hdr_encode(b, &h);
    if (len)
        memcpy(b + CAPSA_FRAME_HDR_SIZE, payload, len);
    *out = b;
    *out_len = CAPSA_FRAME_HDR_SIZE + len;
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n, capsa_err *err)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return capsa_err_set(err, errno, "frame write: %s", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, uint8_t *p, size_t n, capsa_err *err)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return capsa_err_set(err, errno, "frame read: %s", strerror(errno));
        }
        if (r == 0)
            return capsa_err_set(err, EPIPE, "frame read: peer closed the channel");
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int capsa_frame_write(int fd, uint32_t stream, uint16_t type, uint16_t flags, const void *payload,
                      size_t len, capsa_err *err)
{
    uint8_t *buf;
    size_t n;
    int ret;

    if (capsa_frame_build(stream, type, flags, payload, len, &buf, &n, err) < 0)
        return -1;
    ret = write_all(fd, buf, n, err);
    free(buf);
    return ret;
}

int capsa_frame_read(int fd, struct capsa_frame_hdr *h, uint8_t **payload, capsa_err *err)
{
    uint8_t hdr[CAPSA_FRAME_HDR_SIZE];
    uint8_t *p;

    if (read_all(fd, hdr, sizeof(hdr), err) < 0)
        return -1;
    if (capsa_frame_hdr_decode(hdr, h, err) < 0)
        return -1;
    p = malloc((size_t)h->len + 1);
    if (!p)
        return capsa_err_set(err, ENOMEM, "frame read: out of memory");
    if (read_all(fd, p, h->len, err) < 0) {
        free(p);
        return -1;
    }
    p[h->len] = '\0';
    *payload = p;
    return 0;
}
