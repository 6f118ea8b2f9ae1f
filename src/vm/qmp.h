/* qmp.h - minimal QMP (QEMU Machine Protocol) client over a unix socket. */
#ifndef CAPSA_VM_QMP_H
#define CAPSA_VM_QMP_H

#include <jansson.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "capsa.h"

struct capsa_qmp {
    int fd;
    char *buf; /* unparsed bytes received so far */
    size_t len, cap;
    unsigned long next_id;
};

/* Connects, reads the greeting and negotiates capabilities (qmp_capabilities).
 * pidfd (may be -1) is polled alongside: if it becomes readable, QEMU exited and
 * the call fails at once instead of waiting out timeout_ms. */
int capsa_qmp_connect(struct capsa_qmp *q, const char *path, int pidfd, int timeout_ms,
                      capsa_err *err);

/* Runs one command; args may be NULL. Asynchronous events are skipped. On success
 * *ret (if non-NULL) holds a new reference to the "return" value. A QMP "error"
 * reply fails with its class and description. */
int capsa_qmp_execute(struct capsa_qmp *q, const char *command, json_t *args, json_t **ret,
                      int timeout_ms, capsa_err *err);

/* query-status: "running", "paused", "shutdown", ... into status. */
int capsa_qmp_query_status(struct capsa_qmp *q, char *status, size_t len, int timeout_ms,
                           capsa_err *err);

/* quit: QEMU exits right after answering (the reply may be lost; that is fine). */
int capsa_qmp_quit(struct capsa_qmp *q, int timeout_ms, capsa_err *err);

void capsa_qmp_close(struct capsa_qmp *q);

/* Fill a sockaddr_un for path. Paths longer than sun_path are reached through
 * /proc/self/fd/<dirfd>/<name>; *dirfd_out then holds an fd to close after
 * bind/connect (else -1). */
int capsa_unix_addr(const char *path, struct sockaddr_un *sa, socklen_t *salen, int *dirfd_out,
                    capsa_err *err);

#endif
