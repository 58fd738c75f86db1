#!/usr/bin/env bash
# The worker end to end with helmq-broker, a real PostgreSQL and the simulated
# helm: the seed's lifecycle, atomic rollbacks, idempotency, rejections, DLQ.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start --partitions 2
worker_start --concurrency 4
SEED=tests/fixtures/seed-install.json
NS=tenant-acme
REL=acme-ai-service

# 1. The seed's install, with a secret among its values.
jq '.valuesOverride.database = {"password": "hunter2-s3cret", "host": "db"} | .description = "first install"' $SEED >"$T/seed.json"
id=$(send install -f "$T/seed.json" --performed-by alice)
ev=$(wait_terminal "$id")
ok $? "install: a terminal event arrives"
is "$(jf .eventType <<<"$ev")" succeeded "install: succeeded"
is "$(jf .status <<<"$ev")" deployed "install: status deployed"
is "$(jf .revision <<<"$ev")" 1 "install: revision 1"
is "$(jf '[.chartName,.chartVersion,.appVersion,.performedBy,.description] | join(" ")' <<<"$ev")" \
    "matih-ai-service 1.0.0 2.0.0 alice first install" "install: chart, versions, performedBy, description"
RID=$(jf .releaseId <<<"$ev")
[[ $RID =~ ^[0-9a-f-]{36}$ ]]
ok $? "install: a releaseId ($RID)"
is "$(jf '.history | length' <<<"$ev")" 1 "install: one history entry"
is "$(jf '.valuesDigest | length' <<<"$ev")" 64 "install: a sha256 values digest"
like "$(jf .valuesRedacted <<<"$ev")" '"password":"[REDACTED]"' "install: the password is redacted"
like "$(jf .valuesRedacted <<<"$ev")" '"replicaCount":2' "install: other values kept"
started=$(events_json --command-id "$id" | jq -r 'select(.eventType=="started") | .status')
is "$started" pending-install "install: a started progress event (pending-install) came first"
kcat -b "$HELMQ_BROKERS" -C -t helm.release.events -e -q >"$T/events.raw" 2>/dev/null
grep -qa 'hunter2-s3cret' "$T/events.raw"
is "$?" 1 "no raw secret anywhere on the events topic"

inv=$(sim_invocations "select(.event==\"start\" and .subcommand==\"install\" and .release==\"$REL\")")
is "$(wc -l <<<"$inv")" 1 "helm install ran once"
argv=$(jq -r '.argv | join(" ")' <<<"$inv")
values_file=$(jq -r '.values_files[0]' <<<"$inv")
is "$argv" "install $REL oci://registry.example/charts/matih-ai-service --namespace $NS --create-namespace --version 1.0.0 --values $values_file --timeout 600s --wait --wait-for-jobs --description first install --output json" \
    "helm install argv: release, chart from HELMQ_CHART_REPO, namespace, version, values, timeout, wait-for-jobs, description, json"
is "$(jq -r .values_mode <<<"$inv")" 0600 "the values file was private (0600)"
is "$(jq -r .stdin <<<"$inv")" /dev/null "helm's stdin is /dev/null"
[ ! -e "$values_file" ]
ok $? "the values file was removed afterwards"
ledger=$(psql_q "select state, outcome from helmq_worker.commands where command_id = '$id'")
is "$ledger" "finished|succeeded" "the ledger recorded the command"

# 2. Upgrade, rollback, uninstall with a reason.
id=$(send upgrade $REL -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 --app-version 2.1.0 \
    --set-values '{"replicaCount":3}' --performed-by bob)
ev=$(wait_terminal "$id")
is "$(jf '[.eventType,.status,.revision,.chartVersion,.appVersion,.releaseId] | join(" ")' <<<"$ev")" \
    "succeeded deployed 2 1.1.0 2.1.0 $RID" "upgrade: revision 2 deployed, same releaseId"
