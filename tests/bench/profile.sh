#!/usr/bin/env bash
# tests/bench/profile.sh: profile helmq-worker under the throughput benchmark's
# load (no-op helm, installs then upgrades over 1,000 releases).
#
#   bash tests/bench/profile.sh perf [COMMANDS] [CONCURRENCY]       perf record -e cpu-clock -g (user + kernel)
#   bash tests/bench/profile.sh callgrind [COMMANDS] [CONCURRENCY]  valgrind --tool=callgrind (user space only)
#   bash tests/bench/profile.sh system [COMMANDS] [CONCURRENCY]     perf record -a (every process, user + kernel):
#                                   CPU by process, and the worker's own samples by what they do
#   bash tests/bench/profile.sh strace [COMMANDS] [CONCURRENCY]     strace -c -f of the worker's own syscalls
#   bash tests/bench/profile.sh timeline [COMMANDS] [CONCURRENCY]   debug-level log: where a command's time goes
#   bash tests/bench/profile.sh spawn [COMMANDS] [CONCURRENCY]      no worker: fork+exec (libuv's way) vs
#                                   posix_spawn of the no-op helm from a parent of 0, 32, 128 MiB
#
# Outputs go to build/bench/profile-MODE.*; a summary is printed. FUNCSTATS=1 also prints
# PostgreSQL's time per call of the ledger's functions (track_functions = pl); EXPLAIN=1 copies
# PostgreSQL's log with auto_explain of every statement, nested ones too (no ANALYZE), to
# profile-MODE.pglog.
# Needs `make bench-tools` (BENCH_TOOLS_DIR) and bin/.
. "$(dirname "$0")/lib.sh"

MODE=${1:-perf}
N=${2:-5000}
C=${3:-32}
OUT=$BENCH_ROOT/build/bench/profile-$MODE
mkdir -p "$BENCH_ROOT/build/bench"

if [ "$MODE" = spawn ]; then
    T=$(mktemp -d "${TMPDIR:-/tmp}/helmq-bench.XXXXXX")
    mkdir -p "$T/state"
    {
        printf '| parent heap (MiB) | fork+exec, blocking until exec (spawns/s) | loop blocked per spawn (ms) | posix_spawn (spawns/s) | blocked per spawn (ms) |\n|---|---|---|---|---|\n'
        for mib in 0 32 128; do
            f=$(NOOP_HELM_STATE=$T/state "$BENCH_TOOLS_DIR/spawn-limit" -n "$N" -c "$C" -f -b "$mib" "$BENCH_TOOLS_DIR/noop-helm")
            p=$(NOOP_HELM_STATE=$T/state "$BENCH_TOOLS_DIR/spawn-limit" -n "$N" -c "$C" -b "$mib" "$BENCH_TOOLS_DIR/noop-helm")
            printf '| %s | %s | %s | %s | %s |\n' "$mib" "$(kv per_second "$f")" "$(kv spawn_ms_mean "$f")" \
                "$(kv per_second "$p")" "$(kv spawn_ms_mean "$p")"
        done
    } | tee "$OUT.md"
    exit 0
fi

bench_init
psql -X -q -d postgres -c "CREATE DATABASE bench_profile" >/dev/null
[ -n "${FUNCSTATS:-}" ] && psql -X -q -d postgres -c "ALTER DATABASE bench_profile SET track_functions = 'pl'" >/dev/null
if [ -n "${EXPLAIN:-}" ]; then
    psql -X -q -d postgres -c "ALTER DATABASE bench_profile SET session_preload_libraries = 'auto_explain'" \
        -c "ALTER DATABASE bench_profile SET auto_explain.log_min_duration = 0" \
        -c "ALTER DATABASE bench_profile SET auto_explain.log_nested_statements = on" \
        -c "ALTER DATABASE bench_profile SET auto_explain.log_level = warning" >/dev/null
fi
HELMQ_DATABASE_URL=$(db_url bench_profile)
export HELMQ_DATABASE_URL
"$BIN/helmq-worker" migrate >/dev/null 2>&1 || die "migrate"
broker_start 8
mkdir -p "$T/state/p"
export NOOP_HELM_STATE=$T/state/p
tag=$(printf '%08x' $(($(date +%s) & 0xffffff)))

WRAP=()
case "$MODE" in
callgrind) WRAP=(valgrind --tool=callgrind --callgrind-out-file="$OUT.out" --trace-children=no) ;;
strace) WRAP=(strace -c -o "$OUT.txt") ;;
perf | system | timeline) ;;
*) die "mode: perf, system, callgrind, strace, timeline or spawn" ;;
esac
LEVEL=info
[ "$MODE" = timeline ] && LEVEL=debug

rm -f "$T/w.log"
HELMQ_BROKERS=$B "${WRAP[@]}" "$BIN/helmq-worker" --helm "$NOOP" --chart-repo oci://registry.example/charts \
    --tmpdir "$T/tmp" "${KAFKA_ARGS[@]}" --concurrency "$C" --group-id "g-prof-$tag" --log-level "$LEVEL" \
    >>"$T/w.log" 2>&1 &
WORKER_PID=$!
track "$WORKER_PID"
end=$((SECONDS + 120))
while [ "$(grep -c 'assigned ' "$T/w.log")" -lt 8 ] && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
[ "$(grep -c 'assigned ' "$T/w.log")" -ge 8 ] || die "worker not assigned: $(tail -5 "$T/w.log")"

