/* store.h - capsa's persistent state in SQLite ($CAPSA_HOME/capsa.db): sandboxes, runs,
 * labels, images, layers, volumes, snapshots.
 *
 * Theory of operation: one `struct capsa_store` is one SQLite connection, owned by one
 * thread of one process (never share it across threads; a child forked while any store
 * was open must exec before opening one: SQLite's locks do not survive fork).
 * Many processes write at once (CLI, supervisors, server): every write runs inside
 * BEGIN IMMEDIATE with a 30 s busy timeout plus a bounded retry of the BEGIN itself,
 * so callers never see SQLITE_BUSY. Functions that write open their own transaction,
 * or a SAVEPOINT when the caller already holds one from capsa_store_tx_begin(), so
 * several calls can be grouped atomically. See docs/store.md.
 *
 * Errors: -1 and err->code = ENOENT (no such row), EEXIST (name taken), EBUSY (row not in
 * an expected status), EINVAL (bad argument or illegal transition), EPROTO (database newer
 * than this code), EIO (SQLite failure). Timestamps are Unix milliseconds (0 = unset).
 */
#ifndef CAPSA_STORE_STORE_H
#define CAPSA_STORE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsa.h"
#include "common/names.h" /* CAPSA_NAME_MAX (128) */

struct capsa_store;
struct sqlite3;

/* Newest schema version this code knows (PRAGMA user_version). */
#define CAPSA_STORE_SCHEMA_VERSION 1
/* Busy timeout of every connection, in milliseconds. */
#define CAPSA_STORE_BUSY_TIMEOUT_MS 30000

/* ---- open / close / transactions ---------------------------------------------------- */

/* Open (creating if needed) the database at path, or at $CAPSA_HOME/capsa.db when path is
 * NULL (the directory is created 0700, the file 0600). Applies pending migrations, each in
 * its own transaction; a database whose version is newer than CAPSA_STORE_SCHEMA_VERSION
 * is refused with EPROTO. */
int capsa_store_open(const char *path, struct capsa_store **out, capsa_err *err);
/* Closes the connection (rolling back an open transaction). NULL is fine. In a forked
 * child that inherited the store, only frees memory and never touches the file. */
void capsa_store_close(struct capsa_store *store);
/* For _cleanup_(capsa_store_closep). */
void capsa_store_closep(struct capsa_store **store);

const char *capsa_store_path(const struct capsa_store *store);
/* Raw connection for queries this API lacks; writes must be inside capsa_store_tx_begin. */
struct sqlite3 *capsa_store_handle(struct capsa_store *store);
/* Schema version found in the file (after migrations). */
int capsa_store_schema_version(struct capsa_store *store, int *version, capsa_err *err);

/* BEGIN IMMEDIATE (takes the write lock now, retrying while other writers hold it).
 * Nested calls use SAVEPOINTs. Every begin needs exactly one commit or rollback. */
int capsa_store_tx_begin(struct capsa_store *store, capsa_err *err);
int capsa_store_tx_commit(struct capsa_store *store, capsa_err *err);
/* Never fails in a way the caller can act on; safe to call on an error path. */
void capsa_store_tx_rollback(struct capsa_store *store);
/* Depth of open capsa_store_tx_begin() calls (0 = autocommit). */
int capsa_store_tx_depth(const struct capsa_store *store);

int64_t capsa_store_now_ms(void);

/* ---- names and labels --------------------------------------------------------------- */

#define CAPSA_LABEL_KEY_MAX   256
#define CAPSA_LABEL_VALUE_MAX 4096

/* Sandbox/volume/snapshot name rule: [A-Za-z0-9][A-Za-z0-9._-]{0,127}. what names the
 * kind for the message ("sandbox name"). */
int capsa_store_check_name(const char *what, const char *name, capsa_err *err);
/* Label key: 1..256 bytes of [A-Za-z0-9._/-]; value: 0..4096 bytes, no control bytes. */
int capsa_store_check_label(const char *key, const char *value, capsa_err *err);

struct capsa_store_label {
    char *key;
    char *value;
};
void capsa_store_labels_free(struct capsa_store_label *labels, size_t n);

/* ---- sandboxes ----------------------------------------------------------------------- */

