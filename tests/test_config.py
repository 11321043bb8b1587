"""Settings resolution: environment over secrets over defaults; table names validated."""

from __future__ import annotations

import pytest

from data_access.config import TableName, load_settings
from data_access.errors import DataAccessError
from data_access.sources import DatabricksSQLSource, DuckDBSource, open_source

SECRETS = {
    "databricks": {"host": "https://adb-1.2.azuredatabricks.net/", "warehouse_id": "wh1", "token": "dapiSECRET"},
    "app": {"requests_table": "main.dbdemos.inference_requests"},
}


def test_defaults_are_the_embedded_demo() -> None:
    settings = load_settings(environ={}, secrets={})
    assert settings.backend == "duckdb"
    assert isinstance(open_source(settings), DuckDBSource)
    assert str(settings.requests_table) == "requests"


def test_secrets_select_databricks() -> None:
    settings = load_settings(environ={}, secrets=SECRETS)
    assert settings.backend == "databricks"
    assert settings.databricks is not None
    assert settings.databricks.host == "adb-1.2.azuredatabricks.net"
    assert settings.databricks.http_path == "/sql/1.0/warehouses/wh1"
    assert settings.requests_table == TableName("inference_requests", "dbdemos", "main")
    assert isinstance(open_source(settings), DatabricksSQLSource)
    assert "dapiSECRET" not in repr(settings)


def test_environment_wins_over_secrets() -> None:
    env = {"DATABRICKS_HTTP_PATH": "/sql/1.0/warehouses/other", "INFERENCE_EXPLORER_BACKEND": "duckdb"}
    settings = load_settings(environ=env, secrets=SECRETS)
    assert settings.backend == "duckdb" and settings.databricks is None
    env = {"DATABRICKS_HOST": "h.cloud.databricks.com", "DATABRICKS_WAREHOUSE_ID": "w9", "DATABRICKS_CLIENT_ID": "c"}
    settings = load_settings(environ=env, secrets={})
    assert settings.databricks is not None
    assert (settings.databricks.http_path, settings.databricks.client_id) == ("/sql/1.0/warehouses/w9", "c")


def test_databricks_selected_but_missing_says_what_to_set() -> None:
    with pytest.raises(DataAccessError) as raised:
        load_settings(environ={"INFERENCE_EXPLORER_BACKEND": "databricks"}, secrets={})
    assert "warehouse_id" in raised.value.hint


@pytest.mark.parametrize("bad", ["", "a.b.c.d", "x; DROP TABLE y", "`t`", "a..b", "1table", "t-1"])
def test_table_names_are_validated(bad: str) -> None:
    with pytest.raises(DataAccessError):
        TableName.parse(bad)


def test_table_name_parts() -> None:
    assert TableName.parse("t") == TableName("t")
    assert TableName.parse("s.t") == TableName("t", "s")
    assert str(TableName.parse("c.s.t")) == "c.s.t"
