/* kernel.h - where the guest kernel and the guest agent binary are found. */
#ifndef CAPSA_VM_KERNEL_H
#define CAPSA_VM_KERNEL_H

#include <stddef.h>

#include "capsa.h"

/* $CAPSA_KERNEL, else $CAPSA_HOME/kernel/current/vmlinux. Fails with a message
 * naming scripts/build-kernel when the file is absent. */
int capsa_vm_kernel_path(char *buf, size_t len, capsa_err *err);

/* $CAPSA_AGENT, else the build-tree sibling of /proc/self/exe
 * (<exe dir>/../../agent/capsa-agent), else the installed
 * <exe dir>/../libexec/capsa/capsa-agent, else <libexecdir>/capsa/capsa-agent. */
int capsa_vm_agent_path(char *buf, size_t len, capsa_err *err);

/* Host TSC frequency in kHz (sysfs tsc_freq_khz, else "cpu MHz" of /proc/cpuinfo);
 * 0 when unknown. */
unsigned long capsa_vm_host_tsc_khz(void);

#endif
