/* A command's failure paths: after a failed helm operation, the atomic
 * rollback (uninstall of a failed install, rollback of a failed upgrade) and
 * the clean-up of a revision helm left pending-*; the unlocking of a stale
 * pending-* release before the operation runs again; and the reconciliation
 * of a command a crashed worker left running, after waiting for the helm it
 * left behind. */
#include "command_internal.h"

/* --- failure and atomic rollback --------------------------------------------------- */

static void fail_with_state(command_t *c, const char *event_type) {
    rstate_t s;
    cmd_rstate_from_registry(&s, c->release);
    if (c->helm_found)
        cmd_rstate_from_helm(&s, c);
    else if (strcmp(c->op, "install") == 0)
        snprintf(s.status, sizeof(s.status), "failed"), s.revision = 0;
    (void)event_type;
    cmd_conclude(c, &s, 1);
}

static void after_atomic_uninstall(command_t *c, helm_run_t *run) {
    char e[1024];
    if (run->exit_status != 0 && !strstr(run->err, "not found")) {
        cmd_outcome(c, "failed", c->error_code, "%s; the atomic rollback (uninstall) failed too: %s",
                    cmd_rs(c)->helm_error, helm_error_text(run, e, sizeof(e)));
        c->helm_found = 0;
        rstate_t s;
        cmd_rstate_from_registry(&s, c->release);
        snprintf(s.status, sizeof(s.status), "failed");
        s.revision = s.revision ? s.revision : 1;
        cmd_conclude(c, &s, 1);
        return;
    }
    rstate_t s;
    cmd_rstate_from_registry(&s, NULL);
    int failed_rev = c->helm_found ? cmd_rs(c)->helm.revision : 0;
    if (c->helm_found)
        cmd_rstate_from_helm(&s, c);
    s.revision = failed_rev + 1;
    s.deployed = 0;
    snprintf(s.status, sizeof(s.status), "uninstalled");
    snprintf(s.description, sizeof(s.description), "atomic rollback: the failed install was uninstalled");
    snprintf(s.reason, sizeof(s.reason), "atomic rollback after a failed install");
    cmd_history_add(c, s.revision, "uninstalled", s.chart, s.version, s.app, "atomic-rollback", s.description,
                    s.digest, s.redacted);
    /* A reconciliation that had to remove a stale pending install of a
     * non-atomic command reports it failed; the atomic rollback is rolled_back. */
    cmd_outcome(c, json_is_true(json_object_get(c->doc, "atomic")) ? "rolled_back" : "failed", c->error_code,
                "%s", cmd_rs(c)->helm_error);
    cmd_conclude(c, &s, 1);
}

static void after_atomic_rollback_status(command_t *c) {
    rstate_t s;
    cmd_rstate_from_registry(&s, c->release);
    if (c->helm_found)
        cmd_rstate_from_helm(&s, c);
    if (c->helm_found && strcmp(cmd_rs(c)->helm.status, "deployed") == 0) {
        cmd_history_add(c, s.revision, s.status, s.chart, s.version, s.app, "atomic-rollback", s.description,
                        s.digest, s.redacted);
        cmd_outcome(c, "rolled_back", c->error_code, "%s", cmd_rs(c)->helm_error);
    } else {
        cmd_outcome(c, "failed", c->error_code, "%s; the atomic rollback did not leave a deployed release",
                    cmd_rs(c)->helm_error);
    }
    cmd_conclude(c, &s, 1);
}

