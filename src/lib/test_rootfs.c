/* test_rootfs.c - root resolution: --root-disk and --pull grammars, image command and env
 * rules, managed upper creation (real mkfs.ext4 and debugfs), directory/disk-image roots, and the
 * never pull policy on an empty store. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "lib/rootfs.h"

static char tmp[256];

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/capsa-test-rootfs.XXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    char home[300];
    snprintf(home, sizeof(home), "%s/home", tmp);
    mkdir(home, 0700);
    setenv("CAPSA_HOME", home, 1);
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_root_disk_parse(void **state)
{
    struct capsa_root_disk d;
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_root_disk_parse("8G", &d, &err), 0);
    assert_int_equal(d.kind, CAPSA_ROOT_DISK_MANAGED);
    assert_int_equal(d.size_mib, 8192);
    assert_int_equal(capsa_root_disk_parse("2048", &d, &err), 0);
    assert_int_equal(d.size_mib, 2048);
    assert_int_equal(capsa_root_disk_parse("tmpfs", &d, &err), 0);
    assert_int_equal(d.kind, CAPSA_ROOT_DISK_TMPFS);
    assert_int_equal(d.size_mib, 0);
    assert_int_equal(capsa_root_disk_parse("tmpfs:256M", &d, &err), 0);
    assert_int_equal(d.kind, CAPSA_ROOT_DISK_TMPFS);
    assert_int_equal(d.size_mib, 256);
    assert_int_equal(capsa_root_disk_parse("/d/u.qcow2:format=qcow2,fstype=xfs", &d, &err), 0);
    assert_int_equal(d.kind, CAPSA_ROOT_DISK_DISK_IMAGE);
    assert_string_equal(d.path, "/d/u.qcow2");
    assert_int_equal(d.format, CAPSA_VM_DISK_QCOW2);
    assert_string_equal(d.fstype, "xfs");
    assert_int_equal(capsa_root_disk_parse("./u.raw", &d, &err), 0);
    assert_string_equal(d.path, "./u.raw");
    assert_int_equal(d.format, CAPSA_VM_DISK_RAW);
    assert_string_equal(d.fstype, "");

    assert_int_equal(capsa_root_disk_parse("", &d, &err), -1);
    assert_int_equal(capsa_root_disk_parse("big", &d, &err), -1);
    assert_non_null(strstr(err.msg, "root disk \"big\""));
    assert_int_equal(capsa_root_disk_parse("10M", &d, &err), -1);
    assert_non_null(strstr(err.msg, "64M"));
    assert_int_equal(capsa_root_disk_parse("tmpfs:0", &d, &err), -1);
    assert_int_equal(capsa_root_disk_parse("tmpfsx", &d, &err), -1);
    assert_int_equal(capsa_root_disk_parse("/u.img:format=vdi", &d, &err), -1);
    assert_non_null(strstr(err.msg, "raw, qcow2 or vmdk"));
    assert_int_equal(capsa_root_disk_parse("/u.img:fstype=EXT4", &d, &err), -1);
    assert_non_null(strstr(err.msg, "fstype"));
    assert_int_equal(capsa_root_disk_parse("/u.img:format=raw,size=3", &d, &err), -1);
    assert_non_null(strstr(err.msg, "unknown option"));
}

static void test_pull_policy(void **state)
{
    enum capsa_pull_policy p;
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_pull_policy_parse("always", &p, &err), 0);
    assert_int_equal(p, CAPSA_PULL_ALWAYS);
    assert_int_equal(capsa_pull_policy_parse("never", &p, &err), 0);
    assert_int_equal(p, CAPSA_PULL_NEVER);
    assert_int_equal(capsa_pull_policy_parse("if-missing", &p, &err), 0);
    assert_int_equal(p, CAPSA_PULL_IF_MISSING);
    assert_int_equal(capsa_pull_policy_parse("sometimes", &p, &err), -1);
    assert_non_null(strstr(err.msg, "always, if-missing or never"));
}

static void test_command(void **state)
{
    char *ep[] = {"/entry", "-x", NULL}, *cmd[] = {"default", NULL}, *over[] = {"mine", "a", NULL};
    struct capsa_rootfs r = {0};
    _cleanup_strv_ char **a = NULL, **b = NULL, **c = NULL;
    char **none = NULL;
    capsa_err err = {0};
    (void)state;

    r.entrypoint = ep;
    r.cmd = cmd;
    assert_int_equal(capsa_rootfs_command(&r, NULL, &a, &err), 0);
    assert_string_equal(a[0], "/entry");
    assert_string_equal(a[1], "-x");
    assert_string_equal(a[2], "default");
    assert_null(a[3]);
    /* a CMD replaces Cmd and keeps the Entrypoint */
    assert_int_equal(capsa_rootfs_command(&r, over, &b, &err), 0);
    assert_string_equal(b[0], "/entry");
    assert_string_equal(b[2], "mine");
    assert_string_equal(b[3], "a");
    assert_null(b[4]);
    /* no Entrypoint: the CMD alone */
    r.entrypoint = NULL;
    assert_int_equal(capsa_rootfs_command(&r, over, &c, &err), 0);
    assert_string_equal(c[0], "mine");
    assert_null(c[2]);
    /* nothing at all: a clear error */
    r.cmd = NULL;
    snprintf(r.image.reference, sizeof(r.image.reference), "reg/x:latest");
    assert_int_equal(capsa_rootfs_command(&r, NULL, &none, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.msg, "neither Entrypoint nor Cmd"));
    assert_null(none);
}

