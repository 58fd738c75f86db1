/* helmq-projector: release events into the PostgreSQL projection.
 *
 * Its own consumer group on the events topic. Events are applied in batches,
 * one transaction per batch (helmq.apply_events, idempotent by eventId, an
 * older revision never overwriting newer state), and the consumer's offsets
 * are committed only after PostgreSQL has committed the batch. PostgreSQL
 * down: the batch is kept and retried with backoff; nothing is lost.
 *
 * A plain loop rather than an event loop: the projector does one thing at a
 * time (collect a batch, write it, commit offsets) and has nothing to overlap. */
#include "codec.h"
#include "config.h"
#include "httpd.h"
#include "kafka.h"
#include "log.h"
#include "migrate.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const config_opt_t projector_opts[] = {
    {"brokers", 'b', "HELMQ_BROKERS", CONFIG_STRING, KAFKA_DEFAULT_BROKERS, "Kafka bootstrap servers"},
    {"database-url", 'd', "HELMQ_DATABASE_URL", CONFIG_STRING, "dbname=helmq",
     "PostgreSQL connection string or URI (the projection, schema helmq)"},
    {"group-id", 'g', "HELMQ_PROJECTOR_GROUP_ID", CONFIG_STRING, "helmq-projector",
     "Kafka consumer group of the projectors"},
    {"events-topic", 0, "HELMQ_EVENTS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_EVENTS,
     "topic of the release events"},
    {"batch-size", 0, "HELMQ_PROJECTOR_BATCH_SIZE", CONFIG_INT, "1000",
     "most events written in one transaction"},
    {"batch-wait-ms", 0, "HELMQ_PROJECTOR_BATCH_WAIT_MS", CONFIG_INT, "20",
     "how long to gather a batch once the first event arrived"},
    {"http-listen", 0, "HELMQ_PROJECTOR_HTTP", CONFIG_STRING, "",
     "serve /metrics and /healthz on ADDRESS:PORT (empty: off)"},
    {"log-level", 0, "HELMQ_LOG_LEVEL", CONFIG_STRING, "info", "error, warn, info or debug"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

static volatile sig_atomic_t stop;

/* Metrics, written by the projecting thread and read by the HTTP thread. */
static atomic_ullong m_events, m_batches, m_batch_buckets[6]; /* batch sizes <=1,10,100,1000,10000,+Inf */
static atomic_int m_pg_up, m_kafka_up = -1;
static atomic_llong m_lag = -1;
static const long batch_le[6] = {1, 10, 100, 1000, 10000, -1};

static void metrics_batch(int n) {
    atomic_fetch_add(&m_events, (unsigned long long)n);
    atomic_fetch_add(&m_batches, 1);
    for (int i = 0; i < 6; i++)
        if (batch_le[i] < 0 || n <= batch_le[i])
            atomic_fetch_add(&m_batch_buckets[i], 1);
}

static int stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    json_t *st = json_loadb(json, len, 0, NULL);
    const char *name, *pname;
    json_t *t, *p;
    long long lag = 0;
    int up = 0;
    json_object_foreach(json_object_get(st, "topics"), name, t) {
        json_object_foreach(json_object_get(t, "partitions"), pname, p) {
            json_int_t l = json_integer_value(json_object_get(p, "consumer_lag"));
            if (strcmp(pname, "-1") != 0 && l > 0)
                lag += l;
        }
    }
    json_object_foreach(json_object_get(st, "brokers"), name, t) {
        const char *state = json_string_value(json_object_get(t, "state"));
        if (state && strcmp(state, "UP") == 0 && json_integer_value(json_object_get(t, "nodeid")) >= 0)
            up++;
    }
    atomic_store(&m_lag, lag);
    atomic_store(&m_kafka_up, up);
    json_decref(st);
    return 0;
}

typedef struct http_thread {
    uv_loop_t loop;
    uv_async_t wake;
    httpd_t *http;
    pthread_t thread;
} http_thread_t;

