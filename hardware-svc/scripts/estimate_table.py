"""Writes the estimate-vs-measured table of hardware-svc/docs/estimate.md from every measured run
(hardware-svc/measurements/*.jsonl), between its `<!-- table -->` markers:

    python hardware-svc/scripts/estimate_table.py            # rewrite the table
    python hardware-svc/scripts/estimate_table.py --check    # exit 1 when the document is stale
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelforge_hardware.calibration import load_runs, markdown_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "estimate.md"
BEGIN, END = "<!-- table -->", "<!-- /table -->"


def with_table(document: str, table: str) -> str:
    head, _, rest = document.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table}\n{END}{tail}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check that the document's table is current")
    args = parser.parse_args(argv)
    document = DOC.read_text(encoding="utf-8")
    if BEGIN not in document or END not in document:
        sys.stderr.write(f"{DOC} has no {BEGIN} ... {END} markers\n")
        return 2
    updated = with_table(document, markdown_table(load_runs()))
    if args.check:
        if updated != document:
            sys.stderr.write(f"{DOC}: the table is stale; run {Path(__file__).name}\n")
            return 1
        return 0
    DOC.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
