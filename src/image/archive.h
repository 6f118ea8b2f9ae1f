/* archive.h - `capsa load` / `capsa save`: docker-archive and OCI image layout tarballs.
 *
 * Load reads the tar once, streaming each regular entry (name bounded and normalised, size
 * capped) into a private temp directory under images/tmp named by entry number, hashing it
 * on the way; nothing is written at a path taken from the archive. The archive is then
 * recognised (oci-layout + index.json, or manifest.json), every blob checked against its
 * digest and size, moved into the blob store, and the image installed as a pull would
 * (capsa_image_install: diff_ids checked, lower disk built, row written). On failure the
 * blobs this load added are removed again and no image row is written.
 *
 * Save writes the stored manifest, config and layer blobs as blobs/sha256/<hex> plus either
 * manifest.json (docker) or oci-layout + index.json (oci). */
#ifndef CAPSA_IMAGE_ARCHIVE_H
#define CAPSA_IMAGE_ARCHIVE_H

#include <stddef.h>
#include <stdio.h>

#include "capsa.h"
#include "image/blobs.h"

#define CAPSA_ARCHIVE_ENTRIES_MAX 4096
#define CAPSA_ARCHIVE_NAME_MAX    512
#define CAPSA_ARCHIVE_ENTRY_MAX   (16LL << 30) /* bytes of one entry */
#define CAPSA_ARCHIVE_TOTAL_MAX   (64LL << 30) /* bytes of all entries */

enum capsa_archive_format {
    CAPSA_ARCHIVE_DOCKER = 0,
    CAPSA_ARCHIVE_OCI,
};

/* Load every image of the tar read from fd. tag (may be NULL) names the image instead of
 * the archive's names (only when the archive holds one image). Each loaded reference is
 * printed to report (may be NULL) as "Loaded image: REF". */
int capsa_archive_load(int fd, const char *tag, enum capsa_progress_mode progress, FILE *report,
                       capsa_err *err);

/* Write the pulled/loaded images refs[0..n) to fd as a tar in format. */
int capsa_archive_save(const char *const *refs, size_t n, enum capsa_archive_format format, int fd,
                       capsa_err *err);

#endif
