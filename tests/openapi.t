#!/usr/bin/env bash
# helmq-api against its OpenAPI document, docs/openapi.json: linted by a real
# linter (redocly lint, @redocly/cli); served at /openapi.json as it is in the
# tree; the routes it lists are exactly those helmq-api --help and the
# README's HTTP API table list; and every route answers, for real, only what
# it documents: each answer (successes and errors: 400, 401, 403, 404, 405,
# 408, 409, 413, 414, 431, 503) is checked by tests/openapi/check.js, whose
# status must be documented for the operation and whose headers and body
# must be valid against the document's schemas (ajv, ajv-formats).
# Without npm's registry the test skips, except under CI=true, where it fails.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

DOC=docs/openapi.json
if ! NODE_PATH=$(bash tests/lib/node-deps.sh 2>"$T/npm.log"); then
    why="npm could not install @redocly/cli and ajv (tests/lib/node-deps.sh): $(grep -m1 -E 'FetchError|npm error code|ERR' "$T/npm.log" || tail -1 "$T/npm.log")"
    [ "${CI:-}" = true ] || skip_all "$why"
    ok 1 "CI=true: $why"
    done_testing
    exit 1
fi
export NODE_PATH
check() { node tests/openapi/check.js "$@"; }

# 1. The document is valid OpenAPI 3.1, and clean for redocly's recommended rules.
lint() { NODE_NO_WARNINGS=1 "$NODE_PATH/.bin/redocly" lint "$DOC" --config tests/openapi/redocly.yaml "$@"; }
lint --format=stylish >"$T/lint.out" 2>&1
ok $? "redocly lint $DOC: no errors $(grep -E ' (error|warning) ' "$T/lint.out" | head -5)"
lint --format=json 2>/dev/null | jq -c .totals >"$T/lint.totals"
is "$(cat "$T/lint.totals")" '{"errors":0,"warnings":0,"ignored":0}' "redocly lint: no errors, no warnings"
is "$(jq -r .openapi "$DOC")" 3.1.0 "the document is OpenAPI 3.1.0"

