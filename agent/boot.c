/* boot.c - PID 1 duties: early mounts, the agent port, the root switch, hostname,
 * clock and extra 9p mounts; and the final power-off.
 *
 * The initramfs root cannot be pivot_root'ed away from, so the switch is done
 * the way switch_root does it: mount the new root at /newroot, move /proc, /sys
 * and /dev into it, MS_MOVE it over / and chroot into it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "disk.h"
#include "common/cleanup.h"
#include "common/err.h"

#define PORT_NAME "capsa.agent"
#define NEWROOT   "/newroot"
/* Shared folders: cache=mmap, so host and guest see each other's changes at once
 * (every lookup and write is a round trip to QEMU). The root of a directory-rooted
 * sandbox: cache=loose, so lookups, attributes and file pages stay cached in the
 * guest (an exec of a cached binary costs no reads); writes are written back by the
 * kernel and exec.c syncs them before each exec.exited, and changes made on the host
 * under a running sandbox may not be seen by it (see docs/run.md). */
#define P9_OPTS      "trans=virtio,version=9p2000.L,msize=524288,cache=mmap"
#define P9_OPTS_ROOT "trans=virtio,version=9p2000.L,msize=524288,cache=loose"
#define P9_OPTS_NC   "trans=virtio,version=9p2000.L,msize=524288"

static int mkdir_p(const char *path, mode_t mode)
{
    char buf[AGENT_MAX_PATH + 1];
    size_t len = strlen(path);

    if (len > AGENT_MAX_PATH) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, mode) < 0 && errno != EEXIST)
                return -1;
            if (c == '\0')
                break;
            *p = c;
        }
    }
    return 0;
}

static int do_mount(const char *src, const char *target, const char *fstype, unsigned long flags,
                    const char *data, capsa_err *err)
{
    if (mkdir_p(target, 0755) < 0)
        return capsa_err_set(err, errno, "mkdir %s: %s", target, strerror(errno));
    if (mount(src, target, fstype, flags, data) < 0)
        return capsa_err_set(err, errno, "mount %s on %s (%s): %s", src, target, fstype,
                             strerror(errno));
    return 0;
}

/* Make sure fds 0-2 exist: the console if the kernel could not give us one. */
static void ensure_console(void)
{
    int fd = -1;

    for (int i = 0; i < 3; i++) {
        if (fcntl(i, F_GETFD) >= 0)
            continue;
        if (fd < 0)
            fd = open("/dev/console", O_RDWR | O_NOCTTY);
        if (fd < 0)
            fd = open("/dev/null", O_RDWR | O_NOCTTY);
        if (fd < 0)
            return;
        if (fd != i)
            dup2(fd, i);
    }
    if (fd > 2)
        close(fd);
}

