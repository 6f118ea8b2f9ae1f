/* sandbox.c - named sandbox lifecycle on top of the store and the supervisor (see sandbox.h). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "image/blobs.h"
#include "lib/agentc.h"
#include "lib/rootfs.h"
#include "spec/spec.h"
#include "supervisor/client.h"
#include "supervisor/execlog.h"
#include "supervisor/sandbox.h"
#include "supervisor/supervisor.h"

extern char **environ;

/* How long to wait for a supervisor that was asked to go away, beyond the stop timeout. */
#define EXIT_SLACK_MS 20000

int capsa_sandbox_paths(const char *name, int64_t id, struct capsa_sandbox_paths *p, capsa_err *err)
{
    memset(p, 0, sizeof(*p));
    if (capsa_path(p->dir, sizeof(p->dir), err, "sandboxes/%s", name) < 0)
        return -1;
    snprintf(p->log, sizeof(p->log), "%s/supervisor.log", p->dir);
    snprintf(p->exec_log, sizeof(p->exec_log), "%s/exec.log", p->dir);
    if (id > 0) {
        if (capsa_path(p->run_dir, sizeof(p->run_dir), err, "run/%lld", (long long)id) < 0)
            return -1;
        snprintf(p->sock, sizeof(p->sock), "%s/control.sock", p->run_dir);
        snprintf(p->console, sizeof(p->console), "%s/console.log", p->run_dir);
    }
    return 0;
}

bool capsa_supervisor_alive(pid_t pid, void *ctx)
{
    char path[64], buf[256];
    _cleanup_close_ int fd = -1;
    ssize_t n;
    size_t a0;

    (void)ctx;
    if (pid <= 0)
        return false;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    n = read(fd, buf, sizeof(buf) - 1);
    if (n <= 0) /* a zombie has an empty cmdline */
        return false;
    buf[n] = '\0';
    a0 = strlen(buf);
    if ((ssize_t)a0 + 1 >= n)
        return false;
    return strcmp(buf + a0 + 1, CAPSA_SUPERVISOR_VERB) == 0;
}

int capsa_sandbox_reap(struct capsa_store *store, capsa_err *err)
{
    struct capsa_store_sandbox_filter f = {.status_mask = CAPSA_SB(STARTING) | CAPSA_SB(RUNNING) |
                                                          CAPSA_SB(STOPPING)};
    struct capsa_store_sandbox *v = NULL, now;
    struct capsa_sandbox_paths p;
    size_t n = 0, nv = 0;
    capsa_err e2 = {0};

    /* the ones that look dead now get a stop marker in their exec.log once reaped: the
     * supervisor that would have written it was killed */
    if (capsa_store_sandbox_list(store, &f, &v, &nv, &e2) < 0)
        nv = 0;
    if (capsa_store_sandbox_reap(store, capsa_supervisor_alive, NULL, &n, err) < 0) {
        capsa_store_sandboxes_free(v, nv);
        return -1;
    }
    for (size_t i = 0; n && i < nv; i++) {
        memset(&now, 0, sizeof(now));
        if (capsa_store_sandbox_get(store, v[i].name, &now, &e2) == 0 &&
            now.status == CAPSA_SANDBOX_CRASHED && now.stopped_at >= v[i].updated_at &&
            capsa_sandbox_paths(v[i].name, 0, &p, &e2) == 0)
            capsa_execlog_append_line(p.exec_log, CAPSA_LOG_SRC_SYSTEM,
                                      "--- sandbox crashed (supervisor_died) ---\n");
        capsa_store_sandbox_clear(&now);
    }
    capsa_store_sandboxes_free(v, nv);
    if (n)
        log_info("reaped %zu sandbox(es) whose supervisor had died", n);
    return 0;
}

void capsa_sandbox_default_hostname(const char *name, char out[65])
{
    size_t len = strlen(name);
    uint32_t h = 2166136261u; /* FNV-1a */

    if (len <= 64) {
        memcpy(out, name, len + 1);
        return;
    }
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        h = (h ^ *c) * 16777619u;
    snprintf(out, 65, "%.55s-%08x", name, h);
}

