/* supervisor.c - the per-sandbox supervisor: boot, relay control-socket clients to the guest
 * agent, lifecycle timers, orderly stop and crash detection (see supervisor.h).
 *
 * Relay: each client connection is a framed channel (struct capsa_agentc). A client opens a
 * stream with exec.start or fs.request on an id of its choosing; the supervisor allocates a
 * fresh agent-side id, remembers (client, client id) <-> agent id, and rewrites the stream id
 * of every frame in both directions. A stream ends when the agent sends exec.exited,
 * exec.failed, fs.result or error on it. When a client goes away its exec sessions are killed
 * (exec.signal SIGKILL, which the agent sends to the whole process group) and its unfinished
 * fs writes are ended; their remaining frames are dropped. `ping` on stream 0 is relayed and
 * the pong goes back to the clients in the order they asked. Back-pressure: while any client
 * has more than CLIENT_HIGH_WATER bytes queued the agent is not read; while the agent has more
 * than AGENT_HIGH_WATER queued no client is read.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "lib/boot.h"
#include "lib/fsc.h"
#include "spec/spec.h"
#include "store/store.h"
#include "supervisor/execlog.h"
#include "supervisor/metrics.h"
#include "supervisor/sandbox.h"
#include "supervisor/supervisor.h"
#include "vm/qemu.h"

#define MAX_CLIENTS            128
#define MAX_STREAMS_PER_CLIENT 256
#define CLIENT_HIGH_WATER      (8u << 20)
#define AGENT_HIGH_WATER       (8u << 20)
#define LOG_PARTIAL_FLUSH_US   (250000ull)
#define CONSOLE_POLL_US        (1000000ull)
#define CONSOLE_READ_MAX       (256u << 10)
#define MEMINFO_MAX            (16u << 10)
#define AGENT_EOF_GRACE_US     (3000000ull)
#define MAX_ENV                1024

struct client {
    struct capsa_agentc ch;
    uint64_t serial;
    unsigned n_streams;
};

struct stream {
    uint32_t agent_id;
    uint32_t client_id;
    struct client *cl; /* NULL: its client is gone, or supervisor-owned (detached) */
    bool exec;
    bool detached;
    bool fs_write_open;
    uint64_t spawn_serial; /* detached: client waiting for the spawn result (0: none) */
    bool logged;           /* output captured in exec.log (primary session, detached) */
    bool tty;              /* PTY session: its output is the "output" source */
    bool meminfo;          /* supervisor-owned fs read of the guest's /proc/meminfo */
    struct logbufs *lb;    /* logged: pending partial lines */
};

struct logbufs {
    struct capsa_execlog_buf out, err;
};

struct sup {
    const char *name;
    struct capsa_store *store;
    struct capsa_store_sandbox row;
    struct capsa_sandbox_spec *spec;
    struct capsa_sandbox_paths paths;
    struct capsa_booted *b;
    int64_t run_id;
    int ready_fd, listen_fd, sig_fd;
    int watch_fd;              /* attached: read end of the parent-watch pipe (-1: detached) */
    bool parent_exited;        /* the stop was caused by EOF on watch_fd */
    struct capsa_execlog xlog; /* sandboxes/NAME/exec.log */
    bool primary_taken;        /* the first exec session of this lifetime is captured */
    /* guest console tail (system source) */
    uint64_t console_off, next_console_us;
    char con_line[1024];
    size_t con_n;
    /* metrics */
    char metrics_path[4300];
    uint64_t metrics_interval_us, next_metrics_us, prev_sample_us;
    struct capsa_proc_stats prev;
    bool meminfo_pending;
    uint64_t mem_total, mem_avail;
    char *mi_buf;
    size_t mi_len;
    struct client *clients[MAX_CLIENTS];
    size_t n_clients;
    struct stream *streams;
    size_t n_streams, cap_streams;
    uint64_t *pongq; /* client serials waiting for a pong, oldest first */
    size_t n_pong, cap_pong;
    uint64_t next_serial;
    uint64_t t_start_us, last_activity_us;
    uint64_t max_duration_us, idle_timeout_us;
    bool stopping, killed;
    enum capsa_run_reason stop_reason;
    uint64_t stop_deadline_us, stop_grace_ms;
    uint64_t agent_eof_us;
};

static struct sup *g_sup; /* for the log hook */

static void sys_line(struct sup *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- start report ------------------------------------------------------------------------ */

static void report(struct sup *s, bool ok, bool busy, const char *error)
{
    json_t *j;
    char *txt;

    if (s->ready_fd < 0)
        return;
    j = json_pack("{s:b}", "ok", ok);
    if (busy)
        json_object_set_new(j, "busy", json_true());
    if (error)
        json_object_set_new(j, "error", json_string(error));
    txt = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (txt) {
        size_t n = strlen(txt), off = 0;
        while (off < n) {
            ssize_t w = write(s->ready_fd, txt + off, n - off);
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break;
            off += (size_t)w;
        }
        if (write(s->ready_fd, "\n", 1) < 0) {
            /* the spawner went away; nothing to tell */
        }
        free(txt);
    }
    close(s->ready_fd);
    s->ready_fd = -1;
}

/* ---- store updates ----------------------------------------------------------------------- */

/* Finish the open run and move the row to `to`, in one transaction. */
static void record_end(struct sup *s, enum capsa_sandbox_status to, const char *last_error,
                       const struct capsa_store_run_end *end)
{
    capsa_err err = {0};

    if (capsa_store_tx_begin(s->store, &err) < 0)
        goto fail;
    if (s->run_id > 0 && capsa_store_run_finish(s->store, s->run_id, end, &err) < 0 &&
        err.code != EALREADY)
        goto fail_tx;
    if (capsa_store_sandbox_set_status(s->store, s->name, CAPSA_SB_ACTIVE, to, last_error, &err) <
        0)
        goto fail_tx;
    if (capsa_store_tx_commit(s->store, &err) < 0)
        goto fail;
    log_info("sandbox %s is now %s", s->name, capsa_sandbox_status_name(to));
    return;
fail_tx:
    capsa_store_tx_rollback(s->store);
fail:
    log_error("recording the end of sandbox %s: %s", s->name, err.msg);
}

static int fail_start(struct sup *s, const char *msg)
{
    struct capsa_store_run_end end = {.reason = CAPSA_RUN_FAILED, .detail = msg};

    log_error("start failed: %s", msg);
    if (s->xlog.fd >= 0)
        sys_line(s, "--- sandbox failed to start ---");
    record_end(s, CAPSA_SANDBOX_FAILED, msg, &end);
    report(s, false, false, msg);
    if (s->b) {
        capsa_boot_stop(s->b, 0, false, NULL);
        s->b = NULL;
    }
    return 1;
}

/* A stop (SIGTERM/SIGINT/SIGHUP) arrived while the VM was booting: the boot was abandoned and
 * QEMU killed; the sandbox ends stopped, as a stop after the boot would leave it. */
static int cancel_start(struct sup *s)
{
    struct capsa_store_run_end end = {.reason = CAPSA_RUN_SHUTDOWN_REQUESTED,
                                      .detail = "stopped while booting"};
    struct signalfd_siginfo si;
    struct pollfd w = {.fd = s->watch_fd, .events = POLLIN};

    while (read(s->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        ;
    if (s->watch_fd >= 0 && poll(&w, 1, 0) > 0) {
        end.detail = "the attached parent process exited while the sandbox was booting";
        close(s->watch_fd);
        s->watch_fd = -1;
    }
    log_info("stop requested while booting: boot abandoned (%s)", end.detail);
    if (s->xlog.fd >= 0)
        sys_line(s, "--- sandbox stopped while booting ---");
    record_end(s, CAPSA_SANDBOX_STOPPED, NULL, &end);
    report(s, false, false, "sandbox stopped while it was booting");
    return 0;
}

/* ---- streams ----------------------------------------------------------------------------- */

static struct stream *stream_by_agent(struct sup *s, uint32_t id)
{
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i].agent_id == id)
            return &s->streams[i];
    return NULL;
}

static struct stream *stream_by_client(struct sup *s, struct client *cl, uint32_t id)
{
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i].cl == cl && !s->streams[i].detached && s->streams[i].client_id == id)
            return &s->streams[i];
    return NULL;
}

