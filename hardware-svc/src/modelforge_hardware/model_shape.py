"""A model's shape from its config.json: parameter groups and per-token activation sizes.

Pure arithmetic on the config (no transformers, no weights). Decoders in the Llama/Mistral/Qwen
mould are counted exactly (embeddings, q/k/v/o with grouped-query attention, gated or plain MLP,
norms, lm_head unless tied); T5, BART and BERT-like encoders via their own fields; anything else
with hidden size, layer count and vocabulary through the generic decoder formula

    params = V*H (embeddings) + V*H (lm_head, unless tied) + L * (4*H*H + 2*H*I + 2*H)

with I = intermediate size (4*H when the config has none).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

QA_TASK = "extractive-question-answering"

# Decoders whose MLP is gate/up/down (SwiGLU, GeGLU); others with silu/swish are taken as gated too.
GATED_MLP_TYPES = frozenset(
    {
        "llama", "mistral", "mixtral", "ministral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2",
        "gemma3", "gemma3_text", "phi3", "olmo", "olmo2", "granite", "cohere", "cohere2", "internlm2", "exaone",
        "smollm3", "deepseek_v2", "deepseek_v3", "glm", "glm4", "helium", "arcee",
    }
)
# Decoders with norms after attention and MLP too, and decoders that normalise q and k per head.
POST_NORM_TYPES = frozenset({"gemma2", "gemma3", "gemma3_text", "olmo2"})
QK_NORM_TYPES = frozenset({"qwen3", "qwen3_moe", "gemma3", "gemma3_text", "olmo2"})
# Model types whose q/k/v projections carry biases even without an attention_bias key.
QKV_BIAS_TYPES = frozenset({"qwen2", "qwen2_moe"})
# Decoders whose class default is an untied lm_head (used when config.json does not say).
UNTIED_BY_DEFAULT = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "gpt_neox", "olmo", "olmo2"}
)
T5_TYPES = frozenset({"t5", "mt5", "umt5", "longt5"})
BART_TYPES = frozenset({"bart", "mbart", "pegasus", "marian", "m2m_100", "nllb_moe", "plbart", "blenderbot"})
ENCODER_TYPES = frozenset(
    {
        "bert", "roberta", "xlm-roberta", "camembert", "distilbert", "deberta", "deberta-v2", "electra", "albert",
        "mpnet", "modernbert", "xlm-roberta-xl", "megatron-bert", "ernie",
    }
)
# Encoders whose attention is computed eagerly (relative-position terms): the seq x seq probabilities
# are kept for backward.
EAGER_ATTENTION_TYPES = T5_TYPES | frozenset({"deberta", "deberta-v2"})


class ConfigError(ValueError):
    """config.json does not describe a model we can size."""


@dataclass(frozen=True)
class Linear:
    """A linear layer of a block. `copies` > 1 for mixture-of-experts experts."""

    name: str
    in_features: int
    out_features: int
    bias: bool = False
    copies: int = 1
    # Whether a LoRA "all-linear" adapter wraps it (experts are fused parameters in transformers 5).
    lora_target: bool = True

    @property
    def params(self) -> int:
        return self.copies * (self.in_features * self.out_features + (self.out_features if self.bias else 0))


@dataclass(frozen=True)
class Block:
    """`count` identical transformer blocks and what one of them keeps for backward, per token."""

    name: str
    count: int
    linears: tuple[Linear, ...]
    # Norm weights and biases (kept in 16-bit, or fp32 after the k-bit upcast), per block.
    norm_params: int
    # Saved activation elements per token in the residual-stream dtype (norm inputs and outputs).
    residual_elems: int
    # Saved activation elements per token in the compute dtype (projections, attention output, MLP).
    inner_elems: int
    # Elements per token entering LoRA-wrapped layers (peft keeps a dropped-out copy of each).
    lora_input_elems: int
    # Attention heads whose seq x seq probabilities are materialised (eager attention), summed over
    # the block's attention modules; 0 with fused (SDPA/flash) attention.
    eager_attention_heads: int = 0
    # False for a vision tower: weights only, no activations in text fine-tuning.
    sees_text: bool = True
    # Llama-style decoder layers only (0 elsewhere): the widths the per-tensor activation model of
    # estimator.py reads. mlp_width is the active intermediate width (experts a token visits).
    attention_width: int = 0
    kv_width: int = 0
    mlp_width: int = 0
    heads: int = 0
    gated_mlp: bool = False
    # RMSNorms a layer runs on its hidden states (Gemma 2/3 add post-norms: 4), and whether q and k
    # are normalised per head (Qwen3, Gemma 3, OLMo 2): each keeps an fp32 copy of its input.
    norms: int = 2
    qk_norm: bool = False

    @property
    def params_per_block(self) -> int:
        return sum(linear.params for linear in self.linears) + self.norm_params

    @property
    def linear_weight_params(self) -> int:
        """Weights a 4-bit load quantises (biases stay in 16-bit)."""
        return sum(linear.copies * linear.in_features * linear.out_features for linear in self.linears)

    def lora_params(self, rank: int) -> int:
        return sum(
            linear.copies * rank * (linear.in_features + linear.out_features)
            for linear in self.linears
            if linear.lora_target
        )

    @property
    def lora_modules(self) -> int:
        """Linear layers a LoRA adapter wraps (each keeps its rank-r intermediate for backward)."""
        return sum(linear.copies for linear in self.linears if linear.lora_target)


@dataclass(frozen=True)
class ModelShape:
    architecture: str
    model_type: str
    # "decoder" | "encoder" | "encoder-decoder".
    family: str
    hidden_size: int
    vocab_size: int
    blocks: tuple[Block, ...]
    # Token (+ position, token-type) embeddings.
    embedding_params: int
    # lm_head (0 when tied to the embeddings) or the task head (QA span head: 2*H + 2).
    head_params: int
    # Final norms, relative position biases and the like.
    other_params: int
    # Width of the logits the loss sees: the vocabulary for LM heads, 2 for a span head.
    logits_width: int
    tied_embeddings: bool
    # The repo ships bitsandbytes 4-bit weights (quantization_config.load_in_4bit).
    prequantized_4bit: bool = False
    # Counted by the generic formula (config fields we do not know).
    generic: bool = False

    @property
    def num_layers(self) -> int:
        return sum(block.count for block in self.blocks if block.sees_text)

    @property
    def total_params(self) -> int:
        return (
            sum(block.count * block.params_per_block for block in self.blocks)
            + self.embedding_params
            + self.head_params
            + self.other_params
        )

    @property
    def quantizable_params(self) -> int:
        """Linear weights inside the blocks; embeddings, lm_head, norms and biases stay unquantised."""
        return sum(block.count * block.linear_weight_params for block in self.blocks)

    def lora_params(self, rank: int) -> int:
        return sum(block.count * block.lora_params(rank) for block in self.blocks)


def _int(config: dict[str, Any], *keys: str, default: int | None = None) -> int:
    for key in keys:
        value = config.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > 10_000_000:
            raise ConfigError(f"config.json field {key!r} must be a positive integer, not {value!r}")
        return value
    if default is None:
        raise ConfigError(f"config.json has none of {', '.join(keys)}")
    return default


def _architecture(config: dict[str, Any]) -> str:
    architectures = config.get("architectures") or []
    return str(architectures[0]) if isinstance(architectures, list) and architectures else ""


def _head(config: dict[str, Any], task: str, hidden: int, vocab: int, default_tied: bool) -> tuple[int, int, bool]:
    """(head params, logits width, tied) for the task's head."""
    if task == QA_TASK:
        return 2 * hidden + 2, 2, False
    tied = bool(config.get("tie_word_embeddings", default_tied))
    return (0 if tied else vocab * hidden), vocab, tied


