#!/usr/bin/env bash
# helmq-api: the seed's REST endpoints driven with curl against the embedded
# stack; the seed's story over HTTP gives the CLI's results; tokens, tenants,
# oversize and malformed requests get the right status codes; /metrics and
# /healthz answer.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start
WPORT=$(free_port)
PPORT=$(free_port)
[ "$PPORT" != "$WPORT" ] || PPORT=$(free_port)
worker_start --http-listen 127.0.0.1:$WPORT --metrics-max-tenants 1
projector_start --http-listen 127.0.0.1:$PPORT
api_start
B="$API_URL/api/v1/helm/releases"
# c METHOD URL TOKEN [curl args]: prints "STATUS BODY"
c() {
    local m=$1 url=$2 tok=$3
    shift 3
    curl -s -o "$T/body" -w '%{http_code}' -X "$m" ${tok:+-H "Authorization: Bearer $tok"} "$@" "$url"
    printf ' '
    cat "$T/body"
}
status() { cut -d' ' -f1 <<<"$1"; }
body() { cut -d' ' -f2- <<<"$1"; }
wait_projection() { # wait_projection RELEASE_ID STATUS REVISION
    wait_for "release $1 at $2/$3" 60 bash -c \
        "curl -s -H 'Authorization: Bearer $ADMIN_TOKEN' '$B/$1' | jq -e '.status == \"$2\" and .revision == $3' >/dev/null"
}

# The seed's story over HTTP.
r=$(c POST "$B" "$ACME_TOKEN" -H 'Content-Type: application/json' --data-binary @tests/fixtures/seed-install.json)
is "$(status "$r")" 202 "POST the seed's install body: 202"
CID=$(body "$r" | jq -r .commandId)
RID=$(body "$r" | jq -r .releaseId)
[[ $CID =~ ^[0-9a-f-]{36}$ && $RID =~ ^[0-9a-f-]{36}$ ]]
ok $? "the answer carries commandId and releaseId"
wait_projection "$RID" deployed 1
ok $? "the install reaches the projection under the releaseId the API gave"
r=$(c GET "$B/$RID" "$ACME_TOKEN")
is "$(status "$r")" 200 "GET /:releaseId: 200"
is "$(body "$r" | jq -r '[.releaseName,.namespace,.chartName,.chartVersion,.appVersion,.status,.revision] | join(" ")')" \
    "acme-ai-service tenant-acme matih-ai-service 1.0.0 2.0.0 deployed 1" "with the seed's fields"
cli=$("$HELMQ_BIN/helmq" releases get "$RID" | jq -cS .)
is "$(body "$r" | jq -cS .)" "$cli" "the same document as helmq releases get"
ev=$(events_json --command-id "$CID" | jq -c 'select(.terminal)')
is "$(jq -r .performedBy <<<"$ev")" acme-deployer "performedBy is the token's principal"
r=$(c GET "$B/tenant/$TENANT" "$ACME_TOKEN")
is "$(status "$r")" 200 "GET /tenant/:tenantId: 200"
is "$(body "$r" | jq -r '.[0] | "\(.status) \(.revision)"')" "deployed 1" "with current status and revision"
is "$(body "$r" | jq -cS .)" "$("$HELMQ_BIN/helmq" releases list --tenant $TENANT | jq -cS .)" "the same as helmq releases list"
r=$(c DELETE "$B/$RID?reason=Tenant%20migration" "$ACME_TOKEN")
is "$(status "$r")" 202 "DELETE /:releaseId?reason=…: 202"
wait_projection "$RID" uninstalled 2
r=$(c GET "$B/$RID" "$ACME_TOKEN")
is "$(body "$r" | jq -r .uninstallReason)" "Tenant migration" "the reason from ?reason= is kept"
r=$(c GET "$B/$RID/history" "$ACME_TOKEN")
is "$(status "$r")" 200 "GET /:releaseId/history: 200"
is "$(body "$r" | jq -r 'map("\(.revision):\(.status):\(.performedBy)") | join(",")')" \
    "1:superseded:acme-deployer,2:uninstalled:acme-deployer" "history with the seed's fields"
