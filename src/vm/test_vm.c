/* test_vm.c - vm module tests: argv construction, accel parse/cache/probe, real QEMU runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/paths.h"
#include "proto/frame.h"
#include "vm/qemu.h"
#include "vm/qmp.h"

static char tmpdir[PATH_MAX];

static int setup_tmp(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/capsa-test-vm-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    setenv("CAPSA_HOME", tmpdir, 1);
    return 0;
}

static int teardown_tmp(void **state)
{
    (void)state;
    capsa_rm_rf(tmpdir, NULL);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool argv_has(char **argv, const char *s)
{
    for (; *argv; argv++)
        if (strcmp(*argv, s) == 0)
            return true;
    return false;
}

/* value following flag at its nth occurrence (0-based) */
static const char *argv_after(char **argv, const char *flag, int nth)
{
    for (; *argv; argv++)
        if (strcmp(*argv, flag) == 0 && argv[1] && nth-- == 0)
            return argv[1];
    return NULL;
}

static void base_config(struct capsa_vm_config *c)
{
    memset(c, 0, sizeof(*c));
    c->kernel = "/k/vmlinux";
    c->initramfs = "/k/initramfs.cpio";
    c->cpus = 2;
    c->memory_mib = 256;
    c->accel = CAPSA_ACCEL_TCG;
    c->console_log = "/run/x/console.log";
    c->run_dir = "/run/x";
}

static void test_accel_parse(void **state)
{
    enum capsa_accel a;
    capsa_err err = {0};
    (void)state;
    assert_int_equal(capsa_accel_parse("auto", &a, &err), 0);
    assert_int_equal(a, CAPSA_ACCEL_AUTO);
    assert_int_equal(capsa_accel_parse("kvm", &a, &err), 0);
    assert_int_equal(a, CAPSA_ACCEL_KVM);
    assert_int_equal(capsa_accel_parse("tcg", &a, &err), 0);
    assert_int_equal(a, CAPSA_ACCEL_TCG);
    assert_int_equal(capsa_accel_parse("KVM", &a, &err), -1);
    assert_non_null(strstr(err.msg, "auto, kvm or tcg"));
    assert_int_equal(capsa_accel_parse(NULL, &a, &err), -1);
    assert_string_equal(capsa_accel_name(CAPSA_ACCEL_KVM), "kvm");
    assert_string_equal(capsa_accel_name(CAPSA_ACCEL_TCG), "tcg");
    assert_string_equal(capsa_accel_name(CAPSA_ACCEL_AUTO), "auto");
}

static void test_argv_tcg(void **state)
{
    struct capsa_vm_config c;
    struct capsa_vm_launch l = {.qemu = "qemu-system-x86_64",
                                .accel = CAPSA_ACCEL_TCG,
                                .agent_fd = 3,
                                .qmp_fd = 4,
                                .tsc_khz = 2300000};
    _cleanup_strv_ char **argv = NULL;
    capsa_err err = {0};
    (void)state;

    base_config(&c);
    c.cmdline_extra = "capsa.debug=1";
    assert_int_equal(capsa_vm_build_argv(&c, &l, &argv, &err), 0);
    assert_string_equal(argv[0], "qemu-system-x86_64");
    assert_string_equal(argv_after(argv, "-M", 0),
                        "microvm,acpi=off,x-option-roms=off,isa-serial=off");
    assert_true(argv_has(argv, "-nodefaults"));
    assert_true(argv_has(argv, "-no-user-config"));
    assert_true(argv_has(argv, "-no-reboot"));
    assert_string_equal(argv_after(argv, "-accel", 0), "tcg,thread=multi");
    assert_string_equal(argv_after(argv, "-cpu", 0), "max");
    assert_string_equal(argv_after(argv, "-m", 0), "256");
    assert_string_equal(argv_after(argv, "-smp", 0), "2");
    assert_string_equal(argv_after(argv, "-kernel", 0), "/k/vmlinux");
    assert_string_equal(argv_after(argv, "-initrd", 0), "/k/initramfs.cpio");
    assert_string_equal(argv_after(argv, "-append", 0),
                        "console=hvc0 quiet cryptomgr.notests reboot=t panic=-1 "
                        "noreplace-smp no_timer_check noapictimer "
                        "tsc_early_khz=2300000 lpj=23000000 capsa.debug=1");
    assert_string_equal(argv_after(argv, "-chardev", 0),
                        "file,id=console,path=/run/x/console.log,append=on");
    assert_string_equal(argv_after(argv, "-chardev", 1), "socket,id=agent,fd=3");
    assert_string_equal(argv_after(argv, "-chardev", 2), "socket,id=qmp,fd=4,server=on,wait=off");
    assert_string_equal(argv_after(argv, "-device", 0), "virtio-serial-device,max_ports=2");
    assert_string_equal(argv_after(argv, "-device", 1), "virtconsole,chardev=console");
    assert_string_equal(argv_after(argv, "-device", 2),
                        "virtserialport,chardev=agent,name=capsa.agent");
    assert_string_equal(argv_after(argv, "-device", 3), "virtio-rng-device");
    assert_null(argv_after(argv, "-device", 4));
    assert_null(argv_after(argv, "-fsdev", 0));
    assert_string_equal(argv_after(argv, "-mon", 0), "chardev=qmp,mode=control");
}

