/* cli_exec.c - the --rlimit grammar and the terminal side of an exec session (cli_exec.h). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <termios.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_exec.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "common/units.h"
#include "lib/boot.h"
#include "lib/exec.h"

static const char *const rlimit_names[] = {
    "cpu",     "fsize", "data",  "stack",      "core",     "rss",  "nproc",  "nofile",
    "memlock", "as",    "locks", "sigpending", "msgqueue", "nice", "rtprio", "rttime",
};

json_t *cli_parse_rlimit(const char *s, capsa_err *err)
{
    char res[32], *end;
    const char *eq = strchr(s, '=');
    unsigned long long soft, hard;
    bool known = false;

    if (!eq || eq == s || (size_t)(eq - s) >= sizeof(res)) {
        capsa_err_set(err, EINVAL, "--rlimit '%s': expected RESOURCE=SOFT[:HARD]", s);
        return NULL;
    }
    memcpy(res, s, (size_t)(eq - s));
    res[eq - s] = '\0';
    for (char *p = res; *p; p++)
        *p = (char)(*p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p);
    for (size_t i = 0; i < ARRAY_SIZE(rlimit_names); i++)
        known = known || !strcmp(res, rlimit_names[i]);
    if (!known) {
        capsa_err_set(err, EINVAL,
                      "--rlimit '%s': unknown resource '%s' (expected cpu, fsize, data, stack, "
                      "core, rss, nproc, nofile, memlock, as, locks, sigpending, msgqueue, nice, "
                      "rtprio or rttime)",
                      s, res);
        return NULL;
    }
    errno = 0;
    soft = strtoull(eq + 1, &end, 10);
    if (errno || end == eq + 1 || (*end && *end != ':') || eq[1] == '-')
        goto bad;
    hard = soft;
    if (*end == ':') {
        const char *h = end + 1;
        hard = strtoull(h, &end, 10);
        if (errno || end == h || *end || *h == '-')
            goto bad;
    }
    if (soft > hard) {
        capsa_err_set(err, EINVAL, "--rlimit '%s': soft limit %llu is above hard limit %llu", s,
                      soft, hard);
        return NULL;
    }
    return json_pack("{s:s, s:I, s:I}", "resource", res, "soft", (json_int_t)soft, "hard",
                     (json_int_t)hard);
bad:
    capsa_err_set(err, EINVAL, "--rlimit '%s': limits must be non-negative integers", s);
    return NULL;
}

static struct termios saved_tio;
static bool tio_saved;

static void restore_tty(void)
{
    if (tio_saved)
        tcsetattr(STDIN_FILENO, TCSADRAIN, &saved_tio);
    tio_saved = false;
}

static void make_raw(void)
{
    struct termios t;

    if (tcgetattr(STDIN_FILENO, &saved_tio) < 0)
        return;
    if (!tio_saved)
        atexit(restore_tty);
    tio_saved = true;
    t = saved_tio;
    cfmakeraw(&t);
    tcsetattr(STDIN_FILENO, TCSADRAIN, &t);
}

int cli_exec_session(struct capsa_agentc *ch, const struct cli_exec *x, const char *verb,
                     const char *detach_note, const char *console_log, int *status)
{
    struct capsa_exec_opts eo = {0};
    struct capsa_exec_result res;
    capsa_err err = {0};
    _cleanup_close_ int sfd = -1;
    sigset_t mask;
    bool tty;
    int ret = -1;

    /* signals arrive through a signalfd and go to the command */
    sigemptyset(&mask);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGQUIT);
    sigaddset(&mask, SIGWINCH);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);

    tty = x->tty == 1 || (x->tty == -1 && isatty(STDIN_FILENO) && isatty(STDOUT_FILENO));
    eo.argv = x->cmd;
    eo.env = x->env;
    eo.cwd = x->workdir;
    eo.user = x->user;
    eo.rlimits = json_array_size(x->rlimits) ? x->rlimits : NULL;
    eo.tty = tty;
    eo.stdin_fd = STDIN_FILENO;
    eo.stdout_fd = STDOUT_FILENO;
    eo.stderr_fd = STDERR_FILENO;
    eo.timeout_ms = x->timeout_ms;
    eo.signal_fd = sfd;
    eo.winsize_fd = isatty(STDIN_FILENO) ? STDIN_FILENO : -1;
    eo.detach_key = tty && isatty(STDIN_FILENO) ? 0x1d : -1;
    if (tty && isatty(STDIN_FILENO)) {
        struct winsize ws;
        if (ioctl(STDIN_FILENO, TIOCGWINSZ, &ws) == 0) {
            eo.rows = ws.ws_row;
            eo.cols = ws.ws_col;
        }
        make_raw();
    }
    if (capsa_exec_run(ch, &eo, &res, &err) < 0) {
        restore_tty();
        cli_fail("%s: %s", verb, err.msg);
        if (console_log)
            capsa_boot_dump_console(console_log);
        goto out;
    }
    restore_tty();
    switch (res.end) {
    case CAPSA_EXEC_FAILED:
        cli_fail("%s: cannot run '%s': %s", verb, x->cmd[0], res.message);
        break;
    case CAPSA_EXEC_TIMEOUT:
        if (!x->quiet)
            cli_fail("%s: the command timed out after %llu ms and was killed", verb,
                     (unsigned long long)x->timeout_ms);
        break;
    case CAPSA_EXEC_DETACHED:
        if (!x->quiet)
            fprintf(stderr, "\r\ncapsa: detached; %s\n", detach_note);
        break;
    case CAPSA_EXEC_EXITED:
        break;
    }
    *status = capsa_exec_exit_status(&res);
    ret = 0;
