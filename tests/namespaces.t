#!/usr/bin/env bash
# Namespace claims (helmq_worker.namespaces): helmq-api shows who owns a namespace, to its
# tenant and to admins only (404 to another tenant, the same as for a
# namespace nobody claimed), and lists a tenant's namespaces; `helmq
# namespaces release` refuses while a live release or a command in progress
# remains and takes the claim's row lock, releases after the uninstall, and
# another tenant's install into the namespace, refused NAMESPACE_OWNED
# before, then succeeds. The simulated helm, the embedded broker and a
# private PostgreSQL.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start
worker_start
api_start
N="$API_URL/api/v1/helm/namespaces"
NS=tenant-shared
CHART=(--chart-name matih-ai-service --chart-version 1.0.0)
c() { # c METHOD URL TOKEN [curl args]: prints "STATUS BODY"
    local m=$1 url=$2 tok=$3
    shift 3
    curl -s -o "$T/body" -w '%{http_code}' -X "$m" ${tok:+-H "Authorization: Bearer $tok"} "$@" "$url"
    printf ' '
    cat "$T/body"
}
status() { cut -d' ' -f1 <<<"$1"; }
body() { cut -d' ' -f2- <<<"$1"; }
outcome() { jf '[.eventType, .status, .errorCode // ""] | join(" ")'; }
run() { # run VERB ARGS...: sends a command, prints its terminal event
    local id
    id=$(send "$@") || return 1
    wait_terminal "$id" 120
}

# --- a tenant's install claims the namespace; the API shows the owner -------------------
ev=$(run install app -t $TENANT -n $NS "${CHART[@]}")
is "$(outcome <<<"$ev")" "succeeded deployed " "tenant A installs app into $NS"
CLAIMER=$(jf .commandId <<<"$ev")
ev=$(run install own -t $OTHER_TENANT -n tenant-globex "${CHART[@]}")
is "$(outcome <<<"$ev")" "succeeded deployed " "tenant B installs into its own namespace"

r=$(c GET "$N/$NS" "$ACME_TOKEN")
is "$(status "$r")" 200 "GET /namespaces/:namespace as its owner: 200"
is "$(body "$r" | jq -r '[.namespace, .tenantId, .claimedBy, .liveReleases] | join(" ")')" \
    "$NS $TENANT $CLAIMER 1" "namespace, owner tenant, the claiming command, one live release"
like "$(body "$r" | jq -r .claimedAt)" "T" "with claimedAt"
OWNER_DOC=$(body "$r" | jq -cS .)
r=$(c GET "$N/$NS" "$ADMIN_TOKEN")
is "$(status "$r") $(body "$r" | jq -cS .)" "200 $OWNER_DOC" "an admin sees the same"
is "$("$HELMQ_BIN/helmq" namespaces get $NS | jq -cS .)" "$OWNER_DOC" "the same as helmq namespaces get"
other=$(c GET "$N/$NS" "$GLOBEX_TOKEN")
is "$(status "$other")" 404 "another tenant gets 404"
unclaimed=$(c GET "$N/never-claimed" "$GLOBEX_TOKEN")
is "$(status "$unclaimed")" 404 "an unclaimed namespace: 404"
is "$(body "$other")" "$(body "$unclaimed")" "another tenant's namespace answers exactly as an unclaimed one"

