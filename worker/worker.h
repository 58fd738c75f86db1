/* The worker's shared state: one libuv loop, one Kafka consumer (commands),
 * one idempotent producer (events and DLQ), one PostgreSQL connection, and
 * the dispatcher's partitions, release keys and commands.
 *
 * Ownership: the worker owns partitions and keys; a partition owns its
 * commands (in offset order) until they are done and the offset passed them;
 * a key only links the commands of one release in arrival order. */
#ifndef HELMQ_WORKER_H
#define HELMQ_WORKER_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "db.h"
#include "executor.h"
#include "events.h"

typedef struct worker worker_t;
typedef struct partition partition_t;
typedef struct rkey rkey_t;
typedef struct command command_t;

/* The steps of a command (command.c). */
typedef enum command_phase {
    PHASE_QUEUED = 0,
    PHASE_BEGIN,     /* ledger: record, lock the key, read the registry */
    PHASE_START,     /* ledger: about to run helm */
    PHASE_HELM,      /* helm runs the operation */
    PHASE_WAIT_HELM, /* reconciliation: waiting for the helm a crashed worker left running */
    PHASE_STATUS,    /* helm status after a failure, a rollback or in reconciliation */
    PHASE_ROLLBACK,  /* the worker's atomic rollback */
    PHASE_UNLOCK,    /* unlocking a stale pending-* release */
    PHASE_FINISH,    /* ledger: outcome + registry */
    PHASE_PUBLISH,   /* the terminal event (or DLQ record) is being delivered */
    PHASE_DONE
} command_phase_t;

/* What a command needs only once it runs: helm's answer and the error texts,
 * allocated on first use (command.c, cmd_rs) so that a command waiting in the
 * buffers stays small. */
typedef struct command_rs {
    helm_release_t helm;      /* the last release JSON helm printed */
    char helm_error[1024];    /* helm's last error, as the events show it */
    char error_message[1200]; /* the terminal event's errorMessage */
} command_rs_t;

struct command {
    worker_t *w;
    partition_t *part;
    rkey_t *key;
    command_t *part_next; /* offset order within the partition */
    command_t *key_next;  /* arrival order within the key */
    int64_t offset;
    char *kafka_key;
    size_t kafka_key_len;
    void *raw; /* the record value, kept for the DLQ */
    size_t raw_len;
    char *dlq_error; /* set when the record cannot be decoded or identified */
    char *dlq_reason;
    json_t *doc;         /* the decoded command (natural JSON) */
    char digest[65];     /* its content's digest (cmddoc_digest): the ledger's idempotency check */
    int key_mismatch;    /* its record key is not its own: the rejection goes out under the record key */
    char event_kind[96]; /* the terminal event id's kind (event_id); empty: "terminal" */
    const char *op;
    char id[96]; /* commandId, a UUID in lower case ("-" for a dead letter: not a UUID, or undecodable) */
    command_phase_t phase;
    int orphan; /* its partition was revoked: finish, but store no offset */
    int reconcile;
    int unlock_tried;
    int access_tries; /* tenant set-up runs that met another one in progress (command.c) */
    int lock_waits;
    int lock_holds_unsure; /* the session may hold the key's lock more than once (a begin ran again) */
    uv_timer_t timer;      /* retries; embedded, closed before the command is freed */
    /* registry and ledger */
    json_t *release; /* the key's registry row at begin (NULL: none) */
    char ns_owner[64];
    json_t *ledger; /* the ledger row at begin */
    char release_id[UUID_STR_LEN];
    int base_revision, base_deployed, rollback_default;
    char *rollback_digest, *rollback_redacted; /* the rollback target's values, as the ledger has them */
    /* helm */
    helm_run_t *run;
    int has_slot;                    /* holds a slot of the helm pool (command.c) */
    int held_slot;                   /* has held one: under way, not given back when stopping */
    int follow_up;                   /* in the step after a helm run: a next one takes its slot back */
    void (*slot_then)(command_t *c); /* waiting for a slot: what runs once it has one */
    command_t *helm_wait_next;       /* the pool's queue of waiting commands */
    helm_argv_t helm_argv;           /* the helm step about to start (argc 0: none) */
    uint64_t helm_deadline;          /* its SIGTERM deadline (ms after it starts; 0: none) */
    int helm_records;                /* it changes the release: its deadline must be in the ledger */
    int helm_record_pending;         /* record the helm step once its process exists (on_helm_spawned) */
    int64_t recorded_deadline_ms;    /* the helm deadline the start recorded (Unix ms; 0: none) */
    void (*helm_next)(void);         /* the step after the running helm (a step_cb) */
    void (*status_then)(void);       /* the step after helm status */
    int64_t status_wait_since;       /* helm status met an unreachable cluster since (Unix ms; 0: not) */
    int status_retry_ms;             /* the last wait before asking helm status again */
    command_rs_t *rs;                /* NULL until the command runs (cmd_rs) */
    char *values_path;               /* the values file (tmpdir fallback), or HELM_PASS_PATH (NULL: none);
                                      * allocated while helm runs, not in every buffered command */
    int values_fd;                   /* the values memfd while the operation runs, else -1 */
    int helm_found;                  /* status/history found the release */
    int helm_failed;                 /* the operation failed */
    int timed_out;
    /* the helm process a crashed worker left running (reconciliation) */
    int left_pgid;            /* its process group; 0: none to wait for */
    int left_marked;          /* found by its marker (helm_marked), not by a recorded pid */
    int left_signals;         /* 0, 1 after SIGTERM, 2 after SIGKILL */
    int64_t left_deadline_ms; /* its deadline (Unix ms), recorded when it started */
    int64_t left_signal_ms;   /* when the last signal was sent */
    /* outcome */
    const char *event_type; /* terminal eventType */
    char error_code[48];
    json_t *new_release; /* registry row after the command (NULL: unchanged) */
    json_t *history;     /* revisions this command created or changed (event form) */
    int claim_namespace;
    unsigned char *event; /* the encoded terminal event */
    size_t event_len;
};