/* ---- waiting ----------------------------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static int boot_timeout_ms(void)
{
    const char *bt = getenv("CAPSA_BOOT_TIMEOUT");
    return bt && atoi(bt) > 0 ? atoi(bt) * 1000 : 120000;
}

/* Poll the row until its status is outside mask; *status gets it. */
static int wait_status_not(struct capsa_store *store, const char *name, unsigned mask,
                           int timeout_ms, enum capsa_sandbox_status *status, capsa_err *err)
{
    uint64_t deadline = capsa_now_us() + (uint64_t)timeout_ms * 1000u;

    for (;;) {
        struct capsa_store_sandbox sb = {0};
        if (capsa_sandbox_reap(store, err) < 0 ||
            capsa_store_sandbox_get(store, name, &sb, err) < 0)
            return -1;
        *status = sb.status;
        capsa_store_sandbox_clear(&sb);
        if (!(mask & (1u << *status)))
            return 0;
        if (capsa_now_us() >= deadline)
            return capsa_err_set(err, ETIMEDOUT, "sandbox %s is still %s after %d s", name,
                                 capsa_sandbox_status_name(*status), timeout_ms / 1000);
        sleep_ms(100);
    }
}

static bool wait_gone(pid_t pid, int timeout_ms)
{
    uint64_t deadline = capsa_now_us() + (uint64_t)timeout_ms * 1000u;

    while (capsa_supervisor_alive(pid, NULL)) {
        if (capsa_now_us() >= deadline)
            return false;
        sleep_ms(50);
    }
    return true;
}

/* ---- spawning ---------------------------------------------------------------------------- */

