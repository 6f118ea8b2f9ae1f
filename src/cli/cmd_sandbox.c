/* cmd_sandbox.c - named sandbox verbs: create, start, stop, restart, rm, ls, ps, inspect, exec,
 * ping, touch, `run --name`/`run -d`, and the hidden `__supervisor` entry point. Thin: the work
 * is in src/supervisor/ (sandbox.h, client.h). Output formats: docs/lifecycle.md. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/cli_exec.h"
#include "conf/conf.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/units.h"
#include "lib/exec.h"
#include "spec/spec.h"
#include "store/store.h"
#include "supervisor/client.h"
#include "supervisor/sandbox.h"
#include "supervisor/supervisor.h"

#define MAX_ENV     256
#define MAX_LABELS  64
#define MAX_CONF    64
#define MAX_SCRIPTS 64
#define MAX_NAMES   1024

static void store_closep(struct capsa_store **s)
{
    capsa_store_close(*s);
}
#define _cleanup_store_ _cleanup_(store_closep)

static int open_store(struct capsa_store **st)
{
    capsa_err err = {0};
    if (capsa_store_open(NULL, st, &err) < 0 || capsa_sandbox_reap(*st, &err) < 0)
        return cli_fail("%s", err.msg);
    return 0;
}

/* ---- small parsers ----------------------------------------------------------------------- */

static int parse_label(const char *s, struct capsa_store_label *l, bool need_value)
{
    const char *eq = strchr(s, '=');
    capsa_err err = {0};
    static char keys[MAX_LABELS][CAPSA_LABEL_KEY_MAX + 1];
    static size_t nkeys;
    size_t klen = eq ? (size_t)(eq - s) : strlen(s);

    if (klen == 0 || klen > CAPSA_LABEL_KEY_MAX || nkeys >= MAX_LABELS)
        return cli_fail("--label '%s': expected KEY=VALUE with a key of 1 to %d bytes", s,
                        CAPSA_LABEL_KEY_MAX);
    memcpy(keys[nkeys], s, klen);
    keys[nkeys][klen] = '\0';
    l->key = keys[nkeys++];
    l->value = eq ? (char *)eq + 1 : (need_value ? (char *)"" : NULL);
    if (capsa_store_check_label(l->key, l->value ? l->value : "", &err) < 0)
        return cli_fail("--label '%s': %s", s, err.msg);
    return 0;
}

static void iso_time(int64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

static json_t *json_time(int64_t ms)
{
    char buf[64];
    if (ms <= 0)
        return json_null();
    iso_time(ms, buf, sizeof(buf));
    return json_string(buf);
}

static json_t *config_of(const struct capsa_store_sandbox *sb)
{
    json_t *j = json_loads(sb->config_json, 0, NULL);
    return j ? j : json_object();
}

/* "IMAGE" column: the bind directory or the OCI reference. */
static const char *image_of(json_t *cfg)
{
    json_t *img = json_object_get(cfg, "image");
    const char *s = json_string_value(json_object_get(img, "Bind"));
    if (!s)
        s = json_string_value(json_object_get(json_object_get(img, "Oci"), "reference"));
    if (!s)
        s = json_string_value(json_object_get(json_object_get(img, "DiskImage"), "path"));
    return s ? s : "-";
}

static json_t *labels_json(const struct capsa_store_sandbox *sb)
{
    json_t *o = json_object();
    for (size_t i = 0; i < sb->n_labels; i++)
        json_object_set_new(o, sb->labels[i].key, json_string(sb->labels[i].value));
    return o;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s)
        printf("%s\n", s);
    free(s);
}

/* ---- exec plumbing (shared by exec and run --name) ---------------------------------------- */

struct exec_cli {
    char *env[MAX_ENV + 1];
    size_t nenv;
    const char *workdir, *user;
    int tty; /* -1 auto */
    uint64_t timeout_ms;
    json_t *rlimits;
    bool quiet;
    char **cmd;
};

static int exec_over(struct capsa_ctl_conn *conn, struct exec_cli *o, const char *name, int *status)
{
    char verb[200], note[240];
    struct cli_exec x = {.cmd = o->cmd,
                         .env = o->env,
                         .workdir = o->workdir,
                         .user = o->user,
                         .rlimits = o->rlimits,
                         .tty = o->tty,
                         .timeout_ms = o->timeout_ms,
                         .quiet = o->quiet};

    o->env[o->nenv] = NULL;
    snprintf(verb, sizeof(verb), "exec in %s", name);
    snprintf(note, sizeof(note), "the command was killed, sandbox %s keeps running", name);
    return cli_exec_session(&conn->ch, &x, verb, note, NULL, status);
}

/* ---- create / run --name ------------------------------------------------------------------ */

struct create_cli {
    const char *name, *rootfs, *spec_file, *hostname;
    /* OCI image roots */
    const char *image, *pull, *ca_certs;
    bool insecure, root_disk_set;
    struct capsa_root_disk root_disk;
    int cpus;
    uint64_t memory_mib, max_duration_ms, idle_timeout_ms;
    struct capsa_store_label labels[MAX_LABELS];
    size_t nlabels;
    bool replace, detach, replace_timeout_set;
    int replace_timeout_ms;
    struct exec_cli x;
    /* --conf and the scoped --*-conf files, left to right; --script NAME=BODY */
    struct capsa_conf_file conf[MAX_CONF];
    size_t nconf;
    const char *scripts[MAX_SCRIPTS];
    size_t nscripts;
};

static const char create_help[] =
    "Usage: capsa create [OPTIONS] ROOTFS|IMAGE\n"
    "       capsa create [OPTIONS] --rootfs DIR | --spec FILE.json\n"
    "       capsa run --name NAME [OPTIONS] ROOTFS -- COMMAND [ARG...]\n"
    "       capsa run --name NAME [OPTIONS] IMAGE [-- COMMAND [ARG...]]\n"
    "       capsa run -d [--name NAME] [OPTIONS] ROOTFS -- COMMAND [ARG...]\n"
    "\n"
    "ROOTFS is a host directory or a disk image file; IMAGE an OCI reference (run without\n"
    "COMMAND runs its Entrypoint + Cmd).\n"
    "create makes a named sandbox whose root is the host directory ROOTFS, boots it and\n"
    "leaves it running; its name is printed. run --name does the same when the sandbox does\n"
    "not exist (starts it when stopped, uses it when running) and runs COMMAND in it; a\n"
    "sandbox the run started is attached: it is stopped when COMMAND ends (or capsa is\n"
    "killed), one that was running stays running. With -d the sandbox stays running, the\n"
    "command runs in the background (output in $CAPSA_HOME/sandboxes/NAME/exec.log) and the\n"
    "name is printed.\n"
    "\n"
    "Options:\n"
    "  -n, --name NAME        sandbox name, [A-Za-z0-9][A-Za-z0-9._-]{0,127} (default: random)\n"
    "      --rootfs DIR       host directory to boot as the root filesystem\n"
    "      --spec FILE        seed SandboxSpec JSON; flags override its fields\n"
    "      --pull POLICY      (IMAGE) if-missing (default), always, never; the image is\n"
    "                         pinned to its digest at create\n"
    "      --insecure         (IMAGE) plain http / unverified TLS for the registry\n"
    "      --ca-certs PEM     (IMAGE) extra CA certificates for the registry\n"
    "      --root-disk SPEC   (IMAGE) upper: SIZE (sandbox's upper.ext4), tmpfs[:SIZE], PATH\n"
    "  -c, --cpus N           virtual CPUs (default 1)\n"
    "  -m, --memory SIZE      guest memory, e.g. 128M, 1G (default 512M)\n"
    "  -e, --env K=V          environment variable (repeatable)\n"
    "  -w, --workdir DIR      default working directory (absolute)\n"
    "  -u, --user USER        default USER[:GROUP] or UID[:GID]\n"
    "  -H, --hostname NAME    guest hostname (default: derived from the name)\n"
    "      --label K=V        label (repeatable)\n"
    "      --max-duration DUR stop the sandbox DUR after it starts (30s, 5m, 1h)\n"
    "      --idle-timeout DUR stop it after DUR without activity and without running commands\n"
    "      --replace          (create) remove an existing sandbox of that name first\n"
    "      --replace-with-timeout DUR\n"
    "                         (create) --replace, giving the old sandbox DUR to stop\n"
    "                         gracefully before it is killed (0: kill at once; default 10s)\n"
    "  -d, --detach           (run) run the command in the background, print the name\n"
    "  -t, --tty / --no-tty   (run) pseudo-terminal for the command (default: auto)\n"
    "      --timeout DUR      (run) kill the command after DUR; exit 124\n"
    "      --rlimit R=S[:H]   (run) resource limit for the command\n"
    "  -q, --quiet            print nothing but the command's own output\n"
    "      --conf FILE        sandbox YAML config (docs/config.md); repeatable, applied left\n"
    "                         to right over $CAPSA_HOME/config.json; flags override it\n"
    "      --net-conf, --resource-conf, --runtime-conf, --fs-conf, --secret-conf,\n"
    "      --script-conf FILE scoped YAML config files (repeatable, in order with --conf)\n"
    "      --script NAME=BODY script installed at /.capsa/scripts/NAME (on PATH; repeatable)\n";

