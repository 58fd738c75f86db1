#!/usr/bin/env bash
# The projection: the seed's queries answered from PostgreSQL after the worker
# ran the seed's story; replays and rebuilds identical; duplicates and
# reordering harmless; tenant scoping, read-only roles, immutable history;
# PostgreSQL restarted mid-stream; no raw secret anywhere.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start --partitions 3
worker_start
projector_start
NS=tenant-acme
REL=acme-ai-service
SECRET=sup3r-s3cret-pw
jq --arg s "$SECRET" '.valuesOverride.auth = {"adminPassword": $s, "apiToken": $s}' tests/fixtures/seed-install.json >"$T/seed.json"

# 1. The seed's story, then its queries.
i1=$(send install -f "$T/seed.json" --description "initial deploy" --performed-by alice)
wait_projected "$i1"
RID=$(psql_q "select release_id from helmq.releases where release_name = '$REL'")
get=$("$HELMQ_BIN/helmq" releases get "$RID")
is "$?" 0 "releases get: found"
is "$(jq -r '[.releaseId,.tenantId,.releaseName,.namespace,.chartName,.chartVersion,.appVersion,.status,.revision] | join(" ")' <<<"$get")" \
    "$RID $TENANT $REL $NS matih-ai-service 1.0.0 2.0.0 deployed 1" "releases get: the seed's fields and values"
u1=$(send upgrade $REL -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 --app-version 2.1.0 \
    --description "scale out" --performed-by bob --set-values '{"replicaCount":4}')
wait_projected "$u1"
list=$("$HELMQ_BIN/helmq" releases list --tenant $TENANT)
is "$(jq -r '.[] | select(.releaseName == "acme-ai-service") | "\(.status) \(.revision)"' <<<"$list")" "deployed 2" \
    "releases list --tenant: current status and revision"
x1=$(send uninstall $REL -t $TENANT -n $NS --reason "Tenant migration" --performed-by carol)
wait_projected "$x1"
get=$("$HELMQ_BIN/helmq" releases get "$RID")
is "$(jq -r '[.status,.revision,.uninstallReason] | join("|")' <<<"$get")" "uninstalled|3|Tenant migration" \
    "uninstall keeps the record: status uninstalled, the reason kept"
hist=$("$HELMQ_BIN/helmq" releases history "$RID")
is "$(jq -c '.[0] | keys' <<<"$hist")" '["appVersion","chartVersion","createdAt","description","performedBy","revision","status"]' \
    "history entries have exactly the seed's fields"
is "$(jq -r 'map("\(.revision):\(.chartVersion):\(.appVersion):\(.status):\(.performedBy):\(.description)") | join(",")' <<<"$hist")" \
    "1:1.0.0:2.0.0:superseded:alice:initial deploy,2:1.1.0:2.1.0:superseded:bob:scale out,3:1.1.0:2.1.0:uninstalled:carol:Uninstallation complete" \
    "history: every revision with chartVersion, appVersion, status, performedBy, description"
ok "$(jq -e 'all(.[]; .createdAt | test("^20[0-9]{2}-"))' <<<"$hist" >/dev/null; echo $?)" "history: createdAt timestamps"
summary=$("$HELMQ_BIN/helmq" releases summary)
is "$(jq -c '.byStatus' <<<"$summary")" '{"uninstalled":1}' "summary: counts by status"
is "$(jq -c '.byChart' <<<"$summary")" '{"matih-ai-service":1}' "summary: counts by chart name"
table=$("$HELMQ_BIN/helmq" releases history "$RID" --output table)
like "$table" "performedBy" "--output table prints a header"
"$HELMQ_BIN/helmq" releases get 00000000-0000-4000-8000-000000000000 >/dev/null 2>&1
is "$?" 1 "releases get of an unknown id: exit 1"
"$HELMQ_BIN/helmq" releases get "x' OR 1=1 --" >/dev/null 2>&1
is "$?" 2 "a non-UUID id is refused before any SQL"

# More releases for the other checks: a second tenant, and a failed atomic install.
i2=$(send install web -t $OTHER_TENANT -n tenant-globex --chart-name matih-ai-service --chart-version 1.0.0)
sim_knob $NS bad '{"install": {"fail": "crashloop"}}'
i3=$(send install bad -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 --atomic)
wait_projected "$i2"
wait_projected "$i3"
is "$(psql_q "select status from helmq.releases where release_name = 'bad'")" uninstalled "a rolled-back install is projected uninstalled"

