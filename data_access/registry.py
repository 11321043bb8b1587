"""MLflow model registry for the registry page: versions, one version in detail, comparison, guarded rollback.

Everything goes through `mlflow.MlflowClient` with explicit tracking and registry URIs (never the process-wide
ones), so the same code reads a local SQLite store and Databricks: the workspace registry (`databricks`) and
Unity Catalog (`databricks-uc`). Results are plain dataclasses, dicts and pandas frames; no Streamlit here.

A rollback moves the serving alias (and, when an endpoint is configured, the endpoint's served entity) to an
earlier version. It is off unless enabled, needs a typed confirmation naming both versions, is audited as JSON
lines whatever the outcome, and puts the alias back when the endpoint update fails.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import requests
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repo import ArtifactRepository
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from data_access.config import Settings
from data_access.errors import DataAccessError, redact

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
CHANGE_COLUMNS: tuple[str, ...] = ("section", "item", "old", "new", "change")
AUDIT_COLUMNS: tuple[str, ...] = (
    "timestamp",
    "actor",
    "model",
    "alias",
    "from_version",
    "to_version",
    "endpoint",
    "outcome",
    "message",
)
ENABLE_ROLLBACK_HINT = (
    "To allow it, set INFERENCE_EXPLORER_ALLOW_ROLLBACK=1 in the app's environment or allow_rollback = true "
    "under [app] in .streamlit/secrets.toml, then restart the app."
)
MAX_ARTIFACT_ENTRIES = 5000  # a listing this long is cut (and says so): the page shows a tree, not a dump
_SECRET_ENV_VARS = (
    "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET",
    "DATABRICKS_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
)
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"dapi[0-9A-Za-z\-]{8,}"), "dapi***"),
    (re.compile(r"(?i)(bearer\s+)[^\s,;'\"]+"), r"\1***"),
    (re.compile(r"(?i)\b(token|password|secret|client_secret)=([^\s,&;'\"]+)"), r"\1=***"),
    (re.compile(r"(://)[^/\s:@]+:[^/\s@]+@"), r"\1***@"),
)
_T = TypeVar("_T")
# What reading the registry can fail with (MLflow's REST errors, the network, local files): shown as a message.
_READ_ERRORS = (MlflowException, requests.RequestException, OSError)


# ---------------------------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class RegistryConfig:
    """Where the registry lives: a tracking URI and a registry URI (defaults to the tracking URI)."""

    tracking_uri: str
    registry_uri: str | None = None

    @property
    def effective_registry_uri(self) -> str:
        return self.registry_uri or self.tracking_uri

    @property
    def is_databricks_registry(self) -> bool:
        return self.effective_registry_uri.split(":", 1)[0] in ("databricks", "databricks-uc")

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.effective_registry_uri)


class MissingLocalStoreError(DataAccessError):
    """The embedded default's MLflow store has not been built (the page offers to build it)."""


def registry_config_for(settings: Settings) -> RegistryConfig:
    """Where the registry is for these settings. Raises MissingLocalStoreError when the local store is absent."""
    tracking, registry_uri = settings.mlflow_tracking_uri, settings.mlflow_registry_uri
    if tracking or registry_uri:
        if not tracking:  # a registry URI alone: the matching tracking server
            tracking = "databricks" if str(registry_uri).startswith("databricks") else str(registry_uri)
        return RegistryConfig(tracking_uri=str(tracking), registry_uri=registry_uri)
    if settings.backend == "databricks":
        return RegistryConfig(tracking_uri="databricks", registry_uri="databricks-uc")
    if not (settings.mlflow_dir / "mlflow.db").exists():
        raise MissingLocalStoreError(
            f"There is no MLflow model registry in {settings.mlflow_dir}.",
            "The app's first start builds the demo registry there; build it now with the button below, or point "
            "the app at a registry with MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI (or mlflow_tracking_uri and "
            "mlflow_registry_uri under [app] in .streamlit/secrets.toml).",
        )
    return build_local_store(settings)


def build_local_store(settings: Settings) -> RegistryConfig:
    from data_access.demo_registry import build_demo_registry  # MLflow logging code: import only when needed

    return build_demo_registry(settings.mlflow_dir, settings.model_name)


@dataclass(frozen=True, kw_only=True)
class RollbackSettings:
    """How rollback behaves; `enabled` is off unless the app's configuration switches it on."""

    audit_log_path: Path
    enabled: bool = False
    alias: str = "champion"
    endpoint_name: str | None = None  # a Databricks serving endpoint to update as well; None: alias only
    deploy_target: str = "databricks"  # MLflow deployments target, e.g. "databricks://<profile>"
    endpoint_read_timeout_s: float = 30.0  # reading the endpoint before any change is given up after this


