from __future__ import annotations

from modelforge_devkit.sample_data import text_generation_rows
from modelforge_training.tasks import split_rows
from modelforge_training.tasks.text_generation import prepare, to_conversation, to_plain

USER = {"role": "user", "content": "Where does the fox live?"}
ANSWER = {"role": "assistant", "content": "In the forest."}


def test_every_accepted_format_becomes_prompt_and_completion() -> None:
    rows = [
        {"messages": [USER, ANSWER]},
        {"prompt": USER["content"], "completion": ANSWER["content"]},
        {"instruction": USER["content"], "input": "", "output": ANSWER["content"]},
        {"input": USER["content"], "output": ANSWER["content"]},
    ]
    for row in rows:
        assert to_conversation(row) == {"prompt": [USER], "completion": [ANSWER]}


def test_alpaca_input_is_appended_to_the_instruction() -> None:
    row = {"instruction": "Translate.", "input": "bonjour", "output": "hello"}
    assert to_conversation(row)["prompt"] == [{"role": "user", "content": "Translate.\n\nbonjour"}]


def test_chat_rows_split_at_the_last_assistant_message() -> None:
    system = {"role": "system", "content": "Be brief."}
    later = {"role": "user", "content": "And the owl?"}
    final = {"role": "assistant", "content": "In the valley."}
    conversation = to_conversation({"messages": [system, USER, ANSWER, later, final]})
    assert conversation == {"prompt": [system, USER, ANSWER, later], "completion": [final]}


def test_plain_format_without_a_chat_template() -> None:
    plain = to_plain({"messages": [{"role": "system", "content": "Be brief."}, USER, ANSWER]})
    assert plain == {
        "prompt": "### System:\nBe brief.\n\n### Instruction:\nWhere does the fox live?\n\n### Response:\n",
        "completion": "In the forest.",
    }
    assert prepare([{"prompt": "a", "completion": "b"}], has_chat_template=False)[0]["completion"] == "b"


def test_split_is_seeded_and_keeps_every_row() -> None:
    rows = text_generation_rows(20)
    train, held_out = split_rows(rows, 0.1, seed=7)
    assert (len(train), len(held_out)) == (18, 2)
    assert split_rows(rows, 0.1, seed=7) == (train, held_out)
    assert split_rows(rows, 0.1, seed=8) != (train, held_out)
    assert sorted(map(str, train + held_out)) == sorted(map(str, rows))
    assert len(split_rows(rows[:2], 0.01, seed=0)[1]) == 1  # at least one held out, never all
