/* exec.c - exec sessions: spawn (pipes or PTY, user, rlimits, cwd, PATH search),
 * stdin/stdout/stderr pumping, signals, resize and the exit report.
 *
 * Spawning: the parent resolves the user and prepares everything the child needs
 * (argv, env, PATH, fds, rlimits, groups, the signals to reset), then starts the
 * child with clone(CLONE_VM | CLONE_VFORK) on a stack of its own, as posix_spawn
 * does: no page tables are copied (a fork of PID 1 under TCG cost ~0.4 ms, plus a
 * copy-on-write fault on every page either side touched afterwards), and the
 * parent sleeps until the child's execve succeeded or the child exited. The child
 * shares our memory, so it only makes system calls (no malloc, no stdio, no locks)
 * and reports a failure by filling the parent's struct exec_report before
 * _exit(127): a filled report means exec.failed with the stage's kind (and no
 * exec.started), an empty one that execve succeeded. The failed child is reaped by
 * the SIGCHLD handler like any orphan.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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
    int stage; /* 0: execve succeeded (or the child has not failed) */
    int err;
    size_t tried; /* offset in PATH of the element of the last execve tried */
};

/* Everything the child needs, prepared by the parent: the child may not allocate. */
struct spawn {
    char **argv;
    char **env;
    const char *path;      /* PATH to search when argv[0] has no '/' */
    const char *path_from; /* where in path to start: a PATH cache hit skips elements */
    const char *cwd;
    const struct agent_exec_req *req;
    const struct agent_user *user;
    bool switch_user;
    int in_fd, out_fd, err_fd; /* child ends; for a PTY all three are the slave */
    bool tty;
    const sigset_t *reset;   /* signals whose disposition is not SIG_DFL here */
    struct exec_report *rep; /* the parent's, filled by a failing child */
};

#define CHILD_STACK_SIZE (256u << 10)

/* Code that runs in the child is not instrumented by AddressSanitizer (sanitized test
 * builds): frames that exec never return, so their redzones would stay poisoned in
 * the shadow of the shared stack and trip the next child. */
#define CHILD_CODE __attribute__((no_sanitize_address))

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

static CHILD_CODE void __attribute__((noreturn))
child_fail(const struct spawn *sp, int stage, int e)
{
    sp->rep->err = e;
    sp->rep->stage = stage;
    _exit(127);
}

/* Runs in the child: execve argv[0] in each PATH element from `from` on. Returns the
 * error of a program found that failed to run, or 0 when none was found (*eacces
 * when some element refused us). */
