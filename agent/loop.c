/* loop.c - the agent's event loop: channel I/O, frame dispatch, reaping, back-pressure. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"
#include "common/cleanup.h"
#include "common/err.h"

bool agent_debug;

void agent_log(const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(buf) - 2)
        n = sizeof(buf) - 2;
    buf[n++] = '\n';
    /* one write per line so concurrent console users do not interleave */
    dprintf(STDERR_FILENO, "capsa-agent: %.*s", n, buf);
}

/* ---- byte queue ---- */

int agent_buf_append(struct agent_buf *b, const void *p, size_t n)
{
    if (b->off > 0 && (b->off == b->len || b->len + n > b->cap)) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *nd = realloc(b->data, cap);
        if (!nd)
            return -1;
        b->data = nd;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

size_t agent_buf_pending(const struct agent_buf *b)
{
    return b->len - b->off;
}

void agent_buf_consume(struct agent_buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) {
        b->off = b->len = 0;
        /* give back big buffers once drained */
        if (b->cap > (4u << 20)) {
            free(b->data);
            b->data = NULL;
            b->cap = 0;
        }
    }
}

void agent_buf_free(struct agent_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

/* ---- sending ---- */

int agent_send(struct agent *a, uint32_t stream, uint16_t type, uint16_t flags, const void *p,
               size_t n)
{
    struct capsa_frame_hdr h = {.len = (uint32_t)n, .stream = stream, .type = type, .flags = flags};
    uint8_t hdr[CAPSA_FRAME_HDR_SIZE];

    if (n > CAPSA_FRAME_MAX_PAYLOAD) {
        agent_log("dropping an oversized %s frame (%zu bytes)", capsa_frame_type_name(type), n);
        return -1;
    }
    capsa_frame_hdr_encode(hdr, &h);
    if (agent_buf_append(&a->out, hdr, sizeof(hdr)) < 0 || agent_buf_append(&a->out, p, n) < 0) {
        agent_log("out of memory queueing a %s frame", capsa_frame_type_name(type));
        return -1;
    }
    return 0;
}

int agent_send_json(struct agent *a, uint32_t stream, uint16_t type, json_t *j)
{
    char *s;
    int rc;

    if (!j)
        return -1;
    s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!s)
        return -1;
    rc = agent_send(a, stream, type, 0, s, strlen(s));
    free(s);
    return rc;
}

void agent_send_error(struct agent *a, uint32_t stream, const char *code, int errnum,
                      const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    json_t *j;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    agent_utf8_fix(msg);
    j = json_pack("{s:s, s:s}", "code", code, "message", msg);
    if (j && errnum)
        json_object_set_new(j, "errno", json_integer(errnum));
    agent_send_json(a, stream, CAPSA_MSG_ERROR, j);
}

/* ---- streams ---- */

struct agent_stream *agent_stream_find(struct agent *a, uint32_t id)
{
    for (struct agent_stream *s = a->streams; s; s = s->next)
        if (s->id == id && !s->dead)
            return s;
    return NULL;
}

struct agent_stream *agent_stream_new(struct agent *a, uint32_t id, enum agent_stream_kind kind)
{
    struct agent_stream *s;

    if (a->n_streams >= AGENT_MAX_STREAMS)
        return NULL;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->id = id;
    s->kind = kind;
    s->out_fd = s->err_fd = s->in_fd = s->fd = -1;
    s->next = a->streams;
    a->streams = s;
    a->n_streams++;
    return s;
}

static void stream_free(struct agent_stream *s)
{
    if (s->kind == AGENT_STREAM_EXEC)
        agent_exec_close(s);
    else
        agent_fs_close(s);
    free(s);
}

static void sweep_streams(struct agent *a)
{
    struct agent_stream **pp = &a->streams;

    while (*pp) {
        struct agent_stream *s = *pp;
        if (s->dead) {
            *pp = s->next;
            a->n_streams--;
            stream_free(s);
        } else {
            pp = &s->next;
        }
    }
}

/* ---- dispatch ---- */

static struct {
    const char *name;
    long long us;
} marks[16];
static size_t n_marks;

void agent_mark(const char *name)
{
    struct timespec now;

    if (n_marks == ARRAY_SIZE(marks))
        return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    marks[n_marks].name = name;
    marks[n_marks++].us = now.tv_sec * 1000000LL + now.tv_nsec / 1000;
}

