/* exec.c - exec sessions: spawn (pipes or PTY, user, rlimits, cwd, PATH search),
 * stdin/stdout/stderr pumping, signals, resize and the exit report.
 *
 * Spawning: the parent resolves the user and builds argv/env, forks, and waits on
 * a CLOEXEC pipe: EOF means execve succeeded (exec.started), a struct
 * exec_report means the child failed before running the program (exec.failed
 * with the stage's kind, and no exec.started). The failed child is reaped by the
 * SIGCHLD handler like any orphan.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "users.h"

enum exec_stage {
    STAGE_SETUP = 1, /* fds, session, controlling tty */
    STAGE_RLIMIT,
    STAGE_USER,
    STAGE_CWD,
    STAGE_EXEC,
};

struct exec_report {
    int stage;
    int err;
};

struct spawn {
    char **argv;
    char **env;
    const char *cwd;
    const struct agent_exec_req *req;
    const struct agent_user *user;
    bool switch_user;
    int in_fd, out_fd, err_fd; /* child ends; for a PTY all three are the slave */
    bool tty;
    int report_fd;
};

static void send_failed(struct agent *a, uint32_t id, const char *kind, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void send_failed(struct agent *a, uint32_t id, const char *kind, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    agent_utf8_fix(msg);
    agent_send_json(a, id, CAPSA_MSG_EXEC_FAILED,
                    json_pack("{s:s, s:s}", "kind", kind, "message", msg));
}

static void __attribute__((noreturn)) child_fail(int fd, int stage, int e)
{
    struct exec_report r = {.stage = stage, .err = e};
    ssize_t w = write(fd, &r, sizeof(r));
    (void)w;
    _exit(127);
}

/* Runs in the child: execve argv[0], searching PATH when it has no '/'. */
static int child_execvpe(char **argv, char **env)
{
    const char *path, *p;
    bool eacces = false;
    char buf[PATH_MAX];

    if (strchr(argv[0], '/')) {
        execve(argv[0], argv, env);
        return errno;
    }
    path = agent_env_get(env, "PATH");
    if (!path)
        path = AGENT_DEFAULT_PATH;
    for (p = path;; p++) {
        const char *e = strchrnul(p, ':');
        size_t dl = (size_t)(e - p);
        if (dl == 0) { /* empty element: current directory */
            snprintf(buf, sizeof(buf), "%s", argv[0]);
        } else if (dl + 1 + strlen(argv[0]) + 1 <= sizeof(buf)) {
            memcpy(buf, p, dl);
            buf[dl] = '/';
            strcpy(buf + dl + 1, argv[0]);
        } else {
            goto next;
        }
        execve(buf, argv, env);
        switch (errno) {
        case EACCES:
            eacces = true;
            break;
        case ENOENT:
        case ENOTDIR:
        case ELOOP:
        case ENAMETOOLONG:
        case ENODEV:
        case ETIMEDOUT:
        case ESTALE:
            break;
        default:
            return errno; /* found but failed (ENOEXEC, ETXTBSY, E2BIG, ...) */
        }
    next:
        if (!*e)
            break;
        p = e;
    }
    return eacces ? EACCES : ENOENT;
}

static void __attribute__((noreturn)) child_main(const struct spawn *sp)
{
    const struct agent_exec_req *req = sp->req;
    sigset_t none;
    int e;

    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL); /* SIG_IGN would survive execve */

    if (setsid() < 0)
        child_fail(sp->report_fd, STAGE_SETUP, errno);
    if (sp->tty && ioctl(sp->out_fd, TIOCSCTTY, 0) < 0)
        child_fail(sp->report_fd, STAGE_SETUP, errno);
    /* the child ends are >= 3 (main() keeps 0-2 open), so dup2 never clobbers one */
    if (dup2(sp->in_fd, 0) < 0 || dup2(sp->out_fd, 1) < 0 || dup2(sp->err_fd, 2) < 0)
        child_fail(sp->report_fd, STAGE_SETUP, errno);

    for (size_t i = 0; i < req->n_rlimits; i++) {
        struct rlimit rl = {
            .rlim_cur = req->rlimits[i].soft >= (uint64_t)RLIM_INFINITY ? RLIM_INFINITY
                                                                        : req->rlimits[i].soft,
            .rlim_max = req->rlimits[i].hard >= (uint64_t)RLIM_INFINITY ? RLIM_INFINITY
                                                                        : req->rlimits[i].hard,
        };
        if (setrlimit(req->rlimits[i].resource, &rl) < 0)
            child_fail(sp->report_fd, STAGE_RLIMIT, errno);
    }

    if (sp->switch_user) {
        const struct agent_user *u = sp->user;
        if (geteuid() == 0) {
            if (sp->tty && fchown(1, u->uid, (gid_t)-1) < 0)
                child_fail(sp->report_fd, STAGE_USER, errno);
            if (setgroups(u->n_groups, u->groups) < 0)
                child_fail(sp->report_fd, STAGE_USER, errno);
        }
        if ((u->gid != getegid() || geteuid() == 0) && setgid(u->gid) < 0)
            child_fail(sp->report_fd, STAGE_USER, errno);
        if ((u->uid != geteuid() || getuid() != u->uid) && setuid(u->uid) < 0)
            child_fail(sp->report_fd, STAGE_USER, errno);
    }

    if (chdir(sp->cwd) < 0)
        child_fail(sp->report_fd, STAGE_CWD, errno);

    e = child_execvpe(sp->argv, sp->env);
    child_fail(sp->report_fd, STAGE_EXEC, e);
}

