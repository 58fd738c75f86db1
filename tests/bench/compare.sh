#!/usr/bin/env bash
# tests/bench/compare.sh: two builds of helmq-worker side by side under the worker
# throughput benchmark's load (no-op helm, installs then upgrades over 1,000
# releases), measured by CPU time rather than wall clock, which a shared machine
# makes noisy.
#
#   bash tests/bench/compare.sh BIN_A BIN_B      (each a bin/ directory of a build)
#   CMP_REPS=5 CMP_COMMANDS=20000 CMP_CONCURRENCY=32
#   CMP_MODE=cpu        (default) per run: the worker's own CPU (utime+stime of its
#                       threads, /proc/PID/stat) and its reaped helm children's, per
#                       1,000 commands; A and B alternate (ABBA...) so that drift in the
#                       machine's speed falls on both; medians per build
#   CMP_MODE=callgrind  one run per build under valgrind --tool=callgrind: the worker's
#                       own instructions (Ir, user space, exact) per command; the
#                       callgrind files are kept in build/bench/compare-{a,b}.callgrind
#   CMP_MODE=perf       as cpu, with `perf record -e cpu-clock -g -p` on the worker from the
#                       first send to the last terminal event (cpu-clock: no hardware
#                       counters needed); the last repetition's data of each build is kept in
#                       build/bench/compare-{a,b}.perf and their top symbols (--no-children)
#                       printed side by side
#
# Each build migrates its own database (its own SQL) and runs with its own
# binaries; the records, the broker, benchtool and noop-helm are this tree's.
. "$(dirname "$0")/lib.sh"

A_DIR=$(cd "${1:?BIN_A}" && pwd)
B_DIR=$(cd "${2:?BIN_B}" && pwd)
REPS=${CMP_REPS:-5}
N=${CMP_COMMANDS:-20000}
C=${CMP_CONCURRENCY:-32}
KEYS=1000
MODE=${CMP_MODE:-cpu}
OUT=$BENCH_ROOT/build/bench
mkdir -p "$OUT"
[ "$MODE" = callgrind ] && REPS=1 && rm -f "$OUT"/compare-[ab].callgrind*

bench_init
for s in a b; do
    mkdir -p "$T/bin-$s"
    src=$A_DIR
    [ $s = b ] && src=$B_DIR
    cp "$src/helmq-worker" "$src/helmq-projector" "$T/bin-$s/" || die "no helmq-worker in $src"
done
PARTS=$(awk -v n="$N" 'BEGIN { p = int(n / 20000) + 1; if (p < 8) p = 8; print p }')
RAWF=$T/raw

