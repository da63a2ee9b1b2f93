"""Everything the CLI shows: rich tables for people, plain JSON for scripts, and the follow view."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from modelforge_cli.follow import Event, seq_of

GIB = 1024**3
MEMORY_PARTS = ("weights", "adapters", "optimizer", "gradients", "activations", "overhead", "total")


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(value: Any) -> None:
    """Raw JSON on stdout (not through rich, so nothing is wrapped or styled)."""
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


def cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]], title: str | None = None) -> Table:
    """A table of `rows` with (key, header) `columns`."""
    result = Table(title=escape(title) if title else None, title_justify="left")
    for _, header in columns:
        result.add_column(header, overflow="fold")
    for row in rows:
        result.add_row(*(escape(cell(row.get(key))) for key, _ in columns))
    return result


def fields_table(record: dict[str, Any], title: str | None = None, skip: Iterable[str] = ()) -> Table:
    """A two-column key/value table of one record."""
    result = Table(title=escape(title) if title else None, title_justify="left", show_header=False)
    result.add_column("field", style="bold")
    result.add_column("value", overflow="fold")
    skipped = set(skip)
    for key, value in record.items():
        if key not in skipped:
            result.add_row(escape(key), escape(cell(value)))
    return result


def gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def memory_gib(record: dict[str, Any], part: str) -> float | None:
    """A memory figure in GiB from whichever unit the answer uses: `<part>_bytes`, `_gib`, `_gb`, or bare."""
    for suffix, scale in (("_bytes", 1 / GIB), ("_gib", 1.0), ("_gb", 1.0), ("", None)):
        value = record.get(part + suffix)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if scale is None:  # a bare number: bytes when it is that large, else GiB
                scale = 1 / GIB if value >= 2**20 else 1.0
            return float(value) * scale
    return None


def world_size_of(answer: dict[str, Any]) -> int:
    """The processes of the job estimated (1 from a gateway that does not say)."""
    size = answer.get("world_size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else 1


def _per_process(answer: dict[str, Any]) -> str:
    """For a job of N > 1 processes, " per process of N" (and its mode): every size is one process's."""
    size = world_size_of(answer)
    if size == 1:
        return ""
    settings = given if isinstance(given := answer.get("settings"), dict) else {}
    mode = f", {escape(cell(settings['distributed']))}" if settings.get("distributed") else ""
    return f" per process of {size}{mode}"


def estimate_table(answer: dict[str, Any]) -> Table:
    breakdown = given if isinstance(given := answer.get("breakdown"), dict) else answer
    result = Table(title="Estimated peak memory", title_justify="left")
    result.add_column("component")
    # In the column header: a longer title would wrap at the table's width.
    result.add_column(f"GiB{_per_process(answer)}", justify="right")
    for part in MEMORY_PARTS:
        if part == "total" and memory_gib(breakdown, "logits"):
            result.add_row("logits", gib(memory_gib(breakdown, "logits")))  # newer gateways count it apart
        value = memory_gib(breakdown, part)
        if value is None:
            value = memory_gib(answer, part)  # e.g. a total given beside the breakdown
        result.add_row(part, gib(value), style="bold" if part == "total" else None)
    return result


