/* The process the load generator watches: after a byte on stdin, makes `calls_per_sec`
 * getppid() calls per second for `seconds` (paced in 1 ms slots; 0 = as fast as
 * possible), then prints how many it made. Each call makes the BPF side emit events.
 * `--getppid-nr` prints getppid's syscall number on this architecture instead: the
 * BPF side counts only those calls of the priority target (loadgen.bpf.c). */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--getppid-nr") == 0) {
        printf("%d\n", SYS_getppid);
        return 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: %s CALLS_PER_SEC SECONDS | --getppid-nr\n", argv[0]);
        return 2;
    }
    double rate = atof(argv[1]), seconds = atof(argv[2]);
    char go;
    if (read(0, &go, 1) != 1)
        return 1;
    long calls = 0;
    double t0 = now(), t;
    while ((t = now() - t0) < seconds) {
        long due = rate > 0 ? (long)(t * rate) + 1 : calls + 1000;
        while (calls < due) {
            syscall(SYS_getppid);
            calls++;
        }
        if (rate > 0) {
            struct timespec slot = {0, 1000000};
            nanosleep(&slot, NULL);
        }
    }
    printf("%ld\n", calls);
    return 0;
}
