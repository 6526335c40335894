/* Tight syscall loops for bench/run.py: prints nanoseconds per operation.
 * usage: loops mprotect|mprotect_rw|mprotect_x|mprotect_r|open|open_w|create|rename|ioctl|procmem|chmod|connect|exec|fork|unshare
 *              N [PATH]
 * PATH: the file open opens / exec executes / chmod changes (default /etc/hostname, /bin/true).
 * Compiled by the benchmark itself (gcc -O2): Python's own overhead would hide the
 * per-call cost of the LSM programs. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <sched.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
    if (argc != 3 && argc != 4)
        return 2;
    const char *kind = argv[1];
    long n = atol(argv[2]);
    /* open_w and rename write: their default is a scratch file of their own. */
    int writes = !strcmp(kind, "open_w") || !strcmp(kind, "rename");
    const char *path = argc == 4 ? argv[3] : !strcmp(kind, "exec") ? "/bin/true" : writes ? "/tmp/krsid-loops.w" : "/etc/hostname";
    char moved[4096];
    snprintf(moved, sizeof(moved), "%s.moved", path);
    int scratch = writes && argc != 4; /* created here, removed at the end */
    if (scratch)
        close(open(path, O_WRONLY | O_CREAT, 0600));
    void *page = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int ioctl_fd = -1;
    if (!strcmp(kind, "ioctl") && (ioctl_fd = open(path, O_RDONLY)) < 0)
        return 1;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(9)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!strcmp(kind, "unshare")) {
        /* unshare(CLONE_NEWUSER), once per forked child: a second one from inside the
         * new (unmapped) namespace fails before the LSM hook. Only the call itself is
         * timed (not fork/exit), summed in shared memory; failures (EPERM when a
         * policy denies) are counted on stderr. */
        double *acc = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        long *failed = (long *)(acc + 1);  /* acc[0]: total ns; acc[4]: the child's ns */
        for (long i = 0; i < n; i++) {
            pid_t p = fork();
            if (p == 0) {
                double t = now();
                int rc = unshare(CLONE_NEWUSER);
                t = now() - t;
                __sync_fetch_and_add(failed, rc != 0);
                __atomic_store_n((long *)(acc + 4), (long)t, __ATOMIC_SEQ_CST);
                _exit(0);
            }
            waitpid(p, 0, 0);
            acc[0] += (double)__atomic_load_n((long *)(acc + 4), __ATOMIC_SEQ_CST);
        }
        fprintf(stderr, "failed=%ld\n", *failed);
        printf("%.1f\n", acc[0] / n);
        return 0;
    }
    double t0 = now();
    for (long i = 0; i < n; i++) {
        if (!strcmp(kind, "mprotect")) {          /* W^X flip: emitted by file_mprotect */
            mprotect(page, 4096, PROT_READ | PROT_EXEC);
            mprotect(page, 4096, PROT_READ | PROT_WRITE);
        } else if (!strcmp(kind, "mprotect_rw")) { /* no EXEC: filtered in the kernel */
            mprotect(page, 4096, PROT_READ);
            mprotect(page, 4096, PROT_READ | PROT_WRITE);
        } else if (!strcmp(kind, "mprotect_x")) {  /* every call asks for EXEC: all emitted */
            mprotect(page, 4096, PROT_READ | PROT_EXEC);
        } else if (!strcmp(kind, "mprotect_r")) {  /* no call asks for EXEC: all filtered */
            mprotect(page, 4096, PROT_READ);
        } else if (!strcmp(kind, "open")) {        /* filtered unless PATH is a sensitive path */
            close(open(path, O_RDONLY));
        } else if (!strcmp(kind, "open_w")) {      /* a write open: file_open's watch walk, not watched */
            close(open(path, O_WRONLY));
        } else if (!strcmp(kind, "create")) {      /* PATH.moved made and removed: inode_create, file_open, inode_unlink */
            close(open(moved, O_WRONLY | O_CREAT | O_EXCL, 0644));
            unlink(moved);
        } else if (!strcmp(kind, "rename")) {      /* there and back: inode_rename's watch walks, not watched */
            rename(path, moved);
            rename(moved, path);
        } else if (!strcmp(kind, "ioctl")) {       /* FIONREAD on PATH: file_ioctl's command check, filtered */
            int unread = 0;
            ioctl(ioctl_fd, FIONREAD, &unread);
        } else if (!strcmp(kind, "procmem")) {     /* write-open of its own memory: emitted by file_open */
            close(open("/proc/self/mem", O_RDWR));
        } else if (!strcmp(kind, "chmod")) {       /* setuid bit on and off: inode_setattr */
            chmod(path, 04755);
            chmod(path, 0755);
        } else if (!strcmp(kind, "connect")) {     /* UDP connect to loopback: no packet */
            int s = socket(AF_INET, SOCK_DGRAM, 0);
            connect(s, (struct sockaddr *)&sin, sizeof(sin));
            close(s);
        } else if (!strcmp(kind, "fork")) {        /* fork + exit: one credential copy */
            pid_t p = fork();
            if (p == 0)
                _exit(0);
            waitpid(p, 0, 0);
        } else if (!strcmp(kind, "exec")) {        /* fork + exec: emitted */
            pid_t p = fork();
            if (p == 0) {
                execl(path, "true", (char *)0);
                _exit(127);
            }
            waitpid(p, 0, 0);
        } else {
            return 2;
        }
    }
    double per = (now() - t0) / n;
    if (scratch)
        unlink(path);
    int pairs = !strcmp(kind, "mprotect") || !strcmp(kind, "mprotect_rw") || !strcmp(kind, "chmod") ||
                !strcmp(kind, "rename"); /* two calls per turn */
    printf("%.1f\n", pairs ? per / 2 : per);
    return 0;
}
