/* qmp.c - minimal QMP client: greeting, capabilities, commands, events skipped. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "vm/qmp.h"

#define QMP_MAX_LINE (1u << 20)

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int capsa_unix_addr(const char *path, struct sockaddr_un *sa, socklen_t *salen, int *dirfd_out,
                    capsa_err *err)
{
    size_t n = strlen(path);

    *dirfd_out = -1;
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (n < sizeof(sa->sun_path)) {
        memcpy(sa->sun_path, path, n + 1);
    } else {
        /* Too long for sun_path: go through an O_PATH fd on the directory. */
        _cleanup_free_ char *dir = strdup(path);
        char *slash;
        int dfd, m;
        if (!dir)
            return capsa_err_set(err, ENOMEM, "out of memory");
        slash = strrchr(dir, '/');
        if (!slash || slash == dir)
            return capsa_err_set(err, ENAMETOOLONG, "socket path %s too long", path);
        *slash = '\0';
        dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            return capsa_err_set(err, errno, "open %s: %s", dir, strerror(errno));
        m = snprintf(sa->sun_path, sizeof(sa->sun_path), "/proc/self/fd/%d/%s", dfd, slash + 1);
        if (m < 0 || (size_t)m >= sizeof(sa->sun_path)) {
            close(dfd);
            return capsa_err_set(err, ENAMETOOLONG, "socket name %s too long", slash + 1);
        }
        *dirfd_out = dfd;
    }
    *salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(sa->sun_path) + 1);
    return 0;
}

/* Read one JSON line (blocking with deadline). Returns a new reference. */
static int qmp_read_msg(struct capsa_qmp *q, int pidfd, int64_t deadline, json_t **out,
                        capsa_err *err)
{
    for (;;) {
        char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
        if (nl) {
            size_t linelen = (size_t)(nl - q->buf);
            json_error_t jerr;
            json_t *v = json_loadb(q->buf, linelen, 0, &jerr);
            memmove(q->buf, nl + 1, q->len - linelen - 1);
            q->len -= linelen + 1;
            if (!v || !json_is_object(v)) {
                json_decref(v);
                return capsa_err_set(err, EPROTO, "qmp: malformed message: %s", jerr.text);
            }
            *out = v;
            return 0;
        }
        if (q->len >= QMP_MAX_LINE)
            return capsa_err_set(err, EPROTO, "qmp: message longer than %u bytes", QMP_MAX_LINE);
        if (q->cap - q->len < 4096) {
            size_t ncap = q->cap ? q->cap * 2 : 8192;
            char *nb = realloc(q->buf, ncap);
            if (!nb)
                return capsa_err_set(err, ENOMEM, "qmp: out of memory");
            q->buf = nb;
            q->cap = ncap;
        }
        struct pollfd pfd[2] = {{.fd = q->fd, .events = POLLIN}, {.fd = pidfd, .events = POLLIN}};
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return capsa_err_set(err, ETIMEDOUT, "qmp: no answer from QEMU in time");
        int r = poll(pfd, pidfd >= 0 ? 2 : 1, (int)left);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return capsa_err_set(err, errno, "qmp: poll: %s", strerror(errno));
        }
        if (r == 0)
            continue;
        if (pfd[0].revents) {
            ssize_t n = read(q->fd, q->buf + q->len, q->cap - q->len);
            if (n < 0) {
                if (errno == EINTR || errno == EAGAIN)
                    continue;
                return capsa_err_set(err, errno, "qmp: read: %s", strerror(errno));
            }
            if (n == 0)
                return capsa_err_set(err, ECONNRESET, "qmp: QEMU closed the monitor");
            q->len += (size_t)n;
            continue;
        }
        if (pidfd >= 0 && pfd[1].revents)
            return capsa_err_set(err, ESRCH, "qmp: QEMU exited");
    }
}

