/* exec.c - run one exec session over the agent channel (see exec.h). */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "common/err.h"
#include "common/log.h"
#include "lib/exec.h"

/* Stop reading local stdin while this much is queued for the guest. */
#define STDIN_HIGH_WATER (1u << 20)
/* After a timeout kill, how long to wait for the guest to report the exit. */
#define KILL_GRACE_MS 5000

json_t *capsa_exec_start_json(const struct capsa_exec_opts *o)
{
    json_t *j = json_object(), *argv = json_array(), *env = json_array();

    for (char *const *a = o->argv; a && *a; a++)
        json_array_append_new(argv, json_string(*a));
    for (char *const *e = o->env; e && *e; e++)
        json_array_append_new(env, json_string(*e));
    json_object_set_new(j, "argv", argv);
    json_object_set_new(j, "env", env);
    if (o->cwd)
        json_object_set_new(j, "cwd", json_string(o->cwd));
    if (o->user)
        json_object_set_new(j, "user", json_string(o->user));
    if (o->rlimits)
        json_object_set(j, "rlimits", o->rlimits);
    json_object_set_new(j, "tty", json_boolean(o->tty));
    if (o->tty) {
        json_object_set_new(j, "rows", json_integer(o->rows > 0 ? o->rows : 24));
        json_object_set_new(j, "cols", json_integer(o->cols > 0 ? o->cols : 80));
    }
    json_object_set_new(j, "stdin", json_boolean(o->stdin_fd >= 0));
    return j;
}