is "$(body "$r" | jq -cS .)" "$("$HELMQ_BIN/helmq" releases history "$RID" | jq -cS .)" "the same as helmq releases history"
r=$(c DELETE "$B/$RID" "$ACME_TOKEN")
is "$(status "$r")" 409 "DELETE of an uninstalled release: 409"
r=$(c GET "$B/summary" "$ADMIN_TOKEN")
is "$(status "$r")" 200 "GET /summary as admin: 200"
is "$(body "$r" | jq -cS .)" "$("$HELMQ_BIN/helmq" releases summary | jq -cS .)" "the same as helmq releases summary"

# Tenants and tokens.
r=$(c POST "$B" "$GLOBEX_TOKEN" --data-binary "$(jq -c --arg t $OTHER_TENANT '.tenantId=$t | .namespace="tenant-globex"' tests/fixtures/seed-install.json)")
is "$(status "$r")" 202 "another tenant installs its own release"
GRID=$(body "$r" | jq -r .releaseId)
wait_projection "$GRID" deployed 1
is "$(status "$(c GET "$B/$GRID" "$ACME_TOKEN")")" 404 "a tenant cannot read another tenant's release (404)"
is "$(status "$(c GET "$B/$GRID/history" "$ACME_TOKEN")")" 404 "nor its history (404)"
is "$(status "$(c GET "$B/tenant/$OTHER_TENANT" "$ACME_TOKEN")")" 404 "nor list another tenant (404)"
is "$(status "$(c DELETE "$B/$GRID?reason=x" "$ACME_TOKEN")")" 404 "nor uninstall it (404)"
is "$(status "$(c POST "$B" "$ACME_TOKEN" --data-binary "$(jq -c --arg t $OTHER_TENANT '.tenantId=$t' tests/fixtures/seed-install.json)")")" 404 \
    "nor install for another tenant (404)"
is "$(status "$(c GET "$B/$GRID" "$ADMIN_TOKEN")")" 200 "the admin reads any tenant's release"
is "$(status "$(c GET "$B/summary" "$ACME_TOKEN")")" 403 "the summary needs admin (403)"
is "$(status "$(c GET "$B/$GRID" "")")" 401 "no token: 401"
is "$(status "$(c GET "$B/$GRID" "wrong-token-0123456789abcdef")")" 401 "a wrong token: 401"
like "$(c GET "$B/$GRID" "wrong-token-0123456789abcdef")" '"error":' "errors are JSON"

