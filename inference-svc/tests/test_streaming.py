from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoTokenizer

from modelforge_inference.streaming import IncrementalDecoder, TokenStreamer

TEXT = "Héllo wörld, 日本語 and ünïcödé! The quick brown fox."


def test_pieces_join_to_the_full_decode_and_never_split_a_character(causal_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(causal_model)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(lambda chunk: tokenizer.decode(list(chunk), skip_special_tokens=True))
    pieces = [decoder.push([token]) for token in ids]
    pieces.append(decoder.finish())
    assert "".join(pieces) == tokenizer.decode(ids) == TEXT
    assert all("\ufffd" not in piece for piece in pieces)
    # Byte-level BPE spreads "日" over several tokens: some steps emit nothing.
    assert len([p for p in pieces if p]) > 1
    assert "" in pieces


def test_streamer_skips_the_prompt_and_emits_the_rest(causal_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(causal_model)
    ids = tokenizer(TEXT, add_special_tokens=False)["input_ids"]
    emitted: list[str] = []
    streamer = TokenStreamer(lambda chunk: tokenizer.decode(list(chunk), skip_special_tokens=True), emitted.append)
    streamer.put(torch.tensor([[1, 2, 3]]))  # the prompt
    for token in ids:
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert "".join(emitted) == TEXT
    assert streamer.token_count == len(ids)