static void test_argv_kvm_shares(void **state)
{
    struct capsa_vm_share shares[] = {{.tag = "capsa.root", .host_path = "/srv/root"},
                                      {.tag = "m1", .host_path = "/data/a,b", .readonly = true}};
    struct capsa_vm_config c;
    struct capsa_vm_launch l = {.qemu = "/usr/bin/qemu-system-x86_64",
                                .accel = CAPSA_ACCEL_KVM,
                                .agent_fd = 7,
                                .qmp_fd = 8,
                                .tsc_khz = 2300000,
                                .root = true};
    _cleanup_strv_ char **argv = NULL, **argv2 = NULL;
    capsa_err err = {0};
    (void)state;

    base_config(&c);
    c.accel = CAPSA_ACCEL_AUTO; /* the launch's resolved accel is what counts */
    c.console_log = "/run/with,comma/console.log";
    c.shares = shares;
    c.nshares = 2;
    c.cpus = 1;
    c.memory_mib = 64;
    assert_int_equal(capsa_vm_build_argv(&c, &l, &argv, &err), 0);
    assert_string_equal(argv_after(argv, "-accel", 0), "kvm");
    assert_string_equal(argv_after(argv, "-cpu", 0), "host,-arch-capabilities");
    /* no tsc_early_khz under KVM, no trailing space without extra */
    assert_string_equal(argv_after(argv, "-append", 0),
                        "console=hvc0 quiet cryptomgr.notests reboot=t panic=-1");
    assert_string_equal(argv_after(argv, "-chardev", 0),
                        "file,id=console,path=/run/with,,comma/console.log,append=on");
    assert_string_equal(argv_after(argv, "-chardev", 1), "socket,id=agent,fd=7");
    assert_string_equal(argv_after(argv, "-fsdev", 0),
                        "local,id=fs0,path=/srv/root,security_model=passthrough,multidevs=remap");
    assert_string_equal(argv_after(argv, "-fsdev", 1),
                        "local,id=fs1,path=/data/a,,b,security_model=passthrough,"
                        "multidevs=remap,readonly=on");
    assert_string_equal(argv_after(argv, "-device", 3),
                        "virtio-9p-device,fsdev=fs0,mount_tag=capsa.root");
    assert_string_equal(argv_after(argv, "-device", 4), "virtio-9p-device,fsdev=fs1,mount_tag=m1");
    assert_string_equal(argv_after(argv, "-m", 0), "64");

    /* unprivileged: security_model=none; TCG without a known TSC omits tsc_early_khz */
    l.root = false;
    l.accel = CAPSA_ACCEL_TCG;
    l.tsc_khz = 0;
    assert_int_equal(capsa_vm_build_argv(&c, &l, &argv2, &err), 0);
    assert_string_equal(argv_after(argv2, "-fsdev", 0),
                        "local,id=fs0,path=/srv/root,security_model=none,multidevs=remap");
    assert_null(strstr(argv_after(argv2, "-append", 0), "tsc_early_khz"));
    /* the TCG-only boot shortcuts: never under KVM */
    assert_non_null(strstr(argv_after(argv2, "-append", 0), " noapictimer"));
    assert_null(strstr(argv_after(argv, "-append", 0), "noapictimer"));
    /* ... and keeps the legacy timers the kernel then calibrates against */
    assert_string_equal(argv_after(argv2, "-M", 0),
                        "microvm,acpi=off,x-option-roms=off,isa-serial=off");
    assert_string_equal(argv_after(argv, "-M", 0),
                        "microvm,acpi=off,x-option-roms=off,isa-serial=off");
}

static void test_argv_disks(void **state)
{
    struct capsa_vm_disk disks[] = {
        {.path = "/img/lower.erofs",
         .readonly = true,
         .block_size = CAPSA_VM_BLOCK_4K,
         .serial = "capsa-lower"},
        {.path = "/run/a,b/upper.ext4", .scratch = true, .serial = "capsa-upper"},
        {.path = "/d/user.qcow2", .format = CAPSA_VM_DISK_QCOW2, .serial = "u1"},
    };
    struct capsa_vm_config c;
    struct capsa_vm_launch l = {.qemu = "q", .accel = CAPSA_ACCEL_TCG, .agent_fd = 3, .qmp_fd = 4};
    _cleanup_strv_ char **argv = NULL;
    enum capsa_vm_disk_format f;
    capsa_err err = {0};
    (void)state;

    base_config(&c);
    c.disks = disks;
    c.ndisks = 3;
    assert_int_equal(capsa_vm_build_argv(&c, &l, &argv, &err), 0);
    assert_string_equal(argv_after(argv, "-drive", 0),
                        "file=/img/lower.erofs,if=none,id=d0,format=raw,readonly=on,"
                        "cache=writeback,aio=threads");
    assert_string_equal(argv_after(argv, "-drive", 1),
                        "file=/run/a,,b/upper.ext4,if=none,id=d1,format=raw,readonly=off,"
                        "cache=unsafe,aio=threads,discard=unmap");
    assert_string_equal(argv_after(argv, "-drive", 2),
                        "file=/d/user.qcow2,if=none,id=d2,format=qcow2,readonly=off,"
                        "cache=writeback,aio=threads,discard=unmap");
    assert_null(argv_after(argv, "-drive", 3));
    /* serial, agent port, disks in order, then rng */
    assert_string_equal(argv_after(argv, "-device", 3),
                        "virtio-blk-device,drive=d0,serial=capsa-lower,logical_block_size=4096,"
                        "physical_block_size=4096");
    assert_string_equal(argv_after(argv, "-device", 4),
                        "virtio-blk-device,drive=d1,serial=capsa-upper");
    assert_string_equal(argv_after(argv, "-device", 5), "virtio-blk-device,drive=d2,serial=u1");
    assert_string_equal(argv_after(argv, "-device", 6), "virtio-rng-device");

    assert_int_equal(capsa_vm_disk_format_parse("vmdk", &f, &err), 0);
    assert_int_equal(f, CAPSA_VM_DISK_VMDK);
    assert_string_equal(capsa_vm_disk_format_name(CAPSA_VM_DISK_QCOW2), "qcow2");
    assert_int_equal(capsa_vm_disk_format_parse("vdi", &f, &err), -1);
    assert_non_null(strstr(err.msg, "raw, qcow2 or vmdk"));
}

static void expect_bad(struct capsa_vm_config *c, const char *needle)
{
    struct capsa_vm_launch l = {.qemu = "q", .accel = CAPSA_ACCEL_TCG, .agent_fd = 3, .qmp_fd = 4};
    char **argv = NULL;
    capsa_err err = {0};
    assert_int_equal(capsa_vm_build_argv(c, &l, &argv, &err), -1);
    assert_null(argv);
    if (!strstr(err.msg, needle))
        fail_msg("error \"%s\" does not mention \"%s\"", err.msg, needle);
}

static void test_config_errors(void **state)
{
    struct capsa_vm_config c;
    struct capsa_vm_share bad_tag[] = {{.tag = "has space", .host_path = "/a"}};
    struct capsa_vm_share long_tag[] = {
        {.tag = "0123456789012345678901234567890123", .host_path = "/a"}};
    struct capsa_vm_share dup[] = {{.tag = "a", .host_path = "/a"},
                                   {.tag = "a", .host_path = "/b"}};
    struct capsa_vm_share rel[] = {{.tag = "a", .host_path = "rel/dir"}};
    (void)state;

    base_config(&c), c.cpus = 0, expect_bad(&c, "cpus");
    base_config(&c), c.memory_mib = 32, expect_bad(&c, "memory_mib");
    base_config(&c), c.kernel = NULL, expect_bad(&c, "kernel");
    base_config(&c), c.initramfs = "", expect_bad(&c, "initramfs");
    base_config(&c), c.run_dir = "relative", expect_bad(&c, "run_dir");
    base_config(&c), c.console_log = NULL, expect_bad(&c, "console_log");
    base_config(&c), c.cmdline_extra = "a\nb", expect_bad(&c, "cmdline_extra");
    base_config(&c), c.shares = bad_tag, c.nshares = 1, expect_bad(&c, "shares[0].tag");
    base_config(&c), c.shares = long_tag, c.nshares = 1, expect_bad(&c, "shares[0].tag");
    base_config(&c), c.shares = dup, c.nshares = 2, expect_bad(&c, "shares[1].tag");
    base_config(&c), c.shares = rel, c.nshares = 1, expect_bad(&c, "shares[0].host_path");
    base_config(&c), c.nshares = 1, expect_bad(&c, "shares");
    base_config(&c), c.accel = (enum capsa_accel)7, expect_bad(&c, "accel");
    {
        struct capsa_vm_disk rel_disk[] = {{.path = "rel.img", .serial = "s"}};
        struct capsa_vm_disk long_serial[] = {{.path = "/a", .serial = "012345678901234567890"}};
        struct capsa_vm_disk no_serial[] = {{.path = "/a"}};
        struct capsa_vm_disk dup_serial[] = {{.path = "/a", .serial = "s"},
                                             {.path = "/b", .serial = "s"}};
        struct capsa_vm_disk bad_fmt[] = {
            {.path = "/a", .serial = "s", .format = (enum capsa_vm_disk_format)9}};
        base_config(&c), c.disks = rel_disk, c.ndisks = 1, expect_bad(&c, "disks[0].path");
        base_config(&c), c.disks = long_serial, c.ndisks = 1, expect_bad(&c, "disks[0].serial");
        base_config(&c), c.disks = no_serial, c.ndisks = 1, expect_bad(&c, "disks[0].serial");
        base_config(&c), c.disks = dup_serial, c.ndisks = 2, expect_bad(&c, "disks[1].serial");
        base_config(&c), c.disks = bad_fmt, c.ndisks = 1, expect_bad(&c, "disks[0].format");
        base_config(&c), c.ndisks = 1, expect_bad(&c, "disks");
        base_config(&c), c.disks = rel_disk, c.ndisks = 9, expect_bad(&c, "disks");
    }
}

