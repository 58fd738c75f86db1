/* The dispatcher: Kafka in and out on the libuv loop, release keys run one
 * command at a time in offset order, different keys concurrently up to the
 * pool size, and offsets stored only up to the oldest unfinished command of
 * each partition.
 *
 * librdkafka wakes the loop through rd_kafka_queue_io_event_enable on a pipe
 * watched by uv_poll; a 200 ms tick polls too, as a safety net. The
 * command layer below runs each command and reports back through the
 * command_host_t filled in here (dispatch_host.c). */
#include "dispatch.h"

#include "cmddoc.h"
#include "codec.h"
#include "kafka.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define POLL_BATCH 500

/* --- keys ---------------------------------------------------------------- */

static size_t hash_str(const char *s) {
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static rkey_t *key_get(worker_t *w, const char *name) {
    size_t b = hash_str(name) % w->nkeys_buckets;
    for (rkey_t *k = w->keys[b]; k; k = k->hash_next)
        if (strcmp(k->name, name) == 0)
            return k;
    rkey_t *k = calloc(1, sizeof(*k));
    if (!k || !(k->name = strdup(name)))
        abort();
    k->hash_next = w->keys[b];
    w->keys[b] = k;
    return k;
}

static void key_release_if_empty(worker_t *w, rkey_t *k) {
    if (k->head || k->busy || k->ready)
        return;
    size_t b = hash_str(k->name) % w->nkeys_buckets;
    for (rkey_t **pp = &w->keys[b]; *pp; pp = &(*pp)->hash_next) {
        if (*pp == k) {
            *pp = k->hash_next;
            break;
        }
    }
    free(k->name);
    free(k);
}

static void key_make_ready(worker_t *w, rkey_t *k) {
    if (k->ready || k->busy || !k->head)
        return;
    k->ready = 1;
    k->ready_next = NULL;
    if (w->ready_tail)
        w->ready_tail->ready_next = k;
    else
        w->ready_head = k;
    w->ready_tail = k;
}

static void ready_remove(worker_t *w, rkey_t *k) {
    if (!k->ready)
        return;
    rkey_t *prev = NULL;
    for (rkey_t *r = w->ready_head; r; prev = r, r = r->ready_next) {
        if (r != k)
            continue;
        if (prev)
            prev->ready_next = r->ready_next;
        else
            w->ready_head = r->ready_next;
        if (w->ready_tail == r)
            w->ready_tail = prev;
        break;
    }
    k->ready = 0;
}

/* Unlinks c from its key's FIFO. */
static void key_unlink(worker_t *w, command_t *c) {
    rkey_t *k = c->key;
    command_t *prev = NULL;
    if (!k)
        return;
    for (command_t *x = k->head; x; prev = x, x = x->key_next) {
        if (x != c)
            continue;
        if (prev)
            prev->key_next = x->key_next;
        else
            k->head = x->key_next;
        if (k->tail == x)
            k->tail = prev;
        break;
    }
    c->key = NULL;
    c->key_name = NULL;
    if (!k->head)
        ready_remove(w, k);
    else
        key_make_ready(w, k);
    key_release_if_empty(w, k);
}

/* --- partitions ----------------------------------------------------------- */

static partition_t *partition_get(worker_t *w, int32_t id) {
    if (id < 0)
        return NULL;
    if (id >= w->nparts) {
        int n = id + 1;
        partition_t **p = realloc(w->parts, sizeof(*p) * (size_t)n);
        if (!p)
            abort();
        for (int i = w->nparts; i < n; i++)
            p[i] = NULL;
        w->parts = p;
        w->nparts = n;
    }
    if (!w->parts[id]) {
        w->parts[id] = calloc(1, sizeof(partition_t));
        if (!w->parts[id])
            abort();
        w->parts[id]->id = id;
        w->parts[id]->stored = -1;
    }
    return w->parts[id];
}

static void offsets_store(worker_t *w, partition_t *p, int64_t next) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, w->cmd.commands_topic, p->id)->offset = next;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(w->consumer, l);
    if (err)
        log_debug("offsets_store %s[%d]@%lld: %s", w->cmd.commands_topic, (int)p->id, (long long)next,
                  rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(l);
    p->stored = next;
}

/* Frees the done prefix of p's commands and stores the offset after it. */
static void partition_advance(worker_t *w, partition_t *p) {
    int64_t next = -1;
    while (p->head && p->head->phase == PHASE_DONE) {
        command_t *c = p->head;
        p->head = c->part_next;
        if (!p->head)
            p->tail = NULL;
        p->count--;
        next = c->offset + 1;
        command_free(c);
    }
    if (next >= 0 && p->assigned)
        offsets_store(w, p, next);
}

