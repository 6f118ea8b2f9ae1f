/* test_conf.c - unit tests of the conf module: YAML strictness, every schema field valid and
 * invalid with exact FILE:LINE:COL positions, precedence, ${} substitution, relative paths,
 * scoped files, CLI overrides and config.json. Real files in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/paths.h"
#include "conf/conf.h"

static char tmp[PATH_MAX];

static void write_file(const char *rel, const char *text)
{
    char p[PATH_MAX * 2];
    FILE *f;

    snprintf(p, sizeof(p), "%s/%s", tmp, rel);
    f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void mkdir_rel(const char *rel)
{
    char p[PATH_MAX * 2];
    snprintf(p, sizeof(p), "%s/%s", tmp, rel);
    assert_int_equal(capsa_mkdir_p(p, 0755, NULL), 0);
}

/* Load the given files (relative to tmp) with kinds; cli may be NULL. */
static int load(const struct capsa_conf_file *files, size_t n, json_t *global, json_t *cli,
                json_t **out, capsa_conf_errors *errs)
{
    struct capsa_conf_file fs[8];
    char paths[8][PATH_MAX * 2];

    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        snprintf(paths[i], sizeof(paths[i]), "%s/%s", tmp, files[i].path);
        fs[i].kind = files[i].kind;
        fs[i].path = paths[i];
    }
    struct capsa_conf_sources src = {.files = fs, .n_files = n, .global = global};
    return capsa_conf_load(&src, cli, out, errs);
}

/* Load YAML text as the one --conf file t.yaml with name "t". */
static int load_text(enum capsa_conf_kind kind, const char *yaml, json_t **out,
                     capsa_conf_errors *errs)
{
    struct capsa_conf_file f = {kind, "t.yaml"};
    json_t *cli = json_pack("{s:s}", "name", "t");
    int rc;

    write_file("t.yaml", yaml);
    rc = load(&f, 1, NULL, cli, out, errs);
    json_decref(cli);
    return rc;
}

static bool has_error(const capsa_conf_errors *errs, const char *substr)
{
    for (size_t i = 0; i < errs->count; i++)
        if (strstr(errs->items[i], substr))
            return true;
    return false;
}

static void dump_errors(const char *yaml, const capsa_conf_errors *errs)
{
    fprintf(stderr, "# yaml:\n%s\n# errors:\n", yaml);
    for (size_t i = 0; i < errs->count; i++)
        fprintf(stderr, "#   %s\n", errs->items[i]);
}

/* ---- table of single-file cases -------------------------------------------------------- */

struct kase {
    const char *yaml;
    const char *err; /* NULL: valid; else a substring of one error, with the position */
};

#define IMG "image: busybox\n"

