"""Peak memory of a fine-tuning job, from the model's shape (model_shape.py) and the job's settings.

"Peak" is what nvidia-smi shows as used on the GPU while the job trains (what an out-of-memory is
decided by): the caching allocator's peak reserved memory, the process's CUDA context, and the
memory the driver holds on any card before a process starts. docs/estimate.md explains the target,
derives each part and holds the estimate against every measured run. Pure arithmetic; per part:

weights
    16-bit: 2 bytes/param; fp32: 4. 4-bit (qlora or use_4bit): the linear weights inside the
    blocks as NF4 with double quantisation (0.5 + 1/64 + 4/16384 byte/param). Embeddings, lm_head,
    norms and biases stay unquantised: the huggingface provider runs peft's
    prepare_model_for_kbit_training, which upcasts them to fp32 (4.2 GB on an 8B model with a 128k
    vocabulary); unsloth keeps them in the compute dtype. Full fine-tuning DPO/RLHF adds a frozen
    reference copy; with LoRA the reference is the model with its adapter disabled (no extra weights).
adapters, gradients, optimizer
    LoRA on every linear layer of the blocks: r * (in + out) params each. peft keeps them in fp32
    on 16-bit models; trl casts QLoRA adapters to bf16 (huggingface provider); unsloth keeps fp32.
    One gradient and two AdamW moments per trainable parameter, in the adapter's dtype.
activations
    What autograd keeps, per token and layer, counted tensor by tensor for Llama-style decoders (and
    checked on the CPU with saved-tensor hooks, docs/estimate.md): RMSNorm's fp32 copy of its input
    (2 per layer; 4 with Gemma's post-norms; q/k norms add theirs), the normalised inputs the LoRA
    matmuls keep, q/k/v after RoPE, the attention output
    and its log-sum-exp, the MLP's gate, activation and up projections, each adapter's rank-r
    intermediate, and with lora_dropout > 0 the dropped-out input and mask of every wrapped layer
    (with dropout 0 peft uses an identity and keeps nothing). On the huggingface 4-bit path the
    residual stream is fp32 (the upcast embeddings feed it and bitsandbytes returns its input's
    dtype), so the elementwise MLP tensors are fp32 too.
    Without gradient checkpointing every layer keeps its set. With it, each layer keeps its input
    (unsloth offloads those to CPU memory) and one layer is recomputed at a time, plus the
    gradients crossing that layer. DPO runs chosen and rejected together (twice the sequences);
    its reference pass runs without gradients and holds less than the training pass.
logits
    trl (sft, dpo, grpo) scores the LM head in tiles of 4096 tokens x 32768 vocabulary entries in the
    compute dtype, with fp32 accumulators for the hidden-state gradient; an fp32 (upcast) head is cast
    to the compute dtype one vocabulary chunk at a time (two chunks alive when the backward rebinds
    it). unsloth's fused cross-entropy keeps about a fifth of the bf16 logits alive at once. Other
    heads (seq2seq, span heads) hold the full logits, their fp32 copy and the loss's fp32 gradient.
RLHF
    Two phases, the larger counts: the reward model trained on chosen/rejected pairs while the policy
    is already loaded; then GRPO with the policy, the frozen reward model and the generation cache.
overhead
    The caching allocator's slack (reserved beyond allocated: 0.1 GiB plus 2% of the non-weight
    tensors), the CUDA context (0.75 GiB measured; unsloth's kernels and buffers add 0.09 GiB) and
    the driver's reserve on the card (0.47 GiB on the H100), or on the CPU the Python/torch runtime
    (1 GiB) plus 10% of the tensors for the allocator.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from modelforge_hardware.model_shape import Block, ModelShape

GIB = 1 << 30
NF4_BYTES = 0.5
ABSMAX_BLOCK = 64
DOUBLE_QUANT_BLOCK = 256
# The process's CUDA context on the H100 (torch, cuBLAS and cuDNN handles, loaded kernels): nvidia-smi's
# used memory at peak minus the allocator's peak reserved minus the card's idle usage, 0.746 GiB on every
# huggingface run of data/vram-h100-calibration.jsonl.
CUDA_CONTEXT_BYTES = round(0.75 * GIB)
# unsloth's Triton kernels (0.07 GiB more context on the same runs) and its own buffers (0.03 GiB more
# allocated right after loading than transformers on the same shape).
UNSLOTH_RUNTIME_BYTES = round(0.095 * GIB)
# What NVML counts as used on the idle card before any process starts (0.472 GiB on the H100). It
# counts against an out-of-memory, but a GPU's free memory already excludes it (fit.py).
GPU_DRIVER_RESERVE_BYTES = round(0.47 * GIB)
CPU_RUNTIME_BYTES = GIB
# The caching allocator keeps freed blocks reserved; what it holds beyond the peak allocated memory grows
# with the transient tensors (0.05-0.23 GiB on the measured runs).
ALLOCATOR_SLACK_BASE_BYTES = round(0.1 * GIB)
ALLOCATOR_SLACK_FRACTION = 0.02
CPU_ALLOCATOR_FRACTION = 0.10
# trl's chunked log-probabilities (trl.kernels.chunked_logprob): tokens and vocabulary entries per tile.
LOGPROB_TOKEN_CHUNK = 4096
LOGPROB_VOCAB_CHUNK = 32768
# unsloth's fused cross-entropy: the share of the full bf16 logits alive at its peak (0.39 bytes per
# token and vocabulary entry on both unsloth runs: Qwen2.5's 152k and Llama-3's 128k vocabulary).
UNSLOTH_LOGITS_SHARE = 0.195
# unsloth's gradient checkpointing offloads each layer's input to CPU memory: the GPU holds about two.
UNSLOTH_OFFLOAD_BUFFERS = 2
LORA_DROPOUT_MASK_BYTES = 1
PAIRED_STRATEGIES = frozenset({"dpo", "rlhf"})
# Strategies trained through trl's trainers, which score the LM head in tiles.
TRL_STRATEGIES = frozenset({"sft", "qlora", "dpo", "rlhf"})
PRECISION_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
PROVIDERS = ("huggingface", "unsloth")
# GRPO's answers: trainer-svc's strategies/rlhf.py samples at most this many tokens.
RLHF_MAX_COMPLETION_TOKENS = 256


@dataclass(frozen=True)
class TrainingJob:
    """What the estimate depends on. lora_r > 0 trains LoRA adapters; lora_r < 0 means full
    fine-tuning (every weight trainable)."""

    strategy: str
    lora_r: int
    batch_size: int
    seq_len: int
    precision: str
    use_4bit: bool
    gradient_checkpointing: bool
    provider: str = "huggingface"
    lora_dropout: float = 0.0
    # Whether the unquantised weights of a 4-bit model are upcast to fp32; None: as the provider does
    # (huggingface: peft's prepare_model_for_kbit_training does; unsloth does not).
    upcast_non_quantized: bool | None = None
    double_quant: bool = True
    on_gpu: bool = True

    @property
    def full_fine_tuning(self) -> bool:
        return self.lora_r < 0

    @property
    def four_bit(self) -> bool:
        return self.use_4bit or self.strategy == "qlora"

    @property
    def unsloth(self) -> bool:
        return self.provider == "unsloth"

    @property
    def compute_bytes(self) -> int:
        return PRECISION_BYTES[self.precision]

    def upcasts(self, shape: ModelShape) -> bool:
        """Whether the unquantised weights (and so the residual stream) are fp32 on a 4-bit model."""
        if not (self.four_bit or shape.prequantized_4bit):
            return False
        if self.upcast_non_quantized is not None:
            return self.upcast_non_quantized
        return not self.unsloth


@dataclass(frozen=True)
class MemoryPart:
    """One named share of the peak, with how it was counted."""

    name: str
    bytes: int
    detail: str


@dataclass(frozen=True)
class MemoryBreakdown:
    weights_bytes: int
    adapters_bytes: int
    optimizer_bytes: int
    gradients_bytes: int
    activations_bytes: int
    overhead_bytes: int
    logits_bytes: int = 0
    # The same total in finer named parts (overhead split into allocator slack, CUDA context and the
    # driver's reserve), largest first.
    parts: tuple[MemoryPart, ...] = ()
    # Of the total, what the GPU's free memory already excludes (the driver's reserve on the card).
    preexisting_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.adapters_bytes
            + self.optimizer_bytes
            + self.gradients_bytes
            + self.activations_bytes
            + self.logits_bytes
            + self.overhead_bytes
        )

    @property
    def needed_bytes(self) -> int:
        """What the job adds to the device: compared with its free memory."""
        return self.total_bytes - self.preexisting_bytes

    def largest(self, count: int = 3) -> tuple[MemoryPart, ...]:
        return tuple(sorted(self.parts, key=lambda part: -part.bytes)[:count])


@dataclass(frozen=True)
class MemoryEstimate:
    breakdown: MemoryBreakdown
    parameters: int
    trainable_parameters: int


def nf4_bytes_per_param(double_quant: bool) -> float:
    if double_quant:
        return NF4_BYTES + 1 / ABSMAX_BLOCK + 4 / (ABSMAX_BLOCK * DOUBLE_QUANT_BLOCK)
    return NF4_BYTES + 4 / ABSMAX_BLOCK


def _gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def weights_bytes(shape: ModelShape, job: TrainingJob) -> int:
    return _weights(shape, job)[0]


def _weights(shape: ModelShape, job: TrainingJob) -> tuple[int, str]:
    dtype_bytes = job.compute_bytes
    total = shape.total_params
    if job.four_bit or shape.prequantized_4bit:
        quantized = shape.quantizable_params
        kept_bytes = 4 if job.upcasts(shape) else dtype_bytes
        nf4 = quantized * nf4_bytes_per_param(job.double_quant)
        kept = (total - quantized) * kept_bytes
        weights = nf4 + kept
        why = "fp32 after prepare_model_for_kbit_training" if kept_bytes == 4 else f"{job.precision}"
        detail = (
            f"{quantized / 1e9:.2f}e9 linear weights in NF4 ({_gib(nf4)}) + {(total - quantized) / 1e9:.2f}e9 "
            f"unquantised (embeddings, head, norms) in {why} ({_gib(kept)})"
        )
    else:
        weights = total * dtype_bytes
        detail = f"{total / 1e9:.2f}e9 parameters in {job.precision}"
    if job.full_fine_tuning and job.strategy in PAIRED_STRATEGIES:
        weights += total * dtype_bytes
        detail += f" + a frozen {job.precision} reference copy"
    return round(weights), detail


def adapter_dtype_bytes(shape: ModelShape, job: TrainingJob) -> int:
    """Bytes per LoRA parameter while training: peft upcasts adapters to fp32; trl casts QLoRA
    adapters back to bf16 (huggingface provider); unsloth keeps fp32."""
    if not job.on_gpu:
        return 4
    if (job.four_bit or shape.prequantized_4bit) and not job.unsloth and job.strategy in TRL_STRATEGIES:
        return 2
    return 4


def _residual_bytes(shape: ModelShape, job: TrainingJob) -> int:
    return 4 if job.upcasts(shape) else job.compute_bytes


def _decoder_layer(block: Block, shape: ModelShape, job: TrainingJob) -> tuple[float, float]:
    """(kept for backward, gradients crossing the layer) per token of one Llama-style layer."""
    c = job.compute_bytes
    res = _residual_bytes(shape, job)
    hidden, width = shape.hidden_size, block.mlp_width
    q, kv = block.attention_width, block.kv_width
    lora = not job.full_fine_tuning
    rank = max(job.lora_r, 0)
    if job.unsloth:
        # Fused kernels: RMSNorm keeps its input and 1/rms; the LoRA QKV, O and MLP kernels keep their
        # inputs and the gate/up outputs (the activation is recomputed in backward); RoPE runs in place;
        # attention keeps q, k, v, its output and log-sum-exp.
        kept = c * (4 * hidden + 3 * q + 2 * kv + 2 * width) + 4 * block.heads
        crossing = 3 * c * width + 3 * c * hidden
    else:
        norms = block.norms * 4 * hidden  # RMSNorm computes in fp32 and keeps that copy of its input
        if block.qk_norm:
            norms += 4 * (q + kv)
        # The normalised inputs as the projections and their adapters keep them (five hidden-wide tensors
        # counted by scripts/saved_activations.py).
        normed_inputs = 5 * c * hidden
        attention = 3 * c * q + 2 * c * kv + 4 * block.heads  # q, k after RoPE, v, output, o_proj input, lse
        # Gated: gate, activation and up in the residual dtype, the down projection's input in the compute
        # dtype; plain: the activation's input and the second projection's input.
        mlp = (3 * res + c) * width if block.gated_mlp else (res + c) * width
        kept = norms + normed_inputs + attention + mlp
        crossing = 3 * res * width + 3 * res * hidden
    if lora:
        kept += block.lora_modules * c * rank
        if job.lora_dropout > 0:
            kept += (res + LORA_DROPOUT_MASK_BYTES) * block.lora_input_elems
    return kept, crossing


def kept_per_token(shape: ModelShape, job: TrainingJob) -> float:
    """Bytes autograd keeps per token in one layer of the model's first text block (what
    scripts/saved_activations.py counts with torch's saved-tensor hooks)."""
    block = next(block for block in shape.blocks if block.sees_text)
    return _layer(block, shape, job, job.batch_size)[0]


