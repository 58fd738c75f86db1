/* PostgreSQL's binary COPY format for the direct form's rows (batch.c): the
 * values go into the tables' columns as their binary representation, so
 * PostgreSQL skips the text input functions (uuid_in, timestamptz_in,
 * int4in) and COPY's text parsing. Each encoder takes a flat event's value
 * (codec_val_t) and writes what the text form would have made of it, or
 * returns -1 when only PostgreSQL's own input function could say (a uuid
 * not in its canonical form, an integer out of int4's range, a timestamp
 * outside DIRECT_MS range, a NUL byte in text): the batch is then staged,
 * whose semantics the direct form's are (sql/0002). Pure: no libpq here. */
#include "projector.h"

#include "log.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void copy_buf_reserve(copy_buf_t *b, size_t n) {
    if (b->len + n <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 65536;
    while (cap < b->len + n)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        log_error("out of memory building a batch of %zu bytes", cap);
        abort();
    }
    b->data = d;
    b->cap = cap;
}

static void bin_raw(copy_buf_t *b, const void *s, size_t n) {
    copy_buf_reserve(b, n);
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* n bytes of v, most significant first (network order). */
static void bin_be(copy_buf_t *b, uint64_t v, int n) {
    unsigned char o[8];
    for (int i = n - 1; i >= 0; i--, v >>= 8)
        o[i] = (unsigned char)(v & 0xff);
    bin_raw(b, o, (size_t)n);
}

void copybin_header(copy_buf_t *b) {
    /* The signature, the flags (no OIDs) and the header extension's length. */
    static const char sig[] = "PGCOPY\n\377\r\n";
    bin_raw(b, sig, 11);
    bin_be(b, 0, 4);
    bin_be(b, 0, 4);
}

void copybin_trailer(copy_buf_t *b) {
    bin_be(b, 0xffff, 2);
}

void copybin_tuple(copy_buf_t *b, int nfields) {
    bin_be(b, (uint64_t)nfields, 2);
}

void copybin_null(copy_buf_t *b) {
    bin_be(b, 0xffffffffu, 4);
}

void copybin_int4_raw(copy_buf_t *b, int32_t v) {
    bin_be(b, 4, 4);
    bin_be(b, (uint32_t)v, 4);
}

/* A text column: a string's bytes (an enum's symbol), a number's digits,
 * true/false, or NULL, as copy_val writes them in the text form. */
int copybin_text(copy_buf_t *b, const codec_val_t *v) {
    char num[32];
    int n;
    switch (v ? v->kind : CODEC_V_NULL) {
    case CODEC_V_TEXT:
        if (memchr(v->text, '\0', v->len) || v->len > 0x3fffffff)
            return -1;
        bin_be(b, v->len, 4);
        bin_raw(b, v->text, v->len);
        return 0;
    case CODEC_V_INT:
        n = snprintf(num, sizeof(num), "%lld", (long long)v->num);
        bin_be(b, (uint64_t)n, 4);
        bin_raw(b, num, (size_t)n);
        return 0;
    case CODEC_V_BOOL:
        bin_be(b, v->num ? 4 : 5, 4);
        bin_raw(b, v->num ? "true" : "false", v->num ? 4 : 5);
        return 0;
    default: copybin_null(b); return 0;
    }
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* A uuid column: the canonical 8-4-4-4-12 hex form (either case) as its 16
 * bytes, or NULL. */
int copybin_uuid(copy_buf_t *b, const codec_val_t *v) {
    if (!v || v->kind == CODEC_V_NULL) {
        copybin_null(b);
        return 0;
    }
    if (v->kind != CODEC_V_TEXT || v->len != 36)
        return -1;
    unsigned char u[16];
    int k = 0;
    for (size_t i = 0; i < 36;) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (v->text[i] != '-')
                return -1;
            i++;
            continue;
        }
        int hi = hex_digit(v->text[i]), lo = hex_digit(v->text[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        u[k++] = (unsigned char)(hi << 4 | lo);
        i += 2;
    }
    bin_be(b, 16, 4);
    bin_raw(b, u, 16);
    return 0;
}

/* An integer column: an int within int4's range, or NULL. */
int copybin_int4(copy_buf_t *b, const codec_val_t *v) {
    if (!v || v->kind == CODEC_V_NULL) {
        copybin_null(b);
        return 0;
    }
    if (v->kind != CODEC_V_INT || v->num < INT32_MIN || v->num > INT32_MAX)
        return -1;
    copybin_int4_raw(b, (int32_t)v->num);
    return 0;
}

/* PostgreSQL's epoch, 2000-01-01, in ms since 1970-01-01. */
#define PG_EPOCH_MS 946684800000LL

/* A timestamptz column from ms since 1970 in [0, max_ms): microseconds since
 * 2000-01-01 as an int64 (negative before it). */
int copybin_ts_ms(copy_buf_t *b, const codec_val_t *v, int64_t max_ms) {
    if (!v || v->kind != CODEC_V_INT || v->num < 0 || v->num >= max_ms)
        return -1;
    bin_be(b, 8, 4);
    bin_be(b, (uint64_t)((v->num - PG_EPOCH_MS) * 1000), 8);
    return 0;
}
