/* disk.c - finding the guest's virtio disks in sysfs (see disk.h). Pure: host-tested on a
 * fake /sys/block tree. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cleanup.h"
#include "disk.h"

int agent_read_line(const char *path, char *buf, size_t len)
{
    _cleanup_fclose_ FILE *f = fopen(path, "re");
    if (!f || !fgets(buf, (int)len, f))
        return -1;
    buf[strcspn(buf, "\n")] = '\0';
    return 0;
}

static int read_u64(const char *path, uint64_t *out)
{
    char buf[32], *end;

    if (agent_read_line(path, buf, sizeof(buf)) < 0)
        return -1;
    errno = 0;
    *out = strtoull(buf, &end, 10);
    return errno == 0 && end != buf && *end == '\0' ? 0 : -1;
}

/* Whether the vd* entry `e` has d's size and read-only flag. */
static int same_shape(const char *sysblock, const char *e, const struct agent_blockdev *d)
{
    char path[PATH_MAX];
    uint64_t sectors, ro;

    snprintf(path, sizeof(path), "%s/%s/size", sysblock, e);
    if (read_u64(path, &sectors) < 0 || sectors != d->sectors)
        return 0;
    snprintf(path, sizeof(path), "%s/%s/ro", sysblock, e);
    return read_u64(path, &ro) == 0 && (ro != 0) == d->readonly;
}

int agent_disk_lookup(const char *sysblock, const struct agent_blockdev *d, char *name, size_t len,
                      int *by_serial)
{
    char path[PATH_MAX], val[64], found[64] = "";
    int matches = 0;

    *by_serial = 0;
    for (int pass = d->sectors ? 0 : 1; pass < 2; pass++) {
        _cleanup_dir_ DIR *dir = opendir(sysblock);
        struct dirent *de;

        if (!dir)
            return 1;
        while ((de = readdir(dir))) {
            if (strncmp(de->d_name, "vd", 2) != 0 || strlen(de->d_name) >= sizeof(found))
                continue;
            if (pass == 0) {
                if (same_shape(sysblock, de->d_name, d) && matches++ == 0)
                    snprintf(found, sizeof(found), "%s", de->d_name);
                continue;
            }
            snprintf(path, sizeof(path), "%s/%s/serial", sysblock, de->d_name);
            if (agent_read_line(path, val, sizeof(val)) == 0 && strcmp(val, d->serial) == 0) {
                snprintf(name, len, "%s", de->d_name);
                *by_serial = 1;
                return 0;
            }
        }
        if (pass == 0 && matches == 1) {
            snprintf(name, len, "%s", found);
            return 0;
        }
    }
    return 1;
}
