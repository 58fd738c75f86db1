/* The projector's Kafka consumer and batching loop: its own consumer group
 * on the events topic (or, for a rebuild, every partition from the
 * beginning), records gathered into batches, each applied in one
 * transaction (apply.c), and the offsets stored and committed only for
 * batches PostgreSQL has committed. PostgreSQL down: the batch is kept and
 * retried with backoff; nothing is lost.
 *
 * A plain loop rather than an event loop, with one overlap: while PostgreSQL
 * applies a batch (sent whole, its outcome read later), the next batch is
 * gathered, decoded and written as COPY rows. Everything else (a refused
 * batch split, parking, retries) runs one step at a time, after the batch in
 * flight has finished. */
#include "projector.h"

#include "kafka.h"
#include "log.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

consumer_gauges_t consumer_gauges = {.kafka_up = -1, .lag = -1};

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    json_t *st = json_loadb(json, len, 0, NULL);
    const char *name, *pname;
    json_t *t, *p;
    long long lag = 0;
    int up = 0;
    json_object_foreach(json_object_get(st, "topics"), name, t) {
        json_object_foreach(json_object_get(t, "partitions"), pname, p) {
            json_int_t l = json_integer_value(json_object_get(p, "consumer_lag"));
            if (strcmp(pname, "-1") != 0 && l > 0)
                lag += l;
        }
    }
    json_object_foreach(json_object_get(st, "brokers"), name, t) {
        const char *state = json_string_value(json_object_get(t, "state"));
        if (state && strcmp(state, "UP") == 0 && json_integer_value(json_object_get(t, "nodeid")) >= 0)
            up++;
    }
    atomic_store(&consumer_gauges.lag, lag);
    atomic_store(&consumer_gauges.kafka_up, up);
    json_decref(st);
    return 0;
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static rd_kafka_t *consumer_new(const config_t *cfg, int rebuild, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = kafka_conf_new(cfg, config_get(cfg, "brokers"), errstr, errstr_size);
    if (!conf)
        return NULL;
    if (kafka_conf_set(conf, "group.id", rebuild ? "helmq-projector-rebuild" : config_get(cfg, "group-id"),
                       errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "enable.partition.eof", rebuild ? "true" : "false", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "client.id", "helmq-projector", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "statistics.interval.ms", "5000", errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (int i = 0; i < cfg->kafka_count; i++) { /* pass-through wins */
        char *kv = strdup(cfg->kafka_props[i]);
        char *eq = strchr(kv, '=');
        *eq = '\0';
        rd_kafka_conf_set(conf, kv, eq + 1, errstr, errstr_size);
        free(kv);
    }
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

int consumer_run(const config_t *cfg, int rebuild, const volatile sig_atomic_t *stop) {
    char errstr[512];
    const char *url = config_get(cfg, "database-url");
    const char *topic = config_get(cfg, "events-topic");
    int batch_size = (int)config_int(cfg, "batch-size");
    uint64_t batch_wait = (uint64_t)config_int(cfg, "batch-wait-ms");
    PGconn *db = apply_db_ensure(NULL, url, stop);
    if (*stop)
        return 1;
    char rebuild_began[64] = ""; /* when the rebuild emptied the projection (sql/0002) */
    if (rebuild) {
        if (rebuild_begin(db, rebuild_began, sizeof(rebuild_began)) < 0) {
            PQfinish(db);
            return 1;
        }
        log_info("projection emptied; replaying %s from the beginning", topic);
    }
    rd_kafka_t *rk = consumer_new(cfg, rebuild, errstr, sizeof(errstr));
    if (!rk) {
        log_error("kafka: %s", errstr);
        PQfinish(db);
        return 1;
    }
    int nparts = 0, eofs = 0;
    if (rebuild) {
        if (rebuild_assign(rk, topic, &nparts, errstr, sizeof(errstr)) < 0) {
            log_error("kafka: %s", errstr);
            rd_kafka_destroy(rk);
            PQfinish(db);
            return 1;
        }
    } else {
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, t);
        rd_kafka_topic_partition_list_destroy(t);
        if (err) {
            log_error("subscribe to %s: %s", topic, rd_kafka_err2str(err));
            rd_kafka_destroy(rk);
            PQfinish(db);
            return 1;
        }
        log_info("projecting %s as group %s from %s into PostgreSQL", topic, config_get(cfg, "group-id"),
                 config_get(cfg, "brokers"));
    }
    projector_t p = {.db = db, .url = url, .topic = topic, .rebuild = rebuild, .stop = stop};
    db = NULL;
    /* Two batches: one PostgreSQL applies while the next is gathered and
     * decoded. */
    batch_t bufs[2], *cur = &bufs[0], *next = &bufs[1];
    for (int i = 0; i < 2; i++) {
        bufs[i].recs = calloc((size_t)batch_size, sizeof(batch_record_t));
        bufs[i].events = malloc(sizeof(batch_record_t) * (size_t)batch_size);
        bufs[i].n = bufs[i].nevents = bufs[i].in_flight = 0;
        bufs[i].rows = (copy_buf_t){0};
        memset(bufs[i].drows, 0, sizeof(bufs[i].drows));
    }
    unsigned long long total = 0, batches = 0;
    int status = 0, gave_up = 0, applied_since_exit_commit = 0;
    for (;;) {
        int n = 0;
        uint64_t first = 0;
        /* While cur is applied, take only what has arrived. */
        while (!*stop && n < batch_size && !(rebuild && eofs >= nparts)) {
            int wait = cur->n  ? 0
                       : first ? (int)(batch_wait > mono_ms() - first ? batch_wait - (mono_ms() - first) : 0)
                               : 500;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, wait);
            if (!m) {
                if (first || rebuild || cur->n)
                    break;
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                eofs++;
                rd_kafka_message_destroy(m);
                continue;
            }
            if (m->err) {
                log_warn("consumer: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                continue;
            }
            batch_add(&next->recs[n++], m);
            if (!first)
                first = mono_ms();
        }
        next->n = n;
        batch_prepare(&p, next);
        if (cur->n > 0) {
            int rc = apply_finish(&p, cur);
            if (rc == 0 && !rebuild) {
                /* Only the offsets of applied batches are stored, then
                 * committed asynchronously: the next batch is gathered while
                 * the broker answers (a commit lost in a crash only
                 * re-applies the batch, harmlessly); the last one is waited
                 * for before exiting. */
                for (int i = 0; i < cur->n; i++)
                    rd_kafka_offset_store(cur->recs[i].msg->rkt, cur->recs[i].msg->partition,
                                          cur->recs[i].msg->offset);
                rd_kafka_resp_err_t err = rd_kafka_commit(rk, NULL, 1);
                if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
                    log_warn("committing offsets after a batch of %d: %s (the batch will be re-applied, "
                             "harmlessly)",
                             cur->n, rd_kafka_err2str(err));
                applied_since_exit_commit = 1;
            }
            if (rc == 0) {
                total += (unsigned long long)cur->n;
                batches++;
                if (batches % 100 == 0 || rebuild)
                    log_info("%llu events in %llu batches", total, batches);
            }
            batch_clear(cur->recs, cur->n);
            cur->n = 0;
            if (rc < 0) {
                gave_up = !*stop;
                /* stopped before PostgreSQL took it all: not committed, so replayed later */
                batch_clear(next->recs, next->n);
                next->n = 0;
                break;
            }
        }
        if (*stop && next->n > 0) { /* gathered, never sent: not committed, so replayed later */
            batch_clear(next->recs, next->n);
            next->n = 0;
        }
        if (next->n == 0 && (*stop || (rebuild && eofs >= nparts)))
            break;
        batch_t *t = cur;
        cur = next;
        next = t;
        if (cur->n > 0)
            apply_start(&p, cur);
    }
    batch_direct_work_free(&p.direct);
    for (int i = 0; i < 2; i++) {
        free(bufs[i].drows[0].data);
        free(bufs[i].drows[1].data);
        free(bufs[i].drows[2].data);
        for (int k = 0; k < batch_size; k++)
            codec_flat_free(&bufs[i].recs[k].ev);
        free(bufs[i].recs);
        free(bufs[i].events);
        free(bufs[i].rows.data);
    }
    if (!rebuild && applied_since_exit_commit) {
        /* The offsets stored are those of applied batches: commit them and
         * wait. */
        rd_kafka_resp_err_t err = rd_kafka_commit(rk, NULL, 0);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
            log_warn(
                "committing offsets before exiting: %s (the last batches will be re-applied, harmlessly)",
                rd_kafka_err2str(err));
    }
    if (rebuild && !*stop && !gave_up) {
        rebuild_finish(p.db, topic, rebuild_began);
    }
    if (rebuild && !*stop && !gave_up && p.parked == 0)
        log_info("rebuild done: %llu events replayed", total);
    else if (rebuild && !*stop && !gave_up)
        log_error(
            "rebuild done, but %llu of the %llu records replayed were parked instead of applied (refused "
            "by PostgreSQL or not decodable; see the errors above and helmq.parked_events)",
            p.parked, total);
    else if (rebuild)
        log_error("rebuild stopped before the end of %s after %llu events: the projection is incomplete",
                  topic, total);
    else
        log_info("stopping after %llu events in %llu batches (%llu parked)", total, batches, p.parked);
    if (rebuild && (*stop || gave_up))
        status = 1;
    else if (rebuild && p.parked > 0)
        status = 3;
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    PQfinish(p.db);
    return status;
}
