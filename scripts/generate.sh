#!/usr/bin/env bash
# Regenerates generated/ from proto/ (Python modules, gRPC stubs and typed .pyi stubs;
# TypeScript in generated/ts for clients/ts, with google.rpc's error details).
# Uses the pinned grpcio-tools and mypy-protobuf from the dev extras, and buf and
# protoc-gen-es from package-lock.json (npm ci), so the output is the same on every
# machine; CI runs this and fails if git sees a difference.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
rm -rf generated/sms
mkdir -p generated
"$PY" -m grpc_tools.protoc \
  -I proto \
  --python_out=generated \
  --grpc_python_out=generated \
  --mypy_out=generated \
  --mypy_grpc_out=generated \
  --plugin=protoc-gen-mypy="$(dirname "$PY")/protoc-gen-mypy" \
  --plugin=protoc-gen-mypy_grpc="$(dirname "$PY")/protoc-gen-mypy_grpc" \
  proto/sms/v1/*.proto
for d in generated/sms generated/sms/v1; do
  : > "$d/__init__.py"
done
: > generated/sms/py.typed

# TypeScript (protoc-gen-es): sms.v1, and google/rpc/error_details.proto as the
# googleapis-common-protos package ships it (the details our errors carry).
[ -x node_modules/.bin/protoc-gen-es ] || { echo "run npm ci first (buf, protoc-gen-es)" >&2; exit 1; }
rm -rf generated/ts
node_modules/.bin/buf generate proto --template clients/ts/buf.gen.yaml
rpc_protos="$(mktemp -d)"
trap 'rm -rf "$rpc_protos"' EXIT
mkdir -p "$rpc_protos/google/rpc"
cp "$("$PY" -c 'import os; from google.rpc import error_details_pb2 as m; print(os.path.dirname(m.__file__))')/error_details.proto" \
  "$rpc_protos/google/rpc/"
node_modules/.bin/buf generate "$rpc_protos" --template clients/ts/buf.gen.yaml
echo "generated/ is up to date with proto/"
