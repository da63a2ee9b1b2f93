"""Mixed-adapter LoRA for a batch in a few batched matmuls per layer (the gather-then-bmm of Punica's
BGMV / S-LoRA), instead of peft's mixed-batch path, which splits every LoRA layer's input by adapter
and cost a batch of eight requests over four adapters 3.7x the time of one adapter (bench/serving.py).

Each LoRA Linear keeps its adapters' A and B matrices stacked, slot 0 being zeros (the base alone),
padded to the layer's largest rank; peft's own lora_A / lora_B weights become views into the stacks,
so the weights are held once. peft's layers run with their adapters disabled (the base layer only)
and a forward hook adds, per row, scaling[slot] * x @ A[slot].T @ B[slot].T.

Only plain LoRA on Linear layers qualifies (no DoRA or other variants, no modules_to_save, no
fan_in_fan_out); a host with any other adapter uses peft's path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from peft.tuners.lora import Linear as LoraLinear
from peft.tuners.lora.layer import LoraLayer


def supports(model: Any, names: list[str]) -> bool:
    """Whether every adapter in `names` is plain LoRA on Linear layers only."""
    configs = getattr(model, "peft_config", {})
    for name in names:
        config = configs.get(name)
        if config is None or getattr(config, "modules_to_save", None) or getattr(config, "use_dora", False):
            return False
        if getattr(config, "fan_in_fan_out", False):
            return False
    for module in model.modules():
        if isinstance(module, LoraLayer):
            if not isinstance(module, LoraLinear):
                return False
            if any(name in module.lora_variant for name in names):
                return False
            if any(name in getattr(module, "lora_embedding_A", {}) for name in names):
                return False
    return True


def _weight(layer: torch.nn.Module) -> torch.Tensor:
    """A Linear layer's weight [out, in] (supports() admits Linear layers only)."""
    weight = layer.weight
    assert isinstance(weight, torch.Tensor)
    return weight


class _Stack:
    def __init__(self, a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> None:
        self.a = a  # [slots, r_max, in]
        self.b = b  # [slots, out, r_max]
        self.scale = scale  # [slots]
        self.scale_values = [float(v) for v in scale.tolist()]


class BatchedLora:
    def __init__(self, model: Any) -> None:
        self.model = model
        self.slots: dict[str, int] = {}
        self._stacks: dict[LoraLinear, _Stack] = {}
        self._hooked: set[int] = set()
        self._handles: list[Any] = []
        self._rows: torch.Tensor | None = None
        # Set when every row uses the same adapter: two plain matmuls, no gathering.
        self._uniform: int | None = None

    def rebuild(self, names: list[str]) -> None:
        """Stacks the adapters `names` (slot i + 1 for names[i]) and routes their layers through the hook."""
        self.slots = {name: slot for slot, name in enumerate(names, start=1)}
        stacks: dict[LoraLinear, _Stack] = {}
        with torch.no_grad():
            for module in self.model.modules():
                if not isinstance(module, LoraLinear):
                    continue
                present = [name for name in names if name in module.lora_A]
                base_weight = _weight(module.get_base_layer())
                out_features, in_features = base_weight.shape
                reference = _weight(module.lora_A[present[0]]) if present else base_weight
                rank = max((_weight(module.lora_A[name]).shape[0] for name in present), default=1)
                a = reference.new_zeros((len(names) + 1, rank, in_features))
                b = reference.new_zeros((len(names) + 1, out_features, rank))
                scale = reference.new_zeros((len(names) + 1,))
                for name in present:
                    slot = self.slots[name]
                    weight_a, weight_b = _weight(module.lora_A[name]), _weight(module.lora_B[name])
                    r = weight_a.shape[0]
                    a[slot, :r] = weight_a
                    b[slot, :, :r] = weight_b
                    scale[slot] = float(module.scaling[name])
                    # peft's weights become views into the stacks: held once.
                    weight_a.data = a[slot, :r]
                    weight_b.data = b[slot, :, :r]
                stacks[module] = _Stack(a, b, scale)
                module.enable_adapters(False)
                if id(module) not in self._hooked:
                    self._hooked.add(id(module))
                    self._handles.append(module.register_forward_hook(self._add_lora))
        self._stacks = stacks

    def release(self) -> None:
        """Gives the layers back to peft (its adapters enabled, no hook)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hooked.clear()
        for module in self._stacks:
            module.enable_adapters(True)
        self._stacks.clear()

    @contextlib.contextmanager
    def rows(self, adapter_names: list[str], base_name: str) -> Iterator[None]:
        """Within the context, row i of a forward pass uses adapter_names[i] (base_name: no adapter)."""
        slots = [0 if name == base_name else self.slots[name] for name in adapter_names]
        device = next(iter(self._stacks.values())).a.device if self._stacks else "cpu"
        if len(set(slots)) == 1:
            self._uniform = slots[0] or None
        else:
            self._rows = torch.tensor(slots, device=device)
        try:
            yield
        finally:
            self._rows = None
            self._uniform = None

    def _add_lora(self, module: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        rows, uniform = self._rows, self._uniform
        if rows is None and uniform is None:
            return None
        stack = self._stacks.get(module)
        if stack is None:
            return None
        x = args[0]
        if uniform is not None:
            a_one, b_one = stack.a[uniform], stack.b[uniform]
            if x.dtype != a_one.dtype:
                x = x.to(a_one.dtype)
            delta = torch.nn.functional.linear(torch.nn.functional.linear(x, a_one), b_one)
            return output + delta.mul_(stack.scale_values[uniform]).to(output.dtype)
        assert rows is not None
        squeeze = x.dim() == 2
        if squeeze:
            x = x.unsqueeze(1)
        a = stack.a.index_select(0, rows)  # [batch, r, in]
        b = stack.b.index_select(0, rows)  # [batch, out, r]
        scale = stack.scale.index_select(0, rows).to(x.dtype)[:, None, None]
        delta = torch.bmm(torch.bmm(x.to(a.dtype), a.transpose(1, 2)), b.transpose(1, 2)) * scale
        if squeeze:
            delta = delta.squeeze(1)
        return output + delta.to(output.dtype)
