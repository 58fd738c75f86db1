# shellcheck shell=bash
# tests/bench/realhelm.sh: section 6 of tests/bench/bench.sh (real helm against the
# emulated cluster: the worker beside the kcat | xargs peer).
# Sourced by bench.sh after its settings and bench_init; not run alone.

# --- 6. real helm against the emulated cluster ---------------------------------------------------
# The worker and the kcat | xargs peer, both running real helm 3.17 (install
# --wait) against the emulated Kubernetes API (tests/kube/) with charts from a
# real OCI registry (tests/lib/registry.sh), at the same concurrency, each with a
# fresh emulator (and its own namespace): RH_N installs of distinct releases of
# matih-ai-service 1.0.0. CPU is split by process: helm (the children the worker,
# or xargs, reaped), the worker itself, PostgreSQL, the emulator (one python
# process), the registry.
RH_N=${BENCH_REALHELM_COMMANDS:-100}
RH_CONCS=${BENCH_REALHELM_CONCURRENCY:-8 16}
RH_CHART=matih-ai-service:1.0.0:2.0.0
RH_PARTS=8

rh_setup() { # real helm and kubectl, the registry with tests/charts pushed, helm's private homes
    . "$BENCH_ROOT/tests/lib/cluster.sh"
    # The emulator's debug log writes a line per request: info for the benchmark.
    export KUBE_EMULATOR_LOG_LEVEL=${BENCH_KUBE_LOG_LEVEL:-info}
    cluster_start "$T/cluster" >"$T/cluster.log" 2>&1 || { cat "$T/cluster.log" >&2; die "the emulated cluster did not start"; }
    track "$REGISTRY_PID"
    # Each contender gets an emulator of its own (rh_kube_fresh): not this one.
    kube_stop
    printf '{"replicaCount":1}\n' >"$T/rh-values.json" # the commands' valuesOverride, as the peer's -f file
}

rh_kube_fresh() { # rh_kube_fresh DIR: a new emulator with empty state; HELMQ_KUBECONFIG for the worker
    kube_start "$1" >>"$T/cluster.log" 2>&1 || die "the emulator did not start: $(tail -5 "$T/cluster.log")"
    track "$KUBE_PID"
    export HELMQ_KUBECONFIG=$KUBECONFIG
}

rh_kube_done() {
    untrack "$KUBE_PID"
    kube_stop
}

# rh_verify WHO NS: the emulator holds RH_N helm release Secrets, all deployed, all in NS,
# and RH_N Deployments with their replica ready.
rh_verify() {
    local who=$1 ns=$2 s d
    s=$(curl -sf --max-time 60 "$KUBE_URL/api/v1/secrets?labelSelector=owner%3Dhelm" |
        jq -r --arg ns "$ns" '[(.items | length), ([.items[] | select(.metadata.labels.status == "deployed"
            and .metadata.labels.version == "1" and .metadata.namespace == $ns)] | length)] | join(" ")')
    [ "$s" = "$RH_N $RH_N" ] || die "$who: helm release Secrets (all, deployed v1 in $ns): $s, want $RH_N"
    d=$(curl -sf --max-time 60 "$KUBE_URL/apis/apps/v1/namespaces/$ns/deployments" |
        jq -r '[.items[] | select(.status.readyReplicas == 1)] | length')
    [ "$d" = "$RH_N" ] || die "$who: $d ready Deployments in $ns, want $RH_N"
    say "realhelm  $who: $RH_N helm release Secrets deployed, $d Deployments ready in $ns"
}

