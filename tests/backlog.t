#!/usr/bin/env bash
# backlog.t: --max-buffered bounds the commands a worker holds. A worker with one
# helm slot (every operation takes 1 s) and --max-buffered 6 gets 24 installs at
# once: it pauses consuming at 6 commands received and not finished, resumes below
# half of that, never holds more, and every command still ends succeeded. (What a
# buffered command costs in memory: `BENCH_ONLY=backlog make bench`, docs/PERFORMANCE.md.)
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/stack.sh"

stack_start
PORT=$(free_port)
worker_start --concurrency 1 --max-buffered 6 --http-listen "127.0.0.1:$PORT" || bail "the worker did not start"
NS=tenant-backlog
N=24
for i in $(seq 1 $N); do sim_knob $NS "bl-$i" '{"install": {"sleep": 1}}'; done
buffered() { curl -s --max-time 2 "http://127.0.0.1:$PORT/metrics" | awk '$1 == "helmq_worker_buffered" { print $2 }'; }

pids=()
for i in $(seq 1 $N); do
    send install "bl-$i" -t "$TENANT" -n $NS --chart-name matih-ai-service --chart-version 1.0.0 >/dev/null 2>&1 &
    pids+=($!)
done
wait "${pids[@]}"
max=0 samples=0 end=$((SECONDS + 180))
while [ "$SECONDS" -lt "$end" ]; do
    b=$(buffered)
    if [ -n "$b" ]; then
        samples=$((samples + 1))
        [ "$b" -gt "$max" ] && max=$b
    fi
    n=$(events_json | jq -r 'select(.terminal and .namespace == "tenant-backlog") | .commandId' | sort -u | wc -l)
    [ "$n" -ge $N ] && break
    sleep 0.2
done
is "$n" $N "all $N installs ended"
is "$(events_json | jq -r 'select(.terminal and .namespace == "tenant-backlog") | .eventType' | sort | uniq -c | awk '{print $2 "x" $1}')" \
    "succeededx$N" "... every one succeeded"
diag "helmq_worker_buffered: at most $max over $samples samples"
ok "$([ "$max" -le 6 ] && [ "$max" -ge 3 ] && echo 0 || echo 1)" "the worker never held more than --max-buffered 6 commands (at most $max)"
like "$(cat "$WORKER_LOG")" "paused consuming: 6 commands buffered (limit 6)" "it said it paused consuming at 6"
grep -qE 'resumed consuming \([0-2] commands buffered\)' "$WORKER_LOG"
ok $? "and resumed below half of the limit"
done_testing
