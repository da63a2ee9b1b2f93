"""Reading a benchmark report (bench/RESULTS.md's markdown) in the bench tests."""

from __future__ import annotations

import re

# A measured cell: digits with thousands separators and an optional fraction.
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?$")
# A judged goal's verdict: the quick run's timings may go either way, the format may not.
VERDICT = re.compile(r"^(met|NOT MET)( \(uncertain: .+\))?$")


def section(markdown: str, heading: str) -> str:
    """The "## heading..." section (the first whose heading starts so), up to the next "## "."""
    start = markdown.index(f"## {heading}")
    end = markdown.find("\n## ", start + 1)
    return markdown[start : end if end != -1 else len(markdown)]


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


def table(markdown: str, title_start: str) -> list[list[str]]:
    """The rows (header first) of the first table whose "**title" starts with title_start."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"**{title_start}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not all(set(cell) <= {"-"} for cell in cells):
            rows.append(cells)
    return rows
