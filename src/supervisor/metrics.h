/* metrics.h - sandbox metrics: what the supervisor samples from /proc and the guest, and the
 * $CAPSA_HOME/run/<id>/metrics.json file it rewrites atomically for readers (docs/logs.md).
 */
#ifndef CAPSA_SUPERVISOR_METRICS_H
#define CAPSA_SUPERVISOR_METRICS_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>

#include "capsa.h"

#define CAPSA_METRICS_FILE "metrics.json"

/* Host-side counters of one process (QEMU). */
struct capsa_proc_stats {
    uint64_t cpu_ns;                  /* utime + stime */
    uint64_t rss_bytes;               /* resident set */
    uint64_t read_bytes, write_bytes; /* /proc/PID/io (0 when unreadable) */
};
int capsa_proc_stats_read(pid_t pid, struct capsa_proc_stats *out, capsa_err *err);

/* Parse a guest /proc/meminfo: MemTotal and MemAvailable in bytes. -1 when either is missing. */
int capsa_meminfo_parse(const char *text, size_t len, uint64_t *total, uint64_t *available);

/* Write json to path atomically (temp file + rename). */
int capsa_metrics_write(const char *path, json_t *j, capsa_err *err);

#endif
