#!/usr/bin/env bash
# Builds the operator console (console/src, preact + the generated/ts Connect stubs)
# into server/http/console/console.js with esbuild from package-lock.json (npm ci),
# after type-checking it. The bundle is committed, so the gateway serves /console
# without Node; CI runs this and fails if git sees a difference.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/esbuild ] || { echo "run npm ci first (esbuild, preact)" >&2; exit 1; }
node_modules/.bin/tsc -p console
node_modules/.bin/esbuild console/src/main.tsx \
  --bundle --minify --format=esm --target=es2020 --charset=utf8 --legal-comments=none \
  --jsx=automatic --jsx-import-source=preact \
  --outfile=server/http/console/console.js --log-level=warning
echo "server/http/console/console.js is built from console/src"
