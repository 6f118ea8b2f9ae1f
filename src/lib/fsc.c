/* fsc.c - host side of the agent's fs operations (see fsc.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "lib/fsc.h"

#define CHUNK         (256u * 1024u)
#define FS_TIMEOUT_MS 60000

static int fs_error(const uint8_t *p, size_t len, const char *op, const char *path, capsa_err *err)
{
    json_t *j = capsa_agentc_parse_json(p, len, NULL);
    const char *code = j ? json_string_value(json_object_get(j, "code")) : NULL;
    const char *msg = j ? json_string_value(json_object_get(j, "message")) : NULL;
    int e = j ? (int)json_integer_value(json_object_get(j, "errno")) : 0;

    capsa_err_set(err, e > 0 && e < 4096 ? e : EIO, "fs %s %.200s: %s%s%.300s", op, path,
                  code ? code : "error", msg ? ": " : "", msg ? msg : "");
    json_decref(j);
    return -1;
}

/* Wait for the terminal frame of stream sid; data frames go to sink (may be NULL). */
static int wait_result(struct capsa_agentc *c, uint32_t sid, const char *op, const char *path,
                       int (*sink)(void *, const uint8_t *, size_t, capsa_err *), void *ctx,
                       json_t **result, capsa_err *err)
{
    for (;;) {
        struct capsa_frame_hdr h;
        const uint8_t *p;

        if (capsa_agentc_wait_frame(c, FS_TIMEOUT_MS, &h, &p, err) < 0)
            return capsa_err_prefix(err, "fs %s %.200s", op, path);
        if (h.stream != sid)
            continue;
        switch (h.type) {
        case CAPSA_MSG_FS_DATA:
            if (!sink)
                return capsa_err_set(err, EPROTO, "fs %s %.200s: unexpected data from guest", op,
                                     path);
            if (sink(ctx, p, h.len, err) < 0)
                return -1;
            break;
        case CAPSA_MSG_FS_RESULT: {
            json_t *j = capsa_agentc_parse_json(p, h.len, err);
            if (!j)
                return capsa_err_prefix(err, "fs %s %.200s", op, path);
            if (result)
                *result = j;
            else
                json_decref(j);
            return 0;
        }
        case CAPSA_MSG_ERROR:
            return fs_error(p, h.len, op, path, err);
        default:
            return capsa_err_set(err, EPROTO, "fs %s %.200s: unexpected %s frame from guest", op,
                                 path, capsa_frame_type_name(h.type) ?: "unknown");
        }
    }
}

int capsa_fsc_simple(struct capsa_agentc *c, json_t *request, json_t **result, capsa_err *err)
{
    uint32_t sid = capsa_agentc_new_stream(c);
    const char *op = json_string_value(json_object_get(request, "op"));
    const char *path = json_string_value(json_object_get(request, "path"));

    if (capsa_agentc_send_json(c, sid, CAPSA_MSG_FS_REQUEST, 0, request, err) < 0)
        return -1;
    return wait_result(c, sid, op ? op : "?", path ? path : "?", NULL, NULL, result, err);
}

int capsa_fsc_write(struct capsa_agentc *c, const char *path, const void *data, size_t len,
                    int mode, capsa_err *err)
{
    uint32_t sid = capsa_agentc_new_stream(c);
    json_t *req = json_pack("{s:s, s:s, s:i}", "op", "write", "path", path, "mode", mode);
    const uint8_t *d = data;
    size_t off = 0;
    int rc;

    rc = capsa_agentc_send_json(c, sid, CAPSA_MSG_FS_REQUEST, 0, req, err);
    json_decref(req);
    if (rc < 0)
        return -1;
    do {
        size_t n = len - off > CHUNK ? CHUNK : len - off;
        uint16_t fl = off + n == len ? CAPSA_FRAME_EOF : 0;
        if (capsa_agentc_send(c, sid, CAPSA_MSG_FS_DATA, fl, d + off, n, err) < 0)
            return -1;
        off += n;
        /* keep at most a few chunks queued; the guest may answer early with an error */
        if (capsa_agentc_pending(c) > 4 * CHUNK && capsa_agentc_flush(c, true, err) < 0)
            return -1;
    } while (off < len);
    return wait_result(c, sid, "write", path, NULL, NULL, NULL, err);
}

