/* users.h - resolve "name", "uid", "uid:gid", "name:group" against the guest's own
 * /etc/passwd and /etc/group without NSS (the agent is static), treating both
 * files as hostile: bounded sizes and line lengths, validated numbers. */
#ifndef CAPSA_AGENT_USERS_H
#define CAPSA_AGENT_USERS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "capsa.h"

#define AGENT_USERS_MAX_FILE   (4u << 20) /* larger passwd/group files are rejected */
#define AGENT_USERS_MAX_LINE   4096       /* longer lines are skipped */
#define AGENT_USERS_MAX_GROUPS 256

struct agent_user {
    uid_t uid;
    gid_t gid;
    gid_t groups[AGENT_USERS_MAX_GROUPS]; /* supplementary groups, primary gid included */
    size_t n_groups;
    char name[256]; /* empty for a numeric uid without a passwd entry */
    char home[4097];
};

/* Pure resolution over file contents (either text may be NULL = empty file). */
int agent_user_resolve_text(const char *spec, const char *passwd, size_t passwd_len,
                            const char *group, size_t group_len, struct agent_user *out,
                            capsa_err *err);

/* Reads <root>/etc/passwd and <root>/etc/group (missing files count as empty);
 * root may be "" for the current root. The texts are cached between calls and
 * re-validated with one stat per file (see users.c). */
int agent_user_resolve(const char *spec, const char *root, struct agent_user *out, capsa_err *err);

/* Decimal id 0..4294967294 without sign or spaces. */
bool agent_parse_id(const char *s, size_t n, unsigned int *out);

#endif
