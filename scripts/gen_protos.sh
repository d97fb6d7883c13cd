#!/usr/bin/env bash
# Regenerates the Python stubs (_pb2, _pb2_grpc, .pyi) in tgi_collector/v1/ from proto/.
# The only way generated code is made: CI runs it and fails if the result differs from git.
# Needs grpcio-tools (pinned in pyproject.toml's dev extra so the output is reproducible).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python}
out=tgi_collector/v1
find "$out" -maxdepth 1 \( -name '*_pb2.py' -o -name '*_pb2_grpc.py' -o -name '*_pb2.pyi' \) -delete
"$python" -m grpc_tools.protoc \
  --proto_path=proto \
  --python_out=. \
  --pyi_out=. \
  --grpc_python_out=. \
  proto/tgi_collector/v1/*.proto
# protoc writes next to the proto path (tgi_collector/v1/), which is where the package lives.
test -f "$out/__init__.py"
echo "regenerated: $(ls "$out" | grep -c pb2) files in $out"
