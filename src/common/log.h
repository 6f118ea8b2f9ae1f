/* log.h - leveled logging to stderr; level from --log-level or CAPSA_LOG. */
#ifndef CAPSA_COMMON_LOG_H
#define CAPSA_COMMON_LOG_H

enum capsa_log_level {
    CAPSA_LOG_ERROR = 0,
    CAPSA_LOG_WARN,
    CAPSA_LOG_INFO,
    CAPSA_LOG_DEBUG,
    CAPSA_LOG_TRACE,
};

/* Parse "error|warn|info|debug|trace"; returns -1 for anything else. */
int capsa_log_parse_level(const char *s);
void capsa_log_set_level(enum capsa_log_level lvl);
enum capsa_log_level capsa_log_get_level(void);
/* Reads CAPSA_LOG; an invalid value is reported once and ignored. */
void capsa_log_init_from_env(void);
/* Prefix for every line, e.g. "capsa" or "capsa-supervisor[name]". */
void capsa_log_set_ident(const char *ident);

/* Also hand every emitted line (without the ident prefix) to hook; NULL removes it. */
void capsa_log_set_hook(void (*hook)(enum capsa_log_level lvl, const char *msg));

void capsa_log(enum capsa_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) capsa_log(CAPSA_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  capsa_log(CAPSA_LOG_WARN, __VA_ARGS__)
#define log_info(...)  capsa_log(CAPSA_LOG_INFO, __VA_ARGS__)
#define log_debug(...) capsa_log(CAPSA_LOG_DEBUG, __VA_ARGS__)
#define log_trace(...) capsa_log(CAPSA_LOG_TRACE, __VA_ARGS__)

#endif
