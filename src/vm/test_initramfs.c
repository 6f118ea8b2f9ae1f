/* test_initramfs.c - the initramfs writer checked by the real cpio(1): listing, modes, bytes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/paths.h"
#include "vm/initramfs.h"

static char tmpdir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/capsa-initramfs-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return capsa_rm_rf(tmpdir, NULL);
}

/* A fake agent of an odd size so data padding is exercised. */
static void make_agent(const char *path, size_t size, unsigned seed)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < size; i++)
        fputc((int)((i * 2654435761u + seed) >> 13 & 0xff), f);
    assert_int_equal(fclose(f), 0);
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "r");
    uint8_t *buf;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Find the `cpio -tv` line naming `name` (last field) and check its mode column. */
static void expect_listing(const char *listing, const char *name, const char *mode)
{
    char want[64];
    const char *line = listing;

    snprintf(want, sizeof(want), " %s\n", name);
    while (line && *line) {
        const char *nl = strchr(line, '\n');
        size_t n = nl ? (size_t)(nl - line + 1) : strlen(line);
        if (n > strlen(want) && memcmp(line + n - strlen(want), want, strlen(want)) == 0) {
            if (strncmp(line, mode, strlen(mode)) != 0)
                fail_msg("entry %s: mode '%.10s', expected '%s'", name, line, mode);
            return;
        }
        line = nl ? nl + 1 : NULL;
    }
    fail_msg("entry %s missing from cpio listing:\n%s", name, listing);
}

