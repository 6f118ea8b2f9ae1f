/* boot.h - boot a sandbox VM from a root directory and hand back a ready agent
 * channel: the shared path of `capsa run`, the supervisor, tests and benchmarks.
 *
 * capsa_boot() finds the kernel and agent, builds (or reuses) the initramfs,
 * starts QEMU with the root shared over 9p, and completes the hello/boot/ready
 * handshake. capsa_boot_stop() asks the guest to power off, stops QEMU (killing
 * it after a grace period) and removes the run directory. */
#ifndef CAPSA_LIB_BOOT_H
#define CAPSA_LIB_BOOT_H

#include <stdbool.h>
#include <stdint.h>

#include "lib/agentc.h"
#include "lib/rootfs.h"
#include "vm/accel.h"

struct capsa_boot_opts {
    const char *rootfs; /* host directory (absolute or relative) */
    int cpus;           /* default 1 */
    int memory_mib;     /* default 512 */
    enum capsa_accel accel;
    const char *hostname; /* default "capsa" */
    const char *workdir;  /* default "/" */
    const char *user;     /* default "root" */
    char *const *env;     /* extra boot env "K=V", may be NULL */
    int boot_timeout_ms;  /* default: $CAPSA_BOOT_TIMEOUT seconds, else 120 s */
    /* A resolved root (lib/rootfs.h: directory, disk image or OCI image with its upper).
     * When set it replaces rootfs; an image's Env lies under env, its WorkingDir and User
     * are the defaults for workdir and user. */
    const struct capsa_rootfs *root;
    /* > 0: the boot gives up (ECANCELED, QEMU killed) once this fd becomes readable, e.g. the
     * supervisor's signalfd when a stop arrives during the boot */
    int cancel_fd;
};

struct capsa_booted {
    struct capsa_vm *vm;
    struct capsa_agentc conn;
    char run_dir[4096];
    char console_log[4200];
    uint64_t boot_us; /* QEMU start to agent ready */
};

/* run_dir: a fresh private directory for sockets and the console log; it is
 * removed by capsa_boot_stop(). */
int capsa_boot(const struct capsa_boot_opts *o, const char *run_dir, struct capsa_booted **out,
               capsa_err *err);
/* Graceful: shutdown frame, wait up to grace_ms, then kill. Frees b. */
int capsa_boot_stop(struct capsa_booted *b, int grace_ms, bool remove_run_dir, capsa_err *err);

/* Print the tail of the guest console to stderr (diagnosis after a failure). */
void capsa_boot_dump_console(const char *console_log);

#endif
