#!/usr/bin/env bash
# Installs Debian's Chromium when missing (as root, as scripts/check_deploy.sh installs
# its packages): the browser Playwright drives in tests/e2e/test_console_browser.py.
# Playwright's own browser download (`playwright install`) is not used.
set -euo pipefail
if ! command -v chromium >/dev/null; then
  echo "installing from Debian: chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
