"""Tiny random-weight models with locally trained tokenizers, saved as ordinary model folders.

Tests and `make demo` use them instead of Hub models: nothing is downloaded.
Run: python -m modelforge_devkit.tiny_models OUT_DIR [causal|seq2seq|qa]
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from modelforge_devkit.sample_data import corpus

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerFast

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
SPECIAL_TOKENS = [
    "<pad>", "<s>", "</s>", "<unk>", "<|user|>", "<|assistant|>", "<|system|>", "[CLS]", "[SEP]", "[MASK]",
]


def _train_tokenizer(vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus(), trainer=trainer)
    return tokenizer


def _fast_tokenizer(kind: str, vocab_size: int) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    raw = _train_tokenizer(vocab_size)
    if kind == "qa":
        raw.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))],
        )
        return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers leaves __init__ untyped
            tokenizer_object=raw, unk_token="<unk>", pad_token="<pad>", cls_token="[CLS]",
            sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
        )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]  # transformers leaves __init__ untyped
        tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        model_max_length=512,
    )
    if kind == "causal":
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _random_model(kind: str, tokenizer: PreTrainedTokenizerFast) -> PreTrainedModel:
    """A random-init causal (Llama), seq2seq (T5) or qa (BERT) model sized for tests."""
    from transformers import (
        BertConfig,
        BertForQuestionAnswering,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    vocab = len(tokenizer)
    if kind == "causal":
        return LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    if kind == "seq2seq":
        t5 = T5Config(
            vocab_size=vocab, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        )
        # Not a declared T5Config field (so set, not passed), but saved and read like one.
        t5.decoder_start_token_id = tokenizer.pad_token_id
        return T5ForConditionalGeneration(t5)
    if kind == "qa":
        return BertForQuestionAnswering(
            BertConfig(
                vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
            )
        )
    raise ValueError(f"unknown tiny model kind {kind!r}: causal, seq2seq or qa")


def build_tiny_model(out_dir: Path | str, kind: str = "causal", vocab_size: int = 400, seed: int = 0) -> Path:
    """Writes a tiny random-init model folder: causal (Llama), seq2seq (T5) or qa (BERT)."""
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = _fast_tokenizer(kind, vocab_size)
    model = _random_model(kind, tokenizer)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str]) -> int:
    if not argv:
        sys.stderr.write(__doc__ or "")
        return 2
    kind = argv[1] if len(argv) > 1 else "causal"
    path = build_tiny_model(argv[0], kind)
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
