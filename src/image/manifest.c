/* manifest.c - parse and validate OCI / Docker schema 2 manifests, indexes and image configs. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "image/manifest.h"

#define _cleanup_json_ _cleanup_(json_decrefp)

static const char *const layer_types[] = {
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
};

static int layer_compression(const char *mt, enum capsa_layer_compression *c)
{
    for (size_t i = 0; i < ARRAY_SIZE(layer_types); i++) {
        if (strcmp(mt, layer_types[i]) != 0)
            continue;
        size_t n = strlen(mt);
        if (n > 5 && !strcmp(mt + n - 5, "+zstd"))
            *c = CAPSA_LAYER_ZSTD;
        else if (n > 5 && (!strcmp(mt + n - 5, "+gzip") || !strcmp(mt + n - 5, ".gzip")))
            *c = CAPSA_LAYER_GZIP;
        else
            *c = CAPSA_LAYER_TAR;
        return 0;
    }
    return -1;
}

static int get_str(json_t *obj, const char *key, bool required, char *buf, size_t len,
                   const char *where, capsa_err *err)
{
    json_t *v = json_object_get(obj, key);

    buf[0] = '\0';
    if (!v || json_is_null(v)) {
        if (required)
            return capsa_err_set(err, EINVAL, "%s.%s: missing", where, key);
        return 0;
    }
    if (!json_is_string(v))
        return capsa_err_set(err, EINVAL, "%s.%s: expected a string", where, key);
    if (json_string_length(v) >= len || strlen(json_string_value(v)) != json_string_length(v))
        return capsa_err_set(err, EINVAL, "%s.%s: longer than %zu bytes or contains NUL", where,
                             key, len - 1);
    memcpy(buf, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int parse_descriptor(json_t *d, const char *where, struct capsa_descriptor *out,
                            capsa_err *err)
{
    json_t *size;

    memset(out, 0, sizeof(*out));
    if (!json_is_object(d))
        return capsa_err_set(err, EINVAL, "%s: expected an object", where);
    if (get_str(d, "mediaType", true, out->media_type, sizeof(out->media_type), where, err) < 0 ||
        get_str(d, "digest", true, out->digest, sizeof(out->digest), where, err) < 0)
        return -1;
    if (!capsa_digest_valid(out->digest))
        return capsa_err_set(err, EINVAL,
                             "%s.digest: '%s' is not sha256: followed by 64 lowercase hex digits",
                             where, out->digest);
    size = json_object_get(d, "size");
    if (!json_is_integer(size) || json_integer_value(size) < 0 ||
        json_integer_value(size) > (int64_t)1 << 50)
        return capsa_err_set(err, EINVAL, "%s.size: expected an integer from 0 to 2^50", where);
    out->size = json_integer_value(size);
    return 0;
}

void capsa_manifest_clear(struct capsa_manifest *m)
{
    if (!m)
        return;
    free(m->layers);
    free(m->manifests);
    memset(m, 0, sizeof(*m));
}

static int parse_image(json_t *root, struct capsa_manifest *out, capsa_err *err)
{
    json_t *layers = json_object_get(root, "layers");
    char where[48];

    out->kind = CAPSA_MANIFEST_IMAGE;
    if (parse_descriptor(json_object_get(root, "config"), "manifest.config", &out->config, err) < 0)
        return -1;
    if (strcmp(out->config.media_type, CAPSA_MT_OCI_CONFIG) != 0 &&
        strcmp(out->config.media_type, CAPSA_MT_DOCKER_CONFIG) != 0)
        return capsa_err_set(err, EINVAL,
                             "manifest.config.mediaType: '%s' is not a container image config "
                             "(an OCI artifact?)",
                             out->config.media_type);
    if (out->config.size > CAPSA_CONFIG_MAX)
        return capsa_err_set(err, EFBIG, "manifest.config.size: %lld bytes exceeds the %u-byte cap",
                             (long long)out->config.size, CAPSA_CONFIG_MAX);
    if (!json_is_array(layers))
        return capsa_err_set(err, EINVAL, "manifest.layers: expected an array");
    if (json_array_size(layers) > CAPSA_LAYERS_MAX)
        return capsa_err_set(err, E2BIG, "manifest.layers: %zu layers exceeds the cap of %d",
                             json_array_size(layers), CAPSA_LAYERS_MAX);
    out->n_layers = json_array_size(layers);
    out->layers = calloc(out->n_layers ? out->n_layers : 1, sizeof(*out->layers));
    if (!out->layers)
        return capsa_err_set(err, ENOMEM, "manifest: out of memory");
    for (size_t i = 0; i < out->n_layers; i++) {
        snprintf(where, sizeof(where), "manifest.layers[%zu]", i);
        if (parse_descriptor(json_array_get(layers, i), where, &out->layers[i], err) < 0)
            return -1;
        if (layer_compression(out->layers[i].media_type, &out->layers[i].compression) < 0)
            return capsa_err_set(err, EINVAL, "%s.mediaType: '%s' is not a supported layer type",
                                 where, out->layers[i].media_type);
    }
    return 0;
}

static int parse_index(json_t *root, struct capsa_manifest *out, capsa_err *err)
{
    json_t *ms = json_object_get(root, "manifests");
    char where[48];

    out->kind = CAPSA_MANIFEST_INDEX;
    if (!json_is_array(ms))
        return capsa_err_set(err, EINVAL, "index.manifests: expected an array");
    if (json_array_size(ms) > CAPSA_INDEX_MAX)
        return capsa_err_set(err, E2BIG, "index.manifests: %zu entries exceeds the cap of %d",
                             json_array_size(ms), CAPSA_INDEX_MAX);
    out->n_manifests = json_array_size(ms);
    out->manifests = calloc(out->n_manifests ? out->n_manifests : 1, sizeof(*out->manifests));
    if (!out->manifests)
        return capsa_err_set(err, ENOMEM, "index: out of memory");
    for (size_t i = 0; i < out->n_manifests; i++) {
        json_t *e = json_array_get(ms, i), *plat;
        struct capsa_descriptor *d = &out->manifests[i];
        snprintf(where, sizeof(where), "index.manifests[%zu]", i);
        if (parse_descriptor(e, where, d, err) < 0)
            return -1;
        plat = json_object_get(e, "platform");
        if (plat) {
            char pw[64];
            snprintf(pw, sizeof(pw), "%s.platform", where);
            if (!json_is_object(plat))
                return capsa_err_set(err, EINVAL, "%s: expected an object", pw);
            if (get_str(plat, "os", false, d->os, sizeof(d->os), pw, err) < 0 ||
                get_str(plat, "architecture", false, d->arch, sizeof(d->arch), pw, err) < 0 ||
                get_str(plat, "variant", false, d->variant, sizeof(d->variant), pw, err) < 0)
                return -1;
        }
    }
    return 0;
}

int capsa_manifest_parse(const char *body, size_t len, const char *content_type,
                         struct capsa_manifest *out, capsa_err *err)
{
    _cleanup_json_ json_t *root = NULL;
    json_error_t jerr;
    json_t *sv;
    char mt[CAPSA_MEDIA_TYPE_MAX] = "";

    memset(out, 0, sizeof(*out));
    if (len > CAPSA_MANIFEST_MAX)
        return capsa_err_set(err, EFBIG, "manifest: %zu bytes exceeds the %u-byte cap", len,
                             CAPSA_MANIFEST_MAX);
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return capsa_err_set(err, EINVAL, "manifest: invalid JSON at line %d column %d: %s",
                             jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root))
        return capsa_err_set(err, EINVAL, "manifest: expected a JSON object");
    sv = json_object_get(root, "schemaVersion");
    if (!json_is_integer(sv) || json_integer_value(sv) != 2)
        return capsa_err_set(err, EINVAL,
                             "manifest.schemaVersion: expected 2 (Docker schema 1 is not "
                             "supported)");
    if (get_str(root, "mediaType", false, mt, sizeof(mt), "manifest", err) < 0)
        return -1;
    if (!mt[0] && content_type) {
        size_t n = strcspn(content_type, "; \t");
        if (n < sizeof(mt))
            snprintf(mt, sizeof(mt), "%.*s", (int)n, content_type);
    }
    if (!mt[0]) {
        /* OCI allows an absent mediaType: tell by shape. */
        if (json_object_get(root, "manifests"))
            snprintf(mt, sizeof(mt), "%s", CAPSA_MT_OCI_INDEX);
        else
            snprintf(mt, sizeof(mt), "%s", CAPSA_MT_OCI_MANIFEST);
    }
    snprintf(out->media_type, sizeof(out->media_type), "%s", mt);
    int rc;
    if (!strcmp(mt, CAPSA_MT_OCI_MANIFEST) || !strcmp(mt, CAPSA_MT_DOCKER_MANIFEST))
        rc = parse_image(root, out, err);
    else if (!strcmp(mt, CAPSA_MT_OCI_INDEX) || !strcmp(mt, CAPSA_MT_DOCKER_LIST))
        rc = parse_index(root, out, err);
    else
        rc = capsa_err_set(err, EINVAL, "manifest.mediaType: '%s' is not a supported manifest type",
                           mt);
    if (rc < 0)
        capsa_manifest_clear(out);
    return rc;
}

