/* registry.h - OCI Distribution API v2 client (libcurl): auth challenges, manifests, blobs.
 *
 * Theory of operation: one struct capsa_registry talks to one repository of one registry.
 * Requests go to https://HOST/v2/REPO/...; with `insecure` (only for the registry the user
 * named with --insecure) TLS is not verified and a registry that does not speak TLS is
 * retried over plain http. A 401 carries a WWW-Authenticate challenge: Basic (credentials
 * sent as they are) or Bearer (a token fetched from the realm for scope
 * repository:REPO:pull, with Basic credentials when we have them); the request is retried
 * with it. A refused token is fetched again once (expired); a token too weak for its own scope
 * ends the request with an "authentication required"/"access denied" error. Every transfer has a
 * connect timeout and a low-speed limit (a registry that hangs ends in a clear error), bounded
 * redirects (https only unless insecure), and bodies kept in memory are capped. Blobs go to files,
 * several at once (curl multi), resuming a partial file with a Range request; the caller verifies
 * size and digest.
 */
#ifndef CAPSA_IMAGE_REGISTRY_H
#define CAPSA_IMAGE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsa.h"
#include "common/sha256.h"
#include "image/manifest.h"
#include "image/ref.h"

struct capsa_registry;

struct capsa_registry_opts {
    bool insecure;        /* allow http and unverified TLS for this registry */
    const char *ca_certs; /* PEM bundle to trust instead of the system's, or NULL */
    /* Seconds; 0 means the default (env CAPSA_REGISTRY_TIMEOUT, else 30). The connect
     * timeout and the low-speed window (< 1 byte/s for this long aborts) both use it. */
    long timeout_s;
    const char *username; /* NULL: env CAPSA_REGISTRY_USERNAME / $CAPSA_HOME/auth.json */
    const char *password;
};

int capsa_registry_open(const struct capsa_image_ref *ref, const struct capsa_registry_opts *opts,
                        struct capsa_registry **out, capsa_err *err);
void capsa_registry_close(struct capsa_registry *r);
void capsa_registry_closep(struct capsa_registry **r);

/* GET the manifest for reference (a tag or a digest). On success *body (malloc'd, NUL
 * terminated) holds at most CAPSA_MANIFEST_MAX bytes, content_type the HTTP Content-Type
 * and digest the sha256 of the body, checked against a digest reference and against the
 * registry's Docker-Content-Digest header. */
int capsa_registry_get_manifest(struct capsa_registry *r, const char *reference, char **body,
                                size_t *len, char *content_type, size_t ct_len,
                                char digest[CAPSA_DIGEST_MAX], capsa_err *err);

/* GET a small blob (an image config) into memory; size and digest are verified. */
int capsa_registry_get_blob(struct capsa_registry *r, const struct capsa_descriptor *d, size_t cap,
                            char **body, size_t *len, capsa_err *err);

/* One blob download into an open partial file. The caller fills desc and fd (positioned
 * anywhere; `have` bytes at its start are kept and already hashed into `hash`). On return
 * have/hash cover what the file holds; rc is 0 when the transfer ended cleanly (the caller
 * still checks size and digest), -1 with err set otherwise. */
struct capsa_blob_job {
    const struct capsa_descriptor *desc;
    int fd;
    int64_t have;
    capsa_sha256 hash;
    int rc;
    capsa_err err;
    void *priv; /* internal */
};

typedef void (*capsa_blob_progress_fn)(void *ctx, size_t job, int64_t have, int64_t total);

/* Run the jobs, at most `parallel` at a time. Returns 0 when every job has rc 0. */
int capsa_registry_fetch_blobs(struct capsa_registry *r, struct capsa_blob_job *jobs, size_t n,
                               unsigned parallel, capsa_blob_progress_fn progress, void *ctx,
                               capsa_err *err);

/* Parse a WWW-Authenticate value: scheme into scheme, realm/service/scope (each may be
 * empty). Returns -1 for a malformed value. Exposed for unit tests. */
int capsa_registry_parse_challenge(const char *value, char *scheme, size_t scheme_len, char *realm,
                                   size_t realm_len, char *service, size_t service_len, char *scope,
                                   size_t scope_len);

/* The same for any parameters: the first challenge's scheme, and in vals[i] (val_lens[i] bytes)
 * the value of parameter keys[i] (case-insensitive; "" when absent). A second challenge in the
 * same value ("Bearer realm=..., Basic realm=...") ends the first; token68 values are skipped.
 * Returns -1 for a malformed value or a wanted value that does not fit. */
int capsa_registry_challenge_params(const char *value, char *scheme, size_t scheme_len,
                                    const char *const *keys, char *const *vals,
                                    const size_t *val_lens, size_t n_keys);

#endif
