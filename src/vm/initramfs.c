/* initramfs.c - write the guest initramfs (newc cpio, capsa-agent as /init, optional kernel
 * modules) and cache it by hash.
 *
 * newc format (see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst):
 * each entry is a 110-byte ASCII header "070701" + 13 fields of 8 hex digits (ino, mode,
 * uid, gid, nlink, mtime, filesize, devmajor, devminor, rdevmajor, rdevminor, namesize,
 * check), the NUL-terminated name padded to a multiple of 4 bytes (counting the header),
 * then the file data padded to 4 bytes. The archive ends with an entry "TRAILER!!!".
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "vm/modname.h"
#include "common/err.h"
#include "common/paths.h"
#include "common/sha256.h"
#include "vm/initramfs.h"

struct cpio_out {
    int fd;
    const char *path; /* for messages */
    uint32_t ino;
    uint64_t off;
};

static int write_all(struct cpio_out *o, const void *data, size_t len, capsa_err *err)
{
    const uint8_t *p = data;

    while (len > 0) {
        ssize_t n = write(o->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return capsa_err_set(err, errno, "write %s: %s", o->path, strerror(errno));
        }
        p += n;
        len -= (size_t)n;
        o->off += (uint64_t)n;
    }
    return 0;
}

static int write_pad(struct cpio_out *o, capsa_err *err)
{
    static const uint8_t zeros[4];
    size_t pad = (4 - (o->off & 3)) & 3;

    return pad ? write_all(o, zeros, pad, err) : 0;
}

/* One entry: header, name, padding, data, padding. */
static int cpio_entry(struct cpio_out *o, const char *name, uint32_t mode, uint32_t nlink,
                      uint32_t rmaj, uint32_t rmin, const void *data, size_t size, capsa_err *err)
{
    char hdr[111];
    size_t namesize = strlen(name) + 1;
    int n;

    if (size > UINT32_MAX || namesize > PATH_MAX)
        return capsa_err_set(err, EFBIG, "initramfs entry %s: too large for newc", name);
    n = snprintf(hdr, sizeof(hdr), "070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
                 o->ino++, mode, 0u, 0u, nlink, 0u, (uint32_t)size, 0u, 0u, rmaj, rmin,
                 (uint32_t)namesize, 0u);
    if (n != 110)
        return capsa_err_set(err, EINVAL, "initramfs entry %s: bad header", name);
    if (write_all(o, hdr, 110, err) < 0 || write_all(o, name, namesize, err) < 0 ||
        write_pad(o, err) < 0)
        return -1;
    if (size > 0 && (write_all(o, data, size, err) < 0 || write_pad(o, err) < 0))
        return -1;
    return 0;
}

/* The fixed layout: names are relative, as the kernel and cpio(1) expect. */
static const struct {
    const char *name;
    uint32_t mode;
} dirs[] = {
    {"dev", S_IFDIR | 0755},     {"proc", S_IFDIR | 0555}, {"sys", S_IFDIR | 0555},
    {"run", S_IFDIR | 0755},     {"tmp", S_IFDIR | 01777}, {"mnt", S_IFDIR | 0755},
    {"newroot", S_IFDIR | 0755},
};

