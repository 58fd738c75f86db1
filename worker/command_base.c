/* What every step of a command uses, whichever file it is in: the run
 * state allocated when a command starts, logging with the command's context,
 * the ledger reached through the host, retry timers, the outcome's code and
 * message; and the executor the command layer runs helm with by default. */
#include "command_internal.h"

/* The command's run state (command.h), allocated on first use. */
command_rs_t *cmd_rs(command_t *c) {
    if (!c->rs && !(c->rs = calloc(1, sizeof(*c->rs))))
        abort(); /* out of memory */
    return c->rs;
}

/* A ledger statement on the connection of c's release key. */
void cmd_ledger_query(command_t *c, const char *sql, int n, const char *const *values, const int *lengths,
                      const int *formats, db_cb cb, void *arg) {
    c->ctx->host.query(c->ctx->host.ctx, c->key_name ? c->key_name : "-", sql, n, values, lengths, formats,
                       cb, arg);
}

/* Logs with the command's context: commandId, release key, source offset. */
void cmd_log(command_t *c, log_level_t level, const char *fmt, ...) {
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

void cmd_retry_later(command_t *c, uint64_t ms, uv_timer_cb cb) {
    uv_timer_start(&c->timer, cb, ms, 0);
}

void cmd_outcome(command_t *c, const char *event_type, const char *code, const char *fmt, ...) {
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

const char *const command_outcome_names[COMMAND_OUTCOMES] = {"succeeded", "failed", "rolled_back", "rejected",
                                                             "republished"};
const double command_helm_bucket_le[COMMAND_HELM_BUCKETS] = {0.1, 0.5, 1, 5, 30, 120, 600, -1};
const command_helm_ops_t command_helm_default = {
    .start = helm_run_start, .signal = helm_run_signal, .free = helm_run_free, .marked = helm_marked};