is "$(psql_q "select status from helmq_worker.revisions where release_id = '$RID' and revision = 1")" superseded \
    "upgrade: revision 1 superseded"
id=$(send rollback $REL -t $TENANT -n $NS)
ev=$(wait_terminal "$id")
is "$(jf '[.eventType,.status,.revision,.chartVersion] | join(" ")' <<<"$ev")" "succeeded deployed 3 1.0.0" \
    "rollback: a new revision 3 with revision 1's chart"
like "$(sim_invocations 'select(.event=="start" and .subcommand=="rollback") | .argv | join(" ")')" "rollback $REL 1 " \
    "rollback: the worker passes the previous deployed revision explicitly"
id=$(send uninstall $REL -t $TENANT -n $NS --reason "Tenant migration")
ev=$(wait_terminal "$id")
is "$(jf '[.eventType,.status,.revision,.reason] | join("|")' <<<"$ev")" "succeeded|uninstalled|4|Tenant migration" \
    "uninstall: uninstalled with its reason, as revision 4"
is "$(psql_q "select status || '|' || reason from helmq_worker.releases where release_id = '$RID'")" \
    "uninstalled|Tenant migration" "uninstall: the registry keeps the record"
"$HELMQ_HELM" status $REL -n $NS >/dev/null 2>&1
is "$?" 1 "uninstall: helm no longer has the release"

# A new install of the same name is a new lifecycle.
id=$(send install -f "$SEED")
ev=$(wait_terminal "$id")
is "$(jf '[.eventType,.revision] | join(" ")' <<<"$ev")" "succeeded 1" "reinstall: revision 1 again"
[ "$(jf .releaseId <<<"$ev")" != "$RID" ]
ok $? "reinstall: a new releaseId"

# 3. Atomic install failing: uninstalled by the worker, with helm's error.
sim_knob $NS broken '{"install": {"fail": "pod crashloop: image pull backoff"}}'
id=$(send install broken -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 --atomic)
ev=$(wait_terminal "$id")
is "$(jf '[.eventType,.status,.errorCode] | join(" ")' <<<"$ev")" "rolled_back uninstalled HELM_FAILED" \
    "atomic install failing: rolled back (uninstalled)"
like "$(jf .errorMessage <<<"$ev")" "pod crashloop: image pull backoff" "atomic install failing: helm's error in the event"
is "$(jf '[.history[] | (.revision|tostring) + ":" + .status] | join(",")' <<<"$ev")" "1:failed,2:uninstalled" \
    "atomic install failing: history failed then uninstalled"
"$HELMQ_HELM" status broken -n $NS >/dev/null 2>&1
is "$?" 1 "atomic install failing: nothing left in helm"

# Non-atomic failure: the release stays failed.
sim_knob $NS broken2 '{"install": {"fail": "boom"}}'
id=$(send install broken2 -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)
ev=$(wait_terminal "$id")
is "$(jf '[.eventType,.status,.revision,.errorCode] | join(" ")' <<<"$ev")" "failed failed 1 HELM_FAILED" \
    "non-atomic install failing: failed at revision 1"

# Atomic upgrade failing: back to the previous deployed revision.
id=$(send install up -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)
wait_terminal "$id" >/dev/null
sim_knob $NS up '{"upgrade": {"fail": "readiness probe failed"}}'
id=$(send upgrade up -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.2.0 --atomic)
ev=$(wait_terminal "$id")
is "$(jf '[.eventType,.status,.revision,.chartVersion,.errorCode] | join(" ")' <<<"$ev")" \
    "rolled_back deployed 3 1.0.0 HELM_FAILED" "atomic upgrade failing: rolled back to revision 1's chart as revision 3"
is "$(jf '[.history[] | (.revision|tostring) + ":" + .status] | join(",")' <<<"$ev")" "2:failed,3:deployed" \
    "atomic upgrade failing: history has the failed and the rollback revisions"
