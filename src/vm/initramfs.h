/* initramfs.h - build the guest initramfs: a newc cpio holding capsa-agent as /init. */
#ifndef CAPSA_VM_INITRAMFS_H
#define CAPSA_VM_INITRAMFS_H

#include <stddef.h>

#include "capsa.h"

/* Largest agent binary accepted (newc sizes are 32-bit; the agent is a few MiB). */
#define CAPSA_INITRAMFS_MAX_AGENT (256u << 20)

/* Write an uncompressed newc cpio to out_path (temp file + fsync + rename):
 * directories /dev /proc /sys /run /tmp (1777) /mnt /newroot, the char device
 * /dev/console (5:1, 0600) and agent_path's bytes as /init (0755). All entries
 * are owned by 0:0 with mtime 0, so equal agents give byte-identical archives. */
int capsa_initramfs_write(const char *agent_path, const char *out_path, capsa_err *err);

/* out = $CAPSA_HOME/cache/initramfs-<first 16 hex of sha256(agent)>.cpio, written
 * if it does not exist yet. */
int capsa_initramfs_path(const char *agent_path, char *out, size_t len, capsa_err *err);

#endif
