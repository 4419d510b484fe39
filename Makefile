# Everything a new machine needs is Python 3.11+; `make dev` and `make test` set up the rest.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup dev test lint bench bench-sync bench-segments bench-scale bench-long-life bench-api-memory bench-snapshots bench-sandbox bench-payloads replay-corpus

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

dev: setup
	$(BIN)/lifecycle dev

lint: setup
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

# One pytest process per core (pytest-xdist), each test file in one process: most tests
# wait on servers and timers, so the suite takes a fraction of its serial time. Ports and
# PostgreSQL databases are claimed per test across processes (tests/conftest.py).
test: lint
	$(BIN)/pytest -n auto --dist loadfile

bench: setup
	$(BIN)/python -m bench.ingest

bench-sync: setup
	$(BIN)/python -m bench.sync

bench-segments: setup
	$(BIN)/python -m bench.segments

bench-scale: setup
	$(BIN)/python -m bench.many_customers

bench-long-life: setup
	$(BIN)/python -m bench.long_life

bench-api-memory: setup
	$(BIN)/python -m bench.api_memory

bench-snapshots: setup
	$(BIN)/python -m bench.snapshot_writes

bench-sandbox: setup
	$(BIN)/python -m bench.sandbox

bench-payloads: setup
	$(BIN)/python -m bench.payloads

replay-corpus: setup
	$(BIN)/python -m bench.replay_corpus
