#!/usr/bin/env bash
# Generates the sms.v1 Go stubs from proto/ and builds clients/go/bin/smsgw-example.
#
# Go modules cannot be fetched here (no module proxy), so this builds in GOPATH mode
# against Debian's Go packages in /usr/share/gocode (grpc-go, protobuf-go, genproto;
# see clients/install.sh). The stubs are generated, never committed: they go to
# clients/go/gopath/src/smsgw/gen/go/sms/v1, the import path of the protos' go_package.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
  command -v "$tool" >/dev/null || { echo "$tool is missing: run clients/install.sh" >&2; exit 1; }
done

gen="$here/gopath/src"
rm -rf "$here/gopath"
mkdir -p "$gen"
protoc -I "$root/proto" --go_out="$gen" --go-grpc_out="$gen" "$root"/proto/sms/v1/*.proto

export GO111MODULE=off GOPATH="$here/gopath:/usr/share/gocode" GOFLAGS=
# The build cache (a cold build compiles grpc-go: ~30-40 s; later builds ~1 s).
[ -n "${GOCACHE:-}${XDG_CACHE_HOME:-}${HOME:-}" ] || export GOCACHE="$here/.gocache"
mkdir -p "$here/bin"
(cd "$here" && go vet . && go build -o bin/smsgw-example .)
echo "built $here/bin/smsgw-example ($(go version | cut -d' ' -f3), $(protoc --version), $(protoc-gen-go --version), $(protoc-gen-go-grpc --version))"
