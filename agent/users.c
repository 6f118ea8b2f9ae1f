/* users.c - /etc/passwd and /etc/group parsing without NSS (see users.h). */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/cleanup.h"
#include "common/err.h"
#include "users.h"

bool agent_parse_id(const char *s, size_t n, unsigned int *out)
{
    unsigned long long v = 0;

    if (n == 0 || n > 10)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 4294967294ull) /* (uid_t)-1 means "no change" to the kernel */
        return false;
    *out = (unsigned int)v;
    return true;
}

/* One field of a ':'-separated line. */
struct field {
    const char *p;
    size_t n;
};

/* Split line [p, p+n) into exactly want fields; false if the count differs. */
static bool split_fields(const char *p, size_t n, struct field *f, size_t want)
{
    size_t k = 0;
    const char *start = p, *end = p + n;

    for (const char *c = p; c <= end; c++) {
        if (c == end || *c == ':') {
            if (k == want)
                return false;
            f[k].p = start;
            f[k].n = (size_t)(c - start);
            k++;
            start = c + 1;
        }
    }
    return k == want;
}

static bool field_eq(const struct field *f, const char *s)
{
    return strlen(s) == f->n && memcmp(f->p, s, f->n) == 0;
}

/* Iterate the lines of text: returns false at the end. Lines longer than the
 * limit, and lines with NUL bytes, are skipped. */
static bool next_line(const char **cur, const char *end, const char **line, size_t *len)
{
    while (*cur < end) {
        const char *nl = memchr(*cur, '\n', (size_t)(end - *cur));
        const char *le = nl ? nl : end;
        const char *l = *cur;
        *cur = nl ? nl + 1 : end;
        if ((size_t)(le - l) > AGENT_USERS_MAX_LINE || memchr(l, '\0', (size_t)(le - l)))
            continue;
        if (le > l && le[-1] == '\r')
            le--;
        if (le == l || l[0] == '#')
            continue;
        *line = l;
        *len = (size_t)(le - l);
        return true;
    }
    return false;
}

struct pw_ent {
    struct field f[7]; /* name:passwd:uid:gid:gecos:home:shell */
    unsigned int uid, gid;
};

/* Find a passwd entry by name (name != NULL) or by uid. */
static bool passwd_find(const char *text, size_t len, const char *name, unsigned int uid,
                        struct pw_ent *e)
{
    const char *cur = text, *end = text ? text + len : NULL, *l;
    size_t n;

    if (!text)
        return false;
    while (next_line(&cur, end, &l, &n)) {
        if (!split_fields(l, n, e->f, 7))
            continue;
        if (e->f[0].n == 0 || !agent_parse_id(e->f[2].p, e->f[2].n, &e->uid) ||
            !agent_parse_id(e->f[3].p, e->f[3].n, &e->gid))
            continue;
        if (name ? field_eq(&e->f[0], name) : e->uid == uid)
            return true;
    }
    return false;
}

static bool group_find(const char *text, size_t len, const char *name, unsigned int *gid)
{
    const char *cur = text, *end = text ? text + len : NULL, *l;
    struct field f[4]; /* name:passwd:gid:members */
    size_t n;

    if (!text)
        return false;
    while (next_line(&cur, end, &l, &n)) {
        unsigned int g;
        if (!split_fields(l, n, f, 4) || !agent_parse_id(f[2].p, f[2].n, &g))
            continue;
        if (field_eq(&f[0], name)) {
            *gid = g;
            return true;
        }
    }
    return false;
}

static void add_group(struct agent_user *u, gid_t g)
{
    for (size_t i = 0; i < u->n_groups; i++)
        if (u->groups[i] == g)
            return;
    if (u->n_groups < AGENT_USERS_MAX_GROUPS)
        u->groups[u->n_groups++] = g;
}

/* Every group whose member list names user. */
static void member_groups(const char *text, size_t len, const char *user, struct agent_user *u)
{
    const char *cur = text, *end = text ? text + len : NULL, *l;
    struct field f[4];
    size_t n, ul = strlen(user);

    if (!text || !ul)
        return;
    while (next_line(&cur, end, &l, &n)) {
        unsigned int g;
        if (!split_fields(l, n, f, 4) || !agent_parse_id(f[2].p, f[2].n, &g))
            continue;
        for (const char *m = f[3].p, *mend = f[3].p + f[3].n; m < mend;) {
            const char *c = memchr(m, ',', (size_t)(mend - m));
            const char *me = c ? c : mend;
            if ((size_t)(me - m) == ul && memcmp(m, user, ul) == 0) {
                add_group(u, g);
                break;
            }
            m = c ? c + 1 : mend;
        }
    }
}