# 6. No raw secret anywhere in the projection or on the events topic.
pg_dump -h "$PGHOST" -p "$PGPORT" -U postgres -d helmq --schema=helmq --data-only >"$T/dump.sql" 2>/dev/null
ok $? "pg_dump of the projection"
grep -c "$SECRET" "$T/dump.sql" >/dev/null
is "$?" 1 "no raw secret in the projection"
like "$(cat "$T/dump.sql")" "[REDACTED]" "the redacted copy is there instead"
kcat -b "$HELMQ_BROKERS" -C -t helm.release.events -e -q >"$T/events.raw" 2>/dev/null
grep -qa "$SECRET" "$T/events.raw"
is "$?" 1 "no raw secret on the events topic"

# 2. Replaying the whole topic (a second group) and rebuilding give identical tables.
projection_dump >"$T/dump1"
kill -TERM "$PROJECTOR_PID"
wait "$PROJECTOR_PID"
is "$?" 0 "projector: SIGTERM exits 0"
"$HELMQ_BIN/helmq-projector" --group-id replay-2 --log-level debug >"$T/replay.log" 2>&1 &
rp=$!
sleep 6
kill -TERM $rp
wait $rp
projection_dump >"$T/dump2"
cmp -s "$T/dump1" "$T/dump2"
ok $? "replaying the whole topic again changes nothing (byte-identical dumps)"
# The direct form (helmq.apply_direct_releases) cannot take a replayed batch (its events are in
# applied_events already): the batch is applied again staged.
grep -q "failed in the direct form (SQLSTATE 23505" "$T/replay.log"
ok $? "the replay's first batch fails in the direct form (unique_violation)" || tail -5 "$T/replay.log" | sed 's/^/# /' >&2
grep -q "applying it again, staged" "$T/replay.log"
ok $? "and is applied again staged"
"$HELMQ_BIN/helmq-projector" rebuild --log-level debug >"$T/rebuild.log" 2>&1
is "$?" 0 "helmq-projector rebuild exits 0"
grep -q "in the direct form ([0-9]* new" "$T/rebuild.log"
ok $? "a rebuild (all events new) applies its batches in the direct form" || tail -5 "$T/rebuild.log" | sed 's/^/# /' >&2
projection_dump >"$T/dump3"
cmp -s "$T/dump1" "$T/dump3"
ok $? "a rebuild gives byte-identical tables" || diff "$T/dump1" "$T/dump3" | sed "s/^/# /" >&2
# The set-based apply of a whole batch equals applying one event at a time.
"$HELMQ_BIN/helmq-projector" rebuild --batch-size 1 --log-level warn >"$T/rebuild1.log" 2>&1
is "$?" 0 "helmq-projector rebuild --batch-size 1 exits 0"
projection_dump >"$T/dump4"
cmp -s "$T/dump3" "$T/dump4"
ok $? "one event per batch gives the same tables as whole batches" || diff "$T/dump3" "$T/dump4" | sed "s/^/# /" >&2
[ "$(wc -l <"$T/dump1")" -gt 10 ]
ok $? "(the dumps are not empty: $(wc -l <"$T/dump1") rows)"

# 3. Duplicates and reordering: a lower revision after a higher one changes nothing.
projector_start
U_EVENT=$(events_json --command-id "$u1" | jq -c 'select(.terminal) | del(._partition, ._offset)')
stale=$(jq -c --arg id "$(cat /proc/sys/kernel/random/uuid)" '.eventId = $id | .status = "failed" | .description = "stale"' <<<"$U_EVENT")
echo "$stale" | "$HELMQ_BIN/helmq" encode --type event >"$T/stale.avro"
echo "$U_EVENT" | "$HELMQ_BIN/helmq" encode --type event >"$T/dup.avro"
before=$(projection_dump)
# murmur2, as helmq and Java clients partition: the release's partition, so that
# the topic holds its events in one order (kcat's default, CRC-32, may pick
# another, and a whole-topic replay across partitions then depends on timing).
kcat -b "$HELMQ_BROKERS" -X partitioner=murmur2_random -P -t helm.release.events -k "$TENANT/$NS/$REL" "$T/dup.avro" "$T/stale.avro"
wait_for "the stale event to be applied" 30 bash -c \
    "[ \"\$(psql -X -At '$HELMQ_DATABASE_URL' -c \"select count(*) from helmq.applied_events where event_id = '$(jq -r .eventId <<<"$stale")'\")\" = 1 ]"