/* /dev/<vportNpM> for the port named capsa.agent; creates the node if needed. */
static int open_port(capsa_err *err)
{
    _cleanup_dir_ DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *de;

    if (!d)
        return capsa_err_set(err, errno, "/sys/class/virtio-ports: %s", strerror(errno));
    while ((de = readdir(d))) {
        char path[512], name[64] = "", dev[64];
        _cleanup_fclose_ FILE *f = NULL;
        unsigned int maj, min;
        int fd;

        if (de->d_name[0] == '.' || strlen(de->d_name) > 64)
            continue;
        snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", de->d_name);
        f = fopen(path, "re");
        if (!f || !fgets(name, sizeof(name), f))
            continue;
        name[strcspn(name, "\n")] = '\0';
        if (strcmp(name, PORT_NAME) != 0)
            continue;
        snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
        fd = open(dev, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0 && errno == ENOENT) {
            _cleanup_fclose_ FILE *df = NULL;
            snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/dev", de->d_name);
            df = fopen(path, "re");
            if (df && fscanf(df, "%u:%u", &maj, &min) == 2 &&
                mknod(dev, S_IFCHR | 0600, makedev(maj, min)) == 0)
                fd = open(dev, O_RDWR | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        }
        if (fd < 0)
            return capsa_err_set(err, errno, "open %s: %s", dev, strerror(errno));
        return fd;
    }
    return capsa_err_set(err, ENOENT, "no virtio-serial port named %s", PORT_NAME);
}

int agent_boot_early(capsa_err *err)
{
    int fd = -1;

    mkdir("/proc", 0555);
    mkdir("/sys", 0555);
    mkdir("/dev", 0755);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 &&
        errno != EBUSY)
        return capsa_err_set(err, errno, "mount /proc: %s", strerror(errno));
    if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0 &&
        errno != EBUSY)
        return capsa_err_set(err, errno, "mount /sys: %s", strerror(errno));
    if (mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755") < 0 && errno != EBUSY)
        return capsa_err_set(err, errno, "mount /dev: %s", strerror(errno));
    ensure_console();
    /* virtio probing is done before init runs, but be lenient: up to 5 s (20 s after
     * loading modules: the port's name arrives asynchronously, under TCG) */
    for (int i = 0, n = agent_modules_load() > 0 ? 400 : 100; i < n; i++) {
        fd = open_port(err);
        if (fd >= 0) {
            agent_dbg("agent port open as fd %d", fd);
            return fd;
        }
        agent_dbg("agent port: %s", err->msg);
        poll(NULL, 0, 50);
    }
    return -1;
}

/* /dev/pts, /dev/shm, /run, /tmp under prefix ("" or NEWROOT). */
static int mount_runtime(const char *prefix, capsa_err *err)
{
    static const struct {
        const char *src, *dir, *type, *opts;
        unsigned long flags;
    } m[] = {
        {"devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=0620,gid=5",
         MS_NOSUID | MS_NOEXEC},
        {"shm", "/dev/shm", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV},
        {"run", "/run", "tmpfs", "mode=0755", MS_NOSUID | MS_NODEV},
        {"tmp", "/tmp", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV},
    };
    char path[256];

    for (size_t i = 0; i < ARRAY_SIZE(m); i++) {
        snprintf(path, sizeof(path), "%s%s", prefix, m[i].dir);
        if (do_mount(m[i].src, path, m[i].type, m[i].flags, m[i].opts, err) < 0) {
            /* older kernels want devpts without gid= when group 5 is unknown */
            if (i == 0 &&
                mount(m[i].src, path, m[i].type, m[i].flags, "newinstance,ptmxmode=0666") == 0)
                continue;
            return -1;
        }
    }
    return 0;
}

static int mount_9p_opts(const char *tag, const char *target, unsigned long flags, const char *opts,
                         capsa_err *err)
{
    if (mkdir_p(target, 0755) < 0)
        return capsa_err_set(err, errno, "mkdir %s: %s", target, strerror(errno));
    if (mount(tag, target, "9p", flags, opts) == 0)
        return 0;
    if (errno == EINVAL && mount(tag, target, "9p", flags, P9_OPTS_NC) == 0)
        return 0;
    return capsa_err_set(err, errno, "mount 9p tag %s on %s: %s", tag, target, strerror(errno));
}

static int mount_9p(const char *tag, const char *target, unsigned long flags, capsa_err *err)
{
    return mount_9p_opts(tag, target, flags, P9_OPTS, err);
}

/* Move /proc, /sys, /dev into NEWROOT (already mounted), mount the runtime dirs there,
 * move NEWROOT over / and chroot into it. */
