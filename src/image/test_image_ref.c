/* test_image_ref.c - image reference parsing, manifest/index/config parsing (good and bad),
 * WWW-Authenticate challenge parsing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/manifest.h"
#include "image/ref.h"
#include "image/registry.h"

#define D1 "sha256:1111111111111111111111111111111111111111111111111111111111111111"
#define D2 "sha256:2222222222222222222222222222222222222222222222222222222222222222"
#define D3 "sha256:3333333333333333333333333333333333333333333333333333333333333333"

static void check_ref(const char *in, const char *registry, const char *repo, const char *tag,
                      const char *digest, const char *canonical)
{
    struct capsa_image_ref r;
    capsa_err err = {0};
    char buf[CAPSA_REF_MAX];

    if (capsa_image_ref_parse(in, &r, &err) < 0)
        fail_msg("parse %s: %s", in, err.msg);
    assert_string_equal(r.registry, registry);
    assert_string_equal(r.repository, repo);
    assert_string_equal(r.tag, tag);
    assert_string_equal(r.digest, digest);
    capsa_image_ref_format(&r, buf, sizeof(buf));
    assert_string_equal(buf, canonical);
}

static void test_ref_good(void **state)
{
    (void)state;
    check_ref("busybox", "docker.io", "library/busybox", "latest", "",
              "docker.io/library/busybox:latest");
    check_ref("busybox:1.36", "docker.io", "library/busybox", "1.36", "",
              "docker.io/library/busybox:1.36");
    check_ref("user/app", "docker.io", "user/app", "latest", "", "docker.io/user/app:latest");
    check_ref("docker.io/busybox", "docker.io", "library/busybox", "latest", "",
              "docker.io/library/busybox:latest");
    check_ref("index.docker.io/library/alpine:3", "docker.io", "library/alpine", "3", "",
              "docker.io/library/alpine:3");
    check_ref("127.0.0.1:5000/test/busybox:v1", "127.0.0.1:5000", "test/busybox", "v1", "",
              "127.0.0.1:5000/test/busybox:v1");
    check_ref("localhost/img", "localhost", "img", "latest", "", "localhost/img:latest");
    check_ref("ghcr.io/a/b/c@" D1, "ghcr.io", "a/b/c", "", D1, "ghcr.io/a/b/c@" D1);
    check_ref("quay.io/x:tag@" D2, "quay.io", "x", "tag", D2, "quay.io/x:tag@" D2);
    check_ref("a__b-c/e.f", "docker.io", "a__b-c/e.f", "latest", "", "docker.io/a__b-c/e.f:latest");
    check_ref("[::1]:5000/x", "[::1]:5000", "x", "latest", "", "[::1]:5000/x:latest");
}

static void check_bad(const char *in, const char *needle)
{
    struct capsa_image_ref r;
    capsa_err err = {0};

    if (capsa_image_ref_parse(in, &r, &err) == 0)
        fail_msg("'%s' parsed but should not", in);
    assert_int_equal(err.code, EINVAL);
    if (!strstr(err.msg, needle))
        fail_msg("'%s': message '%s' lacks '%s'", in, err.msg, needle);
}

static void test_ref_bad(void **state)
{
    char big[600];
    (void)state;
    check_bad("", "empty");
    check_bad("Busybox", "lowercase");
    check_bad("busybox:", "tag");
    check_bad("busybox:-x", "tag");
    check_bad("busybox@sha256:abc", "digest");
    check_bad("busybox@md5:"
              "0123456789abcdef0123456789abcdef",
              "digest");
    check_bad("a//b", "component");
    check_bad("a/b/", "component");
    check_bad("-a", "component");
    check_bad("a..b", "component");
    check_bad("bad host:5000/x", "space");
    check_bad("host:99999999/x", "registry");
    check_bad("127.0.0.1:5000/", "repository");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    check_bad(big, "longer");
    assert_true(capsa_digest_valid(D1));
    assert_false(capsa_digest_valid(
        "sha256:ABCDEF1111111111111111111111111111111111111111111111111111111111"));
    assert_false(capsa_digest_valid(D1 "0"));
}

static const char oci_manifest[] =
    "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\","
    "\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"" D1
    "\",\"size\":123},"
    "\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"" D2
    "\",\"size\":1000},"
    "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+zstd\",\"digest\":\"" D3
    "\",\"size\":5},"
    "{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"" D3 "\",\"size\":0}]}";

static void test_manifest_good(void **state)
{
    struct capsa_manifest m;
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_manifest_parse(oci_manifest, strlen(oci_manifest), NULL, &m, &err), 0);
    assert_int_equal(m.kind, CAPSA_MANIFEST_IMAGE);
    assert_string_equal(m.config.digest, D1);
    assert_int_equal(m.config.size, 123);
    assert_int_equal(m.n_layers, 3);
    assert_int_equal(m.layers[0].compression, CAPSA_LAYER_GZIP);
    assert_int_equal(m.layers[1].compression, CAPSA_LAYER_ZSTD);
    assert_int_equal(m.layers[2].compression, CAPSA_LAYER_TAR);
    assert_int_equal(m.layers[0].size, 1000);
    capsa_manifest_clear(&m);

    /* Docker schema 2 without mediaType in the body: the Content-Type decides. */
    const char docker[] =
        "{\"schemaVersion\":2,"
        "\"config\":{\"mediaType\":\"application/vnd.docker.container.image.v1+json\","
        "\"digest\":\"" D1 "\",\"size\":10},"
        "\"layers\":[{\"mediaType\":\"application/vnd.docker.image.rootfs.diff.tar.gzip\","
        "\"digest\":\"" D2 "\",\"size\":7}]}";
    assert_int_equal(capsa_manifest_parse(docker, strlen(docker),
                                          "application/vnd.docker.distribution.manifest.v2+json; "
                                          "charset=utf-8",
                                          &m, &err),
                     0);
    assert_string_equal(m.media_type, CAPSA_MT_DOCKER_MANIFEST);
    assert_int_equal(m.layers[0].compression, CAPSA_LAYER_GZIP);
    capsa_manifest_clear(&m);
}

