# shellcheck shell=bash
# tests/bench/throughput.sh: sections 1 and 2 of tests/bench/bench.sh (worker throughput
# beside the spawn limit and the kcat | xargs peer; projector throughput beside COPY).
# Sourced by bench.sh after its settings and bench_init; not run alone.

# --- 1. worker throughput ------------------------------------------------------------------
CMD_PARTS=$(partitions_for "$N" 400)
EV_PARTS_NEEDED=$(partitions_for $((N * 2)) 700)
[ "$EV_PARTS_NEEDED" -gt "$CMD_PARTS" ] && CMD_PARTS=$EV_PARTS_NEEDED

worker_run() { # worker_run CONC REP
    local c=$1 rep=$2 tag ns out prod w0 p0 b0 m0 w1 p1 b1 m1 wf0 wf1 pf0 pf1 ksys kflt first last tput
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
    psql -X -q -d postgres -c "SELECT pg_stat_statements_reset()" -c "SELECT pg_stat_reset_shared('wal')" \
        >/dev/null || die "pg_stat_statements_reset"
    psql -X -q -d bench_worker -c "SELECT pg_stat_reset()" >/dev/null || die "pg_stat_reset"
    kcount_start
    w0=$(cpu_ticks "$WORKER_PID")
    p0=$(pg_ticks)
    wf0=$(minflt "$WORKER_PID")
    pf0=$(pg_minflt)
    b0=$(cpu_ticks "$BROKER_PID")
    m0=$(machine_ticks)
    prod=$("$BT" commands -b "$B" --count "$N" --keys "$KEYS" --ns "$ns" --tag "$tag")
    wait $wpid
    untrack $wpid
    m1=$(machine_ticks)
    kcount_stop
    ksys=$KSYS kflt=$KFLT
    w1=$(cpu_ticks "$WORKER_PID")
    p1=$(pg_ticks)
    b1=$(cpu_ticks "$BROKER_PID")
    wf1=$(minflt "$WORKER_PID")
    pf1=$(pg_minflt)
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
        "$(per1k $((b1 - b0)) "$N")" "$(per1k $((m1 - m0)) "$N")" \
        "$(per_cmd $((wf1 - wf0)) "$N")" "$(per_cmd $((pf1 - pf0)) "$N")" "$(per_cmd "$ksys" "$N")" \
        "$(per_cmd "$kflt" "$N")"
    say "worker    c=$c rep $rep: $tput commands/s ($N in ${secs}s)"
    worker_stop
    pg_statements "c$c" # after the worker's sessions ended: their function counts are flushed
    broker_stop
    rm -rf "$T/state/$ns" "$T/worker-$ns.log"
}

