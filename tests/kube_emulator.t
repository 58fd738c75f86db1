#!/usr/bin/env bash
# kube_emulator.t: the emulated Kubernetes API server (tests/kube/) under REAL helm
# 3.17 and kubectl 1.31: install/upgrade/rollback/uninstall with --wait, strategic
# merge patch, --atomic on a never-ready workload, hooks (a failing hook Job fails
# the install), kubectl create/apply/delete, Status objects for 404/409, state
# across an emulator restart, 20 helm installs in parallel.
. "$(dirname "$0")/lib/tap.sh"
. "$(dirname "$0")/lib/common.sh"
. tests/kube/kube.sh

HELM=$HELMQ_ROOT/build/tools/helm
KUBECTL=$HELMQ_ROOT/build/tools/kubectl
if [ ! -x "$HELM" ] || [ ! -x "$KUBECTL" ]; then
    skip_all "real helm/kubectl not installed (tests/lib/install-real-helm.sh)"
fi
if ! command -v curl >/dev/null || ! command -v jq >/dev/null; then skip_all "curl and jq are needed"; fi

export HELM_CACHE_HOME=$T/helm/cache HELM_CONFIG_HOME=$T/helm/config HELM_DATA_HOME=$T/helm/data
export KUBECACHEDIR=$T/kube-cache # kubectl's discovery cache, out of $HOME
unset HELM_NAMESPACE HELM_KUBECONTEXT HELM_KUBEAPISERVER HELM_KUBETOKEN HELM_DRIVER HELM_DEBUG
helm() { timeout 120 "$HELM" "$@"; }
kubectl() { timeout 60 "$KUBECTL" "$@"; }

kube_start "$T/kube" || bail "the kube emulator did not start"
at_exit kube_stop
ok 0 "the emulator answers /version at $KUBE_URL"
is "$(curl -s "$KUBE_URL/version" | jq -r .gitVersion)" v1.31.0 "/version is a version.Info"

# A chart from `helm create`, plus: env from .Values.env in the container, and a
# hook Job guarded by .Values.hookJob.enabled with its own pod annotations.
CH=$T/chart/demo
mkdir -p "$T/chart"
helm create "$CH" >/dev/null || bail "helm create failed"
grep -q podAnnotations "$CH/templates/deployment.yaml" || bail "helm create's chart no longer templates podAnnotations"
sed -i '/imagePullPolicy:/a\
          {{- with .Values.env }}\
          env:\
            {{- toYaml . | nindent 12 }}\
          {{- end }}' "$CH/templates/deployment.yaml"
cat >"$CH/templates/hook-job.yaml" <<'EOF'
{{- if .Values.hookJob.enabled }}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "demo.fullname" . }}-hook
  annotations:
    "helm.sh/hook": pre-install,pre-upgrade
    "helm.sh/hook-delete-policy": before-hook-creation
spec:
  backoffLimit: 0
  template:
    metadata:
      {{- with .Values.hookJob.podAnnotations }}
      annotations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      restartPolicy: Never
      containers:
        - name: hook
          image: busybox:1.36
          command: ["true"]
{{- end }}
EOF
cat >>"$CH/values.yaml" <<'EOF'
env: []
hookJob:
  enabled: false
  podAnnotations: {}
EOF
ok $? "chart: helm create + env + a guarded hook Job"

# --- install --wait (with a succeeding pre-install hook Job)
NS=app
t0=$(date +%s.%N)
out=$(helm install web "$CH" -n $NS --create-namespace --wait --timeout 60s --set hookJob.enabled=true 2>&1)
ok $? "helm install --wait (with a pre-install hook Job) succeeds" || diag "$out"
diag "install --wait took $(echo "$(date +%s.%N) - $t0" | bc) s"
like "$(helm status web -n $NS 2>&1)" "STATUS: deployed" "helm status: deployed"
is "$(kubectl get deploy web-demo -n $NS -o jsonpath='{.status.readyReplicas}/{.spec.replicas} {.status.observedGeneration}={.metadata.generation}')" \
    "1/1 1=1" "the Deployment is ready (readyReplicas, observedGeneration)"
out=$(kubectl get deploy,svc,cm -n $NS 2>&1)
like "$out" "deployment.apps/web-demo" "kubectl get deploy,svc,cm shows the Deployment"
like "$out" "service/web-demo" "... and the Service"
like "$out" "10.96." "... with a cluster IP"
is "$(kubectl get job web-demo-hook -n $NS -o jsonpath='{.status.succeeded} {.status.conditions[?(@.type=="Complete")].status}')" \
    "1 True" "the pre-install hook Job completed"
