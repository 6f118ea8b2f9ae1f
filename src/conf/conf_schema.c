/* conf_schema.c - the sandbox YAML schema (reference section 1.9): converts a file's node tree
 * into conf-document fields with typed, normalized values, reporting each problem at its
 * FILE:LINE:COL. Single values are also run through the spec module's checks ("probes") so
 * the seed's rules apply with YAML positions. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/cleanup.h"
#include "common/units.h"
#include "conf/conf_int.h"

/* ---- scalar typing --------------------------------------------------------------------- */

static const char *describe(const struct conf_node *n)
{
    if (n->kind == CN_MAP)
        return "a mapping";
    if (n->kind == CN_SEQ)
        return "a list";
    return n->plain ? "a plain scalar" : "a quoted string";
}

static bool plain_is_null(const struct conf_node *n)
{
    return n->kind == CN_SCALAR && n->plain &&
           (!n->len || !strcmp(n->text, "~") || !strcmp(n->text, "null") ||
            !strcmp(n->text, "Null") || !strcmp(n->text, "NULL"));
}

static int plain_bool(const struct conf_node *n)
{
    static const char *const t[] = {"true", "True", "TRUE"}, *const f[] = {"false", "False",
                                                                           "FALSE"};
    if (n->kind != CN_SCALAR || !n->plain)
        return -1;
    for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
        if (!strcmp(n->text, t[i]))
            return 1;
        if (!strcmp(n->text, f[i]))
            return 0;
    }
    return -1;
}

/* A plain scalar YAML would read as a number (decimal, 0x/0o, float, .inf/.nan). */
static bool plain_is_number(const struct conf_node *n)
{
    const char *p = n->text;
    bool digits = false;

    if (n->kind != CN_SCALAR || !n->plain || !n->len)
        return false;
    if (*p == '-' || *p == '+')
        p++;
    if (!strcasecmp(p, ".inf") || !strcasecmp(p, ".nan"))
        return true;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'o') && p[2])
        return strspn(p + 2, "0123456789abcdefABCDEF") == strlen(p + 2);
    while (isdigit((unsigned char)*p))
        p++, digits = true;
    if (*p == '.') {
        p++;
        while (isdigit((unsigned char)*p))
            p++, digits = true;
    }
    if (digits && (*p == 'e' || *p == 'E')) {
        p++;
        if (*p == '-' || *p == '+')
            p++;
        if (!isdigit((unsigned char)*p))
            return false;
        while (isdigit((unsigned char)*p))
            p++;
    }
    return digits && !*p;
}

