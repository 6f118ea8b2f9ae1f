/* rootfs.h - resolve a sandbox's root (host directory, OCI image, disk image) into what
 * capsa_boot() needs: the boot message's "root" object, the VM's disks or 9p share, and
 * the image config defaults (Env, Entrypoint, Cmd, WorkingDir, User).
 *
 * Theory of operation: a root source starting with '/' or '.' is a host path: a directory
 * is shared over 9p, a file is a disk image (raw, qcow2 or vmdk; the guest owns the whole
 * device and probes its filesystem). Anything else is an OCI reference: it is looked up in
 * the image store and pulled when the pull policy says so, then pinned to its manifest
 * digest. The image's erofs lower disk is attached read-only (one file shared by every
 * sandbox of the image) and an upper is added: a managed sparse ext4 file (upper.ext4 in
 * the sandbox's state directory; created on first use, reused afterwards), tmpfs in guest
 * RAM, or a user disk image. The guest mounts overlayfs over both (docs/protocol.md). */
#ifndef CAPSA_LIB_ROOTFS_H
#define CAPSA_LIB_ROOTFS_H

#include <jansson.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "capsa.h"
#include "image/image.h"
#include "spec/spec.h"
#include "vm/qemu.h"

#define CAPSA_ROOT_DISK_DEFAULT_MIB 4096
#define CAPSA_ROOTFS_MAX_DISKS      2

/* virtio-blk serials the guest looks for */
#define CAPSA_SERIAL_LOWER "capsa-lower"
#define CAPSA_SERIAL_UPPER "capsa-upper"
#define CAPSA_SERIAL_ROOT  "capsa-root"

/* enum capsa_pull_policy and enum capsa_root_disk_kind come from spec/spec.h. */

/* "if-missing" (also "missing"), "always", "never". */
int capsa_pull_policy_parse(const char *s, enum capsa_pull_policy *out, capsa_err *err);

struct capsa_root_disk {
    enum capsa_root_disk_kind kind;   /* MANAGED (default), TMPFS, DISK_IMAGE (a user image
                                         attached writable as the upper) */
    uint64_t size_mib;                /* managed: 0 = 4096; tmpfs: 0 = half the guest RAM */
    char path[PATH_MAX];              /* IMAGE: absolute path */
    enum capsa_vm_disk_format format; /* IMAGE */
    char fstype[32];                  /* IMAGE: "" = ext4 */
};

/* --root-disk grammar: "SIZE" (managed, e.g. 8G; a bare number is MiB) | "tmpfs[:SIZE]" |
 * "PATH[:format=raw|qcow2|vmdk][,fstype=T]" (PATH starts with / or .). */
int capsa_root_disk_parse(const char *spec, struct capsa_root_disk *out, capsa_err *err);

struct capsa_rootfs_spec {
    const char *source; /* "/dir" or "./dir" (9p), "/x.img" (disk image), or an OCI reference */
    /* disk image roots: the format (default: from the extension .qcow2/.vmdk, else raw) and
     * the filesystem (NULL: the guest tries each one its kernel knows) */
    const char *disk_format;
    const char *disk_fstype;
    /* images */
    const struct capsa_root_disk *root_disk; /* NULL: managed, 4 GiB */
    enum capsa_pull_policy pull_policy;
    const struct capsa_image_pull_opts *pull; /* insecure, ca_certs, progress; NULL: defaults */
    const char *state_dir; /* where a managed upper.ext4 lives (sandbox dir or run dir) */
    bool scratch;          /* the upper dies with the run (capsa run without --name) */
};

enum capsa_rootfs_kind {
    CAPSA_ROOTFS_DIR,
    CAPSA_ROOTFS_IMAGE,
    CAPSA_ROOTFS_DISK,
};

struct capsa_rootfs {
    enum capsa_rootfs_kind kind;
    char dir[PATH_MAX];              /* DIR: absolute host directory */
    struct capsa_image_info image;   /* IMAGE */
    char pinned[CAPSA_REF_MAX + 80]; /* IMAGE: registry/repo@sha256:... */
    char upper_path[PATH_MAX];       /* IMAGE with a managed upper */
    bool upper_created;              /* the resolve created upper_path */
    char disk_paths[CAPSA_ROOTFS_MAX_DISKS][PATH_MAX];
    struct capsa_vm_disk disks[CAPSA_ROOTFS_MAX_DISKS]; /* point into disk_paths */
    size_t ndisks;
    json_t *root; /* the boot message's "root" object (owned) */
    /* image config (IMAGE; NULL where the image sets nothing) */
    char **env; /* "K=V" */
    char **entrypoint;
    char **cmd;
    char *workdir;
    char *user;
};

/* Resolve spec into out (zeroed first). May pull (network) and create upper.ext4. */
int capsa_rootfs_resolve(const struct capsa_rootfs_spec *spec, struct capsa_rootfs *out,
                         capsa_err *err);
/* Free what resolve allocated (files stay). */
void capsa_rootfs_release(struct capsa_rootfs *r);

/* Create a sparse ext4 file of size_mib at path (must not exist), root dir owned by 0:0.
 * CAPSA_UPPER_SCRATCH: for an upper that dies with its run (no journal). */
#define CAPSA_UPPER_SCRATCH 1u
int capsa_rootfs_make_upper(const char *path, uint64_t size_mib, unsigned flags, capsa_err *err);

/* The command to run: the image's Entrypoint followed by override when override is
 * non-empty (a CMD given by the user replaces Cmd), else Entrypoint + Cmd. ENOENT with a
 * clear message when that is empty. *argv is a malloc'd NULL-terminated vector. */
int capsa_rootfs_command(const struct capsa_rootfs *r, char *const *override, char ***argv,
                         capsa_err *err);

/* Merge: base "K=V" entries, then over (same key replaced). Returns a malloc'd vector. */
char **capsa_env_merge(char *const *base, char *const *over);

#endif
