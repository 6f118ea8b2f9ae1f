/* supervisor.h - the per-sandbox supervisor process (`capsa __supervisor NAME`).
 *
 * Theory of operation: the supervisor is spawned by capsa_supervisor_spawn() (sandbox.h) in
 * its own session with stdio on $CAPSA_HOME/sandboxes/NAME/supervisor.log. It moves the row to
 * `starting` with its pid and opens a run (one transaction), boots the VM from the stored
 * SandboxSpec (capsa_boot), listens on $CAPSA_HOME/run/<id>/control.sock (0600), marks the row
 * `running` and reports {"ok":true} on the start pipe (fd $CAPSA_SUPERVISOR_READY_FD). Then a
 * single-threaded poll loop relays every client's exec/fs streams to the guest agent with
 * stream ids remapped per client, answers ctl.request frames, and runs the lifecycle timers
 * (max duration, idle timeout, stop grace). Every status change is written to the store
 * before it is acted on; when QEMU exits the run is finished with its termination reason and
 * the row becomes `stopped` (or `crashed` when QEMU died without being asked to), then the
 * supervisor exits. QEMU has PR_SET_PDEATHSIG, so a killed supervisor takes the VM with it;
 * the next capsa command reaps the row to `crashed`.
 */
#ifndef CAPSA_SUPERVISOR_SUPERVISOR_H
#define CAPSA_SUPERVISOR_SUPERVISOR_H

/* Environment variable naming the fd the start report is written to. */
#define CAPSA_SUPERVISOR_READY_ENV "CAPSA_SUPERVISOR_READY_FD"
/* Environment variable naming the read end of the parent-watch pipe of an attached sandbox:
 * EOF there (the parent exited or closed it) stops the sandbox gracefully. */
#define CAPSA_SUPERVISOR_WATCH_ENV "CAPSA_SUPERVISOR_WATCH_FD"
/* argv[1] of a supervisor process (also how liveness checks recognise one). */
#define CAPSA_SUPERVISOR_VERB "__supervisor"

/* Runs the supervisor for sandbox name; returns the process exit status (0 after an orderly
 * stop, 1 after a failed start or a crash). */
int capsa_supervisor_main(const char *name);

#endif
