"""Serving many users (issue 17): inference-svc's local backend with 1, 4, 8 and 16 users at once on one
base model with four LoRA adapters, side by side with plain batched `model.generate` on the same base in
the same run; and the memory of ten adapters on one base against the base alone.

Both sides run in this process (the serving side is inference-svc's LocalBackend itself, its continuous
batching scheduler included, without the gRPC and HTTP hops that the Generation section measures), with
the same torch threads, prompts and max_new_tokens. Users start together; each streams its answer (time
to first token = the first non-empty piece) and aggregate tokens/s = all new tokens / wall time until the
last user is done. The plain side generates for the same prompts in one left-padded batch with one adapter
(plain `generate` cannot mix adapters in a batch), from the prompt text to the answer text as the served
side does (chat template, tokenizer, generate, decode); its first-token time is the end of its first
decoding step.
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
    "Name a river in Europe.",
    "How do bees make honey?",
    "Describe a quiet morning.",
    "What is a prime number?",
    "Give me a tip for sleeping well.",
    "Why do leaves fall in autumn?",
    "Explain rain to a child.",
)
SCALING_GOAL = 4.0  # 8 users vs 1 user, aggregate tokens/s
SINGLE_USER_GOAL = 0.95  # 1 user vs plain generate
TTFT_GOAL = 2.0  # p99 first-token time at 8 users vs 1 user
MEMORY_GOAL = 1.1  # ten adapters vs base + the adapters' own weights
# Time to first token: its own short rounds (the first token does not depend on max_new_tokens), enough
# of them that p99 is not simply the largest of a handful of values.
TTFT_ROUNDS = 40
TTFT_MAX_NEW_TOKENS = 8


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
    # CPU time of this whole process meanwhile (every thread: the scheduler's, the event loop's), which
    # other load on the machine moves far less than the wall time.
    cpu_s: float = float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s > 0 else float("nan")

    @property
    def cpu_ms_per_token(self) -> float:
        return self.cpu_s * 1000 / self.tokens if self.tokens else float("nan")


@dataclass(frozen=True)
class User:
    """One user's request: a prompt to one adapter."""

    ref: Any
    prompt: str


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

    def generate(self, prompts: list[str], max_new_tokens: int) -> Run:
        """The answers' text for these prompts, from the prompt text, in one batch."""
        from transformers import StoppingCriteriaList

        started, cpu_started = time.perf_counter(), time.process_time()
        texts = [self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                                    add_generation_prompt=True) for prompt in prompts]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        first = self._first_step()
        with self.torch.inference_mode():
            output = self.model.generate(**encoded, max_new_tokens=max_new_tokens, do_sample=False,
                                         pad_token_id=self.tokenizer.pad_token_id,
                                         stopping_criteria=StoppingCriteriaList([first]))
        new = output[:, encoded["input_ids"].shape[1]:]
        self.tokenizer.batch_decode(new, skip_special_tokens=True)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        eos = self.tokenizer.eos_token_id
        tokens = sum(row.index(eos) + 1 if eos in row else len(row) for row in new.tolist())
        first_s = (first.at - started) if first.at is not None else float("nan")
        return Run(tokens, wall, [first_s] * len(prompts), cpu)


async def serve(local: Any, users: list[User], max_new_tokens: int, streamed: bool) -> Run:
    """These users at once, each streaming its answer (or taking it whole)."""
    from modelforge_inference.domain import GenerationParams

    started, cpu_started = time.perf_counter(), time.process_time()

    async def one(user: User) -> tuple[int, float]:
        params = GenerationParams(prompt=user.prompt, max_new_tokens=max_new_tokens)
        if not streamed:
            result = await local.generate(user.ref, params)
            return result.tokens_generated, time.perf_counter() - started
        first = float("nan")
        tokens = 0
        async for chunk in local.generate_stream(user.ref, params):
            if chunk.text and first != first:
                first = time.perf_counter() - started
            if chunk.finished:
                tokens = chunk.tokens_generated
        return tokens, first

    done = await asyncio.gather(*(one(user) for user in users))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return Run(sum(tokens for tokens, _ in done), wall, [first for _, first in done] if streamed else [], cpu)


async def choose_users(local: Any, refs: list[Any], count: int) -> list[User]:
    """User i asks adapter i mod len(refs) the first prompt from PROMPTS[i] on whose greedy first token
    is visible text. A random-weights model answers some prompts with byte runs that are not UTF-8; the
    stream rightly holds those back until they form characters, so their first text comes tens of tokens
    late, and their "first token" time measured decoding speed, not first-token latency (the 8-user
    time-to-first-token p99 was the first text of one such user: bench/ANALYSIS.md, Serving)."""
    from modelforge_inference.domain import GenerationParams

    users = []
    for index in range(count):
        ref = refs[index % len(refs)]
        chosen = PROMPTS[index % len(PROMPTS)]
        for offset in range(len(PROMPTS)):
            prompt = PROMPTS[(index + offset) % len(PROMPTS)]
            first = await local.generate(ref, GenerationParams(prompt=prompt, max_new_tokens=1))
            if first.generated_text.strip() and "\ufffd" not in first.generated_text:
                chosen = prompt
                break
        users.append(User(ref, chosen))
    return users


