#!/usr/bin/env bash
# tests/bench/bench.sh: helmq's benchmarks, each beside its physical limit or
# the tool a user would pick instead, run side by side in one run, repeated,
# reported as medians in one table. Run by `make bench` / `make bench-long`.
#
#   BENCH_ONLY="worker projector scale latency memory backlog realhelm"  sections to run (default: all)
#   BENCH_BACKLOG_COMMANDS=100000  commands buffered behind a hanging helm (backlog)
#   BENCH_REPS=3               repetitions of every measurement
#   BENCH_COMMANDS=20000       worker throughput: commands per run (over BENCH_KEYS=1000 releases)
#   BENCH_CONCURRENCY="8 32 64"
#   BENCH_EVENTS=200000        projector: events per run (over BENCH_RELEASES=10000 releases)
#   BENCH_PROJECTORS="1 2"     projector: instance counts measured (processes in one group)
#   BENCH_SCALE=1000           scale: operations in flight
#   BENCH_LATENCY_RATES="200 50" BENCH_LATENCY_SECONDS=30   (commands/s; each rate is a row)
#   BENCH_LONG_COMMANDS=100000 memory run (make bench-long: 1000000)
#   BENCH_REALHELM_COMMANDS=100 BENCH_REALHELM_CONCURRENCY="8 16"   real helm: installs per run
#                              (worker and kcat|xargs peer, real helm 3.17, emulated cluster, OCI registry)
#   BENCH_KEEP=1               keep the scratch directory (logs)
#
# Embedded broker sizing: helmq-broker (librdkafka's mock cluster) keeps at most
# ~5 MiB or 100,000 message sets per partition and drops the oldest beyond.
# Every measurement gets a fresh broker, with enough partitions that what it
# must keep stays far below that (see partitions_for), and checks afterwards
# that the topics' low watermarks are 0 (nothing dropped) where a benchmark
# reads everything back.
. "$(dirname "$0")/lib.sh"

REPS=${BENCH_REPS:-3}
N=${BENCH_COMMANDS:-20000}
KEYS=${BENCH_KEYS:-1000}
CONCS=${BENCH_CONCURRENCY:-8 32 64}
PE=${BENCH_EVENTS:-200000}
PROJ_INSTANCES=${BENCH_PROJECTORS:-1 2}
PR=${BENCH_RELEASES:-10000}
SCALE=${BENCH_SCALE:-1000}
LAT_RATES=${BENCH_LATENCY_RATES:-200 50}
LAT_SECONDS=${BENCH_LATENCY_SECONDS:-30}
LONG=${BENCH_LONG_COMMANDS:-100000}
ONLY=${BENCH_ONLY:-worker projector scale latency memory backlog realhelm}
OUT_DIR=$BENCH_ROOT/build/bench
mkdir -p "$OUT_DIR"
REPORT=$OUT_DIR/bench-$(date +%Y%m%d-%H%M%S).md
RAW=$REPORT.raw # one line per measurement: SECTION KEY VALUE...

runs() { [[ " $ONLY " == *" $1 "* ]]; }
raw() { echo "$*" >>"$RAW"; }
# med SECTION KEY FIELD: median of FIELD (1-based after SECTION KEY) over the raw lines
med() { awk -v s="$1" -v k="$2" -v f="$3" '$1 == s && $2 == k { print $(f + 2) }' "$RAW" | median; }
vals() { awk -v s="$1" -v k="$2" -v f="$3" '$1 == s && $2 == k { printf "%s%s", sep, $(f + 2); sep = " " }' "$RAW"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
fmt0() { awk -v a="$1" 'BEGIN { if (a == "n/a") print a; else printf "%.0f", a }'; }
fmt1() { awk -v a="$1" 'BEGIN { if (a == "n/a") print a; else printf "%.1f", a }'; }

_run=0
next_tag() { _run=$((_run + 1)); printf '%04x%04x' $(($(date +%s) & 0xffff)) "$_run"; }

# Partitions so that a topic holding RECORDS records of about BYTES bytes each
# keeps under ~2 MiB and 20,000 records per partition (limits: 5 MiB, 100,000).
partitions_for() {
    awk -v n="$1" -v b="$2" 'BEGIN { p = int(n * b / (2 * 1048576)) + 1; q = int(n / 20000) + 1; if (q > p) p = q;
        if (p < 8) p = 8; print p }'
}

bench_init
say "scratch $T; programs snapshot from $HELMQ_BIN; report $REPORT"

# The records bench tools write are helmq's: the same bytes as `helmq encode`.
"$BT" sample-command --ns bench-check --index 1001 >"$T/sample.json"
"$BIN/helmq" encode <"$T/sample.json" >"$T/sample.helmq" || die "helmq encode refused the benchmark's command"
"$BT" encode <"$T/sample.json" >"$T/sample.bt"
cmp -s "$T/sample.helmq" "$T/sample.bt" || die "benchtool and helmq encode disagree"

# --- 1. worker throughput ------------------------------------------------------------------
CMD_PARTS=$(partitions_for "$N" 400)
EV_PARTS_NEEDED=$(partitions_for $((N * 2)) 700)
[ "$EV_PARTS_NEEDED" -gt "$CMD_PARTS" ] && CMD_PARTS=$EV_PARTS_NEEDED

worker_run() { # worker_run CONC REP
    local c=$1 rep=$2 tag ns out prod w0 p0 b0 m0 w1 p1 b1 m1 first last tput
    tag=$(next_tag)
    ns=bw-$tag
    broker_start "$CMD_PARTS"
    mkdir -p "$T/state/$ns"
    NOOP_HELM_STATE=$T/state/$ns worker_start "$T/worker-$ns.log" --concurrency "$c" --group-id "g-$ns"
    rm -f "$T/ready"
    "$BT" wait -b "$B" --count "$N" --wait-timeout 1800 --ready "$T/ready" >"$T/wait-$ns.out" &
    local wpid=$!
    track $wpid
    while [ ! -e "$T/ready" ]; do sleep 0.05; done
    w0=$(cpu_ticks "$WORKER_PID")
    p0=$(pg_ticks)
    b0=$(cpu_ticks "$BROKER_PID")
    m0=$(machine_ticks)
    prod=$("$BT" commands -b "$B" --count "$N" --keys "$KEYS" --ns "$ns" --tag "$tag")
    wait $wpid
    untrack $wpid
    m1=$(machine_ticks)
    w1=$(cpu_ticks "$WORKER_PID")
    p1=$(pg_ticks)
    b1=$(cpu_ticks "$BROKER_PID")
    out=$(cat "$T/wait-$ns.out")
    first=$(kv first_send_ms "$prod")
    last=$(kv last_ms "$out")
    [ "$(kv terminal "$out")" = "$N" ] || die "worker c=$c: $out"
    [ "$(kv types "$out")" = "succeeded:$N" ] || die "worker c=$c: not all succeeded: $out"
    local wm
    wm=$("$BT" watermarks -b "$B" -t helm.release.commands)
    [ "$(kv low "$wm")" = 0 ] || die "the broker dropped commands: $wm"
    if [ "$rep" = 1 ] && [ "$c" = "${CONCS%% *}" ]; then
        # Cross-check the counter with helmq's own reader.
        local n
        n=$(HELMQ_BROKERS=$B "$BIN/helmq" events 2>/dev/null | grep -c '"terminal":true')
        [ "$n" = "$N" ] || die "helmq events counts $n terminal events, benchtool $N"
    fi
    local secs
    secs=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    tput=$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.1f", n / s }')
    # CPU seconds per 1,000 commands: worker (its helm children included), PostgreSQL, broker;
    # the whole machine (the load generator and the event counter too)
    raw worker "c$c" "$tput" "$secs" "$(per1k $((w1 - w0)) "$N")" "$(per1k $((p1 - p0)) "$N")" \
        "$(per1k $((b1 - b0)) "$N")" "$(per1k $((m1 - m0)) "$N")"
    say "worker    c=$c rep $rep: $tput commands/s ($N in ${secs}s)"
    worker_stop
    broker_stop
    rm -rf "$T/state/$ns" "$T/worker-$ns.log"
}