static int switch_root(capsa_err *err)
{
    static const char *const moved[] = {"/proc", "/sys", "/dev"};
    char path[64];

    for (size_t i = 0; i < ARRAY_SIZE(moved); i++) {
        snprintf(path, sizeof(path), NEWROOT "%s", moved[i]);
        if (mkdir(path, 0755) < 0 && errno != EEXIST)
            return capsa_err_set(err, errno, "mkdir %s in the root: %s", moved[i], strerror(errno));
        if (mount(moved[i], path, NULL, MS_MOVE, NULL) < 0)
            return capsa_err_set(err, errno, "moving %s into the root: %s", moved[i],
                                 strerror(errno));
    }
    if (mount_runtime(NEWROOT, err) < 0)
        return -1;
    if (chdir(NEWROOT) < 0)
        return capsa_err_set(err, errno, "chdir " NEWROOT ": %s", strerror(errno));
    if (mount(".", "/", NULL, MS_MOVE, NULL) < 0)
        return capsa_err_set(err, errno, "moving the root over /: %s", strerror(errno));
    if (chroot(".") < 0)
        return capsa_err_set(err, errno, "chroot: %s", strerror(errno));
    if (chdir("/") < 0)
        return capsa_err_set(err, errno, "chdir /: %s", strerror(errno));
    return 0;
}

static int switch_root_9p(const char *tag, capsa_err *err)
{
    if (mount_9p_opts(tag, NEWROOT, 0, P9_OPTS_ROOT, err) < 0)
        return capsa_err_prefix(err, "root");
    return switch_root(err);
}

/* ---- block-device roots ----------------------------------------------------------------
 * The host names each virtio-blk disk by its serial (QEMU `serial=`), which the guest reads
 * from /sys/block/vdX/serial; device names depend on probe order and are never trusted.
 * Reading a serial is a request to the device (three for an overlay root, ~6 ms of first-use
 * code and round trips under TCG), so when the host also gives a disk's size, a disk whose
 * size and read-only flag no other vd* shares is taken without asking (ambiguity: serial).
 * The overlay's lower and upper stay mounted in the initramfs, below the new root, where
 * the chroot'ed agent cannot name them. So block roots keep two O_PATH fds: the initramfs
 * root and the new root's mount. At power-off the agent chroots back into the initramfs,
 * detaches the new root through /proc/self/fd and unmounts the upper (and a disk root)
 * for real, so ext4 writes everything back and leaves a clean journal. */
#define LOWER_DIR "/capsa/lower"
#define UPPER_DIR "/capsa/upper"
static int oldroot_fd = -1, newroot_fd = -1;

/* Before the switch: remember where to come back to at power-off. */
static void keep_roots(void)
{
    oldroot_fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    newroot_fd = open(NEWROOT, O_PATH | O_DIRECTORY | O_CLOEXEC);
}

/* /dev/vdX for the disk d (creating the node if devtmpfs lacks it). */
static int find_blockdev(const struct agent_blockdev *d, char *dev, size_t len, capsa_err *err)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        char name[64], path[300], val[64];
        unsigned int maj, min;
        struct stat st;
        int by_serial;

        if (agent_disk_lookup("/sys/block", d, name, sizeof(name), &by_serial) != 0) {
            poll(NULL, 0, 20); /* virtio probing normally finished before init ran */
            continue;
        }
        if (by_serial && d->sectors)
            agent_dbg("disk %s: size and read-only flag not unique; found by serial", d->serial);
        snprintf(dev, len, "/dev/%s", name);
        if (stat(dev, &st) == 0 && S_ISBLK(st.st_mode))
            return 0;
        snprintf(path, sizeof(path), "/sys/block/%s/dev", name);
        if (agent_read_line(path, val, sizeof(val)) < 0 || sscanf(val, "%u:%u", &maj, &min) != 2)
            return capsa_err_set(err, EIO, "%s: cannot read its device number", path);
        unlink(dev);
        if (mknod(dev, S_IFBLK | 0600, makedev(maj, min)) < 0)
            return capsa_err_set(err, errno, "mknod %s: %s", dev, strerror(errno));
        return 0;
    }
    return capsa_err_set(err, ENODEV, "no virtio block device with serial \"%s\"", d->serial);
}

/* Mount dev on target as fstype; with fstype NULL try every block filesystem the kernel
 * knows (/proc/filesystems lines without "nodev"). */
