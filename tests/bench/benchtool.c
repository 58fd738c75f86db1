/* benchtool: the load generator and the stopwatches of `make bench`.
 *
 * Records are encoded with helmq's own codec (build/libhelmq.a, the same
 * codec_encode `helmq encode` calls; bench.sh checks that both give the same
 * bytes), so that 200,000 records do not cost 200,000 process starts.
 *
 *   benchtool commands  -b BROKERS [-t TOPIC] --count N [--start J] [--keys K] --ns NS [--tag HEX]
 *                       [--timeout S] [--rate R] [--chart NAME:VERSION:APPVERSION]
 *       produce commands J..J+N-1: command j is for release rel-(j%K) in NS,
 *       an install for j < K and an upgrade after, commandId derived from
 *       (tag, j); chart bench-chart 1.0.0 (app 1.0.0) unless --chart.
 *       Prints first_send_ms/last_send_ms (wall clock).
 *   benchtool sample-command --ns NS [--keys K] [--tag HEX] [--index J] [--chart N:V:A]
 *       the JSON document of command j (for the encoder cross-check).
 *   benchtool encode [--type command|event]       JSON on stdin -> Avro on stdout
 *   benchtool events    -b BROKERS [-t TOPIC] --count N --releases R [--tag HEX] [--csv-dir DIR]
 *       produce N synthetic events shaped as the worker's (started + succeeded
 *       per command; N/2 commands, N/2/R per release: an install then
 *       upgrades), and with --csv-dir write the rows the projection must end
 *       up with (applied_events.tsv, release_history.tsv, releases.tsv, COPY
 *       text format).
 *   benchtool wait      -b BROKERS [-t TOPIC] --count N [--timeout S] [--progress FILE] [--ready FILE]
 *       read the events topic from the beginning (no group) until N terminal
 *       events were seen. Prints count, first/last terminal wall ms, types.
 *   benchtool watermarks -b BROKERS -t TOPIC       low and high offsets summed over partitions
 *   benchtool pgwait    --conninfo C --sql SQL --target N [--interval-ms M] [--timeout S]
 *       poll a count query: prints first_nonzero_ms, done_ms.
 *   benchtool latency   -b BROKERS --conninfo C --rate R --count N [--keys K] --ns NS [--tag HEX]
 *                       [--out FILE]
 *       send N commands at R/s (one thread) while polling the projection every
 *       5 ms for their terminal rows (helmq.applied_events); latency = first
 *       poll that saw the row - send. Prints p50/p99/p999/max ms. */
#include "codec.h"
#include "util.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TENANT "3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b"

static const char *brokers = "localhost:9092", *topic = NULL, *ns = "bench", *csv_dir = NULL, *progress = NULL,
                  *ready_file = NULL, *conninfo = NULL, *sql = NULL, *out_file = NULL, *type_name = "command";
static long count = 0, start_j = 0, keys = 1000, releases = 1000, target = 0, index_j = 0;
static unsigned tag = 0x0b5e0001;
static int timeout_s = 300, cmd_timeout = 0, interval_ms = 50;
static double rate = 0;
static char chart_name[128] = "bench-chart", chart_version[64] = "1.0.0", app_version[64] = "1.0.0";

