/* cli_exec.h - what `capsa run` and `capsa exec` share: the --rlimit grammar and one exec
 * session bridged to this process's terminal or pipes. */
#ifndef CAPSA_CLI_EXEC_H
#define CAPSA_CLI_EXEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/agentc.h"

/* "nofile=1024[:2048]" -> {resource, soft, hard}; NULL with err set. */
json_t *cli_parse_rlimit(const char *s, capsa_err *err);

struct cli_exec {
    char **cmd;       /* NULL-terminated */
    char *const *env; /* "K=V", NULL-terminated */
    const char *workdir, *user;
    json_t *rlimits; /* array, may be empty */
    int tty;         /* -1 auto (stdin and stdout are terminals), 0 no, 1 yes */
    uint64_t timeout_ms;
    bool quiet;
};

/* Run x over ch with stdin/stdout/stderr, signals forwarded to the command, a raw
 * terminal and ctrl-] detach for PTY sessions. verb prefixes messages ("run",
 * "exec in NAME"); detach_note is printed after a detach; console_log (may be NULL) is
 * dumped when the channel fails. 0 with *status set to the shell-style exit status, or
 * -1 after printing why. */
int cli_exec_session(struct capsa_agentc *ch, const struct cli_exec *x, const char *verb,
                     const char *detach_note, const char *console_log, int *status);

/* Flag values shared by run, create and exec: each returns 0, or 1 after printing
 * an error naming the flag and what was expected. */
int cli_opt_cpus(const char *arg, int *out);
int cli_opt_memory(const char *arg, uint64_t *mib);
int cli_opt_env(const char *arg, char **env, size_t *n, size_t max);
int cli_opt_workdir(const char *arg, const char **out);
int cli_opt_user(const char *arg, const char **out);
int cli_opt_hostname(const char *arg, const char **out);
int cli_opt_timeout(const char *arg, uint64_t *ms);
int cli_opt_rlimit(const char *arg, json_t *rlimits);

#endif