struct rkey {
    char *name;
    rkey_t *hash_next;
    command_t *head, *tail;
    int busy; /* its head command is in progress */
    rkey_t *ready_next;
    int ready;
};

struct partition {
    int32_t id;
    int assigned;
    command_t *head, *tail;
    int64_t stored; /* the next offset to commit, -1 before any */
    int count;
};

/* A namespace's tenant set-up (tenant_access.h) as this worker knows it: one
 * set-up runs at a time per namespace, the installs arriving meanwhile wait
 * for its result, and a namespace set up recently is trusted for
 * TENANT_ACCESS_TTL_MS without running it again (command.c). */
typedef struct ns_setup {
    struct ns_setup *next;
    char ns[64];
    int running;         /* a set-up helm runs for it now */
    uint64_t ok_until;   /* set up, and trusted until then (ms, now_ms) */
    command_t **waiters; /* installs waiting for the running set-up */
    size_t nwaiters, cap;
} ns_setup_t;

struct worker {
    uv_loop_t *loop;
    config_t *cfg;
    helm_conf_t helmc; /* helm binary, chart repository, cluster and registry */
    ns_setup_t *ns_setups;
    const char *tmpdir;
    const char *commands_topic, *events_topic, *dlq_topic;
    int concurrency;
    int timeout_grace_ms, kill_grace_ms;
    char **protected_ns;
    int protected_count;
    rd_kafka_t *consumer, *producer;
    rd_kafka_queue_t *consumer_q, *producer_q;
    int wake_fd[2];
    uv_poll_t wake_poll;
    uv_timer_t tick;
    /* Work following a helm's end or an event's delivery, run a few items
     * per loop iteration (dispatch_later). */
    struct later *later_head, *later_tail;
    uv_idle_t later_idle;
    uv_signal_t sigterm, sigint;
    uv_timer_t drain_timer;
    db_t **dbs; /* a small pool; a release key always uses the same one, so its
                 * advisory lock is taken and released on one session */
    int ndbs;
    partition_t **parts;
    int nparts;
    rkey_t **keys;
    size_t nkeys_buckets;
    rkey_t *ready_head, *ready_tail;
    int running;      /* commands in progress (ledger steps included), at most max_running */
    int max_running;  /* MAX_RUNNING_PER_HELM * concurrency */
    int helm_running; /* slots of the helm pool held (commands from start to outcome), at most concurrency */
    command_t *helm_wait_head, *helm_wait_tail; /* commands waiting for a slot, in order */
    int buffered;                               /* commands received and not yet freed */
    int max_buffered;
    int paused;
    int stopping;
    int exiting;
    int exit_code;
    /* counters for logs and tests */
    uint64_t n_received, n_done, n_dlq, n_helm;
    /* metrics (worker_metrics.c) */
    uint64_t n_outcome[5];                /* succeeded, failed, rolled_back, rejected, republished */
    uint64_t helm_buckets[8], helm_count; /* helm durations: <=0.1,0.5,1,5,30,120,600,+Inf s */
    double helm_seconds;
    int64_t consumer_lag; /* from librdkafka statistics; -1 unknown */
    int kafka_brokers_up;
    void *http; /* httpd_t serving /metrics and /healthz, or NULL */
};

/* Commands in progress per slot of the helm pool: a command's first ledger
 * step (begin) and its last ones (outcome, terminal event) need no slot, so
 * more releases are in progress than helm processes run; the ones ready to
 * start wait for a slot in order. */
#define MAX_RUNNING_PER_HELM 4

/* The ledger connection of a release key. */
db_t *worker_db(worker_t *w, const char *key);
/* Whether every ledger connection is up. */
int worker_db_ready(const worker_t *w);

/* dispatch.c */
int dispatch_start(worker_t *w, char *errstr, size_t errstr_size);
void dispatch_pump(worker_t *w);
/* The command has published its outcome: free its slot, advance offsets. */
void dispatch_command_done(command_t *c);
/* Produce a record; when delivered, cb runs with err 0 (or after retries). */
typedef void (*produce_cb)(command_t *c, rd_kafka_resp_err_t err);
/* Runs fn(arg) soon, on the loop: a few of these per loop iteration, so
 * that a burst of helm exits or delivery reports does not hold up timers
 * (helm deadlines) and I/O for its whole length. At exit, at once. */
void dispatch_later(worker_t *w, void (*fn)(void *), void *arg);
void dispatch_produce(worker_t *w, const char *topic, command_t *c, const void *key, size_t key_len,
                      const void *value, size_t value_len, rd_kafka_headers_t *headers, produce_cb cb);
void dispatch_stop(worker_t *w);

/* worker_metrics.c */
int metrics_start(worker_t *w, const char *listen, char *errstr, size_t errstr_size);
void metrics_stop(worker_t *w);
void metrics_outcome(worker_t *w, const char *event_type);
void metrics_helm_duration(worker_t *w, double seconds);
/* librdkafka statistics (JSON): consumer lag and brokers up. */
int metrics_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque);

/* command.c */
void command_run(command_t *c);
void command_free(command_t *c);
/* The command's outcome is being recorded: its slot of the helm pool (if
 * any) goes to the next waiting command. */
void command_pool_release(command_t *c);
/* Stopping: the commands waiting for their first slot are given back. */
void command_pool_stop(worker_t *w);

#endif