is "$(psql_q "select status || ' ' || revision from helmq.releases where release_id = '$RID'")" "uninstalled 3" \
    "a revision-2 event after revision 3 does not overwrite the state"
after=$(psql_q "select count(*) from helmq.release_history where release_id = '$RID'")
is "$after" 3 "nor adds history"
is "$(psql_q "select count(*) from helmq.applied_events where event_id = '$(jq -r .eventId <<<"$U_EVENT")'")" 1 \
    "a duplicated event is applied once"

# 4. Roles: tenant scoping, read-only readers, immutable history, admin-only summary.
psql_q "DO \$\$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'auditor') THEN
          CREATE ROLE auditor LOGIN IN ROLE helmq_reader; CREATE ROLE platform_admin LOGIN IN ROLE helmq_admin; END IF; END \$\$"
as_role() { local role=$1; shift; psql -X -q -At -h "$PGHOST" -p "$PGPORT" -U "$role" -d helmq -c "$*" 2>&1; }
is "$(as_role auditor "select set_config('helmq.tenant_id', '$TENANT', false); select count(*) from helmq.releases" | tail -1)" 2 \
    "a reader scoped to its tenant sees its releases"
is "$(as_role auditor "select set_config('helmq.tenant_id', '$TENANT', false); select count(*) from helmq.releases where tenant_id = '$OTHER_TENANT'" | tail -1)" 0 \
    "but none of another tenant's"
is "$(as_role auditor "select count(*) from helmq.releases")" 0 "a reader that set no tenant sees nothing"
is "$(as_role auditor "select set_config('helmq.tenant_id', '$OTHER_TENANT', false); select helmq.release_get('$RID')" | tail -1)" "" \
    "a reader of another tenant cannot get the release by id"
like "$(as_role auditor "insert into helmq.release_history select * from helmq.release_history limit 1")" "permission denied" \
    "helmq_reader cannot write"
like "$(as_role auditor "select helmq.release_summary()")" "permission denied" "the summary is not for readers"
is "$(as_role platform_admin "select helmq.release_summary()->>'total'")" 3 "helmq_admin gets the cross-tenant summary"
like "$(as_role auditor "select helmq.release_summary('$TENANT'::uuid)")" "permission denied" \
    "nor the one-tenant summary (sql/0003)"
is "$(as_role platform_admin "select helmq.release_summary('$TENANT'::uuid)->>'total'")" 2 "helmq_admin gets one tenant's summary"
is "$(as_role platform_admin "select helmq.release_summary(null::uuid)::text = helmq.release_summary()::text")" t \
    "release_summary() is release_summary(null)"
like "$(psql_q "update helmq.release_history set status = 'deployed' where release_id = '$RID'" 2>&1)" "append-only" \
    "history rows cannot be updated (even by the owner)"
like "$(psql_q "delete from helmq.release_history where release_id = '$RID'" 2>&1)" "append-only" \
    "history rows cannot be deleted"

# 5. PostgreSQL restarted mid-stream: nothing lost, nothing applied twice.
ids=()
for i in $(seq 1 6); do ids+=("$(send install burst-$i -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)"); done
pg_restart "$T/pg" >/dev/null 2>&1
for i in $(seq 7 12); do ids+=("$(send install burst-$i -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)"); done
for id in "${ids[@]}"; do wait_projected "$id" 90 || break; done
ok $? "after the restart every command reaches the projection"
total_events=$(events_json | jq -r .eventId | sort -u | wc -l)
wait_for "all events projected" 60 bash -c "[ \"\$(psql -X -At '$HELMQ_DATABASE_URL' -c 'select count(*) from helmq.applied_events')\" -ge $total_events ]"
is "$(psql_q "select count(*) from helmq.applied_events")" "$total_events" \
    "every distinct event on the topic is applied exactly once ($total_events)"
is "$(psql_q "select count(*) from helmq.releases where release_name like 'burst-%' and status = 'deployed'")" 12 \
    "all 12 releases deployed in the projection"

kill -TERM "$PROJECTOR_PID"; wait "$PROJECTOR_PID"
projection_dump >"$T/dump4"
"$HELMQ_BIN/helmq-projector" rebuild --log-level warn >>"$T/rebuild.log" 2>&1
projection_dump >"$T/dump5"
cmp -s "$T/dump4" "$T/dump5"
ok $? "the projection still equals a fresh rebuild"

