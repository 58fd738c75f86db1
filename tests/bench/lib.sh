# tests/bench/lib.sh: the embedded stack for the benchmarks (sourced by
# bench.sh). A private PostgreSQL (tests/lib/pg.sh), a fresh helmq-broker per
# measurement, helmq-worker / helmq-projector processes, and the small
# measuring helpers (clocks, CPU ticks, RSS, medians, percentiles).
#
#   bench_init                 scratch dir $T, binaries snapshot, PostgreSQL
#   broker_start PARTITIONS    fresh broker; sets B (bootstrap) and BROKER_PID
#   broker_stop
#   worker_start LOG ARGS...   helmq-worker; waits until it owns every partition; sets WORKER_PID
#   worker_stop                SIGTERM, wait
#   projector_start LOG ARGS...  sets PROJECTOR_PID
#   now_ms, cpu_ticks PID..., cpu_split PID, machine_ticks, per1k TICKS N [DECIMALS], pg_ticks, rss_kb PID,
#   minflt PID..., pg_minflt, kcount_start, kcount_stop, per_cmd COUNT N, median, pctl P

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELMQ_BIN=${HELMQ_BIN:-$BENCH_ROOT/bin}
BENCH_TOOLS_DIR=${BENCH_TOOLS_DIR:-$BENCH_ROOT/build/bench}
. "$BENCH_ROOT/tests/lib/pg.sh"
. "$BENCH_ROOT/tests/lib/port.sh"