static void after_atomic_rollback(command_t *c, helm_run_t *run) {
    char e[1024];
    if (run->exit_status != 0) {
        char first[1024];
        snprintf(first, sizeof(first), "%s", cmd_rs(c)->helm_error);
        snprintf(cmd_rs(c)->helm_error, sizeof(cmd_rs(c)->helm_error),
                 "%s; the atomic rollback failed too: %s", first, helm_error_text(run, e, sizeof(e)));
    }
    cmd_helm_status(c, after_atomic_rollback_status);
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
    cmd_outcome(c, "failed", code, "%s", cmd_rs(c)->helm_error);
    if (c->helm_found) {
        rstate_t s;
        cmd_rstate_from_registry(&s, c->release);
        cmd_rstate_from_helm(&s, c);
        if (stuck)
            cmd_history_add(
                c, s.revision, "failed", s.chart, s.version, s.app, c->op,
                "failed; helm left it pending (it could not record the failure): marked failed by the "
                "worker",
                s.digest, s.redacted);
        else if (s.revision > c->base_revision)
            cmd_history_add(c, s.revision, s.status, s.chart, s.version, s.app, c->op, s.description,
                            s.digest, s.redacted);
        free(s.redacted);
    }
    if (stuck && !atomic && strcmp(c->op, "uninstall") != 0) {
        c->phase = PHASE_ROLLBACK;
        if (strcmp(cmd_rs(c)->helm.status, "pending-install") == 0 || c->base_deployed <= 0) {
            cmd_log(c, LOG_LEVEL_WARN, "%s failed (%s) and helm left the release %s: uninstalling it", c->op,
                    code, cmd_rs(c)->helm.status);
            cmd_helm_simple(c, "uninstall", 0, command_timeout(c), after_atomic_uninstall);
        } else {
            cmd_log(c, LOG_LEVEL_WARN,
                    "%s failed (%s) and helm left the release %s: rolling back to revision %d", c->op, code,
                    cmd_rs(c)->helm.status, c->base_deployed);
            cmd_helm_simple(c, "rollback", c->base_deployed, command_timeout(c), after_atomic_rollback);
        }
        return;
    }
    if (atomic && strcmp(c->op, "install") == 0) {
        if (!c->helm_found) {
            /* Nothing was created: nothing to undo. */
            cmd_outcome(c, "rolled_back", code, "%s", cmd_rs(c)->helm_error);
            rstate_t s;
            cmd_rstate_from_registry(&s, NULL);
            snprintf(s.status, sizeof(s.status), "uninstalled");
            snprintf(s.reason, sizeof(s.reason), "atomic rollback after a failed install");
            cmd_conclude(c, &s, 1);
            return;
        }
        c->phase = PHASE_ROLLBACK;
        cmd_log(c, LOG_LEVEL_WARN, "atomic: install failed (%s); uninstalling", code);
        cmd_helm_simple(c, "uninstall", 0, command_timeout(c), after_atomic_uninstall);
        return;
    }
    if (atomic && strcmp(c->op, "upgrade") == 0 && c->base_deployed > 0) {
        c->phase = PHASE_ROLLBACK;
        cmd_log(c, LOG_LEVEL_WARN, "atomic: upgrade failed (%s); rolling back to revision %d", code,
                c->base_deployed);
        cmd_helm_simple(c, "rollback", c->base_deployed, command_timeout(c), after_atomic_rollback);
        return;
    }
    fail_with_state(c, "failed");
}

void cmd_after_failure(command_t *c) {
    cmd_helm_status(c, after_failure_status);
}

/* --- unlocking stale pending-* releases ----------------------------------------------- */

static void after_unlock(command_t *c, helm_run_t *run) {
    char e[512];
    if (run->exit_status != 0) {
        cmd_log(c, LOG_LEVEL_WARN, "unlocking failed: %s", helm_error_text(run, e, sizeof(e)));
        cmd_after_failure(c);
        return;
    }
    cmd_log(c, LOG_LEVEL_INFO, "unlocked the stale release; running the %s again", c->op);
    c->op_run(c);
}

