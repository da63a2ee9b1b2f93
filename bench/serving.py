"""Serving many users (issue 17): inference-svc's local backend with 1, 4, 8 and 16 users at once on one
base model with four LoRA adapters, side by side with plain batched `model.generate` on the same base in
the same run; and the memory of ten adapters on one base against the base alone.

Both sides run in this process (the serving side is inference-svc's LocalBackend itself, its continuous
batching scheduler included, without the gRPC and HTTP hops that the Generation section measures), with
the same torch threads. Users start together; each streams its answer (time to first token = the first
non-empty piece) and aggregate tokens/s = all new tokens / wall time until the last user is done. The
plain side generates for the same number of prompts in one left-padded batch with one adapter (plain
`generate` cannot mix adapters in a batch); its first-token time is the end of its first decoding step.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    TORCH_THREADS,
    BenchContext,
    Goal,
    Section,
    Table,
    median,
    percentile,
    ratio,
    ratio_doubt,
)

USERS = (1, 4, 8, 16)
ADAPTERS_IN_USE = 4
ADAPTERS_FOR_MEMORY = 10
PROMPTS = (
    "Where does the red fox live?",
    "Write a short poem about rivers.",
    "What is machine learning, in one paragraph?",
    "List three uses of a LoRA adapter.",
    "Why is the sky blue?",
)
SCALING_GOAL = 4.0  # 8 users vs 1 user, aggregate tokens/s
SINGLE_USER_GOAL = 0.95  # 1 user vs plain generate
TTFT_GOAL = 2.0  # p99 first-token time at 8 users vs 1 user
MEMORY_GOAL = 1.1  # ten adapters vs base + the adapters' own weights


def _stream_interval_s() -> float:
    from modelforge_inference.settings import InferenceSettings

    # As inference-svc streams by default (MODELFORGE_INFERENCE_STREAM_INTERVAL_S).
    return float(InferenceSettings.model_fields["inference_stream_interval_s"].default)


STREAM_INTERVAL_S = _stream_interval_s()


@dataclass
class Run:
    tokens: int
    wall_s: float
    first_token_s: list[float] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else float("nan")


def build_adapters(base: Path, out_dir: Path, count: int) -> list[Path]:
    """LoRA adapters with random (non-zero) weights, as training would leave them (rank 8, q/k/v/o)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    folders = []
    for index in range(count):
        folder = out_dir / f"adapter-{index}"
        if not (folder / "adapter_config.json").exists():
            torch.manual_seed(index)
            model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
            config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                task_type="CAUSAL_LM", init_lora_weights=False)
            get_peft_model(model, config).save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        folders.append(folder)
    return folders


def model_refs(base: Path, adapters: list[Path]) -> list[Any]:
    from modelforge_inference.domain import TEXT_GENERATION, ModelRef

    return [ModelRef(f"bench-adapter-{i}", str(base), str(folder), TEXT_GENERATION, "lora")
            for i, folder in enumerate(adapters)]


def tensor_bytes(model: Any) -> int:
    """Bytes of the distinct storages behind the model's parameters and buffers."""
    seen: set[int] = set()
    total = 0
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        storage = tensor.untyped_storage()
        if storage.data_ptr() in seen:
            continue
        seen.add(storage.data_ptr())
        total += storage.nbytes()
    return total


class PlainBatch:
    """The base with one adapter, generating for several prompts at once with transformers' generate()."""

    def __init__(self, base: Path, adapter: Path) -> None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteria

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(adapter)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        self.model = PeftModel.from_pretrained(model, str(adapter), is_trainable=False).eval()

        class FirstStep(StoppingCriteria):
            def __init__(self) -> None:
                self.at: float | None = None

            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                if self.at is None:
                    self.at = time.perf_counter()
                return torch.zeros(input_ids.shape[0], dtype=torch.bool)

        self._first_step = FirstStep

    def generate(self, users: int, max_new_tokens: int) -> Run:
        from transformers import StoppingCriteriaList

        texts = [
            self.tokenizer.apply_chat_template([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                                               tokenize=False, add_generation_prompt=True)
            for i in range(users)
        ]
        started = time.perf_counter()
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        first = self._first_step()
        with self.torch.inference_mode():
            output = self.model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id,
                                         stopping_criteria=StoppingCriteriaList([first]))
        wall = time.perf_counter() - started
        new = output[:, encoded["input_ids"].shape[1]:].tolist()
        eos = self.tokenizer.eos_token_id
        tokens = sum(row.index(eos) + 1 if eos in row else len(row) for row in new)
        first_s = (first.at - started) if first.at is not None else float("nan")
        return Run(tokens, wall, [first_s] * users)


