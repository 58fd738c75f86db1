/* helmq-api's live stream of release events. See api_stream.h. */
#include "api_stream.h"

#include "codec.h"
#include "kafka.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define STREAM_MAX_PARTITIONS 1024 /* of the events topic; a token holds at most this many */
#define STREAM_BATCH 256           /* messages per turn of the loop: writes go out between batches */
#define STREAM_KAFKA_TIMEOUT_MS 5000
#define STREAM_GRACE_MS 1000   /* a reader over the limit this long is cut */
#define STREAM_RECHECK_MS 50   /* how often a stream over the limit looks again */
#define STREAM_RETRY_MS "3000" /* the retry: field: how long a browser waits before reconnecting */

enum { STREAM_STARTING, STREAM_LIVE, STREAM_CLOSING };

struct api_stream {
    api_streams_t *ss;
    api_stream_t *next, *prev;
    int state;
    http_req_t *req;   /* while starting */
    http_conn_t *conn; /* while live */
    api_stream_filter_t filter;
    int since_beginning;
    int ntok; /* the resume token's entries */
    int32_t tok_part[STREAM_MAX_PARTITIONS];
    int64_t tok_off[STREAM_MAX_PARTITIONS];
    int32_t nparts;
    int64_t *pos; /* the next offset of each partition */
    rd_kafka_t *rk;
    rd_kafka_queue_t *queue;
    int fd[2];
    uv_work_t work;
    uv_poll_t poll;
    uv_timer_t heartbeat, again;
    int handles;         /* uv handles not closed yet */
    uint64_t over_since; /* uv_now when the unsent bytes went over the limit; 0: they are not */
    char err[256];
};

int api_streams_init(api_streams_t *ss, uv_loop_t *loop, const config_t *cfg, char *errstr,
                     size_t errstr_size) {
    if (config_int(cfg, "max-streams") < 0 || config_int(cfg, "stream-max-buffer") < 1 ||
        config_int(cfg, "stream-heartbeat-ms") < 1) {
        snprintf(
            errstr, errstr_size,
            "--max-streams must not be negative, --stream-max-buffer and --stream-heartbeat-ms at least 1");
        return -1;
    }
    *ss = (api_streams_t){.loop = loop,
                          .cfg = cfg,
                          .brokers = config_get(cfg, "brokers"),
                          .topic = config_get(cfg, "events-topic"),
                          .max_buffer = (size_t)config_int(cfg, "stream-max-buffer"),
                          .max_streams = (unsigned)config_int(cfg, "max-streams"),
                          .heartbeat_ms = (unsigned)config_int(cfg, "stream-heartbeat-ms")};
    return 0;
}

int api_stream_token_parse(const char *tok, int32_t *parts, int64_t *offs, int cap) {
    int n = 0;
    const char *p = tok;
    if (!*p)
        return -1;
    for (;;) {
        char *end;
        if (*p < '0' || *p > '9')
            return -1;
        errno = 0;
        long part = strtol(p, &end, 10);
        if (errno || end == p || *end != ':' || part >= STREAM_MAX_PARTITIONS)
            return -1;
        p = end + 1;
        if (*p < '0' || *p > '9')
            return -1;
        long long off = strtoll(p, &end, 10);
        if (errno || end == p || (*end && *end != ','))
            return -1;
        if (n >= cap)
            return -1;
        for (int i = 0; i < n; i++)
            if (parts[i] == part)
                return -1;
        parts[n] = (int32_t)part;
        offs[n++] = off;
        if (!*end)
            return n;
        p = end + 1;
    }
}

/* --- starting and ending, on the thread pool ------------------------------------ */

static int64_t tok_offset(const api_stream_t *s, int32_t part) {
    for (int i = 0; i < s->ntok; i++)
        if (s->tok_part[i] == part)
            return s->tok_off[i];
    return -1;
}

/* The consumer, the partitions, the start positions and the assignment.
 * Runs on the thread pool: everything here may block. No codec call. */
