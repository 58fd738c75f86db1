#!/usr/bin/env bash
# Security checks against a running worker and projector: tenant isolation of
# namespaces, protected namespaces, argv injection into helm, SQL injection
# through the CLI, the values files' privacy, secrets kept out of events,
# projection and ledger, and no shell anywhere. Each attempt is refused with
# its own error, or is harmless data.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"


stack_start --partitions 2
# helm behind a path that a shell would split and expand: the worker must
# execve it as one argument.
HELM_DIR="$T/bin dir;\$(touch pwned)\`touch pwned\`"
mkdir -p "$HELM_DIR"
ln -s "$HELMQ_HELM" "$HELM_DIR/helm"
# A permissive umask: the values files must be private all the same.
umask 000
worker_start --concurrency 4 --protected-namespaces "extra-ns, second-ns" --helm "$HELM_DIR/helm"
umask 022
projector_start
CHART=matih-ai-service
PWNED_BEFORE=$(ls -d /tmp/pwned* 2>/dev/null)

# bypass JSON_FILE: encode a command the CLI would refuse and produce it
# directly (the worker must validate on its own); prints the commandId.
bypass() {
    "$HELMQ_BIN/helmq" encode <"$1" >"$1.avro" || return 1
    kcat -b "$HELMQ_BROKERS" -X partitioner=murmur2_random -P -t helm.release.commands \
        -k "$(jq -r '.tenantId + "/" + .namespace + "/" + .releaseName' "$1")" "$1.avro" || return 1
    jq -r .commandId "$1"
}
# base_cmd OVERRIDES_JQ: a valid install of release "base" in tenant-a, changed by the jq filter.
base_cmd() {
    "$HELMQ_BIN/helmq" install base -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.0.0 \
        --performed-by sec-test --dry-run | jq -c "$1"
}
outcome() { jf '[.eventType, .status, .errorCode // ""] | join(" ")'; }
reject_case() { # reject_case NAME CODE VERB ARGS...: sent by the CLI, rejected by the worker
    local name=$1 code=$2 cid ev
    shift 2
    cid=$(send "$@")
    ev=$(wait_terminal "$cid" 120)
    is "$(outcome <<<"$ev")" "rejected rejected $code" "$name: rejected $code"
    like "$(jf .errorMessage <<<"$ev")" " " "$name: with a message ($(jf .errorMessage <<<"$ev"))"
}
helm_ran() { sim_invocations 'select(.event == "start" and .release != null)'; }
cmd_count() { kcat_count helm.release.commands; }

# ---------------------------------------------------------------------------
# 1. Tenants: a namespace belongs to the tenant that first installs into it.
SECRET_VALUES='{"database":{"password":"RAW-pw-7f3a","host":"db"},"apiToken":"RAW-tok-91c2",
 "Credentials":{"user":"u","pass":"RAW-cred-55d1"},"list":[{"secretKey":"RAW-sk-0a1b","name":"n"}],
 "PRIVATE_KEY":"RAW-pk-77e0","replicaCount":2}'
id=$(send install app -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.0.0 --set-values "$SECRET_VALUES")
ev=$(wait_terminal "$id" 120)
is "$(outcome <<<"$ev")" "succeeded deployed " "tenant A installs app into tenant-a"
RID=$(jf .releaseId <<<"$ev")
reject_case "another tenant installing into tenant-a" NAMESPACE_OWNED install intruder -t $OTHER_TENANT -n tenant-a \
    --chart-name $CHART --chart-version 1.0.0
reject_case "another tenant upgrading app in tenant-a" NAMESPACE_OWNED upgrade app -t $OTHER_TENANT -n tenant-a \
    --chart-name $CHART --chart-version 1.1.0
reject_case "another tenant rolling back app in tenant-a" NAMESPACE_OWNED rollback app -t $OTHER_TENANT -n tenant-a \
    --revision 1
reject_case "another tenant uninstalling app in tenant-a" NAMESPACE_OWNED uninstall app -t $OTHER_TENANT -n tenant-a
reject_case "another tenant guessing app's releaseId" NAMESPACE_OWNED upgrade app -t $OTHER_TENANT -n tenant-a \
    --chart-name $CHART --chart-version 1.1.0 --release-id "$RID"
