/* The command layer: the state machine of one command, from its record in
 * the ledger to its one terminal event (command.c and its siblings).
 *
 * The layer sits between the dispatcher above it (dispatch.h: Kafka in,
 * per-key order, offsets) and the executor below it (executor.h: helm
 * processes). It never calls into the dispatcher: it reports upward through
 * command_host_t, which the dispatcher fills in, and reaches the ledger and
 * helm through that host and command_helm_ops_t, so that a unit test can
 * run the state machine against fakes. Its counters (command_counters_t)
 * are read by the metrics, never pushed to them.
 *
 * Ownership: the dispatcher allocates a command (command_new), links it
 * into its partition and key (the part/key fields are the dispatcher's),
 * runs it (command_run) and frees it (command_free) once host.done has run
 * and the offsets passed it. */
#ifndef HELMQ_COMMAND_H
#define HELMQ_COMMAND_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <uv.h>

#include "db.h"
#include "events.h"
#include "executor.h"

typedef struct command command_t;
typedef struct command_ctx command_ctx_t;

/* The steps of a command. */
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

/* A record was delivered (err 0) or given up; c is the producing command. */
typedef void (*command_produce_cb)(command_t *c, rd_kafka_resp_err_t err);

/* What the layer above does for the command layer. ctx is passed back to
 * every function. */
typedef struct command_host {
    void *ctx;
    /* The command has published its outcome (or can say nothing): the
     * dispatcher frees its key for the next command and advances offsets;
     * c may be freed before this returns. */
    void (*done)(void *ctx, command_t *c);
    /* Stopping: c was given back before any helm of it ran; it never
     * finishes here. */
    void (*given_back)(void *ctx, command_t *c);
    /* Produces a record (copied); cb (may be NULL) runs once it is
     * delivered, on the loop. headers are taken over. */
    void (*produce)(void *ctx, const char *topic, command_t *c, const void *key, size_t key_len,
                    const void *value, size_t value_len, rd_kafka_headers_t *headers, command_produce_cb cb);
    /* Runs fn(arg) soon on the loop, a few per iteration. */
    void (*later)(void *ctx, void (*fn)(void *), void *arg);
    /* A ledger statement on the release key's connection (db_query). */
    void (*query)(void *ctx, const char *key, const char *sql, int n, const char *const *values,
                  const int *lengths, const int *formats, db_cb cb, void *arg);
    /* db_undone_runs of the key's connection. */
    int (*undone_runs)(void *ctx, const char *key);
} command_host_t;

/* How the command layer runs helm: command_helm_default is the executor's
 * (helm_run_start, helm_run_signal, helm_run_free and the /proc lookups of
 * a crashed worker's helm); a unit test substitutes a fake. */
typedef struct command_helm_ops {
    helm_run_t *(*start)(uv_loop_t *loop, helm_argv_t *argv, int pass_fd, uint64_t deadline_ms,
                         int kill_grace_ms, const char *marker, helm_done_cb spawned, helm_done_cb done,
                         void *data);
    void (*signal)(helm_run_t *run, int sig);
    void (*free)(helm_run_t *run);
    /* helm_marked: the live processes carrying marker. */
    int (*marked)(const char *marker, int sig, int *pgid);
} command_helm_ops_t;

extern const command_helm_ops_t command_helm_default;

/* Outcomes counted in command_counters_t.outcome. */
enum { COMMAND_OUTCOMES = 5, COMMAND_HELM_BUCKETS = 8 };
/* succeeded, failed, rolled_back, rejected, republished (no eventType). */
extern const char *const command_outcome_names[COMMAND_OUTCOMES];
/* The helm duration buckets' upper bounds in seconds (-1: +Inf). */
extern const double command_helm_bucket_le[COMMAND_HELM_BUCKETS];

/* What the command layer counts, for logs and the metrics. */
typedef struct command_counters {
    uint64_t outcome[COMMAND_OUTCOMES];
    uint64_t dlq;  /* records sent to the DLQ */
    uint64_t helm; /* helm processes that ended */
    uint64_t helm_buckets[COMMAND_HELM_BUCKETS], helm_count;
    double helm_seconds;
    uint64_t helm_timeouts; /* helm processes stopped at their deadline */
} command_counters_t;

/* Finished commands per tenant (succeeded, failed, rolled_back, rejected:
 * the first COMMAND_TENANT_OUTCOMES of command_outcome_names), so that a
 * failure rate can be watched per tenant. The first max tenants seen get a
 * slot each; later ones, and commands without a valid tenantId, are counted
 * under "other", so that the series stay bounded. The table only grows
 * (an open-addressed hash, slots with tenant[0] == 0 are free). */
enum { COMMAND_TENANT_OUTCOMES = 4 };
typedef struct command_tenant_count {
    char tenant[UUID_STR_LEN];
    uint64_t outcome[COMMAND_TENANT_OUTCOMES];
} command_tenant_count_t;

