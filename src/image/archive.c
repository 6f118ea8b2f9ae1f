/* archive.c - load and save docker-archive / OCI layout image tarballs (see archive.h). */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/sha256.h"
#include "image/archive.h"
#include "image/blobs.h"
#include "image/image.h"
#include "image/manifest.h"

struct entry {
    char *name;
    char *alias; /* symlink or hardlink: the normalised name it points at, else NULL */
    char hex[CAPSA_SHA256_LEN * 2 + 1];
    int64_t size;
    bool moved; /* renamed into the blob store */
};

struct load {
    char dir[4096];
    struct entry *e;
    size_t n;
    char **added; /* blob digests this load created */
    size_t n_added;
};

static void load_clear(struct load *l)
{
    if (l->dir[0])
        capsa_rm_rf(l->dir, NULL);
    for (size_t i = 0; i < l->n; i++) {
        free(l->e[i].name);
        free(l->e[i].alias);
    }
    free(l->e);
    for (size_t i = 0; i < l->n_added; i++)
        free(l->added[i]);
    free(l->added);
}

static void json_decrefp_(json_t **j)
{
    if (*j)
        json_decref(*j);
}
static void archive_readp(struct archive **a)
{
    if (*a)
        archive_read_free(*a);
}
static void archive_writep(struct archive **a)
{
    if (*a)
        archive_write_free(*a);
}
static void manifest_clearp_(struct capsa_manifest *m)
{
    capsa_manifest_clear(m);
}

/* Normalise an archive path: drop "." and empty components; reject absolute paths, empty or
 * long names and ".." (resolve_dotdot: a ".." removes the previous component and may not
 * climb above the top; used for link targets). */