enum capsa_sandbox_status {
    CAPSA_SANDBOX_CREATED = 0,
    CAPSA_SANDBOX_STARTING,
    CAPSA_SANDBOX_RUNNING,
    CAPSA_SANDBOX_STOPPING,
    CAPSA_SANDBOX_STOPPED,
    CAPSA_SANDBOX_FAILED,
    CAPSA_SANDBOX_CRASHED,
    CAPSA_SANDBOX_STATUS_COUNT,
};

#define CAPSA_SB(s)  (1u << CAPSA_SANDBOX_##s)
#define CAPSA_SB_ANY ((1u << CAPSA_SANDBOX_STATUS_COUNT) - 1)
/* Statuses in which a supervisor is (or should be) alive. */
#define CAPSA_SB_ACTIVE (CAPSA_SB(STARTING) | CAPSA_SB(RUNNING) | CAPSA_SB(STOPPING))
/* Statuses with no supervisor: the sandbox can be started, removed, snapshotted. */
#define CAPSA_SB_INACTIVE                                                                          \
    (CAPSA_SB(CREATED) | CAPSA_SB(STOPPED) | CAPSA_SB(FAILED) | CAPSA_SB(CRASHED))

/* "created", "starting", ...; NULL for an out-of-range value. */
const char *capsa_sandbox_status_name(enum capsa_sandbox_status s);
/* Returns the status or -1 for an unknown name. */
int capsa_sandbox_status_parse(const char *name);
/* The legal transition table (docs/store.md). from == to is never legal. */
bool capsa_sandbox_transition_legal(enum capsa_sandbox_status from, enum capsa_sandbox_status to);

/* Input to capsa_store_sandbox_insert; the row starts in status "created". */
struct capsa_store_sandbox_new {
    const char *name;        /* required, checked with capsa_store_check_name */
    const char *config_json; /* required, must be valid JSON (SandboxSpec) */
    const char *image_ref;   /* may be NULL */
    bool ephemeral;
    const struct capsa_store_label *labels; /* key/value pairs, keys unique */
    size_t n_labels;
};

struct capsa_store_sandbox {
    int64_t id;
    char *name;
    char *config_json;
    char *image_ref;  /* NULL when none */
    char *last_error; /* NULL when none */
    enum capsa_sandbox_status status;
    bool ephemeral;
    pid_t supervisor_pid; /* 0 when none */
    int64_t created_at, updated_at, started_at, stopped_at;
    struct capsa_store_label *labels; /* sorted by key */
    size_t n_labels;
};
void capsa_store_sandbox_clear(struct capsa_store_sandbox *sb);
void capsa_store_sandboxes_free(struct capsa_store_sandbox *v, size_t n);

/* Listing filter: status_mask 0 means any status; every label must match (AND); a label
 * with value NULL only requires the key to be present. */
struct capsa_store_sandbox_filter {
    unsigned status_mask;
    const struct capsa_store_label *labels;
    size_t n_labels;
};

int capsa_store_sandbox_insert(struct capsa_store *store, const struct capsa_store_sandbox_new *in,
                               int64_t *id_out, capsa_err *err);
/* out is filled (caller clears it with capsa_store_sandbox_clear). ENOENT if absent. */
int capsa_store_sandbox_get(struct capsa_store *store, const char *name,
                            struct capsa_store_sandbox *out, capsa_err *err);
/* Sorted by name. filter may be NULL. *out is NULL when *n is 0. */
int capsa_store_sandbox_list(struct capsa_store *store,
                             const struct capsa_store_sandbox_filter *filter,
                             struct capsa_store_sandbox **out, size_t *n, capsa_err *err);
/* Deletes the row (labels and runs cascade) only if its status is in from_mask
 * (EBUSY otherwise, naming the status). */
int capsa_store_sandbox_delete(struct capsa_store *store, const char *name, unsigned from_mask,
                               capsa_err *err);
/* Atomically: the current status must be in from_mask (EBUSY) and current -> to must be
 * legal (EINVAL, naming both). Sets updated_at; started_at on -> starting; stopped_at on
 * -> stopped/failed/crashed. last_error non-NULL is stored; -> starting with NULL clears it.
 * Entering stopped/failed/crashed clears supervisor_pid. prev (may be NULL) gets the status
 * that was replaced. */
