/* conf.c - entry points of the conf module: load YAML config files in order, merge them with
 * the config.json defaults and the CLI's explicit values, translate the result into a
 * SandboxSpec and check it; plus the strict reader of $CAPSA_HOME/config.json. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/paths.h"
#include "conf/conf_int.h"

static const char *const kind_flags[] = {
    [CAPSA_CONF_ROOT] = "--conf",
    [CAPSA_CONF_NET] = "--net-conf",
    [CAPSA_CONF_RESOURCE] = "--resource-conf",
    [CAPSA_CONF_RUNTIME] = "--runtime-conf",
    [CAPSA_CONF_FS] = "--fs-conf",
    [CAPSA_CONF_SECRET] = "--secret-conf",
    [CAPSA_CONF_SCRIPT] = "--script-conf",
};

const char *capsa_conf_kind_flag(enum capsa_conf_kind kind)
{
    return (unsigned)kind < ARRAY_SIZE(kind_flags) ? kind_flags[kind] : "?";
}

int capsa_conf_kind_from_flag(const char *flag)
{
    for (size_t i = 0; flag && i < ARRAY_SIZE(kind_flags); i++)
        if (!strcmp(flag, kind_flags[i]))
            return (int)i;
    return -1;
}

int capsa_conf_errors_to_err(const capsa_conf_errors *errs, capsa_err *err)
{
    size_t total = capsa_spec_errors_total(errs);

    if (!errs || errs->count == 0)
        return capsa_err_set(err, EINVAL, "config: invalid");
    if (total > 1)
        return capsa_err_set(err, EINVAL, "%s (and %zu more)", errs->items[0], total - 1);
    return capsa_err_set(err, EINVAL, "%s", errs->items[0]);
}

/* ---- merging --------------------------------------------------------------------------- */

/* Conf documents: objects merge key by key (except `image`, which replaces as a whole),
 * everything else replaces. */
static void merge_conf(json_t *dst, json_t *src, bool top)
{
    const char *k;
    json_t *v;

    json_object_foreach(src, k, v)
    {
        json_t *d = json_object_get(dst, k);
        if (json_is_object(v) && json_is_object(d) && !(top && !strcmp(k, "image")))
            merge_conf(d, v, false);
        else
            json_object_set_new(dst, k, json_deep_copy(v));
    }
}

/* Seed documents (config.json defaults, CLI values): see capsa_conf_load in conf.h. */
static const struct {
    const char *path, *key; /* key NULL: append; key "0": pairs by first element */
} keyed_lists[] = {
    {"env", "key"},          {"rlimits", "resource"},
    {"mounts", "guest"},     {"network.secrets.secrets", "env_var"},
    {"init.env", "0"},       {"patches", NULL},
    {"network.ports", NULL},
};

static json_t *item_key(json_t *item, const char *key)
{
    return !strcmp(key, "0") ? json_array_get(item, 0) : json_object_get(item, key);
}

static void merge_seed(json_t *dst, json_t *src, const char *path)
{
    const char *k;
    json_t *v;

    json_object_foreach(src, k, v)
    {
        char child[256];
        json_t *d = json_object_get(dst, k);
        size_t li = ARRAY_SIZE(keyed_lists);

        snprintf(child, sizeof(child), "%s%s%s", path, *path ? "." : "", k);
        for (size_t i = 0; i < ARRAY_SIZE(keyed_lists); i++)
            if (!strcmp(child, keyed_lists[i].path))
                li = i;
        if (json_is_object(v) && json_is_object(d) && strcmp(child, "image") &&
            strcmp(child, "network.policy")) {
            merge_seed(d, v, child);
        } else if (json_is_array(v) && json_is_array(d) && li < ARRAY_SIZE(keyed_lists)) {
            size_t n = json_array_size(v);
            for (size_t i = 0; i < n; i++) {
                json_t *item = json_array_get(v, i), *kv;
                const char *key = keyed_lists[li].key;
                bool replaced = false;
                if (key && (kv = item_key(item, key))) {
                    for (size_t j = 0; j < json_array_size(d) && !replaced; j++) {
                        if (json_equal(item_key(json_array_get(d, j), key), kv)) {
                            json_array_set_new(d, j, json_deep_copy(item));
                            replaced = true;
                        }
                    }
                }
                if (!replaced)
                    json_array_append_new(d, json_deep_copy(item));
            }
        } else {
            json_object_set_new(dst, k, json_deep_copy(v));
        }
    }
}

