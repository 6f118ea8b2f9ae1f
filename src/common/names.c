/* names.c - the sandbox/volume/snapshot name rule shared by the spec validator and the store. */
#include <string.h>

#include "names.h"

static int name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

const char *capsa_name_problem(const char *name, size_t *at)
{
    size_t n = strlen(name), i;

    if (at)
        *at = n;
    if (!n)
        return "must not be empty";
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (name_char(c) || (i > 0 && (c == '.' || c == '_' || c == '-')))
            continue;
        if (at)
            *at = i;
        return i == 0 ? "must start with an ASCII letter or digit and contain only letters, "
                        "digits, '.', '_' and '-'"
                      : "must contain only ASCII letters, digits, '.', '_' and '-'";
    }
    if (n > CAPSA_NAME_MAX)
        return "must be at most 128 bytes long";
    return NULL;
}