def _generic_layer(block: Block, shape: ModelShape, job: TrainingJob, sequences: int) -> tuple[float, float]:
    """Encoders and encoder-decoders: residual-stream and inner tensors per token, eager attention."""
    c = job.compute_bytes
    res = _residual_bytes(shape, job)
    kept: float = res * block.residual_elems + c * block.inner_elems
    if not job.full_fine_tuning and job.lora_dropout > 0:
        kept += (c + LORA_DROPOUT_MASK_BYTES) * block.lora_input_elems
    tokens = sequences * job.seq_len
    kept += sequences * block.eager_attention_heads * job.seq_len * job.seq_len * (2 * c + 1) / tokens
    return kept, 0.5 * kept


def _layer(block: Block, shape: ModelShape, job: TrainingJob, sequences: int) -> tuple[float, float]:
    if block.mlp_width:
        return _decoder_layer(block, shape, job)
    return _generic_layer(block, shape, job, sequences)


@dataclass(frozen=True)
class _Pass:
    """What one training pass holds beyond the weights and training state."""

    activations: float
    logits: float
    activations_detail: str
    logits_detail: str


def _logits_working_set(shape: ModelShape, job: TrainingJob, tokens: int, strategy: str) -> tuple[float, str]:
    c = job.compute_bytes
    res = _residual_bytes(shape, job)
    hidden, vocab = shape.hidden_size, shape.logits_width
    if vocab <= 64:  # span or score heads: a few numbers per token
        return tokens * vocab * (c + 8), "a small head's logits"
    if job.unsloth:
        held = tokens * vocab * c * UNSLOTH_LOGITS_SHARE
        return held, f"unsloth's fused cross-entropy over {tokens} tokens x {vocab} (chunked)"
    if strategy in TRL_STRATEGIES and shape.family == "decoder":
        vocab_chunk = min(vocab, LOGPROB_VOCAB_CHUNK)
        tile = min(tokens, LOGPROB_TOKEN_CHUNK) * vocab_chunk * c
        # The head's weight cast chunk by chunk when it is not in the compute dtype (fp32 after the upcast).
        head_copies = 2 * vocab_chunk * hidden * c if res != c else 0
        accumulators = tokens * hidden * (4 + res + c)
        return tile + head_copies + accumulators, (
            f"trl's chunked log-probabilities: {min(tokens, LOGPROB_TOKEN_CHUNK)} x {vocab_chunk} tiles, no full logits"
        )
    # Full logits in the compute dtype, the loss's fp32 copy and its fp32 gradient.
    return tokens * vocab * (c + 8), f"full logits of {tokens} tokens x {vocab} and the fp32 loss"