static void write_file(const char *path, const void *data, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static void test_accel_cache(void **state)
{
    char kernel[PATH_MAX], cache[PATH_MAX], reason[256];
    struct capsa_accel_probe_key k, k2;
    enum capsa_accel a = CAPSA_ACCEL_AUTO;
    capsa_err err = {0};
    struct timespec ts[2] = {{.tv_sec = 1000000000}, {.tv_sec = 1000000000}};
    (void)state;

    snprintf(kernel, sizeof(kernel), "%s/vmlinux-cache", tmpdir);
    write_file(kernel, "kernel-v1", 9);
    assert_int_equal(capsa_accel_cache_path(cache, sizeof(cache), &err), 0);
    assert_non_null(strstr(cache, "/cache/accel-probe.json"));
    assert_int_equal(capsa_accel_probe_key_fill(kernel, &k, &err), 0);
    assert_int_equal(k.kernel_size, 9);

    /* no file: miss */
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, reason, sizeof(reason)), 0);
    assert_int_equal(
        capsa_accel_cache_store(cache, &k, CAPSA_ACCEL_TCG, "no hello in 4000 ms", 4001, &err), 0);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, reason, sizeof(reason)), 1);
    assert_int_equal(a, CAPSA_ACCEL_TCG);
    assert_string_equal(reason, "no hello in 4000 ms");

    /* replacing the verdict for the same key */
    assert_int_equal(capsa_accel_cache_store(cache, &k, CAPSA_ACCEL_KVM, "", 300, &err), 0);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, reason, sizeof(reason)), 1);
    assert_int_equal(a, CAPSA_ACCEL_KVM);

    /* host kernel release and /dev/kvm presence are part of the key */
    k2 = k;
    snprintf(k2.host_release, sizeof(k2.host_release), "0.0.0-other");
    assert_int_equal(capsa_accel_cache_lookup(cache, &k2, &a, NULL, 0), 0);
    k2 = k;
    k2.kvm_present = !k.kvm_present;
    assert_int_equal(capsa_accel_cache_lookup(cache, &k2, &a, NULL, 0), 0);

    /* a different kernel file is a separate entry; both survive */
    k2 = k;
    snprintf(k2.kernel, sizeof(k2.kernel), "/other/vmlinux");
    assert_int_equal(capsa_accel_cache_store(cache, &k2, CAPSA_ACCEL_TCG, "x", 1, &err), 0);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, NULL, 0), 1);
    assert_int_equal(a, CAPSA_ACCEL_KVM);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k2, &a, NULL, 0), 1);
    assert_int_equal(a, CAPSA_ACCEL_TCG);

    /* the kernel changes size: miss */
    write_file(kernel, "kernel-v2-bigger", 16);
    assert_int_equal(capsa_accel_probe_key_fill(kernel, &k2, &err), 0);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k2, &a, NULL, 0), 0);
    /* same size, different mtime: miss */
    write_file(kernel, "kernel-v1", 9);
    assert_int_equal(utimensat(AT_FDCWD, kernel, ts, 0), 0);
    assert_int_equal(capsa_accel_probe_key_fill(kernel, &k2, &err), 0);
    assert_int_equal(k2.kernel_size, k.kernel_size);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k2, &a, NULL, 0), 0);

    /* a corrupt or foreign cache file is a miss, and storing repairs it */
    write_file(cache, "{not json", 9);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, NULL, 0), 0);
    write_file(cache, "{\"version\": 99, \"entries\": []}", 30);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, NULL, 0), 0);
    write_file(cache, "{\"version\": 1, \"entries\": [7, {\"result\": \"kvm\"}]}", 48);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, NULL, 0), 0);
    assert_int_equal(capsa_accel_cache_store(cache, &k, CAPSA_ACCEL_TCG, "r", 1, &err), 0);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, NULL, 0), 1);

    /* the cache is bounded */
    for (int i = 0; i < 20; i++) {
        k2 = k;
        snprintf(k2.kernel, sizeof(k2.kernel), "/k/%d", i);
        assert_int_equal(capsa_accel_cache_store(cache, &k2, CAPSA_ACCEL_TCG, "r", 1, &err), 0);
    }
    assert_int_equal(capsa_accel_cache_lookup(cache, &k2, &a, NULL, 0), 1);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, NULL, 0), 0);
}

static void test_kernel_agent_paths(void **state)
{
    char buf[PATH_MAX], p[PATH_MAX];
    capsa_err err = {0};
    (void)state;

    unsetenv("CAPSA_KERNEL");
    setenv("CAPSA_HOME", tmpdir, 1);
    assert_int_equal(capsa_vm_kernel_path(buf, sizeof(buf), &err), -1);
    assert_non_null(strstr(err.msg, "scripts/build-kernel"));
    assert_non_null(strstr(err.msg, "kernel/current/vmlinux"));

    snprintf(p, sizeof(p), "%s/kernel/current", tmpdir);
    assert_int_equal(capsa_mkdir_p(p, 0700, &err), 0);
    snprintf(p, sizeof(p), "%s/kernel/current/vmlinux", tmpdir);
    write_file(p, "x", 1);
    assert_int_equal(capsa_vm_kernel_path(buf, sizeof(buf), &err), 0);
    assert_string_equal(buf, p);

    setenv("CAPSA_KERNEL", "/nonexistent/vmlinux", 1);
    assert_int_equal(capsa_vm_kernel_path(buf, sizeof(buf), &err), -1);
    assert_non_null(strstr(err.msg, "CAPSA_KERNEL=/nonexistent/vmlinux"));
    setenv("CAPSA_KERNEL", p, 1);
    assert_int_equal(capsa_vm_kernel_path(buf, sizeof(buf), &err), 0);
    assert_int_equal(capsa_vm_kernel_path(buf, 4, &err), -1);
    unsetenv("CAPSA_KERNEL");

    setenv("CAPSA_AGENT", p, 1);
    assert_int_equal(capsa_vm_agent_path(buf, sizeof(buf), &err), 0);
    assert_string_equal(buf, p);
    setenv("CAPSA_AGENT", "/nonexistent/agent", 1);
    assert_int_equal(capsa_vm_agent_path(buf, sizeof(buf), &err), -1);
    assert_non_null(strstr(err.msg, "CAPSA_AGENT"));
    unsetenv("CAPSA_AGENT");
    /* from the build tree: tests/unit/test_vm -> ../../agent/capsa-agent */
    if (capsa_vm_agent_path(buf, sizeof(buf), &err) == 0)
        assert_non_null(strstr(buf, "capsa-agent"));
    else
        assert_non_null(strstr(err.msg, "CAPSA_AGENT"));

    assert_true(capsa_vm_host_tsc_khz() > 0);
    unlink(p); /* later tests look for a real kernel here */
}

