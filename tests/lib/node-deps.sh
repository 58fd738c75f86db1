#!/usr/bin/env bash
# Installs the Node.js packages the interoperability tests use (a Kafka client
# helmq did not write) under build/node, pinned, once. Prints the
# node_modules directory; exits non-zero when they cannot be installed.
set -euo pipefail
KAFKAJS_VERSION=2.2.4
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$root/build/node
if [ "$(node -p "require('$dir/node_modules/kafkajs/package.json').version" 2>/dev/null)" != "$KAFKAJS_VERSION" ]; then
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error --save-exact "kafkajs@$KAFKAJS_VERSION" >&2
fi
echo "$dir/node_modules"
