/* extract.c - apply OCI layer tarballs to a root directory, refusing every escape (extract.h). */
#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/sha256.h"
#include "image/extract.h"

#define PATH_LIMIT      4095
#define NAME_LIMIT      255
#define XATTR_COUNT_MAX 64
#define XATTR_VALUE_MAX 65536
#define ENTRIES_MAX     2000000
#define WH_PREFIX       ".wh."
#define WH_OPAQUE       ".wh..wh..opq"
#define IO_BUF          (256 * 1024) /* compressed reads and decompressed chunks */
#define HASH_BUFS       3            /* decompressed chunks in flight to the hasher */

/* ---- a set of paths created by the current layer (for opaque directories) ------------- */

struct pathset {
    char **slots;
    size_t cap, used;
};

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int pathset_add(struct pathset *ps, const char *p)
{
    if ((ps->used + 1) * 2 > ps->cap) {
        size_t ncap = ps->cap ? ps->cap * 2 : 1024;
        char **ns = calloc(ncap, sizeof(char *));
        if (!ns)
            return -1;
        for (size_t i = 0; i < ps->cap; i++) {
            if (!ps->slots[i])
                continue;
            size_t k = hash_str(ps->slots[i]) & (ncap - 1);
            while (ns[k])
                k = (k + 1) & (ncap - 1);
            ns[k] = ps->slots[i];
        }
        free(ps->slots);
        ps->slots = ns;
        ps->cap = ncap;
    }
    size_t k = hash_str(p) & (ps->cap - 1);
    while (ps->slots[k]) {
        if (!strcmp(ps->slots[k], p))
            return 0;
        k = (k + 1) & (ps->cap - 1);
    }
    ps->slots[k] = strdup(p);
    if (!ps->slots[k])
        return -1;
    ps->used++;
    return 0;
}

static bool pathset_has(const struct pathset *ps, const char *p)
{
    if (!ps->cap)
        return false;
    size_t k = hash_str(p) & (ps->cap - 1);
    while (ps->slots[k]) {
        if (!strcmp(ps->slots[k], p))
            return true;
        k = (k + 1) & (ps->cap - 1);
    }
    return false;
}

static void pathset_free(struct pathset *ps)
{
    for (size_t i = 0; i < ps->cap; i++)
        free(ps->slots[i]);
    free(ps->slots);
    memset(ps, 0, sizeof(*ps));
}

/* ---- context -------------------------------------------------------------------------- */

struct dirtime {
    char *path;
    struct timespec ts[2];
};

