"""Registered models: list, read, lineage, delete."""