static void start_work(uv_work_t *w) {
    api_stream_t *s = w->data;
    api_streams_t *ss = s->ss;
    char errstr[256];
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_t *rkt = NULL;
    rd_kafka_conf_t *conf = kafka_conf_new(ss->cfg, ss->brokers, errstr, sizeof(errstr));
    if (!conf || kafka_conf_set(conf, "group.id", "helmq-api-stream", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "enable.auto.offset.store", "false", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "queued.max.messages.kbytes", "1024", errstr, sizeof(errstr)) < 0 ||
        kafka_conf_set(conf, "fetch.wait.max.ms", "100", errstr, sizeof(errstr)) < 0) {
        snprintf(s->err, sizeof(s->err), "kafka: %s", errstr);
        goto fail;
    }
    s->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!s->rk) {
        snprintf(s->err, sizeof(s->err), "kafka: %s", errstr);
        goto fail;
    }
    conf = NULL;
    rkt = rd_kafka_topic_new(s->rk, ss->topic, NULL);
    rd_kafka_resp_err_t err = rd_kafka_metadata(s->rk, 0, rkt, &md, STREAM_KAFKA_TIMEOUT_MS);
    if (err || md->topic_cnt != 1 || md->topics[0].err || md->topics[0].partition_cnt < 1) {
        snprintf(s->err, sizeof(s->err), "no topic %s: %s", ss->topic,
                 err             ? rd_kafka_err2str(err)
                 : md->topic_cnt ? rd_kafka_err2str(md->topics[0].err)
                                 : "no metadata");
        goto fail;
    }
    s->nparts = md->topics[0].partition_cnt;
    if (s->nparts > STREAM_MAX_PARTITIONS)
        s->nparts = STREAM_MAX_PARTITIONS;
    s->pos = calloc((size_t)s->nparts, sizeof(int64_t));
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(s->nparts);
    for (int32_t p = 0; p < s->nparts; p++) {
        /* The token's position; else the end (live only), or the beginning
         * (since=beginning, or a partition the token did not know). The
         * watermark makes it a real offset, for the tokens sent later. */
        int64_t lo = 0, hi = 0, at = tok_offset(s, p);
        if (at < 0) {
            err = rd_kafka_query_watermark_offsets(s->rk, ss->topic, p, &lo, &hi, STREAM_KAFKA_TIMEOUT_MS);
            if (err) {
                snprintf(s->err, sizeof(s->err), "%s[%d]: %s", ss->topic, (int)p, rd_kafka_err2str(err));
                rd_kafka_topic_partition_list_destroy(parts);
                goto fail;
            }
            at = s->since_beginning || s->ntok ? lo : hi;
        }
        s->pos[p] = at;
        rd_kafka_topic_partition_list_add(parts, ss->topic, p)->offset = at;
    }
    rd_kafka_poll_set_consumer(s->rk);
    s->queue = rd_kafka_queue_get_consumer(s->rk);
    rd_kafka_queue_io_event_enable(s->queue, s->fd[1], "e", 1);
    err = rd_kafka_assign(s->rk, parts);
    rd_kafka_topic_partition_list_destroy(parts);
    if (err) {
        snprintf(s->err, sizeof(s->err), "assign: %s", rd_kafka_err2str(err));
        goto fail;
    }
    rd_kafka_topic_destroy(rkt);
    rd_kafka_metadata_destroy(md);
    return;
fail:
    if (conf)
        rd_kafka_conf_destroy(conf);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
}

