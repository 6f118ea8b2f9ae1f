/* cmd_image.c - `capsa pull` and `capsa image ls|inspect|rm`: OCI images from registries. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "image/archive.h"
#include "image/image.h"
#include "store/store.h"

static const char pull_help[] =
    "Usage: capsa pull [OPTIONS] REFERENCE\n"
    "\n"
    "Download an OCI image from a registry and prepare it to boot: the manifest (an index\n"
    "or manifest list is narrowed to linux/<host arch>), its config and its layers are\n"
    "stored once per digest under $CAPSA_HOME/images/blobs, every blob is verified against\n"
    "its sha256 digest, the layers are applied in order (whiteouts, opaque directories,\n"
    "hardlinks, symlinks, xattrs, device nodes, ownership) with each diff_id checked, and\n"
    "the result becomes one read-only erofs lower disk, built once per manifest.\n"
    "\n"
    "REFERENCE is [REGISTRY/]REPOSITORY[:TAG][@DIGEST]. Without a registry it is docker.io,\n"
    "where a one-part name means library/NAME; the tag defaults to latest.\n"
    "\n"
    "Layers are downloaded in parallel; an interrupted download resumes where it stopped\n"
    "on the next pull. Concurrent pulls of the same image do the work once. An image that\n"
    "is already pulled is not fetched again unless --force is given.\n"
    "\n"
    "Options:\n"
    "  -f, --force          resolve the reference again, re-verify stored blobs and\n"
    "                       rebuild the disk\n"
    "  -q, --quiet          print nothing (errors still go to stderr)\n"
    "      --insecure       allow plain http and unverified TLS for this registry\n"
    "      --ca-certs PEM   trust the CA certificates in PEM for this registry\n"
    "      --timeout SECS   connect timeout and stall limit per transfer (default 30,\n"
    "                       env CAPSA_REGISTRY_TIMEOUT)\n"
    "  -h, --help           show this help\n"
    "\n"
    "Progress goes to stderr: a bar per layer on a terminal, one line per event otherwise.\n"
    "On success the canonical reference and the manifest digest are printed on stdout.\n"
    "\n"
    "Credentials: CAPSA_REGISTRY_USERNAME and CAPSA_REGISTRY_PASSWORD, or\n"
    "$CAPSA_HOME/auth.json ({\"auths\":{\"HOST\":{\"auth\":\"base64(user:pass)\"}}}, mode 0600).\n"
    "Basic and Bearer-token registries are both supported.\n"
    "\n"
    "Examples:\n"
    "  capsa pull busybox\n"
    "  capsa pull --insecure 127.0.0.1:5000/test/busybox:latest\n"
    "  capsa pull ghcr.io/org/app@sha256:<64 hex digits>\n";

int cmd_pull(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"force", no_argument, NULL, 'f'},
        {"quiet", no_argument, NULL, 'q'},
        {"insecure", no_argument, NULL, 'I'},
        {"ca-certs", required_argument, NULL, 'C'},
        {"timeout", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct capsa_image_pull_opts o = {0};
    struct capsa_image_info info;
    capsa_err err = {0};
    bool quiet = false;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+fqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'f':
            o.force = true;
            break;
        case 'q':
            quiet = true;
            break;
        case 'I':
            o.insecure = true;
            break;
        case 'C':
            o.ca_certs = optarg;
            break;
        case 'T': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v <= 0 || v > 3600)
                return cli_fail("--timeout '%s': expected seconds from 1 to 3600", optarg);
            o.timeout_s = v;
            break;
        }
        case 'h':
            fputs(pull_help, stdout);
            return 0;
        default:
            fputs(pull_help, stderr);
            return 2;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "capsa pull: expected exactly one REFERENCE\n\n%s", pull_help);
        return 2;
    }
    o.progress = quiet                   ? CAPSA_PROGRESS_NONE
                 : isatty(STDERR_FILENO) ? CAPSA_PROGRESS_TTY
                                         : CAPSA_PROGRESS_LINES;
    if (capsa_image_pull(argv[optind], &o, &info, &err) < 0)
        return cli_fail("pull: %s", err.msg);
    if (!quiet)
        printf("%s %s%s\n", info.reference, info.manifest_digest, info.cached ? " (cached)" : "");
    return 0;
}

static const char image_help[] =
    "Usage: capsa image COMMAND [OPTIONS]\n"
    "\n"
    "Manage pulled OCI images (see `capsa pull`).\n"
    "\n"
    "Commands:\n"
    "  ls [--format table|json] [-q]       list pulled images (-q: references only)\n"
    "  inspect REF [--format text|json]    show an image's manifest, layers, config and disk\n"
    "  load [-i FILE] [-t REF] [-q]        import a docker or OCI archive (capsa load)\n"
    "  save REF... [--format docker|oci]   write images as a tar archive (capsa save)\n"
    "  rm REF... [-q] [-f]                 remove references; an image's disk, manifest,\n"
    "                                      config and the layers no other image uses go\n"
    "                                      with its last reference; one a sandbox was\n"
    "                                      created from is kept unless -f is given\n"
    "\n"
    "REF is a reference as given to `capsa pull` (busybox means\n"
    "docker.io/library/busybox:latest) or a manifest digest (sha256:...).\n"
    "\n"
    "Examples:\n"
    "  capsa image ls --format json\n"
    "  capsa image inspect busybox\n"
    "  capsa image rm 127.0.0.1:5000/test/busybox\n";

static void fmt_size(int64_t b, char *out, size_t len)
{
    if (b >= 1 << 30)
        snprintf(out, len, "%.1fGB", (double)b / (1 << 30));
    else if (b >= 1 << 20)
        snprintf(out, len, "%.1fMB", (double)b / (1 << 20));
    else if (b >= 1 << 10)
        snprintf(out, len, "%.1fkB", (double)b / (1 << 10));
    else
        snprintf(out, len, "%lldB", (long long)b);
}

static void fmt_time(int64_t ms, char *out, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *image_json(struct capsa_store *store, const struct capsa_store_image *img, bool full)
{
    char created[32], updated[32];
    struct capsa_image_info info;
    capsa_err e = {0};
    json_t *o, *layers = json_array();

    fmt_time(img->created_at, created, sizeof(created));
    fmt_time(img->updated_at, updated, sizeof(updated));
    o = json_pack("{s:s, s:s, s:s?, s:s?, s:I, s:I, s:s, s:s}", "reference", img->reference,
                  "manifest_digest", img->manifest_digest, "media_type", img->media_type,
                  "config_digest", img->config_digest, "size", (json_int_t)img->size,
                  "layers_count", (json_int_t)img->n_layers, "created_at", created, "updated_at",
                  updated);
    if (!o || !layers) {
        if (o)
            json_decref(o);
        if (layers)
            json_decref(layers);
        return NULL;
    }
    if (capsa_image_lookup(img->reference, &info, &e) == 0) {
        json_object_set_new(o, "disk", json_string(info.disk));
        json_object_set_new(o, "config_path", json_string(info.config_path));
    } else {
        json_object_set_new(o, "disk", json_null());
    }
    if (!full) {
        json_decref(layers);
        return o;
    }
    for (size_t i = 0; i < img->n_layers; i++) {
        struct capsa_store_layer l = {0};
        if (capsa_store_layer_get(store, img->layer_digests[i], &l, NULL) == 0) {
            json_array_append_new(layers, json_pack("{s:s, s:s?, s:s?, s:I}", "digest", l.digest,
                                                    "diff_id", l.diff_id, "media_type",
                                                    l.media_type, "size", (json_int_t)l.size));
            capsa_store_layer_clear(&l);
        } else {
            json_array_append_new(layers, json_pack("{s:s}", "digest", img->layer_digests[i]));
        }
    }
    json_object_set_new(o, "layers", layers);
    if (img->config_json) {
        json_t *cfg = json_loads(img->config_json, 0, NULL);
        json_object_set_new(o, "config", cfg ? cfg : json_null());
    }
    return o;
}

static int image_ls(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"format", required_argument, NULL, 'F'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    _cleanup_(capsa_store_closep) struct capsa_store *store = NULL;
    struct capsa_store_image *v = NULL;
    size_t n = 0;
    capsa_err err = {0};
    bool json = false, quiet = false;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        if (c == 'F') {
            if (!strcmp(optarg, "json"))
                json = true;
            else if (strcmp(optarg, "table") != 0)
                return cli_fail("--format '%s': expected table or json", optarg);
        } else if (c == 'q') {
            quiet = true;
        } else if (c == 'h') {
            fputs(image_help, stdout);
            return 0;
        } else {
            fputs(image_help, stderr);
            return 2;
        }
    }
    if (optind != argc)
        return cli_fail("image ls: unexpected argument '%s'", argv[optind]);
    if (capsa_store_open(NULL, &store, &err) < 0 || capsa_store_image_list(store, &v, &n, &err) < 0)
        return cli_fail("image ls: %s", err.msg);
    if (json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, image_json(store, &v[i], false));
        char *s = json_dumps(arr, JSON_INDENT(2));
        printf("%s\n", s ? s : "[]");
        free(s);
        json_decref(arr);
    } else {
        if (!quiet)
            printf("%-50s %-19s %9s %s\n", "REFERENCE", "DIGEST", "SIZE", "CREATED");
        for (size_t i = 0; i < n; i++) {
            char sz[32], created[32];
            if (quiet) {
                printf("%s\n", v[i].reference);
                continue;
            }
            fmt_size(v[i].size, sz, sizeof(sz));
            fmt_time(v[i].created_at, created, sizeof(created));
            printf("%-50s %.19s %9s %s\n", v[i].reference, v[i].manifest_digest, sz, created);
        }
    }
    capsa_store_images_free(v, n);
    return 0;
}

static int image_inspect(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"format", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    _cleanup_(capsa_store_closep) struct capsa_store *store = NULL;
    struct capsa_store_image img = {0};
    capsa_err err = {0};
    char key[CAPSA_REF_MAX];
    bool json = false;
    json_t *o;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'F') {
            if (!strcmp(optarg, "json"))
                json = true;
            else if (strcmp(optarg, "text") != 0)
                return cli_fail("--format '%s': expected text or json", optarg);
        } else if (c == 'h') {
            fputs(image_help, stdout);
            return 0;
        } else {
            fputs(image_help, stderr);
            return 2;
        }
    }
    if (optind != argc - 1)
        return cli_fail("image inspect: expected exactly one REF");
    if (capsa_image_canonical(argv[optind], key, sizeof(key), &err) < 0 ||
        capsa_store_open(NULL, &store, &err) < 0 ||
        capsa_store_image_get(store, key, &img, &err) < 0)
        return cli_fail("image inspect %s: %s", argv[optind], err.msg);
    o = image_json(store, &img, true);
    if (!o) {
        capsa_store_image_clear(&img);
        return cli_fail("image inspect: out of memory");
    }
    if (json) {
        char *s = json_dumps(o, JSON_INDENT(2));
        printf("%s\n", s ? s : "{}");
        free(s);
    } else {
        char sz[32];
        json_t *cfg = json_object_get(o, "config"), *rt = json_object_get(cfg, "config");
        const char *k;
        json_t *val;
        fmt_size(img.size, sz, sizeof(sz));
        printf("Reference:  %s\nDigest:     %s\nMedia type: %s\nConfig:     %s\nSize:       %s\n"
               "Disk:       %s\n",
               img.reference, img.manifest_digest, img.media_type ? img.media_type : "-",
               img.config_digest ? img.config_digest : "-", sz,
               json_string_value(json_object_get(o, "disk")) ?: "(missing)");
        printf("Layers:\n");
        size_t i;
        json_array_foreach(json_object_get(o, "layers"), i, val)
        {
            char lsz[32];
            fmt_size((int64_t)json_integer_value(json_object_get(val, "size")), lsz, sizeof(lsz));
            printf("  %s %s\n", json_string_value(json_object_get(val, "digest")), lsz);
        }
        if (rt) {
            printf("Config:\n");
            json_object_foreach(rt, k, val)
            {
                char *s = json_dumps(val, JSON_COMPACT | JSON_ENCODE_ANY);
                printf("  %-11s %s\n", k, s ? s : "");
                free(s);
            }
        }
    }
    json_decref(o);
    capsa_store_image_clear(&img);
    return 0;
}

/* How many sandboxes were created from the reference (their stored image_ref). */
static int image_sandbox_users(const char *ref, size_t *n, capsa_err *err)
{
    _cleanup_(capsa_store_closep) struct capsa_store *st = NULL;
    char canon[CAPSA_REF_MAX + 80];

    *n = 0;
    if (capsa_image_canonical(ref, canon, sizeof(canon), err) < 0 ||
        capsa_store_open(NULL, &st, err) < 0 ||
        capsa_store_image_users(st, canon, n, NULL, err) < 0)
        return -1;
    return 0;
}

