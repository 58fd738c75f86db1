#!/usr/bin/env bash
# The producer CLI against the embedded broker: the seed's install reaches the
# commands topic keyed tenantId/namespace/releaseName in single-object Avro;
# every kind of bad input is refused with its own error and sends nothing;
# a failed delivery exits non-zero.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"

broker_start --partitions 3
like "$(cat "$T/broker.out")" "127.0.0.1:" "helmq-broker prints its bootstrap address"

SEED=tests/fixtures/seed-install.json
id=$("$HELMQ_BIN/helmq" install -f "$SEED" 2>"$T/err")
is "$?" 0 "helmq install -f seed.json exits 0"
[[ $id =~ ^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$ ]]
ok $? "it prints a generated v4 commandId ($id)"

is "$(kcat_count helm.release.commands)" 1 "exactly one record on the commands topic"
key=$(kcat -b "$HELMQ_BROKERS" -C -t helm.release.commands -e -q -f '%k')
is "$key" "3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b/tenant-acme/acme-ai-service" "keyed tenantId/namespace/releaseName"
kcat -b "$HELMQ_BROKERS" -C -t helm.release.commands -e -q -f '%s' >"$T/value.avro"
head=$(head -c 10 "$T/value.avro" | od -An -tx1 | tr -d ' \n')
fp=$($PY tests/lib/avro_py.py fingerprint schemas/helm-release-command.avsc | sed -n 3p)
is "$head" "c301$fp" "value starts C3 01 + the command schema's fingerprint (computed independently by avro_py)"

decoded=$("$HELMQ_BIN/helmq" decode <"$T/value.avro")
want=$($PY - "$id" <<'PY'
import json, sys
seed = json.load(open("tests/fixtures/seed-install.json"))
seed["valuesOverride"] = json.dumps(seed["valuesOverride"], sort_keys=True, separators=(",", ":"))
seed.update(operation="install", commandId=sys.argv[1], description=None, releaseId=None)
print(json.dumps(seed, sort_keys=True))
PY
)
got=$(echo "$decoded" | $PY -c 'import json,sys; d=json.load(sys.stdin); d.pop("requestedAt"); d.pop("performedBy"); print(json.dumps(d, sort_keys=True))')
is "$got" "$want" "the record decodes to the seed's values"
like "$decoded" "\"performedBy\":\"$(id -un)\"" "performedBy defaults to the OS user"

by=$("$HELMQ_BIN/helmq" install -f "$SEED" --performed-by ci-bot --dry-run)
like "$by" '"performedBy":"ci-bot"' "--performed-by sets performedBy"

# Flags alone, and the seed JSON on stdin.
id2=$("$HELMQ_BIN/helmq" upgrade acme-ai-service -t 3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b -n tenant-acme \
    --chart-name matih-ai-service --chart-version 1.1.0 --set-values '{"replicaCount":3}' --atomic)
is "$?" 0 "helmq upgrade from flags"
id3=$("$HELMQ_BIN/helmq" uninstall -f - --reason "Tenant migration" <<'EOF2'
{"tenantId":"3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b","namespace":"tenant-acme","releaseName":"acme-ai-service"}
EOF2
)
is "$?" 0 "helmq uninstall -f - (stdin) with --reason"
is "$(kcat_count helm.release.commands)" 3 "three records now"
last=$(kcat -b "$HELMQ_BROKERS" -C -t helm.release.commands -e -q -f '%s\n--\n' | grep -a -c 'Tenant migration')
is "$last" 1 "the uninstall carries its reason"