def _training_pass(shape: ModelShape, job: TrainingJob, sequences: int, strategy: str) -> _Pass:
    seq = job.seq_len
    tokens = sequences * seq
    res = _residual_bytes(shape, job)
    text_blocks = [block for block in shape.blocks if block.sees_text]
    layers = sum(block.count for block in text_blocks)
    per_block = [(block, *_layer(block, shape, job, sequences)) for block in text_blocks]
    edges = 2 * tokens * res * shape.hidden_size  # embedding output, final norm output
    if job.four_bit or shape.prequantized_4bit:
        # 4-bit matmuls dequantise a layer's weight to the compute dtype for the batch (bitsandbytes, and
        # unsloth's kernels alike), one at a time: the largest one.
        largest = max(
            (linear.in_features * linear.out_features for block in text_blocks for linear in block.linears), default=0
        )
        edges += largest * job.compute_bytes
    logits, logits_detail = _logits_working_set(shape, job, tokens, strategy)
    if job.gradient_checkpointing:
        if job.unsloth:
            kept_inputs = UNSLOTH_OFFLOAD_BUFFERS * tokens * job.compute_bytes * shape.hidden_size
            where = "layer inputs offloaded to CPU memory"
        else:
            kept_inputs = layers * tokens * res * shape.hidden_size
            where = f"{layers} layer inputs kept"
        one_layer = max((tokens * (kept + crossing) for _, kept, crossing in per_block), default=0)
        # The loss runs before the backward recomputes a layer: the larger of the two is the peak.
        if one_layer >= logits:
            activations = kept_inputs + edges + one_layer
            return _Pass(
                activations,
                0,
                f"gradient checkpointing: {where} + one layer recomputed ({_gib(one_layer)}) for {tokens} tokens",
                "freed before the layers' backward, the peak",
            )
        return _Pass(kept_inputs + edges, logits, f"gradient checkpointing: {where} for {tokens} tokens", logits_detail)
    kept_all = sum(block.count * tokens * kept for block, kept, _ in per_block)
    return _Pass(
        kept_all + edges,
        logits,
        f"no gradient checkpointing: every layer's tensors for {tokens} tokens "
        f"({_gib(kept_all / max(layers, 1))} a layer)",
        logits_detail,
    )


