/* capsa.h - public API of libcapsa, the local microVM sandbox runtime.
 *
 * Every fallible function returns a negative value on failure and fills the
 * caller's capsa_err (which may be NULL) with an errno-style code and a
 * message that says what failed and where.
 */
#ifndef CAPSA_H
#define CAPSA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CAPSA_VERSION "0.1.0"

/* Error object: code is a positive errno value (or 0 when not errno-based),
 * msg a human sentence, with context prefixes added by callers
 * ("spec: mounts[2].guest: must be an absolute path"). */
typedef struct capsa_err {
    int code;
    char msg[1024];
} capsa_err;

const char *capsa_version(void);

/* ---- contexts and sandbox handles (src/lib/api.c, docs/api.md) ------------------------------
 *
 * A context is an open state directory ($CAPSA_HOME: the SQLite store, images, sandboxes).
 * A sandbox handle names one named sandbox of a context. A handle returned by a call that
 * started the sandbox is *attached* unless CAPSA_START_DETACHED was given: the sandbox's
 * supervisor watches a pipe this process holds and stops the sandbox gracefully (guest sync,
 * power-off; the row stays as `stopped`) when the pipe closes, i.e. when the handle is
 * released or this process exits or is killed. capsa_sandbox_detach() disarms that watch.
 *
 * Threads: the calls of one context are serialized on its lock (lifecycle calls hold it while
 * they wait for the VM); exec sessions run outside it, so several threads may exec at once.
 * Supervisors run the `capsa` binary: $CAPSA_SUPERVISOR_EXE, else `capsa` found on PATH.
 */
typedef struct capsa_ctx capsa_ctx;
typedef struct capsa_sandbox capsa_sandbox;

/* flags of capsa_sandbox_create / capsa_sandbox_start / capsa_sandbox_remove */
#define CAPSA_START_DETACHED (1u << 0) /* do not attach: the sandbox outlives this process */
#define CAPSA_REPLACE        (1u << 1) /* create: remove a sandbox of that name first */
#define CAPSA_FORCE          (1u << 2) /* remove: stop a running sandbox first */

/* Open the state directory home (absolute; NULL: $CAPSA_HOME, else ~/.capsa), creating it
 * when needed. libcapsa finds its files through $CAPSA_HOME, so a home given here is set in
 * the process environment; opening a second, different home while a context is open fails
 * with EBUSY. NULL with err set on failure. */
capsa_ctx *capsa_open(const char *home, capsa_err *err);
/* Close a context; release its sandbox handles first. NULL is fine. */
void capsa_close(capsa_ctx *ctx);

/* Create a named sandbox from a seed SandboxSpec in JSON (its "name" is required; the other
 * fields default as in `capsa create --spec`) and start it. Attached unless flags has
 * CAPSA_START_DETACHED; CAPSA_REPLACE removes an existing sandbox of that name first (else a
 * taken name fails with EEXIST). Invalid specs fail with EINVAL and a message naming the field
 * ("spec: resources.cpus: ..."); nothing is stored then. A sandbox that was stored but failed
 * to boot stays as `failed`. Returns a handle, or NULL with err set. */
capsa_sandbox *capsa_sandbox_create(capsa_ctx *ctx, const char *spec_json, unsigned flags,
                                    capsa_err *err);
/* Start an existing sandbox (created, stopped, failed or crashed) and return a handle,
 * attached unless CAPSA_START_DETACHED. A sandbox that is already running is left alone and
 * its handle is not attached. */
capsa_sandbox *capsa_sandbox_start(capsa_ctx *ctx, const char *name, unsigned flags,
                                   capsa_err *err);
/* A handle on an existing sandbox in any state; never attached. ENOENT when there is none. */
capsa_sandbox *capsa_sandbox_get(capsa_ctx *ctx, const char *name, capsa_err *err);

const char *capsa_sandbox_name(const capsa_sandbox *sb);
/* 1 when the handle holds the sandbox's parent watch, else 0. */
int capsa_sandbox_attached(const capsa_sandbox *sb);
/* Disarm the parent watch (a `detach` control request): the sandbox keeps running after the
 * handle is released and this process exits. 0 when the handle was not attached. */
int capsa_sandbox_detach(capsa_sandbox *sb, capsa_err *err);
/* Stop gracefully: the guest syncs and powers off; QEMU is killed when it has not done so
 * within timeout_ms (< 0: 10000; 0: kill at once). Returns once the supervisor is gone; a
 * sandbox that is not running is fine. The handle stays valid (and is no longer attached). */