struct ctx {
    int rootfd;
    struct archive *outer; /* decompressor (raw format) */
    struct archive *inner; /* tar reader fed from outer */
    capsa_sha256 hash;
    char *rbuf; /* IO_BUF bytes: compressed data from the source */
    capsa_layer_read_fn src;
    void *src_ctx;
    capsa_err src_err; /* set when the source failed */
    bool root;
    bool warned_owner, warned_dev, warned_xattr;
    struct pathset created;
    struct dirtime *dirs;
    size_t n_dirs, cap_dirs;
    struct capsa_layer_stats stats;
    capsa_layer_entry_fn sink; /* when set, entries go to it instead of the tree */
    void *sink_ctx;
    /* The diff_id is hashed by a thread of its own (the other core) while the tar is parsed:
     * chunk k is decompressed into hbuf[k % HASH_BUFS]; libarchive holds it until its next
     * read, the hasher until it counts it done. */
    char *hbuf[HASH_BUFS];
    size_t hlen[HASH_BUFS];
    uint64_t posted, hashed;
    bool hasher, stop;
    pthread_t hasher_th;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

static void *hasher_main(void *arg)
{
    struct ctx *c = arg;

    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (c->hashed == c->posted && !c->stop)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->hashed == c->posted)
            break;
        size_t i = c->hashed % HASH_BUFS;
        pthread_mutex_unlock(&c->mu);
        capsa_sha256_update(&c->hash, c->hbuf[i], c->hlen[i]);
        pthread_mutex_lock(&c->mu);
        c->hashed++;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* Wait until the hasher has at most `left` chunks to go. */
static void hasher_wait(struct ctx *c, uint64_t left)
{
    pthread_mutex_lock(&c->mu);
    while (c->posted - c->hashed > left)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

static void hasher_stop(struct ctx *c)
{
    if (!c->hasher)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->hasher_th, NULL);
    c->hasher = false;
}

/* Decompress the next chunk and have it hashed; *out points at it. */
static la_ssize_t next_chunk(struct ctx *c, const void **out)
{
    size_t i = c->posted % HASH_BUFS;
    la_ssize_t n;

    if (c->hasher)
        hasher_wait(c, HASH_BUFS - 1); /* chunk posted - HASH_BUFS is hashed: its buffer is free */
    n = archive_read_data(c->outer, c->hbuf[i], IO_BUF);
    if (n < 0)
        return n;
    *out = c->hbuf[i];
    if (n == 0)
        return 0;
    if (!c->hasher) {
        capsa_sha256_update(&c->hash, c->hbuf[i], (size_t)n);
        return n;
    }
    pthread_mutex_lock(&c->mu);
    c->hlen[i] = (size_t)n;
    c->posted++;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return n;
}

static la_ssize_t inner_read(struct archive *a, void *ud, const void **buf)
{
    struct ctx *c = ud;
    la_ssize_t n = next_chunk(c, buf);

    (void)a;
    if (n < 0) {
        archive_set_error(c->inner, EIO, "decompress: %s", archive_error_string(c->outer));
        return -1;
    }
    return n;
}

static la_ssize_t outer_read(struct archive *a, void *ud, const void **buf)
{
    struct ctx *c = ud;
    ssize_t n = c->src(c->src_ctx, c->rbuf, IO_BUF, &c->src_err);

    if (n < 0) {
        if (!c->src_err.code)
            capsa_err_set(&c->src_err, EIO, "layer: read failed");
        archive_set_error(a, c->src_err.code, "%s", c->src_err.msg);
        return -1;
    }
    *buf = c->rbuf;
    return n;
}

ssize_t capsa_layer_fd_read(void *ctx, void *buf, size_t len, capsa_err *err)
{
    int fd = *(const int *)ctx;

    for (;;) {
        ssize_t n = read(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return capsa_err_set(err, errno, "layer: read: %s", strerror(errno));
        return n;
    }
}

/* ---- path handling -------------------------------------------------------------------- */

/* Normalise a tar path into out: no leading "./" or "/", no "." components, no trailing
 * '/'. Refuses absolute paths and "..". An empty result means the root itself. */
int capsa_layer_normalize(const char *in, char *out, size_t len, const char *what, capsa_err *err)
{
    size_t o = 0;
    const char *p = in;

    if (!in)
        return capsa_err_set(err, EINVAL, "%s: entry without a path", what);
    if (strlen(in) > PATH_LIMIT)
        return capsa_err_set(err, ENAMETOOLONG, "%s: path longer than %d bytes", what, PATH_LIMIT);
    if (in[0] == '/')
        return capsa_err_set(err, EPERM, "%s '%s': absolute path in a layer", what, in);
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return capsa_err_set(err, EPERM, "%s '%s': '..' component escapes the root", what, in);
        if (n > NAME_LIMIT)
            return capsa_err_set(err, ENAMETOOLONG, "%s '%s': component longer than %d bytes", what,
                                 in, NAME_LIMIT);
        if (n > 0 && !(n == 1 && p[0] == '.')) {
            if (o + n + 2 > len)
                return capsa_err_set(err, ENAMETOOLONG, "%s: path too long", what);
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        if (!e)
            break;
        p = e + 1;
    }
    out[o] = '\0';
    return 0;
}

/* Open the directory `dir` (relative, normalised; "" is the root) below rootfd, one
 * component at a time without following symlinks. With create, missing components are
 * made (0755, root-owned). Returns an O_PATH fd, or -1 (errno ENOENT when absent and not
 * create). */
static int open_dir(struct ctx *c, const char *dir, bool create, const char *entry, capsa_err *err)
{
    _cleanup_close_ int cur = openat(c->rootfd, ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
    char comp[NAME_LIMIT + 1];
    const char *p = dir;

    if (cur < 0)
        return capsa_err_set(err, errno, "layer root: %s", strerror(errno));
    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        memcpy(comp, p, n);
        comp[n] = '\0';
        int fd = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT && create) {
            if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST)
                return capsa_err_set(err, errno, "%s: mkdir %.*s: %s", entry,
                                     (int)(p - dir + (ptrdiff_t)n), dir, strerror(errno));
            fd = openat(cur, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        }
        if (fd < 0) {
            int e2 = errno;
            struct stat st;
            if (e2 == ENOENT && !create) {
                errno = ENOENT;
                return capsa_err_set(err, ENOENT, "%s: %.*s does not exist", entry,
                                     (int)(p - dir + (ptrdiff_t)n), dir);
            }
            if (fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
                return capsa_err_set(err, ELOOP,
                                     "%s: parent %.*s is a symlink; refusing to write through it",
                                     entry, (int)(p - dir + (ptrdiff_t)n), dir);
            return capsa_err_set(err, e2, "%s: parent %.*s: %s", entry,
                                 (int)(p - dir + (ptrdiff_t)n), dir, strerror(e2));
        }
        close(cur);
        cur = fd;
        if (!e)
            break;
        p = e + 1;
    }
    return steal_fd(&cur);
}

void capsa_layer_path_split(const char *path, char *dir, size_t dlen, const char **name)
{
    const char *slash = strrchr(path, '/');

    if (!slash) {
        dir[0] = '\0';
        *name = path;
        return;
    }
    snprintf(dir, dlen, "%.*s", (int)(slash - path), path);
    *name = slash + 1;
}

/* rm -rf name inside dirfd, never following symlinks. */
static int remove_at(int parent, const char *name, int depth)
{
    struct stat st;

    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return errno == ENOENT ? 0 : -1;
    if (!S_ISDIR(st.st_mode))
        return unlinkat(parent, name, 0) < 0 && errno != ENOENT ? -1 : 0;
    if (depth > 2048) {
        errno = ELOOP;
        return -1;
    }
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return -1;
    }
    struct dirent *de;
    int rc = 0;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (remove_at(dirfd(d), de->d_name, depth + 1) < 0)
            rc = -1;
    }
    closedir(d);
    if (rc == 0 && unlinkat(parent, name, AT_REMOVEDIR) < 0)
        rc = -1;
    return rc;
}

