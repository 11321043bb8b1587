"""Reading the registry: the versions of a model, and one version in detail (run, signature, requirements,
artifacts)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

from data_access.registry import READ_ERRORS, RegistryConfig, check_model_name, explain_failure, registry_error

VERSION_COLUMNS: tuple[str, ...] = (
    "version",
    "status",
    "created",
    "updated",
    "aliases",
    "run_id",
    "run_name",
    "source",
    "description",
)
SIGNATURE_COLUMNS: tuple[str, ...] = ("name", "type", "required")
PARAM_SCHEMA_COLUMNS: tuple[str, ...] = ("name", "type", "default", "shape")
ARTIFACT_COLUMNS: tuple[str, ...] = ("path", "is_dir", "size_bytes", "depth")
MAX_ARTIFACT_ENTRIES = 5000  # a listing this long is cut (and says so): the page shows a tree, not a dump


def _utc(ms: int | None) -> pd.Timestamp:
    # Naive UTC like every other timestamp of the app (see schema.py).
    return pd.Timestamp(ms, unit="ms") if ms is not None else pd.NaT


def _all_versions(client: MlflowClient, model_name: str) -> list[Any]:
    versions: list[Any] = []
    token: str | None = None
    while True:
        page = client.search_model_versions(f"name = '{model_name}'", max_results=200, page_token=token)
        versions.extend(page)
        token = page.token
        if not token:
            return versions


def aliases_by_version(client: MlflowClient, model_name: str) -> dict[int, list[str]]:
    """Version -> its aliases, from the registered model (UC search results do not carry aliases)."""
    by_version: dict[int, list[str]] = {}
    for alias, version in client.get_registered_model(model_name).aliases.items():
        by_version.setdefault(int(version), []).append(alias)
    return {version: sorted(names) for version, names in by_version.items()}


def alias_version(config: RegistryConfig, model_name: str, alias: str) -> int | None:
    """The version an alias points to, or None when the alias is not set."""
    check_model_name(model_name)
    try:
        version = config.client().get_registered_model(model_name).aliases.get(alias)
    except READ_ERRORS as error:
        raise registry_error(error, f"read the aliases of {model_name}") from None
    return int(version) if version is not None else None


def list_versions(config: RegistryConfig, model_name: str) -> pd.DataFrame:
    """One row per version, newest first (`VERSION_COLUMNS`; times are naive UTC)."""
    check_model_name(model_name)
    client = config.client()
    try:
        aliases = aliases_by_version(client, model_name)
        versions = _all_versions(client, model_name)
    except READ_ERRORS as error:
        raise registry_error(error, f"list the versions of {model_name}") from None
    run_names: dict[str, str | None] = {}
    rows = []
    for mv in versions:
        if mv.run_id and mv.run_id not in run_names:
            run_names[mv.run_id] = _run_name(client, mv.run_id)
        rows.append(
            {
                "version": int(mv.version),
                "status": str(mv.status),
                "created": _utc(mv.creation_timestamp),
                "updated": _utc(mv.last_updated_timestamp),
                "aliases": aliases.get(int(mv.version), []),
                "run_id": mv.run_id,
                "run_name": run_names.get(mv.run_id) if mv.run_id else None,
                "source": mv.source,
                "description": mv.description or "",
            }
        )
    frame = pd.DataFrame(rows, columns=list(VERSION_COLUMNS))
    return frame.sort_values("version", ascending=False, ignore_index=True)


def _run_name(client: MlflowClient, run_id: str) -> str | None:
    try:
        return client.get_run(run_id).info.run_name
    except MlflowException:
        return None  # run deleted or not readable: the version still lists


@dataclass(frozen=True)
class VersionDetail:
    """Everything the page shows about one version. `problems` lists what could not be read and why."""

    model_name: str
    version: int
    status: str
    aliases: list[str]
    description: str
    tags: dict[str, str]
    source: str
    run_id: str | None
    run_name: str | None
    mlmodel: dict[str, Any]
    flavors: dict[str, Any]
    python_version: str | None
    mlflow_version: str | None
    requirements: list[str]
    signature_inputs: pd.DataFrame
    signature_outputs: pd.DataFrame
    signature_params: pd.DataFrame
    artifacts: pd.DataFrame
    params: dict[str, str]
    metrics: dict[str, float]
    problems: list[str] = field(default_factory=list)


def _artifact_repo(config: RegistryConfig, client: MlflowClient, model_name: str, version: int) -> ArtifactRepository:
    if config.is_databricks_registry:
        # Databricks registries hand out short-lived credentials through the models:/ repository.
        return ModelsArtifactRepository(
            f"models:/{model_name}/{version}",
            tracking_uri=config.tracking_uri,
            registry_uri=config.effective_registry_uri,
        )
    # Elsewhere resolve the location with our own client: ModelsArtifactRepository would use the global URIs.
    location = client.get_model_version_download_uri(model_name, str(version))
    return get_artifact_repository(
        location, tracking_uri=config.tracking_uri, registry_uri=config.effective_registry_uri
    )


def artifact_tree(repo: ArtifactRepository, max_entries: int = MAX_ARTIFACT_ENTRIES) -> tuple[pd.DataFrame, bool]:
    """Every file and folder under the repository, sorted by path; folder sizes add up their files.

    Returns the frame and whether the listing was cut at `max_entries`.
    """
    rows: list[dict[str, Any]] = []
    pending: list[str | None] = [None]
    while pending and len(rows) < max_entries:
        for info in repo.list_artifacts(pending.pop()):
            rows.append(
                {"path": info.path, "is_dir": info.is_dir, "size_bytes": None if info.is_dir else info.file_size}
            )
            if info.is_dir:
                pending.append(info.path)
    cut = bool(pending) or len(rows) > max_entries
    frame = pd.DataFrame(rows[:max_entries], columns=["path", "is_dir", "size_bytes"])
    frame["depth"] = frame["path"].str.count("/")
    files = frame[~frame["is_dir"]]
    for index in frame.index[frame["is_dir"]]:
        prefix = frame.at[index, "path"].rstrip("/") + "/"
        frame.at[index, "size_bytes"] = files.loc[files["path"].str.startswith(prefix), "size_bytes"].fillna(0).sum()
    frame["size_bytes"] = frame["size_bytes"].astype("Int64")
    return frame.sort_values("path", ignore_index=True)[list(ARTIFACT_COLUMNS)], cut


def type_text(spec: Mapping[str, Any]) -> str:
    """A readable type for one signature entry, e.g. `array<object<content: string, role: string>>`."""
    kind = spec.get("type")
    if kind == "array":
        return f"array<{type_text(spec.get('items') or {})}>"
    if kind == "object":
        properties = spec.get("properties") or {}
        parts = [
            f"{name}: {type_text(prop)}{'' if prop.get('required', True) else '?'}"
            for name, prop in sorted(properties.items())
        ]
        return f"object<{', '.join(parts)}>"
    if kind == "map":
        return f"map<string, {type_text(spec.get('values') or {})}>"
    if kind == "tensor":
        tensor = spec.get("tensor-spec") or {}
        return f"tensor<{tensor.get('dtype')}, shape {tuple(tensor.get('shape') or ())}>"
    return str(kind)


def _signature_part(mlmodel: Mapping[str, Any], part: str) -> list[dict[str, Any]]:
    raw = (mlmodel.get("signature") or {}).get(part)
    if not raw:
        return []
    parsed = json.loads(raw) if isinstance(raw, str) else raw
    return list(parsed)


def signature_frames(mlmodel: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Input columns, output columns and inference parameters of an MLmodel's signature."""

    def columns(part: str) -> pd.DataFrame:
        rows = [
            {
                "name": spec.get("name") or f"[{i}]",
                "type": type_text(spec),
                "required": bool(spec.get("required", True)),
            }
            for i, spec in enumerate(_signature_part(mlmodel, part))
        ]
        return pd.DataFrame(rows, columns=list(SIGNATURE_COLUMNS))

    params = [
        {
            "name": p.get("name"),
            "type": str(p.get("type")),
            "default": p.get("default"),
            "shape": tuple(p["shape"]) if p.get("shape") else None,
        }
        for p in _signature_part(mlmodel, "params")
    ]
    return columns("inputs"), columns("outputs"), pd.DataFrame(params, columns=list(PARAM_SCHEMA_COLUMNS))


