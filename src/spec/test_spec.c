/* test_spec.c - unit tests of the spec module: every seed type valid and invalid, defaults,
 * error paths, idempotent normalization, and the typed SandboxSpec view. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "spec/spec.h"

struct kase {
    const char *type;
    const char *json;
    const char *err; /* NULL: must be valid; else a substring of one of the errors */
};

#define OCI       "{\"Oci\":{\"reference\":\"busybox\"}}"
#define SB(extra) "{\"name\":\"t\",\"image\":" OCI extra "}"

static const struct kase cases[] = {
    /* SandboxSpec */
    {"SandboxSpec", SB(""), NULL},
    {"SandboxSpec", "{\"name\":\"t\",\"image\":{\"Bind\":\"/srv/root\"}}", NULL},
    {"SandboxSpec", "{\"image\":" OCI "}", "name: is required"},
    {"SandboxSpec", "{\"name\":\"t\"}", "image: is required"},
    {"SandboxSpec", SB(",\"extra\":1"), "extra: unknown field in SandboxSpec"},
    {"SandboxSpec", "[]", "(root): must be an object (SandboxSpec), not an array"},
    {"SandboxSpec", SB(",\"pull_policy\":\"sometimes\""),
     "pull_policy: must be one of \"IfMissing\", \"Always\", \"Never\" (got \"sometimes\")"},
    {"SandboxSpec", SB(",\"security_profile\":\"strict\""), "security_profile: must be one of"},
    {"SandboxSpec", SB(",\"labels\":{\"service.x\":\"1\"}"),
     "labels[\"service.x\"]: key uses a reserved"},
    {"SandboxSpec", SB(",\"labels\":{\"app\":5}"),
     "labels[\"app\"]: must be a string, not an integer"},
    {"SandboxSpec", SB(",\"init\":{\"cmd\":\"init\"}"),
     "init.cmd: must be an absolute path or \"auto\""},
    {"SandboxSpec", SB(",\"init\":{\"cmd\":\"auto\",\"args\":[\"a\"],\"env\":[[\"K\",\"V\"]]}"),
     NULL},
    {"SandboxSpec", SB(",\"resources\":null"), "resources: must not be null"},
    /* RootfsSource / OciRootfsSource / RootDisk */
    {"RootfsSource", "{\"Bind\":\"/r\"}", NULL},
    {"RootfsSource", "{\"DiskImage\":{\"path\":\"/d.img\",\"format\":\"Raw\"}}", NULL},
    {"RootfsSource", "{\"DiskImage\":{\"path\":\"/d.img\",\"format\":\"raw\"}}",
     "DiskImage.format: must be one of \"Qcow2\", \"Raw\", \"Vmdk\" (got \"raw\")"},
    {"RootfsSource", "\"Oci\"", "variant \"Oci\" needs content"},
    {"RootfsSource", "{}", "with exactly one key"},
    {"OciRootfsSource", "{\"reference\":\"python\",\"upper_size_mib\":null}", NULL},
    {"OciRootfsSource", "{\"reference\":\"py thon\"}", "reference: must be an OCI image reference"},
    {"OciRootfsSource", "{\"reference\":\"x\",\"upper_size_mib\":0}",
     "upper_size_mib: must be between 1"},
    {"RootDisk", "{\"kind\":\"managed\",\"size_mib\":null}", NULL},
    {"RootDisk", "{\"kind\":\"tmpfs\",\"path\":\"/x\"}", "path: unknown field in RootDisk tmpfs"},
    {"RootDisk", "{\"size_mib\":1}", "kind: is required"},
    /* enums */
    {"DiskImageFormat", "\"Vmdk\"", NULL},
    {"DiskImageFormat", "\"VMDK\"", "must be one of \"Qcow2\", \"Raw\", \"Vmdk\""},
    {"PullPolicy", "\"IfMissing\"", NULL},
    {"PullPolicy", "1", "must be one of \"IfMissing\", \"Always\", \"Never\", not an integer"},
    {"StatVirtualization", "\"relaxed\"", NULL},
    {"StatVirtualization", "\"Strict\"", "must be one of \"strict\", \"relaxed\", \"off\""},
    {"HostPermissions", "\"private\"", NULL},
    {"HostPermissions", "\"shared\"", "must be one of \"private\", \"mirror\""},
    {"SecurityProfile", "\"default\"", NULL},
    {"SecurityProfile", "null", "must be one of \"default\", \"restricted\", not null"},
    {"VolumeKind", "\"Directory\"", NULL},
    {"VolumeKind", "\"File\"", "must be one of \"Directory\", \"Disk\""},
    {"NamedVolumeMode", "\"Existing\"", NULL},
    {"NamedVolumeMode", "\"existing\"",
     "must be one of \"Existing\", \"Create\", \"EnsureExists\""},
    {"PortProtocol", "\"tcp\"", NULL},
    {"PortProtocol", "\"TCP\"", "must be one of \"tcp\", \"udp\""},
    {"SandboxLogLevel", "\"warn\"", NULL},
    {"SandboxLogLevel", "\"warning\"", "must be one of \"error\", \"warn\""},
    {"RlimitResource", "\"Rttime\"", NULL},
    {"RlimitResource", "\"NOFILE\"", "must be one of \"Cpu\""},
    {"LogSource", "\"system\"", NULL},
    {"LogSource", "\"kernel\"", "must be one of \"stdout\", \"stderr\", \"output\", \"system\""},
    {"CloudSandboxStatus", "\"stopping\"", NULL},
    {"CloudSandboxStatus", "\"paused\"", "must be one of \"created\""},
    /* MountOptions, volumes */
    {"MountOptions", "{}", NULL},
    {"MountOptions", "{\"readonly\":1}", "readonly: must be true or false, not an integer"},
    {"VolumeSpec", "{\"name\":\"v\",\"kind\":\"Disk\",\"capacity_mib\":100}", NULL},
    {"VolumeSpec", "{\"name\":\"v\",\"kind\":\"Disk\"}",
     "capacity_mib: is required for Disk volumes"},
    {"VolumeSpec", "{\"name\":\"v\",\"capacity_mib\":5}",
     "capacity_mib: applies to Disk volumes only"},
    {"VolumeSpec", "{\"name\":\"v\",\"labels\":[[\"a\"]]}",
     "labels[0]: must be a [key, value] pair"},
    {"NamedVolumeCreate",
     "{\"mode\":\"Create\",\"name\":\"v\",\"kind\":\"Disk\",\"capacity_mib\":10}", NULL},
    {"NamedVolumeCreate", "{\"mode\":\"Create\",\"name\":\"../v\"}",
     "name: must start with an ASCII"},
    /* VolumeMount */
    {"VolumeMount", "{\"type\":\"Bind\",\"host\":\"/h\",\"guest\":\"/g\"}", NULL},
    {"VolumeMount", "{\"type\":\"Named\",\"name\":\"n\",\"guest\":\"/g\"}", NULL},
    {"VolumeMount", "{\"type\":\"Tmpfs\",\"guest\":\"/g\",\"size_mib\":16}", NULL},
    {"VolumeMount", "{\"type\":\"DiskImage\",\"host\":\"/h\",\"guest\":\"/g\",\"format\":\"Raw\"}",
     NULL},
    {"VolumeMount", "{\"type\":\"Tmpfs\",\"guest\":\"/g\",\"size_mib\":0}",
     "size_mib: must be between 1"},
    {"VolumeMount", "{\"type\":\"Bind\",\"guest\":\"/g\"}", "host: is required"},
    {"VolumeMount", "{\"type\":\"Tmpfs\",\"guest\":\"/a/\\u0001\"}",
     "guest: must not contain control"},
    {"VolumeMount", "{\"type\":\"Bind\",\"host\":\"/h\",\"guest\":\"/g\",\"quota_mib\":-1}",
     "quota_mib: must be between 1"},
    {"VolumeMount", "\"Bind\"", "must be an object (VolumeMount), not a string"},
    /* Patch */
    {"Patch", "{\"Text\":{\"path\":\"/a\",\"content\":\"x\",\"mode\":420,\"replace\":true}}", NULL},
    {"Patch", "{\"File\":{\"path\":\"/a\",\"content\":[1,2,3]}}", NULL},
    {"Patch", "{\"CopyFile\":{\"src\":\"/h\",\"dst\":\"/g\"}}", NULL},
    {"Patch", "{\"CopyDir\":{\"src\":\"/h\",\"dst\":\"/g\"}}", NULL},
    {"Patch", "{\"Symlink\":{\"target\":\"x\",\"link\":\"/g\"}}", NULL},
    {"Patch", "{\"Mkdir\":{\"path\":\"/g\"}}", NULL},
    {"Patch", "{\"Remove\":{\"path\":\"/g\"}}", NULL},
    {"Patch", "{\"Append\":{\"path\":\"/g\",\"content\":\"\"}}", NULL},
    {"Patch", "{\"Remove\":{\"path\":\"/\"}}", "Remove.path: must not be the root directory"},
    {"Patch", "{\"CopyFile\":{\"src\":\"h\",\"dst\":\"/g\"}}",
     "CopyFile.src: must be an absolute path"},
    {"Patch", "{\"File\":{\"path\":\"/a\",\"content\":\"abc\"}}", "File.content: must be an array"},
    {"Patch", "{\"Mkdir\":{\"path\":\"/g\",\"mode\":\"0755\"}}", "Mkdir.mode: must be an integer"},
    /* network */
    {"NetworkSpec", "{}", NULL},
    {"NetworkSpec", "{\"max_connections\":0}", "max_connections: must be between 1 and 1000000"},
    {"NetworkSpec", "{\"policy\":{\"rules\":[{\"direction\":\"egress\",\"action\":\"allow\"}]}}",
     "policy.rules[0].destination: is required"},
    {"PublishedPortSpec", "{\"host_port\":80,\"guest_port\":80,\"host_bind\":\"::0\"}", NULL},
    {"PublishedPortSpec", "{\"host_port\":80}", "guest_port: is required"},
    {"NetworkPolicy",
     "{\"rules\":[{\"direction\":\"any\",\"destination\":{\"domain\":\"x.io\"},"
     "\"action\":\"deny\"}]}",
     NULL},
    {"NetworkPolicy", "{\"default_egress\":\"block\"}",
     "default_egress: must be one of \"allow\", \"deny\""},
    {"NetworkPolicy",
     "{\"rules\":[{\"direction\":\"egress\",\"destination\":\"all\",\"action\":\"deny\"}]}",
     "rules[0].destination: unknown Destination variant \"all\""},
    {"DnsConfig", "{\"nameservers\":[\"[::1]:53\",\"8.8.8.8\",\"ns.example\"]}", NULL},
    {"DnsConfig", "{\"nameservers\":[\"not a host\"]}", "nameservers[0]: must be IP, IP:PORT"},
    {"TlsConfig", "{\"bypass\":[\"*.example.com\",\"host.example\"]}", NULL},
    {"TlsConfig", "{\"cache\":{\"capacity\":0}}", "cache.capacity: must be between 1"},
    {"SecretsConfig", "{\"on_violation\":{\"passthrough\":[\"any\"]}}", NULL},
    {"SecretsConfig", "{\"on_violation\":\"block_and_log\"}", "unknown ViolationAction variant"},
    {"SecretEntry", "{\"env_var\":\"K\",\"value\":\"v\",\"allowed_hosts\":[{\"exact\":\"a.b\"}]}",
     NULL},
    {"SecretEntry",
     "{\"env_var\":\"K\",\"value\":\"v\",\"allowed_hosts\":[\"any\"],\"placeholder\":\"a\\nb\"}",
     "placeholder: must not contain CR or LF"},
    {"SecretEntry",
     "{\"env_var\":\"K\",\"source\":{\"kind\":\"file\"},\"allowed_hosts\":[\"any\"]}",
     "source.kind: must be one of \"env\", \"store\" (got \"file\")"},
    {"InterfaceOverrides", "{\"mac\":\"02:00:00:00:00:01\",\"ipv6_pool\":\"fd00::/64\"}", NULL},
    {"InterfaceOverrides", "{\"ipv4_address\":\"300.1.1.1\"}",
     "ipv4_address: must be an IPv4 address"},
    /* HandoffInit, SandboxPolicy, snapshots */
    {"HandoffInit", "{\"cmd\":\"/sbin/init\"}", NULL},
    {"HandoffInit", "{\"cmd\":\"auto\",\"args\":[1]}", "args[0]: must be a string, not an integer"},
    {"SandboxPolicy", "{}", NULL},
    {"SandboxPolicy", "{\"idle_timeout_secs\":-5}", "idle_timeout_secs: must be between 1"},
    {"SnapshotDestination", "{\"Name\":\"s1\"}", NULL},
    {"SnapshotDestination", "{\"Name\":\"s 1\"}", "Name: must contain only ASCII letters"},
    {"SnapshotSpec", "{\"source_sandbox\":\"a\",\"destination\":{\"Path\":\"/s\"}}", NULL},
    {"SnapshotSpec",
     "{\"source_sandbox\":\"a\",\"destination\":{\"Path\":\"/s\"},\"force\":\"yes\"}",
     "force: must be true or false"},
    /* resources, runtime, env, rlimit */
    {"SandboxResources", "{\"cpus\":128,\"memory_mib\":64}", NULL},
    {"SandboxResources", "{\"cpus\":129}", "cpus: must be between 1 and 128 (got 129)"},
    {"SandboxRuntimeOptions", "{\"user\":\"app:staff\",\"hostname\":\"a-b.c\"}", NULL},
    {"SandboxRuntimeOptions", "{\"hostname\":\"-bad\"}", "hostname: must be a host name"},
    {"SandboxRuntimeOptions", "{\"metrics_sample_interval_ms\":-1}",
     "metrics_sample_interval_ms: must be between 0 and 3600000 ms"},
    {"EnvVar", "{\"key\":\"K\",\"value\":\"\"}", NULL},
    {"EnvVar", "{\"key\":\"K\",\"value\":null}", "value: must not be null"},
    {"Rlimit", "{\"resource\":\"Nofile\",\"soft\":1,\"hard\":9223372036854775807}", NULL},
    {"Rlimit", "{\"resource\":\"Nofile\",\"soft\":2,\"hard\":1}",
     "soft: must not exceed hard (2 > 1)"},
    /* cloud */
    {"CloudCreateSandboxRequest", "{\"name\":\"c\",\"image\":\"python\"}", NULL},
    {"CloudCreateSandboxRequest", "{\"name\":\"c\",\"image\":\"python\",\"env\":{\"A=\":\"1\"}}",
     "env[\"A=\"]: key must not contain '='"},
    {"CloudCreateSandboxRequest", "{\"name\":\"c\",\"image\":\"python\",\"log_level\":\"loud\"}",
     "log_level: must be one of \"error\""},
    {"CloudSandbox",
     "{\"id\":\"f47ac10b-58cc-4372-a567-0e02b2c3d479\",\"org_id\":\"f47ac10b-58cc-4372-a567-"
     "0e02b2c3d479\",\"name\":\"c\",\"status\":\"created\",\"config\":{\"name\":\"c\",\"image\":"
     "\"x\"},"
     "\"ephemeral\":true,\"created_at\":\"2026-01-01T00:00:00.5-05:00\",\"last_error\":null}",
     NULL},
    {"CloudSandbox", "{\"id\":\"f47ac10b-58cc-4372-a567-0e02b2c3d479\"}", "org_id: is required"},
    {"CloudPaginated", "{\"data\":[]}", NULL},
    {"CloudPaginated", "{\"data\":{}}", "data: must be an array, not an object"},
    {"CloudMessageResponse", "{\"message\":\"ok\"}", NULL},
    {"CloudMessageResponse", "{}", "message: is required"},
    {"CloudErrorBody", "{}", NULL},
    {"CloudErrorBody", "{\"code\":1}", "code: must be a string, not an integer"},
    {"CloudErrorDetails", "{\"code\":\"x\",\"message\":null}", NULL},
    {"CloudErrorDetails", "{\"extra\":1}", "extra: unknown field in CloudErrorDetails"},
    {"JsonValue", "[1,{\"a\":null}]", NULL},
};

