/* agentc.h - host side of the agent channel: queued frame output, incremental
 * input, the hello/boot/ready handshake, and blocking request helpers.
 *
 * Theory of operation: the channel fd is non-blocking. Frames to send are
 * appended to an output queue; capsa_agentc_flush() writes as much as the
 * socket takes. Callers running their own poll loop watch agentc->fd for POLLIN
 * always and for POLLOUT while capsa_agentc_pending() is non-zero, then call
 * capsa_agentc_read() and pop frames with capsa_agentc_next(). Everything the
 * guest sends is hostile: frame sizes are bounded by the reader, JSON payloads
 * are parsed with size limits and checked field by field by the callers.
 */
#ifndef CAPSA_LIB_AGENTC_H
#define CAPSA_LIB_AGENTC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "capsa.h"
#include "proto/frame.h"

struct capsa_agentc {
    int fd;
    struct capsa_frame_reader rd;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    uint32_t next_stream;
    bool eof;
    char agent_version[64];
    int cancel_fd; /* >= 0: waits give up with ECANCELED once it is readable (-1 after init) */
};

int capsa_agentc_init(struct capsa_agentc *c, int fd, capsa_err *err);
void capsa_agentc_destroy(struct capsa_agentc *c); /* does not close fd */

uint32_t capsa_agentc_new_stream(struct capsa_agentc *c);

int capsa_agentc_send(struct capsa_agentc *c, uint32_t stream, uint16_t type, uint16_t flags,
                      const void *payload, size_t len, capsa_err *err);
int capsa_agentc_send_json(struct capsa_agentc *c, uint32_t stream, uint16_t type, uint16_t flags,
                           json_t *obj, capsa_err *err);
size_t capsa_agentc_pending(const struct capsa_agentc *c);
/* Write queued bytes; with block=true until the queue is empty. */
int capsa_agentc_flush(struct capsa_agentc *c, bool block, capsa_err *err);

/* Read what is available (non-blocking). Returns 0, or -1 on error; sets c->eof. */
int capsa_agentc_read(struct capsa_agentc *c, capsa_err *err);
/* Pop the next complete frame: 1 got one, 0 none buffered, -1 malformed stream. */
int capsa_agentc_next(struct capsa_agentc *c, struct capsa_frame_hdr *h, const uint8_t **payload,
                      capsa_err *err);
/* Block (flushing output meanwhile) until a frame arrives or timeout_ms passes
 * (-1 = forever). Returns 1 frame, -1 error (timeout: code ETIMEDOUT). */
int capsa_agentc_wait_frame(struct capsa_agentc *c, int timeout_ms, struct capsa_frame_hdr *h,
                            const uint8_t **payload, capsa_err *err);

/* Parse a JSON object payload from the guest (bounded by the frame size). */
json_t *capsa_agentc_parse_json(const uint8_t *payload, size_t len, capsa_err *err);

/* Wait for hello (timeout_ms), send boot, wait for ready. */
int capsa_agentc_handshake(struct capsa_agentc *c, json_t *boot, int timeout_ms, capsa_err *err);

/* Round trip ping -> pong; *rtt_us gets the latency. */
int capsa_agentc_ping(struct capsa_agentc *c, int timeout_ms, uint64_t *rtt_us, capsa_err *err);

/* Ask the guest to sync and power off (does not wait). */
int capsa_agentc_shutdown(struct capsa_agentc *c, capsa_err *err);

uint64_t capsa_now_us(void);
/* At debug level: log the guest's timeline from a frame's JSON "marks_us" (microseconds since
 * the guest kernel started, in the order they were taken: READY's boot steps, and the first
 * command's EXEC_STARTED and EXITED), if it has one. */
void capsa_agentc_log_marks(const uint8_t *p, size_t n);

#endif