static void stream_remove(struct sup *s, struct stream *st)
{
    size_t i = (size_t)(st - s->streams);

    if (st->lb) {
        capsa_execlog_flush(&s->xlog, &st->lb->out,
                            st->tty ? CAPSA_LOG_SRC_OUTPUT : CAPSA_LOG_SRC_STDOUT, st->agent_id);
        capsa_execlog_flush(&s->xlog, &st->lb->err, CAPSA_LOG_SRC_STDERR, st->agent_id);
        free(st->lb);
        st->lb = NULL;
    }

    if (st->cl)
        st->cl->n_streams--;
    s->streams[i] = s->streams[--s->n_streams];
}

static struct stream *stream_add(struct sup *s, struct client *cl, uint32_t client_id, bool exec)
{
    struct stream *st;
    uint32_t aid;

    if (s->n_streams == s->cap_streams) {
        size_t cap = s->cap_streams ? s->cap_streams * 2 : 16;
        struct stream *n = realloc(s->streams, cap * sizeof(*n));
        if (!n)
            return NULL;
        s->streams = n;
        s->cap_streams = cap;
    }
    do
        aid = capsa_agentc_new_stream(&s->b->conn);
    while (stream_by_agent(s, aid));
    st = &s->streams[s->n_streams++];
    *st = (struct stream){.agent_id = aid, .client_id = client_id, .cl = cl, .exec = exec};
    if (cl)
        cl->n_streams++;
    return st;
}

static size_t exec_count(const struct sup *s)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_streams; i++)
        n += s->streams[i].exec;
    return n;
}

/* ---- stopping ---------------------------------------------------------------------------- */

static void kill_qemu(struct sup *s)
{
    if (!s->killed && s->b && s->b->vm && !s->b->vm->reaped) {
        log_info("killing QEMU (pid %d)", (int)s->b->vm->pid);
        kill(s->b->vm->pid, SIGKILL);
        s->killed = true;
    }
    s->stop_deadline_us = 0;
}

static void begin_stop(struct sup *s, enum capsa_run_reason reason, bool force, uint64_t grace_ms)
{
    capsa_err err = {0};
    uint64_t deadline = capsa_now_us() + grace_ms * 1000u;

    if (!s->stopping) {
        /* recorded before it is acted on */
        if (capsa_store_sandbox_set_status(s->store, s->name, CAPSA_SB(RUNNING),
                                           CAPSA_SANDBOX_STOPPING, NULL, &err) < 0)
            log_error("recording stopping: %s", err.msg);
        s->stopping = true;
        s->stop_reason = reason;
        s->stop_grace_ms = force ? 0 : grace_ms;
        log_info("stopping (%s, %s)", capsa_run_reason_name(reason),
                 force ? "kill now" : "graceful");
        if (!force) {
            if (!s->b->conn.eof &&
                capsa_agentc_send(&s->b->conn, 0, CAPSA_MSG_SHUTDOWN, 0, "{}", 2, &err) < 0)
                log_warn("asking the guest to power off: %s", err.msg);
            s->stop_deadline_us = deadline;
        }
    } else if (!force && s->stop_deadline_us && deadline < s->stop_deadline_us) {
        s->stop_deadline_us = deadline;
    }
    if (force)
        kill_qemu(s);
}

/* ---- clients ----------------------------------------------------------------------------- */

static void send_to_client(struct client *cl, uint32_t stream, uint16_t type, uint16_t flags,
                           const void *p, size_t len)
{
    capsa_err err = {0};
    if (capsa_agentc_send(&cl->ch, stream, type, flags, p, len, &err) < 0)
        log_warn("client %llu: %s", (unsigned long long)cl->serial, err.msg);
}

static void send_json_to_client(struct client *cl, uint32_t stream, uint16_t type, json_t *j)
{
    capsa_err err = {0};
    if (j && capsa_agentc_send_json(&cl->ch, stream, type, 0, j, &err) < 0)
        log_warn("client %llu: %s", (unsigned long long)cl->serial, err.msg);
    json_decref(j);
}

static void client_error(struct client *cl, uint32_t stream, const char *code, const char *msg)
{
    send_json_to_client(cl, stream, CAPSA_MSG_ERROR,
                        json_pack("{s:s, s:s}", "code", code, "message", msg));
}

static void ctl_reply_error(struct client *cl, const char *msg)
{
    send_json_to_client(cl, 0, CAPSA_MSG_CTL_RESULT,
                        json_pack("{s:b, s:s}", "ok", 0, "error", msg));
}

static void client_drop(struct sup *s, size_t idx)
{
    struct client *cl = s->clients[idx];
    capsa_err err = {0};

    for (size_t i = 0; i < s->n_streams; i++) {
        struct stream *st = &s->streams[i];
        if (st->cl != cl || st->detached)
            continue;
        if (st->exec && !s->b->conn.eof) {
            log_info("client %llu left: killing its exec session (stream %u)",
                     (unsigned long long)cl->serial, st->agent_id);
            if (capsa_agentc_send(&s->b->conn, st->agent_id, CAPSA_MSG_SIGNAL, 0, "{\"signal\":9}",
                                  12, &err) < 0)
                log_warn("%s", err.msg);
        }
        if (st->fs_write_open && !s->b->conn.eof)
            capsa_agentc_send(&s->b->conn, st->agent_id, CAPSA_MSG_FS_DATA, CAPSA_FRAME_EOF, NULL,
                              0, NULL);
        st->fs_write_open = false;
        st->cl = NULL;
    }
    log_debug("client %llu disconnected", (unsigned long long)cl->serial);
    close(cl->ch.fd);
    capsa_agentc_destroy(&cl->ch);
    free(cl);
    s->clients[idx] = s->clients[--s->n_clients];
}

static void client_accept(struct sup *s)
{
    int fd = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    struct client *cl;
    capsa_err err = {0};

    if (fd < 0)
        return;
    if (s->n_clients >= MAX_CLIENTS) {
        log_warn("refusing a client: %d connections already", MAX_CLIENTS);
        close(fd);
        return;
    }
    cl = calloc(1, sizeof(*cl));
    if (!cl || capsa_agentc_init(&cl->ch, fd, &err) < 0) {
        free(cl);
        close(fd);
        return;
    }
    cl->serial = ++s->next_serial;
    s->clients[s->n_clients++] = cl;
    send_json_to_client(cl, 0, CAPSA_MSG_HELLO,
                        json_pack("{s:i, s:s, s:{s:s, s:I, s:i}}", "version", CAPSA_PROTO_VERSION,
                                  "agent_version", s->b->conn.agent_version, "supervisor", "name",
                                  s->name, "id", (json_int_t)s->row.id, "pid", (int)getpid()));
    log_debug("client %llu connected", (unsigned long long)cl->serial);
}

static json_t *info_json(struct sup *s)
{
    uint64_t now = capsa_now_us();

    return json_pack("{s:b, s:s, s:I, s:s, s:i, s:i, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "ok",
                     1, "name", s->name, "id", (json_int_t)s->row.id, "status",
                     s->stopping ? "stopping" : "running", "supervisor_pid", (int)getpid(),
                     "qemu_pid", (int)s->b->vm->pid, "accel", capsa_accel_name(s->b->vm->accel),
                     "boot_ms", (json_int_t)(s->b->boot_us / 1000), "uptime_ms",
                     (json_int_t)((now - s->t_start_us) / 1000), "idle_ms",
                     (json_int_t)((now - s->last_activity_us) / 1000), "idle_timeout_ms",
                     (json_int_t)(s->idle_timeout_us / 1000), "max_duration_ms",
                     (json_int_t)(s->max_duration_us / 1000), "clients", (json_int_t)s->n_clients,
                     "exec_sessions", (json_int_t)exec_count(s));
}