static int parse_create(int argc, char **argv, struct create_cli *o, bool is_run)
{
    enum {
        OPT_ROOTFS = 256,
        OPT_SPEC,
        OPT_LABEL,
        OPT_MAXDUR,
        OPT_IDLE,
        OPT_REPLACE,
        OPT_REPLACE_TIMEOUT,
        OPT_NO_TTY,
        OPT_TIMEOUT,
        OPT_RLIMIT,
        OPT_ACCEL,
        OPT_PULL,
        OPT_INSECURE,
        OPT_CA_CERTS,
        OPT_ROOT_DISK,
        OPT_SCRIPT,
        OPT_CONF0, /* + enum capsa_conf_kind */
    };
    static const struct option longopts[] = {
        {"name", required_argument, NULL, 'n'},
        {"rootfs", required_argument, NULL, OPT_ROOTFS},
        {"spec", required_argument, NULL, OPT_SPEC},
        {"cpus", required_argument, NULL, 'c'},
        {"memory", required_argument, NULL, 'm'},
        {"env", required_argument, NULL, 'e'},
        {"workdir", required_argument, NULL, 'w'},
        {"user", required_argument, NULL, 'u'},
        {"hostname", required_argument, NULL, 'H'},
        {"label", required_argument, NULL, OPT_LABEL},
        {"max-duration", required_argument, NULL, OPT_MAXDUR},
        {"idle-timeout", required_argument, NULL, OPT_IDLE},
        {"replace", no_argument, NULL, OPT_REPLACE},
        {"replace-with-timeout", required_argument, NULL, OPT_REPLACE_TIMEOUT},
        {"detach", no_argument, NULL, 'd'},
        {"tty", no_argument, NULL, 't'},
        {"no-tty", no_argument, NULL, OPT_NO_TTY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"rlimit", required_argument, NULL, OPT_RLIMIT},
        {"accel", required_argument, NULL, OPT_ACCEL},
        {"pull", required_argument, NULL, OPT_PULL},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"ca-certs", required_argument, NULL, OPT_CA_CERTS},
        {"root-disk", required_argument, NULL, OPT_ROOT_DISK},
        {"script", required_argument, NULL, OPT_SCRIPT},
        {"conf", required_argument, NULL, OPT_CONF0 + CAPSA_CONF_ROOT},
        {"net-conf", required_argument, NULL, OPT_CONF0 + CAPSA_CONF_NET},
        {"resource-conf", required_argument, NULL, OPT_CONF0 + CAPSA_CONF_RESOURCE},
        {"runtime-conf", required_argument, NULL, OPT_CONF0 + CAPSA_CONF_RUNTIME},
        {"fs-conf", required_argument, NULL, OPT_CONF0 + CAPSA_CONF_FS},
        {"secret-conf", required_argument, NULL, OPT_CONF0 + CAPSA_CONF_SECRET},
        {"script-conf", required_argument, NULL, OPT_CONF0 + CAPSA_CONF_SCRIPT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    const char *verb = is_run ? "run" : "create";
    capsa_err err = {0};
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+n:c:m:e:w:u:H:dtqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            if (capsa_store_check_name("--name", optarg, &err) < 0)
                return cli_fail("%s", err.msg);
            o->name = optarg;
            break;
        case OPT_ROOTFS:
            o->rootfs = optarg;
            break;
        case OPT_SPEC:
            o->spec_file = optarg;
            break;
        case 'c':
            if (cli_opt_cpus(optarg, &o->cpus))
                return 1;
            break;
        case 'm':
            if (cli_opt_memory(optarg, &o->memory_mib))
                return 1;
            break;
        case 'e':
            if (cli_opt_env(optarg, o->x.env, &o->x.nenv, MAX_ENV))
                return 1;
            break;
        case 'w':
            if (cli_opt_workdir(optarg, &o->x.workdir))
                return 1;
            break;
        case 'u':
            if (cli_opt_user(optarg, &o->x.user))
                return 1;
            break;
        case 'H':
            if (cli_opt_hostname(optarg, &o->hostname))
                return 1;
            break;
        case OPT_LABEL:
            if (o->nlabels >= MAX_LABELS)
                return cli_fail("--label: at most %d labels", MAX_LABELS);
            if (parse_label(optarg, &o->labels[o->nlabels++], true) != 0)
                return 1;
            break;
        case OPT_MAXDUR:
        case OPT_IDLE: {
            uint64_t ms;
            if (capsa_parse_duration_ms(optarg, &ms, &err) < 0)
                return cli_fail("--%s: %s", c == OPT_MAXDUR ? "max-duration" : "idle-timeout",
                                err.msg);
            if (ms == 0)
                return cli_fail("--%s '%s': must be greater than zero",
                                c == OPT_MAXDUR ? "max-duration" : "idle-timeout", optarg);
            *(c == OPT_MAXDUR ? &o->max_duration_ms : &o->idle_timeout_ms) = ms;
            break;
        }
        case OPT_REPLACE:
            if (is_run)
                return cli_fail("run: --replace is a create option");
            o->replace = true;
            break;
        case OPT_REPLACE_TIMEOUT: {
            uint64_t ms;
            if (is_run)
                return cli_fail("run: --replace-with-timeout is a create option");
            if (capsa_parse_duration_ms(optarg, &ms, &err) < 0)
                return cli_fail("--replace-with-timeout: %s", err.msg);
            if (ms > 3600000)
                return cli_fail("--replace-with-timeout '%s': at most 1h", optarg);
            o->replace = o->replace_timeout_set = true;
            o->replace_timeout_ms = (int)ms;
            break;
        }
        case 'd':
            if (!is_run)
                return cli_fail("create: -d/--detach is a run option (create always detaches)");
            o->detach = true;
            break;
        case 't':
            o->x.tty = 1;
            break;
        case OPT_NO_TTY:
            o->x.tty = 0;
            break;
        case OPT_TIMEOUT:
            if (cli_opt_timeout(optarg, &o->x.timeout_ms))
                return 1;
            break;
        case OPT_RLIMIT:
            if (cli_opt_rlimit(optarg, o->x.rlimits))
                return 1;
            break;
        case OPT_ACCEL:
            break; /* the supervisor resolves the accelerator (auto) */
        case OPT_SCRIPT: {
            const char *eq = strchr(optarg, '=');
            char sname[160];
            if (!eq || eq == optarg || (size_t)(eq - optarg) >= sizeof(sname))
                return cli_fail("--script '%.64s': expected NAME=BODY", optarg);
            snprintf(sname, sizeof(sname), "%.*s", (int)(eq - optarg), optarg);
            if (!capsa_sandbox_script_name_ok(sname))
                return cli_fail("--script '%s': a script name is 1 to 128 characters of "
                                "[A-Za-z0-9._-]",
                                sname);
            if (o->nscripts >= MAX_SCRIPTS)
                return cli_fail("--script: at most %d scripts", MAX_SCRIPTS);
            o->scripts[o->nscripts++] = optarg;
            break;
        }
        case OPT_CONF0 + CAPSA_CONF_ROOT:
        case OPT_CONF0 + CAPSA_CONF_NET:
        case OPT_CONF0 + CAPSA_CONF_RESOURCE:
        case OPT_CONF0 + CAPSA_CONF_RUNTIME:
        case OPT_CONF0 + CAPSA_CONF_FS:
        case OPT_CONF0 + CAPSA_CONF_SECRET:
        case OPT_CONF0 + CAPSA_CONF_SCRIPT:
            if (o->nconf >= MAX_CONF)
                return cli_fail("%s: at most %d config files",
                                capsa_conf_kind_flag((enum capsa_conf_kind)(c - OPT_CONF0)),
                                MAX_CONF);
            o->conf[o->nconf++] = (struct capsa_conf_file){
                .kind = (enum capsa_conf_kind)(c - OPT_CONF0), .path = optarg};
            break;
        case OPT_PULL: {
            enum capsa_pull_policy pp;
            if (capsa_pull_policy_parse(optarg, &pp, &err) < 0)
                return cli_fail("--pull: %s", err.msg);
            o->pull = pp == CAPSA_PULL_ALWAYS  ? "Always"
                      : pp == CAPSA_PULL_NEVER ? "Never"
                                               : "IfMissing";
            break;
        }
        case OPT_INSECURE:
            o->insecure = true;
            break;
        case OPT_CA_CERTS:
            o->ca_certs = optarg;
            break;
        case OPT_ROOT_DISK:
            if (capsa_root_disk_parse(optarg, &o->root_disk, &err) < 0)
                return cli_fail("--root-disk: %s", err.msg);
            o->root_disk_set = true;
            break;
        case 'q':
            o->x.quiet = true;
            break;
        case 'h':
            fputs(create_help, stdout);
            return -1;
        default:
            return cli_fail("%s: unknown or incomplete option '%s' (see capsa %s --help)", verb,
                            argv[optind - 1], verb);
        }
    }
    /* getopt consumed a "--" right after the options: no ROOTFS/IMAGE (e.g. with --spec) */
    if (optind < argc && strcmp(argv[optind], "--") != 0 &&
        !(optind > 1 && !strcmp(argv[optind - 1], "--"))) {
        const char *img = argv[optind++];
        if (o->rootfs)
            return cli_fail("%s: give the root either as --rootfs DIR or as ROOTFS, not both",
                            verb);
        if (img[0] != '/' && img[0] != '.')
            o->image = img; /* an OCI reference */
        else
            o->rootfs = img;
    }
    if (optind < argc && strcmp(argv[optind], "--") == 0)
        optind++;
    if (is_run) {
        if (optind < argc)
            o->x.cmd = argv + optind;
        else if (!o->image && !o->spec_file)
            return cli_fail("run: no command given (capsa run --name NAME ROOTFS -- COMMAND)");
    } else if (optind < argc) {
        return cli_fail("create: unexpected argument '%s' (create takes no command)", argv[optind]);
    }
    return 0;
}