# Bad requests.
r=$(c POST "$B" "$ACME_TOKEN" --data-binary '{"tenantId": ')
is "$(status "$r")" 400 "malformed JSON: 400"
r=$(c POST "$B" "$ACME_TOKEN" --data-binary "$(jq -c '.releaseName="Bad_Name"' tests/fixtures/seed-install.json)")
is "$(status "$r")" 400 "an invalid field: 400"
is "$(body "$r" | jq -r '.field + " " + .rule')" "releaseName helm-release-name" "with the field and the rule"
r=$(c POST "$B" "$ACME_TOKEN" --data-binary "$(jq -c '.timeout=0' tests/fixtures/seed-install.json)")
is "$(body "$r" | jq -r '.field + " " + .rule')" "timeout range" "timeout 0: field and rule"
head -c 1200000 /dev/zero | tr '\0' 'x' >"$T/big"
r=$(c POST "$B" "$ACME_TOKEN" --data-binary @"$T/big")
is "$(status "$r")" 413 "an oversize body: 413"
is "$(status "$(c GET "$B/not-a-uuid" "$ACME_TOKEN")")" 400 "a malformed id: 400"
is "$(status "$(c PUT "$B/$GRID" "$ACME_TOKEN")")" 405 "a wrong method: 405"
is "$(status "$(c GET "$API_URL/nope" "$ACME_TOKEN")")" 404 "an unknown path: 404"
raw=$(printf 'GARBAGE / HTTP/9.9\r\n\r\n' | timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/${API_URL##*:}; cat >&3; cat <&3")
like "$raw" "400 Bad Request" "a malformed request line: 400"
# keep-alive: two requests on one connection
out=$(curl -s -v -H "Authorization: Bearer $ADMIN_TOKEN" "$B/$GRID" "$B/$GRID/history" 2>&1)
like "$out" "Re-using existing connection" "keep-alive: the second request reuses the connection"

# Health and metrics.
r=$(c GET "$API_URL/healthz" "")
is "$(status "$r")" 200 "/healthz: 200"
is "$(body "$r" | jq -r .postgres)" true "/healthz reports PostgreSQL"
m=$(curl -s "$API_URL/metrics")
like "$m" 'helmq_api_requests_total{class="2xx"}' "/metrics: requests by status class"
like "$m" 'helmq_api_commands_total{outcome="delivered"} 3' "/metrics: commands delivered"
like "$m" "helmq_postgres_up 1" "/metrics: PostgreSQL connectivity"
wm=$(curl -s "http://127.0.0.1:$WPORT/metrics")
like "$wm" 'helmq_worker_commands_total{outcome="succeeded"} 3' "worker /metrics: commands by outcome"
# Per tenant, capped at one tenant (--metrics-max-tenants 1): acme came first
# and has its own series; globex's install counts under "other".
like "$wm" "helmq_worker_tenant_commands_total{tenant=\"$TENANT\",outcome=\"succeeded\"} 2" \
    "worker /metrics: commands per tenant (acme's install and uninstall)"
like "$wm" 'helmq_worker_tenant_commands_total{tenant="other",outcome="succeeded"} 1' \
    "  and the tenants beyond --metrics-max-tenants under \"other\""
unlike "$wm" "tenant=\"$OTHER_TENANT\"" "  so that a tenant beyond the cap has no series of its own"
like "$wm" "helmq_worker_helm_timeouts_total 0" "worker /metrics: helm timeouts"
like "$wm" "helmq_worker_in_flight 0" "worker /metrics: in-flight operations"
like "$wm" "helmq_worker_events_unacked 0" "worker /metrics: every event acknowledged by the broker"
like "$wm" "helmq_worker_buffered 0" "worker /metrics: no command buffered"
like "$wm" 'helmq_worker_helm_duration_seconds_bucket{le="+Inf"}' "worker /metrics: helm durations"
like "$wm" "helmq_worker_consumer_lag" "worker /metrics: consumer lag"
like "$wm" "helmq_postgres_up 1" "worker /metrics: PostgreSQL connectivity"
like "$wm" "helmq_kafka_brokers_up" "worker /metrics: Kafka connectivity"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$WPORT/healthz")" 200 "worker /healthz: 200"
pm=$(curl -s "http://127.0.0.1:$PPORT/metrics")
like "$pm" "helmq_projector_events_total" "projector /metrics: events"
like "$pm" 'helmq_projector_batch_size_bucket{le="+Inf"}' "projector /metrics: batch sizes"
like "$pm" "helmq_projector_consumer_lag" "projector /metrics: consumer lag"
like "$pm" "helmq_postgres_up 1" "projector /metrics: PostgreSQL connectivity"
is "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PPORT/healthz")" 200 "projector /healthz: 200"

# The summary grouped by status and chart, of every tenant or of one (issue 26).
# So far: acme's seed release uninstalled, globex's deployed (both matih-ai-service).
# More releases over other (status, chart) pairs, in both tenants: two more
# charts deployed by acme and one by globex, and a failed (non-atomic) install.
install_as() { # install_as TOKEN TENANT NAMESPACE RELEASE CHART VERSION: prints the releaseId
    local r
    r=$(c POST "$B" "$1" --data-binary "$(jq -c --arg t "$2" --arg n "$3" --arg r "$4" --arg c "$5" --arg v "$6" \
        '.tenantId=$t | .namespace=$n | .releaseName=$r | .chartName=$c | .chartVersion=$v | .atomic=false' \
        tests/fixtures/seed-install.json)")
    [ "$(status "$r")" = 202 ] || diag "install $4: $r"
    body "$r" | jq -r .releaseId
}
sim_knob tenant-acme broken '{"install": {"fail": "pod crashloop: image pull backoff"}}'
S1=$(install_as "$ACME_TOKEN" $TENANT tenant-acme cfg-a tiny-config 0.1.0)
S2=$(install_as "$ACME_TOKEN" $TENANT tenant-acme cfg-b tiny-config 0.1.0)
S3=$(install_as "$ACME_TOKEN" $TENANT tenant-acme broken matih-ai-service 1.0.0)
S4=$(install_as "$GLOBEX_TOKEN" $OTHER_TENANT tenant-globex cfg tiny-config 0.1.0)
wait_projection "$S1" deployed 1 && wait_projection "$S2" deployed 1 && wait_projection "$S3" failed 1 &&
    wait_projection "$S4" deployed 1
ok $? "four more releases projected: three deployed (tiny-config), one failed (matih-ai-service)"
r=$(c GET "$B/summary" "$ADMIN_TOKEN")
is "$(status "$r")" 200 "GET /summary: 200"
is "$(body "$r" | jq -c .groups)" \
    '[{"status":"deployed","chartName":"matih-ai-service","count":1},{"status":"deployed","chartName":"tiny-config","count":3},{"status":"failed","chartName":"matih-ai-service","count":1},{"status":"uninstalled","chartName":"matih-ai-service","count":1}]' \
    "groups: every (status, chart) pair across tenants with its count, by status then chart"
is "$(body "$r" | jq -c '[.total, .byStatus, .byChart]')" \
    '[6,{"deployed":4,"failed":1,"uninstalled":1},{"matih-ai-service":3,"tiny-config":3}]' \
    "the total, byStatus and byChart are still there, and agree with the groups"
is "$(body "$r" | jq -cS .)" "$("$HELMQ_BIN/helmq" releases summary | jq -cS .)" "the same as helmq releases summary"
r=$(c GET "$B/summary?tenantId=$TENANT" "$ADMIN_TOKEN")
is "$(status "$r")" 200 "GET /summary?tenantId=: 200"
is "$(body "$r" | jq -c .)" \
    '{"total":4,"byStatus":{"deployed":2,"failed":1,"uninstalled":1},"byChart":{"matih-ai-service":2,"tiny-config":2},"groups":[{"status":"deployed","chartName":"tiny-config","count":2},{"status":"failed","chartName":"matih-ai-service","count":1},{"status":"uninstalled","chartName":"matih-ai-service","count":1}]}' \
    "?tenantId=: that tenant's counts only"
is "$(body "$r" | jq -cS .)" "$("$HELMQ_BIN/helmq" releases summary --tenant $TENANT | jq -cS .)" \
    "the same as helmq releases summary --tenant"
r=$(c GET "$B/summary?tenantId=${OTHER_TENANT^^}" "$ADMIN_TOKEN")
is "$(body "$r" | jq -c '[.total, .groups]')" \
    '[2,[{"status":"deployed","chartName":"matih-ai-service","count":1},{"status":"deployed","chartName":"tiny-config","count":1}]]' \
    "the other tenant's (an upper-case UUID is the same tenant)"
r=$(c GET "$B/summary?tenantId=00000000-0000-4000-8000-000000000000" "$ADMIN_TOKEN")
is "$(status "$r") $(body "$r" | jq -c .)" '200 {"total":0,"byStatus":{},"byChart":{},"groups":[]}' \
    "a tenant without releases: zeros and no groups"
is "$(status "$(c GET "$B/summary?tenantId=$TENANT" "$ACME_TOKEN")")" 403 "a tenant's token gets 403, even for its own tenant"
is "$(status "$(c GET "$B/summary?tenantId=nope" "$ACME_TOKEN")")" 403 "... before its tenantId is looked at"
r=$(c GET "$B/summary?tenantId=not-a-uuid" "$ADMIN_TOKEN")
is "$(status "$r")" 400 "a malformed tenantId: 400"
is "$(body "$r" | jq -c '[.field, .rule, (.error | type)]')" '["tenantId","uuid","string"]' "with the usual error shape"
is "$(status "$(c GET "$B/summary?tenantId=" "$ADMIN_TOKEN")")" 400 "an empty tenantId: 400"
# The CLI: its table has the groups, one line each.
"$HELMQ_BIN/helmq" releases summary --output table >"$T/summary.table"
is "$?" 0 "helmq releases summary --output table: exit 0"
is "$(sed -n '/^status  *chart  *count$/,$p' "$T/summary.table")" \
    "$(printf '%-20s%-30s%s\n' status chart count deployed matih-ai-service 1 deployed tiny-config 3 \
        failed matih-ai-service 1 uninstalled matih-ai-service 1)" "its table ends with the groups: status, chart, count"
is "$("$HELMQ_BIN/helmq" releases summary --tenant $OTHER_TENANT --output table | sed -n '/^status  *chart  *count$/,$p')" \
    "$(printf '%-20s%-30s%s\n' status chart count deployed matih-ai-service 1 deployed tiny-config 1)" \
    "and --tenant narrows them"

# helmq-api renders releases itself (worker/api/api_render.c): its objects are
# helmq.release_json's, for text that needs escaping and for NULLs too.
XT=7e57e57e-0000-4000-8000-00000000e5c0
psql_q "INSERT INTO helmq.releases (release_id, tenant_id, namespace, release_name, chart_name, chart_version,
            app_version, status, revision, description, uninstall_reason, last_error, values_digest,
            last_event_id, created_at, updated_at)
        VALUES ('7e57e57e-0000-4000-8000-00000000e5c1', '$XT', 'ns-esc', 'b', NULL, '1.0.0', NULL, 'failed', 3,
                E'say \"hi\" \\\\ back\nline\ttab \\x01\\x1f ü → 😀', NULL, E'<script>\r\f\b', NULL,
                gen_random_uuid(), '2026-01-02 03:04:05.678901+00', '2026-01-02 03:04:05+00'),
               ('7e57e57e-0000-4000-8000-00000000e5c2', '$XT', 'ns-esc', 'a', 'c', '2.0.0', '2', 'deployed', 1,
                '', 'gone', NULL, 'sha256:00', gen_random_uuid(), now(), now())"