static void serve(http_req_t *req, void *ctx) {
    int pg = atomic_load(&m_pg_up), kafka = atomic_load(&m_kafka_up) != 0;
    if (strcmp(req->path, "/healthz") == 0) {
        char body[128];
        int n = snprintf(body, sizeof(body), "{\"status\":\"%s\",\"postgres\":%s,\"kafka\":%s}",
                         pg && kafka ? "ok" : "degraded", pg ? "true" : "false", kafka ? "true" : "false");
        httpd_respond(req, pg && kafka ? 200 : 503, "application/json", body, (size_t)n);
        return;
    }
    if (strcmp(req->path, "/metrics") != 0) {
        httpd_error(req, 404, "try /metrics or /healthz", NULL, NULL);
        return;
    }
    char body[2048];
    size_t n = 0;
#define OUT(...) n += (size_t)snprintf(body + n, sizeof(body) - n, __VA_ARGS__)
    OUT("# HELP helmq_projector_events_total Events applied (including duplicates recognised).\n"
        "# TYPE helmq_projector_events_total counter\nhelmq_projector_events_total %llu\n",
        atomic_load(&m_events));
    OUT("# HELP helmq_projector_batch_size Events per PostgreSQL transaction.\n"
        "# TYPE helmq_projector_batch_size histogram\n");
    for (int i = 0; i < 6; i++) {
        if (batch_le[i] < 0)
            OUT("helmq_projector_batch_size_bucket{le=\"+Inf\"} %llu\n", atomic_load(&m_batch_buckets[i]));
        else
            OUT("helmq_projector_batch_size_bucket{le=\"%ld\"} %llu\n", batch_le[i],
                atomic_load(&m_batch_buckets[i]));
    }
    OUT("helmq_projector_batch_size_sum %llu\nhelmq_projector_batch_size_count %llu\n",
        atomic_load(&m_events), atomic_load(&m_batches));
    OUT("# HELP helmq_projector_consumer_lag Events behind on the events topic.\n"
        "# TYPE helmq_projector_consumer_lag gauge\nhelmq_projector_consumer_lag %lld\n",
        atomic_load(&m_lag));
    OUT("# HELP helmq_postgres_up Whether the PostgreSQL connection is up.\n# TYPE helmq_postgres_up gauge\n"
        "helmq_postgres_up %d\n",
        pg);
    OUT("# HELP helmq_kafka_brokers_up Kafka brokers connected.\n# TYPE helmq_kafka_brokers_up gauge\n"
        "helmq_kafka_brokers_up %d\n",
        atomic_load(&m_kafka_up));
#undef OUT
    httpd_respond(req, 200, "text/plain; version=0.0.4", body, n < sizeof(body) ? n : sizeof(body) - 1);
}

