/* api.c - the public libcapsa API of include/capsa.h: contexts, sandbox handles, listing, exec
 * (buffered and streaming) and file operations.
 *
 * Theory of operation: a capsa_ctx is an open store ($CAPSA_HOME/capsa.db) behind a mutex; a
 * capsa_sandbox is a name plus, when the handle started the sandbox attached, the write end of
 * its supervisor's parent-watch pipe (src/supervisor/sandbox.h). Lifecycle calls wrap the
 * *_named functions of the supervisor layer; exec connects to the sandbox's control socket
 * (client.h) and runs one capsa_exec_run() session whose stdout and stderr go to pipes drained
 * by a helper thread into bounded buffers, and whose stdin is a sealed memfd holding the
 * caller's bytes. Streaming exec runs that session in a helper thread while the calling thread
 * drains the pipes into the caller's callbacks. File operations are capsa_fsc_*() calls on a
 * control connection; every field of the guest's replies is checked before it is handed out.
 * SIGPIPE is blocked in the calling thread while the library writes to
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
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "capsa.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "common/paths.h"
#include "image/image.h"
#include "lib/exec.h"
#include "lib/fsc.h"
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
    return capsa_sandbox_create2(ctx, spec_json, flags, NULL, err);
}

capsa_sandbox *capsa_sandbox_create2(capsa_ctx *ctx, const char *spec_json, unsigned flags,
                                     const struct capsa_create_opts *opts, capsa_err *err)
{
    struct capsa_sandbox_create_opts co = {0};
    struct capsa_image_pull_opts po = {0};
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
    if (opts) {
        struct stat st;
        if (opts->pull_timeout_s < 0 || opts->pull_timeout_s > 86400) {
            capsa_err_set(err, EINVAL, "opts.pull_timeout_s: %ld is not between 0 and 86400",
                          opts->pull_timeout_s);
            return NULL;
        }
        if (opts->ca_certs &&
            (!opts->ca_certs[0] || stat(opts->ca_certs, &st) < 0 || !S_ISREG(st.st_mode))) {
            capsa_err_set(err, EINVAL, "opts.ca_certs '%.256s': expected a PEM file",
                          opts->ca_certs);
            return NULL;
        }
        po.insecure = opts->insecure;
        po.ca_certs = opts->ca_certs;
        po.timeout_s = opts->pull_timeout_s;
        po.refresh = opts->force_pull;
        co.pull = &po;
    }
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

/* The root of a stored spec: the (pinned) OCI reference, the Bind directory or the disk image
 * path; else the store's image reference; else "". */
static void root_of(const struct capsa_store_sandbox *row, char *buf, size_t len)
{
    json_t *cfg = row->config_json ? json_loads(row->config_json, 0, NULL) : NULL;
    json_t *img = json_object_get(cfg, "image");
    const char *r = json_string_value(json_object_get(img, "Bind"));

    if (!r)
        r = json_string_value(json_object_get(json_object_get(img, "Oci"), "reference"));
    if (!r)
        r = json_string_value(json_object_get(json_object_get(img, "DiskImage"), "path"));
    if (!r)
        r = row->image_ref;
    snprintf(buf, len, "%s", r ? r : "");
    json_decref(cfg);
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
    root_of(&row, info->image, sizeof(info->image));
    info->created_ms = row.created_at;
    info->started_ms = row.started_at;
    info->stopped_ms = row.stopped_at;
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

/* ---- listing ----------------------------------------------------------------------------- */

void capsa_sandbox_names_free(char **names)
{
    if (!names)
        return;
    for (char **p = names; *p; p++)
        free(*p);
    free(names);
}

static void labels_free(struct capsa_store_label *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(l[i].key); /* value points into the same allocation */
    free(l);
}

/* "k=v,k2,k3=v3" -> labels (value NULL for a bare key). */
static int parse_selector(const char *sel, struct capsa_store_label **out, size_t *n,
                          capsa_err *err)
{
    struct capsa_store_label *l = NULL;
    size_t cnt = 0;
    const char *p = sel;

    *out = NULL;
    *n = 0;
    if (!sel || !*sel)
        return 0;
    if (strlen(sel) > 65536)
        return capsa_err_set(err, E2BIG, "label_selector: longer than 65536 bytes");
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *term = strndup(p, len), *eq;
        struct capsa_store_label *nl;

        if (!term) {
            labels_free(l, cnt);
            return capsa_err_set(err, ENOMEM, "out of memory");
        }
        eq = strchr(term, '=');
        if (eq)
            *eq = '\0';
        if (!term[0] || capsa_store_check_label(term, eq ? eq + 1 : "", err) < 0) {
            if (!term[0])
                capsa_err_set(err, EINVAL, "label_selector term %zu: empty key", cnt + 1);
            else
                capsa_err_prefix(err, "label_selector term %zu", cnt + 1);
            free(term);
            labels_free(l, cnt);
            return -1;
        }
        nl = realloc(l, (cnt + 1) * sizeof(*l));
        if (!nl) {
            free(term);
            labels_free(l, cnt);
            return capsa_err_set(err, ENOMEM, "out of memory");
        }
        l = nl;
        l[cnt].key = term;
        l[cnt++].value = eq ? eq + 1 : NULL;
        if (!comma)
            break;
        p = comma + 1;
    }
    *out = l;
    *n = cnt;
    return 0;
}

