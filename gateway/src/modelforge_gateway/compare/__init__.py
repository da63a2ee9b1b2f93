"""Runs side by side: GET /api/compare."""