const char *capsa_host_arch(void)
{
    struct utsname u;

    if (uname(&u) == 0) {
        if (!strcmp(u.machine, "aarch64"))
            return "arm64";
        if (!strcmp(u.machine, "riscv64"))
            return "riscv64";
        if (!strcmp(u.machine, "ppc64le"))
            return "ppc64le";
        if (!strcmp(u.machine, "s390x"))
            return "s390x";
    }
    return "amd64";
}

int capsa_manifest_select(const struct capsa_manifest *index, const char *os, const char *arch,
                          const char *variant, const struct capsa_descriptor **out, capsa_err *err)
{
    char offered[512] = "";
    size_t used = 0;

    *out = NULL;
    for (size_t i = 0; i < index->n_manifests; i++) {
        const struct capsa_descriptor *d = &index->manifests[i];
        if (strcmp(d->os, os) != 0 || strcmp(d->arch, arch) != 0)
            goto note;
        if (variant && *variant && d->variant[0] && strcmp(d->variant, variant) != 0)
            goto note;
        if (strcmp(d->media_type, CAPSA_MT_OCI_MANIFEST) != 0 &&
            strcmp(d->media_type, CAPSA_MT_DOCKER_MANIFEST) != 0)
            goto note;
        *out = d;
        return 0;
    note:
        if (used < sizeof(offered) - 1) {
            int n = snprintf(offered + used, sizeof(offered) - used, "%s%s/%s%s%s",
                             used ? ", " : "", d->os[0] ? d->os : "?", d->arch[0] ? d->arch : "?",
                             d->variant[0] ? "/" : "", d->variant);
            if (n > 0)
                used += (size_t)n;
        }
    }
    return capsa_err_set(err, ENOENT, "index has no image for %s/%s (it offers: %s)", os, arch,
                         used ? offered : "nothing");
}

