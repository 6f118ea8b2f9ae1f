/* execlog.c - exec.log JSON lines: encode, decode, rotate, split output into lines, and parse
 * --since/--until times (see execlog.h). */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "supervisor/execlog.h"

static const char *const src_names[] = {"stdout", "stderr", "output", "system"};

const char *capsa_log_source_name(enum capsa_log_source s)
{
    return (unsigned)s < ARRAY_SIZE(src_names) ? src_names[s] : "system";
}

int capsa_log_source_parse(const char *list, unsigned *mask, capsa_err *err)
{
    const char *p = list;
    unsigned m = 0;

    if (!list || !*list)
        return capsa_err_set(err, EINVAL, "expected a list of stdout,stderr,output,system,all");
    while (*p) {
        size_t n = strcspn(p, ",");
        bool found = false;
        if (n == 3 && !strncmp(p, "all", 3)) {
            m |= CAPSA_LOG_SRC_ALL;
            found = true;
        }
        for (size_t i = 0; i < ARRAY_SIZE(src_names) && !found; i++)
            if (strlen(src_names[i]) == n && !strncmp(p, src_names[i], n)) {
                m |= 1u << i;
                found = true;
            }
        if (!found)
            return capsa_err_set(err, EINVAL,
                                 "unknown source '%.*s' (expected stdout, stderr, output, system "
                                 "or all)",
                                 (int)(n > 64 ? 64 : n), p);
        p += n;
        if (*p == ',')
            p++;
    }
    *mask = m;
    return 0;
}

int64_t capsa_execlog_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void capsa_execlog_fmt_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* ---- UTF-8 and base64 -------------------------------------------------------------------- */

static bool utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        size_t k;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            k = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            k = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + k >= n)
            return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (p[i + j] & 0x3f);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += k + 1;
    }
    return true;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *p, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_val(int c)
{
    const char *q = c ? strchr(b64, c) : NULL;
    return q ? (int)(q - b64) : -1;
}

static int b64_decode(const char *s, size_t n, uint8_t *out, size_t *outn)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v;
        if (s[i] == '=')
            break;
        v = b64_val((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *outn = o;
    return 0;
}

/* ---- encode / decode --------------------------------------------------------------------- */

char *capsa_execlog_encode(int64_t t_ms, enum capsa_log_source src, uint64_t session,
                           const void *data, size_t len)
{
    const uint8_t *p = data;
    bool is_b64 = !utf8_valid(p, len);
    size_t cap = 128 + (is_b64 ? (len + 2) / 3 * 4 : len * 6), o;
    char *out = malloc(cap + 1), ts[40];

    if (!out)
        return NULL;
    capsa_execlog_fmt_time(t_ms, ts, sizeof(ts));
    o = (size_t)snprintf(out, cap, "{\"t\":\"%s\",\"s\":\"%s\",\"d\":\"", ts,
                         capsa_log_source_name(src));
    if (is_b64) {
        o += b64_encode(p, len, out + o);
    } else {
        for (size_t i = 0; i < len; i++) {
            uint8_t c = p[i];
            if (c == '"' || c == '\\') {
                out[o++] = '\\';
                out[o++] = (char)c;
            } else if (c == '\n') {
                out[o++] = '\\';
                out[o++] = 'n';
            } else if (c == '\r') {
                out[o++] = '\\';
                out[o++] = 'r';
            } else if (c == '\t') {
                out[o++] = '\\';
                out[o++] = 't';
            } else if (c < 0x20 || c == 0x7f) {
                o += (size_t)snprintf(out + o, 7, "\\u%04x", c);
            } else {
                out[o++] = (char)c;
            }
        }
    }
    out[o++] = '"';
    if (session)
        o += (size_t)snprintf(out + o, cap - o, ",\"id\":%llu", (unsigned long long)session);
    if (is_b64)
        o += (size_t)snprintf(out + o, cap - o, ",\"e\":\"base64\"");
    out[o++] = '}';
    out[o++] = '\n';
    out[o] = '\0';
    return out;
}

/* Parse RFC 3339 ("YYYY-MM-DDTHH:MM:SS[.fff](Z|+HH:MM)", or a bare date) -> ms. */
static int parse_rfc3339(const char *s, int64_t *ms)
{
    int Y, M, D, h = 0, m = 0, sec = 0, n = 0;
    int64_t frac = 0, scale = 1000;
    struct tm tm = {0};
    const char *p;
    int64_t off = 0;

    if (sscanf(s, "%4d-%2d-%2d%n", &Y, &M, &D, &n) != 3 || n != 10)
        return -1;
    p = s + n;
    if (*p) {
        if (*p != 'T' && *p != 't' && *p != ' ')
            return -1;
        n = 0;
        if (sscanf(p + 1, "%2d:%2d:%2d%n", &h, &m, &sec, &n) != 3 || n != 8)
            return -1;
        p += 1 + n;
        if (*p == '.') {
            p++;
            if (!isdigit((unsigned char)*p))
                return -1;
            for (; isdigit((unsigned char)*p); p++)
                if (scale > 1) {
                    scale /= 10;
                    frac += (*p - '0') * scale;
                }
        }
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int oh, om;
            n = 0;
            if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5 || oh > 23 || om > 59)
                return -1;
            off = ((int64_t)oh * 60 + om) * 60000 * (*p == '-' ? -1 : 1);
            p += 1 + n;
        } else {
            return -1;
        }
        if (*p)
            return -1;
    }
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60 || Y < 1970)
        return -1;
    tm.tm_year = Y - 1900;
    tm.tm_mon = M - 1;
    tm.tm_mday = D;
    tm.tm_hour = h;
    tm.tm_min = m;
    tm.tm_sec = sec;
    *ms = (int64_t)timegm(&tm) * 1000 + frac - off;
    return 0;
}

