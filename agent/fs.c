/* fs.c - fs.request operations: read (streamed), write (streamed), list, stat,
 * mkdir -p, remove (optionally recursive), rename. Failures end the stream with
 * an `error` frame whose code is derived from errno (see docs/protocol.md). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "common/cleanup.h"
#include "common/err.h"

/* list replies stop growing here so the fs.result frame stays under 1 MiB */
#define LIST_BUDGET (768u << 10)

static const char *errno_code(int e)
{
    switch (e) {
    case ENOENT:
        return "not_found";
    case EACCES:
    case EPERM:
    case EROFS:
        return "permission_denied";
    case EEXIST:
        return "exists";
    case ENOTDIR:
        return "not_a_directory";
    case EISDIR:
        return "is_a_directory";
    case ENOTEMPTY:
        return "not_empty";
    case EINVAL:
    case ENAMETOOLONG:
    case ELOOP:
    case EXDEV:
    case EBUSY:
        return "invalid";
    default:
        return "io";
    }
}

static void fs_fail(struct agent *a, uint32_t id, int e, const char *what, const char *path)
{
    agent_send_error(a, id, errno_code(e), e, "%s %s: %s", what, path, strerror(e));
}

static const char *kind_of(mode_t m)
{
    if (S_ISREG(m))
        return "file";
    if (S_ISDIR(m))
        return "dir";
    if (S_ISLNK(m))
        return "symlink";
    return "other";
}

/* Open for the streamed ops without ever blocking on a FIFO, then insist on a
 * regular file. */
static int open_regular(const char *path, int flags, mode_t mode, int *out_errno)
{
    _cleanup_close_ int fd = open(path, flags | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, mode);
    struct stat st;
    int fl;

    if (fd < 0) {
        *out_errno = errno == ENXIO ? EINVAL : errno;
        return -1;
    }
    if (fstat(fd, &st) < 0) {
        *out_errno = errno;
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        *out_errno = EISDIR;
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        *out_errno = EINVAL;
        return -1;
    }
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
        *out_errno = errno;
        return -1;
    }
    return steal_fd(&fd);
}

static void op_read(struct agent *a, uint32_t id, const struct agent_fs_req *r)
{
    struct agent_stream *s;
    int e = 0, fd = open_regular(r->path, O_RDONLY, 0, &e);

    if (fd < 0) {
        fs_fail(a, id, e, "read", r->path);
        return;
    }
    s = agent_stream_new(a, id, AGENT_STREAM_FS_READ);
    if (!s) {
        close(fd);
        agent_send_error(a, id, "io", ENOMEM, "read %s: too many open streams", r->path);
        return;
    }
    s->fd = fd;
}

void agent_fs_pump_read(struct agent *a, struct agent_stream *s)
{
    static uint8_t buf[AGENT_FS_CHUNK];
    ssize_t n;

    do
        n = read(s->fd, buf, sizeof(buf));
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        agent_send_error(a, s->id, errno_code(errno), errno, "read: %s", strerror(errno));
        s->dead = true;
        return;
    }
    if (n > 0) {
        agent_send(a, s->id, CAPSA_MSG_FS_DATA, 0, buf, (size_t)n);
        s->size += (uint64_t)n;
        return;
    }
    agent_send(a, s->id, CAPSA_MSG_FS_DATA, CAPSA_FRAME_EOF, NULL, 0);
    agent_send_json(a, s->id, CAPSA_MSG_FS_RESULT, json_pack("{s:I}", "size", (json_int_t)s->size));
    s->dead = true;
}

static void op_write(struct agent *a, uint32_t id, const struct agent_fs_req *r)
{
    struct agent_stream *s;
    int e = 0, fd;

    fd = open_regular(r->path, O_WRONLY | O_CREAT | (r->append ? O_APPEND : O_TRUNC), r->mode, &e);
    if (fd < 0) {
        fs_fail(a, id, e, "write", r->path);
        return;
    }
    if (r->mode_set && fchmod(fd, r->mode) < 0) {
        e = errno;
        close(fd);
        fs_fail(a, id, e, "chmod", r->path);
        return;
    }
    s = agent_stream_new(a, id, AGENT_STREAM_FS_WRITE);
    if (!s) {
        close(fd);
        agent_send_error(a, id, "io", ENOMEM, "write %s: too many open streams", r->path);
        return;
    }
    s->fd = fd;
}

