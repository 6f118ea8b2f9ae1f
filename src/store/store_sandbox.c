/* store_sandbox.c - sandbox rows, their labels, status transitions, and runs. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store_int.h"

/* ---- statuses ------------------------------------------------------------------------ */

static const char *const status_names[CAPSA_SANDBOX_STATUS_COUNT] = {
    [CAPSA_SANDBOX_CREATED] = "created", [CAPSA_SANDBOX_STARTING] = "starting",
    [CAPSA_SANDBOX_RUNNING] = "running", [CAPSA_SANDBOX_STOPPING] = "stopping",
    [CAPSA_SANDBOX_STOPPED] = "stopped", [CAPSA_SANDBOX_FAILED] = "failed",
    [CAPSA_SANDBOX_CRASHED] = "crashed",
};

/* legal[from] = mask of statuses reachable from `from` (docs/store.md shows the same table). */
static const unsigned legal[CAPSA_SANDBOX_STATUS_COUNT] = {
    [CAPSA_SANDBOX_CREATED] = CAPSA_SB(STARTING) | CAPSA_SB(FAILED),
    [CAPSA_SANDBOX_STARTING] = CAPSA_SB(RUNNING) | CAPSA_SB(STOPPING) | CAPSA_SB(STOPPED) |
                               CAPSA_SB(FAILED) | CAPSA_SB(CRASHED),
    [CAPSA_SANDBOX_RUNNING] =
        CAPSA_SB(STOPPING) | CAPSA_SB(STOPPED) | CAPSA_SB(FAILED) | CAPSA_SB(CRASHED),
    [CAPSA_SANDBOX_STOPPING] = CAPSA_SB(STOPPED) | CAPSA_SB(FAILED) | CAPSA_SB(CRASHED),
    [CAPSA_SANDBOX_STOPPED] = CAPSA_SB(STARTING),
    [CAPSA_SANDBOX_FAILED] = CAPSA_SB(STARTING),
    [CAPSA_SANDBOX_CRASHED] = CAPSA_SB(STARTING),
};

const char *capsa_sandbox_status_name(enum capsa_sandbox_status s)
{
    if ((unsigned)s >= CAPSA_SANDBOX_STATUS_COUNT)
        return NULL;
    return status_names[s];
}

int capsa_sandbox_status_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < CAPSA_SANDBOX_STATUS_COUNT; i++)
        if (strcmp(name, status_names[i]) == 0)
            return i;
    return -1;
}

bool capsa_sandbox_transition_legal(enum capsa_sandbox_status from, enum capsa_sandbox_status to)
{
    if ((unsigned)from >= CAPSA_SANDBOX_STATUS_COUNT || (unsigned)to >= CAPSA_SANDBOX_STATUS_COUNT)
        return false;
    return (legal[from] & (1u << to)) != 0;
}

/* "stopped|failed|crashed" */
static void mask_names(unsigned mask, char *buf, size_t len)
{
    size_t off = 0;

    buf[0] = '\0';
    for (int i = 0; i < CAPSA_SANDBOX_STATUS_COUNT; i++) {
        if (!(mask & (1u << i)))
            continue;
        int n = snprintf(buf + off, len - off, "%s%s", off ? "|" : "", status_names[i]);
        if (n < 0 || (size_t)n >= len - off)
            break;
        off += (size_t)n;
    }
    if (!off)
        snprintf(buf, len, "(none)");
}

static int status_from_col(sqlite3_stmt *st, int col, enum capsa_sandbox_status *out,
                           capsa_err *err)
{
    const char *s = (const char *)sqlite3_column_text(st, col);
    int v = capsa_sandbox_status_parse(s);
    if (v < 0)
        return capsa_err_set(err, EIO, "store: unknown sandbox status '%s' in database",
                             s ? s : "(null)");
    *out = (enum capsa_sandbox_status)v;
    return 0;
}

/* ---- rows ---------------------------------------------------------------------------- */

void capsa_store_sandbox_clear(struct capsa_store_sandbox *sb)
{
    if (!sb)
        return;
    free(sb->name);
    free(sb->config_json);
    free(sb->image_ref);
    free(sb->last_error);
    capsa_store_labels_free(sb->labels, sb->n_labels);
    memset(sb, 0, sizeof(*sb));
}

void capsa_store_sandboxes_free(struct capsa_store_sandbox *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        capsa_store_sandbox_clear(&v[i]);
    free(v);
}