/* ---- translation: conf document -> partial SandboxSpec ---------------------------------- */

static json_t *obj_at(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_object(v)) {
        v = json_object();
        json_object_set_new(o, key, v);
    }
    return v;
}

static void copy_if(json_t *dst, const char *dkey, json_t *src, const char *skey)
{
    json_t *v = json_object_get(src, skey);
    if (v)
        json_object_set_new(dst, dkey, json_deep_copy(v));
}

static json_t *env_list(json_t *map)
{
    json_t *arr = json_array(), *v;
    const char *k;

    json_object_foreach(map, k, v)
    {
        json_array_append_new(arr, json_pack("{s:s,s:O}", "key", k, "value", v));
    }
    return arr;
}

/* NetworkPolicy from the profile (none|public|open) and the allow/deny target lists. */
static json_t *build_policy(json_t *net)
{
    const char *profile = json_string_value(json_object_get(net, "policy"));
    json_t *allow = json_object_get(net, "allow"), *deny = json_object_get(net, "deny");
    json_t *rules = json_array(), *v;
    bool has_allow = json_array_size(allow) > 0;
    size_t i;

    if (!profile)
        profile = "public";
    json_array_foreach(deny, i, v)
    {
        json_t *r = json_deep_copy(v);
        json_object_set_new(r, "direction", json_string("egress"));
        json_object_set_new(r, "action", json_string("deny"));
        json_array_append_new(rules, r);
    }
    json_array_foreach(allow, i, v)
    {
        json_t *r = json_deep_copy(v);
        json_object_set_new(r, "direction", json_string("egress"));
        json_object_set_new(r, "action", json_string("allow"));
        json_array_append_new(rules, r);
    }
    if (has_allow || !strcmp(profile, "public"))
        json_array_append_new(rules, json_pack("{s:s,s:{s:s},s:[s,s],s:[{s:i,s:i}],s:s}",
                                               "direction", "egress", "destination", "group",
                                               "host", "protocols", "udp", "tcp", "ports", "start",
                                               53, "end", 53, "action", "allow"));
    if (!has_allow && !strcmp(profile, "public"))
        json_array_append_new(rules,
                              json_pack("{s:s,s:{s:s},s:s}", "direction", "egress", "destination",
                                        "group", "public", "action", "allow"));
    return json_pack("{s:s,s:s,s:o}", "default_egress",
                     !has_allow && !strcmp(profile, "open") ? "allow" : "deny", "default_ingress",
                     strcmp(profile, "none") ? "allow" : "deny", "rules", rules);
}

/* Published ports: network.ports then the ports shorthand; duplicates are errors. */
static json_t *build_ports(json_t *conf, capsa_conf_errors *errs, size_t *nerr)
{
    json_t *lists[] = {json_object_get(json_object_get(conf, "network"), "ports"),
                       json_object_get(conf, "ports")};
    json_t *out = json_array(), *p;
    size_t i;

    for (size_t l = 0; l < ARRAY_SIZE(lists); l++) {
        json_array_foreach(lists[l], i, p)
        {
            json_t *q = json_deep_copy(p);
            const char *loc = json_string_value(json_object_get(p, "_loc"));
            bool dup = false;
            for (size_t j = 0; j < json_array_size(out) && !dup; j++) {
                json_t *o = json_array_get(out, j);
                if (json_equal(json_object_get(o, "host_port"), json_object_get(q, "host_port")) &&
                    json_equal(json_object_get(o, "protocol"), json_object_get(q, "protocol"))) {
                    conf_errors_add(errs, "%s: duplicate host port %lld/%s (also at %s)",
                                    loc ? loc : "ports",
                                    (long long)json_integer_value(json_object_get(q, "host_port")),
                                    json_string_value(json_object_get(q, "protocol")),
                                    json_string_value(json_object_get(o, "_loc")));
                    (*nerr)++;
                    dup = true;
                }
            }
            if (dup)
                json_decref(q);
            else
                json_array_append_new(out, q);
        }
    }
    json_array_foreach(out, i, p)
    {
        json_object_del(p, "_loc");
    }
    return out;
}