static bool valid_env_name(const char *s, size_t n)
{
    if (!n || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
            return false;
    return true;
}

/* ${NAME} substitution ("$${" is a literal "${"). Returns a malloc'd string or NULL (reported). */
static char *subst(struct conf_ctx *c, const struct conf_node *n)
{
    _cleanup_free_ char *out = NULL;
    size_t len = 0, cap = n->len + 1;
    const char *p = n->text;

    out = malloc(cap);
    if (!out) {
        conf_error(c, n, "out of memory");
        return NULL;
    }
    while (*p) {
        const char *piece = p, *val = NULL;
        size_t plen = 1;
        if (p[0] == '$' && p[1] == '$' && p[2] == '{') {
            piece = "${";
            plen = 2;
            p += 3;
        } else if (p[0] == '$' && p[1] == '{') {
            const char *end = strchr(p + 2, '}');
            char name[256];
            size_t nl = end ? (size_t)(end - p - 2) : 0;
            if (!end || !valid_env_name(p + 2, nl) || nl >= sizeof(name)) {
                conf_error(c, n,
                           "only ${NAME} substitution is supported (NAME = letters, digits, _; "
                           "write $${ for a literal ${)");
                return NULL;
            }
            memcpy(name, p + 2, nl);
            name[nl] = '\0';
            val = getenv(name);
            if (!val) {
                conf_error(c, n, "environment variable %s is not set (used as ${%s})", name, name);
                return NULL;
            }
            piece = val;
            plen = strlen(val);
            p = end + 1;
        } else {
            p++;
        }
        if (len + plen + 1 > CONF_MAX_SCALAR) {
            conf_error(c, n, "value is longer than %u bytes after substitution", CONF_MAX_SCALAR);
            return NULL;
        }
        if (len + plen + 1 > cap) {
            char *nb;
            cap = (len + plen + 1) * 2;
            nb = realloc(out, cap);
            if (!nb) {
                conf_error(c, n, "out of memory");
                return NULL;
            }
            out = nb;
        }
        memcpy(out + len, piece, plen);
        len += plen;
    }
    out[len] = '\0';
    return steal_pointer(&out);
}

static bool want_scalar(struct conf_ctx *c, const struct conf_node *n, const char *what)
{
    if (n->kind != CN_SCALAR) {
        conf_error(c, n, "expected %s, got %s", what, describe(n));
        return false;
    }
    if (plain_is_null(n)) {
        conf_error(c, n, "expected %s, got no value (null)", what);
        return false;
    }
    return true;
}

/* A string: quoted, block, or plain that YAML would not read as null, a boolean or a number. */
static char *conv_str(struct conf_ctx *c, const struct conf_node *n)
{
    if (!want_scalar(c, n, "a string"))
        return NULL;
    if (plain_bool(n) >= 0) {
        conf_error(c, n, "expected a string, got the boolean %s (quote it for a string)", n->text);
        return NULL;
    }
    if (plain_is_number(n)) {
        conf_error(c, n, "expected a string, got the number %s (quote it for a string)", n->text);
        return NULL;
    }
    return subst(c, n);
}

/* Any non-null scalar as text (env and label values, where 8080 or true are common). */
static char *conv_text(struct conf_ctx *c, const struct conf_node *n)
{
    if (!want_scalar(c, n, "a string"))
        return NULL;
    return subst(c, n);
}

static int conv_uint(struct conf_ctx *c, const struct conf_node *n, uint64_t lo, uint64_t hi,
                     uint64_t *out)
{
    _cleanup_free_ char *s = NULL;
    unsigned long long v;
    char *end;

    if (!want_scalar(c, n, "an integer"))
        return -1;
    if (!n->plain) {
        conf_error(c, n, "expected an integer, got a quoted string");
        return -1;
    }
    if (!(s = subst(c, n)))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (!isdigit((unsigned char)s[0]) || *end || errno) {
        conf_error(c, n, "expected a decimal integer, got '%.100s'", s);
        return -1;
    }
    if (v < lo || v > hi) {
        conf_error(c, n, "must be between %llu and %llu (got %llu)", (unsigned long long)lo,
                   (unsigned long long)hi, v);
        return -1;
    }
    *out = v;
    return 0;
}

static int conv_bool(struct conf_ctx *c, const struct conf_node *n, bool *out)
{
    int b;

    if (!want_scalar(c, n, "a boolean (true or false)"))
        return -1;
    if (!n->plain) {
        conf_error(c, n, "expected a boolean (true or false), got a quoted string");
        return -1;
    }
    if ((b = plain_bool(n)) < 0) {
        conf_error(c, n, "expected a boolean (true or false), got '%.100s'", n->text);
        return -1;
    }
    *out = b;
    return 0;
}

static int conv_size(struct conf_ctx *c, const struct conf_node *n, uint64_t *mib)
{
    _cleanup_free_ char *s = NULL;
    capsa_err e = {0};

    if (!want_scalar(c, n, "a size like \"512M\" or \"1G\""))
        return -1;
    if (!(s = subst(c, n)))
        return -1;
    if (capsa_parse_size_mib(s, mib, &e) < 0) {
        conf_error(c, n, "%s", e.msg);
        return -1;
    }
    return 0;
}

static int conv_duration_ms(struct conf_ctx *c, const struct conf_node *n, uint64_t *ms)
{
    _cleanup_free_ char *s = NULL;
    capsa_err e = {0};

    if (!want_scalar(c, n, "a duration like \"30s\" or \"5m\""))
        return -1;
    if (!(s = subst(c, n)))
        return -1;
    if (capsa_parse_duration_ms(s, ms, &e) < 0) {
        conf_error(c, n, "%s", e.msg);
        return -1;
    }
    return 0;
}

struct enum_map {
    const char *yaml, *seed;
};

/* A word from a NULL-terminated table; returns its seed spelling or NULL (reported). */
static const char *conv_enum(struct conf_ctx *c, const struct conf_node *n,
                             const struct enum_map *m)
{
    _cleanup_free_ char *s = conv_str(c, n);
    char list[512] = "";
    size_t o = 0;

    if (!s)
        return NULL;
    for (const struct enum_map *e = m; e->yaml; e++)
        if (!strcmp(s, e->yaml))
            return e->seed;
    for (const struct enum_map *e = m; e->yaml && o < sizeof(list); e++) {
        int w = snprintf(list + o, sizeof(list) - o, "%s%s", o ? ", " : "", e->yaml);
        o += w > 0 ? (size_t)w : 0;
    }
    conf_error(c, n, "must be one of %s (got '%.100s')", list, s);
    return NULL;
}

/* Lexically clean an absolute path: no "//", ".", and ".." removes a component. */
static void clean_path(char *p)
{
    char *out = p, *in = p;

    while (*in) {
        while (*in == '/')
            in++;
        if (!*in)
            break;
        char *seg = in;
        size_t sl;
        while (*in && *in != '/')
            in++;
        sl = (size_t)(in - seg);
        if (sl == 1 && seg[0] == '.')
            continue;
        if (sl == 2 && seg[0] == '.' && seg[1] == '.') {
            while (out > p && *--out != '/')
                ;
            continue;
        }
        *out++ = '/';
        memmove(out, seg, sl);
        out += sl;
    }
    if (out == p)
        *out++ = '/';
    *out = '\0';
}

/* A host path; a relative one resolves against the directory of the file holding it. */
static char *conv_host_path(struct conf_ctx *c, const struct conf_node *n)
{
    _cleanup_free_ char *s = conv_str(c, n);
    char *out = NULL;

    if (!s)
        return NULL;
    if (!*s) {
        conf_error(c, n, "must not be empty");
        return NULL;
    }
    if (s[0] == '/' ? !(out = strdup(s)) : asprintf(&out, "%s/%s", c->dir, s) < 0) {
        conf_error(c, n, "out of memory");
        return NULL;
    }
    clean_path(out);
    return out;
}

static char *conv_guest_path(struct conf_ctx *c, const struct conf_node *n)
{
    char *s = conv_str(c, n);

    if (s && s[0] != '/') {
        conf_error(c, n, "must be an absolute guest path (got '%.200s')", s);
        free(s);
        return NULL;
    }
    return s;
}

static int conv_mode(struct conf_ctx *c, const struct conf_node *n, json_int_t *mode)
{
    if (!want_scalar(c, n, "a quoted 4-digit octal mode like \"0644\""))
        return -1;
    if (n->plain || n->len != 4 || strspn(n->text, "01234567") != 4) {
        conf_error(c, n, "must be a quoted 4-digit octal mode like \"0644\" (got %s%.20s%s)",
                   n->plain ? "" : "\"", n->text, n->plain ? "" : "\"");
        return -1;
    }
    *mode = (json_int_t)strtol(n->text, NULL, 8);
    return 0;
}

static json_t *conv_strlist(struct conf_ctx *c, const struct conf_node *n)
{
    json_t *arr;

    if (n->kind != CN_SEQ) {
        conf_error(c, n, "expected a list of strings, got %s", describe(n));
        return NULL;
    }
    arr = json_array();
    for (size_t i = 0; arr && i < n->n; i++) {
        size_t saved = conf_push_index(c, i);
        char *s = conv_str(c, n->kids[i]);
        if (s)
            json_array_append_new(arr, json_string(s));
        free(s);
        conf_pop(c, saved);
    }
    return arr;
}

/* A mapping of name -> text (env, labels, init.env, scripts with strict=true). */
static json_t *conv_strmap(struct conf_ctx *c, const struct conf_node *n, bool strict)
{
    json_t *obj;

    if (n->kind != CN_MAP) {
        conf_error(c, n, "expected a mapping of names to strings, got %s", describe(n));
        return NULL;
    }
    obj = json_object();
    for (size_t i = 0; obj && i + 1 < n->n; i += 2) {
        size_t saved = conf_push_key(c, n->kids[i]->text);
        char *s = strict ? conv_str(c, n->kids[i + 1]) : conv_text(c, n->kids[i + 1]);
        if (s)
            json_object_set_new(obj, n->kids[i]->text, json_string(s));
        free(s);
        conf_pop(c, saved);
    }
    return obj;
}

/* ---- probes: the spec module's checks on one value, reported at a node ------------------ */

/* Check doc (stolen) as seed type; report each error at n with the leading `strip` path
 * component removed. Returns the normalized document (new reference) or NULL. */
static json_t *probe(struct conf_ctx *c, const struct conf_node *n, const char *type, json_t *doc,
                     const char *strip)
{
    capsa_spec_errors errs = {0};
    json_t *norm = NULL;

    if (!doc) {
        conf_error(c, n, "out of memory");
        return NULL;
    }
    if (capsa_spec_check(type, doc, &norm, &errs) < 0) {
        for (size_t i = 0; i < errs.count; i++) {
            const char *m = errs.items[i];
            size_t sl = strip ? strlen(strip) : 0;
            if (sl && !strncmp(m, strip, sl)) {
                if (!strncmp(m + sl, ": ", 2))
                    m += sl + 2;
                else if (m[sl] == '.')
                    m += sl + 1;
            }
            if (!strncmp(m, "(root): ", 8))
                m += 8;
            conf_error(c, n, "%s", m);
        }
        if (!errs.count)
            conf_error(c, n, "invalid value");
        norm = NULL;
    }
    capsa_spec_errors_free(&errs);
    json_decref(doc);
    return norm;
}

/* ---- mapping walker -------------------------------------------------------------------- */

struct field;
typedef void (*field_fn)(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                         const struct field *f);

/* Scopes of root fields: which scoped file kinds accept them (ROOT accepts every field). */
#define SC_ROOT (1u << 0)
#define SC_RES  (1u << 1)
#define SC_RT   (1u << 2)
#define SC_FS   (1u << 3)
#define SC_NET  (1u << 4)

static void h_unsupported(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                          const struct field *f);

struct field {
    const char *key;
    field_fn fn;
    const char *out;   /* conf-document key (NULL = key) */
    const void *arg;   /* per-handler argument */
    const char *probe; /* seed type to check {out: value} against, NULL = none */
    unsigned scope;
};

#define OUT(f) ((f)->out ? (f)->out : (f)->key)

/* Set dst[out] = v (stolen), probing it first when the field asks for it. */
static void field_set(struct conf_ctx *c, const struct conf_node *n, json_t *dst,
                      const struct field *f, json_t *v)
{
    if (!v)
        return;
    if (f->probe) {
        json_t *wrap = json_object();
        json_t *norm;
        if (wrap)
            json_object_set(wrap, OUT(f), v);
        norm = probe(c, n, f->probe, wrap, OUT(f));
        if (!norm) {
            json_decref(v);
            return;
        }
        json_decref(norm);
    }
    json_object_set_new(dst, OUT(f), v);
}

/* Walk mapping n: each key must be one of fields (in scope), each value goes to its handler.
 * locs (may be NULL) gets "FILE:LINE:COL" of each key under its output name. */
static void walk(struct conf_ctx *c, const struct conf_node *n, const struct field *fields,
                 size_t nf, unsigned scope, json_t *dst, const char *what, json_t *locs)
{
    if (!n)
        return;
    if (n->kind != CN_MAP) {
        conf_error(c, n, "expected a mapping (%s), got %s", what, describe(n));
        return;
    }
    for (size_t i = 0; i + 1 < n->n; i += 2) {
        const struct conf_node *k = n->kids[i], *v = n->kids[i + 1];
        const struct field *f = NULL;
        size_t saved = conf_push_key(c, k->text);

        for (size_t j = 0; j < nf; j++)
            if ((fields[j].scope & scope) && !strcmp(fields[j].key, k->text))
                f = &fields[j];
        if (!f) {
            char list[1024] = "";
            size_t o = 0;
            for (size_t j = 0; j < nf && o < sizeof(list); j++) {
                if (!(fields[j].scope & scope) || fields[j].fn == h_unsupported)
                    continue;
                int w = snprintf(list + o, sizeof(list) - o, "%s%s", o ? ", " : "", fields[j].key);
                o += w > 0 ? (size_t)w : 0;
            }
            conf_error(c, k, "unknown field '%.100s' in %s (expected one of: %s)", k->text, what,
                       list);
        } else {
            f->fn(c, v, dst, f);
            if (locs) {
                char loc[PATH_MAX + 64];
                snprintf(loc, sizeof(loc), "%s:%u:%u", c->file, k->line, k->col);
                json_object_set_new(locs, OUT(f), json_string(loc));
            }
        }
        conf_pop(c, saved);
    }
}

/* ---- generic handlers ------------------------------------------------------------------ */

struct urange {
    uint64_t lo, hi;
};

static void h_str(struct conf_ctx *c, const struct conf_node *v, json_t *dst, const struct field *f)
{
    _cleanup_free_ char *s = conv_str(c, v);
    if (s)
        field_set(c, v, dst, f, json_string(s));
}

static void h_guest_path(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                         const struct field *f)
{
    _cleanup_free_ char *s = conv_guest_path(c, v);
    if (s)
        field_set(c, v, dst, f, json_string(s));
}

static void h_host_path(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                        const struct field *f)
{
    _cleanup_free_ char *s = conv_host_path(c, v);
    if (s)
        field_set(c, v, dst, f, json_string(s));
}

static void h_uint(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                   const struct field *f)
{
    const struct urange *r = f->arg;
    uint64_t x;
    if (conv_uint(c, v, r->lo, r->hi, &x) == 0)
        field_set(c, v, dst, f, json_integer((json_int_t)x));
}

static void h_bool(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                   const struct field *f)
{
    bool b;
    if (conv_bool(c, v, &b) == 0)
        field_set(c, v, dst, f, json_boolean(b));
}

static void h_size(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                   const struct field *f)
{
    uint64_t mib;
    if (conv_size(c, v, &mib) == 0)
        field_set(c, v, dst, f, json_integer((json_int_t)mib));
}

static void h_secs(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                   const struct field *f)
{
    uint64_t ms;
    if (conv_duration_ms(c, v, &ms) == 0)
        field_set(c, v, dst, f, json_integer((json_int_t)((ms + 999) / 1000)));
}

static void h_ms(struct conf_ctx *c, const struct conf_node *v, json_t *dst, const struct field *f)
{
    uint64_t ms;
    if (conv_duration_ms(c, v, &ms) == 0)
        field_set(c, v, dst, f, json_integer((json_int_t)ms));
}

static void h_enum(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                   const struct field *f)
{
    const char *s = conv_enum(c, v, f->arg);
    if (s)
        field_set(c, v, dst, f, json_string(s));
}

static void h_strlist(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                      const struct field *f)
{
    size_t before = c->nerr;
    json_t *a = conv_strlist(c, v);
    if (a && c->nerr == before)
        field_set(c, v, dst, f, a);
    else
        json_decref(a);
}

static void h_strmap(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                     const struct field *f)
{
    size_t before = c->nerr;
    json_t *m = conv_strmap(c, v, false);
    if (m && c->nerr == before)
        field_set(c, v, dst, f, m);
    else
        json_decref(m);
}

static void h_mode(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                   const struct field *f)
{
    json_int_t m;
    if (conv_mode(c, v, &m) == 0)
        field_set(c, v, dst, f, json_integer(m));
}

static void h_unsupported(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                          const struct field *f)
{
    conf_error(c, v, "%s", (const char *)f->arg);
}

/* ---- env, labels, scripts -------------------------------------------------------------- */

static void h_env(struct conf_ctx *c, const struct conf_node *v, json_t *dst, const struct field *f)
{
    size_t before = c->nerr;
    json_t *m = conv_strmap(c, v, false);

    if (!m || c->nerr != before) {
        json_decref(m);
        return;
    }
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const char *k = v->kids[i]->text;
        size_t saved = conf_push_key(c, k);
        json_decref(probe(c, v->kids[i], "EnvVar",
                          json_pack("{s:s,s:O}", "key", k, "value", json_object_get(m, k)), NULL));
        conf_pop(c, saved);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), m);
    else
        json_decref(m);
}

