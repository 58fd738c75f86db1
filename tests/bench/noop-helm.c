/* noop-helm: the cheapest thing that still looks like helm to helmq-worker.
 *
 * Accepts the argv shapes the worker builds (helm install|upgrade|rollback|
 * uninstall|status|history RELEASE [CHART|REVISION] --namespace NS ... [--output json])
 * and does no work: install/upgrade/status with `-o json` print a minimal valid
 * release JSON, history its last revision as helm's JSON array, rollback/uninstall
 * print helm's one-line message, exit 0.
 *
 * Environment:
 *   NOOP_HELM_STATE=DIR   keep each release's revision in DIR/NS#RELEASE (one
 *                         small file: install writes 1, upgrade/rollback add 1,
 *                         uninstall removes it, status reads it and says
 *                         "Error: release: not found" without it). Unset: every
 *                         release is at revision 1.
 *   NOOP_HELM_SLEEP_MS=N  operations (not status or history) sleep N ms first.
 *   NOOP_HELM_HANG=1      operations (not status or history) never finish: they wait for a
 *                         signal (SIGTERM kills them as usual; nothing ignored).
 *   NOOP_HELM_HANG_VERBS="install upgrade"  with NOOP_HELM_HANG, only these
 *                         operations hang (the others finish at once): a timed-out
 *                         install's rollback (helm uninstall) then does not hang too.
 *   NOOP_HELM_HANG_LOG=F  with NOOP_HELM_HANG, on SIGTERM append
 *                         "START_NS TERM_NS PID\n" (CLOCK_REALTIME) to F, then
 *                         exit 143 as the default action would.
 *
 * Built static (like the real helm, a static Go binary) by tests/bench/bench.mk. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Whether verb is one of the space-separated words of list (any verb when list is unset). */
static int verb_listed(const char *list, const char *verb) {
    if (!list)
        return 1;
    size_t n = strlen(verb);
    for (const char *p = list; (p = strstr(p, verb)) != NULL; p += n)
        if ((p == list || p[-1] == ' ') && (p[n] == '\0' || p[n] == ' '))
            return 1;
    return 0;
}

static char out[4096];
static size_t out_len;

static void put(const char *s) {
    size_t n = strlen(s);
    if (out_len + n < sizeof(out)) {
        memcpy(out + out_len, s, n);
        out_len += n;
    }
}

static void put_json_str(const char *s) {
    char b[8];
    put("\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            b[0] = '\\', b[1] = (char)ch, b[2] = 0;
            put(b);
        } else if (ch < 0x20) {
            snprintf(b, sizeof(b), "\\u%04x", ch);
            put(b);
        } else {
            b[0] = (char)ch, b[1] = 0;
            put(b);
        }
    }
    put("\"");
}

static void flush_out(int fd) {
    size_t off = 0;
    while (off < out_len) {
        ssize_t w = write(fd, out + off, out_len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    out_len = 0;
}

static long long realtime_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long hang_start_ns;

static void on_term(int sig) {
    (void)sig;
    long long now = realtime_ns();
    const char *log = getenv("NOOP_HELM_HANG_LOG");
    if (log) {
        char line[96];
        int n = snprintf(line, sizeof(line), "%lld %lld %d\n", hang_start_ns, now, (int)getpid());
        int fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) {
            if (write(fd, line, (size_t)n) < 0) {
            }
            close(fd);
        }
    }
    _exit(128 + SIGTERM);
}

/* The state file of a release: DIR/NS#NAME ('/' replaced). */
static int state_path(char *path, size_t size, const char *ns, const char *rel) {
    const char *dir = getenv("NOOP_HELM_STATE");
    if (!dir || !*dir)
        return -1;
    int n = snprintf(path, size, "%s/%s#%s", dir, ns ? ns : "", rel ? rel : "");
    if (n < 0 || (size_t)n >= size)
        return -1;
    for (char *p = path + strlen(dir) + 1; *p; p++)
        if (*p == '/')
            *p = '_';
    return 0;
}

/* Reads "REVISION CHART VERSION" from the state file; 0 when absent. */
static int state_read(const char *path, char *chart, size_t chart_size, char *version, size_t version_size) {
    char buf[512];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    int rev = 0;
    char c[200] = "", v[100] = "";
    if (sscanf(buf, "%d %199s %99s", &rev, c, v) < 1)
        return 0;
    if (chart)
        snprintf(chart, chart_size, "%s", c);
    if (version)
        snprintf(version, version_size, "%s", v);
    return rev;
}

static void state_write(const char *path, int rev, const char *chart, const char *version) {
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "%d %s %s\n", rev, chart && *chart ? chart : "-",
                     version && *version ? version : "-");
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (write(fd, buf, (size_t)n) < 0) {
    }
    close(fd);
}

static void release_json(const char *rel, const char *ns, const char *status, const char *desc, const char *chart,
                         const char *version, int rev) {
    char num[32];
    put("{\"name\":");
    put_json_str(rel);
    put(",\"info\":{\"status\":");
    put_json_str(status);
    put(",\"description\":");
    put_json_str(desc);
    put("},\"chart\":{\"metadata\":{\"name\":");
    put_json_str(chart);
    put(",\"version\":");
    put_json_str(version);
    put(",\"appVersion\":");
    put_json_str(version);
    put("}},\"config\":{},\"version\":");
    snprintf(num, sizeof(num), "%d", rev);
    put(num);
    put(",\"namespace\":");
    put_json_str(ns);
    put("}\n");
}

