"""Supervised fine-tuning of a causal LM with LoRA (trl's SFTTrainer); with use_4bit it is QLoRA.

Examples are prompt/completion pairs, so the loss covers the answer only; the chat template (or the
appended EOS) teaches the model where an answer ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datasets import Dataset
from trl.trainer.sft_config import SFTConfig
from trl.trainer.sft_trainer import SFTTrainer

from modelforge_training.providers import LoadedModel
from modelforge_training.strategies.common import (
    Strategy,
    StrategyContext,
    StrategyFunctions,
    perplexity,
    training_arguments,
)
from modelforge_training.tasks import text_generation

Row = dict[str, Any]


def load_causal_lm(context: StrategyContext) -> LoadedModel:
    if context.config.provider == "unsloth":
        from modelforge_training.providers import unsloth

        return unsloth.load_causal_lm(context.spec, context.runtime)
    from transformers import AutoModelForCausalLM

    from modelforge_training.providers import huggingface

    return huggingface.load(context.spec, context.runtime, AutoModelForCausalLM, "CAUSAL_LM")


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def build_sft_trainer(context: StrategyContext, to_generation_row: Callable[[Row], Row] = lambda row: row) -> Any:
    """SFTTrainer over the job's rows, each first mapped to a text-generation row by to_generation_row."""
    loaded = load_causal_lm(context)
    template = has_chat_template(loaded.tokenizer)

    def examples(rows: list[Row]) -> Dataset:
        return Dataset.from_list(text_generation.prepare([to_generation_row(row) for row in rows], template))

    args = SFTConfig(
        **training_arguments(context),
        max_length=context.config.max_seq_length,
        completion_only_loss=True,
        packing=False,
    )
    context.details.update(loaded.details, chat_template=template, completion_only_loss=True)
    context.tokenizer = loaded.tokenizer
    return SFTTrainer(
        model=loaded.model,
        args=args,
        train_dataset=examples(context.train_rows),
        eval_dataset=examples(context.eval_rows),
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
        callbacks=[context.callback],
    )


def build_trainer(context: StrategyContext) -> Any:
    return build_sft_trainer(context)


def loss_metrics(trainer: Any) -> dict[str, float]:
    eval_loss = float(trainer.evaluate()["eval_loss"])
    return {"eval_loss": eval_loss, "perplexity": perplexity(eval_loss)}


def evaluate(trainer: Any, context: StrategyContext) -> dict[str, float]:
    return loss_metrics(trainer)


STRATEGY: Strategy = StrategyFunctions(build_trainer, evaluate)
