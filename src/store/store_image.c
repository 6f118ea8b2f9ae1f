/* store_image.c - image references, manifests, their ordered layers, and layer blobs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* ---- layers -------------------------------------------------------------------------- */

static const char *const layer_states[] = {
    [CAPSA_LAYER_PENDING] = "pending",
    [CAPSA_LAYER_READY] = "ready",
    [CAPSA_LAYER_FAILED] = "failed",
};

const char *capsa_layer_state_name(enum capsa_layer_state s)
{
    if ((unsigned)s >= ARRAY_SIZE(layer_states))
        return NULL;
    return layer_states[s];
}

int capsa_layer_state_parse(const char *name)
{
    if (!name)
        return -1;
    for (size_t i = 0; i < ARRAY_SIZE(layer_states); i++)
        if (strcmp(name, layer_states[i]) == 0)
            return (int)i;
    return -1;
}

void capsa_store_layer_clear(struct capsa_store_layer *l)
{
    if (!l)
        return;
    free(l->digest);
    free(l->diff_id);
    free(l->media_type);
    free(l->path);
    memset(l, 0, sizeof(*l));
}

void capsa_store_layers_free(struct capsa_store_layer *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        capsa_store_layer_clear(&v[i]);
    free(v);
}

static int check_path(const char *what, const char *path, capsa_err *err)
{
    if (path && (path[0] != '/' || strlen(path) >= 4096))
        return capsa_err_set(err, EINVAL, "%s '%.200s': must be an absolute path", what, path);
    return 0;
}

static int check_text(const char *what, const char *s, size_t max, capsa_err *err)
{
    if (!s)
        return 0;
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return capsa_err_set(err, EINVAL, "%s: must be 1..%zu bytes", what, max);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
            return capsa_err_set(err, EINVAL, "%s '%.200s': whitespace or control byte at %zu",
                                 what, s, i);
    return 0;
}

int capsa_store_layer_put(struct capsa_store *store, const struct capsa_store_layer *in,
                          capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int64_t now = capsa_store_now_ms();
    int rc;

    if (!in)
        return capsa_err_set(err, EINVAL, "layer put: no input");
    if (store_check_digest("layer digest", in->digest, err) < 0)
        return -1;
    if ((in->diff_id && store_check_digest("layer diff_id", in->diff_id, err) < 0) ||
        check_text("layer media type", in->media_type, 256, err) < 0 ||
        check_path("layer path", in->path, err) < 0)
        return capsa_err_prefix(err, "layer %s", in->digest);
    if (in->size < 0 || !capsa_layer_state_name(in->state))
        return capsa_err_set(err, EINVAL, "layer %s: negative size or unknown state", in->digest);

    if (store_write_begin(store, err) < 0)
        return -1;
    rc = store_prepare(
        store,
        "INSERT INTO layers (digest, diff_id, media_type, size, path, state, created_at, "
        "last_used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) "
        "ON CONFLICT (digest) DO UPDATE SET "
        "diff_id = coalesce(excluded.diff_id, diff_id), "
        "media_type = coalesce(excluded.media_type, media_type), "
        "size = CASE WHEN excluded.size > 0 THEN excluded.size ELSE size END, "
        "path = coalesce(excluded.path, path), "
        "state = CASE WHEN state = 'ready' AND excluded.state = 'pending' THEN 'ready' "
        "  ELSE excluded.state END, "
        "last_used_at = excluded.last_used_at",
        &st, err);
    if (rc == 0) {
        store_bind_text(st, 1, in->digest);
        store_bind_text(st, 2, in->diff_id);
        store_bind_text(st, 3, in->media_type);
        sqlite3_bind_int64(st, 4, in->size);
        store_bind_text(st, 5, in->path);
        store_bind_text(st, 6, layer_states[in->state]);
        sqlite3_bind_int64(st, 7, now);
        rc = store_step_done(store, st, "put layer", NULL, err);
    }
    sqlite3_finalize(steal_pointer(&st));
    return store_write_end(store, rc, err);
}

#define LAYER_COLS "digest, diff_id, media_type, size, path, state, created_at, last_used_at"