void capsa_image_config_clear(struct capsa_image_config *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_diff_ids; i++)
        free(c->diff_ids[i]);
    free(c->diff_ids);
    if (c->runtime)
        json_decref(c->runtime);
    memset(c, 0, sizeof(*c));
}

static bool strarray_ok(json_t *v)
{
    size_t i;
    json_t *e;

    if (!json_is_array(v))
        return false;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e) || strlen(json_string_value(e)) != json_string_length(e))
            return false;
    }
    return true;
}

static bool strmap_ok(json_t *v, bool values_any)
{
    const char *k;
    json_t *e;

    if (!json_is_object(v))
        return false;
    json_object_foreach(v, k, e)
    {
        if (!values_any && !json_is_string(e))
            return false;
    }
    return true;
}

static int copy_runtime(json_t *cfg, json_t *out, capsa_err *err)
{
    static const struct {
        const char *key;
        char kind; /* a: string array, s: string, m: string map, o: object */
    } keys[] = {
        {"Env", 'a'},        {"Entrypoint", 'a'},   {"Cmd", 'a'},
        {"WorkingDir", 's'}, {"User", 's'},         {"Labels", 'm'},
        {"StopSignal", 's'}, {"ExposedPorts", 'o'}, {"Volumes", 'o'},
    };

    if (!cfg || json_is_null(cfg))
        return 0;
    if (!json_is_object(cfg))
        return capsa_err_set(err, EINVAL, "image config.config: expected an object");
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        json_t *v = json_object_get(cfg, keys[i].key);
        bool ok;
        if (!v || json_is_null(v))
            continue;
        switch (keys[i].kind) {
        case 'a':
            ok = strarray_ok(v);
            break;
        case 's':
            ok = json_is_string(v) && strlen(json_string_value(v)) == json_string_length(v);
            break;
        case 'm':
            ok = strmap_ok(v, false);
            break;
        default:
            ok = strmap_ok(v, true);
            break;
        }
        if (!ok)
            return capsa_err_set(err, EINVAL, "image config.config.%s: expected %s", keys[i].key,
                                 keys[i].kind == 'a'   ? "an array of strings"
                                 : keys[i].kind == 's' ? "a string"
                                 : keys[i].kind == 'm' ? "an object of strings"
                                                       : "an object");
        json_object_set(out, keys[i].key, v);
    }
    return 0;
}

