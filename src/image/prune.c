/* prune.c - image store garbage collection (`capsa image prune`) and image matching by
 * reference, digest or digest prefix (`capsa image rm`); see prune.h. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
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
#include "image/blobs.h"
#include "image/image.h"
#include "image/prune.h"

/* ---- keys ----------------------------------------------------------------------------- */

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

static bool is_lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static void set_digest(struct capsa_image_key *k, const char *hex, size_t n)
{
    memcpy(k->digest, "sha256:", 7);
    for (size_t i = 0; i < n; i++)
        k->digest[7 + i] = (char)(hex[i] >= 'A' && hex[i] <= 'F' ? hex[i] - 'A' + 'a' : hex[i]);
    k->digest[7 + n] = '\0';
    k->kind = n == 64 ? CAPSA_IMAGE_KEY_DIGEST : CAPSA_IMAGE_KEY_PREFIX;
}

int capsa_image_key_parse(const char *s, struct capsa_image_key *out, capsa_err *err)
{
    struct capsa_image_ref r;
    size_t n;

    memset(out, 0, sizeof(*out));
    if (!s || !*s)
        return capsa_err_set(err, EINVAL, "image: empty reference");
    n = strlen(s);
    if (!strncmp(s, "sha256:", 7)) {
        const char *h = s + 7;
        size_t hl = n - 7;
        if (hl == 0 || hl > 64 || !is_hex(h, hl))
            return capsa_err_set(err, EINVAL,
                                 "image '%.100s': expected sha256: followed by 12 to 64 hex "
                                 "digits",
                                 s);
        if (hl < CAPSA_DIGEST_PREFIX_MIN)
            return capsa_err_set(err, EINVAL,
                                 "image '%s': a digest prefix needs at least %d hex digits", s,
                                 CAPSA_DIGEST_PREFIX_MIN);
        set_digest(out, h, hl);
        return 0;
    }
    if (n >= CAPSA_DIGEST_PREFIX_MIN && n <= 64 && is_hex(s, n)) {
        set_digest(out, s, n);
        /* a short lowercase hex string is also a valid repository name: remember it */
        if (out->kind == CAPSA_IMAGE_KEY_PREFIX && capsa_image_ref_parse(s, &r, NULL) == 0)
            capsa_image_ref_format(&r, out->ref, sizeof(out->ref));
        return 0;
    }
    if (capsa_image_ref_parse(s, &r, err) < 0)
        return -1;
    if (r.digest[0]) {
        out->kind = CAPSA_IMAGE_KEY_REPO_DIGEST;
        snprintf(out->ref, sizeof(out->ref), "%s/%s", r.registry, r.repository);
        snprintf(out->digest, sizeof(out->digest), "%s", r.digest);
    } else {
        out->kind = CAPSA_IMAGE_KEY_REF;
        capsa_image_ref_format(&r, out->ref, sizeof(out->ref));
    }
    return 0;
}

bool capsa_image_key_match(const struct capsa_image_key *k, const char *reference,
                           const char *manifest_digest)
{
    size_t n;

    if (!reference || !manifest_digest)
        return false;
    switch (k->kind) {
    case CAPSA_IMAGE_KEY_REF:
        return !strcmp(reference, k->ref);
    case CAPSA_IMAGE_KEY_DIGEST:
        return !strcmp(manifest_digest, k->digest);
    case CAPSA_IMAGE_KEY_REPO_DIGEST:
        n = strlen(k->ref);
        return !strcmp(manifest_digest, k->digest) && !strncmp(reference, k->ref, n) &&
               (reference[n] == ':' || reference[n] == '@');
    case CAPSA_IMAGE_KEY_PREFIX:
        return !strncmp(manifest_digest, k->digest, strlen(k->digest));
    }
    return false;
}

