/* test_image_extract.c - layer extraction: whiteouts, opaque dirs, links, metadata, diff_id,
 * and malicious tars (.., absolute paths, writes through symlinks, hardlinks out, huge
 * headers) that must fail clearly without touching anything outside the target. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/paths.h"
#include "common/sha256.h"
#include "image/extract.h"
#include "image/test_tarbuf.h"

struct fixture {
    char base[256]; /* temp dir holding root/ and outside/ */
    char root[300];
    char outside[300];
    int rootfd;
};

/* ---- building tars in memory ---------------------------------------------------------- */

static void tb_add(struct tarbuf *t, const char *path, mode_t type, mode_t perm, const char *data,
                   const char *link)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, perm);
    archive_entry_set_mtime(e, 1700000000, 0);
    if (type == AE_IFLNK)
        archive_entry_set_symlink(e, link);
    else if (link)
        archive_entry_set_hardlink(e, link);
    if (type == AE_IFREG && !link)
        archive_entry_set_size(e, data ? (la_int64_t)strlen(data) : 0);
    assert_int_equal(archive_write_header(t->a, e), ARCHIVE_OK);
    if (data && type == AE_IFREG && !link)
        archive_write_data(t->a, data, strlen(data));
    archive_entry_free(e);
}

static void tb_add_xattr(struct tarbuf *t, const char *path, const char *xname, const char *val)
{
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, path);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, 0);
    archive_entry_xattr_add_entry(e, xname, val, strlen(val));
    assert_int_equal(archive_write_header(t->a, e), ARCHIVE_OK);
    archive_entry_free(e);
}

/* Write buf to a temp file and apply it; returns apply's result. */
static int apply_buf(struct fixture *f, const void *buf, size_t len,
                     enum capsa_layer_compression comp, char diff_id[CAPSA_DIGEST_MAX],
                     capsa_err *err)
{
    char path[] = "/tmp/capsa-layer-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    lseek(fd, 0, SEEK_SET);
    int rc = capsa_layer_apply(f->rootfd, fd, comp, diff_id, NULL, err);
    close(fd);
    return rc;
}

static int apply_tar(struct fixture *f, struct tarbuf *t, capsa_err *err)
{
    char d[CAPSA_DIGEST_MAX];
    int rc = apply_buf(f, t->data, t->len, CAPSA_LAYER_TAR, d, err);
    free(t->data);
    return rc;
}

/* ---- fixture -------------------------------------------------------------------------- */

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    snprintf(f->base, sizeof(f->base), "/tmp/capsa-extract-XXXXXX");
    if (!mkdtemp(f->base))
        return -1;
    snprintf(f->root, sizeof(f->root), "%s/root", f->base);
    snprintf(f->outside, sizeof(f->outside), "%s/outside", f->base);
    mkdir(f->root, 0755);
    mkdir(f->outside, 0755);
    char p[400];
    snprintf(p, sizeof(p), "%s/secret", f->outside);
    FILE *fp = fopen(p, "w");
    fputs("secret\n", fp);
    fclose(fp);
    f->rootfd = open(f->root, O_RDONLY | O_DIRECTORY);
    *state = f;
    return f->rootfd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    close(f->rootfd);
    capsa_rm_rf(f->base, NULL);
    free(f);
    return 0;
}

/* Nothing but root/ and outside/secret (unchanged) in base; nothing in /tmp named like an
 * escape. */
static void assert_outside_untouched(struct fixture *f)
{
    char p[400], buf[64] = "";
    DIR *d = opendir(f->outside);
    struct dirent *de;
    int n = 0;

    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    assert_int_equal(n, 1);
    snprintf(p, sizeof(p), "%s/secret", f->outside);
    FILE *fp = fopen(p, "r");
    assert_non_null(fp);
    assert_non_null(fgets(buf, sizeof(buf), fp));
    fclose(fp);
    assert_string_equal(buf, "secret\n");
    n = 0;
    d = opendir(f->base);
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    assert_int_equal(n, 2);
    assert_int_equal(access("/tmp/capsa-escaped", F_OK), -1);
}