int capsa_sandbox_list(capsa_ctx *ctx, const char *label_selector, char ***names, size_t *n,
                       capsa_err *err)
{
    struct capsa_store_sandbox_filter f = {0};
    struct capsa_store_label *labels = NULL;
    struct capsa_store_sandbox *rows = NULL;
    size_t nrows = 0, nl = 0;
    char **v;
    int rc;

    if (names)
        *names = NULL;
    if (n)
        *n = 0;
    if (!ctx || !names || !n)
        return capsa_err_set(err, EINVAL, "%s: NULL", !ctx ? "ctx" : !names ? "names" : "n");
    if (parse_selector(label_selector, &labels, &nl, err) < 0)
        return -1;
    f.labels = labels;
    f.n_labels = nl;
    pthread_mutex_lock(&ctx->lock);
    rc = capsa_sandbox_reap(ctx->store, err);
    if (rc == 0)
        rc = capsa_store_sandbox_list(ctx->store, &f, &rows, &nrows, err);
    pthread_mutex_unlock(&ctx->lock);
    labels_free(labels, nl);
    if (rc < 0)
        return capsa_err_prefix(err, "listing sandboxes");
    v = calloc(nrows + 1, sizeof(*v));
    for (size_t i = 0; v && i < nrows; i++)
        if (!(v[i] = strdup(rows[i].name))) {
            capsa_sandbox_names_free(v);
            v = NULL;
        }
    capsa_store_sandboxes_free(rows, nrows);
    if (!v)
        return capsa_err_set(err, ENOMEM, "out of memory");
    *names = v;
    *n = nrows;
    return 0;
}

/* ---- control connections ----------------------------------------------------------------- */

static int sb_connect(capsa_sandbox *sb, struct capsa_ctl_conn *conn, const char *what,
                      capsa_err *err)
{
    int rc;

    pthread_mutex_lock(&sb->ctx->lock);
    rc = capsa_ctl_connect_name(sb->ctx->store, sb->name, conn, err);
    pthread_mutex_unlock(&sb->ctx->lock);
    if (rc < 0)
        return capsa_err_prefix(err, "%s", what);
    return 0;
}

/* ---- streaming exec ---------------------------------------------------------------------- */

struct stream_run {
    struct capsa_ctl_conn *conn;
    struct capsa_exec_opts o;
    struct capsa_exec_result res;
    capsa_err err;
    int rc;
    int out_w, err_w; /* closed by the thread once the session is over */
};

static void *stream_main(void *arg)
{
    struct stream_run *r = arg;

    r->rc = capsa_exec_run(&r->conn->ch, &r->o, &r->res, &r->err);
    close(r->out_w);
    close(r->err_w);
    return NULL;
}

