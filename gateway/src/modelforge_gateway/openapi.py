"""The OpenAPI document, made honest about errors: FastAPI declares a 422 that this API never sends
(validation errors are 400, DESIGN 3) and none of the errors every route can answer. Each operation
gets the error statuses it can actually produce, all with the one error body."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.routing import BaseRoute

ERROR_BODY_SCHEMA: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["detail", "error", "status_code"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["loc", "msg", "type"],
                        "properties": {
                            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
            ]
        },
        "error": {"type": "string"},
        "status_code": {"type": "integer"},
        "request_id": {"type": "string"},
    },
}

# The OpenAI-compatible API under /v1 answers errors in OpenAI's shape (openai_errors.py).
OPENAI_ERROR_BODY_SCHEMA: dict[str, Any] = {
    "title": "OpenAIErrorBody",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
        }
    },
}
OPENAI_PREFIX = "/v1/"

# Any route: bad input, a missing API key, a conflict or unknown id a service reports, rate
# limits, and a service that is down or too slow.
COMMON_ERRORS = {
    "400": "Invalid request: detail names each bad field",
    "401": "Missing or invalid API key (when MODELFORGE_API_KEYS is set)",
    "404": "Not found",
    "409": "Conflicts with the current state",
    "413": "Request body too large",
    "429": "Too many requests",
    "500": "Internal error (with a request id, never a traceback)",
    "503": "A backing service is unavailable",
    "504": "A backing service did not answer in time",
}


def honest_openapi(app: FastAPI, routes: Sequence[BaseRoute] | None = None) -> dict[str, Any]:
    """The document of `routes` (default: the app's, in their order)."""
    if app.openapi_schema:
        return app.openapi_schema
    documented = app.routes if routes is None else routes
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=documented)
    component_schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    component_schemas["ErrorBody"] = ERROR_BODY_SCHEMA
    ours = {"$ref": "#/components/schemas/ErrorBody"}
    openai = {"$ref": "#/components/schemas/OpenAIErrorBody"}
    for path, item in schema.get("paths", {}).items():
        ref = openai if path.startswith(OPENAI_PREFIX) else ours
        if ref is openai:
            component_schemas["OpenAIErrorBody"] = OPENAI_ERROR_BODY_SCHEMA
        for operation in item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            for code, description in COMMON_ERRORS.items():
                if path == "/api/health" and code != "500":
                    continue
                existing = responses.setdefault(code, {"description": description})
                existing.setdefault("description", description)
                existing["content"] = {"application/json": {"schema": ref}}
    components = schema["components"]["schemas"]
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    _declare_upload_file(schema)
    _declare_links(schema)
    app.openapi_schema = schema
    return schema


UPLOAD_PATH = "/api/upload_dataset"
UPLOAD_FILENAME_EXAMPLE = 'form-data; name="file"; filename="dataset.jsonl"'


def _declare_upload_file(schema: dict[str, Any]) -> None:
    """What the upload's file part must be, beyond "bytes": a dataset file named *.jsonl, *.json,
    *.csv or *.parquet (the registry refuses other names)."""
    operation = schema.get("paths", {}).get(UPLOAD_PATH, {}).get("post")
    if operation is None:
        return
    media = operation["requestBody"]["content"]["multipart/form-data"]
    media["encoding"] = {
        "file": {
            "contentType": "application/jsonl, application/x-ndjson, application/octet-stream",
            "headers": {
                "Content-Disposition": {
                    "description": "The file name must end in .jsonl, .json, .csv or .parquet",
                    "schema": {"type": "string", "example": UPLOAD_FILENAME_EXAMPLE},
                }
            },
        }
    }
    ref = media["schema"].get("$ref", "")
    body = schema["components"]["schemas"].get(ref.rsplit("/", 1)[-1], media["schema"])
    body["properties"]["file"]["description"] = (
        "A dataset file whose name ends in .jsonl (one JSON object per line), .json (an array of "
        "objects), .csv (a header row) or .parquet: at least 10 valid rows in a format the task accepts "
        "or mapped onto one with column_mapping (see the README)"
    )


def _links(operations: dict[str, str], parameter: str, source: str) -> dict[str, Any]:
    return {
        name: {"operationId": operation_id, "parameters": {parameter: f"$response.body#/{source}"}}
        for name, operation_id in operations.items()
    }


_JOB_LINKS = _links(
    {
        "GetJob": "jobs-get_job",
        "CancelJob": "jobs-cancel_job",
        "JobEvents": "jobs-job_events",
        "JobEventStream": "jobs-job_event_stream",
    },
    "job_id",
    "job_id",
)
_MODEL_LINKS = _links(
    {
        "GetModel": "models-get_model",
        "GetModelLineage": "models-get_model_lineage",
        "MergeModel": "hub-merge",
        "DeleteModel": "models-delete_model",
    },
    "model_id",
    "model_id",
)
# (path, method, status) -> the operations its answer's ids lead to (OpenAPI links: clients and
# stateful testing follow them from a created job or model to what reads, stops or deletes it).
LINKS: dict[tuple[str, str, str], dict[str, Any]] = {
    ("/api/jobs", "post", "201"): _JOB_LINKS,
    ("/api/jobs", "post", "200"): _JOB_LINKS,
    ("/api/start_training", "post", "200"): _JOB_LINKS,
    ("/api/finetune/start_training", "post", "200"): _JOB_LINKS,
    ("/api/models/{model_id}/merge", "post", "201"): _MODEL_LINKS,
}


def _declare_links(schema: dict[str, Any]) -> None:
    paths = schema.get("paths", {})
    for (path, method, status), links in LINKS.items():
        response = paths.get(path, {}).get(method, {}).get("responses", {}).get(status)
        if response is not None:
            response["links"] = links
