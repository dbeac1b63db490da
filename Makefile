# The fast local loop: nothing here installs anything. It expects the virtualenv that
# README's setup (or .ci/run) made: python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'.
VENV ?= .venv
PY_DIRS := server tests scripts clients

.PHONY: test-unit lint format check

## test-unit: the unit tests (no database, no network; a few seconds)
test-unit: $(VENV)/bin/pytest
	$(VENV)/bin/pytest -q tests/unit

## lint: ruff (lint and format check) and mypy --strict over server/ and tests/
lint: $(VENV)/bin/ruff
	$(VENV)/bin/ruff check $(PY_DIRS)
	$(VENV)/bin/ruff format --check $(PY_DIRS)
	$(VENV)/bin/mypy

## format: ruff's fixes and formatting, in place
format: $(VENV)/bin/ruff
	$(VENV)/bin/ruff check --fix $(PY_DIRS)
	$(VENV)/bin/ruff format $(PY_DIRS)

## check: lint, then the unit tests
check: lint test-unit

$(VENV)/bin/%:
	@echo "$@ is missing: python3 -m venv $(VENV) && $(VENV)/bin/pip install -e '.[dev]'" >&2; exit 1
