/* sandbox.h - named sandboxes: create, start, stop, remove; spawning and finding supervisors.
 *
 * Theory of operation: a named sandbox is a row in the store (src/store/store.h) whose config
 * is a SandboxSpec, a directory $CAPSA_HOME/sandboxes/NAME/ (supervisor.log, exec.log) and,
 * while it runs, one supervisor process (`capsa __supervisor NAME`, supervisor.h) with a run
 * directory $CAPSA_HOME/run/<id>/ holding the control socket and the guest console log.
 * Starting spawns the supervisor (fork, setsid, fork, exec of /proc/self/exe) and waits on a
 * pipe for its one-line JSON start report; the supervisor itself moves the row to starting
 * with its pid, boots the VM and marks it running, so a start that loses a race simply finds
 * the sandbox running. Stopping asks the supervisor over the control socket (client.h) and
 * falls back to signals when it does not answer. Every function that reads the store first
 * reaps dead supervisors (capsa_sandbox_reap) so a killed supervisor shows as `crashed`.
 * An attached start hands the caller a parent-watch pipe: the supervisor stops the sandbox when
 * it reads EOF there. The public API (include/capsa.h, src/lib/api.c) wraps these *_named
 * functions. See docs/lifecycle.md.
 */
#ifndef CAPSA_SUPERVISOR_SANDBOX_H
#define CAPSA_SUPERVISOR_SANDBOX_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsa.h"
#include "image/image.h"
#include "lib/rootfs.h"
#include "store/store.h"

/* Default time a graceful stop waits for the guest to power off before killing QEMU. */
#define CAPSA_STOP_TIMEOUT_MS_DEFAULT 10000

/* runtime.scripts are installed at CAPSA_SCRIPTS_DIR/NAME (0755) after every boot, and the
 * directory is put first in PATH; a script body is at most CAPSA_SCRIPT_MAX bytes. */
#define CAPSA_SCRIPTS_DIR "/.capsa/scripts"
#define CAPSA_SCRIPT_MAX  (1 << 20)
/* A script name: 1 to 128 characters of [A-Za-z0-9._-], not "." or "..". */
bool capsa_sandbox_script_name_ok(const char *name);

struct capsa_sandbox_paths {
    char dir[4096];      /* $CAPSA_HOME/sandboxes/NAME */
    char log[4160];      /* dir/supervisor.log */
    char exec_log[4160]; /* dir/exec.log (JSON lines, execlog.h) */
    char run_dir[4096];  /* $CAPSA_HOME/run/<id> */
    char sock[4160];     /* run_dir/control.sock */
    char console[4160];  /* run_dir/console.log */
};
/* id <= 0 leaves the run paths empty. */
int capsa_sandbox_paths(const char *name, int64_t id, struct capsa_sandbox_paths *p,
                        capsa_err *err);

/* Liveness check for capsa_store_sandbox_reap(): the process exists, is not a zombie and is a
 * capsa supervisor (its argv[1] is "__supervisor"), so a recycled pid is not mistaken for it. */
bool capsa_supervisor_alive(pid_t pid, void *ctx);
/* Reap dead supervisors (rows -> crashed) and remove their stale run directories. */
int capsa_sandbox_reap(struct capsa_store *store, capsa_err *err);

/* Default hostname for a sandbox name: the name when it fits 64 bytes, else a 55-byte prefix
 * + "-" + 8 hex digits of a hash of the whole name. */
void capsa_sandbox_default_hostname(const char *name, char out[65]);