int capsa_store_sandbox_set_status(struct capsa_store *store, const char *name, unsigned from_mask,
                                   enum capsa_sandbox_status to, const char *last_error,
                                   capsa_err *err);
int capsa_store_sandbox_set_status_prev(struct capsa_store *store, const char *name,
                                        unsigned from_mask, enum capsa_sandbox_status to,
                                        const char *last_error, enum capsa_sandbox_status *prev,
                                        capsa_err *err);
/* pid 0 clears it. */
int capsa_store_sandbox_set_supervisor(struct capsa_store *store, const char *name, pid_t pid,
                                       capsa_err *err);
/* Replace the stored config (valid JSON required). */
int capsa_store_sandbox_set_config(struct capsa_store *store, const char *name,
                                   const char *config_json, capsa_err *err);
int capsa_store_sandbox_label_set(struct capsa_store *store, const char *name, const char *key,
                                  const char *value, capsa_err *err);
/* Removing a key that is not there is not an error (*removed says whether it was). */
int capsa_store_sandbox_label_remove(struct capsa_store *store, const char *name, const char *key,
                                     bool *removed, capsa_err *err);

/* For every sandbox in starting/running/stopping whose supervisor is gone (alive(pid, ctx)
 * returns false, or no pid recorded while running/stopping), in one transaction per row:
 * status -> crashed with last_error, and its open runs end with reason internal_error.
 * alive NULL means "kill(pid, 0) succeeds or fails with EPERM". *n_reaped may be NULL. */
int capsa_store_sandbox_reap(struct capsa_store *store, bool (*alive)(pid_t pid, void *ctx),
                             void *ctx, size_t *n_reaped, capsa_err *err);

/* ---- runs (one per boot of a sandbox) ------------------------------------------------ */

enum capsa_run_reason {
    CAPSA_RUN_COMPLETED = 0,
    CAPSA_RUN_FAILED,
    CAPSA_RUN_MAX_DURATION_EXCEEDED,
    CAPSA_RUN_IDLE_TIMEOUT,
    CAPSA_RUN_AGENT_UNRESPONSIVE,
    CAPSA_RUN_SHUTDOWN_REQUESTED,
    CAPSA_RUN_DRAIN_REQUESTED,
    CAPSA_RUN_SIGNAL,
    CAPSA_RUN_INTERNAL_ERROR,
    CAPSA_RUN_REASON_COUNT,
};
/* "completed", "max_duration_exceeded", ...; NULL when out of range. */
const char *capsa_run_reason_name(enum capsa_run_reason r);
int capsa_run_reason_parse(const char *name);

struct capsa_store_run {
    int64_t id;
    int64_t sandbox_id;
    pid_t pid;                    /* supervisor or VMM pid, 0 when none */
    int64_t started_at, ended_at; /* ended_at 0 while the run is open */
    bool has_exit_code;
    int exit_code;
    int signal;   /* 0 when none */
    int reason;   /* enum capsa_run_reason, -1 while open */
    char *detail; /* NULL when none */
};
void capsa_store_runs_free(struct capsa_store_run *v, size_t n);

/* Opens a run for the sandbox; EBUSY if it already has an open run. */
int capsa_store_run_start(struct capsa_store *store, const char *name, pid_t pid, int64_t *run_id,
                          capsa_err *err);
struct capsa_store_run_end {
    bool has_exit_code;
    int exit_code;
    int signal;
    enum capsa_run_reason reason;
    const char *detail; /* may be NULL */
};
/* Closes an open run; EALREADY if it was already closed, ENOENT if absent. */
int capsa_store_run_finish(struct capsa_store *store, int64_t run_id,
                           const struct capsa_store_run_end *end, capsa_err *err);
/* Runs of a sandbox, oldest first. */
int capsa_store_run_list(struct capsa_store *store, const char *name, struct capsa_store_run **out,
                         size_t *n, capsa_err *err);

/* ---- volumes ------------------------------------------------------------------------- */

