/* cleanup.h - GCC cleanup attributes so every resource is released on every path. */
#ifndef CAPSA_COMMON_CLEANUP_H
#define CAPSA_COMMON_CLEANUP_H

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static inline void capsa_freep(void *p)
{
    free(*(void **)p);
}

static inline void capsa_closep(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

static inline void capsa_fclosep(FILE **f)
{
    if (*f)
        fclose(*f);
}

static inline void capsa_closedirp(DIR **d)
{
    if (*d)
        closedir(*d);
}

static inline void capsa_strvfreep(char ***v)
{
    if (*v) {
        for (char **p = *v; *p; p++)
            free(*p);
        free(*v);
    }
}

#define _cleanup_(f)      __attribute__((cleanup(f)))
#define _cleanup_free_    _cleanup_(capsa_freep)
#define _cleanup_close_   _cleanup_(capsa_closep)
#define _cleanup_fclose_  _cleanup_(capsa_fclosep)
#define _cleanup_dir_     _cleanup_(capsa_closedirp)
#define _cleanup_strv_    _cleanup_(capsa_strvfreep)

/* Hand ownership out of a cleanup variable. */
#define steal_pointer(pp)                                                                          \
    ({                                                                                             \
        __typeof__(*(pp)) _v = *(pp);                                                              \
        *(pp) = NULL;                                                                              \
        _v;                                                                                        \
    })
#define steal_fd(fdp)                                                                              \
    ({                                                                                             \
        int _fd = *(fdp);                                                                          \
        *(fdp) = -1;                                                                               \
        _fd;                                                                                       \
    })

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#endif
