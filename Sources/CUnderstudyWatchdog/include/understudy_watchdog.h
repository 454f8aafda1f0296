#ifndef UNDERSTUDY_WATCHDOG_H
#define UNDERSTUDY_WATCHDOG_H

/// Runs the watchdog that stands between an `understudy run` supervisor and its child; never returns.
///
///     argv: NAME CONTROL_FD MARGIN_NS DEADLINE_NS COMMAND [ARGS...]
///
/// Starts COMMAND in a new process group (with the parent-death signal SIGKILL) and then obeys the control
/// pipe CONTROL_FD, one line per message:
///   `d NS`  the lease is vouched for until NS (CLOCK_BOOTTIME nanoseconds); deadlines only move forward.
///   `t`     send SIGTERM to the child's process group.
///   `k`     send SIGKILL to the child's process group.
/// The child's process group is killed with SIGKILL when the pipe reaches end-of-file (the supervisor died,
/// even by SIGKILL), when the deadline minus MARGIN_NS passes without extension (the supervisor is frozen),
/// and when the child itself exits (so nothing it started outlives it). The watchdog then exits with the
/// child's status: its exit code, or 128 + the number of the signal that ended it.
///
/// MUST be called by a single-threaded process (right after exec, before any thread exists).
int understudy_watchdog_main(int argc, char **argv);

/// `pipe2(fds, O_CLOEXEC)`: a pipe whose ends no spawned process inherits unless it is mapped explicitly.
int understudy_pipe_cloexec(int fds[2]);

#endif