static int mount_blockdev(const char *dev, const char *target, const char *fstype,
                          unsigned long flags, bool scratch, capsa_err *err)
{
    _cleanup_fclose_ FILE *f = NULL;
    char line[128];
    int last = ENODEV;

    if (mkdir_p(target, 0755) < 0)
        return capsa_err_set(err, errno, "mkdir %s: %s", target, strerror(errno));
    if (fstype) {
        /* ext4 would start a thread at mount that zeroes the inode tables (the host made
         * them sparse) and reads every group's block bitmap ahead of use: on the guest's
         * one vCPU that competes with the boot, and ext4 loads bitmaps on demand anyway.
         * A scratch disk dies with the run: ext4 need not order its writes with cache
         * flushes (nobarrier), which spares a flush round trip per superblock write. */
        if (strcmp(fstype, "ext4") == 0 && !(flags & MS_RDONLY) &&
            (mount(dev, target, fstype, flags,
                   scratch ? "noinit_itable,no_prefetch_block_bitmaps,nobarrier"
                           : "noinit_itable,no_prefetch_block_bitmaps") == 0 ||
             mount(dev, target, fstype, flags, "noinit_itable") == 0))
            return 0;
        if (mount(dev, target, fstype, flags, NULL) == 0)
            return 0;
        return capsa_err_set(err, errno, "mount %s on %s (%s): %s", dev, target, fstype,
                             strerror(errno));
    }
    f = fopen("/proc/filesystems", "re");
    if (!f)
        return capsa_err_set(err, errno, "/proc/filesystems: %s", strerror(errno));
    while (fgets(line, sizeof(line), f)) {
        char *t = line;
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "nodev", 5) == 0)
            continue;
        while (*t == ' ' || *t == '\t')
            t++;
        if (!*t)
            continue;
        if (mount(dev, target, t, flags, NULL) == 0) {
            agent_dbg("%s: mounted as %s", dev, t);
            return 0;
        }
        if (errno != EINVAL && errno != ENODEV && errno != ENOTBLK)
            last = errno;
    }
    return capsa_err_set(err, last,
                         "mount %s on %s: no filesystem in /proc/filesystems recognises it "
                         "(last error: %s)",
                         dev, target, strerror(last));
}

/* The image's lower disk is read through the host's page cache, where a larger window costs
 * little and saves round trips: the first exec of a 2 MB binary from it took ~9 ms less
 * under TCG with 1 MiB than with the kernel's 128 KiB. Best effort. */
#define LOWER_READ_AHEAD_KB "1024"

static void set_read_ahead(const char *dev, const char *kb)
{
    char path[128];
    int fd;

    snprintf(path, sizeof(path), "/sys/block/%s/queue/read_ahead_kb", dev + strlen("/dev/"));
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, kb, strlen(kb)) < 0)
        agent_dbg("%s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
}

/* The root overlay. On an upper capsa made (known), overlayfs need not probe it: each of its
 * mount-time probes (d_type, O_TMPFILE, RENAME_WHITEOUT, trusted.* xattrs, the work dir's
 * ACLs) creates and removes files there, ~1,650 blocks of first-use code under TCG (~14 ms).
 * upper_probe=off is capsa's kernel patch (guest/kernel/patches/); another kernel rejects
 * it with EINVAL, and then the overlay is mounted without it. */
static int mount_overlay(bool known, capsa_err *err)
{
#define OVL_OPTS "lowerdir=" LOWER_DIR ",upperdir=" UPPER_DIR "/upper,workdir=" UPPER_DIR "/work"
    if (known) {
        if (mount("overlay", NEWROOT, "overlay", 0, OVL_OPTS ",upper_probe=off") == 0)
            return 0;
        if (errno != EINVAL)
            return capsa_err_set(err, errno, "mount overlay on %s: %s", NEWROOT, strerror(errno));
        agent_dbg("overlay: upper_probe=off refused (a kernel without capsa's patch)");
    }
    return do_mount("overlay", NEWROOT, "overlay", 0, OVL_OPTS, err);
#undef OVL_OPTS
}

