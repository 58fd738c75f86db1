/* helm child processes on the libuv loop: spawning (posix_spawn on libuv's
 * thread pool), reading their output, the deadline's SIGTERM and SIGKILL,
 * reaping through a pidfd; and the values helm reads (a memfd, or a private
 * file). See executor.h. */
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

#define HELM_OUT_MAX (8 * 1024 * 1024)

/* --- running ---------------------------------------------------------- */

static void run_handle_closed(uv_handle_t *h) {
    helm_run_t *run = h->data;
    if (h == (uv_handle_t *)&run->exit_poll && run->pidfd >= 0) {
        close(run->pidfd);
        run->pidfd = -1;
    }
    if (--run->open_handles == 0) {
        free(run->out);
        free(run);
    }
}

static void close_handle(helm_run_t *run, uv_handle_t *h) {
    if (uv_is_closing(h))
        return;
    /* exit_poll exists only with a pidfd; it is never initialised otherwise. */
    if (h == (uv_handle_t *)&run->exit_poll && run->pidfd < 0)
        return;
    uv_close(h, run_handle_closed);
}

/* Every handle of a run closes through here; the last one frees the run.
 * The pipes may close first (at end of output); helm_run_free closes the rest.
 * A helm still running is left alone (the worker is exiting: the next one
 * reconciles it). */
void helm_run_free(helm_run_t *run) {
    if (!run)
        return;
    if (run->spawning)
        run->freeing = 1; /* spawn_after lets go of the run */
    close_handle(run, (uv_handle_t *)&run->exit_poll);
    close_handle(run, (uv_handle_t *)&run->reap_timer);
    close_handle(run, (uv_handle_t *)&run->out_pipe);
    close_handle(run, (uv_handle_t *)&run->err_pipe);
    close_handle(run, (uv_handle_t *)&run->term_timer);
    close_handle(run, (uv_handle_t *)&run->kill_timer);
}

/* done runs when the process has exited and both pipes reached EOF. */
static int pending_parts(helm_run_t *run) {
    return (run->ended_ms == 0) + !uv_is_closing((uv_handle_t *)&run->out_pipe) +
           !uv_is_closing((uv_handle_t *)&run->err_pipe);
}

