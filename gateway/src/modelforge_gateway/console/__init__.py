"""The web console: static files (plain HTML, JavaScript modules, CSS) served by the gateway.

`GET /` answers the single page; `GET /console/<file>` its assets. The page speaks only the public
REST and WebSocket API, like any other client. Nothing is fetched from elsewhere at run time: the
Content-Security-Policy below lets the browser load and connect to this origin only.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from modelforge_gateway.errors import ApiError

router = APIRouter(tags=["console"], include_in_schema=False)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Same origin only; 'self' covers ws:/wss: to this host in current browsers, listed for older ones.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}


def static_file(relative: str) -> Path:
    """The asset at `relative` inside STATIC_DIR; 404 for anything else (.., absolute, unknown)."""
    candidate = (STATIC_DIR / relative).resolve()
    if not candidate.is_relative_to(STATIC_DIR) or not candidate.is_file() or candidate.suffix not in MEDIA_TYPES:
        raise ApiError(404, f"Console file {relative} not found")
    return candidate


def _serve(path: Path) -> FileResponse:
    # no-cache: the browser revalidates (cheap ETag check), so an upgraded gateway serves new assets.
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=HEADERS | {"Cache-Control": "no-cache"})


@router.get("/")
async def index() -> FileResponse:
    return _serve(static_file("index.html"))


@router.get("/console/{asset:path}")
async def asset(asset: str) -> FileResponse:
    return _serve(static_file(asset))