int capsa_image_config_parse(const char *body, size_t len, struct capsa_image_config *out,
                             capsa_err *err)
{
    _cleanup_json_ json_t *root = NULL;
    json_error_t jerr;
    json_t *rootfs, *ids, *e;
    char type[32];
    size_t i;

    memset(out, 0, sizeof(*out));
    if (len > CAPSA_CONFIG_MAX)
        return capsa_err_set(err, EFBIG, "image config: %zu bytes exceeds the %u-byte cap", len,
                             CAPSA_CONFIG_MAX);
    root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return capsa_err_set(err, EINVAL, "image config: invalid JSON at line %d column %d: %s",
                             jerr.line, jerr.column, jerr.text);
    if (!json_is_object(root))
        return capsa_err_set(err, EINVAL, "image config: expected a JSON object");
    if (get_str(root, "os", false, out->os, sizeof(out->os), "image config", err) < 0 ||
        get_str(root, "architecture", false, out->arch, sizeof(out->arch), "image config", err) < 0)
        goto fail;
    rootfs = json_object_get(root, "rootfs");
    if (!json_is_object(rootfs))
        return capsa_err_set(err, EINVAL, "image config.rootfs: expected an object");
    if (get_str(rootfs, "type", true, type, sizeof(type), "image config.rootfs", err) < 0)
        goto fail;
    if (strcmp(type, "layers") != 0)
        return capsa_err_set(err, EINVAL,
                             "image config.rootfs.type: expected \"layers\", got \"%s\"", type);
    ids = json_object_get(rootfs, "diff_ids");
    if (!json_is_array(ids))
        return capsa_err_set(err, EINVAL, "image config.rootfs.diff_ids: expected an array");
    if (json_array_size(ids) > CAPSA_LAYERS_MAX)
        return capsa_err_set(err, E2BIG, "image config.rootfs.diff_ids: more than %d entries",
                             CAPSA_LAYERS_MAX);
    out->diff_ids = calloc(json_array_size(ids) + 1, sizeof(char *));
    out->runtime = json_object();
    if (!out->diff_ids || !out->runtime) {
        capsa_err_set(err, ENOMEM, "image config: out of memory");
        goto fail;
    }
    json_array_foreach(ids, i, e)
    {
        if (!json_is_string(e) || !capsa_digest_valid(json_string_value(e))) {
            capsa_err_set(err, EINVAL,
                          "image config.rootfs.diff_ids[%zu]: expected sha256: followed by 64 "
                          "lowercase hex digits",
                          i);
            goto fail;
        }
        out->diff_ids[i] = strdup(json_string_value(e));
        if (!out->diff_ids[i]) {
            capsa_err_set(err, ENOMEM, "image config: out of memory");
            goto fail;
        }
        out->n_diff_ids = i + 1;
    }
    if (copy_runtime(json_object_get(root, "config"), out->runtime, err) < 0)
        goto fail;
    return 0;
fail:
    capsa_image_config_clear(out);
    return -1;
}
