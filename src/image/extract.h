/* extract.h - apply OCI layer tarballs to a root directory with libarchive, safely.
 *
 * Theory of operation: every entry's path is normalised (leading "./" dropped) and refused
 * when absolute or containing "..". Parent directories are walked one component at a time
 * with O_NOFOLLOW|O_DIRECTORY from the root's fd, so nothing is ever written through a
 * symlink, and the final component is created with *at() calls relative to that parent
 * (O_EXCL|O_NOFOLLOW for files). Whiteouts (.wh.NAME) remove NAME; an opaque marker
 * (.wh..wh..opq) removes what lower layers put in its directory. Hardlink targets obey
 * the same rules. Ownership, modes (setuid included), xattrs (not overlay's own), device
 * nodes, fifos and mtimes are kept. The uncompressed stream is hashed as it is read (by a
 * thread of its own): the result is the layer's diff_id. Limits: path 4095 bytes, component
 * 255, symlink target 4095, 64 xattrs of at most 64 KiB per entry, 2,000,000 entries per
 * layer; libarchive refuses oversized special headers.
 */
#ifndef CAPSA_IMAGE_EXTRACT_H
#define CAPSA_IMAGE_EXTRACT_H

#include <stdint.h>
#include <sys/types.h>

#include "capsa.h"
#include "image/manifest.h"

struct capsa_layer_stats {
    uint64_t entries;
    uint64_t bytes; /* regular-file bytes written */
};

/* Apply the layer read from blobfd (compressed as comp) onto the tree at rootfd (a directory
 * fd). diff_id receives "sha256:<hex>" of the uncompressed stream. stats may be NULL. */
int capsa_layer_apply(int rootfd, int blobfd, enum capsa_layer_compression comp,
                      char diff_id[CAPSA_DIGEST_MAX], struct capsa_layer_stats *stats,
                      capsa_err *err);

/* The same, reading the compressed layer through fn: it returns up to len bytes, 0 at the end,
 * -1 with err set on failure (that error is the one reported). */
typedef ssize_t (*capsa_layer_read_fn)(void *ctx, void *buf, size_t len, capsa_err *err);
/* A capsa_layer_read_fn reading a file descriptor (ctx points to the int fd). */
ssize_t capsa_layer_fd_read(void *ctx, void *buf, size_t len, capsa_err *err);
/* Split a normalised path "a/b/c" into dir "a/b" (copied into DIR) and name "c" (points into
 * PATH); a path without '/' gives dir "". */
void capsa_layer_path_split(const char *path, char *dir, size_t dlen, const char **name);
int capsa_layer_apply_stream(int rootfd, capsa_layer_read_fn fn, void *fn_ctx,
                             enum capsa_layer_compression comp, char diff_id[CAPSA_DIGEST_MAX],
                             struct capsa_layer_stats *stats, capsa_err *err);

/* Normalise a tar path into out (len bytes): no leading "./", no "." components, no trailing
 * '/'; absolute paths and ".." are refused (what names the path in errors). "" is the root. */
int capsa_layer_normalize(const char *in, char *out, size_t len, const char *what, capsa_err *err);

/* A consumer of layer entries in place of a directory tree: called for every tar entry with
 * the tar reader a (read the entry's data from it); returns 0, or -1 with err set. */
struct archive;
struct archive_entry;
typedef int (*capsa_layer_entry_fn)(void *ctx, struct archive *a, struct archive_entry *e,
                                    capsa_err *err);

/* Read a layer like capsa_layer_apply_stream (decompression, diff_id, entry cap) but hand
 * each entry to sink instead of writing a tree. */
int capsa_layer_walk(capsa_layer_read_fn fn, void *fn_ctx, enum capsa_layer_compression comp,
                     capsa_layer_entry_fn sink, void *sink_ctx, char diff_id[CAPSA_DIGEST_MAX],
                     struct capsa_layer_stats *stats, capsa_err *err);

#endif