static int write_all(int fd, const char *p, size_t n, capsa_err *err)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return capsa_err_set(err, errno, "qmp: write: %s", strerror(errno));
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int qmp_exec_deadline(struct capsa_qmp *q, int pidfd, const char *command, json_t *args,
                             json_t **ret, int64_t deadline, capsa_err *err)
{
    unsigned long id = ++q->next_id;
    json_t *req = json_pack("{s:s, s:I}", "execute", command, "id", (json_int_t)id);
    char *s;
    int rc;

    if (!req)
        return capsa_err_set(err, ENOMEM, "qmp: out of memory");
    if (args)
        json_object_set(req, "arguments", args);
    s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    if (!s)
        return capsa_err_set(err, ENOMEM, "qmp: out of memory");
    rc = write_all(q->fd, s, strlen(s), err);
    if (rc == 0)
        rc = write_all(q->fd, "\n", 1, err);
    free(s);
    if (rc < 0)
        return capsa_err_prefix(err, "qmp %s", command);

    for (;;) {
        json_t *msg = NULL, *v;
        if (qmp_read_msg(q, pidfd, deadline, &msg, err) < 0)
            return capsa_err_prefix(err, "qmp %s", command);
        if (json_object_get(msg, "event")) {
            json_decref(msg);
            continue;
        }
        v = json_object_get(msg, "id");
        if (!json_is_integer(v) || (unsigned long)json_integer_value(v) != id) {
            json_decref(msg);
            continue;
        }
        if ((v = json_object_get(msg, "return"))) {
            if (ret)
                *ret = json_incref(v);
            json_decref(msg);
            return 0;
        }
        v = json_object_get(msg, "error");
        rc = capsa_err_set(err, EIO, "qmp %s: %s: %s", command,
                           json_string_value(json_object_get(v, "class")) ?: "error",
                           json_string_value(json_object_get(v, "desc")) ?: "(no description)");
        json_decref(msg);
        return rc;
    }
}

int capsa_qmp_connect(struct capsa_qmp *q, const char *path, int pidfd, int timeout_ms,
                      capsa_err *err)
{
    int64_t deadline = now_ms() + timeout_ms;
    struct sockaddr_un sa;
    socklen_t salen;
    _cleanup_close_ int dfd = -1;
    json_t *greeting = NULL;

    memset(q, 0, sizeof(*q));
    q->fd = -1;
    if (capsa_unix_addr(path, &sa, &salen, &dfd, err) < 0)
        return capsa_err_prefix(err, "qmp");
    q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (q->fd < 0)
        return capsa_err_set(err, errno, "qmp: socket: %s", strerror(errno));
    while (connect(q->fd, (struct sockaddr *)&sa, salen) < 0) {
        if (errno == EINTR)
            continue;
        int e = errno;
        capsa_qmp_close(q);
        return capsa_err_set(err, e, "qmp: connect %s: %s", path, strerror(e));
    }
    if (qmp_read_msg(q, pidfd, deadline, &greeting, err) < 0) {
        capsa_qmp_close(q);
        return capsa_err_prefix(err, "qmp greeting");
    }
    if (!json_object_get(greeting, "QMP")) {
        json_decref(greeting);
        capsa_qmp_close(q);
        return capsa_err_set(err, EPROTO, "qmp: %s did not greet with QMP", path);
    }
    json_decref(greeting);
    if (qmp_exec_deadline(q, pidfd, "qmp_capabilities", NULL, NULL, deadline, err) < 0) {
        capsa_qmp_close(q);
        return -1;
    }
    return 0;
}

int capsa_qmp_execute(struct capsa_qmp *q, const char *command, json_t *args, json_t **ret,
                      int timeout_ms, capsa_err *err)
{
    if (q->fd < 0)
        return capsa_err_set(err, ENOTCONN, "qmp %s: not connected", command);
    return qmp_exec_deadline(q, -1, command, args, ret, now_ms() + timeout_ms, err);
}

int capsa_qmp_query_status(struct capsa_qmp *q, char *status, size_t len, int timeout_ms,
                           capsa_err *err)
{
    json_t *ret = NULL;
    const char *s;

    if (capsa_qmp_execute(q, "query-status", NULL, &ret, timeout_ms, err) < 0)
        return -1;
    s = json_string_value(json_object_get(ret, "status"));
    if (!s) {
        json_decref(ret);
        return capsa_err_set(err, EPROTO, "qmp query-status: reply has no status");
    }
    snprintf(status, len, "%s", s);
    json_decref(ret);
    return 0;
}

int capsa_qmp_quit(struct capsa_qmp *q, int timeout_ms, capsa_err *err)
{
    capsa_err e = {0};

    if (capsa_qmp_execute(q, "quit", NULL, NULL, timeout_ms, &e) < 0) {
        /* QEMU may exit before its reply reaches us. */
        if (e.code == ECONNRESET || e.code == EPIPE)
            return 0;
        if (err)
            *err = e;
        return -1;
    }
    return 0;
}

void capsa_qmp_close(struct capsa_qmp *q)
{
    if (q->fd >= 0)
        close(q->fd);
    q->fd = -1;
    free(q->buf);
    q->buf = NULL;
    q->len = q->cap = 0;
}
