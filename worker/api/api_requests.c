/* helmq-api's requests below the routes (api_internal.h): the replies and
 * their metrics, the PostgreSQL request queue (a small pool, a deadline per
 * query, 503 when it cannot answer), the read queries, the commands sent to
 * Kafka with their delivery reports, /metrics and /healthz. api.c routes the
 * requests here. */
#include "api_internal.h"

#include "api_command.h"
#include "api_history.h"
#include "api_metrics.h"
#include "api_openapi.h"
#include "api_options.h"
#include "api_render.h"
#include "api_static.h"
#include "api_stream.h"
#include "api_tokens.h"
#include "codec.h"
#include "config.h"
#include "db.h"
#include "httpd.h"
#include "kafka.h"
#include "log.h"
#include "util.h"
#include "validate.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --- responses ------------------------------------------------------------------ */

void api_count(api_t *a, int status, uint64_t started) {
    api_metrics_request(&a->metrics, status, (double)(uv_now(a->loop) - started) / 1000.0);
}

static void reply(pending_t *p, int status, const char *body) {
    api_count(p->api, status, p->started);
    httpd_respond(p->req, status, "application/json", body, body ? strlen(body) : 0);
    free(p->reason);
    free(p);
}

void api_reply_error(pending_t *p, int status, const char *msg, const char *field, const char *rule) {
    api_count(p->api, status, p->started);
    httpd_error(p->req, status, msg, field, rule);
    free(p->reason);
    free(p);
}

/* 400 naming the field (null for the body as a whole) and the rule. */
void api_reply_invalid(pending_t *p, const validate_error_t *verr) {
    char msg[VALIDATE_FIELD_TEXT_SIZE + sizeof(verr->message) + 16];
    const char *field = api_invalid_answer(verr, msg, sizeof(msg));
    api_reply_error(p, 400, msg, field, verr->rule);
}

/* The connection that is up with the fewest queries waiting on it, ties
 * taken in turn; NULL when none is up or all are swamped. A query sent to a
 * busy connection waits for the one ahead of it even when another is idle,
 * which is what a plain round-robin did to the latency's tail. */
static db_t *api_db(api_t *a) {
    db_t *best = NULL;
    int start = a->next_db++ % a->ndbs;
    for (int i = 0; i < a->ndbs; i++) {
        db_t *db = a->dbs[(start + i) % a->ndbs];
        if (!db_ready(db) || db_pending(db) >= API_DB_QUEUE_MAX)
            continue;
        if (!best || db_pending(db) < db_pending(best))
            best = db;
        if (db_pending(best) == 0)
            break;
    }
    return best;
}

/* 503 with Retry-After: PostgreSQL is down, or did not answer in time. */
static void reply_db_unavailable(pending_t *p, const char *detail) {
    json_t *e = json_pack("{s:s,s:s}", "error", "database unavailable", "detail", detail);
    char *s = json_dumps(e, JSON_COMPACT);
    httpd_add_header(p->req, "Retry-After", API_RETRY_AFTER_S);
    reply(p, 503, s);
    free(s);
    json_decref(e);
}

void api_db_waiting_unlink(pending_t *p) {
    if (p->db_prev)
        p->db_prev->db_next = p->db_next;
    else
        p->api->db_waiting = p->db_next;
    if (p->db_next)
        p->db_next->db_prev = p->db_prev;
    p->db_next = p->db_prev = NULL;
}

static void on_db_answer(void *arg, const PGresult *res, const char *err) {
    pending_t *p = arg;
    api_db_waiting_unlink(p);
    if (!p->req) { /* answered 503 meanwhile */
        free(p->reason);
        free(p);
        return;
    }
    p->on_row(p, res, err);
}

/* Runs sql with (id, the token's tenant or NULL) for p; on_row answers. No
 * connection up: 503 at once; no answer within db-timeout-ms: 503 then (the
 * tick sweeps), instead of waiting for PostgreSQL to come back. */
static void api_query_n(pending_t *p, const char *sql, int n, const char *const *params, db_cb on_row) {
    api_t *a = p->api;
    db_t *db = api_db(a);
    if (!db) {
        reply_db_unavailable(p, "no connection to PostgreSQL is up; retry later");
        return;
    }
    p->on_row = on_row;
    p->db_deadline = uv_now(a->loop) + a->db_timeout_ms;
    p->db_next = a->db_waiting;
    if (a->db_waiting)
        a->db_waiting->db_prev = p;
    a->db_waiting = p;
    db_query(db, sql, n, params, NULL, NULL, on_db_answer, p);
}

/* api_query_n with (id, the token's tenant or NULL). */
void api_query(pending_t *p, const char *sql, const char *id, db_cb on_row) {
    const char *params[2] = {id, api_token_tenant(p->tok)};
    api_query_n(p, sql, 2, params, on_row);
}