/* --- the pool -------------------------------------------------------------- */

static void dispatch_pump(worker_t *w) {
    while (!w->cmd.stopping && w->running < w->max_running && w->ready_head) {
        rkey_t *k = w->ready_head;
        w->ready_head = k->ready_next;
        if (!w->ready_head)
            w->ready_tail = NULL;
        k->ready = 0;
        k->busy = 1;
        w->running++;
        command_run(k->head);
    }
}

static void maybe_resume(worker_t *w);
static void shutdown_finish(worker_t *w);

/* The command has published its outcome (command_host_t.done): its key
 * goes on with its next command, offsets advance. */
static void command_done(void *ctx, command_t *c) {
    worker_t *w = ctx;
    c->phase = PHASE_DONE;
    w->n_done++;
    if (c->key) {
        rkey_t *k = c->key;
        k->busy = 0;
        w->running--;
        key_unlink(w, c); /* makes the key ready for its next command, or frees it */
    }
    if (c->part)
        partition_advance(w, c->part);
    else
        command_free(c); /* orphaned by a revoke */
    maybe_resume(w);
    dispatch_pump(w);
    if (w->cmd.stopping && w->running == 0)
        shutdown_finish(w);
}

/* Stopping: c never finishes here (command_host_t.given_back). Its key's
 * lock goes with the ledger session at exit; offsets are only stored up to
 * it. The tick notices when nothing is left. */
static void command_given_back(void *ctx, command_t *c) {
    worker_t *w = ctx;
    w->running--;
}

/* --- intake ------------------------------------------------------------------ */

static void command_key_string(const json_t *doc, char *out, size_t size) {
    snprintf(out, size, "%s/%s/%s", json_string_value(json_object_get(doc, "tenantId")),
             json_string_value(json_object_get(doc, "namespace")),
             json_string_value(json_object_get(doc, "releaseName")));
}

static void pause_all(worker_t *w, int pause) {
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(w->consumer, &a) != 0 || !a)
        return;
    if (pause)
        rd_kafka_pause_partitions(w->consumer, a);
    else
        rd_kafka_resume_partitions(w->consumer, a);
    rd_kafka_topic_partition_list_destroy(a);
}

static void maybe_resume(worker_t *w) {
    w->buffered = 0;
    for (int i = 0; i < w->nparts; i++)
        if (w->parts[i])
            w->buffered += w->parts[i]->count;
    if (w->paused && !w->cmd.stopping && w->buffered < w->max_buffered / 2) {
        pause_all(w, 0);
        w->paused = 0;
        log_info("resumed consuming (%d commands buffered)", w->buffered);
    }
}

