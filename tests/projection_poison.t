#!/usr/bin/env bash
# Poison events on the events topic: records that decode under the event
# schema but that the projection's SQL refuses (a second live release of one
# name: releases_one_live; a releaseId that is no UUID), and bytes that are no
# event at all, in one batch among good events. The good events are applied in
# order, the bad ones parked in helmq.parked_events with their error, counted
# in /metrics; the projector goes on, commits past them, and a rebuild ends
# (exit 3: done, with parked records).
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start --partitions 3
NS=tenant-poison
KEY="$TENANT/$NS/app"
uuid() { cat /proc/sys/kernel/random/uuid; }
NOW=$(($(date +%s) * 1000))

# event NAME RELEASE_ID OPERATION REVISION CHART_VERSION: a terminal "succeeded"
# event with its history, as the worker writes them.
event() {
    local rev=$4 hist
    hist=$(jq -nc --argjson rev "$rev" --arg cv "$5" --arg op "$3" --argjson t "$NOW" \
        '[{revision: $rev, status: "deployed", chartName: "matih-ai-service", chartVersion: $cv,
           operation: $op, createdAt: $t}]
         + (if $rev > 1 then [{revision: ($rev - 1), status: "superseded", chartName: "matih-ai-service",
           chartVersion: "1.0.0", operation: "install", createdAt: $t}] else [] end)')
    jq -nc --arg eid "$(uuid)" --arg cid "$(uuid)" --arg rid "$2" --arg tenant "$TENANT" --arg ns "$NS" \
        --arg name "$1" --arg op "$3" --argjson rev "$rev" --arg cv "$5" --argjson t "$NOW" --argjson h "$hist" \
        '{eventId: $eid, commandId: $cid, eventType: "succeeded", terminal: true, releaseId: $rid,
          tenantId: $tenant, namespace: $ns, releaseName: $name, operation: $op, status: "deployed",
          revision: $rev, chartName: "matih-ai-service", chartVersion: $cv, appVersion: "2.0.0",
          description: "poison test", performedBy: "tester", occurredAt: $t, requestedAt: $t, history: $h}'
}
produce() { # produce FILE...: one record per file, all with KEY (so one partition, in order)
    kcat -b "$HELMQ_BROKERS" -P -t helm.release.events -k "$KEY" "$@"
}
encode() { "$HELMQ_BIN/helmq" encode --type event; }
# install_projected NAME N WHAT: a new release NAME's install event, produced
# (as file N-install-NAME.avro) and waited for until its release is projected.
install_projected() {
    local rid
    rid=$(uuid)
    event "$1" "$rid" install 1 1.0.0 | encode >"$T/$2-install-$1.avro"
    produce "$T/$2-install-$1.avro"
    wait_for "$3" 30 bash -c \
        "[ \"\$(psql -X -At '$HELMQ_DATABASE_URL' -c \"select count(*) from helmq.releases where release_id = '$rid'\")\" = 1 ]"
}

RID_A=$(uuid)
RID_X=$(uuid)
RID_C=$(uuid)
event app "$RID_A" install 1 1.0.0 | encode >"$T/1-install-a.avro"
# A second live release of the same tenant/namespace/name: releases_one_live refuses it.
bad1=$(event app "$RID_X" install 1 1.0.0)
encode <<<"$bad1" >"$T/2-duplicate-live.avro"
event app "$RID_A" upgrade 2 1.1.0 | encode >"$T/3-upgrade-a.avro"
# Schema-valid (a string), but no UUID: PostgreSQL's cast refuses it.
bad2=$(event app-b not-a-uuid install 1 1.0.0)
encode <<<"$bad2" >"$T/4-bad-uuid.avro"
printf 'this is not an Avro record' >"$T/5-garbage.bin"
event app-c "$RID_C" install 1 1.0.0 | encode >"$T/6-install-c.avro"
ok "$(ls "$T"/[1-6]-* | wc -l | grep -qx 6; echo $?)" "six records encoded with helmq encode (and one of garbage)"

