/* store_volume.c - named volume and snapshot rows. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* ---- volumes ------------------------------------------------------------------------- */

const char *capsa_volume_kind_name(enum capsa_volume_kind k)
{
    switch (k) {
    case CAPSA_VOLUME_DIR:
        return "dir";
    case CAPSA_VOLUME_DISK:
        return "disk";
    }
    return NULL;
}

int capsa_volume_kind_parse(const char *name)
{
    if (name && strcmp(name, "dir") == 0)
        return CAPSA_VOLUME_DIR;
    if (name && strcmp(name, "disk") == 0)
        return CAPSA_VOLUME_DISK;
    return -1;
}

void capsa_store_volume_clear(struct capsa_store_volume *v)
{
    if (!v)
        return;
    free(v->name);
    free(v->disk_format);
    free(v->disk_fstype);
    capsa_store_labels_free(v->labels, v->n_labels);
    memset(v, 0, sizeof(*v));
}

void capsa_store_volumes_free(struct capsa_store_volume *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        capsa_store_volume_clear(&v[i]);
    free(v);
}

static int check_short_word(const char *what, const char *s, capsa_err *err)
{
    if (!s)
        return 0;
    size_t n = strlen(s);
    if (n == 0 || n > 32)
        return capsa_err_set(err, EINVAL, "%s: must be 1..32 bytes", what);
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9')))
            return capsa_err_set(err, EINVAL, "%s '%s': only [a-z0-9] allowed", what, s);
    return 0;
}

int capsa_store_volume_insert(struct capsa_store *store, const struct capsa_store_volume *in,
                              int64_t *id_out, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ char *labels = NULL;
    const char *fmt, *fs;
    int64_t now = capsa_store_now_ms();
    int rc;

    if (!in)
        return capsa_err_set(err, EINVAL, "volume insert: no input");
    if (capsa_store_check_name("volume name", in->name, err) < 0)
        return -1;
    if (!capsa_volume_kind_name(in->kind))
        return capsa_err_set(err, EINVAL, "volume %s: kind %d: expected dir or disk", in->name,
                             (int)in->kind);
    if (in->quota_mib < 0)
        return capsa_err_set(err, EINVAL, "volume %s: quota_mib %lld: must not be negative",
                             in->name, (long long)in->quota_mib);
    if (in->kind == CAPSA_VOLUME_DISK && in->capacity_mib <= 0)
        return capsa_err_set(err, EINVAL, "volume %s: capacity_mib: required (> 0) for a disk",
                             in->name);
    if (in->kind == CAPSA_VOLUME_DIR && in->capacity_mib != 0)
        return capsa_err_set(err, EINVAL,
                             "volume %s: capacity_mib: only disk volumes have a capacity "
                             "(use quota_mib for dir)",
                             in->name);
    if (check_short_word("volume disk_format", in->disk_format, err) < 0 ||
        check_short_word("volume disk_fstype", in->disk_fstype, err) < 0)
        return capsa_err_prefix(err, "volume %s", in->name);
    if (store_check_labels(in->labels, in->n_labels, err) < 0)
        return capsa_err_prefix(err, "volume %s", in->name);
    if (store_labels_to_json(in->labels, in->n_labels, &labels, err) < 0)
        return capsa_err_prefix(err, "volume %s", in->name);
    fmt = in->disk_format ? in->disk_format : in->kind == CAPSA_VOLUME_DISK ? "raw" : NULL;
    fs = in->disk_fstype ? in->disk_fstype : in->kind == CAPSA_VOLUME_DISK ? "ext4" : NULL;

    if (store_write_begin(store, err) < 0)
        return -1;
    rc = store_prepare(store,
                       "INSERT INTO volumes (name, kind, quota_mib, capacity_mib, disk_format, "
                       "disk_fstype, labels, created_at, updated_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)",
                       &st, err);
    if (rc == 0) {
        store_bind_text(st, 1, in->name);
        store_bind_text(st, 2, capsa_volume_kind_name(in->kind));
        store_bind_int64_or_null(st, 3, in->quota_mib);
        store_bind_int64_or_null(st, 4, in->capacity_mib);
        store_bind_text(st, 5, fmt);
        store_bind_text(st, 6, fs);
        store_bind_text(st, 7, labels);
        sqlite3_bind_int64(st, 8, now);
        rc = store_step_done(store, st, "insert volume", NULL, err);
        if (rc < 0 && err && err->code == EEXIST)
            capsa_err_set(err, EEXIST, "volume %s: already exists", in->name);
        if (rc == 0 && id_out)
            *id_out = sqlite3_last_insert_rowid(store->db);
    }
    sqlite3_finalize(steal_pointer(&st));
    return store_write_end(store, rc, err);
}

