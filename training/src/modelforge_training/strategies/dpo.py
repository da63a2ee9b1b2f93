"""Direct Preference Optimization with a LoRA adapter (trl's DPOTrainer). The reference model is the
base model itself: the adapter switched off, so no second copy of the weights is loaded."""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from trl.trainer.dpo_config import DPOConfig
from trl.trainer.dpo_trainer import DPOTrainer

from modelforge_training.strategies.common import Strategy, StrategyContext, StrategyFunctions, training_arguments
from modelforge_training.strategies.sft import has_chat_template, load_causal_lm
from modelforge_training.tasks import preference

BETA = 0.1


def build_trainer(context: StrategyContext) -> Any:
    loaded = load_causal_lm(context)
    template = has_chat_template(loaded.tokenizer)
    train = Dataset.from_list(preference.prepare(context.train_rows, template))
    evaluation = Dataset.from_list(preference.prepare(context.eval_rows, template))
    beta = context.config.dpo_beta if context.config.HasField("dpo_beta") else BETA
    args = DPOConfig(**training_arguments(context), max_length=context.config.max_seq_length, beta=beta)
    context.details.update(loaded.details, chat_template=template, dpo_beta=beta, reference="adapter off")
    context.tokenizer = loaded.tokenizer
    return DPOTrainer(
        model=loaded.model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
        callbacks=[context.callback],
    )


def evaluate(trainer: Any, context: StrategyContext) -> dict[str, float]:
    results = trainer.evaluate()
    metrics = {"eval_loss": float(results["eval_loss"])}
    # How often, and by how much, the tuned model prefers the chosen answer on held-out pairs.
    for source, name in (("eval_rewards/accuracies", "reward_accuracy"), ("eval_rewards/margins", "reward_margin")):
        if source in results:
            metrics[name] = float(results[source])
    return metrics


STRATEGY: Strategy = StrategyFunctions(build_trainer, evaluate)