# Bad input: each refused with its own message, exit 2, nothing sent.
bad() { # bad NAME EXPECTED_TEXT ARGS...
    local name=$1 want=$2
    shift 2
    local out rc
    out=$("$HELMQ_BIN/helmq" "$@" 2>&1 >/dev/null)
    rc=$?
    is "$rc" 2 "$name: exit 2"
    like "$out" "$want" "$name: says why"
}
printf '{"tenantId": ' >"$T/broken.json"
bad "malformed JSON" "invalid JSON at line" install -f "$T/broken.json"
bad "missing tenantId" "invalid tenantId (rule required)" install acme -n tenant-acme --chart-name c --chart-version 1.0.0
bad "tenantId not a UUID" "invalid tenantId (rule uuid)" install -f <(sed 's/3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b/uuid/' $SEED)
bad "bad release name" "invalid releaseName (rule helm-release-name)" install -f $SEED --release-name 'Bad_Name'
bad "release name too long" "invalid releaseName (rule helm-release-name)" install -f $SEED --release-name "$(printf 'a%.0s' $(seq 1 54))"
bad "namespace not DNS-1123" "invalid namespace (rule dns-1123-label)" install -f $SEED -n 'tenant_acme'
bad "values not an object" "valuesOverride" install -f $SEED --set-values '[1,2,3]'
big=$($PY -c 'import json; print(json.dumps({"blob": "x" * 600000}))')
echo "$big" >"$T/big.json"
bad "values too large" "invalid valuesOverride (rule max-size)" install -f $SEED --values "$T/big.json"
bad "timeout zero" "invalid timeout (rule range)" install -f $SEED --timeout 0
bad "timeout too large" "invalid timeout (rule range)" install -f $SEED --timeout 100000
bad "unknown field" 'invalid colour (rule unknown-field)' install -f <(sed 's/"atomic"/"colour": 1, "atomic"/' $SEED)
# A key that does not read as a name is quoted, so that any key is told apart
# (tests/fuzz/FINDINGS.md F6: "-" was taken for "the document as a whole").
bad 'a field named "-"' 'invalid "-" (rule unknown-field): unknown field "-"' install -f <(sed 's/"atomic"/"-": 1, "atomic"/' $SEED)
bad 'a field named ""' 'invalid "" (rule unknown-field)' install -f <(sed 's/"atomic"/"": 1, "atomic"/' $SEED)
bad 'a field named "a b"' 'invalid "a b" (rule unknown-field)' install -f <(sed 's/"atomic"/"a b": 1, "atomic"/' $SEED)
bad "unknown flag" "unknown option --colour" install -f $SEED --colour red
bad "operation mismatch" 'operation is not "upgrade"' upgrade -f <(sed 's/{/{"operation":"install",/' $SEED)
# Issue 21: text that is not UTF-8 is refused, never sent as null; SemVer 2.0.0
# strictly; JSON syntax errors with jansson's line and column; size messages
# naming the limit that is checked.
bad "description not UTF-8" "invalid description (rule utf-8)" install -f $SEED --description "$(printf 'caf\xe9')"
bad "release name argument not UTF-8" "invalid releaseName (rule utf-8)" install -f $SEED "$(printf 'a\xff')"
bad "performedBy not UTF-8" "invalid performedBy (rule utf-8)" install -f $SEED --performed-by "$(printf '\xc3')"
bad "reason not UTF-8" "invalid reason (rule utf-8)" uninstall acme -t 3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b -n tenant-acme --reason "$(printf 'x\xfe')"
for v in 1.0 v1.0.0 01.0.0 1.0.0-01 1.0.0+ '>=1.0.0' 1.0.0.0; do
    bad "chartVersion $v" "invalid chartVersion (rule semver)" install -f $SEED --chart-version "$v"
done
like "$("$HELMQ_BIN/helmq" install -f $SEED --chart-version v1.0.0 2>&1)" "SemVer 2.0.0 version such as 1.2.3" \
    "the semver message says SemVer 2.0.0 with an example"
for v in 1.0.0 0.0.0 1.2.3-rc.1 1.0.0-alpha.0a+build.007 10.20.30-0; do
    out=$("$HELMQ_BIN/helmq" install -f $SEED --chart-version "$v" --dry-run 2>&1)
    is "$?" 0 "chartVersion $v is SemVer 2.0.0: accepted"
done
bad "--set-values syntax error" "invalid valuesOverride (rule json): valuesOverride is not valid JSON: line 1, column" \
    install -f $SEED --set-values '{"a": '
bad "--set-values an array" "invalid valuesOverride (rule json-object)" install -f $SEED --set-values '[1,2,3]'
printf '{"a": 1,\n "b": }\n' >"$T/values-bad.json"
bad "--values syntax error" "invalid valuesOverride (rule json): $T/values-bad.json: invalid JSON at line 2, column" \
    install -f $SEED --values "$T/values-bad.json"
bad "values too large: the limit named" "more than the limit of 524288 bytes (512 KiB)" install -f $SEED --values "$T/big.json"
$PY -c 'import json; print(json.dumps({"blob": "x" * 5000000}))' >"$T/huge.json"
bad "values file over the read limit: the values limit named" "valuesOverride may be at most 524288 bytes (512 KiB)" \
    install -f $SEED --values "$T/huge.json"
bad "document over its limit: that limit named" "larger than the limit of 4194304 bytes" install -f "$T/huge.json"
is "$(kcat_count helm.release.commands)" 3 "none of the bad inputs reached the topic"

# A failed delivery is an error (closed port, short timeout).
out=$(HELMQ_BROKERS=127.0.0.1:1 "$HELMQ_BIN/helmq" install -f $SEED --delivery-timeout-ms 1500 2>&1)
is "$?" 1 "undeliverable command: exit 1"
like "$out" "NOT delivered" "and says so"

# --help lists every option with its environment variable and default.
for p in "helmq install" "helmq encode" "helmq-broker"; do
    h=$("$HELMQ_BIN"/$p --help)
    is "$?" 0 "$p --help exits 0"
done
h=$("$HELMQ_BIN/helmq" install --help)
like "$h" "env HELMQ_BROKERS; default: localhost:9092" "install --help shows env and default of --brokers"
like "$h" "--wait-for-jobs" "install --help lists --wait-for-jobs"
h=$("$HELMQ_BIN/helmq" releases --help)
like "$h" "helmq releases summary [--tenant TENANT]" "releases --help: summary takes --tenant"
like "$h" "together (groups)" "releases --help: the summary's groups by status and chart"
# The summary's --tenant is checked before any connection (none here: exit 2, not 1).
bad "summary --tenant not a UUID" '"nope" is not a UUID' releases summary --tenant nope --database-url "host=/nonexistent"
bad "summary with an argument" "takes no argument" releases summary extra --database-url "host=/nonexistent"
h=$("$HELMQ_BIN/helmq-broker" --help)
like "$h" "env HELMQ_BROKER_PARTITIONS; default: 6" "broker --help shows env and default"

broker_stop
is "$?" 0 "helmq-broker stops cleanly on SIGTERM"
done_testing
