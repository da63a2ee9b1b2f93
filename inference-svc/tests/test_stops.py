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