# ------------------------------------------------------------------------------------------------ messages


def scrub(text: str, limit: int = 1000) -> str:
    """A message safe to show: secrets removed, one line, at most `limit` characters."""
    text = redact(str(text), [os.environ.get(name) for name in _SECRET_ENV_VARS])
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _server_message(response: requests.Response | None) -> str:
    if response is None:
        return ""
    try:
        body = response.json()
    except ValueError:
        return scrub(response.text or "", limit=200)
    if isinstance(body, Mapping):
        # The Databricks SDK appends its client configuration to error messages; that is noise here.
        said = re.sub(r"\s*Config: .*$", "", str(body.get("message") or body.get("error_code") or ""), flags=re.S)
        return scrub(said, limit=200)  # short: what we say about the outcome must follow it uncut
    return ""


def _explain_http(status: int, server_message: str, what: str) -> str:
    said = f" Databricks said: {server_message}" if server_message else ""
    if status == 401:
        return (
            f"Databricks rejected the credentials (401) while trying to {what}. "
            f"Check the token or service principal the app uses.{said}"
        )
    if status == 403:
        return (
            f"No permission (403) to {what}. The app's identity needs CAN MANAGE on the serving endpoint; "
            f"ask a workspace admin to grant it.{said}"
        )
    if status == 404:
        return f"Not found (404) while trying to {what}. Check the serving endpoint name in the app's settings.{said}"
    if status == 409:
        return (
            "The endpoint is busy (409): another configuration update is in progress. "
            f"Wait until Serving shows it Ready, then try again.{said}"
        )
    if status == 400:
        return f"Databricks refused the request (400) to {what}.{said}"
    if status == 429:
        return f"Databricks is rate limiting requests (429). Wait a minute and try again.{said}"
    if status >= 500:
        return f"Databricks had a server error ({status}) while trying to {what}. Try again in a few minutes.{said}"
    return f"Databricks answered {status} while trying to {what}.{said}"


def explain_failure(error: BaseException, what: str) -> str:
    """Why `what` failed and what to do, in one sentence or two: no stack trace, no secret."""
    if isinstance(error, EndpointTimeoutError):
        return (
            f"Databricks did not answer within {error.seconds:g} s while trying to {what}. Check the network "
            "and DATABRICKS_HOST, then try again."
        )
    if isinstance(error, requests.HTTPError):
        response = error.response
        status = response.status_code if response is not None else 0
        return scrub(_explain_http(status, _server_message(response), what))
    if isinstance(error, requests.ConnectionError | requests.Timeout):
        return scrub(
            f"Could not reach Databricks while trying to {what}. Check the network and DATABRICKS_HOST, then try again."
        )
    if isinstance(error, MlflowException):
        code, said = error.error_code, scrub(error.message, limit=300)
        if code == "PERMISSION_DENIED":
            return scrub(
                f"No permission to {what}. The identity needs MANAGE (Unity Catalog) or CAN MANAGE "
                f"(workspace registry) on the model. Registry said: {said}"
            )
        if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return scrub(f"Not found while trying to {what}: {said}")
        if code in ("UNAUTHENTICATED", "UNAUTHORIZED"):
            return scrub(f"The registry rejected the credentials while trying to {what}. Check the token or login.")
        return scrub(f"The registry refused to {what}: {said}")
    return scrub(f"Could not {what}: {type(error).__name__}: {scrub(str(error), limit=300)}")


def _registry_error(error: BaseException, what: str) -> DataAccessError:
    return DataAccessError(explain_failure(error, what))


# --------------------------------------------------------------------------------------------- read access


def _check_model_name(model_name: str) -> None:
    if not model_name or "'" in model_name or "\\" in model_name:
        raise DataAccessError(f"'{model_name}' is not a usable model name.", "Use the registered model's name.")


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
    _check_model_name(model_name)
    try:
        version = config.client().get_registered_model(model_name).aliases.get(alias)
    except _READ_ERRORS as error:
        raise _registry_error(error, f"read the aliases of {model_name}") from None
    return int(version) if version is not None else None


def list_versions(config: RegistryConfig, model_name: str) -> pd.DataFrame:
    """One row per version, newest first (`VERSION_COLUMNS`; times are naive UTC)."""
    _check_model_name(model_name)
    client = config.client()
    try:
        aliases = aliases_by_version(client, model_name)
        versions = _all_versions(client, model_name)
    except _READ_ERRORS as error:
        raise _registry_error(error, f"list the versions of {model_name}") from None
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
    _check_model_name(model_name)
    client = config.client()
    try:
        mv = client.get_model_version(model_name, str(version))
        aliases = aliases_by_version(client, model_name).get(int(mv.version), [])
    except _READ_ERRORS as error:
        raise _registry_error(error, f"read version {version} of {model_name}") from None
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


