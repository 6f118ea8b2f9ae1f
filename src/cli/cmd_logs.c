/* cmd_logs.c - `capsa logs` (read a sandbox's exec.log, follow it across rotations) and
 * `capsa metrics` (the supervisor's metrics.json samples as a table or JSON). Both are pure
 * file reads: they never talk to the supervisor. Formats: docs/logs.md. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "common/cleanup.h"
#include "common/err.h"
#include "common/units.h"
#include "store/store.h"
#include "supervisor/execlog.h"
#include "supervisor/metrics.h"
#include "supervisor/sandbox.h"

#define LINE_MAX_BYTES (1u << 20)
#define TAIL_MAX       10000000ull
#define FOLLOW_POLL_US 200000

static void store_closep(struct capsa_store **s)
{
    capsa_store_close(*s);
}
#define _cleanup_store_ _cleanup_(store_closep)

/* ---- logs ------------------------------------------------------------------------------- */

static const char logs_help[] =
    "Usage: capsa logs NAME [OPTIONS]\n\n"
    "Print the captured log of sandbox NAME: the output of its primary exec session and of\n"
    "`run -d` commands, and with --source system the lifecycle markers, supervisor messages\n"
    "and guest console. A pure file read of $CAPSA_HOME/sandboxes/NAME/exec.log (and its\n"
    "rotated exec.log.1..3): works on stopped sandboxes.\n\n"
    "Options:\n"
    "  -n, --tail N         only the last N matching entries\n"
    "      --since T        entries at or after T\n"
    "      --until T        entries before T\n"
    "                       T: RFC 3339 (2026-11-29T15:04:05Z, 2026-11-29) or a duration ago\n"
    "                       (30s, 5m, 2h, 1d)\n"
    "  -f, --follow         keep printing new entries (polls every 200 ms, follows rotation)\n"
    "  -t, --timestamps     prefix each entry with its RFC 3339 time\n"
    "  -s, --source LIST    comma-separated: stdout, stderr, output (PTY), system, or all\n"
    "                       (default stdout,stderr,output)\n"
    "      --json           print the raw JSON lines\n"
    "  -h, --help           show this help\n\n"
    "Exit status: 0, or 1 for an unknown sandbox or a bad option.\n";

struct logs_opts {
    unsigned mask;
    int64_t since, until; /* 0: unbounded */
    bool ts, json, follow;
    bool has_tail;
    unsigned long long tail;
};

/* the last `tail` matching raw lines */
struct ring {
    char **v;
    size_t cap, n, head;
    unsigned long long max;
};

static void ring_push(struct ring *r, const char *line, size_t len)
{
    char *c;
    if (r->max == 0)
        return;
    c = strndup(line, len);
    if (!c)
        return;
    if (r->n < r->max && r->n == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        char **nv;
        if (ncap > r->max)
            ncap = (size_t)r->max;
        nv = realloc(r->v, ncap * sizeof(*nv));
        if (!nv) {
            free(c);
            return;
        }
        /* the ring has not wrapped yet while it grows: head is 0 */
        r->v = nv;
        r->cap = ncap;
    }
    if (r->n < r->cap) {
        r->v[(r->head + r->n++) % r->cap] = c;
    } else {
        free(r->v[r->head]);
        r->v[r->head] = c;
        r->head = (r->head + 1) % r->cap;
    }
}

static int print_entry(const struct logs_opts *o, const char *line, size_t len)
{
    struct capsa_execlog_entry e;
    int rc = 0;

    if (capsa_execlog_decode(line, len, &e) < 0)
        return 0; /* a damaged line is skipped */
    if (o->json) {
        fwrite(line, 1, len, stdout);
        if (len == 0 || line[len - 1] != '\n')
            putchar('\n');
    } else {
        if (o->ts) {
            char t[40];
            capsa_execlog_fmt_time(e.t_ms, t, sizeof(t));
            printf("%s ", t);
        }
        fwrite(e.data, 1, e.len, stdout);
        if (o->ts && (e.len == 0 || e.data[e.len - 1] != '\n'))
            putchar('\n');
    }
    capsa_execlog_entry_clear(&e);
    if (o->follow && fflush(stdout) != 0)
        rc = -1;
    return ferror(stdout) ? -1 : rc;
}

static bool matches(const struct logs_opts *o, const char *line, size_t len)
{
    struct capsa_execlog_entry e;
    bool ok;

    if (capsa_execlog_decode(line, len, &e) < 0)
        return false;
    ok = (o->mask & (1u << e.src)) && (!o->since || e.t_ms >= o->since) &&
         (!o->until || e.t_ms < o->until);
    capsa_execlog_entry_clear(&e);
    return ok;
}