#define SANDBOX_COLS                                                                               \
    "s.id, s.name, s.config, s.image_ref, s.last_error, s.status, s.ephemeral, "                   \
    "s.supervisor_pid, s.created_at, s.updated_at, s.started_at, s.stopped_at"

static int sandbox_from_row(sqlite3_stmt *st, struct capsa_store_sandbox *sb, capsa_err *err)
{
    bool oom = false;

    memset(sb, 0, sizeof(*sb));
    sb->id = sqlite3_column_int64(st, 0);
    sb->name = store_col_strdup(st, 1, &oom);
    sb->config_json = store_col_strdup(st, 2, &oom);
    sb->image_ref = store_col_strdup(st, 3, &oom);
    sb->last_error = store_col_strdup(st, 4, &oom);
    if (status_from_col(st, 5, &sb->status, err) < 0) {
        capsa_store_sandbox_clear(sb);
        return -1;
    }
    sb->ephemeral = sqlite3_column_int(st, 6) != 0;
    sb->supervisor_pid = (pid_t)sqlite3_column_int64(st, 7);
    sb->created_at = sqlite3_column_int64(st, 8);
    sb->updated_at = sqlite3_column_int64(st, 9);
    sb->started_at = sqlite3_column_int64(st, 10);
    sb->stopped_at = sqlite3_column_int64(st, 11);
    if (oom || !sb->name || !sb->config_json) {
        capsa_store_sandbox_clear(sb);
        return capsa_err_set(err, ENOMEM, "store: out of memory reading a sandbox");
    }
    return 0;
}

static int load_labels(struct capsa_store *store, sqlite3_stmt *st, int64_t id,
                       struct capsa_store_label **out, size_t *n, capsa_err *err)
{
    struct capsa_store_label *arr = NULL;
    size_t cap = 0, cnt = 0;
    int rc;

    *out = NULL;
    *n = 0;
    sqlite3_reset(st);
    sqlite3_bind_int64(st, 1, id);
    while ((rc = store_step_row(store, st, "read labels", err)) > 0) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            struct capsa_store_label *na = realloc(arr, ncap * sizeof(*arr));
            if (!na) {
                capsa_store_labels_free(arr, cnt);
                return capsa_err_set(err, ENOMEM, "store: out of memory reading labels");
            }
            arr = na;
            cap = ncap;
        }
        bool oom = false;
        arr[cnt].key = store_col_strdup(st, 0, &oom);
        arr[cnt].value = store_col_strdup(st, 1, &oom);
        cnt++;
        if (oom || !arr[cnt - 1].key || !arr[cnt - 1].value) {
            capsa_store_labels_free(arr, cnt);
            return capsa_err_set(err, ENOMEM, "store: out of memory reading labels");
        }
    }
    if (rc < 0) {
        capsa_store_labels_free(arr, cnt);
        return -1;
    }
    *out = arr;
    *n = cnt;
    return 0;
}

static const char labels_sql[] =
    "SELECT key, value FROM sandbox_labels WHERE sandbox_id = ?1 ORDER BY key";

/* Looks up the id (and status) of a sandbox by name; ENOENT if absent. */
static int sandbox_lookup(struct capsa_store *store, const char *name, int64_t *id,
                          enum capsa_sandbox_status *status, pid_t *pid, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc;

    if (store_prepare(store, "SELECT id, status, supervisor_pid FROM sandboxes WHERE name = ?1",
                      &st, err) < 0)
        return -1;
    store_bind_text(st, 1, name);
    rc = store_step_row(store, st, "look up sandbox", err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return capsa_err_set(err, ENOENT, "sandbox %s: not found", name);
    if (id)
        *id = sqlite3_column_int64(st, 0);
    if (status && status_from_col(st, 1, status, err) < 0)
        return -1;
    if (pid)
        *pid = (pid_t)sqlite3_column_int64(st, 2);
    return 0;
}

static int insert_label(struct capsa_store *store, int64_t id, const char *key, const char *value,
                        capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;

    if (store_prepare(store,
                      "INSERT INTO sandbox_labels (sandbox_id, key, value) VALUES (?1, ?2, ?3) "
                      "ON CONFLICT (sandbox_id, key) DO UPDATE SET value = excluded.value",
                      &st, err) < 0)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    store_bind_text(st, 2, key);
    store_bind_text(st, 3, value);
    return store_step_done(store, st, "set label", NULL, err);
}

static int touch_sandbox(struct capsa_store *store, int64_t id, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;

    if (store_prepare(store, "UPDATE sandboxes SET updated_at = ?2 WHERE id = ?1", &st, err) < 0)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, capsa_store_now_ms());
    return store_step_done(store, st, "touch sandbox", NULL, err);
}

