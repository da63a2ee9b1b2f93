"""Secrets reach only the pods that read them, and with the API-keys Secret created as docs/deploy.md
says, the gateway's probes still answer without a key (issue 14, items 5 and 8)."""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from modelforge_devkit.stack import SECRET_CONSUMERS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")
# The Secrets each workload's pods may reference (by app.kubernetes.io/name): no other pod sees them.
SECRET_USERS: dict[str, set[str]] = {
    "gateway": {"modelforge-api-keys"},
    "trainer": {"modelforge-hf"},
    "inference": {"modelforge-hf"},
    "hardware": {"modelforge-hf"},
    "registry": {"modelforge-postgres", "modelforge-hf"},
    "postgres": {"modelforge-postgres"},
    "nats": set(),
}


def secrets_referenced(pod: dict[str, Any]) -> set[str]:
    """Every Secret a pod spec reads: env secretKeyRef, envFrom secretRef, secret and projected volumes."""
    names: set[str] = set()
    for container in pod.get("initContainers", []) + pod["containers"]:
        for entry in container.get("env", []):
            reference = entry.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                names.add(reference["name"])
        for source in container.get("envFrom", []):
            if "secretRef" in source:
                names.add(source["secretRef"]["name"])
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            names.add(volume["secret"]["secretName"])
        for source in volume.get("projected", {}).get("sources", []):
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


def test_each_workload_references_only_the_secrets_it_uses(rendered) -> None:
    for workload in rendered.workloads():
        app = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        used = secrets_referenced(rendered.pod_spec(workload))
        # A new workload declares here which Secrets it reads (none unless listed).
        expected = SECRET_USERS.get(app, set())
        if rendered.overlay != "gpu" and app == "registry":
            expected = expected - {"modelforge-postgres"}  # the cpu overlay's registry keeps SQLite
        assert used == expected, f"{rendered.overlay}: {app} reads {sorted(used)} (SECRET_USERS says {expected})"


def test_secret_variables_go_where_the_local_launcher_sends_them(rendered) -> None:
    """The manifests and `make up` (modelforge_devkit.stack.SECRET_CONSUMERS) give each secret variable
    to the same services."""
    seen: dict[str, set[str]] = {}
    for workload in rendered.workloads():
        app = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        for container in rendered.containers(workload) + rendered.containers(workload, init=True):
            names = {entry["name"] for entry in container.get("env", [])}
            for variable in names & set(SECRET_CONSUMERS):
                seen.setdefault(variable, set()).add(app)
    for variable, apps in seen.items():
        assert apps <= SECRET_CONSUMERS[variable], f"{rendered.overlay}: {variable} reaches {sorted(apps)}"
    assert seen["MODELFORGE_API_KEYS"] == {"gateway"}
    assert seen["MODELFORGE_HF_TOKEN"] == {"inference"}


def test_the_docs_secrets_table_names_the_pods_that_read_each_secret(gpu) -> None:
    table = {}
    for line in DOCS.read_text().splitlines():
        match = re.match(r"^\| `(modelforge-[a-z-]+)` \| [^|]+ \| ([^|]+) \|", line)
        if match:
            table[match.group(1)] = {word.split(" ")[0] for word in match.group(2).strip().split(", ")}
    users: dict[str, set[str]] = {}
    for workload in gpu.workloads():
        app = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
        for name in secrets_referenced(gpu.pod_spec(workload)):
            users.setdefault(name, set()).add(app)
    assert table == users


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_gateway_probes_answer_without_a_key_when_the_keys_secret_exists(
    overlay: str, site_render, secret_yaml, env_of, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelforge_gateway.main import create_app
    from modelforge_gateway.settings import GatewaySettings

    key = secrets.token_hex(32)  # docs/deploy.md: --from-literal=api-keys="$(openssl rand -hex 32)"
    objects = site_render(
        overlay, extra_resources={"api-keys.yaml": secret_yaml("modelforge-api-keys", {"api-keys": key})}
    )
    (gateway,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "gateway"]
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    env = env_of(objects, container)
    assert env["MODELFORGE_API_KEYS"] == key  # the Secret reaches the gateway under the name it reads
    paths = {container[probe]["httpGet"]["path"] for probe in PROBES if "httpGet" in container.get(probe, {})}
    assert {"/healthz", "/readyz"} <= paths

    # The gateway as the pod runs it: exactly the rendered MODELFORGE_* environment.
    for name in list(os.environ):
        if name.startswith("MODELFORGE_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with TestClient(create_app(GatewaySettings())) as client:
        # The key is in force: an API route without it is refused, with it admitted.
        assert client.get("/openapi.json").status_code == 401
        assert client.get("/openapi.json", headers={"Authorization": f"Bearer {key}"}).status_code == 200
        for path in sorted(paths):
            answer = client.get(path)  # as the kubelet asks: no Authorization header
            assert answer.status_code in (200, 503), f"{overlay}: {path} -> {answer.status_code} {answer.text}"