def _decoder_block(config: dict[str, Any], model_type: str, hidden: int, layers: int) -> tuple[Block, bool]:
    """A Llama-style decoder layer; returns (block, whether generic defaults filled gaps)."""
    generic = "num_attention_heads" not in config and "n_head" not in config and "num_heads" not in config
    heads = _int(config, "num_attention_heads", "n_head", "num_heads", "n_heads", default=max(1, hidden // 64))
    kv_default = 1 if config.get("multi_query") else heads
    kv_heads = _int(config, "num_key_value_heads", "num_kv_heads", "n_head_kv", "num_query_groups", default=kv_default)
    head_dim = _int(config, "head_dim", "kv_channels", default=max(1, hidden // heads))
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    intermediate = _int(config, "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", default=4 * hidden)
    generic = generic or not any(k in config for k in ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"))
    gated = model_type in GATED_MLP_TYPES or str(config.get("hidden_act", "")).lower() in {"silu", "swish", "swiglu"}
    qkv_bias = bool(config.get("attention_bias", False)) or model_type in QKV_BIAS_TYPES
    mlp_bias = bool(config.get("mlp_bias", False))

    attention = (
        Linear("q_proj", hidden, q_dim, bias=qkv_bias),
        Linear("k_proj", hidden, kv_dim, bias=qkv_bias),
        Linear("v_proj", hidden, kv_dim, bias=qkv_bias),
        Linear("o_proj", q_dim, hidden, bias=bool(config.get("attention_bias", False))),
    )
    experts = _int(config, "num_local_experts", "num_experts", "n_routed_experts", default=1)
    active = _int(config, "num_experts_per_tok", "moe_topk", default=1) if experts > 1 else 1
    expert_intermediate = _int(config, "moe_intermediate_size", default=intermediate) if experts > 1 else intermediate
    in_experts = experts > 1

    def mlp(width: int, copies: int, prefix: str = "") -> tuple[Linear, ...]:
        target = not in_experts or not copies > 1
        if gated:
            return (
                Linear(f"{prefix}gate_proj", hidden, width, mlp_bias, copies, target),
                Linear(f"{prefix}up_proj", hidden, width, mlp_bias, copies, target),
                Linear(f"{prefix}down_proj", width, hidden, mlp_bias, copies, target),
            )
        return (
            Linear(f"{prefix}fc_in", hidden, width, mlp_bias, copies, target),
            Linear(f"{prefix}fc_out", width, hidden, mlp_bias, copies, target),
        )

    linears: tuple[Linear, ...] = attention + mlp(expert_intermediate, experts)
    active_width = active * expert_intermediate
    if in_experts:
        linears += (Linear("router", hidden, experts, lora_target=False),)
        shared = config.get("shared_expert_intermediate_size")
        if isinstance(shared, int) and shared > 0:
            linears += mlp(shared, 1, "shared_expert.")
            active_width += shared
    mlp_elems = (4 if gated else 2) * active_width
    # q, k, v outputs; rotary copies of q and k; attention output.
    attention_elems = 3 * q_dim + 3 * kv_dim
    lora_inputs = 3 * hidden + q_dim + ((2 * hidden + active_width) if gated else (hidden + active_width))
    if in_experts:  # adapters only on attention (and a shared expert)
        lora_inputs = 3 * hidden + q_dim
    block = Block(
        name="decoder layer",
        count=layers,
        linears=linears,
        norm_params=2 * hidden,
        residual_elems=4 * hidden,
        inner_elems=attention_elems + mlp_elems,
        lora_input_elems=lora_inputs,
        attention_width=q_dim,
        kv_width=kv_dim,
        mlp_width=active_width,
        heads=heads,
        gated_mlp=gated,
        norms=4 if model_type in POST_NORM_TYPES else 2,
        qk_norm=model_type in QK_NORM_TYPES,
    )
    return block, generic


def _decoder(config: dict[str, Any], model_type: str, architecture: str, task: str) -> ModelShape:
    hidden = _int(config, "hidden_size", "n_embd", "d_model", "dim", "model_dim")
    layers = _int(config, "num_hidden_layers", "n_layer", "num_layers", "n_layers")
    vocab = _int(config, "vocab_size", "padded_vocab_size")
    block, generic = _decoder_block(config, model_type, hidden, layers)
    head, width, tied = _head(config, task, hidden, vocab, default_tied=model_type not in UNTIED_BY_DEFAULT)
    positions = 0
    if model_type in {"gpt2", "opt", "gpt_bigcode", "codegen"}:  # learned absolute positions
        positions = _int(config, "n_positions", "max_position_embeddings", default=0) * hidden
    return ModelShape(
        architecture=architecture,
        model_type=model_type,
        family="decoder",
        hidden_size=hidden,
        vocab_size=vocab,
        blocks=(block,),
        embedding_params=vocab * hidden + positions,
        head_params=head,
        other_params=hidden,  # final norm
        logits_width=width,
        tied_embeddings=tied,
        generic=generic or model_type not in GATED_MLP_TYPES | {"gpt2", "gpt_neox", "opt", "phi", "falcon"},
    )


def _t5(config: dict[str, Any], model_type: str, architecture: str, task: str) -> ModelShape:
    hidden = _int(config, "d_model")
    inner = _int(config, "num_heads") * _int(config, "d_kv")
    heads = _int(config, "num_heads")
    d_ff = _int(config, "d_ff")
    vocab = _int(config, "vocab_size")
    encoder_layers = _int(config, "num_layers")
    decoder_layers = _int(config, "num_decoder_layers", default=encoder_layers)
    gated = bool(config.get("is_gated_act")) or str(config.get("feed_forward_proj", "")).startswith("gated")
    feed_forward = (
        (Linear("wi_0", hidden, d_ff), Linear("wi_1", hidden, d_ff), Linear("wo", d_ff, hidden))
        if gated
        else (Linear("wi", hidden, d_ff), Linear("wo", d_ff, hidden))
    )
    attention = (*(Linear(n, hidden, inner) for n in ("q", "k", "v")), Linear("o", inner, hidden))
    ff_elems = (4 if gated else 2) * d_ff
    ff_inputs = (2 if gated else 1) * hidden + d_ff
    encoder = Block(
        name="encoder layer",
        count=encoder_layers,
        linears=attention + feed_forward,
        norm_params=2 * hidden,
        residual_elems=4 * hidden,
        inner_elems=4 * inner + ff_elems,
        lora_input_elems=3 * hidden + inner + ff_inputs,
        eager_attention_heads=heads,
    )
    decoder = Block(
        name="decoder layer",
        count=decoder_layers,
        linears=attention + attention + feed_forward,  # self- and cross-attention
        norm_params=3 * hidden,
        residual_elems=6 * hidden,
        inner_elems=8 * inner + ff_elems,
        lora_input_elems=2 * (3 * hidden + inner) + ff_inputs,
        eager_attention_heads=2 * heads,
    )
    head, width, tied = _head(config, task, hidden, vocab, default_tied=True)
    buckets = _int(config, "relative_attention_num_buckets", default=32)
    return ModelShape(
        architecture=architecture,
        model_type=model_type,
        family="encoder-decoder",
        hidden_size=hidden,
        vocab_size=vocab,
        blocks=(encoder, decoder),
        embedding_params=vocab * hidden,
        head_params=head,
        other_params=2 * hidden + 2 * buckets * heads,  # final norms, relative position biases
        logits_width=width,
        tied_embeddings=tied,
    )


def _bart(config: dict[str, Any], model_type: str, architecture: str, task: str) -> ModelShape:
    hidden = _int(config, "d_model")
    vocab = _int(config, "vocab_size")
    positions = _int(config, "max_position_embeddings", default=1024) + 2
    enc_ffn = _int(config, "encoder_ffn_dim", default=4 * hidden)
    dec_ffn = _int(config, "decoder_ffn_dim", default=enc_ffn)

    def attention() -> tuple[Linear, ...]:
        return tuple(Linear(n, hidden, hidden, bias=True) for n in ("q_proj", "k_proj", "v_proj", "out_proj"))

    def feed_forward(width: int) -> tuple[Linear, ...]:
        return Linear("fc1", hidden, width, bias=True), Linear("fc2", width, hidden, bias=True)

    encoder = Block(
        name="encoder layer",
        count=_int(config, "encoder_layers", "num_hidden_layers"),
        linears=attention() + feed_forward(enc_ffn),
        norm_params=4 * hidden,
        residual_elems=4 * hidden,
        inner_elems=4 * hidden + 2 * enc_ffn,
        lora_input_elems=5 * hidden + enc_ffn,
    )
    decoder = Block(
        name="decoder layer",
        count=_int(config, "decoder_layers", "num_hidden_layers"),
        linears=attention() + attention() + feed_forward(dec_ffn),
        norm_params=6 * hidden,
        residual_elems=6 * hidden,
        inner_elems=8 * hidden + 2 * dec_ffn,
        lora_input_elems=9 * hidden + dec_ffn,
    )
    head, width, tied = _head(config, task, hidden, vocab, default_tied=True)
    return ModelShape(
        architecture=architecture,
        model_type=model_type,
        family="encoder-decoder",
        hidden_size=hidden,
        vocab_size=vocab,
        blocks=(encoder, decoder),
        embedding_params=vocab * hidden + 2 * positions * hidden,
        head_params=head,
        other_params=4 * hidden,  # embedding layer norms of both stacks
        logits_width=width,
        tied_embeddings=tied,
    )


def _encoder(config: dict[str, Any], model_type: str, architecture: str, task: str) -> ModelShape:
    hidden = _int(config, "hidden_size", "dim")
    layers = _int(config, "num_hidden_layers", "n_layers")
    heads = _int(config, "num_attention_heads", "n_heads")
    intermediate = _int(config, "intermediate_size", "hidden_dim", default=4 * hidden)
    vocab = _int(config, "vocab_size")
    embedding = _int(config, "embedding_size", default=hidden)  # ALBERT factorises its embeddings
    positions = _int(config, "max_position_embeddings", default=512)
    token_types = config.get("type_vocab_size", 0 if model_type == "distilbert" else 2)
    token_types = token_types if isinstance(token_types, int) and token_types > 0 else 0
    block = Block(
        name="encoder layer",
        count=layers,
        linears=(
            *(Linear(n, hidden, hidden, bias=True) for n in ("query", "key", "value", "attention.output")),
            Linear("intermediate", hidden, intermediate, bias=True),
            Linear("output", intermediate, hidden, bias=True),
        ),
        norm_params=4 * hidden,
        residual_elems=4 * hidden,
        inner_elems=4 * hidden + 2 * intermediate,
        lora_input_elems=5 * hidden + intermediate,
        eager_attention_heads=heads if model_type in EAGER_ATTENTION_TYPES else 0,
    )
    embeddings = (vocab + positions + token_types) * embedding + 2 * embedding
    if embedding != hidden:
        embeddings += embedding * hidden + hidden
    if task == QA_TASK or architecture.endswith("ForQuestionAnswering"):
        head, width, tied = 2 * hidden + 2, 2, False
    else:  # masked-LM head: transform + (tied) decoder
        head, width, tied = hidden * hidden + 3 * hidden + vocab, vocab, True
    return ModelShape(
        architecture=architecture,
        model_type=model_type,
        family="encoder",
        hidden_size=hidden,
        vocab_size=vocab,
        blocks=(block,),
        embedding_params=embeddings,
        head_params=head,
        other_params=0,
        logits_width=width,
        tied_embeddings=tied,
    )


def _vision_tower(vision: dict[str, Any]) -> Block | None:
    """A multimodal model's image encoder: weights only (text fine-tuning feeds it no images)."""
    try:
        hidden = _int(vision, "hidden_size")
        layers = _int(vision, "num_hidden_layers", "depth")
        intermediate = _int(vision, "intermediate_size", default=4 * hidden)
    except ConfigError:
        return None
    gated = str(vision.get("hidden_act", "")).lower() in {"silu", "swish"}
    mlp = (
        (Linear("gate_proj", hidden, intermediate), Linear("up_proj", hidden, intermediate))
        if gated
        else (Linear("fc1", hidden, intermediate),)
    )
    return Block(
        name="vision layer",
        count=layers,
        linears=(
            *(Linear(n, hidden, hidden) for n in ("q", "k", "v", "o")),
            *mlp,
            Linear("down", intermediate, hidden),
        ),
        norm_params=2 * hidden,
        residual_elems=0,
        inner_elems=0,
        lora_input_elems=0,
        sees_text=False,
    )


def infer_task(shape: ModelShape) -> str:
    """The task a model's family usually trains for, when the request names none."""
    if shape.family == "encoder":
        return QA_TASK
    if shape.family == "encoder-decoder":
        return "summarization"
    return "text-generation"


def shape_from_config(config: dict[str, Any], task: str = "") -> ModelShape:
    """The shape of the model config.json describes, with the head `task` trains (a span head for
    extractive QA, the LM head otherwise)."""
    if not isinstance(config, dict):
        raise ConfigError("config.json is not a JSON object")
    architecture = _architecture(config)
    text = config
    vision: dict[str, Any] | None = None
    if isinstance(config.get("text_config"), dict):  # multimodal wrapper (Mistral3, Gemma3, Llava...)
        text = {**config["text_config"]}
        if "tie_word_embeddings" in config and "tie_word_embeddings" not in text:
            text["tie_word_embeddings"] = config["tie_word_embeddings"]
        vision = config.get("vision_config") if isinstance(config.get("vision_config"), dict) else None
    model_type = str(text.get("model_type", config.get("model_type", ""))).lower()

    if model_type in T5_TYPES:
        shape = _t5(text, model_type, architecture, task)
    elif model_type in BART_TYPES:
        shape = _bart(text, model_type, architecture, task)
    elif model_type in ENCODER_TYPES or (
        not text.get("is_decoder") and architecture.endswith(("ForQuestionAnswering", "ForMaskedLM"))
        and "intermediate_size" in text and "max_position_embeddings" in text and "type_vocab_size" in text
    ):
        shape = _encoder(text, model_type, architecture, task)
    else:
        shape = _decoder(text, model_type, architecture, task)

    tower = _vision_tower(vision) if vision else None
    if tower is not None:
        shape = replace(shape, blocks=(*shape.blocks, tower))
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict) and (
        quantization.get("load_in_4bit") or quantization.get("_load_in_4bit")
    ):
        shape = replace(shape, prequantized_4bit=True)
    return shape