# --- lists ------------------------------------------------------------------------------------
names() { body "$1" | jq -r 'map(.namespace) | join(",")'; }
r=$(c GET "$N" "$ACME_TOKEN")
is "$(status "$r") $(names "$r")" "200 $NS" "GET /namespaces: a tenant lists its own"
r=$(c GET "$N" "$GLOBEX_TOKEN")
is "$(names "$r")" "tenant-globex" "the other tenant lists only its own"
r=$(c GET "$N" "$ADMIN_TOKEN")
is "$(names "$r")" "tenant-globex,$NS" "an admin lists every claim"
is "$(body "$r" | jq -cS .)" "$("$HELMQ_BIN/helmq" namespaces list | jq -cS .)" "the same as helmq namespaces list"
r=$(c GET "$N?tenantId=$OTHER_TENANT" "$ADMIN_TOKEN")
is "$(names "$r")" "tenant-globex" "?tenantId= narrows an admin's list"
is "$(status "$(c GET "$N?tenantId=$OTHER_TENANT" "$ACME_TOKEN")")" 404 "a tenant naming another tenant: 404"
is "$(names "$(c GET "$N?tenantId=$TENANT" "$ACME_TOKEN")")" "$NS" "a tenant naming itself: its list"
r=$(c GET "$N?tenantId=nope" "$ADMIN_TOKEN")
is "$(status "$r") $(body "$r" | jq -r '.field + " " + .rule')" "400 tenantId uuid" "a malformed tenantId: 400"
r=$(c GET "$N/Bad_Name" "$ADMIN_TOKEN")
is "$(status "$r") $(body "$r" | jq -r '.field + " " + .rule')" "400 namespace dns-1123-label" \
    "a malformed namespace: 400"
r=$(c DELETE "$N/$NS" "$ADMIN_TOKEN")
is "$(status "$r")" 405 "DELETE /namespaces/:namespace: 405 (releasing is the CLI's)"
is "$(status "$(c GET "$N/$NS" "")")" 401 "no token: 401"
is "$(status "$(c GET "$N/$NS/more" "$ADMIN_TOKEN")")" 404 "an unknown sub-path: 404"

# --- the claim holds while a release is live ------------------------------------------------------
ev=$(run install intruder -t $OTHER_TENANT -n $NS "${CHART[@]}")
is "$(outcome <<<"$ev")" "rejected rejected NAMESPACE_OWNED" "another tenant's install into $NS: NAMESPACE_OWNED"
out=$("$HELMQ_BIN/helmq" namespaces release $NS 2>&1)
is "$?" 1 "helmq namespaces release while app is live: exit 1"
like "$out" "still has live releases: app (tenant $TENANT, deployed, revision 1)" "naming the live release"
is "$(status "$(c GET "$N/$NS" "$ACME_TOKEN")")" 200 "the claim stays"

# --- uninstalled: an in-flight command and the claim's row lock still refuse ------------------------
ev=$(run uninstall app -t $TENANT -n $NS --reason "leaving")
is "$(outcome <<<"$ev")" "succeeded uninstalled " "tenant A uninstalls app"
is "$(body "$(c GET "$N/$NS" "$ACME_TOKEN")" | jq .liveReleases)" 0 "no live release left; still A's"
psql_q "INSERT INTO helmq_worker.commands (command_id, release_key, operation, state)
        VALUES ('00000000-0000-4000-8000-000000000001', '$TENANT/$NS/next', 'install', 'received')"
out=$("$HELMQ_BIN/helmq" namespaces release $NS 2>&1)
is "$?" 1 "a command of the namespace not finished: refused"
like "$out" "has commands in progress: install next (received" "naming the command"
psql_q "DELETE FROM helmq_worker.commands WHERE command_id = '00000000-0000-4000-8000-000000000001'"
# An install's start holds the claim FOR KEY SHARE (command_start): the
# release's FOR UPDATE waits for it.
hold() { # hold LOCK: a session holds the claim's row lock until unhold
    rm -f "$T/hold"
    mkfifo "$T/hold"
    (psql -X -q -v ON_ERROR_STOP=1 "$HELMQ_DATABASE_URL" <"$T/hold" >/dev/null 2>&1) &
    HOLD_PID=$!
    exec 7>"$T/hold"
    echo "BEGIN; SELECT 1 FROM helmq_worker.namespaces WHERE namespace = '$NS' FOR $1; SELECT pg_sleep(0);" >&7
    wait_for "the claim's row lock to be held" 20 bash -c \
        "[ \"\$(psql -X -At '$HELMQ_DATABASE_URL' -c \"select count(*) from pg_stat_activity where query like '%pg_sleep(0)%' and pid <> pg_backend_pid() and state = 'idle in transaction'\")\" = 1 ]"
}
unhold() {
    echo "ROLLBACK;" >&7
    exec 7>&-
    wait "$HOLD_PID"
}
hold "KEY SHARE"
out=$(PGOPTIONS='-c lock_timeout=1000' "$HELMQ_BIN/helmq" namespaces release $NS 2>&1)
is "$?" 1 "a release while an install's start holds the claim's row: waits (lock timeout here)"
like "$out" "lock timeout" "the release waited on the claim's row lock"
unhold

