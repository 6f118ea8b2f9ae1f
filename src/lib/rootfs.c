/* rootfs.c - resolve a root source (directory, disk image, OCI image) for capsa_boot (see
 * rootfs.h): pull policy, upper disks, image config defaults. */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "common/log.h"
#include "common/paths.h"
#include "common/units.h"
#include "image/ref.h"
#include "lib/rootfs.h"

extern char **environ;

#define MAX_CONFIG_BYTES (8u << 20)
#define MAX_STRV_ITEMS   4096
#define MAX_STRV_ITEM    65536

int capsa_pull_policy_parse(const char *s, enum capsa_pull_policy *out, capsa_err *err)
{
    if (s && (!strcmp(s, "if-missing") || !strcmp(s, "missing")))
        *out = CAPSA_PULL_IF_MISSING;
    else if (s && !strcmp(s, "always"))
        *out = CAPSA_PULL_ALWAYS;
    else if (s && !strcmp(s, "never"))
        *out = CAPSA_PULL_NEVER;
    else
        return capsa_err_set(
            err, EINVAL, "pull policy \"%s\": expected always, if-missing or never", s ? s : "");
    return 0;
}

static bool fstype_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 31)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '_' ||
              *s == '-'))
            return false;
    return true;
}

static bool is_path(const char *s)
{
    return s[0] == '/' || s[0] == '.';
}

/* "PATH[:format=F][,fstype=T]" */
static int parse_disk_image_spec(const char *spec, struct capsa_root_disk *out, capsa_err *err)
{
    const char *colon = strstr(spec, ":format=");
    const char *opts = NULL;
    size_t plen;

    if (!colon)
        colon = strstr(spec, ":fstype=");
    plen = colon ? (size_t)(colon - spec) : strlen(spec);
    if (colon)
        opts = colon + 1;
    if (plen == 0 || plen >= sizeof(out->path))
        return capsa_err_set(err, EINVAL, "root disk \"%s\": expected PATH[:format=..,fstype=..]",
                             spec);
    memcpy(out->path, spec, plen);
    out->path[plen] = '\0';
    out->kind = CAPSA_ROOT_DISK_DISK_IMAGE;
    out->format = CAPSA_VM_DISK_RAW;
    while (opts && *opts) {
        const char *end = strchrnul(opts, ',');
        char item[64];
        size_t n = (size_t)(end - opts);
        if (n >= sizeof(item))
            return capsa_err_set(err, EINVAL, "root disk \"%s\": option too long", spec);
        memcpy(item, opts, n);
        item[n] = '\0';
        if (!strncmp(item, "format=", 7)) {
            if (capsa_vm_disk_format_parse(item + 7, &out->format, err) < 0)
                return capsa_err_prefix(err, "root disk \"%s\"", spec);
        } else if (!strncmp(item, "fstype=", 7)) {
            if (!fstype_ok(item + 7))
                return capsa_err_set(err, EINVAL,
                                     "root disk \"%s\": fstype: expected 1-31 characters of "
                                     "[a-z0-9._-]",
                                     spec);
            snprintf(out->fstype, sizeof(out->fstype), "%s", item + 7);
        } else {
            return capsa_err_set(err, EINVAL,
                                 "root disk \"%s\": unknown option \"%s\" (expected format= or "
                                 "fstype=)",
                                 spec, item);
        }
        opts = *end ? end + 1 : end;
    }
    return 0;
}

