/* qemu.c - QEMU microvm command line, spawn (fd plumbing, death signal), stop and reap. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "vm/qemu.h"
#include "vm/qmp.h"

extern char **environ;

/* Child fd layout (capsa_vm_launch.agent_fd / qmp_fd). */
#define CHILD_AGENT_FD 3
#define CHILD_QMP_FD   4
#define CHILD_ERR_FD   5

#define VM_MAX_CPUS       64
#define VM_MAX_MEMORY_MIB (1024 * 1024)
#define VM_MAX_EXTRA_CMD  1024
#define VM_START_TIMEOUT  30000 /* ms for QEMU to answer QMP after spawn */

/* Machine options (measured under TCG on the build machines, see docs/vm.md and
 * docs/kernel.md): no ACPI (QEMU then passes the virtio-mmio devices on the kernel
 * cmdline), no option ROMs, no ISA serial (the console is virtio hvc0). The legacy
 * timers and interrupt controller all stay: pit=off left an idle TCG guest unwoken for
 * ~65 s (the agent sent hello, then saw the host's boot frame only much later), pic=off
 * hung every guest with two or more vCPUs while it brought up the second CPU, and rtc=off
 * made every boot ~1 s slower. */
static const char machine_lean[] = "microvm,acpi=off,x-option-roms=off,isa-serial=off";
static const char machine_legacy_timers[] = "microvm,acpi=off,x-option-roms=off,isa-serial=off";
/* Debian's kernel has VIRTIO_MMIO as a module without VIRTIO_MMIO_CMDLINE_DEVICES: it finds
 * microvm's virtio-mmio devices only in the ACPI DSDT, so its machine has ACPI (which also
 * gives it an ACPI power-off; reboot=t still ends the VM the same way). */
static const char machine_acpi[] = "microvm,acpi=on,x-option-roms=off,isa-serial=off";

static const char base_cmdline[] = "console=hvc0 quiet cryptomgr.notests reboot=t panic=-1";
/* Under TCG three boot steps cost ~400 of a ~750 ms kernel boot (docs/vm.md, measured from
 * the guest's printk times): patching the SMP lock prefixes out for one vCPU rewrites code
 * that QEMU must then translate again (~160 ms: noreplace-smp); calibrating and verifying
 * the local APIC timer against the PIT busy-waits 2 x ~120 ms (noapictimer: the PIT is the
 * clock event device, broadcast to further vCPUs; a KVM guest has the TSC deadline timer
 * and never calibrates); and checking that the timer interrupt gets through the IO-APIC
 * waits ~45 ms (no_timer_check). */
