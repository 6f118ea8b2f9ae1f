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

/* Kernel modules for a kernel that needs them (Debian's fallback kernel): modules_dir
 * holds modules.order (file names in load order, one a line: [A-Za-z0-9_-]{1,60}.ko) and
 * modules/<name>. They go into the archive as /lib/modules/capsa/<name> (0644) plus
 * /lib/modules/capsa/order (the names, one a line), which the agent loads with
 * finit_module(2) before it looks for its port. */
#define CAPSA_INITRAMFS_MAX_MODULES     128
#define CAPSA_INITRAMFS_MAX_MODULE_SIZE (64u << 20)
#define CAPSA_INITRAMFS_MAX_ORDER_SIZE  8192

/* capsa_initramfs_write plus the modules of modules_dir (NULL: none, the same archive). */
int capsa_initramfs_write_modules(const char *agent_path, const char *modules_dir,
                                  const char *out_path, capsa_err *err);

/* capsa_initramfs_path plus modules: with modules_dir non-NULL the name is
 * initramfs-<16 hex of sha256(agent, order, each module's name and bytes)>-mods.cpio. */
int capsa_initramfs_path_modules(const char *agent_path, const char *modules_dir, char *out,
                                 size_t len, capsa_err *err);

#endif
