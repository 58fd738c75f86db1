#!/usr/bin/env bash
# tests/compose.t: compose.yaml and the Dockerfile, checked without a Docker engine.
# `docker-compose config` (Debian's docker-compose 1.29) must accept compose.yaml;
# the rendered configuration is then checked for what CONTRACTS.md asks of a real
# deployment (KRaft Kafka, PostgreSQL, the three topics, two workers in one group,
# the kubeconfig mount), and the Dockerfile is checked statically: it builds every
# program the compose file runs, with the -dev package of each library in PKGS.
cd "$(dirname "$0")/.." || exit 1
. tests/lib/tap.sh

# The topics of CONTRACTS.md (also the defaults in worker/lib/kafka.h).
TOPICS="helm.release.commands helm.release.events helm.release.commands.dlq"

if ! command -v docker-compose >/dev/null 2>&1; then
    if [ "${CI:-}" = true ]; then
        echo "not ok 1 - docker-compose is installed (Debian package docker-compose; CI=true)"
        echo "1..1"
        exit 1
    fi
    skip_all "docker-compose is not installed (apt-get install docker-compose)"
fi

# A Python with PyYAML: docker-compose 1.29 is itself Python and depends on it.
py=
for p in python3 /usr/bin/python3; do
    if "$p" -c 'import yaml' >/dev/null 2>&1; then py=$p; break; fi
done

work=$(mktemp -d "${TMPDIR:-/tmp}/compose-t.XXXXXX") || bail "mktemp failed"
trap 'rm -rf "$work"' EXIT

# A fixed environment, so the user's own settings do not change what is rendered.
# stderr (deprecation warnings) is kept apart; the exit code is what counts.
render() { # render COMPOSE_COMMAND... -> $work/config.yaml
    env -u KUBECONFIG_HOST -u HELMQ_CHART_REPO -u HELMQ_CONCURRENCY -u HELMQ_UID -u HELMQ_GID \
        -u COMPOSE_FILE -u COMPOSE_PROJECT_NAME HOME="$work/home" \
        "$@" -f compose.yaml config >"$work/config.yaml" 2>"$work/config.err"
}
mkdir -p "$work/home/.kube"
render docker-compose
rc=$?
is "$rc" 0 "docker-compose config accepts compose.yaml"
if [ "$rc" -ne 0 ]; then
    while IFS= read -r l; do diag "$l"; done <"$work/config.err"
    done_testing
    exit 1
fi
cp "$work/config.yaml" "$work/config-1.yaml"

# The modern plugin too, when there is one (it needs no engine for `config`).
if docker compose version >/dev/null 2>&1; then
    render docker compose
    is "$?" 0 "docker compose (v2) config accepts compose.yaml"
fi

[ -n "$py" ] || bail "no python3 with PyYAML to read the rendered configuration"

# Flatten the rendered configuration (1.29's form) into SERVICE.KEY=VALUE lines.
"$py" - "$work/config-1.yaml" >"$work/flat" <<'EOF' || bail "cannot read the rendered configuration"
import sys, yaml
cfg = yaml.safe_load(open(sys.argv[1]))
svcs = cfg.get("services") or {}
print("services=" + ",".join(sorted(svcs)))
def words(v):
    if v is None: return ""
    return v if isinstance(v, str) else " ".join(str(x) for x in v)
for name, s in sorted(svcs.items()):
    print("%s.image=%s" % (name, s.get("image", "")))
    print("%s.build=%s" % (name, "yes" if s.get("build") else "no"))
    print("%s.run=%s" % (name, (words(s.get("entrypoint")) + " " + words(s.get("command"))).replace("\n", " ").strip()))
    print("%s.replicas=%s" % (name, (s.get("deploy") or {}).get("replicas", 1)))
    env = s.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
    for k, v in sorted(env.items()):
        print("%s.env.%s=%s" % (name, k, v))
    for v in s.get("volumes") or []:
        if isinstance(v, dict):
            v = "%s:%s%s" % (v.get("source", ""), v.get("target", ""), ":ro" if v.get("read_only") else "")
        print("%s.volume=%s" % (name, v))
    dep = s.get("depends_on") or {}
    if isinstance(dep, list):
        dep = {d: {"condition": "service_started"} for d in dep}
    for d, c in sorted(dep.items()):
        print("%s.depends.%s=%s" % (name, d, (c or {}).get("condition", "service_started")))
    hc = s.get("healthcheck") or {}
    print("%s.healthcheck=%s" % (name, words(hc.get("test"))))
EOF
get() { sed -n "s/^$1=//p" "$work/flat" | head -1; }
all() { sed -n "s/^$1=//p" "$work/flat"; }

# Services.
services=$(get services)
for s in kafka postgres topics migrate worker projector api prometheus; do
    like ",$services," ",$s," "service $s exists"
done