struct capsa_sandbox_create_opts {
    const char *name;                       /* required */
    json_t *spec;                           /* SandboxSpec seed (borrowed); its name is replaced */
    const struct capsa_store_label *labels; /* merged over spec.labels */
    size_t n_labels;
    bool replace; /* remove an existing sandbox of that name first (stopping it) */
    /* --replace-with-timeout: how long the old one gets to stop gracefully (0: killed at
     * once); unset: the stop default */
    bool replace_timeout_set;
    int replace_timeout_ms;
    bool no_start; /* leave it in status created */
    /* OCI images: how to pull at create (NULL: defaults); the pull policy is the spec's */
    const struct capsa_image_pull_opts *pull;
    /* non-NULL: start it attached (see capsa_sandbox_start_attached); *watch_fd gets the
     * parent-watch fd, -1 when nothing was started */
    int *watch_fd;
};
/* Validate the spec, resolve its root (an OCI image is pulled per its pull policy and its
 * reference pinned to the manifest digest in the stored spec), insert the row, make the
 * directory and start it. EEXIST when the name is taken and replace is false. A start failure
 * leaves the row in `failed` with last_error and returns -1. */
int capsa_sandbox_create_named(struct capsa_store *store, const struct capsa_sandbox_create_opts *o,
                               capsa_err *err);

/* The lib/rootfs.h spec for a sandbox spec's OCI or DiskImage root (rd: storage for the
 * root disk; state_dir: the sandbox directory, where a managed upper.ext4 lives). EINVAL for
 * Bind roots (those are shared directly). */
int capsa_sandbox_rootfs_spec(const struct capsa_sandbox_spec *sp, const char *state_dir,
                              struct capsa_root_disk *rd, struct capsa_rootfs_spec *rs,
                              capsa_err *err);

/* Start a created/stopped/failed/crashed sandbox and wait until it runs (or failed).
 * Already running: 0 with *was_running = true (may be NULL). A sandbox being started by
 * someone else is waited for. */
int capsa_sandbox_start_named(struct capsa_store *store, const char *name, bool *was_running,
                              capsa_err *err);

/* Start as capsa_sandbox_start_named, attached to the caller: when this call started the
 * supervisor, *watch_fd gets the write end of its parent-watch pipe (O_CLOEXEC); the
 * supervisor stops the sandbox gracefully once every copy of that fd is closed (the caller
 * exited or closed it), unless a `detach` control request disarmed the watch first. When the
 * sandbox was already running (or on failure) *watch_fd is -1: it is not attached. */
int capsa_sandbox_start_attached(struct capsa_store *store, const char *name, int *watch_fd,
                                 bool *was_running, capsa_err *err);

/* Stop: graceful (guest syncs and powers off) with timeout_ms (<0: the default) before QEMU
 * is killed; force kills at once. Returns once the supervisor is gone. A sandbox that is not
 * running: 0 with *was_stopped = true (may be NULL). */
int capsa_sandbox_stop_named(struct capsa_store *store, const char *name, bool force,
                             int timeout_ms, bool *was_stopped, capsa_err *err);

/* Remove the row, the sandbox directory and its run directory. A running sandbox is refused
 * (EBUSY) unless force, which stops it first. */
int capsa_sandbox_remove_named(struct capsa_store *store, const char *name, bool force,
                               capsa_err *err);

/* --insecure / --ca-certs given at create, kept in the sandbox directory DIR (pull.json and a
 * private ca-certs.pem) for the pulls of later starts. load fills PO (ca_certs points into
 * CA_PATH); a missing pull.json means defaults. */
struct capsa_image_pull_opts;
int capsa_sandbox_pull_opts_save(const char *dir, const struct capsa_image_pull_opts *po,
                                 capsa_err *err);
int capsa_sandbox_pull_opts_load(const char *dir, struct capsa_image_pull_opts *po, char *ca_path,
                                 size_t ca_size, capsa_err *err);

/* Spawn the supervisor for name and wait (up to timeout_ms, <=0: boot timeout + 60 s) for its
 * start report. Used by capsa_sandbox_start_*; exposed for tests. *busy (may be NULL) is set
 * when the supervisor found the sandbox already active (someone else started it). watch_fd
 * non-NULL: attached; on success *watch_fd is the write end of the parent-watch pipe whose read
 * end the supervisor inherits ($CAPSA_SUPERVISOR_WATCH_FD), -1 otherwise. */
int capsa_supervisor_spawn(const char *name, int timeout_ms, int *watch_fd, bool *busy,
                           capsa_err *err);

#endif