static void test_index_select(void **state)
{
    const char idx[] =
        "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\","
        "\"manifests\":["
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D1
        "\",\"size\":1,\"platform\":{\"os\":\"linux\",\"architecture\":\"arm64\",\"variant\":"
        "\"v8\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D2
        "\",\"size\":2,\"platform\":{\"os\":\"linux\",\"architecture\":\"amd64\"}},"
        "{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"" D3
        "\",\"size\":3,\"platform\":{\"os\":\"windows\",\"architecture\":\"amd64\"}}]}";
    struct capsa_manifest m;
    const struct capsa_descriptor *d;
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_manifest_parse(idx, strlen(idx), NULL, &m, &err), 0);
    assert_int_equal(m.kind, CAPSA_MANIFEST_INDEX);
    assert_int_equal(m.n_manifests, 3);
    assert_int_equal(capsa_manifest_select(&m, "linux", "amd64", NULL, &d, &err), 0);
    assert_string_equal(d->digest, D2);
    assert_int_equal(capsa_manifest_select(&m, "linux", "arm64", "v8", &d, &err), 0);
    assert_string_equal(d->digest, D1);
    assert_int_equal(capsa_manifest_select(&m, "linux", "s390x", NULL, &d, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.msg, "linux/arm64/v8"));
    capsa_manifest_clear(&m);
}

static void check_manifest_bad(const char *body, const char *needle)
{
    struct capsa_manifest m;
    capsa_err err = {0};

    if (capsa_manifest_parse(body, strlen(body), NULL, &m, &err) == 0)
        fail_msg("parsed but should not: %s", body);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
}

static void test_manifest_bad(void **state)
{
    (void)state;
    check_manifest_bad("", "invalid JSON");
    check_manifest_bad("[1]", "object");
    check_manifest_bad("{\"schemaVersion\":1}", "schema 1");
    check_manifest_bad("{\"schemaVersion\":2,\"schemaVersion\":2}", "invalid JSON");
    check_manifest_bad("{\"schemaVersion\":2,\"mediaType\":\"text/plain\"}", "not a supported");
    check_manifest_bad("{\"schemaVersion\":2,\"mediaType\":\"" CAPSA_MT_OCI_MANIFEST
                       "\",\"layers\":[]}",
                       "manifest.config: expected an object");
    check_manifest_bad("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" CAPSA_MT_OCI_CONFIG
                       "\",\"digest\":\"sha256:xyz\",\"size\":1},\"layers\":[]}",
                       "manifest.config.digest");
    check_manifest_bad("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" CAPSA_MT_OCI_CONFIG
                       "\",\"digest\":\"" D1 "\",\"size\":-1},\"layers\":[]}",
                       "manifest.config.size");
    check_manifest_bad("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"application/x-helm\","
                       "\"digest\":\"" D1 "\",\"size\":1},\"layers\":[]}",
                       "not a container image config");
    check_manifest_bad("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" CAPSA_MT_OCI_CONFIG
                       "\",\"digest\":\"" D1 "\",\"size\":1},\"layers\":[{\"mediaType\":"
                       "\"application/x-foo\",\"digest\":\"" D2 "\",\"size\":1}]}",
                       "manifest.layers[0].mediaType");
    check_manifest_bad("{\"schemaVersion\":2,\"config\":{\"mediaType\":\"" CAPSA_MT_OCI_CONFIG
                       "\",\"digest\":\"" D1 "\",\"size\":100000000},\"layers\":[]}",
                       "cap");
    check_manifest_bad("{\"schemaVersion\":2,\"manifests\":{}}", "index.manifests");
    check_manifest_bad("{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"x\",\"digest\":\"" D1
                       "\",\"size\":1,\"platform\":7}]}",
                       "platform");
    /* Over the size cap. */
    size_t big = CAPSA_MANIFEST_MAX + 1;
    char *b = malloc(big + 1);
    assert_non_null(b);
    memset(b, ' ', big);
    b[big] = '\0';
    struct capsa_manifest m;
    capsa_err err = {0};
    assert_int_equal(capsa_manifest_parse(b, big, NULL, &m, &err), -1);
    assert_int_equal(err.code, EFBIG);
    free(b);
    /* Too many layers. */
    char *many = malloc(200000);
    size_t o = (size_t)sprintf(many,
                               "{\"schemaVersion\":2,\"config\":{\"mediaType\":\"%s\","
                               "\"digest\":\"%s\",\"size\":1},\"layers\":[",
                               CAPSA_MT_OCI_CONFIG, D1);
    for (int i = 0; i <= CAPSA_LAYERS_MAX; i++)
        o += (size_t)sprintf(many + o, "%s{\"mediaType\":\"%s\",\"digest\":\"%s\",\"size\":1}",
                             i ? "," : "", "application/vnd.oci.image.layer.v1.tar", D2);
    sprintf(many + o, "]}");
    check_manifest_bad(many, "exceeds the cap");
    free(many);
}