def _setting(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def estimate_advice(answer: dict[str, Any]) -> str:
    """The largest parts, the largest per-device batch that fits, and the settings that fit (each as
    the start-request fields to change: name=value)."""
    lines = []
    largest = [p for p in answer.get("largest_parts") or [] if isinstance(p, dict)]
    if largest:
        named = ", ".join(
            f"{escape(cell(p.get('name')))} {gib(memory_gib({'part_bytes': p.get('bytes')}, 'part'))} GiB"
            for p in largest
        )
        lines.append(f"Largest parts: {named}")
    if isinstance(answer.get("max_batch_size"), int):
        lines.append(f"Largest per-device batch that fits: {answer['max_batch_size']}")
    proposals = [p for p in answer.get("proposals") or [] if isinstance(p, dict)]
    if proposals:
        lines.append("Settings that fit:")
        for number, proposal in enumerate(proposals, start=1):
            settings = given if isinstance(given := proposal.get("settings"), dict) else {}
            fields = " ".join(f"{name}={_setting(settings.get(name))}" for name in proposal.get("changed") or [])
            total = gib(memory_gib(proposal, "total"))
            lines.append(f"  ({number}) {escape(fields)}: {escape(cell(proposal.get('description')))} ({total} GiB)")
    elif answer.get("fits") is False:
        lines.append("No settings of this model fit this machine.")
    return "\n".join(lines)


def estimate_summary(answer: dict[str, Any]) -> str:
    fits = answer.get("fits")
    verdict = "[green]fits[/]" if fits else "[red]does not fit[/]" if fits is False else "fit unknown"
    available = memory_gib(answer, "available")
    parts = [verdict, f"available {gib(available)} GiB", f"device {escape(cell(answer.get('device')))}"]
    if world_size_of(answer) > 1:
        parts.append(_per_process(answer).strip())
    line = " | ".join(parts)
    if answer.get("message"):
        line += f"\n{escape(str(answer['message']))}"
    return line


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def describe_event(event: Event) -> str:
    """One plain line for an event: status, step, epoch, loss, learning rate, progress."""
    parts = [f"[{event.get('status') or event.get('type') or 'event'}]"]
    step, steps = event.get("current_step"), event.get("total_steps")
    if step is not None or steps:
        parts.append(f"step {step or 0}/{steps or '?'}")
    epoch, epochs = event.get("current_epoch"), event.get("total_epochs")
    if epochs:
        parts.append(f"epoch {epoch or 0}/{epochs}")
    if (loss := _number(event.get("loss"))) is not None:
        parts.append(f"loss {loss:.4f}")
    if (rate := _number(event.get("learning_rate"))) is not None:
        parts.append(f"lr {rate:.2e}")
    if (progress := _number(event.get("progress"))) is not None:
        parts.append(f"{progress:.1f}%")
    if event.get("metrics"):
        parts.append("metrics " + ", ".join(f"{k}={cell(v)}" for k, v in event["metrics"].items()))
    text = event.get("error") or event.get("message")
    if text:
        parts.append(f"- {text}")
    return "  ".join(parts)


class FollowView:
    """Shows a job's events: a live progress bar on a terminal, one line per event otherwise, or
    one JSON object per line with `--json`."""

    def __init__(self, job_id: str, console: Console, as_json: bool = False) -> None:
        self.job_id = job_id
        self.console = console
        self.as_json = as_json
        self.shown_seqs: list[int] = []
        self._newest_seq = 0
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._detail: dict[str, str] = {}
        self._started = time.monotonic()

    def __enter__(self) -> FollowView:
        if not self.as_json and self.console.is_terminal:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[steps]}"),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                TextColumn("eta"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.job_id, total=None, steps="", detail="")
        return self

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, event: Event) -> None:
        seq = seq_of(event)
        if seq is not None:
            self.shown_seqs.append(seq)
        if self.as_json:
            sys.stdout.write(json.dumps(event, default=str) + "\n")
            sys.stdout.flush()
            return
        if self._progress is None:
            self.console.print(describe_event(event), markup=False, highlight=False)
            return
        self._update_bar(event, seq)

    def retrying(self, failures: int, delay_s: float, problem: str) -> None:
        """Says on stderr that the stream dropped and a reconnect comes (stdout stays events only)."""
        message = f"note: {problem}; reconnecting in {delay_s:g} s (attempt {failures})"
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False, style="dim")
        else:
            sys.stderr.write(message + "\n")

    def _update_bar(self, event: Event, seq: int | None) -> None:
        assert self._progress is not None and self._task is not None
        kind = event.get("type")
        if kind in ("log", "metric") or event.get("error") or event.get("status") in ("completed", "error", "stopped"):
            self._progress.console.print(describe_event(event), markup=False, highlight=False)
        if seq is not None and seq < self._newest_seq:
            return  # an older replayed event: already past it on the bar
        self._newest_seq = max(self._newest_seq, seq or 0)
        # Epoch, loss and learning rate stay shown until an event brings new values.
        if event.get("total_epochs"):
            self._detail["epoch"] = f"epoch {event.get('current_epoch') or 0}/{event['total_epochs']}"
        if (loss := _number(event.get("loss"))) is not None:
            self._detail["loss"] = f"loss {loss:.4f}"
        if (rate := _number(event.get("learning_rate"))) is not None:
            self._detail["lr"] = f"lr {rate:.2e}"
        fields: dict[str, Any] = {
            "detail": "  ".join(self._detail.values()),
            "description": f"{self.job_id} {event.get('status') or ''}".strip(),
        }
        step, steps = event.get("current_step"), event.get("total_steps")
        if isinstance(steps, int) and steps > 0:
            fields.update(total=steps, completed=step or 0, steps=f"{step or 0}/{steps}")
        elif (progress := _number(event.get("progress"))) is not None:
            fields.update(total=100, completed=progress, steps=f"{progress:.0f}%")
        self._progress.update(self._task, **fields)