static int layer_from_row(sqlite3_stmt *st, struct capsa_store_layer *l, capsa_err *err)
{
    bool oom = false;
    int state;

    memset(l, 0, sizeof(*l));
    l->digest = store_col_strdup(st, 0, &oom);
    l->diff_id = store_col_strdup(st, 1, &oom);
    l->media_type = store_col_strdup(st, 2, &oom);
    l->size = sqlite3_column_int64(st, 3);
    l->path = store_col_strdup(st, 4, &oom);
    state = capsa_layer_state_parse((const char *)sqlite3_column_text(st, 5));
    l->created_at = sqlite3_column_int64(st, 6);
    l->last_used_at = sqlite3_column_int64(st, 7);
    if (oom || !l->digest) {
        capsa_store_layer_clear(l);
        return capsa_err_set(err, ENOMEM, "store: out of memory reading a layer");
    }
    if (state < 0) {
        capsa_err_set(err, EIO, "layer %s: unknown state in database", l->digest);
        capsa_store_layer_clear(l);
        return -1;
    }
    l->state = (enum capsa_layer_state)state;
    return 0;
}

int capsa_store_layer_get(struct capsa_store *store, const char *digest,
                          struct capsa_store_layer *out, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!digest)
        return capsa_err_set(err, EINVAL, "layer get: no digest");
    if (store_prepare(store, "SELECT " LAYER_COLS " FROM layers WHERE digest = ?1", &st, err) < 0)
        return -1;
    store_bind_text(st, 1, digest);
    rc = store_step_row(store, st, "read layer", err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return capsa_err_set(err, ENOENT, "layer %s: not found", digest);
    return layer_from_row(st, out, err);
}

int capsa_store_layer_set_state(struct capsa_store *store, const char *digest,
                                enum capsa_layer_state state, const char *path, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int changes = 0, rc;

    if (!digest || !capsa_layer_state_name(state))
        return capsa_err_set(err, EINVAL, "layer set state: missing digest or unknown state");
    if (check_path("layer path", path, err) < 0)
        return capsa_err_prefix(err, "layer %s", digest);
    if (store_write_begin(store, err) < 0)
        return -1;
    rc = store_prepare(store,
                       "UPDATE layers SET state = ?2, path = coalesce(?3, path), "
                       "last_used_at = ?4 WHERE digest = ?1",
                       &st, err);
    if (rc == 0) {
        store_bind_text(st, 1, digest);
        store_bind_text(st, 2, layer_states[state]);
        store_bind_text(st, 3, path);
        sqlite3_bind_int64(st, 4, capsa_store_now_ms());
        rc = store_step_done(store, st, "set layer state", &changes, err);
        if (rc == 0 && changes == 0)
            rc = capsa_err_set(err, ENOENT, "layer %s: not found", digest);
    }
    sqlite3_finalize(steal_pointer(&st));
    return store_write_end(store, rc, err);
}

int capsa_store_layer_list_orphans(struct capsa_store *store, struct capsa_store_layer **out,
                                   size_t *n, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct capsa_store_layer *arr = NULL;
    size_t cap = 0, cnt = 0;
    int rc;

    *out = NULL;
    *n = 0;
    if (store_prepare(store,
                      "SELECT " LAYER_COLS " FROM layers l WHERE NOT EXISTS (SELECT 1 FROM "
                      "image_layers il WHERE il.layer_digest = l.digest) ORDER BY digest",
                      &st, err) < 0)
        return -1;
    while ((rc = store_step_row(store, st, "list orphan layers", err)) > 0) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct capsa_store_layer *na = realloc(arr, ncap * sizeof(*arr));
            if (!na) {
                rc = capsa_err_set(err, ENOMEM, "layer list: out of memory");
                break;
            }
            arr = na;
            cap = ncap;
        }
        if ((rc = layer_from_row(st, &arr[cnt], err)) < 0)
            break;
        cnt++;
    }
    if (rc < 0) {
        capsa_store_layers_free(arr, cnt);
        return -1;
    }
    *out = cnt ? arr : NULL;
    if (!cnt)
        free(arr);
    *n = cnt;
    return 0;
}