json_t *agent_marks_json(void)
{
    json_t *j = json_object();

    for (size_t i = 0; j && i < n_marks; i++)
        json_object_set_new(j, marks[i].name, json_integer((json_int_t)marks[i].us));
    return j;
}

static void send_ready(struct agent *a)
{
    struct timespec now;
    long long ms;

    clock_gettime(CLOCK_MONOTONIC, &now);
    ms = (now.tv_sec - a->t0.tv_sec) * 1000LL + (now.tv_nsec - a->t0.tv_nsec) / 1000000;
    agent_mark("ready");
    agent_send_json(a, 0, CAPSA_MSG_READY,
                    json_pack("{s:I, s:o*}", "boot_ms", (json_int_t)ms, "marks_us",
                              a->pid1 ? agent_marks_json() : NULL));
}

static void handle_boot(struct agent *a, const uint8_t *p, size_t n)
{
    struct agent_boot b;
    capsa_err err = {0};

    if (a->state != AGENT_WAIT_BOOT) {
        agent_send_error(a, 0, "bad_frame", 0, "boot: the agent has already booted");
        return;
    }
    agent_mark("boot_msg");
    if (agent_parse_boot(p, n, &b, &err) < 0) {
        a->state = AGENT_BOOT_FAILED;
        agent_send_error(a, 0, "boot_failed", 0, "%s", err.msg);
        agent_log("boot failed: %s", err.msg);
        return;
    }
    if (agent_boot_apply(a, &b, &err) < 0) {
        a->state = AGENT_BOOT_FAILED;
        agent_boot_free(&b);
        agent_send_error(a, 0, "boot_failed", err.code, "%s", err.msg);
        agent_log("boot failed: %s", err.msg);
        return;
    }
    a->boot = b;
    a->state = AGENT_READY;
    send_ready(a);
}

static void handle_shutdown(struct agent *a)
{
    if (a->pid1)
        agent_poweroff(a);
    agent_exec_kill_all(a, SIGKILL);
    a->quit = true;
}

static void handle_control(struct agent *a, const struct capsa_frame_hdr *h, const uint8_t *p)
{
    capsa_err err = {0};

    switch (h->type) {
    case CAPSA_MSG_BOOT:
        handle_boot(a, p, h->len);
        return;
    case CAPSA_MSG_PING:
        if (agent_parse_object(p, h->len, &err) < 0) {
            agent_send_error(a, 0, "bad_frame", 0, "ping: %s", err.msg);
            return;
        }
        agent_send(a, 0, CAPSA_MSG_PONG, 0, "{}", 2);
        return;
    case CAPSA_MSG_SHUTDOWN:
        handle_shutdown(a);
        return;
    case CAPSA_MSG_ERROR:
        agent_log("host reported an error: %.*s", (int)(h->len > 400 ? 400 : h->len), p);
        return;
    default:
        agent_send_error(a, 0, "bad_frame", 0, "%s (type 0x%04x) is not valid on stream 0",
                         capsa_frame_type_name(h->type) ? capsa_frame_type_name(h->type)
                                                        : "unknown type",
                         h->type);
    }
}

static void handle_frame(struct agent *a, const struct capsa_frame_hdr *h, const uint8_t *p)
{
    struct agent_stream *s;
    bool eof = h->flags & CAPSA_FRAME_EOF;

    if (h->stream == 0) {
        handle_control(a, h, p);
        return;
    }
    if (h->type == CAPSA_MSG_EXEC_START || h->type == CAPSA_MSG_FS_REQUEST) {
        if (a->state != AGENT_READY) {
            agent_send_error(a, h->stream, "bad_frame", 0, "%s before a successful boot",
                             capsa_frame_type_name(h->type));
            return;
        }
        if (agent_stream_find(a, h->stream)) {
            agent_send_error(a, h->stream, "bad_frame", 0, "stream %u is already in use",
                             h->stream);
            return;
        }
        if (h->type == CAPSA_MSG_EXEC_START)
            agent_exec_start(a, h->stream, p, h->len);
        else
            agent_fs_request(a, h->stream, p, h->len);
        return;
    }
    s = agent_stream_find(a, h->stream);
    switch (h->type) {
    case CAPSA_MSG_STDIN:
    case CAPSA_MSG_SIGNAL:
    case CAPSA_MSG_RESIZE:
        if (!s || s->kind != AGENT_STREAM_EXEC)
            break;
        if (h->type == CAPSA_MSG_STDIN)
            agent_exec_stdin(a, s, p, h->len, eof);
        else if (h->type == CAPSA_MSG_SIGNAL)
            agent_exec_signal(a, s, p, h->len);
        else
            agent_exec_resize(a, s, p, h->len);
        return;
    case CAPSA_MSG_FS_DATA:
        if (!s || s->kind != AGENT_STREAM_FS_WRITE)
            break;
        agent_fs_data(a, s, p, h->len, eof);
        return;
    case CAPSA_MSG_ERROR:
        agent_log("host reported an error on stream %u: %.*s", h->stream,
                  (int)(h->len > 400 ? 400 : h->len), p);
        return;
    default: {
        const char *name = capsa_frame_type_name(h->type);
        agent_send_error(a, h->stream, "bad_frame", 0, "%s (type 0x%04x) is not a request %s",
                         name ? name : "unknown type", h->type, "the agent accepts");
        return;
    }
    }
    agent_send_error(a, h->stream, "bad_frame", 0, "%s on stream %u, which is not an open %s",
                     capsa_frame_type_name(h->type), h->stream,
                     h->type == CAPSA_MSG_FS_DATA ? "fs write" : "exec session");
}

