"""Issue 14 at the gateway: bad headers are 400 naming the header, a service's internal failure
never shows its words (addresses, tracebacks), unknown body fields are refused naming them while
the seed documents' request examples still pass, and Prometheus metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient
from gateway_fakes import FakeServices, running_client, settings_for
from prometheus_client.parser import text_string_to_metric_families
from starlette.websockets import WebSocketDisconnect

from modelforge.v1 import common_pb2
from modelforge_gateway.deps import get_event_hub
from modelforge_gateway.main import create_app

SPEC_DIR = Path(__file__).resolve().parents[3] / "shared" / "spec"


# --- headers and query parameters ---------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "²".encode("latin-1"),  # str.isdigit() says yes, int() says no: was a 500
        "³¹".encode("latin-1"),
        b"-1",
        b"1.5",
        b"1" * 16,  # past 2**53
        b"1" * 400,
        b"12 ",
        b"0x10",
    ],
)
async def test_a_bad_last_event_id_is_400_naming_the_header(client: httpx.AsyncClient, value: bytes) -> None:
    response = await client.get("/api/jobs/job_000001/events/stream", headers={"Last-Event-ID": value})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status_code"] == 400
    assert any(item["loc"] == ["header", "last-event-id"] for item in body["detail"]), body


async def test_a_good_last_event_id_passes_the_check(client: httpx.AsyncClient) -> None:
    # Valid header, unknown job: the route got past the header to the job lookup.
    for value in ("", "0", "42", "9" * 15):
        response = await client.get("/api/jobs/job_nope/events/stream", headers={"Last-Event-ID": value})
        assert response.status_code == 404, (value, response.text)


@pytest.mark.parametrize(
    ("path", "params", "headers", "where"),
    [
        ("/api/jobs/job_1/events", {"since": "-1"}, {}, ["query", "since"]),
        ("/api/jobs/job_1/events", {"since": "²"}, {}, ["query", "since"]),
        ("/api/jobs/job_1/events", {"since": str(2**60)}, {}, ["query", "since"]),
        ("/api/jobs", {"limit": "0"}, {}, ["query", "limit"]),
        ("/api/jobs", {"status": "sleeping"}, {}, ["query", "status", 0]),
        ("/api/models", {"offset": "٣"}, {}, ["query", "offset"]),
        ("/api/training_status", {"job_id": "j" * 201}, {}, ["query", "job_id"]),
        ("/api/finetune/session", {}, {"X-Session-Id": "a b"}, ["header", "x-session-id"]),
        ("/api/finetune/session", {}, {"X-Session-Id": "é".encode("latin-1")}, ["header", "x-session-id"]),
    ],
)
async def test_bad_query_and_header_values_are_400_naming_them(
    client: httpx.AsyncClient, path: str, params: dict[str, str], headers: dict[str, Any], where: list[Any]
) -> None:
    response = await client.get(path, params=params, headers=headers)
    assert response.status_code == 400, response.text
    assert any(item["loc"] == where for item in response.json()["detail"]), response.text


async def test_a_bad_idempotency_key_is_400_naming_the_header(client: httpx.AsyncClient) -> None:
    body = {"task": "text-generation", "model_name": "m", "dataset": "train.jsonl"}
    response = await client.post("/api/jobs", json=body, headers={"Idempotency-Key": "é".encode("latin-1")})
    assert response.status_code == 400
    assert any(item["loc"] == ["header", "idempotency-key"] for item in response.json()["detail"])


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("job_id=a&since=%C2%B2", "since: Input should be a valid integer"),
        ("job_id=a&since=-1", "since: Input should be greater than or equal to 0"),
        ("job_id=" + "x" * 300, "job_id: String should have at most 200 characters"),
        ("job_id=a&since=1" + "0" * 400, "since: Input should be less than or equal to"),
    ],
)
def test_a_bad_websocket_query_closes_1008_naming_it_without_echoing_it(
    fakes: FakeServices, query: str, reason: str
) -> None:
    with (
        TestClient(create_app(settings_for(fakes))) as client,
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect(f"/ws/training?{query}"),
    ):
        pass
    assert closed.value.code == 1008
    assert closed.value.reason.startswith(reason)
    assert len(closed.value.reason.encode()) <= 123  # RFC 6455 close frame
    assert "xxxxxxxxxx" not in closed.value.reason and "0000000000" not in closed.value.reason


@pytest.mark.parametrize("path", ["/api/finetune/validate_custom_model", "/api/finetune/set_custom_model"])
async def test_a_refused_repo_name_is_named_as_the_request_names_it(client: httpx.AsyncClient, path: str) -> None:
    """hardware-svc's DescribeModel calls the field model_name; these requests call it repo_name."""
    response = await client.post(path, json={"repo_name": "/proc/1/root"})
    assert response.status_code == 400, response.text
    [item] = response.json()["detail"]
    assert item["loc"] == ["body", "repo_name"]
    assert "allowed model roots" in item["msg"]


