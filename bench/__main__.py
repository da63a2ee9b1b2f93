"""`make bench` / `python -m bench`: runs every benchmark against one private stack and writes RESULTS.md.

Options: --quick (one tiny iteration of each: the smoke test), --size small (~110M-parameter model for
the training benchmark), --only training,events,... , --output PATH.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.common import (
    Section,
    Table,
    bench_context,
    library_versions,
    load_average,
    machine_info,
    torch_threads_label,
)

# Run order: training first (its jobs register the models the later benchmarks read and generate with);
# training_small after generation, which generates with the latest model. serving (issue 17) runs
# inference-svc's local backend in this process on the bench's base model, then the same users through
# the stack's playground stream.
BENCHMARKS = ("training", "events", "gateway", "load", "generation", "serving", "gpu_serving", "training_small",
              "gpu_qlora")
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "RESULTS.md"
# Hand-written explanations of the misses, from profiles (dated inside); appended to every RESULTS.md.
ANALYSIS = Path(__file__).resolve().parent / "ANALYSIS.md"


def header(args: argparse.Namespace, sections: list[Section], machine: dict[str, str]) -> str:
    lines = [
        "# ModelForge benchmarks",
        "",
        "Written by `make bench` (`python -m bench"
        + (" --quick" if args.quick else "")
        + (f" --size {args.size}" if args.size != "tiny" else "")
        + "`). Every figure below comes from this one run "
        "on this machine; baseline and ModelForge ran alternately (A B A B ...), and ratios are medians of the "
        "per-round ratios.",
        "",
        f"- Date: {machine['date']}",
        f"- CPU: {machine['cpu']}; RAM: {machine['ram']}; GPU: {machine['gpu']}; Python {machine['python']}",
        f"- Load average (1 min) at the start: {machine['load']}, at the end: {load_average()} "
        f"(on {machine['cpu'].split()[0]} cores; anything else running on the machine shows in every figure)",
        "- Libraries: " + ", ".join(f"{name} {version}" for name, version in library_versions().items()),
        "- Everything on loopback: nats-server, the four services and the gateway as separate processes "
        "(modelforge_devkit.stack), the benchmark clients in the `python -m bench` process.",
        f"- torch intra-op threads, the same on every side: {torch_threads_label()}; see bench/common.py "
        "(TORCH_THREADS) for why.",
        "",
    ]
    goals = Table("Goals (issue 8, and issue 7's load test)", ["benchmark", "goal", "target", "measured", "verdict"])
    for section in sections:
        for goal in section.goals:
            goals.add(section.title, goal.name, goal.target, goal.measured, goal.verdict)
    lines += [goals.markdown(), ""]
    return "\n".join(lines)


def failed_section(name: str, exc: BaseException) -> Section:
    section = Section(key=name, title=f"{name}: FAILED", method="The benchmark raised an exception:")
    section.notes.append("```\n" + "".join(traceback.format_exception(exc))[-4000:] + "\n```")
    return section


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one tiny iteration of each benchmark")
    parser.add_argument("--size", choices=("tiny", "small"), default="tiny")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated: " + ", ".join(BENCHMARKS))
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    selected = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    machine = machine_info()
    sections: list[Section] = []
    failures = 0
    with (
        tempfile.TemporaryDirectory(prefix="modelforge-bench-") as scratch,
        bench_context(Path(scratch), quick=args.quick, size=args.size) as context,
    ):
        for name in (n for n in BENCHMARKS if n in selected):
            print(f"bench: {name} ...", flush=True)
            started = time.monotonic()
            try:
                section = importlib.import_module(f"bench.{name}").run(context)
            except Exception as exc:  # noqa: BLE001 - one failed benchmark is reported, the rest still run
                failures += 1
                section = failed_section(name, exc)
                traceback.print_exc()
            section.seconds = time.monotonic() - started
            sections.append(section)
            print(f"bench: {name} done in {section.seconds:.0f} s", flush=True)

    text = header(args, sections, machine) + "\n" + "\n".join(section.markdown() for section in sections)
    if ANALYSIS.exists():
        text += "\n" + ANALYSIS.read_text()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"bench: wrote {args.output}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