/* Map fields whose seed form is the same map: probe each entry inside `wrapper_type` as
 * {out: {key: value}} so the errors name the entry. */
static void h_map_probe(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                        const struct field *f, bool strict)
{
    size_t before = c->nerr;
    json_t *m = conv_strmap(c, v, strict);

    if (!m || c->nerr != before) {
        json_decref(m);
        return;
    }
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const char *k = v->kids[i]->text;
        json_t *doc = json_object(), *one = json_object();
        char strip[512];
        size_t saved = conf_push_key(c, k);
        json_object_set(one, k, json_object_get(m, k));
        if (!strcmp(f->probe, "SandboxSpec")) {
            json_object_set_new(doc, "name", json_string("x"));
            json_object_set_new(doc, "image", json_pack("{s:s}", "Bind", "/"));
        }
        json_object_set_new(doc, OUT(f), one);
        snprintf(strip, sizeof(strip), "%s[\"%s\"]", OUT(f), k);
        json_decref(probe(c, v->kids[i + 1], f->probe, doc, strip));
        conf_pop(c, saved);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), m);
    else
        json_decref(m);
}

static void h_labels(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                     const struct field *f)
{
    h_map_probe(c, v, dst, f, false);
}

static void h_scripts(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                      const struct field *f)
{
    h_map_probe(c, v, dst, f, true);
}

/* ---- image ----------------------------------------------------------------------------- */

static const char *disk_format_for(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && (!strcasecmp(dot, ".qcow2") || !strcasecmp(dot, ".qcow")))
        return "Qcow2";
    if (dot && !strcasecmp(dot, ".vmdk"))
        return "Vmdk";
    return "Raw";
}

static const struct enum_map disk_formats[] = {
    {"raw", "Raw"}, {"qcow2", "Qcow2"}, {"vmdk", "Vmdk"}, {NULL, NULL}};

static void h_image(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                    const struct field *f)
{
    json_t *img = NULL;

    if (v->kind == CN_SCALAR) {
        _cleanup_free_ char *s = conv_str(c, v);
        struct stat st;
        if (!s)
            return;
        if (s[0] == '/' || s[0] == '.') {
            _cleanup_free_ char *p = conv_host_path(c, v);
            if (!p)
                return;
            if (stat(p, &st) < 0) {
                conf_error(c, v, "%s: %s (a path names a root directory or a disk image)", p,
                           strerror(errno));
                return;
            }
            if (S_ISDIR(st.st_mode))
                img = json_pack("{s:s}", "Bind", p);
            else
                img = json_pack("{s:{s:s,s:s}}", "DiskImage", "path", p, "format",
                                disk_format_for(p));
        } else {
            img = json_pack("{s:{s:s}}", "Oci", "reference", s);
        }
    } else if (v->kind == CN_MAP) {
        static const char *const kinds[] = {"oci", "bind", "disk", "snapshot"};
        const struct conf_node *kind = NULL;
        size_t before = c->nerr;
        for (size_t i = 0; i + 1 < v->n; i += 2)
            for (size_t j = 0; j < ARRAY_SIZE(kinds); j++)
                if (!strcmp(v->kids[i]->text, kinds[j])) {
                    if (kind) {
                        conf_error(c, v->kids[i], "give only one of oci, bind, disk (also %s)",
                                   kind->text);
                        return;
                    }
                    kind = v->kids[i];
                }
        if (!kind) {
            conf_error(c, v, "an image mapping needs one of oci, bind or disk");
            return;
        }
        if (!strcmp(kind->text, "snapshot")) {
            size_t saved = conf_push_key(c, "snapshot");
            conf_error(c, kind, "booting from a snapshot is not supported yet");
            conf_pop(c, saved);
            return;
        }
        if (!strcmp(kind->text, "oci")) {
            static const struct field fs[] = {
                {"oci", h_str, "reference", NULL, NULL, SC_ROOT},
                {"upper_size", h_size, "size_mib", NULL, NULL, SC_ROOT},
            };
            json_t *o = json_object();
            walk(c, v, fs, ARRAY_SIZE(fs), SC_ROOT, o, "an oci image", NULL);
            json_t *size = json_object_get(o, "size_mib");
            if (size) {
                json_object_set_new(o, "root_disk",
                                    json_pack("{s:s,s:O}", "kind", "managed", "size_mib", size));
                json_object_del(o, "size_mib");
            }
            img = json_pack("{s:o}", "Oci", o);
        } else if (!strcmp(kind->text, "bind")) {
            static const struct field fs[] = {{"bind", h_host_path, NULL, NULL, NULL, SC_ROOT}};
            json_t *o = json_object();
            walk(c, v, fs, ARRAY_SIZE(fs), SC_ROOT, o, "a bind image", NULL);
            img = json_pack("{s:O}", "Bind", json_object_get(o, "bind"));
            json_decref(o);
        } else {
            static const struct field fs[] = {
                {"disk", h_host_path, "path", NULL, NULL, SC_ROOT},
                {"format", h_enum, NULL, disk_formats, NULL, SC_ROOT},
                {"fstype", h_str, NULL, NULL, NULL, SC_ROOT},
            };
            json_t *o = json_object();
            walk(c, v, fs, ARRAY_SIZE(fs), SC_ROOT, o, "a disk image", NULL);
            if (json_is_string(json_object_get(o, "path")) && !json_object_get(o, "format"))
                json_object_set_new(
                    o, "format",
                    json_string(disk_format_for(json_string_value(json_object_get(o, "path")))));
            img = json_pack("{s:o}", "DiskImage", o);
        }
        if (c->nerr != before) {
            json_decref(img);
            return;
        }
    } else {
        conf_error(c, v, "expected an image reference or a mapping, got %s", describe(v));
        return;
    }
    json_t *norm = probe(c, v, "RootfsSource", img, NULL);
    if (norm)
        json_object_set_new(dst, OUT(f), norm);
}

