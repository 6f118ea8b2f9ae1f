/* qemu.h - launch and stop a QEMU microvm running the capsa kernel + agent initramfs.
 *
 * Theory of operation: capsa_vm_start() resolves the accelerator (accel.h), builds
 * the QEMU command line with the pure capsa_vm_build_argv(), forks and execs
 * qemu-system-x86_64 with exactly five fds: stdin=/dev/null, stdout+stderr=console
 * log (append), fd 3 = QEMU's end of a socketpair carrying the virtio-serial port
 * "capsa.agent" (so the host end exists before the guest boots and no frame is
 * lost), fd 4 = a listening unix socket (run_dir/qmp.sock) for the QMP monitor. The
 * child gets PR_SET_PDEATHSIG(SIGKILL) and its own process group (terminal ^C goes
 * to capsa, which decides how to stop the guest). start returns once QMP answered
 * query-status, so QEMU's start-up errors are reported by start itself, with the
 * tail of the console log (which also receives QEMU's stderr).
 */
#ifndef CAPSA_VM_QEMU_H
#define CAPSA_VM_QEMU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsa.h"
#include "vm/accel.h"
#include "vm/kernel.h"

#define CAPSA_VM_MAX_SHARES 16

struct capsa_vm_share {
    const char *tag;       /* mount_tag: [A-Za-z0-9._-], 1..31 chars */
    const char *host_path; /* absolute directory */
    bool readonly;
};

#define CAPSA_VM_MAX_DISKS  8
#define CAPSA_VM_MAX_SERIAL 20 /* virtio-blk serial bytes (VIRTIO_BLK_ID_BYTES) */

enum capsa_vm_disk_format {
    CAPSA_VM_DISK_RAW,
    CAPSA_VM_DISK_QCOW2,
    CAPSA_VM_DISK_VMDK,
};

/* A virtio-blk disk. The guest finds it by serial (/sys/block/vdX/serial), never by name. */
struct capsa_vm_disk {
    const char *path; /* absolute path of the image file (or block device) */
    enum capsa_vm_disk_format format;
    bool readonly;
    /* Thrown away when the VM stops (an ephemeral run's scratch upper): guest flushes
     * need not reach the host's disk, so QEMU ignores them (cache=unsafe). */
    bool scratch;
    /* The guest's logical (and physical) block size: 0 = QEMU's 512 bytes; CAPSA_VM_BLOCK_4K
     * only for disks whose filesystem has 4 KiB blocks and a size that is a multiple. */
    unsigned block_size;
    const char *serial; /* 1..20 characters of [A-Za-z0-9._-], unique per VM */
};

#define CAPSA_VM_BLOCK_4K 4096u

/* "raw" | "qcow2" | "vmdk" (and back). */
int capsa_vm_disk_format_parse(const char *s, enum capsa_vm_disk_format *out, capsa_err *err);
const char *capsa_vm_disk_format_name(enum capsa_vm_disk_format f);

struct capsa_vm_config {
    const char *kernel;        /* uncompressed PVH vmlinux */
    const char *initramfs;     /* cpio with capsa-agent as /init */
    const char *cmdline_extra; /* appended to the kernel cmdline, may be NULL */
    int cpus;                  /* >= 1 */
    int memory_mib;            /* >= 64 */
    enum capsa_accel accel;    /* AUTO resolves through the cached probe */
    const struct capsa_vm_share *shares;
    size_t nshares;          /* virtio-9p devices */
    const char *console_log; /* file that receives the guest console (hvc0), appended */
    const char *run_dir;     /* private dir for the QMP socket etc. (exists, 0700) */
    bool quiet_accel;        /* do not print the TCG fallback warning to stderr */
    const struct capsa_vm_disk *disks;
    size_t ndisks; /* virtio-blk devices (virtio-mmio), at most CAPSA_VM_MAX_DISKS */
    enum capsa_vm_kernel_kind kernel_kind; /* DEBIAN: the machine gets ACPI (see qemu.c) */
};

struct capsa_vm {
    pid_t pid;              /* QEMU */
    int agent_fd;           /* connected stream socket to the guest's capsa.agent port (blocking,
                               CLOEXEC; set O_NONBLOCK yourself for an event loop) */
    enum capsa_accel accel; /* what was actually used (KVM or TCG) */
    int pidfd;              /* pidfd of QEMU (pollable: readable once it exited), or -1 */
    char accel_reason[512]; /* AUTO that ended in TCG: why; else empty */
    char qmp_path[4096];    /* run_dir/qmp.sock */
    int64_t started_ns;     /* CLOCK_MONOTONIC when QEMU was spawned */
    bool reaped;            /* waitpid done; wstatus valid */
    int wstatus;
};

/* What capsa_vm_build_argv needs beyond the config (resolved by capsa_vm_start). */
struct capsa_vm_launch {
    const char *qemu;       /* binary (path or name) */
    enum capsa_accel accel; /* KVM or TCG, never AUTO */
    int agent_fd;           /* fd number of QEMU's socketpair end in the child */
    int qmp_fd;             /* fd number of the listening QMP socket in the child */
    unsigned long tsc_khz;  /* host TSC kHz, used under TCG; 0 = omit */
    bool root;              /* euid 0: 9p security_model=passthrough, else none */
};

/* Check a config: required fields, ranges, share tags and paths (no file access). */
int capsa_vm_config_check(const struct capsa_vm_config *cfg, capsa_err *err);

/* Pure: the full QEMU argv (NULL-terminated, malloc'd; free each string and the
 * array, e.g. with _cleanup_strv_). */
int capsa_vm_build_argv(const struct capsa_vm_config *cfg, const struct capsa_vm_launch *l,
                        char ***argv_out, capsa_err *err);

int capsa_vm_start(const struct capsa_vm_config *cfg, struct capsa_vm **out, capsa_err *err);

/* Ask QEMU to quit via QMP (or SIGTERM), wait up to timeout_ms, then SIGKILL; reaps.
 * This is the VMM-level stop: ask the agent to sync and power off first when the
 * guest's disks matter. */
int capsa_vm_stop(struct capsa_vm *vm, int timeout_ms, capsa_err *err);

/* Non-blocking: 1 and *wstatus once QEMU has exited (reaped), 0 while it runs. */
int capsa_vm_poll_exit(struct capsa_vm *vm, int *wstatus);

/* Kills + reaps if still running, closes fds, removes the QMP socket. NULL is fine. */
void capsa_vm_free(struct capsa_vm *vm);

static inline void capsa_vm_freep(struct capsa_vm **vm)
{
    capsa_vm_free(*vm);
}
#define _cleanup_vm_ __attribute__((cleanup(capsa_vm_freep)))

#endif
