/* helmq-api's insides: what api.c (main, the loop, the routes) uses of
 * api_requests.c (the replies, PostgreSQL's request queue, the read queries,
 * the commands sent to Kafka, /metrics and /healthz). The calls go one way:
 * api_requests.c never calls into api.c. */
#ifndef HELMQ_API_INTERNAL_H
#define HELMQ_API_INTERNAL_H

#include "api_command.h"
#include "api_metrics.h"
#include "api_stream.h"
#include "api_tokens.h"
#include "config.h"
#include "db.h"
#include "httpd.h"
#include "util.h"
#include "validate.h"

#include <librdkafka/rdkafka.h>
#include <uv.h>

#define API_RETRY_AFTER_S "5" /* Retry-After of a 503: the longest reconnect backoff of db.c */
#define API_DB_QUEUE_MAX 1024 /* queries waiting on one connection before 503 at once */

typedef struct pending pending_t;

typedef struct api {
    uv_loop_t *loop;
    config_t *cfg;
    httpd_t *http;
    db_t **dbs; /* a small pool, used round-robin */
    int ndbs, next_db;
    unsigned db_timeout_ms;
    pending_t *db_waiting; /* requests whose query has not answered yet */
    rd_kafka_t *producer;
    rd_kafka_queue_t *queue;
    int wake_fd[2];
    uv_poll_t wake;
    uv_timer_t tick;
    uv_signal_t sigterm, sigint;
    api_tokens_t tokens;
    const char *topic;
    api_metrics_t metrics;
    api_streams_t streams;
} api_t;

/* A request being answered. One waiting on PostgreSQL is on api.db_waiting
 * until its query's callback runs: when the query outlives db-timeout-ms,
 * the request is answered 503 and req is NULL (abandoned), and the callback
 * only frees it. */
struct pending {
    api_t *api;
    http_req_t *req;
    const api_token_t *tok; /* borrowed from api.tokens */
    uint64_t started;
    int status;
    char command_id[UUID_STR_LEN], release_id[UUID_STR_LEN];
    char *reason;
    int page_limit; /* a history page's ?limit= */
    db_cb on_row;   /* the query's own callback */
    uint64_t db_deadline;
    pending_t *db_next, *db_prev;
};

/* --- api_requests.c ------------------------------------------------------------------------ */

void api_count(api_t *a, int status, uint64_t started);
void api_reply_error(pending_t *p, int status, const char *msg, const char *field, const char *rule);
void api_reply_invalid(pending_t *p, const validate_error_t *verr);
void api_on_json_row(void *arg, const PGresult *res, const char *err);
void api_query_json(pending_t *p, const char *sql, const char *id);
void api_query_history(pending_t *p, const char *id);
api_caller_t api_caller(const pending_t *p);
void api_post_install(pending_t *p);
void api_on_release_for_delete(void *arg, const PGresult *res, const char *err);
void api_serve_metrics(api_t *a, http_req_t *req);
void api_serve_health(api_t *a, http_req_t *req);
void api_query(pending_t *p, const char *sql, const char *id, db_cb on_row);

void api_db_waiting_sweep(api_t *a);
void api_db_waiting_unlink(pending_t *p);
void api_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

#endif
