/* fuzz_spec.c - libFuzzer target for the spec module: check, serialize, re-check, compare.
 *
 * Input: an optional first line naming the type ("VolumeSpec\n"), then JSON text. Without a
 * known type name the whole input is checked as a SandboxSpec. Invariants (abort on
 * violation): a document that checks cleanly serializes to JSON that parses, checks cleanly
 * again and serializes to the identical bytes (normalization is idempotent); a valid
 * SandboxSpec always yields the typed view.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "spec/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *a, const char *b)
{
    fprintf(stderr, "fuzz_spec: %s\n--- first\n%s\n--- second\n%s\n", what, a ? a : "(null)",
            b ? b : "(null)");
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char type[64] = "SandboxSpec";
    const char *text = (const char *)data;
    const uint8_t *nl = memchr(data, '\n', size < sizeof(type) ? size : sizeof(type));
    capsa_spec_errors errs = {0};
    json_t *doc = NULL, *norm = NULL, *doc2 = NULL, *norm2 = NULL;
    char *s1 = NULL, *s2 = NULL, *pretty = NULL;

    if (nl) {
        size_t n = (size_t)(nl - data);
        memcpy(type, data, n);
        type[n] = '\0';
        if (capsa_spec_type_known(type)) {
            text += n + 1;
            size -= n + 1;
        } else {
            strcpy(type, "SandboxSpec");
        }
    }
    if (capsa_spec_parse(text, size, &doc, &errs) < 0)
        goto out;
    if (capsa_spec_check(type, doc, &norm, &errs) < 0) {
        if (capsa_spec_errors_total(&errs) == 0)
            fail("check failed without an error", type, text);
        goto out;
    }
    s1 = capsa_spec_dump(norm, false);
    pretty = capsa_spec_dump(norm, true);
    if (!s1 || !pretty)
        goto out;
    if (capsa_spec_parse(pretty, strlen(pretty), &doc2, &errs) < 0)
        fail("normalized output does not parse", pretty, errs.count ? errs.items[0] : NULL);
    if (capsa_spec_check(type, doc2, &norm2, &errs) < 0)
        fail("normalized output does not check", pretty, errs.count ? errs.items[0] : NULL);
    s2 = capsa_spec_dump(norm2, false);
    if (!s2 || strcmp(s1, s2))
        fail("normalization is not idempotent", s1, s2);
    if (!strcmp(type, "SandboxSpec")) {
        struct capsa_sandbox_spec *sp = NULL;
        if (capsa_sandbox_spec_load(doc, &sp, &errs) < 0)
            fail("valid SandboxSpec has no typed view", s1, errs.count ? errs.items[0] : NULL);
        if (!sp->name || sp->cpus < 1 || sp->memory_mib < 64)
            fail("typed view is incomplete", s1, NULL);
        capsa_sandbox_spec_free(sp);
    }
out:
    free(s1);
    free(s2);
    free(pretty);
    json_decref(doc);
    json_decref(doc2);
    json_decref(norm);
    json_decref(norm2);
    capsa_spec_errors_free(&errs);
    return 0;
}