static void test_env_merge(void **state)
{
    char *base[] = {"PATH=/bin", "A=1", "B=2", NULL}, *over[] = {"A=x", "C=3", "PATH=/p", NULL};
    _cleanup_strv_ char **m = capsa_env_merge(base, over);
    (void)state;

    assert_non_null(m);
    assert_string_equal(m[0], "PATH=/p");
    assert_string_equal(m[1], "A=x");
    assert_string_equal(m[2], "B=2");
    assert_string_equal(m[3], "C=3");
    assert_null(m[4]);
}

/* Whether the ext4 file at path has the feature (dumpe2fs -h's "Filesystem features"). */
static bool has_feature(const char *path, const char *feature)
{
    char cmd[700];

    snprintf(cmd, sizeof(cmd),
             "dumpe2fs -h %s 2>/dev/null | grep '^Filesystem features:' | grep -qw %s", path,
             feature);
    return system(cmd) == 0;
}

/* The ext4 file's block size, from its superblock (s_log_block_size at 1024 + 24). */
static unsigned block_size(const char *path)
{
    unsigned char le[4];
    FILE *f = fopen(path, "rb");
    bool ok = f && fseek(f, 1024 + 24, SEEK_SET) == 0 && fread(le, 1, 4, f) == 4;

    if (f)
        fclose(f);
    return ok ? 1024u << (le[0] | le[1] << 8 | le[2] << 16 | (unsigned)le[3] << 24) : 0;
}

/* Whether e2fsck finds the ext4 file at path clean (checked, never repaired). */
static bool fsck_clean(const char *path)
{
    char cmd[600];

    snprintf(cmd, sizeof(cmd), "e2fsck -fn %s >/dev/null 2>&1", path);
    return system(cmd) == 0;
}

/* The mode (st_mode, octal, with the type bits) and owner of the entry at rel inside the ext4
 * file at path, from debugfs' stat, as "40700 0:0"; "" when there is none. */
static void entry_mode(const char *path, const char *rel, char *out, size_t outsz)
{
    char cmd[800];
    unsigned mode = 0, uid = 1, gid = 1;
    bool dir = false;
    FILE *p;

    out[0] = '\0';
    snprintf(cmd, sizeof(cmd), "debugfs -R 'stat %s' %s 2>/dev/null", rel, path);
    p = popen(cmd, "r");
    if (!p)
        return;
    for (char line[256]; fgets(line, sizeof(line), p);) {
        if (strstr(line, "Type: directory"))
            dir = true;
        if (strstr(line, "Mode:"))
            sscanf(strstr(line, "Mode:"), "Mode: %o", &mode);
        if (strncmp(line, "User:", 5) == 0)
            sscanf(line, "User: %u Group: %u", &uid, &gid);
    }
    pclose(p);
    if (dir)
        snprintf(out, outsz, "%o %u:%u", 040000 | mode, uid, gid);
}

/* Both kinds of upper come with overlayfs' upper/, work/ and an empty work/work of mode 0,
 * root's, so the guest's overlay mount creates nothing (kernel patch 0002). */
