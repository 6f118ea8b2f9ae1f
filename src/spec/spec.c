/* spec.c - entry points of the spec module: the type registry, check, parse and dump. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "spec/spec_int.h"

#define SPEC_MAX_TEXT (16u * 1024 * 1024)

static const struct spec_type *find_type(const char *name)
{
    static const struct {
        const struct spec_type *types;
        const size_t *n;
    } tables[] = {
        {spec_domain_types, &spec_domain_ntypes},
        {spec_net_types, &spec_net_ntypes},
        {spec_cloud_types, &spec_cloud_ntypes},
    };

    if (!name)
        return NULL;
    for (size_t t = 0; t < ARRAY_SIZE(tables); t++)
        for (size_t i = 0; i < *tables[t].n; i++)
            if (!strcmp(tables[t].types[i].name, name))
                return &tables[t].types[i];
    return NULL;
}

const char *const *capsa_spec_type_names(void)
{
    static const char *names[128];

    if (!names[0]) {
        size_t o = 0;
        for (size_t i = 0; i < spec_domain_ntypes && o < ARRAY_SIZE(names) - 1; i++)
            names[o++] = spec_domain_types[i].name;
        for (size_t i = 0; i < spec_net_ntypes && o < ARRAY_SIZE(names) - 1; i++)
            names[o++] = spec_net_types[i].name;
        for (size_t i = 0; i < spec_cloud_ntypes && o < ARRAY_SIZE(names) - 1; i++)
            names[o++] = spec_cloud_types[i].name;
        names[o] = NULL;
    }
    return names;
}

bool capsa_spec_type_known(const char *type_name)
{
    return find_type(type_name) != NULL;
}

int capsa_spec_check(const char *type_name, json_t *in, json_t **normalized,
                     capsa_spec_errors *errs)
{
    const struct spec_type *t = find_type(type_name);
    struct spec_ctx c = {.errs = errs};
    json_t *out;

    if (normalized)
        *normalized = NULL;
    if (!t) {
        spec_error(&c, "unknown type \"%.100s\" (see capsa spec check --help for the list)",
                   type_name ? type_name : "(null)");
        return -1;
    }
    if (!in) {
        spec_error(&c, "no document");
        return -1;
    }
    out = t->fn(&c, in, t->arg);
    if (c.nerr || !out) {
        if (!c.nerr)
            spec_error(&c, "out of memory");
        json_decref(out);
        return -1;
    }
    if (normalized)
        *normalized = out;
    else
        json_decref(out);
    return 0;
}

int capsa_spec_parse(const char *text, size_t len, json_t **out, capsa_spec_errors *errs)
{
    struct spec_ctx c = {.errs = errs};
    json_error_t jerr;

    *out = NULL;
    if (len > SPEC_MAX_TEXT) {
        snprintf(c.path, sizeof(c.path), "(json)");
        c.len = strlen(c.path);
        spec_error(&c, "document is larger than %u bytes", SPEC_MAX_TEXT);
        return -1;
    }
    *out = json_loadb(text, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!*out) {
        snprintf(c.path, sizeof(c.path), "(json) line %d, column %d", jerr.line, jerr.column);
        c.len = strlen(c.path);
        spec_error(&c, "%s", jerr.text);
        return -1;
    }
    return 0;
}

char *capsa_spec_dump(const json_t *doc, bool pretty)
{
    return json_dumps(doc, JSON_ENCODE_ANY | (pretty ? JSON_INDENT(2) : JSON_COMPACT));
}
