"""Parameter counts from config.json, against published sizes and against transformers itself."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelforge_hardware.model_shape import ConfigError, infer_task, shape_from_config

from .conftest import LLAMA_8B

QWEN2_7B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944,
    "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
    "hidden_act": "silu", "tie_word_embeddings": False,
}
FLAN_T5_BASE = {
    "architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "d_model": 768, "d_kv": 64, "d_ff": 2048,
    "num_layers": 12, "num_decoder_layers": 12, "num_heads": 12, "vocab_size": 32128,
    "feed_forward_proj": "gated-gelu", "is_gated_act": True, "tie_word_embeddings": False,
    "relative_attention_num_buckets": 32,
}
BART_LARGE = {
    "architectures": ["BartForConditionalGeneration"], "model_type": "bart", "d_model": 1024, "encoder_layers": 12,
    "decoder_layers": 12, "encoder_ffn_dim": 4096, "decoder_ffn_dim": 4096, "encoder_attention_heads": 16,
    "decoder_attention_heads": 16, "max_position_embeddings": 1024, "vocab_size": 50265,
}
BERT_BASE = {
    "architectures": ["BertForMaskedLM"], "model_type": "bert", "hidden_size": 768, "num_hidden_layers": 12,
    "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2,
    "vocab_size": 30522,
}
DISTILBERT = {
    "architectures": ["DistilBertForMaskedLM"], "model_type": "distilbert", "dim": 768, "n_layers": 6, "n_heads": 12,
    "hidden_dim": 3072, "max_position_embeddings": 512, "vocab_size": 30522,
}
# Mistral-Small-3.1-24B: a text decoder inside a multimodal wrapper.
MISTRAL_SMALL_3_1 = {
    "architectures": ["Mistral3ForConditionalGeneration"], "model_type": "mistral3",
    "text_config": {
        "model_type": "mistral", "hidden_size": 5120, "intermediate_size": 32768, "num_hidden_layers": 40,
        "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 131072,
        "hidden_act": "silu", "tie_word_embeddings": False,
    },
    "vision_config": {"model_type": "pixtral", "hidden_size": 1024, "num_hidden_layers": 24, "intermediate_size": 4096,
                      "hidden_act": "silu"},
}


def test_llama_8b_counts_exactly() -> None:
    shape = shape_from_config(LLAMA_8B)

    per_layer = 2 * 4096 * 4096 + 2 * 4096 * 1024 + 3 * 4096 * 14336 + 2 * 4096
    assert shape.total_params == 32 * per_layer + 2 * 128256 * 4096 + 4096 == 8_030_261_248
    assert shape.quantizable_params == 32 * (per_layer - 2 * 4096)
    assert shape.family == "decoder"
    assert shape.logits_width == 128256
    assert not shape.tied_embeddings
    # LoRA r=64 on q, k, v, o, gate, up, down of 32 layers.
    assert shape.lora_params(64) == 167_772_160


@pytest.mark.parametrize(
    ("config", "task", "published", "family"),
    [
        (QWEN2_7B, "", 7.62e9, "decoder"),
        (FLAN_T5_BASE, "", 248e6, "encoder-decoder"),
        (BART_LARGE, "", 406e6, "encoder-decoder"),
        (BERT_BASE, "extractive-question-answering", 108.9e6, "encoder"),
        (DISTILBERT, "extractive-question-answering", 66.4e6, "encoder"),
        (MISTRAL_SMALL_3_1, "", 24.0e9, "decoder"),
    ],
)
def test_published_sizes(config: dict[str, Any], task: str, published: float, family: str) -> None:
    shape = shape_from_config(config, task)
    assert shape.total_params == pytest.approx(published, rel=0.02)
    assert shape.family == family


def test_span_head_for_extractive_qa() -> None:
    shape = shape_from_config(BERT_BASE, "extractive-question-answering")
    assert shape.logits_width == 2
    assert shape.head_params == 2 * 768 + 2


def test_tied_embeddings_drop_the_lm_head() -> None:
    tied = shape_from_config({**LLAMA_8B, "tie_word_embeddings": True})
    assert shape_from_config(LLAMA_8B).total_params - tied.total_params == 128256 * 4096


def test_unknown_architecture_uses_the_generic_formula() -> None:
    config = {"model_type": "mystery", "hidden_size": 1024, "num_hidden_layers": 10, "vocab_size": 50000}
    shape = shape_from_config(config)

    hidden, layers, vocab, intermediate = 1024, 10, 50000, 4 * 1024
    assert shape.generic
    # tie_word_embeddings defaults to True in transformers' PretrainedConfig.
    per_layer = 4 * hidden * hidden + 2 * hidden * intermediate + 2 * hidden
    assert shape.total_params == vocab * hidden + layers * per_layer + hidden


def test_prequantized_repos_are_flagged() -> None:
    config = {**LLAMA_8B, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}
    assert shape_from_config(config).prequantized_4bit


@pytest.mark.parametrize(
    "config",
    [
        {"model_type": "llama", "num_hidden_layers": 2, "vocab_size": 10},
        {**LLAMA_8B, "hidden_size": "4096"},
        {**LLAMA_8B, "num_hidden_layers": -3},
        [],
    ],
)
def test_configs_that_cannot_be_sized(config: Any) -> None:
    with pytest.raises(ConfigError):
        shape_from_config(config)


@pytest.mark.parametrize(
    ("config", "task"),
    [(LLAMA_8B, "text-generation"), (FLAN_T5_BASE, "summarization"), (BERT_BASE, "extractive-question-answering")],
)
def test_task_inferred_from_family(config: dict[str, Any], task: str) -> None:
    assert infer_task(shape_from_config(config)) == task


def _transformers_count(config: Any, auto_class: str) -> int:
    import torch
    import transformers

    with torch.device("meta"):
        model = getattr(transformers, auto_class).from_config(config)
    return sum(parameter.numel() for parameter in model.parameters())


def _config(class_name: str, **fields: Any) -> Any:
    import transformers

    return getattr(transformers, class_name)(**fields)


@pytest.mark.parametrize(
    ("class_name", "fields", "auto_class", "task"),
    [
        ("LlamaConfig", {"vocab_size": 1000, "hidden_size": 256, "intermediate_size": 896, "num_hidden_layers": 3,
                         "num_attention_heads": 8, "num_key_value_heads": 2, "tie_word_embeddings": False},
         "AutoModelForCausalLM", ""),
        ("Qwen2Config", {"vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
                         "num_attention_heads": 14, "num_key_value_heads": 2, "tie_word_embeddings": True},
         "AutoModelForCausalLM", ""),
        ("MixtralConfig", {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 2,
                           "num_attention_heads": 8, "num_key_value_heads": 2, "num_local_experts": 4,
                           "vocab_size": 1000}, "AutoModelForCausalLM", ""),
        ("T5Config", {"d_model": 256, "d_kv": 32, "d_ff": 512, "num_layers": 3, "num_heads": 8, "vocab_size": 1000,
                      "feed_forward_proj": "gated-gelu"}, "AutoModelForSeq2SeqLM", ""),
        ("BartConfig", {"d_model": 256, "encoder_layers": 2, "decoder_layers": 2, "encoder_ffn_dim": 512,
                        "decoder_ffn_dim": 512, "vocab_size": 1000}, "AutoModelForSeq2SeqLM", ""),
        ("BertConfig", {}, "AutoModelForQuestionAnswering", "extractive-question-answering"),
        ("DistilBertConfig", {}, "AutoModelForQuestionAnswering", "extractive-question-answering"),
        ("RobertaConfig", {"vocab_size": 50265, "max_position_embeddings": 514, "type_vocab_size": 1},
         "AutoModelForQuestionAnswering", "extractive-question-answering"),
    ],
)
def test_counts_match_transformers(class_name: str, fields: dict[str, Any], auto_class: str, task: str) -> None:
    config = _config(class_name, **fields)
    shape = shape_from_config(json.loads(config.to_json_string()), task)
    assert shape.total_params == _transformers_count(config, auto_class)