# ---------------------------------------------------------------------------------------------- comparison


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


# ------------------------------------------------------------------------------------------------ endpoint


class EndpointTimeoutError(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds} s")
        self.seconds = seconds


class RollbackRefusedError(Exception):
    """A rollback that must not start; the message says why and what to do."""


def call_with_deadline(fn: Callable[[], _T], seconds: float) -> _T:
    """Run a side-effect-free call, giving up after `seconds` (the Databricks SDK retries for minutes)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as error:
            box["error"] = error

    worker = threading.Thread(target=run, name="registry-deadline-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise EndpointTimeoutError(seconds)
    if "error" in box:
        raise box["error"]
    return box["value"]


def _input_fields(kind: str) -> set[str]:
    # The settable fields of each config part, from the pinned Databricks SDK: read-only fields the GET
    # returns (state, creator, creation_timestamp, foundation_model...) must not be sent back.
    from databricks.sdk.service import serving

    cls = {
        "entity": serving.ServedEntityInput,
        "model": serving.ServedModelInput,
        "capture": serving.AutoCaptureConfigInput,
    }[kind]
    return {f.name for f in dataclasses.fields(cls)}


@dataclass(frozen=True)
class EndpointPlan:
    """The endpoint's config update that serves `to_version` and what it served before."""

    endpoint_name: str
    served_version: str | None
    new_config: dict[str, Any]


def plan_endpoint_update(endpoint: Mapping[str, Any], model_name: str, to_version: int) -> EndpointPlan:
    """The `PUT .../config` body that swaps the model's served entity to `to_version`, all else unchanged.

    Raises RollbackRefusedError when the endpoint is updating or does not serve exactly one version of the model.
    """
    name = str(endpoint.get("name") or "")
    state = endpoint.get("state") or {}
    if state.get("config_update") == "IN_PROGRESS" or endpoint.get("pending_config"):
        raise RollbackRefusedError(
            f"Endpoint {name} is already updating its configuration. Wait until Serving shows it Ready, then try again."
        )
    config = endpoint.get("config") or {}
    if config.get("served_entities"):
        list_key, name_key, version_key, kind = "served_entities", "entity_name", "entity_version", "entity"
    elif config.get("served_models"):
        list_key, name_key, version_key, kind = "served_models", "model_name", "model_version", "model"
    else:
        raise RollbackRefusedError(f"Endpoint {name} has no served model to change.")
    allowed = _input_fields(kind)
    served = [dict(e) for e in config[list_key]]
    matches = [i for i, e in enumerate(served) if e.get(name_key) == model_name]
    if len(matches) != 1:
        found = ", ".join(f"{e.get(name_key)} v{e.get(version_key)}" for e in served)
        reason = "does not serve" if not matches else "serves more than one version of"
        raise RollbackRefusedError(
            f"Endpoint {name} {reason} {model_name} (it serves: {found}). Change it in Serving -> {name} -> "
            "Edit endpoint instead."
        )
    target = served[matches[0]]
    old_version, old_name = str(target.get(version_key)), target.get("name")
    new_entities = [{k: v for k, v in e.items() if k in allowed} for e in served]
    new_entities[matches[0]][version_key] = str(to_version)
    renames: dict[str, str] = {}
    default_name = f"{model_name.split('.')[-1]}-{old_version}"
    if old_name == default_name:  # the UI's own naming: keep it telling the truth about the version
        renames[old_name] = f"{model_name.split('.')[-1]}-{to_version}"
        new_entities[matches[0]]["name"] = renames[old_name]
    new_config: dict[str, Any] = {list_key: new_entities}
    if config.get("traffic_config"):
        new_config["traffic_config"] = _renamed_routes(config["traffic_config"], renames)
    if config.get("auto_capture_config"):  # keep the inference table exactly as it is
        capture = _input_fields("capture")
        new_config["auto_capture_config"] = {k: v for k, v in config["auto_capture_config"].items() if k in capture}
    return EndpointPlan(endpoint_name=name, served_version=old_version, new_config=new_config)


