"""components/monitoring (issue 14, item 12): Prometheus Operator objects that scrape the gateway's
/metrics and each service's metrics port, rendered into a site overlay as docs/deploy.md says, and
checked statically: schemas, what each monitor selects, and the ports it names."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from fastapi.testclient import TestClient

from modelforge_common.metrics import metrics_port_for
from modelforge_common.settings import DEFAULT_PORTS

SCHEMAS = Path(__file__).resolve().parent / "schemas"
KUBERNETES_VERSION = "1.30"
GRPC_SERVICES = ("trainer", "registry", "hardware", "inference")
MONITORING = "monitoring.coreos.com/v1"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


def schema(kind: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / f"{kind.lower()}-monitoring-coreos-v1.json").read_text())


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against a label set."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        present = expression["key"] in labels
        value = labels.get(expression["key"])
        operator = expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if (operator == "Exists" and not present) or (operator == "DoesNotExist" and present):
            return False
    return True


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOAD_KINDS]


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def container_ports(workload: dict[str, Any]) -> dict[str, int]:
    return {
        port["name"]: port["containerPort"]
        for container in workload["spec"]["template"]["spec"]["containers"]
        for port in container.get("ports", [])
    }


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.fixture(params=["gpu", "cpu"])
def objects(request: pytest.FixtureRequest, site_render) -> list[dict[str, Any]]:
    return site_render(request.param, components=["monitoring"])


def test_monitors_validate_against_the_operator_schemas(objects) -> None:
    monitors = [o for o in objects if o["apiVersion"] == MONITORING]
    assert {o["kind"] for o in monitors} == {"ServiceMonitor", "PodMonitor"}
    for monitor in monitors:
        jsonschema.validate(monitor, schema(monitor["kind"]))


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(pathh="/metrics")),
        ("ServiceMonitor", lambda o: o["spec"]["endpoints"][0].update(interval="30 seconds")),
        ("PodMonitor", lambda o: o["spec"].update(podMetricEndpoints=o["spec"].pop("podMetricsEndpoints"))),
        ("PodMonitor", lambda o: o["spec"].pop("selector")),
    ],
)
def test_the_vendored_schemas_refuse_a_broken_monitor(objects, kind: str, breakage) -> None:
    (monitor,) = of_kind(objects, kind)
    broken = copy.deepcopy(monitor)
    breakage(broken)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema(kind))


def test_builtin_objects_still_validate_with_the_component(objects) -> None:
    for obj in objects:
        if obj["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/")):
            continue
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_component_objects_are_in_the_namespace_and_labelled(objects) -> None:
    for obj in objects:
        if obj["kind"] in ("ServiceMonitor", "PodMonitor") or obj["metadata"]["name"] == "metrics-from-monitoring":
            assert obj["metadata"]["namespace"] == "modelforge"
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelforge"


def test_service_monitor_scrapes_the_gateways_metrics_route_on_its_service(objects) -> None:
    from modelforge_gateway.main import create_app
    from modelforge_gateway.settings import GatewaySettings

    (monitor,) = of_kind(objects, "ServiceMonitor")
    services = [s for s in of_kind(objects, "Service") if selects(monitor["spec"]["selector"], s["metadata"]["labels"])]
    assert [s["metadata"]["name"] for s in services] == ["gateway"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in [p["name"] for p in services[0]["spec"]["ports"]]
    assert endpoint["path"] == "/metrics"
    # As Prometheus asks: without a key, even where the gateway requires one.
    scrape = TestClient(create_app(GatewaySettings(api_keys="ci:a-key"))).get(endpoint["path"])
    assert scrape.status_code == 200 and "# TYPE" in scrape.text


def test_pod_monitor_scrapes_every_service_on_its_metrics_port(objects) -> None:
    (monitor,) = of_kind(objects, "PodMonitor")
    selected = {pod_labels(w)["app.kubernetes.io/name"]: w for w in workloads(objects)
                if selects(monitor["spec"]["selector"], pod_labels(w))}
    assert set(selected) == set(GRPC_SERVICES)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    config = next(o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].startswith("modelforge-config"))
    for app, workload in selected.items():
        ports = container_ports(workload)
        assert endpoint["port"] in ports, app
        # The port the service serves /metrics on (modelforge_common.metrics), with the pod's own settings.
        assert ports[endpoint["port"]] == metrics_port_for(DEFAULT_PORTS[app], env=config["data"]), app


def test_prometheus_may_reach_the_metrics_ports_through_the_network_policies(objects) -> None:
    policy = next(p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"] == "metrics-from-monitoring")
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    (monitor,) = of_kind(objects, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    # A named port: on each selected pod it resolves to that pod's own metrics port.
    assert rule["ports"] == [{"port": endpoint["port"], "protocol": "TCP"}]
    for workload in workloads(objects):
        labels = pod_labels(workload)
        if selects(monitor["spec"]["selector"], labels):
            assert selects(policy["spec"]["podSelector"], labels), labels


def test_the_overlays_alone_need_no_prometheus_operator(rendered) -> None:
    """Without the component nothing needs the operator's CRDs, so `kubectl apply -k overlays/...` works
    on a cluster without them; the metrics ports are there either way."""
    assert not [o for o in rendered.objects if o["apiVersion"] == MONITORING]
    for app in GRPC_SERVICES:
        assert "metrics" in container_ports(rendered.workload(app)), app