void agent_fs_data(struct agent *a, struct agent_stream *s, const uint8_t *p, size_t n, bool eof)
{
    while (!s->failed && n > 0) {
        ssize_t w = write(s->fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            agent_send_error(a, s->id, errno_code(errno), errno, "write: %s", strerror(errno));
            s->failed = true; /* discard the rest until the host's EOF */
            break;
        }
        p += w;
        n -= (size_t)w;
        s->size += (uint64_t)w;
    }
    if (!eof)
        return;
    s->dead = true;
    if (s->failed)
        return;
    /* a 9p root caches file data (cache=loose, boot.c): write it back to the host now */
    if (a->pid1 && a->boot.root_kind == AGENT_ROOT_9P && fdatasync(s->fd) < 0 && errno != EINVAL &&
        errno != EROFS) {
        agent_send_error(a, s->id, errno_code(errno), errno, "write: sync: %s", strerror(errno));
        return;
    }
    if (close(s->fd) < 0) {
        s->fd = -1;
        agent_send_error(a, s->id, errno_code(errno), errno, "write: close: %s", strerror(errno));
        return;
    }
    s->fd = -1;
    agent_send_json(a, s->id, CAPSA_MSG_FS_RESULT, json_pack("{s:I}", "size", (json_int_t)s->size));
}

void agent_fs_close(struct agent_stream *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

static json_t *stat_json(const struct stat *st, bool owner)
{
    json_t *j = json_pack("{s:s, s:I, s:i, s:I}", "kind", kind_of(st->st_mode), "size",
                          (json_int_t)st->st_size, "mode", (int)(st->st_mode & 07777), "mtime",
                          (json_int_t)st->st_mtim.tv_sec);
    if (j && owner) {
        json_object_set_new(j, "uid", json_integer(st->st_uid));
        json_object_set_new(j, "gid", json_integer(st->st_gid));
    }
    return j;
}

static void op_stat(struct agent *a, uint32_t id, const struct agent_fs_req *r)
{
    struct stat st;

    if ((r->follow ? stat(r->path, &st) : lstat(r->path, &st)) < 0) {
        fs_fail(a, id, errno, "stat", r->path);
        return;
    }
    agent_send_json(a, id, CAPSA_MSG_FS_RESULT, stat_json(&st, true));
}

static int cmp_name(const void *x, const void *y)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)x, "name")),
                  json_string_value(json_object_get(*(json_t *const *)y, "name")));
}

static void op_list(struct agent *a, uint32_t id, const struct agent_fs_req *r)
{
    _cleanup_dir_ DIR *d = opendir(r->path);
    json_t **ents = NULL, *arr, *res;
    size_t n = 0, cap = 0, budget = 0;
    bool truncated = false;
    struct dirent *de;

    if (!d) {
        fs_fail(a, id, errno, "list", r->path);
        return;
    }
    for (;;) {
        struct stat st;
        char name[sizeof(de->d_name)];
        json_t *e;

        errno = 0;
        de = readdir(d);
        if (!de) {
            if (errno) {
                int err = errno;
                for (size_t i = 0; i < n; i++)
                    json_decref(ents[i]);
                free(ents);
                fs_fail(a, id, err, "list", r->path);
                return;
            }
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        if (budget + strlen(de->d_name) * 6 + 128 > LIST_BUDGET) {
            truncated = true;
            break;
        }
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* raced with a removal */
        snprintf(name, sizeof(name), "%s", de->d_name);
        agent_utf8_fix(name);
        e = stat_json(&st, false);
        if (!e)
            continue;
        json_object_set_new(e, "name", json_string(name));
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            json_t **ne = realloc(ents, nc * sizeof(*ents));
            if (!ne) {
                json_decref(e);
                truncated = true;
                break;
            }
            ents = ne;
            cap = nc;
        }
        ents[n++] = e;
        budget += strlen(name) * 6 + 128;
    }
    if (n)
        qsort(ents, n, sizeof(*ents), cmp_name);
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, ents[i]);
    free(ents);
    res = json_pack("{s:o}", "entries", arr);
    if (res && truncated)
        json_object_set_new(res, "truncated", json_true());
    agent_send_json(a, id, CAPSA_MSG_FS_RESULT, res);
}

