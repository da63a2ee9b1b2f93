"""Reading a benchmark report (bench/RESULTS.md's markdown) in the bench tests."""

from __future__ import annotations

import re

# A measured cell: digits with thousands separators and an optional fraction.
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?$")


def tables(markdown: str) -> dict[str, list[list[str]]]:
    """Every "**title**" followed by a pipe table, as title -> rows of cells (header row first)."""
    found: dict[str, list[list[str]]] = {}
    title = ""
    for line in markdown.splitlines():
        if line.startswith("**") and line.endswith("**"):
            title = line.strip("*")
        elif line.startswith("|") and title:
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= {"-"} for cell in cells):
                found.setdefault(title, []).append(cells)
        elif not line.strip() and title in found:
            title = ""
    return found
