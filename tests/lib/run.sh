#!/usr/bin/env bash
# make run / make demo: the whole service on embedded defaults.
#
#   run.sh serve   start what is missing (broker, PostgreSQL, helm), then the
#                  worker, the projector and the HTTP API; print where
#                  everything is; stream the logs; on Ctrl-C (or SIGTERM) stop
#                  everything it started. When the worker, the projector or
#                  the API exits, say so loudly and start it again, after 1 s,
#                  2 s, 4 s ... up to 30 s while it keeps dying
#                  (HELMQ_RUN_RESTART=0: stop everything instead, as before).
#                  The embedded broker is not restarted: it keeps nothing on
#                  disk, so its topics and queued commands are gone with it.
#   run.sh restart worker|projector|api
#                  restart one component of the running `make run` (SIGTERM:
#                  the worker finishes the helm it runs first) and wait until
#                  it is back.
#   run.sh demo    the seed's story end to end against the running stack, or
#                  against one it starts (and stops) itself.
#
# Given HELMQ_BROKERS, HELMQ_DATABASE_URL or HELMQ_HELM (a helm with a
# reachable cluster, KUBECONFIG as usual), those are used instead of the
# embedded broker, the private PostgreSQL and the simulated helm.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BIN=${HELMQ_BIN:-$ROOT/bin}
RUN=${HELMQ_RUN_DIR:-$ROOT/build/run}
mode=${1:-serve}
mkdir -p "$RUN"
chmod 755 "$RUN" "$ROOT/build"
. "$ROOT/tests/lib/pg.sh"
. "$ROOT/tests/lib/port.sh"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
[ -t 2 ] || say() { printf '==> %s\n' "$*" >&2; }