struct rbuf {
    uint8_t *p;
    size_t len, cap;
    size_t max; /* 0: CAPSA_FSC_READ_MAX */
};

static int rbuf_sink(void *ctx, const uint8_t *data, size_t n, capsa_err *err)
{
    struct rbuf *b = ctx;

    size_t max = b->max ? b->max : CAPSA_FSC_READ_MAX;

    if (n > max - b->len)
        return capsa_err_set(err, EFBIG, "fs read: file larger than %llu bytes",
                             (unsigned long long)max);
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n + 1)
            cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np)
            return capsa_err_set(err, ENOMEM, "fs read: out of memory");
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
    return 0;
}

int capsa_fsc_read(struct capsa_agentc *c, const char *path, uint8_t **data, size_t *len,
                   capsa_err *err)
{
    return capsa_fsc_read_max(c, path, 0, data, len, err);
}

int capsa_fsc_read_max(struct capsa_agentc *c, const char *path, size_t max, uint8_t **data,
                       size_t *len, capsa_err *err)
{
    uint32_t sid = capsa_agentc_new_stream(c);
    json_t *req = json_pack("{s:s, s:s}", "op", "read", "path", path);
    struct rbuf b = {.max = max > CAPSA_FSC_READ_MAX ? CAPSA_FSC_READ_MAX : max};
    int rc;

    rc = capsa_agentc_send_json(c, sid, CAPSA_MSG_FS_REQUEST, 0, req, err);
    json_decref(req);
    if (rc < 0)
        return -1;
    if (wait_result(c, sid, "read", path, rbuf_sink, &b, NULL, err) < 0) {
        free(b.p);
        return -1;
    }
    if (!b.p)
        b.p = calloc(1, 1);
    *data = b.p;
    *len = b.len;
    return 0;
}

int capsa_fsc_stat(struct capsa_agentc *c, const char *path, json_t **result, capsa_err *err)
{
    json_t *req = json_pack("{s:s, s:s}", "op", "stat", "path", path);
    int rc = capsa_fsc_simple(c, req, result, err);
    json_decref(req);
    return rc;
}

int capsa_fsc_list(struct capsa_agentc *c, const char *path, json_t **entries, capsa_err *err)
{
    json_t *req = json_pack("{s:s, s:s}", "op", "list", "path", path), *res = NULL;
    int rc = capsa_fsc_simple(c, req, &res, err);

    json_decref(req);
    if (rc < 0)
        return -1;
    *entries = json_incref(json_object_get(res, "entries"));
    json_decref(res);
    if (!json_is_array(*entries)) {
        json_decref(*entries);
        return capsa_err_set(err, EPROTO, "fs list %.200s: guest sent no entries array", path);
    }
    return 0;
}

int capsa_fsc_mkdir(struct capsa_agentc *c, const char *path, int mode, capsa_err *err)
{
    json_t *req = json_pack("{s:s, s:s, s:i}", "op", "mkdir", "path", path, "mode", mode);
    int rc = capsa_fsc_simple(c, req, NULL, err);
    json_decref(req);
    return rc;
}

int capsa_fsc_remove(struct capsa_agentc *c, const char *path, bool recursive, capsa_err *err)
{
    json_t *req =
        json_pack("{s:s, s:s, s:b}", "op", "remove", "path", path, "recursive", recursive);
    int rc = capsa_fsc_simple(c, req, NULL, err);
    json_decref(req);
    return rc;
}

int capsa_fsc_rename(struct capsa_agentc *c, const char *from, const char *to, capsa_err *err)
{
    json_t *req = json_pack("{s:s, s:s, s:s}", "op", "rename", "path", from, "to", to);
    int rc = capsa_fsc_simple(c, req, NULL, err);
    json_decref(req);
    return rc;
}
