/* image.c - the pull pipeline, local lookup and removal of OCI images (see image.h). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "image/blobs.h"
#include "image/erofs.h"
#include "image/extract.h"
#include "image/image.h"
#include "image/manifest.h"
#include "image/registry.h"
#include "store/store.h"

extern char **environ;

/* Whether capsa's own EROFS writer builds lower disks when CAPSA_EROFS_BUILDER is unset. */
#define CAPSA_EROFS_BUILDER_DEFAULT_OWN true

static inline void json_decrefp_local(json_t **j)
{
    if (*j)
        json_decref(*j);
}
static inline void manifest_clearp(struct capsa_manifest *m)
{
    capsa_manifest_clear(m);
}
static inline void config_clearp(struct capsa_image_config *c)
{
    capsa_image_config_clear(c);
}
static inline void image_clearp(struct capsa_store_image *i)
{
    capsa_store_image_clear(i);
}

int capsa_image_canonical(const char *ref, char *buf, size_t len, capsa_err *err)
{
    struct capsa_image_ref r;

    if (capsa_digest_valid(ref)) {
        snprintf(buf, len, "%s", ref);
        return 0;
    }
    if (capsa_image_ref_parse(ref, &r, err) < 0)
        return -1;
    capsa_image_ref_format(&r, buf, len);
    return 0;
}

/* The config must describe the manifest's layers (one diff_id each) of a Linux image. */
static int check_config(const struct capsa_manifest *m, const struct capsa_image_config *cfg,
                        const char *reference, capsa_err *err)
{
    if (cfg->n_diff_ids != m->n_layers)
        return capsa_err_set(err, EINVAL,
                             "%s: the manifest has %zu layers but the config lists %zu diff_ids",
                             reference, m->n_layers, cfg->n_diff_ids);
    if (cfg->os[0] && strcmp(cfg->os, "linux") != 0)
        return capsa_err_set(err, EINVAL, "%s: image is for os '%s', not linux", reference,
                             cfg->os);
    return 0;
}

static int fill_paths(struct capsa_image_info *info, capsa_err *err)
{
    if (capsa_images_path(info->dir, sizeof(info->dir), err, "disks/%s",
                          info->manifest_digest + 7) < 0)
        return -1;
    snprintf(info->disk, sizeof(info->disk), "%s/lower.erofs", info->dir);
    snprintf(info->config_path, sizeof(info->config_path), "%s/config.json", info->dir);
    return 0;
}

static bool disk_present(const struct capsa_image_info *info)
{
    struct stat st;
    return stat(info->disk, &st) == 0 && S_ISREG(st.st_mode) && stat(info->config_path, &st) == 0;
}

int capsa_image_lookup(const char *ref, struct capsa_image_info *out, capsa_err *err)
{
    _cleanup_(capsa_store_closep) struct capsa_store *store = NULL;
    _cleanup_(image_clearp) struct capsa_store_image img = {0};
    char key[CAPSA_REF_MAX];

    memset(out, 0, sizeof(*out));
    if (capsa_image_canonical(ref, key, sizeof(key), err) < 0)
        return -1;
    if (capsa_store_open(NULL, &store, err) < 0)
        return -1;
    if (capsa_store_image_get(store, key, &img, err) < 0)
        return -1;
    snprintf(out->reference, sizeof(out->reference), "%s", img.reference);
    snprintf(out->manifest_digest, sizeof(out->manifest_digest), "%s", img.manifest_digest);
    snprintf(out->config_digest, sizeof(out->config_digest), "%s",
             img.config_digest ? img.config_digest : "");
    out->size = img.size;
    if (fill_paths(out, err) < 0)
        return -1;
    if (!disk_present(out))
        return capsa_err_set(err, ENOENT, "image %s: its disk %s is missing (pull it again)", key,
                             out->disk);
    out->cached = true;
    return 0;
}

