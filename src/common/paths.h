/* paths.h - locations under $CAPSA_HOME (default ~/.capsa) and directory helpers. */
#ifndef CAPSA_COMMON_PATHS_H
#define CAPSA_COMMON_PATHS_H

#include <stddef.h>
#include <sys/types.h>

#include "capsa.h"

/* Absolute state root: $CAPSA_HOME, else $HOME/.capsa, else the passwd home. */
int capsa_home(char *buf, size_t len, capsa_err *err);

/* buf = $CAPSA_HOME/<formatted relative path>. */
int capsa_path(char *buf, size_t len, capsa_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* mkdir -p with mode for every created component. */
int capsa_mkdir_p(const char *path, mode_t mode, capsa_err *err);

/* rm -rf that never follows symlinks and never leaves path's filesystem. */
int capsa_rm_rf(const char *path, capsa_err *err);

/* Copy FROM's bytes to TO (created with MODE via a temporary file and rename). */
int capsa_copy_file(const char *from, const char *to, mode_t mode, capsa_err *err);

#endif
