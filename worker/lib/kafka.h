/* librdkafka glue shared by the programs: configuration from config_t
 * (bootstrap servers plus pass-through properties), logging through log.h,
 * and the default topic names of CONTRACTS.md. */
#ifndef HELMQ_KAFKA_H
#define HELMQ_KAFKA_H

#include "config.h"

#include <librdkafka/rdkafka.h>

#define KAFKA_DEFAULT_BROKERS "localhost:9092"
#define KAFKA_TOPIC_COMMANDS "helm.release.commands"
#define KAFKA_TOPIC_EVENTS "helm.release.events"
#define KAFKA_TOPIC_DLQ "helm.release.commands.dlq"

/* How every helmq producer maps a record key to a partition: murmur2, as
 * Java's default partitioner (and Go's and JavaScript's Kafka clients) do, so
 * that a release's commands land on one partition whoever sends them
 * (librdkafka's own default, consistent_random, is CRC-32). Records without
 * a key go to a random partition. */
#define KAFKA_PARTITIONER "murmur2_random"

/* A new librdkafka configuration with bootstrap.servers = brokers, the pass-
 * through properties of c applied last (so users can override anything),
 * and librdkafka's logs routed to log.h. Returns NULL with errstr filled when
 * a property is unknown or invalid. The caller owns the result. */
rd_kafka_conf_t *kafka_conf_new(const config_t *c, const char *brokers, char *errstr, size_t errstr_size);

/* kafka_conf_new for a producer: partitioner=KAFKA_PARTITIONER too, set
 * before the pass-through properties (so -X partitioner=... overrides it).
 * Consumers use kafka_conf_new: librdkafka warns about producer properties
 * given to a consumer. */
rd_kafka_conf_t *kafka_producer_conf_new(const config_t *c, const char *brokers, char *errstr,
                                         size_t errstr_size);

/* Sets one property or fills errstr; returns 0 or -1. */
int kafka_conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                   size_t errstr_size);

#endif
