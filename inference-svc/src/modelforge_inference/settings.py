"""Settings of inference-svc (MODELFORGE_* environment variables)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from modelforge_common.settings import ServiceSettings

GIB = 1024**3


class InferenceSettings(ServiceSettings):
    # Remote text-generation-inference server; unset = generate in-process with transformers.
    tgi_url: str | None = None
    tgi_timeout_s: float = Field(default=120.0, gt=0)
    # Bearer token for the TGI server, if it wants one.
    tgi_token: SecretStr | None = None
    # Loaded-model cache: at most this many models and this many parameter bytes.
    inference_max_models: int = Field(default=2, ge=1)
    inference_max_bytes: int = Field(default=8 * GIB, ge=1)
    # Used when a request leaves max_new_tokens unset.
    inference_default_max_new_tokens: int = Field(default=256, ge=1, le=4096)
    # Streamed generation: after the first piece, at most one piece (gRPC message, SSE event) per
    # this many seconds, joining the tokens generated meanwhile; 0 = one per token.
    inference_stream_interval_s: float = Field(default=0.02, ge=0, le=1)
    # "cuda", "cpu", "cuda:1"...; unset = cuda when available, else cpu.
    inference_device: str | None = None
    # Server-side Hugging Face token for Hub pushes (never accepted from clients, never logged).
    hf_token: SecretStr | None = None
    # Hub address; unset = https://huggingface.co.
    hf_endpoint: str | None = None