int capsa_root_disk_parse(const char *spec, struct capsa_root_disk *out, capsa_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!spec || !*spec)
        return capsa_err_set(err, EINVAL,
                             "root disk: empty (expected SIZE, tmpfs[:SIZE] or PATH[:format=..])");
    if (is_path(spec))
        return parse_disk_image_spec(spec, out, err);
    if (!strncmp(spec, "tmpfs", 5) && (spec[5] == '\0' || spec[5] == ':')) {
        out->kind = CAPSA_ROOT_DISK_TMPFS;
        if (spec[5] == ':' && capsa_parse_size_mib(spec + 6, &out->size_mib, err) < 0)
            return capsa_err_prefix(err, "root disk \"%s\"", spec);
        if (spec[5] == ':' && out->size_mib == 0)
            return capsa_err_set(err, EINVAL, "root disk \"%s\": size must be at least 1M", spec);
        return 0;
    }
    out->kind = CAPSA_ROOT_DISK_MANAGED;
    if (capsa_parse_size_mib(spec, &out->size_mib, err) < 0)
        return capsa_err_prefix(err, "root disk \"%s\" (expected SIZE, tmpfs[:SIZE] or PATH)",
                                spec);
    if (out->size_mib < 64 || out->size_mib > (16ull << 20))
        return capsa_err_set(err, EINVAL, "root disk \"%s\": size must be between 64M and 16T",
                             spec);
    return 0;
}

/* ---- image config ---- */

static int strv_from_json(json_t *a, const char *what, char ***out, capsa_err *err)
{
    json_t *it;
    size_t i;
    char **v;

    *out = NULL;
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a) || json_array_size(a) > MAX_STRV_ITEMS)
        return capsa_err_set(err, EINVAL,
                             "image config: %s: expected an array of at most %d strings", what,
                             MAX_STRV_ITEMS);
    v = calloc(json_array_size(a) + 1, sizeof(*v));
    if (!v)
        return capsa_err_set(err, ENOMEM, "out of memory");
    json_array_foreach(a, i, it)
    {
        const char *s = json_string_value(it);
        if (!s || strlen(s) != json_string_length(it) || json_string_length(it) > MAX_STRV_ITEM ||
            !(v[i] = strdup(s))) {
            capsa_strvfreep(&v);
            return capsa_err_set(err, EINVAL, "image config: %s[%zu]: expected a string", what, i);
        }
    }
    *out = v;
    return 0;
}

static int str_from_json(json_t *s, const char *what, char **out, capsa_err *err)
{
    *out = NULL;
    if (!s || json_is_null(s) || (json_is_string(s) && json_string_length(s) == 0))
        return 0;
    if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s) ||
        json_string_length(s) > 4096)
        return capsa_err_set(err, EINVAL, "image config: %s: expected a string", what);
    *out = strdup(json_string_value(s));
    return *out ? 0 : capsa_err_set(err, ENOMEM, "out of memory");
}

static int load_image_config(struct capsa_rootfs *r, capsa_err *err)
{
    json_error_t je;
    json_t *j = json_load_file(r->image.config_path, JSON_REJECT_DUPLICATES, &je), *c;
    int rc = -1;

    if (!j)
        return capsa_err_set(err, EINVAL, "image config %s: %s (line %d)", r->image.config_path,
                             je.text, je.line);
    c = json_object_get(j, "config");
    if (c && !json_is_null(c) && !json_is_object(c)) {
        capsa_err_set(err, EINVAL, "image config %s: config: expected an object",
                      r->image.config_path);
        goto out;
    }
    if (strv_from_json(json_object_get(c, "Env"), "Env", &r->env, err) < 0 ||
        strv_from_json(json_object_get(c, "Entrypoint"), "Entrypoint", &r->entrypoint, err) < 0 ||
        strv_from_json(json_object_get(c, "Cmd"), "Cmd", &r->cmd, err) < 0 ||
        str_from_json(json_object_get(c, "WorkingDir"), "WorkingDir", &r->workdir, err) < 0 ||
        str_from_json(json_object_get(c, "User"), "User", &r->user, err) < 0)
        goto out;
    for (char **e = r->env; e && *e; e++)
        if (!strchr(*e, '=') || **e == '=') {
            capsa_err_set(err, EINVAL, "image config: Env: \"%.64s\" is not KEY=VALUE", *e);
            goto out;
        }
    if (r->workdir && r->workdir[0] != '/') {
        capsa_err_set(err, EINVAL, "image config: WorkingDir \"%.64s\" is not absolute",
                      r->workdir);
        goto out;
    }
    rc = 0;
out:
    json_decref(j);
    return rc;
}

