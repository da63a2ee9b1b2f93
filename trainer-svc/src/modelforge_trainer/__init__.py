"""Runs fine-tuning jobs in child processes and publishes their progress."""
