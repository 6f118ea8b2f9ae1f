/* api.c - the public libcapsa API of include/capsa.h: contexts, sandbox handles, buffered exec.
 *
 * Theory of operation: a capsa_ctx is an open store ($CAPSA_HOME/capsa.db) behind a mutex; a
 * capsa_sandbox is a name plus, when the handle started the sandbox attached, the write end of
 * its supervisor's parent-watch pipe (src/supervisor/sandbox.h). Lifecycle calls wrap the
 * *_named functions of the supervisor layer; exec connects to the sandbox's control socket
 * (client.h) and runs one capsa_exec_run() session whose stdout and stderr go to pipes drained
 * by a helper thread into bounded buffers, and whose stdin is a sealed memfd holding the
 * caller's bytes. SIGPIPE is blocked in the calling thread while the library writes to
 * sockets, so a supervisor that dies mid-call gives an error, not a dead process.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "capsa.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "common/paths.h"
#include "lib/exec.h"
#include "spec/spec.h"
#include "store/store.h"
#include "supervisor/client.h"
#include "supervisor/sandbox.h"

_Static_assert(CAPSA_STATE_CRASHED == (int)CAPSA_SANDBOX_CRASHED &&
                   CAPSA_STATE_RUNNING == (int)CAPSA_SANDBOX_RUNNING,
               "enum capsa_state follows enum capsa_sandbox_status");

#define KNOWN_FLAGS (CAPSA_START_DETACHED | CAPSA_REPLACE | CAPSA_FORCE)
#define MAX_ARGS    4096

struct capsa_ctx {
    pthread_mutex_t lock; /* serializes use of store */
    struct capsa_store *store;
    bool have_exe; /* a capsa binary to run supervisors was found */
    char home[PATH_MAX];
};

struct capsa_sandbox {
    capsa_ctx *ctx;
    char *name;
    int watch_fd; /* attached: write end of the parent-watch pipe; -1 otherwise */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned g_open; /* open contexts (they share $CAPSA_HOME) */

/* ---- SIGPIPE --------------------------------------------------------------------------- */

struct pipe_guard {
    sigset_t old;
    bool was_pending;
};

static void pipe_guard_on(struct pipe_guard *g)
{
    sigset_t s, pending;

    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    sigemptyset(&pending);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &s, &g->old);
}

static void pipe_guard_off(struct pipe_guard *g)
{
    sigset_t s, pending;
    struct timespec zero = {0, 0};

    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    /* swallow a SIGPIPE we caused, so it is not delivered when the mask is restored */
    if (!g->was_pending)
        while (sigemptyset(&pending) == 0 && sigpending(&pending) == 0 &&
               sigismember(&pending, SIGPIPE) == 1 && sigtimedwait(&s, NULL, &zero) < 0 &&
               errno == EINTR)
            ;
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* ---- contexts ---------------------------------------------------------------------------- */

/* Supervisors are `capsa __supervisor NAME`: when this process is not capsa itself, find the
 * binary ($CAPSA_SUPERVISOR_EXE, else capsa on PATH) and record it for sandbox.c. */
static bool find_supervisor_exe(void)
{
    const char *env = getenv("CAPSA_SUPERVISOR_EXE"), *path = getenv("PATH");
    char self[PATH_MAX], cand[PATH_MAX];
    ssize_t n;

    if (env && *env)
        return access(env, X_OK) == 0;
    n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
        const char *base;
        self[n] = '\0';
        base = strrchr(self, '/');
        if (!strcmp(base ? base + 1 : self, "capsa"))
            return true;
    }
    for (const char *p = path ? path : "/usr/local/bin:/usr/bin:/bin"; p && *p;) {
        const char *colon = strchr(p, ':');
        size_t len = colon ? (size_t)(colon - p) : strlen(p);
        struct stat st;
        if (len > 0 && len < sizeof(cand) - 7 && p[0] == '/') {
            snprintf(cand, sizeof(cand), "%.*s/capsa", (int)len, p);
            if (stat(cand, &st) == 0 && S_ISREG(st.st_mode) && access(cand, X_OK) == 0) {
                setenv("CAPSA_SUPERVISOR_EXE", cand, 1);
                return true;
            }
        }
        p = colon ? colon + 1 : NULL;
    }
    return false;
}

