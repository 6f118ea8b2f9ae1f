/* accel.c - accelerator choice: KVM only when it really boots our guest (probed, cached).
 *
 * Theory of operation: /dev/kvm existing is not enough (a nested/paravirtual KVM may
 * open fine yet emulate for minutes and then fail), so AUTO boots the real kernel and
 * initramfs under KVM once and waits for the agent's first frame within a deadline.
 * The verdict is cached in $CAPSA_HOME/cache/accel-probe.json keyed by the kernel
 * image (path, size, mtime), the host kernel release and /dev/kvm presence; any change
 * re-probes. A guest that dies by itself before answering (a broken agent, not a broken
 * KVM) falls back to TCG without caching the verdict.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "proto/frame.h"
#include "vm/accel.h"
#include "vm/qemu.h"

#define CACHE_VERSION     1
#define CACHE_MAX_ENTRIES 8
#define PROBE_DEFAULT_MS  4000

int capsa_accel_parse(const char *s, enum capsa_accel *out, capsa_err *err)
{
    if (s && strcmp(s, "auto") == 0)
        *out = CAPSA_ACCEL_AUTO;
    else if (s && strcmp(s, "kvm") == 0)
        *out = CAPSA_ACCEL_KVM;
    else if (s && strcmp(s, "tcg") == 0)
        *out = CAPSA_ACCEL_TCG;
    else
        return capsa_err_set(err, EINVAL, "accel: expected auto, kvm or tcg, got \"%s\"",
                             s ? s : "(null)");
    return 0;
}

const char *capsa_accel_name(enum capsa_accel a)
{
    switch (a) {
    case CAPSA_ACCEL_AUTO:
        return "auto";
    case CAPSA_ACCEL_KVM:
        return "kvm";
    case CAPSA_ACCEL_TCG:
        return "tcg";
    }
    return "unknown";
}

int capsa_kvm_openable(char *why, size_t why_len)
{
    int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (why)
            snprintf(why, why_len, "/dev/kvm: %s", strerror(errno));
        return 0;
    }
    close(fd);
    return 1;
}

int capsa_accel_probe_key_fill(const char *kernel, struct capsa_accel_probe_key *k, capsa_err *err)
{
    struct stat st;
    struct utsname u;
    char real[PATH_MAX];

    memset(k, 0, sizeof(*k));
    /* key by the resolved file: kernel/current is a symlink that moves between builds */
    if (realpath(kernel, real))
        kernel = real;
    if (snprintf(k->kernel, sizeof(k->kernel), "%s", kernel) >= (int)sizeof(k->kernel))
        return capsa_err_set(err, ENAMETOOLONG, "kernel path %s too long", kernel);
    if (stat(kernel, &st) < 0)
        return capsa_err_set(err, errno, "kernel %s: %s", kernel, strerror(errno));
    k->kernel_size = (int64_t)st.st_size;
    k->kernel_mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    if (uname(&u) == 0)
        snprintf(k->host_release, sizeof(k->host_release), "%s", u.release);
    k->kvm_present = access("/dev/kvm", F_OK) == 0;
    return 0;
}

int capsa_accel_cache_path(char *buf, size_t len, capsa_err *err)
{
    return capsa_path(buf, len, err, "cache/accel-probe.json");
}

static bool entry_matches(json_t *e, const struct capsa_accel_probe_key *k)
{
    json_t *kvm = json_object_get(e, "kvm_present");
    const char *kernel = json_string_value(json_object_get(e, "kernel"));
    const char *rel = json_string_value(json_object_get(e, "host_release"));
    json_t *size = json_object_get(e, "kernel_size");
    json_t *mtime = json_object_get(e, "kernel_mtime_ns");

    return kernel && rel && json_is_boolean(kvm) && json_is_integer(size) &&
           json_is_integer(mtime) && strcmp(kernel, k->kernel) == 0 &&
           strcmp(rel, k->host_release) == 0 && json_boolean_value(kvm) == k->kvm_present &&
           json_integer_value(size) == k->kernel_size &&
           json_integer_value(mtime) == k->kernel_mtime_ns;
}

/* The entries array of a well-formed cache, or NULL. Returns a new reference. */
static json_t *cache_load(const char *path)
{
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    json_t *entries;

    if (!root)
        return NULL;
    entries = json_object_get(root, "entries");
    if (!json_is_integer(json_object_get(root, "version")) ||
        json_integer_value(json_object_get(root, "version")) != CACHE_VERSION ||
        !json_is_array(entries)) {
        json_decref(root);
        return NULL;
    }
    json_incref(entries);
    json_decref(root);
    return entries;
}

int capsa_accel_cache_lookup(const char *cache_path, const struct capsa_accel_probe_key *k,
                             enum capsa_accel *result, char *reason, size_t reason_len)
{
    json_t *entries = cache_load(cache_path), *e;
    size_t i;
    int hit = 0;

