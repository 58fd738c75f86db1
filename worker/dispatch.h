/* The dispatcher: the worker's top layer. One libuv loop, one Kafka
 * consumer (commands), one idempotent producer (events and DLQ), a small
 * pool of PostgreSQL connections, and the partitions, release keys and
 * commands in flight (dispatch.c); the services it lends the command layer
 * through command_host_t (dispatch_host.c).
 *
 * Ownership: the worker owns partitions and keys; a partition owns its
 * commands (in offset order) until they are done and the offset passed them;
 * a key only links the commands of one release in arrival order. */
#ifndef HELMQ_DISPATCH_H
#define HELMQ_DISPATCH_H

#include <librdkafka/rdkafka.h>
#include <stdint.h>
#include <uv.h>

#include "command.h"
#include "config.h"
#include "db.h"

typedef struct worker worker_t;
typedef struct partition partition_t;
typedef struct rkey rkey_t;

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

struct worker {
    uv_loop_t *loop;
    config_t *cfg;
    command_ctx_t cmd; /* the command layer's state: topics, helm, the pool, its counters */
    int max_buffered;
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
    int running;     /* commands in progress (ledger steps included), at most max_running */
    int max_running; /* MAX_RUNNING_PER_HELM * concurrency */
    int buffered;    /* commands received and not yet freed */
    int paused;
    int exit_code;
    /* counters for logs and the metrics */
    uint64_t n_received, n_done;
    int64_t consumer_lag; /* from librdkafka statistics; -1 unknown */
    int kafka_brokers_up; /* from librdkafka statistics; -1 unknown */
    /* Runs once the dispatcher has shut down (main stops the metrics
     * server there), or NULL. */
    void (*on_shutdown)(worker_t *w);
    void *http; /* httpd_t serving /metrics and /healthz, or NULL (metrics.c) */
};

/* Commands in progress per slot of the helm pool: a command's first ledger
 * step (begin) and its last ones (outcome, terminal event) need no slot, so
 * more releases are in progress than helm processes run; the ones ready to
 * start wait for a slot in order. */
#define MAX_RUNNING_PER_HELM 4

/* The dispatcher's state without Kafka: the command layer's host, the key
 * table (dispatch_start calls it; a unit test calls it alone). */
void dispatch_init(worker_t *w);
/* Connects to Kafka, subscribes, starts the loop's watchers. Returns 0, or
 * -1 with errstr filled. */
int dispatch_start(worker_t *w, char *errstr, size_t errstr_size);
/* One consumed record: decoded, buffered in its partition and key, run when
 * its key is free (the consumer's poll; a unit test feeds it directly). m
 * stays the caller's. */
void dispatch_message(worker_t *w, rd_kafka_message_t *m);
/* SIGTERM: no new commands; the ones in flight finish (up to
 * --drain-timeout-ms), then offsets are committed and the loop ends. */
void dispatch_stop(worker_t *w);

/* --- dispatch_host.c: the services the dispatcher lends the command layer --- */

/* Fills w->cmd.host with the functions below and the dispatcher's done and
 * given_back. */
void dispatch_host_fill(worker_t *w, void (*done)(void *ctx, command_t *c),
                        void (*given_back)(void *ctx, command_t *c));
/* The ledger connection of a release key. */
db_t *worker_db(worker_t *w, const char *key);
/* Runs fn(arg) soon, on the loop: a few of these per loop iteration, so
 * that a burst of helm exits or delivery reports does not hold up timers
 * (helm deadlines) and I/O for its whole length. At exit, at once. */
void dispatch_later(worker_t *w, void (*fn)(void *), void *arg);
/* Runs everything still waiting (exiting: nothing runs the loop for it). */
void dispatch_later_drain(worker_t *w);
/* Produce a record; when delivered, cb (may be NULL) runs with err 0. */
void dispatch_produce(worker_t *w, const char *topic, command_t *c, const void *key, size_t key_len,
                      const void *value, size_t value_len, rd_kafka_headers_t *headers,
                      command_produce_cb cb);
/* The producer's delivery report callback (rd_kafka_conf_set_dr_msg_cb). */
void dispatch_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);
/* librdkafka statistics (JSON): consumer lag and brokers up, kept in w. */
int dispatch_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque);

#endif
