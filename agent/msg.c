/* msg.c - pure, bounded parsers for the agent's JSON requests (see msg.h). */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "msg.h"

static inline void agent_json_decrefp(json_t **j)
{
    if (*j)
        json_decref(*j);
}
#define _cleanup_json_ _cleanup_(agent_json_decrefp)

void agent_strv_free(agent_strv v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

size_t agent_strv_len(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

bool agent_path_ok(const char *p)
{
    return p && p[0] == '/' && strlen(p) <= AGENT_MAX_PATH;
}

void agent_utf8_fix(char *s)
{
    unsigned char *p = (unsigned char *)s;

    while (*p) {
        size_t n;
        unsigned int cp;
        if (*p < 0x80) {
            p++;
            continue;
        } else if ((*p & 0xe0) == 0xc0) {
            n = 2;
            cp = *p & 0x1f;
        } else if ((*p & 0xf0) == 0xe0) {
            n = 3;
            cp = *p & 0x0f;
        } else if ((*p & 0xf8) == 0xf0) {
            n = 4;
            cp = *p & 0x07;
        } else {
            *p++ = '?';
            continue;
        }
        size_t i;
        for (i = 1; i < n; i++) {
            if ((p[i] & 0xc0) != 0x80)
                break;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if (i < n || (n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) ||
            (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) || (cp >= 0xd800 && cp <= 0xdfff)) {
            *p++ = '?';
            continue;
        }
        p += n;
    }
}

static json_t *parse_object(const void *payload, size_t len, capsa_err *err)
{
    json_error_t je;
    json_t *j;

    /* jansson rejects NUL inside strings unless JSON_ALLOW_NUL, which we keep off */
    j = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &je);
    if (!j) {
        capsa_err_set(err, EBADMSG, "payload is not valid JSON: %s (line %d column %d)", je.text,
                      je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        capsa_err_set(err, EBADMSG, "payload is not a JSON object");
        return NULL;
    }
    return j;
}

int agent_parse_object(const void *payload, size_t len, capsa_err *err)
{
    json_t *j = parse_object(payload, len, err);
    if (!j)
        return -1;
    json_decref(j);
    return 0;
}

/* Optional string field: *out stays NULL when absent or null. */
static int get_str(json_t *obj, const char *key, size_t max, bool required, char **out,
                   capsa_err *err)
{
    json_t *v = json_object_get(obj, key);
    const char *s;
    size_t n;

    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            return capsa_err_set(err, EINVAL, "%s: required string is missing", key);
        return 0;
    }
    if (!json_is_string(v))
        return capsa_err_set(err, EINVAL, "%s: expected a string", key);
    s = json_string_value(v);
    n = json_string_length(v);
    if (n > max)
        return capsa_err_set(err, EINVAL, "%s: longer than %zu bytes", key, max);
    if (strlen(s) != n)
        return capsa_err_set(err, EINVAL, "%s: contains a NUL byte", key);
    *out = strdup(s);
    if (!*out)
        return capsa_err_set(err, ENOMEM, "%s: out of memory", key);
    return 0;
}

static int get_bool(json_t *obj, const char *key, bool dflt, bool *out, capsa_err *err)
{
    json_t *v = json_object_get(obj, key);

    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v))
        return capsa_err_set(err, EINVAL, "%s: expected true or false", key);
    *out = json_is_true(v);
    return 0;
}

static int get_int(json_t *obj, const char *key, json_int_t lo, json_int_t hi, json_int_t dflt,
                   json_int_t *out, bool *present, capsa_err *err)
{
    json_t *v = json_object_get(obj, key);

    if (present)
        *present = false;
    if (!v || json_is_null(v)) {
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v))
        return capsa_err_set(err, EINVAL, "%s: expected an integer", key);
    *out = json_integer_value(v);
    if (*out < lo || *out > hi)
        return capsa_err_set(err, EINVAL, "%s: %lld is outside %lld..%lld", key, (long long)*out,
                             (long long)lo, (long long)hi);
    if (present)
        *present = true;
    return 0;
}

