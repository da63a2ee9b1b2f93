"""Dataset insight (insight.py) on a hand-checked dataset: a real word-level tokenizer (one token per
whitespace-separated word) saved as a model folder, a column-mapped dataset, and every number
worked out by hand below."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from modelforge_common.dataset_rows import mapping_path
from modelforge_common.errors import InvalidArgument, NotFound
from modelforge_trainer.insight import inspect_dataset, nearest_rank
from modelforge_trainer.testing import FakeDatasets

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"

# question -> prompt, answer -> completion (a column mapping stored beside the file).
ROWS = [
    {"question": "a b c", "answer": "d"},  # prompt 3, completion 1, total 3 + 1 + 2 role tokens = 6
    {"question": "a b", "answer": "c d e f"},  # 2, 4, total 8
    {"question": "a", "answer": "b"},  # 1, 1, total 4
    {"question": "a", "answer": "b"},  # the same as the row before: a duplicate
    {"question": "a b c d e f g h", "answer": " "},  # 8, 1 blank (" " splits into no word: 0), total 10
]


def word_tokenizer(folder: Path, chat_template: str | None = TEMPLATE) -> Path:
    vocab = {"[UNK]": 0, "</s>": 1}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", eos_token="</s>")
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def mapped_dataset(tmp_path: Path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    mapping_path(path).write_text(json.dumps({"prompt": "question", "completion": "answer"}))
    return path


def test_nearest_rank() -> None:
    assert [nearest_rank([1, 1, 2, 3, 8], p) for p in (0, 20, 50, 95, 100)] == [1, 1, 2, 8, 8]


def test_the_numbers_of_a_hand_checked_dataset(tmp_path: Path, mapped_dataset: Path) -> None:
    model = word_tokenizer(tmp_path / "words")
    datasets = FakeDatasets({"qa.jsonl": mapped_dataset})
    insight = asyncio.run(inspect_dataset(datasets, tmp_path, "qa.jsonl", str(model), max_length=6, sample_size=2))
    stats = {s.field: (s.min, s.p50, s.p95, s.max, s.mean, s.rows) for s in insight.fields}
    # prompt [3, 2, 1, 1, 8] -> sorted [1, 1, 2, 3, 8]: p50 is the 3rd, p95 the 5th (nearest rank).
    assert stats["prompt"] == (1, 2, 8, 8, 3.0, 5)
    # completion [1, 4, 1, 1, 0] -> [0, 1, 1, 1, 4].
    assert stats["completion"] == (0, 1, 4, 4, 1.4, 5)
    # total [6, 8, 4, 4, 10] -> [4, 4, 6, 8, 10]; over 6 tokens: 8 and 10.
    assert stats["total"] == (4, 6, 10, 10, 6.4, 5)
    assert insight.total_lengths == [6, 8, 4, 4, 10]
    assert (insight.rows, insight.max_length, insight.rows_over_max_length) == (5, 6, 2)
    assert insight.duplicate_rows == 1
    assert insight.empty_fields == {"completion": 1}
    assert insight.chat_template
    assert insight.samples == ["<|user|> a b c <|assistant|> d ", "<|user|> a b <|assistant|> c d e f "]


def test_without_a_chat_template_rows_read_in_the_plain_format(tmp_path: Path, mapped_dataset: Path) -> None:
    model = word_tokenizer(tmp_path / "plain", chat_template=None)
    datasets = FakeDatasets({"qa.jsonl": mapped_dataset})
    insight = asyncio.run(inspect_dataset(datasets, tmp_path, "qa.jsonl", str(model), sample_size=1))
    assert not insight.chat_template and insight.max_length == 2048
    assert insight.samples == ["### Instruction:\na b c\n\n### Response:\nd</s>"]
    # "###", "Instruction:", 3 words, "###", "Response:", "d" and "</s>" (a special token stands alone).
    assert insight.total_lengths[0] == 9


def test_bad_requests_name_their_field(tmp_path: Path, mapped_dataset: Path) -> None:
    model = word_tokenizer(tmp_path / "words")
    datasets = FakeDatasets({"qa.jsonl": mapped_dataset})
    for kwargs, field in (
        ({"dataset": "", "model_name": str(model)}, "dataset"),
        ({"dataset": "qa.jsonl", "model_name": " "}, "model_name"),
        ({"dataset": "qa.jsonl", "model_name": str(model), "max_length": -1}, "max_length"),
        ({"dataset": "qa.jsonl", "model_name": str(model), "sample_size": 21}, "sample_size"),
        ({"dataset": "qa.jsonl", "model_name": str(tmp_path)}, "model_name"),  # a folder without a tokenizer
    ):
        with pytest.raises(InvalidArgument) as caught:
            asyncio.run(inspect_dataset(datasets, tmp_path, **kwargs))  # type: ignore[arg-type]
        assert [v.field for v in caught.value.violations] == [field], kwargs
    with pytest.raises(NotFound):
        asyncio.run(inspect_dataset(datasets, tmp_path, "missing.jsonl", str(model)))
    with pytest.raises(NotFound, match="Model not-a-model not found"):
        asyncio.run(inspect_dataset(datasets, tmp_path, "qa.jsonl", "not-a-model"))
