/* main.c - capsa-agent entry point (placeholder until the agent lands). */
#include <stdio.h>

int main(void)
{
    fprintf(stderr, "capsa-agent: not implemented yet\n");
    return 1;
}