/* ---- rlimits, init --------------------------------------------------------------------- */

static const struct enum_map rlimit_names[] = {{"cpu", "Cpu"},
                                               {"fsize", "Fsize"},
                                               {"data", "Data"},
                                               {"stack", "Stack"},
                                               {"core", "Core"},
                                               {"rss", "Rss"},
                                               {"nproc", "Nproc"},
                                               {"nofile", "Nofile"},
                                               {"memlock", "Memlock"},
                                               {"as", "As"},
                                               {"locks", "Locks"},
                                               {"sigpending", "Sigpending"},
                                               {"msgqueue", "Msgqueue"},
                                               {"nice", "Nice"},
                                               {"rtprio", "Rtprio"},
                                               {"rttime", "Rttime"},
                                               {NULL, NULL}};
static const struct urange range_rlim = {0, (1ull << 63) - 1};

static void h_rlimits(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                      const struct field *f)
{
    static const struct field fs[] = {
        {"resource", h_enum, NULL, rlimit_names, NULL, SC_ROOT},
        {"soft", h_uint, NULL, &range_rlim, NULL, SC_ROOT},
        {"hard", h_uint, NULL, &range_rlim, NULL, SC_ROOT},
    };
    size_t before = c->nerr;
    json_t *arr;

    if (v->kind != CN_SEQ) {
        conf_error(c, v, "expected a list of {resource, soft, hard}, got %s", describe(v));
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < v->n; i++) {
        size_t saved = conf_push_index(c, i), b = c->nerr;
        json_t *o = json_object();
        walk(c, v->kids[i], fs, ARRAY_SIZE(fs), SC_ROOT, o, "an rlimit", NULL);
        if (c->nerr == b && json_object_get(o, "soft") && !json_object_get(o, "hard"))
            json_object_set(o, "hard", json_object_get(o, "soft"));
        if (c->nerr == b) {
            json_t *norm = probe(c, v->kids[i], "Rlimit", json_incref(o), NULL);
            if (norm)
                json_array_append_new(arr, norm);
        }
        json_decref(o);
        conf_pop(c, saved);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), arr);
    else
        json_decref(arr);
}

static json_t *pairs_of(json_t *map)
{
    json_t *arr = json_array(), *val;
    const char *k;

    json_object_foreach(map, k, val)
    {
        json_array_append_new(arr, json_pack("[s,O]", k, val));
    }
    return arr;
}

static void h_init(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                   const struct field *f)
{
    static const struct field fs[] = {
        {"cmd", h_str, NULL, NULL, NULL, SC_ROOT},
        {"args", h_strlist, NULL, NULL, NULL, SC_ROOT},
        {"env", h_strmap, NULL, NULL, NULL, SC_ROOT},
    };
    size_t before = c->nerr;
    json_t *o = json_object(), *trial;

    walk(c, v, fs, ARRAY_SIZE(fs), SC_ROOT, o, "init", NULL);
    if (c->nerr != before) {
        json_decref(o);
        return;
    }
    trial = json_pack("{s:s,s:[],s:o}", "cmd", "auto", "args", "env",
                      pairs_of(json_object_get(o, "env")));
    if (trial && json_object_get(o, "cmd"))
        json_object_set(trial, "cmd", json_object_get(o, "cmd"));
    if (trial && json_object_get(o, "args"))
        json_object_set(trial, "args", json_object_get(o, "args"));
    json_t *norm = probe(c, v, "HandoffInit", trial, NULL);
    if (norm) {
        json_decref(norm);
        json_object_set_new(dst, OUT(f), o);
    } else {
        json_decref(o);
    }
}

/* ---- mounts ---------------------------------------------------------------------------- */

static const struct enum_map stat_virts[] = {
    {"strict", "strict"}, {"relaxed", "relaxed"}, {"off", "off"}, {NULL, NULL}};
static const struct enum_map host_perms[] = {
    {"private", "private"}, {"mirror", "mirror"}, {NULL, NULL}};
static const struct enum_map named_modes[] = {{"existing", "Existing"},
                                              {"create", "Create"},
                                              {"ensure-exists", "EnsureExists"},
                                              {NULL, NULL}};
static const struct enum_map volume_kinds[] = {
    {"dir", "Directory"}, {"disk", "Disk"}, {NULL, NULL}};

/* "SRC:DST[:OPTS]": SRC starting with / or . is a bind source, anything else a volume name. */
static json_t *mount_from_string(struct conf_ctx *c, const struct conf_node *v)
{
    _cleanup_free_ char *s = conv_str(c, v);
    json_t *opts, *m;
    char *dst, *o;

    if (!s)
        return NULL;
    dst = strchr(s, ':');
    if (!dst || dst == s || !dst[1]) {
        conf_error(c, v, "must be SRC:DST[:OPTIONS] (got '%.200s')", s);
        return NULL;
    }
    *dst++ = '\0';
    o = strchr(dst, ':');
    if (o)
        *o++ = '\0';
    if (dst[0] != '/') {
        conf_error(c, v, "guest path must be absolute (got '%.200s')", dst);
        return NULL;
    }
    opts = json_pack("{s:b,s:b,s:b,s:b}", "readonly", 0, "noexec", 0, "nosuid", 0, "nodev", 0);
    for (char *save = NULL, *tok = o ? strtok_r(o, ",", &save) : NULL; tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (!strcmp(tok, "ro"))
            json_object_set_new(opts, "readonly", json_true());
        else if (!strcmp(tok, "rw"))
            json_object_set_new(opts, "readonly", json_false());
        else if (!strcmp(tok, "noexec") || !strcmp(tok, "nosuid") || !strcmp(tok, "nodev"))
            json_object_set_new(opts, tok, json_true());
        else {
            conf_error(c, v,
                       "unknown mount option '%.100s' (expected ro, rw, noexec, nosuid, nodev)",
                       tok);
            json_decref(opts);
            return NULL;
        }
    }
    if (s[0] == '/' || s[0] == '.') {
        _cleanup_free_ char *host = NULL;
        if (s[0] == '/')
            host = strdup(s);
        else if (asprintf(&host, "%s/%s", c->dir, s) < 0)
            host = NULL;
        if (!host) {
            json_decref(opts);
            return NULL;
        }
        clean_path(host);
        m = json_pack("{s:s,s:s,s:s,s:o}", "type", "Bind", "host", host, "guest", dst, "options",
                      opts);
    } else {
        m = json_pack("{s:s,s:s,s:s,s:o}", "type", "Named", "name", s, "guest", dst, "options",
                      opts);
    }
    return m;
}

#define MOUNT_OPTION_FIELDS                                                                        \
    {"target", h_guest_path, "guest", NULL, NULL, SC_ROOT},                                        \
        {"readonly", h_bool, NULL, NULL, NULL, SC_ROOT},                                           \
        {"noexec", h_bool, NULL, NULL, NULL, SC_ROOT},                                             \
        {"nosuid", h_bool, NULL, NULL, NULL, SC_ROOT},                                             \
    {                                                                                              \
        "nodev", h_bool, NULL, NULL, NULL, SC_ROOT                                                 \
    }

static void h_tmpfs_spec(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                         const struct field *f)
{
    static const struct field fs[] = {{"size", h_size, "size_mib", NULL, NULL, SC_ROOT}};
    if (plain_is_null(v))
        return;
    walk(c, v, fs, ARRAY_SIZE(fs), SC_ROOT, dst, "tmpfs", NULL);
}

static const struct field mount_bind_fields[] = {
    {"bind", h_host_path, "host", NULL, NULL, SC_ROOT},
    MOUNT_OPTION_FIELDS,
    {"stat_virtualization", h_enum, NULL, stat_virts, NULL, SC_ROOT},
    {"host_permissions", h_enum, NULL, host_perms, NULL, SC_ROOT},
    {"quota", h_size, "quota_mib", NULL, NULL, SC_ROOT},
};
static const struct field mount_named_fields[] = {
    {"named", h_str, "name", NULL, NULL, SC_ROOT},
    MOUNT_OPTION_FIELDS,
    {"stat_virtualization", h_enum, NULL, stat_virts, NULL, SC_ROOT},
    {"host_permissions", h_enum, NULL, host_perms, NULL, SC_ROOT},
    {"create", h_enum, "mode", named_modes, NULL, SC_ROOT},
    {"kind", h_enum, NULL, volume_kinds, NULL, SC_ROOT},
    {"size", h_size, "capacity_mib", NULL, NULL, SC_ROOT},
    {"quota", h_size, "quota_mib", NULL, NULL, SC_ROOT},
};
static const struct field mount_tmpfs_fields[] = {
    {"tmpfs", h_tmpfs_spec, NULL, NULL, NULL, SC_ROOT},
    MOUNT_OPTION_FIELDS,
};
static const struct field mount_disk_fields[] = {
    {"disk", h_host_path, "host", NULL, NULL, SC_ROOT},
    MOUNT_OPTION_FIELDS,
    {"format", h_enum, NULL, disk_formats, NULL, SC_ROOT},
    {"fstype", h_str, NULL, NULL, NULL, SC_ROOT},
};

