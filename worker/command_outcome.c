/* A command's outcome: the release state it leaves (from the registry and
 * from helm), its history of revisions, the terminal event built from them,
 * the ledger's record of the outcome (command_finish) and the event's
 * publication; the rejections, the success paths, and the rewrite of a
 * finished command's recorded event when it is delivered again
 * (cmd_replay_current). Every command ends here, in cmd_done. */
#include "command_internal.h"

static const char SQL_FINISH[] =
    "SELECT helmq_worker.command_finish($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

/* --- history --------------------------------------------------------------- */

/* Appends a revision this command created or changed. */
void cmd_history_add(command_t *c, int revision, const char *status, const char *chart, const char *version,
                     const char *app, const char *operation, const char *description, const char *digest,
                     const char *redacted) {
    if (!c->history)
        c->history = json_array();
    json_array_append_new(
        c->history, json_pack("{s:i,s:s,s:s,s:s,s:s?,s:s,s:s?,s:I,s:s?,s:s?}", "revision", revision, "status",
                              status, "chartName", chart ? chart : "", "chartVersion", version ? version : "",
                              "appVersion", app && *app ? app : NULL, "operation", operation, "description",
                              description && *description ? description : NULL, "createdAt",
                              (json_int_t)now_ms(), "valuesDigest", digest, "valuesRedacted", redacted));
}

static void finish(command_t *c);

/* The tenant's counts (see command_tenant_counts_t): its slot, a new one
 * while fewer than max tenants have one, else "other". */
static command_tenant_count_t *tenant_count(command_tenant_counts_t *t, const char *tenant) {
    if (!tenant || !uuid_valid(tenant) || t->max == 0)
        return &t->other;
    if (!t->slots) {
        size_t cap = 16;
        while (cap < 2 * t->max)
            cap *= 2;
        t->slots = calloc(cap, sizeof(*t->slots));
        if (!t->slots)
            return &t->other;
        t->cap = cap;
    }
    char id[UUID_STR_LEN];
    snprintf(id, sizeof(id), "%s", tenant);
    uuid_lower(id);
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    for (size_t i = h & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        command_tenant_count_t *s = &t->slots[i];
        if (strcmp(s->tenant, id) == 0)
            return s;
        if (!s->tenant[0]) {
            if (t->n >= t->max)
                return &t->other;
            memcpy(s->tenant, id, sizeof(id));
            t->n++;
            return s;
        }
    }
}

static void cmd_count_outcome(command_t *c) {
    command_ctx_t *x = c->ctx;
    int i = COMMAND_OUTCOMES - 1;
    for (int k = 0; k < COMMAND_OUTCOMES - 1 && c->event_type; k++)
        if (strcmp(c->event_type, command_outcome_names[k]) == 0)
            i = k;
    x->counters.outcome[i]++;
    if (i < COMMAND_TENANT_OUTCOMES)
        tenant_count(&x->tenants, c->doc ? jstr(c->doc, "tenantId") : NULL)->outcome[i]++;
}

/* The command is over (its outcome published, or nothing can be said):
 * its slot goes to the next waiting command, the dispatcher takes over. */
void cmd_done(command_t *c) {
    cmd_pool_release(c);
    c->ctx->host.done(c->ctx->host.ctx, c);
}

/* --- the terminal event and the registry ------------------------------------ */

void cmd_rstate_from_registry(rstate_t *s, const json_t *rel) {
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
void cmd_rstate_from_helm(rstate_t *s, command_t *c) {
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
         * failure) the registry's, loaded by cmd_rstate_from_registry, stand. */
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
    cmd_count_outcome(c);
    cmd_done(c);
}

/* The terminal event goes out under the command's key, so that it follows
 * the release's other events on their partition; a command whose record key
 * is not its own is answered under the record key (see KEY_MISMATCH). */
void cmd_publish_terminal(command_t *c) {
    c->phase = PHASE_PUBLISH;
    if (c->key_mismatch)
        c->ctx->host.produce(c->ctx->host.ctx, c->ctx->events_topic, c, c->kafka_key, c->kafka_key_len,
                             c->event, c->event_len, NULL, on_terminal_delivered);
    else
        c->ctx->host.produce(c->ctx->host.ctx, c->ctx->events_topic, c, key_name(c), strlen(key_name(c)),
                             c->event, c->event_len, NULL, on_terminal_delivered);
}