static int64_t wall_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void sleep_until_us(int64_t t) {
    for (;;) {
        int64_t d = t - wall_us();
        if (d <= 0)
            return;
        struct timespec ts = {d / 1000000, (d % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "benchtool: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

/* A deterministic UUID (version 4 layout) from a tag, a kind and an index. */
static void bench_uuid(char out[UUID_STR_LEN], unsigned kind, long j) {
    snprintf(out, UUID_STR_LEN, "%08x-%04x-4000-8000-%012lx", tag, kind & 0xffff, (unsigned long)j);
}

/* --- kafka ------------------------------------------------------------------ */

static void on_dr(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err)
        fprintf(stderr, "benchtool: delivery failed: %s\n", rd_kafka_err2str(m->err));
}

static rd_kafka_t *producer_new(int linger_ms) {
    char errstr[512], linger[16];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    snprintf(linger, sizeof(linger), "%d", linger_ms);
    if (rd_kafka_conf_set(c, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(c, "linger.ms", linger, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(c, "queue.buffering.max.messages", "1000000", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(c, "queue.buffering.max.kbytes", "1048576", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(c, "batch.num.messages", "10000", errstr, sizeof(errstr)))
        die("%s", errstr);
    rd_kafka_conf_set_dr_msg_cb(c, on_dr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, c, errstr, sizeof(errstr));
    if (!rk)
        die("%s", errstr);
    return rk;
}

/* Blocks until the producer knows the topic's partitions and leaders: the
 * clock of a measurement starts after the client's own bootstrap. */
static void producer_warm(rd_kafka_t *rk, const char *t) {
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, t, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err)
        die("metadata for %s: %s", t, rd_kafka_err2str(err));
    rd_kafka_metadata_destroy(md);
}

static void produce(rd_kafka_t *rk, const char *t, const char *key, const unsigned char *val, size_t len) {
    for (;;) {
        rd_kafka_resp_err_t e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(t), RD_KAFKA_V_KEY(key, strlen(key)),
                                                  RD_KAFKA_V_VALUE((void *)val, len),
                                                  RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 10);
            continue;
        }
        if (e)
            die("produce: %s", rd_kafka_err2str(e));
        return;
    }
}

static void producer_close(rd_kafka_t *rk) {
    while (rd_kafka_outq_len(rk) > 0)
        rd_kafka_flush(rk, 1000);
    rd_kafka_destroy(rk);
}

static unsigned char *encode(codec_type_t t, json_t *doc, size_t *len) {
    char errstr[512];
    unsigned char *buf;
    if (codec_encode(t, doc, &buf, len, errstr, sizeof(errstr)) < 0) {
        char *text = json_dumps(doc, JSON_COMPACT);
        fprintf(stderr, "benchtool: cannot encode %s: %s\n", text, errstr);
        exit(1);
    }
    return buf;
}

/* --- commands ----------------------------------------------------------------- */

static json_t *command_doc(long j, char key[256]) {
    char id[UUID_STR_LEN], name[64];
    bench_uuid(id, 0xc0de, j);
    snprintf(name, sizeof(name), "rel-%ld", j % keys);
    snprintf(key, 256, "%s/%s/%s", TENANT, ns, name);
    json_t *d = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I,s:n,s:n,s:s,s:s,s:s,s:s,s:s}", "commandId", id, "tenantId",
                          TENANT, "namespace", ns, "releaseName", name, "performedBy", "bench", "requestedAt",
                          (json_int_t)(wall_us() / 1000), "description", "releaseId", "operation",
                          j < keys ? "install" : "upgrade", "chartName", chart_name, "chartVersion", chart_version,
                          "appVersion", app_version, "valuesOverride", "{\"replicaCount\":1}");
    if (cmd_timeout > 0)
        json_object_set_new(d, "timeout", json_integer(cmd_timeout));
    return d;
}

static int cmd_commands(void) {
    rd_kafka_t *rk = producer_new(rate > 0 ? 0 : 5);
    const char *t = topic ? topic : "helm.release.commands";
    producer_warm(rk, t);
    int64_t first = 0, t0 = wall_us();
    for (long j = start_j; j < start_j + count; j++) {
        char key[256];
        if (rate > 0)
            sleep_until_us(t0 + (int64_t)((double)(j - start_j) * 1e6 / rate));
        json_t *d = command_doc(j, key);
        size_t len;
        unsigned char *buf = encode(CODEC_COMMAND, d, &len);
        if (!first)
            first = wall_us();
        produce(rk, t, key, buf, len);
        free(buf);
        json_decref(d);
        rd_kafka_poll(rk, 0);
    }
    int64_t last = wall_us();
    producer_close(rk);
    printf("first_send_ms=%lld last_send_ms=%lld delivered_ms=%lld produced=%ld\n", (long long)(first / 1000),
           (long long)(last / 1000), (long long)(wall_us() / 1000), count);
    return 0;
}

static int cmd_sample_command(void) {
    char key[256];
    json_t *d = command_doc(index_j, key);
    char *s = json_dumps(d, JSON_COMPACT);
    puts(s);
    free(s);
    json_decref(d);
    return 0;
}

static int cmd_encode(void) {
    json_error_t jerr;
    json_t *d = json_loadf(stdin, 0, &jerr);
    if (!d)
        die("stdin: %s", jerr.text);
    size_t len;
    unsigned char *buf = encode(strcmp(type_name, "event") == 0 ? CODEC_EVENT : CODEC_COMMAND, d, &len);
    fwrite(buf, 1, len, stdout);
    free(buf);
    json_decref(d);
    return 0;
}

/* --- events (projector load) ---------------------------------------------------- */

static void ts_text(int64_t ms, char *out, size_t size) {
    time_t s = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(out, size, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(out + n, size - n, ".%03d+00", (int)(ms % 1000));
}

static FILE *csv_open(const char *name) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", csv_dir, name);
    FILE *f = fopen(path, "w");
    if (!f)
        die("cannot write %s", path);
    return f;
}

typedef struct rel_state {
    int64_t created_ms, updated_ms;
    char last_event[UUID_STR_LEN];
} rel_state_t;

static int cmd_events(void) {
    if (count <= 0 || count % 2 || (count / 2) % releases)
        die("%s", "--count must be even and count/2 a multiple of --releases");
    long per_rel = count / 2 / releases;
    rd_kafka_t *rk = producer_new(5);
    const char *t = topic ? topic : "helm.release.events";
    FILE *fa = NULL, *fh = NULL, *fr = NULL;
    if (csv_dir) {
        fa = csv_open("applied_events.tsv");
        fh = csv_open("release_history.tsv");
        fr = csv_open("releases.tsv");
    }
    rel_state_t *rs = calloc((size_t)releases, sizeof(*rs));
    const char *digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    const char *redacted = "{\"replicaCount\":1}";
    int64_t base = wall_us() / 1000 - count; /* one ms apart, all in the past */
    long ev = 0;
    for (long k = 0; k < per_rel; k++) {
        for (long r = 0; r < releases; r++) {
            char rid[UUID_STR_LEN], tenant[UUID_STR_LEN], cid[UUID_STR_LEN], eid[UUID_STR_LEN], name[64], nsb[64],
                key[256], cver[32], aver[32], ts[64];
            long cmd = k * releases + r;
            bench_uuid(rid, 0x4e1d, r);
            bench_uuid(tenant, 0x7e4a, r % 100);
            bench_uuid(cid, 0xc1d0, cmd);
            snprintf(name, sizeof(name), "rel-%ld", r);
            snprintf(nsb, sizeof(nsb), "ns-%ld", r % 1000);
            snprintf(key, sizeof(key), "%s/%s/%s", tenant, nsb, name);
            snprintf(cver, sizeof(cver), "1.0.%ld", k);
            snprintf(aver, sizeof(aver), "2.0.%ld", k);
            const char *op = k == 0 ? "install" : "upgrade";
            const char *desc = k == 0 ? "Install complete" : "Upgrade complete";
            for (int phase = 0; phase < 2; phase++, ev++) {
                int64_t occurred = base + ev;
                bench_uuid(eid, 0xe0e0, ev);
                json_t *d;
                if (phase == 0) {
                    d = json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:n,s:n,s:s,s:I,s:I,"
                                  "s:n,s:n,s:n,s:[],s:n,s:n}",
                                  "eventId", eid, "commandId", cid, "eventType", "started", "terminal", 0, "releaseId",
                                  rid, "tenantId", tenant, "namespace", nsb, "releaseName", name, "operation", op,
                                  "status", k == 0 ? "pending-install" : "pending-upgrade", "revision",
                                  (json_int_t)k, "chartName", "bench-chart", "chartVersion", cver, "appVersion",
                                  "description", "performedBy", "bench", "occurredAt", (json_int_t)occurred,
                                  "requestedAt", (json_int_t)(occurred - 5), "reason", "valuesDigest",
                                  "valuesRedacted", "history", "errorCode", "errorMessage");
                } else {
                    d = json_pack("{s:s,s:s,s:s,s:b,s:s,s:s,s:s,s:s,s:s,s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:I,s:I,"
                                  "s:n,s:s,s:s,s:[{s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:I}],s:n,s:n}",
                                  "eventId", eid, "commandId", cid, "eventType", "succeeded", "terminal", 1,
                                  "releaseId", rid, "tenantId", tenant, "namespace", nsb, "releaseName", name,
                                  "operation", op, "status", "deployed", "revision", (json_int_t)(k + 1), "chartName",
                                  "bench-chart", "chartVersion", cver, "appVersion", aver, "description", desc,
                                  "performedBy", "bench", "occurredAt", (json_int_t)occurred, "requestedAt",
                                  (json_int_t)(occurred - 5), "reason", "valuesDigest", digest, "valuesRedacted",
                                  redacted, "history", "revision", (json_int_t)(k + 1), "status", "deployed",
                                  "chartName", "bench-chart", "chartVersion", cver, "appVersion", aver, "operation",
                                  op, "description", desc, "createdAt", (json_int_t)occurred, "errorCode",
                                  "errorMessage");
                }
                if (!d)
                    die("%s", "json_pack failed");
                size_t len;
                unsigned char *buf = encode(CODEC_EVENT, d, &len);
                produce(rk, t, key, buf, len);
                free(buf);
                json_decref(d);
                rd_kafka_poll(rk, 0);
                if (!fa)
                    continue;
                ts_text(occurred, ts, sizeof(ts));
                fprintf(fa, "%s\t%s\t%s\t%s\t%s\t%s\t%ld\t%s\t\\N\t\\N\n", eid, cid, rid, tenant,
                        phase ? "succeeded" : "started", phase ? "deployed" : (k ? "pending-upgrade" : "pending-install"),
                        phase ? k + 1 : k, ts);
                if (phase) {
                    fprintf(fh, "%s\t%ld\t%s\tbench-chart\t%s\t%s\tdeployed\t%s\t%s\tbench\t%s\t\\N\t%s\t%s\t%s\n", rid,
                            k + 1, tenant, cver, aver, op, desc, cid, digest, redacted, ts);
                    if (k == 0)
                        rs[r].created_ms = occurred;
                    rs[r].updated_ms = occurred;
                    snprintf(rs[r].last_event, sizeof(rs[r].last_event), "%s", eid);
                }
            }
        }
    }
    if (fr) {
        long k = per_rel - 1;
        for (long r = 0; r < releases; r++) {
            char rid[UUID_STR_LEN], tenant[UUID_STR_LEN], c1[64], c2[64];
            bench_uuid(rid, 0x4e1d, r);
            bench_uuid(tenant, 0x7e4a, r % 100);
            ts_text(rs[r].created_ms, c1, sizeof(c1));
            ts_text(rs[r].updated_ms, c2, sizeof(c2));
            fprintf(fr,
                    "%s\t%s\tns-%ld\trel-%ld\tbench-chart\t1.0.%ld\t2.0.%ld\tdeployed\t%ld\t%s\t%s\t%s\t\\N\t\\N\t%s\t%s\t%s\n",
                    rid, tenant, r % 1000, r, k, k, k + 1, k == 0 ? "Install complete" : "Upgrade complete", digest,
                    redacted, rs[r].last_event, c1, c2);
        }
        fclose(fa);
        fclose(fh);
        fclose(fr);
    }
    producer_close(rk);
    printf("produced=%ld commands=%ld releases=%ld\n", ev, count / 2, releases);
    return 0;
}

/* --- reading events ----------------------------------------------------------------- */

static rd_kafka_t *consumer_new(void) {
    char errstr[512], group[64];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    snprintf(group, sizeof(group), "benchtool-%d", (int)getpid());
    if (rd_kafka_conf_set(c, "bootstrap.servers", brokers, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(c, "group.id", group, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(c, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(c, "fetch.wait.max.ms", "10", errstr, sizeof(errstr)))
        die("%s", errstr);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, errstr, sizeof(errstr));
    if (!rk)
        die("%s", errstr);
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

static int partitions_of(rd_kafka_t *rk, const char *t) {
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, t, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
    rd_kafka_topic_destroy(rkt);
    if (err || md->topic_cnt != 1 || md->topics[0].err)
        die("no metadata for %s", t);
    int n = md->topics[0].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

static int read_varint(const unsigned char **p, const unsigned char *end, int64_t *v) {
    uint64_t u = 0;
    int shift = 0;
    while (*p < end && shift < 64) {
        unsigned char b = *(*p)++;
        u |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
            return 0;
        }
        shift += 7;
    }
    return -1;
}

/* eventType index and terminal flag from the first fields of the datum
 * (eventId, commandId, eventType, terminal), or by a full decode when the
 * record was written with another schema. Returns 0 or -1. */
static const char *const event_types[] = {"accepted", "started", "succeeded", "failed", "rolled_back", "rejected"};

static int event_kind(const unsigned char *buf, size_t len, int *type, int *terminal) {
    uint64_t fp = codec_fingerprint(CODEC_EVENT), got = 0;
    if (len < 12 || buf[0] != 0xc3 || buf[1] != 0x01)
        return -1;
    for (int i = 0; i < 8; i++)
        got |= (uint64_t)buf[2 + i] << (8 * i);
    if (got == fp) {
        const unsigned char *p = buf + 10, *end = buf + len;
        int64_t n;
        for (int i = 0; i < 2; i++) {
            if (read_varint(&p, end, &n) < 0 || n < 0 || n > end - p)
                return -1;
            p += n;
        }
        if (read_varint(&p, end, &n) < 0 || n < 0 || n > 5 || p >= end)
            return -1;
        *type = (int)n;
        *terminal = *p != 0;
        return 0;
    }
    char errstr[256];
    codec_type_t t;
    json_t *doc;
    if (codec_decode(buf, len, &t, &doc, errstr, sizeof(errstr)) != 0 || t != CODEC_EVENT)
        return -1;
    const char *et = json_string_value(json_object_get(doc, "eventType"));
    *type = 0;
    for (int i = 0; i < 6; i++)
        if (et && strcmp(et, event_types[i]) == 0)
            *type = i;
    *terminal = json_is_true(json_object_get(doc, "terminal"));
    json_decref(doc);
    return 0;
}

static void write_file(const char *path, const char *text) {
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fputs(text, f);
    fclose(f);
    rename(tmp, path);
}

static int cmd_wait(void) {
    const char *t = topic ? topic : "helm.release.events";
    rd_kafka_t *rk = consumer_new();
    int np = partitions_of(rk, t);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(np);
    for (int i = 0; i < np; i++)
        rd_kafka_topic_partition_list_add(l, t, i)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (ready_file)
        write_file(ready_file, "ready\n");
    long terminal = 0, all = 0, types[6] = {0}, bad = 0;
    int64_t first = 0, last = 0, deadline = wall_us() + (int64_t)timeout_s * 1000000, last_progress = 0;
    while (terminal < count) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        int64_t now = wall_us();
        if (progress && now - last_progress > 100000) {
            char b[64];
            snprintf(b, sizeof(b), "%ld\n", terminal);
            write_file(progress, b);
            last_progress = now;
        }
        if (now > deadline) {
            fprintf(stderr, "benchtool wait: timed out with %ld of %ld terminal events\n", terminal, count);
            break;
        }
        if (!m)
            continue;
        if (!m->err) {
            int type, term;
            all++;
            if (event_kind(m->payload, m->len, &type, &term) < 0) {
                bad++;
            } else if (term) {
                types[type]++;
                terminal++;
                if (!first)
                    first = now;
                last = now;
            }
        }
        rd_kafka_message_destroy(m);
    }
    if (progress) {
        char b[64];
        snprintf(b, sizeof(b), "%ld\n", terminal);
        write_file(progress, b);
    }
    printf("terminal=%ld events=%ld undecodable=%ld first_ms=%lld last_ms=%lld types=", terminal, all, bad,
           (long long)(first / 1000), (long long)(last / 1000));
    int sep = 0;
    for (int i = 0; i < 6; i++)
        if (types[i]) {
            printf("%s%s:%ld", sep ? "," : "", event_types[i], types[i]);
            sep = 1;
        }
    printf("\n");
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return terminal >= count ? 0 : 1;
}

static int cmd_watermarks(void) {
    if (!topic)
        die("%s", "--topic is required");
    rd_kafka_t *rk = consumer_new();
    int np = partitions_of(rk, topic);
    int64_t low_sum = 0, high_sum = 0, low_max = 0;
    for (int i = 0; i < np; i++) {
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk, topic, i, &lo, &hi, 10000);
        if (e)
            die("watermarks: %s", rd_kafka_err2str(e));
        low_sum += lo;
        high_sum += hi;
        if (lo > low_max)
            low_max = lo;
    }
    printf("partitions=%d low=%lld high=%lld retained=%lld\n", np, (long long)low_sum, (long long)high_sum,
           (long long)(high_sum - low_sum));
    rd_kafka_destroy(rk);
    return 0;
}

/* --- PostgreSQL ----------------------------------------------------------------------- */

static PGconn *pg_connect(void) {
    if (!conninfo)
        die("%s", "--conninfo is required");
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK)
        die("postgresql: %s", PQerrorMessage(c));
    return c;
}

static int cmd_pgwait(void) {
    PGconn *c = pg_connect();
    int64_t first = 0, deadline = wall_us() + (int64_t)timeout_s * 1000000;
    long v = 0, first_v = 0;
    for (;;) {
        int64_t before = wall_us();
        PGresult *r = PQexec(c, sql);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            /* the table may not exist yet (migrations running): keep polling */
            v = 0;
        } else {
            v = atol(PQgetvalue(r, 0, 0));
        }
        PQclear(r);
        if (v > 0 && !first)
            first = before;
        if (v >= target) {
            printf("first_nonzero_ms=%lld done_ms=%lld value=%ld\n", (long long)(first / 1000),
                   (long long)(before / 1000), v);
            PQfinish(c);
            return 0;
        }
        if (before > deadline) {
            fprintf(stderr, "benchtool pgwait: timed out at %ld of %ld\n", v, target);
            printf("first_nonzero_ms=%lld done_ms=0 value=%ld\n", (long long)(first / 1000), v);
            PQfinish(c);
            return 1;
        }
        /* The count is a scan on the same cores as what it measures: once a
         * rate is known, sleep half the time the rest should take (at most
         * 2 s), so that a run polls a few times, then every interval_ms
         * near the end. */
        int64_t sleep_us = (int64_t)interval_ms * 1000;
        if (first && v > first_v && before > first) {
            double per_us = (double)(v - first_v) / (double)(before - first);
            int64_t half = (int64_t)((double)(target - v) / per_us / 2);
            if (half > sleep_us)
                sleep_us = half < 2000000 ? half : 2000000;
        }
        if (v > 0 && !first_v)
            first_v = v;
        usleep((useconds_t)sleep_us);
    }
}