static json_t *load(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY, &e);
    if (!j)
        fail_msg("test JSON does not parse: %s: %s", text, e.text);
    return j;
}

static bool has_error(const capsa_spec_errors *errs, const char *sub)
{
    for (size_t i = 0; i < errs->count; i++)
        if (strstr(errs->items[i], sub))
            return true;
    return false;
}

static void print_errors(const capsa_spec_errors *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        print_message("  error: %s\n", errs->items[i]);
}

/* Check, then check the output again: it must be valid and serialize identically. */
static void assert_stable(const char *type, json_t *norm)
{
    _cleanup_free_ char *a = capsa_spec_dump(norm, true), *b = NULL;
    capsa_spec_errors errs = {0};
    json_t *again = NULL, *reparsed = NULL;

    assert_non_null(a);
    assert_int_equal(capsa_spec_parse(a, strlen(a), &reparsed, &errs), 0);
    if (capsa_spec_check(type, reparsed, &again, &errs) != 0) {
        print_errors(&errs);
        fail_msg("normalized %s does not check again: %s", type, a);
    }
    b = capsa_spec_dump(again, true);
    assert_string_equal(a, b);
    json_decref(again);
    json_decref(reparsed);
    capsa_spec_errors_free(&errs);
}

static void test_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct kase *k = &cases[i];
        capsa_spec_errors errs = {0};
        json_t *in = load(k->json), *norm = NULL;
        int rc = capsa_spec_check(k->type, in, &norm, &errs);

        if (!k->err) {
            if (rc != 0) {
                print_errors(&errs);
                fail_msg("case %zu: %s %s should be valid", i, k->type, k->json);
            }
            assert_non_null(norm);
            assert_int_equal(capsa_spec_errors_total(&errs), 0);
            assert_stable(k->type, norm);
        } else {
            if (rc == 0)
                fail_msg("case %zu: %s %s should be invalid (%s)", i, k->type, k->json, k->err);
            assert_null(norm);
            if (!has_error(&errs, k->err)) {
                print_errors(&errs);
                fail_msg("case %zu: %s: no error containing '%s'", i, k->type, k->err);
            }
        }
        json_decref(norm);
        json_decref(in);
        capsa_spec_errors_free(&errs);
    }
}

