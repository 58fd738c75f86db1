/* helmq-api: the seed's REST surface.
 *
 * Reads come from the projection (PostgreSQL, schema helmq) with the seed's
 * field names; POST and DELETE become install and uninstall commands on the
 * commands topic (202 with the commandId once the broker has it). Bearer
 * tokens (api_tokens.h) map to a principal (recorded as performedBy) and
 * either a tenant (which sees and changes only its own releases: 404
 * otherwise) or the admin role (everything, and the cross-tenant summary).
 * The namespaces routes show which tenant owns a namespace, scoped the same
 * way. The commands themselves are built by api_command.c.
 *
 * One libuv loop: HTTP (httpd.h, on http-parser), PostgreSQL (db.h,
 * non-blocking) and librdkafka (delivery reports wake the loop through
 * rd_kafka_queue_io_event_enable). */
#include "api_command.h"
#include "api_history.h"
#include "api_metrics.h"
#include "api_openapi.h"
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

static const config_opt_t api_opts[] = {
    {"listen", 'l', "HELMQ_API_LISTEN", CONFIG_STRING, "127.0.0.1:8080", "address:port to serve HTTP on"},
    {"tokens-file", 0, "HELMQ_API_TOKENS", CONFIG_STRING, NULL,
     "bearer tokens, one per line: TOKEN PRINCIPAL (TENANT_UUID | admin) (required)"},
    {"database-url", 'd', "HELMQ_DATABASE_URL", CONFIG_STRING, "dbname=helmq",
     "PostgreSQL connection string or URI"},
    {"db-connections", 0, "HELMQ_API_DB_CONNECTIONS", CONFIG_INT, "4",
     "PostgreSQL connections, used in turn"},
    {"db-timeout-ms", 0, "HELMQ_API_DB_TIMEOUT_MS", CONFIG_INT, "5000",
     "a request waits this long for PostgreSQL, then gets 503 (at once when no connection is up)"},
    {"brokers", 'b', "HELMQ_BROKERS", CONFIG_STRING, KAFKA_DEFAULT_BROKERS, "Kafka bootstrap servers"},
    {"commands-topic", 0, "HELMQ_COMMANDS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_COMMANDS,
     "topic commands are published to"},
    {"max-body", 0, "HELMQ_API_MAX_BODY", CONFIG_INT, "1048576",
     "largest request body accepted (bytes; 413 beyond)"},
    {"max-header-bytes", 0, "HELMQ_API_MAX_HEADER_BYTES", CONFIG_INT, "16384",
     "largest request head: its URL, header names and values (bytes; 431 beyond; a URL over 8192: 414)"},
    {"request-timeout-ms", 0, "HELMQ_API_REQUEST_TIMEOUT_MS", CONFIG_INT, "10000",
     "a request not received whole this long after its first byte gets 408; an idle connection, or one "
     "whose client reads none of its answer for this long, is closed"},
    {"max-connections", 0, "HELMQ_API_MAX_CONNECTIONS", CONFIG_INT, "0",
     "open connections; at the limit a new one closes the one idle longest (0: the open-file limit less 64)"},
    {"log-level", 0, "HELMQ_LOG_LEVEL", CONFIG_STRING, "info", "error, warn, info or debug"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

#define PREFIX "/api/v1/helm/releases"
#define NS_PREFIX "/api/v1/helm/namespaces"
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

static api_t A;

/* --- responses ------------------------------------------------------------------ */

static void count(api_t *a, int status, uint64_t started) {
    api_metrics_request(&a->metrics, status, (double)(uv_now(a->loop) - started) / 1000.0);
}

static void reply(pending_t *p, int status, const char *body) {
    count(p->api, status, p->started);
    httpd_respond(p->req, status, "application/json", body, body ? strlen(body) : 0);
    free(p->reason);
    free(p);
}

static void reply_error(pending_t *p, int status, const char *msg, const char *field, const char *rule) {
    count(p->api, status, p->started);
    httpd_error(p->req, status, msg, field, rule);
    free(p->reason);
    free(p);
}

/* 400 naming the field (null for the body as a whole) and the rule. */
static void reply_invalid(pending_t *p, const validate_error_t *verr) {
    char msg[VALIDATE_FIELD_TEXT_SIZE + sizeof(verr->message) + 16];
    const char *field = api_invalid_answer(verr, msg, sizeof(msg));
    reply_error(p, 400, msg, field, verr->rule);
}

/* The next connection that is up and not swamped, in turn; NULL when none. */
static db_t *api_db(api_t *a) {
    for (int i = 0; i < a->ndbs; i++) {
        db_t *db = a->dbs[a->next_db++ % a->ndbs];
        if (db_ready(db) && db_pending(db) < API_DB_QUEUE_MAX)
            return db;
    }
    return NULL;
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

static void db_waiting_unlink(pending_t *p) {
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
    db_waiting_unlink(p);
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
static void api_query(pending_t *p, const char *sql, const char *id, db_cb on_row) {
    const char *params[2] = {id, api_token_tenant(p->tok)};
    api_query_n(p, sql, 2, params, on_row);
}

/* Answers 503 to requests whose query outlived db-timeout-ms. */
static void db_waiting_sweep(api_t *a) {
    uint64_t now = uv_now(a->loop);
    for (pending_t *p = a->db_waiting; p; p = p->db_next) {
        if (!p->req || now < p->db_deadline)
            continue;
        http_req_t *req = p->req;
        count(a, 503, p->started);
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

/* A page of a release's history (sql/0004_projection_history_paging.sql):
 * $3 the revision it starts after (NULL: the first), $4 its length. */
static const char SQL_HISTORY[] =
    "SELECT p.entries, p.next_after FROM helmq.releases r "
    "CROSS JOIN LATERAL helmq.release_history_page(r.release_id, $3::integer, $4::integer) p "
    "WHERE r.release_id = $1::uuid AND ($2::uuid IS NULL OR r.tenant_id = $2::uuid)";

/* The single JSON column of a query answers the request; SQL NULL is 404. */
static void on_json_row(void *arg, const PGresult *res, const char *err) {
    pending_t *p = arg;
    if (err) {
        log_error("query failed: %s", err);
        reply_error(p, 500, "database error", NULL, NULL);
        return;
    }
    if (PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        reply_error(p, 404, "not found", NULL, NULL);
        return;
    }
    reply(p, 200, PQgetvalue(res, 0, 0));
}

static void query_json(pending_t *p, const char *sql, const char *id) {
    api_query(p, sql, id, on_json_row);
}

/* A history page (entries, next_after): the entries answer; when more
 * follow, Link names the next page. No row: the release is not the caller's. */
static void on_history_row(void *arg, const PGresult *res, const char *err) {
    pending_t *p = arg;
    if (err || PQntuples(res) != 1 || PQgetisnull(res, 0, 0)) {
        on_json_row(arg, res, err);
        return;
    }
    if (!PQgetisnull(res, 0, 1)) {
        char link[256];
        api_history_next_link(PREFIX, p->release_id, p->page_limit, PQgetvalue(res, 0, 1), link,
                              sizeof(link));
        httpd_add_header(p->req, "Link", link);
    }
    reply(p, 200, PQgetvalue(res, 0, 0));
}

/* GET :releaseId/history[?limit=&after=] (api_history.h). */
static void query_history(pending_t *p, const char *id) {
    api_history_page_t pg;
    const char *field, *msg;
    if (api_history_page_parse(p->req, &pg, &field, &msg) < 0) {
        reply_error(p, 400, msg, field, "range");
        return;
    }
    snprintf(p->release_id, sizeof(p->release_id), "%s", id);
    uuid_lower(p->release_id);
    p->page_limit = pg.limit;
    const char *params[4] = {id, api_token_tenant(p->tok), pg.after_s[0] ? pg.after_s : NULL, pg.limit_s};
    api_query_n(p, SQL_HISTORY, 4, params, on_history_row);
}

/* --- commands ----------------------------------------------------------------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    pending_t *p = m->_private;
    if (!p)
        return;
    if (m->err) {
        p->api->metrics.commands_failed++;
        log_error("commandId=%s not delivered: %s", p->command_id, rd_kafka_err2str(m->err));
        reply_error(p, 503, "the command could not be delivered to Kafka", NULL, NULL);
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
        reply_invalid(p, &verr);
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
        reply_error(p, 503, rd_kafka_err2str(err), NULL, NULL);
    }
}

static api_caller_t caller(const pending_t *p) {
    return api_token_caller(p->tok);
}

static void post_install(pending_t *p) {
    validate_error_t verr;
    json_t *doc;
    api_caller_t who = caller(p);
    int rc = api_install_command(p->req->body, p->req->body_len, &who, &doc, p->release_id, &verr);
    if (rc == API_COMMAND_NOT_FOUND) {
        reply_error(p, 404, "tenant not found", NULL, NULL);
        return;
    }
    if (rc < 0) {
        reply_invalid(p, &verr);
        return;
    }
    send_command(p, doc);
    json_decref(doc);
}

static void on_release_for_delete(void *arg, const PGresult *res, const char *err) {
    pending_t *p = arg;
    validate_error_t verr;
    if (err) {
        log_error("query failed: %s", err);
        reply_error(p, 500, "database error", NULL, NULL);
        return;
    }
    if (PQntuples(res) != 1) {
        reply_error(p, 404, "not found", NULL, NULL);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 3), "uninstalled") == 0) {
        reply_error(p, 409, "the release is already uninstalled", NULL, NULL);
        return;
    }
    json_t *doc;
    api_caller_t who = caller(p);
    if (api_uninstall_command(PQgetvalue(res, 0, 0), PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
                              p->release_id, p->reason, p->reason ? strlen(p->reason) : 0, &who, &doc,
                              &verr) < 0) {
        reply_invalid(p, &verr);
        return;
    }
    send_command(p, doc);
    json_decref(doc);
}

/* --- metrics and health ----------------------------------------------------------------- */

static void metrics(api_t *a, http_req_t *req) {
    char body[4096];
    httpd_stats_t hs;
    httpd_stats_get(a->http, &hs);
    int n = api_metrics_render(&a->metrics, api_db_ready(a), rd_kafka_outq_len(a->producer) < 1000, &hs, body,
                               sizeof(body));
    httpd_respond(req, 200, "text/plain; version=0.0.4", body, (size_t)n);
}

static void health(api_t *a, http_req_t *req) {
    int pg = api_db_ready(a);
    char body[128];
    int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"postgres\":%s}", pg ? "ok" : "degraded",
                     pg ? "true" : "false");
    httpd_respond(req, pg ? 200 : 503, "application/json", body, (size_t)n);
}

/* --- routing ---------------------------------------------------------------------------- */

static const char SQL_GET[] =
    "SELECT helmq.release_json(r) FROM helmq.releases r "
    "WHERE r.release_id = $1::uuid AND ($2::uuid IS NULL OR r.tenant_id = $2::uuid)";
static const char SQL_TENANT[] =
    "SELECT helmq.releases_by_tenant($1::uuid) WHERE $2::uuid IS NULL OR $1::uuid = $2::uuid";
static const char SQL_SUMMARY[] =
    "SELECT helmq.release_summary() WHERE $1::text IS NULL AND $2::text IS NULL";
/* Namespaces: which tenant owns each (helmq.namespace_claims, sql/0002_projection_baseline.sql). A
 * tenant sees only its own (404 for another's, the same as for one nobody
 * claimed); ?tenantId= narrows an admin's list, and a tenant naming another
 * gets 404. */
static const char SQL_NAMESPACE[] = "SELECT helmq.namespace_json(n) FROM helmq.namespace_claims n "
                                    "WHERE n.namespace = $1 AND ($2::uuid IS NULL OR n.tenant_id = $2::uuid)";
static const char SQL_NAMESPACES[] = "SELECT helmq.namespaces_list(COALESCE($1::uuid, $2::uuid)) "
                                     "WHERE $1::uuid IS NULL OR $2::uuid IS NULL OR $1::uuid = $2::uuid";
static const char SQL_FOR_DELETE[] =
    "SELECT tenant_id, namespace, release_name, status FROM helmq.releases r "
    "WHERE r.release_id = $1::uuid AND ($2::uuid IS NULL OR r.tenant_id = $2::uuid)";

/* 405 with the Allow header listing what the resource takes. */
static void reply_method(pending_t *p, const char *allow) {
    char msg[128];
    snprintf(msg, sizeof(msg), "method not allowed: use %s", allow);
    httpd_add_header(p->req, "Allow", allow);
    reply_error(p, 405, msg, NULL, NULL);
}

#define ALLOW_GET "GET, HEAD"
#define ALLOW_RELEASE "GET, HEAD, DELETE"

/* GET /api/v1/helm/namespaces[?tenantId=] and /api/v1/helm/namespaces/:namespace. */
static void handle_namespaces(pending_t *p, char *const *rest, int nrest) {
    validate_error_t verr;
    if (nrest > 1) {
        reply_error(p, 404, "no such endpoint", NULL, NULL);
        return;
    }
    if (strcmp(p->req->method, "GET") != 0) {
        reply_method(p, ALLOW_GET);
        return;
    }
    if (nrest == 1) {
        if (validate_namespace(rest[0], &verr) < 0) {
            reply_invalid(p, &verr);
            return;
        }
        api_query(p, SQL_NAMESPACE, rest[0], on_json_row);
        return;
    }
    size_t len = 0;
    char *tenant = httpd_query_param(p->req, "tenantId", &len);
    if (tenant && (len != strlen(tenant) || !uuid_valid(tenant))) {
        free(tenant);
        reply_error(p, 400, "tenantId must be a UUID (8-4-4-4-12 hex digits)", "tenantId", "uuid");
        return;
    }
    api_query(p, SQL_NAMESPACES, tenant, on_json_row); /* the parameters are copied */
    free(tenant);
}

/* Routes on the decoded path segments (httpd.h): /api/v1/helm/releases,
 * then "", "summary", "tenant/:tenantId", ":releaseId" or
 * ":releaseId/history"; /api/v1/helm/namespaces, then "" or ":namespace".
 * A trailing '/' is ignored. HEAD comes as GET. */
static void handle(http_req_t *req, void *ctx) {
    static const char *const prefix[] = {"api", "v1", "helm"};
    api_t *a = ctx;
    const char *m = req->method;
    char *const *seg = req->segments;
    int nseg = req->nsegments;
    if (nseg > 0 && seg[nseg - 1][0] == '\0')
        nseg--;
    pending_t *p = calloc(1, sizeof(*p));
    p->api = a;
    p->req = req;
    p->started = uv_now(a->loop);
    if (nseg == 1 && (strcmp(seg[0], "healthz") == 0 || strcmp(seg[0], "metrics") == 0 ||
                      strcmp(seg[0], "openapi.json") == 0)) {
        if (strcmp(m, "GET") != 0) {
            reply_method(p, ALLOW_GET);
            return;
        }
        if (seg[0][0] == 'h')
            health(a, req);
        else if (seg[0][0] == 'm')
            metrics(a, req);
        else
            api_openapi(req);
        free(p);
        return;
    }
    int matched = nseg >= 4;
    for (int i = 0; matched && i < 3; i++)
        matched = strcmp(seg[i], prefix[i]) == 0;
    int namespaces = matched && strcmp(seg[3], "namespaces") == 0;
    if (!matched || (!namespaces && strcmp(seg[3], "releases") != 0)) {
        reply_error(p, 404, "no such endpoint", NULL, NULL);
        return;
    }
    p->tok = api_tokens_authenticate(&a->tokens, req->authorization);
    if (!p->tok) {
        reply_error(p, 401, req->authorization ? "invalid bearer token" : "a bearer token is required", NULL,
                    NULL);
        return;
    }
    char *const *rest = seg + 4;
    int nrest = nseg - 4;
    if (namespaces) {
        handle_namespaces(p, rest, nrest);
        return;
    }
    if (nrest == 0) {
        if (strcmp(m, "POST") != 0) {
            reply_method(p, "POST");
            return;
        }
        post_install(p);
        return;
    }
    if (nrest == 1 && strcmp(rest[0], "summary") == 0) {
        if (strcmp(m, "GET") != 0) {
            reply_method(p, ALLOW_GET);
            return;
        }
        if (!p->tok->admin) {
            reply_error(p, 403, "the summary is for administrators", NULL, NULL);
            return;
        }
        api_query(p, SQL_SUMMARY, NULL, on_json_row);
        return;
    }
    if (nrest == 2 && strcmp(rest[0], "tenant") == 0) {
        if (strcmp(m, "GET") != 0) {
            reply_method(p, ALLOW_GET);
            return;
        }
        if (!uuid_valid(rest[1])) {
            reply_error(p, 400, "tenantId must be a UUID (8-4-4-4-12 hex digits)", "tenantId", "uuid");
            return;
        }
        query_json(p, SQL_TENANT, rest[1]);
        return;
    }
    if (nrest > 2 || (nrest == 2 && strcmp(rest[1], "history") != 0)) {
        reply_error(p, 404, "no such endpoint", NULL, NULL);
        return;
    }
    const char *id = rest[0];
    if (!uuid_valid(id)) { /* exactly 36 characters: a decoded NUL never gets here */
        reply_error(p, 400, "releaseId must be a UUID (8-4-4-4-12 hex digits)", "releaseId", "uuid");
        return;
    }
    if (nrest == 2) {
        if (strcmp(m, "GET") != 0)
            reply_method(p, ALLOW_GET);
        else
            query_history(p, id);
    } else if (strcmp(m, "GET") == 0) {
        query_json(p, SQL_GET, id);
    } else if (strcmp(m, "DELETE") == 0) {
        snprintf(p->release_id, sizeof(p->release_id), "%s", id);
        uuid_lower(p->release_id); /* the canonical form the answer and the command carry */
        size_t reason_len = 0;
        p->reason = httpd_query_param(req, "reason", &reason_len);
        validate_error_t verr;
        if (p->reason && validate_utf8("reason", p->reason, reason_len, &verr) < 0) {
            reply_invalid(p, &verr); /* jansson would drop it: the uninstall would lose its reason */
            return;
        }
        api_query(p, SQL_FOR_DELETE, id, on_release_for_delete);
    } else {
        reply_method(p, ALLOW_RELEASE);
    }
}

/* --- loop plumbing ---------------------------------------------------------------------- */

static void on_wake(uv_poll_t *h, int status, int events) {
    api_t *a = h->data;
    char buf[64];
    while (read(a->wake_fd[0], buf, sizeof(buf)) > 0)
        ;
    rd_kafka_poll(a->producer, 0);
}

static void on_tick(uv_timer_t *t) {
    rd_kafka_poll(((api_t *)t->data)->producer, 0);
    db_waiting_sweep(t->data);
}

static void closed(uv_handle_t *h) {
    (void)h;
}

static void on_signal(uv_signal_t *s, int sig) {
    api_t *a = s->data;
    log_info("signal %d: stopping", sig);
    httpd_stop(a->http);
    rd_kafka_flush(a->producer, 5000);
    uv_poll_stop(&a->wake);
    uv_close((uv_handle_t *)&a->wake, closed);
    uv_close((uv_handle_t *)&a->tick, closed);
    uv_close((uv_handle_t *)&a->sigterm, closed);
    uv_close((uv_handle_t *)&a->sigint, closed);
    for (int i = 0; i < a->ndbs; i++)
        db_close(a->dbs[i]);
    /* Closed connections drop their queries without callbacks: free the
     * requests that waited on them (their connections are gone too). */
    while (a->db_waiting) {
        pending_t *p = a->db_waiting;
        db_waiting_unlink(p);
        if (p->req)
            httpd_respond(p->req, 503, NULL, NULL, 0);
        free(p->reason);
        free(p);
    }
}

int main(int argc, char **argv) {
    char errstr[1024];
    config_t cfg;
    if (argc > 1 && strcmp(argv[1], "--help-markdown") == 0) {
        config_usage_markdown(api_opts, stdout);
        return 0;
    }
    int rc = config_parse(&cfg, api_opts, argc, argv, 1, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP) {
        printf("Usage: helmq-api [OPTIONS]\n\n"
               "Serves the seed's REST API:\n"
               "  GET    " PREFIX "/:releaseId            a release\n"
               "  GET    " PREFIX "/tenant/:tenantId      a tenant's releases\n"
               "  GET    " PREFIX "/:releaseId/history    its revision history, by revision, a page at a\n"
               "         time: ?limit= (default 100, at most 1000), ?after=REVISION; Link: rel=\"next\"\n"
               "  GET    " PREFIX "/summary               counts by status and chart (admin)\n"
               "  POST   " PREFIX "                       install (the seed's body) -> 202\n"
               "  DELETE " PREFIX "/:releaseId?reason=... uninstall -> 202\n"
               "  GET    " NS_PREFIX "/:namespace          its owner (tenant) and live releases\n"
               "  GET    " NS_PREFIX "[?tenantId=]         the namespaces a tenant owns\n"
               "  GET    /healthz, /metrics (Prometheus), /openapi.json (this API's OpenAPI 3.1 document)\n"
               "Authorization: Bearer TOKEN (see --tokens-file).\n\nOptions:\n");
        config_usage(api_opts, stdout);
        config_free(&cfg);
        return 0;
    }
    if (rc < 0 || cfg.nargs) {
        fprintf(stderr, "helmq-api: %s\n", rc < 0 ? errstr : "unexpected argument (see --help)");
        config_free(&cfg);
        return 2;
    }
    log_init("helmq-api", config_get(&cfg, "log-level"));
    api_t *a = &A;
    a->loop = uv_default_loop();
    a->cfg = &cfg;
    a->topic = config_get(&cfg, "commands-topic");
    if (!config_get(&cfg, "tokens-file")) {
        fprintf(stderr, "helmq-api: --tokens-file (HELMQ_API_TOKENS) is required\n");
        return 2;
    }
    if (api_tokens_load(&a->tokens, config_get(&cfg, "tokens-file"), errstr, sizeof(errstr)) < 0) {
        fprintf(stderr, "helmq-api: %s\n", errstr);
        return 2;
    }
    if (codec_init(errstr, sizeof(errstr)) < 0) {
        log_error("schemas: %s", errstr);
        return 1;
    }
    const char *listen = config_get(&cfg, "listen");

    rd_kafka_conf_t *conf =
        kafka_producer_conf_new(&cfg, config_get(&cfg, "brokers"), errstr, sizeof(errstr));
    if (!conf || kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "message.timeout.ms", "30000", errstr, sizeof(errstr)) < 0) {
        log_error("kafka: %s", errstr);
        return 2;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    a->producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!a->producer) {
        log_error("kafka: %s", errstr);
        return 1;
    }
    if (pipe2(a->wake_fd, O_NONBLOCK | O_CLOEXEC) != 0)
        return 1;
    a->queue = rd_kafka_queue_get_main(a->producer);
    rd_kafka_queue_io_event_enable(a->queue, a->wake_fd[1], "p", 1);
    uv_poll_init(a->loop, &a->wake, a->wake_fd[0]);
    a->wake.data = a;
    uv_poll_start(&a->wake, UV_READABLE, on_wake);
    uv_timer_init(a->loop, &a->tick);
    a->tick.data = a;
    uv_timer_start(&a->tick, on_tick, 200, 200);
    a->ndbs = (int)config_int(&cfg, "db-connections");
    if (a->ndbs < 1 || a->ndbs > 64) {
        fprintf(stderr, "helmq-api: --db-connections must be 1..64\n");
        return 2;
    }
    a->db_timeout_ms = (unsigned)config_int(&cfg, "db-timeout-ms");
    if (config_int(&cfg, "db-timeout-ms") < 1) {
        fprintf(stderr, "helmq-api: --db-timeout-ms must be at least 1\n");
        return 2;
    }
    a->dbs = calloc((size_t)a->ndbs, sizeof(db_t *));
    for (int i = 0; i < a->ndbs; i++)
        a->dbs[i] = db_new(a->loop, config_get(&cfg, "database-url"));
    httpd_limits_t limits = {.max_body = (size_t)config_int(&cfg, "max-body"),
                             .max_header = (size_t)config_int(&cfg, "max-header-bytes"),
                             .timeout_ms = (unsigned)config_int(&cfg, "request-timeout-ms"),
                             .max_connections = (unsigned)config_int(&cfg, "max-connections")};
    if (config_int(&cfg, "max-header-bytes") < 1024 || config_int(&cfg, "request-timeout-ms") < 1 ||
        config_int(&cfg, "max-connections") < 0) {
        fprintf(stderr,
                "helmq-api: --max-header-bytes must be at least 1024, --request-timeout-ms at least 1, "
                "--max-connections not negative\n");
        return 2;
    }
    a->http = httpd_start(a->loop, listen, &limits, handle, a, errstr, sizeof(errstr));
    if (!a->http) {
        log_error("%s", errstr);
        return 1;
    }
    uv_signal_init(a->loop, &a->sigterm);
    uv_signal_init(a->loop, &a->sigint);
    a->sigterm.data = a->sigint.data = a;
    uv_signal_start(&a->sigterm, on_signal, SIGTERM);
    uv_signal_start(&a->sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);
    httpd_stats_t hs;
    httpd_stats_get(a->http, &hs);
    log_info("serving %s on port %d (%d tokens, up to %u connections)", PREFIX, httpd_port(a->http),
             a->tokens.n, hs.max_connections);
    uv_run(a->loop, UV_RUN_DEFAULT);
    rd_kafka_queue_destroy(a->queue);
    rd_kafka_destroy(a->producer);
    uv_loop_close(a->loop);
    api_tokens_free(&a->tokens);
    free(a->dbs);
    codec_term();
    config_free(&cfg);
    log_info("stopped");
    return 0;
}
