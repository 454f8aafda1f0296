// The watchdog between an `understudy run` supervisor and its child. See include/understudy_watchdog.h.
//
// Why it is a separate process: a supervisor that is frozen (SIGSTOP, swapped out, hung in a syscall) cannot
// stop anything, yet its lease runs out and another member activates. The watchdog runs no Swift, takes no
// locks and sleeps in poll(2) on a CLOCK_BOOTTIME timer, so it is independent of the supervisor's health.
//
//     supervisor ── pipe ──▶ watchdog (own process group; fallback: child subreaper)
//                               └─ guard (in the cgroup leaf; child subreaper; parent-death signal SIGUSR1)
//                                    └─ COMMAND (own process group; parent-death signal SIGKILL) └─ …
//
// The guard is the watchdog's stand-in inside the tree: if the watchdog dies (even by SIGKILL, even with the
// supervisor), the guard learns it from its parent-death signal and kills the whole tree: the cgroup with
// cgroup.kill, or without a cgroup every descendant (all of them are reparented to it, it is a subreaper). The
// watchdog forwards it every deadline, so it also kills the tree when watchdog and supervisor freeze together.
// Both the watchdog and the guard are single-threaded, so a parent-death signal fires exactly when the
// parent process dies.
#ifndef __linux__
#error "the watchdog is Linux-only: pidfds, cgroup v2, prctl, CLOCK_BOOTTIME timerfds"
#endif
#define _GNU_SOURCE
#include "understudy_watchdog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void) {
    struct timespec spec;
    clock_gettime(CLOCK_BOOTTIME, &spec);
    return (int64_t)spec.tv_sec * 1000000000 + spec.tv_nsec;
}

static void fail(const char *what) {
    fprintf(stderr, "understudy-watchdog: %s: %s\n", what, strerror(errno));
    exit(125);
}

/// Closes every descriptor from `lowest` up, except `keep` and `also`: with close_range(2) (Linux 5.9), since a
/// close(2) per possible descriptor costs milliseconds with a high RLIMIT_NOFILE, on every start and release.
static void close_from(int lowest, int keep, int also) {
    int kept[2] = {keep < also ? keep : also, keep < also ? also : keep};
    int from = lowest;
    int ranges_ok = 1;
    for (int index = 0; index < 2 && ranges_ok; index++) {
        if (kept[index] < from) continue;
        if (kept[index] > from) ranges_ok = syscall(SYS_close_range, (unsigned)from, (unsigned)kept[index] - 1, 0) == 0;
        from = kept[index] + 1;
    }
    if (ranges_ok && syscall(SYS_close_range, (unsigned)from, ~0U, 0) == 0) return;
    long limit = sysconf(_SC_OPEN_MAX);
    if (limit < 0 || limit > 65536) limit = 65536;
    for (int fd = lowest; fd < limit; fd++) {
        if (fd != keep && fd != also) close(fd);
    }
}

static int exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 125;
}

static int write_file(const char *directory, const char *name, const char *text) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", directory, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t written = write(fd, text, strlen(text));
    int saved = errno;
    close(fd);
    errno = saved;
    return written == (ssize_t)strlen(text) ? 0 : -1;
}

