/* Unit tests of the dispatcher (dispatch.h) with a fake command layer: the
 * command_* functions below stand in for command.o (the archive's member is
 * then never linked), so a test decides when each command finishes. Records
 * are fed to dispatch_message directly; Kafka is a consumer handle with no
 * broker (offsets_store on it fails, the stored offset is still tracked).
 * Checked: one command at a time per release key in offset order, keys
 * concurrently, offsets stored only up to the oldest unfinished command,
 * undecodable records dead-lettered in their place. */
#include "dispatch.h"

#include "codec.h"
#include "log.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

#define TENANT "3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b"

/* --- the fake command layer ------------------------------------------------ */

static command_t *running[64];
static int nrunning, nruns, ndlq;

command_t *command_new(command_ctx_t *ctx, int64_t offset) {
    command_t *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    c->ctx = ctx;
    c->offset = offset;
    c->partition = -1;
    return c;
}

void command_run(command_t *c) {
    nruns++;
    if (c->dlq_error) { /* dead-lettered at once */
        ndlq++;
        c->ctx->host.done(c->ctx->host.ctx, c);
        return;
    }
    running[nrunning++] = c;
}

void command_free(command_t *c) {
    if (!c)
        return;
    free(c->kafka_key);
    free(c->raw);
    free(c->dlq_error);
    free(c->dlq_reason);
    json_decref(c->doc);
    free(c);
}

void command_signal_helm(command_t *c, int sig) {}

void command_pool_stop(command_ctx_t *ctx) {}

void command_ctx_free(command_ctx_t *ctx) {}

/* The running command of release name (NULL: none). */
static command_t *running_of(const char *name) {
    for (int i = 0; i < nrunning; i++)
        if (strcmp(json_string_value(json_object_get(running[i]->doc, "releaseName")), name) == 0)
            return running[i];
    return NULL;
}

/* Finishes the running command of release name; returns its offset. */
static int64_t finish(const char *name) {
    command_t *c = running_of(name);
    if (!c)
        return -1;
    int64_t off = c->offset;
    for (int i = 0; i < nrunning; i++)
        if (running[i] == c)
            running[i] = running[--nrunning];
    c->ctx->host.done(c->ctx->host.ctx, c);
    return off;
}

/* --- feeding records ------------------------------------------------------------- */

static worker_t w;

static void feed(int64_t offset, const char *name, int n) {
    char id[64], key[256], errstr[256];
    snprintf(id, sizeof(id), "8a4c7a3e-6b47-4c5e-9d2f-%012d", n);
    snprintf(key, sizeof(key), TENANT "/ns/%s", name);
    json_t *d = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "operation", "uninstall", "commandId", id,
                          "tenantId", TENANT, "namespace", "ns", "releaseName", name, "performedBy", "alice",
                          "requestedAt", (json_int_t)1764000000000);
    unsigned char *buf = NULL;
    size_t len = 0;
    if (codec_fill_defaults(CODEC_COMMAND, d, errstr, sizeof(errstr)) < 0 ||
        codec_encode(CODEC_COMMAND, d, &buf, &len, errstr, sizeof(errstr)) < 0)
        printf("# encode: %s\n", errstr);
    json_decref(d);
    rd_kafka_message_t m = {0};
    m.partition = 0;
    m.offset = offset;
    m.key = key;
    m.key_len = strlen(key);
    m.payload = buf;
    m.len = len;
    dispatch_message(&w, &m);
    free(buf);
}

static void feed_garbage(int64_t offset) {
    rd_kafka_message_t m = {0};
    m.partition = 0;
    m.offset = offset;
    m.payload = (void *)"garbage";
    m.len = 7;
    dispatch_message(&w, &m);
}

int main(void) {
    char errstr[512];
    log_init("test_dispatch", "error");
    if (codec_init(errstr, sizeof(errstr)) < 0) {
        printf("Bail out! codec_init: %s\n", errstr);
        return 1;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "group.id", "test-dispatch", errstr, sizeof(errstr));
    rd_kafka_conf_set(conf, "log_level", "0", errstr, sizeof(errstr));
    w.consumer = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (!w.consumer) {
        printf("Bail out! rd_kafka_new: %s\n", errstr);
        return 1;
    }
    w.loop = uv_default_loop();
    w.cmd.loop = w.loop;
    w.cmd.commands_topic = "helm.release.commands";
    w.cmd.concurrency = 2;
    w.max_running = 8;
    w.max_buffered = 100;
    dispatch_init(&w);
    /* partition 0 is assigned to this worker */
    w.nparts = 1;
    w.parts = calloc(1, sizeof(partition_t *));
    w.parts[0] = calloc(1, sizeof(partition_t));
    w.parts[0]->assigned = 1;
    w.parts[0]->stored = -1;
    partition_t *p = w.parts[0];

    /* offsets 0..4: a1 b1 a2 (garbage) b2 */
    feed(0, "a", 1);
    feed(1, "b", 2);
    feed(2, "a", 3);
    feed_garbage(3);
    feed(4, "b", 4);
    is_int(nrunning, 2, "one command per key runs: a and b");
    is_int(running_of("a") ? running_of("a")->offset : -1, 0, "key a runs its first command (offset 0)");
    is_int(running_of("b") ? running_of("b")->offset : -1, 1, "key b runs its first command (offset 1)");
    is_int(ndlq, 1, "the undecodable record is dead-lettered");
    is_int(w.running, 2, "two commands in progress");
    is_int(p->stored, -1, "nothing stored while offset 0 runs");

    is_int(finish("b"), 1, "b's first command finishes");
    is_int(running_of("b") ? running_of("b")->offset : -1, 4,
           "key b goes on with offset 4, past a's offset 2");
    is_int(p->stored, -1, "offset 1 done, but offset 0 still runs: nothing stored");

    is_int(finish("a"), 0, "a's first command finishes");
    is_int(running_of("a") ? running_of("a")->offset : -1, 2, "key a goes on with offset 2");
    is_int(p->stored, 2, "offsets 0 and 1 done: 2 stored");

    is_int(finish("b"), 4, "b's second command finishes");
    is_int(p->stored, 2, "offset 2 still runs: 2 stays stored");

    is_int(finish("a"), 2, "a's second command finishes");
    is_int(p->stored, 5, "all done (the dead letter at 3 included): 5 stored");
    is_int(nrunning, 0, "nothing runs");
    is_int(w.running, 0, "nothing in progress");
    is_int(p->count, 0, "the partition holds nothing");
    is_int(nruns, 5, "every record ran once");
    is_u64(w.n_done, 5, "five done");

    int keys = 0;
    for (size_t i = 0; i < w.nkeys_buckets; i++)
        keys += w.keys[i] != NULL;
    is_int(keys, 0, "the keys were freed");
    free(w.keys);
    free(w.parts[0]);
    free(w.parts);
    rd_kafka_destroy(w.consumer);
    codec_term();
    return tap_done();
}
