#!/usr/bin/env bash
# Regenerates the Python stubs (_pb2, _pb2_grpc, .pyi) in tgi_collector/v1/ from proto/.
# The only way generated code is made: CI runs it and fails if the result differs from git.
# Runs `buf generate` with buf.gen.yaml's Python entries, which use grpcio-tools' generators
# through scripts/protoc-gen-grpcio-tools. Needs the dev extra: grpcio-tools (pinned in
# pyproject.toml so the output is reproducible) and buf (buf-bin), installed beside $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-python}
buf=$(dirname "$(command -v "$PYTHON")")/buf
[ -x "$buf" ] || buf=buf
if ! command -v "$buf" >/dev/null; then
  echo "gen_protos.sh: buf is neither beside $PYTHON nor on PATH (pip install -e '.[dev]')" >&2
  exit 1
fi
out=tgi_collector/v1
find "$out" -maxdepth 1 \( -name '*_pb2.py' -o -name '*_pb2_grpc.py' -o -name '*_pb2.pyi' \) -delete
"$buf" generate
# The plugins write tgi_collector/v1/ (the proto path), which is where the package lives.
test -f "$out/__init__.py"
echo "regenerated: $(ls "$out" | grep -c pb2) files in $out"
