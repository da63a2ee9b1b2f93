"""create_app(settings): the FastAPI application. The lifespan opens one gRPC channel per service
and starts the NATS training-event feed (in the background: REST works while NATS is down)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from modelforge.v1 import trainer_pb2
from modelforge_common.status import status_word
from modelforge_common.tracing import TracingASGIMiddleware
from modelforge_gateway import console, metrics
from modelforge_gateway.auth import ApiKeyMiddleware, ApiKeys, BodyLimitMiddleware
from modelforge_gateway.clients import Clients
from modelforge_gateway.compare import routes as compare
from modelforge_gateway.datasets import routes as datasets
from modelforge_gateway.errors import UPLOAD_PATHS, install_error_handlers
from modelforge_gateway.eventhub import EventHub, TrainingEventFeed
from modelforge_gateway.events import routes as events
from modelforge_gateway.finetune import routes as finetune
from modelforge_gateway.hub import routes as hub
from modelforge_gateway.jobs import routes as jobs
from modelforge_gateway.metrics import MetricsMiddleware
from modelforge_gateway.middleware import (
    CachedReadsMiddleware,
    InvalidateOnWriteMiddleware,
    RequestContextMiddleware,
)
from modelforge_gateway.models import routes as models
from modelforge_gateway.openai.routes import router as openai_router
from modelforge_gateway.openai_errors import install_openai_error_handlers
from modelforge_gateway.openapi import honest_openapi
from modelforge_gateway.playground import routes as playground
from modelforge_gateway.readcache import (
    ModelListings,
    ModelLookups,
    TrainingStatusView,
    bare_listing_key,
    listing_key,
)
from modelforge_gateway.settings import GatewaySettings
from modelforge_gateway.system import routes as system
from modelforge_gateway.training import routes as training
from modelforge_gateway.upstream.models import ServedModel

MULTIPART_OVERHEAD_BYTES = 64 * 1024
# POSTs that change nothing: generating text invalidates no read cache (under load it would make
# every status and listing read wait for a fresh upstream answer).
READ_ONLY_POSTS = frozenset(
    {
        "/api/playground/generate",
        "/api/playground/new",
        "/api/playground/stream",
        "/v1/chat/completions",
        "/v1/completions",
    }
)


# The routers in the order of the old routes package: the OpenAPI document's order.
DOCUMENT_ORDER: tuple[APIRouter, ...] = (
    system.router,
    datasets.router,
    training.router,
    jobs.router,
    events.job_events_router,
    finetune.router,
    models.router,
    compare.router,
    hub.router,
    playground.router,
    events.router,
)
# Matched first: the playground's generate and stream, and the model reads.
HOT_ROUTERS: tuple[APIRouter, ...] = (playground.router, models.router)


def document_order(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """The app's routes with the routers of DOCUMENT_ORDER in that order, where the first of them is
    (they are included one after the other); every other route keeps its place."""
    positions = {id(router): index for index, router in enumerate(DOCUMENT_ORDER)}

    def documented(route: BaseRoute) -> int | None:
        return positions.get(id(getattr(route, "original_router", None)))

    block = next((i for i, route in enumerate(routes) if documented(route) is not None), 0)

    def key(indexed: tuple[int, BaseRoute]) -> tuple[int, int]:
        index, route = indexed
        position = documented(route)
        return (index, 0) if position is None else (block, position)

    return [route for _, route in sorted(enumerate(routes), key=key)]


def _operation_id(route: APIRoute) -> str:
    """Stable OpenAPI operation ids (clean generated-client names)."""
    tag = str(route.tags[0]).split(" ")[0] if route.tags else "api"
    return f"{tag}-{route.name}"


def _get_route(router: APIRouter, path: str) -> APIRoute:
    """The GET route of `path` (requests answered before routing are labelled with it)."""
    return next(r for r in router.routes if isinstance(r, APIRoute) and r.path == path and "GET" in (r.methods or ()))


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()
    # Per-replica read caches (readcache.py), kept current by the event feed and this replica's writes.
    model_listings = ModelListings(settings.models_cache_s)
    status_view = TrainingStatusView(settings.status_cache_s, on_job_ended=model_listings.invalidate)
    # Playground lookups: not part of invalidate_reads (every POST, generate included, calls it);
    # the routes that delete a model invalidate them.
    model_lookups: ModelLookups[ServedModel] = ModelLookups(settings.models_cache_s)

    def note_trainer_status(reply: trainer_pb2.GetTrainingStatusResponse) -> None:
        if reply.has_job:
            status_view.note_job(reply.job.job_id, status_word(reply.job.status))

    def invalidate_reads() -> None:
        status_view.invalidate()
        model_listings.invalidate()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.clients = Clients.open(settings, on_trainer_status=note_trainer_status)
        invalidate_reads()  # nothing cached on another event loop (a test's earlier lifespan) is reused
        model_lookups.invalidate()
        hub = EventHub(queue_size=settings.ws_queue_size)
        feed = TrainingEventFeed(
            settings.nats_url, hub, check_s=settings.nats_check_s, observers=(status_view, model_listings)
        )
        app.state.event_hub = hub
        app.state.event_feed = feed
        feed.start()
        try:
            yield
        finally:
            await feed.close()
            await app.state.clients.close(grace_s=1.0)

    app = FastAPI(
        title="ModelForge",
        version="v2",
        description="Fine-tune, manage and try language models. REST and WebSocket front of the ModelForge services.",
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
    )
    app.state.settings = settings
    app.state.status_view = status_view
    app.state.model_listings = model_listings
    app.state.model_lookups = model_lookups
    app.openapi = lambda: honest_openapi(app, document_order(app.routes))  # type: ignore[method-assign]
    install_error_handlers(app)
    install_openai_error_handlers(app)  # /v1 answers errors in OpenAI's shape
    # Middleware added later wraps the earlier: request id (outermost) -> tracing -> metrics -> CORS -> API key
    # -> body cap -> read-cache invalidation -> cached reads.
    app.add_middleware(
        CachedReadsMiddleware,
        answers={
            "/api/training_status": (
                lambda: status_view.cached_body(""),
                _get_route(training.router, "/api/training_status"),
            ),
            "/api/models": (lambda: model_listings.peek(listing_key()), _get_route(models.router, "/api/models")),
            "/api/models/": (
                lambda: model_listings.peek(bare_listing_key()),
                _get_route(models.router, "/api/models/"),
            ),
        },
    )
    app.add_middleware(InvalidateOnWriteMiddleware, invalidate=invalidate_reads, read_only=READ_ONLY_POSTS)
    app.add_middleware(
        BodyLimitMiddleware,
        # Multipart framing adds a little to the file itself.
        limit_bytes=settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES,
        paths=UPLOAD_PATHS,
    )
    app.add_middleware(ApiKeyMiddleware, keys=ApiKeys.parse(settings.api_keys.get_secret_value()))
    origins = settings.allowed_origins()
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["x-request-id"],
            allow_credentials=True,
        )
    # Counts every answer, refusals by the key check and the body cap included.
    app.add_middleware(MetricsMiddleware)
    # A span per request with its request id, parent of its gRPC calls (a pass-through unless
    # OTEL_EXPORTER_OTLP_ENDPOINT turned tracing on).
    app.add_middleware(TracingASGIMiddleware)
    # Added last, so it is outermost: every answer (CORS preflights and errors included) gets an id.
    app.add_middleware(RequestContextMiddleware)
    # The hot requests' routers first: FastAPI tries routers, and their routes, in turn, and matching
    # the ~45 routes ahead of the playground's was about a fifth of a stream request's CPU in the
    # gateway (bench/ANALYSIS.md, Serving). No path of theirs is one a router they jump would take
    # (test_app.test_the_hot_routers_take_no_path_of_the_routers_they_precede); the document keeps
    # the old order (document_order).
    for router in (*HOT_ROUTERS, *(r for r in DOCUMENT_ORDER if r not in HOT_ROUTERS)):
        app.include_router(router)
    app.include_router(metrics.router)
    app.include_router(openai_router)
    app.include_router(console.router)
    return app
