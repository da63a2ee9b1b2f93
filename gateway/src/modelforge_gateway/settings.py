"""Gateway settings: where it listens, deadlines per kind of call, WebSocket fan-out limits."""

from __future__ import annotations

from pydantic import Field, SecretStr

from modelforge_common.settings import DEFAULT_PORTS, ServiceSettings


class GatewaySettings(ServiceSettings):
    gateway_port: int = DEFAULT_PORTS["gateway"]

    # Deadlines (seconds) of the gRPC calls the gateway makes, by kind of call.
    read_deadline_s: float = 5.0
    write_deadline_s: float = 30.0
    generate_deadline_s: float = 120.0
    # DescribeModel may ask the Hub, which is slow when it answers at all.
    hub_deadline_s: float = 30.0
    # Merging loads the whole base model; a push uploads it: minutes for billions of parameters.
    merge_deadline_s: float = 1800.0
    push_deadline_s: float = 1800.0
    readiness_deadline_s: float = 1.0
    # Playground and OpenAI streams travel as messages on one open GenerateStreams call to inference-svc
    # (upstream/generation_streams.py) rather than a GenerateStream call each; false: a call each. An
    # inference-svc from before GenerateStreams is served with a call each either way.
    inference_streams_multiplexed: bool = True

    # Uploads stream to the registry in chunks of this size; larger files are refused with 413.
    upload_chunk_bytes: int = 1024 * 1024
    max_upload_bytes: int = 2 * 1024 * 1024 * 1024

    # Events a WebSocket client may lag behind before it is dropped, and its idle heartbeat.
    ws_queue_size: int = 256
    ws_heartbeat_s: float = 15.0
    # Progress events are a few hundred bytes: compressing each one for every socket cost more CPU
    # than it saved (about a quarter of the per-socket send time, bench/ANALYSIS.md).
    ws_per_message_deflate: bool = False

    # How often the NATS feed checks that its JetStream consumer (and stream) still exist.
    nats_check_s: float = 2.0

    # Per-replica read caches (readcache.py). GET /api/training_status answers from the trainer's
    # last answer with the training events received since laid over it; that answer is at most
    # this old (seconds; MODELFORGE_STATUS_CACHE_S). GET /api/models listings, model details and
    # the playground's model lookups are at most MODELFORGE_MODELS_CACHE_S old. This replica's own writes and the
    # events (a job starting or ending, a model registered) invalidate them at once (the lookups: a
    # delete here); the bound is how late another replica's write, or a change NATS did not carry,
    # can show. 0 turns a cache off (one upstream call per read).
    status_cache_s: float = Field(default=1.0, ge=0, le=60)
    models_cache_s: float = Field(default=1.0, ge=0, le=60)

    # One log line per request (uvicorn's access log; MODELFORGE_ACCESS_LOG=true). Off by default:
    # each line cost about 0.1 ms of CPU through the JSON formatter and its secret redaction, more
    # than a cached answer's whole time (bench/ANALYSIS.md, Load); /metrics counts every request
    # by route and status, and errors are logged with their request id either way.
    access_log: bool = False

    # Seconds an idle client connection is kept open. Above the idle timeout of whatever proxy sits in
    # front (nginx and cloud load balancers reuse idle upstream connections for 60 s): a gateway that
    # closes first (uvicorn's default is 5 s) races the proxy's next request on that connection, which
    # then fails as a 502.
    keep_alive_s: int = Field(default=75, ge=1, le=3600)

    # Browser origins allowed to call the API from another origin (a separately served UI);
    # empty: no CORS headers. JSON list in the environment: MODELFORGE_CORS_ALLOW_ORIGINS='["http://localhost:3000"]'.
    cors_allow_origins: list[str] = []
    # The same as a comma-separated list: MODELFORGE_CORS_ORIGINS="http://localhost:3000,https://ui.example".
    cors_origins: str = ""

    # API keys; when set, every route but /api/health needs `Authorization: Bearer <key>` (see auth.py).
    # MODELFORGE_API_KEYS="alice:key1,ci:key2" (names are recorded as job owners) or plain "key1,key2".
    api_keys: SecretStr = SecretStr("")

    # Wizard session used when a request names none (X-Session-Id header or cookie).
    default_session_id: str = "default"

    def allowed_origins(self) -> list[str]:
        extra = [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]
        return [*self.cors_allow_origins, *extra]
