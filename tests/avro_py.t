#!/usr/bin/env bash
# tests/avro_py.t: tests/lib/avro_py.py, the python3-avro based reference codec
# used by the interoperability tests: single-object framing, fingerprints
# (Avro's published vectors), natural JSON with flattened operation union,
# schema resolution from the v1 command schema, error exits.
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh

PY=/usr/bin/python3
[ -x "$PY" ] && "$PY" -c 'import avro.io' 2>/dev/null || skip_all "python3-avro not installed for $PY"
A=tests/lib/avro_py.py
CMD=schemas/helm-release-command.avsc
CMD1=schemas/versions/helm-release-command.v1.avsc
EVT=schemas/helm-release-event.avsc
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

norm() { "$PY" -c 'import json,sys; print(json.dumps(json.loads(sys.stdin.read()), sort_keys=True, separators=(",",":"), ensure_ascii=False))'; }
hexof() { od -An -v -tx1 | tr -d ' \n'; }
field() { "$PY" -c 'import json,sys; v=json.load(sys.stdin)[sys.argv[1]]; print(json.dumps(v))' "$1"; }

# --- fingerprints -------------------------------------------------------------
for s in "$CMD" "$EVT" "$CMD1"; do
    "$PY" "$A" fingerprint "$s" >"$T/fp" 2>"$T/err"; ok $? "fingerprint $s"
    is "$(wc -l <"$T/fp")" 3 "  three lines"
    is "$(cat "$T/err")" "" "  python3-avro's canonical form agrees (no warning)"
    canon=$(sed -n 1p "$T/fp"); dec=$(sed -n 2p "$T/fp"); lehex=$(sed -n 3p "$T/fp")
    is "$("$PY" -c 'import sys; print(int(sys.argv[1]).to_bytes(8,"little").hex())' "$dec")" "$lehex" "  line 3 is line 2 as little-endian bytes"
    unlike "$canon" "logicalType" "  canonical form drops logicalType"
    unlike "$canon" '"doc"' "  canonical form drops doc"
    diag "$s: $dec $lehex"
done
canon=$("$PY" "$A" fingerprint "$CMD" | sed -n 1p)
like "$canon" '{"name":"commandId","type":"string"}' "uuid string is plain \"string\" in the canonical form"
like "$canon" '{"name":"io.helmq.command.Install","type":"record"' "nested record has its full name"

n=0; bad=0
while IFS=$'\t' read -r input expcanon expfp; do
    n=$((n + 1))
    out=$(printf '%s' "$input" | "$PY" "$A" fingerprint - 2>&1)
    got="$(echo "$out" | sed -n 1p) $(echo "$out" | sed -n 2p)"
    if [ "$got" != "$expcanon $expfp" ]; then
        bad=$((bad + 1)); diag "vector $n: $input"; diag "  expected: $expcanon $expfp"; diag "       got: $got"
    fi
done < tests/fixtures/avro-schema-tests.tsv
is "$n" 34 "read all 34 Avro fingerprint vectors"
is "$bad" 0 "canonical form and fingerprint match every Avro test vector"

# --- encode / decode round trips ------------------------------------------------
cat >"$T/install.json" <<'EOF'
{"operation":"install","commandId":"8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11","tenantId":"3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b","namespace":"tenant-acme","releaseName":"acme-ai-service","performedBy":"alice","requestedAt":1764000000000,"description":null,"releaseId":null,"chartName":"matih-ai-service","chartVersion":"1.0.0","appVersion":"2.0.0","valuesOverride":"{\"replicaCount\":2}","timeout":600,"atomic":true,"waitForJobs":true}
EOF
"$PY" "$A" encode "$CMD" <"$T/install.json" >"$T/install.avro"; ok $? "encode the example install command"
lehex=$("$PY" "$A" fingerprint "$CMD" | sed -n 3p)
is "$(head -c 10 "$T/install.avro" | hexof)" "c301$lehex" "header is C3 01 + little-endian fingerprint"
# body starts with commandId: zig-zag length 36 = 0x48
is "$(head -c 11 "$T/install.avro" | tail -c 1 | hexof)" "48" "datum follows the header (string length 36)"
out=$("$PY" "$A" decode "$CMD" <"$T/install.avro"); ok $? "decode it"
is "$out" "$(norm <"$T/install.json")" "round trip gives the same natural JSON (sorted, compact)"

rt() { # rt SCHEMA JSON NAME [EXPECTED]
    local got
    got=$(printf '%s' "$2" | "$PY" "$A" encode "$1" | "$PY" "$A" decode "$1" 2>&1)
    is "$got" "$(printf '%s' "${4:-$2}" | norm)" "$3"
}
base='"commandId":"8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b12","tenantId":"3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b","namespace":"tenant-acme","releaseName":"acme-ai-service","performedBy":"bob","requestedAt":1764000001000,"description":"nightly","releaseId":"0b6c1f7e-1d2e-4c3b-8a9f-5e4d3c2b1a00"'
rt "$CMD" "{\"operation\":\"upgrade\",$base,\"chartName\":\"c\",\"chartVersion\":\"1.1.0\",\"appVersion\":null,\"valuesOverride\":\"{}\",\"timeout\":300,\"atomic\":false,\"waitForJobs\":false}" \
    "upgrade (same fields as install) keeps its branch"
