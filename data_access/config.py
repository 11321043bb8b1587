"""Settings from the environment and `.streamlit/secrets.toml`, declared once, validated once, without Streamlit.

Every setting is one `Setting` line in `SETTINGS`: its name (the key in the secrets file), its environment
variable, its type and what it accepts. `load_settings` reads and checks them all before anything runs, so a wrong
value becomes one `SettingError` that names the setting, where the value came from and what is accepted; a new
setting gets that for free by adding its line (and its field on `Settings`).

The app passes `st.secrets` in as a plain mapping; commands read the secrets files themselves. Environment
variables win over secrets, so Databricks Apps' injected variables take effect.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import sqlglot.expressions as sge

from data_access.errors import DataAccessError
from data_access.identity import VIEWER_CREDENTIALS
from metrics.detoxify_toxicity import DETOXIFY_MODELS
from metrics.identity import PRECISIONS

Backend = Literal["duckdb", "databricks"]

DEFAULT_DATA_DIR = Path(__file__).resolve().parent.parent / "data"
DEFAULT_PAYLOAD_TABLE = "payload"
DEFAULT_REQUESTS_TABLE = "requests"
# Databricks' system table mapping a gateway row's served_entity_id to endpoint, model and version.
DEFAULT_SERVED_ENTITIES_TABLE = "system.serving.served_entities"
PAYLOAD_FORMATS = ("auto", "legacy", "gateway")
DEMO_FORMATS = ("legacy", "gateway")
DEFAULT_MODEL_NAME = "dbdemos_advanced_chatbot_model"
DEFAULT_MONITORS_FILE = Path(__file__).resolve().parent.parent / "monitors.toml"
WEBHOOK_ENV_PREFIX = "INFERENCE_EXPLORER_WEBHOOK_"

_NAME_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A host name or address with an optional port; no scheme (stripped first), path, user or spaces.
_HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


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

    def sql(self, dialect: str) -> str:
        """The name quoted for a dialect by sqlglot: how a job's own statements (DDL, MERGE) name a table."""
        return sge.table_(self.table, db=self.schema, catalog=self.catalog, quoted=True).sql(dialect)


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

    @property
    def auth_method(self) -> str:
        """How the app signs in to the warehouse, in words a person can check against their settings."""
        if self.token:
            return "personal access token (token / DATABRICKS_TOKEN)"
        if self.client_id:
            return "OAuth machine-to-machine (client_id / DATABRICKS_CLIENT_ID and its secret)"
        return "Databricks SDK default authentication (no token or OAuth client configured)"


@dataclass(frozen=True)
class Settings:
    backend: Backend
    data_dir: Path
    payload_table: TableName
    requests_table: TableName
    databricks: DatabricksSettings | None = None
    query_timeout_s: int = 120
    connect_timeout_s: int = 30
    # Warehouse connections per credential (the app's, or each viewer's): how many queries run at once.
    warehouse_pool_size: int = 4
    pool_timeout_s: int = 30  # the longest a query waits for a free connection
    viewer_credentials: str = "auto"  # auto, viewer or app: whose permissions queries run with (identity.py)
    demo_requests: int = 50_000
    demo_seed: int = 7
    scoring_profile: str = "light"
    model_name: str = DEFAULT_MODEL_NAME
    serving_endpoint: str | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_registry_uri: str | None = None
    allow_rollback: bool = False
    payload_format: str = "auto"  # auto (detect from the columns), legacy or gateway
    served_entities_table: TableName = field(default_factory=lambda: TableName.parse(DEFAULT_SERVED_ENTITIES_TABLE))
    hash_requesters: bool = False  # show a stable short hash instead of a requester's identity
    demo_format: str = "legacy"  # the layout the demo inference table is written in
    # How far before its watermark the scoring job reads again, for inference rows Databricks logs late.
    late_margin_minutes: float = 60.0
    monitors_file: Path = DEFAULT_MONITORS_FILE  # the monitor rules (jobs/monitors.py, the Alerts page)
    app_url: str | None = None  # the app's address, so notifications link to absolute pages
    # The full scoring profile's models (metrics.profiles.FullProfileOptions; None keeps its default).
    detoxify_model: str | None = None
    detoxify_checkpoint: str | None = None
    detoxify_hf_dir: str | None = None
    lm_model: str | None = None
    device: str | None = None
    precision: str | None = None  # fp32, int8 (both models dynamically quantised) or bf16 (Detoxify's encoder)
    detoxify_max_tokens: int | None = None  # token cap per text (None: the model's window); the scorer id records it
    lm_max_tokens: int | None = None
    # Scorer slot -> share of requests it scores, by a deterministic hash of the request id (core/sampling.py).
    sample_rates: dict[str, float] = field(default_factory=dict)
    # Webhook name -> URL. A URL carries its own credential (Slack's path is the secret): never shown or logged.
    webhook_urls: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "inference.duckdb"

    @property
    def mlflow_dir(self) -> Path:
        return self.data_dir / "mlflow"

    @property
    def audit_log_path(self) -> Path:
        return self.data_dir / "rollback_audit.jsonl"

    @property
    def connect_bound_s(self) -> int:
        """The longest any connection attempt, token fetch or host lookup may take."""
        return min(self.connect_timeout_s, self.query_timeout_s)


