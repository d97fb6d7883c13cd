"""A buf plugin that runs one of grpcio-tools' generators: ``python``, ``pyi`` or ``grpc_python``.

buf.gen.yaml runs it through ``scripts/protoc-gen-grpcio-tools NAME``. Why not buf's
``protoc_builtin``: grpc_python is not one of protoc's own generators (buf then looks for a
``protoc-gen-grpc_python`` binary, which grpcio-tools does not ship; its plugin is linked into
``grpc_tools.protoc``), and buf fills in ``json_name`` on every field of the descriptors it
hands over, which protoc's Python generator embeds in ``_pb2.py``. So this plugin takes buf's
request, drops each ``json_name`` that merely repeats the default (protoc compiling the .proto
files leaves it unset), and runs grpcio-tools' protoc on that descriptor set: the output is
byte for byte what ``python -m grpc_tools.protoc --python_out ...`` makes from the sources.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from google.protobuf.compiler.plugin_pb2 import CodeGeneratorRequest, CodeGeneratorResponse
from google.protobuf.descriptor_pb2 import DescriptorProto, FileDescriptorSet
from grpc_tools import protoc

GENERATORS = ("python", "pyi", "grpc_python")


def default_json_name(name: str) -> str:
    """protoc's ToJsonName: drop each underscore and upper-case the letter after it."""
    parts = name.split("_")
    return parts[0] + "".join(part[:1].upper() + part[1:] for part in parts[1:])


def drop_default_json_names(message: DescriptorProto) -> None:
    for field in [*message.field, *message.extension]:
        if field.json_name == default_json_name(field.name):
            field.ClearField("json_name")
    for nested in message.nested_type:
        drop_default_json_names(nested)


def generate(generator: str, request: CodeGeneratorRequest) -> CodeGeneratorResponse:
    files = FileDescriptorSet(file=request.proto_file)
    for file in files.file:
        for message in file.message_type:
            drop_default_json_names(message)
        for extension in file.extension:
            if extension.json_name == default_json_name(extension.name):
                extension.ClearField("json_name")
    response = CodeGeneratorResponse(
        supported_features=CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    )
    with tempfile.TemporaryDirectory() as tmp:
        descriptor_set, out = Path(tmp, "input.binpb"), Path(tmp, "out")
        descriptor_set.write_bytes(files.SerializeToString())
        out.mkdir()
        args = ["protoc", f"--descriptor_set_in={descriptor_set}", f"--{generator}_out={out}"]
        if protoc.main([*args, *request.file_to_generate]) != 0:
            response.error = f"grpc_tools.protoc --{generator}_out failed (see its stderr)"
            return response
        for path in sorted(p for p in out.rglob("*") if p.is_file()):
            name, content = path.relative_to(out).as_posix(), path.read_text(encoding="utf-8")
            response.file.add(name=name, content=content)
    return response


def main() -> int:
    if len(sys.argv) != 2 or sys.argv[1] not in GENERATORS:
        print(f"usage: protoc-gen-grpcio-tools {{{','.join(GENERATORS)}}}", file=sys.stderr)
        return 2
    request = CodeGeneratorRequest.FromString(sys.stdin.buffer.read())
    sys.stdout.buffer.write(generate(sys.argv[1], request).SerializeToString())
    return 0


if __name__ == "__main__":
    sys.exit(main())
