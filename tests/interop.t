#!/usr/bin/env bash
# Interoperability with an independent Avro implementation (python3-avro):
# records helmq encodes decode there to the same values, and records Python
# encodes (with the fingerprint header) decode in helmq; an old writer schema
# resolves to the current one with defaults filled.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"

CMD=schemas/helm-release-command.avsc
V1=schemas/versions/helm-release-command.v1.avsc
EVT=schemas/helm-release-event.avsc
sorted() { $PY -c 'import json,sys; print(json.dumps(json.load(sys.stdin), sort_keys=True, separators=(",", ":")))'; }

# helmq -> python
"$HELMQ_BIN/helmq" install -f tests/fixtures/seed-install.json --dry-run >"$T/seed.json"
is "$?" 0 "the seed's install JSON is accepted as written"
"$HELMQ_BIN/helmq" encode <"$T/seed.json" >"$T/seed.avro"
is "$?" 0 "helmq encode"
py=$($PY tests/lib/avro_py.py decode $CMD $V1 <"$T/seed.avro")
is "$?" 0 "python3-avro decodes helmq's record"
is "$py" "$(sorted <"$T/seed.json")" "python3-avro sees the seed's values"
like "$py" "\"chartName\":\"matih-ai-service\"" "chartName survives"
like "$py" "\"timeout\":600" "timeout survives"

# python -> helmq
$PY tests/lib/avro_py.py encode $CMD <"$T/seed.json" >"$T/py.avro"
is "$?" 0 "python3-avro encodes the same command"
cmp -s "$T/py.avro" "$T/seed.avro"
ok $? "python3-avro's bytes are identical to helmq's"
got=$("$HELMQ_BIN/helmq" decode <"$T/py.avro" | sorted)
is "$got" "$(sorted <"$T/seed.json")" "helmq decodes python's record to the same values"

for op in upgrade rollback uninstall; do
    case $op in
    upgrade) extra='--chart-name matih-ai-service --chart-version 1.1.0 --app-version 2.1.0 --set-values {"a":{"b":[1,2]}} --timeout 42' ;;
    rollback) extra='--revision 1' ;;
    uninstall) extra='--reason Tenant-migration' ;;
    esac
    # shellcheck disable=SC2086
    "$HELMQ_BIN/helmq" $op acme-ai-service -t 3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b -n tenant-acme $extra --dry-run >"$T/$op.json"
    a=$($PY tests/lib/avro_py.py encode $CMD <"$T/$op.json" | "$HELMQ_BIN/helmq" decode | sorted)
    b=$("$HELMQ_BIN/helmq" encode <"$T/$op.json" | $PY tests/lib/avro_py.py decode $CMD)
    is "$a" "$(sorted <"$T/$op.json")" "$op: python -> helmq keeps every value"
    is "$b" "$(sorted <"$T/$op.json")" "$op: helmq -> python keeps every value"
done

# Events both ways.
cat >"$T/event.json" <<'EOF2'
{"eventId":"0b8f2f7e-6a2d-5c3b-9e1f-2a3b4c5d6e7f","commandId":"8a4c7a3e-6b47-4c5e-9d2f-6f3f0f1c2b11","eventType":"succeeded","terminal":true,"releaseId":"11111111-2222-4333-8444-555555555555","tenantId":"3f1d2c4b-5a69-4e7f-8a9b-0c1d2e3f4a5b","namespace":"tenant-acme","releaseName":"acme-ai-service","operation":"install","status":"deployed","revision":1,"chartName":"matih-ai-service","chartVersion":"1.0.0","appVersion":"2.0.0","description":"Install complete","performedBy":"alice","occurredAt":1764000000123,"requestedAt":1764000000000,"reason":null,"valuesDigest":"ab","valuesRedacted":"{}","history":[{"revision":1,"status":"deployed","chartName":"matih-ai-service","chartVersion":"1.0.0","appVersion":"2.0.0","operation":"install","description":"Install complete","createdAt":1764000000123}],"errorCode":null,"errorMessage":null}
EOF2
a=$("$HELMQ_BIN/helmq" encode --type event <"$T/event.json" | $PY tests/lib/avro_py.py decode $EVT)
is "$a" "$(sorted <"$T/event.json")" "an event encoded by helmq decodes in python3-avro"
b=$($PY tests/lib/avro_py.py encode $EVT <"$T/event.json" | "$HELMQ_BIN/helmq" decode | sorted)
is "$b" "$(sorted <"$T/event.json")" "an event encoded by python3-avro decodes in helmq"

# Schema evolution: the committed v1 record, and a fresh one from python.
v1=$("$HELMQ_BIN/helmq" decode <tests/fixtures/command-v1-install.avro)
is "$?" 0 "a v1 command decodes under the current schema"
like "$v1" '"waitForJobs":false' "waitForJobs filled with its default"
like "$v1" '"releaseId":null' "releaseId filled with its default"
like "$v1" '"timeout":450' "v1 values kept"
$PY tests/lib/avro_py.py encode $V1 <tests/fixtures/command-v1-install.json >"$T/v1.avro"
cmp -s "$T/v1.avro" tests/fixtures/command-v1-install.avro
ok $? "the fixture is what python3-avro writes with the v1 schema"

# Unknown fingerprint and garbage.
printf '\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08\x00' | "$HELMQ_BIN/helmq" decode >/dev/null 2>"$T/err"
is "$?" 2 "unknown fingerprint: exit 2"
like "$(cat "$T/err")" "unknown-fingerprint" "and named"
head -c 100 /dev/urandom | "$HELMQ_BIN/helmq" decode >/dev/null 2>"$T/err"
is "$?" 2 "random bytes: exit 2"
done_testing