static int json_strv(json_t *a, json_t *out, bool need_eq, const char **bad)
{
    size_t i;
    json_t *v;

    if (!json_is_array(a))
        return -1;
    json_array_foreach(a, i, v)
    {
        const char *str = json_string_value(v);
        if (!str || (need_eq && !strchr(str, '='))) {
            *bad = str ? str : "(not a string)";
            return -1;
        }
        json_array_append(out, v);
    }
    return 0;
}

/* ctl spawn: a command owned by the supervisor, output appended to exec.log. */
static void ctl_spawn(struct sup *s, struct client *cl, json_t *req)
{
    json_t *start = json_object(), *argv = json_array(), *env = json_array();
    const char *bad = NULL, *cwd = json_string_value(json_object_get(req, "cwd")),
               *user = json_string_value(json_object_get(req, "user"));
    struct stream *st;
    capsa_err err = {0};

    json_object_set_new(start, "argv", argv);
    json_object_set_new(start, "env", env);
    if (json_strv(json_object_get(req, "argv"), argv, false, &bad) < 0 || !json_array_size(argv)) {
        ctl_reply_error(cl, "spawn: argv must be a non-empty array of strings");
        goto out;
    }
    if (json_object_get(req, "env") &&
        json_strv(json_object_get(req, "env"), env, true, &bad) < 0) {
        ctl_reply_error(cl, "spawn: env must be an array of \"KEY=VALUE\" strings");
        goto out;
    }
    if (cwd)
        json_object_set_new(start, "cwd", json_string(cwd));
    if (user)
        json_object_set_new(start, "user", json_string(user));
    json_object_set_new(start, "tty", json_false());
    json_object_set_new(start, "stdin", json_false());
    st = stream_add(s, NULL, 0, true);
    if (!st) {
        ctl_reply_error(cl, "spawn: out of memory");
        goto out;
    }
    st->detached = true;
    st->logged = true;
    if (capsa_agentc_send_json(&s->b->conn, st->agent_id, CAPSA_MSG_EXEC_START, 0, start, &err) <
        0) {
        stream_remove(s, st);
        ctl_reply_error(cl, err.msg);
        goto out;
    }
    log_info("spawned detached command %s (stream %u)", json_string_value(json_array_get(argv, 0)),
             st->agent_id);
    /* the reply waits for exec.started / exec.failed (on_agent_frame) */
    st->spawn_serial = cl->serial;
out:
    json_decref(start);
}

static void on_ctl(struct sup *s, struct client *cl, const uint8_t *p, size_t len)
{
    json_t *req = capsa_agentc_parse_json(p, len, NULL);
    const char *op = req ? json_string_value(json_object_get(req, "op")) : NULL;

    if (!op) {
        ctl_reply_error(cl, "ctl.request: expected a JSON object with a string \"op\"");
    } else if (!strcmp(op, "info")) {
        json_t *info = info_json(s);
        json_object_set_new(info, "attached", json_boolean(s->watch_fd >= 0));
        send_json_to_client(cl, 0, CAPSA_MSG_CTL_RESULT, info);
    } else if (!strcmp(op, "touch")) {
        s->last_activity_us = capsa_now_us();
        send_json_to_client(cl, 0, CAPSA_MSG_CTL_RESULT, json_pack("{s:b}", "ok", 1));
    } else if (!strcmp(op, "stop")) {
        json_t *t = json_object_get(req, "timeout_ms");
        json_int_t ms = json_is_integer(t) ? json_integer_value(t) : CAPSA_STOP_TIMEOUT_MS_DEFAULT;
        if (t && (!json_is_integer(t) || ms < 0 || ms > 86400000)) {
            ctl_reply_error(cl, "stop: timeout_ms must be an integer from 0 to 86400000");
        } else {
            send_json_to_client(cl, 0, CAPSA_MSG_CTL_RESULT, json_pack("{s:b}", "ok", 1));
            begin_stop(s, CAPSA_RUN_SHUTDOWN_REQUESTED,
                       json_is_true(json_object_get(req, "force")) || ms == 0, (uint64_t)ms);
        }
    } else if (!strcmp(op, "detach")) {
        /* disarm the parent watch: the sandbox outlives its parent from now on */
        bool was = s->watch_fd >= 0;
        if (was) {
            close(s->watch_fd);
            s->watch_fd = -1;
            log_info("detached from the parent process");
        }
        send_json_to_client(cl, 0, CAPSA_MSG_CTL_RESULT,
                            json_pack("{s:b, s:b}", "ok", 1, "was_attached", was));
    } else if (!strcmp(op, "spawn")) {
        if (s->stopping)
            ctl_reply_error(cl, "spawn: the sandbox is stopping");
        else {
            s->last_activity_us = capsa_now_us();
            ctl_spawn(s, cl, req);
        }
    } else {
        char msg[128];
        snprintf(msg, sizeof(msg),
                 "ctl.request: unknown op '%.40s' (expected info, touch, stop, "
                 "spawn or detach)",
                 op);
        ctl_reply_error(cl, msg);
    }
    json_decref(req);
}

static void pong_enqueue(struct sup *s, uint64_t serial)
{
    if (s->n_pong == s->cap_pong) {
        size_t cap = s->cap_pong ? s->cap_pong * 2 : 16;
        uint64_t *n = realloc(s->pongq, cap * sizeof(*n));
        if (!n)
            return;
        s->pongq = n;
        s->cap_pong = cap;
    }
    s->pongq[s->n_pong++] = serial;
}

/* One frame from a client. Returns -1 when the client must be dropped. */
static int on_client_frame(struct sup *s, struct client *cl, const struct capsa_frame_hdr *h,
                           const uint8_t *p)
{
    struct capsa_agentc *ag = &s->b->conn;
    struct stream *st;
    capsa_err err = {0};

    if (h->stream == 0) {
        switch (h->type) {
        case CAPSA_MSG_PING:
            if (ag->eof) {
                client_error(cl, 0, "not_running", "the guest agent is gone");
                return 0;
            }
            pong_enqueue(s, cl->serial);
            if (capsa_agentc_send(ag, 0, CAPSA_MSG_PING, 0, "{}", 2, &err) < 0)
                log_warn("relaying ping: %s", err.msg);
            return 0;
        case CAPSA_MSG_CTL_REQUEST:
            on_ctl(s, cl, p, h->len);
            return 0;
        case CAPSA_MSG_SHUTDOWN:
            begin_stop(s, CAPSA_RUN_SHUTDOWN_REQUESTED, false, CAPSA_STOP_TIMEOUT_MS_DEFAULT);
            return 0;
        default:
            client_error(cl, 0, "bad_frame", "unexpected frame type on stream 0");
            return 0;
        }
    }
    st = stream_by_client(s, cl, h->stream);
    if (!st) {
        if (h->type != CAPSA_MSG_EXEC_START && h->type != CAPSA_MSG_FS_REQUEST) {
            client_error(cl, h->stream, "bad_frame", "unknown stream");
            return 0;
        }
        if (s->stopping || ag->eof) {
            client_error(cl, h->stream, "not_running", "the sandbox is stopping");
            return 0;
        }
        if (cl->n_streams >= MAX_STREAMS_PER_CLIENT) {
            client_error(cl, h->stream, "bad_frame", "too many open streams on this connection");
            return 0;
        }
        st = stream_add(s, cl, h->stream, h->type == CAPSA_MSG_EXEC_START);
        if (!st) {
            client_error(cl, h->stream, "internal", "out of memory");
            return 0;
        }
        if (h->type == CAPSA_MSG_EXEC_START && !s->primary_taken) {
            json_t *j = capsa_agentc_parse_json(p, h->len, NULL);
            s->primary_taken = true;
            st->logged = true;
            st->tty = j && json_is_true(json_object_get(j, "tty"));
            json_decref(j);
        }
        if (h->type == CAPSA_MSG_FS_REQUEST) {
            json_t *j = capsa_agentc_parse_json(p, h->len, NULL);
            const char *op = j ? json_string_value(json_object_get(j, "op")) : NULL;
            st->fs_write_open = op && !strcmp(op, "write");
            json_decref(j);
        }
        s->last_activity_us = capsa_now_us();
    } else {
        switch (h->type) {
        case CAPSA_MSG_STDIN:
        case CAPSA_MSG_FS_DATA:
            s->last_activity_us = capsa_now_us();
            if (h->type == CAPSA_MSG_FS_DATA && (h->flags & CAPSA_FRAME_EOF))
                st->fs_write_open = false;
            break;
        case CAPSA_MSG_SIGNAL:
        case CAPSA_MSG_RESIZE:
            break;
        default:
            client_error(cl, h->stream, "bad_frame", "unexpected frame type on an open stream");
            return 0;
        }
    }
    if (capsa_agentc_send(ag, st->agent_id, h->type, h->flags, p, h->len, &err) < 0)
        log_warn("relaying to the agent: %s", err.msg);
    return 0;
}