limit_run() { # limit_run CONC REP
    local c=$1 rep=$2 ns out m0 m1
    ns=bl-$(next_tag)
    mkdir -p "$T/state/$ns"
    m0=$(machine_ticks)
    out=$(NOOP_HELM_STATE=$T/state/$ns "$BIN/spawn-limit" -n "$N" -c "$c" -k "$KEYS" -s "$ns" "$NOOP") ||
        die "spawn-limit: $out"
    m1=$(machine_ticks)
    raw limit "c$c" "$(kv per_second "$out")" "$(kv seconds "$out")" \
        "$(awk -v t="$(kv cpu_seconds "$out")" -v n="$N" 'BEGIN { printf "%.2f", t / n * 1000 }')" \
        "$(per1k $((m1 - m0)) "$N")"
    say "limit     c=$c rep $rep: $(kv per_second "$out") commands/s"
    rm -rf "$T/state/$ns"
}

peer_run() { # peer_run CONC REP: kcat | xargs -P, the same records, the same no-op helm
    local c=$1 rep=$2 tag ns t0 t1 m0 m1 own secs tput wm
    tag=$(next_tag)
    ns=bp-$tag
    broker_start "$CMD_PARTS"
    "$BT" commands -b "$B" --count "$N" --keys "$KEYS" --ns "$ns" --tag "$tag" >/dev/null
    wm=$("$BT" watermarks -b "$B" -t helm.release.commands)
    [ "$(kv retained "$wm")" = "$N" ] || die "peer preload: $wm"
    mkdir -p "$T/state/$ns"
    m0=$(machine_ticks)
    t0=$(now_ms)
    # In a subshell that reaps kcat and xargs (and, through xargs, every helm):
    # its children's CPU time is the peer's.
    own=$(
        kcat -C -b "$B" -t helm.release.commands -e -q -f '%k\n' 2>/dev/null |
            NOOP_HELM_STATE=$T/state/$ns xargs -P "$c" -n1 "$NOOP" install >/dev/null
        cpu_ticks "$BASHPID"
    )
    t1=$(now_ms)
    m1=$(machine_ticks)
    local done_keys
    done_keys=$(find "$T/state/$ns" -type f | wc -l)
    [ "$done_keys" = "$KEYS" ] || die "peer: $done_keys of $KEYS releases installed"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    tput=$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.1f", n / s }')
    raw peer "c$c" "$tput" "$secs" "$(per1k "$own" "$N")" "$(per1k $((m1 - m0)) "$N")"
    say "peer      c=$c rep $rep: $tput commands/s"
    broker_stop
    rm -rf "$T/state/$ns"
}

if runs worker; then
    say "1. worker throughput: $N commands over $KEYS releases, concurrency $CONCS, $REPS repetitions," \
        "fresh broker with $CMD_PARTS partitions per run"
    export HELMQ_DATABASE_URL
    HELMQ_DATABASE_URL=$(db_url bench_worker)
    for rep in $(seq 1 "$REPS"); do
        for c in $CONCS; do
            # Every run starts from an empty ledger, as the limit and the peer
            # start from nothing: otherwise a run pays for the ledger (and the
            # autovacuum) of the runs before it, and the last concurrency
            # measured looks slowest.
            db_create bench_worker
            worker_run "$c" "$rep"
            db_drop bench_worker
            limit_run "$c" "$rep"
            peer_run "$c" "$rep"
        done
    done
fi

# --- 2. projector throughput ------------------------------------------------------------------
EV_PARTS=$(partitions_for "$PE" 700)