is "$(helm_ran | jq -r 'select(.namespace == "tenant-a") | .subcommand + " " + .release')" "install app" \
    "helm ran nothing in tenant-a for the other tenant"
is "$(jq -r '.revisions[-1] | [.info.status, .version] | join(" ")' "$HELM_SIM_STATE/releases/tenant-a/app.json")" "deployed 1" \
    "tenant A's release is untouched"
id=$(send install app -t $OTHER_TENANT -n tenant-b --chart-name $CHART --chart-version 1.0.0)
is "$(wait_terminal "$id" 120 | outcome)" "succeeded deployed " "the other tenant installs the same name in its own namespace"
reject_case "tenant A installing into tenant-b" NAMESPACE_OWNED install app2 -t $TENANT -n tenant-b \
    --chart-name $CHART --chart-version 1.0.0
# An uppercase spelling of the owner's UUID is the same tenant.
id=$(send upgrade app -t "${TENANT^^}" -n tenant-a --chart-name $CHART --chart-version 1.1.0 --set-values "$SECRET_VALUES" \
    --description "upgrade by the owner")
ev=$(wait_terminal "$id" 120)
is "$(outcome <<<"$ev")" "succeeded deployed " "the owner, its UUID in upper case, upgrades its release"
is "$(jf '[.tenantId, .releaseId, .revision] | join(" ")' <<<"$ev")" "$TENANT $RID 2" \
    "its event names the tenant in lower case, the same release, revision 2"
is "$(psql_q "select string_agg(release_key, ' ') from helmq_worker.releases where release_key ilike '%/tenant-a/app'")" \
    "$TENANT/tenant-a/app" "one release key for the release: the UUID's lower case"
# The same from an upstream producer that is not the CLI (which writes UUIDs
# in lower case itself): the worker keys on the canonical form on its own.
f="$T/upper-$RANDOM.json"
"$HELMQ_BIN/helmq" upgrade app -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.2.0 --performed-by sec-test \
    --dry-run | jq -c --arg t "${TENANT^^}" --arg r "${RID^^}" '.tenantId = $t | .releaseId = $r | .commandId |= ascii_upcase' >"$f"
ev=$(wait_terminal "$(bypass "$f")" 120)
cid=$(jq -r .commandId "$f")
is "$(jq -r --arg c "${cid,,}" '[.eventType, .status, .tenantId, .releaseId, .revision, .commandId == $c] | join(" ")' <<<"$ev")" \
    "succeeded deployed $TENANT $RID 3 true" \
    "upper-case tenantId, releaseId and commandId produced directly: the same release, the ids in lower case"

# Two tenants installing into a fresh namespace at the same time: one wins,
# the other is refused before helm runs.
sim_knob race-ns first '{"install": {"sleep": 3}}'
sim_knob race-ns second '{"install": {"sleep": 3}}'
id1=$(send install first -t $TENANT -n race-ns --chart-name $CHART --chart-version 1.0.0)
id2=$(send install second -t $OTHER_TENANT -n race-ns --chart-name $CHART --chart-version 1.0.0)
o1=$(wait_terminal "$id1" 120 | outcome)
o2=$(wait_terminal "$id2" 120 | outcome)
diag "racing installs into race-ns: tenant A: $o1; tenant B: $o2"
[ "$(printf '%s\n%s\n' "$o1" "$o2" | sort | tr '\n' '|')" = "rejected rejected NAMESPACE_OWNED|succeeded deployed |" ]
ok $? "racing installs of two tenants into a fresh namespace: one succeeds, the other NAMESPACE_OWNED"
is "$(helm_ran | jq -r 'select(.namespace == "race-ns" and .subcommand == "install") | .release')" \
    "$(jq -r 'select(.eventType == "succeeded") | .releaseName' < <(_terminal_of "$id1"; _terminal_of "$id2"))" \
    "racing installs: helm ran only the winner's install"
