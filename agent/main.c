/* main.c - capsa-agent entry point: PID 1 in the guest, or --serve-fd N on a host.
 *
 * As PID 1 it mounts /proc, /sys and /dev, opens the virtio-serial port named
 * capsa.agent and serves docs/protocol.md on it. With --serve-fd N (the
 * host-testable mode) it skips every mount, treats any boot root as a no-op
 * (keeping boot env/workdir/user as exec defaults) and serves fd N; it exits
 * when the host closes the channel or sends shutdown.
 *
 * Boot failure policy (PID 1): the agent reports `error {code: boot_failed}` and
 * keeps serving ping and shutdown so the host can read the error and stop the
 * VM; exec and fs requests are refused. If the port itself cannot be found the
 * agent logs to the console and powers off.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "common/err.h"
#include "users.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: capsa-agent [--serve-fd N]\n"
               "  As PID 1 in a capsa guest: serve the host on the virtio-serial port "
               "capsa.agent.\n"
               "  --serve-fd N  serve the protocol on fd N without touching mounts "
               "(host tests)\n");
}

/* jansson seeds its hash function from /dev/urandom on first use, which can block
 * for a long time in a fresh VM without an RNG device (no entropy under TCG).
 * Seed it ourselves without ever blocking; the seed only guards against hash
 * flooding, and our JSON comes from bounded host frames. */
static void seed_json(void)
{
    uint32_t seed = 0;
    struct timespec ts;

    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK | GRND_INSECURE) != (ssize_t)sizeof(seed)) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint32_t)ts.tv_nsec ^ (uint32_t)ts.tv_sec << 16 ^ (uint32_t)getpid();
    }
    json_object_seed(seed ? seed : 1);
}

int main(int argc, char **argv)
{
    struct agent a = {0};
    capsa_err err = {0};
    int serve_fd = -1;
    sigset_t mask;

    for (int i = 1; i < argc; i++) {
        unsigned int v;
        if (strcmp(argv[i], "--serve-fd") == 0 && i + 1 < argc) {
            if (!agent_parse_id(argv[i + 1], strlen(argv[i + 1]), &v) || v > 65535) {
                fprintf(stderr, "capsa-agent: --serve-fd: \"%s\" is not a file descriptor\n",
                        argv[i + 1]);
                return 2;
            }
            serve_fd = (int)v;
            i++;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("capsa-agent %s (protocol %d)\n", AGENT_VERSION, CAPSA_PROTO_VERSION);
            return 0;
        } else if (strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    a.pid1 = getpid() == 1 && serve_fd < 0;
    agent_debug = getenv("CAPSA_AGENT_DEBUG") != NULL;
    if (!a.pid1 && serve_fd < 0) {
        fprintf(stderr, "capsa-agent: not PID 1: pass --serve-fd N to serve a host channel\n");
        return 2;
    }
    if (!a.pid1) {
        if (fcntl(serve_fd, F_GETFD) < 0) {
            fprintf(stderr, "capsa-agent: --serve-fd %d: %s\n", serve_fd, strerror(errno));
            return 2;
        }
        /* keep 0-2 occupied so children's dup2 targets never alias our fds */
        for (int i = 0; i < 3; i++)
            if (fcntl(i, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
                return 1;
    }

    seed_json();
    umask(022);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    a.sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (a.sig_fd < 0) {
        fprintf(stderr, "capsa-agent: signalfd: %s\n", strerror(errno));
        if (!a.pid1)
            return 1;
    }

    if (a.pid1) {
        /* boot_ms counts from the kernel's start: CLOCK_MONOTONIC's zero */
        a.t0.tv_sec = 0;
        a.t0.tv_nsec = 0;
        agent_mark("agent");
        a.chan_fd = agent_boot_early(&err);
        agent_mark("port");
        if (a.chan_fd < 0) {
            agent_log("early boot failed: %s", err.msg);
            agent_poweroff(&a);
        }
    } else {
        int fl;
        prctl(PR_SET_CHILD_SUBREAPER, 1); /* orphans come back to us for reaping */
        clock_gettime(CLOCK_MONOTONIC, &a.t0);
        a.chan_fd = serve_fd;
        fl = fcntl(serve_fd, F_GETFL);
        fcntl(serve_fd, F_SETFL, fl | O_NONBLOCK);
        fcntl(serve_fd, F_SETFD, FD_CLOEXEC);
    }
    capsa_frame_reader_init(&a.reader);
    a.state = AGENT_WAIT_BOOT;

    agent_send_json(
        &a, 0, CAPSA_MSG_HELLO,
        json_pack("{s:i, s:s}", "version", CAPSA_PROTO_VERSION, "agent_version", AGENT_VERSION));
    agent_run(&a);

    if (a.pid1)
        agent_poweroff(&a);
    capsa_frame_reader_free(&a.reader);
    agent_buf_free(&a.out);
    agent_boot_free(&a.boot);
    return a.exit_code;
}
