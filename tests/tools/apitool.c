/* apitool.c - drives sandboxes through the public libcapsa API (include/capsa.h only) for
 * tests/e2e/api.bats.
 *
 *   apitool create SPEC.json [--detached] [--replace] [--detach] [--hold] [--stop]
 *                  [--exec ARG...]          create (attached unless --detached), optionally run
 *                                           one command and print its output, then: --detach
 *                                           disarms the parent watch, --hold prints "held" and
 *                                           waits to be killed, --stop stops it
 *   apitool exec NAME [--stdin TEXT] [--env K=V] [--cwd DIR] [--timeout MS] [--max N] -- ARG...
 *   apitool status NAME                     prints "STATUS PID ATTACHED"
 *   apitool stop NAME | rm NAME
 *
 * exec prints the command's stdout, then its stderr to stderr, and exits with its exit code;
 * "truncated" lines go to stderr when output was cut. Errors print "apitool: MESSAGE (errno N)"
 * and exit 99.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "capsa.h"

static int fail(const char *what, const capsa_err *err)
{
    fprintf(stderr, "apitool: %s: %s (errno %d)\n", what, err->msg, err->code);
    return 99;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    size_t len = 0, cap = 0, n;

    if (!f)
        return NULL;
    do {
        if (len + 4096 + 1 > cap) {
            char *nb;
            cap = (cap ? cap * 2 : 8192);
            nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, 4096, f);
        len += n;
    } while (n > 0);
    fclose(f);
    if (buf)
        buf[len] = '\0';
    return buf;
}

static int print_out(const struct capsa_exec_out *out)
{
    fwrite(out->stdout_data, 1, out->stdout_len, stdout);
    fflush(stdout);
    fwrite(out->stderr_data, 1, out->stderr_len, stderr);
    if (out->stdout_truncated)
        fprintf(stderr, "apitool: stdout truncated\n");
    if (out->stderr_truncated)
        fprintf(stderr, "apitool: stderr truncated\n");
    if (out->timed_out)
        fprintf(stderr, "apitool: timed out\n");
    return out->exit_code;
}

static int cmd_create(capsa_ctx *ctx, int argc, char **argv)
{
    unsigned flags = 0;
    int detach = 0, hold = 0, stop = 0, rc = 0;
    const char *const *cmd = NULL;
    capsa_err err = {0};
    capsa_sandbox *sb;
    char *spec;

    if (argc < 1) {
        fprintf(stderr, "apitool create SPEC.json [flags]\n");
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--detached"))
            flags |= CAPSA_START_DETACHED;
        else if (!strcmp(argv[i], "--replace"))
            flags |= CAPSA_REPLACE;
        else if (!strcmp(argv[i], "--detach"))
            detach = 1;
        else if (!strcmp(argv[i], "--hold"))
            hold = 1;
        else if (!strcmp(argv[i], "--stop"))
            stop = 1;
        else if (!strcmp(argv[i], "--exec")) {
            cmd = (const char *const *)argv + i + 1;
            break;
        } else {
            fprintf(stderr, "apitool create: unknown flag %s\n", argv[i]);
            return 2;
        }
    }
    spec = slurp(argv[0]);
    if (!spec) {
        perror(argv[0]);
        return 2;
    }
    sb = capsa_sandbox_create(ctx, spec, flags, &err);
    free(spec);
    if (!sb)
        return fail("create", &err);
    printf("created %s attached=%d\n", capsa_sandbox_name(sb), capsa_sandbox_attached(sb));
    fflush(stdout);
    if (cmd && cmd[0]) {
        struct capsa_exec_out out;
        if (capsa_sandbox_exec(sb, cmd, NULL, &out, &err) < 0)
            rc = fail("exec", &err);
        else
            rc = print_out(&out);
        capsa_exec_out_free(&out);
    }
    if (detach && capsa_sandbox_detach(sb, &err) < 0)
        rc = fail("detach", &err);
    if (hold) {
        printf("held\n");
        fflush(stdout);
        for (;;)
            pause(); /* until killed */
    }
    if (stop && capsa_sandbox_stop(sb, -1, &err) < 0)
        rc = fail("stop", &err);
    capsa_sandbox_release(sb);
    return rc;
}

static int cmd_exec(capsa_ctx *ctx, int argc, char **argv)
{
    struct capsa_exec_req req = {0};
    struct capsa_exec_out out;
    const char *env[64] = {0};
    size_t nenv = 0;
    capsa_err err = {0};
    capsa_sandbox *sb;
    int i, rc;

    if (argc < 1)
        return 2;
    for (i = 1; i < argc && strcmp(argv[i], "--"); i++) {
        if (i + 1 >= argc)
            return 2;
        if (!strcmp(argv[i], "--stdin")) {
            req.stdin_data = argv[++i];
            req.stdin_len = strlen(argv[i]);
        } else if (!strcmp(argv[i], "--env") && nenv < 63) {
            env[nenv++] = argv[++i];
        } else if (!strcmp(argv[i], "--cwd")) {
            req.cwd = argv[++i];
        } else if (!strcmp(argv[i], "--timeout")) {
            req.timeout_ms = strtoull(argv[++i], NULL, 10);
        } else if (!strcmp(argv[i], "--max")) {
            req.max_output = strtoull(argv[++i], NULL, 10);
        } else {
            return 2;
        }
    }
    req.env = nenv ? env : NULL;
    sb = capsa_sandbox_get(ctx, argv[0], &err);
    if (!sb)
        return fail("get", &err);
    if (capsa_sandbox_exec(sb, i < argc ? (const char *const *)argv + i + 1 : NULL, &req, &out,
                           &err) < 0)
        rc = fail("exec", &err);
    else
        rc = print_out(&out);
    capsa_exec_out_free(&out);
    capsa_sandbox_release(sb);
    return rc;
}

int main(int argc, char **argv)
{
    capsa_err err = {0};
    capsa_ctx *ctx;
    capsa_sandbox *sb;
    int rc = 0;

    if (argc < 2) {
        fprintf(stderr, "usage: apitool create|exec|status|stop|rm ...\n");
        return 2;
    }
    ctx = capsa_open(NULL, &err);
    if (!ctx)
        return fail("open", &err);
    if (!strcmp(argv[1], "create")) {
        rc = cmd_create(ctx, argc - 2, argv + 2);
    } else if (!strcmp(argv[1], "exec")) {
        rc = cmd_exec(ctx, argc - 2, argv + 2);
    } else if (argc == 3 &&
               (!strcmp(argv[1], "status") || !strcmp(argv[1], "stop") || !strcmp(argv[1], "rm"))) {
        sb = capsa_sandbox_get(ctx, argv[2], &err);
        if (!sb) {
            rc = fail("get", &err);
        } else if (!strcmp(argv[1], "status")) {
            struct capsa_sandbox_info info;
            if (capsa_sandbox_status(sb, &info, &err) < 0)
                rc = fail("status", &err);
            else
                printf("%s %d %d\n", info.status, info.supervisor_pid, info.attached);
        } else if (!strcmp(argv[1], "stop")) {
            if (capsa_sandbox_stop(sb, -1, &err) < 0)
                rc = fail("stop", &err);
        } else if (capsa_sandbox_remove(sb, CAPSA_FORCE, &err) < 0) {
            rc = fail("rm", &err);
        }
        capsa_sandbox_release(sb);
    } else {
        fprintf(stderr, "apitool: unknown command %s\n", argv[1]);
        rc = 2;
    }
    capsa_close(ctx);
    return rc;
}