/* Array of strings -> strv; each string at most max_item bytes, no NUL. */
static int get_strv(json_t *obj, const char *key, size_t max_items, size_t max_item, bool env_form,
                    agent_strv *out, capsa_err *err)
{
    json_t *v = json_object_get(obj, key), *it;
    agent_strv vec;
    size_t i;

    *out = NULL;
    if (!v || json_is_null(v)) {
        *out = calloc(1, sizeof(char *));
        return *out ? 0 : capsa_err_set(err, ENOMEM, "%s: out of memory", key);
    }
    if (!json_is_array(v))
        return capsa_err_set(err, EINVAL, "%s: expected an array of strings", key);
    if (json_array_size(v) > max_items)
        return capsa_err_set(err, EINVAL, "%s: more than %zu entries", key, max_items);
    vec = calloc(json_array_size(v) + 1, sizeof(char *));
    if (!vec)
        return capsa_err_set(err, ENOMEM, "%s: out of memory", key);
    json_array_foreach(v, i, it)
    {
        const char *s = json_string_value(it);
        if (!s || strlen(s) != json_string_length(it) || json_string_length(it) > max_item) {
            agent_strv_free(vec);
            return capsa_err_set(err, EINVAL,
                                 "%s[%zu]: expected a string without NUL of at most "
                                 "%zu bytes",
                                 key, i, max_item);
        }
        if (env_form) {
            const char *eq = strchr(s, '=');
            if (!eq || eq == s) {
                agent_strv_free(vec);
                return capsa_err_set(err, EINVAL,
                                     "%s[%zu]: expected KEY=VALUE with a non-empty "
                                     "KEY",
                                     key, i);
            }
        }
        vec[i] = strdup(s);
        if (!vec[i]) {
            agent_strv_free(vec);
            return capsa_err_set(err, ENOMEM, "%s: out of memory", key);
        }
    }
    *out = vec;
    return 0;
}

const char *agent_env_get(char *const *v, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; v && v[i]; i++)
        if (strncmp(v[i], key, kl) == 0 && v[i][kl] == '=')
            return v[i] + kl + 1;
    return NULL;
}

int agent_env_set(agent_strv *v, const char *kv, capsa_err *err)
{
    const char *eq = strchr(kv, '=');
    size_t kl = eq ? (size_t)(eq - kv) : strlen(kv), n = agent_strv_len(*v);
    char *dup = strdup(kv);
    agent_strv nv;

    if (!dup)
        return capsa_err_set(err, ENOMEM, "env: out of memory");
    for (size_t i = 0; i < n; i++) {
        if (strncmp((*v)[i], kv, kl) == 0 && (*v)[i][kl] == '=') {
            free((*v)[i]);
            (*v)[i] = dup;
            return 0;
        }
    }
    nv = realloc(*v, (n + 2) * sizeof(char *));
    if (!nv) {
        free(dup);
        return capsa_err_set(err, ENOMEM, "env: out of memory");
    }
    nv[n] = dup;
    nv[n + 1] = NULL;
    *v = nv;
    return 0;
}

static const struct {
    const char *name;
    int resource;
} rlimit_names[] = {
    {"cpu", RLIMIT_CPU},           {"fsize", RLIMIT_FSIZE},
    {"data", RLIMIT_DATA},         {"stack", RLIMIT_STACK},
    {"core", RLIMIT_CORE},         {"rss", RLIMIT_RSS},
    {"nproc", RLIMIT_NPROC},       {"nofile", RLIMIT_NOFILE},
    {"memlock", RLIMIT_MEMLOCK},   {"as", RLIMIT_AS},
    {"locks", RLIMIT_LOCKS},       {"sigpending", RLIMIT_SIGPENDING},
    {"msgqueue", RLIMIT_MSGQUEUE}, {"nice", RLIMIT_NICE},
    {"rtprio", RLIMIT_RTPRIO},     {"rttime", RLIMIT_RTTIME},
};

