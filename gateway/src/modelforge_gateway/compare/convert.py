"""Model records -> the comparison: one row per setting, the curves and metrics of each model."""

from __future__ import annotations

from typing import Any

from modelforge_common.catalog import TRAINING_SETTINGS
from modelforge_gateway.compare.models import ComparedModel, ComparedSetting, ComparisonResponse, CurvePoint

# Rows before the training settings: what the run was made of.
RUN_SETTINGS = ("base_model", "task", "strategy", "provider", "dataset", "dataset_sha256", "adapter_type")


def _settings_of(details: dict[str, Any], lineage: dict[str, Any] | None) -> dict[str, Any]:
    """The values a model was trained with: its lineage's when recorded, else its stored config."""
    config = dict(details.get("config") or {})
    if lineage is not None:
        config.update(lineage.get("config") or {})
    found: dict[str, Any] = {
        "base_model": details.get("base_model"),
        "task": details.get("task"),
        "strategy": details.get("strategy"),
        "provider": details.get("provider"),
        "dataset": (lineage or {}).get("dataset", {}).get("filename") or config.get("dataset"),
        "dataset_sha256": (lineage or {}).get("dataset", {}).get("sha256") or None,
        "adapter_type": details.get("adapter_type"),
    }
    for name in TRAINING_SETTINGS:
        found[name] = config.get(name)
    return found


def _same(values: list[Any]) -> bool:
    def key(value: Any) -> Any:
        # 2 and 2.0 are one setting (JSON numbers through a protobuf Struct come back as floats).
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    first = key(values[0])
    return all(key(value) == first for value in values[1:])


def comparison(models: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> ComparisonResponse:
    """The comparison of models given as (model_details, model_lineage) pairs."""
    compared = []
    settings_per_model = []
    for details, lineage in models:
        curve = [CurvePoint(**point) for point in (lineage or {}).get("loss_curve", [])]
        compared.append(
            ComparedModel(
                id=details["id"],
                model_id=details["model_id"],
                name=details["name"],
                base_model=details["base_model"],
                # The job's final status, as its lineage recorded it ("" for a model not trained here).
                status=((lineage or {}).get("job") or {}).get("status") or "",
                created_at=details.get("created_at"),
                metrics=details.get("metrics") or {},
                loss_curve=curve,
                tracking_url=(details.get("config") or {}).get("tracking_url") or None,
            )
        )
        settings_per_model.append(_settings_of(details, lineage))
    rows = []
    for name in (*RUN_SETTINGS, *TRAINING_SETTINGS):
        values = [settings.get(name) for settings in settings_per_model]
        rows.append(ComparedSetting(name=name, values=values, differs=not _same(values)))
    return ComparisonResponse(models=compared, settings=rows, differing=[row.name for row in rows if row.differs])
