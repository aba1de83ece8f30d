"""The committed gRPC messages (issue #20): generated from inference.proto, and wire-compatible upstream.

- `make protos` output is committed; regenerating it with the pinned grpcio-tools must give the
  same files (the same check crdgen --check makes for the CRDs).
- Every message, field, enum value and RPC we declare has the name, number and type that
  tritonclient's own generated descriptors (from the upstream protocol files) have, so
  clients generated from those files interoperate. Compared in a child process: both modules
  define `inference.*`, and protobuf's default pool takes each name once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
PROTO_DIR = ROOT / "images/server/mlops_server/proto"
GENERATED = ("inference_pb2.py", "inference_pb2.pyi")


def test_generated_messages_are_current(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'images/server'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            str(PROTO_DIR / "inference.proto"),
        ],
        check=True,
        timeout=60,
    )
    for name in GENERATED:
        fresh = (tmp_path / "mlops_server/proto" / name).read_text()
        assert fresh == (PROTO_DIR / name).read_text(), f"{name} is stale: run `make protos`"


COMPARE = r"""
import sys
from google.protobuf import descriptor_pb2, descriptor_pool

# Our serialized file descriptor, read without importing our module into the default pool.
source = open(sys.argv[1]).read()
start = source.index("AddSerializedFile(") + len("AddSerializedFile(")
import ast
serialized = ast.literal_eval(source[start : source.index("')", start) + 1])
pool = descriptor_pool.DescriptorPool()
pool.Add(descriptor_pb2.FileDescriptorProto.FromString(serialized))
ours = pool.FindFileByName("mlops_server/proto/inference.proto")

import tritonclient.grpc.service_pb2  # noqa: F401  (registers upstream's messages)
theirs = descriptor_pool.Default()

def walk(message):
    yield message
    for nested in message.nested_types:
        yield from walk(nested)

problems, checked = [], 0
for top in ours.message_types_by_name.values():
    for message in walk(top):
        upstream = theirs.FindMessageTypeByName(message.full_name)
        for field in message.fields:
            other = upstream.fields_by_name.get(field.name)
            checked += 1
            same = other is not None and (other.number, other.type, other.label) == (field.number, field.type, field.label)
            if same and field.message_type is not None:
                same = other.message_type.full_name == field.message_type.full_name
            if same and field.enum_type is not None:
                same = other.enum_type.full_name == field.enum_type.full_name
            if not same:
                problems.append(f"{message.full_name}.{field.name}")
for enum in ours.enum_types_by_name.values():
    upstream = theirs.FindEnumTypeByName(enum.full_name)
    for value in enum.values:
        checked += 1
        if upstream.values_by_name[value.name].number != value.number:
            problems.append(f"{enum.full_name}.{value.name}")
service = ours.services_by_name["GRPCInferenceService"]
upstream = theirs.FindServiceByName("inference.GRPCInferenceService")
for method in service.methods:
    checked += 1
    other = upstream.methods_by_name.get(method.name)
    if other is None or (other.input_type.full_name, other.output_type.full_name) != (
        method.input_type.full_name, method.output_type.full_name
    ):
        problems.append(f"rpc {method.name}")
print(checked, problems)
"""


def test_wire_compatible_with_upstream_descriptors() -> None:
    out = subprocess.run(
        [sys.executable, "-c", COMPARE, str(PROTO_DIR / "inference_pb2.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    checked, problems = out.split(" ", 1)
    assert problems.strip() == "[]"
    assert int(checked) > 100  # every field of every message was looked at
