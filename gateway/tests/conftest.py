"""Fixtures: the fake services (one set per session, reset per test) and the gateway app wired
to them through its real lifespan (real channels, real gRPC -> HTTP mapping)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

sys.path.insert(0, str(Path(__file__).parent))

from gateway_fakes import FakeServices, running_client, settings_for

from modelforge_gateway.settings import GatewaySettings


@pytest.fixture(scope="session")
def services() -> Iterator[FakeServices]:
    running = FakeServices()
    running.start()
    yield running
    running.stop()


@pytest.fixture
def fakes(services: FakeServices) -> FakeServices:
    services.reset()
    return services


@pytest.fixture
def settings(fakes: FakeServices) -> GatewaySettings:
    return settings_for(fakes)


@pytest.fixture
async def app_client(settings: GatewaySettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with running_client(settings) as pair:
        yield pair


@pytest.fixture
def client(app_client: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]
