"""Model providers: how a base model is loaded and wrapped with LoRA adapters.

huggingface: transformers + peft (CPU or GPU). unsloth: unsloth's FastLanguageModel (NVIDIA GPU only;
the worker imports unsloth before anything else). Both return a LoadedModel the strategies train.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    # LoRA config for the trainer to apply; None when the provider already wrapped the model.
    peft_config: Any | None
    # Settings the provider chose (target modules, dtype ...), recorded with the model.
    details: dict[str, Any] = field(default_factory=dict)
