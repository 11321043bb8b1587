"""A broken backend, seen in the browser: a clear message saying what to fix, no stack trace, no secret."""

from __future__ import annotations

import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest

from data_access.schema import REQUESTS_ARROW
from testkit import harness
from testkit.wire import Recorded, Reply, serve

pytestmark = pytest.mark.browser

TOKEN = "dapi-browser-test-secret-0123456789abcdef"


@dataclass(frozen=True)
class Seen:
    errors: list[str]  # the text of st.error boxes
    exceptions: int  # Streamlit exception boxes
    text: str
    html: str


def visit(browser: Any, env: dict[str, str], log: Path, path: str = "") -> Seen:
    """Start the app with `env`, open it in a fresh tab, and return what the person sees once it settles."""
    with harness.AppServer(env, log) as server:
        page = browser.new_page()
        try:
            harness.open_app(page, f"{server.url}/{path}")
            return Seen(
                errors=page.locator('[data-testid="stAlertContentError"]').all_inner_texts(),
                exceptions=page.locator('[data-testid="stException"]').count(),
                text=harness.main_text(page),
                html=page.content(),
            )
        finally:
            page.close()


def assert_clear_failure(seen: Seen, *phrases: str) -> None:
    assert seen.exceptions == 0, seen.text
    assert "Traceback" not in seen.html
    assert len(seen.errors) >= 1, seen.text
    message = " ".join(seen.errors)
    for phrase in phrases:
        assert phrase in message, message
    assert TOKEN not in seen.html


def empty_requests_table(path: Path) -> None:
    with duckdb.connect(str(path)) as con:
        con.register("incoming", REQUESTS_ARROW.empty_table())
        con.execute("CREATE TABLE requests AS SELECT * FROM incoming")


@contextmanager
def held_open(path: Path) -> Iterator[None]:
    """Another process with the database open for writing, as a running scoring job has it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
         "sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield
    finally:
        try:
            holder.communicate(timeout=30)  # closing its stdin ends it
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait(timeout=30)


def test_a_file_that_is_not_a_database(browser: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "inference.duckdb").write_text("these are notes, not a DuckDB database\n" * 50)
    env = harness.app_environment(data_dir, INFERENCE_EXPLORER_BACKEND="duckdb")

    seen = visit(browser, env, tmp_path / "app.log")

    assert_clear_failure(seen, "Cannot open", "DuckDB database")


def test_a_database_locked_by_another_process(browser: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    empty_requests_table(data_dir / "inference.duckdb")
    env = harness.app_environment(data_dir, INFERENCE_EXPLORER_BACKEND="duckdb")

    with held_open(data_dir / "inference.duckdb"):
        seen = visit(browser, env, tmp_path / "app.log")

    assert_clear_failure(seen, "locked by another process")


def test_a_data_dir_where_no_database_can_be_built(browser: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the data dir's parent should be\n")
    env = harness.app_environment(blocker / "data", INFERENCE_EXPLORER_BACKEND="duckdb")

    seen = visit(browser, env, tmp_path / "app.log")

    assert_clear_failure(seen, str(blocker / "data"))


def databricks_env(data_dir: Path, host: str, **more: str) -> dict[str, str]:
    return harness.app_environment(
        data_dir, DATABRICKS_HOST=host, DATABRICKS_WAREHOUSE_ID="x", DATABRICKS_TOKEN=TOKEN,
        INFERENCE_EXPLORER_QUERY_TIMEOUT="10", **more,
    )  # fmt: skip


@pytest.fixture(scope="module")
def unreachable(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Seen, str]:
    folder = tmp_path_factory.mktemp("unreachable")
    host = f"127.0.0.1:{harness.free_port()}"  # nothing listens there: every connection is refused
    return visit(browser, databricks_env(folder / "data", host), folder / "app.log"), host


def test_databricks_unreachable_says_which_warehouse(unreachable: tuple[Seen, str]) -> None:
    seen, host = unreachable
    assert_clear_failure(seen, f"{host}/sql/1.0/warehouses/x")


def test_databricks_unreachable_is_called_unreachable(unreachable: tuple[Seen, str]) -> None:
    seen, _ = unreachable
    assert_clear_failure(seen, "Cannot reach")


def test_databricks_refusing_the_credentials(browser: Any, tmp_path: Path) -> None:
    refusal = b'{"error_code": "UNAUTHENTICATED", "message": "Invalid access token."}'

    def refuse(request: Recorded) -> Reply:
        return Reply(401, refusal)

    with serve(refuse) as workspace:
        # Trust the stand-in workspace's self-signed certificate, as a company CA bundle would be trusted.
        certificate = tmp_path / "workspace.pem"
        certificate.write_text(ssl.get_server_certificate(("127.0.0.1", workspace.port)))
        env = databricks_env(tmp_path / "data", workspace.host, SSL_CERT_FILE=str(certificate))
        seen = visit(browser, env, tmp_path / "app.log")
        sent = [r.headers.get("Authorization") or r.headers.get("authorization") for r in workspace.requests]

    assert f"Bearer {TOKEN}" in sent  # the app did present the token, and was refused
    assert_clear_failure(seen, "refused the credentials")