def _kv_cache_bytes(shape: ModelShape, job: TrainingJob, sequences: int) -> float:
    per_token = sum(
        block.count * 2 * (block.kv_width or shape.hidden_size) for block in shape.blocks if block.sees_text
    )
    return sequences * job.seq_len * per_token * job.compute_bytes


def _trainable(shape: ModelShape, job: TrainingJob) -> tuple[int, int, int, int, str]:
    """(trainable params, adapters, gradients, optimizer bytes, detail)."""
    if job.full_fine_tuning:
        trainable = shape.total_params
        gradients = trainable * job.compute_bytes
        master = 4 * trainable if job.compute_bytes < 4 else 0
        return trainable, 0, gradients, 8 * trainable + master, "full fine-tuning: every weight trains"
    trainable = shape.lora_params(job.lora_r)
    size = adapter_dtype_bytes(shape, job)
    dtype = "fp32" if size == 4 else "bf16"
    detail = f"{trainable / 1e6:.1f}M LoRA params in {dtype}"
    return trainable, size * trainable, size * trainable, 2 * size * trainable, detail


def _overhead(job: TrainingJob, tensors: int, weights: int) -> tuple[list[MemoryPart], int]:
    if not job.on_gpu:
        allocator = round(CPU_ALLOCATOR_FRACTION * tensors)
        return [
            MemoryPart("allocator slack", allocator, "10% of the tensors for the CPU allocator"),
            MemoryPart("runtime", CPU_RUNTIME_BYTES, "the Python and torch runtime on the CPU"),
        ], 0
    slack = ALLOCATOR_SLACK_BASE_BYTES + round(ALLOCATOR_SLACK_FRACTION * max(tensors - weights, 0))
    context = CUDA_CONTEXT_BYTES + (UNSLOTH_RUNTIME_BYTES if job.unsloth else 0)
    return [
        MemoryPart("allocator slack", slack, "what the caching allocator reserves beyond the peak allocated"),
        MemoryPart(
            "CUDA context",
            context,
            "torch, cuBLAS and kernels" + (" + unsloth's kernels and buffers" if job.unsloth else ""),
        ),
        MemoryPart(
            "driver reserve", GPU_DRIVER_RESERVE_BYTES, "used on the idle card before the job (not in its free memory)"
        ),
    ], GPU_DRIVER_RESERVE_BYTES


