"""trainer-svc imports no training stack (issue 15): every module of modelforge_trainer is imported in
a fresh interpreter, which then must hold none of the runtime's heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes", "unsloth")

PROBE = """
import importlib, json, pkgutil, sys
import modelforge_trainer
names = [m.name for m in pkgutil.walk_packages(modelforge_trainer.__path__, "modelforge_trainer.")]
for name in names:
    importlib.import_module(name)
forbidden = json.loads(sys.argv[1])
print(json.dumps({"modules": names, "loaded": sorted(n for n in sys.modules if n.split(".")[0] in forbidden)}))
"""


def test_no_module_of_trainer_svc_imports_the_training_stack() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(FORBIDDEN)], capture_output=True, text=True, timeout=120, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # The walk found the service's modules (a probe that imported nothing would pass vacuously).
    assert {"modelforge_trainer.service", "modelforge_trainer.runner", "modelforge_trainer.insight"} <= set(
        report["modules"]
    )
    assert report["loaded"] == []