/* --- latency ------------------------------------------------------------------------------ */

static int64_t *sent_us, *seen_us;
static atomic_long sent_n;

static void *sender_main(void *arg) {
    (void)arg;
    rd_kafka_t *rk = producer_new(0);
    producer_warm(rk, "helm.release.commands");
    int64_t t0 = wall_us() + 100000;
    for (long j = 0; j < count; j++) {
        char key[256];
        sleep_until_us(t0 + (int64_t)((double)j * 1e6 / rate));
        json_t *d = command_doc(start_j + j, key);
        size_t len;
        unsigned char *buf = encode(CODEC_COMMAND, d, &len);
        sent_us[j] = wall_us();
        produce(rk, "helm.release.commands", key, buf, len);
        atomic_store(&sent_n, j + 1);
        free(buf);
        json_decref(d);
        rd_kafka_poll(rk, 0);
    }
    producer_close(rk);
    return NULL;
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const int64_t *v, long n, double p) {
    if (n <= 0)
        return 0;
    long i = (long)(p * (double)n + 0.999999) - 1;
    if (i < 0)
        i = 0;
    if (i >= n)
        i = n - 1;
    return (double)v[i] / 1000.0;
}

static int cmd_latency(void) {
    if (rate <= 0 || count <= 0)
        die("%s", "--rate and --count are required");
    PGconn *c = pg_connect();
    sent_us = calloc((size_t)count, sizeof(int64_t));
    seen_us = calloc((size_t)count, sizeof(int64_t));
    pthread_t th;
    pthread_create(&th, NULL, sender_main, NULL);
    long lo = 0, seen = 0;
    int64_t deadline = 0;
    size_t cap = 1 << 20;
    char *arr = malloc(cap);
    while (seen < count) {
        long n = atomic_load(&sent_n);
        if (n == count && !deadline)
            deadline = wall_us() + 120 * 1000000LL;
        if (deadline && wall_us() > deadline) {
            fprintf(stderr, "benchtool latency: %ld of %ld never became visible\n", count - seen, count);
            break;
        }
        while (lo < n && seen_us[lo])
            lo++;
        if (lo < n) {
            size_t off = 0;
            arr[off++] = '{';
            for (long j = lo; j < n && off + 64 < cap; j++) {
                if (seen_us[j])
                    continue;
                char id[UUID_STR_LEN];
                bench_uuid(id, 0xc0de, start_j + j);
                off += (size_t)snprintf(arr + off, cap - off, "%s%s", off > 1 ? "," : "", id);
            }
            arr[off++] = '}';
            arr[off] = 0;
            const char *params[1] = {arr};
            int64_t before = wall_us();
            PGresult *r = PQexecParams(c,
                                       "SELECT command_id FROM helmq.applied_events WHERE command_id = ANY($1::text[]) "
                                       "AND event_type <> 'started'",
                                       1, NULL, params, NULL, NULL, 0);
            if (PQresultStatus(r) == PGRES_TUPLES_OK) {
                for (int i = 0; i < PQntuples(r); i++) {
                    unsigned long j = strtoul(PQgetvalue(r, i, 0) + 24, NULL, 16) - (unsigned long)start_j;
                    if (j < (unsigned long)count && !seen_us[j]) {
                        seen_us[j] = before;
                        seen++;
                    }
                }
            }
            PQclear(r);
        }
        usleep(5000);
    }
    pthread_join(th, NULL);
    int64_t *lat = calloc((size_t)count, sizeof(int64_t));
    long m = 0;
    FILE *f = out_file ? fopen(out_file, "w") : NULL;
    for (long j = 0; j < count; j++) {
        if (f)
            fprintf(f, "%ld\t%lld\t%lld\n", start_j + j, (long long)sent_us[j], (long long)seen_us[j]);
        if (seen_us[j])
            lat[m++] = seen_us[j] - sent_us[j];
    }
    if (f)
        fclose(f);
    qsort(lat, (size_t)m, sizeof(int64_t), cmp_i64);
    double secs = (double)(sent_us[count - 1] - sent_us[0]) / 1e6;
    printf("sent=%ld seen=%ld send_seconds=%.1f send_rate=%.1f p50_ms=%.1f p99_ms=%.1f p999_ms=%.1f max_ms=%.1f\n",
           count, m, secs, secs > 0 ? (double)(count - 1) / secs : 0, pct(lat, m, 0.50), pct(lat, m, 0.99),
           pct(lat, m, 0.999), m ? (double)lat[m - 1] / 1000.0 : 0);
    PQfinish(c);
    return m == count ? 0 : 1;
}