static void maybe_done(helm_run_t *run) {
    if (pending_parts(run) == 0 && run->done) {
        helm_done_cb done = run->done;
        run->done = NULL;
        uv_timer_stop(&run->term_timer);
        uv_timer_stop(&run->kill_timer);
        done(run);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
    static char scratch[65536];
    (void)h;
    (void)suggested;
    /* One loop thread: a static scratch buffer is enough; data is copied out. */
    *buf = uv_buf_init(scratch, sizeof(scratch));
}

static void on_out(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    helm_run_t *run = s->data;
    if (n < 0) {
        uv_read_stop(s);
        uv_close((uv_handle_t *)s, run_handle_closed);
        maybe_done(run);
        return;
    }
    if (run->out_len + (size_t)n + 1 > run->out_cap && run->out_len < HELM_OUT_MAX) {
        size_t cap = run->out_cap ? run->out_cap : 8192;
        while (cap < run->out_len + (size_t)n + 1)
            cap *= 2;
        char *o = realloc(run->out, cap);
        if (o) {
            run->out = o;
            run->out_cap = cap;
        }
    }
    if (run->out && run->out_len + (size_t)n + 1 <= run->out_cap) {
        memcpy(run->out + run->out_len, buf->base, (size_t)n);
        run->out_len += (size_t)n;
        run->out[run->out_len] = '\0';
    }
}

static void on_err(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
    helm_run_t *run = s->data;
    if (n < 0) {
        uv_read_stop(s);
        uv_close((uv_handle_t *)s, run_handle_closed);
        maybe_done(run);
        return;
    }
    /* Keep the tail: the error helm prints last is the one that matters. */
    size_t cap = sizeof(run->err) - 1;
    if ((size_t)n >= cap) {
        memcpy(run->err, buf->base + (size_t)n - cap, cap);
        run->err_len = cap;
    } else {
        if (run->err_len + (size_t)n > cap) {
            size_t drop = run->err_len + (size_t)n - cap;
            memmove(run->err, run->err + drop, run->err_len - drop);
            run->err_len -= drop;
        }
        memcpy(run->err + run->err_len, buf->base, (size_t)n);
        run->err_len += (size_t)n;
    }
    run->err[run->err_len] = '\0';
}

/* Reaps helm if it has exited; returns 1 then. */
static int try_reap(helm_run_t *run) {
    int st = 0;
    pid_t r;
    do
        r = waitpid(run->pid, &st, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (r < 0) {
        /* ECHILD: reaped by someone else; nothing more can be known. */
        log_error("waitpid(%d): %s", (int)run->pid, strerror(errno));
        run->exit_status = 127;
    } else if (WIFSIGNALED(st)) {
        run->term_signal = WTERMSIG(st);
    } else {
        run->exit_status = WEXITSTATUS(st);
    }
    run->ended_ms = uv_now(run->reap_timer.loop);
    if (run->ended_ms == 0)
        run->ended_ms = 1;
    /* Anything helm started in its group goes with it. */
    kill(-run->pid, SIGKILL);
    if (run->pidfd >= 0)
        uv_poll_stop(&run->exit_poll);
    uv_timer_stop(&run->reap_timer);
    maybe_done(run);
    return 1;
}

static void on_exit_readable(uv_poll_t *p, int status, int events) {
    (void)status;
    (void)events;
    try_reap(p->data);
}

static void on_reap_tick(uv_timer_t *t) {
    try_reap(t->data);
}

static void on_kill(uv_timer_t *t) {
    helm_run_t *run = t->data;
    if (run->ended_ms)
        return;
    run->killed = 1;
    log_warn("helm pid %d still running %d ms after SIGTERM: SIGKILL to its process group", (int)run->pid,
             run->kill_grace_ms);
    kill(-run->pid, SIGKILL);
}

static void on_term(uv_timer_t *t) {
    helm_run_t *run = t->data;
    if (run->ended_ms)
        return;
    run->timed_out = 1;
    uv_update_time(t->loop);
    log_warn("helm pid %d passed its deadline: SIGTERM to its process group (%lld ms after the deadline)",
             (int)run->pid, (long long)uv_now(t->loop) - (long long)run->deadline_ms);
    kill(-run->pid, SIGTERM);
    uv_timer_start(&run->kill_timer, on_kill, (uint64_t)run->kill_grace_ms, 0);
}

static void on_spawn_failed(uv_timer_t *t) {
    maybe_done(t->data);
}

/* /dev/null, opened once (O_CLOEXEC) on the loop thread before the first
 * spawn and duplicated onto each helm's stdin, rather than a path walk and a
 * device open in every child (about 1 % of a spawn's CPU: docs/PERFORMANCE.md,
 * change 26). -1: not open, each child opens it itself. */
static int devnull_fd = -1;

static void devnull_open(void) {
    if (devnull_fd < 0)
        devnull_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
}

/* posix_spawnp with stdin from /dev/null, stdout and stderr to the pipes'
 * write ends, every other descriptor closed, default signal dispositions
 * and mask (the worker ignores SIGPIPE; helm must not inherit that), in a
 * new session. Returns 0 or an errno value. */
static int spawn_helm(const helm_argv_t *argv, char *const envp[], int out_w, int err_w, int pass_fd,
                      pid_t *pid) {
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int rc;
    sigemptyset(&none);
    /* Handled signals go back to their defaults at exec anyway; ignored ones
     * would stay ignored: reset those the worker or its libraries may ignore
     * (one sigaction each in the child, not 64). */
    sigemptyset(&all);
    int reset[] = {SIGPIPE, SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGCHLD, SIGALRM};
    for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
        sigaddset(&all, reset[i]);
    if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
        return rc;
    if ((rc = posix_spawnattr_init(&attr)) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        return rc;
    }
    if (devnull_fd >= 0)
        rc = posix_spawn_file_actions_adddup2(&fa, devnull_fd, 0);
    else
        rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, out_w, 1);
    if (!rc)
        rc = posix_spawn_file_actions_adddup2(&fa, err_w, 2);
    if (!rc && pass_fd >= 0)
        rc = posix_spawn_file_actions_adddup2(&fa, pass_fd, HELM_PASS_FD);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    if (!rc)
        rc = posix_spawn_file_actions_addclosefrom_np(&fa, pass_fd >= 0 ? HELM_PASS_FD + 1 : 3);
#endif
    if (!rc)
        rc = posix_spawnattr_setsigmask(&attr, &none);
    if (!rc)
        rc = posix_spawnattr_setsigdefault(&attr, &all);
    if (!rc)
        rc = posix_spawnattr_setflags(&attr,
                                      POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (!rc)
        rc = posix_spawnp(pid, argv->argv[0], &fa, &attr, argv->argv, envp);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

void helm_marker(const char *command_id, char *out, size_t size) {
    snprintf(out, size, "%s=%s", HELM_MARKER_VAR, command_id);
}

/* The worker's environment with marker instead of any marker entry it has
 * (a worker started by a helm step of another worker must not pass that
 * one's on). The strings are environ's; free the array alone. */
static char **marked_env(const char *marker) {
    extern char **environ;
    const size_t len = sizeof(HELM_MARKER_VAR "=") - 1;
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = malloc((n + 2) * sizeof(*env));
    if (!env)
        return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], HELM_MARKER_VAR "=", len) != 0)
            env[k++] = environ[i];
    env[k++] = (char *)marker;
    env[k] = NULL;
    return env;
}