is "$(psql_q "select tenant_id from helmq_worker.namespaces where namespace = 'race-ns'")" \
    "$(jq -r 'select(.eventType == "succeeded") | .tenantId' < <(_terminal_of "$id1"; _terminal_of "$id2"))" \
    "race-ns belongs to the winner's tenant"
# A failed (non-atomic) install leaves tenant A's release in its namespace:
# the namespace is tenant A's all the same.
sim_knob fail-ns broken '{"install": {"fail": "image pull backoff"}}'
id=$(send install broken -t $TENANT -n fail-ns --chart-name $CHART --chart-version 1.0.0)
is "$(wait_terminal "$id" 120 | outcome)" "failed failed HELM_FAILED" "tenant A's first install into fail-ns fails (release left failed)"
id=$(send install squatter -t $OTHER_TENANT -n fail-ns --chart-name $CHART --chart-version 1.0.0)
o=$(wait_terminal "$id" 120 | outcome)
[ "$o" = "rejected rejected NAMESPACE_OWNED" ]
ok $? "another tenant cannot take fail-ns, where tenant A's failed release lives (got: $o)"

# ---------------------------------------------------------------------------
# 2. Protected namespaces: the four of Kubernetes and the configured ones.
for ns in kube-system kube-public kube-node-lease default extra-ns second-ns; do
    reject_case "install into $ns" PROTECTED_NAMESPACE install sneaky -t $TENANT -n $ns --chart-name $CHART \
        --chart-version 1.0.0
done
reject_case "uninstall in kube-system" PROTECTED_NAMESPACE uninstall coredns -t $TENANT -n kube-system
reject_case "upgrade in extra-ns" PROTECTED_NAMESPACE upgrade sneaky -t $TENANT -n extra-ns --chart-name $CHART \
    --chart-version 1.0.0
reject_case "rollback in default" PROTECTED_NAMESPACE rollback sneaky -t $TENANT -n default
is "$(helm_ran | jq -r 'select(.release == "sneaky" or .release == "coredns")' | wc -l)" 0 \
    "helm never ran in a protected namespace"
is "$(psql_q "select count(*) from helmq_worker.namespaces where namespace in ('kube-system','kube-public','kube-node-lease','default','extra-ns','second-ns')")" \
    0 "no protected namespace was claimed by a tenant"
# Spellings that are not the protected name are not valid namespaces at all.
for ns in KUBE-SYSTEM "kube-system " kube_system; do
    f="$T/ns-$RANDOM.json"
    base_cmd ".namespace = \"$ns\"" >"$f"
    ev=$(wait_terminal "$(bypass "$f")" 60)
    is "$(outcome <<<"$ev")" "rejected rejected INVALID_FIELD" "namespace '$ns' (bypassing the CLI): rejected INVALID_FIELD"
done

# ---------------------------------------------------------------------------
# 3. argv injection: text that looks like flags is data.
n=0
for d in "--post-renderer=/bin/sh" "--set" "--kubeconfig /etc/kubernetes/admin.conf" "-n kube-system" "--" "--description"; do
    n=$((n + 1))
    id=$(send install inj$n -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.0.0 --description="$d")
    ev=$(wait_terminal "$id" 120)
    is "$(outcome <<<"$ev") $(jf .description <<<"$ev")" "succeeded deployed  $d" "install with description '$d': succeeded, kept verbatim"
    inv=$(helm_ran | jq -c "select(.release == \"inj$n\" and .subcommand == \"install\")")
    is "$(jq -c '.argv | del(.[9])' <<<"$inv")" \
        "$(jq -nc --arg r inj$n --arg d "$d" '["install",$r,"oci://registry.example/charts/matih-ai-service","--namespace","tenant-a","--create-namespace","--version","1.0.0","--values","--timeout","300s","--wait","--description",$d,"--output","json"]')" \
        "install '$d': the argv element after --description is exactly the text, no other flag appeared"
