# tests/lib/stack.sh: the embedded stack for integration tests: a private
# PostgreSQL, helmq-broker, and helmq-worker processes with the simulated
# helm. Source after tap.sh and common.sh.
#
#   stack_start [BROKER_ARGS...]   PostgreSQL + broker; exports HELMQ_DATABASE_URL,
#                                  HELMQ_BROKERS, HELM_SIM_STATE, HELMQ_HELM, ...
#   worker_start [ARGS...]         start a worker (log: $T/worker.N.log); sets WORKER_PID
#   worker_stop [PID]              SIGTERM and wait
#   send VERB ARGS...              helmq VERB ... ; prints the commandId
#   wait_terminal ID [SECONDS]     prints the command's terminal event (JSON) once it exists
#   sim_knob NS NAME JSON          set the simulated helm's knobs for a release
#   sim_invocations [FILTER]       the simulated helm's invocation log (jq filter on lines)
#   psql_q SQL                     run SQL, print unaligned tuples

. "$(dirname "$0")/lib/pg.sh"

TENANT=3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b
OTHER_TENANT=9b2e6c1a-7d3f-4a8e-b5c4-1e2f3a4b5c6d

stack_start() {
    pg_start "$T/pg" >"$T/pg.out" 2>&1 || { cat "$T/pg.out" >&2; bail "PostgreSQL did not start"; }
    at_exit "pg_stop '$T/pg'"
    broker_start "$@"
    export HELM_SIM_STATE="$T/sim"
    mkdir -p "$HELM_SIM_STATE"
    chmod 755 "$HELM_SIM_STATE"
    echo '{"matih-ai-service": {"1.0.0": {"appVersion": "2.0.0"}, "1.1.0": {"appVersion": "2.1.0"}, "1.2.0": {"appVersion": "2.2.0"}}}' \
        >"$HELM_SIM_STATE/charts.json"
    export HELMQ_HELM="$HELMQ_ROOT/tests/helm-sim/helm"
    # The simulated helm models no cluster RBAC: helm acting as the tenant is
    # shown with real helm against the emulated cluster (cluster.sh turns it on).
    export HELMQ_TENANT_IDENTITY=false
    export HELMQ_CHART_REPO="oci://registry.example/charts"
    export HELMQ_GROUP_ID="helmq-worker-test"
    export HELMQ_TIMEOUT_GRACE_MS=${HELMQ_TIMEOUT_GRACE_MS:-500}
    export HELMQ_KILL_GRACE_MS=${HELMQ_KILL_GRACE_MS:-1500}
    export HELMQ_TMPDIR="$T/tmp"
    mkdir -p "$HELMQ_TMPDIR"
    _nworker=0
}

# Short group timeouts so that a killed worker's partitions move on quickly.
WORKER_KAFKA_ARGS=(-X session.timeout.ms=6000 -X heartbeat.interval.ms=500 -X max.poll.interval.ms=60000)

worker_start() {
    _nworker=$((_nworker + 1))
    "$HELMQ_BIN/helmq-worker" --log-level "${WORKER_LOG_LEVEL:-info}" "${WORKER_KAFKA_ARGS[@]}" "$@" >>"$T/worker.$_nworker.log" 2>&1 &
    WORKER_PID=$!
    WORKER_LOG="$T/worker.$_nworker.log"
    at_exit "kill -9 $WORKER_PID"
    wait_for "worker $_nworker to be assigned partitions" 60 grep -qs 'assigned ' "$WORKER_LOG" ||
        { tail -20 "$WORKER_LOG" >&2; return 1; }
}

worker_stop() {
    local pid=${1:-$WORKER_PID}
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

send() {
    "$HELMQ_BIN/helmq" "$@"
}

events_json() { "$HELMQ_BIN/helmq" events "$@" 2>/dev/null; }

_terminal_of() { events_json --command-id "$1" | jq -c 'select(.terminal == true)'; }

wait_terminal() { # wait_terminal ID [SECONDS]
    local id=$1 limit=${2:-60} end out
    end=$((SECONDS + limit))
    while [ "$SECONDS" -lt "$end" ]; do
        out=$(_terminal_of "$id")
        if [ -n "$out" ]; then
            printf '%s\n' "$out"
            return 0
        fi
        sleep 0.3
    done
    diag "no terminal event for $id within ${limit}s"
    return 1
}

sim_knob() { # sim_knob NS NAME JSON
    mkdir -p "$HELM_SIM_STATE/knobs/$1"
    printf '%s\n' "$3" >"$HELM_SIM_STATE/knobs/$1/$2.json"
}

sim_invocations() { # sim_invocations [JQ_FILTER]
    [ -f "$HELM_SIM_STATE/invocations.log" ] || return 0
    jq -c "${1:-.}" "$HELM_SIM_STATE/invocations.log"
}

psql_q() { psql -X -q -At -v ON_ERROR_STOP=1 "$HELMQ_DATABASE_URL" -c "$1"; }

jf() { jq -r "$1"; } # jf FILTER: a field of the JSON on stdin

projector_start() { # projector_start [ARGS...]; sets PROJECTOR_PID
    "$HELMQ_BIN/helmq-projector" --log-level "${WORKER_LOG_LEVEL:-info}" -X session.timeout.ms=6000 \
        -X heartbeat.interval.ms=500 "$@" >>"$T/projector.log" 2>&1 &
    PROJECTOR_PID=$!
    at_exit "kill -9 $PROJECTOR_PID"
    wait_for "the projector to be assigned partitions" 60 grep -qs 'projecting ' "$T/projector.log"
}

# The projection's tables, each ordered by its key: equal dumps mean equal projections.
projection_dump() {
    local t
    for t in "applied_events ORDER BY event_id" "releases ORDER BY release_id" \
        "release_history ORDER BY release_id, revision"; do
        psql -X -q -At -v ON_ERROR_STOP=1 "$HELMQ_DATABASE_URL" -c "COPY (SELECT * FROM helmq.$t) TO STDOUT"
    done
}

# wait_projected ID: until the command's terminal event is in the projection.
wait_projected() {
    wait_for "command $1 in the projection" "${2:-60}" bash -c \
        "[ \"\$(psql -X -At '$HELMQ_DATABASE_URL' -c \"select count(*) from helmq.applied_events where command_id = '$1' and event_type <> 'started'\" 2>/dev/null)\" = 1 ]"
}

api_start() { # api_start [ARGS...]; sets API_URL, API_PID; tokens: ADMIN_TOKEN ACME_TOKEN GLOBEX_TOKEN
    ADMIN_TOKEN=admin-token-0123456789abcdef
    ACME_TOKEN=acme-token-0123456789abcdef
    GLOBEX_TOKEN=globex-token-0123456789abcdef
    cat >"$T/tokens" <<EOT
# token principal tenant|admin
$ADMIN_TOKEN platform-admin admin
$ACME_TOKEN acme-deployer $TENANT
$GLOBEX_TOKEN globex-deployer $OTHER_TENANT
EOT
    chmod 600 "$T/tokens"
    local port
    port=$(free_port)
    "$HELMQ_BIN/helmq-api" --listen "127.0.0.1:$port" --tokens-file "$T/tokens" --log-level info "$@" \
        >>"$T/api.log" 2>&1 &
    API_PID=$!
    at_exit "kill -9 $API_PID"
    API_URL="http://127.0.0.1:$port"
    wait_for "helmq-api to serve" 30 curl -sf "$API_URL/healthz" -o /dev/null
}
