/* kernel.c - locating the guest kernel (capsa's, or Debian's as the fallback) and the
 * capsa-agent binary; host TSC frequency. */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/paths.h"
#include "vm/kernel.h"
#include "vm/vm-config.h"

static int is_regular(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int copy_out(char *buf, size_t len, const char *p, capsa_err *err)
{
    int n = snprintf(buf, len, "%s", p);
    if (n < 0 || (size_t)n >= len)
        return capsa_err_set(err, ENAMETOOLONG, "path %s too long", p);
    return 0;
}

int capsa_vm_kernel_path(char *buf, size_t len, capsa_err *err)
{
    const char *env = getenv("CAPSA_KERNEL");
    char p[PATH_MAX];

    if (env && *env) {
        if (!is_regular(env))
            return capsa_err_set(err, ENOENT,
                                 "CAPSA_KERNEL=%s: not a readable kernel image (expected an "
                                 "uncompressed PVH vmlinux)",
                                 env);
        return copy_out(buf, len, env, err);
    }
    if (capsa_path(p, sizeof(p), err, "kernel/current/vmlinux") < 0)
        return -1;
    if (!is_regular(p))
        return capsa_err_set(err, ENOENT,
                             "no guest kernel at %s: build it with scripts/build-kernel "
                             "(or point CAPSA_KERNEL at a PVH vmlinux)",
                             p);
    return copy_out(buf, len, p, err);
}

const char *capsa_vm_kernel_kind_name(enum capsa_vm_kernel_kind kind)
{
    return kind == CAPSA_VM_KERNEL_DEBIAN ? "debian" : "capsa";
}

/* The first line of a small file, printable ASCII only; -1 when absent or odd. */
static int read_word(const char *path, char *buf, size_t len)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    size_t n;

    if (!f || !fgets(buf, (int)len, f))
        return -1;
    n = strcspn(buf, "\n");
    buf[n] = '\0';
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)buf[i] <= 0x20 || (unsigned char)buf[i] >= 0x7f)
            return -1;
    return 0;
}