/* Incremental line reader over one fd. */
struct lreader {
    int fd;
    dev_t dev;
    ino_t ino;
    char *buf;
    size_t n, cap;
    bool skipping; /* inside an over-long line */
};

/* Read what is there now; each complete line goes to fn. -1 when fn fails. */
static int lreader_pump(struct lreader *r, int (*fn)(void *, const char *, size_t), void *ctx)
{
    for (;;) {
        ssize_t got;
        size_t start = 0;
        if (r->cap - r->n < 65536) {
            size_t ncap = r->cap ? r->cap * 2 : 131072;
            char *nb;
            if (ncap > LINE_MAX_BYTES + 131072)
                ncap = LINE_MAX_BYTES + 131072;
            if (ncap <= r->cap) {
                r->n = 0; /* an over-long line: drop it */
                r->skipping = true;
            } else {
                nb = realloc(r->buf, ncap);
                if (!nb)
                    return -1;
                r->buf = nb;
                r->cap = ncap;
            }
        }
        got = read(r->fd, r->buf + r->n, r->cap - r->n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return 0;
        r->n += (size_t)got;
        for (;;) {
            char *nl = memchr(r->buf + start, '\n', r->n - start);
            size_t len;
            if (!nl)
                break;
            len = (size_t)(nl - (r->buf + start)) + 1;
            if (!r->skipping && fn(ctx, r->buf + start, len) < 0)
                return -1;
            r->skipping = false;
            start += len;
        }
        memmove(r->buf, r->buf + start, r->n - start);
        r->n -= start;
    }
}

static int lreader_open(struct lreader *r, const char *path)
{
    struct stat st;
    r->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (r->fd < 0)
        return -1;
    if (fstat(r->fd, &st) == 0) {
        r->dev = st.st_dev;
        r->ino = st.st_ino;
    }
    r->n = 0;
    r->skipping = false;
    return 0;
}

static void lreader_close(struct lreader *r)
{
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

struct dump_ctx {
    const struct logs_opts *o;
    struct ring *ring; /* NULL: print directly */
};

static int on_line(void *vctx, const char *line, size_t len)
{
    struct dump_ctx *c = vctx;
    if (!matches(c->o, line, len))
        return 0;
    if (c->ring) {
        ring_push(c->ring, line, len);
        return 0;
    }
    return print_entry(c->o, line, len);
}

/* The followed file was rotated (r is drained): read the rotated files newer than it, which
 * appeared between two polls, then open the new exec.log. */
static int follow_rotated(struct lreader *r, const char *path, struct dump_ctx *ctx)
{
    int k = CAPSA_EXECLOG_KEEP + 1;
    char p[4300];
    struct stat st;

    if (r->fd >= 0) {
        for (int i = 1; i <= CAPSA_EXECLOG_KEEP; i++) {
            snprintf(p, sizeof(p), "%s.%d", path, i);
            if (stat(p, &st) == 0 && st.st_ino == r->ino && st.st_dev == r->dev) {
                k = i;
                break;
            }
        }
    } else {
        k = 1; /* nothing followed yet: only the new file */
    }
    lreader_close(r);
    for (int i = k - 1; i >= 1; i--) {
        snprintf(p, sizeof(p), "%s.%d", path, i);
        if (lreader_open(r, p) < 0)
            continue;
        if (lreader_pump(r, on_line, ctx) < 0)
            return -1;
        lreader_close(r);
    }
    if (lreader_open(r, path) == 0 && lreader_pump(r, on_line, ctx) < 0)
        return -1;
    return 0;
}

static volatile sig_atomic_t stop_follow;
static void on_stop_signal(int sig)
{
    (void)sig;
    stop_follow = 1;
}

int cmd_logs(int argc, char **argv)
{
    enum { OPT_SINCE = 256, OPT_UNTIL, OPT_JSON };
    static const struct option longopts[] = {
        {"tail", required_argument, NULL, 'n'},
        {"since", required_argument, NULL, OPT_SINCE},
        {"until", required_argument, NULL, OPT_UNTIL},
        {"follow", no_argument, NULL, 'f'},
        {"timestamps", no_argument, NULL, 't'},
        {"source", required_argument, NULL, 's'},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    struct logs_opts o = {.mask = CAPSA_LOG_SRC_DEFAULT};
    _cleanup_store_ struct capsa_store *st = NULL;
    struct capsa_store_sandbox sb = {0};
    struct capsa_sandbox_paths paths;
    struct ring ring = {0};
    struct lreader r = {.fd = -1};
    struct dump_ctx ctx = {.o = &o};
    capsa_err err = {0};
    int64_t now = capsa_execlog_now_ms();
    const char *name = NULL;
    char *end;
    int c, rc = 1;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "n:fts:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'n':
            errno = 0;
            o.tail = strtoull(optarg, &end, 10);
            if (errno || *end || end == optarg || optarg[0] == '-' || o.tail > TAIL_MAX)
                return cli_fail("--tail '%s': expected a number from 0 to %llu", optarg, TAIL_MAX);
            o.has_tail = true;
            break;
        case OPT_SINCE:
        case OPT_UNTIL:
            if (capsa_execlog_parse_time(optarg, now, c == OPT_SINCE ? &o.since : &o.until, &err) <
                0)
                return cli_fail("%s: %s", c == OPT_SINCE ? "--since" : "--until", err.msg);
            break;
        case 'f':
            o.follow = true;
            break;
        case 't':
            o.ts = true;
            break;
        case 's':
            if (capsa_log_source_parse(optarg, &o.mask, &err) < 0)
                return cli_fail("--source '%s': %s", optarg, err.msg);
            break;
        case OPT_JSON:
            o.json = true;
            break;
        case 'h':
            fputs(logs_help, stdout);
            return 0;
        default:
            return cli_fail("logs: unknown or incomplete option '%s' (see capsa logs --help)",
                            argv[optind - 1]);
        }
    }
    if (optind >= argc)
        return cli_fail("logs: no sandbox name given (capsa logs NAME)");
    name = argv[optind++];
    if (optind < argc)
        return cli_fail("logs: unexpected argument '%s'", argv[optind]);
    if (capsa_store_check_name("sandbox name", name, &err) < 0)
        return cli_fail("logs: %s", err.msg);
    if (capsa_store_open(NULL, &st, &err) < 0 || capsa_sandbox_reap(st, &err) < 0)
        return cli_fail("logs: %s", err.msg);
    if (capsa_store_sandbox_get(st, name, &sb, &err) < 0) {
        if (err.code == ENOENT)
            return cli_fail("logs: no sandbox named '%s'", name);
        return cli_fail("logs: %s", err.msg);
    }
    if (capsa_sandbox_paths(name, sb.id, &paths, &err) < 0) {
        capsa_store_sandbox_clear(&sb);
        return cli_fail("logs: %s", err.msg);
    }
    capsa_store_sandbox_clear(&sb);
    signal(SIGPIPE, SIG_IGN);
    if (o.has_tail) {
        ring.max = o.tail;
        ctx.ring = &ring;
    }
    /* oldest first: exec.log.3, .2, .1, then exec.log (kept open when following) */
    for (int i = CAPSA_EXECLOG_KEEP; i >= 0; i--) {
        char p[4300];
        if (i)
            snprintf(p, sizeof(p), "%s.%d", paths.exec_log, i);
        else
            snprintf(p, sizeof(p), "%s", paths.exec_log);
        if (lreader_open(&r, p) < 0)
            continue;
        if (lreader_pump(&r, on_line, &ctx) < 0)
            goto done;
        if (i)
            lreader_close(&r);
    }
    if (ctx.ring) {
        for (size_t k = 0; k < ring.n; k++) {
            const char *l = ring.v[(ring.head + k) % ring.cap];
            if (print_entry(&o, l, strlen(l)) < 0)
                goto done;
        }
        ctx.ring = NULL;
    }
    if (fflush(stdout) != 0)
        goto done;
    if (o.follow) {
        struct sigaction sa = {.sa_handler = on_stop_signal};
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        while (!stop_follow) {
            struct stat cur;
            usleep(FOLLOW_POLL_US);
            /* the sandbox was removed: nothing more will come */
            if (stat(paths.dir, &cur) < 0 && errno == ENOENT)
                break;
            if (r.fd >= 0 && lreader_pump(&r, on_line, &ctx) < 0)
                goto done;
            /* rotated (or created): finish the old file, then switch to the new one */
            if (stat(paths.exec_log, &cur) == 0 &&
                (r.fd < 0 || cur.st_ino != r.ino || cur.st_dev != r.dev)) {
                if (r.fd >= 0 && lreader_pump(&r, on_line, &ctx) < 0)
                    goto done;
                if (follow_rotated(&r, paths.exec_log, &ctx) < 0)
                    goto done;
            }
        }
    }
    rc = 0;
done:
    lreader_close(&r);
    free(r.buf);
    for (size_t k = 0; k < ring.n; k++)
        free(ring.v[(ring.head + k) % ring.cap]);
    free(ring.v);
    return rc;
}

/* ---- metrics ---------------------------------------------------------------------------- */

static const char metrics_help[] =
    "Usage: capsa metrics [NAME] [-a] [-w] [--interval DUR] [--format json]\n\n"
    "Show the latest metrics sample of running sandboxes (all sandboxes with -a, or NAME),\n"
    "as written by each supervisor every runtime.metrics_sample_interval_ms (default 1000)\n"
    "to $CAPSA_HOME/run/<id>/metrics.json. State: running, stalled (no sample for three\n"
    "intervals) or exited (not running).\n\n"
    "Options:\n"
    "  -a, --all            include sandboxes that are not running\n"
    "  -w, --watch          refresh every interval until interrupted\n"
    "      --interval DUR   refresh interval for --watch (default 1s)\n"
    "      --format json    a JSON array (one per refresh with --watch) instead of a table\n"
    "  -h, --help           show this help\n";

static json_int_t jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

static json_t *read_metrics_file(const char *path)
{
    json_error_t je;
    json_t *j = json_load_file(path, 0, &je);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

/* One output object with the reference's keys. */
static json_t *metrics_row(const struct capsa_store_sandbox *sb, int64_t now)
{
    static const char *const keys[] = {"vcpu_time_ns",
                                       "memory_bytes",
                                       "memory_available_bytes",
                                       "memory_host_resident_bytes",
                                       "memory_limit_bytes",
                                       "disk_read_bytes",
                                       "disk_write_bytes",
                                       "net_rx_bytes",
                                       "net_tx_bytes",
                                       "upper_used_bytes",
                                       "upper_free_bytes",
                                       "upper_host_allocated_bytes",
                                       "uptime_secs"};
    json_t *cfg = json_loads(sb->config_json, 0, NULL), *res = json_object_get(cfg, "resources");
    json_t *rt = json_object_get(cfg, "runtime"), *m = NULL, *out;
    struct capsa_sandbox_paths paths;
    bool active = CAPSA_SB_ACTIVE & (1u << sb->status);
    int64_t interval = 1000;
    const char *state = "exited";
    capsa_err err = {0};
    char mp[4400];

    if (json_is_true(json_object_get(rt, "disable_metrics_sample")))
        interval = 0;
    else if (json_is_integer(json_object_get(rt, "metrics_sample_interval_ms")))
        interval = json_integer_value(json_object_get(rt, "metrics_sample_interval_ms"));
    if (active && capsa_sandbox_paths(sb->name, sb->id, &paths, &err) == 0) {
        snprintf(mp, sizeof(mp), "%s/%s", paths.run_dir, CAPSA_METRICS_FILE);
        m = read_metrics_file(mp);
        state = "running";
        if (interval > 0 && (!m || now - jint(m, "timestamp_ms") > 3 * interval) &&
            sb->status == CAPSA_SANDBOX_RUNNING &&
            (!sb->started_at || now - sb->started_at > 3 * interval))
            state = "stalled";
    }
    out = json_pack("{s:s, s:s, s:I}", "name", sb->name, "state", state, "cpus",
                    (json_int_t)jint(res, "cpus"));
    json_object_set_new(out, "timestamp",
                        m && json_is_string(json_object_get(m, "timestamp"))
                            ? json_incref(json_object_get(m, "timestamp"))
                            : json_null());
    json_object_set_new(out, "cpu_percent",
                        json_real(m ? json_number_value(json_object_get(m, "cpu_percent")) : 0));
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++)
        json_object_set_new(out, keys[i], json_integer(jint(m, keys[i])));
    /* the limit is known without a sample */
    json_object_set_new(out, "memory_limit_bytes",
                        json_integer(jint(res, "memory_mib") * (json_int_t)1048576));
    json_decref(m);
    json_decref(cfg);
    return out;
}

static void human(json_int_t b, char *buf, size_t len)
{
    static const char *const u[] = {"B", "K", "M", "G", "T"};
    double v = (double)b;
    size_t i = 0;
    while (v >= 1024 && i + 1 < ARRAY_SIZE(u)) {
        v /= 1024;
        i++;
    }
    snprintf(buf, len, i ? "%.1f%s" : "%.0f%s", v, u[i]);
}

static void print_table(json_t *rows)
{
    size_t i;
    json_t *r;

    printf("%-24s %-8s %4s %6s %17s %8s %9s %9s %8s\n", "NAME", "STATE", "CPUS", "CPU%",
           "MEM USED/LIMIT", "HOST-RSS", "DISK-R", "DISK-W", "UPTIME");
    json_array_foreach(rows, i, r)
    {
        char used[16], lim[16], rss[16], dr[16], dw[16], mem[40], up[24];
        human(jint(r, "memory_bytes"), used, sizeof(used));
        human(jint(r, "memory_limit_bytes"), lim, sizeof(lim));
        human(jint(r, "memory_host_resident_bytes"), rss, sizeof(rss));
        human(jint(r, "disk_read_bytes"), dr, sizeof(dr));
        human(jint(r, "disk_write_bytes"), dw, sizeof(dw));
        snprintf(mem, sizeof(mem), "%s/%s", used, lim);
        snprintf(up, sizeof(up), "%llds", (long long)jint(r, "uptime_secs"));
        printf("%-24s %-8s %4lld %6.1f %17s %8s %9s %9s %8s\n",
               json_string_value(json_object_get(r, "name")),
               json_string_value(json_object_get(r, "state")), (long long)jint(r, "cpus"),
               json_number_value(json_object_get(r, "cpu_percent")), mem, rss, dr, dw, up);
    }
}

int cmd_metrics(int argc, char **argv)
{
    enum { OPT_INTERVAL = 256, OPT_FORMAT };
    static const struct option longopts[] = {
        {"all", no_argument, NULL, 'a'},
        {"watch", no_argument, NULL, 'w'},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"help", no_argument, NULL, 'h'},
        {0},
    };
    _cleanup_store_ struct capsa_store *st = NULL;
    bool all = false, watch = false, json = false;
    uint64_t interval_ms = 1000;
    const char *name = NULL;
    capsa_err err = {0};
    int c;

    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "awh", longopts, NULL)) != -1) {
        switch (c) {
        case 'a':
            all = true;
            break;
        case 'w':
            watch = true;
            break;
        case OPT_INTERVAL:
            if (capsa_parse_duration_ms(optarg, &interval_ms, &err) < 0 || interval_ms < 100)
                return cli_fail("--interval '%s': %s", optarg,
                                err.msg[0] ? err.msg : "must be at least 100ms");
            break;
        case OPT_FORMAT:
            if (!strcmp(optarg, "json"))
                json = true;
            else if (strcmp(optarg, "table") != 0)
                return cli_fail("--format '%s': expected json or table", optarg);
            break;
        case 'h':
            fputs(metrics_help, stdout);
            return 0;
        default:
            return cli_fail("metrics: unknown or incomplete option '%s' (see capsa metrics "
                            "--help)",
                            argv[optind - 1]);
        }
    }
    if (optind < argc)
        name = argv[optind++];
    if (optind < argc)
        return cli_fail("metrics: unexpected argument '%s'", argv[optind]);
    if (name && capsa_store_check_name("sandbox name", name, &err) < 0)
        return cli_fail("metrics: %s", err.msg);
    if (capsa_store_open(NULL, &st, &err) < 0)
        return cli_fail("metrics: %s", err.msg);
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        struct capsa_store_sandbox *v = NULL;
        struct capsa_store_sandbox_filter f = {.status_mask = 0};
        int64_t now;
        json_t *rows = json_array();
        size_t n = 0;

        if (capsa_sandbox_reap(st, &err) < 0 ||
            capsa_store_sandbox_list(st, &f, &v, &n, &err) < 0) {
            json_decref(rows);
            return cli_fail("metrics: %s", err.msg);
        }
        now = capsa_execlog_now_ms();
        for (size_t i = 0; i < n; i++) {
            bool active = CAPSA_SB_ACTIVE & (1u << v[i].status);
            if (name ? strcmp(name, v[i].name) != 0 : (!all && !active))
                continue;
            json_array_append_new(rows, metrics_row(&v[i], now));
        }
        capsa_store_sandboxes_free(v, n);
        if (name && json_array_size(rows) == 0) {
            json_decref(rows);
            return cli_fail("metrics: no sandbox named '%s'", name);
        }
        if (watch && !json && isatty(STDOUT_FILENO))
            fputs("\033[H\033[2J", stdout);
        if (json) {
            char *txt = json_dumps(rows, watch ? JSON_COMPACT : JSON_INDENT(2));
            if (txt)
                puts(txt);
            free(txt);
        } else {
            print_table(rows);
        }
        json_decref(rows);
        if (fflush(stdout) != 0 || ferror(stdout))
            return 1;
        if (!watch)
            return 0;
        usleep((useconds_t)(interval_ms * 1000));
    }
}
