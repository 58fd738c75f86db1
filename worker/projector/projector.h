/* The projector's internal interface: release events from Kafka into the
 * PostgreSQL projection (schema helmq), in batches.
 *
 * The layers, each calling only the ones below it:
 *   main.c      options, signals, migrations, main()
 *   metrics.c   /metrics and /healthz, reading the counters below
 *   consumer.c  the Kafka consumer, the batching loop, offsets
 *   rebuild.c   a rebuild's start and end (the projection emptied, the topic
 *               assigned from the beginning, obsolete parked rows deleted)
 *   apply.c     the SQL apply step of a batch: send, retry, split, park
 *   batch.c     a batch's records decoded and written as COPY rows (pure:
 *               no PostgreSQL, no Kafka calls beyond freeing messages)
 * Lower layers report upward through counters they own (apply_counters,
 * consumer_gauges), which metrics.c reads; the owner of the process hands
 * its stop flag down (projector_t.stop). */
#ifndef HELMQ_PROJECTOR_H
#define HELMQ_PROJECTOR_H

#include "codec.h"
#include "config.h"

#include <libpq-fe.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* --- batch.c: records, rows --------------------------------------------- */

/* One record of a batch: the Kafka message (kept until the batch is done, for
 * its key, value and place when it has to be parked) and the event decoded in
 * place (codec_decode_flat: slices of the message, no JSON built), or why it
 * did not decode. The flat storage stays with the slot, reused batch after
 * batch. */
typedef struct batch_record {
    rd_kafka_message_t *msg;
    int is_event;
    codec_flat_t ev;
    unsigned char *reencoded; /* an event of an older schema, encoded again with the current one */
    char *decode_error;
} batch_record_t;

/* A growing buffer of COPY rows (text format for the staged form, binary
 * for the direct form). */
typedef struct copy_buf {
    char *data;
    size_t len, cap;
} copy_buf_t;

/* Room for n more bytes in b (copybin.c; aborts when out of memory). */
void copy_buf_reserve(copy_buf_t *b, size_t n);

/* copybin.c: COPY's binary format. The header and trailer of a COPY's
 * data, a tuple's field count, and one field each: from a flat event's
 * value, 0 when written, -1 when the value has no exact binary form here
 * (the caller stages the batch instead). */
void copybin_header(copy_buf_t *b);
void copybin_trailer(copy_buf_t *b);
void copybin_tuple(copy_buf_t *b, int nfields);
void copybin_null(copy_buf_t *b);
void copybin_int4_raw(copy_buf_t *b, int32_t v);
int copybin_text(copy_buf_t *b, const codec_val_t *v);
int copybin_uuid(copy_buf_t *b, const codec_val_t *v);
int copybin_int4(copy_buf_t *b, const codec_val_t *v);
int copybin_ts_ms(copy_buf_t *b, const codec_val_t *v, int64_t max_ms);

/* A set of (text, number) keys with an int each, for one batch: eventIds,
 * (releaseId, revision) history keys, releaseIds. Open addressing; the
 * texts are slices of the batch's messages. */
typedef struct key_slot {
    const char *text;
    size_t len;
    int64_t num;
    int val;
} key_slot_t;

typedef struct key_set {
    key_slot_t *slots;
    size_t mask;
} key_set_t;

/* A release of the batch: its winning event and its first one. */
typedef struct winner {
    int ev, first;
} winner_t;

/* What the direct form needs beyond the batch, reused batch after batch. */
typedef struct direct_work {
    key_set_t ids, history, releases;
    winner_t *winners;
    int cap;
} direct_work_t;

/* A batch: its records in topic order, and the decoded events among them. */
typedef struct batch {
    batch_record_t *recs;
    batch_record_t *events;
    int n, nevents;
    copy_buf_t rows;     /* the staged form: the events' rows for pg_temp.helmq_stage */
    copy_buf_t drows[3]; /* the direct form: see batch_direct_rows */
    int direct;          /* the direct form's rows were made */
    int fresh;           /* the direct form: the batch's new events */
    int in_flight;       /* its rows were sent and their outcome not yet read */
} batch_t;

/* Batches staged rather than tried in the direct form after one failed
 * there (a replay: events already applied; a concurrent writer): a replay
 * goes on for a while, and each failed try costs a round trip. */
#define DIRECT_PAUSE 16

/* What the projector is doing: its connection, and what a run has parked.
 * stop is the owner's flag (set by a signal): every retry loop ends when it
 * is non-zero. */
typedef struct projector {
    PGconn *db;
    const char *url;
    const char *topic;
    int rebuild;
    unsigned long long parked;
    int staged_pid;   /* the backend whose staging tables exist (sql/0002), 0 when unknown */
    int direct_pause; /* batches to stage before trying the direct form again */
    direct_work_t direct;
    const volatile sig_atomic_t *stop;
} projector_t;

/* Finds where the staging columns' fields sit in the current event schema.
 * Call once after codec_init, before any batch. Returns 0, or -1 (logged)
 * when the schema lacks one. */
int batch_columns_init(void);

/* Fills rec from m, taking m (batch_clear destroys it): the event decoded in
 * place, or, when m is no helmq event, rec->is_event 0 and
 * rec->decode_error saying why. An older schema's event is encoded again with
 * the current one (rec->reencoded) and read from that. */