    if (!entries)
        return 0;
    json_array_foreach(entries, i, e)
    {
        const char *r = json_string_value(json_object_get(e, "result"));
        const char *why = json_string_value(json_object_get(e, "reason"));
        enum capsa_accel a;
        if (!json_is_object(e) || !entry_matches(e, k) || !r ||
            capsa_accel_parse(r, &a, NULL) < 0 || a == CAPSA_ACCEL_AUTO)
            continue;
        *result = a;
        if (reason && reason_len)
            snprintf(reason, reason_len, "%s", why ? why : "");
        hit = 1;
        break;
    }
    json_decref(entries);
    return hit;
}

int capsa_accel_cache_store(const char *cache_path, const struct capsa_accel_probe_key *k,
                            enum capsa_accel result, const char *reason, int64_t probe_ms,
                            capsa_err *err)
{
    json_t *old = cache_load(cache_path), *entries = json_array(), *root, *e;
    _cleanup_free_ char *dir = strdup(cache_path);
    char tmp[PATH_MAX + 32];
    char *slash;
    size_t i;
    int rc;

    if (!entries || !dir) {
        json_decref(old);
        json_decref(entries);
        return capsa_err_set(err, ENOMEM, "out of memory");
    }
    e = json_pack("{s:s, s:I, s:I, s:s, s:b, s:s, s:s, s:I, s:I}", "kernel", k->kernel,
                  "kernel_size", (json_int_t)k->kernel_size, "kernel_mtime_ns",
                  (json_int_t)k->kernel_mtime_ns, "host_release", k->host_release, "kvm_present",
                  (int)k->kvm_present, "result", capsa_accel_name(result), "reason",
                  reason ? reason : "", "probe_ms", (json_int_t)probe_ms, "probed_at",
                  (json_int_t)time(NULL));
    if (!e) {
        json_decref(old);
        json_decref(entries);
        return capsa_err_set(err, ENOMEM, "out of memory");
    }
    json_array_append_new(entries, e);
    if (old) {
        json_t *o;
        json_array_foreach(old, i, o)
        {
            if (json_array_size(entries) >= CACHE_MAX_ENTRIES)
                break;
            if (!json_is_object(o))
                continue;
            const char *ok = json_string_value(json_object_get(o, "kernel"));
            if (entry_matches(o, k) || (ok && strcmp(ok, k->kernel) == 0))
                continue; /* replaced by the new verdict */
            json_array_append(entries, o);
        }
        json_decref(old);
    }
    root = json_pack("{s:i, s:o}", "version", CACHE_VERSION, "entries", entries);
    if (!root)
        return capsa_err_set(err, ENOMEM, "out of memory");

    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        if (capsa_mkdir_p(dir, 0700, err) < 0) {
            json_decref(root);
            return capsa_err_prefix(err, "accel cache");
        }
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", cache_path, (int)getpid());
    rc = json_dump_file(root, tmp, JSON_INDENT(2));
    json_decref(root);
    if (rc < 0) {
        unlink(tmp);
        return capsa_err_set(err, EIO, "accel cache: write %s failed", tmp);
    }
    if (rename(tmp, cache_path) < 0) {
        int e2 = errno;
        unlink(tmp);
        return capsa_err_set(err, e2, "accel cache: rename to %s: %s", cache_path, strerror(e2));
    }
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int probe_timeout_ms(void)
{
    const char *s = getenv("CAPSA_KVM_PROBE_TIMEOUT_MS");
    char *end;
    long v;

    if (!s || !*s)
        return PROBE_DEFAULT_MS;
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || *end || v < 1 || v > 600000) {
        log_warn("CAPSA_KVM_PROBE_TIMEOUT_MS=%s is not a number of ms in 1..600000; using %d", s,
                 PROBE_DEFAULT_MS);
        return PROBE_DEFAULT_MS;
    }
    return (int)v;
}

/* Boot cfg under KVM; 1 = the agent's first frame arrived in time, 0 = no (reason set,
 * *cacheable says whether the verdict describes the host rather than this guest). */
