/* cmd_spec.c - `capsa spec`: check and normalize wire documents (SandboxSpec and the other seed
 * types). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/cleanup.h"
#include "conf/conf.h"
#include "spec/spec.h"

#define SPEC_FILE_MAX (16u * 1024 * 1024)

static void spec_usage(FILE *out)
{
    fprintf(out,
            "Usage: capsa spec check [--type TYPE] [--format json|compact] FILE|-\n"
            "       capsa spec types\n"
            "       capsa spec from-yaml [--conf FILE]... [--net-conf FILE]... [--name NAME] ...\n"
            "\n"
            "Check a JSON document against one of capsa's wire types and print its normalized\n"
            "form.\n"
            "\n"
            "capsa spec check reads FILE (or standard input for -), parses it as JSON and\n"
            "validates it as TYPE (default SandboxSpec). When it is valid, the normalized\n"
            "document is written to standard output and the exit status is 0. Normalizing fills\n"
            "in every default (resources.cpus 1, resources.memory_mib 512, pull_policy\n"
            "\"IfMissing\", security_profile \"default\", network.enabled true, mount options\n"
            "false, stat_virtualization \"strict\", ...), writes fields in the seed's order,\n"
            "sorts map keys, canonicalizes guest paths and orders mounts parent before child.\n"
            "Checking a normalized document again prints it unchanged, byte for byte.\n"
            "\n"
            "When the document is invalid, every problem found is printed to standard error,\n"
            "one per line, as\n"
            "    capsa: error: spec: PATH: MESSAGE\n"
            "where PATH locates the value (e.g. mounts[2].guest, labels[\"app\"]), and the exit\n"
            "status is 1. Unknown fields, wrong types, out-of-range numbers, unknown enum values\n"
            "(the message lists the accepted ones), malformed names and paths, duplicate mount\n"
            "paths, host ports, env keys and similar are all reported.\n"
            "\n"
            "Options:\n"
            "  -t, --type TYPE      the wire type to check against (default SandboxSpec);\n"
            "                       `capsa spec types` lists them all\n"
            "  -f, --format FORMAT  json (pretty, 2-space indent; default) or compact (one line)\n"
            "  -h, --help           show this help\n"
            "\n"
            "capsa spec types prints the accepted type names, one per line.\n"
            "\n"
            "capsa spec from-yaml loads sandbox YAML config files (the --conf, --net-conf,\n"
            "--resource-conf, --runtime-conf, --fs-conf, --secret-conf and --script-conf files\n"
            "of capsa run, applied left to right over $CAPSA_HOME/config.json's\n"
            "sandbox_defaults) and prints the resulting normalized SandboxSpec; --name NAME sets\n"
            "its name (default \"sandbox\"), --format as for check. Errors are printed as\n"
            "    capsa: error: conf: FILE:LINE:COL: PATH: MESSAGE\n"
            "See docs/config.md for the YAML schema.\n"
            "\n"
            "Exit status: 0 valid, 1 invalid or unreadable document, 2 usage error.\n"
            "\n"
            "Examples:\n"
            "  capsa spec check sandbox.json\n"
            "  echo '{\"name\":\"web\",\"image\":{\"Oci\":{\"reference\":\"nginx\"}}}' | capsa "
            "spec check -\n"
            "  capsa spec check --type VolumeSpec --format compact volume.json\n"
            "\n"
            "See docs/spec.md for every default and validation rule.\n");
}

/* Read all of fd (at most SPEC_FILE_MAX bytes). */
static char *read_all(int fd, size_t *len)
{
    _cleanup_free_ char *buf = NULL;
    size_t cap = 0, n = 0;

    for (;;) {
        ssize_t r;
        if (n == cap) {
            char *nb;
            if (cap > SPEC_FILE_MAX) {
                errno = EFBIG;
                return NULL;
            }
            cap = cap ? cap * 2 : 65536;
            nb = realloc(buf, cap + 1);
            if (!nb)
                return NULL;
            buf = nb;
        }
        r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return NULL;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (n > SPEC_FILE_MAX) {
        errno = EFBIG;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return steal_pointer(&buf);
}

static int print_errors(const capsa_spec_errors *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        fprintf(stderr, "capsa: error: spec: %s\n", errs->items[i]);
    if (errs->dropped)
        fprintf(stderr, "capsa: error: spec: (and %zu more errors)\n", errs->dropped);
    return 1;
}

static int spec_check_cmd(int argc, char **argv)
{
    const char *type = "SandboxSpec", *format = "json", *file = NULL;
    _cleanup_free_ char *text = NULL, *out = NULL;
    capsa_spec_errors errs = {0};
    json_t *doc = NULL, *norm = NULL;
    size_t len = 0;
    int rc;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            spec_usage(stdout);
            return 0;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--type") || !strcmp(a, "-f") ||
                   !strcmp(a, "--format")) {
            if (i + 1 >= argc) {
                cli_fail("spec check: %s needs a value (see capsa spec --help)", a);
                return 2;
            }
            if (a[1] == 't' || a[2] == 't')
                type = argv[++i];
            else
                format = argv[++i];
        } else if (!strncmp(a, "--type=", 7)) {
            type = a + 7;
        } else if (!strncmp(a, "--format=", 9)) {
            format = a + 9;
        } else if (a[0] == '-' && a[1]) {
            cli_fail("spec check: unknown option %s (see capsa spec --help)", a);
            return 2;
        } else if (file) {
            cli_fail("spec check: only one FILE may be given (got %s and %s)", file, a);
            return 2;
        } else {
            file = a;
        }
    }
    if (!file) {
        cli_fail("spec check: missing FILE (use - for standard input; see capsa spec --help)");
        return 2;
    }
    if (strcmp(format, "json") && strcmp(format, "compact")) {
        cli_fail("spec check: --format must be json or compact (got %s)", format);
        return 2;
    }
    if (!capsa_spec_type_known(type)) {
        cli_fail("spec check: unknown type '%s' (see capsa spec types)", type);
        return 2;
    }

    if (!strcmp(file, "-")) {
        text = read_all(STDIN_FILENO, &len);
    } else {
        _cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC);
        text = fd >= 0 ? read_all(fd, &len) : NULL;
    }
    if (!text)
        return cli_fail("spec: cannot read %s: %s", file,
                        errno == EFBIG ? "larger than 16 MiB" : strerror(errno));

    if (capsa_spec_parse(text, len, &doc, &errs) < 0 ||
        capsa_spec_check(type, doc, &norm, &errs) < 0) {
        rc = print_errors(&errs);
        capsa_spec_errors_free(&errs);
        json_decref(doc);
        return rc;
    }
    out = capsa_spec_dump(norm, !strcmp(format, "json"));
    json_decref(doc);
    json_decref(norm);
    if (!out)
        return cli_fail("spec: out of memory");
    printf("%s\n", out);
    if (fflush(stdout) != 0)
        return cli_fail("spec: writing the output: %s", strerror(errno));
    return 0;
}