# Kafka: the official image in KRaft mode, a single node that is broker and controller.
like "$(get kafka.image)" "apache/kafka:" "kafka uses the official apache/kafka image"
like "$(get kafka.env.KAFKA_PROCESS_ROLES)" "controller" "kafka runs in KRaft mode (controller role)"
like "$(get kafka.env.KAFKA_PROCESS_ROLES)" "broker" "kafka is also the broker"
like "$(get kafka.env.KAFKA_CONTROLLER_QUORUM_VOTERS)" "@kafka:9093" "kafka is its own controller quorum"
like "$(get kafka.env.KAFKA_ADVERTISED_LISTENERS)" "PLAINTEXT://kafka:9092" "kafka advertises kafka:9092 to the other containers"
is "$(get kafka.env.KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR)" 1 "single node: offsets topic replication factor 1"
like "$(get kafka.healthcheck)" "kafka-topics.sh" "kafka has a healthcheck"

# PostgreSQL.
like "$(get postgres.image)" "postgres:15" "postgres is PostgreSQL 15"
is "$(get postgres.env.POSTGRES_DB)" helmq "postgres database helmq"
like "$(get postgres.healthcheck)" "pg_isready" "postgres has a pg_isready healthcheck"

# The topics one-shot.
topics_run=$(get topics.run)
topics_words=" $(printf '%s' "$topics_run" | tr ';,"' '   ') "
like "$topics_run" "--create" "topics creates topics"
for t in $TOPICS; do
    like "$topics_words" " $t " "topics creates $t"
    grep -q "\"$t\"" worker/lib/kafka.h
    ok $? "$t is also the default in worker/lib/kafka.h"
done
like "$topics_run" "--partitions 6" "topics are created with 6 partitions"
like "$topics_run" "--if-not-exists" "topics creation is idempotent"
is "$(get topics.depends.kafka)" service_healthy "topics waits for a healthy kafka"

# The helmq services: built from the Dockerfile, all given the broker and the database.
helmq_services=
for s in migrate worker projector api; do
    is "$(get "$s.build")" yes "$s is built from the Dockerfile"
    is "$(get "$s.env.HELMQ_BROKERS")" "kafka:9092" "$s gets HELMQ_BROKERS"
    like "$(get "$s.env.HELMQ_DATABASE_URL")" "@postgres:5432/helmq" "$s gets HELMQ_DATABASE_URL"
    helmq_services="$helmq_services $s"
done
is "$(get migrate.depends.postgres)" service_healthy "migrate waits for a healthy postgres"
like "$(get migrate.run)" "helmq-worker migrate" "migrate applies the worker migrations"
like "$(get migrate.run)" "helmq-projector migrate" "migrate applies the projection migrations"
for s in worker projector api; do
    is "$(get "$s.depends.topics")" service_completed_successfully "$s starts after the topics exist"
    is "$(get "$s.depends.migrate")" service_completed_successfully "$s starts after the migrations"
done

# Two workers in one consumer group, with the kubeconfig and the chart repository.
is "$(get worker.replicas)" 2 "worker has 2 replicas"
like "$(get worker.run)" "helmq-worker" "worker runs helmq-worker"
like "$(get projector.run)" "helmq-projector" "projector runs helmq-projector"
is "$(get worker.env.HELMQ_GROUP_ID)" "" "both workers share the default consumer group"
is "$(get worker.env.KUBECONFIG)" /kube/config "worker sets KUBECONFIG=/kube/config"
like "$(all worker.volume)" "$work/home/.kube/config:/kube/config:ro" "worker mounts ~/.kube/config read-only at /kube/config"
like "$(get worker.env.HELMQ_CHART_REPO)" "oci://" "worker has a default HELMQ_CHART_REPO"
ok "$([ -n "$(get worker.env.HELMQ_CONCURRENCY)" ]; echo $?)" "worker sets HELMQ_CONCURRENCY"

# The API and Prometheus: the programs serve /metrics on the ports the
# Prometheus configuration scrapes, and the configuration and rules it
# mounts are the repository's, accepted by promtool.
like "$(get api.run)" "exec helmq-api --tokens-file" "api runs helmq-api with a tokens file"
like "$(get api.env.HELMQ_API_LISTEN)" "0.0.0.0:8080" "api listens on all interfaces"
like "$(all prometheus.volume)" "/docs/prometheus/helmq-rules.yml:/etc/prometheus/helmq-rules.yml:ro" \
    "prometheus mounts docs/prometheus/helmq-rules.yml"
like "$(all prometheus.volume)" "/docs/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" \
    "prometheus mounts docs/prometheus/prometheus.yml"
promcfg=docs/prometheus/prometheus.yml
like "$(cat "$promcfg")" "port: ${wport:=$(get worker.env.HELMQ_WORKER_HTTP | sed 's/.*://')}" \
    "prometheus scrapes the workers on their metrics port ($wport)"