void batch_add(batch_record_t *rec, rd_kafka_message_t *m);

/* Destroys the messages of recs[0..n) and what batch_add allocated for them;
 * the flat storage (rec->ev) stays for reuse (codec_flat_free frees it). */
void batch_clear(batch_record_t *recs, int n);

/* Prepares a gathered batch b (b->recs[0..b->n)): picks its decoded events
 * and writes their rows in the direct form, or the staged one while the
 * direct form pauses (p->direct_pause) or cannot take the batch. */
void batch_prepare(projector_t *p, batch_t *b);

/* Appends the rows of pg_temp.helmq_stage (sql/0002) for events [lo, hi) of
 * recs to rows. */
void batch_stage_rows(const batch_record_t *recs, int lo, int hi, copy_buf_t *rows);

/* The batch's events in the direct form: rows[0] for helmq.applied_events,
 * rows[1] for helmq.release_history, rows[2] for
 * pg_temp.helmq_direct_releases, exactly what apply_staged_rows
 * writes for a batch all of whose events and history rows are new (see
 * sql/0002). w is reused scratch space. Returns the number of new events
 * (distinct eventIds), or -1 when the batch must be staged (a value only the
 * staged form converts exactly). */
int batch_direct_rows(const batch_record_t *evs, int n, direct_work_t *w, copy_buf_t rows[3]);

/* Frees w's scratch space (not w itself). */
void batch_direct_work_free(direct_work_t *w);

/* --- apply.c: the SQL apply step ---------------------------------------- */

/* Counters of the apply step, written by the projecting thread and read by
 * the HTTP thread (metrics.c). */
typedef struct apply_counters {
    atomic_ullong events, batches;
    atomic_ullong batch_buckets[6]; /* batch sizes <= apply_batch_le[i] (-1: +Inf) */
    atomic_ullong parked_refused, parked_undecodable;
    atomic_ullong direct_batches, direct_retried; /* the direct form: committed; applied again staged */
    atomic_int pg_up;
} apply_counters_t;

extern apply_counters_t apply_counters;
extern const long apply_batch_le[6];

/* A connection that is up, reconnecting with backoff (logged) until it is or
 * *stop is set; c may be NULL (connects to url). Returns the connection,
 * which may be down when stopped. */
PGconn *apply_db_ensure(PGconn *c, const char *url, const volatile sig_atomic_t *stop);

/* Starts applying a prepared batch: its rows are sent to PostgreSQL, which
 * applies them while the caller gathers and decodes the next batch;
 * apply_finish reads the outcome. Nothing is sent when PostgreSQL is
 * unreachable or refuses at once: apply_finish then takes the slow path. */
void apply_start(projector_t *p, batch_t *b);

/* Ends applying a whole batch: the decoded events in order, the records that
 * did not decode parked (helmq.parked_events). When the rows sent by
 * apply_start did not commit (refused, or PostgreSQL lost), the batch is
 * applied again the slow way: retried with backoff, split to isolate refused
 * events, which are parked. Returns 0 once everything is in PostgreSQL (the
 * offsets may then be committed), -1 when stopped first (or a rebuild gave
 * up on an error no event caused). */
int apply_finish(projector_t *p, batch_t *b);

/* --- rebuild.c ---------------------------------------------------------- */

/* Empties the projection (helmq.rebuild_begin, sql/0002) and copies when it
 * did so to began. Returns 0, or -1 (logged). */
int rebuild_begin(PGconn *db, char *began, size_t began_size);

/* Assigns every partition of topic from the beginning; *nparts gets their
 * number. Returns 0, or -1 with errstr filled. */
int rebuild_assign(rd_kafka_t *rk, const char *topic, int *nparts, char *errstr, size_t errstr_size);

/* After a rebuild that reached the end: deletes the parked rows of records
 * applied this time (helmq.rebuild_finish), logging the outcome. */
void rebuild_finish(PGconn *db, const char *topic, const char *began);

/* --- consumer.c --------------------------------------------------------- */

/* Gauges of the consumer, from librdkafka's statistics (-1: not known yet). */
typedef struct consumer_gauges {
    atomic_int kafka_up;
    atomic_llong lag;
} consumer_gauges_t;

extern consumer_gauges_t consumer_gauges;

/* Projects the events topic until *stop, or, with rebuild, replays it from
 * the beginning once. Returns the exit status: 0; for a rebuild 3 when it
 * finished with records parked, 1 when it could not finish; 1 on a setup
 * error (logged). */
int consumer_run(const config_t *cfg, int rebuild, const volatile sig_atomic_t *stop);

/* --- metrics.c ---------------------------------------------------------- */

typedef struct metrics_http metrics_http_t;

/* Serves /metrics and /healthz on listen (ADDRESS:PORT) from a thread of
 * their own (the projector's loop blocks on Kafka and PostgreSQL by design).
 * Returns NULL (logged) when it cannot listen. */
metrics_http_t *metrics_http_start(const char *listen);

/* Stops and frees h; h may be NULL. */
void metrics_http_stop(metrics_http_t *h);

#endif