static const char *exec_kind(int e)
{
    switch (e) {
    case ENOENT:
    case ENOTDIR:
    case ELOOP:
    case ENAMETOOLONG:
        return "not_found";
    case E2BIG:
        return "bad_request";
    case ENOMEM:
    case EMFILE:
    case ENFILE:
        return "internal";
    default: /* EACCES, EPERM, ENOEXEC, ETXTBSY, EISDIR, ... */
        return "permission_denied";
    }
}

/* Environment: HOME/USER of the user, then the boot env, then the request's env. */
static int build_env(struct agent *a, const struct agent_exec_req *req, const struct agent_user *u,
                     agent_strv *out, capsa_err *err)
{
    agent_strv env = calloc(1, sizeof(char *));
    char kv[4200];

    if (!env)
        return capsa_err_set(err, ENOMEM, "env: out of memory");
    snprintf(kv, sizeof(kv), "HOME=%s", u->home[0] ? u->home : "/");
    if (agent_env_set(&env, kv, err) < 0)
        goto fail;
    if (u->name[0]) {
        snprintf(kv, sizeof(kv), "USER=%s", u->name);
        if (agent_env_set(&env, kv, err) < 0)
            goto fail;
    }
    for (size_t i = 0; a->boot.env && a->boot.env[i]; i++)
        if (agent_env_set(&env, a->boot.env[i], err) < 0)
            goto fail;
    for (size_t i = 0; req->env[i]; i++)
        if (agent_env_set(&env, req->env[i], err) < 0)
            goto fail;
    if (!agent_env_get(env, "PATH") && agent_env_set(&env, "PATH=" AGENT_DEFAULT_PATH, err) < 0)
        goto fail;
    *out = env;
    return 0;
fail:
    agent_strv_free(env);
    return -1;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* A PTY pair: master (non-blocking) and slave, both CLOEXEC. */
static int open_pty(unsigned short rows, unsigned short cols, int *master, int *slave,
                    capsa_err *err)
{
    _cleanup_close_ int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    char name[128];
    int s;

    if (m < 0)
        return capsa_err_set(err, errno, "open /dev/ptmx: %s", strerror(errno));
    if (unlockpt(m) < 0)
        return capsa_err_set(err, errno, "unlockpt: %s", strerror(errno));
    s = ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) {
        if (ptsname_r(m, name, sizeof(name)) != 0)
            return capsa_err_set(err, errno, "ptsname: %s", strerror(errno));
        s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (s < 0)
            return capsa_err_set(err, errno, "open %s: %s", name, strerror(errno));
    }
    if (ioctl(m, TIOCSWINSZ, &ws) < 0 || set_nonblock(m) < 0) {
        int e = errno;
        close(s);
        return capsa_err_set(err, e, "pty set-up: %s", strerror(e));
    }
    *slave = s;
    *master = steal_fd(&m);
    return 0;
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

void agent_exec_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
    struct agent_exec_req req;
    struct agent_user user;
    capsa_err err = {0};
    agent_strv env = NULL;
    const char *spec;
    struct spawn sp = {0};
    struct agent_stream *s;
    int rpipe[2] = {-1, -1};
    int c_in = -1, c_out = -1, c_err = -1; /* child ends */
    int p_in = -1, p_out = -1, p_err = -1; /* our ends */
    struct exec_report rep;
    ssize_t r;
    pid_t pid;
    char me[16];

    if (agent_parse_exec_start(p, n, &req, &err) < 0) {
        if (err.code == EBADMSG)
            agent_send_error(a, id, "bad_frame", 0, "exec.start: %s", err.msg);
        else
            send_failed(a, id, "bad_request", "%s", err.msg);
        return;
    }
    if (a->n_streams >= AGENT_MAX_STREAMS) {
        send_failed(a, id, "internal", "too many open streams (%d)", AGENT_MAX_STREAMS);
        goto out;
    }

    spec = req.user ? req.user : a->boot.user;
    sp.switch_user = spec || geteuid() == 0;
    if (!spec) {
        snprintf(me, sizeof(me), "%u", (unsigned)geteuid());
        spec = me;
        if (agent_user_resolve(spec, "", &user, &err) < 0) {
            send_failed(a, id, "user_setup_failed", "%s", err.msg);
            goto out;
        }
    } else if (agent_user_resolve(spec, "", &user, &err) < 0) {
        /* "root" works even in a root without /etc/passwd */
        if (strcmp(spec, "root") != 0) {
            send_failed(a, id, "user_setup_failed", "%s", err.msg);
            goto out;
        }
        memset(&user, 0, sizeof(user));
        snprintf(user.name, sizeof(user.name), "root");
        snprintf(user.home, sizeof(user.home), "/root");
        user.n_groups = 1;
    }
    if (build_env(a, &req, &user, &env, &err) < 0) {
        send_failed(a, id, "internal", "%s", err.msg);
        goto out;
    }

    if (req.tty) {
        if (open_pty(req.rows, req.cols, &p_out, &c_out, &err) < 0) {
            send_failed(a, id, "internal", "%s", err.msg);
            goto out;
        }
        c_in = c_err = c_out;
        if (req.stdin_open) {
            p_in = fcntl(p_out, F_DUPFD_CLOEXEC, 3);
            if (p_in < 0) {
                send_failed(a, id, "internal", "dup: %s", strerror(errno));
                goto out;
            }
        }
    } else {
        int pin[2] = {-1, -1}, pout[2], perr[2];
        if (req.stdin_open) {
            if (pipe2(pin, O_CLOEXEC) < 0) {
                send_failed(a, id, "internal", "pipe: %s", strerror(errno));
                goto out;
            }
            c_in = pin[0];
            p_in = pin[1];
        } else {
            c_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (c_in < 0) {
                send_failed(a, id, "internal", "open /dev/null: %s", strerror(errno));
                goto out;
            }
        }
        if (pipe2(pout, O_CLOEXEC) < 0) {
            send_failed(a, id, "internal", "pipe: %s", strerror(errno));
            goto out;
        }
        c_out = pout[1];
        p_out = pout[0];
        if (pipe2(perr, O_CLOEXEC) < 0) {
            send_failed(a, id, "internal", "pipe: %s", strerror(errno));
            goto out;
        }
        c_err = perr[1];
        p_err = perr[0];
        if ((p_in >= 0 && set_nonblock(p_in) < 0) || set_nonblock(p_out) < 0 ||
            set_nonblock(p_err) < 0) {
            send_failed(a, id, "internal", "fcntl: %s", strerror(errno));
            goto out;
        }
    }
    if (pipe2(rpipe, O_CLOEXEC) < 0) {
        send_failed(a, id, "internal", "pipe: %s", strerror(errno));
        goto out;
    }

    sp.argv = req.argv;
    sp.env = env;
    sp.cwd = req.cwd ? req.cwd : a->boot.workdir ? a->boot.workdir : "/";
    sp.req = &req;
    sp.user = &user;
    sp.in_fd = c_in;
    sp.out_fd = c_out;
    sp.err_fd = c_err;
    sp.tty = req.tty;
    sp.report_fd = rpipe[1];

    pid = fork();
    if (pid < 0) {
        send_failed(a, id, "internal", "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0)
        child_main(&sp);

    close_fd(&rpipe[1]);
    do
        r = read(rpipe[0], &rep, sizeof(rep));
    while (r < 0 && errno == EINTR);
    if (r == (ssize_t)sizeof(rep)) {
        const char *what = "";
        switch (rep.stage) {
        case STAGE_RLIMIT:
            send_failed(a, id, rep.err == EINVAL ? "bad_request" : "internal", "setrlimit: %s",
                        strerror(rep.err));
            break;
        case STAGE_USER:
            send_failed(a, id, "user_setup_failed", "switching to user \"%s\" (uid %u gid %u): %s",
                        spec, (unsigned)user.uid, (unsigned)user.gid, strerror(rep.err));
            break;
        case STAGE_CWD:
            send_failed(a, id, "bad_cwd", "chdir %s: %s", sp.cwd, strerror(rep.err));
            break;
        case STAGE_EXEC:
            if (rep.err == ENOENT)
                what = strchr(req.argv[0], '/') ? "" : " (searched PATH)";
            send_failed(a, id, exec_kind(rep.err), "%s: %s%s", req.argv[0], strerror(rep.err),
                        what);
            break;
        default:
            send_failed(a, id, "internal", "child set-up: %s", strerror(rep.err));
        }
        goto out;
    }
    if (r != 0) {
        /* the child died before reporting: it will be reaped as an orphan */
        send_failed(a, id, "internal", "the child vanished before exec");
        goto out;
    }

    s = agent_stream_new(a, id, AGENT_STREAM_EXEC);
    if (!s) {
        kill(pid, SIGKILL);
        send_failed(a, id, "internal", "out of memory");
        goto out;
    }
    s->pid = pid;
    s->tty = req.tty;
    s->out_fd = p_out;
    s->err_fd = p_err;
    s->in_fd = p_in;
    p_out = p_err = p_in = -1;
    agent_send_json(a, id, CAPSA_MSG_EXEC_STARTED, json_pack("{s:i}", "pid", (int)pid));

out:
    if (c_err != c_out)
        close_fd(&c_err);
    if (c_in != c_out)
        close_fd(&c_in);
    close_fd(&c_out);
    close_fd(&p_in);
    close_fd(&p_out);
    close_fd(&p_err);
    close_fd(&rpipe[0]);
    close_fd(&rpipe[1]);
    agent_strv_free(env);
    agent_exec_req_free(&req);
}

void agent_exec_pump_in(struct agent *a, struct agent_stream *s)
{
    while (s->in_fd >= 0 && agent_buf_pending(&s->in) > 0) {
        ssize_t w = write(s->in_fd, s->in.data + s->in.off, agent_buf_pending(&s->in));
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return;
            /* EPIPE: the child closed its stdin; drop what is left */
            close_fd(&s->in_fd);
            agent_buf_free(&s->in);
            return;
        }
        agent_buf_consume(&s->in, (size_t)w);
    }
    if (s->in_fd >= 0 && s->in_eof && agent_buf_pending(&s->in) == 0) {
        if (s->tty) {
            /* a terminal has no EOF of its own: type the VEOF character when
             * the line discipline is canonical, as a user would */
            struct termios t;
            if (tcgetattr(s->in_fd, &t) == 0 && (t.c_lflag & ICANON)) {
                char c = (char)t.c_cc[VEOF];
                ssize_t w = write(s->in_fd, &c, 1);
                (void)w;
            }
        }
        close_fd(&s->in_fd);
        agent_buf_free(&s->in);
    }
}

void agent_exec_stdin(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n, bool eof)
{
    if (s->in_fd < 0 || s->in_eof)
        return; /* stdin closed (by the child, the host, or stdin:false): discard */
    if (n && agent_buf_append(&s->in, p, n) < 0) {
        agent_log("exec %u: out of memory buffering stdin", s->id);
        close_fd(&s->in_fd);
        agent_buf_free(&s->in);
        return;
    }
    if (eof)
        s->in_eof = true;
    agent_exec_pump_in(a, s);
}

void agent_exec_signal(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n)
{
    capsa_err err = {0};
    int sig;

    if (agent_parse_signal(p, n, &sig, &err) < 0) {
        agent_send_error(a, s->id, "bad_frame", 0, "%s", err.msg);
        return;
    }
    if (s->reaped)
        return;
    if (kill(s->pid, sig) < 0)
        agent_log("exec %u: kill(%d, %d): %s", s->id, (int)s->pid, sig, strerror(errno));
    /* SIGKILL ends the whole session (its own process group, see setsid in the
     * child): otherwise a killed shell's children would keep stdout open and
     * exec.exited would wait for them */
    if (sig == SIGKILL)
        kill(-s->pid, SIGKILL);
}

void agent_exec_resize(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n)
{
    capsa_err err = {0};
    unsigned short rows, cols;

    if (agent_parse_resize(p, n, &rows, &cols, &err) < 0) {
        agent_send_error(a, s->id, "bad_frame", 0, "%s", err.msg);
        return;
    }
    if (s->tty && s->out_fd >= 0) {
        struct winsize ws = {.ws_row = rows, .ws_col = cols};
        ioctl(s->out_fd, TIOCSWINSZ, &ws); /* the kernel sends SIGWINCH */
    }
}

/* One read of up to a chunk; returns false when the fd reached EOF (and was closed). */
static bool read_chunk(struct agent *a, struct agent_stream *s, int *fd)
{
    static uint8_t buf[AGENT_READ_CHUNK];
    ssize_t r;

    do
        r = read(*fd, buf, sizeof(buf));
    while (r < 0 && errno == EINTR);
    if (r > 0) {
        agent_send(a, s->id, fd == &s->err_fd ? CAPSA_MSG_STDERR : CAPSA_MSG_STDOUT, 0, buf,
                   (size_t)r);
        return true;
    }
    if (r < 0 && errno == EAGAIN)
        return true;
    /* 0: EOF; EIO: the PTY's last slave fd closed */
    if (s->tty && fd == &s->out_fd && !s->reaped) {
        /* keep the master open: closing it now would hang up the slave and
         * SIGHUP a session leader that closed its fds but has not exited yet */
        s->pty_eof = true;
        return false;
    }
    close_fd(fd);
    return false;
}

void agent_exec_pump_out(struct agent *a, struct agent_stream *s, int fd)
{
    if (fd == s->out_fd)
        read_chunk(a, s, &s->out_fd);
    else if (fd == s->err_fd)
        read_chunk(a, s, &s->err_fd);
}

void agent_exec_check_done(struct agent *a, struct agent_stream *s)
{
    json_t *j;

    if (!s->reaped)
        return;
    if (s->tty && s->out_fd >= 0) {
        /* the session leader is gone: take what the terminal still holds, but do
         * not wait for background processes that keep the slave open */
        int guard = 64;
        while (s->out_fd >= 0 && !s->pty_eof && guard-- > 0) {
            int before = s->out_fd;
            size_t pend = agent_buf_pending(&a->out);
            if (!read_chunk(a, s, &s->out_fd) || before != s->out_fd)
                break;
            if (agent_buf_pending(&a->out) == pend)
                break; /* EAGAIN: drained */
        }
        close_fd(&s->out_fd);
        close_fd(&s->in_fd);
    }
    if (s->out_fd >= 0 || s->err_fd >= 0)
        return;
    close_fd(&s->in_fd);
    if (WIFSIGNALED(s->status))
        j = json_pack("{s:i, s:i}", "code", 128 + WTERMSIG(s->status), "signal",
                      WTERMSIG(s->status));
    else
        j = json_pack("{s:i, s:i}", "code", WEXITSTATUS(s->status), "signal", 0);
    agent_send_json(a, s->id, CAPSA_MSG_EXITED, j);
    s->dead = true;
}

void agent_exec_close(struct agent_stream *s)
{
    if (s->pid > 0 && !s->reaped) {
        kill(-s->pid, SIGKILL);
        kill(s->pid, SIGKILL);
    }
    close_fd(&s->out_fd);
    close_fd(&s->err_fd);
    close_fd(&s->in_fd);
    agent_buf_free(&s->in);
}

void agent_exec_kill_all(struct agent *a, int sig)
{
    for (struct agent_stream *s = a->streams; s; s = s->next) {
        if (s->kind == AGENT_STREAM_EXEC && s->pid > 0 && !s->reaped) {
            kill(-s->pid, sig);
            kill(s->pid, sig);
        }
    }
}
