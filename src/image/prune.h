/* prune.h - `capsa image prune` (garbage-collect the image store) and matching images by any
 * reference, full digest or digest prefix for `capsa image rm` / `inspect`.
 *
 * Theory of operation (see docs/images.md "Prune"): an image is *used* when a sandbox (any
 * status) pins its manifest digest (config image.Oci.reference = REPO@sha256:...) or was
 * created from one of its references, or a snapshot names its manifest or a reference.
 * Prune first decides which image references go (without --all: the unused *dangling*
 * images, those whose references are all digest-only, i.e. carry no tag; with --all: every
 * unused image), then, holding the store's gc lock exclusively (so no pull or load runs),
 * deletes those rows and every manifest and layer row nothing uses any more in one
 * transaction. Only after the commit does it walk images/: every blob, lower-disk
 * directory, partial download and temp entry that no remaining row names is deleted, each
 * after its per-digest lock was taken without blocking (a holder keeps it), and every lock
 * file that nobody holds goes last. An interruption after the commit leaves unreferenced
 * files only, which the next prune collects.
 */
#ifndef CAPSA_IMAGE_PRUNE_H
#define CAPSA_IMAGE_PRUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsa.h"
#include "image/ref.h"
#include "store/store.h"

/* Shortest digest prefix accepted (hex digits after "sha256:"), as docker. */
#define CAPSA_DIGEST_PREFIX_MIN 12

/* ---- matching images by a user key ---------------------------------------------------- */

enum capsa_image_key_kind {
    CAPSA_IMAGE_KEY_REF = 0,     /* a reference: exact match of its canonical form */
    CAPSA_IMAGE_KEY_DIGEST,      /* sha256:<64 hex> (or 64 bare hex): every reference to it */
    CAPSA_IMAGE_KEY_REPO_DIGEST, /* REPO@sha256:<64 hex>: references of REPO to that digest */
    CAPSA_IMAGE_KEY_PREFIX,      /* [sha256:]<12..63 hex>: the one manifest starting so */
};

struct capsa_image_key {
    enum capsa_image_key_kind kind;
    char ref[CAPSA_REF_MAX];       /* REF: canonical reference; REPO_DIGEST: registry/repository;
                                      PREFIX: the canonical reference the bare hex would also be
                                      as a name ("" when it is not a valid one) */
    char digest[CAPSA_DIGEST_MAX]; /* DIGEST/REPO_DIGEST: full digest; PREFIX: "sha256:<hex>" */
};

/* Classify and normalise s (hex is lowercased). EINVAL for an unparsable reference or a
 * "sha256:" prefix shorter than CAPSA_DIGEST_PREFIX_MIN. */
int capsa_image_key_parse(const char *s, struct capsa_image_key *out, capsa_err *err);

/* Does the stored image (reference -> manifest_digest) match the key? For PREFIX only the
 * digest prefix counts (the name fallback is capsa_image_key_select's business). */
bool capsa_image_key_match(const struct capsa_image_key *k, const char *reference,
                           const char *manifest_digest);

/* Mark in sel[] (n entries, cleared first) the images the key names: a PREFIX key that is
 * also a stored reference names that reference; otherwise a PREFIX must name exactly one
 * manifest (EINVAL "ambiguous", listing the candidates). Returns the number selected, or
 * -1 with ENOENT when nothing matches. `what` is the key as the user typed it. */
int capsa_image_key_select(const struct capsa_image_key *k, const char *what,
                           const struct capsa_store_image *imgs, size_t n, bool *sel,
                           capsa_err *err);

/* The manifest digest pinned by a reference ("...@sha256:<hex>"), or false. */
bool capsa_image_pinned_digest(const char *ref, char out[CAPSA_DIGEST_MAX]);

/* Does the user (sandbox or snapshot) keep the image reference -> manifest alive? */
bool capsa_image_user_uses(const struct capsa_store_image_user *u, const char *reference,
                           const char *manifest_digest);

/* ---- rm ------------------------------------------------------------------------------- */

/* Remove the images key names (see capsa_image_key_select) with capsa_image_remove. Unless
 * force, refused with EBUSY, naming the sandboxes and snapshots, when a manifest would lose
 * its last reference while one of them uses it. *removed (may be NULL) gets the references
 * removed, NULL-terminated (free with capsa_strvfreep). */
int capsa_image_rm(const char *key, bool force, char ***removed, capsa_err *err);

/* ---- prune ---------------------------------------------------------------------------- */

struct capsa_image_prune_opts {
    bool all;   /* every unused image, not only dangling (untagged) ones */
    bool quiet; /* no "waiting for ..." notice on stderr */
};

/* Which references prune drops: drop[i] for imgs[i] (n entries). An image (manifest) is
 * kept when any user uses any of its references; otherwise without `all` it goes only when
 * none of its references has a tag. */
void capsa_image_prune_select(const struct capsa_store_image *imgs, size_t n,
                              const struct capsa_store_image_user *users, size_t n_users, bool all,
                              bool *drop);

enum capsa_prune_kind {
    CAPSA_PRUNE_BLOB = 0, /* blobs/sha256/<hex> */
    CAPSA_PRUNE_DISK,     /* disks/<manifest-hex>/ */
    CAPSA_PRUNE_PARTIAL,  /* tmp/<hex>.part */
    CAPSA_PRUNE_TMP,      /* other tmp/ entries: .put., .tree., .build., load., .prune. */
    CAPSA_PRUNE_LOCK,     /* locks/<key>.lock */
    CAPSA_PRUNE_KIND_COUNT,
};
/* "blob", "disk", "partial", "tmp", "lock". */
const char *capsa_prune_kind_name(enum capsa_prune_kind k);

/* What an entry of images/AREA/ (AREA "blobs/sha256", "disks", "tmp" or "locks") is: its
 * kind, the digest hex or lock key it belongs to (hex, 65 bytes; "" when none), and the
 * process id its name carries (0 when none). -1 for a name capsa never creates there
 * (prune leaves those alone) and for "gc.lock" (never removed). */
int capsa_prune_classify(const char *area, const char *name, char hex[65], long *pid);

struct capsa_prune_entry {
    enum capsa_prune_kind kind; /* files; unused for images */
    char *name;                 /* images: reference; files: path under images/ */
    char *digest;               /* images: manifest digest; files: NULL */
    int64_t bytes;              /* files: bytes on disk (allocated blocks) */
};

struct capsa_image_prune_report {
    struct capsa_prune_entry *images; /* references removed */
    size_t n_images;
    struct capsa_prune_entry *files; /* files and directories removed */
    size_t n_files;
    struct capsa_prune_entry *kept; /* left because another process holds them (name only) */
    size_t n_kept;
    size_t manifests_removed, layers_removed; /* rows */
    size_t n_by_kind[CAPSA_PRUNE_KIND_COUNT];
    int64_t bytes_reclaimed;
};
void capsa_image_prune_report_clear(struct capsa_image_prune_report *r);

/* Prune the store (see the theory above). rep is filled even when a later file removal
 * failed (that failure is logged and the walk goes on; the next prune retries it). */
int capsa_image_prune(const struct capsa_image_prune_opts *opts,
                      struct capsa_image_prune_report *rep, capsa_err *err);

#endif
