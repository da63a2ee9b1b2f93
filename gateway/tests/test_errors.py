"""The gRPC -> HTTP table (DESIGN 4), walked through a real fake server, and the error body shape."""

from __future__ import annotations

import grpc
import httpx
import pytest
from fastapi import FastAPI
from gateway_fakes import FakeServices, running_client, settings_for

from modelforge_common.errors import FieldViolation
from modelforge_common.testing import free_port
from modelforge_gateway.deps import get_trainer
from modelforge_gateway.errors import GRPC_TO_HTTP, http_status_for, validation_items, violation_items

DESIGN_TABLE = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def expected_status(code: grpc.StatusCode) -> int:
    return DESIGN_TABLE.get(code, 500)


def test_table_is_total_over_grpc_status_codes() -> None:
    assert set(GRPC_TO_HTTP) == set(grpc.StatusCode)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_each_code_maps_as_design_says(code: grpc.StatusCode) -> None:
    assert GRPC_TO_HTTP[code] == expected_status(code)


def test_resource_exhausted_is_413_for_uploads_only() -> None:
    assert http_status_for(grpc.StatusCode.RESOURCE_EXHAUSTED, upload=True) == 413
    assert http_status_for(grpc.StatusCode.RESOURCE_EXHAUSTED) == 429
    assert http_status_for(grpc.StatusCode.NOT_FOUND, upload=True) == 404


# OK cannot be sent as an error status by a server, so the walk covers every other code.
ERROR_CODES = [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK]


@pytest.mark.parametrize("code", ERROR_CODES, ids=lambda c: c.name)
async def test_every_code_through_a_fake_servicer(
    code: grpc.StatusCode, client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    fakes.trainer.fail_status_with = code
    response = await client.get("/api/training_status", headers={"x-request-id": "req-42"})
    assert response.status_code == expected_status(code)
    body = response.json()
    assert set(body) >= {"detail", "error", "status_code", "request_id"}
    assert body["status_code"] == response.status_code
    assert body["request_id"] == "req-42"
    assert response.headers["x-request-id"] == "req-42"
    if response.status_code == 500:
        assert "An internal error occurred" in body["detail"]
        assert "req-42" in body["detail"]
    else:
        assert body["detail"] == f"fake failure {code.name}"
    assert "Traceback" not in response.text
    if response.status_code in (429, 503):
        assert response.headers["retry-after"] == "1"


async def test_unexpected_gateway_exception_is_a_500_with_request_id_and_no_traceback(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client

    def broken() -> None:
        raise RuntimeError("secret internals")

    app.dependency_overrides[get_trainer] = broken
    response = await client.get("/api/training_status")
    assert response.status_code == 500
    body = response.json()
    assert body["status_code"] == 500
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["request_id"] in body["detail"]
    assert "secret internals" not in response.text
    assert "Traceback" not in response.text


async def test_unknown_path_has_the_error_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/nothing_here")
    assert response.status_code == 404
    assert response.json()["status_code"] == 404
    assert response.json()["detail"] == "Not Found"


def test_violations_render_in_the_list_form() -> None:
    items = violation_items(
        [FieldViolation("learning_rate", "must be > 0"), FieldViolation("file/line 3/prompt", "must be a string")]
    )
    assert items == [
        {"loc": ["body", "learning_rate"], "msg": "must be > 0", "type": "value_error"},
        {"loc": ["body", "file", "line 3", "prompt"], "msg": "must be a string", "type": "value_error"},
    ]
    assert violation_items([FieldViolation("messages/0/role", "bad")])[0]["loc"] == ["body", "messages", 0, "role"]


def test_validation_items_drop_input_and_value_error_prefix() -> None:
    items = validation_items(
        [{"type": "value_error", "loc": ("body", "x"), "msg": "Value error, nope", "input": "secret", "ctx": {}}]
    )
    assert items == [{"loc": ["body", "x"], "msg": "nope", "type": "value_error"}]


async def test_unreachable_service_is_503_naming_the_service_not_its_address(fakes: FakeServices) -> None:
    address = f"127.0.0.1:{free_port()}"
    async with running_client(settings_for(fakes, registry_addr=address)) as (_, client):
        response = await client.get("/api/models")
    assert response.status_code == 503
    assert response.json()["detail"] == "The registry service is unreachable; try again shortly"
    assert address not in response.text