# 7. The COPY staging path (helmq.apply_staged): one batch holding a duplicate, a replay,
# an uninstall and a reinstall of the same name, a failure, a stale and a
# progress event, with text that COPY must escape (tab, newline, CR,
# backslash, \N, unicode), gives the tables one-event batches give and the
# tables helmq.apply_events gives, and keeps the text byte for byte.
TRICKY_DESC=$(printf 'tab\there\nnewline\\backslash \\N not null\r CR \xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9 \xe2\x9c\x93 \xf0\x9f\x9a\x80 "quoted"\n\\.\nlast')
TRICKY_ERR=$(printf 'line1\nline2\t\\x00 \\\\ end')
R1=$(cat /proc/sys/kernel/random/uuid)
R2=$(cat /proc/sys/kernel/random/uuid)
now=$(date +%s%3N)
mk() { # mk RELEASE_ID REVISION STATUS TYPE AT [JQ]: an event shaped like U_EVENT
    jq -c --arg id "$(cat /proc/sys/kernel/random/uuid)" --arg rid "$1" --argjson rev "$2" --arg st "$3" \
        --arg ty "$4" --argjson at "$5" --arg d "$TRICKY_DESC" \
        '.eventId = $id | .commandId = $id | .releaseId = $rid | .releaseName = "tricky" | .revision = $rev
         | .status = $st | .eventType = $ty | .terminal = true | .occurredAt = $at | .description = $d
         | .reason = null | .errorCode = null | .errorMessage = null
         | .history = [{revision: $rev, status: $st, chartName: "c", chartVersion: "1.0.0", appVersion: null,
                        operation: "install", description: $d, createdAt: $at}]' <<<"$U_EVENT" | jq -c "${6:-.}"
}
e_install=$(mk "$R1" 1 deployed succeeded "$now")
e_uninstall=$(mk "$R1" 2 uninstalled succeeded $((now + 1)) '.reason = "why\tnot" | .history[0].operation = "uninstall"')
e_reinstall=$(mk "$R2" 1 deployed succeeded $((now + 2)))
e_failed=$(mk "$R2" 2 failed failed $((now + 3)) ".errorCode = \"HELM_FAILED\" | .errorMessage = $(printf '%s' "$TRICKY_ERR" | jq -Rs .)")
e_stale=$(mk "$R2" 1 deployed succeeded $((now + 4)) '.description = "stale"')
e_progress=$(mk "$R2" 2 pending-upgrade started $((now + 5)) '.terminal = false | .history = []')
i=0
for e in "$e_install" "$e_install" "$e_uninstall" "$e_reinstall" "$e_failed" "$e_uninstall" "$e_stale" \
    "$e_progress"; do
    i=$((i + 1))
    echo "$e" | "$HELMQ_BIN/helmq" encode --type event >"$T/tricky-$i.avro"
done
kcat -b "$HELMQ_BROKERS" -P -t helm.release.events -k "$TENANT/$NS/tricky" "$T"/tricky-[1-8].avro
"$HELMQ_BIN/helmq-projector" rebuild --log-level debug >"$T/rebuild7.log" 2>&1
is "$?" 0 "rebuild with the tricky events exits 0"
grep -q "in the direct form ([0-9]* new" "$T/rebuild7.log"
ok $? "the direct form applied them" || tail -5 "$T/rebuild7.log" | sed 's/^/# /' >&2
projection_dump >"$T/dump7"
is "$(psql_q "select count(*) from helmq.parked_events")" 0 "nothing parked"
is "$(psql_q "select status || ' ' || revision from helmq.releases where release_id = '$R1'")" "uninstalled 2" \
    "the first lifecycle ends uninstalled (its replayed uninstall changes nothing)"
is "$(psql_q "select status || ' ' || revision from helmq.releases where release_id = '$R2'")" "failed 2" \
    "the reinstall takes the live slot within the batch; the stale event does not win"
is "$(psql_q "select count(*) from helmq.applied_events where release_id in ('$R1', '$R2')")" 6 \
    "the duplicate is applied once (6 distinct events)"
is "$(psql_q "select encode(convert_to(description, 'UTF8'), 'hex') from helmq.releases where release_id = '$R1'")" \
    "$(printf '%s' "$TRICKY_DESC" | od -An -tx1 | tr -d ' \n')" \
    "a description with tab, newline, CR, backslash, \\N and unicode is kept byte for byte"
is "$(psql_q "select encode(convert_to(last_error, 'UTF8'), 'hex') from helmq.releases where release_id = '$R2'")" \
    "$(printf '%s' "$TRICKY_ERR" | od -An -tx1 | tr -d ' \n')" "so is an errorMessage"