/// The parent of `pid`, from /proc/PID/stat; -1 when it is gone.
static pid_t parent_of(pid_t pid) {
    char path[64], buffer[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t count = read(fd, buffer, sizeof buffer - 1);
    close(fd);
    if (count <= 0) return -1;
    buffer[count] = '\0';
    char *end = strrchr(buffer, ')');
    char state;
    int parent;
    if (end == NULL || sscanf(end + 1, " %c %d", &state, &parent) != 2) return -1;
    return parent;
}

/// Up to `capacity` children of this process, except those in `keep`.
static int children_of_self(pid_t *found, int capacity, const pid_t *keep, int count) {
    pid_t self = getpid();
    int number = 0;
    DIR *proc = opendir("/proc");
    if (proc == NULL) return 0;
    struct dirent *entry;
    while (number < capacity && (entry = readdir(proc)) != NULL) {
        char *end;
        long pid = strtol(entry->d_name, &end, 10);
        if (*end != '\0' || pid <= 0 || parent_of((pid_t)pid) != self) continue;
        int kept = 0;
        for (int index = 0; index < count; index++) kept |= keep[index] == (pid_t)pid;
        if (!kept) found[number++] = (pid_t)pid;
    }
    closedir(proc);
    return number;
}

/// For a child subreaper: SIGKILL to every child and reaping, until no child is left; a descendant whose
/// parent dies is reparented here before that parent can be reaped, so no descendant is left either.
/// Stores the status of `watched` if it is reaped on the way.
static void kill_all_children(pid_t watched, int *watched_status) {
    for (;;) {
        pid_t found[256];
        int number = children_of_self(found, 256, NULL, 0);
        for (int index = 0; index < number; index++) kill(found[index], SIGKILL);
        int status;
        pid_t reaped = waitpid(-1, &status, 0);
        if (reaped < 0) {
            if (errno == EINTR) continue;
            return;  // ECHILD: nothing is left.
        }
        if (reaped == watched && watched_status != NULL) *watched_status = status;
    }
}

void understudy_kill_orphans(const pid_t *keep, int count) {
    for (;;) {
        pid_t found[256];
        int number = children_of_self(found, 256, keep, count);
        if (number == 0) return;
        for (int index = 0; index < number; index++) kill(found[index], SIGKILL);
        for (int index = 0; index < number; index++) {
            while (waitpid(found[index], NULL, 0) < 0 && errno == EINTR) {}
        }
    }
}

int understudy_cgroup_kill(const char *leaf) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cgroup.events", leaf);
    int events = open(path, O_RDONLY | O_CLOEXEC);
    if (events < 0) return errno == ENOENT ? 0 : -1;  // Removed: rmdir succeeds only on an empty cgroup.
    if (write_file(leaf, "cgroup.kill", "1") != 0) {
        int saved = errno;
        close(events);
        errno = saved;
        return -1;
    }
    for (;;) {
        char buffer[256];
        lseek(events, 0, SEEK_SET);
        ssize_t count = read(events, buffer, sizeof buffer - 1);
        if (count < 0) {
            if (errno == EINTR) continue;
            // Removed since it was opened, which only an empty cgroup can be.
            if (errno == ENODEV || errno == ENOENT) {
                close(events);
                return 0;
            }
            int saved = errno;
            close(events);
            errno = saved;
            return -1;
        }
        buffer[count] = '\0';
        if (strstr(buffer, "populated 0") != NULL) break;
        // Every change of cgroup.events raises POLLPRI; the read above re-armed it. The timeout re-reads anyway,
        // so a notification the kernel never raises (a cgroup removed under us) cannot leave the watchdog here.
        struct pollfd wait = {.fd = events, .events = POLLPRI};
        poll(&wait, 1, 100);
    }
    close(events);
    rmdir(leaf);
    return 0;
}

int understudy_set_subreaper(void) {
    return prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
}

int understudy_spawn_add_chdir(void *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np((posix_spawn_file_actions_t *)actions, path);
}