int capsa_image_key_select(const struct capsa_image_key *k, const char *what,
                           const struct capsa_store_image *imgs, size_t n, bool *sel,
                           capsa_err *err)
{
    const char *first = NULL;
    bool ambiguous = false;
    int cnt = 0;

    for (size_t i = 0; i < n; i++)
        sel[i] = false;
    if (k->kind == CAPSA_IMAGE_KEY_PREFIX && k->ref[0]) {
        for (size_t i = 0; i < n; i++)
            if (!strcmp(imgs[i].reference, k->ref)) {
                sel[i] = true;
                cnt++;
            }
        if (cnt)
            return cnt;
    }
    for (size_t i = 0; i < n; i++) {
        if (!capsa_image_key_match(k, imgs[i].reference, imgs[i].manifest_digest))
            continue;
        sel[i] = true;
        cnt++;
        if (!first)
            first = imgs[i].manifest_digest;
        else if (strcmp(first, imgs[i].manifest_digest) != 0)
            ambiguous = true;
    }
    if (ambiguous && k->kind == CAPSA_IMAGE_KEY_PREFIX) {
        char list[1024] = "";
        size_t used = 0, shown = 0;
        for (size_t i = 0; i < n && shown < 8; i++) {
            bool dup = false;
            if (!sel[i])
                continue;
            for (size_t j = 0; j < i; j++)
                if (sel[j] && !strcmp(imgs[j].manifest_digest, imgs[i].manifest_digest))
                    dup = true;
            if (dup)
                continue;
            int w = snprintf(list + used, sizeof(list) - used, "%s%s (%s)", shown ? ", " : "",
                             imgs[i].manifest_digest, imgs[i].reference);
            if (w < 0 || (size_t)w >= sizeof(list) - used)
                break;
            used += (size_t)w;
            shown++;
        }
        for (size_t i = 0; i < n; i++)
            sel[i] = false;
        return capsa_err_set(err, EINVAL,
                             "image %s: the digest prefix is ambiguous, it matches %s (give more "
                             "digits)",
                             what, list);
    }
    if (!cnt)
        return capsa_err_set(err, ENOENT,
                             "image %s: not found (no pulled image has that reference, digest or "
                             "digest prefix)",
                             what);
    return cnt;
}

bool capsa_image_pinned_digest(const char *ref, char out[CAPSA_DIGEST_MAX])
{
    const char *at = ref ? strrchr(ref, '@') : NULL;

    if (!at || !capsa_digest_valid(at + 1))
        return false;
    snprintf(out, CAPSA_DIGEST_MAX, "%s", at + 1);
    return true;
}

bool capsa_image_user_uses(const struct capsa_store_image_user *u, const char *reference,
                           const char *manifest_digest)
{
    char d[CAPSA_DIGEST_MAX];

    if (u->manifest_digest && !strcmp(u->manifest_digest, manifest_digest))
        return true;
    if (u->pinned_ref && capsa_image_pinned_digest(u->pinned_ref, d) && !strcmp(d, manifest_digest))
        return true;
    if (u->image_ref && !strcmp(u->image_ref, reference))
        return true;
    return u->pinned_ref && !strcmp(u->pinned_ref, reference);
}

/* ---- rm ------------------------------------------------------------------------------- */

struct image_set {
    struct capsa_store_image *imgs;
    size_t n;
    struct capsa_store_image_user *users;
    size_t n_users;
    bool *sel;
};

static void image_set_clear(struct image_set *s)
{
    capsa_store_images_free(s->imgs, s->n);
    capsa_store_image_users_free(s->users, s->n_users);
    free(s->sel);
    memset(s, 0, sizeof(*s));
}

static int image_set_load(struct capsa_store *store, struct image_set *s, capsa_err *err)
{
    memset(s, 0, sizeof(*s));
    if (capsa_store_image_list(store, &s->imgs, &s->n, err) < 0 ||
        capsa_store_image_user_list(store, &s->users, &s->n_users, err) < 0)
        return -1;
    s->sel = calloc(s->n ? s->n : 1, sizeof(*s->sel));
    if (!s->sel)
        return capsa_err_set(err, ENOMEM, "image: out of memory");
    return 0;
}

