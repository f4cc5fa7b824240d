#!/usr/bin/env bash
# Build the documentation site into ./site with `mkdocs build --strict` (warnings are errors).
# Installs the pinned toolchain (docs/requirements.txt) into .venv first when it is missing or
# at other versions. Extra arguments go to mkdocs build, e.g. `--site-dir /tmp/site`.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || python3 -m venv .venv
PY=.venv/bin/python

# Exit 0 when every `name==version` pin is installed at that version and every other
# requirement is installed at all (the API pages are rendered statically from src/: redismpx
# itself need not be installed).
if ! "$PY" - docs/requirements.txt <<'PYEOF'
import re, sys
from importlib.metadata import PackageNotFoundError, version

ok = True
for line in open(sys.argv[1]):
    req = line.split("#", 1)[0].strip()
    if not req:
        continue
    m = re.match(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(==|>=)?\s*([^\s;]*)", req)
    name, op, want = m.group(1), m.group(3), m.group(4)
    try:
        have = version(name)
    except PackageNotFoundError:
        ok = False
        continue
    if op == "==" and have != want:
        ok = False
sys.exit(0 if ok else 1)
PYEOF
then
    echo "build-docs: installing docs/requirements.txt into .venv" >&2
    "$PY" -m pip install -q -r docs/requirements.txt
fi

# Material for MkDocs prints a banner about MkDocs 2.0 on every build; it is not a warning.
NO_MKDOCS_2_WARNING=1 exec .venv/bin/mkdocs build --strict "$@"
