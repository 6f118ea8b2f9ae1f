/* ref.h - OCI image references: parse "[registry/]repo[:tag][@digest]" with Docker's rules. */
#ifndef CAPSA_IMAGE_REF_H
#define CAPSA_IMAGE_REF_H

#include <stdbool.h>
#include <stddef.h>

#include "capsa.h"

#define CAPSA_REF_MAX      512
#define CAPSA_REPO_MAX     255
#define CAPSA_REGISTRY_MAX 256
#define CAPSA_TAG_MAX      128
#define CAPSA_DIGEST_MAX   72 /* "sha256:" + 64 hex + NUL */

struct capsa_image_ref {
    char registry[CAPSA_REGISTRY_MAX];   /* "docker.io", "127.0.0.1:5000", ... */
    char repository[CAPSA_REPO_MAX + 1]; /* "library/busybox" */
    char tag[CAPSA_TAG_MAX + 1];         /* "" when only a digest was given */
    char digest[CAPSA_DIGEST_MAX];       /* "" when none was given */
};

/* Parse s. Defaults: registry docker.io, a one-component docker.io repository gets
 * "library/", tag "latest" when neither tag nor digest is given. The first component is a
 * registry when it contains '.' or ':' or is "localhost". Only sha256 digests. */
int capsa_image_ref_parse(const char *s, struct capsa_image_ref *out, capsa_err *err);

/* "registry/repository:tag" (or "@digest" when there is no tag; both when both). */
void capsa_image_ref_format(const struct capsa_image_ref *r, char *buf, size_t len);

/* The host[:port] that serves the registry API ("registry-1.docker.io" for docker.io). */
const char *capsa_image_ref_api_host(const struct capsa_image_ref *r);

/* True when s is "sha256:" followed by exactly 64 lowercase hex digits. */
bool capsa_digest_valid(const char *s);

#endif
