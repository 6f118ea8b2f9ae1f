/* log.c - leveled logging to stderr. Default level: warn. Debug and trace lines carry the
 * milliseconds since the program was loaded, so a debug run doubles as a timeline. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static enum capsa_log_level cur_level = CAPSA_LOG_WARN;
static char ident[64] = "capsa";

static void (*log_hook)(enum capsa_log_level, const char *);

void capsa_log_set_hook(void (*hook)(enum capsa_log_level lvl, const char *msg))
{
    log_hook = hook;
}

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

int capsa_log_parse_level(const char *s)
{
    for (int i = 0; i < (int)(sizeof(level_names) / sizeof(level_names[0])); i++)
        if (s && strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

void capsa_log_set_level(enum capsa_log_level lvl)
{
    cur_level = lvl;
}

enum capsa_log_level capsa_log_get_level(void)
{
    return cur_level;
}

void capsa_log_set_ident(const char *s)
{
    snprintf(ident, sizeof(ident), "%s", s);
}

void capsa_log_init_from_env(void)
{
    const char *v = getenv("CAPSA_LOG");
    int lvl;

    if (!v || !*v)
        return;
    lvl = capsa_log_parse_level(v);
    if (lvl < 0) {
        fprintf(stderr, "%s: warning: CAPSA_LOG=%s is not one of error|warn|info|debug|trace\n",
                ident, v);
        return;
    }
    cur_level = (enum capsa_log_level)lvl;
}

static struct timespec t_start;

__attribute__((constructor)) static void log_note_start(void)
{
    clock_gettime(CLOCK_MONOTONIC, &t_start);
}

/* Milliseconds since the program was loaded. */
static double since_start_ms(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - t_start.tv_sec) * 1000.0 +
           (double)(now.tv_nsec - t_start.tv_nsec) / 1e6;
}

void capsa_log(enum capsa_log_level lvl, const char *fmt, ...)
{
    char buf[2048];
    va_list ap;

    if (lvl > cur_level)
        return;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (lvl == CAPSA_LOG_INFO)
        fprintf(stderr, "%s: %s\n", ident, buf);
    else if (lvl >= CAPSA_LOG_DEBUG)
        fprintf(stderr, "%s: %s: +%.1f ms: %s\n", ident, level_names[lvl], since_start_ms(), buf);
    else
        fprintf(stderr, "%s: %s: %s\n", ident, level_names[lvl], buf);
    if (log_hook)
        log_hook(lvl, buf);
}
