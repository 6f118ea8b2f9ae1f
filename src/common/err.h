/* err.h - error objects: set, prefix with context, clear. */
#ifndef CAPSA_COMMON_ERR_H
#define CAPSA_COMMON_ERR_H

#include "capsa.h"

/* Fill err (if non-NULL) with code and a formatted message; returns -1 so
 * callers can write `return capsa_err_set(err, errno, "open %s", p);`. */
int capsa_err_set(capsa_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepend "CONTEXT: " to the message already in err; returns -1. */
int capsa_err_prefix(capsa_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void capsa_err_clear(capsa_err *err);

#endif