int capsa_supervisor_spawn(const char *name, int timeout_ms, int *watch_fd, bool *busy,
                           capsa_err *err)
{
    struct capsa_sandbox_paths paths;
    char exe[PATH_MAX], fdenv[64], watchenv[64], report[65536];
    const char *exe_env = getenv("CAPSA_SUPERVISOR_EXE");
    _cleanup_close_ int logfd = -1, nullfd = -1, rd = -1, watch_rd = -1, watch_wr = -1;
    int pfd[2] = {-1, -1}, st;
    size_t nenv = 0, len = 0;
    char **envp = NULL;
    char *argv[4];
    uint64_t deadline;
    json_t *j;
    pid_t pid;
    ssize_t n;

    if (busy)
        *busy = false;
    if (watch_fd)
        *watch_fd = -1;
    if (timeout_ms <= 0)
        timeout_ms = boot_timeout_ms() + 60000;
    if (capsa_sandbox_paths(name, 0, &paths, err) < 0 || capsa_mkdir_p(paths.dir, 0700, err) < 0)
        return -1;
    if (exe_env && *exe_env) {
        snprintf(exe, sizeof(exe), "%s", exe_env);
    } else {
        n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
        if (n <= 0)
            return capsa_err_set(err, errno, "readlink /proc/self/exe: %s", strerror(errno));
        exe[n] = '\0';
    }
    logfd = open(paths.log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0)
        return capsa_err_set(err, errno, "open %s: %s", paths.log, strerror(errno));
    nullfd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nullfd < 0)
        return capsa_err_set(err, errno, "open /dev/null: %s", strerror(errno));
    if (watch_fd) {
        /* parent watch: we keep the write end (close-on-exec, so programs the caller execs do
         * not hold it), the supervisor inherits the read end as fd 4; its number is moved to
         * >= 5 so the child's dup2 onto fds 0-4 cannot clobber it */
        int w[2];
        if (pipe2(w, O_CLOEXEC) < 0)
            return capsa_err_set(err, errno, "pipe: %s", strerror(errno));
        watch_wr = w[1];
        watch_rd = fcntl(w[0], F_DUPFD_CLOEXEC, 5);
        close(w[0]);
        if (watch_rd < 0)
            return capsa_err_set(err, errno, "fcntl: %s", strerror(errno));
    }
    /* everything the child needs is prepared before fork */
    for (char **e = environ; e && *e; e++)
        nenv++;
    envp = calloc(nenv + 3, sizeof(*envp));
    if (!envp)
        return capsa_err_set(err, ENOMEM, "out of memory");
    nenv = 0;
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, CAPSA_SUPERVISOR_READY_ENV "=", strlen(CAPSA_SUPERVISOR_READY_ENV) + 1) &&
            strncmp(*e, CAPSA_SUPERVISOR_WATCH_ENV "=", strlen(CAPSA_SUPERVISOR_WATCH_ENV) + 1))
            envp[nenv++] = *e;
    snprintf(fdenv, sizeof(fdenv), "%s=3", CAPSA_SUPERVISOR_READY_ENV);
    envp[nenv++] = fdenv;
    if (watch_rd >= 0) {
        snprintf(watchenv, sizeof(watchenv), "%s=4", CAPSA_SUPERVISOR_WATCH_ENV);
        envp[nenv++] = watchenv;
    }
    argv[0] = exe;
    argv[1] = (char *)CAPSA_SUPERVISOR_VERB;
    argv[2] = (char *)name;
    argv[3] = NULL;
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        free(envp);
        return capsa_err_set(err, errno, "pipe: %s", strerror(errno));
    }
    pid = fork();
    if (pid < 0) {
        int e = errno;
        free(envp);
        close(pfd[0]);
        close(pfd[1]);
        return capsa_err_set(err, e, "fork: %s", strerror(e));
    }
    if (pid == 0) {
        /* child: new session, then fork again so the supervisor is nobody's child here */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        if (setsid() < 0)
            _exit(126);
        pid = fork();
        if (pid != 0)
            _exit(pid < 0 ? 126 : 0);
        if (dup2(nullfd, 0) < 0 || dup2(logfd, 1) < 0 || dup2(logfd, 2) < 0 || dup2(pfd[1], 3) < 0)
            _exit(126);
        if (watch_rd >= 0 && dup2(watch_rd, 4) < 0)
            _exit(126);
        /* also closes the write end of the watch pipe (any number below 5 was dup2'd over) */
        close_range(watch_rd >= 0 ? 5 : 4, ~0u, 0);
        /* /proc/self/exe: the very binary running now, even if its file was replaced */
        if (!exe_env || !*exe_env)
            execve("/proc/self/exe", argv, envp);
        execve(exe, argv, envp);
        _exit(127);
    }
    free(envp);
    close(pfd[1]);
    rd = pfd[0];
    if (watch_rd >= 0) {
        close(watch_rd);
        watch_rd = -1;
    }
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return capsa_err_set(err, ECHILD, "spawning the supervisor failed (status %d)", st);

    deadline = capsa_now_us() + (uint64_t)timeout_ms * 1000u;
    for (;;) {
        struct pollfd p = {.fd = rd, .events = POLLIN};
        uint64_t now = capsa_now_us();
        if (now >= deadline)
            return capsa_err_set(err, ETIMEDOUT,
                                 "sandbox %s: no start report from the supervisor within %d s "
                                 "(see %s)",
                                 name, timeout_ms / 1000, paths.log);
        if (poll(&p, 1, (int)((deadline - now) / 1000 + 1)) < 0 && errno != EINTR)
            return capsa_err_set(err, errno, "poll: %s", strerror(errno));
        if (!p.revents)
            continue;
        n = read(rd, report + len, sizeof(report) - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || len + (size_t)n >= sizeof(report) - 1) {
            if (n > 0)
                len += (size_t)n;
            break;
        }
        len += (size_t)n;
    }
    report[len] = '\0';
    if (!len)
        return capsa_err_set(err, EIO,
                             "sandbox %s: the supervisor exited before reporting its start (see "
                             "%s)",
                             name, paths.log);
    j = json_loads(report, JSON_DISABLE_EOF_CHECK, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return capsa_err_set(err, EPROTO, "sandbox %s: unreadable start report from the supervisor",
                             name);
    }
    if (json_is_true(json_object_get(j, "ok"))) {
        json_decref(j);
        if (watch_fd)
            *watch_fd = steal_fd(&watch_wr);
        return 0;
    }
    if (busy)
        *busy = json_is_true(json_object_get(j, "busy"));
    capsa_err_set(err, json_is_true(json_object_get(j, "busy")) ? EBUSY : EIO, "%s",
                  json_string_value(json_object_get(j, "error"))
                      ? json_string_value(json_object_get(j, "error"))
                      : "the supervisor could not start the sandbox");
    json_decref(j);
    return -1;
}

/* ---- start / stop / remove --------------------------------------------------------------- */

int capsa_sandbox_start_named(struct capsa_store *store, const char *name, bool *was_running,
                              capsa_err *err)
{
    return capsa_sandbox_start_attached(store, name, NULL, was_running, err);
}

