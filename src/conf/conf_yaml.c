/* conf_yaml.c - strict YAML reading for sandbox config files: libyaml's event parser builds a
 * node tree with positions; anchors, aliases, tags, directives, merge keys, duplicate keys,
 * complex keys, several documents and bare yes/no/on/off booleans are rejected here. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "common/cleanup.h"
#include "conf/conf_int.h"

/* ---- errors and paths ------------------------------------------------------------------ */

void conf_errors_add(capsa_conf_errors *errs, const char *fmt, ...)
{
    char *s = NULL, **items;
    va_list ap;

    if (!errs)
        return;
    if (errs->count >= CAPSA_SPEC_MAX_ERRORS) {
        errs->dropped++;
        return;
    }
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        return;
    items = realloc(errs->items, (errs->count + 1) * sizeof(*items));
    if (!items) {
        free(s);
        return;
    }
    errs->items = items;
    errs->items[errs->count++] = s;
}

void conf_error(struct conf_ctx *c, const struct conf_node *n, const char *fmt, ...)
{
    _cleanup_free_ char *msg = NULL;
    va_list ap;

    c->nerr++;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    conf_errors_add(c->errs, "%s:%u:%u: %s: %s", c->file, n ? n->line : 1, n ? n->col : 1,
                    c->plen ? c->path : "(root)", msg ? msg : "out of memory");
}