/* ---- agent ------------------------------------------------------------------------------- */

static struct client *client_by_serial(struct sup *s, uint64_t serial)
{
    for (size_t i = 0; i < s->n_clients; i++)
        if (s->clients[i]->serial == serial)
            return s->clients[i];
    return NULL;
}

static void log_output(struct sup *s, struct stream *st, const struct capsa_frame_hdr *h,
                       const uint8_t *p)
{
    bool err = h->type == CAPSA_MSG_STDERR;

    if (!st->lb) {
        st->lb = calloc(1, sizeof(*st->lb));
        if (!st->lb)
            return;
    }
    capsa_execlog_feed(&s->xlog, err ? &st->lb->err : &st->lb->out,
                       err ? CAPSA_LOG_SRC_STDERR
                           : (st->tty ? CAPSA_LOG_SRC_OUTPUT : CAPSA_LOG_SRC_STDOUT),
                       st->agent_id, p, h->len, capsa_now_us());
}

static void on_meminfo_frame(struct sup *s, struct stream *st, const struct capsa_frame_hdr *h,
                             const uint8_t *p)
{
    if (h->type == CAPSA_MSG_FS_DATA) {
        size_t n = h->len;
        if (!s->mi_buf)
            s->mi_buf = malloc(MEMINFO_MAX);
        if (s->mi_buf) {
            if (n > MEMINFO_MAX - s->mi_len)
                n = MEMINFO_MAX - s->mi_len;
            memcpy(s->mi_buf + s->mi_len, p, n);
            s->mi_len += n;
        }
        return;
    }
    if (h->type == CAPSA_MSG_FS_RESULT && s->mi_buf) {
        uint64_t total, avail;
        if (capsa_meminfo_parse(s->mi_buf, s->mi_len, &total, &avail) == 0) {
            s->mem_total = total;
            s->mem_avail = avail;
        }
    }
    if (h->type == CAPSA_MSG_FS_RESULT || h->type == CAPSA_MSG_ERROR) {
        s->mi_len = 0;
        s->meminfo_pending = false;
        stream_remove(s, st);
    }
}

static void on_agent_frame(struct sup *s, const struct capsa_frame_hdr *h, const uint8_t *p)
{
    struct stream *st;
    bool ends;

    if (h->stream == 0) {
        if (h->type == CAPSA_MSG_PONG) {
            while (s->n_pong > 0) {
                uint64_t serial = s->pongq[0];
                struct client *cl;
                memmove(s->pongq, s->pongq + 1, (s->n_pong - 1) * sizeof(*s->pongq));
                s->n_pong--;
                cl = client_by_serial(s, serial);
                if (cl) {
                    send_to_client(cl, 0, CAPSA_MSG_PONG, 0, p, h->len);
                    break;
                }
            }
        } else if (h->type == CAPSA_MSG_ERROR) {
            log_warn("agent error on stream 0: %.*s", (int)(h->len > 400 ? 400 : h->len), p);
        }
        return;
    }
    st = stream_by_agent(s, h->stream);
    if (!st) {
        log_debug("dropping %s frame for unknown agent stream %u",
                  capsa_frame_type_name(h->type) ? capsa_frame_type_name(h->type) : "?", h->stream);
        return;
    }
    if (st->meminfo) {
        on_meminfo_frame(s, st, h, p);
        return;
    }
    if (st->logged && (h->type == CAPSA_MSG_STDOUT || h->type == CAPSA_MSG_STDERR))
        log_output(s, st, h, p);
    ends = h->type == CAPSA_MSG_EXITED || h->type == CAPSA_MSG_EXEC_FAILED ||
           h->type == CAPSA_MSG_FS_RESULT || h->type == CAPSA_MSG_ERROR;
    if (h->type == CAPSA_MSG_STDOUT || h->type == CAPSA_MSG_STDERR || h->type == CAPSA_MSG_FS_DATA)
        s->last_activity_us = capsa_now_us();
    if (st->cl) {
        send_to_client(st->cl, st->client_id, h->type, h->flags, p, h->len);
    } else if (st->detached) {
        struct client *waiter = st->spawn_serial ? client_by_serial(s, st->spawn_serial) : NULL;
        if (h->type == CAPSA_MSG_EXEC_STARTED || ends)
            st->spawn_serial = 0;
        if (waiter && h->type == CAPSA_MSG_EXEC_STARTED) {
            json_t *j = capsa_agentc_parse_json(p, h->len, NULL);
            json_t *pid = j ? json_object_get(j, "pid") : NULL;
            send_json_to_client(waiter, 0, CAPSA_MSG_CTL_RESULT,
                                json_pack("{s:b, s:I, s:I}", "ok", 1, "stream",
                                          (json_int_t)st->agent_id, "pid",
                                          json_is_integer(pid) ? json_integer_value(pid) : 0));
            json_decref(j);
        } else if (waiter && ends) {
            json_t *j = capsa_agentc_parse_json(p, h->len, NULL);
            const char *m = j ? json_string_value(json_object_get(j, "message")) : NULL;
            char msg[600];
            snprintf(msg, sizeof(msg), "spawn: the command could not start: %.500s",
                     m ? m : "(no message)");
            ctl_reply_error(waiter, msg);
            json_decref(j);
        }
        if (ends)
            log_info("detached command (stream %u) ended: %s %.*s", st->agent_id,
                     capsa_frame_type_name(h->type), (int)(h->len > 400 ? 400 : h->len), p);
    }
    if (ends) {
        if (h->type != CAPSA_MSG_FS_RESULT)
            s->last_activity_us = capsa_now_us();
        stream_remove(s, st);
    }
}

/* ---- logs and metrics -------------------------------------------------------------------- */

static void sys_line(struct sup *s, const char *fmt, ...)
{
    char line[2200];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof(line) - 2)
        n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    capsa_execlog_write(&s->xlog, CAPSA_LOG_SRC_SYSTEM, 0, line, (size_t)n);
}

static void log_hook(enum capsa_log_level lvl, const char *msg)
{
    static bool busy;
    static const char *const names[] = {"error: ", "warn: ", ""};

    if (!g_sup || busy || g_sup->xlog.fd < 0 || lvl > CAPSA_LOG_INFO)
        return;
    busy = true;
    sys_line(g_sup, "supervisor: %s%.2000s", names[lvl], msg);
    busy = false;
}

static void console_emit(struct sup *s)
{
    if (s->con_n)
        sys_line(s, "console: %.*s", (int)s->con_n, s->con_line);
    s->con_n = 0;
}

