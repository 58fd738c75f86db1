#!/usr/bin/env bash
# Poison input against a running worker: random bytes, truncated records,
# unknown fingerprints, huge and deeply nested values, Avro length bombs and
# hostile names. Every undecodable record, and every command without a UUID
# commandId (it cannot be identified), reaches the DLQ with its own
# helmq.error header; every decodable invalid command gets a `rejected`
# INVALID_FIELD event naming the field; helm never runs for any of them; the
# worker's memory stays bounded over ~2,000 poison records and it still serves.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start
worker_start --concurrency 4
NS=poison-ns
TOPIC=helm.release.commands
DLQ=helm.release.commands.dlq

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$WORKER_PID/status"; }
alive() { [ -e "/proc/$1" ] && [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]; } # not a zombie
vsz_kib() { awk '/^VmSize:/ {print $2}' "/proc/$WORKER_PID/status"; }

# A valid record from the CLI: its header (C3 01 + fingerprint) is the base of
# everything the generator writes.
"$HELMQ_BIN/helmq" install base -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 \
    --performed-by poison-test --description "base record" --dry-run >"$T/valid.json"
"$HELMQ_BIN/helmq" encode <"$T/valid.json" >"$T/valid.avro"
ok $? "a valid record from helmq install --dry-run | helmq encode"
HEADER=$(head -c 10 "$T/valid.avro" | od -An -tx1 | tr -d ' \n')
diag "command schema header: $HEADER"

# --- the generator ----------------------------------------------------------
# Writes one file per record into DIR and a manifest line per record:
#   name TAB key TAB file TAB expect TAB detail TAB commandId TAB release
# expect: dlq (detail = the helmq.error header), reject (detail = the field),
# ok (a valid command: it must succeed), bulk-dlq / bulk-reject (counted only).
cat >"$T/gen.py" <<'PY'
import json, os, random, struct, sys, uuid

header = bytes.fromhex(sys.argv[1])
valid_path, outdir, mode = sys.argv[2], sys.argv[3], sys.argv[4]
tenant, ns = sys.argv[5], sys.argv[6]
os.makedirs(outdir, exist_ok=True)
manifest = open(os.path.join(outdir, "manifest.tsv"), "w")
rnd = random.Random(int(sys.argv[7]) if len(sys.argv) > 7 else 42)

def zz(n):  # Avro long: zig-zag varint
    n = (n << 1) ^ (n >> 63)
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)

def s(v):  # Avro string (bytes given as is: NUL or invalid UTF-8 allowed)
    b = v if isinstance(v, bytes) else v.encode("utf-8")
    return zz(len(b)) + b

def opt(v):
    return zz(0) if v is None else zz(1) + s(v)

def command(d):  # the install branch of schemas/helm-release-command.avsc
    return (s(d["commandId"]) + s(d["tenantId"]) + s(d["namespace"]) + s(d["releaseName"]) +
            s(d["performedBy"]) + zz(d["requestedAt"]) + opt(d.get("description")) +
            opt(d.get("releaseId")) + zz(0) + s(d["chartName"]) + s(d["chartVersion"]) +
            opt(d.get("appVersion")) + s(d.get("valuesOverride", "{}")) + zz(d.get("timeout", 300)) +
            bytes([1 if d.get("atomic") else 0]) + bytes([1 if d.get("waitForJobs") else 0]))

base = json.load(open(valid_path))
base_bytes = open(valid_path.replace(".json", ".avro"), "rb").read()
assert header + command(base) == base_bytes, "generator disagrees with helmq encode"
n = 0

def emit(name, payload, expect, detail, cid="-", release="-", key=None):
    global n
    n += 1
    f = os.path.join(outdir, "r%05d.bin" % n)
    open(f, "wb").write(payload)
    if expect == "ok" and key is None:  # keyed as its release, or it is refused KEY_MISMATCH
        key = "%s/%s/%s" % (tenant, ns, release)
    key = key or "poison/%s" % name
    if expect != "ok":
        release = "-"  # hostile names may hold tabs or newlines: keep the manifest parseable
    manifest.write("\t".join([name, key, f, expect, detail, cid, release]) + "\n")

def cmd(**over):
    d = dict(base)
    d["commandId"] = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
    d["namespace"] = ns
    d["releaseName"] = "p%d" % rnd.getrandbits(32)
    d.update(over)
    return d

def nested(levels):
    return "{" + '"a":{' * (levels - 1) + "}" * levels