# All six on the topic before the projector starts, so they make one batch.
produce "$T"/1-install-a.avro "$T"/2-duplicate-live.avro "$T"/3-upgrade-a.avro "$T"/4-bad-uuid.avro \
    "$T"/5-garbage.bin "$T"/6-install-c.avro
PPORT=$(free_port)
projector_start --http-listen 127.0.0.1:$PPORT

# 1. The good events, including those after the bad ones, are projected in order.
wait_for "the event after the poison to be projected" 30 bash -c \
    "[ \"\$(psql -X -At '$HELMQ_DATABASE_URL' -c \"select count(*) from helmq.releases where release_id = '$RID_C'\")\" = 1 ]"
ok $? "the events after the refused ones are projected"
is "$(psql_q "select status || ' ' || revision || ' ' || chart_version from helmq.releases where release_id = '$RID_A'")" \
    "deployed 2 1.1.0" "the upgrade that followed the refused install is applied, in order"
is "$(psql_q "select string_agg(revision || ':' || display_status, ',' order by revision) from helmq.release_history_view where release_id = '$RID_A'")" \
    "1:superseded,2:deployed" "the history of the good release is complete"
is "$(psql_q "select count(*) from helmq.applied_events")" 3 "exactly the three good events are applied"
is "$(psql_q "select count(*) from helmq.releases where release_id = '$RID_X' or release_name = 'app-b'")" 0 \
    "nothing of the refused events is in the projection"

# 2. Each bad record is parked, where it was on the topic, with why.
parked=$(psql_q "select kafka_offset, coalesce(error_sqlstate, '-'), coalesce(event_id, '-') from helmq.parked_events order by kafka_offset")
is "$parked" "1|23505|$(jq -r .eventId <<<"$bad1")
3|22P02|$(jq -r .eventId <<<"$bad2")
4|-|-" "three records parked at their offsets: a constraint violation, an invalid value, undecodable bytes"
like "$(psql_q "select error_message from helmq.parked_events where kafka_offset = 1")" "releases_one_live" \
    "the parked constraint violation names the constraint"
like "$(psql_q "select error_message from helmq.parked_events where kafka_offset = 3")" "uuid" \
    "the parked invalid value says what is wrong"
is "$(psql_q "select convert_from(record_key, 'UTF8') || ' ' || (payload->>'releaseId') || ' ' || (payload->>'revision') from helmq.parked_events where kafka_offset = 1")" \
    "$KEY $RID_X 1" "the parked row keeps the key and the decoded event"
is "$(psql_q "select encode(record_value, 'hex') from helmq.parked_events where kafka_offset = 1")" \
    "$(od -An -v -tx1 "$T/2-duplicate-live.avro" | tr -d ' \n')" "the parked row keeps the record's bytes unchanged"
is "$(psql_q "select convert_from(record_value, 'UTF8') || '|' || (payload is null) || '|' || (error_message <> '') from helmq.parked_events where kafka_offset = 4")" \
    "this is not an Avro record|true|true" "the undecodable record is parked with its bytes and the decoding error"
log=$(cat "$T/projector.log")
like "$log" "]@1 key=$KEY eventId=$(jq -r .eventId <<<"$bad1")" "the log names the parked event's place, key and eventId"
like "$log" "SQLSTATE 23505" "the log gives the SQLSTATE"

# 3. The projector is still up, counts what it parked, and goes on.
kill -0 "$PROJECTOR_PID" 2>/dev/null
ok $? "the projector is still running"
m=$(curl -s "http://127.0.0.1:$PPORT/metrics")
like "$m" 'helmq_projector_events_parked_total{reason="refused"} 2' "/metrics: two events refused by PostgreSQL"
like "$m" 'helmq_projector_events_parked_total{reason="undecodable"} 1' "/metrics: one record undecodable"
install_projected app-d 7 "a later event"
ok $? "a later event is projected too"

# 4. The offsets were committed past the parked records: a restarted projector
# of the same group does not meet them again.
kill -TERM "$PROJECTOR_PID"
wait "$PROJECTOR_PID"
is "$?" 0 "projector: SIGTERM exits 0"
projector_start
install_projected app-e 8 "an event after the restart"
ok $? "after a restart, new events are projected"
is "$(psql_q "select count(*) || ' ' || max(times_parked) from helmq.parked_events")" "3 1" \
    "the restarted projector did not meet the parked records again (offsets committed past them)"

