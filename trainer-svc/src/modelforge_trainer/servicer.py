"""TrainerService over gRPC: converts messages and calls the domain service, nothing else."""

from __future__ import annotations

import grpc

from modelforge.v1 import trainer_pb2, trainer_pb2_grpc
from modelforge_trainer.convert import STATUS_FROM_PB, job_to_pb
from modelforge_trainer.insight import inspect_dataset
from modelforge_trainer.service import TrainerService


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, service: TrainerService, stop_wait_s: float) -> None:
        self.service = service
        self.stop_wait_s = stop_wait_s

    async def StartTraining(  # noqa: N802 - gRPC method name
        self,
        request: trainer_pb2.StartTrainingRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.StartTrainingRequest, trainer_pb2.StartTrainingResponse],
    ) -> trainer_pb2.StartTrainingResponse:
        job = await self.service.start(request.config)
        return trainer_pb2.StartTrainingResponse(job=job_to_pb(job))

    async def GetTrainingStatus(  # noqa: N802 - gRPC method name
        self,
        request: trainer_pb2.GetTrainingStatusRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.GetTrainingStatusRequest, trainer_pb2.GetTrainingStatusResponse],
    ) -> trainer_pb2.GetTrainingStatusResponse:
        job = await self.service.lookup(request.job_id)
        if job is None:
            return trainer_pb2.GetTrainingStatusResponse(has_job=False)
        return trainer_pb2.GetTrainingStatusResponse(has_job=True, job=job_to_pb(job))

    async def StopTraining(  # noqa: N802 - gRPC method name
        self,
        request: trainer_pb2.StopTrainingRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.StopTrainingRequest, trainer_pb2.StopTrainingResponse],
    ) -> trainer_pb2.StopTrainingResponse:
        # Wait for the worker to finish stopping, but answer before the caller's deadline.
        remaining = context.time_remaining()
        wait_s = self.stop_wait_s if remaining is None else max(0.0, min(self.stop_wait_s, remaining - 0.5))
        job = await self.service.stop(request.job_id, wait_s)
        return trainer_pb2.StopTrainingResponse(job=job_to_pb(job))

    async def ResetTrainingStatus(  # noqa: N802 - gRPC method name
        self,
        request: trainer_pb2.ResetTrainingStatusRequest,
        context: grpc.aio.ServicerContext[
            trainer_pb2.ResetTrainingStatusRequest, trainer_pb2.ResetTrainingStatusResponse
        ],
    ) -> trainer_pb2.ResetTrainingStatusResponse:
        self.service.reset()
        return trainer_pb2.ResetTrainingStatusResponse()

    async def ListTrainingJobs(  # noqa: N802 - gRPC method name
        self,
        request: trainer_pb2.ListTrainingJobsRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.ListTrainingJobsRequest, trainer_pb2.ListTrainingJobsResponse],
    ) -> trainer_pb2.ListTrainingJobsResponse:
        statuses = [STATUS_FROM_PB[value] for value in request.statuses if value in STATUS_FROM_PB]
        jobs, total = await self.service.list_of_record(statuses, request.limit, request.offset)
        return trainer_pb2.ListTrainingJobsResponse(jobs=[job_to_pb(job) for job in jobs], total=total)

    async def SubmitTrainingJob(  # noqa: N802 - gRPC method name
        self,
        request: trainer_pb2.SubmitTrainingJobRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.SubmitTrainingJobRequest, trainer_pb2.SubmitTrainingJobResponse],
    ) -> trainer_pb2.SubmitTrainingJobResponse:
        job, created = await self.service.submit(
            request.config, idempotency_key=request.idempotency_key, owner=request.owner
        )
        return trainer_pb2.SubmitTrainingJobResponse(job=job_to_pb(job), created=created)

    async def InspectDataset(  # noqa: N802 - gRPC method name
        self,
        request: trainer_pb2.InspectDatasetRequest,
        context: grpc.aio.ServicerContext[trainer_pb2.InspectDatasetRequest, trainer_pb2.InspectDatasetResponse],
    ) -> trainer_pb2.InspectDatasetResponse:
        insight = await inspect_dataset(
            self.service.datasets, self.service.paths.data_dir, request.dataset, request.model_name,
            request.max_length, request.sample_size,
        )
        return trainer_pb2.InspectDatasetResponse(
            dataset=request.dataset,
            model_name=request.model_name,
            rows=insight.rows,
            max_length=insight.max_length,
            fields=[
                trainer_pb2.TokenLengthStats(
                    field=s.field, min=s.min, p50=s.p50, p95=s.p95, max=s.max, mean=s.mean, rows=s.rows
                )
                for s in insight.fields
            ],
            rows_over_max_length=insight.rows_over_max_length,
            duplicate_rows=insight.duplicate_rows,
            empty_fields=insight.empty_fields,
            samples=insight.samples,
            total_lengths=insight.total_lengths,
            chat_template=insight.chat_template,
        )
