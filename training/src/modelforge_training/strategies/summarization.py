"""Summarization with LoRA (QLoRA with use_4bit): SFT for causal models, sequence-to-sequence training for
encoder-decoder models. Evaluated by loss and by ROUGE of greedy summaries of held-out texts."""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from peft import get_peft_model
from torchmetrics.text.rouge import ROUGEScore
from transformers import AutoConfig, AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, TrainingArguments

from modelforge_training.providers import huggingface
from modelforge_training.strategies.common import (
    MeanLossTrainer,
    Strategy,
    StrategyContext,
    StrategyFunctions,
    training_arguments,
)
from modelforge_training.strategies.generation import generate_texts
from modelforge_training.strategies.sft import build_sft_trainer, has_chat_template, loss_metrics
from modelforge_training.tasks import summarization, text_generation

# ROUGE needs one generation per example: bounded so evaluation stays a small part of a job.
MAX_ROUGE_EXAMPLES = 64
MAX_SUMMARY_TOKENS = 128


def is_encoder_decoder(context: StrategyContext) -> bool:
    config = AutoConfig.from_pretrained(context.config.model_name, local_files_only=context.spec.local_model)
    return bool(getattr(config, "is_encoder_decoder", False))


def _seq2seq_trainer(context: StrategyContext) -> Any:
    config = context.config
    loaded = huggingface.load(context.spec, context.runtime, AutoModelForSeq2SeqLM, "SEQ_2_SEQ_LM")
    tokenizer = loaded.tokenizer
    target_length = min(MAX_SUMMARY_TOKENS, config.max_seq_length)

    def features(row: dict[str, Any]) -> dict[str, list[int]]:
        source = tokenizer(summarization.seq2seq_source(row), max_length=config.max_seq_length, truncation=True)
        labels = tokenizer(text_target=str(row["summary"]), max_length=target_length, truncation=True)["input_ids"]
        # The summary must end with EOS or generation never learns to stop.
        if tokenizer.eos_token_id is not None and (not labels or labels[-1] != tokenizer.eos_token_id):
            labels = [*labels[: target_length - 1], tokenizer.eos_token_id]
        return {"input_ids": source["input_ids"], "attention_mask": source["attention_mask"], "labels": labels}

    assert loaded.peft_config is not None  # the huggingface provider always returns the LoRA config
    model = get_peft_model(loaded.model, loaded.peft_config)
    if context.runtime.gradient_checkpointing:
        model.enable_input_require_grads()
    context.details.update(loaded.details, architecture="encoder-decoder", max_summary_tokens=target_length)
    context.tokenizer = tokenizer
    return MeanLossTrainer(
        model=model,
        args=TrainingArguments(**training_arguments(context)),
        train_dataset=Dataset.from_list([features(row) for row in context.train_rows]),
        eval_dataset=Dataset.from_list([features(row) for row in context.eval_rows]),
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=loaded.model, label_pad_token_id=-100),
        processing_class=tokenizer,
        callbacks=[context.callback],
    )


def build_trainer(context: StrategyContext) -> Any:
    if is_encoder_decoder(context):
        return _seq2seq_trainer(context)
    context.details["architecture"] = "causal"
    return build_sft_trainer(context, summarization.to_generation_row)


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    scores = ROUGEScore(rouge_keys=("rouge1", "rouge2", "rougeL"))(predictions, references)
    return {key: float(scores[f"{key}_fmeasure"]) for key in ("rouge1", "rouge2", "rougeL")}


def evaluate(trainer: Any, context: StrategyContext) -> dict[str, float]:
    metrics = loss_metrics(trainer)
    rows = context.eval_rows[:MAX_ROUGE_EXAMPLES]
    encoder_decoder = context.details.get("architecture") == "encoder-decoder"
    if encoder_decoder:
        prompts: list[Any] = [summarization.seq2seq_source(row) for row in rows]
    else:
        template = has_chat_template(context.tokenizer)
        prompts = [
            text_generation.generation_prompt(summarization.to_generation_row(row)["prompt"], template) for row in rows
        ]
    predictions = generate_texts(
        trainer.model,
        context.tokenizer,
        prompts,
        max_new_tokens=min(MAX_SUMMARY_TOKENS, context.config.max_seq_length),
        max_input_tokens=context.config.max_seq_length,
        encoder_decoder=encoder_decoder,
    )
    metrics.update(rouge(predictions, [str(row["summary"]) for row in rows]))
    metrics["rouge_examples"] = float(len(rows))
    return metrics


STRATEGY: Strategy = StrategyFunctions(build_trainer, evaluate)