/* Remove build leftovers of processes that died (names end in .<pid>). */
static void sweep_tmp(void)
{
    char dir[4096];
    _cleanup_dir_ DIR *d = NULL;
    struct dirent *de;

    if (capsa_images_path(dir, sizeof(dir), NULL, "tmp") < 0 || !(d = opendir(dir)))
        return;
    while ((de = readdir(d))) {
        const char *dot = strrchr(de->d_name, '.');
        char *end;
        long pid;
        if (!dot || (!strstr(de->d_name, ".tree.") && !strstr(de->d_name, ".build.")))
            continue;
        pid = strtol(dot + 1, &end, 10);
        if (*end || pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno == EPERM))
            continue;
        char p[4096 + 256];
        snprintf(p, sizeof(p), "%s/%s", dir, de->d_name);
        log_debug("removing stale %s", p);
        capsa_rm_rf(p, NULL);
    }
}

static int run_mkfs(const char *tree, const char *out, const char *logpath, capsa_err *err)
{
    char *argv[] = {"mkfs.erofs", "--quiet", (char *)out, (char *)tree, NULL};
    posix_spawn_file_actions_t fa;
    pid_t pid;
    int status, rc;

    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    rc = posix_spawnp(&pid, "mkfs.erofs", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return capsa_err_set(err, rc, "mkfs.erofs: %s (install erofs-utils)", strerror(rc));
    /* While mkfs writes the disk, start writing it back (the caller fsyncs it), so that the
     * flush overlaps the build instead of following it. */
    {
        _cleanup_close_ int outfd = -1;
        for (;;) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                break;
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return capsa_err_set(err, errno, "mkfs.erofs: wait: %s", strerror(errno));
            }
            if (outfd < 0)
                outfd = open(out, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (outfd >= 0)
                sync_file_range(outfd, 0, 0, SYNC_FILE_RANGE_WRITE);
            nanosleep(&(struct timespec){.tv_nsec = 5 * 1000 * 1000}, NULL);
        }
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char msg[512] = "";
        FILE *f = fopen(logpath, "r");
        if (f) {
            size_t n = fread(msg, 1, sizeof(msg) - 1, f);
            msg[n] = '\0';
            fclose(f);
            msg[strcspn(msg, "\n")] = '\0';
        }
        return capsa_err_set(err, EIO, "mkfs.erofs %s failed (status %d)%s%s", out, status,
                             msg[0] ? ": " : "", msg);
    }
    return 0;
}

static int write_json_file(const char *path, json_t *j, capsa_err *err)
{
    _cleanup_free_ char *s = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS);
    _cleanup_close_ int fd = -1;
    size_t n;

    if (!s)
        return capsa_err_set(err, ENOMEM, "%s: out of memory", path);
    n = strlen(s);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return capsa_err_set(err, errno, "create %s: %s", path, strerror(errno));
    if (write(fd, s, n) != (ssize_t)n || write(fd, "\n", 1) != 1 || fsync(fd) < 0)
        return capsa_err_set(err, errno, "write %s: %s", path, strerror(errno));
    return 0;
}