void cmd_unlock_status(command_t *c) {
    const char *st = c->helm_found ? cmd_rs(c)->helm.status : "";
    c->phase = PHASE_UNLOCK;
    if (strcmp(st, "pending-install") == 0) {
        cmd_log(c, LOG_LEVEL_WARN,
                "release stuck in pending-install (an interrupted operation): uninstalling it");
        cmd_history_add(c, cmd_rs(c)->helm.revision, "failed", cmd_rs(c)->helm.chart_name,
                        cmd_rs(c)->helm.chart_version, cmd_rs(c)->helm.app_version, "unlock",
                        "stale pending-install left by an interrupted operation: marked failed and removed",
                        NULL, NULL);
        cmd_helm_simple(c, "uninstall", 0, command_timeout(c), after_unlock);
    } else if ((strcmp(st, "pending-upgrade") == 0 || strcmp(st, "pending-rollback") == 0) &&
               c->base_deployed > 0) {
        cmd_log(c, LOG_LEVEL_WARN,
                "release stuck in %s (an interrupted operation): rolling back to revision %d", st,
                c->base_deployed);
        cmd_history_add(c, cmd_rs(c)->helm.revision, "failed", cmd_rs(c)->helm.chart_name,
                        cmd_rs(c)->helm.chart_version, cmd_rs(c)->helm.app_version, "unlock",
                        "stale pending operation left by an interrupted operation: marked failed", NULL,
                        NULL);
        c->base_revision = cmd_rs(c)->helm.revision + 1;
        cmd_helm_simple(c, "rollback", c->base_deployed, command_timeout(c), after_unlock);
    } else {
        after_failure_status(c);
    }
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
            cmd_succeed_uninstall(c, "Uninstallation complete");
            return;
        }
        if (strcmp(st, "uninstalling") == 0) {
            /* helm was stopped mid-deletion (it has no signal handler for
             * uninstall): the deletion is finished, which was the intent. */
            cmd_log(c, LOG_LEVEL_WARN, "release stuck in uninstalling: finishing the uninstall");
            c->phase = PHASE_HELM;
            cmd_helm_simple(c, "uninstall", 0, command_timeout(c), c->op_end);
            return;
        }
        cmd_outcome(c, "failed", code, "%s", cmd_rs(c)->helm_error);
        fail_with_state(c, "failed");
        return;
    }
    if (!c->helm_found || rev <= c->base_revision) {
        /* helm never completed a change: nothing happened. */
        cmd_outcome(c, "failed", code, "%s; the %s did not take effect", cmd_rs(c)->helm_error, c->op);
        rstate_t s;
        cmd_rstate_from_registry(&s, c->release);
        if (strcmp(c->op, "install") == 0) {
            cmd_rstate_from_registry(&s, NULL);
            snprintf(s.status, sizeof(s.status), "uninstalled");
        }
        cmd_conclude(c, &s, strcmp(c->op, "install") == 0);
        return;
    }
    if (strcmp(st, "deployed") == 0) {
        c->helm_failed = 0;
        cmd_succeed_from_helm(c);
        return;
    }
    if (strncmp(st, "pending-", 8) == 0) {
        /* Unlock: a pending install is removed, a pending upgrade or rollback
         * goes back to the last deployed revision. Either way it failed. */
        snprintf(c->error_code, sizeof(c->error_code), "%s", code);
        if (strcmp(st, "pending-install") == 0 || c->base_deployed <= 0) {
            cmd_history_add(c, rev, "failed", cmd_rs(c)->helm.chart_name, cmd_rs(c)->helm.chart_version,
                            cmd_rs(c)->helm.app_version, c->op,
                            "interrupted: marked failed by the worker's reconciliation", NULL, NULL);
            cmd_rs(c)->helm_error[sizeof(cmd_rs(c)->helm_error) - 1] = '\0';
            c->phase = PHASE_ROLLBACK;
            cmd_helm_simple(c, "uninstall", 0, command_timeout(c), after_atomic_uninstall);
            return;
        }
        cmd_history_add(c, rev, "failed", cmd_rs(c)->helm.chart_name, cmd_rs(c)->helm.chart_version,
                        cmd_rs(c)->helm.app_version, c->op,
                        "interrupted: marked failed by the worker's reconciliation", NULL, NULL);
        c->phase = PHASE_ROLLBACK;
        cmd_helm_simple(c, "rollback", c->base_deployed, command_timeout(c), after_atomic_rollback);
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
        cmd_helm_status(c, reconcile_status);
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
        cmd_helm_status(c, reconcile_status);
        return;
    }
    cmd_retry_later(c, 200, on_left_helm_timer);
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

void cmd_reconcile(command_t *c) {
    c->reconcile = 1;
    if (left_helm_find(c)) {
        c->phase = PHASE_WAIT_HELM;
        left_helm_wait(c);
        return;
    }
    cmd_helm_status(c, reconcile_status);
}