class SettingError(DataAccessError):
    """One or more settings have values the app cannot use; the message names each, its origin and what works."""


# --- Declaring settings ------------------------------------------------------------------------------------------


class _Invalid(ValueError):
    """A value a setting does not accept; the text says what it does accept."""


def _text(raw: Any) -> str:
    if isinstance(raw, (dict, list, bool)):
        raise _Invalid("text")
    return str(raw).strip()


def _whole_number(minimum: int, maximum: int) -> Callable[[Any], int]:
    accepted = f"a whole number from {minimum} to {maximum}"

    def parse(raw: Any) -> int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise _Invalid(accepted)
        try:
            value = int(raw) if isinstance(raw, (int, float)) else int(str(raw).strip().replace("_", ""), 10)
        except ValueError:
            raise _Invalid(accepted) from None
        if not minimum <= value <= maximum:
            raise _Invalid(accepted)
        return value

    return parse


def _number(minimum: float, maximum: float) -> Callable[[Any], float]:
    accepted = f"a number from {minimum:g} to {maximum:g}"

    def parse(raw: Any) -> float:
        if isinstance(raw, bool):
            raise _Invalid(accepted)
        try:
            value = float(raw if isinstance(raw, (int, float)) else str(raw).strip())
        except ValueError:
            raise _Invalid(accepted) from None
        if not minimum <= value <= maximum:  # also refuses nan
            raise _Invalid(accepted)
        return value

    return parse


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise _Invalid("true or false (also 1/0, yes/no, on/off)")


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        text = _text(raw)
        if text not in choices:
            raise _Invalid("one of " + ", ".join(repr(c) for c in choices))
        return text

    return parse


def _table_name(raw: Any) -> TableName:
    try:
        return TableName.parse(_text(raw))
    except DataAccessError:
        raise _Invalid("a table name: table, schema.table or catalog.schema.table (letters, digits, _)") from None


def _host(raw: Any) -> str:
    host = _text(raw).removeprefix("https://").removeprefix("http://").rstrip("/")
    if not _HOST.match(host):
        raise _Invalid("a workspace host name such as adb-123.4.azuredatabricks.net (optionally host:port)")
    return host


def _http_url(raw: Any) -> str:
    text = _text(raw)
    if not re.match(r"^https?://[^\s/]+", text):
        raise _Invalid("an http:// or https:// URL")
    return text


def _sample_rates(raw: Any) -> dict[str, float]:
    """`detoxify=0.1, perplexity=0.5` (or a TOML table of name = rate) as slot -> rate (core/sampling.py)."""
    from core.sampling import parse_rates

    entries = [f"{k}={v}" for k, v in raw.items()] if isinstance(raw, Mapping) else _text(raw).split(",")
    try:
        return parse_rates(entries)
    except ValueError as error:
        raise _Invalid(f"scorer=rate pairs separated by commas, e.g. detoxify=0.1 ({error})") from None