#define VOLUME_COLS                                                                                \
    "id, name, kind, quota_mib, capacity_mib, disk_format, disk_fstype, labels, created_at, "      \
    "updated_at"

static int volume_from_row(sqlite3_stmt *st, struct capsa_store_volume *v, capsa_err *err)
{
    bool oom = false;
    int kind;

    memset(v, 0, sizeof(*v));
    v->id = sqlite3_column_int64(st, 0);
    v->name = store_col_strdup(st, 1, &oom);
    kind = capsa_volume_kind_parse((const char *)sqlite3_column_text(st, 2));
    v->kind = kind < 0 ? CAPSA_VOLUME_DIR : (enum capsa_volume_kind)kind;
    v->quota_mib = sqlite3_column_int64(st, 3);
    v->capacity_mib = sqlite3_column_int64(st, 4);
    v->disk_format = store_col_strdup(st, 5, &oom);
    v->disk_fstype = store_col_strdup(st, 6, &oom);
    v->created_at = sqlite3_column_int64(st, 8);
    v->updated_at = sqlite3_column_int64(st, 9);
    if (oom || !v->name) {
        capsa_store_volume_clear(v);
        return capsa_err_set(err, ENOMEM, "store: out of memory reading a volume");
    }
    if (kind < 0) {
        capsa_err_set(err, EIO, "volume %s: unknown kind in database", v->name);
        capsa_store_volume_clear(v);
        return -1;
    }
    if (store_labels_from_json((const char *)sqlite3_column_text(st, 7), &v->labels, &v->n_labels,
                               err) < 0) {
        capsa_err_prefix(err, "volume %s", v->name);
        capsa_store_volume_clear(v);
        return -1;
    }
    return 0;
}

int capsa_store_volume_get(struct capsa_store *store, const char *name,
                           struct capsa_store_volume *out, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!name)
        return capsa_err_set(err, EINVAL, "volume get: no name");
    if (store_prepare(store, "SELECT " VOLUME_COLS " FROM volumes WHERE name = ?1", &st, err) < 0)
        return -1;
    store_bind_text(st, 1, name);
    rc = store_step_row(store, st, "read volume", err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return capsa_err_set(err, ENOENT, "volume %s: not found", name);
    return volume_from_row(st, out, err);
}

int capsa_store_volume_list(struct capsa_store *store, struct capsa_store_volume **out, size_t *n,
                            capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct capsa_store_volume *arr = NULL;
    size_t cap = 0, cnt = 0;
    int rc;

    *out = NULL;
    *n = 0;
    if (store_prepare(store, "SELECT " VOLUME_COLS " FROM volumes ORDER BY name", &st, err) < 0)
        return -1;
    while ((rc = store_step_row(store, st, "list volumes", err)) > 0) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct capsa_store_volume *na = realloc(arr, ncap * sizeof(*arr));
            if (!na) {
                rc = capsa_err_set(err, ENOMEM, "volume list: out of memory");
                break;
            }
            arr = na;
            cap = ncap;
        }
        if ((rc = volume_from_row(st, &arr[cnt], err)) < 0)
            break;
        cnt++;
    }
    if (rc < 0) {
        capsa_store_volumes_free(arr, cnt);
        return -1;
    }
    *out = cnt ? arr : NULL;
    if (!cnt)
        free(arr);
    *n = cnt;
    return 0;
}

/* DELETE ... WHERE <col> = ?1 in a write transaction; ENOENT when nothing matched. */
static int delete_by(struct capsa_store *store, const char *sql, const char *key, const char *kind,
                     capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int changes = 0, rc;

    if (!key)
        return capsa_err_set(err, EINVAL, "%s delete: no name", kind);
    if (store_write_begin(store, err) < 0)
        return -1;
    rc = store_prepare(store, sql, &st, err);
    if (rc == 0) {
        store_bind_text(st, 1, key);
        rc = store_step_done(store, st, "delete", &changes, err);
        if (rc == 0 && changes == 0)
            rc = capsa_err_set(err, ENOENT, "%s %s: not found", kind, key);
    }
    sqlite3_finalize(steal_pointer(&st));
    return store_write_end(store, rc, err);
}