int agent_rlimit_resource(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(rlimit_names); i++)
        if (name && strcmp(name, rlimit_names[i].name) == 0)
            return rlimit_names[i].resource;
    return -1;
}

/* ---- boot ---- */

static void blockdev_free(struct agent_blockdev *d)
{
    free(d->serial);
    free(d->fstype);
}

void agent_boot_free(struct agent_boot *b)
{
    free(b->root_tag);
    blockdev_free(&b->root_lower);
    blockdev_free(&b->root_upper);
    blockdev_free(&b->root_dev);
    for (size_t i = 0; i < b->n_mounts; i++) {
        free(b->mounts[i].tag);
        free(b->mounts[i].guest);
    }
    free(b->mounts);
    free(b->hostname);
    agent_strv_free(b->env);
    free(b->workdir);
    free(b->user);
    memset(b, 0, sizeof(*b));
}

/* A 9p tag: 1..31 bytes of [A-Za-z0-9._-] (virtio-9p limits tags to 31 bytes). */
static bool tag_ok(const char *t)
{
    size_t n = strlen(t);
    if (n == 0 || n > 31)
        return false;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* A guest mount point: absolute, not "/", no "." or ".." components. */
static bool mount_point_ok(const char *p)
{
    if (!agent_path_ok(p) || strcmp(p, "/") == 0)
        return false;
    for (const char *c = p; *c;) {
        while (*c == '/')
            c++;
        const char *e = strchrnul(c, '/');
        size_t n = (size_t)(e - c);
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        c = e;
    }
    return true;
}

static bool hostname_ok(const char *h)
{
    size_t n = strlen(h);
    if (n == 0 || n > AGENT_MAX_HOSTNAME)
        return false;
    for (const char *p = h; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-' || *p == '_'))
            return false;
    return true;
}

/* serial: 1..20 bytes of [A-Za-z0-9._-]; fstype: 1..31 bytes of [a-z0-9._-]. */
static bool word_ok(const char *s, size_t max, bool upper)
{
    size_t n = strlen(s);
    if (n == 0 || n > max)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (upper && *p >= 'A' && *p <= 'Z') ||
              (*p >= '0' && *p <= '9') || *p == '.' || *p == '_' || *p == '-'))
            return false;
    return true;
}

/* {"serial": S, "fstype": T, "sectors": N} inside obj (fstype defaults to dflt, NULL:
 * optional; sectors optional). readonly: how the host attached the disk. */
static int parse_blockdev(json_t *obj, const char *what, const char *dflt, bool readonly,
                          struct agent_blockdev *d, capsa_err *err)
{
    json_int_t sectors;

    if (!json_is_object(obj))
        return capsa_err_set(err, EINVAL, "%s: expected an object", what);
    if (get_str(obj, "serial", 64, true, &d->serial, err) < 0 ||
        get_str(obj, "fstype", 64, false, &d->fstype, err) < 0 ||
        get_int(obj, "sectors", 1, INT64_MAX, 0, &sectors, NULL, err) < 0)
        return capsa_err_prefix(err, "%s", what);
    d->sectors = (uint64_t)sectors;
    d->readonly = readonly;
    if (!word_ok(d->serial, AGENT_MAX_SERIAL, true))
        return capsa_err_set(err, EINVAL, "%s.serial: expected 1-%d characters of [A-Za-z0-9._-]",
                             what, AGENT_MAX_SERIAL);
    if (!d->fstype && dflt && !(d->fstype = strdup(dflt)))
        return capsa_err_set(err, ENOMEM, "%s: out of memory", what);
    if (d->fstype && !word_ok(d->fstype, AGENT_MAX_FSTYPE, false))
        return capsa_err_set(err, EINVAL, "%s.fstype: expected 1-%d characters of [a-z0-9._-]",
                             what, AGENT_MAX_FSTYPE);
    return 0;
}

