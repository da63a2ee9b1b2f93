"""A base model's tokenizer as dataset insight needs it, without transformers: the fast tokenizer
(tokenizer.json, read by the `tokenizers` package), its special tokens and its chat template
(tokenizer_config.json or chat_template.jinja, rendered with jinja2 as transformers renders it).
Training itself uses transformers' tokenizer in the runtime; this service imports no torch stack."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "pad_token")


def _raise(message: str) -> NoReturn:
    raise TemplateError(message)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(value: object, indent: int | None = None, **_: object) -> str:
    # transformers' tojson: unicode kept as is (jinja2's own escapes HTML characters).
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _token_text(value: object) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


@dataclass(frozen=True)
class ModelTokenizer:
    tokenizer: Tokenizer
    special_tokens: dict[str, str]
    chat_template: str | None

    @property
    def eos_token(self) -> str | None:
        return self.special_tokens.get("eos_token")

    def count(self, text: str) -> int:
        """Tokens of `text`; the special tokens a rendered template holds as text count as one each."""
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """The conversation as the template renders it (no generation prompt), like transformers'."""
        if not self.chat_template:
            raise ValueError("the tokenizer has no chat template")
        environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
        environment.filters["tojson"] = _tojson
        environment.globals.update(raise_exception=_raise, strftime_now=_strftime_now)
        template = environment.from_string(self.chat_template)
        return template.render(messages=messages, add_generation_prompt=False, **self.special_tokens)


def load_model_tokenizer(files: dict[str, Path | None]) -> ModelTokenizer:
    """From a model's tokenizer files (name -> local path, None where the model has none). OSError when
    tokenizer.json is missing, ValueError when a file cannot be read as a tokenizer."""
    tokenizer_file = files.get(TOKENIZER_FILE)
    if tokenizer_file is None or not tokenizer_file.is_file():
        raise FileNotFoundError(f"no {TOKENIZER_FILE} (a fast tokenizer) found")
    try:
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a malformed file
        raise ValueError(f"{TOKENIZER_FILE} cannot be read: {exc}") from None
    config: dict[str, Any] = {}
    config_file = files.get(CONFIG_FILE)
    if config_file is not None and config_file.is_file():
        try:
            loaded = json.loads(config_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{CONFIG_FILE} is not JSON: {exc}") from None
        config = loaded if isinstance(loaded, dict) else {}
    special = {name: text for name in SPECIAL_TOKENS if (text := _token_text(config.get(name))) is not None}
    template_file = files.get(TEMPLATE_FILE)
    template = config.get("chat_template")
    if template_file is not None and template_file.is_file():
        template = template_file.read_text(encoding="utf-8")
    return ModelTokenizer(tokenizer, special, template if isinstance(template, str) and template else None)


def tokenizer_files(model: str, local: bool) -> dict[str, Path | None]:
    """The tokenizer files of a local model folder, or of a Hub model (from the cache or the Hub: OSError
    where it cannot be reached)."""
    names = (TOKENIZER_FILE, CONFIG_FILE, TEMPLATE_FILE)
    if local:
        return {name: Path(model) / name for name in names}
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    found: dict[str, Path | None] = {}
    for name in names:
        try:
            found[name] = Path(hf_hub_download(model, name))
        except EntryNotFoundError as exc:
            if name != TOKENIZER_FILE:
                found[name] = None  # optional files
            elif isinstance(exc, LocalEntryNotFoundError):
                raise  # not cached and the Hub not reachable (an OSError)
            else:
                raise ValueError(f"{model} has no {TOKENIZER_FILE} (a fast tokenizer)") from None
    return found
