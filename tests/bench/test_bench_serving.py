"""bench/serving.py is part of `make bench`. Its section's tables and goals are checked in
test_bench_smoke.py, on the one `python -m bench --quick` run the suite pays for."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.serving import FirstTokens, PlaygroundUser, stream_together


def test_the_section_is_registered_in_make_bench() -> None:
    from bench.__main__ import BENCHMARKS

    assert "serving" in BENCHMARKS
    assert Path(__file__).resolve().parents[2].joinpath("bench", "serving.py").is_file()


def first_tokens(together_ms: list[float], alone_ms: list[float], halves: list[float]) -> FirstTokens:
    return FirstTokens(together_ms, alone_ms, p50_per_round=[2.0], p99_halves=halves)


def test_the_first_token_verdict_stands_and_says_when_the_devices_own_pass_is_near_the_goal() -> None:
    ttft = first_tokens([10.0] * 100, [4.0] * 100, [2.4, 2.6])
    goal = ttft.goal("time to first token p99", floor=2.2)
    assert goal.met is False
    assert goal.verdict == ("NOT MET (uncertain: on this device one pass over the 8 prompts costs 2.20x one "
                            "prompt's (floor table))")
    assert goal.measured.startswith("2.50x (10.0 vs 4.0 ms")


def test_a_gpu_like_floor_leaves_the_verdict_plain_and_split_rounds_are_still_said() -> None:
    met = first_tokens([5.0] * 100, [4.0] * 100, [1.2, 1.3]).goal("g", floor=1.05)
    assert met.verdict == "met"
    split = first_tokens([8.0] * 100, [4.0] * 100, [1.9, 2.1]).goal("g", floor=1.05)
    assert split.verdict == "met (uncertain: even and odd rounds give 1.90x and 2.10x)"
    both = first_tokens([8.0] * 100, [4.0] * 100, [1.9, 2.1]).goal("g", floor=1.9)
    assert both.doubt.count("; ") == 1


SSE_ANSWER = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
              + b"".join(b"%x\r\n%s\r\n" % (len(event), event) for event in (
                  b'data: {"text": "Hi", "finished": false}\n\n',
                  b'data: {"text": "", "finished": true, "tokens_generated": 3}\n\n'))
              + b"0\r\n\r\n")


async def test_a_playground_user_reconnects_when_the_gateway_closed_its_idle_connection() -> None:
    """A stand-in gateway answers one stream per connection; it closes the first connection once that
    stream ends (idle timeout) and the second as soon as the next request arrives, unanswered."""
    connections: list[int] = []

    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        head = await reader.readuntil(b"\r\n\r\n")
        lengths = [line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
        length = int(lengths[0])
        await reader.readexactly(length)
        if len(connections) != 2:
            writer.write(SSE_ANSWER)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(gateway, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    user = PlaygroundUser(f"http://127.0.0.1:{port}", 1, "hello")
    try:
        first = await stream_together([user], 3)
        await asyncio.sleep(0.05)  # the close reaches the client while it is idle
        second = await stream_together([user], 3)
        # Closed while idle (replaced before sending), then closed unanswered as the request arrived
        # (sent again): three connections, both streams whole.
        assert (first.tokens, second.tokens) == (3, 3)
        assert connections == [1, 2, 3]
    finally:
        await user.close()
        server.close()
        await server.wait_closed()


async def test_a_stream_cut_after_its_answer_began_is_not_sent_again() -> None:
    async def gateway(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(SSE_ANSWER[:40])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(gateway, "127.0.0.1", 0)
    user = PlaygroundUser(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", 1, "hello")
    try:
        with pytest.raises(asyncio.IncompleteReadError):
            await stream_together([user], 3)
    finally:
        await user.close()
        server.close()
        await server.wait_closed()