static const struct kase cases[] = {
    /* strict YAML */
    {IMG "cpus: yes\n", "t.yaml:2:7: cpus: ambiguous bare boolean 'yes'"},
    {IMG "cpus: 2\ncpus: 3\n", "t.yaml:3:1: cpus: duplicate key (first at line 2, column 1)"},
    {IMG "env: &e {A: b}\n", "t.yaml:2:6: env: anchors are not supported (&e)"},
    {IMG "labels: {a: b}\nenv: *e\n", "t.yaml:3:6: env: aliases are not supported (*e)"},
    {IMG "hostname: !!str web\n", "t.yaml:2:11: hostname: tags are not supported"},
    {IMG "---\ncpus: 1\n", "multiple YAML documents are not supported"},
    {IMG "<<: {cpus: 2}\n", "t.yaml:2:1: (root): merge keys (<<) are not supported"},
    {"%YAML 1.1\n---\n" IMG, "YAML directives"},
    {IMG "env: {? [a]: b}\n", "mapping keys must be scalars"},
    {IMG "cmd: [a, b\n", "YAML syntax error"},
    {IMG "env: {A: off}\n", "t.yaml:2:10: env.A: ambiguous bare boolean 'off'"},
    {IMG "env: {A: \"off\", B: true, C: 8080}\n", NULL},
    {"- a\n- b\n", "t.yaml:1:1: (root): expected a mapping"},
    {"", "sandbox spec: image: is required"},
    /* unknown fields */
    {IMG "imagee: x\n",
     "t.yaml:2:1: imagee: unknown field 'imagee' in a --conf file (expected one of: image,"},
    {IMG "mounts: [{bind: /x, target: /y, format: raw}]\n",
     "t.yaml:2:33: mounts[0].format: unknown field 'format' in a bind mount"},
    {IMG "network: {tls: {enabled: true, foo: 1}}\n",
     "network.tls.foo: unknown field 'foo' in network.tls"},
    {IMG "sandboxes: {}\n", "t.yaml:2:12: sandboxes: project-file fields"},
    {IMG "registry: {username: deploy, password_env: X}\n",
     "registry: per-sandbox registry credentials are not supported"},
    /* image */
    {"image: \"python:3.12\"\n", NULL},
    {"image: {oci: python, upper_size: 8G}\n", NULL},
    {"image: {oci: python, fstype: ext4}\n",
     "image.fstype: unknown field 'fstype' in an oci image"},
    {"image: {snapshot: base}\n",
     "t.yaml:1:9: image.snapshot: booting from a snapshot is not supported yet"},
    {"image: {oci: a, bind: /x}\n", "give only one of oci, bind, disk"},
    {"image: \"py thon\"\n", "t.yaml:1:8: image: Oci.reference: must be an OCI image reference"},
    {"image: ./nonexistent-root\n", "t.yaml:1:8: image: "},
    {"image: {disk: /d.img, format: vhd}\n",
     "image.format: must be one of raw, qcow2, vmdk (got 'vhd')"},
    {"image: {disk: /d.vmdk}\n", NULL},
    {"image: {bind: /srv/root}\n", NULL},
    {IMG "pull_policy: sometimes\n", "pull_policy: must be one of missing, always, never"},
    /* resources */
    {IMG "cpus: 0\n", "t.yaml:2:7: cpus: must be between 1 and 128 (got 0)"},
    {IMG "cpus: \"2\"\n", "cpus: expected an integer, got a quoted string"},
    {IMG "cpus: 1.5\n", "cpus: expected a decimal integer"},
    {IMG "memory: 1.5G\n", NULL},
    {IMG "memory: 512\n", NULL},
    {IMG "memory: 32M\n", "t.yaml:2:9: memory: must be between 64 and 1048576 MiB (got 32)"},
    {IMG "memory: lots\n", "memory: size 'lots': expected a number"},
    {IMG "max_duration: 12h\nidle_timeout: 90\n", NULL},
    {IMG "idle_timeout: 5 minutes\n", "idle_timeout: duration '5 minutes'"},
    {IMG "rlimits: [{resource: nofile, soft: 10, hard: 5}]\n",
     "t.yaml:2:11: rlimits[0]: soft: must not exceed hard"},
    {IMG "rlimits: [{resource: files, soft: 10}]\n",
     "rlimits[0].resource: must be one of cpu, fsize"},
    {IMG "rlimits: [{resource: nofile, soft: 1}, {resource: nofile, soft: 2}]\n",
     "rlimits[1].resource: duplicate resource"},
    /* runtime */
    {IMG "workdir: app\n", "t.yaml:2:10: workdir: must be an absolute guest path"},
    {IMG "hostname: \"bad_host!\"\n", "t.yaml:2:11: hostname: must be a host name"},
    {IMG "user: \"a b\"\n", "user: must be USER[:GROUP]"},
    {IMG "security: strict\n", "security: must be one of default, restricted"},
    {IMG "shell: 5\n", "shell: expected a string, got the number 5 (quote it for a string)"},
    {IMG "shell: true\n", "shell: expected a string, got the boolean true"},
    {IMG "shell:\n", "shell: expected a string, got no value (null)"},
    {IMG "entrypoint: /bin/sh\n", "entrypoint: expected a list of strings"},
    {IMG "env: {\"A=B\": x}\n", "t.yaml:2:7: env[\"A=B\"]: key: must"},
    {IMG "labels: {sandbox.id: x}\n", "labels[\"sandbox.id\"]: key uses a reserved"},
    {IMG "init: {cmd: sbin/init}\n", "t.yaml:2:7: init: cmd: must be an absolute path or \"auto\""},
    {IMG "init: {cmd: /sbin/init, args: [--x], env: {K: v}}\n", NULL},
    {IMG "scripts: {\"a/b\": echo}\n", "t.yaml:2:18: scripts[\"a/b\"]: key must be a file name"},
    /* mounts */
    {IMG "mounts: [\"/srv:/data:ro,noexec\", \"cache:/c\"]\n", NULL},
    {IMG "mounts: [\"/srv:/data:rx\"]\n", "t.yaml:2:10: mounts[0]: unknown mount option 'rx'"},
    {IMG "mounts: [\"/srv:data\"]\n", "mounts[0]: guest path must be absolute"},
    {IMG "mounts: [\"/srv\"]\n", "mounts[0]: must be SRC:DST[:OPTIONS]"},
    {IMG "mounts: [{target: /x}]\n", "mounts[0]: a mount needs one of bind, named, tmpfs or disk"},
    {IMG "mounts: [{bind: /x}]\n", "mounts[0]: target (the guest path) is required"},
    {IMG "mounts: [{named: v, target: /v, kind: disk, size: 1G}]\n", "add create: ensure-exists"},
    {IMG "mounts: [{named: v, target: /v, create: create, kind: disk, size: 1G}]\n", NULL},
    {IMG "mounts: [{named: v, target: /v, create: create, kind: disk}]\n",
     "t.yaml:2:10: mounts[0]: create.capacity_mib: is required for Disk volumes"},
    {IMG "mounts: [{tmpfs: {size: 1G}, target: /run}, {tmpfs: , target: /t2}]\n", NULL},
    {IMG "mounts: [{bind: /x, target: /y, stat_virtualization: off, host_permissions: mirror}]\n",
     "ambiguous bare boolean 'off'"},
    {IMG
     "mounts: [{bind: /x, target: /y, stat_virtualization: \"off\", host_permissions: mirror}]\n",
     "host_permissions: \"mirror\" needs stat_virtualization"},
    {IMG "mounts: [\"/a:/x\", {tmpfs: {}, target: /x/}]\n",
     "t.yaml:2:19: mounts[1]: duplicate guest path /x (also mounts[0])"},
    {IMG "mounts: [{bind: /x, target: /y, follow_root_symlinks: true}]\n",
     "unknown field 'follow_root_symlinks'"},
    /* patches */
    {IMG "patches: [{mkdir: {path: /x, mode: 0755}}]\n",
     "t.yaml:2:36: patches[0].mkdir.mode: must be a quoted 4-digit octal mode"},
    {IMG "patches: [{mkdir: {path: /x, mode: \"755\"}}]\n", "must be a quoted 4-digit octal mode"},
    {IMG "patches: [{mkdir: {path: /x, mode: \"0855\"}}]\n", "must be a quoted 4-digit octal mode"},
    {IMG "patches: [{chmod: {path: /x}}]\n", "t.yaml:2:12: patches[0]: unknown patch kind 'chmod'"},
    {IMG "patches: [{mkdir: {path: /x}, remove: {path: /y}}]\n",
     "a patch is a mapping with exactly one key"},
    {IMG "patches: [{file: {path: /x, content_base64: \"SGVsbG8\"}}]\n",
     "content_base64: is not valid base64"},
    {IMG "patches: [{text: {path: /, content: x}}]\n",
     "patches[0]: path: must not be the root directory"},
    {"image: {disk: /d.img}\npatches: [{remove: {path: /x}}]\n",
     "t.yaml:2:1: patches: not supported with a DiskImage root"},
    /* network */
    {IMG "network: public\n", NULL},
    {IMG "network: closed\n", "network: must be one of none, public, open (got 'closed')"},
    {IMG "network: {allow: [\"10.0.0.0/33\"]}\n",
     "t.yaml:2:19: network.allow[0]: destination.cidr"},
    {IMG "network: {deny: [\"-bad-.com\"]}\n", "network.deny[0]: destination.domain"},
    {IMG "network: {ports: [\"8080\"]}\n", "network.ports[0]: must be [BIND:]HOST:GUEST"},
    {IMG "network: {ports: [\"8080:80/sctp\"]}\n", "protocol must be tcp or udp"},
    {IMG "network: {ports: [\"70000:80\"]}\n", "ports must be between 1 and 65535"},
    {IMG "network: {ports: [\"300.1.1.1:80:80\"]}\n", "network.ports[0]: host_bind"},
    {IMG "network: {ports: [\"[::1]:8080:80\", \"0.0.0.0:8081:81/udp\"]}\n", NULL},
    {IMG "network: {ports: [\"8000:80\"]}\nports: [\"8000:81\"]\n",
     "t.yaml:2:19: network.ports[0])"},
    {IMG "network: {ports: [\"8000:80\"]}\nports: [\"8000:81\"]\n",
     "t.yaml:3:9: ports[0]: duplicate host port 8000/tcp (also at "},
    {IMG "ports: [\"8000:80\", \"8000:80/udp\"]\n", NULL},
    {IMG "network: {dns: {nameservers: [\"not a host\"]}}\n",
     "network.dns: nameservers[0]: must be IP"},
    {IMG "network: {dns: {query_timeout: 0}}\n", "network.dns: query_timeout_ms: must be between"},
    {IMG "network: {max_connections: 0}\n", "network.max_connections: must be between 1"},
    {IMG "network: {tls: {bypass: [\"*.x.com\"], block_quic: false}}\n", NULL},
    /* secrets */
    {IMG "secrets: {K: {allow: [api.x.com], inject: [headers, cookies]}}\n",
     "secrets.K.inject[1]: must be one of headers"},
    {IMG "secrets: {K: {allow: []}}\n",
     "t.yaml:2:14: secrets.K: allowed_hosts: must list at least one"},
    {IMG "secrets: {K: {value: \"lit\"}}\n",
     "t.yaml:2:1: network.secrets.secrets[0].allowed_hosts: is required"},
    {IMG "secrets: {\"BAD=\": {allow: [x.com]}}\n", "secrets[\"BAD=\"]: env_var"},
    {IMG "secrets: {K: {allow: [x.com]}}\nnetwork: {tls: {enabled: false}}\n",
     "network.tls.enabled: must not be false when secrets are declared"},
    {IMG "secrets: {K: {value: \"${DEFINITELY_NOT_SET_42}x\", allow: [x.com]}}\n",
     "secrets.K.value: environment variable DEFINITELY_NOT_SET_42 is not set"},
    /* substitution */
    {IMG "hostname: \"${DEFINITELY_NOT_SET_42}\"\n",
     "t.yaml:2:11: hostname: environment variable DEFINITELY_NOT_SET_42 is not set"},
    {IMG "hostname: \"${A-B}\"\n", "only ${NAME} substitution is supported"},
    {IMG "hostname: \"${UNCLOSED\"\n", "only ${NAME} substitution is supported"},
    {IMG "env: {A: \"$${NOT_SUBST} $HOME\"}\n", NULL},
};