static int do_insert(struct capsa_store *store, const struct capsa_store_sandbox_new *in,
                     int64_t *id_out, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int64_t now = capsa_store_now_ms(), id;

    if (store_prepare(store,
                      "INSERT INTO sandboxes (name, config, status, ephemeral, image_ref, "
                      "created_at, updated_at) VALUES (?1, ?2, 'created', ?3, ?4, ?5, ?5)",
                      &st, err) < 0)
        return -1;
    store_bind_text(st, 1, in->name);
    store_bind_text(st, 2, in->config_json);
    sqlite3_bind_int(st, 3, in->ephemeral ? 1 : 0);
    store_bind_text(st, 4, in->image_ref);
    sqlite3_bind_int64(st, 5, now);
    if (store_step_done(store, st, "insert sandbox", NULL, err) < 0) {
        if (err && err->code == EEXIST)
            capsa_err_set(err, EEXIST, "sandbox %s: already exists", in->name);
        return -1;
    }
    id = sqlite3_last_insert_rowid(store->db);
    for (size_t i = 0; i < in->n_labels; i++)
        if (insert_label(store, id, in->labels[i].key, in->labels[i].value, err) < 0)
            return -1;
    if (id_out)
        *id_out = id;
    return 0;
}

int capsa_store_sandbox_insert(struct capsa_store *store, const struct capsa_store_sandbox_new *in,
                               int64_t *id_out, capsa_err *err)
{
    if (!in)
        return capsa_err_set(err, EINVAL, "sandbox insert: no input");
    if (capsa_store_check_name("sandbox name", in->name, err) < 0)
        return -1;
    if (store_check_json_object("sandbox config", in->config_json, err) < 0)
        return capsa_err_prefix(err, "sandbox %s", in->name);
    if (in->image_ref && (!*in->image_ref || strlen(in->image_ref) > 4096))
        return capsa_err_set(err, EINVAL, "sandbox %s: image reference: empty or too long",
                             in->name);
    if (store_check_labels(in->labels, in->n_labels, err) < 0)
        return capsa_err_prefix(err, "sandbox %s", in->name);
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_insert(store, in, id_out, err), err);
}

int capsa_store_sandbox_get(struct capsa_store *store, const char *name,
                            struct capsa_store_sandbox *out, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_stmt_ sqlite3_stmt *lst = NULL;
    bool started;
    int rc = -1;

    memset(out, 0, sizeof(*out));
    if (!name)
        return capsa_err_set(err, EINVAL, "sandbox get: no name");
    if (store_read_begin(store, &started, err) < 0)
        return -1;
    if (store_prepare(store, "SELECT " SANDBOX_COLS " FROM sandboxes s WHERE s.name = ?1", &st,
                      err) < 0 ||
        store_prepare(store, labels_sql, &lst, err) < 0)
        goto out;
    store_bind_text(st, 1, name);
    rc = store_step_row(store, st, "read sandbox", err);
    if (rc <= 0) {
        if (rc == 0)
            capsa_err_set(err, ENOENT, "sandbox %s: not found", name);
        rc = -1;
        goto out;
    }
    rc = sandbox_from_row(st, out, err);
    if (rc == 0 && (rc = load_labels(store, lst, out->id, &out->labels, &out->n_labels, err)) < 0)
        capsa_store_sandbox_clear(out);
out:
    store_read_end(store, started);
    return rc;
}

