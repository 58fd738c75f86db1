#!/usr/bin/env bash
# tests/faults/run.sh: the fault-injection suite. See tests/faults/README.md.
#
#   tests/faults/run.sh [--long] [--runs N] [--only SCENARIO[,SCENARIO...]] [--results FILE]
#
# Short form (default): kill -9 of the worker 3 times, and each other scenario once.
# --long (or RUNS=50 in the environment): 50 kill -9 runs (--runs N: N runs).
# Each scenario prints a RESULT line; the suite ends with a summary table and exits 1
# when an invariant failed (the logs are then kept in build/faults/).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LONG=0
ONLY=
while [ $# -gt 0 ]; do
    case $1 in
    --long) LONG=1 ;;
    --runs) RUNS=$2; shift ;;
    --only) ONLY=$2; shift ;;
    --results) FQ_RESULTS_COPY=$2; shift ;;
    -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ -n "${RUNS:-}" ] && [ "$RUNS" -gt 3 ]; then LONG=1; fi
RUNS=${RUNS:-$([ "$LONG" = 1 ] && echo 50 || echo 3)}
KEYS=${FQ_KEYS:-30} # release keys per load: 4 commands each
K9_KEYS=${FQ_KEYS:-$([ "$LONG" = 1 ] && echo 30 || echo 20)} # per kill9 run (shorter in the short form)
RH_RUNS=${FQ_RH_RUNS:-$([ "$LONG" = 1 ] && echo 12 || echo 4)} # realhelm runs: each fault once, or 3 times
RH_KEYS=${FQ_RH_KEYS:-8}                                          # release keys per realhelm run
RL_PASSES=${FQ_RL_PASSES:-$([ "$LONG" = 1 ] && echo 4 || echo 1)}  # rolling passes (3 restarts each)
RL_KEYS=${FQ_RL_KEYS:-6}                                          # release keys per wave of a rolling pass

want() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
rand_ms() { echo $((RANDOM % ($2 - $1 + 1) + $1)); } # MIN MAX
sleep_ms() { sleep "$(awk -v m="$1" 'BEGIN { printf "%.3f", m / 1000 }')"; }
say() { echo "[$(date +%H:%M:%S)] $*"; }

# Some releases of a load are slow (helm takes seconds), so that a fault often
# lands while helm runs.
slow_knobs() { # TAG COUNT SECONDS
    local tag=$1 count=$2 secs=$3
    awk -v n="$count" '$1 == 1 && c < n { print $3, $5; c++ }' "$T/plan.$tag" | while read -r ns rel; do
        sim_knob "$ns" "$rel" "{\"any\": {\"sleep\": $secs}}"
    done
}

# (a) kill -9 of the worker at a random moment of the load, then a restart. Odd
# runs leave its helm children running (they finish, the restarted worker
# reconciles); even runs kill their process groups too.
scenario_kill9() {
    fq_scenario_begin kill9
    local run tag delay n left=0 killed=0 faults=0
    fq_worker_start w1
    fq_worker_wait_assigned w1 || return 1
    for run in $(seq 1 "$RUNS"); do
        tag=r$run
        fq_plan "$tag" "k9r$run" "$K9_KEYS" "$run"
        slow_knobs "$tag" 3 "${FQ_SLOW:-$((RANDOM % 12 + 2))}"
        fq_send_bg "$tag"
        delay=$(rand_ms 500 $((K9_KEYS * 300))) # after the load started: it takes ~0.5 s per key
        sleep_ms "$delay"
        if [ $((run % 2)) = 1 ]; then
            fq_worker_kill9 w1 leave
            n=$FQ_KILL_N left=$((left + FQ_KILL_N))
        else
            fq_worker_kill9 w1 kill
            n=$FQ_KILL_N killed=$((killed + FQ_KILL_N))
        fi
        faults=$((faults + 1))
        sleep_ms "$(rand_ms 0 1500)"
        fq_worker_start w1
        fq_send_wait
        fq_wait_done 240 "$tag"
        fq_check "$tag"
        if [ "$run" = "$RUNS" ] || [ $((run % 10)) = 0 ] || [ "$LONG" = 0 ]; then
            fq_rebuild_check
        fi
        say "kill9 run $run/$RUNS: kill -9 ${delay} ms into the load ($([ $((run % 2)) = 1 ] && echo "$n helm left running" || echo "$n helm groups killed")); $FQ_R_COMMANDS commands: lost $FQ_R_LOST, dup-helm $FQ_R_DUP, missing $FQ_R_MISSING, extra $FQ_R_EXTRA, mismatches $FQ_R_MISMATCH; $FQ_R_OUTCOMES"
    done
    fq_result kill9 "$RUNS" "$faults" "kill -9 of the worker; $left helm processes left running, $killed helm groups killed"
    fq_scenario_end
}

