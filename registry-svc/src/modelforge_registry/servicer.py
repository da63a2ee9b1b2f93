"""RegistryService gRPC adapter: converts messages and calls the domain stores in worker threads.
Domain errors become status codes in the shared interceptor."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

import grpc

from modelforge.v1 import registry_pb2, registry_pb2_grpc
from modelforge_common.errors import FieldViolation, InvalidArgument
from modelforge_registry import convert
from modelforge_registry.datasets import DatasetStore
from modelforge_registry.jobs import JobStore
from modelforge_registry.models import ModelCatalog
from modelforge_registry.sessions import SessionStore

# Well under gRPC's default 4 MiB message cap.
READ_CHUNK_BYTES = 1024 * 1024


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    def __init__(self, models: ModelCatalog, datasets: DatasetStore, sessions: SessionStore, jobs: JobStore) -> None:
        self.models = models
        self.datasets = datasets
        self.sessions = sessions
        self.jobs = jobs

    async def RegisterModel(  # noqa: N802 - gRPC method name
        self,
        request: registry_pb2.RegisterModelRequest,
        context: grpc.aio.ServicerContext[registry_pb2.RegisterModelRequest, registry_pb2.RegisterModelResponse],
    ) -> registry_pb2.RegisterModelResponse:
        model = await asyncio.to_thread(self.models.register, convert.new_model_of(request.model))
        return registry_pb2.RegisterModelResponse(model=convert.model_pb(model))

    async def GetModel(  # noqa: N802
        self,
        request: registry_pb2.GetModelRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetModelRequest, registry_pb2.GetModelResponse],
    ) -> registry_pb2.GetModelResponse:
        model = await asyncio.to_thread(self.models.get, request.id)
        return registry_pb2.GetModelResponse(model=convert.model_pb(model))

    async def ListModels(  # noqa: N802
        self,
        request: registry_pb2.ListModelsRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ListModelsRequest, registry_pb2.ListModelsResponse],
    ) -> registry_pb2.ListModelsResponse:
        page = await asyncio.to_thread(self.models.search, convert.model_filter_of(request))
        return registry_pb2.ListModelsResponse(models=[convert.model_pb(m) for m in page.models], total=page.total)

    async def DeleteModel(  # noqa: N802
        self,
        request: registry_pb2.DeleteModelRequest,
        context: grpc.aio.ServicerContext[registry_pb2.DeleteModelRequest, registry_pb2.DeleteModelResponse],
    ) -> registry_pb2.DeleteModelResponse:
        model = await asyncio.to_thread(self.models.delete, request.id)
        return registry_pb2.DeleteModelResponse(model=convert.model_pb(model))

    async def DiscardModelFolder(  # noqa: N802
        self,
        request: registry_pb2.DiscardModelFolderRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.DiscardModelFolderRequest, registry_pb2.DiscardModelFolderResponse
        ],
    ) -> registry_pb2.DiscardModelFolderResponse:
        removed = await asyncio.to_thread(self.models.discard_unregistered, request.path)
        return registry_pb2.DiscardModelFolderResponse(removed=removed)

    async def UploadDataset(  # noqa: N802
        self,
        request_iterator: AsyncIterator[registry_pb2.UploadDatasetRequest],
        context: grpc.aio.ServicerContext[registry_pb2.UploadDatasetRequest, registry_pb2.UploadDatasetResponse],
    ) -> registry_pb2.UploadDatasetResponse:
        first = await anext(request_iterator, None)
        if first is None or first.WhichOneof("part") != "filename":
            raise InvalidArgument(
                "The first upload message must carry the filename",
                [FieldViolation("file", "send the filename before any content")],
            )

        # Optional options right after the filename; the first chunk may come in their place.
        second = await anext(request_iterator, None)
        mapping: dict[str, str] = {}
        if second is not None and second.WhichOneof("part") == "options":
            mapping = dict(second.options.column_mapping)
            second = None

        async def chunks() -> AsyncIterable[bytes]:
            message = second if second is not None else await anext(request_iterator, None)
            while message is not None:
                kind = message.WhichOneof("part")
                if kind == "filename":
                    raise InvalidArgument(
                        "Only the first upload message may carry a filename",
                        [FieldViolation("file", "send the filename once, first")],
                    )
                if kind == "options":
                    raise InvalidArgument(
                        "Upload options come right after the filename",
                        [FieldViolation("column_mapping", "send the options once, before any content")],
                    )
                yield message.chunk
                message = await anext(request_iterator, None)

        dataset = await self.datasets.upload(first.filename, chunks(), mapping)
        return registry_pb2.UploadDatasetResponse(dataset=convert.dataset_pb(dataset))

    async def RegisterHubDataset(  # noqa: N802
        self,
        request: registry_pb2.RegisterHubDatasetRequest,
        context: grpc.aio.ServicerContext[
            registry_pb2.RegisterHubDatasetRequest, registry_pb2.RegisterHubDatasetResponse
        ],
    ) -> registry_pb2.RegisterHubDatasetResponse:
        dataset = await asyncio.to_thread(
            self.datasets.register_hub,
            request.repo_id,
            request.config,
            request.split,
            request.revision,
            dict(request.column_mapping),
        )
        return registry_pb2.RegisterHubDatasetResponse(dataset=convert.dataset_pb(dataset))

    async def ListDatasets(  # noqa: N802
        self,
        request: registry_pb2.ListDatasetsRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ListDatasetsRequest, registry_pb2.ListDatasetsResponse],
    ) -> registry_pb2.ListDatasetsResponse:
        datasets = await asyncio.to_thread(self.datasets.list)
        return registry_pb2.ListDatasetsResponse(datasets=[convert.dataset_pb(d) for d in datasets])

    async def GetDataset(  # noqa: N802
        self,
        request: registry_pb2.GetDatasetRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetDatasetRequest, registry_pb2.GetDatasetResponse],
    ) -> registry_pb2.GetDatasetResponse:
        dataset = await asyncio.to_thread(self.datasets.get, request.name)
        return registry_pb2.GetDatasetResponse(dataset=convert.dataset_pb(dataset))

    async def ReadDataset(  # noqa: N802
        self,
        request: registry_pb2.ReadDatasetRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ReadDatasetRequest, registry_pb2.ReadDatasetResponse],
    ) -> AsyncIterator[registry_pb2.ReadDatasetResponse]:
        path = await asyncio.to_thread(self.datasets.uploaded_path, request.name)
        with path.open("rb") as handle:
            while chunk := await asyncio.to_thread(handle.read, READ_CHUNK_BYTES):
                yield registry_pb2.ReadDatasetResponse(chunk=chunk)

    async def DeleteDataset(  # noqa: N802
        self,
        request: registry_pb2.DeleteDatasetRequest,
        context: grpc.aio.ServicerContext[registry_pb2.DeleteDatasetRequest, registry_pb2.DeleteDatasetResponse],
    ) -> registry_pb2.DeleteDatasetResponse:
        dataset = await asyncio.to_thread(self.datasets.delete, request.name)
        return registry_pb2.DeleteDatasetResponse(dataset=convert.dataset_pb(dataset))

    async def GetSession(  # noqa: N802
        self,
        request: registry_pb2.GetSessionRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetSessionRequest, registry_pb2.GetSessionResponse],
    ) -> registry_pb2.GetSessionResponse:
        session = await asyncio.to_thread(self.sessions.get, request.session_id)
        return registry_pb2.GetSessionResponse(session=session)

    async def UpdateSession(  # noqa: N802
        self,
        request: registry_pb2.UpdateSessionRequest,
        context: grpc.aio.ServicerContext[registry_pb2.UpdateSessionRequest, registry_pb2.UpdateSessionResponse],
    ) -> registry_pb2.UpdateSessionResponse:
        session = await asyncio.to_thread(self.sessions.update, request)
        return registry_pb2.UpdateSessionResponse(session=session)

    async def CreateJob(  # noqa: N802
        self,
        request: registry_pb2.CreateJobRequest,
        context: grpc.aio.ServicerContext[registry_pb2.CreateJobRequest, registry_pb2.CreateJobResponse],
    ) -> registry_pb2.CreateJobResponse:
        job, created = await asyncio.to_thread(self.jobs.create, request.job)
        return registry_pb2.CreateJobResponse(job=job, created=created)

    async def GetJob(  # noqa: N802
        self,
        request: registry_pb2.GetJobRequest,
        context: grpc.aio.ServicerContext[registry_pb2.GetJobRequest, registry_pb2.GetJobResponse],
    ) -> registry_pb2.GetJobResponse:
        job = await asyncio.to_thread(self.jobs.get, request.job_id)
        return registry_pb2.GetJobResponse(job=job)

    async def ListJobs(  # noqa: N802
        self,
        request: registry_pb2.ListJobsRequest,
        context: grpc.aio.ServicerContext[registry_pb2.ListJobsRequest, registry_pb2.ListJobsResponse],
    ) -> registry_pb2.ListJobsResponse:
        page = await asyncio.to_thread(
            self.jobs.list,
            list(request.statuses),
            request.limit,
            request.offset,
            in_progress_first=request.in_progress_first,
        )
        return registry_pb2.ListJobsResponse(jobs=page.jobs, total=page.total)

    async def UpdateJob(  # noqa: N802
        self,
        request: registry_pb2.UpdateJobRequest,
        context: grpc.aio.ServicerContext[registry_pb2.UpdateJobRequest, registry_pb2.UpdateJobResponse],
    ) -> registry_pb2.UpdateJobResponse:
        job = await asyncio.to_thread(
            self.jobs.update,
            request.job_id,
            request.job,
            list(request.update_mask.paths),
            list(request.expected_statuses),
        )
        return registry_pb2.UpdateJobResponse(job=job)
