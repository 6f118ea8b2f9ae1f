/* sha256.h - SHA-256 (FIPS 180-4) for content addressing: streaming, one-shot, files, hex. */
#ifndef CAPSA_COMMON_SHA256_H
#define CAPSA_COMMON_SHA256_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsa.h"

#define CAPSA_SHA256_LEN 32
#define CAPSA_SHA256_HEX 65 /* 64 hex digits + NUL */

typedef struct capsa_sha256 {
    uint32_t h[8];
    uint64_t total; /* bytes hashed so far */
    uint8_t buf[64];
    size_t used; /* bytes pending in buf */
} capsa_sha256;

void capsa_sha256_init(capsa_sha256 *c);
void capsa_sha256_update(capsa_sha256 *c, const void *data, size_t len);
/* Writes the digest; c must be re-initialised before reuse. */
void capsa_sha256_final(capsa_sha256 *c, uint8_t out[CAPSA_SHA256_LEN]);

/* One-shot digest of a buffer. */
void capsa_sha256_buf(const void *data, size_t len, uint8_t out[CAPSA_SHA256_LEN]);

/* Digest of a whole file (read in chunks). */
int capsa_sha256_file(const char *path, uint8_t out[CAPSA_SHA256_LEN], capsa_err *err);

/* Lowercase hex of the first nbytes of digest into out (2*nbytes+1 bytes). */
void capsa_sha256_hex(const uint8_t *digest, size_t nbytes, char *out);

/* Tests: force the portable code (true) or go back to choosing by CPU (false). The default
 * uses the x86 SHA extensions when the CPU has them (env CAPSA_SHA256_PORTABLE=1 disables). */
void capsa_sha256_force_portable(bool on);

#endif