async def serve(local: Any, refs: list[Any], users: int, max_new_tokens: int, streamed: bool,
                first_user: int = 0) -> Run:
    """Users first_user .. first_user + users - 1 at once; user i asks PROMPTS[i] of adapter i."""
    from modelforge_inference.domain import GenerationParams

    started = time.perf_counter()

    async def one(index: int) -> tuple[int, float]:
        params = GenerationParams(prompt=PROMPTS[index % len(PROMPTS)], max_new_tokens=max_new_tokens)
        ref = refs[index % len(refs)]
        if not streamed:
            result = await local.generate(ref, params)
            return result.tokens_generated, time.perf_counter() - started
        first = float("nan")
        tokens = 0
        async for chunk in local.generate_stream(ref, params):
            if chunk.text and first != first:
                first = time.perf_counter() - started
            if chunk.finished:
                tokens = chunk.tokens_generated
        return tokens, first

    done = await asyncio.gather(*(one(i) for i in range(first_user, first_user + users)))
    wall = time.perf_counter() - started
    return Run(sum(tokens for tokens, _ in done), wall, [first for _, first in done] if streamed else [])


async def memory_of_ten_adapters(base: Path, adapters: list[Path]) -> dict[str, float]:
    import torch
    from transformers import AutoModelForCausalLM

    from modelforge_inference.artifacts import estimate_weight_bytes
    from modelforge_inference.backends.local import LocalBackend

    alone = tensor_bytes(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32))
    own = sum(estimate_weight_bytes(folder, None) for folder in adapters)
    local = LocalBackend(len(adapters) + 1, 1 << 40, device="cpu")
    refs = model_refs(base, adapters)
    served = [await local.served_model(ref) for ref in refs]
    loaded = tensor_bytes(served[0].host.model)
    hosts = {id(s.host) for s in served}
    await local.close()
    return {"base": alone, "own": own, "loaded": loaded, "hosts": len(hosts), "accounted": float(local.cache.loads)}