/* Read the whole agent (bounded) so the hash and the archive see the same bytes. */
static int read_agent(const char *agent_path, uint8_t **buf_out, size_t *len_out, capsa_err *err)
{
    _cleanup_close_ int fd = open(agent_path, O_RDONLY | O_CLOEXEC);
    _cleanup_free_ uint8_t *buf = NULL;
    struct stat st;
    size_t len = 0, cap;

    if (fd < 0)
        return capsa_err_set(err, errno, "agent %s: open: %s", agent_path, strerror(errno));
    if (fstat(fd, &st) < 0)
        return capsa_err_set(err, errno, "agent %s: stat: %s", agent_path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return capsa_err_set(err, EINVAL, "agent %s: expected a regular file", agent_path);
    if (st.st_size <= 0 || (uint64_t)st.st_size > CAPSA_INITRAMFS_MAX_AGENT)
        return capsa_err_set(err, EFBIG, "agent %s: size %lld: expected 1..%u bytes", agent_path,
                             (long long)st.st_size, CAPSA_INITRAMFS_MAX_AGENT);
    cap = (size_t)st.st_size;
    buf = malloc(cap);
    if (!buf)
        return capsa_err_set(err, ENOMEM, "agent %s: out of memory", agent_path);
    while (len < cap) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return capsa_err_set(err, errno, "agent %s: read: %s", agent_path, strerror(errno));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len != cap)
        return capsa_err_set(err, EIO, "agent %s: changed size while being read", agent_path);
    *buf_out = steal_pointer(&buf);
    *len_out = len;
    return 0;
}

/* Kernel modules read from a modules dir (see initramfs.h), all bytes in memory so the
 * hash and the archive see the same bytes. */
struct modset {
    size_t n;
    char name[CAPSA_INITRAMFS_MAX_MODULES][64];
    uint8_t *data[CAPSA_INITRAMFS_MAX_MODULES];
    size_t len[CAPSA_INITRAMFS_MAX_MODULES];
    char order[CAPSA_INITRAMFS_MAX_ORDER_SIZE + 1]; /* the names, one a line */
    size_t order_len;
};

#define MODSET_MAX_TOTAL (256u << 20)

static void modset_free(struct modset *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n; i++)
        free(m->data[i]);
    free(m);
}

static inline void modset_freep(struct modset **m)
{
    modset_free(*m);
}
#define _cleanup_modset_ __attribute__((cleanup(modset_freep)))

