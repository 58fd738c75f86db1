#!/usr/bin/env bash
# A command's identity: one command per commandId whatever its key, also when
# commands race on several keys and ledger connections; the same commandId
# with other content is an idempotency conflict, answered without another
# tenant's outcome; a redelivered finished command never makes a stale state
# the newest event on its key; a record keyed as another release is refused.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start --partitions 2
worker_start --concurrency 4
projector_start || bail "the projector did not start"
NS=idem-ns
OTHER_NS=idem-other
CHART=(--chart-name matih-ai-service --chart-version 1.0.0)
CMDS=helm.release.commands
EVENTS=helm.release.events

# produce KEY FILE...: as an upstream producer would (murmur2, see README).
produce() { local k=$1; shift; kcat -b "$HELMQ_BROKERS" -X partitioner=murmur2_random -P -t $CMDS -k "$k" "$@"; }
# encode_install FILE NAME [HELMQ ARGS]: a valid install command, JSON and Avro (FILE.avro).
encode_install() {
    local f=$1 n=$2
    shift 2
    send install "$n" -t $TENANT -n $NS "${CHART[@]}" --dry-run "$@" >"$f" && "$HELMQ_BIN/helmq" encode <"$f" >"$f.avro"
}
helm_runs() { sim_invocations "select(.event == \"start\" and .subcommand == \"$1\" and .release == \"$2\")" | wc -l; }
# newest_event KEY: the newest event on KEY (the last record of its partition with that key).
newest_event() {
    local p o
    read -r p o < <(kcat -b "$HELMQ_BROKERS" -C -t $EVENTS -e -q -f '%k\t%p\t%o\n' 2>/dev/null |
        awk -F'\t' -v k="$1" '$1 == k {print $2, $3}' | sort -n -k2 | tail -1)
    [ -n "$o" ] && kcat -b "$HELMQ_BROKERS" -C -t $EVENTS -p "$p" -o "$o" -c 1 -e -q -f '%s' 2>/dev/null |
        "$HELMQ_BIN/helmq" decode
}
terminals() { events_json --command-id "$1" | jq -c 'select(.terminal)'; }

# ---------------------------------------------------------------------------
# 1. A finished command delivered again after its release moved on.
KEY="$TENANT/$NS/moves"
encode_install "$T/install.json" moves
ID1=$(jq -r .commandId "$T/install.json")
produce "$KEY" "$T/install.json.avro"
first=$(wait_terminal "$ID1" 60)
is "$(jf '[.eventType, .status, .revision] | join(" ")' <<<"$first")" "succeeded deployed 1" "install: deployed, revision 1"
id=$(send upgrade moves -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0)
wait_terminal "$id" 60 >/dev/null
id=$(send uninstall moves -t $TENANT -n $NS --reason "moved on")
last=$(wait_terminal "$id" 60)
is "$(jf '[.status, .revision] | join(" ")' <<<"$last")" "uninstalled 3" "upgrade, then uninstall: uninstalled, revision 3"
produce "$KEY" "$T/install.json.avro" # the install's record again, the same bytes
wait_for "a second terminal event for the install" 30 bash -c "[ \$(\"$HELMQ_BIN/helmq\" events --command-id $ID1 2>/dev/null | jq -c 'select(.terminal)' | wc -l) -ge 2 ]"
ev=$(newest_event "$KEY")
is "$(jf .commandId <<<"$ev")" "$ID1" "redelivered install: it answered (its commandId is the newest event on the key)"
is "$(jf '[.eventType, .status, .revision, .releaseId] | join(" ")' <<<"$ev")" \
    "succeeded uninstalled 3 $(jf .releaseId <<<"$first")" \
    "redelivered install: its outcome (succeeded) with the release's current state (uninstalled, revision 3)"
is "$(jf '[.reason, .chartVersion, (.history | length)] | join(" ")' <<<"$ev")" "moved on 1.1.0 0" \
    "redelivered install: the current reason and chart, no history of its own"
is "$(jf .eventId <<<"$ev")" "$(jf .eventId <<<"$first")" \
    "redelivered install: the eventId of its first terminal event (still one terminal event per command)"