int capsa_sandbox_exec_stream(capsa_sandbox *sb, const char *const argv[],
                              const struct capsa_exec_req *req,
                              const struct capsa_exec_callbacks *cb, int *exit_code, int *signal,
                              capsa_err *err)
{
    static const struct capsa_exec_req dflt = {0};
    static const struct capsa_exec_out dummy_out = {0};
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct stream_run r = {.out_w = -1, .err_w = -1};
    _cleanup_close_ int in_fd = -1, out_r = -1, err_r = -1;
    struct pipe_guard g;
    pthread_t th;
    bool cancelled = false;
    int po[2], pe[2], rc = -1;
    char buf[65536];

    if (exit_code)
        *exit_code = 1;
    if (signal)
        *signal = 0;
    if (!cb && sb)
        return capsa_err_set(err, EINVAL, "cb: NULL (expected struct capsa_exec_callbacks)");
    if (check_exec_args(sb, argv, req, &dummy_out, err) < 0)
        return -1;
    if (!req)
        req = &dflt;
    if (sb_connect(sb, &conn, "exec", err) < 0)
        return -1;
    pipe_guard_on(&g); /* the session thread inherits the mask */
    if (req->stdin_data && (in_fd = stdin_memfd(req->stdin_data, req->stdin_len, err)) < 0)
        goto out;
    if (pipe2(po, O_CLOEXEC) < 0) {
        capsa_err_set(err, errno, "pipe: %s", strerror(errno));
        goto out;
    }
    out_r = po[0];
    r.out_w = po[1];
    if (pipe2(pe, O_CLOEXEC) < 0) {
        capsa_err_set(err, errno, "pipe: %s", strerror(errno));
        close(r.out_w);
        goto out;
    }
    err_r = pe[0];
    r.err_w = pe[1];
    r.conn = &conn;
    r.o.argv = (char *const *)argv;
    r.o.env = (char *const *)req->env;
    r.o.cwd = req->cwd;
    r.o.user = req->user;
    r.o.stdin_fd = in_fd;
    r.o.stdout_fd = r.out_w;
    r.o.stderr_fd = r.err_w;
    r.o.timeout_ms = req->timeout_ms;
    r.o.signal_fd = r.o.winsize_fd = r.o.detach_key = -1;
    if ((errno = pthread_create(&th, NULL, stream_main, &r)) != 0) {
        capsa_err_set(err, errno, "pthread_create: %s", strerror(errno));
        close(r.out_w);
        close(r.err_w);
        goto out;
    }
    /* deliver output until both pipes reach EOF (the thread closes them when it is done) */
    while (out_r >= 0 || err_r >= 0) {
        struct pollfd pf[2] = {{.fd = out_r, .events = POLLIN}, {.fd = err_r, .events = POLLIN}};
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            int *fd = i ? &err_r : &out_r;
            int (*fn)(const void *, size_t, void *) = i ? cb->on_stderr : cb->on_stdout;
            ssize_t n;

            if (*fd < 0 || !pf[i].revents)
                continue;
            n = read(*fd, buf, sizeof(buf));
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            if (n <= 0) {
                close(*fd);
                *fd = -1;
                continue;
            }
            if (!cancelled && fn && fn(buf, (size_t)n, cb->ud) != 0) {
                cancelled = true;
                /* the session fails at once; closing the connection kills the command */
                shutdown(conn.ch.fd, SHUT_RDWR);
            }
        }
    }
    pthread_join(th, NULL);
    if (cancelled) {
        capsa_err_set(err, ECANCELED, "exec '%s' in %s: cancelled by a callback", argv[0],
                      sb->name);
        goto out;
    }
    if (r.rc < 0) {
        if (err)
            *err = r.err;
        capsa_err_prefix(err, "exec '%s' in %s", argv[0], sb->name);
        goto out;
    }
    if (exit_code)
        *exit_code = capsa_exec_exit_status(&r.res);
    if (signal)
        *signal = r.res.signal;
    if (r.res.end == CAPSA_EXEC_FAILED) {
        int code = !strcmp(r.res.fail_kind, "not_found")           ? ENOENT
                   : !strcmp(r.res.fail_kind, "permission_denied") ? EACCES
                                                                   : EIO;
        capsa_err_set(err, code, "exec '%s' in %s: could not start: %s", argv[0], sb->name,
                      r.res.message[0] ? r.res.message : r.res.fail_kind);
        goto out;
    }
    rc = 0;
out:
    capsa_ctl_close(&conn);
    pipe_guard_off(&g);
    return rc;
}

/* ---- files ------------------------------------------------------------------------------- */

#define FS_PATH_MAX    4095
#define FS_LIST_MAX    100000
#define FS_DEFAULT_MAX (1ull << 30)

