#!/usr/bin/env bash
# Make sure the virtualenv $VENV (default .venv) exists, with a Python that redismpx supports
# (pyproject.toml's requires-python), then, given extras ("demo", "test,bench"), install the
# project into it in editable mode with them. Every failure stops here with its message.
#
#   PYTHON  the interpreter that creates the venv (default python3): make demo PYTHON=python3.12
#   VENV    where the venv lives (default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
extras=${1:-}

min=$(sed -n 's/^requires-python *= *">= *\([0-9]*\.[0-9]*\)".*/\1/p' pyproject.toml)
if [ -z "$min" ]; then
    echo "error: no requires-python = \">=X.Y\" in pyproject.toml" >&2
    exit 1
fi

# "3.11" of an interpreter, or nothing if it does not run.
version_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true; }

# at_least 3.12 3.11: whether the first version is at least the second.
at_least() {
    local have=$1 want=$2
    [ -n "$have" ] || return 1
    local IFS=.
    # shellcheck disable=SC2206
    local -a h=($have) w=($want)
    ((h[0] > w[0] || (h[0] == w[0] && h[1] >= w[1])))
}

# A supported interpreter that runs from PATH, to name in the advice.
suggestion() {
    local minor
    for minor in 14 13 12 11; do
        if at_least "$(version_of "python3.$minor")" "$min"; then
            echo "python3.$minor"
            return
        fi
    done
    echo "python3.12"
}

advice="pick another interpreter, e.g. make demo PYTHON=$(suggestion)"

if [ -x "$VENV/bin/python" ]; then
    have=$(version_of "$VENV/bin/python")
    if ! at_least "$have" "$min"; then
        echo "error: $VENV has Python ${have:-(broken)}, redismpx needs Python >= $min:" \
            "remove it (rm -rf $VENV) and $advice" >&2
        exit 1
    fi
else
    if ! command -v "$PYTHON" >/dev/null 2>&1; then
        echo "error: $PYTHON not found; redismpx needs Python >= $min: $advice" >&2
        exit 1
    fi
    have=$(version_of "$PYTHON")
    if ! at_least "$have" "$min"; then
        echo "error: $PYTHON is Python ${have:-(unknown)}, redismpx needs Python >= $min: $advice" >&2
        exit 1
    fi
    echo "creating $VENV with $PYTHON (Python $have)" >&2
    "$PYTHON" -m venv "$VENV"
fi

if [ -n "$extras" ]; then
    echo "installing redismpx[$extras] into $VENV (a minute or two the first time)" >&2
    # pip's warnings filtered out (index locations...); its exit status is kept (pipefail).
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        "$VENV/bin/python" -m pip install -q -e ".[$extras]" 2>&1 | { grep -v '^WARNING: ' || true; } >&2
fi
