"""python -m modelforge_inference: serves InferenceService until SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from modelforge.v1 import inference_pb2, inference_pb2_grpc
from modelforge_common.grpc_server import build_server, serve, service_name
from modelforge_common.logging import configure_logging
from modelforge_common.settings import port_of
from modelforge_inference import heap
from modelforge_inference.backends.base import InferenceBackend
from modelforge_inference.backends.local import LocalBackend
from modelforge_inference.backends.tgi import TgiBackend
from modelforge_inference.backends.vllm import VllmBackend
from modelforge_inference.publishing import ModelPublisher
from modelforge_inference.service import InferenceService
from modelforge_inference.servicer import InferenceServicer
from modelforge_inference.settings import InferenceSettings

log = logging.getLogger("modelforge_inference")


def build_service(settings: InferenceSettings) -> InferenceService:
    local = LocalBackend(
        settings.inference_max_models,
        settings.inference_max_bytes,
        settings.inference_device,
        stream_interval_s=settings.inference_stream_interval_s,
        max_batch=settings.inference_max_batch,
        settle_heap=True,
    )
    remote: InferenceBackend | None = None
    if settings.vllm_url:
        key = settings.vllm_api_key.get_secret_value() if settings.vllm_api_key is not None else None
        remote = VllmBackend(settings.vllm_url, settings.vllm_timeout_s, key)
    elif settings.tgi_url:
        token = settings.tgi_token.get_secret_value() if settings.tgi_token is not None else None
        remote = TgiBackend(settings.tgi_url, settings.tgi_timeout_s, token)
    return InferenceService(local, remote, settings.inference_default_max_new_tokens)


def build_publisher(settings: InferenceSettings) -> ModelPublisher:
    token = settings.hf_token.get_secret_value() if settings.hf_token is not None else None
    return ModelPublisher(settings.data_dir, token, settings.hf_endpoint)


async def run(settings: InferenceSettings) -> None:
    service = build_service(settings)
    publisher = build_publisher(settings)
    name = service_name(inference_pb2, "InferenceService")
    bind = f"{settings.bind_host}:{port_of(settings.inference_addr)}"
    server, port, health = build_server(
        [(inference_pb2_grpc.add_InferenceServiceServicer_to_server, InferenceServicer(service, publisher), name)],
        bind,
        reflection_enabled=settings.grpc_reflection,
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    heap.settle()  # what start-up made lives as long as the process (heap.py)
    remote = (f"vllm at {settings.vllm_url} + " if settings.vllm_url
              else f"tgi at {settings.tgi_url} + " if settings.tgi_url else "")
    log.info("inference-svc listening on %s:%d (backend: %slocal)", settings.bind_host, port, remote)
    await serve(server, health, [name], settings.shutdown_grace_s, cleanup=[service.close])


def main() -> None:
    settings = InferenceSettings()
    configure_logging("inference-svc", settings.log_level, settings.log_json)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