capsa_ctx *capsa_open(const char *home, capsa_err *err)
{
    capsa_ctx *ctx;
    char cur[PATH_MAX];

    if (home && home[0] != '/') {
        capsa_err_set(err, EINVAL, "home '%s': must be an absolute path", home);
        return NULL;
    }
    if (home && strlen(home) >= sizeof(cur) - 64) {
        capsa_err_set(err, ENAMETOOLONG, "home: longer than %zu bytes", sizeof(cur) - 64);
        return NULL;
    }
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        capsa_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_lock(&g_lock);
    if (home) {
        if (g_open > 0 && capsa_home(cur, sizeof(cur), NULL) == 0 && strcmp(cur, home) != 0) {
            capsa_err_set(err, EBUSY,
                          "home '%s': a context on %s is open (one CAPSA_HOME per process)", home,
                          cur);
            goto fail;
        }
        setenv("CAPSA_HOME", home, 1);
    }
    if (capsa_home(ctx->home, sizeof(ctx->home), err) < 0 ||
        capsa_mkdir_p(ctx->home, 0700, err) < 0 || capsa_store_open(NULL, &ctx->store, err) < 0 ||
        capsa_sandbox_reap(ctx->store, err) < 0) {
        capsa_err_prefix(err, "opening %s", ctx->home[0] ? ctx->home : "the capsa home");
        goto fail;
    }
    ctx->have_exe = find_supervisor_exe();
    pthread_mutex_init(&ctx->lock, NULL);
    g_open++;
    pthread_mutex_unlock(&g_lock);
    return ctx;
fail:
    pthread_mutex_unlock(&g_lock);
    capsa_store_close(ctx->store);
    free(ctx);
    return NULL;
}

void capsa_close(capsa_ctx *ctx)
{
    if (!ctx)
        return;
    capsa_store_close(ctx->store);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
    pthread_mutex_lock(&g_lock);
    if (g_open > 0)
        g_open--;
    pthread_mutex_unlock(&g_lock);
}

/* ---- handles ----------------------------------------------------------------------------- */

static capsa_sandbox *handle_new(capsa_ctx *ctx, const char *name, int watch_fd, capsa_err *err)
{
    capsa_sandbox *sb = calloc(1, sizeof(*sb));

    if (sb)
        sb->name = strdup(name);
    if (!sb || !sb->name) {
        if (watch_fd >= 0)
            close(watch_fd); /* an attached sandbox we cannot hand out: let it stop */
        free(sb);
        capsa_err_set(err, ENOMEM, "out of memory");
        return NULL;
    }
    sb->ctx = ctx;
    sb->watch_fd = watch_fd;
    return sb;
}

static int check_flags(unsigned flags, unsigned allowed, capsa_err *err)
{
    if (flags & ~allowed)
        return capsa_err_set(err, EINVAL, "flags: unknown or inapplicable bits 0x%x",
                             flags & ~allowed);
    return 0;
}

static int need_exe(capsa_ctx *ctx, capsa_err *err)
{
    if (!ctx->have_exe && !(ctx->have_exe = find_supervisor_exe()))
        return capsa_err_set(err, ENOENT,
                             "no capsa binary to run the sandbox's supervisor: put capsa on PATH "
                             "or set CAPSA_SUPERVISOR_EXE");
    return 0;
}

/* SandboxSpec validation with path-precise messages ("spec: resources.cpus: ..."). */
static int spec_check(json_t *doc, capsa_err *err)
{
    struct capsa_sandbox_spec *sp = NULL;
    capsa_spec_errors errs = {0};
    int rc = 0;

    if (capsa_store_check_name("spec: name", json_string_value(json_object_get(doc, "name")), err) <
        0)
        return -1;
    if (capsa_sandbox_spec_load(doc, &sp, &errs) < 0) {
        /* every error, as far as the message holds them: "spec: PATH: MSG; PATH: MSG" */
        char msg[sizeof(err->msg)];
        size_t len = (size_t)snprintf(msg, sizeof(msg), "spec:");
        for (size_t i = 0; i < errs.count && len < sizeof(msg); i++)
            len += (size_t)snprintf(msg + len, sizeof(msg) - len, "%s %s", i ? ";" : "",
                                    errs.items[i]);
        if (!errs.count)
            capsa_spec_errors_to_err(&errs, err);
        else
            capsa_err_set(err, EINVAL, "%s", msg);
        rc = -1;
    }
    capsa_sandbox_spec_free(sp);
    capsa_spec_errors_free(&errs);
    return rc;
}

