/* units.h - parsing of the CLI's size and duration strings (reference §1.1). */
#ifndef CAPSA_COMMON_UNITS_H
#define CAPSA_COMMON_UNITS_H

#include <stdint.h>

#include "capsa.h"

/* "512M", "1G", "1.5G", "64K"? no: sizes are MiB-granular; a bare number means MiB.
 * Accepts K/M/G/T (with optional "iB"/"B"), result rounded up to whole MiB. */
int capsa_parse_size_mib(const char *s, uint64_t *mib, capsa_err *err);

/* "500ms", "30s", "5m", "1h", "2d"; a bare number means seconds. */
int capsa_parse_duration_ms(const char *s, uint64_t *ms, capsa_err *err);

#endif