# --- what a service's failure shows -------------------------------------------------------------

LEAKY = (
    "Exception calling application: could not reach ipv4:10.1.2.3:50052 (registry.modelforge.svc:50052)\n"
    'Traceback (most recent call last):\n  File "/srv/app/store.py", line 12, in get\nKeyError: secret'
)


@pytest.mark.parametrize("code", [grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS])
async def test_a_service_internal_error_never_shows_its_words(
    code: grpc.StatusCode, client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    fakes.trainer.fail_status_with = code
    fakes.trainer.fail_details = LEAKY
    response = await client.get("/api/training_status", headers={"x-request-id": "req-77"})
    assert response.status_code == 500
    body = response.json()
    assert body["detail"] == "An internal error occurred (request id req-77)"
    for leak in ("10.1.2.3", "50052", "registry.modelforge", "Traceback", "store.py", "secret"):
        assert leak not in response.text


@pytest.mark.parametrize(
    ("code", "status"),
    [(grpc.StatusCode.UNAVAILABLE, 503), (grpc.StatusCode.FAILED_PRECONDITION, 409), (grpc.StatusCode.NOT_FOUND, 404)],
)
async def test_a_4xx_or_503_message_loses_addresses_and_tracebacks(
    code: grpc.StatusCode, status: int, client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    fakes.trainer.fail_status_with = code
    fakes.trainer.fail_details = "Backend at 10.1.2.3:50052 said no; retry at [::1]:50052 " + LEAKY
    response = await client.get("/api/training_status")
    assert response.status_code == status
    text = response.text
    for leak in ("10.1.2.3", "::1", "50052", "Traceback", "store.py"):
        assert leak not in text, text
    assert response.json()["detail"].startswith("Backend at a service said no")


async def test_a_known_service_address_becomes_its_name(fakes: FakeServices) -> None:
    async with running_client(settings_for(fakes)) as (app, client):
        registry_addr = app.state.settings.registry_addr
        fakes.trainer.fail_status_with = grpc.StatusCode.UNAVAILABLE
        fakes.trainer.fail_details = f"could not register the model at {registry_addr}"
        response = await client.get("/api/training_status")
    assert response.status_code == 503
    assert response.json()["detail"] == "could not register the model at the registry service"


# --- unknown fields -----------------------------------------------------------------------------


def json_body_operations(app: Any) -> list[tuple[str, str]]:
    """Every operation of the public API (the OpenAI-compatible /v1 API aside) that takes a JSON body."""
    operations = []
    for path, item in app.openapi()["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            if "application/json" in content and not path.startswith("/v1/"):
                operations.append((method.upper(), path))
    return operations


async def test_every_json_body_refuses_an_unknown_field_naming_it(app_client: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = app_client
    operations = json_body_operations(app)
    assert len(operations) >= 12, operations
    for method, path in operations:
        url = path.replace("{model_id}", "1").replace("{job_id}", "job_000001").replace("{task}", "text-generation")
        response = await client.request(method, url, json={"gradient_checkpointing_typo": True})
        assert response.status_code == 400, (method, path, response.text)
        items = response.json()["detail"]
        unknown = [item for item in items if item["type"] == "extra_forbidden"]
        assert unknown and unknown[0]["loc"] == ["body", "gradient_checkpointing_typo"], (path, items)
        assert "unknown field 'gradient_checkpointing_typo'" in unknown[0]["msg"]


async def test_a_training_setting_the_api_does_not_know_is_refused_not_dropped(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    # Settings TrainingConfig lacks (weight_decay was one until the proto gained it: the API took it then).
    unknown = {"packing": True, "label_smoothing_factor": 0.1}
    assert not set(unknown) & set(common_pb2.TrainingConfig.DESCRIPTOR.fields_by_name)
    body = {"task": "text-generation", "model_name": "m", "dataset": "train.jsonl"} | unknown
    for path in ("/api/start_training", "/api/jobs", "/api/finetune/start_training"):
        response = await client.post(path, json=body)
        assert response.status_code == 400, response.text
        named = sorted(item["loc"][-1] for item in response.json()["detail"])
        assert named == ["label_smoothing_factor", "packing"]
        assert "packing" in response.json()["error"] and "label_smoothing_factor" in response.json()["error"]
    assert fakes.trainer.started == [] and fakes.trainer.queued == {}


def spec_request_examples() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path, body) for every JSON request example of the two seed documents. The "..." a
    document writes for "the other settings" is left out."""
    examples = []
    for document in sorted(SPEC_DIR.glob("*.md")):
        text = document.read_text()
        for section in re.split(r"\n#{2,4} ", text):
            head = re.match(r"(GET|POST|PUT|PATCH|DELETE) (/\S+)", section)
            found = re.search(r"\*\*Request(?: Body)?:?\*\*:?\s*```json\n(.*?)```", section, re.S)
            if head is None or found is None:
                continue
            raw = re.sub(r",\s*\n\s*\.\.\.\s*\n", "\n", found.group(1))
            examples.append((head.group(1), head.group(2), json.loads(raw)))
    return examples


def test_the_spec_documents_request_examples_are_found() -> None:
    paths = {path for _, path, _ in spec_request_examples()}
    assert {"/api/start_training", "/api/finetune/start_training", "/api/playground/generate", "/api/hub/push"} <= paths
    assert len(paths) >= 10


@pytest.mark.parametrize(("method", "path", "body"), spec_request_examples(), ids=lambda v: str(v)[:40])
async def test_every_documented_request_example_passes_the_body_rules(
    client: httpx.AsyncClient, fakes: FakeServices, method: str, path: str, body: dict[str, Any]
) -> None:
    fakes.trainer.known_datasets.add(str(body.get("dataset", "")))
    response = await client.request(method, path, json=body)
    # Whatever the fakes answer (a model the fake registry lacks is a 404, the fake Hub is
    # unreachable: 503), the body itself passed.
    if response.status_code == 400:
        detail = response.json()["detail"]
        assert not isinstance(detail, list) or all(item["loc"][0] != "body" for item in detail), detail
    assert response.status_code != 500, response.text


# --- metrics ------------------------------------------------------------------------------------


def sample(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    total = 0.0
    for family in text_string_to_metric_families(text):
        for metric_sample in family.samples:
            if metric_sample.name == name and all(metric_sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += metric_sample.value
    return total


async def test_metrics_count_requests_by_route_template_and_status(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    for job in ("job_a", "job_b", "job_c"):
        assert (await client.get(f"/api/jobs/{job}")).status_code == 404
    assert (await client.get("/api/health")).status_code == 200
    assert (await client.get("/no/such/route/at/all")).status_code == 404
    after_response = await client.get("/metrics")
    assert after_response.headers["content-type"].startswith("text/plain")
    after = after_response.text

    def delta(name: str, labels: dict[str, str]) -> float:
        return sample(after, name, labels) - sample(before, name, labels)

    job_route = {"method": "GET", "route": "/api/jobs/{job_id}"}
    assert delta("modelforge_gateway_requests_total", job_route | {"status": "404"}) == 3
    assert delta("modelforge_gateway_request_duration_seconds_count", job_route) == 3
    assert delta("modelforge_gateway_request_duration_seconds_sum", job_route) > 0
    health = {"method": "GET", "route": "/api/health", "status": "200"}
    assert delta("modelforge_gateway_requests_total", health) == 1
    unmatched = {"route": "unmatched", "status": "404"}
    assert delta("modelforge_gateway_requests_total", unmatched) == 1
    # Raw paths never become label values.
    assert "job_a" not in after and "/no/such/route" not in after


def test_metrics_gauge_websocket_clients_and_count_events_fanned_out(fakes: FakeServices) -> None:
    app = create_app(settings_for(fakes))
    with TestClient(app) as client:
        base_clients = sample(client.get("/metrics").text, "modelforge_gateway_websocket_clients")
        base_events = sample(client.get("/metrics").text, "modelforge_gateway_events_fanned_out_total")
        with client.websocket_connect("/ws/training") as first, client.websocket_connect("/ws/training") as second:
            assert first.receive_json()["type"] == "status"
            assert second.receive_json()["type"] == "status"
            text = client.get("/metrics").text
            assert sample(text, "modelforge_gateway_websocket_clients") == base_clients + 2
            hub = app.state.event_hub
            assert get_event_hub is not None and len(hub) == 2
            event = {"type": "log", "job_id": "job_x", "seq": 5, "message": "hello"}
            client.portal.call(lambda: _publish(hub, event))  # type: ignore[union-attr]
            assert first.receive_json()["message"] == "hello"
            assert second.receive_json()["message"] == "hello"
            text = client.get("/metrics").text
            assert sample(text, "modelforge_gateway_events_fanned_out_total") == base_events + 2
        text = client.get("/metrics").text
        assert sample(text, "modelforge_gateway_websocket_clients") == base_clients


async def _publish(hub: Any, event: dict[str, Any]) -> None:
    hub.publish(event)


# --- the OpenAPI document declares the real constraints -----------------------------------------


def test_the_documented_choices_are_the_trainers_own() -> None:
    from modelforge_common.training_options import LR_SCHEDULERS, OPTIMIZERS  # what trainer-svc validates

    start = create_app().openapi()["components"]["schemas"]["StartTrainingRequest"]["properties"]
    assert start["lr_scheduler_type"]["anyOf"][0]["enum"] == list(LR_SCHEDULERS)
    assert start["optim"]["anyOf"][0]["enum"] == list(OPTIMIZERS)


def test_the_document_declares_enums_non_blank_strings_ranges_and_the_upload_name() -> None:
    document = create_app().openapi()
    components = document["components"]["schemas"]
    start = components["StartTrainingRequest"]["properties"]
    assert start["task"]["enum"] == ["text-generation", "summarization", "extractive-question-answering"]
    assert start["strategy"]["enum"] == ["sft", "qlora", "dpo", "rlhf"]
    assert start["model_name"]["pattern"] == r"\S" and start["dataset"]["pattern"] == r"\S"
    assert start["optim"]["anyOf"][0]["enum"][0] == "adamw_torch"
    assert start["max_seq_length"]["anyOf"][0] == {"type": "integer", "minimum": 16, "maximum": 131072}
    assert components["StartTrainingRequest"]["additionalProperties"] is False
    for path in ("/api/models/task/{task}", "/api/finetune/recommended_models/{task}"):
        [task] = document["paths"][path]["get"]["parameters"]
        assert task["schema"]["enum"] == start["task"]["enum"]
    upload = document["paths"]["/api/upload_dataset"]["post"]["requestBody"]["content"]["multipart/form-data"]
    disposition = upload["encoding"]["file"]["headers"]["Content-Disposition"]
    assert 'filename="dataset.jsonl"' in disposition["schema"]["example"]
    [header] = [p for p in document["paths"]["/api/jobs/{job_id}/events/stream"]["get"]["parameters"]
                if p["in"] == "header"]
    assert header["schema"]["pattern"] == "^[0-9]{0,15}$"
    generate = components["GenerateRequest"]
    assert [branch["required"] for branch in generate["anyOf"]] == [["prompt"], ["question"], ["messages"]]


@pytest.mark.parametrize(
    ("field", "value"),
    [("optim", "adamw"), ("lr_scheduler_type", "cosine_warm"), ("eval_split", 0.0), ("max_seq_length", 8),
     ("model_name", " \t "), ("dataset", "d" * 1025), ("resume_from_job", "../job")],
)
async def test_values_outside_the_declared_constraints_are_400_naming_the_field(
    client: httpx.AsyncClient, fakes: FakeServices, field: str, value: Any
) -> None:
    body = {"task": "text-generation", "model_name": "m", "dataset": "train.jsonl", field: value}
    response = await client.post("/api/start_training", json=body)
    assert response.status_code == 400, response.text
    assert [item["loc"] for item in response.json()["detail"]] == [["body", field]]
    assert fakes.trainer.started == []


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/playground/generate", {"model_id": 1, "prompt": "hi", "seed": False}, "seed"),
        ("/api/playground/generate", {"model_id": 1, "prompt": "hi", "top_k": True}, "top_k"),
        ("/api/finetune/estimate_memory", {"model_name": "org/m", "batch_size": True}, "batch_size"),
    ],
)
async def test_a_boolean_is_no_number(client: httpx.AsyncClient, path: str, body: dict, field: str) -> None:
    # pydantic's lax mode would read false as 0; the OpenAPI document says integer (found by the fuzz).
    response = await client.post(path, json=body)
    assert response.status_code == 400, response.text
    assert any(entry["loc"][-1] == field for entry in response.json()["detail"])


async def test_a_conversation_of_blank_turns_is_refused_even_beside_a_prompt(client: httpx.AsyncClient) -> None:
    # messages win over prompt, so the OpenAPI document and the check agree that they hold some text.
    body = {"model_id": 1, "prompt": "hi", "messages": [{"role": "user", "content": "  "}]}
    for path in ("/api/playground/generate", "/api/playground/stream", "/api/playground/new"):
        response = await client.post(path, json=body)
        assert response.status_code == 400, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", "messages"], path
        assert "every message is empty" in error["msg"]