def measure(base: Path, work_dir: Path, quick: bool) -> Section:
    """The whole benchmark, without the stack (the smoke test calls it with the tiny model)."""
    import torch

    from modelforge_inference.backends.local import LocalBackend

    if TORCH_THREADS > 0:
        torch.set_num_threads(TORCH_THREADS)
    max_new_tokens = 8 if quick else 128
    rounds = 1 if quick else 3
    adapters = build_adapters(base, work_dir / "serving-adapters", ADAPTERS_FOR_MEMORY)
    refs = model_refs(base, adapters[:ADAPTERS_IN_USE])
    plain = PlainBatch(base, adapters[0])
    local = LocalBackend(ADAPTERS_IN_USE + 1, 1 << 40, device="cpu", stream_interval_s=STREAM_INTERVAL_S)
    loop = asyncio.new_event_loop()
    try:
        for ref in refs:  # warm-up: load the base, attach the adapters, first forward passes
            loop.run_until_complete(serve(local, [ref], 2, 4, streamed=True))
        plain.generate(2, 4)
        served: dict[tuple[int, str], list[Run]] = {}
        plains: dict[int, list[Run]] = {}
        # One user at a time, each of the requests the 8 users send together: the like-for-like base of
        # the 8-user goals (a random model's first tokens may be invisible for one prompt and not another).
        alone: list[list[Run]] = []
        for _ in range(rounds):
            for users in USERS:  # A B A B ...: plain, then served
                plains.setdefault(users, []).append(plain.generate(users, max_new_tokens))
                served.setdefault((users, "stream"), []).append(
                    loop.run_until_complete(serve(local, refs, users, max_new_tokens, streamed=True)))
            alone.append([loop.run_until_complete(serve(local, refs, 1, max_new_tokens, streamed=True, first_user=i))
                          for i in range(8)])
        # One user against plain generate, back to back (A B C A B C ...), so machine load hits both alike.
        single: dict[str, list[Run]] = {"plain": [], "whole": [], "stream": []}
        for _ in range(1 if quick else 3 * rounds):
            single["plain"].append(plain.generate(1, max_new_tokens))
            for kind in ("whole", "stream"):
                single[kind].append(
                    loop.run_until_complete(serve(local, refs, 1, max_new_tokens, streamed=kind == "stream")))
        loop.run_until_complete(local.close())
        memory = loop.run_until_complete(memory_of_ten_adapters(base, adapters))
    finally:
        loop.close()

    section = Section(
        key="serving",
        title="Serving many users: continuous batching over adapters of one base",
        method=(
            f"Base {base.name}; {ADAPTERS_IN_USE} LoRA adapters (rank 8, q/k/v/o) in use, user i on adapter "
            f"i mod {ADAPTERS_IN_USE} (one user: adapter 0); greedy, max_new_tokens {max_new_tokens}; "
            f"{rounds} round(s), plain and served alternating per user count, after a warm-up. "
            + (__doc__ or "").split("\n\n")[1].replace("\n", " ")
        ),
    )
    table = Table(
        "Aggregate tokens/s and time to first token (median of rounds; TTFT over all users of all rounds)",
        ["users", "served tokens/s", "plain batched tokens/s", "served vs plain", "served TTFT p50 ms",
         "served TTFT p99 ms", "plain TTFT ms"],
    )
    for users in USERS:
        runs, baseline = served[(users, "stream")], plains[users]
        firsts = [f * 1000 for run in runs for f in run.first_token_s if f == f]
        table.add(users, median([r.tokens_per_s for r in runs]), median([r.tokens_per_s for r in baseline]),
                  median([ratio(r.tokens_per_s, b.tokens_per_s) for r, b in zip(runs, baseline, strict=True)]),
                  percentile(firsts, 0.5), percentile(firsts, 0.99),
                  median([b.first_token_s[0] * 1000 for b in baseline]))
    section.tables.append(table)
    section.notes.append(
        "The 8-user goals compare with the same eight requests served one at a time (user i: prompt i, adapter "
        "i mod 4): aggregate tokens/s = their tokens / their summed wall time, first-token p99 over them."
    )
    section.notes.append(
        f"The one-user goals come from {len(single['plain'])} extra rounds of plain generate, served whole and "
        "served streamed back to back (prompt 0, adapter 0), medians of the per-round ratios."
    )

    one = [Run(sum(r.tokens for r in runs), sum(r.wall_s for r in runs), [f for r in runs for f in r.first_token_s])
           for runs in alone]
    eight = served[(8, "stream")]
    scaling = [ratio(e.tokens_per_s, o.tokens_per_s) for e, o in zip(eight, one, strict=True)]
    section.goals.append(Goal(
        "8 users' aggregate tokens/s vs one user at a time", f">= {SCALING_GOAL:g}x", f"{median(scaling):.2f}x",
        median(scaling) >= SCALING_GOAL, doubt="" if quick else ratio_doubt(scaling)))
    for kind in ("whole", "stream"):
        per_round = [ratio(s.tokens_per_s, p.tokens_per_s)
                     for s, p in zip(single[kind], single["plain"], strict=True)]
        section.goals.append(Goal(
            f"one user's tokens/s vs plain generate ({'streamed' if kind == 'stream' else 'whole'})",
            f">= {SINGLE_USER_GOAL}x", f"{median(per_round):.3f}x", median(per_round) >= SINGLE_USER_GOAL,
            doubt="" if quick else ratio_doubt(per_round)))
    ttft_one = percentile([f for r in one for f in r.first_token_s if f == f], 0.99)
    ttft_eight = percentile([f for r in eight for f in r.first_token_s if f == f], 0.99)
    ttft_ratio = ratio(ttft_eight, ttft_one)
    section.goals.append(Goal(
        "time to first token p99, 8 users vs one at a time", f"<= {TTFT_GOAL:g}x",
        f"{ttft_ratio:.2f}x ({ttft_eight * 1000:.1f} vs {ttft_one * 1000:.1f} ms)", ttft_ratio <= TTFT_GOAL))

    expected = memory["base"] + memory["own"]
    memory_ratio = ratio(memory["loaded"], expected)
    mib = 1024 * 1024
    memory_table = Table("Memory of loaded weights (MiB)", ["what", "MiB"])
    memory_table.add("base alone", memory["base"] / mib)
    memory_table.add(f"{ADAPTERS_FOR_MEMORY} adapters' own weights (safetensors)", memory["own"] / mib)
    memory_table.add(f"base with {ADAPTERS_FOR_MEMORY} adapters attached, as served", memory["loaded"] / mib)
    memory_table.add(f"{ADAPTERS_FOR_MEMORY} separate copies (before issue 17)",
                     ADAPTERS_FOR_MEMORY * memory["base"] / mib + memory["own"] / mib)
    section.tables.append(memory_table)
    section.goals.append(Goal(
        f"memory of {ADAPTERS_FOR_MEMORY} adapters on one base vs base + their own weights", f"<= {MEMORY_GOAL}x",
        f"{memory_ratio:.3f}x ({int(memory['hosts'])} base cop{'y' if memory['hosts'] == 1 else 'ies'})",
        memory_ratio <= MEMORY_GOAL and memory["hosts"] == 1))
    section.notes.append(
        "Memory is the distinct tensor storages of the served model (the base's parameters and buffers plus "
        "every attached adapter's LoRA matrices), not the process RSS, which the allocator's caches blur."
    )
    return section


def run(context: BenchContext) -> Section:
    return measure(context.model_dir, context.work_dir, context.quick)
