"""Playground: generate with a registered model, whole or streamed."""
