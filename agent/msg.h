/* msg.h - pure parsers for the agent's JSON requests (boot, exec.start, fs.request, ...).
 *
 * These functions only validate and copy: no syscalls, no global state, so the
 * fuzzer (fuzz/fuzz_proto.c) can drive them with arbitrary bytes. Every string
 * and array coming from the host is bounded. On failure they return -1 with
 * err->code set to EBADMSG when the payload is not a JSON object at all (the
 * caller answers with a `bad_frame` error) and EINVAL when a field is wrong
 * (the message names the field).
 */
#ifndef CAPSA_AGENT_MSG_H
#define CAPSA_AGENT_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsa.h"

#define AGENT_MAX_ARGV      4096
#define AGENT_MAX_ENV       4096
#define AGENT_MAX_MOUNTS    64
#define AGENT_MAX_RLIMITS   32
#define AGENT_MAX_PATH      4096
#define AGENT_MAX_HOSTNAME  64
#define AGENT_MAX_USER_SPEC 256

/* NULL-terminated, malloc'd vector of malloc'd strings. */
typedef char **agent_strv;
void agent_strv_free(agent_strv v);
size_t agent_strv_len(char *const *v);

struct agent_mount {
    char *tag;
    char *guest;
    bool readonly;
};

enum agent_root_kind {
    AGENT_ROOT_NONE,      /* host-test mode: nothing to mount */
    AGENT_ROOT_INITRAMFS, /* stay in the initramfs */
    AGENT_ROOT_9P,
    AGENT_ROOT_OVERLAY, /* erofs lower + ext4 (or tmpfs) upper, overlayfs on top */
    AGENT_ROOT_DISK,    /* one block device is the whole root */
};

#define AGENT_MAX_SERIAL 20 /* virtio-blk serial: VIRTIO_BLK_ID_BYTES */
#define AGENT_MAX_FSTYPE 31

/* A virtio-blk device found by its serial (/sys/block/vd*\/serial). */
struct agent_blockdev {
    char *serial;
    char *fstype; /* NULL: probe /proc/filesystems (disk root only) */
    /* Size in 512-byte sectors, 0: not given. With it the disk is found as the only vd*
     * of that size and read-only flag (sysfs attributes, no request to the device); the
     * serial (one request per disk read) remains the fallback. */
    uint64_t sectors;
    bool readonly;
};

struct agent_boot {
    enum agent_root_kind root_kind;
    char *root_tag;
    struct agent_mount *mounts;
    size_t n_mounts;
    char *hostname;   /* NULL: leave as is */
    agent_strv env;   /* never NULL after a successful parse */
    char *workdir;    /* NULL: "/" */
    char *user;       /* NULL: root */
    int64_t clock_ns; /* 0: leave the clock alone */
    /* root kind overlay: lower (read-only) and upper (a disk, or tmpfs); disk: root_dev */
    struct agent_blockdev root_lower, root_upper, root_dev;
    bool root_upper_tmpfs;
    bool root_upper_scratch; /* the host deletes the upper after the run: nothing to write back */
    bool root_upper_known;   /* capsa made the upper: overlayfs need not probe its features */
    uint64_t root_upper_size_mib; /* tmpfs upper size; 0: the tmpfs default (half of RAM) */
};

struct agent_rlimit {
    int resource; /* RLIMIT_* */
    uint64_t soft, hard;
};

struct agent_exec_req {
    agent_strv argv; /* non-empty */
    agent_strv env;  /* never NULL */
    char *cwd;       /* NULL: boot workdir */
    char *user;      /* NULL: boot user */
    struct agent_rlimit rlimits[AGENT_MAX_RLIMITS];
    size_t n_rlimits;
    bool tty;
    unsigned short rows, cols;
    bool stdin_open;
};

enum agent_fs_op {
    AGENT_FS_READ,
    AGENT_FS_WRITE,
    AGENT_FS_LIST,
    AGENT_FS_STAT,
    AGENT_FS_MKDIR,
    AGENT_FS_REMOVE,
    AGENT_FS_RENAME,
};

struct agent_fs_req {
    enum agent_fs_op op;
    char *path;
    char *to;       /* rename */
    mode_t mode;    /* write (0644), mkdir (0755) */
    bool mode_set;  /* the host gave a mode explicitly */
    bool append;    /* write */
    bool follow;    /* stat, default true */
    bool recursive; /* remove */
};

int agent_parse_boot(const void *payload, size_t len, struct agent_boot *out, capsa_err *err);
void agent_boot_free(struct agent_boot *b);

int agent_parse_exec_start(const void *payload, size_t len, struct agent_exec_req *out,
                           capsa_err *err);
void agent_exec_req_free(struct agent_exec_req *r);

int agent_parse_fs_request(const void *payload, size_t len, struct agent_fs_req *out,
                           capsa_err *err);
void agent_fs_req_free(struct agent_fs_req *r);

/* exec.signal {signal}: 1..64. */
int agent_parse_signal(const void *payload, size_t len, int *sig, capsa_err *err);
/* exec.resize {rows, cols}: 1..65535 each. */
int agent_parse_resize(const void *payload, size_t len, unsigned short *rows, unsigned short *cols,
                       capsa_err *err);
/* Any control payload that must be a JSON object (ping, shutdown). */
int agent_parse_object(const void *payload, size_t len, capsa_err *err);

/* "nofile" -> RLIMIT_NOFILE; -1 if unknown. */
int agent_rlimit_resource(const char *name);

/* Put "KEY=VALUE" into *v, replacing an entry with the same key; the string is copied. */
int agent_env_set(agent_strv *v, const char *kv, capsa_err *err);
/* The value of KEY in v, or NULL. */
const char *agent_env_get(char *const *v, const char *key);

/* Replace every byte that is not part of a valid UTF-8 sequence with '?', in
 * place, so names and messages can always be put in JSON. */
void agent_utf8_fix(char *s);

/* Absolute, no NUL, at most AGENT_MAX_PATH bytes. */
bool agent_path_ok(const char *p);

#endif