static json_t *translate(json_t *conf, const char *shell, capsa_conf_errors *errs, size_t *nerr)
{
    json_t *seed = json_object(), *v, *net, *ports, *secrets;
    static const char *const rt_keys[] = {"workdir",  "shell",      "user",
                                          "hostname", "entrypoint", "cmd"};
    const char *k;

    copy_if(seed, "image", conf, "image");
    if (json_object_get(conf, "cpus"))
        copy_if(obj_at(seed, "resources"), "cpus", conf, "cpus");
    if (json_object_get(conf, "memory_mib"))
        copy_if(obj_at(seed, "resources"), "memory_mib", conf, "memory_mib");
    for (size_t i = 0; i < ARRAY_SIZE(rt_keys); i++)
        if (json_object_get(conf, rt_keys[i]))
            copy_if(obj_at(seed, "runtime"), rt_keys[i], conf, rt_keys[i]);
    if ((v = json_object_get(conf, "scripts"))) {
        json_t *scripts = json_object(), *body;
        json_object_foreach(v, k, body)
        {
            const char *b = json_string_value(body);
            _cleanup_free_ char *full = NULL;
            if (strncmp(b, "#!", 2) && asprintf(&full, "#!%s\n%s", shell, b) >= 0)
                json_object_set_new(scripts, k, json_string(full));
            else
                json_object_set(scripts, k, body);
        }
        json_object_set_new(obj_at(seed, "runtime"), "scripts", scripts);
    }
    if ((v = json_object_get(conf, "env")))
        json_object_set_new(seed, "env", env_list(v));
    copy_if(seed, "labels", conf, "labels");
    copy_if(seed, "rlimits", conf, "rlimits");
    copy_if(seed, "mounts", conf, "mounts");
    if (json_object_get(conf, "patch_files") || json_object_get(conf, "patches")) {
        json_t *all = json_array();
        json_array_extend(all, json_object_get(conf, "patch_files"));
        json_array_extend(all, json_object_get(conf, "patches"));
        json_object_set_new(seed, "patches", json_deep_copy(all));
        json_decref(all);
    }
    if ((v = json_object_get(conf, "init"))) {
        json_t *init = json_object(), *pairs = json_array(), *val;
        copy_if(init, "cmd", v, "cmd");
        copy_if(init, "args", v, "args");
        json_object_foreach(json_object_get(v, "env"), k, val)
        {
            json_array_append_new(pairs, json_pack("[s,O]", k, val));
        }
        if (json_object_get(v, "env"))
            json_object_set_new(init, "env", pairs);
        else
            json_decref(pairs);
        json_object_set_new(seed, "init", init);
    }
    copy_if(seed, "pull_policy", conf, "pull_policy");
    copy_if(seed, "security_profile", conf, "security_profile");
    if (json_object_get(conf, "max_duration_secs"))
        copy_if(obj_at(seed, "lifecycle"), "max_duration_secs", conf, "max_duration_secs");
    if (json_object_get(conf, "idle_timeout_secs"))
        copy_if(obj_at(seed, "lifecycle"), "idle_timeout_secs", conf, "idle_timeout_secs");

    /* network */
    v = json_object_get(conf, "network");
    ports = build_ports(conf, errs, nerr);
    secrets = json_object_get(conf, "secrets");
    if (v || json_array_size(ports) || json_object_size(secrets)) {
        net = obj_at(seed, "network");
        if (json_object_get(v, "policy") || json_object_get(v, "allow") ||
            json_object_get(v, "deny"))
            json_object_set_new(net, "policy", build_policy(v));
        if (json_array_size(ports))
            json_object_set(net, "ports", ports);
        copy_if(net, "dns", v, "dns");
        copy_if(net, "tls", v, "tls");
        copy_if(net, "trust_host_cas", v, "trust_host_cas");
        copy_if(net, "max_connections", v, "max_connections");
        if (json_object_size(secrets)) {
            json_t *list = json_array(), *def;
            json_object_foreach(secrets, k, def)
            {
                json_t *e = json_pack("{s:s}", "env_var", k), *val = json_object_get(def, "value");
                if (json_is_string(val))
                    json_object_set(e, "value", val);
                else
                    json_object_set_new(e, "source",
                                        val ? json_deep_copy(val)
                                            : json_pack("{s:s,s:s}", "kind", "env", "var", k));
                copy_if(e, "placeholder", def, "placeholder");
                copy_if(e, "allowed_hosts", def, "allowed_hosts");
                if (json_object_get(def, "injection"))
                    copy_if(e, "injection", def, "injection");
                else /* the YAML default: headers only */
                    json_object_set_new(e, "injection",
                                        json_pack("{s:b,s:b,s:b,s:b}", "headers", 1, "basic_auth",
                                                  0, "query_params", 0, "body", 0));
                copy_if(e, "require_tls_identity", def, "require_tls_identity");
                json_array_append_new(list, e);
            }
            json_object_set_new(net, "secrets", json_pack("{s:o}", "secrets", list));
        }
    }
    json_decref(ports);
    return seed;
}