static int do_layer_delete(struct capsa_store *store, const char *digest, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *use = NULL;
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int changes = 0, rc;

    if (store_prepare(store, "SELECT manifest_digest FROM image_layers WHERE layer_digest = ?1",
                      &use, err) < 0)
        return -1;
    store_bind_text(use, 1, digest);
    rc = store_step_row(store, use, "check layer use", err);
    if (rc < 0)
        return -1;
    if (rc > 0)
        return capsa_err_set(err, EBUSY, "layer %s: still used by manifest %s", digest,
                             (const char *)sqlite3_column_text(use, 0));
    if (store_prepare(store, "DELETE FROM layers WHERE digest = ?1", &st, err) < 0)
        return -1;
    store_bind_text(st, 1, digest);
    if (store_step_done(store, st, "delete layer", &changes, err) < 0)
        return -1;
    if (!changes)
        return capsa_err_set(err, ENOENT, "layer %s: not found", digest);
    return 0;
}

int capsa_store_layer_delete(struct capsa_store *store, const char *digest, capsa_err *err)
{
    if (!digest)
        return capsa_err_set(err, EINVAL, "layer delete: no digest");
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_layer_delete(store, digest, err), err);
}

/* ---- images -------------------------------------------------------------------------- */

void capsa_store_image_clear(struct capsa_store_image *img)
{
    if (!img)
        return;
    free(img->reference);
    free(img->manifest_digest);
    free(img->media_type);
    free(img->config_digest);
    free(img->config_json);
    if (img->layer_digests)
        for (size_t i = 0; i < img->n_layers; i++)
            free(img->layer_digests[i]);
    free(img->layer_digests);
    memset(img, 0, sizeof(*img));
}

void capsa_store_images_free(struct capsa_store_image *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        capsa_store_image_clear(&v[i]);
    free(v);
}

static int row_exists(struct capsa_store *store, const char *sql, const char *key, bool *found,
                      capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc;

    if (store_prepare(store, sql, &st, err) < 0)
        return -1;
    store_bind_text(st, 1, key);
    rc = store_step_row(store, st, "lookup", err);
    if (rc < 0)
        return -1;
    *found = rc > 0;
    return 0;
}

/* Drop a manifest that no image reference and no snapshot uses any more. */
int store_gc_manifest(struct capsa_store *store, const char *digest, bool keep_pinned,
                      capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;

    /* keep_pinned: a manifest a sandbox pinned at create stays (a tag moved away from it must
     * not take the image a sandbox boots from); an explicit `image rm` passes false */
    if (store_prepare(store,
                      "DELETE FROM manifests WHERE digest = ?1 "
                      "AND NOT EXISTS (SELECT 1 FROM images WHERE manifest_digest = ?1) "
                      "AND NOT EXISTS (SELECT 1 FROM snapshots WHERE image_manifest_digest = ?1) "
                      "AND (?2 = 0 OR NOT EXISTS (SELECT 1 FROM sandboxes b WHERE "
                      "json_extract(b.config, '$.image.Oci.reference') LIKE '%@' || ?1))",
                      &st, err) < 0)
        return -1;
    store_bind_text(st, 1, digest);
    sqlite3_bind_int(st, 2, keep_pinned ? 1 : 0);
    return store_step_done(store, st, "drop unused manifest", NULL, err);
}