/* Every registered type appears in the table with a valid and an invalid case. */
static void test_every_type_covered(void **state)
{
    (void)state;
    for (const char *const *t = capsa_spec_type_names(); *t; t++) {
        bool valid = false, invalid = false;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            if (strcmp(cases[i].type, *t))
                continue;
            valid |= !cases[i].err;
            invalid |= cases[i].err != NULL;
        }
        if (!valid || (!invalid && strcmp(*t, "JsonValue")))
            fail_msg("type %s lacks a %s case", *t, valid ? "invalid" : "valid");
    }
}

static void test_defaults(void **state)
{
    capsa_spec_errors errs = {0};
    json_t *in = load(SB(",\"mounts\":[{\"type\":\"Bind\",\"host\":\"/h\",\"guest\":\"/g\"}]")), *n;
    (void)state;

    assert_int_equal(capsa_spec_check("SandboxSpec", in, &n, &errs), 0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(n, "resources"), "cpus")),
                     1);
    assert_int_equal(
        json_integer_value(json_object_get(json_object_get(n, "resources"), "memory_mib")), 512);
    assert_string_equal(json_string_value(json_object_get(n, "pull_policy")), "IfMissing");
    assert_string_equal(json_string_value(json_object_get(n, "security_profile")), "default");
    assert_true(json_is_false(json_object_get(json_object_get(n, "lifecycle"), "ephemeral")));
    assert_true(json_is_true(json_object_get(json_object_get(n, "network"), "enabled")));
    {
        json_t *m = json_array_get(json_object_get(n, "mounts"), 0);
        json_t *o = json_object_get(m, "options");
        assert_string_equal(json_string_value(json_object_get(m, "stat_virtualization")), "strict");
        assert_string_equal(json_string_value(json_object_get(m, "host_permissions")), "private");
        assert_true(json_is_false(json_object_get(o, "readonly")));
        assert_true(json_is_false(json_object_get(o, "nodev")));
        assert_true(json_is_null(json_object_get(m, "quota_mib")));
    }
    {
        json_t *rd =
            json_object_get(json_object_get(json_object_get(n, "image"), "Oci"), "root_disk");
        assert_string_equal(json_string_value(json_object_get(rd, "kind")), "managed");
        assert_int_equal(json_integer_value(json_object_get(rd, "size_mib")), 4096);
    }
    {
        /* Field order is the seed's. */
        const char *want[] = {"name",   "image",       "resources",        "runtime",  "env",
                              "labels", "rlimits",     "mounts",           "patches",  "network",
                              "init",   "pull_policy", "security_profile", "lifecycle"};
        size_t i = 0;
        const char *key;
        json_t *v;
        json_object_foreach(n, key, v)
        {
            assert_true(i < sizeof(want) / sizeof(want[0]));
            assert_string_equal(key, want[i++]);
        }
        assert_int_equal(i, sizeof(want) / sizeof(want[0]));
    }
    json_decref(n);
    json_decref(in);
}