_bench_pids=()
_bench_exit() {
    local p
    for p in "${_bench_pids[@]}"; do
        kill -9 "$p" 2>/dev/null
    done
    for p in "${_bench_pids[@]}"; do
        wait "$p" 2>/dev/null
    done
    [ -n "${T:-}" ] && [ -d "$T/pg" ] && pg_stop "$T/pg" >/dev/null 2>&1
    if [ -n "${T:-}" ] && [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$T"; fi
}
trap _bench_exit EXIT
trap 'exit 130' INT TERM

track() { _bench_pids+=("$1"); }
untrack() {
    local p keep=()
    for p in "${_bench_pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
    _bench_pids=("${keep[@]}")
}

say() { printf '%s bench: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }

now_ms() { date +%s%3N; }

# Clock ticks (utime+stime+cutime+cstime) of the given processes.
cpu_ticks() { stat_sum '$12 + $13 + $14 + $15' "$@"; }
# stat_sum EXPR PID...: EXPR over the fields of /proc/PID/stat after "(comm) ", summed over the PIDs
# (a process that is gone counts 0).
stat_sum() {
    local expr=$1 p sum=0 t
    shift
    for p in "$@"; do
        t=$(awk "{ sub(/^.*\\) /, \"\"); print $expr }" "/proc/$p/stat" 2>/dev/null) || t=0
        sum=$((sum + ${t:-0}))
    done
    echo "$sum"
}
TICKS=$(getconf CLK_TCK)

# cpu_split PID: "SELF CHILDREN": the process's own clock ticks (utime+stime, all
# its threads) and those of the children it reaped (cutime+cstime).
cpu_split() { awk '{ sub(/^.*\) /, ""); print $12 + $13, $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo "0 0"; }

# Clock ticks the whole machine spent busy (every CPU: user, nice, system, irq,
# softirq, steal), whatever ran: the load generator, the broker, kworkers too.
machine_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat; }
# per1k TICKS N [DECIMALS]: clock ticks spent on N items -> CPU seconds per 1,000 items
per1k() { awk -v t="$1" -v k="$TICKS" -v n="$2" -v d="${3:-2}" 'BEGIN { printf "%.*f", d, t / k / n * 1000 }'; }

# The private PostgreSQL: the postmaster (with its reaped children) and every live backend.
pg_ticks() {
    local pm
    pm=$(head -n 1 "$T/pg/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
    # shellcheck disable=SC2046
    cpu_ticks "$pm" $(ps -o pid= --ppid "$pm")
}

# Minor page faults (minflt+cminflt) of the given processes, their reaped children's included.
minflt() { stat_sum '$8 + $9' "$@"; }
pg_minflt() {
    local pm
    pm=$(head -n 1 "$T/pg/data/postmaster.pid" 2>/dev/null) || { echo 0; return; }
    # shellcheck disable=SC2046
    minflt "$pm" $(ps -o pid= --ppid "$pm")
}
# kcount_start / kcount_stop: system calls and page faults (user and kernel) of the whole
# machine in between, counted by `perf stat -a` on the kernel's tracepoints; kcount_stop
# sets KSYS and KFLT to the counts, or to "n/a" where perf or its tracepoints are missing.
kcount_start() {
    KCOUNT_PID=
    command -v perf >/dev/null || return 0
    rm -f "$T/kcount.out"
    perf stat -a -x, -e raw_syscalls:sys_enter -e exceptions:page_fault_user -e exceptions:page_fault_kernel \
        -o "$T/kcount.out" >/dev/null 2>&1 &
    KCOUNT_PID=$!
    track "$KCOUNT_PID"
    local i
    for i in $(seq 1 50); do # counting once the file has its header
        [ -s "$T/kcount.out" ] && break
        sleep 0.05
    done
    sleep 0.2
}
kcount_stop() { # sets KSYS and KFLT (in this shell: not in a subshell, which could not wait for perf)
    KSYS=n/a KFLT=n/a
    [ -n "$KCOUNT_PID" ] || return 0
    kill -INT "$KCOUNT_PID" 2>/dev/null
    wait "$KCOUNT_PID" 2>/dev/null
    untrack "$KCOUNT_PID"
    local counts
    counts=$(awk -F, '$3 == "raw_syscalls:sys_enter" { s = $1 } $3 ~ /^exceptions:page_fault/ { f += $1 }
        END { if (s ~ /^[0-9]+$/) print s, f }' "$T/kcount.out" 2>/dev/null)
    [ -n "$counts" ] && read -r KSYS KFLT <<<"$counts"
    return 0
}

# per_cmd COUNT N: COUNT over N items, one decimal ("n/a" stays)
per_cmd() { awk -v c="$1" -v n="$2" 'BEGIN { if (c == "n/a") print c; else printf "%.1f", c / n }'; }

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# median of the numbers on stdin (one per line); the mean of the two middle ones when even
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit } if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# pctl P: the P-th percentile (nearest rank) of the numbers on stdin
pctl() { sort -g | awk -v p="$1" '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit } i = int(p / 100 * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }'; }

bench_init() {
    T=$(mktemp -d "${TMPDIR:-/tmp}/helmq-bench.XXXXXX")
    chmod 755 "$T"
    mkdir -p "$T/bin" "$T/tmp" "$T/state"
    # A snapshot of the programs: other builds may replace bin/ while this runs.
    cp "$HELMQ_BIN"/helmq "$HELMQ_BIN"/helmq-broker "$HELMQ_BIN"/helmq-worker "$HELMQ_BIN"/helmq-projector "$T/bin/" ||
        die "programs missing in $HELMQ_BIN (run make)"
    for f in noop-helm spawn-limit benchtool calib; do
        cp "$BENCH_TOOLS_DIR/$f" "$T/bin/" || die "$BENCH_TOOLS_DIR/$f missing (make bench-tools)"
    done
    BIN=$T/bin
    NOOP=$BIN/noop-helm
    BT=$BIN/benchtool
    export HELMQ_LOG_LEVEL=info
    # pg_stat_statements and per-function times: where PostgreSQL's time goes per statement
    # (the worker section reports them per 1,000 commands).
    PG_EXTRA_CONF="shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = ${BENCH_PGSS_TRACK:-top}
track_functions = pl" pg_start "$T/pg" >"$T/pg.out" 2>&1 || { cat "$T/pg.out" >&2; die "PostgreSQL did not start"; }
    BASE_URL=$HELMQ_DATABASE_URL
    # In template1, so that every database the benchmarks create has the view.
    psql -X -q -d template1 -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null &&
        psql -X -q -d postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null ||
        die "CREATE EXTENSION pg_stat_statements"
}

db_url() { echo "host=$T/pg port=$PGPORT user=postgres dbname=$1"; }

db_create() { # db_create NAME: a fresh database with the worker's and the projector's migrations
    psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $1" >/dev/null 2>&1
    psql -X -q -d postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE $1" >/dev/null || die "createdb $1"
    HELMQ_DATABASE_URL=$(db_url "$1") "$BIN/helmq-worker" migrate >>"$T/migrate.log" 2>&1 || die "worker migrate $1"
    HELMQ_DATABASE_URL=$(db_url "$1") "$BIN/helmq-projector" migrate >>"$T/migrate.log" 2>&1 || die "projector migrate $1"
    if [ -n "${BENCH_SQL:-}" ]; then
        psql -X -q -v ON_ERROR_STOP=1 -d "$1" -c "$BENCH_SQL" >>"$T/migrate.log" 2>&1 || die "BENCH_SQL in $1"
    fi
}

db_drop() { psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $1" >/dev/null 2>&1; }

broker_start() { # broker_start PARTITIONS
    rm -f "$T/broker.addr"
    "$BIN/helmq-broker" --partitions "$1" --address-file "$T/broker.addr" --log-level warn \
        >"$T/broker.out" 2>>"$T/broker.log" &
    BROKER_PID=$!
    track "$BROKER_PID"
    local i
    for i in $(seq 1 100); do
        [ -s "$T/broker.addr" ] && break
        sleep 0.1
    done
    [ -s "$T/broker.addr" ] || die "helmq-broker did not start: $(tail -5 "$T/broker.log")"
    B=$(cat "$T/broker.addr")
    BROKER_PARTITIONS=$1
}

broker_stop() {
    kill "$BROKER_PID" 2>/dev/null
    wait "$BROKER_PID" 2>/dev/null
    untrack "$BROKER_PID"
}

# Short group timeouts so that a group forms quickly on a fresh broker.
KAFKA_ARGS=(-X session.timeout.ms=6000 -X heartbeat.interval.ms=500)

worker_start() { # worker_start LOG ARGS...   (env: the caller's; BENCH_HELM, BENCH_CHART_REPO: not the no-op helm)
    local log=$1
    shift
    HELMQ_BROKERS=$B "$BIN/helmq-worker" --helm "${BENCH_HELM:-$NOOP}" \
        --chart-repo "${BENCH_CHART_REPO:-oci://registry.example/charts}" --tenant-identity="${BENCH_TENANT_IDENTITY:-false}" \
        --tmpdir "$T/tmp" "${KAFKA_ARGS[@]}" "$@" >>"$log" 2>&1 &
    WORKER_PID=$!
    WORKER_LOG=$log
    track "$WORKER_PID"
    local end=$((SECONDS + 60))
    local n
    while n=$(grep -cs 'assigned ' "$log"); [ "${n:-0}" -lt "$BROKER_PARTITIONS" ]; do
        kill -0 "$WORKER_PID" 2>/dev/null || die "helmq-worker exited: $(tail -5 "$log")"
        [ "$SECONDS" -lt "$end" ] || die "helmq-worker not assigned its partitions: $(tail -5 "$log")"
        sleep 0.1
    done
}

worker_stop() {
    kill -TERM "$WORKER_PID" 2>/dev/null
    wait "$WORKER_PID" 2>/dev/null
    untrack "$WORKER_PID"
}

projector_start() { # projector_start LOG ARGS...
    local log=$1
    shift
    HELMQ_BROKERS=$B "$BIN/helmq-projector" "${KAFKA_ARGS[@]}" "$@" >>"$log" 2>&1 &
    PROJECTOR_PID=$!
    track "$PROJECTOR_PID"
}

projector_stop() {
    kill -TERM "$PROJECTOR_PID" 2>/dev/null
    wait "$PROJECTOR_PID" 2>/dev/null
    untrack "$PROJECTOR_PID"
}

# kv KEY TEXT: the value of KEY=VALUE in TEXT
kv() { tr ' ' '\n' <<<"$2" | sed -n "s/^$1=//p" | head -n 1; }

# Metrics of a worker's /metrics (one gauge).
metric() { curl -s --max-time 2 "$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }
