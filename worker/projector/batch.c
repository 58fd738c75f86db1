/* A batch of the projector: its Kafka records decoded into events in place,
 * and those events written as PostgreSQL COPY rows, in the staged form
 * (pg_temp.helmq_stage, applied by helmq.apply_staged, sql/0002) or the
 * direct form (rows straight for the tables, sql/0002: this file does the
 * dedup by eventId and picks each release's winner by revision). Pure: no
 * PostgreSQL here, so the unit tests drive it without a server. */
#include "projector.h"

#include "log.h"
#include "util.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void copy_raw(copy_buf_t *b, const char *s, size_t n) {
    copy_buf_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* One column, escaped for COPY's text format: backslash, tab, newline and
 * CR as backslash sequences, NUL as \000 (which PostgreSQL then refuses as
 * text, as it refuses \u0000 in jsonb: such an event is parked). */
static void copy_text(copy_buf_t *b, const char *s, size_t n) {
    copy_buf_reserve(b, 4 * n + 1);
    char *o = b->data + b->len;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        switch (ch) {
        case '\\':
            *o++ = '\\';
            *o++ = '\\';
            break;
        case '\t':
            *o++ = '\\';
            *o++ = 't';
            break;
        case '\n':
            *o++ = '\\';
            *o++ = 'n';
            break;
        case '\r':
            *o++ = '\\';
            *o++ = 'r';
            break;
        case '\0':
            memcpy(o, "\\000", 4);
            o += 4;
            break;
        default: *o++ = ch;
        }
    }
    b->len = (size_t)(o - b->data);
}

/* The columns of pg_temp.helmq_stage after ord and ho (sql/0002): the event
 * field each takes in an event's row, and in a row of its history (NULL: the
 * column is null in such rows). */
static const struct stage_column {
    const char *event, *history;
} stage_columns[] = {
    {"eventId", NULL},
    {"commandId", NULL},
    {"releaseId", NULL},
    {"tenantId", NULL},
    {"eventType", NULL},
    {"terminal", NULL},
    {"namespace", NULL},
    {"releaseName", NULL},
    {"status", "status"},
    {"revision", "revision"},
    {"chartName", "chartName"},
    {"chartVersion", "chartVersion"},
    {"appVersion", "appVersion"},
    {NULL, "operation"},
    {"description", "description"},
    {"performedBy", NULL},
    {"occurredAt", "createdAt"},
    {"reason", NULL},
    {"valuesDigest", NULL},
    {"valuesRedacted", NULL},
    {"errorCode", NULL},
    {"errorMessage", NULL},
};
#define NCOLUMNS (sizeof(stage_columns) / sizeof(stage_columns[0]))

/* Where each column's field sits in a flat event (codec_flat_index), -1 for
 * none; and the history array's. */
static int col_event[NCOLUMNS], col_history[NCOLUMNS], ix_history;

int batch_columns_init(void) {
    ix_history = codec_flat_index(CODEC_EVENT, "history", NULL);
    for (size_t c = 0; c < NCOLUMNS; c++) {
        const struct stage_column *sc = &stage_columns[c];
        col_event[c] = sc->event ? codec_flat_index(CODEC_EVENT, sc->event, NULL) : -1;
        col_history[c] = sc->history ? codec_flat_index(CODEC_EVENT, "history", sc->history) : -1;
        if ((sc->event && col_event[c] < 0) || (sc->history && col_history[c] < 0)) {
            log_error("the event schema has no field %s%s", sc->event ? sc->event : "history.",
                      sc->event ? "" : sc->history);
            return -1;
        }
    }
    return ix_history < 0 ? -1 : 0;
}

/* A flat event's value as a column, as jsonb's ->> gives the same field of
 * its natural JSON: a string's text (an enum's symbol), a number's digits,
 * true/false, and \N for null. sep is the character after it (tab, or the
 * newline ending the row). */