/* The Debian fallback kernel: its machine gets ACPI (it finds the virtio-mmio devices only
 * there) and lpj follows its HZ=250; capsa's kernel keeps acpi=off and HZ=100. */
static void test_argv_debian_kernel(void **state)
{
    struct capsa_vm_config c;
    struct capsa_vm_launch l = {.qemu = "qemu-system-x86_64",
                                .accel = CAPSA_ACCEL_TCG,
                                .agent_fd = 3,
                                .qmp_fd = 4,
                                .tsc_khz = 2300000};
    _cleanup_strv_ char **own = NULL, **deb = NULL, **deb1 = NULL, **bad = NULL;
    capsa_err err = {0};
    (void)state;

    base_config(&c);
    assert_int_equal(capsa_vm_build_argv(&c, &l, &own, &err), 0);
    c.kernel_kind = CAPSA_VM_KERNEL_DEBIAN;
    assert_int_equal(capsa_vm_build_argv(&c, &l, &deb, &err), 0);
    assert_string_equal(argv_after(own, "-M", 0),
                        "microvm,acpi=off,x-option-roms=off,isa-serial=off");
    assert_string_equal(argv_after(deb, "-M", 0),
                        "microvm,acpi=on,x-option-roms=off,isa-serial=off");
    assert_string_equal(argv_after(own, "-append", 0),
                        "console=hvc0 quiet cryptomgr.notests reboot=t panic=-1 "
                        "noreplace-smp no_timer_check noapictimer "
                        "tsc_early_khz=2300000 lpj=23000000");
    assert_string_equal(argv_after(deb, "-append", 0),
                        "console=hvc0 quiet cryptomgr.notests reboot=t panic=-1 "
                        "noreplace-smp no_timer_check noapictimer "
                        "tsc_early_khz=2300000 lpj=9200000");
    /* everything else is the same command line */
    for (size_t i = 0; own[i] || deb[i]; i++) {
        assert_non_null(own[i]);
        assert_non_null(deb[i]);
        if (i > 0 && (strcmp(own[i - 1], "-M") == 0 || strcmp(own[i - 1], "-append") == 0))
            continue;
        assert_string_equal(own[i], deb[i]);
    }
    c.cpus = 1;
    assert_int_equal(capsa_vm_build_argv(&c, &l, &deb1, &err), 0);
    assert_string_equal(argv_after(deb1, "-append", 0),
                        "console=hvc0 quiet cryptomgr.notests reboot=t panic=-1 "
                        "noreplace-smp no_timer_check noapictimer tsc_early_khz=2300000");
    c.kernel_kind = (enum capsa_vm_kernel_kind)7;
    assert_int_equal(capsa_vm_build_argv(&c, &l, &bad, &err), -1);
    assert_non_null(strstr(err.msg, "kernel_kind"));
}

/* Kernel selection: capsa's first, Debian's as the fallback, CAPSA_KERNEL_FLAVOR forces. */
static void test_kernel_find(void **state)
{
    struct capsa_vm_kernel k;
    char own[PATH_MAX], deb[PATH_MAX], p[PATH_MAX + 64];
    capsa_err err = {0};
    (void)state;

    unsetenv("CAPSA_KERNEL");
    unsetenv("CAPSA_KERNEL_FLAVOR");
    setenv("CAPSA_HOME", tmpdir, 1);
    /* nothing: the error names both scripts */
    assert_int_equal(capsa_vm_kernel_find(&k, &err), -1);
    assert_non_null(strstr(err.msg, "scripts/build-kernel"));
    assert_non_null(strstr(err.msg, "scripts/fetch-debian-kernel"));

    /* a fetched Debian kernel: kernel/debian -> debian-1.2-3 */
    snprintf(deb, sizeof(deb), "%s/kernel/debian-1.2-3", tmpdir);
    snprintf(p, sizeof(p), "%s/modules", deb);
    assert_int_equal(capsa_mkdir_p(p, 0700, &err), 0);
    snprintf(p, sizeof(p), "%s/kernel/debian", tmpdir);
    assert_int_equal(symlink("debian-1.2-3", p), 0);
    snprintf(p, sizeof(p), "%s/vmlinux", deb);
    write_file(p, "k", 1);
    /* incomplete: no modules.order */
    assert_int_equal(capsa_vm_kernel_find(&k, &err), -1);
    assert_non_null(strstr(err.msg, "scripts/fetch-debian-kernel"));
    snprintf(p, sizeof(p), "%s/modules.order", deb);
    write_file(p, "a.ko\n", 5);
    snprintf(p, sizeof(p), "%s/release", deb);
    write_file(p, "bad release\n", 12);
    assert_int_equal(capsa_vm_kernel_find(&k, &err), -1);
    assert_non_null(strstr(err.msg, "release"));
    write_file(p, "6.1.0-99-amd64\n", 15);
    assert_int_equal(capsa_vm_kernel_find(&k, &err), 0);
    assert_int_equal(k.kind, CAPSA_VM_KERNEL_DEBIAN);
    assert_string_equal(k.release, "6.1.0-99-amd64");
    assert_string_equal(k.modules_dir, deb);
    snprintf(p, sizeof(p), "%s/vmlinux", deb);
    assert_string_equal(k.path, p);
    assert_string_equal(capsa_vm_kernel_kind_name(k.kind), "debian");

    /* capsa's kernel wins once it exists */
    snprintf(own, sizeof(own), "%s/kernel/current", tmpdir);
    assert_int_equal(capsa_mkdir_p(own, 0700, &err), 0);
    snprintf(own, sizeof(own), "%s/kernel/current/vmlinux", tmpdir);
    write_file(own, "x", 1);
    assert_int_equal(capsa_vm_kernel_find(&k, &err), 0);
    assert_int_equal(k.kind, CAPSA_VM_KERNEL_CAPSA);
    assert_string_equal(k.path, own);
    assert_string_equal(k.modules_dir, "");
    assert_string_equal(capsa_vm_kernel_kind_name(k.kind), "capsa");

    /* forced */
    setenv("CAPSA_KERNEL_FLAVOR", "debian", 1);
    setenv("CAPSA_KERNEL", own, 1); /* not used for debian */
    assert_int_equal(capsa_vm_kernel_find(&k, &err), 0);
    assert_int_equal(k.kind, CAPSA_VM_KERNEL_DEBIAN);
    setenv("CAPSA_KERNEL_FLAVOR", "capsa", 1);
    assert_int_equal(capsa_vm_kernel_find(&k, &err), 0);
    assert_int_equal(k.kind, CAPSA_VM_KERNEL_CAPSA);
    setenv("CAPSA_KERNEL_FLAVOR", "Debian", 1);
    assert_int_equal(capsa_vm_kernel_find(&k, &err), -1);
    assert_non_null(strstr(err.msg, "expected auto, capsa or debian"));
    unsetenv("CAPSA_KERNEL");

    /* capsa's forced but absent: no fallback; an explicit CAPSA_KERNEL: no fallback */
    unlink(own);
    setenv("CAPSA_KERNEL_FLAVOR", "capsa", 1);
    assert_int_equal(capsa_vm_kernel_find(&k, &err), -1);
    assert_non_null(strstr(err.msg, "scripts/build-kernel"));
    unsetenv("CAPSA_KERNEL_FLAVOR");
    setenv("CAPSA_KERNEL", "/nonexistent/vmlinux", 1);
    assert_int_equal(capsa_vm_kernel_find(&k, &err), -1);
    assert_non_null(strstr(err.msg, "CAPSA_KERNEL=/nonexistent/vmlinux"));
    unsetenv("CAPSA_KERNEL");
    /* auto with only Debian's: the fallback (warning on stderr) */
    assert_int_equal(capsa_vm_kernel_find(&k, &err), 0);
    assert_int_equal(k.kind, CAPSA_VM_KERNEL_DEBIAN);
    /* the Debian one forced but absent */
    snprintf(p, sizeof(p), "%s/kernel/debian", tmpdir);
    unlink(p);
    setenv("CAPSA_KERNEL_FLAVOR", "debian", 1);
    assert_int_equal(capsa_vm_kernel_find(&k, &err), -1);
    assert_non_null(strstr(err.msg, "CAPSA_KERNEL_FLAVOR=debian"));
    assert_non_null(strstr(err.msg, "scripts/fetch-debian-kernel"));
    unsetenv("CAPSA_KERNEL_FLAVOR");
    assert_int_equal(capsa_rm_rf(deb, &err), 0);
}