static int norm_name_(const char *in, char *out, size_t len, bool resolve_dotdot, capsa_err *err)
{
    size_t o = 0;
    const char *p = in;

    if (!in || !*in || strlen(in) >= CAPSA_ARCHIVE_NAME_MAX)
        return capsa_err_set(err, EINVAL, "archive entry name is empty or longer than %d bytes",
                             CAPSA_ARCHIVE_NAME_MAX);
    if (*p == '/')
        return capsa_err_set(err, EINVAL, "archive entry '%s': absolute path", in);
    while (*p) {
        const char *s = strchr(p, '/');
        size_t n = s ? (size_t)(s - p) : strlen(p);
        if (n == 0 || (n == 1 && p[0] == '.')) {
        } else if (n == 2 && p[0] == '.' && p[1] == '.' && resolve_dotdot && o > 0) {
            while (o > 0 && out[o - 1] != '/')
                o--;
            if (o > 0)
                o--;
        } else if (n == 2 && p[0] == '.' && p[1] == '.') {
            return capsa_err_set(err, EINVAL, "archive entry '%s': '..' component", in);
        } else {
            if (o + n + 2 > len)
                return capsa_err_set(err, EINVAL, "archive entry '%s': name too long", in);
            if (o)
                out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p += n;
        if (*p == '/')
            p++;
    }
    out[o] = '\0';
    return 0;
}

static int norm_name(const char *in, char *out, size_t len, capsa_err *err)
{
    return norm_name_(in, out, len, false, err);
}

/* The file entry called name, following up to 8 links. */
static struct entry *find(struct load *l, const char *name)
{
    char n[CAPSA_ARCHIVE_NAME_MAX + 2];
    if (norm_name(name, n, sizeof(n), NULL) < 0)
        return NULL;
    for (int hops = 0; hops < 8; hops++) {
        struct entry *e = NULL;
        for (size_t i = 0; i < l->n && !e; i++)
            if (strcmp(l->e[i].name, n) == 0)
                e = &l->e[i];
        if (!e || !e->alias)
            return e;
        snprintf(n, sizeof(n), "%s", e->alias);
    }
    return NULL;
}

/* Record a symlink or hardlink entry as an alias of the (normalised) name it points at. */
static int add_alias(struct load *l, const char *name, const char *target, bool symlink,
                     capsa_err *err)
{
    char joined[2 * CAPSA_ARCHIVE_NAME_MAX + 4], norm[CAPSA_ARCHIVE_NAME_MAX + 2];
    const char *slash = strrchr(name, '/');
    struct entry *e;

    if (!target || !*target || strlen(target) >= CAPSA_ARCHIVE_NAME_MAX || *target == '/')
        return capsa_err_set(err, EINVAL, "archive entry '%s': bad link target", name);
    if (symlink && slash)
        snprintf(joined, sizeof(joined), "%.*s/%s", (int)(slash - name), name, target);
    else
        snprintf(joined, sizeof(joined), "%s", target);
    if (norm_name_(joined, norm, sizeof(norm), true, err) < 0)
        return capsa_err_prefix(err, "archive entry '%s': link", name);
    e = realloc(l->e, (l->n + 1) * sizeof(*e));
    if (!e)
        return capsa_err_set(err, ENOMEM, "archive: out of memory");
    l->e = e;
    e = &l->e[l->n];
    memset(e, 0, sizeof(*e));
    e->name = strdup(name);
    e->alias = strdup(norm);
    l->n++;
    if (!e->name || !e->alias)
        return capsa_err_set(err, ENOMEM, "archive: out of memory");
    return 0;
}

static void entry_path(const struct load *l, const struct entry *e, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%zu", l->dir, (size_t)(e - l->e));
}

/* Stream every regular entry of the tar into l->dir/<index>, hashing it. */
static int read_tar(int fd, struct load *l, capsa_err *err)
{
    _cleanup_(archive_readp) struct archive *a = archive_read_new();
    struct archive_entry *ae;
    int64_t total = 0;
    int r;

    if (!a)
        return capsa_err_set(err, ENOMEM, "archive: out of memory");
    archive_read_support_format_tar(a);
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_zstd(a);
    if (archive_read_open_fd(a, fd, 65536) != ARCHIVE_OK)
        return capsa_err_set(err, EINVAL, "archive: %s", archive_error_string(a));
    while ((r = archive_read_next_header(a, &ae)) == ARCHIVE_OK) {
        char name[CAPSA_ARCHIVE_NAME_MAX + 2], path[4200];
        _cleanup_close_ int out = -1;
        struct entry *e;
        capsa_sha256 c;
        uint8_t sum[CAPSA_SHA256_LEN];
        const void *buf;
        size_t sz;
        la_int64_t off;
        int64_t got = 0;

        const char *hardlink = archive_entry_hardlink(ae);
        bool is_symlink = archive_entry_filetype(ae) == AE_IFLNK;

        if (archive_entry_filetype(ae) != AE_IFREG && !is_symlink && !hardlink)
            continue;
        if (norm_name(archive_entry_pathname(ae), name, sizeof(name), err) < 0)
            return -1;
        for (size_t i = 0; i < l->n; i++)
            if (strcmp(l->e[i].name, name) == 0)
                return capsa_err_set(err, EINVAL, "archive entry '%s' appears twice", name);
        if (l->n >= CAPSA_ARCHIVE_ENTRIES_MAX)
            return capsa_err_set(err, EFBIG, "archive: more than %d files",
                                 CAPSA_ARCHIVE_ENTRIES_MAX);
        if (hardlink || is_symlink) {
            if (add_alias(l, name, hardlink ? hardlink : archive_entry_symlink(ae), !hardlink,
                          err) < 0)
                return -1;
            continue;
        }
        if (archive_entry_size(ae) > CAPSA_ARCHIVE_ENTRY_MAX)
            return capsa_err_set(err, EFBIG, "archive entry '%s': %lld bytes exceeds the cap", name,
                                 (long long)archive_entry_size(ae));
        e = realloc(l->e, (l->n + 1) * sizeof(*e));
        if (!e)
            return capsa_err_set(err, ENOMEM, "archive: out of memory");
        l->e = e;
        e = &l->e[l->n];
        memset(e, 0, sizeof(*e));
        e->name = strdup(name);
        if (!e->name)
            return capsa_err_set(err, ENOMEM, "archive: out of memory");
        l->n++;
        entry_path(l, e, path, sizeof(path));
        out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (out < 0)
            return capsa_err_set(err, errno, "create %s: %s", path, strerror(errno));
        capsa_sha256_init(&c);
        while ((r = archive_read_data_block(a, &buf, &sz, &off)) == ARCHIVE_OK) {
            if (off != got) /* sparse hole: not in image archives */
                return capsa_err_set(err, EINVAL, "archive entry '%s': sparse file", name);
            got += (int64_t)sz;
            total += (int64_t)sz;
            if (got > CAPSA_ARCHIVE_ENTRY_MAX || total > CAPSA_ARCHIVE_TOTAL_MAX)
                return capsa_err_set(err, EFBIG, "archive entry '%s': size exceeds the cap", name);
            capsa_sha256_update(&c, buf, sz);
            for (size_t w = 0; w < sz;) {
                ssize_t k = write(out, (const char *)buf + w, sz - w);
                if (k < 0 && errno == EINTR)
                    continue;
                if (k < 0)
                    return capsa_err_set(err, errno, "write %s: %s", path, strerror(errno));
                w += (size_t)k;
            }
        }
        if (r != ARCHIVE_EOF)
            return capsa_err_set(err, EINVAL, "archive entry '%s': %s", name,
                                 archive_error_string(a));
        capsa_sha256_final(&c, sum);
        capsa_sha256_hex(sum, sizeof(sum), e->hex);
        e->size = got;
    }
    if (r != ARCHIVE_EOF)
        return capsa_err_set(err, EINVAL, "archive: %s", archive_error_string(a));
    if (l->n == 0)
        return capsa_err_set(err, EINVAL, "archive: no files (not an image archive)");
    return 0;
}

static int read_entry(struct load *l, struct entry *e, size_t cap, char **body, size_t *len,
                      capsa_err *err)
{
    char path[4200];
    _cleanup_close_ int fd = -1;
    _cleanup_free_ char *b = NULL;
    size_t have = 0;

    if (e->size > (int64_t)cap)
        return capsa_err_set(err, EFBIG, "%s: %lld bytes exceeds the cap of %zu", e->name,
                             (long long)e->size, cap);
    entry_path(l, e, path, sizeof(path));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    b = malloc((size_t)e->size + 1);
    if (fd < 0 || !b)
        return capsa_err_set(err, errno ? errno : ENOMEM, "read %s", e->name);
    while (have < (size_t)e->size) {
        ssize_t k = read(fd, b + have, (size_t)e->size - have);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return capsa_err_set(err, EIO, "read %s: short read", e->name);
        have += (size_t)k;
    }
    b[have] = '\0';
    *body = steal_pointer(&b);
    *len = have;
    return 0;
}

/* Entry "blobs/sha256/<hex>" for digest, verified against its name and size (size < 0: any). */
static struct entry *oci_blob(struct load *l, const char *digest, int64_t size, capsa_err *err)
{
    char name[128];
    struct entry *e;

    if (!capsa_digest_valid(digest) || strncmp(digest, "sha256:", 7) != 0) {
        capsa_err_set(err, EINVAL, "invalid digest '%s'", digest);
        return NULL;
    }
    snprintf(name, sizeof(name), "blobs/sha256/%s", digest + 7);
    e = find(l, name);
    if (!e) {
        capsa_err_set(err, ENOENT, "blob %s is not in the archive", digest);
        return NULL;
    }
    if (strcmp(e->hex, digest + 7) != 0) {
        capsa_err_set(err, EBADMSG, "blob %s: digest mismatch: content hashes to sha256:%s", digest,
                      e->hex);
        return NULL;
    }
    if (size >= 0 && e->size != size) {
        capsa_err_set(err, EBADMSG, "blob %s: %lld bytes, the descriptor says %lld", digest,
                      (long long)e->size, (long long)size);
        return NULL;
    }
    return e;
}

/* Move entry e into the blob store as sha256:<e->hex> (verified hash). */
static int import_blob(struct load *l, struct entry *e, capsa_err *err)
{
    char digest[CAPSA_DIGEST_MAX], src[4200], dst[4096];
    char **added;

    snprintf(digest, sizeof(digest), "sha256:%s", e->hex);
    if (capsa_blob_present(digest))
        return 0;
    if (e->moved)
        return 0;
    entry_path(l, e, src, sizeof(src));
    if (capsa_blob_path(digest, dst, sizeof(dst), err) < 0)
        return -1;
    if (chmod(src, 0644) < 0 || rename(src, dst) < 0)
        return capsa_err_set(err, errno, "blob %s: rename %s -> %s: %s", digest, src, dst,
                             strerror(errno));
    e->moved = true;
    added = realloc(l->added, (l->n_added + 1) * sizeof(*added));
    if (!added)
        return capsa_err_set(err, ENOMEM, "archive: out of memory");
    l->added = added;
    l->added[l->n_added] = strdup(digest);
    if (!l->added[l->n_added])
        return capsa_err_set(err, ENOMEM, "archive: out of memory");
    l->n_added++;
    return 0;
}

static void remember_digest(struct load *l, const char *digest)
{
    char **added;
    if (capsa_blob_present(digest))
        return;
    added = realloc(l->added, (l->n_added + 1) * sizeof(*added));
    if (!added)
        return;
    l->added = added;
    l->added[l->n_added] = strdup(digest);
    if (l->added[l->n_added])
        l->n_added++;
}

/* Check a manifest's blobs against the archive and move them into the store. */
static int import_manifest_blobs(struct load *l, const struct capsa_manifest *m, capsa_err *err)
{
    for (size_t i = 0; i <= m->n_layers; i++) {
        const struct capsa_descriptor *d = i == 0 ? &m->config : &m->layers[i - 1];
        struct entry *e = oci_blob(l, d->digest, d->size, err);
        if (!e || import_blob(l, e, err) < 0)
            return -1;
    }
    return 0;
}

static int install(struct load *l, const char *ref, const char *body, size_t len,
                   enum capsa_progress_mode progress, FILE *report, capsa_err *err)
{
    struct capsa_image_info info;
    uint8_t sum[CAPSA_SHA256_LEN];
    char digest[CAPSA_DIGEST_MAX];

    capsa_sha256_buf(body, len, sum);
    memcpy(digest, "sha256:", 7);
    capsa_sha256_hex(sum, sizeof(sum), digest + 7);
    remember_digest(l, digest);
    if (capsa_image_install(ref, body, len, progress, &info, err) < 0)
        return -1;
    /* The image is complete: its blobs are referenced now, a later failure keeps them. */
    for (size_t i = 0; i < l->n_added; i++)
        free(l->added[i]);
    l->n_added = 0;
    if (report)
        fprintf(report, "Loaded image: %s\n", info.reference);
    return 0;
}

/* OCI image layout: index.json (possibly nested indexes) -> image manifests. */
static int load_oci(struct load *l, const char *tag, enum capsa_progress_mode progress,
                    FILE *report, capsa_err *err)
{
    _cleanup_free_ char *ibody = NULL;
    _cleanup_(json_decrefp_) json_t *idx = NULL;
    struct entry *ie = find(l, "index.json");
    json_error_t je;
    json_t *ms;
    size_t ilen, n;

    if (!ie)
        return capsa_err_set(err, EINVAL, "OCI layout: index.json is missing");
    if (read_entry(l, ie, CAPSA_MANIFEST_MAX, &ibody, &ilen, err) < 0)
        return -1;
    idx = json_loadb(ibody, ilen, JSON_REJECT_DUPLICATES, &je);
    if (!idx || !json_is_object(idx))
        return capsa_err_set(err, EINVAL, "index.json: not a JSON object");
    ms = json_object_get(idx, "manifests");
    if (!json_is_array(ms) || json_array_size(ms) == 0)
        return capsa_err_set(err, EINVAL, "index.json: 'manifests' must be a non-empty array");
    n = json_array_size(ms);
    if (n > CAPSA_INDEX_MAX)
        return capsa_err_set(err, EFBIG, "index.json: more than %d manifests", CAPSA_INDEX_MAX);
    if (tag && n != 1)
        return capsa_err_set(err, EINVAL, "--tag needs an archive with one image, it has %zu", n);
    for (size_t i = 0; i < n; i++) {
        json_t *d = json_array_get(ms, i);
        const char *digest = json_string_value(json_object_get(d, "digest"));
        json_t *ann = json_object_get(d, "annotations");
        const char *cname = json_string_value(json_object_get(ann, "io.containerd.image.name"));
        const char *rname =
            json_string_value(json_object_get(ann, "org.opencontainers.image.ref.name"));
        json_t *sz = json_object_get(d, "size");
        _cleanup_free_ char *body = NULL;
        _cleanup_(manifest_clearp_) struct capsa_manifest m = {0};
        const char *ref = tag;
        struct entry *e;
        size_t len;

        if (!digest || !json_is_integer(sz))
            return capsa_err_set(err, EINVAL,
                                 "index.json: manifests[%zu]: digest and size "
                                 "are required",
                                 i);
        if (!ref)
            ref = cname;
        if (!ref && rname && (strchr(rname, '/') || strchr(rname, '.')))
            ref = rname;
        if (!ref)
            return capsa_err_set(err, EINVAL,
                                 "index.json: manifests[%zu] (%s) has no image name; give "
                                 "--tag",
                                 i, digest);
        e = oci_blob(l, digest, json_integer_value(sz), err);
        if (!e || read_entry(l, e, CAPSA_MANIFEST_MAX, &body, &len, err) < 0)
            return capsa_err_prefix(err, "index.json: manifests[%zu]", i);
        if (capsa_manifest_parse(body, len, json_string_value(json_object_get(d, "mediaType")), &m,
                                 err) < 0)
            return capsa_err_prefix(err, "manifest %s", digest);
        if (m.kind == CAPSA_MANIFEST_INDEX) {
            const struct capsa_descriptor *sel;
            if (capsa_manifest_select(&m, "linux", capsa_host_arch(), NULL, &sel, err) < 0)
                return capsa_err_prefix(err, "index %s", digest);
            e = oci_blob(l, sel->digest, sel->size, err);
            free(steal_pointer(&body));
            if (!e || read_entry(l, e, CAPSA_MANIFEST_MAX, &body, &len, err) < 0)
                return capsa_err_prefix(err, "index %s", digest);
            char ct[CAPSA_MEDIA_TYPE_MAX];
            snprintf(ct, sizeof(ct), "%s", sel->media_type);
            capsa_manifest_clear(&m);
            if (capsa_manifest_parse(body, len, ct, &m, err) < 0)
                return capsa_err_prefix(err, "manifest %s", e->hex);
            if (m.kind != CAPSA_MANIFEST_IMAGE)
                return capsa_err_set(err, EINVAL, "index %s: entry is itself an index", digest);
        }
        if (import_manifest_blobs(l, &m, err) < 0 ||
            install(l, ref, body, len, progress, report, err) < 0)
            return -1;
    }
    return 0;
}

static const char *layer_media_type(struct load *l, struct entry *e)
{
    char path[4200];
    unsigned char b[4] = {0};
    _cleanup_close_ int fd = -1;

    entry_path(l, e, path, sizeof(path));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && read(fd, b, sizeof(b)) == (ssize_t)sizeof(b)) {
        if (b[0] == 0x1f && b[1] == 0x8b)
            return "application/vnd.oci.image.layer.v1.tar+gzip";
        if (b[0] == 0x28 && b[1] == 0xb5 && b[2] == 0x2f && b[3] == 0xfd)
            return "application/vnd.oci.image.layer.v1.tar+zstd";
    }
    return "application/vnd.oci.image.layer.v1.tar";
}