projector_run() { # projector_run REP INSTANCES
    local rep=$1 ninst=$2 tag db url out t0 first done_ms csv prod wm p0 p1 c1 i pids=()
    tag=$(next_tag)
    db=bench_proj_$rep
    db_create "$db"
    url=$(db_url "$db")
    csv=$T/csv-$rep
    mkdir -p "$csv"
    broker_start "$EV_PARTS"
    prod=$("$BT" events -b "$B" --count "$PE" --releases "$PR" --tag "$tag" --csv-dir "$csv") || die "events: $prod"
    wm=$("$BT" watermarks -b "$B" -t helm.release.events)
    [ "$(kv retained "$wm")" = "$PE" ] && [ "$(kv low "$wm")" = 0 ] || die "the broker did not keep every event: $wm"
    p0=$(pg_ticks)
    t0=$(now_ms)
    # INSTANCES helmq-projector processes in one consumer group share the partitions.
    for i in $(seq 1 "$ninst"); do
        HELMQ_DATABASE_URL=$url projector_start "$T/projector-$rep-$i.log" --group-id "gp-$tag"
        pids+=("$PROJECTOR_PID")
    done
    out=$("$BT" pgwait --conninfo "$url" --sql "SELECT count(*) FROM helmq.applied_events" --target "$PE" \
        --interval-ms 100 --wait-timeout 1800) || die "projector: $out $(tail -3 "$T/projector-$rep-1.log")"
    c1=0
    for i in "${pids[@]}"; do c1=$((c1 + $(cpu_ticks "$i"))); done
    p1=$(pg_ticks)
    for i in "${pids[@]}"; do
        PROJECTOR_PID=$i
        projector_stop
    done
    broker_stop
    first=$(kv first_nonzero_ms "$out")
    done_ms=$(kv done_ms "$out")
    # COPY of the same rows into tables with the same columns, indexes and keys.
    psql -X -q -v ON_ERROR_STOP=1 "$url" >/dev/null <<'EOF' || die "COPY tables"
CREATE SCHEMA bench_copy;
CREATE TABLE bench_copy.applied_events (LIKE helmq.applied_events INCLUDING ALL);
CREATE TABLE bench_copy.release_history (LIKE helmq.release_history INCLUDING ALL);
CREATE TABLE bench_copy.releases (LIKE helmq.releases INCLUDING ALL);
EOF
    cat >"$T/copy-$rep.sql" <<EOF
\\copy bench_copy.applied_events (event_id, command_id, release_id, tenant_id, event_type, status, revision, occurred_at, error_code, error_message) FROM '$csv/applied_events.tsv'
\\copy bench_copy.release_history (release_id, revision, tenant_id, chart_name, chart_version, app_version, status, operation, description, performed_by, command_id, error, values_digest, values_redacted, created_at) FROM '$csv/release_history.tsv'
\\copy bench_copy.releases (release_id, tenant_id, namespace, release_name, chart_name, chart_version, app_version, status, revision, description, values_digest, values_redacted, uninstall_reason, last_error, last_event_id, created_at, updated_at) FROM '$csv/releases.tsv'
EOF
    local c_t0 c_t1
    c_t0=$(now_ms)
    psql -X -q -v ON_ERROR_STOP=1 "$url" -f "$T/copy-$rep.sql" >/dev/null || die "COPY"
    c_t1=$(now_ms)
    # The same rows: the projection and the COPY'd tables are equal.
    local diff
    diff=$(psql -X -q -At "$url" -c "SELECT
        (SELECT count(*) FROM (SELECT * FROM helmq.applied_events EXCEPT SELECT * FROM bench_copy.applied_events) a)
      + (SELECT count(*) FROM (SELECT * FROM helmq.release_history EXCEPT SELECT * FROM bench_copy.release_history) h)
      + (SELECT count(*) FROM (SELECT * FROM helmq.releases EXCEPT SELECT * FROM bench_copy.releases) r)
      + (SELECT count(*) FROM helmq.releases) - (SELECT count(*) FROM bench_copy.releases)
      + (SELECT count(*) FROM helmq.release_history) - (SELECT count(*) FROM bench_copy.release_history)")
    [ "$diff" = 0 ] || die "the projection and the COPY'd rows differ ($diff rows)"
    local rows
    rows=$(psql -X -q -At "$url" -c "SELECT (SELECT count(*) FROM helmq.applied_events) || ' ' ||
        (SELECT count(*) FROM helmq.release_history) || ' ' || (SELECT count(*) FROM helmq.releases)")
    local steady total copy_s
    steady=$(awk -v n="$PE" -v a="$first" -v b="$done_ms" 'BEGIN { printf "%.1f", n / ((b - a) / 1000) }')
    total=$(awk -v n="$PE" -v a="$t0" -v b="$done_ms" 'BEGIN { printf "%.1f", n / ((b - a) / 1000) }')
    copy_s=$(awk -v a="$c_t0" -v b="$c_t1" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    raw projector "i$ninst" "$steady" "$total" "$(awk -v n="$PE" -v s="$copy_s" 'BEGIN { printf "%.1f", n / s }')" "$copy_s" \
        "$(awk -v a="$first" -v b="$t0" 'BEGIN { printf "%.2f", (a - b) / 1000 }')" \
        "$(per1k "$c1" "$PE" 3)" "$(per1k $((p1 - p0)) "$PE" 3)"
    say "projector x$ninst rep $rep: $steady events/s after the first batch ($total from process start);" \
        "COPY $copy_s s; rows $rows identical"
    db_drop "$db"
    rm -rf "$csv"
}

if runs projector; then
    say "2. projector throughput: $PE events over $PR releases, fresh broker with $EV_PARTS partitions, $REPS repetitions"
    for ninst in $PROJ_INSTANCES; do
        for rep in $(seq 1 "$REPS"); do projector_run "$rep" "$ninst"; done
    done
fi

# --- 3. scale: 1,000 operations in flight -------------------------------------------------------
SCALE_PARTS=$(partitions_for $((SCALE * 6)) 700)

curl_lat() { # curl_lat URL N: N sequential GETs; prints one time_total (ms) per line
    local i
    for i in $(seq 1 "$2"); do
        curl -s -o /dev/null --max-time 10 -w '%{time_total}\n' "$1" | awk '{ printf "%.3f\n", $1 * 1000 }'
    done
}

children_of() { ps -o pid= --ppid "$1" | wc -l; }

wait_in_flight() { # wait_in_flight URL N SECONDS
    local end=$((SECONDS + $3)) v
    while [ "$SECONDS" -lt "$end" ]; do
        v=$(metric "$1" helmq_worker_in_flight)
        [ "${v:-0}" -ge "$2" ] && return 0
        sleep 0.2
    done
    return 1
}

scale_run() { # scale_run REP
    local rep=$1 tag ns port url rss0 rss1 kids
    tag=$(next_tag)
    ns=bs-$tag
    port=$(free_port)
    url=http://127.0.0.1:$port
    broker_start "$SCALE_PARTS"
    # (a) parked: SCALE helm processes sleeping, each command holding its slot
    mkdir -p "$T/state/$ns"
    NOOP_HELM_STATE=$T/state/$ns NOOP_HELM_SLEEP_MS=600000 worker_start "$T/scale-$ns.log" \
        --concurrency "$SCALE" --group-id "g-$ns" --http-listen "127.0.0.1:$port" --drain-timeout-ms 1000
    sleep 1
    rss0=$(rss_kb "$WORKER_PID")
    curl_lat "$url/metrics" 200 >"$T/lat-idle"
    "$BT" commands -b "$B" --count "$SCALE" --keys "$SCALE" --ns "$ns" --tag "$tag" >/dev/null
    wait_in_flight "$url" "$SCALE" 300 || die "scale: in flight $(metric "$url" helmq_worker_in_flight) of $SCALE"
    local end=$((SECONDS + 60))
    while [ "$(children_of "$WORKER_PID")" -lt "$SCALE" ] && [ "$SECONDS" -lt "$end" ]; do sleep 0.2; done
    kids=$(children_of "$WORKER_PID")
    sleep 1
    rss1=$(rss_kb "$WORKER_PID")
    curl_lat "$url/metrics" 200 >"$T/lat-parked"
    local kidpids
    kidpids=$(ps -o pid= --ppid "$WORKER_PID")
    worker_stop # drains 1 s, then SIGTERM to every helm process group
    # shellcheck disable=SC2086
    kill -9 $kidpids 2>/dev/null
    broker_stop
    raw scale rss "$rss0" "$rss1" "$(awk -v a="$rss0" -v b="$rss1" -v n="$SCALE" 'BEGIN { printf "%.1f", (b - a) / n }')" "$kids"
    raw scale lat_idle "$(pctl 50 <"$T/lat-idle")" "$(pctl 99 <"$T/lat-idle")"
    raw scale lat_parked "$(pctl 50 <"$T/lat-parked")" "$(pctl 99 <"$T/lat-parked")"
    say "scale     rep $rep: RSS idle ${rss0} kB, with $kids in flight ${rss1} kB;" \
        "/metrics p50/p99 idle $(pctl 50 <"$T/lat-idle")/$(pctl 99 <"$T/lat-idle") ms," \
        "parked $(pctl 50 <"$T/lat-parked")/$(pctl 99 <"$T/lat-parked") ms"

    # (b) churn: SCALE in flight, each helm 1 s, 5 commands per release (a fresh broker for each phase)
    broker_start "$SCALE_PARTS"
    ns=bc-$(next_tag)
    mkdir -p "$T/state/$ns"
    NOOP_HELM_STATE=$T/state/$ns NOOP_HELM_SLEEP_MS=1000 worker_start "$T/scale-$ns.log" \
        --concurrency "$SCALE" --group-id "g-$ns" --http-listen "127.0.0.1:$port"
    "$BT" wait -b "$B" --count $((SCALE * 5)) --wait-timeout 600 >"$T/wait-$ns.out" &
    local wpid=$!
    track $wpid
    local prod
    prod=$("$BT" commands -b "$B" --count $((SCALE * 5)) --keys "$SCALE" --ns "$ns" --tag "$(next_tag)")
    wait_in_flight "$url" $((SCALE * 9 / 10)) 300 || die "churn: in flight $(metric "$url" helmq_worker_in_flight)"
    curl_lat "$url/metrics" 200 >"$T/lat-churn"
    local rss2
    rss2=$(rss_kb "$WORKER_PID")
    wait $wpid
    untrack $wpid
    local out
    out=$(cat "$T/wait-$ns.out")
    [ "$(kv types "$out")" = "succeeded:$((SCALE * 5))" ] || die "churn: $out"
    local tput
    tput=$(awk -v n=$((SCALE * 5)) -v a="$(kv first_send_ms "$prod")" -v b="$(kv last_ms "$out")" \
        'BEGIN { printf "%.1f", n / ((b - a) / 1000) }')
    raw scale lat_churn "$(pctl 50 <"$T/lat-churn")" "$(pctl 99 <"$T/lat-churn")" "$tput" "$rss2"
    say "churn     rep $rep: /metrics p50/p99 $(pctl 50 <"$T/lat-churn")/$(pctl 99 <"$T/lat-churn") ms while" \
        "$tput commands/s of 1 s helm ran; RSS $rss2 kB"
    worker_stop
    broker_stop
    broker_start "$SCALE_PARTS"

    # (c) timeouts: SCALE hanging helms with timeout 2 s, no grace
    ns=bt-$(next_tag)
    mkdir -p "$T/state/$ns"
    rm -f "$T/hang.log"
    HELMQ_TIMEOUT_GRACE_MS=0 NOOP_HELM_STATE=$T/state/$ns NOOP_HELM_HANG=1 NOOP_HELM_HANG_LOG=$T/hang.log \
        worker_start "$T/scale-$ns.log" --concurrency "$SCALE" --group-id "g-$ns"
    "$BT" wait -b "$B" --count "$SCALE" --wait-timeout 600 >"$T/wait-$ns.out" &
    wpid=$!
    track $wpid
    "$BT" commands -b "$B" --count "$SCALE" --keys "$SCALE" --ns "$ns" --tag "$(next_tag)" --timeout 2 >/dev/null
    wait $wpid
    untrack $wpid
    out=$(cat "$T/wait-$ns.out")
    [ "$(kv types "$out")" = "failed:$SCALE" ] || die "timeouts: $out"
    local n_timeout
    n_timeout=$(grep -c 'passed its deadline' "$T/scale-$ns.log")
    [ "$(wc -l <"$T/hang.log")" = "$SCALE" ] || die "timeouts: $(wc -l <"$T/hang.log") SIGTERMs recorded of $SCALE"
    awk '{ printf "%.3f\n", ($2 - $1) / 1e6 - 2000 }' "$T/hang.log" >"$T/late"
    # The worker's own view: how long after the deadline its timer sent SIGTERM.
    sed -n 's/.*passed its deadline.*(\([-0-9]*\) ms after the deadline).*/\1/p' "$T/scale-$ns.log" >"$T/late-worker"
    raw scale late_worker "$(pctl 50 <"$T/late-worker")" "$(pctl 99 <"$T/late-worker")" \
        "$(sort -g "$T/late-worker" | tail -n 1)" "$(wc -l <"$T/late-worker")"
    raw scale late "$(pctl 50 <"$T/late")" "$(pctl 99 <"$T/late")" "$(sort -g "$T/late" | head -n 1)" \
        "$(sort -g "$T/late" | tail -n 1)" "$n_timeout"
    say "timeouts  rep $rep: SIGTERM lateness p50/p99 $(pctl 50 <"$T/late")/$(pctl 99 <"$T/late") ms" \
        "(min $(sort -g "$T/late" | head -n 1), max $(sort -g "$T/late" | tail -n 1))"
    worker_stop
    broker_stop
    rm -rf "$T/state/bs-"* "$T/state/bc-"* "$T/state/bt-"*
}

if runs scale; then
    say "3. scale: $SCALE operations in flight, worker --concurrency $SCALE, $REPS repetitions"
    db_create bench_scale
    HELMQ_DATABASE_URL=$(db_url bench_scale)
    export HELMQ_DATABASE_URL
    for rep in $(seq 1 "$REPS"); do scale_run "$rep"; done
    db_drop bench_scale
fi

# --- 4. latency: send -> projection row visible ----------------------------------------------------
# The embedded broker answers a Fetch that finds no data only after the client's
# fetch.wait.max.ms (librdkafka's mock cluster does not cut the wait short when
# data arrives; real Kafka does): each consumer hop (worker, projector) can add up
# to 500 ms, librdkafka's default. So latency is measured with the defaults and
# with fetch.wait.max.ms=10 given to the worker and the projector (-X).
LAT_CONFIGS=${BENCH_LATENCY_CONFIGS:-default fetchwait10}
if runs latency; then
    LAT_MAX=0
    for r in $LAT_RATES; do [ "$r" -gt "$LAT_MAX" ] && LAT_MAX=$r; done
    LAT_PARTS=$(partitions_for $((LAT_MAX * LAT_SECONDS * REPS * 4)) 700)
    say "4. latency: $LAT_RATES commands/s for ${LAT_SECONDS}s each, worker (concurrency 32) + projector," \
        "Kafka settings: $LAT_CONFIGS; $REPS repetitions"
    for cfg in $LAT_CONFIGS; do
        extra=()
        [ "$cfg" != default ] && extra=(-X "fetch.wait.max.ms=${cfg#fetchwait}")
        db_create bench_latency
        HELMQ_DATABASE_URL=$(db_url bench_latency)
        export HELMQ_DATABASE_URL
        broker_start "$LAT_PARTS"
        mkdir -p "$T/state/lat-$cfg"
        NOOP_HELM_STATE=$T/state/lat-$cfg worker_start "$T/lat-worker-$cfg.log" --concurrency 32 --group-id "g-lat-$cfg" \
            "${extra[@]}"
        projector_start "$T/lat-projector-$cfg.log" --group-id "gp-lat-$cfg" "${extra[@]}"
        # warm-up: a few commands through the whole path (the projector joins its group)
        "$BT" latency -b "$B" --conninfo "$HELMQ_DATABASE_URL" --rate 10 --count 10 --keys 10 --ns lat-warm \
            --tag "$(next_tag)" >/dev/null || die "latency warm-up"
        for rep in $(seq 1 "$REPS"); do
            for r in $LAT_RATES; do
                out=$("$BT" latency -b "$B" --conninfo "$HELMQ_DATABASE_URL" --rate "$r" --count $((r * LAT_SECONDS)) \
                    --keys "$KEYS" --ns "lat-$r-r$rep" --tag "$(next_tag)" --out "$T/lat-$cfg-$r-$rep.tsv") ||
                    die "latency: $out"
                raw latency "$cfg-r$r" "$(kv p50_ms "$out")" "$(kv p99_ms "$out")" "$(kv p999_ms "$out")" \
                    "$(kv max_ms "$out")" "$(kv send_rate "$out")"
                say "latency   $cfg $r/s rep $rep: $out"
                sleep 2
            done
        done
        worker_stop
        projector_stop
        broker_stop
        db_drop bench_latency
    done
fi

# --- 5. memory over a long run -------------------------------------------------------------------
memory_run() { # memory_run REP
    local rep=$1 tag ns chunk step sent=0 done_n=0 next t0 rss wpid
    tag=$(next_tag)
    ns=bm-$tag
    chunk=5000
    [ "$LONG" -lt 50000 ] && chunk=$((LONG / 10))
    step=$((LONG / 20))
    broker_start "$MEM_PARTS"
    mkdir -p "$T/state/$ns"
    local mport murl
    mport=$(free_port)
    murl=http://127.0.0.1:$mport
    NOOP_HELM_STATE=$T/state/$ns worker_start "$T/mem-$ns.log" --concurrency 32 --group-id "g-$ns" \
        --http-listen "127.0.0.1:$mport"
    echo 0 >"$T/progress"
    "$BT" wait -b "$B" --count "$LONG" --wait-timeout 36000 --progress "$T/progress" >"$T/wait-$ns.out" &
    wpid=$!
    track $wpid
    t0=$(now_ms)
    rss=$(rss_kb "$WORKER_PID")
    : >"$T/mem-$rep.tsv"
    # With each RSS sample, what the worker holds that can grow with the
    # broker's pace: commands received and not finished, commands in
    # progress, events not yet acknowledged by the broker.
    mem_gauges() {
        printf '%s\t%s\t%s' "$(metric "$murl" helmq_worker_buffered)" "$(metric "$murl" helmq_worker_in_flight)" \
            "$(metric "$murl" helmq_worker_events_unacked)"
    }
    printf '%s\t%s\t%s\t%s\n' 0 0 "$rss" "$(mem_gauges)" >>"$T/mem-$rep.tsv"
    next=$step
    while [ "$done_n" -lt "$LONG" ]; do
        if [ "$sent" -lt "$LONG" ] && [ $((sent - done_n)) -le "$chunk" ]; then
            local n=$chunk
            [ $((sent + n)) -gt "$LONG" ] && n=$((LONG - sent))
            "$BT" commands -b "$B" --count "$n" --start "$sent" --keys "$KEYS" --ns "$ns" --tag "$tag" >/dev/null ||
                die "memory: produce"
            sent=$((sent + n))
        fi
        sleep 0.2
        done_n=$(cat "$T/progress" 2>/dev/null || echo "$done_n")
        while [ "$done_n" -ge "$next" ] && [ "$next" -le "$LONG" ]; do
            rss=$(rss_kb "$WORKER_PID")
            printf '%s\t%s\t%s\t%s\n' "$done_n" $(($(now_ms) - t0)) "$rss" "$(mem_gauges)" >>"$T/mem-$rep.tsv"
            next=$((next + step))
        done
        kill -0 "$WORKER_PID" 2>/dev/null || die "memory: the worker died"
        kill -0 $wpid 2>/dev/null || break
    done
    wait $wpid
    untrack $wpid
    local out
    out=$(cat "$T/wait-$ns.out")
    [ "$(kv types "$out")" = "succeeded:$LONG" ] || die "memory: $out"
    local secs growth mid last
    secs=$(awk -v a="$t0" -v b="$(kv last_ms "$out")" 'BEGIN { printf "%.1f", (b - a) / 1000 }')
    # growth over the last 50%: RSS at the end vs RSS at the sample nearest LONG/2
    mid=$(awk -v h=$((LONG / 2)) 'NR > 1 && $1 >= h { print $3; exit }' "$T/mem-$rep.tsv")
    last=$(tail -n 1 "$T/mem-$rep.tsv" | cut -f3)
    growth=$(awk -v a="$mid" -v b="$last" 'BEGIN { printf "%.1f", (b - a) / a * 100 }')
    raw memory x "$growth" "$mid" "$last" "$(awk -v n="$LONG" -v s="$secs" 'BEGIN { printf "%.1f", n / s }')"
    cp "$T/mem-$rep.tsv" "$REPORT.memory-$rep.tsv"
    say "memory    rep $rep: $LONG commands in ${secs}s; RSS at 50% ${mid} kB, at the end ${last} kB (${growth}%)"
    worker_stop
    broker_stop
    rm -rf "$T/state/$ns" "$T/mem-$ns.log"
}

if runs memory; then
    MEM_PARTS=$(partitions_for 40000 700) # in flight at most ~2 chunks of commands, events read as they come
    # The broker keeps every record until its partition's log is full and finds
    # a fetch's offset by walking the log: keep each partition's share of a long
    # run (commands, and twice as many events) under ~20,000 records.
    [ $((LONG / 20000 + 1)) -gt "$MEM_PARTS" ] && MEM_PARTS=$((LONG / 20000 + 1))
    say "5. memory: $LONG commands at concurrency 32, RSS every $((LONG / 20)) commands, $REPS repetitions"
    db_create bench_memory
    HELMQ_DATABASE_URL=$(db_url bench_memory)
    export HELMQ_DATABASE_URL
    for rep in $(seq 1 "$REPS"); do memory_run "$rep"; done
    db_drop bench_memory
fi

# --- 5b. a large backlog buffered in the worker -------------------------------------------------
# BL_N commands over KEYS releases reach a worker whose helm never returns
# (NOOP_HELM_HANG): 8 run, every other one waits in the worker's buffers
# (--max-buffered BL_N). RSS with nothing buffered and with all of them, and
# the cost of one buffered command (the RSS difference over BL_N).
BL_N=${BENCH_BACKLOG_COMMANDS:-100000}
backlog_run() { # backlog_run REP
    local rep=$1 tag ns mport murl rss0 rss1 t0 buffered=0 per
    tag=$(next_tag)
    ns=bb-$tag
    broker_start "$BL_PARTS"
    mkdir -p "$T/state/$ns"
    mport=$(free_port)
    murl=http://127.0.0.1:$mport
    NOOP_HELM_HANG=1 NOOP_HELM_STATE=$T/state/$ns worker_start "$T/backlog-$ns.log" --concurrency 8 \
        --max-buffered "$BL_N" --drain-timeout-ms 1000 --kill-grace-ms 1000 --group-id "g-$ns" \
        --http-listen "127.0.0.1:$mport"
    local _
    for _ in $(seq 1 100); do [ -n "$(metric "$murl" helmq_worker_buffered)" ] && break; sleep 0.1; done
    sleep 1
    rss0=$(rss_kb "$WORKER_PID")
    "$BT" commands -b "$B" --count "$BL_N" --keys "$KEYS" --ns "$ns" --tag "$tag" >/dev/null || die "backlog: produce"
    t0=$SECONDS
    while [ "$SECONDS" -lt $((t0 + 600)) ]; do
        buffered=$(metric "$murl" helmq_worker_buffered)
        [ "${buffered:-0}" -ge "$BL_N" ] && break
        kill -0 "$WORKER_PID" 2>/dev/null || die "backlog: the worker died"
        sleep 1
    done
    [ "${buffered:-0}" -ge "$BL_N" ] || die "backlog: only ${buffered:-0} of $BL_N commands buffered after 600 s"
    sleep 2
    rss1=$(rss_kb "$WORKER_PID")
    per=$(awk -v a="$rss0" -v b="$rss1" -v n="$BL_N" 'BEGIN { printf "%.0f", (b - a) * 1024 / n }')
    raw backlog x "$per" "$rss0" "$rss1" "$buffered"
    say "backlog   rep $rep: $buffered commands buffered; RSS $rss0 kB empty, $rss1 kB full: $per bytes per buffered command"
    # its helm hangs, nothing to drain: the hanging helm process groups, then the worker
    local k
    for k in $(ps -o pid= --ppid "$WORKER_PID"); do kill -9 -- "-$k" 2>/dev/null; done
    kill -9 "$WORKER_PID" 2>/dev/null
    wait "$WORKER_PID" 2>/dev/null
    untrack "$WORKER_PID"
    broker_stop
    rm -rf "$T/state/$ns" "$T/backlog-$ns.log"
}

if runs backlog; then
    BL_PARTS=$(partitions_for 40000 700)
    [ $((BL_N / 20000 + 1)) -gt "$BL_PARTS" ] && BL_PARTS=$((BL_N / 20000 + 1))
    say "5b. backlog: $BL_N commands buffered behind a helm that never returns, $REPS repetitions"
    db_create bench_backlog
    HELMQ_DATABASE_URL=$(db_url bench_backlog)
    export HELMQ_DATABASE_URL
    for rep in $(seq 1 "$REPS"); do backlog_run "$rep"; done
    db_drop bench_backlog
fi

# --- 6. real helm against the emulated cluster ---------------------------------------------------
# The worker and the kcat | xargs peer, both running real helm 3.17 (install
# --wait) against the emulated Kubernetes API (tests/kube/) with charts from a
# real OCI registry (tests/lib/registry.sh), at the same concurrency, each with a
# fresh emulator (and its own namespace): RH_N installs of distinct releases of
# matih-ai-service 1.0.0. CPU is split by process: helm (the children the worker,
# or xargs, reaped), the worker itself, PostgreSQL, the emulator (one python
# process), the registry.
RH_N=${BENCH_REALHELM_COMMANDS:-100}
RH_CONCS=${BENCH_REALHELM_CONCURRENCY:-8 16}
RH_CHART=matih-ai-service:1.0.0:2.0.0
RH_PARTS=8

rh_setup() { # real helm and kubectl, the registry with tests/charts pushed, helm's private homes
    . "$BENCH_ROOT/tests/lib/cluster.sh"
    # The emulator's debug log writes a line per request: info for the benchmark.
    export KUBE_EMULATOR_LOG_LEVEL=${BENCH_KUBE_LOG_LEVEL:-info}
    cluster_start "$T/cluster" >"$T/cluster.log" 2>&1 || { cat "$T/cluster.log" >&2; die "the emulated cluster did not start"; }
    track "$REGISTRY_PID"
    # Each contender gets an emulator of its own (rh_kube_fresh): not this one.
    kube_stop
    printf '{"replicaCount":1}\n' >"$T/rh-values.json" # the commands' valuesOverride, as the peer's -f file
}

rh_kube_fresh() { # rh_kube_fresh DIR: a new emulator with empty state; HELMQ_KUBECONFIG for the worker
    kube_start "$1" >>"$T/cluster.log" 2>&1 || die "the emulator did not start: $(tail -5 "$T/cluster.log")"
    track "$KUBE_PID"
    export HELMQ_KUBECONFIG=$KUBECONFIG
}

rh_kube_done() {
    untrack "$KUBE_PID"
    kube_stop
}

# rh_verify WHO NS: the emulator holds RH_N helm release Secrets, all deployed, all in NS,
# and RH_N Deployments with their replica ready.
rh_verify() {
    local who=$1 ns=$2 s d
    s=$(curl -sf --max-time 60 "$KUBE_URL/api/v1/secrets?labelSelector=owner%3Dhelm" |
        jq -r --arg ns "$ns" '[(.items | length), ([.items[] | select(.metadata.labels.status == "deployed"
            and .metadata.labels.version == "1" and .metadata.namespace == $ns)] | length)] | join(" ")')
    [ "$s" = "$RH_N $RH_N" ] || die "$who: helm release Secrets (all, deployed v1 in $ns): $s, want $RH_N"
    d=$(curl -sf --max-time 60 "$KUBE_URL/apis/apps/v1/namespaces/$ns/deployments" |
        jq -r '[.items[] | select(.status.readyReplicas == 1)] | length')
    [ "$d" = "$RH_N" ] || die "$who: $d ready Deployments in $ns, want $RH_N"
    say "realhelm  $who: $RH_N helm release Secrets deployed, $d Deployments ready in $ns"
}

