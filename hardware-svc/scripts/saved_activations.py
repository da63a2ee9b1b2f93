"""Counts what autograd keeps for backward in one decoder layer, with torch's saved-tensor hooks, and
prints it next to the estimator's per-tensor formula (modelforge_hardware.estimator.kept_per_token).

Runs on the CPU (no GPU, nothing downloaded: a random-init layer in the given shape):

    python hardware-svc/scripts/saved_activations.py --model llama-3.2-1b
    python hardware-svc/scripts/saved_activations.py --hidden 256 --intermediate 688 --heads 4 --kv-heads 2 \\
        --head-dim 64 --tokens 96 --lora-dropout 0.05

Counted: every saved tensor that has a token dimension (LoRA weight casts and RoPE tables are per layer,
not per token), each storage once, the model's own parameters excluded. It prints one JSON object:
bytes per token counted and from the formula. The attention kernel differs from a GPU's (the CPU's SDPA
keeps the same q, k, v, output and log-sum-exp as flash attention).
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from typing import Any

from modelforge_hardware.calibration import MODEL_SHAPES
from modelforge_hardware.estimator import TrainingJob, kept_per_token
from modelforge_hardware.model_shape import shape_from_config


def config_of(args: argparse.Namespace) -> dict[str, Any]:
    if args.model:
        return dict(MODEL_SHAPES[args.model])
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": args.hidden,
        "intermediate_size": args.intermediate, "num_hidden_layers": 1, "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads, "head_dim": args.head_dim, "vocab_size": 1000,
        "tie_word_embeddings": True, "hidden_act": "silu",
    }


def count(config: dict[str, Any], tokens: int, lora_r: int, lora_dropout: float) -> float:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    fields = {k: v for k, v in config.items() if k not in ("architectures", "model_type")}
    fields.update(num_hidden_layers=1, vocab_size=1000)
    model_config = AutoConfig.for_model(config["model_type"], **fields)
    model_config._attn_implementation = "sdpa"
    model = AutoModelForCausalLM.from_config(model_config, dtype=torch.bfloat16)
    model = get_peft_model(
        model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=lora_dropout, target_modules="all-linear",
                          task_type="CAUSAL_LM")
    )
    own = {p.untyped_storage().data_ptr() for p in model.parameters()}
    own |= {b.untyped_storage().data_ptr() for b in model.buffers()}
    saved: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own and tokens in tuple(tensor.shape):
            saved[storage.data_ptr()] = max(saved.get(storage.data_ptr(), 0), storage.nbytes())
        return tensor

    inner = model.base_model.model.model
    hidden = torch.randn(1, tokens, model_config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
    positions = torch.arange(tokens)[None]
    layer_types = getattr(model_config, "layer_types", None)
    if layer_types and "layer_type" in inspect.signature(inner.rotary_emb.forward).parameters:
        # Gemma 3: one rotary table per attention kind (sliding / full)
        rotary = inner.rotary_emb(hidden, positions, layer_type=layer_types[0])
    else:
        rotary = inner.rotary_emb(hidden, positions)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        inner.layers[0](hidden, attention_mask=None, position_embeddings=rotary, position_ids=positions)
    return sum(saved.values()) / tokens


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODEL_SHAPES), help="a public shape (else the sizes below)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--intermediate", type=int, default=688)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=96, help="pick a count no width equals")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    args = parser.parse_args(argv)
    config = config_of(args)
    job = TrainingJob(
        strategy="sft", lora_r=args.lora_r, batch_size=1, seq_len=args.tokens, precision="bf16", use_4bit=False,
        gradient_checkpointing=False, lora_dropout=args.lora_dropout,
    )
    formula = kept_per_token(shape_from_config(config), job)
    counted = count(config, args.tokens, args.lora_r, args.lora_dropout)
    result = {"counted_bytes_per_token": counted, "formula_bytes_per_token": formula, "ratio": formula / counted}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
