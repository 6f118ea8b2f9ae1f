/* conf_int.h - internals shared by the conf module's files: the YAML node tree, the
 * per-file conversion context and its error helpers. */
#ifndef CAPSA_CONF_INT_H
#define CAPSA_CONF_INT_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "conf/conf.h"

#define CONF_MAX_FILE   (4u * 1024 * 1024) /* bytes of one YAML file */
#define CONF_MAX_DEPTH  64                 /* nesting of collections */
#define CONF_MAX_NODES  200000             /* nodes of one file */
#define CONF_MAX_SCALAR (1u * 1024 * 1024) /* bytes of one value after ${} substitution */

enum conf_node_kind { CN_SCALAR, CN_MAP, CN_SEQ };

struct conf_node {
    enum conf_node_kind kind;
    unsigned line, col; /* 1-based */
    char *text;         /* CN_SCALAR: raw text (NUL-terminated) */
    size_t len;
    bool plain;              /* CN_SCALAR: plain (unquoted, not block) style */
    struct conf_node **kids; /* CN_SEQ: items; CN_MAP: key0, value0, key1, value1, ... */
    size_t n, cap;
};

/* Conversion context of one file. */
struct conf_ctx {
    capsa_conf_errors *errs;
    const char *file;   /* as given, used in messages */
    char dir[PATH_MAX]; /* absolute directory of file, base of relative paths */
    size_t nerr;        /* errors reported through this context */
    char path[1024];    /* current field path, "" at the root */
    size_t plen;
};

void conf_errors_add(capsa_conf_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Report "FILE:LINE:COL: PATH: MESSAGE" at node n (n NULL: line 1, column 1). */
void conf_error(struct conf_ctx *c, const struct conf_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Path push/pop: push returns the previous length to give back to conf_pop. */
size_t conf_push_key(struct conf_ctx *c, const char *key);
size_t conf_push_index(struct conf_ctx *c, size_t i);
void conf_pop(struct conf_ctx *c, size_t saved);

/* Parse YAML text strictly into *root (NULL for an empty stream). Returns 0, or -1 with
 * errors reported through c. */
int conf_yaml_parse(struct conf_ctx *c, const char *text, size_t len, struct conf_node **root);
void conf_node_free(struct conf_node *n);

/* Read a whole file of at most CONF_MAX_FILE bytes; NUL-terminated. Reports through c. */
char *conf_read_file(struct conf_ctx *c, const char *path, size_t *len);

/* Set c->file and c->dir for path; returns -1 (reported) if its directory cannot be found. */
int conf_ctx_init(struct conf_ctx *c, capsa_conf_errors *errs, const char *path);

/* Convert a parsed file of the given kind into conf-document fields in dst; locs receives
 * "FILE:LINE:COL" for each top-level conf key the file sets. */
void conf_convert_file(struct conf_ctx *c, enum capsa_conf_kind kind, struct conf_node *root,
                       json_t *dst, json_t *locs);

#endif
