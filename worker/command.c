/* One command's way through the worker: validate, record in the ledger and
 * lock its release key, apply the tenant and lifecycle rules, run helm with
 * its timeout, roll back atomically on failure, record the outcome with the
 * registry it implies, publish exactly one terminal event.
 *
 * This file holds the entry points and the normal path (begin, the rules,
 * start, the operation); its siblings hold the rest (command_internal.h).
 * Every step is a callback on the loop: a ledger call, a helm process or a
 * delivery report, all through the host (command.h). A command redelivered after
 * it finished runs no helm: it republishes its recorded terminal event (the
 * same eventId), with the release's current state once the release has moved
 * on (cmd_replay_current); one interrupted by a crash (ledger state "running") is
 * reconciled against helm's own record of the release. A commandId is one
 * command: other content under it is refused (IDEMPOTENCY_CONFLICT), and so
 * is a record whose key is not its command's (KEY_MISMATCH). */
#include "command_internal.h"

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

static const char SQL_BEGIN[] =
    "SELECT state, terminal_event, release, namespace_owner, command, rollback_target, moved_on "
    "FROM helmq_worker.command_begin($1, $2, $3, $4, $5, $6, $7, $8, $9)";
static const char SQL_START[] =
    "SELECT started, owner_tenant FROM helmq_worker.command_start($1, $2, $3, $4, $5, $6, $7, $8)";

static void begin(command_t *c);
static void run_operation(command_t *c);
static void on_operation(command_t *c, helm_run_t *run);

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
            cmd_succeed_uninstall(c, "Uninstallation complete");
            return;
        }
        if (strcmp(c->op, "rollback") == 0) {
            cmd_helm_status(c, cmd_succeed_from_helm);
            return;
        }
        helm_release_clear(&cmd_rs(c)->helm);
        c->helm_found = helm_release_parse(run->out, &cmd_rs(c)->helm) == 0;
        if (!c->helm_found)
            cmd_helm_status(c, cmd_succeed_from_helm);
        else
            cmd_succeed_from_helm(c);
        return;
    }
    c->helm_failed = 1;
    if (strcmp(c->op, "install") == 0)
        cmd_ns_setup_forget(c);
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
        cmd_reject(c, 1, "RELEASE_EXISTS",
                   "release %s already exists in namespace %s, not created by this command: %s",
                   jstr(c->doc, "releaseName"), jstr(c->doc, "namespace"), cmd_rs(c)->helm_error);
        return;
    }
    if (!c->unlock_tried && strstr(cmd_rs(c)->helm_error, IN_PROGRESS_TEXT)) {
        c->unlock_tried = 1;
        cmd_helm_status(c, cmd_unlock_status);
        return;
    }
    if (strcmp(c->op, "uninstall") == 0 && strstr(cmd_rs(c)->helm_error, "not found")) {
        /* Already gone from the cluster: the uninstall's goal holds. */
        cmd_succeed_uninstall(c, "Uninstallation complete (the release was already gone)");
        return;
    }
    cmd_after_failure(c);
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
            cmd_retry_later(c, 1000, on_run_timer);
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
    cmd_helm_step(c, &a, command_timeout(c), on_operation);
}

/* --- ledger steps ------------------------------------------------------------------------ */

static void on_start_timer(uv_timer_t *t);

static void on_started(void *arg, const PGresult *res, const char *err) {
    command_t *c = arg;
    if (err || PQntuples(res) != 1) {
        cmd_log(c, LOG_LEVEL_ERROR, "recording the start failed, retrying in 1 s: %s", err ? err : "no row");
        cmd_retry_later(c, 1000, on_start_timer);
        return;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") != 0) {
        /* Another tenant's install claimed the namespace since begin read it
         * (a race between two first installs): nothing ran, nothing is ours. */
        c->release_id[0] = '\0';
        cmd_reject(c, 1, "NAMESPACE_OWNED",
                   "namespace %s belongs to another tenant (claimed by a concurrent install)",
                   jstr(c->doc, "namespace"));
        return;
    }
    cmd_publish_started(c);
    if (strcmp(c->op, "install") == 0 && c->ctx->helmc.impersonate)
        cmd_tenant_access_setup(c, run_operation);
    else
        run_operation(c);
}

/* The deadline the start records for the operation's helm: it starts right
 * after (see helm_launch). */
static int64_t start_deadline_ms(const command_t *c) {
    return now_ms() + command_timeout(c) * 1000 + c->ctx->timeout_grace_ms;
}

/* Records that helm is about to run; an install first claims its namespace
 * for its tenant, atomically in the ledger (see helmq_worker.command_start). */
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
    cmd_ledger_query(c, SQL_START, 8, values, NULL, NULL, on_started, c);
}