int capsa_store_sandbox_list(struct capsa_store *store,
                             const struct capsa_store_sandbox_filter *filter,
                             struct capsa_store_sandbox **out, size_t *n, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_stmt_ sqlite3_stmt *lst = NULL;
    _cleanup_free_ char *sql = NULL;
    struct capsa_store_sandbox *arr = NULL;
    size_t cap = 0, cnt = 0, len = 0, sz;
    unsigned mask = filter ? filter->status_mask : 0;
    size_t nl = filter ? filter->n_labels : 0;
    bool started = false;
    int rc;

    *out = NULL;
    *n = 0;
    if (mask & ~CAPSA_SB_ANY)
        return capsa_err_set(err, EINVAL, "sandbox list: status mask 0x%x has unknown bits", mask);
    if (nl && !filter->labels)
        return capsa_err_set(err, EINVAL, "sandbox list: %zu labels but no array", nl);
    for (size_t i = 0; i < nl; i++) {
        const struct capsa_store_label *l = &filter->labels[i];
        if (capsa_store_check_label(l->key, l->value ? l->value : "", err) < 0)
            return capsa_err_prefix(err, "sandbox list: label filter %zu", i);
    }

    /* Build: SELECT ... WHERE 1 [AND status IN (...)] [AND EXISTS(label match)]... */
    sz = 512 + nl * 160;
    sql = malloc(sz);
    if (!sql)
        return capsa_err_set(err, ENOMEM, "sandbox list: out of memory");
    len = (size_t)snprintf(sql, sz, "SELECT " SANDBOX_COLS " FROM sandboxes s WHERE 1");
    if (mask) {
        len += (size_t)snprintf(sql + len, sz - len, " AND s.status IN (");
        bool first = true;
        for (int i = 0; i < CAPSA_SANDBOX_STATUS_COUNT; i++)
            if (mask & (1u << i)) {
                len += (size_t)snprintf(sql + len, sz - len, "%s'%s'", first ? "" : ",",
                                        status_names[i]);
                first = false;
            }
        len += (size_t)snprintf(sql + len, sz - len, ")");
    }
    for (size_t i = 0; i < nl; i++) {
        if (filter->labels[i].value)
            len += (size_t)snprintf(sql + len, sz - len,
                                    " AND EXISTS (SELECT 1 FROM sandbox_labels l WHERE "
                                    "l.sandbox_id = s.id AND l.key = ?%zu AND l.value = ?%zu)",
                                    2 * i + 1, 2 * i + 2);
        else
            len += (size_t)snprintf(sql + len, sz - len,
                                    " AND EXISTS (SELECT 1 FROM sandbox_labels l WHERE "
                                    "l.sandbox_id = s.id AND l.key = ?%zu)",
                                    2 * i + 1);
    }
    len += (size_t)snprintf(sql + len, sz - len, " ORDER BY s.name");
    if (len >= sz)
        return capsa_err_set(err, EOVERFLOW, "sandbox list: query too long");

    if (store_read_begin(store, &started, err) < 0)
        return -1;
    rc = -1;
    if (store_prepare(store, sql, &st, err) < 0 || store_prepare(store, labels_sql, &lst, err) < 0)
        goto out;
    for (size_t i = 0; i < nl; i++) {
        store_bind_text(st, (int)(2 * i + 1), filter->labels[i].key);
        if (filter->labels[i].value)
            store_bind_text(st, (int)(2 * i + 2), filter->labels[i].value);
    }
    while ((rc = store_step_row(store, st, "list sandboxes", err)) > 0) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct capsa_store_sandbox *na = realloc(arr, ncap * sizeof(*arr));
            if (!na) {
                rc = capsa_err_set(err, ENOMEM, "sandbox list: out of memory");
                break;
            }
            arr = na;
            cap = ncap;
        }
        if ((rc = sandbox_from_row(st, &arr[cnt], err)) < 0)
            break;
        cnt++;
        if ((rc = load_labels(store, lst, arr[cnt - 1].id, &arr[cnt - 1].labels,
                              &arr[cnt - 1].n_labels, err)) < 0)
            break;
    }
out:
    store_read_end(store, started);
    if (rc < 0) {
        capsa_store_sandboxes_free(arr, cnt);
        return -1;
    }
    *out = cnt ? arr : NULL;
    if (!cnt)
        free(arr);
    *n = cnt;
    return 0;
}

static int do_delete(struct capsa_store *store, const char *name, unsigned from_mask,
                     capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    enum capsa_sandbox_status cur;
    int64_t id;
    char want[128];

    if (sandbox_lookup(store, name, &id, &cur, NULL, err) < 0)
        return -1;
    if (!(from_mask & (1u << cur))) {
        mask_names(from_mask, want, sizeof(want));
        return capsa_err_set(err, EBUSY, "sandbox %s: is %s; can only be removed when %s", name,
                             status_names[cur], want);
    }
    if (store_prepare(store, "DELETE FROM sandboxes WHERE id = ?1", &st, err) < 0)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    return store_step_done(store, st, "delete sandbox", NULL, err);
}

int capsa_store_sandbox_delete(struct capsa_store *store, const char *name, unsigned from_mask,
                               capsa_err *err)
{
    if (!name)
        return capsa_err_set(err, EINVAL, "sandbox delete: no name");
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_delete(store, name, from_mask, err), err);
}

