/* One command's way through the worker: validate, record in the ledger and
 * lock its release key, apply the tenant and lifecycle rules, run helm with
 * its timeout, roll back atomically on failure, record the outcome with the
 * registry it implies, publish exactly one terminal event.
 *
 * Every step is a callback on the loop: a ledger call (db.h), a helm process
 * (executor.h) or a delivery report (dispatch.c). A command redelivered after
 * it finished runs no helm: it republishes its recorded terminal event (the
 * same eventId), with the release's current state once the release has moved
 * on (replay_current); one interrupted by a crash (ledger state "running") is
 * reconciled against helm's own record of the release. A commandId is one
 * command: other content under it is refused (IDEMPOTENCY_CONFLICT), and so
 * is a record whose key is not its command's (KEY_MISMATCH). */
#include "command.h"
#include "tenant_access.h"

#include "cmddoc.h"
#include "codec.h"
#include "log.h"
#include "util.h"
#include "validate.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IN_PROGRESS_TEXT "another operation (install/upgrade/rollback) is in progress"
/* helm 3's refusal to install over an existing release ("Error: INSTALLATION
 * FAILED: cannot re-use a name that is still in use"; older helm 3 prints it
 * without the prefix). */
#define NAME_IN_USE_TEXT "cannot re-use a name that is still in use"
/* helm's storage refusing a revision's Secret that another helm created
 * meanwhile (the loser of two helm runs on one release at the same moment:
 * "Error: release: already exists", "Error: UPGRADE FAILED: release: already
 * exists"); nothing of this run was applied. */
#define RELEASE_EXISTS_TEXT "release: already exists"

static const char SQL_BEGIN[] =
    "SELECT state, terminal_event, release, namespace_owner, command, rollback_target, moved_on "
    "FROM helmq_worker.command_begin($1, $2, $3, $4, $5, $6, $7, $8, $9)";
static const char SQL_START[] =
    "SELECT started, owner_tenant FROM helmq_worker.command_start($1, $2, $3, $4, $5, $6, $7, $8)";
static const char SQL_HELM_STARTED[] = "SELECT helmq_worker.command_helm_started($1, $2, $3, $4, $5, $6)";
static const char SQL_FINISH[] =
    "SELECT helmq_worker.command_finish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

static void begin(command_t *c);
static void finish(command_t *c);
static void run_operation(command_t *c);
static void tenant_access_setup(command_t *c);
static void ns_setup_forget(command_t *c);
static void run_operation(command_t *c);
static void after_failure(command_t *c);
static void reconcile(command_t *c);

/* --- small helpers -------------------------------------------------------- */

/* The command's run state (worker.h), allocated on first use. */
static command_rs_t *cmd_rs(command_t *c) {
    if (!c->rs && !(c->rs = calloc(1, sizeof(*c->rs))))
        abort(); /* out of memory */
    return c->rs;
}

static const command_helm_ops_t *helm_ops(const command_ctx_t *x) {
    return x->helm_ops ? x->helm_ops : &command_helm_default;
}

/* A ledger statement on the connection of c's release key. */
static void ledger_query(command_t *c, const char *sql, int n, const char *const *values, const int *lengths,
                         const int *formats, db_cb cb, void *arg) {
    c->ctx->host.query(c->ctx->host.ctx, c->key_name ? c->key_name : "-", sql, n, values, lengths, formats,
                       cb, arg);
}

static void pool_release(command_t *c);

/* The command is over (its outcome published, or nothing can be said):
 * its slot goes to the next waiting command, the dispatcher takes over. */
static void command_done(command_t *c) {
    pool_release(c);
    c->ctx->host.done(c->ctx->host.ctx, c);
}

static void count_outcome(command_ctx_t *x, const char *event_type) {
    int i = COMMAND_OUTCOMES - 1;
    for (int k = 0; k < COMMAND_OUTCOMES - 1 && event_type; k++)
        if (strcmp(event_type, command_outcome_names[k]) == 0)
            i = k;
    x->counters.outcome[i]++;
}

static void count_helm(command_ctx_t *x, double seconds) {
    for (int i = 0; i < COMMAND_HELM_BUCKETS; i++)
        if (command_helm_bucket_le[i] < 0 || seconds <= command_helm_bucket_le[i])
            x->counters.helm_buckets[i]++;
    x->counters.helm_count++;
    x->counters.helm_seconds += seconds;
}

static const char *jstr(const json_t *o, const char *k) {
    return json_string_value(json_object_get(o, k));
}

static int jint(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : 0;
}

static const char *key_name(const command_t *c) {
    return c->key_name ? c->key_name : "-";
}

static void cmd_log(command_t *c, log_level_t level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Logs with the command's context: commandId, release key, source offset. */
static void cmd_log(command_t *c, log_level_t level, const char *fmt, ...) {
    char msg[2048];
    va_list ap;
    if (log_level < level)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    log_write(level, "commandId=%s key=%s %s[%d]@%lld: %s", c->id, key_name(c), c->ctx->commands_topic,
              (int)c->partition, (long long)c->offset, msg);
}

static void retry_later(command_t *c, uint64_t ms, uv_timer_cb cb) {
    uv_timer_start(&c->timer, cb, ms, 0);
}

static void outcome(command_t *c, const char *event_type, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void outcome(command_t *c, const char *event_type, const char *code, const char *fmt, ...) {
    char code_copy[sizeof(c->error_code)];
    snprintf(code_copy, sizeof(code_copy), "%s", code ? code : ""); /* code may be c->error_code */
    c->event_type = event_type;
    snprintf(c->error_code, sizeof(c->error_code), "%s", code_copy);
    cmd_rs(c)->error_message[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd_rs(c)->error_message, sizeof(cmd_rs(c)->error_message), fmt, ap);
        va_end(ap);
    }
}

/* Kubernetes reserves the kube- prefix for the system (kube-system,
 * kube-public, kube-node-lease, ...); default is shared by everything. A
 * tenant claiming one would get its service account bound there. */
static int is_protected(command_ctx_t *w, const char *ns) {
    if (strncmp(ns, "kube-", 5) == 0 || strcmp(ns, "default") == 0)
        return 1;
    for (int i = 0; i < w->protected_count; i++)
        if (strcmp(ns, w->protected_ns[i]) == 0)
            return 1;
    return 0;
}

static int is_install_or_upgrade(const command_t *c) {
    return strcmp(c->op, "install") == 0 || strcmp(c->op, "upgrade") == 0;
}

static long command_timeout(const command_t *c) {
    long t = jint(c->doc, "timeout");
    return t > 0 ? t : 300;
}

/* --- history --------------------------------------------------------------- */

/* Appends a revision this command created or changed. */
static void history_add(command_t *c, int revision, const char *status, const char *chart,
                        const char *version, const char *app, const char *operation, const char *description,
                        const char *digest, const char *redacted) {
    if (!c->history)
        c->history = json_array();
    json_array_append_new(
        c->history, json_pack("{s:i,s:s,s:s,s:s,s:s?,s:s,s:s?,s:I,s:s?,s:s?}", "revision", revision, "status",
                              status, "chartName", chart ? chart : "", "chartVersion", version ? version : "",
                              "appVersion", app && *app ? app : NULL, "operation", operation, "description",
                              description && *description ? description : NULL, "createdAt",
                              (json_int_t)now_ms(), "valuesDigest", digest, "valuesRedacted", redacted));
}

/* --- the terminal event and the registry ------------------------------------ */

typedef struct rstate {
    int revision, deployed;
    char status[32];
    char chart[256], version[128], app[128], description[512], reason[1024];
    char digest[65];
    char *redacted;
} rstate_t;

static void rstate_from_registry(rstate_t *s, const json_t *rel) {
    memset(s, 0, sizeof(*s));
    if (!rel) {
        snprintf(s->status, sizeof(s->status), "failed");
        return;
    }
    s->revision = jint(rel, "revision");
    s->deployed = jint(rel, "deployed_revision");
    snprintf(s->status, sizeof(s->status), "%s", jstr(rel, "status") ? jstr(rel, "status") : "");
    snprintf(s->chart, sizeof(s->chart), "%s", jstr(rel, "chart_name") ? jstr(rel, "chart_name") : "");
    snprintf(s->version, sizeof(s->version), "%s",
             jstr(rel, "chart_version") ? jstr(rel, "chart_version") : "");
    snprintf(s->app, sizeof(s->app), "%s", jstr(rel, "app_version") ? jstr(rel, "app_version") : "");
    snprintf(s->description, sizeof(s->description), "%s",
             jstr(rel, "description") ? jstr(rel, "description") : "");
    snprintf(s->reason, sizeof(s->reason), "%s", jstr(rel, "reason") ? jstr(rel, "reason") : "");
    snprintf(s->digest, sizeof(s->digest), "%s",
             jstr(rel, "values_digest") ? jstr(rel, "values_digest") : "");
    s->redacted = jstr(rel, "values_redacted") ? strdup(jstr(rel, "values_redacted")) : NULL;
}

/* Overlays what helm last reported about the release. */
static void rstate_from_helm(rstate_t *s, command_t *c) {
    const helm_release_t *h = &cmd_rs(c)->helm;
    s->revision = h->revision;
    snprintf(s->status, sizeof(s->status), "%s", h->status);
    snprintf(s->chart, sizeof(s->chart), "%s", h->chart_name);
    snprintf(s->version, sizeof(s->version), "%s", h->chart_version);
    snprintf(s->description, sizeof(s->description), "%s", h->description);
    /* The appVersion the sender gave is the one the seed's history shows. */
    const char *app = is_install_or_upgrade(c) && !c->helm_failed ? jstr(c->doc, "appVersion") : NULL;
    snprintf(s->app, sizeof(s->app), "%s", app && *app ? app : h->app_version);
    if (h->config) {
        /* helm showed the values (install/upgrade -o json): digest them. */
        free(s->redacted);
        s->redacted = NULL;
        values_digest_redact(h->config, s->digest, &s->redacted);
    } else if (strcmp(c->op, "rollback") == 0 && c->rollback_digest) {
        /* helm history shows no values: a rollback's are those of the
         * revision it went back to, as the ledger recorded them. Otherwise
         * (an atomic or unlocking rollback to the deployed revision, a
         * failure) the registry's, loaded by rstate_from_registry, stand. */
        snprintf(s->digest, sizeof(s->digest), "%s", c->rollback_digest);
        free(s->redacted);
        s->redacted = c->rollback_redacted ? strdup(c->rollback_redacted) : NULL;
    }
    if (strcmp(s->status, "deployed") == 0)
        s->deployed = s->revision;
}

static json_t *str_or_null(const char *s) {
    return s && *s ? json_string(s) : json_null();
}

/* The registry row and the revisions for the ledger (snake_case, as the
 * tables), from the event-form history. */
static json_t *ledger_revisions(command_t *c) {
    json_t *out = json_array();
    size_t i;
    json_t *h;
    json_array_foreach(c->history, i, h) {
        char ts[64];
        format_time_ms(json_integer_value(json_object_get(h, "createdAt")), ts, sizeof(ts));
        json_array_append_new(
            out,
            json_pack("{s:s,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:O,s:s}", "release_id", c->release_id,
                      "revision", json_object_get(h, "revision"), "status", json_object_get(h, "status"),
                      "chart_name", json_object_get(h, "chartName"), "chart_version",
                      json_object_get(h, "chartVersion"), "app_version", json_object_get(h, "appVersion"),
                      "operation", json_object_get(h, "operation"), "description",
                      json_object_get(h, "description"), "values_digest", json_object_get(h, "valuesDigest"),
                      "values_redacted", json_object_get(h, "valuesRedacted"), "created_at", ts));
    }
    return out;
}

/* Builds the terminal event (and the registry row when the release changed). */
static int build_outcome(command_t *c, rstate_t *s, int changed) {
    char errstr[512], eid[UUID_STR_LEN];
    const json_t *d = c->doc;
    int rejected = strcmp(c->event_type, "rejected") == 0;
    event_id(c->id, c->event_kind[0] ? c->event_kind : "terminal", eid);
    /* A release with no revision has no chart of its own (an install that
     * failed before helm fetched the chart): the chart the command asked for
     * is the only one known, and a dashboard needs it. A rejection carries no
     * release state at all. */
    if (!rejected && !s->chart[0] && s->revision == 0 && jstr(d, "chartName")) {
        snprintf(s->chart, sizeof(s->chart), "%s", jstr(d, "chartName"));
        snprintf(s->version, sizeof(s->version), "%s",
                 jstr(d, "chartVersion") ? jstr(d, "chartVersion") : "");
    }
    /* Event strings must be UTF-8, or the event does not encode and is lost:
     * the bounded copies may have cut a character, and helm's output (in
     * messages and descriptions) need not be UTF-8 at all. */
    char *texts[] = {
        s->status, s->chart, s->version, s->app, s->description, s->reason, cmd_rs(c)->error_message};
    for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++)
        utf8_sanitize(texts[t]);

    if (changed && !rejected) {
        c->new_release = json_pack(
            "{s:s,s:s,s:s,s:s,s:s,s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "release_id", c->release_id,
            "tenant_id", jstr(d, "tenantId"), "namespace", jstr(d, "namespace"), "release_name",
            jstr(d, "releaseName"), "status", s->status, "revision", s->revision, "deployed_revision",
            s->deployed ? json_integer(s->deployed) : json_null(), "chart_name", str_or_null(s->chart),
            "chart_version", str_or_null(s->version), "app_version", str_or_null(s->app), "description",
            str_or_null(s->description), "values_digest", str_or_null(s->digest), "values_redacted",
            str_or_null(s->redacted), "reason", str_or_null(s->reason));
    }
    json_t *ev = json_object();
    json_object_set_new(ev, "eventId", json_string(eid));
    json_object_set_new(ev, "commandId", json_string(c->id));
    json_object_set_new(ev, "eventType", json_string(c->event_type));
    json_object_set_new(ev, "terminal", json_true());
    json_object_set_new(ev, "releaseId", str_or_null(c->release_id));
    json_object_set_new(ev, "tenantId", json_string(jstr(d, "tenantId")));
    json_object_set_new(ev, "namespace", json_string(jstr(d, "namespace")));
    json_object_set_new(ev, "releaseName", json_string(jstr(d, "releaseName")));
    json_object_set_new(ev, "operation", json_string(c->op));
    json_object_set_new(ev, "status", json_string(rejected ? "rejected" : s->status));
    json_object_set_new(ev, "revision", json_integer(s->revision));
    json_object_set_new(ev, "chartName", str_or_null(s->chart));
    json_object_set_new(ev, "chartVersion", str_or_null(s->version));
    json_object_set_new(ev, "appVersion", str_or_null(s->app));
    json_object_set_new(ev, "description", str_or_null(s->description));
    json_object_set_new(ev, "performedBy", json_string(jstr(d, "performedBy") ? jstr(d, "performedBy") : ""));
    json_object_set_new(ev, "occurredAt", json_integer(now_ms()));
    json_object_set_new(ev, "requestedAt",
                        json_integer(json_integer_value(json_object_get(d, "requestedAt"))));
    json_object_set_new(ev, "reason", str_or_null(s->reason));
    json_object_set_new(ev, "valuesDigest", str_or_null(s->digest));
    json_object_set_new(ev, "valuesRedacted", str_or_null(s->redacted));
    json_t *hist = json_array();
    size_t i;
    json_t *h;
    json_array_foreach(c->history, i, h) {
        json_t *e = json_deep_copy(h);
        json_object_del(e, "valuesDigest");
        json_object_del(e, "valuesRedacted");
        json_array_append_new(hist, e);
    }
    json_object_set_new(ev, "history", hist);
    json_object_set_new(ev, "errorCode", str_or_null(c->error_code));
    json_object_set_new(ev, "errorMessage", str_or_null(cmd_rs(c)->error_message));
    int rc = codec_encode(CODEC_EVENT, ev, &c->event, &c->event_len, errstr, sizeof(errstr));
    json_decref(ev);
    if (rc < 0)
        cmd_log(c, LOG_LEVEL_ERROR, "cannot encode the terminal event: %s", errstr);
    return rc;
}