/* A slot first: the start is recorded only when helm can run right after. */
static void start(command_t *c) {
    cmd_pool_acquire(c, start_record);
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
        cmd_reject(c, 1, "PROTECTED_NAMESPACE", "namespace %s is protected: helmq never deploys into it", ns);
        return;
    }
    if (c->ns_owner[0] && strcasecmp(c->ns_owner, tenant) != 0) {
        cmd_reject(c, 1, "NAMESPACE_OWNED", "namespace %s belongs to another tenant", ns);
        return;
    }
    if (strcmp(c->op, "install") == 0) {
        if (live) {
            cmd_reject(c, 1, "RELEASE_EXISTS",
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
            cmd_reject(c, 1, "RELEASE_NOT_FOUND", "no live release %s in %s to %s", name, ns, c->op);
            return;
        }
        if (guard && *guard && strcasecmp(guard, jstr(rel, "release_id")) != 0) {
            cmd_reject(c, 1, "RELEASE_ID_MISMATCH", "releaseId %s does not match the live release %s", guard,
                       jstr(rel, "release_id"));
            return;
        }
        snprintf(c->release_id, sizeof(c->release_id), "%s", jstr(rel, "release_id"));
        c->base_revision = jint(rel, "revision");
        c->base_deployed = jint(rel, "deployed_revision");
        if (strcmp(c->op, "rollback") == 0) {
            if (c->rollback_default <= 0) {
                cmd_reject(c, 1, "REVISION_NOT_FOUND",
                           "release %s has no earlier deployed revision to roll back to", name);
                return;
            }
            if (c->rollback_default > c->base_revision) {
                cmd_reject(c, 1, "REVISION_NOT_FOUND", "release %s has no revision %d (current: %d)", name,
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

static void on_begin(void *arg, const PGresult *res, const char *err) {
    command_t *c = arg;
    if (err || PQntuples(res) != 1) {
        cmd_log(c, LOG_LEVEL_ERROR, "recording the command failed, retrying in 1 s: %s",
                err ? err : "no row");
        c->lock_holds_unsure = 1; /* it may have taken the lock before failing */
        cmd_retry_later(c, 1000, on_begin_timer);
        return;
    }
    const char *state = PQgetvalue(res, 0, 0);
    if (c->ctx->host.undone_runs(c->ctx->host.ctx, key_name(c)) > 0)
        c->lock_holds_unsure = 1; /* a rolled-back run took the lock too */
    if (strcmp(state, "conflict") == 0) {
        /* Nothing of the command that owns the commandId is told: not its
         * key, tenant or outcome. */
        snprintf(c->event_kind, sizeof(c->event_kind), "conflict/%.64s", c->digest);
        cmd_reject(
            c, 0, "IDEMPOTENCY_CONFLICT",
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
            cmd_publish_terminal(c);
            return;
        }
        json_t *rel = cmd_field_json(res, 2);
        int rc = cmd_replay_current(c, rel);
        json_decref(rel);
        if (rc < 0) {
            /* Its old event would be a stale newest state: say nothing. */
            cmd_log(c, LOG_LEVEL_ERROR,
                    "already finished, its release has moved on, and its outcome cannot "
                    "be rebuilt: publishing nothing");
            cmd_done(c);
            return;
        }
        cmd_log(c, LOG_LEVEL_INFO,
                "already finished, and its release has moved on since: publishing its recorded outcome with "
                "the release's current state, running no helm");
        cmd_publish_terminal(c);
        return;
    }
    if (strcmp(state, "locked") == 0) {
        if (c->lock_waits++ % 20 == 0)
            cmd_log(c, LOG_LEVEL_INFO, "release key held by another worker; waiting");
        cmd_retry_later(c, 500, on_begin_timer);
        return;
    }
    json_decref(c->release);
    json_decref(c->ledger);
    c->release = cmd_field_json(res, 2);
    snprintf(c->ns_owner, sizeof(c->ns_owner), "%s", PQgetisnull(res, 0, 3) ? "" : PQgetvalue(res, 0, 3));
    /* The ledger row only matters to a command interrupted by a crash. */
    c->ledger = strcmp(state, "running") == 0 ? cmd_field_json(res, 4) : NULL;
    json_t *target = cmd_field_json(res, 5);
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
        cmd_reconcile(c);
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
    cmd_ledger_query(c, SQL_BEGIN, 9, values, NULL, NULL, on_begin, c);
}

/* --- DLQ --------------------------------------------------------------------------------- */

static void on_dlq_delivered(command_t *c, rd_kafka_resp_err_t err) {
    c->ctx->counters.dlq++;
    cmd_log(c, LOG_LEVEL_INFO, "sent to %s unchanged (%s)", c->ctx->dlq_topic, c->dlq_reason);
    cmd_done(c);
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
    cmd_reject(
        c, 0, "KEY_MISMATCH",
        "the record key %s%s%s%s is not the command's tenantId/namespace/releaseName %s: producers key a "
        "command by its release",
        c->kafka_key ? "\"" : "(none)", shown, cut ? "..." : "", c->kafka_key ? "\"" : "", key_name(c));
}

void command_run(command_t *c) {
    validate_error_t verr;
    c->op_run = run_operation;
    c->op_end = on_operation;
    if (c->dlq_error) {
        send_to_dlq(c);
        return;
    }
    if (validate_command(c->doc, &verr) < 0) {
        char field[VALIDATE_FIELD_TEXT_SIZE];
        cmd_reject(c, 0, "INVALID_FIELD", "invalid %s (rule %s): %s",
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
    free(ctx->tenants.slots);
    ctx->tenants.slots = NULL;
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