static json_t *mount_from_map(struct conf_ctx *c, const struct conf_node *v)
{
    static const struct {
        const char *key, *type, *what;
        const struct field *fields;
        size_t n;
    } kinds[] = {
        {"bind", "Bind", "a bind mount", mount_bind_fields, ARRAY_SIZE(mount_bind_fields)},
        {"named", "Named", "a named-volume mount", mount_named_fields,
         ARRAY_SIZE(mount_named_fields)},
        {"tmpfs", "Tmpfs", "a tmpfs mount", mount_tmpfs_fields, ARRAY_SIZE(mount_tmpfs_fields)},
        {"disk", "DiskImage", "a disk-image mount", mount_disk_fields,
         ARRAY_SIZE(mount_disk_fields)},
    };
    static const char *const opt_keys[] = {"readonly", "noexec", "nosuid", "nodev"};
    size_t kind = ARRAY_SIZE(kinds), before = c->nerr;
    const struct conf_node *kind_node = NULL;
    json_t *raw, *m, *opts;

    for (size_t i = 0; i + 1 < v->n; i += 2)
        for (size_t j = 0; j < ARRAY_SIZE(kinds); j++)
            if (!strcmp(v->kids[i]->text, kinds[j].key)) {
                if (kind_node) {
                    conf_error(c, v->kids[i], "give only one of bind, named, tmpfs, disk (also %s)",
                               kind_node->text);
                    return NULL;
                }
                kind = j;
                kind_node = v->kids[i];
            }
    if (!kind_node) {
        conf_error(c, v, "a mount needs one of bind, named, tmpfs or disk");
        return NULL;
    }
    raw = json_object();
    walk(c, v, kinds[kind].fields, kinds[kind].n, SC_ROOT, raw, kinds[kind].what, NULL);
    if (c->nerr != before) {
        json_decref(raw);
        return NULL;
    }
    m = json_pack("{s:s}", "type", kinds[kind].type);
    opts = json_object();
    for (size_t i = 0; i < ARRAY_SIZE(opt_keys); i++) {
        json_t *b = json_object_get(raw, opt_keys[i]);
        json_object_set_new(opts, opt_keys[i], json_boolean(json_is_true(b)));
        json_object_del(raw, opt_keys[i]);
    }
    if (!strcmp(kinds[kind].type, "DiskImage") && !json_object_get(raw, "format") &&
        json_is_string(json_object_get(raw, "host")))
        json_object_set_new(
            raw, "format",
            json_string(disk_format_for(json_string_value(json_object_get(raw, "host")))));
    if (!strcmp(kinds[kind].type, "Named")) {
        json_t *mode = json_object_get(raw, "mode");
        bool creates = json_object_get(raw, "kind") || json_object_get(raw, "capacity_mib") ||
                       json_object_get(raw, "quota_mib");
        if (creates && !mode) {
            conf_error(c, v,
                       "kind, size and quota describe a volume to create: add create: "
                       "ensure-exists (or create)");
            json_decref(raw);
            json_decref(m);
            json_decref(opts);
            return NULL;
        }
        if (mode) {
            json_t *cr = json_pack("{s:O,s:O}", "mode", mode, "name", json_object_get(raw, "name"));
            static const char *const ck[] = {"kind", "quota_mib", "capacity_mib"};
            for (size_t i = 0; i < ARRAY_SIZE(ck); i++) {
                if (json_object_get(raw, ck[i]))
                    json_object_set(cr, ck[i], json_object_get(raw, ck[i]));
                json_object_del(raw, ck[i]);
            }
            json_object_del(raw, "mode");
            json_object_set_new(raw, "create", cr);
        }
    }
    json_object_update(m, raw);
    json_object_set_new(m, "options", opts);
    json_decref(raw);
    if (!json_object_get(m, "guest")) {
        conf_error(c, v, "target (the guest path) is required");
        json_decref(m);
        return NULL;
    }
    return m;
}

static void h_mounts(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                     const struct field *f)
{
    size_t before = c->nerr;
    json_t *arr;

    if (v->kind != CN_SEQ) {
        conf_error(c, v, "expected a list of mounts, got %s", describe(v));
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < v->n; i++) {
        const struct conf_node *it = v->kids[i];
        size_t saved = conf_push_index(c, i);
        json_t *m = NULL, *norm;
        if (it->kind == CN_SCALAR)
            m = mount_from_string(c, it);
        else if (it->kind == CN_MAP)
            m = mount_from_map(c, it);
        else
            conf_error(c, it, "expected \"SRC:DST[:OPTIONS]\" or a mapping, got %s", describe(it));
        if (m && (norm = probe(c, it, "VolumeMount", m, NULL))) {
            const char *g = json_string_value(json_object_get(norm, "guest"));
            for (size_t j = 0; g && j < json_array_size(arr); j++) {
                json_t *o = json_array_get(arr, j);
                if (!strcmp(g, json_string_value(json_object_get(o, "guest")))) {
                    conf_error(c, it, "duplicate guest path %s (also mounts[%zu])", g,
                               (size_t)json_integer_value(json_object_get(o, "_i")));
                    break;
                }
            }
            json_object_set_new(norm, "_i", json_integer((json_int_t)i));
            json_array_append_new(arr, norm);
        }
        conf_pop(c, saved);
    }
    for (size_t j = 0; j < json_array_size(arr); j++)
        json_object_del(json_array_get(arr, j), "_i");
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), arr);
    else
        json_decref(arr);
}

/* ---- patches --------------------------------------------------------------------------- */

static int b64val(int ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    if (ch == '+')
        return 62;
    if (ch == '/')
        return 63;
    return -1;
}

/* Strict base64 (padding required, whitespace ignored) into a JSON array of bytes. */
static void h_base64(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                     const struct field *f)
{
    _cleanup_free_ char *s = conv_str(c, v);
    unsigned acc = 0;
    int bits = 0, pad = 0;
    json_t *arr;

    if (!s)
        return;
    arr = json_array();
    for (const char *p = s; *p; p++) {
        int d;
        if (isspace((unsigned char)*p))
            continue;
        if (*p == '=') {
            pad++;
            continue;
        }
        d = b64val((unsigned char)*p);
        if (d < 0 || pad) {
            conf_error(c, v, "is not valid base64");
            json_decref(arr);
            return;
        }
        acc = (acc << 6) | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            json_array_append_new(arr, json_integer((acc >> bits) & 0xff));
        }
    }
    if (pad > 2 || (bits == 6) || (bits == 4 && pad != 1 && pad != 2) || (bits == 2 && pad != 1) ||
        (bits == 0 && pad)) {
        conf_error(c, v, "is not valid base64 (bad length or padding)");
        json_decref(arr);
        return;
    }
    json_object_set_new(dst, OUT(f), arr);
}

static const struct field p_copy_file[] = {
    {"src", h_host_path, NULL, NULL, NULL, SC_ROOT},
    {"dst", h_guest_path, NULL, NULL, NULL, SC_ROOT},
    {"mode", h_mode, NULL, NULL, NULL, SC_ROOT},
    {"replace", h_bool, NULL, NULL, NULL, SC_ROOT},
};
static const struct field p_copy_dir[] = {
    {"src", h_host_path, NULL, NULL, NULL, SC_ROOT},
    {"dst", h_guest_path, NULL, NULL, NULL, SC_ROOT},
    {"replace", h_bool, NULL, NULL, NULL, SC_ROOT},
};
static const struct field p_text[] = {
    {"path", h_guest_path, NULL, NULL, NULL, SC_ROOT},
    {"content", h_str, NULL, NULL, NULL, SC_ROOT},
    {"mode", h_mode, NULL, NULL, NULL, SC_ROOT},
    {"replace", h_bool, NULL, NULL, NULL, SC_ROOT},
};
static const struct field p_file[] = {
    {"path", h_guest_path, NULL, NULL, NULL, SC_ROOT},
    {"content_base64", h_base64, "content", NULL, NULL, SC_ROOT},
    {"mode", h_mode, NULL, NULL, NULL, SC_ROOT},
    {"replace", h_bool, NULL, NULL, NULL, SC_ROOT},
};
static const struct field p_mkdir[] = {
    {"path", h_guest_path, NULL, NULL, NULL, SC_ROOT},
    {"mode", h_mode, NULL, NULL, NULL, SC_ROOT},
};
static const struct field p_symlink[] = {
    {"target", h_str, NULL, NULL, NULL, SC_ROOT},
    {"link", h_guest_path, NULL, NULL, NULL, SC_ROOT},
    {"replace", h_bool, NULL, NULL, NULL, SC_ROOT},
};
static const struct field p_append[] = {
    {"path", h_guest_path, NULL, NULL, NULL, SC_ROOT},
    {"content", h_str, NULL, NULL, NULL, SC_ROOT},
};
static const struct field p_remove[] = {
    {"path", h_guest_path, NULL, NULL, NULL, SC_ROOT},
};

