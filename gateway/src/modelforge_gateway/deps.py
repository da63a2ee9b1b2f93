"""What route code receives by injection; tests swap any of these with app.dependency_overrides.

All async: FastAPI runs a plain `def` dependency in a worker thread, and those hops were about
half of a request's time in the gateway benchmark (bench/ANALYSIS.md). The stubs and call options
read app.state themselves rather than through another dependency: each level of dependencies
costs FastAPI tens of microseconds per request."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from modelforge_gateway.auth import OWNER_SCOPE_KEY
from modelforge_gateway.clients import (
    CallOptions,
    Clients,
    HardwareClient,
    InferenceClient,
    RegistryClient,
    TrainerClient,
)
from modelforge_gateway.errors import REQUEST_ID_SCOPE_KEY, invalid
from modelforge_gateway.eventhub import EventHub, TrainingEventFeed
from modelforge_gateway.readcache import ModelListings, ModelLookups, TrainingStatusView
from modelforge_gateway.settings import GatewaySettings
from modelforge_gateway.upstream.models import ServedModel

SESSION_HEADER = "x-session-id"
SESSION_COOKIE = "modelforge_session"
_VALID_SESSION_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")


async def get_settings(conn: HTTPConnection) -> GatewaySettings:
    settings: GatewaySettings = conn.app.state.settings
    return settings


async def get_clients(conn: HTTPConnection) -> Clients:
    clients: Clients = conn.app.state.clients
    return clients


async def get_trainer(conn: HTTPConnection) -> TrainerClient:
    clients: Clients = conn.app.state.clients
    return clients.trainer


async def get_registry(conn: HTTPConnection) -> RegistryClient:
    clients: Clients = conn.app.state.clients
    return clients.registry


async def get_hardware(conn: HTTPConnection) -> HardwareClient:
    clients: Clients = conn.app.state.clients
    return clients.hardware


async def get_inference(conn: HTTPConnection) -> InferenceClient:
    clients: Clients = conn.app.state.clients
    return clients.inference


async def get_event_hub(conn: HTTPConnection) -> EventHub:
    hub: EventHub = conn.app.state.event_hub
    return hub


async def get_event_feed(conn: HTTPConnection) -> TrainingEventFeed:
    feed: TrainingEventFeed = conn.app.state.event_feed
    return feed


async def get_status_view(conn: HTTPConnection) -> TrainingStatusView:
    view: TrainingStatusView = conn.app.state.status_view
    return view


async def get_model_listings(conn: HTTPConnection) -> ModelListings:
    listings: ModelListings = conn.app.state.model_listings
    return listings


async def get_model_lookups(conn: HTTPConnection) -> ModelLookups[ServedModel]:
    lookups: ModelLookups[ServedModel] = conn.app.state.model_lookups
    return lookups


async def get_owner(conn: HTTPConnection) -> str:
    """The name of the API key that authenticated the request ("" without auth)."""
    return str(conn.scope.get(OWNER_SCOPE_KEY, ""))


async def get_call_options(conn: HTTPConnection) -> CallOptions:
    return CallOptions(settings=conn.app.state.settings, request_id=str(conn.scope.get(REQUEST_ID_SCOPE_KEY, "")))


async def get_session_id(conn: HTTPConnection, settings: Annotated[GatewaySettings, Depends(get_settings)]) -> str:
    """The v1 wizard session: X-Session-Id header, else the modelforge_session cookie, else the default."""
    header = conn.headers.get(SESSION_HEADER)
    if header is not None:
        if not _VALID_SESSION_ID.match(header):
            raise invalid(["header", SESSION_HEADER], "must be 1-128 letters, digits, '.', '_' or '-'")
        return header
    cookie = conn.cookies.get(SESSION_COOKIE)
    if cookie and _VALID_SESSION_ID.match(cookie):
        return cookie
    return settings.default_session_id


SettingsDep = Annotated[GatewaySettings, Depends(get_settings)]
ClientsDep = Annotated[Clients, Depends(get_clients)]
TrainerStub = Annotated[TrainerClient, Depends(get_trainer)]
RegistryStub = Annotated[RegistryClient, Depends(get_registry)]
HardwareStub = Annotated[HardwareClient, Depends(get_hardware)]
InferenceStub = Annotated[InferenceClient, Depends(get_inference)]
Rpc = Annotated[CallOptions, Depends(get_call_options)]
SessionId = Annotated[str, Depends(get_session_id)]
EventHubDep = Annotated[EventHub, Depends(get_event_hub)]
EventFeedDep = Annotated[TrainingEventFeed, Depends(get_event_feed)]
Owner = Annotated[str, Depends(get_owner)]
StatusViewDep = Annotated[TrainingStatusView, Depends(get_status_view)]
ModelListingsDep = Annotated[ModelListings, Depends(get_model_listings)]
ModelLookupsDep = Annotated[ModelLookups[ServedModel], Depends(get_model_lookups)]