limit_run() { # limit_run CONC REP
    local c=$1 rep=$2 ns out m0 m1 ksys kflt
    ns=bl-$(next_tag)
    mkdir -p "$T/state/$ns"
    kcount_start
    m0=$(machine_ticks)
    out=$(NOOP_HELM_STATE=$T/state/$ns "$BIN/spawn-limit" -n "$N" -c "$c" -k "$KEYS" -s "$ns" "$NOOP") ||
        die "spawn-limit: $out"
    m1=$(machine_ticks)
    kcount_stop
    ksys=$KSYS kflt=$KFLT
    raw limit "c$c" "$(kv per_second "$out")" "$(kv seconds "$out")" \
        "$(awk -v t="$(kv cpu_seconds "$out")" -v n="$N" 'BEGIN { printf "%.2f", t / n * 1000 }')" \
        "$(per1k $((m1 - m0)) "$N")" "$(per_cmd "$(kv minflt "$out")" "$N")" "$(per_cmd "$ksys" "$N")" \
        "$(per_cmd "$kflt" "$N")"
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
    kcount_start
    m0=$(machine_ticks)
    t0=$(now_ms)
    # In a subshell that reaps kcat and xargs (and, through xargs, every helm):
    # its children's CPU time is the peer's.
    own=$(
        kcat -C -b "$B" -t helm.release.commands -e -q -f '%k\n' 2>/dev/null |
            NOOP_HELM_STATE=$T/state/$ns xargs -P "$c" -n1 "$NOOP" install >/dev/null
        me=$BASHPID # this subshell's (a command substitution below would be another)
        echo "$(cpu_ticks "$me") $(minflt "$me")"
    )
    local faults=${own#* }
    own=${own%% *}
    t1=$(now_ms)
    m1=$(machine_ticks)
    local ksys kflt
    kcount_stop
    ksys=$KSYS kflt=$KFLT
    local done_keys
    done_keys=$(find "$T/state/$ns" -type f | wc -l)
    [ "$done_keys" = "$KEYS" ] || die "peer: $done_keys of $KEYS releases installed"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    tput=$(awk -v n="$N" -v s="$secs" 'BEGIN { printf "%.1f", n / s }')
    raw peer "c$c" "$tput" "$secs" "$(per1k "$own" "$N")" "$(per1k $((m1 - m0)) "$N")" "$(per_cmd "$faults" "$N")" \
        "$(per_cmd "$ksys" "$N")" "$(per_cmd "$kflt" "$N")"
    say "peer      c=$c rep $rep: $tput commands/s"
    broker_stop
    rm -rf "$T/state/$ns"
}

# pg_statements KEY: the worker run's statements and ledger functions, from pg_stat_statements
# (top-level statements: calls, execution ms) and pg_stat_user_functions (self ms), appended to
# $T/pgstat-KEY.tsv as "kind calls ms text" for the report (bench.sh sums them over repetitions).
pg_statements() {
    psql -X -q -tA -F $'\t' -d bench_worker -c "
        SELECT 'statement', calls, round(total_exec_time::numeric, 3),
               left(regexp_replace(query, '\s+', ' ', 'g'), 90)
          FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        UNION ALL
        SELECT 'function', calls, round(self_time::numeric, 3), schemaname || '.' || funcname
          FROM pg_stat_user_functions" >>"$T/pgstat-$1.tsv" 2>>"$T/pgstat.err" ||
        say "pg_stat_statements unavailable: $(tail -1 "$T/pgstat.err")"
    # The ledger's tables: rows inserted, updated, updated HOT (no index entry), deleted.
    psql -X -q -tA -F $'\t' -d bench_worker -c "
        SELECT schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
          FROM pg_stat_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0" >>"$T/pgtab-$1.tsv" 2>>"$T/pgstat.err"
    # Transactions committed in the worker's database and the server's WAL since the reset at the
    # run's start: how the ledger's statements were grouped, and what each group's commit wrote.
    psql -X -q -tA -F $'\t' -d bench_worker -c "
        SELECT d.xact_commit + d.xact_rollback, w.wal_records, w.wal_bytes, w.wal_write, w.wal_sync
          FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()" \
        >>"$T/pgxact-$1.tsv" 2>>"$T/pgstat.err"
}

# BENCH_LEDGER_ROWS=N: the ledger holds N finished commands of other releases
# before a worker run (issue 25: per-command cost against the ledger's size).
ledger_fill() { # ledger_fill DB ROWS
    local t0
    t0=$(now_ms)
    psql -X -q -v ON_ERROR_STOP=1 -d "$1" -c "SET synchronous_commit = off" -c "
        INSERT INTO helmq_worker.commands (command_id, release_key, operation, state, source_topic,
            source_partition, source_offset, release_id, base_revision, base_deployed, outcome, terminal_event,
            received_at, started_at, finished_at, content_digest)
        SELECT md5('ledger-' || i)::uuid, 'ledger-' || (i % 10000) || '/ns-' || (i % 10000) || '/rel-' || (i % 1000000),
               CASE WHEN i % 20 = 0 THEN 'install' ELSE 'upgrade' END, 'finished', 'helm.release.commands',
               i % 64, i, md5('ledger-release-' || (i % 1000000))::uuid, i / 1000000, i / 1000000,
               'UPGRADE_SUCCEEDED', decode(repeat(md5(i::text), 8), 'hex'),
               now() - interval '30 days' + i * interval '100 ms', now() - interval '30 days' + i * interval '100 ms',
               now() - interval '30 days' + i * interval '100 ms', md5('digest-' || i)
          FROM generate_series(1, $2) i" -c "VACUUM (ANALYZE) helmq_worker.commands" ||
        die "ledger_fill $2"
    say "ledger: $2 finished commands in $(( ($(now_ms) - t0) / 1000 )) s," \
        "$(psql -X -tA -d "$1" -c "SELECT pg_size_pretty(pg_total_relation_size('helmq_worker.commands'))")"
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
            [ "${BENCH_LEDGER_ROWS:-0}" -gt 0 ] && ledger_fill bench_worker "$BENCH_LEDGER_ROWS"
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