int understudy_memfd(const void *bytes, size_t length) {
    int fd = (int)syscall(SYS_memfd_create, "understudy-release", MFD_CLOEXEC);
    if (fd < 0) return -1;
    const char *next = bytes;
    size_t left = length;
    while (left > 0) {
        ssize_t written = write(fd, next, left);
        if (written < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return -1;
        }
        next += written;
        left -= (size_t)written;
    }
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static void arm(int timer, int64_t at) {
    if (at <= 0) at = 1;  // A zero it_value would disarm the timer.
    struct itimerspec spec = {.it_value = {.tv_sec = at / 1000000000, .tv_nsec = at % 1000000000}};
    if (at == INT64_MAX) spec.it_value.tv_sec = INT32_MAX;
    timerfd_settime(timer, TFD_TIMER_ABSTIME, &spec, NULL);
}

/// The guard: joins the leaf, starts COMMAND, and kills the tree when COMMAND exits, when the watchdog dies, and
/// when the kill instant the watchdog forwards on `deadlines` (int64 CLOCK_BOOTTIME nanoseconds) passes: so a
/// watchdog frozen together with its supervisor does not keep the tree alive past the lease either.
static void guard(pid_t watchdog, const char *leaf, char **command, int report, int deadlines, int64_t kill_at) {
    prctl(PR_SET_PDEATHSIG, SIGUSR1);
    if (getppid() != watchdog) _exit(137);
    if (leaf != NULL) {
        char pid[32];
        snprintf(pid, sizeof pid, "%d", (int)getpid());
        if (write_file(leaf, "cgroup.procs", pid) != 0) {
            fprintf(stderr, "understudy: cannot enter the cgroup %s: %s\n", leaf, strerror(errno));
            _exit(125);
        }
    }
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    // Every signal is blocked (inherited from the watchdog across the fork); these three are read here.
    sigset_t mine;
    sigemptyset(&mine);
    sigaddset(&mine, SIGCHLD);
    sigaddset(&mine, SIGUSR1);
    int signals = signalfd(-1, &mine, SFD_CLOEXEC | SFD_NONBLOCK);
    int timer = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK);
    if (signals < 0 || timer < 0) _exit(125);
    fcntl(deadlines, F_SETFL, fcntl(deadlines, F_GETFL) | O_NONBLOCK);
    arm(timer, kill_at);
    pid_t self = getpid();
    pid_t child = fork();
    if (child < 0) _exit(125);
    if (child == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != self) _exit(137);
        setpgid(0, 0);
        close(signals);
        close(timer);
        close(deadlines);
        close(report);
        for (int number = 1; number < NSIG; number++) signal(number, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(command[0], command);
        fprintf(stderr, "understudy: cannot run %s: %s\n", command[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    // Set the group from both sides so that no signal can reach a child that is not yet its own leader.
    setpgid(child, child);
    while (write(report, &child, sizeof child) < 0 && errno == EINTR) {}
    close(report);
    for (;;) {
        struct pollfd fds[3] = {
            {.fd = signals, .events = POLLIN}, {.fd = deadlines, .events = POLLIN}, {.fd = timer, .events = POLLIN},
        };
        if (poll(fds, 3, -1) < 0 && errno != EINTR) _exit(125);
        int watchdog_gone = 0, deadline_passed = 0, exited = 0, child_status = 0;
        struct signalfd_siginfo info;
        while (read(signals, &info, sizeof info) == (ssize_t)sizeof info) {
            // SIGUSR1 is the parent-death signal only if the parent is indeed gone.
            if (info.ssi_signo == SIGUSR1 && getppid() != watchdog) watchdog_gone = 1;
        }
        int status;
        pid_t reaped;
        while ((reaped = waitpid(-1, &status, WNOHANG)) > 0) {
            if (reaped == child) {
                exited = 1;
                child_status = status;
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            int64_t forwarded;
            ssize_t count;
            while ((count = read(deadlines, &forwarded, sizeof forwarded)) == (ssize_t)sizeof forwarded) {
                if (forwarded > kill_at) kill_at = forwarded;
            }
            if (count == 0) watchdog_gone = 1;  // End of file: the watchdog died.
            arm(timer, kill_at);
        }
        if (fds[2].revents & POLLIN) {
            uint64_t expirations;
            while (read(timer, &expirations, sizeof expirations) > 0) {}
            deadline_passed = now_ns() >= kill_at;
            // The timer can expire a hair before clock_gettime() reaches the same instant: wait again, never
            // give up the deadline.
            if (!deadline_passed) arm(timer, kill_at);
        }
        if (exited) {
            // Whatever COMMAND left behind goes with it.
            kill(-child, SIGKILL);
            kill_all_children(0, NULL);
            _exit(exit_code(child_status));
        }
        if (watchdog_gone || deadline_passed) {
            // Nobody else may be able to kill the tree: the watchdog is dead, or frozen past the lease.
            if (leaf != NULL) write_file(leaf, "cgroup.kill", "1");
            kill(-child, SIGKILL);
            kill_all_children(0, NULL);
            _exit(137);
        }
    }
}

/// SIGTERM to COMMAND's tree: every process of the leaf but the guard, else COMMAND's process group.
static void terminate_tree(const char *leaf, pid_t guard_pid, pid_t command_pid) {
    if (leaf == NULL) {
        if (command_pid > 0) kill(-command_pid, SIGTERM);
        return;
    }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/cgroup.procs", leaf);
    FILE *procs = fopen(path, "re");
    if (procs == NULL) return;
    int pid;
    while (fscanf(procs, "%d", &pid) == 1) {
        if (pid != guard_pid) kill(pid, SIGTERM);
    }
    fclose(procs);
}

/// Kills COMMAND's whole tree and waits until it is gone; returns 1 when that is proven, and the guard's
/// status in `status`.
static int kill_tree(const char *leaf, pid_t guard_pid, pid_t command_pid, int *status) {
    *status = SIGKILL;  // As if killed, should the guard's status be lost.
    if (leaf != NULL) {
        if (understudy_cgroup_kill(leaf) == 0) {
            while (waitpid(guard_pid, status, 0) < 0 && errno == EINTR) {}
            return 1;
        }
        fprintf(stderr, "understudy-watchdog: cannot kill the cgroup %s: %s\n", leaf, strerror(errno));
        if (command_pid > 0) kill(-command_pid, SIGKILL);
        kill(guard_pid, SIGKILL);
        while (waitpid(guard_pid, status, 0) < 0 && errno == EINTR) {}
        return 0;
    }
    if (command_pid > 0) kill(-command_pid, SIGKILL);
    kill(guard_pid, SIGKILL);
    kill_all_children(guard_pid, status);  // The watchdog is a subreaper: this reaches every descendant.
    return 1;
}

/// Releases the slot through `understudy __release-slot`, which reads what it needs from descriptor 3.
static void release_slot(int release) {
    if (release < 0) return;
    pid_t child = fork();
    if (child < 0) return;
    if (child == 0) {
        if (release != 3 && dup2(release, 3) < 0) _exit(125);
        close_from(4, -1, -1);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (null >= 0) dup2(null, STDIN_FILENO);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        char *arguments[] = {"understudy", "__release-slot", NULL};
        execv("/proc/self/exe", arguments);
        _exit(125);
    }
    int status;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
}


int understudy_watchdog_main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "understudy-watchdog: usage: CONTROL_FD MARGIN_NS DEADLINE_NS LEAF RELEASE_FD COMMAND [ARGS...]\n");
        return 125;
    }
    int control = atoi(argv[1]);
    int64_t margin = strtoll(argv[2], NULL, 10);
    int64_t deadline = strtoll(argv[3], NULL, 10);
    const char *leaf = strcmp(argv[4], "-") == 0 ? NULL : argv[4];
    int release = atoi(argv[5]);
    char **command = argv + 6;

    // Only the control pipe and the release descriptor are ours; the supervisor's others (its store) are not.
    close_from(3, control, release);
    // Terminal and job-control signals are for the supervisor: the watchdog obeys only its pipe.
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTSTP, SIG_IGN);
    // Without a cgroup, descendants orphaned by the guard's death come here, where they can still be killed.
    if (leaf == NULL && understudy_set_subreaper() != 0) fail("prctl");

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &chld, NULL) != 0) fail("sigprocmask");
    int children = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (children < 0) fail("signalfd");
    int timer = timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK);
    if (timer < 0) fail("timerfd_create");
    int report[2], deadlines[2];
    if (pipe2(report, O_CLOEXEC) != 0 || pipe2(deadlines, O_CLOEXEC) != 0) fail("pipe");

    // Block every signal across the fork: the child inherits our ignored SIGTERM until it resets its handlers,
    // and a SIGTERM sent to its group in between would be lost. Blocked, it stays pending (Linux never discards
    // a blocked signal) and is delivered with its default action once the child unblocks.
    sigset_t all, watchdog_mask;
    sigfillset(&all);
    if (sigprocmask(SIG_SETMASK, &all, &watchdog_mask) != 0) fail("sigprocmask");
    pid_t watchdog = getpid();
    pid_t guard_pid = fork();
    if (guard_pid < 0) fail("fork");
    if (guard_pid == 0) {
        close(control);
        close(children);
        close(timer);
        close(report[0]);
        close(deadlines[1]);
        if (release >= 0) close(release);
        guard(watchdog, leaf, command, report[1], deadlines[0], deadline - margin);
    }
    sigprocmask(SIG_SETMASK, &watchdog_mask, NULL);
    close(report[1]);
    pid_t command_pid = 0;
    while (read(report[0], &command_pid, sizeof command_pid) < 0 && errno == EINTR) {}
    close(report[0]);
    close(deadlines[0]);
    int guard_deadlines = deadlines[1];
    fcntl(guard_deadlines, F_SETFL, fcntl(guard_deadlines, F_GETFL) | O_NONBLOCK);
    fcntl(control, F_SETFL, fcntl(control, F_GETFL) | O_NONBLOCK);
    // The deadline is a CLOCK_BOOTTIME instant, like the store's clock: time suspended counts.
    arm(timer, deadline - margin);

    char line[128];
    size_t used = 0;
    for (;;) {
        struct pollfd fds[3] = {
            {.fd = children, .events = POLLIN}, {.fd = control, .events = POLLIN}, {.fd = timer, .events = POLLIN},
        };
        int ready = poll(fds, 3, -1);
        if (ready < 0 && errno != EINTR) fail("poll");
        int status;
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo info;
            while (read(children, &info, sizeof info) > 0) {}
            if (waitpid(guard_pid, &status, WNOHANG) == guard_pid) {
                // COMMAND exited and the guard killed what it left, or the guard killed the tree at the deadline;
                // the cgroup (or the subreaper's empty child list) proves it.
                if (leaf != NULL) understudy_cgroup_kill(leaf);
                else kill_all_children(0, NULL);
                if (now_ns() >= deadline - margin) release_slot(release);
                return exit_code(status);
            }
        }
        if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
            for (;;) {
                ssize_t count = read(control, line + used, sizeof line - 1 - used);
                if (count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR)) {
                    // End of file: the supervisor is gone, and so is the lease's keeper.
                    if (kill_tree(leaf, guard_pid, command_pid, &status)) release_slot(release);
                    return 137;
                }
                if (count < 0) break;
                used += (size_t)count;
                char *newline;
                while ((newline = memchr(line, '\n', used)) != NULL) {
                    *newline = '\0';
                    if (line[0] == 'd') {
                        int64_t extended = strtoll(line + 1, NULL, 10);
                        if (extended > deadline) {
                            deadline = extended;
                            arm(timer, deadline - margin);
                            int64_t kill_at = deadline - margin;
                            // The guard's own copy; should its pipe ever be full, it already has a later one.
                            (void)!write(guard_deadlines, &kill_at, sizeof kill_at);
                        }
                    } else if (line[0] == 't') {
                        terminate_tree(leaf, guard_pid, command_pid);
                    } else if (line[0] == 'k') {
                        kill_tree(leaf, guard_pid, command_pid, &status);
                        return exit_code(status);
                    }
                    size_t consumed = (size_t)(newline - line) + 1;
                    memmove(line, newline + 1, used - consumed);
                    used -= consumed;
                }
                if (used == sizeof line - 1) used = 0;  // A line this long is not ours: drop it.
            }
        }
        // After the control messages, so that an extension already in the pipe counts.
        if (fds[2].revents & POLLIN) {
            uint64_t expirations;
            while (read(timer, &expirations, sizeof expirations) > 0) {}
            if (now_ns() >= deadline - margin) {
                // The supervisor is frozen and its lease is running out: kill, prove it, give the slot back.
                if (kill_tree(leaf, guard_pid, command_pid, &status)) release_slot(release);
                return 137;
            }
            arm(timer, deadline - margin);  // Not yet (an extension, or a timer a hair early): wait again.
        }
    }
}

int understudy_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}
