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
        fq_plan "$tag" "k9r$run" "$KEYS" "$run"
        slow_knobs "$tag" 3 "${FQ_SLOW:-$((RANDOM % 12 + 2))}"
        fq_send "$tag"
        delay=$(rand_ms 300 6000)
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
        fq_wait_done 240 "$tag"
        fq_check "$tag"
        if [ "$run" = "$RUNS" ] || [ $((run % 10)) = 0 ] || [ "$LONG" = 0 ]; then
            fq_rebuild_check
        fi
        say "kill9 run $run/$RUNS: kill -9 after ${delay} ms ($([ $((run % 2)) = 1 ] && echo "$n helm left running" || echo "$n helm groups killed")); $FQ_R_COMMANDS commands: lost $FQ_R_LOST, dup-helm $FQ_R_DUP, missing $FQ_R_MISSING, extra $FQ_R_EXTRA, mismatches $FQ_R_MISMATCH; $FQ_R_OUTCOMES"
    done
    fq_result kill9 "$RUNS" "$faults" "kill -9 of the worker; $left helm processes left running, $killed helm groups killed"
    fq_scenario_end
}

want kill9 && scenario_kill9

fq_summary
