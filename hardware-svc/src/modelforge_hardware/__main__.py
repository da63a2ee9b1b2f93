"""python -m modelforge_hardware: settings -> logging -> probes, recommendations, Hub client -> serve."""

from __future__ import annotations

import asyncio
import logging

from huggingface_hub.utils.tqdm import disable_progress_bars

from modelforge.v1 import hardware_pb2, hardware_pb2_grpc
from modelforge_common.grpc_server import build_server, serve, service_name
from modelforge_common.logging import configure_logging
from modelforge_common.settings import port_of
from modelforge_hardware.model_source import ModelSource
from modelforge_hardware.probe import GpuProbe, NvmlGpuProbe, PsutilSystemProbe, SystemProbe
from modelforge_hardware.recommendations import Recommendations
from modelforge_hardware.recorded import RECORDED, FakeGpuProbe, FakeSystemProbe
from modelforge_hardware.service import HardwareService
from modelforge_hardware.servicer import HardwareServicer
from modelforge_hardware.settings import HardwareSettings

log = logging.getLogger("modelforge_hardware")


def build_service(settings: HardwareSettings) -> HardwareService:
    data_dir = settings.resolved_data_dir()
    gpu_probe: GpuProbe
    system_probe: SystemProbe
    if settings.fake_hardware:
        machine = RECORDED[settings.fake_hardware]
        log.warning("serving the recorded machine %r instead of this node's hardware", settings.fake_hardware)
        gpu_probe, system_probe = FakeGpuProbe(machine.gpus), FakeSystemProbe(machine.system)
    else:
        gpu_probe, system_probe = NvmlGpuProbe(), PsutilSystemProbe(data_dir)
    models = ModelSource(
        data_dir=data_dir,
        timeout_s=settings.hub_timeout_s,
        endpoint=settings.hub_endpoint,
        cache_dir=settings.hub_cache_dir,
    )
    return HardwareService(gpu_probe, system_probe, Recommendations.load(), models)


async def main() -> None:
    settings = HardwareSettings()
    configure_logging("hardware", settings.log_level, settings.log_json)
    disable_progress_bars()  # config.json downloads would draw tqdm bars into the JSON log stream
    name = service_name(hardware_pb2, "HardwareService")
    bind = f"{settings.bind_host}:{port_of(settings.hardware_addr)}"
    server, port, health = build_server(
        [(hardware_pb2_grpc.add_HardwareServiceServicer_to_server, HardwareServicer(build_service(settings)), name)],
        bind,
        reflection_enabled=settings.grpc_reflection,
        max_message_bytes=settings.grpc_max_message_bytes,
    )
    log.info("hardware-svc listening on %s (port %d)", bind, port)
    await serve(server, health, [name], settings.shutdown_grace_s)


if __name__ == "__main__":
    asyncio.run(main())