static int pidfd_open_(pid_t pid) {
#ifdef SYS_pidfd_open
    return (int)syscall(SYS_pidfd_open, pid, 0);
#else
    (void)pid;
    errno = ENOSYS;
    return -1;
#endif
}

static void spawn_work(uv_work_t *req) {
    helm_run_t *run = req->data;
    run->spawn_rc = spawn_helm(&run->argv, run->env, run->out_w, run->err_w, run->pass_fd, &run->pid);
}

static void close_fd(int *fd) {
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* On the loop once the spawn is done: watch helm, or report why it could not
 * start. */
static void spawn_after(uv_work_t *req, int status) {
    extern char **environ;
    helm_run_t *run = req->data;
    uv_loop_t *loop = req->loop;
    int rc = status == UV_ECANCELED ? ECANCELED : run->spawn_rc;
    run->spawning = 0;
    if (run->env && run->env != environ)
        free(run->env);
    run->env = NULL;
    close_fd(&run->out_w);
    close_fd(&run->err_w);
    close_fd(&run->pass_fd);
    if (rc != 0)
        snprintf(run->err, sizeof(run->err), "cannot run %s: %s", run->argv.argc ? run->argv.argv[0] : "helm",
                 strerror(rc));
    helm_argv_free(&run->argv);
    if (run->freeing || rc != 0) {
        close_fd(&run->out_r);
        close_fd(&run->err_r);
        if (run->freeing) { /* the worker is exiting: a helm started is left to the next one */
            if (--run->open_handles == 0) {
                free(run->out);
                free(run);
            }
            return;
        }
        run->open_handles--;
        run->spawn_error = uv_translate_sys_error(rc);
        run->err_len = strlen(run->err);
        run->ended_ms = uv_now(loop) ? uv_now(loop) : 1;
        run->exit_status = 127;
        uv_close((uv_handle_t *)&run->out_pipe, run_handle_closed);
        uv_close((uv_handle_t *)&run->err_pipe, run_handle_closed);
        /* Report on the next loop turn. */
        uv_timer_start(&run->term_timer, on_spawn_failed, 0, 0);
        return;
    }
    run->open_handles--;
    uv_pipe_open(&run->out_pipe, run->out_r);
    uv_pipe_open(&run->err_pipe, run->err_r);
    run->out_r = run->err_r = -1;
    uv_read_start((uv_stream_t *)&run->out_pipe, on_alloc, on_out);
    uv_read_start((uv_stream_t *)&run->err_pipe, on_alloc, on_err);
    run->pidfd = pidfd_open_(run->pid);
    if (run->pidfd >= 0 && uv_poll_init(loop, &run->exit_poll, run->pidfd) == 0) {
        run->open_handles++;
        uv_poll_start(&run->exit_poll, UV_READABLE, on_exit_readable);
    } else {
        if (run->pidfd >= 0)
            close(run->pidfd);
        run->pidfd = -1;
        uv_timer_start(&run->reap_timer, on_reap_tick, 20, 20);
    }
    if (run->deadline_ms) {
        /* The loop's clock is cached per iteration: the deadline counts
         * from now, helm's start. */
        uint64_t after = run->deadline_ms;
        uv_update_time(loop);
        run->deadline_ms = uv_now(loop) + after;
        uv_timer_start(&run->term_timer, on_term, after, 0);
    }
    if (run->spawned)
        run->spawned(run);
}

helm_run_t *helm_run_start(uv_loop_t *loop, helm_argv_t *argv, int pass_fd, uint64_t deadline_ms,
                           int kill_grace_ms, const char *marker, helm_done_cb spawned, helm_done_cb done,
                           void *data) {
    extern char **environ;
    helm_run_t *run = calloc(1, sizeof(*run));
    if (!run)
        return NULL;
    run->done = done;
    run->spawned = spawned;
    run->data = data;
    run->kill_grace_ms = kill_grace_ms;
    run->started_ms = uv_now(loop);
    run->deadline_ms = deadline_ms; /* until the spawn is done: the delay */
    run->pidfd = -1;
    run->out_r = run->err_r = run->out_w = run->err_w = run->pass_fd = -1;
    run->argv = *argv;
    *argv = (helm_argv_t){0};
    /* reap timer, two pipes, two timers (+ exit_poll with a pidfd), and the
     * spawn while it is in flight */
    run->open_handles = 6;
    uv_pipe_init(loop, &run->out_pipe, 0);
    uv_pipe_init(loop, &run->err_pipe, 0);
    uv_timer_init(loop, &run->reap_timer);
    uv_timer_init(loop, &run->term_timer);
    uv_timer_init(loop, &run->kill_timer);
    run->exit_poll.data = run->reap_timer.data = run->out_pipe.data = run->err_pipe.data =
        run->term_timer.data = run->kill_timer.data = run->spawn_req.data = run;

    int out[2] = {-1, -1}, err[2] = {-1, -1}, rc = 0;
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0)
        rc = errno;
    run->out_r = out[0];
    run->out_w = out[1];
    run->err_r = err[0];
    run->err_w = err[1];
    /* The spawn reads pass_fd after the caller may have closed it: a copy. */
    if (!rc && pass_fd >= 0 && (run->pass_fd = fcntl(pass_fd, F_DUPFD_CLOEXEC, HELM_PASS_FD + 1)) < 0)
        rc = errno;
    if (marker)
        snprintf(run->marker, sizeof(run->marker), "%s", marker);
    run->env = marker ? marked_env(run->marker) : environ;
    if (!rc && !run->env)
        rc = ENOMEM;
    devnull_open();
    if (!rc)
        rc = uv_queue_work(loop, &run->spawn_req, spawn_work, spawn_after);
    if (rc != 0) {
        run->spawning = 1;
        run->spawn_rc = rc < 0 ? -rc : rc; /* uv_queue_work returns a uv error */
        run->spawn_req.loop = loop;
        spawn_after(&run->spawn_req, 0);
        return run;
    }
    run->spawning = 1;
    return run;
}

