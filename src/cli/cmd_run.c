/* cmd_run.c - placeholder until the run verb lands. */
#include "cli/cli.h"

int cmd_run(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return cli_fail("run: not implemented yet");
}
