/* libFuzzer target: the datum behind a valid single-object header. The
 * first input byte chooses a compiled-in schema (byte % number of schemas,
 * in the build's order: 0 the current command, 1 the current event, 2 the
 * v1 command of schemas/versions/, ...); the harness writes C3 01 and that
 * schema's fingerprint (computed here from the embedded .avsc text with
 * avro_canonical_form() and avro_crc64(), independently of the codec) in
 * front of the rest of the input and calls codec_decode(). So every input
 * reaches avro-c's datum decoding, and with the v1 schema the codec's
 * resolution to the current command schema. See tests/fuzz/README.md. */
#include "codec.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* tests/fuzz/fuzz_common.c */
void fuzz_init(void);
size_t fuzz_schema_count(void);
uint64_t fuzz_schema_fingerprint(size_t i);
void fuzz_decode(const uint8_t *data, size_t size, const char *origin);

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    fuzz_init();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    size_t schema = data[0] % fuzz_schema_count();
    uint64_t fp = fuzz_schema_fingerprint(schema);
    size_t len = size - 1 + 10;
    /* Exactly len bytes, so ASan sees any read past the record's end. */
    uint8_t *buf = malloc(len);
    if (!buf)
        return 0;
    buf[0] = 0xC3;
    buf[1] = 0x01;
    for (int i = 0; i < 8; i++)
        buf[2 + i] = (uint8_t)(fp >> (8 * i));
    if (size > 1)
        memcpy(buf + 10, data + 1, size - 1);
    fuzz_decode(buf, len, "codec_datum");
    free(buf);
    return 0;
}