void helm_run_signal(helm_run_t *run, int sig) {
    if (run && !run->spawning && run->pid > 0 && !run->ended_ms)
        kill(-run->pid, sig);
}

int helm_values_memfd(const char *values_text) {
    int fd = memfd_create("helmq-values", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(values_text), off = 0;
    if (fchmod(fd, 0600) != 0)
        goto fail;
    while (off < len) {
        ssize_t w = write(fd, values_text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            goto fail;
        off += (size_t)w;
    }
    return fd;
fail:;
    int e = errno;
    close(fd);
    errno = e;
    return -1;
}

/* --- helm processes left by a crashed worker --------------------------- */

int helm_values_write(const char *tmpdir, const char *values_text, char *path, size_t path_size) {
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/helmq-values.XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    if (!mkdtemp(dir)) /* mode 0700 */
        return -1;
    snprintf(path, path_size, "%s/values.json", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int e = errno;
        rmdir(dir);
        errno = e;
        return -1;
    }
    size_t len = strlen(values_text), off = 0;
    while (off < len) {
        ssize_t w = write(fd, values_text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = errno;
            close(fd);
            helm_values_remove(path);
            errno = e;
            return -1;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0) {
        int e = errno;
        helm_values_remove(path);
        errno = e;
        return -1;
    }
    return 0;
}

void helm_values_remove(const char *path) {
    char dir[4096];
    if (!path || !*path)
        return;
    unlink(path);
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = '\0';
        rmdir(dir);
    }
}
