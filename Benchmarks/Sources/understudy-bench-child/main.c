// The child that benchmarks supervise: appends "<CLOCK_BOOTTIME ns> <pid> <label> <token>\n" to FILE the moment
// it runs, then sleeps until it is killed. With a third argument `escape`, it also starts a `setsid` grandchild
// (its pid appended to FILE.escapers) that sleeps too. Exits by itself after ten minutes, so it cannot outlive an interrupted
// benchmark by long.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    struct timespec now;
    clock_gettime(CLOCK_BOOTTIME, &now);
    if (argc < 3) {
        fprintf(stderr, "usage: understudy-bench-child FILE LABEL\n");
        return 2;
    }
    const char *token = getenv("UNDERSTUDY_FENCING_TOKEN");
    char line[512];
    int length = snprintf(line, sizeof line, "%lld %d %s %s\n",
                          (long long)now.tv_sec * 1000000000LL + now.tv_nsec, (int)getpid(), argv[2],
                          token ? token : "-");
    int fd = open(argv[1], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || write(fd, line, (size_t)length) != length) {
        perror("understudy-bench-child");
        return 1;
    }
    close(fd);
    if (argc > 3 && strcmp(argv[3], "escape") == 0) {
        // A grandchild that leaves the process group and the session, as a daemon would, and records its pid
        // in FILE.escapers so that the benchmark can check whether it outlived the lease.
        pid_t escaper = fork();
        if (escaper == 0) {
            setsid();
            char path[4096], record[128];
            snprintf(path, sizeof path, "%s.escapers", argv[1]);
            int escapers = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
            int size = snprintf(record, sizeof record, "%d %s\n", (int)getpid(), argv[2]);
            if (escapers >= 0) (void)!write(escapers, record, (size_t)size);
            alarm(600);
            for (;;) pause();
        }
    }
    alarm(600);
    for (;;) pause();
}