enum capsa_volume_kind {
    CAPSA_VOLUME_DIR = 0,
    CAPSA_VOLUME_DISK,
};
const char *capsa_volume_kind_name(enum capsa_volume_kind k);
int capsa_volume_kind_parse(const char *name);

struct capsa_store_volume {
    int64_t id;
    char *name;
    enum capsa_volume_kind kind;
    int64_t quota_mib;    /* 0 = none */
    int64_t capacity_mib; /* required (> 0) for disk volumes, 0 for dir */
    char *disk_format;    /* "raw" for disk volumes, NULL for dir */
    char *disk_fstype;    /* "ext4" for disk volumes, NULL for dir */
    struct capsa_store_label *labels;
    size_t n_labels;
    int64_t created_at, updated_at;
};
void capsa_store_volume_clear(struct capsa_store_volume *v);
void capsa_store_volumes_free(struct capsa_store_volume *v, size_t n);

/* Reads name, kind, quota_mib, capacity_mib, disk_format, disk_fstype, labels from in. */
int capsa_store_volume_insert(struct capsa_store *store, const struct capsa_store_volume *in,
                              int64_t *id_out, capsa_err *err);
int capsa_store_volume_get(struct capsa_store *store, const char *name,
                           struct capsa_store_volume *out, capsa_err *err);
int capsa_store_volume_list(struct capsa_store *store, struct capsa_store_volume **out, size_t *n,
                            capsa_err *err);
int capsa_store_volume_delete(struct capsa_store *store, const char *name, capsa_err *err);

/* ---- snapshots ----------------------------------------------------------------------- */

struct capsa_store_snapshot {
    int64_t id;
    char *name;
    char *digest;        /* "sha256:<hex>" of the canonical descriptor */
    char *path;          /* artifact directory */
    char *parent_digest; /* NULL when none */
    char *source_sandbox;
    char *image_ref;
    char *image_manifest_digest;
    int64_t size_bytes;
    struct capsa_store_label *labels;
    size_t n_labels;
    int64_t created_at;
};
void capsa_store_snapshot_clear(struct capsa_store_snapshot *s);
void capsa_store_snapshots_free(struct capsa_store_snapshot *v, size_t n);

int capsa_store_snapshot_insert(struct capsa_store *store, const struct capsa_store_snapshot *in,
                                int64_t *id_out, capsa_err *err);
/* key is a name or a digest ("sha256:..."). */
int capsa_store_snapshot_get(struct capsa_store *store, const char *key,
                             struct capsa_store_snapshot *out, capsa_err *err);
int capsa_store_snapshot_list(struct capsa_store *store, struct capsa_store_snapshot **out,
                              size_t *n, capsa_err *err);
int capsa_store_snapshot_delete(struct capsa_store *store, const char *key, capsa_err *err);

/* ---- images, manifests, layers ------------------------------------------------------- */

enum capsa_layer_state {
    CAPSA_LAYER_PENDING = 0, /* known, blob not (fully) present */
    CAPSA_LAYER_READY,       /* blob verified and unpacked at path */
    CAPSA_LAYER_FAILED,      /* last fetch/unpack failed; retry allowed */
};
const char *capsa_layer_state_name(enum capsa_layer_state s);
int capsa_layer_state_parse(const char *name);

struct capsa_store_layer {
    char *digest;  /* blob digest "sha256:..." (primary key) */
    char *diff_id; /* digest of the uncompressed tar; NULL until known */
    char *media_type;
    int64_t size; /* compressed size in bytes */
    char *path;   /* where the blob/unpacked layer lives; NULL until known */
    enum capsa_layer_state state;
    int64_t created_at, last_used_at;
};
void capsa_store_layer_clear(struct capsa_store_layer *l);
void capsa_store_layers_free(struct capsa_store_layer *v, size_t n);

/* Insert the layer, or update diff_id/media_type/size/path/state of an existing one
 * (NULL strings keep the stored value). */
int capsa_store_layer_put(struct capsa_store *store, const struct capsa_store_layer *in,
                          capsa_err *err);
int capsa_store_layer_get(struct capsa_store *store, const char *digest,
                          struct capsa_store_layer *out, capsa_err *err);
int capsa_store_layer_set_state(struct capsa_store *store, const char *digest,
                                enum capsa_layer_state state, const char *path, capsa_err *err);
