/* image.h - pulled OCI images: the pull pipeline (registry -> blobs -> rootfs tree -> erofs
 * lower disk), local lookup and removal. See docs/images.md.
 *
 * Theory of operation: `capsa_image_pull` resolves the reference (an index is narrowed to
 * linux/<host arch>), stores the manifest and config as blobs and, holding the manifest's
 * lock, fetches the layers in parallel (blobs.h) while a builder thread applies them in order
 * to a temporary tree (extract.h): it reads each layer through a blob feed as the bytes
 * arrive, so extraction overlaps the downloads, and checks each diff_id against the config
 * (a layer whose download then fails its digest fails the pull; the tree is thrown away).
 * The builder then makes images/disks/<manifest-hex>/lower.erofs with mkfs.erofs (its
 * writeback started while it runs), writes config.json (the runtime subset of the image
 * config) beside it, and renames the directory into place.
 * Only then are the layer and image rows written to SQLite. A second pull of a reference
 * whose disk exists touches no network unless forced. Pulls take the images "gc" lock shared
 * and removal takes it exclusive, so a removal never deletes blobs a pull is using.
 */
#ifndef CAPSA_IMAGE_IMAGE_H
#define CAPSA_IMAGE_IMAGE_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "capsa.h"
#include "image/blobs.h"
#include "image/ref.h"

struct capsa_image_pull_opts {
    bool force; /* re-resolve the manifest, re-verify blobs, rebuild disk */
    enum capsa_progress_mode progress;
    bool insecure;        /* --insecure for the registry named in the reference */
    const char *ca_certs; /* --ca-certs PEM */
    long timeout_s;       /* 0: default (CAPSA_REGISTRY_TIMEOUT or 30) */
    bool refresh;         /* resolve the reference again even when it is pulled (pull policy
                             always); a manifest whose disk exists is reused, not rebuilt */
};

struct capsa_image_info {
    char reference[CAPSA_REF_MAX]; /* canonical, e.g. docker.io/library/busybox:latest */
    char manifest_digest[CAPSA_DIGEST_MAX];
    char config_digest[CAPSA_DIGEST_MAX];
    char dir[PATH_MAX];         /* images/disks/<manifest-hex> */
    char disk[PATH_MAX];        /* .../lower.erofs: read-only lower disk */
    char config_path[PATH_MAX]; /* .../config.json: Env, Entrypoint, Cmd, WorkingDir, ... */
    int64_t size;               /* compressed bytes of config + layers */
    bool cached;                /* pull found everything locally */
};

/* Pull ref (see struct above). out may be NULL. */
int capsa_image_pull(const char *ref, const struct capsa_image_pull_opts *opts,
                     struct capsa_image_info *out, capsa_err *err);

/* Find a pulled image by reference (normalised like pull does) or manifest digest; ENOENT
 * when it is not pulled or its disk is missing. No network. */
int capsa_image_lookup(const char *ref, struct capsa_image_info *out, capsa_err *err);

/* Remove the reference; when no other reference uses its manifest, its disk directory, its
 * manifest and config blobs, and every layer no other image uses go too. */
int capsa_image_remove(const char *ref, capsa_err *err);

/* Install an image whose config and layer blobs are already in the blob store (capsa load):
 * store the manifest body as a blob, check the config, build the lower disk as a pull does
 * (every layer's diff_id is checked) and write the image row under ref. */
int capsa_image_install(const char *ref, const char *manifest_body, size_t len,
                        enum capsa_progress_mode progress, struct capsa_image_info *out,
                        capsa_err *err);

/* Canonical form of a user reference ("busybox" -> "docker.io/library/busybox:latest");
 * digests and "sha256:..." keys pass through. */
int capsa_image_canonical(const char *ref, char *buf, size_t len, capsa_err *err);

#endif
