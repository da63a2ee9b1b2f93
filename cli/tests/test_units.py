"""Small pure pieces: error formatting, memory units, the terminal progress view, config."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from modelforge_cli.client import ApiError, format_detail, items_of
from modelforge_cli.config import CliConfig, ConfigError, load_run_file
from modelforge_cli.render import FollowView, describe_event, memory_gib


def test_list_details_join_loc_and_msg() -> None:
    detail = [
        {"loc": ["body", "task"], "msg": "Invalid task: xyz", "type": "value_error"},
        {"loc": ["body", "learning_rate"], "msg": "must be > 0"},
    ]
    error = ApiError("POST", "/api/start_training", 400, detail)
    assert str(error) == (
        "POST /api/start_training -> 400: body.task: Invalid task: xyz; body.learning_rate: must be > 0"
    )
    assert error.problems == ["body.task: Invalid task: xyz", "body.learning_rate: must be > 0"]
    assert format_detail("  two\n lines ") == "two lines"
    assert format_detail(None) == "(no detail)"


def test_route_missing_tells_a_missing_endpoint_from_a_missing_resource() -> None:
    assert ApiError("GET", "/api/jobs", 404, "Not Found").route_missing
    assert ApiError("POST", "/api/x", 405, "Method Not Allowed").route_missing
    assert not ApiError("GET", "/api/jobs/j", 404, "Training job j not found").route_missing


def test_items_of_reads_the_envelope_and_the_bare_list() -> None:
    assert items_of({"models": [{"id": 1}]}, "models") == [{"id": 1}]
    assert items_of([{"id": 2}, "junk"], "models") == [{"id": 2}]
    assert items_of({"other": 1}, "models") == []


def test_memory_figures_in_any_unit_become_gib() -> None:
    assert memory_gib({"weights_bytes": 3 * 1024**3}, "weights") == 3.0
    assert memory_gib({"weights_gb": 1.5}, "weights") == 1.5
    assert memory_gib({"weights": 2 * 1024**3}, "weights") == 2.0
    assert memory_gib({"weights": 0.5}, "weights") == 0.5
    assert memory_gib({}, "weights") is None


def test_terminal_view_draws_a_bar_and_prints_logs_above_it() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, no_color=True)
    with FollowView("train_1", console) as view:
        view(
            {
                "type": "progress",
                "seq": 1,
                "status": "running",
                "current_step": 3,
                "total_steps": 8,
                "current_epoch": 1,
                "total_epochs": 2,
                "loss": 0.5,
                "learning_rate": 2e-4,
            }
        )
        view({"type": "log", "seq": 2, "status": "running", "message": "epoch 1 done"})
        view({"type": "progress", "seq": 1, "status": "running", "current_step": 1, "total_steps": 8})  # stale
        view({"type": "status", "seq": 3, "status": "completed", "current_step": 8, "total_steps": 8})
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())
    assert "[running]  - epoch 1 done\n" in text  # printed above the bar
    assert "[completed]  step 8/8\n" in text
    final_bar = r"train_1 completed ━{40} 8/8 epoch 1/2  loss 0\.5000  lr 2\.00e-04 \d+:\d\d:\d\d eta \d+:\d\d:\d\d$"
    assert re.search(final_bar, text.rstrip())
    assert view.shown_seqs == [1, 2, 1, 3]


def test_describe_event_names_error_and_metrics() -> None:
    line = describe_event({"status": "error", "current_step": 4, "total_steps": 10, "error": "CUDA out of memory"})
    assert line == "[error]  step 4/10  - CUDA out of memory"
    assert "metrics eval_loss=0.3" in describe_event({"type": "metric", "metrics": {"eval_loss": 0.3}})


def test_config_urls_and_headers() -> None:
    config = CliConfig(url="https://mf.example.com/prefix/", api_key="k")
    assert config.url == "https://mf.example.com/prefix"
    assert config.ws_url("/ws/training") == "wss://mf.example.com/prefix/ws/training"
    assert config.headers == {"Authorization": "Bearer k"}
    assert CliConfig().headers == {}
    with pytest.raises(ConfigError):
        CliConfig(url="127.0.0.1:8000")


def test_run_file_must_be_a_mapping(tmp_path: Path) -> None:
    good = tmp_path / "run.yaml"
    good.write_text("task: summarization\nnum_train_epochs: 1\n")
    assert load_run_file(good) == {"task": "summarization", "num_train_epochs": 1}
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_run_file(bad)
