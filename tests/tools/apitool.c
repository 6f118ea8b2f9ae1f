/* apitool.c - drives sandboxes through the public libcapsa API (include/capsa.h only) for
 * tests/e2e/api.bats.
 *
 *   apitool create SPEC.json [--detached] [--replace] [--detach] [--hold] [--stop]
 *                  [--exec ARG...]          create (attached unless --detached), optionally run
 *                                           one command and print its output, then: --detach
 *                                           disarms the parent watch, --hold prints "held" and
 *                                           waits to be killed, --stop stops it
 *   apitool exec NAME [--stdin TEXT] [--env K=V] [--cwd DIR] [--timeout MS] [--max N] -- ARG...
 *                  [--insecure] [--ca-certs PEM]   (pull options: capsa_sandbox_create2)
 *   apitool status NAME                     prints "STATUS PID ATTACHED"
 *   apitool info NAME                       prints "STATUS IMAGE CREATED_MS STARTED_MS"
 *   apitool stop NAME | rm NAME
 *   apitool list [SELECTOR]                 prints the matching names, one a line
 *   apitool stream NAME [--stdin TEXT] [--timeout MS] [--cancel] -- ARG...
 *                                           streaming exec: every line of output as
 *                                           "MS out|err TEXT" (MS: milliseconds since the call
 *                                           when the piece arrived); exits with the exit code;
 *                                           --cancel stops at the first piece
 *   apitool fs NAME write GUEST HOSTFILE [MODE] | read GUEST HOSTFILE [MAX] | stat GUEST
 *                  | ls GUEST | mkdir GUEST [-p] | rm GUEST [-r] | mv FROM TO
 *                                           stat prints "KIND SIZE MODE(octal)", ls prints
 *                                           "NAME KIND SIZE" lines
 *
 * exec prints the command's stdout, then its stderr to stderr, and exits with its exit code;
 * "truncated" lines go to stderr when output was cut. Errors print "apitool: MESSAGE (errno N)"
 * and exit 99.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
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
    struct capsa_create_opts copts = {0};
    unsigned flags = 0;
    int detach = 0, hold = 0, stop = 0, rc = 0, use_opts = 0;
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
        else if (!strcmp(argv[i], "--insecure")) {
            copts.insecure = true;
            use_opts = 1;
        } else if (!strcmp(argv[i], "--ca-certs") && i + 1 < argc) {
            copts.ca_certs = argv[++i];
            use_opts = 1;
        } else if (!strcmp(argv[i], "--exec")) {
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
    sb = use_opts ? capsa_sandbox_create2(ctx, spec, flags, &copts, &err)
                  : capsa_sandbox_create(ctx, spec, flags, &err);
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

static int cmd_list(capsa_ctx *ctx, int argc, char **argv)
{
    capsa_err err = {0};
    char **names;
    size_t n;

    if (capsa_sandbox_list(ctx, argc > 0 ? argv[0] : NULL, &names, &n, &err) < 0)
        return fail("list", &err);
    for (size_t i = 0; i < n; i++)
        printf("%s\n", names[i]);
    capsa_sandbox_names_free(names);
    return 0;
}

struct stream_ud {
    struct timespec t0;
    int cancel;
};

static long since_ms(const struct timespec *t0)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

static int on_piece(const char *which, const void *buf, size_t len, struct stream_ud *u)
{
    long ms = since_ms(&u->t0);
    const char *p = buf, *end = p + len;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
        printf("%ld %s %.*s\n", ms, which, (int)l, p);
        p += l + (nl ? 1 : 0);
    }
    fflush(stdout);
    return u->cancel;
}

static int on_out(const void *buf, size_t len, void *ud)
{
    return on_piece("out", buf, len, ud);
}

static int on_err(const void *buf, size_t len, void *ud)
{
    return on_piece("err", buf, len, ud);
}

static int cmd_stream(capsa_ctx *ctx, int argc, char **argv)
{
    struct capsa_exec_req req = {0};
    struct stream_ud u = {0};
    struct capsa_exec_callbacks cb = {.on_stdout = on_out, .on_stderr = on_err, .ud = &u};
    capsa_err err = {0};
    capsa_sandbox *sb;
    int i, rc, code = 0, sig = 0;

    if (argc < 1)
        return 2;
    for (i = 1; i < argc && strcmp(argv[i], "--"); i++) {
        if (!strcmp(argv[i], "--cancel"))
            u.cancel = 1;
        else if (i + 1 >= argc)
            return 2;
        else if (!strcmp(argv[i], "--stdin")) {
            req.stdin_data = argv[++i];
            req.stdin_len = strlen(argv[i]);
        } else if (!strcmp(argv[i], "--timeout"))
            req.timeout_ms = strtoull(argv[++i], NULL, 10);
        else
            return 2;
    }
    sb = capsa_sandbox_get(ctx, argv[0], &err);
    if (!sb)
        return fail("get", &err);
    clock_gettime(CLOCK_MONOTONIC, &u.t0);
    if (capsa_sandbox_exec_stream(sb, i < argc ? (const char *const *)argv + i + 1 : NULL, &req,
                                  &cb, &code, &sig, &err) < 0)
        rc = fail("stream", &err);
    else
        rc = code;
    capsa_sandbox_release(sb);
    return rc;
}

static int write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    if (!f || fwrite(data, 1, len, f) != len) {
        perror(path);
        if (f)
            fclose(f);
        return 2;
    }
    return fclose(f) == 0 ? 0 : 2;
}

static const char *kind_name(enum capsa_file_kind k)
{
    switch (k) {
    case CAPSA_FILE_REGULAR:
        return "file";
    case CAPSA_FILE_DIR:
        return "dir";
    case CAPSA_FILE_SYMLINK:
        return "symlink";
    default:
        return "other";
    }
}

static int cmd_fs(capsa_ctx *ctx, int argc, char **argv)
{
    capsa_err err = {0};
    capsa_sandbox *sb;
    const char *op;
    int rc = 0;

    if (argc < 3) {
        fprintf(stderr, "apitool fs NAME OP PATH ...\n");
        return 2;
    }
    op = argv[1];
    sb = capsa_sandbox_get(ctx, argv[0], &err);
    if (!sb)
        return fail("get", &err);
    if (!strcmp(op, "write") && argc >= 4) {
        FILE *f = fopen(argv[3], "rb");
        uint8_t *buf = NULL;
        size_t len = 0, cap = 0, r;
        do {
            if (len + 65536 > cap) {
                cap = cap ? cap * 2 : 1 << 20;
                buf = realloc(buf, cap);
            }
            r = f && buf ? fread(buf + len, 1, 65536, f) : 0;
            len += r;
        } while (r > 0);
        if (!f || !buf) {
            perror(argv[3]);
            rc = 2;
        } else if (capsa_fs_write(sb, argv[2], buf, len,
                                  argc > 4 ? (int)strtol(argv[4], NULL, 8) : -1, &err) < 0) {
            rc = fail("fs write", &err);
        }
        if (f)
            fclose(f);
        free(buf);
    } else if (!strcmp(op, "read") && argc >= 4) {
        uint8_t *data;
        size_t len;
        if (capsa_fs_read(sb, argv[2], &data, &len, argc > 4 ? strtoull(argv[4], NULL, 10) : 0,
                          &err) < 0)
            rc = fail("fs read", &err);
        else
            rc = write_file(argv[3], data, len);
        if (rc != 99)
            free(data);
    } else if (!strcmp(op, "stat")) {
        struct capsa_file_stat st;
        if (capsa_fs_stat(sb, argv[2], &st, &err) < 0)
            rc = fail("fs stat", &err);
        else
            printf("%s %llu %o\n", kind_name(st.kind), (unsigned long long)st.size, st.mode);
    } else if (!strcmp(op, "ls")) {
        struct capsa_dir_entry *e;
        size_t n;
        int trunc;
        if (capsa_fs_list(sb, argv[2], &e, &n, &trunc, &err) < 0) {
            rc = fail("fs ls", &err);
        } else {
            for (size_t i = 0; i < n; i++)
                printf("%s %s %llu\n", e[i].name, kind_name(e[i].kind),
                       (unsigned long long)e[i].size);
            if (trunc)
                printf("(truncated)\n");
            capsa_fs_list_free(e, n);
        }
    } else if (!strcmp(op, "mkdir")) {
        if (capsa_fs_mkdir(sb, argv[2], -1, argc > 3 && !strcmp(argv[3], "-p"), &err) < 0)
            rc = fail("fs mkdir", &err);
    } else if (!strcmp(op, "rm")) {
        if (capsa_fs_remove(sb, argv[2], argc > 3 && !strcmp(argv[3], "-r"), &err) < 0)
            rc = fail("fs rm", &err);
    } else if (!strcmp(op, "mv") && argc >= 4) {
        if (capsa_fs_rename(sb, argv[2], argv[3], &err) < 0)
            rc = fail("fs mv", &err);
    } else {
        fprintf(stderr, "apitool fs: unknown op %s or missing arguments\n", op);
        rc = 2;
    }
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
        fprintf(stderr, "usage: apitool create|exec|stream|list|fs|status|info|stop|rm ...\n");
        return 2;
    }
    ctx = capsa_open(NULL, &err);
    if (!ctx)
        return fail("open", &err);
    if (!strcmp(argv[1], "create")) {
        rc = cmd_create(ctx, argc - 2, argv + 2);
    } else if (!strcmp(argv[1], "exec")) {
        rc = cmd_exec(ctx, argc - 2, argv + 2);
    } else if (!strcmp(argv[1], "stream")) {
        rc = cmd_stream(ctx, argc - 2, argv + 2);
    } else if (!strcmp(argv[1], "list")) {
        rc = cmd_list(ctx, argc - 2, argv + 2);
    } else if (!strcmp(argv[1], "fs")) {
        rc = cmd_fs(ctx, argc - 2, argv + 2);
    } else if (argc == 3 && (!strcmp(argv[1], "status") || !strcmp(argv[1], "info") ||
                             !strcmp(argv[1], "stop") || !strcmp(argv[1], "rm"))) {
        sb = capsa_sandbox_get(ctx, argv[2], &err);
        if (!sb) {
            rc = fail("get", &err);
        } else if (!strcmp(argv[1], "status")) {
            struct capsa_sandbox_info info;
            if (capsa_sandbox_status(sb, &info, &err) < 0)
                rc = fail("status", &err);
            else
                printf("%s %d %d\n", info.status, info.supervisor_pid, info.attached);
        } else if (!strcmp(argv[1], "info")) {
            struct capsa_sandbox_info info;
            if (capsa_sandbox_status(sb, &info, &err) < 0)
                rc = fail("info", &err);
            else
                printf("%s %s %lld %lld\n", info.status, info.image[0] ? info.image : "-",
                       (long long)info.created_ms, (long long)info.started_ms);
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
