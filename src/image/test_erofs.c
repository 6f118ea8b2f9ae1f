/* test_erofs.c - the EROFS writer: crafted layers (whiteouts, opaque dirs, hardlinks, xattrs,
 * devices, big directories, sparse data) checked with fsck.erofs and, as root, by mounting the
 * image with the kernel's erofs; hostile tars must fail clearly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "image/erofs.h"
#include "image/test_tarbuf.h"

static struct archive_entry *ent(const char *path, mode_t type, mode_t perm)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, perm);
    archive_entry_set_mtime(e, 1700000000, 5);
    archive_entry_set_uid(e, 1000);
    archive_entry_set_gid(e, 1001);
    return e;
}

static void tb_put(struct tarbuf *t, struct archive_entry *e, const void *data, size_t len)
{
    if (archive_entry_filetype(e) == AE_IFREG && !archive_entry_hardlink(e))
        archive_entry_set_size(e, (la_int64_t)len);
    assert_int_equal(archive_write_header(t->a, e), ARCHIVE_OK);
    if (len)
        assert_int_equal(archive_write_data(t->a, data, len), (la_ssize_t)len);
    archive_entry_free(e);
}

static void tb_file(struct tarbuf *t, const char *path, const char *data)
{
    tb_put(t, ent(path, AE_IFREG, 0644), data, data ? strlen(data) : 0);
}

static void tb_dir(struct tarbuf *t, const char *path, mode_t perm)
{
    tb_put(t, ent(path, AE_IFDIR, perm), NULL, 0);
}

static void tb_link(struct tarbuf *t, const char *path, const char *target, bool hard)
{
    struct archive_entry *e = ent(path, hard ? AE_IFREG : AE_IFLNK, 0777);
    if (hard)
        archive_entry_set_hardlink(e, target);
    else
        archive_entry_set_symlink(e, target);
    tb_put(t, e, NULL, 0);
}

static int add_tar(struct capsa_erofs *w, struct tarbuf *t, capsa_err *err)
{
    char path[] = "/tmp/capsa-erofs-layer-XXXXXX", d[CAPSA_DIGEST_MAX];
    int fd = mkstemp(path), rc;

    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, t->data, t->len), (ssize_t)t->len);
    lseek(fd, 0, SEEK_SET);
    rc = capsa_erofs_add_layer_fd(w, fd, CAPSA_LAYER_TAR, d, NULL, err);
    close(fd);
    free(t->data);
    t->data = NULL;
    return rc;
}

static int run(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void slurp(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    size_t n = fread(buf, 1, len - 1, f);
    buf[n] = '\0';
    fclose(f);
}

/* ---- the happy path ------------------------------------------------------------------- */

static char big[20000];

/* A VFS capability v2 (effective, cap_net_raw permitted): what Debian's ping carries. */
#define CAP_NET_RAW_V2 "\x01\x00\x00\x02\x00\x20\x00\x00\0\0\0\0\0\0\0\0\0\0\0\0"