static int parse_overlay_root(json_t *root, struct agent_boot *b, capsa_err *err)
{
    json_t *upper = json_object_get(root, "upper");
    json_int_t size;

    if (parse_blockdev(json_object_get(root, "lower"), "root.lower", "erofs", true, &b->root_lower,
                       err) < 0)
        return -1;
    if (!json_is_object(upper))
        return capsa_err_set(err, EINVAL, "root.upper: expected an object");
    if (get_bool(upper, "tmpfs", false, &b->root_upper_tmpfs, err) < 0)
        return capsa_err_prefix(err, "root.upper");
    if (b->root_upper_tmpfs) {
        if (json_object_get(upper, "serial"))
            return capsa_err_set(err, EINVAL,
                                 "root.upper: give either \"tmpfs\": true or a \"serial\"");
        if (get_int(upper, "size_mib", 1, 1024 * 1024, 0, &size, NULL, err) < 0)
            return capsa_err_prefix(err, "root.upper");
        b->root_upper_size_mib = (uint64_t)size;
        b->root_upper_known = true; /* the agent makes it */
        return 0;
    }
    if (get_bool(upper, "scratch", false, &b->root_upper_scratch, err) < 0 ||
        get_bool(upper, "known", false, &b->root_upper_known, err) < 0)
        return capsa_err_prefix(err, "root.upper");
    return parse_blockdev(upper, "root.upper", "ext4", false, &b->root_upper, err);
}

