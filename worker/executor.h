/* The helm executor: builds helm's argument vector for an operation and runs
 * it as a child process on the libuv loop.
 *
 * helm runs by posix_spawn (execve, never through a shell), detached into
 * its own session and process group so that signals reach helm and anything
 * it started. posix_spawn (vfork-like in glibc) rather than libuv's fork:
 * fork copies the worker's page tables, which costs milliseconds per spawn
 * once the worker holds tens of MiB (tests/bench/profile.sh spawn). The exit
 * is watched through a pidfd on the loop (a 20 ms waitpid poll on kernels
 * without pidfd_open). The worker enforces the deadline itself: at the operation's
 * timeout plus a grace the group gets SIGTERM (helm then marks the release
 * failed), and SIGKILL if it is still there after the kill grace.
 *
 * executor.c runs the processes; helm_argv.c builds their argument vectors
 * and reads helm's errors; helm_proc.c finds the helm processes a crashed
 * worker left behind. */
#ifndef HELMQ_EXECUTOR_H
#define HELMQ_EXECUTOR_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#define HELM_ERR_TAIL 2048

/* A NULL-terminated argument vector the executor builds and frees. */
typedef struct helm_argv {
    char **argv;
    int argc, cap;
} helm_argv_t;

typedef struct helm_run helm_run_t;
typedef void (*helm_done_cb)(helm_run_t *run);

struct helm_run {
    pid_t pid;           /* helm's pid, also its process group and session id */
    int pidfd;           /* -1 when the kernel has no pidfd_open: reap_timer polls */
    uv_poll_t exit_poll; /* readable when helm has exited */
    uv_timer_t reap_timer;
    uv_pipe_t out_pipe, err_pipe;
    uv_timer_t term_timer, kill_timer;
    int open_handles; /* run freed when the last handle's close callback ran */
    /* results */
    int64_t exit_status;
    int term_signal;
    int timed_out;   /* SIGTERM was sent at the deadline */
    int killed;      /* SIGKILL followed */
    int spawn_error; /* uv error code when helm could not be started */
    char *out;       /* stdout (helm's -o json), NUL-terminated */
    size_t out_len, out_cap;
    char err[HELM_ERR_TAIL]; /* the tail of stderr, NUL-terminated */
    size_t err_len;
    uint64_t started_ms, ended_ms;
    uint64_t deadline_ms; /* loop time of the SIGTERM (0: none) */
    int kill_grace_ms;
    helm_done_cb done;
    helm_done_cb spawned; /* helm's process exists (pid set) */
    void *data;           /* the caller's */
    /* The spawn, on libuv's thread pool: posix_spawn returns only once the
     * child has exec'd, and the loop goes on meanwhile. */
    uv_work_t spawn_req;
    helm_argv_t argv; /* taken over from the caller */
    char **env;
    char marker[128]; /* env's marker entry */
    int out_r, err_r, out_w, err_w, pass_fd, spawn_rc;
    int spawning; /* the spawn is in flight: pid is not known yet */
    int freeing;  /* helm_run_free ran while spawning */
};

void helm_argv_push(helm_argv_t *a, const char *s);
void helm_argv_free(helm_argv_t *a);
/* The argv as one line for logs (arguments quoted when they hold spaces). */
void helm_argv_format(const helm_argv_t *a, char *out, size_t size);

/* How helm reaches the cluster and the chart registry: every field may be
 * NULL or empty (helm's own default then applies). Borrowed strings, owned by
 * the caller (the worker's configuration) for as long as argvs are built. */
typedef struct helm_conf {
    const char *helm;            /* the helm binary */
    const char *chart_repo;      /* HELMQ_CHART_REPO, see helm_push_chart */
    const char *kubeconfig;      /* --kubeconfig */
    const char *kube_context;    /* --kube-context */
    const char *registry_config; /* --registry-config: registry credentials (helm registry login) */
    int plain_http;              /* --plain-http on install/upgrade: an OCI registry over plain HTTP */
    int impersonate;             /* helm acts as the tenant's service account (tenant_access.h) */
    const char *tenant_account;  /* that account's name in each namespace */
    const char *tenant_chart;    /* the tenant-access chart's directory (tenant_access_chart_write) */
} helm_conf_t;

/* Pushes the global flags that say which cluster and registry credentials
 * (--kubeconfig, --kube-context, --registry-config: the worker's own
 * identity), when set. */
void helm_push_cluster(helm_argv_t *a, const helm_conf_t *hc);

/* Chart reference for chart in repo (HELMQ_CHART_REPO): "oci://..." gives
 * REPO/CHART; an http(s) URL gives CHART with --repo URL; a directory gives
 * DIR/CHART; any other text is a repository alias (ALIAS/CHART); empty gives
 * CHART. Pushes the chart argument(s) onto a. */
void helm_push_chart(helm_argv_t *a, const char *repo, const char *chart);

/* Builds the argv of operation op ("install", "upgrade", "rollback",
 * "uninstall") for the command cmd (natural JSON). values_file is the values
 * file for install/upgrade, rollback_to the target revision (> 0) for
 * rollback, timeout_s the seconds given to helm. Install, upgrade and
 * rollback wait for the release's resources to be ready (--wait, and
 * --wait-for-jobs with waitForJobs); uninstall waits for them to be gone. */
void helm_argv_operation(helm_argv_t *a, const helm_conf_t *hc, const char *op, const json_t *cmd,
                         const char *values_file, int rollback_to, long timeout_s);

