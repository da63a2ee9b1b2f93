"""Generation: plain transformers `model.generate` vs POST /api/playground/generate and the streaming
endpoint POST /api/playground/stream (Server-Sent Events), same model, prompt and greedy settings.

The plain side loads the registered model as inference-svc does (base weights + the LoRA adapter with
peft, fp32 on the CPU) in this process and renders the prompt through the tokenizer's chat template.
A streamer that only records times gives its time to first token. tokens/s = new tokens / wall time
of the whole request as the client sees it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    TORCH_THREADS,
    BenchContext,
    Goal,
    Section,
    Table,
    cpu_seconds,
    median,
    ratio,
    ratio_doubt,
)

TOKENS_PER_S_GOAL = 0.95
PROMPT = "Where does the red fox live?"


@dataclass
class Generation:
    tokens: int
    wall_s: float
    first_token_s: float | None = None
    cpu_s: float = float("nan")  # CPU time of the processes doing the work (set by the caller)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else float("nan")


class FirstTokenTimer:
    """A generate() streamer that records when the first new token arrives (the first put is the prompt)."""

    def __init__(self) -> None:
        self.puts = 0
        self.first_token_at: float | None = None

    def put(self, value: Any) -> None:
        self.puts += 1
        if self.puts == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


class PlainModel:
    def __init__(self, model: dict[str, Any]) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        if TORCH_THREADS > 0:
            # As inference-svc runs (OMP_NUM_THREADS in its env); set here, whenever torch was imported.
            torch.set_num_threads(TORCH_THREADS)
        folder = Path(model["path"])
        base = AutoModelForCausalLM.from_pretrained(model["base_model"], dtype=torch.float32, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        if (folder / "adapter_config.json").exists():
            base = PeftModel.from_pretrained(base, str(folder), is_trainable=False)
        self.model = base.eval()

    def generate(self, max_new_tokens: int) -> Generation:
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": PROMPT}], tokenize=False, add_generation_prompt=True
        )
        started = time.perf_counter()
        encoded = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        timer = FirstTokenTimer()
        with self.torch.inference_mode():
            output = self.model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=timer,
            )
        wall = time.perf_counter() - started
        tokens = int(output.shape[1] - encoded["input_ids"].shape[1])
        first = timer.first_token_at - started if timer.first_token_at is not None else None
        return Generation(tokens, wall, first)


def body(model_id: int, max_new_tokens: int) -> dict[str, Any]:
    return {"model_id": model_id, "prompt": PROMPT, "max_new_tokens": max_new_tokens, "temperature": 0}


def generate_whole(http: httpx.Client, model_id: int, max_new_tokens: int) -> Generation:
    started = time.perf_counter()
    response = http.post("/api/playground/generate", json=body(model_id, max_new_tokens))
    wall = time.perf_counter() - started
    response.raise_for_status()
    return Generation(int(response.json()["tokens_generated"]), wall)


def generate_stream(http: httpx.Client, model_id: int, max_new_tokens: int) -> Generation:
    started = time.perf_counter()
    first: float | None = None
    tokens = 0
    with http.stream("POST", "/api/playground/stream", json=body(model_id, max_new_tokens)) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event: error"):
                raise RuntimeError(f"stream failed: {response.read()!r}")
            if not line.startswith("data: "):
                continue
            piece = json.loads(line[len("data: ") :])
            if first is None and piece.get("text"):
                first = time.perf_counter() - started
            if piece.get("finished"):
                tokens = int(piece["tokens_generated"])
                break
    return Generation(tokens, time.perf_counter() - started, first)


def run(context: BenchContext) -> Section:
    model = context.ensure_model()
    max_new_tokens = 8 if context.quick else 256  # about a second a request: long enough to average out noise
    rounds = 1 if context.quick else 15
    plain = PlainModel(model)
    sides = {
        "plain model.generate": lambda: plain.generate(max_new_tokens),
        "POST /api/playground/generate": lambda: generate_whole(context.http, model["id"], max_new_tokens),
        "POST /api/playground/stream (SSE)": lambda: generate_stream(context.http, model["id"], max_new_tokens),
    }
    pids = {name: process.pid for name, process in context.stack.started.items()}
    # Whose CPU each side costs: this process for plain generate; inference, gateway and registry for the API.
    workers = {
        name: [os.getpid()] if name.startswith("plain") else [pids["inference"], pids["gateway"], pids["registry"]]
        for name in sides
    }
    for side in sides.values():  # warm-up: inference-svc loads the model; first generate() calls run slow
        side()
        side()
    results: dict[str, list[Generation]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, side in sides.items():  # A B C A B C ...
            before = cpu_seconds(workers[name])
            generation = side()
            generation.cpu_s = cpu_seconds(workers[name]) - before
            results[name].append(generation)

    baseline = results["plain model.generate"]
    section = Section(
        key="generation",
        title="Generation: plain transformers vs the playground endpoints",
        method=(
            f"Model {model['model_id']} (LoRA adapter on {Path(model['base_model']).name}), prompt {PROMPT!r} in "
            f"the chat template, greedy, max_new_tokens {max_new_tokens}; {rounds} round(s) of the three sides in "
            "turn after one warm-up each. Medians over rounds; ratios are medians of per-round ratios."
        ),
    )
    table = Table(
        "Tokens/s and time to first token (median of rounds)",
        ["side", "new tokens", "wall ms", "tokens/s", "first token ms", "tokens/s vs plain", "CPU ms/token"],
    )
    for name, generations in results.items():
        firsts = [g.first_token_s * 1000 for g in generations if g.first_token_s is not None]
        table.add(
            name,
            median([g.tokens for g in generations]),
            median([g.wall_s * 1000 for g in generations]),
            median([g.tokens_per_s for g in generations]),
            median(firsts) if firsts else None,
            median([ratio(g.tokens_per_s, b.tokens_per_s) for g, b in zip(generations, baseline, strict=True)]),
            median([1000 * g.cpu_s / g.tokens for g in generations if g.tokens]),
        )
        if name != "plain model.generate":
            measured = median(
                [ratio(g.tokens_per_s, b.tokens_per_s) for g, b in zip(generations, baseline, strict=True)]
            )
            section.goals.append(
                Goal(
                    f"tokens/s of {name} vs plain generate",
                    f">= {TOKENS_PER_S_GOAL}x",
                    f"{measured:.3f}x",
                    None if measured != measured else measured >= TOKENS_PER_S_GOAL,
                    doubt=""
                    if context.quick
                    else ratio_doubt(
                        [ratio(g.tokens_per_s, b.tokens_per_s) for g, b in zip(generations, baseline, strict=True)]
                    ),
                )
            )
    section.tables.append(table)
    section.notes.append("The playground's whole-response endpoint has no first-token time (n/a).")
    section.notes.append(
        "CPU ms/token: CPU time of the working processes (this one for plain generate; inference-svc, gateway "
        "and registry-svc for the endpoints) per new token; it moves far less with other load than tokens/s."
    )
    return section
