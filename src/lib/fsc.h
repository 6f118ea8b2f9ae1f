/* fsc.h - host side of the agent's fs operations (docs/protocol.md, "fs"):
 * whole-file read/write streamed in chunks, list, stat, mkdir -p, remove, rename.
 * Each call is one stream; on failure err names the op, the guest path and
 * the guest's error code. Works without any guest network. */
#ifndef CAPSA_LIB_FSC_H
#define CAPSA_LIB_FSC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/agentc.h"

/* Largest file capsa_fsc_read() will buffer in memory. */
#define CAPSA_FSC_READ_MAX (1ull << 30)

int capsa_fsc_write(struct capsa_agentc *c, const char *path, const void *data, size_t len,
                    int mode, capsa_err *err);
int capsa_fsc_read(struct capsa_agentc *c, const char *path, uint8_t **data, size_t *len,
                   capsa_err *err);
/* capsa_fsc_read bounded to max bytes (0 or more than CAPSA_FSC_READ_MAX: that): a longer
 * file fails with EFBIG, naming the path and the bound. */
int capsa_fsc_read_max(struct capsa_agentc *c, const char *path, size_t max, uint8_t **data,
                       size_t *len, capsa_err *err);
/* *result: the fs.result object (caller decrefs). */
int capsa_fsc_simple(struct capsa_agentc *c, json_t *request, json_t **result, capsa_err *err);
int capsa_fsc_stat(struct capsa_agentc *c, const char *path, json_t **result, capsa_err *err);
int capsa_fsc_list(struct capsa_agentc *c, const char *path, json_t **entries, capsa_err *err);
int capsa_fsc_mkdir(struct capsa_agentc *c, const char *path, int mode, capsa_err *err);
int capsa_fsc_remove(struct capsa_agentc *c, const char *path, bool recursive, capsa_err *err);
int capsa_fsc_rename(struct capsa_agentc *c, const char *from, const char *to, capsa_err *err);

#endif