/* Append "sandbox NAME" / "snapshot NAME" to buf once. */
static void add_user(char *buf, size_t len, const struct capsa_store_image_user *u)
{
    char item[CAPSA_NAME_MAX + 16];
    size_t used = strlen(buf);

    snprintf(item, sizeof(item), "%s %s", u->snapshot ? "snapshot" : "sandbox", u->name);
    for (const char *p = buf; (p = strstr(p, item)); p += strlen(item))
        if ((p == buf || p[-1] == ' ') && (p[strlen(item)] == ',' || !p[strlen(item)]))
            return;
    if (used + strlen(item) + 3 >= len) {
        if (used + 5 < len && !strstr(buf, ", ..."))
            snprintf(buf + used, len - used, ", ...");
        return;
    }
    snprintf(buf + used, len - used, "%s%s", used ? ", " : "", item);
}

/* Who blocks removing the selected references: a user of a manifest that would lose its
 * last reference, or a user made from a removed reference that pins no digest. */
static void blocking_users(const struct image_set *s, char *buf, size_t len)
{
    buf[0] = '\0';
    for (size_t i = 0; i < s->n; i++) {
        const char *md = s->imgs[i].manifest_digest;
        bool last = true;
        if (!s->sel[i])
            continue;
        for (size_t j = 0; j < s->n; j++)
            if (!s->sel[j] && !strcmp(s->imgs[j].manifest_digest, md))
                last = false;
        for (size_t u = 0; u < s->n_users; u++) {
            const struct capsa_store_image_user *us = &s->users[u];
            char d[CAPSA_DIGEST_MAX];
            bool pins = us->manifest_digest || capsa_image_pinned_digest(us->pinned_ref, d);
            bool uses = false;
            if (last) {
                for (size_t j = 0; j < s->n && !uses; j++)
                    if (!strcmp(s->imgs[j].manifest_digest, md) &&
                        capsa_image_user_uses(us, s->imgs[j].reference, md))
                        uses = true;
            } else if (!pins && us->image_ref && !strcmp(us->image_ref, s->imgs[i].reference)) {
                uses = true;
            }
            if (uses)
                add_user(buf, len, us);
        }
    }
}

static int strv_push(char ***v, size_t *n, const char *s)
{
    char **nv = realloc(*v, (*n + 2) * sizeof(**v));
    if (!nv)
        return -1;
    *v = nv;
    if (!(nv[*n] = strdup(s)))
        return -1;
    nv[++*n] = NULL;
    return 0;
}

int capsa_image_rm(const char *key, bool force, char ***removed, capsa_err *err)
{
    _cleanup_(capsa_store_closep) struct capsa_store *store = NULL;
    _cleanup_strv_ char **done = NULL;
    struct image_set s;
    struct capsa_image_key k;
    char users[1024];
    size_t n_done = 0;
    int rc = -1;

    if (removed)
        *removed = NULL;
    if (capsa_image_key_parse(key, &k, err) < 0)
        return -1;
    if (capsa_store_open(NULL, &store, err) < 0)
        return -1;
    if (image_set_load(store, &s, err) < 0)
        goto out;
    if (capsa_image_key_select(&k, key, s.imgs, s.n, s.sel, err) < 0)
        goto out;
    if (!force) {
        blocking_users(&s, users, sizeof(users));
        if (users[0]) {
            capsa_err_set(err, EBUSY, "image %s: in use by %s (remove %s first, or use -f)", key,
                          users, strchr(users, ',') ? "them" : "it");
            goto out;
        }
    }
    capsa_store_close(steal_pointer(&store));
    for (size_t i = 0; i < s.n; i++) {
        if (!s.sel[i])
            continue;
        if (capsa_image_remove(s.imgs[i].reference, err) < 0) {
            capsa_err_prefix(err, "image %s", key);
            goto out;
        }
        if (strv_push(&done, &n_done, s.imgs[i].reference) < 0) {
            capsa_err_set(err, ENOMEM, "image rm: out of memory");
            goto out;
        }
    }
    rc = 0;
out:
    image_set_clear(&s);
    if (removed && done)
        *removed = steal_pointer(&done);
    return rc;
}

/* ---- prune: selection and names ------------------------------------------------------- */