is "$(kubectl get secret sh.helm.release.v1.web.v1 -n $NS -o jsonpath='{.metadata.labels.owner} {.type}')" \
    "helm helm.sh/release.v1" "helm's release Secret sh.helm.release.v1.web.v1 exists with owner=helm"
grep -q "POST /api/v1/namespaces/$NS/secrets .* application/vnd.kubernetes.protobuf" "$T/kube/kube.log"
ok $? "helm wrote its release Secret with a protobuf body (decoded by the emulator)"
RS1=$(kubectl get rs -n $NS -l app.kubernetes.io/instance=web -o jsonpath='{.items[0].metadata.ownerReferences[0].kind}/{.items[0].metadata.ownerReferences[0].controller} {.items[0].metadata.labels.pod-template-hash}')
like "$RS1" "Deployment/true " "the ReplicaSet is owned by the Deployment (controller) and has a pod-template-hash"
is "$(kubectl get pods -n $NS -l app.kubernetes.io/instance=web -o jsonpath='{.items[*].status.phase}')" Running \
    "its pod is Running"
kubectl rollout status deploy/web-demo -n $NS --timeout 10s >/dev/null 2>&1
ok $? "kubectl rollout status (a watch) sees the rollout complete"

# A field only the live object has (kubectl set env: itself a strategic merge patch).
kubectl set env deploy/web-demo -n $NS MANUAL=kept >/dev/null 2>&1
ok $? "kubectl set env adds a live-only env var"
is "$(kubectl get deploy web-demo -n $NS -o jsonpath='{.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].name}')" \
    "nginx:1.16.0 MANUAL" "kubectl's strategic merge patch merged the container by name (image kept)"
# --- upgrade --wait: replicas 3, an env var and a pod label; strategic merge keeps MANUAL
t0=$(date +%s.%N)
out=$(helm upgrade web "$CH" -n $NS --wait --timeout 60s --set hookJob.enabled=true --set replicaCount=3 \
    --set 'env[0].name=FOO' --set 'env[0].value=bar' --set podLabels.tier=web 2>&1)
ok $? "helm upgrade --wait succeeds" || diag "$out"
diag "upgrade --wait took $(echo "$(date +%s.%N) - $t0" | bc) s"
grep -q "PATCH /apis/apps/v1/namespaces/$NS/deployments/web-demo.* application/strategic-merge-patch+json" "$T/kube/kube.log"
ok $? "helm upgraded the Deployment with a strategic merge patch"
D=$(kubectl get deploy web-demo -n $NS -o json)
is "$(jq -r '.spec.replicas' <<<"$D")" 3 "replicaCount 3 reached spec.replicas"
is "$(jq -r '[.spec.template.spec.containers[0].env[] | "\(.name)=\(.value)"] | sort | join(",")' <<<"$D")" \
    "FOO=bar,MANUAL=kept" "env merged by name: the chart's FOO added, the live-only MANUAL kept"
is "$(jq -r '.spec.template.spec.containers | length' <<<"$D") $(jq -r '.spec.template.spec.containers[0].image' <<<"$D")" \
    "1 nginx:1.16.0" "containers merged by name (one container, image kept)"
is "$(jq -r '.spec.template.metadata.labels.tier' <<<"$D")" web "the pod label was added"
is "$(jq '[paths | .[] | strings | select(startswith("$"))] | length' <<<"$D")" 0 \
    "no patch directive (\$setElementOrder, \$patch, ...) leaked into the object"
is "$(jq -r '"\(.status.readyReplicas) \(.status.updatedReplicas) \(.status.observedGeneration == .metadata.generation)"' <<<"$D")" \
    "3 3 true" "the upgraded Deployment is ready (3 ready, 3 updated, generation observed)"
# (three ReplicaSets: the install's, kubectl set env's, the upgrade's)
is "$(kubectl get rs -n $NS -l app.kubernetes.io/instance=web -o json | jq -r '[.items[].spec.replicas] | sort | join(",")')" \
    "0,0,3" "each new template made a new ReplicaSet; the old ones are scaled to 0"