static int parse_boot_obj(json_t *j, struct agent_boot *b, capsa_err *err)
{
    json_t *root = json_object_get(j, "root"), *mounts, *m;
    json_int_t ver, clk;
    char *kind = NULL;
    size_t i;

    if (get_int(j, "version", 1, 1, 1, &ver, NULL, err) < 0)
        return -1;
    if (!root || json_is_null(root)) {
        b->root_kind = AGENT_ROOT_NONE;
    } else {
        if (!json_is_object(root))
            return capsa_err_set(err, EINVAL, "root: expected an object");
        if (get_str(root, "kind", 32, true, &kind, err) < 0)
            return capsa_err_prefix(err, "root");
        if (strcmp(kind, "9p") == 0) {
            b->root_kind = AGENT_ROOT_9P;
        } else if (strcmp(kind, "initramfs") == 0) {
            b->root_kind = AGENT_ROOT_INITRAMFS;
        } else if (strcmp(kind, "none") == 0) {
            b->root_kind = AGENT_ROOT_NONE;
        } else if (strcmp(kind, "overlay") == 0) {
            b->root_kind = AGENT_ROOT_OVERLAY;
        } else if (strcmp(kind, "disk") == 0) {
            b->root_kind = AGENT_ROOT_DISK;
        } else {
            capsa_err_set(err, EINVAL,
                          "root.kind: \"%.32s\" is not one of 9p, overlay, disk, initramfs, none",
                          kind);
            free(kind);
            return -1;
        }
        free(kind);
        if (b->root_kind == AGENT_ROOT_9P) {
            if (get_str(root, "tag", 64, true, &b->root_tag, err) < 0)
                return capsa_err_prefix(err, "root");
            if (!tag_ok(b->root_tag))
                return capsa_err_set(err, EINVAL,
                                     "root.tag: expected 1-31 characters of "
                                     "[A-Za-z0-9._-]");
        }
        if (b->root_kind == AGENT_ROOT_OVERLAY && parse_overlay_root(root, b, err) < 0)
            return -1;
        if (b->root_kind == AGENT_ROOT_DISK &&
            parse_blockdev(root, "root", NULL, false, &b->root_dev, err) < 0)
            return -1;
    }

    mounts = json_object_get(j, "mounts");
    if (mounts && !json_is_null(mounts)) {
        if (!json_is_array(mounts))
            return capsa_err_set(err, EINVAL, "mounts: expected an array");
        if (json_array_size(mounts) > AGENT_MAX_MOUNTS)
            return capsa_err_set(err, EINVAL, "mounts: more than %d entries", AGENT_MAX_MOUNTS);
        b->mounts = calloc(json_array_size(mounts) + 1, sizeof(*b->mounts));
        if (!b->mounts)
            return capsa_err_set(err, ENOMEM, "mounts: out of memory");
        json_array_foreach(mounts, i, m)
        {
            struct agent_mount *am = &b->mounts[i];
            if (!json_is_object(m))
                return capsa_err_set(err, EINVAL, "mounts[%zu]: expected an object", i);
            b->n_mounts = i + 1;
            if (get_str(m, "kind", 32, true, &kind, err) < 0)
                return capsa_err_prefix(err, "mounts[%zu]", i);
            if (strcmp(kind, "9p") != 0) {
                capsa_err_set(err, EINVAL, "mounts[%zu].kind: \"%.32s\" is not 9p", i, kind);
                free(kind);
                return -1;
            }
            free(kind);
            if (get_str(m, "tag", 64, true, &am->tag, err) < 0 ||
                get_str(m, "guest", AGENT_MAX_PATH, true, &am->guest, err) < 0 ||
                get_bool(m, "readonly", false, &am->readonly, err) < 0)
                return capsa_err_prefix(err, "mounts[%zu]", i);
            if (!tag_ok(am->tag))
                return capsa_err_set(err, EINVAL,
                                     "mounts[%zu].tag: expected 1-31 characters of "
                                     "[A-Za-z0-9._-]",
                                     i);
            if (!mount_point_ok(am->guest))
                return capsa_err_set(err, EINVAL,
                                     "mounts[%zu].guest: expected an absolute path "
                                     "other than / without . or .. components",
                                     i);
        }
    }

    if (get_str(j, "hostname", 256, false, &b->hostname, err) < 0)
        return -1;
    if (b->hostname && !hostname_ok(b->hostname))
        return capsa_err_set(err, EINVAL, "hostname: expected 1-%d characters of [A-Za-z0-9.-_]",
                             AGENT_MAX_HOSTNAME);
    if (get_strv(j, "env", AGENT_MAX_ENV, 65536, true, &b->env, err) < 0)
        return -1;
    if (get_str(j, "workdir", AGENT_MAX_PATH, false, &b->workdir, err) < 0)
        return -1;
    if (b->workdir && !agent_path_ok(b->workdir))
        return capsa_err_set(err, EINVAL, "workdir: expected an absolute path");
    if (get_str(j, "user", AGENT_MAX_USER_SPEC, false, &b->user, err) < 0)
        return -1;
    if (b->user && !b->user[0])
        return capsa_err_set(err, EINVAL, "user: empty");
    if (get_int(j, "clock_ns", 0, INT64_MAX, 0, &clk, NULL, err) < 0)
        return -1;
    b->clock_ns = clk;
    return 0;
}

int agent_parse_boot(const void *payload, size_t len, struct agent_boot *out, capsa_err *err)
{
    _cleanup_json_ json_t *j = parse_object(payload, len, err);

    memset(out, 0, sizeof(*out));
    if (!j)
        return -1;
    if (parse_boot_obj(j, out, err) < 0) {
        agent_boot_free(out);
        return capsa_err_prefix(err, "boot");
    }
    return 0;
}

/* ---- exec.start ---- */

void agent_exec_req_free(struct agent_exec_req *r)
{
    agent_strv_free(r->argv);
    agent_strv_free(r->env);
    free(r->cwd);
    free(r->user);
    memset(r, 0, sizeof(*r));
}

