"""Two versions of a model side by side: what changed in parameters, metrics, signature, requirements and files."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from data_access.registry import RegistryConfig
from data_access.registry.reading import VersionDetail, version_detail

CHANGE_COLUMNS: tuple[str, ...] = ("section", "item", "old", "new", "change")


def _same(old: Any, new: Any) -> bool:
    if isinstance(old, float) and isinstance(new, float) and math.isnan(old) and math.isnan(new):
        return True
    return old == new


def diff_values(section: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows for every key added, removed or changed between two mappings (unchanged keys give no row)."""
    rows = []
    for key in sorted(set(old) | set(new)):
        if key not in new:
            rows.append({"section": section, "item": key, "old": old[key], "new": None, "change": "removed"})
        elif key not in old:
            rows.append({"section": section, "item": key, "old": None, "new": new[key], "change": "added"})
        elif not _same(old[key], new[key]):
            rows.append({"section": section, "item": key, "old": old[key], "new": new[key], "change": "changed"})
    return rows


def requirement_map(lines: Iterable[str]) -> dict[str, str]:
    """Requirement lines keyed by canonical package name (lines that are not requirements keep their text)."""
    mapping: dict[str, str] = {}
    for line in lines:
        try:
            mapping[canonicalize_name(Requirement(line).name)] = line
        except InvalidRequirement:
            mapping[line] = line
    return mapping


def _signature_map(frame: pd.DataFrame) -> dict[str, str]:
    return {row.name: f"{row.type}{'' if row.required else ' (optional)'}" for row in frame.itertuples()}


def _param_schema_map(frame: pd.DataFrame) -> dict[str, str]:
    return {row.name: f"{row.type} = {row.default!r}" for row in frame.itertuples()}


@dataclass(frozen=True)
class VersionComparison:
    model_name: str
    old_version: int
    new_version: int
    changes: pd.DataFrame  # CHANGE_COLUMNS, one row per difference
    problems: list[str]


def _basics(detail: VersionDetail) -> dict[str, str | None]:
    flavors = ", ".join(sorted(detail.flavors))
    return {"python_version": detail.python_version, "mlflow_version": detail.mlflow_version, "flavors": flavors}


def compare_details(old: VersionDetail, new: VersionDetail) -> pd.DataFrame:
    """What changed from `old` to `new`: signature, parameters, metrics, requirements and model basics."""
    rows = (
        diff_values("model", _basics(old), _basics(new))
        + diff_values("signature input", _signature_map(old.signature_inputs), _signature_map(new.signature_inputs))
        + diff_values("signature output", _signature_map(old.signature_outputs), _signature_map(new.signature_outputs))
        + diff_values(
            "signature params", _param_schema_map(old.signature_params), _param_schema_map(new.signature_params)
        )
        + diff_values("parameter", old.params, new.params)
        + diff_values("metric", old.metrics, new.metrics)
        + diff_values("requirement", requirement_map(old.requirements), requirement_map(new.requirements))
    )
    return pd.DataFrame(rows, columns=list(CHANGE_COLUMNS))


def compare_versions(
    config: RegistryConfig, model_name: str, old_version: int | str, new_version: int | str
) -> VersionComparison:
    """Differences between two versions of a model (old -> new)."""
    old = version_detail(config, model_name, old_version)
    new = version_detail(config, model_name, new_version)
    problems = [f"version {old.version}: {p}" for p in old.problems] + [
        f"version {new.version}: {p}" for p in new.problems
    ]
    return VersionComparison(model_name, old.version, new.version, compare_details(old, new), problems)