done
id=$(send upgrade inj1 -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.1.0 --description="--post-renderer=/bin/sh")
is "$(wait_terminal "$id" 120 | outcome)" "succeeded deployed " "upgrade with a flag-like description succeeds"
inv=$(helm_ran | jq -c 'select(.release == "inj1" and .subcommand == "upgrade")')
is "$(jq -c '.argv | del(.[8])' <<<"$inv")" \
    '["upgrade","inj1","oci://registry.example/charts/matih-ai-service","--namespace","tenant-a","--version","1.1.0","--values","--timeout","300s","--wait","--description","--post-renderer=/bin/sh","--output","json"]' \
    "upgrade: the description is one argv element after --description"
id=$(send uninstall inj2 -t $TENANT -n tenant-a --description="--no-hooks" --reason "--keep-history")
is "$(wait_terminal "$id" 120 | outcome)" "succeeded uninstalled " "uninstall with flag-like description and reason succeeds"
inv=$(helm_ran | jq -c 'select(.release == "inj2" and .subcommand == "uninstall")')
is "$(jq -c .argv <<<"$inv")" '["uninstall","inj2","--namespace","tenant-a","--timeout","300s","--wait","--description","--no-hooks"]' \
    "uninstall: the description is one argv element, the reason is not in helm's argv"

# Fields that would land in argv unquoted by position are refused, by the CLI
# (exit 2, nothing sent) and by the worker when the CLI is bypassed.
before=$(cmd_count)
cli_refuses() { # cli_refuses NAME FIELD_RULE ARGS...
    local name=$1 field=$2 err
    shift 2
    err=$("$HELMQ_BIN/helmq" install "$@" 2>&1 >/dev/null)
    is "$?" 2 "CLI: $name: exit 2"
    like "$err" "invalid $field" "CLI: $name: names $field"
}
cli_refuses "appVersion '--set x'" appVersion ok -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.0.0 --app-version="--set x"
cli_refuses "chartVersion '1.0.0 --post-renderer x'" chartVersion ok -t $TENANT -n tenant-a --chart-name $CHART \
    --chart-version "1.0.0 --post-renderer x"
cli_refuses "chartVersion '--devel'" chartVersion ok -t $TENANT -n tenant-a --chart-name $CHART --chart-version=--devel
cli_refuses "chartName '--repo=http://evil'" chartName ok -t $TENANT -n tenant-a --chart-name=--repo=http://evil --chart-version 1.0.0
cli_refuses "releaseName '--dry-run'" releaseName --release-name=--dry-run -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.0.0
cli_refuses "namespace '--kube-apiserver=x'" namespace ok -t $TENANT --namespace=--kube-apiserver=x --chart-name $CHART --chart-version 1.0.0
is "$(cmd_count)" "$before" "CLI: nothing was sent for any refused command"
for c in 'appVersion="--set x"' 'appVersion="-x"' 'chartVersion="1.0.0 --post-renderer x"' 'chartVersion="--devel"' \
    'chartName="--repo=http://evil"' 'releaseName="--dry-run"' 'namespace="--kube-apiserver=x"'; do
    field=${c%%=*}
    f="$T/argv-$RANDOM.json"
    base_cmd ".$c" >"$f"
    ev=$(wait_terminal "$(bypass "$f")" 60)
    is "$(outcome <<<"$ev")" "rejected rejected INVALID_FIELD" "worker: $c: rejected INVALID_FIELD"
    like "$(jf .errorMessage <<<"$ev")" "invalid $field (rule" "worker: $c: names $field"
done
is "$(helm_ran | jq -r .argv[] | grep -c -- '--post-renderer \|^--devel$\|^--repo\|^--kube-apiserver\|^--dry-run$\|^--set x$')" 0 \
    "no refused value ever reached a helm argv"

