"""The MLflow model registry for the registry page: what its parts share.

Everything goes through `mlflow.MlflowClient` with explicit tracking and registry URIs (never the process-wide
ones), so the same code reads a local SQLite store and Databricks: the workspace registry (`databricks`) and
Unity Catalog (`databricks-uc`). Results are plain dataclasses, dicts and pandas frames; no Streamlit here.

The parts: `reading` (versions, one version in detail), `comparing` (two versions side by side), `rollback`
(the guarded alias and endpoint move) and `audit` (its JSON-lines log). Here: where the registry is, how
rollback behaves, and how a failure is told to a person (no stack trace, no secret).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from data_access.errors import DataAccessError, redact

ENABLE_ROLLBACK_HINT = (
    "To allow it, set INFERENCE_EXPLORER_ALLOW_ROLLBACK=1 in the app's environment or allow_rollback = true "
    "under [app] in .streamlit/secrets.toml, then restart the app."
)
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
READ_ERRORS = (MlflowException, requests.RequestException, OSError)


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


@dataclass(frozen=True, kw_only=True)
class RollbackSettings:
    """How rollback behaves; `enabled` is off unless the app's configuration switches it on."""

    audit_log_path: Path
    enabled: bool = False
    alias: str = "champion"
    endpoint_name: str | None = None  # a Databricks serving endpoint to update as well; None: alias only
    deploy_target: str = "databricks"  # MLflow deployments target, e.g. "databricks://<profile>"
    endpoint_read_timeout_s: float = 30.0  # reading the endpoint before any change is given up after this
    # The workspace a viewer's own token acts on (default: DATABRICKS_HOST), and a CA file for its TLS.
    workspace_host: str | None = None
    tls_ca_file: str | None = None


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


APP_IDENTITY = "The app's identity"


def _explain_http(status: int, server_message: str, what: str, who: str = APP_IDENTITY) -> str:
    said = f" Databricks said: {server_message}" if server_message else ""
    if status == 401:
        check = (
            "Check the token or service principal the app uses."
            if who == APP_IDENTITY
            else "Reload the app to sign in again; check that its user authorization has the scopes this needs."
        )
        return f"Databricks rejected the credentials of {who} (401) while trying to {what}. {check}{said}"
    if status == 403:
        return (
            f"No permission (403) to {what}. {who} needs CAN MANAGE on the serving endpoint (MANAGE on the model "
            f"for its alias); ask a workspace admin to grant it.{said}"
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


def explain_failure(error: BaseException, what: str, who: str = APP_IDENTITY) -> str:
    """Why `what` failed and what to do, in one sentence or two: no stack trace, no secret. `who` made the call."""
    if isinstance(error, EndpointTimeoutError):
        return (
            f"Databricks did not answer within {error.seconds:g} s while trying to {what}. Check the network "
            "and DATABRICKS_HOST, then try again."
        )
    if isinstance(error, requests.HTTPError):
        response = error.response
        status = response.status_code if response is not None else 0
        return scrub(_explain_http(status, _server_message(response), what, who))
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


def registry_error(error: BaseException, what: str) -> DataAccessError:
    return DataAccessError(explain_failure(error, what))


def check_model_name(model_name: str) -> None:
    if not model_name or "'" in model_name or "\\" in model_name:
        raise DataAccessError(f"'{model_name}' is not a usable model name.", "Use the registered model's name.")


class EndpointTimeoutError(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"no answer within {seconds} s")
        self.seconds = seconds


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