is "$(psql_q "select encode(convert_to(description || '|' || error, 'UTF8'), 'hex') from helmq.release_history where release_id = '$R2' and revision = 2")" \
    "$(printf '%s|%s' "$TRICKY_DESC" "$TRICKY_ERR" | od -An -tx1 | tr -d ' \n')" "and the history row's text"
is "$(psql_q "select encode(convert_to(uninstall_reason, 'UTF8'), 'hex') from helmq.releases where release_id = '$R1'")" \
    "$(printf 'why\tnot' | od -An -tx1 | tr -d ' \n')" "and the uninstall reason"
"$HELMQ_BIN/helmq-projector" rebuild --batch-size 1 --log-level warn >"$T/rebuild8.log" 2>&1
is "$?" 0 "rebuild --batch-size 1 exits 0"
projection_dump >"$T/dump8"
cmp -s "$T/dump7" "$T/dump8"
ok $? "with the tricky events too, one event per batch gives the same tables as whole batches" ||
    diff "$T/dump7" "$T/dump8" | sed "s/^/# /" >&2
# The whole topic in one call of helmq.apply_events (the JSON path; each
# release's events in their partition's order) gives the same tables.
events_json | jq -c 'del(._partition, ._offset)' | jq -cs . >"$T/events_all.json"
psql_q "select helmq.truncate_projection()" >/dev/null
{
    echo "CREATE TEMP TABLE j (doc text); COPY j FROM STDIN WITH (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02');"
    cat "$T/events_all.json"
    printf '\\.\n'
    echo "SELECT helmq.apply_events(doc::jsonb) FROM j;"
} | psql -X -q -At -v ON_ERROR_STOP=1 "$HELMQ_DATABASE_URL" >/dev/null
ok $? "apply_events takes the whole topic in one batch"
projection_dump >"$T/dump9"
cmp -s "$T/dump7" "$T/dump9"
ok $? "and gives the same tables as the COPY path (apply_staged)" ||
    diff "$T/dump7" "$T/dump9" | sed "s/^/# /" >&2
# 8. Two projectors applying the same new event at once (a rebalance): the
# second one's plain INSERT waits for the first and then collides; apply_staged
# falls back to the ON CONFLICT forms, so both commit and the event is applied once.
E=$(cat /proc/sys/kernel/random/uuid)
R3=$(cat /proc/sys/kernel/random/uuid)
N='\N'
stage_race() { # the staging rows of one install event, its history entry, then the apply
    printf 'SELECT helmq.stage_create();\nBEGIN;\nCOPY pg_temp.helmq_stage FROM STDIN;\n'
    printf '1\t0\t%s\t%s\t%s\t%s\tsucceeded\ttrue\t%s\trace\tdeployed\t1\tc\t1.0.0\t%s\t%s\td\tp\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$E" "$E" "$R3" "$TENANT" "$NS" "$N" "$N" "$now" "$N" "$N" "$N" "$N" "$N"
    printf '1\t1\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\tdeployed\t1\tc\t1.0.0\t%s\tinstall\td\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$N" "$N" "$N" "$N" "$N" "$N" "$N" "$N" "$N" "$N" "$now" "$N" "$N" "$N" "$N" "$N"
    printf '\\.\nSELECT helmq.apply_staged();\n'
}
{ stage_race; printf 'SELECT pg_sleep(2);\nCOMMIT;\n'; } |
    psql -X -q -At -v ON_ERROR_STOP=1 "$HELMQ_DATABASE_URL" >"$T/race1.out" 2>&1 &
race1=$!
sleep 0.7
{ stage_race; printf 'COMMIT;\n'; } | psql -X -q -At -v ON_ERROR_STOP=1 "$HELMQ_DATABASE_URL" >"$T/race2.out" 2>&1
is "$?" 0 "the second writer commits too (no unique_violation)" || sed 's/^/# /' "$T/race2.out" >&2
wait "$race1"
is "$?" 0 "the first writer commits"
is "$(grep -v '^$' "$T/race1.out" | tr '\n' ' ')" "1 " "the first writer applied the event"
is "$(grep -v '^$' "$T/race2.out" | tr '\n' ' ')" "0 " "the second found it applied"
is "$(psql_q "select (select count(*) from helmq.applied_events where event_id = '$E') || ' ' ||
    (select count(*) from helmq.release_history where release_id = '$R3') || ' ' ||
    (select status || revision from helmq.releases where release_id = '$R3')")" "1 1 deployed1" \
    "the event, its history row and its release, once"
done_testing