def _renamed_routes(traffic_config: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    routes = []
    for original in traffic_config.get("routes") or []:
        route = dict(original)
        for key in ("served_model_name", "served_entity_name"):
            if route.get(key) in renames:
                route[key] = renames[route[key]]
        routes.append(route)
    return {**traffic_config, "routes": routes}


# ------------------------------------------------------------------------------------------------ rollback


def confirmation_phrase(model_name: str, from_version: int, to_version: int) -> str:
    """The exact words a person types to confirm a rollback."""
    return f"roll back {model_name} from {from_version} to {to_version}"


@dataclass(frozen=True)
class RollbackResult:
    ok: bool
    outcome: str  # "success", "refused" (nothing was changed) or "failed" (see message for the state left)
    message: str
    model: str
    alias: str
    from_version: int | None
    to_version: int | None
    endpoint: str | None
    audit_record: dict[str, Any]


_ROLLBACK_LOCK = threading.Lock()  # one rollback at a time per process: no interleaved alias moves


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _append_audit(path: Path, record: Mapping[str, Any]) -> None:
    line = json.dumps(record, ensure_ascii=False) + "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)  # one write per record: appends from several processes do not interleave lines


def _ensure_audit_log(path: Path) -> str | None:
    """None when the audit log can be appended to, else why not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8"):
            pass
    except OSError as error:
        return (
            f"The rollback audit log {path} cannot be written ({error.strerror or error}); nothing was changed. "
            "Fix the folder's permissions or point the app's data folder elsewhere."
        )
    return None


@dataclass
class _Attempt:
    """The fields of one audit record, filled in as the attempt goes."""

    actor: str
    model: str
    alias: str
    endpoint: str | None
    from_version: int | None = None
    to_version: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def finish(self, path: Path, outcome: str, message: str) -> RollbackResult:
        message = scrub(message)
        record = {
            "timestamp": _now_iso(),
            "actor": self.actor,
            "model": self.model,
            "alias": self.alias,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "endpoint": self.endpoint,
            "outcome": outcome,
            "message": message,
            **self.extra,
        }
        try:
            _append_audit(path, record)
        except OSError as error:  # checked writable at the start; if it fails now, say so rather than raise
            record["message"] = message = f"{message} (Not written to the audit log {path}: {error.strerror}.)"
        return RollbackResult(
            outcome == "success",
            outcome,
            message,
            self.model,
            self.alias,
            self.from_version,
            self.to_version,
            self.endpoint,
            record,
        )


def rollback(
    model_name: str,
    to_version: int | str,
    *,
    confirmation: str,
    actor: str,
    config: RegistryConfig,
    settings: RollbackSettings,
) -> RollbackResult:
    """Move the serving alias (and the configured endpoint's served entity) to an earlier version.

    Never raises for an expected failure: the result says what happened, why, and what to do. Every attempt is
    appended to the audit log. If the endpoint update fails after the alias moved, the alias is put back.
    """
    problem = _ensure_audit_log(settings.audit_log_path)
    if problem:
        return RollbackResult(
            False, "refused", problem, model_name, settings.alias, None, None, settings.endpoint_name, {}
        )
    attempt = _Attempt(
        actor=" ".join(str(actor or "").split())[:200],
        model=model_name,
        alias=settings.alias,
        endpoint=settings.endpoint_name,
    )
    with _ROLLBACK_LOCK:
        try:
            client, plan = _prepare(attempt, to_version, confirmation, config, settings)
        except RollbackRefusedError as refusal:
            return attempt.finish(settings.audit_log_path, "refused", str(refusal))
        except Exception as error:  # reading the registry or the endpoint failed: nothing was changed
            message = explain_failure(error, _reading_what(settings)) + " Nothing was changed."
            return attempt.finish(settings.audit_log_path, "failed", message)
        return _apply(attempt, client, plan, settings)


def _reading_what(settings: RollbackSettings) -> str:
    if settings.endpoint_name:
        return f"read the model and serving endpoint {settings.endpoint_name}"
    return "read the model"


def _prepare(
    attempt: _Attempt, to_version: int | str, confirmation: str, config: RegistryConfig, settings: RollbackSettings
) -> tuple[MlflowClient, EndpointPlan | None]:
    """Every check before anything changes; raises RollbackRefusedError with the reason."""
    model, alias = attempt.model, attempt.alias
    with contextlib.suppress(ValueError):  # recorded even when refused below, so the audit shows the request
        attempt.to_version = int(str(to_version).strip())
    if not settings.enabled:
        raise RollbackRefusedError(f"Rollback is switched off in this app. {ENABLE_ROLLBACK_HINT}")
    if not attempt.actor:
        raise RollbackRefusedError("A rollback needs the name of the person asking for it.")
    if attempt.to_version is None:
        raise RollbackRefusedError(f"'{to_version}' is not a version number of {model}.")
    try:
        _check_model_name(model)
    except DataAccessError as error:
        raise RollbackRefusedError(str(error)) from None
    client = config.client()
    current = client.get_registered_model(model).aliases.get(alias)
    if current is None:
        raise RollbackRefusedError(f"Alias {alias} is not set on {model}, so there is nothing to roll back from.")
    attempt.from_version = int(current)
    if attempt.to_version >= attempt.from_version:
        raise RollbackRefusedError(
            f"Version {attempt.to_version} is not earlier than version {attempt.from_version}, which {alias} "
            "points to now. A rollback goes to an earlier version."
        )
    _check_target_version(client, model, attempt.to_version)
    expected = confirmation_phrase(model, attempt.from_version, attempt.to_version)
    if " ".join(str(confirmation or "").split()) != expected:
        raise RollbackRefusedError(f"The confirmation does not match. To confirm, type exactly: {expected}")
    if not settings.endpoint_name:
        return client, None
    from mlflow.deployments import get_deploy_client

    deploy = get_deploy_client(settings.deploy_target)
    endpoint = call_with_deadline(lambda: deploy.get_endpoint(settings.endpoint_name), settings.endpoint_read_timeout_s)
    plan = plan_endpoint_update(endpoint, model, attempt.to_version)
    attempt.extra["endpoint_served_version_before"] = plan.served_version
    return client, plan


def _check_target_version(client: MlflowClient, model: str, version: int) -> None:
    try:
        target = client.get_model_version(model, str(version))
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            raise RollbackRefusedError(f"{model} has no version {version}.") from None
        raise
    if str(target.status) != "READY":
        raise RollbackRefusedError(f"Version {version} of {model} is {target.status}, not READY; it cannot serve.")


def _apply(
    attempt: _Attempt, client: MlflowClient, plan: EndpointPlan | None, settings: RollbackSettings
) -> RollbackResult:
    model, alias, old, new = attempt.model, attempt.alias, attempt.from_version, attempt.to_version
    log = settings.audit_log_path
    try:
        client.set_registered_model_alias(model, alias, str(new))
    except Exception as error:
        return attempt.finish(
            log,
            "failed",
            explain_failure(error, f"move alias {alias} of {model}") + f" {alias} still points to version {old}.",
        )
    if plan is None:
        return attempt.finish(log, "success", f"{alias} now points to version {new} of {model} (was {old}).")
    try:
        from mlflow.deployments import get_deploy_client

        get_deploy_client(settings.deploy_target).update_endpoint_config(
            endpoint=plan.endpoint_name, config=plan.new_config
        )
    except Exception as error:
        why = explain_failure(error, f"update serving endpoint {plan.endpoint_name}")
        return attempt.finish(log, "failed", why + " " + _restore_alias(client, model, alias, old))
    return attempt.finish(
        log,
        "success",
        f"{alias} now points to version {new} of {model} (was {old}). Endpoint {plan.endpoint_name} is updating to "
        f"version {new}; it keeps serving version {plan.served_version} until the new version is ready.",
    )


def _restore_alias(client: MlflowClient, model: str, alias: str, version: int | None) -> str:
    """Put the alias back after a failed endpoint update; says what state was left."""
    try:
        client.set_registered_model_alias(model, alias, str(version))
        restored = client.get_registered_model(model).aliases.get(alias)
    except Exception as error:
        return (
            f"Putting {alias} back to version {version} also failed ({explain_failure(error, 'restore the alias')}). "
            f"Set {alias} to version {version} in the registry by hand."
        )
    if str(restored) != str(version):
        return f"{alias} could not be confirmed back on version {version}; check it in the registry."
    return f"{alias} was put back to version {version}; the registry is as it was."


# --------------------------------------------------------------------------------------------- audit reading


def read_audit_log(path: Path, newest_first: bool = True) -> pd.DataFrame:
    """Every audit record (`AUDIT_COLUMNS` plus `line`); a line that is not a record is kept as `unreadable`."""
    path = Path(path)
    columns = [*AUDIT_COLUMNS, "line"]
    if not path.exists():
        return pd.DataFrame(columns=columns)
    rows = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            rows.append({**_audit_row(line, number), "line": number})
    frame = pd.DataFrame(rows, columns=columns).astype(object)
    frame = frame.where(frame.notna(), None)  # a missing field is None, not NaN, in every text column
    for column in ("from_version", "to_version", "line"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    return frame.iloc[::-1].reset_index(drop=True) if newest_first else frame


def _audit_row(line: str, number: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return {"outcome": "unreadable", "message": f"Line {number} of the audit log is not a JSON record."}
    return {key: record.get(key) for key in AUDIT_COLUMNS}