is "$(helm_runs install moves)" 1 "redelivered install: no helm ran"
produce "$KEY" "$T/install.json.avro" # and once more: the same answer, recognisably
wait_for "a third terminal event for the install" 30 bash -c "[ \$(\"$HELMQ_BIN/helmq\" events --command-id $ID1 2>/dev/null | jq -c 'select(.terminal)' | wc -l) -ge 3 ]"
is "$(terminals "$ID1" | jq -r .eventId | sort | uniq -c | awk '{print $1}' | tr '\n' ' ')" "3 " \
    "redelivered twice: three copies of one terminal event (one eventId)"
wait_projected "$id"
is "$("$HELMQ_BIN/helmq" releases get "$(jf .releaseId <<<"$first")" | jq -r '"\(.status) \(.revision)"')" "uninstalled 3" \
    "the projection still says uninstalled, revision 3 (the copies are duplicates to it)"
is "$(newest_event "$KEY" | jf '[.status, .revision] | join(" ")')" "uninstalled 3" "the newest event still says uninstalled, revision 3"

# ---------------------------------------------------------------------------
# 2. A record keyed as another release (or by nothing): KEY_MISMATCH.
encode_install "$T/miskeyed.json" miskeyed
ID=$(jq -r .commandId "$T/miskeyed.json")
produce "$TENANT/$NS/someone-else" "$T/miskeyed.json.avro"
ev=$(wait_terminal "$ID" 60)
is "$(jf '[.eventType, .status, .errorCode] | join(" ")' <<<"$ev")" "rejected rejected KEY_MISMATCH" "mis-keyed command: rejected KEY_MISMATCH"
like "$(jf .errorMessage <<<"$ev")" "$TENANT/$NS/someone-else" "mis-keyed command: the message names the record key"
like "$(jf .errorMessage <<<"$ev")" "$TENANT/$NS/miskeyed" "mis-keyed command: and the command's own key"
is "$(kcat -b "$HELMQ_BROKERS" -C -t $EVENTS -e -q -f '%k\n' 2>/dev/null | grep -c "^$TENANT/$NS/someone-else\$")" 1 \
    "mis-keyed command: its event goes out under the record's key"
is "$(kcat -b "$HELMQ_BROKERS" -C -t $EVENTS -e -q -f '%k\n' 2>/dev/null | grep -c "^$TENANT/$NS/miskeyed\$")" 0 \
    "mis-keyed command: nothing under the release's own key"
grep KEY_MISMATCH "$WORKER_LOG" | grep -qF "record key \"$TENANT/$NS/someone-else\""
ok $? "mis-keyed command: the worker logs the key it came with"
encode_install "$T/unkeyed.json" unkeyed
kcat -b "$HELMQ_BROKERS" -P -t $CMDS "$T/unkeyed.json.avro"
is "$(wait_terminal "$(jq -r .commandId "$T/unkeyed.json")" 60 | jf .errorCode)" KEY_MISMATCH "a command without a key: KEY_MISMATCH"
is "$(helm_runs install miskeyed)$(helm_runs install unkeyed)" 00 "no helm ran for them"
# The tenant's UUID in upper case in the key is the same tenant.
encode_install "$T/upper.json" upper
produce "${TENANT^^}/$NS/upper" "$T/upper.json.avro"
is "$(wait_terminal "$(jq -r .commandId "$T/upper.json")" 60 | jf .eventType)" succeeded \
    "a key with the tenant's UUID in upper case is the command's own: it runs"

# ---------------------------------------------------------------------------
# 3. One commandId on six keys at the same moment: one runs, five conflict.
CID=7a1e0c3b-5d2f-4c8e-9b6a-3f2e1d0c9b8a
pids=()
for n in race1 race2 race3 race4 race5 race6; do
    encode_install "$T/$n.json" $n --command-id $CID
done
for n in race1 race2 race3 race4 race5 race6; do
    produce "$TENANT/$NS/$n" "$T/$n.json.avro" &
    pids+=($!)
done
wait "${pids[@]}"
wait_for "six terminal events for $CID" 60 bash -c "[ \$(\"$HELMQ_BIN/helmq\" events --command-id $CID 2>/dev/null | jq -c 'select(.terminal)' | wc -l) -ge 6 ]"
terms=$(terminals $CID)
is "$(jq -r '.eventType + " " + (.errorCode // "")' <<<"$terms" | sort | uniq -c | awk '{print $2 $3 "x" $1}' | tr '\n' ' ')" \
    "rejectedIDEMPOTENCY_CONFLICTx5 succeededx1 " "one commandId on six keys: one succeeded, five rejected IDEMPOTENCY_CONFLICT"