/* ---- upper disk ---- */

/* Run an e2fsprogs tool: argv[0] from PATH, else from /usr/sbin or /sbin; input (may be NULL)
 * on its stdin. Its stderr, and its stdout unless out_ok, end up in *out (NUL-terminated,
 * at most outsz - 1 bytes). Returns the exit status (0-255), or -1 with err set when it
 * could not run or was killed. Inputs are short: written whole before the output is read. */
static int run_tool(char *const argv[], const char *input, bool out_ok, char *out, size_t outsz,
                    capsa_err *err)
{
    char alt1[64], alt2[64];
    const char *alts[] = {argv[0], alt1, alt2};
    posix_spawn_file_actions_t fa;
    int outp[2], inp[2] = {-1, -1}, status, rc = ENOENT;
    size_t got = 0;
    pid_t pid = -1;

    snprintf(alt1, sizeof(alt1), "/usr/sbin/%s", argv[0]);
    snprintf(alt2, sizeof(alt2), "/sbin/%s", argv[0]);
    out[0] = '\0';
    if (pipe2(outp, O_CLOEXEC) < 0)
        return capsa_err_set(err, errno, "pipe: %s", strerror(errno));
    if (input && pipe2(inp, O_CLOEXEC) < 0) {
        int e = errno;
        close(outp[0]);
        close(outp[1]);
        return capsa_err_set(err, e, "pipe: %s", strerror(e));
    }
    posix_spawn_file_actions_init(&fa);
    if (input)
        posix_spawn_file_actions_adddup2(&fa, inp[0], 0);
    else
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (out_ok)
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    else
        posix_spawn_file_actions_adddup2(&fa, outp[1], 1);
    posix_spawn_file_actions_adddup2(&fa, outp[1], 2);
    for (size_t i = 0; i < ARRAY_SIZE(alts) && rc == ENOENT; i++)
        rc = i == 0 ? posix_spawnp(&pid, alts[i], &fa, NULL, argv, environ)
                    : posix_spawn(&pid, alts[i], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(outp[1]);
    if (input) {
        close(inp[0]);
        if (rc == 0) {
            /* a few hundred bytes: the pipe holds them all */
            size_t len = strlen(input), off = 0;
            while (off < len) {
                ssize_t n = write(inp[1], input + off, len - off);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n <= 0)
                    break;
                off += (size_t)n;
            }
        }
        close(inp[1]);
    }
    if (rc != 0) {
        close(outp[0]);
        return capsa_err_set(err, rc, "%s: %s (install e2fsprogs)", argv[0], strerror(rc));
    }
    for (;;) {
        char buf[512];
        ssize_t n = read(outp[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (got + 1 < outsz) {
            size_t k = (size_t)n < outsz - 1 - got ? (size_t)n : outsz - 1 - got;
            memcpy(out + got, buf, k);
            got += k;
        }
    }
    close(outp[0]);
    out[got] = '\0';
    for (char *c = out; *c; c++)
        if (*c == '\n')
            *c = ' ';
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return capsa_err_set(err, errno, "%s: wait: %s", argv[0], strerror(errno));
    if (!WIFEXITED(status))
        return capsa_err_set(err, EIO, "%s killed by signal %d: %s", argv[0], WTERMSIG(status),
                             out);
    return WEXITSTATUS(status);
}

/* What overlayfs needs on the upper, made at format time: upper/, work/ and work/work, the
 * last empty and of mode 0, as overlayfs itself leaves it. With capsa's kernel patch 0002
 * (guest/kernel/patches/) the guest then creates nothing on the upper at mount: ext4's
 * mkdir code runs (and, under TCG, is translated) only when a command writes (~770 blocks,
 * ~6 ms per boot). debugfs exits 0 whatever happens: only its banner may be on stderr. */
static const char upper_dirs_script[] = "mkdir upper\n"
                                        "mkdir work\n"
                                        "mkdir work/work\n"
                                        "sif work mode 040700\n"
                                        "sif work/work mode 040000\n";

static int make_upper_dirs(const char *path, capsa_err *err)
{
    char *argv[] = {"debugfs", "-w", "-f", "-", (char *)path, NULL};
    char out[1024];
    int st = run_tool(argv, upper_dirs_script, true, out, sizeof(out), err);
    const char *end;

    if (st < 0)
        return -1;
    end = strchr(out, ')'); /* of the banner, all it may print: "debugfs 1.47.0 (5-Feb-2023) " */
    if (st != 0 || strncmp(out, "debugfs ", 8) != 0 || !end || end[1 + strspn(end + 1, " ")])
        return capsa_err_set(err, EIO, "debugfs %s: making upper/ and work/ failed (status %d): %s",
                             path, st, out);
    return 0;
}

/* Format path (a new file) as ext4 of size_mib with mkfs.ext4, and make overlayfs'
 * directories on it. A scratch upper (one that dies with its run) has neither journal nor
 * metadata checksums: there is nothing to recover or to keep after a crash, and under TCG
 * the guest's first use of that code is translated for every run (~5-10 ms for jbd2, ~7 ms
 * for crc32c at mount and first mkdir). Both kinds keep small directories and files inside
 * their inodes (inline_data), so a command's first small writes allocate no blocks. */
static int mkfs_upper(const char *path, uint64_t size_mib, unsigned flags, capsa_err *err)
{
    /* 4 KiB blocks at every size (mke2fs.conf would pick 1 KiB below 512 MiB): the VM can
     * then present a scratch upper with 4 KiB logical blocks (see capsa_rootfs_resolve) */
    char *argv[] = {"mkfs.ext4", "-q", "-F", "-b", "4096", "-m", "0", "-O",
                    /* uninit_bg: without metadata_csum it is what keeps the inode
                     * tables lazy (unwritten), else mkfs zeroes 64 MiB of them per 4 GiB */
                    flags & CAPSA_UPPER_SCRATCH
                        ? "^has_journal,^metadata_csum,uninit_bg,inline_data"
                        : "inline_data",
                    "-E", "root_owner=0:0,nodiscard,lazy_itable_init=1,lazy_journal_init=1",
                    (char *)path, NULL};
    _cleanup_close_ int fd = -1;
    char msg[1024];
    int st;

    if (size_mib == 0)
        size_mib = CAPSA_ROOT_DISK_DEFAULT_MIB;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return capsa_err_set(err, errno, "root disk %s: %s", path, strerror(errno));
    if (ftruncate(fd, (off_t)(size_mib << 20)) < 0) {
        int e = errno;
        unlink(path);
        return capsa_err_set(err, e, "root disk %s: size %llu MiB: %s", path,
                             (unsigned long long)size_mib, strerror(e));
    }
    st = run_tool(argv, NULL, false, msg, sizeof(msg), err);
    if (st != 0) {
        unlink(path);
        if (st < 0)
            return -1;
        return capsa_err_set(err, EIO, "mkfs.ext4 %s failed (status %d): %s", path, st, msg);
    }
    if (make_upper_dirs(path, err) < 0) {
        unlink(path);
        return -1;
    }
    return 0;
}

/* Copy the sparse file src to the new file dst: only its data extents (SEEK_DATA/SEEK_HOLE)
 * are copied, in the kernel (copy_file_range), so dst is as sparse as src. */
static int sparse_copy(const char *src, const char *dst, capsa_err *err)
{
    _cleanup_close_ int in = open(src, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    _cleanup_close_ int out = -1;
    struct stat st;
    off_t off = 0;

    if (in < 0 || fstat(in, &st) < 0)
        return capsa_err_set(err, errno, "root disk template %s: %s", src, strerror(errno));
    out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0)
        return capsa_err_set(err, errno, "root disk %s: %s", dst, strerror(errno));
    if (ftruncate(out, st.st_size) < 0)
        goto fail;
    while (off < st.st_size) {
        off_t data = lseek(in, off, SEEK_DATA), hole;
        if (data < 0) {
            if (errno == ENXIO)
                break; /* only a hole is left */
            goto fail;
        }
        hole = lseek(in, data, SEEK_HOLE);
        if (hole < 0)
            goto fail;
        for (loff_t ri = data, wi = data; ri < hole;) {
            ssize_t n = copy_file_range(in, &ri, out, &wi, (size_t)(hole - ri), 0);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (n == 0)
                    errno = EIO;
                goto fail;
            }
        }
        off = hole;
    }
    return 0;
fail : {
    int e = errno;
    unlink(dst);
    return capsa_err_set(err, e, "root disk %s: copy from %s: %s", dst, src, strerror(e));
}
}

/* Formatting costs a mkfs.ext4 run per sandbox (~15-30 ms); a pristine upper of each size and
 * kind is made once under $CAPSA_HOME/cache/upper/ and copied. The name carries the mkfs
 * options' version: change UPPER_TEMPLATE_VERSION with them. */
#define UPPER_TEMPLATE_VERSION 6

int capsa_rootfs_make_upper(const char *path, uint64_t size_mib, unsigned flags, capsa_err *err)
{
    char dir[PATH_MAX], tmpl[PATH_MAX + 64], tmp[PATH_MAX + 96];
    struct stat st;
    capsa_err e = {0};

    if (size_mib == 0)
        size_mib = CAPSA_ROOT_DISK_DEFAULT_MIB;
    if (capsa_path(dir, sizeof(dir), &e, "cache/upper") < 0 || capsa_mkdir_p(dir, 0700, &e) < 0)
        goto direct;
    snprintf(tmpl, sizeof(tmpl), "%s/ext4-%llum-v%d%s.img", dir, (unsigned long long)size_mib,
             UPPER_TEMPLATE_VERSION, flags & CAPSA_UPPER_SCRATCH ? "-scratch" : "");
    if (lstat(tmpl, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size != (off_t)(size_mib << 20)) {
        /* made under a private name and renamed: a template is whole or absent */
        snprintf(tmp, sizeof(tmp), "%s.%d.tmp", tmpl, (int)getpid());
        unlink(tmp);
        if (mkfs_upper(tmp, size_mib, flags, err) < 0)
            return -1;
        if (rename(tmp, tmpl) < 0) {
            unlink(tmp);
            goto direct;
        }
    }
    if (sparse_copy(tmpl, path, &e) == 0)
        return 0;
    if (e.code == EEXIST)
        return capsa_err_set(err, e.code, "%s", e.msg);
    log_debug("upper template %s: %s; formatting %s directly", tmpl, e.msg, path);
direct:
    return mkfs_upper(path, size_mib, flags, err);
}

/* ---- resolve ---- */

static struct capsa_vm_disk *add_disk(struct capsa_rootfs *r, const char *path,
                                      enum capsa_vm_disk_format f, bool readonly,
                                      const char *serial)
{
    size_t i = r->ndisks++;
    snprintf(r->disk_paths[i], sizeof(r->disk_paths[i]), "%s", path);
    r->disks[i] = (struct capsa_vm_disk){
        .path = r->disk_paths[i], .format = f, .readonly = readonly, .serial = serial};
    return &r->disks[i];
}

/* The boot message gives capsa's own (raw) disks their size in 512-byte sectors: the agent
 * then finds each as the only disk of that size and read-only flag, without a request to
 * the device for its serial (agent/boot.c). 0 (not given) when it cannot tell. */
static void set_sectors(json_t *disk, const char *path)
{
    struct stat st;

    if (disk && stat(path, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        st.st_size % 512 == 0)
        json_object_set_new(disk, "sectors", json_integer((json_int_t)(st.st_size / 512)));
}

static enum capsa_vm_disk_format format_from_name(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && !strcmp(dot, ".qcow2"))
        return CAPSA_VM_DISK_QCOW2;
    if (dot && !strcmp(dot, ".vmdk"))
        return CAPSA_VM_DISK_VMDK;
    return CAPSA_VM_DISK_RAW;
}

static int resolve_path(const struct capsa_rootfs_spec *spec, struct capsa_rootfs *r,
                        capsa_err *err)
{
    struct stat st;
    enum capsa_vm_disk_format f;

    if (!realpath(spec->source, r->dir) || stat(r->dir, &st) < 0)
        return capsa_err_set(err, errno, "root '%s': not a directory or disk image file (%s)",
                             spec->source, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        r->kind = CAPSA_ROOTFS_DIR;
        r->root = json_pack("{s:s, s:s}", "kind", "9p", "tag", "capsa.root");
        return r->root ? 0 : capsa_err_set(err, ENOMEM, "out of memory");
    }
    if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
        return capsa_err_set(err, EINVAL, "root '%s': expected a directory or a disk image file",
                             spec->source);
    r->kind = CAPSA_ROOTFS_DISK;
    f = format_from_name(r->dir);
    if (spec->disk_format && capsa_vm_disk_format_parse(spec->disk_format, &f, err) < 0)
        return capsa_err_prefix(err, "root '%s'", spec->source);
    if (spec->disk_fstype && !fstype_ok(spec->disk_fstype))
        return capsa_err_set(err, EINVAL,
                             "root fstype \"%s\": expected 1-31 characters of [a-z0-9._-]",
                             spec->disk_fstype);
    add_disk(r, r->dir, f, false, CAPSA_SERIAL_ROOT);
    r->dir[0] = '\0';
    r->root = json_pack("{s:s, s:s}", "kind", "disk", "serial", CAPSA_SERIAL_ROOT);
    if (r->root && spec->disk_fstype)
        json_object_set_new(r->root, "fstype", json_string(spec->disk_fstype));
    return r->root ? 0 : capsa_err_set(err, ENOMEM, "out of memory");
}

static int find_image(const struct capsa_rootfs_spec *spec, struct capsa_image_info *info,
                      capsa_err *err)
{
    struct capsa_image_pull_opts po = {0};
    capsa_err e = {0};

    if (spec->pull)
        po = *spec->pull;
    if (spec->pull_policy != CAPSA_PULL_ALWAYS) {
        if (capsa_image_lookup(spec->source, info, &e) == 0)
            return 0;
        if (e.code != ENOENT) {
            *err = e;
            return -1;
        }
        if (spec->pull_policy == CAPSA_PULL_NEVER)
            return capsa_err_set(err, ENOENT,
                                 "image %s is not in the local store and the pull policy is "
                                 "never (run capsa pull %s, or use --pull if-missing)",
                                 spec->source, spec->source);
    } else {
        po.refresh = true;
    }
    if (capsa_image_pull(spec->source, &po, info, err) < 0)
        return capsa_err_prefix(err, "pulling %s", spec->source);
    return 0;
}

static int resolve_image(const struct capsa_rootfs_spec *spec, struct capsa_rootfs *r,
                         capsa_err *err)
{
    static const struct capsa_root_disk managed = {.kind = CAPSA_ROOT_DISK_MANAGED};
    const struct capsa_root_disk *rd = spec->root_disk ? spec->root_disk : &managed;
    struct capsa_image_ref ref;
    json_t *upper = NULL;

    r->kind = CAPSA_ROOTFS_IMAGE;
    if (find_image(spec, &r->image, err) < 0)
        return -1;
    /* pin: everything below uses the manifest digest, never the tag again */
    if (capsa_image_ref_parse(r->image.reference, &ref, NULL) == 0) {
        ref.tag[0] = '\0';
        snprintf(ref.digest, sizeof(ref.digest), "%s", r->image.manifest_digest);
        capsa_image_ref_format(&ref, r->pinned, sizeof(r->pinned));
    } else {
        snprintf(r->pinned, sizeof(r->pinned), "%s", r->image.manifest_digest);
    }
    if (load_image_config(r, err) < 0)
        return -1;
    /* capsa's erofs lowers have 4 KiB blocks and a size that is a multiple of them: a disk
     * of 4 KiB logical blocks spares the guest's block layer a block-size change (and the
     * page-cache flush that comes with it) at mount */
    add_disk(r, r->image.disk, CAPSA_VM_DISK_RAW, true, CAPSA_SERIAL_LOWER)->block_size =
        CAPSA_VM_BLOCK_4K;

    switch (rd->kind) {
    case CAPSA_ROOT_DISK_MANAGED: {
        struct capsa_vm_disk *d;
        struct stat st;
        if (!spec->state_dir || spec->state_dir[0] != '/')
            return capsa_err_set(err, EINVAL,
                                 "root disk: a managed upper needs an absolute state directory");
        if (snprintf(r->upper_path, sizeof(r->upper_path), "%s/upper.ext4", spec->state_dir) >=
            (int)sizeof(r->upper_path))
            return capsa_err_set(err, ENAMETOOLONG, "root disk: %s: path too long",
                                 spec->state_dir);
        if (stat(r->upper_path, &st) < 0) {
            if (errno != ENOENT)
                return capsa_err_set(err, errno, "root disk %s: %s", r->upper_path,
                                     strerror(errno));
            if (capsa_rootfs_make_upper(r->upper_path, rd->size_mib,
                                        spec->scratch ? CAPSA_UPPER_SCRATCH : 0, err) < 0)
                return -1;
            r->upper_created = true;
        } else if (!S_ISREG(st.st_mode)) {
            return capsa_err_set(err, EINVAL, "root disk %s: not a regular file", r->upper_path);
        }
        d = add_disk(r, r->upper_path, CAPSA_VM_DISK_RAW, false, CAPSA_SERIAL_UPPER);
        d->scratch = spec->scratch;
        /* a scratch upper is always new, from a 4 KiB-block template (ext4 would otherwise
         * read its superblock at 1 KiB and switch the device to 4 KiB); a sandbox's upper
         * may predate that and keeps 512-byte sectors */
        if (spec->scratch && r->upper_created)
            d->block_size = CAPSA_VM_BLOCK_4K;
        /* known: capsa made it (ext4 with d_type, O_TMPFILE, RENAME_WHITEOUT, xattrs) */
        upper = json_pack("{s:s, s:s, s:b, s:b}", "serial", CAPSA_SERIAL_UPPER, "fstype", "ext4",
                          "scratch", spec->scratch, "known", 1);
        set_sectors(upper, r->upper_path);
        break;
    }
    case CAPSA_ROOT_DISK_TMPFS:
        upper = json_pack("{s:b}", "tmpfs", 1);
        if (upper && rd->size_mib)
            json_object_set_new(upper, "size_mib", json_integer((json_int_t)rd->size_mib));
        break;
    case CAPSA_ROOT_DISK_DISK_IMAGE: {
        char abs[PATH_MAX];
        struct stat st;
        if (!realpath(rd->path, abs) || stat(abs, &st) < 0)
            return capsa_err_set(err, errno, "root disk %s: %s", rd->path, strerror(errno));
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
            return capsa_err_set(err, EINVAL, "root disk %s: not a disk image file", rd->path);
        add_disk(r, abs, rd->format, false, CAPSA_SERIAL_UPPER);
        upper = json_pack("{s:s, s:s}", "serial", CAPSA_SERIAL_UPPER, "fstype",
                          rd->fstype[0] ? rd->fstype : "ext4");
        break;
    }
    }
    if (!upper)
        return capsa_err_set(err, ENOMEM, "out of memory");
    r->root = json_pack("{s:s, s:{s:s, s:s}, s:o}", "kind", "overlay", "lower", "serial",
                        CAPSA_SERIAL_LOWER, "fstype", "erofs", "upper", upper);
    if (!r->root)
        return capsa_err_set(err, ENOMEM, "out of memory");
    set_sectors(json_object_get(r->root, "lower"), r->image.disk);
    return 0;
}

int capsa_rootfs_resolve(const struct capsa_rootfs_spec *spec, struct capsa_rootfs *out,
                         capsa_err *err)
{
    int rc;

    memset(out, 0, sizeof(*out));
    if (!spec || !spec->source || !*spec->source)
        return capsa_err_set(err, EINVAL, "root: no root directory, disk image or image given");
    rc = is_path(spec->source) ? resolve_path(spec, out, err) : resolve_image(spec, out, err);
    if (rc < 0) {
        if (out->upper_created)
            unlink(out->upper_path);
        capsa_rootfs_release(out);
    }
    return rc;
}

void capsa_rootfs_release(struct capsa_rootfs *r)
{
    if (!r)
        return;
    json_decref(r->root);
    r->root = NULL;
    capsa_strvfreep(&r->env);
    capsa_strvfreep(&r->entrypoint);
    capsa_strvfreep(&r->cmd);
    r->env = r->entrypoint = r->cmd = NULL;
    free(r->workdir);
    free(r->user);
    r->workdir = r->user = NULL;
}

static size_t strv_len(char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

int capsa_rootfs_command(const struct capsa_rootfs *r, char *const *override, char ***argv,
                         capsa_err *err)
{
    char *const *tail = override && override[0] ? override : r->cmd;
    size_t ne = strv_len(r->entrypoint), nt = strv_len(tail), k = 0;
    char **v;

    *argv = NULL;
    if (ne + nt == 0)
        return capsa_err_set(err, ENOENT,
                             "no command: the image %s defines neither Entrypoint nor Cmd; give "
                             "one after --",
                             r->image.reference[0] ? r->image.reference : "root");
    v = calloc(ne + nt + 1, sizeof(*v));
    if (!v)
        return capsa_err_set(err, ENOMEM, "out of memory");
    for (size_t i = 0; i < ne; i++)
        if (!(v[k++] = strdup(r->entrypoint[i])))
            goto oom;
    for (size_t i = 0; i < nt; i++)
        if (!(v[k++] = strdup(tail[i])))
            goto oom;
    *argv = v;
    return 0;
oom:
    capsa_strvfreep(&v);
    return capsa_err_set(err, ENOMEM, "out of memory");
}

char **capsa_env_merge(char *const *base, char *const *over)
{
    size_t nb = strv_len(base), no = strv_len(over), n = 0;
    char **v = calloc(nb + no + 1, sizeof(*v));

    if (!v)
        return NULL;
    for (size_t pass = 0; pass < 2; pass++) {
        char *const *src = pass ? over : base;
        for (size_t i = 0; src && src[i]; i++) {
            const char *eq = strchr(src[i], '=');
            size_t kl = eq ? (size_t)(eq - src[i]) : strlen(src[i]);
            size_t j;
            for (j = 0; j < n; j++)
                if (!strncmp(v[j], src[i], kl) && v[j][kl] == '=')
                    break;
            char *dup = strdup(src[i]);
            if (!dup) {
                capsa_strvfreep(&v);
                return NULL;
            }
            if (j < n) {
                free(v[j]);
                v[j] = dup;
            } else {
                v[n++] = dup;
            }
        }
    }
    return v;
}
