/* ref.c - OCI image reference parsing (distribution/reference grammar, Docker defaults). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "image/ref.h"

bool capsa_digest_valid(const char *s)
{
    if (!s || strncmp(s, "sha256:", 7) != 0)
        return false;
    s += 7;
    for (int i = 0; i < 64; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return s[64] == '\0';
}

static bool is_lower_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

/* path-component := [a-z0-9]+ ((\.|_|__|-+)[a-z0-9]+)* */
static bool component_valid(const char *s, size_t n)
{
    size_t i = 0;

    if (n == 0 || !is_lower_alnum(s[0]) || !is_lower_alnum(s[n - 1]))
        return false;
    while (i < n) {
        if (is_lower_alnum(s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && !is_lower_alnum(s[j]))
            j++;
        size_t len = j - i;
        const char *sep = s + i;
        bool ok = (len == 1 && (sep[0] == '.' || sep[0] == '_' || sep[0] == '-')) ||
                  (len == 2 && sep[0] == '_' && sep[1] == '_');
        if (!ok) {
            ok = true;
            for (size_t k = 0; k < len; k++)
                if (sep[k] != '-')
                    ok = false;
        }
        if (!ok)
            return false;
        i = j;
    }
    return true;
}

/* host := domain-component ('.' domain-component)* [':' port], or [v6]:port; lenient on
 * case (registries are case-insensitive hosts). */
static bool registry_valid(const char *s, size_t n)
{
    size_t colon = n;

    if (n == 0 || n >= CAPSA_REGISTRY_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == ':')
            colon = i;
    if (s[0] == '[') {
        /* bracketed IPv6 literal */
        const char *close = memchr(s, ']', n);
        if (!close)
            return false;
        for (const char *p = s + 1; p < close; p++)
            if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') ||
                  (*p >= 'A' && *p <= 'F') || *p == ':'))
                return false;
        colon = (size_t)(close - s) + 1;
        if (colon == n)
            return true;
        if (s[colon] != ':')
            return false;
    } else {
        for (size_t i = 0; i < colon; i++) {
            char c = s[i];
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '.'))
                return false;
        }
        if (colon == 0 || s[0] == '.' || s[0] == '-' || s[colon - 1] == '.' || s[colon - 1] == '-')
            return false;
    }
    if (colon < n) {
        size_t digits = n - colon - 1;
        if (digits == 0 || digits > 5)
            return false;
        for (size_t i = colon + 1; i < n; i++)
            if (s[i] < '0' || s[i] > '9')
                return false;
    }
    return true;
}

static bool tag_valid(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > CAPSA_TAG_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool word =
            (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
        if (!(word || (i > 0 && (c == '.' || c == '-'))))
            return false;
    }
    return true;
}

int capsa_image_ref_parse(const char *s, struct capsa_image_ref *out, capsa_err *err)
{
    char buf[CAPSA_REF_MAX];
    char *name, *at, *tag = NULL, *slash;
    size_t len;

    memset(out, 0, sizeof(*out));
    if (!s || !*s)
        return capsa_err_set(err, EINVAL, "image reference: empty");
    len = strlen(s);
    if (len >= sizeof(buf))
        return capsa_err_set(err, EINVAL, "image reference: longer than %zu bytes",
                             sizeof(buf) - 1);
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)s[i] <= ' ' || (unsigned char)s[i] >= 0x7f)
            return capsa_err_set(err, EINVAL,
                                 "image reference '%s': contains a space or control byte", s);
    memcpy(buf, s, len + 1);
    name = buf;

    at = strchr(name, '@');
    if (at) {
        *at = '\0';
        if (!capsa_digest_valid(at + 1))
            return capsa_err_set(err, EINVAL,
                                 "image reference '%s': digest must be sha256: followed by 64 "
                                 "lowercase hex digits",
                                 s);
        snprintf(out->digest, sizeof(out->digest), "%s", at + 1);
    }
    /* A tag is after the last ':' that follows the last '/'. */
    slash = strrchr(name, '/');
    tag = strrchr(slash ? slash : name, ':');
    if (tag) {
        *tag++ = '\0';
        if (!tag_valid(tag))
            return capsa_err_set(err, EINVAL,
                                 "image reference '%s': tag '%s' must be 1-128 of [A-Za-z0-9_.-] "
                                 "not starting with '.' or '-'",
                                 s, tag);
        snprintf(out->tag, sizeof(out->tag), "%s", tag);
    }

    slash = strchr(name, '/');
    if (slash &&
        (memchr(name, '.', (size_t)(slash - name)) || memchr(name, ':', (size_t)(slash - name)) ||
         (slash - name == 9 && !strncmp(name, "localhost", 9)))) {
        if (!registry_valid(name, (size_t)(slash - name)))
            return capsa_err_set(err, EINVAL, "image reference '%s': invalid registry host '%.*s'",
                                 s, (int)(slash - name), name);
        snprintf(out->registry, sizeof(out->registry), "%.*s", (int)(slash - name), name);
        name = slash + 1;
    } else {
        snprintf(out->registry, sizeof(out->registry), "docker.io");
    }
    if (!strcmp(out->registry, "index.docker.io") || !strcmp(out->registry, "registry-1.docker.io"))
        snprintf(out->registry, sizeof(out->registry), "docker.io");

    if (!*name)
        return capsa_err_set(err, EINVAL, "image reference '%s': missing repository name", s);
    /* Validate each path component. */
    for (const char *p = name;;) {
        const char *e = strchr(p, '/');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (!component_valid(p, n))
            return capsa_err_set(err, EINVAL,
                                 "image reference '%s': repository component '%.*s' must be "
                                 "lowercase [a-z0-9] separated by '.', '_', '__' or '-'",
                                 s, (int)n, p);
        if (!e)
            break;
        p = e + 1;
    }
    if (!strcmp(out->registry, "docker.io") && !strchr(name, '/')) {
        if (strlen(name) + 8 > CAPSA_REPO_MAX)
            return capsa_err_set(err, EINVAL, "image reference '%s': repository too long", s);
        snprintf(out->repository, sizeof(out->repository), "library/%s", name);
    } else {
        if (strlen(name) > CAPSA_REPO_MAX)
            return capsa_err_set(err, EINVAL,
                                 "image reference '%s': repository longer than %d bytes", s,
                                 CAPSA_REPO_MAX);
        snprintf(out->repository, sizeof(out->repository), "%s", name);
    }
    if (!out->tag[0] && !out->digest[0])
        snprintf(out->tag, sizeof(out->tag), "latest");
    return 0;
}

void capsa_image_ref_format(const struct capsa_image_ref *r, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s%s%s%s%s", r->registry, r->repository, r->tag[0] ? ":" : "", r->tag,
             r->digest[0] ? "@" : "", r->digest);
}

const char *capsa_image_ref_api_host(const struct capsa_image_ref *r)
{
    if (!strcmp(r->registry, "docker.io"))
        return "registry-1.docker.io";
    return r->registry;
}
