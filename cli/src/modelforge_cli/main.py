"""The `modelforge` command: global options, the sub-commands, and the one place errors become
exit codes (1 for API and connection errors, 2 for usage errors; never a traceback)."""

from __future__ import annotations

import os
from typing import Annotated, Any

import httpx
import typer
from typer.core import TyperGroup
from websockets.exceptions import WebSocketException

from modelforge_cli.client import CliError
from modelforge_cli.commands import datasets, jobs, models, playground, system, training
from modelforge_cli.config import DEFAULT_TIMEOUT_S, DEFAULT_URL, CliConfig, ConfigError
from modelforge_cli.render import stderr


class ErrorReportingGroup(TyperGroup):
    """Turns every failure under any sub-command into one line on stderr and an exit code."""

    # typer always passes its own Context (a click.Context subclass); click is not a direct dependency.
    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # usage errors (exit 2), explicit exits, aborted prompts: the framework reports them
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from exc
        except CliError as exc:
            _report(*exc.lines())
        except (httpx.HTTPError, WebSocketException, OSError) as exc:
            _report(f"error: {type(exc).__name__}: {exc}")
        except Exception as exc:
            if os.environ.get("MODELFORGE_DEBUG"):
                raise
            _report(f"error: unexpected {type(exc).__name__}: {exc} (MODELFORGE_DEBUG=1 shows the traceback)")
        raise typer.Exit(1)


def _report(*lines: str) -> None:
    err = stderr()
    for line in lines:
        err.print(line, markup=False)


app = typer.Typer(
    name="modelforge",
    cls=ErrorReportingGroup,
    help="ModelForge from the command line: datasets, training with live progress, models, generation.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="MODELFORGE_URL", help="The gateway's base URL.")] = DEFAULT_URL,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="MODELFORGE_API_KEY", show_default=False, help="Sent as `Authorization: Bearer <key>`."),
    ] = None,
    timeout: Annotated[
        float, typer.Option(envvar="MODELFORGE_TIMEOUT", min=1.0, help="Seconds to wait for an answer.")
    ] = DEFAULT_TIMEOUT_S,
) -> None:
    ctx.obj = CliConfig(url=url, api_key=api_key or None, timeout_s=timeout)


app.command()(system.status)
app.command()(training.estimate)
app.command()(training.train)
app.command()(playground.generate)
app.command()(playground.chat)
app.add_typer(datasets.app, name="datasets")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