/* The consumer's end: blocking, so on the thread pool too. */
static void end_work(uv_work_t *w) {
    api_stream_t *s = w->data;
    if (s->queue)
        rd_kafka_queue_destroy(s->queue);
    if (s->rk)
        rd_kafka_destroy_flags(s->rk, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    s->queue = NULL;
    s->rk = NULL;
}

static void end_done(uv_work_t *w, int status) {
    api_stream_t *s = w->data;
    close(s->fd[0]);
    close(s->fd[1]);
    free(s->pos);
    free(s);
}

static void handle_closed(uv_handle_t *h) {
    api_stream_t *s = h->data;
    if (--s->handles > 0)
        return;
    uv_queue_work(s->ss->loop, &s->work, end_work, end_done);
}

/* Takes s off the list and frees it: handles closed, then the consumer
 * destroyed off the loop. */
static void stream_free(api_stream_t *s) {
    api_streams_t *ss = s->ss;
    s->state = STREAM_CLOSING;
    if (s->prev)
        s->prev->next = s->next;
    else
        ss->list = s->next;
    if (s->next)
        s->next->prev = s->prev;
    ss->open--;
    if (s->handles) {
        uv_close((uv_handle_t *)&s->poll, handle_closed);
        uv_close((uv_handle_t *)&s->heartbeat, handle_closed);
        uv_close((uv_handle_t *)&s->again, handle_closed);
    } else {
        uv_queue_work(ss->loop, &s->work, end_work, end_done);
    }
}

/* --- the live stream ------------------------------------------------------------ */

static void stream_drain(api_stream_t *s);

static void on_again(uv_timer_t *t) {
    stream_drain(t->data);
}

static void on_conn_closed(void *arg) {
    api_stream_t *s = arg;
    s->conn = NULL;
    log_debug("stream: the client went away");
    stream_free(s);
}

/* Whether s may write more: its unsent bytes are under the limit. A reader
 * that stays over it for STREAM_GRACE_MS is cut (s is freed: returns -1);
 * until then the stream reads no more from Kafka (returns 0) and looks again
 * every STREAM_RECHECK_MS. So a connection holds at most the limit plus one
 * event, a burst larger than the limit does not cut a reader that keeps up,
 * and a reader that does not read is cut. */
static int stream_room(api_stream_t *s) {
    size_t unsent = httpd_stream_unsent(s->conn);
    uint64_t now = uv_now(s->ss->loop);
    if (unsent < s->ss->max_buffer) {
        s->over_since = 0;
        return 1;
    }
    if (!s->over_since)
        s->over_since = now;
    if (now - s->over_since < STREAM_GRACE_MS) {
        uv_timer_start(&s->again, on_again, STREAM_RECHECK_MS, 0);
        return 0;
    }
    s->ss->cut_slow++;
    log_warn("stream: cut, its reader is %zu bytes behind (limit %zu) for %d ms", unsent, s->ss->max_buffer,
             STREAM_GRACE_MS);
    httpd_stream_end(s->conn, 1);
    s->conn = NULL;
    stream_free(s);
    return -1;
}

static int stream_matches(const api_stream_t *s, const json_t *doc) {
    const char *tenant = json_string_value(json_object_get(doc, "tenantId"));
    const char *release = json_string_value(json_object_get(doc, "releaseId"));
    if (s->filter.tenant[0] && (!tenant || strcasecmp(tenant, s->filter.tenant) != 0))
        return 0;
    if (s->filter.release[0] && (!release || strcasecmp(release, s->filter.release) != 0))
        return 0;
    return 1;
}

/* One message: positions advanced; an event the stream shows is written.
 * Returns -1 when the stream ended. */
static int stream_message(api_stream_t *s, const rd_kafka_message_t *m) {
    if (m->err) {
        if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
            log_warn("stream: %s", rd_kafka_message_errstr(m));
        return 0;
    }
    if (m->partition < 0 || m->partition >= s->nparts)
        return 0;
    s->pos[m->partition] = m->offset + 1;
    codec_type_t type;
    json_t *doc = NULL;
    char errstr[256];
    if (codec_decode(m->payload, m->len, &type, &doc, errstr, sizeof(errstr)) != 0 || type != CODEC_EVENT) {
        log_debug("stream: %s[%d]@%lld skipped: %s", s->ss->topic, (int)m->partition, (long long)m->offset,
                  doc ? "not an event" : errstr);
        json_decref(doc);
        return 0;
    }
    if (!stream_matches(s, doc)) {
        json_decref(doc);
        return 0;
    }
    char *data = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!data)
        abort();
    size_t cap = strlen(data) + (size_t)s->nparts * 32 + 64, n = 0;
    char *frame = malloc(cap);
    if (!frame)
        abort();
    n += (size_t)snprintf(frame + n, cap - n, "id: ");
    for (int32_t p = 0; p < s->nparts; p++)
        n += (size_t)snprintf(frame + n, cap - n, "%s%d:%lld", p ? "," : "", (int)p, (long long)s->pos[p]);
    n += (size_t)snprintf(frame + n, cap - n, "\nevent: release\ndata: %s\n\n", data);
    free(data);
    int rc = httpd_stream_write(s->conn, frame, n);
    free(frame);
    if (rc < 0) /* on_conn_closed freed s */
        return -1;
    s->ss->events_sent++;
    return 0;
}