# (b) the broker goes away: two outages (5 s, shorter than the 6 s session
# timeout, and 8 s, longer: the group forgets the worker), commands sent while
# it is down.
scenario_broker_outage() {
    fq_scenario_begin broker-outage
    fq_worker_start w1
    fq_worker_wait_assigned w1 || return 1
    fq_plan o1 bo1 "$KEYS" 0
    fq_plan o2 bo2 10 1
    fq_send_bg o1
    local first=$FQ_SENDER
    sleep 3
    brokerctl down all >/dev/null
    say "broker-outage: broker down for 5 s; sending 40 more commands meanwhile"
    fq_send_bg o2
    sleep 5
    brokerctl up all >/dev/null
    wait "$first"
    fq_send_wait
    sleep 3
    brokerctl down all >/dev/null
    say "broker-outage: broker down for 8 s"
    sleep 8
    brokerctl up all >/dev/null
    fq_wait_done 240
    fq_check ""
    fq_rebuild_check
    fq_result broker-outage 1 2 "outages of 5 s and 8 s (all brokers down); 40 commands sent during the first; $FQ_R_OUTCOMES"
    fq_scenario_end
}

# (b) request errors and latency from the broker: Produce, Fetch, OffsetCommit,
# Heartbeat, JoinGroup and Metadata errors, dropped connections, a slow broker.
scenario_broker_errors() {
    fq_scenario_begin broker-errors --brokers 3
    # One Produce request in flight per connection. The mock cluster does not check
    # the idempotent producer's sequence numbers (librdkafka 2.0.2 checks them only
    # for transactional producers), so when an injected error fails request R1 while
    # R2 is in flight, the mock appends R2 anyway; librdkafka then "implicitly acks"
    # R1's messages (a real broker would have refused R2 as out of order) and
    # reports them delivered although they never reached the log.
    fq_worker_start w1 -X max.in.flight.requests.per.connection=1
    fq_worker_wait_assigned w1 || return 1
    fq_plan e1 be1 "$KEYS" 0
    fq_send_bg e1
    sleep 1
    local f=0 c
    for c in "errors Produce NOT_LEADER_FOR_PARTITION 20" "errors OffsetCommit NOT_COORDINATOR 5" \
        "errors Fetch NOT_LEADER_FOR_PARTITION 10" "errors Produce _TRANSPORT 3" \
        "errors OffsetCommit REQUEST_TIMED_OUT 5" "errors Heartbeat REBALANCE_IN_PROGRESS 2" \
        "errors JoinGroup COORDINATOR_LOAD_IN_PROGRESS 3" "errors Produce REQUEST_TIMED_OUT 10" \
        "errors Metadata LEADER_NOT_AVAILABLE 5" "rtt all 400" "broker-errors 2 Produce NOT_ENOUGH_REPLICAS 10 50"; do
        sleep 0.7
        # shellcheck disable=SC2086
        brokerctl $c >/dev/null || echo "brokerctl $c failed" >&2
        f=$((f + 1))
    done
    say "broker-errors: $f injections; broker slow (400 ms) for 4 s"
    sleep 4
    brokerctl rtt all 0 >/dev/null
    fq_send_wait
    fq_wait_done 240
    brokerctl clear >/dev/null
    fq_check ""
    fq_rebuild_check
    fq_result broker-errors 1 "$f" "3 brokers, worker with max.in.flight=1; error stacks on Produce, Fetch, OffsetCommit, Heartbeat, JoinGroup, Metadata; dropped connections; 400 ms rtt; $FQ_R_OUTCOMES"
    fq_scenario_end
}

