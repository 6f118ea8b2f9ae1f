/* cmd_run.c - `capsa run`: boot a sandbox, run one command in it, remove it. */
#include <errno.h>
#include <fcntl.h>
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
#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/units.h"
#include "lib/agentc.h"
#include "lib/boot.h"
#include "lib/exec.h"
#include "lib/rootfs.h"
#include "vm/accel.h"

#define MAX_ENV 256

static const char run_help[] =
    "Usage: capsa run [OPTIONS] IMAGE [-- COMMAND [ARG...]]\n"
    "       capsa run [OPTIONS] ROOTFS [-- COMMAND [ARG...]]\n"
    "       capsa run [OPTIONS] --rootfs DIR [-- COMMAND [ARG...]]\n"
    "\n"
    "Boot a throwaway microVM, run COMMAND in it, stream its output, and exit with its\n"
    "exit status. IMAGE is an OCI reference ([REGISTRY/]REPO[:TAG][@DIGEST]): it is pulled\n"
    "when missing (see --pull), pinned to its digest, and booted from its read-only erofs\n"
    "disk with a fresh writable upper (overlayfs); its Env, WorkingDir and User apply, and\n"
    "without COMMAND its Entrypoint + Cmd run (a COMMAND replaces Cmd and keeps the\n"
    "Entrypoint). A ROOTFS starting with / or . is a host directory (shared read-write\n"
    "over virtio-9p) or a disk image file (raw; .qcow2/.vmdk by extension) that becomes\n"
    "the whole root. The VM is stopped and every trace of it removed\n"
    "when the command ends. Standard input is forwarded when it is not a terminal\n"
    "(piped stdin reaches the command; end of input closes it). When stdin and stdout\n"
    "are terminals the command gets a pseudo-terminal; press ctrl-] to detach.\n"
    "\n"
    "Options:\n"
    "  -n, --name NAME      use (creating or starting it) the named sandbox NAME, which\n"
    "                       keeps running afterwards; see capsa create --help\n"
    "  -d, --detach         run COMMAND in the background in a named sandbox, print its name\n"
    "  --rootfs DIR         host directory to boot as the root filesystem\n"
    "      --pull POLICY    if-missing (default), always (resolve the tag again), never\n"
    "      --insecure       allow plain http and unverified TLS for the image's registry\n"
    "      --ca-certs PEM   trust the CA certificates in PEM for the image's registry\n"
    "      --root-disk SPEC the image's writable layer: SIZE (sparse ext4, default 4G),\n"
    "                       tmpfs[:SIZE] (in guest RAM), or PATH[:format=raw|qcow2|vmdk]\n"
    "                       [,fstype=T] (your disk image, kept after the run)\n"
    "  -c, --cpus N         virtual CPUs (default 1)\n"
    "  -m, --memory SIZE    guest memory, e.g. 512M, 1G (default 512M)\n"
    "  -e, --env K=V        set an environment variable (repeatable)\n"
    "  -w, --workdir DIR    working directory of the command (absolute)\n"
    "  -u, --user USER      USER[:GROUP] or UID[:GID] from the guest's /etc/passwd\n"
    "  -H, --hostname NAME  guest hostname (default: capsa)\n"
    "  -t, --tty            allocate a pseudo-terminal even when not interactive\n"
    "      --no-tty         never allocate a pseudo-terminal\n"
    "      --timeout DUR    kill the command after DUR (500ms, 30s, 5m, 1h); exit 124\n"
    "      --rlimit R=S[:H] resource limit for the command, e.g. nofile=1024:2048\n"
    "      --accel A        auto|kvm|tcg (default auto: KVM when a probe boot works)\n"
    "  -q, --quiet          print nothing but the command's own output\n"
    "  -h, --help           show this help\n"
    "\n"
    "Exit status: the command's; 128+N when it was killed by signal N; 127 when it was\n"
    "not found; 126 when it is not executable; 124 on --timeout; 1 when capsa failed.\n"
    "\n"
    "Environment: CAPSA_HOME (state, default ~/.capsa), CAPSA_KERNEL (guest kernel),\n"
    "CAPSA_AGENT (guest agent binary), CAPSA_BOOT_TIMEOUT (seconds, default 120).\n";