if mode == "named":
    # 1. Random bytes, and bytes that look almost right.
    for i, ln in enumerate([1, 9, 64, 300, 4096]):
        emit("random-%d" % ln, bytes(rnd.getrandbits(8) for _ in range(ln)).replace(b"\xc3\x01", b"xx"),
             "dlq", "bad-header")
    # An empty value and a NULL one (a tombstone): produced specially (kcat skips
    # empty files), last, by themselves (see phase 4).
    emit("empty", b"", "dlq-last", "bad-header")
    emit("null", b"", "dlq-last", "bad-header")
    emit("magic-only", b"\xc3\x01", "dlq", "bad-header")
    emit("wrong-magic", b"\xc3\x00" + base_bytes[2:], "dlq", "bad-header")
    emit("header-only", header, "dlq", "bad-datum")
    # 2. The valid record cut at several lengths, and with trailing bytes.
    for cut in [1, 2, 5, 9, 11, 12, 30, 47, 48, len(base_bytes) // 2, len(base_bytes) - 3, len(base_bytes) - 1]:
        emit("truncated-%d" % cut, base_bytes[:cut], "dlq", "bad-header" if cut < 10 else "bad-datum")
    emit("trailing-bytes", header + command(cmd()) + b"\x00\x00", "dlq", "bad-datum")
    # 3. Unknown fingerprints (a valid datum behind them).
    for i in range(3):
        fp = bytes(rnd.getrandbits(8) for _ in range(8))
        emit("unknown-fp-%d" % i, b"\xc3\x01" + fp + command(cmd()), "dlq", "unknown-fingerprint")
    emit("fp-bitflip", header[:9] + bytes([header[9] ^ 1]) + command(cmd()), "dlq", "unknown-fingerprint")
    # 4. Avro length bombs: a string claiming a giant length, negative lengths,
    #    a union index out of range.
    for name, length in [("2GiB", 1 << 31), ("1TiB", 1 << 40), ("max", (1 << 63) - 1), ("negative", -5)]:
        emit("string-length-" + name, header + zz(length) + b"abc", "dlq", "bad-datum")
    d = cmd()
    good = command(d)
    off = len(s(d["commandId"]))  # the tenantId claims 1 GiB
    emit("tenant-length-1GiB", header + good[:off] + zz(1 << 30) + good[off + 37:], "dlq", "bad-datum")
    d = cmd()
    raw = (s(d["commandId"]) + s(d["tenantId"]) + s(d["namespace"]) + s(d["releaseName"]) + s(d["performedBy"]) +
           zz(d["requestedAt"]) + opt(None) + opt(None))
    emit("union-index-7", header + raw + zz(7) + b"\x00" * 20, "dlq", "bad-datum")
    emit("union-index-negative", header + raw + zz(-1) + b"\x00" * 20, "dlq", "bad-datum")
    emit("values-length-bomb", header + raw + zz(0) + s("c") + s("1.0.0") + opt(None) + zz(1 << 35) + b"{}",
         "dlq", "bad-datum")
    # 5. Hostile names in identifier fields: all rejected by validation.
    hostile = {"dash-set": "--set", "dotdot": "../etc", "subshell": "$(reboot)", "semicolon": ";rm -rf /",
               "backticks": "`reboot`", "cafe": "caf\u00e9", "rlo": "abc\u202etxt.exe", "space": "a b",
               "uppercase": "ABC", "long": "a" * 100000, "newline": "a\nb", "slash": "a/b", "devel": "--devel",
               "forged-log": "x\n2026-01-01T00:00:00.000Z helmq-worker[1] info: commandId=forged: done: succeeded",
               "post-renderer": "1.0.0 --post-renderer x", "leading-dash": "-a"}
    for field in ["releaseName", "namespace", "chartName", "chartVersion"]:
        for hn, hv in hostile.items():
            d = cmd(**{field: hv})
            emit("%s-%s" % (field, hn), header + command(d), "reject", field, d["commandId"], d["releaseName"])
    for hn in ["subshell", "dotdot", "cafe"]:
        d = cmd(tenantId=hostile[hn])
        emit("tenantId-%s" % hn, header + command(d), "reject", "tenantId", d["commandId"], d["releaseName"])
    d = cmd(tenantId="t" * 100000)
    emit("tenantId-long", header + command(d), "reject", "tenantId", d["commandId"], d["releaseName"])
    # A commandId that is not a UUID cannot be identified (an event's commandId
    # is a UUID): the DLQ, unchanged, whatever else the command holds.
    for hn in ["subshell", "dotdot", "cafe", "newline", "forged-log"]:
        emit("commandId-%s" % hn, header + command(cmd(commandId=hostile[hn])), "dlq", "invalid-command-id")
    emit("commandId-empty", header + command(cmd(commandId="")), "dlq", "invalid-command-id")
    emit("commandId-upper-not-uuid", header + command(cmd(commandId="X" * 36)), "dlq", "invalid-command-id")
    emit("commandId-uuid-and-more", header + command(cmd(commandId=str(uuid.uuid4()) + "x")), "dlq",
         "invalid-command-id")
    emit("commandId-long", header + command(cmd(commandId="c" * 100000)), "dlq", "invalid-command-id")
    # ...one whose cut (at the worker's 95-byte id buffer, once) fell inside a
    # UTF-8 sequence (94 x "d" + an "é"), one with half a UTF-8 sequence, one
    # not UTF-8 at all: never lost.
    emit("commandId-utf8-cut", header + command(cmd(commandId="d" * 94 + "\u00e9")), "dlq", "invalid-command-id")
    emit("commandId-half-utf8", header + command(cmd(commandId=b"d" * 35 + b"\xc3")), "dlq", "bad-datum")
    emit("commandId-bad-utf8", header + command(cmd(commandId=b"caf\xe9\xff")), "dlq", "bad-datum")
    emit("commandId-not-uuid-and-invalid", header + command(cmd(commandId="$(reboot)", releaseName="Bad_Name")),
         "dlq", "invalid-command-id")
    # Free-text fields: control characters and over-long text are refused...
    for field in ["description", "performedBy", "appVersion"]:
        for hn, hv in [("newline", "a\nb"), ("escape", "\x1b[2J"), ("tab", "a\tb"), ("del", "a\x7fb"),
                       ("long", "x" * 1025), ("huge", "x" * 200000)]:
            d = cmd(**{field: hv})
            emit("%s-%s" % (field, hn), header + command(d), "reject", field, d["commandId"], d["releaseName"])
    d = cmd(appVersion="--set")
    emit("appVersion-dash", header + command(d), "reject", "appVersion", d["commandId"], d["releaseName"])
    # ...NUL bytes and invalid UTF-8 do not even decode (the DLQ), in any field.
    for field in ["releaseName", "namespace", "chartName", "chartVersion", "description", "performedBy"]:
        d = cmd()
        d[field] = b"ok\x00;reboot"
        emit("%s-nul" % field, header + command(d), "dlq", "bad-datum")
        d = cmd()
        d[field] = b"caf\xe9\xff"
        emit("%s-bad-utf8" % field, header + command(d), "dlq", "bad-datum")
    # Other fields out of range.
    for name, over, field in [("timeout-0", {"timeout": 0}, "timeout"), ("timeout-negative", {"timeout": -1}, "timeout"),
                              ("timeout-huge", {"timeout": 86401}, "timeout"),
                              ("requestedAt-negative", {"requestedAt": -1}, "requestedAt"),
                              ("releaseId-bad", {"releaseId": "$(reboot)"}, "releaseId")]:
        d = cmd(**over)
        emit(name, header + command(d), "reject", field, d["commandId"], d["releaseName"])
    # 6. Values: over the size limit, deeply nested, not an object, not JSON.
    big = lambda size: '{"k":"' + "v" * (size - 8) + '"}'
    for name, text in [("values-512KiB-plus-1", big(512 * 1024 + 1)), ("values-900KiB", big(900 * 1024)),
                       ("values-nested-10000", nested(10000)), ("values-array-nested-10000", "[" * 10000 + "]" * 10000),
                       ("values-nested-33", nested(33)), ("values-array", "[1,2]"), ("values-string", '"x"'),
                       ("values-not-json", "{not json"), ("values-duplicate-keys", '{"a":1,"a":2}'),
                       ("values-empty", "")]:
        d = cmd(valuesOverride=text)
        emit(name, header + command(d), "reject", "valuesOverride", d["commandId"], d["releaseName"])
    # 7. Valid commands carrying hostile *text*: data, never interpreted.
    for hn in ["dash-set", "subshell", "semicolon", "backticks", "cafe", "rlo", "devel"]:
        d = cmd(description=hostile[hn], performedBy=hostile[hn])
        emit("text-" + hn, header + command(d), "ok", hostile[hn], d["commandId"], d["releaseName"])
    d = cmd(valuesOverride=big(512 * 1024), releaseName="values-at-limit")
    emit("values-512KiB", header + command(d), "ok", "values-at-limit", d["commandId"], d["releaseName"])
    d = cmd(valuesOverride=nested(32), releaseName="values-nested-32")
    emit("values-nested-32", header + command(d), "ok", "values-nested-32", d["commandId"], d["releaseName"])
else:
    # Bulk poison for the memory check: every kind again, many times.
    count = int(mode)
    # A few huge ones first (the first 100 hold the biggest records): over the
    # values limit (rejected) and a huge undecodable one.
    for i in range(5):
        d = cmd(valuesOverride='{"k":"' + "v" * (600 * 1024) + '"}')
        emit("huge%d" % i, header + command(d), "bulk-reject", "valuesOverride", d["commandId"], "-", key="bulk/huge")
    emit("huge-dlq", header + command(cmd(valuesOverride='{"k":"' + "v" * (700 * 1024) + '"}'))[:600 * 1024],
         "bulk-dlq", "bad-datum", key="bulk/huge-dlq")
    kinds = ["random", "truncated", "unknown-fp", "length-bomb", "bad-name", "deep-values", "nul", "bad-utf8",
             "long-name", "bad-version"]
    for i in range(count):
        k = kinds[i % len(kinds)]
        key = "bulk/%s" % k
        if i % 400 == 399:
            d = cmd(valuesOverride='{"k":"' + "v" * (600 * 1024) + '"}')
            emit("huge-b%d" % i, header + command(d), "bulk-reject", "valuesOverride", d["commandId"], "-",
                 key="bulk/huge")
        if k == "random":
            emit("b%d" % i, bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 2000))).replace(b"\xc3", b"x"),
                 "bulk-dlq", "bad-header", key=key)
        elif k == "truncated":
            b = header + command(cmd(valuesOverride=json.dumps({"x": "y" * rnd.randint(0, 5000)})))
            emit("b%d" % i, b[:rnd.randint(11, len(b) - 1)], "bulk-dlq", "bad-datum", key=key)
        elif k == "unknown-fp":
            emit("b%d" % i, b"\xc3\x01" + bytes(rnd.getrandbits(8) for _ in range(8)) + command(cmd()),
                 "bulk-dlq", "unknown-fingerprint", key=key)
        elif k == "length-bomb":
            emit("b%d" % i, header + zz(rnd.choice([1 << 31, 1 << 40, (1 << 62), -7])) + b"x" * 10,
                 "bulk-dlq", "bad-datum", key=key)
        elif k in ("nul", "bad-utf8"):
            d = cmd()
            d[rnd.choice(["releaseName", "namespace", "description", "performedBy"])] = \
                b"a\x00b" if k == "nul" else b"\xff\xfe"
            emit("b%d" % i, header + command(d), "bulk-dlq", "bad-datum", key=key)
        else:
            over = {"bad-name": {"releaseName": rnd.choice(["--set", "$(reboot)", ";rm -rf /", "../etc", "caf\u00e9"])},
                    "deep-values": {"valuesOverride": nested(rnd.choice([33, 500, 3000]))},
                    "long-name": {"namespace": "n" * rnd.randint(64, 20000)},
                    "bad-version": {"chartVersion": rnd.choice(["--devel", "1.0.0 --post-renderer x", "latest"])}}[k]
            d = cmd(**over)
            emit("b%d" % i, header + command(d), "bulk-reject", list(over)[0], d["commandId"], "-", key=key)
