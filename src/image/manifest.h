/* manifest.h - OCI / Docker schema 2 manifests, indexes (manifest lists) and image configs:
 * strict parsing of hostile registry JSON into small validated structs. */
#ifndef CAPSA_IMAGE_MANIFEST_H
#define CAPSA_IMAGE_MANIFEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsa.h"
#include "image/ref.h"

#define CAPSA_MANIFEST_MAX   (4u << 20) /* bytes of a manifest or index */
#define CAPSA_CONFIG_MAX     (8u << 20) /* bytes of an image config blob */
#define CAPSA_LAYERS_MAX     256
#define CAPSA_INDEX_MAX      1024 /* entries in an index */
#define CAPSA_MEDIA_TYPE_MAX 128

#define CAPSA_MT_OCI_MANIFEST    "application/vnd.oci.image.manifest.v1+json"
#define CAPSA_MT_OCI_INDEX       "application/vnd.oci.image.index.v1+json"
#define CAPSA_MT_DOCKER_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"
#define CAPSA_MT_DOCKER_LIST     "application/vnd.docker.distribution.manifest.list.v2+json"
#define CAPSA_MT_OCI_CONFIG      "application/vnd.oci.image.config.v1+json"
#define CAPSA_MT_DOCKER_CONFIG   "application/vnd.docker.container.image.v1+json"

enum capsa_manifest_kind {
    CAPSA_MANIFEST_IMAGE = 0,
    CAPSA_MANIFEST_INDEX,
};

enum capsa_layer_compression {
    CAPSA_LAYER_TAR = 0,
    CAPSA_LAYER_GZIP,
    CAPSA_LAYER_ZSTD,
};

struct capsa_descriptor {
    char media_type[CAPSA_MEDIA_TYPE_MAX];
    char digest[CAPSA_DIGEST_MAX];
    int64_t size;
    enum capsa_layer_compression compression; /* layers only */
    /* index entries only */
    char os[32];
    char arch[32];
    char variant[32];
};

struct capsa_manifest {
    enum capsa_manifest_kind kind;
    char media_type[CAPSA_MEDIA_TYPE_MAX];
    struct capsa_descriptor config;  /* image */
    struct capsa_descriptor *layers; /* image, lowest first */
    size_t n_layers;
    struct capsa_descriptor *manifests; /* index */
    size_t n_manifests;
};

/* Parse a manifest or index body. content_type (may be NULL) is the HTTP Content-Type and
 * is used only when the body has no mediaType. */
int capsa_manifest_parse(const char *body, size_t len, const char *content_type,
                         struct capsa_manifest *out, capsa_err *err);
void capsa_manifest_clear(struct capsa_manifest *m);

/* Pick the entry of an index for os/arch (variant may be NULL: any). ENOENT lists what the
 * index offers. */
int capsa_manifest_select(const struct capsa_manifest *index, const char *os, const char *arch,
                          const char *variant, const struct capsa_descriptor **out, capsa_err *err);

/* OCI architecture name of this host ("amd64", "arm64", ...). */
const char *capsa_host_arch(void);

struct capsa_image_config {
    char **diff_ids; /* "sha256:...", lowest layer first */
    size_t n_diff_ids;
    char os[32];
    char arch[32];
    /* The runtime subset (Env, Entrypoint, Cmd, WorkingDir, User, Labels, StopSignal,
     * ExposedPorts, Volumes), each validated; an object, never NULL after a parse. */
    json_t *runtime;
};

int capsa_image_config_parse(const char *body, size_t len, struct capsa_image_config *out,
                             capsa_err *err);
void capsa_image_config_clear(struct capsa_image_config *c);

#endif