# 5. A rebuild ends: the same projection, the same records parked (not twice), exit 3.
kill -TERM "$PROJECTOR_PID"
wait "$PROJECTOR_PID"
projection_dump >"$T/dump1"
timeout 60 "$HELMQ_BIN/helmq-projector" rebuild --log-level info >"$T/rebuild.log" 2>&1
is "$?" 3 "helmq-projector rebuild ends, exit 3: done, with parked records"
like "$(cat "$T/rebuild.log")" "3 of the 8 records replayed were parked" "rebuild says how many were parked"
projection_dump >"$T/dump2"
cmp -s "$T/dump1" "$T/dump2"
ok $? "the rebuild gives the same projection"
is "$(psql_q "select count(*) || ' ' || min(times_parked) from helmq.parked_events")" "3 2" \
    "the rebuild parked the same three records again, in their rows"

# 6. A batch of nothing but an undecodable record (a fresh projector's first
# batch: nothing in it to project) is parked, and the projector goes on.
printf 'garbage alone in its batch' >"$T/9-garbage.bin"
produce "$T/9-garbage.bin"
projector_start
wait_for "the lone garbage record to be parked" 30 bash -c \
    "[ \"\$(psql -X -At '$HELMQ_DATABASE_URL' -c 'select count(*) from helmq.parked_events')\" = 4 ]"
ok $? "a batch holding only an undecodable record: the record is parked"
kill -0 "$PROJECTOR_PID" 2>/dev/null
ok $? "the projector is still running after a batch with no event in it"
install_projected app-f 10 "an event after the lone garbage"
ok $? "the event after it is projected"
kill -TERM "$PROJECTOR_PID"
wait "$PROJECTOR_PID"
is "$?" 0 "projector: SIGTERM exits 0"

# 7. A record parked for a cause the operator then fixes (here a trigger that
# refuses one release name, dropped afterwards): a finished rebuild applies it
# and deletes its parked row; the records still refused keep theirs.
psql_q "create function helmq.test_refuse_app_g() returns trigger language plpgsql as \$\$
begin if new.release_name = 'app-g' then raise exception 'app-g refused (a test''s broken trigger)'; end if;
return new; end \$\$;
create trigger test_refuse_app_g before insert or update on helmq.releases
for each row execute function helmq.test_refuse_app_g();" >/dev/null
projector_start
event app-g "$(uuid)" install 1 1.0.0 | encode >"$T/11-install-app-g.avro"
produce "$T/11-install-app-g.avro"
wait_for "app-g's event to be parked" 30 bash -c \
    "[ \"\$(psql -X -At '$HELMQ_DATABASE_URL' -c \"select count(*) from helmq.parked_events where payload->>'releaseName' = 'app-g'\")\" = 1 ]"
ok $? "an event the (broken) trigger refuses is parked"
kill -TERM "$PROJECTOR_PID"
wait "$PROJECTOR_PID"
psql_q "drop trigger test_refuse_app_g on helmq.releases; drop function helmq.test_refuse_app_g();" >/dev/null
before=$(psql_q "select count(*) from helmq.parked_events")
timeout 60 "$HELMQ_BIN/helmq-projector" rebuild --log-level info >"$T/rebuild2.log" 2>&1
is "$?" 3 "rebuild after the fix: exit 3 (other records are still refused)"
like "$(cat "$T/rebuild2.log")" "1 records parked before are applied now" "the rebuild says one parked record is applied now"
is "$(psql_q "select count(*) from helmq.releases where release_name = 'app-g'")" 1 "app-g is in the projection"
is "$(psql_q "select count(*) from helmq.parked_events where payload->>'releaseName' = 'app-g'")" 0 \
    "its parked row is gone"
is "$(psql_q "select count(*) from helmq.parked_events")" "$((before - 1))" "the other parked rows stay ($((before - 1)))"
is "$(psql_q "select min(times_parked) >= 2 from helmq.parked_events")" t \
    "every parked row left was parked again by this rebuild (the lone garbage record too)"
done_testing
