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
#   BENCH_LEDGER_ROWS=N        worker throughput: the ledger holds N finished commands before each run
#   BENCH_PGSS_TRACK=all       pg_stat_statements also counts the statements inside the ledger functions
#   BENCH_SQL="ALTER TABLE …"  run in every benchmark database after its migrations (to try a schema change)
#   BENCH_ONLY=scaleapi        (not in the default set; also run when SCALE_RELEASES or SCALE_SMALL is set)
#                              helmq-api's reads on a generated projection, 1,000,000 releases and
#                              20,000,000 history rows by default (tests/bench/scale-api; SCALE_SMALL=1 for
#                              a quick run; the data is kept in build/bench/scale-pg between runs)
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
# How fast the machine is right now (compute, a page fault, a spawn), at the start and the
# end: on a virtual machine these move between runs, and every CPU figure below with them.
CALIB_START=$("$BIN/calib" "$NOOP") || die "calib"
say "machine: $CALIB_START"

# The records bench tools write are helmq's: the same bytes as `helmq encode`.
"$BT" sample-command --ns bench-check --index 1001 >"$T/sample.json"
"$BIN/helmq" encode <"$T/sample.json" >"$T/sample.helmq" || die "helmq encode refused the benchmark's command"
"$BT" encode <"$T/sample.json" >"$T/sample.bt"
cmp -s "$T/sample.helmq" "$T/sample.bt" || die "benchtool and helmq encode disagree"

# The sections, in the order they run (each is `if runs SECTION; then ... fi`).
. "$(dirname "$0")/throughput.sh"
. "$(dirname "$0")/scale.sh"
. "$(dirname "$0")/realhelm.sh"
# Cost as the data grows: self-contained (its own PostgreSQL and data), long at full size.
if runs scaleapi || [ -n "${SCALE_RELEASES:-}${SCALE_SMALL:-}" ]; then
    say "scaleapi: helmq-api on a generated projection (tests/bench/scale-api)"
    HELMQ_BIN=$HELMQ_BIN bash "$(dirname "$0")/scale-api" >"$REPORT.scaleapi.md" || die "scale-api failed"
fi

CALIB_END=$("$BIN/calib" "$NOOP") || die "calib"

# pg_table KEY: the statements and ledger functions of the worker runs KEY, summed over the
# repetitions, per command and per 1,000 commands, largest first.
pg_table() {
    [ -s "$T/pgstat-$1.tsv" ] || { echo "(no pg_stat_statements figures)"; return; }
    echo "| kind | statement or function | calls per command | µs per call | ms per 1,000 commands |"
    echo "|---|---|---|---|---|"
    awk -F'\t' -v n=$((N * REPS)) '{ k = $1 "\t" $4; calls[k] += $2; ms[k] += $3 }
        END { for (k in ms) { split(k, a, "\t"); t = a[2]; gsub(/\|/, "\\|", t);
              printf "%.3f\t| %s | `%s` | %.2f | %.1f | %.1f |\n", ms[k], a[1], t, calls[k] / n,
                  calls[k] ? ms[k] * 1000 / calls[k] : 0, ms[k] / n * 1000 } }' "$T/pgstat-$1.tsv" |
        sort -t$'\t' -k1,1gr | head -n 12 | cut -f2-
}

# pg_tables KEY: the worker runs' table writes per command, summed over the repetitions.
pg_tables() {
    [ -s "$T/pgtab-$1.tsv" ] || return 0
    echo
    echo "| table | rows inserted per command | updated | of which HOT (no index entries) | deleted |"
    echo "|---|---|---|---|---|"
    awk -F'\t' -v n=$((N * REPS)) '{ i[$1] += $2; u[$1] += $3; h[$1] += $4; d[$1] += $5 }
        END { for (t in i) if ((i[t] + u[t] + d[t]) / n >= 0.005)
              printf "| %s | %.2f | %.2f | %.0f %% | %.2f |\n", t, i[t] / n, u[t] / n,
              u[t] ? h[t] * 100 / u[t] : 0, d[t] / n }' "$T/pgtab-$1.tsv" | sort
}