# --- released: the next tenant may claim it ---------------------------------------------------------
out=$("$HELMQ_BIN/helmq" namespaces release $NS --performed-by ops-jane)
is "$?" 0 "helmq namespaces release after the uninstall: exit 0"
is "$(jq -r '[.namespace, .tenantId, .claimedBy, .releasedBy] | join(" ")' <<<"$out")" \
    "$NS $TENANT $CLAIMER ops-jane" "prints the released claim and who released it"
is "$(psql_q "SELECT tenant_id || ' ' || released_by FROM helmq_worker.released_claims WHERE namespace = '$NS'")" \
    "$TENANT ops-jane" "the release is recorded in helmq_worker.released_claims"
is "$(status "$(c GET "$N/$NS" "$ADMIN_TOKEN")")" 404 "the API no longer shows a claim"
out=$("$HELMQ_BIN/helmq" namespaces release $NS 2>&1)
is "$?" 1 "releasing it again: exit 1"
like "$out" "is not claimed by any tenant" "not claimed"
ev=$(run install newcomer -t $OTHER_TENANT -n $NS "${CHART[@]}")
is "$(outcome <<<"$ev")" "succeeded deployed " "another tenant's install into $NS now succeeds"
r=$(c GET "$N/$NS" "$GLOBEX_TOKEN")
is "$(status "$r") $(body "$r" | jq -r '.tenantId + " " + (.liveReleases | tostring)')" "200 $OTHER_TENANT 1" \
    "the API shows the new owner to it"
is "$(status "$(c GET "$N/$NS" "$ACME_TOKEN")")" 404 "and 404 to the former owner"
ev=$(run install app -t $TENANT -n $NS "${CHART[@]}")
is "$(outcome <<<"$ev")" "rejected rejected NAMESPACE_OWNED" "the former owner's install is now refused"
# And the other way round: an install's start waits for a release's lock.
START="SELECT started FROM helmq_worker.command_start(gen_random_uuid(), gen_random_uuid(), 0, 0,
       '$OTHER_TENANT', '$NS', 'test', 0)"
hold UPDATE
like "$(psql -X -q -At "$HELMQ_DATABASE_URL" -c "SET lock_timeout = 1000; $START" 2>&1)" "lock timeout" \
    "an install's start waits while a release holds the claim's row"
unhold
is "$(psql_q "$START")" t "and starts once it is free"

# --- database roles: readers get the view, never the ledger ---------------------------------------
psql_q "CREATE ROLE ns_reader LOGIN IN ROLE helmq_reader; CREATE ROLE ns_admin LOGIN IN ROLE helmq_admin"
as_role() { psql -X -q -At "$HELMQ_DATABASE_URL" -c "SET ROLE $1; $2" 2>&1; }
is "$(as_role ns_reader "SET helmq.tenant_id = '$OTHER_TENANT';
      SELECT string_agg(namespace, ',' ORDER BY namespace) FROM helmq.namespace_claims")" \
    "tenant-globex,$NS" "helmq_reader sees its tenant's claims"
is "$(as_role ns_reader "SET helmq.tenant_id = '$TENANT'; SELECT count(*) FROM helmq.namespace_claims")" 0 \
    "and none of another tenant's"
is "$(as_role ns_admin "SELECT count(*) FROM helmq.namespace_claims")" 2 "helmq_admin sees every claim"
like "$(as_role ns_reader "SELECT count(*) FROM helmq_worker.namespaces")" "permission denied" \
    "helmq_reader cannot read the ledger"
like "$(as_role ns_admin "SELECT helmq_worker.namespace_release('$NS', 'x')")" "permission denied" \
    "helmq_admin cannot release a claim"

kill -TERM "$API_PID"
wait "$API_PID"
done_testing