/* The worker's own follow-up commands: "status" (the release's latest
 * revision, as helm history --max 1 --output json), and the
 * atomic / unlock "rollback" (to revision, with --wait) and "uninstall"
 * (with --wait and --timeout). */
void helm_argv_simple(helm_argv_t *a, const helm_conf_t *hc, const char *sub, const json_t *cmd, int revision,
                      long timeout_s);

/* Starts argv (argv[0] is the helm binary; taken over: *argv is left
 * empty). pass_fd: see below, or -1 (the caller may close it once this
 * returns). deadline_ms: SIGTERM after this many ms from helm's start (0:
 * none); kill_grace_ms: SIGKILL that much later. The spawn itself runs on
 * libuv's thread pool (posix_spawn waits for the child's exec, which the
 * loop need not): spawned runs on the loop once helm's process exists (not
 * when it could not start); done runs once on the loop when helm has exited
 * and its output is read, then the caller calls helm_run_free. Returns the
 * run, or NULL on out of memory (a failure to start helm is reported through
 * done with spawn_error set). */
helm_run_t *helm_run_start(uv_loop_t *loop, helm_argv_t *argv, int pass_fd, uint64_t deadline_ms,
                           int kill_grace_ms, const char *marker, helm_done_cb spawned, helm_done_cb done,
                           void *data);

/* Sends sig to helm's process group; nothing while the spawn is in flight
 * or after helm was reaped. */
void helm_run_signal(helm_run_t *run, int sig);

/* The environment variable that marks every helm process of a command, and
 * whatever those start (they inherit it): HELM_MARKER_VAR=<commandId>. A
 * worker reconciling the command after a crash finds them by it. */
#define HELM_MARKER_VAR "HELMQ_COMMAND_ID"

/* Fills out with the marker entry of command_id ("HELMQ_COMMAND_ID=..."),
 * which helm_run_start adds to helm's environment. */
void helm_marker(const char *command_id, char *out, size_t size);

/* pass_fd (>= 0) becomes helm's descriptor HELM_PASS_FD: the values, which
 * helm reads as HELM_PASS_PATH. */
#define HELM_PASS_FD 3
#define HELM_PASS_PATH "/proc/self/fd/3"

/* The values in an anonymous memory file (memfd, mode 0600): never on a disk,
 * gone with the last descriptor, even after a crash. Returns the descriptor
 * (close-on-exec; helm_run_start passes it on), or -1 with errno set. */
int helm_values_memfd(const char *values_text);
void helm_run_free(helm_run_t *run);

/* --- helm processes left by a crashed worker ------------------------------
 * helm runs in its own session, so it survives a kill -9 of the worker. The
 * ledger records, before helm starts, the host it runs on and its deadline;
 * every helm process carries its command's marker in its environment, and
 * the worker that reconciles the command on the same host finds them by it
 * (helm_marked). Ledgers written before the marker recorded helm's pid and
 * start time instead (helm_proc_matches, helm_group_alive). Linux /proc
 * only; elsewhere nothing is found (and nothing is waited for). */

/* This host's identity for pids: hostname, boot id and pid namespace, as one
 * line (a pid means nothing on another host, after a reboot, or in another
 * container). Fills out; never fails (unknown parts are left empty). */
void helm_host_id(char *out, size_t size);

/* The start time of process pid (field 22 of /proc/PID/stat, clock ticks
 * since boot). Returns 0, or -1 when there is no such process. */
int helm_proc_start_ticks(int pid, unsigned long long *ticks);

/* Whether process pid is still the helm recorded: 1 when it started at ticks
 * and arg is one of its arguments (the release name), 0 when pid is another
 * process now (the pid was reused), -1 when it is gone or a zombie. */
int helm_proc_matches(int pid, unsigned long long ticks, const char *arg);

/* Whether process group pgid still has a live member (not a zombie). */
int helm_group_alive(int pgid);

/* The live processes (not zombies) of this host whose environment holds the
 * entry marker exactly (see helm_marker); sends sig (when not 0) to each
 * one's process group (helm runs in its own session) or, where that group
 * is the worker's own or init's, to the process alone. Sets *pgid (when not
 * NULL) to one of their groups. Returns how many there are. Processes whose
 * environment cannot be read (another user's) are not counted. */
int helm_marked(const char *marker, int sig, int *pgid);

/* Writes values (a JSON object) to a new private file (mode 0600 in a 0700
 * directory under tmpdir). Fills path; returns 0 or -1 with errno set. */
int helm_values_write(const char *tmpdir, const char *values_text, char *path, size_t path_size);
/* Removes the file and its directory. */
void helm_values_remove(const char *path);

/* The last line of helm's stderr starting with "Error:", or the whole tail. */
const char *helm_error_text(const helm_run_t *run, char *buf, size_t size);

/* The error code of a failed helm operation, from helm's error text: TIMEOUT
 * (helm's own --timeout fired while it waited), CHART_NOT_FOUND (the chart or
 * the version is not in the registry), REGISTRY_UNAVAILABLE (the chart
 * registry could not be reached), CLUSTER_UNAVAILABLE (the Kubernetes API
 * could not be reached), FORBIDDEN (the cluster's RBAC refused what the chart
 * asked, as the tenant), or HELM_FAILED. A static string. */
const char *helm_failure_code(const char *text);

#endif