static int check_path(const char *what, const char *path, capsa_err *err)
{
    size_t len;

    if (!path)
        return capsa_err_set(err, EINVAL, "%s: NULL (expected an absolute guest path)", what);
    if (path[0] != '/')
        return capsa_err_set(err, EINVAL, "%s '%.200s': must be an absolute guest path", what,
                             path);
    len = strnlen(path, FS_PATH_MAX + 1);
    if (len > FS_PATH_MAX)
        return capsa_err_set(err, ENAMETOOLONG, "%s: longer than %d bytes", what, FS_PATH_MAX);
    return 0;
}

/* Connect for an fs op on path, with the argument checks every op shares. */
static int fs_begin(capsa_sandbox *sb, const char *path, struct capsa_ctl_conn *conn,
                    struct pipe_guard *g, capsa_err *err)
{
    if (!sb)
        return capsa_err_set(err, EINVAL, "sandbox: NULL handle");
    if (check_path("path", path, err) < 0)
        return -1;
    if (sb_connect(sb, conn, "fs", err) < 0)
        return -1;
    pipe_guard_on(g);
    return 0;
}

static void fs_end(struct capsa_ctl_conn *conn, struct pipe_guard *g)
{
    capsa_ctl_close(conn);
    pipe_guard_off(g);
}

int capsa_fs_read(capsa_sandbox *sb, const char *path, uint8_t **data, size_t *len, size_t max,
                  capsa_err *err)
{
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct pipe_guard g;
    int rc;

    if (data)
        *data = NULL;
    if (len)
        *len = 0;
    if (!data || !len)
        return capsa_err_set(err, EINVAL, "%s: NULL", !data ? "data" : "len");
    if (fs_begin(sb, path, &conn, &g, err) < 0)
        return -1;
    if (max == 0 || max > FS_DEFAULT_MAX)
        max = FS_DEFAULT_MAX;
    rc = capsa_fsc_read_max(&conn.ch, path, max, data, len, err);
    fs_end(&conn, &g);
    if (rc < 0) {
        if (err && err->code == EFBIG)
            capsa_err_set(err, EFBIG, "fs read %.200s: larger than max (%zu bytes)", path, max);
        return -1;
    }
    if (*len > max) { /* capsa_fsc_read_max bounds it; belt and braces */
        free(*data);
        *data = NULL;
        *len = 0;
        return capsa_err_set(err, EFBIG, "fs read %.200s: larger than max (%zu bytes)", path, max);
    }
    return 0;
}

int capsa_fs_write(capsa_sandbox *sb, const char *path, const void *data, size_t len, int mode,
                   capsa_err *err)
{
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct pipe_guard g;
    int rc;

    if (!data && len)
        return capsa_err_set(err, EINVAL, "data: NULL with a len of %zu", len);
    if (mode > 07777)
        return capsa_err_set(err, EINVAL, "mode: 0%o has bits beyond 07777", (unsigned)mode);
    if (fs_begin(sb, path, &conn, &g, err) < 0)
        return -1;
    rc = capsa_fsc_write(&conn.ch, path, data ? data : "", len, mode < 0 ? 0644 : mode, err);
    fs_end(&conn, &g);
    return rc;
}

static int kind_parse(const char *s, enum capsa_file_kind *k)
{
    if (!s)
        return -1;
    if (!strcmp(s, "file"))
        *k = CAPSA_FILE_REGULAR;
    else if (!strcmp(s, "dir"))
        *k = CAPSA_FILE_DIR;
    else if (!strcmp(s, "symlink"))
        *k = CAPSA_FILE_SYMLINK;
    else if (!strcmp(s, "other"))
        *k = CAPSA_FILE_OTHER;
    else
        return -1;
    return 0;
}

/* An integer member of a guest reply within [lo, hi]; missing is an error unless optional. */
static int reply_int(json_t *o, const char *key, json_int_t lo, json_int_t hi, bool optional,
                     json_int_t *v, const char *ctx, capsa_err *err)
{
    json_t *j = json_object_get(o, key);

    *v = 0;
    if (!j && optional)
        return 0;
    if (!json_is_integer(j) || json_integer_value(j) < lo || json_integer_value(j) > hi)
        return capsa_err_set(err, EPROTO,
                             "%s: guest sent a bad %s (expected an integer in "
                             "[%lld, %lld])",
                             ctx, key, (long long)lo, (long long)hi);
    *v = json_integer_value(j);
    return 0;
}