int capsa_sandbox_start_attached(struct capsa_store *store, const char *name, int *watch_fd,
                                 bool *was_running, capsa_err *err)
{
    enum capsa_sandbox_status status;

    if (was_running)
        *was_running = false;
    if (watch_fd)
        *watch_fd = -1;
    for (int attempt = 0; attempt < 3; attempt++) {
        bool busy = false;

        /* someone else is starting or stopping it: let that finish first */
        if (wait_status_not(store, name, CAPSA_SB(STARTING) | CAPSA_SB(STOPPING),
                            boot_timeout_ms() + 60000, &status, err) < 0)
            return -1;
        if (status == CAPSA_SANDBOX_RUNNING) {
            if (was_running)
                *was_running = true; /* running, and not started by us */
            return 0;
        }
        if (capsa_supervisor_spawn(name, 0, watch_fd, &busy, err) == 0)
            return 0;
        if (!busy) {
            struct capsa_store_sandbox sb = {0};
            capsa_err e2 = {0};
            /* the supervisor records why in last_error; prefer that message */
            if (capsa_sandbox_reap(store, &e2) == 0 &&
                capsa_store_sandbox_get(store, name, &sb, &e2) == 0 &&
                sb.status == CAPSA_SANDBOX_FAILED && sb.last_error)
                capsa_err_set(err, EIO, "sandbox %s failed to start: %s", name, sb.last_error);
            else
                capsa_err_prefix(err, "starting sandbox %s", name);
            capsa_store_sandbox_clear(&sb);
            return -1;
        }
    }
    return capsa_err_set(err, EBUSY, "sandbox %s: could not start it (it kept changing state)",
                         name);
}

int capsa_sandbox_stop_named(struct capsa_store *store, const char *name, bool force,
                             int timeout_ms, bool *was_stopped, capsa_err *err)
{
    struct capsa_store_sandbox sb = {0};
    struct capsa_sandbox_paths paths;
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    pid_t pid;
    bool asked = false;
    int ret = -1;

    if (was_stopped)
        *was_stopped = false;
    if (timeout_ms < 0)
        timeout_ms = CAPSA_STOP_TIMEOUT_MS_DEFAULT;
    if (capsa_sandbox_reap(store, err) < 0 || capsa_store_sandbox_get(store, name, &sb, err) < 0)
        return -1;
    if (!(CAPSA_SB_ACTIVE & (1u << sb.status))) {
        if (was_stopped)
            *was_stopped = true;
        ret = 0;
        goto out;
    }
    pid = sb.supervisor_pid;
    if (capsa_sandbox_paths(name, sb.id, &paths, err) < 0)
        goto out;
    if (sb.status != CAPSA_SANDBOX_STARTING &&
        capsa_ctl_connect(paths.sock, &conn, 5000, NULL) == 0) {
        json_t *args = json_pack("{s:b, s:i}", "force", force, "timeout_ms", timeout_ms);
        if (capsa_ctl_request(&conn, "stop", args, 10000, NULL, NULL) == 0) {
            asked = true;
            capsa_ctl_wait_closed(&conn, timeout_ms + EXIT_SLACK_MS, NULL);
        }
        json_decref(args);
        capsa_ctl_close(&conn);
    }
    if (!asked && pid > 0 && capsa_supervisor_alive(pid, NULL)) {
        /* no control socket (still booting, or wedged): the supervisor stops on SIGTERM */
        log_info("sandbox %s: no answer on the control socket; sending SIGTERM to pid %d", name,
                 (int)pid);
        kill(pid, force && sb.status != CAPSA_SANDBOX_STARTING ? SIGKILL : SIGTERM);
    }
    if (pid > 0 &&
        !wait_gone(pid, timeout_ms + EXIT_SLACK_MS +
                            (sb.status == CAPSA_SANDBOX_STARTING ? boot_timeout_ms() : 0))) {
        log_warn("sandbox %s: supervisor pid %d did not exit; killing it", name, (int)pid);
        kill(pid, SIGKILL);
        wait_gone(pid, 5000);
    }
    capsa_store_sandbox_clear(&sb);
    if (capsa_sandbox_reap(store, err) < 0 || capsa_store_sandbox_get(store, name, &sb, err) < 0)
        goto out;
    if (CAPSA_SB_ACTIVE & (1u << sb.status)) {
        capsa_err_set(err, EBUSY, "sandbox %s is still %s", name,
                      capsa_sandbox_status_name(sb.status));
        goto out;
    }
    ret = 0;
out:
    capsa_store_sandbox_clear(&sb);
    return ret;
}