/* ---- channel ---- */

static void chan_broken(struct agent *a, const char *why)
{
    agent_log("channel: %s", why);
    if (a->pid1) {
        /* a byte stream cannot resync, and PID 1 cannot exit: power off so the
         * host sees the VM end instead of a silent agent */
        agent_poweroff(a);
    }
    agent_exec_kill_all(a, SIGKILL);
    a->quit = true;
    a->exit_code = 1;
}

static void chan_read(struct agent *a)
{
    uint8_t buf[65536];
    struct capsa_frame_hdr h;
    const uint8_t *p;
    capsa_err err = {0};
    ssize_t r;
    int rc;

    r = read(a->chan_fd, buf, sizeof(buf));
    agent_dbg("channel read: %zd (%s)", r, r < 0 ? strerror(errno) : "ok");
    if (r < 0) {
        if (errno == EINTR || errno == EAGAIN)
            return;
        if (a->pid1) {
            a->chan_hup = true;
            return;
        }
        chan_broken(a, strerror(errno));
        return;
    }
    if (r == 0) {
        if (a->pid1) { /* virtio-serial: the host end is not connected */
            a->chan_hup = true;
            return;
        }
        a->quit = true; /* host-test mode: the host closed the channel */
        agent_exec_kill_all(a, SIGKILL);
        return;
    }
    if (capsa_frame_reader_feed(&a->reader, buf, (size_t)r, &err) < 0) {
        chan_broken(a, err.msg);
        return;
    }
    while (!a->quit && (rc = capsa_frame_reader_next(&a->reader, &h, &p, &err)) != 0) {
        if (rc < 0) {
            chan_broken(a, err.msg);
            return;
        }
        handle_frame(a, &h, p);
    }
}

static void chan_flush(struct agent *a)
{
    while (agent_buf_pending(&a->out) > 0) {
        ssize_t w = write(a->chan_fd, a->out.data + a->out.off, agent_buf_pending(&a->out));
        agent_dbg("channel write of %zu: %zd (%s)", agent_buf_pending(&a->out), w,
                  w < 0 ? strerror(errno) : "ok");
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            if (a->pid1 && errno == EPIPE) { /* host not connected yet */
                a->chan_hup = true;
                return;
            }
            chan_broken(a, strerror(errno));
            return;
        }
        agent_buf_consume(&a->out, (size_t)w);
    }
}

/* ---- reaping ---- */