/* `capsa spec from-yaml`: YAML config files -> normalized SandboxSpec. */
static int spec_from_yaml_cmd(int argc, char **argv)
{
    _cleanup_free_ struct capsa_conf_file *files = calloc((size_t)argc, sizeof(*files));
    const char *name = "sandbox", *format = "json";
    capsa_conf_errors errs = {0};
    json_t *global = NULL, *cli = NULL, *spec = NULL;
    _cleanup_free_ char *out = NULL;
    capsa_err err = {0};
    size_t n = 0;
    int rc;

    if (!files)
        return cli_fail("spec: out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *eq = strchr(a, '=');
        _cleanup_free_ char *flag = strndup(a, eq ? (size_t)(eq - a) : strlen(a));
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
        int kind = flag ? capsa_conf_kind_from_flag(flag) : -1;

        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            spec_usage(stdout);
            return 0;
        }
        if (kind < 0 && (!flag || (strcmp(flag, "--name") && strcmp(flag, "-n") &&
                                   strcmp(flag, "--format") && strcmp(flag, "-f")))) {
            cli_fail("spec from-yaml: unknown argument %s (see capsa spec --help)", a);
            return 2;
        }
        if (!val) {
            cli_fail("spec from-yaml: %s needs a value (see capsa spec --help)", a);
            return 2;
        }
        if (!eq)
            i++;
        if (kind >= 0)
            files[n++] = (struct capsa_conf_file){.kind = (enum capsa_conf_kind)kind, .path = val};
        else if (flag[1] == 'n' || flag[2] == 'n')
            name = val;
        else
            format = val;
    }
    if (strcmp(format, "json") && strcmp(format, "compact")) {
        cli_fail("spec from-yaml: --format must be json or compact (got %s)", format);
        return 2;
    }
    if (capsa_global_config_load(&global, &err) < 0)
        return cli_fail("conf: %s", err.msg);
    cli = json_pack("{s:s}", "name", name);
    struct capsa_conf_sources src = {.files = files, .n_files = n, .global = global};
    rc = capsa_conf_load(&src, cli, &spec, &errs);
    json_decref(global);
    json_decref(cli);
    if (rc < 0) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "capsa: error: conf: %s\n", errs.items[i]);
        if (errs.dropped)
            fprintf(stderr, "capsa: error: conf: (and %zu more errors)\n", errs.dropped);
        capsa_conf_errors_free(&errs);
        return 1;
    }
    out = capsa_spec_dump(spec, !strcmp(format, "json"));
    json_decref(spec);
    if (!out)
        return cli_fail("spec: out of memory");
    printf("%s\n", out);
    if (fflush(stdout) != 0)
        return cli_fail("spec: writing the output: %s", strerror(errno));
    return 0;
}

int cmd_spec(int argc, char **argv)
{
    if (argc < 2) {
        spec_usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        spec_usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "check"))
        return spec_check_cmd(argc - 1, argv + 1);
    if (!strcmp(argv[1], "from-yaml"))
        return spec_from_yaml_cmd(argc - 1, argv + 1);
    if (!strcmp(argv[1], "types")) {
        for (const char *const *t = capsa_spec_type_names(); *t; t++)
            printf("%s\n", *t);
        return 0;
    }
    cli_fail(
        "spec: unknown subcommand '%s' (expected check, types or from-yaml; see capsa spec --help)",
        argv[1]);
    return 2;
}
