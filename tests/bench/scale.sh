# shellcheck shell=bash
# tests/bench/scale.sh: sections 3 to 5b of tests/bench/bench.sh (1,000 operations in
# flight, send-to-projection latency, memory over a long run, a large backlog).
# Sourced by bench.sh after its settings and bench_init; not run alone.

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
    # Only the operation hangs: since the worker rolls a timed-out install back (helm uninstall,
    # its own deadline), a hanging uninstall would be a second SIGTERM with another deadline.
    HELMQ_TIMEOUT_GRACE_MS=0 NOOP_HELM_STATE=$T/state/$ns NOOP_HELM_HANG=1 NOOP_HELM_HANG_VERBS="install upgrade" \
        NOOP_HELM_HANG_LOG=$T/hang.log \
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

