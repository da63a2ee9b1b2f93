"""ModelForge shared kit. Modules stay small; nothing here imports torch or FastAPI."""