int capsa_sandbox_remove_named(struct capsa_store *store, const char *name, bool force,
                               capsa_err *err)
{
    struct capsa_store_sandbox sb = {0};
    struct capsa_sandbox_paths paths;
    int ret = -1;

    if (capsa_sandbox_reap(store, err) < 0 || capsa_store_sandbox_get(store, name, &sb, err) < 0)
        return -1;
    if (CAPSA_SB_ACTIVE & (1u << sb.status)) {
        if (!force) {
            capsa_err_set(err, EBUSY, "sandbox %s is %s: stop it first or use --force", name,
                          capsa_sandbox_status_name(sb.status));
            goto out;
        }
        if (capsa_sandbox_stop_named(store, name, false, -1, NULL, err) < 0)
            goto out;
    }
    if (capsa_sandbox_paths(name, sb.id, &paths, err) < 0 ||
        capsa_store_sandbox_delete(store, name, CAPSA_SB_INACTIVE, err) < 0)
        goto out;
    if (capsa_rm_rf(paths.dir, err) < 0 || capsa_rm_rf(paths.run_dir, err) < 0) {
        capsa_err_prefix(err, "sandbox %s removed, but its files were not", name);
        goto out;
    }
    ret = 0;
out:
    capsa_store_sandbox_clear(&sb);
    return ret;
}

/* ---- create ------------------------------------------------------------------------------ */

/* The spec spells disk formats "Raw", "Qcow2", "Vmdk"; lib/rootfs.h and QEMU lower case. */
static const char *disk_format_lc(const char *f)
{
    return !f                    ? NULL
           : !strcmp(f, "Qcow2") ? "qcow2"
           : !strcmp(f, "Vmdk")  ? "vmdk"
           : !strcmp(f, "Raw")   ? "raw"
                                 : f;
}

int capsa_sandbox_rootfs_spec(const struct capsa_sandbox_spec *sp, const char *state_dir,
                              struct capsa_root_disk *rd, struct capsa_rootfs_spec *rs,
                              capsa_err *err)
{
    struct capsa_image_info info;
    capsa_err e = {0};
    const char *at;

    memset(rs, 0, sizeof(*rs));
    memset(rd, 0, sizeof(*rd));
    rs->state_dir = state_dir;
    rs->pull_policy = sp->pull_policy;
    if (sp->image.kind == CAPSA_IMAGE_DISK_IMAGE) {
        if (!sp->image.path || sp->image.path[0] != '/')
            return capsa_err_set(err, EINVAL, "image.DiskImage.path: expected an absolute path");
        rs->source = sp->image.path;
        rs->disk_format = disk_format_lc(sp->image.format);
        rs->disk_fstype = sp->image.fstype;
        return 0;
    }
    if (sp->image.kind != CAPSA_IMAGE_OCI || !sp->image.reference)
        return capsa_err_set(err, EINVAL, "image: not an Oci or DiskImage root");
    if (sp->image.reference[0] == '/' || sp->image.reference[0] == '.')
        return capsa_err_set(err, EINVAL,
                             "image.Oci.reference '%s': expected an image reference, not a path",
                             sp->image.reference);
    rs->source = sp->image.reference;
    /* a pinned reference (REPO@sha256:...) is found in the store by its manifest digest */
    at = strrchr(sp->image.reference, '@');
    if (at && !strncmp(at + 1, "sha256:", 7) && capsa_image_lookup(at + 1, &info, &e) == 0)
        rs->source = at + 1;
    rd->kind = sp->image.root_disk.kind;
    rd->size_mib = sp->image.root_disk.size_mib;
    if (rd->kind == CAPSA_ROOT_DISK_DISK_IMAGE) {
        if (!sp->image.root_disk.path ||
            snprintf(rd->path, sizeof(rd->path), "%s", sp->image.root_disk.path) >=
                (int)sizeof(rd->path))
            return capsa_err_set(err, EINVAL, "image.Oci.root_disk.path: missing or too long");
        if (capsa_vm_disk_format_parse(
                sp->image.root_disk.format ? disk_format_lc(sp->image.root_disk.format) : "raw",
                &rd->format, err) < 0)
            return capsa_err_prefix(err, "image.Oci.root_disk.format");
        snprintf(rd->fstype, sizeof(rd->fstype), "%s",
                 sp->image.root_disk.fstype ? sp->image.root_disk.fstype : "");
    }
    rs->root_disk = rd;
    return 0;
}

/* Resolve an OCI or DiskImage root at create: pull the image, pin the stored reference to the
 * manifest digest (*image_ref: the store reference the sandbox uses, for `image rm`), make a
 * DiskImage path absolute. No file is created (the upper is made at first start). */