is "$?" 0 "two releases with awkward text written straight into the projection"
r=$(c GET "$B/tenant/$XT" "$ADMIN_TOKEN")
is "$(status "$r")" 200 "their tenant's list: 200"
is "$(body "$r" | jq -cS .)" "$(psql_q "SELECT helmq.releases_by_tenant('$XT')" | jq -cS .)" \
    "the same array as helmq.releases_by_tenant (order, fields, escapes, nulls)"
is "$(body "$r" | jq -r '.[1].description')" "$(printf 'say "hi" \\ back\nline\ttab \001\037 ü → 😀')" \
    "the description's quotes, backslash, control characters and non-ASCII text survive"
r=$(c GET "$B/7e57e57e-0000-4000-8000-00000000e5c1" "$ADMIN_TOKEN")
is "$(body "$r" | jq -cS .)" \
    "$(psql_q "SELECT helmq.release_json(r) FROM helmq.releases r WHERE release_id = '7e57e57e-0000-4000-8000-00000000e5c1'" | jq -cS .)" \
    "GET /:releaseId: the same object as helmq.release_json"
is "$(body "$r" | jq -r .createdAt)" "$(psql_q "SELECT to_json(timestamptz '2026-01-02 03:04:05.678901+00') #>> '{}'")" \
    "createdAt in PostgreSQL's JSON form"
