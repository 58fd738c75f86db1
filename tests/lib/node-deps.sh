#!/usr/bin/env bash
# Installs the Node.js packages the tests use under build/node, pinned, once:
# kafkajs (interoperability: a Kafka client helmq did not write), and
# @redocly/cli, ajv and ajv-formats (tests/openapi.t: the OpenAPI document
# linted, and real answers validated against it), puppeteer-core (tests/
# status_page.t drives Debian's chromium: no browser download) and eventsource
# (tests/sse.t: the event stream read by an EventSource client helmq did not
# write). Prints the node_modules directory; exits non-zero when they cannot be
# installed.
set -euo pipefail
PACKAGES=(kafkajs@2.2.4 @redocly/cli@2.77.0 ajv@8.20.0 ajv-formats@3.0.1 puppeteer-core@24.43.1 eventsource@4.1.1)
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$root/build/node
missing=0
for p in "${PACKAGES[@]}"; do
    name=${p%@*} version=${p##*@}
    if [ "$(node -p "require('$dir/node_modules/$name/package.json').version" 2>/dev/null)" != "$version" ]; then
        missing=1
    fi
done
if [ "$missing" = 1 ]; then
    mkdir -p "$dir"
    npm install --prefix "$dir" --no-audit --no-fund --loglevel=error --save-exact "${PACKAGES[@]}" >&2
fi
echo "$dir/node_modules"