static json_t *obj_member(json_t *doc, const char *key)
{
    json_t *o = json_object_get(doc, key);
    if (!json_is_object(o)) {
        o = json_object();
        json_object_set_new(doc, key, o);
    }
    return o;
}

/* The SandboxSpec seed: --spec FILE (or {}) with the flags applied over it. */
static json_t *build_spec(struct create_cli *o)
{
    capsa_spec_errors errs = {0};
    capsa_err err = {0};
    json_t *doc = NULL, *env;

    if (o->spec_file) {
        _cleanup_fclose_ FILE *f = strcmp(o->spec_file, "-") ? fopen(o->spec_file, "re") : NULL;
        FILE *in = strcmp(o->spec_file, "-") ? f : stdin;
        char *buf = NULL;
        size_t len = 0, cap = 0, n;
        if (!in) {
            cli_fail("--spec %s: %s", o->spec_file, strerror(errno));
            return NULL;
        }
        do {
            if (len + 65536 > cap) {
                char *nb = realloc(buf, cap = len + 65536 + cap);
                if (!nb) {
                    free(buf);
                    cli_fail("--spec: out of memory");
                    return NULL;
                }
                buf = nb;
            }
            n = fread(buf + len, 1, cap - len, in);
            len += n;
        } while (n > 0 && len < (16u << 20));
        if (capsa_spec_parse(buf ? buf : "", len, &doc, &errs) < 0) {
            free(buf);
            capsa_spec_errors_to_err(&errs, &err);
            capsa_spec_errors_free(&errs);
            cli_fail("--spec %s: %s", o->spec_file, err.msg);
            return NULL;
        }
        free(buf);
        if (!json_is_object(doc)) {
            json_decref(doc);
            cli_fail("--spec %s: expected a JSON object (SandboxSpec)", o->spec_file);
            return NULL;
        }
    } else {
        doc = json_object();
    }
    if (o->root_disk_set && !o->image) {
        json_decref(doc);
        cli_fail("--root-disk applies to images only");
        return NULL;
    }
    if (o->rootfs) {
        struct stat st;
        if (stat(o->rootfs, &st) == 0 && !S_ISDIR(st.st_mode)) {
            /* a disk image file: the format from its extension (raw by default) */
            const char *dot = strrchr(o->rootfs, '.');
            const char *fmt = dot && !strcmp(dot, ".qcow2")  ? "Qcow2"
                              : dot && !strcmp(dot, ".vmdk") ? "Vmdk"
                                                             : "Raw";
            json_object_set_new(
                doc, "image",
                json_pack("{s:{s:s, s:s}}", "DiskImage", "path", o->rootfs, "format", fmt));
        } else {
            json_object_set_new(doc, "image", json_pack("{s:s}", "Bind", o->rootfs));
        }
    }
    if (o->image) {
        json_t *oci = json_pack("{s:s}", "reference", o->image);
        const struct capsa_root_disk *rd = &o->root_disk;
        if (o->root_disk_set && rd->kind == CAPSA_ROOT_DISK_MANAGED)
            json_object_set_new(
                oci, "root_disk",
                json_pack("{s:s, s:I}", "kind", "managed", "size_mib",
                          (json_int_t)(rd->size_mib ? rd->size_mib : CAPSA_ROOT_DISK_DEFAULT_MIB)));
        else if (o->root_disk_set && rd->kind == CAPSA_ROOT_DISK_TMPFS)
            json_object_set_new(oci, "root_disk", json_pack("{s:s}", "kind", "tmpfs"));
        else if (o->root_disk_set)
            json_object_set_new(oci, "root_disk",
                                json_pack("{s:s, s:s, s:s}", "kind", "disk-image", "path", rd->path,
                                          "format",
                                          rd->format == CAPSA_VM_DISK_QCOW2  ? "Qcow2"
                                          : rd->format == CAPSA_VM_DISK_VMDK ? "Vmdk"
                                                                             : "Raw"));
        if (o->root_disk_set && rd->kind == CAPSA_ROOT_DISK_TMPFS && rd->size_mib)
            json_object_set_new(json_object_get(oci, "root_disk"), "size_mib",
                                json_integer((json_int_t)rd->size_mib));
        if (o->root_disk_set && rd->kind == CAPSA_ROOT_DISK_DISK_IMAGE && rd->fstype[0])
            json_object_set_new(json_object_get(oci, "root_disk"), "fstype",
                                json_string(rd->fstype));
        json_object_set_new(doc, "image", json_pack("{s:o}", "Oci", oci));
    }
    if (o->pull)
        json_object_set_new(doc, "pull_policy", json_string(o->pull));
    if (!json_object_get(doc, "image") && !o->nconf) {
        json_decref(doc);
        cli_fail("no root filesystem given (ROOTFS, --rootfs DIR or --spec FILE)");
        return NULL;
    }
    if (o->cpus)
        json_object_set_new(obj_member(doc, "resources"), "cpus", json_integer(o->cpus));
    if (o->memory_mib)
        json_object_set_new(obj_member(doc, "resources"), "memory_mib",
                            json_integer((json_int_t)o->memory_mib));
    if (o->x.workdir)
        json_object_set_new(obj_member(doc, "runtime"), "workdir", json_string(o->x.workdir));
    if (o->x.user)
        json_object_set_new(obj_member(doc, "runtime"), "user", json_string(o->x.user));
    if (o->hostname)
        json_object_set_new(obj_member(doc, "runtime"), "hostname", json_string(o->hostname));
    if (o->max_duration_ms)
        json_object_set_new(obj_member(doc, "lifecycle"), "max_duration_secs",
                            json_integer((json_int_t)((o->max_duration_ms + 999) / 1000)));
    if (o->idle_timeout_ms)
        json_object_set_new(obj_member(doc, "lifecycle"), "idle_timeout_secs",
                            json_integer((json_int_t)((o->idle_timeout_ms + 999) / 1000)));
    if (o->x.nenv) {
        env = json_object_get(doc, "env");
        if (!json_is_array(env)) {
            env = json_array();
            json_object_set_new(doc, "env", env);
        }
        for (size_t i = 0; i < o->x.nenv; i++) {
            const char *eq = strchr(o->x.env[i], '=');
            json_array_append_new(env, json_pack("{s:s#, s:s}", "key", o->x.env[i],
                                                 (int)(eq - o->x.env[i]), "value", eq + 1));
        }
    }
    return doc;
}

