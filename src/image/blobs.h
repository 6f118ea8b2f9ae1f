/* blobs.h - the content-addressed blob store under $CAPSA_HOME/images/: atomic writes,
 * per-blob locks, parallel resumable downloads from a registry.
 *
 * Layout: images/blobs/sha256/<hex> (complete, verified blobs only; they appear by rename),
 * images/tmp/ (partial downloads <hex>.part kept for resuming, build directories),
 * images/locks/<hex>.lock (flock: one process fetches or builds a given digest at a time),
 * images/disks/<manifest-hex>/ (lower disk + config, see image.h). */
#ifndef CAPSA_IMAGE_BLOBS_H
#define CAPSA_IMAGE_BLOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsa.h"
#include "image/manifest.h"
#include "image/registry.h"

/* buf = $CAPSA_HOME/images/<formatted sub path>; creates nothing. */
int capsa_images_path(char *buf, size_t len, capsa_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Create images/{blobs/sha256,tmp,locks,disks} (0700). */
int capsa_images_init(capsa_err *err);

int capsa_blob_path(const char *digest, char *buf, size_t len, capsa_err *err);
bool capsa_blob_present(const char *digest);

/* flock images/locks/<key>.lock; mode LOCK_SH or LOCK_EX, optionally | LOCK_NB. Returns the
 * fd (close it to unlock), -2 when LOCK_NB and busy, -1 on error. */
int capsa_images_lock(const char *key, int mode, capsa_err *err);

/* Store data as blob digest (verified first), atomically (temp + fsync + rename). */
int capsa_blob_put(const char *digest, const void *data, size_t len, capsa_err *err);
/* Read a stored blob of at most cap bytes, verifying its digest. */
int capsa_blob_read(const char *digest, size_t cap, char **data, size_t *len, capsa_err *err);
/* Re-hash a stored blob; EBADMSG if it does not match (the caller may remove it). */
int capsa_blob_verify(const char *digest, int64_t size, capsa_err *err);
int capsa_blob_remove(const char *digest, capsa_err *err);

enum capsa_progress_mode {
    CAPSA_PROGRESS_NONE = 0,
    CAPSA_PROGRESS_LINES, /* one line per event */
    CAPSA_PROGRESS_TTY,   /* redrawn bar per layer */
};

/* Make every descriptor's blob present: blobs already stored are skipped (re-verified when
 * verify_existing), others downloaded in parallel into images/tmp/<hex>.part (resumed when
 * a partial file exists), checked for size and digest, and renamed into place. A blob another
 * process is fetching is waited for, not fetched twice. On a size or digest mismatch the
 * partial file is removed. */
int capsa_blobs_fetch(struct capsa_registry *reg, const struct capsa_descriptor *descs, size_t n,
                      bool verify_existing, enum capsa_progress_mode progress, capsa_err *err);

/* A blob feed lets another thread read blobs while capsa_blobs_fetch_feed downloads them (the
 * pull extracts layer i while later layers are still arriving). Entry i follows descs[i]: a
 * stored blob is readable at once; a download is readable up to the bytes received so far and
 * ends (read returns 0) only once the whole blob is there and its digest matched; a blob that
 * fails (digest, size, transfer) or is never fetched makes reads fail. Whatever a reader
 * consumed before the digest check is still only trusted through the check that follows it:
 * the pull verifies every layer's diff_id and builds nothing from a failed feed. Without
 * `stream`, an entry is readable only once it is complete and verified (a pull pinned to a
 * manifest digest trusts nothing the registry sends before its digest matched). */
struct capsa_blob_feed;
int capsa_blob_feed_new(size_t n, bool stream, struct capsa_blob_feed **out, capsa_err *err);
void capsa_blob_feed_free(struct capsa_blob_feed *f);
/* Fail every entry that is not complete yet (wakes readers; e.g. the fetch failed). */
void capsa_blob_feed_close(struct capsa_blob_feed *f, const capsa_err *why);
/* Read up to len bytes of entry i at offset off, waiting for them. Returns the count, 0 at
 * the end of a verified blob, -1 with err set when the entry failed. */
ssize_t capsa_blob_feed_read(struct capsa_blob_feed *f, size_t i, void *buf, size_t len,
                             int64_t off, capsa_err *err);
/* capsa_blobs_fetch that also fills feed (n entries; may be NULL). On return every entry is
 * either complete or failed. */
int capsa_blobs_fetch_feed(struct capsa_registry *reg, const struct capsa_descriptor *descs,
                           size_t n, bool verify_existing, enum capsa_progress_mode progress,
                           struct capsa_blob_feed *feed, capsa_err *err);

#endif