static void test_legacy_upper_size(void **state)
{
    capsa_spec_errors errs = {0};
    json_t *in = load("{\"reference\":\"python\",\"upper_size_mib\":2048}"), *n;
    _cleanup_free_ char *s = NULL;
    (void)state;

    assert_int_equal(capsa_spec_check("OciRootfsSource", in, &n, &errs), 0);
    s = capsa_spec_dump(n, false);
    assert_string_equal(
        s, "{\"reference\":\"python\",\"root_disk\":{\"kind\":\"managed\",\"size_mib\":2048}}");
    json_decref(n);
    json_decref(in);
}

static void test_mount_paths_sorted_and_canonical(void **state)
{
    capsa_spec_errors errs = {0};
    json_t *in =
        load(SB(",\"mounts\":[{\"type\":\"Tmpfs\",\"guest\":\"/a/b/c\"},"
                "{\"type\":\"Tmpfs\",\"guest\":\"//a/./b/\"},{\"type\":\"Tmpfs\",\"guest\":\"/a\"},"
                "{\"type\":\"Tmpfs\",\"guest\":\"/z\"}]"));
    json_t *n, *m;
    (void)state;

    assert_int_equal(capsa_spec_check("SandboxSpec", in, &n, &errs), 0);
    m = json_object_get(n, "mounts");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 0), "guest")), "/a");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 1), "guest")), "/z");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 2), "guest")), "/a/b");
    assert_string_equal(json_string_value(json_object_get(json_array_get(m, 3), "guest")),
                        "/a/b/c");
    json_decref(n);
    json_decref(in);
}

