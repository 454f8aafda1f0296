// The watchdog between an `understudy run` supervisor and its child. See include/understudy_watchdog.h.
//
// Why it is a separate process: a supervisor that is frozen (SIGSTOP, swapped out, hung in a syscall) cannot
// stop anything, yet its lease runs out and another member activates. The watchdog runs no Swift, takes no
// locks and sleeps in poll(2), so it is independent of the supervisor's health. It is single-threaded, so the
// parent-death signal it sets on the child fires exactly when the watchdog process dies.
#define _GNU_SOURCE
#include "understudy_watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
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

/// Closes every descriptor from `lowest` up, except `keep`.
static void close_from(int lowest, int keep) {
    long limit = sysconf(_SC_OPEN_MAX);
    if (limit < 0 || limit > 65536) limit = 65536;
    for (int fd = lowest; fd < limit; fd++) {
        if (fd != keep) close(fd);
    }
}

static int exit_code(int status) {
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return 125;
}

int understudy_watchdog_main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "understudy-watchdog: usage: CONTROL_FD MARGIN_NS DEADLINE_NS COMMAND [ARGS...]\n");
        return 125;
    }
    int control = atoi(argv[1]);
    int64_t margin = strtoll(argv[2], NULL, 10);
    int64_t deadline = strtoll(argv[3], NULL, 10);
    char **command = argv + 4;

    // Only the control pipe is ours; whatever else the supervisor had open (its store) is not the child's.
    close_from(3, control);
    // Terminal and job-control signals are for the supervisor: the watchdog obeys only its pipe.
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGTSTP, SIG_IGN);

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    if (sigprocmask(SIG_BLOCK, &chld, NULL) != 0) fail("sigprocmask");
    int children = signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK);
    if (children < 0) fail("signalfd");

    // Block every signal across the fork: the child inherits our ignored SIGTERM until it resets its handlers,
    // and a SIGTERM sent to its group in between would be lost. Blocked, it stays pending (Linux never discards
    // a blocked signal) and is delivered with its default action once the child unblocks.
    sigset_t all, watchdog_mask;
    sigfillset(&all);
    if (sigprocmask(SIG_SETMASK, &all, &watchdog_mask) != 0) fail("sigprocmask");
    pid_t watchdog = getpid();
    pid_t child = fork();
    if (child < 0) fail("fork");
    if (child == 0) {
        // The watchdog is single-threaded, so "parent died" here means the watchdog process died.
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != watchdog) _exit(137);
        setpgid(0, 0);
        close(control);
        close(children);
        for (int number = 1; number < NSIG; number++) signal(number, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        execvp(command[0], command);
        fprintf(stderr, "understudy: cannot run %s: %s\n", command[0], strerror(errno));
        _exit(errno == ENOENT ? 127 : 126);
    }
    sigprocmask(SIG_SETMASK, &watchdog_mask, NULL);
    // Set the group from both sides so that no signal can reach a child that is not yet its own leader.
    setpgid(child, child);
    fcntl(control, F_SETFL, fcntl(control, F_GETFL) | O_NONBLOCK);

    char line[128];
    size_t used = 0;
    int pipe_open = 1;
    for (;;) {
        int status;
        pid_t reaped = waitpid(child, &status, WNOHANG);
        if (reaped == child) {
            // Whatever the child left behind in its group goes with it.
            kill(-child, SIGKILL);
            return exit_code(status);
        }

        int64_t kill_at = deadline - margin;
        int64_t now = now_ns();
        if (now >= kill_at) {
            kill(-child, SIGKILL);
            kill_at = INT64_MAX;
        }
        int timeout = -1;
        if (kill_at != INT64_MAX) {
            int64_t remaining = (kill_at - now + 999999) / 1000000;
            // Re-check at least every second: poll(2) does not count time the host spends suspended.
            timeout = remaining > 1000 ? 1000 : (int)remaining;
        }

        struct pollfd fds[2] = {{.fd = children, .events = POLLIN}, {.fd = pipe_open ? control : -1, .events = POLLIN}};
        int ready = poll(fds, 2, timeout);
        if (ready < 0 && errno != EINTR) fail("poll");
        if (fds[0].revents & POLLIN) {
            struct signalfd_siginfo info;
            while (read(children, &info, sizeof info) > 0) {}
        }
        if (pipe_open && (fds[1].revents & (POLLIN | POLLHUP | POLLERR))) {
            for (;;) {
                ssize_t count = read(control, line + used, sizeof line - 1 - used);
                if (count == 0 || (count < 0 && errno != EAGAIN && errno != EINTR)) {
                    // End of file: the supervisor is gone, and so is the lease's keeper.
                    pipe_open = 0;
                    deadline = INT64_MIN / 2;
                    kill(-child, SIGKILL);
                    break;
                }
                if (count < 0) break;
                used += (size_t)count;
                char *newline;
                while ((newline = memchr(line, '\n', used)) != NULL) {
                    *newline = '\0';
                    if (line[0] == 'd') {
                        int64_t extended = strtoll(line + 1, NULL, 10);
                        if (extended > deadline) deadline = extended;
                    } else if (line[0] == 't') {
                        kill(-child, SIGTERM);
                    } else if (line[0] == 'k') {
                        kill(-child, SIGKILL);
                    }
                    size_t consumed = (size_t)(newline - line) + 1;
                    memmove(line, newline + 1, used - consumed);
                    used -= consumed;
                }
                if (used == sizeof line - 1) used = 0;  // A line this long is not ours: drop it.
            }
        }
    }
}

int understudy_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}
