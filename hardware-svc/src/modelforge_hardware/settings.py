"""hardware-svc settings (MODELFORGE_ environment variables, see ServiceSettings)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from modelforge_common.settings import ServiceSettings


class HardwareSettings(ServiceSettings):
    # Seconds one Hugging Face Hub request may take (model_info, the config.json HEAD/GET); a whole
    # DescribeModel / EstimateMemory call is bounded by a small multiple of it.
    hub_timeout_s: float = 5.0
    # Hub base URL; None uses HF_ENDPOINT or huggingface.co.
    hub_endpoint: str | None = None
    # Where config.json files fetched from the Hub are cached; None uses HF_HOME's hub cache.
    hub_cache_dir: Path | None = None
    # Serve a recorded machine instead of probing this one (demos and e2e tests on CPU-only hosts):
    # "rtx3070" is the spec's example, "rtx4090", "h100x2", "none" (no GPU). Empty probes for real.
    fake_hardware: Literal["", "rtx3070", "rtx4090", "h100x2", "none"] = ""