static void build_layers(struct capsa_erofs *w)
{
    struct tarbuf t;
    capsa_err err = {0};
    struct archive_entry *e;
    char name[300];

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 23);
    tb_open(&t, false);
    tb_dir(&t, "./", 0755);
    tb_dir(&t, "etc/", 0755);
    tb_file(&t, "etc/a", "hello\n");
    tb_put(&t, ent("etc/big", AE_IFREG, 0600), big, sizeof(big));
    tb_file(&t, "etc/empty", NULL);
    tb_link(&t, "bin", "usr/bin", false);
    tb_dir(&t, "usr/", 0755);
    tb_dir(&t, "usr/bin/", 0755);
    e = ent("usr/bin/ping", AE_IFREG, 04755);
    archive_entry_xattr_add_entry(e, "security.capability", CAP_NET_RAW_V2, 20);
    archive_entry_xattr_add_entry(e, "user.note", "hi", 2);
    archive_entry_xattr_add_entry(e, "trusted.overlay.opaque", "y", 1);
    tb_put(&t, e, "PING", 4);
    tb_link(&t, "usr/bin/ping2", "usr/bin/ping", true);
    tb_dir(&t, "dev/", 0755);
    e = ent("dev/null", AE_IFCHR, 0666);
    archive_entry_set_rdevmajor(e, 1);
    archive_entry_set_rdevminor(e, 3);
    tb_put(&t, e, NULL, 0);
    e = ent("dev/big", AE_IFBLK, 0660);
    archive_entry_set_rdevmajor(e, 259);
    archive_entry_set_rdevminor(e, 300);
    tb_put(&t, e, NULL, 0);
    tb_put(&t, ent("dev/fifo", AE_IFIFO, 0600), NULL, 0);
    tb_dir(&t, "opq/", 0755);
    tb_file(&t, "opq/old", "old");
    tb_dir(&t, "opq/sub/", 0755);
    tb_file(&t, "opq/sub/deep", "deep");
    tb_file(&t, "gone", "x");
    tb_dir(&t, "gonedir/", 0755);
    tb_file(&t, "gonedir/f", "x");
    tb_file(&t, "implicit/parent/file", "imp");
    for (int i = 0; i < 400; i++) { /* a directory of several blocks */
        snprintf(name, sizeof(name), "many/%03d-%s", i,
                 "a-rather-long-name-to-fill-directory-blocks-quickly-xxxxxxxxxxxxxxxxxxxxxx");
        tb_file(&t, name, i % 2 ? "odd" : "");
    }
    memset(name, 'l', sizeof(name));
    {
        char longt[3901];
        memset(longt, 'l', 3900);
        longt[3900] = '\0';
        tb_link(&t, "longlink", longt, false); /* too long to be inline: a block of its own */
    }
    tb_close(&t);
    assert_int_equal(add_tar(w, &t, &err), 0);

    tb_open(&t, false);
    tb_file(&t, ".wh.gone", NULL);
    tb_file(&t, ".wh.gonedir", NULL);
    tb_file(&t, "opq/.wh..wh..opq", NULL);
    tb_file(&t, "opq/new", "new");
    tb_file(&t, "etc/a", "bye\n");
    tb_dir(&t, "etc/", 0700);
    tb_file(&t, "usr/bin/ping2", "replaced");
    tb_close(&t);
    assert_int_equal(add_tar(w, &t, &err), 0);
}

