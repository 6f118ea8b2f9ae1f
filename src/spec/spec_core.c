/* spec_core.c - the checking engine: error list, JSON paths, generic normalizers, checkers. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/names.h"
#include "spec/spec_int.h"

/* ---- error list ------------------------------------------------------------------------ */

void capsa_spec_errors_free(capsa_spec_errors *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->count; i++)
        free(errs->items[i]);
    free(errs->items);
    errs->items = NULL;
    errs->count = 0;
    errs->dropped = 0;
}

size_t capsa_spec_errors_total(const capsa_spec_errors *errs)
{
    return errs ? errs->count + errs->dropped : 0;
}

int capsa_spec_errors_to_err(const capsa_spec_errors *errs, capsa_err *err)
{
    size_t total = capsa_spec_errors_total(errs);

    if (!errs || errs->count == 0)
        return capsa_err_set(err, EINVAL, "spec: invalid document");
    if (total > 1)
        return capsa_err_set(err, EINVAL, "spec: %s (and %zu more)", errs->items[0], total - 1);
    return capsa_err_set(err, EINVAL, "spec: %s", errs->items[0]);
}

static void errors_add(capsa_spec_errors *errs, char *msg)
{
    char **n;

    if (errs->count >= CAPSA_SPEC_MAX_ERRORS) {
        errs->dropped++;
        free(msg);
        return;
    }
    n = realloc(errs->items, (errs->count + 1) * sizeof(*n));
    if (!n) {
        errs->dropped++;
        free(msg);
        return;
    }
    errs->items = n;
    errs->items[errs->count++] = msg;
}

