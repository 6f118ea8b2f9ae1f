/* metrics.c - /proc readers for the supervisor's metrics sampler, guest meminfo parsing and the
 * atomic metrics.json writer (see metrics.h). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "supervisor/metrics.h"

static ssize_t read_small(const char *path, char *buf, size_t len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    size_t off = 0;

    if (fd < 0)
        return -1;
    while (off + 1 < len) {
        ssize_t n = read(fd, buf + off, len - 1 - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        off += (size_t)n;
    }
    buf[off] = '\0';
    return (ssize_t)off;
}

int capsa_proc_stats_read(pid_t pid, struct capsa_proc_stats *out, capsa_err *err)
{
    char path[64], buf[4096], *p;
    unsigned long long ut = 0, st = 0, size = 0, res = 0;
    long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);

    memset(out, 0, sizeof(*out));
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (read_small(path, buf, sizeof(buf)) < 0)
        return capsa_err_set(err, errno, "reading %s: %s", path, strerror(errno));
    p = strrchr(buf, ')');
    /* after "pid (comm)": state is field 3; utime and stime are fields 14 and 15 */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return capsa_err_set(err, EINVAL, "%s: unexpected format", path);
    if (tck <= 0)
        tck = 100;
    out->cpu_ns = (ut + st) * (1000000000ull / (unsigned long long)tck);
    snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
    if (read_small(path, buf, sizeof(buf)) > 0 && sscanf(buf, "%llu %llu", &size, &res) == 2)
        out->rss_bytes = res * (uint64_t)(page > 0 ? page : 4096);
    snprintf(path, sizeof(path), "/proc/%d/io", (int)pid);
    if (read_small(path, buf, sizeof(buf)) > 0) {
        char *q = strstr(buf, "\nread_bytes:"), *w = strstr(buf, "\nwrite_bytes:");
        if (q)
            out->read_bytes = strtoull(q + 12, NULL, 10);
        if (w)
            out->write_bytes = strtoull(w + 13, NULL, 10);
    }
    return 0;
}

static int meminfo_field(const char *text, size_t len, const char *key, uint64_t *v)
{
    size_t kl = strlen(key);
    const char *p = text, *end = text + len;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        if (ll > kl && !memcmp(p, key, kl) && p[kl] == ':') {
            char num[32];
            size_t i = kl + 1, n = 0;
            unsigned long long kb;
            while (i < ll && p[i] == ' ')
                i++;
            while (i < ll && n + 1 < sizeof(num) && p[i] >= '0' && p[i] <= '9')
                num[n++] = p[i++];
            num[n] = '\0';
            if (!n || n > 15)
                return -1;
            kb = strtoull(num, NULL, 10);
            *v = (uint64_t)kb * 1024u;
            return 0;
        }
        p += ll + 1;
    }
    return -1;
}

int capsa_meminfo_parse(const char *text, size_t len, uint64_t *total, uint64_t *available)
{
    if (meminfo_field(text, len, "MemTotal", total) < 0 ||
        meminfo_field(text, len, "MemAvailable", available) < 0 || *available > *total)
        return -1;
    return 0;
}

int capsa_metrics_write(const char *path, json_t *j, capsa_err *err)
{
    char tmp[4200];
    _cleanup_free_ char *txt = json_dumps(j, JSON_COMPACT);
    _cleanup_close_ int fd = -1;
    size_t n, off = 0;

    if (!txt)
        return capsa_err_set(err, ENOMEM, "out of memory");
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return capsa_err_set(err, errno, "open %s: %s", tmp, strerror(errno));
    n = strlen(txt);
    while (off < n) {
        ssize_t w = write(fd, txt + off, n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return capsa_err_set(err, errno, "write %s: %s", tmp, strerror(errno));
        off += (size_t)w;
    }
    if (rename(tmp, path) < 0)
        return capsa_err_set(err, errno, "rename %s: %s", tmp, strerror(errno));
    return 0;
}