/* --- main ------------------------------------------------------------------------------------ */

int main(int argc, char **argv) {
    static const struct option opts[] = {
        {"brokers", required_argument, NULL, 'b'}, {"topic", required_argument, NULL, 't'},
        {"count", required_argument, NULL, 'n'},   {"start", required_argument, NULL, 's'},
        {"keys", required_argument, NULL, 'k'},    {"ns", required_argument, NULL, 'N'},
        {"tag", required_argument, NULL, 'T'},     {"timeout", required_argument, NULL, 'o'},
        {"rate", required_argument, NULL, 'r'},    {"releases", required_argument, NULL, 'R'},
        {"csv-dir", required_argument, NULL, 'C'}, {"progress", required_argument, NULL, 'p'},
        {"ready", required_argument, NULL, 'y'},   {"conninfo", required_argument, NULL, 'c'},
        {"sql", required_argument, NULL, 'q'},     {"target", required_argument, NULL, 'g'},
        {"interval-ms", required_argument, NULL, 'i'}, {"wait-timeout", required_argument, NULL, 'w'},
        {"out", required_argument, NULL, 'O'},     {"type", required_argument, NULL, 'Y'},
        {"index", required_argument, NULL, 'j'},   {"chart", required_argument, NULL, 'H'},
        {NULL, 0, NULL, 0},
    };
    if (argc < 2) {
        fprintf(stderr, "usage: benchtool commands|sample-command|encode|events|wait|watermarks|pgwait|latency ...\n");
        return 2;
    }
    const char *sub = argv[1];
    int opt;
    optind = 2;
    while ((opt = getopt_long(argc, argv, "b:t:n:", opts, NULL)) != -1) {
        switch (opt) {
        case 'b': brokers = optarg; break;
        case 't': topic = optarg; break;
        case 'n': count = atol(optarg); break;
        case 's': start_j = atol(optarg); break;
        case 'k': keys = atol(optarg); break;
        case 'N': ns = optarg; break;
        case 'T': tag = (unsigned)strtoul(optarg, NULL, 16); break;
        case 'o': cmd_timeout = atoi(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'R': releases = atol(optarg); break;
        case 'C': csv_dir = optarg; break;
        case 'p': progress = optarg; break;
        case 'y': ready_file = optarg; break;
        case 'c': conninfo = optarg; break;
        case 'q': sql = optarg; break;
        case 'g': target = atol(optarg); break;
        case 'i': interval_ms = atoi(optarg); break;
        case 'w': timeout_s = atoi(optarg); break;
        case 'O': out_file = optarg; break;
        case 'Y': type_name = optarg; break;
        case 'j': index_j = atol(optarg); break;
        case 'H':
            /* NAME:VERSION:APPVERSION */
            if (sscanf(optarg, "%127[^:]:%63[^:]:%63s", chart_name, chart_version, app_version) != 3)
                die("--chart wants NAME:VERSION:APPVERSION, got %s", optarg);
            break;
        default: return 2;
        }
    }
    char errstr[512];
    if (codec_init(errstr, sizeof(errstr)) < 0)
        die("codec: %s", errstr);
    if (!strcmp(sub, "commands"))
        return cmd_commands();
    if (!strcmp(sub, "sample-command"))
        return cmd_sample_command();
    if (!strcmp(sub, "encode"))
        return cmd_encode();
    if (!strcmp(sub, "events"))
        return cmd_events();
    if (!strcmp(sub, "wait"))
        return cmd_wait();
    if (!strcmp(sub, "watermarks"))
        return cmd_watermarks();
    if (!strcmp(sub, "pgwait"))
        return cmd_pgwait();
    if (!strcmp(sub, "latency"))
        return cmd_latency();
    die("unknown subcommand %s", sub);
    return 2;
}