capsa_sandbox *capsa_sandbox_create(capsa_ctx *ctx, const char *spec_json, unsigned flags,
                                    capsa_err *err)
{
    struct capsa_sandbox_create_opts co = {0};
    json_error_t je;
    json_t *doc;
    const char *name;
    int watch = -1, rc;

    if (!ctx) {
        capsa_err_set(err, EINVAL, "ctx: NULL (open one with capsa_open)");
        return NULL;
    }
    if (!spec_json) {
        capsa_err_set(err, EINVAL, "spec_json: NULL (expected a SandboxSpec JSON object)");
        return NULL;
    }
    if (check_flags(flags, CAPSA_START_DETACHED | CAPSA_REPLACE, err) < 0)
        return NULL;
    doc = json_loads(spec_json, JSON_REJECT_DUPLICATES, &je);
    if (!doc) {
        capsa_err_set(err, EINVAL, "spec: invalid JSON at line %d, column %d: %s", je.line,
                      je.column, je.text);
        return NULL;
    }
    if (!json_is_object(doc)) {
        json_decref(doc);
        capsa_err_set(err, EINVAL, "spec: expected a JSON object (SandboxSpec)");
        return NULL;
    }
    name = json_string_value(json_object_get(doc, "name"));
    if (!name) {
        capsa_err_set(err, EINVAL, "spec: name: %s",
                      json_object_get(doc, "name") ? "expected a string"
                                                   : "required (the sandbox name)");
        json_decref(doc);
        return NULL;
    }
    /* the spec is checked before anything else (create checks it again, with the store) */
    if (spec_check(doc, err) < 0) {
        json_decref(doc);
        return NULL;
    }
    co.name = name;
    co.spec = doc;
    co.replace = flags & CAPSA_REPLACE;
    co.watch_fd = (flags & CAPSA_START_DETACHED) ? NULL : &watch;
    pthread_mutex_lock(&ctx->lock);
    rc = need_exe(ctx, err);
    if (rc == 0)
        rc = capsa_sandbox_create_named(ctx->store, &co, err);
    pthread_mutex_unlock(&ctx->lock);
    if (rc < 0) {
        if (watch >= 0)
            close(watch);
        json_decref(doc);
        return NULL;
    }
    capsa_sandbox *sb = handle_new(ctx, name, watch, err);
    json_decref(doc);
    return sb;
}

capsa_sandbox *capsa_sandbox_start(capsa_ctx *ctx, const char *name, unsigned flags, capsa_err *err)
{
    int watch = -1, rc;

    if (!ctx || !name) {
        capsa_err_set(err, EINVAL, "%s: NULL", !ctx ? "ctx" : "name");
        return NULL;
    }
    if (check_flags(flags, CAPSA_START_DETACHED, err) < 0 ||
        capsa_store_check_name("sandbox name", name, err) < 0)
        return NULL;
    pthread_mutex_lock(&ctx->lock);
    rc = need_exe(ctx, err);
    if (rc == 0)
        rc = capsa_sandbox_start_attached(
            ctx->store, name, (flags & CAPSA_START_DETACHED) ? NULL : &watch, NULL, err);
    pthread_mutex_unlock(&ctx->lock);
    if (rc < 0)
        return NULL;
    return handle_new(ctx, name, watch, err);
}

capsa_sandbox *capsa_sandbox_get(capsa_ctx *ctx, const char *name, capsa_err *err)
{
    struct capsa_store_sandbox row = {0};
    int rc;

    if (!ctx || !name) {
        capsa_err_set(err, EINVAL, "%s: NULL", !ctx ? "ctx" : "name");
        return NULL;
    }
    if (capsa_store_check_name("sandbox name", name, err) < 0)
        return NULL;
    pthread_mutex_lock(&ctx->lock);
    rc = capsa_store_sandbox_get(ctx->store, name, &row, err);
    pthread_mutex_unlock(&ctx->lock);
    capsa_store_sandbox_clear(&row);
    if (rc < 0)
        return NULL;
    return handle_new(ctx, name, -1, err);
}

const char *capsa_sandbox_name(const capsa_sandbox *sb)
{
    return sb ? sb->name : NULL;
}

int capsa_sandbox_attached(const capsa_sandbox *sb)
{
    return sb && sb->watch_fd >= 0;
}

static void unwatch(capsa_sandbox *sb)
{
    if (sb->watch_fd >= 0)
        close(sb->watch_fd);
    sb->watch_fd = -1;
}

