"""The GPU check of issue 17 (owed: no GPU where it was written): the playground flow through the whole
platform with generation on a real vLLM server.

On a machine with an NVIDIA GPU and this repository installed (`make install`):

    python -m venv /opt/vllm && /opt/vllm/bin/pip install 'vllm==0.11.0'   # its own torch; keep it apart
    huggingface-cli download Qwen/Qwen2.5-0.5B-Instruct --local-dir /models/qwen2.5-0.5b   # any small chat model
    .venv/bin/python inference-svc/scripts/gpu_vllm_check.py --vllm /opt/vllm/bin/vllm --base /models/qwen2.5-0.5b

It starts `vllm serve BASE --enable-lora` with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, then a private
ModelForge stack (devkit) with MODELFORGE_VLLM_URL pointing at it; trains a few LoRA steps on BASE through
POST /api/start_training (the registered adapter is what vLLM loads at run time), and then, through the
gateway: /api/playground/generate with a prompt, /api/playground/stream, a chat with `messages`, a stop
string and a seeded sample. It checks that vLLM listed the adapter under its model_id afterwards (loaded
through /v1/load_lora_adapter), and prints one JSON summary; the exit status is 0 only if every check held.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from modelforge_common.testing import free_port
from modelforge_devkit.sample_data import text_generation_rows, write_jsonl
from modelforge_devkit.stack import Stack


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{url} not ready after {timeout_s:.0f}s")


def stack_env(work: Path, vllm_url: str, base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELFORGE_")}
    env.update({
        "MODELFORGE_DATA_DIR": str(work / "data"),
        "MODELFORGE_MODEL_ROOTS": f"{base.parent}:{work}",
        "MODELFORGE_RUN_DIR": str(work / "run"),
        "MODELFORGE_NATS_URL": f"nats://127.0.0.1:{free_port()}",
        "MODELFORGE_GATEWAY_PORT": str(free_port()),
        "MODELFORGE_VLLM_URL": vllm_url,
        "HF_HUB_OFFLINE": "1",
    })
    for name in ("trainer", "registry", "hardware", "inference"):
        env[f"MODELFORGE_{name.upper()}_ADDR"] = f"127.0.0.1:{free_port()}"
    return env


def train_adapter(http: httpx.Client, base: Path, dataset: Path) -> dict[str, Any]:
    with dataset.open("rb") as handle:
        uploaded = http.post("/api/upload_dataset", files={"file": (dataset.name, handle, "application/jsonl")})
    uploaded.raise_for_status()
    started = http.post("/api/start_training", json={
        "task": "text-generation", "model_name": str(base), "provider": "huggingface", "strategy": "sft",
        "dataset": uploaded.json()["filename"], "max_steps": 5, "lora_r": 8, "bf16": True,
    })
    started.raise_for_status()
    deadline = time.monotonic() + 1200
    while time.monotonic() < deadline:
        status = http.get("/api/training_status").json()
        if status["status"] not in ("training", "running", "queued"):
            break
        time.sleep(2)
    if status["status"] != "completed":
        raise RuntimeError(f"training ended {status['status']}: {status.get('error')}")
    latest = max(http.get("/api/models").json()["models"], key=lambda m: m["id"])
    return dict(http.get(f"/api/models/{latest['id']}").json())


def stream_text(http: httpx.Client, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    pieces: list[str] = []
    last: dict[str, Any] = {}
    with http.stream("POST", "/api/playground/stream", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event: error"):
                raise RuntimeError(f"stream failed: {response.read()!r}")
            if line.startswith("data: "):
                last = json.loads(line[len("data: "):])
                pieces.append(str(last.get("text", "")))
    return "".join(pieces), last


def check(vllm: str, base: Path, port: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mf-vllm-") as scratch:
        work = Path(scratch)
        server = subprocess.Popen(
            [vllm, "serve", str(base), "--enable-lora", "--max-lora-rank=64", "--max-loras=4", f"--port={port}",
             "--max-model-len=4096", "--gpu-memory-utilization=0.5"],
            env={**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"},
        )
        vllm_url = f"http://127.0.0.1:{port}"
        stack = Stack.from_environment(stack_env(work, vllm_url, base))
        try:
            wait_http(f"{vllm_url}/health", server, 900)
            stack.start()
            http = httpx.Client(base_url=stack.gateway_url, timeout=300)
            model = train_adapter(http, base, write_jsonl(text_generation_rows(40, seed=3), work / "chat.jsonl"))
            results["model_id"] = model["model_id"]
            greedy = {"model_id": model["id"], "prompt": "Where does the red fox live?", "max_new_tokens": 32,
                      "temperature": 0}
            whole = http.post("/api/playground/generate", json=greedy)
            whole.raise_for_status()
            results["generate"] = whole.json()
            streamed_text, last = stream_text(http, greedy)
            results["stream"] = {"text": streamed_text, "last": last}
            chat = {**greedy, "prompt": "", "messages": [
                {"role": "system", "content": "Answer in one short sentence."},
                {"role": "user", "content": "Hi!"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": "Where does the red fox live?"}]}
            chatted = http.post("/api/playground/generate", json=chat)
            chatted.raise_for_status()
            results["chat"] = chatted.json()
            stopped = http.post("/api/playground/generate", json={**greedy, "stop": ["."]}).json()
            results["stop"] = stopped
            seeded = {**greedy, "temperature": 0.9, "seed": 7}
            results["seeded_same"] = (http.post("/api/playground/generate", json=seeded).json()["generated_text"]
                                      == http.post("/api/playground/generate", json=seeded).json()["generated_text"])
            served = {m["id"] for m in httpx.get(f"{vllm_url}/v1/models", timeout=10).json()["data"]}
            results["vllm_models"] = sorted(served)
        finally:
            stack.stop()
            server.terminate()
            server.wait(60)
    results["checks"] = {
        "adapter loaded into vLLM by name": results.get("model_id") in results.get("vllm_models", []),
        "generate answered": bool(results.get("generate", {}).get("generated_text")),
        "stream joins to the whole answer (greedy)":
            results.get("stream", {}).get("text") == results.get("generate", {}).get("generated_text"),
        "finish_reason reported": results.get("generate", {}).get("finish_reason") in ("stop", "length"),
        "chat answered": bool(results.get("chat", {}).get("generated_text")),
        "stop string not returned": "." not in results.get("stop", {}).get("generated_text", "."),
        "seeded sampling repeats": bool(results.get("seeded_same")),
    }
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vllm", default="vllm", help="the vllm executable (its own environment)")
    parser.add_argument("--base", type=Path, required=True, help="a local folder of a small chat model")
    parser.add_argument("--port", type=int, default=free_port())
    args = parser.parse_args()
    results = check(args.vllm, args.base.resolve(), args.port)
    sys.stdout.write(json.dumps(results, indent=2, default=str) + "\n")
    return 0 if all(results["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
