"""Which registry the app reads, from its settings: a configured tracking/registry URI, Databricks Unity Catalog,
or the embedded default's local store (built by `data_access.demo_registry` when it is missing or partial)."""

from __future__ import annotations

from data_access.config import Settings
from data_access.errors import DataAccessError
from data_access.registry import RegistryConfig


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