def _assemble(
    shape: ModelShape, job: TrainingJob, training: _Pass, extra_weights: int = 0, extra_detail: str = "",
    kv_cache: float = 0,
) -> MemoryEstimate:
    weights, weights_detail = _weights(shape, job)
    weights += extra_weights
    weights_detail += extra_detail
    trainable, adapters, gradients, optimizer, trainable_detail = _trainable(shape, job)
    activations = round(training.activations)
    logits = round(training.logits + kv_cache)
    tensors = weights + adapters + gradients + optimizer + activations + logits
    overhead_parts, preexisting = _overhead(job, tensors, weights)
    logits_detail = training.logits_detail + (f" + generation cache {_gib(kv_cache)}" if kv_cache else "")
    parts = [
        MemoryPart("weights", weights, weights_detail),
        MemoryPart("adapters", adapters, trainable_detail),
        MemoryPart("gradients", gradients, "one per trainable parameter"),
        MemoryPart("optimizer", optimizer, "AdamW: two moments per trainable parameter"),
        MemoryPart("activations", activations, training.activations_detail),
        MemoryPart("logits", logits, logits_detail),
        *overhead_parts,
    ]
    parts = [part for part in parts if part.bytes > 0]
    parts.sort(key=lambda part: -part.bytes)
    return MemoryEstimate(
        breakdown=MemoryBreakdown(
            weights_bytes=weights,
            adapters_bytes=adapters,
            optimizer_bytes=optimizer,
            gradients_bytes=gradients,
            activations_bytes=activations,
            overhead_bytes=sum(part.bytes for part in overhead_parts),
            logits_bytes=logits,
            parts=tuple(parts),
            preexisting_bytes=preexisting,
        ),
        parameters=shape.total_params,
        trainable_parameters=trainable,
    )


