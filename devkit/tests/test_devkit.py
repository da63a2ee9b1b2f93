import json
from pathlib import Path

import pytest

from modelforge_common.dataset_rows import validate_lines
from modelforge_devkit import sample_data
from modelforge_devkit.stack import SERVICE_MODULES, START_ORDER, Stack, local_defaults
from modelforge_devkit.tiny_models import build_tiny_model


@pytest.mark.parametrize(
    ("rows", "task", "strategy"),
    [
        (sample_data.text_generation_rows(12), "text-generation", "sft"),
        (sample_data.text_generation_rows(12, style="prompt_completion"), "text-generation", "sft"),
        (sample_data.text_generation_rows(12, style="alpaca"), "text-generation", "sft"),
        (sample_data.summarization_rows(12), "summarization", "sft"),
        (sample_data.qa_rows(12), "extractive-question-answering", "sft"),
        (sample_data.preference_rows(12), "text-generation", "dpo"),
    ],
)
def test_sample_rows_pass_their_validator(rows: list[dict], task: str, strategy: str) -> None:
    report = validate_lines([json.dumps(r) for r in rows], task=task, strategy=strategy)
    assert report.valid, report.summary()


def test_tiny_causal_model_has_chat_template_and_eos(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path / "m", "causal")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|assistant|>\n")
    assert tokenizer.eos_token == "</s>"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert sum(p.numel() for p in model.parameters()) < 500_000


@pytest.mark.parametrize("kind", ["seq2seq", "qa"])
def test_other_tiny_models_load(tmp_path: Path, kind: str) -> None:
    from transformers import AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM

    path = build_tiny_model(tmp_path / kind, kind)
    loader = AutoModelForSeq2SeqLM if kind == "seq2seq" else AutoModelForQuestionAnswering
    assert loader.from_pretrained(path, local_files_only=True) is not None


def test_stack_defaults_keep_callers_modelforge_variables(tmp_path: Path) -> None:
    env = local_defaults({"MODELFORGE_DATA_DIR": str(tmp_path), "MODELFORGE_REGISTRY_ADDR": "127.0.0.1:7777",
                          "MODELFORGE_DATABASE_URL": "sqlite:////x.db"})
    assert env["MODELFORGE_REGISTRY_ADDR"] == "127.0.0.1:7777"
    assert env["MODELFORGE_DATABASE_URL"] == "sqlite:////x.db"
    assert env["MODELFORGE_TRAINER_ADDR"] == "127.0.0.1:50051"
    assert Path(env["MODELFORGE_DATA_DIR"]).is_absolute()
    assert set(START_ORDER) == set(SERVICE_MODULES)
    assert Stack.from_environment(env).run_dir == tmp_path / "run"
