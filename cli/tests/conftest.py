"""A small fake gateway for the CLI tests: the documented endpoints with the documented shapes,
a scripted /ws/training that can drop a connection mid-stream, and an SSE /api/playground/stream.
Served by uvicorn on a free loopback port in a background thread, once per test session; each test
gets it reset."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Query, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.websockets import WebSocketDisconnect
from typer.testing import CliRunner

from modelforge_cli.main import app as cli_app
from modelforge_common.ports import free_port

GIB = 1024**3


@dataclass
class JobScript:
    """What /ws/training plays for one job.

    Connection 1 sends the current status (events[0]) and then events from seq 1 (so seq 1 arrives
    twice), and is dropped with close code 1011 right after seq `drop_after`. The job goes on while
    the client is away: the next connection's current status is two events further. Then the rest
    is sent from `since` (honour_since), from seq 1 (replay_all), or only what follows the current
    status (neither: what a server without replay does)."""

    events: list[dict[str, Any]]
    drop_after: int | None = None
    honour_since: bool = True
    replay_all: bool = False
    connections: list[dict[str, str]] = field(default_factory=list)


def job_events(job_id: str, steps: int, outcome: str = "completed") -> list[dict[str, Any]]:
    """A scripted job: running status, `steps` progress events with a log in the middle, a terminal one."""
    events: list[dict[str, Any]] = [
        {
            "type": "status",
            "status": "running",
            "progress": 0.0,
            "current_step": 0,
            "total_steps": steps,
            "current_epoch": 0,
            "total_epochs": 2,
            "message": "training started",
        }
    ]
    for step in range(1, steps + 1):
        events.append(
            {
                "type": "progress",
                "status": "running",
                "progress": round(100 * step / steps, 2),
                "current_step": step,
                "total_steps": steps,
                "current_epoch": 1 + (step > steps // 2),
                "total_epochs": 2,
                "loss": round(2.0 / step, 4),
                "learning_rate": 2e-4,
            }
        )
        if step == steps // 2:
            events.append({"type": "log", "status": "running", "message": "epoch 1 done"})
    if outcome == "completed":
        events.append(
            {
                "type": "status",
                "status": "completed",
                "progress": 100.0,
                "current_step": steps,
                "total_steps": steps,
                "model_id": f"model_{job_id}",
                "message": "Training completed",
                "metrics": {"final_loss": 0.25, "perplexity": 1.28},
            }
        )
    else:
        events.append(
            {
                "type": "status",
                "status": outcome,
                "progress": 40.0,
                "current_step": steps,
                "total_steps": steps,
                "error": "CUDA out of memory",
                "message": "Training failed",
            }
        )
    for seq, event in enumerate(events, start=1):
        event.update(job_id=job_id, seq=seq, timestamp=f"2026-11-23T10:00:{seq:02d}Z")
    return events


MODEL = {
    "id": 1,
    "model_id": "model_20261123_100000",
    "name": "tiny-llama-sft",
    "base_model": "tiny-llama",
    "task": "text-generation",
    "strategy": "sft",
    "provider": "huggingface",
    "created_at": "2026-11-23T10:00:00Z",
    "size_mb": 1.5,
    "path": "/data/models/model_20261123_100000",
}


class FakeGateway:
    def __init__(self) -> None:
        self.url = ""
        self.reset()

    def reset(self) -> None:
        self.jobs: dict[str, JobScript] = {}
        self.has_jobs_api = False
        self.cancelled: list[str] = []
        self.has_stream = True
        self.datasets: list[dict[str, Any]] = []
        self.started: list[dict[str, Any]] = []
        # Bodies posted to /api/finetune/estimate_memory, in order.
        self.estimates: list[dict[str, Any]] = []
        self.authorization: list[str | None] = []
        self.stream_pieces = ["Machine", " learning", " is", " fun."]
        # Bodies posted to the playground (generate and stream), in order.
        self.playground_bodies: list[dict[str, Any]] = []

    def script(self, job_id: str, outcome: str = "completed", steps: int = 8, **kwargs: Any) -> JobScript:
        self.jobs[job_id] = JobScript(job_events(job_id, steps, outcome), **kwargs)
        return self.jobs[job_id]


def _problem(loc: list[Any], msg: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": "value_error"}


def _error(status: int, detail: Any) -> JSONResponse:
    return JSONResponse(
        {"detail": detail, "error": detail if isinstance(detail, str) else "Bad Request", "status_code": status},
        status_code=status,
    )


def build_app(state: FakeGateway) -> FastAPI:
    api = FastAPI()

    @api.middleware("http")
    async def remember_auth(request: Request, call_next: Any) -> Any:
        state.authorization.append(request.headers.get("authorization"))
        return await call_next(request)

    @api.exception_handler(RequestValidationError)
    async def validation_400(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, [_problem(list(e["loc"]), e["msg"]) for e in exc.errors()])

    @api.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, exc.detail)

    @api.get("/api/health")
    async def health() -> dict[str, Any]:
        return {"status": "healthy", "version": "v2"}

    @api.get("/api/finetune/hardware_specs")
    async def hardware_specs() -> dict[str, Any]:
        return {
            "gpu_name": "none",
            "gpu_memory_gb": 0.0,
            "ram_gb": 31.3,
            "disk_space_gb": 250.5,
            "cpu_cores": 8,
            "cuda_version": None,
            "torch_version": "2.13.0",
        }

    @api.post("/api/finetune/detect")
    async def detect(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "status_code": 200,
            "profile": "low_end",
            "task": body["task"],
            "gpu_name": "none",
            "model_recommendation": "tiny-llama",
            "possible_options": ["tiny-llama"],
        }

    @api.get("/api/training_status")
    async def training_status(job_id: str = "") -> dict[str, Any]:
        if job_id and job_id not in state.jobs:
            raise HTTPException(404, f"Training job {job_id} not found")
        current = job_id or next(iter(state.jobs), "")
        if not current:
            return {"status": "idle", "progress": 0.0, "job_id": None, "message": "No training in progress"}
        last = state.jobs[current].events[-1]
        return {
            "status": last["status"],
            "progress": last["progress"],
            "current_step": last["current_step"],
            "total_steps": last["total_steps"],
            "job_id": current,
            "message": last.get("message"),
        }

    @api.get("/api/jobs")
    async def jobs() -> dict[str, Any]:
        if not state.has_jobs_api:
            raise HTTPException(404, "Not Found")  # what a gateway without the route answers
        return {
            "jobs": [
                {
                    "job_id": job_id,
                    "status": script.events[-1]["status"],
                    "progress": 100.0,
                    "config": {"model_name": "tiny-llama"},
                }
                for job_id, script in state.jobs.items()
            ]
        }

    def job_status(job_id: str) -> str:
        """The scripted job's last status; 404 as the real gateway answers (no route, or no job)."""
        if not state.has_jobs_api:
            raise HTTPException(404, "Not Found")
        if job_id not in state.jobs:
            raise HTTPException(404, f"Training job {job_id} not found")
        return str(state.jobs[job_id].events[-1]["status"])

    @api.get("/api/jobs/{job_id}")
    async def job(job_id: str) -> dict[str, Any]:
        return {
            "job_id": job_id,
            "status": job_status(job_id),
            "config": {"model_name": "tiny-llama", "task": "text-generation"},
        }

    @api.post("/api/jobs/{job_id}/cancel")
    async def cancel_job(job_id: str) -> dict[str, Any]:
        status = job_status(job_id)
        if status in ("completed", "error", "stopped"):
            raise HTTPException(409, f"Training job {job_id} has already finished ({status})")
        state.cancelled.append(job_id)
        return {"job_id": job_id, "status": "stopped", "config": {"model_name": "tiny-llama"}}

    @api.post("/api/stop_training")
    async def stop_training(job_id: str = "") -> dict[str, Any]:
        if job_id and job_id not in state.jobs:
            raise HTTPException(404, f"Training job {job_id} not found")
        return {"status": "stopped", "message": "Training stopped successfully", "job_id": job_id}

    @api.post("/api/start_training")
    async def start_training(body: dict[str, Any]) -> dict[str, Any]:
        missing = [name for name in ("task", "model_name", "dataset") if not body.get(name)]
        if missing:
            raise RequestValidationError([{"loc": ("body", name), "msg": "Field required"} for name in missing])
        if body["dataset"] not in {d["filename"] for d in state.datasets} | {"chat.jsonl"}:
            raise HTTPException(404, f"Dataset {body['dataset']} not found")
        state.started.append(body)
        job_id = f"train_{len(state.started)}"
        outcome = "error" if body["model_name"] == "too-big" else "completed"
        if job_id not in state.jobs:
            state.script(job_id, outcome)
        return {"status": "started", "job_id": job_id, "message": "Training started successfully"}

    @api.post("/api/upload_dataset")
    async def upload_dataset(file: UploadFile) -> dict[str, Any]:
        lines = (await file.read()).decode().splitlines()
        problems = []
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
            except ValueError:
                problems.append(_problem(["file", f"line {number}"], "not valid JSON"))
                continue
            for name in ("prompt", "completion"):
                if not isinstance(row.get(name), str):
                    problems.append(_problem(["file", f"line {number}", name], "field required"))
        if problems:
            return _error(400, problems)  # type: ignore[return-value]
        entry = {
            "filename": file.filename,
            "num_examples": len(lines),
            "size_mb": 0.01,
            "uploaded_at": "2026-11-23T10:00:00Z",
        }
        state.datasets.append(entry)
        return {
            "status": "uploaded",
            "filename": file.filename,
            "num_examples": len(lines),
            "validation": {"valid": True, "errors": []},
        }

    @api.get("/api/datasets")
    async def datasets() -> dict[str, Any]:
        return {"datasets": state.datasets}

    @api.post("/api/finetune/estimate_memory")
    async def estimate_memory(body: dict[str, Any]) -> dict[str, Any]:
        if not body.get("model_name", "").startswith("tiny"):
            raise HTTPException(403, f"Model {body.get('model_name')} is not accessible.")
        parts = {
            "weights": 2 * GIB,
            "adapters": GIB // 8,
            "optimizer": GIB // 4,
            "gradients": GIB // 8,
            "activations": GIB,
            "overhead": GIB // 2,
        }
        parts["total"] = sum(parts.values())
        breakdown = {f"{name}_bytes": value for name, value in parts.items()}
        breakdown.update({f"{name}_gb": round(value / GIB, 3) for name, value in parts.items()})
        state.estimates.append(body)
        answer: dict[str, Any] = {
            "model_name": body["model_name"],
            "fits": True,
            "device": "cpu",
            "message": "",
            "total_bytes": parts["total"],
            "total_gb": round(parts["total"] / GIB, 3),
            "available_bytes": 24 * GIB,
            "available_gb": 24.0,
            "breakdown": breakdown,
        }
        world_size = body.get("processes_per_node", 1) * body.get("num_nodes", 1)
        if world_size > 1:  # as the gateway answers a job of several processes
            answer["world_size"] = world_size
            answer["settings"] = {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 1,
                                  "max_seq_length": 2048, "use_4bit": True, "gradient_checkpointing": True,
                                  "provider": "huggingface", "distributed": body.get("distributed", "ddp")}
        if body["model_name"] == "tiny-oversize":  # a job that does not fit: largest parts and proposals
            answer.update({
                "fits": False,
                "available_bytes": 3 * GIB,
                "available_gb": 3.0,
                "max_batch_size": 1,
                "largest_parts": [{"name": "weights", "bytes": 2 * GIB, "gb": 2.0, "detail": "bf16"},
                                  {"name": "activations", "bytes": GIB, "gb": 1.0, "detail": "ckpt"}],
                "proposals": [{
                    "settings": {"per_device_train_batch_size": 1, "gradient_accumulation_steps": 8,
                                 "max_seq_length": 1024, "use_4bit": False, "gradient_checkpointing": True,
                                 "provider": "huggingface"},
                    "changed": ["per_device_train_batch_size", "gradient_accumulation_steps"],
                    "description": "per_device_train_batch_size 1 with gradient_accumulation_steps 8",
                    "total_bytes": 3 * GIB - GIB // 4, "total_gb": 2.75,
                }],
            })
        return answer

    @api.get("/api/models")
    async def models() -> dict[str, Any]:
        return {"models": [MODEL]}

    @api.get("/api/models/{model_id}")
    async def model(model_id: str) -> dict[str, Any]:
        if model_id not in (str(MODEL["id"]), MODEL["model_id"]):
            raise HTTPException(404, f"Model {model_id} not found")
        return {**MODEL, "config": {"lora_r": 8}, "metrics": {"final_loss": 0.25}}

    @api.delete("/api/models/{model_id}")
    async def delete_model(model_id: str) -> dict[str, Any]:
        if model_id not in (str(MODEL["id"]), MODEL["model_id"]):
            raise HTTPException(404, f"Model {model_id} not found")
        return {"success": True, "status": "deleted", "message": f"Model {model_id} deleted successfully"}

    @api.post("/api/hub/push")
    async def push(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "success": True,
            "message": "Model pushed to HuggingFace Hub successfully",
            "repo_url": f"https://huggingface.co/{body['repo_name']}",
            "private": body["private"],
        }

    @api.post("/api/playground/generate")
    async def generate(body: dict[str, Any]) -> dict[str, Any]:
        state.playground_bodies.append(body)
        return {
            "generated_text": "".join(state.stream_pieces),
            "tokens_generated": len(state.stream_pieces),
            "generation_time_ms": 40,
            "model_id": body["model_id"],
        }

    @api.post("/api/playground/stream")
    async def stream(body: dict[str, Any]) -> StreamingResponse:
        state.playground_bodies.append(body)
        if not state.has_stream:
            raise HTTPException(404, "Not Found")
        if body["model_id"] not in (str(MODEL["id"]), MODEL["model_id"]):
            raise HTTPException(404, f"Model {body['model_id']} not found")

        async def events() -> Any:
            for piece in state.stream_pieces:
                yield f"data: {json.dumps({'text': piece, 'finished': False})}\n\n"
                await asyncio.sleep(0)
            final = {
                "text": "",
                "finished": True,
                "tokens_generated": len(state.stream_pieces),
                "generation_time_ms": 40,
            }
            yield f"data: {json.dumps(final)}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @api.websocket("/ws/training")
    async def training_ws(websocket: WebSocket, job_id: str = Query(""), since: str | None = None) -> None:
        await websocket.accept()
        script = state.jobs.get(job_id)
        if script is None:
            await websocket.close(1008, f"Training job {job_id} not found")
            return
        script.connections.append({"since": since or ""})
        events = script.events
        try:
            if len(script.connections) == 1:
                await websocket.send_json({**events[0], "type": "status"})  # the current status
                to_send = events
            else:
                current = min(len(events) - 1, (script.drop_after or 0) + 1)  # the job went on meanwhile
                await websocket.send_json({**events[current], "type": "status"})
                if script.honour_since and since is not None:
                    to_send = [e for e in events if e["seq"] > int(since)]
                elif script.replay_all:
                    to_send = events
                else:
                    to_send = events[current + 1 :]
            await websocket.send_json({"type": "heartbeat", "timestamp": "2026-11-23T10:00:00Z"})
            for event in to_send:
                await websocket.send_json(event)
                if len(script.connections) == 1 and event["seq"] == script.drop_after:
                    await websocket.close(1011)  # the connection drops mid-stream
                    return
                await asyncio.sleep(0.002)
            await websocket.close(1000)
        except WebSocketDisconnect:
            pass

    return api


def _serve(state: FakeGateway) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the fake gateway did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
        sock.close()


@pytest.fixture(scope="session")
def _served_gateway() -> Iterator[FakeGateway]:
    state = FakeGateway()
    for url in _serve(state):
        state.url = url
        yield state


@pytest.fixture
def gateway(_served_gateway: FakeGateway) -> FakeGateway:
    _served_gateway.reset()
    return _served_gateway


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture
def cli(gateway: FakeGateway) -> Any:
    """Runs `modelforge --url <fake> ARGS...`; asserts no traceback ever reaches the output."""
    runner = CliRunner(env={"COLUMNS": "200", "MODELFORGE_URL": None, "MODELFORGE_API_KEY": None})

    def run(*args: str, url: str | None = None, input: str | None = None) -> Outcome:
        result = runner.invoke(cli_app, ["--url", url or gateway.url, *args], input=input)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise AssertionError(
                f"unhandled {type(result.exception).__name__}: {result.exception}"
            ) from result.exception
        outcome = Outcome(result.exit_code, result.stdout, result.stderr)
        assert "Traceback" not in outcome.output
        return outcome

    return run


@pytest.fixture
def closed_url() -> str:
    """A loopback URL where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"
