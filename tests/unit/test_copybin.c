/* Unit tests of the projector's binary COPY encoders (worker/projector/
 * copybin.c): each field's exact bytes as PostgreSQL's binary COPY reads
 * them (a length in network order, then the value), timestamps at the edges
 * of the direct form's range (1970, 2000, 2099, before 2000: negative
 * microseconds), uuids, NULL, unicode text, int4's limits; and the values
 * the encoders refuse (-1: the batch is then staged), which must leave
 * nothing half written that PostgreSQL would read. tests/projection.t
 * checks the tables PostgreSQL builds from these rows. */
#include "projector.h"

#include "tap.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The DIRECT_MS_MAX of batch.c: 2100-01-01. */
#define MAX_MS 4102444800000LL

static copy_buf_t buf;
static char hexbuf[512];

/* What an encoder wrote, in hex, spaces between the length and the value. */
static const char *hex(void) {
    size_t n = 0;
    for (size_t i = 0; i < buf.len && n + 4 < sizeof(hexbuf); i++) {
        if (i == 4)
            hexbuf[n++] = ' ';
        n += (size_t)snprintf(hexbuf + n, sizeof(hexbuf) - n, "%02x", (unsigned char)buf.data[i]);
    }
    hexbuf[n] = '\0';
    return hexbuf;
}

static codec_val_t text(const char *s) {
    return (codec_val_t){CODEC_V_TEXT, s, strlen(s), 0};
}
static codec_val_t num(int64_t n) {
    return (codec_val_t){CODEC_V_INT, NULL, 0, n};
}
static const codec_val_t null_val = {CODEC_V_NULL, NULL, 0, 0};

static const struct ts_case {
    const char *name;
    int64_t ms;
    int rc;
    const char *bytes;
} ts_cases[] = {
    /* -946684800000000 us */
    {"1970-01-01T00:00:00.000Z", 0, 0, "00000008 fffca2fec4c82000"},
    {"2000-01-01T00:00:00.000Z (PostgreSQL's epoch)", 946684800000LL, 0, "00000008 0000000000000000"},
    {"1999-12-31T23:59:59.999Z (negative microseconds)", 946684799999LL, 0, "00000008 fffffffffffffc18"},
    {"2000-01-01T00:00:00.001Z", 946684800001LL, 0, "00000008 00000000000003e8"},
    /* (4102444799999 - 946684800000) * 1000 = 3155759999999000 = 0xb3625a1cbdc18 */
    {"2099-12-31T23:59:59.999Z", 4102444799999LL, 0, "00000008 000b3625a1cbdc18"},
    {"2100-01-01 (out of the direct form's range)", MAX_MS, -1, ""},
    {"before 1970 (out of range)", -1, -1, ""},
};

static void test_timestamps(void) {
    for (size_t i = 0; i < sizeof(ts_cases) / sizeof(ts_cases[0]); i++) {
        const struct ts_case *t = &ts_cases[i];
        codec_val_t v = num(t->ms);
        buf.len = 0;
        is_int(copybin_ts_ms(&buf, &v, MAX_MS), t->rc, "timestamp %s: accepted or refused", t->name);
        if (t->rc == 0)
            is_str(hex(), t->bytes, "timestamp %s: microseconds since 2000 as int64", t->name);
    }
    buf.len = 0;
    is_int(copybin_ts_ms(&buf, &null_val, MAX_MS), -1,
           "a null timestamp is refused (the columns are NOT NULL)");
    codec_val_t s = text("2026-01-01T00:00:00Z");
    is_int(copybin_ts_ms(&buf, &s, MAX_MS), -1, "a timestamp as text is refused");
}

static const struct uuid_case {
    const char *in;
    int rc;
    const char *bytes;
} uuid_cases[] = {
    {"00000000-0000-0000-0000-000000000000", 0, "00000010 00000000000000000000000000000000"},
    {"0123abcd-4567-89ef-0123-456789abcdef", 0, "00000010 0123abcd456789ef0123456789abcdef"},
    {"0123ABCD-4567-89EF-0123-456789ABCDEF", 0, "00000010 0123abcd456789ef0123456789abcdef"},
    {"ffffffff-ffff-ffff-ffff-ffffffffffff", 0, "00000010 ffffffffffffffffffffffffffffffff"},
    /* Forms uuid_in reads too, or refuses: the batch is staged, PostgreSQL decides. */
    {"0123abcd456789ef0123456789abcdef", -1, ""},
    {"{0123abcd-4567-89ef-0123-456789abcdef}", -1, ""},
    {"0123abcd-4567-89ef-0123-456789abcdeg", -1, ""},
    {"0123abcd-456789ef-0123-456789abcdef0", -1, ""},
    {"not-a-uuid", -1, ""},
};

