/* helmq-broker: an embedded Kafka broker for development and tests.
 *
 * It runs librdkafka's mock cluster (rdkafka_mock.h), a Kafka protocol
 * implementation that any client reaches over TCP, creates the commands,
 * events and DLQ topics, prints its bootstrap address and serves until
 * SIGINT or SIGTERM. Limits (also in the README): no TLS or SASL, no
 * transaction markers, and each partition keeps a bounded log.
 *
 * For fault-injection tests, --control PATH opens a unix-domain stream socket
 * that takes one text command per line (`down 1`, `up all`, `rtt 1 500`,
 * `errors OffsetCommit NOT_COORDINATOR 3`, `clear`, ...) and answers each
 * with one line, `ok ...` or `error ...` (see control_help below and
 * tests/faults/README.md). It is served from the main loop with poll(). */
#include "config.h"
#include "kafka.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <librdkafka/rdkafka_mock.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static const config_opt_t broker_opts[] = {
    {"partitions", 'p', "HELMQ_BROKER_PARTITIONS", CONFIG_INT, "6", "partitions of each topic"},
    {"brokers", 0, "HELMQ_BROKER_COUNT", CONFIG_INT, "1", "number of mock brokers in the cluster"},
    {"address-file", 'a', "HELMQ_BROKER_ADDRESS_FILE", CONFIG_STRING, NULL,
     "also write the bootstrap address to this file (written atomically once serving)"},
    {"commands-topic", 0, "HELMQ_COMMANDS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_COMMANDS, "commands topic"},
    {"events-topic", 0, "HELMQ_EVENTS_TOPIC", CONFIG_STRING, KAFKA_TOPIC_EVENTS, "events topic"},
    {"dlq-topic", 0, "HELMQ_DLQ_TOPIC", CONFIG_STRING, KAFKA_TOPIC_DLQ, "dead-letter topic for undecodable commands"},
    {"control", 0, "HELMQ_BROKER_CONTROL", CONFIG_STRING, NULL,
     "fault injection: serve text commands (down, up, rtt, errors, clear, ...) on a unix socket at this path"},
    {"log-level", 0, "HELMQ_LOG_LEVEL", CONFIG_STRING, "info", "error, warn, info or debug"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

static void usage(FILE *out) {
    fprintf(out, "Usage: helmq-broker [OPTIONS]\n\n"
                 "Runs an embedded Kafka broker (librdkafka's mock cluster) with the helmq topics,\n"
                 "prints its bootstrap address on stdout and serves until SIGINT or SIGTERM.\n"
                 "For development and tests: no TLS/SASL, no transactions, bounded log per partition.\n\n"
                 "Options:\n");
    config_usage(broker_opts, out);
}

static int write_address_file(const char *path, const char *addr) {
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n", addr);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    char errstr[512];
    config_t cfg;
    int rc = config_parse(&cfg, broker_opts, argc, argv, 1, errstr, sizeof(errstr));
    if (rc == CONFIG_HELP) {
        usage(stdout);
        config_free(&cfg);
        return 0;
    }
    if (rc < 0 || cfg.nargs > 0) {
        fprintf(stderr, "helmq-broker: %s\n", rc < 0 ? errstr : "unexpected argument (see --help)");
        config_free(&cfg);
        return 2;
    }
    if (log_init("helmq-broker", config_get(&cfg, "log-level")) < 0) {
        fprintf(stderr, "helmq-broker: unknown log level\n");
        config_free(&cfg);
        return 2;
    }
    int partitions = (int)config_int(&cfg, "partitions");
    int nbrokers = (int)config_int(&cfg, "brokers");
    if (partitions < 1 || partitions > 1000 || nbrokers < 1 || nbrokers > 16) {
        fprintf(stderr, "helmq-broker: --partitions must be 1..1000 and --brokers 1..16\n");
        config_free(&cfg);
        return 2;
    }

    /* The mock cluster lives inside a client instance; a producer handle that
     * is never used to produce is the lightest host. */
    rd_kafka_conf_t *conf = kafka_conf_new(&cfg, NULL, errstr, sizeof(errstr));
    if (!conf) {
        fprintf(stderr, "helmq-broker: %s\n", errstr);
        config_free(&cfg);
        return 2;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "helmq-broker: %s\n", errstr);
        config_free(&cfg);
        return 1;
    }
    conf = NULL;
    rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, nbrokers);
    if (!mc) {
        fprintf(stderr, "helmq-broker: cannot start the mock cluster\n");
        rd_kafka_destroy(rk);
        config_free(&cfg);
        return 1;
    }
    const char *topics[] = {config_get(&cfg, "commands-topic"), config_get(&cfg, "events-topic"),
                            config_get(&cfg, "dlq-topic")};
    for (int i = 0; i < 3; i++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(mc, topics[i], partitions, nbrokers < 3 ? nbrokers : 3);
        if (err) {
            fprintf(stderr, "helmq-broker: creating topic %s: %s\n", topics[i], rd_kafka_err2str(err));
            rd_kafka_mock_cluster_destroy(mc);
            rd_kafka_destroy(rk);
            config_free(&cfg);
            return 1;
        }
    }
    const char *addr = rd_kafka_mock_cluster_bootstraps(mc);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    const char *address_file = config_get(&cfg, "address-file");
    if (address_file && write_address_file(address_file, addr) < 0) {
        fprintf(stderr, "helmq-broker: cannot write %s\n", address_file);
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        config_free(&cfg);
        return 1;
    }
    printf("%s\n", addr);
    fflush(stdout);
    log_info("serving at %s: topics %s, %s, %s with %d partitions each", addr, topics[0], topics[1],
             topics[2], partitions);

    /* sleep() returns early on a signal; the flag is checked at least once a second. */
    while (!stop_signal)
        sleep(1);

    log_info("signal %d: stopping", (int)stop_signal);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    if (address_file)
        unlink(address_file);
    config_free(&cfg);
    return 0;
}