def _nonempty(raw: Any) -> str:
    text = _text(raw)
    if not text:
        raise _Invalid("non-empty text")
    return text


@dataclass(frozen=True)
class Setting:
    """One setting: `key` in the secrets file's `section`, overridden by environment variable `env`."""

    key: str
    env: str
    parse: Callable[[Any], Any] = _text
    default: Any = None
    section: str = "app"
    secret: bool = False  # never echoed in a message

    def accepts(self, raw: Any) -> bool:
        """Whether `raw` is a value this setting takes."""
        try:
            self.parse(raw)
        except _Invalid:
            return False
        return True

    def read(self, environ: Mapping[str, str], secrets: Mapping[str, Any]) -> Any:
        """The parsed value (or the default when unset); `_Problem` when the value is not accepted."""
        raw, origin = self._raw(environ, secrets)
        if raw is None:
            return self.default
        try:
            return self.parse(raw)
        except _Invalid as invalid:
            shown = "(hidden)" if self.secret else repr(raw if not isinstance(raw, str) else raw[:80])
            raise _Problem(f"{self.key} = {shown} from {origin} is not accepted: expected {invalid}.") from None

    def _raw(self, environ: Mapping[str, str], secrets: Mapping[str, Any]) -> tuple[Any, str]:
        if environ.get(self.env, "").strip():
            return environ[self.env], f"the environment variable {self.env}"
        section = secrets.get(self.section)
        if isinstance(section, Mapping) and section.get(self.key) not in (None, ""):
            return section[self.key], f"the secrets file ([{self.section}] {self.key})"
        return None, ""


class _Problem(Exception):
    pass


def _db(key: str, env: str, parse: Callable[[Any], Any] = _text, secret: bool = False) -> Setting:
    return Setting(key, env, parse, section="databricks", secret=secret)