/* ---- metadata ------------------------------------------------------------------------- */

static int set_owner(struct ctx *c, int fd, int dirfd, const char *name, struct archive_entry *e,
                     const char *path, capsa_err *err)
{
    uid_t uid = (uid_t)archive_entry_uid(e);
    gid_t gid = (gid_t)archive_entry_gid(e);
    int rc = fd >= 0 ? fchown(fd, uid, gid) : fchownat(dirfd, name, uid, gid, AT_SYMLINK_NOFOLLOW);

    if (rc == 0)
        return 0;
    if ((errno == EPERM || errno == EINVAL) && !c->root) {
        if (!c->warned_owner)
            log_warn("layer: not root, file ownership is not kept (first: %s)", path);
        c->warned_owner = true;
        return 0;
    }
    return capsa_err_set(err, errno, "%s: chown %u:%u: %s", path, uid, gid, strerror(errno));
}

static int set_xattrs(struct ctx *c, int fd, int dirfd, const char *name, struct archive_entry *e,
                      const char *path, capsa_err *err)
{
    const char *xn;
    const void *val;
    size_t size;
    int count = archive_entry_xattr_reset(e);
    char proc[64 + NAME_LIMIT];

    if (count == 0)
        return 0;
    if (count > XATTR_COUNT_MAX)
        return capsa_err_set(err, E2BIG, "%s: %d xattrs exceeds the cap of %d", path, count,
                             XATTR_COUNT_MAX);
    if (fd < 0)
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d/%s", dirfd, name);
    while (archive_entry_xattr_next(e, &xn, &val, &size) == ARCHIVE_OK) {
        if (!xn || !*xn || strlen(xn) > NAME_LIMIT)
            return capsa_err_set(err, EINVAL, "%s: xattr with an empty or overlong name", path);
        if (size > XATTR_VALUE_MAX)
            return capsa_err_set(err, E2BIG, "%s: xattr %s: %zu bytes exceeds %d", path, xn, size,
                                 XATTR_VALUE_MAX);
        if (!strncmp(xn, "trusted.overlay.", 16) || !strncmp(xn, "user.overlay.", 13)) {
            log_debug("%s: dropping overlayfs xattr %s", path, xn);
            continue;
        }
        if (strncmp(xn, "user.", 5) != 0 && strncmp(xn, "security.", 9) != 0 &&
            strncmp(xn, "trusted.", 8) != 0) {
            log_debug("%s: dropping xattr %s (namespace not kept)", path, xn);
            continue;
        }
        int rc = fd >= 0 ? fsetxattr(fd, xn, val, size, 0) : lsetxattr(proc, xn, val, size, 0);
        if (rc < 0) {
            if (errno == ENOTSUP || errno == EPERM) {
                if (!c->warned_xattr)
                    log_warn("layer: xattr %s on %s not kept: %s", xn, path, strerror(errno));
                c->warned_xattr = true;
                continue;
            }
            return capsa_err_set(err, errno, "%s: set xattr %s: %s", path, xn, strerror(errno));
        }
    }
    return 0;
}

