/* modules.c - load the kernel modules the initramfs carries (Debian's fallback kernel).
 *
 * capsa's own kernel has every driver built in and its initramfs has no modules: then
 * /lib/modules/capsa/order does not exist and this costs one failed open(). With Debian's
 * kernel the host puts the needed .ko files and their load order (dependencies first)
 * there (src/vm/initramfs.c); we load each with finit_module(2) before looking for the
 * agent port, which only appears once virtio_mmio and virtio_console are in. The
 * initramfs is the host's, but its contents are still checked: a bounded order file,
 * plain file names only. Each file is unlinked after loading: the initramfs stays in
 * RAM for the VM's lifetime.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "common/cleanup.h"
#include "vm/modname.h"

#define MOD_DIR       "/lib/modules/capsa"
#define MOD_ORDER     MOD_DIR "/order"
#define MOD_ORDER_MAX 8192 /* CAPSA_INITRAMFS_MAX_ORDER_SIZE on the host */
#define MOD_MAX       128  /* CAPSA_INITRAMFS_MAX_MODULES */

static int load_one(const char *name)
{
    char path[sizeof(MOD_DIR) + 64];
    _cleanup_close_ int fd = -1;

    snprintf(path, sizeof(path), "%s/%s", MOD_DIR, name);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        agent_log("module %s: open: %s", name, strerror(errno));
        return -1;
    }
    if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST) {
        agent_log("module %s: finit_module: %s", name, strerror(errno));
        return -1;
    }
    unlink(path);
    return 0;
}

/* The kernel could not open a console for PID 1 before virtio_console was loaded, so
 * ensure_console() filled the free fds among 0-2 with /dev/null: now that hvc0 exists, put
 * the console there instead. Only /dev/null fds are replaced: with no console at all the
 * agent's first fds (its signalfd) took numbers below 3 and must stay. */
static void console_again(void)
{
    int fd = -1;

    for (int i = 0; i < 3; i++) {
        struct stat st;
        if (fstat(i, &st) < 0 || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(1, 3))
            continue;
        if (fd < 0)
            fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
        if (fd < 0)
            return;
        dup2(fd, i);
    }
    if (fd >= 0)
        close(fd);
}

int agent_modules_load(void)
{
    _cleanup_close_ int fd = open(MOD_ORDER, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    char buf[MOD_ORDER_MAX + 1];
    struct timespec t0, t1;
    size_t len = 0;
    int loaded = 0, failed = 0, count = 0;

    if (fd < 0)
        return 0; /* capsa's kernel: nothing to load */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            agent_log("%s: read: %s", MOD_ORDER, strerror(errno));
            return -1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len > MOD_ORDER_MAX) {
            agent_log("%s: larger than %d bytes; loading no module", MOD_ORDER, MOD_ORDER_MAX);
            return -1;
        }
    }
    buf[len] = '\0';
    for (char *p = buf, *end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

        if (n > 0) {
            p[n] = '\0';
            if (!capsa_module_name_ok(p, n)) {
                agent_log("%s: skipping an invalid module name", MOD_ORDER);
                failed++;
            } else if (++count > MOD_MAX) {
                agent_log("%s: more than %d modules; ignoring the rest", MOD_ORDER, MOD_MAX);
                break;
            } else if (load_one(p) == 0) {
                loaded++;
            } else {
                failed++;
            }
        }
        p += n + 1;
    }
    unlink(MOD_ORDER);
    console_again();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    agent_dbg("modules: %d loaded, %d failed in %ld ms", loaded, failed,
              (long)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
    return loaded;
}