int capsa_sandbox_stop(capsa_sandbox *sb, int timeout_ms, capsa_err *err);
/* Remove the sandbox (row, directory, runs). A running one fails with EBUSY unless flags has
 * CAPSA_FORCE, which stops it first. The handle must still be released. */
int capsa_sandbox_remove(capsa_sandbox *sb, unsigned flags, capsa_err *err);
/* Free the handle. An attached sandbox's watch pipe closes with it, so its supervisor stops
 * it (in the background: call capsa_sandbox_stop first to wait for that). NULL is fine. */
void capsa_sandbox_release(capsa_sandbox *sb);

enum capsa_state {
    CAPSA_STATE_CREATED,
    CAPSA_STATE_STARTING,
    CAPSA_STATE_RUNNING,
    CAPSA_STATE_STOPPING,
    CAPSA_STATE_STOPPED,
    CAPSA_STATE_FAILED,
    CAPSA_STATE_CRASHED,
};

struct capsa_sandbox_info {
    char name[129];
    enum capsa_state state;
    char status[16];      /* the state's name: created, starting, running, ... */
    int supervisor_pid;   /* 0 when not active */
    int attached;         /* this handle holds the parent watch */
    char last_error[512]; /* why it failed or crashed; "" when none */
    char image[512];      /* the root: the OCI reference as stored (pinned to its digest), the
                             Bind directory or the disk image path; "" when unknown */
    int64_t created_ms;   /* Unix milliseconds; 0 when never */
    int64_t started_ms;   /* last start; 0 when never started */
    int64_t stopped_ms;   /* last stop/failure/crash; 0 when never */
};
/* The sandbox's current state from the store (dead supervisors are reaped first, so a
 * sandbox whose supervisor was killed shows as crashed). ENOENT when it was removed. */
int capsa_sandbox_status(capsa_sandbox *sb, struct capsa_sandbox_info *info, capsa_err *err);

/* Names of the sandboxes of ctx (sorted; every state) whose labels match label_selector:
 * NULL or "" for all, else comma-separated terms "KEY=VALUE" (the label equals VALUE) or
 * "KEY" (the label is present), all of which must match. *names is a NULL-terminated array
 * (also when *n is 0); free it with capsa_sandbox_names_free(). */
int capsa_sandbox_list(capsa_ctx *ctx, const char *label_selector, char ***names, size_t *n,
                       capsa_err *err);
void capsa_sandbox_names_free(char **names);

/* Pull options of capsa_sandbox_create2 (they apply when the spec's root is an OCI image). */
struct capsa_create_opts {
    bool insecure;        /* plain HTTP / unverified TLS for the registry of the reference */
    const char *ca_certs; /* PEM file of extra CA certificates; NULL: the system's */
    long pull_timeout_s;  /* registry timeout; 0: default (CAPSA_REGISTRY_TIMEOUT or 30) */
    bool force_pull;      /* resolve the reference again even when it is pulled */
};
/* capsa_sandbox_create with pull options (opts may be NULL: as capsa_sandbox_create). */
capsa_sandbox *capsa_sandbox_create2(capsa_ctx *ctx, const char *spec_json, unsigned flags,
                                     const struct capsa_create_opts *opts, capsa_err *err);

/* Default bound on each captured output stream of capsa_sandbox_exec. */
#define CAPSA_EXEC_OUTPUT_MAX (16u << 20)

struct capsa_exec_req {
    const char *const *env; /* "KEY=VALUE" entries, NULL-terminated, over the sandbox env */
    const char *cwd;        /* absolute; NULL: the sandbox default */
    const char *user;       /* USER[:GROUP] or UID[:GID]; NULL: the sandbox default */
    const void *stdin_data; /* NULL: stdin is empty (/dev/null) */
    size_t stdin_len;
    uint64_t timeout_ms; /* 0: none; else the command is killed after it (exit 124) */
    size_t max_output;   /* bytes kept per stream (more is read and dropped); 0: default */
};

struct capsa_exec_out {
    int exit_code;     /* the command's; 128+N when killed by signal N; 124 timeout;
                          127 not found; 126 not executable; 1 other start failures */
    int signal;        /* N when killed by a signal, else 0 */
    int timed_out;     /* 1 when killed after req->timeout_ms */
    char *stdout_data; /* NUL-terminated (the data may contain NULs: use the length) */
    size_t stdout_len;
    int stdout_truncated; /* more than max_output bytes were written */
    char *stderr_data;
    size_t stderr_len;
    int stderr_truncated;
};