static int do_image_put(struct capsa_store *store, const struct capsa_store_image_put *in,
                        capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_stmt_ sqlite3_stmt *old = NULL;
    _cleanup_free_ char *old_digest = NULL;
    int64_t now = capsa_store_now_ms();
    bool found;
    int rc;

    if (row_exists(store, "SELECT 1 FROM manifests WHERE digest = ?1", in->manifest_digest, &found,
                   err) < 0)
        return -1;
    if (!found) {
        for (size_t i = 0; i < in->n_layers; i++) {
            bool have;
            if (row_exists(store, "SELECT 1 FROM layers WHERE digest = ?1", in->layer_digests[i],
                           &have, err) < 0)
                return -1;
            if (!have)
                return capsa_err_set(err, ENOENT,
                                     "image %s: layers[%zu] %s: not recorded (put the layer "
                                     "first)",
                                     in->reference, i, in->layer_digests[i]);
        }
        if (store_prepare(store,
                          "INSERT INTO manifests (digest, media_type, manifest, config_digest, "
                          "config, size, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                          &st, err) < 0)
            return -1;
        store_bind_text(st, 1, in->manifest_digest);
        store_bind_text(st, 2, in->media_type);
        store_bind_text(st, 3, in->manifest_json);
        store_bind_text(st, 4, in->config_digest);
        store_bind_text(st, 5, in->config_json);
        sqlite3_bind_int64(st, 6, in->size);
        sqlite3_bind_int64(st, 7, now);
        if (store_step_done(store, st, "insert manifest", NULL, err) < 0)
            return -1;
        sqlite3_finalize(steal_pointer(&st));
        if (store_prepare(store,
                          "INSERT INTO image_layers (manifest_digest, position, layer_digest) "
                          "VALUES (?1, ?2, ?3)",
                          &st, err) < 0)
            return -1;
        for (size_t i = 0; i < in->n_layers; i++) {
            sqlite3_reset(st);
            store_bind_text(st, 1, in->manifest_digest);
            sqlite3_bind_int64(st, 2, (int64_t)i);
            store_bind_text(st, 3, in->layer_digests[i]);
            if (store_step_done(store, st, "insert image layer", NULL, err) < 0)
                return -1;
        }
        sqlite3_finalize(steal_pointer(&st));
    }

    if (store_prepare(store, "SELECT manifest_digest FROM images WHERE reference = ?1", &old, err) <
        0)
        return -1;
    store_bind_text(old, 1, in->reference);
    rc = store_step_row(store, old, "look up image", err);
    if (rc < 0)
        return -1;
    if (rc > 0) {
        old_digest = strdup((const char *)sqlite3_column_text(old, 0));
        if (!old_digest)
            return capsa_err_set(err, ENOMEM, "image put: out of memory");
    }
    if (store_prepare(store,
                      "INSERT INTO images (reference, manifest_digest, created_at, updated_at) "
                      "VALUES (?1, ?2, ?3, ?3) ON CONFLICT (reference) DO UPDATE SET "
                      "manifest_digest = excluded.manifest_digest, updated_at = ?3",
                      &st, err) < 0)
        return -1;
    store_bind_text(st, 1, in->reference);
    store_bind_text(st, 2, in->manifest_digest);
    sqlite3_bind_int64(st, 3, now);
    if (store_step_done(store, st, "record image", NULL, err) < 0)
        return -1;
    if (old_digest && strcmp(old_digest, in->manifest_digest) != 0)
        return store_gc_manifest(store, old_digest, true, err);
    return 0;
}

int capsa_store_image_put(struct capsa_store *store, const struct capsa_store_image_put *in,
                          capsa_err *err)
{
    if (!in)
        return capsa_err_set(err, EINVAL, "image put: no input");
    if (!in->reference)
        return capsa_err_set(err, EINVAL, "image reference: missing");
    if (check_text("image reference", in->reference, 1024, err) < 0)
        return -1;
    if (store_check_digest("manifest digest", in->manifest_digest, err) < 0 ||
        (in->config_digest && store_check_digest("config digest", in->config_digest, err) < 0) ||
        check_text("manifest media type", in->media_type, 256, err) < 0 ||
        (in->manifest_json && store_check_json_object("manifest", in->manifest_json, err) < 0) ||
        (in->config_json && store_check_json_object("image config", in->config_json, err) < 0))
        return capsa_err_prefix(err, "image %s", in->reference);
    if (in->size < 0)
        return capsa_err_set(err, EINVAL, "image %s: size must not be negative", in->reference);
    if (in->n_layers && !in->layer_digests)
        return capsa_err_set(err, EINVAL, "image %s: %zu layers but no array", in->reference,
                             in->n_layers);
    for (size_t i = 0; i < in->n_layers; i++) {
        char what[48];
        snprintf(what, sizeof(what), "layers[%zu]", i);
        if (store_check_digest(what, in->layer_digests[i], err) < 0)
            return capsa_err_prefix(err, "image %s", in->reference);
    }
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_image_put(store, in, err), err);
}

#define IMAGE_SELECT                                                                               \
    "SELECT i.id, i.reference, i.manifest_digest, m.media_type, m.config_digest, m.config, "       \
    "m.size, i.created_at, i.updated_at FROM images i JOIN manifests m ON m.digest = "             \
    "i.manifest_digest "

static int image_from_row(struct capsa_store *store, sqlite3_stmt *st, sqlite3_stmt *lst,
                          struct capsa_store_image *img, capsa_err *err)
{
    bool oom = false;
    size_t cap = 0;
    int rc;

    memset(img, 0, sizeof(*img));
    img->id = sqlite3_column_int64(st, 0);
    img->reference = store_col_strdup(st, 1, &oom);
    img->manifest_digest = store_col_strdup(st, 2, &oom);
    img->media_type = store_col_strdup(st, 3, &oom);
    img->config_digest = store_col_strdup(st, 4, &oom);
    img->config_json = store_col_strdup(st, 5, &oom);
    img->size = sqlite3_column_int64(st, 6);
    img->created_at = sqlite3_column_int64(st, 7);
    img->updated_at = sqlite3_column_int64(st, 8);
    if (oom || !img->reference || !img->manifest_digest)
        goto oom;
    sqlite3_reset(lst);
    store_bind_text(lst, 1, img->manifest_digest);
    while ((rc = store_step_row(store, lst, "read image layers", err)) > 0) {
        if (img->n_layers == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            char **na = realloc(img->layer_digests, ncap * sizeof(*na));
            if (!na)
                goto oom;
            img->layer_digests = na;
            cap = ncap;
        }
        img->layer_digests[img->n_layers] = store_col_strdup(lst, 0, &oom);
        if (oom || !img->layer_digests[img->n_layers])
            goto oom;
        img->n_layers++;
    }
    if (rc < 0) {
        capsa_store_image_clear(img);
        return -1;
    }
    return 0;
oom:
    capsa_store_image_clear(img);
    return capsa_err_set(err, ENOMEM, "store: out of memory reading an image");
}

static const char image_layers_sql[] =
    "SELECT layer_digest FROM image_layers WHERE manifest_digest = ?1 ORDER BY position";

int capsa_store_image_get(struct capsa_store *store, const char *key, struct capsa_store_image *out,
                          capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_stmt_ sqlite3_stmt *lst = NULL;
    bool started;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (!key)
        return capsa_err_set(err, EINVAL, "image get: no reference");
    if (store_read_begin(store, &started, err) < 0)
        return -1;
    if (store_prepare(store,
                      IMAGE_SELECT "WHERE i.reference = ?1 OR i.manifest_digest = ?1 "
                                   "ORDER BY i.reference = ?1 DESC, i.id LIMIT 1",
                      &st, err) < 0 ||
        store_prepare(store, image_layers_sql, &lst, err) < 0)
        goto out;
    store_bind_text(st, 1, key);
    rc = store_step_row(store, st, "read image", err);
    if (rc <= 0) {
        if (rc == 0)
            capsa_err_set(err, ENOENT, "image %s: not found", key);
        rc = -1;
        goto out;
    }
    rc = image_from_row(store, st, lst, out, err);
out:
    store_read_end(store, started);
    return rc;
}

int capsa_store_image_list(struct capsa_store *store, struct capsa_store_image **out, size_t *n,
                           capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_stmt_ sqlite3_stmt *lst = NULL;
    struct capsa_store_image *arr = NULL;
    size_t cap = 0, cnt = 0;
    bool started;
    int rc = -1;

    *out = NULL;
    *n = 0;
    if (store_read_begin(store, &started, err) < 0)
        return -1;
    if (store_prepare(store, IMAGE_SELECT "ORDER BY i.reference", &st, err) < 0 ||
        store_prepare(store, image_layers_sql, &lst, err) < 0)
        goto out;
    while ((rc = store_step_row(store, st, "list images", err)) > 0) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct capsa_store_image *na = realloc(arr, ncap * sizeof(*arr));
            if (!na) {
                rc = capsa_err_set(err, ENOMEM, "image list: out of memory");
                break;
            }
            arr = na;
            cap = ncap;
        }
        if ((rc = image_from_row(store, st, lst, &arr[cnt], err)) < 0)
            break;
        cnt++;
    }
