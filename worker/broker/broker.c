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
    {"dlq-topic", 0, "HELMQ_DLQ_TOPIC", CONFIG_STRING, KAFKA_TOPIC_DLQ,
     "dead-letter topic for undecodable commands"},
    {"control", 0, "HELMQ_BROKER_CONTROL", CONFIG_STRING, NULL,
     "fault injection: serve text commands (down, up, rtt, errors, clear, ...) on a unix socket at this "
     "path"},
    {"log-level", 0, "HELMQ_LOG_LEVEL", CONFIG_STRING, "info", "error, warn, info or debug"},
    {NULL, 0, NULL, 0, NULL, NULL},
};

static const char control_help[] =
    "Fault injection (--control PATH): a unix-domain stream socket at PATH takes one command per\n"
    "line and answers each with one line, \"ok [DETAIL]\" or \"error MESSAGE\". Broker ids are 1..N\n"
    "(--brokers) or \"all\"; API keys are numbers or names (Produce=0, Fetch=1, ListOffsets=2,\n"
    "Metadata=3, OffsetCommit=8, OffsetFetch=9, FindCoordinator=10, JoinGroup=11, Heartbeat=12,\n"
    "LeaveGroup=13, SyncGroup=14, ApiVersions=18, InitProducerId=22); error codes are numbers or\n"
    "librdkafka's names (NOT_LEADER_FOR_PARTITION, NOT_COORDINATOR, REQUEST_TIMED_OUT, _TRANSPORT\n"
    "to drop the connection, ...). tests/faults/brokerctl sends one command from a shell.\n"
    "  down ID|all                        disconnect the broker and refuse new connections\n"
    "  up ID|all                          accept connections again\n"
    "  rtt ID|all MS                      delay every response of the broker by MS milliseconds\n"
    "  errors APIKEY ERR COUNT            the next COUNT requests of APIKEY (any broker) fail with ERR\n"
    "  broker-errors ID APIKEY ERR COUNT [RTT_MS]   the same on one broker, each delayed by RTT_MS\n"
    "  topic-error TOPIC ERR              Metadata requests report ERR for TOPIC (0 clears)\n"
    "  clear [APIKEY]                     empty the cluster-wide error stacks (all API keys, or one) and\n"
    "                                     the topic errors (per-broker stacks drain only by requests)\n"
    "  reset                              clear, every broker up, every rtt 0\n"
    "  status                             ok brokers=N down=IDS rtt=ID:MS,... pending=APIKEY:COUNT,...\n"
    "  ping | help\n";

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) {
    stop_signal = sig;
}