static void assert_file(struct fixture *f, const char *rel, const char *content)
{
    char p[600], buf[256] = "";
    snprintf(p, sizeof(p), "%s/%s", f->root, rel);
    FILE *fp = fopen(p, "r");
    if (!fp)
        fail_msg("%s: %s", rel, strerror(errno));
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    assert_string_equal(buf, content);
}

static bool exists(struct fixture *f, const char *rel)
{
    char p[600];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", f->root, rel);
    return lstat(p, &st) == 0;
}

static void expect_fail(struct fixture *f, struct tarbuf *t, const char *needle)
{
    capsa_err err = {0};
    assert_int_equal(apply_tar(f, t, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
    assert_outside_untouched(f);
}

/* ---- good layers ---------------------------------------------------------------------- */

static void test_layers_apply(void **state)
{
    struct fixture *f = *state;
    struct tarbuf t;
    capsa_err err = {0};
    char d[CAPSA_DIGEST_MAX], want[CAPSA_DIGEST_MAX], hex[CAPSA_SHA256_HEX];
    uint8_t dig[CAPSA_SHA256_LEN];

    tb_open(&t, false);
    tb_add(&t, "./", AE_IFDIR, 0755, NULL, NULL);
    tb_add(&t, "./etc/", AE_IFDIR, 0755, NULL, NULL);
    tb_add(&t, "./etc/keep", AE_IFREG, 0644, "v1\n", NULL);
    tb_add(&t, "./etc/gone", AE_IFREG, 0644, "x\n", NULL);
    tb_add(&t, "./opq/", AE_IFDIR, 0755, NULL, NULL);
    tb_add(&t, "./opq/old", AE_IFREG, 0644, "old\n", NULL);
    tb_add(&t, "./opq/sub/deep", AE_IFREG, 0644, "old\n", NULL); /* parent made implicitly */
    tb_add(&t, "./lnk", AE_IFLNK, 0777, NULL, "/outside/anything");
    tb_close(&t);
    assert_int_equal(apply_buf(f, t.data, t.len, CAPSA_LAYER_TAR, d, &err), 0);
    capsa_sha256_buf(t.data, t.len, dig);
    capsa_sha256_hex(dig, sizeof(dig), hex);
    snprintf(want, sizeof(want), "sha256:%s", hex);
    assert_string_equal(d, want); /* diff_id is the sha256 of the uncompressed tar */
    free(t.data);

    tb_open(&t, true); /* gzip layer */
    tb_add(&t, "etc/.wh.gone", AE_IFREG, 0644, "", NULL);
    tb_add(&t, "opq/new", AE_IFREG, 0644, "new\n", NULL);
    tb_add(&t, "opq/.wh..wh..opq", AE_IFREG, 0644, "", NULL);
    tb_add(&t, "etc/hl", AE_IFREG, 0600, "linked\n", NULL);
    tb_add(&t, "etc/hl2", AE_IFREG, 0600, NULL, "etc/hl");
    tb_add(&t, "etc/keep", AE_IFREG, 04755, "v2\n", NULL);
    tb_add(&t, "lnk", AE_IFDIR, 0755, NULL, NULL); /* a dir replaces the symlink */
    tb_add(&t, "lnk/inside", AE_IFREG, 0644, "in\n", NULL);
    tb_add(&t, "fifo", AE_IFIFO, 0640, NULL, NULL);
    tb_add_xattr(&t, "etc/xa", "user.capsa", "hello");
    tb_close(&t);
    assert_int_equal(apply_buf(f, t.data, t.len, CAPSA_LAYER_GZIP, d, &err), 0);
    free(t.data);

    assert_file(f, "etc/keep", "v2\n");
    assert_false(exists(f, "etc/gone"));
    assert_false(exists(f, "etc/.wh.gone"));
    assert_file(f, "opq/new", "new\n");
    assert_false(exists(f, "opq/old"));
    assert_false(exists(f, "opq/sub"));
    assert_false(exists(f, "opq/.wh..wh..opq"));
    assert_file(f, "etc/hl2", "linked\n");
    assert_file(f, "lnk/inside", "in\n");
    char p[600];
    struct stat a, b;
    snprintf(p, sizeof(p), "%s/etc/hl", f->root);
    assert_int_equal(stat(p, &a), 0);
    snprintf(p, sizeof(p), "%s/etc/hl2", f->root);
    assert_int_equal(stat(p, &b), 0);
    assert_int_equal(a.st_ino, b.st_ino);
    assert_int_equal(a.st_mode & 07777, 0600);
    snprintf(p, sizeof(p), "%s/etc/keep", f->root);
    assert_int_equal(stat(p, &a), 0);
    assert_int_equal(a.st_mode & 07777, 04755);
    assert_int_equal(a.st_mtime, 1700000000);
    snprintf(p, sizeof(p), "%s/fifo", f->root);
    assert_int_equal(lstat(p, &a), 0);
    assert_true(S_ISFIFO(a.st_mode));
    snprintf(p, sizeof(p), "%s/etc/xa", f->root);
    char val[32] = "";
    ssize_t n = getxattr(p, "user.capsa", val, sizeof(val) - 1);
    if (n >= 0 || errno != ENOTSUP)
        assert_string_equal(val, "hello");
    assert_outside_untouched(f);

    /* Declared gzip but plain tar: refused. */
    tb_open(&t, false);
    tb_add(&t, "x", AE_IFREG, 0644, "x", NULL);
    tb_close(&t);
    assert_int_equal(apply_buf(f, t.data, t.len, CAPSA_LAYER_GZIP, d, &err), -1);
    assert_non_null(strstr(err.msg, "gzip"));
    free(t.data);
}

/* ---- malicious layers ----------------------------------------------------------------- */

static void test_dotdot(void **state)
{
    struct fixture *f = *state;
    struct tarbuf t;

    tb_open(&t, false);
    tb_add(&t, "ok", AE_IFREG, 0644, "fine", NULL);
    tb_add(&t, "../outside/evil", AE_IFREG, 0644, "evil", NULL);
    tb_close(&t);
    expect_fail(f, &t, "'..' component escapes the root");

    tb_open(&t, false);
    tb_add(&t, "a/../../outside/evil2", AE_IFREG, 0644, "evil", NULL);
    tb_close(&t);
    expect_fail(f, &t, "'..'");

    tb_open(&t, false);
    tb_add(&t, "../.wh.outside", AE_IFREG, 0644, "", NULL); /* whiteout outside the root */
    tb_close(&t);
    expect_fail(f, &t, "'..'");

    tb_open(&t, false);
    tb_add(&t, ".wh...", AE_IFREG, 0644, "", NULL); /* whiteout of ".." */
    tb_close(&t);
    expect_fail(f, &t, "whiteout");
}

static void test_absolute(void **state)
{
    struct fixture *f = *state;
    struct tarbuf t;

    tb_open(&t, false);
    tb_add(&t, "/tmp/capsa-escaped", AE_IFREG, 0644, "evil", NULL);
    tb_close(&t);
    expect_fail(f, &t, "absolute path");
}

static void test_symlink_escape(void **state)
{
    struct fixture *f = *state;
    struct tarbuf t;
    char target[400];

    /* A symlink to the outside directory, then a file written through it. */
    snprintf(target, sizeof(target), "%s", f->outside);
    tb_open(&t, false);
    tb_add(&t, "evil", AE_IFLNK, 0777, NULL, target);
    tb_add(&t, "evil/pwned", AE_IFREG, 0644, "pwned", NULL);
    tb_close(&t);
    expect_fail(f, &t, "symlink; refusing to write through it");

    /* Relative symlink climbing out, then a directory entry below it. */
    tb_open(&t, false);
    tb_add(&t, "rel", AE_IFLNK, 0777, NULL, "../outside");
    tb_add(&t, "rel/sub/", AE_IFDIR, 0755, NULL, NULL);
    tb_close(&t);
    expect_fail(f, &t, "symlink");

    /* A symlink replacing a file, then overwriting "the file": replaces the link itself. */
    tb_open(&t, false);
    tb_add(&t, "f", AE_IFLNK, 0777, NULL, "../outside/secret");
    tb_add(&t, "f", AE_IFREG, 0644, "replaced", NULL);
    tb_close(&t);
    capsa_err err = {0};
    assert_int_equal(apply_tar(f, &t, &err), 0);
    assert_file(f, "f", "replaced");
    assert_outside_untouched(f);

    /* Whiteout through a symlinked parent must not delete outside files. */
    tb_open(&t, false);
    tb_add(&t, "wl", AE_IFLNK, 0777, NULL, "../outside");
    tb_add(&t, "wl/.wh.secret", AE_IFREG, 0644, "", NULL);
    tb_close(&t);
    expect_fail(f, &t, "symlink");

    /* Opaque marker below a symlink to outside. */
    tb_open(&t, false);
    tb_add(&t, "ol", AE_IFLNK, 0777, NULL, f->outside);
    tb_add(&t, "ol/.wh..wh..opq", AE_IFREG, 0644, "", NULL);
    tb_close(&t);
    expect_fail(f, &t, "symlink");
}

static void test_hardlink_escape(void **state)
{
    struct fixture *f = *state;
    struct tarbuf t;

    tb_open(&t, false);
    tb_add(&t, "hl", AE_IFREG, 0644, NULL, "../outside/secret");
    tb_close(&t);
    expect_fail(f, &t, "'..'");

    tb_open(&t, false);
    tb_add(&t, "hl", AE_IFREG, 0644, NULL, "/etc/passwd");
    tb_close(&t);
    expect_fail(f, &t, "absolute path");

    tb_open(&t, false);
    tb_add(&t, "s", AE_IFLNK, 0777, NULL, f->outside);
    tb_add(&t, "hl", AE_IFREG, 0644, NULL, "s/secret");
    tb_close(&t);
    expect_fail(f, &t, "symlink");

    tb_open(&t, false);
    tb_add(&t, "hl3", AE_IFREG, 0644, NULL, "missing");
    tb_close(&t);
    expect_fail(f, &t, "hardlink target missing");
}

/* A ustar header announcing a 1 GiB pax extended header, then a little data. */
static void test_huge_header(void **state)
{
    struct fixture *f = *state;
    char block[1536];
    unsigned sum = 0;
    capsa_err err = {0};
    char d[CAPSA_DIGEST_MAX];

    memset(block, 0, sizeof(block));
    snprintf(block, 100, "PaxHeaders/huge");
    memcpy(block + 100, "0000644", 8);
    memcpy(block + 108, "0000000", 8);
    memcpy(block + 116, "0000000", 8);
    memcpy(block + 124, "10000000000", 12); /* 1 GiB, octal */
    memcpy(block + 136, "14500000000", 12);
    block[156] = 'x';
    memcpy(block + 257, "ustar", 6);
    memcpy(block + 263, "00", 2);
    memset(block + 148, ' ', 8);
    for (int i = 0; i < 512; i++)
        sum += (unsigned char)block[i];
    snprintf(block + 148, 8, "%06o", sum);
    memset(block + 512, 'A', 1024);
    assert_int_equal(apply_buf(f, block, sizeof(block), CAPSA_LAYER_TAR, d, &err), -1);
    print_message("huge pax header: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "layer"));
    assert_outside_untouched(f);

    /* A 2 MB path in a pax header. */
    struct tarbuf t;
    size_t n = 2u << 20;
    char *longp = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        longp[i] = (i % 100 == 99) ? '/' : 'a';
    longp[n] = '\0';
    tb_open(&t, false);
    tb_add(&t, longp, AE_IFREG, 0644, "x", NULL);
    tb_close(&t);
    free(longp);
    capsa_err e2 = {0};
    assert_int_equal(apply_tar(f, &t, &e2), -1);
    print_message("2 MB path: %s\n", e2.msg);
    assert_outside_untouched(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_layers_apply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dotdot, setup, teardown),
        cmocka_unit_test_setup_teardown(test_absolute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlink_escape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hardlink_escape, setup, teardown),
        cmocka_unit_test_setup_teardown(test_huge_header, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
