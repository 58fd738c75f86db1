#!/usr/bin/env bash
# make demo: the seed's story, step by step, against a running helmq
# (HELMQ_BROKERS and HELMQ_DATABASE_URL set by run.sh). Each step prints the
# command it runs and what came back. Exit 0 only if every step did what the
# seed says. The demo ends by uninstalling, so it can run again; a release
# left live by an interrupted demo is uninstalled first.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BIN=${HELMQ_BIN:-$ROOT/bin}
helmq() { "$BIN/helmq" "$@"; }
step() { printf '\n\033[1m--- %s\033[0m\n' "$*"; }
[ -t 1 ] || step() { printf '\n--- %s\n' "$*"; }
run() { printf '$ %s\n' "$*" >&2; "$@"; }
fail() { echo "demo: $*" >&2; exit 1; }

SEED=tests/fixtures/seed-install.json
TENANT=$(jq -r .tenantId "$SEED")
left=$(helmq releases list --tenant "$TENANT" 2>/dev/null |
    jq -r '.[] | select(.releaseName == "acme-ai-service" and .status != "uninstalled") | .releaseId' || true)
if [ -n "$left" ]; then
    step "0. A previous demo left acme-ai-service installed: uninstalling it first"
    run helmq uninstall acme-ai-service --tenant-id "$TENANT" --namespace tenant-acme --reason "demo restart" --wait >/dev/null || true
fi

step "1. Install the seed's example (tenant $TENANT): acme-ai-service, matih-ai-service 1.0.0, timeout 600, atomic, waitForJobs"
cat "$SEED"
out=$(run helmq install -f "$SEED" --performed-by demo --description "seed install" --wait)
echo "$out"
RID=$(sed 1d <<<"$out" | jq -r .releaseId)
[ "$(sed 1d <<<"$out" | jq -r .status)" = deployed ] || fail "the install did not deploy"

projected() { # projected REVISION STATUS: wait for the projection to catch up
    for _ in $(seq 1 300); do
        got=$(helmq releases get "$RID" 2>/dev/null | jq -r '"\(.revision) \(.status)"' || true)
        [ "$got" = "$1 $2" ] && return 0
        sleep 0.2
    done
    fail "the projection did not show revision $1 $2 (got: $got)"
}
projected 1 deployed

step "2. Query it by id, and the tenant's releases"
run helmq releases get "$RID"
run helmq releases list --tenant "$TENANT" --output table

step "3. Upgrade to matih-ai-service 1.1.0 (appVersion 2.1.0, 3 replicas)"
run helmq upgrade acme-ai-service --tenant-id "$TENANT" --namespace tenant-acme --chart-name matih-ai-service \
    --chart-version 1.1.0 --app-version 2.1.0 --set-values '{"replicaCount": 3}' --atomic --timeout 600 \
    --performed-by demo --description "scale to 3 replicas" --wait | sed 1d | jq -c '{eventType, status, revision, chartVersion, appVersion}'
projected 2 deployed

step "4. Its revision history"
run helmq releases history "$RID"
run helmq releases history "$RID" --output table

step "5. Uninstall it with reason \"Tenant migration\" (the record and its history stay)"
run helmq uninstall acme-ai-service --tenant-id "$TENANT" --namespace tenant-acme --reason "Tenant migration" \
    --performed-by demo --wait | sed 1d | jq -c '{eventType, status, revision, reason}'
projected 3 uninstalled
run helmq releases get "$RID"
run helmq releases history "$RID" --output table

step "6. The summary of all releases, by status and by chart"
run helmq releases summary
run helmq releases summary --output table
step "Demo complete."