static int resolve_create_root(struct capsa_sandbox_spec *sp,
                               const struct capsa_image_pull_opts *pull, char **image_ref,
                               capsa_err *err)
{
    struct capsa_root_disk rd, probe = {.kind = CAPSA_ROOT_DISK_TMPFS};
    struct capsa_rootfs_spec rs;
    struct capsa_rootfs r;
    json_t *img = json_object_get(sp->doc, "image");
    char abs[PATH_MAX];
    struct stat st;

    *image_ref = NULL;
    if (sp->image.kind == CAPSA_IMAGE_DISK_IMAGE) {
        if (!sp->image.path || !realpath(sp->image.path, abs) || stat(abs, &st) < 0)
            return capsa_err_set(err, errno ? errno : EINVAL, "image.DiskImage.path '%s': %s",
                                 sp->image.path ? sp->image.path : "", strerror(errno));
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
            return capsa_err_set(err, EINVAL,
                                 "image.DiskImage.path '%s': expected a disk image file",
                                 sp->image.path);
        json_object_set_new(json_object_get(img, "DiskImage"), "path", json_string(abs));
        return 0;
    }
    if (capsa_sandbox_rootfs_spec(sp, NULL, &rd, &rs, err) < 0)
        return -1;
    if (rd.kind == CAPSA_ROOT_DISK_DISK_IMAGE) {
        if (!realpath(rd.path, abs) || stat(abs, &st) < 0)
            return capsa_err_set(err, errno, "image.Oci.root_disk.path '%s': %s", rd.path,
                                 strerror(errno));
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
            return capsa_err_set(
                err, EINVAL, "image.Oci.root_disk.path '%s': expected a disk image file", rd.path);
        json_object_set_new(json_object_get(json_object_get(img, "Oci"), "root_disk"), "path",
                            json_string(abs));
    }
    /* a tmpfs probe: pulls and reads the config without creating an upper */
    rs.root_disk = &probe;
    rs.pull = pull;
    if (capsa_rootfs_resolve(&rs, &r, err) < 0)
        return -1;
    *image_ref = strdup(r.image.reference);
    json_object_set_new(json_object_get(img, "Oci"), "reference", json_string(r.pinned));
    log_info("image %s", r.pinned);
    capsa_rootfs_release(&r);
    if (!*image_ref)
        return capsa_err_set(err, ENOMEM, "out of memory");
    return 0;
}

/* Registry options given at create (--insecure, --ca-certs) kept in the sandbox directory, so
 * that a later start can pull the pinned image again from the same registry: pull.json and a
 * private copy of the CA bundle (the user's file may be gone by then). */
int capsa_sandbox_pull_opts_save(const char *dir, const struct capsa_image_pull_opts *po,
                                 capsa_err *err)
{
    char path[4200], tmp[4210];
    json_t *j;
    int rc;

    if (!po->insecure && !po->ca_certs)
        return 0;
    if (po->ca_certs) {
        snprintf(path, sizeof(path), "%s/ca-certs.pem", dir);
        if (capsa_copy_file(po->ca_certs, path, 0600, err) < 0)
            return capsa_err_prefix(err, "--ca-certs");
    }
    j = json_pack("{s:b, s:b}", "insecure", po->insecure, "ca_certs", po->ca_certs != NULL);
    if (!j)
        return capsa_err_set(err, ENOMEM, "out of memory");
    snprintf(path, sizeof(path), "%s/pull.json", dir);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    rc = json_dump_file(j, tmp, JSON_COMPACT);
    json_decref(j);
    if (rc < 0 || rename(tmp, path) < 0) {
        int e = errno ? errno : EIO;
        unlink(tmp);
        return capsa_err_set(err, e, "%s: cannot write: %s", path, strerror(e));
    }
    return 0;
}

int capsa_sandbox_pull_opts_load(const char *dir, struct capsa_image_pull_opts *po, char *ca_path,
                                 size_t ca_size, capsa_err *err)
{
    char path[4200];
    json_error_t je;
    json_t *j, *v;

    memset(po, 0, sizeof(*po));
    snprintf(path, sizeof(path), "%s/pull.json", dir);
    j = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!j)
        return access(path, F_OK) < 0 && errno == ENOENT
                   ? 0
                   : capsa_err_set(err, EINVAL, "%s: %s", path, je.text);
    v = json_object_get(j, "insecure");
    po->insecure = json_is_true(v);
    if (json_is_true(json_object_get(j, "ca_certs"))) {
        snprintf(ca_path, ca_size, "%s/ca-certs.pem", dir);
        po->ca_certs = ca_path;
    }
    json_decref(j);
    return 0;
}