# --- rollback to revision 1
out=$(helm rollback web 1 -n $NS --wait --timeout 60s 2>&1)
ok $? "helm rollback web 1 --wait succeeds" || diag "$out"
D=$(kubectl get deploy web-demo -n $NS -o json)
is "$(jq -r '.spec.replicas' <<<"$D")" 1 "the rollback restored spec.replicas 1"
is "$(jq -r '[.spec.template.spec.containers[0].env[]?.name] | index("FOO")' <<<"$D") $(jq -r '.spec.template.metadata.labels.tier // "none"' <<<"$D")" \
    "null none" "the rollback removed revision 2's env var and pod label"
is "$(jq -r '.status.readyReplicas' <<<"$D")" 1 "the rolled-back Deployment is ready"
like "$(helm history web -n $NS 2>&1 | tail -1)" "Rollback to 1" "helm history shows the rollback as revision 3"

# --- uninstall leaves nothing of the release
out=$(helm uninstall web -n $NS --wait 2>&1)
ok $? "helm uninstall succeeds" || diag "$out"
is "$(kubectl get deploy,rs,svc,sa,secrets -n $NS -o name 2>&1)" "" \
    "no deployment, replicaset, service, serviceaccount or secret is left in the namespace"
# helm leaves hook resources whose delete policy is only before-hook-creation (as on
# a real cluster): the hook Job and its pod are all that remain.
is "$(kubectl get jobs,pods -n $NS -o json | jq -r '[.items[] | .metadata.labels["job-name"] // .metadata.name] | unique | join(",")')" \
    "web-demo-hook" "... the only leftovers are the hook Job and its pod (helm keeps hooks)"
kubectl delete job web-demo-hook -n $NS >/dev/null 2>&1
is "$(kubectl get jobs,pods -n $NS -o name 2>&1)" "" "deleting the Job (background propagation) deleted its pod"

# --- never ready + --atomic: fails after the timeout and leaves nothing
t0=$(date +%s)
out=$(helm install stuck "$CH" -n stuck --create-namespace --wait --timeout 5s --atomic \
    --set-string 'podAnnotations.emulator\.helmq\.dev/ready=never' 2>&1)
rc=$?
el=$(($(date +%s) - t0))
[ $rc -ne 0 ]
ok $? "install of a never-ready workload with --wait --timeout 5s --atomic fails" || diag "$out"
like "$out" "context deadline exceeded" "... because the wait timed out"
[ $el -ge 4 ] && [ $el -le 20 ]
ok $? "... in about 5 s (took ${el}s)"
is "$(kubectl get deploy,rs,pods,svc,secrets -n stuck -o name 2>&1)" "" "--atomic left nothing in the namespace"
is "$(helm list -n stuck -a -q 2>&1)" "" "... and no release"

# --- a failing hook Job fails the install
out=$(helm install hooked "$CH" -n hooks --create-namespace --wait --timeout 30s --set hookJob.enabled=true \
    --set-string 'hookJob.podAnnotations.emulator\.helmq\.dev/job=fail' 2>&1)
rc=$?
[ $rc -ne 0 ]
ok $? "install with a failing pre-install hook Job fails"
like "$out" "BackoffLimitExceeded" "... with the Job's reason BackoffLimitExceeded"
like "$(helm status hooked -n hooks 2>&1)" "STATUS: failed" "the release is failed"
is "$(kubectl get job hooked-demo-hook -n hooks -o jsonpath='{.status.conditions[?(@.type=="Failed")].reason}')" \
    BackoffLimitExceeded "the hook Job has condition Failed/BackoffLimitExceeded"
is "$(kubectl get deploy -n hooks -o name 2>&1)" "" "the chart's resources were not created"

# --- kubectl create/get/apply/delete of a ConfigMap
kubectl create namespace kc >/dev/null
kubectl create configmap c1 -n kc --from-literal=a=1 >/dev/null 2>&1
ok $? "kubectl create configmap"
is "$(kubectl get cm c1 -n kc -o jsonpath='{.data.a}')" 1 "kubectl get configmap"
cat >"$T/cm.yaml" <<'EOF'
apiVersion: v1
kind: ConfigMap
metadata:
  name: c2
  namespace: kc
data:
  a: "1"
  b: "2"