static void test_cases(void **state)
{
    size_t failed = 0;

    for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
        capsa_conf_errors errs = {0};
        json_t *out = NULL;
        int rc = load_text(CAPSA_CONF_ROOT, cases[i].yaml, &out, &errs);
        bool ok = cases[i].err ? (rc < 0 && has_error(&errs, cases[i].err)) : rc == 0;
        if (!ok) {
            fprintf(stderr, "# case %zu: expected %s%s%s\n", i,
                    cases[i].err ? "error '" : "success", cases[i].err ? cases[i].err : "",
                    cases[i].err ? "'" : "");
            dump_errors(cases[i].yaml, &errs);
            failed++;
        }
        if (rc == 0) {
            /* a valid result re-checks unchanged */
            json_t *again = NULL;
            assert_int_equal(capsa_spec_check("SandboxSpec", out, &again, NULL), 0);
            assert_true(json_equal(out, again));
            json_decref(again);
        }
        json_decref(out);
        capsa_conf_errors_free(&errs);
    }
    assert_int_equal(failed, 0);
}

/* ---- specific behaviours --------------------------------------------------------------- */

static json_t *ok_text(const char *yaml)
{
    capsa_conf_errors errs = {0};
    json_t *out = NULL;
    if (load_text(CAPSA_CONF_ROOT, yaml, &out, &errs) < 0)
        dump_errors(yaml, &errs);
    capsa_conf_errors_free(&errs);
    assert_non_null(out);
    return out;
}