static size_t push_fmt(struct conf_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static size_t push_fmt(struct conf_ctx *c, const char *fmt, ...)
{
    size_t saved = c->plen;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(c->path + c->plen, sizeof(c->path) - c->plen, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(c->path) - c->plen)
        c->plen = sizeof(c->path) - 1; /* truncated; still NUL-terminated */
    else
        c->plen += (size_t)n;
    return saved;
}

/* Field names and simple map keys are joined with '.', anything else is quoted. */
size_t conf_push_key(struct conf_ctx *c, const char *key)
{
    bool simple = *key != '\0';

    for (const char *p = key; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_' || *p == '-'))
            simple = false;
    if (simple)
        return push_fmt(c, "%s%s", c->plen ? "." : "", key);
    return push_fmt(c, "[\"%.200s\"]", key);
}

size_t conf_push_index(struct conf_ctx *c, size_t i)
{
    return push_fmt(c, "[%zu]", i);
}

void conf_pop(struct conf_ctx *c, size_t saved)
{
    c->plen = saved;
    c->path[saved] = '\0';
}

/* ---- files ----------------------------------------------------------------------------- */

int conf_ctx_init(struct conf_ctx *c, capsa_conf_errors *errs, const char *path)
{
    _cleanup_free_ char *copy = strdup(path);
    char *slash;

    memset(c, 0, sizeof(*c));
    c->errs = errs;
    c->file = path;
    if (!copy) {
        conf_error(c, NULL, "out of memory");
        return -1;
    }
    slash = strrchr(copy, '/');
    if (slash == copy)
        slash[1] = '\0';
    else if (slash)
        *slash = '\0';
    if (!realpath(slash ? copy : ".", c->dir)) {
        conf_error(c, NULL, "cannot resolve the file's directory: %s", strerror(errno));
        return -1;
    }
    return 0;
}

char *conf_read_file(struct conf_ctx *c, const char *path, size_t *len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    _cleanup_free_ char *buf = NULL;
    struct stat st;
    size_t n = 0;

    if (fd < 0) {
        conf_error(c, NULL, "cannot open: %s", strerror(errno));
        return NULL;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        conf_error(c, NULL, "not a regular file");
        return NULL;
    }
    buf = malloc(CONF_MAX_FILE + 1);
    if (!buf) {
        conf_error(c, NULL, "out of memory");
        return NULL;
    }
    for (;;) {
        ssize_t r = read(fd, buf + n, CONF_MAX_FILE + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            conf_error(c, NULL, "read: %s", strerror(errno));
            return NULL;
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > CONF_MAX_FILE) {
            conf_error(c, NULL, "file is larger than %u bytes", CONF_MAX_FILE);
            return NULL;
        }
    }
    buf[n] = '\0';
    *len = n;
    return steal_pointer(&buf);
}

/* ---- node tree ------------------------------------------------------------------------- */

void conf_node_free(struct conf_node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n; i++)
        conf_node_free(n->kids[i]);
    free(n->kids);
    free(n->text);
    free(n);
}

static int node_add(struct conf_node *parent, struct conf_node *kid)
{
    if (parent->n == parent->cap) {
        size_t cap = parent->cap ? parent->cap * 2 : 8;
        struct conf_node **k = realloc(parent->kids, cap * sizeof(*k));
        if (!k)
            return -1;
        parent->kids = k;
        parent->cap = cap;
    }
    parent->kids[parent->n++] = kid;
    return 0;
}

static bool is_bare_bool(const char *s)
{
    static const char *const words[] = {"y", "yes", "n", "no", "on", "off"};
    for (size_t i = 0; i < ARRAY_SIZE(words); i++)
        if (!strcasecmp(s, words[i]))
            return true;
    return false;
}

static int key_cmp(const void *a, const void *b)
{
    const struct conf_node *x = *(struct conf_node *const *)a, *y = *(struct conf_node *const *)b;
    int r = strcmp(x->text, y->text);
    if (r)
        return r;
    return x->line != y->line ? (x->line < y->line ? -1 : 1)
                              : (x->col < y->col ? -1 : x->col > y->col);
}

/* Report each key that repeats an earlier one (positions of both). */
static void check_dup_keys(struct conf_ctx *c, struct conf_node *map)
{
    size_t nk = map->n / 2;
    _cleanup_free_ struct conf_node **keys = NULL;

    if (nk < 2)
        return;
    keys = malloc(nk * sizeof(*keys));
    if (!keys)
        return;
    for (size_t i = 0; i < nk; i++) {
        keys[i] = map->kids[2 * i];
        if (keys[i]->kind != CN_SCALAR || !keys[i]->text)
            return; /* already reported */
    }
    qsort(keys, nk, sizeof(*keys), key_cmp);
    for (size_t i = 1; i < nk; i++) {
        if (!strcmp(keys[i]->text, keys[i - 1]->text)) {
            size_t saved = conf_push_key(c, keys[i]->text);
            conf_error(c, keys[i], "duplicate key (first at line %u, column %u)", keys[i - 1]->line,
                       keys[i - 1]->col);
            conf_pop(c, saved);
        }
    }
}

/* Append the current path segment of a collection's child before descending. */
static size_t push_child(struct conf_ctx *c, struct conf_node *parent)
{
    if (!parent)
        return c->plen;
    if (parent->kind == CN_SEQ)
        return conf_push_index(c, parent->n);
    /* CN_MAP with its key already added: the value's path is the key. */
    if (parent->n % 2 == 1) {
        const char *k = parent->kids[parent->n - 1]->text;
        return conf_push_key(c, k ? k : "?");
    }
    return c->plen;
}

struct parse_state {
    struct conf_node *stack[CONF_MAX_DEPTH + 1];
    size_t saved[CONF_MAX_DEPTH + 1];
    size_t depth, nodes;
};

/* Checks shared by scalars and collection starts. */
static void check_props(struct conf_ctx *c, struct conf_node *n, const yaml_char_t *anchor,
                        const yaml_char_t *tag)
{
    if (anchor)
        conf_error(c, n, "anchors are not supported (&%.100s)", (const char *)anchor);
    if (tag)
        conf_error(c, n, "tags are not supported (%.100s)", (const char *)tag);
}

int conf_yaml_parse(struct conf_ctx *c, const char *text, size_t len, struct conf_node **root)
{
    struct parse_state st = {.depth = 0};
    size_t start_errors = c->nerr;
    struct conf_node *top = NULL;
    yaml_parser_t parser;
    unsigned docs = 0;
    bool done = false;

    *root = NULL;
    if (!yaml_parser_initialize(&parser)) {
        conf_error(c, NULL, "out of memory");
        return -1;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);

    while (!done) {
        yaml_event_t ev;
        struct conf_node *n = NULL, *parent = st.depth ? st.stack[st.depth - 1] : NULL;
        bool is_key = parent && parent->kind == CN_MAP && parent->n % 2 == 0;

        if (!yaml_parser_parse(&parser, &ev)) {
            struct conf_node at = {.line = (unsigned)parser.problem_mark.line + 1,
                                   .col = (unsigned)parser.problem_mark.column + 1};
            if (parser.error == YAML_READER_ERROR) {
                /* reader errors carry a byte offset, not a mark */
                at.line = 1;
                at.col = 1;
                for (size_t i = 0; i < parser.problem_offset && i < len; i++) {
                    if (text[i] == '\n') {
                        at.line++;
                        at.col = 1;
                    } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
                        at.col++;
                    }
                }
            }
            if (parser.context)
                conf_error(c, &at, "YAML syntax error: %s %s", parser.problem ? parser.problem : "",
                           parser.context);
            else
                conf_error(c, &at, "YAML syntax error: %s",
                           parser.problem ? parser.problem : "unknown");
            break;
        }
        struct conf_node mark = {.line = (unsigned)ev.start_mark.line + 1,
                                 .col = (unsigned)ev.start_mark.column + 1};
        switch (ev.type) {
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
        case YAML_NO_EVENT:
            break;
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (docs++) {
                conf_error(c, &mark, "multiple YAML documents are not supported (one per file)");
                done = true;
            } else if (ev.data.document_start.version_directive ||
                       ev.data.document_start.tag_directives.start !=
                           ev.data.document_start.tag_directives.end) {
                conf_error(c, &mark, "YAML directives (%%YAML, %%TAG) are not supported");
            }
            break;
        case YAML_ALIAS_EVENT: {
            size_t saved = push_child(c, parent);
            conf_error(c, &mark, "aliases are not supported (*%.100s)",
                       (const char *)ev.data.alias.anchor);
            conf_pop(c, saved);
            done = true;
            break;
        }
        case YAML_SCALAR_EVENT:
        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT: {
            size_t saved = push_child(c, parent);
            if (++st.nodes > CONF_MAX_NODES) {
                conf_error(c, &mark, "too many YAML nodes (more than %u)", CONF_MAX_NODES);
                conf_pop(c, saved);
                done = true;
                break;
            }
            n = calloc(1, sizeof(*n));
            if (!n) {
                conf_error(c, &mark, "out of memory");
                conf_pop(c, saved);
                done = true;
                break;
            }
            n->line = mark.line;
            n->col = mark.col;
            if (ev.type == YAML_SCALAR_EVENT) {
                n->kind = CN_SCALAR;
                n->len = ev.data.scalar.length;
                n->text = malloc(n->len + 1);
                if (n->text) {
                    memcpy(n->text, ev.data.scalar.value, n->len);
                    n->text[n->len] = '\0';
                }
                n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
                check_props(c, n, ev.data.scalar.anchor, ev.data.scalar.tag);
                if (!n->text) {
                    conf_error(c, n, "out of memory");
                } else if (memchr(n->text, '\0', n->len)) {
                    conf_error(c, n, "NUL bytes are not allowed");
                } else if (is_key) {
                    if (n->plain && !strcmp(n->text, "<<"))
                        conf_error(c, n, "merge keys (<<) are not supported");
                } else if (n->plain && is_bare_bool(n->text)) {
                    conf_error(c, n,
                               "ambiguous bare boolean '%s': write true or false, or quote it "
                               "for a string",
                               n->text);
                }
            } else {
                n->kind = ev.type == YAML_MAPPING_START_EVENT ? CN_MAP : CN_SEQ;
                if (ev.type == YAML_MAPPING_START_EVENT)
                    check_props(c, n, ev.data.mapping_start.anchor, ev.data.mapping_start.tag);
                else
                    check_props(c, n, ev.data.sequence_start.anchor, ev.data.sequence_start.tag);
                if (is_key)
                    conf_error(c, n, "mapping keys must be scalars");
            }
            if (parent ? node_add(parent, n) < 0 : (top != NULL)) {
                conf_error(c, n, "out of memory");
                conf_node_free(n);
                conf_pop(c, saved);
                done = true;
                break;
            }
            if (!parent)
                top = n;
            if (n->kind == CN_SCALAR) {
                conf_pop(c, saved);
            } else if (st.depth >= CONF_MAX_DEPTH) {
                conf_error(c, n, "nested deeper than %d levels", CONF_MAX_DEPTH);
                conf_pop(c, saved);
                done = true;
            } else {
                st.saved[st.depth] = saved;
                st.stack[st.depth++] = n;
            }
            break;
        }
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            if (st.depth) {
                struct conf_node *closed = st.stack[--st.depth];
                if (closed->kind == CN_MAP)
                    check_dup_keys(c, closed);
                conf_pop(c, st.saved[st.depth]);
            }
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&parser);
    conf_pop(c, 0);
    if (c->nerr != start_errors) {
        conf_node_free(top);
        return -1;
    }
    *root = top;
    return 0;
}