int capsa_execlog_parse_time(const char *s, int64_t now_ms, int64_t *out_ms, capsa_err *err)
{
    static const struct {
        const char *suffix;
        int64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    char *end;
    unsigned long long v;

    if (!s || !*s)
        return capsa_err_set(err, EINVAL,
                             "empty time (expected RFC 3339 or a duration such as 5m)");
    if (isdigit((unsigned char)s[0]) && strlen(s) >= 10 && s[4] == '-') {
        if (parse_rfc3339(s, out_ms) < 0)
            return capsa_err_set(err, EINVAL,
                                 "'%.64s' is not an RFC 3339 time (e.g. 2026-11-29T15:04:05Z)", s);
        return 0;
    }
    errno = 0;
    v = strtoull(s, &end, 10);
    if (!isdigit((unsigned char)s[0]) || errno || end == s)
        goto bad;
    for (size_t i = 0; i < ARRAY_SIZE(units); i++)
        if (!strcmp(end, units[i].suffix)) {
            if (v > (unsigned long long)(INT64_MAX / units[i].ms) ||
                (int64_t)v * units[i].ms > now_ms)
                return capsa_err_set(err, ERANGE, "'%.64s' reaches before 1970", s);
            *out_ms = now_ms - (int64_t)v * units[i].ms;
            return 0;
        }
bad:
    return capsa_err_set(err, EINVAL,
                         "'%.64s' is neither an RFC 3339 time nor a duration ago (e.g. 30s, 5m, "
                         "2h, 1d)",
                         s);
}

int capsa_execlog_decode(const char *line, size_t len, struct capsa_execlog_entry *e)
{
    json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
    const char *t, *s, *d, *enc;
    json_t *id;
    size_t dl;
    int rc = -1;

    memset(e, 0, sizeof(*e));
    if (!json_is_object(j))
        goto out;
    t = json_string_value(json_object_get(j, "t"));
    s = json_string_value(json_object_get(j, "s"));
    d = json_string_value(json_object_get(j, "d"));
    enc = json_string_value(json_object_get(j, "e"));
    id = json_object_get(j, "id");
    if (!t || !s || !d || parse_rfc3339(t, &e->t_ms) < 0)
        goto out;
    e->src = CAPSA_LOG_SRC_SYSTEM;
    for (size_t i = 0; i < ARRAY_SIZE(src_names); i++)
        if (!strcmp(s, src_names[i]))
            e->src = (enum capsa_log_source)i;
    if (json_is_integer(id) && json_integer_value(id) > 0)
        e->session = (uint64_t)json_integer_value(id);
    dl = json_string_length(json_object_get(j, "d"));
    e->data = malloc(dl + 1);
    if (!e->data)
        goto out;
    if (enc && !strcmp(enc, "base64")) {
        if (b64_decode(d, dl, e->data, &e->len) < 0) {
            free(e->data);
            e->data = NULL;
            goto out;
        }
    } else {
        memcpy(e->data, d, dl);
        e->len = dl;
    }
    rc = 0;
out:
    json_decref(j);
    return rc;
}

void capsa_execlog_entry_clear(struct capsa_execlog_entry *e)
{
    free(e->data);
    e->data = NULL;
    e->len = 0;
}

/* ---- writer ------------------------------------------------------------------------------ */

void capsa_execlog_open(struct capsa_execlog *w, const char *path)
{
    const char *env = getenv(CAPSA_EXECLOG_ROTATE_ENV);
    struct stat st;

    snprintf(w->path, sizeof(w->path), "%s", path);
    w->rotate_bytes = CAPSA_EXECLOG_ROTATE_DEF;
    if (env && *env) {
        char *end;
        unsigned long long v = strtoull(env, &end, 10);
        if (!*end && v >= 1024)
            w->rotate_bytes = v;
    }
    w->fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    w->size = w->fd >= 0 && fstat(w->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
}

void capsa_execlog_close(struct capsa_execlog *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
}

static void rotate(struct capsa_execlog *w)
{
    char from[4300], to[4300];

    for (int i = CAPSA_EXECLOG_KEEP; i >= 1; i--) {
        if (i == 1)
            snprintf(from, sizeof(from), "%s", w->path);
        else
            snprintf(from, sizeof(from), "%s.%d", w->path, i - 1);
        snprintf(to, sizeof(to), "%s.%d", w->path, i);
        rename(from, to);
    }
    capsa_execlog_close(w);
    w->fd = open(w->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    w->size = 0;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        p += r;
        n -= (size_t)r;
    }
}

void capsa_execlog_write(struct capsa_execlog *w, enum capsa_log_source src, uint64_t session,
                         const void *data, size_t len)
{
    const uint8_t *p = data;
    int64_t now = capsa_execlog_now_ms();

    if (w->fd < 0)
        return;
    do {
        size_t n = len > CAPSA_EXECLOG_CHUNK_MAX ? CAPSA_EXECLOG_CHUNK_MAX : len;
        _cleanup_free_ char *line = NULL;
        size_t ll;
        /* do not cut a UTF-8 sequence in two */
        if (n < len)
            for (size_t k = 0; k < 3 && n > 1 && (p[n] & 0xc0) == 0x80; k++)
                n--;
        line = capsa_execlog_encode(now, src, session, p, n);
        if (!line)
            return;
        ll = strlen(line);
        if (w->size > 0 && w->size + ll > w->rotate_bytes)
            rotate(w);
        if (w->fd < 0)
            return;
        write_all(w->fd, line, ll);
        w->size += ll;
        p += n;
        len -= n;
    } while (len > 0);
}

void capsa_execlog_append_line(const char *path, enum capsa_log_source src, const char *text)
{
    _cleanup_close_ int fd =
        open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0600);
    _cleanup_free_ char *line = NULL;
    size_t n = strlen(text);

    if (fd < 0)
        return;
    line = capsa_execlog_encode(capsa_execlog_now_ms(), src, 0, text,
                                n > CAPSA_EXECLOG_CHUNK_MAX ? CAPSA_EXECLOG_CHUNK_MAX : n);
    if (line)
        write_all(fd, line, strlen(line));
}

void capsa_execlog_feed(struct capsa_execlog *w, struct capsa_execlog_buf *lb,
                        enum capsa_log_source src, uint64_t session, const uint8_t *p, size_t len,
                        uint64_t now_us)
{
    while (len > 0) {
        const uint8_t *nl = memchr(p, '\n', len);
        size_t take = nl ? (size_t)(nl - p) + 1 : len;
        size_t room = sizeof(lb->b) - lb->n;
        if (take > room)
            take = room;
        if (lb->n == 0 && nl && take == (size_t)(nl - p) + 1) {
            capsa_execlog_write(w, src, session, p, take); /* a whole line: no copy */
        } else {
            memcpy(lb->b + lb->n, p, take);
            lb->n += take;
            if (!lb->since_us)
                lb->since_us = now_us ? now_us : 1;
            if (lb->b[lb->n - 1] == '\n' || lb->n == sizeof(lb->b))
                capsa_execlog_flush(w, lb, src, session);
        }
        p += take;
        len -= take;
    }
}

void capsa_execlog_flush(struct capsa_execlog *w, struct capsa_execlog_buf *lb,
                         enum capsa_log_source src, uint64_t session)
{
    if (lb->n)
        capsa_execlog_write(w, src, session, lb->b, lb->n);
    lb->n = 0;
    lb->since_us = 0;
}