static const char tcg_cmdline[] = " noreplace-smp no_timer_check noapictimer";

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool tag_ok(const char *t)
{
    size_t n = t ? strlen(t) : 0;
    if (n == 0 || n > 31)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static const char *const disk_formats[] = {"raw", "qcow2", "vmdk"};

int capsa_vm_disk_format_parse(const char *s, enum capsa_vm_disk_format *out, capsa_err *err)
{
    for (size_t i = 0; s && i < ARRAY_SIZE(disk_formats); i++) {
        if (strcmp(s, disk_formats[i]) == 0) {
            *out = (enum capsa_vm_disk_format)i;
            return 0;
        }
    }
    return capsa_err_set(err, EINVAL, "disk format \"%s\": expected raw, qcow2 or vmdk",
                         s ? s : "");
}

const char *capsa_vm_disk_format_name(enum capsa_vm_disk_format f)
{
    return (unsigned)f < ARRAY_SIZE(disk_formats) ? disk_formats[f] : "?";
}

static bool serial_ok(const char *t)
{
    return t && strlen(t) <= CAPSA_VM_MAX_SERIAL && tag_ok(t);
}

static int disks_check(const struct capsa_vm_config *cfg, capsa_err *err)
{
    if (cfg->ndisks > CAPSA_VM_MAX_DISKS)
        return capsa_err_set(err, EINVAL, "vm config: disks: %zu is more than %d", cfg->ndisks,
                             CAPSA_VM_MAX_DISKS);
    if (cfg->ndisks && !cfg->disks)
        return capsa_err_set(err, EINVAL, "vm config: disks: NULL with ndisks=%zu", cfg->ndisks);
    for (size_t i = 0; i < cfg->ndisks; i++) {
        const struct capsa_vm_disk *d = &cfg->disks[i];
        if (!d->path || d->path[0] != '/' || has_ctl(d->path))
            return capsa_err_set(err, EINVAL,
                                 "vm config: disks[%zu].path: expected an absolute path", i);
        if ((unsigned)d->format >= ARRAY_SIZE(disk_formats))
            return capsa_err_set(err, EINVAL, "vm config: disks[%zu].format: unknown value %d", i,
                                 (int)d->format);
        if (!serial_ok(d->serial))
            return capsa_err_set(err, EINVAL,
                                 "vm config: disks[%zu].serial: expected 1..%d characters of "
                                 "[A-Za-z0-9._-], got \"%s\"",
                                 i, CAPSA_VM_MAX_SERIAL, d->serial ? d->serial : "(null)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->disks[j].serial, d->serial) == 0)
                return capsa_err_set(err, EINVAL,
                                     "vm config: disks[%zu].serial: \"%s\" repeats disks[%zu]", i,
                                     d->serial, j);
    }
    return 0;
}

int capsa_vm_config_check(const struct capsa_vm_config *cfg, capsa_err *err)
{
    if (!cfg)
        return capsa_err_set(err, EINVAL, "vm config: missing");
    if (!cfg->kernel || !*cfg->kernel)
        return capsa_err_set(err, EINVAL, "vm config: kernel: required");
    if (!cfg->initramfs || !*cfg->initramfs)
        return capsa_err_set(err, EINVAL, "vm config: initramfs: required");
    if (cfg->cpus < 1 || cfg->cpus > VM_MAX_CPUS)
        return capsa_err_set(err, EINVAL, "vm config: cpus: %d is not within 1..%d", cfg->cpus,
                             VM_MAX_CPUS);
    if (cfg->memory_mib < 64 || cfg->memory_mib > VM_MAX_MEMORY_MIB)
        return capsa_err_set(err, EINVAL, "vm config: memory_mib: %d is not within 64..%d",
                             cfg->memory_mib, VM_MAX_MEMORY_MIB);
    if (cfg->accel != CAPSA_ACCEL_AUTO && cfg->accel != CAPSA_ACCEL_KVM &&
        cfg->accel != CAPSA_ACCEL_TCG)
        return capsa_err_set(err, EINVAL, "vm config: accel: unknown value %d", (int)cfg->accel);
    if (cfg->kernel_kind != CAPSA_VM_KERNEL_CAPSA && cfg->kernel_kind != CAPSA_VM_KERNEL_DEBIAN)
        return capsa_err_set(err, EINVAL, "vm config: kernel_kind: unknown value %d",
                             (int)cfg->kernel_kind);
    if (cfg->cmdline_extra &&
        (strlen(cfg->cmdline_extra) > VM_MAX_EXTRA_CMD || has_ctl(cfg->cmdline_extra)))
        return capsa_err_set(err, EINVAL,
                             "vm config: cmdline_extra: expected at most %d printable characters",
                             VM_MAX_EXTRA_CMD);
    if (!cfg->console_log || cfg->console_log[0] != '/')
        return capsa_err_set(err, EINVAL, "vm config: console_log: expected an absolute path");
    if (!cfg->run_dir || cfg->run_dir[0] != '/')
        return capsa_err_set(err, EINVAL, "vm config: run_dir: expected an absolute path");
    if (cfg->nshares > CAPSA_VM_MAX_SHARES)
        return capsa_err_set(err, EINVAL, "vm config: shares: %zu is more than %d", cfg->nshares,
                             CAPSA_VM_MAX_SHARES);
    if (cfg->nshares && !cfg->shares)
        return capsa_err_set(err, EINVAL, "vm config: shares: NULL with nshares=%zu", cfg->nshares);
    for (size_t i = 0; i < cfg->nshares; i++) {
        const struct capsa_vm_share *s = &cfg->shares[i];
        if (!tag_ok(s->tag))
            return capsa_err_set(err, EINVAL,
                                 "vm config: shares[%zu].tag: expected 1..31 characters of "
                                 "[A-Za-z0-9._-], got \"%s\"",
                                 i, s->tag ? s->tag : "(null)");
        for (size_t j = 0; j < i; j++)
            if (strcmp(cfg->shares[j].tag, s->tag) == 0)
                return capsa_err_set(err, EINVAL,
                                     "vm config: shares[%zu].tag: \"%s\" repeats shares[%zu]", i,
                                     s->tag, j);
        if (!s->host_path || s->host_path[0] != '/' || has_ctl(s->host_path))
            return capsa_err_set(err, EINVAL,
                                 "vm config: shares[%zu].host_path: expected an absolute path", i);
    }
    return disks_check(cfg, err);
}

/* ---- argv construction ------------------------------------------------------------- */

struct argv_buf {
    char **v;
    size_t n, cap;
    bool oom;
};

static void av_add(struct argv_buf *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void av_add(struct argv_buf *a, const char *fmt, ...)
{
    va_list ap;
    char *s;

    if (a->oom)
        return;
    if (a->n + 2 > a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 64;
        char **nv = realloc(a->v, ncap * sizeof(*nv));
        if (!nv) {
            a->oom = true;
            return;
        }
        a->v = nv;
        a->cap = ncap;
    }
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        a->oom = true;
    else {
        a->v[a->n++] = s;
        a->v[a->n] = NULL;
    }
    va_end(ap);
}

/* QEMU option values escape ',' as ",,". Returns malloc'd (NULL on OOM). */
static char *opt_escape(const char *s)
{
    size_t n = 0;
    for (const char *p = s; *p; p++)
        n += *p == ',' ? 2 : 1;
    char *o = malloc(n + 1), *q = o;
    if (!o)
        return NULL;
    for (const char *p = s; *p; p++) {
        *q++ = *p;
        if (*p == ',')
            *q++ = ',';
    }
    *q = '\0';
    return o;
}

int capsa_vm_build_argv(const struct capsa_vm_config *cfg, const struct capsa_vm_launch *l,
                        char ***argv_out, capsa_err *err)
{
    struct argv_buf a = {0};
    _cleanup_free_ char *log_esc = NULL;

    if (capsa_vm_config_check(cfg, err) < 0)
        return -1;
    if (l->accel != CAPSA_ACCEL_KVM && l->accel != CAPSA_ACCEL_TCG)
        return capsa_err_set(err, EINVAL, "vm argv: accelerator must be resolved to kvm or tcg");
    if (!l->qemu || !*l->qemu)
        return capsa_err_set(err, EINVAL, "vm argv: qemu binary: required");
    if (l->agent_fd < 0 || l->qmp_fd < 0)
        return capsa_err_set(err, EINVAL, "vm argv: agent/qmp fds: required");
    log_esc = opt_escape(cfg->console_log);
    if (!log_esc)
        return capsa_err_set(err, ENOMEM, "out of memory");

    av_add(&a, "%s", l->qemu);
    av_add(&a, "-M");
    if (cfg->kernel_kind == CAPSA_VM_KERNEL_DEBIAN)
        av_add(&a, "%s", machine_acpi);
    else
        av_add(&a, "%s",
               l->accel == CAPSA_ACCEL_KVM || l->tsc_khz ? machine_lean : machine_legacy_timers);
    av_add(&a, "-nodefaults");
    av_add(&a, "-no-user-config");
    av_add(&a, "-nographic");
    av_add(&a, "-no-reboot");
    if (l->accel == CAPSA_ACCEL_KVM) {
        av_add(&a, "-accel");
        av_add(&a, "kvm");
        /* arch-capabilities off: some (nested) hosts abort on MSR 0x10a with it. The guest
         * then assumes it is vulnerable and keeps its mitigations on: safe, slightly slower. */
        av_add(&a, "-cpu");
        av_add(&a, "host,-arch-capabilities");
    } else {
        av_add(&a, "-accel");
        av_add(&a, "tcg,thread=multi");
        av_add(&a, "-cpu");
        av_add(&a, "max");
    }
    av_add(&a, "-m");
    av_add(&a, "%d", cfg->memory_mib);
    av_add(&a, "-smp");
    av_add(&a, "%d", cfg->cpus);
    av_add(&a, "-kernel");
    av_add(&a, "%s", cfg->kernel);
    av_add(&a, "-initrd");
    av_add(&a, "%s", cfg->initramfs);
    av_add(&a, "-append");
    {
        char tsc[96] = "";
        /* a known TSC saves the clock calibration (which hung one TCG boot in three);
         * lpj saves the delay-loop calibration of every further vCPU (HZ=100) */
        /* lpj = TSC Hz / kernel HZ: 100 in capsa's kernel, 250 in Debian's */
        if (l->accel == CAPSA_ACCEL_TCG && l->tsc_khz && cfg->cpus > 1)
            snprintf(tsc, sizeof(tsc), " tsc_early_khz=%lu lpj=%lu", l->tsc_khz,
                     cfg->kernel_kind == CAPSA_VM_KERNEL_DEBIAN ? l->tsc_khz * 4 : l->tsc_khz * 10);
        else if (l->accel == CAPSA_ACCEL_TCG && l->tsc_khz)
            snprintf(tsc, sizeof(tsc), " tsc_early_khz=%lu", l->tsc_khz);
        av_add(&a, "%s%s%s%s%s", base_cmdline, l->accel == CAPSA_ACCEL_TCG ? tcg_cmdline : "", tsc,
               cfg->cmdline_extra ? " " : "", cfg->cmdline_extra ? cfg->cmdline_extra : "");
    }
    /* virtio-serial: port 0 is the console (hvc0), port 1 the agent channel. Only those two:
     * the guest driver sets up two virtqueues (and their rings) for every port the device
     * could have, 64 for QEMU's default of 31; with 2 its probe takes ~11 ms instead of ~23
     * under TCG. */
    av_add(&a, "-device");
    av_add(&a, "virtio-serial-device,max_ports=2");
    av_add(&a, "-chardev");
    av_add(&a, "file,id=console,path=%s,append=on", log_esc);
    av_add(&a, "-device");
    av_add(&a, "virtconsole,chardev=console");
    av_add(&a, "-chardev");
    av_add(&a, "socket,id=agent,fd=%d", l->agent_fd);
    av_add(&a, "-device");
    av_add(&a, "virtserialport,chardev=agent,name=capsa.agent");
    for (size_t i = 0; i < cfg->nshares; i++) {
        const struct capsa_vm_share *s = &cfg->shares[i];
        _cleanup_free_ char *p = opt_escape(s->host_path);
        if (!p) {
            a.oom = true;
            break;
        }
        av_add(&a, "-fsdev");
        av_add(&a, "local,id=fs%zu,path=%s,security_model=%s,multidevs=remap%s", i, p,
               l->root ? "passthrough" : "none", s->readonly ? ",readonly=on" : "");
        av_add(&a, "-device");
        av_add(&a, "virtio-9p-device,fsdev=fs%zu,mount_tag=%s", i, s->tag);
    }
    /* Disks: QEMU's format drivers (raw, qcow2, vmdk), host page cache with guest flushes
     * honoured (writeback), thread-pool I/O (works on every host filesystem, unlike
     * aio=native which needs O_DIRECT); writable disks pass guest discards through so a
     * sparse upper shrinks again. A scratch disk (deleted when the VM stops) ignores guest
     * flushes: each would be an fdatasync of the host file (~3 ms at an ext4 mount). */
    for (size_t i = 0; i < cfg->ndisks; i++) {
        const struct capsa_vm_disk *d = &cfg->disks[i];
        _cleanup_free_ char *p = opt_escape(d->path);
        if (!p) {
            a.oom = true;
            break;
        }
        av_add(&a, "-drive");
        av_add(&a, "file=%s,if=none,id=d%zu,format=%s,readonly=%s,cache=%s,aio=threads%s", p, i,
               capsa_vm_disk_format_name(d->format), d->readonly ? "on" : "off",
               d->scratch && !d->readonly ? "unsafe" : "writeback",
               d->readonly ? "" : ",discard=unmap");
        av_add(&a, "-device");
        if (d->block_size)
            av_add(&a,
                   "virtio-blk-device,drive=d%zu,serial=%s,logical_block_size=%u,"
                   "physical_block_size=%u",
                   i, d->serial, d->block_size, d->block_size);
        else
            av_add(&a, "virtio-blk-device,drive=d%zu,serial=%s", i, d->serial);
    }
    av_add(&a, "-device");
    av_add(&a, "virtio-rng-device");
    av_add(&a, "-chardev");
    av_add(&a, "socket,id=qmp,fd=%d,server=on,wait=off", l->qmp_fd);
    av_add(&a, "-mon");
    av_add(&a, "chardev=qmp,mode=control");

    if (a.oom) {
        for (size_t i = 0; i < a.n; i++)
            free(a.v[i]);
        free(a.v);
        return capsa_err_set(err, ENOMEM, "vm argv: out of memory");
    }
    *argv_out = a.v;
    return 0;
}

/* ---- spawn ------------------------------------------------------------------------- */

static int find_qemu(char *buf, size_t len, capsa_err *err)
{
    const char *name = getenv("CAPSA_QEMU");
    const char *path = getenv("PATH");

    if (!name || !*name)
        name = "qemu-system-x86_64";
    if (strchr(name, '/')) {
        if (access(name, X_OK) != 0)
            return capsa_err_set(err, errno, "CAPSA_QEMU=%s: %s", name, strerror(errno));
        snprintf(buf, len, "%s", name);
        return 0;
    }
    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    _cleanup_free_ char *dup = strdup(path);
    if (!dup)
        return capsa_err_set(err, ENOMEM, "out of memory");
    for (char *save = NULL, *d = strtok_r(dup, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        int n = snprintf(buf, len, "%s/%s", d, name);
        if (n > 0 && (size_t)n < len && access(buf, X_OK) == 0)
            return 0;
    }
    return capsa_err_set(err, ENOENT,
                         "%s not found in PATH: install Debian's qemu-system-x86 (or set "
                         "CAPSA_QEMU)",
                         name);
}

static int sys_pidfd_open(pid_t pid)
{
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    errno = ENOSYS;
    return -1;
#endif
}

/* Last few lines of what QEMU (and the guest) wrote to the log since offset. */
static void log_tail(const char *path, off_t since, char *out, size_t len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    char buf[1024];
    struct stat st;
    off_t from;
    ssize_t n;

    out[0] = '\0';
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size <= since)
        return;
    from =
        st.st_size - (off_t)sizeof(buf) + 1 > since ? st.st_size - (off_t)sizeof(buf) + 1 : since;
    n = pread(fd, buf, sizeof(buf) - 1, from);
    if (n <= 0)
        return;
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        buf[--n] = '\0';
    for (char *p = buf; *p; p++)
        if (*p == '\n')
            *p = ' ';
        else if ((unsigned char)*p < 0x20)
            *p = '?';
    snprintf(out, len, "%s", buf);
}

static void describe_status(int st, char *buf, size_t len)
{
    if (WIFEXITED(st))
        snprintf(buf, len, "exit status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, len, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, len, "status 0x%x", st);
}

/* Runs in the forked child: only async-signal-safe calls. */
static __attribute__((noreturn)) void child_exec(const char *qemu, char **argv, int null_fd,
                                                 int log_fd, int agent_fd, int qmp_fd, int err_fd,
                                                 pid_t parent, bool no_thp)
{
    int fds[5], e;
    sigset_t all;

    setpgid(0, 0);
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
        _exit(127);
    /* Under TCG, QEMU's guest RAM and code buffer in transparent huge pages (it asks with
     * MADV_HUGEPAGE) cost more than they give: every first touch of a 2 MiB range makes
     * the host find (compacting memory when it is fragmented) and zero a huge page, and a
     * short-lived guest touches ~100 MB. With 4 KiB pages the boot's virtio probes are not
     * stalled by that and a `capsa run` reaches its command's first output ~60-75 ms
     * sooner on this kind of host (docs/vm.md). KVM keeps them (EPT wants huge pages). The
     * setting survives execve; best effort. */
    if (no_thp)
        prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0);
    /* Move everything above the target range first so dup2 never clobbers a source. */
    fds[0] = fcntl(null_fd, F_DUPFD, 10);
    fds[1] = fcntl(log_fd, F_DUPFD, 10);
    fds[2] = fcntl(agent_fd, F_DUPFD, 10);
    fds[3] = fcntl(qmp_fd, F_DUPFD, 10);
    fds[4] = fcntl(err_fd, F_DUPFD_CLOEXEC, 10);
    for (int i = 0; i < 5; i++)
        if (fds[i] < 0)
            goto fail;
    if (dup2(fds[0], 0) < 0 || dup2(fds[1], 1) < 0 || dup2(fds[1], 2) < 0 ||
        dup2(fds[2], CHILD_AGENT_FD) < 0 || dup2(fds[3], CHILD_QMP_FD) < 0 ||
        dup3(fds[4], CHILD_ERR_FD, O_CLOEXEC) < 0)
        goto fail;
    err_fd = CHILD_ERR_FD;
    if (syscall(SYS_close_range, CHILD_ERR_FD + 1, ~0U, 0) < 0) {
        for (int fd = CHILD_ERR_FD + 1; fd < 65536; fd++)
            close(fd);
    }
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP)
            signal(s, SIG_DFL);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    execve(qemu, argv, environ);
fail:
    e = errno;
    if (write(err_fd, &e, sizeof(e)) < 0) {
    }
    _exit(127);
}

/* A socket path bound during start-up, removed again if start-up fails. */
struct bound_sock {
    char path[4096];
};

static void unlink_sockp(struct bound_sock *b)
{
    if (b->path[0])
        unlink(b->path);
}

int capsa_vm_start(const struct capsa_vm_config *cfg, struct capsa_vm **out, capsa_err *err)
{
    _cleanup_free_ struct capsa_vm *vm = NULL;
    _cleanup_strv_ char **argv = NULL;
    _cleanup_close_ int host_end = -1, guest_end = -1, qmp_fd = -1, log_fd = -1, null_fd = -1;
    _cleanup_close_ int err_r = -1, err_w = -1, dfd = -1;
    _cleanup_(unlink_sockp) struct bound_sock bound = {""};
    int pipefd[2], sp[2], child_errno = 0;
    char qemu[PATH_MAX];
    struct capsa_vm_launch l = {0};
    struct sockaddr_un sa;
    socklen_t salen;
    struct stat st;
    off_t log_start = 0;
    pid_t pid;
    ssize_t n;

    if (capsa_vm_config_check(cfg, err) < 0)
        return -1;
    if (access(cfg->kernel, R_OK) != 0)
        return capsa_err_set(err, errno, "vm: kernel %s: %s", cfg->kernel, strerror(errno));
    if (access(cfg->initramfs, R_OK) != 0)
        return capsa_err_set(err, errno, "vm: initramfs %s: %s", cfg->initramfs, strerror(errno));
    for (size_t i = 0; i < cfg->nshares; i++) {
        int e = stat(cfg->shares[i].host_path, &st) != 0 ? errno
                : !S_ISDIR(st.st_mode)                   ? ENOTDIR
                                                         : 0;
        if (e)
            return capsa_err_set(err, e, "vm: shares[%zu] (%s): %s: %s", i, cfg->shares[i].tag,
                                 cfg->shares[i].host_path, strerror(e));
    }
    for (size_t i = 0; i < cfg->ndisks; i++) {
        if (access(cfg->disks[i].path, cfg->disks[i].readonly ? R_OK : R_OK | W_OK) != 0)
            return capsa_err_set(err, errno, "vm: disks[%zu] (%s): %s: %s", i, cfg->disks[i].serial,
                                 cfg->disks[i].path, strerror(errno));
    }
    if (find_qemu(qemu, sizeof(qemu), err) < 0)
        return -1;

    vm = calloc(1, sizeof(*vm));
    if (!vm)
        return capsa_err_set(err, ENOMEM, "out of memory");
    vm->pid = -1;
    vm->agent_fd = -1;
    vm->pidfd = -1;
    if (cfg->accel == CAPSA_ACCEL_AUTO) {
        if (capsa_accel_resolve(cfg, &vm->accel, vm->accel_reason, sizeof(vm->accel_reason), err) <
            0)
            return -1;
    } else if (capsa_accel_resolve(cfg, &vm->accel, NULL, 0, err) < 0) {
        return -1;
    }

    if (snprintf(vm->qmp_path, sizeof(vm->qmp_path), "%s/qmp.sock", cfg->run_dir) >=
        (int)sizeof(vm->qmp_path))
        return capsa_err_set(err, ENAMETOOLONG, "vm: run_dir %s too long", cfg->run_dir);

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
        return capsa_err_set(err, errno, "vm: socketpair: %s", strerror(errno));
    host_end = sp[0];
    guest_end = sp[1];

    if (capsa_unix_addr(vm->qmp_path, &sa, &salen, &dfd, err) < 0)
        return -1;
    qmp_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (qmp_fd < 0)
        return capsa_err_set(err, errno, "vm: socket: %s", strerror(errno));
    if (unlink(vm->qmp_path) < 0 && errno != ENOENT)
        return capsa_err_set(err, errno, "vm: remove stale %s: %s", vm->qmp_path, strerror(errno));
    if (bind(qmp_fd, (struct sockaddr *)&sa, salen) < 0)
        return capsa_err_set(err, errno, "vm: bind %s: %s", vm->qmp_path, strerror(errno));
    snprintf(bound.path, sizeof(bound.path), "%s", vm->qmp_path);
    if (listen(qmp_fd, 4) < 0)
        return capsa_err_set(err, errno, "vm: listen on %s: %s", vm->qmp_path, strerror(errno));
    chmod(vm->qmp_path, 0600);

    log_fd = open(cfg->console_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
    if (log_fd < 0)
        return capsa_err_set(err, errno, "vm: console log %s: %s", cfg->console_log,
                             strerror(errno));
    if (fstat(log_fd, &st) == 0)
        log_start = st.st_size;
    null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (null_fd < 0)
        return capsa_err_set(err, errno, "vm: /dev/null: %s", strerror(errno));
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return capsa_err_set(err, errno, "vm: pipe: %s", strerror(errno));
    err_r = pipefd[0];
    err_w = pipefd[1];

    l.qemu = qemu;
    l.accel = vm->accel;
    l.agent_fd = CHILD_AGENT_FD;
    l.qmp_fd = CHILD_QMP_FD;
    l.tsc_khz = capsa_vm_host_tsc_khz();
    l.root = geteuid() == 0;
    if (capsa_vm_build_argv(cfg, &l, &argv, err) < 0)
        return -1;
    if (capsa_log_get_level() >= CAPSA_LOG_DEBUG) {
        char line[4096];
        size_t off = 0;
        for (char **p = argv; *p && off < sizeof(line); p++)
            off +=
                (size_t)snprintf(line + off, sizeof(line) - off, "%s%s", p == argv ? "" : " ", *p);
        log_debug("vm: %s", line);
    }

    pid_t parent = getpid();
    vm->started_ns = now_ns();
    pid = fork();
    if (pid < 0)
        return capsa_err_set(err, errno, "vm: fork: %s", strerror(errno));
    if (pid == 0)
        child_exec(qemu, argv, null_fd, log_fd, guest_end, qmp_fd, err_w, parent,
                   vm->accel == CAPSA_ACCEL_TCG);

    vm->pid = pid;
    bound.path[0] = '\0'; /* from here the vm (or the exec-failure path) removes it */
    close(steal_fd(&err_w));
    close(steal_fd(&guest_end));
    close(steal_fd(&qmp_fd));
    do
        n = read(err_r, &child_errno, sizeof(child_errno));
    while (n < 0 && errno == EINTR);
    if (n > 0) {
        int st2;
        while (waitpid(pid, &st2, 0) < 0 && errno == EINTR)
            ;
        vm->pid = -1;
        unlink(vm->qmp_path);
        return capsa_err_set(err, child_errno, "vm: exec %s: %s", qemu, strerror(child_errno));
    }
    vm->pidfd = sys_pidfd_open(pid);
    if (vm->pidfd >= 0)
        fcntl(vm->pidfd, F_SETFD, FD_CLOEXEC);
    vm->agent_fd = steal_fd(&host_end);

    /* Wait until QEMU answers on QMP: start-up errors surface here. */
    {
        struct capsa_qmp q;
        char status[64];
        capsa_err e = {0};
        int rc = capsa_qmp_connect(&q, vm->qmp_path, vm->pidfd, VM_START_TIMEOUT, &e);
        if (rc == 0) {
            rc = capsa_qmp_query_status(&q, status, sizeof(status), VM_START_TIMEOUT, &e);
            capsa_qmp_close(&q);
            if (rc == 0 && strcmp(status, "running") != 0) {
                rc = -1;
                capsa_err_set(&e, EIO, "QEMU reports status \"%s\" after start", status);
            }
        }
        if (rc < 0) {
            char tail[600], how[64] = "";
            int ws;
            struct capsa_vm *v = steal_pointer(&vm);
            /* give a dying QEMU a moment so its stderr lands in the log */
            for (int i = 0; i < 50 && capsa_vm_poll_exit(v, &ws) == 0; i++)
                usleep(10000);
            if (v->reaped)
                describe_status(v->wstatus, how, sizeof(how));
            capsa_vm_free(v);
            log_tail(cfg->console_log, log_start, tail, sizeof(tail));
            if (how[0])
                return capsa_err_set(err, EIO, "vm: QEMU exited during start-up (%s)%s%s", how,
                                     tail[0] ? ": " : "", tail[0] ? tail : "");
            return capsa_err_set(err, e.code ? e.code : EIO, "vm: QEMU did not come up (%s)%s%s",
                                 e.msg, tail[0] ? ": " : "", tail);
        }
    }
    *out = steal_pointer(&vm);
    return 0;
}

/* ---- stop / reap ------------------------------------------------------------------- */

int capsa_vm_poll_exit(struct capsa_vm *vm, int *wstatus)
{
    int st;
    pid_t r;

    if (!vm)
        return 1;
    if (vm->reaped || vm->pid <= 0) {
        if (wstatus)
            *wstatus = vm->wstatus;
        return 1;
    }
    do
        r = waitpid(vm->pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (r < 0) /* ECHILD: someone else reaped it (a SIGCHLD handler); status unknown */
        st = 0;
    vm->reaped = true;
    vm->wstatus = st;
    if (wstatus)
        *wstatus = st;
    return 1;
}

/* Wait for exit up to timeout_ms; 1 exited, 0 still running. */
static int wait_exit(struct capsa_vm *vm, int timeout_ms)
{
    int64_t deadline = now_ns() + (int64_t)timeout_ms * 1000000;

    for (;;) {
        if (capsa_vm_poll_exit(vm, NULL))
            return 1;
        int64_t left_ms = (deadline - now_ns()) / 1000000;
        if (left_ms <= 0)
            return 0;
        if (vm->pidfd >= 0) {
            struct pollfd p = {.fd = vm->pidfd, .events = POLLIN};
            poll(&p, 1, (int)(left_ms > 50 ? 50 : left_ms));
        } else {
            usleep(10000);
        }
    }
}

int capsa_vm_stop(struct capsa_vm *vm, int timeout_ms, capsa_err *err)
{
    struct capsa_qmp q;
    capsa_err e = {0};
    int64_t t0 = now_ns();
    int quit_ms;

    if (!vm)
        return 0;
    if (capsa_vm_poll_exit(vm, NULL))
        goto done;
    if (timeout_ms < 0)
        timeout_ms = 0;
    quit_ms = timeout_ms < 2000 ? timeout_ms : 2000;
    if (capsa_qmp_connect(&q, vm->qmp_path, vm->pidfd, quit_ms, &e) < 0 ||
        capsa_qmp_quit(&q, quit_ms, &e) < 0) {
        log_debug("vm: qmp quit failed (%s); sending SIGTERM", e.msg);
        kill(vm->pid, SIGTERM);
    }
    capsa_qmp_close(&q);
    {
        int spent = (int)((now_ns() - t0) / 1000000);
        if (wait_exit(vm, timeout_ms > spent ? timeout_ms - spent : 0))
            goto done;
    }
    log_debug("vm: QEMU pid %d did not exit within %d ms; killing it", (int)vm->pid, timeout_ms);
    if (kill(vm->pid, SIGKILL) < 0 && errno != ESRCH)
        return capsa_err_set(err, errno, "vm: kill QEMU pid %d: %s", (int)vm->pid, strerror(errno));
    if (!wait_exit(vm, 10000))
        return capsa_err_set(err, ETIMEDOUT, "vm: QEMU pid %d survived SIGKILL", (int)vm->pid);
done:
    unlink(vm->qmp_path);
    return 0;
}

void capsa_vm_free(struct capsa_vm *vm)
{
    if (!vm)
        return;
    if (vm->pid > 0 && !capsa_vm_poll_exit(vm, NULL)) {
        kill(vm->pid, SIGKILL);
        wait_exit(vm, 10000);
    }
    if (vm->agent_fd >= 0)
        close(vm->agent_fd);
    if (vm->pidfd >= 0)
        close(vm->pidfd);
    if (vm->qmp_path[0])
        unlink(vm->qmp_path);
    free(vm);
}