static int switch_root_overlay(const struct agent_boot *b, capsa_err *err)
{
    char dev[64], opts[256];

    if (find_blockdev(&b->root_lower, dev, sizeof(dev), err) < 0)
        return capsa_err_prefix(err, "root lower");
    agent_mark("lower_dev");
    set_read_ahead(dev, LOWER_READ_AHEAD_KB);
    if (mount_blockdev(dev, LOWER_DIR, b->root_lower.fstype, MS_RDONLY, false, err) < 0)
        return capsa_err_prefix(err, "root lower");
    agent_mark("lower");
    if (b->root_upper_tmpfs) {
        char size[48] = "";
        if (b->root_upper_size_mib)
            snprintf(size, sizeof(size), ",size=%llum", (unsigned long long)b->root_upper_size_mib);
        snprintf(opts, sizeof(opts), "mode=0755%s", size);
        if (do_mount("capsa-upper", UPPER_DIR, "tmpfs", 0, opts, err) < 0)
            return capsa_err_prefix(err, "root upper");
    } else {
        if (find_blockdev(&b->root_upper, dev, sizeof(dev), err) < 0 ||
            mount_blockdev(dev, UPPER_DIR, b->root_upper.fstype, MS_NOATIME, b->root_upper_scratch,
                           err) < 0)
            return capsa_err_prefix(err, "root upper");
    }
    if ((mkdir(UPPER_DIR "/upper", 0755) < 0 && errno != EEXIST) ||
        (mkdir(UPPER_DIR "/work", 0700) < 0 && errno != EEXIST))
        return capsa_err_set(err, errno, "root upper: mkdir upper/ or work/: %s", strerror(errno));
    agent_mark("upper");
    if (mount_overlay(b->root_upper_known, err) < 0)
        return capsa_err_prefix(err, "root overlay");
    agent_mark("overlay");
    keep_roots();
    return switch_root(err);
}

static int switch_root_disk(const struct agent_boot *b, capsa_err *err)
{
    char dev[64];

    if (find_blockdev(&b->root_dev, dev, sizeof(dev), err) < 0 ||
        mount_blockdev(dev, NEWROOT, b->root_dev.fstype, 0, false, err) < 0)
        return capsa_err_prefix(err, "root disk");
    keep_roots();
    return switch_root(err);
}

static void loopback_up(void)
{
    struct ifreq ifr = {0};
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return;
    snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    close(fd);
}

int agent_boot_apply(struct agent *a, const struct agent_boot *b, capsa_err *err)
{
    if (!a->pid1)
        return 0; /* host-test mode: keep env/workdir/user defaults, touch nothing */

    if (b->clock_ns > 0) {
        struct timespec ts = {.tv_sec = (time_t)(b->clock_ns / 1000000000),
                              .tv_nsec = (long)(b->clock_ns % 1000000000)};
        if (clock_settime(CLOCK_REALTIME, &ts) < 0)
            agent_log("clock_settime: %s (continuing)", strerror(errno));
    }
    switch (b->root_kind) {
    case AGENT_ROOT_9P:
        if (switch_root_9p(b->root_tag, err) < 0)
            return -1;
        break;
    case AGENT_ROOT_OVERLAY:
        if (switch_root_overlay(b, err) < 0)
            return -1;
        break;
    case AGENT_ROOT_DISK:
        if (switch_root_disk(b, err) < 0)
            return -1;
        break;
    case AGENT_ROOT_INITRAMFS:
    case AGENT_ROOT_NONE:
        if (mount_runtime("", err) < 0)
            return -1;
        break;
    }
    for (size_t i = 0; i < b->n_mounts; i++)
        if (mount_9p(b->mounts[i].tag, b->mounts[i].guest, b->mounts[i].readonly ? MS_RDONLY : 0,
                     err) < 0)
            return capsa_err_prefix(err, "mounts[%zu]", i);
    if (b->hostname && sethostname(b->hostname, strlen(b->hostname)) < 0)
        return capsa_err_set(err, errno, "sethostname %s: %s", b->hostname, strerror(errno));
    loopback_up();
    return 0;
}