# Every setting the app and the commands read. Settings fields take these keys' values by the same name.
SETTINGS: tuple[Setting, ...] = (
    _db("host", "DATABRICKS_HOST", _host),
    _db("http_path", "DATABRICKS_HTTP_PATH"),
    _db("warehouse_id", "DATABRICKS_WAREHOUSE_ID"),
    _db("token", "DATABRICKS_TOKEN", secret=True),
    _db("client_id", "DATABRICKS_CLIENT_ID"),
    _db("client_secret", "DATABRICKS_CLIENT_SECRET", secret=True),
    _db("tls_ca_file", "DATABRICKS_TLS_CA_FILE"),
    Setting("backend", "INFERENCE_EXPLORER_BACKEND", _one_of("duckdb", "databricks")),
    Setting("data_dir", "INFERENCE_EXPLORER_DATA_DIR", lambda raw: Path(_nonempty(raw)), DEFAULT_DATA_DIR),
    Setting("payload_table", "INFERENCE_EXPLORER_PAYLOAD_TABLE", _table_name, TableName(DEFAULT_PAYLOAD_TABLE)),
    Setting("requests_table", "INFERENCE_EXPLORER_REQUESTS_TABLE", _table_name, TableName(DEFAULT_REQUESTS_TABLE)),
    Setting("query_timeout_s", "INFERENCE_EXPLORER_QUERY_TIMEOUT", _whole_number(1, 86_400), 120),
    Setting("connect_timeout_s", "INFERENCE_EXPLORER_CONNECT_TIMEOUT", _whole_number(1, 3_600), 30),
    Setting("warehouse_pool_size", "INFERENCE_EXPLORER_WAREHOUSE_POOL_SIZE", _whole_number(1, 64), 4),
    Setting("pool_timeout_s", "INFERENCE_EXPLORER_POOL_TIMEOUT", _whole_number(1, 3_600), 30),
    Setting("viewer_credentials", "INFERENCE_EXPLORER_VIEWER_CREDENTIALS", _one_of(*VIEWER_CREDENTIALS), "auto"),
    Setting("demo_requests", "INFERENCE_EXPLORER_DEMO_REQUESTS", _whole_number(1, 100_000_000), 50_000),
    Setting("demo_seed", "INFERENCE_EXPLORER_DEMO_SEED", _whole_number(0, 2**32 - 1), 7),
    Setting("scoring_profile", "INFERENCE_EXPLORER_PROFILE", _one_of("light", "full"), "light"),
    Setting("model_name", "INFERENCE_EXPLORER_MODEL_NAME", _nonempty, DEFAULT_MODEL_NAME),
    Setting("serving_endpoint", "INFERENCE_EXPLORER_SERVING_ENDPOINT", _nonempty),
    Setting("mlflow_tracking_uri", "MLFLOW_TRACKING_URI", _nonempty),
    Setting("mlflow_registry_uri", "MLFLOW_REGISTRY_URI", _nonempty),
    Setting("allow_rollback", "INFERENCE_EXPLORER_ALLOW_ROLLBACK", _boolean, False),
    Setting("payload_format", "INFERENCE_EXPLORER_PAYLOAD_FORMAT", _one_of(*PAYLOAD_FORMATS), "auto"),
    Setting(
        "served_entities_table",
        "INFERENCE_EXPLORER_SERVED_ENTITIES_TABLE",
        _table_name,
        TableName.parse(DEFAULT_SERVED_ENTITIES_TABLE),
    ),
    Setting("hash_requesters", "INFERENCE_EXPLORER_HASH_REQUESTERS", _boolean, False),
    Setting("demo_format", "INFERENCE_EXPLORER_DEMO_FORMAT", _one_of(*DEMO_FORMATS), "legacy"),
    Setting("late_margin_minutes", "INFERENCE_EXPLORER_LATE_MARGIN_MINUTES", _number(0, 10_080), 60.0),
    Setting(
        "monitors_file", "INFERENCE_EXPLORER_MONITORS_FILE", lambda raw: Path(_nonempty(raw)), DEFAULT_MONITORS_FILE
    ),
    Setting("app_url", "INFERENCE_EXPLORER_APP_URL", lambda raw: _http_url(raw).rstrip("/")),
    # The full profile (python -m jobs.score --profile full); defaults in metrics.profiles.FullProfileOptions.
    Setting("detoxify_model", "INFERENCE_EXPLORER_DETOXIFY_MODEL", _one_of(*DETOXIFY_MODELS)),
    Setting("detoxify_checkpoint", "INFERENCE_EXPLORER_DETOXIFY_CHECKPOINT", _nonempty),
    Setting("detoxify_hf_dir", "INFERENCE_EXPLORER_DETOXIFY_HF_DIR", _nonempty),
    Setting("lm_model", "INFERENCE_EXPLORER_LM_MODEL", _nonempty),
    Setting("device", "INFERENCE_EXPLORER_DEVICE", _nonempty),
    Setting("precision", "INFERENCE_EXPLORER_PRECISION", _one_of(*PRECISIONS)),
    Setting("detoxify_max_tokens", "INFERENCE_EXPLORER_DETOXIFY_MAX_TOKENS", _whole_number(2, 1_000_000)),
    Setting("lm_max_tokens", "INFERENCE_EXPLORER_LM_MAX_TOKENS", _whole_number(2, 1_000_000)),
    Setting("sample_rates", "INFERENCE_EXPLORER_SAMPLE_RATES", _sample_rates, {}),
)


def setting(key: str) -> Setting:
    """The declaration of one setting, e.g. to name its environment variable in a message."""
    return next(s for s in SETTINGS if s.key == key)


# --- Reading them ----------------------------------------------------------------------------------------------


def secrets_files() -> list[Path]:
    """Where Streamlit looks for secrets, in its order (later files win): the user's, then the project's."""
    return [Path.home() / ".streamlit" / "secrets.toml", Path.cwd() / ".streamlit" / "secrets.toml"]