void dispatch_message(worker_t *w, rd_kafka_message_t *m) {
    char errstr[512];
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            log_warn("consumer: %s", rd_kafka_message_errstr(m));
        return;
    }
    partition_t *p = partition_get(w, m->partition);
    if (!p->assigned) {
        log_debug("message for unassigned partition %d dropped", (int)m->partition);
        return;
    }
    command_t *c = command_new(&w->cmd, m->offset);
    c->partition = m->partition;
    if (m->key_len) {
        c->kafka_key = malloc(m->key_len);
        memcpy(c->kafka_key, m->key, m->key_len);
        c->kafka_key_len = m->key_len;
    }
    c->raw = malloc(m->len ? m->len : 1);
    if (m->len) /* a tombstone has no payload */
        memcpy(c->raw, m->payload, m->len);
    c->raw_len = m->len;
    w->n_received++;

    codec_type_t t;
    json_t *doc = NULL;
    int rc =
        m->payload ? codec_decode(m->payload, m->len, &t, &doc, errstr, sizeof(errstr)) : CODEC_ERR_HEADER;
    if (rc == 0 && t != CODEC_COMMAND) {
        json_decref(doc);
        rc = CODEC_ERR_FINGERPRINT;
        snprintf(errstr, sizeof(errstr), "the record is an event, not a command");
    } else if (!m->payload) {
        snprintf(errstr, sizeof(errstr), "empty record (no value)");
    }
    /* Append to the partition in offset order. */
    c->part = p;
    if (p->tail)
        p->tail->part_next = c;
    else
        p->head = c;
    p->tail = c;
    p->count++;
    w->buffered++;

    const char *reason = rc != 0 ? codec_strerror(rc) : NULL;
    if (rc == 0) {
        /* Keyed, locked and recorded by the canonical ids, whatever the case
         * the sender used (the record's own Kafka key keeps it). */
        cmddoc_canonical_ids(doc);
        const char *id = json_string_value(json_object_get(doc, "commandId"));
        if (!id || !uuid_valid(id)) {
            /* Not identifiable: no event can name it (an event's commandId
             * is a UUID), no ledger row can hold it. */
            char shown[160];
            int cut = 0;
            log_escape(shown, sizeof(shown), id ? id : "", id ? strlen(id) : 0, &cut);
            snprintf(errstr, sizeof(errstr), "commandId is not a UUID: \"%s\"%s", shown, cut ? "..." : "");
            reason = "invalid-command-id";
            json_decref(doc);
            doc = NULL;
        }
    }
    if (reason) {
        c->dlq_error = strdup(errstr);
        c->dlq_reason = strdup(reason);
        snprintf(c->id, sizeof(c->id), "-");
        log_warn("%s[%d]@%lld: %s record (%s: %s): to the DLQ", w->cmd.commands_topic, (int)m->partition,
                 (long long)m->offset, rc != 0 ? "undecodable" : "unidentifiable", c->dlq_reason, errstr);
        command_run(c);
    } else {
        char key[512];
        c->doc = doc;
        c->op = json_string_value(json_object_get(doc, "operation"));
        snprintf(c->id, sizeof(c->id), "%s", json_string_value(json_object_get(doc, "commandId")));
        command_key_string(doc, key, sizeof(key));
        rkey_t *k = key_get(w, key);
        c->key = k;
        c->key_name = k->name;
        if (k->tail)
            k->tail->key_next = c;
        else
            k->head = c;
        k->tail = c;
        log_debug("commandId=%s key=%s %s[%d]@%lld: received %s", c->id, key, w->cmd.commands_topic,
                  (int)m->partition, (long long)m->offset, c->op);
        key_make_ready(w, k);
        dispatch_pump(w);
    }
    if (!w->paused && w->buffered >= w->max_buffered) {
        pause_all(w, 1);
        w->paused = 1;
        log_info("paused consuming: %d commands buffered (limit %d)", w->buffered, w->max_buffered);
    }
}

/* --- rebalance ------------------------------------------------------------- */

/* Gives up p: commands not started are dropped (the next owner gets them
 * from the committed offset); started ones finish as orphans. */
static void partition_revoke(worker_t *w, partition_t *p) {
    command_t *c = p->head, *next;
    p->head = p->tail = NULL;
    p->count = 0;
    p->assigned = 0;
    p->stored = -1;
    for (; c; c = next) {
        next = c->part_next;
        c->part_next = NULL;
        c->part = NULL;
        c->partition = -1;
        if (c->phase == PHASE_QUEUED && !(c->key && c->key->head == c && c->key->busy)) {
            key_unlink(w, c);
            command_free(c);
        } else {
            c->orphan = 1;
        }
    }
}

static void on_rebalance(rd_kafka_t *rk, rd_kafka_resp_err_t err, rd_kafka_topic_partition_list_t *parts,
                         void *opaque) {
    worker_t *w = opaque;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            partition_t *p = partition_get(w, parts->elems[i].partition);
            p->assigned = 1;
            p->stored = -1;
            log_info("assigned %s[%d]", parts->elems[i].topic, (int)parts->elems[i].partition);
        }
        if (cooperative) {
            rd_kafka_error_t *e = rd_kafka_incremental_assign(rk, parts);
            if (e) {
                log_error("incremental assign: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
            }
        } else {
            rd_kafka_assign(rk, parts);
        }
        if (w->paused || w->cmd.stopping)
            rd_kafka_pause_partitions(rk, parts);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        /* Commit what is done before the partitions move on: the only place
         * the loop waits on the broker, bounded by the commit's timeout. */
        rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
        if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
            log_warn("commit on revoke: %s", rd_kafka_err2str(cerr));
        for (int i = 0; i < parts->cnt; i++) {
            partition_t *p = partition_get(w, parts->elems[i].partition);
            log_info("revoked %s[%d] (%d commands buffered)", parts->elems[i].topic, (int)p->id, p->count);
            partition_revoke(w, p);
        }
        if (cooperative) {
            rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
            if (e)
                rd_kafka_error_destroy(e);
        } else {
            rd_kafka_assign(rk, NULL);
        }
        maybe_resume(w);
        return;
    }
    log_error("rebalance error: %s", rd_kafka_err2str(err));
    rd_kafka_assign(rk, NULL);
}

