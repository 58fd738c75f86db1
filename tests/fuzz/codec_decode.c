/* libFuzzer target: codec_decode() on arbitrary bytes, as the worker decodes
 * a record value from helm.release.commands and the projector and the CLI
 * one from helm.release.events. Most inputs die at the header; the seed
 * corpus (real records of every kind) and the dictionary get the fuzzer
 * past it. See tests/fuzz/README.md. */
#include "codec.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* tests/fuzz/fuzz_common.c */
void fuzz_init(void);
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
    fuzz_decode(data, size, "codec_decode");
    return 0;
}