static void copy_val(copy_buf_t *b, const codec_val_t *v, char sep) {
    char num[32];
    int n;
    switch (v ? v->kind : CODEC_V_NULL) {
    case CODEC_V_TEXT: copy_text(b, v->text, v->len); break;
    case CODEC_V_INT:
        n = snprintf(num, sizeof(num), "%lld", (long long)v->num);
        copy_raw(b, num, (size_t)n);
        break;
    case CODEC_V_BOOL: copy_raw(b, v->num ? "true" : "false", v->num ? 4 : 5); break;
    default: copy_raw(b, "\\N", 2);
    }
    copy_raw(b, &sep, 1);
}

/* The staging rows of events [lo, hi), appended to rows. */
void batch_stage_rows(const batch_record_t *recs, int lo, int hi, copy_buf_t *rows) {
    char num[32];
    for (int i = lo; i < hi; i++) {
        const codec_flat_t *e = &recs[i].ev;
        int ord = i - lo + 1;
        int n = snprintf(num, sizeof(num), "%d\t0\t", ord);
        copy_raw(rows, num, (size_t)n);
        for (size_t c = 0; c < NCOLUMNS; c++)
            copy_val(rows, col_event[c] >= 0 ? &e->v[col_event[c]] : NULL, c + 1 < NCOLUMNS ? '\t' : '\n');
        for (int k = 0; k < e->items; k++) {
            n = snprintf(num, sizeof(num), "%d\t%d\t", ord, k + 1);
            copy_raw(rows, num, (size_t)n);
            for (size_t c = 0; c < NCOLUMNS; c++)
                copy_val(rows, col_history[c] >= 0 ? codec_flat_item(e, k, col_history[c]) : NULL,
                         c + 1 < NCOLUMNS ? '\t' : '\n');
        }
    }
}

/* --- the direct form (sql/0002) ---------------------------------------- */

/* The columns of stage_columns, by name. */
enum {
    C_EVENT_ID,
    C_COMMAND_ID,
    C_RELEASE_ID,
    C_TENANT_ID,
    C_EVENT_TYPE,
    C_TERMINAL,
    C_NAMESPACE,
    C_RELEASE_NAME,
    C_STATUS,
    C_REVISION,
    C_CHART_NAME,
    C_CHART_VERSION,
    C_APP_VERSION,
    C_OPERATION,
    C_DESCRIPTION,
    C_PERFORMED_BY,
    C_AT,
    C_REASON,
    C_DIGEST,
    C_REDACTED,
    C_ERROR_CODE,
    C_ERROR_MESSAGE,
};

static const codec_val_t val_null = {CODEC_V_NULL, NULL, 0, 0};

static const codec_val_t *ev_val(const codec_flat_t *e, int c) {
    return col_event[c] >= 0 ? &e->v[col_event[c]] : &val_null;
}
static const codec_val_t *hist_val(const codec_flat_t *e, int k, int c) {
    return col_history[c] >= 0 ? codec_flat_item(e, k, col_history[c]) : &val_null;
}
static int val_is(const codec_val_t *v, const char *text) {
    size_t n = strlen(text);
    return v->kind == CODEC_V_TEXT && v->len == n && memcmp(v->text, text, n) == 0;
}

/* The direct form writes timestamps as microseconds (copybin.c); the staged
 * form converts ms with to_timestamp(ms / 1000.0), whose float arithmetic
 * gives the exact millisecond only within a range: outside it, the batch is
 * staged. */
#define DIRECT_MS_MAX 4102444800000LL /* 2100-01-01 */

static void key_set_reset(key_set_t *ks, int n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap *= 2;
    if (cap > ks->mask + 1 || !ks->slots) {
        free(ks->slots);
        ks->slots = malloc(cap * sizeof(*ks->slots));
        if (!ks->slots) {
            log_error("out of memory for a batch of %d events", n);
            abort();
        }
        ks->mask = cap - 1;
    }
    for (size_t i = 0; i <= ks->mask; i++)
        ks->slots[i].text = NULL;
}