static void *http_main(void *arg) {
    http_thread_t *h = arg;
    uv_run(&h->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void http_wake(uv_async_t *a) {
    http_thread_t *h = a->data;
    httpd_stop(h->http);
    uv_close((uv_handle_t *)&h->wake, NULL);
}

/* Serves /metrics and /healthz from a thread of their own (the projector's
 * loop blocks on Kafka and PostgreSQL by design). */
static http_thread_t *http_start(const char *listen) {
    char errstr[256];
    http_thread_t *h = calloc(1, sizeof(*h));
    uv_loop_init(&h->loop);
    h->http = httpd_start(&h->loop, listen, 4096, 10000, serve, NULL, errstr, sizeof(errstr));
    if (!h->http) {
        log_error("%s", errstr);
        uv_loop_close(&h->loop);
        free(h);
        return NULL;
    }
    uv_async_init(&h->loop, &h->wake, http_wake);
    h->wake.data = h;
    log_info("metrics on port %d: /metrics, /healthz", httpd_port(h->http));
    pthread_create(&h->thread, NULL, http_main, h);
    return h;
}

static void http_stop(http_thread_t *h) {
    if (!h)
        return;
    uv_async_send(&h->wake);
    pthread_join(h->thread, NULL);
    uv_loop_close(&h->loop);
    free(h);
}
static void on_signal(int sig) {
    stop = sig;
}

static void usage(FILE *out) {
    fprintf(out,
            "Usage: helmq-projector [OPTIONS]            project events into PostgreSQL until stopped\n"
            "       helmq-projector migrate [OPTIONS]    apply the database migrations and exit\n"
            "       helmq-projector rebuild [OPTIONS]    empty the projection and replay the events topic\n"
            "                                            from the beginning, then exit\n\n"
            "Options:\n");
    config_usage(projector_opts, out);
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A connection that is up, reconnecting with backoff (logged) until it is or
 * a signal arrives. */
static PGconn *db_ensure(PGconn *c, const char *url) {
    unsigned backoff = 100;
    while (!stop) {
        if (c && PQstatus(c) == CONNECTION_OK) {
            atomic_store(&m_pg_up, 1);
            return c;
        }
        atomic_store(&m_pg_up, 0);
        if (c) {
            PQreset(c);
            if (PQstatus(c) == CONNECTION_OK) {
                log_info("postgresql: connected again");
                return c;
            }
        } else {
            c = PQconnectdb(url);
            if (PQstatus(c) == CONNECTION_OK) {
                log_info("postgresql: connected");
                return c;
            }
        }
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(c));
        msg[strcspn(msg, "\n")] = '\0';
        log_warn("postgresql: %s; retrying in %u ms", msg, backoff);
        usleep(backoff * 1000);
        backoff = backoff < 5000 ? backoff * 2 : 5000;
    }
    return c;
}

/* Writes the batch (a JSON array text) in one transaction, retrying until
 * PostgreSQL has committed it. Returns 0, or -1 when stopped first. */
static int apply_batch(PGconn **c, const char *url, const char *batch, int n) {
    unsigned backoff = 100;
    while (!stop) {
        *c = db_ensure(*c, url);
        if (stop)
            break;
        const char *params[1] = {batch};
        PGresult *r =
            PQexecParams(*c, "SELECT helmq.apply_events($1::jsonb)", 1, NULL, params, NULL, NULL, 0);
        if (PQresultStatus(r) == PGRES_TUPLES_OK) {
            log_debug("applied %d events (%s new)", n, PQgetvalue(r, 0, 0));
            PQclear(r);
            metrics_batch(n);
            return 0;
        }
        char msg[1024];
        snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(r));
        msg[strcspn(msg, "\n")] = '\0';
        PQclear(r);
        atomic_store(&m_pg_up, PQstatus(*c) == CONNECTION_OK);
        if (PQstatus(*c) != CONNECTION_OK)
            log_warn("postgresql lost while writing %d events (%s); the batch is kept and retried", n, msg);
        else
            log_error("writing %d events failed (%s); retrying in %u ms", n, msg, backoff);
        usleep(backoff * 1000);
        backoff = backoff < 5000 ? backoff * 2 : 5000;
    }
    return -1;
}

/* Appends a decoded event to the batch, or logs why it cannot. */
static int batch_add(json_t *batch, const rd_kafka_message_t *m) {
    char errstr[512];
    codec_type_t t;
    json_t *doc;
    if (codec_decode(m->payload, m->len, &t, &doc, errstr, sizeof(errstr)) != 0 || t != CODEC_EVENT) {
        log_error("%s[%d]@%lld: not a helmq event, skipped: %s", rd_kafka_topic_name(m->rkt),
                  (int)m->partition, (long long)m->offset, t != CODEC_EVENT ? "a command" : errstr);
        return -1;
    }
    json_array_append_new(batch, doc);
    return 0;
}

static rd_kafka_t *consumer_new(const config_t *cfg, int rebuild, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = kafka_conf_new(cfg, config_get(cfg, "brokers"), errstr, errstr_size);
    if (!conf)
        return NULL;
    if (kafka_conf_set(conf, "group.id", rebuild ? "helmq-projector-rebuild" : config_get(cfg, "group-id"),
                       errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "enable.partition.eof", rebuild ? "true" : "false", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "client.id", "helmq-projector", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "statistics.interval.ms", "5000", errstr, errstr_size) < 0) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    for (int i = 0; i < cfg->kafka_count; i++) { /* pass-through wins */
        char *kv = strdup(cfg->kafka_props[i]);
        char *eq = strchr(kv, '=');
        *eq = '\0';
        rd_kafka_conf_set(conf, kv, eq + 1, errstr, errstr_size);
        free(kv);
    }
    rd_kafka_conf_set_stats_cb(conf, stats_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Assigns every partition of topic from the beginning (for rebuild). */
static int assign_all(rd_kafka_t *rk, const char *topic, int *nparts, char *errstr, size_t errstr_size) {
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        snprintf(errstr, errstr_size, "no metadata for %s: %s", topic,
                 err ? rd_kafka_err2str(err) : rd_kafka_err2str(md->topics[0].err));
        if (md)
            rd_kafka_metadata_destroy(md);
        return -1;
    }
    *nparts = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(*nparts);
    for (int i = 0; i < *nparts; i++)
        rd_kafka_topic_partition_list_add(l, topic, md->topics[0].partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    return 0;
}

static int run(const config_t *cfg, int rebuild) {
    char errstr[512];
    const char *url = config_get(cfg, "database-url");
    const char *topic = config_get(cfg, "events-topic");
    int batch_size = (int)config_int(cfg, "batch-size");
    uint64_t batch_wait = (uint64_t)config_int(cfg, "batch-wait-ms");
    PGconn *db = db_ensure(NULL, url);
    if (stop)
        return 1;
    if (rebuild) {
        PGresult *r = PQexec(db, "SELECT helmq.truncate_projection()");
        int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!ok)
            log_error("emptying the projection: %s", PQresultErrorMessage(r));
        PQclear(r);
        if (!ok) {
            PQfinish(db);
            return 1;
        }
        log_info("projection emptied; replaying %s from the beginning", topic);
    }
    rd_kafka_t *rk = consumer_new(cfg, rebuild, errstr, sizeof(errstr));
    if (!rk) {
        log_error("kafka: %s", errstr);
        PQfinish(db);
        return 1;
    }
    int nparts = 0, eofs = 0;
    if (rebuild) {
        if (assign_all(rk, topic, &nparts, errstr, sizeof(errstr)) < 0) {
            log_error("kafka: %s", errstr);
            rd_kafka_destroy(rk);
            PQfinish(db);
            return 1;
        }
    } else {
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, topic, RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t err = rd_kafka_subscribe(rk, t);
        rd_kafka_topic_partition_list_destroy(t);
        if (err) {
            log_error("subscribe to %s: %s", topic, rd_kafka_err2str(err));
            rd_kafka_destroy(rk);
            PQfinish(db);
            return 1;
        }
        log_info("projecting %s as group %s from %s into PostgreSQL", topic, config_get(cfg, "group-id"),
                 config_get(cfg, "brokers"));
    }
    unsigned long long total = 0, batches = 0;
    int status = 0;
    while (!stop) {
        json_t *batch = json_array();
        int n = 0;
        uint64_t first = 0;
        while (!stop && n < batch_size) {
            int wait =
                first ? (int)(batch_wait > mono_ms() - first ? batch_wait - (mono_ms() - first) : 0) : 500;
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, wait);
            if (!m) {
                if (first || rebuild)
                    break;
                continue;
            }
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                eofs++;
                rd_kafka_message_destroy(m);
                if (rebuild && eofs >= nparts)
                    break;
                continue;
            }
            if (m->err) {
                log_warn("consumer: %s", rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                continue;
            }
            if (batch_add(batch, m) == 0)
                n++;
            if (!first)
                first = mono_ms();
            rd_kafka_message_destroy(m);
        }
        if (n > 0) {
            char *text = json_dumps(batch, JSON_COMPACT);
            int rc = apply_batch(&db, url, text, n);
            free(text);
            if (rc < 0) {
                json_decref(batch);
                break; /* stopped before PostgreSQL took it: not committed, so replayed later */
            }
            total += (unsigned long long)n;
            batches++;
            if (!rebuild) {
                rd_kafka_resp_err_t err = rd_kafka_commit(rk, NULL, 0);
                if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
                    log_warn("committing offsets after a batch of %d: %s (the batch will be re-applied, "
                             "harmlessly)",
                             n, rd_kafka_err2str(err));
            }
            if (batches % 100 == 0 || rebuild)
                log_info("%llu events in %llu batches", total, batches);
        }
        json_decref(batch);
        if (rebuild && eofs >= nparts)
            break;
    }
    if (rebuild && !stop)
        log_info("rebuild done: %llu events replayed", total);
    else
        log_info("stopping after %llu events in %llu batches", total, batches);
    if (rebuild && stop)
        status = 1;
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    PQfinish(db);
    return status;
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
    http_thread_t *http = NULL;
    const char *listen = config_get(&cfg, "http-listen");
    if (strcmp(mode, "run") == 0 && listen && *listen && !(http = http_start(listen))) {
        codec_term();
        config_free(&cfg);
        return 1;
    }
    rc = strcmp(mode, "migrate") == 0 ? 0 : run(&cfg, strcmp(mode, "rebuild") == 0);
    http_stop(http);
    codec_term();
    config_free(&cfg);
    return rc;
}
