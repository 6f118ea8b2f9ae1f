/* erofs.h - build an image's read-only lower disk (EROFS) straight from its layer tar streams.
 *
 * Theory of operation: layers are fed in order; each is read by extract.c's walker (the same
 * decompression, diff_id hashing, path normalisation and caps as extraction to a tree) and
 * applied to an in-memory tree (name -> node with mode, owner, mtime, rdev, symlink target,
 * xattrs; hardlinks share a node). OCI whiteouts delete names, an opaque marker drops what
 * lower layers put in its directory. Regular-file data is streamed into the image file as it
 * is read, block aligned, from block 1 on (block 0 holds the superblock at byte 1024); data of
 * files an upper layer replaces or deletes stays behind unreferenced. capsa_erofs_finish then
 * writes directory and symlink blocks, the metadata area (64-byte extended inodes, root first
 * so that its nid is 0, inline xattrs, tails of directories/symlinks inline when they fit in
 * the inode's block) and the superblock. Format: uncompressed EROFS, 4096-byte blocks, no
 * checksum, no shared xattrs, no compression (Linux >= 5.4 mounts it). Limits: 2,000,000 nodes,
 * 64 KiB of xattrs per node, 2^32 blocks (16 TiB).
 */
#ifndef CAPSA_IMAGE_EROFS_H
#define CAPSA_IMAGE_EROFS_H

#include "capsa.h"
#include "image/extract.h"
#include "image/manifest.h"

struct capsa_erofs;

/* Start an image in fd (an empty regular file opened for writing; not closed by the writer). */
int capsa_erofs_new(int fd, struct capsa_erofs **out, capsa_err *err);

/* Apply one layer read through fn (compressed as comp). diff_id receives "sha256:<hex>" of the
 * uncompressed stream; stats may be NULL. After a failure the writer can only be freed. */
int capsa_erofs_add_layer(struct capsa_erofs *w, capsa_layer_read_fn fn, void *fn_ctx,
                          enum capsa_layer_compression comp, char diff_id[CAPSA_DIGEST_MAX],
                          struct capsa_layer_stats *stats, capsa_err *err);

/* The same, reading the layer from a file descriptor. */
int capsa_erofs_add_layer_fd(struct capsa_erofs *w, int blobfd, enum capsa_layer_compression comp,
                             char diff_id[CAPSA_DIGEST_MAX], struct capsa_layer_stats *stats,
                             capsa_err *err);

/* Write metadata and superblock; the file then holds a complete image (not fsynced). */
int capsa_erofs_finish(struct capsa_erofs *w, capsa_err *err);

void capsa_erofs_free(struct capsa_erofs *w);

#endif