# ---------------------------------------------------------------------------
# 4. SQL injection through the CLI's queries and through stored text.
wait_projected "$id" 120
releases_before=$(psql_q "select count(*) from helmq.releases")
TABLES=$(psql_q "select string_agg(schemaname || '.' || tablename, ' ' order by 1) from pg_tables where schemaname in ('helmq', 'helmq_worker')")
diag "tables: $TABLES"
sqli_query() { # sqli_query ARGS...: a query given SQL where a UUID belongs
    local out
    out=$("$HELMQ_BIN/helmq" releases "$@" 2>&1)
    is "$?" 2 "helmq releases $*: exit 2"
    like "$out" "not a UUID" "helmq releases $1: says the argument is not a UUID"
}
sqli_query get "x' OR 1=1 --"
sqli_query get "$RID' OR '1'='1"
sqli_query history "1; drop table helmq.releases"
sqli_query list --tenant "'; drop table helmq.releases; --"
sqli_query list --tenant "$TENANT' OR '1'='1"
"$HELMQ_BIN/helmq" releases list --tenant "$TENANT" --output table >/dev/null 2>&1
is "$?" 0 "the projection still answers"
is "$(psql_q "select count(*) from helmq.releases")" "$releases_before" "helmq.releases intact"
is "$(psql_q "select string_agg(schemaname || '.' || tablename, ' ' order by 1) from pg_tables where schemaname in ('helmq', 'helmq_worker')")" \
    "$TABLES" "the tables of both schemas are all there"
SQLI="'); DROP TABLE helmq_worker.releases; DROP TABLE helmq.releases; --"
id=$(send install sqli -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.0.0 --description "$SQLI" \
    --performed-by "x' OR '1'='1")
ev=$(wait_terminal "$id" 120)
is "$(outcome <<<"$ev")" "succeeded deployed " "a command whose text is SQL succeeds"
wait_projected "$id" 120
hist=$("$HELMQ_BIN/helmq" releases history "$(jf .releaseId <<<"$ev")" 2>/dev/null)
is "$(jq -r '.[0].description + "|" + .[0].performedBy' <<<"$hist")" "$SQLI|x' OR '1'='1" \
    "the history shows the SQL text verbatim (stored as data)"
is "$(psql_q "select count(*) from helmq_worker.releases where release_name = 'sqli'") $(psql_q "select count(*) from helmq.releases where release_name = 'sqli'")" \
    "1 1" "ledger and projection intact"

# ---------------------------------------------------------------------------
# 5. Values: helm reads them from a memory file (memfd, 0600) the worker
#    passes as descriptor 3: never written to a disk, gone with helm.
sim_knob tenant-a slow '{"install": {"sleep": 3}}'
id_slow=$(send install slow -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.0.0 --set-values "$SECRET_VALUES")
wait_for "the slow install's helm" 60 bash -c "pgrep -f '[h]elm install slow ' >/dev/null"
hp=$(pgrep -f '[h]elm install slow ' | head -1)
is "$(readlink "/proc/$hp/fd/3")" "/memfd:helmq-values (deleted)" \
    "while helm runs: its values are a memory file on its descriptor 3"
is "$(stat -L -c '%a %U' "/proc/$hp/fd/3")" "600 $(id -un)" "that memory file is 0600, the worker's own"
like "$(tr '\0' ' ' <"/proc/$hp/cmdline")" "--values /proc/self/fd/3 " "helm is told --values /proc/self/fd/3"
is "$(find "$HELMQ_TMPDIR" -mindepth 1 | wc -l)" 0 "no values file on disk while helm runs"
wait_terminal "$id_slow" 120 >/dev/null
modes=$(helm_ran | jq -r 'select(.subcommand == "install" or .subcommand == "upgrade") | .values_mode' | sort | uniq -c | awk '{print $2 "x" $1}')
n_iu=$(helm_ran | jq -c 'select(.subcommand == "install" or .subcommand == "upgrade")' | wc -l)
is "$modes" "0600x$n_iu" "every install and upgrade ($n_iu) had its values file 0600"
is "$(find "$HELMQ_TMPDIR" -mindepth 1 | wc -l)" 0 "no values file or directory in HELMQ_TMPDIR afterwards either"

# ---------------------------------------------------------------------------
# 6. Secrets never leave the worker raw: events, projection, ledger, logs.
sim_knob tenant-a app '{"upgrade": {"fail": "readiness probe failed"}}'
id=$(send upgrade app -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.2.0 --atomic \
    --set-values '{"database":{"password":"RAW-pw-upgrade-e3"},"token":"RAW-tok-upgrade"}')
