from __future__ import annotations

from modelforge_devkit.sample_data import qa_rows
from modelforge_training.tasks import preference, summarization
from modelforge_training.tasks.extractive_qa import NO_ANSWER, Window, answer_positions, best_span, doc_stride

# "[CLS] q [SEP] the owl lives here [SEP]": tokens 3..6 are context words with these character offsets.
CONTEXT = "the owl lives here"
WINDOW = Window(
    sequence_ids=[None, 0, None, 1, 1, 1, 1, None],
    offsets=[(0, 0), (0, 1), (0, 0), (0, 3), (4, 7), (8, 13), (14, 18), (0, 0)],
)


def row(answer: str) -> dict:
    return {"context": CONTEXT, "question": "q", "answers": {"text": [answer], "answer_start": [CONTEXT.index(answer)]}}


def test_answer_tokens_are_found_in_the_window() -> None:
    assert answer_positions(WINDOW, row("owl")) == (4, 4)
    assert answer_positions(WINDOW, row("owl lives")) == (4, 5)


def test_an_answer_outside_the_window_points_at_cls() -> None:
    cut = Window(sequence_ids=[*WINDOW.sequence_ids[:5], None], offsets=[*WINDOW.offsets[:5], (0, 0)])
    assert answer_positions(cut, row("lives")) == (NO_ANSWER, NO_ANSWER)


def test_best_span_stays_in_the_context_and_in_order() -> None:
    start = [9.0, 9.0, 0.0, 0.1, 0.2, 5.0, 0.3, 9.0]  # high scores outside the context must be ignored
    end = [9.0, 0.0, 9.0, 0.1, 4.0, 0.2, 3.0, 9.0]
    score, begin, finish = best_span(start, end, WINDOW)
    assert CONTEXT[begin:finish] == "lives here"  # end 4 > start 5 is not allowed
    assert score == 8.0


def test_sample_rows_have_consistent_answers() -> None:
    for sample in qa_rows(5):
        text, start = sample["answers"]["text"][0], sample["answers"]["answer_start"][0]
        assert sample["context"][start : start + len(text)] == text
    assert doc_stride(64) == 16 and doc_stride(4096) == 128


def test_summarization_and_preference_rows() -> None:
    summary = {"document": "Long text.", "summary": "Short."}
    assert summarization.to_generation_row(summary) == {
        "prompt": "Summarize the following text.\n\nLong text.",
        "completion": "Short.",
    }
    assert summarization.seq2seq_source({"text": "Long text.", "summary": "S"}) == "summarize: Long text."
    pair = {"prompt": "Q?", "chosen": "Good.", "rejected": "Bad."}
    assert preference.to_conversation(pair) == {
        "prompt": [{"role": "user", "content": "Q?"}],
        "chosen": [{"role": "assistant", "content": "Good."}],
        "rejected": [{"role": "assistant", "content": "Bad."}],
    }
    assert preference.to_plain(pair)["prompt"] == "### Instruction:\nQ?\n\n### Response:\n"