/* The slot of (text, num), added with val when new; *found says which. */
static key_slot_t *key_set_put(key_set_t *ks, const codec_val_t *text, int64_t num, int val, int *found) {
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)num;
    for (size_t i = 0; i < text->len; i++)
        h = (h ^ (unsigned char)text->text[i]) * 1099511628211ULL;
    for (size_t i = (size_t)(h ^ (h >> 29)) & ks->mask;; i = (i + 1) & ks->mask) {
        key_slot_t *s = &ks->slots[i];
        if (!s->text) {
            *s = (key_slot_t){text->text, text->len, num, val};
            *found = 0;
            return s;
        }
        if (s->num == num && s->len == text->len && memcmp(s->text, text->text, text->len) == 0) {
            *found = 1;
            return s;
        }
    }
}

static int winner_cmp(const void *a, const void *b) {
    return ((const winner_t *)a)->ev - ((const winner_t *)b)->ev;
}

void batch_direct_work_free(direct_work_t *w) {
    free(w->ids.slots);
    free(w->history.slots);
    free(w->releases.slots);
    free(w->winners);
}

/* The batch's events in the direct form: rows[0] for helmq.applied_events,
 * rows[1] for helmq.release_history, rows[2] for
 * pg_temp.helmq_direct_releases, exactly what apply_staged_rows
 * writes for a batch all of whose events and history rows are new (see
 * sql/0002). Returns the number of new events, or -1 when the batch must be
 * staged (a value only the staged form converts exactly). */
