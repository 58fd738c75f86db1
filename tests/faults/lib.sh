# shellcheck shell=bash
# tests/faults/lib.sh: helpers of the fault-injection suite (tests/faults/run.sh).
# Source it from bash. It sources the shared test libraries (tests/lib/tap.sh,
# common.sh, stack.sh) without changing them, and adds:
#
#   fq_scenario_begin NAME [BROKER_ARGS...]  a fresh stack in $T=$FQ_T/NAME: PostgreSQL,
#                                  helmq-broker with a control socket ($HELMQ_BROKER_CONTROL),
#                                  the simulated helm, the projector
#   fq_scenario_end                stop everything the scenario started
#   fq_worker_start NAME [ARGS]    start (or restart) worker NAME; log $T/worker.NAME.N.log
#                                  (the program: $FQ_WORKER_BIN/helmq-worker, default $HELMQ_BIN)
#   fq_worker_wait_assigned NAME   until worker NAME's current incarnation has partitions
#   fq_worker_kill9 NAME leave|kill   kill -9 the worker; its helm children are left running
#                                  or their process groups killed too; FQ_KILL_N: how many
#   fq_worker_stop NAME            SIGTERM and wait
#   fq_worker_term NAME [TIMEOUT]  SIGTERM and wait, timed: FQ_TERM_MS (SIGTERM to exit),
#                                  FQ_TERM_RC (exit status; 137 when killed -9 after TIMEOUT s)
#   fq_projector_start / fq_projector_stop
#   brokerctl CMD...               send a command to the broker's control socket
#   fq_plan TAG PREFIX NKEYS [STORY_OFFSET]  append a load plan (4 phases, one command per
#                                  release key per phase) to $T/plan.TAG
#   fq_send TAG [PHASE...]         send the plan's commands (all phases by default), in order;
#                                  each acknowledged command is appended to $T/sent.tsv
#                                  ($FQ_EXTRA_ARGS are added to every command)
#   fq_send_bg TAG [PHASE...]      the same in the background; fq_send_wait waits for it
#   fq_wait_done TIMEOUT [TAG]     until every sent command (of TAG) has a terminal event
#   fq_check TAG                   the invariants for TAG's commands (empty TAG: all; a TAG
#                                  ending in * : every tag it starts); sets FQ_R_* and prints problems
#   fq_cluster_begin               real helm (through helm-logged) against the emulated cluster
#                                  and the OCI registry (tests/lib/cluster.sh), as realhelm runs it
#   fq_cluster_check TAG PREFIX    after fq_wait_done: helm's storage read from the cluster, then
#                                  fq_check TAG and cluster vs helm's storage for the releases
#                                  named PREFIX*; sets FQ_R_CLUSTER (problems, counted as mismatches)
#   fq_cluster_end                 stop the cluster and the registry, the simulated helm again
#   fq_rebuild_check               projection == helmq-projector rebuild (stops and restarts
#                                  the projector); sets FQ_REBUILD=yes|no
#   fq_result NAME RUNS FAULTS NOTE   print the scenario's result line, add it to the summary
#   fq_summary                     print the summary table; status 1 if an invariant failed
#
# Every release a scenario touches is named after its run (unique per scenario), and
# every command carries --description "fq:COMMAND_ID" (rollback: --wait-for-jobs), so
# that each helm invocation in $HELM_SIM_STATE/invocations.log maps to the command
# that asked for it, and helm starts per command can be counted.

FQ_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FQ_ROOT=$(cd "$FQ_DIR/../.." && pwd)
# common.sh and stack.sh find the repository from $0 (a test in tests/): point $0 there.
_fq_argv0=$0
BASH_ARGV0="$FQ_ROOT/tests/faults-suite"
. "$FQ_ROOT/tests/lib/tap.sh"
. "$FQ_ROOT/tests/lib/common.sh"
. "$FQ_ROOT/tests/lib/stack.sh"
BASH_ARGV0=$_fq_argv0
FQ_T=$T
FQ_CONCURRENCY=${FQ_CONCURRENCY:-8}
FQ_RESULTS="$FQ_T/results.tsv"
: >"$FQ_RESULTS"
BROKERCTL="$FQ_DIR/brokerctl"
export HELM_SIM_SLEEP=${HELM_SIM_SLEEP:-0.8}
CHART=matih-ai-service
TENANT_B=$OTHER_TENANT

brokerctl() { "$BROKERCTL" -s "$HELMQ_BROKER_CONTROL" "$@"; }

# The logs of a failed run are kept (shared test libraries remove $T at exit).
FQ_KEEP=${FQ_KEEP:-$FQ_ROOT/build/faults}
_fq_failed=0
_fq_save_logs() {
    [ "$_fq_failed" -eq 0 ] && [ -z "${FQ_KEEP_ALWAYS:-}" ] && return 0
    rm -rf "$FQ_KEEP"
    mkdir -p "$FQ_KEEP"
    # everything but the database files (and sockets)
    tar -C "$FQ_T" --exclude='./*/pg/data' --exclude='*.sock' --exclude='*.ctl' -cf - . 2>/dev/null |
        tar -C "$FQ_KEEP" -xf - 2>/dev/null
    echo "fault suite: logs kept in $FQ_KEEP" >&2
}
at_exit _fq_save_logs

