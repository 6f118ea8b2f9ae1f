/* boot-init.c - tiny static PID 1 for checking the capsa kernel boots: prints a marker,
 * optionally reports virtio ports and exercises a 9p mount, then reboots (exits QEMU).
 *
 * Behaviour is chosen by the kernel command line: `capsatest=ports` lists
 * /sys/class/virtio-ports/ names, `capsatest=9p` also mounts the 9p tag capsa.root on /mnt,
 * reads /mnt/hello and writes /mnt/from-guest; `capsatest=fs` mounts an erofs disk and an ext4
 * disk (vda/vdb, either order) and an overlayfs of both on /newroot, reads /newroot/hello and
 * writes /newroot/new. Without capsatest only the marker is printed.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

static int con = -1;

static void say(const char *s)
{
    if (write(con, s, strlen(s)) < 0)
        _exit(1);
}

static void list_ports(void)
{
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    char path[512], name[128], line[768];

    if (!d) {
        say("PORTS: no /sys/class/virtio-ports\n");
        return;
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(path, O_RDONLY);
        ssize_t n = fd >= 0 ? read(fd, name, sizeof(name) - 1) : -1;
        if (fd >= 0)
            close(fd);
        name[n > 0 ? n : 0] = '\0';
        name[strcspn(name, "\n")] = '\0';
        snprintf(line, sizeof(line), "PORT %s name=%s\n", e->d_name, name);
        say(line);
    }
    closedir(d);
}

static void test_9p(void)
{
    char buf[256], line[400];
    ssize_t n;
    int fd;

    if (mount("capsa.root", "/mnt", "9p", 0, "trans=virtio,version=9p2000.L,msize=262144") < 0) {
        snprintf(line, sizeof(line), "9P: mount failed: %m\n");
        say(line);
        return;
    }
    fd = open("/mnt/hello", O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    snprintf(line, sizeof(line), "9P: read hello=%s\n", buf);
    say(line);
    fd = open("/mnt/from-guest", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "written by guest\n", 17) != 17 || fsync(fd) < 0)
        say("9P: write failed\n");
    else
        say("9P: wrote from-guest\n");
    if (fd >= 0)
        close(fd);
    umount("/mnt");
}

static void report(const char *what, int rc)
{
    char line[300];

    if (rc == 0)
        snprintf(line, sizeof(line), "FS: %s ok\n", what);
    else
        snprintf(line, sizeof(line), "FS: %s FAILED: %m\n", what);
    say(line);
}

static void test_fs(void)
{
    const char *lo_dev = "/dev/vda", *up_dev = "/dev/vdb";
    char buf[128], line[256];
    ssize_t n;
    int fd;

    report("devtmpfs", mount("devtmpfs", "/dev", "devtmpfs", 0, NULL));
    report("tmpfs", mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"));
    mkdir("/run/lower", 0755);
    mkdir("/run/upper", 0755);
    if (mount(lo_dev, "/run/lower", "erofs", MS_RDONLY, NULL) < 0) {
        lo_dev = "/dev/vdb";
        up_dev = "/dev/vda";
        report("erofs", mount(lo_dev, "/run/lower", "erofs", MS_RDONLY, NULL));
    } else {
        report("erofs", 0);
    }
    report("ext4", mount(up_dev, "/run/upper", "ext4", 0, NULL));
    mkdir("/run/upper/u", 0755);
    mkdir("/run/upper/w", 0755);
    report("overlay", mount("overlay", "/newroot", "overlay", 0,
                            "lowerdir=/run/lower,upperdir=/run/upper/u,workdir=/run/upper/w"));
    fd = open("/newroot/hello", O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    snprintf(line, sizeof(line), "FS: read hello=%s\n", buf);
    say(line);
    fd = open("/newroot/new", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    report("overlay write", fd >= 0 && write(fd, "x\n", 2) == 2 && fsync(fd) == 0 ? 0 : -1);
    if (fd >= 0)
        close(fd);
    umount("/newroot");
    umount("/run/upper");
    umount("/run/lower");
}

int main(void)
{
    const char *mode = getenv("capsatest");
    struct utsname u;
    char line[512];

    con = open("/dev/console", O_WRONLY | O_NOCTTY);
    if (con < 0)
        con = 1;
    say("CAPSA-BOOT-OK\n");
    if (mode) {
        mount("proc", "/proc", "proc", 0, NULL);
        mount("sysfs", "/sys", "sysfs", 0, NULL);
        uname(&u);
        snprintf(line, sizeof(line), "UNAME %s %s %s cpus=%ld\n", u.sysname, u.release, u.machine,
                 sysconf(_SC_NPROCESSORS_ONLN));
        say(line);
        list_ports();
        if (strcmp(mode, "9p") == 0)
            test_9p();
        if (strcmp(mode, "fs") == 0)
            test_fs();
        say("CAPSA-TEST-DONE\n");
    }
    sync();
    reboot(RB_AUTOBOOT);
    return 0;
}
