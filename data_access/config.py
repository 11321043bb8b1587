"""Settings from the environment and `.streamlit/secrets.toml`, resolved once, without Streamlit.

The app passes `st.secrets` in as a plain mapping; the job and the tests pass nothing or a dict.
Environment variables win over secrets, so Databricks Apps' injected variables take effect.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from data_access.errors import DataAccessError

Backend = Literal["duckdb", "databricks"]

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_PAYLOAD_TABLE = "payload"
DEFAULT_REQUESTS_TABLE = "requests"
DEFAULT_MODEL_NAME = "dbdemos_advanced_chatbot_model"
DEFAULT_ENDPOINT_NAME = "dbdemos_endpoint_advanced"

_NAME_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class TableName:
    """A validated `[catalog.][schema.]table` name; never formatted into SQL, only handed to Ibis."""

    table: str
    schema: str | None = None
    catalog: str | None = None

    @classmethod
    def parse(cls, text: str) -> TableName:
        parts = text.strip().split(".")
        if not 1 <= len(parts) <= 3 or not all(_NAME_PART.match(p) for p in parts):
            raise DataAccessError(
                f"'{text}' is not a valid table name.",
                "Use letters, digits and underscores: table, schema.table or catalog.schema.table.",
            )
        catalog, schema = ([None, None, *parts[:-1]])[-2:]
        return cls(table=parts[-1], schema=schema, catalog=catalog)

    def __str__(self) -> str:
        return ".".join(p for p in (self.catalog, self.schema, self.table) if p)


@dataclass(frozen=True)
class DatabricksSettings:
    host: str
    http_path: str
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    # A PEM file of certificates to trust for the warehouse's TLS, for a TLS-inspecting proxy with a private CA
    # or a self-signed test warehouse; verification stays on. None: the system's trusted CAs.
    tls_ca_file: str | None = None

    @property
    def secrets(self) -> list[str | None]:
        return [self.token, self.client_secret]


@dataclass(frozen=True)
class Settings:
    backend: Backend
    data_dir: Path
    payload_table: TableName
    requests_table: TableName
    databricks: DatabricksSettings | None = None
    query_timeout_s: int = 120
    demo_requests: int = 50_000
    demo_seed: int = 7
    scoring_profile: str = "light"
    model_name: str = DEFAULT_MODEL_NAME
    serving_endpoint: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_registry_uri: str | None = None
    allow_rollback: bool = False

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "inference.duckdb"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def audit_log_path(self) -> Path:
        return self.data_dir / "rollback_audit.jsonl"


def _lookup(environ: Mapping[str, str], secrets: Mapping[str, Any], env_key: str, *secret_path: str) -> Any:
    if environ.get(env_key):
        return environ[env_key]
    node: Any = secrets
    for key in secret_path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node if node not in ("", None) else None


def _databricks(environ: Mapping[str, str], secrets: Mapping[str, Any]) -> DatabricksSettings | None:
    def get(env_key: str, key: str) -> str | None:
        value = _lookup(environ, secrets, env_key, "databricks", key)
        return str(value) if value is not None else None

    host = get("DATABRICKS_HOST", "host")
    http_path = get("DATABRICKS_HTTP_PATH", "http_path")
    warehouse_id = get("DATABRICKS_WAREHOUSE_ID", "warehouse_id")
    if not host or not (http_path or warehouse_id):
        return None
    return DatabricksSettings(
        host=host.removeprefix("https://").removeprefix("http://").rstrip("/"),
        http_path=http_path or f"/sql/1.0/warehouses/{warehouse_id}",
        token=get("DATABRICKS_TOKEN", "token"),
        client_id=get("DATABRICKS_CLIENT_ID", "client_id"),
        client_secret=get("DATABRICKS_CLIENT_SECRET", "client_secret"),
        tls_ca_file=get("DATABRICKS_TLS_CA_FILE", "tls_ca_file"),
    )


def load_settings(environ: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None) -> Settings:
    """Resolve settings: environment first, then secrets (`[databricks]` and `[app]` sections), then defaults."""
    environ = os.environ if environ is None else environ
    secrets = secrets or {}

    def app(env_key: str, key: str, default: Any = None) -> Any:
        value = _lookup(environ, secrets, env_key, "app", key)
        return default if value is None else value

    databricks = _databricks(environ, secrets)
    backend = str(app("INFERENCE_EXPLORER_BACKEND", "backend", "databricks" if databricks else "duckdb"))
    if backend not in ("duckdb", "databricks"):
        raise DataAccessError(f"Unknown backend '{backend}'.", "Set backend to 'duckdb' or 'databricks'.")
    if backend == "databricks" and databricks is None:
        raise DataAccessError(
            "The Databricks backend is selected but not configured.",
            "Set host and warehouse_id (or http_path) under [databricks] in .streamlit/secrets.toml, "
            "or DATABRICKS_HOST and DATABRICKS_WAREHOUSE_ID in the environment.",
        )
    return Settings(
        backend=backend,  # type: ignore[arg-type]
        data_dir=Path(app("INFERENCE_EXPLORER_DATA_DIR", "data_dir", DEFAULT_DATA_DIR)),
        payload_table=TableName.parse(
            str(app("INFERENCE_EXPLORER_PAYLOAD_TABLE", "payload_table", DEFAULT_PAYLOAD_TABLE))
        ),
        requests_table=TableName.parse(
            str(app("INFERENCE_EXPLORER_REQUESTS_TABLE", "requests_table", DEFAULT_REQUESTS_TABLE))
        ),
        databricks=databricks if backend == "databricks" else None,
        query_timeout_s=int(app("INFERENCE_EXPLORER_QUERY_TIMEOUT", "query_timeout_s", 120)),
        demo_requests=int(app("INFERENCE_EXPLORER_DEMO_REQUESTS", "demo_requests", 50_000)),
        demo_seed=int(app("INFERENCE_EXPLORER_DEMO_SEED", "demo_seed", 7)),
        scoring_profile=str(app("INFERENCE_EXPLORER_PROFILE", "scoring_profile", "light")),
        model_name=str(app("INFERENCE_EXPLORER_MODEL_NAME", "model_name", DEFAULT_MODEL_NAME)),
        serving_endpoint=app("INFERENCE_EXPLORER_SERVING_ENDPOINT", "serving_endpoint"),
        mlflow_tracking_uri=app("MLFLOW_TRACKING_URI", "mlflow_tracking_uri"),
        mlflow_registry_uri=app("MLFLOW_REGISTRY_URI", "mlflow_registry_uri"),
        allow_rollback=str(app("INFERENCE_EXPLORER_ALLOW_ROLLBACK", "allow_rollback", "false")).lower() in _TRUE,
    )
