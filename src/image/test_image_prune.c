/* test_image_prune.c - image keys (reference, digest, REPO@digest, prefix), selection with
 * ambiguity, who uses an image, prune's dangling/--all choice, store entry names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "common/paths.h"
#include "image/prune.h"
#include "store/store.h"

#define H1  "1111111111111111111111111111111111111111111111111111111111111111"
#define H2  "1111111111112222222222222222222222222222222222222222222222222222"
#define H3  "abcdef0123453333333333333333333333333333333333333333333333333333"
#define D1  "sha256:" H1
#define D2  "sha256:" H2
#define D3  "sha256:" H3
#define REG "127.0.0.1:5000/test/"

static void parse_ok(const char *in, enum capsa_image_key_kind kind, const char *ref,
                     const char *digest)
{
    struct capsa_image_key k;
    capsa_err err = {0};

    if (capsa_image_key_parse(in, &k, &err) < 0)
        fail_msg("parse %s: %s", in, err.msg);
    assert_int_equal(k.kind, kind);
    assert_string_equal(k.ref, ref);
    assert_string_equal(k.digest, digest);
}

static void test_key_parse(void **state)
{
    (void)state;
    parse_ok("busybox", CAPSA_IMAGE_KEY_REF, "docker.io/library/busybox:latest", "");
    parse_ok(REG "bb:v1", CAPSA_IMAGE_KEY_REF, REG "bb:v1", "");
    parse_ok(D1, CAPSA_IMAGE_KEY_DIGEST, "", D1);
    parse_ok(H1, CAPSA_IMAGE_KEY_DIGEST, "", D1);
    parse_ok("sha256:ABCDEF012345", CAPSA_IMAGE_KEY_PREFIX, "", "sha256:abcdef012345");
    /* a bare lowercase hex prefix is also a name: both are kept */
    parse_ok("abcdef012345", CAPSA_IMAGE_KEY_PREFIX, "docker.io/library/abcdef012345:latest",
             "sha256:abcdef012345");
    parse_ok("ABCDEF012345", CAPSA_IMAGE_KEY_PREFIX, "", "sha256:abcdef012345");
    parse_ok(REG "bb@" D1, CAPSA_IMAGE_KEY_REPO_DIGEST, REG "bb", D1);
    parse_ok(REG "bb:v1@" D1, CAPSA_IMAGE_KEY_REPO_DIGEST, REG "bb", D1);
    /* 11 hex digits is a name, not a prefix */
    parse_ok("abcdef01234", CAPSA_IMAGE_KEY_REF, "docker.io/library/abcdef01234:latest", "");
}

