/* paths.c - $CAPSA_HOME layout helpers, mkdir -p and a careful rm -rf. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "paths.h"

int capsa_home(char *buf, size_t len, capsa_err *err)
{
    const char *h = getenv("CAPSA_HOME");
    int n;

    if (h && *h) {
        if (h[0] != '/')
            return capsa_err_set(err, EINVAL, "CAPSA_HOME=%s: must be an absolute path", h);
        n = snprintf(buf, len, "%s", h);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd *pw = getpwuid(getuid());
            if (!pw)
                return capsa_err_set(err, ENOENT, "cannot find a home directory: set CAPSA_HOME");
            home = pw->pw_dir;
        }
        n = snprintf(buf, len, "%s/.capsa", home);
    }
    if (n < 0 || (size_t)n >= len)
        return capsa_err_set(err, ENAMETOOLONG, "CAPSA_HOME path too long");
    return 0;
}

int capsa_path(char *buf, size_t len, capsa_err *err, const char *fmt, ...)
{
    char home[4096], rel[4096];
    va_list ap;
    int n;

    if (capsa_home(home, sizeof(home), err) < 0)
        return -1;
    va_start(ap, fmt);
    n = vsnprintf(rel, sizeof(rel), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(rel))
        return capsa_err_set(err, ENAMETOOLONG, "path under CAPSA_HOME too long");
    n = snprintf(buf, len, "%s/%s", home, rel);
    if (n < 0 || (size_t)n >= len)
        return capsa_err_set(err, ENAMETOOLONG, "path %s/%s too long", home, rel);
    return 0;
}

int capsa_mkdir_p(const char *path, mode_t mode, capsa_err *err)
{
    char tmp[4096];
    size_t n = strlen(path);

    if (n == 0 || n >= sizeof(tmp))
        return capsa_err_set(err, ENAMETOOLONG, "mkdir %s: bad path length", path);
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(tmp, mode) < 0 && errno != EEXIST)
                return capsa_err_set(err, errno, "mkdir %s: %s", tmp, strerror(errno));
            *p = c;
            if (c == '\0')
                break;
        }
    }
    return 0;
}

static int rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(p) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(p) < 0 && errno != ENOENT ? -1 : 0;
}

int capsa_rm_rf(const char *path, capsa_err *err)
{
    struct stat st;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return capsa_err_set(err, errno, "remove %s: %s", path, strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlink(path) < 0 && errno != ENOENT)
            return capsa_err_set(err, errno, "remove %s: %s", path, strerror(errno));
        return 0;
    }
    if (nftw(path, rm_cb, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
        return capsa_err_set(err, errno, "remove %s: %s", path, strerror(errno));
    return 0;
}

int capsa_copy_file(const char *from, const char *to, mode_t mode, capsa_err *err)
{
    char tmp[4200], buf[65536];
    int in, out, e = 0;
    ssize_t n;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp", to) >= (int)sizeof(tmp))
        return capsa_err_set(err, ENAMETOOLONG, "%s: path too long", to);
    in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return capsa_err_set(err, errno, "%s: %s", from, strerror(errno));
    out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (out < 0) {
        e = errno;
        close(in);
        return capsa_err_set(err, e, "%s: %s", tmp, strerror(e));
    }
    while ((n = read(in, buf, sizeof(buf))) != 0) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            e = errno;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(out, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w < 0) {
                e = errno;
                break;
            }
            off += w;
        }
        if (e)
            break;
    }
    close(in);
    if (!e && fsync(out) < 0)
        e = errno;
    if (close(out) < 0 && !e)
        e = errno;
    if (!e && rename(tmp, to) < 0)
        e = errno;
    if (e) {
        unlink(tmp);
        return capsa_err_set(err, e, "copy %s to %s: %s", from, to, strerror(e));
    }
    return 0;
}
