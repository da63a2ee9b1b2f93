"""Hub push and merge requests -> inference and registry messages (push, merge, register the merged
model, discard a failed merge's folder); the merged model's answer."""

from __future__ import annotations

from modelforge.v1 import inference_pb2, registry_pb2
from modelforge_gateway.common.model_records import details_fields
from modelforge_gateway.hub.models import HubPushRequest, HubPushResponse, MergedModelResponse
from modelforge_gateway.upstream.models import model_ref


def push_request(model: registry_pb2.Model, body: HubPushRequest) -> inference_pb2.PushToHubRequest:
    return inference_pb2.PushToHubRequest(
        model=model_ref(model),
        repo_name=body.repo_name,
        private=body.private,
        merge=body.merge,
        commit_message=body.commit_message,
    )


def push_answer(reply: inference_pb2.PushToHubResponse) -> HubPushResponse:
    return HubPushResponse(
        message="Model pushed to HuggingFace Hub successfully",
        repo_url=reply.repo_url,
        repo_id=reply.repo_id,
        commit_url=reply.commit_url,
    )


def merge_request(source: registry_pb2.Model, output_path: str) -> inference_pb2.MergeAdapterRequest:
    return inference_pb2.MergeAdapterRequest(model=model_ref(source), output_path=output_path)


def merged_record(
    source: registry_pb2.Model, name: str, merged: inference_pb2.MergeAdapterResponse
) -> registry_pb2.Model:
    """The merged model's registry row: the merged weights stand alone (adapter_type full loads
    from path); base_model keeps what they were fine-tuned from."""
    return registry_pb2.Model(
        name=name,
        base_model=source.base_model,
        task=source.task,
        strategy=source.strategy,
        provider=source.provider,
        path=merged.path,
        config=source.config,
        training_params=source.training_params,
        metrics=source.metrics,
        job_id=source.job_id,
        adapter_type="full",
        file_sha256=merged.file_sha256,
        size_mb=merged.size_bytes / (1024 * 1024),
    )


def merged_answer(model: registry_pb2.Model, source: registry_pb2.Model) -> MergedModelResponse:
    return MergedModelResponse(**details_fields(model), merged_from=source.model_id)


def register_request(record: registry_pb2.Model) -> registry_pb2.RegisterModelRequest:
    return registry_pb2.RegisterModelRequest(model=record)


def discard_request(path: str) -> registry_pb2.DiscardModelFolderRequest:
    return registry_pb2.DiscardModelFolderRequest(path=path)
