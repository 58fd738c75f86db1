/* Serves the projector's /metrics (Prometheus text) and /healthz from an
 * HTTP thread of its own, reading the counters the apply step
 * (apply_counters) and the consumer (consumer_gauges) keep. */
#include "projector.h"

#include "httpd.h"
#include "log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct metrics_http {
    uv_loop_t loop;
    uv_async_t wake;
    httpd_t *http;
    pthread_t thread;
};

static void serve(http_req_t *req, void *ctx) {
    int pg = atomic_load(&apply_counters.pg_up), kafka = atomic_load(&consumer_gauges.kafka_up) != 0;
    if (strcmp(req->path, "/healthz") == 0) {
        char body[128];
        int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"postgres\":%s,\"kafka\":%s}",
                         pg && kafka ? "ok" : "degraded", pg ? "true" : "false", kafka ? "true" : "false");
        httpd_respond(req, pg && kafka ? 200 : 503, "application/json", body, (size_t)n);
        return;
    }
    if (strcmp(req->path, "/metrics") != 0) {
        httpd_error(req, 404, "try /metrics or /healthz", NULL, NULL);
        return;
    }
    char body[4096];
    size_t n = 0;
#define OUT(...) n += (size_t)snprintf(body + n, sizeof(body) - n, __VA_ARGS__)
    OUT("# HELP helmq_projector_events_total Events applied (including duplicates recognised).\n"
        "# TYPE helmq_projector_events_total counter\nhelmq_projector_events_total %llu\n",
        atomic_load(&apply_counters.events));
    OUT("# HELP helmq_projector_batch_size Events per PostgreSQL transaction.\n"
        "# TYPE helmq_projector_batch_size histogram\n");
    for (int i = 0; i < 6; i++) {
        if (apply_batch_le[i] < 0)
            OUT("helmq_projector_batch_size_bucket{le=\"+Inf\"} %llu\n",
                atomic_load(&apply_counters.batch_buckets[i]));
        else
            OUT("helmq_projector_batch_size_bucket{le=\"%ld\"} %llu\n", apply_batch_le[i],
                atomic_load(&apply_counters.batch_buckets[i]));
    }
    OUT("helmq_projector_batch_size_sum %llu\nhelmq_projector_batch_size_count %llu\n",
        atomic_load(&apply_counters.events), atomic_load(&apply_counters.batches));
    OUT("# HELP helmq_projector_direct_batches_total Batches committed in the direct form (COPY straight "
        "into the tables).\n# TYPE helmq_projector_direct_batches_total counter\n"
        "helmq_projector_direct_batches_total %llu\n"
        "# HELP helmq_projector_direct_retried_total Batches the direct form could not take (events applied "
        "before: a replay), applied again staged.\n# TYPE helmq_projector_direct_retried_total counter\n"
        "helmq_projector_direct_retried_total %llu\n",
        atomic_load(&apply_counters.direct_batches), atomic_load(&apply_counters.direct_retried));
    OUT("# HELP helmq_projector_events_parked_total Records parked in helmq.parked_events instead of "
        "applied: refused by PostgreSQL, or not decodable as an event.\n"
        "# TYPE helmq_projector_events_parked_total counter\n"
        "helmq_projector_events_parked_total{reason=\"refused\"} %llu\n"
        "helmq_projector_events_parked_total{reason=\"undecodable\"} %llu\n",
        atomic_load(&apply_counters.parked_refused), atomic_load(&apply_counters.parked_undecodable));
    OUT("# HELP helmq_projector_consumer_lag Events behind on the events topic.\n"
        "# TYPE helmq_projector_consumer_lag gauge\nhelmq_projector_consumer_lag %lld\n",
        atomic_load(&consumer_gauges.lag));
    OUT("# HELP helmq_postgres_up Whether the PostgreSQL connection is up.\n# TYPE helmq_postgres_up gauge\n"
        "helmq_postgres_up %d\n",
        pg);
    OUT("# HELP helmq_kafka_brokers_up Kafka brokers connected.\n# TYPE helmq_kafka_brokers_up gauge\n"
        "helmq_kafka_brokers_up %d\n",
        atomic_load(&consumer_gauges.kafka_up));
#undef OUT
    httpd_respond(req, 200, "text/plain; version=0.0.4", body, n < sizeof(body) ? n : sizeof(body) - 1);
}

static void *http_main(void *arg) {
    metrics_http_t *h = arg;
    uv_run(&h->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void http_wake(uv_async_t *a) {
    metrics_http_t *h = a->data;
    httpd_stop(h->http);
    uv_close((uv_handle_t *)&h->wake, NULL);
}

/* Serves /metrics and /healthz from a thread of their own (the projector's
 * loop blocks on Kafka and PostgreSQL by design). */
metrics_http_t *metrics_http_start(const char *listen) {
    char errstr[256];
    metrics_http_t *h = calloc(1, sizeof(*h));
    uv_loop_init(&h->loop);
    httpd_limits_t limits = {
        .max_body = 4096, .max_header = HTTPD_MAX_HEADER, .timeout_ms = 10000, .max_connections = 64};
    h->http = httpd_start(&h->loop, listen, &limits, serve, NULL, errstr, sizeof(errstr));
    if (!h->http) {
        log_error("%s", errstr);
        uv_loop_close(&h->loop);
        free(h);
        return NULL;
    }
    uv_async_init(&h->loop, &h->wake, http_wake);
    h->wake.data = h;
    log_info("metrics on port %d: /metrics, /healthz", httpd_port(h->http));
    pthread_create(&h->thread, NULL, http_main, h);
    return h;
}

void metrics_http_stop(metrics_http_t *h) {
    if (!h)
        return;
    uv_async_send(&h->wake);
    pthread_join(h->thread, NULL);
    uv_loop_close(&h->loop);
    free(h);
}