EOF
like "$(kubectl apply -f "$T/cm.yaml" 2>&1)" "configmap/c2 created" "kubectl apply (client-side) creates"
sed -i 's/b: "2"/b: "3"/; /a: "1"/d' "$T/cm.yaml"
like "$(kubectl apply -f "$T/cm.yaml" 2>&1)" "configmap/c2 configured" "kubectl apply again patches"
is "$(kubectl get cm c2 -n kc -o json | jq -c .data)" '{"b":"3"}' "the client-side apply patch changed b and removed a"
sed -i 's/b: "3"/b: "4"/' "$T/cm.yaml"
out=$(kubectl apply --server-side -f "$T/cm.yaml" 2>&1)
like "$out" "serverside-applied" "kubectl apply --server-side" || diag "$out"
is "$(kubectl get cm c2 -n kc -o jsonpath='{.data.b}')" 4 "the server-side apply changed b"
like "$(kubectl delete cm c1 c2 -n kc 2>&1)" 'configmap "c2" deleted' "kubectl delete configmaps"
out=$(kubectl get cm c1 -n kc 2>&1)
like "$out" 'configmaps "c1" not found' "a deleted configmap is NotFound for kubectl"

# --- Status objects: 404, 409 (AlreadyExists, stale resourceVersion)
B="$KUBE_URL/api/v1/namespaces/kc/configmaps"
r=$(curl -s -w ' %{http_code}' "$B/nope")
is "${r##* }" 404 "GET of a missing object: 404"
is "$(jq -r '"\(.kind) \(.apiVersion) \(.status) \(.reason) \(.details.name) \(.details.kind) \(.code)"' <<<"${r% *}")" \
    "Status v1 Failure NotFound nope configmaps 404" "... a Status object with reason NotFound and details"
is "$(jq -r .message <<<"${r% *}")" 'configmaps "nope" not found' "... and the real API's message"
curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"metadata":{"name":"c3"},"data":{"x":"1"}}' "$B"
r=$(curl -s -w ' %{http_code}' -X POST -H 'Content-Type: application/json' -d '{"metadata":{"name":"c3"}}' "$B")
is "${r##* } $(jq -r .reason <<<"${r% *}")" "409 AlreadyExists" "creating it twice: 409 AlreadyExists"
RV=$(curl -s "$B/c3" | jq -r .metadata.resourceVersion)
r=$(curl -s -w ' %{http_code}' -X PUT -H 'Content-Type: application/json' \
    -d "{\"metadata\":{\"name\":\"c3\",\"resourceVersion\":\"$RV\"},\"data\":{\"x\":\"2\"}}" "$B/c3")
is "${r##* }" 200 "an update with the current resourceVersion: 200"
RV2=$(jq -r .metadata.resourceVersion <<<"${r% *}")
[ "$RV2" -gt "$RV" ]
ok $? "... which bumps the resourceVersion ($RV -> $RV2)"
r=$(curl -s -w ' %{http_code}' -X PUT -H 'Content-Type: application/json' \
    -d "{\"metadata\":{\"name\":\"c3\",\"resourceVersion\":\"$RV\"},\"data\":{\"x\":\"3\"}}" "$B/c3")
is "${r##* } $(jq -r .reason <<<"${r% *}")" "409 Conflict" "an update with a stale resourceVersion: 409 Conflict"
like "$(jq -r .message <<<"${r% *}")" "the object has been modified" "... with the real API's message"
is "$(curl -s "$B/c3" | jq -r .data.x)" 2 "the stale update changed nothing"

# --- namespace deletion deletes its contents
kubectl create deployment nsdel --image=nginx -n kc >/dev/null 2>&1
wait_for "nsdel's pod" 10 bash -c "[ -n \"\$('$KUBECTL' get pods -n kc -o name)\" ]"
kubectl delete namespace kc >/dev/null 2>&1
is "$(curl -s "$KUBE_URL/api/v1/pods" | jq '[.items[] | select(.metadata.namespace == "kc")] | length')" 0 \
    "deleting a namespace deleted its deployment's pods"

# --- the authorization hook's 403 has the real API's shape (the hook allows all today)
r=$($PY - <<'PYEOF'
import importlib.util, json
spec = importlib.util.spec_from_file_location("ke", "tests/kube/kube-emulator.py")
ke = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ke)
assert ke.authorize("bob", ["g"], "get", "secrets", "ns1", "s1") == (True, "")
print(json.dumps(ke.forbidden("bob", "get", "secrets", "", "ns1", "s1").status(), sort_keys=True))
PYEOF
)
is "$(jq -r '"\(.code) \(.reason) \(.details.kind) \(.details.name)"' <<<"$r")" "403 Forbidden secrets s1" \
    "authorize() allows everything; forbidden() builds a 403 Status"
