/* helmq events: read the events topic (or any helmq topic) and print each
 * record as one line of JSON, for people, scripts and tests. Reads from the
 * beginning (or the end with --follow-new) of every partition, without a
 * consumer group, so it never disturbs the projector or dashboards. */
#include "cli.h"
#include "codec.h"
#include "config.h"
#include "kafka.h"
#include "util.h"

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const config_opt_t events_opts[] = {
    {"brokers", 'b', "HELMQ_BROKERS", CONFIG_STRING, KAFKA_DEFAULT_BROKERS, "Kafka bootstrap servers"},
    {"topic", 0, "HELMQ_EVENTS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_EVENTS, "topic to read"},
    {"follow", 'F', NULL, CONFIG_BOOL, "false", "keep reading new records (default: stop at the end)"},
    {"command-id", 0, NULL, CONFIG_STRING, NULL, "only events of this command"},
    {"timeout-ms", 0, NULL, CONFIG_INT, "10000", "give up after this long without reaching the end (exit 1)"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

static volatile sig_atomic_t stop;
static void on_sig(int s) {
    stop = s;
}

int cli_events(int argc, char **argv) {
    char errstr[512];
    config_t cfg;
    int rc = config_parse(&cfg, events_opts, argc, argv, 2, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP) {
        printf("Usage: helmq events [OPTIONS]\n\nPrints every record of the events topic as a line of JSON\n"
               "(with \"_partition\" and \"_offset\"), from the beginning, and stops at the end unless "
               "--follow.\n\n"
               "Options:\n");
        config_usage(events_opts, stdout);
        config_free(&cfg);
        return 0;
    }
    if (rc < 0 || cfg.nargs) {
        fprintf(stderr, "helmq events: %s\n", rc < 0 ? errstr : "unexpected argument");
        config_free(&cfg);
        return EXIT_USAGE;
    }
    const char *topic = config_get(&cfg, "topic");
    const char *only = config_get(&cfg, "command-id");
    int follow = config_bool(&cfg, "follow");
    rd_kafka_conf_t *conf = kafka_conf_new(&cfg, config_get(&cfg, "brokers"), errstr, sizeof(errstr));
    if (!conf || kafka_conf_set(conf, "group.id", "helmq-cli-events", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "enable.partition.eof", "true", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) < 0) {
        fprintf(stderr, "helmq events: %s\n", errstr);
        config_free(&cfg);
        return EXIT_USAGE;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "helmq events: %s\n", errstr);
        config_free(&cfg);
        return EXIT_RUNTIME;
    }
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, (int)config_int(&cfg, "timeout-ms"));
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err) {
        fprintf(stderr, "helmq events: no topic %s at %s: %s\n", topic, config_get(&cfg, "brokers"),
                err             ? rd_kafka_err2str(err)
                : md->topic_cnt ? rd_kafka_err2str(md->topics[0].err)
                                : "no metadata");
        if (md)
            rd_kafka_metadata_destroy(md);
        rd_kafka_destroy(rk);
        config_free(&cfg);
        return EXIT_RUNTIME;
    }
    int nparts = md->topics[0].partition_cnt;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(nparts);
    for (int i = 0; i < nparts; i++)
        rd_kafka_topic_partition_list_add(parts, topic, md->topics[0].partitions[i].id)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_metadata_destroy(md);
    rd_kafka_assign(rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    signal(SIGINT, on_sig);
    signal(SIGTERM, on_sig);

    int eof = 0, status = 0;
    long idle_ms = 0, limit = config_int(&cfg, "timeout-ms");
    while (!stop) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            idle_ms += 100;
            if (!follow && idle_ms >= limit) {
                fprintf(stderr, "helmq events: did not reach the end of %s within %ld ms\n", topic, limit);
                status = EXIT_RUNTIME;
                break;
            }
            continue;
        }
        idle_ms = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            if (++eof >= nparts && !follow)
                break;
            continue;
        }
        if (m->err) {
            fprintf(stderr, "helmq events: %s\n", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            continue;
        }
        codec_type_t t;
        json_t *doc = NULL;
        if (codec_decode(m->payload, m->len, &t, &doc, errstr, sizeof(errstr)) != 0) {
            doc = json_pack("{s:s}", "_undecodable", errstr);
        }
        const char *cid = json_string_value(json_object_get(doc, "commandId"));
        /* A UUID matches in any case: the worker writes the lower-case form. */
        if (!only || (cid && (uuid_valid(only) ? strcasecmp(cid, only) : strcmp(cid, only)) == 0)) {
            json_object_set_new(doc, "_partition", json_integer(m->partition));
            json_object_set_new(doc, "_offset", json_integer(m->offset));
            char *line = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
            printf("%s\n", line);
            fflush(stdout);
            free(line);
        }
        json_decref(doc);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    config_free(&cfg);
    return status;
}
