from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import torch
from transformers import AutoTokenizer

from modelforge_inference.streaming import IncrementalDecoder, PieceChannel, TokenStreamer

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


async def test_piece_channel_joins_what_piled_up_and_ends_after_the_last_piece() -> None:
    channel = PieceChannel(asyncio.get_running_loop())
    channel.put("a")
    assert await channel.take() == "a"  # a reader that keeps up gets each piece alone

    def produce() -> None:
        for piece in ("b", "c", "d"):
            channel.put(piece)

    await asyncio.to_thread(produce)  # the reader was busy meanwhile: three pieces wait
    channel.close()
    assert await channel.take() == "bcd"
    assert await channel.take() is None
    assert await channel.take() is None


async def test_piece_channel_wakes_a_waiting_reader_from_another_thread() -> None:
    channel = PieceChannel(asyncio.get_running_loop())
    reader = asyncio.create_task(channel.take())
    await asyncio.sleep(0.01)
    assert not reader.done()
    threading.Thread(target=channel.put, args=("x",)).start()
    assert await asyncio.wait_for(reader, 5) == "x"
    follow = asyncio.create_task(channel.take())
    await asyncio.sleep(0.01)
    channel.close()
    assert await asyncio.wait_for(follow, 5) is None


async def test_piece_channel_hands_over_at_most_once_per_interval_after_the_first_piece() -> None:
    loop = asyncio.get_running_loop()
    channel = PieceChannel(loop, min_interval_s=0.2)
    channel.put("a")
    started = loop.time()
    assert await channel.take() == "a"
    assert loop.time() - started < 0.1  # the first piece is not held back

    channel.put("b")
    loop.call_later(0.05, lambda: threading.Thread(target=channel.put, args=("c",)).start())
    second = await channel.take()
    assert second == "bc"  # held until the interval passed, joined with what came meanwhile
    assert loop.time() - started >= 0.19

    channel.close()
    closing = loop.time()
    assert await channel.take() is None
    assert loop.time() - closing < 0.1  # nothing left: the end is not held back