def _read_text_artifact(repo: ArtifactRepository, path: str) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        local = repo.download_artifacts(path, dst_path=scratch)
        return Path(local).read_text(encoding="utf-8")


def _requirement_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def version_detail(config: RegistryConfig, model_name: str, version: int | str) -> VersionDetail:
    """One version with its MLmodel, signature, artifact tree and training run."""
    check_model_name(model_name)
    client = config.client()
    try:
        mv = client.get_model_version(model_name, str(version))
        aliases = aliases_by_version(client, model_name).get(int(mv.version), [])
    except READ_ERRORS as error:
        raise registry_error(error, f"read version {version} of {model_name}") from None
    problems: list[str] = []
    mlmodel, requirements, artifacts = _model_files(config, client, model_name, int(mv.version), problems)
    params, metrics, run_name = _run_data(client, mv.run_id, problems)
    inputs, outputs, signature_params = signature_frames(mlmodel)
    python_flavor = (mlmodel.get("flavors") or {}).get("python_function") or {}
    return VersionDetail(
        model_name=model_name,
        version=int(mv.version),
        status=str(mv.status),
        aliases=aliases,
        description=mv.description or "",
        tags=dict(mv.tags or {}),
        source=mv.source,
        run_id=mv.run_id,
        run_name=run_name,
        mlmodel=mlmodel,
        flavors=dict(mlmodel.get("flavors") or {}),
        python_version=python_flavor.get("python_version"),
        mlflow_version=mlmodel.get("mlflow_version"),
        requirements=requirements,
        signature_inputs=inputs,
        signature_outputs=outputs,
        signature_params=signature_params,
        artifacts=artifacts,
        params=params,
        metrics=metrics,
        problems=problems,
    )


