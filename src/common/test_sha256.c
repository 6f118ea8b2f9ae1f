/* test_sha256.c - SHA-256 against FIPS 180-4 vectors, chunked updates and coreutils sha256sum. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/sha256.h"

static void hex_of(const void *data, size_t len, char out[CAPSA_SHA256_HEX])
{
    uint8_t d[CAPSA_SHA256_LEN];

    capsa_sha256_buf(data, len, d);
    capsa_sha256_hex(d, sizeof(d), out);
}

static void test_vectors(void **state)
{
    char hex[CAPSA_SHA256_HEX];
    (void)state;

    hex_of("", 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    hex_of(m448, strlen(m448), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                       "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    hex_of(m896, strlen(m896), hex);
    assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a_chunked(void **state)
{
    static uint8_t a[1000000];
    uint8_t d[CAPSA_SHA256_LEN];
    char hex[CAPSA_SHA256_HEX];
    capsa_sha256 c;
    size_t off = 0, step = 1;
    (void)state;

    memset(a, 'a', sizeof(a));
    hex_of(a, sizeof(a), hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    /* Same digest from uneven chunks crossing block boundaries. */
    capsa_sha256_init(&c);
    while (off < sizeof(a)) {
        size_t n = step < sizeof(a) - off ? step : sizeof(a) - off;
        capsa_sha256_update(&c, a + off, n);
        off += n;
        step = step * 7 % 1021 + 1;
    }
    capsa_sha256_final(&c, d);
    capsa_sha256_hex(d, sizeof(d), hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    capsa_sha256_hex(d, 8, hex);
    assert_string_equal(hex, "cdc76e5c9914fb92");
}

/* Every length around the padding boundaries, checked against coreutils. */
static void test_against_sha256sum(void **state)
{
    static const size_t lens[] = {1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 100003};
    char dir[] = "/tmp/capsa-sha256-XXXXXX";
    (void)state;

    assert_non_null(mkdtemp(dir));
    for (size_t i = 0; i < ARRAY_SIZE(lens); i++) {
        char path[256], cmd[512], want[CAPSA_SHA256_HEX] = {0}, got[CAPSA_SHA256_HEX];
        uint8_t d[CAPSA_SHA256_LEN];
        capsa_err err = {0};
        FILE *f;

        snprintf(path, sizeof(path), "%s/f%zu", dir, lens[i]);
        f = fopen(path, "w");
        assert_non_null(f);
        for (size_t j = 0; j < lens[i]; j++)
            fputc((int)((j * 131 + lens[i]) & 0xff), f);
        assert_int_equal(fclose(f), 0);

        snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
        f = popen(cmd, "r");
        assert_non_null(f);
        assert_int_equal(fscanf(f, "%64s", want), 1);
        assert_int_equal(pclose(f), 0);

        assert_int_equal(capsa_sha256_file(path, d, &err), 0);
        capsa_sha256_hex(d, sizeof(d), got);
        assert_string_equal(got, want);
        unlink(path);
    }
    rmdir(dir);
}

static void test_file_errors(void **state)
{
    uint8_t d[CAPSA_SHA256_LEN];
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_sha256_file("/nonexistent/capsa-x", d, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.msg, "/nonexistent/capsa-x"));
    /* A directory opens but cannot be read. */
    assert_int_equal(capsa_sha256_file("/", d, &err), -1);
    assert_int_equal(err.code, EISDIR);
}

static int hw_path(void **state)
{
    (void)state;
    capsa_sha256_force_portable(false);
    return 0;
}

static int portable_path(void **state)
{
    (void)state;
    capsa_sha256_force_portable(true);
    return 0;
}

/* every case on the default path (SHA-NI when the CPU has it) and on the portable code */
int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_vectors, hw_path),
        cmocka_unit_test_setup(test_million_a_chunked, hw_path),
        cmocka_unit_test_setup(test_against_sha256sum, hw_path),
        cmocka_unit_test_setup(test_file_errors, hw_path),
        cmocka_unit_test_setup(test_vectors, portable_path),
        cmocka_unit_test_setup(test_million_a_chunked, portable_path),
        cmocka_unit_test_setup(test_against_sha256sum, portable_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