static void usage(FILE *out) {
    fprintf(out, "Usage: helmq-broker [OPTIONS]\n\n"
                 "Runs an embedded Kafka broker (librdkafka's mock cluster) with the helmq topics,\n"
                 "prints its bootstrap address on stdout and serves until SIGINT or SIGTERM.\n"
                 "For development and tests: no TLS/SASL, no transactions, bounded log per partition.\n\n"
                 "Options:\n");
    config_usage(broker_opts, out);
    fprintf(out, "\n%s", control_help);
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

/* --- the control socket (fault injection) ---------------------------------- */

#define CONTROL_MAX_CLIENTS 16
#define CONTROL_LINE_MAX 1024
#define MAX_TOPIC_ERRORS 32

static const struct {
    const char *name;
    int key;
} api_keys[] = {
    {"Produce", 0},
    {"Fetch", 1},
    {"ListOffsets", 2},
    {"Metadata", 3},
    {"OffsetCommit", 8},
    {"OffsetFetch", 9},
    {"FindCoordinator", 10},
    {"JoinGroup", 11},
    {"Heartbeat", 12},
    {"LeaveGroup", 13},
    {"SyncGroup", 14},
    {"DescribeGroups", 15},
    {"ListGroups", 16},
    {"SaslHandshake", 17},
    {"ApiVersions", 18},
    {"CreateTopics", 19},
    {"DeleteTopics", 20},
    {"DeleteRecords", 21},
    {"InitProducerId", 22},
    {"OffsetForLeaderEpoch", 23},
    {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25},
    {"EndTxn", 26},
    {"TxnOffsetCommit", 28},
    {NULL, 0},
};
#define API_KEY_MAX 100 /* keys accepted as numbers: 0..API_KEY_MAX-1 */

typedef struct control_client {
    int fd;
    size_t len;
    char buf[CONTROL_LINE_MAX];
} control_client_t;

typedef struct control {
    rd_kafka_mock_cluster_t *mc;
    int nbrokers;
    int listen_fd;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    control_client_t clients[CONTROL_MAX_CLIENTS];
    int nclients;
    int *rtt;                         /* per broker (index id-1), as last set */
    int *down;                        /* per broker */
    int cluster_pending[API_KEY_MAX]; /* cluster-wide errors pushed (an upper bound: requests consume them) */
    char *topic_errors[MAX_TOPIC_ERRORS];
} control_t;

static int parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_api_key(const char *s) {
    long v;
    if (parse_long(s, 0, API_KEY_MAX - 1, &v) == 0)
        return (int)v;
    for (int i = 0; api_keys[i].name; i++)
        if (strcasecmp(s, api_keys[i].name) == 0 ||
            (strncasecmp(s, api_keys[i].name, strlen(api_keys[i].name)) == 0 &&
             strcasecmp(s + strlen(api_keys[i].name), "Request") == 0))
            return api_keys[i].key;
    return -1;
}

static const char *api_key_name(int key) {
    for (int i = 0; api_keys[i].name; i++)
        if (api_keys[i].key == key)
            return api_keys[i].name;
    return "?";
}

/* An error code by number or by librdkafka's name (with or without the
 * RD_KAFKA_RESP_ERR_ prefix). Returns 0 and sets *err, or -1. */
static int parse_error(const char *s, rd_kafka_resp_err_t *err) {
    long v;
    if (parse_long(s, -1000, 10000, &v) == 0) {
        *err = (rd_kafka_resp_err_t)v;
        return 0;
    }
    if (strncasecmp(s, "RD_KAFKA_RESP_ERR_", 18) == 0)
        s += 18;
    const struct rd_kafka_err_desc *descs;
    size_t n;
    rd_kafka_get_err_descs(&descs, &n);
    for (size_t i = 0; i < n; i++) {
        if (descs[i].name && strcasecmp(descs[i].name, s) == 0) {
            *err = descs[i].code;
            return 0;
        }
    }
    return -1;
}

/* "all" -> 0 (every broker), else 1..nbrokers; -1 when invalid. */
static int parse_broker(const control_t *ctl, const char *s) {
    long v;
    if (s && strcasecmp(s, "all") == 0)
        return 0;
    if (parse_long(s, 1, ctl->nbrokers, &v) < 0)
        return -1;
    return (int)v;
}

static void topic_error_note(control_t *ctl, const char *topic, int set) {
    int free_slot = -1;
    for (int i = 0; i < MAX_TOPIC_ERRORS; i++) {
        if (ctl->topic_errors[i] && strcmp(ctl->topic_errors[i], topic) == 0) {
            if (!set) {
                free(ctl->topic_errors[i]);
                ctl->topic_errors[i] = NULL;
            }
            return;
        }
        if (!ctl->topic_errors[i] && free_slot < 0)
            free_slot = i;
    }
    if (set && free_slot >= 0)
        ctl->topic_errors[free_slot] = strdup(topic);
}

static void control_clear(control_t *ctl, int only_key) {
    for (int k = 0; k < API_KEY_MAX; k++) {
        if (only_key >= 0 && k != only_key)
            continue;
        rd_kafka_mock_clear_request_errors(ctl->mc, (int16_t)k);
        ctl->cluster_pending[k] = 0;
    }
    if (only_key >= 0)
        return;
    for (int i = 0; i < MAX_TOPIC_ERRORS; i++) {
        if (ctl->topic_errors[i]) {
            rd_kafka_mock_topic_set_error(ctl->mc, ctl->topic_errors[i], RD_KAFKA_RESP_ERR_NO_ERROR);
            free(ctl->topic_errors[i]);
            ctl->topic_errors[i] = NULL;
        }
    }
}

static int set_updown(control_t *ctl, int id, int up, char *reply, size_t size) {
    for (int b = id ? id : 1; b <= (id ? id : ctl->nbrokers); b++) {
        rd_kafka_resp_err_t err =
            up ? rd_kafka_mock_broker_set_up(ctl->mc, b) : rd_kafka_mock_broker_set_down(ctl->mc, b);
        if (err) {
            snprintf(reply, size, "error broker %d: %s", b, rd_kafka_err2str(err));
            return -1;
        }
        ctl->down[b - 1] = !up;
    }
    return 0;
}

static int set_rtt(control_t *ctl, int id, int ms, char *reply, size_t size) {
    for (int b = id ? id : 1; b <= (id ? id : ctl->nbrokers); b++) {
        rd_kafka_resp_err_t err = rd_kafka_mock_broker_set_rtt(ctl->mc, b, ms);
        if (err) {
            snprintf(reply, size, "error broker %d: %s", b, rd_kafka_err2str(err));
            return -1;
        }
        ctl->rtt[b - 1] = ms;
    }
    return 0;
}

static void control_status(control_t *ctl, char *reply, size_t size) {
    size_t n = (size_t)snprintf(reply, size, "ok brokers=%d down=", ctl->nbrokers);
    int any = 0;
    for (int b = 1; b <= ctl->nbrokers && n < size; b++)
        if (ctl->down[b - 1])
            n += (size_t)snprintf(reply + n, size - n, "%s%d", any++ ? "," : "", b);
    n += (size_t)snprintf(reply + n < reply + size ? reply + n : reply, n < size ? size - n : 0, " rtt=");
    for (int b = 1; b <= ctl->nbrokers && n < size; b++)
        n += (size_t)snprintf(reply + n, size - n, "%s%d:%d", b > 1 ? "," : "", b, ctl->rtt[b - 1]);
    if (n < size)
        n += (size_t)snprintf(reply + n, size - n, " pending=");
    any = 0;
    for (int k = 0; k < API_KEY_MAX && n < size; k++) {
        size_t cnt = 0, total = 0;
        for (int b = 1; b <= ctl->nbrokers; b++)
            if (rd_kafka_mock_broker_error_stack_cnt(ctl->mc, b, (int16_t)k, &cnt) == 0)
                total += cnt;
        if (total)
            n += (size_t)snprintf(reply + n, size - n, "%s%s:%zu(broker)", any++ ? "," : "", api_key_name(k),
                                  total);
        if (ctl->cluster_pending[k] && n < size)
            n += (size_t)snprintf(reply + n, size - n, "%s%s:%d(cluster,pushed)", any++ ? "," : "",
                                  api_key_name(k), ctl->cluster_pending[k]);
    }
}

/* Runs one command line; writes the one-line reply (without newline). */
static void control_exec(control_t *ctl, char *line, char *reply, size_t size) {
    char *argv[8];
    int argc = 0;
    char *save = NULL;
    for (char *t = strtok_r(line, " \t\r", &save); t && argc < 8; t = strtok_r(NULL, " \t\r", &save))
        argv[argc++] = t;
    if (argc == 0) {
        snprintf(reply, size, "error empty command (try help)");
        return;
    }
    const char *cmd = argv[0];
    long v, count;
    int id, key;
    rd_kafka_resp_err_t err;
    snprintf(reply, size, "ok");
    if (strcasecmp(cmd, "ping") == 0 && argc == 1) {
        return;
    } else if (strcasecmp(cmd, "help") == 0 && argc == 1) {
        snprintf(reply, size,
                 "ok commands: down ID|all; up ID|all; rtt ID|all MS; errors APIKEY ERR COUNT; "
                 "broker-errors ID APIKEY ERR COUNT [RTT_MS]; topic-error TOPIC ERR; clear [APIKEY]; reset; "
                 "status; ping");
    } else if ((strcasecmp(cmd, "down") == 0 || strcasecmp(cmd, "up") == 0) && argc == 2) {
        if ((id = parse_broker(ctl, argv[1])) < 0) {
            snprintf(reply, size, "error no broker %s (1..%d or all)", argv[1], ctl->nbrokers);
            return;
        }
        set_updown(ctl, id, strcasecmp(cmd, "up") == 0, reply, size);
    } else if (strcasecmp(cmd, "rtt") == 0 && argc == 3) {
        if ((id = parse_broker(ctl, argv[1])) < 0) {
            snprintf(reply, size, "error no broker %s (1..%d or all)", argv[1], ctl->nbrokers);
            return;
        }
        if (parse_long(argv[2], 0, 3600000, &v) < 0) {
            snprintf(reply, size, "error rtt must be 0..3600000 ms, not %s", argv[2]);
            return;
        }
        set_rtt(ctl, id, (int)v, reply, size);
    } else if (strcasecmp(cmd, "errors") == 0 && argc == 4) {
        if ((key = parse_api_key(argv[1])) < 0) {
            snprintf(reply, size, "error unknown API key %s", argv[1]);
            return;
        }
        if (parse_error(argv[2], &err) < 0) {
            snprintf(reply, size, "error unknown error code %s", argv[2]);
            return;
        }
        if (parse_long(argv[3], 1, 100000, &count) < 0) {
            snprintf(reply, size, "error COUNT must be 1..100000, not %s", argv[3]);
            return;
        }
        rd_kafka_resp_err_t *errs = malloc(sizeof(*errs) * (size_t)count);
        if (!errs) {
            snprintf(reply, size, "error out of memory");
            return;
        }
        for (long i = 0; i < count; i++)
            errs[i] = err;
        rd_kafka_mock_push_request_errors_array(ctl->mc, (int16_t)key, (size_t)count, errs);
        free(errs);
        ctl->cluster_pending[key] += (int)count;
        snprintf(reply, size, "ok %ld %s requests will fail with %s", count, api_key_name(key),
                 rd_kafka_err2name(err));
    } else if (strcasecmp(cmd, "broker-errors") == 0 && (argc == 5 || argc == 6)) {
        long rtt = 0;
        if ((id = parse_broker(ctl, argv[1])) <= 0) {
            snprintf(reply, size, "error no broker %s (1..%d)", argv[1], ctl->nbrokers);
            return;
        }
        if ((key = parse_api_key(argv[2])) < 0) {
            snprintf(reply, size, "error unknown API key %s", argv[2]);
            return;
        }
        if (parse_error(argv[3], &err) < 0) {
            snprintf(reply, size, "error unknown error code %s", argv[3]);
            return;
        }
        if (parse_long(argv[4], 1, 100000, &count) < 0 ||
            (argc == 6 && parse_long(argv[5], 0, 3600000, &rtt) < 0)) {
            snprintf(reply, size, "error COUNT must be 1..100000 and RTT_MS 0..3600000");
            return;
        }
        /* The call is variadic: push one (error, rtt) tuple at a time; they queue in order. */
        for (long i = 0; i < count; i++) {
            rd_kafka_resp_err_t e =
                rd_kafka_mock_broker_push_request_error_rtts(ctl->mc, id, (int16_t)key, 1, err, (int)rtt);
            if (e) {
                snprintf(reply, size, "error broker %d: %s", id, rd_kafka_err2str(e));
                return;
            }
        }
        snprintf(reply, size, "ok %ld %s requests to broker %d will fail with %s after %ld ms", count,
                 api_key_name(key), id, rd_kafka_err2name(err), rtt);
    } else if (strcasecmp(cmd, "topic-error") == 0 && argc == 3) {
        if (parse_error(argv[2], &err) < 0) {
            snprintf(reply, size, "error unknown error code %s", argv[2]);
            return;
        }
        rd_kafka_mock_topic_set_error(ctl->mc, argv[1], err);
        topic_error_note(ctl, argv[1], err != RD_KAFKA_RESP_ERR_NO_ERROR);
    } else if (strcasecmp(cmd, "clear") == 0 && argc <= 2) {
        key = -1;
        if (argc == 2 && (key = parse_api_key(argv[1])) < 0) {
            snprintf(reply, size, "error unknown API key %s", argv[1]);
            return;
        }
        control_clear(ctl, key);
    } else if (strcasecmp(cmd, "reset") == 0 && argc == 1) {
        control_clear(ctl, -1);
        if (set_updown(ctl, 0, 1, reply, size) < 0 || set_rtt(ctl, 0, 0, reply, size) < 0)
            return;
    } else if (strcasecmp(cmd, "status") == 0 && argc == 1) {
        control_status(ctl, reply, size);
    } else {
        snprintf(reply, size, "error unknown command or wrong arguments: %s (try help)", cmd);
    }
}

static int control_open(control_t *ctl, const char *path, rd_kafka_mock_cluster_t *mc, int nbrokers) {
    struct sockaddr_un sa;
    memset(ctl, 0, sizeof(*ctl));
    ctl->listen_fd = -1;
    ctl->mc = mc;
    ctl->nbrokers = nbrokers;
    ctl->rtt = calloc((size_t)nbrokers, sizeof(int));
    ctl->down = calloc((size_t)nbrokers, sizeof(int));
    if (!ctl->rtt || !ctl->down)
        return -1;
    if (!path || !*path)
        return 0; /* no control socket */
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "helmq-broker: --control %s: path longer than %zu bytes\n", path,
                sizeof(sa.sun_path) - 1);
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            fprintf(stderr, "helmq-broker: --control %s exists and is not a socket\n", path);
            return -1;
        }
        unlink(path); /* a stale socket of an earlier run */
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        fprintf(stderr, "helmq-broker: socket: %s\n", strerror(errno));
        return -1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path, path, strlen(path) + 1);
    mode_t old = umask(077); /* only this user may inject faults */
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc != 0 || listen(fd, 8) != 0) {
        fprintf(stderr, "helmq-broker: --control %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    ctl->listen_fd = fd;
    snprintf(ctl->path, sizeof(ctl->path), "%s", path);
    return 0;
}

static void control_close(control_t *ctl) {
    for (int i = 0; i < ctl->nclients; i++)
        close(ctl->clients[i].fd);
    ctl->nclients = 0;
    if (ctl->listen_fd >= 0) {
        close(ctl->listen_fd);
        unlink(ctl->path);
        ctl->listen_fd = -1;
    }
    for (int i = 0; i < MAX_TOPIC_ERRORS; i++)
        free(ctl->topic_errors[i]);
    free(ctl->rtt);
    free(ctl->down);
    ctl->rtt = ctl->down = NULL;
}

static void client_drop(control_t *ctl, int i) {
    close(ctl->clients[i].fd);
    ctl->clients[i] = ctl->clients[--ctl->nclients];
}

static void control_accept(control_t *ctl) {
    for (;;) {
        int fd = accept4(ctl->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0)
            return;
        if (ctl->nclients == CONTROL_MAX_CLIENTS) {
            static const char busy[] = "error too many control connections\n";
            if (send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL) < 0)
                log_debug("control: %s", strerror(errno));
            close(fd);
            continue;
        }
        control_client_t *c = &ctl->clients[ctl->nclients++];
        c->fd = fd;
        c->len = 0;
    }
}