bool capsa_sandbox_script_name_ok(const char *k)
{
    size_t n = strlen(k);

    if (!n || n > 128 || !strcmp(k, ".") || !strcmp(k, ".."))
        return false;
    for (const char *p = k; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* Fields a SandboxSpec may carry that the runtime cannot honour yet: refused by name rather
 * than silently ignored (network policy, secrets, ...). */
static int check_supported_more(json_t *doc, const struct capsa_sandbox_spec *sp, capsa_err *err)
{
    static const char *const net_null[] = {"secrets", "policy",    "dns",
                                           "tls",     "interface", "max_connections"};
    json_t *net = json_object_get(doc, "network"), *rt = json_object_get(doc, "runtime"), *v;
    const char *k;

    for (size_t i = 0; i < sizeof(net_null) / sizeof(net_null[0]); i++) {
        v = json_object_get(net, net_null[i]);
        if (v && !json_is_null(v))
            return capsa_err_set(err, ENOTSUP, "network.%s: %s is not supported yet", net_null[i],
                                 !strcmp(net_null[i], "secrets") ? "secret injection"
                                                                 : "network configuration");
    }
    if (json_is_true(json_object_get(net, "trust_host_cas")))
        return capsa_err_set(err, ENOTSUP, "network.trust_host_cas: is not supported yet");
    if (sp->n_rlimits)
        return capsa_err_set(err, ENOTSUP,
                             "rlimits: sandbox-wide resource limits are not supported yet "
                             "(give --rlimit to exec)");
    if (sp->entrypoint || sp->cmd)
        return capsa_err_set(err, ENOTSUP, "runtime.%s: is not supported for named sandboxes yet",
                             sp->entrypoint ? "entrypoint" : "cmd");
    v = json_object_get(rt, "log_level");
    if (v && !json_is_null(v))
        return capsa_err_set(err, ENOTSUP, "runtime.log_level: is not supported yet");
    if (sp->restricted)
        return capsa_err_set(err, ENOTSUP, "security_profile: \"restricted\" is not supported yet");
    json_object_foreach(json_object_get(rt, "scripts"), k, v)
    {
        if (!capsa_sandbox_script_name_ok(k))
            return capsa_err_set(err, EINVAL,
                                 "runtime.scripts.%.64s: a script name must be 1 to 128 characters "
                                 "of [A-Za-z0-9._-] (it becomes /.capsa/scripts/NAME)",
                                 k);
        if (strlen(json_string_value(v) ? json_string_value(v) : "") > CAPSA_SCRIPT_MAX)
            return capsa_err_set(err, E2BIG, "runtime.scripts.%s: longer than %d bytes", k,
                                 CAPSA_SCRIPT_MAX);
    }
    return 0;
}

static int check_supported(json_t *doc, const struct capsa_sandbox_spec *sp, capsa_err *err)
{
    if (sp->n_mounts)
        return capsa_err_set(err, ENOTSUP, "mounts: volume mounts are not supported yet");
    if (json_array_size(json_object_get(doc, "patches")))
        return capsa_err_set(err, ENOTSUP, "patches: rootfs patches are not supported yet");
    if (json_is_object(json_object_get(doc, "init")))
        return capsa_err_set(err, ENOTSUP, "init: init handoff is not supported yet");
    if (sp->network.n_ports)
        return capsa_err_set(err, ENOTSUP, "network.ports: published ports are not supported yet");
    return check_supported_more(doc, sp, err);
}

int capsa_sandbox_create_named(struct capsa_store *store, const struct capsa_sandbox_create_opts *o,
                               capsa_err *err)
{
    struct capsa_sandbox_spec *sp = NULL;
    struct capsa_store_sandbox_new nw = {0};
    struct capsa_store_label *labels = NULL;
    struct capsa_sandbox_paths paths;
    capsa_spec_errors errs = {0};
    char root[PATH_MAX];
    json_t *doc, *lab, *v;
    const char *k;
    struct stat st;
    char *cfg = NULL, *image_ref = NULL;
    _cleanup_close_ int gc_lock = -1;
    size_t nl = 0;
    int ret = -1, rc;

    if (o->watch_fd)
        *o->watch_fd = -1;
    if (capsa_store_check_name("sandbox name", o->name, err) < 0)
        return -1;
    doc = o->spec ? json_deep_copy(o->spec) : json_object();
    if (!json_is_object(doc)) {
        json_decref(doc);
        return capsa_err_set(err, EINVAL, "spec: expected a JSON object (SandboxSpec)");
    }
    json_object_set_new(doc, "name", json_string(o->name));
    lab = json_object_get(doc, "labels");
    if (!json_is_object(lab)) {
        lab = json_object();
        json_object_set_new(doc, "labels", lab);
    }
    for (size_t i = 0; i < o->n_labels; i++) {
        if (capsa_store_check_label(o->labels[i].key, o->labels[i].value ? o->labels[i].value : "",
                                    err) < 0)
            goto out;
        json_object_set_new(lab, o->labels[i].key,
                            json_string(o->labels[i].value ? o->labels[i].value : ""));
    }
    if (capsa_sandbox_spec_load(doc, &sp, &errs) < 0) {
        capsa_spec_errors_to_err(&errs, err); /* "spec: PATH: MESSAGE" */
        goto out;
    }
    if (check_supported(sp->doc, sp, err) < 0)
        goto out;
    if (sp->image.kind != CAPSA_IMAGE_BIND) {
        /* the image store's gc lock, shared, from resolving the image until the row that pins
         * it exists: an `image prune` (exclusive) cannot delete it in between */
        if (capsa_images_init(err) < 0 || (gc_lock = capsa_images_lock("gc", LOCK_SH, err)) < 0)
            goto out;
        if (resolve_create_root(sp, o->pull, &image_ref, err) < 0)
            goto out;
    } else if (!realpath(sp->image.path, root) || stat(root, &st) < 0 || !S_ISDIR(st.st_mode)) {
        capsa_err_set(err, ENOTDIR, "image.Bind: '%s' is not a directory", sp->image.path);
        goto out;
    } else {
        json_object_set_new(sp->doc, "image", json_pack("{s:s}", "Bind", root));
    }
    cfg = capsa_spec_dump(sp->doc, false);
    if (!cfg) {
        capsa_err_set(err, ENOMEM, "out of memory");
        goto out;
    }
    lab = json_object_get(sp->doc, "labels");
    labels = calloc(json_object_size(lab) + 1, sizeof(*labels));
    if (!labels) {
        capsa_err_set(err, ENOMEM, "out of memory");
        goto out;
    }
    json_object_foreach(lab, k, v)
    {
        labels[nl].key = (char *)k;
        labels[nl].value = (char *)json_string_value(v);
        nl++;
    }
    if (o->replace) {
        capsa_err e2 = {0};
        if (o->replace_timeout_set &&
            capsa_sandbox_stop_named(store, o->name, o->replace_timeout_ms == 0,
                                     o->replace_timeout_ms, NULL, &e2) < 0 &&
            e2.code != ENOENT) {
            *err = e2;
            capsa_err_prefix(err, "--replace-with-timeout");
            goto out;
        }
        if (capsa_sandbox_remove_named(store, o->name, true, &e2) < 0 && e2.code != ENOENT) {
            *err = e2;
            capsa_err_prefix(err, "--replace");
            goto out;
        }
    }
    nw.name = o->name;
    nw.config_json = cfg;
    nw.image_ref = image_ref;
    nw.labels = labels;
    nw.n_labels = nl;
    rc = capsa_store_sandbox_insert(store, &nw, NULL, err);
    if (gc_lock >= 0) {
        close(gc_lock);
        gc_lock = -1;
    }
    if (rc < 0) {
        if (err && err->code == EEXIST)
            capsa_err_set(err, EEXIST, "sandbox %s already exists (use --replace to replace it)",
                          o->name);
        goto out;
    }
    /* a directory without a row is a leftover: start clean */
    if (capsa_sandbox_paths(o->name, 0, &paths, err) < 0 || capsa_rm_rf(paths.dir, err) < 0 ||
        capsa_mkdir_p(paths.dir, 0700, err) < 0)
        goto out;
    if (o->pull && capsa_sandbox_pull_opts_save(paths.dir, o->pull, err) < 0) {
        capsa_err e2 = {0};
        capsa_store_sandbox_delete(store, o->name, ~0u, &e2);
        capsa_rm_rf(paths.dir, &e2);
        goto out;
    }
    ret = o->no_start ? 0 : capsa_sandbox_start_attached(store, o->name, o->watch_fd, NULL, err);
out:
    free(labels);
    free(cfg);
    free(image_ref);
    capsa_sandbox_spec_free(sp);
    capsa_spec_errors_free(&errs);
    json_decref(doc);
    return ret;
}