/* Layers no manifest references (candidates for garbage collection). */
int capsa_store_layer_list_orphans(struct capsa_store *store, struct capsa_store_layer **out,
                                   size_t *n, capsa_err *err);
int capsa_store_layer_delete(struct capsa_store *store, const char *digest, capsa_err *err);

/* A pulled image: reference -> manifest (+ its ordered layers). */
struct capsa_store_image_put {
    const char *reference;            /* e.g. "docker.io/library/alpine:3.20" */
    const char *manifest_digest;      /* "sha256:..." */
    const char *manifest_json;        /* raw manifest, may be NULL */
    const char *media_type;           /* manifest media type, may be NULL */
    const char *config_digest;        /* may be NULL */
    const char *config_json;          /* image config JSON, may be NULL */
    int64_t size;                     /* total size in bytes */
    const char *const *layer_digests; /* ordered, lowest first; each must exist in layers */
    size_t n_layers;
};
struct capsa_store_image {
    int64_t id;
    char *reference;
    char *manifest_digest;
    char *media_type;
    char *config_digest;
    char *config_json;
    int64_t size;
    char **layer_digests; /* ordered, lowest first */
    size_t n_layers;
    int64_t created_at, updated_at;
};
void capsa_store_image_clear(struct capsa_store_image *img);
void capsa_store_images_free(struct capsa_store_image *v, size_t n);

/* Records (or re-points) the reference at the manifest, storing the manifest and its layer
 * order if new; all in one transaction. */
int capsa_store_image_put(struct capsa_store *store, const struct capsa_store_image_put *in,
                          capsa_err *err);
/* key: a reference, or a manifest digest (first reference to it). */
int capsa_store_image_get(struct capsa_store *store, const char *key, struct capsa_store_image *out,
                          capsa_err *err);
int capsa_store_image_list(struct capsa_store *store, struct capsa_store_image **out, size_t *n,
                           capsa_err *err);
/* How many sandboxes (by image_ref) and snapshots (by image_ref or the reference's manifest
 * digest) use the reference: what `rmi` without -f must check. */
int capsa_store_image_users(struct capsa_store *store, const char *reference, size_t *n_sandboxes,
                            size_t *n_snapshots, capsa_err *err);
/* Removes the reference; the manifest (and its layer order) goes too when no other
 * reference, sandbox or snapshot uses it. Layers stay (see layer_list_orphans). */
int capsa_store_image_delete(struct capsa_store *store, const char *reference, capsa_err *err);

/* Something that keeps an image alive: a sandbox (any status) or a snapshot. */
struct capsa_store_image_user {
    bool snapshot;         /* false: a sandbox */
    char *name;            /* sandbox or snapshot name */
    char *image_ref;       /* the store reference it was made from; NULL when none */
    char *pinned_ref;      /* sandbox: config image.Oci.reference (usually REPO@sha256:...);
                              snapshot: NULL */
    char *manifest_digest; /* snapshot: image_manifest_digest; sandbox: NULL (see
                              pinned_ref); NULL when none */
};
void capsa_store_image_users_free(struct capsa_store_image_user *v, size_t n);
/* Every sandbox with an OCI image root and every snapshot with an image, sorted by kind
 * then name. *out is NULL when *n is 0. */
int capsa_store_image_user_list(struct capsa_store *store, struct capsa_store_image_user **out,
                                size_t *n, capsa_err *err);
/* Garbage-collect rows: every manifest that no image reference, no snapshot and no sandbox
 * (its config's image.Oci.reference ending in "@DIGEST") uses, then every layer no manifest
 * lists. Counts go to *n_manifests and *n_layers (either may be NULL). One write scope. */
int capsa_store_image_gc(struct capsa_store *store, size_t *n_manifests, size_t *n_layers,
                         capsa_err *err);
/* The digests the database still refers to: manifests (digest and config digest) and layers
 * (sorted, unique; a NULL-terminated array in *out, free with capsa_strvfreep). manifests
 * (may be NULL) gets the manifest digests alone, same form. */
int capsa_store_image_live_digests(struct capsa_store *store, char ***blobs, char ***manifests,
                                   capsa_err *err);

#endif