/* The stored SandboxSpec: $CAPSA_HOME/config.json sandbox_defaults, then the --conf files left
 * to right, then the command line (--spec and the flags) on top, checked and normalized by
 * capsa_conf_load. */
static json_t *resolve_spec(struct create_cli *o)
{
    capsa_conf_errors errs = {0};
    json_t *cli = build_spec(o), *global = NULL, *spec = NULL;
    capsa_err err = {0};
    int rc;

    if (!cli)
        return NULL;
    json_object_set_new(cli, "name", json_string(o->name ? o->name : "sandbox"));
    for (size_t i = 0; i < o->nscripts; i++) {
        const char *eq = strchr(o->scripts[i], '=');
        json_t *rt = obj_member(cli, "runtime"), *sc = json_object_get(rt, "scripts");
        if (!json_is_object(sc)) {
            sc = json_object();
            json_object_set_new(rt, "scripts", sc);
        }
        char sname[160]; /* parse_create checked the name's length */
        snprintf(sname, sizeof(sname), "%.*s", (int)(eq - o->scripts[i]), o->scripts[i]);
        json_object_set_new(sc, sname, json_string(eq + 1));
    }
    if (capsa_global_config_load(&global, &err) < 0) {
        json_decref(cli);
        cli_fail("config.json: %s", err.msg);
        return NULL;
    }
    struct capsa_conf_sources src = {.files = o->conf, .n_files = o->nconf, .global = global};
    rc = capsa_conf_load(&src, cli, &spec, &errs);
    json_decref(global);
    json_decref(cli);
    if (rc < 0) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "capsa: error: conf: %s\n", errs.items[i]);
        if (errs.dropped)
            fprintf(stderr, "capsa: error: conf: (and %zu more errors)\n", errs.dropped);
        if (!errs.count && !errs.dropped)
            cli_fail("conf: invalid sandbox configuration");
        capsa_conf_errors_free(&errs);
        return NULL;
    }
    return spec;
}

static void random_name(char *buf, size_t len)
{
    unsigned char r[4] = {0};
    FILE *f = fopen("/dev/urandom", "re");
    if (f) {
        if (fread(r, 1, sizeof(r), f) != sizeof(r))
            memset(r, 0, sizeof(r));
        fclose(f);
    }
    snprintf(buf, len, "sbx-%02x%02x%02x%02x", r[0], r[1], r[2], r[3]);
}

static void create_pull_opts(const struct create_cli *o, struct capsa_image_pull_opts *po)
{
    memset(po, 0, sizeof(*po));
    po->insecure = o->insecure;
    po->ca_certs = o->ca_certs;
    po->progress = o->x.quiet              ? CAPSA_PROGRESS_NONE
                   : isatty(STDERR_FILENO) ? CAPSA_PROGRESS_TTY
                                           : CAPSA_PROGRESS_LINES;
}

/* The default command of a sandbox booted from an OCI image: its Entrypoint + Cmd (from the
 * pinned image in the local store). */
/* The command `run` executes in sandbox NAME: the image's Entrypoint followed by OVERRIDE (or
 * by the image's Cmd when OVERRIDE is NULL), as for an ephemeral run; a sandbox without an
 * image runs OVERRIDE as given. */
