/* names.h - the one rule for sandbox, volume and snapshot names (docs/spec.md): 1 to 128
 * bytes of ASCII letters, digits, '.', '_' and '-', starting with a letter or digit. The spec
 * validator and the store both check it through here. */
#ifndef CAPSA_COMMON_NAMES_H
#define CAPSA_COMMON_NAMES_H

#include <stddef.h>

#define CAPSA_NAME_MAX 128

/* NULL when NAME is acceptable, else what is wrong ("must ..."); *at (may be NULL) gets the
 * byte offset of the offending character, or the length when the name is too long/empty. */
const char *capsa_name_problem(const char *name, size_t *at);

#endif