/* --- publishing ------------------------------------------------------------- */

static void on_terminal_delivered(command_t *c, rd_kafka_resp_err_t err) {
    cmd_log(c, LOG_LEVEL_INFO, "%s: %s%s%s%s", c->reconcile ? "reconciled" : "done",
            c->event_type ? c->event_type : "republished", c->error_code[0] ? " " : "", c->error_code,
            cmd_rs(c)->error_message[0] ? " " : "");
    if (cmd_rs(c)->error_message[0])
        cmd_log(c, LOG_LEVEL_INFO, "error: %s", cmd_rs(c)->error_message);
    count_outcome(c->ctx, c->event_type);
    command_done(c);
}

/* The terminal event goes out under the command's key, so that it follows
 * the release's other events on their partition; a command whose record key
 * is not its own is answered under the record key (see KEY_MISMATCH). */
static void publish_terminal(command_t *c) {
    c->phase = PHASE_PUBLISH;
    if (c->key_mismatch)
        c->ctx->host.produce(c->ctx->host.ctx, c->ctx->events_topic, c, c->kafka_key, c->kafka_key_len,
                             c->event, c->event_len, NULL, on_terminal_delivered);
    else
        c->ctx->host.produce(c->ctx->host.ctx, c->ctx->events_topic, c, key_name(c), strlen(key_name(c)),
                             c->event, c->event_len, NULL, on_terminal_delivered);
}

static void publish_started(command_t *c) {
    char eid[UUID_STR_LEN], errstr[256];
    rstate_t s;
    rstate_from_registry(&s, c->release);
    event_id(c->id, "started", eid);
    const char *status = strcmp(c->op, "install") == 0    ? "pending-install"
                         : strcmp(c->op, "upgrade") == 0  ? "pending-upgrade"
                         : strcmp(c->op, "rollback") == 0 ? "pending-rollback"
                                                          : "uninstalling";
    json_t *ev =
        json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:s,s:I,s:I}", "eventId", eid, "commandId",
                  c->id, "eventType", "started", "terminal", 0, "releaseId", c->release_id, "tenantId",
                  jstr(c->doc, "tenantId"), "namespace", jstr(c->doc, "namespace"), "releaseName",
                  jstr(c->doc, "releaseName"), "operation", c->op, "status", status, "revision", s.revision,
                  "performedBy", jstr(c->doc, "performedBy"), "occurredAt", (json_int_t)now_ms(),
                  "requestedAt", json_integer_value(json_object_get(c->doc, "requestedAt")));
    json_object_set_new(ev, "chartName",
                        str_or_null(is_install_or_upgrade(c) ? jstr(c->doc, "chartName") : s.chart));
    json_object_set_new(ev, "chartVersion",
                        str_or_null(is_install_or_upgrade(c) ? jstr(c->doc, "chartVersion") : s.version));
    unsigned char *buf;
    size_t len;
    if (codec_encode(CODEC_EVENT, ev, &buf, &len, errstr, sizeof(errstr)) == 0) {
        c->ctx->host.produce(c->ctx->host.ctx, c->ctx->events_topic, NULL, key_name(c), strlen(key_name(c)),
                             buf, len, NULL, NULL);
        free(buf);
    } else {
        cmd_log(c, LOG_LEVEL_ERROR, "cannot encode the started event: %s", errstr);
    }
    json_decref(ev);
    free(s.redacted);
}

/* --- finishing ---------------------------------------------------------------- */

static void on_finish_timer(uv_timer_t *t) {
    finish(t->data);
}

static void on_finished(void *arg, const PGresult *res, const char *err) {
    command_t *c = arg;
    if (err) {
        cmd_log(c, LOG_LEVEL_ERROR, "recording the outcome failed, retrying in 1 s: %s", err);
        retry_later(c, 1000, on_finish_timer);
        return;
    }
    publish_terminal(c);
}

/* Records the outcome (ledger + registry, one transaction) and publishes. */
static void finish(command_t *c) {
    pool_release(c); /* rejected after its start was recorded: helm never ran */
    c->phase = PHASE_FINISH;
    char *release = c->new_release ? json_dumps(c->new_release, JSON_COMPACT) : NULL;
    json_t *revs = ledger_revisions(c);
    char *revisions = json_dumps(revs, JSON_COMPACT);
    json_decref(revs);
    const char *tenant = jstr(c->doc, "tenantId");
    const char *values[10] = {c->id,
                              key_name(c),
                              c->event_type,
                              c->error_code[0] ? c->error_code : NULL,
                              (const char *)c->event,
                              release,
                              revisions,
                              c->claim_namespace ? tenant : NULL,
                              c->claim_namespace ? jstr(c->doc, "namespace") : NULL,
                              c->lock_holds_unsure ? "t" : "f"};
    int lengths[10] = {0, 0, 0, 0, (int)c->event_len, 0, 0, 0, 0, 0};
    int formats[10] = {0, 0, 0, 0, 1, 0, 0, 0, 0, 0};
    ledger_query(c, SQL_FINISH, 10, values, lengths, formats, on_finished, c);
    free(release);
    free(revisions);
}