rh_worker_run() { # rh_worker_run CONC REP
    local c=$1 rep=$2 tag ns prod out w0 w1 p0 p1 k0 k1 r0 r1 m0 m1 first last secs tput wpid
    tag=$(next_tag)
    ns=rw-$tag
    db_create bench_realhelm
    HELMQ_DATABASE_URL=$(db_url bench_realhelm)
    export HELMQ_DATABASE_URL
    rh_kube_fresh "$T/kube-$ns"
    broker_start "$RH_PARTS"
    BENCH_HELM=$HELMQ_HELM BENCH_CHART_REPO=$HELMQ_CHART_REPO worker_start "$T/rh-worker-$ns.log" --concurrency "$c" \
        --group-id "g-$ns"
    rm -f "$T/ready"
    "$BT" wait -b "$B" --count "$RH_N" --wait-timeout 1800 --ready "$T/ready" >"$T/wait-$ns.out" &
    wpid=$!
    track $wpid
    while [ ! -e "$T/ready" ]; do sleep 0.05; done
    w0=$(cpu_split "$WORKER_PID")
    p0=$(pg_ticks)
    k0=$(cpu_ticks "$KUBE_PID")
    r0=$(cpu_ticks "$REGISTRY_PID")
    m0=$(machine_ticks)
    prod=$("$BT" commands -b "$B" --count "$RH_N" --keys "$RH_N" --ns "$ns" --tag "$tag" --chart "$RH_CHART")
    wait $wpid
    untrack $wpid
    m1=$(machine_ticks)
    w1=$(cpu_split "$WORKER_PID")
    p1=$(pg_ticks)
    k1=$(cpu_ticks "$KUBE_PID")
    r1=$(cpu_ticks "$REGISTRY_PID")
    out=$(cat "$T/wait-$ns.out")
    [ "$(kv types "$out")" = "succeeded:$RH_N" ] || die "realhelm worker c=$c: not all succeeded: $out $(grep -m3 -i 'fail\|error' "$T/rh-worker-$ns.log")"
    rh_verify "worker c=$c" "$ns"
    first=$(kv first_send_ms "$prod")
    last=$(kv last_ms "$out")
    secs=$(awk -v a="$first" -v b="$last" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    tput=$(awk -v n="$RH_N" -v s="$secs" 'BEGIN { printf "%.2f", n / s }')
    # helm spawned by the worker: its reaped children's ticks; the worker: its own
    # CPU ms per command: helm, worker, PostgreSQL, emulator, registry, machine
    raw realhelm "worker-c$c" "$tput" "$secs" \
        "$(per1k $((${w1#* } - ${w0#* })) "$RH_N" 1)" "$(per1k $((${w1% *} - ${w0% *})) "$RH_N" 1)" \
        "$(per1k $((p1 - p0)) "$RH_N" 1)" "$(per1k $((k1 - k0)) "$RH_N" 1)" "$(per1k $((r1 - r0)) "$RH_N" 1)" \
        "$(per1k $((m1 - m0)) "$RH_N" 1)" "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
    say "realhelm  worker c=$c rep $rep: $tput commands/s ($RH_N installs in ${secs}s)"
    worker_stop
    broker_stop
    rh_kube_done
    db_drop bench_realhelm
    rm -rf "$T/kube-$ns"
}

rh_peer_run() { # rh_peer_run CONC REP: kcat | xargs -P C helm install ..., the worker's own argv
    local c=$1 rep=$2 tag ns wm k0 k1 r0 r1 m0 m1 t0 t1 own inner rc secs tput
    local -a argv
    tag=$(next_tag)
    ns=rp-$tag
    rh_kube_fresh "$T/kube-$ns"
    broker_start "$RH_PARTS"
    "$BT" commands -b "$B" --count "$RH_N" --keys "$RH_N" --ns "$ns" --tag "$tag" --chart "$RH_CHART" >/dev/null
    wm=$("$BT" watermarks -b "$B" -t helm.release.commands)
    [ "$(kv retained "$wm")" = "$RH_N" ] || die "realhelm peer preload: $wm"
    # The helm argv the worker runs for these commands (helmq-worker argv), the
    # release name left to xargs, the values in a file.
    mapfile -t argv < <("$BT" sample-command --ns "$ns" --keys "$RH_N" --tag "$tag" --index 0 --chart "$RH_CHART" |
        HELMQ_REGISTRY_PLAIN_HTTP=true "$BIN/helmq-worker" argv "$T/rh-values.json" | head -n 1 |
        jq -r '.[2] = "{}" | .[]')
    [ "${argv[1]}" = install ] || die "realhelm peer: no install argv from helmq-worker argv: ${argv[*]}"
    [ "$rep" = 1 ] && [ "$c" = "${RH_CONCS%% *}" ] && say "realhelm  peer's helm: ${argv[*]}"
    k0=$(cpu_ticks "$KUBE_PID")
    r0=$(cpu_ticks "$REGISTRY_PID")
    m0=$(machine_ticks)
    t0=$(now_ms)
    # The subshell reaps kcat and cut; the inner one reaps xargs, which reaps every helm.
    own=$(
        kcat -C -b "$B" -t helm.release.commands -e -q -f '%k\n' 2>/dev/null | cut -d/ -f3 |
            (
                xargs -P "$c" -I{} "${argv[@]}" >/dev/null 2>>"$T/rh-peer-$ns.err"
                echo $? >"$T/rh-peer.rc"
                cpu_ticks "$BASHPID" >"$T/rh-peer.inner"
            )
        cpu_ticks "$BASHPID"
    )
    t1=$(now_ms)
    m1=$(machine_ticks)
    k1=$(cpu_ticks "$KUBE_PID")
    r1=$(cpu_ticks "$REGISTRY_PID")
    rc=$(cat "$T/rh-peer.rc")
    inner=$(cat "$T/rh-peer.inner")
    [ "$rc" = 0 ] || die "realhelm peer c=$c: xargs exited $rc: $(tail -3 "$T/rh-peer-$ns.err")"
    rh_verify "peer c=$c" "$ns"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
    tput=$(awk -v n="$RH_N" -v s="$secs" 'BEGIN { printf "%.2f", n / s }')
    # CPU ms per command: helm (with xargs), kcat+cut, emulator, registry, machine
    raw realhelm "peer-c$c" "$tput" "$secs" "$(per1k "$inner" "$RH_N" 1)" "$(per1k $((own - inner)) "$RH_N" 1)" \
        "$(per1k $((k1 - k0)) "$RH_N" 1)" "$(per1k $((r1 - r0)) "$RH_N" 1)" "$(per1k $((m1 - m0)) "$RH_N" 1)" \
        "$(cut -d' ' -f1-3 /proc/loadavg | tr ' ' /)"
    say "realhelm  peer   c=$c rep $rep: $tput commands/s ($RH_N installs in ${secs}s)"
    broker_stop
    rh_kube_done
    rm -rf "$T/kube-$ns"
}

if runs realhelm; then
    say "6. real helm: $RH_N installs of matih-ai-service 1.0.0 (distinct releases), worker and kcat|xargs peer," \
        "concurrency $RH_CONCS, $REPS repetitions, a fresh emulator per run"
    rh_setup
    for rep in $(seq 1 "$REPS"); do
        for c in $RH_CONCS; do
            # Alternate who goes first, so neither always runs on a warmer (or busier) machine.
            if [ $((rep % 2)) = 1 ]; then
                rh_worker_run "$c" "$rep"
                rh_peer_run "$c" "$rep"
            else
                rh_peer_run "$c" "$rep"
                rh_worker_run "$c" "$rep"
            fi
        done
    done
    untrack "$REGISTRY_PID"
    cluster_stop
fi

