#!/usr/bin/env bash
# make run's supervision (tests/lib/run.sh serve, in a private run directory):
# a worker killed with SIGKILL is reported and started again while the rest
# of the stack stays up, and a command sent afterwards completes; `run.sh
# restart projector|api` restarts one component; the banner says the
# embedded broker is volatile; with HELMQ_RUN_RESTART=0 a component dying
# stops everything, as before. With Debian's Prometheus installed, make run
# starts it: it scrapes the three programs (the restarted worker too, on the
# same port) with the shipped rules loaded, and stops with the rest.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"

unset HELMQ_BROKERS HELMQ_DATABASE_URL HELMQ_HELM HELMQ_CHART_REPO HELMQ_RUN_RESTART
export HELMQ_RUN_DIR="$T/run" HELMQ_LOG_LEVEL=info HELMQ_BIN
export HELMQ_API_LISTEN=127.0.0.1:$(free_port)
export HELMQ_PROMETHEUS_LISTEN=127.0.0.1:$(free_port)
# A killed worker's partitions move to its successor after the session timeout.
export HELMQ_KAFKA_SESSION_TIMEOUT_MS=6000 HELMQ_KAFKA_HEARTBEAT_INTERVAL_MS=500
. tests/lib/pg.sh
R=$HELMQ_RUN_DIR

serve_start() { # serve_start OUT: make run in the background; sets SERVE
    bash tests/lib/run.sh serve >"$1" 2>&1 &
    SERVE=$!
    at_exit "kill -TERM $SERVE; wait $SERVE; pg_stop '$R/pg'"
    wait_for "make run to be up" 120 test -s "$R/env.sh" || { tail -30 "$1" >&2; bail "run.sh serve did not start"; }
}
alive() { kill -0 "$(cat "$R/$1.pid" 2>/dev/null)" 2>/dev/null; }
came_back() { [ "$(cat "$R/$1.pid" 2>/dev/null)" != "$2" ] && alive "$1"; }

serve_start "$T/serve.out"
banner=$(cat "$T/serve.out")
like "$banner" "VOLATILE: it keeps nothing on disk" "the banner says the embedded broker is volatile"
like "$banner" "bash tests/lib/run.sh restart worker" "and how to restart one component"
like "$banner" "/api/v1/helm/releases/events" "and where the live event stream is"
like "$banner" "the status page" "and where the status page is"
. "$R/env.sh"

W1=$(cat "$R/worker.pid")
P1=$(cat "$R/projector.pid")
kill -9 "$W1"
wait_for "the worker to come back" 30 came_back worker "$W1"
ok $? "a worker killed with SIGKILL is started again ($W1 -> $(cat "$R/worker.pid"))"
like "$(cat "$T/serve.out")" "helmq-worker EXITED (status 137); restarting it in 1s" "make run says so loudly"
kill -0 "$SERVE"
ok $? "make run kept running"
is "$(cat "$R/projector.pid")" "$P1" "the projector was left alone"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://$HELMQ_API_LISTEN/healthz")" 200 "the API still answers"

if command -v prometheus >/dev/null 2>&1; then
    like "$banner" "Prometheus:  http://$HELMQ_PROMETHEUS_LISTEN" "the banner says where Prometheus is"
    PROM_API=http://$HELMQ_PROMETHEUS_LISTEN/api/v1
    targets_up() { # every helmq target scraped successfully, the restarted worker included
        [ "$(curl -s "$PROM_API/targets" | jq -r '[.data.activeTargets[] | select(.health == "up") | .labels.job] | sort | join(" ")')" = \
            "helmq-api helmq-projector helmq-worker" ]
    }
    wait_for "Prometheus to scrape worker, projector and API" 40 targets_up
    ok $? "Prometheus scrapes the worker (after its restart), the projector and the API" ||
        curl -s "$PROM_API/targets" | jq -c '.data.activeTargets[] | {job: .labels.job, health, lastError}' >&2
    nalerts=$(grep -c '^ *- alert:' docs/prometheus/helmq-rules.yml)
    is "$(curl -s "$PROM_API/rules" | jq -r '[.data.groups[].rules[] | select(.type == "alerting") | .name] | length')" \
        "$nalerts" "with the $nalerts alerts of docs/prometheus/helmq-rules.yml loaded"
    PROM_PID=$(cat "$R/prometheus.pid")
else
    like "$banner" "Prometheus:  not installed" "the banner says Prometheus is not installed"
    PROM_PID=""
fi

out=$("$HELMQ_BIN/helmq" install -f tests/fixtures/seed-install.json --wait --wait-timeout 60 2>"$T/wait.err")
is "$?" 0 "an install sent after the restart completes"
is "$(sed 1d <<<"$out" | jq -r '"\(.eventType) \(.status)"')" "succeeded deployed" "run by the new worker" ||
    tail -5 "$T/wait.err" >&2

bash tests/lib/run.sh restart projector >"$T/restart.out" 2>&1
is "$?" 0 "run.sh restart projector exits 0"
came_back projector "$P1"
ok $? "the projector has a new pid ($P1 -> $(cat "$R/projector.pid"))"
like "$(cat "$T/restart.out")" "helmq-projector restarted" "and says so"
like "$(cat "$T/serve.out")" "helmq-projector stopped on request" "make run logs the requested restart"
A1=$(cat "$R/api.pid")
bash tests/lib/run.sh restart api >/dev/null 2>&1
is "$?" 0 "run.sh restart api exits 0"
wait_for "the API to serve" 20 curl -sf -o /dev/null "http://$HELMQ_API_LISTEN/healthz"
ok $? "the restarted API serves ($A1 -> $(cat "$R/api.pid"))"
bash tests/lib/run.sh restart broker >/dev/null 2>&1
is "$?" 2 "run.sh restart of anything else: usage, exit 2"

kill -TERM "$SERVE"
wait "$SERVE"
like "$(cat "$T/serve.out")" "stopped everything make serve started" "SIGTERM stops everything"
pg_running "$R/pg"
is "$?" 1 "including PostgreSQL"
if [ -n "$PROM_PID" ]; then
    kill -0 "$PROM_PID" 2>/dev/null
    is "$?" 1 "and Prometheus"
fi

# HELMQ_RUN_RESTART=0: the old behaviour. (env.sh pointed at the stack just stopped.)
unset HELMQ_BROKERS HELMQ_DATABASE_URL
HELMQ_RUN_RESTART=0 serve_start "$T/serve0.out"
kill -9 "$(cat "$R/projector.pid")"
wait_for "make run to stop" 30 bash -c "! kill -0 $SERVE 2>/dev/null"
ok $? "HELMQ_RUN_RESTART=0: a projector killed stops make run"
like "$(cat "$T/serve0.out")" "helmq-projector exited (status 137); stopping everything (HELMQ_RUN_RESTART=0)" "and says why"
done_testing
