"""`modelforge generate` and `modelforge chat`: text from a fine-tuned model, streamed as it comes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from modelforge_cli.client import ApiClient, ApiError, CliError
from modelforge_cli.commands._common import JsonFlag, api
from modelforge_cli.render import print_json, stderr

STREAM_PATH = "/api/playground/stream"
GENERATE_PATH = "/api/playground/generate"
EXIT_WORDS = ("/exit", "/quit")
RESET_WORD = "/reset"

ModelArg = Annotated[str, typer.Argument(help="The model's id or model_id.")]
MaxNewTokens = Annotated[int | None, typer.Option(min=1, help="At most this many new tokens.")]
Temperature = Annotated[float | None, typer.Option(min=0.0, help="0 for greedy decoding.")]
TopP = Annotated[float | None, typer.Option(min=0.0, max=1.0)]
Stop = Annotated[list[str] | None, typer.Option("--stop", help="End before this text (repeatable).")]
Seed = Annotated[int | None, typer.Option(help="Seed sampling for a repeatable answer.")]
System = Annotated[str | None, typer.Option(help="A system prompt (sent as the conversation's first turn).")]


def generation_request(
    model: str,
    prompt: str,
    max_new_tokens: int | None,
    temperature: float | None,
    top_p: float | None,
    stop: list[str] | None = None,
    seed: int | None = None,
    messages: list[dict[str, str]] | None = None,
) -> dict[str, Any]:
    """The playground body: `messages` (a conversation) replace the prompt when given."""
    body: dict[str, Any] = {"model_id": model}
    if messages:
        body["messages"] = messages
    else:
        body["prompt"] = prompt
    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
               "stop": stop or None}
    body.update({key: value for key, value in options.items() if value is not None})
    return body


def stream_generation(client: ApiClient, body: dict[str, Any], write: Callable[[str], None]) -> dict[str, Any]:
    """Writes the text as it streams from /api/playground/stream; falls back to one-shot
    /api/playground/generate on a gateway without the stream endpoint. Returns the result."""
    pieces: list[str] = []
    final: dict[str, Any] = {}
    try:
        for chunk in client.stream_events(STREAM_PATH, body):
            if chunk.get("error"):
                raise CliError(f"POST {STREAM_PATH}: generation failed: {chunk['error']}")
            piece = chunk.get("text") or chunk.get("token") or ""
            if piece:
                pieces.append(piece)
                write(piece)
            if chunk.get("finished"):
                final = chunk
                break
    except ApiError as exc:
        if pieces or exc.status not in (404, 405):
            raise
        answer = client.post(GENERATE_PATH, json=body)
        answer = answer if isinstance(answer, dict) else {}
        write(str(answer.get("generated_text", "")))
        return {**answer, "streamed": False}
    return {
        "generated_text": "".join(pieces),
        "tokens_generated": final.get("tokens_generated"),
        "generation_time_ms": final.get("generation_time_ms"),
        "streamed": True,
    }


def _write_stdout(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _stats(result: dict[str, Any]) -> None:
    if result.get("tokens_generated") is not None:
        stderr().print(
            f"({result['tokens_generated']} tokens, {result.get('generation_time_ms', '?')} ms)",
            style="dim",
            markup=False,
        )


def generate(
    ctx: typer.Context,
    model: ModelArg,
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    max_new_tokens: MaxNewTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    stop: Stop = None,
    seed: Seed = None,
    system: System = None,
    as_json: JsonFlag = False,
) -> None:
    """Generate from MODEL, printing tokens as they stream."""
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}] if system else None
    body = generation_request(model, prompt, max_new_tokens, temperature, top_p, stop, seed, messages)
    with api(ctx) as client:
        if as_json:
            result = stream_generation(client, body, lambda _: None)
            print_json({"model_id": model, "prompt": prompt, **result})
            return
        result = stream_generation(client, body, _write_stdout)
    _write_stdout("\n")
    _stats(result)


def chat(
    ctx: typer.Context,
    model: ModelArg,
    max_new_tokens: MaxNewTokens = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    stop: Stop = None,
    seed: Seed = None,
    system: System = None,
) -> None:
    """Interactive: type a message, watch the answer stream; /reset starts over, /exit or Ctrl-D quits.

    The whole conversation (system prompt, your messages and the model's answers) is sent each turn,
    and the model's chat template turns it into its prompt."""
    stderr().print(f"chatting with model {model}: /reset to start over, /exit or Ctrl-D to quit", style="dim",
                   markup=False)
    opening = [{"role": "system", "content": system}] if system else []
    history = list(opening)
    with api(ctx) as client:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                _write_stdout("\n")
                break
            if line.strip() in EXIT_WORDS:
                break
            if line.strip() == RESET_WORD:
                history = list(opening)
                stderr().print("(conversation cleared)", style="dim", markup=False)
                continue
            if not line.strip():
                continue
            turn = [*history, {"role": "user", "content": line}]
            _write_stdout("model> ")
            result = stream_generation(
                client,
                generation_request(model, line, max_new_tokens, temperature, top_p, stop, seed, turn),
                _write_stdout,
            )
            _write_stdout("\n")
            _stats(result)
            history = [*turn, {"role": "assistant", "content": str(result.get("generated_text", ""))}]