/* Reap until no child is left or the deadline (ms) passes. */
static void reap_all(int ms)
{
    for (int waited = 0; waited <= ms; waited += 20) {
        pid_t p;
        while ((p = waitpid(-1, NULL, WNOHANG)) > 0)
            ;
        if (p < 0 && errno == ECHILD)
            return;
        poll(NULL, 0, 20);
    }
}

/* Decode the octal escapes of /proc/self/mounts in place. */
static void unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
            s[3] >= '0' && s[3] <= '7') {
            *o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
            s += 3;
        } else {
            *o++ = *s;
        }
    }
    *o = '\0';
}

static void umount_all(void)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mounts", "re");
    char line[8192], *mps[256];
    size_t n = 0;

    if (!f)
        return;
    while (n < ARRAY_SIZE(mps) && fgets(line, sizeof(line), f)) {
        char *sp = strchr(line, ' '), *mp, *end;
        if (!sp)
            continue;
        mp = sp + 1;
        end = strchr(mp, ' ');
        if (!end)
            continue;
        *end = '\0';
        unescape(mp);
        if (strcmp(mp, "/") == 0)
            continue;
        mps[n] = strdup(mp);
        if (mps[n])
            n++;
    }
    while (n-- > 0) {
        if (umount2(mps[n], 0) < 0 && errno != EINVAL)
            umount2(mps[n], MNT_DETACH);
        free(mps[n]);
    }
    mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
}

/* Block-device roots (see keep_roots): back into the initramfs, detach the new root,
 * drop the last reference to it, then unmount the upper / disk root for real. */
static void umount_block_roots(void)
{
    char path[64];

    if (fchdir(oldroot_fd) < 0 || chroot(".") < 0 || chdir("/") < 0) {
        agent_log("power-off: cannot return to the initramfs: %s", strerror(errno));
        return;
    }
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        agent_log("power-off: mount /proc: %s", strerror(errno));
    snprintf(path, sizeof(path), "/proc/self/fd/%d", newroot_fd);
    if (umount2(path, MNT_DETACH) < 0)
        agent_log("power-off: detaching the root: %s", strerror(errno));
    umount2("/proc", MNT_DETACH);
    close(newroot_fd); /* the last reference: the root's filesystem shuts down here */
    newroot_fd = -1;
    agent_dbg("power-off: root detached");
    for (int i = 0; i < 50; i++) {
        if (umount2(UPPER_DIR, 0) == 0 || errno == EINVAL || errno == ENOENT)
            break;
        if (errno != EBUSY) {
            agent_log("power-off: unmount the root upper: %s", strerror(errno));
            break;
        }
        poll(NULL, 0, 20);
    }
    umount2(LOWER_DIR, MNT_DETACH);
    sync();
    agent_dbg("power-off: block roots unmounted");
}

void agent_poweroff(struct agent *a)
{
    agent_log("shutting down");
    kill(-1, SIGTERM);
    reap_all(1000);
    kill(-1, SIGKILL);
    reap_all(1000);
    agent_dbg("poweroff: processes gone");
    if (a->boot.root_kind == AGENT_ROOT_OVERLAY && a->boot.root_upper_scratch &&
        a->boot.n_mounts == 0) {
        /* an ephemeral run's root: its upper is deleted when QEMU exits and nothing else
         * is writable, so writing back what the command left dirty is wasted work */
        agent_log("power-off without write-back (scratch root)");
        reboot(RB_AUTOBOOT);
    }
    sync();
    agent_dbg("poweroff: synced");
    umount_all();
    agent_dbg("poweroff: unmounted");
    sync();
    agent_dbg("poweroff: synced again");
    if (oldroot_fd >= 0)
        umount_block_roots();
    reboot(RB_AUTOBOOT); /* QEMU runs with -no-reboot: this ends the VM */
    agent_log("reboot: %s", strerror(errno));
    for (;;)
        pause();
}