# Drops the shared libraries' exit actions that name PID: it is gone, and PIDs are reused.
_fq_forget_pid() {
    local pid=$1 c kept=()
    for c in "${_exit_cmds[@]}"; do
        case " $c " in *" $pid "* | *" $pid;"* | *"-9 $pid"*) ;; *) kept+=("$c") ;; esac
    done
    _exit_cmds=("${kept[@]}")
}

# PID is alive, not a zombie, and runs a program whose command line contains WHAT.
_fq_alive_prog() {
    local pid=$1 what=$2 st
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    st=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$st" != Z ] || return 1
    { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF -- "$what"
}

# --- the stack -----------------------------------------------------------------

fq_scenario_begin() { # NAME [BROKER_ARGS...]
    FQ_NAME=$1
    shift
    T="$FQ_T/$FQ_NAME"
    mkdir -p "$T"
    chmod 755 "$T"
    FQ_STARTED=$SECONDS
    declare -gA FQ_WPID=() FQ_WINC=() FQ_WLOG=()
    : >"$T/sent.tsv"
    FQ_ALL_OK=1
    FQ_C_COMMANDS=0 FQ_C_UNACKED=0 FQ_C_LOST=0 FQ_C_DUP=0 FQ_C_MISSING=0 FQ_C_EXTRA=0 FQ_C_MISMATCH=0
    FQ_C_REDELIVERED=0 FQ_C_HELM=0 FQ_REBUILD_ALL=yes FQ_C_SAN=0
    stack_start --control "$T/broker.ctl" "$@"
    export HELMQ_BROKER_CONTROL="$T/broker.ctl"
    # stack_start sets a private group and short grace periods; the projector gets its own group.
    export HELMQ_PROJECTOR_GROUP_ID=helmq-projector-faults
    fq_projector_start
}

fq_scenario_end() {
    local n pid
    for n in "${!FQ_WPID[@]}"; do
        pid=${FQ_WPID[$n]}
        if _fq_alive_prog "$pid" helmq-worker; then
            kill -TERM "$pid" 2>/dev/null
            for _ in $(seq 1 100); do _fq_alive_prog "$pid" helmq-worker || break; sleep 0.1; done
            _fq_alive_prog "$pid" helmq-worker && kill -9 "$pid"
        fi
        { wait "$pid"; } 2>/dev/null
        _fq_forget_pid "$pid"
    done
    fq_projector_stop
    _fq_kill_stray_helm
    broker_stop
    _fq_forget_pid "$BROKER_PID"
    pg_stop "$T/pg" >/dev/null 2>&1
    fq_cluster_end
    T=$FQ_T
}

# --- real helm -------------------------------------------------------------------

# After fq_scenario_begin: REAL helm 3.17 against the emulated Kubernetes API
# (tests/kube/, RBAC as docs/rbac/ sets it up, each tenant's helm impersonating its
# service account) and charts from the real OCI registry. helm runs through
# helm-logged, which logs each invocation in the simulated helm's format, so that
# helm's runs per command are counted the same way. fq_scenario_end calls
# fq_cluster_end, which puts back what the next scenario expects.
fq_cluster_begin() {
    . "$FQ_ROOT/tests/lib/cluster.sh"
    FQ_CLUSTER_SAVED=("${HELMQ_TIMEOUT_GRACE_MS:-}" "${HELMQ_KILL_GRACE_MS:-}")
    FQ_CLUSTER_UP=1
    if ! cluster_start "$T/cluster" >"$T/cluster.log" 2>&1; then
        echo "fault suite: the emulated cluster did not start: $(tail -3 "$T/cluster.log")" >&2
        return 1
    fi
    export FQ_REAL_HELM=$HELMQ_HELM HELMQ_HELM=$FQ_DIR/helm-logged FQ_HELM_PROG=helm-logged
    export HELMQ_TIMEOUT_GRACE_MS=4000 HELMQ_KILL_GRACE_MS=5000
}

fq_cluster_end() {
    [ "${FQ_CLUSTER_UP:-0}" = 1 ] || return 0
    FQ_CLUSTER_UP=0
    cluster_stop
    export HELMQ_TIMEOUT_GRACE_MS=${FQ_CLUSTER_SAVED[0]} HELMQ_KILL_GRACE_MS=${FQ_CLUSTER_SAVED[1]}
    unset FQ_REAL_HELM FQ_HELM_PROG HELMQ_KUBECONFIG HELMQ_ADMIN_KUBECONFIG HELMQ_REGISTRY_PLAIN_HTTP KUBECONFIG \
        HELM_CACHE_HOME HELM_CONFIG_HOME HELM_DATA_HOME HELM_REGISTRY_CONFIG
}

# Once every command of TAG has its outcome: helm's storage (the release Secrets,
# decoded) replaces the simulated helm's release files, the invariants of TAG are
# checked against it (fq_check), and the cluster against helm's storage for the
# releases named PREFIX*: no release left pending-*, a Deployment for every
# deployed release and none for another (helm_storage.py check).
fq_cluster_check() { # TAG PREFIX: sets FQ_R_* and FQ_R_CLUSTER
    local tag=$1 prefix=$2 problems
    fq_wait_no_helm 120 >/dev/null
    rm -rf "$HELM_SIM_STATE/releases"
    kubectl_ get secrets -A -l owner=helm -o json 2>>"$T/cluster.log" |
        python3 "$FQ_DIR/helm_storage.py" export "$HELM_SIM_STATE" ||
        echo "fault suite: cannot read helm's storage from the cluster" >&2
    fq_check "$tag"
    problems=$(kubectl_ get deployments -A -o json 2>>"$T/cluster.log" |
        python3 "$FQ_DIR/helm_storage.py" check "$HELM_SIM_STATE" "$prefix")
    FQ_R_CLUSTER=$(sed -n 's/^FQ_R_CLUSTER=//p' <<<"$problems")
    grep -v '^FQ_R_CLUSTER=' <<<"$problems" | sed 's/^/    problem: cluster: /' >&2
    FQ_R_CLUSTER=${FQ_R_CLUSTER:-1}
    FQ_C_MISMATCH=$((FQ_C_MISMATCH + FQ_R_CLUSTER))
    [ "$FQ_R_CLUSTER" = 0 ] || FQ_ALL_OK=0
}

# helm processes of the scenario that are still running (started, no end logged, alive).
_fq_live_helm() {
    [ -f "$HELM_SIM_STATE/invocations.log" ] || return 0
    jq -r 'select(.event == "start" or .event == "end") | "\(.event) \(.pid)"' "$HELM_SIM_STATE/invocations.log" |
        awk '$1 == "start" { open[$2] = 1 } $1 == "end" { delete open[$2] } END { for (p in open) print p }' |
        while read -r p; do _fq_alive_prog "$p" "${FQ_HELM_PROG:-helm-sim}" && echo "$p"; done
}

_fq_kill_stray_helm() {
    local p
    for p in $(_fq_live_helm); do kill -9 -- "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null; done
}

fq_wait_no_helm() { # TIMEOUT: until no helm process of the scenario runs
    local end=$((SECONDS + ${1:-60}))
    while [ -n "$(_fq_live_helm)" ]; do
        [ "$SECONDS" -ge "$end" ] && return 1
        sleep 0.5
    done
}

fq_worker_start() { # NAME [ARGS...]
    local name=$1
    shift
    FQ_WINC[$name]=$((${FQ_WINC[$name]:-0} + 1))
    FQ_WLOG[$name]="$T/worker.$name.${FQ_WINC[$name]}.log"
    "${FQ_WORKER_BIN:-$HELMQ_BIN}/helmq-worker" --log-level info "${WORKER_KAFKA_ARGS[@]}" --concurrency "$FQ_CONCURRENCY" "$@" \
        >"${FQ_WLOG[$name]}" 2>&1 &
    FQ_WPID[$name]=$!
}

fq_worker_wait_assigned() { # NAME [TIMEOUT]
    wait_for "worker $1 to be assigned partitions" "${2:-60}" grep -qs 'assigned ' "${FQ_WLOG[$1]}" ||
        { tail -20 "${FQ_WLOG[$1]}" >&2; return 1; }
}

fq_worker_kill9() { # NAME leave|kill: sets FQ_KILL_N, the number of helm processes left or killed
    local name=$1 mode=$2 pid kids k
    pid=${FQ_WPID[$name]}
    kids=$(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ')
    kill -9 "$pid" 2>/dev/null
    if [ "$mode" = kill ]; then
        # helm runs in its own session and process group (the worker spawns it detached)
        for k in $kids; do kill -9 -- "-$k" 2>/dev/null; done
    fi
    { wait "$pid"; } 2>/dev/null
    _fq_forget_pid "$pid"
    # shellcheck disable=SC2034 # read by the scenarios
    FQ_KILL_N=$(echo "$kids" | grep -c .)
}

fq_worker_stop() { # NAME
    local pid=${FQ_WPID[$1]}
    kill -TERM "$pid" 2>/dev/null
    { wait "$pid"; } 2>/dev/null
    local rc=$?
    _fq_forget_pid "$pid"
    return $rc
}

fq_worker_term() { # NAME [TIMEOUT]: sets FQ_TERM_MS and FQ_TERM_RC
    local pid=${FQ_WPID[$1]} t0 end=$((SECONDS + ${2:-120}))
    t0=$(date +%s%N)
    kill -TERM "$pid" 2>/dev/null
    while _fq_alive_prog "$pid" helmq-worker && [ "$SECONDS" -lt "$end" ]; do sleep 0.05; done
    FQ_TERM_MS=$((($(date +%s%N) - t0) / 1000000))
    _fq_alive_prog "$pid" helmq-worker && { echo "fault suite: worker $1 still runs ${2:-120} s after SIGTERM: kill -9" >&2; kill -9 "$pid"; }
    { wait "$pid"; } 2>/dev/null
    FQ_TERM_RC=$?
    _fq_forget_pid "$pid"
}

fq_projector_start() {
    "$HELMQ_BIN/helmq-projector" --log-level info -X session.timeout.ms=6000 -X heartbeat.interval.ms=500 \
        >>"$T/projector.log" 2>&1 &
    FQ_PROJ_PID=$!
}

fq_projector_stop() {
    [ -n "${FQ_PROJ_PID:-}" ] || return 0
    if _fq_alive_prog "$FQ_PROJ_PID" helmq-projector; then
        kill -TERM "$FQ_PROJ_PID" 2>/dev/null
    fi
    { wait "$FQ_PROJ_PID"; } 2>/dev/null
    _fq_forget_pid "$FQ_PROJ_PID"
    FQ_PROJ_PID=
}

# --- the load ------------------------------------------------------------------

# Four stories, one per release key (by index): each is one command per phase.
#   0: install 1.0.0, upgrade 1.1.0, upgrade 1.2.0, uninstall
#   1: install 1.0.0 --atomic, upgrade 1.1.0, rollback, uninstall
#   2: install 1.0.0, upgrade 1.1.0 --atomic, uninstall, install 1.2.0 (a new lifecycle)
#   3: install 1.0.0, upgrade 1.1.0, upgrade 1.2.0, upgrade 1.0.0
# Keys spread over two tenants and three namespaces.
fq_plan() { # TAG PREFIX NKEYS [STORY_OFFSET]
    local tag=$1 prefix=$2 n=$3 off=${4:-0} i ns tenant rel story
    local inst="--chart-name $CHART --chart-version"
    for phase in 1 2 3 4; do
        for i in $(seq 0 $((n - 1))); do
            case $((i % 3)) in 0) ns=fq-a1 tenant=$TENANT ;; 1) ns=fq-a2 tenant=$TENANT ;; *) ns=fq-b1 tenant=$TENANT_B ;; esac
            rel=$(printf '%s-%03d' "$prefix" "$i")
            story=$(((i + off) % 4))
            case "$story.$phase" in
            0.1 | 2.1 | 3.1) echo "$phase install $ns $tenant $rel $inst 1.0.0" ;;
            1.1) echo "$phase install $ns $tenant $rel $inst 1.0.0 --atomic" ;;
            *.2) echo "$phase upgrade $ns $tenant $rel $inst 1.1.0$([ $story = 2 ] && echo ' --atomic')" ;;
            0.3 | 3.3) echo "$phase upgrade $ns $tenant $rel $inst 1.2.0" ;;
            1.3) echo "$phase rollback $ns $tenant $rel --wait-for-jobs" ;;
            0.4 | 1.4 | 2.3) echo "$phase uninstall $ns $tenant $rel --reason fault-suite" ;;
            2.4) echo "$phase install $ns $tenant $rel $inst 1.2.0" ;;
            3.4) echo "$phase upgrade $ns $tenant $rel $inst 1.0.0" ;;
            esac
        done
    done >>"$T/plan.$tag"
}