like "$(sim_invocations 'select(.event=="start" and .release=="up" and .subcommand=="rollback") | .argv | join(" ")')" \
    "rollback up 1 " "atomic upgrade failing: helm rollback to revision 1"

# An install over a name that already exists in helm (made outside helmq): helm
# refuses it; the worker rejects it RELEASE_EXISTS and, atomic or not, never
# removes the release it did not create.
"$HELMQ_HELM" install foreign oci://registry.example/charts/matih-ai-service --version 1.0.0 -n $NS >/dev/null 2>&1
ok $? "a release 'foreign' made with helm directly, outside helmq"
for atomic in --atomic ""; do
    id=$(send install foreign -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.1.0 $atomic)
    ev=$(wait_terminal "$id")
    is "$(jf '[.eventType,.status,.errorCode] | join(" ")' <<<"$ev")" "rejected rejected RELEASE_EXISTS" \
        "install ${atomic:-(not atomic)} over a name helm already has: rejected RELEASE_EXISTS"
    like "$(jf .errorMessage <<<"$ev")" "cannot re-use a name that is still in use" "with helm's reason"
    is "$("$HELMQ_HELM" status foreign -n $NS -o json | jq -r '[.info.status,.version,.chart.metadata.version] | join(" ")')" \
        "deployed 1 1.0.0" "install ${atomic:-(not atomic)} over a name helm already has: the existing release is untouched"
done
is "$(sim_invocations 'select(.event=="start" and .release=="foreign" and .subcommand=="uninstall")' | wc -l)" 0 \
    "the worker never ran helm uninstall on the release it did not create"
is "$(psql_q "select count(*) from helmq_worker.releases where release_name = 'foreign'")" 0 \
    "the registry did not adopt the foreign release"

# 6. The same commandId twice: one helm run, the same outcome republished.
CID=5d6c4b3a-2918-4f7e-8d6c-5b4a39281706
id=$(send install dup -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 --command-id $CID)
wait_terminal $CID >/dev/null
id=$(send install dup -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 --command-id $CID)
wait_for "the republished event" 30 bash -c "[ \$(\"$HELMQ_BIN/helmq\" events --command-id $CID 2>/dev/null | jq -c 'select(.terminal)' | wc -l) -ge 2 ]"
terms=$(events_json --command-id $CID | jq -c 'select(.terminal)')
is "$(wc -l <<<"$terms")" 2 "redelivered command: its terminal event published again"
is "$(jq -r .eventId <<<"$terms" | sort -u | wc -l)" 1 "with the same eventId (a recognisable duplicate)"
is "$(jq -r .eventType <<<"$terms" | sort -u)" succeeded "and the same outcome"
is "$(sim_invocations 'select(.event=="start" and .release=="dup" and .subcommand=="install")' | wc -l)" 1 \
    "helm ran once for it"

# 8. Rejections, each with its code; the worker keeps serving.
reject_case() { # reject_case NAME CODE VERB ARGS...
    local name=$1 code=$2
    shift 2
    local cid ev
    cid=$(send "$@")
    ev=$(wait_terminal "$cid")
    is "$(jf '[.eventType,.errorCode] | join(" ")' <<<"$ev")" "rejected $code" "$name: rejected $code"
    like "$(jf .errorMessage <<<"$ev")" " " "$name: with a message ($(jf .errorMessage <<<"$ev"))"
}
reject_case "another tenant's namespace" NAMESPACE_OWNED install intruder -t $OTHER_TENANT -n $NS \
    --chart-name matih-ai-service --chart-version 1.0.0
reject_case "protected namespace" PROTECTED_NAMESPACE install sneaky -t $TENANT -n kube-system \
    --chart-name matih-ai-service --chart-version 1.0.0
reject_case "install of a live name" RELEASE_EXISTS install -f "$SEED"
reject_case "upgrade of an unknown release" RELEASE_NOT_FOUND upgrade ghost -t $TENANT -n $NS \
    --chart-name matih-ai-service --chart-version 1.0.0
