/* exec.h - one exec session over the agent channel, bridged to local fds.
 *
 * The caller provides the command and three local fds; capsa_exec_run() sends
 * exec.start, pumps stdin to the guest (with back-pressure), writes the guest's
 * stdout/stderr as it arrives, forwards signals and window size changes, enforces
 * the timeout, and returns how the command ended.
 */
#ifndef CAPSA_LIB_EXEC_H
#define CAPSA_LIB_EXEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/agentc.h"

struct capsa_exec_opts {
    char *const *argv; /* NULL-terminated, non-empty */
    char *const *env;  /* "K=V" entries, NULL-terminated; may be NULL */
    const char *cwd;   /* NULL: the sandbox default */
    const char *user;  /* NULL: the sandbox default */
    json_t *rlimits;   /* array of {resource, soft, hard}, or NULL */
    bool tty;
    int rows, cols;
    int stdin_fd;        /* -1: the command's stdin is /dev/null */
    int stdout_fd;       /* where guest stdout goes */
    int stderr_fd;       /* where guest stderr goes */
    uint64_t timeout_ms; /* 0: none */
    int signal_fd;       /* signalfd for SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGWINCH, or -1 */
    int winsize_fd;      /* terminal to read the window size from on SIGWINCH, or -1 */
    int detach_key;      /* byte that detaches a tty session (ctrl-] = 0x1d), or -1 */
};

enum capsa_exec_end {
    CAPSA_EXEC_EXITED,   /* code/signal valid */
    CAPSA_EXEC_FAILED,   /* could not start: fail_kind, message */
    CAPSA_EXEC_TIMEOUT,  /* killed after timeout_ms */
    CAPSA_EXEC_DETACHED, /* the user pressed the detach key */
};

struct capsa_exec_result {
    enum capsa_exec_end end;
    int pid;
    int code;   /* exit code; 128+signal when signalled */
    int signal; /* 0 unless killed by a signal */
    char fail_kind[32];
    char message[512];
    uint64_t output_bytes; /* stdout + stderr bytes received */
};

int capsa_exec_run(struct capsa_agentc *c, const struct capsa_exec_opts *o,
                   struct capsa_exec_result *res, capsa_err *err);

/* Shell-style exit status for a result: code, 127 not found, 126 not
 * executable, 124 timeout, 1 for other start failures, 0 when detached. */
int capsa_exec_exit_status(const struct capsa_exec_result *res);

/* Build the exec.start JSON (exposed for tests). */
json_t *capsa_exec_start_json(const struct capsa_exec_opts *o);

#endif
