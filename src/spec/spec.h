/* spec.h - the seed's wire types: parse, validate (path-precise errors), normalize, serialize.
 *
 * Every type of the seed (SandboxSpec, VolumeSpec, SnapshotSpec, the Cloud* REST types and
 * their parts) plus the network subdocuments NetworkSpec carries as JsonValue (NetworkPolicy,
 * DnsConfig, TlsConfig, SecretsConfig, InterfaceOverrides) and RootDisk can be checked by
 * name. Checking a document yields either its normalized form (defaults filled in, fields in
 * the seed's order, map keys sorted, mount guest paths canonical) or the list of every error
 * found, each "PATH: MESSAGE" (e.g. "mounts[2].guest: must be an absolute path").
 * Normalizing a normalized document gives the identical document.
 */
#ifndef CAPSA_SPEC_H
#define CAPSA_SPEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "capsa.h"

/* At most this many errors are kept; further ones are only counted. */
#define CAPSA_SPEC_MAX_ERRORS 200

/* A list of "PATH: MESSAGE" strings. Zero-initialize, free with capsa_spec_errors_free. */
typedef struct capsa_spec_errors {
    char **items;
    size_t count;   /* kept in items */
    size_t dropped; /* counted beyond CAPSA_SPEC_MAX_ERRORS */
} capsa_spec_errors;

void capsa_spec_errors_free(capsa_spec_errors *errs);
/* Total number of errors found (kept + dropped). */
size_t capsa_spec_errors_total(const capsa_spec_errors *errs);
/* Put the first error (plus "(and N more)") into err with code EINVAL; returns -1. */
int capsa_spec_errors_to_err(const capsa_spec_errors *errs, capsa_err *err);

/* Check `in` (borrowed, not modified) as seed type `type_name` (e.g. "SandboxSpec").
 * On success returns 0 and, if normalized is non-NULL, a new reference to the normalized
 * document. On failure returns -1 with every error appended to errs (which may be NULL).
 * An unknown type name is reported as one error. */
int capsa_spec_check(const char *type_name, json_t *in, json_t **normalized,
                     capsa_spec_errors *errs);

/* The type names capsa_spec_check accepts, NULL-terminated, in a stable order. */
const char *const *capsa_spec_type_names(void);
bool capsa_spec_type_known(const char *type_name);

/* Parse JSON text (any top-level value, duplicate object keys rejected, at most 16 MiB)
 * into *out; a syntax error is appended to errs as "(json) line L, column C: ...". */
int capsa_spec_parse(const char *text, size_t len, json_t **out, capsa_spec_errors *errs);

/* Serialize a (normalized) document exactly as the wire spells it: fields in their stored
 * order (the seed's order after normalization), pretty (2-space indent) or compact. Returns
 * a malloc'd string without a trailing newline, or NULL on allocation failure. */
char *capsa_spec_dump(const json_t *doc, bool pretty);

/* ---- Typed view of a normalized SandboxSpec, for the runtime ------------------------- */

enum capsa_image_kind { CAPSA_IMAGE_BIND, CAPSA_IMAGE_OCI, CAPSA_IMAGE_DISK_IMAGE };
enum capsa_root_disk_kind {
    CAPSA_ROOT_DISK_MANAGED,
    CAPSA_ROOT_DISK_TMPFS,
    CAPSA_ROOT_DISK_DISK_IMAGE
};
enum capsa_mount_kind {
    CAPSA_MOUNT_BIND,
    CAPSA_MOUNT_NAMED,
    CAPSA_MOUNT_TMPFS,
    CAPSA_MOUNT_DISK_IMAGE
};
enum capsa_stat_virt { CAPSA_STAT_STRICT, CAPSA_STAT_RELAXED, CAPSA_STAT_OFF };
enum capsa_pull_policy { CAPSA_PULL_IF_MISSING, CAPSA_PULL_ALWAYS, CAPSA_PULL_NEVER };

/* All strings below borrow from capsa_sandbox_spec.doc and live as long as the spec. */
struct capsa_spec_env {
    const char *key;
    const char *value;
};

struct capsa_spec_mount {
    enum capsa_mount_kind kind;
    const char *guest;  /* canonical absolute path */
    const char *host;   /* BIND, DISK_IMAGE */
    const char *name;   /* NAMED: volume name */
    const char *format; /* DISK_IMAGE: "Qcow2" | "Raw" | "Vmdk" */
    const char *fstype; /* DISK_IMAGE: NULL = probe */
    uint64_t size_mib;  /* TMPFS: 0 = default */
    uint64_t quota_mib; /* BIND: 0 = protective default */
    bool readonly, noexec, nosuid, nodev;
    enum capsa_stat_virt stat_virtualization; /* BIND, NAMED */
    bool host_permissions_mirror;             /* BIND, NAMED */
};

struct capsa_spec_port {
    uint16_t host_port;
    uint16_t guest_port;
    bool udp;
    const char *host_bind; /* IP literal */
};

struct capsa_spec_rlimit {
    const char *resource; /* seed spelling, e.g. "Nofile" */
    uint64_t soft, hard;
};

struct capsa_sandbox_spec {
    json_t *doc; /* the normalized SandboxSpec (owned reference) */
    const char *name;
    struct {
        enum capsa_image_kind kind;
        const char *reference; /* OCI */
        const char *path;      /* BIND: host dir; DISK_IMAGE: host file */
        const char *format;    /* DISK_IMAGE */
        const char *fstype;    /* DISK_IMAGE, NULL = probe */
        struct {
            enum capsa_root_disk_kind kind;
            uint64_t size_mib;  /* MANAGED: always set; TMPFS: 0 = memory/2 */
            const char *path;   /* DISK_IMAGE */
            const char *format; /* DISK_IMAGE */
            const char *fstype; /* DISK_IMAGE, NULL = ext4 */
        } root_disk;            /* OCI only */
    } image;
    unsigned cpus;
    uint64_t memory_mib;
    struct capsa_spec_env *env;
    size_t n_env;
    struct capsa_spec_rlimit *rlimits;
    size_t n_rlimits;
    const char *workdir, *shell, *user, *hostname; /* NULL = image/runtime default */
    const char **entrypoint;                       /* NULL-terminated, or NULL = image's */
    const char **cmd;                              /* NULL-terminated, or NULL = image's */
    struct capsa_spec_mount *mounts;               /* sorted parent before child */
    size_t n_mounts;
    struct {
        bool ephemeral;
        uint64_t max_duration_secs; /* 0 = none */
        uint64_t idle_timeout_secs; /* 0 = none */
    } lifecycle;
    struct {
        bool enabled;
        struct capsa_spec_port *ports;
        size_t n_ports;
    } network;
    enum capsa_pull_policy pull_policy;
    bool restricted;                     /* security_profile == "restricted" */
    uint64_t metrics_sample_interval_ms; /* 0 = disabled */
};

/* Check `in` as a SandboxSpec and build the typed view of its normalized form.
 * Returns 0 and *out (free with capsa_sandbox_spec_free), or -1 with errs filled. */
int capsa_sandbox_spec_load(json_t *in, struct capsa_sandbox_spec **out, capsa_spec_errors *errs);
void capsa_sandbox_spec_free(struct capsa_sandbox_spec *spec);

#endif