static int parse_rlimits(json_t *j, struct agent_exec_req *r, capsa_err *err)
{
    json_t *arr = json_object_get(j, "rlimits"), *it;
    size_t i;

    if (!arr || json_is_null(arr))
        return 0;
    if (!json_is_array(arr))
        return capsa_err_set(err, EINVAL, "rlimits: expected an array");
    if (json_array_size(arr) > AGENT_MAX_RLIMITS)
        return capsa_err_set(err, EINVAL, "rlimits: more than %d entries", AGENT_MAX_RLIMITS);
    json_array_foreach(arr, i, it)
    {
        const char *name;
        json_int_t soft, hard;

        if (!json_is_object(it))
            return capsa_err_set(err, EINVAL, "rlimits[%zu]: expected an object", i);
        name = json_string_value(json_object_get(it, "resource"));
        if (!name)
            return capsa_err_set(err, EINVAL, "rlimits[%zu].resource: expected a string", i);
        r->rlimits[i].resource = agent_rlimit_resource(name);
        if (r->rlimits[i].resource < 0)
            return capsa_err_set(err, EINVAL,
                                 "rlimits[%zu].resource: \"%.32s\" is not one of cpu, fsize, "
                                 "data, stack, core, rss, nproc, nofile, memlock, as, locks, "
                                 "sigpending, msgqueue, nice, rtprio, rttime",
                                 i, name);
        if (get_int(it, "soft", 0, INT64_MAX, -1, &soft, NULL, err) < 0 ||
            get_int(it, "hard", 0, INT64_MAX, -1, &hard, NULL, err) < 0)
            return capsa_err_prefix(err, "rlimits[%zu]", i);
        if (soft < 0)
            return capsa_err_set(err, EINVAL, "rlimits[%zu].soft: required", i);
        if (hard < 0)
            hard = soft;
        if (soft > hard)
            return capsa_err_set(err, EINVAL, "rlimits[%zu]: soft %lld is above hard %lld", i,
                                 (long long)soft, (long long)hard);
        r->rlimits[i].soft = (uint64_t)soft;
        r->rlimits[i].hard = (uint64_t)hard;
        r->n_rlimits = i + 1;
    }
    return 0;
}

static int parse_exec_obj(json_t *j, struct agent_exec_req *r, capsa_err *err)
{
    json_int_t rows, cols;

    if (get_strv(j, "argv", AGENT_MAX_ARGV, 131072, false, &r->argv, err) < 0)
        return -1;
    if (!r->argv[0])
        return capsa_err_set(err, EINVAL, "argv: required, non-empty");
    if (!r->argv[0][0])
        return capsa_err_set(err, EINVAL, "argv[0]: empty program name");
    if (get_strv(j, "env", AGENT_MAX_ENV, 131072, true, &r->env, err) < 0)
        return -1;
    if (get_str(j, "cwd", AGENT_MAX_PATH, false, &r->cwd, err) < 0)
        return -1;
    if (r->cwd && !agent_path_ok(r->cwd))
        return capsa_err_set(err, EINVAL, "cwd: expected an absolute path");
    if (get_str(j, "user", AGENT_MAX_USER_SPEC, false, &r->user, err) < 0)
        return -1;
    if (r->user && !r->user[0])
        return capsa_err_set(err, EINVAL, "user: empty");
    if (parse_rlimits(j, r, err) < 0)
        return -1;
    if (get_bool(j, "tty", false, &r->tty, err) < 0 ||
        get_bool(j, "stdin", false, &r->stdin_open, err) < 0)
        return -1;
    if (get_int(j, "rows", 1, 65535, 24, &rows, NULL, err) < 0 ||
        get_int(j, "cols", 1, 65535, 80, &cols, NULL, err) < 0)
        return -1;
    r->rows = (unsigned short)rows;
    r->cols = (unsigned short)cols;
    return 0;
}

int agent_parse_exec_start(const void *payload, size_t len, struct agent_exec_req *out,
                           capsa_err *err)
{
    _cleanup_json_ json_t *j = parse_object(payload, len, err);

    memset(out, 0, sizeof(*out));
    if (!j)
        return -1;
    if (parse_exec_obj(j, out, err) < 0) {
        agent_exec_req_free(out);
        return capsa_err_prefix(err, "exec.start");
    }
    return 0;
}

/* ---- fs.request ---- */

void agent_fs_req_free(struct agent_fs_req *r)
{
    free(r->path);
    free(r->to);
    memset(r, 0, sizeof(*r));
}