def ttft_p99_ratio(together: list[Run], alone: list[list[Run]]) -> float:
    """p99 of the first-token times of users served together over that of the same users one at a time."""
    together_s = [f for r in together for f in r.first_token_s if f == f]
    alone_s = [f for runs in alone for r in runs for f in r.first_token_s if f == f]
    return ratio(percentile(together_s, 0.99), percentile(alone_s, 0.99))


def spread(per_round: list[float]) -> str:
    finite = [r for r in per_round if r == r]
    return f"rounds {min(finite):.2f}x to {max(finite):.2f}x" if len(finite) > 1 else "one round"


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
    single_rounds = 1 if quick else 5 * rounds
    ttft_rounds = 1 if quick else TTFT_ROUNDS
    adapters = build_adapters(base, work_dir / "serving-adapters", ADAPTERS_FOR_MEMORY)
    refs = model_refs(base, adapters[:ADAPTERS_IN_USE])
    plain = PlainBatch(base, adapters[0])
    local = LocalBackend(ADAPTERS_IN_USE + 1, 1 << 40, device="cpu", stream_interval_s=STREAM_INTERVAL_S)
    loop = asyncio.new_event_loop()
    try:
        # Warm-up: load the base, attach the adapters, first forward passes; then each user's prompt.
        for ref in refs:
            loop.run_until_complete(serve(local, [User(ref, PROMPTS[0])] * 2, 4, streamed=True))
        users = loop.run_until_complete(choose_users(local, refs, max(USERS)))
        plain.generate([users[0].prompt] * 2, 4)
        served: dict[int, list[Run]] = {}
        plains: dict[int, list[Run]] = {}
        # One user at a time, each of the requests the 8 users send together: the like-for-like base of
        # the 8-user goals.
        alone: list[list[Run]] = []
        for _ in range(rounds):
            for count in USERS:  # A B A B ...: plain, then served
                plains.setdefault(count, []).append(plain.generate([u.prompt for u in users[:count]], max_new_tokens))
                served.setdefault(count, []).append(
                    loop.run_until_complete(serve(local, users[:count], max_new_tokens, streamed=True)))
            alone.append([loop.run_until_complete(serve(local, [user], max_new_tokens, streamed=True))
                          for user in users[:8]])
        # One user against plain generate, back to back, the order turning each round (A B C, B C A, C A B
        # ...), so machine load and anything left behind by the run before hit every side alike.
        kinds = ["plain", "whole", "stream"]
        single: dict[str, list[Run]] = {kind: [] for kind in kinds}
        for index in range(single_rounds):
            for kind in kinds[index % 3:] + kinds[:index % 3]:
                if kind == "plain":
                    single[kind].append(plain.generate([users[0].prompt], max_new_tokens))
                else:
                    single[kind].append(loop.run_until_complete(
                        serve(local, users[:1], max_new_tokens, streamed=kind == "stream")))
        # Time to first token: 8 users at once, then the same 8 one at a time, in short rounds.
        ttft_together: list[Run] = []
        ttft_alone: list[list[Run]] = []
        for _ in range(ttft_rounds):
            ttft_together.append(loop.run_until_complete(serve(local, users[:8], TTFT_MAX_NEW_TOKENS, True)))
            ttft_alone.append([loop.run_until_complete(serve(local, [user], TTFT_MAX_NEW_TOKENS, True))
                               for user in users[:8]])
        loop.run_until_complete(local.close())
        memory = loop.run_until_complete(memory_of_ten_adapters(base, adapters))
    finally:
        loop.close()

    section = Section(
        key="serving",
        title="Serving many users: continuous batching over adapters of one base",
        method=(
            f"Base {base.name}; {ADAPTERS_IN_USE} LoRA adapters (rank 8, q/k/v/o) in use, user i on adapter "
            f"i mod {ADAPTERS_IN_USE} (one user: adapter 0) with a prompt whose first token is visible text "
            f"(choose_users); greedy, max_new_tokens {max_new_tokens}; {rounds} round(s), plain and served "
            "alternating per user count, after a warm-up. "
            + (__doc__ or "").split("\n\n")[1].replace("\n", " ")
        ),
    )
    table = Table(
        "Aggregate tokens/s and time to first token (median of rounds; TTFT over all users of all rounds)",
        ["users", "served tokens/s", "plain batched tokens/s", "served vs plain", "served TTFT p50 ms",
         "served TTFT p99 ms", "plain TTFT ms"],
    )
    for count in USERS:
        runs, baseline = served[count], plains[count]
        firsts = [f * 1000 for run in runs for f in run.first_token_s if f == f]
        table.add(count, median([r.tokens_per_s for r in runs]), median([r.tokens_per_s for r in baseline]),
                  median([ratio(r.tokens_per_s, b.tokens_per_s) for r, b in zip(runs, baseline, strict=True)]),
                  percentile(firsts, 0.5), percentile(firsts, 0.99),
                  median([b.first_token_s[0] * 1000 for b in baseline]))
    section.tables.append(table)

    single_table = Table(
        f"One user: plain generate, served whole and served streamed ({single_rounds} rounds; median, and the "
        "rounds' range)",
        ["side", "tokens/s", "wall ms per token", "process CPU ms per token", "tokens/s vs plain",
         "CPU per token vs plain"],
    )
    for kind in kinds:
        runs = single[kind]
        per_round = [ratio(r.tokens_per_s, p.tokens_per_s) for r, p in zip(runs, single["plain"], strict=True)]
        cpu_round = [ratio(r.cpu_ms_per_token, p.cpu_ms_per_token) for r, p in zip(runs, single["plain"], strict=True)]
        label = {"plain": "plain generate", "whole": "served whole", "stream": "served streamed"}[kind]
        table_ratio = "1" if kind == "plain" else f"{median(per_round):.3f}x ({spread(per_round)})"
        cpu_ratio = "1" if kind == "plain" else f"{median(cpu_round):.3f}x ({spread(cpu_round)})"
        single_table.add(label, median([r.tokens_per_s for r in runs]),
                         median([r.wall_s * 1000 / r.tokens for r in runs if r.tokens]),
                         median([r.cpu_ms_per_token for r in runs]), table_ratio, cpu_ratio)
    section.tables.append(single_table)

    ttft_table = Table(
        f"Time to first token: 8 users at once vs the same 8 one at a time ({ttft_rounds} rounds of "
        f"max_new_tokens {TTFT_MAX_NEW_TOKENS}; percentiles over every user of every round)",
        ["users", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms"],
    )
    together_ms = [f * 1000 for r in ttft_together for f in r.first_token_s if f == f]
    alone_ms = [f * 1000 for runs in ttft_alone for r in runs for f in r.first_token_s if f == f]
    for label, values in (("8 at once", together_ms), ("1 at a time", alone_ms)):
        ttft_table.add(label, len(values), percentile(values, 0.5), percentile(values, 0.9),
                       percentile(values, 0.99), max(values, default=float("nan")))
    section.tables.append(ttft_table)

    section.notes.append(
        "The 8-user throughput goal compares with the same eight requests served one at a time (user i: its "
        "prompt, adapter i mod 4): aggregate tokens/s = their tokens / their summed wall time."
    )
    section.notes.append(
        f"The one-user goals come from {single_rounds} extra rounds of plain generate, served whole and served "
        "streamed back to back (user 0), medians of the per-round ratios; both served sides are measured from "
        "the prompt text to the answer text, and so is plain generate. Process CPU per token moves less with "
        "the machine's load than wall time: it shows what each side costs, the wall time what a user waits."
    )

    one = [Run(sum(r.tokens for r in runs), sum(r.wall_s for r in runs), [f for r in runs for f in r.first_token_s])
           for runs in alone]
    eight = served[8]
    scaling = [ratio(e.tokens_per_s, o.tokens_per_s) for e, o in zip(eight, one, strict=True)]
    section.goals.append(Goal(
        "8 users' aggregate tokens/s vs one user at a time", f">= {SCALING_GOAL:g}x",
        f"{median(scaling):.2f}x ({spread(scaling)})", median(scaling) >= SCALING_GOAL,
        doubt="" if quick else ratio_doubt(scaling, ceiling=float("inf"))))
    for kind in ("whole", "stream"):
        per_round = [ratio(s.tokens_per_s, p.tokens_per_s)
                     for s, p in zip(single[kind], single["plain"], strict=True)]
        section.goals.append(Goal(
            f"one user's tokens/s vs plain generate ({'streamed' if kind == 'stream' else 'whole'})",
            f">= {SINGLE_USER_GOAL}x", f"{median(per_round):.3f}x ({spread(per_round)})",
            median(per_round) >= SINGLE_USER_GOAL, doubt="" if quick else ratio_doubt(per_round)))
    ttft_ratio = ratio(percentile(together_ms, 0.99), percentile(alone_ms, 0.99))
    # The same p99 ratio over the even and the odd rounds (interleaved, so load reaches both alike): when
    # they fall on different sides of the goal, one run cannot settle it.
    halves = [ttft_p99_ratio(ttft_together[start::2], ttft_alone[start::2]) for start in (0, 1)]
    split = len(ttft_together) > 1 and (halves[0] <= TTFT_GOAL) != (halves[1] <= TTFT_GOAL)
    section.goals.append(Goal(
        "time to first token p99, 8 users vs one at a time", f"<= {TTFT_GOAL:g}x",
        f"{ttft_ratio:.2f}x ({percentile(together_ms, 0.99):.1f} vs {percentile(alone_ms, 0.99):.1f} ms; p50 "
        f"{ratio(percentile(together_ms, 0.5), percentile(alone_ms, 0.5)):.2f}x)",
        ttft_ratio <= TTFT_GOAL,
        doubt=f"even and odd rounds give {halves[0]:.2f}x and {halves[1]:.2f}x" if split else ""))

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
