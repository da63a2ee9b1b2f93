"""The rendered Kubernetes overlays: schema-valid, and the deployment policies hold (STYLE P14-P16)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelforge_common.settings import DEFAULT_PORTS, port_of

SCHEMAS = Path(__file__).resolve().parent / "schemas"
# The oldest Kubernetes the manifests are written for (native gRPC probes GA in 1.27, the preStop
# `sleep` action on by default since 1.30); docs/deploy.md states the same.
KUBERNETES_VERSION = "1.30"
NAMESPACE = "modelforge"
SERVICES = ("gateway", "trainer", "registry", "hardware", "inference")
GRPC_SERVICES = ("trainer", "registry", "hardware", "inference")
GPU_SERVICES = ("trainer", "inference")
OUR_IMAGE = re.compile(r"^(?:.+/)?modelforge/(?P<svc>[a-z]+)(?::(?P<tag>[^@]+))?(?:@sha256:[0-9a-f]{64})?$")
# Values that look like credentials: Hugging Face tokens, private keys, long random strings.
SECRET_LOOKING = re.compile(r"hf_[A-Za-z0-9]{20,}|-----BEGIN|[A-Za-z0-9+/_=-]{32,}")
SECRET_NAMES = re.compile(r"TOKEN|PASSWORD|SECRET|API_KEY|CREDENTIAL", re.IGNORECASE)


def app_of(workload: dict[str, Any]) -> str:
    return workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]


def is_ours(container: dict[str, Any]) -> bool:
    return OUR_IMAGE.match(container["image"]) is not None


# ---- rendering and schemas -------------------------------------------------------------------


def test_every_object_is_in_the_namespace_and_labelled(rendered) -> None:
    for obj in rendered.objects:
        assert obj["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "modelforge"
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == NAMESPACE
            continue
        assert obj["metadata"].get("namespace") == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


def test_builtin_objects_validate_against_the_kubernetes_schemas(rendered) -> None:
    validated = 0
    for obj in rendered.objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{rendered.overlay}: {obj['kind']}/{obj['metadata']['name']}: {exc.message} at {exc.path}")
        validated += 1
    assert validated >= 25


def test_scaled_objects_validate_against_the_vendored_keda_schema(gpu) -> None:
    schema = json.loads((SCHEMAS / "scaledobject-keda-v1alpha1.json").read_text())
    scaled = gpu.of_kind("ScaledObject")
    assert scaled
    for obj in scaled:
        jsonschema.validate(obj, schema)


def test_the_vendored_keda_schema_rejects_an_unknown_field(gpu) -> None:
    schema = json.loads((SCHEMAS / "scaledobject-keda-v1alpha1.json").read_text())
    broken = json.loads(json.dumps(gpu.get("ScaledObject", "trainer")))
    broken["spec"]["maxReplicas"] = 3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# ---- containers: probes, resources, security ----------------------------------------------------


def test_every_container_has_readiness_and_liveness_probes(rendered) -> None:
    for workload, container in rendered.iter_containers():
        where = f"{rendered.overlay}: {workload['metadata']['name']}/{container['name']}"
        assert "readinessProbe" in container, where
        assert "livenessProbe" in container, where


def test_grpc_services_use_native_grpc_probes_on_their_port(rendered) -> None:
    for app in GRPC_SERVICES:
        workload = rendered.workload(app)
        (container,) = rendered.containers(workload)
        (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "grpc"]
        assert port == DEFAULT_PORTS[app]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port, f"{app} {probe}"


def test_gateway_probes_are_http_healthz_and_readyz(rendered) -> None:
    (container,) = rendered.containers(rendered.workload("gateway"))
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["port"] == "http"
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    assert port == DEFAULT_PORTS["gateway"] == int(rendered.config()["MODELFORGE_GATEWAY_PORT"])


def test_model_loading_services_have_a_patient_startup_probe(rendered) -> None:
    for app in GPU_SERVICES:
        (container,) = rendered.containers(rendered.workload(app))
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, app


def test_every_container_has_cpu_and_memory_requests_and_limits(rendered) -> None:
    for workload in rendered.workloads():
        for container in rendered.containers(workload) + rendered.containers(workload, init=True):
            resources = container.get("resources", {})
            for part in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in resources.get(part, {}), (
                        f"{rendered.overlay}: {workload['metadata']['name']}/{container['name']} {part}.{resource}"
                    )


def test_every_container_is_locked_down(rendered) -> None:
    for workload in rendered.workloads():
        pod = rendered.pod_spec(workload)
        pod_security = pod.get("securityContext", {})
        assert pod_security.get("runAsNonRoot") is True, workload["metadata"]["name"]
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        assert pod.get("automountServiceAccountToken") is False
        for container in rendered.containers(workload) + rendered.containers(workload, init=True):
            where = f"{rendered.overlay}: {workload['metadata']['name']}/{container['name']}"
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("readOnlyRootFilesystem") is True, where
            assert security.get("runAsNonRoot") is True, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            assert "privileged" not in security or security["privileged"] is False, where


def test_our_containers_get_a_writable_tmp_on_their_read_only_root(rendered) -> None:
    for workload in rendered.workloads():
        volumes = {v["name"]: v for v in rendered.pod_spec(workload).get("volumes", [])}
        for container in rendered.containers(workload) + rendered.containers(workload, init=True):
            if not is_ours(container):
                continue
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{workload['metadata']['name']}/{container['name']}"
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_termination_grace_exceeds_the_services_shutdown_grace(rendered) -> None:
    for app in SERVICES:
        workload = rendered.workload(app)
        (container,) = rendered.containers(workload)
        grace = float(rendered.env_value(container, "MODELFORGE_SHUTDOWN_GRACE_S")["value"])
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        budget = rendered.pod_spec(workload)["terminationGracePeriodSeconds"]
        assert budget > grace + pre_stop, f"{app}: {budget} <= {grace} + {pre_stop}"


def test_env_references_are_defined_before_use(rendered) -> None:
    for workload in rendered.workloads():
        for container in rendered.containers(workload) + rendered.containers(workload, init=True):
            defined: set[str] = set()
            for entry in container.get("env", []):
                for ref in re.findall(r"\$\(([A-Z0-9_]+)\)", entry.get("value", "")):
                    assert ref in defined, f"{container['name']}: {entry['name']} uses $({ref}) before it is set"
                defined.add(entry["name"])


# ---- images -------------------------------------------------------------------------------------


def test_every_image_is_pinned_and_none_is_latest(rendered) -> None:
    for workload in rendered.workloads():
        for container in rendered.containers(workload) + rendered.containers(workload, init=True):
            image = container["image"]
            name = image.split("@")[0]
            tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
            assert tag or "@sha256:" in image, f"{image} has no tag"
            assert tag != "latest", image
            assert container.get("imagePullPolicy") == "IfNotPresent", image


def test_our_images_are_the_five_services_at_one_tag(rendered) -> None:
    seen: dict[str, str] = {}
    for workload in rendered.workloads():
        for container in rendered.containers(workload) + rendered.containers(workload, init=True):
            match = OUR_IMAGE.match(container["image"])
            if match:
                seen[match["svc"]] = match["tag"]
                assert match["svc"] == app_of(workload), container["image"]
    assert set(seen) == set(SERVICES)
    assert len(set(seen.values())) == 1, seen


# ---- secrets ------------------------------------------------------------------------------------


def test_no_secret_objects_are_shipped(rendered) -> None:
    assert rendered.of_kind("Secret") == []


def test_secret_looking_variables_come_from_secrets(rendered) -> None:
    for workload in rendered.workloads():
        for container in rendered.containers(workload) + rendered.containers(workload, init=True):
            for entry in container.get("env", []):
                where = f"{rendered.overlay}: {container['name']}.{entry['name']}"
                value = entry.get("value", "")
                assert not SECRET_LOOKING.search(re.sub(r"\$\([A-Z0-9_]+\)", "", value)), where
                if SECRET_NAMES.search(entry["name"]) and entry["name"] not in ("MODELFORGE_DATABASE_URL",):
                    assert "secretKeyRef" in entry.get("valueFrom", {}), where
            for source in container.get("envFrom", []):
                assert "configMapRef" in source or "secretRef" in source


def test_config_maps_hold_no_credentials(rendered) -> None:
    for config_map in rendered.of_kind("ConfigMap"):
        for key, value in config_map.get("data", {}).items():
            assert not SECRET_NAMES.search(key), key
            assert not SECRET_LOOKING.search(value), key


def test_database_url_carries_the_password_only_by_reference(gpu) -> None:
    registry = gpu.workload("registry")
    for container in gpu.containers(registry) + gpu.containers(registry, init=True):
        url = gpu.env_value(container, "MODELFORGE_DATABASE_URL")["value"]
        assert url.startswith("postgresql+psycopg://")
        assert "$(MODELFORGE_DATABASE_PASSWORD)" in url
        password = gpu.env_value(container, "MODELFORGE_DATABASE_PASSWORD")
        assert password["valueFrom"]["secretKeyRef"]["name"] == "modelforge-postgres"


# ---- GPU scheduling ------------------------------------------------------------------------------


def gpu_limit(container: dict[str, Any]) -> int:
    return int(container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


def selects_gpu_nodes(pod: dict[str, Any]) -> bool:
    if pod.get("nodeSelector", {}).get("nvidia.com/gpu.present") == "true":
        return True
    required = pod.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    terms = required["nodeSelectorTerms"] if required else []
    return any(expr["key"].startswith("nvidia.com/gpu") for t in terms for expr in t.get("matchExpressions", []))


def tolerates_gpu_taint(pod: dict[str, Any]) -> bool:
    return any(
        t.get("key") == "nvidia.com/gpu" and t.get("effect") in ("NoSchedule", None) for t in pod.get("tolerations", [])
    )


def test_gpu_overlay_gives_trainer_and_inference_a_whole_gpu_on_a_gpu_node(gpu) -> None:
    for app in GPU_SERVICES:
        workload = gpu.workload(app)
        pod = gpu.pod_spec(workload)
        (container,) = gpu.containers(workload)
        assert gpu_limit(container) >= 1, app
        requested = container["resources"].get("requests", {}).get("nvidia.com/gpu")
        assert requested is None or int(requested) == gpu_limit(container), app
        assert selects_gpu_nodes(pod), app
        assert tolerates_gpu_taint(pod), app
        shm = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/dev/shm"]
        (volume,) = [v for v in pod["volumes"] if v["name"] == shm]
        assert volume["emptyDir"]["medium"] == "Memory"


def test_only_trainer_and_inference_take_gpus(gpu) -> None:
    takers = {app_of(w) for w, c in gpu.iter_containers() if gpu_limit(c)}
    assert takers == set(GPU_SERVICES)


def test_gpu_overlay_runs_hardware_as_a_daemonset_on_gpu_nodes_without_taking_a_gpu(gpu) -> None:
    hardware = gpu.workload("hardware")
    assert hardware["kind"] == "DaemonSet"
    assert not gpu.has("Deployment", "hardware")
    pod = gpu.pod_spec(hardware)
    assert selects_gpu_nodes(pod) and tolerates_gpu_taint(pod)
    (container,) = gpu.containers(hardware)
    assert gpu_limit(container) == 0
    assert gpu.env_value(container, "NVIDIA_DRIVER_CAPABILITIES")["value"] == "utility"


def test_cpu_overlay_has_nothing_gpu(cpu) -> None:
    for workload in cpu.workloads():
        pod = cpu.pod_spec(workload)
        assert not selects_gpu_nodes(pod), workload["metadata"]["name"]
        assert not tolerates_gpu_taint(pod), workload["metadata"]["name"]
        for container in cpu.containers(workload):
            assert gpu_limit(container) == 0
    assert cpu.workload("hardware")["kind"] == "Deployment"


# ---- networking -----------------------------------------------------------------------------------


def test_services_have_named_ports_that_reach_named_container_ports(rendered) -> None:
    for service in rendered.of_kind("Service"):
        app = service["spec"]["selector"]["app.kubernetes.io/name"]
        workload = rendered.workload(app)
        container_ports = {p["name"]: p["containerPort"] for c in rendered.containers(workload) for p in c["ports"]}
        for port in service["spec"]["ports"]:
            assert port.get("name"), f"{service['metadata']['name']} has an unnamed port"
            assert port["targetPort"] in container_ports, f"{service['metadata']['name']}:{port['name']}"
            assert container_ports[port["targetPort"]] == port["port"]


def test_configured_addresses_point_at_the_services(rendered) -> None:
    config = rendered.config()
    for app in GRPC_SERVICES:
        host, _, port = config[f"MODELFORGE_{app.upper()}_ADDR"].partition(":")
        service = rendered.get("Service", host)
        assert int(port) in [p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"]
        assert port_of(config[f"MODELFORGE_{app.upper()}_ADDR"]) == DEFAULT_PORTS[app]
    assert config["MODELFORGE_BIND_HOST"] == "0.0.0.0"
    nats_host, nats_port = config["MODELFORGE_NATS_URL"].removeprefix("nats://").split(":")
    assert int(nats_port) in [p["port"] for p in rendered.get("Service", nats_host)["spec"]["ports"]]


def allowed_sources(rendered, app: str, port: int) -> set[str]:
    """Who the NetworkPolicies let reach app:port: app names, "namespace", or "outside"."""
    sources: set[str] = set()
    for policy in rendered.of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector and selector.get("app.kubernetes.io/name") != app:
            continue
        for rule in policy["spec"].get("ingress", []):
            if "ports" in rule and port not in [p["port"] for p in rule["ports"]]:
                continue
            if "from" not in rule:
                sources.add("outside")
            for peer in rule.get("from", []):
                if "ipBlock" in peer or "namespaceSelector" in peer:
                    sources.add("outside")
                elif peer["podSelector"].get("matchLabels"):
                    sources.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
                else:
                    sources.add("namespace")
    return sources


def test_ingress_is_denied_by_default(rendered) -> None:
    deny = rendered.get("NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {}
    assert deny["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny["spec"]


def test_who_may_reach_whom(rendered) -> None:
    expected = {
        ("gateway", 8000): {"outside"},
        ("trainer", 50051): {"gateway"},
        ("registry", 50052): {"gateway", "trainer"},
        ("hardware", 50053): {"gateway", "trainer"},
        ("inference", 50054): {"gateway"},
        ("nats", 4222): {"namespace"},
    }
    if rendered.overlay == "gpu":
        expected[("postgres", 5432)] = {"registry"}
    for (app, port), sources in expected.items():
        assert allowed_sources(rendered, app, port) == sources, f"{rendered.overlay}: {app}:{port}"


def test_only_the_gateway_is_open_outside_the_namespace(rendered) -> None:
    for policy in rendered.of_kind("NetworkPolicy"):
        app = policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            opens_outside = peers is None or any("ipBlock" in p or "namespaceSelector" in p for p in peers)
            if not opens_outside or app == "gateway":
                continue
            # The one exception: the KEDA operator reads NATS's monitoring port (gpu overlay).
            assert app == "nats" and [p["port"] for p in rule["ports"]] == [8222], policy["metadata"]["name"]
            assert peers == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}}}]


# ---- availability, storage, scaling, migrations -----------------------------------------------------


def test_every_deployment_has_a_disruption_budget(rendered) -> None:
    budgets = rendered.of_kind("PodDisruptionBudget")
    for deployment in rendered.of_kind("Deployment"):
        labels = rendered.pod_labels(deployment)
        matching = [b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(matching) == 1, deployment["metadata"]["name"]
    assert len(budgets) == len(rendered.of_kind("Deployment"))


def test_artifact_volume_is_shared_by_trainer_inference_and_registry(rendered) -> None:
    data_dir = rendered.config()["MODELFORGE_DATA_DIR"]
    for app in ("trainer", "inference", "registry"):
        workload = rendered.workload(app)
        (container,) = rendered.containers(workload)
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == data_dir]
        assert not mount.get("readOnly"), app
        (volume,) = [v for v in rendered.pod_spec(workload)["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"]["claimName"] == "modelforge-artifacts"


def test_artifact_volume_is_read_write_many_in_production(gpu, cpu) -> None:
    assert gpu.get("PersistentVolumeClaim", "modelforge-artifacts")["spec"]["accessModes"] == ["ReadWriteMany"]
    # Laptop provisioners offer no RWX; RWO is per node and a laptop cluster is one node.
    assert cpu.get("PersistentVolumeClaim", "modelforge-artifacts")["spec"]["accessModes"] == ["ReadWriteOnce"]


def test_trainer_scales_on_the_training_job_queue(gpu, cpu) -> None:
    scaled = gpu.get("ScaledObject", "trainer")
    assert scaled["spec"]["scaleTargetRef"]["name"] == gpu.workload("trainer")["metadata"]["name"]
    assert scaled["spec"]["minReplicaCount"] >= 1  # one pod always serves the trainer's gRPC API
    assert "replicas" not in gpu.workload("trainer")["spec"]  # KEDA owns the count; apply must not reset it
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"]["stream"] == "TRAINING_JOBS"
    assert trigger["metadata"]["consumer"] == "trainer"
    host, port = trigger["metadata"]["natsServerMonitoringEndpoint"].split(":")
    assert host == f"nats.{NAMESPACE}.svc.cluster.local"
    assert int(port) in [p["port"] for p in gpu.get("Service", "nats")["spec"]["ports"] if p["name"] == "monitor"]
    assert cpu.of_kind("ScaledObject") == []


def test_registry_migrates_the_schema_before_it_serves(rendered) -> None:
    registry = rendered.workload("registry")
    (migrate,) = rendered.containers(registry, init=True)
    (server,) = rendered.containers(registry)
    assert migrate["image"] == server["image"]
    assert migrate.get("args") == ["migrate"] and "command" not in migrate  # python -m modelforge_registry migrate
    assert rendered.env_value(migrate, "MODELFORGE_DATABASE_URL") == rendered.env_value(
        server, "MODELFORGE_DATABASE_URL"
    )


def test_cpu_overlay_keeps_sqlite_on_its_own_volume_with_one_writer(cpu) -> None:
    registry = cpu.workload("registry")
    assert registry["spec"]["replicas"] == 1 and registry["spec"]["strategy"]["type"] == "Recreate"
    (server,) = cpu.containers(registry)
    url = cpu.env_value(server, "MODELFORGE_DATABASE_URL")["value"]
    assert url.startswith("sqlite:////")
    db_dir = str(Path(url.removeprefix("sqlite:///")).parent)
    for container in cpu.containers(registry) + cpu.containers(registry, init=True):
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == db_dir]
        (volume,) = [v for v in cpu.pod_spec(registry)["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"]["claimName"] == "registry-db"
    assert not cpu.has("StatefulSet", "postgres")


def test_gpu_overlay_runs_postgres_with_its_password_from_a_secret(gpu) -> None:
    postgres = gpu.get("StatefulSet", "postgres")
    (container,) = gpu.containers(postgres)
    password = gpu.env_value(container, "POSTGRES_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {"name": "modelforge-postgres", "key": "password"}
    assert postgres["spec"]["volumeClaimTemplates"]


def test_nats_runs_jetstream_on_its_own_volume_behind_a_headless_service(rendered) -> None:
    nats = rendered.get("StatefulSet", "nats")
    (container,) = rendered.containers(nats)
    assert "-js" in container["args"]
    assert nats["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert rendered.get("Service", "nats")["spec"]["clusterIP"] == "None"
    config_volume = [v for v in rendered.pod_spec(nats)["volumes"] if "configMap" in v]
    assert config_volume and config_volume[0]["configMap"]["name"].startswith("nats-config")


def test_a_site_overlay_as_in_the_docs_retargets_images_and_storage(kubectl, tmp_path) -> None:
    """docs/deploy.md's recipe: an overlay of your own on top of overlays/gpu, outside the repo."""
    site = tmp_path / "modelforge-site"
    site.mkdir()
    gpu_overlay = os.path.relpath(Path(__file__).resolve().parents[1] / "k8s" / "overlays" / "gpu", site)
    images = "\n".join(
        f"  - name: modelforge/{svc}\n    newName: registry.example.com/modelforge/{svc}" for svc in SERVICES
    )
    (site / "kustomization.yaml").write_text(
        f"""apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {gpu_overlay}
images:
{images}
patches:
  - target:
      kind: PersistentVolumeClaim
      name: modelforge-artifacts
    patch: |
      - op: add
        path: /spec/storageClassName
        value: nfs-client
"""
    )
    out = subprocess.run([kubectl, "kustomize", str(site)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    objects = [doc for doc in yaml.safe_load_all(out.stdout) if doc]
    images_seen = {
        c["image"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
        for c in o["spec"]["template"]["spec"]["containers"]
    }
    for svc in SERVICES:
        assert f"registry.example.com/modelforge/{svc}:0.1.0" in images_seen
    claims = [o for o in objects if o["kind"] == "PersistentVolumeClaim"]
    (pvc,) = [o for o in claims if o["metadata"]["name"] == "modelforge-artifacts"]
    assert pvc["spec"]["storageClassName"] == "nfs-client"