static const struct {
    const char *key, *variant;
    const struct field *fields;
    size_t n;
} patch_kinds[] = {
    {"copy_file", "CopyFile", p_copy_file, ARRAY_SIZE(p_copy_file)},
    {"copy_dir", "CopyDir", p_copy_dir, ARRAY_SIZE(p_copy_dir)},
    {"text", "Text", p_text, ARRAY_SIZE(p_text)},
    {"file", "File", p_file, ARRAY_SIZE(p_file)},
    {"mkdir", "Mkdir", p_mkdir, ARRAY_SIZE(p_mkdir)},
    {"symlink", "Symlink", p_symlink, ARRAY_SIZE(p_symlink)},
    {"append", "Append", p_append, ARRAY_SIZE(p_append)},
    {"remove", "Remove", p_remove, ARRAY_SIZE(p_remove)},
};

/* Convert a list of patches, appending seed Patch objects to arr. */
static void conv_patches(struct conf_ctx *c, const struct conf_node *v, json_t *arr)
{
    if (v->kind != CN_SEQ) {
        conf_error(c, v, "expected a list of patches, got %s", describe(v));
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        const struct conf_node *it = v->kids[i];
        size_t saved = conf_push_index(c, i), before = c->nerr, k = ARRAY_SIZE(patch_kinds);
        if (it->kind != CN_MAP || it->n != 2) {
            conf_error(c, it,
                       "a patch is a mapping with exactly one key: copy_file, copy_dir, text, "
                       "file, mkdir, symlink, append or remove");
            conf_pop(c, saved);
            continue;
        }
        for (size_t j = 0; j < ARRAY_SIZE(patch_kinds); j++)
            if (!strcmp(it->kids[0]->text, patch_kinds[j].key))
                k = j;
        if (k == ARRAY_SIZE(patch_kinds)) {
            conf_error(c, it->kids[0],
                       "unknown patch kind '%.100s' (expected one of: copy_file, copy_dir, text, "
                       "file, mkdir, symlink, append, remove)",
                       it->kids[0]->text);
            conf_pop(c, saved);
            continue;
        }
        json_t *body = json_object();
        size_t s2 = conf_push_key(c, patch_kinds[k].key);
        walk(c, it->kids[1], patch_kinds[k].fields, patch_kinds[k].n, SC_ROOT, body,
             patch_kinds[k].key, NULL);
        conf_pop(c, s2);
        if (c->nerr == before) {
            json_t *norm = probe(c, it, "Patch", json_pack("{s:o}", patch_kinds[k].variant, body),
                                 patch_kinds[k].variant);
            if (norm)
                json_array_append_new(arr, norm);
        } else {
            json_decref(body);
        }
        conf_pop(c, saved);
    }
}

static void h_patches(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                      const struct field *f)
{
    size_t before = c->nerr;
    json_t *arr = json_array();

    conv_patches(c, v, arr);
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), arr);
    else
        json_decref(arr);
}

/* patch_files: each file holds a YAML list of patches; its relative paths resolve against
 * its own directory. */
static void h_patch_files(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                          const struct field *f)
{
    size_t before = c->nerr;
    json_t *arr;

    if (v->kind != CN_SEQ) {
        conf_error(c, v, "expected a list of patch file paths, got %s", describe(v));
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < v->n; i++) {
        size_t saved = conf_push_index(c, i);
        _cleanup_free_ char *path = conv_host_path(c, v->kids[i]);
        if (path) {
            struct conf_ctx sub;
            struct conf_node *root = NULL;
            _cleanup_free_ char *text = NULL;
            size_t len = 0;
            if (conf_ctx_init(&sub, c->errs, path) == 0 &&
                (text = conf_read_file(&sub, path, &len)) &&
                conf_yaml_parse(&sub, text, len, &root) == 0 && root)
                conv_patches(&sub, root, arr);
            conf_node_free(root);
            c->nerr += sub.nerr;
        }
        conf_pop(c, saved);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), arr);
    else
        json_decref(arr);
}

/* ---- network --------------------------------------------------------------------------- */

static const struct enum_map net_profiles[] = {
    {"none", "none"}, {"public", "public"}, {"open", "open"}, {NULL, NULL}};

/* One allow/deny target (the --net-rule target grammar) as a rule without direction/action. */
static json_t *target_rule(const char *t)
{
    static const struct {
        const char *word, *group;
    } groups[] = {
        {"public", "public"},         {"private", "private"},       {"loopback", "loopback"},
        {"link-local", "link_local"}, {"link_local", "link_local"}, {"meta", "metadata"},
        {"metadata", "metadata"},     {"multicast", "multicast"},   {"host", "host"},
    };
    unsigned char buf[16];
    char tmp[300];
    size_t n = strlen(t);

    if (!strcmp(t, "any"))
        return json_pack("{s:s}", "destination", "any");
    if (!strcmp(t, "dns"))
        return json_pack("{s:{s:s},s:[s,s],s:[{s:i,s:i}]}", "destination", "group", "host",
                         "protocols", "udp", "tcp", "ports", "start", 53, "end", 53);
    for (size_t i = 0; i < ARRAY_SIZE(groups); i++)
        if (!strcmp(t, groups[i].word))
            return json_pack("{s:{s:s}}", "destination", "group", groups[i].group);
    if (!strncmp(t, "domain=", 7))
        return json_pack("{s:{s:s}}", "destination", "domain", t + 7);
    if (!strncmp(t, "suffix=", 7))
        return json_pack("{s:{s:s}}", "destination", "domain_suffix", t + 7);
    if (!strncmp(t, "*.", 2))
        return json_pack("{s:{s:s}}", "destination", "domain_suffix", t + 2);
    if (t[0] == '[' && n > 2 && t[n - 1] == ']' && n - 2 < sizeof(tmp)) {
        memcpy(tmp, t + 1, n - 2);
        tmp[n - 2] = '\0';
        t = tmp;
    }
    if (strchr(t, '/'))
        return json_pack("{s:{s:s}}", "destination", "cidr", t);
    if (inet_pton(AF_INET, t, buf) == 1 || inet_pton(AF_INET6, t, buf) == 1) {
        char cidr[80];
        snprintf(cidr, sizeof(cidr), "%s/%d", t, strchr(t, ':') ? 128 : 32);
        return json_pack("{s:{s:s}}", "destination", "cidr", cidr);
    }
    return json_pack("{s:{s:s}}", "destination", "domain", t);
}

static void h_targets(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                      const struct field *f)
{
    size_t before = c->nerr;
    json_t *arr;

    if (v->kind != CN_SEQ) {
        conf_error(c, v,
                   "expected a list of targets (domains, *.suffixes, IPs, CIDRs, groups), "
                   "got %s",
                   describe(v));
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < v->n; i++) {
        size_t saved = conf_push_index(c, i);
        _cleanup_free_ char *s = conv_str(c, v->kids[i]);
        json_t *r = s ? target_rule(s) : NULL;
        if (r) {
            json_t *trial = json_deep_copy(r);
            json_object_set_new(trial, "direction", json_string("egress"));
            json_object_set_new(trial, "action", json_string("allow"));
            json_t *norm = probe(c, v->kids[i], "NetworkPolicy",
                                 json_pack("{s:[o]}", "rules", trial), "rules[0]");
            if (norm) {
                json_t *rule = json_array_get(json_object_get(norm, "rules"), 0);
                json_object_del(rule, "direction");
                json_object_del(rule, "action");
                json_array_append(arr, rule);
                json_decref(norm);
            }
            json_decref(r);
        }
        conf_pop(c, saved);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), arr);
    else
        json_decref(arr);
}

