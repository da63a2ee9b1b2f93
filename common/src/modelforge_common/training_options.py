"""Accepted values of the string hyperparameters (names as transformers' TrainingArguments spells them).

One list for both sides: the gateway declares them in the OpenAPI document and refuses others, and
trainer-svc validates against them, so a value the document offers is never refused. Kept here rather
than read from transformers so neither service imports torch to validate; a trainer-svc unit test checks
they are still names transformers knows.
"""

from __future__ import annotations

LR_SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "cosine_with_min_lr",  # decays to 10% of learning_rate
)

# Optimizers that need nothing beyond torch and bitsandbytes (both installed in every trainer image;
# bitsandbytes 0.50 runs its optimizers on the CPU too).
OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adafactor",
    "sgd",
    "adagrad",
    "rmsprop",
    "adamw_8bit",
    "adamw_bnb_8bit",
    "paged_adamw_32bit",
    "paged_adamw_8bit",
    "lion_32bit",
    "lion_8bit",
    "paged_lion_32bit",
    "paged_lion_8bit",
)