/* A regular file of 1..max bytes, read whole. */
static int read_bounded(const char *path, size_t max, uint8_t **buf_out, size_t *len_out,
                        capsa_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    _cleanup_free_ uint8_t *buf = NULL;
    struct stat st;
    size_t len = 0, cap;

    if (fd < 0)
        return capsa_err_set(err, errno, "%s: open: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0)
        return capsa_err_set(err, errno, "%s: stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return capsa_err_set(err, EINVAL, "%s: expected a regular file", path);
    if (st.st_size <= 0 || (uint64_t)st.st_size > max)
        return capsa_err_set(err, EFBIG, "%s: size %lld: expected 1..%zu bytes", path,
                             (long long)st.st_size, max);
    cap = (size_t)st.st_size;
    buf = malloc(cap + 1);
    if (!buf)
        return capsa_err_set(err, ENOMEM, "%s: out of memory", path);
    while (len < cap) {
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return capsa_err_set(err, errno, "%s: read: %s", path, strerror(errno));
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len != cap)
        return capsa_err_set(err, EIO, "%s: changed size while being read", path);
    buf[len] = 0;
    *buf_out = steal_pointer(&buf);
    *len_out = len;
    return 0;
}

/* Read dir/modules.order and every dir/modules/<name> it lists. */
static int modset_read(const char *dir, struct modset **out, capsa_err *err)
{
    _cleanup_modset_ struct modset *m = calloc(1, sizeof(*m));
    _cleanup_free_ uint8_t *order = NULL;
    char path[PATH_MAX];
    size_t order_len, total = 0, line = 0;

    if (!m)
        return capsa_err_set(err, ENOMEM, "modules: out of memory");
    if (snprintf(path, sizeof(path), "%s/modules.order", dir) >= (int)sizeof(path))
        return capsa_err_set(err, ENAMETOOLONG, "modules dir %s: path too long", dir);
    if (read_bounded(path, CAPSA_INITRAMFS_MAX_ORDER_SIZE, &order, &order_len, err) < 0)
        return -1;
    for (char *p = (char *)order, *end = (char *)order + order_len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

        line++;
        if (n > 0) {
            if (!capsa_module_name_ok(p, n))
                return capsa_err_set(err, EINVAL,
                                     "%s line %zu: expected a module file name "
                                     "[A-Za-z0-9_-]{1,60}.ko",
                                     path, line);
            if (m->n == CAPSA_INITRAMFS_MAX_MODULES)
                return capsa_err_set(err, E2BIG, "%s: more than %d modules", path,
                                     CAPSA_INITRAMFS_MAX_MODULES);
            memcpy(m->name[m->n], p, n);
            m->name[m->n][n] = '\0';
            for (size_t j = 0; j < m->n; j++)
                if (strcmp(m->name[j], m->name[m->n]) == 0)
                    return capsa_err_set(err, EINVAL, "%s line %zu: %s is listed twice", path, line,
                                         m->name[j]);
            memcpy(m->order + m->order_len, p, n);
            m->order_len += n;
            m->order[m->order_len++] = '\n';
            m->n++;
        }
        p += n + 1;
    }
    if (m->n == 0)
        return capsa_err_set(err, EINVAL, "%s: lists no module", path);
    for (size_t i = 0; i < m->n; i++) {
        snprintf(path, sizeof(path), "%s/modules/%s", dir, m->name[i]);
        if (read_bounded(path, CAPSA_INITRAMFS_MAX_MODULE_SIZE, &m->data[i], &m->len[i], err) < 0)
            return -1;
        total += m->len[i];
        if (total > MODSET_MAX_TOTAL)
            return capsa_err_set(err, EFBIG, "modules in %s: more than %u bytes in all", dir,
                                 MODSET_MAX_TOTAL);
    }
    *out = steal_pointer(&m);
    return 0;
}

static const struct {
    const char *name;
    uint32_t mode;
} mod_dirs[] = {
    {"lib", S_IFDIR | 0755},
    {"lib/modules", S_IFDIR | 0755},
    {"lib/modules/capsa", S_IFDIR | 0755},
};

static int write_modules(struct cpio_out *o, const struct modset *m, capsa_err *err)
{
    char name[128];

    for (size_t i = 0; i < ARRAY_SIZE(mod_dirs); i++)
        if (cpio_entry(o, mod_dirs[i].name, mod_dirs[i].mode, 2, 0, 0, NULL, 0, err) < 0)
            return -1;
    for (size_t i = 0; i < m->n; i++) {
        snprintf(name, sizeof(name), "lib/modules/capsa/%s", m->name[i]);
        if (cpio_entry(o, name, S_IFREG | 0644, 1, 0, 0, m->data[i], m->len[i], err) < 0)
            return -1;
    }
    return cpio_entry(o, "lib/modules/capsa/order", S_IFREG | 0644, 1, 0, 0, m->order, m->order_len,
                      err);
}

static int write_archive(const uint8_t *agent, size_t agent_len, const struct modset *mods,
                         const char *out_path, capsa_err *err)
{
    _cleanup_free_ char *tmp = NULL;
    _cleanup_close_ int fd = -1;
    struct cpio_out o;
    int rc = -1;

    if (asprintf(&tmp, "%s.tmp.XXXXXX", out_path) < 0) {
        tmp = NULL;
        return capsa_err_set(err, ENOMEM, "initramfs %s: out of memory", out_path);
    }
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return capsa_err_set(err, errno, "initramfs %s: create temp file: %s", out_path,
                             strerror(errno));
    o = (struct cpio_out){.fd = fd, .path = tmp, .ino = 1, .off = 0};
    if (fchmod(fd, 0644) < 0) {
        capsa_err_set(err, errno, "chmod %s: %s", tmp, strerror(errno));
        goto out;
    }
    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
        if (cpio_entry(&o, dirs[i].name, dirs[i].mode, 2, 0, 0, NULL, 0, err) < 0)
            goto out;
    if (mods && write_modules(&o, mods, err) < 0)
        goto out;
    if (cpio_entry(&o, "dev/console", S_IFCHR | 0600, 1, 5, 1, NULL, 0, err) < 0 ||
        cpio_entry(&o, "init", S_IFREG | 0755, 1, 0, 0, agent, agent_len, err) < 0 ||
        cpio_entry(&o, "TRAILER!!!", 0, 1, 0, 0, NULL, 0, err) < 0)
        goto out;
    if (fsync(fd) < 0) {
        capsa_err_set(err, errno, "fsync %s: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, out_path) < 0) {
        capsa_err_set(err, errno, "rename %s to %s: %s", tmp, out_path, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (rc < 0)
        unlink(tmp);
    return rc;
}

int capsa_initramfs_write_modules(const char *agent_path, const char *modules_dir,
                                  const char *out_path, capsa_err *err)
{
    _cleanup_free_ uint8_t *agent = NULL;
    _cleanup_modset_ struct modset *mods = NULL;
    size_t len;

    if (read_agent(agent_path, &agent, &len, err) < 0)
        return capsa_err_prefix(err, "initramfs");
    if (modules_dir && modset_read(modules_dir, &mods, err) < 0)
        return capsa_err_prefix(err, "initramfs");
    return write_archive(agent, len, mods, out_path, err);
}

int capsa_initramfs_write(const char *agent_path, const char *out_path, capsa_err *err)
{
    return capsa_initramfs_write_modules(agent_path, NULL, out_path, err);
}

int capsa_initramfs_path_modules(const char *agent_path, const char *modules_dir, char *out,
                                 size_t len, capsa_err *err)
{
    _cleanup_free_ uint8_t *agent = NULL;
    _cleanup_modset_ struct modset *mods = NULL;
    uint8_t digest[CAPSA_SHA256_LEN];
    char hex[17], dir[4096];
    size_t agent_len;
    struct stat st;

    if (read_agent(agent_path, &agent, &agent_len, err) < 0)
        return capsa_err_prefix(err, "initramfs");
    if (!modules_dir) {
        capsa_sha256_buf(agent, agent_len, digest);
    } else {
        static const char tag[] = "\0capsa-initramfs-modules 1\n";
        capsa_sha256 c;
        if (modset_read(modules_dir, &mods, err) < 0)
            return capsa_err_prefix(err, "initramfs");
        capsa_sha256_init(&c);
        capsa_sha256_update(&c, agent, agent_len);
        capsa_sha256_update(&c, tag, sizeof(tag) - 1);
        capsa_sha256_update(&c, mods->order, mods->order_len);
        for (size_t i = 0; i < mods->n; i++) {
            uint64_t n = mods->len[i];
            uint8_t le[8];
            for (int b = 0; b < 8; b++)
                le[b] = (uint8_t)(n >> (8 * b));
            capsa_sha256_update(&c, mods->name[i], strlen(mods->name[i]) + 1);
            capsa_sha256_update(&c, le, sizeof(le));
            capsa_sha256_update(&c, mods->data[i], mods->len[i]);
        }
        capsa_sha256_final(&c, digest);
    }
    capsa_sha256_hex(digest, 8, hex);
    if (capsa_path(dir, sizeof(dir), err, "cache") < 0 ||
        capsa_path(out, len, err, "cache/initramfs-%s%s.cpio", hex, mods ? "-mods" : "") < 0)
        return capsa_err_prefix(err, "initramfs");
    if (stat(out, &st) == 0 && S_ISREG(st.st_mode))
        return 0;
    if (capsa_mkdir_p(dir, 0700, err) < 0)
        return capsa_err_prefix(err, "initramfs cache");
    return write_archive(agent, agent_len, mods, out, err);
}

int capsa_initramfs_path(const char *agent_path, char *out, size_t len, capsa_err *err)
{
    return capsa_initramfs_path_modules(agent_path, NULL, out, len, err);
}