static void assert_upper_dirs(const char *path)
{
    char m[64];

    entry_mode(path, "upper", m, sizeof(m));
    assert_string_equal(m, "40755 0:0");
    entry_mode(path, "work", m, sizeof(m));
    assert_string_equal(m, "40700 0:0");
    entry_mode(path, "work/work", m, sizeof(m));
    assert_string_equal(m, "40000 0:0");
}

static void test_make_upper(void **state)
{
    char path[400];
    struct stat st;
    capsa_err err = {0};
    (void)state;

    snprintf(path, sizeof(path), "%s/upper.ext4", tmp);
    assert_int_equal(capsa_rootfs_make_upper(path, 1024, 0, &err), 0);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_size, 1024ll << 20);
    /* sparse: a few MiB allocated for 1 GiB */
    assert_true((long long)st.st_blocks * 512 < (16ll << 20));
    assert_true(fsck_clean(path));
    /* a sandbox's upper keeps a journal and checksums; both kinds keep small files in
     * their inodes */
    assert_true(has_feature(path, "has_journal"));
    assert_true(has_feature(path, "metadata_csum"));
    assert_true(has_feature(path, "inline_data"));
    assert_upper_dirs(path);
    /* never overwrites */
    assert_int_equal(capsa_rootfs_make_upper(path, 64, 0, &err), -1);
    assert_int_equal(err.code, EEXIST);
}

/* An ephemeral run's upper dies with it: no journal, no checksums, and a template of its own
 * (the cached journaled template of the same size is not reused for it, nor the other way
 * round). */
static void test_make_upper_scratch(void **state)
{
    char path[400], path2[400];
    struct stat st;
    capsa_err err = {0};
    (void)state;

    snprintf(path, sizeof(path), "%s/scratch.ext4", tmp);
    snprintf(path2, sizeof(path2), "%s/journaled.ext4", tmp);
    for (int i = 0; i < 2; i++) { /* the second round copies the cached templates */
        unlink(path);
        unlink(path2);
        assert_int_equal(capsa_rootfs_make_upper(path, 256, CAPSA_UPPER_SCRATCH, &err), 0);
        assert_int_equal(capsa_rootfs_make_upper(path2, 256, 0, &err), 0);
        /* as sparse as the journaled kind: no zeroed inode tables */
        assert_int_equal(stat(path, &st), 0);
        assert_true((long long)st.st_blocks * 512 < (4ll << 20));
        assert_true(fsck_clean(path));
        assert_false(has_feature(path, "has_journal"));
        assert_false(has_feature(path, "metadata_csum"));
        assert_true(has_feature(path, "inline_data"));
        assert_true(has_feature(path2, "has_journal"));
        /* 4 KiB blocks even where mke2fs.conf would choose 1 KiB (below 512 MiB): the VM
         * presents a scratch upper with 4 KiB logical blocks */
        assert_int_equal(block_size(path), 4096);
        assert_int_equal(block_size(path2), 4096);
        assert_upper_dirs(path);
        assert_upper_dirs(path2);
    }
}

/* debugfs exits 0 whatever fails: anything on its stderr but its banner fails the format,
 * and nothing is left (no upper, no template). A fake debugfs first on PATH says so. */
