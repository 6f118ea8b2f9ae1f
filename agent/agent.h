/* agent.h - capsa-agent internals: the channel, streams (exec sessions, fs ops), boot.
 *
 * Theory of operation: one thread, one poll() loop (loop.c). The channel to the
 * host (virtio-serial port, or --serve-fd N in host-test mode) is non-blocking;
 * everything we send is queued in a.out and flushed when the channel is
 * writable. Back-pressure: while a.out holds more than AGENT_OUT_HIGH bytes we
 * stop reading children's pipes and stop producing fs.read chunks; while the
 * children's stdin queues hold more than AGENT_STDIN_HIGH bytes we stop reading
 * the channel. SIGCHLD arrives through a signalfd; every child (and, as PID 1,
 * every orphan) is reaped there. A session reports exec.exited only when its
 * process was reaped AND its stdout/stderr reached EOF.
 */
#ifndef CAPSA_AGENT_AGENT_H
#define CAPSA_AGENT_AGENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "capsa.h"
#include "msg.h"
#include "proto/frame.h"

#define AGENT_VERSION      "0.1.0"
#define AGENT_OUT_HIGH     (2u << 20)  /* stop producing output above this */
#define AGENT_STDIN_HIGH   (8u << 20)  /* stop reading the channel above this */
#define AGENT_OUT_MAX      (16u << 20) /* a host that never reads: stop reading it */
#define AGENT_READ_CHUNK   (64u << 10) /* child output per frame */
#define AGENT_FS_CHUNK     (256u << 10)
#define AGENT_MAX_STREAMS  1024
#define AGENT_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Growable byte queue. */
struct agent_buf {
    uint8_t *data;
    size_t off, len, cap; /* pending bytes are data[off..len) */
};

int agent_buf_append(struct agent_buf *b, const void *p, size_t n);
size_t agent_buf_pending(const struct agent_buf *b);
void agent_buf_consume(struct agent_buf *b, size_t n);
void agent_buf_free(struct agent_buf *b);

enum agent_stream_kind {
    AGENT_STREAM_EXEC,
    AGENT_STREAM_FS_READ,
    AGENT_STREAM_FS_WRITE,
};

struct agent_stream {
    struct agent_stream *next;
    uint32_t id;
    enum agent_stream_kind kind;
    bool dead; /* finished; freed at the end of the loop iteration */

    /* exec */
    pid_t pid;
    bool reaped;
    bool first; /* the VM's first command: its steps extend the boot timeline */
    int status;
    bool tty;
    int out_fd;   /* stdout pipe, or the PTY master */
    int err_fd;   /* stderr pipe; -1 for a PTY */
    int in_fd;    /* stdin pipe; for a PTY the master again (dup) */
    bool pty_eof; /* the PTY master reported EOF/EIO; it stays open until the reap,
                     since closing it would SIGHUP a session leader still exiting */
    struct agent_buf in;
    bool in_eof; /* host closed stdin: close in_fd once in is drained */

    /* fs read / write */
    int fd;
    uint64_t size;
    bool failed; /* write failed: discard data until the host's EOF */
};

enum agent_state {
    AGENT_WAIT_BOOT,
    AGENT_READY,
    AGENT_BOOT_FAILED,
};

struct agent {
    int chan_fd;
    bool pid1;     /* real VM: mounts, pivot, power-off */
    bool chan_hup; /* host side not connected (virtio-serial) */
    bool quit;     /* host-test mode: leave the loop */
    int exit_code; /* host-test mode: 1 after a broken channel */
    struct capsa_frame_reader reader;
    struct agent_buf out;
    enum agent_state state;
    struct agent_boot boot; /* env, workdir, user defaults for exec */
    int sig_fd;
    struct agent_stream *streams;
    size_t n_streams;
    struct timespec t0; /* agent start, for boot_ms */
};

/* Boot timeline: agent_mark(name) records the time since the kernel started (CLOCK_MONOTONIC)
 * under a static name; READY reports the marks as {"marks_us": {name: us}}. */
void agent_mark(const char *name);
json_t *agent_marks_json(void);

/* loop.c */
int agent_send(struct agent *a, uint32_t stream, uint16_t type, uint16_t flags, const void *p,
               size_t n);
/* Sends and releases j. */
int agent_send_json(struct agent *a, uint32_t stream, uint16_t type, json_t *j);
void agent_send_error(struct agent *a, uint32_t stream, const char *code, int errnum,
                      const char *fmt, ...) __attribute__((format(printf, 5, 6)));
struct agent_stream *agent_stream_new(struct agent *a, uint32_t id, enum agent_stream_kind kind);
struct agent_stream *agent_stream_find(struct agent *a, uint32_t id);
int agent_run(struct agent *a);
void agent_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Set from CAPSA_AGENT_DEBUG (a kernel command line KEY=VALUE reaches PID 1's env). */
extern bool agent_debug;
#define agent_dbg(...)                                                                             \
    do {                                                                                           \
        if (agent_debug)                                                                           \
            agent_log(__VA_ARGS__);                                                                \
    } while (0)

/* exec.c */
void agent_exec_start(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
void agent_exec_stdin(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n,
                      bool eof);
void agent_exec_signal(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n);
void agent_exec_resize(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n);
/* Reads available output (respecting back-pressure), writes queued stdin. */
void agent_exec_pump_out(struct agent *a, struct agent_stream *s, int fd);
void agent_exec_pump_in(struct agent *a, struct agent_stream *s);
/* Sends exec.exited when the process is reaped and its output is drained. */
void agent_exec_check_done(struct agent *a, struct agent_stream *s);
void agent_exec_close(struct agent_stream *s);
/* Kill every session's process group (host-test shutdown). */
void agent_exec_kill_all(struct agent *a, int sig);

/* fs.c */
void agent_fs_request(struct agent *a, uint32_t id, const uint8_t *p, size_t n);
void agent_fs_data(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n, bool eof);
/* Produces the next fs.read chunk when the channel has room. */
void agent_fs_pump_read(struct agent *a, struct agent_stream *s);
void agent_fs_close(struct agent_stream *s);

/* modules.c */
/* Load /lib/modules/capsa/<name> in the order of /lib/modules/capsa/order (finit_module;
 * EEXIST is fine). Returns how many loaded, 0 when there is no order file, -1 when it is
 * unreadable or too large. PID 1 only, before the agent port is opened. */
int agent_modules_load(void);

/* boot.c */
/* PID 1 early set-up: /proc, /sys, /dev, console; returns the channel fd. */
int agent_boot_early(capsa_err *err);
/* Apply a parsed boot config (mounts and pivot only when a->pid1). */
int agent_boot_apply(struct agent *a, const struct agent_boot *b, capsa_err *err);
/* Kill everything, sync, unmount, power off (PID 1 only; never returns). */
void agent_poweroff(struct agent *a) __attribute__((noreturn));

#endif