def read_secrets_files(paths: list[Path] | None = None) -> dict[str, Any]:
    """The secrets files merged as Streamlit merges them (top-level keys), for commands that run without Streamlit."""
    merged: dict[str, Any] = {}
    for path in secrets_files() if paths is None else paths:
        if not path.is_file():
            continue
        try:
            merged.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as error:
            raise SettingError(f"The secrets file {path} cannot be read: {error}.", "Fix it as TOML.") from None
    return merged


def _databricks(values: Mapping[str, Any]) -> DatabricksSettings | None:
    host, http_path, warehouse_id = values["host"], values["http_path"], values["warehouse_id"]
    if not host or not (http_path or warehouse_id):
        return None
    return DatabricksSettings(
        host=host,
        http_path=http_path or f"/sql/1.0/warehouses/{warehouse_id}",
        token=values["token"],
        client_id=values["client_id"],
        client_secret=values["client_secret"],
        tls_ca_file=values["tls_ca_file"],
    )


def _webhook_urls(environ: Mapping[str, str], secrets: Mapping[str, Any], problems: list[str]) -> dict[str, str]:
    """Webhook URLs: `[webhooks]` in the secrets file (name = URL), overridden by INFERENCE_EXPLORER_WEBHOOK_<NAME>.

    Names are lower case (the rules file names them); a value that is not an http(s) URL is named, never shown."""
    section = secrets.get("webhooks", {})
    found = {str(k).lower(): (v, f"the secrets file ([webhooks] {k})") for k, v in section.items()} if isinstance(
        section, Mapping
    ) else {}  # fmt: skip
    for key, value in environ.items():
        if key.startswith(WEBHOOK_ENV_PREFIX) and value.strip():
            found[key.removeprefix(WEBHOOK_ENV_PREFIX).lower()] = (value, f"the environment variable {key}")
    urls = {}
    for name, (value, origin) in found.items():
        try:
            urls[name] = _http_url(value)
        except _Invalid:
            problems.append(f"webhook {name} = (hidden) from {origin} is not accepted: expected an http(s) URL.")
    return urls


def load_settings(environ: Mapping[str, str] | None = None, secrets: Mapping[str, Any] | None = None) -> Settings:
    """Resolve and check every setting: environment first, then secrets (`[databricks]` and `[app]`), then defaults.

    `secrets=None` reads the secrets files as Streamlit would. Raises `SettingError` naming every wrong value.
    """
    environ = os.environ if environ is None else environ
    secrets = read_secrets_files() if secrets is None else secrets
    values: dict[str, Any] = {}
    problems: list[str] = []
    for declared in SETTINGS:
        try:
            values[declared.key] = declared.read(environ, secrets)
        except _Problem as problem:
            problems.append(str(problem))
    webhook_urls = _webhook_urls(environ, secrets, problems)
    if problems:
        raise SettingError(
            ("Invalid setting: " if len(problems) == 1 else "Invalid settings: ") + " ".join(problems),
            "Fix it in the environment or in .streamlit/secrets.toml (the environment wins).",
        )
    databricks = _databricks(values)
    backend = values["backend"] or ("databricks" if databricks else "duckdb")
    if backend == "databricks" and databricks is None:
        raise SettingError(
            "The Databricks backend is selected but not configured.",
            "Set host and warehouse_id (or http_path) under [databricks] in .streamlit/secrets.toml, "
            "or DATABRICKS_HOST and DATABRICKS_WAREHOUSE_ID in the environment.",
        )
    fields = {k: v for k, v in values.items() if k in Settings.__dataclass_fields__}
    fields.update(backend=backend, databricks=databricks if backend == "databricks" else None)
    fields["webhook_urls"] = webhook_urls
    return Settings(**fields)


def settings_for_command() -> Settings:
    """Settings for a command line: a wrong value prints one line naming it and exits with status 2."""
    try:
        return load_settings()
    except SettingError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