out:
    store_read_end(store, started);
    if (rc < 0) {
        capsa_store_images_free(arr, cnt);
        return -1;
    }
    *out = cnt ? arr : NULL;
    if (!cnt)
        free(arr);
    *n = cnt;
    return 0;
}

static int do_image_delete(struct capsa_store *store, const char *reference, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ char *digest = NULL;
    int rc;

    if (store_prepare(store, "DELETE FROM images WHERE reference = ?1 RETURNING manifest_digest",
                      &st, err) < 0)
        return -1;
    store_bind_text(st, 1, reference);
    rc = store_step_row(store, st, "delete image", err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return capsa_err_set(err, ENOENT, "image %s: not found", reference);
    digest = strdup((const char *)sqlite3_column_text(st, 0));
    if (!digest)
        return capsa_err_set(err, ENOMEM, "image delete: out of memory");
    if (store_step_row(store, st, "delete image", err) < 0)
        return -1;
    return store_gc_manifest(store, digest, false, err);
}

int capsa_store_image_delete(struct capsa_store *store, const char *reference, capsa_err *err)
{
    if (!reference)
        return capsa_err_set(err, EINVAL, "image delete: no reference");
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_image_delete(store, reference, err), err);
}

int capsa_store_image_users(struct capsa_store *store, const char *reference, size_t *n_sandboxes,
                            size_t *n_snapshots, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc;

    if (!reference)
        return capsa_err_set(err, EINVAL, "image users: no reference");
    if (store_prepare(store,
                      "SELECT (SELECT count(*) FROM sandboxes WHERE image_ref = ?1), "
                      "(SELECT count(*) FROM snapshots WHERE image_ref = ?1 OR "
                      "image_manifest_digest = (SELECT manifest_digest FROM images WHERE "
                      "reference = ?1))",
                      &st, err) < 0)
        return -1;
    store_bind_text(st, 1, reference);
    rc = store_step_row(store, st, "count image users", err);
    if (rc < 0)
        return -1;
    if (n_sandboxes)
        *n_sandboxes = (size_t)sqlite3_column_int64(st, 0);
    if (n_snapshots)
        *n_snapshots = (size_t)sqlite3_column_int64(st, 1);
    return 0;
}

