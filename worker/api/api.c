/* helmq-api: the seed's REST surface.
 *
 * Reads come from the projection (PostgreSQL, schema helmq) with the seed's
 * field names; POST and DELETE become install and uninstall commands on the
 * commands topic (202 with the commandId once the broker has it). Bearer
 * tokens (api_tokens.h) map to a principal (recorded as performedBy) and
 * either a tenant (which sees and changes only its own releases: 404
 * otherwise) or the admin role (everything, and the summary, of every tenant
 * or of one).
 * The namespaces routes show which tenant owns a namespace, scoped the same
 * way. The commands themselves are built by api_command.c.
 *
 * One libuv loop: HTTP (httpd.h, on http-parser), PostgreSQL (db.h,
 * non-blocking) and librdkafka (delivery reports wake the loop through
 * rd_kafka_queue_io_event_enable). */

#include "api_internal.h"

#include "api_history.h"
#include "api_openapi.h"
#include "api_options.h"
#include "api_render.h"
#include "api_static.h"
#include "codec.h"
#include "kafka.h"
#include "log.h"

#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static api_t A;

/* One release is rendered by PostgreSQL (release_json); lists are read as
 * columns (API_RELEASE_SQL) and rendered here (api_render.h), the same
 * objects at a third of PostgreSQL's CPU. One release's JSON costs
 * PostgreSQL less than describing and sending its 15 columns. */
static const char SQL_GET[] =
    "SELECT helmq.release_json(r) FROM helmq.releases r "
    "WHERE r.release_id = $1::uuid AND ($2::uuid IS NULL OR r.tenant_id = $2::uuid)";
/* A tenant's releases, as helmq.releases_by_tenant orders them; a tenant's
 * token naming another tenant is refused before the query (404). */
static const char SQL_TENANT[] =
    "SELECT " API_RELEASE_SQL " FROM helmq.releases r "
    "WHERE r.tenant_id = $1::uuid AND ($2::uuid IS NULL OR r.tenant_id = $2::uuid) "
    "ORDER BY r.namespace, r.release_name, r.created_at";
/* The summary of one tenant (?tenantId=) or of all: admins only ($2, the
 * token's tenant, is NULL), refused before the query too. */
static const char SQL_SUMMARY[] = "SELECT helmq.release_summary($1::uuid) WHERE $2::text IS NULL";
/* Every release the token sees (a tenant: its own), most recently changed
 * first, at most $1. */
static const char SQL_LIST[] = "SELECT " API_RELEASE_SQL " FROM helmq.releases r "
                               "WHERE $2::uuid IS NULL OR r.tenant_id = $2::uuid "
                               "ORDER BY r.updated_at DESC, r.release_id LIMIT $1::int";
#define API_LIST_DEFAULT "500"
#define API_LIST_MAX 5000
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
    api_reply_error(p, 405, msg, NULL, NULL);
}

#define ALLOW_GET "GET, HEAD"
#define ALLOW_RELEASE "GET, HEAD, DELETE"

/* The optional ?tenantId= of a list, in *tenant (NULL when absent; the
 * caller frees it). Not a UUID: answers 400 and returns -1. */
static int tenant_param(pending_t *p, char **tenant) {
    size_t len = 0;
    *tenant = httpd_query_param(p->req, "tenantId", &len);
    if (*tenant && (len != strlen(*tenant) || !uuid_valid(*tenant))) {
        free(*tenant);
        *tenant = NULL;
        api_reply_error(p, 400, "tenantId must be a UUID (8-4-4-4-12 hex digits)", "tenantId", "uuid");
        return -1;
    }
    return 0;
}

/* GET /api/v1/helm/namespaces[?tenantId=] and /api/v1/helm/namespaces/:namespace. */
static void handle_namespaces(pending_t *p, char *const *rest, int nrest) {
    validate_error_t verr;
    if (nrest > 1) {
        api_reply_error(p, 404, "no such endpoint", NULL, NULL);
        return;
    }
    if (strcmp(p->req->method, "GET") != 0) {
        reply_method(p, ALLOW_GET);
        return;
    }
    if (nrest == 1) {
        if (validate_namespace(rest[0], &verr) < 0) {
            api_reply_invalid(p, &verr);
            return;
        }
        api_query(p, SQL_NAMESPACE, rest[0], api_on_json_row);
        return;
    }
    char *tenant;
    if (tenant_param(p, &tenant) < 0)
        return;
    api_query(p, SQL_NAMESPACES, tenant, api_on_json_row); /* the parameters are copied */
    free(tenant);
}

