"""The v1 wizard (responses.md "Training Endpoints"), served under /api/finetune."""
