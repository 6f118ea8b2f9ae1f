/* test_init.c - tiny static PID 1 for test_vm's boot test: hello frame, ping/pong, shutdown. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define HDR 12

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static int write_all(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int send_frame(int fd, uint32_t stream, uint16_t type, const char *json)
{
    uint8_t h[HDR];
    size_t n = strlen(json);
    put32(h, (uint32_t)n);
    put32(h + 4, stream);
    h[8] = (uint8_t)(type >> 8);
    h[9] = (uint8_t)type;
    h[10] = h[11] = 0;
    return write_all(fd, h, HDR) < 0 || write_all(fd, json, n) < 0 ? -1 : 0;
}

static void say(const char *s)
{
    int fd = open("/dev/console", O_WRONLY | O_NOCTTY);
    if (fd >= 0) {
        (void)!write(fd, s, strlen(s));
        close(fd);
    }
}

static __attribute__((noreturn)) void power_off(void)
{
    sync();
    reboot(RB_AUTOBOOT); /* reboot=t + QEMU -no-reboot: QEMU exits */
    for (;;)
        pause();
}

static int open_port(void)
{
    for (int tries = 0; tries < 500; tries++) {
        DIR *d = opendir("/sys/class/virtio-ports");
        struct dirent *e;
        while (d && (e = readdir(d))) {
            char p[300], name[64] = "";
            int fd;
            if (e->d_name[0] == '.')
                continue;
            snprintf(p, sizeof(p), "/sys/class/virtio-ports/%s/name", e->d_name);
            fd = open(p, O_RDONLY);
            if (fd < 0)
                continue;
            ssize_t n = read(fd, name, sizeof(name) - 1);
            close(fd);
            if (n > 0 && strncmp(name, "capsa.agent", 11) == 0) {
                snprintf(p, sizeof(p), "/dev/%s", e->d_name);
                closedir(d);
                return open(p, O_RDWR);
            }
        }
        if (d)
            closedir(d);
        usleep(10000);
    }
    return -1;
}

int main(void)
{
    uint8_t h[HDR];
    char payload[4096];
    int fd;

    mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
    mount("sysfs", "/sys", "sysfs", 0, NULL);
    mount("proc", "/proc", "proc", 0, NULL);
    say("capsa-test-init: up\n");
    fd = open_port();
    if (fd < 0) {
        say("capsa-test-init: no capsa.agent port\n");
        power_off();
    }
    /* If the host shares a folder tagged capsa.test, write a file there owned by
     * 1234:1234 so the host can check the 9p security model. */
    {
        const char *share = "none";
        mkdir("/mnt", 0755);
        if (mount("capsa.test", "/mnt", "9p", 0, "trans=virtio,version=9p2000.L") == 0) {
            int f = open("/mnt/from-guest", O_WRONLY | O_CREAT | O_TRUNC, 0644);
            share = "write-failed";
            if (f >= 0 && write(f, "hello from the guest\n", 21) == 21) {
                share = fchown(f, 1234, 1234) == 0 ? "ok" : "chown-failed";
            }
            if (f >= 0)
                close(f);
            umount("/mnt");
        }
        char hello[160];
        snprintf(hello, sizeof(hello),
                 "{\"version\": 1, \"agent_version\": \"vm-test-init\", \"share\": \"%s\"}", share);
        if (send_frame(fd, 0, 0x0001, hello) < 0)
            power_off();
    }
    say("capsa-test-init: hello sent\n");
    for (;;) {
        uint32_t len, stream;
        uint16_t type;
        if (read_all(fd, h, HDR) < 0)
            power_off();
        len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
        stream = (uint32_t)h[4] << 24 | (uint32_t)h[5] << 16 | (uint32_t)h[6] << 8 | h[7];
        type = (uint16_t)(h[8] << 8 | h[9]);
        if (len >= sizeof(payload) || read_all(fd, payload, len) < 0)
            power_off();
        if (type == 0x0004) /* ping */
            send_frame(fd, stream, 0x0005, "{}");
        else if (type == 0x0006) /* shutdown */
            power_off();
    }
}