started_pids=()
started_pg=""
cleanup() {
    trap - INT TERM EXIT
    local p
    [ -n "${tail_pid:-}" ] && kill "$tail_pid" 2>/dev/null
    # Newest first: the worker and projector drain and commit while the
    # broker and PostgreSQL they talk to are still there.
    local i
    for ((i = ${#started_pids[@]} - 1; i >= 0; i--)); do
        p=${started_pids[$i]}
        [ -n "$p" ] || continue # a component that is down, waiting to restart
        kill -TERM "$p" 2>/dev/null
        for _ in $(seq 1 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [ -n "${PROM_PID:-}" ]; then
        kill -TERM "$PROM_PID" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$PROM_PID" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$PROM_PID" 2>/dev/null
        wait "$PROM_PID" 2>/dev/null
    fi
    [ -n "$started_pg" ] && pg_stop "$started_pg" >/dev/null 2>&1
    [ -n "${started_cluster:-}" ] && cluster_stop >/dev/null 2>&1
    rm -f "$RUN/env.sh" "$RUN/pids" "$RUN"/*.pid "$RUN"/restart.*
    [ "${#started_pids[@]}" -gt 0 ] && say "stopped everything make $mode started"
}

# The components make run supervises: NAME -> pid ("" while down), its slot in
# started_pids (so cleanup stops the current process, in the same order),
# when it started, its current backoff and when it is due to start again.
declare -A comp_pid comp_slot comp_since comp_backoff comp_due

start_component() { # start_component worker|projector|api
    local name=$1
    case "$name" in
    worker) "$BIN/helmq-worker" --http-listen "$WORKER_HTTP" >>"$RUN/worker.log" 2>&1 & ;;
    projector) "$BIN/helmq-projector" --http-listen "$PROJECTOR_HTTP" >>"$RUN/projector.log" 2>&1 & ;;
    api) "$BIN/helmq-api" --listen "$API_LISTEN" --tokens-file "$RUN/api-tokens" >>"$RUN/api.log" 2>&1 & ;;
    esac
    comp_pid[$name]=$!
    comp_since[$name]=$SECONDS
    if [ -z "${comp_slot[$name]:-}" ]; then
        comp_slot[$name]=${#started_pids[@]}
        started_pids+=($!)
    else
        started_pids[${comp_slot[$name]}]=$!
    fi
    echo "$!" >"$RUN/$name.pid"
    echo "${started_pids[*]}" >"$RUN/pids"
}

# Watches the components until make run stops: one that exits is restarted
# (see the top of this file); a restart asked by `run.sh restart` is at once.
supervise() {
    local name pid rc b
    while :; do
        if [ -n "${BROKER_PID:-}" ] && ! kill -0 "$BROKER_PID" 2>/dev/null; then
            say "!!! helmq-broker exited: the embedded broker is volatile, its topics and every queued command are gone; stopping"
            exit 1
        fi
        for name in "${!comp_pid[@]}"; do
            pid=${comp_pid[$name]}
            if [ -n "$pid" ]; then
                kill -0 "$pid" 2>/dev/null && continue
                wait "$pid" 2>/dev/null
                rc=$?
                comp_pid[$name]=""
                started_pids[${comp_slot[$name]}]=""
                echo "${started_pids[*]}" >"$RUN/pids" # still running: stack_running holds
                if [ -f "$RUN/restart.$name" ]; then
                    rm -f "$RUN/restart.$name"
                    say "helmq-$name stopped on request (status $rc); starting it again"
                    comp_due[$name]=$SECONDS
                    continue
                fi
                if [ "${HELMQ_RUN_RESTART:-1}" = 0 ]; then
                    tail -20 "$RUN/$name.log" >&2
                    say "!!! helmq-$name exited (status $rc); stopping everything (HELMQ_RUN_RESTART=0)"
                    exit 1
                fi
                # Ran a minute or more: a new failure, start over at 1 s.
                b=${comp_backoff[$name]:-0}
                [ $((SECONDS - comp_since[$name])) -ge 60 ] && b=0
                b=$((b ? b * 2 : 1))
                [ "$b" -gt 30 ] && b=30
                comp_backoff[$name]=$b
                comp_due[$name]=$((SECONDS + b))
                tail -5 "$RUN/$name.log" >&2
                say "!!! helmq-$name EXITED (status $rc); restarting it in ${b}s (log $RUN/$name.log; HELMQ_RUN_RESTART=0 stops everything instead)"
            elif [ "$SECONDS" -ge "${comp_due[$name]}" ]; then
                start_component "$name"
                say "helmq-$name started again: pid ${comp_pid[$name]}"
            fi
        done
        sleep 0.5
    done
}

stack_up() {
    if [ -z "${HELMQ_BROKERS:-}" ]; then
        rm -f "$RUN/broker.addr"
        "$BIN/helmq-broker" --address-file "$RUN/broker.addr" >"$RUN/broker.out" 2>"$RUN/broker.log" &
        started_pids+=($!)
        BROKER_PID=$!
        for _ in $(seq 1 100); do [ -s "$RUN/broker.addr" ] && break; sleep 0.1; done
        [ -s "$RUN/broker.addr" ] || { cat "$RUN/broker.log" >&2; say "helmq-broker did not start"; exit 1; }
        export HELMQ_BROKERS=$(cat "$RUN/broker.addr")
        BROKER_NOTE="embedded helmq-broker (librdkafka mock cluster) at $HELMQ_BROKERS
               VOLATILE: it keeps nothing on disk; when it stops, its topics and every
               command not yet run are gone (use real Kafka for anything that matters)"
    else
        BROKER_NOTE="Kafka at $HELMQ_BROKERS (from HELMQ_BROKERS)"
    fi
    if [ -z "${HELMQ_DATABASE_URL:-}" ]; then
        pg_start "$RUN/pg" >"$RUN/pg.out" 2>&1 || { cat "$RUN/pg.out" >&2; say "PostgreSQL did not start"; exit 1; }
        started_pg="$RUN/pg"
        DB_NOTE="private PostgreSQL in $RUN/pg (socket $PGHOST, port $PGPORT; log $RUN/pg/postgres.log)"
    else
        DB_NOTE="PostgreSQL at $HELMQ_DATABASE_URL (from HELMQ_DATABASE_URL)"
    fi
    export HELMQ_DATABASE_URL
    if [ -z "${HELMQ_HELM:-}" ] && [ "${HELMQ_RUN_HELM:-real}" = sim ]; then
        export HELMQ_HELM="$ROOT/tests/helm-sim/helm"
        export HELM_SIM_STATE="$RUN/helm-sim"
        mkdir -p "$HELM_SIM_STATE"
        [ -f "$HELM_SIM_STATE/charts.json" ] || echo '{"matih-ai-service": {"1.0.0": {"appVersion": "2.0.0"}, "1.1.0": {"appVersion": "2.1.0"}}}' >"$HELM_SIM_STATE/charts.json"
        export HELMQ_CHART_REPO=${HELMQ_CHART_REPO:-oci://registry.example/charts}
        export HELMQ_TENANT_IDENTITY=false # the simulated helm models no cluster RBAC
        HELM_NOTE="SIMULATED helm (tests/helm-sim/helm, state in $HELM_SIM_STATE; HELMQ_RUN_HELM=sim): no cluster is touched."
    elif [ -z "${HELMQ_HELM:-}" ]; then
        # Real helm against the project's emulated Kubernetes API, charts in a
        # real OCI registry: what a user's cluster would see, without one.
        say "starting the EMULATED Kubernetes cluster and the chart registry (real helm 3.17)"
        . "$ROOT/tests/lib/cluster.sh"
        if ! cluster_start "$RUN/cluster" >"$RUN/cluster.log" 2>&1; then
            tail -20 "$RUN/cluster.log" >&2
            say "the emulated cluster or the chart registry did not start (log: $RUN/cluster.log)"
            exit 1
        fi
        started_cluster=1
        HELM_NOTE="REAL helm 3.17 ($HELMQ_HELM) against an EMULATED Kubernetes cluster: nothing real is deployed.
               API server: tests/kube/ emulator, KUBECONFIG=$KUBECONFIG (state in $RUN/cluster/kube)
               charts:     $HELMQ_CHART_REPO (Debian's docker-registry, plain HTTP; matih-ai-service 1.0.0, 1.1.0 and 1.2.0)
               RBAC:       the worker is user helmq-worker with docs/rbac/'s role (HELMQ_KUBECONFIG=$HELMQ_KUBECONFIG);
                           each tenant's helm acts as system:serviceaccount:NAMESPACE:helmq-tenant
    To deploy for real: HELMQ_HELM=/path/to/helm KUBECONFIG=~/.kube/config HELMQ_CHART_REPO=oci://your/charts make run
    (apply docs/rbac/ to that cluster first, or HELMQ_TENANT_IDENTITY=false: README, Multi-tenancy)"
    else
        HELM_NOTE="helm $HELMQ_HELM (from HELMQ_HELM) with KUBECONFIG=${KUBECONFIG:-~/.kube/config}"
    fi
    # Fixed metrics ports for the run (a restarted component keeps its port,
    # so Prometheus keeps scraping it).
    WORKER_HTTP=${HELMQ_WORKER_HTTP:-127.0.0.1:$(free_port)}
    PROJECTOR_HTTP=${HELMQ_PROJECTOR_HTTP:-}
    while [ -z "$PROJECTOR_HTTP" ] || [ "$PROJECTOR_HTTP" = "$WORKER_HTTP" ]; do
        PROJECTOR_HTTP=127.0.0.1:$(free_port)
    done
    : >"$RUN/worker.log"
    : >"$RUN/projector.log"
    : >"$RUN/api.log"
    start_component worker
    WORKER_PID=${comp_pid[worker]}
    start_component projector
    PROJECTOR_PID=${comp_pid[projector]}
    # The HTTP API, with an admin token and one for the seed's tenant.
    if [ ! -s "$RUN/api-tokens" ]; then
        umask 077
        {
            echo "# token principal tenant|admin (written by make run)"
            echo "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n') admin admin"
            echo "$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n') acme 3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b"
        } >"$RUN/api-tokens"
        umask 022
    fi
    API_LISTEN=${HELMQ_API_LISTEN:-127.0.0.1:8080}
    start_component api
    API_PID=${comp_pid[api]}
    sleep 0.3
    if kill -0 "$API_PID" 2>/dev/null; then
        ADMIN_TOKEN=$(awk '$3 == "admin" {print $1}' "$RUN/api-tokens")
        API_NOTE="http://$API_LISTEN/api/v1/helm/releases (tokens in $RUN/api-tokens; log $RUN/api.log)"
    else
        # Not supervised: it would fail the same way again (the port is taken).
        wait "$API_PID" 2>/dev/null
        unset 'comp_pid[api]'
        started_pids[${comp_slot[api]}]=""
        rm -f "$RUN/api.pid"
        API_NOTE="not started: $(tail -1 "$RUN/api.log") (set HELMQ_API_LISTEN=127.0.0.1:PORT)"
        ADMIN_TOKEN=""
    fi
    for _ in $(seq 1 600); do
        grep -q 'assigned ' "$RUN/worker.log" 2>/dev/null && grep -q 'projecting ' "$RUN/projector.log" 2>/dev/null && break
        kill -0 "$WORKER_PID" 2>/dev/null || { tail -20 "$RUN/worker.log" >&2; say "helmq-worker exited"; exit 1; }
        kill -0 "$PROJECTOR_PID" 2>/dev/null || { tail -20 "$RUN/projector.log" >&2; say "helmq-projector exited"; exit 1; }
        sleep 0.1
    done
    prometheus_up
    {
        echo "export HELMQ_BROKERS='$HELMQ_BROKERS'"
        echo "export HELMQ_DATABASE_URL='$HELMQ_DATABASE_URL'"
        echo "export PATH='$BIN':\"\$PATH\""
        if [ -n "${started_cluster:-}" ]; then
            # helm and kubectl against the emulated cluster, helm push to the registry.
            echo "export KUBECONFIG='$KUBECONFIG'"
            echo "export HELMQ_CHART_REPO='$HELMQ_CHART_REPO'"
            echo "export HELM_CACHE_HOME='$HELM_CACHE_HOME' HELM_CONFIG_HOME='$HELM_CONFIG_HOME' HELM_DATA_HOME='$HELM_DATA_HOME'"
            echo "export PATH='$ROOT/build/tools':\"\$PATH\""
        fi
    } >"$RUN/env.sh"
    echo "${started_pids[*]}" >"$RUN/pids"
}

# Debian's Prometheus, when installed (HELMQ_RUN_PROMETHEUS=0: never), scraping
# the worker, the projector and the API with docs/prometheus/helmq-rules.yml.
# Not supervised and not needed: make run goes on without it.
prometheus_up() {
    PROM_NOTE="not installed (apt-get install prometheus; rules: docs/prometheus/helmq-rules.yml)"
    [ "${HELMQ_RUN_PROMETHEUS:-1}" = 0 ] && { PROM_NOTE="off (HELMQ_RUN_PROMETHEUS=0)"; return 0; }
    command -v prometheus >/dev/null 2>&1 || return 0
    local dir=$RUN/prometheus listen=${HELMQ_PROMETHEUS_LISTEN:-}
    if [ -z "$listen" ]; then
        listen=127.0.0.1:9090
        (exec 3<>/dev/tcp/127.0.0.1/9090) 2>/dev/null && listen=127.0.0.1:$(free_port)
    fi
    mkdir -p "$dir/data"
    cat >"$dir/prometheus.yml" <<EOY
# Written by make run (tests/lib/run.sh) for this run's ports.
global:
  scrape_interval: 5s
  evaluation_interval: 5s
rule_files:
  - $ROOT/docs/prometheus/helmq-rules.yml
scrape_configs:
  - job_name: helmq-worker
    static_configs: [{targets: ['$WORKER_HTTP']}]
  - job_name: helmq-projector
    static_configs: [{targets: ['$PROJECTOR_HTTP']}]
  - job_name: helmq-api
    static_configs: [{targets: ['$API_LISTEN']}]
EOY
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="$listen" >"$dir/prometheus.log" 2>&1 &
    PROM_PID=$!
    echo "$PROM_PID" >"$RUN/prometheus.pid"
    local i
    for i in $(seq 1 50); do
        (exec 3<>"/dev/tcp/${listen%:*}/${listen##*:}") 2>/dev/null && break
        kill -0 "$PROM_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$PROM_PID" 2>/dev/null; then
        PROM_NOTE="http://$listen (Debian's Prometheus: scrapes worker, projector and API every 5 s with docs/prometheus/helmq-rules.yml; /alerts; log $dir/prometheus.log)"
    else
        wait "$PROM_PID" 2>/dev/null
        PROM_PID=""
        PROM_NOTE="did not start: $(tail -1 "$dir/prometheus.log") (HELMQ_PROMETHEUS_LISTEN=127.0.0.1:PORT)"
    fi
}

print_where() {
    CLUSTER_NEXT=""
    [ -n "${started_cluster:-}" ] && CLUSTER_NEXT="  kubectl get deploy,svc -n tenant-acme   # the release in the emulated cluster
  helm list -A                  # helm's own view (build/tools/helm, on PATH after source)
  helm push CHART.tgz \$HELMQ_CHART_REPO --plain-http   # publish a chart of your own
"
    cat >&2 <<EOM

helmq is running.
  Kafka:       $BROKER_NOTE
  PostgreSQL:  $DB_NOTE
  helm:        $HELM_NOTE
  worker:      pid $WORKER_PID, log $RUN/worker.log, metrics http://$WORKER_HTTP/metrics
  projector:   pid $PROJECTOR_PID, log $RUN/projector.log, metrics http://$PROJECTOR_HTTP/metrics
  HTTP API:    $API_NOTE
  Prometheus:  $PROM_NOTE

Next, in another terminal:
  source $RUN/env.sh
  helmq install -f tests/fixtures/seed-install.json --wait
  helmq releases list --tenant 3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b --output table
  helmq events
  curl -H "Authorization: Bearer ${ADMIN_TOKEN:-TOKEN}" http://$API_LISTEN/api/v1/helm/releases/summary
  curl -N -H "Authorization: Bearer ${ADMIN_TOKEN:-TOKEN}" http://$API_LISTEN/api/v1/helm/releases/events   # live events (SSE)
  open http://$API_LISTEN/ in a browser: the status page (paste a token from $RUN/api-tokens)
  make demo                     # the seed's whole story, step by step
$CLUSTER_NEXT
If the worker, the projector or the API dies, make run says so and starts it again
(after 1 s, then longer while it keeps dying; HELMQ_RUN_RESTART=0 stops everything
instead). To restart one yourself:
  bash tests/lib/run.sh restart worker      # or projector, api
The embedded broker is not restarted: it is volatile, and stopping make run (or the
broker dying) loses its topics and every command not yet run.

Ctrl-C stops everything make run started. Logs follow.

EOM
}

stack_running() { # a stack started by another make run?
    [ -f "$RUN/env.sh" ] && [ -f "$RUN/pids" ] || return 1
    local p
    for p in $(cat "$RUN/pids"); do kill -0 "$p" 2>/dev/null || return 1; done
}

case "$mode" in
serve)
    if stack_running; then
        say "make run is already running (pids $(cat "$RUN/pids")); stop it with Ctrl-C there"
        exit 1
    fi
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    stack_up
    print_where
    tail -n +1 -F "$RUN/worker.log" "$RUN/projector.log" &
    tail_pid=$!
    supervise
    ;;
restart)
    name=${2:-}
    case "$name" in
    worker | projector | api) ;;
    *)
        echo "usage: run.sh restart worker|projector|api" >&2
        exit 2
        ;;
    esac
    if ! [ -f "$RUN/env.sh" ] || ! [ -s "$RUN/$name.pid" ]; then
        say "no running make run with a helmq-$name in $RUN"
        exit 1
    fi
    old=$(cat "$RUN/$name.pid")
    touch "$RUN/restart.$name"
    kill -TERM "$old" 2>/dev/null
    say "asked helmq-$name (pid $old) to stop; make run starts it again"
    # The worker may take its --drain-timeout-ms (60 s) to finish running helm.
    for _ in $(seq 1 1000); do
        new=$(cat "$RUN/$name.pid" 2>/dev/null)
        if [ -n "$new" ] && [ "$new" != "$old" ] && kill -0 "$new" 2>/dev/null; then
            say "helmq-$name restarted: pid $new"
            exit 0
        fi
        sleep 0.1
    done
    rm -f "$RUN/restart.$name"
    say "helmq-$name did not come back within 100 s; see $RUN/$name.log"
    exit 1
    ;;
demo)
    if stack_running; then
        say "using the stack of the running make run"
        . "$RUN/env.sh"
    else
        trap cleanup EXIT
        trap 'exit 130' INT TERM
        say "starting an embedded stack for the demo"
        stack_up
        print_where 2>"$RUN/where.txt"
    fi
    exec 3>&1
    HELMQ_BIN=$BIN bash "$ROOT/tests/lib/demo.sh"
    rc=$?
    exit $rc
    ;;
*)
    echo "usage: run.sh serve|demo|restart worker|projector|api" >&2
    exit 2
    ;;
esac