/* GET /api/v1/helm/releases[?limit=]: the releases the token sees. */
static void list_releases(pending_t *p) {
    size_t len = 0;
    char *limit = httpd_query_param(p->req, "limit", &len);
    char *end = NULL;
    long n = limit ? strtol(limit, &end, 10) : 0;
    if (limit && (len != strlen(limit) || !*limit || *end || n < 1 || n > API_LIST_MAX)) {
        free(limit);
        api_reply_error(p, 400, "limit must be an integer from 1 to 5000", "limit", "range");
        return;
    }
    api_query(p, SQL_LIST, limit ? limit : API_LIST_DEFAULT, api_on_release_array);
    free(limit);
}

/* GET / and /static/:file: the status page (api_static.h), no token. */
static void status_page(pending_t *p, const char *file) {
    if (strcmp(p->req->method, "GET") != 0) {
        reply_method(p, ALLOW_GET);
        return;
    }
    if (api_static(p->req, file) < 0) {
        api_reply_error(p, 404, "no such file", NULL, NULL);
        return;
    }
    api_count(p->api, 200, p->started);
    free(p);
}

/* --- event streams (api_stream.h) ------------------------------------------------------ */

/* Opens the stream with filter, or answers HEAD with its headers. */
static void stream_open(pending_t *p, const api_stream_filter_t *f) {
    int status = api_stream_open(&p->api->streams, p->req, f);
    api_count(p->api, status ? status : 200, p->started);
    free(p);
}

/* SQL_FOR_DELETE's first column: the release's tenant, when the token may see it. */
static void on_release_for_stream(void *arg, const PGresult *res, const char *err) {
    pending_t *p = arg;
    if (!api_one_row(p, res, err))
        return;
    api_stream_filter_t f;
    memset(&f, 0, sizeof(f));
    snprintf(f.tenant, sizeof(f.tenant), "%s", PQgetvalue(res, 0, 0));
    snprintf(f.release, sizeof(f.release), "%s", p->release_id);
    stream_open(p, &f);
}

/* GET .../events[?tenantId=], .../tenant/:tenantId/events, .../:releaseId/events
 * (tenant and release NULL for the first; the release is looked up: 404 when
 * the token may not see it). */
static void handle_events(pending_t *p, const char *tenant, const char *release) {
    if (strcmp(p->req->method, "GET") != 0) {
        reply_method(p, ALLOW_GET);
        return;
    }
    api_stream_filter_t f;
    const char *msg, *field;
    int status = api_stream_scope(p->req, api_token_tenant(p->tok), tenant, &f, &msg, &field);
    if (status) {
        api_reply_error(p, status, msg, field, field ? "uuid" : NULL);
    } else if (release) {
        snprintf(p->release_id, sizeof(p->release_id), "%s", release);
        api_query(p, SQL_FOR_DELETE, release, on_release_for_stream);
    } else {
        stream_open(p, &f);
    }
}

/* Routes on the decoded path segments (httpd.h): / and /static/:file;
 * /api/v1/helm/releases, then "", "summary[?tenantId=]", "events",
 * "tenant/:tenantId[/events]", ":releaseId[/events]" or
 * ":releaseId/history"; /api/v1/helm/namespaces, then "" or ":namespace".
 * A trailing '/' is ignored. HEAD comes as GET. */