static void test_image(void **state)
{
    char dir[] = "/tmp/capsa-erofs-XXXXXX", img[300], out[300], cmd[1200], buf[4096];
    struct capsa_erofs *w = NULL;
    capsa_err err = {0};
    struct stat st, st2;
    int fd;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(img, sizeof(img), "%s/lower.erofs", dir);
    snprintf(out, sizeof(out), "%s/x", dir);
    fd = open(img, O_RDWR | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    assert_int_equal(capsa_erofs_new(fd, &w, &err), 0);
    build_layers(w);
    assert_int_equal(capsa_erofs_finish(w, &err), 0);
    capsa_erofs_free(w);
    close(fd);

    snprintf(cmd, sizeof(cmd), "fsck.erofs %s >/dev/null 2>&1", img);
    assert_int_equal(run(cmd), 0);
    snprintf(cmd, sizeof(cmd), "fsck.erofs --extract=%s %s >/dev/null 2>&1", out, img);
    assert_int_equal(run(cmd), 0);

    snprintf(buf, sizeof(buf), "%s/etc/a", out);
    slurp(buf, cmd, sizeof(cmd));
    assert_string_equal(cmd, "bye\n");
    snprintf(buf, sizeof(buf), "%s/etc/big", out);
    assert_int_equal(stat(buf, &st), 0);
    assert_int_equal(st.st_size, sizeof(big));
    snprintf(buf, sizeof(buf), "%s/usr/bin/ping", out);
    slurp(buf, cmd, sizeof(cmd));
    assert_string_equal(cmd, "PING");
    snprintf(buf, sizeof(buf), "%s/opq/new", out);
    assert_int_equal(stat(buf, &st), 0);
    snprintf(buf, sizeof(buf), "%s/opq/old", out);
    assert_int_not_equal(lstat(buf, &st), 0);
    snprintf(buf, sizeof(buf), "%s/opq/sub", out);
    assert_int_not_equal(lstat(buf, &st), 0);
    snprintf(buf, sizeof(buf), "%s/gone", out);
    assert_int_not_equal(lstat(buf, &st), 0);
    snprintf(buf, sizeof(buf), "%s/gonedir", out);
    assert_int_not_equal(lstat(buf, &st), 0);
    snprintf(buf, sizeof(buf), "%s/many/399-%s", out,
             "a-rather-long-name-to-fill-directory-blocks-quickly-xxxxxxxxxxxxxxxxxxxxxx");
    slurp(buf, cmd, sizeof(cmd));
    assert_string_equal(cmd, "odd");
    snprintf(buf, sizeof(buf), "%s/bin", out);
    ssize_t n = readlink(buf, cmd, sizeof(cmd));
    assert_int_equal(n, 7);
    assert_memory_equal(cmd, "usr/bin", 7);
    snprintf(buf, sizeof(buf), "%s/longlink", out);
    {
        char target[4096];
        assert_int_equal(readlink(buf, target, sizeof(target)), 3900);
    }

    /* The kernel's view: owners, modes, xattrs, devices, shared inodes. */
    if (geteuid() == 0) {
        char mnt[300];
        snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
        assert_int_equal(mkdir(mnt, 0755), 0);
        snprintf(cmd, sizeof(cmd), "mount -t erofs -o ro,loop %s %s 2>/dev/null", img, mnt);
        if (run(cmd) == 0) {
            char v[64];
            snprintf(buf, sizeof(buf), "%s/usr/bin/ping", mnt);
            assert_int_equal(lstat(buf, &st), 0);
            assert_int_equal(st.st_mode, S_IFREG | 04755);
            assert_int_equal(st.st_uid, 1000);
            assert_int_equal(st.st_gid, 1001);
            assert_int_equal(st.st_mtim.tv_sec, 1700000000);
            assert_int_equal(lgetxattr(buf, "security.capability", v, sizeof(v)), 20);
            assert_memory_equal(v, CAP_NET_RAW_V2, 20);
            assert_int_equal(llistxattr(buf, v, sizeof(v)), 30); /* each name once */
            assert_int_equal(lgetxattr(buf, "user.note", v, sizeof(v)), 2);
            assert_int_equal(lgetxattr(buf, "trusted.overlay.opaque", v, sizeof(v)), -1);
            snprintf(buf, sizeof(buf), "%s/dev/null", mnt);
            assert_int_equal(lstat(buf, &st), 0);
            assert_true(S_ISCHR(st.st_mode));
            assert_int_equal(st.st_rdev, makedev(1, 3));
            snprintf(buf, sizeof(buf), "%s/dev/big", mnt);
            assert_int_equal(lstat(buf, &st), 0);
            assert_true(S_ISBLK(st.st_mode));
            assert_int_equal(st.st_rdev, makedev(259, 300));
            snprintf(buf, sizeof(buf), "%s/dev/fifo", mnt);
            assert_int_equal(lstat(buf, &st), 0);
            assert_true(S_ISFIFO(st.st_mode));
            snprintf(buf, sizeof(buf), "%s/etc", mnt);
            assert_int_equal(lstat(buf, &st), 0);
            assert_int_equal(st.st_mode, S_IFDIR | 0700);
            snprintf(buf, sizeof(buf), "%s/usr", mnt);
            assert_int_equal(lstat(buf, &st), 0);
            assert_int_equal(st.st_nlink, 3);
            snprintf(buf, sizeof(buf), "%s/etc/big", mnt);
            slurp(buf, cmd, sizeof(cmd));
            assert_memory_equal(cmd, big, 1000);
            snprintf(buf, sizeof(buf), "%s/usr/bin/ping2", mnt);
            assert_int_equal(lstat(buf, &st2), 0);
            assert_int_equal(st2.st_size, 8); /* replaced, no longer the link */
            snprintf(buf, sizeof(buf), "%s/implicit/parent/file", mnt);
            assert_int_equal(lstat(buf, &st), 0);
            snprintf(cmd, sizeof(cmd), "umount %s", mnt);
            assert_int_equal(run(cmd), 0);
        }
    }
    snprintf(cmd, sizeof(cmd), "umount -q %s/mnt 2>/dev/null; rm -rf --one-file-system %s", dir,
             dir);
    run(cmd);
}

/* Hardlinks share one inode (checked with the kernel when root, else with fsck's nlink). */
static void test_hardlink(void **state)
{
    char dir[] = "/tmp/capsa-erofs-XXXXXX", img[300], cmd[1200], a[400], b[400];
    struct capsa_erofs *w = NULL;
    capsa_err err = {0};
    struct tarbuf t;
    struct stat sa, sb;
    int fd;

    (void)state;
    assert_non_null(mkdtemp(dir));
    snprintf(img, sizeof(img), "%s/lower.erofs", dir);
    fd = open(img, O_RDWR | O_CREAT | O_EXCL, 0644);
    assert_int_equal(capsa_erofs_new(fd, &w, &err), 0);
    tb_open(&t, false);
    tb_file(&t, "a", "shared");
    tb_link(&t, "b", "a", true);
    tb_link(&t, "c", "a", true);
    tb_close(&t);
    assert_int_equal(add_tar(w, &t, &err), 0);
    tb_open(&t, false);
    tb_file(&t, ".wh.c", NULL);
    tb_close(&t);
    assert_int_equal(add_tar(w, &t, &err), 0);
    assert_int_equal(capsa_erofs_finish(w, &err), 0);
    capsa_erofs_free(w);
    close(fd);
    snprintf(cmd, sizeof(cmd), "fsck.erofs --extract=%s/x %s >/dev/null 2>&1", dir, img);
    assert_int_equal(run(cmd), 0);
    snprintf(a, sizeof(a), "%s/x/b", dir);
    assert_int_equal(stat(a, &sa), 0);
    assert_int_equal(sa.st_size, 6);
    snprintf(cmd, sizeof(cmd), "mkdir %s/mnt && mount -t erofs -o ro,loop %s %s/mnt 2>/dev/null",
             dir, img, dir);
    if (geteuid() == 0 && run(cmd) == 0) {
        snprintf(a, sizeof(a), "%s/mnt/a", dir);
        snprintf(b, sizeof(b), "%s/mnt/b", dir);
        assert_int_equal(stat(a, &sa), 0);
        assert_int_equal(stat(b, &sb), 0);
        assert_int_equal(sa.st_ino, sb.st_ino);
        assert_int_equal(sa.st_nlink, 2);
        snprintf(cmd, sizeof(cmd), "umount %s/mnt", dir);
        assert_int_equal(run(cmd), 0);
    }
    snprintf(cmd, sizeof(cmd), "umount -q %s/mnt 2>/dev/null; rm -rf --one-file-system %s", dir,
             dir);
    run(cmd);
}

/* ---- hostile layers ------------------------------------------------------------------- */

static void expect_refused(void (*fill)(struct tarbuf *), const char *needle)
{
    struct capsa_erofs *w = NULL;
    capsa_err err = {0};
    struct tarbuf t;
    FILE *f = tmpfile();

    assert_non_null(f);
    assert_int_equal(capsa_erofs_new(fileno(f), &w, &err), 0);
    tb_open(&t, false);
    fill(&t);
    tb_close(&t);
    assert_int_equal(add_tar(w, &t, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' lacks '%s'", err.msg, needle);
    assert_int_equal(capsa_erofs_finish(w, &err), -1);
    capsa_erofs_free(w);
    fclose(f);
}

static void fill_dotdot(struct tarbuf *t)
{
    tb_file(t, "a/../../etc/passwd", "x");
}

static void fill_abs(struct tarbuf *t)
{
    tb_file(t, "/etc/passwd", "x");
}

static void fill_missing_link(struct tarbuf *t)
{
    tb_link(t, "b", "nothere", true);
}

static void fill_dir_link(struct tarbuf *t)
{
    tb_dir(t, "d/", 0755);
    tb_link(t, "b", "d", true);
}

static void fill_through_symlink(struct tarbuf *t)
{
    tb_link(t, "s", "/etc", false);
    tb_file(t, "s/passwd", "x");
}

static void fill_through_file(struct tarbuf *t)
{
    tb_file(t, "f", "x");
    tb_file(t, "f/g", "x");
}

static void fill_wh_dotdot(struct tarbuf *t)
{
    tb_file(t, "d/.wh...", NULL);
}

static void test_hostile(void **state)
{
    (void)state;
    expect_refused(fill_dotdot, "'..'");
    expect_refused(fill_abs, "absolute");
    expect_refused(fill_missing_link, "nothere");
    expect_refused(fill_dir_link, "is a directory");
    expect_refused(fill_through_symlink, "symlink");
    expect_refused(fill_through_file, "Not a directory");
    expect_refused(fill_wh_dotdot, "not allowed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image),
        cmocka_unit_test(test_hardlink),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