# 2. The routes: the document's, helmq-api --help's and the README's table's.
check routes "$DOC" >"$T/routes.doc"
ok $? "check.js lists the document's routes"
# --help: "  METHOD /path... description" lines; every /path token counts.
"$HELMQ_BIN/helmq-api" --help | awk '/^  (GET|POST|PUT|PATCH|DELETE) +\// {
    for (i = 2; i <= NF; i++) if ($i ~ /^\//) { p = $i; sub(/,$/, "", p); print $1 " " p } }' |
    sed -e 's/?.*//' -e 's/\[.*//' | sort >"$T/routes.help"
# README: the first cell of each row of the HTTP API section's table.
awk '/^## HTTP API/ { on = 1; next } /^## / { on = 0 } on && /^\| `/' README.md | cut -d'|' -f2 |
    grep -oE '`(GET|POST|PUT|PATCH|DELETE) [^`]+`' | tr -d '`' | sed -e 's/?.*//' -e 's/\[.*//' | sort >"$T/routes.readme"
is "$(wc -l <"$T/routes.doc")" 17 "the document has 17 routes"
is "$(cat "$T/routes.help")" "$(cat "$T/routes.doc")" "helmq-api --help lists exactly the document's routes"
is "$(cat "$T/routes.readme")" "$(cat "$T/routes.doc")" "the README's HTTP API table lists exactly the document's routes"

# 3. The real thing.
stack_start
worker_start
projector_start
api_start --request-timeout-ms 3000
B=/api/v1/helm/releases
N=/api/v1/helm/namespaces
EX=$T/exchanges.jsonl
: >"$EX"

# record NAME METHOD PATH STATUS HEADERS_FILE BODY_FILE [REQUEST_FILE]: one exchange for check.js
record() {
    local name=$1 m=$2 path=$3 code=$4 hf=$5 bf=$6 rf=${7:-}
    local headers
    headers=$(tr -d '\r' <"$hf" | jq -Rn '[inputs | select(test("^[A-Za-z0-9-]+: "))
        | capture("^(?<k>[^:]+): (?<v>.*)$") | {(.k | ascii_downcase): .v}] | add // {}')
    jq -cn --arg name "$name" --arg method "$m" --arg path "$path" --argjson status "${code:-0}" \
        --argjson headers "$headers" --rawfile body "$bf" \
        ${rf:+--rawfile request "$rf"} '{$name, $method, $path, $status, $headers, $body}
        + (if $ARGS.named.request then {request: $ARGS.named.request} else {} end)' >>"$EX"
}
# x NAME WANT METHOD PATH TOKEN [CURL_ARGS...]: a request with curl, its status
# checked here and the whole exchange recorded; REQ=FILE names the body sent.
x() {
    local name=$1 want=$2 m=$3 path=$4 tok=$5
    shift 5
    local code
    : >"$T/b"
    if [ "$m" = HEAD ]; then
        code=$(curl -s -I -o /dev/null -D "$T/h" -w '%{http_code}' ${tok:+-H "Authorization: Bearer $tok"} "$@" "$API_URL$path")
    else
        code=$(curl -s -o "$T/b" -D "$T/h" -w '%{http_code}' -X "$m" ${tok:+-H "Authorization: Bearer $tok"} "$@" "$API_URL$path")
    fi
    is "$code" "$want" "$m ${path:0:80}: $name"
    record "$name" "$m" "$path" "$code" "$T/h" "$T/b" "${REQ:-}"
}
# raw NAME WANT METHOD PATH SLEEP BYTES: BYTES sent as they are on a connection held SLEEP seconds
raw() {
    local name=$1 want=$2 m=$3 path=$4 hold=$5 bytes=$6
    (printf '%b' "$bytes"; sleep "$hold") | timeout $((hold + 10)) bash -c \
        "exec 3<>/dev/tcp/127.0.0.1/${API_URL##*:}; cat >&3; cat <&3" >"$T/raw"
    local code
    code=$(head -1 "$T/raw" | cut -d' ' -f2)
    is "$code" "$want" "$m $path (raw): $name"
    tr -d '\r' <"$T/raw" | sed '/^$/q' >"$T/h"
    tr -d '\r' <"$T/raw" | sed '1,/^$/d' >"$T/b"
    record "$name" "$m" "$path" "$code" "$T/h" "$T/b"
}
wait_projection() { # wait_projection RELEASE_ID STATUS REVISION
    wait_for "release $1 at $2/$3" 60 bash -c \
        "curl -s -H 'Authorization: Bearer $ADMIN_TOKEN' '$API_URL$B/$1' | jq -e '.status == \"$2\" and .revision == $3' >/dev/null"
}

# The document, served.
curl -s -D "$T/h" -o "$T/served" "$API_URL/openapi.json"
cmp -s "$T/served" "$DOC"
ok $? "GET /openapi.json (no token) serves $DOC byte for byte"
like "$(tr -d '\r' <"$T/h")" "Content-Type: application/json" "as application/json"
x "the document" 200 GET /openapi.json ""

# Installs (the seed's body), reads.
jq . tests/fixtures/seed-install.json >"$T/seed.json"
REQ=$T/seed.json x "install the seed's body" 202 POST "$B" "$ACME_TOKEN" -H 'Content-Type: application/json' --data-binary @"$T/seed.json"
RID=$(jq -r .releaseId "$T/b")
jq --arg t "$OTHER_TENANT" '.tenantId=$t | .namespace="tenant-globex"' tests/fixtures/seed-install.json >"$T/globex.json"
REQ=$T/globex.json x "another tenant installs" 202 POST "$B" "$GLOBEX_TOKEN" --data-binary @"$T/globex.json"
GRID=$(jq -r .releaseId "$T/b")
jq 'del(.tenantId) | .releaseName="acme-two" | .releaseId=null | .description="no tenantId: the token'"'"'s"' \
    tests/fixtures/seed-install.json >"$T/own.json"
REQ=$T/own.json x "install without tenantId (the token's tenant)" 202 POST "$B" "$ACME_TOKEN" --data-binary @"$T/own.json"
wait_projection "$RID" deployed 1
ok $? "the install reaches the projection"
wait_projection "$GRID" deployed 1
# A second helmq-api, on the same PostgreSQL, whose broker is unreachable: the
# commands it takes are never delivered, and answered 503 once librdkafka
# gives up (message.timeout.ms, 30 s): sent now, collected at the end.
API2_PORT=$(free_port)
"$HELMQ_BIN/helmq-api" --listen "127.0.0.1:$API2_PORT" --tokens-file "$T/tokens" --brokers 127.0.0.1:9 \
    >>"$T/api2.log" 2>&1 &
at_exit "kill -9 $!"
wait_for "the second helmq-api to serve" 30 curl -sf "http://127.0.0.1:$API2_PORT/healthz" -o /dev/null
jq '.releaseName="never-delivered"' "$T/seed.json" >"$T/k1.req"
undelivered() { # undelivered N METHOD PATH [CURL_ARGS...]: in the background
    local n=$1 m=$2 path=$3
    shift 3
    curl -s -m 90 -o "$T/k$n.b" -D "$T/k$n.h" -w '%{http_code}' -X "$m" -H "Authorization: Bearer $ADMIN_TOKEN" \
        "$@" "http://127.0.0.1:$API2_PORT$path" >"$T/k$n.code" &
}
undelivered 1 POST "$B" --data-binary @"$T/k1.req"
K1=$!
undelivered 2 DELETE "$B/$GRID?reason=never"
K2=$!
x "a release" 200 GET "$B/$RID" "$ACME_TOKEN"
x "a release, upper-case id, trailing /" 200 GET "$B/${RID^^}/" "$ACME_TOKEN"
x "a release, HEAD" 200 HEAD "$B/$RID" "$ACME_TOKEN"
x "its history" 200 GET "$B/$RID/history" "$ACME_TOKEN"
x "a tenant's releases" 200 GET "$B/tenant/$TENANT" "$ACME_TOKEN"
x "admin: another tenant's releases" 200 GET "$B/tenant/$OTHER_TENANT" "$ADMIN_TOKEN"
x "admin: a tenant without releases" 200 GET "$B/tenant/00000000-0000-4000-8000-000000000000" "$ADMIN_TOKEN"
x "the summary (admin)" 200 GET "$B/summary" "$ADMIN_TOKEN"
x "admin: one tenant's summary" 200 GET "$B/summary?tenantId=$OTHER_TENANT" "$ADMIN_TOKEN"
x "admin: every release" 200 GET "$B" "$ADMIN_TOKEN"
x "a tenant: its releases" 200 GET "$B" "$ACME_TOKEN"
x "admin: the most recent release" 200 GET "$B?limit=1" "$ADMIN_TOKEN"
is "$(jq length "$T/b")" 1 "?limit=1 answers one release"
x "the status page" 200 GET / ""
x "the status page's stylesheet" 200 GET /static/status.css ""
x "the status page's script" 200 GET /static/status.js ""
x "a tenant's namespaces" 200 GET "$N" "$ACME_TOKEN"
x "admin: every namespace" 200 GET "$N" "$ADMIN_TOKEN"
x "admin: one tenant's namespaces" 200 GET "$N?tenantId=$OTHER_TENANT" "$ADMIN_TOKEN"
x "a namespace" 200 GET "$N/tenant-acme" "$ACME_TOKEN"
# The event streams (Server-Sent Events): 2 s of each, from the beginning.
x "the event stream" 200 GET "$B/events?since=beginning" "$ACME_TOKEN" --max-time 2
grep -q '^event: release' "$T/b"
ok $? "with the tenant's events"
x "admin: one tenant's event stream" 200 GET "$B/events?tenantId=$OTHER_TENANT" "$ADMIN_TOKEN" --max-time 2
x "a tenant's event stream" 200 GET "$B/tenant/$TENANT/events?since=beginning" "$ACME_TOKEN" --max-time 2
x "a release's event stream" 200 GET "$B/$RID/events?since=beginning" "$ACME_TOKEN" --max-time 2
grep -q "\"releaseId\":\"$RID\"" "$T/b"
ok $? "with the release's events"
x "a release's event stream, HEAD" 200 HEAD "$B/$RID/events" "$ACME_TOKEN"
x "an event stream resumed" 200 GET "$B/events" "$ADMIN_TOKEN" -H "Last-Event-ID: 0:0" --max-time 2

# 401, 403, 404.
for r in "GET $B/$RID" "HEAD $B/$RID" "GET $B/$RID/history" "GET $B/tenant/$TENANT" "GET $B/summary" \
    "DELETE $B/$RID" "POST $B" "GET $B" "GET $N" "GET $N/tenant-acme" "GET $B/events" "GET $B/tenant/$TENANT/events" \
    "GET $B/$RID/events"; do
    x "no token" 401 ${r% *} "${r#* }" ""
    x "a wrong token" 401 ${r% *} "${r#* }" wrong-token-0123456789abcdef
done
x "the summary is for administrators" 403 GET "$B/summary" "$ACME_TOKEN"
x "the summary is for administrators, ?tenantId= or not" 403 GET "$B/summary?tenantId=$TENANT" "$ACME_TOKEN"
x "an unknown release" 404 GET "$B/00000000-0000-4000-8000-000000000000" "$ACME_TOKEN"
x "another tenant's release" 404 GET "$B/$GRID" "$ACME_TOKEN"
x "another tenant's history" 404 GET "$B/$GRID/history" "$ACME_TOKEN"
x "another tenant's releases" 404 GET "$B/tenant/$OTHER_TENANT" "$ACME_TOKEN"
x "uninstall another tenant's release" 404 DELETE "$B/$GRID?reason=x" "$ACME_TOKEN"
x "uninstall an unknown release" 404 DELETE "$B/00000000-0000-4000-8000-000000000000" "$ADMIN_TOKEN"
x "install for another tenant" 404 POST "$B" "$ACME_TOKEN" --data-binary @"$T/globex.json"
x "another tenant's namespace" 404 GET "$N/tenant-globex" "$ACME_TOKEN"
x "an unclaimed namespace" 404 GET "$N/nobody-here" "$ADMIN_TOKEN"
x "another tenant's namespaces" 404 GET "$N?tenantId=$OTHER_TENANT" "$ACME_TOKEN"
x "a file the status page does not have" 404 GET /static/api.c ""
x "another tenant's event stream" 404 GET "$B/tenant/$OTHER_TENANT/events" "$ACME_TOKEN"
x "another tenant's event stream (?tenantId=)" 404 GET "$B/events?tenantId=$OTHER_TENANT" "$ACME_TOKEN"
x "another tenant's release's event stream" 404 GET "$B/$GRID/events" "$ACME_TOKEN"
x "an unknown release's event stream" 404 GET "$B/00000000-0000-4000-8000-000000000000/events" "$ADMIN_TOKEN"

# 400.
x "a malformed releaseId" 400 GET "$B/not-a-uuid" "$ACME_TOKEN"
x "a malformed releaseId (history)" 400 GET "$B/not-a-uuid/history" "$ACME_TOKEN"
x "a malformed releaseId (DELETE)" 400 DELETE "$B/not-a-uuid" "$ACME_TOKEN"
x "a malformed tenantId" 400 GET "$B/tenant/not-a-uuid" "$ACME_TOKEN"
x "?limit=0" 400 GET "$B?limit=0" "$ADMIN_TOKEN"
x "?limit= not a number" 400 GET "$B?limit=ten" "$ADMIN_TOKEN"
x "a malformed Last-Event-ID" 400 GET "$B/events" "$ADMIN_TOKEN" -H "Last-Event-ID: nope"
x "a malformed ?lastEventId=" 400 GET "$B/tenant/$TENANT/events?lastEventId=0:1,0:2" "$ACME_TOKEN"
x "a malformed since" 400 GET "$B/$RID/events?since=never" "$ACME_TOKEN"
x "a malformed tenantId (events)" 400 GET "$B/tenant/not-a-uuid/events" "$ACME_TOKEN"
x "a malformed ?tenantId= (events)" 400 GET "$B/events?tenantId=nope" "$ADMIN_TOKEN"
x "a malformed releaseId (events)" 400 GET "$B/not-a-uuid/events" "$ACME_TOKEN"
x "POST on the event stream" 405 POST "$B/events" "$ACME_TOKEN"
x "a malformed ?tenantId=" 400 GET "$N?tenantId=nope" "$ADMIN_TOKEN"
x "a malformed ?tenantId= (summary)" 400 GET "$B/summary?tenantId=nope" "$ADMIN_TOKEN"
x "a namespace that is no DNS-1123 label" 400 GET "$N/Bad_NS" "$ADMIN_TOKEN"
x "a bad % escape" 400 GET "$B/%zz" "$ACME_TOKEN"
x "an encoded / in a segment" 400 GET "$B/$RID%2Fhistory" "$ACME_TOKEN"
x "a reason that is not UTF-8" 400 DELETE "$B/$RID?reason=%ff" "$ACME_TOKEN"
x "malformed JSON" 400 POST "$B" "$ACME_TOKEN" --data-binary '{"tenantId": '
x "a JSON array" 400 POST "$B" "$ACME_TOKEN" --data-binary '[]'
x "an invalid releaseName" 400 POST "$B" "$ACME_TOKEN" --data-binary "$(jq -c '.releaseName="Bad_Name"' "$T/seed.json")"
x "an unknown field" 400 POST "$B" "$ACME_TOKEN" --data-binary "$(jq -c '.reason="x"' "$T/seed.json")"
x "timeout 0" 400 POST "$B" "$ACME_TOKEN" --data-binary "$(jq -c '.timeout=0' "$T/seed.json")"
x "admin: no tenantId" 400 POST "$B" "$ADMIN_TOKEN" --data-binary "$(jq -c 'del(.tenantId)' "$T/seed.json")"
raw "a malformed header" 400 GET /healthz 0 'GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n'

# 405: methods a path does not list.
x "PUT on the releases" 405 PUT "$B" "$ACME_TOKEN"
x "POST on the status page" 405 POST / ""
x "DELETE on a status page file" 405 DELETE /static/status.js ""
x "PUT on a release" 405 PUT "$B/$RID" "$ACME_TOKEN"
x "POST on a history" 405 POST "$B/$RID/history" "$ACME_TOKEN"
x "DELETE on a tenant's releases" 405 DELETE "$B/tenant/$TENANT" "$ACME_TOKEN"
x "POST on the summary" 405 POST "$B/summary" "$ADMIN_TOKEN"
x "POST on the namespaces" 405 POST "$N" "$ADMIN_TOKEN"
x "DELETE on a namespace" 405 DELETE "$N/tenant-acme" "$ADMIN_TOKEN"
x "POST on /healthz" 405 POST /healthz ""
x "PUT on /metrics" 405 PUT /metrics ""
x "DELETE on /openapi.json" 405 DELETE /openapi.json ""

# Limits: 408, 413, 414, 431.
head -c 1200000 /dev/zero | tr '\0' 'x' >"$T/big"
x "a body over --max-body" 413 POST "$B" "$ACME_TOKEN" --data-binary @"$T/big"
x "a URL over 8192 bytes" 414 GET "$B/$(printf 'a%.0s' $(seq 9000))" "$ACME_TOKEN"
x "a head over --max-header-bytes" 431 GET /healthz "" -H "X-Big: $(printf 'b%.0s' $(seq 17000))"
x "a URL over 8192 bytes (metrics)" 414 GET "/metrics?pad=$(printf 'a%.0s' $(seq 9000))" ""
x "a head over --max-header-bytes (the document)" 431 GET /openapi.json "" -H "X-Big: $(printf 'b%.0s' $(seq 17000))"
x "a head over --max-header-bytes (the status page)" 431 GET / "" -H "X-Big: $(printf 'b%.0s' $(seq 17000))"
raw "a request not received whole in time" 408 GET /healthz 5 'GET /healthz HTTP/1.1\r\nHost: x\r\n'

# Uninstall, twice.
x "uninstall" 202 DELETE "$B/$RID?reason=Tenant%20migration" "$ACME_TOKEN"
wait_projection "$RID" uninstalled 2
ok $? "the uninstall reaches the projection"
x "uninstall again" 409 DELETE "$B/$RID" "$ACME_TOKEN"
# History pages (two revisions now): the first of one names the next in Link, the last has none.
x "its history, a page of 1" 200 GET "$B/$RID/history?limit=1" "$ACME_TOKEN"
is "$(jq -c '[.[].revision]' "$T/b") $(tr -d '\r' <"$T/h" | grep -i '^link:')" \
    "[1] Link: <$B/$RID/history?limit=1&after=1>; rel=\"next\"" "the first page of 1, and its Link"
x "its history, the page after revision 1" 200 GET "$B/$RID/history?limit=1&after=1" "$ACME_TOKEN"
is "$(jq -c '[.[].revision]' "$T/b") $(grep -ci '^link:' "$T/h")" "[2] 0" "the last page, without Link"
x "its history, a limit out of range" 400 GET "$B/$RID/history?limit=1001" "$ACME_TOKEN"
x "its history, after not a revision" 400 GET "$B/$RID/history?after=-1" "$ACME_TOKEN"

# Health and metrics, then PostgreSQL down: 503.
x "health" 200 GET /healthz ""
x "metrics" 200 GET /metrics ""
x "HEAD /metrics" 200 HEAD /metrics ""
pg_stop "$T/pg" >/dev/null 2>&1
wait_for "helmq-api to see PostgreSQL down" 30 bash -c "[ \"\$(curl -s -o /dev/null -w '%{http_code}' $API_URL/healthz)\" = 503 ]"
x "health, PostgreSQL down" 503 GET /healthz ""
x "a release, PostgreSQL down" 503 GET "$B/$GRID" "$ADMIN_TOKEN"
x "history, PostgreSQL down" 503 GET "$B/$GRID/history" "$ADMIN_TOKEN"
x "a tenant's releases, PostgreSQL down" 503 GET "$B/tenant/$TENANT" "$ACME_TOKEN"
x "the summary, PostgreSQL down" 503 GET "$B/summary" "$ADMIN_TOKEN"
x "uninstall, PostgreSQL down" 503 DELETE "$B/$GRID" "$ADMIN_TOKEN"
x "namespaces, PostgreSQL down" 503 GET "$N" "$ADMIN_TOKEN"
x "a release's event stream, PostgreSQL down" 503 GET "$B/$GRID/events" "$ADMIN_TOKEN"
x "a namespace, PostgreSQL down" 503 GET "$N/tenant-acme" "$ADMIN_TOKEN"
x "metrics, PostgreSQL down" 200 GET /metrics ""

# Kafka unreachable: 503.
wait "$K1" "$K2"
is "$(cat "$T/k1.code")" 503 "POST $B, Kafka unreachable: 503"
record "install, Kafka unreachable" POST "$B" "$(cat "$T/k1.code")" "$T/k1.h" "$T/k1.b"
is "$(cat "$T/k2.code")" 503 "DELETE $B/…, Kafka unreachable: 503"
record "uninstall, Kafka unreachable" DELETE "$B/$GRID" "$(cat "$T/k2.code")" "$T/k2.h" "$T/k2.b"

# 4. Every answer against the document.
check validate "$DOC" "$EX" >"$T/validated"
ok $? "check.js: every answer is one the document describes ($(wc -l <"$EX") exchanges)"
while IFS=$'\t' read -r verdict name what status; do
    if [ "$verdict" = ok ]; then
        ok 0 "$what $status ($name): valid against the document"
    else
        ok 1 "$name: $what"
    fi
done <"$T/validated"
# Every route was exercised: a success and an error on each.
while read -r m path; do
    grep -qP "^ok\t[^\t]*\t$m \Q$path\E\t2" "$T/validated"
    ok $? "$m $path: a success checked"
    grep -qP "^ok\t[^\t]*\t$m \Q$path\E\t[45]" "$T/validated"
    ok $? "$m $path: an error checked"
done <"$T/routes.doc"
is "$(jq -r .status "$EX" | sort -un | tr '\n' ' ')" "200 202 400 401 403 404 405 408 409 413 414 431 503 " \
    "the statuses exercised"

done_testing
