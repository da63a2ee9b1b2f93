"""Generation with registered models: local transformers + peft, or a remote TGI server."""
