/* test_supervisor.c - unit tests for the pure parts of src/supervisor: default hostnames,
 * paths, and the supervisor liveness check used when reaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "supervisor/sandbox.h"

static void test_hostname(void **state)
{
    char h[65], h2[65], name[130];
    (void)state;

    capsa_sandbox_default_hostname("web-1", h);
    assert_string_equal(h, "web-1");
    memset(name, 'a', 64);
    name[64] = '\0';
    capsa_sandbox_default_hostname(name, h);
    assert_string_equal(h, name); /* 64 bytes fit */
    memset(name, 'a', 128);
    name[128] = '\0';
    capsa_sandbox_default_hostname(name, h);
    assert_int_equal(strlen(h), 64);
    assert_memory_equal(h, name, 55);
    assert_int_equal(h[55], '-');
    for (int i = 56; i < 64; i++)
        assert_non_null(strchr("0123456789abcdef", h[i]));
    name[127] = 'b'; /* same prefix, different name: different hostname */
    capsa_sandbox_default_hostname(name, h2);
    assert_string_not_equal(h, h2);
    assert_memory_equal(h, h2, 56);
}

static void test_paths(void **state)
{
    struct capsa_sandbox_paths p;
    capsa_err err = {0};
    (void)state;

    setenv("CAPSA_HOME", "/tmp/capsa-test-sup-home", 1);
    assert_int_equal(capsa_sandbox_paths("web", 7, &p, &err), 0);
    assert_string_equal(p.dir, "/tmp/capsa-test-sup-home/sandboxes/web");
    assert_string_equal(p.log, "/tmp/capsa-test-sup-home/sandboxes/web/supervisor.log");
    assert_string_equal(p.run_dir, "/tmp/capsa-test-sup-home/run/7");
    assert_string_equal(p.sock, "/tmp/capsa-test-sup-home/run/7/control.sock");
    assert_int_equal(capsa_sandbox_paths("web", 0, &p, &err), 0);
    assert_string_equal(p.sock, "");
}

static void test_alive(void **state)
{
    pid_t pid;
    int st;
    (void)state;

    assert_false(capsa_supervisor_alive(0, NULL));
    assert_false(capsa_supervisor_alive(-1, NULL));
    /* this test program is not a supervisor */
    assert_false(capsa_supervisor_alive(getpid(), NULL));
    /* a process whose argv[1] is __supervisor is, until it dies (zombie included) */
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 1);
        execl("/usr/bin/yes", "capsa", "__supervisor", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 200 && !capsa_supervisor_alive(pid, NULL); i++)
        usleep(10000);
    assert_true(capsa_supervisor_alive(pid, NULL));
    kill(pid, SIGKILL);
    for (int i = 0; i < 200 && capsa_supervisor_alive(pid, NULL); i++)
        usleep(10000);
    assert_false(capsa_supervisor_alive(pid, NULL)); /* a zombie does not count */
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_false(capsa_supervisor_alive(pid, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostname),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_alive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