manifest.close()
PY

/usr/bin/python3 "$T/gen.py" "$HEADER" "$T/valid.json" "$T/named" named $TENANT $NS 1
ok $? "the generator's encoding of the valid command equals helmq encode's, byte for byte"
/usr/bin/python3 "$T/gen.py" "$HEADER" "$T/valid.json" "$T/bulk" 2000 $TENANT $NS 2 || bail "generator failed"
M="$T/named/manifest.tsv"
B="$T/bulk/manifest.tsv"

produce_one() { # produce_one KEY FILE NAME
    case $3 in
    empty) printf '%s:\n' "$1" | kcat -b "$HELMQ_BROKERS" -P -t $TOPIC -K: ;;
    null) printf '%s:\n' "$1" | kcat -b "$HELMQ_BROKERS" -P -t $TOPIC -K: -Z ;;
    *) kcat -b "$HELMQ_BROKERS" -P -t $TOPIC -k "$1" "$2" ;;
    esac
}
produce_bulk() { # produce_bulk MANIFEST: one kcat per key and 200 files
    local key
    for key in $(cut -f2 "$1" | sort -u); do
        awk -F'\t' -v k="$key" '$2 == k {print $3}' "$1" | xargs -r -n 200 kcat -b "$HELMQ_BROKERS" -P -t $TOPIC -k "$key"
    done
}
dlq_count() { kcat -b "$HELMQ_BROKERS" -C -t $DLQ -e -q -f 'x\n' 2>/dev/null | wc -l; }
ids_wanted() { awk -F'\t' '$4 ~ /^(reject|ok|bulk-reject)$/ {print $6}' "$@" | sort -u; }
all_terminal() { # all_terminal WANT_IDS: every id has a terminal event (all saved in $T/terms.json)
    events_json | jq -c 'select(.terminal)' >"$T/terms.json"
    [ -z "$(comm -23 "$1" <(jq -r .commandId "$T/terms.json" | sort -u))" ]
}
wait_dlq() { # wait_dlq MANIFEST...: the DLQ holds every undecodable record of the manifests
    local n
    n=$(awk -F'\t' '$4 ~ /^(bulk-)?dlq$/' "$@" | wc -l)
    wait_for "$n DLQ records" 300 bash -c "[ \$(kcat -b $HELMQ_BROKERS -C -t $DLQ -e -q -f 'x\n' 2>/dev/null | wc -l) -ge $n ]"
}
wait_terms() { # wait_terms MANIFEST...: every decodable record of the manifests has its terminal event
    ids_wanted "$@" >"$T/want.ids"
    wait_for "terminal events" 300 all_terminal "$T/want.ids"
}
commands_ran() { sim_invocations 'select(.event == "start" and .release != null) | .release' | jq -r . | sort -u; }

