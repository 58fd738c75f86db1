/* helmq install|upgrade|rollback|uninstall: build a command from a JSON
 * document and/or flags, validate it with the worker's own rules, and publish
 * it to the commands topic with the idempotent producer, keyed
 * tenantId/namespace/releaseName. Nothing is sent when validation fails. */
#include "cli.h"
#include "cmddoc.h"
#include "codec.h"
#include "config.h"
#include "kafka.h"
#include "log.h"
#include "util.h"
#include "validate.h"

#include <errno.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void send_usage(const char *verb) {
    printf("Usage: helmq %s [RELEASE] [OPTIONS]\n\n", verb);
    if (strcmp(verb, "install") == 0)
        printf("Publishes an install command. The document given with -f may be the seed's\n"
               "install JSON as it is (tenantId, releaseName, namespace, chartName, chartVersion,\n"
               "appVersion, valuesOverride as an object, timeout, atomic, waitForJobs).\n");
    else if (strcmp(verb, "upgrade") == 0)
        printf("Publishes an upgrade command: a new revision with a chart version and values.\n");
    else if (strcmp(verb, "rollback") == 0)
        printf("Publishes a rollback command: back to --revision, or to the previous deployed one.\n");
    else
        printf("Publishes an uninstall command; the release record and history are kept.\n");
    printf("Prints the commandId on stdout once the broker has acknowledged the record; with\n"
           "--wait, then the terminal event (JSON) once the worker has finished the command.\n"
           "Exit codes: 0 delivered (with --wait: succeeded), 1 delivery failed or no outcome in time,\n"
           "2 invalid input (nothing sent), 3 (with --wait) the command failed, was rolled back or "
           "rejected.\n\nOptions:\n");
    config_usage(cli_send_opts, stdout);
}

/* Prints err the way every refusal of input is printed; returns EXIT_USAGE.
 * A field that does not read as a name is quoted (validate_field_text). */
static int refuse(const char *verb, const validate_error_t *err) {
    char field[VALIDATE_FIELD_TEXT_SIZE];
    fprintf(stderr, "helmq %s: invalid %s (rule %s): %s\n", verb,
            err->whole ? "input" : validate_field_text(err, field, sizeof(field)), err->rule, err->message);
    return EXIT_USAGE;
}

typedef struct delivery {
    int done;
    rd_kafka_resp_err_t err;
    int32_t partition;
    int64_t offset;
} delivery_t;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    delivery_t *d = m->_private;
    d->done = 1;
    d->err = m->err;
    d->partition = m->partition;
    d->offset = m->offset;
}

static int publish(const config_t *cfg, const char *key, const unsigned char *buf, size_t len,
                   const char *command_id) {
    char errstr[512];
    const char *topic = config_get(cfg, "commands-topic");
    rd_kafka_conf_t *conf = kafka_producer_conf_new(cfg, config_get(cfg, "brokers"), errstr, sizeof(errstr));
    if (!conf || kafka_conf_set(conf, "enable.idempotence", "true", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "message.timeout.ms", config_get(cfg, "delivery-timeout-ms"), errstr,
                       sizeof(errstr)) < 0) {
        fprintf(stderr, "helmq: kafka configuration: %s\n", errstr);
        if (conf)
            rd_kafka_conf_destroy(conf);
        return EXIT_USAGE;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "helmq: kafka: %s\n", errstr);
        rd_kafka_conf_destroy(conf);
        return EXIT_RUNTIME;
    }
    delivery_t d = {0};
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)buf, len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(&d), RD_KAFKA_V_END);
    if (err) {
        fprintf(stderr, "helmq: cannot queue the command for %s: %s\n", topic, rd_kafka_err2str(err));
        rd_kafka_destroy(rk);
        return EXIT_RUNTIME;
    }
    long timeout_ms = config_int(cfg, "delivery-timeout-ms") + 5000;
    rd_kafka_flush(rk, (int)timeout_ms);
    while (!d.done && rd_kafka_outq_len(rk) > 0)
        rd_kafka_poll(rk, 100);
    rd_kafka_destroy(rk);
    if (!d.done || d.err) {
        fprintf(stderr, "helmq: command %s was NOT delivered to %s (brokers %s): %s\n", command_id, topic,
                config_get(cfg, "brokers"), d.done ? rd_kafka_err2str(d.err) : "timed out");
        return EXIT_RUNTIME;
    }
    log_info("commandId=%s key=%s delivered to %s [%d] at offset %lld", command_id, key, topic,
             (int)d.partition, (long long)d.offset);
    return 0;
}

