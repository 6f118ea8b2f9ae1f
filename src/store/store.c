/* store.c - opening capsa.db, migrations, transactions, and helpers shared by the store.
 *
 * Concurrency: WAL journal, busy_timeout 30 s, foreign keys on, synchronous=NORMAL (durable
 * across process crashes, consistent across power loss). Writers take the write lock up
 * front with BEGIN IMMEDIATE, so a transaction never fails half-way with SQLITE_BUSY; the
 * BEGIN itself is retried (bounded by the busy timeout) for the busy cases SQLite does not
 * hand to the busy handler (WAL recovery, a concurrent first open switching to WAL).
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/paths.h"
#include "store/store_int.h"

int64_t capsa_store_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sleep 1..20 ms, jittered by pid so that contending processes spread out. */
static void busy_backoff(unsigned attempt)
{
    unsigned ms = 1 + (attempt * 3 + (unsigned)getpid()) % 20;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

static bool is_busy(int rc)
{
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

/* ---- error helpers ------------------------------------------------------------------- */

int store_fail(struct capsa_store *store, capsa_err *err, int code, const char *fmt, ...)
{
    char ctx[512];
    va_list ap;
    int rc = store && store->db ? sqlite3_extended_errcode(store->db) : SQLITE_ERROR;

    va_start(ap, fmt);
    vsnprintf(ctx, sizeof(ctx), fmt, ap);
    va_end(ap);
    if (code == 0) {
        if ((rc & 0xff) == SQLITE_CONSTRAINT)
            code = rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY ? EEXIST
                                                                                        : EINVAL;
        else if (is_busy(rc))
            code = EBUSY;
        else if ((rc & 0xff) == SQLITE_NOMEM)
            code = ENOMEM;
        else
            code = EIO;
    }
    return capsa_err_set(err, code, "%s: %s", ctx,
                         store && store->db ? sqlite3_errmsg(store->db) : "no connection");
}

int store_check_owner(struct capsa_store *store, capsa_err *err)
{
    if (!store || !store->db)
        return capsa_err_set(err, EINVAL, "store: not open");
    if (store->pid != getpid())
        return capsa_err_set(err, EINVAL,
                             "store %s: connection opened by pid %d used in pid %d (open a new "
                             "one after fork)",
                             store->path, (int)store->pid, (int)getpid());
    return 0;
}

int store_prepare(struct capsa_store *store, const char *sql, sqlite3_stmt **st, capsa_err *err)
{
    int64_t deadline = mono_ms() + CAPSA_STORE_BUSY_TIMEOUT_MS;
    unsigned attempt = 0;
    int rc;

    if (store_check_owner(store, err) < 0)
        return -1;
    /* Preparing reads the schema, which can be busy during WAL recovery. */
    while ((rc = sqlite3_prepare_v2(store->db, sql, -1, st, NULL)) != SQLITE_OK) {
        if (!is_busy(rc) || mono_ms() > deadline)
            return store_fail(store, err, 0, "store %s: prepare", store->path);
        busy_backoff(attempt++);
    }
    return 0;
}

int store_step_row(struct capsa_store *store, sqlite3_stmt *st, const char *what, capsa_err *err)
{
    int64_t deadline = mono_ms() + CAPSA_STORE_BUSY_TIMEOUT_MS;
    unsigned attempt = 0;

    for (;;) {
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
            return 1;
        if (rc == SQLITE_DONE)
            return 0;
        /* Outside a transaction a statement is its own transaction and can be retried. */
        if (is_busy(rc) && sqlite3_get_autocommit(store->db) && mono_ms() < deadline) {
            sqlite3_reset(st);
            busy_backoff(attempt++);
            continue;
        }
        return store_fail(store, err, 0, "store %s: %s", store->path, what);
    }
}

int store_step_done(struct capsa_store *store, sqlite3_stmt *st, const char *what, int *changes,
                    capsa_err *err)
{
    int rc = store_step_row(store, st, what, err);
    if (rc < 0)
        return -1;
    if (rc > 0)
        return capsa_err_set(err, EIO, "store: %s: unexpected result row", what);
    if (changes)
        *changes = sqlite3_changes(store->db);
    return 0;
}

static int exec_sql(struct capsa_store *store, const char *sql, const char *what, capsa_err *err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        capsa_err_set(err, is_busy(rc) ? EBUSY : EIO, "store %s: %s: %s", store->path, what,
                      msg ? msg : sqlite3_errstr(rc));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int store_bind_text(sqlite3_stmt *st, int idx, const char *s)
{
    if (!s)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_text(st, idx, s, -1, SQLITE_TRANSIENT);
}

int store_bind_int64_or_null(sqlite3_stmt *st, int idx, int64_t v)
{
    if (v == 0)
        return sqlite3_bind_null(st, idx);
    return sqlite3_bind_int64(st, idx, v);
}

char *store_col_strdup(sqlite3_stmt *st, int col, bool *oom)
{
    const unsigned char *t;
    char *r;

    if (sqlite3_column_type(st, col) == SQLITE_NULL)
        return NULL;
    t = sqlite3_column_text(st, col);
    if (!t) {
        *oom = true;
        return NULL;
    }
    r = strdup((const char *)t);
    if (!r)
        *oom = true;
    return r;
}

/* ---- transactions -------------------------------------------------------------------- */

static int begin_immediate(struct capsa_store *store, capsa_err *err)
{
    int64_t deadline = mono_ms() + CAPSA_STORE_BUSY_TIMEOUT_MS;
    unsigned attempt = 0;

    for (;;) {
        int rc = sqlite3_exec(store->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            return 0;
        if (!is_busy(rc) || mono_ms() > deadline)
            return store_fail(store, err, is_busy(rc) ? EBUSY : 0,
                              "store %s: BEGIN IMMEDIATE (gave up after %d ms)", store->path,
                              CAPSA_STORE_BUSY_TIMEOUT_MS);
        busy_backoff(attempt++);
    }
}

int capsa_store_tx_begin(struct capsa_store *store, capsa_err *err)
{
    char sql[64];

    if (store_check_owner(store, err) < 0)
        return -1;
    if (store->depth > 0 && sqlite3_get_autocommit(store->db))
        store->depth = 0; /* SQLite rolled the transaction back itself (e.g. disk full) */
    if (store->depth == 0) {
        if (begin_immediate(store, err) < 0)
            return -1;
    } else {
        snprintf(sql, sizeof(sql), "SAVEPOINT capsa_sp%d", store->depth);
        if (exec_sql(store, sql, "savepoint", err) < 0)
            return -1;
    }
    store->depth++;
    return 0;
}

int capsa_store_tx_commit(struct capsa_store *store, capsa_err *err)
{
    char sql[64];

    if (store_check_owner(store, err) < 0)
        return -1;
    if (store->depth <= 0)
        return capsa_err_set(err, EINVAL, "store %s: commit without a transaction", store->path);
    if (sqlite3_get_autocommit(store->db)) {
        store->depth = 0;
        return capsa_err_set(err, EIO,
                             "store %s: commit: the transaction was already rolled back by SQLite",
                             store->path);
    }
    if (store->depth > 1) {
        snprintf(sql, sizeof(sql), "RELEASE capsa_sp%d", store->depth - 1);
        if (exec_sql(store, sql, "release savepoint", err) < 0)
            return -1;
        store->depth--;
        return 0;
    }
    if (exec_sql(store, "COMMIT", "commit", err) < 0) {
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
        store->depth = 0;
        return -1;
    }
    store->depth = 0;
    return 0;
}

void capsa_store_tx_rollback(struct capsa_store *store)
{
    char sql[96];

    if (!store || !store->db || store->depth <= 0 || store->pid != getpid())
        return;
    if (sqlite3_get_autocommit(store->db)) {
        store->depth = 0;
        return;
    }
    if (store->depth > 1) {
        snprintf(sql, sizeof(sql), "ROLLBACK TO capsa_sp%d; RELEASE capsa_sp%d", store->depth - 1,
                 store->depth - 1);
        sqlite3_exec(store->db, sql, NULL, NULL, NULL);
        store->depth--;
        return;
    }
    sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
    store->depth = 0;
}

int capsa_store_tx_depth(const struct capsa_store *store)
{
    return store ? store->depth : 0;
}

int store_write_begin(struct capsa_store *store, capsa_err *err)
{
    return capsa_store_tx_begin(store, err);
}

int store_write_end(struct capsa_store *store, int rc, capsa_err *err)
{
    if (rc < 0) {
        capsa_store_tx_rollback(store);
        return -1;
    }
    return capsa_store_tx_commit(store, err);
}

int store_read_begin(struct capsa_store *store, bool *started, capsa_err *err)
{
    *started = false;
    if (store_check_owner(store, err) < 0)
        return -1;
    if (!sqlite3_get_autocommit(store->db))
        return 0;
    if (exec_sql(store, "BEGIN DEFERRED", "begin read", err) < 0)
        return -1;
    *started = true;
    return 0;
}

void store_read_end(struct capsa_store *store, bool started)
{
    if (started && !sqlite3_get_autocommit(store->db))
        sqlite3_exec(store->db, "COMMIT", NULL, NULL, NULL);
}

/* ---- open / migrate / close ---------------------------------------------------------- */

static int pragma_int(struct capsa_store *store, const char *sql, int *out, capsa_err *err)
{
    _cleanup_stmt_ sqlite3_stmt *st = NULL;
    int rc;

    if (store_prepare(store, sql, &st, err) < 0)
        return -1;
    rc = store_step_row(store, st, sql, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return capsa_err_set(err, EIO, "store %s: %s returned no row", store->path, sql);
    *out = sqlite3_column_int(st, 0);
    return 0;
}

int capsa_store_schema_version(struct capsa_store *store, int *version, capsa_err *err)
{
    return pragma_int(store, "PRAGMA user_version", version, err);
}

static int too_new(struct capsa_store *store, int v, capsa_err *err)
{
    return capsa_err_set(err, EPROTO,
                         "store %s: database schema version %d is newer than this capsa "
                         "understands (%d); upgrade capsa or use another CAPSA_HOME",
                         store->path, v, CAPSA_STORE_SCHEMA_VERSION);
}

static int migrate_one(struct capsa_store *store, int *version, capsa_err *err)
{
    char sql[128];
    int v;

    if (capsa_store_tx_begin(store, err) < 0)
        return -1;
    /* Re-read under the write lock: another process may have migrated meanwhile. */
    if (capsa_store_schema_version(store, &v, err) < 0)
        goto fail;
    if (v > CAPSA_STORE_SCHEMA_VERSION) {
        too_new(store, v, err);
        goto fail;
    }
    if (v < 0) {
        capsa_err_set(err, EPROTO, "store %s: negative schema version %d", store->path, v);
        goto fail;
    }
    if (v < CAPSA_STORE_SCHEMA_VERSION) {
        if (exec_sql(store, capsa_store_migrations[v], "migration", err) < 0) {
            capsa_err_prefix(err, "migrating to schema version %d", v + 1);
            goto fail;
        }
        snprintf(sql, sizeof(sql),
                 "PRAGMA user_version = %d; INSERT INTO schema_migrations VALUES (%d, %lld)", v + 1,
                 v + 1, (long long)capsa_store_now_ms());
        if (exec_sql(store, sql, "recording schema version", err) < 0)
            goto fail;
        v++;
    }
    if (capsa_store_tx_commit(store, err) < 0)
        return -1;
    *version = v;
    return 0;
fail:
    capsa_store_tx_rollback(store);
    return -1;
}

static int store_migrate(struct capsa_store *store, capsa_err *err)
{
    int v;

    if (capsa_store_schema_version(store, &v, err) < 0)
        return -1;
    if (v > CAPSA_STORE_SCHEMA_VERSION)
        return too_new(store, v, err);
    while (v < CAPSA_STORE_SCHEMA_VERSION)
        if (migrate_one(store, &v, err) < 0)
            return -1;
    return 0;
}

static int set_wal(struct capsa_store *store, capsa_err *err)
{
    int64_t deadline = mono_ms() + CAPSA_STORE_BUSY_TIMEOUT_MS;
    unsigned attempt = 0;

    for (;;) {
        _cleanup_stmt_ sqlite3_stmt *st = NULL;
        const char *mode;
        int rc;

        if (store_prepare(store, "PRAGMA journal_mode=WAL", &st, err) < 0)
            return -1;
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            mode = (const char *)sqlite3_column_text(st, 0);
            if (mode && strcmp(mode, "wal") == 0)
                return 0;
            return capsa_err_set(err, EIO, "store %s: cannot switch to WAL (journal mode %s)",
                                 store->path, mode ? mode : "?");
        }
        if (!is_busy(rc) || mono_ms() > deadline)
            return store_fail(store, err, 0, "store %s: PRAGMA journal_mode=WAL", store->path);
        busy_backoff(attempt++);
    }
}

/* Create the file 0600 ourselves so SQLite (and its -wal/-shm, which copy the mode) never
 * makes it world-readable. */
static int precreate(const char *path, capsa_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return capsa_err_set(err, errno, "store: open %s: %s", path, strerror(errno));
    return 0;
}

/* SQLite keeps per-process lock bookkeeping (one record per open database file) that a
 * forked child inherits but cannot use: a connection the child opens on the same file
 * believes the parent's locks are its own process's and waits forever. So a process that
 * was forked while connections were open must exec before opening the store. */
static int open_count;
static pid_t open_pid;

static int fork_guard(capsa_err *err)
{
    pid_t me = getpid();
    int n = __atomic_load_n(&open_count, __ATOMIC_SEQ_CST);

    if (n > 0 && __atomic_load_n(&open_pid, __ATOMIC_SEQ_CST) != me)
        return capsa_err_set(err, EBUSY,
                             "store: this process was forked while pid %d had %d store "
                             "connection(s) open; SQLite cannot open a database again after "
                             "such a fork: exec first, or fork before opening the store",
                             (int)open_pid, n);
    __atomic_store_n(&open_pid, me, __ATOMIC_SEQ_CST);
    return 0;
}

int capsa_store_open(const char *path, struct capsa_store **out, capsa_err *err)
{
    _cleanup_(capsa_store_closep) struct capsa_store *store = NULL;
    char dir[4096];
    int n;

    *out = NULL;
    if (fork_guard(err) < 0)
        return -1;
    store = calloc(1, sizeof(*store));
    if (!store)
        return capsa_err_set(err, ENOMEM, "store: out of memory");
    store->pid = getpid();
    if (path) {
        if (!*path)
            return capsa_err_set(err, EINVAL, "store: empty database path");
        n = snprintf(store->path, sizeof(store->path), "%s", path);
        if (n < 0 || (size_t)n >= sizeof(store->path))
            return capsa_err_set(err, ENAMETOOLONG, "store: database path too long");
        memcpy(dir, store->path, sizeof(dir));
        if (capsa_mkdir_p(dirname(dir), 0700, err) < 0)
            return capsa_err_prefix(err, "store");
    } else {
        if (capsa_home(dir, sizeof(dir), err) < 0)
            return capsa_err_prefix(err, "store");
        if (capsa_mkdir_p(dir, 0700, err) < 0)
            return capsa_err_prefix(err, "store");
        if (capsa_path(store->path, sizeof(store->path), err, "capsa.db") < 0)
            return capsa_err_prefix(err, "store");
    }
    if (precreate(store->path, err) < 0)
        return -1;

    __atomic_add_fetch(&open_count, 1, __ATOMIC_SEQ_CST);
    store->counted = true;
    int rc = sqlite3_open_v2(store->path, &store->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOFOLLOW |
                                 SQLITE_OPEN_EXRESCODE,
                             NULL);
    if (rc != SQLITE_OK) {
        if (!store->db)
            return capsa_err_set(err, ENOMEM, "store %s: open: out of memory", store->path);
        return store_fail(store, err, 0, "store %s: open", store->path);
    }
    sqlite3_busy_timeout(store->db, CAPSA_STORE_BUSY_TIMEOUT_MS);
    sqlite3_extended_result_codes(store->db, 1);
    if (set_wal(store, err) < 0)
        return -1;
    if (exec_sql(store, "PRAGMA foreign_keys=ON; PRAGMA synchronous=NORMAL", "pragmas", err) < 0)
        return -1;
    int fk = 0;
    if (pragma_int(store, "PRAGMA foreign_keys", &fk, err) < 0)
        return -1;
    if (fk != 1)
        return capsa_err_set(err, EIO, "store %s: SQLite refused to enable foreign keys",
                             store->path);
    if (store_migrate(store, err) < 0)
        return -1;
    *out = steal_pointer(&store);
    return 0;
}

void capsa_store_close(struct capsa_store *store)
{
    if (!store)
        return;
    if (store->db && store->pid == getpid()) {
        if (store->depth > 0 && !sqlite3_get_autocommit(store->db))
            sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
        sqlite3_close_v2(store->db);
    }
    if (store->counted && store->pid == getpid())
        __atomic_sub_fetch(&open_count, 1, __ATOMIC_SEQ_CST);
    /* In a forked child the inherited connection is abandoned: closing it could
     * checkpoint or unlink the parent's WAL. */
    free(store);
}

void capsa_store_closep(struct capsa_store **store)
{
    capsa_store_close(*store);
    *store = NULL;
}

const char *capsa_store_path(const struct capsa_store *store)
{
    return store->path;
}

struct sqlite3 *capsa_store_handle(struct capsa_store *store)
{
    return store->db;
}

/* ---- validation ---------------------------------------------------------------------- */

static bool is_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int capsa_store_check_name(const char *what, const char *name, capsa_err *err)
{
    const char *why;
    size_t n, at;

    if (!name || !*name)
        return capsa_err_set(err, EINVAL, "%s: must not be empty", what);
    n = strlen(name);
    if (n > CAPSA_NAME_MAX)
        return capsa_err_set(err, EINVAL, "%s: %zu bytes long, at most %d allowed", what, n,
                             CAPSA_NAME_MAX);
    if ((why = capsa_name_problem(name, &at)))
        return capsa_err_set(err, EINVAL,
                             "%s '%.128s': character %zu (0x%02x) not allowed: name %s", what, name,
                             at, (unsigned char)name[at], why);
    return 0;
}

int capsa_store_check_label(const char *key, const char *value, capsa_err *err)
{
    size_t n;

    if (!key || !*key)
        return capsa_err_set(err, EINVAL, "label key: must not be empty");
    n = strlen(key);
    if (n > CAPSA_LABEL_KEY_MAX)
        return capsa_err_set(err, EINVAL, "label key: %zu bytes long, at most %d allowed", n,
                             CAPSA_LABEL_KEY_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (!is_alnum(c) && c != '.' && c != '_' && c != '-' && c != '/')
            return capsa_err_set(err, EINVAL,
                                 "label key '%.256s': character %zu (0x%02x) not allowed; use "
                                 "[A-Za-z0-9._/-]",
                                 key, i, c);
    }
    if (!value)
        return capsa_err_set(err, EINVAL, "label %s: value missing", key);
    n = strlen(value);
    if (n > CAPSA_LABEL_VALUE_MAX)
        return capsa_err_set(err, EINVAL, "label %s: value is %zu bytes long, at most %d allowed",
                             key, n, CAPSA_LABEL_VALUE_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7f)
            return capsa_err_set(
                err, EINVAL, "label %s: value has control byte 0x%02x at offset %zu", key, c, i);
    }
    /* Labels are emitted in JSON output: they must be UTF-8. */
    json_t *j = json_string(value);
    if (!j)
        return capsa_err_set(err, EINVAL, "label %s: value is not valid UTF-8", key);
    json_decref(j);
    return 0;
}

int store_check_labels(const struct capsa_store_label *labels, size_t n, capsa_err *err)
{
    if (n && !labels)
        return capsa_err_set(err, EINVAL, "labels: %zu labels but no array", n);
    for (size_t i = 0; i < n; i++) {
        if (capsa_store_check_label(labels[i].key, labels[i].value, err) < 0)
            return capsa_err_prefix(err, "labels[%zu]", i);
        for (size_t j = 0; j < i; j++)
            if (strcmp(labels[i].key, labels[j].key) == 0)
                return capsa_err_set(err, EINVAL, "labels[%zu]: duplicate key %s", i,
                                     labels[i].key);
    }
    return 0;
}

int store_check_json_object(const char *what, const char *json, capsa_err *err)
{
    json_error_t jerr;
    json_t *v;

    if (!json)
        return capsa_err_set(err, EINVAL, "%s: missing", what);
    v = json_loads(json, JSON_DECODE_ANY, &jerr);
    if (!v)
        return capsa_err_set(err, EINVAL, "%s: invalid JSON at line %d column %d: %s", what,
                             jerr.line, jerr.column, jerr.text);
    bool obj = json_is_object(v);
    json_decref(v);
    if (!obj)
        return capsa_err_set(err, EINVAL, "%s: must be a JSON object", what);
    return 0;
}

int store_check_digest(const char *what, const char *digest, capsa_err *err)
{
    if (!digest || strncmp(digest, "sha256:", 7) != 0 || strlen(digest) != 7 + 64)
        return capsa_err_set(err, EINVAL, "%s '%.100s': expected sha256:<64 hex digits>", what,
                             digest ? digest : "(null)");
    for (const char *p = digest + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return capsa_err_set(err, EINVAL,
                                 "%s '%.100s': expected lowercase hex after sha256:", what, digest);
    return 0;
}

/* ---- labels as JSON ------------------------------------------------------------------ */

void capsa_store_labels_free(struct capsa_store_label *labels, size_t n)
{
    if (!labels)
        return;
    for (size_t i = 0; i < n; i++) {
        free(labels[i].key);
        free(labels[i].value);
    }
    free(labels);
}

int store_labels_to_json(const struct capsa_store_label *labels, size_t n, char **out,
                         capsa_err *err)
{
    json_t *o = json_object();

    *out = NULL;
    if (!o)
        return capsa_err_set(err, ENOMEM, "labels: out of memory");
    for (size_t i = 0; i < n; i++) {
        if (json_object_set_new(o, labels[i].key, json_string(labels[i].value)) < 0) {
            json_decref(o);
            return capsa_err_set(err, EINVAL, "labels[%zu]: not valid UTF-8", i);
        }
    }
    *out = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
    json_decref(o);
    if (!*out)
        return capsa_err_set(err, ENOMEM, "labels: out of memory");
    return 0;
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const struct capsa_store_label *)a)->key,
                  ((const struct capsa_store_label *)b)->key);
}

int store_labels_from_json(const char *json, struct capsa_store_label **out, size_t *n,
                           capsa_err *err)
{
    json_error_t jerr;
    json_t *o, *v;
    const char *k;
    struct capsa_store_label *arr;
    size_t i = 0;

    *out = NULL;
    *n = 0;
    if (!json)
        return 0;
    o = json_loads(json, 0, &jerr);
    if (!o || !json_is_object(o)) {
        json_decref(o);
        return capsa_err_set(err, EIO, "stored labels are not a JSON object");
    }
    if (json_object_size(o) == 0) {
        json_decref(o);
        return 0;
    }
    arr = calloc(json_object_size(o), sizeof(*arr));
    if (!arr) {
        json_decref(o);
        return capsa_err_set(err, ENOMEM, "labels: out of memory");
    }
    json_object_foreach(o, k, v)
    {
        arr[i].key = strdup(k);
        arr[i].value = strdup(json_is_string(v) ? json_string_value(v) : "");
        i++;
        if (!arr[i - 1].key || !arr[i - 1].value) {
            capsa_store_labels_free(arr, i);
            json_decref(o);
            return capsa_err_set(err, ENOMEM, "labels: out of memory");
        }
    }
    json_decref(o);
    qsort(arr, i, sizeof(*arr), label_cmp);
    *out = arr;
    *n = i;
    return 0;
}