int batch_direct_rows(const batch_record_t *evs, int n, direct_work_t *w, copy_buf_t rows[3]) {
    int nhist = 0, nwin = 0, fresh = 0, found;
    for (int i = 0; i < n; i++)
        nhist += evs[i].ev.items;
    key_set_reset(&w->ids, n);
    key_set_reset(&w->history, nhist);
    key_set_reset(&w->releases, n);
    if (w->cap < n) {
        free(w->winners);
        w->winners = malloc((size_t)n * sizeof(*w->winners));
        if (!w->winners) {
            log_error("out of memory for a batch of %d events", n);
            abort();
        }
        w->cap = n;
    }
    for (int k = 0; k < 3; k++) {
        rows[k].len = 0;
        copybin_header(&rows[k]);
    }
    for (int i = 0; i < n; i++) {
        const codec_flat_t *e = &evs[i].ev;
        const codec_val_t *id = ev_val(e, C_EVENT_ID), *rid = ev_val(e, C_RELEASE_ID);
        if (id->kind != CODEC_V_TEXT)
            return -1;
        key_set_put(&w->ids, id, 0, i, &found);
        if (found) /* a duplicate within the batch counts once, at its first place */
            continue;
        fresh++;
        /* applied_events: (event_id, command_id, release_id, tenant_id, event_type, status, revision,
         * occurred_at, error_code, error_message) */
        copybin_tuple(&rows[0], 10);
        if (copybin_uuid(&rows[0], id) < 0 || copybin_text(&rows[0], ev_val(e, C_COMMAND_ID)) < 0 ||
            copybin_uuid(&rows[0], rid) < 0 || copybin_uuid(&rows[0], ev_val(e, C_TENANT_ID)) < 0 ||
            copybin_text(&rows[0], ev_val(e, C_EVENT_TYPE)) < 0 ||
            copybin_text(&rows[0], ev_val(e, C_STATUS)) < 0 ||
            copybin_int4(&rows[0], ev_val(e, C_REVISION)) < 0 ||
            copybin_ts_ms(&rows[0], ev_val(e, C_AT), DIRECT_MS_MAX) < 0 ||
            copybin_text(&rows[0], ev_val(e, C_ERROR_CODE)) < 0 ||
            copybin_text(&rows[0], ev_val(e, C_ERROR_MESSAGE)) < 0)
            return -1;
        const codec_val_t *terminal = ev_val(e, C_TERMINAL), *revision = ev_val(e, C_REVISION);
        if (!(terminal->kind == CODEC_V_BOOL && terminal->num) ||
            val_is(ev_val(e, C_EVENT_TYPE), "rejected") || rid->kind != CODEC_V_TEXT)
            continue;
        if (revision->kind != CODEC_V_INT || ev_val(e, C_AT)->kind != CODEC_V_INT)
            return -1;
        /* History: each (release, revision) once, the first in topic order. */
        for (int k = 0; k < e->items; k++) {
            const codec_val_t *hrev = hist_val(e, k, C_REVISION);
            if (hrev->kind != CODEC_V_INT)
                return -1;
            key_set_put(&w->history, rid, hrev->num, 0, &found);
            if (found)
                continue;
            int own = hrev->num == revision->num;
            copy_buf_t *h = &rows[1];
            copybin_tuple(h, 15);
            if (copybin_uuid(h, rid) < 0 || copybin_int4(h, hrev) < 0 ||
                copybin_uuid(h, ev_val(e, C_TENANT_ID)) < 0)
                return -1;
            static const int hist_cols[] = {C_CHART_NAME, C_CHART_VERSION, C_APP_VERSION,
                                            C_STATUS,     C_OPERATION,     C_DESCRIPTION};
            for (size_t c = 0; c < sizeof(hist_cols) / sizeof(hist_cols[0]); c++)
                if (copybin_text(h, hist_val(e, k, hist_cols[c])) < 0)
                    return -1;
            if (copybin_text(h, ev_val(e, C_PERFORMED_BY)) < 0 ||
                copybin_text(h, ev_val(e, C_COMMAND_ID)) < 0 ||
                copybin_text(h, val_is(hist_val(e, k, C_STATUS), "failed") ? ev_val(e, C_ERROR_MESSAGE)
                                                                           : NULL) < 0 ||
                copybin_text(h, own ? ev_val(e, C_DIGEST) : NULL) < 0 ||
                copybin_text(h, own ? ev_val(e, C_REDACTED) : NULL) < 0 ||
                copybin_ts_ms(h, hist_val(e, k, C_AT), DIRECT_MS_MAX) < 0)
                return -1;
        }
        /* The release's winner: the highest (revision, occurredAt), the
         * later in topic order on a tie. */
        key_slot_t *slot = key_set_put(&w->releases, rid, 0, nwin, &found);
        if (!found) {
            w->winners[nwin++] = (winner_t){i, i};
            continue;
        }
        winner_t *win = &w->winners[slot->val];
        const codec_flat_t *we = &evs[win->ev].ev;
        int64_t wrev = ev_val(we, C_REVISION)->num, wat = ev_val(we, C_AT)->num;
        if (revision->num > wrev || (revision->num == wrev && ev_val(e, C_AT)->num >= wat))
            win->ev = i;
    }
    /* The releases, in the topic order of their winning events. */
    if (nwin > 1)
        qsort(w->winners, (size_t)nwin, sizeof(*w->winners), winner_cmp);
    for (int r = 0; r < nwin; r++) {
        const codec_flat_t *e = &evs[w->winners[r].ev].ev;
        copy_buf_t *d = &rows[2];
        /* pg_temp.helmq_direct_releases: ord, then the release's columns. */
        copybin_tuple(d, 18);
        copybin_int4_raw(d, w->winners[r].ev + 1);
        if (copybin_uuid(d, ev_val(e, C_RELEASE_ID)) < 0 || copybin_uuid(d, ev_val(e, C_TENANT_ID)) < 0)
            return -1;
        static const int rel_text[] = {C_NAMESPACE,     C_RELEASE_NAME, C_CHART_NAME,
                                       C_CHART_VERSION, C_APP_VERSION,  C_STATUS};
        for (size_t c = 0; c < sizeof(rel_text) / sizeof(rel_text[0]); c++)
            if (copybin_text(d, ev_val(e, rel_text[c])) < 0)
                return -1;
        if (copybin_int4(d, ev_val(e, C_REVISION)) < 0 || copybin_text(d, ev_val(e, C_DESCRIPTION)) < 0 ||
            copybin_text(d, ev_val(e, C_DIGEST)) < 0 || copybin_text(d, ev_val(e, C_REDACTED)) < 0 ||
            copybin_text(d, val_is(ev_val(e, C_STATUS), "uninstalled") ? ev_val(e, C_REASON) : NULL) < 0 ||
            copybin_text(d, ev_val(e, C_ERROR_MESSAGE)) < 0 || copybin_uuid(d, ev_val(e, C_EVENT_ID)) < 0 ||
            copybin_ts_ms(d, ev_val(&evs[w->winners[r].first].ev, C_AT), DIRECT_MS_MAX) < 0 ||
            copybin_ts_ms(d, ev_val(e, C_AT), DIRECT_MS_MAX) < 0)
            return -1;
    }
    for (int k = 0; k < 3; k++)
        copybin_trailer(&rows[k]);
    return fresh;
}

