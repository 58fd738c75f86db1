/* helmq-api's counters and their Prometheus text. See api_metrics.h. */
#include "api_metrics.h"

#include <stdio.h>

void api_metrics_request(api_metrics_t *m, int status, double seconds) {
    m->requests[status / 100 < 6 ? status / 100 : 5]++;
    m->latency_count++;
    m->latency_sum += seconds;
}

int api_metrics_render(const api_metrics_t *m, int postgres_up, int kafka_up, const httpd_stats_t *hs,
                       char *buf, size_t size) {
    int n = snprintf(buf, size,
                     "# HELP helmq_api_requests_total HTTP requests answered, by status class.\n"
                     "# TYPE helmq_api_requests_total counter\n");
    for (int c = 1; c <= 5; c++)
        n += snprintf(buf + n, size - (size_t)n, "helmq_api_requests_total{class=\"%dxx\"} %llu\n", c,
                      m->requests[c]);
    n += snprintf(
        buf + n, size - (size_t)n,
        "# HELP helmq_api_request_duration_seconds Time to answer requests.\n"
        "# TYPE helmq_api_request_duration_seconds summary\n"
        "helmq_api_request_duration_seconds_sum %.6f\nhelmq_api_request_duration_seconds_count %llu\n"
        "# HELP helmq_api_commands_total Commands published, by outcome.\n"
        "# TYPE helmq_api_commands_total counter\n"
        "helmq_api_commands_total{outcome=\"delivered\"} %llu\nhelmq_api_commands_total{outcome=\"failed\"} "
        "%llu\n"
        "# HELP helmq_postgres_up Whether the PostgreSQL connection is up.\n# TYPE helmq_postgres_up gauge\n"
        "helmq_postgres_up %d\n"
        "# HELP helmq_kafka_up Whether a Kafka broker is reachable.\n# TYPE helmq_kafka_up gauge\n"
        "helmq_kafka_up %d\n",
        m->latency_sum, m->latency_count, m->commands_sent, m->commands_failed, postgres_up, kafka_up);
    n += snprintf(buf + n, size - (size_t)n,
                  "# HELP helmq_api_connections Open HTTP connections.\n# TYPE helmq_api_connections gauge\n"
                  "helmq_api_connections %u\n"
                  "# HELP helmq_api_connections_max The limit of open HTTP connections.\n"
                  "# TYPE helmq_api_connections_max gauge\nhelmq_api_connections_max %u\n"
                  "# HELP helmq_api_connections_closed_total HTTP connections the server closed, by reason.\n"
                  "# TYPE helmq_api_connections_closed_total counter\n"
                  "helmq_api_connections_closed_total{reason=\"timeout\"} %llu\n"
                  "helmq_api_connections_closed_total{reason=\"evicted\"} %llu\n"
                  "helmq_api_connections_closed_total{reason=\"refused\"} %llu\n",
                  hs->connections, hs->max_connections, hs->timed_out, hs->evicted, hs->refused);
    n += snprintf(
        buf + n, size - (size_t)n,
        "# HELP helmq_api_event_streams Open event streams (Server-Sent Events), starting ones included.\n"
        "# TYPE helmq_api_event_streams gauge\nhelmq_api_event_streams %u\n"
        "# HELP helmq_api_stream_events_total Release events sent on event streams.\n"
        "# TYPE helmq_api_stream_events_total counter\nhelmq_api_stream_events_total %llu\n"
        "# HELP helmq_api_streams_cut_total Event streams cut because their reader fell more than "
        "--stream-max-buffer behind.\n"
        "# TYPE helmq_api_streams_cut_total counter\nhelmq_api_streams_cut_total %llu\n",
        m->streams_open, m->stream_events, m->streams_cut);
    return n;
}