static void entry_times(struct archive_entry *e, struct timespec ts[2])
{
    ts[0].tv_sec = archive_entry_atime_is_set(e) ? archive_entry_atime(e) : archive_entry_mtime(e);
    ts[0].tv_nsec = archive_entry_atime_is_set(e) ? archive_entry_atime_nsec(e) : 0;
    ts[1].tv_sec = archive_entry_mtime(e);
    ts[1].tv_nsec = archive_entry_mtime_nsec(e);
    if (ts[0].tv_nsec < 0 || ts[0].tv_nsec > 999999999)
        ts[0].tv_nsec = 0;
    if (ts[1].tv_nsec < 0 || ts[1].tv_nsec > 999999999)
        ts[1].tv_nsec = 0;
}

/* ---- entry kinds ---------------------------------------------------------------------- */

static int write_file(struct ctx *c, int dirfd, const char *name, struct archive_entry *e,
                      const char *path, capsa_err *err)
{
    _cleanup_close_ int fd =
        openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    const void *buf;
    size_t size;
    la_int64_t off;
    int r;
    struct timespec ts[2];

    if (fd < 0)
        return capsa_err_set(err, errno, "%s: create: %s", path, strerror(errno));
    while ((r = archive_read_data_block(c->inner, &buf, &size, &off)) == ARCHIVE_OK) {
        if (off < 0)
            return capsa_err_set(err, EINVAL, "%s: negative data offset", path);
        for (size_t done = 0; done < size;) {
            ssize_t w = pwrite(fd, (const char *)buf + done, size - done, off + (off_t)done);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return capsa_err_set(err, errno, "%s: write: %s", path, strerror(errno));
            }
            done += (size_t)w;
        }
        c->stats.bytes += size;
    }
    if (r != ARCHIVE_EOF)
        return capsa_err_set(err, EIO, "%s: reading layer data: %s", path,
                             archive_error_string(c->inner));
    if (archive_entry_size_is_set(e) && archive_entry_size(e) >= 0 &&
        ftruncate(fd, archive_entry_size(e)) < 0)
        return capsa_err_set(err, errno, "%s: truncate: %s", path, strerror(errno));
    if (set_owner(c, fd, dirfd, name, e, path, err) < 0)
        return -1;
    if (fchmod(fd, archive_entry_perm(e) & 07777) < 0)
        return capsa_err_set(err, errno, "%s: chmod: %s", path, strerror(errno));
    if (set_xattrs(c, fd, dirfd, name, e, path, err) < 0)
        return -1;
    entry_times(e, ts);
    futimens(fd, ts);
    return 0;
}