/* Prepares a gathered batch: picks its decoded events and writes their rows
 * in the direct form, or the staged one while the direct form pauses (done
 * while PostgreSQL still applies the batch before). */
void batch_prepare(projector_t *p, batch_t *b) {
    b->nevents = 0;
    b->in_flight = 0;
    b->rows.len = 0;
    for (int i = 0; i < b->n; i++)
        if (b->recs[i].is_event)
            b->events[b->nevents++] = b->recs[i];
    int fresh = -1; /* a batch without events sends nothing: see apply_start */
    if (b->nevents > 0 && p->direct_pause > 0)
        p->direct_pause--;
    else if (b->nevents > 0)
        fresh = batch_direct_rows(b->events, b->nevents, &p->direct, b->drows);
    b->direct = fresh >= 0;
    b->fresh = fresh;
    if (!b->direct)
        batch_stage_rows(b->events, 0, b->nevents, &b->rows);
}

/* Adds a record to the batch, taking m: decoded, or with why it is not a
 * helmq event. */
void batch_add(batch_record_t *rec, rd_kafka_message_t *m) {
    char errstr[512];
    codec_type_t t;
    json_t *doc = NULL;
    rec->msg = m;
    rec->is_event = 0;
    rec->reencoded = NULL;
    rec->decode_error = NULL;
    if (codec_decode_flat(m->payload, m->len, CODEC_EVENT, &rec->ev) == 0) {
        rec->is_event = 1;
        return;
    }
    /* Not an event of the current schema read in place: the full decoder
     * says why, or resolves an older schema's event, which is then read in
     * place from its encoding with the current one. */
    size_t len;
    if (codec_decode(m->payload, m->len, &t, &doc, errstr, sizeof(errstr)) != 0)
        rec->decode_error = strdup(errstr);
    else if (t != CODEC_EVENT)
        rec->decode_error = strdup("a command, not an event");
    else if (codec_encode(CODEC_EVENT, doc, &rec->reencoded, &len, errstr, sizeof(errstr)) != 0)
        rec->decode_error = strdup(errstr);
    else if (codec_decode_flat(rec->reencoded, len, CODEC_EVENT, &rec->ev) != 0)
        rec->decode_error = strdup("the event does not decode in place (a schema the projector cannot read)");
    else
        rec->is_event = 1;
    json_decref(doc);
}

void batch_clear(batch_record_t *recs, int n) {
    for (int i = 0; i < n; i++) {
        rd_kafka_message_destroy(recs[i].msg);
        free(recs[i].reencoded);
        recs[i].reencoded = NULL;
        free(recs[i].decode_error);
    }
}