int main(int argc, char **argv) {
    const char *sub = NULL, *ns = "default", *version = "0.1.0";
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0, json = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "--namespace") || !strcmp(a, "-n")) && i + 1 < argc)
            ns = argv[++i];
        else if (!strcmp(a, "--version") && i + 1 < argc)
            version = argv[++i];
        else if ((!strcmp(a, "--output") || !strcmp(a, "-o")) && i + 1 < argc)
            json = !strcmp(argv[++i], "json");
        else if ((!strcmp(a, "--values") || !strcmp(a, "-f") || !strcmp(a, "--timeout") ||
                  !strcmp(a, "--description") || !strcmp(a, "--repo")) &&
                 i + 1 < argc)
            i++;
        else if (a[0] == '-')
            continue; /* boolean flags: --create-namespace, --wait, --wait-for-jobs, ... */
        else if (!sub)
            sub = a;
        else if (npos < 3)
            pos[npos++] = a;
    }
    if (!sub) {
        fputs("Error: noop-helm: no subcommand\n", stderr);
        return 1;
    }
    if (!strcmp(sub, "version")) {
        puts("v3.17.3-noop");
        return 0;
    }
    const char *rel = pos[0] ? pos[0] : "release";
    int op = strcmp(sub, "status") != 0 && strcmp(sub, "history") != 0;
    if (op) {
        const char *hang = getenv("NOOP_HELM_HANG");
        if (hang && *hang && strcmp(hang, "0") != 0 && verb_listed(getenv("NOOP_HELM_HANG_VERBS"), sub)) {
            hang_start_ns = realtime_ns();
            struct sigaction sa;
            memset(&sa, 0, sizeof(sa));
            sa.sa_handler = on_term;
            sigaction(SIGTERM, &sa, NULL);
            for (;;)
                pause();
        }
        const char *sl = getenv("NOOP_HELM_SLEEP_MS");
        long ms = sl ? atol(sl) : 0;
        if (ms > 0) {
            struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
            while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
                ;
        }
    }
    char path[4096], chart_buf[200] = "", ver_buf[100] = "";
    int have_state = state_path(path, sizeof(path), ns, rel) == 0;
    /* The chart's name: the last path element of the chart reference. */
    const char *chart = pos[1] ? pos[1] : "chart";
    const char *slash = strrchr(chart, '/');
    if (slash && slash[1])
        chart = slash + 1;

    if (!strcmp(sub, "install") || !strcmp(sub, "upgrade")) {
        int rev = 1;
        int inst = !strcmp(sub, "install");
        if (have_state) {
            if (!inst)
                rev = state_read(path, NULL, 0, NULL, 0) + 1;
            state_write(path, rev, chart, version);
        }
        if (json)
            release_json(rel, ns, "deployed", inst ? "Install complete" : "Upgrade complete", chart, version, rev);
        else
            put("STATUS: deployed\n");
        flush_out(1);
        return 0;
    }
    if (!strcmp(sub, "status") || !strcmp(sub, "history")) {
        int rev = 1;
        if (have_state) {
            rev = state_read(path, chart_buf, sizeof(chart_buf), ver_buf, sizeof(ver_buf));
            if (rev <= 0) {
                fputs("Error: release: not found\n", stderr);
                return 1;
            }
        }
        const char *c = chart_buf[0] ? chart_buf : "chart", *v = ver_buf[0] ? ver_buf : version;
        if (!strcmp(sub, "status")) {
            release_json(rel, ns, "deployed", "noop", c, v, rev);
        } else { /* helm history RELEASE --max 1 -o json: the last revision */
            char line[1024];
            snprintf(line, sizeof(line),
                     "[{\"revision\":%d,\"updated\":\"2026-01-01T00:00:00Z\",\"status\":\"deployed\","
                     "\"chart\":\"%s-%s\",\"app_version\":\"%s\",\"description\":\"noop\"}]\n",
                     rev, c, v, v);
            put(line);
        }
        flush_out(1);
        return 0;
    }
    if (!strcmp(sub, "rollback")) {
        if (have_state) {
            int rev = state_read(path, chart_buf, sizeof(chart_buf), ver_buf, sizeof(ver_buf));
            if (rev <= 0) {
                fputs("Error: release: not found\n", stderr);
                return 1;
            }
            state_write(path, rev + 1, chart_buf, ver_buf);
        }
        put("Rollback was a success! Happy Helming!\n");
        flush_out(1);
        return 0;
    }
    if (!strcmp(sub, "uninstall")) {
        if (have_state && unlink(path) != 0 && errno == ENOENT) {
            fprintf(stderr, "Error: uninstall: Release not loaded: %s: release: not found\n", rel);
            return 1;
        }
        put("release \"");
        put(rel);
        put("\" uninstalled\n");
        flush_out(1);
        return 0;
    }
    fprintf(stderr, "Error: noop-helm: unknown command \"%s\"\n", sub);
    return 1;
}