int capsa_sandbox_detach(capsa_sandbox *sb, capsa_err *err)
{
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct pipe_guard g;
    int rc;

    if (!sb)
        return capsa_err_set(err, EINVAL, "sandbox: NULL handle");
    if (sb->watch_fd < 0)
        return 0;
    pthread_mutex_lock(&sb->ctx->lock);
    rc = capsa_ctl_connect_name(sb->ctx->store, sb->name, &conn, err);
    pthread_mutex_unlock(&sb->ctx->lock);
    if (rc < 0)
        return capsa_err_prefix(err, "detach");
    pipe_guard_on(&g);
    rc = capsa_ctl_request(&conn, "detach", NULL, 10000, NULL, err);
    pipe_guard_off(&g);
    capsa_ctl_close(&conn);
    if (rc < 0)
        return capsa_err_prefix(err, "detach %s", sb->name);
    unwatch(sb);
    return 0;
}

int capsa_sandbox_stop(capsa_sandbox *sb, int timeout_ms, capsa_err *err)
{
    struct pipe_guard g;
    int rc;

    if (!sb)
        return capsa_err_set(err, EINVAL, "sandbox: NULL handle");
    pipe_guard_on(&g);
    pthread_mutex_lock(&sb->ctx->lock);
    rc = capsa_sandbox_stop_named(sb->ctx->store, sb->name, timeout_ms == 0,
                                  timeout_ms < 0 ? -1 : timeout_ms, NULL, err);
    pthread_mutex_unlock(&sb->ctx->lock);
    pipe_guard_off(&g);
    if (rc == 0)
        unwatch(sb);
    return rc;
}

int capsa_sandbox_remove(capsa_sandbox *sb, unsigned flags, capsa_err *err)
{
    struct pipe_guard g;
    int rc;

    if (!sb)
        return capsa_err_set(err, EINVAL, "sandbox: NULL handle");
    if (check_flags(flags, CAPSA_FORCE, err) < 0)
        return -1;
    pipe_guard_on(&g);
    pthread_mutex_lock(&sb->ctx->lock);
    rc = capsa_sandbox_remove_named(sb->ctx->store, sb->name, flags & CAPSA_FORCE, err);
    pthread_mutex_unlock(&sb->ctx->lock);
    pipe_guard_off(&g);
    if (rc == 0)
        unwatch(sb);
    return rc;
}

void capsa_sandbox_release(capsa_sandbox *sb)
{
    if (!sb)
        return;
    unwatch(sb);
    free(sb->name);
    free(sb);
}

int capsa_sandbox_status(capsa_sandbox *sb, struct capsa_sandbox_info *info, capsa_err *err)
{
    struct capsa_store_sandbox row = {0};
    const char *st;
    int rc;

    if (!sb || !info)
        return capsa_err_set(err, EINVAL, "%s: NULL", !sb ? "sandbox" : "info");
    memset(info, 0, sizeof(*info));
    pthread_mutex_lock(&sb->ctx->lock);
    rc = capsa_sandbox_reap(sb->ctx->store, err);
    if (rc == 0)
        rc = capsa_store_sandbox_get(sb->ctx->store, sb->name, &row, err);
    pthread_mutex_unlock(&sb->ctx->lock);
    if (rc < 0) {
        capsa_store_sandbox_clear(&row);
        return -1;
    }
    snprintf(info->name, sizeof(info->name), "%s", sb->name);
    info->state = (enum capsa_state)row.status;
    st = capsa_sandbox_status_name(row.status);
    snprintf(info->status, sizeof(info->status), "%s", st ? st : "unknown");
    info->supervisor_pid = (CAPSA_SB_ACTIVE & (1u << row.status)) ? (int)row.supervisor_pid : 0;
    info->attached = sb->watch_fd >= 0;
    snprintf(info->last_error, sizeof(info->last_error), "%s",
             row.last_error ? row.last_error : "");
    capsa_store_sandbox_clear(&row);
    return 0;
}

/* ---- exec -------------------------------------------------------------------------------- */

struct sink {
    int fd;
    char *buf;
    size_t len, cap, max;
    bool truncated, nomem;
};

/* Reader thread: drains the command's stdout and stderr pipes until both reach EOF, keeping at
 * most max bytes of each (the rest is read and dropped, so the writer never blocks forever). */
