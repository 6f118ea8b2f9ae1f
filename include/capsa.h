/* capsa.h - public API of libcapsa, the local microVM sandbox runtime.
 *
 * Every fallible function returns a negative value on failure and fills the
 * caller's capsa_err (which may be NULL) with an errno-style code and a
 * message that says what failed and where.
 */
#ifndef CAPSA_H
#define CAPSA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CAPSA_VERSION "0.1.0"

/* Error object: code is a positive errno value (or 0 when not errno-based),
 * msg a human sentence, with context prefixes added by callers
 * ("spec: mounts[2].guest: must be an absolute path"). */
typedef struct capsa_err {
    int code;
    char msg[1024];
} capsa_err;

const char *capsa_version(void);

#ifdef __cplusplus
}
#endif

#endif