/* A docker-archive path of a content-addressed file ("<hex>.json", "blobs/sha256/<hex>",
 * "<hex>/layer.tar" is not content addressed) must hash to the hex in its name. */
static int check_named(const struct entry *e, capsa_err *err)
{
    const char *base = strrchr(e->name, '/');
    char hex[65];
    size_t n;

    base = base ? base + 1 : e->name;
    n = strcspn(base, ".");
    if (n != 64 || strspn(base, "0123456789abcdef") < 64)
        return 0;
    if (base[64] != '\0' && strcmp(base + 64, ".json") != 0)
        return 0;
    memcpy(hex, base, 64);
    hex[64] = '\0';
    if (strcmp(hex, e->hex) != 0)
        return capsa_err_set(err, EBADMSG, "%s: digest mismatch: content hashes to sha256:%s",
                             e->name, e->hex);
    return 0;
}

static int load_docker(struct load *l, const char *tag, enum capsa_progress_mode progress,
                       FILE *report, capsa_err *err)
{
    _cleanup_free_ char *mbody = NULL;
    _cleanup_(json_decrefp_) json_t *man = NULL;
    struct entry *me = find(l, "manifest.json");
    json_error_t je;
    size_t mlen, n;

    if (!me)
        return capsa_err_set(err, EINVAL,
                             "archive: neither manifest.json (docker) nor oci-layout (OCI)");
    if (read_entry(l, me, CAPSA_MANIFEST_MAX, &mbody, &mlen, err) < 0)
        return -1;
    man = json_loadb(mbody, mlen, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_array(man) || json_array_size(man) == 0)
        return capsa_err_set(err, EINVAL, "manifest.json: not a non-empty JSON array");
    n = json_array_size(man);
    if (n > CAPSA_INDEX_MAX)
        return capsa_err_set(err, EFBIG, "manifest.json: more than %d images", CAPSA_INDEX_MAX);
    if (tag && n != 1)
        return capsa_err_set(err, EINVAL, "--tag needs an archive with one image, it has %zu", n);
    for (size_t i = 0; i < n; i++) {
        json_t *im = json_array_get(man, i);
        const char *cfgname = json_string_value(json_object_get(im, "Config"));
        json_t *layers = json_object_get(im, "Layers");
        json_t *tags = json_object_get(im, "RepoTags");
        _cleanup_(json_decrefp_) json_t *doc = NULL;
        _cleanup_free_ char *body = NULL;
        json_t *jl;
        struct entry *ce;

        if (!cfgname || !json_is_array(layers))
            return capsa_err_set(err, EINVAL,
                                 "manifest.json[%zu]: 'Config' and 'Layers' are required", i);
        if (json_array_size(layers) > CAPSA_LAYERS_MAX)
            return capsa_err_set(err, EFBIG, "manifest.json[%zu]: more than %d layers", i,
                                 CAPSA_LAYERS_MAX);
        if (!tag && (!json_is_array(tags) || json_array_size(tags) == 0))
            return capsa_err_set(err, EINVAL,
                                 "manifest.json[%zu]: no RepoTags (the image has no name); "
                                 "give --tag",
                                 i);
        ce = find(l, cfgname);
        if (!ce)
            return capsa_err_set(err, ENOENT,
                                 "manifest.json[%zu]: config '%s' is not in the "
                                 "archive",
                                 i, cfgname);
        if (ce->size > (int64_t)CAPSA_CONFIG_MAX)
            return capsa_err_set(err, EFBIG, "config '%s': exceeds the cap", cfgname);
        if (check_named(ce, err) < 0)
            return -1;
        jl = json_array();
        doc = json_pack("{s:i, s:s, s:{s:s, s:s+, s:I}, s:o}", "schemaVersion", 2, "mediaType",
                        CAPSA_MT_OCI_MANIFEST, "config", "mediaType", CAPSA_MT_OCI_CONFIG, "digest",
                        "sha256:", ce->hex, "size", (json_int_t)ce->size, "layers", jl);
        if (!doc)
            return capsa_err_set(err, ENOMEM, "archive: out of memory");
        for (size_t k = 0; k < json_array_size(layers); k++) {
            const char *ln = json_string_value(json_array_get(layers, k));
            struct entry *le = ln ? find(l, ln) : NULL;
            if (!le)
                return capsa_err_set(err, ENOENT,
                                     "manifest.json[%zu]: layer %zu '%s' is not in the archive", i,
                                     k, ln ? ln : "(not a string)");
            if (check_named(le, err) < 0)
                return -1;
            json_array_append_new(jl, json_pack("{s:s, s:s+, s:I}", "mediaType",
                                                layer_media_type(l, le), "digest",
                                                "sha256:", le->hex, "size", (json_int_t)le->size));
            if (import_blob(l, le, err) < 0)
                return -1;
        }
        if (import_blob(l, ce, err) < 0)
            return -1;
        body = json_dumps(doc, JSON_COMPACT);
        if (!body)
            return capsa_err_set(err, ENOMEM, "archive: out of memory");
        if (tag) {
            if (install(l, tag, body, strlen(body), progress, report, err) < 0)
                return -1;
            continue;
        }
        for (size_t k = 0; k < json_array_size(tags); k++) {
            const char *t = json_string_value(json_array_get(tags, k));
            if (!t)
                return capsa_err_set(err, EINVAL,
                                     "manifest.json[%zu]: RepoTags[%zu] is not a "
                                     "string",
                                     i, k);
            if (install(l, t, body, strlen(body), progress, report, err) < 0)
                return -1;
        }
    }
    return 0;
}

