/* cmd_spec.c - placeholder until the spec verb lands. */
#include "cli/cli.h"

int cmd_spec(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("spec: not implemented yet");
}
