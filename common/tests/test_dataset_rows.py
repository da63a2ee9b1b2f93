import json

import pytest

from modelforge_common.dataset_rows import MAX_REPORTED_ISSUES, validate_lines


def lines(rows: list[object]) -> list[str]:
    return [json.dumps(r) for r in rows]


CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
PAIR = {"prompt": "p", "completion": "c"}
SQUAD = {"context": "The cat lives in the forest.", "question": "Where?",
         "answers": {"text": ["forest"], "answer_start": [21]}}


def test_valid_upload_counts_rows_and_formats() -> None:
    report = validate_lines(lines([CHAT] * 6 + [PAIR] * 6))
    assert report.valid, report.summary()
    assert report.num_examples == 12
    assert report.formats == {"chat", "prompt_completion"}


@pytest.mark.parametrize(
    ("raw", "line", "field", "fragment"),
    [
        ("{not json", 1, "", "not valid JSON"),
        ("[1, 2]", 1, "", "must be a JSON object"),
        ('"text"', 1, "", "must be a JSON object"),
        (json.dumps({"foo": 1}), 1, "", "expected one of"),
        (json.dumps({"prompt": "", "completion": "c"}), 1, "prompt", "must not be empty"),
        (json.dumps({"prompt": 3, "completion": "c"}), 1, "prompt", "must be a string"),
        (json.dumps({"messages": [{"role": "bot", "content": "x"}]}), 1, "messages[0].role", "must be one of"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}), 1, "messages", "assistant"),
        (json.dumps({**SQUAD, "answers": {"text": ["forest"], "answer_start": [3]}}), 1,
         "answers.answer_start", "not found in context"),
        (json.dumps({**SQUAD, "answers": {"text": ["forest"], "answer_start": [1, 2]}}), 1,
         "answers.answer_start", "one per answer"),
    ],
)
def test_bad_rows_are_reported_with_line_and_field(raw: str, line: int, field: str, fragment: str) -> None:
    report = validate_lines([raw])
    assert not report.valid
    issue = report.issues[0]
    assert (issue.line, issue.field) == (line, field)
    assert fragment in issue.message


def test_line_numbers_count_blank_lines() -> None:
    report = validate_lines([*lines([PAIR] * 11), "", "oops"])
    assert [(i.line, i.field) for i in report.issues] == [(13, "")]


def test_empty_file_and_too_few_rows() -> None:
    assert validate_lines(["", "  "]).issues[0].message == "the file is empty"
    few = validate_lines(lines([PAIR] * 3))
    assert not few.valid and "at least 10" in few.issues[0].message


def test_task_and_strategy_restrict_formats() -> None:
    assert validate_lines(lines([PAIR] * 10), task="text-generation", strategy="sft").valid
    summary = validate_lines(lines([PAIR] * 10), task="summarization", strategy="sft")
    assert not summary.valid and "text+summary" in summary.issues[0].message
    dpo = validate_lines(lines([{"prompt": "p", "chosen": "a", "rejected": "b"}] * 10), task="text-generation",
                         strategy="dpo")
    assert dpo.valid and dpo.formats == {"preference"}
    assert validate_lines(lines([SQUAD] * 10), task="extractive-question-answering", strategy="sft").valid


def test_issue_list_is_capped_but_counted() -> None:
    report = validate_lines(["nope"] * 120)
    assert len(report.issues) == MAX_REPORTED_ISSUES
    assert report.total_issues == 120
    assert "(and 115 more)" in report.summary()


def test_non_utf8_line() -> None:
    report = validate_lines([b"\xff\xfe{}"])
    assert report.issues[0].message == "is not UTF-8 text (invalid byte 0xff at column 1)"