struct run_opts {
    const char *rootfs;
    int cpus;
    uint64_t memory_mib;
    char *env[MAX_ENV + 1];
    size_t nenv;
    const char *workdir, *user, *hostname;
    int tty; /* -1 auto, 0 no, 1 yes */
    uint64_t timeout_ms;
    json_t *rlimits;
    enum capsa_accel accel;
    bool quiet;
    char **cmd;
    enum capsa_pull_policy pull_policy;
    bool insecure;
    const char *ca_certs;
    bool root_disk_set;
    struct capsa_root_disk root_disk;
};

static int parse_args(int argc, char **argv, struct run_opts *o)
{
    enum {
        OPT_ROOTFS = 256,
        OPT_NO_TTY,
        OPT_TIMEOUT,
        OPT_RLIMIT,
        OPT_ACCEL,
        OPT_PULL,
        OPT_INSECURE,
        OPT_CA_CERTS,
        OPT_ROOT_DISK
    };
    static const struct option longopts[] = {
        {"rootfs", required_argument, NULL, OPT_ROOTFS},
        {"cpus", required_argument, NULL, 'c'},
        {"memory", required_argument, NULL, 'm'},
        {"env", required_argument, NULL, 'e'},
        {"workdir", required_argument, NULL, 'w'},
        {"user", required_argument, NULL, 'u'},
        {"hostname", required_argument, NULL, 'H'},
        {"tty", no_argument, NULL, 't'},
        {"no-tty", no_argument, NULL, OPT_NO_TTY},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"rlimit", required_argument, NULL, OPT_RLIMIT},
        {"accel", required_argument, NULL, OPT_ACCEL},
        {"pull", required_argument, NULL, OPT_PULL},
        {"insecure", no_argument, NULL, OPT_INSECURE},
        {"ca-certs", required_argument, NULL, OPT_CA_CERTS},
        {"root-disk", required_argument, NULL, OPT_ROOT_DISK},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    capsa_err err = {0};
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "+c:m:e:w:u:H:tqh", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_ROOTFS:
            o->rootfs = optarg;
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
            if (cli_opt_env(optarg, o->env, &o->nenv, MAX_ENV))
                return 1;
            break;
        case 'w':
            if (cli_opt_workdir(optarg, &o->workdir))
                return 1;
            break;
        case 'u':
            if (cli_opt_user(optarg, &o->user))
                return 1;
            break;
        case 'H':
            if (cli_opt_hostname(optarg, &o->hostname))
                return 1;
            break;
        case 't':
            o->tty = 1;
            break;
        case OPT_NO_TTY:
            o->tty = 0;
            break;
        case OPT_TIMEOUT:
            if (cli_opt_timeout(optarg, &o->timeout_ms))
                return 1;
            break;
        case OPT_RLIMIT:
            if (cli_opt_rlimit(optarg, o->rlimits))
                return 1;
            break;
        case OPT_ACCEL:
            if (capsa_accel_parse(optarg, &o->accel, &err) < 0)
                return cli_fail("--accel: %s", err.msg);
            break;
        case OPT_PULL:
            if (capsa_pull_policy_parse(optarg, &o->pull_policy, &err) < 0)
                return cli_fail("--pull: %s", err.msg);
            break;
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
            o->quiet = true;
            break;
        case 'h':
            fputs(run_help, stdout);
            return -1;
        default:
            return cli_fail("run: unknown or incomplete option '%s' (see capsa run --help)",
                            argv[optind - 1]);
        }
    }
    /* getopt consumes a "--" that directly follows the options: what comes after it is
     * the command, never the image */
    bool after_dashdash = optind > 1 && strcmp(argv[optind - 1], "--") == 0;
    if (!after_dashdash && optind < argc && strcmp(argv[optind], "--") != 0) {
        const char *img = argv[optind++];
        if (o->rootfs)
            return cli_fail("run: give the root either as --rootfs DIR or as ROOTFS, not both");
        o->rootfs = img;
    }
    if (optind < argc && strcmp(argv[optind], "--") == 0)
        optind++;
    if (!o->rootfs)
        return cli_fail("run: no image or root filesystem given (capsa run IMAGE [-- COMMAND])");
    /* an image may bring its own command (Entrypoint + Cmd); a directory or disk may not */
    if (optind >= argc && (o->rootfs[0] == '/' || o->rootfs[0] == '.'))
        return cli_fail("run: no command given (capsa run ROOTFS -- COMMAND [ARG...])");
    o->cmd = optind < argc ? argv + optind : NULL;
    return 0;
}

