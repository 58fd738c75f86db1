#!/bin/bash
# helm_sim.t: the simulated helm's contract (tests/helm-sim/README.md): every
# subcommand, the release lifecycle and statuses, helm's error texts and exit codes,
# knobs, signal handling, concurrency and the invocation log.
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh

SIM=$PWD/tests/helm-sim/helm
PY=/usr/bin/python3
TMP=$(mktemp -d "${TMPDIR:-/tmp}/helm_sim.XXXXXX")
BG_PIDS=
cleanup() {
    for p in $BG_PIDS; do kill -9 "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
export HELM_SIM_STATE=$TMP/state
unset HELM_SIM_SLEEP HELM_SIM_UNREACHABLE HELM_SIM_APP_VERSION HELM_SIM_CHART_VERSION \
      HELM_NAMESPACE HELM_MAX_HISTORY

[ -x "$SIM" ] || bail "$SIM is not executable"
[ -x "$PY" ] || skip_all "Debian's /usr/bin/python3 is missing"

# h ARGS...: run the simulator; OUT, ERR and RC hold its stdout, stderr and exit code.
h() { OUT=$("$SIM" "$@" 2>"$TMP/stderr"); RC=$?; ERR=$(cat "$TMP/stderr"); }
# pj EXPR JSON: evaluate a Python expression over the parsed JSON document d.
pj() {
    "$PY" -c 'import json,sys
d=json.loads(sys.argv[2]); r=eval(sys.argv[1])
print(json.dumps(r) if isinstance(r,(dict,list,bool)) or r is None else r)' "$1" "$2" 2>&1
}
# st NS REL: "status|description" of the release's last revision.
st() {
    "$SIM" status "$2" -n "$1" -o json 2>/dev/null |
        "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(d["info"]["status"]+"|"+d["info"]["description"])' 2>/dev/null
}
# hist NS REL: "rev:status" of every revision, space separated.
hist() {
    "$SIM" history "$2" -n "$1" -o json 2>/dev/null |
        "$PY" -c 'import json,sys; print(" ".join("%d:%s" % (r["revision"], r["status"]) for r in json.load(sys.stdin)))' 2>/dev/null
}
knob() { mkdir -p "$HELM_SIM_STATE/knobs/$1"; printf '%s\n' "$3" >"$HELM_SIM_STATE/knobs/$1/$2.json"; }
# wait_status NS REL STATUS: poll (up to 10 s) until the release has that status.
wait_status() {
    local i=0
    while [ $i -lt 200 ]; do
        case "$(st "$1" "$2")" in "$3|"*) return 0 ;; esac
        sleep 0.05; i=$((i + 1))
    done
    return 1
}
now() { "$PY" -c 'import time; print(time.time())'; }
elapsed_lt() { "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) < float(sys.argv[3]) else 1)' "$@"; }
elapsed_ge() { "$PY" -c 'import sys; sys.exit(0 if float(sys.argv[2]) - float(sys.argv[1]) >= float(sys.argv[3]) else 1)' "$@"; }

# A local chart like `helm create` makes, and values files.
mkdir -p "$TMP/chart/templates"
cat >"$TMP/chart/Chart.yaml" <<'EOF'
apiVersion: v2
name: demo
description: A demo chart
type: application
version: 1.0.0
appVersion: "2.0.0"
EOF
printf '{"replicas": 2, "image": {"tag": "v1"}, "s": "<b>&"}\n' >"$TMP/values.json"
chmod 600 "$TMP/values.json"
printf '{"image": {"pull": "Always"}, "extra": 1.0}\n' >"$TMP/values2.json"
chmod 644 "$TMP/values2.json"
V=$TMP/values.json
RFC3339NANO='^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$'
matches() { printf '%s' "$1" | grep -Eq "$2"; }

# ---------------------------------------------------------------- version, CLI errors
h version --short
is "$RC:$OUT" "0:v3.17.3-sim" "version --short prints v3.17.3-sim"
h version
like "$OUT" 'version.BuildInfo{Version:"v3.17.3-sim"' "version prints a BuildInfo line"
h foo
is "$RC" 1 "unknown command exits 1"
is "$ERR" "$(printf 'Error: unknown command "foo" for "helm"\nRun '"'"'helm --help'"'"' for usage.')" "unknown command text"
h install r1 "$TMP/chart" --foo
is "$RC|$ERR" "1|Error: unknown flag: --foo" "unknown long flag"
h status r1 -x
is "$RC|$ERR" "1|Error: unknown shorthand flag: 'x' in -x" "unknown shorthand flag"
h status r1 --timeout 5s
is "$RC|$ERR" "1|Error: unknown flag: --timeout" "a flag of another subcommand is unknown"
h uninstall r1 --keep-history
is "$RC|$ERR" "1|Error: unknown flag: --keep-history" "flags outside the worker's contract are refused"
h status
is "$RC|$ERR" "$(printf '1|Error: "helm status" requires 1 argument\n\nUsage:  helm status RELEASE_NAME [flags]')" "status without a release"
h history a b
is "$RC|$ERR" "$(printf '1|Error: "helm history" requires 1 argument\n\nUsage:  helm history RELEASE_NAME [flags]')" "history with two releases"
h upgrade r1
is "$RC|$ERR" "$(printf '1|Error: "helm upgrade" requires 2 arguments\n\nUsage:  helm upgrade [RELEASE] [CHART] [flags]')" "upgrade with one argument"
h install
is "$RC|$ERR" "$(printf '1|Error: "helm install" requires at least 1 argument\n\nUsage:  helm install [NAME] [CHART] [flags]')" "install without arguments"
h install r1
is "$RC|$ERR" "1|Error: INSTALLATION FAILED: must either provide a name or specify --generate-name" "install with only a name"
h install r1 a/b c
is "$RC|$ERR" "1|Error: INSTALLATION FAILED: expected at most two arguments, unexpected arguments: c" "install with three arguments"
h rollback
is "$RC|$ERR" "$(printf '1|Error: "helm rollback" requires at least 1 argument\n\nUsage:  helm rollback <RELEASE> [REVISION] [flags]')" "rollback without arguments"
h list extra
is "$RC|$ERR" "$(printf '1|Error: "helm list" accepts no arguments\n\nUsage:  helm list [flags]')" "list takes no arguments"
h install r1 a/b --timeout bogus
is "$RC|$ERR" '1|Error: invalid argument "bogus" for "--timeout" flag: time: invalid duration "bogus"' "bad duration"
h install r1 a/b --timeout 10
is "$ERR" 'Error: invalid argument "10" for "--timeout" flag: time: missing unit in duration "10"' "duration without unit"
h install r1 a/b --timeout=1d
is "$ERR" 'Error: invalid argument "1d" for "--timeout" flag: time: unknown unit "d" in duration "1d"' "duration with unknown unit"
h install r1 a/b -o xml
is "$ERR" 'Error: invalid argument "xml" for "-o, --output" flag: invalid format type' "bad output format"
h history r1 --max x
is "$ERR" 'Error: invalid argument "x" for "--max" flag: strconv.ParseInt: parsing "x": invalid syntax' "bad --max"
h install r1 a/b --wait=maybe
is "$ERR" 'Error: invalid argument "maybe" for "--wait" flag: strconv.ParseBool: parsing "maybe": invalid syntax' "bad boolean"
h status r1 -n
is "$ERR" "Error: flag needs an argument: 'n' in -n" "short flag without value"
h status r1 --output
is "$ERR" "Error: flag needs an argument: --output" "long flag without value"
h rollback r1 x
is "$RC|$ERR" '1|Error: could not convert revision to a number: strconv.Atoi: parsing "x": invalid syntax' "non-numeric revision"
h install r1 "$TMP/chart" ---x
is "$ERR" "Error: bad flag syntax: ---x" "bad flag syntax"

# ---------------------------------------------------------------- install
h install app "$TMP/chart" --namespace ns1 --create-namespace --version 1.0.0 --values "$V" \
    --timeout 600s --output json
is "$RC" 0 "install exits 0"
is "$ERR" "" "install prints nothing on stderr"
REL=$OUT
is "$(pj 'list(d)' "$REL")" '["name", "info", "chart", "config", "manifest", "version", "namespace"]' "release JSON has helm's fields in helm's order"
is "$(pj 'list(d["info"])' "$REL")" '["first_deployed", "last_deployed", "deleted", "description", "status", "notes"]' "info fields in helm's order"
is "$(pj 'd["name"], d["namespace"], d["version"]' "$REL")" "('app', 'ns1', 1)" "name, namespace, revision 1"
is "$(pj 'd["info"]["status"] + "|" + d["info"]["description"]' "$REL")" "deployed|Install complete" "deployed, Install complete"
is "$(pj 'd["info"]["deleted"]' "$REL")" "" 'deleted is "" as helm prints a zero time'
matches "$(pj 'd["info"]["first_deployed"]' "$REL")" "$RFC3339NANO"; ok $? "first_deployed is RFC3339Nano"
matches "$(pj 'd["info"]["last_deployed"]' "$REL")" "$RFC3339NANO"; ok $? "last_deployed is RFC3339Nano"
is "$(pj 'd["chart"]["metadata"]' "$REL")" '{"name": "demo", "version": "1.0.0", "description": "A demo chart", "apiVersion": "v2", "appVersion": "2.0.0", "type": "application"}' "chart metadata read from the local Chart.yaml"
is "$(pj 'd["config"]' "$REL")" '{"image": {"tag": "v1"}, "replicas": 2, "s": "<b>&"}' "config holds the values, keys sorted"
like "$OUT" '"s":"\u003cb\u003e\u0026"' "JSON is HTML-escaped like Go's encoder"
is "$(printf '%s\n' "$OUT" | wc -l)" 1 "JSON is one compact line"
h status app --namespace ns1 --output json
is "$RC" 0 "status exits 0"
is "$OUT" "$REL" "status -o json prints the same release as install"
h install app "$TMP/chart" -n ns1 --version 1.0.0 -o json
is "$RC|$ERR" "1|Error: INSTALLATION FAILED: cannot re-use a name that is still in use" "install of a live name"
is "$(hist ns1 app)" "1:deployed" "the failed re-install changed nothing"
h install app "$TMP/chart" -n ns2 --version 1.0.0 -o json
is "$RC" 0 "the same name installs in another namespace"
h install Bad_Name a/b -n ns1
is "$ERR" 'Error: INSTALLATION FAILED: release name "Bad_Name": invalid release name, must match regex ^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ and the length must not be longer than 53' "invalid release name on install"
h install "$(printf 'a%.0s' $(seq 54))" a/b -n ns1
like "$ERR" "the length must not be longer than 53" "release names are limited to 53 characters"

# Remote chart references: name from the last path component, version from --version.
HELM_SIM_APP_VERSION=9.1 h install remote1 myrepo/redis -n ns1 --version 17.3.2 -o json
is "$(pj 'd["chart"]["metadata"]' "$OUT")" '{"name": "redis", "version": "17.3.2", "apiVersion": "v2", "appVersion": "9.1"}' "repo/chart with HELM_SIM_APP_VERSION"
h install remote2 oci://registry.example/charts/nginx -n ns1 --version 1.2.3 -o json
is "$(pj 'd["chart"]["metadata"]' "$OUT")" '{"name": "nginx", "version": "1.2.3", "apiVersion": "v2"}' "oci:// reference; no appVersion"
h install remote3 https://charts.example/dl/mysql-9.4.1.tgz -n ns1 -o json
is "$(pj 'd["chart"]["metadata"]["name"] + " " + d["chart"]["metadata"]["version"]' "$OUT")" "mysql 9.4.1" "URL to a packaged chart"
h install remote4 nginx -n ns1
is "$ERR" "Error: INSTALLATION FAILED: non-absolute URLs should be in form of repo_name/path_to_chart, got: nginx" "bare chart name is refused like helm"
h install remote4 "$TMP/nonexistent" -n ns1
is "$ERR" "Error: INSTALLATION FAILED: path \"$TMP/nonexistent\" not found" "missing local chart path"
mkdir -p "$TMP/nochart"
h install remote4 "$TMP/nochart" -n ns1
is "$ERR" "Error: INSTALLATION FAILED: Chart.yaml file is missing" "directory without Chart.yaml"
(cd "$TMP" && tar czf demo-1.0.0.tgz -C "$TMP" chart)
h install remote5 "$TMP/demo-1.0.0.tgz" -n ns1 -o json
is "$(pj 'd["chart"]["metadata"]["name"] + " " + d["chart"]["metadata"]["appVersion"]' "$OUT")" "demo 2.0.0" "packaged local chart read from its Chart.yaml"
printf '{"cat": {"1.0.0": {"appVersion": "3.3"}}}\n' >"$HELM_SIM_STATE/charts.json"
h install remote6 repo/cat -n ns1 --version 1.0.0 -o json
is "$(pj 'd["chart"]["metadata"]["appVersion"]' "$OUT")" "3.3" "chart catalog supplies appVersion"
h install remote7 repo/cat -n ns1 --version 9.9.9
is "$RC|$ERR" "1|Error: INSTALLATION FAILED: chart \"cat\" matching 9.9.9 not found in repo index. (try 'helm repo update'): no chart version found for cat-9.9.9" "chart catalog refuses unknown versions"
rm -f "$HELM_SIM_STATE/charts.json"

# Flag forms: short, --flag=value, attached short values, flags before the subcommand, --.
h install forms1 "$TMP/chart" -n ns3 --create-namespace --version=1.0.0 --values="$V" --timeout=1m30s \
    --wait --wait-for-jobs --description="first one" -o json
is "$RC|$(pj 'd["namespace"] + "|" + d["info"]["description"]' "$OUT")" "0|ns3|first one" "short/--flag=value forms and --description"
h -n ns3 install forms2 -o=json -- "$TMP/chart"
is "$RC|$(pj 'd["namespace"]' "$OUT")" "0|ns3" "global -n before the subcommand, -o=json and --"
h install forms3 "$TMP/chart" -nns3 -f "$V" -f "$TMP/values2.json" -ojson
is "$(pj 'd["namespace"]' "$OUT")" "ns3" "attached short value -nns3"
is "$(pj 'd["config"]' "$OUT")" '{"extra": 1, "image": {"pull": "Always", "tag": "v1"}, "replicas": 2, "s": "<b>&"}' "repeated -f values deep-merge in order"
h install forms4 "$TMP/chart"
is "$RC|$(st default forms4)" "0|deployed|Install complete" "without -n the namespace is default"
HELM_NAMESPACE=ns4 h install forms5 "$TMP/chart"
is "$(st ns4 forms5)" "deployed|Install complete" "HELM_NAMESPACE sets the default namespace"
h install forms6 "$TMP/chart" -n ns3
like "$OUT" "STATUS: deployed" "table output by default"
like "$OUT" "REVISION: 1" "table output shows the revision"
h status forms6 -n ns3 -o yaml
like "$OUT" "status: deployed" "yaml output"

# Values files.
h install v1 "$TMP/chart" -n ns1 --values "$TMP/missing.json"
is "$RC|$ERR" "1|Error: INSTALLATION FAILED: open $TMP/missing.json: no such file or directory" "missing values file (install)"
h upgrade app "$TMP/chart" -n ns1 --values "$TMP/missing.json"
is "$RC|$ERR" "1|Error: open $TMP/missing.json: no such file or directory" "missing values file (upgrade: not wrapped, as helm)"
printf '[1,2]\n' >"$TMP/array.json"
h install v1 "$TMP/chart" -n ns1 --values "$TMP/array.json"
is "$ERR" "Error: INSTALLATION FAILED: failed to parse $TMP/array.json: error unmarshaling JSON: while decoding JSON: json: cannot unmarshal array into Go value of type map[string]interface {}" "values file not an object"
printf 'a: [\n' >"$TMP/bad.yaml"
h install v1 "$TMP/chart" -n ns1 --values "$TMP/bad.yaml"
like "$ERR" "Error: INSTALLATION FAILED: failed to parse $TMP/bad.yaml: error converting YAML to JSON:" "values file not JSON"
: >"$TMP/empty.json"
h install v1 "$TMP/chart" -n ns1 --values "$TMP/empty.json" -o json
is "$RC|$(pj '"config" in d' "$OUT")" "0|false" "empty values: config omitted as helm omits an empty map"
h status nope -n ns1
is "$(hist ns1 v1)" "1:deployed" "failed argument checks left no state"

# ---------------------------------------------------------------- upgrade, history, list
h upgrade app "$TMP/chart" --namespace ns1 --version 1.0.0 --values "$TMP/values2.json" --timeout 600s --output json
is "$RC" 0 "upgrade exits 0"
is "$(pj 'd["version"], d["info"]["status"], d["info"]["description"]' "$OUT")" "(2, 'deployed', 'Upgrade complete')" "upgrade: revision 2 deployed, Upgrade complete"
is "$(pj 'd["info"]["first_deployed"]' "$OUT")" "$(pj 'd["info"]["first_deployed"]' "$REL")" "upgrade keeps first_deployed"
is "$(pj 'd["config"]' "$OUT")" '{"extra": 1, "image": {"pull": "Always"}}' "upgrade stores the new values only"
h upgrade app repo/demo -n ns1 --version 1.1.0 --values "$V" --timeout 600s --wait --wait-for-jobs --description "bump it" -o json
is "$(pj 'd["version"], d["info"]["description"], d["chart"]["metadata"]["version"]' "$OUT")" "(3, 'bump it', '1.1.0')" "upgrade --description"
h upgrade app repo/demo -n ns1 --version 1.1.0
like "$OUT" 'Release "app" has been upgraded. Happy Helming!' "table upgrade says Happy Helming"
is "$(hist ns1 app)" "1:superseded 2:superseded 3:superseded 4:deployed" "each upgrade supersedes the previous deployed revision"
h history app --namespace ns1 --max 256 --output json
is "$RC" 0 "history exits 0"
is "$(pj 'list(d[0])' "$OUT")" '["revision", "updated", "status", "chart", "app_version", "description"]' "history rows have helm's fields"
is "$(pj '[(r["revision"], r["chart"], r["app_version"], r["description"]) for r in d]' "$OUT")" \
    '[[1, "demo-1.0.0", "2.0.0", "Install complete"], [2, "demo-1.0.0", "2.0.0", "Upgrade complete"], [3, "demo-1.1.0", "", "bump it"], [4, "demo-1.1.0", "", "Upgrade complete"]]' \
    "history rows: int revision, NAME-VERSION chart, app_version, description"
matches "$(pj 'd[0]["updated"]' "$OUT")" "$RFC3339NANO"; ok $? "history updated is RFC3339Nano"
h history app -n ns1 --max 2 -o json
is "$(pj '[r["revision"] for r in d]' "$OUT")" "[3, 4]" "history --max keeps the newest revisions, oldest first"
h history app -n ns1
like "$OUT" "REVISION	UPDATED" "history table header"

h list --namespace ns1 --all --output json
is "$RC" 0 "list exits 0"
is "$(pj 'list(d[0])' "$OUT")" '["name", "namespace", "revision", "updated", "status", "chart", "app_version"]' "list rows have helm's fields"
is "$(pj '[(r["name"], r["revision"], r["status"]) for r in d]' "$OUT")" \
    '[["app", "4", "deployed"], ["remote1", "1", "deployed"], ["remote2", "1", "deployed"], ["remote3", "1", "deployed"], ["remote5", "1", "deployed"], ["remote6", "1", "deployed"], ["v1", "1", "deployed"]]' \
    "list: latest revision per release, revision as a string, sorted by name"
matches "$(pj 'd[0]["updated"]' "$OUT")" '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)? [+-][0-9]{4} [A-Za-z0-9+-]+$'; ok $? "list updated is Go's time.String()"
h list -n empty-ns -a -o json
is "$RC|$OUT" "0|[]" "list of an empty namespace is []"
h ls -n ns1 -a
like "$OUT" "NAMESPACE" "ls alias and table output"
like "$OUT" "demo-1.1.0" "table list shows NAME-VERSION"

h upgrade ghost a/b -n ns1 --version 1.0.0 -o json
is "$RC|$ERR" '1|Error: UPGRADE FAILED: "ghost" has no deployed releases' "upgrade of a missing release"
h upgrade Bad a/b -n ns1
is "$ERR" "Error: UPGRADE FAILED: release name is invalid: Bad" "upgrade with an invalid name"

# ---------------------------------------------------------------- rollback
h rollback app 2 --namespace ns1 --timeout 300s --wait --wait-for-jobs
is "$RC|$OUT" "0|Rollback was a success! Happy Helming!" "rollback to a revision"
is "$(st ns1 app)" "deployed|Rollback to 2" "rollback description"
is "$(hist ns1 app)" "1:superseded 2:superseded 3:superseded 4:superseded 5:deployed" "rollback creates a new deployed revision"
h status app -n ns1 -o json
is "$(pj '[d["config"], d["chart"]["metadata"]["version"]]' "$OUT")" '[{"extra": 1, "image": {"pull": "Always"}}, "1.0.0"]' "rollback copies the target's chart and values"
h rollback app -n ns1 --timeout 300s
is "$RC|$(st ns1 app)" "0|deployed|Rollback to 4" "rollback without a revision targets current-1 (helm's rule)"
h rollback app 99 -n ns1
is "$RC|$ERR" "1|Error: release has no 99 version" "rollback to a missing revision"
h rollback ghost -n ns1
is "$RC|$ERR" "1|Error: release: not found" "rollback of a missing release"
h rollback Bad -n ns1
is "$ERR" "Error: prepareRollback: Release name is invalid: Bad" "rollback with an invalid name"

# ---------------------------------------------------------------- status/history errors
h status ghost -n ns1 -o json
is "$RC|$OUT|$ERR" "1||Error: release: not found" "status of a missing release"
h history ghost -n ns1 -o json
is "$RC|$ERR" "1|Error: release: not found" "history of a missing release"
h status Bad -n ns1
is "$ERR" "Error: releaseContent: Release name is invalid: Bad" "status with an invalid name"
h history Bad -n ns1
is "$ERR" "Error: release name is invalid: Bad" "history with an invalid name"

# ---------------------------------------------------------------- uninstall
h uninstall app --namespace ns1 --timeout 300s --description "tenant asked" --wait
is "$RC|$OUT" '0|release "app" uninstalled' "uninstall"
h status app -n ns1 -o json
is "$RC|$ERR" "1|Error: release: not found" "uninstalled release is purged"
h uninstall app -n ns1
is "$RC|$ERR" "1|Error: uninstall: Release not loaded: app: release: not found" "uninstall of a missing release"
h uninstall Bad -n ns1
is "$ERR" "Error: uninstall: Release name is invalid: Bad" "uninstall with an invalid name"
h install app "$TMP/chart" -n ns1 -o json
is "$RC|$(pj 'd["version"]' "$OUT")" "0|1" "a reinstall after uninstall starts again at revision 1"

# ---------------------------------------------------------------- knobs: fail
knob ns5 f1 '{"install": {"fail": "image pull failed"}}'
h install f1 "$TMP/chart" -n ns5 -o json
is "$RC|$OUT|$ERR" "1||Error: INSTALLATION FAILED: image pull failed" "install fail knob"
is "$(st ns5 f1)" 'failed|Release "f1" failed: image pull failed' "failed install revision and helm's description"
h list -n ns5 -o json
is "$(pj '[r["status"] for r in d]' "$OUT")" '["failed"]' "list without --all shows failed releases"
h install f1 "$TMP/chart" -n ns5
is "$ERR" "Error: INSTALLATION FAILED: cannot re-use a name that is still in use" "install over a failed release is refused"
knob ns5 f1 '{}'
h upgrade f1 "$TMP/chart" -n ns5 -o json
is "$RC|$(hist ns5 f1)" "0|1:superseded 2:deployed" "upgrade of a failed-only release proceeds and supersedes it (helm 3.17)"
knob ns5 f1 '{"upgrade": {"fail": "hook failed"}}'
h upgrade f1 "$TMP/chart" -n ns5 -o json
is "$RC|$ERR" "1|Error: UPGRADE FAILED: hook failed" "upgrade fail knob"
is "$(hist ns5 f1)" "1:superseded 2:deployed 3:failed" "failed upgrade leaves the deployed revision deployed"
is "$(st ns5 f1)" 'failed|Upgrade "f1" failed: hook failed' "failed upgrade description"
knob ns5 f1 '{"any": {"fail": "x"}, "upgrade": {}}'
h upgrade f1 "$TMP/chart" -n ns5 -o json
is "$RC|$(hist ns5 f1)" "1|1:superseded 2:deployed 3:failed 4:failed" "an 'any' knob applies when the operation's section does not override it"
knob ns5 f1 '{"rollback": {"fail": "apply failed"}}'
h rollback f1 2 -n ns5
is "$RC|$ERR" "1|Error: apply failed" "rollback fail knob (helm does not prefix rollback errors)"
is "$(hist ns5 f1)" "1:superseded 2:deployed 3:failed 4:superseded 5:failed" "failed rollback supersedes the previous last revision"
is "$(st ns5 f1)" 'failed|Rollback "f1" failed: apply failed' "failed rollback description"
knob ns5 f1 '{"uninstall": {"fail": "pre-delete hook failed"}}'
h uninstall f1 -n ns5
is "$RC|$ERR" "1|Error: pre-delete hook failed" "uninstall fail knob"
is "$(hist ns5 f1)" "1:superseded 2:deployed 3:failed 4:superseded 5:failed" "failed uninstall leaves the release as it was"
knob ns5 f1 '{"status": {"fail": "etcdserver: request timed out"}}'
h status f1 -n ns5
is "$RC|$ERR" "1|Error: etcdserver: request timed out" "status fail knob"
knob ns5 f1 '{"any": {"unreachable": true}, "history": {"unreachable": true}}'
h upgrade f1 "$TMP/chart" -n ns5
like "$ERR" "Error: UPGRADE FAILED: Kubernetes cluster unreachable: " "unreachable knob (upgrade)"
h history f1 -n ns5
like "$RC|$ERR" "1|Error: Kubernetes cluster unreachable: " "unreachable knob (history)"
knob ns5 f1 '{}'
HELM_SIM_UNREACHABLE=1 h install u1 a/b -n ns5
like "$RC|$ERR" "1|Error: INSTALLATION FAILED: Kubernetes cluster unreachable: " "HELM_SIM_UNREACHABLE"
HELM_SIM_UNREACHABLE=1 h version --short
is "$RC" 0 "version works without a cluster"
h status u1 -n ns5
is "$ERR" "Error: release: not found" "unreachable install left no state"
knob ns5 f1 'not json'
h status f1 -n ns5
like "$RC|$ERR" "1|Error: helm-sim: invalid knob file" "a broken knob file is reported"
knob ns5 f1 '{}'

# ---------------------------------------------------------------- knobs: sleep, timeouts
knob ns6 s1 '{"install": {"sleep": 1.5}}'
T0=$(now)
"$SIM" install s1 "$TMP/chart" -n ns6 -o json >"$TMP/s1.out" 2>&1 &
P=$!; BG_PIDS="$BG_PIDS $P"
wait_status ns6 s1 pending-install; ok $? "pending-install is visible while the install runs"
is "$(st ns6 s1)" "pending-install|Initial install underway" "pending-install description"
h list -n ns6 -o json
is "$OUT" "[]" "list without --all hides pending releases"
h list -n ns6 --all -o json
is "$(pj '[r["status"] for r in d]' "$OUT")" '["pending-install"]' "list --all shows pending releases"
h upgrade s1 "$TMP/chart" -n ns6
is "$RC|$ERR" "1|Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress" "upgrade while pending"
h install s1 "$TMP/chart" -n ns6
is "$RC|$ERR" "1|Error: INSTALLATION FAILED: cannot re-use a name that is still in use" "install while pending"
wait "$P"; RC=$?
T1=$(now)
is "$RC" 0 "slept install succeeds"
elapsed_ge "$T0" "$T1" 1.5; ok $? "install took at least the knob's sleep"
is "$(st ns6 s1)" "deployed|Install complete" "deployed after the sleep"

knob ns6 s2 '{"install": {"sleep": 30}, "upgrade": {"sleep": 30}, "rollback": {"sleep": 30}, "uninstall": {"sleep": 30}}'
T0=$(now); h install s2 "$TMP/chart" -n ns6 --timeout 1s -o json; T1=$(now)
is "$RC|$OUT|$ERR" "1||Error: INSTALLATION FAILED: context deadline exceeded" "install past --timeout"
elapsed_lt "$T0" "$T1" 5; ok $? "the deadline ends the install early"
is "$(st ns6 s2)" 'failed|Release "s2" failed: context deadline exceeded' "timed-out install is failed with helm's description"
h upgrade s2 "$TMP/chart" -n ns6 --timeout 500ms -o json
is "$RC|$ERR" "1|Error: UPGRADE FAILED: context deadline exceeded" "upgrade past --timeout"
is "$(st ns6 s2)" 'failed|Upgrade "s2" failed: context deadline exceeded' "timed-out upgrade description"
h rollback s2 1 -n ns6 --timeout 0.5s
is "$RC|$ERR" "1|Error: release s2 failed: context deadline exceeded" "rollback past --timeout"
is "$(st ns6 s2)" 'failed|Release "s2" failed: context deadline exceeded' "timed-out rollback description"
is "$(hist ns6 s2)" "1:failed 2:failed 3:failed" "a timed-out rollback does not supersede"
h uninstall s2 -n ns6 --timeout 0.5s
is "$RC|$ERR" "1|Error: uninstallation completed with 1 error(s): context deadline exceeded" "uninstall past --timeout"
h status s2 -n ns6
is "$ERR" "Error: release: not found" "helm purges the release even when uninstall had errors"

HELM_SIM_SLEEP=0.6 h install s3 "$TMP/chart" -n ns6 --timeout 0.2s
is "$RC|$ERR" "1|Error: INSTALLATION FAILED: context deadline exceeded" "HELM_SIM_SLEEP applies to install"
T0=$(now); HELM_SIM_SLEEP=0.5 h status s3 -n ns6; T1=$(now)
elapsed_lt "$T0" "$T1" 0.45; ok $? "HELM_SIM_SLEEP does not slow read-only subcommands"

# ---------------------------------------------------------------- knobs: crash, hang, signals
knob ns7 c1 '{"install": {"crash": true}}'
h install c1 "$TMP/chart" -n ns7 -o json
is "$RC" 2 "crash knob exits 2"
is "$(st ns7 c1)" "pending-install|Initial install underway" "a crash leaves pending-install"
knob ns7 c1 '{}'
h upgrade c1 "$TMP/chart" -n ns7
is "$ERR" "Error: UPGRADE FAILED: another operation (install/upgrade/rollback) is in progress" "stale pending-install blocks upgrade"
h rollback c1 -n ns7
is "$ERR" "Error: release has no 0 version" "rollback of a lone pending revision"
h uninstall c1 -n ns7
is "$RC|$OUT" '0|release "c1" uninstalled' "uninstall clears a stale pending-install (no pending check in helm)"

# SIGTERM during install: helm cancels, marks failed, exits 1.
knob ns7 t1 '{"install": {"hang": true}, "upgrade": {"hang": true}}'
"$SIM" install t1 "$TMP/chart" -n ns7 --timeout 1s -o json >"$TMP/t1.out" 2>"$TMP/t1.err" &
P=$!; BG_PIDS="$BG_PIDS $P"
wait_status ns7 t1 pending-install; ok $? "hang keeps pending-install (beyond --timeout 1s)"
sleep 1.2
is "$(st ns7 t1)" "pending-install|Initial install underway" "hang ignores --timeout"
kill -TERM "$P"; wait "$P"; RC=$?
is "$RC" 1 "SIGTERM: install exits 1"
is "$(cat "$TMP/t1.out")" "Release t1 has been cancelled." "SIGTERM: helm's cancellation line on stdout"
is "$(cat "$TMP/t1.err")" "Error: INSTALLATION FAILED: context canceled" "SIGTERM: install error text"
is "$(st ns7 t1)" 'failed|Release "t1" failed: context canceled' "SIGTERM: install revision failed"
"$SIM" upgrade t1 "$TMP/chart" -n ns7 -o json >"$TMP/t1.out" 2>"$TMP/t1.err" &
P=$!; BG_PIDS="$BG_PIDS $P"
wait_status ns7 t1 pending-upgrade; ok $? "hanging upgrade is pending-upgrade"
kill -INT "$P"; wait "$P"; RC=$?
is "$RC|$(cat "$TMP/t1.err")" "1|Error: UPGRADE FAILED: context canceled" "SIGINT: upgrade fails with context canceled"
is "$(st ns7 t1)" 'failed|Upgrade "t1" failed: context canceled' "SIGINT: upgrade revision failed"
# SIGKILL leaves pending-upgrade.
"$SIM" upgrade t1 "$TMP/chart" -n ns7 -o json >/dev/null 2>&1 &
P=$!; BG_PIDS="$BG_PIDS $P"
wait_status ns7 t1 pending-upgrade
kill -KILL "$P"; wait "$P" 2>/dev/null; RC=$?
is "$RC|$(st ns7 t1)" "137|pending-upgrade|Preparing upgrade" "SIGKILL leaves pending-upgrade"
# Rollback has no signal handler in helm: it dies by SIGTERM, pending-rollback stays.
knob ns7 t1 '{"rollback": {"hang": true}}'
"$SIM" rollback t1 1 -n ns7 >/dev/null 2>&1 &
P=$!; BG_PIDS="$BG_PIDS $P"
wait_status ns7 t1 pending-rollback; ok $? "hanging rollback is pending-rollback"
kill -TERM "$P"; wait "$P"; RC=$?
is "$RC|$(st ns7 t1)" "143|pending-rollback|Rollback to 1" "SIGTERM kills rollback; pending-rollback stays"
knob ns7 t1 '{"uninstall": {"hang": true}}'
"$SIM" uninstall t1 -n ns7 >/dev/null 2>&1 &
P=$!; BG_PIDS="$BG_PIDS $P"
wait_status ns7 t1 uninstalling; ok $? "hanging uninstall is uninstalling"
h status t1 -n ns7 -o json
matches "$(pj 'd["info"]["deleted"]' "$OUT")" "$RFC3339NANO"; ok $? "uninstalling release has a deleted time"
kill -TERM "$P"; wait "$P"; RC=$?
is "$RC|$(st ns7 t1)" "143|uninstalling|Deletion in progress (or silently failed)" "SIGTERM kills uninstall; uninstalling stays"
knob ns7 t1 '{}'
h upgrade t1 "$TMP/chart" -n ns7
is "$RC|$ERR" '1|Error: UPGRADE FAILED: "t1" has no deployed releases' "upgrade of an uninstalling release: no deployed releases"
h install t1 "$TMP/chart" -n ns7
is "$ERR" "Error: INSTALLATION FAILED: cannot re-use a name that is still in use" "install over an uninstalling release"
# ignore_term: only SIGKILL ends it.
knob ns7 t2 '{"install": {"hang": true, "ignore_term": true}}'
"$SIM" install t2 "$TMP/chart" -n ns7 >/dev/null 2>&1 &
P=$!; BG_PIDS="$BG_PIDS $P"
wait_status ns7 t2 pending-install
kill -TERM "$P"; sleep 0.5
kill -0 "$P" 2>/dev/null; ok $? "ignore_term: SIGTERM does not stop it"
kill -KILL "$P"; wait "$P" 2>/dev/null
is "$(st ns7 t2)" "pending-install|Initial install underway" "ignore_term + SIGKILL leaves pending-install"

# ---------------------------------------------------------------- history pruning
h install p1 "$TMP/chart" -n ns8
for i in 1 2 3 4 5; do HELM_MAX_HISTORY=3 "$SIM" upgrade p1 "$TMP/chart" -n ns8 >/dev/null 2>&1; done
is "$(hist ns8 p1)" "4:superseded 5:superseded 6:deployed" "HELM_MAX_HISTORY=3 keeps the last 3 revisions"
HELM_MAX_HISTORY=3 h rollback p1 1 -n ns8
is "$ERR" "Error: release has no 1 version" "pruned revisions cannot be rolled back to"
for i in 1 2 3 4 5 6 7 8 9 10; do "$SIM" upgrade p1 "$TMP/chart" -n ns8 >/dev/null 2>&1; done
h history p1 -n ns8 -o json
is "$(pj 'len(d), d[0]["revision"], d[-1]["revision"]' "$OUT")" "(10, 7, 16)" "default history max is 10, like helm's --history-max"

# ---------------------------------------------------------------- concurrency
# Different releases run in parallel: 6 installs sleeping 1 s each finish in well under 6 s.
for i in 1 2 3 4 5 6; do knob ns9 par$i '{"install": {"sleep": 1}}'; done
T0=$(now)
PIDS=
for i in 1 2 3 4 5 6; do "$SIM" install par$i "$TMP/chart" -n ns9 >/dev/null 2>&1 & PIDS="$PIDS $!"; done
FAILS=0
for p in $PIDS; do wait "$p" || FAILS=$((FAILS + 1)); done
T1=$(now)
is "$FAILS" 0 "parallel installs of different releases all succeed"
elapsed_lt "$T0" "$T1" 4; ok $? "installs of different releases ran concurrently"
# Same release: 8 concurrent upgrades; each either succeeds or meets the pending one.
knob ns9 same '{"upgrade": {"sleep": 0.3}}'
h install same "$TMP/chart" -n ns9
PIDS=
for i in 1 2 3 4 5 6 7 8; do
    ( "$SIM" upgrade same "$TMP/chart" -n ns9 >/dev/null 2>"$TMP/same.$i.err"; echo $? >"$TMP/same.$i.rc" ) &
    PIDS="$PIDS $!"
done
for p in $PIDS; do wait "$p"; done
OKS=0; BUSY=0
for i in 1 2 3 4 5 6 7 8; do
    [ "$(cat "$TMP/same.$i.rc")" = 0 ] && OKS=$((OKS + 1))
    grep -q "another operation (install/upgrade/rollback) is in progress" "$TMP/same.$i.err" && BUSY=$((BUSY + 1))
done
is "$((OKS + BUSY))" 8 "concurrent upgrades of one release: each succeeded or saw the pending one"
[ "$OKS" -ge 1 ]; ok $? "at least one concurrent upgrade succeeded ($OKS)"
h history same -n ns9 -o json
is "$(pj '[r["revision"] for r in d] == list(range(1, len(d)+1)) and len(d) == 1 + '"$OKS"' and [r["status"] for r in d].count("deployed") == 1' "$OUT")" \
    "true" "revisions are contiguous, one per successful upgrade, exactly one deployed"

# ---------------------------------------------------------------- invocation log
LOG=$HELM_SIM_STATE/invocations.log
"$PY" - "$LOG" >"$TMP/logcheck" 2>&1 <<'EOF'
import json, sys
bad = 0
recs = []
for n, line in enumerate(open(sys.argv[1], encoding="utf-8"), 1):
    try:
        recs.append(json.loads(line))
    except ValueError:
        bad += 1
        print("bad line %d: %r" % (n, line[:200]))
print("bad", bad)
starts = {r["pid"]: r for r in recs if r["event"] == "start"}
ends = {r["pid"]: r for r in recs if r["event"] == "end"}
need = {"event", "pid", "ppid", "ts", "argv", "subcommand", "namespace", "release"}
print("fields", all(need <= set(r) for r in recs))
print("ends_have_exit", all("exit" in r for r in ends.values()))
print("ends_match_starts", all(p in starts and starts[p]["ts"] <= e["ts"] for p, e in ends.items()))
# Per release, state changes serialize: the successful upgrades of "same" produced
# increasing revisions in the order they finished.
same = sorted((e["ts"], e["revision"]) for p, e in ends.items()
              if e["release"] == "same" and e["subcommand"] == "upgrade" and e["exit"] == 0)
print("same_serial", len(same) >= 1 and all(a[1] < b[1] for a, b in zip(same, same[1:])))
EOF
LC=$(cat "$TMP/logcheck")
like "$LC" "bad 0" "every invocation log line is one JSON object (no interleaving)"
like "$LC" "fields True" "log lines carry event, pid, ppid, ts, argv, subcommand, namespace, release"
like "$LC" "ends_have_exit True" "end lines carry the exit code"
like "$LC" "ends_match_starts True" "every end follows its start"
like "$LC" "same_serial True" "successful upgrades of one release logged increasing revisions in end order"
: >"$LOG"
h install logged "$TMP/chart" -n nslog --version 1.0.0 --values "$V" -f "$TMP/values2.json" -o json
h uninstall logged -n nslog
h status logged -n nslog
h list -n nslog --all -o json
"$PY" - "$LOG" >"$TMP/logcheck" 2>&1 <<'EOF'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
for r in recs:
    print(r["event"], r["subcommand"], r["namespace"], r["release"], r.get("exit"), r.get("values_mode"),
          r.get("status"), r.get("revision"), json.dumps(r["argv"][:2]), r.get("error"))
EOF
is "$(cat "$TMP/logcheck")" "$(printf '%s\n' \
    'start install nslog logged None 0600 None None ["install", "logged"] None' \
    'end install nslog logged 0 0600 deployed 1 ["install", "logged"] None' \
    'start uninstall nslog logged None None None None ["uninstall", "logged"] None' \
    'end uninstall nslog logged 0 None uninstalled None ["uninstall", "logged"] None' \
    'start status nslog logged None None None None ["status", "logged"] None' \
    'end status nslog logged 1 None None None ["status", "logged"] release: not found' \
    'start list nslog None None None None None ["list", "-n"] None' \
    'end list nslog None 0 None None None ["list", "-n"] None')" \
    "start/end lines with subcommand, namespace, release, exit, values_mode, status, revision, error"
: >"$LOG"
chmod 644 "$V"
h install logged2 "$TMP/chart" -n nslog -f "$V"
chmod 600 "$V"
like "$(cat "$LOG")" '"values_mode":"0644"' "values_mode reports the file's permission bits"
: >"$LOG"
knob nslog c2 '{"install": {"crash": true}}'
h install c2 "$TMP/chart" -n nslog
like "$(tail -1 "$LOG")" '"exit":2' "crash logs exit 2"
like "$(tail -1 "$LOG")" '"crash":true' "crash is marked in the log"
knob nslog k2 '{"rollback": {"hang": true}}'
h install k2 "$TMP/chart" -n nslog
"$SIM" rollback k2 1 -n nslog >/dev/null 2>&1 &
P=$!; BG_PIDS="$BG_PIDS $P"
wait_status nslog k2 pending-rollback
kill -TERM "$P"; wait "$P"
like "$(tail -1 "$LOG")" '"exit":-15,"signal":15' "a rollback killed by SIGTERM logs the signal"
"$PY" -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])][-1]; sys.exit(0 if r["ppid"] > 1 and r["pid"] > 1 and isinstance(r["ts"], float) else 1)' "$LOG"
ok $? "pid, ppid are numbers and ts is a float"

# ---------------------------------------------------------------- startup cost
T0=$(now)
for i in 1 2 3 4 5 6 7 8 9 10; do "$SIM" status logged2 -n nslog -o json >/dev/null; done
T1=$(now)
elapsed_lt "$T0" "$T1" 2; ok $? "10 status calls take under 2 s"

done_testing