static int do_set_status(struct capsa_store *store, const char *name, unsigned from_mask,
                         enum capsa_sandbox_status to, const char *last_error,
                         enum capsa_sandbox_status *prev, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    enum capsa_sandbox_status cur;
    int64_t id, now = capsa_store_now_ms();
    char want[128];
    bool terminal =
        to == CAPSA_SANDBOX_STOPPED || to == CAPSA_SANDBOX_FAILED || to == CAPSA_SANDBOX_CRASHED;

    if (sandbox_lookup(store, name, &id, &cur, NULL, err) < 0)
        return -1;
    if (!(from_mask & (1u << cur))) {
        mask_names(from_mask, want, sizeof(want));
        return capsa_err_set(err, EBUSY, "sandbox %s: is %s, expected %s (wanted to go to %s)",
                             name, status_names[cur], want, status_names[to]);
    }
    if (!capsa_sandbox_transition_legal(cur, to))
        return capsa_err_set(err, EINVAL, "sandbox %s: illegal status transition %s -> %s", name,
                             status_names[cur], status_names[to]);
    if (store_prepare(store,
                      "UPDATE sandboxes SET status = ?2, updated_at = ?3, "
                      "started_at = CASE WHEN ?2 = 'starting' THEN ?3 ELSE started_at END, "
                      "stopped_at = CASE WHEN ?4 THEN ?3 ELSE stopped_at END, "
                      "supervisor_pid = CASE WHEN ?4 THEN NULL ELSE supervisor_pid END, "
                      "last_error = CASE WHEN ?5 IS NOT NULL THEN ?5 "
                      "  WHEN ?2 = 'starting' THEN NULL ELSE last_error END "
                      "WHERE id = ?1",
                      &st, err) < 0)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    store_bind_text(st, 2, status_names[to]);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int(st, 4, terminal ? 1 : 0);
    store_bind_text(st, 5, last_error);
    if (store_step_done(store, st, "update sandbox status", NULL, err) < 0)
        return -1;
    if (prev)
        *prev = cur;
    return 0;
}

int capsa_store_sandbox_set_status_prev(struct capsa_store *store, const char *name,
                                        unsigned from_mask, enum capsa_sandbox_status to,
                                        const char *last_error, enum capsa_sandbox_status *prev,
                                        capsa_err *err)
{
    if (!name)
        return capsa_err_set(err, EINVAL, "sandbox set status: no name");
    if ((unsigned)to >= CAPSA_SANDBOX_STATUS_COUNT)
        return capsa_err_set(err, EINVAL, "sandbox %s: unknown target status %d", name, (int)to);
    if (last_error && strlen(last_error) > 65536)
        return capsa_err_set(err, EINVAL, "sandbox %s: last_error longer than 64 KiB", name);
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_set_status(store, name, from_mask, to, last_error, prev, err),
                           err);
}

int capsa_store_sandbox_set_status(struct capsa_store *store, const char *name, unsigned from_mask,
                                   enum capsa_sandbox_status to, const char *last_error,
                                   capsa_err *err)
{
    return capsa_store_sandbox_set_status_prev(store, name, from_mask, to, last_error, NULL, err);
}

/* UPDATE sandboxes SET <col> = ?2 by name; ENOENT when no row changed. */
static int update_column(struct capsa_store *store, const char *name, const char *sql,
                         int (*bind)(sqlite3_stmt *, const void *), const void *val, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int changes = 0, rc;

    if (store_write_begin(store, err) < 0)
        return -1;
    rc = store_prepare(store, sql, &st, err);
    if (rc == 0) {
        store_bind_text(st, 1, name);
        sqlite3_bind_int64(st, 3, capsa_store_now_ms());
        bind(st, val);
        rc = store_step_done(store, st, "update sandbox", &changes, err);
        if (rc == 0 && changes == 0)
            rc = capsa_err_set(err, ENOENT, "sandbox %s: not found", name);
    }
    sqlite3_finalize(steal_pointer(&st));
    return store_write_end(store, rc, err);
}

static int bind_pid(sqlite3_stmt *st, const void *v)
{
    pid_t pid = *(const pid_t *)v;
    return pid > 0 ? sqlite3_bind_int64(st, 2, pid) : sqlite3_bind_null(st, 2);
}

static int bind_str(sqlite3_stmt *st, const void *v)
{
    return store_bind_text(st, 2, (const char *)v);
}

int capsa_store_sandbox_set_supervisor(struct capsa_store *store, const char *name, pid_t pid,
                                       capsa_err *err)
{
    if (!name || pid < 0)
        return capsa_err_set(err, EINVAL, "sandbox set supervisor: bad name or pid %d", (int)pid);
    return update_column(
        store, name, "UPDATE sandboxes SET supervisor_pid = ?2, updated_at = ?3 WHERE name = ?1",
        bind_pid, &pid, err);
}

