#!/usr/bin/env bash
# Partitioning: every helmq producer (the CLI, helmq-api, the worker's events
# and dead letters) puts a key on the partition a Java, Go or JavaScript
# client would (murmur2), so a release's commands stay on one partition
# whoever sends them. The reference is kafkajs, a client helmq did not write,
# with its default partitioner, against helmq-broker (6 partitions); the
# pass-through -X partitioner=... still overrides helmq's choice.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

NODE_PATH=$(bash tests/lib/node-deps.sh 2>"$T/npm.log") || skip_all "kafkajs could not be installed: $(tail -1 "$T/npm.log")"
export NODE_PATH
kjs() { node tests/interop/kafkajs.js "$HELMQ_BROKERS" "$@"; }

stack_start --partitions 6
NS=part-ns
CMDS=helm.release.commands
names=(p1 p2 p3 p4 p5 p6 p7 p8 papi)
keys=()
for n in "${names[@]}"; do keys+=("$TENANT/$NS/$n"); done

# 1. kafkajs produces each key once (a record that is not a command: the
#    worker sends it to the DLQ under its key).
kjs produce $CMDS "${keys[@]}" >"$T/kafkajs.tsv" 2>"$T/kafkajs.err"
ok $? "kafkajs produced ${#keys[@]} keyed records to $CMDS $(cat "$T/kafkajs.err")"
declare -A want
while IFS=$'\t' read -r k p; do want[$k]=$p; done <"$T/kafkajs.tsv"
diag "kafkajs (murmur2): $(cut -f2 "$T/kafkajs.tsv" | tr '\n' ' ')"

worker_start --concurrency 4
api_start

# 2. The same keys from helmq's CLI and helmq-api.
ids=()
for n in "${names[@]}"; do
    [ "$n" = papi ] && continue
    ids+=("$(send install "$n" -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0)")
done
r=$(curl -s -X POST -H "Authorization: Bearer $ACME_TOKEN" -H 'Content-Type: application/json' \
    --data-binary "$(jq -c --arg ns $NS '.releaseName = "papi" | .namespace = $ns' tests/fixtures/seed-install.json)" \
    "$API_URL/api/v1/helm/releases")
ids+=("$(jq -r .commandId <<<"$r")")
for id in "${ids[@]}"; do wait_terminal "$id" 120 >/dev/null || diag "no outcome for $id"; done
is "$(for id in "${ids[@]}"; do _terminal_of "$id"; done | jq -r .eventType | sort | uniq -c | awk '{print $2 "x" $1}')" \
    "succeededx${#ids[@]}" "all ${#ids[@]} installs succeeded"
wait_for "the DLQ records" 30 bash -c "[ \$(kcat -b $HELMQ_BROKERS -C -t $CMDS.dlq -e -q -f 'x\n' 2>/dev/null | wc -l) -ge ${#keys[@]} ]"

# 3. Read everything back with kafkajs: partition and key of every record.
kjs read $CMDS $((2 * ${#keys[@]})) 60000 >"$T/commands.tsv" 2>"$T/read.err"
ok $? "kafkajs read the commands back $(cat "$T/read.err")"
kjs read helm.release.events $((2 * ${#ids[@]})) 60000 >"$T/events.tsv" 2>"$T/read.err"
ok $? "kafkajs read the events back $(cat "$T/read.err")"
kjs read $CMDS.dlq ${#keys[@]} 60000 >"$T/dlq.tsv" 2>"$T/read.err"
ok $? "kafkajs read the dead letters back $(cat "$T/read.err")"
partitions_of() { awk -F'\t' -v k="$2" '$2 == k {print $1}' "$1" | sort -u | tr '\n' ' '; }
for k in "${keys[@]}"; do
    n=${k##*/}
    from=CLI
    [ "$n" = papi ] && from=helmq-api
    is "$(partitions_of "$T/commands.tsv" "$k")" "${want[$k]} " "$n: kafkajs's record and the $from's on one partition (${want[$k]})"
    is "$(partitions_of "$T/events.tsv" "$k")" "${want[$k]} " "$n: the worker's events on the partition kafkajs picks"
    is "$(partitions_of "$T/dlq.tsv" "$k")" "${want[$k]} " "$n: the worker's dead letter on the partition kafkajs picks"
done

# 4. The pass-through property overrides the partitioner: librdkafka's
#    consistent partitioner is CRC-32 of the key modulo the partitions.
differ=0
for n in q1 q2 q3 q4 q5 q6; do
    k="$TENANT/$NS/$n"
    crc=$($PY -c 'import sys, zlib; print(zlib.crc32(sys.argv[1].encode()) % 6)' "$k")
    id=$(HELMQ_LOG_LEVEL=info send install "$n" -t $TENANT -n $NS --chart-name matih-ai-service --chart-version 1.0.0 \
        -X partitioner=consistent 2>"$T/send.err")
    p=$(sed -n 's/.* delivered to .* \[\([0-9]*\)\] at offset.*/\1/p' "$T/send.err")
    is "$p" "$crc" "$n: -X partitioner=consistent puts it where CRC-32 does ($crc)"
done
kjs produce $CMDS "$TENANT/$NS/q1" "$TENANT/$NS/q2" "$TENANT/$NS/q3" "$TENANT/$NS/q4" "$TENANT/$NS/q5" \
    "$TENANT/$NS/q6" >"$T/q.tsv" 2>/dev/null
while IFS=$'\t' read -r k p; do
    crc=$($PY -c 'import sys, zlib; print(zlib.crc32(sys.argv[1].encode()) % 6)' "$k")
    [ "$crc" != "$p" ] && differ=$((differ + 1))
done <"$T/q.tsv"
[ "$differ" -gt 0 ]
ok $? "control: CRC-32 and murmur2 disagree on $differ of those 6 keys"

worker_stop
is "$?" 0 "SIGTERM: the worker exits 0"
done_testing