static void test_make_upper_debugfs_error(void **state)
{
    char bin[400], fake[500], path[400], cache[600], oldpath[4096];
    struct dirent *de;
    DIR *d;
    capsa_err err = {0};
    FILE *f;
    (void)state;

    snprintf(oldpath, sizeof(oldpath), "%s", getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    snprintf(bin, sizeof(bin), "%s/fakebin", tmp);
    assert_int_equal(mkdir(bin, 0755), 0);
    snprintf(fake, sizeof(fake), "%s/debugfs", bin);
    f = fopen(fake, "w");
    assert_non_null(f);
    fputs("#!/bin/sh\nwhile read -r l; do :; done\necho 'debugfs 1.47.0 (5-Feb-2023)' >&2\n"
          "echo 'mkdir: Could not allocate block in ext2 filesystem' >&2\nexit 0\n",
          f);
    fclose(f);
    assert_int_equal(chmod(fake, 0755), 0);
    setenv("PATH", bin, 1); /* mkfs.ext4 is found in /usr/sbin or /sbin */
    snprintf(path, sizeof(path), "%s/failed.ext4", tmp);
    assert_int_equal(capsa_rootfs_make_upper(path, 96, 0, &err), -1);
    setenv("PATH", oldpath, 1);
    assert_non_null(strstr(err.msg, "debugfs"));
    assert_non_null(strstr(err.msg, "Could not allocate block"));
    assert_int_equal(access(path, F_OK), -1);
    /* neither a template of that size nor its temporary file */
    snprintf(cache, sizeof(cache), "%s/home/cache/upper", tmp);
    d = opendir(cache);
    assert_non_null(d);
    while ((de = readdir(d)))
        assert_null(strstr(de->d_name, "-96m-"));
    closedir(d);
}

static void test_resolve_paths(void **state)
{
    struct capsa_rootfs_spec spec = {0};
    struct capsa_rootfs r;
    char dir[400], img[400];
    capsa_err err = {0};
    FILE *f;
    (void)state;

    snprintf(dir, sizeof(dir), "%s/rootdir", tmp);
    mkdir(dir, 0755);
    spec.source = dir;
    assert_int_equal(capsa_rootfs_resolve(&spec, &r, &err), 0);
    assert_int_equal(r.kind, CAPSA_ROOTFS_DIR);
    assert_string_equal(r.dir, dir);
    assert_int_equal(r.ndisks, 0);
    assert_string_equal(json_string_value(json_object_get(r.root, "kind")), "9p");
    capsa_rootfs_release(&r);

    snprintf(img, sizeof(img), "%s/root.qcow2", tmp);
    f = fopen(img, "w");
    fputs("x", f);
    fclose(f);
    spec.source = img;
    spec.disk_fstype = "ext4";
    assert_int_equal(capsa_rootfs_resolve(&spec, &r, &err), 0);
    assert_int_equal(r.kind, CAPSA_ROOTFS_DISK);
    assert_int_equal(r.ndisks, 1);
    assert_string_equal(r.disks[0].path, img);
    assert_int_equal(r.disks[0].format, CAPSA_VM_DISK_QCOW2);
    assert_false(r.disks[0].readonly);
    assert_string_equal(r.disks[0].serial, CAPSA_SERIAL_ROOT);
    assert_string_equal(json_string_value(json_object_get(r.root, "kind")), "disk");
    assert_string_equal(json_string_value(json_object_get(r.root, "fstype")), "ext4");
    capsa_rootfs_release(&r);

    spec.disk_format = "floppy";
    assert_int_equal(capsa_rootfs_resolve(&spec, &r, &err), -1);
    assert_non_null(strstr(err.msg, "raw, qcow2 or vmdk"));
    spec.disk_format = NULL;
    spec.source = "/no/such/root";
    assert_int_equal(capsa_rootfs_resolve(&spec, &r, &err), -1);
    assert_non_null(strstr(err.msg, "/no/such/root"));
    spec.source = "";
    assert_int_equal(capsa_rootfs_resolve(&spec, &r, &err), -1);
}

static void test_pull_never_missing(void **state)
{
    struct capsa_rootfs_spec spec = {0};
    struct capsa_rootfs r;
    capsa_err err = {0};
    (void)state;

    spec.source = "127.0.0.1:1/test/absent:latest";
    spec.pull_policy = CAPSA_PULL_NEVER;
    char sdir[400], upper[500];
    snprintf(sdir, sizeof(sdir), "%s/state", tmp);
    mkdir(sdir, 0700);
    spec.state_dir = sdir;
    assert_int_equal(capsa_rootfs_resolve(&spec, &r, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.msg, "not in the local store"));
    assert_non_null(strstr(err.msg, "never"));
    /* nothing was created for it */
    snprintf(upper, sizeof(upper), "%s/upper.ext4", sdir);
    assert_int_equal(access(upper, F_OK), -1);
    spec.source = "UPPER/Case:bad";
    assert_int_equal(capsa_rootfs_resolve(&spec, &r, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_root_disk_parse),
        cmocka_unit_test(test_pull_policy),
        cmocka_unit_test(test_command),
        cmocka_unit_test(test_env_merge),
        cmocka_unit_test(test_make_upper),
        cmocka_unit_test(test_make_upper_scratch),
        cmocka_unit_test(test_make_upper_debugfs_error),
        cmocka_unit_test(test_resolve_paths),
        cmocka_unit_test(test_pull_never_missing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
