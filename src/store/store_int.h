/* store_int.h - helpers shared by the store's source files (not part of the store API). */
#ifndef CAPSA_STORE_STORE_INT_H
#define CAPSA_STORE_STORE_INT_H

#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "store/store.h"

struct capsa_store {
    sqlite3 *db;
    int depth;    /* open capsa_store_tx_begin levels */
    pid_t pid;    /* process that opened the connection */
    bool counted; /* included in the process-wide count of open connections */
    char path[4096];
};

static inline void store_finalizep(sqlite3_stmt **st)
{
    if (*st)
        sqlite3_finalize(*st);
}
#define _cleanup_stmt_ _cleanup_(store_finalizep)

/* Fail with the connection's last SQLite error: "CONTEXT: sqlite message". Maps
 * constraint/busy/other codes to EEXIST/EBUSY/EIO unless code is non-zero. */
int store_fail(struct capsa_store *store, capsa_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Refuses a connection used from a process other than its opener. */
int store_check_owner(struct capsa_store *store, capsa_err *err);

int store_prepare(struct capsa_store *store, const char *sql, sqlite3_stmt **st, capsa_err *err);
/* Run a statement that returns no rows; counts changes into *changes (may be NULL). */
int store_step_done(struct capsa_store *store, sqlite3_stmt *st, const char *what, int *changes,
                    capsa_err *err);
/* SQLITE_ROW -> 1, SQLITE_DONE -> 0, error -> -1 (err set). */
int store_step_row(struct capsa_store *store, sqlite3_stmt *st, const char *what, capsa_err *err);

/* Write scope: begin (a tx or savepoint), then end(ok): commit when ok, else roll back.
 * end returns -1 when the commit fails. */
int store_write_begin(struct capsa_store *store, capsa_err *err);
int store_write_end(struct capsa_store *store, int rc, capsa_err *err);
/* Read scope for multi-statement consistent reads: BEGIN DEFERRED unless already in a tx. */
int store_read_begin(struct capsa_store *store, bool *started, capsa_err *err);
void store_read_end(struct capsa_store *store, bool started);

/* Bind helpers: NULL / 0 map to SQL NULL. */
int store_bind_text(sqlite3_stmt *st, int idx, const char *s);
int store_bind_int64_or_null(sqlite3_stmt *st, int idx, int64_t v);

/* strdup of a column (NULL for SQL NULL); sets *oom on allocation failure. */
char *store_col_strdup(sqlite3_stmt *st, int col, bool *oom);

/* Labels stored as a JSON object text {"k":"v",...} (volumes, snapshots). */
int store_labels_to_json(const struct capsa_store_label *labels, size_t n, char **out,
                         capsa_err *err);
int store_labels_from_json(const char *json, struct capsa_store_label **out, size_t *n,
                           capsa_err *err);
int store_check_labels(const struct capsa_store_label *labels, size_t n, capsa_err *err);

/* config must be a JSON object. what names it in the error. */
int store_check_json_object(const char *what, const char *json, capsa_err *err);
/* "sha256:" + 64 lowercase hex. */
int store_check_digest(const char *what, const char *digest, capsa_err *err);

/* Drop a manifest (and its layer order) that no image reference or snapshot uses. */
int store_gc_manifest(struct capsa_store *store, const char *digest, bool keep_pinned,
                      capsa_err *err);

/* Migrations (store_schema.c). */
extern const char *const capsa_store_migrations[];
extern const int capsa_store_n_migrations;

#endif