static void parse_bad(const char *in, const char *needle)
{
    struct capsa_image_key k;
    capsa_err err = {0};

    assert_int_equal(capsa_image_key_parse(in, &k, &err), -1);
    assert_int_equal(err.code, EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("parse %s: '%s' lacks '%s'", in, err.msg, needle);
}

static void test_key_parse_bad(void **state)
{
    (void)state;
    parse_bad("", "empty");
    parse_bad("sha256:abc", "at least 12 hex digits");
    parse_bad("sha256:", "12 to 64 hex");
    parse_bad("sha256:xyz012345678", "12 to 64 hex");
    parse_bad("sha256:" H1 "0", "12 to 64 hex");
    parse_bad("Bad Name", "Bad Name");
}

static struct capsa_store_image img(const char *ref, const char *digest)
{
    return (struct capsa_store_image){.reference = (char *)ref, .manifest_digest = (char *)digest};
}

static int select_key(const char *key, const struct capsa_store_image *v, size_t n, bool *sel,
                      capsa_err *err)
{
    struct capsa_image_key k;

    if (capsa_image_key_parse(key, &k, err) < 0)
        return -100;
    return capsa_image_key_select(&k, key, v, n, sel, err);
}

static void test_key_select(void **state)
{
    const struct capsa_store_image v[] = {
        img(REG "bb:latest", D1),
        img(REG "bb:v1", D1),
        img(REG "bb@" D1, D1),
        img(REG "other:latest", D1),
        img(REG "bb2:latest", D2),
        img(REG "app:latest", D3),
        img("docker.io/library/abcdef012345:latest", D2),
    };
    const size_t n = ARRAY_SIZE(v);
    bool sel[ARRAY_SIZE(v)];
    capsa_err err = {0};
    (void)state;

    assert_int_equal(select_key(REG "bb:v1", v, n, sel, &err), 1);
    assert_true(sel[1]);
    /* a full digest names every reference to the manifest */
    assert_int_equal(select_key(D1, v, n, sel, &err), 4);
    assert_true(sel[0] && sel[1] && sel[2] && sel[3] && !sel[4]);
    /* REPO@digest: only that repository's references */
    assert_int_equal(select_key(REG "bb@" D1, v, n, sel, &err), 3);
    assert_true(sel[0] && sel[1] && sel[2] && !sel[3]);
    /* a unique prefix */
    assert_int_equal(select_key("sha256:abcdef012345", v, n, sel, &err), 1);
    assert_true(sel[5]);
    assert_int_equal(select_key(H3, v, n, sel, &err), 1);
    /* a bare hex string that is also a stored name is the name */
    assert_int_equal(select_key("abcdef012345", v, n, sel, &err), 1);
    assert_true(sel[6]);
    /* ambiguous prefix: both candidates named, nothing selected */
    assert_int_equal(select_key("sha256:111111111111", v, n, sel, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_non_null(strstr(err.msg, "ambiguous"));
    assert_non_null(strstr(err.msg, D1));
    assert_non_null(strstr(err.msg, D2));
    for (size_t i = 0; i < n; i++)
        assert_false(sel[i]);
    /* longer prefix disambiguates */
    assert_int_equal(select_key("sha256:1111111111112", v, n, sel, &err), 2);
    assert_true(sel[4] && sel[6]);
    /* not found names the key */
    assert_int_equal(select_key(REG "nope", v, n, sel, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.msg, REG "nope"));
    assert_int_equal(select_key("sha256:999999999999", v, n, sel, &err), -1);
    assert_int_equal(err.code, ENOENT);
    /* a repository prefix is not a repository */
    assert_int_equal(select_key(REG "b@" D1, v, n, sel, &err), -1);
}

static void test_pinned_and_uses(void **state)
{
    char d[CAPSA_DIGEST_MAX];
    struct capsa_store_image_user sb = {
        .name = "s1", .image_ref = REG "bb:latest", .pinned_ref = REG "bb@" D1};
    struct capsa_store_image_user snap = {.snapshot = true, .name = "p", .manifest_digest = D2};
    struct capsa_store_image_user old = {.name = "o", .image_ref = REG "app:latest"};
    (void)state;

    assert_true(capsa_image_pinned_digest(REG "bb@" D1, d));
    assert_string_equal(d, D1);
    assert_false(capsa_image_pinned_digest(REG "bb:latest", d));
    assert_false(capsa_image_pinned_digest(REG "bb@sha256:12", d));
    assert_false(capsa_image_pinned_digest(NULL, d));

    assert_true(capsa_image_user_uses(&sb, REG "other:latest", D1)); /* by digest */
    assert_true(capsa_image_user_uses(&sb, REG "bb:latest", D2));    /* by reference */
    assert_false(capsa_image_user_uses(&sb, REG "x:latest", D3));
    assert_true(capsa_image_user_uses(&snap, REG "x:latest", D2));
    assert_false(capsa_image_user_uses(&snap, REG "x:latest", D1));
    assert_true(capsa_image_user_uses(&old, REG "app:latest", D3));
    assert_false(capsa_image_user_uses(&old, REG "app:v2", D3));
}

static void test_prune_select(void **state)
{
    const struct capsa_store_image v[] = {
        img(REG "used:latest", D1),               /* 0: pinned by a sandbox */
        img(REG "used2@" D1, D1),                 /* 1: same manifest: kept with it */
        img(REG "tagged:latest", D2),             /* 2: unused, tagged */
        img(REG "digonly@" D3, D3),               /* 3: unused, digest-only: dangling */
        img(REG "snap:latest", "sha256:" H1 "x"), /* 4: used by a snapshot */
    };
    const struct capsa_store_image_user users[] = {
        {.name = "sb", .image_ref = REG "used:latest", .pinned_ref = REG "used@" D1},
        {.snapshot = true, .name = "sn", .manifest_digest = "sha256:" H1 "x"},
    };
    bool drop[ARRAY_SIZE(v)];
    (void)state;

    capsa_image_prune_select(v, ARRAY_SIZE(v), users, ARRAY_SIZE(users), false, drop);
    assert_false(drop[0]);
    assert_false(drop[1]);
    assert_false(drop[2]);
    assert_true(drop[3]);
    assert_false(drop[4]);
    capsa_image_prune_select(v, ARRAY_SIZE(v), users, ARRAY_SIZE(users), true, drop);
    assert_false(drop[0]);
    assert_false(drop[1]);
    assert_true(drop[2]);
    assert_true(drop[3]);
    assert_false(drop[4]);
    /* no users at all: --all drops everything, the default only the digest-only one */
    capsa_image_prune_select(v, ARRAY_SIZE(v), NULL, 0, true, drop);
    for (size_t i = 0; i < ARRAY_SIZE(v); i++)
        assert_true(drop[i]);
    capsa_image_prune_select(v, ARRAY_SIZE(v), NULL, 0, false, drop);
    assert_false(drop[0]); /* its manifest has a tagged reference */
    assert_false(drop[1]);
    assert_true(drop[3]);
}

static void classify(const char *area, const char *name, int kind, const char *hex, long pid)
{
    char h[65];
    long p;

    int k = capsa_prune_classify(area, name, h, &p);
    if (k != kind)
        fail_msg("%s/%s: kind %d, expected %d", area, name, k, kind);
    assert_string_equal(h, hex);
    assert_int_equal(p, pid);
}

static void test_classify(void **state)
{
    (void)state;
    classify("blobs/sha256", H1, CAPSA_PRUNE_BLOB, H1, 0);
    classify("blobs/sha256", H1 "0", -1, "", 0);
    classify("blobs/sha256", "ABCDEF", -1, "", 0);
    classify("disks", H2, CAPSA_PRUNE_DISK, H2, 0);
    classify("disks", "notes.txt", -1, "", 0);
    classify("tmp", H1 ".part", CAPSA_PRUNE_PARTIAL, H1, 0);
    classify("tmp", H1 ".put.Ab12Cd", CAPSA_PRUNE_TMP, H1, 0);
    classify("tmp", H1 ".put.", -1, "", 0);
    classify("tmp", H1 ".tree.4242", CAPSA_PRUNE_TMP, H1, 4242);
    classify("tmp", H1 ".build.77", CAPSA_PRUNE_TMP, H1, 77);
    classify("tmp", H1 ".prune.9", CAPSA_PRUNE_TMP, H1, 9);
    classify("tmp", H1 ".tree.x1", -1, "", 0);
    classify("tmp", "load.123.aBcDeF", CAPSA_PRUNE_TMP, "", 123);
    classify("tmp", "load.x.aBcDeF", -1, "", 0);
    classify("tmp", "load.123.", -1, "", 0);
    classify("tmp", "random", -1, "", 0);
    classify("locks", H1 ".lock", CAPSA_PRUNE_LOCK, H1, 0);
    classify("locks", "gc.lock", -1, "", 0);
    classify("locks", "other.lock", CAPSA_PRUNE_LOCK, "other", 0);
    classify("locks", "../x.lock", -1, "", 0);
    classify("locks", ".lock", -1, "", 0);
    classify("locks", H1, -1, "", 0);
    classify("elsewhere", H1, -1, "", 0);
    assert_string_equal(capsa_prune_kind_name(CAPSA_PRUNE_PARTIAL), "partial");
    assert_null(capsa_prune_kind_name(CAPSA_PRUNE_KIND_COUNT));
}

static bool strv_has(char **v, const char *s)
{
    for (; v && *v; v++)
        if (!strcmp(*v, s))
            return true;
    return false;
}

static size_t strv_len(char **v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

#define L1 "sha256:aaaa111111111111111111111111111111111111111111111111111111111111"
#define L2 "sha256:bbbb222222222222222222222222222222222222222222222222222222222222"
#define L3 "sha256:cccc333333333333333333333333333333333333333333333333333333333333"
#define C1 "sha256:c1c1111111111111111111111111111111111111111111111111111111111111"
#define C2 "sha256:c2c2222222222222222222222222222222222222222222222222222222222222"
#define C3 "sha256:c3c3333333333333333333333333333333333333333333333333333333333333"

static void put_image(struct capsa_store *s, const char *ref, const char *md, const char *cfg,
                      const char *const *layers, size_t n)
{
    capsa_err err = {0};
    for (size_t i = 0; i < n; i++) {
        struct capsa_store_layer l = {.digest = (char *)layers[i], .state = CAPSA_LAYER_READY};
        if (capsa_store_layer_put(s, &l, &err) < 0)
            fail_msg("layer put: %s", err.msg);
    }
    struct capsa_store_image_put in = {.reference = ref,
                                       .manifest_digest = md,
                                       .config_digest = cfg,
                                       .layer_digests = layers,
                                       .n_layers = n};
    if (capsa_store_image_put(s, &in, &err) < 0)
        fail_msg("image put %s: %s", ref, err.msg);
}

/* The store queries prune relies on, against a real SQLite database: who uses images, the
 * row gc (a manifest pinned only by a sandbox's config survives), the live digest sets. */
static void test_store_queries(void **state)
{
    char home[] = "/tmp/capsa-prune-XXXXXX";
    struct capsa_store *s = NULL;
    struct capsa_store_image_user *u = NULL;
    _cleanup_strv_ char **blobs = NULL;
    _cleanup_strv_ char **mans = NULL;
    size_t nu = 0, nm = 0, nl = 0;
    capsa_err err = {0};
    const char *const l12[] = {L1, L2}, *const l13[] = {L1, L3}, *const l3[] = {L3};
    (void)state;

    assert_non_null(mkdtemp(home));
    setenv("CAPSA_HOME", home, 1);
    assert_int_equal(capsa_store_open(NULL, &s, &err), 0);
    put_image(s, REG "a:latest", D1, C1, l12, 2);
    put_image(s, REG "b:latest", D2, C2, l13, 2);
    put_image(s, REG "c@" D3, D3, C3, l3, 1);
    /* an orphan pending layer, as a failed pull could leave */
    struct capsa_store_layer orphan = {.digest = "sha256:" H3, .state = CAPSA_LAYER_PENDING};
    assert_int_equal(capsa_store_layer_put(s, &orphan, &err), 0);

    struct capsa_store_sandbox_new sb = {.name = "sb1",
                                         .config_json = "{\"image\":{\"Oci\":{\"reference\":\"" REG
                                                        "b@" D2 "\"}}}",
                                         .image_ref = REG "b:latest"};
    assert_int_equal(capsa_store_sandbox_insert(s, &sb, NULL, &err), 0);
    struct capsa_store_sandbox_new bind = {.name = "sb0",
                                           .config_json = "{\"image\":{\"Bind\":\"/\"}}"};
    assert_int_equal(capsa_store_sandbox_insert(s, &bind, NULL, &err), 0);
    struct capsa_store_snapshot sn = {.name = "snap1",
                                      .digest = "sha256:" H2,
                                      .path = "/tmp/snap1",
                                      .image_ref = REG "a:latest",
                                      .image_manifest_digest = D1};
    assert_int_equal(capsa_store_snapshot_insert(s, &sn, NULL, &err), 0);

    assert_int_equal(capsa_store_image_user_list(s, &u, &nu, &err), 0);
    assert_int_equal(nu, 2); /* the Bind sandbox uses no image */
    assert_false(u[0].snapshot);
    assert_string_equal(u[0].name, "sb1");
    assert_string_equal(u[0].image_ref, REG "b:latest");
    assert_string_equal(u[0].pinned_ref, REG "b@" D2);
    assert_null(u[0].manifest_digest);
    assert_true(u[1].snapshot);
    assert_string_equal(u[1].name, "snap1");
    assert_string_equal(u[1].manifest_digest, D1);
    capsa_store_image_users_free(u, nu);

    /* drop every reference; gc keeps D1 (snapshot) and D2 (sandbox config) */
    assert_int_equal(capsa_store_image_delete(s, REG "a:latest", &err), 0);
    assert_int_equal(capsa_store_image_delete(s, REG "c@" D3, &err), 0);
    assert_int_equal(capsa_store_image_gc(s, &nm, &nl, &err), 0);
    assert_int_equal(nm, 0); /* D3 already went with its last reference */
    assert_int_equal(nl, 1); /* the orphan; L3 is still listed by D2 */
    assert_int_equal(capsa_store_image_live_digests(s, &blobs, &mans, &err), 0);
    assert_int_equal(strv_len(mans), 2);
    assert_true(strv_has(mans, D1) && strv_has(mans, D2) && !strv_has(mans, D3));
    assert_int_equal(strv_len(blobs), 7);
    assert_true(strv_has(blobs, D1) && strv_has(blobs, C1) && strv_has(blobs, C2) &&
                strv_has(blobs, L1) && strv_has(blobs, L2) && strv_has(blobs, L3));
    assert_false(strv_has(blobs, C3) || strv_has(blobs, "sha256:" H3));
    for (size_t i = 1; blobs[i]; i++)
        assert_true(strcmp(blobs[i - 1], blobs[i]) < 0); /* sorted, unique */

    /* B's reference row vanishes without the usual manifest gc (as a crash could leave it):
     * the sandbox's pinned digest alone keeps D2's rows */
    capsa_strvfreep(&blobs);
    capsa_strvfreep(&mans);
    assert_int_equal(sqlite3_exec(capsa_store_handle(s),
                                  "DELETE FROM images WHERE reference = '" REG "b:latest'", NULL,
                                  NULL, NULL),
                     SQLITE_OK);
    assert_int_equal(capsa_store_image_gc(s, &nm, &nl, &err), 0);
    assert_int_equal(nm, 0);
    assert_int_equal(capsa_store_image_live_digests(s, &blobs, &mans, &err), 0);
    assert_true(strv_has(mans, D2) && strv_has(blobs, L3));
    capsa_strvfreep(&blobs);
    capsa_strvfreep(&mans);
    assert_int_equal(capsa_store_sandbox_delete(s, "sb1", CAPSA_SB_ANY, &err), 0);
    assert_int_equal(capsa_store_snapshot_delete(s, "snap1", &err), 0);
    assert_int_equal(capsa_store_image_gc(s, &nm, &nl, &err), 0);
    assert_int_equal(nm, 1); /* D2; D1 went with the snapshot */
    assert_int_equal(nl, 3);
    assert_int_equal(capsa_store_image_live_digests(s, &blobs, &mans, &err), 0);
    assert_int_equal(strv_len(blobs), 0);
    assert_int_equal(strv_len(mans), 0);
    capsa_store_close(s);
    assert_int_equal(capsa_rm_rf(home, &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_parse),     cmocka_unit_test(test_key_parse_bad),
        cmocka_unit_test(test_key_select),    cmocka_unit_test(test_pinned_and_uses),
        cmocka_unit_test(test_prune_select),  cmocka_unit_test(test_classify),
        cmocka_unit_test(test_store_queries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