/* Reads what the client sent and answers each complete line. Returns -1
 * when the client is gone (or misbehaved) and must be dropped. */
static int control_read(control_t *ctl, control_client_t *c) {
    for (;;) {
        ssize_t n = read(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len);
        if (n == 0)
            return -1;
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 0 : -1;
        c->len += (size_t)n;
        char *nl;
        while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
            char line[CONTROL_LINE_MAX], reply[CONTROL_LINE_MAX + 64], shown[CONTROL_LINE_MAX];
            size_t ll = (size_t)(nl - c->buf);
            memcpy(line, c->buf, ll);
            line[ll] = '\0';
            memmove(c->buf, nl + 1, c->len - ll - 1);
            c->len -= ll + 1;
            for (char *p = line; *p; p++)
                if (!isprint((unsigned char)*p) && *p != '\t')
                    *p = ' ';
            snprintf(shown, sizeof(shown), "%s", line);
            control_exec(ctl, line, reply, sizeof(reply) - 1);
            /* Injected faults are worth seeing in a test's log; queries are not. */
            if (strncasecmp(shown, "status", 6) == 0 || strncasecmp(shown, "ping", 4) == 0 ||
                strncasecmp(shown, "help", 4) == 0)
                log_debug("control: %s -> %s", shown, reply);
            else
                log_warn("control: %s -> %s", shown, reply);
            size_t rl = strlen(reply);
            reply[rl++] = '\n';
            /* Replies are short and the client waits for them: a full socket
             * buffer means a client that does not read; drop it. */
            if (send(c->fd, reply, rl, MSG_NOSIGNAL) != (ssize_t)rl)
                return -1;
        }
        if (c->len == sizeof(c->buf) - 1) {
            static const char longl[] = "error line too long\n";
            if (send(c->fd, longl, sizeof(longl) - 1, MSG_NOSIGNAL) < 0)
                log_debug("control: %s", strerror(errno));
            return -1;
        }
    }
}

