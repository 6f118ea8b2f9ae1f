/* erofs.c - write an uncompressed EROFS image directly from OCI layer tar streams (erofs.h). */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "image/erofs.h"

/* On-disk format facts (Linux fs/erofs/erofs_fs.h). */
#define BLK           4096u
#define BLKBITS       12
#define SB_OFFSET     1024
#define SB_MAGIC      0xE0F5E1E2u
#define INODE_SIZE    64 /* extended inode */
#define NID_SHIFT     5  /* nid = byte offset in the metadata area / 32 */
#define XATTR_HDR     12 /* erofs_xattr_ibody_header */
#define DIRENT_SIZE   12
#define LAYOUT_PLAIN  0
#define LAYOUT_INLINE 2
#define XI_USER       1
#define XI_TRUSTED    4
#define XI_SECURITY   6
#define FT_REG        1
#define FT_DIR        2
#define FT_CHR        3
#define FT_BLK        4
#define FT_FIFO       5
#define FT_SOCK       6
#define FT_LNK        7

#define PATH_LIMIT      4095
#define NAME_LIMIT      255
#define NODES_MAX       2000000
#define XATTR_COUNT_MAX 64
#define XATTR_IBODY_MAX 65536
#define FILE_SIZE_MAX   (UINT64_C(1) << 40)
#define WBUF            (1024 * 1024)
#define WH_PREFIX       ".wh."
#define WH_OPAQUE       ".wh..wh..opq"

struct xattr {
    uint8_t index, nlen;
    uint16_t vlen;
    char *name; /* after the namespace prefix */
    uint8_t *val;
};

struct node;

struct dentry {
    char *name;
    struct node *node;
    uint32_t layer; /* layer that last declared this name */
};

struct node {
    uint32_t mode, uid, gid, rdev, mtime_ns;
    int64_t mtime;
    uint64_t size;    /* regular files */
    uint32_t blkaddr; /* regular files: first data block; dirs/symlinks: plain blocks */
    char *link;       /* symlink target */
    struct xattr *xattrs;
    uint32_t n_xattrs;
    struct dentry *kids; /* directories: sorted by name (strcmp) */
    uint32_t n_kids, cap_kids;
    /* layout, filled by finish */
    struct node *parent;
    uint32_t nlink, ino, isize;
    uint64_t nid, dsize;
    bool seen, inl;
};

struct capsa_erofs {
    int fd;
    struct node **nodes; /* every node ever made (freed at the end) */
    size_t n_nodes, cap_nodes;
    struct node *root;
    uint64_t next_blk; /* next free block of the data area */
    uint32_t layer;
    int64_t now;
    bool failed;
    uint8_t *wbuf;
    uint64_t wstart;
    size_t wlen;
    uint64_t synced; /* bytes handed to writeback so far */
};

static void put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    put16(p, v & 0xffff);
    put16(p + 2, v >> 16);
}

