/* vmtool.c - drives libcapsa's boot/exec/fs layers directly, for end-to-end tests
 * and benchmarks that need many operations in one booted VM.
 *
 *   vmtool ROOTFS fs-roundtrip         fs ops against the real guest, prints "fs ok"
 *   vmtool ROOTFS exec-bench N         N sequential `true` execs, prints latency stats
 *   vmtool ROOTFS idle-rss             boot a 256 MiB VM, idle 2 s, print host RSS
 *   vmtool ROOTFS ping-bench N         N pings, prints round-trip stats
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "common/paths.h"
#include "lib/boot.h"
#include "lib/exec.h"
#include "lib/fsc.h"
#include "lib/rootfs.h"
#include "vm/qemu.h"

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void stats(const char *what, uint64_t *v, size_t n)
{
    qsort(v, n, sizeof(*v), cmp_u64);
    printf("%s n=%zu median_us=%llu p90_us=%llu min_us=%llu max_us=%llu\n", what, n,
           (unsigned long long)v[n / 2], (unsigned long long)v[n * 9 / 10],
           (unsigned long long)v[0], (unsigned long long)v[n - 1]);
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    long kib = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if ((x) < 0) {                                                                             \
            fprintf(stderr, "vmtool: %s failed: %s\n", #x, err.msg);                               \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

static int fs_roundtrip(struct capsa_agentc *c)
{
    capsa_err err = {0};
    size_t n = 3 * 1024 * 1024 + 17, got_len;
    uint8_t *data = malloc(n), *got;
    json_t *st, *entries;

    for (size_t i = 0; i < n; i++)
        data[i] = (uint8_t)(i * 2654435761u >> 13);
    CHECK(capsa_fsc_mkdir(c, "/tmp/fsrt/a/b", 0755, &err));
    CHECK(capsa_fsc_write(c, "/tmp/fsrt/a/b/blob", data, n, 0640, &err));
    CHECK(capsa_fsc_read(c, "/tmp/fsrt/a/b/blob", &got, &got_len, &err));
    if (got_len != n || memcmp(got, data, n) != 0) {
        fprintf(stderr, "vmtool: read back %zu bytes, differ from the %zu written\n", got_len, n);
        return 1;
    }
    free(got);
    CHECK(capsa_fsc_stat(c, "/tmp/fsrt/a/b/blob", &st, &err));
    if (json_integer_value(json_object_get(st, "size")) != (json_int_t)n ||
        (json_integer_value(json_object_get(st, "mode")) & 0777) != 0640 ||
        strcmp(json_string_value(json_object_get(st, "kind")) ?: "", "file") != 0) {
        fprintf(stderr, "vmtool: stat mismatch: %s\n", json_dumps(st, 0));
        return 1;
    }
    json_decref(st);
    CHECK(capsa_fsc_rename(c, "/tmp/fsrt/a/b/blob", "/tmp/fsrt/a/moved", &err));
    CHECK(capsa_fsc_list(c, "/tmp/fsrt/a", &entries, &err));
    if (json_array_size(entries) != 2) {
        fprintf(stderr, "vmtool: expected 2 entries in /tmp/fsrt/a, got %zu\n",
                json_array_size(entries));
        return 1;
    }
    json_decref(entries);
    /* errors carry the guest path and code */
    if (capsa_fsc_stat(c, "/tmp/fsrt/nope", &st, &err) == 0 || !strstr(err.msg, "not_found")) {
        fprintf(stderr, "vmtool: stat of a missing path did not fail with not_found: %s\n",
                err.msg);
        return 1;
    }
    if (capsa_fsc_remove(c, "/tmp/fsrt", false, &err) == 0) {
        fprintf(stderr, "vmtool: non-recursive remove of a full directory succeeded\n");
        return 1;
    }
    CHECK(capsa_fsc_remove(c, "/tmp/fsrt", true, &err));
    if (capsa_fsc_stat(c, "/tmp/fsrt", &st, &err) == 0) {
        fprintf(stderr, "vmtool: /tmp/fsrt still exists after remove\n");
        return 1;
    }
    free(data);
    printf("fs ok\n");
    return 0;
}