/* Waits up to timeout_ms for control traffic and serves it (or just sleeps
 * when there is no control socket: poll() on no descriptors). Returns early
 * on a signal. */
static void control_serve(control_t *ctl, int timeout_ms) {
    struct pollfd pfd[1 + CONTROL_MAX_CLIENTS];
    int n = 0;
    if (ctl->listen_fd >= 0) {
        pfd[n].fd = ctl->listen_fd;
        pfd[n++].events = POLLIN;
        for (int i = 0; i < ctl->nclients; i++) {
            pfd[n].fd = ctl->clients[i].fd;
            pfd[n++].events = POLLIN;
        }
    }
    int rc = poll(pfd, (nfds_t)n, timeout_ms);
    if (rc <= 0)
        return; /* timeout, or EINTR from a signal */
    /* Clients first (their indexes shift when one is dropped), newest first. */
    for (int i = ctl->nclients - 1; i >= 0; i--) {
        if (1 + i >= n || !pfd[1 + i].revents)
            continue;
        if (control_read(ctl, &ctl->clients[i]) < 0)
            client_drop(ctl, i);
    }
    if (pfd[0].revents & POLLIN)
        control_accept(ctl);
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
        rd_kafka_resp_err_t err =
            rd_kafka_mock_topic_create(mc, topics[i], partitions, nbrokers < 3 ? nbrokers : 3);
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

    control_t ctl;
    const char *control_path = config_get(&cfg, "control");
    if (control_open(&ctl, control_path, mc, nbrokers) < 0) {
        control_close(&ctl);
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        config_free(&cfg);
        return 1;
    }
    const char *address_file = config_get(&cfg, "address-file");
    if (address_file && write_address_file(address_file, addr) < 0) {
        fprintf(stderr, "helmq-broker: cannot write %s\n", address_file);
        control_close(&ctl);
        rd_kafka_mock_cluster_destroy(mc);
        rd_kafka_destroy(rk);
        config_free(&cfg);
        return 1;
    }
    printf("%s\n", addr);
    fflush(stdout);
    log_info("serving at %s: topics %s, %s, %s with %d partitions each", addr, topics[0], topics[1],
             topics[2], partitions);

    if (ctl.listen_fd >= 0)
        log_info("control socket at %s (fault injection; see --help)", ctl.path);

    /* poll() returns early on a signal; the flag is checked at least once a second. */
    while (!stop_signal)
        control_serve(&ctl, 1000);

    log_info("signal %d: stopping", (int)stop_signal);
    control_close(&ctl);
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(rk);
    if (address_file)
        unlink(address_file);
    config_free(&cfg);
    return 0;
}
