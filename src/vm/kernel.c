/* kernel.c - locating the guest kernel and the capsa-agent binary; host TSC frequency. */
#include <errno.h>
#include <limits.h>
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