static void api_handle(http_req_t *req, void *ctx) {
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
            api_serve_health(a, req);
        else if (seg[0][0] == 'm')
            api_serve_metrics(a, req);
        else
            api_openapi(req);
        free(p);
        return;
    }
    if (nseg == 0 || (nseg == 2 && strcmp(seg[0], "static") == 0)) {
        status_page(p, nseg ? seg[1] : NULL);
        return;
    }
    int matched = nseg >= 4;
    for (int i = 0; matched && i < 3; i++)
        matched = strcmp(seg[i], prefix[i]) == 0;
    int namespaces = matched && strcmp(seg[3], "namespaces") == 0;
    if (!matched || (!namespaces && strcmp(seg[3], "releases") != 0)) {
        api_reply_error(p, 404, "no such endpoint", NULL, NULL);
        return;
    }
    p->tok = api_tokens_authenticate(&a->tokens, req->authorization);
    if (!p->tok) {
        api_reply_error(p, 401, req->authorization ? "invalid bearer token" : "a bearer token is required",
                        NULL, NULL);
        return;
    }
    char *const *rest = seg + 4;
    int nrest = nseg - 4;
    if (namespaces) {
        handle_namespaces(p, rest, nrest);
        return;
    }
    if (nrest == 0) {
        if (strcmp(m, "GET") == 0)
            list_releases(p);
        else if (strcmp(m, "POST") == 0)
            api_post_install(p);
        else
            reply_method(p, "GET, HEAD, POST");
        return;
    }
    if (nrest == 1 && strcmp(rest[0], "events") == 0) {
        handle_events(p, NULL, NULL);
        return;
    }
    if (nrest == 3 && strcmp(rest[0], "tenant") == 0 && strcmp(rest[2], "events") == 0) {
        handle_events(p, rest[1], NULL);
        return;
    }
    if (nrest == 2 && strcmp(rest[1], "events") == 0) {
        if (!uuid_valid(rest[0])) {
            api_reply_error(p, 400, "releaseId must be a UUID (8-4-4-4-12 hex digits)", "releaseId", "uuid");
            return;
        }
        handle_events(p, NULL, rest[0]);
        return;
    }
    if (nrest == 1 && strcmp(rest[0], "summary") == 0) {
        if (strcmp(m, "GET") != 0) {
            reply_method(p, ALLOW_GET);
            return;
        }
        if (!p->tok->admin) {
            api_reply_error(p, 403, "the summary is for administrators", NULL, NULL);
            return;
        }
        char *tenant;
        if (tenant_param(p, &tenant) < 0)
            return;
        api_query(p, SQL_SUMMARY, tenant, api_on_json_row);
        free(tenant);
        return;
    }
    if (nrest == 2 && strcmp(rest[0], "tenant") == 0) {
        if (strcmp(m, "GET") != 0) {
            reply_method(p, ALLOW_GET);
            return;
        }
        if (!uuid_valid(rest[1])) {
            api_reply_error(p, 400, "tenantId must be a UUID (8-4-4-4-12 hex digits)", "tenantId", "uuid");
            return;
        }
        const char *own = api_token_tenant(p->tok);
        if (own && strcasecmp(own, rest[1]) != 0) {
            api_reply_error(p, 404, "not found", NULL, NULL);
            return;
        }
        api_query(p, SQL_TENANT, rest[1], api_on_release_array);
        return;
    }
    if (nrest > 2 || (nrest == 2 && strcmp(rest[1], "history") != 0)) {
        api_reply_error(p, 404, "no such endpoint", NULL, NULL);
        return;
    }
    const char *id = rest[0];
    if (!uuid_valid(id)) { /* exactly 36 characters: a decoded NUL never gets here */
        api_reply_error(p, 400, "releaseId must be a UUID (8-4-4-4-12 hex digits)", "releaseId", "uuid");
        return;
    }
    if (nrest == 2) {
        if (strcmp(m, "GET") != 0)
            reply_method(p, ALLOW_GET);
        else
            api_query_history(p, id);
    } else if (strcmp(m, "GET") == 0) {
        api_query_json(p, SQL_GET, id);
    } else if (strcmp(m, "DELETE") == 0) {
        snprintf(p->release_id, sizeof(p->release_id), "%s", id);
        uuid_lower(p->release_id); /* the canonical form the answer and the command carry */
        size_t reason_len = 0;
        p->reason = httpd_query_param(req, "reason", &reason_len);
        validate_error_t verr;
        if (p->reason && validate_utf8("reason", p->reason, reason_len, &verr) < 0) {
            api_reply_invalid(p, &verr); /* jansson would drop it: the uninstall would lose its reason */
            return;
        }
        api_query(p, SQL_FOR_DELETE, id, api_on_release_for_delete);
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
    api_db_waiting_sweep(t->data);
}

static void closed(uv_handle_t *h) {
    (void)h;
}

static void on_signal(uv_signal_t *s, int sig) {
    api_t *a = s->data;
    log_info("signal %d: stopping", sig);
    api_streams_stop(&a->streams);
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
        api_db_waiting_unlink(p);
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
        api_usage(stdout);
        config_free(&cfg);
        return 0;
    }
    if (rc < 0 || cfg.nargs) {
        fprintf(stderr, "helmq-api: %s\n", rc < 0 ? errstr : "unexpected argument (see --help)");
        config_free(&cfg);
        return 2;
    }
    log_init("helmq-api", config_get(&cfg, "log-level"));
    /* Keep freed memory for the next request. glibc gives the heap's top back
     * to the kernel once 128 KiB of it is free: a list's answer and its
     * PGresult (~50 KiB each for 100 releases) made nearly every request
     * shrink the heap and grow it again, each shrink (brk) a TLB flush on
     * every CPU: 5 % of the machine's CPU at 1,600 lists/s (perf,
     * docs/PERFORMANCE.md). The heap keeps up to 64 MiB free; answers of
     * 8 MiB or more are mapped apart and given back at once. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    mallopt(M_MMAP_THRESHOLD, 8 << 20);
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
    rd_kafka_conf_set_dr_msg_cb(conf, api_on_delivery);
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
    if (api_streams_init(&a->streams, a->loop, &cfg, errstr, sizeof(errstr)) < 0) {
        fprintf(stderr, "helmq-api: %s\n", errstr);
        return 2;
    }
    a->http = httpd_start(a->loop, listen, &limits, api_handle, a, errstr, sizeof(errstr));
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
