/* version.c - library version. */
#include "capsa.h"

const char *capsa_version(void)
{
    return CAPSA_VERSION;
}