rh_worker_run() { # rh_worker_run CONC REP
    local c=$1 rep=$2 tag ns prod out w0 w1 p0 p1 k0 k1 r0 r1 m0 m1 first last secs tput wpid
    tag=$(next_tag)
    ns=rw-$tag
    db_create bench_realhelm
    HELMQ_DATABASE_URL=$(db_url bench_realhelm)
    export HELMQ_DATABASE_URL
    rh_kube_fresh "$T/kube-$ns"
    broker_start "$RH_PARTS"
    BENCH_HELM=$HELMQ_HELM BENCH_CHART_REPO=$HELMQ_CHART_REPO worker_start "$T/rh-worker-$ns.log" --concurrency "$c" \
        --group-id "g-$ns"
    rm -f "$T/ready"
    "$BT" wait -b "$B" --count "$RH_N" --wait-timeout 1800 --ready "$T/ready" >"$T/wait-$ns.out" &
    wpid=$!
    track $wpid
    while [ ! -e "$T/ready" ]; do sleep 0.05; done
    w0=$(cpu_split "$WORKER_PID")
    p0=$(pg_ticks)
    k0=$(cpu_ticks "$KUBE_PID")
    r0=$(cpu_ticks "$REGISTRY_PID")
    m0=$(machine_ticks)
    prod=$("$BT" commands -b "$B" --count "$RH_N" --keys "$RH_N" --ns "$ns" --tag "$tag" --chart "$RH_CHART")
    wait $wpid
    untrack $wpid
    m1=$(machine_ticks)
    w1=$(cpu_split "$WORKER_PID")
    p1=$(pg_ticks)
    k1=$(cpu_ticks "$KUBE_PID")
    r1=$(cpu_ticks "$REGISTRY_PID")
    out=$(cat "$T/wait-$ns.out")
    [ "$(kv types "$out")" = "succeeded:$RH_N" ] || die "realhelm worker c=$c: not all succeeded: $out $(grep -m3 -i 'fail\|error' "$T/rh-worker-$ns.log")"
    rh_verify "worker c=$c" "$ns"
    first=$(kv first_send_ms "$prod")
    last=$(kv last_ms "$out")
    secs=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    tput=$(awk -v n="$RH_N" -v s="$secs" 'BEGIN { printf "%.2f", n / s }')
    # helm spawned by the worker: its reaped children's ticks; the worker: its own
    # CPU ms per command: helm, worker, PostgreSQL, emulator, registry, machine
    raw realhelm "worker-c$c" "$tput" "$secs" \
        "$(per1k $((${w1#* } - ${w0#* })) "$RH_N" 1)" "$(per1k $((${w1% *} - ${w0% *})) "$RH_N" 1)" \
        "$(per1k $((p1 - p0)) "$RH_N" 1)" "$(per1k $((k1 - k0)) "$RH_N" 1)" "$(per1k $((r1 - r0)) "$RH_N" 1)" \
        "$(per1k $((m1 - m0)) "$RH_N" 1)" "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
    say "realhelm  worker c=$c rep $rep: $tput commands/s ($RH_N installs in ${secs}s)"
    worker_stop
    broker_stop
    rh_kube_done
    db_drop bench_realhelm
    rm -rf "$T/kube-$ns"
}