static bool has_tag(const char *reference)
{
    struct capsa_image_ref r;

    /* an unparsable stored reference counts as tagged: kept unless --all */
    if (capsa_image_ref_parse(reference, &r, NULL) < 0)
        return true;
    return r.tag[0] != '\0';
}

void capsa_image_prune_select(const struct capsa_store_image *imgs, size_t n,
                              const struct capsa_store_image_user *users, size_t n_users, bool all,
                              bool *drop)
{
    for (size_t i = 0; i < n; i++) {
        const char *md = imgs[i].manifest_digest;
        bool used = false, tagged = false;
        for (size_t j = 0; j < n; j++) {
            if (strcmp(imgs[j].manifest_digest, md) != 0)
                continue;
            if (has_tag(imgs[j].reference))
                tagged = true;
            for (size_t u = 0; u < n_users && !used; u++)
                if (capsa_image_user_uses(&users[u], imgs[j].reference, md))
                    used = true;
        }
        drop[i] = !used && (all || !tagged);
    }
}

static const char *const kind_names[] = {
    [CAPSA_PRUNE_BLOB] = "blob", [CAPSA_PRUNE_DISK] = "disk", [CAPSA_PRUNE_PARTIAL] = "partial",
    [CAPSA_PRUNE_TMP] = "tmp",   [CAPSA_PRUNE_LOCK] = "lock",
};

const char *capsa_prune_kind_name(enum capsa_prune_kind k)
{
    return (unsigned)k < ARRAY_SIZE(kind_names) ? kind_names[k] : NULL;
}

/* name = <64 hex><rest>: copies the hex, returns rest (NULL when name does not start so). */
static const char *hex_head(const char *name, char hex[65])
{
    if (strlen(name) < 64 || !is_lower_hex(name, 64))
        return NULL;
    memcpy(hex, name, 64);
    hex[64] = '\0';
    return name + 64;
}

/* "<digits>" -> pid, or 0. */
static long parse_pid(const char *s, size_t n)
{
    long v = 0;

    if (n == 0 || n > 9)
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

int capsa_prune_classify(const char *area, const char *name, char hex[65], long *pid)
{
    const char *rest;
    size_t n = strlen(name);

    hex[0] = '\0';
    *pid = 0;
    if (!strcmp(area, "blobs/sha256") || !strcmp(area, "disks")) {
        if (n != 64 || !hex_head(name, hex)) {
            hex[0] = '\0';
            return -1;
        }
        return !strcmp(area, "disks") ? CAPSA_PRUNE_DISK : CAPSA_PRUNE_BLOB;
    }
    if (!strcmp(area, "locks")) {
        if (n <= 5 || n - 5 > 64 || strcmp(name + n - 5, ".lock") != 0 || !strcmp(name, "gc.lock"))
            return -1;
        for (size_t i = 0; i < n - 5; i++)
            if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'z')))
                return -1;
        memcpy(hex, name, n - 5);
        hex[n - 5] = '\0';
        return CAPSA_PRUNE_LOCK;
    }
    if (strcmp(area, "tmp") != 0)
        return -1;
    if (!strncmp(name, "load.", 5)) { /* load.<pid>.XXXXXX (archive.c) */
        const char *dot = strchr(name + 5, '.');
        if (!dot || !(*pid = parse_pid(name + 5, (size_t)(dot - name - 5))) || !dot[1])
            return *pid = 0, -1;
        return CAPSA_PRUNE_TMP;
    }
    rest = hex_head(name, hex);
    if (!rest) {
        hex[0] = '\0';
        return -1;
    }
    if (!strcmp(rest, ".part"))
        return CAPSA_PRUNE_PARTIAL;
    if (!strncmp(rest, ".put.", 5) && rest[5])
        return CAPSA_PRUNE_TMP;
    static const char *const with_pid[] = {".tree.", ".build.", ".prune."};
    for (size_t i = 0; i < ARRAY_SIZE(with_pid); i++) {
        size_t l = strlen(with_pid[i]);
        if (!strncmp(rest, with_pid[i], l) && (*pid = parse_pid(rest + l, strlen(rest + l))))
            return CAPSA_PRUNE_TMP;
    }
    hex[0] = '\0';
    return -1;
}