/* ---- image users, row gc, live digests (image prune) ---------------------------------- */

void capsa_store_image_users_free(struct capsa_store_image_user *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++) {
        free(v[i].name);
        free(v[i].image_ref);
        free(v[i].pinned_ref);
        free(v[i].manifest_digest);
    }
    free(v);
}

int capsa_store_image_user_list(struct capsa_store *store, struct capsa_store_image_user **out,
                                size_t *n, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct capsa_store_image_user *arr = NULL;
    size_t cap = 0, cnt = 0;
    bool started;
    int rc = -1;

    *out = NULL;
    *n = 0;
    if (store_read_begin(store, &started, err) < 0)
        return -1;
    if (store_prepare(store,
                      "SELECT 0, name, image_ref, json_extract(config, '$.image.Oci.reference'), "
                      "NULL FROM sandboxes WHERE image_ref IS NOT NULL OR "
                      "json_extract(config, '$.image.Oci.reference') IS NOT NULL "
                      "UNION ALL SELECT 1, name, image_ref, NULL, image_manifest_digest "
                      "FROM snapshots WHERE image_ref IS NOT NULL OR "
                      "image_manifest_digest IS NOT NULL ORDER BY 1, 2",
                      &st, err) < 0)
        goto out;
    while ((rc = store_step_row(store, st, "list image users", err)) > 0) {
        bool oom = false;
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct capsa_store_image_user *na = realloc(arr, ncap * sizeof(*arr));
            if (!na) {
                rc = capsa_err_set(err, ENOMEM, "image users: out of memory");
                break;
            }
            arr = na;
            cap = ncap;
        }
        memset(&arr[cnt], 0, sizeof(arr[cnt]));
        arr[cnt].snapshot = sqlite3_column_int(st, 0) != 0;
        arr[cnt].name = store_col_strdup(st, 1, &oom);
        arr[cnt].image_ref = store_col_strdup(st, 2, &oom);
        /* json_extract of a non-string (a hand-edited row) is not a reference */
        if (sqlite3_column_type(st, 3) == SQLITE_TEXT)
            arr[cnt].pinned_ref = store_col_strdup(st, 3, &oom);
        arr[cnt].manifest_digest = store_col_strdup(st, 4, &oom);
        cnt++;
        if (oom || !arr[cnt - 1].name) {
            rc = capsa_err_set(err, ENOMEM, "image users: out of memory");
            break;
        }
    }