id=$(send install first -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)
wait_terminal "$id" 120 >/dev/null
ok $? "a first valid install succeeds (baseline)"

# --- phase 1: the named records, each checked ------------------------------------------
# An event sent to the commands topic: a known fingerprint, but not a command.
kcat -b "$HELMQ_BROKERS" -C -t helm.release.events -c 1 -e -q -f '%s' >"$T/named/event.bin" 2>/dev/null
printf 'event-as-command\tpoison/event-as-command\t%s\tdlq\tunknown-fingerprint\t-\t-\n' "$T/named/event.bin" >>"$M"
diag "$(wc -l <"$M") named poison records, $(wc -l <"$B") bulk records"
while IFS=$'\t' read -r name key file expect detail cid rel; do
    [ "$expect" = dlq-last ] || produce_one "$key" "$file" "$name" || diag "kcat could not produce $name"
done <"$M"
wait_dlq "$M"
ok $? "named: all $(awk -F'\t' '$4 == "dlq"' "$M" | wc -l) undecodable records reached the DLQ"
wait_terms "$M"
ok $? "named: every decodable record ($(wc -l <"$T/want.ids")) has its terminal event"

kcat -b "$HELMQ_BROKERS" -C -t $DLQ -e -q -f '%k\t%S\t%h\n' >"$T/dlq.tsv" 2>/dev/null
ok_rels=$( (echo first; awk -F'\t' '$4 == "ok" {print $7}' "$M") | sort -u)
while IFS=$'\t' read -r name key file expect detail cid rel; do
    case $expect in
    dlq)
        line=$(awk -F'\t' -v k="$key" '$1 == k' "$T/dlq.tsv")
        is "$(grep -c . <<<"$line")" 1 "$name: exactly one DLQ record"
        like "$line" "helmq.error=$detail," "$name: its own DLQ header helmq.error=$detail"
        is "$(cut -f2 <<<"$line")" "$(stat -c %s "$file")" "$name: the DLQ record has the original size"
        ;;
    reject)
        ev=$(jq -c --arg c "$cid" 'select(.commandId == $c)' "$T/terms.json")
        is "$(jq -r '[.eventType, .status, .errorCode] | join(" ")' <<<"$ev")" "rejected rejected INVALID_FIELD" \
            "$name: rejected INVALID_FIELD"
        like "$(jq -r .errorMessage <<<"$ev")" "invalid $detail (rule" "$name: the message names $detail"
        ;;
    ok)
        ev=$(jq -c --arg c "$cid" 'select(.commandId == $c)' "$T/terms.json")
        is "$(jq -r '[.eventType, .status, .errorCode // ""] | join(" ")' <<<"$ev")" "succeeded deployed " \
            "$name: a valid command succeeds $(jq -r '.errorMessage // ""' <<<"$ev")"
        ;;
    esac
