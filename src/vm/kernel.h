/* kernel.h - where the guest kernel and the guest agent binary are found. */
#ifndef CAPSA_VM_KERNEL_H
#define CAPSA_VM_KERNEL_H

#include <limits.h>
#include <stddef.h>

#include "capsa.h"

/* Which guest kernel boots: capsa's own (scripts/build-kernel; everything built in,
 * no ACPI) or Debian's stock kernel (scripts/fetch-debian-kernel; drivers as modules the
 * agent loads from the initramfs, devices found through ACPI). */
enum capsa_vm_kernel_kind {
    CAPSA_VM_KERNEL_CAPSA = 0,
    CAPSA_VM_KERNEL_DEBIAN,
};

struct capsa_vm_kernel {
    enum capsa_vm_kernel_kind kind;
    char path[PATH_MAX];        /* uncompressed PVH vmlinux */
    char modules_dir[PATH_MAX]; /* DEBIAN: dir with modules.order and modules/; else "" */
    char release[65];           /* DEBIAN: the kernel release (uname -r); else "" */
};

/* $CAPSA_KERNEL, else $CAPSA_HOME/kernel/current/vmlinux. Fails with a message
 * naming scripts/build-kernel when the file is absent. */
int capsa_vm_kernel_path(char *buf, size_t len, capsa_err *err);

/* Pick the guest kernel. CAPSA_KERNEL_FLAVOR selects: unset/"" or "auto": capsa's kernel
 * ($CAPSA_KERNEL, else kernel/current/vmlinux) when present, else Debian's
 * ($CAPSA_HOME/kernel/debian/) when fetched, with a one-line warning on stderr; "capsa":
 * only capsa's; "debian": only Debian's (CAPSA_KERNEL is ignored). Fails naming
 * scripts/build-kernel and scripts/fetch-debian-kernel when nothing fits. */
int capsa_vm_kernel_find(struct capsa_vm_kernel *k, capsa_err *err);

/* $CAPSA_HOME/kernel/debian/ as a kernel (vmlinux, modules.order, release all present). */
int capsa_vm_kernel_debian(struct capsa_vm_kernel *k, capsa_err *err);

const char *capsa_vm_kernel_kind_name(enum capsa_vm_kernel_kind kind);

/* $CAPSA_AGENT, else the build-tree sibling of /proc/self/exe
 * (<exe dir>/../../agent/capsa-agent), else the installed
 * <exe dir>/../libexec/capsa/capsa-agent, else <libexecdir>/capsa/capsa-agent. */
int capsa_vm_agent_path(char *buf, size_t len, capsa_err *err);

/* Host TSC frequency in kHz (sysfs tsc_freq_khz, else "cpu MHz" of /proc/cpuinfo);
 * 0 when unknown. */
unsigned long capsa_vm_host_tsc_khz(void);

#endif
