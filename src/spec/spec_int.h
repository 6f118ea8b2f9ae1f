/* spec_int.h - internals of the spec module: the checking context and the schema tables.
 *
 * Theory of operation: every wire type is described by a normalizer, a function
 * `json_t *fn(struct spec_ctx *c, json_t *in, const void *arg)` that validates `in` (found at
 * the path held in c) and returns a new reference to its normalized form. Errors are appended
 * to the context with the current path; a normalizer keeps going after an error so that one
 * pass reports every problem, and returns NULL only when it has nothing usable to return
 * (partial objects are fine: the result is discarded when any error was recorded).
 * Objects are tables of spec_field (name, normalizer, flags, default); externally tagged
 * enums ({"Bind": ...}) and internally tagged ones ({"type": "Bind", ...}) are tables of
 * variants. A per-object `post` hook does the cross-field checks.
 */
#ifndef CAPSA_SPEC_INT_H
#define CAPSA_SPEC_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "spec/spec.h"

#define SPEC_PATH_MAX 512

struct spec_ctx {
    capsa_spec_errors *errs;
    size_t nerr; /* errors recorded by this check (including ones not kept) */
    char path[SPEC_PATH_MAX];
    size_t len;
};

typedef json_t *(*spec_norm_fn)(struct spec_ctx *c, json_t *in, const void *arg);

