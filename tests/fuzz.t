#!/usr/bin/env bash
# Fuzz smoke test (tests/fuzz/README.md): builds the libFuzzer targets with
# clang (ASan+UBSan), runs each on its committed corpus, then fuzzes each for
# a short budget (HELMQ_FUZZ_SECONDS, default 20 s), asserting no crash, no
# leak and no failed oracle. A crash's input is kept in build/fuzz/artifacts/.
# Skipped only when clang (with its libFuzzer runtime) is missing outside CI;
# in CI (CI=true) a missing clang is a failure. The fuzz targets are always
# built with ASan+UBSan, the same binaries in both passes of CI: in the
# sanitizer pass (HELMQ_SANITIZER set by make test) only the corpus runs, the
# timed fuzzing having run in the plain pass.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"

SECONDS_EACH=${HELMQ_FUZZ_SECONDS:-20}
TARGETS="codec_decode codec_datum command_json validate_values http_request api_body cli_json"

probe() {
    command -v clang >/dev/null 2>&1 || return 1
    printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >"$T/probe.c"
    clang -fsanitize=fuzzer,address,undefined -o "$T/probe" "$T/probe.c" >"$T/probe.log" 2>&1
}
if ! probe; then
    why="clang with its libFuzzer runtime is not installed (Debian: clang libclang-rt-14-dev)"
    [ "${CI:-}" = true ] || skip_all "$why"
    ok 1 "CI=true: $why"
    sed 's/^/# /' "$T/probe.log" 2>/dev/null | head -5
    done_testing
    exit 1
fi

# The same settings as tests/fuzz/fuzz.mk's FUZZ_ENV (see the comment there).
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1:abort_on_error=0
export LSAN_OPTIONS=use_unaligned=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# Both forms work whether or not the top Makefile includes fuzz.mk (it
# guards against being read twice).
make -f Makefile -f tests/fuzz/fuzz.mk fuzz-build >"$T/build.log" 2>&1
rc=$?
ok $rc "the fuzz targets build (make fuzz-build)"
[ $rc -eq 0 ] || tail -20 "$T/build.log" | sed 's/^/# /'

# report TARGET LOG: the failure's lines and where its input was kept.
report() {
    grep -E 'ORACLE FAILED|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY|^    #[0-9] ' "$2" |
        head -25 | sed 's/^/# /'
    mkdir -p build/fuzz/artifacts
    for a in "$T/$1"-*; do
        [ -e "$a" ] || continue
        cp "$a" build/fuzz/artifacts/ && diag "input kept: build/fuzz/artifacts/$(basename "$a")"
    done
}

for t in $TARGETS; do
    bin=build/fuzz/$t
    if [ ! -x "$bin" ]; then
        ok 1 "$t: built"
        continue
    fi
    case $t in codec_*) dict=tests/fuzz/avro.dict ;; http_*) dict=tests/fuzz/http.dict ;; *) dict=tests/fuzz/json.dict ;; esac
    n=$(find "tests/fuzz/corpus/$t" -type f | wc -l)

    "$bin" -runs=0 -artifact_prefix="$T/$t-" "tests/fuzz/corpus/$t" >"$T/$t.corpus.log" 2>&1
    rc=$?
    ok $rc "$t: the committed corpus ($n inputs) runs clean"
    [ $rc -eq 0 ] || report "$t" "$T/$t.corpus.log"

    if [ -n "${HELMQ_SANITIZER:-}" ]; then
        ok 0 "$t: fuzzing # SKIP run in the plain pass (HELMQ_SANITIZER=$HELMQ_SANITIZER)"
        continue
    fi
    mkdir -p "$T/work-$t"
    "$bin" -max_total_time="$SECONDS_EACH" -timeout=25 -dict="$dict" -print_final_stats=1 \
        -artifact_prefix="$T/$t-" "$T/work-$t" "tests/fuzz/corpus/$t" >"$T/$t.log" 2>&1
    rc=$?
    ok $rc "$t: ${SECONDS_EACH} s of fuzzing without a crash, leak or failed oracle"
    if [ $rc -eq 0 ]; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$T/$t.log")
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$T/$t.log")
        cov=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$T/$t.log" | sed -n 's/.*\(cov: [0-9]*\).*\(ft: [0-9]*\).*/\1 \2/p')
        diag "$t: $execs executions, $rate/s, $cov"
    else
        report "$t" "$T/$t.log"
    fi
done

done_testing