/* Declaring a secret turns on TLS interception and DNS rebind protection; an explicit
 * false for either is a conflict. */
static void secrets_force(json_t *seed, json_t *locs, capsa_conf_errors *errs, size_t *nerr)
{
    json_t *net = json_object_get(seed, "network");
    static const struct {
        const char *obj, *field;
    } need[] = {{"tls", "enabled"}, {"dns", "rebind_protection"}};

    if (!json_array_size(json_object_get(json_object_get(net, "secrets"), "secrets")))
        return;
    for (size_t i = 0; i < ARRAY_SIZE(need); i++) {
        json_t *o = json_object_get(net, need[i].obj);
        if (json_is_false(json_object_get(o, need[i].field))) {
            const char *loc = json_string_value(json_object_get(locs, "network"));
            conf_errors_add(errs, "%s: network.%s.%s: must not be false when secrets are declared",
                            loc ? loc : "sandbox spec", need[i].obj, need[i].field);
            (*nerr)++;
        } else {
            json_object_set_new(obj_at(net, need[i].obj), need[i].field, json_true());
        }
    }
}

/* Where to blame a SandboxSpec error: the conf key that fed the seed path's top field. */
static const char *loc_for(json_t *locs, const char *path)
{
    static const struct {
        const char *prefix, *key, *alt;
    } map[] = {
        {"image", "image", NULL},
        {"resources.cpus", "cpus", NULL},
        {"resources.memory_mib", "memory_mib", NULL},
        {"resources", "memory_mib", "cpus"},
        {"runtime.scripts", "scripts", NULL},
        {"runtime.workdir", "workdir", NULL},
        {"runtime.shell", "shell", NULL},
        {"runtime.user", "user", NULL},
        {"runtime.hostname", "hostname", NULL},
        {"runtime.entrypoint", "entrypoint", NULL},
        {"runtime.cmd", "cmd", NULL},
        {"env", "env", NULL},
        {"labels", "labels", NULL},
        {"rlimits", "rlimits", NULL},
        {"mounts", "mounts", NULL},
        {"patches", "patches", "patch_files"},
        {"network.ports", "ports", "network"},
        {"network.secrets", "secrets", NULL},
        {"network", "network", "secrets"},
        {"init", "init", NULL},
        {"pull_policy", "pull_policy", NULL},
        {"security_profile", "security_profile", NULL},
        {"lifecycle.max_duration_secs", "max_duration_secs", NULL},
        {"lifecycle.idle_timeout_secs", "idle_timeout_secs", NULL},
        {"image", "image", NULL},
    };

    for (size_t i = 0; i < ARRAY_SIZE(map); i++) {
        size_t n = strlen(map[i].prefix);
        const char *l;
        if (strncmp(path, map[i].prefix, n) || (path[n] && !strchr(".[:", path[n])))
            continue;
        if ((l = json_string_value(json_object_get(locs, map[i].key))))
            return l;
        if (map[i].alt && (l = json_string_value(json_object_get(locs, map[i].alt))))
            return l;
        return NULL;
    }
    return NULL;
}

