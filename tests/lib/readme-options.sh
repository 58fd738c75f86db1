#!/usr/bin/env bash
# Rewrites the configuration tables of README.md from the programs' own
# option tables (--help-markdown), between <!-- options:PROG --> markers.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${HELMQ_BIN:-bin}
for prog in helmq-worker helmq-projector helmq-api; do
    table=$("$BIN/$prog" --help-markdown)
    TABLE="$table" /usr/bin/python3 - "$prog" <<'PY'
import os, re, sys
prog = sys.argv[1]
s = open("README.md").read()
start, end = f"<!-- options:{prog} -->\n", f"\n<!-- /options:{prog} -->"
i, j = s.index(start) + len(start), s.index(end)
open("README.md", "w").write(s[:i] + os.environ["TABLE"] + s[j:])
PY
done