# pg_xacts KEY: the worker runs' transactions and WAL per 1,000 commands, summed over the repetitions.
pg_xacts() {
    [ -s "$T/pgxact-$1.tsv" ] || { echo "| n/a | | | | | |"; return 0; }
    awk -F'\t' -v n=$((N * REPS)) '{ x += $1; r += $2; b += $3; w += $4; f += $5 }
        END { printf "| %.0f | %.1f | %.0f | %.0f | %.0f | %.0f |\n", x * 1000 / n, x ? n / x : 0,
              r * 1000 / n, b / n, w * 1000 / n, f * 1000 / n }' "$T/pgxact-$1.tsv"
}

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
    echo "| machine speed at the start (\`calib\`) | $CALIB_START |"
    echo "| machine speed at the end | $CALIB_END |"
    echo "| helmq | $(git -C "$BENCH_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$BENCH_ROOT" diff --quiet HEAD 2>/dev/null || echo ' (working tree modified)') |"
    echo "| repetitions | $REPS (medians; every repetition's value in brackets where useful) |"
    echo
    echo "## The targets (issues 7 and 25) beside this run"
    echo
    bash "$(dirname "$0")/targets.sh" "$REPORT" || echo "(tests/bench/targets.sh failed)"
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
        echo "\`calib\` (top table): cpu_ms = a fixed integer loop; fault_us = the first touch of a fresh 4 KiB page;"
        echo "mem_ns = a cache-missing load; syscall_ns = an empty system call; spawn_us = CPU of one spawn, exit and"
        echo "reap of the no-op helm, one at a time; spawn_faults = its page faults. All are CPU time, not wall time."
        echo "A command's CPU moves with its system calls (times syscall_ns), its page faults (times fault_us), its"
        echo "processes' births and deaths (spawn_us) and its memory traffic (mem_ns): compare the counts below and"
        echo "calib's figures before comparing CPU figures of runs taken at different times."
        echo
        echo "### 1b. Where a command's CPU goes: page faults, PostgreSQL's statements"
        echo
        echo "| concurrency | minor page faults per command: worker (+helm) / PostgreSQL / limit (+helm) / peer (kcat+xargs+helm) | the whole machine per command (\`perf stat -a\`): system calls, worker / limit / peer | page faults, worker / limit / peer |"
        echo "|---|---|---|---|"
        for c in $CONCS; do
            echo "| $c | $(med worker "c$c" 7) / $(med worker "c$c" 8) / $(med limit "c$c" 5) / $(med peer "c$c" 5) |" \
                "$(med worker "c$c" 9) / $(med limit "c$c" 6) / $(med peer "c$c" 6) |" \
                "$(med worker "c$c" 10) / $(med limit "c$c" 7) / $(med peer "c$c" 7) |"
        done
        echo
        echo "PostgreSQL during the worker runs (pg_stat_statements, top-level statements: execution time; ledger"
        echo "functions from pg_stat_user_functions: time in the function itself), over every repetition:"
        echo
        echo "The ledger's transactions (one per group of pipelined statements; a command's statements fall in several) and"
        echo "the server's WAL during the worker runs, per 1,000 commands (pg_stat_database, pg_stat_wal):"
        echo
        echo "| concurrency | transactions | commands per transaction | WAL records | WAL bytes per command | WAL writes | WAL fsyncs |"
        echo "|---|---|---|---|---|---|---|"
        for c in $CONCS; do
            echo "| $c $(pg_xacts "c$c")"
        done
        for c in $CONCS; do
            echo
            echo "Concurrency $c:"
            echo
            pg_table "c$c"
            pg_tables "c$c"
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
    if [ -f "$REPORT.scaleapi.md" ]; then
        echo "## 7. Cost as the data grows: helmq-api's reads on a generated projection"
        echo
        cat "$REPORT.scaleapi.md"
        echo
    fi
    echo "Embedded broker: a fresh helmq-broker (librdkafka mock cluster: ~5 MiB / 100,000 message sets kept per"
    echo "partition) per measurement, partitions sized so that every topic stays under ~2 MiB and 20,000 records per"
    echo "partition (worker runs $CMD_PARTS, projector $EV_PARTS); low watermarks checked to be 0 after the runs that read"
    echo "everything back. The memory run paces its sender (at most ~2 chunks of 5,000 commands ahead of the worker)."
} >"$REPORT"
cat "$REPORT"
say "report: $REPORT"
