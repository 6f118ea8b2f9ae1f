/* frame.h - host<->guest frames: [len u32][stream u32][type u16][flags u16][payload].
 *
 * Theory of operation: both ends of the virtio-serial port "capsa.agent" speak
 * the same framing. All integers are big-endian. len counts the payload only and
 * may not exceed CAPSA_FRAME_MAX_PAYLOAD; a peer that sends more is broken and
 * the connection is dropped (a byte stream cannot resync). Stream 0 carries
 * connection-level control (hello, boot, ping, shutdown); every other stream is
 * one exec session or one fs operation, its id chosen by the host. Control
 * payloads are JSON objects; data payloads (stdin/stdout/stderr/fs data) are raw
 * bytes. The message catalogue is in docs/protocol.md.
 */
#ifndef CAPSA_PROTO_FRAME_H
#define CAPSA_PROTO_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "capsa.h"

#define CAPSA_PROTO_VERSION     1
#define CAPSA_FRAME_HDR_SIZE    12
#define CAPSA_FRAME_MAX_PAYLOAD (1u << 20)

enum capsa_frame_type {
    /* stream 0: connection control */
    CAPSA_MSG_HELLO = 0x0001,    /* G->H json {version, agent_version} */
    CAPSA_MSG_BOOT = 0x0002,     /* H->G json boot config (root, hostname, env, ...) */
    CAPSA_MSG_READY = 0x0003,    /* G->H json {boot_ms} once the root is mounted */
    CAPSA_MSG_PING = 0x0004,     /* H->G json {} */
    CAPSA_MSG_PONG = 0x0005,     /* G->H json {} */
    CAPSA_MSG_SHUTDOWN = 0x0006, /* H->G json {}: sync, power off */
    CAPSA_MSG_ERROR = 0x0007,    /* either way, any stream: json {code, message}; ends the stream */
    /* exec session streams */
    CAPSA_MSG_EXEC_START = 0x0010,  /* H->G json, see docs/protocol.md */
    CAPSA_MSG_EXEC_STARTED = 0x0011, /* G->H json {pid} */
    CAPSA_MSG_STDIN = 0x0012,       /* H->G raw; flag EOF closes the child's stdin */
    CAPSA_MSG_STDOUT = 0x0013,      /* G->H raw (PTY output too) */
    CAPSA_MSG_STDERR = 0x0014,      /* G->H raw */
    CAPSA_MSG_SIGNAL = 0x0015,      /* H->G json {signal} */
    CAPSA_MSG_RESIZE = 0x0016,      /* H->G json {rows, cols} */
    CAPSA_MSG_EXITED = 0x0017,      /* G->H json {code, signal}; ends the stream */
    CAPSA_MSG_EXEC_FAILED = 0x0018, /* G->H json {kind, message}; ends the stream */
    /* fs operation streams */
    CAPSA_MSG_FS_REQUEST = 0x0020, /* H->G json {op, path, ...} */
    CAPSA_MSG_FS_DATA = 0x0021,    /* raw chunk either way; flag EOF ends the data */
    CAPSA_MSG_FS_RESULT = 0x0022,  /* G->H json result; ends the stream */
    /* supervisor control socket only (never on the agent channel), stream 0 */
    CAPSA_MSG_CTL_REQUEST = 0x0030, /* client->supervisor json {op, ...} */
    CAPSA_MSG_CTL_RESULT = 0x0031,  /* supervisor->client json {ok, ...} */
};

enum capsa_frame_flags {
    CAPSA_FRAME_EOF = 0x0001, /* last data frame of this direction */
};

struct capsa_frame_hdr {
    uint32_t len;
    uint32_t stream;
    uint16_t type;
    uint16_t flags;
};

/* Name of a type for logs and errors ("exec.start"), or NULL if unknown. */
const char *capsa_frame_type_name(uint16_t type);

void capsa_frame_hdr_encode(uint8_t out[CAPSA_FRAME_HDR_SIZE], const struct capsa_frame_hdr *h);
/* Decodes and checks the length bound; the type is not checked here (unknown
 * types get an ERROR reply from the receiver, not a dropped connection). */
int capsa_frame_hdr_decode(const uint8_t in[CAPSA_FRAME_HDR_SIZE], struct capsa_frame_hdr *h,
                           capsa_err *err);

/* Incremental reader: feed it whatever read() returned, then pop frames. */
struct capsa_frame_reader {
    uint8_t *buf;
    size_t len, cap, off;
};

void capsa_frame_reader_init(struct capsa_frame_reader *r);
void capsa_frame_reader_free(struct capsa_frame_reader *r);
int capsa_frame_reader_feed(struct capsa_frame_reader *r, const void *data, size_t n,
                            capsa_err *err);
/* 1: a frame is in *h / *payload (valid until the next feed/next call);
 * 0: need more bytes; -1: malformed stream (drop the connection). */
int capsa_frame_reader_next(struct capsa_frame_reader *r, struct capsa_frame_hdr *h,
                            const uint8_t **payload, capsa_err *err);

/* Encode a whole frame into a malloc'd buffer of CAPSA_FRAME_HDR_SIZE + len bytes. */
int capsa_frame_build(uint32_t stream, uint16_t type, uint16_t flags, const void *payload,
                      size_t len, uint8_t **out, size_t *out_len, capsa_err *err);

/* Blocking helpers for simple peers: write all of a frame; read one frame
 * (payload malloc'd, NUL-terminated for convenience, caller frees). */
int capsa_frame_write(int fd, uint32_t stream, uint16_t type, uint16_t flags, const void *payload,
                      size_t len, capsa_err *err);
int capsa_frame_read(int fd, struct capsa_frame_hdr *h, uint8_t **payload, capsa_err *err);

#endif
