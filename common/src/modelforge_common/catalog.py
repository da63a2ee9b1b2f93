"""What the platform supports, in one place (validation messages and /api/info read it)."""

from __future__ import annotations

TASKS = ("text-generation", "summarization", "extractive-question-answering")
STRATEGIES = ("sft", "qlora", "dpo", "rlhf")
PROVIDERS = ("huggingface", "unsloth")
PROFILES = ("low_end", "mid_range", "high_end")

# Which strategies each task can train with (preference strategies need a generative model).
STRATEGIES_BY_TASK: dict[str, tuple[str, ...]] = {
    "text-generation": ("sft", "qlora", "dpo", "rlhf"),
    "summarization": ("sft", "qlora"),
    "extractive-question-answering": ("sft",),
}

MIN_DATASET_ROWS = 10

# The hyperparameters of a training request (TrainingConfig's optional fields, the settings a run
# is reproduced from), beside task, model, dataset, provider and strategy.
TRAINING_SETTINGS = (
    "num_train_epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "max_seq_length",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "use_4bit",
    "bf16",
    "warmup_ratio",
    "lr_scheduler_type",
    "optim",
    "max_steps",
    "save_steps",
    "logging_steps",
    "eval_split",
    "seed",
)