rt "$CMD" "{\"operation\":\"rollback\",$base,\"revision\":3,\"timeout\":120,\"waitForJobs\":true}" "rollback with a revision"
rt "$CMD" "{\"operation\":\"rollback\",$base,\"revision\":null,\"timeout\":300,\"waitForJobs\":false}" "rollback without a revision"
rt "$CMD" "{\"operation\":\"uninstall\",$base,\"reason\":\"decommissioned — ünïcode\",\"timeout\":300}" "uninstall with a non-ASCII reason"
rt "$CMD" "{\"operation\":\"rollback\",$base}" "missing fields take their defaults when encoding" \
    "{\"operation\":\"rollback\",$base,\"revision\":null,\"timeout\":300,\"waitForJobs\":false}"

cat >"$T/event.json" <<'EOF'
{"eventId":"1c7a8e3e-0000-5000-8000-000000000001","commandId":"8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11","eventType":"rolled_back","terminal":true,"releaseId":"0b6c1f7e-1d2e-4c3b-8a9f-5e4d3c2b1a00","tenantId":"3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b","namespace":"tenant-acme","releaseName":"acme-ai-service","operation":"upgrade","status":"deployed","revision":3,"chartName":"matih-ai-service","chartVersion":"1.0.0","appVersion":"2.0.0","description":"Rollback to 1","performedBy":"alice","occurredAt":1764000005000,"requestedAt":1764000000000,"reason":null,"valuesDigest":"ab","valuesRedacted":"{\"password\":\"[REDACTED]\"}","history":[{"revision":2,"status":"failed","chartName":"matih-ai-service","chartVersion":"1.1.0","appVersion":null,"operation":"upgrade","description":"Upgrade failed","createdAt":1764000003000},{"revision":3,"status":"deployed","chartName":"matih-ai-service","chartVersion":"1.0.0","appVersion":"2.0.0","operation":"atomic-rollback","description":"Rollback to 1","createdAt":1764000005000}],"errorCode":"HELM_FAILED","errorMessage":"Error: timed out"}
EOF
rt "$EVT" "$(cat "$T/event.json")" "event with enums and a history array round-trips"

# --- schema evolution: v1 writer, current reader ----------------------------------
F=tests/fixtures/command-v1-install.avro
"$PY" "$A" encode "$CMD1" <tests/fixtures/command-v1-install.json >"$T/v1.avro"
cmp -s "$T/v1.avro" "$F"; ok $? "committed $F is the v1 encoding of command-v1-install.json"
v1hex=$("$PY" "$A" fingerprint "$CMD1" | sed -n 3p)
is "$(head -c 10 "$F" | hexof)" "c301$v1hex" "$F carries the v1 fingerprint"
out=$("$PY" "$A" decode "$CMD" "$CMD1" <"$F"); ok $? "v1 record decodes under the current schema"
is "$(echo "$out" | field description)" null "  description defaults to null"
is "$(echo "$out" | field releaseId)" null "  releaseId defaults to null"
is "$(echo "$out" | field waitForJobs)" false "  waitForJobs defaults to false"
exp=$("$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); d.update(description=None, releaseId=None, waitForJobs=False); print(json.dumps(d, sort_keys=True, separators=(",",":")))' tests/fixtures/command-v1-install.json)
is "$out" "$exp" "  all v1 fields are kept"
out=$(printf '%s' "{\"operation\":\"rollback\",${base%%,\"description\"*},\"revision\":2,\"timeout\":60}" | "$PY" "$A" encode "$CMD1" | "$PY" "$A" decode "$CMD" "$CMD1")
is "$(echo "$out" | field operation) $(echo "$out" | field revision) $(echo "$out" | field waitForJobs)" '"rollback" 2 false' "v1 rollback resolves to the current Rollback branch"

# --- errors ----------------------------------------------------------------------
"$PY" "$A" decode "$CMD" <"$F" >/dev/null 2>"$T/err"; is $? 3 "unknown writer fingerprint exits 3"
like "$(cat "$T/err")" "unknown schema fingerprint" "  with a message"
printf 'not avro at all' | "$PY" "$A" decode "$CMD" >/dev/null 2>"$T/err"; is $? 2 "bytes without C3 01 exit 2"
like "$(cat "$T/err")" "not Avro single-object encoding" "  with a message"
head -c 40 "$T/install.avro" | "$PY" "$A" decode "$CMD" >/dev/null 2>&1; is $? 2 "truncated datum exits 2"
{ cat "$T/install.avro"; printf 'x'; } | "$PY" "$A" decode "$CMD" >/dev/null 2>&1; is $? 2 "trailing bytes exit 2"
printf '%s' "{\"operation\":\"install\",$base,\"chartName\":\"c\",\"chartVersion\":\"1\",\"bogus\":1}" | "$PY" "$A" encode "$CMD" >/dev/null 2>"$T/err"
is $? 2 "unknown field exits 2"; like "$(cat "$T/err")" "bogus" "  naming the field"
printf '%s' "{\"operation\":\"reinstall\",$base}" | "$PY" "$A" encode "$CMD" >/dev/null 2>&1; is $? 2 "unknown operation exits 2"
printf '%s' "{\"operation\":\"install\",$base,\"chartName\":\"c\",\"chartVersion\":\"1\",\"timeout\":\"600\"}" | "$PY" "$A" encode "$CMD" >/dev/null 2>&1; is $? 2 "wrong type exits 2"
printf '%s' "{\"operation\":\"install\",$base,\"chartName\":\"c\",\"chartVersion\":\"1\",\"timeout\":4294967296}" | "$PY" "$A" encode "$CMD" >/dev/null 2>&1; is $? 2 "int out of range exits 2"
"$PY" "$A" frobnicate "$CMD" </dev/null >/dev/null 2>&1; is $? 1 "unknown subcommand exits 1"

done_testing