static void test_config(void **state)
{
    const char good[] =
        "{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\"],"
        "\"Entrypoint\":null,\"Cmd\":[\"sh\"],\"WorkingDir\":\"/w\",\"User\":\"1000\","
        "\"Labels\":{\"a\":\"b\"},\"StopSignal\":\"SIGTERM\",\"Hostname\":\"ignored\"},"
        "\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"" D1 "\",\"" D2 "\"]},\"history\":[]}";
    struct capsa_image_config c;
    capsa_err err = {0};
    (void)state;

    assert_int_equal(capsa_image_config_parse(good, strlen(good), &c, &err), 0);
    assert_int_equal(c.n_diff_ids, 2);
    assert_string_equal(c.diff_ids[1], D2);
    assert_string_equal(c.os, "linux");
    assert_string_equal(json_string_value(json_object_get(c.runtime, "WorkingDir")), "/w");
    assert_null(json_object_get(c.runtime, "Hostname"));
    assert_null(json_object_get(c.runtime, "Entrypoint"));
    assert_int_equal(json_array_size(json_object_get(c.runtime, "Cmd")), 1);
    capsa_image_config_clear(&c);

    static const char *const bad[][2] = {
        {"{\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"x\"]}}", "diff_ids[0]"},
        {"{\"rootfs\":{\"type\":\"other\",\"diff_ids\":[]}}", "rootfs.type"},
        {"{}", "rootfs"},
        {"{\"config\":{\"Env\":\"PATH=/\"},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
         "config.Env"},
        {"{\"config\":{\"Labels\":{\"a\":1}},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
         "config.Labels"},
        {"{\"config\":{\"User\":5},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[]}}",
         "config.User"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&err, 0, sizeof(err));
        if (capsa_image_config_parse(bad[i][0], strlen(bad[i][0]), &c, &err) == 0)
            fail_msg("config parsed but should not: %s", bad[i][0]);
        if (!strstr(err.msg, bad[i][1]))
            fail_msg("message '%s' lacks '%s'", err.msg, bad[i][1]);
    }
}

static void test_challenge(void **state)
{
    char scheme[32], realm[256], service[128], scope[128];
    (void)state;

    assert_int_equal(capsa_registry_parse_challenge(
                         "Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker."
                         "io\",scope=\"repository:library/busybox:pull\"",
                         scheme, sizeof(scheme), realm, sizeof(realm), service, sizeof(service),
                         scope, sizeof(scope)),
                     0);
    assert_string_equal(scheme, "Bearer");
    assert_string_equal(realm, "https://auth.docker.io/token");
    assert_string_equal(service, "registry.docker.io");
    assert_string_equal(scope, "repository:library/busybox:pull");
    assert_int_equal(capsa_registry_parse_challenge("Basic realm=\"Registry \\\"x\\\"\"", scheme,
                                                    sizeof(scheme), realm, sizeof(realm), service,
                                                    sizeof(service), scope, sizeof(scope)),
                     0);
    assert_string_equal(scheme, "Basic");
    assert_string_equal(realm, "Registry \"x\"");
    assert_int_equal(capsa_registry_parse_challenge("Bearer realm=\"unterminated", scheme,
                                                    sizeof(scheme), realm, sizeof(realm), service,
                                                    sizeof(service), scope, sizeof(scope)),
                     -1);
    assert_int_equal(capsa_registry_parse_challenge("", scheme, sizeof(scheme), realm,
                                                    sizeof(realm), service, sizeof(service), scope,
                                                    sizeof(scope)),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ref_good),      cmocka_unit_test(test_ref_bad),
        cmocka_unit_test(test_manifest_good), cmocka_unit_test(test_index_select),
        cmocka_unit_test(test_manifest_bad),  cmocka_unit_test(test_config),
        cmocka_unit_test(test_challenge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
