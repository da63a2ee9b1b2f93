"""Path parameters and name patterns that more than one slice declares the same way."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from modelforge_common.catalog import TASKS

# A task in the path: the document lists the tasks; the route answers the documented message.
TaskPath = Annotated[str, Path(json_schema_extra={"enum": list(TASKS)})]

ModelIdPath = Path(min_length=1, max_length=300, description="Numeric id or model_id")


# A Hub repository id as the Hub accepts it: "name" or "namespace/name", letters and digits joined by
# single "-", "_" or "." (no "--" or "..", none at either end); 96 characters in all (the Hub allows
# 96 for the name alone).
_HUB_NAME_PART = r"[A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*"
HUB_REPO_NAME = rf"^(?:{_HUB_NAME_PART}/)?{_HUB_NAME_PART}$"
HUB_REPO_NAME_MAX_LENGTH = 96