done <"$M"

# Valid commands carrying hostile text: verbatim, one argv element after --description.
while IFS=$'\t' read -r name key file expect h cid rel; do
    ev=$(jq -c --arg c "$cid" 'select(.commandId == $c)' "$T/terms.json")
    is "$(jq -r '.description + "|" + .performedBy' <<<"$ev")" "$h|$h" "$name: description and performedBy verbatim in the event"
    inv=$(sim_invocations "select(.event == \"start\" and .release == \"$rel\")")
    is "$(jq -c '.argv | del(.[9])' <<<"$inv")" \
        "$(jq -nc --arg r "$rel" --arg ns $NS --arg h "$h" '["install",$r,"oci://registry.example/charts/matih-ai-service","--namespace",$ns,"--create-namespace","--version","1.0.0","--values","--timeout","300s","--wait","--description",$h,"--output","json"]')" \
        "$name: helm's argv has the text as the one element after --description, nothing added"
done < <(awk -F'\t' '$4 == "ok" && $1 ~ /^text-/' "$M")
# Hostile names are logged (rejections name them): the log must stay one
# record per line, each with the worker's own prefix (no forged lines).
forged=$(grep -avc "^[0-9T:.Z-]* helmq-worker\[$WORKER_PID\] [a-z]*: " "$WORKER_LOG")
is "$forged" 0 "the worker log has no line a hostile name forged (lines without the worker's prefix)"
like "$(cat "$WORKER_LOG")" 'x\n2026-01-01T00:00:00.000Z helmq-worker[1] info: commandId=forged' \
    "the forging name is logged with its newline escaped"