static int image_command(struct capsa_store *st, const char *name, char *const *override,
                         char ***cmd, capsa_err *err)
{
    struct capsa_store_sandbox sb = {0};
    struct capsa_sandbox_spec *sp = NULL;
    struct capsa_root_disk rd, probe = {.kind = CAPSA_ROOT_DISK_TMPFS};
    struct capsa_rootfs_spec rs;
    struct capsa_rootfs r;
    capsa_spec_errors errs = {0};
    json_t *cfg = NULL;
    int ret = -1;

    if (capsa_store_sandbox_get(st, name, &sb, err) < 0)
        return -1;
    if (capsa_spec_parse(sb.config_json, strlen(sb.config_json), &cfg, &errs) < 0 ||
        capsa_sandbox_spec_load(cfg, &sp, &errs) < 0) {
        capsa_spec_errors_to_err(&errs, err);
        capsa_err_prefix(err, "stored config of %s", name);
        goto out;
    }
    if (sp->image.kind != CAPSA_IMAGE_OCI && override && override[0]) {
        size_t n = 0;
        while (override[n])
            n++;
        if (!(*cmd = calloc(n + 1, sizeof(**cmd)))) {
            capsa_err_set(err, ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < n; i++)
            if (!((*cmd)[i] = strdup(override[i]))) {
                capsa_strvfreep(cmd);
                capsa_err_set(err, ENOMEM, "out of memory");
                goto out;
            }
        ret = 0;
        goto out;
    }
    if (sp->image.kind != CAPSA_IMAGE_OCI) {
        capsa_err_set(err, EINVAL,
                      "no command given (%s has no image to take a default command from)", name);
        goto out;
    }
    if (capsa_sandbox_rootfs_spec(sp, NULL, &rd, &rs, err) < 0)
        goto out;
    rs.root_disk = &probe;
    rs.pull_policy = CAPSA_PULL_NEVER;
    if (capsa_rootfs_resolve(&rs, &r, err) < 0)
        goto out;
    ret = capsa_rootfs_command(&r, override, cmd, err);
    capsa_rootfs_release(&r);
out:
    capsa_sandbox_spec_free(sp);
    capsa_spec_errors_free(&errs);
    json_decref(cfg);
    capsa_store_sandbox_clear(&sb);
    return ret;
}

int cmd_create(int argc, char **argv)
{
    struct create_cli o = {.x.tty = -1};
    struct capsa_sandbox_create_opts co = {0};
    struct capsa_image_pull_opts po;
    _cleanup_store_ struct capsa_store *st = NULL;
    capsa_err err = {0};
    char name[64];
    json_t *spec;
    int r;

    o.x.rlimits = json_array();
    r = parse_create(argc, argv, &o, false);
    json_decref(o.x.rlimits);
    if (r != 0)
        return r < 0 ? 0 : r;
    spec = resolve_spec(&o);
    if (!spec)
        return 1;
    if (!o.name) {
        random_name(name, sizeof(name));
        o.name = name;
    }
    if (open_store(&st) != 0) {
        json_decref(spec);
        return 1;
    }
    co.name = o.name;
    co.spec = spec;
    co.labels = o.labels;
    co.n_labels = o.nlabels;
    co.replace = o.replace;
    co.replace_timeout_set = o.replace_timeout_set;
    co.replace_timeout_ms = o.replace_timeout_ms;
    create_pull_opts(&o, &po);
    co.pull = &po;
    r = capsa_sandbox_create_named(st, &co, &err);
    json_decref(spec);
    if (r < 0)
        return cli_fail("create: %s", err.msg);
    if (!o.x.quiet)
        printf("%s\n", o.name);
    return 0;
}

/* `capsa run --name X ...` and `capsa run -d ...` (called from cmd_run). */
int cmd_run_named(int argc, char **argv)
{
    struct create_cli o = {.x.tty = -1};
    _cleanup_store_ struct capsa_store *st = NULL;
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    struct capsa_store_sandbox sb = {0};
    _cleanup_strv_ char **image_cmd = NULL;
    capsa_err err = {0};
    char name[64];
    int r, status = 1, watch = -1;

    signal(SIGPIPE, SIG_IGN);
    o.x.rlimits = json_array();
    r = parse_create(argc, argv, &o, true);
    if (r != 0)
        goto out_r;
    if (!o.name) {
        random_name(name, sizeof(name));
        o.name = name;
    }
    if ((r = open_store(&st)) != 0)
        goto out_r;
    if (capsa_store_sandbox_get(st, o.name, &sb, &err) == 0) {
        /* it exists: reuse it (start it when it is not running; a start without -d is
         * attached: the sandbox stops with this run, see out_r) */
        if (capsa_sandbox_start_attached(st, o.name, o.detach ? NULL : &watch, NULL, &err) < 0) {
            r = cli_fail("run: %s", err.msg);
            goto out_r;
        }
    } else if (err.code == ENOENT) {
        struct capsa_sandbox_create_opts co = {.name = o.name,
                                               .labels = o.labels,
                                               .n_labels = o.nlabels,
                                               .watch_fd = o.detach ? NULL : &watch};
        struct capsa_image_pull_opts po;
        create_pull_opts(&o, &po);
        co.pull = &po;
        co.spec = resolve_spec(&o);
        if (!co.spec) {
            r = 1;
            goto out_r;
        }
        r = capsa_sandbox_create_named(st, &co, &err);
        json_decref(co.spec);
        if (r < 0) {
            r = cli_fail("run: %s", err.msg);
            goto out_r;
        }
    } else {
        r = cli_fail("run: %s", err.msg);
        goto out_r;
    }
    if (image_command(st, o.name, o.x.cmd, &image_cmd, &err) < 0) {
        r = cli_fail("run: %s", err.msg);
        goto out_r;
    }
    o.x.cmd = image_cmd;
    if (capsa_ctl_connect_name(st, o.name, &conn, &err) < 0) {
        r = cli_fail("run: %s", err.msg);
        goto out_r;
    }
    if (o.detach) {
        json_t *args = json_pack("{s:[], s:[]}", "argv", "env"), *res = NULL;
        for (char **a = o.x.cmd; *a; a++)
            json_array_append_new(json_object_get(args, "argv"), json_string(*a));
        for (size_t i = 0; i < o.x.nenv; i++)
            json_array_append_new(json_object_get(args, "env"), json_string(o.x.env[i]));
        if (o.x.workdir)
            json_object_set_new(args, "cwd", json_string(o.x.workdir));
        if (o.x.user)
            json_object_set_new(args, "user", json_string(o.x.user));
        r = capsa_ctl_request(&conn, "spawn", args, 10000, &res, &err);
        json_decref(args);
        json_decref(res);
        if (r < 0) {
            r = cli_fail("run: '%s' in %s: %s", o.x.cmd[0], o.name, err.msg);
            goto out_r;
        }
        printf("%s\n", o.name);
        r = 0;
        goto out_r;
    }
    r = exec_over(&conn, &o.x, o.name, &status) < 0 ? 1 : status;
out_r:
    capsa_ctl_close(&conn);
    if (watch >= 0) {
        /* this run started the sandbox: it is attached and stops when the command ends (were
         * this process killed, the supervisor would stop it on EOF of the watch pipe) */
        capsa_err e2 = {0};
        if (capsa_sandbox_stop_named(st, o.name, false, -1, NULL, &e2) < 0)
            cli_fail("run: stopping %s: %s", o.name, e2.msg);
        close(watch);
    }
    capsa_store_sandbox_clear(&sb);
    json_decref(o.x.rlimits);
    return r < 0 ? 0 : r;
}

/* ---- selectors ------------------------------------------------------------------------------ */

struct selection {
    char *names[MAX_NAMES];
    size_t n;
};

static void selection_free(struct selection *s)
{
    for (size_t i = 0; i < s->n; i++)
        free(s->names[i]);
    s->n = 0;
}

static void selection_add(struct selection *s, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name))
            return;
    if (s->n < MAX_NAMES)
        s->names[s->n++] = strdup(name);
}

/* Names given plus the sandboxes matching every label (AND); requires at least one of them. */
static int select_sandboxes(struct capsa_store *st, char **names, size_t nnames,
                            const struct capsa_store_label *labels, size_t nlabels,
                            const char *verb, struct selection *out)
{
    capsa_err err = {0};

    if (!nnames && !nlabels)
        return cli_fail("%s: no sandbox given (NAME... or --label K=V)", verb);
    for (size_t i = 0; i < nnames; i++)
        selection_add(out, names[i]);
    if (nlabels) {
        struct capsa_store_sandbox_filter f = {.labels = labels, .n_labels = nlabels};
        struct capsa_store_sandbox *v = NULL;
        size_t n = 0;
        if (capsa_store_sandbox_list(st, &f, &v, &n, &err) < 0)
            return cli_fail("%s: %s", verb, err.msg);
        for (size_t i = 0; i < n; i++)
            selection_add(out, v[i].name);
        capsa_store_sandboxes_free(v, n);
    }
    return 0;
}

/* Common flags of start/stop/restart/rm/ping/touch. */
struct multi_cli {
    char *names[MAX_NAMES];
    size_t nnames;
    struct capsa_store_label labels[MAX_LABELS];
    size_t nlabels;
    bool force, quiet, touch;
    int timeout_ms;
};