# (c) PostgreSQL stopped (fast shutdown) and, later, killed (immediate) under
# load; the worker and the projector both reconnect.
scenario_pg() {
    fq_scenario_begin pg-restart
    # tests/lib/pg.sh runs PostgreSQL with synchronous_commit=off (fast tests): an
    # immediate shutdown would then lose commits it had acknowledged, which no
    # production server does. Make commits durable (postgresql.auto.conf wins).
    psql_q "ALTER SYSTEM SET synchronous_commit = on" >/dev/null && psql_q "SELECT pg_reload_conf()" >/dev/null
    fq_worker_start w1
    fq_worker_wait_assigned w1 || return 1
    fq_plan p1 pg1 "$KEYS" 0
    fq_send_bg p1
    sleep 3
    say "pg-restart: PostgreSQL stopped for 4 s"
    pg_stop "$T/pg" >/dev/null 2>&1
    sleep 4
    pg_start "$T/pg" >/dev/null 2>&1 || echo "PostgreSQL did not start again" >&2
    sleep 2
    say "pg-restart: PostgreSQL killed (immediate shutdown) for 3 s"
    pg_kill "$T/pg" >/dev/null 2>&1
    sleep 3
    pg_start "$T/pg" >/dev/null 2>&1 || echo "PostgreSQL did not start again" >&2
    fq_send_wait
    fq_wait_done 240
    fq_check ""
    fq_rebuild_check
    fq_result pg-restart 1 2 "fast shutdown for 4 s, then immediate shutdown for 3 s; $FQ_R_OUTCOMES"
    fq_scenario_end
}

# (d) three workers in one group: two start, a third joins mid-load (a
# rebalance), then one is killed -9 (its partitions move to the others; its
# helm children are left running).
scenario_workers() {
    fq_scenario_begin workers
    fq_worker_start w1
    fq_worker_start w2
    fq_worker_wait_assigned w1 && fq_worker_wait_assigned w2 || return 1
    fq_plan g1 wg1 "$((KEYS + KEYS / 2))" 0
    slow_knobs g1 4 3
    fq_send_bg g1
    sleep 2
    say "workers: a third worker joins"
    fq_worker_start w3
    fq_worker_wait_assigned w3 30
    # kill worker 2 while it runs helm (after the rebalance gave it partitions again)
    local end=$((SECONDS + 15))
    while [ "$SECONDS" -lt "$end" ] && [ -z "$(ps -o pid= --ppid "${FQ_WPID[w2]}" 2>/dev/null)" ]; do sleep 0.2; done
    sleep_ms "$(rand_ms 0 1000)"
    fq_worker_kill9 w2 leave
    say "workers: worker 2 killed -9 ($FQ_KILL_N helm processes left running)"
    fq_send_wait
    fq_wait_done 240
    fq_check ""
    fq_rebuild_check
    fq_result workers 1 2 "3 workers, 6 partitions: one joins mid-load, one is killed -9 ($FQ_KILL_N helm left running); $FQ_R_OUTCOMES"
    fq_scenario_end
}