static int exec_bench(struct capsa_agentc *c, int n)
{
    char *argv[] = {getenv("VMTOOL_EXEC") ? getenv("VMTOOL_EXEC") : "true", NULL};
    struct capsa_exec_opts o = {.argv = argv,
                                .stdin_fd = -1,
                                .stdout_fd = 1,
                                .stderr_fd = 2,
                                .signal_fd = -1,
                                .winsize_fd = -1,
                                .detach_key = -1};
    struct capsa_exec_result r;
    capsa_err err = {0};
    uint64_t *v = calloc((size_t)n, sizeof(*v));

    for (int i = 0; i < n; i++) {
        uint64_t t0 = capsa_now_us();
        CHECK(capsa_exec_run(c, &o, &r, &err));
        v[i] = capsa_now_us() - t0;
        if (r.end != CAPSA_EXEC_EXITED || r.code != 0) {
            fprintf(stderr, "vmtool: exec %d ended badly (%d, %d)\n", i, r.end, r.code);
            return 1;
        }
    }
    stats("exec", v, (size_t)n);
    free(v);
    return 0;
}

static int ping_bench(struct capsa_agentc *c, int n)
{
    capsa_err err = {0};
    uint64_t *v = calloc((size_t)n, sizeof(*v));

    for (int i = 0; i < n; i++)
        CHECK(capsa_agentc_ping(c, 10000, &v[i], &err));
    stats("ping", v, (size_t)n);
    free(v);
    return 0;
}

int main(int argc, char **argv)
{
    struct capsa_boot_opts bo = {0};
    struct capsa_booted *b;
    char run_dir[4096];
    capsa_err err = {0};
    int rc = 2;

    if (argc < 3) {
        fprintf(stderr, "usage: vmtool ROOTFS fs-roundtrip|exec-bench N|ping-bench N|idle-rss\n");
        return 2;
    }
    bo.rootfs = argv[1];
    bo.memory_mib = 256;
    if (capsa_path(run_dir, sizeof(run_dir), &err, "run/vmtool-%d", (int)getpid()) < 0 ||
        capsa_mkdir_p(run_dir, 0700, &err) < 0) {
        fprintf(stderr, "vmtool: %s\n", err.msg);
        return 1;
    }
    /* ROOTFS may also be an image reference already in the store (or a disk image) */
    struct capsa_rootfs_spec rs = {.source = argv[1], .state_dir = run_dir};
    struct capsa_rootfs root;
    if (capsa_rootfs_resolve(&rs, &root, &err) < 0) {
        fprintf(stderr, "vmtool: %s\n", err.msg);
        return 1;
    }
    bo.root = &root;
    if (capsa_boot(&bo, run_dir, &b, &err) < 0) {
        fprintf(stderr, "vmtool: %s\n", err.msg);
        capsa_rootfs_release(&root);
        return 1;
    }
    printf("boot_us=%llu\n", (unsigned long long)b->boot_us);
    if (!strcmp(argv[2], "fs-roundtrip"))
        rc = fs_roundtrip(&b->conn);
    else if (!strcmp(argv[2], "exec-bench") && argc > 3)
        rc = exec_bench(&b->conn, atoi(argv[3]));
    else if (!strcmp(argv[2], "ping-bench") && argc > 3)
        rc = ping_bench(&b->conn, atoi(argv[3]));
    else if (!strcmp(argv[2], "idle-rss")) {
        sleep(2);
        printf("qemu_rss_kib=%ld host_rss_kib=%ld\n", rss_kib(b->vm->pid), rss_kib(getpid()));
        rc = 0;
    } else
        fprintf(stderr, "vmtool: unknown command %s\n", argv[2]);
    if (capsa_boot_stop(b, 5000, true, &err) < 0) {
        fprintf(stderr, "vmtool: stop: %s\n", err.msg);
        rc = rc ? rc : 1;
    }
    capsa_rootfs_release(&root);
    return rc;
}