/* Answers 503 to requests whose query outlived db-timeout-ms. */
void api_db_waiting_sweep(api_t *a) {
    uint64_t now = uv_now(a->loop);
    for (pending_t *p = a->db_waiting; p; p = p->db_next) {
        if (!p->req || now < p->db_deadline)
            continue;
        http_req_t *req = p->req;
        api_count(a, 503, p->started);
        json_t *e = json_pack("{s:s,s:s}", "error", "database unavailable", "detail",
                              "PostgreSQL did not answer in time; retry later");
        char *s = json_dumps(e, JSON_COMPACT);
        httpd_add_header(req, "Retry-After", API_RETRY_AFTER_S);
        httpd_respond(req, 503, "application/json", s, strlen(s));
        free(s);
        json_decref(e);
        p->req = NULL; /* abandoned: on_db_answer frees p */
    }
}

static int api_db_ready(const api_t *a) {
    for (int i = 0; i < a->ndbs; i++)
        if (!db_ready(a->dbs[i]))
            return 0;
    return 1;
}

/* --- reads ------------------------------------------------------------------------ */

/* A page of a release's history (sql/0007_projection_history_rows.sql): $3
 * the revision it starts after (NULL: the first), $4 its length, one row more
 * read to learn whether another page follows. A release without history is
 * one row of NULLs (LEFT JOIN); no row: the release is not the caller's. */
static const char SQL_HISTORY[] =
    "SELECT h.revision, h.chart_version, h.app_version, h.status, h.description, h.performed_by, "
    "to_json(h.created_at) FROM helmq.releases r "
    "LEFT JOIN LATERAL helmq.release_history_rows(r.release_id, $3::integer, $4::integer + 1) h ON true "
    "WHERE r.release_id = $1::uuid AND ($2::uuid IS NULL OR r.tenant_id = $2::uuid) ORDER BY h.revision";
static const api_json_col_t history_cols[] = {
    {"revision", API_JSON_RAW},  {"chartVersion", API_JSON_STRING}, {"appVersion", API_JSON_STRING},
    {"status", API_JSON_STRING}, {"description", API_JSON_STRING},  {"performedBy", API_JSON_STRING},
    {"createdAt", API_JSON_RAW},
};

/* The single JSON column of a query answers the request; SQL NULL is 404. */
void api_on_json_row(void *arg, const PGresult *res, const char *err) {
    pending_t *p = arg;
    if (err) {
        log_error("query failed: %s", err);
        api_reply_error(p, 500, "database error", NULL, NULL);
        return;
    }
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        api_reply_error(p, 404, "not found", NULL, NULL);
        return;
    }
    reply(p, 200, PQgetvalue(res, 0, 0));
}

void api_query_json(pending_t *p, const char *sql, const char *id) {
    api_query(p, sql, id, api_on_json_row);
}

/* Answers 200 with the first n rows of res as a JSON array (api_render.h). */
static void reply_rows(pending_t *p, const PGresult *res, int n, const api_json_col_t *cols, int ncols) {
    char *body = api_render_rows(res, n, cols, ncols);
    if (!body) {
        log_error("rendering %d rows of %d columns as JSON failed (%d expected, out of memory?)", n,
                  PQnfields(res), ncols);
        api_reply_error(p, 500, "internal error", NULL, NULL);
        return;
    }
    reply(p, 200, body);
    free(body);
}

/* Releases selected as API_RELEASE_SQL, rendered here. */
void api_on_release_array(void *arg, const PGresult *res, const char *err) {
    if (err) {
        api_on_json_row(arg, res, err); /* 500 */
        return;
    }
    reply_rows(arg, res, PQntuples(res), api_release_cols, api_release_ncols);
}

/* A history page's rows: the first page_limit answer; when one more came,
 * Link names the next page, after the last revision shown. */
static void on_history_rows(void *arg, const PGresult *res, const char *err) {
    pending_t *p = arg;
    if (err || PQntuples(res) == 0) {
        api_on_json_row(arg, res, err); /* 500, or 404 */
        return;
    }
    int n = PQntuples(res);
    if (n == 1 && PQgetisnull(res, 0, 0))
        n = 0; /* the release, without history */
    if (n > p->page_limit) {
        n = p->page_limit;
        char link[256];
        api_history_next_link(PREFIX, p->release_id, p->page_limit, PQgetvalue(res, n - 1, 0), link,
                              sizeof(link));
        httpd_add_header(p->req, "Link", link);
    }
    reply_rows(p, res, n, history_cols, (int)(sizeof(history_cols) / sizeof(history_cols[0])));
}

/* GET :releaseId/history[?limit=&after=] (api_history.h). */
void api_query_history(pending_t *p, const char *id) {
    api_history_page_t pg;
    const char *field, *msg;
    if (api_history_page_parse(p->req, &pg, &field, &msg) < 0) {
        api_reply_error(p, 400, msg, field, "range");
        return;
    }
    snprintf(p->release_id, sizeof(p->release_id), "%s", id);
    uuid_lower(p->release_id);
    p->page_limit = pg.limit;
    const char *params[4] = {id, api_token_tenant(p->tok), pg.after_s[0] ? pg.after_s : NULL, pg.limit_s};
    api_query_n(p, SQL_HISTORY, 4, params, on_history_rows);
}