#define MTIME_LIM ((json_int_t)1 << 40)

int capsa_fs_stat(capsa_sandbox *sb, const char *path, struct capsa_file_stat *st, capsa_err *err)
{
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct pipe_guard g;
    json_t *res = NULL;
    json_int_t size, mode, uid, gid, mtime;
    char ctx[256];
    int rc;

    if (!st)
        return capsa_err_set(err, EINVAL, "st: NULL (expected a struct capsa_file_stat)");
    memset(st, 0, sizeof(*st));
    if (fs_begin(sb, path, &conn, &g, err) < 0)
        return -1;
    rc = capsa_fsc_stat(&conn.ch, path, &res, err);
    fs_end(&conn, &g);
    if (rc < 0)
        return -1;
    snprintf(ctx, sizeof(ctx), "fs stat %.200s", path);
    if (!json_is_object(res) ||
        kind_parse(json_string_value(json_object_get(res, "kind")), &st->kind) < 0)
        rc = capsa_err_set(err, EPROTO, "%s: guest sent a bad kind", ctx);
    else if (reply_int(res, "size", 0, INT64_MAX, false, &size, ctx, err) < 0 ||
             reply_int(res, "mode", 0, 07777, false, &mode, ctx, err) < 0 ||
             reply_int(res, "uid", 0, UINT32_MAX, true, &uid, ctx, err) < 0 ||
             reply_int(res, "gid", 0, UINT32_MAX, true, &gid, ctx, err) < 0 ||
             reply_int(res, "mtime", -MTIME_LIM, MTIME_LIM, false, &mtime, ctx, err) < 0)
        rc = -1;
    else {
        st->size = (uint64_t)size;
        st->mode = (uint32_t)mode;
        st->uid = (uint32_t)uid;
        st->gid = (uint32_t)gid;
        st->mtime = mtime;
    }
    json_decref(res);
    if (rc < 0)
        memset(st, 0, sizeof(*st));
    return rc;
}

void capsa_fs_list_free(struct capsa_dir_entry *entries, size_t n)
{
    if (!entries)
        return;
    for (size_t i = 0; i < n; i++)
        free(entries[i].name);
    free(entries);
}

static int entry_parse(json_t *e, size_t i, struct capsa_dir_entry *d, const char *path,
                       capsa_err *err)
{
    const char *name = json_string_value(json_object_get(e, "name"));
    json_int_t size, mode, mtime;
    char ctx[256];

    snprintf(ctx, sizeof(ctx), "fs list %.200s: entry %zu", path, i);
    if (!json_is_object(e))
        return capsa_err_set(err, EPROTO, "%s: not an object", ctx);
    if (!name || !name[0] || json_string_length(json_object_get(e, "name")) > 255 ||
        strlen(name) != json_string_length(json_object_get(e, "name")) || strchr(name, '/') ||
        !strcmp(name, ".") || !strcmp(name, ".."))
        return capsa_err_set(err, EPROTO,
                             "%s: guest sent a bad name (expected one path "
                             "component of 1..255 bytes)",
                             ctx);
    if (kind_parse(json_string_value(json_object_get(e, "kind")), &d->kind) < 0)
        return capsa_err_set(err, EPROTO, "%s: guest sent a bad kind", ctx);
    if (reply_int(e, "size", 0, INT64_MAX, false, &size, ctx, err) < 0 ||
        reply_int(e, "mode", 0, 07777, false, &mode, ctx, err) < 0 ||
        reply_int(e, "mtime", -MTIME_LIM, MTIME_LIM, false, &mtime, ctx, err) < 0)
        return -1;
    if (!(d->name = strdup(name)))
        return capsa_err_set(err, ENOMEM, "out of memory");
    d->size = (uint64_t)size;
    d->mode = (uint32_t)mode;
    d->mtime = mtime;
    return 0;
}

