"""Peak memory of a fine-tuning job, from the model's shape (model_shape.py) and the job's settings.

"Peak" means what nvidia-smi shows for the training process: the allocator's peak reserved memory
plus the CUDA context (DESIGN.md section 6). Pure arithmetic; the formulas, per part:

weights
    16-bit (bf16/fp16): 2 bytes/param; fp32: 4.
    4-bit (qlora or use_4bit): linear weights inside the blocks as NF4, 0.5 byte/param plus the
    quantisation constants (one absmax per 64 weights; with double quantisation that absmax is 8-bit
    plus one fp32 per 256 blocks: 1/64 + 4/16384 byte/param). Everything else (embeddings, lm_head,
    norms, biases) stays unquantised, and peft's prepare_model_for_kbit_training upcasts it to
    fp32 (4 bytes/param): with a 128k vocabulary that is 4.2 GB on an 8B model.
    DPO/RLHF with full fine-tuning adds a frozen 16-bit reference copy; with LoRA the reference
    is the model with its adapter switched off (no extra weights).
adapters
    LoRA "all-linear": r * (in + out) params per wrapped linear layer, kept in fp32 (peft upcasts
    adapters of 16-bit models): 4 bytes/param.
optimizer
    AdamW: 8 bytes per trainable param (two fp32 moments); full fine-tuning in mixed precision
    adds a 4-byte fp32 master copy (16 bytes/param in all with weights and gradients).
gradients
    one per trainable param, in its dtype (fp32 adapters: 4 bytes; 16-bit full fine-tuning: 2).
activations
    tokens = batch * seq (doubled for DPO/RLHF: chosen and rejected run together).
    Per block and token, what backward needs: residual-stream tensors (norm inputs/outputs; fp32
    after the k-bit upcast, else the compute dtype), projections, attention output and MLP
    intermediates (compute dtype), and for LoRA a dropped-out copy of every wrapped layer's input
    plus its 1-byte mask. Eager-attention models (T5, DeBERTa) add heads * seq^2 * (2 * compute + 1)
    bytes per sequence and attention module (2 compute-dtype copies: scores, probabilities; 1-byte
    dropout mask).
    With gradient checkpointing only each block's input is kept (residual dtype), plus one block
    recomputed at a time. Always: the embedding output, the final norm output and the logits,
    tokens * logits_width * (compute bytes + 8): the model's logits, and the loss's fp32
    log-softmax and its fp32 gradient (4.9 GiB in bf16 at batch 2 x 2048 with Llama-3's 128k vocabulary).
overhead
    CUDA context (1 GiB; 0.5-1.2 GiB measured) on a GPU, or the Python/torch runtime (1 GiB) on
    the CPU, plus 10% of everything else for allocator fragmentation.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelforge_hardware.model_shape import ModelShape

GIB = 1 << 30
NF4_BYTES = 0.5
ABSMAX_BLOCK = 64
DOUBLE_QUANT_BLOCK = 256
CUDA_CONTEXT_BYTES = GIB
CPU_RUNTIME_BYTES = GIB
FRAGMENTATION = 0.10
LORA_DROPOUT_MASK_BYTES = 1
PAIRED_STRATEGIES = frozenset({"dpo", "rlhf"})
PRECISION_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}


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
    # peft's prepare_model_for_kbit_training upcasts unquantised weights to fp32 (the huggingface
    # provider); unsloth avoids it.
    upcast_non_quantized: bool = True
    double_quant: bool = True
    on_gpu: bool = True

    @property
    def full_fine_tuning(self) -> bool:
        return self.lora_r < 0

    @property
    def four_bit(self) -> bool:
        return self.use_4bit or self.strategy == "qlora"


@dataclass(frozen=True)
class MemoryBreakdown:
    weights_bytes: int
    adapters_bytes: int
    optimizer_bytes: int
    gradients_bytes: int
    activations_bytes: int
    overhead_bytes: int

    @property
    def total_bytes(self) -> int:
        return (
            self.weights_bytes
            + self.adapters_bytes
            + self.optimizer_bytes
            + self.gradients_bytes
            + self.activations_bytes
            + self.overhead_bytes
        )


@dataclass(frozen=True)
class MemoryEstimate:
    breakdown: MemoryBreakdown
    parameters: int
    trainable_parameters: int


def nf4_bytes_per_param(double_quant: bool) -> float:
    if double_quant:
        return NF4_BYTES + 1 / ABSMAX_BLOCK + 4 / (ABSMAX_BLOCK * DOUBLE_QUANT_BLOCK)
    return NF4_BYTES + 4 / ABSMAX_BLOCK


def weights_bytes(shape: ModelShape, job: TrainingJob) -> int:
    dtype_bytes = PRECISION_BYTES[job.precision]
    total = shape.total_params
    if job.four_bit or shape.prequantized_4bit:
        quantized = shape.quantizable_params
        kept_bytes = 4 if job.upcast_non_quantized else dtype_bytes
        weights = quantized * nf4_bytes_per_param(job.double_quant) + (total - quantized) * kept_bytes
    else:
        weights = total * dtype_bytes
    if job.full_fine_tuning and job.strategy in PAIRED_STRATEGIES:
        weights += total * dtype_bytes  # frozen reference model
    return round(weights)


def activations_bytes(shape: ModelShape, job: TrainingJob) -> int:
    compute = PRECISION_BYTES[job.precision]
    upcast = (job.four_bit or shape.prequantized_4bit) and job.upcast_non_quantized
    residual = 4 if upcast else compute
    sequences = job.batch_size * (2 if job.strategy in PAIRED_STRATEGIES else 1)
    tokens = sequences * job.seq_len

    def one_block(block_index: int) -> int:
        block = shape.blocks[block_index]
        per_token = residual * block.residual_elems + compute * block.inner_elems
        if not job.full_fine_tuning:
            per_token += (compute + LORA_DROPOUT_MASK_BYTES) * block.lora_input_elems
        attention = block.eager_attention_heads * job.seq_len * job.seq_len * (2 * compute + 1)
        return tokens * per_token + sequences * attention

    text_blocks = [i for i, block in enumerate(shape.blocks) if block.sees_text]
    if job.gradient_checkpointing:
        kept = sum(shape.blocks[i].count for i in text_blocks) * tokens * residual * shape.hidden_size
        layers = kept + max((one_block(i) for i in text_blocks), default=0)
    else:
        layers = sum(shape.blocks[i].count * one_block(i) for i in text_blocks)
    edges = 2 * tokens * residual * shape.hidden_size  # embedding output, final norm output
    logits = tokens * shape.logits_width * (compute + 8)
    return layers + edges + logits


def estimate(shape: ModelShape, job: TrainingJob) -> MemoryEstimate:
    dtype_bytes = PRECISION_BYTES[job.precision]
    if job.full_fine_tuning:
        trainable = shape.total_params
        adapters = 0
        gradients = trainable * dtype_bytes
        master = 4 * trainable if dtype_bytes < 4 else 0
        optimizer = 8 * trainable + master
    else:
        trainable = shape.lora_params(job.lora_r)
        adapters = 4 * trainable
        gradients = 4 * trainable
        optimizer = 8 * trainable
    weights = weights_bytes(shape, job)
    activations = activations_bytes(shape, job)
    tensors = weights + adapters + optimizer + gradients + activations
    base = CUDA_CONTEXT_BYTES if job.on_gpu else CPU_RUNTIME_BYTES
    overhead = base + round(FRAGMENTATION * tensors)
    return MemoryEstimate(
        breakdown=MemoryBreakdown(
            weights_bytes=weights,
            adapters_bytes=adapters,
            optimizer_bytes=optimizer,
            gradients_bytes=gradients,
            activations_bytes=activations,
            overhead_bytes=overhead,
        ),
        parameters=shape.total_params,
        trainable_parameters=trainable,
    )
