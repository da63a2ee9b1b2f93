"""Response bodies of the system endpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class HealthResponse(BaseModel):
    status: Literal["healthy"] = "healthy"
    version: str = "v2"


class InfoResponse(BaseModel):
    providers: list[str]
    strategies: list[str]
    tasks: list[str]
    version: str = "v2"
