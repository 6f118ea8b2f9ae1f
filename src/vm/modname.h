/* modname.h - the rule for kernel module file names in the fallback initramfs, shared by the
 * host (src/vm/initramfs.c, which writes them) and the agent (agent/modules.c, which loads
 * them): NAME.ko, 4..63 bytes, NAME of ASCII letters, digits, '_' and '-'. */
#ifndef CAPSA_VM_MODNAME_H
#define CAPSA_VM_MODNAME_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>

static inline bool capsa_module_name_ok(const char *s, size_t n)
{
    if (n < 4 || n > 63 || memcmp(s + n - 3, ".ko", 3) != 0)
        return false;
    for (size_t i = 0; i < n - 3; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

#endif