static const char *sget(json_t *doc, const char *ptr)
{
    /* tiny JSON-pointer-ish lookup: "a.b.0.c" */
    char buf[256], *save = NULL;
    json_t *v = doc;
    snprintf(buf, sizeof(buf), "%s", ptr);
    for (char *t = strtok_r(buf, ".", &save); t && v; t = strtok_r(NULL, ".", &save))
        v = json_is_array(v) ? json_array_get(v, strtoul(t, NULL, 10)) : json_object_get(v, t);
    return json_string_value(v);
}

static json_int_t iget(json_t *doc, const char *ptr)
{
    char buf[256], *save = NULL;
    json_t *v = doc;
    snprintf(buf, sizeof(buf), "%s", ptr);
    for (char *t = strtok_r(buf, ".", &save); t && v; t = strtok_r(NULL, ".", &save))
        v = json_is_array(v) ? json_array_get(v, strtoul(t, NULL, 10)) : json_object_get(v, t);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void test_full_schema(void **state)
{
    json_t *d;

    mkdir_rel("src");
    setenv("CONF_TEST_DSN", "postgres://db", 1);
    setenv("CONF_TEST_CPUS", "3", 1);
    d = ok_text("image: {oci: \"python:3.12\", upper_size: 8G}\n"
                "pull_policy: always\n"
                "cpus: ${CONF_TEST_CPUS}\n"
                "memory: 1G\n"
                "max_duration: 12h\n"
                "idle_timeout: 10m\n"
                "rlimits: [{resource: nofile, soft: 8192}]\n"
                "workdir: /app\nshell: /bin/bash\nuser: \"app:app\"\nhostname: api\n"
                "security: restricted\nentrypoint: [/bin/sh, -c]\ncmd: [\"echo hi\"]\n"
                "env: {K: V, DSN: \"${CONF_TEST_DSN}\"}\nlabels: {team: infra}\n"
                "init: {cmd: auto, env: {A: b}}\n"
                "mounts:\n  - ./src:/app:ro\n  - {named: cache, target: /var/cache, create: "
                "ensure-exists}\n"
                "patches:\n  - text: {path: /etc/motd, content: hi, mode: \"0644\"}\n"
                "  - file: {path: /bin.bin, content_base64: \"SGk=\"}\n"
                "network: {policy: public, deny: [169.254.169.254], tls: {bypass: [x.com]}}\n"
                "ports: [\"8080:80\"]\n"
                "secrets:\n  API: {allow: [api.example.com]}\n"
                "  DB: {value: \"${DB_DSN}\", allow: [\"*.internal\"], inject: [basic_auth]}\n"
                "  LIT: {value: \"pre-${CONF_TEST_DSN}\", allow: [any]}\n"
                "scripts: {start: python app.py}\n");
    assert_string_equal(sget(d, "image.Oci.reference"), "python:3.12");
    assert_int_equal(iget(d, "image.Oci.root_disk.size_mib"), 8192);
    assert_string_equal(sget(d, "pull_policy"), "Always");
    assert_int_equal(iget(d, "resources.cpus"), 3);
    assert_int_equal(iget(d, "resources.memory_mib"), 1024);
    assert_int_equal(iget(d, "lifecycle.max_duration_secs"), 43200);
    assert_int_equal(iget(d, "lifecycle.idle_timeout_secs"), 600);
    assert_string_equal(sget(d, "rlimits.0.resource"), "Nofile");
    assert_int_equal(iget(d, "rlimits.0.hard"), 8192);
    assert_string_equal(sget(d, "runtime.user"), "app:app");
    assert_string_equal(sget(d, "security_profile"), "restricted");
    assert_string_equal(sget(d, "runtime.entrypoint.1"), "-c");
    assert_string_equal(sget(d, "env.1.value"), "postgres://db");
    assert_string_equal(sget(d, "labels.team"), "infra");
    assert_string_equal(sget(d, "init.env.0.1"), "b");
    /* relative bind source resolved against the file's directory */
    {
        char want[PATH_MAX * 2];
        snprintf(want, sizeof(want), "%s/src", tmp);
        assert_string_equal(sget(d, "mounts.0.host"), want);
        assert_true(json_is_true(json_object_get(
            json_object_get(json_array_get(json_object_get(d, "mounts"), 0), "options"),
            "readonly")));
    }
    assert_string_equal(sget(d, "mounts.1.create.mode"), "EnsureExists");
    assert_int_equal(iget(d, "patches.0.Text.mode"), 0644);
    assert_int_equal(iget(d, "patches.1.File.content.1"), 'i');
    /* network: deny first, then dns and public allows; ingress allowed */
    assert_string_equal(sget(d, "network.policy.rules.0.action"), "deny");
    assert_string_equal(sget(d, "network.policy.rules.0.destination.cidr"), "169.254.169.254/32");
    assert_string_equal(sget(d, "network.policy.rules.2.destination.group"), "public");
    assert_string_equal(sget(d, "network.policy.default_ingress"), "allow");
    assert_int_equal(iget(d, "network.ports.0.host_port"), 8080);
    /* secrets: env source by default, exact "${NAME}" is a source, others substituted */
    assert_string_equal(sget(d, "network.secrets.secrets.0.source.var"), "API");
    assert_string_equal(sget(d, "network.secrets.secrets.1.source.var"), "DB_DSN");
    assert_string_equal(sget(d, "network.secrets.secrets.1.allowed_hosts.0.wildcard"),
                        "*.internal");
    assert_true(json_is_false(json_object_get(
        json_object_get(
            json_array_get(
                json_object_get(json_object_get(json_object_get(d, "network"), "secrets"),
                                "secrets"),
                1),
            "injection"),
        "headers")));
    assert_string_equal(sget(d, "network.secrets.secrets.2.value"), "pre-postgres://db");
    assert_string_equal(sget(d, "network.secrets.secrets.2.allowed_hosts.0"), "any");
    /* secrets turn TLS interception on */
    assert_true(json_is_true(
        json_object_get(json_object_get(json_object_get(d, "network"), "tls"), "enabled")));
    /* script gets a shebang from `shell` */
    assert_string_equal(sget(d, "runtime.scripts.start"), "#!/bin/bash\npython app.py");
    json_decref(d);
}

static void test_literal_dollar(void **state)
{
    json_t *d = ok_text(IMG "env: {A: \"$${X} $HOME ok\"}\n");
    assert_string_equal(sget(d, "env.0.value"), "${X} $HOME ok");
    json_decref(d);
}

static void test_network_profiles(void **state)
{
    json_t *d = ok_text(IMG "network: none\n");
    assert_string_equal(sget(d, "network.policy.default_egress"), "deny");
    assert_string_equal(sget(d, "network.policy.default_ingress"), "deny");
    assert_int_equal(json_array_size(json_object_get(
                         json_object_get(json_object_get(d, "network"), "policy"), "rules")),
                     0);
    json_decref(d);
    d = ok_text(IMG "network: open\n");
    assert_string_equal(sget(d, "network.policy.default_egress"), "allow");
    json_decref(d);
    /* a non-empty allow list: deny-by-default egress, only the listed targets plus DNS */
    d = ok_text(IMG "network: {policy: open, allow: [api.openai.com, \"*.Stripe.com\", "
                    "10.0.0.0/8, \"[fd00::1]\", private]}\n");
    assert_string_equal(sget(d, "network.policy.default_egress"), "deny");
    assert_string_equal(sget(d, "network.policy.rules.0.destination.domain"), "api.openai.com");
    assert_string_equal(sget(d, "network.policy.rules.1.destination.domain_suffix"), "stripe.com");
    assert_string_equal(sget(d, "network.policy.rules.2.destination.cidr"), "10.0.0.0/8");
    assert_string_equal(sget(d, "network.policy.rules.3.destination.cidr"), "fd00::1/128");
    assert_string_equal(sget(d, "network.policy.rules.4.destination.group"), "private");
    assert_int_equal(iget(d, "network.policy.rules.5.ports.0.start"), 53);
    assert_int_equal(json_array_size(json_object_get(
                         json_object_get(json_object_get(d, "network"), "policy"), "rules")),
                     6);
    json_decref(d);
    /* no network section at all: policy left to the runtime default */
    d = ok_text(IMG);
    assert_true(json_is_null(json_object_get(json_object_get(d, "network"), "policy")));
    json_decref(d);
}

static void test_image_paths(void **state)
{
    json_t *d;
    char want[PATH_MAX * 2];

    mkdir_rel("rootdir");
    write_file("disk.qcow2", "x");
    d = ok_text("image: ./rootdir\n");
    snprintf(want, sizeof(want), "%s/rootdir", tmp);
    assert_string_equal(sget(d, "image.Bind"), want);
    json_decref(d);
    d = ok_text("image: ./disk.qcow2\n");
    snprintf(want, sizeof(want), "%s/disk.qcow2", tmp);
    assert_string_equal(sget(d, "image.DiskImage.path"), want);
    assert_string_equal(sget(d, "image.DiskImage.format"), "Qcow2");
    json_decref(d);
    d = ok_text("image: {disk: ../x/./disk.raw, format: raw, fstype: ext4}\n");
    {
        char *dir = strdup(tmp), *slash = strrchr(dir, '/');
        *slash = '\0';
        snprintf(want, sizeof(want), "%s/x/disk.raw", dir);
        free(dir);
    }
    assert_string_equal(sget(d, "image.DiskImage.path"), want);
    json_decref(d);
}

/* Relative paths resolve against the file that holds them, including patch files. */
static void test_relative_paths_per_file(void **state)
{
    struct capsa_conf_file fs[] = {{CAPSA_CONF_ROOT, "base.yaml"}, {CAPSA_CONF_FS, "sub/fs.yaml"}};
    capsa_conf_errors errs = {0};
    json_t *out = NULL, *cli = json_pack("{s:s}", "name", "t");
    char want[PATH_MAX * 2];

    mkdir_rel("sub/patches");
    write_file("base.yaml", IMG);
    write_file("sub/fs.yaml", "mounts: [{bind: ./data, target: /data}]\n"
                              "patch_files: [patches/p.yaml]\n"
                              "patches: [{copy_dir: {src: ../certs, dst: /certs}}]\n");
    write_file("sub/patches/p.yaml", "- copy_file: {src: ./f.txt, dst: /f.txt}\n");
    assert_int_equal(load(fs, 2, NULL, cli, &out, &errs), 0);
    snprintf(want, sizeof(want), "%s/sub/data", tmp);
    assert_string_equal(sget(out, "mounts.0.host"), want);
    snprintf(want, sizeof(want), "%s/sub/patches/f.txt", tmp);
    assert_string_equal(sget(out, "patches.0.CopyFile.src"), want);
    snprintf(want, sizeof(want), "%s/certs", tmp);
    assert_string_equal(sget(out, "patches.1.CopyDir.src"), want);
    json_decref(out);

    /* errors inside a patch file carry that file's name and position */
    write_file("sub/patches/p.yaml", "- copy_file: {src: ./f.txt, dst: /f.txt}\n"
                                     "- mkdir: {path: relative}\n");
    assert_int_equal(load(fs, 2, NULL, cli, &out, &errs), -1);
    snprintf(want, sizeof(want), "%s/sub/patches/p.yaml:2:17: [1].mkdir.path: must be an absolute",
             tmp);
    if (!has_error(&errs, want))
        dump_errors(want, &errs);
    assert_true(has_error(&errs, want));
    capsa_conf_errors_free(&errs);
    json_decref(cli);
}

static void test_precedence(void **state)
{
    struct capsa_conf_file fs[] = {
        {CAPSA_CONF_ROOT, "a.yaml"}, {CAPSA_CONF_ROOT, "b.yaml"}, {CAPSA_CONF_RESOURCE, "r.yaml"}};
    json_t *global = json_pack("{s:{s:i,s:i,s:s,s:s}}", "sandbox_defaults", "cpus", 3, "memory_mib",
                               768, "shell", "/bin/zsh", "workdir", "/home");
    json_t *cli, *out = NULL;
    capsa_conf_errors errs = {0};

    write_file("a.yaml", "image: busybox\ncpus: 2\nenv: {A: \"1\", B: \"2\"}\n"
                         "labels: {x: \"1\"}\nmounts: [\"/a:/a\"]\n"
                         "network: {allow: [a.com], dns: {nameservers: [1.1.1.1]}}\n"
                         "init: {cmd: auto, env: {X: \"1\"}}\nscripts: {s: echo}\n"
                         "secrets: {T: {allow: [a.com], inject: [headers]}}\n");
    write_file("b.yaml", "cpus: 4\nenv: {B: \"3\", C: \"4\"}\nlabels: {y: \"2\"}\n"
                         "mounts: [\"/b:/b\"]\n"
                         "network: {deny: [b.com], dns: {query_timeout: 2s}}\n"
                         "init: {args: [z]}\nsecrets: {T: {allow: [b.com]}}\n");
    write_file("r.yaml", "memory: 2G\n");
    cli = json_pack("{s:s,s:{s:i},s:[{s:s,s:s}],s:[{s:s,s:s,s:s}]}", "name", "p", "resources",
                    "cpus", 8, "env", "key", "C", "value", "cli", "mounts", "type", "Named", "name",
                    "v", "guest", "/v");
    assert_int_equal(load(fs, 3, global, cli, &out, &errs), 0);
    /* CLI > files > defaults */
    assert_int_equal(iget(out, "resources.cpus"), 8);
    assert_int_equal(iget(out, "resources.memory_mib"), 2048);
    assert_string_equal(sget(out, "runtime.workdir"), "/home");
    assert_string_equal(sget(out, "runtime.shell"), "/bin/zsh");
    assert_string_equal(sget(out, "runtime.scripts.s"), "#!/bin/zsh\necho");
    /* maps merge by key; CLI env merges by key too */
    assert_int_equal(json_array_size(json_object_get(out, "env")), 3);
    assert_string_equal(sget(out, "env.1.value"), "3");
    assert_string_equal(sget(out, "env.2.value"), "cli");
    assert_string_equal(sget(out, "labels.x"), "1");
    assert_string_equal(sget(out, "labels.y"), "2");
    assert_string_equal(sget(out, "init.cmd"), "auto");
    assert_string_equal(sget(out, "init.args.0"), "z");
    assert_string_equal(sget(out, "init.env.0.0"), "X");
    assert_string_equal(sget(out, "network.dns.nameservers.0"), "1.1.1.1");
    assert_int_equal(iget(out, "network.dns.query_timeout_ms"), 2000);
    /* a higher list replaces a lower one; CLI mounts are added */
    assert_int_equal(json_array_size(json_object_get(out, "mounts")), 2);
    assert_string_equal(sget(out, "mounts.0.guest"), "/b");
    assert_string_equal(sget(out, "mounts.1.guest"), "/v");
    /* policy built from the merged allow (a) and deny (b) */
    assert_string_equal(sget(out, "network.policy.rules.0.destination.domain"), "b.com");
    assert_string_equal(sget(out, "network.policy.rules.0.action"), "deny");
    assert_string_equal(sget(out, "network.policy.rules.1.destination.domain"), "a.com");
    /* secret definitions merge by key: allow replaced, inject kept */
    assert_string_equal(sget(out, "network.secrets.secrets.0.allowed_hosts.0.exact"), "b.com");
    json_decref(out);
    json_decref(cli);

    /* CLI image replaces the files' image as a whole */
    cli = json_pack("{s:s,s:{s:s}}", "name", "p", "image", "Bind", "/srv/root");
    assert_int_equal(load(fs, 3, global, cli, &out, &errs), 0);
    assert_string_equal(sget(out, "image.Bind"), "/srv/root");
    assert_null(json_object_get(json_object_get(out, "image"), "Oci"));
    json_decref(out);
    json_decref(cli);
    json_decref(global);
    capsa_conf_errors_free(&errs);
}

static void test_scoped_files(void **state)
{
    struct capsa_conf_file fs[] = {
        {CAPSA_CONF_ROOT, "img.yaml"},     {CAPSA_CONF_NET, "net.yaml"},
        {CAPSA_CONF_RESOURCE, "res.yaml"}, {CAPSA_CONF_RUNTIME, "rt.yaml"},
        {CAPSA_CONF_FS, "fs.yaml"},        {CAPSA_CONF_SECRET, "sec.yaml"},
        {CAPSA_CONF_SCRIPT, "scr.yaml"},
    };
    json_t *cli = json_pack("{s:s}", "name", "s"), *out = NULL;
    capsa_conf_errors errs = {0};

    write_file("img.yaml", IMG);
    write_file("net.yaml", "policy: none\nports: [\"9000:90\"]\nmax_connections: 5\n");
    write_file("res.yaml", "cpus: 2\nmemory: 256M\nrlimits: [{resource: nproc, soft: 100}]\n");
    write_file("rt.yaml", "workdir: /w\nenv: {A: b}\ninit: {cmd: /sbin/init}\n");
    write_file("fs.yaml", "mounts: [{tmpfs: {size: 64M}, target: /tmp}]\n");
    write_file("sec.yaml", "TOKEN: {allow: [x.com]}\n");
    write_file("scr.yaml", "hello: |\n  echo hi\n");
    assert_int_equal(load(fs, ARRAY_SIZE(fs), NULL, cli, &out, &errs), 0);
    assert_string_equal(sget(out, "network.policy.default_egress"), "deny");
    assert_int_equal(iget(out, "network.ports.0.host_port"), 9000);
    assert_int_equal(iget(out, "network.max_connections"), 5);
    assert_int_equal(iget(out, "resources.memory_mib"), 256);
    assert_string_equal(sget(out, "runtime.workdir"), "/w");
    assert_string_equal(sget(out, "init.cmd"), "/sbin/init");
    assert_string_equal(sget(out, "mounts.0.type"), "Tmpfs");
    assert_string_equal(sget(out, "network.secrets.secrets.0.env_var"), "TOKEN");
    assert_string_equal(sget(out, "runtime.scripts.hello"), "#!/bin/sh\necho hi\n");
    json_decref(out);

    /* a root-shape field in a scoped file is unknown there */
    write_file("res.yaml", "cpus: 2\nimage: busybox\n");
    assert_int_equal(load(fs, ARRAY_SIZE(fs), NULL, cli, &out, &errs), -1);
    assert_true(has_error(&errs, "res.yaml:2:1: image: unknown field 'image' in a "
                                 "--resource-conf file (expected one of: cpus, memory, "
                                 "max_duration, idle_timeout, rlimits)"));
    capsa_conf_errors_free(&errs);
    /* a net-conf file's paths are relative to its own root */
    write_file("res.yaml", "cpus: 2\n");
    write_file("net.yaml", "policy: none\nallow: [\"bad host\"]\n");
    assert_int_equal(load(fs, ARRAY_SIZE(fs), NULL, cli, &out, &errs), -1);
    assert_true(has_error(&errs, "net.yaml:2:9: allow[0]: destination.domain"));
    capsa_conf_errors_free(&errs);
    json_decref(cli);
}

static void test_all_errors_reported(void **state)
{
    capsa_conf_errors errs = {0};
    json_t *out = NULL;

    assert_int_equal(load_text(CAPSA_CONF_ROOT,
                               IMG "cpus: 0\nmemory: x\nworkdir: rel\nbogus: 1\n"
                                   "mounts: [\"/a\"]\n",
                               &out, &errs),
                     -1);
    assert_int_equal(errs.count, 5);
    assert_true(has_error(&errs, "t.yaml:2:7: cpus:"));
    assert_true(has_error(&errs, "t.yaml:3:9: memory:"));
    assert_true(has_error(&errs, "t.yaml:4:10: workdir:"));
    assert_true(has_error(&errs, "t.yaml:5:1: bogus:"));
    assert_true(has_error(&errs, "t.yaml:6:10: mounts[0]:"));
    capsa_conf_errors_free(&errs);
}

static void test_missing_file(void **state)
{
    struct capsa_conf_file f = {CAPSA_CONF_ROOT, "does-not-exist.yaml"};
    capsa_conf_errors errs = {0};
    json_t *out = NULL;
    capsa_err err = {0};

    assert_int_equal(load(&f, 1, NULL, NULL, &out, &errs), -1);
    assert_true(has_error(&errs, "does-not-exist.yaml:1:1: (root): cannot open: No such file"));
    assert_int_equal(capsa_conf_errors_to_err(&errs, &err), -1);
    assert_non_null(strstr(err.msg, "cannot open"));
    capsa_conf_errors_free(&errs);
}

static void test_kind_flags(void **state)
{
    assert_int_equal(capsa_conf_kind_from_flag("--conf"), CAPSA_CONF_ROOT);
    assert_int_equal(capsa_conf_kind_from_flag("--script-conf"), CAPSA_CONF_SCRIPT);
    assert_int_equal(capsa_conf_kind_from_flag("--nope"), -1);
    assert_string_equal(capsa_conf_kind_flag(CAPSA_CONF_NET), "--net-conf");
}

static void test_cli_override_lists(void **state)
{
    json_t *cli =
        json_pack("{s:s,s:[{s:s,s:i,s:i}],s:[{s:{s:s}}],s:{s:[{s:i,s:i}]}}", "name", "t", "rlimits",
                  "resource", "Nofile", "soft", 1, "hard", 2, "patches", "Remove", "path", "/z",
                  "network", "ports", "host_port", 7000, "guest_port", 70);
    struct capsa_conf_file f = {CAPSA_CONF_ROOT, "t.yaml"};
    capsa_conf_errors errs = {0};
    json_t *out = NULL;

    write_file("t.yaml", IMG "rlimits: [{resource: nofile, soft: 5}, {resource: core, soft: 0}]\n"
                             "patches: [{remove: {path: /y}}]\nports: [\"8000:80\"]\n");
    assert_int_equal(load(&f, 1, NULL, cli, &out, &errs), 0);
    assert_int_equal(json_array_size(json_object_get(out, "rlimits")), 2);
    assert_int_equal(iget(out, "rlimits.0.soft"), 1);
    assert_string_equal(sget(out, "patches.1.Remove.path"), "/z");
    assert_int_equal(iget(out, "network.ports.1.host_port"), 7000);
    json_decref(out);
    json_decref(cli);
}

/* ---- config.json ----------------------------------------------------------------------- */

static int global_with(const char *text, json_t **out, capsa_err *err)
{
    char home[PATH_MAX * 2];
    snprintf(home, sizeof(home), "%s/home", tmp);
    mkdir_rel("home");
    setenv("CAPSA_HOME", home, 1);
    if (text)
        write_file("home/config.json", text);
    else {
        char p[PATH_MAX * 3];
        snprintf(p, sizeof(p), "%s/config.json", home);
        unlink(p);
    }
    return capsa_global_config_load(out, err);
}

static void test_global_config(void **state)
{
    json_t *g = NULL;
    capsa_err err = {0};
    static const struct {
        const char *json, *err;
    } bad[] = {
        {"{\"database\": {}}", "database: unknown field (capsa accepts: home, log_level"},
        {"{\"sandbox_defaults\": {\"oci\": {}}}", "sandbox_defaults.oci: unknown field"},
        {"{\"sandbox_defaults\": {\"cpus\": 0}}", "sandbox_defaults.cpus: must be between 1"},
        {"{\"sandbox_defaults\": {\"memory_mib\": \"1G\"}}",
         "sandbox_defaults.memory_mib: must be"},
        {"{\"sandbox_defaults\": {\"workdir\": \"rel\"}}", "sandbox_defaults.workdir"},
        {"{\"log_level\": \"loud\"}", "log_level: must be one of"},
        {"{\"home\": \"rel\"}", "home: must be an absolute path"},
        {"{\"a\": 1, \"a\": 2}", "duplicate"},
        {"{\"registries\": {\"hosts\": {\"r.io\": {\"auth\": {\"username\": \"u\"}}}}}",
         "give exactly one of store, password_env, secret_name"},
        {"{\"registries\": {\"hosts\": {\"r.io\": {\"auth\": {\"store\": \"file\"}}}}}",
         "store: must be \"keyring\""},
        {"{\"registries\": {\"mirrors\": []}}", "registries.mirrors: unknown field"},
        {"[1]", "must be an object"},
        {"{", "config.json"},
    };

    assert_int_equal(global_with(NULL, &g, &err), 0);
    assert_int_equal(json_object_size(g), 0);
    json_decref(g);
    assert_int_equal(global_with("{\"home\": \"/h\", \"log_level\": \"debug\", "
                                 "\"sandbox_defaults\": {\"cpus\": 2, \"memory_mib\": 1024, "
                                 "\"shell\": \"/bin/bash\", \"workdir\": \"/w\", "
                                 "\"metrics_sample_interval_ms\": 0, "
                                 "\"disable_metrics_sample\": true}, "
                                 "\"registries\": {\"ca_certs\": \"/etc/ca.pem\", \"hosts\": "
                                 "{\"r.io\": {\"insecure\": true, \"auth\": {\"username\": "
                                 "\"u\", \"password_env\": \"TOK\"}}}}}",
                                 &g, &err),
                     0);
    assert_true(json_is_true(json_object_get(
        json_object_get(json_object_get(json_object_get(g, "registries"), "hosts"), "r.io"),
        "insecure")));
    /* the defaults feed a load */
    {
        json_t *cli = json_pack("{s:s}", "name", "t"), *out = NULL;
        struct capsa_conf_file f = {CAPSA_CONF_ROOT, "t.yaml"};
        capsa_conf_errors errs = {0};
        write_file("t.yaml", IMG);
        assert_int_equal(load(&f, 1, g, cli, &out, &errs), 0);
        assert_int_equal(iget(out, "resources.memory_mib"), 1024);
        assert_int_equal(iget(out, "runtime.metrics_sample_interval_ms"), 0);
        assert_true(json_is_true(
            json_object_get(json_object_get(out, "runtime"), "disable_metrics_sample")));
        json_decref(out);
        json_decref(cli);
    }
    json_decref(g);
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        g = NULL;
        memset(&err, 0, sizeof(err));
        if (global_with(bad[i].json, &g, &err) != -1 || !strstr(err.msg, bad[i].err)) {
            fprintf(stderr, "# config.json %s: got '%s', want '%s'\n", bad[i].json, err.msg,
                    bad[i].err);
            fail();
        }
        assert_null(g);
    }
    unsetenv("CAPSA_HOME");
}

static int setup(void **state)
{
    snprintf(tmp, sizeof(tmp), "/tmp/capsa-test-conf-XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    /* resolve symlinks so expected paths match the module's realpath'd directories */
    char real[PATH_MAX];
    if (!realpath(tmp, real))
        return -1;
    snprintf(tmp, sizeof(tmp), "%s", real);
    unsetenv("DEFINITELY_NOT_SET_42");
    return 0;
}

static int teardown(void **state)
{
    return capsa_rm_rf(tmp, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_full_schema),
        cmocka_unit_test(test_literal_dollar),
        cmocka_unit_test(test_network_profiles),
        cmocka_unit_test(test_image_paths),
        cmocka_unit_test(test_relative_paths_per_file),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_scoped_files),
        cmocka_unit_test(test_all_errors_reported),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_kind_flags),
        cmocka_unit_test(test_cli_override_lists),
        cmocka_unit_test(test_global_config),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
