"""A guarded rollback: move the serving alias (and, when an endpoint is configured, the endpoint's served entity)
to an earlier version.

It is off unless enabled, refuses anyone not signed in (`data_access.identity.Viewer`), needs a typed confirmation
naming both versions, is audited as JSON lines whatever the outcome, naming the viewer (`data_access.registry.audit`),
and puts the alias back when the endpoint update fails.

A viewer Databricks Apps signed in with user authorization acts with their own forwarded token: the endpoint is read
and updated, and a Databricks registry's alias moved, through the workspace's REST API as that person, so Databricks
decides whether they may (CAN MANAGE on the endpoint, MANAGE on the model; the app's user authorization needs the
scopes for those APIs, e.g. serving.serving-endpoints; docs.databricks.com/dev-tools/databricks-apps/auth). Anyone
else (a viewer signed in with st.login) acts with the app's own credentials, as MLflow and its deployments client
find them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from data_access.errors import DataAccessError
from data_access.identity import NO_SIGN_IN, Viewer, anonymous, workspace_url
from data_access.registry import (
    APP_IDENTITY,
    ENABLE_ROLLBACK_HINT,
    RegistryConfig,
    RollbackSettings,
    call_with_deadline,
    check_model_name,
    explain_failure,
    scrub,
)
from data_access.registry.audit import append_audit, ensure_audit_log, now_iso


class RollbackRefusedError(Exception):
    """A rollback that must not start; the message says why and what to do."""


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
            "timestamp": now_iso(),
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
            append_audit(path, record)
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
    viewer: Viewer | None,
    config: RegistryConfig,
    settings: RollbackSettings,
) -> RollbackResult:
    """Move the serving alias (and the configured endpoint's served entity) to an earlier version, as `viewer`.

    Never raises for an expected failure: the result says what happened, why, and what to do. Every attempt is
    appended to the audit log, naming the viewer (an anonymous one, or none at all, is refused). If the endpoint
    update fails after the alias moved, the alias is put back.
    """
    viewer = viewer if viewer is not None else anonymous(NO_SIGN_IN)  # no viewer given: refused, audited as anonymous
    problem = ensure_audit_log(settings.audit_log_path)
    if problem:
        return RollbackResult(
            False, "refused", problem, model_name, settings.alias, None, None, settings.endpoint_name, {}
        )
    attempt = _Attempt(
        actor=" ".join(viewer.audit_name.split())[:300],
        model=model_name,
        alias=settings.alias,
        endpoint=settings.endpoint_name,
    )
    changes = _changes_for(viewer, config, settings)  # opens nothing yet
    attempt.extra["acting_with"] = changes.acting_with
    with _ROLLBACK_LOCK:
        try:
            plan = _prepare(attempt, viewer, to_version, confirmation, settings, changes)
        except RollbackRefusedError as refusal:
            return attempt.finish(settings.audit_log_path, "refused", str(refusal))
        except Exception as error:  # reading the registry or the endpoint failed: nothing was changed
            message = explain_failure(error, _reading_what(settings), who=changes.who) + " Nothing was changed."
            return attempt.finish(settings.audit_log_path, "failed", message)
        return _apply(attempt, plan, settings, changes)


def _reading_what(settings: RollbackSettings) -> str:
    if settings.endpoint_name:
        return f"read the model and serving endpoint {settings.endpoint_name}"
    return "read the model"


def _prepare(
    attempt: _Attempt,
    viewer: Viewer,
    to_version: int | str,
    confirmation: str,
    settings: RollbackSettings,
    changes: _Changes,
) -> EndpointPlan | None:
    """Every check before anything changes; raises RollbackRefusedError with the reason."""
    model, alias = attempt.model, attempt.alias
    with contextlib.suppress(ValueError):  # recorded even when refused below, so the audit shows the request
        attempt.to_version = int(str(to_version).strip())
    if not settings.enabled:
        raise RollbackRefusedError(f"Rollback is switched off in this app. {ENABLE_ROLLBACK_HINT}")
    if not viewer.signed_in or not " ".join(str(viewer.name).split()):
        raise RollbackRefusedError(f"A rollback needs a signed-in viewer; nobody acts anonymously. {viewer.reason}")
    if attempt.to_version is None:
        raise RollbackRefusedError(f"'{to_version}' is not a version number of {model}.")
    try:
        check_model_name(model)
    except DataAccessError as error:
        raise RollbackRefusedError(str(error)) from None
    client = changes.client
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
        return None
    endpoint = call_with_deadline(
        lambda: changes.get_endpoint(settings.endpoint_name), settings.endpoint_read_timeout_s
    )
    plan = plan_endpoint_update(endpoint, model, attempt.to_version)
    attempt.extra["endpoint_served_version_before"] = plan.served_version
    return plan


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
    attempt: _Attempt, plan: EndpointPlan | None, settings: RollbackSettings, changes: _Changes
) -> RollbackResult:
    model, alias, old, new = attempt.model, attempt.alias, attempt.from_version, attempt.to_version
    log = settings.audit_log_path
    try:
        changes.set_alias(model, alias, str(new))
    except Exception as error:
        return attempt.finish(
            log,
            "failed",
            explain_failure(error, f"move alias {alias} of {model}", who=changes.who)
            + f" {alias} still points to version {old}.",
        )
    if plan is None:
        return attempt.finish(log, "success", f"{alias} now points to version {new} of {model} (was {old}).")
    try:
        changes.update_endpoint_config(plan.endpoint_name, plan.new_config)
    except Exception as error:
        why = explain_failure(error, f"update serving endpoint {plan.endpoint_name}", who=changes.who)
        return attempt.finish(log, "failed", why + " " + _restore_alias(changes, model, alias, old))
    return attempt.finish(
        log,
        "success",
        f"{alias} now points to version {new} of {model} (was {old}). Endpoint {plan.endpoint_name} is updating to "
        f"version {new}; it keeps serving version {plan.served_version} until the new version is ready.",
    )


def _restore_alias(changes: _Changes, model: str, alias: str, version: int | None) -> str:
    """Put the alias back after a failed endpoint update; says what state was left."""
    try:
        changes.set_alias(model, alias, str(version))
        restored = changes.client.get_registered_model(model).aliases.get(alias)
    except Exception as error:
        why = explain_failure(error, "restore the alias", who=changes.who)
        return (
            f"Putting {alias} back to version {version} also failed ({why}). "
            f"Set {alias} to version {version} in the registry by hand."
        )
    if str(restored) != str(version):
        return f"{alias} could not be confirmed back on version {version}; check it in the registry."
    return f"{alias} was put back to version {version}; the registry is as it was."


class _Changes:
    """The changes a rollback makes, with the app's own credentials: MLflow's client for the alias, its deployments
    client for the endpoint."""

    who = APP_IDENTITY
    acting_with = "the app's credentials"

    def __init__(self, config: RegistryConfig, settings: RollbackSettings) -> None:
        self.config = config
        self.deploy_target = settings.deploy_target

    @functools.cached_property
    def client(self) -> MlflowClient:
        return self.config.client()

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(model, alias, version)

    def get_endpoint(self, name: str) -> Mapping[str, Any]:
        from mlflow.deployments import get_deploy_client

        return get_deploy_client(self.deploy_target).get_endpoint(name)

    def update_endpoint_config(self, name: str, config: Mapping[str, Any]) -> None:
        from mlflow.deployments import get_deploy_client

        get_deploy_client(self.deploy_target).update_endpoint_config(endpoint=name, config=config)


class _ViewerChanges(_Changes):
    """The same changes made as the viewer: their forwarded token on the workspace's REST API (the serving-endpoints
    API, and MLflow's registry API for a Databricks registry), so the workspace applies that person's permissions.
    Reading the registry stays with the app's client."""

    def __init__(self, viewer: Viewer, config: RegistryConfig, settings: RollbackSettings, host: str) -> None:
        super().__init__(config, settings)
        self.who = f"{viewer.name} (acting with their own Databricks permissions)"
        self.acting_with = "the viewer's own Databricks token"
        self.base = workspace_url(host)
        self.unity_catalog = config.effective_registry_uri.startswith("databricks-uc")
        self.databricks_registry = config.is_databricks_registry
        self.timeout_s = settings.endpoint_read_timeout_s
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {viewer.token}"
        self.session.verify = settings.tls_ca_file or True

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        reply = self.session.request(method, self.base + path, json=body, timeout=(self.timeout_s, self.timeout_s))
        reply.raise_for_status()  # requests.HTTPError: explain_failure reads the workspace's own message
        return reply.json() if reply.content else {}

    def set_alias(self, model: str, alias: str, version: str) -> None:
        if not self.databricks_registry:  # a local registry has no workspace permissions to ask
            super().set_alias(model, alias, version)
            return
        service = "mlflow/unity-catalog" if self.unity_catalog else "mlflow"
        body = {"name": model, "alias": alias, "version": version}
        self._call("POST", f"/api/2.0/{service}/registered-models/alias", body)

    def get_endpoint(self, name: str) -> Mapping[str, Any]:
        return self._call("GET", f"/api/2.0/serving-endpoints/{urllib.parse.quote(name, safe='')}")

    def update_endpoint_config(self, name: str, config: Mapping[str, Any]) -> None:
        self._call("PUT", f"/api/2.0/serving-endpoints/{urllib.parse.quote(name, safe='')}/config", config)


def _changes_for(viewer: Viewer, config: RegistryConfig, settings: RollbackSettings) -> _Changes:
    host = settings.workspace_host or os.environ.get("DATABRICKS_HOST", "")
    if viewer.token and host:
        return _ViewerChanges(viewer, config, settings, host)
    return _Changes(config, settings)
