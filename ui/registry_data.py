"""Cached access to the MLflow registry for the Model registry page, and who is asking for a rollback.

Where the registry lives comes from the settings: explicit MLflow URIs win (Databricks: tracking `databricks`,
registry `databricks-uc`); the Databricks backend without URIs uses those two; the embedded default uses the
local demo store the first start builds in `settings.mlflow_dir` (via `build_demo_registry`, which returns the
store's `RegistryConfig` and is instant on a complete store).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

from data_access import identity, registry
from data_access.config import Settings
from data_access.errors import DataAccessError
from data_access.registry import RegistryConfig, RollbackSettings, comparing, reading
from data_access.registry.comparing import VersionComparison
from data_access.registry.reading import VersionDetail
from data_access.registry.store import registry_config_for
from ui import data
from ui.registry_view import SERVING_ALIAS

REGISTRY_TTL_S = 60  # aliases move (rollbacks by other people): re-read the version list every minute
# A registry read gives up after this: MLflow and the Databricks SDK retry an unreachable host for minutes.
REGISTRY_READ_TIMEOUT_S = 30.0
_T = TypeVar("_T")


def rollback_settings_for(settings: Settings) -> RollbackSettings:
    workspace = settings.databricks
    return RollbackSettings(
        audit_log_path=settings.audit_log_path,
        enabled=settings.allow_rollback,
        alias=SERVING_ALIAS,
        endpoint_name=settings.serving_endpoint or None,
        # A viewer's own token acts on this workspace (in Databricks Apps, DATABRICKS_HOST either way).
        workspace_host=workspace.host if workspace else os.environ.get("DATABRICKS_HOST") or None,
        tls_ca_file=workspace.tls_ca_file if workspace else None,
    )


def describe(config: RegistryConfig) -> str:
    """Where the registry is, safe to show (credentials in a URI are removed)."""
    tracking = registry.scrub(config.tracking_uri, limit=300)
    registry_uri = registry.scrub(config.effective_registry_uri, limit=300)
    return f"`{tracking}`" if tracking == registry_uri else f"tracking `{tracking}`, registry `{registry_uri}`"


@st.cache_resource(show_spinner="Opening the model registry…")
def config() -> RegistryConfig:
    return registry_config_for(data.settings())


def rollback_settings() -> RollbackSettings:
    return rollback_settings_for(data.settings())


def model_name() -> str:
    return data.settings().model_name


def within_deadline(read: Callable[[], _T], what: str) -> _T:
    """Run a registry read (no side effects), giving up after REGISTRY_READ_TIMEOUT_S with a clear message."""
    try:
        return registry.call_with_deadline(read, REGISTRY_READ_TIMEOUT_S)
    except registry.EndpointTimeoutError as error:
        raise DataAccessError(
            f"The model registry did not answer within {error.seconds:g} s while trying to {what}.",
            "Check the network and the registry settings (MLFLOW_TRACKING_URI, MLFLOW_REGISTRY_URI, "
            "DATABRICKS_HOST), then reload the page.",
        ) from None


@st.cache_data(ttl=REGISTRY_TTL_S, show_spinner="Reading the model registry…")
def _versions(tracking_uri: str, registry_uri: str | None, model: str) -> pd.DataFrame:
    where = RegistryConfig(tracking_uri, registry_uri)
    return within_deadline(lambda: reading.list_versions(where, model), f"list the versions of {model}")


@st.cache_data(ttl=REGISTRY_TTL_S, show_spinner="Reading the model version…")
def _detail(tracking_uri: str, registry_uri: str | None, model: str, version: int) -> VersionDetail:
    where = RegistryConfig(tracking_uri, registry_uri)
    return within_deadline(lambda: reading.version_detail(where, model, version), f"read version {version}")


@st.cache_data(ttl=REGISTRY_TTL_S, show_spinner="Comparing the two versions…")
def _comparison(tracking_uri: str, registry_uri: str | None, model: str, old: int, new: int) -> VersionComparison:
    where = RegistryConfig(tracking_uri, registry_uri)
    return within_deadline(
        lambda: comparing.compare_versions(where, model, old, new), f"compare versions {old} and {new}"
    )


def versions() -> pd.DataFrame:
    where = config()
    return _versions(where.tracking_uri, where.registry_uri, model_name())


def detail(version: int) -> VersionDetail:
    where = config()
    return _detail(where.tracking_uri, where.registry_uri, model_name(), int(version))


def comparison(old: int, new: int) -> VersionComparison:
    where = config()
    return _comparison(where.tracking_uri, where.registry_uri, model_name(), int(old), int(new))


def serving_version() -> int | None:
    """Where the serving alias points right now (never cached: the rollback's confirmation depends on it)."""
    where, model = config(), model_name()
    return within_deadline(lambda: reading.alias_version(where, model, SERVING_ALIAS), f"read the aliases of {model}")


def clear() -> None:
    """Forget what was read from the registry (after a rollback, or when the store was built)."""
    _versions.clear()
    _detail.clear()
    _comparison.clear()


def or_stop(read: Callable[[], _T]) -> _T:
    """Run a registry read, or show what went wrong and what to do and stop the page (no stack trace)."""
    try:
        return read()
    except DataAccessError as error:
        data.show_error(error)
        st.stop()
        raise  # unreachable: st.stop() ends the run


def fetch_or_none(query_name: str, **arguments: Any) -> data.Frame | None:
    """An inference-table query, or None after showing the error: the registry and rollback stay usable."""
    try:
        return data.fetch(query_name, **arguments)
    except DataAccessError as error:
        data.show_error(error)
        return None


def _verified_user(host: str, token: str) -> str:
    """Whose token this is, as the workspace says, remembered briefly per token (no call on every rerun)."""
    key = identity.Credential(token).key
    known = _VERIFIED.get(key)
    if known and known[1] > time.monotonic():
        return known[0]
    settings = data.settings()
    ca_file = settings.databricks.tls_ca_file if settings.databricks else None
    name = identity.scim_me(host, token, settings.connect_bound_s, ca_file)
    _VERIFIED[key] = (name, time.monotonic() + VERIFIED_TTL_S)
    return name


VERIFIED_TTL_S = 300
_VERIFIED: dict[str, tuple[str, float]] = {}


def sign_in_configured() -> bool:
    """Whether Streamlit's own sign-in (st.login) is set up: an [auth] section in secrets.toml."""
    try:
        return "auth" in st.secrets
    except (FileNotFoundError, st.errors.StreamlitSecretNotFoundError):
        return False


def current_viewer() -> identity.Viewer:
    """Who is using this session, decided by data_access.identity from st.user and the request's headers."""
    try:
        user_info: dict[str, Any] = dict(st.user.to_dict())
    except Exception:  # no session context (bare script run): nobody is signed in
        user_info = {}
    headers = dict(st.context.headers.items()) if st.context.headers else {}
    host = os.environ.get("DATABRICKS_HOST", "")
    return identity.identify(user_info, headers, os.environ, lambda token: _verified_user(host, token))
