/* The worker's /metrics (Prometheus text format) and /healthz: commands by
 * outcome, in-flight operations, helm durations, consumer lag, PostgreSQL and
 * Kafka connectivity. Served on the worker's own loop (httpd.h). */
#include "worker.h"

#include "httpd.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const double bucket_le[8] = {0.1, 0.5, 1, 5, 30, 120, 600, -1};
static const char *const outcome_names[5] = {"succeeded", "failed", "rolled_back", "rejected", "republished"};

void metrics_outcome(worker_t *w, const char *event_type) {
    int i = 4;
    for (int k = 0; k < 4 && event_type; k++)
        if (strcmp(event_type, outcome_names[k]) == 0)
            i = k;
    w->n_outcome[i]++;
}

void metrics_helm_duration(worker_t *w, double seconds) {
    for (int i = 0; i < 8; i++)
        if (bucket_le[i] < 0 || seconds <= bucket_le[i])
            w->helm_buckets[i]++;
    w->helm_count++;
    w->helm_seconds += seconds;
}

int metrics_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    worker_t *w = opaque;
    json_t *st = json_loadb(json, len, 0, NULL);
    if (!st)
        return 0;
    const char *type = json_string_value(json_object_get(st, "type"));
    const char *name;
    json_t *v;
    if (type && strcmp(type, "consumer") == 0) {
        int64_t lag = 0;
        json_t *parts =
            json_object_get(json_object_get(json_object_get(st, "topics"), w->commands_topic), "partitions");
        json_object_foreach(parts, name, v) {
            json_int_t l = json_integer_value(json_object_get(v, "consumer_lag"));
            if (strcmp(name, "-1") != 0 && l > 0)
                lag += l;
        }
        w->consumer_lag = lag;
    }
    int up = 0;
    json_object_foreach(json_object_get(st, "brokers"), name, v) {
        const char *state = json_string_value(json_object_get(v, "state"));
        if (state && strcmp(state, "UP") == 0 && json_integer_value(json_object_get(v, "nodeid")) >= 0)
            up++;
    }
    if (type && strcmp(type, "producer") == 0)
        w->kafka_brokers_up = up;
    json_decref(st);
    return 0;
}

static void serve(http_req_t *req, void *ctx) {
    worker_t *w = ctx;
    if (strcmp(req->path, "/healthz") == 0) {
        int pg = worker_db_ready(w), kafka = w->kafka_brokers_up != 0;
        char body[160];
        int n =
            snprintf(body, sizeof(body), "{\"status\":\"%s\",\"postgres\":%s,\"kafka\":%s,\"stopping\":%s}",
                     pg && kafka && !w->stopping ? "ok" : "degraded", pg ? "true" : "false",
                     kafka ? "true" : "false", w->stopping ? "true" : "false");
        httpd_respond(req, pg && kafka && !w->stopping ? 200 : 503, "application/json", body, (size_t)n);
        return;
    }
    if (strcmp(req->path, "/metrics") != 0) {
        httpd_error(req, 404, "try /metrics or /healthz", NULL, NULL);
        return;
    }
    char body[4096];
    size_t n = 0;
#define OUT(...) n += (size_t)snprintf(body + n, sizeof(body) - n, __VA_ARGS__)
    OUT("# HELP helmq_worker_commands_total Commands finished, by outcome (republished: a redelivered "
        "finished command).\n"
        "# TYPE helmq_worker_commands_total counter\n");
    for (int i = 0; i < 5; i++)
        OUT("helmq_worker_commands_total{outcome=\"%s\"} %llu\n", outcome_names[i],
            (unsigned long long)w->n_outcome[i]);
    OUT("helmq_worker_commands_total{outcome=\"dlq\"} %llu\n", (unsigned long long)w->n_dlq);
    OUT("# HELP helmq_worker_in_flight Commands in progress: ledger steps, helm, terminal event (at most "
        "4 x concurrency).\n# TYPE helmq_worker_in_flight gauge\n"
        "helmq_worker_in_flight %d\n",
        w->running);
    OUT("# HELP helmq_worker_helm_running Slots of the helm pool held: commands from recording their start "
        "to the end of their helm steps (at most concurrency).\n"
        "# TYPE helmq_worker_helm_running gauge\n"
        "helmq_worker_helm_running %d\n",
        w->helm_running);
    OUT("# HELP helmq_worker_buffered Commands received and not yet finished.\n# TYPE helmq_worker_buffered "
        "gauge\n"
        "helmq_worker_buffered %d\n",
        w->buffered);
    OUT("# HELP helmq_worker_events_unacked Events (and dead letters) handed to the producer and not yet "
        "acknowledged by the broker.\n# TYPE helmq_worker_events_unacked gauge\n"
        "helmq_worker_events_unacked %d\n",
        w->producer ? rd_kafka_outq_len(w->producer) : 0);
    OUT("# HELP helmq_worker_helm_duration_seconds Duration of helm invocations.\n"
        "# TYPE helmq_worker_helm_duration_seconds histogram\n");
    for (int i = 0; i < 8; i++) {
        if (bucket_le[i] < 0)
            OUT("helmq_worker_helm_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                (unsigned long long)w->helm_buckets[i]);
        else
            OUT("helmq_worker_helm_duration_seconds_bucket{le=\"%g\"} %llu\n", bucket_le[i],
                (unsigned long long)w->helm_buckets[i]);
    }
    OUT("helmq_worker_helm_duration_seconds_sum %.3f\nhelmq_worker_helm_duration_seconds_count %llu\n",
        w->helm_seconds, (unsigned long long)w->helm_count);
    OUT("# HELP helmq_worker_consumer_lag Messages behind on the commands topic (librdkafka statistics).\n"
        "# TYPE helmq_worker_consumer_lag gauge\nhelmq_worker_consumer_lag %lld\n",
        (long long)w->consumer_lag);
    OUT("# HELP helmq_postgres_up Whether the PostgreSQL connection is up.\n# TYPE helmq_postgres_up gauge\n"
        "helmq_postgres_up %d\n",
        worker_db_ready(w));
    OUT("# HELP helmq_kafka_brokers_up Kafka brokers connected (librdkafka statistics).\n"
        "# TYPE helmq_kafka_brokers_up gauge\nhelmq_kafka_brokers_up %d\n",
        w->kafka_brokers_up);
#undef OUT
    httpd_respond(req, 200, "text/plain; version=0.0.4", body, n < sizeof(body) ? n : sizeof(body) - 1);
}

int metrics_start(worker_t *w, const char *listen, char *errstr, size_t errstr_size) {
    w->consumer_lag = -1;
    w->kafka_brokers_up = -1;
    if (!listen || !*listen)
        return 0;
    /* A few scrapers at a time: the worker's files are for helm and its pipes. */
    httpd_limits_t limits = {
        .max_body = 4096, .max_header = HTTPD_MAX_HEADER, .timeout_ms = 10000, .max_connections = 64};
    w->http = httpd_start(w->loop, listen, &limits, serve, w, errstr, errstr_size);
    if (!w->http)
        return -1;
    log_info("metrics on port %d: /metrics, /healthz", httpd_port(w->http));
    return 0;
}

void metrics_stop(worker_t *w) {
    httpd_stop(w->http);
    w->http = NULL;
}