# Sends one command; records it in sent.tsv (acked 1, or 0 when delivery failed:
# it may or may not have reached the topic).
_fq_send1() { # TAG VERB NS TENANT RELEASE ARGS...
    local tag=$1 verb=$2 ns=$3 tenant=$4 rel=$5 id acked=1
    shift 5
    id=$(cat /proc/sys/kernel/random/uuid)
    # shellcheck disable=SC2086
    "$HELMQ_BIN/helmq" "$verb" "$rel" -t "$tenant" -n "$ns" --command-id "$id" -d "fq:$id" \
        --performed-by fault-suite "$@" ${FQ_EXTRA_ARGS:-} >/dev/null 2>>"$T/send.err" || acked=0
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$id" "$verb" "$tenant" "$ns" "$rel" "$tag" "$acked" >>"$T/sent.tsv"
}

fq_send() { # TAG [PHASE...]: phase after phase; within a phase, $FQ_SEND_PAR senders at once
    local tag=$1 phase verb ns tenant rel args cur='' pids=()
    shift
    while read -r phase verb ns tenant rel args; do
        if [ $# -gt 0 ] && [[ " $* " != *" $phase "* ]]; then continue; fi
        if [ "$phase" != "$cur" ]; then
            # a release's next command is sent only once its previous one is acknowledged
            [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
            pids=()
            cur=$phase
        fi
        # shellcheck disable=SC2086
        _fq_send1 "$tag" "$verb" "$ns" "$tenant" "$rel" $args &
        pids+=($!)
        if [ ${#pids[@]} -ge "${FQ_SEND_PAR:-16}" ]; then
            wait "${pids[0]}"
            pids=("${pids[@]:1}")
        fi
    done <"$T/plan.$tag"
    [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
}

# fq_send in the background (the load goes on while faults are injected); fq_send_wait
# waits for it to finish.
fq_send_bg() { # TAG [PHASE...]
    fq_send "$@" &
    FQ_SENDER=$!
}
fq_send_wait() { [ -z "${FQ_SENDER:-}" ] || wait "$FQ_SENDER"; FQ_SENDER=; }

fq_sent_count() { awk -F'\t' -v t="${1:-}" '(t == "" || $6 == t) && $7 == 1' "$T/sent.tsv" | wc -l; }

fq_events() { # the events topic as JSON lines, into $T/events.jsonl
    local i
    for i in 1 2 3; do
        "$HELMQ_BIN/helmq" events --timeout-ms 20000 >"$T/events.jsonl.tmp" 2>>"$T/events.err" &&
            { mv "$T/events.jsonl.tmp" "$T/events.jsonl"; return 0; }
        sleep 1
    done
    return 1
}

# Commands of TAG (acknowledged) without a terminal event yet, from $T/events.jsonl.
fq_pending() { # [TAG]
    python3 -c "$_FQ_PY" pending "$T" "${1:-}"
}

fq_wait_done() { # TIMEOUT [TAG]: until every acknowledged command has a terminal event
    local end=$((SECONDS + ${1:-180})) left=
    while :; do
        if fq_events; then
            left=$(fq_pending "${2:-}")
            [ "$left" = 0 ] && return 0
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            echo "fault suite: $left commands without a terminal event after ${1:-180}s" >&2
            return 1
        fi
        sleep 2
    done
}

# --- the invariants ----------------------------------------------------------------

_fq_dump_db() {
    q() { psql -X -q -At -v ON_ERROR_STOP=1 "$HELMQ_DATABASE_URL" -c "$1"; }
    q "select row_to_json(c) from (select command_id, release_key, operation, state, outcome, error_code, release_id
         from helmq_worker.commands) c" >"$T/ledger.jsonl" &&
        q "select row_to_json(r) from (select release_key, release_id, status, revision from helmq_worker.releases) r" \
            >"$T/registry.jsonl" &&
        q "select row_to_json(a) from (select event_id, command_id, event_type from helmq.applied_events) a" \
            >"$T/proj_events.jsonl" &&
        q "select row_to_json(r) from (select release_id, tenant_id, namespace, release_name, status, revision
             from helmq.releases) r" >"$T/proj_releases.jsonl"
}

# Waits until the projection holds every event of the topic (distinct eventIds).
fq_wait_projected() { # [TIMEOUT]
    local want have end=$((SECONDS + ${1:-60}))
    want=$(jq -r 'select(.eventId) | .eventId' "$T/events.jsonl" | sort -u | wc -l)
    while :; do
        have=$(psql_q "select count(*) from helmq.applied_events" 2>/dev/null)
        [ "$have" = "$want" ] && return 0
        if [ "$SECONDS" -ge "$end" ]; then
            echo "fault suite: the projection has $have of $want events" >&2
            return 1
        fi
        sleep 0.5
    done
}

fq_check() { # TAG: sets FQ_R_* (and adds them to the scenario's totals)
    local tag=$1 out
    fq_wait_no_helm 60 || echo "fault suite: helm processes still running: $(_fq_live_helm | tr '\n' ' ')" >&2
    sleep 2 # redeliveries after a rebalance republish (same eventIds); let them land
    fq_events || echo "fault suite: cannot read the events topic" >&2
    fq_wait_projected 90
    _fq_dump_db || echo "fault suite: cannot read the database" >&2
    FQ_R_COMMANDS=0 FQ_R_UNACKED=0 FQ_R_LOST=0 FQ_R_DUP=0 FQ_R_MISSING=0 FQ_R_EXTRA=0 FQ_R_REDELIVERED=0
    FQ_R_HELM=0 FQ_R_MISMATCH=1 FQ_R_OUTCOMES=
    local report="$T/check.${tag//\*/all}.txt"
    if out=$(python3 -c "$_FQ_PY" check "$T" "$tag" 2>"$report"); then
        eval "$out"
    else
        echo "    problem: the checker failed" >&2
    fi
    sed 's/^/    problem: /' "$report" | head -40 >&2
    local san
    san=$(cat "$T"/worker.*.log "$T/projector.log" "$T/broker.log" 2>/dev/null |
        grep -c -E 'AddressSanitizer|LeakSanitizer|runtime error:')
    FQ_C_SAN=$((FQ_C_SAN + san))
    FQ_C_COMMANDS=$((FQ_C_COMMANDS + FQ_R_COMMANDS))
    FQ_C_UNACKED=$((FQ_C_UNACKED + FQ_R_UNACKED))
    FQ_C_LOST=$((FQ_C_LOST + FQ_R_LOST))
    FQ_C_DUP=$((FQ_C_DUP + FQ_R_DUP))
    FQ_C_MISSING=$((FQ_C_MISSING + FQ_R_MISSING))
    FQ_C_EXTRA=$((FQ_C_EXTRA + FQ_R_EXTRA))
    FQ_C_MISMATCH=$((FQ_C_MISMATCH + FQ_R_MISMATCH))
    FQ_C_REDELIVERED=$((FQ_C_REDELIVERED + FQ_R_REDELIVERED))
    FQ_C_HELM=$((FQ_C_HELM + FQ_R_HELM))
    [ $((FQ_R_LOST + FQ_R_DUP + FQ_R_MISSING + FQ_R_EXTRA + FQ_R_MISMATCH + san)) -eq 0 ] || FQ_ALL_OK=0
}

fq_rebuild_check() { # sets FQ_REBUILD=yes|no; the projector is stopped and started again
    FQ_REBUILD=no
    fq_projector_stop
    projection_dump >"$T/dump.live" 2>/dev/null
    if timeout 300 "$HELMQ_BIN/helmq-projector" rebuild --log-level warn >>"$T/rebuild.log" 2>&1; then
        projection_dump >"$T/dump.rebuilt" 2>/dev/null
        if [ -s "$T/dump.live" ] && cmp -s "$T/dump.live" "$T/dump.rebuilt"; then
            FQ_REBUILD=yes
        else
            echo "    problem: the projection differs from a fresh rebuild:" >&2
            diff "$T/dump.live" "$T/dump.rebuilt" | head -10 | sed 's/^/      /' >&2
        fi
    else
        echo "    problem: helmq-projector rebuild failed: $(tail -3 "$T/rebuild.log")" >&2
    fi
    [ "$FQ_REBUILD" = yes ] || { FQ_REBUILD_ALL=no; FQ_ALL_OK=0; }
    fq_projector_start
}

# --- results ------------------------------------------------------------------------

fq_result() { # SCENARIO RUNS FAULTS NOTE
    local name=$1 runs=$2 faults=$3 note=$4 secs=$((SECONDS - FQ_STARTED)) verdict=PASS
    [ "$FQ_ALL_OK" = 1 ] || { verdict=FAIL; _fq_failed=1; }
    printf 'RESULT %s %s: runs=%s commands=%s unacked=%s faults=%s lost=%s dup_helm=%s missing=%s extra=%s ' \
        "$verdict" "$name" "$runs" "$FQ_C_COMMANDS" "$FQ_C_UNACKED" "$faults" "$FQ_C_LOST" "$FQ_C_DUP" \
        "$FQ_C_MISSING" "$FQ_C_EXTRA"
    printf 'mismatches=%s sanitizer=%s projection==rebuild=%s helm_runs=%s redelivered_events=%s time=%ss (%s)\n' \
        "$FQ_C_MISMATCH" "$FQ_C_SAN" "$FQ_REBUILD_ALL" "$FQ_C_HELM" "$FQ_C_REDELIVERED" "$secs" "$note"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$runs" "$FQ_C_COMMANDS" "$faults" \
        "$FQ_C_LOST" "$FQ_C_DUP" "$FQ_C_MISSING" "$FQ_C_EXTRA" "$FQ_C_MISMATCH" "$FQ_REBUILD_ALL" "$secs" \
        "$verdict" "$FQ_C_SAN" "$note" >>"$FQ_RESULTS"
}

fq_summary() {
    local fail=0
    echo
    printf '%-16s %5s %9s %7s %5s %9s %14s %11s %19s %7s  %s\n' scenario runs commands faults lost dup-helm \
        missing/extra mismatches projection==rebuild time result
    while IFS=$'\t' read -r name runs cmds faults lost dup miss extra mism rebuild secs verdict san note; do
        printf '%-16s %5s %9s %7s %5s %9s %14s %11s %19s %6ss  %s\n' "$name" "$runs" "$cmds" "$faults" "$lost" "$dup" \
            "$miss/$extra" "$mism" "$rebuild" "$secs" "$verdict"
        [ "$verdict" = PASS ] || fail=1
    done <"$FQ_RESULTS"
    [ -s "$FQ_RESULTS" ] || fail=1
    [ -z "${FQ_RESULTS_COPY:-}" ] || cp "$FQ_RESULTS" "$FQ_RESULTS_COPY"
    return $fail
}

# --- the checker (Python 3, standard library) ---------------------------------------
# pending DIR TAG   prints how many acknowledged commands lack a terminal event
# check DIR TAG     prints FQ_R_*=N assignments; problems on stderr
_FQ_PY=$(
    cat <<'PY'
import collections, json, os, sys

mode, d, tag = sys.argv[1], sys.argv[2], sys.argv[3]

def jsonl(name):
    out = []
    p = os.path.join(d, name)
    if not os.path.exists(p):
        return out
    with open(p, encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    out.append({"_unparsable": line[:80]})
    return out

sent = []
with open(os.path.join(d, "sent.tsv")) as f:
    for line in f:
        p = line.rstrip("\n").split("\t")
        if len(p) == 7:
            sent.append(dict(id=p[0], verb=p[1], tenant=p[2], ns=p[3], rel=p[4], tag=p[5], acked=p[6] == "1"))
all_ids = {s["id"] for s in sent}
def tagged(s):
    return not tag or s["tag"] == tag or (tag.endswith("*") and s["tag"].startswith(tag[:-1]))
mine = [s for s in sent if tagged(s)]

events = jsonl("events.jsonl")
terminal = collections.defaultdict(dict)   # commandId -> eventId -> event
copies = collections.Counter()             # eventId -> copies on the topic
undecodable = 0
for e in events:
    if "_undecodable" in e or "_unparsable" in e:
        undecodable += 1
        continue
    copies[e.get("eventId")] += 1
    if e.get("terminal"):
        terminal[e.get("commandId")][e.get("eventId")] = e

if mode == "pending":
    print(sum(1 for s in mine if s["acked"] and not terminal.get(s["id"])))
    sys.exit(0)

problems = []
def problem(msg):
    problems.append(msg)

ledger = {r["command_id"]: r for r in jsonl("ledger.jsonl")}
registry = {r["release_key"]: r for r in jsonl("registry.jsonl")}
proj_terminal = collections.defaultdict(set)
proj_all = set()
for r in jsonl("proj_events.jsonl"):
    proj_all.add(r["event_id"])
    if r["event_type"] != "started":
        proj_terminal[r["command_id"]].add(r["event_id"])
proj_rel = {r["release_id"]: r for r in jsonl("proj_releases.jsonl")}

# helm invocations -> commands: --description fq:ID (install/upgrade/uninstall), and
# the one rollback of a release carries --wait-for-jobs (the worker's own rollbacks and
# uninstalls carry neither).
rollback_of = {}
for s in sent:
    if s["verb"] == "rollback":
        rollback_of[(s["ns"], s["rel"])] = s["id"]
state = os.environ.get("HELM_SIM_STATE", "")
helm_runs = collections.Counter()
helm_starts = collections.Counter()
open_pid = {}
pairs = []
inv = os.path.join(state, "invocations.log")
if os.path.exists(inv):
    with open(inv, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("event") == "start":
                item = [ev, None]
                open_pid[ev.get("pid")] = item
                pairs.append(item)
            elif ev.get("event") == "end" and ev.get("pid") in open_pid:
                open_pid.pop(ev.get("pid"))[1] = ev
for start, end in pairs:
    sub, argv = start.get("subcommand"), start.get("argv") or []
    cid = None
    if sub in ("install", "upgrade", "uninstall") and "--description" in argv:
        i = argv.index("--description")
        if i + 1 < len(argv) and argv[i + 1].startswith("fq:"):
            cid = argv[i + 1][3:]
    elif sub == "rollback" and "--wait-for-jobs" in argv:
        cid = rollback_of.get((start.get("namespace"), start.get("release")))
    if cid is None:
        continue
    helm_starts[cid] += 1
    # helm refusing at once because the release is pending changed nothing: not a run
    if end and "another operation (install/upgrade/rollback) is in progress" in (end.get("error") or ""):
        continue
    helm_runs[cid] += 1

lost = dup = missing = extra = mismatch = redelivered = unacked = runs_total = 0
outcomes = collections.Counter()
for s in mine:
    cid = s["id"]
    terms = terminal.get(cid, {})
    led = ledger.get(cid)
    if not s["acked"]:
        unacked += 1
        if not terms and not led:
            continue  # never reached the topic: nothing to check
    n = len(terms)
    runs = helm_runs.get(cid, 0)
    runs_total += runs
    redelivered += sum(copies[e] - 1 for e in terms)
    if n == 0:
        missing += 1
        if not led or led.get("state") != "finished":
            lost += 1
            problem("%s %s %s/%s: lost (no terminal event; ledger %s)" % (cid, s["verb"], s["ns"], s["rel"],
                    led.get("state") if led else "has no row"))
        else:
            problem("%s %s %s/%s: finished in the ledger (%s) but no terminal event" % (
                cid, s["verb"], s["ns"], s["rel"], led.get("outcome")))
    elif n > 1:
        extra += n - 1
        problem("%s %s %s/%s: %d different terminal events: %s" % (cid, s["verb"], s["ns"], s["rel"], n,
                ", ".join("%s/%s" % (e.get("eventType"), e.get("errorCode")) for e in terms.values())))
    if runs > 1:
        dup += 1
        problem("%s %s %s/%s: helm ran the %s %d times" % (cid, s["verb"], s["ns"], s["rel"], s["verb"], runs))
    if n != 1:
        continue
    ev = next(iter(terms.values()))
    et = ev.get("eventType")
    outcomes["%s%s" % (et, "/" + ev["errorCode"] if ev.get("errorCode") else "")] += 1
    def bad(msg):
        global mismatch
        mismatch += 1
        problem("%s %s %s/%s: %s" % (cid, s["verb"], s["ns"], s["rel"], msg))
    if not led:
        if not (et == "rejected" and ev.get("errorCode") == "INVALID_FIELD"):
            bad("terminal event %s but no ledger row" % et)
    else:
        if led.get("state") != "finished":
            bad("ledger state %s with a terminal event" % led.get("state"))
        if led.get("outcome") != et or (led.get("error_code") or None) != (ev.get("errorCode") or None):
            bad("ledger says %s/%s, the event %s/%s" % (led.get("outcome"), led.get("error_code"), et,
                                                       ev.get("errorCode")))
    if proj_terminal.get(cid, set()) != set(terms):
        bad("projection has terminal events %s, the topic %s" % (sorted(proj_terminal.get(cid, ())), sorted(terms)))
    if et == "rejected" and runs:
        bad("rejected, yet helm ran its %s" % s["verb"])
    if et == "succeeded" and runs != 1:
        bad("succeeded, yet helm ran its %s %d times" % (s["verb"], runs))

# Per release: the registry (ledger), the last outcome, the projection and helm agree.
by_key = collections.OrderedDict()
for s in mine:
    by_key.setdefault((s["tenant"], s["ns"], s["rel"]), []).append(s)
for (tenant, ns, rel), cmds in by_key.items():
    key = "%s/%s/%s" % (tenant, ns, rel)
    reg = registry.get(key)
    last = None
    for s in cmds:
        terms = terminal.get(s["id"], {})
        if len(terms) == 1:
            ev = next(iter(terms.values()))
            if ev.get("eventType") != "rejected":
                last = ev
    def bad(msg):
        global mismatch
        mismatch += 1
        problem("release %s: %s" % (key, msg))
    if last is None:
        if reg:
            bad("registry row %s but no command changed the release" % reg.get("status"))
        continue
    if not reg:
        bad("no registry row; last event %s %s r%s" % (last.get("eventType"), last.get("status"), last.get("revision")))
        continue
    if (reg["release_id"], reg["status"], reg["revision"]) != (last.get("releaseId"), last.get("status"),
                                                              last.get("revision")):
        bad("registry %s %s r%s, last event %s %s r%s" % (reg["release_id"], reg["status"], reg["revision"],
            last.get("releaseId"), last.get("status"), last.get("revision")))
    p = proj_rel.get(reg["release_id"])
    if not p:
        bad("release %s not in the projection" % reg["release_id"])
    elif (p["status"], p["revision"]) != (reg["status"], reg["revision"]):
        bad("projection %s r%s, registry %s r%s" % (p["status"], p["revision"], reg["status"], reg["revision"]))
    path = os.path.join(state, "releases", ns, rel + ".json")
    revs = []
    if os.path.exists(path):
        with open(path) as f:
            revs = sorted(json.load(f).get("revisions", []), key=lambda r: r["version"])
    if not revs:
        if reg["status"] not in ("uninstalled",) and not (reg["status"] == "failed" and reg["revision"] == 0):
            bad("helm has no release, the registry says %s r%s" % (reg["status"], reg["revision"]))
    else:
        h = revs[-1]
        if (h["info"]["status"], h["version"]) != (reg["status"], reg["revision"]):
            bad("helm says %s r%s, the registry %s r%s" % (h["info"]["status"], h["version"], reg["status"],
                                                           reg["revision"]))

# Ledger rows of this tag's releases that never finished.
keys = {"%s/%s/%s" % k for k in by_key}
for cid, led in ledger.items():
    if led.get("release_key") in keys and led.get("state") != "finished" and cid not in {s["id"] for s in mine}:
        mismatch += 1
        problem("ledger row %s (%s) is %s and was not sent by the suite" % (cid, led.get("release_key"),
                                                                             led.get("state")))
# Terminal events of commands nobody sent.
for cid, terms in terminal.items():
    if cid not in all_ids:
        extra += len(terms)
        problem("terminal event(s) for unknown command %s" % cid)
if undecodable:
    mismatch += undecodable
    problem("%d undecodable records on the events topic" % undecodable)

for p in problems:
    print(p, file=sys.stderr)
print("FQ_R_COMMANDS=%d FQ_R_UNACKED=%d FQ_R_LOST=%d FQ_R_DUP=%d FQ_R_MISSING=%d FQ_R_EXTRA=%d FQ_R_MISMATCH=%d "
      "FQ_R_REDELIVERED=%d FQ_R_HELM=%d" % (sum(1 for s in mine if s["acked"]), unacked, lost, dup, missing, extra,
                                             mismatch, redelivered, runs_total))
print("FQ_R_OUTCOMES='%s'" % " ".join("%s=%d" % kv for kv in sorted(outcomes.items())))
PY
)