int capsa_archive_load(int fd, const char *tag, enum capsa_progress_mode progress, FILE *report,
                       capsa_err *err)
{
    _cleanup_(load_clear) struct load l = {0};
    _cleanup_close_ int gc_lock = -1;
    int rc;

    if (capsa_images_init(err) < 0)
        return -1;
    gc_lock = capsa_images_lock("gc", LOCK_SH, err);
    if (gc_lock < 0)
        return -1;
    if (capsa_images_path(l.dir, sizeof(l.dir), err, "tmp/load.%d.XXXXXX", (int)getpid()) < 0)
        return -1;
    if (!mkdtemp(l.dir)) {
        int e = errno;
        l.dir[0] = '\0';
        return capsa_err_set(err, e, "create a temp directory: %s", strerror(e));
    }
    if (read_tar(fd, &l, err) < 0)
        return capsa_err_prefix(err, "load");
    if (find(&l, "oci-layout") && find(&l, "index.json"))
        rc = load_oci(&l, tag, progress, report, err);
    else
        rc = load_docker(&l, tag, progress, report, err);
    if (rc < 0) {
        for (size_t i = 0; i < l.n_added; i++)
            capsa_blob_remove(l.added[i], NULL);
        return capsa_err_prefix(err, "load");
    }
    return 0;
}