static void put64(uint8_t *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* ---- output --------------------------------------------------------------------------- */

static int pwrite_all(int fd, const void *buf, size_t len, uint64_t off, capsa_err *err)
{
    const char *p = buf;

    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return capsa_err_set(err, n < 0 ? errno : EIO, "erofs image: write at %llu: %s",
                                 (unsigned long long)off, n < 0 ? strerror(errno) : "short write");
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

static int wb_flush(struct capsa_erofs *w, capsa_err *err)
{
    if (w->wlen && pwrite_all(w->fd, w->wbuf, w->wlen, w->wstart, err) < 0)
        return -1;
    w->wstart += w->wlen;
    w->wlen = 0;
    /* Start writeback now so that the caller's fsync has little left to do. */
    if (w->wstart - w->synced >= 8 * WBUF) {
        sync_file_range(w->fd, (off_t)w->synced, (off_t)(w->wstart - w->synced),
                        SYNC_FILE_RANGE_WRITE);
        w->synced = w->wstart;
    }
    return 0;
}

/* Write len bytes at image offset off, through a buffer that coalesces neighbouring writes. */
static int wb_write(struct capsa_erofs *w, uint64_t off, const void *data, size_t len,
                    capsa_err *err)
{
    const uint8_t *p = data;

    while (len) {
        uint64_t end = w->wstart + w->wlen;
        if (off != end) {
            if (off > end && off - end <= WBUF - w->wlen) {
                memset(w->wbuf + w->wlen, 0, (size_t)(off - end));
                w->wlen += (size_t)(off - end);
            } else {
                if (wb_flush(w, err) < 0)
                    return -1;
                w->wstart = off;
            }
        }
        if (w->wlen == WBUF && wb_flush(w, err) < 0)
            return -1;
        size_t n = WBUF - w->wlen < len ? WBUF - w->wlen : len;
        memcpy(w->wbuf + w->wlen, p, n);
        w->wlen += n;
        p += n;
        len -= n;
        off += n;
    }
    return 0;
}

/* ---- the tree ------------------------------------------------------------------------- */

static struct node *node_new(struct capsa_erofs *w, capsa_err *err)
{
    struct node *n;

    if (w->n_nodes >= NODES_MAX) {
        capsa_err_set(err, E2BIG, "erofs image: more than %d files", NODES_MAX);
        return NULL;
    }
    if (w->n_nodes == w->cap_nodes) {
        size_t ncap = w->cap_nodes ? w->cap_nodes * 2 : 1024;
        struct node **nv = realloc(w->nodes, ncap * sizeof(*nv));
        if (!nv) {
            capsa_err_set(err, ENOMEM, "erofs image: out of memory");
            return NULL;
        }
        w->nodes = nv;
        w->cap_nodes = ncap;
    }
    n = calloc(1, sizeof(*n));
    if (!n) {
        capsa_err_set(err, ENOMEM, "erofs image: out of memory");
        return NULL;
    }
    w->nodes[w->n_nodes++] = n;
    return n;
}

static void xattrs_free(struct node *n)
{
    for (uint32_t i = 0; i < n->n_xattrs; i++) {
        free(n->xattrs[i].name);
        free(n->xattrs[i].val);
    }
    free(n->xattrs);
    n->xattrs = NULL;
    n->n_xattrs = 0;
}

static void node_free(struct node *n)
{
    for (uint32_t i = 0; i < n->n_kids; i++)
        free(n->kids[i].name);
    free(n->kids);
    free(n->link);
    xattrs_free(n);
    free(n);
}

/* Index of name in dir's children, or -(insertion point) - 1. */
static long kid_find(const struct node *dir, const char *name)
{
    long lo = 0, hi = (long)dir->n_kids - 1;

    while (lo <= hi) {
        long mid = lo + (hi - lo) / 2;
        int c = strcmp(dir->kids[mid].name, name);
        if (c == 0)
            return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -lo - 1;
}

static int kid_insert(struct node *dir, long at, const char *name, struct node *n, uint32_t layer,
                      capsa_err *err)
{
    char *copy;

    if (dir->n_kids == dir->cap_kids) {
        uint32_t ncap = dir->cap_kids ? dir->cap_kids * 2 : 8;
        struct dentry *nk = realloc(dir->kids, ncap * sizeof(*nk));
        if (!nk)
            return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
        dir->kids = nk;
        dir->cap_kids = ncap;
    }
    copy = strdup(name);
    if (!copy)
        return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
    memmove(&dir->kids[at + 1], &dir->kids[at], (dir->n_kids - (size_t)at) * sizeof(*dir->kids));
    dir->kids[at] = (struct dentry){.name = copy, .node = n, .layer = layer};
    dir->n_kids++;
    return 0;
}

static void kid_remove(struct node *dir, long at)
{
    free(dir->kids[at].name);
    memmove(&dir->kids[at], &dir->kids[at + 1],
            (dir->n_kids - (size_t)at - 1) * sizeof(*dir->kids));
    dir->n_kids--;
}

/* The directory at dir (normalised, "" = root). With create, missing components become
 * 0755 root-owned directories. Returns NULL with err set (ENOENT when absent). */
static struct node *walk_dir(struct capsa_erofs *w, const char *dir, bool create, const char *entry,
                             capsa_err *err)
{
    struct node *cur = w->root;
    char comp[NAME_LIMIT + 1];
    const char *p = dir;

    while (*p) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        int len = (int)(p - dir + (ptrdiff_t)n);
        memcpy(comp, p, n);
        comp[n] = '\0';
        long i = kid_find(cur, comp);
        if (i < 0) {
            if (!create) {
                capsa_err_set(err, ENOENT, "%s: %.*s does not exist", entry, len, dir);
                return NULL;
            }
            struct node *d = node_new(w, err);
            if (!d)
                return NULL;
            d->mode = S_IFDIR | 0755;
            d->mtime = w->now;
            if (kid_insert(cur, -i - 1, comp, d, w->layer, err) < 0)
                return NULL;
            cur = d;
        } else {
            struct node *k = cur->kids[i].node;
            if (S_ISLNK(k->mode)) {
                capsa_err_set(err, ELOOP,
                              "%s: parent %.*s is a symlink; refusing to write through it", entry,
                              len, dir);
                return NULL;
            }
            if (!S_ISDIR(k->mode)) {
                capsa_err_set(err, ENOTDIR, "%s: parent %.*s: %s", entry, len, dir,
                              strerror(ENOTDIR));
                return NULL;
            }
            cur = k;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return cur;
}

/* ---- entry metadata ------------------------------------------------------------------- */

static int set_xattrs(struct node *n, struct archive_entry *e, const char *path, capsa_err *err)
{
    const char *xn;
    const void *val;
    size_t size, total = XATTR_HDR;
    int count = archive_entry_xattr_reset(e);

    xattrs_free(n);
    if (count == 0)
        return 0;
    if (count > XATTR_COUNT_MAX)
        return capsa_err_set(err, E2BIG, "%s: %d xattrs exceeds the cap of %d", path, count,
                             XATTR_COUNT_MAX);
    n->xattrs = calloc((size_t)count, sizeof(*n->xattrs));
    if (!n->xattrs)
        return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
    while (archive_entry_xattr_next(e, &xn, &val, &size) == ARCHIVE_OK) {
        uint8_t index;
        const char *suffix;
        if (!xn || !*xn || strlen(xn) > NAME_LIMIT)
            return capsa_err_set(err, EINVAL, "%s: xattr with an empty or overlong name", path);
        if (size > UINT16_MAX)
            return capsa_err_set(err, E2BIG, "%s: xattr %s: %zu bytes exceeds %d", path, xn, size,
                                 UINT16_MAX);
        if (!strncmp(xn, "trusted.overlay.", 16) || !strncmp(xn, "user.overlay.", 13)) {
            log_debug("%s: dropping overlayfs xattr %s", path, xn);
            continue;
        }
        if (!strncmp(xn, "user.", 5)) {
            index = XI_USER;
            suffix = xn + 5;
        } else if (!strncmp(xn, "security.", 9)) {
            index = XI_SECURITY;
            suffix = xn + 9;
        } else if (!strncmp(xn, "trusted.", 8)) {
            index = XI_TRUSTED;
            suffix = xn + 8;
        } else {
            log_debug("%s: dropping xattr %s (namespace not kept)", path, xn);
            continue;
        }
        if (!*suffix) {
            log_debug("%s: dropping xattr %s (no name after the namespace)", path, xn);
            continue;
        }
        /* pax layers may carry each xattr twice (SCHILY. and LIBARCHIVE. records): the
         * last one wins. */
        for (uint32_t i = 0; i < n->n_xattrs; i++) {
            struct xattr *o = &n->xattrs[i];
            if (o->index == index && !strcmp(o->name, suffix)) {
                total -= (4 + o->nlen + o->vlen + 3u) & ~(size_t)3;
                free(o->name);
                free(o->val);
                *o = n->xattrs[--n->n_xattrs];
                break;
            }
        }
        total += (4 + strlen(suffix) + size + 3) & ~(size_t)3;
        if (total > XATTR_IBODY_MAX)
            return capsa_err_set(err, E2BIG, "%s: xattrs take more than %d bytes", path,
                                 XATTR_IBODY_MAX);
        struct xattr *x = &n->xattrs[n->n_xattrs];
        x->index = index;
        x->nlen = (uint8_t)strlen(suffix);
        x->vlen = (uint16_t)size;
        x->name = strdup(suffix);
        x->val = malloc(size ? size : 1);
        if (!x->name || !x->val) {
            free(x->name);
            free(x->val);
            return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
        }
        if (size)
            memcpy(x->val, val, size);
        n->n_xattrs++;
        if (--count == 0)
            break;
    }
    return 0;
}

static int set_meta(struct node *n, struct archive_entry *e, mode_t type, const char *path,
                    capsa_err *err)
{
    int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);

    if (uid < 0 || uid > UINT32_MAX || gid < 0 || gid > UINT32_MAX)
        return capsa_err_set(err, EINVAL, "%s: owner %lld:%lld out of range", path, (long long)uid,
                             (long long)gid);
    /* Symlinks are 0777 whatever the tar says, as on every Linux filesystem. */
    n->mode = (uint32_t)type | (type == AE_IFLNK ? 0777 : (uint32_t)archive_entry_perm(e) & 07777);
    n->uid = (uint32_t)uid;
    n->gid = (uint32_t)gid;
    if (archive_entry_mtime_is_set(e)) {
        long ns = archive_entry_mtime_nsec(e);
        n->mtime = (int64_t)archive_entry_mtime(e);
        n->mtime_ns = ns >= 0 && ns < 1000000000 ? (uint32_t)ns : 0;
    }
    return set_xattrs(n, e, path, err);
}

/* Stream a regular file's data into the data area. */
static int write_data(struct capsa_erofs *w, struct archive *a, struct node *n,
                      struct archive_entry *e, const char *path, capsa_err *err)
{
    const void *buf;
    size_t size;
    la_int64_t off;
    int r;
    int64_t declared = archive_entry_size_is_set(e) ? archive_entry_size(e) : 0;
    uint64_t nblocks;

    if (declared < 0 || (uint64_t)declared > FILE_SIZE_MAX)
        return capsa_err_set(err, EFBIG, "%s: file size %lld out of range", path,
                             (long long)declared);
    n->size = (uint64_t)declared;
    nblocks = (n->size + BLK - 1) / BLK;
    if (w->next_blk + nblocks >= UINT32_MAX / 2)
        return capsa_err_set(err, EFBIG, "%s: the image would exceed %u blocks", path,
                             UINT32_MAX / 2);
    n->blkaddr = nblocks ? (uint32_t)w->next_blk : 0;
    while ((r = archive_read_data_block(a, &buf, &size, &off)) == ARCHIVE_OK) {
        if (off < 0 || (uint64_t)off > n->size || size > n->size - (uint64_t)off)
            return capsa_err_set(err, EINVAL, "%s: data beyond the declared size %llu", path,
                                 (unsigned long long)n->size);
        if (size && wb_write(w, w->next_blk * BLK + (uint64_t)off, buf, size, err) < 0)
            return capsa_err_prefix(err, "%s", path);
    }
    if (r != ARCHIVE_EOF)
        return capsa_err_set(err, EIO, "%s: reading layer data: %s", path, archive_error_string(a));
    w->next_blk += nblocks; /* a trailing hole stays a hole: finish sets the file size */
    return 0;
}

/* ---- whiteouts ------------------------------------------------------------------------ */

static int apply_opaque(struct capsa_erofs *w, const char *dir, const char *path, capsa_err *err)
{
    struct node *d = walk_dir(w, dir, true, path, err);

    if (!d)
        return -1;
    for (uint32_t i = d->n_kids; i-- > 0;)
        if (d->kids[i].layer != w->layer)
            kid_remove(d, i);
    return 0;
}

static int apply_whiteout(struct capsa_erofs *w, const char *dir, const char *victim,
                          const char *path, capsa_err *err)
{
    capsa_err e2 = {0};
    struct node *d;
    long i;

    if (!*victim || !strcmp(victim, ".") || !strcmp(victim, ".."))
        return capsa_err_set(err, EPERM, "%s: whiteout of '%s' is not allowed", path, victim);
    d = walk_dir(w, dir, false, path, &e2);
    if (!d) {
        if (e2.code == ENOENT)
            return 0; /* nothing to hide */
        *err = e2;
        return -1;
    }
    i = kid_find(d, victim);
    if (i >= 0)
        kid_remove(d, i);
    return 0;
}

/* ---- one entry ------------------------------------------------------------------------ */

static int on_entry(void *ctx, struct archive *a, struct archive_entry *e, capsa_err *err)
{
    struct capsa_erofs *w = ctx;
    char path[PATH_LIMIT + 1], dir[PATH_LIMIT + 1];
    const char *name, *link = archive_entry_hardlink(e);
    mode_t type = archive_entry_filetype(e);
    struct node *parent, *n = NULL;
    long at;

    if (capsa_layer_normalize(archive_entry_pathname(e), path, sizeof(path), "layer entry", err) <
        0)
        return -1;
    if (!path[0]) {
        /* The root itself: keep its mode, owner, mtime and xattrs. */
        if (type == AE_IFDIR && !link)
            return set_meta(w->root, e, S_IFDIR, "/", err);
        return 0;
    }
    capsa_layer_path_split(path, dir, sizeof(dir), &name);
    if (!strncmp(name, WH_PREFIX, 4)) {
        if (!strcmp(name, WH_OPAQUE))
            return apply_opaque(w, dir, path, err);
        return apply_whiteout(w, dir, name + 4, path, err);
    }
    parent = walk_dir(w, dir, true, path, err);
    if (!parent)
        return -1;
    if (link) {
        char target[PATH_LIMIT + 1], tdir[PATH_LIMIT + 1];
        const char *tname;
        struct node *td;
        long ti;
        if (capsa_layer_normalize(link, target, sizeof(target), "hardlink target", err) < 0)
            return capsa_err_prefix(err, "%s", path);
        if (!target[0])
            return capsa_err_set(err, EPERM, "%s: hardlink to the root directory", path);
        capsa_layer_path_split(target, tdir, sizeof(tdir), &tname);
        td = walk_dir(w, tdir, false, path, err);
        if (!td)
            return capsa_err_prefix(err, "hardlink target %s", target);
        ti = kid_find(td, tname);
        if (ti < 0)
            return capsa_err_set(err, ENOENT, "%s: hardlink target %s: %s", path, target,
                                 strerror(ENOENT));
        n = td->kids[ti].node;
        if (S_ISDIR(n->mode))
            return capsa_err_set(err, EPERM, "%s: hardlink target %s is a directory", path, target);
        at = kid_find(parent, name);
        if (at >= 0) {
            parent->kids[at].node = n;
            parent->kids[at].layer = w->layer;
            return 0;
        }
        return kid_insert(parent, -at - 1, name, n, w->layer, err);
    }
    at = kid_find(parent, name);
    if (at >= 0 && type == AE_IFDIR && S_ISDIR(parent->kids[at].node->mode)) {
        /* An existing directory keeps its children and takes the new metadata. */
        parent->kids[at].layer = w->layer;
        return set_meta(parent->kids[at].node, e, S_IFDIR, path, err);
    }
    switch (type) {
    case AE_IFREG:
    case AE_IFDIR:
    case AE_IFLNK:
    case AE_IFCHR:
    case AE_IFBLK:
    case AE_IFIFO:
        break;
    case AE_IFSOCK:
        log_debug("%s: socket entry skipped", path);
        return 0;
    default:
        return capsa_err_set(err, EINVAL, "%s: unknown entry type 0%o", path, (unsigned)type);
    }
    n = node_new(w, err);
    if (!n || set_meta(n, e, type, path, err) < 0)
        return -1;
    if (type == AE_IFREG) {
        if (write_data(w, a, n, e, path, err) < 0)
            return -1;
    } else if (type == AE_IFLNK) {
        const char *target = archive_entry_symlink(e);
        if (!target || !*target)
            return capsa_err_set(err, EINVAL, "%s: symlink without a target", path);
        if (strlen(target) > PATH_LIMIT)
            return capsa_err_set(err, ENAMETOOLONG, "%s: symlink target longer than %d bytes", path,
                                 PATH_LIMIT);
        n->link = strdup(target);
        if (!n->link)
            return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
    } else if (type == AE_IFCHR || type == AE_IFBLK) {
        unsigned long ma = (unsigned long)archive_entry_rdevmajor(e);
        unsigned long mi = (unsigned long)archive_entry_rdevminor(e);
        if (ma > 0xfff || mi > 0xfffff)
            return capsa_err_set(err, EINVAL, "%s: device %lu:%lu out of range", path, ma, mi);
        /* The kernel's new_encode_dev(). */
        n->rdev = (uint32_t)((mi & 0xff) | (ma << 8) | ((mi & ~0xffUL) << 12));
    }
    if (at >= 0) {
        parent->kids[at].node = n;
        parent->kids[at].layer = w->layer;
        return 0;
    }
    return kid_insert(parent, -at - 1, name, n, w->layer, err);
}

/* ---- public: building ----------------------------------------------------------------- */

int capsa_erofs_new(int fd, struct capsa_erofs **out, capsa_err *err)
{
    struct capsa_erofs *w = calloc(1, sizeof(*w));

    *out = NULL;
    if (!w || !(w->wbuf = malloc(WBUF))) {
        free(w);
        return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
    }
    w->fd = fd;
    w->next_blk = 1; /* block 0: the superblock */
    w->wstart = BLK;
    w->synced = 0;
    w->now = (int64_t)time(NULL);
    w->root = node_new(w, err);
    if (!w->root) {
        capsa_erofs_free(w);
        return -1;
    }
    w->root->mode = S_IFDIR | 0755;
    w->root->mtime = w->now;
    *out = w;
    return 0;
}

int capsa_erofs_add_layer(struct capsa_erofs *w, capsa_layer_read_fn fn, void *fn_ctx,
                          enum capsa_layer_compression comp, char diff_id[CAPSA_DIGEST_MAX],
                          struct capsa_layer_stats *stats, capsa_err *err)
{
    uint64_t before = w->next_blk;

    if (w->failed)
        return capsa_err_set(err, EINVAL, "erofs image: an earlier layer failed");
    w->layer++;
    if (capsa_layer_walk(fn, fn_ctx, comp, on_entry, w, diff_id, stats, err) < 0 ||
        wb_flush(w, err) < 0) {
        w->failed = true;
        return -1;
    }
    if (stats)
        stats->bytes = (w->next_blk - before) * BLK;
    return 0;
}

int capsa_erofs_add_layer_fd(struct capsa_erofs *w, int blobfd, enum capsa_layer_compression comp,
                             char diff_id[CAPSA_DIGEST_MAX], struct capsa_layer_stats *stats,
                             capsa_err *err)
{
    return capsa_erofs_add_layer(w, capsa_layer_fd_read, &blobfd, comp, diff_id, stats, err);
}

/* ---- public: metadata ----------------------------------------------------------------- */

static uint8_t ftype(uint32_t mode)
{
    switch (mode & S_IFMT) {
    case S_IFREG:
        return FT_REG;
    case S_IFDIR:
        return FT_DIR;
    case S_IFCHR:
        return FT_CHR;
    case S_IFBLK:
        return FT_BLK;
    case S_IFIFO:
        return FT_FIFO;
    case S_IFSOCK:
        return FT_SOCK;
    case S_IFLNK:
        return FT_LNK;
    }
    return 0;
}

struct dirent_src {
    const char *name;
    const struct node *node;
};

static int dirent_cmp(const void *a, const void *b)
{
    return strcmp(((const struct dirent_src *)a)->name, ((const struct dirent_src *)b)->name);
}

/* The sorted entries of dir, "." and ".." included (caller frees). */
static struct dirent_src *dir_entries(const struct node *dir, size_t *count)
{
    struct dirent_src *v = malloc((dir->n_kids + 2) * sizeof(*v));
    size_t k = 0;

    if (!v)
        return NULL;
    v[k++] = (struct dirent_src){".", dir};
    v[k++] = (struct dirent_src){"..", dir->parent};
    for (uint32_t i = 0; i < dir->n_kids; i++)
        v[k++] = (struct dirent_src){dir->kids[i].name, dir->kids[i].node};
    qsort(v, k, sizeof(*v), dirent_cmp);
    *count = k;
    return v;
}

/* Lay the entries out in blocks: returns the directory size; with out (dsize bytes, zeroed),
 * also writes the dirents and names. */
static uint64_t dir_pack(const struct dirent_src *v, size_t count, uint8_t *out)
{
    uint64_t blk = 0;
    size_t i = 0, used = 0;

    while (i < count) {
        size_t j = i, bytes = 0;
        while (j < count && bytes + DIRENT_SIZE + strlen(v[j].name) <= BLK)
            bytes += DIRENT_SIZE + strlen(v[j++].name);
        if (out) {
            uint8_t *b = out + blk * BLK;
            size_t nameoff = (j - i) * DIRENT_SIZE;
            for (size_t k = i; k < j; k++) {
                size_t nl = strlen(v[k].name);
                uint8_t *d = b + (k - i) * DIRENT_SIZE;
                put64(d, v[k].node->nid);
                put16(d + 8, (uint32_t)nameoff);
                d[10] = ftype(v[k].node->mode);
                memcpy(b + nameoff, v[k].name, nl);
                nameoff += nl;
            }
        }
        used = bytes;
        i = j;
        if (i < count)
            blk++;
    }
    return blk * BLK + used;
}

static uint32_t xattr_isize(const struct node *n)
{
    uint32_t s = XATTR_HDR;

    if (!n->n_xattrs)
        return 0;
    for (uint32_t i = 0; i < n->n_xattrs; i++)
        s += (4u + n->xattrs[i].nlen + n->xattrs[i].vlen + 3u) & ~3u;
    return s;
}

static void put_inode(uint8_t *p, const struct node *n, uint32_t layout, uint32_t i_u)
{
    uint32_t xs = xattr_isize(n);
    uint64_t size = S_ISREG(n->mode)                         ? n->size
                    : (S_ISDIR(n->mode) || S_ISLNK(n->mode)) ? n->dsize
                                                             : 0;

    put16(p, (layout << 1) | 1);
    put16(p + 2, xs ? (xs - XATTR_HDR) / 4 + 1 : 0);
    put16(p + 4, n->mode);
    put64(p + 8, size);
    put32(p + 16, i_u);
    put32(p + 20, n->ino);
    put32(p + 24, n->uid);
    put32(p + 28, n->gid);
    put64(p + 32, (uint64_t)n->mtime);
    put32(p + 40, n->mtime_ns);
    put32(p + 44, n->nlink);
    p += INODE_SIZE;
    if (!xs)
        return;
    p += XATTR_HDR; /* no name filter, no shared xattrs */
    for (uint32_t i = 0; i < n->n_xattrs; i++) {
        const struct xattr *x = &n->xattrs[i];
        p[0] = x->nlen;
        p[1] = x->index;
        put16(p + 2, x->vlen);
        memcpy(p + 4, x->name, x->nlen);
        memcpy(p + 4 + x->nlen, x->val, x->vlen);
        p += (4u + x->nlen + x->vlen + 3u) & ~3u;
    }
}

int capsa_erofs_finish(struct capsa_erofs *w, capsa_err *err)
{
    _cleanup_free_ struct node **order = NULL;
    _cleanup_free_ uint8_t *meta = NULL;
    size_t n_order = 0, head = 0;
    uint64_t pos = 0, plain, meta_blk, total;
    uint8_t sb[128] = {0};

    if (w->failed)
        return capsa_err_set(err, EINVAL, "erofs image: an earlier layer failed");
    order = malloc(w->n_nodes * sizeof(*order));
    if (!order)
        return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
    /* Breadth first from the root: numbers, parents, link counts. */
    w->root->seen = true;
    w->root->parent = w->root;
    w->root->nlink = 2;
    w->root->ino = 1;
    order[n_order++] = w->root;
    while (head < n_order) {
        struct node *d = order[head++];
        if (!S_ISDIR(d->mode))
            continue;
        for (uint32_t i = 0; i < d->n_kids; i++) {
            struct node *k = d->kids[i].node;
            if (S_ISDIR(k->mode))
                d->nlink++;
            if (k->seen) {
                k->nlink++;
                continue;
            }
            k->seen = true;
            k->ino = (uint32_t)n_order + 1;
            k->nlink = S_ISDIR(k->mode) ? 2 : 1;
            k->parent = d;
            order[n_order++] = k;
        }
    }
    /* Sizes and places: inodes in the metadata area, whole blocks of directories and
     * symlinks after the file data, tails inline when they fit in the inode's block. */
    plain = w->next_blk;
    for (size_t i = 0; i < n_order; i++) {
        struct node *n = order[i];
        uint64_t tail = 0;
        n->isize = INODE_SIZE + xattr_isize(n);
        if (S_ISDIR(n->mode)) {
            size_t cnt;
            _cleanup_free_ struct dirent_src *v = dir_entries(n, &cnt);
            if (!v)
                return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
            n->dsize = dir_pack(v, cnt, NULL);
        } else if (S_ISLNK(n->mode)) {
            n->dsize = strlen(n->link);
        }
        if (n->dsize) {
            tail = n->dsize % BLK;
            n->inl = tail && n->isize + tail <= BLK;
            uint64_t nblk = n->inl ? n->dsize / BLK : (n->dsize + BLK - 1) / BLK;
            n->blkaddr = nblk ? (uint32_t)plain : 0;
            plain += nblk;
            if (!n->inl)
                tail = 0;
        }
        if (n->isize + tail <= BLK && pos % BLK + n->isize + tail > BLK)
            pos = (pos + BLK - 1) / BLK * BLK;
        n->nid = pos >> NID_SHIFT;
        pos = (pos + n->isize + tail + 31) & ~(uint64_t)31;
    }
    meta_blk = plain;
    total = meta_blk + (pos + BLK - 1) / BLK;
    if (total >= UINT32_MAX)
        return capsa_err_set(err, EFBIG, "erofs image: %llu blocks exceed the format's limit",
                             (unsigned long long)total);
    meta = calloc(1, (size_t)(total - meta_blk) * BLK);
    if (!meta)
        return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
    /* Write directory and symlink blocks (sequential: the write buffer coalesces them). */
    for (size_t i = 0; i < n_order; i++) {
        struct node *n = order[i];
        _cleanup_free_ uint8_t *data = NULL;
        uint8_t *ip = meta + (n->nid << NID_SHIFT);
        uint32_t i_u = n->blkaddr, layout = LAYOUT_PLAIN;
        if (S_ISDIR(n->mode) || S_ISLNK(n->mode)) {
            uint64_t full = n->inl ? n->dsize / BLK * BLK : n->dsize;
            data = calloc(1, (size_t)((n->dsize + BLK - 1) / BLK * BLK) + 1);
            if (!data)
                return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
            if (S_ISDIR(n->mode)) {
                size_t cnt;
                _cleanup_free_ struct dirent_src *v = dir_entries(n, &cnt);
                if (!v)
                    return capsa_err_set(err, ENOMEM, "erofs image: out of memory");
                dir_pack(v, cnt, data);
            } else {
                memcpy(data, n->link, (size_t)n->dsize);
            }
            if (full && wb_write(w, (uint64_t)n->blkaddr * BLK, data,
                                 (size_t)((full + BLK - 1) / BLK * BLK), err) < 0)
                return -1;
            if (n->inl) {
                layout = LAYOUT_INLINE;
                memcpy(ip + n->isize, data + full, (size_t)(n->dsize - full));
            }
        } else if (S_ISCHR(n->mode) || S_ISBLK(n->mode)) {
            i_u = n->rdev;
        } else if (!S_ISREG(n->mode)) {
            i_u = 0;
        }
        put_inode(ip, n, layout, i_u);
    }
    if (wb_flush(w, err) < 0 ||
        pwrite_all(w->fd, meta, (size_t)(total - meta_blk) * BLK, meta_blk * BLK, err) < 0)
        return -1;
    put32(sb, SB_MAGIC);
    sb[12] = BLKBITS;
    put16(sb + 14, (uint32_t)w->root->nid);
    put64(sb + 16, n_order);
    put64(sb + 24, (uint64_t)w->now);
    put32(sb + 36, (uint32_t)total);
    put32(sb + 40, (uint32_t)meta_blk);
    if (getrandom(sb + 48, 16, 0) != 16)
        memset(sb + 48, 0x5a, 16);
    if (pwrite_all(w->fd, sb, sizeof(sb), SB_OFFSET, err) < 0)
        return -1;
    if (ftruncate(w->fd, (off_t)(total * BLK)) < 0)
        return capsa_err_set(err, errno, "erofs image: truncate: %s", strerror(errno));
    sync_file_range(w->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
    return 0;
}

void capsa_erofs_free(struct capsa_erofs *w)
{
    if (!w)
        return;
    for (size_t i = 0; i < w->n_nodes; i++)
        node_free(w->nodes[i]);
    free(w->nodes);
    free(w->wbuf);
    free(w);
}