/* config.json sandbox_defaults as a partial SandboxSpec. */
static json_t *defaults_seed(json_t *global)
{
    json_t *d = json_object_get(global, "sandbox_defaults"), *seed = json_object();
    static const char *const rt[] = {"shell", "workdir", "metrics_sample_interval_ms",
                                     "disable_metrics_sample"};

    if (!json_is_object(d))
        return seed;
    if (json_object_get(d, "cpus"))
        copy_if(obj_at(seed, "resources"), "cpus", d, "cpus");
    if (json_object_get(d, "memory_mib"))
        copy_if(obj_at(seed, "resources"), "memory_mib", d, "memory_mib");
    for (size_t i = 0; i < ARRAY_SIZE(rt); i++)
        if (json_object_get(d, rt[i]))
            copy_if(obj_at(seed, "runtime"), rt[i], d, rt[i]);
    return seed;
}

int capsa_conf_load(const struct capsa_conf_sources *src, json_t *cli_overrides, json_t **spec_out,
                    capsa_conf_errors *errs)
{
    json_t *conf = json_object(), *locs = json_object(), *seed = NULL, *final = NULL, *norm;
    capsa_spec_errors serrs = {0};
    const char *shell;
    size_t nerr = 0;
    int rc = -1;

    *spec_out = NULL;
    if (!conf || !locs)
        goto out;
    for (size_t i = 0; src && i < src->n_files; i++) {
        const struct capsa_conf_file *f = &src->files[i];
        struct conf_ctx c;
        struct conf_node *root = NULL;
        _cleanup_free_ char *text = NULL;
        json_t *one = json_object(), *one_locs = json_object();
        size_t len = 0;

        if (conf_ctx_init(&c, errs, f->path) == 0 && (text = conf_read_file(&c, f->path, &len)) &&
            conf_yaml_parse(&c, text, len, &root) == 0)
            conf_convert_file(&c, f->kind, root, one, one_locs);
        conf_node_free(root);
        nerr += c.nerr;
        if (!c.nerr) {
            merge_conf(conf, one, true);
            json_object_update(locs, one_locs);
        }
        json_decref(one);
        json_decref(one_locs);
    }
    if (nerr)
        goto out;

    shell = json_string_value(json_object_get(json_object_get(cli_overrides, "runtime"), "shell"));
    if (!shell)
        shell = json_string_value(json_object_get(conf, "shell"));
    if (!shell)
        shell = json_string_value(json_object_get(
            json_object_get(src ? src->global : NULL, "sandbox_defaults"), "shell"));
    if (!shell)
        shell = "/bin/sh";

    seed = translate(conf, shell, errs, &nerr);
    final = defaults_seed(src ? src->global : NULL);
    merge_seed(final, seed, "");
    if (json_is_object(cli_overrides))
        merge_seed(final, cli_overrides, "");
    secrets_force(final, locs, errs, &nerr);
    if (nerr)
        goto out;

    if (capsa_spec_check("SandboxSpec", final, &norm, &serrs) < 0) {
        for (size_t i = 0; i < serrs.count; i++) {
            const char *loc = loc_for(locs, serrs.items[i]);
            conf_errors_add(errs, "%s: %s", loc ? loc : "sandbox spec", serrs.items[i]);
        }
        if (errs)
            errs->dropped += serrs.dropped;
        capsa_spec_errors_free(&serrs);
        goto out;
    }
    *spec_out = norm;
    rc = 0;
out:
    if (rc < 0 && errs && errs->count == 0 && errs->dropped == 0)
        conf_errors_add(errs, "sandbox spec: out of memory");
    json_decref(conf);
    json_decref(locs);
    json_decref(seed);
    json_decref(final);
    return rc;
}

/* ---- config.json ----------------------------------------------------------------------- */