/* ---- save ---- */

static int write_mem(struct archive *a, const char *name, const void *data, size_t len,
                     capsa_err *err)
{
    struct archive_entry *e = archive_entry_new();
    int rc = 0;

    if (!e)
        return capsa_err_set(err, ENOMEM, "save: out of memory");
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)len);
    if (archive_write_header(a, e) != ARCHIVE_OK ||
        (len && archive_write_data(a, data, len) != (la_ssize_t)len))
        rc = capsa_err_set(err, EIO, "save: write %s: %s", name, archive_error_string(a));
    archive_entry_free(e);
    return rc;
}

static int write_blob(struct archive *a, const char *digest, capsa_err *err)
{
    char path[4096], name[128];
    _cleanup_close_ int fd = -1;
    struct archive_entry *e;
    struct stat st;
    static char buf[1 << 16];
    int rc = 0;

    if (capsa_blob_path(digest, path, sizeof(path), err) < 0)
        return -1;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fstat(fd, &st) < 0)
        return capsa_err_set(err, errno, "save: blob %s: open %s: %s", digest, path,
                             strerror(errno));
    snprintf(name, sizeof(name), "blobs/sha256/%s", digest + 7);
    e = archive_entry_new();
    if (!e)
        return capsa_err_set(err, ENOMEM, "save: out of memory");
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, st.st_size);
    if (archive_write_header(a, e) != ARCHIVE_OK) {
        archive_entry_free(e);
        return capsa_err_set(err, EIO, "save: write %s: %s", name, archive_error_string(a));
    }
    archive_entry_free(e);
    for (off_t left = st.st_size; left > 0;) {
        ssize_t k = read(fd, buf, sizeof(buf) < (size_t)left ? sizeof(buf) : (size_t)left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = capsa_err_set(err, EIO, "save: blob %s: short read", digest);
            break;
        }
        if (archive_write_data(a, buf, (size_t)k) != k) {
            rc = capsa_err_set(err, EIO, "save: write %s: %s", name, archive_error_string(a));
            break;
        }
        left -= k;
    }
    return rc;
}