/* --- wake-ups ---------------------------------------------------------------- */

static void poll_kafka(worker_t *w) {
    rd_kafka_poll(w->producer, 0);
    if (w->cmd.exiting)
        return;
    for (int i = 0; i < POLL_BATCH; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(w->consumer, 0);
        if (!m)
            break;
        dispatch_message(w, m);
        rd_kafka_message_destroy(m);
        if (w->cmd.exiting)
            return;
    }
    rd_kafka_poll(w->producer, 0);
}

static void on_wake(uv_poll_t *h, int status, int events) {
    worker_t *w = h->data;
    char buf[256];
    while (read(w->wake_fd[0], buf, sizeof(buf)) > 0)
        ;
    poll_kafka(w);
}

static void on_tick(uv_timer_t *t) {
    worker_t *w = t->data;
    poll_kafka(w);
    if (w->cmd.stopping && w->running == 0) /* the last ones were given back (command_pool_stop) */
        shutdown_finish(w);
}

void dispatch_init(worker_t *w) {
    dispatch_host_fill(w, command_done, command_given_back);
    w->consumer_lag = -1;
    w->kafka_brokers_up = -1;
    w->nkeys_buckets = 4096;
    w->keys = calloc(w->nkeys_buckets, sizeof(rkey_t *));
    if (!w->keys)
        abort();
}