/* "[BIND:]HOST:GUEST[/udp|/tcp]", BIND may be "[v6]". */
static json_t *port_from_string(struct conf_ctx *c, const struct conf_node *v)
{
    static const char *usage = "must be [BIND:]HOST:GUEST[/tcp|/udp] (e.g. \"8080:80\")";
    _cleanup_free_ char *s = conv_text(c, v);
    char *proto = NULL, *bind = NULL, *rest, *colon;
    unsigned long hp, gp;
    char *e1, *e2;

    if (!s)
        return NULL;
    if ((proto = strrchr(s, '/'))) {
        *proto++ = '\0';
        if (strcmp(proto, "tcp") && strcmp(proto, "udp")) {
            conf_error(c, v, "protocol must be tcp or udp (got '%.20s')", proto);
            return NULL;
        }
    }
    rest = s;
    if (s[0] == '[') {
        char *end = strchr(s, ']');
        if (!end || end[1] != ':') {
            conf_error(c, v, "%s", usage);
            return NULL;
        }
        *end = '\0';
        bind = s + 1;
        rest = end + 2;
    } else if ((colon = strchr(s, ':')) && strchr(colon + 1, ':')) {
        *colon = '\0';
        bind = s;
        rest = colon + 1;
    }
    colon = strchr(rest, ':');
    if (!colon || strchr(colon + 1, ':')) {
        conf_error(c, v, "%s", usage);
        return NULL;
    }
    *colon = '\0';
    hp = strtoul(rest, &e1, 10);
    gp = strtoul(colon + 1, &e2, 10);
    if (!isdigit((unsigned char)rest[0]) || *e1 || !isdigit((unsigned char)colon[1]) || *e2) {
        conf_error(c, v, "%s", usage);
        return NULL;
    }
    if (hp < 1 || hp > 65535 || gp < 1 || gp > 65535) {
        conf_error(c, v, "ports must be between 1 and 65535");
        return NULL;
    }
    json_t *p = json_pack("{s:i,s:i,s:s}", "host_port", (int)hp, "guest_port", (int)gp, "protocol",
                          proto ? proto : "tcp");
    if (bind)
        json_object_set_new(p, "host_bind", json_string(bind));
    return probe(c, v, "PublishedPortSpec", p, NULL);
}

static void h_ports(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                    const struct field *f)
{
    size_t before = c->nerr;
    json_t *arr;

    if (v->kind != CN_SEQ) {
        conf_error(c, v, "expected a list of \"[BIND:]HOST:GUEST[/udp]\" strings, got %s",
                   describe(v));
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < v->n; i++) {
        size_t saved = conf_push_index(c, i);
        json_t *p = port_from_string(c, v->kids[i]);
        if (p) {
            char loc[PATH_MAX + 1200];
            snprintf(loc, sizeof(loc), "%s:%u:%u: %s", c->file, v->kids[i]->line, v->kids[i]->col,
                     c->path);
            json_object_set_new(p, "_loc", json_string(loc));
            json_array_append_new(arr, p);
        }
        conf_pop(c, saved);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), arr);
    else
        json_decref(arr);
}

static void h_dns(struct conf_ctx *c, const struct conf_node *v, json_t *dst, const struct field *f)
{
    static const struct field fs[] = {
        {"rebind_protection", h_bool, NULL, NULL, NULL, SC_ROOT},
        {"nameservers", h_strlist, NULL, NULL, NULL, SC_ROOT},
        {"query_timeout", h_ms, "query_timeout_ms", NULL, NULL, SC_ROOT},
    };
    size_t before = c->nerr;
    json_t *o = json_object(), *norm;

    walk(c, v, fs, ARRAY_SIZE(fs), SC_ROOT, o, "network.dns", NULL);
    if (c->nerr != before) {
        json_decref(o);
        return;
    }
    if ((norm = probe(c, v, "DnsConfig", json_incref(o), NULL))) {
        json_decref(norm);
        json_object_set_new(dst, OUT(f), o);
    } else {
        json_decref(o);
    }
}

static void h_tls(struct conf_ctx *c, const struct conf_node *v, json_t *dst, const struct field *f)
{
    static const struct field fs[] = {
        {"enabled", h_bool, NULL, NULL, NULL, SC_ROOT},
        {"bypass", h_strlist, NULL, NULL, NULL, SC_ROOT},
        {"verify_upstream", h_bool, NULL, NULL, NULL, SC_ROOT},
        {"block_quic", h_bool, "block_quic_on_intercept", NULL, NULL, SC_ROOT},
    };
    size_t before = c->nerr;
    json_t *o = json_object(), *norm;

    walk(c, v, fs, ARRAY_SIZE(fs), SC_ROOT, o, "network.tls", NULL);
    if (c->nerr != before) {
        json_decref(o);
        return;
    }
    if ((norm = probe(c, v, "TlsConfig", json_incref(o), NULL))) {
        json_decref(norm);
        json_object_set_new(dst, OUT(f), o);
    } else {
        json_decref(o);
    }
}

static const struct urange range_max_conn = {1, 1000000};

static const struct field network_fields[] = {
    {"policy", h_enum, NULL, net_profiles, NULL, SC_ROOT},
    {"allow", h_targets, NULL, NULL, NULL, SC_ROOT},
    {"deny", h_targets, NULL, NULL, NULL, SC_ROOT},
    {"ports", h_ports, NULL, NULL, NULL, SC_ROOT},
    {"dns", h_dns, NULL, NULL, NULL, SC_ROOT},
    {"tls", h_tls, NULL, NULL, NULL, SC_ROOT},
    {"trust_host_cas", h_bool, NULL, NULL, NULL, SC_ROOT},
    {"max_connections", h_uint, NULL, &range_max_conn, NULL, SC_ROOT},
};

static void h_network(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                      const struct field *f)
{
    size_t before = c->nerr;
    json_t *o = json_object();

    if (v->kind == CN_SCALAR) {
        const char *p = conv_enum(c, v, net_profiles);
        if (p)
            json_object_set_new(o, "policy", json_string(p));
    } else {
        walk(c, v, network_fields, ARRAY_SIZE(network_fields), SC_ROOT, o, "network", NULL);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), o);
    else
        json_decref(o);
}

/* ---- secrets --------------------------------------------------------------------------- */

static void h_hosts(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                    const struct field *f)
{
    size_t before = c->nerr;
    json_t *arr;

    if (v->kind != CN_SEQ) {
        conf_error(c, v, "expected a list of host patterns, got %s", describe(v));
        return;
    }
    arr = json_array();
    for (size_t i = 0; i < v->n; i++) {
        size_t saved = conf_push_index(c, i);
        _cleanup_free_ char *s = conv_str(c, v->kids[i]);
        if (s) {
            json_t *p = !strcmp(s, "*") || !strcmp(s, "any") ? json_string("any")
                        : !strncmp(s, "*.", 2)               ? json_pack("{s:s}", "wildcard", s)
                                                             : json_pack("{s:s}", "exact", s);
            json_t *norm =
                probe(c, v->kids[i], "SecretsConfig",
                      json_pack("{s:{s:o}}", "on_violation", "passthrough", json_pack("[o]", p)),
                      "on_violation.passthrough[0]");
            if (norm) {
                json_array_append(
                    arr,
                    json_array_get(
                        json_object_get(json_object_get(norm, "on_violation"), "passthrough"), 0));
                json_decref(norm);
            }
        }
        conf_pop(c, saved);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), arr);
    else
        json_decref(arr);
}

static void h_inject(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                     const struct field *f)
{
    static const char *const kinds[] = {"headers", "basic_auth", "query_params"};
    bool seen[ARRAY_SIZE(kinds)] = {false};
    size_t before = c->nerr;

    if (v->kind != CN_SEQ || v->n == 0) {
        conf_error(c, v, "expected a non-empty list of headers, basic_auth, query_params");
        return;
    }
    for (size_t i = 0; i < v->n; i++) {
        size_t saved = conf_push_index(c, i), k = ARRAY_SIZE(kinds);
        _cleanup_free_ char *s = conv_str(c, v->kids[i]);
        for (size_t j = 0; s && j < ARRAY_SIZE(kinds); j++)
            if (!strcmp(s, kinds[j]))
                k = j;
        if (s && k == ARRAY_SIZE(kinds))
            conf_error(c, v->kids[i],
                       "must be one of headers, basic_auth, query_params (got "
                       "'%.100s')",
                       s);
        else if (s && seen[k])
            conf_error(c, v->kids[i], "'%s' is listed twice", s);
        else if (s)
            seen[k] = true;
        conf_pop(c, saved);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f),
                            json_pack("{s:b,s:b,s:b,s:b}", "headers", seen[0], "basic_auth",
                                      seen[1], "query_params", seen[2], "body", 0));
}

