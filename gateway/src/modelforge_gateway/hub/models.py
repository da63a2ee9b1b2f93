"""Request and response bodies of the Hub push and the merge."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from modelforge_gateway.common.model_records import ModelDetails
from modelforge_gateway.common.paths import HUB_REPO_NAME, HUB_REPO_NAME_MAX_LENGTH


class HubPushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=300, description="Numeric id or model_id")
    repo_name: str = Field(
        max_length=HUB_REPO_NAME_MAX_LENGTH, pattern=HUB_REPO_NAME, description='"name" or "namespace/name"'
    )
    private: bool = False
    # Push the adapter merged into its base (standalone weights) instead of the adapter alone.
    merge: bool = False
    commit_message: str = Field(default="", max_length=500)


class HubPushResponse(BaseModel):
    success: bool = True
    message: str
    repo_url: str
    repo_id: str
    commit_url: str


class MergeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Name of the new registered model; default "<name>-merged".
    name: str | None = Field(default=None, min_length=1, max_length=200)


class MergedModelResponse(ModelDetails):
    merged_from: str