is "$(for n in race1 race2 race3 race4 race5 race6; do helm_runs install $n; done | awk '{s += $1} END {print s}')" 1 \
    "one commandId on six keys: helm ran once"
winner=$(jq -r 'select(.eventType == "succeeded") | .releaseName' <<<"$terms")
is "$(jq -r 'select(.eventType == "rejected") | [.releaseId // "null", .revision, .chartName // "null"] | join(" ")' <<<"$terms" | sort -u)" \
    "null 0 null" "the conflicts carry no release state (not the winner's, $winner)"
is "$(psql_q "select release_key from helmq_worker.commands where command_id = '$CID'")" "$TENANT/$NS/$winner" \
    "the ledger has one row for the commandId, the winner's"
is "$(jq -r .eventId <<<"$terms" | sort -u | wc -l)" 6 "six terminal events, six eventIds (no conflict reuses the winner's)"

# ---------------------------------------------------------------------------
# 4. Another tenant reusing tenant A's commandId: a conflict, never A's outcome.
AID=1b2c3d4e-5f60-4718-9a2b-3c4d5e6f7081
send install owned -t $TENANT -n $NS "${CHART[@]}" --command-id $AID --wait 2>/dev/null | tail -n +2 >"$T/a.json"
is "$(jf '[.eventType, .tenantId] | join(" ")' <"$T/a.json")" "succeeded $TENANT" "tenant A's install with commandId $AID"
send install theirs -t $OTHER_TENANT -n $OTHER_NS "${CHART[@]}" --command-id $AID --wait >"$T/b.out" 2>"$T/b.err"
is "$?" 3 "tenant B's install with A's commandId: --wait exits 3"
tail -n +2 "$T/b.out" >"$T/b.json"
is "$(jf '[.eventType, .status, .errorCode, .tenantId, .namespace, .releaseName] | join(" ")' <"$T/b.json")" \
    "rejected rejected IDEMPOTENCY_CONFLICT $OTHER_TENANT $OTHER_NS theirs" \
    "tenant B is told IDEMPOTENCY_CONFLICT about its own command"
is "$(jf '[.releaseId // "null", .revision, .chartName // "null", .valuesDigest // "null"] | join(" ")' <"$T/b.json")" "null 0 null null" \
    "nothing of tenant A's release in it"
unlike "$(cat "$T/b.json")" "$(jf .releaseId <"$T/a.json")" "tenant A's releaseId appears nowhere in B's answer"
[ "$(jf .eventId <"$T/b.json")" != "$(jf .eventId <"$T/a.json")" ]
ok $? "B's rejection has an eventId of its own"
is "$(helm_runs install theirs)" 0 "no helm ran for tenant B's command"
is "$(kcat -b "$HELMQ_BROKERS" -C -t $EVENTS -e -q -f '%k\n' 2>/dev/null | grep -c "^$OTHER_TENANT/$OTHER_NS/theirs\$")" 1 \
    "B's rejection goes out under B's own key"
# Same tenant, same key, other content: a conflict too.
send install owned -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 --command-id $AID --wait 2>/dev/null | tail -n +2 >"$T/c.json"
is "$(jf '[.eventType, .errorCode] | join(" ")' <"$T/c.json")" "rejected IDEMPOTENCY_CONFLICT" \
    "the same commandId and key with another chart version: IDEMPOTENCY_CONFLICT"
# The same command again (a retry: only requestedAt differs): its outcome.
send install owned -t $TENANT -n $NS "${CHART[@]}" --command-id $AID --wait >"$T/d.out" 2>/dev/null
is "$?" 0 "a retry of A's command (same content, new requestedAt): exit 0"
tail -n +2 "$T/d.out" >"$T/d.json"
is "$(jf '[.eventType, .eventId] | join(" ")' <"$T/d.json")" "succeeded $(jf .eventId <"$T/a.json")" \
    "a retry gets A's recorded outcome, the same event"
is "$(helm_runs install owned)" 1 "helm ran once for A's command"

worker_stop
is "$?" 0 "SIGTERM: the worker exits 0"
done_testing
