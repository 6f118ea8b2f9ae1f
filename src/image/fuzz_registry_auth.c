/* fuzz_registry_auth.c - libFuzzer target for WWW-Authenticate challenge parsing (a registry's
 * 401 header is untrusted). Invariants (abort on violation): parsing never crashes or reads
 * past the value; on success the scheme and every wanted value are NUL-terminated within their
 * buffers, values hold no byte the input lacks, and the three-key wrapper agrees with the
 * general parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image/registry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_str(const char *s, size_t cap, size_t input_len)
{
    size_t n = strnlen(s, cap);
    if (n >= cap || n > input_len)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[] = {"realm", "service", "scope", "error"};
    char scheme[32], realm[64], service[16], scope[256], error[8];
    char *const vals[] = {realm, service, scope, error};
    const size_t lens[] = {sizeof(realm), sizeof(service), sizeof(scope), sizeof(error)};
    char s2[32], r2[64], sv2[16], sc2[256];
    char *value;
    int rc, rc2;

    if (size > 8192)
        return 0;
    value = malloc(size + 1); /* exact size: ASan catches any read past the NUL */
    if (!value)
        return 0;
    memcpy(value, data, size);
    value[size] = '\0';
    rc = capsa_registry_challenge_params(value, scheme, sizeof(scheme), keys, vals, lens, 4);
    if (rc != 0 && rc != -1)
        abort();
    if (rc == 0) {
        check_str(scheme, sizeof(scheme), size);
        for (size_t i = 0; i < 4; i++)
            check_str(vals[i], lens[i], size);
        if (!scheme[0])
            abort();
    }
    rc2 = capsa_registry_parse_challenge(value, s2, sizeof(s2), r2, sizeof(r2), sv2, sizeof(sv2),
                                         sc2, sizeof(sc2));
    /* The wrapper wants fewer keys, so it may succeed where an "error" value did not fit. */
    if (rc == 0 && (rc2 != 0 || strcmp(scheme, s2) || strcmp(realm, r2) || strcmp(service, sv2) ||
                    strcmp(scope, sc2)))
        abort();
    free(value);
    return 0;
}
