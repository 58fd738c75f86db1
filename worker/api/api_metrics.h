/* helmq-api's counters and their /metrics text (Prometheus text format).
 * api.c counts into an api_metrics_t it embeds; api_metrics_render reads
 * the counters and the probes the caller passes (PostgreSQL, Kafka, the
 * HTTP server's connection statistics). */
#ifndef HELMQ_API_METRICS_H
#define HELMQ_API_METRICS_H

#include "httpd.h"

#include <stddef.h>

typedef struct api_metrics {
    unsigned long long requests[6]; /* by status class 1xx..5xx (index 1..5) */
    unsigned long long commands_sent, commands_failed;
    unsigned long long latency_count;
    double latency_sum; /* seconds */
    /* the event streams' (api_stream.h), copied in before rendering */
    unsigned streams_open;
    unsigned long long stream_events, streams_cut;
} api_metrics_t;

/* Counts one answered request: its status and how long it took. */
void api_metrics_request(api_metrics_t *m, int status, double seconds);

/* Writes the Prometheus text of m, postgres_up, kafka_up and hs into buf
 * (size bytes; 4096 hold it). Returns the length written. */
int api_metrics_render(const api_metrics_t *m, int postgres_up, int kafka_up, const httpd_stats_t *hs,
                       char *buf, size_t size);

#endif