out:
    store_read_end(store, started);
    if (rc < 0) {
        capsa_store_image_users_free(arr, cnt);
        return -1;
    }
    *out = cnt ? arr : NULL;
    if (!cnt)
        free(arr);
    *n = cnt;
    return 0;
}

static int do_image_gc(struct capsa_store *store, size_t *n_manifests, size_t *n_layers,
                       capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int changes = 0;

    /* '@' || digest at the end of the pinned reference; digests hold no LIKE wildcards */
    if (store_prepare(store,
                      "DELETE FROM manifests WHERE "
                      "NOT EXISTS (SELECT 1 FROM images i WHERE i.manifest_digest = "
                      "manifests.digest) AND "
                      "NOT EXISTS (SELECT 1 FROM snapshots s WHERE s.image_manifest_digest = "
                      "manifests.digest) AND "
                      "NOT EXISTS (SELECT 1 FROM sandboxes b WHERE "
                      "json_extract(b.config, '$.image.Oci.reference') LIKE '%@' || "
                      "manifests.digest)",
                      &st, err) < 0)
        return -1;
    if (store_step_done(store, st, "drop unused manifests", &changes, err) < 0)
        return -1;
    if (n_manifests)
        *n_manifests = (size_t)changes;
    sqlite3_finalize(steal_pointer(&st));
    changes = 0;
    if (store_prepare(store,
                      "DELETE FROM layers WHERE NOT EXISTS (SELECT 1 FROM image_layers il WHERE "
                      "il.layer_digest = layers.digest)",
                      &st, err) < 0)
        return -1;
    if (store_step_done(store, st, "drop unused layers", &changes, err) < 0)
        return -1;
    if (n_layers)
        *n_layers = (size_t)changes;
    return 0;
}

int capsa_store_image_gc(struct capsa_store *store, size_t *n_manifests, size_t *n_layers,
                         capsa_err *err)
{
    if (n_manifests)
        *n_manifests = 0;
    if (n_layers)
        *n_layers = 0;
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_image_gc(store, n_manifests, n_layers, err), err);
}

/* Run sql (one text column) into a NULL-terminated array. */
static int column_strv(struct capsa_store *store, const char *sql, char ***out, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    char **v = NULL;
    size_t cap = 0, cnt = 0;
    int rc;

    *out = NULL;
    if (store_prepare(store, sql, &st, err) < 0)
        return -1;
    while ((rc = store_step_row(store, st, "list digests", err)) > 0) {
        bool oom = false;
        if (cnt + 1 >= cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nv = realloc(v, ncap * sizeof(*nv));
            if (!nv) {
                rc = capsa_err_set(err, ENOMEM, "list digests: out of memory");
                break;
            }
            v = nv;
            cap = ncap;
        }
        v[cnt] = store_col_strdup(st, 0, &oom);
        if (oom || !v[cnt]) {
            rc = capsa_err_set(err, ENOMEM, "list digests: out of memory");
            break;
        }
        v[++cnt] = NULL;
    }
    if (rc < 0 || !v) {
        if (rc == 0)
            v = calloc(1, sizeof(*v));
        if (rc < 0 || !v) {
            capsa_strvfreep(&v);
            return rc < 0 ? -1 : capsa_err_set(err, ENOMEM, "list digests: out of memory");
        }
    }
    *out = v;
    return 0;
}

int capsa_store_image_live_digests(struct capsa_store *store, char ***blobs, char ***manifests,
                                   capsa_err *err)
{
    bool started;
    int rc;

    *blobs = NULL;
    if (manifests)
        *manifests = NULL;
    if (store_read_begin(store, &started, err) < 0)
        return -1;
    rc = column_strv(store,
                     "SELECT digest FROM manifests UNION SELECT config_digest FROM manifests "
                     "WHERE config_digest IS NOT NULL UNION SELECT layer_digest FROM "
                     "image_layers UNION SELECT digest FROM layers ORDER BY 1",
                     blobs, err);
    if (rc == 0 && manifests)
        rc = column_strv(store, "SELECT digest FROM manifests ORDER BY 1", manifests, err);
    store_read_end(store, started);
    if (rc < 0) {
        capsa_strvfreep(blobs);
        *blobs = NULL;
    }
    return rc;
}
