/* calib: how fast this machine is right now, in the three costs that the
 * benchmarks' CPU figures are made of. A benchmark's "CPU s per 1,000
 * commands" moved 3-5x between runs of the same build on this (virtual)
 * machine; these figures, taken at the start and the end of `make bench`,
 * say which cost moved.
 *
 *   calib HELM
 *
 * Every figure is CPU time (this process's, or the spawned child's), not wall time.
 *
 *   cpu_ms    a fixed integer loop (300 M multiply-adds): pure user-space compute
 *   mem_ns    one dependent load in a random cycle over 64 MiB (a cache miss each):
 *             the memory's latency, which a busy neighbour on the host moves
 *   syscall_ns  one system call that does nothing (getppid): the kernel's entry and
 *             exit, which mitigations such as page-table isolation make dear
 *   fault_us  one first touch of a fresh anonymous 4 KiB page (mmap, touch
 *             64 MiB page by page, munmap; the mean over 4 rounds): the kernel's
 *             page fault plus whatever the hypervisor adds when it backs a page
 *   spawn_us  CPU (user + system, the child's and this process's) of one
 *             posix_spawn + exit + waitpid of HELM `version`, one at a time, 200
 *             times: the no-op helm's whole life as the spawn limit pays it
 *   spawn_faults  minor page faults per spawn (the child's, from getrusage)
 *
 * Prints one line: "cpu_ms=X mem_ns=M syscall_ns=S fault_us=Y spawn_us=Z spawn_faults=F". */
#define _GNU_SOURCE
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* This process's CPU time, not the wall clock: the figures are the CPU time a
 * fixed piece of work is charged, like the benchmarks' CPU columns, whatever
 * else runs on the machine meanwhile. On a virtual machine that reports no
 * steal time, time the host takes the CPU away is charged here too. */
static double cpu_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static double cpu_loop_ms(void) {
    volatile uint64_t x = 1;
    double t0 = cpu_now_ms();
    for (uint64_t i = 0; i < 300000000ULL; i++)
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return cpu_now_ms() - t0;
}

static double fault_us(void) {
    const size_t size = 64u << 20;
    const size_t page = 4096;
    double total = 0;
    for (int round = 0; round < 4; round++) {
        double t0 = cpu_now_ms();
        char *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return -1;
        for (size_t i = 0; i < size; i += page)
            p[i] = 1;
        munmap(p, size);
        total += cpu_now_ms() - t0;
    }
    return total * 1000 / (4.0 * (double)(size / page));
}

/* Nanoseconds per dependent load over 64 MiB in a random cycle: each load a
 * cache miss, so this is the memory's latency (what a noisy neighbour moves). */
static double mem_ns(void) {
    const size_t n = (64u << 20) / sizeof(size_t);
    size_t *next = malloc(n * sizeof(size_t));
    if (!next)
        return -1;
    for (size_t i = 0; i < n; i++)
        next[i] = i;
    uint64_t r = 88172645463325252ULL;
    for (size_t i = n - 1; i > 0; i--) { /* Sattolo: one cycle through every slot */
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        size_t j = (size_t)(r % i), t = next[i];
        next[i] = next[j], next[j] = t;
    }
    const size_t steps = 4000000;
    volatile size_t at = 0;
    size_t p = 0;
    double t0 = cpu_now_ms();
    for (size_t i = 0; i < steps; i++)
        p = next[p];
    at = p;
    (void)at;
    double ns = (cpu_now_ms() - t0) * 1e6 / (double)steps;
    free(next);
    return ns;
}

/* Nanoseconds of CPU per system call (getppid: the kernel's entry and exit and
 * nearly nothing else), which page-table isolation and other mitigations set. */
static double syscall_ns(void) {
    const int n = 1000000;
    double t0 = cpu_now_ms();
    for (int i = 0; i < n; i++)
        syscall(SYS_getppid);
    return (cpu_now_ms() - t0) * 1e6 / n;
}

static double tv_us(struct timeval tv) { return (double)tv.tv_sec * 1e6 + (double)tv.tv_usec; }

static int spawn_cost(const char *helm, double *us, double *faults) {
    const int n = 200;
    struct rusage s0, k0, s1, k1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    getrusage(RUSAGE_SELF, &s0);
    getrusage(RUSAGE_CHILDREN, &k0);
    for (int i = 0; i < n; i++) {
        char *argv[] = {(char *)helm, "version", NULL};
        pid_t pid;
        int status;
        if (posix_spawn(&pid, helm, &fa, NULL, argv, environ) != 0 || waitpid(pid, &status, 0) != pid) {
            posix_spawn_file_actions_destroy(&fa);
            return -1;
        }
    }
    getrusage(RUSAGE_SELF, &s1);
    getrusage(RUSAGE_CHILDREN, &k1);
    posix_spawn_file_actions_destroy(&fa);
    double self = tv_us(s1.ru_utime) + tv_us(s1.ru_stime) - tv_us(s0.ru_utime) - tv_us(s0.ru_stime);
    double kids = tv_us(k1.ru_utime) + tv_us(k1.ru_stime) - tv_us(k0.ru_utime) - tv_us(k0.ru_stime);
    *us = (self + kids) / n;
    *faults = (double)(k1.ru_minflt - k0.ru_minflt) / n;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2 || !strcmp(argv[1], "--help")) {
        fprintf(stderr, "usage: calib HELM   (prints cpu_ms= mem_ns= syscall_ns= fault_us= spawn_us= spawn_faults=)\n");
        return 2;
    }
    double spawn_us, spawn_faults;
    if (spawn_cost(argv[1], &spawn_us, &spawn_faults) < 0) {
        fprintf(stderr, "calib: cannot spawn %s\n", argv[1]);
        return 1;
    }
    printf("cpu_ms=%.1f mem_ns=%.1f syscall_ns=%.0f fault_us=%.2f spawn_us=%.0f spawn_faults=%.0f\n", cpu_loop_ms(),
           mem_ns(), syscall_ns(), fault_us(), spawn_us, spawn_faults);
    return 0;
}
