"""components/kubeflow (issue 19): the ClusterTrainingRuntime trainer-svc's TrainJobs reference, the
trainer's access to TrainJobs, and its kubeflow backend. Kubeflow objects are checked against Kubeflow
Trainer's own CRD schemas (schemas/kubeflow, copied from ../shared/k8s/kubeflow-trainer; there is no
cluster here); the built-in ones against Kubernetes' schemas like every other object."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_siblings import sibling

_fixtures = sibling("deploy_conftest")
manifests = sibling("deploy_test_manifests")
Rendered = _fixtures.Rendered

SCHEMAS = Path(__file__).with_name("schemas") / "kubeflow"
REPO = Path(__file__).resolve().parents[2]
KUBEFLOW_GROUP = "trainer.kubeflow.org/"


def crd_schema(file_name: str) -> dict[str, Any]:
    text = (SCHEMAS / file_name).read_text()
    crd = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return version["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="module")
def with_kubeflow(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    site = tmp_path_factory.mktemp("site")
    return Rendered("gpu+kubeflow", _fixtures.render_site(kubectl, site, "gpu", components=["kubeflow"]))


def runtime_of(rendered: Any) -> dict[str, Any]:
    (runtime,) = rendered.of_kind("ClusterTrainingRuntime")
    return runtime


def runtime_pod(runtime: dict[str, Any]) -> dict[str, Any]:
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return node["template"]["spec"]["template"]["spec"]


def test_kubeflow_objects_validate_against_kubeflows_crd_schemas(with_kubeflow: Any) -> None:
    schema = crd_schema("trainer.kubeflow.org_clustertrainingruntimes.yaml")
    kubeflow = [obj for obj in with_kubeflow.objects if obj["apiVersion"].startswith(KUBEFLOW_GROUP)]
    assert [obj["kind"] for obj in kubeflow] == ["ClusterTrainingRuntime"]
    for obj in kubeflow:
        jsonschema.Draft7Validator(schema).validate(obj)
    broken = {**kubeflow[0], "spec": {**kubeflow[0]["spec"], "mlPolicy": {"numNodes": "two"}}}
    with pytest.raises(jsonschema.ValidationError):  # the check does catch a wrong object
        jsonschema.Draft7Validator(schema).validate(broken)


def test_builtin_objects_validate_and_keep_the_policies(with_kubeflow: Any) -> None:
    for obj in with_kubeflow.objects:
        if obj["apiVersion"].startswith(("keda.sh/", "monitoring.coreos.com/", KUBEFLOW_GROUP)):
            continue
        kubernetes_validate.validate(obj, manifests.KUBERNETES_VERSION, strict=True)
    for policy in (
        manifests.test_every_object_is_in_the_namespace_and_labelled,
        manifests.test_every_container_has_readiness_and_liveness_probes,
        manifests.test_every_container_has_cpu_and_memory_requests_and_limits,
        manifests.test_every_image_is_pinned_and_none_is_latest,
    ):
        policy(with_kubeflow)


def test_the_runtime_is_the_one_the_trainer_references_with_its_image_and_volume(with_kubeflow: Any) -> None:
    runtime = runtime_of(with_kubeflow)
    source = (REPO / "trainer-svc" / "src" / "modelforge_trainer" / "kubeflow.py").read_text()
    referenced = re.search(r'^RUNTIME_NAME = "([^"]+)"', source, re.MULTILINE)
    assert referenced is not None and runtime["metadata"]["name"] == referenced.group(1)
    # The pods run the training runtime (its own package, in the trainer image) under torchrun.
    launched = re.search(r'^WORKER_MODULE = "([^"]+)"', source, re.MULTILINE)
    assert launched is not None and launched.group(1) == "modelforge_training"
    assert (REPO / "training" / "src" / "modelforge_training" / "__main__.py").is_file()
    assert runtime["spec"]["mlPolicy"]["torch"] == {}  # the torch policy: torchrun's PET_* variables
    pod = runtime_pod(runtime)
    (container,) = pod["containers"]
    trainer_pod = with_kubeflow.pod_spec(with_kubeflow.workload("trainer"))
    (trainer,) = trainer_pod["containers"]
    assert container["image"] == trainer["image"] == "modelforge/trainer:0.1.0"  # the same worker code

    def data_claim(spec: dict[str, Any], mounts: list[dict[str, Any]]) -> tuple[str, str]:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"]
                  if "persistentVolumeClaim" in v}
        (mount,) = [m for m in mounts if m["name"] in claims]
        return claims[mount["name"]], mount["mountPath"]

    # Job files, checkpoints and adapters at the same paths on both sides.
    assert data_claim(pod, container["volumeMounts"]) == data_claim(trainer_pod, trainer["volumeMounts"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/dev/shm"}


def test_the_trainer_runs_the_kubeflow_backend_with_access_to_trainjobs_only(with_kubeflow: Any) -> None:
    trainer_pod = with_kubeflow.pod_spec(with_kubeflow.workload("trainer"))
    (trainer,) = trainer_pod["containers"]
    assert with_kubeflow.env_value(trainer, "MODELFORGE_TRAINER_BACKEND")["value"] == "kubeflow"
    assert trainer_pod["automountServiceAccountToken"] is True
    (role,) = with_kubeflow.of_kind("Role")
    assert role["rules"] == [{"apiGroups": ["trainer.kubeflow.org"], "resources": ["trainjobs"],
                              "verbs": ["create", "get", "list", "watch", "delete"]}]
    (binding,) = with_kubeflow.of_kind("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": trainer_pod["serviceAccountName"],
                                    "namespace": "modelforge"}]


def test_trainjob_pods_reach_each_other_and_nats(with_kubeflow: Any) -> None:
    policies = {p["metadata"]["name"]: p for p in with_kubeflow.of_kind("NetworkPolicy")}
    peers = policies["trainjob-pods-from-each-other"]
    label = runtime_pod_labels(runtime_of(with_kubeflow))
    assert peers["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": label}
    assert peers["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": label}}}]}]
    nats = policies["nats-from-namespace"]
    assert nats["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]  # rank 0's progress gets in


def runtime_pod_labels(runtime: dict[str, Any]) -> str:
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return str(node["template"]["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"])