static int run_in_vm(struct run_opts *o, const char *run_dir, int *status)
{
    struct capsa_image_pull_opts po = {0};
    struct capsa_rootfs_spec rs = {0};
    struct capsa_rootfs root;
    _cleanup_strv_ char **cmd = NULL;
    struct capsa_boot_opts bo = {0};
    struct capsa_booted *b = NULL;
    capsa_err err = {0};
    int ret;

    po.insecure = o->insecure;
    po.ca_certs = o->ca_certs;
    po.progress = o->quiet                ? CAPSA_PROGRESS_NONE
                  : isatty(STDERR_FILENO) ? CAPSA_PROGRESS_TTY
                                          : CAPSA_PROGRESS_LINES;
    rs.source = o->rootfs;
    rs.root_disk = o->root_disk_set ? &o->root_disk : NULL;
    rs.pull_policy = o->pull_policy;
    rs.pull = &po;
    rs.state_dir = run_dir; /* ephemeral: the upper goes with the run directory */
    rs.scratch = true;
    if (capsa_rootfs_resolve(&rs, &root, &err) < 0) {
        cli_fail("run: %s", err.msg);
        return -1;
    }
    log_debug("root resolved");
    if (root.kind != CAPSA_ROOTFS_IMAGE && o->root_disk_set) {
        cli_fail("run: --root-disk applies to images only ('%s' is a %s)", o->rootfs,
                 root.kind == CAPSA_ROOTFS_DIR ? "directory" : "disk image");
        capsa_rootfs_release(&root);
        return -1;
    }
    if (root.kind == CAPSA_ROOTFS_IMAGE) {
        if (capsa_rootfs_command(&root, o->cmd, &cmd, &err) < 0) {
            cli_fail("run: %s", err.msg);
            capsa_rootfs_release(&root);
            return -1;
        }
        log_info("image %s", root.pinned);
        o->cmd = cmd;
    }
    bo.root = &root;
    bo.rootfs = o->rootfs;
    bo.cpus = o->cpus;
    bo.memory_mib = (int)o->memory_mib;
    bo.accel = o->accel;
    bo.hostname = o->hostname;
    bo.workdir = o->workdir;
    bo.user = o->user;
    if (capsa_boot(&bo, run_dir, &b, &err) < 0) {
        cli_fail("run: %s", err.msg);
        capsa_rootfs_release(&root);
        return -1;
    }
    o->env[o->nenv] = NULL;
    struct cli_exec x = {.cmd = o->cmd,
                         .env = o->env,
                         .workdir = o->workdir,
                         .user = o->user,
                         .rlimits = o->rlimits,
                         .tty = o->tty,
                         .timeout_ms = o->timeout_ms,
                         .quiet = o->quiet};
    ret = cli_exec_session(&b->conn, &x, "run", "the sandbox was ephemeral and is removed",
                           b->console_log, status);
    if (capsa_boot_stop(b, 5000, false, &err) < 0)
        log_warn("stopping the VM: %s", err.msg);
    capsa_rootfs_release(&root);
    return ret;
}

int cmd_run(int argc, char **argv)
{
    struct run_opts o = {.cpus = 1, .memory_mib = 512, .tty = -1};
    char run_dir[4096], id[32];
    capsa_err err = {0};
    int status = 1, r;

    /* --name / -d: a persistent named sandbox (cmd_sandbox.c) */
    for (int i = 1; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (!strcmp(argv[i], "-n") || !strcmp(argv[i], "--name") ||
            !strncmp(argv[i], "--name=", 7) || !strcmp(argv[i], "-d") ||
            !strcmp(argv[i], "--detach"))
            return cmd_run_named(argc, argv);
    o.rlimits = json_array();
    r = parse_args(argc, argv, &o);
    if (r != 0) {
        json_decref(o.rlimits);
        return r < 0 ? 0 : r;
    }
    snprintf(id, sizeof(id), "run-%d-%lx", (int)getpid(), (unsigned long)time(NULL));
    if (capsa_path(run_dir, sizeof(run_dir), &err, "run/%s", id) < 0 ||
        capsa_mkdir_p(run_dir, 0700, &err) < 0) {
        json_decref(o.rlimits);
        return cli_fail("run: %s", err.msg);
    }
    if (run_in_vm(&o, run_dir, &status) < 0)
        status = 1;
    if (capsa_rm_rf(run_dir, &err) < 0)
        log_warn("%s", err.msg);
    json_decref(o.rlimits);
    return status;
}
