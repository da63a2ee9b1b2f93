"""POST /api/models/{id}/merge against the fakes: the name is checked before the merge, and a
failed merge or registration has the registry remove the merged folder."""

from __future__ import annotations

import grpc
import httpx
import pytest
from gateway_fakes import FakeServices


async def test_merge_registers_the_merged_weights_under_the_given_name(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    response = await client.post("/api/models/1/merge", json={"name": "tiny-merged"})
    assert response.status_code == 201, response.text
    merged = response.json()
    assert (merged["name"], merged["adapter_type"], merged["merged_from"]) == (
        "tiny-merged", "full", "model_20240315_143021"
    )
    [merge] = fakes.inference.merges
    assert merge.model.model_id == "model_20240315_143021"
    assert merge.output_path.startswith("models/model_20240315_143021-merged-")
    assert merged["path"] == merge.output_path
    assert fakes.registry.discarded == []


async def test_a_second_merge_with_the_same_name_is_409_before_any_merge(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    assert (await client.post("/api/models/1/merge")).status_code == 201
    assert len(fakes.inference.merges) == 1
    again = await client.post("/api/models/1/merge")
    assert again.status_code == 409, again.text
    assert again.json()["detail"] == "Model name 'tiny-llama-1-merged' is already taken"
    # Refused before merging: no second merge, nothing written, nothing to discard.
    assert len(fakes.inference.merges) == 1
    assert fakes.registry.discarded == []
    named = await client.post("/api/models/2/merge", json={"name": "tiny-llama-1-merged"})
    assert named.status_code == 409 and len(fakes.inference.merges) == 1


async def test_merging_full_weights_is_409_without_a_merge(client: httpx.AsyncClient, fakes: FakeServices) -> None:
    merged = (await client.post("/api/models/1/merge", json={"name": "m"})).json()
    again = await client.post(f"/api/models/{merged['model_id']}/merge")
    assert again.status_code == 409
    assert "full weights" in again.json()["detail"]
    assert len(fakes.inference.merges) == 1


@pytest.mark.parametrize(
    ("code", "status"),
    [(grpc.StatusCode.RESOURCE_EXHAUSTED, 429), (grpc.StatusCode.INTERNAL, 500), (grpc.StatusCode.UNAVAILABLE, 503)],
)
async def test_a_failed_merge_has_its_folder_removed(
    client: httpx.AsyncClient, fakes: FakeServices, code: grpc.StatusCode, status: int
) -> None:
    fakes.inference.merge_fails_with = code
    response = await client.post("/api/models/1/merge", json={"name": "will-fail"})
    assert response.status_code == status, response.text
    [merge] = fakes.inference.merges
    assert fakes.registry.discarded == [merge.output_path]
    assert fakes.registry.folders == set()
    assert fakes.registry.registered == []


@pytest.mark.parametrize(
    ("code", "status"), [(grpc.StatusCode.ALREADY_EXISTS, 409), (grpc.StatusCode.UNAVAILABLE, 503)]
)
async def test_a_failed_registration_has_the_merged_folder_removed(
    client: httpx.AsyncClient, fakes: FakeServices, code: grpc.StatusCode, status: int
) -> None:
    fakes.registry.register_fails_with = code
    response = await client.post("/api/models/1/merge", json={"name": "lost-race"})
    assert response.status_code == status, response.text
    [merge] = fakes.inference.merges
    assert [m.path for m in fakes.registry.registered] == [merge.output_path]
    assert fakes.registry.discarded == [merge.output_path]
    assert fakes.registry.folders == set()
    assert all(m.name != "lost-race" for m in fakes.registry.models.values())


async def test_merge_of_an_unknown_model_is_404_and_a_bad_body_400(
    client: httpx.AsyncClient, fakes: FakeServices
) -> None:
    assert (await client.post("/api/models/nope/merge")).status_code == 404
    bad = await client.post("/api/models/1/merge", json={"name": ""})
    assert bad.status_code == 400 and bad.json()["detail"][0]["loc"] == ["body", "name"]
    unknown = await client.post("/api/models/1/merge", json={"nmae": "typo"})
    assert unknown.status_code == 400 and unknown.json()["detail"][0]["loc"] == ["body", "nmae"]
    assert fakes.inference.merges == []
