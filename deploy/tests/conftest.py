"""Fixtures for the deployment tests: the overlays rendered once by a real kubectl (its built-in
kustomize), and small accessors over the rendered objects.

kubectl comes from the install step (deploy/tools/install_kubectl.py puts a pinned one in the venv);
one on PATH works too. Rendering is offline: kustomize only reads deploy/k8s/.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# deploy_siblings.py, the loader of this folder's shared test modules, importable by name.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))
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


# ---- site overlays as docs/deploy.md builds them ---------------------------------------------------
# An overlay of the operator's own, outside the repo, on top of overlays/gpu or overlays/cpu, with the
# Secrets docs/deploy.md creates and optional components; and the environment a container would get
# from the rendered ConfigMaps and Secrets.


def create_secret_yaml(kubectl: str, name: str, literals: dict[str, str]) -> str:
    """What `kubectl -n modelforge create secret generic NAME --from-literal=...` would create (docs/deploy.md
    step 4), as YAML: --dry-run=client needs no cluster."""
    argv = [kubectl, "-n", NAMESPACE, "create", "secret", "generic", name, "--dry-run=client", "-o", "yaml"]
    argv += [f"--from-literal={key}={value}" for key, value in literals.items()]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def render_site(
    kubectl: str,
    site: Path,
    overlay: str,
    *,
    components: Sequence[str] = (),
    extra_resources: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Renders a kustomization in `site` holding overlays/<overlay>, the given components of deploy/k8s and
    extra resource files (file name -> YAML)."""
    site.mkdir(parents=True, exist_ok=True)
    resources = [os.path.relpath(K8S / "overlays" / overlay, site)]
    for file_name, text in (extra_resources or {}).items():
        (site / file_name).write_text(text)
        resources.append(file_name)
    lines = ["apiVersion: kustomize.config.k8s.io/v1beta1", "kind: Kustomization", "resources:"]
    lines += [f"  - {resource}" for resource in resources]
    if components:
        lines.append("components:")
        lines += [f"  - {os.path.relpath(K8S / 'components' / name, site)}" for name in components]
    (site / "kustomization.yaml").write_text("\n".join(lines) + "\n")
    done = subprocess.run([kubectl, "kustomize", str(site)], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of env values (an unknown reference stays as written)."""
    return re.sub(r"\$\(([A-Za-z0-9_]+)\)", lambda m: env.get(m.group(1), m.group(0)), value)


def container_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The variables the kubelet would set in `container`: envFrom ConfigMaps and Secrets, then env entries
    (values, secretKeyRef, configMapKeyRef), from the objects rendered with it. An optional reference to a
    missing Secret or key is left out, as the kubelet does; a required one fails the test."""
    config_maps = {o["metadata"]["name"]: dict(o.get("data", {})) for o in objects if o["kind"] == "ConfigMap"}
    secrets = {
        o["metadata"]["name"]: {k: base64.b64decode(v).decode() for k, v in o.get("data", {}).items()}
        | dict(o.get("stringData", {}))
        for o in objects
        if o["kind"] == "Secret"
    }
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        kind, store = ("configMapRef", config_maps) if "configMapRef" in source else ("secretRef", secrets)
        reference = source[kind]
        if reference["name"] in store:
            env.update(store[reference["name"]])
        else:
            assert reference.get("optional"), f"{container['name']}: {kind} {reference['name']} is not rendered"
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = _expand(entry["value"], env)
            continue
        source = entry.get("valueFrom", {})
        for kind, store in (("secretKeyRef", secrets), ("configMapKeyRef", config_maps)):
            if kind in source:
                reference = source[kind]
                found = store.get(reference["name"], {}).get(reference["key"])
                if found is not None:
                    env[entry["name"]] = found
                else:
                    assert reference.get("optional"), f"{container['name']}.{entry['name']}: {reference} missing"
    return env


@pytest.fixture
def site_render(kubectl: str, tmp_path: Path) -> Callable[..., list[dict[str, Any]]]:
    """render_site in a fresh folder: site_render(overlay, components=..., extra_resources=...)."""
    count = iter(range(1_000))

    def render_one(overlay: str, **options: Any) -> list[dict[str, Any]]:
        return render_site(kubectl, tmp_path / f"site-{next(count)}", overlay, **options)

    return render_one


@pytest.fixture
def secret_yaml(kubectl: str) -> Callable[[str, dict[str, str]], str]:
    """secret_yaml(name, literals): the Secret `kubectl create secret generic` makes (docs/deploy.md step 4)."""
    return lambda name, literals: create_secret_yaml(kubectl, name, literals)


@pytest.fixture
def env_of() -> Callable[[list[dict[str, Any]], dict[str, Any]], dict[str, str]]:
    """env_of(objects, container): the container's environment as the kubelet would build it."""
    return container_env
