/* main.c - capsa entry point: global flags, then dispatch to a verb. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "capsa.h"
#include "cli/cli.h"
#include "common/log.h"

static const struct cli_verb verbs[] = {
    {"image", NULL, "List, inspect and remove pulled OCI images", cmd_image, false},
    {"pull", NULL, "Download an OCI image from a registry", cmd_pull, false},
    {"load", NULL, "Import images from a docker or OCI archive", cmd_load, false},
    {"save", NULL, "Write images as a docker or OCI archive", cmd_save, false},
    {"registry", NULL, "Log in to and out of registries, list stored logins", cmd_registry, false},
    {"run", NULL, "Boot a sandbox, run a command in it, and remove it", cmd_run, false},
    {"spec", NULL, "Check and normalize a SandboxSpec JSON document", cmd_spec, false},
    {"version", NULL, "Print the capsa version", cmd_version, false},
    {"create", NULL, "Create a named sandbox, boot it and leave it running", cmd_create, false},
    {"start", NULL, "Start stopped sandboxes", cmd_start, false},
    {"stop", NULL, "Stop running sandboxes", cmd_stop, false},
    {"restart", NULL, "Stop then start sandboxes", cmd_restart, false},
    {"rm", "remove", "Remove sandboxes and their state", cmd_rm, false},
    {"ls", "list", "List stored sandboxes", cmd_ls, false},
    {"ps", "status", "Show running sandboxes and their processes", cmd_ps, false},
    {"inspect", NULL, "Show a sandbox's config, status and runs", cmd_inspect, false},
    {"exec", NULL, "Run a command in a named sandbox", cmd_exec, false},
    {"ping", NULL, "Check that a sandbox's guest agent answers", cmd_ping, false},
    {"touch", NULL, "Record activity (postpone a sandbox's idle timeout)", cmd_touch, false},
    {"install", NULL, "Install a command shim that runs in a sandbox", cmd_install, false},
    {"uninstall", NULL, "Remove command shims written by install", cmd_uninstall, false},
    {"logs", NULL, "Print a sandbox's captured output and system log", cmd_logs, false},
    {"metrics", NULL, "Show CPU, memory and disk metrics of sandboxes", cmd_metrics, false},
    {"__supervisor", NULL, "Per-sandbox supervisor (internal)", cmd_supervisor, true},
};

int cli_fail(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    fprintf(stderr, "capsa: error: %s\n", buf);
    return 1;
}

static void usage(FILE *out)
{
    fprintf(out, "Usage: capsa [--log-level LEVEL] COMMAND [ARGS...]\n\n"
                 "capsa runs untrusted code inside local microVMs.\n\nCommands:\n");
    for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
        if (!verbs[i].hidden)
            fprintf(out, "  %-12s %s\n", verbs[i].name, verbs[i].summary);
    fprintf(out, "\nGlobal options:\n"
                 "  --log-level LEVEL  error|warn|info|debug|trace (default warn; env CAPSA_LOG)\n"
                 "  --error, --warn, --info, --debug, --trace  shorthands for --log-level\n"
                 "  -h, --help         show this help; `capsa COMMAND --help` for a command\n"
                 "  -V, --version      print the version\n"
                 "\nEnvironment:\n"
                 "  CAPSA_HOME  state directory (default ~/.capsa)\n"
                 "  CAPSA_LOG   log level\n");
}

int cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("capsa %s\n", capsa_version());
    return 0;
}

int main(int argc, char **argv)
{
    int i = 1;

    capsa_log_init_from_env();
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "-V") || !strcmp(a, "--version")) {
            return cmd_version(0, NULL);
        } else if (!strcmp(a, "--log-level")) {
            int lvl = i + 1 < argc ? capsa_log_parse_level(argv[i + 1]) : -1;
            if (lvl < 0)
                return cli_fail("--log-level: expected error|warn|info|debug|trace");
            capsa_log_set_level((enum capsa_log_level)lvl);
            i++;
        } else if (a[0] == '-' && a[1] == '-' && capsa_log_parse_level(a + 2) >= 0) {
            capsa_log_set_level((enum capsa_log_level)capsa_log_parse_level(a + 2));
        } else {
            return cli_fail("unknown option %s (see capsa --help)", a);
        }
    }
    if (i >= argc) {
        usage(stderr);
        return 2;
    }
    for (size_t v = 0; v < sizeof(verbs) / sizeof(verbs[0]); v++)
        if (!strcmp(argv[i], verbs[v].name) || (verbs[v].alias && !strcmp(argv[i], verbs[v].alias)))
            return verbs[v].run(argc - i, argv + i);
    return cli_fail("unknown command '%s' (see capsa --help)", argv[i]);
}