static bool all_digits(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}

int agent_user_resolve_text(const char *spec, const char *passwd, size_t passwd_len,
                            const char *group, size_t group_len, struct agent_user *out,
                            capsa_err *err)
{
    char user[256], grp[256];
    const char *colon = strchr(spec, ':');
    size_t ul = colon ? (size_t)(colon - spec) : strlen(spec);
    bool have_group = colon != NULL;
    struct pw_ent e;
    unsigned int id;

    memset(out, 0, sizeof(*out));
    if (ul == 0 || ul >= sizeof(user))
        return capsa_err_set(err, EINVAL,
                             "user \"%.64s\": expected NAME, UID, NAME:GROUP or "
                             "UID:GID",
                             spec);
    memcpy(user, spec, ul);
    user[ul] = '\0';
    if (have_group) {
        size_t gl = strlen(colon + 1);
        if (gl == 0 || gl >= sizeof(grp) || strchr(colon + 1, ':'))
            return capsa_err_set(err, EINVAL,
                                 "user \"%.64s\": the group part is empty or "
                                 "malformed",
                                 spec);
        memcpy(grp, colon + 1, gl + 1);
    }

    if (all_digits(user)) {
        if (!agent_parse_id(user, ul, &id))
            return capsa_err_set(err, EINVAL, "user \"%.64s\": uid out of range", spec);
        out->uid = id;
        if (passwd_find(passwd, passwd_len, NULL, id, &e)) {
            out->gid = e.gid;
            snprintf(out->name, sizeof(out->name), "%.*s", (int)e.f[0].n, e.f[0].p);
            snprintf(out->home, sizeof(out->home), "%.*s", (int)e.f[5].n, e.f[5].p);
        } else {
            out->gid = 0; /* like Docker: a uid without an entry gets group 0 */
        }
    } else {
        if (!passwd_find(passwd, passwd_len, user, 0, &e))
            return capsa_err_set(err, ENOENT, "user \"%.64s\": no such user in /etc/passwd", user);
        out->uid = e.uid;
        out->gid = e.gid;
        snprintf(out->name, sizeof(out->name), "%s", user);
        snprintf(out->home, sizeof(out->home), "%.*s", (int)e.f[5].n, e.f[5].p);
    }

    if (have_group) {
        if (all_digits(grp)) {
            if (!agent_parse_id(grp, strlen(grp), &id))
                return capsa_err_set(err, EINVAL, "user \"%.64s\": gid out of range", spec);
        } else if (!group_find(group, group_len, grp, &id)) {
            return capsa_err_set(err, ENOENT, "group \"%.64s\": no such group in /etc/group", grp);
        }
        out->gid = id;
    }
    if (!out->home[0] || out->home[0] != '/')
        snprintf(out->home, sizeof(out->home), "/");
    add_group(out, out->gid);
    if (out->name[0])
        member_groups(group, group_len, out->name, out);
    return 0;
}

/* Whole file into memory, bounded; a missing file gives NULL with *len 0. st receives the
 * identity of the file that was read (fstat of the open fd). */
static int slurp(const char *path, char **out, size_t *len, struct stat *st, capsa_err *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    _cleanup_free_ char *buf = NULL;
    size_t n = 0, cap;

    *out = NULL;
    *len = 0;
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        return capsa_err_set(err, errno, "open %s: %s", path, strerror(errno));
    }
    if (fstat(fd, st) < 0)
        return capsa_err_set(err, errno, "stat %s: %s", path, strerror(errno));
    if (!S_ISREG(st->st_mode))
        return capsa_err_set(err, EINVAL, "%s: not a regular file", path);
    /* sized by fstat, grown if the file is longer than it said, never past the limit */
    cap = st->st_size >= 0 && (uint64_t)st->st_size < AGENT_USERS_MAX_FILE
              ? (size_t)st->st_size + 1
              : AGENT_USERS_MAX_FILE + 1;
    buf = malloc(cap);
    if (!buf)
        return capsa_err_set(err, ENOMEM, "%s: out of memory", path);
    for (;;) {
        ssize_t r;
        if (n == cap) {
            size_t ncap = cap * 2 > AGENT_USERS_MAX_FILE + 1 ? AGENT_USERS_MAX_FILE + 1 : cap * 2;
            char *nb = realloc(buf, ncap);
            if (!nb)
                return capsa_err_set(err, ENOMEM, "%s: out of memory", path);
            buf = nb;
            cap = ncap;
        }
        r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return capsa_err_set(err, errno, "read %s: %s", path, strerror(errno));
        }
        if (r == 0)
            break;
        n += (size_t)r;
        if (n > AGENT_USERS_MAX_FILE)
            return capsa_err_set(err, EFBIG, "%s: larger than %u bytes", path,
                                 AGENT_USERS_MAX_FILE);
    }
    *out = steal_pointer(&buf);
    *len = n;
    return 0;
}

