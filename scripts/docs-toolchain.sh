#!/usr/bin/env bash
# The documentation toolchain in $VENV (default .venv): creates the venv if needed (see
# scripts/venv.sh: a Python that redismpx supports), then installs the pins of
# docs/requirements.txt when any is missing or at another version.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

bash scripts/venv.sh
PY=$VENV/bin/python

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
    echo "installing docs/requirements.txt into $VENV" >&2
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        "$PY" -m pip install -q -r docs/requirements.txt 2>&1 | { grep -v '^WARNING: ' || true; } >&2
fi