/* Without access to /dev/kvm (run as nobody): forced kvm is a clear error, auto is TCG
 * at once (no probe). */
static void test_accel_no_kvm_access(void **state)
{
    pid_t pid;
    int ws;
    (void)state;

    if (geteuid() != 0 || access("/dev/kvm", F_OK) != 0) {
        print_message("# skipping: needs root (to drop to nobody) and a /dev/kvm node\n");
        skip();
    }
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct capsa_vm_config c;
        enum capsa_accel a = CAPSA_ACCEL_AUTO;
        char reason[256];
        capsa_err err = {0};
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(10);
        if (capsa_kvm_openable(NULL, 0))
            _exit(0); /* /dev/kvm is world-accessible here: nothing to check */
        base_config(&c);
        c.accel = CAPSA_ACCEL_KVM;
        if (capsa_accel_resolve(&c, &a, NULL, 0, &err) != -1 || !strstr(err.msg, "/dev/kvm") ||
            !strstr(err.msg, "--accel tcg"))
            _exit(11);
        c.accel = CAPSA_ACCEL_AUTO;
        c.quiet_accel = true;
        if (capsa_accel_resolve(&c, &a, reason, sizeof(reason), &err) != 0 ||
            a != CAPSA_ACCEL_TCG || !strstr(reason, "/dev/kvm: Permission denied"))
            _exit(12);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);
}

/* ---- real QEMU without a Linux kernel: a PVH ELF that halts forever ----------------- */

static void put16(uint8_t *p, uint16_t v)
{
    memcpy(p, &v, 2);
}
static void put32le(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}
static void put64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

/* Minimal ELF64 with a Xen PVH entry note: the "kernel" is `hlt; jmp .-1`. */
static void write_halt_kernel(const char *path)
{
    static uint8_t f[0x3000];
    uint8_t *ph, *note;
    memset(f, 0, sizeof(f));
    memcpy(f,
           "\x7f"
           "ELF\x02\x01\x01",
           7);
    put16(f + 16, 2);        /* ET_EXEC */
    put16(f + 18, 62);       /* EM_X86_64 */
    put32le(f + 20, 1);      /* EV_CURRENT */
    put64(f + 24, 0x100000); /* e_entry */
    put64(f + 32, 64);       /* e_phoff */
    put16(f + 52, 64);       /* e_ehsize */
    put16(f + 54, 56);       /* e_phentsize */
    put16(f + 56, 2);        /* e_phnum */
    ph = f + 64;             /* PT_LOAD */
    put32le(ph, 1);
    put32le(ph + 4, 5);
    put64(ph + 8, 0x1000);
    put64(ph + 16, 0x100000);
    put64(ph + 24, 0x100000);
    put64(ph + 32, 16);
    put64(ph + 40, 16);
    put64(ph + 48, 0x1000);
    ph += 56; /* PT_NOTE */
    put32le(ph, 4);
    put32le(ph + 4, 4);
    put64(ph + 8, 0x200);
    put64(ph + 32, 24);
    put64(ph + 40, 24);
    put64(ph + 48, 4);
    note = f + 0x200;
    put32le(note, 4);      /* namesz */
    put32le(note + 4, 8);  /* descsz */
    put32le(note + 8, 18); /* XEN_ELFNOTE_PHYS32_ENTRY */
    memcpy(note + 12, "Xen", 4);
    put64(note + 16, 0x100000);
    memcpy(f + 0x1000, "\xf4\xeb\xfd", 3);
    write_file(path, f, sizeof(f));
}

static bool qemu_available(void)
{
    return access("/usr/bin/qemu-system-x86_64", X_OK) == 0 || getenv("CAPSA_QEMU");
}

static bool pid_gone(pid_t pid)
{
    return kill(pid, 0) < 0 && errno == ESRCH;
}