is "$(c GET "$B/7e57e57e-0000-4000-8000-00000000e5c1/history" "$ADMIN_TOKEN")" "200 []" \
    "a release without history rows: an empty page"
psql_q "INSERT INTO helmq.release_history (release_id, revision, tenant_id, chart_name, chart_version, app_version,
            status, operation, description, performed_by, command_id, created_at)
        SELECT '7e57e57e-0000-4000-8000-00000000e5c2', n, '$XT', 'c', n || '.0.0', NULL, 'deployed', 'upgrade',
               E'\"q\" \\\\ \n\\x02 ' || n, E'ops\tbot', 'cmd-' || n, timestamptz '2026-01-02 03:04:05.5+00' + n * interval '1 s'
          FROM generate_series(1, 3) n"
is "$?" 0 "three revisions with awkward text written straight into the history"
r=$(c GET "$B/7e57e57e-0000-4000-8000-00000000e5c2/history?limit=2" "$ADMIN_TOKEN")
is "$(body "$r" | jq -cS .)" \
    "$(psql_q "SELECT helmq.release_history('7e57e57e-0000-4000-8000-00000000e5c2')" | jq -cS '.[0:2]')" \
    "a history page: helmq.release_history's entries (superseded shown, escapes, nulls)"
is "$(body "$r" | jq -r 'map(.status) | join(" ")')" "superseded superseded" "the replaced revisions show superseded"
r=$(c GET "$B/7e57e57e-0000-4000-8000-00000000e5c2/history?limit=2&after=2" "$ADMIN_TOKEN")
is "$(body "$r" | jq -c 'map([.revision, .status])')" '[[3,"deployed"]]' "its last page: the current revision, deployed"
r=$(c GET "$B?limit=2" "$ADMIN_TOKEN")
is "$(body "$r" | jq -c '[length, .[0].releaseName, .[0].uninstallReason]')" '[2,"a","gone"]' \
    "GET /?limit=2: two, the most recently changed first"

kill -TERM "$API_PID"
wait "$API_PID"
is "$?" 0 "SIGTERM: helmq-api exits 0"
done_testing