/* Copy new guest console lines (kernel and agent messages) into exec.log, bounded per call. */
static void console_tail(struct sup *s)
{
    _cleanup_close_ int fd = -1;
    char buf[16384];
    size_t budget = CONSOLE_READ_MAX;

    if (!s->b)
        return;
    fd = open(s->b->console_log, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;
    while (budget > 0) {
        ssize_t n =
            pread(fd, buf, budget < sizeof(buf) ? budget : sizeof(buf), (off_t)s->console_off);
        if (n <= 0)
            break;
        s->console_off += (uint64_t)n;
        budget -= (size_t)n;
        for (ssize_t i = 0; i < n; i++) {
            char c = buf[i];
            if (c == '\n')
                console_emit(s);
            else if (c != '\r') {
                s->con_line[s->con_n++] = c;
                if (s->con_n == sizeof(s->con_line))
                    console_emit(s);
            }
        }
    }
}

static void metrics_sample(struct sup *s, uint64_t now)
{
    struct capsa_proc_stats ps;
    capsa_err err = {0};
    struct stream *st;
    double cpu = 0;
    char ts[40];
    json_t *j;

    if (!s->b || !s->b->vm || s->b->vm->reaped)
        return;
    if (capsa_proc_stats_read(s->b->vm->pid, &ps, &err) < 0) {
        log_debug("metrics: %s", err.msg);
        return;
    }
    if (now > s->prev_sample_us && ps.cpu_ns >= s->prev.cpu_ns)
        cpu = (double)(ps.cpu_ns - s->prev.cpu_ns) * 100.0 /
              ((double)(now - s->prev_sample_us) * 1000.0);
    s->prev = ps;
    s->prev_sample_us = now;
    capsa_execlog_fmt_time(capsa_execlog_now_ms(), ts, sizeof(ts));
    j = json_pack("{s:s, s:I, s:I, s:i, s:i, s:i, s:f, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
                  "s:I, s:I}",
                  "timestamp", ts, "timestamp_ms", (json_int_t)capsa_execlog_now_ms(),
                  "interval_ms", (json_int_t)(s->metrics_interval_us / 1000), "supervisor_pid",
                  (int)getpid(), "qemu_pid", (int)s->b->vm->pid, "cpus", (int)s->spec->cpus,
                  "cpu_percent", (double)((int64_t)(cpu * 10 + 0.5)) / 10.0, "vcpu_time_ns",
                  (json_int_t)ps.cpu_ns, "memory_bytes", (json_int_t)(s->mem_total - s->mem_avail),
                  "memory_available_bytes", (json_int_t)s->mem_avail, "memory_host_resident_bytes",
                  (json_int_t)ps.rss_bytes, "memory_limit_bytes",
                  (json_int_t)(s->spec->memory_mib << 20), "disk_read_bytes",
                  (json_int_t)ps.read_bytes, "disk_write_bytes", (json_int_t)ps.write_bytes,
                  "net_rx_bytes", (json_int_t)0, "net_tx_bytes", (json_int_t)0, "uptime_secs",
                  (json_int_t)((now - s->t_start_us) / 1000000u));
    {
        /* the managed upper disk: what it takes on the host (a sparse file grows as the guest
         * writes); no managed upper (directory root, tmpfs, user disk): absent */
        char up[4200];
        struct stat ust;
        snprintf(up, sizeof(up), "%s/upper.ext4", s->paths.dir);
        if (j && stat(up, &ust) == 0 && S_ISREG(ust.st_mode))
            json_object_set_new(j, "upper_host_allocated_bytes",
                                json_integer((json_int_t)ust.st_blocks * 512));
    }
    if (j && capsa_metrics_write(s->metrics_path, j, &err) < 0)
        log_debug("metrics: %s", err.msg);
    json_decref(j);
    /* guest memory for the next sample: an fs read of /proc/meminfo (not activity) */
    if (!s->meminfo_pending && !s->b->conn.eof && !s->stopping) {
        st = stream_add(s, NULL, 0, false);
        if (!st)
            return;
        st->meminfo = true;
        static const char req[] = "{\"op\":\"read\",\"path\":\"/proc/meminfo\"}";
        if (capsa_agentc_send(&s->b->conn, st->agent_id, CAPSA_MSG_FS_REQUEST, 0, req,
                              sizeof(req) - 1, &err) < 0) {
            stream_remove(s, st);
            return;
        }
        s->meminfo_pending = true;
        s->mi_len = 0;
    }
}

static void flush_due(struct sup *s, struct stream *st, struct capsa_execlog_buf *lb,
                      enum capsa_log_source src, uint64_t now, uint64_t *next)
{
    if (!lb->since_us)
        return;
    if (now - lb->since_us >= LOG_PARTIAL_FLUSH_US)
        capsa_execlog_flush(&s->xlog, lb, src, st->agent_id);
    else if (!*next || lb->since_us + LOG_PARTIAL_FLUSH_US < *next)
        *next = lb->since_us + LOG_PARTIAL_FLUSH_US;
}

/* Periodic work: partial output lines, console tail, metrics. Returns the next deadline. */
static uint64_t housekeeping(struct sup *s, uint64_t now)
{
    uint64_t next = 0;

    for (size_t i = 0; i < s->n_streams; i++) {
        struct stream *st = &s->streams[i];
        if (!st->lb)
            continue;
        flush_due(s, st, &st->lb->out, st->tty ? CAPSA_LOG_SRC_OUTPUT : CAPSA_LOG_SRC_STDOUT, now,
                  &next);
        flush_due(s, st, &st->lb->err, CAPSA_LOG_SRC_STDERR, now, &next);
    }
    if (now >= s->next_console_us) {
        console_tail(s);
        s->next_console_us = now + CONSOLE_POLL_US;
    }
    if (!next || s->next_console_us < next)
        next = s->next_console_us;
    if (s->metrics_interval_us) {
        if (now >= s->next_metrics_us) {
            metrics_sample(s, now);
            s->next_metrics_us = now + s->metrics_interval_us;
        }
        if (s->next_metrics_us < next)
            next = s->next_metrics_us;
    }
    return next;
}

/* ---- main loop --------------------------------------------------------------------------- */

static int finalize(struct sup *s, int ws)
{
    struct capsa_store_run_end end = {0};
    enum capsa_sandbox_status to;
    char why[256], detail[512];
    const char *last_error = NULL;
    bool crashed = false;

    if (WIFSIGNALED(ws))
        snprintf(why, sizeof(why), "killed by signal %d", WTERMSIG(ws));
    else
        snprintf(why, sizeof(why), "exit status %d", WIFEXITED(ws) ? WEXITSTATUS(ws) : -1);
    end.has_exit_code = WIFEXITED(ws);
    end.exit_code = WIFEXITED(ws) ? WEXITSTATUS(ws) : 0;
    end.signal = WIFSIGNALED(ws) ? WTERMSIG(ws) : 0;
    if (s->stopping) {
        to = CAPSA_SANDBOX_STOPPED;
        end.reason = s->stop_reason;
        if (s->parent_exited)
            snprintf(detail, sizeof(detail), "the attached parent process exited; %s",
                     s->killed ? "QEMU killed: the guest did not power off in time"
                               : "the guest powered off");
        else if (s->killed && s->stop_grace_ms > 0)
            snprintf(detail, sizeof(detail),
                     "QEMU killed: the guest did not power off within %llu ms",
                     (unsigned long long)s->stop_grace_ms);
        else if (s->killed)
            snprintf(detail, sizeof(detail), "QEMU killed (forced stop)");
        else
            snprintf(detail, sizeof(detail), "the guest powered off (QEMU %s)", why);
    } else if (WIFEXITED(ws) && WEXITSTATUS(ws) == 0) {
        to = CAPSA_SANDBOX_STOPPED;
        end.reason = CAPSA_RUN_COMPLETED;
        snprintf(detail, sizeof(detail), "the guest powered off by itself");
    } else {
        crashed = true;
        to = CAPSA_SANDBOX_CRASHED;
        end.reason = CAPSA_RUN_INTERNAL_ERROR;
        if (s->killed)
            snprintf(detail, sizeof(detail),
                     "the guest agent channel closed unexpectedly; QEMU (pid %d) was killed",
                     (int)s->b->vm->pid);
        else
            snprintf(detail, sizeof(detail), "QEMU (pid %d) exited unexpectedly: %s",
                     (int)s->b->vm->pid, why);
        last_error = detail;
    }
    end.detail = detail;
    log_info("QEMU exited (%s): %s", why, detail);
    if (crashed)
        capsa_boot_dump_console(s->b->console_log);
    console_tail(s);
    console_emit(s);
    for (size_t i = 0; i < s->n_streams; i++)
        if (s->streams[i].lb) {
            struct stream *st = &s->streams[i];
            capsa_execlog_flush(&s->xlog, &st->lb->out,
                                st->tty ? CAPSA_LOG_SRC_OUTPUT : CAPSA_LOG_SRC_STDOUT,
                                st->agent_id);
            capsa_execlog_flush(&s->xlog, &st->lb->err, CAPSA_LOG_SRC_STDERR, st->agent_id);
        }
    sys_line(s, "--- sandbox stopped (%s) ---", capsa_run_reason_name(end.reason));
    record_end(s, to, last_error, &end);
    while (s->n_clients > 0) {
        capsa_agentc_flush(&s->clients[0]->ch, false, NULL);
        client_drop(s, 0);
    }
    if (s->listen_fd >= 0) {
        close(s->listen_fd);
        s->listen_fd = -1;
    }
    unlink(s->paths.sock);
    /* keep the console log of a crash for diagnosis; an orderly stop leaves no run dir */
    capsa_boot_stop(s->b, 0, !crashed, NULL);
    s->b = NULL;
    return crashed ? 1 : 0;
}

static void on_signal(struct sup *s)
{
    struct signalfd_siginfo si;

    while (read(s->sig_fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        log_info("received signal %d", (int)si.ssi_signo);
        begin_stop(s, CAPSA_RUN_SIGNAL, false, CAPSA_STOP_TIMEOUT_MS_DEFAULT);
    }
}

/* The parent-watch pipe is readable: EOF (or an error) means the attached parent is gone, so
 * the sandbox stops as `capsa stop` would; bytes written to it are ignored. */
static void on_watch(struct sup *s)
{
    char buf[64];
    ssize_t n = read(s->watch_fd, buf, sizeof(buf));

    if (n > 0 || (n < 0 && (errno == EINTR || errno == EAGAIN)))
        return;
    close(s->watch_fd);
    s->watch_fd = -1;
    log_info("the attached parent process exited: stopping the sandbox");
    if (!s->stopping)
        s->parent_exited = true;
    begin_stop(s, CAPSA_RUN_SHUTDOWN_REQUESTED, false, CAPSA_STOP_TIMEOUT_MS_DEFAULT);
}

static uint64_t min_deadline(uint64_t a, uint64_t b)
{
    if (!a)
        return b;
    if (!b)
        return a;
    return a < b ? a : b;
}

static int loop(struct sup *s)
{
    struct pollfd pf[MAX_CLIENTS + 6];
    struct capsa_agentc *ag = &s->b->conn;
    capsa_err err = {0};

    for (;;) {
        struct capsa_frame_hdr h;
        const uint8_t *p;
        uint64_t now, deadline = 0;
        int ws, n = 0, i_ag = -1, i_pid = -1, i_lis = -1, i_sig, i_cl, i_watch = -1, timeout = -1;
        int r;
        bool pause_agent = false, pause_clients;

        /* frames already buffered */
        while ((r = capsa_agentc_next(ag, &h, &p, &err)) > 0)
            on_agent_frame(s, &h, p);
        if (r < 0) {
            log_error("%s", err.msg);
            ag->eof = true;
        }
        for (size_t c = 0; c < s->n_clients;) {
            struct client *cl = s->clients[c];
            bool drop = false;
            while ((r = capsa_agentc_next(&cl->ch, &h, &p, &err)) > 0)
                if (on_client_frame(s, cl, &h, p) < 0)
                    break;
            if (r < 0) {
                log_warn("client %llu: %s", (unsigned long long)cl->serial, err.msg);
                drop = true;
            }
            if (capsa_agentc_flush(&cl->ch, false, NULL) < 0 || cl->ch.eof)
                drop = true;
            if (drop)
                client_drop(s, c);
            else
                c++;
        }
        if (!ag->eof && capsa_agentc_flush(ag, false, &err) < 0) {
            log_error("%s", err.msg);
            ag->eof = true;
        }

        /* QEMU and timers */
        if (capsa_vm_poll_exit(s->b->vm, &ws))
            return finalize(s, ws);
        now = capsa_now_us();
        if (ag->eof && !s->agent_eof_us) {
            s->agent_eof_us = now;
            if (!s->stopping)
                log_error("the guest agent channel closed");
        }
        if (s->agent_eof_us && !s->killed && now - s->agent_eof_us >= AGENT_EOF_GRACE_US &&
            (!s->stopping || !s->stop_deadline_us))
            kill_qemu(s);
        if (!s->stopping && s->max_duration_us && now - s->t_start_us >= s->max_duration_us) {
            log_info("max duration of %llu ms reached",
                     (unsigned long long)(s->max_duration_us / 1000));
            begin_stop(s, CAPSA_RUN_MAX_DURATION_EXCEEDED, false, CAPSA_STOP_TIMEOUT_MS_DEFAULT);
        }
        if (!s->stopping && s->idle_timeout_us && exec_count(s) == 0 &&
            now - s->last_activity_us >= s->idle_timeout_us) {
            log_info("idle for %llu ms", (unsigned long long)((now - s->last_activity_us) / 1000));
            begin_stop(s, CAPSA_RUN_IDLE_TIMEOUT, false, CAPSA_STOP_TIMEOUT_MS_DEFAULT);
        }
        if (s->stop_deadline_us && now >= s->stop_deadline_us)
            kill_qemu(s);
        if (!s->stopping) {
            if (s->max_duration_us)
                deadline = min_deadline(deadline, s->t_start_us + s->max_duration_us);
            if (s->idle_timeout_us && exec_count(s) == 0)
                deadline = min_deadline(deadline, s->last_activity_us + s->idle_timeout_us);
        }
        deadline = min_deadline(deadline, s->stop_deadline_us);
        if (s->agent_eof_us && !s->killed)
            deadline = min_deadline(deadline, s->agent_eof_us + AGENT_EOF_GRACE_US);
        deadline = min_deadline(deadline, housekeeping(s, now));
        if (deadline)
            timeout = deadline > now ? (int)((deadline - now + 999) / 1000) : 0;
        if (s->b->vm->pidfd < 0 && (timeout < 0 || timeout > 200))
            timeout = 200;

        /* poll set */
        for (size_t c = 0; c < s->n_clients; c++)
            pause_agent =
                pause_agent || capsa_agentc_pending(&s->clients[c]->ch) > CLIENT_HIGH_WATER;
        pause_clients = capsa_agentc_pending(ag) > AGENT_HIGH_WATER;
        if (!ag->eof) {
            i_ag = n;
            pf[n++] = (struct pollfd){.fd = ag->fd,
                                      .events = (short)((pause_agent ? 0 : POLLIN) |
                                                        (capsa_agentc_pending(ag) ? POLLOUT : 0))};
        }
        if (s->b->vm->pidfd >= 0) {
            i_pid = n;
            pf[n++] = (struct pollfd){.fd = s->b->vm->pidfd, .events = POLLIN};
        }
        if (s->listen_fd >= 0) {
            i_lis = n;
            pf[n++] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
        }
        i_sig = n;
        pf[n++] = (struct pollfd){.fd = s->sig_fd, .events = POLLIN};
        if (s->watch_fd >= 0) {
            i_watch = n;
            pf[n++] = (struct pollfd){.fd = s->watch_fd, .events = POLLIN};
        }
        i_cl = n;
        for (size_t c = 0; c < s->n_clients; c++)
            pf[n++] = (struct pollfd){
                .fd = s->clients[c]->ch.fd,
                .events = (short)((pause_clients ? 0 : POLLIN) |
                                  (capsa_agentc_pending(&s->clients[c]->ch) ? POLLOUT : 0))};
        if (poll(pf, (nfds_t)n, timeout) < 0) {
            if (errno == EINTR)
                continue;
            log_error("poll: %s", strerror(errno));
            begin_stop(s, CAPSA_RUN_INTERNAL_ERROR, true, 0);
            continue;
        }
        if (i_ag >= 0 && (pf[i_ag].revents & (POLLIN | POLLHUP | POLLERR)) && !pause_agent &&
            capsa_agentc_read(ag, &err) < 0) {
            log_error("%s", err.msg);
            ag->eof = true;
        }
        (void)i_pid; /* exit is checked at the top of the loop */
        if (pf[i_sig].revents & POLLIN)
            on_signal(s);
        if (i_watch >= 0 && (pf[i_watch].revents & (POLLIN | POLLHUP | POLLERR)))
            on_watch(s);
        /* clients: read (their count may change only below, when accepting) */
        for (size_t c = 0; c < s->n_clients && i_cl + (int)c < n; c++) {
            struct pollfd *q = &pf[i_cl + (int)c];
            if (q->revents & (POLLIN | POLLHUP | POLLERR))
                if (capsa_agentc_read(&s->clients[c]->ch, NULL) < 0)
                    s->clients[c]->ch.eof = true;
        }
        if (i_lis >= 0 && (pf[i_lis].revents & POLLIN))
            client_accept(s);
    }
}

/* ---- start ------------------------------------------------------------------------------- */

static int listen_control(struct sup *s, capsa_err *err)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    _cleanup_close_ int fd = -1;

    if (strlen(s->paths.sock) >= sizeof(sa.sun_path))
        return capsa_err_set(err, ENAMETOOLONG,
                             "control socket path %s is longer than %zu bytes (use a shorter "
                             "CAPSA_HOME)",
                             s->paths.sock, sizeof(sa.sun_path) - 1);
    memcpy(sa.sun_path, s->paths.sock, strlen(s->paths.sock) + 1);
    unlink(s->paths.sock);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return capsa_err_set(err, errno, "socket: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return capsa_err_set(err, errno, "bind %s: %s", s->paths.sock, strerror(errno));
    if (chmod(s->paths.sock, 0600) < 0)
        return capsa_err_set(err, errno, "chmod %s: %s", s->paths.sock, strerror(errno));
    if (listen(fd, 64) < 0)
        return capsa_err_set(err, errno, "listen %s: %s", s->paths.sock, strerror(errno));
    s->listen_fd = steal_fd(&fd);
    return 0;
}

/* created|stopped|failed|crashed -> starting, our pid, a new run: one transaction. */
static int claim(struct sup *s, capsa_err *err)
{
    if (capsa_store_tx_begin(s->store, err) < 0)
        return -1;
    if (capsa_store_sandbox_set_status(s->store, s->name, CAPSA_SB_INACTIVE, CAPSA_SANDBOX_STARTING,
                                       NULL, err) < 0 ||
        capsa_store_sandbox_set_supervisor(s->store, s->name, getpid(), err) < 0 ||
        capsa_store_run_start(s->store, s->name, getpid(), &s->run_id, err) < 0) {
        capsa_store_tx_rollback(s->store);
        return -1;
    }
    return capsa_store_tx_commit(s->store, err);
}

/* ---- runtime.scripts ---------------------------------------------------------------------- */

static json_t *spec_scripts(const struct sup *s)
{
    json_t *sc = json_object_get(json_object_get(s->spec->doc, "runtime"), "scripts");
    return json_object_size(sc) ? sc : NULL;
}

/* With scripts, the boot env's PATH gets CAPSA_SCRIPTS_DIR first: over the spec's PATH, else
 * the image's, else the default. env holds the spec env (NULL-terminated, room for one more). */
static int scripts_path_env(const struct sup *s, char *const *image_env, char **env, capsa_err *err)
{
    static const char dflt[] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    const char *base = NULL;
    size_t i, slot;
    char *nv;

    if (!spec_scripts(s))
        return 0;
    for (i = 0; image_env && image_env[i]; i++)
        if (!strncmp(image_env[i], "PATH=", 5))
            base = image_env[i] + 5;
    for (slot = 0; env[slot]; slot++)
        if (!strncmp(env[slot], "PATH=", 5))
            break;
    if (env[slot])
        base = env[slot] + 5;
    if (asprintf(&nv, "PATH=" CAPSA_SCRIPTS_DIR ":%s", base && *base ? base : dflt) < 0)
        return capsa_err_set(err, ENOMEM, "out of memory");
    free(env[slot]);
    env[slot] = nv;
    return 0;
}

/* Write every runtime.scripts entry to CAPSA_SCRIPTS_DIR/NAME (0755) through the agent's fs
 * ops, after removing what an earlier start left there. A body without "#!" gets the
 * runtime shell (default /bin/sh) as its interpreter. */
static int install_scripts(struct sup *s, capsa_err *err)
{
    json_t *scripts = spec_scripts(s), *v;
    const char *shell = s->spec->shell ? s->spec->shell : "/bin/sh", *k;
    capsa_err rerr = {0};
    char path[256];

    if (!scripts)
        return 0;
    if (capsa_fsc_remove(&s->b->conn, CAPSA_SCRIPTS_DIR, true, &rerr) < 0 && rerr.code != ENOENT)
        log_warn("scripts: clearing %s: %s", CAPSA_SCRIPTS_DIR, rerr.msg);
    if (capsa_fsc_mkdir(&s->b->conn, CAPSA_SCRIPTS_DIR, 0755, err) < 0)
        return capsa_err_prefix(err, "runtime.scripts");
    json_object_foreach(scripts, k, v)
    {
        const char *body = json_string_value(v);
        _cleanup_free_ char *full = NULL;
        size_t len;

        if (!body || !capsa_sandbox_script_name_ok(k) || strlen(body) > CAPSA_SCRIPT_MAX)
            return capsa_err_set(err, EINVAL, "runtime.scripts.%.64s: invalid script", k);
        if (strncmp(body, "#!", 2) != 0) {
            if (asprintf(&full, "#!%s\n%s", shell, body) < 0) {
                full = NULL;
                return capsa_err_set(err, ENOMEM, "out of memory");
            }
            body = full;
        }
        len = strlen(body);
        snprintf(path, sizeof(path), "%s/%s", CAPSA_SCRIPTS_DIR, k);
        if (capsa_fsc_write(&s->b->conn, path, body, len, 0755, err) < 0)
            return capsa_err_prefix(err, "runtime.scripts.%s", k);
        log_info("installed script %s", path);
    }
    return 0;
}

static int boot_vm(struct sup *s, capsa_err *err)
{
    struct capsa_boot_opts bo = {0};
    char *env[MAX_ENV + 2] = {0}, hostname[65];
    struct capsa_spec_env *e;
    struct capsa_root_disk rd;
    struct capsa_rootfs_spec rs;
    struct capsa_rootfs root = {0};
    struct capsa_image_pull_opts pull;
    char ca_path[4200];
    int cancel;
    bool have_root = false;
    int rc;

    if (s->spec->image.kind != CAPSA_IMAGE_BIND) {
        /* an image pinned at create (or a disk image); the managed upper.ext4 lives in the
         * sandbox directory, so it persists across stop/start and goes with rm */
        if (capsa_sandbox_rootfs_spec(s->spec, s->paths.dir, &rd, &rs, err) < 0)
            return -1;
        if (rs.pull_policy == CAPSA_PULL_ALWAYS)
            rs.pull_policy = CAPSA_PULL_IF_MISSING; /* pinned: the digest cannot move */
        if (capsa_sandbox_pull_opts_load(s->paths.dir, &pull, ca_path, sizeof(ca_path), err) < 0)
            return -1;
        rs.pull = &pull;
        if (capsa_rootfs_resolve(&rs, &root, err) < 0)
            return -1;
        have_root = true;
        bo.root = &root;
    }
    if (s->spec->n_env > MAX_ENV) {
        rc = capsa_err_set(err, E2BIG, "env: at most %d variables", MAX_ENV);
        goto out;
    }
    for (size_t i = 0; i < s->spec->n_env; i++) {
        e = &s->spec->env[i];
        if (asprintf(&env[i], "%s=%s", e->key, e->value) < 0) {
            env[i] = NULL;
            rc = capsa_err_set(err, ENOMEM, "out of memory");
            goto out;
        }
    }
    if (scripts_path_env(s, have_root ? root.env : NULL, env, err) < 0) {
        rc = -1;
        goto out;
    }
    capsa_sandbox_default_hostname(s->name, hostname);
    bo.rootfs = s->spec->image.path;
    bo.cpus = (int)s->spec->cpus;
    bo.memory_mib = (int)s->spec->memory_mib;
    bo.accel = CAPSA_ACCEL_AUTO;
    bo.hostname = s->spec->hostname ? s->spec->hostname : hostname;
    bo.workdir = s->spec->workdir;
    bo.user = s->spec->user;
    bo.env = env;
    /* a stop (signal) or the attached parent's exit during the boot ends it at once: the boot
     * waits on an epoll set of both, readable when either is */
    cancel = epoll_create1(EPOLL_CLOEXEC);
    if (cancel >= 0) {
        struct epoll_event ev = {.events = EPOLLIN};
        epoll_ctl(cancel, EPOLL_CTL_ADD, s->sig_fd, &ev);
        if (s->watch_fd >= 0)
            epoll_ctl(cancel, EPOLL_CTL_ADD, s->watch_fd, &ev);
        bo.cancel_fd = cancel;
    }
    rc = capsa_boot(&bo, s->paths.run_dir, &s->b, err);
    if (cancel >= 0)
        close(cancel);
out:
    for (size_t i = 0; i < MAX_ENV + 1 && env[i]; i++)
        free(env[i]);
    if (have_root)
        capsa_rootfs_release(&root);
    return rc;
}

int capsa_supervisor_main(const char *name)
{
    struct sup s = {
        .name = name, .ready_fd = -1, .listen_fd = -1, .sig_fd = -1, .watch_fd = -1, .xlog.fd = -1};
    const char *rfd = getenv(CAPSA_SUPERVISOR_READY_ENV), *wfd = getenv(CAPSA_SUPERVISOR_WATCH_ENV);
    capsa_spec_errors errs = {0};
    capsa_err err = {0};
    char ident[160], msg[1200];
    json_t *cfg = NULL;
    sigset_t mask;
    int ret = 1;

    umask(077);
    signal(SIGPIPE, SIG_IGN);
    snprintf(ident, sizeof(ident), "capsa-supervisor[%s]", name);
    capsa_log_set_ident(ident);
    if (!getenv("CAPSA_LOG"))
        capsa_log_set_level(CAPSA_LOG_INFO);
    if (rfd) {
        char *end;
        long v = strtol(rfd, &end, 10);
        if (!*end && v > 2 && v < 65536 && fcntl((int)v, F_GETFD) >= 0) {
            s.ready_fd = (int)v;
            fcntl(s.ready_fd, F_SETFD, FD_CLOEXEC);
        }
        unsetenv(CAPSA_SUPERVISOR_READY_ENV);
    }
    if (wfd) {
        /* attached: the spawner holds the write end (see capsa_supervisor_spawn) */
        char *end;
        long v = strtol(wfd, &end, 10);
        if (!*end && v > 2 && v < 65536 && fcntl((int)v, F_GETFD) >= 0) {
            s.watch_fd = (int)v;
            fcntl(s.watch_fd, F_SETFD, FD_CLOEXEC);
            fcntl(s.watch_fd, F_SETFL, fcntl(s.watch_fd, F_GETFL) | O_NONBLOCK);
        }
        unsetenv(CAPSA_SUPERVISOR_WATCH_ENV);
    }
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    s.sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    log_info("supervisor pid %d starting sandbox %s%s", (int)getpid(), name,
             s.watch_fd >= 0 ? " (attached to its parent)" : "");

    if (capsa_store_check_name("sandbox name", name, &err) < 0 ||
        capsa_store_open(NULL, &s.store, &err) < 0 ||
        capsa_store_sandbox_get(s.store, name, &s.row, &err) < 0 ||
        capsa_sandbox_paths(name, s.row.id, &s.paths, &err) < 0) {
        log_error("%s", err.msg);
        report(&s, false, false, err.msg);
        goto out;
    }
    if (claim(&s, &err) < 0) {
        log_error("%s", err.msg);
        report(&s, false, err.code == EBUSY, err.msg);
        goto out;
    }
    if (capsa_spec_parse(s.row.config_json, strlen(s.row.config_json), &cfg, &errs) < 0 ||
        capsa_sandbox_spec_load(cfg, &s.spec, &errs) < 0) {
        capsa_spec_errors_to_err(&errs, &err);
        snprintf(msg, sizeof(msg), "stored config: %s", err.msg);
        ret = fail_start(&s, msg);
        goto out;
    }
    capsa_execlog_open(&s.xlog, s.paths.exec_log);
    g_sup = &s;
    capsa_log_set_hook(log_hook);
    s.max_duration_us = s.spec->lifecycle.max_duration_secs * 1000000ull;
    s.idle_timeout_us = s.spec->lifecycle.idle_timeout_secs * 1000000ull;
    if (capsa_rm_rf(s.paths.run_dir, &err) < 0 || capsa_mkdir_p(s.paths.run_dir, 0700, &err) < 0) {
        ret = fail_start(&s, err.msg);
        goto out;
    }
    err.code = 0;
    if (boot_vm(&s, &err) < 0 && err.code == ECANCELED) {
        ret = cancel_start(&s);
        goto out;
    } else if (err.code) {
        snprintf(msg, sizeof(msg), "boot: %s", err.msg);
        ret = fail_start(&s, msg);
        goto out;
    }
    if (install_scripts(&s, &err) < 0) {
        ret = fail_start(&s, err.msg);
        goto out;
    }
    if (listen_control(&s, &err) < 0) {
        ret = fail_start(&s, err.msg);
        goto out;
    }
    if (capsa_store_sandbox_set_status(s.store, name, CAPSA_SB(STARTING), CAPSA_SANDBOX_RUNNING,
                                       NULL, &err) < 0) {
        snprintf(msg, sizeof(msg), "recording running: %s", err.msg);
        ret = fail_start(&s, msg);
        goto out;
    }
    /* the lifecycle timers count from here: boot time is not the sandbox's lifetime */
    s.t_start_us = s.last_activity_us = capsa_now_us();
    log_info("sandbox %s is running (booted in %.2f s, %s)", name, (double)s.b->boot_us / 1e6,
             capsa_accel_name(s.b->vm->accel));
    sys_line(&s, "--- sandbox started ---");
    snprintf(s.metrics_path, sizeof(s.metrics_path), "%s/%s", s.paths.run_dir, CAPSA_METRICS_FILE);
    s.metrics_interval_us = s.spec->metrics_sample_interval_ms * 1000u;
    s.prev_sample_us = s.t_start_us - s.b->boot_us; /* first rate: over the boot */
    s.next_metrics_us = s.t_start_us;
    report(&s, true, false, NULL);
    ret = loop(&s);
out:
    if (s.b)
        capsa_boot_stop(s.b, 0, false, NULL);
    for (size_t i = 0; i < s.n_clients; i++) {
        close(s.clients[i]->ch.fd);
        capsa_agentc_destroy(&s.clients[i]->ch);
        free(s.clients[i]);
    }
    if (s.listen_fd >= 0)
        close(s.listen_fd);
    capsa_log_set_hook(NULL);
    g_sup = NULL;
    capsa_execlog_close(&s.xlog);
    for (size_t i = 0; i < s.n_streams; i++)
        free(s.streams[i].lb);
    free(s.mi_buf);
    if (s.sig_fd >= 0)
        close(s.sig_fd);
    if (s.watch_fd >= 0)
        close(s.watch_fd);
    report(&s, false, false, "the supervisor exited during start");
    free(s.streams);
    free(s.pongq);
    capsa_sandbox_spec_free(s.spec);
    json_decref(cfg);
    capsa_spec_errors_free(&errs);
    capsa_store_sandbox_clear(&s.row);
    capsa_store_close(s.store);
    log_info("supervisor exiting (%d)", ret);
    return ret;
}