static void test_qemu_lifecycle_halt(void **state)
{
    char kernel[PATH_MAX], initrd[PATH_MAX], log[PATH_MAX], run[PATH_MAX], share[PATH_MAX],
        status[64];
    struct capsa_vm_share shares[2];
    struct capsa_vm_config c;
    struct capsa_vm *vm = NULL;
    struct capsa_qmp q;
    capsa_err err = {0};
    pid_t pid;
    int ws;
    (void)state;

    if (!qemu_available())
        skip();
    snprintf(kernel, sizeof(kernel), "%s/halt.elf", tmpdir);
    snprintf(initrd, sizeof(initrd), "%s/empty.cpio", tmpdir);
    snprintf(log, sizeof(log), "%s/halt-console.log", tmpdir);
    snprintf(run, sizeof(run), "%s/run-halt", tmpdir);
    snprintf(share, sizeof(share), "%s/share,with comma", tmpdir);
    write_halt_kernel(kernel);
    write_file(initrd, "", 0);
    assert_int_equal(mkdir(run, 0700), 0);
    assert_int_equal(mkdir(share, 0700), 0);
    shares[0] = (struct capsa_vm_share){.tag = "capsa.root", .host_path = share};
    shares[1] = (struct capsa_vm_share){.tag = "ro", .host_path = share, .readonly = true};

    base_config(&c);
    c.kernel = kernel;
    c.initramfs = initrd;
    c.console_log = log;
    c.run_dir = run;
    c.cpus = 1;
    c.memory_mib = 64;
    c.shares = shares;
    c.nshares = 2;
    if (capsa_vm_start(&c, &vm, &err) < 0)
        fail_msg("start: %s", err.msg);
    assert_int_equal(vm->accel, CAPSA_ACCEL_TCG);
    assert_true(vm->pid > 0);
    assert_true(vm->agent_fd >= 0);
    assert_int_equal(capsa_vm_poll_exit(vm, &ws), 0);

    /* QMP is reachable from another client while the VM runs */
    assert_int_equal(capsa_qmp_connect(&q, vm->qmp_path, vm->pidfd, 10000, &err), 0);
    assert_int_equal(capsa_qmp_query_status(&q, status, sizeof(status), 10000, &err), 0);
    assert_string_equal(status, "running");
    assert_int_equal(capsa_qmp_execute(&q, "no-such-command", NULL, NULL, 10000, &err), -1);
    assert_non_null(strstr(err.msg, "CommandNotFound"));
    capsa_qmp_close(&q);

    pid = vm->pid;
    assert_int_equal(capsa_vm_stop(vm, 5000, &err), 0);
    assert_int_equal(capsa_vm_poll_exit(vm, &ws), 1);
    assert_true(WIFEXITED(ws));
    assert_int_equal(WEXITSTATUS(ws), 0);
    assert_true(pid_gone(pid));
    assert_int_equal(access(vm->qmp_path, F_OK), -1);
    capsa_vm_free(vm);

    /* free() of a running VM kills and reaps it */
    c.nshares = 0;
    if (capsa_vm_start(&c, &vm, &err) < 0)
        fail_msg("start: %s", err.msg);
    pid = vm->pid;
    capsa_vm_free(vm);
    assert_true(pid_gone(pid));

    /* QEMU dying by itself is seen by poll_exit; EOF on the agent channel */
    if (capsa_vm_start(&c, &vm, &err) < 0)
        fail_msg("start: %s", err.msg);
    kill(vm->pid, SIGKILL);
    {
        struct pollfd p = {.fd = vm->agent_fd, .events = POLLIN};
        char b;
        assert_int_equal(poll(&p, 1, 10000), 1);
        assert_int_equal(read(vm->agent_fd, &b, 1), 0);
    }
    for (int i = 0; i < 500 && capsa_vm_poll_exit(vm, &ws) == 0; i++)
        usleep(10000);
    assert_int_equal(capsa_vm_poll_exit(vm, &ws), 1);
    assert_true(WIFSIGNALED(ws));
    assert_int_equal(capsa_vm_stop(vm, 1000, &err), 0);
    capsa_vm_free(vm);
}

/* QEMU inherits no stray fds and dies with its parent (PR_SET_PDEATHSIG). */
static void test_qemu_fds_and_parent_death(void **state)
{
    char kernel[PATH_MAX], initrd[PATH_MAX], log[PATH_MAX], run[PATH_MAX], leak[PATH_MAX];
    struct capsa_vm_config c;
    struct capsa_vm *vm = NULL;
    capsa_err err = {0};
    int leak_fd, pfd[2];
    pid_t helper, qpid = -1;
    (void)state;

    if (!qemu_available())
        skip();
    snprintf(kernel, sizeof(kernel), "%s/halt-fd.elf", tmpdir);
    snprintf(initrd, sizeof(initrd), "%s/empty-fd.cpio", tmpdir);
    snprintf(log, sizeof(log), "%s/fd-console.log", tmpdir);
    snprintf(run, sizeof(run), "%s/run-fd", tmpdir);
    snprintf(leak, sizeof(leak), "%s/leak-marker", tmpdir);
    write_halt_kernel(kernel);
    write_file(initrd, "", 0);
    mkdir(run, 0700);
    base_config(&c);
    c.kernel = kernel;
    c.initramfs = initrd;
    c.console_log = log;
    c.run_dir = run;

    leak_fd = open(leak, O_RDWR | O_CREAT, 0600); /* deliberately without O_CLOEXEC */
    assert_true(leak_fd >= 0);
    if (capsa_vm_start(&c, &vm, &err) < 0)
        fail_msg("start: %s", err.msg);
    {
        char dir[64], link[PATH_MAX + 1], target[PATH_MAX];
        _cleanup_dir_ DIR *d = NULL;
        struct dirent *e;
        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)vm->pid);
        d = opendir(dir);
        assert_non_null(d);
        while ((e = readdir(d))) {
            ssize_t n;
            if (e->d_name[0] == '.')
                continue;
            snprintf(target, sizeof(target), "%s/%s", dir, e->d_name);
            n = readlink(target, link, sizeof(link) - 1);
            if (n <= 0)
                continue;
            link[n] = '\0';
            if (strcmp(link, leak) == 0)
                fail_msg("QEMU inherited fd %s -> %s", e->d_name, link);
        }
    }
    capsa_vm_free(vm);
    close(leak_fd);

    /* a helper process starts a VM and is SIGKILLed: QEMU must follow it */
    assert_int_equal(pipe(pfd), 0);
    helper = fork();
    assert_true(helper >= 0);
    if (helper == 0) {
        struct capsa_vm *hv = NULL;
        close(pfd[0]);
        if (capsa_vm_start(&c, &hv, NULL) < 0)
            _exit(1);
        if (write(pfd[1], &hv->pid, sizeof(hv->pid)) != sizeof(hv->pid))
            _exit(1);
        pause();
        _exit(0);
    }
    close(pfd[1]);
    assert_int_equal(read(pfd[0], &qpid, sizeof(qpid)), (ssize_t)sizeof(qpid));
    close(pfd[0]);
    assert_false(pid_gone(qpid));
    kill(helper, SIGKILL);
    waitpid(helper, NULL, 0);
    /* QEMU is reparented (to init or a subreaper) and reaped there */
    for (int i = 0; i < 500 && !pid_gone(qpid); i++) {
        char st[64], buf[256] = "";
        snprintf(st, sizeof(st), "/proc/%d/stat", (int)qpid);
        _cleanup_fclose_ FILE *f = fopen(st, "re");
        if (f && fgets(buf, sizeof(buf), f) && strstr(buf, ") Z "))
            break; /* zombie: dead, waiting for its new parent to reap it */
        usleep(10000);
    }
    {
        char st[64], buf[256] = "";
        snprintf(st, sizeof(st), "/proc/%d/stat", (int)qpid);
        _cleanup_fclose_ FILE *f = fopen(st, "re");
        if (f && fgets(buf, sizeof(buf), f) && !strstr(buf, ") Z ")) {
            kill(qpid, SIGKILL);
            fail_msg("QEMU pid %d survived its parent: %s", (int)qpid, buf);
        }
    }
}

