/* helmq-worker: runs Helm release commands from Kafka.
 *
 * A consumer-group member on the commands topic, on one libuv loop: each
 * command is recorded in the ledger (PostgreSQL), run through helm as a child
 * process with its timeout and atomic rollback, and ends in exactly one
 * terminal event on the events topic. The layers: dispatch.h (Kafka in,
 * per-key order, offsets), command.h (one command's state machine),
 * executor.h (helm processes); metrics.h reads their counters. */
#include "dispatch.h"
#include "metrics.h"
#include "tenant_access.h"

#include "codec.h"
#include "kafka.h"
#include "log.h"
#include "migrate.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const config_opt_t worker_opts[] = {
    {"brokers", 'b', "HELMQ_BROKERS", CONFIG_STRING, KAFKA_DEFAULT_BROKERS, "Kafka bootstrap servers"},
    {"database-url", 'd', "HELMQ_DATABASE_URL", CONFIG_STRING, "dbname=helmq",
     "PostgreSQL connection string or URI (ledger and registry, schema helmq_worker)"},
    {"helm", 0, "HELMQ_HELM", CONFIG_STRING, "helm", "the helm binary (a path, or a name looked up on PATH)"},
    {"chart-repo", 0, "HELMQ_CHART_REPO", CONFIG_STRING, "",
     "where charts come from: oci://prefix, an http(s) repository URL, a directory, or a repo alias"},
    {"kubeconfig", 0, "HELMQ_KUBECONFIG", CONFIG_STRING, "",
     "kubeconfig helm uses (--kubeconfig; empty: helm's default, $KUBECONFIG or ~/.kube/config)"},
    {"kube-context", 0, "HELMQ_KUBE_CONTEXT", CONFIG_STRING, "",
     "kubeconfig context helm uses (--kube-context; empty: the current context)"},
    {"registry-config", 0, "HELMQ_REGISTRY_CONFIG", CONFIG_STRING, "",
     "chart registry credentials, as written by helm registry login --registry-config FILE (empty: helm's "
     "default)"},
    {"plain-http", 0, "HELMQ_REGISTRY_PLAIN_HTTP", CONFIG_BOOL, "false",
     "the OCI chart registry speaks plain HTTP, not HTTPS (helm --plain-http)"},
    {"tenant-identity", 0, "HELMQ_TENANT_IDENTITY", CONFIG_BOOL, "true",
     "helm acts as the tenant: it impersonates the tenant's service account in the release's namespace, "
     "which the worker sets up before an install (false: helm runs with the worker's own identity, for a "
     "single-tenant cluster)"},
    {"tenant-service-account", 0, "HELMQ_TENANT_SERVICE_ACCOUNT", CONFIG_STRING, "helmq-tenant",
     "the tenant's service account in each namespace, which helm impersonates; the worker binds it there to "
     "the ClusterRole of the same name (docs/rbac/)"},
    {"concurrency", 'c', "HELMQ_CONCURRENCY", CONFIG_INT, "8",
     "helm processes running at once (different releases)"},
    {"db-connections", 0, "HELMQ_DB_CONNECTIONS", CONFIG_INT, "2",
     "PostgreSQL connections for the ledger (release keys are spread over them; fewer make bigger "
     "transactions)"},
    {"db-group", 0, "HELMQ_DB_GROUP", CONFIG_INT, "64",
     "ledger statements that queue while a connection is busy go in one transaction, up to this many "
     "(1: one transaction each)"},
    {"group-id", 'g', "HELMQ_GROUP_ID", CONFIG_STRING, "helmq-worker", "Kafka consumer group of the workers"},
    {"commands-topic", 0, "HELMQ_COMMANDS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_COMMANDS,
     "topic of the commands"},
    {"events-topic", 0, "HELMQ_EVENTS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_EVENTS,
     "topic of the release events"},
    {"dlq-topic", 0, "HELMQ_DLQ_TOPIC", CONFIG_STRING, KAFKA_TOPIC_DLQ,
     "dead-letter topic for undecodable commands"},
    {"protected-namespaces", 0, "HELMQ_PROTECTED_NAMESPACES", CONFIG_STRING, "",
     "comma-separated namespaces refused besides default and every kube-* namespace"},
    {"values-allow-keys", 0, "HELMQ_VALUES_ALLOW_KEYS", CONFIG_STRING, VALUES_ALLOW_KEYS_DEFAULT,
     "value keys (exact names, any case) whose strings events and the projection show; every other string is "
     "redacted, and so is any string that looks like a secret (URL or DSN credentials, password=, PEM, JWT, "
     "AWS key id)"},
    {"redact-keys", 0, "HELMQ_REDACT_KEYS", CONFIG_STRING, VALUES_REDACT_KEYS_DEFAULT,
     "value keys containing any of these (case-insensitive) have their whole value redacted, numbers and "
     "objects too, even when on the allowlist"},
    {"timeout-grace-ms", 0, "HELMQ_TIMEOUT_GRACE_MS", CONFIG_INT, "2000",
     "after a command's timeout, wait this long before SIGTERM to helm's process group"},
    {"kill-grace-ms", 0, "HELMQ_KILL_GRACE_MS", CONFIG_INT, "10000", "SIGKILL this long after the SIGTERM"},
    {"drain-timeout-ms", 0, "HELMQ_DRAIN_TIMEOUT_MS", CONFIG_INT, "60000",
     "on SIGTERM, wait this long for running commands before exiting"},
    {"max-buffered", 0, "HELMQ_MAX_BUFFERED", CONFIG_INT, "10000",
     "pause consuming when this many commands wait in memory"},
    {"tmpdir", 0, "HELMQ_TMPDIR", CONFIG_STRING, "/tmp",
     "where values files go (0600, removed after) on kernels without memfd_create; elsewhere helm reads the "
     "values from a memory file passed as /proc/self/fd/3"},
    {"http-listen", 0, "HELMQ_WORKER_HTTP", CONFIG_STRING, "",
     "serve /metrics and /healthz on ADDRESS:PORT (empty: off)"},
    {"metrics-max-tenants", 0, "HELMQ_WORKER_METRICS_MAX_TENANTS", CONFIG_INT, "1000",
     "tenants with their own series in helmq_worker_tenant_commands_total (later ones count as \"other\"; 0: "
     "none)"},
    {"log-level", 0, "HELMQ_LOG_LEVEL", CONFIG_STRING, "info", "error, warn, info or debug"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

static void usage(FILE *out) {
    fprintf(out, "Usage: helmq-worker [OPTIONS]\n"
                 "       helmq-worker migrate [OPTIONS]     apply the database migrations and exit\n"
                 "       helmq-worker argv [VALUES_FILE] < command.json   print the helm argv it would run\n"
                 "       helmq-worker --help-markdown       the options as a Markdown table\n\n"
                 "Runs Helm release commands from Kafka: one at a time per release, many releases\n"
                 "in parallel, each with its timeout and atomic rollback, and publishes the release\n"
                 "state events. SIGTERM/SIGINT: stop taking commands, let running ones finish (up to\n"
                 "--drain-timeout-ms), commit, exit 0.\n\nOptions:\n");
    config_usage(worker_opts, out);
}

static void on_signal(uv_signal_t *h, int sig) {
    worker_t *w = h->data;
    log_info("signal %d received", sig);
    if (w->cmd.stopping && sig == SIGINT) {
        log_warn("second interrupt: exiting now; running commands will be reconciled");
        exit(1);
    }
    dispatch_stop(w);
}

/* Asks helm its version; says loudly when it is the simulator. */
static void check_helm(const char *helm) {
    int fd[2];
    if (pipe(fd) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fd[1], 1);
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        execlp(helm, helm, "version", "--short", (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char out[256] = "";
    ssize_t n = pid > 0 ? read(fd[0], out, sizeof(out) - 1) : 0;
    close(fd[0]);
    int status = 0;
    if (pid > 0)
        waitpid(pid, &status, 0);
    out[n > 0 ? n : 0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    if (pid <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        log_error("helm (%s) does not run: %s -- commands will fail until it does", helm, out);
        return;
    }
    if (strstr(out, "sim")) {
        log_warn("************************************************************************");
        log_warn("helm is SIMULATED (%s, %s): no Kubernetes cluster is touched.", helm, out);
        log_warn("To deploy for real: HELMQ_HELM=/path/to/helm with KUBECONFIG for a cluster.");
        log_warn("************************************************************************");
    } else {
        log_info("helm %s (%s)", out, helm);
    }
}

static char **split_list(const char *s, int *count) {
    char **out = NULL;
    *count = 0;
    char *copy = strdup(s ? s : ""), *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t; t = strtok_r(NULL, ", ", &save)) {
        out = realloc(out, sizeof(char *) * (size_t)(*count + 1));
        out[(*count)++] = strdup(t);
    }
    free(copy);
    return out;
}

/* helmq-worker argv < command.json: every helm argv the worker may run for
 * the command (natural JSON), one JSON array per line: the operation, then
 * status, and the atomic/unlock rollback or uninstall. For conformance tests
 * against real helm, and for people asking what the worker would run. */
static int print_argv(int argc, char **argv) {
    json_error_t jerr;
    const char *plain = getenv("HELMQ_REGISTRY_PLAIN_HTTP");
    const char *identity = getenv("HELMQ_TENANT_IDENTITY");
    helm_conf_t hc = {
        .helm = getenv("HELMQ_HELM") ? getenv("HELMQ_HELM") : "helm",
        .chart_repo = getenv("HELMQ_CHART_REPO"),
        .kubeconfig = getenv("HELMQ_KUBECONFIG"),
        .kube_context = getenv("HELMQ_KUBE_CONTEXT"),
        .registry_config = getenv("HELMQ_REGISTRY_CONFIG"),
        .plain_http = plain && (strcmp(plain, "true") == 0 || strcmp(plain, "1") == 0),
        .impersonate = !identity || strcmp(identity, "true") == 0 || strcmp(identity, "1") == 0,
        .tenant_account =
            getenv("HELMQ_TENANT_SERVICE_ACCOUNT") ? getenv("HELMQ_TENANT_SERVICE_ACCOUNT") : "helmq-tenant",
    };
    char chart[4096] = "";
    if (hc.impersonate && tenant_access_chart_write(getenv("TMPDIR"), chart, sizeof(chart)) == 0)
        hc.tenant_chart = chart;
    json_t *cmd = json_loadf(stdin, 0, &jerr);
    if (!json_is_object(cmd) || !json_string_value(json_object_get(cmd, "operation"))) {
        fprintf(stderr, "helmq-worker argv: stdin must be a command as JSON (with \"operation\"): %s\n",
                jerr.text);
        json_decref(cmd);
        return 2;
    }
    const char *op = json_string_value(json_object_get(cmd, "operation"));
    long timeout = json_is_integer(json_object_get(cmd, "timeout"))
                       ? (long)json_integer_value(json_object_get(cmd, "timeout"))
                       : 300;
    const json_t *rev = json_object_get(cmd, "revision");
    helm_argv_t a[5];
    memset(a, 0, sizeof(a));
    int n = 4;
    helm_argv_operation(&a[0], &hc, op, cmd, argc > 2 ? argv[2] : "/tmp/values.json",
                        json_is_integer(rev) ? (int)json_integer_value(rev) : 1, timeout);
    helm_argv_simple(&a[1], &hc, "status", cmd, 0, timeout);
    helm_argv_simple(&a[2], &hc, "rollback", cmd, 1, timeout);
    helm_argv_simple(&a[3], &hc, "uninstall", cmd, 0, timeout);
    if (hc.impersonate && strcmp(op, "install") == 0) /* the namespace's set-up before the install */
        tenant_access_argv(&a[n++], &hc, json_string_value(json_object_get(cmd, "namespace")), 60);
    for (int i = 0; i < n; i++) {
        json_t *arr = json_array();
        for (int k = 0; k < a[i].argc; k++)
            json_array_append_new(arr, json_string(a[i].argv[k]));
        char *line = json_dumps(arr, JSON_COMPACT);
        printf("%s\n", line);
        free(line);
        json_decref(arr);
        helm_argv_free(&a[i]);
    }
    tenant_access_chart_remove(chart);
    json_decref(cmd);
    return 0;
}

int main(int argc, char **argv) {
    char errstr[1024];
    config_t cfg;
    int first = 1, migrate_only = 0;
    if (argc > 1 && strcmp(argv[1], "migrate") == 0) {
        migrate_only = 1;
        first = 2;
    }
    if (argc > 1 && strcmp(argv[1], "argv") == 0)
        return print_argv(argc, argv);
    if (argc > 1 && strcmp(argv[1], "--help-markdown") == 0) {
        config_usage_markdown(worker_opts, stdout);
        return 0;
    }
    int rc = config_parse(&cfg, worker_opts, argc, argv, first, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP) {
        usage(stdout);
        config_free(&cfg);
        return 0;
    }
    if (rc < 0 || cfg.nargs) {
        fprintf(stderr, "helmq-worker: %s\n", rc < 0 ? errstr : "unexpected argument (see --help)");
        config_free(&cfg);
        return 2;
    }
    if (log_init("helmq-worker", config_get(&cfg, "log-level")) < 0) {
        fprintf(stderr, "helmq-worker: --log-level must be error, warn, info or debug\n");
        config_free(&cfg);
        return 2;
    }
    if (codec_init(errstr, sizeof(errstr)) < 0) {
        log_error("schemas: %s", errstr);
        config_free(&cfg);
        return 1;
    }
    const char *dburl = config_get(&cfg, "database-url");
    /* Migrations run before the loop starts; PostgreSQL may still be coming up. */
    for (unsigned backoff = 200;; backoff = backoff < 5000 ? backoff * 2 : 5000) {
        int n = migrate_apply(dburl, errstr, sizeof(errstr));
        if (n >= 0) {
            log_info("database ready (%d migrations applied now)", n);
            break;
        }
        if (migrate_only || !strstr(errstr, "connect")) {
            log_error("%s", errstr);
            codec_term();
            config_free(&cfg);
            return 1;
        }
        log_warn("%s; retrying in %u ms", errstr, backoff);
        usleep(backoff * 1000);
    }
    if (migrate_only) {
        codec_term();
        config_free(&cfg);
        return 0;
    }

    worker_t w;
    memset(&w, 0, sizeof(w));
    w.loop = uv_default_loop();
    w.cmd.loop = w.loop;
    w.on_shutdown = metrics_stop;
    w.cfg = &cfg;
    w.cmd.helmc.helm = config_get(&cfg, "helm");
    w.cmd.helmc.chart_repo = config_get(&cfg, "chart-repo");
    w.cmd.helmc.kubeconfig = config_get(&cfg, "kubeconfig");
    w.cmd.helmc.kube_context = config_get(&cfg, "kube-context");
    w.cmd.helmc.registry_config = config_get(&cfg, "registry-config");
    w.cmd.helmc.plain_http = config_bool(&cfg, "plain-http");
    w.cmd.helmc.impersonate = config_bool(&cfg, "tenant-identity");
    w.cmd.helmc.tenant_account = config_get(&cfg, "tenant-service-account");
    w.cmd.tmpdir = config_get(&cfg, "tmpdir");
    w.cmd.commands_topic = config_get(&cfg, "commands-topic");
    w.cmd.events_topic = config_get(&cfg, "events-topic");
    w.cmd.dlq_topic = config_get(&cfg, "dlq-topic");
    w.cmd.concurrency = (int)config_int(&cfg, "concurrency");
    w.max_running = w.cmd.concurrency > INT_MAX / MAX_RUNNING_PER_HELM
                        ? INT_MAX
                        : w.cmd.concurrency * MAX_RUNNING_PER_HELM;
    w.cmd.timeout_grace_ms = (int)config_int(&cfg, "timeout-grace-ms");
    w.cmd.kill_grace_ms = (int)config_int(&cfg, "kill-grace-ms");
    w.max_buffered = (int)config_int(&cfg, "max-buffered");
    w.cmd.protected_ns = split_list(config_get(&cfg, "protected-namespaces"), &w.cmd.protected_count);
    values_set_redact_keys(config_get(&cfg, "redact-keys"));
    values_set_allow_keys(config_get(&cfg, "values-allow-keys"));
    if (w.cmd.concurrency < 1 || w.max_buffered < 1) {
        log_error("--concurrency and --max-buffered must be at least 1");
        return 2;
    }
    long max_tenants = config_int(&cfg, "metrics-max-tenants");
    if (max_tenants < 0 || max_tenants > 1000000) {
        log_error("--metrics-max-tenants must be between 0 and 1000000");
        return 2;
    }
    w.cmd.tenants.max = (size_t)max_tenants;
    check_helm(w.cmd.helmc.helm);
    char tenant_chart[4096] = "";
    if (w.cmd.helmc.impersonate) {
        if (tenant_access_chart_write(w.cmd.tmpdir, tenant_chart, sizeof(tenant_chart)) < 0) {
            log_error("cannot write the tenant-access chart under %s: %s", w.cmd.tmpdir, strerror(errno));
            return 1;
        }
        w.cmd.helmc.tenant_chart = tenant_chart;
        log_info("helm acts as each tenant's service account %s (namespaces set up by release %s)",
                 w.cmd.helmc.tenant_account, TENANT_ACCESS_RELEASE);
    } else {
        log_warn("--tenant-identity=false: helm runs with the worker's own identity for every tenant");
    }

    w.ndbs = (int)config_int(&cfg, "db-connections");
    if (w.ndbs < 1 || w.ndbs > 64) {
        log_error("--db-connections must be 1..64");
        return 2;
    }
    w.dbs = calloc((size_t)w.ndbs, sizeof(db_t *));
    int group = (int)config_int(&cfg, "db-group");
    if (group < 1 || group > 1024) {
        log_error("--db-group must be 1..1024");
        return 2;
    }
    for (int i = 0; i < w.ndbs; i++) {
        w.dbs[i] = db_new(w.loop, dburl);
        if (w.dbs[i])
            db_set_group_max(w.dbs[i], group);
    }
    if (metrics_start(&w, config_get(&cfg, "http-listen"), errstr, sizeof(errstr)) < 0) {
        log_error("%s", errstr);
        return 1;
    }
    if (dispatch_start(&w, errstr, sizeof(errstr)) < 0) {
        log_error("kafka: %s", errstr);
        return 1;
    }
    uv_signal_init(w.loop, &w.sigterm);
    uv_signal_init(w.loop, &w.sigint);
    w.sigterm.data = w.sigint.data = &w;
    uv_signal_start(&w.sigterm, on_signal, SIGTERM);
    uv_signal_start(&w.sigint, on_signal, SIGINT);
    signal(SIGPIPE, SIG_IGN);

    uv_run(w.loop, UV_RUN_DEFAULT);

    rd_kafka_queue_destroy(w.consumer_q);
    rd_kafka_queue_destroy(w.producer_q);
    rd_kafka_destroy(w.consumer);
    rd_kafka_destroy(w.producer);
    close(w.wake_fd[0]);
    close(w.wake_fd[1]);
    int closed = uv_loop_close(w.loop);
    if (closed != 0)
        log_warn("event loop closed with handles still open");
    log_info("stopped: %llu commands received, %llu done, %llu to the DLQ, %llu helm runs",
             (unsigned long long)w.n_received, (unsigned long long)w.n_done,
             (unsigned long long)w.cmd.counters.dlq, (unsigned long long)w.cmd.counters.helm);
    for (int i = 0; i < w.cmd.protected_count; i++)
        free(w.cmd.protected_ns[i]);
    free(w.cmd.protected_ns);
    command_ctx_free(&w.cmd);
    free(w.keys);
    tenant_access_chart_remove(tenant_chart);
    codec_term();
    config_free(&cfg);
    return w.exit_code;
}
