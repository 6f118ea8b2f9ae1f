/* spec_sandbox.c - the typed view (struct capsa_sandbox_spec) of a normalized SandboxSpec. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "spec/spec_int.h"

static uint64_t get_u64(const json_t *o, const char *key)
{
    json_int_t v = spec_get_int(o, key, 0);
    return v > 0 ? (uint64_t)v : 0;
}

/* NULL-terminated vector of borrowed strings, or NULL when the field is null. */
static int argv_of(const json_t *arr, const char ***out)
{
    size_t n = json_array_size(arr);

    *out = NULL;
    if (!json_is_array(arr))
        return 0;
    *out = calloc(n + 1, sizeof(**out));
    if (!*out)
        return -1;
    for (size_t i = 0; i < n; i++)
        (*out)[i] = json_string_value(json_array_get(arr, i));
    return 0;
}

static void mount_of(const json_t *m, struct capsa_spec_mount *out)
{
    const char *type = spec_get_str(m, "type");
    const json_t *opt = json_object_get(m, "options");
    const char *sv = spec_get_str(m, "stat_virtualization");
    const char *hp = spec_get_str(m, "host_permissions");

    if (!strcmp(type, "Bind"))
        out->kind = CAPSA_MOUNT_BIND;
    else if (!strcmp(type, "Named"))
        out->kind = CAPSA_MOUNT_NAMED;
    else if (!strcmp(type, "Tmpfs"))
        out->kind = CAPSA_MOUNT_TMPFS;
    else
        out->kind = CAPSA_MOUNT_DISK_IMAGE;
    out->guest = spec_get_str(m, "guest");
    out->host = spec_get_str(m, "host");
    out->name = spec_get_str(m, "name");
    out->format = spec_get_str(m, "format");
    out->fstype = spec_get_str(m, "fstype");
    out->size_mib = get_u64(m, "size_mib");
    out->quota_mib = get_u64(m, "quota_mib");
    out->readonly = spec_get_bool(opt, "readonly", false);
    out->noexec = spec_get_bool(opt, "noexec", false);
    out->nosuid = spec_get_bool(opt, "nosuid", false);
    out->nodev = spec_get_bool(opt, "nodev", false);
    out->stat_virtualization = !sv || !strcmp(sv, "strict") ? CAPSA_STAT_STRICT
                               : !strcmp(sv, "relaxed")     ? CAPSA_STAT_RELAXED
                                                            : CAPSA_STAT_OFF;
    out->host_permissions_mirror = hp && !strcmp(hp, "mirror");
}

static void image_of(const json_t *image, struct capsa_sandbox_spec *s)
{
    const json_t *v;

    if ((v = json_object_get(image, "Bind"))) {
        s->image.kind = CAPSA_IMAGE_BIND;
        s->image.path = json_string_value(v);
    } else if ((v = json_object_get(image, "DiskImage"))) {
        s->image.kind = CAPSA_IMAGE_DISK_IMAGE;
        s->image.path = spec_get_str(v, "path");
        s->image.format = spec_get_str(v, "format");
        s->image.fstype = spec_get_str(v, "fstype");
    } else {
        const json_t *rd;
        const char *kind;

        v = json_object_get(image, "Oci");
        rd = json_object_get(v, "root_disk");
        kind = spec_get_str(rd, "kind");
        s->image.kind = CAPSA_IMAGE_OCI;
        s->image.reference = spec_get_str(v, "reference");
        s->image.root_disk.kind = !strcmp(kind, "managed") ? CAPSA_ROOT_DISK_MANAGED
                                  : !strcmp(kind, "tmpfs") ? CAPSA_ROOT_DISK_TMPFS
                                                           : CAPSA_ROOT_DISK_DISK_IMAGE;
        s->image.root_disk.size_mib = get_u64(rd, "size_mib");
        s->image.root_disk.path = spec_get_str(rd, "path");
        s->image.root_disk.format = spec_get_str(rd, "format");
        s->image.root_disk.fstype = spec_get_str(rd, "fstype");
    }
}

void capsa_sandbox_spec_free(struct capsa_sandbox_spec *s)
{
    if (!s)
        return;
    free(s->env);
    free(s->rlimits);
    free(s->entrypoint);
    free(s->cmd);
    free(s->mounts);
    free(s->network.ports);
    json_decref(s->doc);
    free(s);
}

static void sandbox_specp_free(struct capsa_sandbox_spec **s)
{
    capsa_sandbox_spec_free(*s);
}

