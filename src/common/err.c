/* err.c - error objects carrying an errno code and a contextual message. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "err.h"

int capsa_err_set(capsa_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (!err)
        return -1;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return -1;
}

int capsa_err_prefix(capsa_err *err, const char *fmt, ...)
{
    char prefix[512], old[sizeof(err->msg)];
    va_list ap;

    if (!err)
        return -1;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof(prefix), fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof(old));
    snprintf(err->msg, sizeof(err->msg), "%s: %s", prefix, old);
    return -1;
}

void capsa_err_clear(capsa_err *err)
{
    if (!err)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}