"$BT" wait -b "$B" --count "$N" --wait-timeout 3600 >"$T/wait.out" &
wpid=$!
track $wpid
PERF_ARGS=()
[ "$MODE" = perf ] && PERF_ARGS=(-F 999 -p "$WORKER_PID")
[ "$MODE" = system ] && PERF_ARGS=(-F 499 -a)
if [ "${#PERF_ARGS[@]}" -gt 0 ]; then
    perf record -e cpu-clock -g "${PERF_ARGS[@]}" -o "$OUT.data" >/dev/null 2>&1 &
    PERF_PID=$!
    sleep 0.5
fi
prod=$("$BT" commands -b "$B" --count "$N" --keys 1000 --ns "prof-$tag" --tag "$tag")
wait $wpid
untrack $wpid
out=$(cat "$T/wait.out")
say "$N commands at concurrency $C: $(awk -v n="$N" -v a="$(kv first_send_ms "$prod")" -v b="$(kv last_ms "$out")" \
    'BEGIN { printf "%.1f", n / ((b - a) / 1000) }') commands/s under $MODE; $out"
if [ "${#PERF_ARGS[@]}" -gt 0 ]; then
    kill -INT "$PERF_PID"
    wait "$PERF_PID"
fi
if [ "${#WRAP[@]}" -gt 0 ]; then
    # Stop the worker, not its wrapper: strace and valgrind write their
    # summaries when the traced process exits.
    pkill -TERM -P "$WORKER_PID" -x helmq-worker || kill -TERM "$WORKER_PID"
else
    kill -TERM "$WORKER_PID"
fi
wait "$WORKER_PID" 2>/dev/null
untrack "$WORKER_PID"
if [ -n "${FUNCSTATS:-}" ]; then
    sleep 1 # the backends' statistics reach the collector when their sessions end
    psql -X -q -d bench_profile -c "SELECT funcname, calls, round(self_time::numeric / calls * 1000, 1) AS self_us_per_call,
        round(total_time::numeric / calls * 1000, 1) AS total_us_per_call FROM pg_stat_user_functions ORDER BY total_time DESC" |
        tee "$OUT.funcs.txt"
fi
[ -n "${EXPLAIN:-}" ] && cp "$T/pg/postgres.log" "$OUT.pglog"
case "$MODE" in
perf)
    perf report -i "$OUT.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^$' | head -80 >"$OUT.txt"
    perf report -i "$OUT.data" --children --sort symbol --stdio -g none 2>/dev/null | grep -v '^$' | head -120 >"$OUT.children.txt"
    say "perf report: $OUT.txt, $OUT.children.txt"
    ;;
system)
    # A spawned helm runs as "helmq-worker" until its execve: those samples
    # (under clone3 / __spawni_child) are the spawn's, the rest the worker's.
    {
        printf '| process (comm) | share of all samples |\n|---|---|\n'
        perf report -i "$OUT.data" --no-children --sort comm --stdio -g none 2>/dev/null |
            awk '/^ +[0-9.]+%/ && n++ < 12 { printf "| %s | %s |\n", $2, $1 }'
        echo
        printf '| helmq-worker samples: what they do | share |\n|---|---|\n'
        perf script -i "$OUT.data" --comm helmq-worker 2>/dev/null | awk '
            /^helmq-worker/ { inside = 1; stack = ""; next }
            inside && NF == 0 {
                inside = 0; c = "user: other (worker, libc, libuv)"
                if (stack ~ /clone3|__spawni/) c = "spawn: the child until its execve"
                else if (stack ~ /entry_SYSCALL|asm_exc_page_fault|asm_sysvec/) {
                    if (stack ~ /sendto|recvfrom|__send|__recv/) c = "kernel: sockets (PostgreSQL, Kafka)"
                    else if (stack ~ /epoll/) c = "kernel: epoll"
                    else if (stack ~ /pipe2|memfd|fchmod|wait4|pidfd|__close|close_range/) c = "kernel: pipes, memfd, pidfd, reaping"
                    else if (stack ~ /futex/) c = "kernel: futex (threads)"
                    else if (stack ~ /write|read/) c = "kernel: read/write (pipes, eventfd, log)"
                    else c = "kernel: other"
                } else if (stack ~ /json_|jansson/) c = "user: jansson (JSON)"
                else if (stack ~ /avro/) c = "user: avro-c"
                else if (stack ~ /malloc|free|_int_/) c = "user: malloc/free"
                else if (stack ~ /PQ|libpq/) c = "user: libpq"
                else if (stack ~ /rd_kafka/) c = "user: librdkafka"
                cnt[c]++; tot++; next
            }
            inside { stack = stack " " $2 " " $3 }
            END { for (k in cnt) printf "| %s | %.1f%% |\n", k, 100 * cnt[k] / tot }' | sort -t'|' -k3 -rn
    } | tee "$OUT.md"
    say "perf -a: $OUT.md ($OUT.data)"
    ;;
callgrind)
    callgrind_annotate --inclusive=yes "$OUT.out" 2>/dev/null | head -80 >"$OUT.inclusive.txt"
    callgrind_annotate "$OUT.out" 2>/dev/null | head -60 >"$OUT.txt"
    say "callgrind: $OUT.txt (self), $OUT.inclusive.txt"
    ;;
strace) say "strace -c: $OUT.txt" ;;
timeline) cp "$T/w.log" "$OUT.log" && say "debug log: $OUT.log" ;;
esac