static void fsync_path(const char *p)
{
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static void *rm_tree_main(void *arg)
{
    capsa_rm_rf(arg, NULL);
    return NULL;
}

/* Which program builds the lower disk: capsa's own EROFS writer straight from the layer
 * streams (erofs.c), or extraction to a tree + mkfs.erofs (CAPSA_EROFS_BUILDER=mkfs). */
static bool own_erofs_builder(void)
{
    const char *b = getenv("CAPSA_EROFS_BUILDER");

    if (!b || !*b)
        return CAPSA_EROFS_BUILDER_DEFAULT_OWN;
    if (!strcmp(b, "capsa"))
        return true;
    if (strcmp(b, "mkfs") != 0)
        log_warn("CAPSA_EROFS_BUILDER=%s: expected 'capsa' or 'mkfs'; using the default", b);
    return strcmp(b, "mkfs") == 0 ? false : CAPSA_EROFS_BUILDER_DEFAULT_OWN;
}

static inline void erofs_freep(struct capsa_erofs **w)
{
    capsa_erofs_free(*w);
}

/* A layer read from a blob feed, at increasing offsets. */
struct feed_src {
    struct capsa_blob_feed *feed;
    size_t index;
    int64_t off;
};

static ssize_t feed_src_read(void *ctx, void *buf, size_t len, capsa_err *err)
{
    struct feed_src *s = ctx;
    ssize_t n = capsa_blob_feed_read(s->feed, s->index, buf, len, s->off, err);

    if (n > 0)
        s->off += n;
    return n;
}

/* Build images/disks/<hex>/ from the layers, read from feed (entry i is layer i) or, without
 * one, from the blob store. Caller holds the manifest lock. */
static int build_disk(const struct capsa_manifest *m, const struct capsa_image_config *cfg,
                      const char *config_digest, struct capsa_image_info *info,
                      enum capsa_progress_mode progress, struct capsa_blob_feed *feed,
                      capsa_err *err)
{
    char tree[4096], build[4096], p[4096 + 64];
    _cleanup_close_ int rootfd = -1;
    const char *hex = info->manifest_digest + 7;
    const char *keep = getenv("CAPSA_IMAGE_KEEP_ROOTFS");
    bool keep_tree = keep && *keep && strcmp(keep, "0") != 0;
    _cleanup_(json_decrefp_local) json_t *doc = NULL;
    pthread_t rm_thread;
    bool rm_started = false;
    /* The own writer needs no tree; keeping the tree for inspection needs the old path. */
    bool own = own_erofs_builder() && !keep_tree;
    _cleanup_(erofs_freep) struct capsa_erofs *writer = NULL;
    _cleanup_close_ int diskfd = -1;
    int rc = -1;

    if (capsa_images_path(tree, sizeof(tree), err, "tmp/%s.tree.%d", hex, (int)getpid()) < 0 ||
        capsa_images_path(build, sizeof(build), err, "tmp/%s.build.%d", hex, (int)getpid()) < 0)
        return -1;
    capsa_rm_rf(tree, NULL);
    capsa_rm_rf(build, NULL);
    if (mkdir(build, 0700) < 0) {
        capsa_err_set(err, errno, "create %s: %s", build, strerror(errno));
        goto out;
    }
    snprintf(p, sizeof(p), "%s/lower.erofs", build);
    if (own) {
        diskfd = open(p, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
        if (diskfd < 0) {
            capsa_err_set(err, errno, "create %s: %s", p, strerror(errno));
            goto out;
        }
        if (capsa_erofs_new(diskfd, &writer, err) < 0)
            goto out;
    } else {
        if (mkdir(tree, 0755) < 0) {
            capsa_err_set(err, errno, "create %s: %s", tree, strerror(errno));
            goto out;
        }
        rootfd = open(tree, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (rootfd < 0) {
            capsa_err_set(err, errno, "open %s: %s", tree, strerror(errno));
            goto out;
        }
    }
    for (size_t i = 0; i < m->n_layers; i++) {
        char blob[4096], diff_id[CAPSA_DIGEST_MAX];
        struct capsa_layer_stats st;
        _cleanup_close_ int bfd = -1;
        int arc;
        if (feed) {
            struct feed_src src = {.feed = feed, .index = i};
            if (own)
                arc = capsa_erofs_add_layer(writer, feed_src_read, &src, m->layers[i].compression,
                                            diff_id, &st, err);
            else
                arc = capsa_layer_apply_stream(rootfd, feed_src_read, &src,
                                               m->layers[i].compression, diff_id, &st, err);
        } else {
            if (capsa_blob_path(m->layers[i].digest, blob, sizeof(blob), err) < 0)
                goto out;
            bfd = open(blob, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
            if (bfd < 0) {
                capsa_err_set(err, errno, "layer %s: open %s: %s", m->layers[i].digest, blob,
                              strerror(errno));
                goto out;
            }
            if (own)
                arc = capsa_erofs_add_layer_fd(writer, bfd, m->layers[i].compression, diff_id, &st,
                                               err);
            else
                arc = capsa_layer_apply(rootfd, bfd, m->layers[i].compression, diff_id, &st, err);
        }
        if (arc < 0) {
            capsa_err_prefix(err, "layer %zu (%s)", i, m->layers[i].digest);
            goto out;
        }
        if (strcmp(diff_id, cfg->diff_ids[i]) != 0) {
            capsa_err_set(err, EBADMSG,
                          "layer %zu (%s): diff_id mismatch: uncompressed content hashes to %s, "
                          "the image config says %s",
                          i, m->layers[i].digest, diff_id, cfg->diff_ids[i]);
            goto out;
        }
        if (progress == CAPSA_PROGRESS_LINES)
            fprintf(stderr, "%s: extracted %llu entries, diff_id verified\n", m->layers[i].digest,
                    (unsigned long long)st.entries);
    }
    if (progress == CAPSA_PROGRESS_LINES)
        fprintf(stderr, "%s: building lower disk (erofs)\n", info->manifest_digest);
    if (own) {
        if (capsa_erofs_finish(writer, err) < 0)
            goto out;
        if (fsync(diskfd) < 0) {
            capsa_err_set(err, errno, "fsync %s: %s", p, strerror(errno));
            goto out;
        }
    } else {
        char logp[4096 + 64];
        snprintf(logp, sizeof(logp), "%s/mkfs.log", build);
        if (run_mkfs(tree, p, logp, err) < 0)
            goto out;
        unlink(logp);
        /* The tree is no longer needed: remove it while the disk is flushed. */
        if (!keep_tree)
            rm_started = pthread_create(&rm_thread, NULL, rm_tree_main, tree) == 0;
        fsync_path(p);
    }
    doc = json_pack("{s:s, s:s, s:s, s:O}", "manifest_digest", info->manifest_digest,
                    "config_digest", config_digest, "architecture", cfg->arch[0] ? cfg->arch : "",
                    "config", cfg->runtime);
    if (!doc) {
        capsa_err_set(err, ENOMEM, "image config: out of memory");
        goto out;
    }
    snprintf(p, sizeof(p), "%s/config.json", build);
    if (write_json_file(p, doc, err) < 0)
        goto out;
    if (keep_tree) {
        snprintf(p, sizeof(p), "%s/rootfs", build);
        if (rename(tree, p) < 0) {
            capsa_err_set(err, errno, "rename %s -> %s: %s", tree, p, strerror(errno));
            goto out;
        }
    }
    fsync_path(build);
    capsa_rm_rf(info->dir, NULL); /* a stale, incomplete directory (no lock holder built it) */
    if (rename(build, info->dir) < 0) {
        capsa_err_set(err, errno, "rename %s -> %s: %s", build, info->dir, strerror(errno));
        goto out;
    }
    {
        char disks[4096];
        if (capsa_images_path(disks, sizeof(disks), NULL, "disks") == 0)
            fsync_path(disks);
    }
    rc = 0;
out:
    if (rootfd >= 0) {
        close(rootfd);
        rootfd = -1;
    }
    if (rm_started)
        pthread_join(rm_thread, NULL);
    if (!own)
        capsa_rm_rf(tree, NULL);
    capsa_rm_rf(build, NULL);
    return rc;
}

/* The disk is built in a thread that applies each layer while later ones still download. */
struct builder {
    const struct capsa_manifest *m;
    const struct capsa_image_config *cfg;
    struct capsa_image_info *info;
    enum capsa_progress_mode progress;
    struct capsa_blob_feed *feed;
    int rc;
    capsa_err err;
};

static void *builder_main(void *arg)
{
    struct builder *b = arg;

    b->rc = build_disk(b->m, b->cfg, b->m->config.digest, b->info, b->progress, b->feed, &b->err);
    return NULL;
}

static inline void feed_freep(struct capsa_blob_feed **f)
{
    capsa_blob_feed_free(*f);
    *f = NULL;
}

/* Download the layers and build the disk from them as they arrive: as the bytes arrive when
 * the registry is trusted for the content anyway (a tag), after each layer's digest matched
 * when the pull is pinned to a manifest digest. */
static int fetch_and_build(struct capsa_registry *reg, const struct capsa_manifest *m,
                           const struct capsa_image_config *cfg, struct capsa_image_info *info,
                           const struct capsa_image_pull_opts *opts, bool pinned, capsa_err *err)
{
    _cleanup_(feed_freep) struct capsa_blob_feed *feed = NULL;
    struct builder b = {.m = m, .cfg = cfg, .info = info, .progress = opts->progress};
    pthread_t th;
    int rc;

    if (capsa_blob_feed_new(m->n_layers, !pinned, &feed, err) < 0)
        return -1;
    b.feed = feed;
    rc = pthread_create(&th, NULL, builder_main, &b);
    if (rc != 0) { /* no thread: one step after the other */
        log_debug("image: no builder thread (%s); building after the download", strerror(rc));
        if (capsa_blobs_fetch(reg, m->layers, m->n_layers, opts->force, opts->progress, err) < 0)
            return -1;
        return build_disk(m, cfg, m->config.digest, info, opts->progress, NULL, err);
    }
    rc =
        capsa_blobs_fetch_feed(reg, m->layers, m->n_layers, opts->force, opts->progress, feed, err);
    pthread_join(th, NULL);
    if (rc < 0)
        return -1; /* the download's error explains the builder's */
    if (b.rc < 0) {
        *err = b.err;
        return -1;
    }
    return 0;
}

/* Fetch (or read) the config blob and parse it. */
static int get_config(struct capsa_registry *reg, const struct capsa_descriptor *d, bool force,
                      struct capsa_image_config *cfg, capsa_err *err)
{
    _cleanup_free_ char *body = NULL;
    size_t len = 0;

    if (capsa_blob_present(d->digest) && !force) {
        if (capsa_blob_read(d->digest, CAPSA_CONFIG_MAX, &body, &len, err) < 0)
            return -1;
    } else {
        if (capsa_registry_get_blob(reg, d, CAPSA_CONFIG_MAX, &body, &len, err) < 0 ||
            capsa_blob_put(d->digest, body, len, err) < 0)
            return capsa_err_prefix(err, "image config");
    }
    if ((int64_t)len != d->size)
        return capsa_err_set(err, EBADMSG, "image config %s: %zu bytes, the manifest says %lld",
                             d->digest, len, (long long)d->size);
    return capsa_image_config_parse(body, len, cfg, err);
}

static int record(const char *reference, const char *manifest_digest, const char *manifest_body,
                  const struct capsa_manifest *m, const struct capsa_image_config *cfg,
                  const char *config_body, int64_t size, capsa_err *err)
{
    _cleanup_(capsa_store_closep) struct capsa_store *store = NULL;
    _cleanup_free_ const char **digests = calloc(m->n_layers + 1, sizeof(char *));
    struct capsa_store_image_put put = {0};

    if (!digests)
        return capsa_err_set(err, ENOMEM, "image: out of memory");
    if (capsa_store_open(NULL, &store, err) < 0)
        return -1;
    if (capsa_store_tx_begin(store, err) < 0)
        return -1;
    for (size_t i = 0; i < m->n_layers; i++) {
        char path[4096];
        struct capsa_store_layer l = {
            .digest = (char *)m->layers[i].digest,
            .diff_id = cfg->diff_ids[i],
            .media_type = (char *)m->layers[i].media_type,
            .size = m->layers[i].size,
            .path = path,
            .state = CAPSA_LAYER_READY,
        };
        if (capsa_blob_path(m->layers[i].digest, path, sizeof(path), err) < 0 ||
            capsa_store_layer_put(store, &l, err) < 0)
            goto fail;
        digests[i] = m->layers[i].digest;
    }
    put.reference = reference;
    put.manifest_digest = manifest_digest;
    put.manifest_json = manifest_body;
    put.media_type = m->media_type;
    put.config_digest = m->config.digest;
    put.config_json = config_body;
    put.size = size;
    put.layer_digests = digests;
    put.n_layers = m->n_layers;
    if (capsa_store_image_put(store, &put, err) < 0)
        goto fail;
    return capsa_store_tx_commit(store, err);
fail:
    capsa_store_tx_rollback(store);
    return -1;
}

int capsa_image_pull(const char *refstr, const struct capsa_image_pull_opts *opts,
                     struct capsa_image_info *out, capsa_err *err)
{
    struct capsa_image_pull_opts defaults = {0};
    struct capsa_image_ref ref;
    struct capsa_image_info info = {0};
    _cleanup_(capsa_registry_closep) struct capsa_registry *reg = NULL;
    _cleanup_(manifest_clearp) struct capsa_manifest m = {0};
    _cleanup_(config_clearp) struct capsa_image_config cfg = {0};
    _cleanup_free_ char *body = NULL;
    _cleanup_free_ char *config_body = NULL;
    _cleanup_close_ int gc_lock = -1;
    _cleanup_close_ int mlock = -1;
    char ct[CAPSA_MEDIA_TYPE_MAX], digest[CAPSA_DIGEST_MAX];
    size_t len = 0, config_len = 0;
    int64_t size;

    if (!opts)
        opts = &defaults;
    if (out)
        memset(out, 0, sizeof(*out));
    if (capsa_image_ref_parse(refstr, &ref, err) < 0)
        return -1;
    capsa_image_ref_format(&ref, info.reference, sizeof(info.reference));

    if (!opts->force && !opts->refresh) {
        capsa_err e = {0};
        struct capsa_image_info have;
        if (capsa_image_lookup(info.reference, &have, &e) == 0) {
            if (opts->progress == CAPSA_PROGRESS_LINES)
                fprintf(stderr, "%s: already present (%s)\n", have.reference, have.manifest_digest);
            if (out)
                *out = have;
            return 0;
        }
        if (e.code != ENOENT)
            log_debug("image lookup %s: %s", info.reference, e.msg);
    }
    if (capsa_images_init(err) < 0)
        return -1;
    gc_lock = capsa_images_lock("gc", LOCK_SH, err);
    if (gc_lock < 0)
        return -1;
    sweep_tmp();

    struct capsa_registry_opts ro = {
        .insecure = opts->insecure, .ca_certs = opts->ca_certs, .timeout_s = opts->timeout_s};
    if (capsa_registry_open(&ref, &ro, &reg, err) < 0)
        return -1;
    if (opts->progress == CAPSA_PROGRESS_LINES)
        fprintf(stderr, "%s: resolving\n", info.reference);
    if (capsa_registry_get_manifest(reg, ref.digest[0] ? ref.digest : ref.tag, &body, &len, ct,
                                    sizeof(ct), digest, err) < 0)
        return -1;
    if (capsa_manifest_parse(body, len, ct, &m, err) < 0)
        return capsa_err_prefix(err, "%s", info.reference);
    if (m.kind == CAPSA_MANIFEST_INDEX) {
        const struct capsa_descriptor *sel;
        char want[CAPSA_DIGEST_MAX];
        if (capsa_blob_put(digest, body, len, err) < 0)
            return -1;
        if (capsa_manifest_select(&m, "linux", capsa_host_arch(), NULL, &sel, err) < 0)
            return capsa_err_prefix(err, "%s", info.reference);
        if (sel->size > CAPSA_MANIFEST_MAX)
            return capsa_err_set(err, EFBIG, "%s: manifest %s: %lld bytes exceeds the cap",
                                 info.reference, sel->digest, (long long)sel->size);
        snprintf(want, sizeof(want), "%s", sel->digest);
        free(steal_pointer(&body));
        capsa_manifest_clear(&m);
        if (capsa_registry_get_manifest(reg, want, &body, &len, ct, sizeof(ct), digest, err) < 0)
            return -1;
        if (capsa_manifest_parse(body, len, ct, &m, err) < 0)
            return capsa_err_prefix(err, "%s", info.reference);
        if (m.kind != CAPSA_MANIFEST_IMAGE)
            return capsa_err_set(err, EINVAL, "%s: index entry %s is itself an index",
                                 info.reference, want);
    }
    if (capsa_blob_put(digest, body, len, err) < 0)
        return -1;
    snprintf(info.manifest_digest, sizeof(info.manifest_digest), "%s", digest);
    snprintf(info.config_digest, sizeof(info.config_digest), "%s", m.config.digest);
    if (fill_paths(&info, err) < 0)
        return -1;

    if (get_config(reg, &m.config, opts->force, &cfg, err) < 0)
        return capsa_err_prefix(err, "%s", info.reference);
    if (check_config(&m, &cfg, info.reference, err) < 0)
        return -1;
    if (cfg.arch[0] && strcmp(cfg.arch, capsa_host_arch()) != 0)
        log_warn("%s: image architecture is %s, this host is %s", info.reference, cfg.arch,
                 capsa_host_arch());
    if (capsa_blob_read(m.config.digest, CAPSA_CONFIG_MAX, &config_body, &config_len, err) < 0)
        return -1;
    size = m.config.size;
    for (size_t i = 0; i < m.n_layers; i++)
        size += m.layers[i].size;
    info.size = size;

    mlock = capsa_images_lock(digest + 7, LOCK_EX, err);
    if (mlock < 0)
        return -1;
    if (opts->force || !disk_present(&info)) {
        if (fetch_and_build(reg, &m, &cfg, &info, opts, ref.digest[0] != '\0', err) < 0)
            return capsa_err_prefix(err, "%s", info.reference);
    } else {
        info.cached = true;
        /* Layers must still be in the store for the rows below. */
        for (size_t i = 0; i < m.n_layers; i++)
            if (!capsa_blob_present(m.layers[i].digest)) {
                if (capsa_blobs_fetch(reg, m.layers, m.n_layers, false, opts->progress, err) < 0)
                    return capsa_err_prefix(err, "%s", info.reference);
                break;
            }
    }
    if (record(info.reference, digest, body, &m, &cfg, config_body, size, err) < 0)
        return capsa_err_prefix(err, "%s: record in the store", info.reference);
    if (opts->progress == CAPSA_PROGRESS_LINES)
        fprintf(stderr, "%s: pulled %s\n", info.reference, digest);
    if (out)
        *out = info;
    return 0;
}

/* Is any manifest still using this config digest? */
static bool config_in_use(struct capsa_store *store, const char *digest)
{
    struct capsa_store_image *v = NULL;
    size_t n = 0;
    bool used = false;

    if (capsa_store_image_list(store, &v, &n, NULL) < 0)
        return true;
    for (size_t i = 0; i < n; i++)
        if (v[i].config_digest && !strcmp(v[i].config_digest, digest))
            used = true;
    capsa_store_images_free(v, n);
    return used;
}

int capsa_image_remove(const char *ref, capsa_err *err)
{
    _cleanup_(capsa_store_closep) struct capsa_store *store = NULL;
    _cleanup_(image_clearp) struct capsa_store_image img = {0};
    _cleanup_close_ int gc_lock = -1;
    struct capsa_store_layer *orphans = NULL;
    size_t n_orphans = 0;
    char key[CAPSA_REF_MAX];
    struct capsa_image_info info = {0};
    capsa_err e = {0};

    if (capsa_image_canonical(ref, key, sizeof(key), err) < 0)
        return -1;
    if (capsa_images_init(err) < 0)
        return -1;
    gc_lock = capsa_images_lock("gc", LOCK_EX, err);
    if (gc_lock < 0)
        return -1;
    if (capsa_store_open(NULL, &store, err) < 0)
        return -1;
    if (capsa_store_image_get(store, key, &img, err) < 0)
        return -1;
    if (capsa_store_image_delete(store, img.reference, err) < 0)
        return -1;
    snprintf(info.manifest_digest, sizeof(info.manifest_digest), "%s", img.manifest_digest);
    {
        _cleanup_(image_clearp) struct capsa_store_image other = {0};
        if (capsa_store_image_get(store, img.manifest_digest, &other, &e) == 0)
            return 0; /* another reference (a tag) still uses the manifest */
    }
    if (e.code != ENOENT)
        return capsa_err_set(err, e.code, "%s", e.msg);
    if (fill_paths(&info, err) < 0)
        return -1;
    if (capsa_rm_rf(info.dir, err) < 0)
        return -1;
    capsa_blob_remove(img.manifest_digest, NULL);
    if (img.config_digest && !config_in_use(store, img.config_digest))
        capsa_blob_remove(img.config_digest, NULL);
    if (capsa_store_layer_list_orphans(store, &orphans, &n_orphans, err) < 0)
        return -1;
    for (size_t i = 0; i < n_orphans; i++) {
        capsa_err le = {0};
        if (capsa_store_layer_delete(store, orphans[i].digest, &le) == 0)
            capsa_blob_remove(orphans[i].digest, NULL);
        else
            log_debug("keep layer %s: %s", orphans[i].digest, le.msg);
    }
    capsa_store_layers_free(orphans, n_orphans);
    return 0;
}

int capsa_image_install(const char *refstr, const char *body, size_t len,
                        enum capsa_progress_mode progress, struct capsa_image_info *out,
                        capsa_err *err)
{
    struct capsa_image_info info = {0};
    _cleanup_(manifest_clearp) struct capsa_manifest m = {0};
    _cleanup_(config_clearp) struct capsa_image_config cfg = {0};
    _cleanup_free_ char *config_body = NULL;
    _cleanup_close_ int gc_lock = -1;
    _cleanup_close_ int mlock = -1;
    char digest[CAPSA_DIGEST_MAX];
    uint8_t sum[CAPSA_SHA256_LEN];
    size_t config_len = 0;
    int64_t size;

    if (out)
        memset(out, 0, sizeof(*out));
    if (capsa_image_canonical(refstr, info.reference, sizeof(info.reference), err) < 0)
        return -1;
    if (capsa_manifest_parse(body, len, NULL, &m, err) < 0)
        return capsa_err_prefix(err, "%s", info.reference);
    if (m.kind != CAPSA_MANIFEST_IMAGE)
        return capsa_err_set(err, EINVAL, "%s: manifest is an index, not an image", info.reference);
    capsa_sha256_buf(body, len, sum);
    memcpy(digest, "sha256:", 7);
    capsa_sha256_hex(sum, sizeof(sum), digest + 7);
    if (capsa_images_init(err) < 0)
        return -1;
    gc_lock = capsa_images_lock("gc", LOCK_SH, err);
    if (gc_lock < 0)
        return -1;
    for (size_t i = 0; i < m.n_layers; i++)
        if (!capsa_blob_present(m.layers[i].digest))
            return capsa_err_set(err, ENOENT, "%s: layer %s is not in the blob store",
                                 info.reference, m.layers[i].digest);
    if (capsa_blob_put(digest, body, len, err) < 0)
        return -1;
    snprintf(info.manifest_digest, sizeof(info.manifest_digest), "%s", digest);
    snprintf(info.config_digest, sizeof(info.config_digest), "%s", m.config.digest);
    if (fill_paths(&info, err) < 0)
        return -1;
    if (capsa_blob_read(m.config.digest, CAPSA_CONFIG_MAX, &config_body, &config_len, err) < 0)
        return capsa_err_prefix(err, "%s: image config", info.reference);
    if ((int64_t)config_len != m.config.size)
        return capsa_err_set(err, EBADMSG, "image config %s: %zu bytes, the manifest says %lld",
                             m.config.digest, config_len, (long long)m.config.size);
    if (capsa_image_config_parse(config_body, config_len, &cfg, err) < 0)
        return capsa_err_prefix(err, "%s", info.reference);
    if (check_config(&m, &cfg, info.reference, err) < 0)
        return -1;
    size = m.config.size;
    for (size_t i = 0; i < m.n_layers; i++)
        size += m.layers[i].size;
    info.size = size;
    mlock = capsa_images_lock(digest + 7, LOCK_EX, err);
    if (mlock < 0)
        return -1;
    if (!disk_present(&info)) {
        if (build_disk(&m, &cfg, m.config.digest, &info, progress, NULL, err) < 0)
            return capsa_err_prefix(err, "%s", info.reference);
    } else {
        info.cached = true;
    }
    if (record(info.reference, digest, body, &m, &cfg, config_body, size, err) < 0)
        return capsa_err_prefix(err, "%s: record in the store", info.reference);
    if (out)
        *out = info;
    return 0;
}
