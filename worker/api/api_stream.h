/* helmq-api's live stream of release events (Server-Sent Events).
 *
 * Each stream reads the events topic with a Kafka consumer of its own,
 * assigned (rd_kafka_assign, no consumer group: nothing joins, nothing is
 * committed) to every partition at the stream's start position; its queue's
 * IO event wakes the loop through a pipe, as api.c's producer does. Why one
 * consumer per stream rather than one shared tailing consumer plus replay:
 * every stream starts somewhere else (the end, the beginning, or the
 * positions of a Last-Event-ID), and a consumer of its own reads exactly from
 * there with no replay buffer to keep consistent with the tail; its cost (a
 * few librdkafka threads and a bounded prefetch queue each) is bounded by
 * --max-streams. Creating and destroying a consumer blocks, so both run on
 * libuv's thread pool, never on the loop.
 *
 * Every message is decoded with the codec into the events' natural JSON
 * (helmq events' mapping), filtered by tenant and release, and sent as
 *     id: <resume token>\nevent: release\ndata: <JSON on one line>\n\n
 * The resume token is the next offset of every partition after that event,
 * "P:OFFSET,P:OFFSET,..." (partition order): resuming from it reads each
 * partition exactly where this stream left it, so nothing is lost and
 * nothing repeated, across partitions. Events filtered out still advance the
 * positions.
 *
 * Bounds: --max-streams streams open or starting (503 beyond); a stream whose
 * unsent bytes (httpd_stream_unsent) exceed --stream-max-buffer is cut; a
 * comment ": keepalive" every --stream-heartbeat-ms. */
#ifndef HELMQ_API_STREAM_H
#define HELMQ_API_STREAM_H

#include "config.h"
#include "httpd.h"

#include <stddef.h>
#include <uv.h>

typedef struct api_stream api_stream_t;

typedef struct api_streams {
    uv_loop_t *loop;
    const config_t *cfg; /* brokers, pass-through Kafka properties */
    const char *brokers, *topic;
    size_t max_buffer;
    unsigned max_streams;
    unsigned heartbeat_ms;
    unsigned open;                  /* streams open or starting */
    unsigned long long events_sent; /* events written to streams */
    unsigned long long cut_slow;    /* streams cut because their reader fell behind */
    api_stream_t *list;
    int stopping;
} api_streams_t;

/* Fills ss from cfg (brokers, events-topic, max-streams, stream-max-buffer,
 * stream-heartbeat-ms). Returns 0, or -1 with errstr filled for a bad value. */
int api_streams_init(api_streams_t *ss, uv_loop_t *loop, const config_t *cfg, char *errstr,
                     size_t errstr_size);

/* What a stream shows: tenant and release are "" for any. */
typedef struct api_stream_filter {
    char tenant[37], release[37];
} api_stream_filter_t;

/* The scope of a stream for a token of tenant own (NULL: admin), on the
 * path's tenant (.../tenant/:tenantId/events; NULL: .../events, which reads
 * ?tenantId=): fills f and returns 0, or the status to answer with *msg and
 * *field (400: the tenantId is not a UUID; 404: a tenant token naming
 * another tenant, as the tenant route answers). */
int api_stream_scope(const http_req_t *req, const char *own, const char *tenant, api_stream_filter_t *f,
                     const char **msg, const char **field);

/* Opens a stream answering req (already authenticated and scoped by the
 * caller): reads Last-Event-ID (the header, or ?lastEventId=) and ?since=.
 * A HEAD request gets the stream's headers, and no stream. Answers 400 for
 * a malformed token or since, 503 at --max-streams, and
 * otherwise 200 once the consumer is assigned (503 when Kafka cannot be
 * reached). Returns the status answered at once, or 0 when the answer
 * follows (the stream is starting). */
int api_stream_open(api_streams_t *ss, http_req_t *req, const api_stream_filter_t *filter);

/* Ends every stream (SIGTERM): each connection is closed after what was
 * already handed to the kernel, and streams still starting get 503. */
void api_streams_stop(api_streams_t *ss);

/* Parses a resume token into parts/offs (cap entries). Returns the number of
 * entries, or -1 when it is malformed (syntax, a partition twice, over cap). */
int api_stream_token_parse(const char *tok, int32_t *parts, int64_t *offs, int cap);

#endif
