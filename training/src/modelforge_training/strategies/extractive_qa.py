"""Extractive question answering with LoRA on an encoder (BERT-style AutoModelForQuestionAnswering).
The span head (qa_outputs) is new for most base models, so it is trained in full and saved with the
adapter. Evaluated by loss and by SQuAD exact match / F1 of the predicted spans."""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from peft import get_peft_model
from torchmetrics.text import SQuAD
from transformers import AutoModelForQuestionAnswering, TrainingArguments, default_data_collator

from modelforge_training.providers import huggingface
from modelforge_training.strategies.common import (
    MeanLossTrainer,
    Strategy,
    StrategyContext,
    StrategyFunctions,
    training_arguments,
)
from modelforge_training.tasks.extractive_qa import Window, answer_positions, best_span, doc_stride

Row = dict[str, Any]


def max_length(context: StrategyContext, tokenizer: Any, model: Any) -> int:
    limits = [context.config.max_seq_length, getattr(model.config, "max_position_embeddings", 512)]
    if tokenizer.model_max_length and tokenizer.model_max_length < 1_000_000:
        limits.append(tokenizer.model_max_length)
    return min(limits)


def tokenize(rows: list[Row], tokenizer: Any, length: int) -> Any:
    return tokenizer(
        [str(row["question"]).lstrip() for row in rows],
        [str(row["context"]) for row in rows],
        truncation="only_second",
        max_length=length,
        stride=doc_stride(length),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length",
    )


def windows(encoded: Any) -> list[tuple[int, Window]]:
    """(row index, window) for every tokenized window."""
    return [
        (row, Window(encoded.sequence_ids(i), encoded["offset_mapping"][i]))
        for i, row in enumerate(encoded["overflow_to_sample_mapping"])
    ]


def training_features(rows: list[Row], tokenizer: Any, length: int) -> Dataset:
    encoded = tokenize(rows, tokenizer, length)
    features = []
    for i, (row, window) in enumerate(windows(encoded)):
        start, end = answer_positions(window, rows[row])
        feature = {key: encoded[key][i] for key in ("input_ids", "attention_mask", "token_type_ids") if key in encoded}
        features.append({**feature, "start_positions": start, "end_positions": end})
    return Dataset.from_list(features)


def build_trainer(context: StrategyContext) -> Any:
    loaded = huggingface.load(
        context.spec,
        context.runtime,
        AutoModelForQuestionAnswering,
        "QUESTION_ANS",
        exclude_modules=["qa_outputs"],
    )
    tokenizer = loaded.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("extractive question answering needs a fast tokenizer (character offsets)")
    length = max_length(context, tokenizer, loaded.model)
    assert loaded.peft_config is not None  # the huggingface provider always returns the LoRA config
    model = get_peft_model(loaded.model, loaded.peft_config)  # adds qa_outputs to modules_to_save
    if context.runtime.gradient_checkpointing:
        model.enable_input_require_grads()
    context.details.update(loaded.details, max_length=length, doc_stride=doc_stride(length), trained_head="qa_outputs")
    context.tokenizer = tokenizer
    return MeanLossTrainer(
        model=model,
        args=TrainingArguments(**training_arguments(context)),
        train_dataset=training_features(context.train_rows, tokenizer, length),
        eval_dataset=training_features(context.eval_rows, tokenizer, length),
        data_collator=default_data_collator,
        processing_class=tokenizer,
        callbacks=[context.callback],
    )


@torch.no_grad()
def predict_answers(model: Any, tokenizer: Any, rows: list[Row], length: int, batch_size: int) -> list[str]:
    """The best span over all windows of each row, as text of its context."""
    encoded = tokenize(rows, tokenizer, length)
    all_windows = windows(encoded)
    model.eval()
    device = next(model.parameters()).device
    inputs = {k: torch.tensor(encoded[k]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
    best: dict[int, tuple[float, int, int]] = {}
    for begin in range(0, len(all_windows), batch_size):
        batch = {k: v[begin : begin + batch_size].to(device) for k, v in inputs.items()}
        output = model(**batch)
        for offset, (starts, ends) in enumerate(
            zip(output.start_logits.tolist(), output.end_logits.tolist(), strict=True)
        ):
            row, window = all_windows[begin + offset]
            span = best_span(starts, ends, window)
            if span is not None and (row not in best or span[0] > best[row][0]):
                best[row] = span
    return [str(row["context"])[best[i][1] : best[i][2]] if i in best else "" for i, row in enumerate(rows)]


def evaluate(trainer: Any, context: StrategyContext) -> dict[str, float]:
    eval_loss = float(trainer.evaluate()["eval_loss"])
    length = int(context.details["max_length"])
    predictions = predict_answers(
        trainer.model, context.tokenizer, context.eval_rows, length, context.config.per_device_train_batch_size
    )
    scores = SQuAD()(
        [{"prediction_text": text, "id": str(i)} for i, text in enumerate(predictions)],
        [{"answers": row["answers"], "id": str(i)} for i, row in enumerate(context.eval_rows)],
    )
    return {"eval_loss": eval_loss, "exact_match": float(scores["exact_match"]), "f1": float(scores["f1"])}


STRATEGY: Strategy = StrategyFunctions(build_trainer, evaluate)