static int image_rm(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"quiet", no_argument, NULL, 'q'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    bool quiet = false, force = false;
    int c, rc = 0;

    optind = 1;
    while ((c = getopt_long(argc, argv, "qfh", longopts, NULL)) != -1) {
        if (c == 'q') {
            quiet = true;
        } else if (c == 'f') {
            force = true;
        } else if (c == 'h') {
            fputs(image_help, stdout);
            return 0;
        } else {
            fputs(image_help, stderr);
            return 2;
        }
    }
    if (optind >= argc)
        return cli_fail("image rm: expected at least one REF");
    for (int i = optind; i < argc; i++) {
        capsa_err err = {0};
        size_t users = 0;
        if (!force && image_sandbox_users(argv[i], &users, &err) < 0) {
            rc = cli_fail("image rm %s: %s", argv[i], err.msg);
            continue;
        }
        if (users) {
            rc = cli_fail("image rm %s: used by %zu sandbox(es) (remove them first, or use -f)",
                          argv[i], users);
            continue;
        }
        if (capsa_image_remove(argv[i], &err) < 0)
            rc = cli_fail("image rm %s: %s", argv[i], err.msg);
        else if (!quiet)
            printf("removed %s\n", argv[i]);
    }
    return rc;
}

static const char load_help[] =
    "Usage: capsa load [-i FILE] [-t REF] [-q]\n"
    "\n"
    "Import images from a tar archive: a docker-save archive (manifest.json, configs and\n"
    "layer tars) or an OCI image layout (oci-layout, index.json, blobs/sha256/...), plain\n"
    "or gzip/zstd compressed. Every blob is checked against its digest, stored once under\n"
    "$CAPSA_HOME/images/blobs, and the lower disk is built as for `capsa pull`, so the image\n"
    "runs without a registry. A bad archive leaves no image behind.\n"
    "\n"
    "Options:\n"
    "  -i, --input FILE   read FILE instead of stdin\n"
    "  -t, --tag REF      name the image REF (the archive must hold one image); needed when\n"
    "                     the archive names none\n"
    "  -q, --quiet        print nothing\n"
    "  -h, --help         show this help\n"
    "\n"
    "Prints \"Loaded image: REF\" per image. Also available as `capsa image load`.\n";