typedef struct command_tenant_counts {
    command_tenant_count_t *slots;
    size_t cap, n, max;
    command_tenant_count_t other;
} command_tenant_counts_t;

/* A namespace's tenant set-up (tenant_access.h) as this worker knows it: one
 * set-up runs at a time per namespace, the installs arriving meanwhile wait
 * for its result, and a namespace set up recently is trusted for a minute
 * without running it again (command_tenant.c). */
typedef struct ns_setup {
    struct ns_setup *next;
    char ns[64];
    int running;         /* a set-up helm runs for it now */
    uint64_t ok_until;   /* set up, and trusted until then (ms, now_ms) */
    command_t **waiters; /* installs waiting for the running set-up */
    size_t nwaiters, cap;
} ns_setup_t;

/* The command layer's shared state: configuration, the helm pool, the
 * namespaces set up, its counters. Embedded in the worker; the dispatcher
 * fills in host and sets stopping / exiting. */
struct command_ctx {
    uv_loop_t *loop;
    command_host_t host;
    const command_helm_ops_t *helm_ops; /* NULL: command_helm_default */
    helm_conf_t helmc;                  /* helm binary, chart repository, cluster and registry */
    const char *tmpdir;
    const char *commands_topic, *events_topic, *dlq_topic;
    int concurrency; /* slots of the helm pool */
    int timeout_grace_ms, kill_grace_ms;
    char **protected_ns;
    int protected_count;
    ns_setup_t *ns_setups;
    int helm_running;                           /* slots held, at most concurrency */
    command_t *helm_wait_head, *helm_wait_tail; /* commands waiting for a slot, in order */
    int stopping; /* no new commands: the ones waiting for a first slot go back */
    int exiting;  /* the loop ends: nothing waits any more */
    command_counters_t counters;
    command_tenant_counts_t tenants; /* set tenants.max before the first command; 0: all under "other" */
};

/* What a command needs only once it runs: helm's answer and the error texts,
 * allocated on first use so that a command waiting in the buffers stays
 * small. */
typedef struct command_rs {
    helm_release_t helm;      /* the last release JSON helm printed */
    char helm_error[1024];    /* helm's last error, as the events show it */
    char error_message[1200]; /* the terminal event's errorMessage */
} command_rs_t;

struct command {
    command_ctx_t *ctx;
    /* the dispatcher's links (dispatch.h): never used by the command layer */
    struct partition *part;
    struct rkey *key;
    command_t *part_next; /* offset order within the partition */
    command_t *key_next;  /* arrival order within the key */
    int orphan;           /* its partition was revoked: finish, but store no offset */
    /* where it came from, as the command layer shows it */
    int32_t partition;    /* -1: none (revoked) */
    const char *key_name; /* its release key (borrowed; NULL: none) */
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
    int reconcile;
    int unlock_tried;
    int access_tries; /* tenant set-up runs that met another one in progress */
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
    int has_slot;                    /* holds a slot of the helm pool */
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
    void (*op_run)(command_t *c);    /* runs the operation (again, after unlocking) */
    void (*op_end)(command_t *c, helm_run_t *run); /* the operation's end (a step_cb) */
    void (*setup_then)(command_t *c);              /* after the namespace's tenant set-up */
    void (*status_then)(void);                     /* the step after helm status */
    int64_t status_wait_since; /* helm status met an unreachable cluster since (Unix ms; 0: not) */
    int status_retry_ms;       /* the last wait before asking helm status again */
    command_rs_t *rs;          /* NULL until the command runs */
    char *values_path;         /* the values file (tmpdir fallback), or HELM_PASS_PATH (NULL: none);
                                * allocated while helm runs, not in every buffered command */
    int values_fd;             /* the values memfd while the operation runs, else -1 */
    int helm_found;            /* status/history found the release */
    int helm_failed;           /* the operation failed */
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

/* A new command of record offset (zeroed, its timer on ctx's loop). Never
 * NULL (aborts when out of memory). */
command_t *command_new(command_ctx_t *ctx, int64_t offset);

/* Runs the command to its terminal event; host.done follows. A dead letter
 * (dlq_error set) goes to the DLQ. */
void command_run(command_t *c);

/* Frees the command (NULL: nothing). A helm still running is left to be
 * reconciled later (only at exit). */
void command_free(command_t *c);

/* Sends sig to the command's running helm, if any (draining timed out). */
void command_signal_helm(command_t *c, int sig);

/* Stopping: the commands waiting for their first slot of the helm pool are
 * given back (host.given_back). */
void command_pool_stop(command_ctx_t *ctx);

/* Frees what ctx holds (the namespaces' set-up state). */
void command_ctx_free(command_ctx_t *ctx);

#endif
