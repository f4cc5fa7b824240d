#!/usr/bin/env bash
# Serve the documentation with `mkdocs serve` (rebuilt on every change) on 127.0.0.1:$PORT,
# or on the first free port from 8001 (8000 is the demo's). Installs the pinned toolchain
# into .venv first, as scripts/build-docs.sh does. Extra arguments go to mkdocs serve.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

bash scripts/docs-toolchain.sh

port=${PORT:-}
if [ -z "$port" ]; then
    port=$("$VENV/bin/python" - <<'PYEOF'
import socket

for port in [*range(8001, 8100), 0]:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(sock.getsockname()[1])
        break
PYEOF
)
fi

echo "docs on http://127.0.0.1:$port/ (Ctrl-C to stop)" >&2
NO_MKDOCS_2_WARNING=1 exec "$VENV/bin/mkdocs" serve --dev-addr "127.0.0.1:$port" "$@"