def _model_files(
    config: RegistryConfig, client: MlflowClient, model_name: str, version: int, problems: list[str]
) -> tuple[dict[str, Any], list[str], pd.DataFrame]:
    empty_tree = pd.DataFrame(columns=list(ARTIFACT_COLUMNS))
    try:
        repo = _artifact_repo(config, client, model_name, version)
        tree, cut = artifact_tree(repo)
    except Exception as error:  # any storage failure: the rest of the detail still shows
        problems.append(explain_failure(error, "list the model's artifacts"))
        return {}, [], empty_tree
    if cut:
        problems.append(f"The artifact listing stops at {MAX_ARTIFACT_ENTRIES} entries.")
    files = set(tree.loc[~tree["is_dir"], "path"])
    mlmodel: dict[str, Any] = {}
    requirements: list[str] = []
    try:
        if "MLmodel" in files:
            mlmodel = yaml.safe_load(_read_text_artifact(repo, "MLmodel")) or {}
        if not mlmodel:
            problems.append("The model has no readable MLmodel file.")
        if "requirements.txt" in files:
            requirements = _requirement_lines(_read_text_artifact(repo, "requirements.txt"))
        else:
            problems.append("The model has no requirements.txt.")
    except Exception as error:
        problems.append(explain_failure(error, "read the model's MLmodel and requirements"))
    return mlmodel, requirements, tree


def _run_data(
    client: MlflowClient, run_id: str | None, problems: list[str]
) -> tuple[dict[str, str], dict[str, float], str | None]:
    if not run_id:
        problems.append("The version is not linked to a training run.")
        return {}, {}, None
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        problems.append(explain_failure(error, f"read training run {run_id}"))
        return {}, {}, None
    return dict(run.data.params), {k: float(v) for k, v in run.data.metrics.items()}, run.info.run_name
