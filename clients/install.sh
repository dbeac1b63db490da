#!/usr/bin/env bash
# Installs what the example clients in clients/ need, on a fresh Debian machine
# (CI runs as root). Idempotent: Debian packages are installed only when a tool or a
# Go package is missing, npm packages always from clients/node/package-lock.json.
#
#   Python: the client package clients/python (smsgw_client), editable into the
#           repo's venv (.venv, `pip install -e .`), which has sms.v1, grpcio,
#           grpcio-status and googleapis-common-protos; its stubs are generated/.
#   Node:   @grpc/grpc-js, @grpc/proto-loader, protobufjs (npm ci in clients/node).
#   Go:     Debian's Go toolchain, protoc with protoc-gen-go and protoc-gen-go-grpc,
#           and grpc-go, protobuf-go and genproto (errdetails) as GOPATH sources in
#           /usr/share/gocode (the Go module proxy is not reachable from here).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

GO_PACKAGES=(
  golang-go                             # go 1.19 on Debian 12
  protobuf-compiler                     # protoc
  protoc-gen-go                         # protoc-gen-go (APIv2, google.golang.org/protobuf)
  protoc-gen-go-grpc                    # protoc-gen-go-grpc
  golang-google-grpc-dev                # google.golang.org/grpc
  golang-google-protobuf-dev            # google.golang.org/protobuf (runtime of the stubs)
  golang-github-golang-protobuf-1-5-dev # github.com/golang/protobuf (grpc-go and genproto use it)
  golang-google-genproto-dev            # google.golang.org/genproto/googleapis/rpc/errdetails
)

missing=()
for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
for pkg in google.golang.org/grpc google.golang.org/protobuf/proto \
  github.com/golang/protobuf/proto google.golang.org/genproto/googleapis/rpc/errdetails; do
  [ -d "/usr/share/gocode/src/$pkg" ] || missing+=("$pkg")
done
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(node npm)
  GO_PACKAGES+=(nodejs npm)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "clients/install.sh: missing ${missing[*]}: installing Debian packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${GO_PACKAGES[@]}"
fi

(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)

root="$(cd "$here/.." && pwd)"
if [ -x "$root/.venv/bin/pip" ]; then
  "$root/.venv/bin/pip" install --quiet --no-deps -e "$here/python"
fi