int capsa_store_volume_delete(struct capsa_store *store, const char *name, capsa_err *err)
{
    return delete_by(store, "DELETE FROM volumes WHERE name = ?1", name, "volume", err);
}

/* ---- snapshots ----------------------------------------------------------------------- */

void capsa_store_snapshot_clear(struct capsa_store_snapshot *s)
{
    if (!s)
        return;
    free(s->name);
    free(s->digest);
    free(s->path);
    free(s->parent_digest);
    free(s->source_sandbox);
    free(s->image_ref);
    free(s->image_manifest_digest);
    capsa_store_labels_free(s->labels, s->n_labels);
    memset(s, 0, sizeof(*s));
}

void capsa_store_snapshots_free(struct capsa_store_snapshot *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        capsa_store_snapshot_clear(&v[i]);
    free(v);
}

int capsa_store_snapshot_insert(struct capsa_store *store, const struct capsa_store_snapshot *in,
                                int64_t *id_out, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ char *labels = NULL;
    int rc;

    if (!in)
        return capsa_err_set(err, EINVAL, "snapshot insert: no input");
    if (capsa_store_check_name("snapshot name", in->name, err) < 0)
        return -1;
    if (store_check_digest("snapshot digest", in->digest, err) < 0)
        return capsa_err_prefix(err, "snapshot %s", in->name);
    if (in->parent_digest && store_check_digest("parent digest", in->parent_digest, err) < 0)
        return capsa_err_prefix(err, "snapshot %s", in->name);
    if (in->image_manifest_digest &&
        store_check_digest("image manifest digest", in->image_manifest_digest, err) < 0)
        return capsa_err_prefix(err, "snapshot %s", in->name);
    if (!in->path || in->path[0] != '/' || strlen(in->path) >= 4096)
        return capsa_err_set(err, EINVAL, "snapshot %s: path: must be an absolute path", in->name);
    if (in->source_sandbox && capsa_store_check_name("source sandbox", in->source_sandbox, err) < 0)
        return capsa_err_prefix(err, "snapshot %s", in->name);
    if (in->size_bytes < 0)
        return capsa_err_set(err, EINVAL, "snapshot %s: size_bytes: must not be negative",
                             in->name);
    if (store_check_labels(in->labels, in->n_labels, err) < 0 ||
        store_labels_to_json(in->labels, in->n_labels, &labels, err) < 0)
        return capsa_err_prefix(err, "snapshot %s", in->name);

    if (store_write_begin(store, err) < 0)
        return -1;
    rc = store_prepare(store,
                       "INSERT INTO snapshots (name, digest, path, parent_digest, source_sandbox, "
                       "image_ref, image_manifest_digest, size_bytes, labels, created_at) "
                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                       &st, err);
    if (rc == 0) {
        store_bind_text(st, 1, in->name);
        store_bind_text(st, 2, in->digest);
        store_bind_text(st, 3, in->path);
        store_bind_text(st, 4, in->parent_digest);
        store_bind_text(st, 5, in->source_sandbox);
        store_bind_text(st, 6, in->image_ref);
        store_bind_text(st, 7, in->image_manifest_digest);
        sqlite3_bind_int64(st, 8, in->size_bytes);
        store_bind_text(st, 9, labels);
        sqlite3_bind_int64(st, 10, in->created_at ? in->created_at : capsa_store_now_ms());
        rc = store_step_done(store, st, "insert snapshot", NULL, err);
        if (rc < 0 && err && err->code == EEXIST)
            capsa_err_set(err, EEXIST, "snapshot %s: a snapshot with this name or digest exists",
                          in->name);
        if (rc == 0 && id_out)
            *id_out = sqlite3_last_insert_rowid(store->db);
    }
    sqlite3_finalize(steal_pointer(&st));
    return store_write_end(store, rc, err);
}

#define SNAPSHOT_COLS                                                                              \
    "id, name, digest, path, parent_digest, source_sandbox, image_ref, image_manifest_digest, "    \
    "size_bytes, labels, created_at"

