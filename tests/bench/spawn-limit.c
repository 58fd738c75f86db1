/* spawn-limit: the physical limit for helmq-worker's throughput with a given
 * helm: a plain loop that keeps CONCURRENCY helm processes running, N in all,
 * and does nothing else. Each child gets the argv the worker would build
 * (install for the first KEYS, upgrade after), its own session (setsid, as the
 * worker's UV_PROCESS_DETACHED), stdout and stderr pipes that are read to the
 * end, and is reaped. posix_spawn (clone(CLONE_VM|CLONE_VFORK) in glibc): the
 * cheapest way Linux offers to start a process.
 *
 *   spawn-limit -n N -c CONCURRENCY [-k KEYS] [-s NAMESPACE] [-f] [-b MIB] HELM
 *
 * -f starts each child the way libuv's uv_spawn does on Linux instead: fork(),
 * then the parent blocks until the child's execve closes a CLOEXEC pipe.
 * -b MIB first allocates and touches MIB MiB of heap (a parent as large as a
 * busy worker), to show how the cost of fork grows with the parent while
 * posix_spawn's does not.
 *
 * Prints: "commands=N concurrency=C seconds=S per_second=R failures=F cpu_seconds=U ... minflt=M"
 * (cpu_seconds: user + system time of this loop and of its children; minflt: their minor page
 * faults). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

typedef struct slot {
    pid_t pid;
    int out, err;
} slot_t;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void drain(int fd) {
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof(buf));
        if (n > 0)
            continue;
        if (n < 0 && errno == EINTR)
            continue;
        break;
    }
    close(fd);
}

/* fork + execve with libuv's error pipe: returns once the child has exec'd. */
static pid_t fork_exec(const char *path, char *const args[], int out, int err) {
    int ep[2];
    if (pipe2(ep, O_CLOEXEC) != 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        setsid();
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        dup2(out, 1);
        dup2(err, 2);
        execve(path, args, environ);
        int e = errno;
        if (write(ep[1], &e, sizeof(e)) < 0) {
        }
        _exit(127);
    }
    close(ep[1]);
    int e;
    ssize_t r;
    do
        r = read(ep[0], &e, sizeof(e));
    while (r < 0 && errno == EINTR);
    close(ep[0]);
    return pid;
}

#define USAGE "usage: spawn-limit -n N -c CONCURRENCY [-k KEYS] [-s NAMESPACE] [-f] [-b MIB] HELM\n"

int main(int argc, char **argv) {
    long n = 1000, keys = 1000, ballast_mib = 0;
    int conc = 8, opt, use_fork = 0;
    const char *ns = "bench-limit";
    while ((opt = getopt(argc, argv, "n:c:k:s:fb:")) != -1) {
        switch (opt) {
        case 'n': n = atol(optarg); break;
        case 'c': conc = atoi(optarg); break;
        case 'k': keys = atol(optarg); break;
        case 's': ns = optarg; break;
        case 'f': use_fork = 1; break;
        case 'b': ballast_mib = atol(optarg); break;
        default: fprintf(stderr, USAGE); return 2;
        }
    }
    if (optind >= argc || conc < 1 || n < 1 || keys < 1) {
        fprintf(stderr, USAGE);
        return 2;
    }
    if (ballast_mib > 0) {
        size_t sz = (size_t)ballast_mib << 20;
        char *b = malloc(sz);
        if (b)
            memset(b, 1, sz);
    }
    double spawn_s = 0;
    const char *helm = argv[optind];
    slot_t *slots = calloc((size_t)conc, sizeof(slot_t));
    char values[] = "/dev/null";
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
#ifdef POSIX_SPAWN_SETSID
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
#endif
    /* stdin: one /dev/null for all children, as the worker does */
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0) {
        perror("/dev/null");
        return 1;
    }
    long started = 0, done = 0, failures = 0;
    int running = 0;
    double t0 = mono();
    while (done < n) {
        while (running < conc && started < n) {
            int po[2], pe[2];
            if (pipe2(po, O_CLOEXEC) != 0 || pipe2(pe, O_CLOEXEC) != 0) {
                perror("pipe2");
                return 1;
            }
            posix_spawn_file_actions_t fa;
            posix_spawn_file_actions_init(&fa);
            posix_spawn_file_actions_adddup2(&fa, devnull, 0);
            posix_spawn_file_actions_adddup2(&fa, po[1], 1);
            posix_spawn_file_actions_adddup2(&fa, pe[1], 2);
            char rel[64], chart[] = "oci://registry.example/charts/bench-chart";
            snprintf(rel, sizeof(rel), "rel-%ld", started % keys);
            const char *op = started < keys ? "install" : "upgrade";
            char *args[] = {(char *)helm, (char *)op, rel, chart, "--namespace", (char *)ns, "--version", "1.0.0",
                            "--values", values, "--timeout", "300s", "--output", "json", NULL};
            pid_t pid;
            double ts = mono();
            int rc = 0;
            if (use_fork) {
                pid = fork_exec(helm, args, po[1], pe[1]);
                if (pid < 0)
                    rc = errno;
            } else {
                rc = posix_spawn(&pid, helm, &fa, &attr, args, environ);
            }
            spawn_s += mono() - ts;
            posix_spawn_file_actions_destroy(&fa);
            close(po[1]);
            close(pe[1]);
            if (rc != 0) {
                fprintf(stderr, "posix_spawn %s: %s\n", helm, strerror(rc));
                return 1;
            }
            int i = 0;
            while (slots[i].pid)
                i++;
            slots[i].pid = pid;
            slots[i].out = po[0];
            slots[i].err = pe[0];
            running++;
            started++;
        }
        int status;
        pid_t pid = waitpid(-1, &status, 0);
        if (pid < 0) {
            if (errno == EINTR)
                continue;
            perror("waitpid");
            return 1;
        }
        for (int i = 0; i < conc; i++) {
            if (slots[i].pid != pid)
                continue;
            drain(slots[i].out);
            drain(slots[i].err);
            slots[i].pid = 0;
            break;
        }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failures++;
        running--;
        done++;
    }
    double s = mono() - t0;
    struct rusage self, kids;
    getrusage(RUSAGE_SELF, &self);
    getrusage(RUSAGE_CHILDREN, &kids);
    double cpu = (double)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec + kids.ru_stime.tv_sec) +
                 (double)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) / 1e6;
    printf("commands=%ld concurrency=%d seconds=%.3f per_second=%.1f failures=%ld cpu_seconds=%.2f "
           "spawn_ms_mean=%.3f mode=%s ballast_mib=%ld minflt=%ld\n",
           n, conc, s, (double)n / s, failures, cpu, spawn_s / (double)n * 1000, use_fork ? "fork" : "posix_spawn",
           ballast_mib, self.ru_minflt + kids.ru_minflt);
    return failures ? 1 : 0;
}
