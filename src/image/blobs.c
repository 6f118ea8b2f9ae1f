/* blobs.c - content-addressed blob store: atomic writes, locks, parallel fetch (see blobs.h). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/sha256.h"
#include "image/blobs.h"

int capsa_images_path(char *buf, size_t len, capsa_err *err, const char *fmt, ...)
{
    char sub[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(sub, sizeof(sub), fmt, ap);
    va_end(ap);
    return capsa_path(buf, len, err, "images/%s", sub);
}

int capsa_images_init(capsa_err *err)
{
    static const char *const dirs[] = {"blobs/sha256", "tmp", "locks", "disks"};
    char p[4096];

    for (size_t i = 0; i < ARRAY_SIZE(dirs); i++)
        if (capsa_images_path(p, sizeof(p), err, "%s", dirs[i]) < 0 ||
            capsa_mkdir_p(p, 0700, err) < 0)
            return -1;
    return 0;
}

int capsa_blob_path(const char *digest, char *buf, size_t len, capsa_err *err)
{
    if (!capsa_digest_valid(digest))
        return capsa_err_set(err, EINVAL, "blob digest '%s': expected sha256:<64 hex>",
                             digest ? digest : "(null)");
    return capsa_images_path(buf, len, err, "blobs/sha256/%s", digest + 7);
}

bool capsa_blob_present(const char *digest)
{
    char p[4096];
    struct stat st;

    return capsa_blob_path(digest, p, sizeof(p), NULL) == 0 && lstat(p, &st) == 0 &&
           S_ISREG(st.st_mode);
}

int capsa_images_lock(const char *key, int mode, capsa_err *err)
{
    char p[4096];
    _cleanup_close_ int fd = -1;

    if (capsa_images_path(p, sizeof(p), err, "locks/%s.lock", key) < 0)
        return -1;
    fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return capsa_err_set(err, errno, "lock %s: %s", p, strerror(errno));
    while (flock(fd, mode) < 0) {
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            return -2;
        return capsa_err_set(err, errno, "lock %s: %s", p, strerror(errno));
    }
    return steal_fd(&fd);
}

static void hex_digest(capsa_sha256 *c, char out[CAPSA_DIGEST_MAX])
{
    uint8_t d[CAPSA_SHA256_LEN];
    char hex[CAPSA_SHA256_HEX];

    capsa_sha256_final(c, d);
    capsa_sha256_hex(d, CAPSA_SHA256_LEN, hex);
    snprintf(out, CAPSA_DIGEST_MAX, "sha256:%s", hex);
}

static int fsync_dir_of(const char *path)
{
    char dir[4096];
    char *slash;
    int fd, rc;

    snprintf(dir, sizeof(dir), "%s", path);
    slash = strrchr(dir, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

/* fsync fd, rename tmp to the blob path, fsync the directory. */
static int publish(int fd, const char *tmp, const char *digest, capsa_err *err)
{
    char dst[4096];

    if (capsa_blob_path(digest, dst, sizeof(dst), err) < 0)
        return -1;
    if (fchmod(fd, 0644) < 0 || fsync(fd) < 0)
        return capsa_err_set(err, errno, "blob %s: fsync %s: %s", digest, tmp, strerror(errno));
    if (rename(tmp, dst) < 0)
        return capsa_err_set(err, errno, "blob %s: rename %s -> %s: %s", digest, tmp, dst,
                             strerror(errno));
    fsync_dir_of(dst);
    return 0;
}

int capsa_blob_put(const char *digest, const void *data, size_t len, capsa_err *err)
{
    char tmp[4096], got[CAPSA_DIGEST_MAX];
    _cleanup_close_ int fd = -1;
    capsa_sha256 c;

    if (!capsa_digest_valid(digest))
        return capsa_err_set(err, EINVAL, "blob digest '%s': expected sha256:<64 hex>", digest);
    capsa_sha256_init(&c);
    capsa_sha256_update(&c, data, len);
    hex_digest(&c, got);
    if (strcmp(got, digest) != 0)
        return capsa_err_set(err, EBADMSG, "blob %s: digest mismatch: content hashes to %s", digest,
                             got);
    if (capsa_blob_present(digest))
        return 0;
    if (capsa_images_init(err) < 0 ||
        capsa_images_path(tmp, sizeof(tmp), err, "tmp/%s.put.XXXXXX", digest + 7) < 0)
        return -1;
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0)
        return capsa_err_set(err, errno, "blob %s: create %s: %s", digest, tmp, strerror(errno));
    for (size_t off = 0; off < len;) {
        ssize_t w = write(fd, (const char *)data + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            unlink(tmp);
            return capsa_err_set(err, e, "blob %s: write %s: %s", digest, tmp, strerror(e));
        }
        off += (size_t)w;
    }
    if (publish(fd, tmp, digest, err) < 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Hash the first `len` bytes of fd (from offset 0) into c. */
static int hash_fd(int fd, int64_t len, capsa_sha256 *c)
{
    char buf[65536];
    int64_t off = 0;

    capsa_sha256_init(c);
    while (off < len) {
        size_t want = (size_t)(len - off < (int64_t)sizeof(buf) ? len - off : (int64_t)sizeof(buf));
        ssize_t r = pread(fd, buf, want, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        capsa_sha256_update(c, buf, (size_t)r);
        off += r;
    }
    return 0;
}

int capsa_blob_verify(const char *digest, int64_t size, capsa_err *err)
{
    char p[4096], got[CAPSA_DIGEST_MAX];
    _cleanup_close_ int fd = -1;
    struct stat st;
    capsa_sha256 c;

    if (capsa_blob_path(digest, p, sizeof(p), err) < 0)
        return -1;
    fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fstat(fd, &st) < 0)
        return capsa_err_set(err, errno, "blob %s: %s", p, strerror(errno));
    if (size >= 0 && st.st_size != size)
        return capsa_err_set(err, EBADMSG, "blob %s: %lld bytes, expected %lld", p,
                             (long long)st.st_size, (long long)size);
    if (hash_fd(fd, st.st_size, &c) < 0)
        return capsa_err_set(err, EIO, "blob %s: read failed", p);
    hex_digest(&c, got);
    if (strcmp(got, digest) != 0)
        return capsa_err_set(err, EBADMSG, "blob %s: digest mismatch: content hashes to %s", p,
                             got);
    return 0;
}

int capsa_blob_read(const char *digest, size_t cap, char **data, size_t *len, capsa_err *err)
{
    char p[4096], got[CAPSA_DIGEST_MAX];
    _cleanup_close_ int fd = -1;
    _cleanup_free_ char *buf = NULL;
    struct stat st;
    capsa_sha256 c;
    size_t off = 0;

    *data = NULL;
    *len = 0;
    if (capsa_blob_path(digest, p, sizeof(p), err) < 0)
        return -1;
    fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 || fstat(fd, &st) < 0)
        return capsa_err_set(err, errno, "blob %s: %s", p, strerror(errno));
    if (st.st_size < 0 || (uint64_t)st.st_size > cap)
        return capsa_err_set(err, EFBIG, "blob %s: %lld bytes exceeds the %zu-byte cap", p,
                             (long long)st.st_size, cap);
    buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        return capsa_err_set(err, ENOMEM, "blob %s: out of memory", p);
    while (off < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + off, (size_t)st.st_size - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return capsa_err_set(err, EIO, "blob %s: short read", p);
        off += (size_t)r;
    }
    buf[off] = '\0';
    capsa_sha256_init(&c);
    capsa_sha256_update(&c, buf, off);
    hex_digest(&c, got);
    if (strcmp(got, digest) != 0)
        return capsa_err_set(err, EBADMSG, "blob %s: digest mismatch: content hashes to %s", p,
                             got);
    *data = steal_pointer(&buf);
    *len = off;
    return 0;
}

int capsa_blob_remove(const char *digest, capsa_err *err)
{
    char p[4096];

    if (capsa_blob_path(digest, p, sizeof(p), err) < 0)
        return -1;
    if (unlink(p) < 0 && errno != ENOENT)
        return capsa_err_set(err, errno, "remove %s: %s", p, strerror(errno));
    return 0;
}

/* ---- blob feed: readers in other threads follow downloads ------------------------------ */

struct feed_entry {
    int fd;       /* the blob or its partial file (read with pread only); -1 until known */
    int64_t have; /* bytes readable */
    int state;    /* 0 pending or arriving, 1 complete and verified, -1 failed */
    capsa_err err;
};

struct capsa_blob_feed {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stream; /* readers may follow a download before its digest is checked */
    size_t n;
    struct feed_entry *e;
};

