from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import torch
from transformers import AutoTokenizer

from modelforge_inference.streaming import (
    IncrementalDecoder,
    PieceChannel,
    TokenStreamer,
    call_on_loop,
    one_wake_per_loop,
)

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


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_piece_channel_is_due_for_the_first_piece_then_once_per_interval() -> None:
    clock = FakeClock()
    channel = PieceChannel(asyncio.get_running_loop(), min_interval_s=0.2, clock=clock)
    assert channel.due()  # the first piece is not held back
    channel.put("a")
    assert not channel.due()
    clock.now += 0.19
    assert not channel.due()
    clock.now += 0.01
    assert channel.due()
    channel.put("b")
    assert not channel.due()  # the interval counts from the last put
    assert await channel.take() == "ab"
    assert not channel.due()


async def test_piece_channel_without_interval_is_always_due() -> None:
    clock = FakeClock()
    channel = PieceChannel(asyncio.get_running_loop(), clock=clock)
    channel.put("a")
    assert channel.due()


class RecordingLoop:
    """Stands in for the event loop: records the wake-ups a put schedules (each is a write to the
    loop's self-pipe and a loop iteration on a GIL it shares with the generating thread)."""

    def __init__(self) -> None:
        self.wakes: list[object] = []

    def call_soon_threadsafe(self, callback: object, *args: object) -> None:
        self.wakes.append(callback)


def test_piece_channel_wakes_the_loop_once_until_the_reader_has_caught_up() -> None:
    loop = RecordingLoop()
    channel = PieceChannel(loop, min_interval_s=0.0)  # type: ignore[arg-type]
    for piece in ("a", "b", "c"):
        channel.put(piece)
    assert len(loop.wakes) == 1


async def test_a_steps_pieces_for_many_readers_reach_the_loop_in_one_wake_up() -> None:
    loop = asyncio.get_running_loop()
    channels = [PieceChannel(loop) for _ in range(3)]
    wakes: list[object] = []
    real = loop.call_soon_threadsafe

    def counting(callback: object, *args: object) -> object:
        wakes.append(callback)
        return real(callback, *args)  # type: ignore[arg-type]

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        order: list[str] = []

        def step() -> None:  # a decoding step on the scheduler thread: one piece per row, then an end
            with one_wake_per_loop():
                for index, channel in enumerate(channels):
                    channel.put(f"piece {index}")
                with one_wake_per_loop():  # nested: still held for the outer block
                    call_on_loop(loop, order.append, "ended")
                assert wakes == []

        # A plain thread, joined at once: asyncio.to_thread would wake the loop itself when done.
        scheduler = threading.Thread(target=step)
        scheduler.start()
        scheduler.join()
        assert len(wakes) == 1
        assert [await channel.take() for channel in channels] == ["piece 0", "piece 1", "piece 2"]
        await asyncio.sleep(0)  # the loop runs the held calls in the iteration after the wake-up
        assert order == ["ended"]
        # Outside a block every call goes to the loop at once.
        scheduler = threading.Thread(target=call_on_loop, args=(loop, order.append, "alone"))
        scheduler.start()
        scheduler.join()
        assert len(wakes) == 2
        await asyncio.sleep(0)
        assert order == ["ended", "alone"]
    finally:
        del loop.call_soon_threadsafe