int capsa_sandbox_spec_load(json_t *in, struct capsa_sandbox_spec **out, capsa_spec_errors *errs)
{
    __attribute__((cleanup(sandbox_specp_free))) struct capsa_sandbox_spec *s = NULL;
    const json_t *d, *rt, *net, *lc, *arr;
    struct spec_ctx c = {.errs = errs};
    const char *pp, *sp;
    size_t i;

    *out = NULL;
    s = calloc(1, sizeof(*s));
    if (!s) {
        spec_error(&c, "out of memory");
        return -1;
    }
    if (capsa_spec_check("SandboxSpec", in, &s->doc, errs) < 0)
        return -1;
    d = s->doc;
    rt = json_object_get(d, "runtime");
    net = json_object_get(d, "network");
    lc = json_object_get(d, "lifecycle");

    s->name = spec_get_str(d, "name");
    image_of(json_object_get(d, "image"), s);
    s->cpus = (unsigned)get_u64(json_object_get(d, "resources"), "cpus");
    s->memory_mib = get_u64(json_object_get(d, "resources"), "memory_mib");

    arr = json_object_get(d, "env");
    s->n_env = json_array_size(arr);
    s->env = calloc(s->n_env + 1, sizeof(*s->env));
    for (i = 0; s->env && i < s->n_env; i++) {
        s->env[i].key = spec_get_str(json_array_get(arr, i), "key");
        s->env[i].value = spec_get_str(json_array_get(arr, i), "value");
    }
    arr = json_object_get(d, "rlimits");
    s->n_rlimits = json_array_size(arr);
    s->rlimits = calloc(s->n_rlimits + 1, sizeof(*s->rlimits));
    for (i = 0; s->rlimits && i < s->n_rlimits; i++) {
        s->rlimits[i].resource = spec_get_str(json_array_get(arr, i), "resource");
        s->rlimits[i].soft = get_u64(json_array_get(arr, i), "soft");
        s->rlimits[i].hard = get_u64(json_array_get(arr, i), "hard");
    }

    s->workdir = spec_get_str(rt, "workdir");
    s->shell = spec_get_str(rt, "shell");
    s->user = spec_get_str(rt, "user");
    s->hostname = spec_get_str(rt, "hostname");
    s->metrics_sample_interval_ms = spec_get_bool(rt, "disable_metrics_sample", false)
                                        ? 0
                                        : get_u64(rt, "metrics_sample_interval_ms");
    if (argv_of(json_object_get(rt, "entrypoint"), &s->entrypoint) < 0 ||
        argv_of(json_object_get(rt, "cmd"), &s->cmd) < 0)
        goto oom;

    arr = json_object_get(d, "mounts");
    s->n_mounts = json_array_size(arr);
    s->mounts = calloc(s->n_mounts + 1, sizeof(*s->mounts));
    for (i = 0; s->mounts && i < s->n_mounts; i++)
        mount_of(json_array_get(arr, i), &s->mounts[i]);

    s->lifecycle.ephemeral = spec_get_bool(lc, "ephemeral", false);
    s->lifecycle.max_duration_secs = get_u64(lc, "max_duration_secs");
    s->lifecycle.idle_timeout_secs = get_u64(lc, "idle_timeout_secs");

    s->network.enabled = spec_get_bool(net, "enabled", true);
    arr = json_object_get(net, "ports");
    s->network.n_ports = json_array_size(arr);
    s->network.ports = calloc(s->network.n_ports + 1, sizeof(*s->network.ports));
    for (i = 0; s->network.ports && i < s->network.n_ports; i++) {
        const json_t *p = json_array_get(arr, i);
        const char *proto = spec_get_str(p, "protocol");
        s->network.ports[i].host_port = (uint16_t)get_u64(p, "host_port");
        s->network.ports[i].guest_port = (uint16_t)get_u64(p, "guest_port");
        s->network.ports[i].udp = proto && !strcmp(proto, "udp");
        s->network.ports[i].host_bind = spec_get_str(p, "host_bind");
    }
    if (!s->env || !s->rlimits || !s->mounts || !s->network.ports)
        goto oom;

    pp = spec_get_str(d, "pull_policy");
    s->pull_policy = !strcmp(pp, "Always")  ? CAPSA_PULL_ALWAYS
                     : !strcmp(pp, "Never") ? CAPSA_PULL_NEVER
                                            : CAPSA_PULL_IF_MISSING;
    sp = spec_get_str(d, "security_profile");
    s->restricted = !strcmp(sp, "restricted");
    *out = steal_pointer(&s);
    return 0;
oom:
    spec_error(&c, "out of memory");
    return -1;
}