int capsa_fs_list(capsa_sandbox *sb, const char *path, struct capsa_dir_entry **entries, size_t *n,
                  int *truncated, capsa_err *err)
{
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct pipe_guard g;
    struct capsa_dir_entry *v;
    json_t *arr = NULL, *res = NULL, *req;
    size_t cnt;
    int rc;

    if (entries)
        *entries = NULL;
    if (n)
        *n = 0;
    if (truncated)
        *truncated = 0;
    if (!entries || !n)
        return capsa_err_set(err, EINVAL, "%s: NULL", !entries ? "entries" : "n");
    if (fs_begin(sb, path, &conn, &g, err) < 0)
        return -1;
    req = json_pack("{s:s, s:s}", "op", "list", "path", path);
    rc = req ? capsa_fsc_simple(&conn.ch, req, &res, err)
             : capsa_err_set(err, ENOMEM, "out of memory");
    json_decref(req);
    fs_end(&conn, &g);
    if (rc < 0)
        return -1;
    arr = json_object_get(res, "entries");
    if (!json_is_array(arr)) {
        json_decref(res);
        return capsa_err_set(err, EPROTO, "fs list %.200s: guest sent no entries array", path);
    }
    cnt = json_array_size(arr);
    if (cnt > FS_LIST_MAX) {
        json_decref(res);
        return capsa_err_set(err, EPROTO, "fs list %.200s: guest sent more than %d entries", path,
                             FS_LIST_MAX);
    }
    v = calloc(cnt + 1, sizeof(*v));
    if (!v) {
        json_decref(res);
        return capsa_err_set(err, ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < cnt; i++)
        if (entry_parse(json_array_get(arr, i), i, &v[i], path, err) < 0) {
            capsa_fs_list_free(v, cnt);
            json_decref(res);
            return -1;
        }
    if (truncated)
        *truncated = json_is_true(json_object_get(res, "truncated"));
    json_decref(res);
    *entries = v;
    *n = cnt;
    return 0;
}

int capsa_fs_mkdir(capsa_sandbox *sb, const char *path, int mode, bool parents, capsa_err *err)
{
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct pipe_guard g;
    json_t *res = NULL;
    int rc = 0;

    if (mode > 07777)
        return capsa_err_set(err, EINVAL, "mode: 0%o has bits beyond 07777", (unsigned)mode);
    if (fs_begin(sb, path, &conn, &g, err) < 0)
        return -1;
    if (!parents) {
        /* the guest's mkdir is mkdir -p: check what plain mkdir would refuse first */
        char parent[FS_PATH_MAX + 1];
        size_t len = strlen(path);
        capsa_err e2 = {0};

        memcpy(parent, path, len + 1);
        while (len > 1 && parent[len - 1] == '/')
            parent[--len] = '\0';
        char *slash = strrchr(parent, '/');
        if (slash == parent)
            slash[1] = '\0';
        else
            *slash = '\0';
        if (capsa_fsc_stat(&conn.ch, parent, &res, err) < 0) {
            rc = capsa_err_prefix(err, "fs mkdir %.200s: parent", path);
        } else if (strcmp(json_string_value(json_object_get(res, "kind")) ?: "", "dir")) {
            rc = capsa_err_set(err, ENOTDIR, "fs mkdir %.200s: parent %.200s is not a directory",
                               path, parent);
        } else {
            json_decref(res);
            res = NULL;
            if (capsa_fsc_stat(&conn.ch, path, &res, &e2) == 0)
                rc = capsa_err_set(err, EEXIST, "fs mkdir %.200s: already exists", path);
            else if (e2.code != ENOENT)
                rc = capsa_err_set(err, e2.code ? e2.code : EIO, "%s", e2.msg);
        }
        json_decref(res);
    }
    if (rc == 0)
        rc = capsa_fsc_mkdir(&conn.ch, path, mode < 0 ? 0755 : mode, err);
    fs_end(&conn, &g);
    return rc;
}

int capsa_fs_remove(capsa_sandbox *sb, const char *path, bool recursive, capsa_err *err)
{
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct pipe_guard g;
    int rc;

    if (fs_begin(sb, path, &conn, &g, err) < 0)
        return -1;
    rc = capsa_fsc_remove(&conn.ch, path, recursive, err);
    fs_end(&conn, &g);
    return rc;
}

int capsa_fs_rename(capsa_sandbox *sb, const char *from, const char *to, capsa_err *err)
{
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct pipe_guard g;
    int rc;

    if (sb && check_path("from", from, err) < 0)
        return -1;
    if (sb && check_path("to", to, err) < 0)
        return -1;
    if (fs_begin(sb, from, &conn, &g, err) < 0)
        return -1;
    rc = capsa_fsc_rename(&conn.ch, from, to, err);
    fs_end(&conn, &g);
    return rc;
}