static void *drain_main(void *arg)
{
    struct sink *s = arg;
    char tmp[65536];

    for (;;) {
        struct pollfd pf[2];
        int n = 0, idx[2];

        for (int i = 0; i < 2; i++)
            if (s[i].fd >= 0) {
                idx[n] = i;
                pf[n++] = (struct pollfd){.fd = s[i].fd, .events = POLLIN};
            }
        if (!n)
            return NULL;
        if (poll(pf, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            return NULL;
        }
        for (int k = 0; k < n; k++) {
            struct sink *o = &s[idx[k]];
            ssize_t r;
            size_t take;

            if (!pf[k].revents)
                continue;
            r = read(o->fd, tmp, sizeof(tmp));
            if (r < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (r <= 0) {
                close(o->fd);
                o->fd = -1;
                continue;
            }
            take = (size_t)r;
            if (take > o->max - o->len) {
                take = o->max - o->len;
                o->truncated = true;
            }
            if (take && o->len + take + 1 > o->cap) {
                size_t cap = o->cap ? o->cap : 4096;
                char *nb;
                while (cap < o->len + take + 1)
                    cap *= 2;
                if (cap > o->max + 1)
                    cap = o->max + 1;
                nb = realloc(o->buf, cap);
                if (!nb) {
                    o->nomem = o->truncated = true;
                    take = 0;
                } else {
                    o->buf = nb;
                    o->cap = cap;
                }
            }
            if (take) {
                memcpy(o->buf + o->len, tmp, take);
                o->len += take;
            }
        }
    }
}

static int check_exec_args(const capsa_sandbox *sb, const char *const argv[],
                           const struct capsa_exec_req *req, const struct capsa_exec_out *out,
                           capsa_err *err)
{
    size_t n = 0;

    if (!sb)
        return capsa_err_set(err, EINVAL, "sandbox: NULL handle");
    if (!out)
        return capsa_err_set(err, EINVAL, "out: NULL (expected a struct capsa_exec_out)");
    if (!argv || !argv[0] || !argv[0][0])
        return capsa_err_set(err, EINVAL,
                             "argv: expected a NULL-terminated array whose argv[0] is a "
                             "non-empty program name");
    while (argv[n])
        if (++n > MAX_ARGS)
            return capsa_err_set(err, E2BIG, "argv: more than %d arguments", MAX_ARGS);
    if (!req)
        return 0;
    n = 0;
    for (const char *const *e = req->env; e && *e; e++, n++) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e)
            return capsa_err_set(err, EINVAL, "req.env[%zu] '%.64s': expected KEY=VALUE", n, *e);
        if (n >= MAX_ARGS)
            return capsa_err_set(err, E2BIG, "req.env: more than %d entries", MAX_ARGS);
    }
    if (req->cwd && req->cwd[0] != '/')
        return capsa_err_set(err, EINVAL, "req.cwd '%.64s': must be an absolute path", req->cwd);
    if (req->user && !req->user[0])
        return capsa_err_set(err, EINVAL, "req.user: empty (NULL means the sandbox default)");
    if (!req->stdin_data && req->stdin_len)
        return capsa_err_set(err, EINVAL, "req.stdin_data: NULL with a stdin_len of %zu",
                             req->stdin_len);
    return 0;
}

/* The caller's stdin bytes in a memfd: poll says readable, reads end with EOF. */
static int stdin_memfd(const void *data, size_t len, capsa_err *err)
{
    _cleanup_close_ int fd = memfd_create("capsa-exec-stdin", MFD_CLOEXEC);
    const char *p = data;

    if (fd < 0)
        return capsa_err_set(err, errno, "memfd_create: %s", strerror(errno));
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return capsa_err_set(err, errno ? errno : EIO, "buffering stdin: %s",
                                 strerror(errno ? errno : EIO));
        p += w;
        len -= (size_t)w;
    }
    if (lseek(fd, 0, SEEK_SET) < 0)
        return capsa_err_set(err, errno, "lseek: %s", strerror(errno));
    return steal_fd(&fd);
}

static void take_sink(struct sink *s, char **data, size_t *len, int *truncated)
{
    if (!s->buf)
        s->buf = calloc(1, 1);
    if (s->buf)
        s->buf[s->len] = '\0';
    *data = s->buf;
    *len = s->buf ? s->len : 0;
    *truncated = s->truncated;
    s->buf = NULL;
}