static void op_mkdir(struct agent *a, uint32_t id, const struct agent_fs_req *r)
{
    char buf[AGENT_MAX_PATH + 1];
    size_t len = strlen(r->path);
    struct stat st;

    memcpy(buf, r->path, len + 1);
    while (len > 1 && buf[len - 1] == '/')
        buf[--len] = '\0';
    for (char *p = buf + 1;; p++) {
        bool last = *p == '\0';
        if (*p != '/' && !last)
            continue;
        if (p > buf && p[-1] == '/') { /* "//" */
            if (last)
                break;
            continue;
        }
        *p = '\0';
        if (mkdir(buf, r->mode) < 0) {
            int e = errno;
            if (e != EEXIST || stat(buf, &st) < 0) {
                fs_fail(a, id, e, "mkdir", buf);
                return;
            }
            if (!S_ISDIR(st.st_mode)) {
                fs_fail(a, id, last ? EEXIST : ENOTDIR, "mkdir", buf);
                return;
            }
        } else if (r->mode_set && chmod(buf, r->mode) < 0) { /* umask-free mode */
            fs_fail(a, id, errno, "chmod", buf);
            return;
        }
        if (last)
            break;
        *p = '/';
    }
    agent_send(a, id, CAPSA_MSG_FS_RESULT, 0, "{}", 2);
}

static int rm_errno;
static char rm_path[AGENT_MAX_PATH + 1];

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    int rc;

    if (flag == FTW_DNR || flag == FTW_NS) {
        rm_errno = flag == FTW_NS ? errno : EACCES;
        snprintf(rm_path, sizeof(rm_path), "%s", p);
        return 1;
    }
    rc = flag == FTW_DP ? rmdir(p) : unlink(p);
    if (rc < 0) {
        rm_errno = errno;
        snprintf(rm_path, sizeof(rm_path), "%s", p);
        return 1;
    }
    return 0;
}

static void op_remove(struct agent *a, uint32_t id, const struct agent_fs_req *r)
{
    struct stat st;

    if (strcmp(r->path, "/") == 0) {
        agent_send_error(a, id, "invalid", EINVAL, "remove /: refusing to remove the root");
        return;
    }
    if (lstat(r->path, &st) < 0) {
        fs_fail(a, id, errno, "remove", r->path);
        return;
    }
    if (S_ISDIR(st.st_mode) && r->recursive) {
        rm_errno = 0;
        /* FTW_MOUNT: never descend into other file systems (/proc, volumes) */
        int rc = nftw(r->path, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
        if (rc != 0) {
            if (rm_errno)
                fs_fail(a, id, rm_errno, "remove", rm_path);
            else
                fs_fail(a, id, errno, "remove", r->path);
            return;
        }
    } else if ((S_ISDIR(st.st_mode) ? rmdir(r->path) : unlink(r->path)) < 0) {
        fs_fail(a, id, errno, "remove", r->path);
        return;
    }
    agent_send(a, id, CAPSA_MSG_FS_RESULT, 0, "{}", 2);
}

static void op_rename(struct agent *a, uint32_t id, const struct agent_fs_req *r)
{
    if (rename(r->path, r->to) < 0) {
        agent_send_error(a, id, errno_code(errno), errno, "rename %s to %s: %s", r->path, r->to,
                         strerror(errno));
        return;
    }
    agent_send(a, id, CAPSA_MSG_FS_RESULT, 0, "{}", 2);
}

void agent_fs_request(struct agent *a, uint32_t id, const uint8_t *p, size_t n)
{
    struct agent_fs_req r;
    capsa_err err = {0};

    if (agent_parse_fs_request(p, n, &r, &err) < 0) {
        if (err.code == EBADMSG)
            agent_send_error(a, id, "bad_frame", 0, "fs.request: %s", err.msg);
        else
            agent_send_error(a, id, "invalid", EINVAL, "%s", err.msg);
        return;
    }
    switch (r.op) {
    case AGENT_FS_READ:
        op_read(a, id, &r);
        break;
    case AGENT_FS_WRITE:
        op_write(a, id, &r);
        break;
    case AGENT_FS_LIST:
        op_list(a, id, &r);
        break;
    case AGENT_FS_STAT:
        op_stat(a, id, &r);
        break;
    case AGENT_FS_MKDIR:
        op_mkdir(a, id, &r);
        break;
    case AGENT_FS_REMOVE:
        op_remove(a, id, &r);
        break;
    case AGENT_FS_RENAME:
        op_rename(a, id, &r);
        break;
    }
    agent_fs_req_free(&r);
}