/* Reads what the consumer has, a batch per turn of the loop, while the
 * reader keeps up. */
static void stream_drain(api_stream_t *s) {
    for (int i = 0; i < STREAM_BATCH; i++) {
        if (stream_room(s) <= 0)
            return;
        rd_kafka_message_t *m = rd_kafka_consume_queue(s->queue, 0);
        if (!m)
            return;
        int rc = stream_message(s, m);
        rd_kafka_message_destroy(m);
        if (rc < 0)
            return;
    }
    /* More may wait: the IO event fires only when the queue was empty, so
     * the next batch is read on the next turn, after the writes went out. */
    uv_timer_start(&s->again, on_again, 0, 0);
}

static void on_readable(uv_poll_t *p, int status, int events) {
    api_stream_t *s = p->data;
    char buf[64];
    while (read(s->fd[0], buf, sizeof(buf)) > 0)
        ;
    stream_drain(s);
}

static void on_heartbeat(uv_timer_t *t) {
    api_stream_t *s = t->data;
    static const char beat[] = ": keepalive\n\n";
    if (httpd_stream_write(s->conn, beat, sizeof(beat) - 1) == 0)
        stream_room(s);
}

static void reply_unavailable(http_req_t *req, const char *detail) {
    json_t *e = json_pack("{s:s,s:s}", "error", "event stream unavailable", "detail", detail);
    char *body = json_dumps(e, JSON_COMPACT);
    httpd_add_header(req, "Retry-After", "5");
    httpd_respond(req, 503, "application/json", body, strlen(body));
    free(body);
    json_decref(e);
}

static void start_done(uv_work_t *w, int status) {
    api_stream_t *s = w->data;
    api_streams_t *ss = s->ss;
    http_req_t *req = s->req;
    s->req = NULL;
    if (s->err[0] || ss->stopping || !req->conn) {
        if (s->err[0])
            log_warn("stream: %s", s->err);
        reply_unavailable(req, s->err[0] ? s->err : "the server is stopping");
        stream_free(s);
        return;
    }
    httpd_add_header(req, "Cache-Control", "no-cache");
    httpd_add_header(req, "X-Accel-Buffering", "no");
    s->conn = httpd_stream_begin(req, "text/event-stream", on_conn_closed, s);
    if (!s->conn) {
        stream_free(s);
        return;
    }
    s->state = STREAM_LIVE;
    uv_poll_init(ss->loop, &s->poll, s->fd[0]);
    uv_timer_init(ss->loop, &s->heartbeat);
    uv_timer_init(ss->loop, &s->again);
    s->poll.data = s->heartbeat.data = s->again.data = s;
    s->handles = 3;
    static const char hello[] = "retry: " STREAM_RETRY_MS "\n: helmq release events\n\n";
    if (httpd_stream_write(s->conn, hello, sizeof(hello) - 1) < 0)
        return; /* on_conn_closed freed s */
    uv_poll_start(&s->poll, UV_READABLE, on_readable);
    uv_timer_start(&s->heartbeat, on_heartbeat, ss->heartbeat_ms, ss->heartbeat_ms);
    log_info("stream: open (tenant %s, release %s, %d partitions)",
             s->filter.tenant[0] ? s->filter.tenant : "any", s->filter.release[0] ? s->filter.release : "any",
             (int)s->nparts);
    stream_drain(s);
}

