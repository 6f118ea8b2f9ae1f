/* test_registry_auth.c - WWW-Authenticate challenge parsing (Basic/Bearer, RFC 7235 forms). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image/registry.h"

struct ch {
    char scheme[32], realm[256], service[128], scope[256], error[64];
};

/* Parse with the four keys the client uses; returns the parser's result. */
static int parse4(const char *value, struct ch *c)
{
    static const char *const keys[] = {"realm", "service", "scope", "error"};
    char *const vals[] = {c->realm, c->service, c->scope, c->error};
    const size_t lens[] = {sizeof(c->realm), sizeof(c->service), sizeof(c->scope),
                           sizeof(c->error)};

    memset(c, 'X', sizeof(*c)); /* stale content must not survive */
    c->scheme[sizeof(c->scheme) - 1] = '\0';
    return capsa_registry_challenge_params(value, c->scheme, sizeof(c->scheme), keys, vals, lens,
                                           4);
}

static void expect(const char *value, const char *scheme, const char *realm, const char *service,
                   const char *scope, const char *error)
{
    struct ch c;

    if (parse4(value, &c) != 0)
        fail_msg("parse failed: %s", value);
    assert_string_equal(c.scheme, scheme);
    assert_string_equal(c.realm, realm);
    assert_string_equal(c.service, service);
    assert_string_equal(c.scope, scope);
    assert_string_equal(c.error, error);
}

static void expect_bad(const char *value)
{
    struct ch c;

    if (parse4(value, &c) != -1)
        fail_msg("accepted: '%s'", value);
}

static void test_distribution(void **state)
{
    (void)state;
    /* What distribution 2.8's token access controller sends (challengeParams). */
    expect("Bearer realm=\"http://127.0.0.1:5001/token\",service=\"capsa-test-registry\","
           "scope=\"repository:test/busybox:pull\"",
           "Bearer", "http://127.0.0.1:5001/token", "capsa-test-registry",
           "repository:test/busybox:pull", "");
    expect("Bearer realm=\"https://auth.example/token\",service=\"reg\","
           "scope=\"repository:a/b:pull\",error=\"insufficient_scope\"",
           "Bearer", "https://auth.example/token", "reg", "repository:a/b:pull",
           "insufficient_scope");
    expect("Bearer realm=\"https://auth.example/token\",service=\"reg\",error=\"invalid_token\"",
           "Bearer", "https://auth.example/token", "reg", "", "invalid_token");
    /* Several scopes in one value (a cross-repository mount), kept whole. */
    expect("Bearer realm=\"r\",scope=\"repository:a:pull repository:b:pull,push\"", "Bearer", "r",
           "", "repository:a:pull repository:b:pull,push", "");
    /* The /v2/ ping has no scope. */
    expect("Bearer realm=\"https://auth.docker.io/token\",service=\"registry.docker.io\"", "Bearer",
           "https://auth.docker.io/token", "registry.docker.io", "", "");
    /* htpasswd. */
    expect("Basic realm=\"capsa-test\"", "Basic", "capsa-test", "", "", "");
}

static void test_syntax_variants(void **state)
{
    (void)state;
    /* Scheme and parameter names are case-insensitive; values keep their case. */
    expect("bearer REALM=\"R\",Service=\"S\",sCoPe=\"Repo\"", "bearer", "R", "S", "Repo", "");
    /* Whitespace around '=' and ',' (BWS/OWS), and tabs. */
    expect("Bearer  realm = \"r\" ,\tservice=\"s\" , scope= \"x\"", "Bearer", "r", "s", "x", "");
    /* Unquoted token values. */
    expect("Bearer realm=https://auth.example/token,service=reg.example,scope=repository:a:pull",
           "Bearer", "https://auth.example/token", "reg.example", "repository:a:pull", "");
    /* Quoted-pair escapes, and ',' and '=' inside quotes. */
    expect("Basic realm=\"a \\\"quoted\\\" \\\\ realm, with=signs\"", "Basic",
           "a \"quoted\" \\ realm, with=signs", "", "", "");
    /* Empty list elements and a trailing comma. */
    expect("Bearer ,realm=\"r\",, service=\"s\",", "Bearer", "r", "s", "", "");
    /* Unknown parameters are skipped, however long their names and values. */
    expect("Bearer charset=\"UTF-8\",a_very_long_parameter_name_that_is_not_known_to_anyone=\""
           "0123456789012345678901234567890123456789012345678901234567890123456789012345678901"
           "23456789012345678901234567890123456789012345678901234567890123456789012345678901234"
           "5678901234567890123456789012345678901234567890123456789012345678901234567890123456"
           "\",realm=\"r\"",
           "Bearer", "r", "", "", "");
    /* Empty values. */
    expect("Bearer realm=\"\",service=", "Bearer", "", "", "", "");
    /* A parameter given twice: the last one wins. */
    expect("Bearer realm=\"a\",realm=\"b\"", "Bearer", "b", "", "", "");
    /* A scheme alone, and a token68. */
    expect("Basic", "Basic", "", "", "", "");
    expect("  Negotiate abc+/def==", "Negotiate", "", "", "", "");
    expect("Bearer abc", "Bearer", "", "", "", "");
}