/* value: "${NAME}" exactly records a host-env source resolved at start; anything else is
 * substituted now and stored inline. */
static void h_secret_value(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                           const struct field *f)
{
    _cleanup_free_ char *s = NULL;

    if (v->kind == CN_SCALAR && v->len > 3 && !strncmp(v->text, "${", 2) &&
        v->text[v->len - 1] == '}' && valid_env_name(v->text + 2, v->len - 3)) {
        json_object_set_new(dst, OUT(f),
                            json_pack("{s:s,s:s%}", "kind", "env", "var", v->text + 2, v->len - 3));
        return;
    }
    if ((s = conv_str(c, v)))
        json_object_set_new(dst, OUT(f), json_string(s));
}

static const struct field secret_fields[] = {
    {"value", h_secret_value, NULL, NULL, NULL, SC_ROOT},
    {"allow", h_hosts, "allowed_hosts", NULL, NULL, SC_ROOT},
    {"inject", h_inject, "injection", NULL, NULL, SC_ROOT},
    {"require_tls_identity", h_bool, NULL, NULL, NULL, SC_ROOT},
    {"placeholder", h_str, NULL, NULL, NULL, SC_ROOT},
};

static void h_secrets(struct conf_ctx *c, const struct conf_node *v, json_t *dst,
                      const struct field *f)
{
    size_t before = c->nerr;
    json_t *all;

    if (v->kind != CN_MAP) {
        conf_error(c, v, "expected a mapping of secret names to definitions, got %s", describe(v));
        return;
    }
    all = json_object();
    for (size_t i = 0; i + 1 < v->n; i += 2) {
        const char *name = v->kids[i]->text;
        const struct conf_node *def = v->kids[i + 1];
        size_t saved = conf_push_key(c, name), b = c->nerr;
        json_t *o = json_object();
        walk(c, def, secret_fields, ARRAY_SIZE(secret_fields), SC_ROOT, o, "a secret", NULL);
        if (c->nerr == b) {
            /* Probe with stand-ins for what another file may still supply. */
            json_t *trial = json_deep_copy(o), *val = json_object_get(o, "value");
            json_object_set_new(trial, "env_var", json_string(name));
            if (json_is_object(val) || !val) {
                json_object_del(trial, "value");
                json_object_set_new(trial, "source",
                                    val ? json_deep_copy(val)
                                        : json_pack("{s:s,s:s}", "kind", "env", "var", name));
            }
            if (!json_object_get(trial, "allowed_hosts"))
                json_object_set_new(trial, "allowed_hosts", json_pack("[s]", "any"));
            json_decref(probe(c, def, "SecretEntry", trial, NULL));
        }
        if (c->nerr == b)
            json_object_set_new(all, name, o);
        else
            json_decref(o);
        conf_pop(c, saved);
    }
    if (c->nerr == before)
        json_object_set_new(dst, OUT(f), all);
    else
        json_decref(all);
}

/* ---- root ------------------------------------------------------------------------------ */

static const struct enum_map pull_policies[] = {
    {"missing", "IfMissing"}, {"always", "Always"}, {"never", "Never"}, {NULL, NULL}};
static const struct enum_map security_profiles[] = {
    {"default", "default"}, {"restricted", "restricted"}, {NULL, NULL}};
static const struct urange range_cpus = {1, 128};

static const struct field root_fields[] = {
    {"image", h_image, NULL, NULL, NULL, SC_ROOT},
    {"pull_policy", h_enum, NULL, pull_policies, NULL, SC_ROOT},
    {"registry", h_unsupported, NULL,
     "per-sandbox registry credentials are not supported; use registries in config.json", NULL,
     SC_ROOT},
    {"cpus", h_uint, NULL, &range_cpus, "SandboxResources", SC_ROOT | SC_RES},
    {"memory", h_size, "memory_mib", NULL, "SandboxResources", SC_ROOT | SC_RES},
    {"max_duration", h_secs, "max_duration_secs", NULL, "SandboxPolicy", SC_ROOT | SC_RES},
    {"idle_timeout", h_secs, "idle_timeout_secs", NULL, "SandboxPolicy", SC_ROOT | SC_RES},
    {"rlimits", h_rlimits, NULL, NULL, NULL, SC_ROOT | SC_RES},
    {"workdir", h_guest_path, NULL, NULL, "SandboxRuntimeOptions", SC_ROOT | SC_RT},
    {"shell", h_str, NULL, NULL, "SandboxRuntimeOptions", SC_ROOT | SC_RT},
    {"user", h_str, NULL, NULL, "SandboxRuntimeOptions", SC_ROOT | SC_RT},
    {"hostname", h_str, NULL, NULL, "SandboxRuntimeOptions", SC_ROOT | SC_RT},
    {"security", h_enum, "security_profile", security_profiles, NULL, SC_ROOT | SC_RT},
    {"entrypoint", h_strlist, NULL, NULL, "SandboxRuntimeOptions", SC_ROOT | SC_RT},
    {"cmd", h_strlist, NULL, NULL, "SandboxRuntimeOptions", SC_ROOT | SC_RT},
    {"env", h_env, NULL, NULL, NULL, SC_ROOT | SC_RT},
    {"labels", h_labels, NULL, NULL, "SandboxSpec", SC_ROOT | SC_RT},
    {"init", h_init, NULL, NULL, NULL, SC_ROOT | SC_RT},
    {"mounts", h_mounts, NULL, NULL, NULL, SC_ROOT | SC_FS},
    {"patch_files", h_patch_files, NULL, NULL, NULL, SC_ROOT | SC_FS},
    {"patches", h_patches, NULL, NULL, NULL, SC_ROOT | SC_FS},
    {"network", h_network, NULL, NULL, NULL, SC_ROOT},
    {"ports", h_ports, NULL, NULL, NULL, SC_ROOT},
    {"secrets", h_secrets, NULL, NULL, NULL, SC_ROOT},
    {"scripts", h_scripts, NULL, NULL, "SandboxRuntimeOptions", SC_ROOT},
    {"sandboxes", h_unsupported, NULL,
     "project-file fields (sandboxes, volumes, layers, depends_on) are not accepted in a "
     "sandbox config",
     NULL, SC_ROOT},
    {"volumes", h_unsupported, NULL,
     "project-file fields (sandboxes, volumes, layers, depends_on) are not accepted in a "
     "sandbox config",
     NULL, SC_ROOT},
    {"layers", h_unsupported, NULL,
     "project-file fields (sandboxes, volumes, layers, depends_on) are not accepted in a "
     "sandbox config",
     NULL, SC_ROOT},
    {"depends_on", h_unsupported, NULL,
     "project-file fields (sandboxes, volumes, layers, depends_on) are not accepted in a "
     "sandbox config",
     NULL, SC_ROOT},
};

void conf_convert_file(struct conf_ctx *c, enum capsa_conf_kind kind, struct conf_node *root,
                       json_t *dst, json_t *locs)
{
    static const struct field net = {"network", h_network, NULL, NULL, NULL, SC_ROOT};
    static const struct field sec = {"secrets", h_secrets, NULL, NULL, NULL, SC_ROOT};
    static const struct field scr = {"scripts", h_scripts, NULL, NULL, "SandboxRuntimeOptions",
                                     SC_ROOT};
    const struct field *whole = NULL;
    unsigned scope = SC_ROOT;
    const char *what = "a --conf file";

    switch (kind) {
    case CAPSA_CONF_ROOT:
        break;
    case CAPSA_CONF_RESOURCE:
        scope = SC_RES;
        what = "a --resource-conf file";
        break;
    case CAPSA_CONF_RUNTIME:
        scope = SC_RT;
        what = "a --runtime-conf file";
        break;
    case CAPSA_CONF_FS:
        scope = SC_FS;
        what = "a --fs-conf file";
        break;
    case CAPSA_CONF_NET:
        whole = &net;
        break;
    case CAPSA_CONF_SECRET:
        whole = &sec;
        break;
    case CAPSA_CONF_SCRIPT:
        whole = &scr;
        break;
    }
    if (!root)
        return; /* an empty file sets nothing */
    if (whole) {
        if (root->kind != CN_MAP) {
            conf_error(c, root, "expected a mapping, got %s", describe(root));
            return;
        }
        whole->fn(c, root, dst, whole);
        if (locs) {
            char loc[PATH_MAX + 64];
            snprintf(loc, sizeof(loc), "%s:%u:%u", c->file, root->line, root->col);
            json_object_set_new(locs, whole->key, json_string(loc));
        }
        return;
    }
    walk(c, root, root_fields, ARRAY_SIZE(root_fields), scope, dst, what, locs);
}