static void test_uuids(void) {
    for (size_t i = 0; i < sizeof(uuid_cases) / sizeof(uuid_cases[0]); i++) {
        const struct uuid_case *t = &uuid_cases[i];
        codec_val_t v = text(t->in);
        buf.len = 0;
        is_int(copybin_uuid(&buf, &v), t->rc, "uuid %s: accepted or refused", t->in);
        if (t->rc == 0)
            is_str(hex(), t->bytes, "uuid %s: its 16 bytes", t->in);
    }
    buf.len = 0;
    is_int(copybin_uuid(&buf, &null_val), 0, "a null uuid");
    is_str(hex(), "ffffffff", "NULL is the length -1");
    codec_val_t n = num(5);
    is_int(copybin_uuid(&buf, &n), -1, "a number for a uuid is refused");
}

static void test_text(void) {
    buf.len = 0;
    codec_val_t v = text("h\xc3\xa9llo \xe2\x9c\x93");
    is_int(copybin_text(&buf, &v), 0, "unicode text");
    is_str(hex(), "0000000a 68c3a96c6c6f20e29c93", "unicode text: its UTF-8 bytes, their count");
    buf.len = 0;
    v = text("tab\there\\n");
    copybin_text(&buf, &v);
    is_str(hex(), "0000000a 74616209686572655c6e", "tab and backslash as they are: no text-format escapes");
    buf.len = 0;
    v = text("");
    copybin_text(&buf, &v);
    is_str(hex(), "00000000", "empty text is the length 0, not NULL");
    buf.len = 0;
    copybin_text(&buf, &null_val);
    is_str(hex(), "ffffffff", "NULL text is the length -1");
    buf.len = 0;
    copybin_text(&buf, NULL);
    is_str(hex(), "ffffffff", "an absent field is NULL");
    buf.len = 0;
    v = num(-42);
    copybin_text(&buf, &v);
    is_str(hex(), "00000003 2d3432", "a number in a text column: its digits");
    buf.len = 0;
    v = (codec_val_t){CODEC_V_BOOL, NULL, 0, 1};
    copybin_text(&buf, &v);
    is_str(hex(), "00000004 74727565", "a boolean in a text column: true");
    buf.len = 0;
    v = (codec_val_t){CODEC_V_TEXT, "a\0b", 3, 0};
    is_int(copybin_text(&buf, &v), -1, "text with a NUL byte is refused (PostgreSQL refuses it as text)");
}

static void test_int4(void) {
    static const struct {
        int64_t n;
        int rc;
        const char *bytes;
    } cases[] = {
        {0, 0, "00000004 00000000"},
        {1, 0, "00000004 00000001"},
        {-1, 0, "00000004 ffffffff"},
        {2147483647LL, 0, "00000004 7fffffff"},
        {-2147483648LL, 0, "00000004 80000000"},
        {2147483648LL, -1, ""},
        {-2147483649LL, -1, ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        codec_val_t v = num(cases[i].n);
        buf.len = 0;
        is_int(copybin_int4(&buf, &v), cases[i].rc, "int4 %lld: accepted or refused", (long long)cases[i].n);
        if (cases[i].rc == 0)
            is_str(hex(), cases[i].bytes, "int4 %lld: network order", (long long)cases[i].n);
    }
    buf.len = 0;
    codec_val_t s = text("5");
    is_int(copybin_int4(&buf, &s), -1, "text for an int4 is refused");
    is_int(copybin_int4(&buf, &null_val), 0, "a null int4");
    is_str(hex(), "ffffffff", "NULL is the length -1");
}

static void test_frame(void) {
    buf.len = 0;
    copybin_header(&buf);
    copybin_tuple(&buf, 18);
    copybin_trailer(&buf);
    static const unsigned char want[] = {'P',  'G',  'C',  'O',  'P', 'Y',
                                         '\n', 0xff, '\r', '\n', 0, /* signature */
                                         0,    0,    0,    0,       /* flags */
                                         0,    0,    0,    0,       /* extension */
                                         0,    0x12,                /* 18 fields */
                                         0xff, 0xff};               /* trailer */
    ok(buf.len == sizeof(want) && memcmp(buf.data, want, sizeof(want)) == 0,
       "the signature, flags 0, no header extension, a tuple's field count, the trailer -1");
}

int main(void) {
    test_timestamps();
    test_uuids();
    test_text();
    test_int4();
    test_frame();
    free(buf.data);
    return tap_done();
}