static int kvm_probe(const struct capsa_vm_config *cfg, int timeout_ms, char *reason,
                     size_t reason_len, bool *cacheable)
{
    struct capsa_vm_config pc = *cfg;
    _cleanup_vm_ struct capsa_vm *vm = NULL;
    char log_path[PATH_MAX];
    capsa_err e = {0};
    int64_t deadline;
    uint8_t hdr[CAPSA_FRAME_HDR_SIZE];
    size_t got = 0;

    *cacheable = true;
    snprintf(log_path, sizeof(log_path), "%s/kvm-probe-console.log", cfg->run_dir);
    pc.accel = CAPSA_ACCEL_KVM;
    pc.cpus = 1;
    pc.shares = NULL;
    pc.nshares = 0;
    pc.console_log = log_path;
    if (capsa_vm_start(&pc, &vm, &e) < 0) {
        /* QEMU itself refused KVM (e.g. CPU model): a property of the host. */
        snprintf(reason, reason_len, "%s", e.msg);
        return 0;
    }
    deadline = mono_ms() + timeout_ms;
    while (got < sizeof(hdr)) {
        struct pollfd p[2] = {{.fd = vm->agent_fd, .events = POLLIN},
                              {.fd = vm->pidfd, .events = POLLIN}};
        int64_t left = deadline - mono_ms();
        int ws;
        if (left <= 0) {
            snprintf(reason, reason_len, "the guest did not answer within %d ms under KVM",
                     timeout_ms);
            capsa_vm_stop(vm, 1000, NULL);
            return 0;
        }
        int r = poll(p, vm->pidfd >= 0 ? 2 : 1, (int)(left > 100 ? 100 : left));
        if (r < 0 && errno != EINTR)
            break;
        if (r > 0 && p[0].revents) {
            ssize_t n = read(vm->agent_fd, hdr + got, sizeof(hdr) - got);
            if (n > 0) {
                got += (size_t)n;
                continue;
            }
            if (n < 0 && (errno == EINTR || errno == EAGAIN))
                continue;
            /* EOF: QEMU closed the channel, i.e. it is exiting; fall through */
        }
        if (capsa_vm_poll_exit(vm, &ws) || (r > 0 && p[0].revents)) {
            for (int i = 0; i < 100 && !capsa_vm_poll_exit(vm, &ws); i++)
                usleep(10000);
            snprintf(reason, reason_len,
                     "QEMU under KVM exited before the guest agent answered (see %s)", log_path);
            *cacheable = false;
            capsa_vm_stop(vm, 1000, NULL);
            return 0;
        }
    }
    {
        struct capsa_frame_hdr h;
        if (got < sizeof(hdr) || capsa_frame_hdr_decode(hdr, &h, &e) < 0) {
            snprintf(reason, reason_len, "the guest under KVM sent garbage on the agent port");
            *cacheable = false;
            capsa_vm_stop(vm, 1000, NULL);
            return 0;
        }
    }
    capsa_vm_stop(vm, 2000, NULL);
    return 1;
}

static void warn_tcg(const struct capsa_vm_config *cfg, const char *why)
{
    if (cfg->quiet_accel)
        return;
    fprintf(stderr,
            "capsa: warning: KVM is unusable on this host (%s); using TCG software emulation: "
            "fine for development, not an isolation boundary for hostile code\n",
            why);
}

int capsa_accel_resolve(const struct capsa_vm_config *cfg, enum capsa_accel *out, char *reason,
                        size_t reason_len, capsa_err *err)
{
    char why[512] = "", cache[PATH_MAX];
    struct capsa_accel_probe_key key;
    enum capsa_accel verdict;
    bool cacheable;
    int64_t t0, ms;
    int timeout;

    if (reason && reason_len)
        reason[0] = '\0';
    switch (cfg->accel) {
    case CAPSA_ACCEL_TCG:
        *out = CAPSA_ACCEL_TCG;
        return 0;
    case CAPSA_ACCEL_KVM:
        if (!capsa_kvm_openable(why, sizeof(why)))
            return capsa_err_set(err, ENODEV,
                                 "accel kvm: %s (is the kvm module loaded and may this user open "
                                 "/dev/kvm?); use --accel tcg or auto",
                                 why);
        *out = CAPSA_ACCEL_KVM;
        return 0;
    case CAPSA_ACCEL_AUTO:
        break;
    default:
        return capsa_err_set(err, EINVAL, "accel: unknown value %d", (int)cfg->accel);
    }

    if (!capsa_kvm_openable(why, sizeof(why))) {
        *out = CAPSA_ACCEL_TCG;
        goto tcg;
    }
    if (capsa_accel_probe_key_fill(cfg->kernel, &key, err) < 0 ||
        capsa_accel_cache_path(cache, sizeof(cache), err) < 0)
        return capsa_err_prefix(err, "accel probe");
    if (capsa_accel_cache_lookup(cache, &key, &verdict, why, sizeof(why))) {
        log_debug("accel: cached verdict %s for %s", capsa_accel_name(verdict), cfg->kernel);
        *out = verdict;
        if (verdict == CAPSA_ACCEL_KVM)
            return 0;
        goto tcg;
    }
    timeout = probe_timeout_ms();
    log_info("accel: probing KVM with %s (up to %d ms, once per kernel and host)", cfg->kernel,
             timeout);
    t0 = mono_ms();
    verdict =
        kvm_probe(cfg, timeout, why, sizeof(why), &cacheable) ? CAPSA_ACCEL_KVM : CAPSA_ACCEL_TCG;
    ms = mono_ms() - t0;
    log_debug("accel: probe says %s after %lld ms%s%s", capsa_accel_name(verdict), (long long)ms,
              why[0] ? ": " : "", why);
    if (cacheable) {
        capsa_err e = {0};
        if (capsa_accel_cache_store(cache, &key, verdict, why, ms, &e) < 0)
            log_warn("%s", e.msg);
    }
    *out = verdict;
    if (verdict == CAPSA_ACCEL_KVM)
        return 0;
tcg:
    warn_tcg(cfg, why);
    if (reason && reason_len)
        snprintf(reason, reason_len, "%s", why);
    return 0;
}