int cmd_load(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"input", required_argument, NULL, 'i'},
        {"tag", required_argument, NULL, 't'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *input = NULL, *tag = NULL;
    _cleanup_close_ int fd = -1;
    capsa_err err = {0};
    bool quiet = false;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+i:t:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'i':
            input = optarg;
            break;
        case 't':
            tag = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            fputs(load_help, stdout);
            return 0;
        default:
            fputs(load_help, stderr);
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "capsa load: unexpected argument '%s'\n\n%s", argv[optind], load_help);
        return 2;
    }
    if (input && strcmp(input, "-") != 0) {
        fd = open(input, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return cli_fail("load: open %s: %s", input, strerror(errno));
    } else if (isatty(STDIN_FILENO)) {
        return cli_fail("load: stdin is a terminal; give -i FILE or pipe an archive");
    }
    if (capsa_archive_load(fd >= 0 ? fd : STDIN_FILENO, tag,
                           quiet ? CAPSA_PROGRESS_NONE : CAPSA_PROGRESS_LINES,
                           quiet ? NULL : stdout, &err) < 0)
        return cli_fail("%s", err.msg);
    return 0;
}

static const char save_help[] =
    "Usage: capsa save [--format docker|oci] [-o FILE] [-q] REF...\n"
    "\n"
    "Write pulled or loaded images as a tar archive that `capsa load` (and docker load,\n"
    "skopeo, podman) can read: the stored manifest, config and layer blobs under\n"
    "blobs/sha256/, plus manifest.json (docker, the default) or oci-layout and index.json\n"
    "(oci).\n"
    "\n"
    "Options:\n"
    "      --format F     docker (default) or oci\n"
    "  -o, --output FILE  write FILE instead of stdout\n"
    "  -q, --quiet        print nothing\n"
    "  -h, --help         show this help\n"
    "\n"
    "Also available as `capsa image save`.\n";

