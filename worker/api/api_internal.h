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
    db_t **dbs; /* a small pool: a query goes to the least busy (api_db) */
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

/* The replies: each answers p's request and frees p. api_count counts an
 * answer given some other way (a stream, a static file). */
void api_count(api_t *a, int status, uint64_t started);
void api_reply_error(pending_t *p, int status, const char *msg, const char *field, const char *rule);
void api_reply_invalid(pending_t *p, const validate_error_t *verr);

/* PostgreSQL: a query on the next connection of the pool, with the request's
 * deadline (503 when no connection is up or the deadline passes); $1 is id,
 * $2 the token's tenant (NULL for admins). on_row answers. */
void api_query(pending_t *p, const char *sql, const char *id, db_cb on_row);
/* A query's answer that should be one row: 1 when it is; else answers
 * (500 for an error, 404 for no row) and returns 0. */
int api_one_row(pending_t *p, const PGresult *res, const char *err);
/* Reads answered with the query's one JSON value (404 when no row). */
void api_on_json_row(void *arg, const PGresult *res, const char *err);
void api_query_json(pending_t *p, const char *sql, const char *id);
/* Reads of releases whose columns are API_RELEASE_SQL (api_render.h),
 * answered with them as a JSON array. */
void api_on_release_array(void *arg, const PGresult *res, const char *err);
/* A page of a release's history (p->page_limit, ?after=), with its Link. */
void api_query_history(pending_t *p, const char *id);
/* Requests that answered no longer wait; those past their deadline get 503. */
void api_db_waiting_sweep(api_t *a);
void api_db_waiting_unlink(pending_t *p);

/* Commands: POST's install, and DELETE's uninstall once the release is
 * found (SQL_FOR_DELETE's row); 202 when the broker has the command. */
api_caller_t api_caller(const pending_t *p);
void api_post_install(pending_t *p);
void api_on_release_for_delete(void *arg, const PGresult *res, const char *err);
void api_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque);

/* GET /metrics and /healthz, without a token. */
void api_serve_metrics(api_t *a, http_req_t *req);
void api_serve_health(api_t *a, http_req_t *req);

#endif
