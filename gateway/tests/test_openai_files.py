"""OpenAI fine-tuning files: line-by-line checks and the mapping onto the platform's dataset rows."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelforge_common.dataset_rows import validate_lines
from modelforge_gateway.openai.files import (
    CHAT,
    PREFERENCE,
    check_file,
    display_name,
    new_file_id,
    original_lines,
    parse_stored_name,
    prompt_text,
    stored_name,
)


def chat_row(i: int) -> dict[str, Any]:
    return {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": f"What is {i} + {i}?"},
        {"role": "assistant", "content": str(2 * i), "weight": 1},
    ]}


def preference_row(i: int, turns: int = 1) -> dict[str, Any]:
    messages = [{"role": "user", "content": f"Say hi {i}"}]
    if turns > 1:
        messages = [{"role": "system", "content": "Be kind."}, *messages]
    return {
        "input": {"messages": messages},
        "preferred_output": [{"role": "assistant", "content": f"Hello {i}!"}],
        "non_preferred_output": [{"role": "assistant", "content": "Go away."}],
    }


def jsonl(rows: list[Any]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_a_chat_file_is_stored_unchanged_and_the_platform_accepts_it() -> None:
    content = jsonl([chat_row(i) for i in range(12)])
    checked = check_file(content)
    assert checked.valid, checked.problems
    assert (checked.kind, checked.rows) == (CHAT, 12)
    assert checked.content() == content
    report = validate_lines(checked.content().splitlines())
    assert report.valid and report.formats == {"chat"} and report.num_examples == 12


def test_a_preference_file_gains_the_dpo_fields_and_reads_back_as_uploaded() -> None:
    rows = [preference_row(i, turns=1 + i % 2) for i in range(11)]
    content = jsonl(rows)
    checked = check_file(content)
    assert checked.valid, checked.problems
    assert (checked.kind, checked.rows) == (PREFERENCE, 11)
    stored = [json.loads(line) for line in checked.content().splitlines()]
    assert stored[0]["prompt"] == "Say hi 0"
    assert stored[1]["prompt"] == "System: Be kind.\nSay hi 1"
    assert (stored[0]["chosen"], stored[0]["rejected"]) == ("Hello 0!", "Go away.")
    report = validate_lines(checked.content().splitlines())
    assert report.valid and "preference" in report.formats and report.num_examples == 11
    assert [json.loads(line) for line in original_lines(checked.content())] == rows


@pytest.mark.parametrize(
    ("bad_line", "param", "words"),
    [
        ("{not json", "", "not valid JSON"),
        ("[1, 2]", "", "must be a JSON object"),
        ('{"prompt": "x", "completion": "y"}', "", "expected the chat format"),
        ('{"messages": [{"role": "tool", "content": "x"}]}', "messages[0].role", "must be one of"),
        ('{"messages": [{"role": "user", "content": 5}]}', "messages[0].content", "must be a string"),
        ('{"messages": [{"role": "user", "content": "only a question"}]}', "messages", "assistant message"),
        ('{"messages": [{"role": "assistant", "content": "x", "weight": 0}]}', "messages[0].weight", "weight 1"),
        ('{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], "tools": [{}]}',
         "tools", "not supported"),
    ],
)
def test_a_bad_chat_line_is_named_with_its_line_and_field(bad_line: str, param: str, words: str) -> None:
    lines = [json.dumps(chat_row(i)) for i in range(12)]
    lines[2] = bad_line
    checked = check_file(("\n".join(lines) + "\n").encode())
    assert not checked.valid
    assert [(p.line, p.param) for p in checked.problems] == [(3, param)]
    assert words in checked.problems[0].message
    assert "line 3" in checked.summary()


@pytest.mark.parametrize(
    ("change", "param"),
    [
        (lambda r: r.update(input="x"), "input"),
        (lambda r: r["input"].update(messages=[{"role": "assistant", "content": "x"}]), "input.messages[0].role"),
        (lambda r: r.update(preferred_output=[]), "preferred_output"),
        (lambda r: r["non_preferred_output"][0].update(role="user"), "non_preferred_output[0].role"),
        (lambda r: r["preferred_output"][0].update(content="  "), "preferred_output[0].content"),
    ],
)
def test_a_bad_preference_line_is_named(change: Any, param: str) -> None:
    rows = [preference_row(i) for i in range(12)]
    change(rows[4])
    checked = check_file(jsonl(rows))
    assert [(p.line, p.param) for p in checked.problems] == [(5, param)]


def test_file_level_problems() -> None:
    assert "at least 10" in str(check_file(jsonl([chat_row(i) for i in range(3)])).problems[0])
    assert "no rows" in str(check_file(b"\n\n").problems[0])
    mixed = check_file(jsonl([chat_row(0), *[preference_row(i) for i in range(11)]]))
    assert mixed.problems[0].line == 2 and "first row is chat" in mixed.problems[0].message
    latin = check_file(b"\xff\xfe\n" + jsonl([chat_row(i) for i in range(12)]))
    assert (latin.problems[0].line, latin.problems[0].message) == (1, "is not UTF-8 text")
    deep = check_file(b"[" * 100_000 + b"\n" + jsonl([chat_row(i) for i in range(12)]))
    assert deep.problems[0].line == 1 and "not valid JSON" in deep.problems[0].message


def test_prompt_text_keeps_earlier_turns_as_a_transcript() -> None:
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Name a fox"},
    ]
    assert prompt_text(turns) == "User: Hi\nAssistant: Hello\nName a fox"


def test_stored_names_carry_the_file_id_and_the_display_name() -> None:
    file_id = new_file_id()
    assert file_id != new_file_id()
    name = stored_name(file_id, "../My Data (v2).jsonl")
    assert name == f"{file_id}.My_Data_v2.jsonl"
    assert parse_stored_name(name) == (file_id, "My_Data_v2.jsonl")
    assert parse_stored_name("chat.jsonl") is None
    assert parse_stored_name("file-123.chat.jsonl") is None
    assert display_name("???") == "file.jsonl"