static int make_dir(struct ctx *c, int dirfd, const char *name, struct archive_entry *e,
                    const char *path, bool exists, capsa_err *err)
{
    _cleanup_close_ int fd = -1;
    struct dirtime *dt;

    if (!exists && mkdirat(dirfd, name, 0700) < 0)
        return capsa_err_set(err, errno, "%s: mkdir: %s", path, strerror(errno));
    fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return capsa_err_set(err, errno, "%s: open directory: %s", path, strerror(errno));
    if (set_owner(c, fd, dirfd, name, e, path, err) < 0)
        return -1;
    if (fchmod(fd, archive_entry_perm(e) & 07777) < 0)
        return capsa_err_set(err, errno, "%s: chmod: %s", path, strerror(errno));
    if (set_xattrs(c, fd, dirfd, name, e, path, err) < 0)
        return -1;
    if (c->n_dirs == c->cap_dirs) {
        size_t ncap = c->cap_dirs ? c->cap_dirs * 2 : 256;
        struct dirtime *nd = realloc(c->dirs, ncap * sizeof(*nd));
        if (!nd)
            return capsa_err_set(err, ENOMEM, "layer: out of memory");
        c->dirs = nd;
        c->cap_dirs = ncap;
    }
    dt = &c->dirs[c->n_dirs];
    dt->path = strdup(path);
    if (!dt->path)
        return capsa_err_set(err, ENOMEM, "layer: out of memory");
    entry_times(e, dt->ts);
    c->n_dirs++;
    return 0;
}

static int make_special(struct ctx *c, int dirfd, const char *name, struct archive_entry *e,
                        const char *path, capsa_err *err)
{
    mode_t type = archive_entry_filetype(e);
    dev_t dev = 0;
    struct timespec ts[2];

    if (type == AE_IFCHR || type == AE_IFBLK)
        dev = makedev(archive_entry_rdevmajor(e), archive_entry_rdevminor(e));
    if (mknodat(dirfd, name, type | 0600, dev) < 0) {
        if (errno == EPERM && !c->root && type != AE_IFIFO) {
            if (!c->warned_dev)
                log_warn("layer: not root, device nodes are skipped (first: %s)", path);
            c->warned_dev = true;
            return 0;
        }
        return capsa_err_set(err, errno, "%s: mknod: %s", path, strerror(errno));
    }
    if (set_owner(c, -1, dirfd, name, e, path, err) < 0)
        return -1;
    /* The node was just made by us in a directory only we write: chmod by name is safe. */
    if (fchmodat(dirfd, name, archive_entry_perm(e) & 07777, 0) < 0)
        return capsa_err_set(err, errno, "%s: chmod: %s", path, strerror(errno));
    if (set_xattrs(c, -1, dirfd, name, e, path, err) < 0)
        return -1;
    entry_times(e, ts);
    utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW);
    return 0;
}

static int make_symlink(struct ctx *c, int dirfd, const char *name, struct archive_entry *e,
                        const char *path, capsa_err *err)
{
    const char *target = archive_entry_symlink(e);
    struct timespec ts[2];

    if (!target || !*target)
        return capsa_err_set(err, EINVAL, "%s: symlink without a target", path);
    if (strlen(target) > PATH_LIMIT)
        return capsa_err_set(err, ENAMETOOLONG, "%s: symlink target longer than %d bytes", path,
                             PATH_LIMIT);
    if (symlinkat(target, dirfd, name) < 0)
        return capsa_err_set(err, errno, "%s: symlink: %s", path, strerror(errno));
    if (set_owner(c, -1, dirfd, name, e, path, err) < 0 ||
        set_xattrs(c, -1, dirfd, name, e, path, err) < 0)
        return -1;
    entry_times(e, ts);
    utimensat(dirfd, name, ts, AT_SYMLINK_NOFOLLOW);
    return 0;
}