static int unknown_keys(json_t *obj, const char *const *known, const char *where, const char *path,
                        capsa_err *err)
{
    const char *k;
    json_t *v;

    json_object_foreach(obj, k, v)
    {
        bool ok = false;
        char list[512] = "";
        size_t o = 0;
        for (size_t i = 0; known[i]; i++)
            if (!strcmp(k, known[i]))
                ok = true;
        if (ok)
            continue;
        for (size_t i = 0; known[i] && o < sizeof(list); i++) {
            int w = snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", known[i]);
            o += w > 0 ? (size_t)w : 0;
        }
        return capsa_err_set(err, EINVAL, "%s: %s%s%s: unknown field (capsa accepts: %s)", where,
                             path, *path ? "." : "", k, list);
    }
    return 0;
}

static int want_type(json_t *v, json_type t, const char *what, const char *where, const char *path,
                     capsa_err *err)
{
    if (json_typeof(v) == t || (t == JSON_TRUE && json_is_boolean(v)))
        return 0;
    return capsa_err_set(err, EINVAL, "%s: %s: must be %s", where, path, what);
}

static int check_registries(json_t *r, const char *where, capsa_err *err)
{
    static const char *const top[] = {"ca_certs", "hosts", NULL};
    static const char *const host[] = {"insecure", "auth", NULL};
    static const char *const auth[] = {"username", "store", "password_env", "secret_name", NULL};
    json_t *ca = json_object_get(r, "ca_certs"), *hosts = json_object_get(r, "hosts"), *h, *v;
    const char *name;
    size_t i;

    if (want_type(r, JSON_OBJECT, "an object", where, "registries", err) < 0 ||
        unknown_keys(r, top, where, "registries", err) < 0)
        return -1;
    if (ca && !json_is_string(ca) && !json_is_array(ca))
        return capsa_err_set(err, EINVAL,
                             "%s: registries.ca_certs: must be a path or a list of "
                             "paths",
                             where);
    if (json_is_string(ca) && json_string_value(ca)[0] != '/')
        return capsa_err_set(err, EINVAL, "%s: registries.ca_certs: must be an absolute path",
                             where);
    json_array_foreach(ca, i, v)
    {
        if (!json_is_string(v) || json_string_value(v)[0] != '/')
            return capsa_err_set(
                err, EINVAL, "%s: registries.ca_certs[%zu]: must be an absolute path", where, i);
    }
    if (!hosts)
        return 0;
    if (want_type(hosts, JSON_OBJECT, "an object of host names", where, "registries.hosts", err) <
        0)
        return -1;
    json_object_foreach(hosts, name, h)
    {
        char path[512];
        json_t *a;
        int n = 0;
        snprintf(path, sizeof(path), "registries.hosts[\"%.200s\"]", name);
        if (want_type(h, JSON_OBJECT, "an object", where, path, err) < 0 ||
            unknown_keys(h, host, where, path, err) < 0)
            return -1;
        if (json_object_get(h, "insecure") && !json_is_boolean(json_object_get(h, "insecure")))
            return capsa_err_set(err, EINVAL, "%s: %s.insecure: must be true or false", where,
                                 path);
        if (!(a = json_object_get(h, "auth")))
            continue;
        strncat(path, ".auth", sizeof(path) - strlen(path) - 1);
        if (want_type(a, JSON_OBJECT, "an object", where, path, err) < 0 ||
            unknown_keys(a, auth, where, path, err) < 0)
            return -1;
        for (size_t j = 0; auth[j]; j++) {
            json_t *x = json_object_get(a, auth[j]);
            if (x && (!json_is_string(x) || !json_string_length(x)))
                return capsa_err_set(err, EINVAL, "%s: %s.%s: must be a non-empty string", where,
                                     path, auth[j]);
            n += x && j > 0;
        }
        if (n != 1)
            return capsa_err_set(err, EINVAL,
                                 "%s: %s: give exactly one of store, password_env, secret_name",
                                 where, path);
        if (json_object_get(a, "store") &&
            strcmp(json_string_value(json_object_get(a, "store")), "keyring"))
            return capsa_err_set(err, EINVAL, "%s: %s.store: must be \"keyring\"", where, path);
    }
    return 0;
}