static int parse_multi(int argc, char **argv, struct multi_cli *o, const char *verb,
                       const char *usage, bool stop_flags)
{
    enum { OPT_LABEL = 256, OPT_TOUCH };
    static const struct option longopts[] = {
        {"label", required_argument, NULL, OPT_LABEL},
        {"force", no_argument, NULL, 'f'},
        {"timeout", required_argument, NULL, 't'},
        {"touch", no_argument, NULL, OPT_TOUCH},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;

    o->timeout_ms = -1;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "ft:qh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_LABEL:
            if (o->nlabels >= MAX_LABELS)
                return cli_fail("--label: at most %d labels", MAX_LABELS);
            if (parse_label(optarg, &o->labels[o->nlabels++], false) != 0)
                return 1;
            break;
        case 'f':
            if (!stop_flags)
                return cli_fail("%s: unknown option -f", verb);
            o->force = true;
            break;
        case 't': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!stop_flags)
                return cli_fail("%s: unknown option -t", verb);
            if (*end || v < 0 || v > 86400)
                return cli_fail("--timeout '%s': expected whole seconds from 0 to 86400", optarg);
            o->timeout_ms = (int)v * 1000;
            break;
        }
        case OPT_TOUCH:
            if (strcmp(verb, "ping") != 0)
                return cli_fail("%s: --touch is a ping option", verb);
            o->touch = true;
            break;
        case 'q':
            o->quiet = true;
            break;
        case 'h':
            fputs(usage, stdout);
            printf(
                "\nOptions:\n"
                "      --label K=V    also act on every sandbox carrying this label (repeatable;\n"
                "                     a sandbox must carry all of them); NAMEs and labels add up\n"
                "%s%s"
                "  -q, --quiet        print nothing on success\n"
                "  -h, --help         show this help\n\n"
                "Exit status: 0 when every named or selected sandbox succeeded, 1 when any\n"
                "failed (each failure is reported on stderr and the others still run)%s.\n",
                stop_flags ? "  -f, --force        stop/restart: kill QEMU at once; rm: stop a "
                             "running one\n"
                           : "",
                stop_flags
                    ? "  -t, --timeout SECS seconds the guest gets to power off before QEMU is\n"
                      "                     killed (0..86400, default 10)\n"
                : !strcmp(verb, "ping")
                    ? "      --touch        also record activity (postpones the idle timeout)\n"
                    : "",
                !strcmp(verb, "ping") ? ";\na sandbox that is not running fails" : "");
            return -1;
        default:
            return cli_fail("%s: unknown or incomplete option '%s' (see capsa %s --help)", verb,
                            argv[optind - 1], verb);
        }
    }
    for (; optind < argc; optind++) {
        capsa_err err = {0};
        if (capsa_store_check_name("sandbox name", argv[optind], &err) < 0)
            return cli_fail("%s: %s", verb, err.msg);
        if (o->nnames < MAX_NAMES)
            o->names[o->nnames++] = argv[optind];
    }
    return 0;
}

enum multi_op { OP_START, OP_STOP, OP_RESTART, OP_RM, OP_PING, OP_TOUCH };

static int one(struct capsa_store *st, enum multi_op op, const struct multi_cli *o,
               const char *name, capsa_err *err)
{
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    bool already = false;
    uint64_t rtt = 0;
    int r = 0;

    switch (op) {
    case OP_START:
        return capsa_sandbox_start_named(st, name, &already, err);
    case OP_STOP:
        return capsa_sandbox_stop_named(st, name, o->force, o->timeout_ms, &already, err);
    case OP_RESTART:
        if (capsa_sandbox_stop_named(st, name, o->force, o->timeout_ms, NULL, err) < 0)
            return -1;
        return capsa_sandbox_start_named(st, name, NULL, err);
    case OP_RM:
        return capsa_sandbox_remove_named(st, name, o->force, err);
    case OP_PING:
    case OP_TOUCH:
        if (capsa_ctl_connect_name(st, name, &conn, err) < 0)
            return -1;
        if (op == OP_PING)
            r = capsa_agentc_ping(&conn.ch, 10000, &rtt, err);
        if (r == 0 && (op == OP_TOUCH || o->touch))
            r = capsa_ctl_request(&conn, "touch", NULL, 10000, NULL, err);
        capsa_ctl_close(&conn);
        if (r == 0 && op == OP_PING && !o->quiet)
            printf("%s: pong in %.2f ms\n", name, (double)rtt / 1000.0);
        return r;
    }
    return 0;
}

static int run_multi(int argc, char **argv, enum multi_op op, const char *verb, const char *usage)
{
    struct multi_cli o = {0};
    struct selection sel = {0};
    _cleanup_store_ struct capsa_store *st = NULL;
    int r, failed = 0;

    signal(SIGPIPE, SIG_IGN);
    r = parse_multi(argc, argv, &o, verb, usage, op == OP_STOP || op == OP_RESTART || op == OP_RM);
    if (r != 0)
        return r < 0 ? 0 : r;
    if (open_store(&st) != 0)
        return 1;
    r = select_sandboxes(st, o.names, o.nnames, o.labels, o.nlabels, verb, &sel);
    if (r != 0)
        return r;
    for (size_t i = 0; i < sel.n; i++) {
        capsa_err err = {0};
        if (one(st, op, &o, sel.names[i], &err) < 0) {
            cli_fail("%s %s: %s", verb, sel.names[i], err.msg);
            failed = 1;
        } else if (!o.quiet && op != OP_PING) {
            printf("%s\n", sel.names[i]);
        }
    }
    selection_free(&sel);
    return failed;
}

int cmd_start(int argc, char **argv)
{
    return run_multi(argc, argv, OP_START, "start",
                     "Usage: capsa start NAME... [--label K=V]... [-q]\n\n"
                     "Start stopped, failed or crashed sandboxes from their stored config and\n"
                     "wait until they run. A running sandbox is left alone.\n");
}

int cmd_stop(int argc, char **argv)
{
    return run_multi(argc, argv, OP_STOP, "stop",
                     "Usage: capsa stop NAME... [--label K=V]... [-f] [-t SECS] [-q]\n\n"
                     "Stop sandboxes: the guest syncs and powers off; QEMU is killed when it has\n"
                     "not within -t SECS (default 10). -f kills at once.\n");
}

int cmd_restart(int argc, char **argv)
{
    return run_multi(argc, argv, OP_RESTART, "restart",
                     "Usage: capsa restart NAME... [--label K=V]... [-f] [-t SECS] [-q]\n\n"
                     "Stop (as capsa stop) then start sandboxes.\n");
}

int cmd_rm(int argc, char **argv)
{
    return run_multi(argc, argv, OP_RM, "rm",
                     "Usage: capsa rm NAME... [--label K=V]... [-f] [-q]\n\n"
                     "Remove sandboxes: their row, runs, labels, directory and run directory.\n"
                     "A running sandbox is refused unless -f, which stops it first.\n");
}

int cmd_ping(int argc, char **argv)
{
    return run_multi(argc, argv, OP_PING, "ping",
                     "Usage: capsa ping NAME... [--label K=V]... [--touch] [-q]\n\n"
                     "Round trip to the guest agent of running sandboxes. Not activity for the\n"
                     "idle timeout unless --touch.\n");
}

int cmd_touch(int argc, char **argv)
{
    return run_multi(argc, argv, OP_TOUCH, "touch",
                     "Usage: capsa touch NAME... [--label K=V]... [-q]\n\n"
                     "Record activity: postpones the idle timeout of running sandboxes.\n");
}

/* ---- ls / ps / inspect ---------------------------------------------------------------------- */

struct list_cli {
    struct capsa_store_label labels[MAX_LABELS];
    size_t nlabels;
    bool json, quiet, all;
    unsigned mask;
    const char *name;
};

