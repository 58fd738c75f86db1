#!/usr/bin/env bash
# The status page helmq-api serves at / (worker/api/static/), driven in
# headless Chromium (Debian's chromium, puppeteer-core; tests/status_page/
# drive.js) against the embedded stack: served without a token; an admin
# token lists every release as the API has them; clicking one shows its
# history; an install and an uninstall sent while the page is open show up
# (the new row, the changed row, the refreshed history) within a second of
# the event through Server-Sent Events when helmq-api has
# /api/v1/helm/releases/events, else within one 2 s poll (the test names the
# path taken, and requires SSE when the route answers); a tenant token shows
# only its tenant's releases; no console errors. Without the events route
# the page's SSE client also runs behind tests/status_page/sse-stand-in.js
# (the route's contract served from the events topic, one dropped stream):
# reconnect with Last-Event-ID, a change shown within a second. The
# screenshot is saved as
# build/artifacts/status-page.png (docs/img/status-page.png is a copy).
# Without chromium or puppeteer-core the test skips, except under CI=true,
# where it fails.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
why=""
if [ ! -x "$CHROMIUM" ]; then
    why="no $CHROMIUM (Debian's chromium: make deps)"
elif ! NODE_PATH=$(bash tests/lib/node-deps.sh 2>"$T/npm.log"); then
    why="npm could not install puppeteer-core (tests/lib/node-deps.sh): $(tail -1 "$T/npm.log")"
fi
if [ -n "$why" ]; then
    [ "${CI:-}" = true ] || skip_all "$why"
    ok 1 "CI=true: $why"
    done_testing
    exit 1
fi
export NODE_PATH CHROMIUM

stack_start
worker_start
projector_start
api_start
B="$API_URL/api/v1/helm/releases"

# The page and its files: no token needed, and only what the page is.
code=$(curl -s -o "$T/page" -D "$T/h" -w '%{http_code}' "$API_URL/")
is "$code" 200 "GET / without a token: 200"
cmp -s "$T/page" worker/api/static/status.html
ok $? "it is worker/api/static/status.html, byte for byte"
like "$(tr -d '\r' <"$T/h")" "Content-Security-Policy: default-src 'none'; script-src 'self'" "with a Content-Security-Policy allowing only its own files"
for f in status.css:text/css status.js:text/javascript; do
    code=$(curl -s -o "$T/f" -D "$T/h" -w '%{http_code}' "$API_URL/static/${f%%:*}")
    is "$code" 200 "GET /static/${f%%:*}: 200"
    like "$(tr -d '\r' <"$T/h" | grep -i '^content-type')" "${f#*:}" "as ${f#*:}"
    cmp -s "$T/f" "worker/api/static/${f%%:*}"
    ok $? "byte for byte"
done
is "$(curl -s -o /dev/null -w '%{http_code}' "$API_URL/static/status.html")" 404 "/static/ serves the assets only: the page is at /"
is "$(curl -s -o /dev/null -w '%{http_code}' "$API_URL/static/api.c")" 404 "/static/ knows only its own files"
is "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$API_URL/")" 405 "POST /: 405"

# Releases before the page opens: two of acme's (one upgraded: a history of
# two revisions), one of globex's.
mkbody() { # mkbody TENANT NS NAME VERSION
    jq --arg t "$1" --arg ns "$2" --arg n "$3" --arg v "$4" \
        '.tenantId = $t | .namespace = $ns | .releaseName = $n | .chartVersion = $v | del(.appVersion)' \
        tests/fixtures/seed-install.json
}
cid=$(send install acme-ai-service -t "$TENANT" -n tenant-acme --chart-name matih-ai-service --chart-version 1.0.0 -u seeder 2>/dev/null)
wait_terminal "$cid" >/dev/null
cid=$(send upgrade acme-ai-service -t "$TENANT" -n tenant-acme --chart-name matih-ai-service --chart-version 1.1.0 -u seeder 2>/dev/null)
wait_terminal "$cid" >/dev/null
wait_projected "$cid"
cid=$(send install acme-batch -t "$TENANT" -n tenant-acme --chart-name matih-ai-service --chart-version 1.0.0 -u seeder 2>/dev/null)
wait_terminal "$cid" >/dev/null
wait_projected "$cid"
cid=$(send install globex-api -t "$OTHER_TENANT" -n tenant-globex --chart-name matih-ai-service --chart-version 1.2.0 -u seeder 2>/dev/null)
wait_terminal "$cid" >/dev/null
wait_projected "$cid"
n=$(curl -s -H "Authorization: Bearer $ADMIN_TOKEN" "$B" | jq length)
is "$n" 3 "three releases in the projection before the page opens"
RELEASE_ID=$(curl -s -H "Authorization: Bearer $ACME_TOKEN" "$B" | jq -r '.[] | select(.releaseName == "acme-ai-service") | .releaseId')
mkbody "$TENANT" tenant-acme acme-web 1.2.0 >"$T/install.json"