int capsa_global_config_check(json_t *doc, const char *where, capsa_err *err)
{
    static const char *const top[] = {"home", "log_level", "sandbox_defaults", "registries", NULL};
    static const char *const defs[] = {"cpus",
                                       "memory_mib",
                                       "shell",
                                       "workdir",
                                       "metrics_sample_interval_ms",
                                       "disable_metrics_sample",
                                       NULL};
    static const char *const res_keys[] = {"cpus", "memory_mib"};
    static const char *const levels[] = {"error", "warn", "info", "debug", "trace"};
    json_t *v, *d, *res, *rt;
    capsa_spec_errors serrs = {0};
    const char *k;
    int rc = 0;

    if (want_type(doc, JSON_OBJECT, "an object", where, "(root)", err) < 0 ||
        unknown_keys(doc, top, where, "", err) < 0)
        return -1;
    if ((v = json_object_get(doc, "home")) &&
        (!json_is_string(v) || json_string_value(v)[0] != '/'))
        return capsa_err_set(err, EINVAL, "%s: home: must be an absolute path", where);
    if ((v = json_object_get(doc, "log_level"))) {
        bool ok = false;
        for (size_t i = 0; json_is_string(v) && i < ARRAY_SIZE(levels); i++)
            ok |= !strcmp(json_string_value(v), levels[i]);
        if (!ok)
            return capsa_err_set(err, EINVAL,
                                 "%s: log_level: must be one of error, warn, info, debug, trace",
                                 where);
    }
    if ((v = json_object_get(doc, "registries")) && check_registries(v, where, err) < 0)
        return -1;
    if (!(d = json_object_get(doc, "sandbox_defaults")))
        return 0;
    if (want_type(d, JSON_OBJECT, "an object", where, "sandbox_defaults", err) < 0 ||
        unknown_keys(d, defs, where, "sandbox_defaults", err) < 0)
        return -1;
    /* The values follow the SandboxSpec rules: check them with the spec module. */
    res = json_object();
    rt = json_object();
    json_object_foreach(d, k, v)
    {
        bool is_res = false;
        for (size_t i = 0; i < ARRAY_SIZE(res_keys); i++)
            is_res |= !strcmp(k, res_keys[i]);
        json_object_set(is_res ? res : rt, k, v);
    }
    if (capsa_spec_check("SandboxResources", res, NULL, &serrs) < 0 ||
        capsa_spec_check("SandboxRuntimeOptions", rt, NULL, &serrs) < 0)
        rc = capsa_err_set(err, EINVAL, "%s: sandbox_defaults.%s", where,
                           serrs.count ? serrs.items[0] : "invalid");
    capsa_spec_errors_free(&serrs);
    json_decref(res);
    json_decref(rt);
    return rc;
}

int capsa_global_config_load(json_t **out, capsa_err *err)
{
    char path[PATH_MAX];
    _cleanup_close_ int fd = -1;
    _cleanup_free_ char *text = NULL;
    capsa_spec_errors serrs = {0};
    json_t *doc = NULL;
    struct stat st;
    size_t n = 0;

    *out = NULL;
    if (capsa_path(path, sizeof(path), err, "config.json") < 0)
        return -1;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0 && errno == ENOENT) {
        *out = json_object();
        return *out ? 0 : capsa_err_set(err, ENOMEM, "out of memory");
    }
    if (fd < 0)
        return capsa_err_set(err, errno, "%s: %s", path, strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return capsa_err_set(err, EINVAL, "%s: not a regular file", path);
    if (st.st_size > (off_t)CONF_MAX_FILE)
        return capsa_err_set(err, EFBIG, "%s: larger than %u bytes", path, CONF_MAX_FILE);
    text = malloc((size_t)st.st_size + 1);
    if (!text)
        return capsa_err_set(err, ENOMEM, "out of memory");
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, text + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return capsa_err_set(err, errno, "%s: %s", path, strerror(errno));
        if (r == 0)
            break;
        n += (size_t)r;
    }
    text[n] = '\0';
    if (capsa_spec_parse(text, n, &doc, &serrs) < 0) {
        capsa_err_set(err, EINVAL, "%s: %s", path, serrs.count ? serrs.items[0] : "invalid JSON");
        capsa_spec_errors_free(&serrs);
        return -1;
    }
    if (capsa_global_config_check(doc, path, err) < 0) {
        json_decref(doc);
        return -1;
    }
    *out = doc;
    return 0;
}
