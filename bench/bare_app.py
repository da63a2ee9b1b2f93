"""The load benchmark's baseline: a bare FastAPI app under uvicorn answering fixed JSON bodies.

`python -m bench.bare_app --port P --bodies FILE` serves, for each path in FILE (a JSON object of
path -> body, captured from the gateway), GET <path> with that body, through FastAPI's ordinary
dict -> JSONResponse path: what any FastAPI service pays per request, with nothing behind it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI


def _answer_with(body: Any) -> Any:
    async def answer() -> Any:
        return body

    return answer


def create_app(bodies: dict[str, Any]) -> FastAPI:
    app = FastAPI()
    for path, body in bodies.items():
        app.add_api_route(path, _answer_with(body), methods=["GET"])
    return app


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare_app")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bodies", type=Path, required=True)
    args = parser.parse_args(argv)
    app = create_app(json.loads(args.bodies.read_text()))
    # As the gateway runs uvicorn (one process, the same loop and HTTP implementation), minus its logs.
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