static void test_write_and_verify_with_cpio(void **state)
{
    char agent[256], cpio[256], ex[256], cmd[1024], listing[8192] = {0};
    _cleanup_free_ uint8_t *want = NULL, *got = NULL;
    size_t want_len, got_len, n;
    capsa_err err = {0};
    struct stat st;
    FILE *p;
    (void)state;

    snprintf(agent, sizeof(agent), "%s/agent", tmpdir);
    snprintf(cpio, sizeof(cpio), "%s/out.cpio", tmpdir);
    snprintf(ex, sizeof(ex), "%s/extract", tmpdir);
    make_agent(agent, 123457, 1);
    assert_int_equal(capsa_initramfs_write(agent, cpio, &err), 0);
    assert_int_equal(stat(cpio, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0644);

    /* The real cpio lists every entry with the right type and mode. */
    snprintf(cmd, sizeof(cmd), "cpio -t -v --quiet < '%s'", cpio);
    p = popen(cmd, "r");
    assert_non_null(p);
    n = fread(listing, 1, sizeof(listing) - 1, p);
    assert_true(n > 0);
    assert_int_equal(pclose(p), 0);
    expect_listing(listing, "dev", "drwxr-xr-x");
    expect_listing(listing, "proc", "dr-xr-xr-x");
    expect_listing(listing, "sys", "dr-xr-xr-x");
    expect_listing(listing, "run", "drwxr-xr-x");
    expect_listing(listing, "tmp", "drwxrwxrwt");
    expect_listing(listing, "mnt", "drwxr-xr-x");
    expect_listing(listing, "newroot", "drwxr-xr-x");
    expect_listing(listing, "dev/console", "crw-------");
    expect_listing(listing, "init", "-rwxr-xr-x");
    assert_non_null(strstr(listing, "123457"));
    assert_null(strstr(listing, "TRAILER"));

    /* Extracting gives back the agent's exact bytes (and, as root, the device node). */
    assert_int_equal(mkdir(ex, 0755), 0);
    snprintf(cmd, sizeof(cmd), "cd '%s' && cpio -idm --quiet %s < '%s'", ex,
             geteuid() == 0 ? "" : "-f dev/console", cpio);
    assert_int_equal(system(cmd), 0);
    snprintf(cmd, sizeof(cmd), "%s/init", ex);
    assert_int_equal(stat(cmd, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0755);
    want = slurp(agent, &want_len);
    got = slurp(cmd, &got_len);
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
    snprintf(cmd, sizeof(cmd), "%s/tmp", ex);
    assert_int_equal(stat(cmd, &st), 0);
    assert_int_equal(st.st_mode & 07777, 01777);
    if (geteuid() == 0) {
        snprintf(cmd, sizeof(cmd), "%s/dev/console", ex);
        assert_int_equal(stat(cmd, &st), 0);
        assert_true(S_ISCHR(st.st_mode));
        assert_int_equal(major(st.st_rdev), 5);
        assert_int_equal(minor(st.st_rdev), 1);
    }
}

static void test_reproducible_and_no_temp_left(void **state)
{
    char agent[256], a[256], b[256], cmd[600];
    _cleanup_free_ uint8_t *x = NULL, *y = NULL;
    size_t xl, yl;
    capsa_err err = {0};
    (void)state;

    snprintf(agent, sizeof(agent), "%s/agent2", tmpdir);
    snprintf(a, sizeof(a), "%s/a.cpio", tmpdir);
    snprintf(b, sizeof(b), "%s/b.cpio", tmpdir);
    make_agent(agent, 4096, 2);
    assert_int_equal(capsa_initramfs_write(agent, a, &err), 0);
    sleep(1); /* a different clock must not change the bytes */
    assert_int_equal(capsa_initramfs_write(agent, b, &err), 0);
    x = slurp(a, &xl);
    y = slurp(b, &yl);
    assert_int_equal(xl, yl);
    assert_memory_equal(x, y, xl);
    assert_int_equal(xl % 4, 0);
    /* Overwriting an existing archive works and leaves no temp file behind. */
    assert_int_equal(capsa_initramfs_write(agent, a, &err), 0);
    snprintf(cmd, sizeof(cmd), "ls '%s' | grep -q '\\.tmp\\.'", tmpdir);
    assert_int_not_equal(system(cmd), 0);
}

static void test_errors_name_the_path(void **state)
{
    char out[256], empty[256];
    capsa_err err = {0};
    (void)state;

    snprintf(out, sizeof(out), "%s/err.cpio", tmpdir);
    assert_int_equal(capsa_initramfs_write("/nonexistent/agent", out, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.msg, "/nonexistent/agent"));
    assert_int_equal(capsa_initramfs_write(tmpdir, out, &err), -1);
    assert_non_null(strstr(err.msg, "regular file"));
    snprintf(empty, sizeof(empty), "%s/empty", tmpdir);
    make_agent(empty, 0, 0);
    assert_int_equal(capsa_initramfs_write(empty, out, &err), -1);
    assert_int_equal(err.code, EFBIG);
    /* Unwritable destination directory. */
    make_agent(empty, 10, 0);
    assert_int_equal(capsa_initramfs_write(empty, "/nonexistent/dir/x.cpio", &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/dir/x.cpio"));
    assert_int_not_equal(access(out, F_OK), 0);
}

static void test_cached_path(void **state)
{
    char home[256], agent[256], p1[4096], p2[4096], p3[4096], want[4096];
    capsa_err err = {0};
    struct stat st1, st2;
    (void)state;

    snprintf(home, sizeof(home), "%s/home", tmpdir);
    snprintf(agent, sizeof(agent), "%s/agent3", tmpdir);
    setenv("CAPSA_HOME", home, 1);
    /* sha256 of "abc" starts ba7816bf8f01cfea. */
    FILE *f = fopen(agent, "w");
    assert_non_null(f);
    fputs("abc", f);
    fclose(f);

    assert_int_equal(capsa_initramfs_path(agent, p1, sizeof(p1), &err), 0);
    snprintf(want, sizeof(want), "%s/cache/initramfs-ba7816bf8f01cfea.cpio", home);
    assert_string_equal(p1, want);
    assert_int_equal(stat(p1, &st1), 0);

    /* Second call reuses the file (same inode, not rewritten). */
    assert_int_equal(capsa_initramfs_path(agent, p2, sizeof(p2), &err), 0);
    assert_string_equal(p1, p2);
    assert_int_equal(stat(p2, &st2), 0);
    assert_int_equal(st1.st_ino, st2.st_ino);

    /* A different agent gets a different archive. */
    make_agent(agent, 999, 3);
    assert_int_equal(capsa_initramfs_path(agent, p3, sizeof(p3), &err), 0);
    assert_string_not_equal(p1, p3);
    assert_int_equal(access(p3, R_OK), 0);

    /* A too-small output buffer is an error, not a truncated path. */
    assert_int_equal(capsa_initramfs_path(agent, p3, 10, &err), -1);
    unsetenv("CAPSA_HOME");
}

static void put(const char *path, const char *data)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(data, f);
    assert_int_equal(fclose(f), 0);
}

/* Kernel modules (Debian's fallback kernel): listed and extracted by the real cpio(1), the
 * order file normalised, the cache keyed by the modules' bytes, bad input refused. */
static void test_modules(void **state)
{
    char home[256], agent[256], mods[256], p[512], cpio[256], ex[256], cmd[1024],
        listing[8192] = {0}, plain[4096], m1[4096], m2[4096], m3[4096];
    _cleanup_free_ uint8_t *got = NULL;
    capsa_err err = {0};
    size_t n;
    FILE *f;
    (void)state;

    snprintf(home, sizeof(home), "%s/mhome", tmpdir);
    snprintf(agent, sizeof(agent), "%s/magent", tmpdir);
    snprintf(mods, sizeof(mods), "%s/kdir", tmpdir);
    snprintf(p, sizeof(p), "%s/modules", mods);
    assert_int_equal(capsa_mkdir_p(p, 0755, &err), 0);
    make_agent(agent, 5001, 7);
    snprintf(p, sizeof(p), "%s/modules/virtio.ko", mods);
    put(p, "virtio-bytes");
    snprintf(p, sizeof(p), "%s/modules/virtio_mmio.ko", mods);
    put(p, "mmio-bytes!");
    snprintf(p, sizeof(p), "%s/modules.order", mods);
    put(p, "virtio.ko\n\nvirtio_mmio.ko"); /* blank line, no final newline */

    snprintf(cpio, sizeof(cpio), "%s/mods.cpio", tmpdir);
    assert_int_equal(capsa_initramfs_write_modules(agent, mods, cpio, &err), 0);
    snprintf(cmd, sizeof(cmd), "cpio -t -v --quiet < %s", cpio);
    f = popen(cmd, "r");
    assert_non_null(f);
    n = fread(listing, 1, sizeof(listing) - 1, f);
    assert_int_equal(pclose(f), 0);
    listing[n] = '\0';
    expect_listing(listing, "lib", "drwxr-xr-x");
    expect_listing(listing, "lib/modules/capsa", "drwxr-xr-x");
    expect_listing(listing, "lib/modules/capsa/virtio.ko", "-rw-r--r--");
    expect_listing(listing, "lib/modules/capsa/virtio_mmio.ko", "-rw-r--r--");
    expect_listing(listing, "lib/modules/capsa/order", "-rw-r--r--");
    expect_listing(listing, "init", "-rwxr-xr-x");
    snprintf(ex, sizeof(ex), "%s/mex", tmpdir);
    assert_int_equal(mkdir(ex, 0755), 0);
    snprintf(cmd, sizeof(cmd), "cd %s && cpio -idm --quiet < %s", ex, cpio);
    assert_int_equal(system(cmd), 0);
    snprintf(p, sizeof(p), "%s/lib/modules/capsa/order", ex);
    got = slurp(p, &n);
    assert_int_equal(n, strlen("virtio.ko\nvirtio_mmio.ko\n"));
    assert_memory_equal(got, "virtio.ko\nvirtio_mmio.ko\n", n);
    free(steal_pointer(&got));
    snprintf(p, sizeof(p), "%s/lib/modules/capsa/virtio_mmio.ko", ex);
    got = slurp(p, &n);
    assert_int_equal(n, 11);
    assert_memory_equal(got, "mmio-bytes!", 11);

    /* cache: a -mods archive apart from the plain one, keyed by the modules' bytes */
    setenv("CAPSA_HOME", home, 1);
    assert_int_equal(capsa_initramfs_path(agent, plain, sizeof(plain), &err), 0);
    assert_int_equal(capsa_initramfs_path_modules(agent, NULL, m1, sizeof(m1), &err), 0);
    assert_string_equal(plain, m1);
    assert_int_equal(capsa_initramfs_path_modules(agent, mods, m1, sizeof(m1), &err), 0);
    assert_non_null(strstr(m1, "-mods.cpio"));
    assert_string_not_equal(plain, m1);
    assert_int_equal(capsa_initramfs_path_modules(agent, mods, m2, sizeof(m2), &err), 0);
    assert_string_equal(m1, m2);
    snprintf(p, sizeof(p), "%s/modules/virtio.ko", mods);
    put(p, "virtio-bytes, rebuilt");
    assert_int_equal(capsa_initramfs_path_modules(agent, mods, m3, sizeof(m3), &err), 0);
    assert_string_not_equal(m1, m3);
    assert_int_equal(access(m3, R_OK), 0);
    unsetenv("CAPSA_HOME");

    /* bad input names the file and line */
    snprintf(p, sizeof(p), "%s/modules.order", mods);
    put(p, "virtio.ko\n../etc/passwd.ko\n");
    assert_int_equal(capsa_initramfs_write_modules(agent, mods, cpio, &err), -1);
    assert_non_null(strstr(err.msg, "modules.order line 2"));
    put(p, "virtio.ko\nvirtio.ko\n");
    assert_int_equal(capsa_initramfs_write_modules(agent, mods, cpio, &err), -1);
    assert_non_null(strstr(err.msg, "listed twice"));
    put(p, "virtio.ko\nmissing.ko\n");
    assert_int_equal(capsa_initramfs_write_modules(agent, mods, cpio, &err), -1);
    assert_non_null(strstr(err.msg, "modules/missing.ko"));
    put(p, "\n");
    assert_int_equal(capsa_initramfs_write_modules(agent, mods, cpio, &err), -1);
    assert_non_null(strstr(err.msg, "lists no module"));
    unlink(p);
    assert_int_equal(capsa_initramfs_write_modules(agent, mods, cpio, &err), -1);
    assert_non_null(strstr(err.msg, "modules.order"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_and_verify_with_cpio),
        cmocka_unit_test(test_reproducible_and_no_temp_left),
        cmocka_unit_test(test_errors_name_the_path),
        cmocka_unit_test(test_cached_path),
        cmocka_unit_test(test_modules),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