void cmd_publish_started(command_t *c) {
    char eid[UUID_STR_LEN], errstr[256];
    rstate_t s;
    cmd_rstate_from_registry(&s, c->release);
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
        cmd_retry_later(c, 1000, on_finish_timer);
        return;
    }
    cmd_publish_terminal(c);
}

/* Records the outcome (ledger + registry, one transaction) and publishes. */
static void finish(command_t *c) {
    cmd_pool_release(c); /* rejected after its start was recorded: helm never ran */
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
    cmd_ledger_query(c, SQL_FINISH, 10, values, lengths, formats, on_finished, c);
    free(release);
    free(revisions);
}

/* Ends the command with the release state s (changed: the registry moves). */
void cmd_conclude(command_t *c, rstate_t *s, int changed) {
    if (build_outcome(c, s, changed) < 0) {
        /* An event that does not encode is a bug; say so and carry on. */
        cmd_outcome(c, "failed", "INTERNAL", "the worker could not encode the event");
        build_outcome(c, s, 0);
    }
    free(s->redacted);
    s->redacted = NULL;
    finish(c);
}

/* A command refused before anything ran. */

void cmd_reject(command_t *c, int recorded, const char *code, const char *fmt, ...) {
    rstate_t s;
    va_list ap;
    c->event_type = "rejected";
    snprintf(c->error_code, sizeof(c->error_code), "%s", code);
    va_start(ap, fmt);
    vsnprintf(cmd_rs(c)->error_message, sizeof(cmd_rs(c)->error_message), fmt, ap);
    va_end(ap);
    cmd_rstate_from_registry(&s, c->release);
    if (!c->release)
        s.status[0] = '\0';
    cmd_log(c, LOG_LEVEL_WARN, "rejected %s: %s", code, cmd_rs(c)->error_message);
    if (build_outcome(c, &s, 0) < 0) {
        free(s.redacted);
        cmd_done(c); /* nothing can be said about it */
        return;
    }
    free(s.redacted);
    if (recorded)
        finish(c);
    else
        cmd_publish_terminal(c); /* invalid: deterministic, nothing to record */
}

json_t *cmd_field_json(const PGresult *res, int col) {
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
int cmd_replay_current(command_t *c, const json_t *rel) {
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

/* --- success ---------------------------------------------------------------------- */

void cmd_succeed_from_helm(command_t *c) {
    rstate_t s;
    cmd_rstate_from_registry(&s, c->release);
    if (!c->helm_found) {
        /* helm said it succeeded but cannot show the release: report what is known. */
        s.revision = c->base_revision + 1;
        snprintf(s.status, sizeof(s.status), "deployed");
    } else {
        cmd_rstate_from_helm(&s, c);
    }
    const char *doc_desc = jstr(c->doc, "description");
    if (doc_desc && *doc_desc && strcmp(c->op, "rollback") != 0)
        snprintf(s.description, sizeof(s.description), "%s", doc_desc);
    s.reason[0] = '\0';
    cmd_history_add(c, s.revision, s.status, s.chart, s.version, s.app, c->op, s.description, s.digest,
                    s.redacted);
    if (strcmp(c->op, "install") == 0)
        c->claim_namespace = 1;
    cmd_outcome(c, "succeeded", NULL, NULL);
    cmd_conclude(c, &s, 1);
}

void cmd_succeed_uninstall(command_t *c, const char *description) {
    rstate_t s;
    cmd_rstate_from_registry(&s, c->release);
    const char *reason = jstr(c->doc, "reason");
    const char *doc_desc = jstr(c->doc, "description");
    s.revision = c->base_revision + 1; /* the uninstall is a change: it gets its revision */
    s.deployed = 0;
    snprintf(s.status, sizeof(s.status), "uninstalled");
    snprintf(s.description, sizeof(s.description), "%s", doc_desc && *doc_desc ? doc_desc : description);
    snprintf(s.reason, sizeof(s.reason), "%s", reason ? reason : "");
    cmd_history_add(c, s.revision, "uninstalled", s.chart, s.version, s.app, "uninstall", s.description,
                    s.digest, s.redacted);
    cmd_outcome(c, "succeeded", NULL, NULL);
    cmd_conclude(c, &s, 1);
}