static CHILD_CODE int child_search(const struct spawn *sp, const char *from, bool *eacces)
{
    char **argv = sp->argv;
    const char *p;
    char buf[PATH_MAX];
    size_t nl = strlen(argv[0]);

    for (p = from;; p++) {
        const char *e = strchrnul(p, ':');
        size_t dl = (size_t)(e - p);
        if (dl == 0 && nl < sizeof(buf)) { /* empty element: current directory */
            memcpy(buf, argv[0], nl + 1);
        } else if (dl > 0 && dl + 1 + nl + 1 <= sizeof(buf)) {
            memcpy(buf, p, dl);
            buf[dl] = '/';
            memcpy(buf + dl + 1, argv[0], nl + 1);
        } else {
            goto next;
        }
        sp->rep->tried = (size_t)(p - sp->path);
        execve(buf, argv, sp->env);
        switch (errno) {
        case EACCES:
            *eacces = true;
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
    return 0;
}

/* Runs in the child: execve argv[0], searching PATH when it has no '/'. */
static CHILD_CODE int child_execvpe(const struct spawn *sp)
{
    bool eacces = false;
    int e;

    if (strchr(sp->argv[0], '/')) {
        execve(sp->argv[0], sp->argv, sp->env);
        return errno;
    }
    e = child_search(sp, sp->path_from, &eacces);
    if (e == 0 && sp->path_from != sp->path) {
        /* not found past the cached start: search it all, for the exact error */
        eacces = false;
        e = child_search(sp, sp->path, &eacces);
    }
    if (e)
        return e;
    return eacces ? EACCES : ENOENT;
}

/* Runs in the child, in the parent's memory (CLONE_VM) on its own stack, with every
 * signal blocked: system calls only. */
static CHILD_CODE int child_main(void *arg)
{
    const struct spawn *sp = arg;
    const struct agent_exec_req *req = sp->req;
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    sigset_t none;
    int e;

    /* SIG_IGN would survive execve; the sighand table is our own copy (no CLONE_SIGHAND) */
    for (int sig = 1; sig < NSIG; sig++)
        if (sigismember(sp->reset, sig) == 1)
            sigaction(sig, &dfl, NULL);
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    if (setsid() < 0)
        child_fail(sp, STAGE_SETUP, errno);
    if (sp->tty && ioctl(sp->out_fd, TIOCSCTTY, 0) < 0)
        child_fail(sp, STAGE_SETUP, errno);
    /* the child ends are >= 3 (main() keeps 0-2 open), so dup2 never clobbers one */
    if (dup2(sp->in_fd, 0) < 0 || dup2(sp->out_fd, 1) < 0 || dup2(sp->err_fd, 2) < 0)
        child_fail(sp, STAGE_SETUP, errno);

    for (size_t i = 0; i < req->n_rlimits; i++) {
        struct rlimit rl = {
            .rlim_cur = req->rlimits[i].soft >= (uint64_t)RLIM_INFINITY ? RLIM_INFINITY
                                                                        : req->rlimits[i].soft,
            .rlim_max = req->rlimits[i].hard >= (uint64_t)RLIM_INFINITY ? RLIM_INFINITY
                                                                        : req->rlimits[i].hard,
        };
        if (setrlimit(req->rlimits[i].resource, &rl) < 0)
            child_fail(sp, STAGE_RLIMIT, errno);
    }

    if (sp->switch_user) {
        /* raw system calls: glibc's wrappers would try to reach other threads, and
         * the credentials change for this task only */
        const struct agent_user *u = sp->user;
        if (geteuid() == 0) {
            if (sp->tty && fchown(1, u->uid, (gid_t)-1) < 0)
                child_fail(sp, STAGE_USER, errno);
            if (syscall(SYS_setgroups, u->n_groups, u->groups) < 0)
                child_fail(sp, STAGE_USER, errno);
        }
        if ((u->gid != getegid() || geteuid() == 0) && syscall(SYS_setgid, u->gid) < 0)
            child_fail(sp, STAGE_USER, errno);
        if ((u->uid != geteuid() || getuid() != u->uid) && syscall(SYS_setuid, u->uid) < 0)
            child_fail(sp, STAGE_USER, errno);
    }

    if (chdir(sp->cwd) < 0)
        child_fail(sp, STAGE_CWD, errno);

    e = child_execvpe(sp);
    child_fail(sp, STAGE_EXEC, e);
}

/* Signals whose disposition is not SIG_DFL in the agent (SIG_IGN for SIGPIPE, and
 * whatever a host-test harness let us inherit): the child resets them. Found once:
 * main() sets the agent's dispositions before the loop and nothing changes them. */
static const sigset_t *reset_set(void)
{
    static sigset_t set;
    static bool known;

    if (!known) {
        sigemptyset(&set);
        for (int sig = 1; sig < NSIG; sig++) {
            struct sigaction sa;
            if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_DFL)
                sigaddset(&set, sig);
        }
        known = true;
    }
    return &set;
}

/* The child's stack: mapped once, with a guard page below it. Only one child uses
 * it at a time, since the parent sleeps until that child exec'd or exited. */
static void *child_stack_top(void)
{
    static uint8_t *top;

    if (!top) {
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        uint8_t *m = mmap(NULL, CHILD_STACK_SIZE + page, PROT_READ | PROT_WRITE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        if (mprotect(m, page, PROT_NONE) < 0) {
            munmap(m, CHILD_STACK_SIZE + page);
            return NULL;
        }
        top = m + page + CHILD_STACK_SIZE;
    }
    return top;
}

/* Start the child; returns its pid once it has exec'd or failed (see sp->rep). */
static pid_t spawn_child(struct spawn *sp)
{
    void *stack = child_stack_top();
    sigset_t all, old;
    pid_t pid;
    int e;

    if (!stack) {
        errno = ENOMEM;
        return -1;
    }
    sp->reset = reset_set();
    /* no signal may run a handler in the child while it shares our memory */
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, &old);
    pid = clone(child_main, stack, CLONE_VM | CLONE_VFORK | SIGCHLD, sp);
    e = errno;
    sigprocmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return pid;
}

/* ---- PATH search cache ----
 * A PATH search execs argv[0] in each element in turn; every miss is a lookup that
 * costs a host round trip on a 9p root (~0.1-0.3 ms under TCG; 5 misses for `true`
 * with the default PATH). So after a search that found the program in element k, we
 * remember k together with proof that elements 0..k-1 still cannot hold it: the
 * lstat identity (device, inode, mode, mtime, ctime) of every directory on the way
 * to each of them, down to the element itself when it exists or to its deepest
 * existing ancestor when it does not. Creating, renaming or removing an entry
 * changes its directory's mtime, so while all of those identities hold, no earlier
 * element gained the name and the search may start at k (one lstat per directory,
 * answered from the guest's cache). Only plain absolute elements whose components
 * are all real directories are cached (no symlinks, no "." or ".."); an element
 * where the name exists in any form, or a directory changed less than
 * PATHC_RACY_SEC before we looked (timestamps are coarse), makes the proof fail: the
 * search is then not cached, and not proved again for PATHC_RACY_SEC. A cached
 * search that finds nothing searches everything again for the exact error.
 * Changes made on the host under a 9p root are invisible to these stats, as to the
 * guest's own cache. */
#define PATHC_ENTRIES  64
#define PATHC_DIRS     32
#define PATHC_RACY_SEC 2

struct pathc_dir {
    char *path;
    dev_t dev;
    ino_t ino;
    mode_t mode;
    struct timespec mtime, ctime;
};

struct pathc_entry {
    char *name, *path_env; /* argv[0] and the PATH it was searched in */
    bool proven;           /* else the proof failed: do not try again before retry */
    size_t start;          /* offset in path_env of the element that held it */
    struct pathc_dir dirs[PATHC_DIRS];
    size_t n_dirs;
    time_t retry; /* CLOCK_MONOTONIC seconds */
    uint64_t used;
};

/* Until the first command started: its steps are marked on the boot timeline. */
static bool first_exec = true;

static struct pathc_entry pathc[PATHC_ENTRIES];
static uint64_t pathc_clock;

static void pathc_clear(struct pathc_entry *e)
{
    for (size_t i = 0; i < e->n_dirs; i++)
        free(e->dirs[i].path);
    free(e->name);
    free(e->path_env);
    memset(e, 0, sizeof(*e));
}

static bool pathc_same(const struct pathc_dir *d, const struct stat *st)
{
    return d->dev == st->st_dev && d->ino == st->st_ino && d->mode == st->st_mode &&
           d->mtime.tv_sec == st->st_mtim.tv_sec && d->mtime.tv_nsec == st->st_mtim.tv_nsec &&
           d->ctime.tv_sec == st->st_ctim.tv_sec && d->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

static time_t mono_sec(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec;
}

/* True with *start (an offset in path) when a proven entry still holds; *fill says
 * whether a search from the start may be proved and cached afterwards. */
static bool pathc_lookup(const char *name, const char *path, size_t *start, bool *fill)
{
    *start = 0;
    *fill = true;
    for (size_t i = 0; i < PATHC_ENTRIES; i++) {
        struct pathc_entry *e = &pathc[i];
        struct stat st;
        size_t j;

        if (!e->name || strcmp(e->name, name) != 0 || strcmp(e->path_env, path) != 0)
            continue;
        if (!e->proven) {
            if (mono_sec() < e->retry)
                *fill = false;
            else
                pathc_clear(e);
            return false;
        }
        for (j = 0; j < e->n_dirs; j++)
            if (lstat(e->dirs[j].path, &st) < 0 || !pathc_same(&e->dirs[j], &st))
                break;
        if (j < e->n_dirs) {
            pathc_clear(e);
            return false;
        }
        e->used = ++pathc_clock;
        *start = e->start;
        return true;
    }
    return false;
}

/* Record the identity of directory p (deduplicated); false if it cannot be trusted. */
static bool pathc_add_dir(struct pathc_entry *e, const char *p, const struct stat *st, time_t now)
{
    struct pathc_dir *d;

    for (size_t i = 0; i < e->n_dirs; i++)
        if (strcmp(e->dirs[i].path, p) == 0)
            return pathc_same(&e->dirs[i], st);
    if (e->n_dirs == PATHC_DIRS || st->st_mtim.tv_sec > now - PATHC_RACY_SEC ||
        st->st_ctim.tv_sec > now - PATHC_RACY_SEC)
        return false;
    d = &e->dirs[e->n_dirs];
    d->path = strdup(p);
    if (!d->path)
        return false;
    d->dev = st->st_dev;
    d->ino = st->st_ino;
    d->mode = st->st_mode;
    d->mtime = st->st_mtim;
    d->ctime = st->st_ctim;
    e->n_dirs++;
    return true;
}

/* Prove that element [el, el+len) cannot hold name: record the directories on the way. */
static bool pathc_prove_absent(struct pathc_entry *e, const char *el, size_t len, const char *name,
                               time_t now)
{
    char buf[PATH_MAX];
    struct stat st;
    size_t i = 1;

    if (len == 0 || el[0] != '/' || len + 1 + strlen(name) + 1 > sizeof(buf))
        return false;
    memcpy(buf, el, len);
    buf[len] = '\0';
    /* "/" first, then each prefix ending before a '/' or at the end */
    if (lstat("/", &st) < 0 || !S_ISDIR(st.st_mode) || !pathc_add_dir(e, "/", &st, now))
        return false;
    while (i < len) {
        size_t j = i;
        char c;
        while (j < len && buf[j] != '/')
            j++;
        if (j == i || (j - i == 1 && buf[i] == '.') ||
            (j - i == 2 && buf[i] == '.' && buf[i + 1] == '.'))
            return false; /* "//", "." and ".." are not worth understanding */
        c = buf[j];
        buf[j] = '\0';
        if (lstat(buf, &st) < 0) {
            /* missing: the directory above it (recorded) proves it stays missing */
            return errno == ENOENT;
        }
        if (!S_ISDIR(st.st_mode) || !pathc_add_dir(e, buf, &st, now))
            return false;
        buf[j] = c;
        i = j + 1;
    }
    /* the element is a directory: the name must not be in it, in any form */
    snprintf(buf + len, sizeof(buf) - len, "/%s", name);
    return lstat(buf, &st) < 0 && errno == ENOENT;
}

/* After a search from the start of path found name in the element at offset hit:
 * prove elements before it cannot hold name and remember where it was (or, when the
 * proof fails, remember not to try again for a while). */
static void pathc_fill(const char *name, const char *path, size_t hit)
{
    struct pathc_entry *e = &pathc[0], tmp = {0};
    struct timespec now;
    const char *p = path;

    if (strlen(name) > 255 || strlen(path) >= PATH_MAX || hit > strlen(path))
        return;
    clock_gettime(CLOCK_REALTIME, &now);
    tmp.proven = true;
    while (tmp.proven && (size_t)(p - path) < hit) {
        const char *end = strchrnul(p, ':');
        if (!pathc_prove_absent(&tmp, p, (size_t)(end - p), name, now.tv_sec) || !*end)
            tmp.proven = false;
        p = end + 1;
    }
    if ((size_t)(p - path) != hit)
        tmp.proven = false;
    if (!tmp.proven) {
        for (size_t i = 0; i < tmp.n_dirs; i++)
            free(tmp.dirs[i].path);
        tmp.n_dirs = 0;
        tmp.retry = mono_sec() + PATHC_RACY_SEC;
    }
    tmp.name = strdup(name);
    tmp.path_env = strdup(path);
    if (!tmp.name || !tmp.path_env) {
        pathc_clear(&tmp);
        return;
    }
    tmp.start = hit;
    tmp.used = ++pathc_clock;
    /* replace the entry for the same search, else a free one, else the least used */
    for (size_t i = 0; i < PATHC_ENTRIES; i++) {
        struct pathc_entry *c = &pathc[i];
        if (c->name && strcmp(c->name, name) == 0 && strcmp(c->path_env, path) == 0) {
            e = c;
            break;
        }
        if (!c->name ? e->name != NULL : (e->name && c->used < e->used))
            e = c;
    }
    pathc_clear(e);
    *e = tmp;
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
    struct exec_report rep = {0};
    size_t cached = 0; /* PATH cache: the offset the search starts at */
    bool search, hit = false, fill = false;
    int c_in = -1, c_out = -1, c_err = -1; /* child ends */
    int p_in = -1, p_out = -1, p_err = -1; /* our ends */
    pid_t pid;
    char me[16];

    if (first_exec)
        agent_mark("exec_req");
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
    if (first_exec)
        agent_mark("user_env");
    sp.argv = req.argv;
    sp.env = env;
    sp.path = agent_env_get(env, "PATH");
    if (!sp.path)
        sp.path = AGENT_DEFAULT_PATH;
    search = !strchr(req.argv[0], '/');
    if (search)
        hit = pathc_lookup(req.argv[0], sp.path, &cached, &fill);
    sp.path_from = sp.path + cached;
    sp.cwd = req.cwd ? req.cwd : a->boot.workdir ? a->boot.workdir : "/";
    sp.req = &req;
    sp.user = &user;
    sp.in_fd = c_in;
    sp.out_fd = c_out;
    sp.err_fd = c_err;
    sp.tty = req.tty;
    sp.rep = &rep;

    pid = spawn_child(&sp);
    if (pid < 0) {
        send_failed(a, id, "internal", "clone: %s", strerror(errno));
        goto out;
    }
    if (rep.stage == 0 && search && (hit ? rep.tried != cached : fill))
        pathc_fill(req.argv[0], sp.path, rep.tried);
    if (rep.stage != 0) {
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
    if (first_exec) { /* the boot timeline grows by the first command's steps */
        agent_mark("exec_started");
        s->first = true;
        first_exec = false;
    }
    agent_send_json(a, id, CAPSA_MSG_EXEC_STARTED,
                    json_pack("{s:i, s:o*}", "pid", (int)pid, "marks_us",
                              s->first && a->pid1 ? agent_marks_json() : NULL));

out:
    if (c_err != c_out)
        close_fd(&c_err);
    if (c_in != c_out)
        close_fd(&c_in);
    close_fd(&c_out);
    close_fd(&p_in);
    close_fd(&p_out);
    close_fd(&p_err);
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

/* A 9p root is mounted cache=loose (boot.c): the kernel writes file data back to the
 * host lazily, so before reporting an exit we write back what is dirty, and the host
 * sees a finished command's files as it did with cache=mmap. Nothing dirty: ~1 us. */
static void sync_root(struct agent *a)
{
    static int root_fd = -1;

    if (!a->pid1 || a->boot.root_kind != AGENT_ROOT_9P)
        return;
    if (root_fd < 0)
        root_fd = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0 || syncfs(root_fd) < 0)
        agent_log("syncing the root: %s", strerror(errno));
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
    if (s->first)
        agent_mark("exec_done");
    sync_root(a);
    if (WIFSIGNALED(s->status))
        j = json_pack("{s:i, s:i}", "code", 128 + WTERMSIG(s->status), "signal",
                      WTERMSIG(s->status));
    else
        j = json_pack("{s:i, s:i}", "code", WEXITSTATUS(s->status), "signal", 0);
    if (j && s->first && a->pid1) {
        agent_mark("exited");
        json_object_set_new(j, "marks_us", agent_marks_json());
    }
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