# (e) helm misbehaving: hanging (with and without honouring SIGTERM) past short
# timeouts, crashing (exit 2, release left pending-*), failing; then the next
# commands on those releases (unlocking stale pending-* releases).
scenario_helm() {
    fq_scenario_begin helm-faults
    fq_worker_start w1
    fq_worker_wait_assigned w1 || return 1
    fq_plan h1 hf1 "$KEYS" 0
    local i=0 ns rel knob n=0
    while read -r ns rel; do
        case $((i % 8)) in
        0) knob='{"install": {"hang": true}}' ;;
        1) knob='{"upgrade": {"hang": true, "ignore_term": true}}' ;;
        2) knob='{"install": {"crash": true}}' ;;
        3) knob='{"upgrade": {"crash": true}}' ;;
        4) knob='{"rollback": {"hang": true}, "upgrade": {"fail": "simulated hook failure"}}' ;;
        5) knob='{"uninstall": {"hang": true}}' ;;
        6) knob='{"any": {"crash": true}}' ;;
        *) knob= ;;
        esac
        if [ -n "$knob" ]; then sim_knob "$ns" "$rel" "$knob"; n=$((n + 1)); fi
        i=$((i + 1))
    done < <(awk '$1 == 1 { print $3, $5 }' "$T/plan.h1")
    FQ_EXTRA_ARGS="--timeout 3" fq_send h1
    say "helm-faults: $n releases with a hanging or crashing helm (timeout 3 s)"
    fq_wait_done 300
    fq_check ""
    fq_rebuild_check
    local hung crashed
    hung=$(cat "$T"/worker.*.log | grep -c 'passed its deadline: SIGTERM')
    crashed=$(jq -c 'select(.event == "end" and .crash == true)' "$HELM_SIM_STATE/invocations.log" | wc -l)
    fq_result helm-faults 1 "$((hung + crashed))" "$n releases with knobs: $hung helm processes stopped at their deadline, $crashed crashed; $FQ_R_OUTCOMES"
    fq_scenario_end
}

# (g) REAL helm 3.17 against the emulated Kubernetes API (tests/kube/, RBAC as
# docs/rbac/ sets it up, each tenant's helm impersonating its service account) and
# charts from the real OCI registry. Run after run, one fault lands mid-load:
# kill -9 of the worker while real helm waits (the 1st, 3rd, ... kill leaves helm
# running, the 2nd, 4th, ... kills its process groups), the API server down for 10 s, the registry down
# for 10 s. Besides the invariants of every scenario (helm's runs counted by
# tests/faults/helm-logged), the cluster must agree with helm's storage
# (tests/faults/helm_storage.py: no release left pending-*, a Deployment for every
# deployed release and none for another) and helm's storage with the ledger and
# the projection.
scenario_realhelm() {
    fq_scenario_begin realhelm
    fq_cluster_begin || return 1
    local run tag delay fault faults=0 k9=0 k9_left=0 k9_killed=0 k9_kruns=0 kube=0 reg=0 cluster=0
    fq_worker_start w1
    fq_worker_wait_assigned w1 || return 1
    for run in $(seq 1 "$RH_RUNS"); do
        tag=rh$run
        fq_plan "$tag" "rh$run" "$RH_KEYS" "$run"
        fq_send_bg "$tag"
        delay=$(rand_ms 1500 6000)
        sleep_ms "$delay"
        case $(((run - 1) % 4)) in
        0 | 2)
            # The kills fall on runs 1, 3, 5, ...: alternate on the kill's own count,
            # so the first leaves real helm running and the second kills its groups.
            if [ $((k9 % 2)) = 0 ]; then
                fq_worker_kill9 w1 leave
                fault="kill -9 of the worker ($FQ_KILL_N helm left running)"
                k9_left=$((k9_left + FQ_KILL_N))
            else
                fq_worker_kill9 w1 kill
                fault="kill -9 of the worker ($FQ_KILL_N helm groups killed)"
                k9_killed=$((k9_killed + FQ_KILL_N))
                k9_kruns=$((k9_kruns + 1))
            fi
            k9=$((k9 + 1))
            sleep_ms "$(rand_ms 0 1500)"
            fq_worker_start w1
            ;;
        1)
            kube_stop
            sleep 10
            kube_restart >>"$T/cluster.log" 2>&1 || echo "fault suite: the emulator did not come back" >&2
            fault="the API server down for 10 s"
            kube=$((kube + 1))
            ;;
        3)
            registry_stop
            sleep 10
            registry_restart >>"$T/cluster.log" 2>&1 || echo "fault suite: the registry did not come back" >&2
            fault="the chart registry down for 10 s"
            reg=$((reg + 1))
            ;;
        esac
        faults=$((faults + 1))
        fq_send_wait
        fq_wait_done 400 "$tag"
        fq_cluster_check "$tag" "rh$run-"
        cluster=$((cluster + FQ_R_CLUSTER))
        say "realhelm run $run/$RH_RUNS: $fault ${delay} ms into the load; $FQ_R_COMMANDS commands: lost $FQ_R_LOST, dup-helm $FQ_R_DUP, missing $FQ_R_MISSING, extra $FQ_R_EXTRA, mismatches $FQ_R_MISMATCH, cluster vs helm storage $FQ_R_CLUSTER; $FQ_R_OUTCOMES"
    done
    fq_rebuild_check
    fq_result realhelm "$RH_RUNS" "$faults" "real helm: $k9 kill -9 of the worker ($((k9 - k9_kruns)) leaving $k9_left helm running, $k9_kruns killing $k9_killed helm groups too), API server down $kube x 10 s, registry down $reg x 10 s; cluster vs helm's storage: $cluster problems"
    fq_worker_stop w1
    fq_scenario_end
}

