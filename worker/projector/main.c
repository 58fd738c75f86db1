/* helmq-projector: release events into the PostgreSQL projection.
 *
 * Its own consumer group on the events topic (consumer.c). Events are
 * applied in batches, one transaction per batch (apply.c): the decoded
 * events (batch.c) are streamed with COPY into a TEMP staging table and
 * applied by helmq.apply_staged (sql/0002: the semantics of
 * apply_events, idempotent by eventId, an older revision never overwriting
 * newer state), or, when every event of a batch is new, COPY'd straight into
 * the tables (sql/0002). Events PostgreSQL refuses and records that do not
 * decode are parked in helmq.parked_events. This file holds the options,
 * signals, migrations and main(); projector.h describes the layers. */
#include "projector.h"

#include "codec.h"
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "migrate.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const config_opt_t projector_opts[] = {
    {"brokers", 'b', "HELMQ_BROKERS", CONFIG_STRING, KAFKA_DEFAULT_BROKERS, "Kafka bootstrap servers"},
    {"database-url", 'd', "HELMQ_DATABASE_URL", CONFIG_STRING, "dbname=helmq",
     "PostgreSQL connection string or URI (the projection, schema helmq)"},
    {"group-id", 'g', "HELMQ_PROJECTOR_GROUP_ID", CONFIG_STRING, "helmq-projector",
     "Kafka consumer group of the projectors"},
    {"events-topic", 0, "HELMQ_EVENTS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_EVENTS,
     "topic of the release events"},
    {"batch-size", 0, "HELMQ_PROJECTOR_BATCH_SIZE", CONFIG_INT, "5000",
     "most events written in one transaction"},
    {"batch-wait-ms", 0, "HELMQ_PROJECTOR_BATCH_WAIT_MS", CONFIG_INT, "0",
     "how long to gather a batch once the first event arrived (0: take what has arrived; batches grow by "
     "themselves while PostgreSQL works)"},
    {"http-listen", 0, "HELMQ_PROJECTOR_HTTP", CONFIG_STRING, "",
     "serve /metrics and /healthz on ADDRESS:PORT (empty: off)"},
    {"log-level", 0, "HELMQ_LOG_LEVEL", CONFIG_STRING, "info", "error, warn, info or debug"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    stop = sig;
}

static void usage(FILE *out) {
    fprintf(out,
            "Usage: helmq-projector [OPTIONS]            project events into PostgreSQL until stopped\n"
            "       helmq-projector migrate [OPTIONS]    apply the database migrations and exit\n"
            "       helmq-projector rebuild [OPTIONS]    empty the projection and replay the events topic\n"
            "                                            from the beginning, then exit\n\n"
            "Events PostgreSQL refuses (a constraint violation, an invalid value) and records that do\n"
            "not decode are parked in the table helmq.parked_events with their error; every other\n"
            "event is applied and the projector goes on. rebuild exits 0 when every record was\n"
            "applied, 3 when the rebuild finished but parked some (the log and helmq.parked_events\n"
            "say which), 1 when it could not finish, 2 on bad usage. A finished rebuild deletes the\n"
            "parked rows of records it applied this time.\n\n"
            "Options:\n");
    config_usage(projector_opts, out);
}

int main(int argc, char **argv) {
    char errstr[1024];
    config_t cfg;
    int first = 1;
    const char *mode = "run";
    if (argc > 1 && (strcmp(argv[1], "migrate") == 0 || strcmp(argv[1], "rebuild") == 0)) {
        mode = argv[1];
        first = 2;
    }
    if (argc > 1 && strcmp(argv[1], "--help-markdown") == 0) {
        config_usage_markdown(projector_opts, stdout);
        return 0;
    }
    int rc = config_parse(&cfg, projector_opts, argc, argv, first, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP) {
        usage(stdout);
        config_free(&cfg);
        return 0;
    }
    if (rc < 0 || cfg.nargs) {
        fprintf(stderr, "helmq-projector: %s\n", rc < 0 ? errstr : "unexpected argument (see --help)");
        config_free(&cfg);
        return 2;
    }
    if (log_init("helmq-projector", config_get(&cfg, "log-level")) < 0 ||
        config_int(&cfg, "batch-size") < 1) {
        fprintf(stderr, "helmq-projector: bad --log-level or --batch-size\n");
        config_free(&cfg);
        return 2;
    }
    if (codec_init(errstr, sizeof(errstr)) < 0) {
        log_error("schemas: %s", errstr);
        config_free(&cfg);
        return 1;
    }
    if (batch_columns_init() < 0) {
        codec_term();
        config_free(&cfg);
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    for (unsigned backoff = 200; !stop; backoff = backoff < 5000 ? backoff * 2 : 5000) {
        int n = migrate_apply(config_get(&cfg, "database-url"), errstr, sizeof(errstr));
        if (n >= 0) {
            log_info("database ready (%d migrations applied now)", n);
            break;
        }
        if (strcmp(mode, "migrate") == 0 || !strstr(errstr, "connect")) {
            log_error("%s", errstr);
            codec_term();
            config_free(&cfg);
            return 1;
        }
        log_warn("%s; retrying in %u ms", errstr, backoff);
        usleep(backoff * 1000);
    }
    metrics_http_t *http = NULL;
    const char *listen = config_get(&cfg, "http-listen");
    if (strcmp(mode, "run") == 0 && listen && *listen && !(http = metrics_http_start(listen))) {
        codec_term();
        config_free(&cfg);
        return 1;
    }
    rc = strcmp(mode, "migrate") == 0 ? 0 : consumer_run(&cfg, strcmp(mode, "rebuild") == 0, &stop);
    metrics_http_stop(http);
    codec_term();
    config_free(&cfg);
    return rc;
}
