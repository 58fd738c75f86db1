/* Minimal TAP for C unit tests: every assertion prints both values when it
 * fails; tap_done() prints the plan and returns the exit status. */
#ifndef HELMQ_TAP_H
#define HELMQ_TAP_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

/* Line-buffered stdout, so the TAP lines survive an exit taken by a
 * sanitizer's report. */
__attribute__((constructor)) static void tap_init(void) {
    setvbuf(stdout, NULL, _IOLBF, 0);
}

#define ok(cond, ...)                                                                                        \
    do {                                                                                                     \
        int ok_ = (cond);                                                                                    \
        printf("%sok %d - ", ok_ ? "" : "not ", ++tap_n);                                                    \
        printf(__VA_ARGS__);                                                                                 \
        printf("\n");                                                                                        \
        if (!ok_) {                                                                                          \
            tap_failed++;                                                                                    \
            printf("#   failed at %s:%d: %s\n", __FILE__, __LINE__, #cond);                                  \
        }                                                                                                    \
    } while (0)

#define is_str(got, want, ...)                                                                               \
    do {                                                                                                     \
        const char *g_ = (got), *w_ = (want);                                                                \
        int ok_ = g_ && w_ ? strcmp(g_, w_) == 0 : g_ == w_;                                                 \
        printf("%sok %d - ", ok_ ? "" : "not ", ++tap_n);                                                    \
        printf(__VA_ARGS__);                                                                                 \
        printf("\n");                                                                                        \
        if (!ok_) {                                                                                          \
            tap_failed++;                                                                                    \
            printf("#   at %s:%d\n#   expected: %s\n#        got: %s\n", __FILE__, __LINE__,                 \
                   w_ ? w_ : "(null)", g_ ? g_ : "(null)");                                                  \
        }                                                                                                    \
    } while (0)

#define is_int(got, want, ...)                                                                               \
    do {                                                                                                     \
        long long g_ = (long long)(got), w_ = (long long)(want);                                             \
        printf("%sok %d - ", g_ == w_ ? "" : "not ", ++tap_n);                                               \
        printf(__VA_ARGS__);                                                                                 \
        printf("\n");                                                                                        \
        if (g_ != w_) {                                                                                      \
            tap_failed++;                                                                                    \
            printf("#   at %s:%d\n#   expected: %lld\n#        got: %lld\n", __FILE__, __LINE__, w_, g_);    \
        }                                                                                                    \
    } while (0)

#define is_u64(got, want, ...)                                                                               \
    do {                                                                                                     \
        uint64_t g_ = (got), w_ = (want);                                                                    \
        printf("%sok %d - ", g_ == w_ ? "" : "not ", ++tap_n);                                               \
        printf(__VA_ARGS__);                                                                                 \
        printf("\n");                                                                                        \
        if (g_ != w_) {                                                                                      \
            tap_failed++;                                                                                    \
            printf("#   at %s:%d\n#   expected: %" PRIu64 "\n#        got: %" PRIu64 "\n", __FILE__,         \
                   __LINE__, w_, g_);                                                                        \
        }                                                                                                    \
    } while (0)

static inline int tap_done(void) {
    printf("1..%d\n", tap_n);
    return tap_failed ? 1 : 0;
}

#endif
