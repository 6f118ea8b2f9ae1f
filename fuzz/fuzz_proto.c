/* fuzz_proto.c - libFuzzer target: arbitrary bytes through the frame reader and
 * the agent's request parsers (boot, exec.start, fs.request, signal, resize) and
 * its /etc/passwd + /etc/group resolver. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../agent/msg.h"
#include "../agent/users.h"
#include "common/err.h"
#include "proto/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void parse_payload(uint16_t type, const uint8_t *p, size_t n)
{
    capsa_err err = {0};

    switch (type) {
    case CAPSA_MSG_BOOT: {
        struct agent_boot b;
        if (agent_parse_boot(p, n, &b, &err) == 0)
            agent_boot_free(&b);
        break;
    }
    case CAPSA_MSG_EXEC_START: {
        struct agent_exec_req r;
        if (agent_parse_exec_start(p, n, &r, &err) == 0) {
            agent_strv env = calloc(1, sizeof(char *));
            for (size_t i = 0; env && r.env[i]; i++)
                agent_env_set(&env, r.env[i], &err);
            agent_env_get(env, "PATH");
            agent_strv_free(env);
            agent_exec_req_free(&r);
        }
        break;
    }
    case CAPSA_MSG_FS_REQUEST: {
        struct agent_fs_req r;
        if (agent_parse_fs_request(p, n, &r, &err) == 0)
            agent_fs_req_free(&r);
        break;
    }
    case CAPSA_MSG_SIGNAL: {
        int sig;
        agent_parse_signal(p, n, &sig, &err);
        break;
    }
    case CAPSA_MSG_RESIZE: {
        unsigned short r, c;
        agent_parse_resize(p, n, &r, &c, &err);
        break;
    }
    default:
        agent_parse_object(p, n, &err);
    }
}

/* Input layout: the first byte picks a mode. 0: a frame stream; 1: a user spec,
 * passwd and group texts separated by NUL bytes; otherwise each parser in turn on
 * the raw remainder. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    capsa_err err = {0};

    if (size == 0)
        return 0;
    if (data[0] == 0) {
        struct capsa_frame_reader r;
        struct capsa_frame_hdr h;
        const uint8_t *p;
        int rc;

        capsa_frame_reader_init(&r);
        /* feed in two pieces to exercise partial frames */
        size_t half = (size - 1) / 2;
        if (capsa_frame_reader_feed(&r, data + 1, half, &err) == 0) {
            while ((rc = capsa_frame_reader_next(&r, &h, &p, &err)) > 0)
                parse_payload(h.type, p, h.len);
            if (rc == 0 && capsa_frame_reader_feed(&r, data + 1 + half, size - 1 - half, &err) == 0)
                while (capsa_frame_reader_next(&r, &h, &p, &err) > 0)
                    parse_payload(h.type, p, h.len);
        }
        capsa_frame_reader_free(&r);
    } else if (data[0] == 1) {
        char *copy = malloc(size);
        const char *spec, *pw, *gr;
        size_t pwl = 0, grl = 0;
        struct agent_user u;

        if (!copy)
            return 0;
        memcpy(copy, data + 1, size - 1);
        copy[size - 1] = '\0';
        spec = copy;
        pw = memchr(copy, '\0', size) + 1;
        gr = NULL;
        if (pw < copy + size) {
            const char *z = memchr(pw, '\0', (size_t)(copy + size - pw));
            pwl = (size_t)(z - pw);
            gr = z + 1 < copy + size ? z + 1 : NULL;
            if (gr)
                grl = size - 1 - (size_t)(gr - copy);
        } else {
            pw = NULL;
        }
        agent_user_resolve_text(spec, pw, pwl, gr, grl, &u, &err);
        free(copy);
    } else {
        char *s = malloc(size);
        static const uint16_t types[] = {CAPSA_MSG_BOOT,       CAPSA_MSG_EXEC_START,
                                         CAPSA_MSG_FS_REQUEST, CAPSA_MSG_SIGNAL,
                                         CAPSA_MSG_RESIZE,     CAPSA_MSG_PING};
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            parse_payload(types[i], data + 1, size - 1);
        if (s) {
            memcpy(s, data + 1, size - 1);
            s[size - 1] = '\0';
            agent_utf8_fix(s);
            free(s);
        }
    }
    return 0;
}
