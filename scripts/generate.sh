#!/usr/bin/env bash
# Regenerates generated/ from proto/ (Python modules, gRPC stubs and typed .pyi stubs).
# Uses the pinned grpcio-tools and mypy-protobuf from the dev extras, so the output
# is the same on every machine; CI runs this and fails if git sees a difference.
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
echo "generated/ is up to date with proto/"
