/* disk.h - finding the guest's virtio disks in sysfs. */
#ifndef CAPSA_AGENT_DISK_H
#define CAPSA_AGENT_DISK_H

#include <stddef.h>

#include "msg.h"

/* The first line of a (sysfs) file, without its newline: 0, or -1. */
int agent_read_line(const char *path, char *buf, size_t len);

/* The name (vdX) of disk d under sysblock ("/sys/block" in the guest): when d gives its size,
 * the only vd* whose size and read-only flag are d's (sysfs attributes: no request to the
 * device); else, or when that is ambiguous, the one whose serial is d's (each serial read is
 * a request to that device). 0 with the name (and *by_serial set when the serial decided), or
 * 1: no such disk (yet). */
int agent_disk_lookup(const char *sysblock, const struct agent_blockdev *d, char *name, size_t len,
                      int *by_serial);

#endif
