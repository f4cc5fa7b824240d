# The README's commands. Each target installs what it needs (see scripts/) into $(VENV), made
# with $(PYTHON); redismpx needs Python >= 3.11: `make demo PYTHON=python3.12` picks another.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
REDIS7 := /usr/bin/redis-server
export PYTHON VENV

# Recipes stop at the first failing command, failures inside pipes included.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

.PHONY: demo test lint bench bench-quick docs docs-serve setup

setup:
	bash scripts/setup-test-deps.sh

# Installed again only when pyproject.toml changes.
$(VENV)/.installed-demo: pyproject.toml
	bash scripts/venv.sh demo
	touch $@

$(VENV)/.installed-bench: pyproject.toml
	bash scripts/venv.sh bench,server
	touch $@

# The main job: the demo web app on an embedded server it starts itself (or $$REDIS_URL).
# Options: make demo ARGS='--port 8001'.
demo: $(VENV)/.installed-demo
	$(VENV)/bin/redismpx demo $(ARGS)

# The whole suite, on Valkey (PyPI) and on Redis 7 (Debian), the frameworks' own tests against our
# integrations (python-socketio, channels_redis), then lint, types, docs and a bench smoke.
test: setup
	$(PY) -m pytest -q
	REDIS_SERVER=$(REDIS7) $(PY) -m pytest -q tests/integration tests/cluster tests/sentinel tests/integrations
	PYTHON=$(abspath $(PY)) bash .ci/socketio-upstream-tests.sh
	PYTHON=$(abspath $(PY)) bash .ci/channels-redis-upstream-tests.sh
	REDIS_SERVER=$(REDIS7) PYTHON=$(abspath $(PY)) bash .ci/channels-redis-upstream-tests.sh
	$(MAKE) lint
	$(MAKE) docs
	$(MAKE) bench-quick

lint:
	$(VENV)/bin/ruff check src tests bench examples scripts
	$(VENV)/bin/mypy

# The documentation site (MkDocs Material, API from docstrings), warnings as errors -> ./site
docs:
	bash scripts/build-docs.sh

# The documentation at http://127.0.0.1:PORT/, rebuilt as you edit (PORT: the first free one
# from 8001, or make docs-serve PORT=9000).
docs-serve:
	bash scripts/serve-docs.sh

bench: $(VENV)/.installed-bench
	$(PY) -m bench

bench-quick:
	$(PY) -m bench --quick