static bool seen_add(json_t *seen, const char *digest)
{
    if (json_object_get(seen, digest))
        return false;
    json_object_set_new(seen, digest, json_true());
    return true;
}

int capsa_archive_save(const char *const *refs, size_t n, enum capsa_archive_format format, int fd,
                       capsa_err *err)
{
    _cleanup_(archive_writep) struct archive *a = archive_write_new();
    _cleanup_(json_decrefp_) json_t *seen = json_object();
    _cleanup_(json_decrefp_) json_t *docker = json_array();
    _cleanup_(json_decrefp_) json_t *ms = json_array();
    _cleanup_free_ char *top = NULL;

    if (!a || !seen || !docker || !ms)
        return capsa_err_set(err, ENOMEM, "save: out of memory");
    archive_write_set_format_pax_restricted(a);
    if (archive_write_open_fd(a, fd) != ARCHIVE_OK)
        return capsa_err_set(err, EIO, "save: %s", archive_error_string(a));
    for (size_t i = 0; i < n; i++) {
        struct capsa_image_info info;
        _cleanup_free_ char *body = NULL;
        _cleanup_(manifest_clearp_) struct capsa_manifest m = {0};
        json_t *layers = json_array();
        const char *slash, *colon;
        size_t len;

        if (!layers)
            return capsa_err_set(err, ENOMEM, "save: out of memory");
        if (capsa_image_lookup(refs[i], &info, err) < 0) {
            json_decref(layers);
            return capsa_err_prefix(err, "save %s", refs[i]);
        }
        if (capsa_blob_read(info.manifest_digest, CAPSA_MANIFEST_MAX, &body, &len, err) < 0 ||
            capsa_manifest_parse(body, len, NULL, &m, err) < 0) {
            json_decref(layers);
            return capsa_err_prefix(err, "save %s", refs[i]);
        }
        if (seen_add(seen, info.manifest_digest) && write_blob(a, info.manifest_digest, err) < 0) {
            json_decref(layers);
            return -1;
        }
        if (seen_add(seen, m.config.digest) && write_blob(a, m.config.digest, err) < 0) {
            json_decref(layers);
            return -1;
        }
        for (size_t k = 0; k < m.n_layers; k++) {
            char name[128];
            snprintf(name, sizeof(name), "blobs/sha256/%s", m.layers[k].digest + 7);
            json_array_append_new(layers, json_string(name));
            if (seen_add(seen, m.layers[k].digest) && write_blob(a, m.layers[k].digest, err) < 0) {
                json_decref(layers);
                return -1;
            }
        }
        {
            char cname[128];
            snprintf(cname, sizeof(cname), "blobs/sha256/%s", m.config.digest + 7);
            json_array_append_new(docker, json_pack("{s:s, s:[s], s:o}", "Config", cname,
                                                    "RepoTags", info.reference, "Layers", layers));
        }
        slash = strrchr(info.reference, '/');
        colon = strrchr(info.reference, ':');
        json_array_append_new(
            ms, json_pack("{s:s, s:s, s:I, s:{s:s, s:s}}", "mediaType", m.media_type, "digest",
                          info.manifest_digest, "size", (json_int_t)len, "annotations",
                          "io.containerd.image.name", info.reference,
                          "org.opencontainers.image.ref.name",
                          colon && (!slash || colon > slash) ? colon + 1 : info.reference));
    }
    if (format == CAPSA_ARCHIVE_DOCKER) {
        top = json_dumps(docker, JSON_COMPACT);
        if (!top || write_mem(a, "manifest.json", top, strlen(top), err) < 0)
            return top ? -1 : capsa_err_set(err, ENOMEM, "save: out of memory");
    } else {
        static const char layout[] = "{\"imageLayoutVersion\":\"1.0.0\"}";
        _cleanup_(json_decrefp_) json_t *idx =
            json_pack("{s:i, s:s, s:O}", "schemaVersion", 2, "mediaType", CAPSA_MT_OCI_INDEX,
                      "manifests", ms);
        top = idx ? json_dumps(idx, JSON_COMPACT) : NULL;
        if (!top)
            return capsa_err_set(err, ENOMEM, "save: out of memory");
        if (write_mem(a, "oci-layout", layout, strlen(layout), err) < 0 ||
            write_mem(a, "index.json", top, strlen(top), err) < 0)
            return -1;
    }
    if (archive_write_close(a) != ARCHIVE_OK)
        return capsa_err_set(err, EIO, "save: %s", archive_error_string(a));
    return 0;
}