static int parse_list(int argc, char **argv, struct list_cli *o, const char *verb,
                      const char *usage, bool is_ps)
{
    enum { OPT_LABEL = 256, OPT_FORMAT, OPT_RUNNING, OPT_STOPPED };
    static const struct option longopts[] = {
        {"label", required_argument, NULL, OPT_LABEL},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"running", no_argument, NULL, OPT_RUNNING},
        {"stopped", no_argument, NULL, OPT_STOPPED},
        {"all", no_argument, NULL, 'a'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "aqh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_LABEL:
            if (o->nlabels >= MAX_LABELS)
                return cli_fail("--label: at most %d labels", MAX_LABELS);
            if (parse_label(optarg, &o->labels[o->nlabels++], false) != 0)
                return 1;
            break;
        case OPT_FORMAT:
            if (!strcmp(optarg, "json"))
                o->json = true;
            else if (strcmp(optarg, "table") != 0)
                return cli_fail("--format '%s': expected json or table", optarg);
            break;
        case OPT_RUNNING:
            o->mask |= CAPSA_SB_ACTIVE;
            break;
        case OPT_STOPPED:
            o->mask |= CAPSA_SB_INACTIVE;
            break;
        case 'a':
            o->all = true;
            break;
        case 'q':
            o->quiet = true;
            break;
        case 'h':
            fputs(usage, stdout);
            return -1;
        default:
            return cli_fail("%s: unknown or incomplete option '%s' (see capsa %s --help)", verb,
                            argv[optind - 1], verb);
        }
    }
    if (is_ps && optind < argc)
        o->name = argv[optind++];
    if (optind < argc)
        return cli_fail("%s: unexpected argument '%s'", verb, argv[optind]);
    return 0;
}

static int list_rows(struct capsa_store *st, const struct list_cli *o,
                     struct capsa_store_sandbox **v, size_t *n)
{
    struct capsa_store_sandbox_filter f = {
        .status_mask = o->mask, .labels = o->labels, .n_labels = o->nlabels};
    capsa_err err = {0};

    if (capsa_store_sandbox_list(st, &f, v, n, &err) < 0)
        return cli_fail("%s", err.msg);
    return 0;
}

int cmd_ls(int argc, char **argv)
{
    static const char usage[] =
        "Usage: capsa ls [--running|--stopped] [--label K=V]... [--format json] [-q]\n\n"
        "List stored sandboxes: NAME IMAGE STATUS CREATED. --running: starting, running or\n"
        "stopping; --stopped: the others. -q prints names only.\n";
    struct list_cli o = {0};
    _cleanup_store_ struct capsa_store *st = NULL;
    struct capsa_store_sandbox *v = NULL;
    size_t n = 0;
    int r = parse_list(argc, argv, &o, "ls", usage, false);

    if (r != 0)
        return r < 0 ? 0 : r;
    if (o.mask == CAPSA_SB_ANY)
        o.mask = 0;
    if (open_store(&st) != 0 || list_rows(st, &o, &v, &n) != 0)
        return 1;
    if (o.json) {
        json_t *a = json_array();
        for (size_t i = 0; i < n; i++) {
            json_t *cfg = config_of(&v[i]);
            json_array_append_new(
                a, json_pack("{s:s, s:s, s:o, s:s, s:o, s:o}", "name", v[i].name, "status",
                             capsa_sandbox_status_name(v[i].status), "created_at",
                             json_time(v[i].created_at), "image", image_of(cfg), "labels",
                             labels_json(&v[i]), "last_error",
                             v[i].last_error ? json_string(v[i].last_error) : json_null()));
            json_decref(cfg);
        }
        print_json(a);
        json_decref(a);
    } else if (o.quiet) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", v[i].name);
    } else {
        printf("%-24s %-32s %-9s %s\n", "NAME", "IMAGE", "STATUS", "CREATED");
        for (size_t i = 0; i < n; i++) {
            json_t *cfg = config_of(&v[i]);
            char t[64];
            iso_time(v[i].created_at, t, sizeof(t));
            printf("%-24s %-32s %-9s %s\n", v[i].name, image_of(cfg),
                   capsa_sandbox_status_name(v[i].status), t);
            json_decref(cfg);
        }
    }
    capsa_store_sandboxes_free(v, n);
    return 0;
}

int cmd_ps(int argc, char **argv)
{
    static const char usage[] =
        "Usage: capsa ps [NAME] [-a] [--label K=V]... [--format json] [-q]\n\n"
        "Process view of running sandboxes (all with -a): NAME IMAGE STATUS PID CPUS MEM UPTIME.\n";
    struct list_cli o = {0};
    _cleanup_store_ struct capsa_store *st = NULL;
    struct capsa_store_sandbox *v = NULL;
    json_t *a = json_array();
    int64_t now = capsa_store_now_ms();
    size_t n = 0;
    int r = parse_list(argc, argv, &o, "ps", usage, true);

    if (r != 0) {
        json_decref(a);
        return r < 0 ? 0 : r;
    }
    if (!o.all && !o.name)
        o.mask = CAPSA_SB_ACTIVE;
    if (open_store(&st) != 0 || list_rows(st, &o, &v, &n) != 0) {
        json_decref(a);
        return 1;
    }
    if (!o.json && !o.quiet)
        printf("%-24s %-28s %-9s %-8s %-4s %-7s %s\n", "NAME", "IMAGE", "STATUS", "PID", "CPUS",
               "MEM", "UPTIME");
    for (size_t i = 0; i < n; i++) {
        json_t *cfg = config_of(&v[i]), *res = json_object_get(cfg, "resources");
        json_int_t cpus = json_integer_value(json_object_get(res, "cpus"));
        json_int_t mem = json_integer_value(json_object_get(res, "memory_mib"));
        bool active = CAPSA_SB_ACTIVE & (1u << v[i].status);
        int64_t up = active && v[i].started_at ? (now - v[i].started_at) / 1000 : 0;

        if (o.name && strcmp(o.name, v[i].name) != 0) {
            json_decref(cfg);
            continue;
        }
        if (o.json)
            json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:i, s:I, s:I, s:o, s:I}", "name",
                                               v[i].name, "status",
                                               capsa_sandbox_status_name(v[i].status), "image",
                                               image_of(cfg), "pid", (int)v[i].supervisor_pid,
                                               "cpus", cpus, "memory_mib", mem, "started_at",
                                               active ? json_time(v[i].started_at) : json_null(),
                                               "uptime_secs", (json_int_t)up));
        else if (o.quiet)
            printf("%s\n", v[i].name);
        else {
            char pid[16], memb[16], upb[32];
            snprintf(pid, sizeof(pid), "%d", (int)v[i].supervisor_pid);
            snprintf(memb, sizeof(memb), "%lldM", (long long)mem);
            if (active)
                snprintf(upb, sizeof(upb), "%llds", (long long)up);
            else
                snprintf(upb, sizeof(upb), "-");
            printf("%-24s %-28s %-9s %-8s %-4lld %-7s %s\n", v[i].name, image_of(cfg),
                   capsa_sandbox_status_name(v[i].status), active ? pid : "-", (long long)cpus,
                   memb, upb);
        }
        json_decref(cfg);
    }
    if (o.json)
        print_json(a);
    json_decref(a);
    capsa_store_sandboxes_free(v, n);
    return 0;
}