# (h) a rolling restart of a 3-worker group under load, as an operator upgrades
# helmq: with REAL helm as in (g), each worker in turn gets SIGTERM (it drains:
# commands whose helm started finish, those waiting for a slot are given back),
# exits, and starts again — from a copy of the binary on odd passes, the original
# on even ones, the same code at another path — and the next one follows once
# it has partitions again. The load goes on throughout: waves of release keys,
# a new one whenever the wave before the last has finished. Besides the
# invariants of (g): every graceful stop exits 0; SIGTERM-to-exit times are
# printed.
rl_load() { # PASS: waves rlPASS.N (releases rlPASSwN-*) until $T/roll.done.PASS exists
    local pass=$1 wave=0 end
    while [ ! -e "$T/roll.done.$pass" ]; do
        wave=$((wave + 1))
        end=$((SECONDS + 180))
        while [ "$wave" -gt 2 ] && [ ! -e "$T/roll.done.$pass" ] && [ "$SECONDS" -lt "$end" ] &&
            [ "$(psql_q "select count(*) from helmq_worker.commands where state = 'finished'
                          and release_key like '%/rl${pass}w$((wave - 2))-%'" 2>/dev/null)" != $((RL_KEYS * 4)) ]; do
            sleep 0.5
        done
        [ -e "$T/roll.done.$pass" ] && break
        fq_plan "rl$pass.$wave" "rl${pass}w$wave" "$RL_KEYS" "$wave"
        fq_send "rl$pass.$wave"
    done
}