is "$(jq -r .message <<<"$r")" \
    'secrets "s1" is forbidden: User "bob" cannot get resource "secrets" in API group "" in the namespace "ns1"' \
    "... with the real API's message"

# --- bad arguments: a message and a non-zero exit
out=$($PY tests/kube/kube-emulator.py --listen bogus --state-dir "$T/x" 2>&1)
rc=$?
[ $rc -ne 0 ]
ok $? "the emulator exits non-zero on a bad --listen"
like "$out" "--listen must be HOST:PORT" "... saying why"

# --- state survives an emulator restart
out=$(helm install keep "$CH" -n keep --create-namespace --wait --timeout 60s 2>&1)
ok $? "helm install keep" || diag "$out"
UID1=$(kubectl get deploy keep-demo -n keep -o jsonpath='{.metadata.uid}')
kube_restart
ok $? "the emulator restarted (same port, same state dir)"
is "$(helm list -n keep -q 2>&1)" keep "helm list still shows the release after the restart"
is "$(kubectl get deploy keep-demo -n keep -o jsonpath='{.metadata.uid}')" "$UID1" "the Deployment kept its uid"
out=$(helm upgrade keep "$CH" -n keep --wait --timeout 60s --set replicaCount=2 2>&1)
ok $? "helm upgrade --wait after the restart succeeds" || diag "$out"
is "$(kubectl get deploy keep-demo -n keep -o jsonpath='{.status.readyReplicas}')" 2 "... and is ready with 2 replicas"
# A crash (SIGKILL) loses at most the last ~50 ms: the debounced save has run by then.
kubectl create configmap crash -n keep --from-literal=k=v >/dev/null 2>&1
sleep 0.5
kube_restart --kill
ok $? "the emulator restarted after a SIGKILL"
is "$(kubectl get cm crash -n keep -o jsonpath='{.data.k}' 2>&1)" v "an object created 0.5 s before the SIGKILL survived it"

# A graceful stop (SIGTERM) while writers keep writing: every write the emulator
# acknowledged is in the state it saves (an API server that answers 201 and
# then forgets the object would make helm's release storage disagree with what
# helm was told: helm's final "deployed" update lost, the release left pending).
kubectl create namespace storm >/dev/null 2>&1
lost=0 acked=0
for round in 1 2 3; do
    /usr/bin/python3 tests/kube/write_storm.py "$KUBE_URL" "$KUBE_ADMIN_TOKEN" storm "r$round" 8 "$T/storm$round.txt" &
    storm=$!
    sleep 1.5
    kube_restart
    wait "$storm"
    have=$(kubectl get cm -n storm -o name 2>/dev/null | sed 's|^configmap/||' | sort)
    acked=$((acked + $(wc -l <"$T/storm$round.txt")))
    lost=$((lost + $(sort "$T/storm$round.txt" | comm -23 - <(echo "$have") | wc -l)))
done
diag "writes acknowledged before 3 SIGTERMs: $acked"
[ "$acked" -gt 100 ]
ok $? "the writers were writing when the emulator stopped ($acked acknowledged)"
is "$lost" 0 "every acknowledged write survived the SIGTERM and restart"

# --- 20 helm installs in parallel, 20 namespaces
t0=$(date +%s.%N)
pids=()
for i in $(seq 1 20); do
    helm install "p$i" "$CH" -n "par$i" --create-namespace --wait --timeout 90s >"$T/par$i.log" 2>&1 &
    pids+=($!)
done
fails=0
for p in "${pids[@]}"; do wait "$p" || fails=$((fails + 1)); done
diag "20 parallel installs --wait took $(echo "$(date +%s.%N) - $t0" | bc) s"
is "$fails" 0 "20 parallel helm installs --wait into 20 namespaces all succeed" || cat "$T"/par*.log | head -20 >&2
is "$(helm list -A -q 2>&1 | grep -c '^p[0-9]')" 20 "helm list -A shows the 20 releases"
is "$(kubectl get deploy -A -o json | jq '[.items[] | select(.metadata.namespace | startswith("par")) | select(.status.readyReplicas == 1)] | length')" \
    20 "all 20 Deployments are ready"
! grep -q ' 5[0-9][0-9] ' "$T/kube/kube.log"
ok $? "the emulator logged no 5xx answer"

done_testing