static int snapshot_from_row(sqlite3_stmt *st, struct capsa_store_snapshot *s, capsa_err *err)
{
    bool oom = false;

    memset(s, 0, sizeof(*s));
    s->id = sqlite3_column_int64(st, 0);
    s->name = store_col_strdup(st, 1, &oom);
    s->digest = store_col_strdup(st, 2, &oom);
    s->path = store_col_strdup(st, 3, &oom);
    s->parent_digest = store_col_strdup(st, 4, &oom);
    s->source_sandbox = store_col_strdup(st, 5, &oom);
    s->image_ref = store_col_strdup(st, 6, &oom);
    s->image_manifest_digest = store_col_strdup(st, 7, &oom);
    s->size_bytes = sqlite3_column_int64(st, 8);
    s->created_at = sqlite3_column_int64(st, 10);
    if (oom || !s->name || !s->digest || !s->path) {
        capsa_store_snapshot_clear(s);
        return capsa_err_set(err, ENOMEM, "store: out of memory reading a snapshot");
    }
    if (store_labels_from_json((const char *)sqlite3_column_text(st, 9), &s->labels, &s->n_labels,
                               err) < 0) {
        capsa_err_prefix(err, "snapshot %s", s->name);
        capsa_store_snapshot_clear(s);
        return -1;
    }
    return 0;
}

int capsa_store_snapshot_get(struct capsa_store *store, const char *key,
                             struct capsa_store_snapshot *out, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!key)
        return capsa_err_set(err, EINVAL, "snapshot get: no name");
    if (store_prepare(store,
                      "SELECT " SNAPSHOT_COLS " FROM snapshots WHERE name = ?1 OR digest = ?1 "
                      "ORDER BY name = ?1 DESC LIMIT 1",
                      &st, err) < 0)
        return -1;
    store_bind_text(st, 1, key);
    rc = store_step_row(store, st, "read snapshot", err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return capsa_err_set(err, ENOENT, "snapshot %s: not found", key);
    return snapshot_from_row(st, out, err);
}

int capsa_store_snapshot_list(struct capsa_store *store, struct capsa_store_snapshot **out,
                              size_t *n, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct capsa_store_snapshot *arr = NULL;
    size_t cap = 0, cnt = 0;
    int rc;

    *out = NULL;
    *n = 0;
    if (store_prepare(store, "SELECT " SNAPSHOT_COLS " FROM snapshots ORDER BY name", &st, err) < 0)
        return -1;
    while ((rc = store_step_row(store, st, "list snapshots", err)) > 0) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct capsa_store_snapshot *na = realloc(arr, ncap * sizeof(*arr));
            if (!na) {
                rc = capsa_err_set(err, ENOMEM, "snapshot list: out of memory");
                break;
            }
            arr = na;
            cap = ncap;
        }
        if ((rc = snapshot_from_row(st, &arr[cnt], err)) < 0)
            break;
        cnt++;
    }
    if (rc < 0) {
        capsa_store_snapshots_free(arr, cnt);
        return -1;
    }
    *out = cnt ? arr : NULL;
    if (!cnt)
        free(arr);
    *n = cnt;
    return 0;
}

static int do_snapshot_delete(struct capsa_store *store, const char *key, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_free_ char *manifest = NULL;
    bool oom = false;
    int rc;

    /* A name wins over a digest, exactly like snapshot_get. */
    if (store_prepare(store,
                      "DELETE FROM snapshots WHERE id = (SELECT id FROM snapshots WHERE name = ?1 "
                      "OR digest = ?1 ORDER BY name = ?1 DESC LIMIT 1) "
                      "RETURNING image_manifest_digest",
                      &st, err) < 0)
        return -1;
    store_bind_text(st, 1, key);
    rc = store_step_row(store, st, "delete snapshot", err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return capsa_err_set(err, ENOENT, "snapshot %s: not found", key);
    manifest = store_col_strdup(st, 0, &oom);
    if (oom)
        return capsa_err_set(err, ENOMEM, "snapshot delete: out of memory");
    if (store_step_row(store, st, "delete snapshot", err) < 0)
        return -1;
    /* The snapshot may have been the last thing pinning its image manifest. */
    return manifest ? store_gc_manifest(store, manifest, true, err) : 0;
}

int capsa_store_snapshot_delete(struct capsa_store *store, const char *key, capsa_err *err)
{
    if (!key)
        return capsa_err_set(err, EINVAL, "snapshot delete: no name");
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_snapshot_delete(store, key, err), err);
}
