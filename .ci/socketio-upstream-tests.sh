#!/usr/bin/env bash
# python-socketio's own tests of its Redis manager and of the pub/sub manager base class, run
# against redismpx.socketio.AsyncRedisMPXManager.
#
# The tests are not copied into this repository: the python-socketio sdist (which ships its
# tests) is downloaded from PyPI into a temporary directory at every run, for the version
# installed in the Python used here (or $SOCKETIO_VERSION, which must match it: the tests
# import the installed socketio package, not the sdist's sources).
#
# How the substitution works: a small pytest plugin (written to the temporary directory and
# loaded with -p before any test module is imported) replaces
#     socketio.AsyncRedisManager, socketio.async_redis_manager.AsyncRedisManager  and
#     socketio.async_pubsub_manager.AsyncPubSubManager
# with AsyncRedisMPXManager. tests/async/test_redis_manager.py then builds ours wherever it
# writes AsyncRedisManager(...), and tests/async/test_pubsub_manager.py runs its tests of the
# base class's behaviour (emit, rooms, callbacks, disconnects, the listening loop) on ours.
# The upstream tests that assert what the stock class is made of (a redis-py or valkey-py
# client in `.redis` after `_redis_connect()`, a RuntimeError when those packages are
# missing) are marked xfail(strict=True) with the reason: they fail on ours by design, and
# if the substitution ever stopped working they would pass and fail the run.
#
# No server is needed: none of these upstream tests connects to Redis (the Redis manager's
# are construction tests, the pub/sub manager's use a mock server and mocked _publish and
# _listen). The behaviour on real servers is tests/integrations/test_socketio.py.
#
# Usage: .ci/socketio-upstream-tests.sh [pytest args]   (PYTHON=.venv/bin/python by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
installed=$("$PY" -c 'import importlib.metadata as m; print(m.version("python-socketio"))')
VERSION=${SOCKETIO_VERSION:-$installed}
if [ "$VERSION" != "$installed" ]; then
    echo "SOCKETIO_VERSION=$VERSION but python-socketio $installed is installed in $PY" >&2
    exit 2
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$PY" -m pip download -q --no-binary :all: --no-deps "python-socketio==$VERSION" -d "$WORK" \
    2>&1 | grep -vi warning || true
tar xzf "$WORK"/python[-_]socketio-"$VERSION".tar.gz -C "$WORK"
SRC=$(echo "$WORK"/python[-_]socketio-"$VERSION")

# The upstream Redis manager tests import valkey-py as well as redis-py.
EXTRA="$WORK/site"
for module in redis valkey; do
    if ! "$PY" -c "import $module" 2>/dev/null; then
        "$PY" -m pip install -q --no-deps --target "$EXTRA" "$module" 2>&1 | grep -vi warning || true
    fi
done

cat > "$WORK/redismpx_socketio_shim.py" <<'EOF'
"""Run python-socketio's own tests with redismpx's manager in place of socketio's."""

import pytest
import socketio
from socketio import async_pubsub_manager, async_redis_manager

from redismpx.socketio import AsyncRedisMPXManager

socketio.AsyncRedisManager = AsyncRedisMPXManager
async_redis_manager.AsyncRedisManager = AsyncRedisMPXManager
async_pubsub_manager.AsyncPubSubManager = AsyncRedisMPXManager

_REDIS_PY = (
    "asserts how the stock class is built: a redis-py/valkey-py client in .redis after "
    "_redis_connect(); AsyncRedisMPXManager uses neither package (the connection is a "
    "redismpx multiplexer)"
)
_MISSING = (
    "asserts a RuntimeError when redis-py/valkey-py are missing; AsyncRedisMPXManager needs "
    "neither, so nothing is missing"
)
XFAIL = {
    "test_redis_not_installed": _MISSING,
    "test_valkey_not_installed": _MISSING,
    "test_redis_valkey_not_installed": _MISSING,
    "test_redis_connect": _REDIS_PY,
    "test_valkey_connect": _REDIS_PY,
}


def pytest_report_header(config):
    return [
        f"socketio.AsyncRedisManager and socketio.async_pubsub_manager.AsyncPubSubManager "
        f"replaced by {AsyncRedisMPXManager.__module__}.{AsyncRedisMPXManager.__qualname__}"
    ]


def pytest_collection_modifyitems(items):
    for item in items:
        reason = XFAIL.get(item.name)
        if reason is not None and "test_redis_manager" in item.nodeid:
            item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
EOF

cd "$SRC"
PYTHONPATH="$WORK:$EXTRA${PYTHONPATH:+:$PYTHONPATH}" "$PY" -m pytest -p redismpx_socketio_shim \
    -p no:cacheprovider -p no:randomly --timeout=60 -rxX -q \
    tests/async/test_redis_manager.py tests/async/test_pubsub_manager.py "$@"
