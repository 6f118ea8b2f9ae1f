/* spec_types.c - schema tables of the seed's domain types (SandboxSpec and its parts, volumes,
 * snapshots) and their cross-field checks. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "spec/spec_int.h"

/* ---- enums ----------------------------------------------------------------------------- */

static const char *const disk_image_formats[] = {"Qcow2", "Raw", "Vmdk", NULL};
static const char *const pull_policies[] = {"IfMissing", "Always", "Never", NULL};
static const char *const stat_virts[] = {"strict", "relaxed", "off", NULL};
static const char *const host_perms[] = {"private", "mirror", NULL};
static const char *const security_profiles[] = {"default", "restricted", NULL};
static const char *const volume_kinds[] = {"Directory", "Disk", NULL};
static const char *const named_modes[] = {"Existing", "Create", "EnsureExists", NULL};
static const char *const port_protocols[] = {"tcp", "udp", NULL};
static const char *const log_levels[] = {"error", "warn", "info", "debug", "trace", NULL};
static const char *const rlimit_resources[] = {
    "Cpu", "Fsize", "Data",       "Stack",    "Core", "Rss",    "Nproc",  "Nofile", "Memlock",
    "As",  "Locks", "Sigpending", "Msgqueue", "Nice", "Rtprio", "Rttime", NULL};
static const char *const log_sources[] = {"stdout", "stderr", "output", "system", NULL};

static const struct spec_range range_cpus = {1, 128, NULL};
static const struct spec_range range_memory = {64, 1024 * 1024, "MiB"};
static const struct spec_range range_metrics_ms = {0, 3600 * 1000, "ms"};

/* ---- small value checkers -------------------------------------------------------------- */

static const char *check_init_cmd(const char *s)
{
    return (!strcmp(s, "auto") || s[0] == '/') ? NULL : "must be an absolute path or \"auto\"";
}

static const char *check_user(const char *s)
{
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return "must be USER[:GROUP] or UID[:GID] without spaces or control characters";
    if (s[0] == ':' || strchr(s, ':') != strrchr(s, ':') || s[strlen(s) - 1] == ':')
        return "must be USER[:GROUP] or UID[:GID]";
    return NULL;
}

static const char *check_script_name(const char *s)
{
    if (strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, ".."))
        return "must be a file name (no '/', not '.' or '..')";
    for (const char *p = s; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            return "must not contain control characters";
    return NULL;
}

static const char *check_nonempty_text(const char *s)
{
    return s[0] ? NULL : "must not be empty";
}

static const struct spec_string str_init_cmd = {4096, check_init_cmd, false};
static const struct spec_string str_user = {256, check_user, false};
static const struct spec_string str_hostname = {64, spec_check_hostname, false};
static const struct spec_string str_image_ref = {4096, spec_check_image_ref, false};
static const struct spec_string str_shell = {4096, check_nonempty_text, false};
static const struct spec_string str_symlink_target = {4096, check_nonempty_text, false};
static const struct spec_string str_env_key = {4096, spec_check_env_key, false};
static const struct spec_string str_label_value = {4096, NULL, true};

static const struct spec_map map_scripts = {check_script_name, spec_norm_string, &spec_str_text,
                                            256};
static const struct spec_map map_labels = {spec_check_label_key, spec_norm_string, &str_label_value,
                                           256};
static const struct spec_range range_byte = {0, 255, NULL};
static const struct spec_array arr_bytes = {spec_norm_int, &range_byte, 16 * 1024 * 1024};

#define PAIRS_ANY    ((const void *)NULL)
#define PAIRS_ENV    ((const void *)spec_check_env_key)
#define PAIRS_LABELS ((const void *)spec_check_label_key)

/* ---- MountOptions ---------------------------------------------------------------------- */