run_one() { # run_one SIDE REP
    local s=$1 rep=$2 tag ns wpid self0 ch0 self1 ch1 pg0 pg1 secs prod out
    tag=$(next_tag_cmp)
    ns=cmp-$s-$tag
    local wbin=$T/bin-$s/helmq-worker
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS bench_cmp" >/dev/null 2>&1
    psql -X -q -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE bench_cmp" >/dev/null || die "createdb"
    HELMQ_DATABASE_URL=$(db_url bench_cmp) "$wbin" migrate >>"$T/migrate.log" 2>&1 || die "migrate $s"
    broker_start "$PARTS"
    mkdir -p "$T/state/$ns"
    local log=$T/worker-$ns.log wrap=() extra=()
    # Builds from before tenant confinement (issue 21) have no --tenant-identity.
    "$wbin" --help 2>&1 | grep -q -- --tenant-identity && extra=(--tenant-identity=false)
    [ "$MODE" = callgrind ] && wrap=(valgrind --tool=callgrind --callgrind-out-file="$OUT/compare-$s.callgrind"
        --trace-children=no)
    HELMQ_DATABASE_URL=$(db_url bench_cmp) NOOP_HELM_STATE=$T/state/$ns HELMQ_BROKERS=$B "${wrap[@]}" "$wbin" \
        --helm "$NOOP" --chart-repo oci://registry.example/charts "${extra[@]}" --tmpdir "$T/tmp" \
        "${KAFKA_ARGS[@]}" --concurrency "$C" --group-id "g-$ns" >>"$log" 2>&1 &
    WORKER_PID=$!
    track "$WORKER_PID"
    local end=$((SECONDS + 300)) n
    while n=$(grep -cs 'assigned ' "$log"); [ "${n:-0}" -lt "$PARTS" ]; do
        kill -0 "$WORKER_PID" 2>/dev/null || die "helmq-worker exited: $(tail -5 "$log")"
        [ "$SECONDS" -lt "$end" ] || die "helmq-worker not assigned: $(tail -5 "$log")"
        sleep 0.1
    done
    rm -f "$T/ready"
    "$BT" wait -b "$B" --count "$N" --wait-timeout 3600 --ready "$T/ready" >"$T/wait.out" &
    wpid=$!
    track $wpid
    while [ ! -e "$T/ready" ]; do sleep 0.05; done
    read -r self0 ch0 < <(cpu_split "$WORKER_PID")
    pg0=$(pg_ticks)
    [ "$MODE" = callgrind ] && callgrind_control -z "$WORKER_PID" >/dev/null
    local perf_pid=
    if [ "$MODE" = perf ]; then
        perf record -e cpu-clock -F 999 -g -p "$WORKER_PID" -o "$OUT/compare-$s.perf" >/dev/null 2>&1 &
        perf_pid=$!
        track "$perf_pid"
        sleep 0.5
    fi
    prod=$("$BT" commands -b "$B" --count "$N" --keys "$KEYS" --ns "$ns" --tag "$tag")
    wait $wpid
    untrack $wpid
    read -r self1 ch1 < <(cpu_split "$WORKER_PID")
    pg1=$(pg_ticks)
    [ "$MODE" = callgrind ] && callgrind_control -d "$WORKER_PID" >/dev/null
    if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid"
        wait "$perf_pid"
        untrack "$perf_pid"
    fi
    out=$(cat "$T/wait.out")
    [ "$(kv types "$out")" = "succeeded:$N" ] || die "$s: not all succeeded: $out"
    secs=$(awk -v a="$(kv first_send_ms "$prod")" -v b="$(kv last_ms "$out")" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    echo "$s $(per1k $((self1 - self0)) "$N" 3) $(per1k $((ch1 - ch0)) "$N" 3) \
$(per1k $((self1 - self0 + ch1 - ch0)) "$N" 3) $(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.1f", n / s }') \
$(per1k $((pg1 - pg0)) "$N" 3)" >>"$RAWF"
    say "$s rep $rep: $(tail -1 "$RAWF") (worker / helm / worker+helm / PostgreSQL CPU s per 1,000; commands/s)"
    if [ "$MODE" = callgrind ]; then
        pkill -TERM -P "$WORKER_PID" -x helmq-worker || kill -TERM "$WORKER_PID"
    else
        kill -TERM "$WORKER_PID"
    fi
    wait "$WORKER_PID" 2>/dev/null
    untrack "$WORKER_PID"
    broker_stop
    rm -rf "$T/state/$ns"
}
_cmp=0
next_tag_cmp() { _cmp=$((_cmp + 1)); printf '%04x%04x' $(($(date +%s) & 0xffff)) "$_cmp"; }

say "compare: A=$A_DIR B=$B_DIR, $N commands at concurrency $C, $REPS repetitions, mode $MODE"
say "machine at the start: $("$BIN/calib" "$NOOP")"
for rep in $(seq 1 "$REPS"); do
    if [ $((rep % 2)) = 1 ]; then order="a b"; else order="b a"; fi
    for s in $order; do run_one "$s" "$rep"; done
done

say "machine at the end: $("$BIN/calib" "$NOOP")"
col() { awk -v s="$1" -v f="$2" '$1 == s { print $f }' "$RAWF"; }
{
    echo "| build | worker CPU s per 1,000 (median) | helm children | worker+helm | PostgreSQL | commands/s | worker CPU per repetition | PostgreSQL per repetition |"
    echo "|---|---|---|---|---|---|---|---|"
    for s in a b; do
        d=$A_DIR
        [ $s = b ] && d=$B_DIR
        echo "| $s: $d | $(col $s 2 | median) | $(col $s 3 | median) | $(col $s 4 | median) | $(col $s 6 | median) |" \
            "$(col $s 5 | median) | $(col $s 2 | tr '\n' ' ')| $(col $s 6 | tr '\n' ' ')|"
    done
} | tee "$OUT/compare-$MODE.md"
if [ "$MODE" = callgrind ]; then
    for s in a b; do
        # The dump taken when the last terminal event arrived (counters zeroed at the first send).
        f=$(find "$OUT" -name "compare-$s.callgrind.*" | head -1)
        ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1; exit }')
        echo "$s: the worker's own instructions (Ir) per command: $(awk -v i="$ir" -v n="$N" 'BEGIN { printf "%.0f", i / n }')"
    done | tee -a "$OUT/compare-$MODE.md"
fi
if [ "$MODE" = perf ]; then
    for s in a b; do
        perf report -i "$OUT/compare-$s.perf" --comm helmq-worker --no-children --sort dso,symbol --stdio 2>/dev/null |
            awk '/^ +[0-9.]+%/ { print }' | head -40 >"$OUT/compare-$s.perf.txt"
    done
    echo "top symbols (share of the worker's own cpu-clock samples), a | b:"
    paste -d '|' "$OUT/compare-a.perf.txt" "$OUT/compare-b.perf.txt" | head -30
fi