/* ---- the file cache ----
 * Every exec resolves its user, and reading two files costs several host round trips
 * on a 9p root (and ~0.5 ms even on an overlay root under TCG). So the texts are kept
 * and re-validated with one stat per file: same device, inode, size, mtime and ctime
 * as the copy we read, or we read the file again. Replacing the file (rename, as
 * useradd and sed -i do) changes the inode; editing it in place changes the size or
 * the timestamps, except for an edit of the same size within one timestamp tick: so
 * a copy read less than AGENT_USERS_RACY_SEC after the file's last change is never
 * trusted (it is read again until the file is that old, like git's racy-clean rule). */
#define AGENT_USERS_RACY_SEC 2

struct users_file {
    char path[4200];
    bool cached;  /* text/len below are valid for the identity below */
    bool missing; /* the file did not exist */
    bool racy;    /* read too soon after a change: re-read next time */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
    char *text;
    size_t len;
};

static struct users_file users_cache[2]; /* passwd, group */

static bool same_file(const struct users_file *f, const struct stat *st)
{
    return f->dev == st->st_dev && f->ino == st->st_ino && f->size == st->st_size &&
           f->mtime.tv_sec == st->st_mtim.tv_sec && f->mtime.tv_nsec == st->st_mtim.tv_nsec &&
           f->ctime.tv_sec == st->st_ctim.tv_sec && f->ctime.tv_nsec == st->st_ctim.tv_nsec;
}

static void users_file_drop(struct users_file *f)
{
    free(f->text);
    f->text = NULL;
    f->len = 0;
    f->cached = false;
}

/* The text of path (NULL with len 0 when missing), from the cache when still valid. */
static int users_file_get(struct users_file *f, const char *path, const char **text, size_t *len,
                          capsa_err *err)
{
    struct stat st;
    struct timespec now;
    char *t;
    size_t n;

    if (strcmp(f->path, path) != 0) {
        users_file_drop(f);
        snprintf(f->path, sizeof(f->path), "%s", path);
    }
    if (stat(path, &st) < 0) {
        if (errno != ENOENT)
            return capsa_err_set(err, errno, "stat %s: %s", path, strerror(errno));
        users_file_drop(f);
        f->missing = true;
        *text = NULL;
        *len = 0;
        return 0;
    }
    if (f->cached && !f->missing && !f->racy && same_file(f, &st)) {
        *text = f->text;
        *len = f->len;
        return 0;
    }
    users_file_drop(f);
    memset(&st, 0, sizeof(st));
    if (slurp(path, &t, &n, &st, err) < 0)
        return -1;
    f->missing = t == NULL; /* removed between the stat and the open */
    f->text = t;
    f->len = n;
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    f->size = st.st_size;
    f->mtime = st.st_mtim;
    f->ctime = st.st_ctim;
    clock_gettime(CLOCK_REALTIME, &now);
    f->racy = st.st_mtim.tv_sec > now.tv_sec - AGENT_USERS_RACY_SEC ||
              st.st_ctim.tv_sec > now.tv_sec - AGENT_USERS_RACY_SEC;
    f->cached = !f->missing;
    *text = f->text;
    *len = f->len;
    return 0;
}

int agent_user_resolve(const char *spec, const char *root, struct agent_user *out, capsa_err *err)
{
    const char *pw, *gr;
    char path[4200];
    size_t pwl, grl;

    snprintf(path, sizeof(path), "%s/etc/passwd", root);
    if (users_file_get(&users_cache[0], path, &pw, &pwl, err) < 0)
        return -1;
    snprintf(path, sizeof(path), "%s/etc/group", root);
    if (users_file_get(&users_cache[1], path, &gr, &grl, err) < 0)
        return -1;
    return agent_user_resolve_text(spec, pw, pwl, gr, grl, out, err);
}