int cmd_save(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"format", required_argument, NULL, 'F'},
        {"output", required_argument, NULL, 'o'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    enum capsa_archive_format format = CAPSA_ARCHIVE_DOCKER;
    const char *output = NULL;
    char tmp[4096] = "";
    _cleanup_close_ int fd = -1;
    capsa_err err = {0};
    bool quiet = false;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "+o:qh", longopts, NULL)) != -1) {
        switch (c) {
        case 'F':
            if (!strcmp(optarg, "docker") || !strcmp(optarg, "docker-archive"))
                format = CAPSA_ARCHIVE_DOCKER;
            else if (!strcmp(optarg, "oci") || !strcmp(optarg, "oci-archive"))
                format = CAPSA_ARCHIVE_OCI;
            else
                return cli_fail("save: --format '%s': expected docker or oci", optarg);
            break;
        case 'o':
            output = optarg;
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            fputs(save_help, stdout);
            return 0;
        default:
            fputs(save_help, stderr);
            return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "capsa save: expected at least one REF\n\n%s", save_help);
        return 2;
    }
    if (output && strcmp(output, "-") != 0) {
        snprintf(tmp, sizeof(tmp), "%s.tmp.%d", output, (int)getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return cli_fail("save: create %s: %s", tmp, strerror(errno));
    } else if (isatty(STDOUT_FILENO)) {
        return cli_fail("save: stdout is a terminal; give -o FILE or redirect");
    }
    if (capsa_archive_save((const char *const *)argv + optind, (size_t)(argc - optind), format,
                           fd >= 0 ? fd : STDOUT_FILENO, &err) < 0) {
        if (tmp[0])
            unlink(tmp);
        return cli_fail("%s", err.msg);
    }
    if (tmp[0]) {
        if (fsync(fd) < 0 || rename(tmp, output) < 0) {
            int e = errno;
            unlink(tmp);
            return cli_fail("save: write %s: %s", output, strerror(e));
        }
        if (!quiet)
            fprintf(stderr, "saved %d image(s) to %s\n", argc - optind, output);
    }
    return 0;
}

int cmd_image(int argc, char **argv)
{
    if (argc < 2) {
        fputs(image_help, stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(image_help, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "ls") || !strcmp(argv[1], "list"))
        return image_ls(argc - 1, argv + 1);
    if (!strcmp(argv[1], "inspect"))
        return image_inspect(argc - 1, argv + 1);
    if (!strcmp(argv[1], "rm") || !strcmp(argv[1], "remove"))
        return image_rm(argc - 1, argv + 1);
    if (!strcmp(argv[1], "load"))
        return cmd_load(argc - 1, argv + 1);
    if (!strcmp(argv[1], "save"))
        return cmd_save(argc - 1, argv + 1);
    return cli_fail("image: unknown command '%s' (see capsa image --help)", argv[1]);
}