static int make_hardlink(struct ctx *c, int dirfd, const char *name, const char *link,
                         const char *path, capsa_err *err)
{
    char target[PATH_LIMIT + 1], tdir[PATH_LIMIT + 1];
    const char *tname;
    _cleanup_close_ int tfd = -1;
    struct stat st;

    if (capsa_layer_normalize(link, target, sizeof(target), "hardlink target", err) < 0)
        return capsa_err_prefix(err, "%s", path);
    if (!target[0])
        return capsa_err_set(err, EPERM, "%s: hardlink to the root directory", path);
    capsa_layer_path_split(target, tdir, sizeof(tdir), &tname);
    tfd = open_dir(c, tdir, false, path, err);
    if (tfd < 0)
        return capsa_err_prefix(err, "hardlink target %s", target);
    if (fstatat(tfd, tname, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return capsa_err_set(err, errno, "%s: hardlink target %s: %s", path, target,
                             strerror(errno));
    if (S_ISDIR(st.st_mode))
        return capsa_err_set(err, EPERM, "%s: hardlink target %s is a directory", path, target);
    if (linkat(tfd, tname, dirfd, name, 0) < 0)
        return capsa_err_set(err, errno, "%s: link to %s: %s", path, target, strerror(errno));
    return 0;
}

/* ---- whiteouts ------------------------------------------------------------------------ */

static int apply_opaque(struct ctx *c, const char *dir, const char *path, capsa_err *err)
{
    _cleanup_close_ int pfd = -1;
    int fd;
    DIR *d;
    struct dirent *de;
    char child[PATH_LIMIT + NAME_LIMIT + 2];
    int rc = 0;

    pfd = open_dir(c, dir, true, path, err);
    if (pfd < 0)
        return -1;
    fd = openat(pfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || !(d = fdopendir(fd))) {
        if (fd >= 0)
            close(fd);
        return capsa_err_set(err, errno, "%s: open %s: %s", path, dir, strerror(errno));
    }
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(child, sizeof(child), "%s%s%s", dir, dir[0] ? "/" : "", de->d_name);
        if (pathset_has(&c->created, child))
            continue;
        if (remove_at(dirfd(d), de->d_name, 0) < 0) {
            rc = capsa_err_set(err, errno, "%s: remove %s: %s", path, child, strerror(errno));
            break;
        }
    }
    closedir(d);
    return rc;
}

static int apply_whiteout(struct ctx *c, const char *dir, const char *victim, const char *path,
                          capsa_err *err)
{
    _cleanup_close_ int pfd = -1;
    capsa_err e2 = {0};

    if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
        return capsa_err_set(err, EPERM, "%s: whiteout of '%s' is not allowed", path, victim);
    pfd = open_dir(c, dir, false, path, &e2);
    if (pfd < 0) {
        if (e2.code == ENOENT)
            return 0; /* nothing to hide */
        *err = e2;
        return -1;
    }
    if (remove_at(pfd, victim, 0) < 0)
        return capsa_err_set(err, errno, "%s: remove %s%s%s: %s", path, dir, dir[0] ? "/" : "",
                             victim, strerror(errno));
    return 0;
}

/* ---- one entry ------------------------------------------------------------------------ */

static int apply_entry(struct ctx *c, struct archive_entry *e, capsa_err *err)
{
    char path[PATH_LIMIT + 1], dir[PATH_LIMIT + 1];
    const char *name, *link = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);
    _cleanup_close_ int dfd = -1;
    struct stat st;
    bool exists;

    if (capsa_layer_normalize(archive_entry_pathname(e), path, sizeof(path), "layer entry", err) <
        0)
        return -1;
    if (!path[0]) {
        /* The root itself: keep its mode and owner. */
        if (type == AE_IFDIR && !link) {
            _cleanup_close_ int rfd = openat(c->rootfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (rfd < 0 || set_owner(c, rfd, -1, NULL, e, "/", err) < 0)
                return rfd < 0 ? capsa_err_set(err, errno, "layer root: %s", strerror(errno)) : -1;
            fchmod(rfd, archive_entry_perm(e) & 07777);
        }
        return 0;
    }
    capsa_layer_path_split(path, dir, sizeof(dir), &name);
    if (!strncmp(name, WH_PREFIX, 4)) {
        if (!strcmp(name, WH_OPAQUE))
            return apply_opaque(c, dir, path, err);
        return apply_whiteout(c, dir, name + 4, path, err);
    }
    dfd = open_dir(c, dir, true, path, err);
    if (dfd < 0)
        return -1;
    exists = fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (exists && !(S_ISDIR(st.st_mode) && type == AE_IFDIR && !link)) {
        if (remove_at(dfd, name, 0) < 0)
            return capsa_err_set(err, errno, "%s: replace existing entry: %s", path,
                                 strerror(errno));
        exists = false;
    }
    if (pathset_add(&c->created, path) < 0)
        return capsa_err_set(err, ENOMEM, "layer: out of memory");
    if (link)
        return make_hardlink(c, dfd, name, link, path, err);
    switch (type) {
    case AE_IFREG:
        return write_file(c, dfd, name, e, path, err);
    case AE_IFDIR:
        return make_dir(c, dfd, name, e, path, exists, err);
    case AE_IFLNK:
        return make_symlink(c, dfd, name, e, path, err);
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO:
        return make_special(c, dfd, name, e, path, err);
    case AE_IFSOCK:
        log_debug("%s: socket entry skipped", path);
        return 0;
    default:
        return capsa_err_set(err, EINVAL, "%s: unknown entry type 0%o", path, (unsigned)type);
    }
}

static void apply_dir_times(struct ctx *c)
{
    for (size_t i = c->n_dirs; i-- > 0;) {
        char dir[PATH_LIMIT + 1];
        const char *name;
        capsa_err e = {0};
        capsa_layer_path_split(c->dirs[i].path, dir, sizeof(dir), &name);
        int fd = open_dir(c, dir, false, c->dirs[i].path, &e);
        if (fd >= 0) {
            utimensat(fd, name, c->dirs[i].ts, AT_SYMLINK_NOFOLLOW);
            close(fd);
        }
    }
}

int capsa_layer_apply(int rootfd, int blobfd, enum capsa_layer_compression comp,
                      char diff_id[CAPSA_DIGEST_MAX], struct capsa_layer_stats *stats,
                      capsa_err *err)
{
    return capsa_layer_apply_stream(rootfd, capsa_layer_fd_read, &blobfd, comp, diff_id, stats,
                                    err);
}

static int walk(struct ctx *cp, enum capsa_layer_compression comp, char diff_id[CAPSA_DIGEST_MAX],
                struct capsa_layer_stats *stats, capsa_err *err);

int capsa_layer_apply_stream(int rootfd, capsa_layer_read_fn fn, void *fn_ctx,
                             enum capsa_layer_compression comp, char diff_id[CAPSA_DIGEST_MAX],
                             struct capsa_layer_stats *stats, capsa_err *err)
{
    struct ctx c = {.rootfd = rootfd, .root = geteuid() == 0, .src = fn, .src_ctx = fn_ctx};

    return walk(&c, comp, diff_id, stats, err);
}

int capsa_layer_walk(capsa_layer_read_fn fn, void *fn_ctx, enum capsa_layer_compression comp,
                     capsa_layer_entry_fn sink, void *sink_ctx, char diff_id[CAPSA_DIGEST_MAX],
                     struct capsa_layer_stats *stats, capsa_err *err)
{
    struct ctx c = {.rootfd = -1, .src = fn, .src_ctx = fn_ctx, .sink = sink, .sink_ctx = sink_ctx};

    return walk(&c, comp, diff_id, stats, err);
}

/* Read the layer through c->src, hash it, and hand every entry to the tree or the sink. */
static int walk(struct ctx *cp, enum capsa_layer_compression comp, char diff_id[CAPSA_DIGEST_MAX],
                struct capsa_layer_stats *stats, capsa_err *err)
{
    struct archive_entry *e;
    uint8_t d[CAPSA_SHA256_LEN];
    char hex[CAPSA_SHA256_HEX];
    int rc = -1, r;

    capsa_sha256_init(&cp->hash);
    pthread_mutex_init(&cp->mu, NULL);
    pthread_cond_init(&cp->cv, NULL);
    cp->outer = archive_read_new();
    cp->inner = archive_read_new();
    cp->rbuf = malloc(IO_BUF);
    for (size_t i = 0; i < HASH_BUFS; i++)
        cp->hbuf[i] = malloc(IO_BUF);
    if (!cp->outer || !cp->inner || !cp->hbuf[0] || !cp->hbuf[1] || !cp->hbuf[2] || !cp->rbuf) {
        capsa_err_set(err, ENOMEM, "layer: out of memory");
        goto out;
    }
    cp->hasher = pthread_create(&cp->hasher_th, NULL, hasher_main, cp) == 0; /* else inline */
    if (comp == CAPSA_LAYER_GZIP)
        r = archive_read_support_filter_gzip(cp->outer);
    else if (comp == CAPSA_LAYER_ZSTD)
        r = archive_read_support_filter_zstd(cp->outer);
    else
        r = archive_read_support_filter_none(cp->outer);
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
        capsa_err_set(err, ENOTSUP, "layer: decompressor unavailable: %s",
                      archive_error_string(cp->outer));
        goto out;
    }
    archive_read_support_format_raw(cp->outer);
    if (archive_read_open(cp->outer, cp, NULL, outer_read, NULL) != ARCHIVE_OK ||
        archive_read_next_header(cp->outer, &e) != ARCHIVE_OK) {
        if (cp->src_err.code)
            *err = cp->src_err;
        else
            capsa_err_set(err, EINVAL, "layer: cannot decompress: %s",
                          archive_error_string(cp->outer));
        goto out;
    }
    if (comp != CAPSA_LAYER_TAR && archive_filter_count(cp->outer) < 2) {
        capsa_err_set(err, EINVAL, "layer: not %s compressed as its media type says",
                      comp == CAPSA_LAYER_GZIP ? "gzip" : "zstd");
        goto out;
    }
    archive_read_support_format_tar(cp->inner);
    if (archive_read_open(cp->inner, cp, NULL, inner_read, NULL) != ARCHIVE_OK) {
        capsa_err_set(err, EINVAL, "layer: not a tar stream: %s", archive_error_string(cp->inner));
        goto out;
    }
    for (;;) {
        r = archive_read_next_header(cp->inner, &e);
        if (r == ARCHIVE_EOF)
            break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            capsa_err_set(err, EINVAL, "layer: bad tar header after %llu entries: %s",
                          (unsigned long long)cp->stats.entries, archive_error_string(cp->inner));
            goto out;
        }
        if (++cp->stats.entries > ENTRIES_MAX) {
            capsa_err_set(err, E2BIG, "layer: more than %d entries", ENTRIES_MAX);
            goto out;
        }
        if (cp->sink ? cp->sink(cp->sink_ctx, cp->inner, e, err) : apply_entry(cp, e, err)) {
            if (cp->sink && !err->code)
                capsa_err_set(err, EIO, "layer: entry refused");
            goto out;
        }
    }
    /* Hash whatever follows the end-of-archive marker too: diff_id covers the stream. */
    for (;;) {
        const void *chunk;
        la_ssize_t n = next_chunk(cp, &chunk);
        if (n < 0) {
            if (cp->src_err.code)
                *err = cp->src_err;
            else
                capsa_err_set(err, EIO, "layer: decompress: %s", archive_error_string(cp->outer));
            goto out;
        }
        if (n == 0)
            break;
    }
    if (!cp->sink)
        apply_dir_times(cp);
    hasher_stop(cp); /* it hashes what was posted before it stops */
    capsa_sha256_final(&cp->hash, d);
    capsa_sha256_hex(d, CAPSA_SHA256_LEN, hex);
    snprintf(diff_id, CAPSA_DIGEST_MAX, "sha256:%s", hex);
    if (stats)
        *stats = cp->stats;
    rc = 0;
out:
    if (cp->inner)
        archive_read_free(cp->inner);
    if (cp->outer)
        archive_read_free(cp->outer);
    if (rc < 0 && cp->src_err.code)
        *err = cp->src_err; /* the source failing explains whatever the tar reader saw */
    hasher_stop(cp);
    pthread_mutex_destroy(&cp->mu);
    pthread_cond_destroy(&cp->cv);
    for (size_t i = 0; i < HASH_BUFS; i++)
        free(cp->hbuf[i]);
    free(cp->rbuf);
    pathset_free(&cp->created);
    for (size_t i = 0; i < cp->n_dirs; i++)
        free(cp->dirs[i].path);
    free(cp->dirs);
    return rc;
}
