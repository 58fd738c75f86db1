/* The services the dispatcher lends the command layer (command_host_t):
 * producing records with delivery reports handed back on the loop, the
 * queue of deferred work run a slice per loop iteration, and the ledger
 * connection of each release key; and librdkafka's statistics, kept for
 * the metrics. Nothing here calls into dispatch.c. */
#include "dispatch.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>

typedef struct produce_req {
    worker_t *w;
    command_t *c;
    command_produce_cb cb;
    char *topic;
} produce_req_t;

static size_t hash_str(const char *s) {
    size_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

db_t *worker_db(worker_t *w, const char *key) {
    return w->dbs[hash_str(key) % (size_t)w->ndbs];
}

/* At most this long per loop iteration (at least one item). */
#define LATER_SLICE_NS 2000000

struct later {
    void (*fn)(void *);
    void *arg;
    struct later *next;
};

static void on_later(uv_idle_t *h) {
    worker_t *w = h->data;
    uint64_t until = uv_hrtime() + LATER_SLICE_NS;
    for (int i = 0; w->later_head && (i == 0 || uv_hrtime() < until); i++) {
        struct later *l = w->later_head;
        w->later_head = l->next;
        if (!w->later_head)
            w->later_tail = NULL;
        l->fn(l->arg);
        free(l);
    }
    if (!w->later_head)
        uv_idle_stop(h);
}

/* Runs everything still waiting (exiting: nothing runs the loop for it). */
void dispatch_later_drain(worker_t *w) {
    while (w->later_head)
        on_later(&w->later_idle);
}

void dispatch_later(worker_t *w, void (*fn)(void *), void *arg) {
    if (w->cmd.exiting) {
        fn(arg);
        return;
    }
    struct later *l = malloc(sizeof(*l));
    if (!l)
        abort();
    *l = (struct later){fn, arg, NULL};
    if (w->later_tail)
        w->later_tail->next = l;
    else
        w->later_head = l;
    w->later_tail = l;
    if (!uv_is_active((uv_handle_t *)&w->later_idle))
        uv_idle_start(&w->later_idle, on_later);
}

/* --- producing ------------------------------------------------------------------ */

typedef struct {
    produce_req_t *req;
    rd_kafka_resp_err_t err;
} delivered_t;

static void delivered(void *arg) {
    delivered_t *d = arg;
    d->req->cb(d->req->c, d->err);
    free(d->req->topic);
    free(d->req);
    free(d);
}

void dispatch_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    produce_req_t *req = m->_private;
    if (!req)
        return;
    if (m->err) {
        /* With message.timeout.ms=0 this is a fatal producer error. */
        log_error("delivery to %s failed: %s; producing again", req->topic, rd_kafka_err2str(m->err));
        rd_kafka_resp_err_t e =
            rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(req->topic), RD_KAFKA_V_KEY(m->key, m->key_len),
                              RD_KAFKA_V_VALUE(m->payload, m->len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                              RD_KAFKA_V_OPAQUE(req), RD_KAFKA_V_END);
        if (e == 0)
            return;
        log_error("cannot produce again to %s: %s", req->topic, rd_kafka_err2str(e));
    }
    if (req->cb) {
        delivered_t *d = malloc(sizeof(*d));
        if (!d)
            abort();
        *d = (delivered_t){req, m->err};
        dispatch_later(req->w, delivered, d);
        return;
    }
    free(req->topic);
    free(req);
}

void dispatch_produce(worker_t *w, const char *topic, command_t *c, const void *key, size_t key_len,
                      const void *value, size_t value_len, rd_kafka_headers_t *headers,
                      command_produce_cb cb) {
    produce_req_t *req = calloc(1, sizeof(*req));
    if (!req)
        abort();
    req->w = w;
    req->c = c;
    req->cb = cb;
    req->topic = strdup(topic);
    rd_kafka_resp_err_t err;
    for (;;) {
        if (headers)
            err = rd_kafka_producev(w->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                                    RD_KAFKA_V_VALUE((void *)value, value_len),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(headers),
                                    RD_KAFKA_V_OPAQUE(req), RD_KAFKA_V_END);
        else
            err = rd_kafka_producev(w->producer, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, key_len),
                                    RD_KAFKA_V_VALUE((void *)value, value_len),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_OPAQUE(req),
                                    RD_KAFKA_V_END);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            break;
        rd_kafka_poll(w->producer, 10); /* the local queue is full: serve reports to make room */
    }
    if (err) {
        log_error("cannot produce to %s: %s", topic, rd_kafka_err2str(err));
        if (headers)
            rd_kafka_headers_destroy(headers);
        if (cb)
            cb(c, err);
        free(req->topic);
        free(req);
    }
}

int dispatch_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
    worker_t *w = opaque;
    json_t *st = json_loadb(json, len, 0, NULL);
    if (!st)
        return 0;
    const char *type = json_string_value(json_object_get(st, "type"));
    const char *name;
    json_t *v;
    if (type && strcmp(type, "consumer") == 0) {
        int64_t lag = 0;
        json_t *parts = json_object_get(json_object_get(json_object_get(st, "topics"), w->cmd.commands_topic),
                                        "partitions");
        json_object_foreach(parts, name, v) {
            json_int_t l = json_integer_value(json_object_get(v, "consumer_lag"));
            if (strcmp(name, "-1") != 0 && l > 0)
                lag += l;
        }
        w->consumer_lag = lag;
    }
    int up = 0;
    json_object_foreach(json_object_get(st, "brokers"), name, v) {
        const char *state = json_string_value(json_object_get(v, "state"));
        if (state && strcmp(state, "UP") == 0 && json_integer_value(json_object_get(v, "nodeid")) >= 0)
            up++;
    }
    if (type && strcmp(type, "producer") == 0)
        w->kafka_brokers_up = up;
    json_decref(st);
    return 0;
}

/* --- the command layer's host ------------------------------------------------------ */

static void host_produce(void *ctx, const char *topic, command_t *c, const void *key, size_t key_len,
                         const void *value, size_t value_len, rd_kafka_headers_t *headers,
                         command_produce_cb cb) {
    dispatch_produce(ctx, topic, c, key, key_len, value, value_len, headers, cb);
}

static void host_later(void *ctx, void (*fn)(void *), void *arg) {
    dispatch_later(ctx, fn, arg);
}

static void host_query(void *ctx, const char *key, const char *sql, int n, const char *const *values,
                       const int *lengths, const int *formats, db_cb cb, void *arg) {
    db_query(worker_db(ctx, key), sql, n, values, lengths, formats, cb, arg);
}

static int host_undone_runs(void *ctx, const char *key) {
    return db_undone_runs(worker_db(ctx, key));
}

void dispatch_host_fill(worker_t *w, void (*done)(void *ctx, command_t *c),
                        void (*given_back)(void *ctx, command_t *c)) {
    w->cmd.host = (command_host_t){.ctx = w,
                                   .done = done,
                                   .given_back = given_back,
                                   .produce = host_produce,
                                   .later = host_later,
                                   .query = host_query,
                                   .undone_runs = host_undone_runs};
}