static void test_all_errors_reported(void **state)
{
    capsa_spec_errors errs = {0};
    json_t *in = load(
        "{\"name\":\"\",\"image\":{\"Oci\":{}},\"resources\":{\"cpus\":0},"
        "\"mounts\":[{\"type\":\"Tmpfs\",\"guest\":\"/x\"},{\"type\":\"Tmpfs\",\"guest\":\"/x\"},"
        "{\"type\":\"Tmpfs\",\"guest\":\"rel\"}],\"zzz\":1}");
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_spec_check("SandboxSpec", in, NULL, &errs), -1);
    assert_true(has_error(&errs, "zzz: unknown field"));
    assert_true(has_error(&errs, "name: must not be empty"));
    assert_true(has_error(&errs, "image.Oci.reference: is required"));
    assert_true(has_error(&errs, "resources.cpus: must be between 1 and 128 (got 0)"));
    assert_true(has_error(&errs, "mounts[2].guest: must be an absolute path"));
    assert_true(has_error(&errs, "mounts[1].guest: duplicate guest path \"/x\" (also mounts[0])"));
    assert_int_equal(capsa_spec_errors_total(&errs), 6);
    assert_int_equal(capsa_spec_errors_to_err(&errs, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_non_null(strstr(err.msg, "spec: "));
    assert_non_null(strstr(err.msg, "(and 5 more)"));
    capsa_spec_errors_free(&errs);
    json_decref(in);
}

static void test_name_limits(void **state)
{
    char name[200], doc[400];
    capsa_spec_errors errs = {0};
    json_t *in;
    (void)state;

    memset(name, 'a', 128);
    name[128] = '\0';
    snprintf(doc, sizeof(doc), "{\"name\":\"%s\",\"image\":{\"Bind\":\"/r\"}}", name);
    in = load(doc);
    assert_int_equal(capsa_spec_check("SandboxSpec", in, NULL, &errs), 0);
    json_decref(in);
    name[128] = 'a';
    name[129] = '\0';
    snprintf(doc, sizeof(doc), "{\"name\":\"%s\",\"image\":{\"Bind\":\"/r\"}}", name);
    in = load(doc);
    assert_int_equal(capsa_spec_check("SandboxSpec", in, NULL, &errs), -1);
    assert_true(has_error(&errs, "name: must be at most 128 bytes (got 129)"));
    json_decref(in);
    capsa_spec_errors_free(&errs);
}

static void test_error_cap(void **state)
{
    json_t *env = json_array(), *in;
    capsa_spec_errors errs = {0};
    (void)state;

    for (int i = 0; i < 500; i++)
        json_array_append_new(env, json_pack("{s:s,s:s}", "key", "", "value", "x"));
    in = json_pack("{s:s,s:{s:s},s:o}", "name", "t", "image", "Bind", "/r", "env", env);
    assert_int_equal(capsa_spec_check("SandboxSpec", in, NULL, &errs), -1);
    assert_int_equal(errs.count, CAPSA_SPEC_MAX_ERRORS);
    assert_int_equal(capsa_spec_errors_total(&errs), 500);
    capsa_spec_errors_free(&errs);
    json_decref(in);
}

static void test_unknown_type_and_parse(void **state)
{
    capsa_spec_errors errs = {0};
    json_t *in = load("{}"), *doc = NULL;
    (void)state;

    assert_false(capsa_spec_type_known("Nope"));
    assert_true(capsa_spec_type_known("CloudSandbox"));
    assert_int_equal(capsa_spec_check("Nope", in, NULL, &errs), -1);
    assert_true(has_error(&errs, "unknown type \"Nope\""));
    capsa_spec_errors_free(&errs);
    assert_int_equal(capsa_spec_parse("{\"a\":1,\"a\":2}", 13, &doc, &errs), -1);
    assert_null(doc);
    assert_true(has_error(&errs, "(json) line 1"));
    capsa_spec_errors_free(&errs);
    assert_int_equal(capsa_spec_parse("{\"key\":\"a\\u0000\",\"value\":\"\"}", 28, &doc, &errs), 0);
    assert_int_equal(capsa_spec_check("EnvVar", doc, NULL, &errs), -1);
    assert_true(has_error(&errs, "key: must not contain NUL bytes"));
    capsa_spec_errors_free(&errs);
    json_decref(doc);
    json_decref(in);
}

static void test_null_and_optional(void **state)
{
    capsa_spec_errors errs = {0};
    json_t *in = load("{\"name\":\"c\",\"image\":\"x\",\"workdir\":null,\"scripts\":{}}"), *n;
    _cleanup_free_ char *s = NULL;
    (void)state;

    /* Seed `field?` values are omitted when null; non-optional nullables stay null. */
    assert_int_equal(capsa_spec_check("CloudCreateSandboxRequest", in, &n, &errs), 0);
    s = capsa_spec_dump(n, false);
    assert_string_equal(s,
                        "{\"name\":\"c\",\"image\":\"x\",\"vcpus\":1,\"memory_mib\":512,\"env\":{},"
                        "\"ephemeral\":false,\"scripts\":{}}");
    json_decref(n);
    json_decref(in);
}

static void test_secret_placeholder_default(void **state)
{
    capsa_spec_errors errs = {0};
    json_t *in = load(
        "{\"env_var\":\"API_KEY\",\"value\":\"v\",\"allowed_hosts\":[{\"exact\":\"A.Example.\"}]}");
    json_t *n;
    (void)state;

    assert_int_equal(capsa_spec_check("SecretEntry", in, &n, &errs), 0);
    assert_string_equal(json_string_value(json_object_get(n, "placeholder")), "$CAPSA_API_KEY");
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(n, "allowed_hosts"), 0), "exact")),
                        "a.example");
    assert_stable("SecretEntry", n);
    json_decref(n);
    json_decref(in);
}

