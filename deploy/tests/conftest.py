"""Fixtures for the deployment tests: the overlays rendered once by a real kubectl (its built-in
kustomize), and small accessors over the rendered objects.

kubectl comes from the install step (deploy/tools/install_kubectl.py puts a pinned one in the venv);
one on PATH works too. Rendering is offline: kustomize only reads deploy/k8s/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
NAMESPACE = "modelforge"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
# Kustomize >= 5 (components, `labels`, multi-document delete patches); kubectl >= 1.27 ships it.
MIN_KUSTOMIZE_MAJOR = 5


def find_kubectl() -> str:
    candidates = [Path(sys.executable).parent / "kubectl", shutil.which("kubectl")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return str(candidate)
    pytest.fail("no kubectl: run `make install` (deploy/tools/install_kubectl.py installs a pinned one)")


@pytest.fixture(scope="session")
def kubectl() -> str:
    binary = find_kubectl()
    out = subprocess.run([binary, "version", "--client", "-o", "json"], capture_output=True, text=True, check=True)
    kustomize = json.loads(out.stdout).get("kustomizeVersion", "v0")
    major = int(kustomize.lstrip("v").split(".")[0])
    assert major >= MIN_KUSTOMIZE_MAJOR, f"{binary} has kustomize {kustomize}; need v{MIN_KUSTOMIZE_MAJOR}+"
    return binary


def render(kubectl: str, overlay: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"kustomize {overlay} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@dataclass(frozen=True)
class Rendered:
    """One rendered overlay."""

    overlay: str
    objects: list[dict[str, Any]]

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [obj for obj in self.of_kind(kind) if obj["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]

    def has(self, kind: str, name: str) -> bool:
        return any(obj["metadata"]["name"] == name for obj in self.of_kind(kind))

    @staticmethod
    def pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
        return workload["spec"]["template"]["spec"]

    @staticmethod
    def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
        return workload["spec"]["template"]["metadata"].get("labels", {})

    @staticmethod
    def containers(workload: dict[str, Any], *, init: bool = False) -> list[dict[str, Any]]:
        spec = Rendered.pod_spec(workload)
        return list(spec.get("initContainers", [])) if init else list(spec["containers"])

    def iter_containers(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        for workload in self.workloads():
            for container in self.containers(workload):
                yield workload, container

    @staticmethod
    def env_value(container: dict[str, Any], name: str) -> dict[str, Any] | None:
        return next((e for e in container.get("env", []) if e["name"] == name), None)

    def workloads(self) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] in WORKLOAD_KINDS]

    def workload(self, app: str) -> dict[str, Any]:
        """The Deployment/StatefulSet/DaemonSet whose pods carry app.kubernetes.io/name=app."""
        found = [w for w in self.workloads() if self.pod_labels(w).get("app.kubernetes.io/name") == app]
        assert len(found) == 1, f"{self.overlay}: expected one workload for {app}, found {len(found)}"
        return found[0]

    def config(self) -> dict[str, str]:
        """The generated modelforge-config ConfigMap's data (its name carries a hash suffix)."""
        maps = [cm for cm in self.of_kind("ConfigMap") if cm["metadata"]["name"].startswith("modelforge-config")]
        assert len(maps) == 1
        return maps[0]["data"]


@pytest.fixture(scope="session")
def rendered_overlays(kubectl: str) -> dict[str, Rendered]:
    return {overlay: Rendered(overlay, render(kubectl, overlay)) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest, rendered_overlays: dict[str, Rendered]) -> Rendered:
    return rendered_overlays[request.param]


@pytest.fixture
def gpu(rendered_overlays: dict[str, Rendered]) -> Rendered:
    return rendered_overlays["gpu"]


@pytest.fixture
def cpu(rendered_overlays: dict[str, Rendered]) -> Rendered:
    return rendered_overlays["cpu"]