rh_peer_run() { # rh_peer_run CONC REP: kcat | xargs -P C helm install ..., the worker's own argv
    local c=$1 rep=$2 tag ns wm k0 k1 r0 r1 m0 m1 t0 t1 own inner rc secs tput
    local -a argv
    tag=$(next_tag)
    ns=rp-$tag
    rh_kube_fresh "$T/kube-$ns"
    broker_start "$RH_PARTS"
    "$BT" commands -b "$B" --count "$RH_N" --keys "$RH_N" --ns "$ns" --tag "$tag" --chart "$RH_CHART" >/dev/null
    wm=$("$BT" watermarks -b "$B" -t helm.release.commands)
    [ "$(kv retained "$wm")" = "$RH_N" ] || die "realhelm peer preload: $wm"
    # The helm argv the worker runs for these commands (helmq-worker argv), the
    # release name left to xargs, the values in a file.
    mapfile -t argv < <("$BT" sample-command --ns "$ns" --keys "$RH_N" --tag "$tag" --index 0 --chart "$RH_CHART" |
        HELMQ_REGISTRY_PLAIN_HTTP=true "$BIN/helmq-worker" argv "$T/rh-values.json" | head -n 1 |
        jq -r '.[2] = "{}" | .[]')
    [ "${argv[1]}" = install ] || die "realhelm peer: no install argv from helmq-worker argv: ${argv[*]}"
    [ "$rep" = 1 ] && [ "$c" = "${RH_CONCS%% *}" ] && say "realhelm  peer's helm: ${argv[*]}"
    k0=$(cpu_ticks "$KUBE_PID")
    r0=$(cpu_ticks "$REGISTRY_PID")
    m0=$(machine_ticks)
    t0=$(now_ms)
    # The subshell reaps kcat and cut; the inner one reaps xargs, which reaps every helm.
    own=$(
        kcat -C -b "$B" -t helm.release.commands -e -q -f '%k\n' 2>/dev/null | cut -d/ -f3 |
            (
                xargs -P "$c" -I{} "${argv[@]}" >/dev/null 2>>"$T/rh-peer-$ns.err"
                echo $? >"$T/rh-peer.rc"
                cpu_ticks "$BASHPID" >"$T/rh-peer.inner"
            )
        cpu_ticks "$BASHPID"
    )
    t1=$(now_ms)
    m1=$(machine_ticks)
    k1=$(cpu_ticks "$KUBE_PID")
    r1=$(cpu_ticks "$REGISTRY_PID")
    rc=$(cat "$T/rh-peer.rc")
    inner=$(cat "$T/rh-peer.inner")
    [ "$rc" = 0 ] || die "realhelm peer c=$c: xargs exited $rc: $(tail -3 "$T/rh-peer-$ns.err")"
    rh_verify "peer c=$c" "$ns"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    tput=$(awk -v n="$RH_N" -v s="$secs" 'BEGIN { printf "%.2f", n / s }')
    # CPU ms per command: helm (with xargs), kcat+cut, emulator, registry, machine
    raw realhelm "peer-c$c" "$tput" "$secs" "$(per1k "$inner" "$RH_N" 1)" "$(per1k $((own - inner)) "$RH_N" 1)" \
        "$(per1k $((k1 - k0)) "$RH_N" 1)" "$(per1k $((r1 - r0)) "$RH_N" 1)" "$(per1k $((m1 - m0)) "$RH_N" 1)" \
        "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
    say "realhelm  peer   c=$c rep $rep: $tput commands/s ($RH_N installs in ${secs}s)"
    broker_stop
    rh_kube_done
    rm -rf "$T/kube-$ns"
}