/* ---- prune: the walk ------------------------------------------------------------------ */

void capsa_image_prune_report_clear(struct capsa_image_prune_report *r)
{
    struct capsa_prune_entry *lists[] = {r->images, r->files, r->kept};
    size_t ns[] = {r->n_images, r->n_files, r->n_kept};

    for (size_t l = 0; l < ARRAY_SIZE(lists); l++) {
        for (size_t i = 0; lists[l] && i < ns[l]; i++) {
            free(lists[l][i].name);
            free(lists[l][i].digest);
        }
        free(lists[l]);
    }
    memset(r, 0, sizeof(*r));
}

static int entry_push(struct capsa_prune_entry **v, size_t *n, enum capsa_prune_kind kind,
                      const char *name, const char *digest, int64_t bytes, capsa_err *err)
{
    struct capsa_prune_entry *nv = realloc(*v, (*n + 1) * sizeof(**v));

    if (!nv)
        return capsa_err_set(err, ENOMEM, "prune: out of memory");
    *v = nv;
    nv[*n] = (struct capsa_prune_entry){.kind = kind, .bytes = bytes};
    nv[*n].name = strdup(name);
    nv[*n].digest = digest ? strdup(digest) : NULL;
    if (!nv[*n].name || (digest && !nv[*n].digest)) {
        free(nv[*n].name);
        free(nv[*n].digest);
        return capsa_err_set(err, ENOMEM, "prune: out of memory");
    }
    (*n)++;
    return 0;
}

static _Thread_local int64_t du_total;

static int du_cb(const char *p, const struct stat *st, int flag, struct FTW *f)
{
    (void)p;
    (void)flag;
    (void)f;
    du_total += (int64_t)st->st_blocks * 512;
    return 0;
}

/* Bytes allocated to path (recursively, never following symlinks). */
static int64_t du_bytes(const char *path)
{
    struct stat st;

    if (lstat(path, &st) < 0)
        return 0;
    if (!S_ISDIR(st.st_mode))
        return (int64_t)st.st_blocks * 512;
    du_total = 0;
    if (nftw(path, du_cb, 32, FTW_PHYS | FTW_MOUNT) < 0)
        log_debug("du %s: %s", path, strerror(errno));
    return du_total;
}

/* Take images/locks/<key>.lock exclusively without blocking and without creating it.
 * Returns an fd (close to release), -1 when the file does not exist (nobody can hold it),
 * -2 when another process holds it. */
static int try_lock(const char *key)
{
    char p[4096];
    int fd;

    if (capsa_images_path(p, sizeof(p), NULL, "locks/%s.lock", key) < 0)
        return -2;
    fd = open(p, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return errno == ENOENT ? -1 : -2;
    while (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EINTR)
            continue;
        close(fd);
        return -2;
    }
    return fd;
}

static bool pid_alive(long pid)
{
    return pid > 0 && pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM);
}