void spec_error(struct spec_ctx *c, const char *fmt, ...)
{
    char msg[768];
    char *full = NULL;
    va_list ap;

    c->nerr++;
    if (!c->errs)
        return;
    if (c->errs->count >= CAPSA_SPEC_MAX_ERRORS) {
        c->errs->dropped++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (asprintf(&full, "%s: %s", c->len ? c->path : "(root)", msg) < 0) {
        c->errs->dropped++;
        return;
    }
    errors_add(c->errs, full);
}

/* ---- path stack ------------------------------------------------------------------------ */

static size_t path_append(struct spec_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static size_t path_append(struct spec_ctx *c, const char *fmt, ...)
{
    size_t saved = c->len;
    va_list ap;
    int n;

    if (c->len >= sizeof(c->path) - 1)
        return saved;
    va_start(ap, fmt);
    n = vsnprintf(c->path + c->len, sizeof(c->path) - c->len, fmt, ap);
    va_end(ap);
    if (n < 0)
        c->path[c->len] = '\0';
    else if ((size_t)n >= sizeof(c->path) - c->len)
        c->len = sizeof(c->path) - 1;
    else
        c->len += (size_t)n;
    return saved;
}

size_t spec_push_field(struct spec_ctx *c, const char *name)
{
    return path_append(c, c->len ? ".%s" : "%s", name);
}

size_t spec_push_index(struct spec_ctx *c, size_t i)
{
    return path_append(c, "[%zu]", i);
}

/* Render s for a message: at most 64 bytes, quotes/backslashes escaped, controls as \xNN. */
static const char *show(const char *s, char *buf, size_t size)
{
    size_t o = 0;

    for (const unsigned char *p = (const unsigned char *)s; *p && o + 8 < size; p++) {
        if (o >= 64) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (*p == '"' || *p == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)*p;
        } else if (*p < 0x20 || *p == 0x7f) {
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", *p);
        } else {
            buf[o++] = (char)*p;
        }
    }
    buf[o] = '\0';
    return buf;
}

size_t spec_push_key(struct spec_ctx *c, const char *key)
{
    char buf[128];
    return path_append(c, "[\"%s\"]", show(key, buf, sizeof(buf)));
}

void spec_pop(struct spec_ctx *c, size_t saved)
{
    c->len = saved;
    c->path[saved] = '\0';
}

/* ---- helpers --------------------------------------------------------------------------- */

static const char *type_word(const json_t *v)
{
    if (!v)
        return "missing";
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number with a fraction";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "a value";
}

const char *spec_get_str(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

json_int_t spec_get_int(const json_t *o, const char *key, json_int_t fallback)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? json_integer_value(v) : fallback;
}

bool spec_get_bool(const json_t *o, const char *key, bool fallback)
{
    json_t *v = json_object_get(o, key);
    return json_is_boolean(v) ? json_is_true(v) : fallback;
}

/* Append "a, b, c" (quoted when q) to buf. */
static void join_names(char *buf, size_t size, const char *const *names, size_t n, bool q)
{
    size_t o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < n && o < size; i++) {
        int w = snprintf(buf + o, size - o, q ? "%s\"%s\"" : "%s%s", i ? ", " : "", names[i]);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

/* ---- objects --------------------------------------------------------------------------- */

static void unknown_field(struct spec_ctx *c, const struct spec_object *obj, const char *key)
{
    const char *names[64];
    char list[1024];
    size_t n = 0, saved;

    for (size_t i = 0; i < obj->nfields && n < ARRAY_SIZE(names); i++)
        names[n++] = obj->fields[i].name;
    join_names(list, sizeof(list), names, n, false);
    saved = spec_push_field(c, key);
    spec_error(c, "unknown field in %s (expected one of: %s)", obj->type_name, list);
    spec_pop(c, saved);
}

static json_t *norm_default(struct spec_ctx *c, const struct spec_field *f)
{
    json_t *d = json_loads(f->dflt, JSON_DECODE_ANY, NULL), *nv;

    if (!d) {
        spec_error(c, "internal error: bad default %s", f->dflt);
        return NULL;
    }
    nv = f->fn ? f->fn(c, d, f->arg) : json_incref(d);
    json_decref(d);
    return nv;
}

json_t *spec_norm_object(struct spec_ctx *c, json_t *in, const void *arg)
{
    const struct spec_object *obj = arg;
    json_t *out, *work = in, *v;
    const char *key;

    if (!json_is_object(in)) {
        spec_error(c, "must be an object (%s), not %s", obj->type_name, type_word(in));
        return NULL;
    }
    if (obj->pre) {
        work = json_copy(in);
        if (!work)
            return NULL;
        obj->pre(c, in, work);
    }
    json_object_foreach(work, key, v)
    {
        bool known = false;
        for (size_t i = 0; i < obj->nfields && !known; i++)
            known = !strcmp(obj->fields[i].name, key);
        if (!known)
            unknown_field(c, obj, key);
    }
    out = json_object();
    for (size_t i = 0; out && i < obj->nfields; i++) {
        const struct spec_field *f = &obj->fields[i];
        size_t saved = spec_push_field(c, f->name);
        json_t *nv = NULL;

        v = json_object_get(work, f->name);
        if (v && json_is_null(v) && (f->flags & SF_NULL_DEFAULT))
            v = NULL;
        if (!v) {
            if (f->flags & SF_REQUIRED)
                spec_error(c, "is required");
            else if (f->dflt)
                nv = norm_default(c, f);
            else if (f->flags & SF_OPTIONAL)
                ;
            else if (f->flags & SF_NULLABLE)
                nv = json_null();
            else
                spec_error(c, "is required");
        } else if (json_is_null(v)) {
            if (!(f->flags & SF_NULLABLE))
                spec_error(c, "must not be null");
            else if (!(f->flags & SF_OPTIONAL))
                nv = json_null();
        } else {
            nv = f->fn ? f->fn(c, v, f->arg) : json_deep_copy(v);
        }
        if (nv)
            json_object_set_new(out, f->name, nv);
        spec_pop(c, saved);
    }
    if (work != in)
        json_decref(work);
    if (out && obj->post)
        obj->post(c, out);
    return out;
}

/* ---- enums ----------------------------------------------------------------------------- */

static size_t count_list(const char *const *values)
{
    size_t n = 0;
    while (values[n])
        n++;
    return n;
}

json_t *spec_norm_enum(struct spec_ctx *c, json_t *in, const void *arg)
{
    const char *const *values = arg;
    char list[512], buf[128];
    const char *s = json_string_value(in);

    if (s)
        for (size_t i = 0; values[i]; i++)
            if (!strcmp(values[i], s))
                return json_string(s);
    join_names(list, sizeof(list), values, count_list(values), true);
    if (s)
        spec_error(c, "must be one of %s (got \"%s\")", list, show(s, buf, sizeof(buf)));
    else
        spec_error(c, "must be one of %s, not %s", list, type_word(in));
    return NULL;
}

json_t *spec_norm_const(struct spec_ctx *c, json_t *in, const void *arg)
{
    const char *want = arg;
    const char *s = json_string_value(in);

    if (s && !strcmp(s, want))
        return json_string(s);
    spec_error(c, "must be \"%s\"", want);
    return NULL;
}

static void tagged_expect(const struct spec_tagged *t, char *buf, size_t size)
{
    size_t o = 0;

    buf[0] = '\0';
    for (size_t i = 0; i < t->nvariants && o < size; i++) {
        int w = snprintf(buf + o, size - o, t->variants[i].fn ? "%s{\"%s\": ...}" : "%s\"%s\"",
                         i ? ", " : "", t->variants[i].tag);
        if (w < 0)
            break;
        o += (size_t)w;
    }
}

json_t *spec_norm_tagged(struct spec_ctx *c, json_t *in, const void *arg)
{
    const struct spec_tagged *t = arg;
    char list[512], buf[128];
    const char *key = NULL;
    json_t *content = NULL;

    tagged_expect(t, list, sizeof(list));
    if (json_is_string(in)) {
        const char *s = json_string_value(in);
        for (size_t i = 0; i < t->nvariants; i++) {
            if (strcmp(t->variants[i].tag, s))
                continue;
            if (!t->variants[i].fn)
                return json_string(s);
            spec_error(c, "variant \"%s\" needs content: {\"%s\": ...}", s, s);
            return NULL;
        }
        spec_error(c, "unknown %s variant \"%s\" (expected one of: %s)", t->type_name,
                   show(s, buf, sizeof(buf)), list);
        return NULL;
    }
    if (!json_is_object(in) || json_object_size(in) != 1) {
        spec_error(c, "must be %s with exactly one key (one of: %s), not %s", t->type_name, list,
                   json_is_object(in) ? (json_object_size(in) ? "several keys" : "an empty object")
                                      : type_word(in));
        return NULL;
    }
    json_object_foreach(in, key, content) break;
    for (size_t i = 0; i < t->nvariants; i++) {
        const struct spec_variant *var = &t->variants[i];
        size_t saved;
        json_t *nv, *out;

        if (strcmp(var->tag, key))
            continue;
        if (!var->fn) {
            spec_error(c, "variant \"%s\" takes no content: write it as the string \"%s\"", key,
                       key);
            return NULL;
        }
        saved = spec_push_field(c, key);
        nv = var->fn(c, content, var->arg);
        spec_pop(c, saved);
        if (!nv)
            return NULL;
        out = json_object();
        json_object_set_new(out, key, nv);
        return out;
    }
    spec_error(c, "unknown %s variant \"%s\" (expected one of: %s)", t->type_name,
               show(key, buf, sizeof(buf)), list);
    return NULL;
}

json_t *spec_norm_itagged(struct spec_ctx *c, json_t *in, const void *arg)
{
    const struct spec_itagged *t = arg;
    char list[256], buf[128];
    const char *tag;
    size_t saved;

    if (!json_is_object(in)) {
        spec_error(c, "must be an object (%s), not %s", t->type_name, type_word(in));
        return NULL;
    }
    join_names(list, sizeof(list), t->tags, count_list(t->tags), true);
    tag = json_string_value(json_object_get(in, t->tag_field));
    for (size_t i = 0; tag && t->tags[i]; i++)
        if (!strcmp(t->tags[i], tag))
            return spec_norm_object(c, in, t->objs[i]);
    saved = spec_push_field(c, t->tag_field);
    if (!json_object_get(in, t->tag_field))
        spec_error(c, "is required (one of %s)", list);
    else if (!tag)
        spec_error(c, "must be one of %s, not %s", list,
                   type_word(json_object_get(in, t->tag_field)));
    else
        spec_error(c, "must be one of %s (got \"%s\")", list, show(tag, buf, sizeof(buf)));
    spec_pop(c, saved);
    return NULL;
}

/* ---- scalars --------------------------------------------------------------------------- */

json_t *spec_norm_bool(struct spec_ctx *c, json_t *in, const void *arg)
{
    if (json_is_boolean(in))
        return json_boolean(json_is_true(in));
    spec_error(c, "must be true or false, not %s", type_word(in));
    return NULL;
}

json_t *spec_norm_int(struct spec_ctx *c, json_t *in, const void *arg)
{
    const struct spec_range *r = arg;
    json_int_t v;

    if (!json_is_integer(in)) {
        spec_error(c, "must be an integer, not %s", type_word(in));
        return NULL;
    }
    v = json_integer_value(in);
    if (v < r->min || v > r->max) {
        spec_error(c,
                   "must be between %" JSON_INTEGER_FORMAT " and %" JSON_INTEGER_FORMAT
                   "%s%s (got %" JSON_INTEGER_FORMAT ")",
                   r->min, r->max, r->unit ? " " : "", r->unit ? r->unit : "", v);
        return NULL;
    }
    return json_integer(v);
}

json_t *spec_norm_string(struct spec_ctx *c, json_t *in, const void *arg)
{
    const struct spec_string *s = arg ? arg : &spec_str_any;
    const char *v = json_string_value(in), *msg;
    size_t len;

    if (!v) {
        spec_error(c, "must be a string, not %s", type_word(in));
        return NULL;
    }
    len = json_string_length(in);
    if (strlen(v) != len) {
        spec_error(c, "must not contain NUL bytes");
        return NULL;
    }
    if (!len && !s->allow_empty) {
        spec_error(c, "must not be empty");
        return NULL;
    }
    if (s->max_len && len > s->max_len) {
        spec_error(c, "must be at most %zu bytes (got %zu)", s->max_len, len);
        return NULL;
    }
    if (s->check && (msg = s->check(v))) {
        char buf[128];
        spec_error(c, "%s (got \"%s\")", msg, show(v, buf, sizeof(buf)));
        return NULL;
    }
    return json_string(v);
}

json_t *spec_norm_any(struct spec_ctx *c, json_t *in, const void *arg)
{
    return json_deep_copy(in);
}

/* ---- containers ------------------------------------------------------------------------ */

json_t *spec_norm_array(struct spec_ctx *c, json_t *in, const void *arg)
{
    const struct spec_array *a = arg;
    json_t *out, *v;
    size_t i;

    if (!json_is_array(in)) {
        spec_error(c, "must be an array, not %s", type_word(in));
        return NULL;
    }
    if (a->max_items && json_array_size(in) > a->max_items) {
        spec_error(c, "must have at most %zu items (got %zu)", a->max_items, json_array_size(in));
        return NULL;
    }
    out = json_array();
    json_array_foreach(in, i, v)
    {
        size_t saved = spec_push_index(c, i);
        json_t *nv = a->fn(c, v, a->arg);
        spec_pop(c, saved);
        /* Keep indexes aligned with the input for cross-item checks; a null placeholder
         * only ever appears in a document that is rejected. */
        json_array_append_new(out, nv ? nv : json_null());
    }
    return out;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

json_t *spec_norm_map(struct spec_ctx *c, json_t *in, const void *arg)
{
    const struct spec_map *m = arg;
    _cleanup_free_ const char **keys = NULL;
    const char *key, *msg;
    json_t *out, *v;
    size_t n = 0;

    if (!json_is_object(in)) {
        spec_error(c, "must be an object mapping names to values, not %s", type_word(in));
        return NULL;
    }
    if (m->max_items && json_object_size(in) > m->max_items) {
        spec_error(c, "must have at most %zu entries (got %zu)", m->max_items,
                   json_object_size(in));
        return NULL;
    }
    keys = calloc(json_object_size(in) + 1, sizeof(*keys));
    if (!keys)
        return NULL;
    json_object_foreach(in, key, v) keys[n++] = key;
    qsort(keys, n, sizeof(*keys), cmp_str);
    out = json_object();
    for (size_t i = 0; i < n; i++) {
        size_t saved = spec_push_key(c, keys[i]);
        json_t *nv;

        if (!keys[i][0])
            spec_error(c, "key must not be empty");
        else if (m->key_check && (msg = m->key_check(keys[i])))
            spec_error(c, "key %s", msg);
        else if (json_object_get(in, keys[i]) &&
                 (nv = m->fn(c, json_object_get(in, keys[i]), m->arg)))
            json_object_set_new(out, keys[i], nv);
        spec_pop(c, saved);
    }
    return out;
}

json_t *spec_norm_pairs(struct spec_ctx *c, json_t *in, const void *arg)
{
    const char *(*key_check)(const char *) = (const char *(*)(const char *))arg;
    json_t *out, *v;
    size_t i;

    if (!json_is_array(in)) {
        spec_error(c, "must be an array of [key, value] pairs, not %s", type_word(in));
        return NULL;
    }
    if (json_array_size(in) > 1024) {
        spec_error(c, "must have at most 1024 pairs (got %zu)", json_array_size(in));
        return NULL;
    }
    out = json_array();
    json_array_foreach(in, i, v)
    {
        size_t saved = spec_push_index(c, i);
        const char *k = json_string_value(json_array_get(v, 0));
        const char *val = json_string_value(json_array_get(v, 1)), *msg;
        char buf[128];

        if (!json_is_array(v) || json_array_size(v) != 2 || !k || !val) {
            spec_error(c, "must be a [key, value] pair of two strings");
        } else if (strlen(k) != json_string_length(json_array_get(v, 0)) ||
                   strlen(val) != json_string_length(json_array_get(v, 1))) {
            spec_error(c, "must not contain NUL bytes");
        } else if (!k[0]) {
            spec_error(c, "key must not be empty");
        } else if (key_check && (msg = key_check(k))) {
            spec_error(c, "key %s (got \"%s\")", msg, show(k, buf, sizeof(buf)));
        } else {
            bool dup = false;
            for (size_t j = 0; j < i && !dup; j++) {
                const char *pk = json_string_value(json_array_get(json_array_get(in, j), 0));
                if (pk && !strcmp(pk, k)) {
                    spec_error(c, "duplicate key \"%s\" (also [%zu])", show(k, buf, sizeof(buf)),
                               j);
                    dup = true;
                }
            }
            if (!dup)
                json_array_append_new(out, json_pack("[ss]", k, val));
        }
        spec_pop(c, saved);
    }
    return out;
}

/* ---- paths ----------------------------------------------------------------------------- */

json_t *spec_norm_guest_path(struct spec_ctx *c, json_t *in, const void *arg)
{
    const char *s = json_string_value(in);
    _cleanup_free_ char *out = NULL;
    size_t len, o = 0;

    if (!s) {
        spec_error(c, "must be an absolute path string, not %s", type_word(in));
        return NULL;
    }
    len = json_string_length(in);
    if (strlen(s) != len) {
        spec_error(c, "must not contain NUL bytes");
        return NULL;
    }
    if (len > 4096) {
        spec_error(c, "must be at most 4096 bytes (got %zu)", len);
        return NULL;
    }
    if (s[0] != '/') {
        char buf[128];
        spec_error(c, "must be an absolute path (got \"%s\")", show(s, buf, sizeof(buf)));
        return NULL;
    }
    for (const char *p = s; *p; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f) {
            spec_error(c, "must not contain control characters");
            return NULL;
        }
    }
    out = malloc(len + 2);
    if (!out)
        return NULL;
    for (const char *p = s; *p;) {
        const char *e;
        size_t n;

        while (*p == '/')
            p++;
        e = strchrnul(p, '/');
        n = (size_t)(e - p);
        if (n == 2 && p[0] == '.' && p[1] == '.') {
            spec_error(c, "must not contain '..' components");
            return NULL;
        }
        if (n && !(n == 1 && p[0] == '.')) {
            out[o++] = '/';
            memcpy(out + o, p, n);
            o += n;
        }
        p = e;
    }
    if (!o)
        out[o++] = '/';
    out[o] = '\0';
    return json_string(out);
}

/* ---- checkers -------------------------------------------------------------------------- */

const char *spec_check_name(const char *s)
{
    return capsa_name_problem(s, NULL);
}

const char *spec_check_host_path(const char *s)
{
    return s[0] == '/' ? NULL : "must be an absolute path";
}

const char *spec_check_env_key(const char *s)
{
    return strchr(s, '=') ? "must not contain '='" : NULL;
}

const char *spec_check_label_key(const char *s)
{
    static const char *const reserved[] = {"sandbox.", "microsandbox.", "service.", "capsa."};
    for (size_t i = 0; i < ARRAY_SIZE(reserved); i++)
        if (!strncmp(s, reserved[i], strlen(reserved[i])))
            return "uses a reserved prefix (sandbox., microsandbox., service., capsa.)";
    return NULL;
}

static bool dns_labels_ok(const char *s, bool underscore)
{
    size_t lab = 0;

    if (!*s || strlen(s) > 253)
        return false;
    for (const char *p = s;; p++) {
        if (*p == '.' || !*p) {
            if (lab == 0 || lab > 63 || p[-1] == '-' || p[-(ptrdiff_t)lab] == '-')
                return false;
            if (!*p)
                return true;
            lab = 0;
        } else if (isascii((unsigned char)*p) &&
                   (isalnum((unsigned char)*p) || *p == '-' || (underscore && *p == '_'))) {
            lab++;
        } else {
            return false;
        }
    }
}

const char *spec_check_hostname(const char *s)
{
    if (strlen(s) > 64 || !dns_labels_ok(s, false))
        return "must be a host name of at most 64 bytes: dot-separated labels of letters, "
               "digits and inner '-'";
    return NULL;
}

const char *spec_check_domain(const char *s)
{
    return dns_labels_ok(s, true) ? NULL
                                  : "must be a DNS name (labels of letters, digits, '-', "
                                    "'_', separated by '.')";
}

const char *spec_check_ip(const char *s)
{
    unsigned char buf[16];
    if (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1)
        return NULL;
    return "must be an IPv4 or IPv6 address";
}

const char *spec_check_cidr(const char *s)
{
    char ip[64];
    unsigned char buf[16];
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    int fam, max;

    if (n >= sizeof(ip))
        return "must be an IP address or CIDR block (e.g. 10.0.0.0/8)";
    memcpy(ip, s, n);
    ip[n] = '\0';
    if (inet_pton(AF_INET, ip, buf) == 1)
        fam = AF_INET, max = 32;
    else if (inet_pton(AF_INET6, ip, buf) == 1)
        fam = AF_INET6, max = 128;
    else
        return "must be an IP address or CIDR block (e.g. 10.0.0.0/8)";
    (void)fam;
    if (slash) {
        const char *p = slash + 1;
        int v = 0;
        if (!*p || strlen(p) > 3)
            return "must have a prefix length after '/'";
        for (; *p; p++) {
            if (!isdigit((unsigned char)*p))
                return "must have a numeric prefix length after '/'";
            v = v * 10 + (*p - '0');
        }
        if (v > max)
            return "has a prefix length beyond the address size";
    }
    return NULL;
}

const char *spec_check_image_ref(const char *s)
{
    if (!isascii((unsigned char)s[0]) || !isalnum((unsigned char)s[0]))
        return "must be an OCI image reference starting with a letter or digit";
    for (const char *p = s; *p; p++)
        if (!(isascii((unsigned char)*p) && isalnum((unsigned char)*p)) && !strchr("._-/:@+", *p))
            return "must be an OCI image reference (letters, digits and . _ - / : @ +)";
    return NULL;
}

const char *spec_check_fstype(const char *s)
{
    for (const char *p = s; *p; p++)
        if (!(isascii((unsigned char)*p) &&
              (islower((unsigned char)*p) || isdigit((unsigned char)*p))) &&
            *p != '_' && *p != '.')
            return "must be a filesystem type name (lowercase letters, digits, '_', '.')";
    return NULL;
}

static bool digits(const char *p, int n)
{
    for (int i = 0; i < n; i++)
        if (!isdigit((unsigned char)p[i]))
            return false;
    return true;
}

const char *spec_check_timestamp(const char *s)
{
    static const char *msg = "must be an RFC 3339 timestamp (e.g. 2026-01-31T12:00:00Z)";
    const char *p = s;

    if (!digits(p, 4) || p[4] != '-' || !digits(p + 5, 2) || p[7] != '-' || !digits(p + 8, 2) ||
        (p[10] != 'T' && p[10] != 't' && p[10] != ' ') || !digits(p + 11, 2) || p[13] != ':' ||
        !digits(p + 14, 2) || p[16] != ':' || !digits(p + 17, 2))
        return msg;
    p += 19;
    if (*p == '.') {
        p++;
        if (!isdigit((unsigned char)*p))
            return msg;
        while (isdigit((unsigned char)*p))
            p++;
    }
    if ((*p == 'Z' || *p == 'z') && !p[1])
        return NULL;
    if ((*p == '+' || *p == '-') && digits(p + 1, 2) && p[3] == ':' && digits(p + 4, 2) && !p[6])
        return NULL;
    return msg;
}

const char *spec_check_uuid(const char *s)
{
    static const int groups[] = {8, 4, 4, 4, 12};
    const char *p = s;

    for (size_t g = 0; g < ARRAY_SIZE(groups); g++) {
        for (int i = 0; i < groups[g]; i++, p++)
            if (!isxdigit((unsigned char)*p))
                return "must be a UUID (8-4-4-4-12 hex digits)";
        if (g < 4 && *p++ != '-')
            return "must be a UUID (8-4-4-4-12 hex digits)";
    }
    return *p ? "must be a UUID (8-4-4-4-12 hex digits)" : NULL;
}

/* ---- shared tables --------------------------------------------------------------------- */

const struct spec_range spec_range_port = {1, 65535, NULL};
const struct spec_range spec_range_mib = {1, 16 * 1024 * 1024, "MiB"};
const struct spec_range spec_range_mode = {0, 07777, NULL};
const struct spec_range spec_range_secs = {1, 10LL * 366 * 24 * 3600, "seconds"};
const struct spec_range spec_range_u64 = {0, INT64_MAX, NULL};
const struct spec_string spec_str_any = {64 * 1024, NULL, false};
const struct spec_string spec_str_text = {16 * 1024 * 1024, NULL, true};
const struct spec_string spec_str_name = {128, spec_check_name, false};
const struct spec_string spec_str_host_path = {4096, spec_check_host_path, false};
const struct spec_string spec_str_fstype = {32, spec_check_fstype, false};
const struct spec_string spec_str_timestamp = {64, spec_check_timestamp, false};
const struct spec_array spec_arr_strings = {spec_norm_string, &spec_str_text, 4096};