[ ! -e /tmp/pwned ] && [ ! -e "$HELM_SIM_STATE/etc" ] && [ ! -e "$HELM_SIM_STATE/releases/etc" ]
ok $? "no hostile text had an effect on the filesystem"
is "$(commands_ran)" "$ok_rels" "helm ran only for the valid commands, never for a poison record"
is "$(sim_invocations "select(.event == \"start\" and .release != null and .namespace != \"$NS\")" | wc -l)" 0 \
    "helm never ran in a hostile namespace"

# --- phase 2: ~2,000 bulk poison records, 100 at a time; memory stays bounded ----------
# Batches keep the in-flight working set alike from one batch to the next, so
# growth between the first batch and the last means a leak, not a burst held
# in librdkafka's prefetch queue.
split -l 100 -d -a 3 "$B" "$T/batch."
batches=("$T"/batch.*)
sent=("$M")
for b in "${batches[@]}"; do
    produce_bulk "$b"
    sent+=("$b")
    wait_dlq "${sent[@]}" || diag "$b: only $(dlq_count) DLQ records so far"
    wait_terms "$b" || diag "$b: terminal events missing"
    if [ "$b" = "${batches[0]}" ]; then
        sleep 1
        RSS1=$(rss_kib) VSZ1=$(vsz_kib)
    fi
done
sleep 2
RSS2=$(rss_kib) VSZ2=$(vsz_kib) HWM=$(awk '/^VmHWM:/ {print $2}' "/proc/$WORKER_PID/status")
wait_dlq "$M" "$B"
ok $? "bulk: all $(awk -F'\t' '$4 ~ /^(bulk-)?dlq$/' "$M" "$B" | wc -l) undecodable records reached the DLQ"
wait_terms "$M" "$B"
ok $? "bulk: every decodable record ($(wc -l <"$T/want.ids")) has its terminal event"
total=$(($(wc -l <"$M") + $(wc -l <"$B")))
diag "worker VmRSS after the first 100 bulk poison records: $RSS1 KiB; after all $total poison records: $RSS2 KiB (+$((RSS2 - RSS1)) KiB; peak VmHWM $HWM KiB)"
diag "worker VmSize after the first 100 bulk poison records: $VSZ1 KiB; after all $total: $VSZ2 KiB (+$((VSZ2 - VSZ1)) KiB)"
if [ -n "${HELMQ_SANITIZER:-}" ] || ldd "$HELMQ_BIN/helmq-worker" 2>/dev/null | grep -q libasan; then
    # ASan keeps freed memory in its quarantine and maps its own regions: the
    # bounds hold only for the plain build (LeakSanitizer covers leaks there).
    ok 0 "worker RSS bound # SKIP sanitizer build"
    ok 0 "worker address-space bound # SKIP sanitizer build"
