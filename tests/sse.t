#!/usr/bin/env bash
# helmq-api's live event stream (Server-Sent Events) read by clients helmq did
# not write (curl -N, npm eventsource): a command's events arrive in order
# with the events' JSON fields; tenant and release scoping; resume with
# Last-Event-ID across partitions, none lost, none repeated; a malformed
# Last-Event-ID is 400; a reader that never reads is cut past
# --stream-max-buffer while another stream keeps being served; --max-streams
# gives 503; heartbeats; SIGTERM ends the streams.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

NODE_MODULES=$(bash "$HELMQ_ROOT/tests/lib/node-deps.sh") || bail "npm packages could not be installed"
export NODE_MODULES
stack_start
worker_start
projector_start
api_start --max-streams 6 --stream-max-buffer 65536 --stream-heartbeat-ms 1000
B="$API_URL/api/v1/helm/releases"
SSE="$HELMQ_ROOT/tests/sse"
OTHER_NS=tenant-globex

# stream NAME URL TOKEN [curl args]: curl -N in the background into $T/NAME.sse.
declare -A SPID
stream() {
    local name=$1 url=$2 tok=$3
    shift 3
    curl -s -N -D "$T/$name.head" -H "Authorization: Bearer $tok" "$@" "$url" >"$T/$name.sse" 2>/dev/null &
    SPID[$name]=$!
    at_exit "kill ${SPID[$name]}"
    wait_for "stream $name open" 20 grep -q '^retry:' "$T/$name.sse"
}
stream_stop() { kill "${SPID[$1]}" 2>/dev/null; wait "${SPID[$1]}" 2>/dev/null; }
# data NAME: the data lines of a stream's release events, one JSON a line.
data() { awk '/^event: release$/ { e = 1; next } e && /^data: / { print substr($0, 7); e = 0 }' "$T/$1.sse"; }
ids() { awk '/^id: / { id = substr($0, 5) } /^event: release$/ { print id }' "$T/$1.sse"; }
metric() { curl -s "$API_URL/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
code() { curl -s -o "$T/code.body" -D "$T/code.head" -w '%{http_code}' --max-time 5 "$@"; }

# --- a command's events, live, scoped by tenant -----------------------------------
stream acme "$B/events" "$ACME_TOKEN"
stream globex "$B/events" "$GLOBEX_TOKEN"
stream admin "$B/events" "$ADMIN_TOKEN"
stream acme_t "$B/tenant/$TENANT/events" "$ACME_TOKEN"
grep -qi '^content-type: text/event-stream' "$T/acme.head" && grep -qi '^cache-control: no-cache' "$T/acme.head" &&
    grep -qi '^x-accel-buffering: no' "$T/acme.head"
ok $? "200 with Content-Type text/event-stream, Cache-Control no-cache, X-Accel-Buffering no"
is "$(head -1 "$T/acme.sse" | tr -d '\r')" "retry: 3000" "the stream starts with a retry: field"
wait_for "a heartbeat" 10 grep -q '^: keepalive$' "$T/acme.sse"
ok $? "a ': keepalive' comment comes every --stream-heartbeat-ms"

CID=$(send install -f tests/fixtures/seed-install.json)
jq '.tenantId = "'$OTHER_TENANT'" | .namespace = "'$OTHER_NS'" | .releaseName = "globex-svc"' \
    tests/fixtures/seed-install.json >"$T/globex.json"
GCID=$(send install -f "$T/globex.json")
wait_terminal "$CID" >/dev/null && wait_terminal "$GCID" >/dev/null
ok $? "both installs finished"
expected=$(events_json --command-id "$CID" | jq -c 'del(._partition, ._offset)')
n_exp=$(wc -l <<<"$expected")
wait_for "acme's stream has the install's events" 20 bash -c "[ \$(grep -c '\"$CID\"' '$T/acme.sse') -ge $n_exp ]"
got=$(data acme | jq -c "select(.commandId == \"$CID\")")
is "$got" "$expected" "the tenant's stream carries the command's $n_exp events, in order, as helmq events maps them"
is "$(tail -1 <<<"$got" | jq -r '[.releaseName,.namespace,.status,.revision,.chartName,.chartVersion] | join(" ")')" \
    "acme-ai-service tenant-acme deployed 1 matih-ai-service 1.0.0" "the last event carries the release's state"
tail -1 <<<"$got" | jq -e 'all(.releaseId, .tenantId, .occurredAt, .appVersion, .eventId; . != null)' >/dev/null
ok $? "with releaseId, tenantId, occurredAt, appVersion, eventId"
RID=$(tail -1 <<<"$got" | jq -r .releaseId)
wait_for "globex's stream has its install" 20 grep -q "\"$GCID\"" "$T/globex.sse"
wait_for "admin's stream has both" 20 bash -c "grep -q '\"$GCID\"' '$T/admin.sse' && grep -q '\"$CID\"' '$T/admin.sse'"
ok $? "an admin's stream has both tenants' events"
is "$(data acme | jq -r .tenantId | sort -u)" "$TENANT" "tenant A's stream holds only tenant A's events"
is "$(data globex | jq -r .tenantId | sort -u)" "$OTHER_TENANT" "tenant B's stream holds only tenant B's events"
is "$(data acme_t | jq -c "select(.commandId == \"$CID\")")" "$expected" "/tenant/:tenantId/events: the same events"
stream_stop acme_t

# --- one release's events; the route's errors ------------------------------------------
wait_projected "$CID"
stream rel "$B/$RID/events?since=beginning" "$ACME_TOKEN"
wait_for "the release's stream replays" 20 bash -c "[ \$(grep -c '^event: release' '$T/rel.sse') -ge $n_exp ]"
is "$(data rel | jq -r .releaseId | sort -u)" "$RID" "/:releaseId/events?since=beginning: only that release's events"
is "$(data rel | jq -c .)" "$(events_json | jq -c "select(.releaseId == \"$RID\") | del(._partition, ._offset)")" \
    "all of them, from the beginning"
stream_stop rel
is "$(code -H "Authorization: Bearer $GLOBEX_TOKEN" "$B/$RID/events")" 404 "another tenant's release: 404"
is "$(code -H "Authorization: Bearer $ACME_TOKEN" "$B/tenant/$OTHER_TENANT/events")" 404 \
    "a tenant token on another tenant's stream: 404 (as the tenant route)"
is "$(code -H "Authorization: Bearer $ACME_TOKEN" "$B/events?tenantId=$OTHER_TENANT")" 404 "?tenantId= of another tenant: 404"
is "$(code -H "Authorization: Bearer $ACME_TOKEN" "$B/tenant/nope/events")" 400 "a tenantId that is no UUID: 400"
is "$(code "$B/events")" 401 "no token: 401"
is "$(code -H "Authorization: Bearer wrong-token-0123456789" "$B/events")" 401 "a bad token: 401"
is "$(code -X POST -H "Authorization: Bearer $ACME_TOKEN" "$B/events")" 405 "POST: 405"
for bad in garbage "0:1,0:2" "0:-1" "0:1," ":5" "0:99999999999999999999999"; do
    is "$(code -H "Authorization: Bearer $ADMIN_TOKEN" -H "Last-Event-ID: $bad" "$B/events")" 400 \
        "Last-Event-ID '$bad': 400 before the stream starts"
done
is "$(code -H "Authorization: Bearer $ADMIN_TOKEN" "$B/events?lastEventId=x1")" 400 "?lastEventId= malformed: 400"
is "$(code -H "Authorization: Bearer $ADMIN_TOKEN" "$B/events?since=yesterday")" 400 "?since= other than beginning: 400"

# --- resume with Last-Event-ID: exactly the missed events, across partitions --------------
# Synthetic events of the worker's shape (new eventIds), on keys of several
# partitions, produced as the worker does (murmur2 on tenant/namespace/name).
template=$(tail -1 <<<"$expected")
produce() { # produce PREFIX COUNT: COUNT events over 4 release keys; prints nothing
    local i k
    for i in $(seq 1 "$2"); do
        k=$((i % 4))
        jq -c --arg id "$(cat /proc/sys/kernel/random/uuid)" --arg n "$1-$k" --argjson rev "$i" \
            '.eventId = $id | .releaseName = $n | .revision = $rev' <<<"$template" |
            "$HELMQ_BIN/helmq" encode --type event >"$T/ev-$1-$i.avro"
    done
    for k in 0 1 2 3; do
        files=()
        for i in $(seq 1 "$2"); do [ $((i % 4)) = "$k" ] && files+=("$T/ev-$1-$i.avro"); done
        kcat -b "$HELMQ_BROKERS" -X partitioner=murmur2_random -P -t helm.release.events \
            -k "$TENANT/tenant-acme/$1-$k" "${files[@]}"
    done
}
node "$SSE/client.mjs" "$B/events" "$ADMIN_TOKEN" 8 30000 >"$T/first.jsonl" 2>"$T/first.err" &
CPID=$!
wait_for "the eventsource client connected" 20 grep -q '^open' "$T/first.err"
produce one 8
wait "$CPID"
ok $? "the eventsource client read 8 live events"
is "$(jq -r .event.releaseName "$T/first.jsonl" | cut -d- -f1 | sort -u)" one "only the new ones (the stream starts at the end)"
LAST=$(tail -1 "$T/first.jsonl" | jq -r .id)
produce two 24
missed=$(events_json | jq -r 'select(.releaseName | startswith("two-")) | .eventId' | sort)
is "$(wc -l <<<"$missed")" 24 "24 events produced while no client was connected"
parts=$(events_json | jq -r 'select(.releaseName | startswith("two-")) | ._partition' | sort -u | wc -l)
[ "$parts" -ge 2 ]
ok $? "on $parts partitions"
node "$SSE/client.mjs" "$B/events" "$ADMIN_TOKEN" 24 30000 "$LAST" >"$T/resumed.jsonl" 2>"$T/resumed.err"
ok $? "the eventsource client resumed with Last-Event-ID and read 24 events"
is "$(jq -r .event.eventId "$T/resumed.jsonl" | sort)" "$missed" "exactly the missed events: none lost"
is "$(jq -r .event.eventId "$T/resumed.jsonl" | sort | uniq -d)" "" "none repeated"
curl -s -N --max-time 4 -H "Authorization: Bearer $ADMIN_TOKEN" "$B/events?lastEventId=$(jq -rn --arg s "$LAST" '$s|@uri')" \
    >"$T/q.sse"
is "$(awk '/^data: / { print substr($0, 7) }' "$T/q.sse" | jq -r .eventId | sort)" "$missed" \
    "?lastEventId= resumes the same way"

# --- a reader that never reads is cut; the others keep being served -------------------------
stream good "$B/events" "$ADMIN_TOKEN"
port=${API_URL##*:}
python3 "$SSE/slow_reader.py" 127.0.0.1 "$port" /api/v1/helm/releases/events "$ADMIN_TOKEN" "$T/go" >"$T/slow.out" &
SLOWPID=$!
at_exit "kill $SLOWPID"
wait_for "the slow reader sent its request" 10 grep -q sent "$T/slow.out"
sleep 1
# 400 events, the same bytes (one encoding) on 4 release keys.
jq -c '.releaseName = "bulk-x" | .description = "'"$(printf 'x%.0s' $(seq 1 400))"'"' <<<"$template" |
    "$HELMQ_BIN/helmq" encode --type event >"$T/bulk.avro"
bulk=()
for i in $(seq 1 100); do bulk+=("$T/bulk.avro"); done
for k in 0 1 2 3; do
    kcat -b "$HELMQ_BROKERS" -X partitioner=murmur2_random -P -t helm.release.events -k "$TENANT/tenant-acme/bulk-$k" "${bulk[@]}"
done
wait_for "the slow reader is cut" 30 bash -c "[ \"\$(curl -s '$API_URL/metrics' | awk '\$1 == \"helmq_api_streams_cut_total\" { print \$2 }')\" = 1 ]"
ok $? "a stream whose reader reads nothing is cut, over --stream-max-buffer (helmq_api_streams_cut_total 1)"
touch "$T/go"
wait "$SLOWPID"
read -r state bytes < <(tail -1 "$T/slow.out")
is "$state" closed "the server closed the slow reader's connection (it had got $bytes bytes)"
wait_for "the good stream has every bulk event" 30 bash -c "[ \$(grep -c '\"bulk-' '$T/good.sse') = 400 ]"
ok $? "meanwhile a stream that reads got all 400 events"
grep -q 'stream: cut' "$T/api.log"
ok $? "the cut is logged"
[ "$(metric helmq_api_stream_events_total)" -ge 400 ]
ok $? "helmq_api_stream_events_total counts the events sent"

# --- --max-streams ----------------------------------------------------------------------------
open=$(metric helmq_api_event_streams)
for i in $(seq $((open + 1)) 6); do stream "cap$i" "$B/events" "$ACME_TOKEN"; done
is "$(metric helmq_api_event_streams)" 6 "6 streams open (the gauge)"
is "$(code -H "Authorization: Bearer $ACME_TOKEN" "$B/events")" 503 "one more: 503"
grep -qi '^retry-after: ' "$T/code.head"
ok $? "with Retry-After"
stream_stop "cap6"
wait_for "a stream closed" 10 bash -c "[ \"\$(curl -s '$API_URL/metrics' | awk '\$1 == \"helmq_api_event_streams\" { print \$2 }')\" = 5 ]"
ok $? "a client that goes away frees its stream"
stream again "$B/events" "$ACME_TOKEN"
ok $? "and a new stream can open"

# --- SIGTERM ends the streams --------------------------------------------------------------------
kill -TERM "$API_PID"
wait_for "helmq-api exits" 20 bash -c "! kill -0 $API_PID 2>/dev/null"
ok $? "helmq-api stops on SIGTERM with streams open"
wait "$API_PID"
is "$?" 0 "with exit status 0 (under ASan: no leak)"
sleep 0.5
alive=0
for n in good admin acme globex again; do kill -0 "${SPID[$n]}" 2>/dev/null && alive=1; done
is "$alive" 0 "every curl -N stream ended"
grep -q 'stopped' "$T/api.log"
ok $? "and it logged its clean stop"

done_testing