int capsa_vm_kernel_debian(struct capsa_vm_kernel *k, capsa_err *err)
{
    char link[PATH_MAX], dir[PATH_MAX], p[PATH_MAX + 32];

    memset(k, 0, sizeof(*k));
    if (capsa_path(link, sizeof(link), err, "kernel/debian") < 0)
        return -1;
    /* resolve the link once: every file comes from the same fetched version */
    if (!realpath(link, dir))
        return capsa_err_set(
            err, ENOENT, "no Debian kernel at %s: fetch it with scripts/fetch-debian-kernel", link);
    snprintf(p, sizeof(p), "%s/vmlinux", dir);
    if (!is_regular(p))
        return capsa_err_set(err, ENOENT,
                             "Debian kernel %s is incomplete (no vmlinux): run "
                             "scripts/fetch-debian-kernel --force",
                             dir);
    if (copy_out(k->path, sizeof(k->path), p, err) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/modules.order", dir);
    if (!is_regular(p))
        return capsa_err_set(err, ENOENT,
                             "Debian kernel %s is incomplete (no modules.order): run "
                             "scripts/fetch-debian-kernel --force",
                             dir);
    snprintf(p, sizeof(p), "%s/release", dir);
    if (read_word(p, k->release, sizeof(k->release)) < 0)
        return capsa_err_set(err, EINVAL,
                             "Debian kernel %s: %s is missing or not one word: run "
                             "scripts/fetch-debian-kernel --force",
                             dir, p);
    if (copy_out(k->modules_dir, sizeof(k->modules_dir), dir, err) < 0)
        return -1;
    k->kind = CAPSA_VM_KERNEL_DEBIAN;
    return 0;
}

int capsa_vm_kernel_find(struct capsa_vm_kernel *k, capsa_err *err)
{
    static bool warned;
    const char *flavor = getenv("CAPSA_KERNEL_FLAVOR");
    const char *env = getenv("CAPSA_KERNEL");
    capsa_err own = {0}, deb = {0};

    if (flavor && *flavor && strcmp(flavor, "auto") != 0 && strcmp(flavor, "capsa") != 0 &&
        strcmp(flavor, "debian") != 0)
        return capsa_err_set(err, EINVAL, "CAPSA_KERNEL_FLAVOR=%s: expected auto, capsa or debian",
                             flavor);
    if (flavor && strcmp(flavor, "debian") == 0) {
        if (capsa_vm_kernel_debian(k, err) < 0)
            return capsa_err_prefix(err, "CAPSA_KERNEL_FLAVOR=debian");
        return 0;
    }
    memset(k, 0, sizeof(*k));
    k->kind = CAPSA_VM_KERNEL_CAPSA;
    if (capsa_vm_kernel_path(k->path, sizeof(k->path), &own) == 0)
        return 0;
    /* asked for capsa's kernel, or named one explicitly: no silent substitute */
    if ((flavor && strcmp(flavor, "capsa") == 0) || (env && *env)) {
        if (err)
            *err = own;
        return -1;
    }
    if (capsa_vm_kernel_debian(k, &deb) == 0) {
        if (!warned)
            fprintf(stderr,
                    "capsa: warning: capsa's guest kernel is not built; booting Debian's kernel "
                    "%s instead (slower): build capsa's with scripts/build-kernel\n",
                    k->release);
        warned = true;
        return 0;
    }
    memset(k, 0, sizeof(*k));
    return capsa_err_set(err, ENOENT, "no usable guest kernel: %s; and %s", own.msg, deb.msg);
}

int capsa_vm_agent_path(char *buf, size_t len, capsa_err *err)
{
    const char *env = getenv("CAPSA_AGENT");
    char exe[PATH_MAX], cand[PATH_MAX + 64];
    ssize_t n;

    if (env && *env) {
        if (!is_regular(env))
            return capsa_err_set(err, ENOENT, "CAPSA_AGENT=%s: no such file", env);
        return copy_out(buf, len, env, err);
    }
    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        char *slash;
        exe[n] = '\0';
        slash = strrchr(exe, '/');
        if (slash) {
            *slash = '\0';
            /* build tree: build/src/cli/capsa or build/tests/unit/test_x */
            snprintf(cand, sizeof(cand), "%s/../../agent/capsa-agent", exe);
            if (is_regular(cand))
                return copy_out(buf, len, cand, err);
            /* relocated install: <prefix>/bin/capsa */
            snprintf(cand, sizeof(cand), "%s/../libexec/capsa/capsa-agent", exe);
            if (is_regular(cand))
                return copy_out(buf, len, cand, err);
        }
    }
    snprintf(cand, sizeof(cand), "%s/capsa/capsa-agent", CAPSA_LIBEXECDIR);
    if (is_regular(cand))
        return copy_out(buf, len, cand, err);
    return capsa_err_set(err, ENOENT,
                         "capsa-agent not found (looked beside %s and in %s/capsa): build it "
                         "(ninja agent/capsa-agent) or set CAPSA_AGENT",
                         n > 0 ? exe : "/proc/self/exe", CAPSA_LIBEXECDIR);
}

unsigned long capsa_vm_host_tsc_khz(void)
{
    _cleanup_fclose_ FILE *f = fopen("/sys/devices/system/cpu/cpu0/tsc_freq_khz", "re");
    _cleanup_fclose_ FILE *c = NULL;
    char line[256];
    unsigned long khz = 0;

    if (f && fscanf(f, "%lu", &khz) == 1 && khz > 0)
        return khz;
    c = fopen("/proc/cpuinfo", "re");
    if (!c)
        return 0;
    while (fgets(line, sizeof(line), c)) {
        double mhz;
        if (strncmp(line, "cpu MHz", 7) != 0)
            continue;
        char *colon = strchr(line, ':');
        if (colon && sscanf(colon + 1, "%lf", &mhz) == 1 && mhz > 1 && mhz < 100000)
            return (unsigned long)(mhz * 1000.0 + 0.5);
        break;
    }
    return 0;
}
