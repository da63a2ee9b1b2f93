"""components/vllm (issue 17): a pinned vLLM OpenAI server on the GPU pool with run-time LoRA loading,
reading adapters from the shared artifacts volume at inference-svc's path, and inference-svc pointed at it.
The deployment policies of test_manifests hold for it too."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
from deploy_siblings import sibling

_fixtures = sibling("deploy_conftest")
manifests = sibling("deploy_test_manifests")
Rendered = _fixtures.Rendered

VLLM_IMAGE = "vllm/vllm-openai:v0.11.0"


@pytest.fixture(scope="module")
def with_vllm(kubectl: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    site = tmp_path_factory.mktemp("site")
    return Rendered("gpu+vllm", _fixtures.render_site(kubectl, site, "gpu", components=["vllm"]))


def _container(rendered: Any, app: str) -> dict[str, Any]:
    (container,) = rendered.containers(rendered.workload(app))
    return container


def test_the_component_renders_valid_objects_under_the_same_policies(with_vllm: Any) -> None:
    for obj in with_vllm.objects:
        if obj["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(obj, manifests.KUBERNETES_VERSION, strict=True)
    for policy in (
        manifests.test_every_object_is_in_the_namespace_and_labelled,
        manifests.test_every_container_has_readiness_and_liveness_probes,
        manifests.test_every_container_has_cpu_and_memory_requests_and_limits,
        manifests.test_every_container_is_locked_down,
        manifests.test_every_image_is_pinned_and_none_is_latest,
    ):
        policy(with_vllm)


def test_vllm_is_pinned_on_a_gpu_node_with_lora_loading_at_run_time(with_vllm: Any) -> None:
    workload = with_vllm.workload("vllm")
    pod = with_vllm.pod_spec(workload)
    container = _container(with_vllm, "vllm")
    assert container["image"] == VLLM_IMAGE
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert pod["nodeSelector"]["nvidia.com/gpu.present"] == "true" and manifests.tolerates_gpu_taint(pod)
    assert with_vllm.env_value(container, "VLLM_ALLOW_RUNTIME_LORA_UPDATING")["value"] == "True"
    assert "--enable-lora" in container["args"] and "--port=8000" in container["args"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/health"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_vllm_reads_adapters_where_inference_sees_them(with_vllm: Any) -> None:
    def artifacts_mount(app: str) -> str:
        pod = with_vllm.pod_spec(with_vllm.workload(app))
        claims = {v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName")
                  == "modelforge-artifacts"}
        (mount,) = [m for m in _container(with_vllm, app)["volumeMounts"] if m["name"] in claims]
        return str(mount["mountPath"])

    assert artifacts_mount("vllm") == artifacts_mount("inference") == "/data"


def test_inference_is_pointed_at_vllm_and_only_it_may_reach_vllm(with_vllm: Any) -> None:
    inference = _container(with_vllm, "inference")
    assert with_vllm.env_value(inference, "MODELFORGE_VLLM_URL")["value"] == "http://vllm:8000"
    service = with_vllm.get("Service", "vllm")
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 8000)]
    assert manifests.allowed_sources(with_vllm, "vllm", 8000) == {"inference"}
    assert with_vllm.has("PodDisruptionBudget", "vllm")