int dispatch_start(worker_t *w, char *errstr, size_t errstr_size) {
    const config_t *cfg = w->cfg;
    const char *brokers = config_get(cfg, "brokers");
    dispatch_init(w);

    rd_kafka_conf_t *pc = kafka_producer_conf_new(cfg, brokers, errstr, errstr_size);
    if (!pc)
        return -1;
    if (kafka_conf_set(pc, "enable.idempotence", "true", errstr, errstr_size) < 0 ||
        kafka_conf_set(pc, "message.timeout.ms", "0", errstr, errstr_size) < 0 ||
        kafka_conf_set(pc, "linger.ms", "5", errstr, errstr_size) < 0 ||
        kafka_conf_set(pc, "client.id", "helmq-worker", errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(pc);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(pc, dispatch_on_delivery);
    rd_kafka_conf_set_stats_cb(pc, dispatch_stats_cb);
    rd_kafka_conf_set_opaque(pc, w);
    kafka_conf_set(pc, "statistics.interval.ms", "5000", errstr, errstr_size);
    w->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, errstr_size);
    if (!w->producer) {
        rd_kafka_conf_destroy(pc);
        return -1;
    }

    rd_kafka_conf_t *cc = kafka_conf_new(cfg, brokers, errstr, errstr_size);
    if (!cc)
        return -1;
    if (kafka_conf_set(cc, "group.id", config_get(cfg, "group-id"), errstr, errstr_size) < 0 ||
        kafka_conf_set(cc, "enable.auto.offset.store", "false", errstr, errstr_size) < 0 ||
        kafka_conf_set(cc, "enable.auto.commit", "true", errstr, errstr_size) < 0 ||
        kafka_conf_set(cc, "auto.commit.interval.ms", "1000", errstr, errstr_size) < 0 ||
        kafka_conf_set(cc, "auto.offset.reset", "earliest", errstr, errstr_size) < 0 ||
        /* The worker buffers decoded commands itself (--max-buffered): a
         * smaller prefetch than librdkafka's 64 MiB keeps its RSS down. */
        kafka_conf_set(cc, "queued.max.messages.kbytes", "16384", errstr, errstr_size) < 0 ||
        kafka_conf_set(cc, "client.id", "helmq-worker", errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(cc);
        return -1;
    }
    /* Pass-through properties win over helmq's choices. */
    for (int i = 0; i < cfg->kafka_count; i++) {
        char *kv = strdup(cfg->kafka_props[i]);
        char *eq = strchr(kv, '=');
        *eq = '\0';
        rd_kafka_conf_set(cc, kv, eq + 1, errstr, errstr_size);
        free(kv);
    }
    rd_kafka_conf_set_rebalance_cb(cc, on_rebalance);
    rd_kafka_conf_set_stats_cb(cc, dispatch_stats_cb);
    kafka_conf_set(cc, "statistics.interval.ms", "5000", errstr, errstr_size);
    rd_kafka_conf_set_opaque(cc, w);
    w->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, errstr_size);
    if (!w->consumer) {
        rd_kafka_conf_destroy(cc);
        return -1;
    }
    rd_kafka_poll_set_consumer(w->consumer);

    if (pipe2(w->wake_fd, O_NONBLOCK | O_CLOEXEC) != 0) {
        snprintf(errstr, errstr_size, "pipe: %s", strerror(errno));
        return -1;
    }
    w->consumer_q = rd_kafka_queue_get_consumer(w->consumer);
    w->producer_q = rd_kafka_queue_get_main(w->producer);
    rd_kafka_queue_io_event_enable(w->consumer_q, w->wake_fd[1], "c", 1);
    rd_kafka_queue_io_event_enable(w->producer_q, w->wake_fd[1], "p", 1);
    uv_poll_init(w->loop, &w->wake_poll, w->wake_fd[0]);
    w->wake_poll.data = w;
    uv_poll_start(&w->wake_poll, UV_READABLE, on_wake);
    uv_timer_init(w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_timer_init(w->loop, &w->tick);
    w->tick.data = w;
    uv_idle_init(w->loop, &w->later_idle);
    w->later_idle.data = w;
    uv_timer_start(&w->tick, on_tick, 200, 200);

    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, w->cmd.commands_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(w->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (err) {
        snprintf(errstr, errstr_size, "subscribe to %s: %s", w->cmd.commands_topic, rd_kafka_err2str(err));
        return -1;
    }
    log_info("consuming %s as group %s from %s; pool of %d helm processes", w->cmd.commands_topic,
             config_get(cfg, "group-id"), brokers, w->cmd.concurrency);
    return 0;
}

/* --- shutdown ------------------------------------------------------------------ */

static void handle_closed(uv_handle_t *h) {
    (void)h;
}

static void shutdown_finish(worker_t *w) {
    if (w->cmd.exiting)
        return;
    dispatch_later_drain(w);
    w->cmd.exiting = 1;
    uv_timer_stop(&w->drain_timer);
    log_info("draining done: committing offsets and leaving the group");
    rd_kafka_resp_err_t err = rd_kafka_commit(w->consumer, NULL, 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        log_warn("final commit: %s", rd_kafka_err2str(err));
    rd_kafka_consumer_close(w->consumer);
    if (rd_kafka_flush(w->producer, 10000) != 0)
        log_warn("some events were not delivered before exit: %d left", rd_kafka_outq_len(w->producer));
    /* Free what is still buffered (commands never started). */
    for (int i = 0; i < w->nparts; i++) {
        partition_t *p = w->parts[i];
        if (!p)
            continue;
        for (command_t *c = p->head, *n; c; c = n) {
            n = c->part_next;
            key_unlink(w, c);
            command_free(c);
        }
        free(p);
    }
    free(w->parts);
    w->parts = NULL;
    w->nparts = 0;
    w->cmd.helm_wait_head = w->cmd.helm_wait_tail = NULL; /* their commands were freed above */
    uv_poll_stop(&w->wake_poll);
    uv_close((uv_handle_t *)&w->wake_poll, handle_closed);
    uv_close((uv_handle_t *)&w->tick, handle_closed);
    uv_close((uv_handle_t *)&w->later_idle, handle_closed);
    uv_close((uv_handle_t *)&w->drain_timer, handle_closed);
    uv_close((uv_handle_t *)&w->sigterm, handle_closed);
    uv_close((uv_handle_t *)&w->sigint, handle_closed);
    for (int i = 0; i < w->ndbs; i++)
        db_close(w->dbs[i]);
    free(w->dbs);
    w->dbs = NULL;
    w->ndbs = 0;
    if (w->on_shutdown)
        w->on_shutdown(w);
}

static void on_drain_timeout(uv_timer_t *t) {
    worker_t *w = t->data;
    log_warn("drain timeout: %d commands still running; stopping their helm processes, they will be "
             "reconciled on redelivery",
             w->running);
    for (int i = 0; i < w->nparts; i++) {
        for (command_t *c = w->parts[i] ? w->parts[i]->head : NULL; c; c = c->part_next) {
            command_signal_helm(c, SIGTERM);
        }
    }
    w->exit_code = 0;
    shutdown_finish(w);
}

void dispatch_stop(worker_t *w) {
    if (w->cmd.stopping)
        return;
    w->cmd.stopping = 1;
    pause_all(w, 1);
    command_pool_stop(&w->cmd);
    log_info("stopping: no new commands; waiting for %d in flight (up to %s ms)", w->running,
             config_get(w->cfg, "drain-timeout-ms"));
    if (w->running == 0) {
        shutdown_finish(w);
        return;
    }
    uv_timer_start(&w->drain_timer, on_drain_timeout, (uint64_t)config_int(w->cfg, "drain-timeout-ms"), 0);
}
