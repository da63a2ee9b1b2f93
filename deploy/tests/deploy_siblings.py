"""The other modules of this folder, for test modules that share their helpers: the tests run in
importlib mode, so siblings are not importable by name (conftest.py puts this folder on sys.path so
that this one module is)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def sibling(name: str) -> ModuleType:
    """`deploy_<file stem>`: that file of this folder, loaded once (e.g. deploy_conftest, deploy_test_manifests)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name.split('_', 1)[1]}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