static void reap(struct agent *a)
{
    struct signalfd_siginfo si;
    int status;
    pid_t pid;

    while (read(a->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        ;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (struct agent_stream *s = a->streams; s; s = s->next) {
            if (s->kind == AGENT_STREAM_EXEC && s->pid == pid && !s->reaped) {
                s->reaped = true;
                s->status = status;
                break;
            }
        }
    }
}

/* ---- loop ---- */

static size_t stdin_pending(struct agent *a)
{
    size_t n = 0;
    for (struct agent_stream *s = a->streams; s; s = s->next)
        if (s->kind == AGENT_STREAM_EXEC)
            n += agent_buf_pending(&s->in);
    return n;
}

int agent_run(struct agent *a)
{
    struct pollfd *pfds = NULL;
    struct agent_stream **owners = NULL;
    size_t cap = 0;

    while (!a->quit) {
        size_t n = 0, need = 2 + 3 * a->n_streams;
        bool room = agent_buf_pending(&a->out) < AGENT_OUT_HIGH, fs_work = false;
        /* debug: wake every second, which shows whether the guest's timer ticks */
        int timeout = agent_debug ? 1000 : -1, rc;

        if (need > cap) {
            struct pollfd *np = realloc(pfds, need * sizeof(*pfds));
            if (!np)
                break;
            pfds = np;
            struct agent_stream **no = realloc(owners, need * sizeof(*owners));
            if (!no)
                break;
            owners = no;
            cap = need;
        }
        pfds[n] = (struct pollfd){.fd = a->chan_fd, .events = 0};
        if (stdin_pending(a) < AGENT_STDIN_HIGH && agent_buf_pending(&a->out) < AGENT_OUT_MAX)
            pfds[n].events |= POLLIN;
        if (agent_buf_pending(&a->out))
            pfds[n].events |= POLLOUT;
        if (a->chan_hup) { /* do not spin on POLLHUP; retry shortly */
            pfds[n].fd = -1;
            timeout = 100;
        }
        owners[n++] = NULL;
        pfds[n] = (struct pollfd){.fd = a->sig_fd, .events = POLLIN};
        owners[n++] = NULL;
        for (struct agent_stream *s = a->streams; s; s = s->next) {
            if (s->dead)
                continue;
            if (s->kind == AGENT_STREAM_EXEC) {
                if (room && s->out_fd >= 0 && !s->pty_eof) {
                    pfds[n] = (struct pollfd){.fd = s->out_fd, .events = POLLIN};
                    owners[n++] = s;
                }
                if (room && s->err_fd >= 0) {
                    pfds[n] = (struct pollfd){.fd = s->err_fd, .events = POLLIN};
                    owners[n++] = s;
                }
                if (s->in_fd >= 0 && agent_buf_pending(&s->in)) {
                    pfds[n] = (struct pollfd){.fd = s->in_fd, .events = POLLOUT};
                    owners[n++] = s;
                }
            } else if (s->kind == AGENT_STREAM_FS_READ && room) {
                fs_work = true;
            }
        }
        if (fs_work)
            timeout = 0;

        agent_dbg("poll: %zu fds, timeout %d", n, timeout);
        rc = poll(pfds, n, timeout);
        agent_dbg("poll: %d, channel events 0x%x revents 0x%x", rc, pfds[0].events,
                  pfds[0].revents);
        if (rc < 0 && errno != EINTR) {
            agent_log("poll: %s", strerror(errno));
            break;
        }
        if (a->chan_hup) {
            /* probe again: reads return 0 and writes EPIPE while the host is away */
            a->chan_hup = false;
        }
        if (rc > 0) {
            for (size_t i = 2; i < n; i++) {
                struct agent_stream *s = owners[i];
                if (!pfds[i].revents || s->dead)
                    continue;
                if (pfds[i].events & POLLOUT)
                    agent_exec_pump_in(a, s);
                else
                    agent_exec_pump_out(a, s, pfds[i].fd);
            }
            if (pfds[1].revents & POLLIN)
                reap(a);
            if (pfds[0].revents & POLLOUT)
                chan_flush(a);
            if (pfds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                if ((pfds[0].revents & POLLIN) || !a->pid1)
                    chan_read(a);
                else
                    a->chan_hup = true;
            }
        }
        for (struct agent_stream *s = a->streams; s && !a->quit; s = s->next) {
            if (s->dead)
                continue;
            if (s->kind == AGENT_STREAM_EXEC)
                agent_exec_check_done(a, s);
            else if (s->kind == AGENT_STREAM_FS_READ && agent_buf_pending(&a->out) < AGENT_OUT_HIGH)
                agent_fs_pump_read(a, s);
        }
        sweep_streams(a);
        if (agent_buf_pending(&a->out) && !a->chan_hup)
            chan_flush(a);
    }
    /* host-test mode: flush what we can before leaving, but never hang on a
     * host that stopped reading */
    while (agent_buf_pending(&a->out) && a->exit_code == 0) {
        struct pollfd pf = {.fd = a->chan_fd, .events = POLLOUT};
        if (poll(&pf, 1, 2000) <= 0 || !(pf.revents & POLLOUT))
            break;
        chan_flush(a);
    }
    for (struct agent_stream *s = a->streams; s; s = s->next)
        s->dead = true;
    sweep_streams(a);
    free(pfds);
    free(owners);
    return 0;
}
