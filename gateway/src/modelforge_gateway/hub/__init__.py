"""Push a model to the Hugging Face Hub; merge a LoRA adapter into its base."""