/* The events topic's end offsets, read before sending: the outcome is after them. */
static rd_kafka_topic_partition_list_t *events_end(const config_t *cfg, char *errstr, size_t errstr_size) {
    const char *topic = config_get(cfg, "events-topic");
    rd_kafka_conf_t *conf = kafka_conf_new(cfg, config_get(cfg, "brokers"), errstr, errstr_size);
    if (!conf || kafka_conf_set(conf, "group.id", "helmq-cli-wait", errstr, errstr_size) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", errstr, errstr_size) < 0) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!rk)
        return NULL;
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    rd_kafka_topic_partition_list_t *l = NULL;
    if (!err && md->topic_cnt == 1 && !md->topics[0].err) {
        l = rd_kafka_topic_partition_list_new(md->topics[0].partition_cnt);
        for (int i = 0; i < md->topics[0].partition_cnt; i++) {
            int64_t lo = 0, hi = 0;
            int32_t id = md->topics[0].partitions[i].id;
            if (rd_kafka_query_watermark_offsets(rk, topic, id, &lo, &hi, 10000) != 0)
                hi = RD_KAFKA_OFFSET_BEGINNING;
            rd_kafka_topic_partition_list_add(l, topic, id)->offset = hi;
        }
    } else {
        snprintf(errstr, errstr_size, "no topic %s: %s", topic,
                 err ? rd_kafka_err2str(err) : rd_kafka_err2str(md->topics[0].err));
    }
    if (md)
        rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return l;
}

/* Reads the events topic from start until the command's terminal event. */
static int wait_outcome(const config_t *cfg, rd_kafka_topic_partition_list_t *start, const char *command_id,
                        long timeout_s) {
    char errstr[512];
    rd_kafka_conf_t *conf = kafka_conf_new(cfg, config_get(cfg, "brokers"), errstr, sizeof(errstr));
    if (!conf || kafka_conf_set(conf, "group.id", "helmq-cli-wait", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) < 0) {
        fprintf(stderr, "helmq: %s\n", errstr);
        return EXIT_RUNTIME;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "helmq: %s\n", errstr);
        return EXIT_RUNTIME;
    }
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_assign(rk, start);
    int64_t began = now_ms(), last_note = began;
    int rc = -1;
    fprintf(stderr, "helmq: waiting for the outcome of %s (up to %lds)\n", command_id, timeout_s);
    while (rc < 0) {
        if (now_ms() - began > timeout_s * 1000) {
            fprintf(stderr, "helmq: no outcome for %s after %lds; it may still complete (see helmq events)\n",
                    command_id, timeout_s);
            rc = EXIT_RUNTIME;
            break;
        }
        if (now_ms() - last_note >= 5000) {
            fprintf(stderr, "helmq: still waiting for %s (%llds)\n", command_id,
                    (long long)(now_ms() - began) / 1000);
            last_note = now_ms();
        }
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 200);
        if (!m)
            continue;
        codec_type_t t;
        json_t *ev = NULL;
        if (!m->err && codec_decode(m->payload, m->len, &t, &ev, errstr, sizeof(errstr)) == 0 &&
            t == CODEC_EVENT) {
            const char *cid = json_string_value(json_object_get(ev, "commandId"));
            if (cid && strcmp(cid, command_id) == 0) {
                const char *type = json_string_value(json_object_get(ev, "eventType"));
                if (!json_is_true(json_object_get(ev, "terminal"))) {
                    fprintf(stderr, "helmq: %s: %s (revision %lld)\n", type,
                            json_string_value(json_object_get(ev, "status")),
                            (long long)json_integer_value(json_object_get(ev, "revision")));
                } else {
                    char *out = json_dumps(ev, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
                    printf("%s\n", out);
                    free(out);
                    const char *msg = json_string_value(json_object_get(ev, "errorMessage"));
                    fprintf(stderr, "helmq: %s: %s, revision %lld%s%s%s%s\n", type,
                            json_string_value(json_object_get(ev, "status")),
                            (long long)json_integer_value(json_object_get(ev, "revision")), msg ? " -- " : "",
                            msg ? json_string_value(json_object_get(ev, "errorCode")) : "", msg ? ": " : "",
                            msg ? msg : "");
                    rc = strcmp(type, "succeeded") == 0 ? 0 : 3;
                }
            }
        }
        json_decref(ev);
        rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

int cli_send(const char *verb, int argc, char **argv) {
    char errstr[512];
    config_t cfg;
    json_t *doc = NULL;
    unsigned char *buf = NULL;
    size_t len = 0;
    int rc = config_parse(&cfg, cli_send_opts, argc, argv, 2, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP) {
        send_usage(verb);
        config_free(&cfg);
        return 0;
    }
    if (rc < 0 || cfg.nargs > 1) {
        fprintf(stderr, "helmq %s: %s\n", verb,
                rc < 0 ? errstr : "at most one argument, the release name (see --help)");
        rc = EXIT_USAGE;
        goto out;
    }

    validate_error_t verr;
    const char *file = config_get(&cfg, "file");
    doc = file ? cli_load_document(file, NULL, CLI_MAX_DOCUMENT, &verr) : json_object();
    if (!doc) {
        rc = refuse(verb, &verr);
        goto out;
    }
    struct passwd *pw = getpwuid(geteuid());
    if (cli_command_build(doc, verb, &cfg, pw ? pw->pw_name : "unknown", &verr) < 0) {
        rc = refuse(verb, &verr);
        goto out;
    }
    if (codec_encode(CODEC_COMMAND, doc, &buf, &len, errstr, sizeof(errstr)) < 0) {
        fprintf(stderr, "helmq %s: invalid %s\n", verb, errstr);
        rc = EXIT_USAGE;
        goto out;
    }
    const char *command_id = json_string_value(json_object_get(doc, "commandId"));
    if (config_bool(&cfg, "dry-run")) {
        codec_fill_defaults(CODEC_COMMAND, doc, errstr, sizeof(errstr));
        char *out = json_dumps(doc, JSON_PRESERVE_ORDER | JSON_COMPACT);
        printf("%s\n", out ? out : "{}");
        free(out);
        rc = 0;
        goto out;
    }
    char key[512];
    snprintf(key, sizeof(key), "%s/%s/%s", json_string_value(json_object_get(doc, "tenantId")),
             json_string_value(json_object_get(doc, "namespace")),
             json_string_value(json_object_get(doc, "releaseName")));
    rd_kafka_topic_partition_list_t *start = NULL;
    if (config_bool(&cfg, "wait")) {
        start = events_end(&cfg, errstr, sizeof(errstr));
        if (!start) {
            fprintf(stderr, "helmq %s: --wait: %s\n", verb, errstr);
            rc = EXIT_RUNTIME;
            goto out;
        }
    }
    rc = publish(&cfg, key, buf, len, command_id);
    if (rc == 0) {
        printf("%s\n", command_id);
        fflush(stdout);
    }
    if (rc == 0 && start) {
        long t = config_get(&cfg, "wait-timeout")
                     ? config_int(&cfg, "wait-timeout")
                     : (long)json_integer_value(json_object_get(doc, "timeout")) + 120;
        if (t <= 120 && !json_object_get(doc, "timeout"))
            t = 300 + 120;
        rc = wait_outcome(&cfg, start, command_id, t);
    }
    if (start)
        rd_kafka_topic_partition_list_destroy(start);
out:
    free(buf);
    json_decref(doc);
    config_free(&cfg);
    return rc;
}