is "$(wait_terminal "$id" 120 | outcome)" "rolled_back deployed HELM_FAILED" "an atomic upgrade with secrets fails and rolls back"
id=$(send uninstall app -t $TENANT -n tenant-a --reason "audit")
wait_terminal "$id" 120 >/dev/null
wait_projected "$id" 120
grep -rqa 'RAW-pw-7f3a' "$HELM_SIM_STATE/releases"
ok $? "control: the secret did reach helm (the simulated helm's state has it)"
ev=$(wait_terminal "$id_slow")
is "$(jf .valuesRedacted <<<"$ev" | jq -c '[.database.password, .apiToken, .Credentials, .list[0].secretKey, .PRIVATE_KEY, .replicaCount, .list[0].name]')" \
    '["[REDACTED]","[REDACTED]","[REDACTED]","[REDACTED]","[REDACTED]",2,"n"]' \
    "events carry the values redacted (nested, in arrays, any case), others kept"
kcat -b "$HELMQ_BROKERS" -C -t helm.release.events -e -q >"$T/events.raw" 2>/dev/null
kcat -b "$HELMQ_BROKERS" -C -t helm.release.commands.dlq -e -q >>"$T/events.raw" 2>/dev/null
is "$(grep -ac 'RAW-' "$T/events.raw")" 0 "no raw secret on the events topic (or the DLQ)"
pg_dump -h "$PGHOST" -p "$PGPORT" -U postgres -d helmq --schema=helmq --schema=helmq_worker >"$T/dump.sql" 2>"$T/dump.err"
ok $? "pg_dump of schemas helmq and helmq_worker"
grep -q 'REDACTED' "$T/dump.sql"
ok $? "control: the dump holds the redacted values"
is "$(grep -c 'RAW-' "$T/dump.sql")" 0 "no raw secret in the projection or the ledger"
is "$(cat "$T"/worker.*.log "$T/projector.log" | grep -c 'RAW-')" 0 "no raw secret in the worker's or the projector's log"

# ---------------------------------------------------------------------------
# 7. Never a shell: helm is the worker's own child, run by execve.
is "$(sim_invocations 'select(.event == "start") | .ppid' | sort -u | tr '\n' ' ')" "$WORKER_PID " \
    "every helm process is a direct child of the worker (no shell in between)"
is "$(sim_invocations 'select(.event == "start") | select(.argv[0] != .subcommand or ([.subcommand] | inside(["install","upgrade","rollback","uninstall","status","history","list","version"]) | not))' | wc -l)" \
    0 "every helm argv starts with a helm subcommand"
ls "$HELM_DIR" "$T" "$HELMQ_ROOT" "$HELM_SIM_STATE" /tmp 2>/dev/null | grep -q '^pwned'
is "$?" 1 "the helm path with ';', '\$(...)' and backticks was run as one file: nothing touched"
"$HELMQ_BIN/helmq" install "a;touch /tmp/pwned" -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.0.0 >/dev/null 2>&1
is "$?" 2 "CLI: releaseName 'a;touch /tmp/pwned' refused (exit 2)"
f="$T/shell.json"
base_cmd '.releaseName = "a;touch /tmp/pwned"' >"$f"
ev=$(wait_terminal "$(bypass "$f")" 60)
is "$(outcome <<<"$ev")" "rejected rejected INVALID_FIELD" "worker: releaseName 'a;touch /tmp/pwned' rejected INVALID_FIELD"
like "$(jf .errorMessage <<<"$ev")" "invalid releaseName" "worker: the message names releaseName"
id=$(send install shelltext -t $TENANT -n tenant-a --chart-name $CHART --chart-version 1.0.0 \
    --description '$(touch /tmp/pwned-desc) `touch /tmp/pwned-desc` ; touch /tmp/pwned-desc')
is "$(wait_terminal "$id" 120 | outcome)" "succeeded deployed " "a description full of shell syntax is just text"
is "$(ls -d /tmp/pwned* 2>/dev/null)" "$PWNED_BEFORE" "no /tmp/pwned file was created"

worker_stop
is "$?" 0 "SIGTERM: the worker exits 0"
done_testing