static int write_all_fd(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                struct pollfd pf = {.fd = fd, .events = POLLOUT};
                poll(&pf, 1, -1);
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int json_int_field(json_t *j, const char *k, int dflt)
{
    json_t *v = json_object_get(j, k);
    if (!json_is_integer(v))
        return dflt;
    json_int_t i = json_integer_value(v);
    if (i < -1000000 || i > 1000000)
        return dflt;
    return (int)i;
}

static void copy_str_field(json_t *j, const char *k, char *out, size_t len)
{
    const char *s = json_string_value(json_object_get(j, k));
    snprintf(out, len, "%s", s ? s : "");
}

int capsa_exec_exit_status(const struct capsa_exec_result *res)
{
    switch (res->end) {
    case CAPSA_EXEC_EXITED:
        return res->code;
    case CAPSA_EXEC_TIMEOUT:
        return 124;
    case CAPSA_EXEC_DETACHED:
        return 0;
    case CAPSA_EXEC_FAILED:
        if (!strcmp(res->fail_kind, "not_found"))
            return 127;
        if (!strcmp(res->fail_kind, "permission_denied"))
            return 126;
        return 1;
    }
    return 1;
}

static int send_resize(struct capsa_agentc *c, uint32_t sid, int fd, capsa_err *err)
{
    struct winsize ws;
    char buf[64];

    if (fd < 0 || ioctl(fd, TIOCGWINSZ, &ws) < 0 || ws.ws_row == 0)
        return 0;
    snprintf(buf, sizeof(buf), "{\"rows\":%u,\"cols\":%u}", ws.ws_row, ws.ws_col);
    return capsa_agentc_send(c, sid, CAPSA_MSG_RESIZE, 0, buf, strlen(buf), err);
}

static int send_signal(struct capsa_agentc *c, uint32_t sid, int sig, capsa_err *err)
{
    char buf[32];
    snprintf(buf, sizeof(buf), "{\"signal\":%d}", sig);
    return capsa_agentc_send(c, sid, CAPSA_MSG_SIGNAL, 0, buf, strlen(buf), err);
}

/* Handle one frame of our session; returns 1 when the session ended. */
static int on_frame(struct capsa_agentc *c, const struct capsa_exec_opts *o,
                    const struct capsa_frame_hdr *h, const uint8_t *p,
                    struct capsa_exec_result *res, bool timed_out, capsa_err *err)
{
    json_t *j;

    switch (h->type) {
    case CAPSA_MSG_STDOUT:
    case CAPSA_MSG_STDERR: {
        int fd = h->type == CAPSA_MSG_STDOUT ? o->stdout_fd : o->stderr_fd;
        if (res->output_bytes == 0 && h->len)
            log_debug("exec: first output");
        res->output_bytes += h->len;
        if (fd >= 0 && write_all_fd(fd, p, h->len) < 0 && errno != EPIPE)
            return capsa_err_set(err, errno, "writing command output: %s", strerror(errno));
        return 0;
    }
    case CAPSA_MSG_EXEC_STARTED:
        j = capsa_agentc_parse_json(p, h->len, NULL);
        res->pid = j ? json_int_field(j, "pid", 0) : 0;
        json_decref(j);
        log_debug("exec: started as guest pid %d", res->pid);
        capsa_agentc_log_marks(p, h->len);
        return 0;
    case CAPSA_MSG_EXITED:
        j = capsa_agentc_parse_json(p, h->len, err);
        if (!j)
            return capsa_err_prefix(err, "exec.exited");
        res->signal = json_int_field(j, "signal", 0);
        res->code = json_int_field(j, "code", -1);
        if (res->code < 0 || res->code > 255)
            res->code = res->signal > 0 && res->signal < 128 ? 128 + res->signal : 255;
        res->end = timed_out ? CAPSA_EXEC_TIMEOUT : CAPSA_EXEC_EXITED;
        json_decref(j);
        log_debug("exec: exited (code %d, signal %d)", res->code, res->signal);
        capsa_agentc_log_marks(p, h->len);
        return 1;
    case CAPSA_MSG_EXEC_FAILED:
        j = capsa_agentc_parse_json(p, h->len, err);
        if (!j)
            return capsa_err_prefix(err, "exec.failed");
        res->end = CAPSA_EXEC_FAILED;
        copy_str_field(j, "kind", res->fail_kind, sizeof(res->fail_kind));
        copy_str_field(j, "message", res->message, sizeof(res->message));
        json_decref(j);
        return 1;
    case CAPSA_MSG_ERROR:
        j = capsa_agentc_parse_json(p, h->len, NULL);
        capsa_err_set(err, EPROTO, "exec: guest reported %s: %.400s",
                      j && json_string_value(json_object_get(j, "code"))
                          ? json_string_value(json_object_get(j, "code"))
                          : "an error",
                      j && json_string_value(json_object_get(j, "message"))
                          ? json_string_value(json_object_get(j, "message"))
                          : "");
        json_decref(j);
        return -1;
    default:
        log_debug("exec: ignoring %s frame", capsa_frame_type_name(h->type));
        return 0;
    }
}

int capsa_exec_run(struct capsa_agentc *c, const struct capsa_exec_opts *o,
                   struct capsa_exec_result *res, capsa_err *err)
{
    uint32_t sid = capsa_agentc_new_stream(c);
    bool stdin_open = o->stdin_fd >= 0, timed_out = false;
    uint64_t deadline = o->timeout_ms ? capsa_now_us() + o->timeout_ms * 1000u : 0;
    json_t *start;
    int rc;

    memset(res, 0, sizeof(*res));
    if (!o->argv || !o->argv[0])
        return capsa_err_set(err, EINVAL, "exec: the command is empty");
    start = capsa_exec_start_json(o);
    rc = capsa_agentc_send_json(c, sid, CAPSA_MSG_EXEC_START, 0, start, err);
    json_decref(start);
    if (rc < 0)
        return -1;

    for (;;) {
        struct capsa_frame_hdr h;
        const uint8_t *p;
        struct pollfd pf[3];
        int n = 0, ifd = -1, isig = -1, wait = -1;

        while ((rc = capsa_agentc_next(c, &h, &p, err)) > 0) {
            if (h.stream != sid)
                continue;
            rc = on_frame(c, o, &h, p, res, timed_out, err);
            if (rc != 0)
                return rc < 0 ? -1 : 0;
        }
        if (rc < 0)
            return -1;
        if (c->eof)
            return capsa_err_set(err, EPIPE,
                                 "exec: the guest closed the channel before the "
                                 "command finished (did the VM die?)");
        if (capsa_agentc_flush(c, false, err) < 0)
            return -1;

        pf[n++] = (struct pollfd){.fd = c->fd,
                                  .events = POLLIN | (capsa_agentc_pending(c) ? POLLOUT : 0)};
        if (stdin_open && capsa_agentc_pending(c) < STDIN_HIGH_WATER) {
            ifd = n;
            pf[n++] = (struct pollfd){.fd = o->stdin_fd, .events = POLLIN};
        }
        if (o->signal_fd >= 0) {
            isig = n;
            pf[n++] = (struct pollfd){.fd = o->signal_fd, .events = POLLIN};
        }
        if (deadline) {
            uint64_t now = capsa_now_us();
            if (now >= deadline) {
                if (!timed_out) {
                    timed_out = true;
                    log_info("exec: timeout after %llu ms, killing the command",
                             (unsigned long long)o->timeout_ms);
                    if (send_signal(c, sid, SIGKILL, err) < 0)
                        return -1;
                    deadline = now + KILL_GRACE_MS * 1000u;
                    continue;
                }
                res->end = CAPSA_EXEC_TIMEOUT;
                res->code = 137;
                return 0;
            }
            wait = (int)((deadline - now + 999) / 1000);
        }
        if (poll(pf, (nfds_t)n, wait) < 0) {
            if (errno == EINTR)
                continue;
            return capsa_err_set(err, errno, "exec: poll: %s", strerror(errno));
        }
        if (pf[0].revents & (POLLIN | POLLHUP | POLLERR))
            if (capsa_agentc_read(c, err) < 0)
                return -1;
        if (ifd >= 0 && (pf[ifd].revents & (POLLIN | POLLHUP | POLLERR))) {
            uint8_t buf[65536];
            ssize_t r = read(o->stdin_fd, buf, sizeof(buf));
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r > 0 && o->tty && o->detach_key >= 0 && memchr(buf, o->detach_key, (size_t)r)) {
                res->end = CAPSA_EXEC_DETACHED;
                return 0;
            }
            if (r <= 0) {
                stdin_open = false;
                if (capsa_agentc_send(c, sid, CAPSA_MSG_STDIN, CAPSA_FRAME_EOF, NULL, 0, err) < 0)
                    return -1;
            } else if (capsa_agentc_send(c, sid, CAPSA_MSG_STDIN, 0, buf, (size_t)r, err) < 0) {
                return -1;
            }
        }
        if (isig >= 0 && (pf[isig].revents & POLLIN)) {
            struct signalfd_siginfo si;
            if (read(o->signal_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
                if (si.ssi_signo == SIGWINCH) {
                    if (o->tty && send_resize(c, sid, o->winsize_fd, err) < 0)
                        return -1;
                } else if (send_signal(c, sid, (int)si.ssi_signo, err) < 0) {
                    return -1;
                }
            }
        }
    }
}