out:
    sigprocmask(SIG_UNBLOCK, &mask, NULL);
    return ret;
}

int cli_opt_cpus(const char *arg, int *out)
{
    char *end;
    long v = strtol(arg, &end, 10);

    if (*end || v < 1 || v > 64)
        return cli_fail("--cpus '%s': expected an integer from 1 to 64", arg);
    *out = (int)v;
    return 0;
}

int cli_opt_memory(const char *arg, uint64_t *mib)
{
    capsa_err err = {0};

    if (capsa_parse_size_mib(arg, mib, &err) < 0)
        return cli_fail("--memory: %s", err.msg);
    if (*mib < 64)
        return cli_fail("--memory '%s': at least 64M is needed to boot", arg);
    return 0;
}

int cli_opt_env(const char *arg, char **env, size_t *n, size_t max)
{
    if (!strchr(arg, '=') || arg[0] == '=')
        return cli_fail("--env '%s': expected KEY=VALUE", arg);
    if (*n >= max)
        return cli_fail("--env: at most %zu variables", max);
    env[(*n)++] = (char *)arg;
    return 0;
}

int cli_opt_workdir(const char *arg, const char **out)
{
    if (arg[0] != '/')
        return cli_fail("--workdir '%s': must be an absolute path", arg);
    *out = arg;
    return 0;
}

int cli_opt_user(const char *arg, const char **out)
{
    if (!*arg)
        return cli_fail("--user: must not be empty");
    *out = arg;
    return 0;
}

int cli_opt_hostname(const char *arg, const char **out)
{
    if (!*arg || strlen(arg) > 64)
        return cli_fail("--hostname '%s': must be 1 to 64 characters", arg);
    *out = arg;
    return 0;
}

int cli_opt_timeout(const char *arg, uint64_t *ms)
{
    capsa_err err = {0};

    if (capsa_parse_duration_ms(arg, ms, &err) < 0)
        return cli_fail("--timeout: %s", err.msg);
    if (*ms == 0)
        return cli_fail("--timeout '%s': must be greater than zero", arg);
    return 0;
}

int cli_opt_rlimit(const char *arg, json_t *rlimits)
{
    capsa_err err = {0};
    json_t *r = cli_parse_rlimit(arg, &err);

    if (!r)
        return cli_fail("%s", err.msg);
    json_array_append_new(rlimits, r);
    return 0;
}