/* --- commands ----------------------------------------------------------------------- */

void api_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    pending_t *p = m->_private;
    if (!p)
        return;
    if (m->err) {
        p->api->metrics.commands_failed++;
        log_error("commandId=%s not delivered: %s", p->command_id, rd_kafka_err2str(m->err));
        api_reply_error(p, 503, "the command could not be delivered to Kafka", NULL, NULL);
        return;
    }
    p->api->metrics.commands_sent++;
    json_t *body = json_pack("{s:s,s:s,s:s}", "commandId", p->command_id, "releaseId", p->release_id,
                             "status", "accepted");
    char *s = json_dumps(body, JSON_COMPACT);
    log_info("commandId=%s releaseId=%s accepted (%s[%d]@%lld)", p->command_id, p->release_id,
             rd_kafka_topic_name(m->rkt), (int)m->partition, (long long)m->offset);
    reply(p, 202, s);
    free(s);
    json_decref(body);
}

/* Validates doc, encodes it and produces it; the answer follows delivery. */
static void send_command(pending_t *p, json_t *doc) {
    validate_error_t verr;
    unsigned char *buf;
    size_t len;
    if (api_command_encode(doc, &buf, &len, &verr) < 0) {
        api_reply_invalid(p, &verr);
        return;
    }
    char key[512];
    snprintf(key, sizeof(key), "%s/%s/%s", json_string_value(json_object_get(doc, "tenantId")),
             json_string_value(json_object_get(doc, "namespace")),
             json_string_value(json_object_get(doc, "releaseName")));
    snprintf(p->command_id, sizeof(p->command_id), "%s",
             json_string_value(json_object_get(doc, "commandId")));
    rd_kafka_resp_err_t err =
        rd_kafka_producev(p->api->producer, RD_KAFKA_V_TOPIC(p->api->topic), RD_KAFKA_V_KEY(key, strlen(key)),
                          RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_OPAQUE(p), RD_KAFKA_V_END);
    free(buf);
    if (err) {
        p->api->metrics.commands_failed++;
        api_reply_error(p, 503, rd_kafka_err2str(err), NULL, NULL);
    }
}

api_caller_t api_caller(const pending_t *p) {
    return api_token_caller(p->tok);
}

void api_post_install(pending_t *p) {
    validate_error_t verr;
    json_t *doc;
    api_caller_t who = api_caller(p);
    int rc = api_install_command(p->req->body, p->req->body_len, &who, &doc, p->release_id, &verr);
    if (rc == API_COMMAND_NOT_FOUND) {
        api_reply_error(p, 404, "tenant not found", NULL, NULL);
        return;
    }
    if (rc < 0) {
        api_reply_invalid(p, &verr);
        return;
    }
    send_command(p, doc);
    json_decref(doc);
}

int api_one_row(pending_t *p, const PGresult *res, const char *err) {
    if (err) {
        log_error("query failed: %s", err);
        api_reply_error(p, 500, "database error", NULL, NULL);
        return 0;
    }
    if (PQntuples(res) != 1) {
        api_reply_error(p, 404, "not found", NULL, NULL);
        return 0;
    }
    return 1;
}

void api_on_release_for_delete(void *arg, const PGresult *res, const char *err) {
    pending_t *p = arg;
    validate_error_t verr;
    if (!api_one_row(p, res, err))
        return;
    if (strcmp(PQgetvalue(res, 0, 3), "uninstalled") == 0) {
        api_reply_error(p, 409, "the release is already uninstalled", NULL, NULL);
        return;
    }
    json_t *doc;
    api_caller_t who = api_caller(p);
    if (api_uninstall_command(PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
                              p->release_id, p->reason, p->reason ? strlen(p->reason) : 0, &who, &doc,
                              &verr) < 0) {
        api_reply_invalid(p, &verr);
        return;
    }
    send_command(p, doc);
    json_decref(doc);
}

/* --- metrics and health ----------------------------------------------------------------- */

void api_serve_metrics(api_t *a, http_req_t *req) {
    char body[4096];
    httpd_stats_t hs;
    httpd_stats_get(a->http, &hs);
    a->metrics.streams_open = a->streams.open;
    a->metrics.stream_events = a->streams.events_sent;
    a->metrics.streams_cut = a->streams.cut_slow;
    int n = api_metrics_render(&a->metrics, api_db_ready(a), rd_kafka_outq_len(a->producer) < 1000, &hs, body,
                               sizeof(body));
    httpd_respond(req, 200, "text/plain; version=0.0.4", body, (size_t)n);
}

void api_serve_health(api_t *a, http_req_t *req) {
    int pg = api_db_ready(a);
    char body[128];
    int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"postgres\":%s}", pg ? "ok" : "degraded",
                     pg ? "true" : "false");
    httpd_respond(req, pg ? 200 : 503, "application/json", body, (size_t)n);
}
