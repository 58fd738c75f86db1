/* Before an install: the namespace's tenant set-up (tenant_access.h), run
 * once at a time per namespace with the worker's own identity, trusted for
 * a minute, retried while another worker's set-up is in progress, and
 * unlocked when an interrupted set-up left it pending-*. */
#include "command_internal.h"

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
void cmd_ns_setup_forget(command_t *c) {
    if (c->ctx->helmc.impersonate && jstr(c->doc, "namespace"))
        ns_setup_of(c->ctx, jstr(c->doc, "namespace"))->ok_until = 0;
}

static void tenant_access_failed(command_t *c, const char *error) {
    cmd_log(c, LOG_LEVEL_ERROR, "setting up namespace %s for the tenant failed: %s",
            jstr(c->doc, "namespace"), error);
    /* an unreachable cluster is said as such; any other cause is the set-up's */
    const char *code = strcmp(helm_failure_code(error), "CLUSTER_UNAVAILABLE") == 0 ? "CLUSTER_UNAVAILABLE"
                                                                                    : "TENANT_ACCESS_FAILED";
    cmd_outcome(
        c, "failed", code,
        "the worker could not set up namespace %s for the tenant (release %s): %s; the install did not run",
        jstr(c->doc, "namespace"), TENANT_ACCESS_RELEASE, error);
    rstate_t s;
    cmd_rstate_from_registry(&s, NULL);
    snprintf(s.status, sizeof(s.status), "uninstalled");
    cmd_conclude(c, &s, 1);
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
        c->setup_then(c);
    for (size_t i = 0; i < n; i++) {
        if (error)
            tenant_access_failed(waiters[i], error);
        else
            waiters[i]->setup_then(waiters[i]);
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
    cmd_helm_step(c, &a, 60, on_tenant_access_unlocked);
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
            cmd_helm_step(c, &a, 60, tenant_access_unlock);
            return;
        }
        cmd_retry_later(c, 2000, on_tenant_access_timer);
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
    cmd_helm_step(c, &a, 60, on_tenant_access);
}

/* Before an install: the namespace's set-up, once at a time per namespace,
 * skipped while a recent one is trusted. */
void cmd_tenant_access_setup(command_t *c, void (*then)(command_t *c)) {
    c->setup_then = then;
    ns_setup_t *s = ns_setup_of(c->ctx, jstr(c->doc, "namespace"));
    if (s->ok_until > (uint64_t)now_ms()) {
        then(c);
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