static bool in_sorted(char *const *v, const char *s)
{
    size_t lo = 0, hi = 0;

    while (v && v[hi])
        hi++;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(v[mid], s);
        if (!c)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

struct walk {
    char *const *live_blobs;
    char *const *live_manifests;
    struct capsa_image_prune_report *rep;
};

static int keep(struct walk *w, const char *rel, const char *why, capsa_err *err)
{
    log_info("prune: keeping %s (%s)", rel, why);
    return entry_push(&w->rep->kept, &w->rep->n_kept, CAPSA_PRUNE_TMP, rel, NULL, 0, err);
}

/* Remove path (a disk directory is first renamed into tmp/ so a half-removed disk never
 * sits under disks/), and account for it. */
static int remove_entry(struct walk *w, enum capsa_prune_kind kind, const char *path,
                        const char *rel, const char *hex, capsa_err *err)
{
    int64_t bytes = du_bytes(path);
    char moved[4096 + 64];
    capsa_err e = {0};
    const char *target = path;

    if (kind == CAPSA_PRUNE_DISK) {
        if (capsa_images_path(moved, sizeof(moved), &e, "tmp/%s.prune.%d", hex, (int)getpid()) <
                0 ||
            rename(path, moved) < 0) {
            log_warn("prune: %s: %s", rel, e.msg[0] ? e.msg : strerror(errno));
            return 0;
        }
        target = moved;
    }
    if (capsa_rm_rf(target, &e) < 0) {
        log_warn("prune: %s", e.msg);
        return 0;
    }
    w->rep->n_by_kind[kind]++;
    w->rep->bytes_reclaimed += bytes;
    return entry_push(&w->rep->files, &w->rep->n_files, kind, rel, NULL, bytes, err);
}

static int walk_area(struct walk *w, const char *area, capsa_err *err)
{
    char dir[4096];
    _cleanup_dir_ DIR *d = NULL;
    struct dirent *de;

    if (capsa_images_path(dir, sizeof(dir), err, "%s", area) < 0)
        return -1;
    d = opendir(dir);
    if (!d) {
        if (errno == ENOENT)
            return 0;
        return capsa_err_set(err, errno, "prune: open %s: %s", dir, strerror(errno));
    }
    while ((de = readdir(d))) {
        char hex[65], path[4096 + 512], rel[512], digest[CAPSA_DIGEST_MAX], why[64];
        _cleanup_close_ int lk = -1;
        long pid;
        int kind;

        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        kind = capsa_prune_classify(area, de->d_name, hex, &pid);
        snprintf(rel, sizeof(rel), "%s/%.400s", area, de->d_name);
        if (kind < 0 || kind == CAPSA_PRUNE_LOCK) {
            if (kind < 0)
                log_debug("prune: leaving %s alone (not a name capsa creates)", rel);
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        snprintf(digest, sizeof(digest), "sha256:%s", hex);
        if (kind == CAPSA_PRUNE_BLOB && in_sorted(w->live_blobs, digest))
            continue;
        if (kind == CAPSA_PRUNE_DISK && in_sorted(w->live_manifests, digest))
            continue;
        if (pid_alive(pid)) {
            snprintf(why, sizeof(why), "process %ld is alive", pid);
            if (keep(w, rel, why, err) < 0)
                return -1;
            continue;
        }
        if (hex[0] && kind != CAPSA_PRUNE_TMP) {
            lk = try_lock(hex);
            if (lk == -2) {
                if (keep(w, rel, "its lock is held", err) < 0)
                    return -1;
                continue;
            }
        }
        if (remove_entry(w, (enum capsa_prune_kind)kind, path, rel, hex, err) < 0)
            return -1;
    }
    return 0;
}

/* Delete every lock file nobody holds (gc.lock never: we hold it). The unlink happens while
 * we hold the flock; every taker of a per-digest lock holds gc.lock shared first, so nobody
 * can be between open() and flock() of the file we unlink. */
static int walk_locks(struct walk *w, capsa_err *err)
{
    char dir[4096];
    _cleanup_dir_ DIR *d = NULL;
    struct dirent *de;

    if (capsa_images_path(dir, sizeof(dir), err, "locks") < 0)
        return -1;
    d = opendir(dir);
    if (!d)
        return errno == ENOENT
                   ? 0
                   : capsa_err_set(err, errno, "prune: open %s: %s", dir, strerror(errno));
    while ((de = readdir(d))) {
        char key[65], path[4096 + 512], rel[512];
        _cleanup_close_ int fd = -1;
        struct stat st;
        long pid;

        if (capsa_prune_classify("locks", de->d_name, key, &pid) != CAPSA_PRUNE_LOCK)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        snprintf(rel, sizeof(rel), "locks/%s", de->d_name);
        if (lstat(path, &st) < 0)
            continue;
        if (S_ISREG(st.st_mode)) {
            fd = try_lock(key);
            if (fd == -1)
                continue; /* gone meanwhile */
            if (fd == -2) {
                if (keep(w, rel, "held by another process", err) < 0)
                    return -1;
                continue;
            }
        }
        if (unlink(path) < 0) {
            if (errno != ENOENT)
                log_warn("prune: remove %s: %s", path, strerror(errno));
            continue;
        }
        w->rep->n_by_kind[CAPSA_PRUNE_LOCK]++;
        w->rep->bytes_reclaimed += (int64_t)st.st_blocks * 512;
        if (entry_push(&w->rep->files, &w->rep->n_files, CAPSA_PRUNE_LOCK, rel, NULL,
                       (int64_t)st.st_blocks * 512, err) < 0)
            return -1;
    }
    return 0;
}

/* The database half: decide, delete rows, read what stays; one transaction. */
static int prune_rows(struct capsa_store *store, bool all, struct capsa_image_prune_report *rep,
                      char ***live_blobs, char ***live_manifests, capsa_err *err)
{
    struct image_set s;
    size_t before = 0, after = 0;
    int rc = -1;

    if (capsa_store_tx_begin(store, err) < 0)
        return -1;
    if (image_set_load(store, &s, err) < 0 ||
        capsa_store_image_live_digests(store, live_blobs, live_manifests, err) < 0)
        goto out;
    while ((*live_manifests)[before])
        before++;
    capsa_strvfreep(live_blobs);
    capsa_strvfreep(live_manifests);
    *live_blobs = *live_manifests = NULL;
    capsa_image_prune_select(s.imgs, s.n, s.users, s.n_users, all, s.sel);
    for (size_t i = 0; i < s.n; i++) {
        if (!s.sel[i])
            continue;
        if (capsa_store_image_delete(store, s.imgs[i].reference, err) < 0 ||
            entry_push(&rep->images, &rep->n_images, CAPSA_PRUNE_DISK, s.imgs[i].reference,
                       s.imgs[i].manifest_digest, 0, err) < 0)
            goto out;
    }
    if (capsa_store_image_gc(store, &rep->manifests_removed, &rep->layers_removed, err) < 0 ||
        capsa_store_image_live_digests(store, live_blobs, live_manifests, err) < 0)
        goto out;
    /* image_delete already drops a manifest its last reference took along */
    while ((*live_manifests)[after])
        after++;
    rep->manifests_removed = before > after ? before - after : 0;
    rc = capsa_store_tx_commit(store, err);
out:
    if (rc < 0) {
        capsa_store_tx_rollback(store);
        capsa_strvfreep(live_blobs);
        capsa_strvfreep(live_manifests);
        *live_blobs = *live_manifests = NULL;
        /* nothing was deleted: the report must not say otherwise */
        capsa_image_prune_report_clear(rep);
    }
    image_set_clear(&s);
    return rc;
}

int capsa_image_prune(const struct capsa_image_prune_opts *opts,
                      struct capsa_image_prune_report *rep, capsa_err *err)
{
    static const struct capsa_image_prune_opts defaults = {0};
    _cleanup_(capsa_store_closep) struct capsa_store *store = NULL;
    _cleanup_strv_ char **live_blobs = NULL;
    _cleanup_strv_ char **live_manifests = NULL;
    _cleanup_close_ int gc = -1;
    struct walk w;

    memset(rep, 0, sizeof(*rep));
    if (!opts)
        opts = &defaults;
    if (capsa_images_init(err) < 0)
        return -1;
    /* exclusive: no pull or load is running while we decide and delete */
    gc = capsa_images_lock("gc", LOCK_EX | LOCK_NB, err);
    if (gc == -2) {
        if (!opts->quiet)
            fprintf(stderr, "capsa: waiting for the pulls and loads in progress to finish\n");
        gc = capsa_images_lock("gc", LOCK_EX, err);
    }
    if (gc < 0)
        return -1;
    if (capsa_store_open(NULL, &store, err) < 0)
        return -1;
    if (prune_rows(store, opts->all, rep, &live_blobs, &live_manifests, err) < 0)
        return capsa_err_prefix(err, "image prune");
    capsa_store_close(steal_pointer(&store));

    w = (struct walk){.live_blobs = live_blobs, .live_manifests = live_manifests, .rep = rep};
    if (walk_area(&w, "tmp", err) < 0 || walk_area(&w, "disks", err) < 0 ||
        walk_area(&w, "blobs/sha256", err) < 0 || walk_locks(&w, err) < 0)
        return capsa_err_prefix(err, "image prune");
    return 0;
}
