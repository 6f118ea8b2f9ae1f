/* cli.h - the capsa command-line verbs; each verb group lives in its own file. */
#ifndef CAPSA_CLI_H
#define CAPSA_CLI_H

#include <stdbool.h>

struct cli_verb {
    const char *name;
    const char *alias;
    const char *summary;
    int (*run)(int argc, char **argv); /* argv[0] is the verb name */
    bool hidden;
};

/* Verb entry points (exit status is the return value). */
int cmd_spec(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_pull(int argc, char **argv);
int cmd_image(int argc, char **argv);
int cmd_load(int argc, char **argv);
int cmd_save(int argc, char **argv);
int cmd_registry(int argc, char **argv); /* cmd_registry.c */
int cmd_version(int argc, char **argv);
/* cmd_sandbox.c: named sandboxes */
int cmd_create(int argc, char **argv);
int cmd_run_named(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_restart(int argc, char **argv);
int cmd_rm(int argc, char **argv);
int cmd_ls(int argc, char **argv);
int cmd_ps(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_exec(int argc, char **argv);
int cmd_ping(int argc, char **argv);
int cmd_touch(int argc, char **argv);
int cmd_supervisor(int argc, char **argv);
/* cmd_logs.c: logs and metrics */
int cmd_logs(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
/* cmd_install.c: command shims */
int cmd_install(int argc, char **argv);
int cmd_uninstall(int argc, char **argv);

/* Print "capsa: error: MSG" to stderr; returns exit status 1. */
int cli_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
