from __future__ import annotations

from modelforge_inference.stops import RequestOutput, StopFilter


def test_text_before_a_stop_string_passes_and_the_rest_is_dropped() -> None:
    stops = StopFilter(["###", "END"])
    out = [stops.push(p) for p in ["Hello ", "wor", "ld #", "#", "# and more"]]
    assert "".join(out) == "Hello world "
    assert stops.stopped and stops.push("x") == "" and stops.flush() == ""


def test_a_possible_start_of_a_stop_string_is_held_until_decided() -> None:
    stops = StopFilter(["END"])
    assert stops.push("The E") == "The "
    assert stops.push("N") == ""
    assert stops.push("ding") == "ENding"
    assert stops.push("E") == ""
    assert stops.flush() == "E"
    assert not stops.stopped


def test_the_earliest_stop_string_wins() -> None:
    stops = StopFilter(["b", "a"])
    assert stops.push("xxabc") == "xx"


def test_request_output_emits_pieces_that_join_to_its_text() -> None:
    emitted: list[str] = []
    words = {1: "one ", 2: "two ", 3: "STOP", 4: "four"}
    output = RequestOutput(lambda ids: "".join(words[i] for i in ids), ["STOP"], emitted.append)
    for token in (1, 2, 3, 4):
        output.push([token])
    output.finish()
    assert output.stopped and output.text == "one two " == "".join(emitted)
    assert output.tokens == 3


WORDS = {1: "one ", 2: "two ", 3: "STOP", 4: "four ", 5: "five "}


class CountingDecode:
    """The words above as a tokenizer; records every decode call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, ids: object) -> str:
        self.calls += 1
        return "".join(WORDS[i] for i in ids)  # type: ignore[attr-defined]


def test_tokens_wait_as_ids_until_a_piece_is_due_and_then_go_out_as_one() -> None:
    decode = CountingDecode()
    emitted: list[str] = []
    due = [True]
    output = RequestOutput(decode, (), emitted.append, lambda: due[0])
    output.push([1])
    assert emitted == ["one "]  # the first piece goes at once
    due[0] = False
    calls = decode.calls
    for token in (2, 4, 5):
        output.push([token])
    assert emitted == ["one "] and decode.calls == calls  # not decoded while nobody wants a piece
    due[0] = True
    output.push([1])
    assert emitted == ["one ", "two four five one "]
    due[0] = False
    output.push([2])
    output.finish()  # the end goes out whether due or not
    assert emitted[-1] == "two " and "".join(emitted) == output.text == "one two four five one two "
    assert output.tokens == 6


def test_stop_strings_are_checked_every_token_while_pieces_wait() -> None:
    emitted: list[str] = []
    output = RequestOutput(CountingDecode(), ["STOP"], emitted.append, lambda: False)
    for token in (1, 2):
        output.push([token])
    assert emitted == [] and not output.stopped
    output.push([3])
    assert output.stopped  # generation ends at the token that completed the stop string
    output.push([4])
    output.finish()
    assert emitted == ["one two "] and output.text == "one two " and output.tokens == 3


def test_without_a_reader_or_stop_strings_text_is_decoded_once_at_the_end() -> None:
    decode = CountingDecode()
    output = RequestOutput(decode)
    for token in (1, 2, 4):
        output.push([token])
    assert decode.calls == 0
    output.finish()
    assert output.text == "one two four " and decode.calls == 1
