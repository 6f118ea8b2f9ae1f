/* units.c - size and duration strings: "1.5G", "512M", "30s", "5m". */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/err.h"
#include "common/units.h"

/* Parse a non-negative decimal number with an optional fraction; *end gets the rest. */
static int parse_number(const char *s, double *v, const char **end)
{
    const char *p = s;
    double val = 0, scale = 1;
    int digits = 0;

    while (*p >= '0' && *p <= '9') {
        val = val * 10 + (*p++ - '0');
        digits++;
    }
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9') {
            scale /= 10;
            val += (*p++ - '0') * scale;
            digits++;
        }
    }
    if (!digits || val > 1e15)
        return -1;
    *v = val;
    *end = p;
    return 0;
}

int capsa_parse_size_mib(const char *s, uint64_t *mib, capsa_err *err)
{
    static const struct {
        const char *suffix;
        double mib;
    } units[] = {
        {"", 1},     {"k", 1.0 / 1024}, {"kb", 1.0 / 1024}, {"kib", 1.0 / 1024},
        {"m", 1},    {"mb", 1},         {"mib", 1},         {"g", 1024},
        {"gb", 1024}, {"gib", 1024},    {"t", 1048576},     {"tb", 1048576},
        {"tib", 1048576},
    };
    const char *rest;
    double v;

    if (!s || parse_number(s, &v, &rest) < 0)
        goto bad;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(rest, units[i].suffix) == 0) {
            double r = ceil(v * units[i].mib);
            if (r < 1 || r > (double)(1ull << 40))
                return capsa_err_set(err, ERANGE, "size '%s': must be between 1 MiB and 1 EiB",
                                     s);
            *mib = (uint64_t)r;
            return 0;
        }
    }
bad:
    return capsa_err_set(err, EINVAL,
                         "size '%s': expected a number with an optional unit K, M, G or T "
                         "(e.g. 512M, 1.5G; a bare number means MiB)",
                         s ? s : "");
}

int capsa_parse_duration_ms(const char *s, uint64_t *ms, capsa_err *err)
{
    static const struct {
        const char *suffix;
        double ms;
    } units[] = {
        {"", 1000}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
    };
    const char *rest;
    double v;

    if (!s || parse_number(s, &v, &rest) < 0)
        goto bad;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(rest, units[i].suffix) == 0) {
            double r = ceil(v * units[i].ms);
            if (r > 1e13)
                return capsa_err_set(err, ERANGE, "duration '%s': too long", s);
            *ms = (uint64_t)r;
            return 0;
        }
    }
bad:
    return capsa_err_set(err, EINVAL,
                         "duration '%s': expected a number with an optional unit ms, s, m, h or "
                         "d (e.g. 500ms, 30s, 5m; a bare number means seconds)",
                         s ? s : "");
}
