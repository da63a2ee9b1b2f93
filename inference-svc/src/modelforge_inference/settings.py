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
    # vLLM OpenAI-compatible server (wins over TGI when both are set); LoRA adapters are loaded into
    # it at run time from the shared artifacts volume, which it must mount at the same path.
    vllm_url: str | None = None
    vllm_timeout_s: float = Field(default=120.0, gt=0)
    # The server's --api-key, if it has one.
    vllm_api_key: SecretStr | None = None
    # Loaded-model cache: at most this many registered models, and this many parameter bytes, where
    # each base model counts once and each LoRA model on it only its adapter's weights (so the count
    # can be generous: the bytes bound the memory).
    inference_max_models: int = Field(default=16, ge=1)
    inference_max_bytes: int = Field(default=8 * GIB, ge=1)
    # Used when a request leaves max_new_tokens unset.
    inference_default_max_new_tokens: int = Field(default=256, ge=1, le=4096)
    # Streamed generation: after the first piece, at most one piece (gRPC message, SSE event) per
    # this many seconds, joining the tokens generated meanwhile; 0 = one per token.
    inference_stream_interval_s: float = Field(default=0.02, ge=0, le=1)
    # Continuous batching: at most this many sequences decode together per base model.
    inference_max_batch: int = Field(default=32, ge=1, le=1024)
    # "cuda", "cpu", "cuda:1"...; unset = cuda when available, else cpu.
    inference_device: str | None = None
    # Server-side Hugging Face token for Hub pushes (never accepted from clients, never logged).
    hf_token: SecretStr | None = None
    # Hub address; unset = https://huggingface.co.
    hf_endpoint: str | None = None
