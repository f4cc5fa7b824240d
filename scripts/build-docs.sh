#!/usr/bin/env bash
# Build the documentation site into ./site with `mkdocs build --strict` (warnings are errors).
# Installs the pinned toolchain (docs/requirements.txt) into .venv first when it is missing or
# at other versions. Extra arguments go to mkdocs build, e.g. `--site-dir /tmp/site`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

bash scripts/docs-toolchain.sh

# Material for MkDocs prints a banner about MkDocs 2.0 on every build; it is not a warning.
NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict "$@"
# Pages link to directories (page/, not page/index.html): from disk they show listings.
echo "view the site with: make docs-serve (or: python3 -m http.server -d site)" >&2
