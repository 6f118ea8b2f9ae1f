/* accel.h - accelerator choice: parse/print, the cached "does KVM really boot?" probe. */
#ifndef CAPSA_VM_ACCEL_H
#define CAPSA_VM_ACCEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsa.h"

enum capsa_accel {
    CAPSA_ACCEL_AUTO = 0,
    CAPSA_ACCEL_KVM,
    CAPSA_ACCEL_TCG,
};

/* "auto" | "kvm" | "tcg" */
int capsa_accel_parse(const char *s, enum capsa_accel *out, capsa_err *err);
const char *capsa_accel_name(enum capsa_accel a);

/* Can /dev/kvm be opened read-write?  1 yes, 0 no (why says why). */
int capsa_kvm_openable(char *why, size_t why_len);

/* What a cached probe result depends on. */
struct capsa_accel_probe_key {
    char kernel[4096];       /* kernel image path, symlinks resolved */
    int64_t kernel_size;     /* st_size */
    int64_t kernel_mtime_ns; /* st_mtim */
    char host_release[65];   /* uname -r */
    bool kvm_present;        /* /dev/kvm exists */
};

/* Fill a key from the kernel file (stat) and the running host. */
int capsa_accel_probe_key_fill(const char *kernel, struct capsa_accel_probe_key *k, capsa_err *err);

/* $CAPSA_HOME/cache/accel-probe.json */
int capsa_accel_cache_path(char *buf, size_t len, capsa_err *err);

/* 1: hit (*result is KVM or TCG, reason filled, may be empty); 0: miss. A missing,
 * unreadable or malformed cache file is a miss, never an error. */
int capsa_accel_cache_lookup(const char *cache_path, const struct capsa_accel_probe_key *k,
                             enum capsa_accel *result, char *reason, size_t reason_len);

/* Insert or replace the entry for k (atomic rename; keeps at most 8 entries). */
int capsa_accel_cache_store(const char *cache_path, const struct capsa_accel_probe_key *k,
                            enum capsa_accel result, const char *reason, int64_t probe_ms,
                            capsa_err *err);

struct capsa_vm_config;

/* Decide the accelerator for cfg. TCG and KVM are taken as asked (KVM fails with a
 * clear error when /dev/kvm cannot be opened). AUTO: TCG when /dev/kvm cannot be
 * opened; otherwise the cached probe result for (kernel, host), probing on a miss by
 * booting cfg's kernel+initramfs under KVM and waiting for the agent's first frame
 * (deadline 4 s, CAPSA_KVM_PROBE_TIMEOUT_MS overrides). When AUTO ends in TCG, one
 * warning line goes to stderr (unless cfg->quiet_accel) and reason (if non-NULL)
 * says why. */
int capsa_accel_resolve(const struct capsa_vm_config *cfg, enum capsa_accel *out, char *reason,
                        size_t reason_len, capsa_err *err);

#endif