int capsa_store_sandbox_set_config(struct capsa_store *store, const char *name,
                                   const char *config_json, capsa_err *err)
{
    if (!name)
        return capsa_err_set(err, EINVAL, "sandbox set config: no name");
    if (store_check_json_object("sandbox config", config_json, err) < 0)
        return capsa_err_prefix(err, "sandbox %s", name);
    return update_column(store, name,
                         "UPDATE sandboxes SET config = ?2, updated_at = ?3 WHERE name = ?1",
                         bind_str, config_json, err);
}

static int do_label_set(struct capsa_store *store, const char *name, const char *key,
                        const char *value, capsa_err *err)
{
    int64_t id;

    if (sandbox_lookup(store, name, &id, NULL, NULL, err) < 0)
        return -1;
    if (insert_label(store, id, key, value, err) < 0)
        return -1;
    return touch_sandbox(store, id, err);
}

int capsa_store_sandbox_label_set(struct capsa_store *store, const char *name, const char *key,
                                  const char *value, capsa_err *err)
{
    if (!name)
        return capsa_err_set(err, EINVAL, "sandbox label set: no name");
    if (capsa_store_check_label(key, value, err) < 0)
        return capsa_err_prefix(err, "sandbox %s", name);
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_label_set(store, name, key, value, err), err);
}

static int do_label_remove(struct capsa_store *store, const char *name, const char *key,
                           bool *removed, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int64_t id;
    int changes = 0;

    if (sandbox_lookup(store, name, &id, NULL, NULL, err) < 0)
        return -1;
    if (store_prepare(store, "DELETE FROM sandbox_labels WHERE sandbox_id = ?1 AND key = ?2", &st,
                      err) < 0)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    store_bind_text(st, 2, key);
    if (store_step_done(store, st, "remove label", &changes, err) < 0)
        return -1;
    if (removed)
        *removed = changes > 0;
    return changes > 0 ? touch_sandbox(store, id, err) : 0;
}

int capsa_store_sandbox_label_remove(struct capsa_store *store, const char *name, const char *key,
                                     bool *removed, capsa_err *err)
{
    if (!name || !key || !*key)
        return capsa_err_set(err, EINVAL, "sandbox label remove: missing name or key");
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_label_remove(store, name, key, removed, err), err);
}

/* ---- runs ---------------------------------------------------------------------------- */

static const char *const reason_names[CAPSA_RUN_REASON_COUNT] = {
    [CAPSA_RUN_COMPLETED] = "completed",
    [CAPSA_RUN_FAILED] = "failed",
    [CAPSA_RUN_MAX_DURATION_EXCEEDED] = "max_duration_exceeded",
    [CAPSA_RUN_IDLE_TIMEOUT] = "idle_timeout",
    [CAPSA_RUN_AGENT_UNRESPONSIVE] = "agent_unresponsive",
    [CAPSA_RUN_SHUTDOWN_REQUESTED] = "shutdown_requested",
    [CAPSA_RUN_DRAIN_REQUESTED] = "drain_requested",
    [CAPSA_RUN_SIGNAL] = "signal",
    [CAPSA_RUN_INTERNAL_ERROR] = "internal_error",
};

const char *capsa_run_reason_name(enum capsa_run_reason r)
{
    if ((unsigned)r >= CAPSA_RUN_REASON_COUNT)
        return NULL;
    return reason_names[r];
}

int capsa_run_reason_parse(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < CAPSA_RUN_REASON_COUNT; i++)
        if (strcmp(name, reason_names[i]) == 0)
            return i;
    return -1;
}

void capsa_store_runs_free(struct capsa_store_run *v, size_t n)
{
    if (!v)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i].detail);
    free(v);
}

/* Close runs left open by a previous boot that died without finishing them. */
static int close_open_runs(struct capsa_store *store, int64_t sandbox_id, const char *detail,
                           capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;

    if (store_prepare(store,
                      "UPDATE runs SET ended_at = ?2, termination_reason = 'internal_error', "
                      "termination_detail = ?3 WHERE sandbox_id = ?1 AND ended_at IS NULL",
                      &st, err) < 0)
        return -1;
    sqlite3_bind_int64(st, 1, sandbox_id);
    sqlite3_bind_int64(st, 2, capsa_store_now_ms());
    store_bind_text(st, 3, detail);
    return store_step_done(store, st, "close open runs", NULL, err);
}