static void test_typed_view(void **state)
{
    struct capsa_sandbox_spec *s = NULL;
    capsa_spec_errors errs = {0};
    json_t *in = load(
        "{\"name\":\"web\",\"image\":{\"Oci\":{\"reference\":\"nginx\",\"root_disk\":{\"kind\":"
        "\"tmpfs\"}}},"
        "\"resources\":{\"cpus\":2,\"memory_mib\":1024},"
        "\"runtime\":{\"workdir\":\"/"
        "srv\",\"user\":\"www\",\"hostname\":\"web\",\"entrypoint\":[\"nginx\"],"
        "\"cmd\":[\"-g\",\"daemon off;\"],\"disable_metrics_sample\":true},"
        "\"env\":[{\"key\":\"A\",\"value\":\"1\"}],"
        "\"rlimits\":[{\"resource\":\"Nofile\",\"soft\":10,\"hard\":20}],"
        "\"mounts\":[{\"type\":\"Bind\",\"host\":\"/h\",\"guest\":\"/a/"
        "b\",\"options\":{\"readonly\":true}},"
        "{\"type\":\"Named\",\"name\":\"v\",\"guest\":\"/a\",\"stat_virtualization\":\"relaxed\","
        "\"host_permissions\":\"mirror\"}],"
        "\"network\":{\"ports\":[{\"host_port\":8080,\"guest_port\":80,\"protocol\":\"udp\"}]},"
        "\"pull_policy\":\"Never\",\"security_profile\":\"restricted\","
        "\"lifecycle\":{\"ephemeral\":true,\"idle_timeout_secs\":30}}");
    (void)state;

    if (capsa_sandbox_spec_load(in, &s, &errs) != 0) {
        print_errors(&errs);
        fail();
    }
    assert_string_equal(s->name, "web");
    assert_int_equal(s->image.kind, CAPSA_IMAGE_OCI);
    assert_string_equal(s->image.reference, "nginx");
    assert_int_equal(s->image.root_disk.kind, CAPSA_ROOT_DISK_TMPFS);
    assert_int_equal(s->image.root_disk.size_mib, 0);
    assert_int_equal(s->cpus, 2);
    assert_int_equal(s->memory_mib, 1024);
    assert_int_equal(s->n_env, 1);
    assert_string_equal(s->env[0].key, "A");
    assert_string_equal(s->env[0].value, "1");
    assert_int_equal(s->n_rlimits, 1);
    assert_int_equal(s->rlimits[0].hard, 20);
    assert_string_equal(s->workdir, "/srv");
    assert_string_equal(s->user, "www");
    assert_string_equal(s->hostname, "web");
    assert_null(s->shell);
    assert_string_equal(s->entrypoint[0], "nginx");
    assert_null(s->entrypoint[1]);
    assert_string_equal(s->cmd[1], "daemon off;");
    assert_null(s->cmd[2]);
    assert_int_equal(s->n_mounts, 2);
    assert_int_equal(s->mounts[0].kind, CAPSA_MOUNT_NAMED); /* parent first */
    assert_string_equal(s->mounts[0].guest, "/a");
    assert_int_equal(s->mounts[0].stat_virtualization, CAPSA_STAT_RELAXED);
    assert_true(s->mounts[0].host_permissions_mirror);
    assert_int_equal(s->mounts[1].kind, CAPSA_MOUNT_BIND);
    assert_true(s->mounts[1].readonly);
    assert_false(s->mounts[1].noexec);
    assert_string_equal(s->mounts[1].host, "/h");
    assert_true(s->lifecycle.ephemeral);
    assert_int_equal(s->lifecycle.idle_timeout_secs, 30);
    assert_int_equal(s->lifecycle.max_duration_secs, 0);
    assert_true(s->network.enabled);
    assert_int_equal(s->network.n_ports, 1);
    assert_int_equal(s->network.ports[0].host_port, 8080);
    assert_true(s->network.ports[0].udp);
    assert_string_equal(s->network.ports[0].host_bind, "127.0.0.1");
    assert_int_equal(s->pull_policy, CAPSA_PULL_NEVER);
    assert_true(s->restricted);
    assert_int_equal(s->metrics_sample_interval_ms, 0);
    capsa_sandbox_spec_free(s);
    json_decref(in);

    in = load("{\"name\":\"x\",\"image\":{\"Bind\":\"relative\"}}");
    assert_int_equal(capsa_sandbox_spec_load(in, &s, &errs), -1);
    assert_null(s);
    assert_true(has_error(&errs, "image.Bind: must be an absolute path"));
    capsa_spec_errors_free(&errs);
    json_decref(in);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_every_type_covered),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_legacy_upper_size),
        cmocka_unit_test(test_mount_paths_sorted_and_canonical),
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_name_limits),
        cmocka_unit_test(test_error_cap),
        cmocka_unit_test(test_unknown_type_and_parse),
        cmocka_unit_test(test_null_and_optional),
        cmocka_unit_test(test_secret_placeholder_default),
        cmocka_unit_test(test_typed_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