int cmd_inspect(int argc, char **argv)
{
    static const char usage[] = "Usage: capsa inspect NAME [--format json]\n\n"
                                "Print a sandbox's stored config, status, labels, runs and paths "
                                "as JSON.\n";
    struct list_cli o = {0};
    _cleanup_store_ struct capsa_store *st = NULL;
    struct capsa_store_sandbox sb = {0};
    struct capsa_store_run *runs = NULL;
    struct capsa_sandbox_paths paths;
    capsa_err err = {0};
    json_t *j, *ra;
    size_t nr = 0;
    int r = parse_list(argc, argv, &o, "inspect", usage, true);

    if (r != 0)
        return r < 0 ? 0 : r;
    if (!o.name)
        return cli_fail("inspect: no sandbox name given");
    if (open_store(&st) != 0)
        return 1;
    if (capsa_store_sandbox_get(st, o.name, &sb, &err) < 0 ||
        capsa_store_run_list(st, o.name, &runs, &nr, &err) < 0 ||
        capsa_sandbox_paths(o.name, sb.id, &paths, &err) < 0) {
        capsa_store_sandbox_clear(&sb);
        return cli_fail("inspect: %s", err.msg);
    }
    ra = json_array();
    for (size_t i = 0; i < nr; i++) {
        const char *reason = runs[i].reason >= 0 ? capsa_run_reason_name(runs[i].reason) : NULL;
        json_array_append_new(
            ra, json_pack("{s:I, s:i, s:o, s:o, s:o, s:o, s:o, s:o}", "id", (json_int_t)runs[i].id,
                          "pid", (int)runs[i].pid, "started_at", json_time(runs[i].started_at),
                          "ended_at", json_time(runs[i].ended_at), "exit_code",
                          runs[i].has_exit_code ? json_integer(runs[i].exit_code) : json_null(),
                          "signal", runs[i].signal ? json_integer(runs[i].signal) : json_null(),
                          "termination_reason", reason ? json_string(reason) : json_null(),
                          "termination_detail",
                          runs[i].detail ? json_string(runs[i].detail) : json_null()));
    }
    {
        json_t *cfg = config_of(&sb);
        bool active = CAPSA_SB_ACTIVE & (1u << sb.status);
        j = json_pack(
            "{s:s, s:I, s:s, s:s, s:b, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, "
            "s:{s:s, s:s, s:s, s:s, s:s}}",
            "name", sb.name, "id", (json_int_t)sb.id, "status",
            capsa_sandbox_status_name(sb.status), "image", image_of(cfg), "ephemeral", sb.ephemeral,
            "supervisor_pid", sb.supervisor_pid ? json_integer(sb.supervisor_pid) : json_null(),
            "created_at", json_time(sb.created_at), "updated_at", json_time(sb.updated_at),
            "started_at", json_time(sb.started_at), "stopped_at", json_time(sb.stopped_at),
            "last_error", sb.last_error ? json_string(sb.last_error) : json_null(), "labels",
            labels_json(&sb), "config", json_incref(cfg), "runs", ra, "paths", "dir", paths.dir,
            "supervisor_log", paths.log, "exec_log", paths.exec_log, "run_dir",
            active ? paths.run_dir : "", "control_socket", active ? paths.sock : "");
        json_decref(cfg);
    }
    print_json(j);
    json_decref(j);
    capsa_store_runs_free(runs, nr);
    capsa_store_sandbox_clear(&sb);
    return 0;
}

/* ---- exec -------------------------------------------------------------------------------------
 */

static const char exec_help[] =
    "Usage: capsa exec NAME [OPTIONS] [--] COMMAND [ARG...]\n\n"
    "Run COMMAND in sandbox NAME and exit with its status (as capsa run). A stopped or crashed\n"
    "sandbox is started for the command and stopped again afterwards, even on error.\n\n"
    "Options:\n"
    "  -e, --env K=V        environment variable (repeatable)\n"
    "  -w, --workdir DIR    working directory (absolute)\n"
    "  -u, --user USER      USER[:GROUP] or UID[:GID]\n"
    "  -t, --tty / --no-tty pseudo-terminal (default: when stdin and stdout are terminals)\n"
    "      --timeout DUR    kill the command after DUR; exit 124\n"
    "      --rlimit R=S[:H] resource limit, e.g. nofile=1024:2048\n"
    "  -q, --quiet          print nothing but the command's own output\n";

int cmd_exec(int argc, char **argv)
{
    enum { OPT_NO_TTY = 256, OPT_TIMEOUT, OPT_RLIMIT };
    static const struct option longopts[] = {
        {"env", required_argument, NULL, 'e'},
        {"workdir", required_argument, NULL, 'w'},
        {"user", required_argument, NULL, 'u'},
        {"tty", no_argument, NULL, 't'},
        {"no-tty", no_argument, NULL, OPT_NO_TTY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"rlimit", required_argument, NULL, OPT_RLIMIT},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct exec_cli o = {.tty = -1};
    _cleanup_store_ struct capsa_store *st = NULL;
    struct capsa_ctl_conn conn = {.ch.fd = -1};
    capsa_err err = {0};
    const char *name = NULL;
    bool was_running = true;
    int c, status = 1, watch = -1;

    signal(SIGPIPE, SIG_IGN);
    o.rlimits = json_array();
    optind = 1;
    opterr = 0;
    /* NAME may come before or after the options; everything after it or -- is the command */
    while (optind < argc) {
        if (argv[optind][0] != '-' || !strcmp(argv[optind], "--")) {
            if (!strcmp(argv[optind], "--")) {
                optind++;
                break;
            }
            if (name)
                break;
            name = argv[optind++];
            continue;
        }
        c = getopt_long(argc, argv, "+e:w:u:tqh", longopts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case 'e':
            if (!strchr(optarg, '=') || optarg[0] == '=') {
                status = cli_fail("--env '%s': expected KEY=VALUE", optarg);
                goto out;
            }
            if (o.nenv < MAX_ENV)
                o.env[o.nenv++] = optarg;
            break;
        case 'w':
            if (optarg[0] != '/') {
                status = cli_fail("--workdir '%s': must be an absolute path", optarg);
                goto out;
            }
            o.workdir = optarg;
            break;
        case 'u':
            o.user = optarg;
            break;
        case 't':
            o.tty = 1;
            break;
        case OPT_NO_TTY:
            o.tty = 0;
            break;
        case OPT_TIMEOUT:
            if (capsa_parse_duration_ms(optarg, &o.timeout_ms, &err) < 0 || o.timeout_ms == 0) {
                status = cli_fail("--timeout '%s': %s", optarg,
                                  err.msg[0] ? err.msg : "must be greater than zero");
                goto out;
            }
            break;
        case OPT_RLIMIT: {
            json_t *r = cli_parse_rlimit(optarg, &err);
            if (!r)
                goto out;
            json_array_append_new(o.rlimits, r);
            break;
        }
        case 'q':
            o.quiet = true;
            break;
        case 'h':
            fputs(exec_help, stdout);
            status = 0;
            goto out;
        default:
            status = cli_fail("exec: unknown or incomplete option '%s' (see capsa exec --help)",
                              argv[optind - 1]);
            goto out;
        }
    }
    if (!name) {
        status = cli_fail("exec: no sandbox name given (capsa exec NAME -- COMMAND)");
        goto out;
    }
    if (capsa_store_check_name("sandbox name", name, &err) < 0) {
        status = cli_fail("exec: %s", err.msg);
        goto out;
    }
    if (optind >= argc) {
        status = cli_fail("exec: no command given (capsa exec NAME -- COMMAND)");
        goto out;
    }
    o.cmd = argv + optind;
    if (open_store(&st) != 0)
        goto out;
    /* a sandbox this exec starts is attached: it stops again below, or on EOF of the watch
     * pipe should this process be killed */
    if (capsa_sandbox_start_attached(st, name, &watch, &was_running, &err) < 0) {
        status = cli_fail("exec: %s", err.msg);
        goto stop;
    }
    if (capsa_ctl_connect_name(st, name, &conn, &err) < 0) {
        status = cli_fail("exec: %s", err.msg);
        goto stop;
    }
    if (exec_over(&conn, &o, name, &status) < 0)
        status = 1;
    capsa_ctl_close(&conn);
stop:
    if (!was_running) {
        capsa_err e2 = {0};
        if (capsa_sandbox_stop_named(st, name, false, -1, NULL, &e2) < 0)
            cli_fail("exec: stopping %s again: %s", name, e2.msg);
    }
    if (watch >= 0)
        close(watch);
out:
    json_decref(o.rlimits);
    return status;
}

/* ---- hidden supervisor entry --------------------------------------------------------------- */

int cmd_supervisor(int argc, char **argv)
{
    if (argc != 2)
        return cli_fail("usage: capsa %s NAME (internal: spawned by capsa itself)",
                        CAPSA_SUPERVISOR_VERB);
    return capsa_supervisor_main(argv[1]);
}
