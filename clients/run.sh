#!/usr/bin/env bash
# Runs the example clients against a real smsgw: installs what they need
# (clients/install.sh), starts `smsgw serve` on free ports with its own data folder
# (embedded PostgreSQL unless DATABASE_URL is set), waits until it is SERVING, creates
# an account, runs each example with SMSGW_ADDR/SMSGW_API_KEY/SMSGW_API_SECRET, and
# always stops the server.
#
#   bash clients/run.sh                 # python, node and go
#   bash clients/run.sh node go         # only these
#   SKIP_INSTALL=1 bash clients/run.sh  # do not run clients/install.sh
#
# Needs the repo's venv (python3 -m venv .venv && .venv/bin/pip install -e .).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
smsgw="$root/.venv/bin/smsgw"
python="$root/.venv/bin/python"
languages=("$@")
[ "${#languages[@]}" -gt 0 ] || languages=(python node go)

[ -x "$smsgw" ] || { echo "no $smsgw: python3 -m venv .venv && .venv/bin/pip install -e ." >&2; exit 1; }
if [ -z "${SKIP_INSTALL:-}" ]; then
  started=$SECONDS
  bash "$here/install.sh"
  echo "==> install: $((SECONDS - started)) s"
fi

free_port() { "$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
tmp="$(mktemp -d "${TMPDIR:-/tmp}/smsgw-clients.XXXXXX")"
export SMSGW_DATA_DIR="$tmp/data"
export SMSGW_GRPC_ADDR="127.0.0.1:$(free_port)"
export SMSGW_HTTP_ADDR="127.0.0.1:$(free_port)"
# serve refuses a DATABASE_URL without SMSGW_SECRET_KEY: a throwaway key for this run.
if [ -n "${DATABASE_URL:-}" ] && [ -z "${SMSGW_SECRET_KEY:-}" ]; then
  SMSGW_SECRET_KEY="$("$python" -c 'import secrets,base64;print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())')"
  export SMSGW_SECRET_KEY
fi

server=""
stop() {
  status=$?
  if [ -n "$server" ] && kill -0 "$server" 2>/dev/null; then
    kill -TERM "$server"                       # graceful: drains and stops its PostgreSQL
    for _ in $(seq 1 150); do kill -0 "$server" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$server" 2>/dev/null && kill -KILL "$server"
    wait "$server" 2>/dev/null || true
  fi
  if [ "$status" -ne 0 ] && [ -f "$tmp/server.log" ]; then
    echo "--- server log (last 40 lines) ---" >&2
    tail -n 40 "$tmp/server.log" >&2
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap stop EXIT
trap 'exit 130' INT TERM

started=$SECONDS
"$smsgw" serve >"$tmp/server.log" 2>&1 &
server=$!
until "$smsgw" healthcheck >/dev/null 2>&1; do
  kill -0 "$server" 2>/dev/null || { echo "smsgw serve exited" >&2; exit 1; }
  [ $((SECONDS - started)) -lt 120 ] || { echo "smsgw not SERVING after 120 s" >&2; exit 1; }
  sleep 0.5
done
echo "==> smsgw SERVING on $SMSGW_GRPC_ADDR after $((SECONDS - started)) s"

"$smsgw" account create clients-example >"$tmp/account.json"
read -r SMSGW_API_KEY SMSGW_API_SECRET < <("$python" -c \
  'import json,sys; a=json.load(open(sys.argv[1])); print(a["api_key"], a["api_secret"])' "$tmp/account.json")
export SMSGW_ADDR="$SMSGW_GRPC_ADDR" SMSGW_API_KEY SMSGW_API_SECRET

for language in "${languages[@]}"; do
  echo "==> $language"
  started=$SECONDS
  case "$language" in
    python) "$python" "$here/python/example.py" ;;
    node) node "$here/node/example.js" ;;
    go) bash "$here/go/build.sh" && "$here/go/bin/smsgw-example" ;;
    *) echo "unknown language $language (python, node, go)" >&2; exit 2 ;;
  esac
  echo "==> $language: OK in $((SECONDS - started)) s"
done
echo "==> all clients OK: ${languages[*]}"
