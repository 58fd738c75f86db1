/* librdkafka configuration and logging shared by every program. */
#include "kafka.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf) {
    /* syslog levels: 0-3 error, 4 warning, 5-6 info, 7 debug */
    if (level <= 3)
        log_error("kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
    else if (level == 4)
        log_warn("kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
    else if (level <= 6)
        log_info("kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
    else
        log_debug("kafka %s: %s: %s", rd_kafka_name(rk), fac, buf);
}

int kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                   size_t errstr_size) {
    if (rd_kafka_conf_set(conf, key, value, errstr, errstr_size) != RD_KAFKA_CONF_OK)
        return -1;
    return 0;
}

/* The configuration of kafka_conf_new; producer: partition keys as Java does. */
static rd_kafka_conf_t *conf_new(const config_t *c, const char *brokers, int producer, char *errstr,
                                 size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    if (brokers && kafka_conf_set(conf, "bootstrap.servers", brokers, errstr, errstr_size) < 0)
        goto fail;
    /* Before the pass-through properties, so that -X partitioner=... wins. */
    if (producer && kafka_conf_set(conf, "partitioner", KAFKA_PARTITIONER, errstr, errstr_size) < 0)
        goto fail;
    for (int i = 0; c && i < c->kafka_count; i++) {
        char *kv = strdup(c->kafka_props[i]);
        char *eq = kv ? strchr(kv, '=') : NULL;
        if (!eq) {
            free(kv);
            goto fail;
        }
        *eq = '\0';
        int rc = kafka_conf_set(conf, kv, eq + 1, errstr, errstr_size);
        free(kv);
        if (rc < 0)
            goto fail;
    }
    return conf;
fail:
    rd_kafka_conf_destroy(conf);
    return NULL;
}

rd_kafka_conf_t *kafka_conf_new(const config_t *c, const char *brokers, char *errstr, size_t errstr_size) {
    return conf_new(c, brokers, 0, errstr, errstr_size);
}

rd_kafka_conf_t *kafka_producer_conf_new(const config_t *c, const char *brokers, char *errstr,
                                         size_t errstr_size) {
    return conf_new(c, brokers, 1, errstr, errstr_size);
}