def _rlhf(shape: ModelShape, job: TrainingJob) -> MemoryEstimate:
    """GRPO after a reward model: the larger of the two phases."""
    reward_weights, _ = _weights(shape, replace(job, strategy="sft"))
    # Phase 1: the reward model (the same base with a score head) trains on chosen/rejected pairs while
    # the policy is already loaded.
    reward_head = replace(shape, logits_width=1, head_params=shape.hidden_size)
    pairs = _training_pass(reward_head, replace(job, strategy="reward"), 2 * job.batch_size, "reward")
    phase1 = _assemble(
        shape, job, replace(pairs, activations_detail="RLHF phase 1 (reward model): " + pairs.activations_detail),
        extra_weights=reward_weights, extra_detail=" + the loaded policy while the reward model trains",
    )
    # Phase 2: GRPO trains the policy on its sampled answers, scored by the frozen reward model.
    answers = _training_pass(shape, replace(job, strategy="sft"), job.batch_size, "rlhf")
    cache = _kv_cache_bytes(shape, job, job.batch_size)
    phase2 = _assemble(
        shape, job, replace(answers, activations_detail="RLHF phase 2 (GRPO): " + answers.activations_detail),
        extra_weights=reward_weights, extra_detail=" + the frozen reward model", kv_cache=cache,
    )
    return max(phase1, phase2, key=lambda e: e.breakdown.total_bytes)


def activations_bytes(shape: ModelShape, job: TrainingJob) -> int:
    """Activations and logits held at the peak of a training pass."""
    sequences = job.batch_size * (2 if job.strategy in PAIRED_STRATEGIES else 1)
    training = _training_pass(shape, job, sequences, job.strategy)
    return round(training.activations) + round(training.logits)


def estimate(shape: ModelShape, job: TrainingJob) -> MemoryEstimate:
    if job.strategy == "rlhf":
        return _rlhf(shape, job)
    sequences = job.batch_size * (2 if job.strategy == "dpo" else 1)
    return _assemble(shape, job, _training_pass(shape, job, sequences, job.strategy))