int capsa_blob_feed_new(size_t n, bool stream, struct capsa_blob_feed **out, capsa_err *err)
{
    struct capsa_blob_feed *f = calloc(1, sizeof(*f));

    *out = NULL;
    if (!f || !(f->e = calloc(n ? n : 1, sizeof(*f->e)))) {
        free(f);
        return capsa_err_set(err, ENOMEM, "blobs: out of memory");
    }
    f->n = n;
    f->stream = stream;
    for (size_t i = 0; i < n; i++)
        f->e[i].fd = -1;
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    *out = f;
    return 0;
}

void capsa_blob_feed_free(struct capsa_blob_feed *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n; i++)
        if (f->e[i].fd >= 0)
            close(f->e[i].fd);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->cond);
    free(f->e);
    free(f);
}

/* Entry i reads from fd (taken over; ignored when the entry has one) with `have` bytes. */
static void feed_open(struct capsa_blob_feed *f, size_t i, int fd, int64_t have)
{
    if (!f || i >= f->n) {
        if (fd >= 0)
            close(fd);
        return;
    }
    pthread_mutex_lock(&f->lock);
    if (f->e[i].fd < 0)
        f->e[i].fd = fd;
    else if (fd >= 0)
        close(fd);
    f->e[i].have = have;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

static void feed_have(struct capsa_blob_feed *f, size_t i, int64_t have)
{
    if (!f || i >= f->n)
        return;
    pthread_mutex_lock(&f->lock);
    f->e[i].have = have;
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* Entry i is complete (why NULL) or failed. */
static void feed_done(struct capsa_blob_feed *f, size_t i, const capsa_err *why)
{
    if (!f || i >= f->n)
        return;
    pthread_mutex_lock(&f->lock);
    if (f->e[i].state == 0) {
        f->e[i].state = why ? -1 : 1;
        if (why)
            f->e[i].err = *why;
    }
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

/* Entry i is the stored, verified blob descs[i]. */
static void feed_stored(struct capsa_blob_feed *f, size_t i, const struct capsa_descriptor *d)
{
    char p[4096];
    capsa_err e = {0};
    int fd;

    if (!f)
        return;
    if (capsa_blob_path(d->digest, p, sizeof(p), &e) < 0) {
        feed_done(f, i, &e);
        return;
    }
    fd = open(p, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        capsa_err_set(&e, errno, "blob %s: open %s: %s", d->digest, p, strerror(errno));
        feed_done(f, i, &e);
        return;
    }
    feed_open(f, i, fd, d->size);
    feed_done(f, i, NULL);
}

void capsa_blob_feed_close(struct capsa_blob_feed *f, const capsa_err *why)
{
    capsa_err generic = {0};

    if (!f)
        return;
    if (!why) {
        capsa_err_set(&generic, ECANCELED, "blob fetch ended before this blob arrived");
        why = &generic;
    }
    pthread_mutex_lock(&f->lock);
    for (size_t i = 0; i < f->n; i++)
        if (f->e[i].state == 0) {
            f->e[i].state = -1;
            f->e[i].err = *why;
        }
    pthread_cond_broadcast(&f->cond);
    pthread_mutex_unlock(&f->lock);
}

ssize_t capsa_blob_feed_read(struct capsa_blob_feed *f, size_t i, void *buf, size_t len,
                             int64_t off, capsa_err *err)
{
    if (i >= f->n)
        return capsa_err_set(err, EINVAL, "blob feed: no entry %zu", i);
    for (;;) {
        int fd, state;
        int64_t have;

        pthread_mutex_lock(&f->lock);
        while (f->e[i].state == 0 && (!f->stream || f->e[i].fd < 0 || f->e[i].have <= off))
            pthread_cond_wait(&f->cond, &f->lock);
        fd = f->e[i].fd;
        have = f->e[i].have;
        state = f->e[i].state;
        if (state < 0) {
            *err = f->e[i].err;
            pthread_mutex_unlock(&f->lock);
            return -1;
        }
        pthread_mutex_unlock(&f->lock);
        if (off >= have)
            return 0; /* state 1: the end of a verified blob */
        if ((int64_t)len > have - off)
            len = (size_t)(have - off);
        ssize_t r = pread(fd, buf, len, off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return capsa_err_set(err, errno, "blob feed: read: %s", strerror(errno));
        if (r > 0 || state == 1)
            return r;
        /* The download restarted from 0 (the registry ignored a Range): wait for the bytes. */
        pthread_mutex_lock(&f->lock);
        if (f->e[i].state == 0 && f->e[i].have > off)
            f->e[i].have = off;
        pthread_mutex_unlock(&f->lock);
    }
}

/* ---- parallel fetch with progress ----------------------------------------------------- */

struct progress {
    enum capsa_progress_mode mode;
    const struct capsa_descriptor **descs;
    size_t n;
    int64_t *have;
    int64_t last_draw_ms;
    bool drawn;
    /* feeding: the jobs handed to the registry and their descriptor indexes */
    struct capsa_blob_feed *feed;
    const struct capsa_blob_job *jobs;
    const size_t *index;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fmt_bytes(int64_t b, char *out, size_t len)
{
    if (b >= 1 << 30)
        snprintf(out, len, "%.1f GiB", (double)b / (1 << 30));
    else if (b >= 1 << 20)
        snprintf(out, len, "%.1f MiB", (double)b / (1 << 20));
    else if (b >= 1 << 10)
        snprintf(out, len, "%.1f KiB", (double)b / (1 << 10));
    else
        snprintf(out, len, "%lld B", (long long)b);
}

static void draw(struct progress *pg, bool final)
{
    if (pg->mode != CAPSA_PROGRESS_TTY)
        return;
    if (!final && now_ms() - pg->last_draw_ms < 100)
        return;
    pg->last_draw_ms = now_ms();
    if (pg->drawn)
        fprintf(stderr, "\033[%zuA", pg->n);
    for (size_t i = 0; i < pg->n; i++) {
        const struct capsa_descriptor *d = pg->descs[i];
        int64_t total = d->size > 0 ? d->size : 1;
        int pct = (int)(pg->have[i] * 100 / total);
        int fill = pct * 30 / 100;
        char a[32], b[32], bar[31];
        memset(bar, '=', (size_t)fill);
        memset(bar + fill, ' ', (size_t)(30 - fill));
        bar[30] = '\0';
        fmt_bytes(pg->have[i], a, sizeof(a));
        fmt_bytes(d->size, b, sizeof(b));
        fprintf(stderr, "\r\033[K%.19s [%s] %3d%% %s/%s\n", d->digest, bar, pct, a, b);
    }
    pg->drawn = true;
    fflush(stderr);
}

static void on_progress(void *ctx, size_t job, int64_t have, int64_t total)
{
    struct progress *pg = ctx;
    (void)total;
    pg->have[job] = have;
    if (pg->feed) {
        /* The registry calls this after the bytes are written and hashed into jobs[job]. */
        const struct capsa_blob_job *j = &pg->jobs[job];
        feed_have(pg->feed, pg->index[job], have);
        if (have == j->desc->size) {
            capsa_sha256 c = j->hash;
            char got[CAPSA_DIGEST_MAX];
            hex_digest(&c, got);
            if (!strcmp(got, j->desc->digest))
                feed_done(pg->feed, pg->index[job], NULL);
        }
    }
    draw(pg, false);
}

int capsa_blobs_fetch(struct capsa_registry *reg, const struct capsa_descriptor *descs, size_t n,
                      bool verify_existing, enum capsa_progress_mode mode, capsa_err *err)
{
    return capsa_blobs_fetch_feed(reg, descs, n, verify_existing, mode, NULL, err);
}

static int blobs_fetch(struct capsa_registry *reg, const struct capsa_descriptor *descs, size_t n,
                       bool verify_existing, enum capsa_progress_mode mode,
                       struct capsa_blob_feed *feed, capsa_err *err)
{
    _cleanup_free_ size_t *pending = calloc(n ? n : 1, sizeof(size_t));
    _cleanup_free_ size_t *waiting = calloc(n ? n : 1, sizeof(size_t));
    _cleanup_free_ struct capsa_blob_job *jobs = calloc(n ? n : 1, sizeof(*jobs));
    _cleanup_free_ int *locks = calloc(n ? n : 1, sizeof(int));
    _cleanup_free_ const struct capsa_descriptor **jd = calloc(n ? n : 1, sizeof(*jd));
    _cleanup_free_ int64_t *have = calloc(n ? n : 1, sizeof(int64_t));
    _cleanup_free_ char(*parts)[4096] = calloc(n ? n : 1, sizeof(*parts));
    _cleanup_free_ size_t *jidx = calloc(n ? n : 1, sizeof(size_t));
    size_t n_pending = 0;
    int rc = 0;

    if (!pending || !waiting || !jobs || !locks || !jd || !have || !parts || !jidx)
        return capsa_err_set(err, ENOMEM, "blobs: out of memory");
    if (capsa_images_init(err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (capsa_blob_present(descs[i].digest)) {
            capsa_err e = {0};
            if (!verify_existing || capsa_blob_verify(descs[i].digest, descs[i].size, &e) == 0) {
                feed_stored(feed, i, &descs[i]);
                continue;
            }
            log_warn("%s; fetching it again", e.msg);
            capsa_blob_remove(descs[i].digest, NULL);
        }
        pending[n_pending++] = i;
    }

    for (int round = 0; n_pending > 0 && round < 4 && rc == 0; round++) {
        size_t n_jobs = 0, n_wait = 0;

        for (size_t k = 0; k < n_pending; k++) {
            const struct capsa_descriptor *d = &descs[pending[k]];
            int lfd = capsa_images_lock(d->digest + 7, LOCK_EX | LOCK_NB, err);
            if (lfd == -1) {
                rc = -1;
                break;
            }
            if (lfd == -2) {
                waiting[n_wait++] = pending[k];
                if (mode == CAPSA_PROGRESS_LINES)
                    fprintf(stderr, "%s: being fetched by another process, waiting\n", d->digest);
                continue;
            }
            if (capsa_blob_present(d->digest)) {
                close(lfd);
                feed_stored(feed, pending[k], d);
                continue;
            }
            struct capsa_blob_job *j = &jobs[n_jobs];
            memset(j, 0, sizeof(*j));
            j->desc = d;
            jidx[n_jobs] = pending[k];
            jd[n_jobs] = d;
            locks[n_jobs] = lfd;
            if (capsa_images_path(parts[n_jobs], sizeof(parts[0]), err, "tmp/%s.part",
                                  d->digest + 7) < 0) {
                close(lfd);
                rc = -1;
                break;
            }
            j->fd = open(parts[n_jobs], O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
            struct stat st;
            if (j->fd < 0 || fstat(j->fd, &st) < 0) {
                rc = capsa_err_set(err, errno, "blob %s: open %s: %s", d->digest, parts[n_jobs],
                                   strerror(errno));
                if (j->fd >= 0)
                    close(j->fd);
                close(lfd);
                break;
            }
            j->have = st.st_size;
            if (j->have > d->size || hash_fd(j->fd, j->have, &j->hash) < 0) {
                if (ftruncate(j->fd, 0) < 0) {
                    rc = capsa_err_set(err, errno, "blob %s: truncate: %s", d->digest,
                                       strerror(errno));
                    close(j->fd);
                    close(lfd);
                    break;
                }
                j->have = 0;
                capsa_sha256_init(&j->hash);
            }
            have[n_jobs] = j->have;
            if (feed) /* pread only: the shared file offset stays the writer's */
                feed_open(feed, pending[k], fcntl(j->fd, F_DUPFD_CLOEXEC, 0), j->have);
            if (mode == CAPSA_PROGRESS_LINES) {
                char sz[32];
                fmt_bytes(d->size, sz, sizeof(sz));
                if (j->have > 0)
                    fprintf(stderr, "%s: resuming at %lld of %s\n", d->digest, (long long)j->have,
                            sz);
                else
                    fprintf(stderr, "%s: downloading %s\n", d->digest, sz);
            }
            n_jobs++;
        }

        if (rc == 0 && n_jobs > 0) {
            struct progress pg = {.mode = mode, .descs = jd, .n = n_jobs, .have = have};
            /* Jobs whose partial file is already complete need no transfer. */
            size_t n_net = 0;
            _cleanup_free_ struct capsa_blob_job *net = calloc(n_jobs, sizeof(*net));
            _cleanup_free_ size_t *map = calloc(n_jobs, sizeof(size_t));
            if (!net || !map) {
                rc = capsa_err_set(err, ENOMEM, "blobs: out of memory");
            } else {
                for (size_t k = 0; k < n_jobs; k++)
                    if (jobs[k].have < jobs[k].desc->size) {
                        map[n_net] = k;
                        net[n_net++] = jobs[k];
                    }
                capsa_err ferr = {0};
                if (n_net) {
                    struct progress pg2 = pg;
                    _cleanup_free_ const struct capsa_descriptor **nd = calloc(n_net, sizeof(*nd));
                    _cleanup_free_ int64_t *nh = calloc(n_net, sizeof(int64_t));
                    _cleanup_free_ size_t *ni = calloc(n_net, sizeof(size_t));
                    if (nd && nh && ni) {
                        for (size_t k = 0; k < n_net; k++) {
                            nd[k] = net[k].desc;
                            nh[k] = net[k].have;
                            ni[k] = jidx[map[k]];
                        }
                        pg2.descs = nd;
                        pg2.have = nh;
                        pg2.n = n_net;
                        pg2.drawn = false;
                        pg2.feed = feed;
                        pg2.jobs = net;
                        pg2.index = ni;
                        capsa_registry_fetch_blobs(reg, net, n_net, 3, on_progress, &pg2, &ferr);
                        draw(&pg2, true);
                    } else {
                        rc = capsa_err_set(err, ENOMEM, "blobs: out of memory");
                    }
                    for (size_t k = 0; k < n_net; k++) {
                        int fd = jobs[map[k]].fd;
                        jobs[map[k]] = net[k];
                        jobs[map[k]].fd = fd;
                    }
                }
                /* Verify and publish each. */
                for (size_t k = 0; k < n_jobs; k++) {
                    struct capsa_blob_job *j = &jobs[k];
                    const struct capsa_descriptor *d = j->desc;
                    char got[CAPSA_DIGEST_MAX];
                    capsa_err berr = {0};
                    if (j->desc->size > 0 && j->have < j->desc->size && j->rc != 0) {
                        feed_done(feed, jidx[k], &j->err);
                        if (rc == 0) {
                            *err = j->err;
                            rc = -1;
                        }
                        continue; /* partial kept for resuming */
                    }
                    if (j->have != d->size) {
                        unlink(parts[k]);
                        capsa_err_set(&berr, EBADMSG,
                                      "blob %s: truncated: registry sent %lld of %lld bytes",
                                      d->digest, (long long)j->have, (long long)d->size);
                        feed_done(feed, jidx[k], &berr);
                        if (rc == 0) {
                            *err = berr;
                            rc = -1;
                        }
                        continue;
                    }
                    hex_digest(&j->hash, got);
                    if (strcmp(got, d->digest) != 0) {
                        unlink(parts[k]);
                        capsa_err_set(&berr, EBADMSG,
                                      "blob %s: digest mismatch: downloaded content hashes to %s",
                                      d->digest, got);
                        feed_done(feed, jidx[k], &berr);
                        if (rc == 0) {
                            *err = berr;
                            rc = -1;
                        }
                        continue;
                    }
                    /* Readers may go on from the verified partial file while it is published. */
                    feed_have(feed, jidx[k], d->size);
                    feed_done(feed, jidx[k], NULL);
                    capsa_err perr = {0};
                    if (publish(j->fd, parts[k], d->digest, &perr) < 0) {
                        if (rc == 0) {
                            *err = perr;
                            rc = -1;
                        }
                        continue;
                    }
                    if (mode == CAPSA_PROGRESS_LINES)
                        fprintf(stderr, "%s: verified\n", d->digest);
                }
            }
        }
        for (size_t k = 0; k < n_jobs; k++) {
            if (jobs[k].fd >= 0)
                close(jobs[k].fd);
            close(locks[k]);
        }
        /* Wait for blobs other processes are fetching, then re-check them. */
        n_pending = 0;
        for (size_t k = 0; k < n_wait && rc == 0; k++) {
            const struct capsa_descriptor *d = &descs[waiting[k]];
            int lfd = capsa_images_lock(d->digest + 7, LOCK_EX, err);
            if (lfd < 0) {
                rc = -1;
                break;
            }
            close(lfd);
            if (!capsa_blob_present(d->digest))
                pending[n_pending++] = waiting[k];
            else
                feed_stored(feed, waiting[k], d);
        }
    }
    if (rc == 0 && n_pending > 0)
        rc = capsa_err_set(err, EAGAIN, "blobs: %zu blobs still missing after retries", n_pending);
    return rc;
}

int capsa_blobs_fetch_feed(struct capsa_registry *reg, const struct capsa_descriptor *descs,
                           size_t n, bool verify_existing, enum capsa_progress_mode progress,
                           struct capsa_blob_feed *feed, capsa_err *err)
{
    int rc = blobs_fetch(reg, descs, n, verify_existing, progress, feed, err);

    capsa_blob_feed_close(feed, rc < 0 ? err : NULL);
    return rc;
}
