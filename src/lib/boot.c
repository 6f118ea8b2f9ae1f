/* boot.c - boot a sandbox VM and complete the agent handshake (see boot.h). */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "lib/boot.h"
#include "vm/initramfs.h"
#include "vm/kernel.h"
#include "vm/qemu.h"

static json_t *boot_json(const struct capsa_boot_opts *o)
{
    static char *const defaults[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=xterm", NULL};
    const struct capsa_rootfs *r = o->root;
    _cleanup_strv_ char **img_env = capsa_env_merge(defaults, r ? r->env : NULL);
    _cleanup_strv_ char **all = img_env ? capsa_env_merge(img_env, o->env) : NULL;
    const char *workdir = o->workdir ? o->workdir : r && r->workdir ? r->workdir : "/";
    const char *user = o->user ? o->user : r && r->user ? r->user : "root";
    json_t *env = json_array(), *root;
    struct timespec ts;

    if (!all || !env) {
        json_decref(env);
        return NULL;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    for (char **e = all; *e; e++)
        json_array_append_new(env, json_string(*e));
    root = r && r->root ? json_deep_copy(r->root)
                        : json_pack("{s:s, s:s}", "kind", "9p", "tag", "capsa.root");
    return json_pack("{s:i, s:o, s:[], s:s, s:o, s:s, s:s, s:I}", "version", CAPSA_PROTO_VERSION,
                     "root", root, "mounts", "hostname", o->hostname ? o->hostname : "capsa", "env",
                     env, "workdir", workdir, "user", user, "clock_ns",
                     (json_int_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
}

void capsa_boot_dump_console(const char *path)
{
    _cleanup_fclose_ FILE *f = fopen(path, "r");
    char buf[4096];
    long sz;
    size_t n;

    if (!f || fseek(f, 0, SEEK_END) < 0)
        return;
    sz = ftell(f);
    fseek(f, sz > (long)sizeof(buf) - 1 ? sz - (long)sizeof(buf) + 1 : 0, SEEK_SET);
    n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    if (n)
        fprintf(stderr, "capsa: guest console (last %zu bytes):\n%s\n", n, buf);
}

int capsa_boot(const struct capsa_boot_opts *o, const char *run_dir, struct capsa_booted **out,
               capsa_err *err)
{
    char agent[4096], initrd[4096], rootfs[PATH_MAX];
    struct capsa_vm_kernel kern;
    struct capsa_vm_share share = {.tag = "capsa.root", .readonly = false};
    struct capsa_vm_config cfg = {0};
    struct capsa_booted *b;
    const char *bt = getenv("CAPSA_BOOT_TIMEOUT");
    int timeout_ms = o->boot_timeout_ms;
    struct stat st;
    json_t *boot;
    uint64_t t0;
    int rc;

    if (timeout_ms <= 0)
        timeout_ms = bt && atoi(bt) > 0 ? atoi(bt) * 1000 : 120000;
    if (o->root && o->root->kind != CAPSA_ROOTFS_DIR) {
        rootfs[0] = '\0'; /* block-device root: no 9p share */
    } else if (o->root) {
        snprintf(rootfs, sizeof(rootfs), "%s", o->root->dir);
    } else if (!o->rootfs || !realpath(o->rootfs, rootfs) || stat(rootfs, &st) < 0 ||
               !S_ISDIR(st.st_mode)) {
        return capsa_err_set(err, ENOTDIR, "rootfs '%s': not a directory",
                             o->rootfs ? o->rootfs : "");
    }
    if (capsa_vm_kernel_find(&kern, err) < 0 ||
        capsa_vm_agent_path(agent, sizeof(agent), err) < 0 ||
        capsa_initramfs_path_modules(agent, kern.modules_dir[0] ? kern.modules_dir : NULL, initrd,
                                     sizeof(initrd), err) < 0)
        return -1;

    b = calloc(1, sizeof(*b));
    if (!b)
        return capsa_err_set(err, ENOMEM, "boot: out of memory");
    b->conn.fd = -1;
    snprintf(b->run_dir, sizeof(b->run_dir), "%s", run_dir);
    snprintf(b->console_log, sizeof(b->console_log), "%s/console.log", run_dir);
    share.host_path = rootfs;
    cfg.kernel = kern.path;
    cfg.kernel_kind = kern.kind;
    cfg.initramfs = initrd;
    cfg.cpus = o->cpus > 0 ? o->cpus : 1;
    cfg.memory_mib = o->memory_mib > 0 ? o->memory_mib : 512;
    cfg.accel = o->accel;
    cfg.shares = rootfs[0] ? &share : NULL;
    cfg.nshares = rootfs[0] ? 1 : 0;
    if (o->root) {
        cfg.disks = o->root->disks;
        cfg.ndisks = o->root->ndisks;
    }
    cfg.console_log = b->console_log;
    cfg.run_dir = b->run_dir;
    cfg.cmdline_extra =
        getenv("CAPSA_KERNEL_CMDLINE"); /* debugging aid, e.g. CAPSA_AGENT_DEBUG=1 */

    t0 = capsa_now_us();
    if (capsa_vm_start(&cfg, &b->vm, err) < 0) {
        capsa_err_prefix(err, "starting the VM");
        free(b);
        return -1;
    }
    if (capsa_agentc_init(&b->conn, b->vm->agent_fd, err) < 0)
        goto fail;
    b->conn.cancel_fd = o->cancel_fd > 0 ? o->cancel_fd : -1;
    boot = boot_json(o);
    if (!boot) {
        capsa_err_set(err, ENOMEM, "boot: out of memory");
        goto fail;
    }
    rc = capsa_agentc_handshake(&b->conn, boot, timeout_ms, err);
    b->conn.cancel_fd = -1;
    json_decref(boot);
    if (rc < 0)
        goto fail;
    b->boot_us = capsa_now_us() - t0;
    log_info("sandbox booted in %.2f s (%s, agent %s)", (double)b->boot_us / 1e6,
             capsa_accel_name(b->vm->accel), b->conn.agent_version);
    *out = b;
    return 0;
fail:
    if (!err || err->code != ECANCELED)
        capsa_boot_dump_console(b->console_log);
    capsa_boot_stop(b, 0, false, NULL);
    return -1;
}

int capsa_boot_stop(struct capsa_booted *b, int grace_ms, bool remove_run_dir, capsa_err *err)
{
    int ret = 0;

    if (!b)
        return 0;
    if (grace_ms > 0 && b->vm && b->conn.fd >= 0 && !b->conn.eof &&
        capsa_agentc_shutdown(&b->conn, NULL) == 0) {
        /* let the guest sync and power off by itself */
        uint64_t deadline = capsa_now_us() + (uint64_t)grace_ms * 1000u;
        int ws;
        while (capsa_vm_poll_exit(b->vm, &ws) == 0 && capsa_now_us() < deadline) {
            struct pollfd p = {.fd = b->vm->pidfd >= 0 ? b->vm->pidfd : -1, .events = POLLIN};
            poll(&p, 1, b->vm->pidfd >= 0 ? 50 : 0);
            if (b->vm->pidfd < 0)
                usleep(20000);
        }
    }
    if (b->vm && capsa_vm_stop(b->vm, 2000, err) < 0)
        ret = -1;
    log_debug("vm: stopped");
    capsa_agentc_destroy(&b->conn);
    capsa_vm_free(b->vm);
    if (remove_run_dir && capsa_rm_rf(b->run_dir, ret < 0 ? NULL : err) < 0)
        ret = -1;
    free(b);
    return ret;
}
