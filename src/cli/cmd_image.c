/* cmd_image.c - `capsa pull` and `capsa image ls|inspect|rm|prune`: OCI images from registries. */
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
#include "image/prune.h"
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
    "  rm REF... [-q] [-f]                 remove images; an image's disk, manifest,\n"
    "                                      config and the layers no other image uses go\n"
    "                                      with its last reference; one a sandbox or a\n"
    "                                      snapshot uses is kept unless -f is given\n"
    "  prune [-a] [-f] [--format F] [-q]   remove dangling (-a: all unused) images and\n"
    "                                      every unreferenced blob, disk, partial download\n"
    "                                      and free lock file (see image prune --help)\n"
    "\n"
    "REF is a reference as given to `capsa pull` (busybox means\n"
    "docker.io/library/busybox:latest), REPO@sha256:DIGEST, a manifest digest\n"
    "(sha256:<64 hex>, every reference to it) or a unique digest prefix of at least 12 hex\n"
    "digits (sha256:0123456789ab or 0123456789ab).\n"
    "\n"
    "Examples:\n"
    "  capsa image ls --format json\n"
    "  capsa image inspect busybox\n"
    "  capsa image rm 127.0.0.1:5000/test/busybox\n"
    "  capsa image rm 3f2a9c1d7e4b\n"
    "  capsa image prune -a -f\n";

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
    json_t *o, *layers;

    fmt_time(img->created_at, created, sizeof(created));
    fmt_time(img->updated_at, updated, sizeof(updated));
    o = json_pack("{s:s, s:s, s:s?, s:s?, s:I, s:I, s:s, s:s}", "reference", img->reference,
                  "manifest_digest", img->manifest_digest, "media_type", img->media_type,
                  "config_digest", img->config_digest, "size", (json_int_t)img->size,
                  "layers_count", (json_int_t)img->n_layers, "created_at", created, "updated_at",
                  updated);
    if (!o)
        return NULL;
    if (capsa_image_lookup(img->reference, &info, &e) == 0) {
        json_object_set_new(o, "disk", json_string(info.disk));
        json_object_set_new(o, "config_path", json_string(info.config_path));
    } else {
        json_object_set_new(o, "disk", json_null());
    }
    if (!full)
        return o;
    layers = json_array();
    if (!layers) {
        json_decref(o);
        return NULL;
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

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2));
    printf("%s\n", s ? s : "null");
    free(s);
}

