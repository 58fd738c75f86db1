/* helm processes a crashed worker left behind: this host's identity for
 * pids, /proc lookups of a recorded pid, and the search for processes by
 * their command's marker in the environment (helm_marked). Linux /proc
 * only; see executor.h. */
#include "executor.h"

#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void read_line_file(const char *path, char *out, size_t size) {
    out[0] = '\0';
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    if (fgets(out, (int)size, f))
        out[strcspn(out, "\n")] = '\0';
    fclose(f);
}

void helm_host_id(char *out, size_t size) {
    static char id[512];
    if (!id[0]) {
        char host[256] = "", boot[64], ns[64] = "";
        gethostname(host, sizeof(host) - 1);
        read_line_file("/proc/sys/kernel/random/boot_id", boot, sizeof(boot));
        ssize_t n = readlink("/proc/self/ns/pid", ns, sizeof(ns) - 1);
        ns[n > 0 ? n : 0] = '\0';
        snprintf(id, sizeof(id), "%s %s %s", host, boot, ns);
    }
    snprintf(out, size, "%s", id);
}

/* Reads state, process group and start time from /proc/PID/stat. The command
 * name (field 2) may hold spaces and parentheses: fields are counted from its
 * last ')'. Returns 0, or -1 when there is no such process. */
static int proc_stat(int pid, char *state, int *pgrp, unsigned long long *start) {
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    /* fields 3 (state), 5 (pgrp) and 22 (starttime) */
    char st;
    int pg;
    unsigned long long t;
    if (sscanf(p + 1, " %c %*s %d %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu", &st,
               &pg, &t) != 3)
        return -1;
    if (state)
        *state = st;
    if (pgrp)
        *pgrp = pg;
    if (start)
        *start = t;
    return 0;
}

int helm_proc_start_ticks(int pid, unsigned long long *ticks) {
    return proc_stat(pid, NULL, NULL, ticks);
}

int helm_proc_matches(int pid, unsigned long long ticks, const char *arg) {
    char st, path[64], cmdline[8192];
    unsigned long long t;
    if (pid <= 0 || proc_stat(pid, &st, NULL, &t) < 0 || st == 'Z' || st == 'X')
        return -1;
    if (t != ticks)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, cmdline, sizeof(cmdline) - 1);
    close(fd);
    if (n <= 0)
        return -1;
    cmdline[n] = '\0';
    for (char *a = cmdline; a < cmdline + n; a += strlen(a) + 1)
        if (strcmp(a, arg) == 0)
            return 1;
    return 0;
}

int helm_group_alive(int pgid) {
    if (pgid <= 1 || kill(-pgid, 0) != 0)
        return 0; /* ESRCH: gone; EPERM: not ours to wait for */
    /* kill() succeeds on zombies too (an orphan nobody reaped): look for a
     * member that still runs. */
    DIR *d = opendir("/proc");
    if (!d)
        return 1;
    int alive = 0;
    struct dirent *e;
    while (!alive && (e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        char st;
        int pg;
        if (*end || pid <= 0)
            continue;
        if (proc_stat((int)pid, &st, &pg, NULL) == 0 && pg == pgid && st != 'Z' && st != 'X')
            alive = 1;
    }
    closedir(d);
    return alive;
}

/* Whether /proc/PID/environ holds the entry marker exactly. */
static int environ_has(long pid, const char *marker) {
    char path[64], *buf = NULL;
    size_t len = 0, cap = 0;
    snprintf(path, sizeof(path), "/proc/%ld/environ", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0; /* gone, or another user's */
    for (;;) {
        if (cap - len < 4096) {
            char *b = realloc(buf, cap ? cap * 2 : 16384);
            if (!b)
                break;
            buf = b;
            cap = cap ? cap * 2 : 16384;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    int found = 0;
    if (buf)
        buf[len] = '\0'; /* read() left room for it */
    for (size_t i = 0; buf && i < len && !found; i += strlen(buf + i) + 1)
        found = strcmp(buf + i, marker) == 0;
    free(buf);
    return found;
}

int helm_marked(const char *marker, int sig, int *pgid) {
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    pid_t self = getpid(), own_group = getpgrp();
    int count = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end, st;
        int pg;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == self)
            continue;
        if (proc_stat((int)pid, &st, &pg, NULL) < 0 || st == 'Z' || st == 'X' || !environ_has(pid, marker))
            continue;
        count++;
        if (pgid)
            *pgid = pg;
        if (sig)
            kill(pg > 1 && pg != own_group ? -pg : (pid_t)pid, sig);
    }
    closedir(d);
    return count;
}