reject_case "uninstall of an unknown release" RELEASE_NOT_FOUND uninstall ghost -t $TENANT -n $NS
reject_case "releaseId guard" RELEASE_ID_MISMATCH upgrade $REL -t $TENANT -n $NS --chart-name matih-ai-service \
    --chart-version 1.1.0 --release-id 00000000-0000-4000-8000-000000000000
# An invalid command that bypassed the CLI's validation (written with encode).
jq -c '. + {"operation":"install","commandId":"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9","performedBy":"x","requestedAt":1,"releaseName":"Bad_Name","valuesOverride":"{}"}' $SEED |
    "$HELMQ_BIN/helmq" encode >"$T/invalid.avro"
kcat -b "$HELMQ_BROKERS" -P -t helm.release.commands -k "$TENANT/$NS/Bad_Name" "$T/invalid.avro"
ev=$(wait_terminal 0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9)
is "$(jf '[.eventType,.errorCode] | join(" ")' <<<"$ev")" "rejected INVALID_FIELD" "invalid field: rejected INVALID_FIELD"
like "$(jf .errorMessage <<<"$ev")" "releaseName" "invalid field: names the field"
is "$(sim_invocations 'select(.release=="intruder" or .release=="sneaky" or .release=="ghost" or .release=="Bad_Name")' | wc -l)" 0 \
    "no helm ran for any rejected command"

# Undecodable records go to the DLQ unchanged, with headers.
head -c 64 /dev/urandom >"$T/garbage.bin"
printf '\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08\x02' >"$T/unknown-fp.bin"
kcat -b "$HELMQ_BROKERS" -P -t helm.release.commands -k garbage "$T/garbage.bin" "$T/unknown-fp.bin"
wait_for "two DLQ records" 30 bash -c "[ \$(kcat -b $HELMQ_BROKERS -C -t helm.release.commands.dlq -e -q -f 'x\n' 2>/dev/null | wc -l) -ge 2 ]"
ok $? "undecodable records reach the DLQ"
hdrs=$(kcat -b "$HELMQ_BROKERS" -C -t helm.release.commands.dlq -e -q -f '%h\n')
like "$hdrs" "helmq.error=bad-header" "DLQ header names the error (bad header)"
like "$hdrs" "helmq.error=unknown-fingerprint" "DLQ header names the error (unknown fingerprint)"
like "$hdrs" "helmq.source.topic=helm.release.commands" "DLQ header names the source topic"
like "$hdrs" "helmq.source.offset=" "DLQ header names the source offset"
kcat -b "$HELMQ_BROKERS" -C -t helm.release.commands.dlq -e -q -f '%s' >"$T/dlq.bin"
cat "$T/garbage.bin" "$T/unknown-fp.bin" | cmp -s - "$T/dlq.bin" ||
    cat "$T/unknown-fp.bin" "$T/garbage.bin" | cmp -s - "$T/dlq.bin"
ok $? "DLQ records are byte-identical to what was sent"
id=$(send install after-dlq -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)
ev=$(wait_terminal "$id")
is "$(jf .eventType <<<"$ev")" succeeded "the worker still serves after bad input"

# Every command ended in exactly one terminal event (duplicates only for the redelivered one).
dups=$(events_json | jq -r 'select(.terminal) | .commandId' | sort | uniq -d)
is "$dups" "$CID" "exactly one terminal event per command (but the deliberately redelivered one)"

# Finishing a command unlocks its key once (helmq_worker.command_finish): an unlock that finds no
# hold would write a WARNING to PostgreSQL's log for every command.
is "$(grep -c "you don't own a lock" "$T/pg/postgres.log")" 0 "no failed-unlock warnings in PostgreSQL's log"

worker_stop
is "$?" 0 "SIGTERM: the worker exits 0"
like "$(cat "$WORKER_LOG")" "stopped:" "and says what it did"
done_testing
