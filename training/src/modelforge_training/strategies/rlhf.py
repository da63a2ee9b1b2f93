"""RLHF in two phases on preference rows (prompt / chosen / rejected):

1. a reward model: the base model with a scalar head (AutoModelForSequenceClassification) and LoRA,
   trained with trl's RewardTrainer to score the chosen answer above the rejected one;
2. the policy: the base causal LM with LoRA, optimized with GRPO (trl's GRPOTrainer) against that
   reward model, sampling several answers per prompt and reinforcing the better-scored ones.

The reward model is kept with the job's checkpoints (a resumed job reuses it) and saved next to the
policy adapter (reward_model/). Metrics: the reward model's held-out accuracy, and the mean reward of
the tuned policy's greedy answers to held-out prompts.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForSequenceClassification
from trl.trainer.grpo_config import GRPOConfig
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.reward_config import RewardConfig
from trl.trainer.reward_trainer import RewardTrainer

from modelforge_training.providers import huggingface
from modelforge_training.strategies.common import Strategy, StrategyContext, StrategyFunctions, training_arguments
from modelforge_training.strategies.generation import generate_texts
from modelforge_training.strategies.sft import has_chat_template, load_causal_lm
from modelforge_training.tasks import preference
from modelforge_training.tasks.text_generation import generation_prompt

REWARD_DIR = "reward_model"
MAX_COMPLETION_TOKENS = 256
MAX_SCORED_EXAMPLES = 32


def num_generations(context: StrategyContext) -> int:
    """Answers sampled per prompt: 4 where the batch holds whole groups of 4, else 2 (validation requires an
    even batch)."""
    batch = context.config.per_device_train_batch_size * context.config.gradient_accumulation_steps
    return 4 if batch % 4 == 0 else 2


def _train_reward_model(context: StrategyContext, template: bool) -> tuple[Any, dict[str, float]]:
    config = context.config
    loaded = huggingface.load(
        context.spec, context.runtime, AutoModelForSequenceClassification, "SEQ_CLS", num_labels=1
    )
    args = RewardConfig(
        **{**training_arguments(context), "output_dir": str(Path(context.spec.checkpoint_dir) / "reward")},
        max_length=config.max_seq_length,
    )
    trainer = RewardTrainer(
        model=loaded.model,
        args=args,
        train_dataset=Dataset.from_list(preference.prepare(context.train_rows, template)),
        eval_dataset=Dataset.from_list(preference.prepare(context.eval_rows, template)),
        processing_class=loaded.tokenizer,
        peft_config=loaded.peft_config,
        callbacks=[context.callback],
    )
    trainer.train()
    results = trainer.evaluate()
    metrics = {"reward_model_eval_loss": float(results["eval_loss"])}
    if "eval_accuracy" in results:
        metrics["reward_model_accuracy"] = float(results["eval_accuracy"])
    trainer.save_model(str(Path(context.spec.checkpoint_dir) / REWARD_DIR))
    return merged(trainer.model), metrics


def merged(model: Any) -> Any:
    """The reward model as a plain PreTrainedModel (GRPO scores with it): LoRA folded into the weights."""
    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def _load_reward_model(context: StrategyContext, folder: Path) -> Any:
    config = context.config
    base = AutoModelForSequenceClassification.from_pretrained(
        config.model_name, num_labels=1, local_files_only=context.spec.local_model, dtype=context.runtime.dtype
    )
    return merged(PeftModel.from_pretrained(base, str(folder)))


def build_trainer(context: StrategyContext) -> Any:
    callback = context.callback
    policy = load_causal_lm(context)
    tokenizer = policy.tokenizer
    template = has_chat_template(tokenizer)

    earlier = Path(context.spec.resume_checkpoint).parent / REWARD_DIR if context.spec.resume_checkpoint else None
    if earlier is not None and earlier.is_dir():
        context.events.log(f"Reusing the reward model of the resumed job ({earlier})")
        reward_model = _load_reward_model(context, earlier)
        shutil.copytree(earlier, Path(context.spec.checkpoint_dir) / REWARD_DIR, dirs_exist_ok=True)
    else:
        callback.begin_phase(0, 2, "reward model")
        reward_model, reward_metrics = _train_reward_model(context, template)
        context.kept["reward_model_metrics"] = reward_metrics
    reward_model.eval()
    if reward_model.config.pad_token_id is None:
        reward_model.config.pad_token_id = tokenizer.pad_token_id
    context.kept["reward_model"] = reward_model

    callback.begin_phase(1, 2, "policy optimization (GRPO)")
    generations = num_generations(context)
    completion_tokens = min(MAX_COMPLETION_TOKENS, max(8, context.config.max_seq_length // 2))
    args = GRPOConfig(
        **training_arguments(context), num_generations=generations, max_completion_length=completion_tokens
    )

    def prompts(rows: list[dict[str, Any]]) -> Dataset:
        return Dataset.from_list([{"prompt": generation_prompt(str(row["prompt"]), template)} for row in rows])

    context.details.update(
        policy.details,
        chat_template=template,
        rl_algorithm="grpo",
        num_generations=generations,
        max_completion_length=completion_tokens,
    )
    context.tokenizer = tokenizer
    return GRPOTrainer(
        model=policy.model,
        reward_funcs=reward_model,
        args=args,
        train_dataset=prompts(context.train_rows),
        processing_class=tokenizer,
        reward_processing_classes=tokenizer,
        peft_config=policy.peft_config,
        callbacks=[callback],
    )


@torch.no_grad()
def mean_reward(reward_model: Any, tokenizer: Any, prompts: list[Any], answers: list[str], template: bool) -> float:
    scores = []
    for prompt, answer in zip(prompts, answers, strict=True):
        if template:
            text = tokenizer.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=False)
        else:
            text = prompt + answer + (tokenizer.eos_token or "")
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        inputs = {k: v.to(next(reward_model.parameters()).device) for k, v in inputs.items()}
        scores.append(float(reward_model(**inputs).logits[0, 0]))
    return sum(scores) / len(scores) if scores else 0.0


def evaluate(trainer: Any, context: StrategyContext) -> dict[str, float]:
    template = has_chat_template(context.tokenizer)
    rows = context.eval_rows[:MAX_SCORED_EXAMPLES]
    prompts = [generation_prompt(str(row["prompt"]), template) for row in rows]
    answers = generate_texts(
        trainer.model,
        context.tokenizer,
        prompts,
        max_new_tokens=int(context.details["max_completion_length"]),
        max_input_tokens=context.config.max_seq_length,
        encoder_decoder=False,
    )
    metrics = dict(context.kept.get("reward_model_metrics", {}))
    metrics["eval_reward"] = mean_reward(context.kept["reward_model"], context.tokenizer, prompts, answers, template)
    last = context.callback.last_logs.get("reward")
    if isinstance(last, int | float):
        metrics["train_reward"] = float(last)
    return metrics


def save_artifacts(trainer: Any, context: StrategyContext, output_dir: Path) -> None:
    """The reward model's adapter and head go next to the policy adapter."""
    shutil.copytree(Path(context.spec.checkpoint_dir) / REWARD_DIR, output_dir / REWARD_DIR, dirs_exist_ok=True)


STRATEGY: Strategy = StrategyFunctions(build_trainer, evaluate, save_artifacts)
