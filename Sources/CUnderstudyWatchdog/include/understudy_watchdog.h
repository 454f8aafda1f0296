#ifndef UNDERSTUDY_WATCHDOG_H
#define UNDERSTUDY_WATCHDOG_H

#include <sys/types.h>

/// Runs the watchdog that stands between an `understudy run` supervisor and its child; never returns.
///
///     argv: NAME CONTROL_FD MARGIN_NS DEADLINE_NS LEAF RELEASE_FD COMMAND [ARGS...]
///
/// LEAF is an empty cgroup v2 directory for COMMAND's whole tree, or `-` for the fallback (process group and
/// child subreaper). RELEASE_FD is a descriptor to hand to `understudy __release-slot` as descriptor 3 once
/// the tree is confirmed dead, or -1.
///
/// Forks a guard (in LEAF, a child subreaper, told of the watchdog's death by its parent-death signal and of
/// every deadline through a pipe, so that it kills the tree if the watchdog dies or freezes), which forks
/// COMMAND in a new process group. Then obeys the control pipe CONTROL_FD, one line per message:
///   `d NS`  the lease is vouched for until NS (CLOCK_BOOTTIME nanoseconds); deadlines only move forward.
///   `t`     send SIGTERM to COMMAND's tree (every process of LEAF; without LEAF, COMMAND's process group).
///   `k`     kill COMMAND's tree with SIGKILL and confirm it is gone.
/// The tree is killed and confirmed gone when the pipe reaches end-of-file (the supervisor died, even by
/// SIGKILL) and when the deadline minus MARGIN_NS passes without extension (the supervisor is frozen); in both
/// cases the slot is then released through RELEASE_FD. When COMMAND exits, whatever it left goes with it. The
/// watchdog exits with COMMAND's status: its exit code, or 128 + the number of the signal that ended it.
///
/// MUST be called by a single-threaded process (right after exec, before any thread exists).
int understudy_watchdog_main(int argc, char **argv);

/// `pipe2(fds, O_CLOEXEC)`: a pipe whose ends no spawned process inherits unless it is mapped explicitly.
int understudy_pipe_cloexec(int fds[2]);

/// A close-on-exec anonymous memory file holding `length` bytes of `bytes`; -1 on failure.
int understudy_memfd(const void *bytes, size_t length);

/// `posix_spawn_file_actions_addchdir_np(actions, path)` (a GNU extension Swift does not see): the spawned
/// process starts in `path`. `actions` is a `posix_spawn_file_actions_t *`. 0 on success.
int understudy_spawn_add_chdir(void *actions, const char *path);

/// Makes the calling process a child subreaper: orphaned descendants are reparented to it. 0 on success.
int understudy_set_subreaper(void);

/// Kills every process of the cgroup directory `leaf` (cgroup.kill), waits until `cgroup.events` says
/// `populated 0` and removes the directory. 0 on success, -1 with errno when the cgroup cannot be killed.
int understudy_cgroup_kill(const char *leaf);

/// For a child subreaper whose watchdog died: kills with SIGKILL and reaps every child of this process but the
/// `count` pids in `keep`, until none is left (descendants are reparented here as their parents die).
void understudy_kill_orphans(const pid_t *keep, int count);

#endif