/* The human form of one image's full description (inspect). */
static void print_image_text(const struct capsa_store_image *img, json_t *o)
{
    char sz[32];
    json_t *cfg = json_object_get(o, "config"), *rt = json_object_get(cfg, "config"), *val;
    const char *k;
    size_t i;

    fmt_size(img->size, sz, sizeof(sz));
    printf("Reference:  %s\nDigest:     %s\nMedia type: %s\nConfig:     %s\nSize:       %s\n"
           "Disk:       %s\n",
           img->reference, img->manifest_digest, img->media_type ? img->media_type : "-",
           img->config_digest ? img->config_digest : "-", sz,
           json_string_value(json_object_get(o, "disk")) ?: "(missing)");
    printf("Layers:\n");
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

/* The one printer of `image ls` (full = false: a table, references only with quiet, or a
 * JSON array) and `image inspect` (full = true: text, or one JSON object per image). */
static int print_images(struct capsa_store *store, const struct capsa_store_image *v, size_t n,
                        bool full, bool json, bool quiet)
{
    json_t *arr = NULL;

    if (json && !full && !(arr = json_array()))
        return cli_fail("image: out of memory");
    if (!json && !full && !quiet)
        printf("%-50s %-19s %9s %s\n", "REFERENCE", "DIGEST", "SIZE", "CREATED");
    for (size_t i = 0; i < n; i++) {
        char sz[32], created[32];
        json_t *o;
        if (!json && !full) {
            if (quiet) {
                printf("%s\n", v[i].reference);
                continue;
            }
            fmt_size(v[i].size, sz, sizeof(sz));
            fmt_time(v[i].created_at, created, sizeof(created));
            printf("%-50s %.19s %9s %s\n", v[i].reference, v[i].manifest_digest, sz, created);
            continue;
        }
        o = image_json(store, &v[i], full);
        if (!o) {
            if (arr)
                json_decref(arr);
            return cli_fail("image: out of memory");
        }
        if (arr)
            json_array_append_new(arr, o);
        else {
            if (json)
                print_json(o);
            else
                print_image_text(&v[i], o);
            json_decref(o);
        }
    }
    if (arr) {
        print_json(arr);
        json_decref(arr);
    }
    return 0;
}

/* --format VALUE where `other` is the non-JSON name ("table" or "text"). */
static int parse_format(const char *v, const char *other, bool *json)
{
    if (!strcmp(v, "json"))
        *json = true;
    else if (!strcmp(v, other))
        *json = false;
    else
        return cli_fail("--format '%s': expected %s or json", v, other);
    return 0;
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
    int c, rc;

    optind = 1;
    while ((c = getopt_long(argc, argv, "qh", longopts, NULL)) != -1) {
        if (c == 'F') {
            if (parse_format(optarg, "table", &json) != 0)
                return 1;
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
    rc = print_images(store, v, n, false, json, quiet);
    capsa_store_images_free(v, n);
    return rc;
}

static int image_inspect(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"format", required_argument, NULL, 'F'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    _cleanup_(capsa_store_closep) struct capsa_store *store = NULL;
    _cleanup_free_ bool *sel = NULL;
    struct capsa_store_image *v = NULL;
    struct capsa_image_key key;
    size_t n = 0;
    capsa_err err = {0};
    bool json = false;
    int c, rc = 1;

    optind = 1;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'F') {
            if (parse_format(optarg, "text", &json) != 0)
                return 1;
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
    if (capsa_image_key_parse(argv[optind], &key, &err) < 0 ||
        capsa_store_open(NULL, &store, &err) < 0 || capsa_store_image_list(store, &v, &n, &err) < 0)
        return cli_fail("image inspect %s: %s", argv[optind], err.msg);
    sel = calloc(n ? n : 1, sizeof(*sel));
    if (!sel)
        rc = cli_fail("image inspect: out of memory");
    else if (capsa_image_key_select(&key, argv[optind], v, n, sel, &err) < 0)
        rc = cli_fail("image inspect: %s", err.msg);
    else
        for (size_t i = 0; i < n; i++)
            if (sel[i]) { /* a digest naming several references shows the first */
                rc = print_images(store, &v[i], 1, true, json, false);
                break;
            }
    capsa_store_images_free(v, n);
    return rc;
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
        _cleanup_strv_ char **removed = NULL;
        capsa_err err = {0};
        int r = capsa_image_rm(argv[i], force, &removed, &err);
        for (char **p = removed; !quiet && p && *p; p++)
            printf("removed %s\n", *p);
        if (r < 0)
            rc = cli_fail("image rm: %s", err.msg);
    }
    return rc;
}

static const char prune_help[] =
    "Usage: capsa image prune [-a] [-f] [--format table|json] [-q]\n"
    "\n"
    "Remove unused images and every file of the image store that no remaining image needs.\n"
    "\n"
    "An image is used while a sandbox (in any status) was created from it or pins its\n"
    "manifest digest, or a snapshot names it; used images are never pruned. Without -a only\n"
    "dangling images go: those whose references are all digest-only (REPO@sha256:..., no\n"
    "tag). With -a every unused image goes, tagged or not.\n"
    "\n"
    "Then, whatever -a says, prune deletes the blobs (manifests, indexes, configs, layers),\n"
    "lower disks, partial downloads and temporary files that no remaining image references\n"
    "(for example the old disk of a tag that was pulled again, or what a failed or\n"
    "interrupted pull left behind), and the lock files nobody holds. It waits for pulls\n"
    "and loads in progress to finish first; anything whose lock another process holds is\n"
    "kept and listed.\n"
    "\n"
    "Options:\n"
    "  -a, --all            remove every unused image, not just dangling ones\n"
    "  -f, --force, -y, --yes\n"
    "                       do not ask for confirmation (asked only on a terminal)\n"
    "      --format F       table (default) or json\n"
    "  -q, --quiet          print nothing (json is still printed with --format json)\n"
    "  -h, --help           show this help\n";

static void print_prune_table(const struct capsa_image_prune_report *r)
{
    static const char *const plural[] = {"blobs", "disks", "partial downloads", "temp entries",
                                         "lock files"};
    char sz[32];

    for (size_t i = 0; i < r->n_images; i++)
        printf("Deleted image: %s (%s)\n", r->images[i].name, r->images[i].digest);
    for (size_t i = 0; i < r->n_files; i++) {
        fmt_size(r->files[i].bytes, sz, sizeof(sz));
        printf("Deleted %-7s %s (%s)\n", capsa_prune_kind_name(r->files[i].kind), r->files[i].name,
               sz);
    }
    for (size_t i = 0; i < r->n_kept; i++)
        printf("Kept (in use by another process): %s\n", r->kept[i].name);
    printf("Removed %zu image reference(s), %zu manifest(s), %zu layer(s);", r->n_images,
           r->manifests_removed, r->layers_removed);
    for (size_t k = 0; k < CAPSA_PRUNE_KIND_COUNT; k++)
        printf(" %zu %s%s", r->n_by_kind[k], plural[k], k + 1 < CAPSA_PRUNE_KIND_COUNT ? "," : "");
    fmt_size(r->bytes_reclaimed, sz, sizeof(sz));
    printf("\nTotal reclaimed space: %s\n", sz);
}

static json_t *prune_json(const struct capsa_image_prune_report *r)
{
    json_t *o = json_object(), *imgs = json_array(), *files = json_array(), *kept = json_array(),
           *counts = json_object();

    if (!o || !imgs || !files || !kept || !counts) {
        json_decref(o);
        json_decref(imgs);
        json_decref(files);
        json_decref(kept);
        json_decref(counts);
        return NULL;
    }
    for (size_t i = 0; i < r->n_images; i++)
        json_array_append_new(imgs, json_pack("{s:s, s:s}", "reference", r->images[i].name,
                                              "manifest_digest", r->images[i].digest));
    for (size_t i = 0; i < r->n_files; i++)
        json_array_append_new(
            files, json_pack("{s:s, s:s, s:I}", "kind", capsa_prune_kind_name(r->files[i].kind),
                             "path", r->files[i].name, "bytes", (json_int_t)r->files[i].bytes));
    for (size_t i = 0; i < r->n_kept; i++)
        json_array_append_new(kept, json_pack("{s:s}", "path", r->kept[i].name));
    for (size_t k = 0; k < CAPSA_PRUNE_KIND_COUNT; k++)
        json_object_set_new(counts, capsa_prune_kind_name(k),
                            json_integer((json_int_t)r->n_by_kind[k]));
    json_object_set_new(o, "images_removed", imgs);
    json_object_set_new(o, "manifests_removed", json_integer((json_int_t)r->manifests_removed));
    json_object_set_new(o, "layers_removed", json_integer((json_int_t)r->layers_removed));
    json_object_set_new(o, "files_removed", files);
    json_object_set_new(o, "files_removed_by_kind", counts);
    json_object_set_new(o, "kept", kept);
    json_object_set_new(o, "bytes_reclaimed", json_integer((json_int_t)r->bytes_reclaimed));
    return o;
}

static int image_prune(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"all", no_argument, NULL, 'a'},
        {"force", no_argument, NULL, 'f'},
        {"yes", no_argument, NULL, 'y'},
        {"format", required_argument, NULL, 'F'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct capsa_image_prune_opts o = {0};
    struct capsa_image_prune_report rep;
    capsa_err err = {0};
    bool json = false, quiet = false, force = false;
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "afyqh", longopts, NULL)) != -1) {
        switch (c) {
        case 'a':
            o.all = true;
            break;
        case 'f':
        case 'y':
            force = true;
            break;
        case 'F':
            if (parse_format(optarg, "table", &json) != 0)
                return 1;
            break;
        case 'q':
            quiet = true;
            break;
        case 'h':
            fputs(prune_help, stdout);
            return 0;
        default:
            fputs(prune_help, stderr);
            return 2;
        }
    }
    if (optind != argc)
        return cli_fail("image prune: unexpected argument '%s'", argv[optind]);
    if (!force && isatty(STDIN_FILENO)) {
        char line[16] = "";
        fprintf(stderr,
                "WARNING! This will remove %s and every unreferenced file of the image store.\n"
                "Are you sure you want to continue? [y/N] ",
                o.all ? "all images no sandbox or snapshot uses" : "all dangling images");
        if (!fgets(line, sizeof(line), stdin) || (line[0] != 'y' && line[0] != 'Y'))
            return cli_fail("image prune: not confirmed; nothing removed");
    }
    o.quiet = quiet;
    if (capsa_image_prune(&o, &rep, &err) < 0) {
        capsa_image_prune_report_clear(&rep);
        return cli_fail("%s", err.msg);
    }
    if (json) {
        json_t *j = prune_json(&rep);
        if (!j) {
            capsa_image_prune_report_clear(&rep);
            return cli_fail("image prune: out of memory");
        }
        print_json(j);
        json_decref(j);
    } else if (!quiet) {
        print_prune_table(&rep);
    }
    capsa_image_prune_report_clear(&rep);
    return 0;
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
    if (!strcmp(argv[1], "prune"))
        return image_prune(argc - 1, argv + 1);
    if (!strcmp(argv[1], "load"))
        return cmd_load(argc - 1, argv + 1);
    if (!strcmp(argv[1], "save"))
        return cmd_save(argc - 1, argv + 1);
    return cli_fail("image: unknown command '%s' (see capsa image --help)", argv[1]);
}