/* Record "PATH: MESSAGE" (PATH is "(root)" at the top). */
void spec_error(struct spec_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Path stack: push returns the length to pass to spec_pop. */
size_t spec_push_field(struct spec_ctx *c, const char *name);
size_t spec_push_index(struct spec_ctx *c, size_t i);
size_t spec_push_key(struct spec_ctx *c, const char *key);
void spec_pop(struct spec_ctx *c, size_t saved);

/* ---- field tables ---- */
enum {
    SF_REQUIRED = 1u << 0,     /* must be present (and, unless SF_NULLABLE, non-null) */
    SF_NULLABLE = 1u << 1,     /* null is a valid value and is kept */
    SF_OPTIONAL = 1u << 2,     /* seed `field?`: written only when non-null */
    SF_NULL_DEFAULT = 1u << 3, /* null means "use the default" (an Option with a default) */
};

struct spec_field {
    const char *name;
    spec_norm_fn fn; /* NULL: any JSON value (JsonValue), copied */
    const void *arg;
    unsigned flags;
    const char *dflt; /* JSON text normalized in place of an absent field, or NULL */
};

struct spec_object {
    const char *type_name;
    const struct spec_field *fields;
    size_t nfields;
    /* Cross-field checks on the normalized (possibly partial) object; c->path is the object's. */
    void (*post)(struct spec_ctx *c, json_t *out);
    /* Input-only aliases consumed before the field walk (e.g. upper_size_mib); may be NULL. */
    void (*pre)(struct spec_ctx *c, json_t *in, json_t *work);
};
#define SPEC_OBJECT(tn, f, p)                                                                      \
    {                                                                                              \
        tn, f, sizeof(f) / sizeof((f)[0]), p, NULL                                                 \
    }

/* Externally tagged enum: a string naming a unit variant, or {"Tag": content}. */
struct spec_variant {
    const char *tag;
    spec_norm_fn fn; /* NULL for a unit variant */
    const void *arg;
};
struct spec_tagged {
    const char *type_name;
    const struct spec_variant *variants;
    size_t nvariants;
};

/* Internally tagged enum: {"<tag_field>": "Tag", ...fields}. Each variant object's first
 * field must be the tag field itself (checked with spec_norm_const). */
struct spec_itagged {
    const char *type_name;
    const char *tag_field;
    const char *const *tags;               /* NULL-terminated */
    const struct spec_object *const *objs; /* parallel to tags */
};

struct spec_range {
    json_int_t min, max;
    const char *unit; /* appended to messages ("MiB"), may be NULL */
};

struct spec_array {
    spec_norm_fn fn;
    const void *arg;
    size_t max_items;
};

/* String with a checker returning NULL when fine or a static message. */
struct spec_string {
    size_t max_len;
    const char *(*check)(const char *s);
    bool allow_empty;
};

struct spec_map {
    const char *(*key_check)(const char *key); /* NULL: any non-empty key */
    spec_norm_fn fn;                           /* value normalizer */
    const void *arg;
    size_t max_items;
};

/* ---- generic normalizers ---- */
json_t *spec_norm_object(struct spec_ctx *c, json_t *in, const void *obj /* spec_object */);
json_t *spec_norm_tagged(struct spec_ctx *c, json_t *in, const void *t /* spec_tagged */);
json_t *spec_norm_itagged(struct spec_ctx *c, json_t *in, const void *t /* spec_itagged */);
json_t *spec_norm_enum(struct spec_ctx *c, json_t *in, const void *values /* const char *[] */);
json_t *spec_norm_const(struct spec_ctx *c, json_t *in, const void *value /* const char * */);
json_t *spec_norm_bool(struct spec_ctx *c, json_t *in, const void *arg);
json_t *spec_norm_int(struct spec_ctx *c, json_t *in, const void *range /* spec_range */);
json_t *spec_norm_string(struct spec_ctx *c, json_t *in, const void *s /* spec_string, or NULL */);
json_t *spec_norm_array(struct spec_ctx *c, json_t *in, const void *a /* spec_array */);
json_t *spec_norm_map(struct spec_ctx *c, json_t *in, const void *m /* spec_map */);
json_t *spec_norm_pairs(struct spec_ctx *c, json_t *in, const void *key_check /* fn or NULL */);
json_t *spec_norm_any(struct spec_ctx *c, json_t *in, const void *arg);
/* Absolute guest path: no "..", canonicalized ("//" and "." removed, no trailing "/"). */
json_t *spec_norm_guest_path(struct spec_ctx *c, json_t *in, const void *arg);

/* ---- string checkers (NULL = valid, else a message) ---- */
const char *spec_check_name(const char *s);      /* sandbox/volume/snapshot name */
const char *spec_check_host_path(const char *s); /* absolute host path */
const char *spec_check_env_key(const char *s);
const char *spec_check_label_key(const char *s);
const char *spec_check_hostname(const char *s); /* RFC 1123 host name */
const char *spec_check_domain(const char *s);   /* DNS name, optional leading "*." not allowed */
const char *spec_check_ip(const char *s);       /* IPv4 or IPv6 literal */
const char *spec_check_cidr(const char *s);     /* IP[/prefix] */
const char *spec_check_image_ref(const char *s);
const char *spec_check_fstype(const char *s);
const char *spec_check_timestamp(const char *s); /* RFC 3339 */
const char *spec_check_uuid(const char *s);

/* Shared ranges and strings. */
extern const struct spec_range spec_range_port; /* 1..65535 */
extern const struct spec_range spec_range_mib;  /* 1..16 TiB in MiB */
extern const struct spec_range spec_range_mode; /* 0..07777 */
extern const struct spec_range spec_range_secs; /* 1..10 years */
extern const struct spec_range spec_range_u64;  /* 0..INT64_MAX */
extern const struct spec_string spec_str_any;   /* any non-empty string <= 64 KiB */
extern const struct spec_string spec_str_text;  /* any string (may be empty) <= 16 MiB */
extern const struct spec_string spec_str_name;
extern const struct spec_string spec_str_host_path;
extern const struct spec_string spec_str_fstype;
extern const struct spec_string spec_str_timestamp;
extern const struct spec_array spec_arr_strings; /* array of strings (may be empty) */

/* Lookups on normalized objects (NULL-safe; missing/null give the fallback). */
const char *spec_get_str(const json_t *o, const char *key);
json_int_t spec_get_int(const json_t *o, const char *key, json_int_t fallback);
bool spec_get_bool(const json_t *o, const char *key, bool fallback);

/* ---- the type registry ---- */
struct spec_type {
    const char *name;
    spec_norm_fn fn;
    const void *arg;
};
extern const struct spec_type spec_domain_types[];
extern const size_t spec_domain_ntypes;
extern const struct spec_type spec_net_types[];
extern const size_t spec_net_ntypes;
extern const struct spec_type spec_cloud_types[];
extern const size_t spec_cloud_ntypes;

/* Network subdocument normalizers used by NetworkSpec. */
extern const struct spec_object spec_obj_network_policy;
extern const struct spec_object spec_obj_dns_config;
extern const struct spec_object spec_obj_tls_config;
extern const struct spec_object spec_obj_secrets_config;
extern const struct spec_object spec_obj_interface_overrides;

#endif
