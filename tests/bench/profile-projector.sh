#!/usr/bin/env bash
# tests/bench/profile-projector.sh: profile helmq-projector and its PostgreSQL
# backend under the projector benchmark's load (preloaded events, a fresh database).
#
#   bash tests/bench/profile-projector.sh [EVENTS] [RELEASES]    perf record -a -g for PERF_SECONDS (6)
#   EXPLAIN=1 bash tests/bench/profile-projector.sh ...          also auto_explain (analyze) of every
#                                                                statement over 1 ms into OUT.pglog
#   TOP=N                                                        lines of the perf summary printed
#
# Prints the helmq tables' inserts, updates and HOT updates (pg_stat_user_tables).
# Outputs: build/bench/profile-projector.{data,txt,pglog}. Needs `make bench-tools` and bin/.
# (perf record -a sees the whole machine: `perf report --pid` picks the projector or its backend.)
. "$(dirname "$0")/lib.sh"
PE=${1:-100000}
PR=${2:-5000}
OUT=$BENCH_ROOT/build/bench/profile-projector
bench_init
db_create bench_pp
url=$(db_url bench_pp)
if [ -n "${EXPLAIN:-}" ]; then
    psql -X -q "$url" -c "ALTER DATABASE bench_pp SET session_preload_libraries = 'auto_explain'" \
        -c "ALTER DATABASE bench_pp SET auto_explain.log_min_duration = '1ms'" \
        -c "ALTER DATABASE bench_pp SET auto_explain.log_nested_statements = on" \
        -c "ALTER DATABASE bench_pp SET auto_explain.log_analyze = on" \
        -c "ALTER DATABASE bench_pp SET auto_explain.log_level = warning" >/dev/null
fi
broker_start 34
"$BT" events -b "$B" --count "$PE" --releases "$PR" --tag abcd0001 >/dev/null || die events
HELMQ_DATABASE_URL=$url projector_start "$T/p.log" --group-id gp-prof
perf record -a -g -F 999 -o "$OUT.data" -- sleep "${PERF_SECONDS:-6}" 2>/dev/null >/dev/null &
pp=$!
out=$("$BT" pgwait --conninfo "$url" --sql "SELECT count(*) FROM helmq.applied_events" --target "$PE" --interval-ms 20 --wait-timeout 600)
wait $pp
echo "$out"
# How the batches wrote: row versions per table, and how many updates were HOT
# (no index entries) once the statistics are flushed.
sleep 1
psql -X -q "$url" -c "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup FROM pg_stat_user_tables
    WHERE schemaname = 'helmq' AND relname IN ('applied_events', 'release_history', 'releases', 'release_counts')
    ORDER BY relname"
projector_stop
broker_stop
[ -n "${EXPLAIN:-}" ] && cp "$T/pg/postgres.log" "$OUT.pglog"
perf report -i "$OUT.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null | grep -v "^$" | grep "%" | head -${TOP:-60} > "$OUT.txt"
cat "$OUT.txt"
