#!/usr/bin/env bash
# Load test of helmq-api's GET endpoints with wrk (Debian's): the embedded
# stack, N releases installed through the worker, then wrk on each endpoint.
# Prints one table row per endpoint: requests/s and latency percentiles.
#   DURATION=10 CONNECTIONS=32 THREADS=2 RELEASES=50 bash tests/bench/api-load.sh
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BASH_ARGV0="$ROOT/tests/api-load" # the test libraries find their place from $0
. "$ROOT/tests/lib/tap.sh"
. "$ROOT/tests/lib/common.sh"
. "$ROOT/tests/lib/stack.sh"
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
RELEASES=${RELEASES:-50}
command -v wrk >/dev/null || { echo "wrk is missing (apt-get install wrk)" >&2; exit 1; }
stack_start >/dev/null
worker_start --concurrency 16 >/dev/null
projector_start >/dev/null
api_start >/dev/null
ids=()
for i in $(seq 1 "$RELEASES"); do
    ids+=("$("$HELMQ_BIN/helmq" install "load-$i" -t "$TENANT" -n tenant-acme --chart-name matih-ai-service --chart-version 1.0.0)")
done
for id in "${ids[@]}"; do wait_terminal "$id" 120 >/dev/null || exit 1; done
wait_for "the projection" 60 bash -c "[ \$(psql -X -At '$HELMQ_DATABASE_URL' -c 'select count(*) from helmq.releases') -ge $RELEASES ]"
RID=$(psql_q "select release_id from helmq.releases limit 1")
B="$API_URL/api/v1/helm/releases"
echo "# helmq-api under wrk: $THREADS threads, $CONNECTIONS connections, ${DURATION}s per endpoint, $RELEASES releases"
echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%FT%TZ)"
printf '| endpoint | token | requests/s | p50 | p90 | p99 | errors |\n|---|---|---|---|---|---|---|\n'
run() { # run NAME TOKEN URL
    local out
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $2" "$3" 2>&1)
    local rps p50 p90 p99 errs
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p90=$(awk '$1 == "90%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "${2%%-*}" "$rps" "$p50" "$p90" "$p99" "${errs:-0}"
}
run "GET /releases/:releaseId" "$ACME_TOKEN" "$B/$RID"
run "GET /releases/:releaseId/history" "$ACME_TOKEN" "$B/$RID/history"
run "GET /releases/tenant/:tenantId" "$ACME_TOKEN" "$B/tenant/$TENANT"
run "GET /releases/summary" "$ADMIN_TOKEN" "$B/summary"
run "GET /healthz" "" "$API_URL/healthz"