# Which live path exists in this helmq-api: the SSE route answers 200 with a stream.
sse=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 -H "Authorization: Bearer $ADMIN_TOKEN" "$B/events")
[ "$sse" = 200 ] && want_mode=live || want_mode=polling
diag "GET /api/v1/helm/releases/events answers $sse: the page should use ${want_mode/live/SSE}"

mkdir -p "$HELMQ_ROOT/build/artifacts"
SHOT="$HELMQ_ROOT/build/artifacts/status-page.png"
rm -f "$SHOT"
API_URL=$API_URL ADMIN_TOKEN=$ADMIN_TOKEN ACME_TOKEN=$ACME_TOKEN GLOBEX_TOKEN=$GLOBEX_TOKEN \
    OTHER_TENANT=$OTHER_TENANT RELEASE_ID=$RELEASE_ID SCREENSHOT=$SHOT INSTALL_BODY=$T/install.json \
    timeout 300 node tests/status_page/drive.js >"$T/drive.out" 2>"$T/drive.err"
drive_rc=$?
while IFS=$'\t' read -r st name detail; do
    case $st in
    ok) ok 0 "page: $name" ;;
    "not ok")
        ok 1 "page: $name"
        diag "$detail"
        ;;
    esac
done <"$T/drive.out"
is "$drive_rc" 0 "the browser session ended without a failure $(tail -3 "$T/drive.err" | tr '\n' ' ')"
result=$(grep '^result' "$T/drive.out" | cut -f2-)
mode=$(jq -r .mode <<<"$result")
is "$mode" "$want_mode" "the page's live path: $mode ($(jq -r .indicator <<<"$result"))"
[ -s "$SHOT" ] && [ "$(head -c 8 "$SHOT" | od -An -tx1 | tr -d ' \n')" = 89504e470d0a1a0a ]
ok $? "the screenshot is saved: build/artifacts/status-page.png"

# How soon after each event the page showed it: the terminal event's
# occurredAt (the worker's clock, this machine) to the DOM's change.
# lags RESULT_JSON WHAT...
lags() {
    local result=$1 what cid shown at_ms lag mode limit
    shift
    mode=$(jq -r .mode <<<"$result")
    limit=$([ "$mode" = live ] && echo 1000 || echo 3000)
    for what in "$@"; do
        cid=$(jq -r ".$what.commandId" <<<"$result")
        shown=$(jq -r ".$what.shownAt // empty" <<<"$result")
        # occurredAt: epoch milliseconds (timestamp-millis), or an RFC 3339 text
        at_ms=$(wait_terminal "$cid" 30 | jq -r '.occurredAt | if type == "number" then . else (sub("\\.[0-9]+"; "") | fromdateiso8601 * 1000) end')
        if [ -n "$shown" ]; then
            lag=$((shown - at_ms))
            [ "$lag" -le "$limit" ]
            ok $? "the $what shows on the page ${lag} ms after its event (through ${mode/live/SSE}; at most $limit ms)"
        else
            ok 1 "the $what shows on the page (never did)"
        fi
    done
}
lags "$result" install uninstall

# The SSE path itself while this branch's helmq-api has no events route: the
# page behind sse-stand-in.js, which serves the route's contract from the
# events topic (and drops its first stream once, for the reconnect).
if [ "$want_mode" = polling ]; then
    SPORT=$(free_port)
    node tests/status_page/sse-stand-in.js "$SPORT" "$API_URL" "$T/tokens" "$HELMQ_BIN" >"$T/stand-in.log" 2>&1 &
    at_exit "kill $!"
    wait_for "the stand-in to serve" 30 curl -sf "http://127.0.0.1:$SPORT/healthz" -o /dev/null
    mkbody "$TENANT" tenant-acme acme-sse 1.0.0 >"$T/install-sse.json"
    MODE=sse API_URL="http://127.0.0.1:$SPORT" ADMIN_TOKEN=$ADMIN_TOKEN ACME_TOKEN=$ACME_TOKEN \
        INSTALL_BODY=$T/install-sse.json timeout 300 node tests/status_page/drive.js >"$T/drive-sse.out" 2>"$T/drive-sse.err"
    drive_rc=$?
    while IFS=$'\t' read -r st name detail; do
        case $st in
        ok) ok 0 "page: $name" ;;
        "not ok")
            ok 1 "page: $name"
            diag "$detail"
            ;;
        esac
    done <"$T/drive-sse.out"
    is "$drive_rc" 0 "the SSE browser session ended without a failure $(tail -3 "$T/drive-sse.err" | tr '\n' ' ')"
    lags "$(grep '^result' "$T/drive-sse.out" | cut -f2-)" uninstall
else
    diag "the events route exists: the page's SSE path was tested against it above"
fi

done_testing
