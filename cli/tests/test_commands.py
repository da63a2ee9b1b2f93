"""The CLI end to end against the fake gateway (conftest.py): output, exit codes, no tracebacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelforge_cli.client import ApiClient
from modelforge_cli.commands.playground import stream_generation
from modelforge_cli.config import CliConfig


def ndjson_seqs(stdout: str) -> list[int]:
    return [json.loads(line)["seq"] for line in stdout.splitlines() if line.strip()]


def write_rows(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


# --- status -----------------------------------------------------------------------------------


def test_status_shows_health_hardware_profile_and_training(cli: Any, gateway: Any) -> None:
    gateway.script("train_7", "completed")
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert "healthy" in result.stdout and "v2" in result.stdout
    assert "cpu_cores" in result.stdout and "low_end" in result.stdout
    assert "training: completed job train_7" in result.stdout
    assert "no GET /api/jobs" in result.stderr  # the tolerated 404


def test_status_json_includes_the_job_queue_when_the_gateway_has_one(cli: Any, gateway: Any) -> None:
    gateway.has_jobs_api = True
    gateway.script("train_1")
    report = json.loads(cli("status", "--json").stdout)
    assert report["health"]["status"] == "healthy"
    assert report["detect"]["profile"] == "low_end"
    assert [job["job_id"] for job in report["jobs"]] == ["train_1"]
    assert report["errors"] == {}


# --- datasets ---------------------------------------------------------------------------------


def test_upload_ok_then_list_and_show_with_local_preview(cli: Any, tmp_path: Path) -> None:
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(12)]
    dataset = write_rows(tmp_path / "chat.jsonl", rows)
    result = cli("datasets", "upload", str(dataset))
    assert result.exit_code == 0, result.output
    assert "uploaded chat.jsonl: 12 examples" in result.stdout

    listed = cli("datasets", "list")
    assert "chat.jsonl" in listed.stdout and "12" in listed.stdout

    shown = cli("datasets", "show", str(dataset), "--rows", "2", "--json")
    body = json.loads(shown.stdout)
    assert body["dataset"]["filename"] == "chat.jsonl"
    assert body["preview"] == rows[:2]

    remote = cli("datasets", "show", "chat.jsonl")
    assert remote.exit_code == 0 and "num_examples" in remote.stdout


def test_upload_with_bad_rows_prints_each_problem_and_exits_1(cli: Any, tmp_path: Path) -> None:
    dataset = write_rows(
        tmp_path / "bad.jsonl", [{"prompt": "q", "completion": "a"}, "{not json", {"prompt": "q only"}]
    )
    result = cli("datasets", "upload", str(dataset))
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: POST /api/upload_dataset -> 400")
    assert "(2 problems)" in lines[0]
    assert "  file.line 2: not valid JSON" in lines
    assert "  file.line 3.completion: field required" in lines
    assert result.stdout == ""


def test_show_unknown_dataset_exits_1(cli: Any) -> None:
    result = cli("datasets", "show", "nope.jsonl")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: dataset nope.jsonl not found among the 0 uploaded (GET /api/datasets)"


# --- estimate ---------------------------------------------------------------------------------


def test_estimate_prints_the_breakdown_in_gib(cli: Any) -> None:
    result = cli(
        "estimate", "--model", "tiny-llama", "--strategy", "qlora", "--lora-r", "8", "--use-4bit", "--precision", "bf16"
    )
    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.stdout.splitlines()
        if line.count("│") == 3
    }
    assert rows == {
        "weights": "2.00",
        "adapters": "0.12",
        "optimizer": "0.25",
        "gradients": "0.12",
        "activations": "1.00",
        "overhead": "0.50",
        "total": "4.00",
    }
    assert "fits | available 24.00 GiB | device cpu" in result.stdout


def test_estimate_of_an_oversize_job_prints_the_largest_parts_and_the_settings_that_fit(
    cli: Any, gateway: Any
) -> None:
    result = cli(
        "estimate", "--model", "tiny-oversize", "--strategy", "sft", "--batch-size", "8", "--provider", "huggingface",
        "--gradient-accumulation-steps", "1", "--lora-dropout", "0", "--gradient-checkpointing",
    )
    assert result.exit_code == 0, result.output
    assert "does not fit" in result.stdout
    assert "Largest parts: weights 2.00 GiB, activations 1.00 GiB" in result.stdout
    assert "Largest per-device batch that fits: 1" in result.stdout
    assert "Settings that fit:\n  (1) per_device_train_batch_size=1 gradient_accumulation_steps=8" in result.stdout
    assert "=8: per_device_train_batch_size 1 with gradient_accumulation_steps 8 (2.75 GiB)" in result.stdout
    sent = gateway.estimates[-1]
    assert (sent["provider"], sent["gradient_accumulation_steps"], sent["lora_dropout"]) == ("huggingface", 1, 0.0)
    assert sent["gradient_checkpointing"] is True


def test_estimate_of_a_multi_process_job_sends_its_processes_and_says_the_sizes_are_per_process(
    cli: Any, gateway: Any
) -> None:
    result = cli(
        "estimate", "--model", "tiny-llama", "--strategy", "qlora", "--processes-per-node", "4", "--num-nodes", "2",
        "--distributed", "FSDP",
    )
    assert result.exit_code == 0, result.output
    sent = gateway.estimates[-1]
    assert (sent["processes_per_node"], sent["num_nodes"], sent["distributed"]) == (4, 2, "fsdp")
    assert "GiB per process of 8, fsdp" in result.stdout  # the table's size column
    assert "fits | available 24.00 GiB | device cpu | per process of 8, fsdp" in result.stdout


def test_estimate_of_one_process_sends_no_processes_and_says_nothing_of_them(cli: Any, gateway: Any) -> None:
    result = cli("estimate", "--model", "tiny-llama", "--strategy", "qlora")
    assert result.exit_code == 0, result.output
    assert not {"processes_per_node", "num_nodes", "distributed"} & set(gateway.estimates[-1])
    assert "per process" not in result.stdout


@pytest.mark.parametrize("flags", [["--processes-per-node", "0"], ["--processes-per-node", "65"],
                                   ["--num-nodes", "0"], ["--distributed", "zero3"]])
def test_estimate_refuses_bad_process_flags_as_usage_errors(cli: Any, gateway: Any, flags: list[str]) -> None:
    result = cli("estimate", "--model", "tiny-llama", "--strategy", "qlora", *flags)
    assert result.exit_code == 2, result.output
    assert flags[0] in result.output
    assert gateway.estimates == []


def test_estimate_error_is_one_line(cli: Any) -> None:
    result = cli("estimate", "--model", "meta-llama/gated", "--strategy", "sft")
    assert result.exit_code == 1
    assert result.stderr == (
        "error: POST /api/finetune/estimate_memory -> 403: Model meta-llama/gated is not accessible.\n"
    )


# --- train and follow -------------------------------------------------------------------------


def test_train_follow_to_completion_exits_0_with_model_and_metrics(cli: Any, gateway: Any) -> None:
    result = cli(
        "train",
        "--task",
        "text-generation",
        "--model",
        "tiny-llama",
        "--dataset",
        "chat.jsonl",
        "--epochs",
        "2",
        "--lr",
        "0.0003",
        "--lora-r",
        "8",
        "--follow",
    )
    assert result.exit_code == 0, result.output
    assert gateway.started == [
        {
            "task": "text-generation",
            "model_name": "tiny-llama",
            "dataset": "chat.jsonl",
            "num_train_epochs": 2.0,
            "learning_rate": 0.0003,
            "lora_r": 8,
        }
    ]
    assert "started job train_1" in result.stdout
    assert "step 8/8" in result.stdout and "loss 0.2500" in result.stdout and "epoch 1 done" in result.stdout
    assert "job train_1 completed: model model_train_1" in result.stdout
    assert "perplexity: 1.28" in result.stdout


def test_train_follow_to_error_exits_1_with_the_jobs_error(cli: Any) -> None:
    result = cli("train", "--task", "text-generation", "--model", "too-big", "--dataset", "chat.jsonl", "-f")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == "error: job train_1 error: CUDA out of memory"


def test_train_from_a_run_file_with_flag_overrides(cli: Any, gateway: Any, tmp_path: Path) -> None:
    run = tmp_path / "run.yaml"
    run.write_text(
        "task: text-generation\nmodel_name: tiny-llama\ndataset: chat.jsonl\nmax_steps: 5\nprovider: huggingface\n"
    )
    result = cli("train", "--config", str(run), "--max-steps", "3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["job_id"] == "train_1"
    assert gateway.started[0]["max_steps"] == 3 and gateway.started[0]["provider"] == "huggingface"


def test_follow_survives_a_dropped_connection_without_loss_or_repeat(cli: Any, gateway: Any) -> None:
    script = gateway.script("train_9", steps=12, drop_after=5)
    result = cli("jobs", "follow", "train_9", "--json")
    assert result.exit_code == 0, result.output
    assert ndjson_seqs(result.stdout) == list(range(1, len(script.events) + 1))
    assert [c["since"] for c in script.connections] == ["", "5"]
    assert "note: connection lost (close code 1011); reconnecting in 0.25 s (attempt 1)" in result.stderr


def test_follow_against_a_gateway_without_since_deduplicates_its_replay(cli: Any, gateway: Any) -> None:
    script = gateway.script("train_9", "stopped", steps=10, drop_after=7, honour_since=False, replay_all=True)
    result = cli("jobs", "follow", "train_9", "--json")
    assert result.exit_code == 1
    assert ndjson_seqs(result.stdout) == list(range(1, len(script.events) + 1))
    assert "error: job train_9 stopped: CUDA out of memory" in result.stderr


def test_follow_unknown_job_exits_1(cli: Any) -> None:
    result = cli("jobs", "follow", "ghost")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: WS /ws/training closed by the gateway (1008): Training job ghost not found"


# --- jobs -------------------------------------------------------------------------------------


def test_jobs_fall_back_to_training_status_and_say_so(cli: Any, gateway: Any) -> None:
    gateway.script("train_3")
    listed = cli("jobs", "list")
    assert listed.exit_code == 0 and "train_3" in listed.stdout
    assert "no GET /api/jobs: using GET /api/training_status" in listed.stderr
    shown = cli("jobs", "show", "train_3", "--json")
    assert json.loads(shown.stdout)["job_id"] == "train_3"
    stopped = cli("jobs", "stop", "train_3")
    assert "POST /api/stop_training" in stopped.stdout and "no POST /api/jobs/{id}/cancel" in stopped.stderr
    missing = cli("jobs", "show", "nope")
    assert missing.exit_code == 1
    assert missing.stderr.splitlines()[-1] == "error: GET /api/training_status -> 404: Training job nope not found"


def test_jobs_use_the_jobs_api_when_present(cli: Any, gateway: Any) -> None:
    gateway.has_jobs_api = True
    gateway.script("train_4")
    shown = cli("jobs", "show", "train_4")
    assert shown.exit_code == 0 and "tiny-llama" in shown.stdout and shown.stderr == ""
    assert json.loads(cli("jobs", "list", "--json").stdout)["jobs"][0]["job_id"] == "train_4"


def test_jobs_stop_uses_the_cancel_route_and_reports_its_refusal(cli: Any, gateway: Any) -> None:
    gateway.has_jobs_api = True
    running = gateway.script("train_5")
    running.events = running.events[:3]  # still running: status, then two progress events
    gateway.script("train_6")  # already completed

    stopped = cli("jobs", "stop", "train_5")
    assert stopped.exit_code == 0, stopped.stderr
    assert "POST /api/jobs/train_5/cancel" in stopped.stdout and stopped.stderr == ""
    assert gateway.cancelled == ["train_5"]
    assert json.loads(cli("jobs", "stop", "train_5", "--json").stdout)["status"] == "stopped"

    finished = cli("jobs", "stop", "train_6")
    assert finished.exit_code == 1
    assert finished.stderr.splitlines()[-1] == (
        "error: POST /api/jobs/train_6/cancel -> 409: Training job train_6 has already finished (completed)"
    )
    unknown = cli("jobs", "stop", "ghost")
    assert unknown.exit_code == 1
    assert unknown.stderr.splitlines()[-1] == "error: POST /api/jobs/ghost/cancel -> 404: Training job ghost not found"
    assert gateway.cancelled == ["train_5", "train_5"]


# --- models -----------------------------------------------------------------------------------


def test_models_list_json_is_the_raw_answer(cli: Any) -> None:
    result = cli("models", "list", "--json")
    assert result.exit_code == 0
    body = json.loads(result.stdout)
    assert body["models"][0]["model_id"] == "model_20261123_100000"


def test_models_show_delete_push(cli: Any) -> None:
    shown = cli("models", "show", "1")
    assert "tiny-llama-sft" in shown.stdout and "final_loss" in shown.stdout
    deleted = cli("models", "delete", "1", "--yes")
    assert deleted.stdout.strip() == "Model 1 deleted successfully"
    refused = cli("models", "delete", "1", input="n\n")
    assert refused.exit_code == 1 and "Aborted" in refused.output
    pushed = json.loads(cli("models", "push", "1", "--repo", "me/tiny", "--private", "--json").stdout)
    assert pushed["repo_url"] == "https://huggingface.co/me/tiny" and pushed["private"] is True


def test_model_not_found_exits_1_with_one_line(cli: Any) -> None:
    result = cli("models", "show", "missing")
    assert result.exit_code == 1
    assert result.stderr == "error: GET /api/models/missing -> 404: Model missing not found\n"


# --- generate and chat ------------------------------------------------------------------------


def test_generate_streams_pieces_as_they_come(gateway: Any) -> None:
    pieces: list[str] = []
    with ApiClient(CliConfig(url=gateway.url)) as client:
        result = stream_generation(client, {"model_id": "1", "prompt": "What is ML?"}, pieces.append)
    assert pieces == ["Machine", " learning", " is", " fun."]
    assert result == {
        "generated_text": "Machine learning is fun.",
        "tokens_generated": 4,
        "generation_time_ms": 40,
        "streamed": True,
    }


def test_generate_prints_the_text_and_stats(cli: Any) -> None:
    result = cli("generate", "1", "What is ML?", "--max-new-tokens", "16", "--temperature", "0")
    assert result.exit_code == 0, result.output
    assert result.stdout == "Machine learning is fun.\n"
    assert "(4 tokens, 40 ms)" in result.stderr


def test_generate_falls_back_to_the_whole_answer_without_the_stream_endpoint(cli: Any, gateway: Any) -> None:
    gateway.has_stream = False
    result = cli("generate", "1", "What is ML?", "--json")
    body = json.loads(result.stdout)
    assert body["generated_text"] == "Machine learning is fun." and body["streamed"] is False


def test_chat_loops_until_exit(cli: Any) -> None:
    result = cli("chat", "1", input="hello\n\n/exit\n")
    assert result.exit_code == 0
    assert result.stdout.count("model> Machine learning is fun.") == 1
    eof = cli("chat", "1", input="hi\n")
    assert eof.exit_code == 0 and "model> Machine learning is fun." in eof.stdout


def test_chat_sends_the_whole_conversation_each_turn(cli: Any, gateway: Any) -> None:
    answer = "Machine learning is fun."
    result = cli("chat", "1", "--system", "Be brief.", "--seed", "3", input="hello\nwhy?\n/reset\nagain\n/exit\n")
    assert result.exit_code == 0, result.output
    first, second, third = gateway.playground_bodies
    system = {"role": "system", "content": "Be brief."}
    assert first["messages"] == [system, {"role": "user", "content": "hello"}]
    assert second["messages"] == [system, {"role": "user", "content": "hello"},
                                  {"role": "assistant", "content": answer}, {"role": "user", "content": "why?"}]
    assert third["messages"] == [system, {"role": "user", "content": "again"}]
    assert all("prompt" not in body and body["seed"] == 3 for body in (first, second, third))


def test_generate_sends_stop_seed_and_a_system_prompt(cli: Any, gateway: Any) -> None:
    result = cli("generate", "1", "What is ML?", "--stop", "###", "--stop", "END", "--seed", "9", "--system", "Terse.")
    assert result.exit_code == 0, result.output
    [body] = gateway.playground_bodies
    assert body["messages"] == [{"role": "system", "content": "Terse."}, {"role": "user", "content": "What is ML?"}]
    assert (body["stop"], body["seed"]) == (["###", "END"], 9)
    plain = cli("generate", "1", "What is ML?")
    assert plain.exit_code == 0 and gateway.playground_bodies[-1] == {"model_id": "1", "prompt": "What is ML?"}


# --- errors and options -----------------------------------------------------------------------


def test_unreachable_gateway_exits_1_with_a_hint(cli: Any, closed_url: str) -> None:
    result = cli("models", "list", url=closed_url)
    assert result.exit_code == 1
    assert result.stderr == f"error: cannot reach ModelForge at {closed_url} (is it running? try `make up`)\n"
    followed = cli("jobs", "follow", "train_1", url=closed_url)
    assert followed.exit_code == 1 and "cannot reach ModelForge" in followed.stderr


def test_bad_usage_exits_2(cli: Any, tmp_path: Path) -> None:
    assert cli("estimate", "--model", "tiny").exit_code == 2  # --strategy missing
    assert cli("train", "--task", "text-generation").exit_code == 2
    assert cli("datasets", "upload", str(tmp_path / "absent.jsonl")).exit_code == 2
    assert cli("models", "list", url="not-a-url").exit_code == 2
    broken = tmp_path / "broken.yaml"
    broken.write_text("- just\n- a list\n")
    assert cli("train", "--config", str(broken)).exit_code == 2


def test_validation_error_list_is_joined_on_one_line(cli: Any, gateway: Any) -> None:
    result = cli("train", "--task", "text-generation", "--model", "tiny", "--dataset", "unknown.jsonl")
    assert result.exit_code == 1
    assert result.stderr == "error: POST /api/start_training -> 404: Dataset unknown.jsonl not found\n"


def test_api_key_is_sent_as_bearer_token(cli: Any, gateway: Any) -> None:
    cli("--api-key", "s3cret", "models", "list")  # the global option may come again after --url
    assert gateway.authorization[-1] == "Bearer s3cret"
