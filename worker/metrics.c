/* The worker's /metrics (Prometheus text format) and /healthz: commands by
 * outcome, in-flight operations, helm durations, consumer lag, PostgreSQL and
 * Kafka connectivity. Served on the worker's own loop (httpd.h). Everything
 * is read from counters the modules keep (command_counters_t, worker_t),
 * never asked of them. */
#include "metrics.h"

#include "httpd.h"
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The answer being written: it grows with the tenants counted. */
typedef struct text {
    char *p;
    size_t n, cap;
    int failed;
} text_t;

__attribute__((format(printf, 2, 3))) static void out(text_t *t, const char *fmt, ...) {
    for (;;) {
        if (t->failed)
            return;
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->p ? t->p + t->n : NULL, t->p ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->failed = 1;
            return;
        }
        if (t->p && t->n + (size_t)k < t->cap) {
            t->n += (size_t)k;
            return;
        }
        size_t cap = t->cap ? t->cap * 2 : 8192;
        while (cap <= t->n + (size_t)k)
            cap *= 2;
        char *p = realloc(t->p, cap);
        if (!p) {
            t->failed = 1;
            return;
        }
        t->p = p;
        t->cap = cap;
    }
}

static void tenant_series(text_t *t, const command_tenant_count_t *s, const char *tenant) {
    for (int i = 0; i < COMMAND_TENANT_OUTCOMES; i++)
        if (s->outcome[i])
            out(t, "helmq_worker_tenant_commands_total{tenant=\"%s\",outcome=\"%s\"} %llu\n", tenant,
                command_outcome_names[i], (unsigned long long)s->outcome[i]);
}

/* Whether every ledger connection is up. */
static int postgres_up(const worker_t *w) {
    for (int i = 0; i < w->ndbs; i++)
        if (!db_ready(w->dbs[i]))
            return 0;
    return w->ndbs > 0;
}

static void serve(http_req_t *req, void *ctx) {
    worker_t *w = ctx;
    if (strcmp(req->path, "/healthz") == 0) {
        int pg = postgres_up(w), kafka = w->kafka_brokers_up != 0;
        char body[160];
        int n =
            snprintf(body, sizeof(body), "{\"status\":\"%s\",\"postgres\":%s,\"kafka\":%s,\"stopping\":%s}",
                     pg && kafka && !w->cmd.stopping ? "ok" : "degraded", pg ? "true" : "false",
                     kafka ? "true" : "false", w->cmd.stopping ? "true" : "false");
        httpd_respond(req, pg && kafka && !w->cmd.stopping ? 200 : 503, "application/json", body, (size_t)n);
        return;
    }
    if (strcmp(req->path, "/metrics") != 0) {
        httpd_error(req, 404, "try /metrics or /healthz", NULL, NULL);
        return;
    }
    text_t body = {0};
#define OUT(...) out(&body, __VA_ARGS__)
    OUT("# HELP helmq_worker_commands_total Commands finished, by outcome (republished: a redelivered "
        "finished command).\n"
        "# TYPE helmq_worker_commands_total counter\n");
    for (int i = 0; i < COMMAND_OUTCOMES; i++)
        OUT("helmq_worker_commands_total{outcome=\"%s\"} %llu\n", command_outcome_names[i],
            (unsigned long long)w->cmd.counters.outcome[i]);
    OUT("helmq_worker_commands_total{outcome=\"dlq\"} %llu\n", (unsigned long long)w->cmd.counters.dlq);
    OUT("# HELP helmq_worker_in_flight Commands in progress: ledger steps, helm, terminal event (at most "
        "4 x concurrency).\n# TYPE helmq_worker_in_flight gauge\n"
        "helmq_worker_in_flight %d\n",
        w->running);
    OUT("# HELP helmq_worker_helm_running Slots of the helm pool held: commands from recording their start "
        "to the end of their helm steps (at most concurrency).\n"
        "# TYPE helmq_worker_helm_running gauge\n"
        "helmq_worker_helm_running %d\n",
        w->cmd.helm_running);
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
    for (int i = 0; i < COMMAND_HELM_BUCKETS; i++) {
        if (command_helm_bucket_le[i] < 0)
            OUT("helmq_worker_helm_duration_seconds_bucket{le=\"+Inf\"} %llu\n",
                (unsigned long long)w->cmd.counters.helm_buckets[i]);
        else
            OUT("helmq_worker_helm_duration_seconds_bucket{le=\"%g\"} %llu\n", command_helm_bucket_le[i],
                (unsigned long long)w->cmd.counters.helm_buckets[i]);
    }
    OUT("helmq_worker_helm_duration_seconds_sum %.3f\nhelmq_worker_helm_duration_seconds_count %llu\n",
        w->cmd.counters.helm_seconds, (unsigned long long)w->cmd.counters.helm_count);
    OUT("# HELP helmq_worker_consumer_lag Messages behind on the commands topic (librdkafka statistics).\n"
        "# TYPE helmq_worker_consumer_lag gauge\nhelmq_worker_consumer_lag %lld\n",
        (long long)w->consumer_lag);
    OUT("# HELP helmq_postgres_up Whether the PostgreSQL connection is up.\n# TYPE helmq_postgres_up gauge\n"
        "helmq_postgres_up %d\n",
        postgres_up(w));
    OUT("# HELP helmq_kafka_brokers_up Kafka brokers connected (librdkafka statistics).\n"
        "# TYPE helmq_kafka_brokers_up gauge\nhelmq_kafka_brokers_up %d\n",
        w->kafka_brokers_up);
    OUT("# HELP helmq_worker_helm_timeouts_total helm processes stopped because they outlived their "
        "operation's timeout.\n# TYPE helmq_worker_helm_timeouts_total counter\n"
        "helmq_worker_helm_timeouts_total %llu\n",
        (unsigned long long)w->cmd.counters.helm_timeouts);
    const command_tenant_counts_t *tc = &w->cmd.tenants;
    OUT("# HELP helmq_worker_tenant_commands_total Commands finished per tenant, by outcome (the first "
        "%zu tenants seen; later ones, and commands without a valid tenantId, under tenant=\"other\").\n"
        "# TYPE helmq_worker_tenant_commands_total counter\n",
        tc->max);
    for (size_t i = 0; i < tc->cap; i++)
        if (tc->slots[i].tenant[0])
            tenant_series(&body, &tc->slots[i], tc->slots[i].tenant);
    tenant_series(&body, &tc->other, "other");
#undef OUT
    if (body.failed) {
        free(body.p);
        httpd_error(req, 500, "out of memory", NULL, NULL);
        return;
    }
    httpd_respond(req, 200, "text/plain; version=0.0.4", body.p, body.n);
    free(body.p);
}

int metrics_start(worker_t *w, const char *listen, char *errstr, size_t errstr_size) {
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
