"""The runtime knows nothing of gRPC, NATS or trainer-svc (issue 15): every module of modelforge_training
is imported in a fresh interpreter, which then must hold none of them. Protobuf messages
(modelforge.v1.*_pb2) are allowed; their gRPC stubs (*_pb2_grpc) are not."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import importlib, json, pkgutil, sys
import modelforge_training
names = [m.name for m in pkgutil.walk_packages(modelforge_training.__path__, "modelforge_training.")]
# unsloth needs an NVIDIA GPU to import; its provider module is loaded only for unsloth jobs.
for name in names:
    if name != "modelforge_training.providers.unsloth":
        importlib.import_module(name)
loaded = sorted(
    n for n in sys.modules
    if n.split(".")[0] in ("grpc", "nats", "modelforge_trainer") or n.startswith("grpc_") or n.endswith("_pb2_grpc")
)
print(json.dumps({"modules": names, "loaded": loaded}))
"""


def test_no_module_of_the_runtime_imports_grpc_nats_or_the_service() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=True)
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"modelforge_training.run", "modelforge_training.strategies.sft", "modelforge_training.events"} <= set(
        report["modules"]
    )
    assert report["loaded"] == []