static void test_several_challenges(void **state)
{
    (void)state;
    /* One header may list several challenges: the first one is used. */
    expect("Bearer realm=\"https://a/token\",service=\"s\", Basic realm=\"b\"", "Bearer",
           "https://a/token", "s", "", "");
    expect("Basic realm=\"b\", Bearer realm=\"https://a/token\",service=\"s\"", "Basic", "b", "",
           "", "");
    expect("Negotiate abc==, Bearer realm=\"r\"", "Negotiate", "", "", "", "");
}

static void test_malformed(void **state)
{
    (void)state;
    expect_bad("");
    expect_bad("   ");
    expect_bad("=\"x\"");
    expect_bad(",Bearer realm=\"r\"");
    expect_bad("Bearer realm=\"unterminated");
    expect_bad("Bearer realm=\"a\\");
    expect_bad("Bearer realm=\"a\" junk");
    expect_bad("Bearer realm=\"a\"service=\"b\"");
    expect_bad("Bearer \"quoted\"");
    expect_bad("Bearer realm=\"r\",=\"x\"");
    expect_bad("Bearer\"realm\"");
    /* A scheme that does not fit. */
    expect_bad("Averyveryveryveryveryverylongschemename realm=\"r\"");
}

static void test_bounds(void **state)
{
    static const char *const keys[] = {"realm"};
    char scheme[8], realm[8];
    char *const vals[] = {realm};
    const size_t lens[] = {sizeof(realm)};
    char big[6000];
    char bigrealm[4096], service[16], scope[16];
    (void)state;

    /* A wanted value fills its buffer exactly, or the value is refused. */
    assert_int_equal(capsa_registry_challenge_params("Bearer realm=\"1234567\"", scheme,
                                                     sizeof(scheme), keys, vals, lens, 1),
                     0);
    assert_string_equal(realm, "1234567");
    assert_int_equal(capsa_registry_challenge_params("Bearer realm=\"12345678\"", scheme,
                                                     sizeof(scheme), keys, vals, lens, 1),
                     -1);
    assert_int_equal(capsa_registry_challenge_params("Bearer realm=12345678", scheme,
                                                     sizeof(scheme), keys, vals, lens, 1),
                     -1);
    /* Values nobody asked for may be any size. */
    assert_int_equal(capsa_registry_challenge_params("Bearer service=\"123456789012345\",realm=r",
                                                     scheme, sizeof(scheme), keys, vals, lens, 1),
                     0);
    assert_string_equal(realm, "r");
    /* The scheme needs its NUL too: 7 characters fit in 8 bytes, 8 do not. */
    assert_int_equal(capsa_registry_challenge_params("Bearer7 realm=r", scheme, sizeof(scheme),
                                                     keys, vals, lens, 1),
                     0);
    assert_string_equal(scheme, "Bearer7");
    assert_int_equal(capsa_registry_challenge_params("Bearer78 realm=r", scheme, sizeof(scheme),
                                                     keys, vals, lens, 1),
                     -1);

    /* The three-key wrapper with a long realm (the header capture keeps 4 KiB). */
    memcpy(big, "Bearer realm=\"", 14);
    memset(big + 14, 'a', 4000);
    snprintf(big + 14 + 4000, sizeof(big) - 14 - 4000, "\",service=\"s\",scope=\"p\"");
    assert_int_equal(capsa_registry_parse_challenge(big, scheme, sizeof(scheme), bigrealm,
                                                    sizeof(bigrealm), service, sizeof(service),
                                                    scope, sizeof(scope)),
                     0);
    assert_int_equal(strlen(bigrealm), 4000);
    assert_string_equal(service, "s");
    assert_string_equal(scope, "p");
    /* Too long for the caller's buffer: refused, not truncated. */
    assert_int_equal(capsa_registry_parse_challenge(big, scheme, sizeof(scheme), bigrealm, 100,
                                                    service, sizeof(service), scope, sizeof(scope)),
                     -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_distribution),
        cmocka_unit_test(test_syntax_variants),
        cmocka_unit_test(test_several_challenges),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