int capsa_sandbox_exec(capsa_sandbox *sb, const char *const argv[],
                       const struct capsa_exec_req *req, struct capsa_exec_out *out, capsa_err *err)
{
    static const struct capsa_exec_req dflt = {0};
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct capsa_exec_opts o = {0};
    struct capsa_exec_result res;
    struct sink sinks[2] = {{.fd = -1}, {.fd = -1}};
    _cleanup_close_ int in_fd = -1, out_w = -1, err_w = -1;
    struct pipe_guard g;
    pthread_t th;
    bool thread = false;
    int po[2], pe[2], rc = -1;

    if (out)
        memset(out, 0, sizeof(*out));
    if (check_exec_args(sb, argv, req, out, err) < 0)
        return -1;
    if (!req)
        req = &dflt;
    out->exit_code = 1;
    pthread_mutex_lock(&sb->ctx->lock);
    rc = capsa_ctl_connect_name(sb->ctx->store, sb->name, &conn, err);
    pthread_mutex_unlock(&sb->ctx->lock);
    if (rc < 0)
        return capsa_err_prefix(err, "exec");
    rc = -1;
    pipe_guard_on(&g);
    if (req->stdin_data && (in_fd = stdin_memfd(req->stdin_data, req->stdin_len, err)) < 0)
        goto out;
    if (pipe2(po, O_CLOEXEC) < 0) {
        capsa_err_set(err, errno, "pipe: %s", strerror(errno));
        goto out;
    }
    sinks[0].fd = po[0];
    out_w = po[1];
    if (pipe2(pe, O_CLOEXEC) < 0) {
        capsa_err_set(err, errno, "pipe: %s", strerror(errno));
        goto out;
    }
    sinks[1].fd = pe[0];
    err_w = pe[1];
    for (int i = 0; i < 2; i++)
        sinks[i].max = req->max_output ? req->max_output : CAPSA_EXEC_OUTPUT_MAX;
    if ((errno = pthread_create(&th, NULL, drain_main, sinks)) != 0) {
        capsa_err_set(err, errno, "pthread_create: %s", strerror(errno));
        goto out;
    }
    thread = true;
    o.argv = (char *const *)argv;
    o.env = (char *const *)req->env;
    o.cwd = req->cwd;
    o.user = req->user;
    o.stdin_fd = in_fd;
    o.stdout_fd = out_w;
    o.stderr_fd = err_w;
    o.timeout_ms = req->timeout_ms;
    o.signal_fd = o.winsize_fd = o.detach_key = -1;
    if (capsa_exec_run(&conn.ch, &o, &res, err) < 0) {
        capsa_err_prefix(err, "exec '%s' in %s", argv[0], sb->name);
        goto out;
    }
    out->exit_code = capsa_exec_exit_status(&res);
    out->signal = res.signal;
    out->timed_out = res.end == CAPSA_EXEC_TIMEOUT;
    if (res.end == CAPSA_EXEC_FAILED) {
        int code = !strcmp(res.fail_kind, "not_found")           ? ENOENT
                   : !strcmp(res.fail_kind, "permission_denied") ? EACCES
                                                                 : EIO;
        capsa_err_set(err, code, "exec '%s' in %s: could not start: %s", argv[0], sb->name,
                      res.message[0] ? res.message : res.fail_kind);
        goto out;
    }
    rc = 0;
out:
    capsa_ctl_close(&conn); /* ends the session in the guest if it is still running */
    if (out_w >= 0)
        close(steal_fd(&out_w));
    if (err_w >= 0)
        close(steal_fd(&err_w));
    if (thread)
        pthread_join(th, NULL);
    for (int i = 0; i < 2; i++)
        if (sinks[i].fd >= 0)
            close(sinks[i].fd);
    pipe_guard_off(&g);
    take_sink(&sinks[0], &out->stdout_data, &out->stdout_len, &out->stdout_truncated);
    take_sink(&sinks[1], &out->stderr_data, &out->stderr_len, &out->stderr_truncated);
    if (rc == 0 && (sinks[0].nomem || sinks[1].nomem || !out->stdout_data || !out->stderr_data)) {
        rc = capsa_err_set(err, ENOMEM, "exec: out of memory buffering the output");
    }
    return rc;
}

void capsa_exec_out_free(struct capsa_exec_out *out)
{
    if (!out)
        return;
    free(out->stdout_data);
    free(out->stderr_data);
    out->stdout_data = out->stderr_data = NULL;
    out->stdout_len = out->stderr_len = 0;
}