/* Run argv (argv[0] the program, NULL-terminated) in the running sandbox and wait for it,
 * capturing stdout and stderr (req may be NULL: defaults). 0 once the command ran to its end
 * (whatever its exit code) or was killed; -1 with err when it could not run: invalid arguments
 * (EINVAL, naming the argument), the sandbox not running (EBUSY), the program not found
 * (ENOENT, exit_code 127) or not executable (EACCES, exit_code 126), a channel failure. Free
 * out with capsa_exec_out_free() in every case. */
int capsa_sandbox_exec(capsa_sandbox *sb, const char *const argv[],
                       const struct capsa_exec_req *req, struct capsa_exec_out *out,
                       capsa_err *err);
void capsa_exec_out_free(struct capsa_exec_out *out);

/* Callbacks of capsa_sandbox_exec_stream, called in the calling thread as output arrives (in
 * pieces of at most 64 KiB, in order per stream). Return 0 to go on; non-zero cancels: the
 * command is killed and the call fails with ECANCELED. Either may be NULL (output dropped). */
struct capsa_exec_callbacks {
    int (*on_stdout)(const void *buf, size_t len, void *ud);
    int (*on_stderr)(const void *buf, size_t len, void *ud);
    void *ud;
};
/* Run argv as capsa_sandbox_exec does (req: env, cwd, user, stdin bytes, timeout_ms;
 * max_output is ignored) but deliver stdout and stderr to cb as it arrives instead of
 * buffering it. *exit_code (shell-style, as capsa_exec_out.exit_code) and *signal may be NULL.
 * 0 once the command ended (any exit code; a timeout gives 124); -1 with err as
 * capsa_sandbox_exec, or ECANCELED when a callback asked to stop. */
int capsa_sandbox_exec_stream(capsa_sandbox *sb, const char *const argv[],
                              const struct capsa_exec_req *req,
                              const struct capsa_exec_callbacks *cb, int *exit_code, int *signal,
                              capsa_err *err);

/* ---- files of a running sandbox (through its supervisor; docs/api.md) -------------------
 *
 * Paths are absolute guest paths (at most 4095 bytes). Failures name the operation and the
 * path and carry the guest's errno (ENOENT, EISDIR, ...); the sandbox not running is EBUSY. */

enum capsa_file_kind {
    CAPSA_FILE_REGULAR,
    CAPSA_FILE_DIR,
    CAPSA_FILE_SYMLINK,
    CAPSA_FILE_OTHER,
};

struct capsa_file_stat {
    enum capsa_file_kind kind;
    uint64_t size;
    uint32_t mode; /* permission bits (07777) */
    uint32_t uid, gid;
    int64_t mtime; /* Unix seconds */
};

struct capsa_dir_entry {
    char *name; /* one path component */
    enum capsa_file_kind kind;
    uint64_t size;
    uint32_t mode;
    int64_t mtime;
};

/* Read the whole file into *data (malloc'd, followed by a NUL not counted in *len). A file
 * longer than max bytes (0: 1 GiB) fails with EFBIG and nothing is returned. */
int capsa_fs_read(capsa_sandbox *sb, const char *path, uint8_t **data, size_t *len, size_t max,
                  capsa_err *err);
/* Create or truncate path and write len bytes (data may be NULL when len is 0) with mode
 * (permission bits; < 0: 0644). */
int capsa_fs_write(capsa_sandbox *sb, const char *path, const void *data, size_t len, int mode,
                   capsa_err *err);
/* Stat path (symlinks followed). */
int capsa_fs_stat(capsa_sandbox *sb, const char *path, struct capsa_file_stat *st, capsa_err *err);
/* The entries of directory path, sorted by name (no "." or ".."); free with
 * capsa_fs_list_free(). At most 100000 entries (the guest may cut a long listing short:
 * *truncated is then 1; truncated may be NULL). */
int capsa_fs_list(capsa_sandbox *sb, const char *path, struct capsa_dir_entry **entries, size_t *n,
                  int *truncated, capsa_err *err);
void capsa_fs_list_free(struct capsa_dir_entry *entries, size_t n);
/* Make directory path with mode (< 0: 0755); parents: also the missing parents, and an
 * existing directory is fine; else the parent must exist (ENOENT) and path must not (EEXIST). */
int capsa_fs_mkdir(capsa_sandbox *sb, const char *path, int mode, bool parents, capsa_err *err);
/* Remove a file, symlink or empty directory; recursive: a whole tree. */
int capsa_fs_remove(capsa_sandbox *sb, const char *path, bool recursive, capsa_err *err);
/* Rename from to to (rename(2) in the guest). */
int capsa_fs_rename(capsa_sandbox *sb, const char *from, const char *to, capsa_err *err);

#ifdef __cplusplus
}
#endif

#endif