static const struct {
    const char *name;
    enum agent_fs_op op;
} fs_ops[] = {
    {"read", AGENT_FS_READ},     {"write", AGENT_FS_WRITE}, {"list", AGENT_FS_LIST},
    {"stat", AGENT_FS_STAT},     {"mkdir", AGENT_FS_MKDIR}, {"remove", AGENT_FS_REMOVE},
    {"rename", AGENT_FS_RENAME},
};

static int parse_fs_obj(json_t *j, struct agent_fs_req *r, capsa_err *err)
{
    const char *op = json_string_value(json_object_get(j, "op"));
    json_int_t mode;
    size_t i;

    if (!op)
        return capsa_err_set(err, EINVAL, "op: required string is missing");
    for (i = 0; i < ARRAY_SIZE(fs_ops); i++)
        if (strcmp(op, fs_ops[i].name) == 0)
            break;
    if (i == ARRAY_SIZE(fs_ops))
        return capsa_err_set(err, EINVAL,
                             "op: \"%.32s\" is not one of read, write, list, stat, mkdir, "
                             "remove, rename",
                             op);
    r->op = fs_ops[i].op;
    if (get_str(j, "path", AGENT_MAX_PATH, true, &r->path, err) < 0)
        return -1;
    if (!agent_path_ok(r->path))
        return capsa_err_set(err, EINVAL, "path: expected an absolute path");
    if (r->op == AGENT_FS_RENAME) {
        if (get_str(j, "to", AGENT_MAX_PATH, true, &r->to, err) < 0)
            return -1;
        if (!agent_path_ok(r->to))
            return capsa_err_set(err, EINVAL, "to: expected an absolute path");
    }
    if (get_int(j, "mode", 0, 07777, r->op == AGENT_FS_MKDIR ? 0755 : 0644, &mode, &r->mode_set,
                err) < 0)
        return -1;
    r->mode = (mode_t)mode;
    if (get_bool(j, "append", false, &r->append, err) < 0 ||
        get_bool(j, "follow", true, &r->follow, err) < 0 ||
        get_bool(j, "recursive", false, &r->recursive, err) < 0)
        return -1;
    return 0;
}

int agent_parse_fs_request(const void *payload, size_t len, struct agent_fs_req *out,
                           capsa_err *err)
{
    _cleanup_json_ json_t *j = parse_object(payload, len, err);

    memset(out, 0, sizeof(*out));
    if (!j)
        return -1;
    if (parse_fs_obj(j, out, err) < 0) {
        agent_fs_req_free(out);
        return capsa_err_prefix(err, "fs.request");
    }
    return 0;
}

int agent_parse_signal(const void *payload, size_t len, int *sig, capsa_err *err)
{
    _cleanup_json_ json_t *j = parse_object(payload, len, err);
    json_int_t v;

    if (!j)
        return -1;
    if (!json_object_get(j, "signal"))
        return capsa_err_set(err, EINVAL, "exec.signal: signal: required");
    if (get_int(j, "signal", 1, 64, 0, &v, NULL, err) < 0)
        return capsa_err_prefix(err, "exec.signal");
    *sig = (int)v;
    return 0;
}

int agent_parse_resize(const void *payload, size_t len, unsigned short *rows, unsigned short *cols,
                       capsa_err *err)
{
    _cleanup_json_ json_t *j = parse_object(payload, len, err);
    json_int_t r, c;

    if (!j)
        return -1;
    if (!json_object_get(j, "rows") || !json_object_get(j, "cols"))
        return capsa_err_set(err, EINVAL, "exec.resize: rows and cols are required");
    if (get_int(j, "rows", 1, 65535, 0, &r, NULL, err) < 0 ||
        get_int(j, "cols", 1, 65535, 0, &c, NULL, err) < 0)
        return capsa_err_prefix(err, "exec.resize");
    *rows = (unsigned short)r;
    *cols = (unsigned short)c;
    return 0;
}