/* Ends the command with the release state s (changed: the registry moves). */
static void conclude(command_t *c, rstate_t *s, int changed) {
    if (build_outcome(c, s, changed) < 0) {
        /* An event that does not encode is a bug; say so and carry on. */
        outcome(c, "failed", "INTERNAL", "the worker could not encode the event");
        build_outcome(c, s, 0);
    }
    free(s->redacted);
    s->redacted = NULL;
    finish(c);
}

/* A command refused before anything ran. */
static void reject(command_t *c, int recorded, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void reject(command_t *c, int recorded, const char *code, const char *fmt, ...) {
    rstate_t s;
    va_list ap;
    c->event_type = "rejected";
    snprintf(c->error_code, sizeof(c->error_code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(cmd_rs(c)->error_message, sizeof(cmd_rs(c)->error_message), fmt, ap);
    va_end(ap);
    rstate_from_registry(&s, c->release);
    if (!c->release)
        s.status[0] = '\0';
    cmd_log(c, LOG_LEVEL_WARN, "rejected %s: %s", code, cmd_rs(c)->error_message);
    if (build_outcome(c, &s, 0) < 0) {
        free(s.redacted);
        command_done(c); /* nothing can be said about it */
        return;
    }
    free(s.redacted);
    if (recorded)
        finish(c);
    else
        publish_terminal(c); /* invalid: deterministic, nothing to record */
}

/* --- helm steps ---------------------------------------------------------------- */

typedef void (*step_cb)(command_t *c, helm_run_t *run);

/* The pool: a command holds one of its `concurrency` slots from recording its
 * start (or from a reconciliation's first helm step) until its helm steps
 * are over, so that at most that many helm processes run. Others wait in
 * order. When the worker stops, commands that never held a slot are given
 * back: nothing ran for them, the next worker runs (or reconciles) them
 * again. A command that held one is under way (its start recorded, a helm
 * step run) even when it waits for a slot again, e.g. between a tenant
 * set-up that met another worker's and its next try: it goes on and
 * finishes here, as the next worker would take it for interrupted. */

static void pool_give_back(command_t *c) {
    command_ctx_t *w = c->ctx;
    cmd_log(c, LOG_LEVEL_INFO, "stopping: given back before its helm ran (redelivered to the next worker)");
    /* Its key's lock goes with the ledger session at exit; offsets are only
     * stored up to it, as it never finishes here. */
    w->host.given_back(w->host.ctx, c);
}

/* Runs then(c) once c holds a slot (now, when one is free). */
static void pool_acquire(command_t *c, void (*then)(command_t *)) {
    command_ctx_t *w = c->ctx;
    if (c->has_slot) {
        then(c);
        return;
    }
    if (c->follow_up) { /* the slot its helm just freed */
        w->helm_running++;
        c->has_slot = 1;
        then(c);
        return;
    }
    if (w->stopping && !c->held_slot) {
        pool_give_back(c); /* the tick notices when nothing is left */
        return;
    }
    if (w->helm_running < w->concurrency) {
        w->helm_running++;
        c->has_slot = c->held_slot = 1;
        then(c);
        return;
    }
    c->slot_then = then;
    c->helm_wait_next = NULL;
    if (w->helm_wait_tail)
        w->helm_wait_tail->helm_wait_next = c;
    else
        w->helm_wait_head = c;
    w->helm_wait_tail = c;
}

/* While the worker stops, only commands under way wait (pool_acquire). */
static void pool_pump(command_ctx_t *w) {
    while (!w->exiting && w->helm_running < w->concurrency && w->helm_wait_head) {
        command_t *n = w->helm_wait_head;
        w->helm_wait_head = n->helm_wait_next;
        if (!w->helm_wait_head)
            w->helm_wait_tail = NULL;
        n->helm_wait_next = NULL;
        w->helm_running++;
        n->has_slot = n->held_slot = 1;
        n->slot_then(n);
    }
}

static void pool_release(command_t *c) {
    if (!c->has_slot)
        return;
    c->has_slot = 0;
    c->ctx->helm_running--;
    pool_pump(c->ctx);
}

void command_pool_stop(command_ctx_t *w) {
    command_t *keep = NULL, **tail = &keep, *last = NULL;
    while (w->helm_wait_head) {
        command_t *c = w->helm_wait_head;
        w->helm_wait_head = c->helm_wait_next;
        c->helm_wait_next = NULL;
        if (c->held_slot) { /* under way: keeps its place */
            *tail = last = c;
            tail = &c->helm_wait_next;
        } else {
            pool_give_back(c);
        }
    }
    w->helm_wait_head = keep;
    w->helm_wait_tail = last;
}

static void helm_finished(void *arg) {
    helm_run_t *run = arg;
    command_t *c = run->data;
    command_ctx_t *w = c->ctx;
    step_cb next = (step_cb)c->helm_next;
    c->run = NULL;
    w->counters.helm++;
    count_helm(w, (double)(run->ended_ms - run->started_ms) / 1000.0);
    /* The slot is free while the command records its outcome; a next helm
     * step of it (status, atomic rollback) takes it straight back, before
     * the queue gets it. */
    c->has_slot = 0;
    w->helm_running--;
    c->follow_up = 1;
    next(c, run);
    c->follow_up = 0;
    helm_ops(w)->free(run);
    pool_pump(w);
}

/* helm has exited and its output is read: what follows (its outcome, the
 * next step, the slot) runs a few commands per loop iteration. */
static void on_helm_done(helm_run_t *run) {
    command_t *c = run->data;
    c->ctx->host.later(c->ctx->host.ctx, helm_finished, run);
}

static void on_helm_recorded(void *arg, const PGresult *res, const char *err) {
    if (err)
        cmd_log(arg, LOG_LEVEL_WARN,
                "recording helm's deadline failed (after a crash, a worker would wait for it only until "
                "the previous one): %s",
                err);
}

/* Records a helm step's process and deadline in the ledger (the start
 * recorded the operation's), so that after a crash the worker reconciling
 * the command waits for it until then (reconcile; the pid serves workers
 * that predate the marker). Queued on the key's connection before the
 * command's finish, so its callback runs before the command is freed. */
static void record_helm(command_t *c, const helm_run_t *run, uint64_t deadline) {
    char pid[16], ticks[32], host[512], deadline_ms[32];
    unsigned long long t = 0;
    int have_ticks = helm_proc_start_ticks(run->pid, &t) == 0;
    snprintf(pid, sizeof(pid), "%d", run->pid);
    snprintf(ticks, sizeof(ticks), "%llu", t);
    snprintf(deadline_ms, sizeof(deadline_ms), "%lld", (long long)(now_ms() + (int64_t)deadline));
    helm_host_id(host, sizeof(host));
    /* helm runs in its own session: its process group is its pid */
    const char *values[6] = {c->id, pid, pid, have_ticks ? ticks : NULL, host, deadline_ms};
    ledger_query(c, SQL_HELM_STARTED, 6, values, NULL, NULL, on_helm_recorded, c);
}

/* helm's process exists: the ledger gets its pid and deadline when the
 * start's record does not cover this step. Runs before helm's exit is
 * watched, so before the command's finish is queued. */
static void on_helm_spawned(helm_run_t *run) {
    command_t *c = run->data;
    if (c->helm_record_pending)
        record_helm(c, run, c->helm_deadline);
    c->helm_record_pending = 0;
}

/* The deadline the start records for the operation's helm: it starts right
 * after (see helm_launch). */
static int64_t start_deadline_ms(const command_t *c) {
    return now_ms() + command_timeout(c) * 1000 + c->ctx->timeout_grace_ms;
}

/* Starts the command's helm step: it holds a slot. Every helm process of the
 * command carries its marker. The ledger already has the deadline when the
 * start recorded it and helm starts within a second of that; a later step
 * (status, atomic rollback, a reconciliation's) records its own. */
static void helm_launch(command_t *c) {
    command_ctx_t *w = c->ctx;
    char line[2048], marker[128];
    helm_argv_format(&c->helm_argv, line, sizeof(line));
    cmd_log(c, LOG_LEVEL_INFO, "helm: %s", line);
    helm_marker(c->id, marker, sizeof(marker));
    int64_t deadline = now_ms() + (int64_t)c->helm_deadline;
    int recorded = c->recorded_deadline_ms && deadline - c->recorded_deadline_ms <= 1000;
    c->recorded_deadline_ms = 0; /* it covers this step only */
    c->helm_record_pending = c->helm_records && !recorded;
    c->run = helm_ops(w)->start(w->loop, &c->helm_argv, c->values_fd, c->helm_deadline, w->kill_grace_ms,
                                marker, on_helm_spawned, on_helm_done, c);
    helm_argv_free(&c->helm_argv);
    if (!c->run)
        abort();
}

/* Runs argv (taken over) once the command holds a slot of the pool; next
 * gets the finished run (freed after next returns). The timeout counts from
 * helm's start. */
static void helm_step(command_t *c, helm_argv_t *argv, long timeout_s, step_cb next) {
    c->helm_next = (void (*)(void))next;
    c->helm_argv = *argv;
    *argv = (helm_argv_t){0};
    /* helm history (the status step) changes nothing: a crash while it runs needs no waiting */
    c->helm_records = c->helm_argv.argc > 1 && strcmp(c->helm_argv.argv[1], "history") != 0;
    c->helm_deadline = (uint64_t)timeout_s * 1000 + (uint64_t)c->ctx->timeout_grace_ms;
    pool_acquire(c, helm_launch);
}

static void helm_simple(command_t *c, const char *sub, int revision, long timeout_s, step_cb next) {
    helm_argv_t a = {0};
    helm_argv_simple(&a, &c->ctx->helmc, sub, c->doc, revision, timeout_s);
    helm_step(c, &a, strcmp(sub, "status") == 0 ? 60 : timeout_s, next);
}

static void on_status_retry_timer(uv_timer_t *t);

/* helm status: fills c->helm / c->helm_found, then next. A status that
 * cannot reach the cluster says nothing about the release: helm may have
 * left it pending-* (an API server lost mid-operation), and what follows a
 * failure or a crash depends on that. It is asked again, 0.5 s, 1 s, 2 s,
 * then every 5 s, for up to STATUS_WAIT_MS; only then does the command go on
 * without the release's state (logged as an error). */
#define STATUS_WAIT_MS (5 * 60 * 1000)

static void on_status(command_t *c, helm_run_t *run) {
    helm_release_clear(&cmd_rs(c)->helm);
    c->helm_found =
        run->exit_status == 0 && !run->term_signal && helm_release_parse(run->out, &cmd_rs(c)->helm) == 0;
    if (!c->helm_found && !strstr(run->err, "not found")) {
        char e[512];
        helm_error_text(run, e, sizeof(e));
        if (strcmp(helm_failure_code(e), "CLUSTER_UNAVAILABLE") == 0) {
            int64_t now = now_ms();
            if (!c->status_wait_since)
                c->status_wait_since = now;
            if (now - c->status_wait_since < STATUS_WAIT_MS) {
                c->status_retry_ms = c->status_retry_ms ? c->status_retry_ms * 2 : 500;
                if (c->status_retry_ms > 5000)
                    c->status_retry_ms = 5000;
                cmd_log(
                    c, LOG_LEVEL_WARN,
                    "helm status cannot reach the cluster (%s): asking again in %d ms, the release's state "
                    "decides what follows",
                    e, c->status_retry_ms);
                retry_later(c, (uint64_t)c->status_retry_ms, on_status_retry_timer);
                return;
            }
            cmd_log(
                c, LOG_LEVEL_ERROR,
                "helm status could not reach the cluster for %d s (%s): going on without the release's state",
                STATUS_WAIT_MS / 1000, e);
        } else {
            cmd_log(c, LOG_LEVEL_WARN, "helm status failed: %s", e);
        }
    }
    c->status_wait_since = 0;
    c->status_retry_ms = 0;
    ((void (*)(command_t *))c->status_then)(c);
}

static void helm_status(command_t *c, void (*then)(command_t *)) {
    c->phase = PHASE_STATUS;
    c->status_then = (void (*)(void))then;
    helm_simple(c, "status", 0, 60, on_status);
}

static void on_status_retry_timer(uv_timer_t *t) {
    command_t *c = t->data;
    helm_status(c, (void (*)(command_t *))c->status_then);
}

/* --- success ---------------------------------------------------------------------- */

static void succeed_from_helm(command_t *c) {
    rstate_t s;
    rstate_from_registry(&s, c->release);
    if (!c->helm_found) {
        /* helm said it succeeded but cannot show the release: report what is known. */
        s.revision = c->base_revision + 1;
        snprintf(s.status, sizeof(s.status), "deployed");
    } else {
        rstate_from_helm(&s, c);
    }
    const char *doc_desc = jstr(c->doc, "description");
    if (doc_desc && *doc_desc && strcmp(c->op, "rollback") != 0)
        snprintf(s.description, sizeof(s.description), "%s", doc_desc);
    s.reason[0] = '\0';
    history_add(c, s.revision, s.status, s.chart, s.version, s.app, c->op, s.description, s.digest,
                s.redacted);
    if (strcmp(c->op, "install") == 0)
        c->claim_namespace = 1;
    outcome(c, "succeeded", NULL, NULL);
    conclude(c, &s, 1);
}

static void succeed_uninstall(command_t *c, const char *description) {
    rstate_t s;
    rstate_from_registry(&s, c->release);
    const char *reason = jstr(c->doc, "reason");
    const char *doc_desc = jstr(c->doc, "description");
    s.revision = c->base_revision + 1; /* the uninstall is a change: it gets its revision */
    s.deployed = 0;
    snprintf(s.status, sizeof(s.status), "uninstalled");
    snprintf(s.description, sizeof(s.description), "%s", doc_desc && *doc_desc ? doc_desc : description);
    snprintf(s.reason, sizeof(s.reason), "%s", reason ? reason : "");
    history_add(c, s.revision, "uninstalled", s.chart, s.version, s.app, "uninstall", s.description, s.digest,
                s.redacted);
    outcome(c, "succeeded", NULL, NULL);
    conclude(c, &s, 1);
}

/* --- failure and atomic rollback --------------------------------------------------- */

static void fail_with_state(command_t *c, const char *event_type) {
    rstate_t s;
    rstate_from_registry(&s, c->release);
    if (c->helm_found)
        rstate_from_helm(&s, c);
    else if (strcmp(c->op, "install") == 0)
        snprintf(s.status, sizeof(s.status), "failed"), s.revision = 0;
    (void)event_type;
    conclude(c, &s, 1);
}

static void after_atomic_uninstall(command_t *c, helm_run_t *run) {
    char e[1024];
    if (run->exit_status != 0 && !strstr(run->err, "not found")) {
        outcome(c, "failed", c->error_code, "%s; the atomic rollback (uninstall) failed too: %s",
                cmd_rs(c)->helm_error, helm_error_text(run, e, sizeof(e)));
        c->helm_found = 0;
        rstate_t s;
        rstate_from_registry(&s, c->release);
        snprintf(s.status, sizeof(s.status), "failed");
        s.revision = s.revision ? s.revision : 1;
        conclude(c, &s, 1);
        return;
    }
    rstate_t s;
    rstate_from_registry(&s, NULL);
    int failed_rev = c->helm_found ? cmd_rs(c)->helm.revision : 0;
    if (c->helm_found)
        rstate_from_helm(&s, c);
    s.revision = failed_rev + 1;
    s.deployed = 0;
    snprintf(s.status, sizeof(s.status), "uninstalled");
    snprintf(s.description, sizeof(s.description), "atomic rollback: the failed install was uninstalled");
    snprintf(s.reason, sizeof(s.reason), "atomic rollback after a failed install");
    history_add(c, s.revision, "uninstalled", s.chart, s.version, s.app, "atomic-rollback", s.description,
                s.digest, s.redacted);
    /* A reconciliation that had to remove a stale pending install of a
     * non-atomic command reports it failed; the atomic rollback is rolled_back. */
    outcome(c, json_is_true(json_object_get(c->doc, "atomic")) ? "rolled_back" : "failed", c->error_code,
            "%s", cmd_rs(c)->helm_error);
    conclude(c, &s, 1);
}

static void after_atomic_rollback_status(command_t *c) {
    rstate_t s;
    rstate_from_registry(&s, c->release);
    if (c->helm_found)
        rstate_from_helm(&s, c);
    if (c->helm_found && strcmp(cmd_rs(c)->helm.status, "deployed") == 0) {
        history_add(c, s.revision, s.status, s.chart, s.version, s.app, "atomic-rollback", s.description,
                    s.digest, s.redacted);
        outcome(c, "rolled_back", c->error_code, "%s", cmd_rs(c)->helm_error);
    } else {
        outcome(c, "failed", c->error_code, "%s; the atomic rollback did not leave a deployed release",
                cmd_rs(c)->helm_error);
    }
    conclude(c, &s, 1);
}

static void after_atomic_rollback(command_t *c, helm_run_t *run) {
    char e[1024];
    if (run->exit_status != 0) {
        char first[1024];
        snprintf(first, sizeof(first), "%s", cmd_rs(c)->helm_error);
        snprintf(cmd_rs(c)->helm_error, sizeof(cmd_rs(c)->helm_error),
                 "%s; the atomic rollback failed too: %s", first, helm_error_text(run, e, sizeof(e)));
    }
    helm_status(c, after_atomic_rollback_status);
}

/* Called with c->helm / helm_found describing the release after the failure. */
static void after_failure_status(command_t *c) {
    const char *code = c->timed_out ? "TIMEOUT" : helm_failure_code(cmd_rs(c)->helm_error);
    int atomic = json_is_true(json_object_get(c->doc, "atomic")) && is_install_or_upgrade(c);
    /* helm failed and left the revision it made pending-*: it could not
     * record the failure either (the API server went away mid-operation).
     * The worker finishes that: the revision is marked failed, and the lock
     * it would leave goes, as a reconciliation does (reconcile_status). */
    int stuck = c->helm_found && strncmp(cmd_rs(c)->helm.status, "pending-", 8) == 0 &&
                cmd_rs(c)->helm.revision > c->base_revision;
    outcome(c, "failed", code, "%s", cmd_rs(c)->helm_error);
    if (c->helm_found) {
        rstate_t s;
        rstate_from_registry(&s, c->release);
        rstate_from_helm(&s, c);
        if (stuck)
            history_add(
                c, s.revision, "failed", s.chart, s.version, s.app, c->op,
                "failed; helm left it pending (it could not record the failure): marked failed by the "
                "worker",
                s.digest, s.redacted);
        else if (s.revision > c->base_revision)
            history_add(c, s.revision, s.status, s.chart, s.version, s.app, c->op, s.description, s.digest,
                        s.redacted);
        free(s.redacted);
    }
    if (stuck && !atomic && strcmp(c->op, "uninstall") != 0) {
        c->phase = PHASE_ROLLBACK;
        if (strcmp(cmd_rs(c)->helm.status, "pending-install") == 0 || c->base_deployed <= 0) {
            cmd_log(c, LOG_LEVEL_WARN, "%s failed (%s) and helm left the release %s: uninstalling it", c->op,
                    code, cmd_rs(c)->helm.status);
            helm_simple(c, "uninstall", 0, command_timeout(c), after_atomic_uninstall);
        } else {
            cmd_log(c, LOG_LEVEL_WARN,
                    "%s failed (%s) and helm left the release %s: rolling back to revision %d", c->op, code,
                    cmd_rs(c)->helm.status, c->base_deployed);
            helm_simple(c, "rollback", c->base_deployed, command_timeout(c), after_atomic_rollback);
        }
        return;
    }
    if (atomic && strcmp(c->op, "install") == 0) {
        if (!c->helm_found) {
            /* Nothing was created: nothing to undo. */
            outcome(c, "rolled_back", code, "%s", cmd_rs(c)->helm_error);
            rstate_t s;
            rstate_from_registry(&s, NULL);
            snprintf(s.status, sizeof(s.status), "uninstalled");
            snprintf(s.reason, sizeof(s.reason), "atomic rollback after a failed install");
            conclude(c, &s, 1);
            return;
        }
        c->phase = PHASE_ROLLBACK;
        cmd_log(c, LOG_LEVEL_WARN, "atomic: install failed (%s); uninstalling", code);
        helm_simple(c, "uninstall", 0, command_timeout(c), after_atomic_uninstall);
        return;
    }
    if (atomic && strcmp(c->op, "upgrade") == 0 && c->base_deployed > 0) {
        c->phase = PHASE_ROLLBACK;
        cmd_log(c, LOG_LEVEL_WARN, "atomic: upgrade failed (%s); rolling back to revision %d", code,
                c->base_deployed);
        helm_simple(c, "rollback", c->base_deployed, command_timeout(c), after_atomic_rollback);
        return;
    }
    fail_with_state(c, "failed");
}

static void after_failure(command_t *c) {
    helm_status(c, after_failure_status);
}

/* --- unlocking stale pending-* releases ----------------------------------------------- */

static void after_unlock(command_t *c, helm_run_t *run) {
    char e[512];
    if (run->exit_status != 0) {
        cmd_log(c, LOG_LEVEL_WARN, "unlocking failed: %s", helm_error_text(run, e, sizeof(e)));
        after_failure(c);
        return;
    }
    cmd_log(c, LOG_LEVEL_INFO, "unlocked the stale release; running the %s again", c->op);
    run_operation(c);
}

static void unlock_status(command_t *c) {
    const char *st = c->helm_found ? cmd_rs(c)->helm.status : "";
    c->phase = PHASE_UNLOCK;
    if (strcmp(st, "pending-install") == 0) {
        cmd_log(c, LOG_LEVEL_WARN,
                "release stuck in pending-install (an interrupted operation): uninstalling it");
        history_add(c, cmd_rs(c)->helm.revision, "failed", cmd_rs(c)->helm.chart_name,
                    cmd_rs(c)->helm.chart_version, cmd_rs(c)->helm.app_version, "unlock",
                    "stale pending-install left by an interrupted operation: marked failed and removed", NULL,
                    NULL);
        helm_simple(c, "uninstall", 0, command_timeout(c), after_unlock);
    } else if ((strcmp(st, "pending-upgrade") == 0 || strcmp(st, "pending-rollback") == 0) &&
               c->base_deployed > 0) {
        cmd_log(c, LOG_LEVEL_WARN,
                "release stuck in %s (an interrupted operation): rolling back to revision %d", st,
                c->base_deployed);
        history_add(c, cmd_rs(c)->helm.revision, "failed", cmd_rs(c)->helm.chart_name,
                    cmd_rs(c)->helm.chart_version, cmd_rs(c)->helm.app_version, "unlock",
                    "stale pending operation left by an interrupted operation: marked failed", NULL, NULL);
        c->base_revision = cmd_rs(c)->helm.revision + 1;
        helm_simple(c, "rollback", c->base_deployed, command_timeout(c), after_unlock);
    } else {
        after_failure_status(c);
    }
}

/* --- the operation ------------------------------------------------------------------- */

static void values_release(command_t *c) {
    if (c->values_fd >= 0) {
        close(c->values_fd);
        c->values_fd = -1;
    } else if (c->values_path && c->values_path[0]) {
        helm_values_remove(c->values_path);
    }
    free(c->values_path);
    c->values_path = NULL;
}

static void on_operation(command_t *c, helm_run_t *run) {
    char e[1024];
    values_release(c);
    c->timed_out = run->timed_out;
    if (run->exit_status == 0 && !run->term_signal && !run->timed_out) {
        c->helm_failed = 0;
        if (strcmp(c->op, "uninstall") == 0) {
            succeed_uninstall(c, "Uninstallation complete");
            return;
        }
        if (strcmp(c->op, "rollback") == 0) {
            helm_status(c, succeed_from_helm);
            return;
        }
        helm_release_clear(&cmd_rs(c)->helm);
        c->helm_found = helm_release_parse(run->out, &cmd_rs(c)->helm) == 0;
        if (!c->helm_found)
            helm_status(c, succeed_from_helm);
        else
            succeed_from_helm(c);
        return;
    }
    c->helm_failed = 1;
    if (strcmp(c->op, "install") == 0)
        ns_setup_forget(c);
    if (run->timed_out)
        snprintf(cmd_rs(c)->helm_error, sizeof(cmd_rs(c)->helm_error),
                 "helm did not finish within the %lds timeout (%s); %s", command_timeout(c),
                 run->killed ? "SIGTERM, then SIGKILL" : "SIGTERM", helm_error_text(run, e, sizeof(e)));
    else
        snprintf(cmd_rs(c)->helm_error, sizeof(cmd_rs(c)->helm_error), "%s",
                 helm_error_text(run, e, sizeof(e)));
    cmd_log(c, LOG_LEVEL_WARN, "helm %s failed: %s", c->op, cmd_rs(c)->helm_error);
    if (strcmp(c->op, "install") == 0 && !run->timed_out && strstr(cmd_rs(c)->helm_error, NAME_IN_USE_TEXT)) {
        /* helm changed nothing: the name belongs to a release this command did
         * not create (made outside helmq, or unknown to the registry). It is
         * not ours to undo, atomic or not: uninstalling it would destroy it. */
        c->release_id[0] = '\0';
        reject(c, 1, "RELEASE_EXISTS",
               "release %s already exists in namespace %s, not created by this command: %s",
               jstr(c->doc, "releaseName"), jstr(c->doc, "namespace"), cmd_rs(c)->helm_error);
        return;
    }
    if (!c->unlock_tried && strstr(cmd_rs(c)->helm_error, IN_PROGRESS_TEXT)) {
        c->unlock_tried = 1;
        helm_status(c, unlock_status);
        return;
    }
    if (strcmp(c->op, "uninstall") == 0 && strstr(cmd_rs(c)->helm_error, "not found")) {
        /* Already gone from the cluster: the uninstall's goal holds. */
        succeed_uninstall(c, "Uninstallation complete (the release was already gone)");
        return;
    }
    after_failure(c);
}

static void on_run_timer(uv_timer_t *t) {
    run_operation(t->data);
}

static void run_operation(command_t *c) {
    helm_argv_t a = {0};
    c->phase = PHASE_HELM;
    if (is_install_or_upgrade(c)) {
        const char *values = jstr(c->doc, "valuesOverride");
        /* A memory file passed to helm as a descriptor; a private file under
         * tmpdir only where memfd_create is missing. */
        char path[4096];
        c->values_fd = helm_values_memfd(values ? values : "{}");
        if (c->values_fd >= 0) {
            snprintf(path, sizeof(path), "%s", HELM_PASS_PATH);
        } else if (helm_values_write(c->ctx->tmpdir, values ? values : "{}", path, sizeof(path)) < 0) {
            cmd_log(c, LOG_LEVEL_ERROR, "cannot write the values file under %s: %m; retrying in 1 s",
                    c->ctx->tmpdir);
            retry_later(c, 1000, on_run_timer);
            return;
        }
        free(c->values_path);
        c->values_path = strdup(path);
        if (!c->values_path)
            abort(); /* out of memory */
    }
    int target = strcmp(c->op, "rollback") == 0 ? c->rollback_default : 0;
    helm_argv_operation(&a, &c->ctx->helmc, c->op, c->doc, c->values_path ? c->values_path : "", target,
                        command_timeout(c));
    helm_step(c, &a, command_timeout(c), on_operation);
}

/* --- the tenant's access, before an install ------------------------------------------- */

/* --- the namespace's tenant set-up (tenant_access.h) --------------------------------------- */

#define TENANT_ACCESS_TTL_MS (60 * 1000) /* a set-up is trusted this long */
#define TENANT_ACCESS_RETRIES 6          /* another set-up in progress: tries, 2 s apart */

static ns_setup_t *ns_setup_of(command_ctx_t *w, const char *ns) {
    ns_setup_t *s;
    for (s = w->ns_setups; s; s = s->next)
        if (strcmp(s->ns, ns) == 0)
            return s;
    s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    snprintf(s->ns, sizeof(s->ns), "%s", ns);
    s->next = w->ns_setups;
    w->ns_setups = s;
    return s;
}

/* The namespace's set-up is no longer trusted (an install there failed: the
 * operator may have deleted the namespace or the binding). */
static void ns_setup_forget(command_t *c) {
    if (c->ctx->helmc.impersonate && jstr(c->doc, "namespace"))
        ns_setup_of(c->ctx, jstr(c->doc, "namespace"))->ok_until = 0;
}

static void tenant_access_failed(command_t *c, const char *error) {
    cmd_log(c, LOG_LEVEL_ERROR, "setting up namespace %s for the tenant failed: %s",
            jstr(c->doc, "namespace"), error);
    /* an unreachable cluster is said as such; any other cause is the set-up's */
    const char *code = strcmp(helm_failure_code(error), "CLUSTER_UNAVAILABLE") == 0 ? "CLUSTER_UNAVAILABLE"
                                                                                    : "TENANT_ACCESS_FAILED";
    outcome(
        c, "failed", code,
        "the worker could not set up namespace %s for the tenant (release %s): %s; the install did not run",
        jstr(c->doc, "namespace"), TENANT_ACCESS_RELEASE, error);
    rstate_t s;
    rstate_from_registry(&s, NULL);
    snprintf(s.status, sizeof(s.status), "uninstalled");
    conclude(c, &s, 1);
}

/* The running set-up of c's namespace ended: c and every install waiting for
 * it go on (error NULL) or fail with its error. */
static void tenant_access_done(command_t *c, const char *error) {
    ns_setup_t *s = ns_setup_of(c->ctx, jstr(c->doc, "namespace"));
    command_t **waiters = s->waiters;
    size_t n = s->nwaiters;
    s->running = 0;
    s->waiters = NULL;
    s->nwaiters = s->cap = 0;
    s->ok_until = error ? 0 : (uint64_t)now_ms() + TENANT_ACCESS_TTL_MS;
    if (error)
        tenant_access_failed(c, error);
    else
        run_operation(c);
    for (size_t i = 0; i < n; i++) {
        if (error)
            tenant_access_failed(waiters[i], error);
        else
            run_operation(waiters[i]);
    }
    free(waiters);
}

static void tenant_access_run(command_t *c);

static void on_tenant_access_timer(uv_timer_t *t) {
    tenant_access_run(t->data);
}

static void on_tenant_access_unlocked(command_t *c, helm_run_t *run) {
    char e[512];
    if (run->exit_status != 0)
        cmd_log(c, LOG_LEVEL_WARN, "unlocking %s failed: %s", TENANT_ACCESS_RELEASE,
                helm_error_text(run, e, sizeof(e)));
    tenant_access_run(c);
}

/* The set-up release stayed pending-* (a set-up interrupted by a crash):
 * unlocked as a tenant's release would be, with the worker's identity. */
static void tenant_access_unlock(command_t *c, helm_run_t *run) {
    helm_release_t h = {0};
    helm_argv_t a = {0};
    const char *sub = NULL;
    if (run->exit_status == 0 && helm_release_parse(run->out, &h) == 0) {
        if (strcmp(h.status, "pending-install") == 0)
            sub = "uninstall";
        else if (strncmp(h.status, "pending-", 8) == 0)
            sub = "rollback";
    }
    helm_release_clear(&h);
    if (!sub) { /* not stuck: another worker's set-up, just slow */
        tenant_access_run(c);
        return;
    }
    cmd_log(c, LOG_LEVEL_WARN, "%s in namespace %s is stuck (an interrupted set-up): %s",
            TENANT_ACCESS_RELEASE, jstr(c->doc, "namespace"), sub);
    tenant_access_argv_sub(&a, &c->ctx->helmc, sub, jstr(c->doc, "namespace"), 60);
    helm_step(c, &a, 60, on_tenant_access_unlocked);
}

static void on_tenant_access(command_t *c, helm_run_t *run) {
    char e[1024];
    if (run->exit_status == 0 && !run->term_signal && !run->timed_out) {
        tenant_access_done(c, NULL);
        return;
    }
    helm_error_text(run, e, sizeof(e));
    /* Another worker's set-up of the namespace got there first: it created
     * the release (or its next revision) while this helm was about to, or
     * this helm found it running. */
    int raced = strstr(e, RELEASE_EXISTS_TEXT) || strstr(e, NAME_IN_USE_TEXT);
    if ((raced || strstr(e, IN_PROGRESS_TEXT)) && c->access_tries < TENANT_ACCESS_RETRIES) {
        /* Another worker sets the namespace up now, or a set-up was
         * interrupted: wait, then look whether it is stuck. */
        c->access_tries++;
        cmd_log(c, LOG_LEVEL_INFO, "%s in namespace %s: %s; trying again in 2 s", TENANT_ACCESS_RELEASE,
                jstr(c->doc, "namespace"),
                raced ? "another set-up created it at the same moment" : "another operation is in progress");
        if (c->access_tries == TENANT_ACCESS_RETRIES / 2) {
            helm_argv_t a = {0};
            tenant_access_argv_sub(&a, &c->ctx->helmc, "status", jstr(c->doc, "namespace"), 60);
            helm_step(c, &a, 60, tenant_access_unlock);
            return;
        }
        retry_later(c, 2000, on_tenant_access_timer);
        return;
    }
    /* Nothing of the install ran: the namespace could not be set up for the
     * tenant with the worker's own identity (its rights, the cluster). */
    tenant_access_done(c, e);
}

static void tenant_access_run(command_t *c) {
    helm_argv_t a = {0};
    c->phase = PHASE_HELM;
    tenant_access_argv(&a, &c->ctx->helmc, jstr(c->doc, "namespace"), 60);
    helm_step(c, &a, 60, on_tenant_access);
}

/* Before an install: the namespace's set-up, once at a time per namespace,
 * skipped while a recent one is trusted. */
static void tenant_access_setup(command_t *c) {
    ns_setup_t *s = ns_setup_of(c->ctx, jstr(c->doc, "namespace"));
    if (s->ok_until > (uint64_t)now_ms()) {
        run_operation(c);
        return;
    }
    if (s->running) {
        if (s->nwaiters == s->cap) {
            size_t cap = s->cap ? s->cap * 2 : 8;
            command_t **v = realloc(s->waiters, cap * sizeof(*v));
            if (!v)
                abort();
            s->waiters = v;
            s->cap = cap;
        }
        s->waiters[s->nwaiters++] = c;
        c->phase = PHASE_HELM;
        cmd_log(c, LOG_LEVEL_DEBUG, "waiting for the set-up of namespace %s", s->ns);
        return;
    }
    s->running = 1;
    c->access_tries = 0;
    tenant_access_run(c);
}

/* --- reconciliation of an interrupted command ------------------------------------------ */

static void reconcile_status(command_t *c) {
    const char *st = c->helm_found ? cmd_rs(c)->helm.status : "";
    int rev = c->helm_found ? cmd_rs(c)->helm.revision : 0;
    int atomic = json_is_true(json_object_get(c->doc, "atomic")) && is_install_or_upgrade(c);
    cmd_log(c, LOG_LEVEL_WARN,
            "reconciling an interrupted %s: helm reports %s revision %d (before: revision %d)", c->op,
            c->helm_found ? st : "no release", rev, c->base_revision);
    /* When the helm the crashed worker left had to be stopped at its
     * deadline, the command failed by its timeout, as it would have without
     * the crash. */
    const char *code = c->left_signals ? "TIMEOUT" : "INTERRUPTED";
    snprintf(cmd_rs(c)->helm_error, sizeof(cmd_rs(c)->helm_error),
             "the worker stopped while this %s was running; helm reports the release %s%s", c->op,
             c->helm_found ? st : "absent",
             c->left_signals == 2   ? " (its helm ran past its deadline: SIGTERM, then SIGKILL)"
             : c->left_signals == 1 ? " (its helm ran past its deadline: SIGTERM)"
                                    : "");
    c->timed_out = c->left_signals != 0;
    if (strcmp(c->op, "uninstall") == 0) {
        if (!c->helm_found) {
            succeed_uninstall(c, "Uninstallation complete");
            return;
        }
        if (strcmp(st, "uninstalling") == 0) {
            /* helm was stopped mid-deletion (it has no signal handler for
             * uninstall): the deletion is finished, which was the intent. */
            cmd_log(c, LOG_LEVEL_WARN, "release stuck in uninstalling: finishing the uninstall");
            c->phase = PHASE_HELM;
            helm_simple(c, "uninstall", 0, command_timeout(c), on_operation);
            return;
        }
        outcome(c, "failed", code, "%s", cmd_rs(c)->helm_error);
        fail_with_state(c, "failed");
        return;
    }
    if (!c->helm_found || rev <= c->base_revision) {
        /* helm never completed a change: nothing happened. */
        outcome(c, "failed", code, "%s; the %s did not take effect", cmd_rs(c)->helm_error, c->op);
        rstate_t s;
        rstate_from_registry(&s, c->release);
        if (strcmp(c->op, "install") == 0) {
            rstate_from_registry(&s, NULL);
            snprintf(s.status, sizeof(s.status), "uninstalled");
        }
        conclude(c, &s, strcmp(c->op, "install") == 0);
        return;
    }
    if (strcmp(st, "deployed") == 0) {
        c->helm_failed = 0;
        succeed_from_helm(c);
        return;
    }
    if (strncmp(st, "pending-", 8) == 0) {
        /* Unlock: a pending install is removed, a pending upgrade or rollback
         * goes back to the last deployed revision. Either way it failed. */
        snprintf(c->error_code, sizeof(c->error_code), "%s", code);
        if (strcmp(st, "pending-install") == 0 || c->base_deployed <= 0) {
            history_add(c, rev, "failed", cmd_rs(c)->helm.chart_name, cmd_rs(c)->helm.chart_version,
                        cmd_rs(c)->helm.app_version, c->op,
                        "interrupted: marked failed by the worker's reconciliation", NULL, NULL);
            cmd_rs(c)->helm_error[sizeof(cmd_rs(c)->helm_error) - 1] = '\0';
            c->phase = PHASE_ROLLBACK;
            helm_simple(c, "uninstall", 0, command_timeout(c), after_atomic_uninstall);
            return;
        }
        history_add(c, rev, "failed", cmd_rs(c)->helm.chart_name, cmd_rs(c)->helm.chart_version,
                    cmd_rs(c)->helm.app_version, c->op,
                    "interrupted: marked failed by the worker's reconciliation", NULL, NULL);
        c->phase = PHASE_ROLLBACK;
        helm_simple(c, "rollback", c->base_deployed, command_timeout(c), after_atomic_rollback);
        return;
    }
    /* failed (helm got SIGTERM or failed on its own): as after a failure. */
    c->timed_out = c->left_signals != 0;
    snprintf(cmd_rs(c)->helm_error, sizeof(cmd_rs(c)->helm_error),
             "the worker stopped while this %s was running; helm marked it %s: %s", c->op, st,
             cmd_rs(c)->helm.description);
    (void)atomic;
    after_failure_status(c);
}

static void on_left_helm_timer(uv_timer_t *t);

/* Whether the left helm still runs; with sig, signals it. */
static int left_helm_alive(command_t *c, int sig) {
    if (c->left_marked) {
        char marker[128];
        helm_marker(c->id, marker, sizeof(marker));
        return helm_ops(c->ctx)->marked(marker, sig, &c->left_pgid) > 0;
    }
    if (sig)
        kill(-c->left_pgid, sig);
    return helm_group_alive(c->left_pgid);
}

/* Waits, polling every 200 ms, for the helm a crashed worker left running to
 * exit; at its deadline its group gets SIGTERM, then SIGKILL after the kill
 * grace, as if the worker had not crashed. Only then is helm asked for the
 * release's state: the orphaned helm and the reconciliation never both act. */
static void left_helm_wait(command_t *c) {
    int64_t now = now_ms();
    if (!left_helm_alive(c, 0)) {
        cmd_log(c, LOG_LEVEL_INFO, "the interrupted helm (process group %d) has exited: reconciling",
                c->left_pgid);
        helm_status(c, reconcile_status);
        return;
    }
    if (c->left_signals == 0 && now >= c->left_deadline_ms) {
        cmd_log(c, LOG_LEVEL_WARN, "the interrupted helm (process group %d) passed its deadline: SIGTERM",
                c->left_pgid);
        left_helm_alive(c, SIGTERM);
        c->left_signals = 1;
        c->left_signal_ms = now;
    } else if (c->left_signals == 1 && now >= c->left_signal_ms + c->ctx->kill_grace_ms) {
        cmd_log(c, LOG_LEVEL_WARN,
                "the interrupted helm (process group %d) still runs %d ms after SIGTERM: SIGKILL",
                c->left_pgid, c->ctx->kill_grace_ms);
        left_helm_alive(c, SIGKILL);
        c->left_signals = 2;
        c->left_signal_ms = now;
    } else if (c->left_signals == 2 && now >= c->left_signal_ms + 30000) {
        cmd_log(c, LOG_LEVEL_ERROR,
                "the interrupted helm (process group %d) survived SIGKILL for 30 s: reconciling regardless",
                c->left_pgid);
        helm_status(c, reconcile_status);
        return;
    }
    retry_later(c, 200, on_left_helm_timer);
}

static void on_left_helm_timer(uv_timer_t *t) {
    left_helm_wait(t->data);
}

/* Whether a helm process of this command still runs here: one carrying its
 * marker, or (a ledger written before the marker) the pid recorded, if that
 * is still that helm and not a reused pid. Fills c->left_*. */
static int left_helm_find(command_t *c) {
    const json_t *l = c->ledger;
    int pid = jint(l, "helm_pid"), pgid = jint(l, "helm_pgid");
    unsigned long long ticks = (unsigned long long)json_integer_value(json_object_get(l, "helm_start_ticks"));
    const char *host = jstr(l, "helm_host");
    char here[512], marker[128];
    if (!host)
        return 0; /* none recorded (an older worker's crash right after the start) */
    helm_host_id(here, sizeof(here));
    if (strcmp(host, here) != 0) {
        cmd_log(c, LOG_LEVEL_WARN,
                "its helm ran on another host or boot (%s): cannot wait for it here; reconciling", host);
        return 0;
    }
    c->left_signals = 0;
    c->left_deadline_ms = json_integer_value(json_object_get(l, "helm_deadline_ms"));
    helm_marker(c->id, marker, sizeof(marker));
    if (helm_ops(c->ctx)->marked(marker, 0, &c->left_pgid) > 0) {
        c->left_marked = 1;
        cmd_log(c, LOG_LEVEL_WARN,
                "the interrupted helm (process group %d, environment %s) still runs: waiting for it to exit "
                "before reconciling (its deadline is in %lld ms)",
                c->left_pgid, marker, (long long)(c->left_deadline_ms - now_ms()));
        return 1;
    }
    if (pgid <= 0 || !helm_group_alive(pgid))
        return 0;
    if (helm_proc_matches(pid, ticks, jstr(c->doc, "releaseName")) == 0) {
        /* pid reused (the group leader is another process now): not ours.
         * When the leader is gone but its group lives on, the group still
         * is helm's: a pid is not reused while it names a live group. */
        cmd_log(c, LOG_LEVEL_INFO, "pid %d is another process now, not its helm: not waiting for it", pid);
        return 0;
    }
    c->left_pgid = pgid;
    cmd_log(c, LOG_LEVEL_WARN,
            "the interrupted helm (pid %d, process group %d) still runs: waiting for it to exit before "
            "reconciling (its deadline is in %lld ms)",
            pid, pgid, (long long)(c->left_deadline_ms - now_ms()));
    return 1;
}

static void reconcile(command_t *c) {
    c->reconcile = 1;
    if (left_helm_find(c)) {
        c->phase = PHASE_WAIT_HELM;
        left_helm_wait(c);
        return;
    }
    helm_status(c, reconcile_status);
}

/* --- ledger steps ------------------------------------------------------------------------ */

static void on_start_timer(uv_timer_t *t);

static void on_started(void *arg, const PGresult *res, const char *err) {
    command_t *c = arg;
    if (err || PQntuples(res) != 1) {
        cmd_log(c, LOG_LEVEL_ERROR, "recording the start failed, retrying in 1 s: %s", err ? err : "no row");
        retry_later(c, 1000, on_start_timer);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        /* Another tenant's install claimed the namespace since begin read it
         * (a race between two first installs): nothing ran, nothing is ours. */
        c->release_id[0] = '\0';
        reject(c, 1, "NAMESPACE_OWNED",
               "namespace %s belongs to another tenant (claimed by a concurrent install)",
               jstr(c->doc, "namespace"));
        return;
    }
    publish_started(c);
    if (strcmp(c->op, "install") == 0 && c->ctx->helmc.impersonate)
        tenant_access_setup(c);
    else
        run_operation(c);
}

/* Records that helm is about to run; an install first claims its namespace
 * for its tenant, atomically in the ledger (see 0003's command_start). */
static void start_record(command_t *c) {
    char base[16], deployed[16], host[512], deadline[32];
    int claim = strcmp(c->op, "install") == 0;
    c->phase = PHASE_START;
    snprintf(base, sizeof(base), "%d", c->base_revision);
    snprintf(deployed, sizeof(deployed), "%d", c->base_deployed);
    /* Where helm will run and when the worker would stop it: a worker
     * reconciling the command after a crash waits for it until then. */
    helm_host_id(host, sizeof(host));
    c->recorded_deadline_ms = start_deadline_ms(c);
    snprintf(deadline, sizeof(deadline), "%lld", (long long)c->recorded_deadline_ms);
    const char *values[8] = {c->id,
                             c->release_id,
                             base,
                             deployed,
                             claim ? jstr(c->doc, "tenantId") : NULL,
                             claim ? jstr(c->doc, "namespace") : NULL,
                             host,
                             deadline};
    ledger_query(c, SQL_START, 8, values, NULL, NULL, on_started, c);
}

/* A slot first: the start is recorded only when helm can run right after. */
static void start(command_t *c) {
    pool_acquire(c, start_record);
}

static void on_start_timer(uv_timer_t *t) {
    start(t->data);
}

/* The tenant and lifecycle rules, with the registry row read at begin. */
static void decide(command_t *c) {
    const json_t *d = c->doc;
    const char *tenant = jstr(d, "tenantId"), *ns = jstr(d, "namespace"), *name = jstr(d, "releaseName");
    const char *guard = jstr(d, "releaseId");
    const json_t *rel = c->release;
    int live = rel && strcmp(jstr(rel, "status"), "uninstalled") != 0 && jint(rel, "revision") > 0;

    if (is_protected(c->ctx, ns)) {
        reject(c, 1, "PROTECTED_NAMESPACE", "namespace %s is protected: helmq never deploys into it", ns);
        return;
    }
    if (c->ns_owner[0] && strcasecmp(c->ns_owner, tenant) != 0) {
        reject(c, 1, "NAMESPACE_OWNED", "namespace %s belongs to another tenant", ns);
        return;
    }
    if (strcmp(c->op, "install") == 0) {
        if (live) {
            reject(c, 1, "RELEASE_EXISTS",
                   "release %s is live in %s (status %s, revision %d): upgrade or uninstall it", name, ns,
                   jstr(rel, "status"), jint(rel, "revision"));
            return;
        }
        if (guard && *guard)
            snprintf(c->release_id, sizeof(c->release_id), "%s", guard);
        else
            uuid_v4(c->release_id);
        c->base_revision = 0;
        c->base_deployed = 0;
        json_decref(c->release); /* a new lifecycle: nothing of the old one carries over */
        c->release = NULL;
    } else {
        if (!live) {
            reject(c, 1, "RELEASE_NOT_FOUND", "no live release %s in %s to %s", name, ns, c->op);
            return;
        }
        if (guard && *guard && strcasecmp(guard, jstr(rel, "release_id")) != 0) {
            reject(c, 1, "RELEASE_ID_MISMATCH", "releaseId %s does not match the live release %s", guard,
                   jstr(rel, "release_id"));
            return;
        }
        snprintf(c->release_id, sizeof(c->release_id), "%s", jstr(rel, "release_id"));
        c->base_revision = jint(rel, "revision");
        c->base_deployed = jint(rel, "deployed_revision");
        if (strcmp(c->op, "rollback") == 0) {
            if (c->rollback_default <= 0) {
                reject(c, 1, "REVISION_NOT_FOUND",
                       "release %s has no earlier deployed revision to roll back to", name);
                return;
            }
            if (c->rollback_default > c->base_revision) {
                reject(c, 1, "REVISION_NOT_FOUND", "release %s has no revision %d (current: %d)", name,
                       c->rollback_default, c->base_revision);
                return;
            }
        }
    }
    start(c);
}

static void on_begin_timer(uv_timer_t *t) {
    begin(t->data);
}

static json_t *field_json(const PGresult *res, int col) {
    if (PQgetisnull(res, 0, col))
        return NULL;
    return json_loads(PQgetvalue(res, 0, col), 0, NULL);
}

/* A finished command delivered again after its release moved on: its
 * recorded terminal event, republished as it is, would become the newest
 * event on the key with a state that is no longer the release's. Rewrites
 * c->event into the command's outcome (eventId, eventType, errorCode,
 * errorMessage, who and when it was asked) carrying the release's current
 * state from the registry row rel, with no history (its revisions were
 * published with the first event). The eventId stays the first terminal
 * event's: the command still has exactly one terminal event, delivered again
 * (a consumer that drops duplicates by eventId loses nothing: the events of
 * the later commands, before it on the key, carry the same state), and a
 * client waiting for the command's outcome gets it. A rejected command stays
 * rejected: its status stays "rejected". Returns 0 or -1. */
static int replay_current(command_t *c, const json_t *rel) {
    char errstr[256];
    codec_type_t type;
    json_t *ev = NULL;
    if (!rel || codec_decode(c->event, c->event_len, &type, &ev, errstr, sizeof(errstr)) != 0 ||
        type != CODEC_EVENT) {
        json_decref(ev);
        return -1;
    }
    const char *rid = jstr(rel, "release_id");
    int rejected = strcmp(jstr(ev, "eventType") ? jstr(ev, "eventType") : "", "rejected") == 0;
    json_object_set_new(ev, "occurredAt", json_integer(now_ms()));
    if (!rejected) {
        json_object_set_new(ev, "releaseId", str_or_null(rid));
        json_object_set_new(ev, "status", str_or_null(jstr(rel, "status")));
    }
    json_object_set_new(ev, "revision", json_integer(jint(rel, "revision")));
    static const char *const fields[][2] = {{"chartName", "chart_name"},
                                            {"chartVersion", "chart_version"},
                                            {"appVersion", "app_version"},
                                            {"description", "description"},
                                            {"reason", "reason"},
                                            {"valuesDigest", "values_digest"},
                                            {"valuesRedacted", "values_redacted"}};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        json_object_set_new(ev, fields[i][0], str_or_null(jstr(rel, fields[i][1])));
    json_object_set_new(ev, "history", json_array());
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = codec_encode(CODEC_EVENT, ev, &buf, &len, errstr, sizeof(errstr));
    json_decref(ev);
    if (rc < 0) {
        cmd_log(c, LOG_LEVEL_ERROR, "cannot encode its outcome with the current state: %s", errstr);
        return -1;
    }
    free(c->event);
    c->event = buf;
    c->event_len = len;
    return 0;
}

static void on_begin(void *arg, const PGresult *res, const char *err) {
    command_t *c = arg;
    if (err || PQntuples(res) != 1) {
        cmd_log(c, LOG_LEVEL_ERROR, "recording the command failed, retrying in 1 s: %s",
                err ? err : "no row");
        c->lock_holds_unsure = 1; /* it may have taken the lock before failing */
        retry_later(c, 1000, on_begin_timer);
        return;
    }
    const char *state = PQgetvalue(res, 0, 0);
    if (c->ctx->host.undone_runs(c->ctx->host.ctx, key_name(c)) > 0)
        c->lock_holds_unsure = 1; /* a rolled-back run took the lock too */
    if (strcmp(state, "conflict") == 0) {
        /* Nothing of the command that owns the commandId is told: not its
         * key, tenant or outcome. */
        snprintf(c->event_kind, sizeof(c->event_kind), "conflict/%.64s", c->digest);
        reject(c, 0, "IDEMPOTENCY_CONFLICT",
               "commandId %s belongs to another command (a command's identity is its content: a retry must "
               "resend the same command, only requestedAt may differ); use a new commandId",
               c->id);
        return;
    }
    if (strcmp(state, "finished") == 0) {
        size_t n = 0;
        unsigned char *ev = PQunescapeBytea((const unsigned char *)PQgetvalue(res, 0, 1), &n);
        c->event = malloc(n ? n : 1);
        memcpy(c->event, ev, n);
        c->event_len = n;
        PQfreemem(ev);
        if (strcmp(PQgetvalue(res, 0, 6), "t") != 0) {
            cmd_log(c, LOG_LEVEL_INFO,
                    "already finished: republishing its recorded outcome, running no helm");
            publish_terminal(c);
            return;
        }
        json_t *rel = field_json(res, 2);
        int rc = replay_current(c, rel);
        json_decref(rel);
        if (rc < 0) {
            /* Its old event would be a stale newest state: say nothing. */
            cmd_log(c, LOG_LEVEL_ERROR,
                    "already finished, its release has moved on, and its outcome cannot "
                    "be rebuilt: publishing nothing");
            command_done(c);
            return;
        }
        cmd_log(c, LOG_LEVEL_INFO,
                "already finished, and its release has moved on since: publishing its recorded outcome with "
                "the release's current state, running no helm");
        publish_terminal(c);
        return;
    }
    if (strcmp(state, "locked") == 0) {
        if (c->lock_waits++ % 20 == 0)
            cmd_log(c, LOG_LEVEL_INFO, "release key held by another worker; waiting");
        retry_later(c, 500, on_begin_timer);
        return;
    }
    json_decref(c->release);
    json_decref(c->ledger);
    c->release = field_json(res, 2);
    snprintf(c->ns_owner, sizeof(c->ns_owner), "%s", PQgetisnull(res, 0, 3) ? "" : PQgetvalue(res, 0, 3));
    /* The ledger row only matters to a command interrupted by a crash. */
    c->ledger = strcmp(state, "running") == 0 ? field_json(res, 4) : NULL;
    json_t *target = field_json(res, 5);
    c->rollback_default = target ? jint(target, "revision") : 0;
    free(c->rollback_digest);
    free(c->rollback_redacted);
    c->rollback_digest = c->rollback_redacted = NULL;
    if (target && jstr(target, "values_digest")) {
        c->rollback_digest = strdup(jstr(target, "values_digest"));
        c->rollback_redacted =
            jstr(target, "values_redacted") ? strdup(jstr(target, "values_redacted")) : NULL;
    }
    json_decref(target);
    const json_t *given = json_object_get(c->doc, "revision");
    if (strcmp(c->op, "rollback") == 0 && json_is_integer(given))
        c->rollback_default = (int)json_integer_value(given);
    if (strcmp(state, "running") == 0) {
        /* Interrupted by a crash: the lock is ours, so its worker is gone. */
        snprintf(c->release_id, sizeof(c->release_id), "%s",
                 jstr(c->ledger, "release_id") ? jstr(c->ledger, "release_id") : "");
        c->base_revision = jint(c->ledger, "base_revision");
        c->base_deployed = jint(c->ledger, "base_deployed");
        if (strcmp(c->op, "install") == 0) {
            json_decref(c->release);
            c->release = NULL;
        }
        reconcile(c);
        return;
    }
    decide(c);
}

static void begin(command_t *c) {
    char partition[16], offset[32], rollback_to[16];
    c->phase = PHASE_BEGIN;
    snprintf(partition, sizeof(partition), "%d", (int)c->partition);
    snprintf(offset, sizeof(offset), "%lld", (long long)c->offset);
    const json_t *rev = json_object_get(c->doc, "revision");
    snprintf(rollback_to, sizeof(rollback_to), "%d", json_is_integer(rev) ? (int)json_integer_value(rev) : 0);
    const char *values[9] = {c->id,
                             key_name(c),
                             c->op,
                             jstr(c->doc, "namespace"),
                             c->ctx->commands_topic,
                             partition,
                             offset,
                             json_is_integer(rev) ? rollback_to : NULL,
                             c->digest};
    ledger_query(c, SQL_BEGIN, 9, values, NULL, NULL, on_begin, c);
}

/* --- DLQ --------------------------------------------------------------------------------- */

static void on_dlq_delivered(command_t *c, rd_kafka_resp_err_t err) {
    c->ctx->counters.dlq++;
    cmd_log(c, LOG_LEVEL_INFO, "sent to %s unchanged (%s)", c->ctx->dlq_topic, c->dlq_reason);
    command_done(c);
}

static void send_to_dlq(command_t *c) {
    char buf[32];
    rd_kafka_headers_t *h = rd_kafka_headers_new(5);
    rd_kafka_header_add(h, "helmq.error", -1, c->dlq_reason, -1);
    rd_kafka_header_add(h, "helmq.error.message", -1, c->dlq_error, -1);
    rd_kafka_header_add(h, "helmq.source.topic", -1, c->ctx->commands_topic, -1);
    snprintf(buf, sizeof(buf), "%d", (int)c->partition);
    rd_kafka_header_add(h, "helmq.source.partition", -1, buf, -1);
    snprintf(buf, sizeof(buf), "%lld", (long long)c->offset);
    rd_kafka_header_add(h, "helmq.source.offset", -1, buf, -1);
    c->phase = PHASE_PUBLISH;
    c->ctx->host.produce(c->ctx->host.ctx, c->ctx->dlq_topic, c, c->kafka_key, c->kafka_key_len, c->raw,
                         c->raw_len, h, on_dlq_delivered);
}

/* --- entry points ------------------------------------------------------------------------- */

/* Whether the record's key is the command's own, tenantId/namespace/
 * releaseName: byte for byte, but the tenant's UUID in any case (the
 * command's was lowered, cmddoc_canonical_ids). */
static int key_matches(const command_t *c) {
    const char *own = key_name(c);
    size_t n = strlen(own), t = strcspn(own, "/");
    return c->kafka_key && c->kafka_key_len == n && strncasecmp(c->kafka_key, own, t) == 0 &&
           memcmp(c->kafka_key + t, own + t, n - t) == 0;
}

/* A command whose record key disagrees with its fields: the producer
 * partitioned it as another release (or by nothing), so it may be out of
 * order with that release's commands; never run. Answered under the record
 * key: in order with what that producer sent on that key, and without adding
 * an event to the release's own key (whose newest event must stay its
 * state). Its event id is its own (kind key-mismatch/KEY-DIGEST), not the
 * one the well-keyed command would get. */
static void reject_key_mismatch(command_t *c) {
    char shown[600], key_digest[65];
    int cut = 0;
    log_escape(shown, sizeof(shown), c->kafka_key ? c->kafka_key : "", c->kafka_key_len, &cut);
    sha256_hex(c->kafka_key ? c->kafka_key : "", c->kafka_key_len, key_digest);
    snprintf(c->event_kind, sizeof(c->event_kind), "key-mismatch/%.64s", key_digest);
    c->key_mismatch = 1;
    reject(c, 0, "KEY_MISMATCH",
           "the record key %s%s%s%s is not the command's tenantId/namespace/releaseName %s: producers key a "
           "command by its release",
           c->kafka_key ? "\"" : "(none)", shown, cut ? "..." : "", c->kafka_key ? "\"" : "", key_name(c));
}

void command_run(command_t *c) {
    validate_error_t verr;
    if (c->dlq_error) {
        send_to_dlq(c);
        return;
    }
    if (validate_command(c->doc, &verr) < 0) {
        char field[VALIDATE_FIELD_TEXT_SIZE];
        reject(c, 0, "INVALID_FIELD", "invalid %s (rule %s): %s",
               verr.whole ? "command" : validate_field_text(&verr, field, sizeof(field)), verr.rule,
               verr.message);
        return;
    }
    if (!key_matches(c)) {
        reject_key_mismatch(c);
        return;
    }
    if (cmddoc_digest(c->doc, c->digest) < 0)
        abort(); /* out of memory */
    begin(c);
}

const char *const command_outcome_names[COMMAND_OUTCOMES] = {"succeeded", "failed", "rolled_back", "rejected",
                                                             "republished"};
const double command_helm_bucket_le[COMMAND_HELM_BUCKETS] = {0.1, 0.5, 1, 5, 30, 120, 600, -1};
const command_helm_ops_t command_helm_default = {
    .start = helm_run_start, .signal = helm_run_signal, .free = helm_run_free, .marked = helm_marked};

command_t *command_new(command_ctx_t *ctx, int64_t offset) {
    command_t *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->ctx = ctx;
    c->offset = offset;
    c->partition = -1;
    uv_timer_init(ctx->loop, &c->timer);
    c->timer.data = c;
    c->values_fd = -1;
    return c;
}

void command_signal_helm(command_t *c, int sig) {
    if (c->run)
        helm_ops(c->ctx)->signal(c->run, sig);
}

void command_ctx_free(command_ctx_t *ctx) {
    while (ctx->ns_setups) {
        ns_setup_t *next = ctx->ns_setups->next;
        free(ctx->ns_setups->waiters);
        free(ctx->ns_setups);
        ctx->ns_setups = next;
    }
}

static void command_closed(uv_handle_t *h) {
    command_t *c = h->data;
    free(c);
}

void command_free(command_t *c) {
    if (!c)
        return;
    if (c->run) {
        /* Only at exit: the helm process is left to be reconciled later. */
        c->run->done = NULL;
        helm_ops(c->ctx)->free(c->run);
        c->run = NULL;
    }
    helm_argv_free(&c->helm_argv); /* a step still waiting for the pool (at exit) */
    values_release(c);
    free(c->kafka_key);
    free(c->raw);
    free(c->dlq_error);
    free(c->dlq_reason);
    json_decref(c->doc);
    free(c->rollback_digest);
    free(c->rollback_redacted);
    json_decref(c->release);
    json_decref(c->ledger);
    json_decref(c->new_release);
    json_decref(c->history);
    if (c->rs)
        helm_release_clear(&c->rs->helm);
    free(c->rs);
    free(c->event);
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, command_closed);
}