scenario_rolling() {
    fq_scenario_begin rolling
    fq_cluster_begin || return 1
    local pass w n bin kids inflight given loader waves faults=0 bad=0 drains=0 times=() rejoin=() cluster=0
    mkdir -p "$T/upgrade" && cp "$HELMQ_BIN/helmq-worker" "$T/upgrade/helmq-worker" || return 1
    for w in w1 w2 w3; do fq_worker_start "$w"; done
    for w in w1 w2 w3; do fq_worker_wait_assigned "$w" || return 1; done
    for pass in $(seq 1 "$RL_PASSES"); do
        bin=$([ $((pass % 2)) = 1 ] && echo "$T/upgrade" || echo "$HELMQ_BIN")
        rl_load "$pass" &
        loader=$!
        sleep 3
        for w in w1 w2 w3; do
            # SIGTERM while it runs helm (when it gets some within 15 s)
            n=$((SECONDS + 15))
            while [ "$SECONDS" -lt "$n" ] && [ -z "$(ps -o pid= --ppid "${FQ_WPID[$w]}" 2>/dev/null)" ]; do sleep 0.2; done
            kids=$(ps -o pid= --ppid "${FQ_WPID[$w]}" 2>/dev/null | grep -c .)
            fq_worker_term "$w" 120
            times+=("$FQ_TERM_MS")
            inflight=$(sed -n 's/.*waiting for \([0-9]*\) in flight.*/\1/p' "${FQ_WLOG[$w]}" | head -1)
            given=$(grep -c 'given back before its helm ran' "${FQ_WLOG[$w]}")
            if grep -q 'drain timeout' "${FQ_WLOG[$w]}"; then drains=$((drains + 1)); fi
            if [ "$FQ_TERM_RC" != 0 ]; then
                bad=$((bad + 1))
                FQ_ALL_OK=0
                echo "    problem: worker $w exited $FQ_TERM_RC after SIGTERM (${FQ_WLOG[$w]##*/})" >&2
            fi
            faults=$((faults + 1))
            n=$(date +%s%N)
            FQ_WORKER_BIN=$bin fq_worker_start "$w"
            fq_worker_wait_assigned "$w" 60 || { FQ_ALL_OK=0; echo "    problem: worker $w did not rejoin" >&2; }
            n=$((($(date +%s%N) - n) / 1000000))
            rejoin+=("$n")
            say "rolling pass $pass/$RL_PASSES: $w SIGTERM with $kids helm running, ${inflight:-?} commands in flight, $given given back: exit $FQ_TERM_RC after $FQ_TERM_MS ms; restarted from ${bin#"$FQ_T"/}/helmq-worker, partitions again after $n ms"
        done
        touch "$T/roll.done.$pass"
        wait "$loader"
        waves=$(awk -F'\t' -v p="rl$pass." 'index($6, p) == 1 { print $6 }' "$T/sent.tsv" | sort -u | wc -l)
        fq_wait_done 400 "rl$pass.*"
        fq_cluster_check "rl$pass.*" "rl${pass}w"
        cluster=$((cluster + FQ_R_CLUSTER))
        say "rolling pass $pass/$RL_PASSES: $waves waves of $RL_KEYS release keys; $FQ_R_COMMANDS commands: lost $FQ_R_LOST, dup-helm $FQ_R_DUP, missing $FQ_R_MISSING, extra $FQ_R_EXTRA, mismatches $FQ_R_MISMATCH, cluster vs helm storage $FQ_R_CLUSTER; $FQ_R_OUTCOMES"
    done
    fq_rebuild_check
    # the last incarnations stop gracefully too (no load)
    local last=()
    for w in w1 w2 w3; do
        fq_worker_term "$w" 120
        last+=("$FQ_TERM_MS")
        [ "$FQ_TERM_RC" = 0 ] || { bad=$((bad + 1)); FQ_ALL_OK=0; echo "    problem: worker $w exited $FQ_TERM_RC after SIGTERM at the end" >&2; }
    done
    fq_result rolling "$RL_PASSES" "$faults" "real helm, 3 workers: $faults SIGTERM restarts under load, SIGTERM-to-exit ms: ${times[*]} (the final stops, no load: ${last[*]}); restart-to-partitions ms: ${rejoin[*]}; non-zero exits: $bad; drain timeouts: $drains; cluster vs helm's storage: $cluster problems"
    fq_scenario_end
}

# A scenario whose stack did not come up is reported as failed, not skipped.
run_scenario() { # NAME FUNCTION
    want "$1" || return 0
    "$2" && return 0
    echo "fault suite: scenario $1 aborted" >&2
    FQ_ALL_OK=0
    fq_result "$1" 0 0 "aborted: the stack did not come up (see the logs in $FQ_KEEP)"
    fq_scenario_end
}

run_scenario kill9 scenario_kill9
run_scenario broker-outage scenario_broker_outage
run_scenario broker-errors scenario_broker_errors
run_scenario pg-restart scenario_pg
run_scenario workers scenario_workers
run_scenario helm-faults scenario_helm
run_scenario realhelm scenario_realhelm
run_scenario rolling scenario_rolling

fq_summary