static const struct spec_field mount_options_fields[] = {
    {"readonly", spec_norm_bool, NULL, 0, "false"},
    {"noexec", spec_norm_bool, NULL, 0, "false"},
    {"nosuid", spec_norm_bool, NULL, 0, "false"},
    {"nodev", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_object obj_mount_options =
    SPEC_OBJECT("MountOptions", mount_options_fields, NULL);

/* ---- RootDisk (root_disk of OciRootfsSource, tagged by "kind") ------------------------- */

static const struct spec_field rd_managed_fields[] = {
    {"kind", spec_norm_const, "managed", SF_REQUIRED, NULL},
    {"size_mib", spec_norm_int, &spec_range_mib, SF_NULL_DEFAULT, "4096"},
};
static const struct spec_field rd_tmpfs_fields[] = {
    {"kind", spec_norm_const, "tmpfs", SF_REQUIRED, NULL},
    {"size_mib", spec_norm_int, &spec_range_mib, SF_NULLABLE, NULL},
};
static const struct spec_field rd_disk_fields[] = {
    {"kind", spec_norm_const, "disk-image", SF_REQUIRED, NULL},
    {"path", spec_norm_string, &spec_str_host_path, SF_REQUIRED, NULL},
    {"format", spec_norm_enum, disk_image_formats, SF_REQUIRED, NULL},
    {"fstype", spec_norm_string, &spec_str_fstype, SF_NULLABLE, NULL},
};
static const struct spec_object obj_rd_managed =
    SPEC_OBJECT("RootDisk managed", rd_managed_fields, NULL);
static const struct spec_object obj_rd_tmpfs = SPEC_OBJECT("RootDisk tmpfs", rd_tmpfs_fields, NULL);
static const struct spec_object obj_rd_disk =
    SPEC_OBJECT("RootDisk disk-image", rd_disk_fields, NULL);
static const char *const rd_tags[] = {"managed", "tmpfs", "disk-image", NULL};
static const struct spec_object *const rd_objs[] = {&obj_rd_managed, &obj_rd_tmpfs, &obj_rd_disk};
static const struct spec_itagged it_root_disk = {"RootDisk", "kind", rd_tags, rd_objs};

/* ---- RootfsSource ---------------------------------------------------------------------- */

/* Deprecated alias: "upper_size_mib": N  ==  "root_disk": {"kind": "managed", "size_mib": N}. */
static void oci_pre(struct spec_ctx *c, json_t *in, json_t *work)
{
    json_t *upper = json_object_get(in, "upper_size_mib");
    size_t saved;
    json_t *nv;

    if (!upper)
        return;
    json_object_del(work, "upper_size_mib");
    if (json_is_null(upper))
        return;
    saved = spec_push_field(c, "upper_size_mib");
    if (json_object_get(in, "root_disk")) {
        spec_error(c, "deprecated alias of root_disk.size_mib: give root_disk only");
    } else if ((nv = spec_norm_int(c, upper, &spec_range_mib))) {
        json_object_set_new(work, "root_disk",
                            json_pack("{s:s,s:o}", "kind", "managed", "size_mib", nv));
    }
    spec_pop(c, saved);
}

static const struct spec_field oci_fields[] = {
    {"reference", spec_norm_string, &str_image_ref, SF_REQUIRED, NULL},
    {"root_disk", spec_norm_itagged, &it_root_disk, 0, "{\"kind\":\"managed\"}"},
};
static const struct spec_object obj_oci = {"OciRootfsSource", oci_fields, ARRAY_SIZE(oci_fields),
                                           NULL, oci_pre};

static const struct spec_field disk_root_fields[] = {
    {"path", spec_norm_string, &spec_str_host_path, SF_REQUIRED, NULL},
    {"format", spec_norm_enum, disk_image_formats, SF_REQUIRED, NULL},
    {"fstype", spec_norm_string, &spec_str_fstype, SF_NULLABLE, NULL},
};
static const struct spec_object obj_disk_root =
    SPEC_OBJECT("RootfsSource DiskImage", disk_root_fields, NULL);

static const struct spec_variant rootfs_variants[] = {
    {"Bind", spec_norm_string, &spec_str_host_path},
    {"Oci", spec_norm_object, &obj_oci},
    {"DiskImage", spec_norm_object, &obj_disk_root},
};
static const struct spec_tagged tg_rootfs = {"RootfsSource", rootfs_variants,
                                             ARRAY_SIZE(rootfs_variants)};

/* ---- volumes --------------------------------------------------------------------------- */

static void volume_post(struct spec_ctx *c, json_t *out)
{
    const char *kind = spec_get_str(out, "kind");
    size_t saved;

    if (!kind)
        return;
    if (!strcmp(kind, "Disk")) {
        if (json_is_null(json_object_get(out, "capacity_mib"))) {
            saved = spec_push_field(c, "capacity_mib");
            spec_error(c, "is required for Disk volumes");
            spec_pop(c, saved);
        }
        if (json_is_integer(json_object_get(out, "quota_mib"))) {
            saved = spec_push_field(c, "quota_mib");
            spec_error(c, "applies to Directory volumes only (use capacity_mib for Disk)");
            spec_pop(c, saved);
        }
    } else if (json_is_integer(json_object_get(out, "capacity_mib"))) {
        saved = spec_push_field(c, "capacity_mib");
        spec_error(c, "applies to Disk volumes only (use quota_mib for Directory)");
        spec_pop(c, saved);
    }
}

static const struct spec_field volume_spec_fields[] = {
    {"name", spec_norm_string, &spec_str_name, SF_REQUIRED, NULL},
    {"kind", spec_norm_enum, volume_kinds, 0, "\"Directory\""},
    {"quota_mib", spec_norm_int, &spec_range_mib, SF_NULLABLE, NULL},
    {"capacity_mib", spec_norm_int, &spec_range_mib, SF_NULLABLE, NULL},
    {"labels", spec_norm_pairs, PAIRS_LABELS, 0, "[]"},
};
static const struct spec_object obj_volume_spec =
    SPEC_OBJECT("VolumeSpec", volume_spec_fields, volume_post);

static const struct spec_field named_create_fields[] = {
    {"mode", spec_norm_enum, named_modes, SF_REQUIRED, NULL},
    {"name", spec_norm_string, &spec_str_name, SF_REQUIRED, NULL},
    {"kind", spec_norm_enum, volume_kinds, 0, "\"Directory\""},
    {"quota_mib", spec_norm_int, &spec_range_mib, SF_NULLABLE, NULL},
    {"capacity_mib", spec_norm_int, &spec_range_mib, SF_NULLABLE, NULL},
    {"labels", spec_norm_pairs, PAIRS_LABELS, 0, "[]"},
};
static const struct spec_object obj_named_create =
    SPEC_OBJECT("NamedVolumeCreate", named_create_fields, volume_post);

/* ---- VolumeMount ----------------------------------------------------------------------- */

static void mount_post(struct spec_ctx *c, json_t *out)
{
    const char *guest = spec_get_str(out, "guest");
    const char *sv = spec_get_str(out, "stat_virtualization");
    const char *hp = spec_get_str(out, "host_permissions");
    const char *name = spec_get_str(out, "name");
    json_t *create = json_object_get(out, "create");
    size_t saved;

    if (guest && !strcmp(guest, "/")) {
        saved = spec_push_field(c, "guest");
        spec_error(c, "must not be / (the root is set by image)");
        spec_pop(c, saved);
    }
    if (sv && hp && !strcmp(sv, "off") && !strcmp(hp, "mirror")) {
        saved = spec_push_field(c, "host_permissions");
        spec_error(c,
                   "\"mirror\" needs stat_virtualization \"strict\" or \"relaxed\", not \"off\"");
        spec_pop(c, saved);
    }
    if (name && json_is_object(create) && spec_get_str(create, "name") &&
        strcmp(spec_get_str(create, "name"), name)) {
        saved = spec_push_field(c, "create");
        spec_push_field(c, "name");
        spec_error(c, "must equal the mount's name \"%s\"", name);
        spec_pop(c, saved);
    }
}

static const struct spec_field vm_bind_fields[] = {
    {"type", spec_norm_const, "Bind", SF_REQUIRED, NULL},
    {"host", spec_norm_string, &spec_str_host_path, SF_REQUIRED, NULL},
    {"guest", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"options", spec_norm_object, &obj_mount_options, 0, "{}"},
    {"stat_virtualization", spec_norm_enum, stat_virts, 0, "\"strict\""},
    {"host_permissions", spec_norm_enum, host_perms, 0, "\"private\""},
    {"quota_mib", spec_norm_int, &spec_range_mib, SF_NULLABLE, NULL},
};
static const struct spec_field vm_named_fields[] = {
    {"type", spec_norm_const, "Named", SF_REQUIRED, NULL},
    {"name", spec_norm_string, &spec_str_name, SF_REQUIRED, NULL},
    {"guest", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"create", spec_norm_object, &obj_named_create, SF_NULLABLE, NULL},
    {"options", spec_norm_object, &obj_mount_options, 0, "{}"},
    {"stat_virtualization", spec_norm_enum, stat_virts, 0, "\"strict\""},
    {"host_permissions", spec_norm_enum, host_perms, 0, "\"private\""},
};
static const struct spec_field vm_tmpfs_fields[] = {
    {"type", spec_norm_const, "Tmpfs", SF_REQUIRED, NULL},
    {"guest", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"size_mib", spec_norm_int, &spec_range_mib, SF_NULLABLE, NULL},
    {"options", spec_norm_object, &obj_mount_options, 0, "{}"},
};
static const struct spec_field vm_disk_fields[] = {
    {"type", spec_norm_const, "DiskImage", SF_REQUIRED, NULL},
    {"host", spec_norm_string, &spec_str_host_path, SF_REQUIRED, NULL},
    {"guest", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"format", spec_norm_enum, disk_image_formats, SF_REQUIRED, NULL},
    {"fstype", spec_norm_string, &spec_str_fstype, SF_NULLABLE, NULL},
    {"options", spec_norm_object, &obj_mount_options, 0, "{}"},
};
static const struct spec_object obj_vm_bind =
    SPEC_OBJECT("VolumeMount Bind", vm_bind_fields, mount_post);
static const struct spec_object obj_vm_named =
    SPEC_OBJECT("VolumeMount Named", vm_named_fields, mount_post);
static const struct spec_object obj_vm_tmpfs =
    SPEC_OBJECT("VolumeMount Tmpfs", vm_tmpfs_fields, mount_post);
static const struct spec_object obj_vm_disk =
    SPEC_OBJECT("VolumeMount DiskImage", vm_disk_fields, mount_post);
static const char *const vm_tags[] = {"Bind", "Named", "Tmpfs", "DiskImage", NULL};
static const struct spec_object *const vm_objs[] = {&obj_vm_bind, &obj_vm_named, &obj_vm_tmpfs,
                                                    &obj_vm_disk};
static const struct spec_itagged it_volume_mount = {"VolumeMount", "type", vm_tags, vm_objs};

/* ---- Patch ----------------------------------------------------------------------------- */

static void patch_post(struct spec_ctx *c, json_t *out)
{
    static const char *const keys[] = {"path", "dst", "link"};
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        const char *p = spec_get_str(out, keys[i]);
        if (p && !strcmp(p, "/")) {
            size_t saved = spec_push_field(c, keys[i]);
            spec_error(c, "must not be the root directory");
            spec_pop(c, saved);
        }
    }
}

static const struct spec_field p_text_fields[] = {
    {"path", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"content", spec_norm_string, &spec_str_text, SF_REQUIRED, NULL},
    {"mode", spec_norm_int, &spec_range_mode, SF_NULLABLE, NULL},
    {"replace", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_field p_file_fields[] = {
    {"path", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"content", spec_norm_array, &arr_bytes, SF_REQUIRED, NULL},
    {"mode", spec_norm_int, &spec_range_mode, SF_NULLABLE, NULL},
    {"replace", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_field p_copyfile_fields[] = {
    {"src", spec_norm_string, &spec_str_host_path, SF_REQUIRED, NULL},
    {"dst", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"mode", spec_norm_int, &spec_range_mode, SF_NULLABLE, NULL},
    {"replace", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_field p_copydir_fields[] = {
    {"src", spec_norm_string, &spec_str_host_path, SF_REQUIRED, NULL},
    {"dst", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"replace", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_field p_symlink_fields[] = {
    {"target", spec_norm_string, &str_symlink_target, SF_REQUIRED, NULL},
    {"link", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"replace", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_field p_mkdir_fields[] = {
    {"path", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"mode", spec_norm_int, &spec_range_mode, SF_NULLABLE, NULL},
};
static const struct spec_field p_remove_fields[] = {
    {"path", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
};
static const struct spec_field p_append_fields[] = {
    {"path", spec_norm_guest_path, NULL, SF_REQUIRED, NULL},
    {"content", spec_norm_string, &spec_str_text, SF_REQUIRED, NULL},
};
static const struct spec_object obj_p_text = SPEC_OBJECT("Patch Text", p_text_fields, patch_post);
static const struct spec_object obj_p_file = SPEC_OBJECT("Patch File", p_file_fields, patch_post);
static const struct spec_object obj_p_copyfile =
    SPEC_OBJECT("Patch CopyFile", p_copyfile_fields, patch_post);
static const struct spec_object obj_p_copydir =
    SPEC_OBJECT("Patch CopyDir", p_copydir_fields, patch_post);
static const struct spec_object obj_p_symlink =
    SPEC_OBJECT("Patch Symlink", p_symlink_fields, patch_post);
static const struct spec_object obj_p_mkdir =
    SPEC_OBJECT("Patch Mkdir", p_mkdir_fields, patch_post);
static const struct spec_object obj_p_remove =
    SPEC_OBJECT("Patch Remove", p_remove_fields, patch_post);
static const struct spec_object obj_p_append =
    SPEC_OBJECT("Patch Append", p_append_fields, patch_post);
static const struct spec_variant patch_variants[] = {
    {"Text", spec_norm_object, &obj_p_text},         {"File", spec_norm_object, &obj_p_file},
    {"CopyFile", spec_norm_object, &obj_p_copyfile}, {"CopyDir", spec_norm_object, &obj_p_copydir},
    {"Symlink", spec_norm_object, &obj_p_symlink},   {"Mkdir", spec_norm_object, &obj_p_mkdir},
    {"Remove", spec_norm_object, &obj_p_remove},     {"Append", spec_norm_object, &obj_p_append},
};
static const struct spec_tagged tg_patch = {"Patch", patch_variants, ARRAY_SIZE(patch_variants)};

/* ---- network --------------------------------------------------------------------------- */

/* Host bind address: an IP literal, written in canonical form. */
static json_t *norm_bind_addr(struct spec_ctx *c, json_t *in, const void *arg)
{
    static const struct spec_string s = {64, spec_check_ip, false};
    json_t *v = spec_norm_string(c, in, &s);
    unsigned char buf[16];
    char txt[64];
    int fam;

    if (!v)
        return NULL;
    fam = strchr(json_string_value(v), ':') ? AF_INET6 : AF_INET;
    if (inet_pton(fam, json_string_value(v), buf) == 1 && inet_ntop(fam, buf, txt, sizeof(txt)))
        json_string_set(v, txt);
    return v;
}

static const struct spec_field port_fields[] = {
    {"host_port", spec_norm_int, &spec_range_port, SF_REQUIRED, NULL},
    {"guest_port", spec_norm_int, &spec_range_port, SF_REQUIRED, NULL},
    {"protocol", spec_norm_enum, port_protocols, 0, "\"tcp\""},
    {"host_bind", norm_bind_addr, NULL, 0, "\"127.0.0.1\""},
};
static const struct spec_object obj_port = SPEC_OBJECT("PublishedPortSpec", port_fields, NULL);
static const struct spec_array arr_ports = {spec_norm_object, &obj_port, 1024};
static const struct spec_range range_max_conn = {1, 1000000, NULL};

static void network_post(struct spec_ctx *c, json_t *out)
{
    json_t *ports = json_object_get(out, "ports");
    size_t n = json_array_size(ports), saved;

    for (size_t j = 0; j < n; j++) {
        json_t *pj = json_array_get(ports, j);
        json_int_t hp = spec_get_int(pj, "host_port", -1);
        const char *proto = spec_get_str(pj, "protocol");
        if (hp < 0 || !proto)
            continue;
        for (size_t i = 0; i < j; i++) {
            json_t *pi = json_array_get(ports, i);
            const char *pp = spec_get_str(pi, "protocol");
            if (spec_get_int(pi, "host_port", -1) == hp && pp && !strcmp(pp, proto)) {
                saved = spec_push_field(c, "ports");
                spec_push_index(c, j);
                spec_push_field(c, "host_port");
                spec_error(c, "duplicate host port %" JSON_INTEGER_FORMAT "/%s (also ports[%zu])",
                           hp, proto, i);
                spec_pop(c, saved);
                break;
            }
        }
    }
    if (n && !spec_get_bool(out, "enabled", true)) {
        saved = spec_push_field(c, "ports");
        spec_error(c, "cannot publish ports when enabled is false");
        spec_pop(c, saved);
    }
}

static const struct spec_field network_fields[] = {
    {"enabled", spec_norm_bool, NULL, 0, "true"},
    {"interface", spec_norm_object, &spec_obj_interface_overrides, SF_NULLABLE, NULL},
    {"ports", spec_norm_array, &arr_ports, 0, "[]"},
    {"policy", spec_norm_object, &spec_obj_network_policy, SF_NULLABLE, NULL},
    {"dns", spec_norm_object, &spec_obj_dns_config, SF_NULLABLE, NULL},
    {"tls", spec_norm_object, &spec_obj_tls_config, SF_NULLABLE, NULL},
    {"secrets", spec_norm_object, &spec_obj_secrets_config, SF_NULLABLE, NULL},
    {"max_connections", spec_norm_int, &range_max_conn, SF_NULLABLE, NULL},
    {"trust_host_cas", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_object obj_network =
    SPEC_OBJECT("NetworkSpec", network_fields, network_post);

/* ---- HandoffInit, SandboxPolicy, snapshots --------------------------------------------- */

static const struct spec_field init_fields[] = {
    {"cmd", spec_norm_string, &str_init_cmd, SF_REQUIRED, NULL},
    {"args", spec_norm_array, &spec_arr_strings, 0, "[]"},
    {"env", spec_norm_pairs, PAIRS_ENV, 0, "[]"},
};
static const struct spec_object obj_init = SPEC_OBJECT("HandoffInit", init_fields, NULL);

static const struct spec_field policy_fields[] = {
    {"ephemeral", spec_norm_bool, NULL, 0, "false"},
    {"max_duration_secs", spec_norm_int, &spec_range_secs, SF_NULLABLE, NULL},
    {"idle_timeout_secs", spec_norm_int, &spec_range_secs, SF_NULLABLE, NULL},
};
static const struct spec_object obj_policy = SPEC_OBJECT("SandboxPolicy", policy_fields, NULL);

static const struct spec_variant snapdest_variants[] = {
    {"Name", spec_norm_string, &spec_str_name},
    {"Path", spec_norm_string, &spec_str_host_path},
};
static const struct spec_tagged tg_snapdest = {"SnapshotDestination", snapdest_variants,
                                               ARRAY_SIZE(snapdest_variants)};

static const struct spec_field snapshot_fields[] = {
    {"source_sandbox", spec_norm_string, &spec_str_name, SF_REQUIRED, NULL},
    {"destination", spec_norm_tagged, &tg_snapdest, SF_REQUIRED, NULL},
    {"labels", spec_norm_pairs, PAIRS_ANY, 0, "[]"},
    {"force", spec_norm_bool, NULL, 0, "false"},
    {"record_integrity", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_object obj_snapshot = SPEC_OBJECT("SnapshotSpec", snapshot_fields, NULL);

/* ---- resources, runtime, env, rlimits -------------------------------------------------- */

static const struct spec_field resources_fields[] = {
    {"cpus", spec_norm_int, &range_cpus, 0, "1"},
    {"memory_mib", spec_norm_int, &range_memory, 0, "512"},
};
static const struct spec_object obj_resources =
    SPEC_OBJECT("SandboxResources", resources_fields, NULL);

static const struct spec_array arr_argv = {spec_norm_string, &spec_str_text, 4096};

static const struct spec_field runtime_fields[] = {
    {"workdir", spec_norm_guest_path, NULL, SF_NULLABLE, NULL},
    {"shell", spec_norm_string, &str_shell, SF_NULLABLE, NULL},
    {"scripts", spec_norm_map, &map_scripts, 0, "{}"},
    {"entrypoint", spec_norm_array, &arr_argv, SF_NULLABLE, NULL},
    {"cmd", spec_norm_array, &arr_argv, SF_NULLABLE, NULL},
    {"hostname", spec_norm_string, &str_hostname, SF_NULLABLE, NULL},
    {"user", spec_norm_string, &str_user, SF_NULLABLE, NULL},
    {"log_level", spec_norm_enum, log_levels, SF_NULLABLE, NULL},
    {"metrics_sample_interval_ms", spec_norm_int, &range_metrics_ms, SF_NULLABLE, "1000"},
    {"disable_metrics_sample", spec_norm_bool, NULL, 0, "false"},
};
static const struct spec_object obj_runtime =
    SPEC_OBJECT("SandboxRuntimeOptions", runtime_fields, NULL);

static const struct spec_field env_fields[] = {
    {"key", spec_norm_string, &str_env_key, SF_REQUIRED, NULL},
    {"value", spec_norm_string, &spec_str_text, SF_REQUIRED, NULL},
};
static const struct spec_object obj_env = SPEC_OBJECT("EnvVar", env_fields, NULL);
static const struct spec_array arr_env = {spec_norm_object, &obj_env, 4096};

static void rlimit_post(struct spec_ctx *c, json_t *out)
{
    json_int_t soft = spec_get_int(out, "soft", -1), hard = spec_get_int(out, "hard", -1);
    if (soft >= 0 && hard >= 0 && soft > hard) {
        size_t saved = spec_push_field(c, "soft");
        spec_error(c, "must not exceed hard (%" JSON_INTEGER_FORMAT " > %" JSON_INTEGER_FORMAT ")",
                   soft, hard);
        spec_pop(c, saved);
    }
}

static const struct spec_field rlimit_fields[] = {
    {"resource", spec_norm_enum, rlimit_resources, SF_REQUIRED, NULL},
    {"soft", spec_norm_int, &spec_range_u64, SF_REQUIRED, NULL},
    {"hard", spec_norm_int, &spec_range_u64, SF_REQUIRED, NULL},
};
static const struct spec_object obj_rlimit = SPEC_OBJECT("Rlimit", rlimit_fields, rlimit_post);
static const struct spec_array arr_rlimits = {spec_norm_object, &obj_rlimit, 64};
static const struct spec_array arr_mounts = {spec_norm_itagged, &it_volume_mount, 256};
static const struct spec_array arr_patches = {spec_norm_tagged, &tg_patch, 4096};

/* ---- SandboxSpec ----------------------------------------------------------------------- */

/* Report items j whose string field `key` repeats an earlier item's. */
static void check_dups(struct spec_ctx *c, json_t *arr, const char *arr_name, const char *key,
                       const char *what)
{
    size_t n = json_array_size(arr);

    for (size_t j = 0; j < n; j++) {
        const char *vj = spec_get_str(json_array_get(arr, j), key);
        for (size_t i = 0; vj && i < j; i++) {
            const char *vi = spec_get_str(json_array_get(arr, i), key);
            if (vi && !strcmp(vi, vj)) {
                size_t saved = spec_push_field(c, arr_name);
                spec_push_index(c, j);
                spec_push_field(c, key);
                spec_error(c, "duplicate %s \"%.200s\" (also %s[%zu])", what, vj, arr_name, i);
                spec_pop(c, saved);
                break;
            }
        }
    }
}

static size_t path_depth(const char *p)
{
    size_t d = 0;
    for (; *p; p++)
        d += *p == '/';
    return d;
}

/* Stable sort of mounts by guest path depth, so parents are mounted before children. */
static void sort_mounts(json_t *mounts)
{
    size_t n = json_array_size(mounts);

    for (size_t i = 1; i < n; i++) {
        json_t *m = json_incref(json_array_get(mounts, i));
        const char *g = spec_get_str(m, "guest");
        size_t d = g ? path_depth(g) : 0, j = i;
        while (j > 0) {
            const char *pg = spec_get_str(json_array_get(mounts, j - 1), "guest");
            if (!g || !pg || path_depth(pg) <= d)
                break;
            j--;
        }
        if (j != i) {
            json_array_remove(mounts, i);
            json_array_insert(mounts, j, m);
        }
        json_decref(m);
    }
}

static void sandbox_post(struct spec_ctx *c, json_t *out)
{
    json_t *image = json_object_get(out, "image");
    json_t *patches = json_object_get(out, "patches");
    json_t *oci = json_object_get(image, "Oci");
    json_t *rd = json_object_get(oci, "root_disk");
    json_int_t mem = spec_get_int(json_object_get(out, "resources"), "memory_mib", -1);
    size_t saved;

    check_dups(c, json_object_get(out, "env"), "env", "key", "variable");
    check_dups(c, json_object_get(out, "rlimits"), "rlimits", "resource", "resource");
    check_dups(c, json_object_get(out, "mounts"), "mounts", "guest", "guest path");
    sort_mounts(json_object_get(out, "mounts"));

    if (json_array_size(patches)) {
        const char *why = NULL;
        if (json_object_get(image, "DiskImage"))
            why = "a DiskImage root";
        else if (spec_get_str(rd, "kind") && strcmp(spec_get_str(rd, "kind"), "managed"))
            why = !strcmp(spec_get_str(rd, "kind"), "tmpfs") ? "a tmpfs root_disk"
                                                             : "a disk-image root_disk";
        if (why) {
            saved = spec_push_field(c, "patches");
            spec_error(c, "not supported with %s (patches need a managed root disk or a Bind root)",
                       why);
            spec_pop(c, saved);
        }
    }
    if (rd && mem > 0 && spec_get_str(rd, "kind") && !strcmp(spec_get_str(rd, "kind"), "tmpfs") &&
        spec_get_int(rd, "size_mib", 0) > mem) {
        saved = spec_push_field(c, "image");
        spec_push_field(c, "Oci");
        spec_push_field(c, "root_disk");
        spec_push_field(c, "size_mib");
        spec_error(c, "must not exceed resources.memory_mib (%" JSON_INTEGER_FORMAT ")", mem);
        spec_pop(c, saved);
    }
}

static const struct spec_field sandbox_fields[] = {
    {"name", spec_norm_string, &spec_str_name, SF_REQUIRED, NULL},
    {"image", spec_norm_tagged, &tg_rootfs, SF_REQUIRED, NULL},
    {"resources", spec_norm_object, &obj_resources, 0, "{}"},
    {"runtime", spec_norm_object, &obj_runtime, 0, "{}"},
    {"env", spec_norm_array, &arr_env, 0, "[]"},
    {"labels", spec_norm_map, &map_labels, 0, "{}"},
    {"rlimits", spec_norm_array, &arr_rlimits, 0, "[]"},
    {"mounts", spec_norm_array, &arr_mounts, 0, "[]"},
    {"patches", spec_norm_array, &arr_patches, 0, "[]"},
    {"network", spec_norm_object, &obj_network, 0, "{}"},
    {"init", spec_norm_object, &obj_init, SF_NULLABLE, NULL},
    {"pull_policy", spec_norm_enum, pull_policies, 0, "\"IfMissing\""},
    {"security_profile", spec_norm_enum, security_profiles, 0, "\"default\""},
    {"lifecycle", spec_norm_object, &obj_policy, 0, "{}"},
};
static const struct spec_object obj_sandbox =
    SPEC_OBJECT("SandboxSpec", sandbox_fields, sandbox_post);

/* ---- registry -------------------------------------------------------------------------- */

static json_t *norm_json_value(struct spec_ctx *c, json_t *in, const void *arg)
{
    return spec_norm_any(c, in, arg);
}

const struct spec_type spec_domain_types[] = {
    {"SandboxSpec", spec_norm_object, &obj_sandbox},
    {"RootfsSource", spec_norm_tagged, &tg_rootfs},
    {"OciRootfsSource", spec_norm_object, &obj_oci},
    {"RootDisk", spec_norm_itagged, &it_root_disk},
    {"DiskImageFormat", spec_norm_enum, disk_image_formats},
    {"PullPolicy", spec_norm_enum, pull_policies},
    {"StatVirtualization", spec_norm_enum, stat_virts},
    {"HostPermissions", spec_norm_enum, host_perms},
    {"SecurityProfile", spec_norm_enum, security_profiles},
    {"MountOptions", spec_norm_object, &obj_mount_options},
    {"VolumeKind", spec_norm_enum, volume_kinds},
    {"VolumeSpec", spec_norm_object, &obj_volume_spec},
    {"NamedVolumeMode", spec_norm_enum, named_modes},
    {"NamedVolumeCreate", spec_norm_object, &obj_named_create},
    {"VolumeMount", spec_norm_itagged, &it_volume_mount},
    {"Patch", spec_norm_tagged, &tg_patch},
    {"NetworkSpec", spec_norm_object, &obj_network},
    {"PublishedPortSpec", spec_norm_object, &obj_port},
    {"PortProtocol", spec_norm_enum, port_protocols},
    {"HandoffInit", spec_norm_object, &obj_init},
    {"SandboxPolicy", spec_norm_object, &obj_policy},
    {"SnapshotDestination", spec_norm_tagged, &tg_snapdest},
    {"SnapshotSpec", spec_norm_object, &obj_snapshot},
    {"SandboxResources", spec_norm_object, &obj_resources},
    {"SandboxRuntimeOptions", spec_norm_object, &obj_runtime},
    {"EnvVar", spec_norm_object, &obj_env},
    {"SandboxLogLevel", spec_norm_enum, log_levels},
    {"RlimitResource", spec_norm_enum, rlimit_resources},
    {"Rlimit", spec_norm_object, &obj_rlimit},
    {"LogSource", spec_norm_enum, log_sources},
    {"JsonValue", norm_json_value, NULL},
};
const size_t spec_domain_ntypes = ARRAY_SIZE(spec_domain_types);
