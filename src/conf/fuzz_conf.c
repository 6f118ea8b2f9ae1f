/* fuzz_conf.c - libFuzzer target for the conf module: the input is one YAML config file
 * (--conf shape). Invariants (abort on violation): loading never crashes; a file that loads
 * yields a SandboxSpec that re-checks to the identical document; a failed load reports at
 * least one error. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "conf/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static json_t *cli;
    int fd = memfd_create("fuzz.yaml", MFD_CLOEXEC);
    char path[64];
    capsa_conf_errors errs = {0};
    json_t *spec = NULL, *again = NULL;

    if (fd < 0)
        return 0;
    if (!cli)
        cli = json_pack("{s:s}", "name", "fuzz");
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    struct capsa_conf_file f = {CAPSA_CONF_ROOT, path};
    struct capsa_conf_sources src = {&f, 1, NULL};
    if (capsa_conf_load(&src, cli, &spec, &errs) == 0) {
        if (capsa_spec_check("SandboxSpec", spec, &again, NULL) < 0 || !json_equal(spec, again))
            abort();
    } else if (capsa_spec_errors_total(&errs) == 0) {
        abort();
    }
    json_decref(spec);
    json_decref(again);
    capsa_conf_errors_free(&errs);
    close(fd);
    return 0;
}