int api_stream_scope(const http_req_t *req, const char *own, const char *tenant, api_stream_filter_t *f,
                     const char **msg, const char **field) {
    memset(f, 0, sizeof(*f));
    size_t len = 0;
    char *q = tenant ? NULL : httpd_query_param(req, "tenantId", &len);
    int status = 0;
    *msg = *field = NULL;
    if ((q && (len != strlen(q) || !uuid_valid(q))) || (tenant && !uuid_valid(tenant))) {
        status = 400;
        *msg = "tenantId must be a UUID (8-4-4-4-12 hex digits)";
        *field = "tenantId";
    } else if (q) {
        tenant = q;
    }
    if (!status && tenant && own && strcasecmp(tenant, own) != 0) {
        status = 404;
        *msg = "not found";
    }
    if (!status)
        snprintf(f->tenant, sizeof(f->tenant), "%s", tenant ? tenant : own ? own : "");
    free(q);
    return status;
}

static void reply_bad(http_req_t *req, const char *msg, const char *field, const char *rule) {
    httpd_error(req, 400, msg, field, rule);
}

int api_stream_open(api_streams_t *ss, http_req_t *req, const api_stream_filter_t *filter) {
    if (req->head) { /* the headers of the stream, and no stream */
        httpd_add_header(req, "Cache-Control", "no-cache");
        httpd_add_header(req, "X-Accel-Buffering", "no");
        httpd_respond(req, 200, "text/event-stream", NULL, 0);
        return 200;
    }
    size_t len = 0;
    char *since = httpd_query_param(req, "since", &len);
    int beginning = since && strcmp(since, "beginning") == 0;
    if (since && (!beginning || len != strlen(since))) {
        free(since);
        reply_bad(req, "since must be \"beginning\" (or absent: the stream starts at the end)", "since",
                  "enum");
        return 400;
    }
    free(since);
    char *tok = req->last_event_id ? strdup(req->last_event_id) : httpd_query_param(req, "lastEventId", &len);
    if (tok && !req->last_event_id && len != strlen(tok))
        tok[0] = 'x'; /* an encoded NUL: malformed */
    api_stream_t *s = calloc(1, sizeof(*s));
    if (!s)
        abort();
    if (tok) {
        s->ntok = api_stream_token_parse(tok, s->tok_part, s->tok_off, STREAM_MAX_PARTITIONS);
        free(tok);
        if (s->ntok < 0) {
            free(s);
            reply_bad(req, "Last-Event-ID must be an id this stream sent (PARTITION:OFFSET,...)",
                      "Last-Event-ID", "resume-token");
            return 400;
        }
    }
    if (ss->stopping || ss->open >= ss->max_streams) {
        free(s);
        reply_unavailable(req, ss->stopping ? "the server is stopping" : "too many event streams are open");
        return 503;
    }
    if (pipe2(s->fd, O_NONBLOCK | O_CLOEXEC) != 0) {
        free(s);
        reply_unavailable(req, "out of file descriptors");
        return 503;
    }
    s->ss = ss;
    s->req = req;
    s->filter = *filter;
    s->since_beginning = beginning;
    s->next = ss->list;
    if (ss->list)
        ss->list->prev = s;
    ss->list = s;
    ss->open++;
    s->work.data = s;
    uv_queue_work(ss->loop, &s->work, start_work, start_done);
    return 0;
}

void api_streams_stop(api_streams_t *ss) {
    ss->stopping = 1;
    api_stream_t *s = ss->list;
    while (s) {
        api_stream_t *next = s->next;
        if (s->state == STREAM_LIVE) {
            httpd_stream_end(s->conn, 1);
            s->conn = NULL;
            stream_free(s);
        }
        s = next; /* starting ones answer 503 when their start is done */
    }
}
