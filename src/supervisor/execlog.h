/* execlog.h - a sandbox's exec.log: JSON-lines encoder, rotating writer, reader and the
 * --since/--until time parser (docs/logs.md).
 *
 * Each line is {"t": RFC3339 UTC ms, "s": source, "d": data, "id"?: session, "e"?: "base64"}.
 * `d` is one line of output (trailing "\n" included when there was one) or a chunk of at most
 * CAPSA_EXECLOG_CHUNK_MAX bytes; data that is not valid UTF-8 is stored base64 with e=base64.
 * The writer rotates exec.log -> exec.log.1 -> .2 -> .3 when a line would take the file over
 * the rotation size (10 MiB, env CAPSA_LOG_ROTATE_BYTES), keeping three old files.
 */
#ifndef CAPSA_SUPERVISOR_EXECLOG_H
#define CAPSA_SUPERVISOR_EXECLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsa.h"

#define CAPSA_EXECLOG_CHUNK_MAX  8192
#define CAPSA_EXECLOG_ROTATE_DEF (10ull << 20)
#define CAPSA_EXECLOG_KEEP       3
#define CAPSA_EXECLOG_ROTATE_ENV "CAPSA_LOG_ROTATE_BYTES"

enum capsa_log_source {
    CAPSA_LOG_SRC_STDOUT = 0,
    CAPSA_LOG_SRC_STDERR,
    CAPSA_LOG_SRC_OUTPUT,
    CAPSA_LOG_SRC_SYSTEM,
};
#define CAPSA_LOG_SRC_ALL     0xfu
#define CAPSA_LOG_SRC_DEFAULT 0x7u /* stdout, stderr, output */

const char *capsa_log_source_name(enum capsa_log_source s);
/* "stdout,stderr" / "all" -> bit mask (1 << source); -1 with err naming the bad word. */
int capsa_log_source_parse(const char *list, unsigned *mask, capsa_err *err);

/* Encode one line (with the trailing '\n') into a malloc'd string; session 0 = no "id". */
char *capsa_execlog_encode(int64_t t_ms, enum capsa_log_source src, uint64_t session,
                           const void *data, size_t len);
/* RFC 3339 UTC with milliseconds, e.g. 2026-11-29T15:34:20.060Z (buf >= 32 bytes). */
void capsa_execlog_fmt_time(int64_t ms, char *buf, size_t len);
/* "2026-11-29T15:34:20Z", "...20.5+01:00", "2026-11-29" or a duration ago ("5m", "2h", "1d",
 * "30s", "500ms") relative to now_ms -> ms since the epoch. */
int capsa_execlog_parse_time(const char *s, int64_t now_ms, int64_t *out_ms, capsa_err *err);

/* A decoded line. data is malloc'd (freed by capsa_execlog_entry_clear). */
struct capsa_execlog_entry {
    int64_t t_ms;
    enum capsa_log_source src;
    uint64_t session;
    uint8_t *data;
    size_t len;
};
/* Parse one JSON line; -1 for a malformed one. */
int capsa_execlog_decode(const char *line, size_t len, struct capsa_execlog_entry *e);
void capsa_execlog_entry_clear(struct capsa_execlog_entry *e);

/* Rotating writer (single writer: the supervisor). */
struct capsa_execlog {
    char path[4200];
    int fd;
    uint64_t size, rotate_bytes;
};
void capsa_execlog_open(struct capsa_execlog *w, const char *path);
void capsa_execlog_close(struct capsa_execlog *w);
/* Write one entry (data longer than CAPSA_EXECLOG_CHUNK_MAX is split). Best effort. */
void capsa_execlog_write(struct capsa_execlog *w, enum capsa_log_source src, uint64_t session,
                         const void *data, size_t len);
/* Append one line to a log file without keeping it open (e.g. a marker from another process). */
void capsa_execlog_append_line(const char *path, enum capsa_log_source src, const char *text);

/* Line splitter for one output stream: whole lines go out at once, partial lines after
 * CAPSA_EXECLOG_CHUNK_MAX bytes or when flushed. */
struct capsa_execlog_buf {
    uint8_t b[CAPSA_EXECLOG_CHUNK_MAX];
    size_t n;
    uint64_t since_us; /* when the pending partial line began (0: nothing pending) */
};
void capsa_execlog_feed(struct capsa_execlog *w, struct capsa_execlog_buf *lb,
                        enum capsa_log_source src, uint64_t session, const uint8_t *p, size_t len,
                        uint64_t now_us);
void capsa_execlog_flush(struct capsa_execlog *w, struct capsa_execlog_buf *lb,
                         enum capsa_log_source src, uint64_t session);

int64_t capsa_execlog_now_ms(void);

#endif
