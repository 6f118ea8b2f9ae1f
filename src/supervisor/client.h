/* client.h - client side of a supervisor's control socket ($CAPSA_HOME/run/<id>/control.sock).
 *
 * The control socket speaks the agent channel's framing (docs/protocol.md, "Control socket"):
 * the supervisor greets with `hello`, relays exec and fs streams to the guest agent (stream ids
 * are remapped per client, so capsa_exec_run() and the capsa_fsc_*() calls work unchanged on
 * conn.ch), relays `ping`, and answers `ctl.request` {op: info|touch|stop|spawn|detach} on stream 0
 * with `ctl.result`. Closing the connection kills the exec sessions it started.
 */
#ifndef CAPSA_SUPERVISOR_CLIENT_H
#define CAPSA_SUPERVISOR_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "lib/agentc.h"
#include "store/store.h"

struct capsa_ctl_conn {
    struct capsa_agentc ch; /* use with capsa_exec_run(), capsa_fsc_*(), capsa_agentc_ping() */
    json_t *hello;          /* the supervisor's hello object */
};

/* Connect to a control socket and read the hello (timeout_ms, <=0: 10 s). */
int capsa_ctl_connect(const char *sock_path, struct capsa_ctl_conn *c, int timeout_ms,
                      capsa_err *err);
/* Connect to the running sandbox NAME (ENOENT no such sandbox, EBUSY not running). */
int capsa_ctl_connect_name(struct capsa_store *store, const char *name, struct capsa_ctl_conn *c,
                           capsa_err *err);
/* Close the socket and free everything; safe on a zeroed or already closed conn. */
void capsa_ctl_close(struct capsa_ctl_conn *c);

/* Send ctl.request {op, ...args} and wait for ctl.result (timeout_ms, <0: forever). Returns 0
 * with *result (caller decrefs, may be NULL to discard) when ok is true; -1 with the
 * supervisor's error message otherwise. */
int capsa_ctl_request(struct capsa_ctl_conn *c, const char *op, json_t *args, int timeout_ms,
                      json_t **result, capsa_err *err);

/* Wait until the supervisor closes the connection (it does once the VM is gone). */
int capsa_ctl_wait_closed(struct capsa_ctl_conn *c, int timeout_ms, capsa_err *err);

#endif