if runs realhelm; then
    say "6. real helm: $RH_N installs of matih-ai-service 1.0.0 (distinct releases), worker and kcat|xargs peer," \
        "concurrency $RH_CONCS, $REPS repetitions, a fresh emulator per run"
    rh_setup
    for rep in $(seq 1 "$REPS"); do
        for c in $RH_CONCS; do
            # Alternate who goes first, so neither always runs on a warmer (or busier) machine.
            if [ $((rep % 2)) = 1 ]; then
                rh_worker_run "$c" "$rep"
                rh_peer_run "$c" "$rep"
            else
                rh_peer_run "$c" "$rep"
                rh_worker_run "$c" "$rep"
            fi
        done
    done
    untrack "$REGISTRY_PID"
    cluster_stop
fi

# --- the report ---------------------------------------------------------------------------------------
{
    echo "# helmq benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "| machine | |"
    echo "|---|---|"
    echo "| CPUs (nproc) | $(nproc) |"
    echo "| CPU model | $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo) |"
    echo "| memory | $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) |"
    echo "| kernel | $(uname -sr) |"
    echo "| load average at the end | $(cut -d' ' -f1-3 /proc/loadavg) |"
    echo "| helmq | $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$BENCH_ROOT" diff --quiet HEAD 2>/dev/null || echo ' (working tree modified)') |"
    echo "| repetitions | $REPS (medians; every repetition's value in brackets where useful) |"
    echo
    if runs worker; then
        echo "## 1. Worker throughput (commands/s)"
        echo
        echo "$N commands over $KEYS releases (an install, then upgrades), no-op helm; from the first send to the"
        echo "last terminal event on the events topic. Limit: spawn + reap the same no-op helm, nothing else."
        echo "Peer: \`kcat -C -e -f '%k\\n' | xargs -P C -n1 noop-helm install\`. Fresh broker with $CMD_PARTS partitions and a fresh database per run."
        echo
        echo "CPU s per 1,000 commands: of the processes named (a process with its reaped children), and of the whole"
        echo "machine over the run (every process, the load generator and the event counter included; $(nproc) CPUs)."
        echo
        echo "| concurrency | worker | limit | peer | worker/limit | worker/peer | worker runs | CPU s per 1,000 commands: worker+helm / PostgreSQL / broker | CPU s per 1,000: limit / peer (kcat+xargs+helm) | machine CPU s per 1,000: worker / limit / peer |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        for c in $CONCS; do
            w=$(med worker "c$c" 1)
            l=$(med limit "c$c" 1)
            p=$(med peer "c$c" 1)
            echo "| $c | $(fmt0 "$w") | $(fmt0 "$l") | $(fmt0 "$p") | $(ratio "$w" "$l") | $(ratio "$w" "$p") |" \
                "$(vals worker "c$c" 1) | $(med worker "c$c" 3) / $(med worker "c$c" 4) / $(med worker "c$c" 5) |" \
                "$(med limit "c$c" 3) / $(med peer "c$c" 3) | $(med worker "c$c" 6) / $(med limit "c$c" 4) / $(med peer "c$c" 4) |"
        done
        echo
    fi
    if runs projector; then
        echo "## 2. Projector throughput (events/s)"
        echo
        echo "$PE events (a started and a succeeded event per command, $((PE / 2 / PR)) commands per release, $PR releases),"
        echo "preloaded on a fresh broker ($EV_PARTS partitions); helmq-projector with its defaults (batch 5000) into a fresh"
        echo "database; done when \`SELECT count(*) FROM helmq.applied_events\` (polled every 100 ms near the end, less often before: benchtool pgwait) reaches $PE."
        echo "COPY: the same final rows (checked equal with EXCEPT) into tables with the same columns and indexes."
        echo
        echo "Instances: helmq-projector processes in one consumer group (they share the partitions; each has"
        echo "its own PostgreSQL connection), the way the projection scales out."
        echo
        echo "| instances | projector (after 1st batch) | projector (from process start) | COPY | projector/COPY | start to 1st batch (s) | CPU s per 1,000 events: projector / PostgreSQL |"
        echo "|---|---|---|---|---|---|---|"
        for ninst in $PROJ_INSTANCES; do
            pj=$(med projector "i$ninst" 1)
            cp_=$(med projector "i$ninst" 3)
            echo "| $ninst | $(fmt0 "$pj") [$(vals projector "i$ninst" 1)] | $(fmt0 "$(med projector "i$ninst" 2)") |" \
                "$(fmt0 "$cp_") [$(vals projector "i$ninst" 3)] | $(ratio "$pj" "$cp_") | $(med projector "i$ninst" 5) |" \
                "$(med projector "i$ninst" 6) / $(med projector "i$ninst" 7) |"
        done
        echo
    fi
    if runs scale; then
        echo "## 3. Scale: $SCALE operations in flight (worker --concurrency $SCALE)"
        echo
        echo "| measure | median | repetitions |"
        echo "|---|---|---|"
        echo "| worker RSS idle (kB) | $(med scale rss 1) | $(vals scale rss 1) |"
        echo "| worker RSS with $SCALE helm processes running (kB) | $(med scale rss 2) | $(vals scale rss 2) |"
        echo "| RSS per in-flight operation (kB) | $(med scale rss 3) | $(vals scale rss 3) |"
        echo "| /metrics response p50 / p99, idle (ms) | $(med scale lat_idle 1) / $(med scale lat_idle 2) | $(vals scale lat_idle 2) |"
        echo "| /metrics p50 / p99, $SCALE parked in flight (ms) | $(med scale lat_parked 1) / $(med scale lat_parked 2) | $(vals scale lat_parked 2) |"
        echo "| /metrics p50 / p99, $SCALE in flight, 1 s helms completing (ms) | $(med scale lat_churn 1) / $(med scale lat_churn 2) | $(vals scale lat_churn 2) |"
        echo "| throughput during that churn (commands/s; ideal $SCALE) | $(fmt0 "$(med scale lat_churn 3)") | $(vals scale lat_churn 3) |"
        echo "| timeout SIGTERM lateness p50 / p99 (ms), $SCALE × timeout 2 s, grace 0 | $(med scale late 1) / $(med scale late 2) | p99: $(vals scale late 2) |"
        echo "| timeout lateness min / max (ms) | $(med scale late 3) / $(med scale late 4) | max: $(vals scale late 4) |"
        echo "| the worker's timer: SIGTERM after the deadline p50 / p99 / max (ms; its log, $SCALE timeouts) | $(med scale late_worker 1) / $(med scale late_worker 2) / $(med scale late_worker 3) | p99: $(vals scale late_worker 2) |"
        echo
    fi
    if runs latency; then
        echo "## 4. Latency: send → projection row visible (ms)"
        echo
        echo "A fixed rate for ${LAT_SECONDS}s, worker (concurrency 32) and projector (defaults) running, no-op helm;"
        echo "the row is the terminal event's in helmq.applied_events, polled every 5 ms."
        echo
        echo 'Kafka settings: `default` = librdkafka'"'"'s (fetch.wait.max.ms 500, which the embedded broker always waits out'
        echo 'when a fetch finds nothing); `fetchwait10` = `-X fetch.wait.max.ms=10` for the worker and the projector.'
        echo
        echo "| Kafka settings | commands/s | p50 | p99 | p99.9 | max | achieved send rate | p99 per repetition |"
        echo "|---|---|---|---|---|---|---|---|"
        for cfg in $LAT_CONFIGS; do
            for r in $LAT_RATES; do
                k=$cfg-r$r
                echo "| $cfg | $r | $(med latency "$k" 1) | $(med latency "$k" 2) | $(med latency "$k" 3) |" \
                    "$(med latency "$k" 4) | $(med latency "$k" 5) | $(vals latency "$k" 2) |"
            done
        done
        echo
    fi
    if runs memory; then
        echo "## 5. Worker memory over $LONG commands (concurrency 32)"
        echo
        echo "| RSS growth over the last 50% | RSS at 50% (kB) | RSS at the end (kB) | flat (< 10%)? | commands/s | growth per repetition (%) |"
        echo "|---|---|---|---|---|---|"
        g=$(med memory x 1)
        echo "| $g % | $(med memory x 2) | $(med memory x 3) | $(awk -v g="$g" 'BEGIN { print (g < 10 ? "yes" : "NO") }') |" \
            "$(fmt0 "$(med memory x 4)") | $(vals memory x 1) |"
        echo
        echo "Series of repetition 1 (commands done, ms since start, RSS kB, then the worker's gauges:" \
            "commands buffered, in flight, events unacknowledged):"
        echo
        echo '```'
        cat "$REPORT.memory-1.tsv"
        echo '```'
        echo
    fi
    if runs backlog; then
        echo "## 5b. A backlog of $BL_N commands buffered in the worker"
        echo
        echo "| bytes per buffered command | RSS empty (kB) | RSS with the backlog (kB) | commands buffered | per repetition (bytes) |"
        echo "|---|---|---|---|---|"
        echo "| $(med backlog x 1) | $(med backlog x 2) | $(med backlog x 3) | $(med backlog x 4) | $(vals backlog x 1) |"
        echo
    fi
    if runs realhelm; then
        echo "## 6. Real helm against the emulated cluster"
        echo
        echo "$RH_N installs of distinct releases of matih-ai-service 1.0.0 from the OCI registry, real helm 3.17 with"
        echo "\`--wait\` (readiness polled every 2 s) against the emulated Kubernetes API, one namespace per run."
        printf '%s\n' "Worker: from the first send to the last terminal event. Peer: \`kcat -C -e -f '%k\\n' | cut -d/ -f3 |"
        echo "xargs -P C -I{} helm install {} ...\` with the worker's own helm argv (\`helmq-worker argv\`), values in a file."
        echo "Each run has a fresh emulator (state, namespaces) and broker; the worker a fresh database. Both checked to leave"
        echo "$RH_N helm release Secrets (deployed, revision 1) and $RH_N ready Deployments in the emulator."
        echo
        echo "CPU ms per command (clock ticks of the process over the run / $RH_N): helm = the helm processes the worker"
        echo "(or xargs) reaped; worker = helmq-worker's own; emulator = the python process; machine = every process on the"
        echo "machine over the run (other users' included). Own share = (worker + PostgreSQL) / (all five named)."
        echo
        echo "| concurrency | worker (commands/s) | peer | worker/peer | worker CPU ms/command: helm / worker / PostgreSQL / emulator / registry | peer: helm (+xargs) / kcat+cut / emulator / registry | worker's own share | machine CPU ms/command: worker / peer | worker runs | peer runs |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        for c in $RH_CONCS; do
            w=$(med realhelm "worker-c$c" 1)
            p=$(med realhelm "peer-c$c" 1)
            wh=$(med realhelm "worker-c$c" 3)
            ww=$(med realhelm "worker-c$c" 4)
            wp=$(med realhelm "worker-c$c" 5)
            wk=$(med realhelm "worker-c$c" 6)
            wr=$(med realhelm "worker-c$c" 7)
            share=$(awk -v h="$wh" -v w="$ww" -v p="$wp" -v k="$wk" -v r="$wr" \
                'BEGIN { t = h + w + p + k + r; if (t == 0) print "n/a"; else printf "%.1f %%", (w + p) / t * 100 }')
            echo "| $c | $(fmt1 "$w") | $(fmt1 "$p") | $(ratio "$w" "$p") | $wh / $ww / $wp / $wk / $wr |" \
                "$(med realhelm "peer-c$c" 3) / $(med realhelm "peer-c$c" 4) / $(med realhelm "peer-c$c" 5) / $(med realhelm "peer-c$c" 6) |" \
                "$share | $(med realhelm "worker-c$c" 8) / $(med realhelm "peer-c$c" 7) |" \
                "$(vals realhelm "worker-c$c" 1) | $(vals realhelm "peer-c$c" 1) |"
        done
        echo
        printf 'Load average (1/5/15 min) at the end of each run (the machine is shared: other processes than these'
        printf ' count in the machine column and slow both contenders):'
        for c in $RH_CONCS; do
            printf ' c=%s worker %s, peer %s;' "$c" "$(vals realhelm "worker-c$c" 9)" "$(vals realhelm "peer-c$c" 8)"
        done
        echo
        echo
    fi
    echo "Embedded broker: a fresh helmq-broker (librdkafka mock cluster: ~5 MiB / 100,000 message sets kept per"
    echo "partition) per measurement, partitions sized so that every topic stays under ~2 MiB and 20,000 records per"
    echo "partition (worker runs $CMD_PARTS, projector $EV_PARTS); low watermarks checked to be 0 after the runs that read"
    echo "everything back. The memory run paces its sender (at most ~2 chunks of 5,000 commands ahead of the worker)."
} >"$REPORT"
cat "$REPORT"
say "report: $REPORT"