else
    [ "$RSS2" -lt $((RSS1 + 20 * 1024)) ]
    ok $? "worker RSS grew less than 20 MiB over $total poison records ($RSS1 -> $RSS2 KiB)"
    [ "$VSZ2" -lt $((VSZ1 + 512 * 1024)) ]
    ok $? "worker address space grew less than 512 MiB: length bombs leak nothing ($VSZ1 -> $VSZ2 KiB)"
fi

is "$(jq -r 'select(.eventType == "rejected" and .errorCode == "INVALID_FIELD") | .commandId' "$T/terms.json" | sort -u |
    comm -12 - <(awk -F'\t' '$4 == "bulk-reject" {print $6}' "$B" | sort -u) | wc -l)" \
    "$(awk -F'\t' '$4 == "bulk-reject"' "$B" | wc -l)" "every decodable bulk record was rejected INVALID_FIELD"
diag "DLQ headers: $(kcat -b "$HELMQ_BROKERS" -C -t $DLQ -e -q -f '%h\n' 2>/dev/null | grep -o 'helmq.error=[a-z-]*' | sort | uniq -c | awk '{print $2 "=" $1}' | tr '\n' ' ')"
is "$(kcat -b "$HELMQ_BROKERS" -C -t $DLQ -e -q -f '%h\n' 2>/dev/null | grep -vc 'helmq.error=[a-z]')" 0 \
    "every DLQ record has a helmq.error header"
is "$(kcat -b "$HELMQ_BROKERS" -C -t $DLQ -e -q -f '%h\n' 2>/dev/null | grep -vc 'helmq.source.offset=[0-9]')" 0 \
    "every DLQ record names its source offset"
is "$(jq -r .commandId "$T/terms.json" | sort | uniq -d | head -5)" "" "exactly one terminal event per command"
is "$(commands_ran)" "$ok_rels" "still no helm invocation for any poison record"
alive "$WORKER_PID"
ok $? "the worker is still running"

# --- phase 3: the worker still serves -----------------------------------------------------
id=$(send install after-poison -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 --set-values '{"a":1}')
ev=$(wait_terminal "$id" 120)
is "$(jf '[.eventType,.status,.revision,.errorMessage // ""] | join(" ")' <<<"$ev")" "succeeded deployed 1 " \
    "a valid command after the poison succeeds"
is "$(find "$HELMQ_TMPDIR" -mindepth 1 | wc -l)" 0 "no values file left behind"

# --- phase 4: an empty value, then a NULL value -------------------------------------------
# Last and on their own (a NULL value once crashed the UBSan build: memcpy from NULL).
dlq_has() { # dlq_has NAME: one DLQ record for poison/NAME, empty, with helmq.error=bad-header
    local line
    wait_for "the $1 record in the DLQ" 60 bash -c \
        "kcat -b $HELMQ_BROKERS -C -t $DLQ -e -q -f '%k\n' 2>/dev/null | grep -qx 'poison/$1'"
    line=$(kcat -b "$HELMQ_BROKERS" -C -t $DLQ -e -q -f '%k\t%S\t%h\n' 2>/dev/null | awk -F'\t' -v k="poison/$1" '$1 == k')
    [ "$(grep -c . <<<"$line")" = 1 ] && [[ $line == *"helmq.error=bad-header,"* ]] && [ "$(cut -f2 <<<"$line")" = 0 ]
}
produce_one poison/empty - empty
dlq_has empty
ok $? "empty value: one DLQ record, empty, with helmq.error=bad-header"
produce_one poison/null - null
dlq_has null
ok $? "NULL value: one DLQ record, empty, with helmq.error=bad-header"
if alive "$WORKER_PID"; then
    ok 0 "the worker survives empty and NULL values"
    worker_stop
    is "$?" 0 "SIGTERM: the worker exits 0"
else
    ok 1 "the worker survives empty and NULL values"
    grep -a -A3 'runtime error' "$WORKER_LOG" | head -4 | sed 's/^/# /'
fi
done_testing