static void test_qemu_start_errors(void **state)
{
    char kernel[PATH_MAX], initrd[PATH_MAX], log[PATH_MAX], run[PATH_MAX];
    struct capsa_vm_share share = {.tag = "x", .host_path = "/nonexistent/dir"};
    struct capsa_vm_config c;
    struct capsa_vm *vm = NULL;
    capsa_err err = {0};
    (void)state;

    if (!qemu_available())
        skip();
    snprintf(kernel, sizeof(kernel), "%s/garbage-kernel", tmpdir);
    snprintf(initrd, sizeof(initrd), "%s/empty2.cpio", tmpdir);
    snprintf(log, sizeof(log), "%s/err-console.log", tmpdir);
    snprintf(run, sizeof(run), "%s/run-err", tmpdir);
    write_file(kernel, "this is not a kernel", 20);
    write_file(initrd, "", 0);
    mkdir(run, 0700);
    base_config(&c);
    c.kernel = kernel;
    c.initramfs = initrd;
    c.console_log = log;
    c.run_dir = run;

    /* QEMU rejects the kernel: start fails and quotes QEMU's own message */
    assert_int_equal(capsa_vm_start(&c, &vm, &err), -1);
    assert_null(vm);
    if (!strstr(err.msg, "exited during start-up") || !strstr(err.msg, "kernel"))
        fail_msg("error does not quote QEMU: %s", err.msg);
    {
        char sock[PATH_MAX + 16];
        snprintf(sock, sizeof(sock), "%s/qmp.sock", run);
        assert_int_equal(access(sock, F_OK), -1); /* no socket left behind */
    }

    c.kernel = "/nonexistent/vmlinux";
    assert_int_equal(capsa_vm_start(&c, &vm, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/vmlinux"));

    c.kernel = kernel;
    c.shares = &share;
    c.nshares = 1;
    assert_int_equal(capsa_vm_start(&c, &vm, &err), -1);
    assert_non_null(strstr(err.msg, "shares[0]"));
    c.nshares = 0;

    setenv("CAPSA_QEMU", "/nonexistent/qemu", 1);
    assert_int_equal(capsa_vm_start(&c, &vm, &err), -1);
    assert_non_null(strstr(err.msg, "CAPSA_QEMU"));
    setenv("CAPSA_QEMU", "no-such-qemu-binary", 1);
    assert_int_equal(capsa_vm_start(&c, &vm, &err), -1);
    assert_non_null(strstr(err.msg, "not found in PATH"));
    unsetenv("CAPSA_QEMU");
}

/* AUTO on a host whose KVM cannot run the (halting) guest: the probe times out,
 * the verdict is cached, the VM runs under TCG. */
static void test_accel_auto_probe(void **state)
{
    char kernel[PATH_MAX], initrd[PATH_MAX], log[PATH_MAX], run[PATH_MAX], cache[PATH_MAX];
    struct capsa_accel_probe_key k;
    struct capsa_vm_config c;
    struct capsa_vm *vm = NULL;
    enum capsa_accel a;
    capsa_err err = {0};
    int64_t t0, first_ms, second_ms;
    (void)state;

    if (!qemu_available())
        skip();
    snprintf(kernel, sizeof(kernel), "%s/halt-auto.elf", tmpdir);
    snprintf(initrd, sizeof(initrd), "%s/empty3.cpio", tmpdir);
    snprintf(log, sizeof(log), "%s/auto-console.log", tmpdir);
    snprintf(run, sizeof(run), "%s/run-auto", tmpdir);
    write_halt_kernel(kernel);
    write_file(initrd, "", 0);
    mkdir(run, 0700);
    base_config(&c);
    c.kernel = kernel;
    c.initramfs = initrd;
    c.console_log = log;
    c.run_dir = run;
    c.accel = CAPSA_ACCEL_AUTO;
    c.quiet_accel = true;
    setenv("CAPSA_KVM_PROBE_TIMEOUT_MS", "700", 1);

    if (!capsa_kvm_openable(NULL, 0)) {
        /* no KVM at all: TCG at once, forced kvm is a clear error */
        assert_int_equal(capsa_vm_start(&c, &vm, &err), 0);
        assert_int_equal(vm->accel, CAPSA_ACCEL_TCG);
        assert_non_null(strstr(vm->accel_reason, "/dev/kvm"));
        capsa_vm_free(vm);
        c.accel = CAPSA_ACCEL_KVM;
        assert_int_equal(capsa_vm_start(&c, &vm, &err), -1);
        assert_non_null(strstr(err.msg, "/dev/kvm"));
        return;
    }
    t0 = mono_ms();
    if (capsa_vm_start(&c, &vm, &err) < 0)
        fail_msg("start: %s", err.msg);
    first_ms = mono_ms() - t0;
    /* the halting guest never says hello, whatever the accelerator */
    assert_int_equal(vm->accel, CAPSA_ACCEL_TCG);
    assert_non_null(strstr(vm->accel_reason, "did not answer within 700 ms"));
    assert_true(first_ms >= 700);
    capsa_vm_free(vm);

    assert_int_equal(capsa_accel_cache_path(cache, sizeof(cache), &err), 0);
    assert_int_equal(capsa_accel_probe_key_fill(kernel, &k, &err), 0);
    assert_int_equal(capsa_accel_cache_lookup(cache, &k, &a, NULL, 0), 1);
    assert_int_equal(a, CAPSA_ACCEL_TCG);

    /* second start: cached, no probe */
    t0 = mono_ms();
    if (capsa_vm_start(&c, &vm, &err) < 0)
        fail_msg("start: %s", err.msg);
    second_ms = mono_ms() - t0;
    assert_int_equal(vm->accel, CAPSA_ACCEL_TCG);
    assert_non_null(strstr(vm->accel_reason, "did not answer"));
    print_message("# auto start: probing %lld ms, cached %lld ms\n", (long long)first_ms,
                  (long long)second_ms);
    capsa_vm_free(vm);
    unsetenv("CAPSA_KVM_PROBE_TIMEOUT_MS");
}

/* ---- real boot: capsa kernel + tiny static init ------------------------------------ */

static int find_test_init(char *buf, size_t len)
{
    char exe[PATH_MAX];
    const char *env = getenv("CAPSA_VM_TEST_INIT"); /* sanitized builds: borrow a static one */
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *slash;
    if (env && *env) {
        snprintf(buf, len, "%s", env);
        return access(buf, X_OK);
    }
    if (n <= 0)
        return -1;
    exe[n] = '\0';
    slash = strrchr(exe, '/');
    if (!slash)
        return -1;
    *slash = '\0';
    snprintf(buf, len, "%s/../../src/vm/vm-test-init", exe);
    return access(buf, X_OK);
}

static int build_initramfs(const char *init, const char *out)
{
    char root[PATH_MAX], cmd[3 * PATH_MAX];
    snprintf(root, sizeof(root), "%s/initramfs-root", tmpdir);
    snprintf(cmd, sizeof(cmd),
             "set -e; rm -rf '%s'; mkdir -p '%s/dev' '%s/sys' '%s/proc'; cp '%s' '%s/init'; "
             "cd '%s' && find . | cpio -o -H newc --quiet > '%s'",
             root, root, root, root, init, root, root, out);
    return system(cmd);
}

/* Wait for one frame with a deadline. */
static int read_frame_deadline(int fd, int timeout_ms, struct capsa_frame_hdr *h, uint8_t **payload)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    capsa_err err = {0};
    if (poll(&p, 1, timeout_ms) != 1)
        return -1;
    if (capsa_frame_read(fd, h, payload, &err) < 0) {
        print_error("frame read: %s\n", err.msg);
        return -1;
    }
    return 0;
}

static void test_real_boot(void **state)
{
    char kernel[PATH_MAX], init[PATH_MAX], initrd[PATH_MAX], log[PATH_MAX], run[PATH_MAX],
        share_dir[PATH_MAX], from_guest[PATH_MAX + 16];
    struct capsa_vm_share share;
    struct capsa_vm_config c;
    struct capsa_vm *vm = NULL;
    struct capsa_frame_hdr h;
    struct stat st;
    uint8_t *payload = NULL;
    capsa_err err = {0};
    int64_t t0;
    pid_t pid;
    int ws;
    (void)state;

    if (capsa_vm_kernel_path(kernel, sizeof(kernel), &err) < 0) {
        /* CAPSA_HOME points at the test's temp dir: look at the user's real one too */
        const char *home = getenv("HOME");
        snprintf(kernel, sizeof(kernel), "%s/.capsa/kernel/current/vmlinux", home ? home : "/root");
        if (access(kernel, R_OK) != 0) {
            print_message("# skipping real boot: %s\n", err.msg);
            skip();
        }
    }
    if (find_test_init(init, sizeof(init)) != 0) {
        print_message("# skipping real boot: %s not built (set CAPSA_VM_TEST_INIT)\n", init);
        skip();
    }
    snprintf(initrd, sizeof(initrd), "%s/test-initramfs.cpio", tmpdir);
    snprintf(log, sizeof(log), "%s/boot-console.log", tmpdir);
    snprintf(run, sizeof(run), "%s/run-boot", tmpdir);
    mkdir(run, 0700);
    assert_int_equal(build_initramfs(init, initrd), 0);

    snprintf(share_dir, sizeof(share_dir), "%s/share-boot", tmpdir);
    snprintf(from_guest, sizeof(from_guest), "%s/from-guest", share_dir);
    assert_int_equal(mkdir(share_dir, 0755), 0);
    share = (struct capsa_vm_share){.tag = "capsa.test", .host_path = share_dir};

    base_config(&c);
    c.kernel = kernel;
    c.initramfs = initrd;
    c.console_log = log;
    c.run_dir = run;
    c.cpus = 1;
    c.memory_mib = 256;
    c.accel = CAPSA_ACCEL_TCG;
    c.shares = &share;
    c.nshares = 1;

    for (int round = 0; round < 2; round++) {
        t0 = mono_ms();
        if (capsa_vm_start(&c, &vm, &err) < 0)
            fail_msg("start: %s", err.msg);
        pid = vm->pid;
        if (read_frame_deadline(vm->agent_fd, 120000, &h, &payload) < 0)
            fail_msg("no hello frame from the guest (console log: %s)", log);
        print_message("# boot-to-first-frame (TCG, round %d): %lld ms (start returned after "
                      "QMP up)\n",
                      round, (long long)(mono_ms() - t0));
        assert_int_equal(h.type, CAPSA_MSG_HELLO);
        assert_int_equal(h.stream, 0);
        assert_non_null(strstr((char *)payload, "vm-test-init"));
        /* 9p share: the guest wrote a file; as root (passthrough) its chown sticks */
        if (!strstr((char *)payload, "\"share\": \"ok\"") &&
            !(geteuid() != 0 && strstr((char *)payload, "chown-failed")))
            fail_msg("9p share in the guest: %s", (char *)payload);
        free(payload);
        assert_int_equal(stat(from_guest, &st), 0);
        assert_int_equal(st.st_size, 21);
        if (geteuid() == 0) {
            assert_int_equal(st.st_uid, 1234);
            assert_int_equal(st.st_gid, 1234);
        }
        unlink(from_guest);

        /* round trip */
        assert_int_equal(capsa_frame_write(vm->agent_fd, 9, CAPSA_MSG_PING, 0, "{}", 2, &err), 0);
        assert_int_equal(read_frame_deadline(vm->agent_fd, 30000, &h, &payload), 0);
        assert_int_equal(h.type, CAPSA_MSG_PONG);
        assert_int_equal(h.stream, 9);
        free(payload);

        if (round == 0) {
            /* guest-initiated power-off: QEMU exits by itself */
            assert_int_equal(
                capsa_frame_write(vm->agent_fd, 0, CAPSA_MSG_SHUTDOWN, 0, "{}", 2, &err), 0);
            for (int i = 0; i < 3000 && capsa_vm_poll_exit(vm, &ws) == 0; i++)
                usleep(10000);
            assert_int_equal(capsa_vm_poll_exit(vm, &ws), 1);
            assert_true(WIFEXITED(ws));
            assert_int_equal(WEXITSTATUS(ws), 0);
        } else {
            /* host-initiated stop through QMP */
            assert_int_equal(capsa_vm_stop(vm, 5000, &err), 0);
        }
        capsa_vm_free(vm);
        assert_true(pid_gone(pid));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accel_parse),
        cmocka_unit_test(test_argv_tcg),
        cmocka_unit_test(test_argv_kvm_shares),
        cmocka_unit_test(test_argv_disks),
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_accel_cache),
        cmocka_unit_test(test_kernel_agent_paths),
        cmocka_unit_test(test_argv_debian_kernel),
        cmocka_unit_test(test_kernel_find),
        cmocka_unit_test(test_accel_no_kvm_access),
        cmocka_unit_test(test_qemu_start_errors),
        cmocka_unit_test(test_qemu_lifecycle_halt),
        cmocka_unit_test(test_qemu_fds_and_parent_death),
        cmocka_unit_test(test_accel_auto_probe),
        cmocka_unit_test(test_real_boot),
    };
    signal(SIGPIPE, SIG_IGN);
    return cmocka_run_group_tests(tests, setup_tmp, teardown_tmp);
}