static int do_run_start(struct capsa_store *store, const char *name, pid_t pid, int64_t *run_id,
                        capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int64_t id;

    if (sandbox_lookup(store, name, &id, NULL, NULL, err) < 0)
        return -1;
    if (close_open_runs(store, id, "run was never finished (superseded by a new run)", err) < 0)
        return -1;
    if (store_prepare(store, "INSERT INTO runs (sandbox_id, pid, started_at) VALUES (?1, ?2, ?3)",
                      &st, err) < 0)
        return -1;
    sqlite3_bind_int64(st, 1, id);
    if (pid > 0)
        sqlite3_bind_int64(st, 2, pid);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_int64(st, 3, capsa_store_now_ms());
    if (store_step_done(store, st, "insert run", NULL, err) < 0)
        return -1;
    if (run_id)
        *run_id = sqlite3_last_insert_rowid(store->db);
    return 0;
}

int capsa_store_run_start(struct capsa_store *store, const char *name, pid_t pid, int64_t *run_id,
                          capsa_err *err)
{
    if (!name)
        return capsa_err_set(err, EINVAL, "run start: no sandbox name");
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_run_start(store, name, pid, run_id, err), err);
}

static int do_run_finish(struct capsa_store *store, int64_t run_id,
                         const struct capsa_store_run_end *end, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    _cleanup_stmt_ sqlite3_stmt *chk = NULL;
    int changes = 0, rc;

    if (store_prepare(store,
                      "UPDATE runs SET ended_at = ?2, exit_code = ?3, signal = ?4, "
                      "termination_reason = ?5, termination_detail = ?6 "
                      "WHERE id = ?1 AND ended_at IS NULL",
                      &st, err) < 0)
        return -1;
    sqlite3_bind_int64(st, 1, run_id);
    sqlite3_bind_int64(st, 2, capsa_store_now_ms());
    if (end->has_exit_code)
        sqlite3_bind_int(st, 3, end->exit_code);
    else
        sqlite3_bind_null(st, 3);
    if (end->signal)
        sqlite3_bind_int(st, 4, end->signal);
    else
        sqlite3_bind_null(st, 4);
    store_bind_text(st, 5, reason_names[end->reason]);
    store_bind_text(st, 6, end->detail);
    if (store_step_done(store, st, "finish run", &changes, err) < 0)
        return -1;
    if (changes)
        return 0;
    if (store_prepare(store, "SELECT 1 FROM runs WHERE id = ?1", &chk, err) < 0)
        return -1;
    sqlite3_bind_int64(chk, 1, run_id);
    rc = store_step_row(store, chk, "look up run", err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return capsa_err_set(err, ENOENT, "run %lld: not found", (long long)run_id);
    return capsa_err_set(err, EALREADY, "run %lld: already finished", (long long)run_id);
}

int capsa_store_run_finish(struct capsa_store *store, int64_t run_id,
                           const struct capsa_store_run_end *end, capsa_err *err)
{
    if (!end || (unsigned)end->reason >= CAPSA_RUN_REASON_COUNT)
        return capsa_err_set(err, EINVAL, "run %lld: finish: missing or unknown reason",
                             (long long)run_id);
    if (end->signal < 0 || end->signal > 128)
        return capsa_err_set(err, EINVAL, "run %lld: finish: signal %d out of range",
                             (long long)run_id, end->signal);
    if (end->detail && strlen(end->detail) > 65536)
        return capsa_err_set(err, EINVAL, "run %lld: finish: detail longer than 64 KiB",
                             (long long)run_id);
    if (store_write_begin(store, err) < 0)
        return -1;
    return store_write_end(store, do_run_finish(store, run_id, end, err), err);
}

int capsa_store_run_list(struct capsa_store *store, const char *name, struct capsa_store_run **out,
                         size_t *n, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    struct capsa_store_run *arr = NULL;
    size_t cap = 0, cnt = 0;
    bool started;
    int64_t id;
    int rc = -1;

    *out = NULL;
    *n = 0;
    if (!name)
        return capsa_err_set(err, EINVAL, "run list: no sandbox name");
    if (store_read_begin(store, &started, err) < 0)
        return -1;
    if (sandbox_lookup(store, name, &id, NULL, NULL, err) < 0)
        goto out;
    if (store_prepare(store,
                      "SELECT id, sandbox_id, pid, started_at, ended_at, exit_code, signal, "
                      "termination_reason, termination_detail FROM runs WHERE sandbox_id = ?1 "
                      "ORDER BY id",
                      &st, err) < 0)
        goto out;
    sqlite3_bind_int64(st, 1, id);
    while ((rc = store_step_row(store, st, "list runs", err)) > 0) {
        if (cnt == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            struct capsa_store_run *na = realloc(arr, ncap * sizeof(*arr));
            if (!na) {
                rc = capsa_err_set(err, ENOMEM, "run list: out of memory");
                break;
            }
            arr = na;
            cap = ncap;
        }
        struct capsa_store_run *r = &arr[cnt++];
        bool oom = false;
        memset(r, 0, sizeof(*r));
        r->id = sqlite3_column_int64(st, 0);
        r->sandbox_id = sqlite3_column_int64(st, 1);
        r->pid = (pid_t)sqlite3_column_int64(st, 2);
        r->started_at = sqlite3_column_int64(st, 3);
        r->ended_at = sqlite3_column_int64(st, 4);
        r->has_exit_code = sqlite3_column_type(st, 5) != SQLITE_NULL;
        r->exit_code = sqlite3_column_int(st, 5);
        r->signal = sqlite3_column_int(st, 6);
        r->reason = sqlite3_column_type(st, 7) == SQLITE_NULL
                        ? -1
                        : capsa_run_reason_parse((const char *)sqlite3_column_text(st, 7));
        r->detail = store_col_strdup(st, 8, &oom);
        if (oom) {
            rc = capsa_err_set(err, ENOMEM, "run list: out of memory");
            break;
        }
    }
out:
    store_read_end(store, started);
    if (rc < 0) {
        capsa_store_runs_free(arr, cnt);
        return -1;
    }
    *out = cnt ? arr : NULL;
    if (!cnt)
        free(arr);
    *n = cnt;
    return 0;
}

/* ---- crash reaping ------------------------------------------------------------------- */

static bool default_alive(pid_t pid, void *ctx)
{
    (void)ctx;
    return kill(pid, 0) == 0 || errno == EPERM;
}

/* Re-check under the write lock that the row still is what we judged dead, then crash it. */
static int reap_one(struct capsa_store *store, const char *name, pid_t seen_pid,
                    enum capsa_sandbox_status seen, bool *reaped, capsa_err *err)
{
    enum capsa_sandbox_status cur;
    pid_t pid;
    int64_t id;
    char msg[160];

    *reaped = false;
    if (sandbox_lookup(store, name, &id, &cur, &pid, err) < 0) {
        if (!err || err->code != ENOENT)
            return -1;
        capsa_err_clear(err); /* removed meanwhile: nothing to reap */
        return 0;
    }
    if (cur != seen || pid != seen_pid)
        return 0; /* changed meanwhile: someone else is handling it */
    if (pid > 0)
        snprintf(msg, sizeof(msg), "supervisor (pid %d) exited while the sandbox was %s", (int)pid,
                 status_names[cur]);
    else
        snprintf(msg, sizeof(msg), "no supervisor recorded while the sandbox was %s",
                 status_names[cur]);
    if (close_open_runs(store, id, msg, err) < 0)
        return -1;
    if (do_set_status(store, name, 1u << cur, CAPSA_SANDBOX_CRASHED, msg, NULL, err) < 0)
        return -1;
    *reaped = true;
    return 0;
}

int capsa_store_sandbox_reap(struct capsa_store *store, bool (*alive)(pid_t pid, void *ctx),
                             void *ctx, size_t *n_reaped, capsa_err *err)
{
    struct capsa_store_sandbox_filter f = {.status_mask = CAPSA_SB_ACTIVE};
    struct capsa_store_sandbox *v = NULL;
    size_t n = 0, count = 0;
    int rc = 0;

    if (n_reaped)
        *n_reaped = 0;
    if (!alive)
        alive = default_alive;
    if (capsa_store_sandbox_list(store, &f, &v, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct capsa_store_sandbox *sb = &v[i];
        bool dead, reaped = false;
        if (sb->supervisor_pid > 0)
            dead = !alive(sb->supervisor_pid, ctx);
        else
            dead = sb->status != CAPSA_SANDBOX_STARTING; /* starting: starter not known yet */
        if (!dead)
            continue;
        if (store_write_begin(store, err) < 0) {
            rc = -1;
            break;
        }
        rc = store_write_end(
            store, reap_one(store, sb->name, sb->supervisor_pid, sb->status, &reaped, err), err);
        if (rc == 0 && reaped)
            count++;
    }
    capsa_store_sandboxes_free(v, n);
    if (n_reaped)
        *n_reaped = count;
    return rc;
}