like "$(cat "$promcfg")" "projector:$(get projector.env.HELMQ_PROJECTOR_HTTP | sed 's/.*://')" \
    "prometheus scrapes the projector on its metrics port"
like "$(cat "$promcfg")" "api:$(get api.env.HELMQ_API_LISTEN | sed 's/.*://')" "prometheus scrapes the API on its port"
if command -v promtool >/dev/null 2>&1; then
    mkdir -p "$work/prom"
    cp docs/prometheus/helmq-rules.yml "$work/prom/"
    sed "s|/etc/prometheus/helmq-rules.yml|$work/prom/helmq-rules.yml|" "$promcfg" >"$work/prom/prometheus.yml"
    out=$(promtool check config "$work/prom/prometheus.yml" 2>&1)
    ok $? "promtool check config accepts docs/prometheus/prometheus.yml with its rules" || _tap_err "$out"
fi

# ---- The Dockerfile, statically.
[ -f Dockerfile ]
ok $? "Dockerfile exists"
build_stage=$(awk 'tolower($1)=="from" { inb = (tolower($0) ~ / as build[ \t]*$/) } inb' Dockerfile)
final_stage=$(awk 'tolower($1)=="from" { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' Dockerfile)
like "$build_stage" "FROM debian:bookworm-slim" "the build stage is debian:bookworm-slim"
is "$(grep -E '^FROM' Dockerfile | grep -vc '^FROM debian:bookworm-slim')" 0 "every stage is debian:bookworm-slim"
is "$(grep -E '^FROM' Dockerfile | tail -1 | awk 'NF > 2')" "" "the last (runtime) stage is a fresh base, not a build stage"

# Every program the compose services run (and the CLI the comments tell users to
# run in the worker image) is built and copied into the image.
progs="helmq"
for s in $helmq_services; do
    for w in $(get "$s.run"); do
        case "$w" in helmq|helmq-*) progs="$progs $w" ;; esac
    done
done
progs=$(printf '%s\n' $progs | sort -u)
copies=$(grep -E '^COPY[[:space:]]+--from=build' Dockerfile)
for p in $progs; do
    like "$copies " "/bin/$p " "the image has $p (COPY --from=build)"
    like "$build_stage" "bin/$p" "the build stage builds bin/$p"
done
like "$(grep -E '^(CMD|ENTRYPOINT)' Dockerfile)" "helmq-worker" "the image's default command is helmq-worker"
like "$(grep -E '^USER' Dockerfile | tail -1)" "helmq" "the image runs as the non-root user helmq"
like "$final_stage" "/usr/local/bin/helm" "the image has a real helm"

# Each pkg-config library of the Makefile has its -dev package in the build stage
# and its runtime package in the final stage.
pkgs=$(sed -n 's/^PKGS[[:space:]]*:\{0,1\}=[[:space:]]*//p' Makefile)
ok "$([ -n "$pkgs" ]; echo $?)" "the Makefile lists PKGS"
for p in $pkgs; do
    case "$p" in
    rdkafka) dev=librdkafka-dev run=librdkafka1 ;;
    libuv) dev=libuv1-dev run=libuv1 ;;
    avro-c) dev=libavro-dev run=libavro23 ;;
    libpq) dev=libpq-dev run=libpq5 ;;
    jansson) dev=libjansson-dev run=libjansson4 ;;
    libcrypto) dev=libssl-dev run=libssl3 ;;
    *) ok 1 "PKGS has $p, unknown to tests/compose.t: add its Debian packages here and in the Dockerfile"; continue ;;
    esac
    like " $(echo "$build_stage" | tr '\\\n' '  ') " " $dev " "the build stage installs $dev (for pkg-config $p)"
    like " $(echo "$final_stage" | tr '\\\n' '  ') " " $run " "the runtime stage installs $run (for $p)"
done

# So do the libraries linked by name (LDLIBS -l...), outside pkg-config.
for l in $(sed -n 's/^LDLIBS[[:space:]]*:\{0,1\}=.*)//p' Makefile); do
    case "$l" in
    -lm) continue ;; # libc
    -lhttp_parser) dev=libhttp-parser-dev run=libhttp-parser2.9 ;;
    *) ok 1 "LDLIBS has $l, unknown to tests/compose.t: add its Debian packages here and in the Dockerfile"; continue ;;
    esac
    like " $(echo "$build_stage" | tr '\\\n' '  ') " " $dev " "the build stage installs $dev (for $l)"
    like " $(echo "$final_stage" | tr '\\\n' '  ') " " $run " "the runtime stage installs $run (for $l)"
done

# The build context leaves out local build output and git.
for d in build/ bin/ .git; do
    grep -qxF "$d" .dockerignore 2>/dev/null
    ok $? ".dockerignore lists $d"
done

done_testing
